/* test_kafka_conf.c: kpi_kafka_conf_new's order (defaults, then the operator's
 * KPI_KAFKA_PROP_*, then the fixed properties) as kpi_kafka_conf_summary reports it: the value
 * each property ends with, each property once, secrets masked, whole pairs only when the line
 * is cut. No broker: a configuration is never used to connect here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_kafka.h"

static const kpi_kafka_prop defaults[] = {
    {"linger.ms", "1"}, {"batch.num.messages", "500"}, {NULL, NULL}};
static const kpi_kafka_prop fixed[] = {{"acks", "all"}, {NULL, NULL}};

static int env_setup(void **state) {
  (void)state;
  setenv("KPI_KAFKA_BOOTSTRAP", "127.0.0.1:1", 1);
  setenv("KPI_KAFKA_PROP_LINGER_MS", "7", 1);
  setenv("KPI_KAFKA_PROP_SOCKET_KEEPALIVE_ENABLE", "true", 1);
  setenv("KPI_KAFKA_PROP_SASL_PASSWORD", "hunter2", 1);
  return 0;
}

static int env_teardown(void **state) {
  (void)state;
  unsetenv("KPI_KAFKA_PROP_LINGER_MS");
  unsetenv("KPI_KAFKA_PROP_SOCKET_KEEPALIVE_ENABLE");
  unsetenv("KPI_KAFKA_PROP_SASL_PASSWORD");
  unsetenv("KPI_KAFKA_PROP_ACKS");
  unsetenv("KPI_KAFKA_PROP_");
  return 0;
}

/* How many times " NAME=" (or NAME= at the start) begins a pair of LINE. */
static int pairs_named(const char *line, const char *name) {
  char pat[160];
  snprintf(pat, sizeof(pat), "%s=", name);
  int n = 0;
  for (const char *p = strstr(line, pat); p; p = strstr(p + 1, pat))
    if (p == line || p[-1] == ' ') n++;
  return n;
}

static void test_summary_values_and_order(void **state) {
  (void)state;
  char err[256];
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("kpi-test", defaults, fixed, err, sizeof(err));
  assert_non_null(conf);
  char line[1024];
  size_t len = kpi_kafka_conf_summary(conf, defaults, fixed, line, sizeof(line));
  assert_int_equal(len, strlen(line));
  /* The operator's value where one overrode a default, the default elsewhere, the fixed last. */
  assert_non_null(strstr(line, "linger.ms=7"));
  assert_null(strstr(line, "linger.ms=1"));
  assert_non_null(strstr(line, "batch.num.messages=500"));
  assert_non_null(strstr(line, "socket.keepalive.enable=true"));
  assert_string_equal(line + len - strlen(" acks=-1"), " acks=-1");
  assert_int_equal(strncmp(line, "bootstrap.servers=127.0.0.1:1 linger.ms=7 batch.num.messages=500 ",
                           strlen("bootstrap.servers=127.0.0.1:1 linger.ms=7 batch.num.messages=500 ")),
                   0);
  /* A secret's value never shows. */
  assert_non_null(strstr(line, "sasl.password=***"));
  assert_null(strstr(line, "hunter2"));
  const char *names[] = {"bootstrap.servers", "linger.ms", "batch.num.messages",
                         "socket.keepalive.enable", "sasl.password", "acks"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    assert_int_equal(pairs_named(line, names[i]), 1);
  rd_kafka_conf_destroy(conf);
}

/* A line too long for the buffer keeps whole pairs: the ones that fit, in order. */
static void test_summary_cut_keeps_whole_pairs(void **state) {
  (void)state;
  char err[256];
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("kpi-test", defaults, fixed, err, sizeof(err));
  assert_non_null(conf);
  char full[1024], cut[40];
  kpi_kafka_conf_summary(conf, defaults, fixed, full, sizeof(full));
  size_t len = kpi_kafka_conf_summary(conf, defaults, fixed, cut, sizeof(cut));
  assert_int_equal(len, strlen(cut));
  assert_true(len < sizeof(cut));
  /* bootstrap.servers (29 bytes) fits; " linger.ms=7" would end at 41 and is left out; the
   * short " acks=-1" still fits after it (librdkafka holds acks=all as -1). */
  assert_string_equal(cut, "bootstrap.servers=127.0.0.1:1 acks=-1");
  char *tok, *save = NULL;
  for (tok = strtok_r(cut, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
    char pair[64];
    snprintf(pair, sizeof(pair), " %s", tok);
    assert_true(strncmp(full, tok, strlen(tok)) == 0 || strstr(full, pair) != NULL);
  }
  char none[1] = {'x'};
  assert_int_equal(kpi_kafka_conf_summary(conf, defaults, fixed, none, sizeof(none)), 0);
  assert_int_equal(none[0], '\0');
  rd_kafka_conf_destroy(conf);
}

/* The operator still cannot override a fixed property, nor pass a variable with no name. */
static void test_fixed_and_empty_names_refused(void **state) {
  (void)state;
  char err[256];
  setenv("KPI_KAFKA_PROP_ACKS", "1", 1);
  assert_null(kpi_kafka_conf_new("kpi-test", defaults, fixed, err, sizeof(err)));
  assert_non_null(strstr(err, "KPI_KAFKA_PROP_ACKS: acks is set by the service (all)"));
  unsetenv("KPI_KAFKA_PROP_ACKS");
  setenv("KPI_KAFKA_PROP_", "1", 1);
  assert_null(kpi_kafka_conf_new("kpi-test", defaults, fixed, err, sizeof(err)));
  assert_string_equal(err, "KPI_KAFKA_PROP_: not a librdkafka property name");
  unsetenv("KPI_KAFKA_PROP_");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_summary_values_and_order),
      cmocka_unit_test(test_summary_cut_keeps_whole_pairs),
      cmocka_unit_test(test_fixed_and_empty_names_refused),
  };
  return cmocka_run_group_tests(tests, env_setup, env_teardown);
}
