/* test_env.c: typed environment reads reject what they cannot use, naming the variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"
#include "kpi_kafka.h"

static void test_env_int(void **state) {
  (void)state;
  static const struct {
    const char *value; /* NULL: unset */
    int ok;
    int64_t want;
  } cases[] = {
      {NULL, 1, 7},  {"", 1, 7},     {"12", 1, 12},  {"100", 1, 100}, {"101", 0, 0},
      {"-1", 0, 0},  {"1x", 0, 0},   {"x", 0, 0},    {" 5", 1, 5} /* strtoll skips blanks */,
      {"99999999999999999999", 0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (cases[i].value) setenv("KPI_TEST_INT", cases[i].value, 1);
    else unsetenv("KPI_TEST_INT");
    int64_t out = -99;
    char err[256] = "";
    int rc = kpi_env_int("KPI_TEST_INT", 7, 0, 100, &out, err, sizeof(err));
    if (cases[i].ok) {
      if (rc != 0) fail_msg("case %zu (%s): %s", i, cases[i].value, err);
      assert_int_equal(out, cases[i].want);
    } else {
      if (rc == 0) fail_msg("case %zu (%s) accepted", i, cases[i].value);
      assert_non_null(strstr(err, "KPI_TEST_INT"));
      assert_non_null(strstr(err, "0 to 100"));
    }
  }
}

static void test_split_hostport(void **state) {
  (void)state;
  static const struct {
    const char *in;
    int ok;
    const char *host;
    int port;
  } cases[] = {
      {"127.0.0.1:8080", 1, "127.0.0.1", 8080}, {"0.0.0.0:0", 1, "0.0.0.0", 0},
      {"[::1]:9000", 1, "::1", 9000},           {"localhost:65535", 1, "localhost", 65535},
      {"localhost", 0, NULL, 0},                {":80", 0, NULL, 0},
      {"h:65536", 0, NULL, 0},                  {"h:", 0, NULL, 0},
      {"h:8a", 0, NULL, 0},                     {"[::1]9000", 0, NULL, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char host[64];
    int port = -1;
    int rc = kpi_env_split_hostport(cases[i].in, host, sizeof(host), &port);
    if (cases[i].ok) {
      if (rc != 0) fail_msg("case %zu (%s) rejected", i, cases[i].in);
      assert_string_equal(host, cases[i].host);
      assert_int_equal(port, cases[i].port);
    } else if (rc == 0) {
      fail_msg("case %zu (%s) accepted", i, cases[i].in);
    }
  }
}

/* A listen address and a path: the default when unset, the variable named in every error. */
static void test_listen_and_path(void **state) {
  (void)state;
  char host[16], path[10], err[128];
  int port = 0;
  unsetenv("KPI_TEST_LISTEN");
  assert_int_equal(kpi_env_listen("KPI_TEST_LISTEN", "127.0.0.1:8080", host, sizeof(host), &port,
                                  err, sizeof(err)),
                   0);
  assert_string_equal(host, "127.0.0.1");
  assert_int_equal(port, 8080);
  setenv("KPI_TEST_LISTEN", "nowhere", 1);
  assert_int_equal(kpi_env_listen("KPI_TEST_LISTEN", "127.0.0.1:8080", host, sizeof(host), &port,
                                  err, sizeof(err)),
                   -1);
  assert_string_equal(err, "KPI_TEST_LISTEN: expected host:port, got \"nowhere\"");
  unsetenv("KPI_TEST_LISTEN");

  unsetenv("KPI_TEST_PATH");
  assert_int_equal(kpi_env_path("KPI_TEST_PATH", "a/b.json", path, sizeof(path), err, sizeof(err)),
                   0);
  assert_string_equal(path, "a/b.json");
  setenv("KPI_TEST_PATH", "a/bcd.json", 1); /* 10 bytes and a NUL do not fit in 10 */
  assert_int_equal(kpi_env_path("KPI_TEST_PATH", "x", path, sizeof(path), err, sizeof(err)), -1);
  assert_string_equal(err, "KPI_TEST_PATH: path too long");
  unsetenv("KPI_TEST_PATH");
}

static void test_topics_and_kafka_passthrough(void **state) {
  (void)state;
  char err[256];
  kpi_topic_spec specs[KPI_TOPIC_COUNT];
  unsetenv("KPI_TOPIC_MEASUREMENTS");
  setenv("KPI_TOPIC_ALERTS", "city.alerts", 1);
  setenv("KPI_TOPIC_ALERTS_PARTITIONS", "12", 1);
  assert_int_equal(kpi_topics_from_env(specs, err, sizeof(err)), 0);
  assert_string_equal(specs[KPI_TOPIC_MEASUREMENTS].name, "kpi.measurements.v1");
  assert_int_equal(specs[KPI_TOPIC_MEASUREMENTS].partitions, 6);
  assert_string_equal(specs[KPI_TOPIC_ALERTS].name, "city.alerts");
  assert_int_equal(specs[KPI_TOPIC_ALERTS].partitions, 12);
  assert_int_equal(specs[KPI_TOPIC_MEASUREMENTS_DLQ].partitions, 1);
  setenv("KPI_TOPIC_ALERTS_PARTITIONS", "0", 1);
  assert_int_equal(kpi_topics_from_env(specs, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "KPI_TOPIC_ALERTS_PARTITIONS"));
  unsetenv("KPI_TOPIC_ALERTS_PARTITIONS");

  /* KPI_KAFKA_PROP_LINGER_MS becomes linger.ms and wins over the service's default; an
   * unknown property is refused by name. */
  static const kpi_kafka_prop defaults[] = {{"linger.ms", "5"}, {"batch.size", "1234"},
                                            {NULL, NULL}};
  static const kpi_kafka_prop fixed[] = {{"acks", "all"}, {NULL, NULL}};
  setenv("KPI_KAFKA_PROP_LINGER_MS", "17", 1);
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("t", defaults, fixed, err, sizeof(err));
  assert_non_null(conf);
  char v[64];
  size_t vlen = sizeof(v);
  assert_int_equal(rd_kafka_conf_get(conf, "linger.ms", v, &vlen), RD_KAFKA_CONF_OK);
  assert_string_equal(v, "17");
  vlen = sizeof(v);
  assert_int_equal(rd_kafka_conf_get(conf, "batch.size", v, &vlen), RD_KAFKA_CONF_OK);
  assert_string_equal(v, "1234");
  vlen = sizeof(v);
  assert_int_equal(rd_kafka_conf_get(conf, "acks", v, &vlen), RD_KAFKA_CONF_OK);
  assert_true(strcmp(v, "all") == 0 || strcmp(v, "-1") == 0);
  rd_kafka_conf_destroy(conf);
  char var[64];
  assert_int_equal(kpi_kafka_prop_env_name("sasl.username", var, sizeof(var)), 0);
  assert_string_equal(var, "KPI_KAFKA_PROP_SASL_USERNAME");
  assert_int_equal(kpi_kafka_prop_env_name("sasl.username", var, 10), -1);

  /* What Kubernetes injects for a Service named kafka is not ours: it changes nothing. */
  setenv("KAFKA_PORT", "tcp://10.0.0.7:9092", 1);
  setenv("KAFKA_SERVICE_HOST", "10.0.0.7", 1);
  setenv("KAFKA_PORT_9092_TCP_PROTO", "tcp", 1);
  conf = kpi_kafka_conf_new("t", NULL, NULL, err, sizeof(err));
  assert_non_null(conf);
  rd_kafka_conf_destroy(conf);
  unsetenv("KAFKA_PORT");
  unsetenv("KAFKA_SERVICE_HOST");
  unsetenv("KAFKA_PORT_9092_TCP_PROTO");

  /* A property the service's guarantees rest on cannot be overridden, in either direction. */
  setenv("KPI_KAFKA_PROP_ACKS", "1", 1);
  assert_null(kpi_kafka_conf_new("t", defaults, fixed, err, sizeof(err)));
  assert_non_null(strstr(err, "KPI_KAFKA_PROP_ACKS"));
  setenv("KPI_KAFKA_PROP_ACKS", "all", 1);
  assert_null(kpi_kafka_conf_new("t", defaults, fixed, err, sizeof(err)));
  unsetenv("KPI_KAFKA_PROP_ACKS");

  setenv("KPI_KAFKA_PROP_NO_SUCH_THING", "1", 1);
  assert_null(kpi_kafka_conf_new("t", NULL, NULL, err, sizeof(err)));
  assert_non_null(strstr(err, "no.such.thing"));
  unsetenv("KPI_KAFKA_PROP_NO_SUCH_THING");
  /* SASL and TLS pass through; secrets are not echoed in an error. */
  setenv("KPI_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL", 1);
  setenv("KPI_KAFKA_PROP_SASL_MECHANISMS", "SCRAM-SHA-512", 1);
  setenv("KPI_KAFKA_PROP_SASL_USERNAME", "city", 1);
  setenv("KPI_KAFKA_PROP_SASL_PASSWORD", "hunter2", 1);
  conf = kpi_kafka_conf_new("t", NULL, NULL, err, sizeof(err));
  assert_non_null(conf);
  vlen = sizeof(v);
  assert_int_equal(rd_kafka_conf_get(conf, "sasl.username", v, &vlen), RD_KAFKA_CONF_OK);
  assert_string_equal(v, "city");
  vlen = sizeof(v);
  assert_int_equal(rd_kafka_conf_get(conf, "security.protocol", v, &vlen), RD_KAFKA_CONF_OK);
  assert_string_equal(v, "sasl_ssl");
  rd_kafka_conf_destroy(conf);
  setenv("KPI_KAFKA_PROP_SASL_MECHANISMS", "BOGUS", 1);
  conf = kpi_kafka_conf_new("t", NULL, NULL, err, sizeof(err));
  if (!conf) assert_null(strstr(err, "hunter2"));
  else rd_kafka_conf_destroy(conf);
  unsetenv("KPI_KAFKA_PROP_SECURITY_PROTOCOL");
  unsetenv("KPI_KAFKA_PROP_SASL_MECHANISMS");
  unsetenv("KPI_KAFKA_PROP_SASL_USERNAME");
  unsetenv("KPI_KAFKA_PROP_SASL_PASSWORD");
  unsetenv("KPI_KAFKA_PROP_LINGER_MS");
}

/* How many pairs of the summary LINE are named NAME (at its start or after a space). */
static int pairs_named(const char *line, const char *name) {
  char pat[160];
  snprintf(pat, sizeof(pat), "%s=", name);
  int n = 0;
  for (const char *p = strstr(line, pat); p; p = strstr(p + 1, pat))
    if (p == line || p[-1] == ' ') n++;
  return n;
}

/* kpi_kafka_conf_summary, which kpi_kafka_conf_new logs (docs/operations.md "Kafka client
 * settings"): the value each property ends with, in the funnel's order, once per name,
 * secrets masked, and what was left out counted rather than cut. */
static void test_kafka_conf_summary(void **state) {
  (void)state;
  static const kpi_kafka_prop defaults[] = {
      {"linger.ms", "1"}, {"batch.num.messages", "500"}, {NULL, NULL}};
  static const kpi_kafka_prop fixed[] = {{"acks", "all"}, {NULL, NULL}};
  setenv("KPI_KAFKA_BOOTSTRAP", "127.0.0.1:1", 1);
  setenv("KPI_KAFKA_PROP_LINGER_MS", "7", 1);
  setenv("KPI_KAFKA_PROP_linger_ms", "7", 1); /* the same property spelt twice */
  setenv("KPI_KAFKA_PROP_SOCKET_KEEPALIVE_ENABLE", "true", 1);
  setenv("KPI_KAFKA_PROP_SASL_PASSWORD", "hunter2", 1);
  setenv("KPI_KAFKA_PROP_SASL_OAUTHBEARER_CONFIG", "principal=city secret=hunter3", 1);
  char err[256];
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("t", defaults, fixed, err, sizeof(err));
  if (!conf) fail_msg("%s", err);
  char line[1024];
  size_t len = kpi_kafka_conf_summary(conf, defaults, fixed, line, sizeof(line));
  assert_int_equal(len, strlen(line));
  const char *head = "bootstrap.servers=127.0.0.1:1 linger.ms=7 batch.num.messages=500 ";
  assert_memory_equal(line, head, strlen(head));
  assert_string_equal(line + len - strlen(" acks=-1"), " acks=-1"); /* librdkafka's "all" */
  assert_non_null(strstr(line, " socket.keepalive.enable=true "));
  assert_non_null(strstr(line, " sasl.password=*** "));
  assert_non_null(strstr(line, " sasl.oauthbearer.config=*** "));
  assert_null(strstr(line, "hunter"));
  assert_null(strstr(line, "not shown"));
  const char *names[] = {"bootstrap.servers", "linger.ms", "batch.num.messages",
                         "socket.keepalive.enable", "sasl.password", "sasl.oauthbearer.config",
                         "acks"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    assert_int_equal(pairs_named(line, names[i]), 1);

  /* Too long a line keeps whole pairs and counts the rest: here only bootstrap.servers fits
   * in the 64 - 32 bytes the pairs may use. */
  char cut[64];
  len = kpi_kafka_conf_summary(conf, defaults, fixed, cut, sizeof(cut));
  assert_int_equal(len, strlen(cut));
  assert_string_equal(cut, "bootstrap.servers=127.0.0.1:1 (+6 not shown)");
  char none[32] = {'x'};
  assert_int_equal(kpi_kafka_conf_summary(conf, defaults, fixed, none, sizeof(none)), 0);
  assert_string_equal(none, "");
  rd_kafka_conf_destroy(conf);

  /* A value longer than the summary shows is left out, never cut. */
  char rack[700];
  memset(rack, 'r', sizeof(rack) - 1);
  rack[sizeof(rack) - 1] = '\0';
  setenv("KPI_KAFKA_PROP_CLIENT_RACK", rack, 1);
  conf = kpi_kafka_conf_new("t", defaults, fixed, err, sizeof(err));
  if (!conf) fail_msg("%s", err);
  kpi_kafka_conf_summary(conf, defaults, fixed, line, sizeof(line));
  assert_null(strstr(line, "client.rack"));
  assert_string_equal(line + strlen(line) - strlen(" acks=-1 (+1 not shown)"),
                      " acks=-1 (+1 not shown)");
  rd_kafka_conf_destroy(conf);
  unsetenv("KPI_KAFKA_PROP_CLIENT_RACK");
  unsetenv("KPI_KAFKA_PROP_LINGER_MS");
  unsetenv("KPI_KAFKA_PROP_linger_ms");
  unsetenv("KPI_KAFKA_PROP_SOCKET_KEEPALIVE_ENABLE");
  unsetenv("KPI_KAFKA_PROP_SASL_PASSWORD");
  unsetenv("KPI_KAFKA_PROP_SASL_OAUTHBEARER_CONFIG");
  unsetenv("KPI_KAFKA_BOOTSTRAP");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_env_int),
      cmocka_unit_test(test_split_hostport),
      cmocka_unit_test(test_listen_and_path),
      cmocka_unit_test(test_topics_and_kafka_passthrough),
      cmocka_unit_test(test_kafka_conf_summary),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
