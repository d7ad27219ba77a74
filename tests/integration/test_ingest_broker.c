/* test_ingest_broker.c: kpi-ingest when its broker goes away. The test runs its own stack
 * (scripts/stack.sh) because it freezes that broker with SIGSTOP, which looks to clients
 * exactly like an unreachable broker (connections stay open, nothing answers), while the
 * shared broker stays up for the other tests. Checked: 503 before the broker was ever seen;
 * 503 with Retry-After once deliveries time out; 429 when the producer queue is full; the
 * service keeps running, recovers, and no 202 was given for a record not in Kafka. Also: the
 * producer settings it logs at start carry the operator's KPI_KAFKA_PROP_* values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_ingest_client.h"

#define MEASURE_LED "g4-carbon-2-led-rate"
#define JSON_CT "Content-Type: application/json\r\n"

static char stack_dir[128];
static pid_t kafka_pid;

static void broker_freeze(void) { assert_int_equal(kill(kafka_pid, SIGSTOP), 0); }
static void broker_thaw(void) { assert_int_equal(kill(kafka_pid, SIGCONT), 0); }

static int setup(void **state) {
  (void)state;
  kpi_env_load_file(KPI_SOURCE_DIR "/config/sample-tokens.env");
  snprintf(stack_dir, sizeof(stack_dir), "/tmp/it_ingest_broker_%d", (int)getpid());
  char cmd[1024];
  /* stack.sh picks ports that are free when it looks; on a busy machine another process can
   * take one before the server binds it. One more try with new ports, then the log. */
  int started = 0;
  for (int attempt = 0; attempt < 2 && !started; attempt++) {
    snprintf(cmd, sizeof(cmd), "%s/scripts/stack.sh start %s >>%s.log 2>&1", KPI_SOURCE_DIR,
             stack_dir, stack_dir);
    started = system(cmd) == 0;
  }
  if (!started) {
    fprintf(stderr, "own stack did not start; its log:\n");
    snprintf(cmd, sizeof(cmd), "tail -n 30 %s.log >&2", stack_dir);
    if (system(cmd) != 0) fprintf(stderr, "(no log)\n");
    return -1;
  }
  /* Our stack's broker, not the shared one: stack.env does not override what is set. */
  char path[256];
  snprintf(path, sizeof(path), "%s/stack.env", stack_dir);
  unsetenv("KPI_KAFKA_BOOTSTRAP");
  kpi_env_load_file(path);
  snprintf(path, sizeof(path), "%s/kafka.pid", stack_dir);
  FILE *f = fopen(path, "r");
  if (!f || fscanf(f, "%d", &kafka_pid) != 1) return -1;
  fclose(f);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (kafka_pid > 0) kill(kafka_pid, SIGCONT);
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "%s/scripts/stack.sh stop %s >>%s.log 2>&1 && rm -rf %s %s.log",
           KPI_SOURCE_DIR, stack_dir, stack_dir, stack_dir, stack_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static char *led_request(const char *event_id, int value) {
  char body[512];
  snprintf(body, sizeof(body),
           "{\"event_id\":\"%s\",\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":"
           "\"2024-05-01\",\"value\":%d,\"unit\":\"percent\"}",
           event_id, value);
  char h[512];
  snprintf(h, sizeof(h), "%s%s", tc_auth("KANKYO"), JSON_CT);
  return tc_format("POST", "/v1/measurements", h, body);
}

static void make_event_id(int i, char out[KPI_UUID_STRLEN + 1]) {
  snprintf(out, KPI_UUID_STRLEN + 1, "%08x-0000-4000-8000-%012x", (unsigned)getpid(),
           (unsigned)i);
}

/* Sends N requests on N connections at once and collects their answers. */
typedef struct {
  char event_id[KPI_UUID_STRLEN + 1];
  int status;
  char retry_after[16];
} sent;

static void send_many(int port, sent *out, int n, int first_id, int timeout_ms) {
  int *fds = calloc((size_t)n, sizeof(int));
  for (int i = 0; i < n; i++) {
    make_event_id(first_id + i, out[i].event_id);
    fds[i] = tc_connect(port);
    assert_true(fds[i] >= 0);
    char *req = led_request(out[i].event_id, i % 100);
    assert_int_equal(tc_write(fds[i], req, strlen(req)), 0);
    free(req);
  }
  for (int i = 0; i < n; i++) {
    tc_resp r;
    out[i].status = tc_read(fds[i], &r, 1, timeout_ms, NULL) == 1 ? r.status : -1;
    const char *ra = tc_header(&r, "retry-after");
    snprintf(out[i].retry_after, sizeof(out[i].retry_after), "%s", ra ? ra : "");
    tc_resp_free(&r);
    close(fds[i]);
  }
  free(fds);
}

static int http_get_status(int port, const char *path) {
  tc_resp r;
  if (tc_request(port, "GET", path, NULL, NULL, &r) != 0) return -1;
  int s = r.status;
  tc_resp_free(&r);
  return s;
}

static int wait_status(int port, const char *path, int status, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  while (kpi_it_now_ms() < deadline) {
    if (http_get_status(port, path) == status) return 0;
    kpi_it_sleep_ms(100);
  }
  return -1;
}

/* The broker is frozen before the service starts: it serves /healthz, answers POSTs 503 with
 * Retry-After (it keeps trying in the background, never exits), and works once the broker
 * is back. */
static void test_start_without_broker(void **state) {
  (void)state;
  broker_freeze();
  tc_service svc;
  tc_service_start(&svc, NULL, 0);
  assert_int_equal(http_get_status(svc.port, "/readyz"), 503);
  sent s;
  send_many(svc.port, &s, 1, 1, 10000);
  assert_int_equal(s.status, 503);
  assert_true(s.retry_after[0] != '\0');
  tc_resp r;
  char h[512];
  snprintf(h, sizeof(h), "%s%s", tc_auth("KANKYO"), JSON_CT);
  assert_int_equal(tc_request(svc.port, "POST", "/v1/measurements", h, "{}", &r), 0);
  tc_expect_problem(&r, 422, "measure_id", "missing"); /* validation does not need Kafka */
  tc_resp_free(&r);
  broker_thaw();
  if (wait_status(svc.port, "/readyz", 200, 40000) != 0)
    fail_msg("not ready after the broker came back; see %s", svc.log);
  send_many(svc.port, &s, 1, 2, 20000);
  assert_int_equal(s.status, 202);
  tc_service_stop(&svc);
}

/* The broker freezes mid-run: requests in flight and new ones get 503 (deliveries time out
 * after KPI_INGEST_DELIVERY_TIMEOUT_MS) or 429, never 202; the service survives, recovers,
 * and every event answered 202 is in the topic afterwards. */
static void test_broker_lost_mid_run(void **state) {
  (void)state;
  const char *env[] = {"KPI_INGEST_DELIVERY_TIMEOUT_MS=3000", NULL};
  tc_service svc;
  tc_service_start(&svc, env, 1);
  enum { N = 16 };
  sent before[N], during[N], after[N];
  send_many(svc.port, before, N, 100, 20000);
  for (int i = 0; i < N; i++) assert_int_equal(before[i].status, 202);

  broker_freeze();
  long long t0 = kpi_it_now_ms();
  send_many(svc.port, during, N, 200, 20000);
  long long took = kpi_it_now_ms() - t0;
  for (int i = 0; i < N; i++) {
    if (during[i].status != 503 && during[i].status != 429)
      fail_msg("request %d answered %d while the broker was frozen", i, during[i].status);
    assert_true(during[i].retry_after[0] != '\0');
  }
  assert_true(took >= 2500); /* answered by the delivery timeout, not before */
  if (wait_status(svc.port, "/readyz", 503, 10000) != 0) fail_msg("readyz stayed 200");
  assert_int_equal(http_get_status(svc.port, "/healthz"), 200);

  broker_thaw();
  if (wait_status(svc.port, "/readyz", 200, 40000) != 0)
    fail_msg("not ready after the broker came back; see %s", svc.log);
  /* The producer may need a moment to re-establish its idempotence state. */
  long long deadline = kpi_it_now_ms() + 30000;
  int ok = 0;
  while (!ok && kpi_it_now_ms() < deadline) {
    send_many(svc.port, after, N, 300, 20000);
    ok = 1;
    for (int i = 0; i < N; i++) ok &= after[i].status == 202;
    if (!ok) kpi_it_sleep_ms(500);
  }
  assert_true(ok);
  tc_service_stop(&svc);

  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  for (int i = 0; i < N; i++) {
    assert_non_null(tc_find_event(recs, n, before[i].event_id));
    assert_non_null(tc_find_event(recs, n, after[i].event_id));
  }
  tc_records_free(recs, n);
}

/* A producer queue of one message and a frozen broker: the second record finds the queue
 * full and is answered 429 with Retry-After: 1 at once. */
static void test_queue_full_429(void **state) {
  (void)state;
  const char *env[] = {"KPI_INGEST_DELIVERY_TIMEOUT_MS=3000", "KPI_LOG_LEVEL=info",
                       "KPI_KAFKA_PROP_QUEUE_BUFFERING_MAX_MESSAGES=1", "KPI_KAFKA_PROP_BATCH_NUM_MESSAGES=1",
                       NULL};
  tc_service svc;
  tc_service_start(&svc, env, 1);
  /* The producer's settings are logged once at start, the operator's values over the
   * service's defaults (docs/operations.md "Kafka client settings"). */
  char *log = kpi_it_read_file(svc.log, NULL);
  assert_non_null(log);
  char *cfg = strstr(log, "\"event\":\"kafka_config\",\"msg\":\"kpi-ingest: ");
  if (!cfg) fail_msg("no kafka_config line in %s", svc.log);
  cfg[strcspn(cfg, "\n")] = '\0';
  const char *want[] = {" queue.buffering.max.messages=1 ", " batch.num.messages=1 ",
                        " message.timeout.ms=3000 ", " linger.ms=1 ", " enable.idempotence=true "};
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
    if (!strstr(cfg, want[i])) fail_msg("%s lacks \"%s\"", cfg, want[i]);
  free(log);
  broker_freeze();
  int fd1 = tc_connect(svc.port);
  char id1[KPI_UUID_STRLEN + 1], id2[KPI_UUID_STRLEN + 1];
  make_event_id(401, id1);
  make_event_id(402, id2);
  char *req = led_request(id1, 1);
  assert_int_equal(tc_write(fd1, req, strlen(req)), 0);
  free(req);
  kpi_it_sleep_ms(200);
  int fd2 = tc_connect(svc.port);
  req = led_request(id2, 2);
  long long t0 = kpi_it_now_ms();
  assert_int_equal(tc_write(fd2, req, strlen(req)), 0);
  free(req);
  tc_resp r;
  assert_int_equal(tc_read(fd2, &r, 1, 2000, NULL), 1);
  tc_expect_problem(&r, 429, NULL, NULL);
  assert_string_equal(tc_header(&r, "retry-after"), "1");
  assert_true(kpi_it_now_ms() - t0 < 1000);
  tc_resp_free(&r);
  /* A batch meeting the full queue: every item 429, so the batch is 429 as a whole. */
  char h[512];
  snprintf(h, sizeof(h), "%s%s", tc_auth("KANKYO"), JSON_CT);
  assert_int_equal(tc_request(svc.port, "POST", "/v1/measurements:batch", h,
                              "[{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                              "\"value\":3,\"unit\":\"percent\"}]",
                              &r), 0);
  tc_expect_problem(&r, 429, NULL, NULL);
  tc_resp_free(&r);
  /* The first one times out: 503. */
  assert_int_equal(tc_read(fd1, &r, 1, 10000, NULL), 1);
  tc_expect_problem(&r, 503, NULL, NULL);
  assert_non_null(tc_header(&r, "retry-after"));
  tc_resp_free(&r);
  close(fd1);
  close(fd2);
  broker_thaw();
  if (wait_status(svc.port, "/readyz", 200, 40000) != 0) fail_msg("not ready; see %s", svc.log);
  tc_service_stop(&svc);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_start_without_broker),
      cmocka_unit_test(test_broker_lost_mid_run),
      cmocka_unit_test(test_queue_full_429),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
