/* test_exit_codes.c: a KPI_KAFKA_PROP_* that librdkafka refuses, or one naming a property the
 * service fixes, is bad configuration: ingest, the evaluator, the notifier and `kpi-admin
 * topics` exit 2 (KPI_EXIT_CONFIG, not restarted by the systemd units) and log why
 * (docs/architecture.md "Start and stop"). Each client a service builds is reached: the
 * producers through an unknown property, the consumers through a fixed one. */
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

#define SHIPPED KPI_SOURCE_DIR "/config/catalog.json"
/* librdkafka's words for an unknown property, and kpi_kafka_conf_new's for a fixed one. */
#define UNKNOWN_PROP "KPI_KAFKA_PROP_NOT_A_PROPERTY=1"
#define UNKNOWN_SAYS "not.a.property"
#define FIXED_SAYS "cannot be overridden"

/* The environment every service needs to get as far as its Kafka clients: its own database,
 * topics, group and port. */
static void base_env(kpi_it_env *env) {
  char name[64], conninfo[512];
  kpi_it_unique("it_exit", name, sizeof(name));
  assert_int_equal(kpi_it_create_db(name, conninfo, sizeof(conninfo)), 0);
  kpi_it_env_add(env, "DATABASE_URL=%s", conninfo);
  kpi_it_env_add(env, "PGDATABASE=%s", name);
  kpi_it_env_add(env, "KPI_CATALOG=%s", SHIPPED);
  kpi_it_env_add(env, "KPI_TOPIC_MEASUREMENTS=%s_meas", name);
  kpi_it_env_add(env, "KPI_TOPIC_ALERTS=%s_alerts", name);
  kpi_it_env_add(env, "KPI_TOPIC_MEASUREMENTS_DLQ=%s_meas_dlq", name);
  kpi_it_env_add(env, "KPI_TOPIC_ALERTS_DLQ=%s_alerts_dlq", name);
  kpi_it_env_add(env, "KPI_EVALUATOR_GROUP=%s_ev", name);
  kpi_it_env_add(env, "KPI_NOTIFIER_GROUP=%s_nf", name);
  kpi_it_env_add(env, "KPI_MAIL_FROM=kpi-it@exit.test");
  int port = kpi_it_free_port();
  kpi_it_env_add(env, "KPI_INGEST_LISTEN=127.0.0.1:%d", port);
  kpi_it_env_add(env, "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", port);
  kpi_it_env_add(env, "KPI_NOTIFIER_LISTEN=127.0.0.1:%d", port);
}

/* Runs ARGV (ARGV[0] relative to the build dir) with the base environment plus BAD, waits for
 * its exit, and asserts it is 2 with SAYS in its log. */
static void expect_config_exit(const char *const *argv, const char *bad, const char *says) {
  kpi_it_env env = {0};
  base_env(&env);
  kpi_it_env_add(&env, "%s", bad);
  char path[512], log[256];
  snprintf(path, sizeof(path), "%s/%s", KPI_BINARY_DIR, argv[0]);
  snprintf(log, sizeof(log), "%s/it_exit_%d.log", KPI_BINARY_DIR, (int)getpid());
  unlink(log);
  const char *args[4] = {path, argv[1], NULL, NULL};
  pid_t pid = kpi_it_spawn_argv(args, kpi_it_env_list(&env), log, KPI_SOURCE_DIR);
  assert_true(pid > 0);
  /* Signal 0: only wait. The evaluator migrates its database and creates its topics before it
   * builds its consumer. */
  int status = kpi_it_stop(pid, 0, 60000);
  char *text = kpi_it_read_file(log, NULL);
  if (!(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2))
    fail_msg("%s %s with %s: status %d, not exit 2; log:\n%s", argv[0], argv[1] ? argv[1] : "",
             bad, status, text ? text : "(none)");
  if (!text || !strstr(text, says))
    fail_msg("%s with %s: the log does not say \"%s\":\n%s", argv[0], bad, says,
             text ? text : "(none)");
  free(text);
  unlink(log);
}

static void test_ingest(void **state) {
  (void)state;
  const char *const argv[] = {"services/ingest/kpi-ingest", NULL};
  expect_config_exit(argv, UNKNOWN_PROP, UNKNOWN_SAYS);
  expect_config_exit(argv, "KPI_KAFKA_PROP_ACKS=1", FIXED_SAYS);
}

static void test_evaluator(void **state) {
  (void)state;
  const char *const argv[] = {"services/evaluator/kpi-evaluator", NULL};
  expect_config_exit(argv, UNKNOWN_PROP, UNKNOWN_SAYS); /* the producer, built first */
  /* A consumer property: the producer takes it, the consumer refuses it. */
  expect_config_exit(argv, "KPI_KAFKA_PROP_ENABLE_AUTO_COMMIT=true", FIXED_SAYS);
}

static void test_notifier(void **state) {
  (void)state;
  const char *const argv[] = {"services/notifier/kpi-notifier", NULL};
  expect_config_exit(argv, UNKNOWN_PROP, UNKNOWN_SAYS); /* the DLQ producer, built first */
  expect_config_exit(argv, "KPI_KAFKA_PROP_LOG_QUEUE=false", FIXED_SAYS); /* fixed in both */
  /* A consumer property: the DLQ producer takes it, the consumer refuses it. */
  expect_config_exit(argv, "KPI_KAFKA_PROP_ENABLE_AUTO_COMMIT=true", FIXED_SAYS);
}

static void test_admin_topics(void **state) {
  (void)state;
  const char *const argv[] = {"tools/kpi-admin", "topics", NULL};
  expect_config_exit(argv, UNKNOWN_PROP, UNKNOWN_SAYS);
  expect_config_exit(argv, "KPI_TOPIC_REPLICATION=0", "KPI_TOPIC_REPLICATION");
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ingest),
      cmocka_unit_test(test_evaluator),
      cmocka_unit_test(test_notifier),
      cmocka_unit_test(test_admin_topics),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
