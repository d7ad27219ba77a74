/* test_ingest_reuseport.c: scale-out on one port (docs/http.md "Scale-out"): with
 * KPI_HTTP_REUSEPORT=1 a second kpi-ingest binds the port a first one holds and both serve;
 * without it on both sides the second cannot bind and exits 1 (KPI_EXIT_START); a value other
 * than 0 or 1 is bad configuration (exit 2). */
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
#define BINARY "services/ingest/kpi-ingest"

/* One process: its own log; the port and topic are the test's. REUSE is the value of
 * KPI_HTTP_REUSEPORT (NULL: left unset). */
static pid_t start_one(int port, const char *topic, const char *reuse, const char *log) {
  kpi_it_env env = {0};
  kpi_it_env_add(&env, "KPI_CATALOG=%s", SHIPPED);
  kpi_it_env_add(&env, "KPI_TOPIC_MEASUREMENTS=%s", topic);
  kpi_it_env_add(&env, "KPI_INGEST_LISTEN=127.0.0.1:%d", port);
  if (reuse) kpi_it_env_add(&env, "KPI_HTTP_REUSEPORT=%s", reuse);
  unlink(log);
  pid_t pid = kpi_it_spawn(BINARY, kpi_it_env_list(&env), log);
  assert_true(pid > 0);
  return pid;
}

static int log_has(const char *log, const char *needle) {
  char *text = kpi_it_read_file(log, NULL);
  int found = text && strstr(text, needle) != NULL;
  free(text);
  return found;
}

/* Waits until LOG says the process listens (or it exited); returns 1 when it does. */
static int wait_listening(pid_t pid, const char *log) {
  for (int i = 0; i < 300; i++) {
    if (log_has(log, "\"listening\"")) return 1;
    if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
    kpi_it_sleep_ms(100);
  }
  return 0;
}

static void logs(char a[256], char b[256], const char *what) {
  snprintf(a, 256, "%s/it_reuse_%s_a_%d.log", KPI_BINARY_DIR, what, (int)getpid());
  snprintf(b, 256, "%s/it_reuse_%s_b_%d.log", KPI_BINARY_DIR, what, (int)getpid());
}

/* A serves alone; B binds the same port beside it; A leaves (SIGTERM, exit 0) and new
 * connections are then B's: each of the two answered on the shared port. */
static void test_two_processes_share_the_port(void **state) {
  (void)state;
  char topic[64], la[256], lb[256];
  kpi_it_unique("it_reuse", topic, sizeof(topic));
  logs(la, lb, "on");
  int port = kpi_it_free_port();
  pid_t a = start_one(port, topic, "1", la);
  assert_int_equal(kpi_it_wait_http(port, "/readyz", 200, 60000), 0);
  pid_t b = start_one(port, topic, "1", lb);
  if (!wait_listening(b, lb)) fail_msg("the second process did not listen; see %s", lb);
  /* Both alive, both on the port: every new connection is answered. */
  assert_int_equal(waitpid(a, NULL, WNOHANG), 0);
  assert_int_equal(waitpid(b, NULL, WNOHANG), 0);
  for (int i = 0; i < 16; i++) {
    char *resp = kpi_it_http_get(port, "/healthz", 10);
    assert_non_null(resp);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    free(resp);
  }
  int st = kpi_it_stop(a, SIGTERM, 20000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  /* Only B listens now. */
  assert_int_equal(kpi_it_wait_http(port, "/readyz", 200, 60000), 0);
  char *resp = kpi_it_http_get(port, "/healthz", 10);
  assert_non_null(resp);
  assert_non_null(strstr(resp, "HTTP/1.1 200"));
  free(resp);
  st = kpi_it_stop(b, SIGTERM, 20000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  unlink(la);
  unlink(lb);
}

/* Without the variable on the second process (the first with or without it), the port is
 * taken: the second logs listen_failed and exits 1 while the first keeps serving. */
static void expect_second_refused(const char *first, const char *what) {
  char topic[64], la[256], lb[256];
  kpi_it_unique("it_reuse", topic, sizeof(topic));
  logs(la, lb, what);
  int port = kpi_it_free_port();
  pid_t a = start_one(port, topic, first, la);
  assert_int_equal(kpi_it_wait_http(port, "/readyz", 200, 60000), 0);
  pid_t b = start_one(port, topic, NULL, lb);
  int st = kpi_it_stop(b, 0, 30000); /* signal 0: only wait */
  if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1))
    fail_msg("the second process did not exit 1 (status %d); see %s", st, lb);
  assert_true(log_has(lb, "listen_failed"));
  assert_int_equal(kpi_it_wait_http(port, "/readyz", 200, 10000), 0);
  st = kpi_it_stop(a, SIGTERM, 20000);
  assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  unlink(la);
  unlink(lb);
}

static void test_without_the_variable_second_exits_1(void **state) {
  (void)state;
  expect_second_refused(NULL, "off");
  expect_second_refused("1", "half");
}

static void test_bad_value_exits_2(void **state) {
  (void)state;
  char topic[64], la[256], lb[256];
  kpi_it_unique("it_reuse", topic, sizeof(topic));
  logs(la, lb, "bad");
  pid_t a = start_one(kpi_it_free_port(), topic, "yes", la);
  int st = kpi_it_stop(a, 0, 20000);
  if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2))
    fail_msg("KPI_HTTP_REUSEPORT=yes: status %d, not exit 2; see %s", st, la);
  assert_true(log_has(la, "KPI_HTTP_REUSEPORT"));
  unlink(la);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_processes_share_the_port),
      cmocka_unit_test(test_without_the_variable_second_exits_1),
      cmocka_unit_test(test_bad_value_exits_2),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
