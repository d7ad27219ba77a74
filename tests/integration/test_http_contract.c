/* test_http_contract.c: proto/openapi.yaml against the running services: schemathesis
 * (scripts/schemathesis.sh, pinned, own venv) fuzzes ingest with a sample token and the
 * evaluator's read API, and every check must pass. Also the HTTP hardening seen through
 * ingest: trailers never authenticate, unknown methods get 501, known ones 405 + Allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"
#include "test_ingest_client.h"

#define MEASURE_LED "g4-carbon-2-led-rate" /* kankyo, percent, level */

static tc_service ingest;
static evw ev;

static int setup(void **state) {
  (void)state;
  kpi_env_load_file(KPI_SOURCE_DIR "/config/sample-tokens.env");
  tc_service_start(&ingest, NULL, 1);
  evw_init(&ev, "it_contract", NULL);
  evw_start(&ev, NULL);
  if (evw_wait_ready(&ev, 60000) != 0) fail_msg("evaluator not ready; see %s", ev.log);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (ingest.pid > 0) kpi_it_stop(ingest.pid, SIGKILL, 5000);
  if (ev.pid > 0) kpi_it_stop(ev.pid, SIGKILL, 5000);
  return 0;
}

/* Runs scripts/schemathesis.sh against 127.0.0.1:PORT for the operations of TAG (and the
 * `operations` tag every service serves), with AUTH as an extra header (may be NULL). The
 * examples are bounded, and so is the whole run. Returns the exit status (0: no failure). */
static int run_schemathesis(int port, const char *tag, const char *auth, const char *log) {
  char script[512], url[64], seed[32], header[320];
  snprintf(script, sizeof(script), "%s/scripts/schemathesis.sh", KPI_SOURCE_DIR);
  snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
  const char *s = getenv("KPI_SCHEMATHESIS_SEED");
  snprintf(seed, sizeof(seed), "%s", s && *s ? s : "1");
  const char *argv[32];
  int n = 0;
  argv[n++] = script;
  argv[n++] = "--config-file";
  argv[n++] = "tests/integration/schemathesis.toml";
  argv[n++] = "--no-color";
  argv[n++] = "run";
  argv[n++] = "proto/openapi.yaml";
  argv[n++] = "--url";
  argv[n++] = url;
  argv[n++] = "--include-tag";
  argv[n++] = tag;
  argv[n++] = "--include-tag";
  argv[n++] = "operations";
  argv[n++] = "--checks";
  argv[n++] = "all";
  argv[n++] = "--max-examples";
  argv[n++] = "40";
  argv[n++] = "--request-timeout";
  argv[n++] = "10";
  argv[n++] = "--seed";
  argv[n++] = seed;
  if (auth) {
    snprintf(header, sizeof(header), "Authorization: Bearer %s", auth);
    argv[n++] = "-H";
    argv[n++] = header;
  }
  argv[n] = NULL;
  pid_t pid = kpi_it_spawn_argv(argv, NULL, log, KPI_SOURCE_DIR);
  assert_true(pid > 0);
  /* The first run also creates the venv (a pip install); later ones take seconds. */
  long long deadline = kpi_it_now_ms() + 240000;
  int status;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (kpi_it_now_ms() > deadline) {
      kpi_it_stop(pid, SIGKILL, 5000);
      fail_msg("schemathesis did not finish in time; see %s", log);
    }
    kpi_it_sleep_ms(100);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Prints the summary at the end of LOG (schemathesis's last lines) to the test output. */
static void print_summary(const char *log) {
  size_t len;
  char *text = kpi_it_read_file(log, &len);
  if (!text) return;
  const char *from = strstr(text, "== SUMMARY ==");
  fprintf(stderr, "%s\n", from ? from : (len > 3000 ? text + len - 3000 : text));
  free(text);
}

static void test_schemathesis_ingest(void **state) {
  (void)state;
  char log[300];
  snprintf(log, sizeof(log), "%s/%s.schemathesis.log", KPI_BINARY_DIR, ingest.topic);
  int rc = run_schemathesis(ingest.port, "measurements", getenv("KPI_TOKEN_KANKYO"), log);
  print_summary(log);
  if (rc != 0) fail_msg("schemathesis found failures against ingest (exit %d); see %s", rc, log);
}

static void test_schemathesis_evaluator(void **state) {
  (void)state;
  char log[300];
  snprintf(log, sizeof(log), "%s/%s.schemathesis.log", KPI_BINARY_DIR, ev.name);
  int rc = run_schemathesis(ev.port, "attainment", NULL, log);
  print_summary(log);
  if (rc != 0)
    fail_msg("schemathesis found failures against the evaluator (exit %d); see %s", rc, log);
}

/* A chunked body whose trailer carries the token: not authenticated (before, 202). */
static void test_trailer_does_not_authenticate(void **state) {
  (void)state;
  const char *json = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                     "\"value\":20,\"unit\":\"percent\"}";
  char req[2048];
  int n = snprintf(req, sizeof(req),
                   "POST /v1/measurements HTTP/1.1\r\nHost: t\r\n"
                   "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                   "Trailer: Authorization\r\n\r\n%zx\r\n%s\r\n0\r\n%s\r\n",
                   strlen(json), json, tc_auth("KANKYO"));
  int fd = tc_connect(ingest.port);
  assert_int_equal(tc_write(fd, req, (size_t)n), 0);
  tc_resp r;
  assert_int_equal(tc_read(fd, &r, 1, 20000, NULL), 1);
  tc_expect_problem(&r, 401, NULL, NULL);
  tc_resp_free(&r);
  close(fd);
}

/* 501 for methods no service implements, on every service; 405 + Allow for known ones. */
static void test_methods(void **state) {
  (void)state;
  const struct {
    int port;
    const char *method, *path;
    int status;
    const char *allow;
  } cases[] = {
      {ingest.port, "FOOBAR", "/v1/measurements", 501, NULL},
      {ingest.port, "PROPFIND", "/healthz", 501, NULL},
      {ingest.port, "QUERY", "/healthz", 501, NULL},
      {ev.port, "QUERY", "/v1/attainment", 501, NULL},
      {ingest.port, "DELETE", "/v1/measurements", 405, "POST"},
      {ingest.port, "GET", "/v1/measurements:batch", 405, "POST"},
      {ingest.port, "OPTIONS", "/metrics", 405, "GET, HEAD"},
      {ev.port, "FOOBAR", "/v1/attainment", 501, NULL},
      {ev.port, "POST", "/v1/attainment/x", 405, "GET, HEAD"},
      {ev.port, "PUT", "/v1/attainment", 405, "GET, HEAD"},
      {ev.port, "GET", "/nope", 404, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    tc_resp r;
    if (tc_request(cases[i].port, cases[i].method, cases[i].path, NULL, NULL, &r) != 0)
      fail_msg("%s %s: no answer", cases[i].method, cases[i].path);
    tc_expect_problem(&r, cases[i].status, NULL, NULL);
    const char *allow = tc_header(&r, "allow");
    if (cases[i].allow) {
      if (!allow || strcmp(allow, cases[i].allow) != 0)
        fail_msg("%s %s: Allow \"%s\"", cases[i].method, cases[i].path, allow ? allow : "");
    }
    tc_resp_free(&r);
  }
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_trailer_does_not_authenticate),
      cmocka_unit_test(test_methods),
      cmocka_unit_test(test_schemathesis_ingest),
      cmocka_unit_test(test_schemathesis_evaluator),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
