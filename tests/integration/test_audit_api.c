/* test_audit_api.c: the evaluator's audit read API end to end (docs/corrections.md "Audit read
 * API"): a department's measurements, its retraction and its acknowledgement go through ingest,
 * Kafka and the evaluator, and GET /v1/measures/{id}/history lists them in the order received,
 * the retracted measurement marked (when, by whom, why), with paging; the lagging measure's alert
 * meets a relay that answers every recipient 451 until the retry budget (3 attempts) is spent,
 * and GET /v1/measures/{id}/notifications shows the mail dead with its attempts and last reply;
 * the address only with the operator token, a wrong token 401. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kpi_it_pipeline.h"
#include "kpi_time.h"

#define KIKAKU_TOKEN "sample-kikaku-token-do-not-use-in-production"
#define MEASURE "g2-uiturn-4-supporters" /* kikaku, person, level */
#define OWNER_MAIL "kikaku@ashibetsu-city.example"
#define OPERATOR_TOKEN "it-audit-operator-token"
#define M1 "5d0c6c52-3a55-4f0e-9a51-7d8c2f1e9b01"
#define M2 "6e1d7d63-4b66-4a1f-8b62-8e9d3a2fac12"

static kpi_it_pipeline pl;

/* POST BODY to the ingest's PATH as kikaku (with header EXTRA, may be NULL); expects 202. */
static void ingest_post(const char *path, const char *extra, const char *body) {
  char url[256], *out;
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", pl.port[KPI_IT_INGEST], path);
  long st =
      kpi_it_http("POST", url, "Authorization: Bearer " KIKAKU_TOKEN, extra, body, &out, NULL);
  if (st != 202) fail_msg("POST %s: %ld %s", path, st, out);
  free(out);
}

/* GET PATH from the evaluator with header H (may be NULL); the parsed body (NULL unless JSON). */
static cJSON *ev_get(const char *path, const char *h, long *status, char **headers) {
  char url[600], *out;
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", pl.port[KPI_IT_EVALUATOR], path);
  *status = kpi_it_http("GET", url, h, NULL, NULL, &out, headers);
  cJSON *doc = cJSON_Parse(out);
  free(out);
  return doc;
}

static cJSON *ev_get_ok(const char *path, const char *h) {
  long st;
  cJSON *doc = ev_get(path, h, &st, NULL);
  if (st != 200 || !doc) fail_msg("GET %s: %ld", path, st);
  return doc;
}

static const char *str(const cJSON *o, const char *name) {
  const cJSON *v = cJSON_GetObjectItem(o, name);
  if (!cJSON_IsString(v)) fail_msg("member %s is not a string", name);
  return v->valuestring;
}

/* The smtp_quirk_server.py relay answering every RCPT with 451. */
static pid_t relay_start(int port, const char *tag) {
  char portstr[16], script[512], dir[256], log[256];
  snprintf(portstr, sizeof(portstr), "%d", port);
  snprintf(script, sizeof(script), "%s/tests/integration/smtp_quirk_server.py", KPI_SOURCE_DIR);
  snprintf(dir, sizeof(dir), "%s/%s_maildir", KPI_BINARY_DIR, tag);
  snprintf(log, sizeof(log), "%s/%s_smtpd.log", KPI_BINARY_DIR, tag);
  const char *argv[] = {"/usr/bin/python3", script, "--mode", "tempfail-rcpt", "--port", portstr,
                        "--maildir", dir, "--lifetime", "400", NULL};
  pid_t pid = kpi_it_spawn_argv(argv, NULL, log, NULL);
  long long deadline = kpi_it_now_ms() + 20000;
  int fd;
  while ((fd = kpi_it_connect(port, 0)) < 0) {
    if (kpi_it_now_ms() > deadline) fail_msg("the relay did not start (log %s)", log);
    kpi_it_sleep_ms(20);
  }
  close(fd);
  return pid;
}

/* ---- history ---- */

static void check_history(void) {
  cJSON *doc = ev_get_ok("/v1/measures/" MEASURE "/history", NULL);
  assert_string_equal(str(doc, "measure_id"), MEASURE);
  cJSON *entries = cJSON_GetObjectItem(doc, "entries");
  assert_int_equal(cJSON_GetArraySize(entries), 4);
  /* In the order received: two readings, the retraction, the acknowledgement. */
  const char *types[] = {"measurement", "measurement", "retraction", "acknowledgement"};
  for (int i = 0; i < 4; i++)
    assert_string_equal(str(cJSON_GetArrayItem(entries, i), "type"), types[i]);
  cJSON *m1 = cJSON_GetArrayItem(entries, 0), *m2 = cJSON_GetArrayItem(entries, 1);
  assert_string_equal(str(m1, "event_id"), M1);
  assert_string_equal(str(m1, "department"), "kikaku");
  assert_string_equal(str(m1, "observed_day"), "2024-02-29");
  assert_string_equal(str(m1, "note"), "監査 登録者数");
  assert_true(cJSON_GetObjectItem(m1, "value")->valuedouble == 26);
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(m1, "retracted")));
  assert_string_equal(str(m2, "event_id"), M2);
  cJSON *rt = cJSON_GetObjectItem(m2, "retracted");
  assert_true(cJSON_IsObject(rt));
  assert_string_equal(str(rt, "by"), "kikaku");
  assert_string_equal(str(rt, "reason"), "重複入力");
  cJSON *r = cJSON_GetArrayItem(entries, 2);
  assert_string_equal(str(r, "retracts"), M2);
  assert_string_equal(str(r, "state"), "applied");
  assert_string_equal(str(rt, "retraction_id"), str(r, "event_id"));
  assert_string_equal(str(rt, "at"), str(r, "received_at"));
  cJSON *a = cJSON_GetArrayItem(entries, 3);
  assert_string_equal(str(a, "note"), "対応方針: 説明会を増やす");
  /* `until` defaulted by the ingest: 28 days after the Japan day it was received. */
  int64_t received_ms;
  char want_until[16];
  assert_int_equal(kpi_time_parse(str(a, "received_at"), &received_ms, NULL), 0);
  kpi_day_format(kpi_day_of_ms(received_ms) + 28, want_until, sizeof(want_until));
  assert_string_equal(str(a, "until"), want_until);
  assert_string_equal(str(a, "department"), "kikaku");

  /* Paging: two, then the two after the second (its instant and id as the cursor). */
  cJSON *p1 = ev_get_ok("/v1/measures/" MEASURE "/history?limit=2", NULL);
  cJSON *e1 = cJSON_GetObjectItem(p1, "entries");
  assert_int_equal(cJSON_GetArraySize(e1), 2);
  cJSON *last = cJSON_GetArrayItem(e1, 1);
  char path[512], *at = curl_easy_escape(NULL, str(last, "received_at"), 0);
  snprintf(path, sizeof(path), "/v1/measures/" MEASURE "/history?after=%s&after_event_id=%s", at,
           str(last, "event_id"));
  curl_free(at);
  cJSON *p2 = ev_get_ok(path, NULL);
  cJSON *e2 = cJSON_GetObjectItem(p2, "entries");
  assert_int_equal(cJSON_GetArraySize(e2), 2);
  assert_string_equal(str(cJSON_GetArrayItem(e2, 0), "type"), "retraction");
  assert_string_equal(str(cJSON_GetArrayItem(e2, 1), "type"), "acknowledgement");
  cJSON_Delete(p1);
  cJSON_Delete(p2);
  cJSON_Delete(doc);

  long st;
  static const char *const bad[] = {"?limit=0", "?limit=10001", "?limit=x", "?after=yesterday",
                                     "?after=2024-01-01T00:00:00Z&after_event_id=x"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    snprintf(path, sizeof(path), "/v1/measures/" MEASURE "/history%s", bad[i]);
    cJSON_Delete(ev_get(path, NULL, &st, NULL));
    if (st != 400) fail_msg("%s: %ld, want 400", bad[i], st);
  }
  cJSON_Delete(ev_get("/v1/measures/no-such-measure/history", NULL, &st, NULL));
  assert_int_equal(st, 404);
  cJSON_Delete(ev_get("/v1/measures/" MEASURE "/other", NULL, &st, NULL));
  assert_int_equal(st, 404);
}

/* ---- notifications ---- */

/* The owner's mail of the first alert in DOC. */
static cJSON *owner_mail(cJSON *doc) {
  cJSON *alerts = cJSON_GetObjectItem(doc, "alerts");
  assert_true(cJSON_GetArraySize(alerts) >= 1);
  cJSON *alert = cJSON_GetArrayItem(alerts, 0);
  assert_string_equal(str(alert, "type"), "alert");
  assert_string_equal(str(alert, "status"), "lagging");
  assert_true(cJSON_IsString(cJSON_GetObjectItem(alert, "published_at")));
  cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItem(alert, "mails")) {
    if (strcmp(str(m, "recipient_department"), "kikaku") == 0) return m;
  }
  fail_msg("no mail to the owner's department");
  return NULL;
}

static void check_notifications(void) {
  cJSON *doc = ev_get_ok("/v1/measures/" MEASURE "/notifications", NULL);
  cJSON *m = owner_mail(doc);
  assert_string_equal(str(m, "state"), "dead");
  assert_int_equal(cJSON_GetObjectItem(m, "attempts")->valueint, 3);
  assert_non_null(strstr(str(m, "last_error"), "451 4.3.0"));
  assert_null(cJSON_GetObjectItem(m, "recipient"));
  /* No address anywhere in the public answer, not even in the relay's reply that quoted it. */
  char *text = cJSON_PrintUnformatted(doc);
  if (strchr(text, '@')) fail_msg("an address in the public answer: %s", text);
  free(text);
  cJSON_Delete(doc);

  doc = ev_get_ok("/v1/measures/" MEASURE "/notifications",
                  "Authorization: Bearer " OPERATOR_TOKEN);
  m = owner_mail(doc);
  assert_string_equal(str(m, "recipient"), OWNER_MAIL);
  assert_non_null(strstr(str(m, "last_error"), "<" OWNER_MAIL ">")); /* the operator's view */
  assert_string_equal(str(m, "state"), "dead");
  cJSON_Delete(doc);

  long st;
  char *headers;
  cJSON_Delete(ev_get("/v1/measures/" MEASURE "/notifications",
                      "Authorization: Bearer not-the-operator", &st, &headers));
  assert_int_equal(st, 401);
  assert_non_null(strstr(headers, "WWW-Authenticate: Bearer"));
  free(headers);
  cJSON_Delete(ev_get("/v1/measures/no-such-measure/notifications", NULL, &st, NULL));
  assert_int_equal(st, 404);
}

static void test_audit_trail(void **state) {
  (void)state;
  kpi_it_pipeline_init(&pl, "audit",
                       KPI_IT_SVC(KPI_IT_INGEST) | KPI_IT_SVC(KPI_IT_EVALUATOR) |
                           KPI_IT_SVC(KPI_IT_NOTIFIER));
  int relay_port = kpi_it_free_port();
  pid_t relay = relay_start(relay_port, pl.tag);
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)OPERATOR_TOKEN, strlen(OPERATOR_TOKEN), digest);
  char op[128], smtp[96];
  int n = snprintf(op, sizeof(op), "KPI_OPERATOR_TOKEN_SHA256=");
  for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
    n += snprintf(op + n, sizeof(op) - (size_t)n, "%02x", digest[i]);
  snprintf(smtp, sizeof(smtp), "KPI_SMTP_URL=smtp://127.0.0.1:%d", relay_port);
  const char *extra[] = {"KPI_EVAL_DATE=2024-03-01", "KPI_SWEEP_INTERVAL_MS=1000",
                         "KPI_NOTIFY_GROUP_WAIT_MS=0", "KPI_NOTIFY_POLL_MS=200",
                         "KPI_NOTIFY_RETRY_BASE_MS=100", "KPI_NOTIFY_RETRY_MAX_MS=200",
                         "KPI_NOTIFY_MAX_ATTEMPTS=3", op, smtp, NULL};
  kpi_it_pipeline_start(&pl, NULL, extra);

  /* 26 registrants against a baseline of 24 and a target of 50 on 1 March 2024: lagging. */
  ingest_post("/v1/measurements", "Idempotency-Key: " M1,
              "{\"measure_id\":\"" MEASURE "\",\"observed_at\":\"2024-02-29\",\"value\":26,"
              "\"unit\":\"person\",\"note\":\"監査 登録者数\"}");
  ingest_post("/v1/measurements", "Idempotency-Key: " M2,
              "{\"measure_id\":\"" MEASURE "\",\"observed_at\":\"2024-02-28\",\"value\":25,"
              "\"unit\":\"person\"}");
  ingest_post("/v1/measurements/" M2 ":retract", NULL,
              "{\"measure_id\":\"" MEASURE "\",\"reason\":\"重複入力\"}");
  ingest_post("/v1/measures/" MEASURE "/acknowledgements", NULL,
              "{\"note\":\"対応方針: 説明会を増やす\"}");

  PGconn *pg = kpi_it_pg(pl.conninfo);
  if (kpi_it_wait_pg_value(pg,
                           "SELECT (SELECT count(*) FROM measurements) || '/' || (SELECT count(*) "
                           "FROM retractions WHERE state = 'applied') || '/' || (SELECT count(*) "
                           "FROM acknowledgements)",
                           "2/1/1", 30000) != 0)
    fail_msg("the evaluator did not store the records; logs: %s", kpi_it_pipeline_logs(&pl));
  check_history();

  if (kpi_it_wait_pg_long(pg, "SELECT count(*) FROM notifications WHERE state = 'dead' AND "
                              "recipient = $1", OWNER_MAIL, 1, 30000) != 1)
    fail_msg("the owner's mail did not go dead; logs: %s", kpi_it_pipeline_logs(&pl));
  check_notifications();
  PQfinish(pg);

  kpi_it_pipeline_stop(&pl);
  kpi_it_stop(relay, SIGTERM, 10000);
}

int main(void) {
  kpi_it_init();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_audit_trail)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
