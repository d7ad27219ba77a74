/* test_kafka_sasl.c: the KPI_KAFKA_PROP_* passthrough carries SASL settings to a real broker's
 * SASL/PLAIN listener (scripts/stack.sh opens one), through the shipped kpi-admin and through
 * kpi_kafka_conf_new in process; the variables Kubernetes injects for a Service named kafka
 * change nothing; a wrong password is an authentication error, not a silent fallback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kpi_it.h"
#include "kpi_kafka.h"

static int delivered_ok;
static int auth_errors;

static void on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  (void)rk;
  (void)opaque;
  if (!msg->err) delivered_ok++;
}

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)rk;
  (void)opaque;
  (void)reason;
  if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION) auth_errors++;
}

/* The SASL environment, set in this process (for kpi_kafka_conf_new) and given to children. */
static void sasl_env(kpi_it_env *e, const char *password) {
  const char *kv[][2] = {
      {"KPI_KAFKA_BOOTSTRAP", getenv("KPI_STACK_KAFKA_SASL_BOOTSTRAP")},
      {"KPI_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_PLAINTEXT"},
      {"KPI_KAFKA_PROP_SASL_MECHANISMS", "PLAIN"},
      {"KPI_KAFKA_PROP_SASL_USERNAME", getenv("KPI_STACK_KAFKA_SASL_USER")},
      {"KPI_KAFKA_PROP_SASL_PASSWORD", password},
      /* What Kubernetes injects for a Service named kafka: not ours, ignored. */
      {"KAFKA_PORT", "tcp://10.96.0.17:9092"},
      {"KAFKA_SERVICE_HOST", "10.96.0.17"},
      {"KAFKA_PORT_9092_TCP", "tcp://10.96.0.17:9092"},
  };
  for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
    assert_non_null(kv[i][1]);
    setenv(kv[i][0], kv[i][1], 1);
    if (e) kpi_it_env_set(e, kv[i][0], kv[i][1]);
  }
}

static void test_sasl_passthrough(void **state) {
  (void)state;
  char topic[128], group[128], err[512], path[1024], log[1024];
  kpi_it_unique("it_sasl", topic, sizeof(topic));
  kpi_it_unique("it_sasl_group", group, sizeof(group));
  const char *plain_bootstrap = getenv("KPI_KAFKA_BOOTSTRAP");
  assert_non_null(plain_bootstrap);
  char *plain = strdup(plain_bootstrap);

  /* kpi-admin creates the topics through the SASL listener with nothing but variables. */
  kpi_it_env env;
  memset(&env, 0, sizeof(env));
  kpi_it_env_extend(&env, NULL);
  sasl_env(&env, getenv("KPI_STACK_KAFKA_SASL_PASSWORD"));
  kpi_it_env_set(&env, "KPI_TOPIC_MEASUREMENTS", topic);
  kpi_it_env_set(&env, "KPI_TOPIC_MEASUREMENTS_PARTITIONS", "2");
  kpi_it_env_set(&env, "KPI_LOG_LEVEL", "info");
  snprintf(path, sizeof(path), "%s/tools/kpi-admin", KPI_BINARY_DIR);
  snprintf(log, sizeof(log), "%s/it_sasl_admin_%d.log", KPI_BINARY_DIR, (int)getpid());
  const char *argv[] = {path, "topics", NULL};
  pid_t pid = kpi_it_spawn_argv(argv, kpi_it_env_list(&env), log, NULL);
  assert_true(pid > 0);
  int status = kpi_it_stop(pid, 0, 60000);
  char *admin_log = kpi_it_read_file(log, NULL);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fail_msg("kpi-admin topics over SASL failed: %s", admin_log ? admin_log : "(no log)");
  /* The client settings it logged (kafka_config) name the SASL user, never the password. */
  assert_non_null(admin_log);
  if (!strstr(admin_log, "\"event\":\"kafka_config\"") || !strstr(admin_log, " sasl.password=***") ||
      strstr(admin_log, getenv("KPI_STACK_KAFKA_SASL_PASSWORD")))
    fail_msg("kafka_config line missing, or the password not masked: %s", admin_log);
  free(admin_log);

  /* A record produced through the SASL listener by this process... */
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("it-sasl", NULL, NULL, err, sizeof(err));
  if (!conf) fail_msg("%s", err);
  rd_kafka_conf_set_dr_msg_cb(conf, on_kafka_delivery);
  rd_kafka_conf_set_error_cb(conf, on_kafka_error);
  rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(prod);
  assert_int_equal(kpi_it_produce(prod, topic, "k", "over-sasl", 9), RD_KAFKA_RESP_ERR_NO_ERROR);
  assert_int_equal(rd_kafka_flush(prod, 20000), RD_KAFKA_RESP_ERR_NO_ERROR);
  assert_int_equal(delivered_ok, 1);
  assert_int_equal(auth_errors, 0);
  rd_kafka_destroy(prod);

  /* ...and with a wrong password, the broker refuses the login and nothing is delivered. */
  sasl_env(NULL, "not-the-password");
  conf = kpi_kafka_conf_new("it-sasl-bad", NULL, NULL, err, sizeof(err));
  if (!conf) fail_msg("%s", err);
  rd_kafka_conf_set_dr_msg_cb(conf, on_kafka_delivery);
  rd_kafka_conf_set_error_cb(conf, on_kafka_error);
  prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(prod);
  assert_int_equal(kpi_it_produce(prod, topic, "k", "refused", 7), RD_KAFKA_RESP_ERR_NO_ERROR);
  for (int i = 0; i < 100 && auth_errors == 0; i++) rd_kafka_poll(prod, 100);
  assert_true(auth_errors > 0);
  assert_int_equal(delivered_ok, 1);
  rd_kafka_purge(prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_flush(prod, 2000);
  rd_kafka_destroy(prod);

  /* The record is read back through the plain listener: exactly the one sent over SASL. */
  const char *vars[] = {"KPI_KAFKA_PROP_SECURITY_PROTOCOL", "KPI_KAFKA_PROP_SASL_MECHANISMS",
                        "KPI_KAFKA_PROP_SASL_USERNAME", "KPI_KAFKA_PROP_SASL_PASSWORD"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) unsetenv(vars[i]);
  setenv("KPI_KAFKA_BOOTSTRAP", plain, 1);
  rd_kafka_t *cons = kpi_it_kafka_subscriber("it-sasl-reader", group, topic);
  assert_non_null(cons);
  int seen = 0, refused = 0;
  long long deadline = kpi_it_now_ms() + 20000;
  while (kpi_it_now_ms() < deadline && seen == 0) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 200);
    if (!m) continue;
    if (!m->err && m->len == 9 && memcmp(m->payload, "over-sasl", 9) == 0) seen++;
    if (!m->err && m->len == 7 && memcmp(m->payload, "refused", 7) == 0) refused++;
    rd_kafka_message_destroy(m);
  }
  assert_int_equal(seen, 1);
  assert_int_equal(refused, 0);
  kpi_it_kafka_close(cons);
  free(plain);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_sasl_passthrough)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
