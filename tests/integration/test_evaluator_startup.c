/* test_evaluator_startup.c: an evaluator whose database or broker is not there yet keeps
 * waiting, and SIGTERM during that wait stops it at once with status 0 (docs/evaluator.md "Start-up and shutdown"). */
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

#include "kpi_it.h"

static void stop_while_waiting(const char *const *env, const char *log) {
  pid_t pid = kpi_it_spawn("services/evaluator/kpi-evaluator", env, log);
  kpi_it_sleep_ms(2500); /* long enough to be inside a retry wait */
  assert_int_equal(waitpid(pid, NULL, WNOHANG), 0); /* still running: it waits, it does not exit */
  long long t0 = kpi_it_now_ms();
  int status = kpi_it_stop(pid, SIGTERM, 5000);
  if (status == -1) fail_msg("no exit within 5 s of SIGTERM; log %s", log);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(kpi_it_now_ms() - t0 < 4500);
}

static void test_sigterm_while_database_missing(void **state) {
  (void)state;
  char log[256];
  snprintf(log, sizeof(log), "%s/evaluator-nodb-%d.log", getenv("KPI_STACK_DIR"), (int)getpid());
  kpi_it_env env = {0};
  kpi_it_env_add(&env, "DATABASE_URL=postgresql://postgres@127.0.0.1:%d/none", kpi_it_free_port());
  kpi_it_env_add(&env, "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", kpi_it_free_port());
  stop_while_waiting(kpi_it_env_list(&env), log);
}

static void test_sigterm_while_broker_missing(void **state) {
  (void)state;
  char db[64], conninfo[512], log[256];
  kpi_it_unique("it_ev_nobroker", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, conninfo, sizeof(conninfo)), 0);
  kpi_it_env env = {0};
  kpi_it_env_add(&env, "DATABASE_URL=%s", conninfo);
  kpi_it_env_add(&env, "KPI_KAFKA_BOOTSTRAP=127.0.0.1:%d", kpi_it_free_port());
  kpi_it_env_add(&env, "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", kpi_it_free_port());
  snprintf(log, sizeof(log), "%s/%s.log", getenv("KPI_STACK_DIR"), db);
  stop_while_waiting(kpi_it_env_list(&env), log);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sigterm_while_database_missing),
      cmocka_unit_test(test_sigterm_while_broker_missing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
