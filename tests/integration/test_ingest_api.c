/* test_ingest_api.c: kpi-ingest over real HTTP against the stack's broker: every status code a
 * request can earn (except broker loss, see test_ingest_broker.c), ownership, records read
 * back from the topic, batches (207 and atomic), pipelining, chunked bodies, 100-continue,
 * slow clients, SIGHUP reload and the SIGTERM drain, value bounds (out_of_range). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <librdkafka/rdkafka.h>

#include "test_ingest_client.h"

#define MEASURE_LED "g4-carbon-2-led-rate" /* kankyo, percent, level */
#define MEASURE_PLAN "g4-carbon-1-zero-carbon-plan" /* kankyo, plan, milestone */
#define MEASURE_GRANTS "g3-kosodate-3-maternity-grants" /* kosodate, case, cumulative */
#define MEASURE_KONBINI "g4-digital-1-konbini-issuance" /* shimin, percent, ratio */
#define JSON_CT "Content-Type: application/json\r\n"

static tc_service svc;

/* Concatenates header lines (NULLs skipped) into one of a few rotating buffers. */
static char *hdrs3(const char *a, const char *b, const char *c) {
  static char buf[4][1024];
  static int next;
  char *h = buf[next++ % 4];
  snprintf(h, sizeof(buf[0]), "%s%s%s", a ? a : "", b ? b : "", c ? c : "");
  return h;
}

static char *hdrs(const char *a, const char *b) { return hdrs3(a, b, NULL); }

static void post(const char *path, const char *dept, const char *ct_line, const char *body,
                 tc_resp *r) {
  const char *auth = dept ? tc_auth(dept) : "";
  if (tc_request(svc.port, "POST", path, hdrs(auth, ct_line), body, r) != 0)
    fail_msg("no answer to POST %s", path);
}

static void post_led(const char *body, tc_resp *r) {
  post("/v1/measurements", "KANKYO", JSON_CT, body, r);
}

static int setup(void **state) {
  (void)state;
  kpi_env_load_file(KPI_SOURCE_DIR "/config/sample-tokens.env");
  /* message.copy.max.bytes=0: librdkafka references every payload until it is sent, instead
   * of copying small ones into the produce request about a linger after the call, so that a
   * batch's encodings freed too early (they are not copied: docs/ingest.md "Performance,
   * seventh round") are read after the free in every test here (ASan tree). */
  const char *env[] = {"KPI_HTTP_HEADER_TIMEOUT_MS=500", "KPI_HTTP_MAX_BODY=65536",
                       "KPI_INGEST_MAX_BATCH=20", "KPI_KAFKA_PROP_MESSAGE_COPY_MAX_BYTES=0",
                       NULL};
  tc_service_start(&svc, env, 1);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (svc.pid > 0) kpi_it_stop(svc.pid, SIGKILL, 5000);
  return 0;
}

/* ---- 202 and the record in Kafka ---- */

static void test_single_accepted_and_read_back(void **state) {
  (void)state;
  const char *key = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
  tc_resp r;
  if (tc_request(svc.port, "POST", "/v1/measurements",
                 hdrs3(tc_auth("KANKYO"), JSON_CT,
                       "Idempotency-Key: 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b\r\n"),
                 "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                 "\"value\":20.5,\"unit\":\"percent\",\"note\":\"LED化 進捗\"}",
                 &r) != 0)
    fail_msg("no answer");
  assert_int_equal(r.status, 202);
  assert_string_equal(tc_header(&r, "content-type"), "application/json");
  cJSON *doc = cJSON_Parse(r.body);
  assert_non_null(doc);
  assert_string_equal(cJSON_GetObjectItem(doc, "event_id")->valuestring, key);
  assert_string_equal(cJSON_GetObjectItem(doc, "measure_id")->valuestring, MEASURE_LED);
  int part1 = cJSON_GetObjectItem(doc, "partition")->valueint;
  double off1 = cJSON_GetObjectItem(doc, "offset")->valuedouble;
  cJSON_Delete(doc);
  tc_resp_free(&r);

  /* Without any id the service makes one; with event_id in the body it is kept. */
  post_led("{\"measure_id\":\"" MEASURE_PLAN "\",\"observed_at\":\"2024-06-01T09:00:00+09:00\","
           "\"value\":1,\"unit\":\"plan\"}",
           &r);
  assert_int_equal(r.status, 202);
  doc = cJSON_Parse(r.body);
  char generated[64];
  snprintf(generated, sizeof(generated), "%s", cJSON_GetObjectItem(doc, "event_id")->valuestring);
  assert_int_equal(kpi_uuid_parse(generated, NULL), 0);
  cJSON_Delete(doc);
  tc_resp_free(&r);
  post_led("{\"event_id\":\"0a0b0c0d-0e0f-4a1b-8c2d-3e4f5a6b7c8d\",\"measure_id\":\"" MEASURE_LED
           "\",\"observed_at\":\"2024-05-02\",\"value\":21,\"unit\":\"percent\","
           "\"department\":\"kankyo\"}",
           &r);
  assert_int_equal(r.status, 202);
  assert_non_null(strstr(r.body, "0a0b0c0d-0e0f-4a1b-8c2d-3e4f5a6b7c8d"));
  tc_resp_free(&r);

  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  const tc_record *rec = tc_find_event(recs, n, key);
  assert_non_null(rec);
  assert_string_equal(rec->key, MEASURE_LED);
  assert_int_equal(rec->partition, part1);
  assert_true((double)rec->offset == off1);
  kpi_measurement m;
  kpi_errors errs = {0};
  assert_int_equal(kpi_measurement_parse(rec->value, strlen(rec->value), KPI_PARSE_RECORD, &m,
                                         &errs), 0);
  assert_string_equal(m.department, "kankyo");
  assert_string_equal(m.unit, "percent");
  assert_string_equal(m.note, "LED化 進捗");
  assert_string_equal(m.observed_at, "2024-05-01");
  assert_true(m.value == 20.5);
  assert_true(m.received_at[0] != '\0');
  assert_non_null(strstr(rec->value, "\"schema\":\"kpi.measurement/1\""));
  rec = tc_find_event(recs, n, generated);
  assert_non_null(rec);
  assert_string_equal(rec->key, MEASURE_PLAN);
  assert_non_null(tc_find_event(recs, n, "0a0b0c0d-0e0f-4a1b-8c2d-3e4f5a6b7c8d"));
  tc_records_free(recs, n);
}

/* ---- 401 / 403 ---- */

static void test_auth_and_ownership(void **state) {
  (void)state;
  const char *led = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                    "\"value\":20,\"unit\":\"percent\"}";
  tc_resp r;
  post("/v1/measurements", NULL, JSON_CT, led, &r);
  tc_expect_problem(&r, 401, NULL, NULL);
  assert_non_null(tc_header(&r, "www-authenticate"));
  assert_string_equal(tc_header(&r, "www-authenticate"), "Bearer");
  tc_resp_free(&r);

  assert_int_equal(tc_request(svc.port, "POST", "/v1/measurements",
                              hdrs("Authorization: Bearer not-a-known-token\r\n", JSON_CT), led,
                              &r), 0);
  tc_expect_problem(&r, 401, NULL, NULL);
  assert_string_equal(tc_header(&r, "www-authenticate"), "Bearer");
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "POST", "/v1/measurements",
                              hdrs("Authorization: Basic Zm9vOmJhcg==\r\n", JSON_CT), led, &r), 0);
  tc_expect_problem(&r, 401, NULL, NULL);
  tc_resp_free(&r);

  /* Department A (kikaku) cannot report department B's (kankyo) measure. */
  post("/v1/measurements", "KIKAKU", JSON_CT, led, &r);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);
  /* Nor claim another department in the body. */
  post_led("{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":20,"
           "\"unit\":\"percent\",\"department\":\"kikaku\"}",
           &r);
  tc_expect_problem(&r, 403, "department", "forbidden");
  tc_resp_free(&r);
  /* A batch item of another department's measure is refused on its own. */
  char batch[512];
  snprintf(batch, sizeof(batch), "[%s]", led);
  post("/v1/measurements:batch", "KOSODATE", JSON_CT, batch, &r);
  cJSON *doc = tc_problem(&r, 403); /* every item is another department's: 403 as a whole */
  cJSON *item = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "results"), 0);
  assert_int_equal(cJSON_GetObjectItem(item, "status")->valueint, 403);
  assert_true(tc_has_error(cJSON_GetObjectItem(item, "errors"), "measure_id", "forbidden"));
  cJSON_Delete(doc);
  tc_resp_free(&r);
  /* Atomic: likewise. */
  post("/v1/measurements:batch?atomic=true", "KOSODATE", JSON_CT, batch, &r);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);
}

/* ---- 400 / 415 / 422 ---- */

static void test_validation(void **state) {
  (void)state;
  static const struct {
    const char *body;
    int status;
    const char *field;
    const char *code;
  } cases[] = {
      {"{\"measure_id\":", 400, "", "syntax"},
      {"{\"measure_id\":\"x\"} trailing", 400, "", "syntax"},
      {"", 400, "", "syntax"},
      {"[1,2]", 422, "", "type"},
      {"{\"measure_id\":\"no-such\",\"observed_at\":\"2024-05-01\",\"value\":1,"
       "\"unit\":\"percent\"}",
       422, "measure_id", "unknown_measure"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,"
       "\"unit\":\"person\"}", 422, "unit", "unit_mismatch"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":\"NaN\","
       "\"unit\":\"percent\"}", 422, "value", "type"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":100.5,"
       "\"unit\":\"percent\"}", 422, "value", "range"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":-1,"
       "\"unit\":\"percent\"}", 422, "value", "range"},
      {"{\"measure_id\":\"" MEASURE_PLAN "\",\"observed_at\":\"2024-05-01\",\"value\":0.5,"
       "\"unit\":\"plan\"}", 422, "value", "range"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2999-01-01\",\"value\":1,"
       "\"unit\":\"percent\"}", 422, "observed_at", "future"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"yesterday\",\"value\":1,"
       "\"unit\":\"percent\"}", 422, "observed_at", "format"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,"
       "\"unit\":\"percent\",\"component\":\"numerator\"}", 422, "component", "not_allowed"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,"
       "\"unit\":\"percent\",\"colour\":\"red\"}", 422, "colour", "unknown_field"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"value\":1,\"unit\":\"percent\"}", 422,
       "observed_at", "missing"},
      {"{\"event_id\":\"nope\",\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
       "\"value\":1,\"unit\":\"percent\"}", 422, "event_id", "format"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,"
       "\"unit\":\"percent\",\"note\":\"\xff\xfe\"}", 400, "", "encoding"},
  };
  tc_resp r;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    post_led(cases[i].body, &r);
    tc_expect_problem(&r, cases[i].status, cases[i].field, cases[i].code);
    tc_resp_free(&r);
  }
  /* Kind rules of other departments' measures, with their own tokens. */
  post("/v1/measurements", "KOSODATE", JSON_CT,
       "{\"measure_id\":\"" MEASURE_GRANTS "\",\"observed_at\":\"2024-05-01\",\"value\":-3,"
       "\"unit\":\"case\"}", &r);
  tc_expect_problem(&r, 422, "value", "range");
  tc_resp_free(&r);
  post("/v1/measurements", "SHIMIN", JSON_CT,
       "{\"measure_id\":\"" MEASURE_KONBINI "\",\"observed_at\":\"2024-05-01\",\"value\":3,"
       "\"unit\":\"percent\"}", &r);
  tc_expect_problem(&r, 422, "component", "missing");
  tc_resp_free(&r);
  char note[1200];
  memset(note, 'a', 1100);
  note[1100] = '\0';
  char *big = malloc(2000);
  snprintf(big, 2000, "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
           "\"value\":1,\"unit\":\"percent\",\"note\":\"%s\"}", note);
  post_led(big, &r);
  tc_expect_problem(&r, 422, "note", "too_long");
  tc_resp_free(&r);
  free(big);

  const char *ok = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                   "\"value\":1,\"unit\":\"percent\"}";
  post("/v1/measurements", "KANKYO", "Content-Type: text/plain\r\n", ok, &r);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  post("/v1/measurements", "KANKYO", "Content-Type: application/json; charset=latin1\r\n", ok, &r);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  post("/v1/measurements", "KANKYO", NULL, ok, &r);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  post("/v1/measurements", "KANKYO", "Content-Type: Application/JSON; charset=\"UTF-8\"\r\n", ok,
       &r);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);
  /* Body and header both: the body's event_id wins. */
  post("/v1/measurements", "KANKYO",
       hdrs(JSON_CT, "Idempotency-Key: 9e9e9e9e-0000-4000-8000-000000000001\r\n"),
       "{\"event_id\":\"9e9e9e9e-0000-4000-8000-000000000002\",\"measure_id\":\"" MEASURE_LED
       "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"percent\"}",
       &r);
  assert_int_equal(r.status, 202);
  assert_non_null(strstr(r.body, "9e9e9e9e-0000-4000-8000-000000000002"));
  tc_resp_free(&r);
  post("/v1/measurements", "KANKYO", hdrs(JSON_CT, "Idempotency-Key: 12345\r\n"), ok, &r);
  tc_expect_problem(&r, 400, "Idempotency-Key", "format");
  tc_resp_free(&r);
}

/* ---- value bounds (issue 8) ---- */

#define MEASURE_SUPPORTERS "g2-uiturn-4-supporters" /* kikaku, person, level */

/* Absurd values get 422 out_of_range and never reach the topic; a value at the bound is
 * accepted. The catalog's per-measure max is checked on a second service with a private copy
 * of the catalog that gives the grants measure a max of 1000. */
static void test_value_bounds(void **state) {
  (void)state;
  tc_resp r;
  post("/v1/measurements", "KIKAKU", JSON_CT,
       "{\"event_id\":\"b0b0b0b0-0000-4000-8000-000000000001\",\"measure_id\":\""
       MEASURE_SUPPORTERS "\",\"observed_at\":\"2024-05-01\",\"value\":1.7e308,"
       "\"unit\":\"person\"}", &r);
  tc_expect_problem(&r, 422, "value", "out_of_range");
  tc_resp_free(&r);
  post("/v1/measurements", "KIKAKU", JSON_CT,
       "{\"event_id\":\"b0b0b0b0-0000-4000-8000-000000000002\",\"measure_id\":\""
       MEASURE_SUPPORTERS "\",\"observed_at\":\"2024-05-01\",\"value\":1e12,"
       "\"unit\":\"person\"}", &r);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);
  /* In a batch the absurd item is that item's 422, the other one is published. */
  post("/v1/measurements:batch", "KIKAKU", "Content-Type: application/x-ndjson\r\n",
       "{\"event_id\":\"b0b0b0b0-0000-4000-8000-000000000003\",\"measure_id\":\""
       MEASURE_SUPPORTERS "\",\"observed_at\":\"2024-05-01\",\"value\":40,\"unit\":\"person\"}\n"
       "{\"event_id\":\"b0b0b0b0-0000-4000-8000-000000000004\",\"measure_id\":\""
       MEASURE_SUPPORTERS "\",\"observed_at\":\"2024-05-01\",\"value\":2e12,\"unit\":\"person\"}\n",
       &r);
  assert_int_equal(r.status, 207);
  cJSON *doc = cJSON_Parse(r.body);
  assert_non_null(doc);
  cJSON *item = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "results"), 1);
  assert_int_equal(cJSON_GetObjectItem(item, "status")->valueint, 422);
  assert_true(tc_has_error(cJSON_GetObjectItem(item, "errors"), "value", "out_of_range"));
  cJSON_Delete(doc);
  tc_resp_free(&r);

  /* A private catalog with a max on the grants measure. */
  char path[256];
  snprintf(path, sizeof(path), "%s/it_ingest_max_catalog_%d.json", KPI_BINARY_DIR, (int)getpid());
  char *text = kpi_it_read_file(KPI_SOURCE_DIR "/config/catalog.json", NULL);
  assert_non_null(text);
  cJSON *cat = cJSON_Parse(text);
  free(text);
  cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItem(cat, "measures")) {
    if (strcmp(cJSON_GetObjectItem(m, "id")->valuestring, MEASURE_GRANTS) == 0)
      cJSON_AddNumberToObject(m, "max", 1000);
  }
  char *out = cJSON_Print(cat);
  assert_int_equal(kpi_it_write_file(path, out), 0);
  free(out);
  cJSON_Delete(cat);
  char cat_env[300];
  snprintf(cat_env, sizeof(cat_env), "KPI_CATALOG=%s", path);
  const char *env[] = {cat_env, NULL};
  tc_service other;
  tc_service_start(&other, env, 1);
  assert_int_equal(tc_request(other.port, "POST", "/v1/measurements",
                              hdrs(tc_auth("KOSODATE"), JSON_CT),
                              "{\"event_id\":\"b0b0b0b0-0000-4000-8000-000000000005\","
                              "\"measure_id\":\"" MEASURE_GRANTS "\",\"observed_at\":"
                              "\"2024-05-01\",\"value\":1000.5,\"unit\":\"case\"}", &r), 0);
  tc_expect_problem(&r, 422, "value", "out_of_range");
  tc_resp_free(&r);
  assert_int_equal(tc_request(other.port, "POST", "/v1/measurements",
                              hdrs(tc_auth("KOSODATE"), JSON_CT),
                              "{\"event_id\":\"b0b0b0b0-0000-4000-8000-000000000006\","
                              "\"measure_id\":\"" MEASURE_GRANTS "\",\"observed_at\":"
                              "\"2024-05-01\",\"value\":1000,\"unit\":\"case\"}", &r), 0);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);
  tc_service_stop(&other);
  unlink(path);

  /* Only what was answered 202 is on the topics. */
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  assert_null(tc_find_event(recs, n, "b0b0b0b0-0000-4000-8000-000000000001"));
  assert_non_null(tc_find_event(recs, n, "b0b0b0b0-0000-4000-8000-000000000002"));
  assert_non_null(tc_find_event(recs, n, "b0b0b0b0-0000-4000-8000-000000000003"));
  assert_null(tc_find_event(recs, n, "b0b0b0b0-0000-4000-8000-000000000004"));
  tc_records_free(recs, n);
  n = tc_read_topic(other.topic, 6, &recs);
  assert_null(tc_find_event(recs, n, "b0b0b0b0-0000-4000-8000-000000000005"));
  assert_non_null(tc_find_event(recs, n, "b0b0b0b0-0000-4000-8000-000000000006"));
  tc_records_free(recs, n);
}

/* ---- 404 / 405 / probes / metrics ---- */

static void test_routing_and_probes(void **state) {
  (void)state;
  tc_resp r;
  assert_int_equal(tc_request(svc.port, "GET", "/nope", NULL, NULL, &r), 0);
  tc_expect_problem(&r, 404, NULL, NULL);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "GET", "/v1/measurements", tc_auth("KANKYO"), NULL, &r), 0);
  tc_expect_problem(&r, 405, NULL, NULL);
  assert_string_equal(tc_header(&r, "allow"), "POST");
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "PUT", "/v1/measurements:batch", NULL, "[]", &r), 0);
  tc_expect_problem(&r, 405, NULL, NULL);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "POST", "/healthz", NULL, "", &r), 0);
  tc_expect_problem(&r, 405, NULL, NULL);
  assert_string_equal(tc_header(&r, "allow"), "GET, HEAD");
  tc_resp_free(&r);
  /* A method no service implements: 501 (RFC 9110 §15.6.2), not 400. */
  assert_int_equal(tc_request(svc.port, "FOOBAR", "/v1/measurements", NULL, NULL, &r), 0);
  tc_expect_problem(&r, 501, NULL, NULL);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "GET", "/healthz", NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "GET", "/readyz", NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "GET", "/metrics", NULL, NULL, &r), 0);
  assert_int_equal(r.status, 200);
  assert_non_null(
      strstr(r.body, "kpi_ingest_requests_total{endpoint=\"measurements\",code=\"202\"}"));
  assert_non_null(strstr(r.body, "kpi_ingest_records_produced_total"));
  assert_non_null(strstr(r.body, "kpi_ingest_request_duration_seconds_bucket"));
  assert_non_null(strstr(r.body, "kpi_ingest_producer_queue_depth"));
  assert_non_null(strstr(r.body, "kpi_http_requests_total"));
  assert_non_null(strstr(r.body, "kpi_ingest_ready 1"));
  tc_resp_free(&r);
}

/* ---- 413 ---- */

static void test_limits(void **state) {
  (void)state;
  /* Body over KPI_HTTP_MAX_BODY: refused from the Content-Length, before any body byte. */
  int fd = tc_connect(svc.port);
  char req[512];
  int n = snprintf(req, sizeof(req),
                   "POST /v1/measurements HTTP/1.1\r\nHost: t\r\n%s%sContent-Length: 70000\r\n\r\n",
                   tc_auth("KANKYO"), JSON_CT);
  assert_int_equal(tc_write(fd, req, (size_t)n), 0);
  tc_resp r;
  assert_int_equal(tc_read(fd, &r, 1, 5000, NULL), 1);
  tc_expect_problem(&r, 413, NULL, NULL);
  tc_resp_free(&r);
  close(fd);

  /* More items than KPI_INGEST_MAX_BATCH (20). */
  char *body = malloc(8192);
  size_t len = 0;
  for (int i = 0; i < 21; i++)
    len += (size_t)snprintf(body + len, 8192 - len,
                            "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                            "\"value\":%d,\"unit\":\"percent\"}\n", i);
  post("/v1/measurements:batch", "KANKYO", "Content-Type: application/x-ndjson\r\n", body, &r);
  tc_expect_problem(&r, 413, NULL, NULL);
  tc_resp_free(&r);
  free(body);
}

/* ---- batches ---- */

static cJSON *batch_item(cJSON *doc, int i) {
  return cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "results"), i);
}

static int item_status(cJSON *doc, int i) {
  return cJSON_GetObjectItem(batch_item(doc, i), "status")->valueint;
}

/* POSTs BODY (freed here) as an NDJSON batch from KANKYO, expects STATUS and returns the
 * parsed answer (R keeps the response). */
static cJSON *post_ndjson(char *body, int status, tc_resp *r) {
  post("/v1/measurements:batch", "KANKYO", "Content-Type: application/x-ndjson\r\n", body, r);
  free(body);
  assert_int_equal(r->status, status);
  cJSON *doc = cJSON_Parse(r->body);
  assert_non_null(doc);
  return doc;
}

/* NDJSON lines whose cJSON trees do not fit the loop's arena (services/ingest/ingest_arena.h,
 * 32 KiB): a 40 KB note (one allocation over the arena) and an unknown member holding 1000
 * numbers (about 64 KB of nodes: the tree starts in the arena and goes on with malloc). Both
 * are refused with their usual errors, the lines around them are accepted, and the sanitizer
 * build sees every malloc'd node freed and no arena pointer passed to free. */
static void test_batch_lines_over_arena(void **state) {
  (void)state;
  size_t cap = 60000, len = 0;
  char *body = malloc(cap);
  assert_non_null(body);
  const char *good = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                     "\"value\":%d,\"unit\":\"percent\"}\n";
  len += (size_t)snprintf(body + len, cap - len, good, 11);
  len += (size_t)snprintf(body + len, cap - len,
                          "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                          "\"value\":12,\"unit\":\"percent\",\"note\":\"");
  memset(body + len, 'n', 40000);
  len += 40000;
  len += (size_t)snprintf(body + len, cap - len, "\"}\n");
  len += (size_t)snprintf(body + len, cap - len, good, 13);
  len += (size_t)snprintf(body + len, cap - len, "{\"extra\":[0");
  for (int i = 1; i < 1000; i++) len += (size_t)snprintf(body + len, cap - len, ",%d", i % 10);
  len += (size_t)snprintf(body + len, cap - len,
                          "],\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                          "\"value\":14,\"unit\":\"percent\"}\n");
  len += (size_t)snprintf(body + len, cap - len, good, 15);
  assert_true(len < cap - 1);
  tc_resp r;
  cJSON *doc = post_ndjson(body, 207, &r);
  assert_int_equal(cJSON_GetObjectItem(doc, "accepted")->valueint, 3);
  assert_int_equal(cJSON_GetObjectItem(doc, "rejected")->valueint, 2);
  static const int want[] = {202, 422, 202, 422, 202};
  for (int i = 0; i < 5; i++) assert_int_equal(item_status(doc, i), want[i]);
  assert_true(tc_has_error(cJSON_GetObjectItem(batch_item(doc, 1), "errors"), "note", "too_long"));
  assert_true(
      tc_has_error(cJSON_GetObjectItem(batch_item(doc, 3), "errors"), "extra", "unknown_field"));
  cJSON_Delete(doc);
  tc_resp_free(&r);
}

/* The records of an NDJSON batch read back from the topic: the batch's encodings are handed
 * to librdkafka without a copy and live in the request until its last delivery report
 * (docs/ingest.md, "Performance, seventh round"), so every record must be, byte for byte,
 * the codec's encoding of what it says, under its measure's key, at the partition and offset
 * the answer gave, with the value and note of its own line. */
static void test_batch_read_back(void **state) {
  (void)state;
  enum { N = 20 }; /* KPI_INGEST_MAX_BATCH of this suite */
  size_t cap = N * 200, len = 0;
  char *body = malloc(cap);
  assert_non_null(body);
  for (int i = 0; i < N; i++) {
    if (i % 3 == 2)
      len += (size_t)snprintf(body + len, cap - len,
                              "{\"measure_id\":\"" MEASURE_PLAN "\",\"observed_at\":"
                              "\"2024-06-%02d\",\"value\":%d,\"unit\":\"plan\"}\n",
                              1 + i % 28, i % 2);
    else
      len += (size_t)snprintf(body + len, cap - len,
                              "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                              "\"value\":%d.5,\"unit\":\"％\",\"note\":\"line \\\"%d\\\"\"}\n",
                              i % 100, i);
  }
  tc_resp r;
  cJSON *doc = post_ndjson(body, 202, &r);
  assert_int_equal(cJSON_GetObjectItem(doc, "accepted")->valueint, N);
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  /* The batch is produced partition by partition (docs/ingest.md "Performance, eighth
   * round"): each record where librdkafka's murmur2_random puts its key among the topic's 6
   * partitions, and a partition's records in input order. The two measures land apart. */
  int64_t last[6] = {-1, -1, -1, -1, -1, -1};
  int32_t p_plan = rd_kafka_msg_partitioner_murmur2_random(NULL, MEASURE_PLAN,
                                                           strlen(MEASURE_PLAN), 6, NULL, NULL);
  int32_t p_led = rd_kafka_msg_partitioner_murmur2_random(NULL, MEASURE_LED,
                                                          strlen(MEASURE_LED), 6, NULL, NULL);
  assert_int_not_equal(p_plan, p_led);
  for (int i = 0; i < N; i++) {
    const cJSON *item = batch_item(doc, i);
    const char *id = cJSON_GetObjectItem(item, "event_id")->valuestring;
    const tc_record *rec = tc_find_event(recs, n, id);
    if (!rec) fail_msg("item %d not on the topic", i);
    assert_int_equal(rec->partition, cJSON_GetObjectItem(item, "partition")->valueint);
    assert_true((double)rec->offset == cJSON_GetObjectItem(item, "offset")->valuedouble);
    assert_int_equal(rec->partition, i % 3 == 2 ? p_plan : p_led);
    assert_true(rec->offset > last[rec->partition]);
    last[rec->partition] = rec->offset;
    kpi_measurement m;
    kpi_errors errs = {0};
    assert_int_equal(
        kpi_measurement_parse(rec->value, strlen(rec->value), KPI_PARSE_RECORD, &m, &errs), 0);
    assert_string_equal(rec->key, m.measure_id);
    size_t elen;
    char *again = kpi_measurement_encode(&m, &elen);
    assert_non_null(again);
    assert_string_equal(rec->value, again);
    free(again);
    if (i % 3 == 2) {
      assert_string_equal(m.measure_id, MEASURE_PLAN);
      assert_true(m.value == i % 2);
    } else {
      char note[32];
      snprintf(note, sizeof(note), "line \"%d\"", i);
      assert_string_equal(m.measure_id, MEASURE_LED);
      assert_string_equal(m.unit, "percent");
      assert_string_equal(m.note, note);
      assert_true(m.value == i % 100 + 0.5);
    }
  }
  tc_records_free(recs, n);
  cJSON_Delete(doc);
  tc_resp_free(&r);
}

static void test_batch_partial_207(void **state) {
  (void)state;
  const char *body =
      "{\"event_id\":\"11111111-1111-4111-8111-111111111111\",\"measure_id\":\"" MEASURE_LED
      "\",\"observed_at\":\"2024-05-01\",\"value\":30,\"unit\":\"percent\"}\n"
      "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":300,"
      "\"unit\":\"percent\"}\r\n"
      "\n"
      "{\"measure_id\":\"g2-uiturn-4-supporters\",\"observed_at\":\"2024-05-01\",\"value\":30,"
      "\"unit\":\"person\"}\n"
      "{not json\n"
      "{\"event_id\":\"22222222-2222-4222-8222-222222222222\",\"measure_id\":\"" MEASURE_PLAN
      "\",\"observed_at\":\"2024-05-01\",\"value\":0,\"unit\":\"plan\"}";
  tc_resp r;
  post("/v1/measurements:batch", "KANKYO", "Content-Type: application/x-ndjson\r\n", body, &r);
  assert_int_equal(r.status, 207);
  cJSON *doc = cJSON_Parse(r.body);
  assert_non_null(doc);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "results")), 5);
  assert_int_equal(cJSON_GetObjectItem(doc, "accepted")->valueint, 2);
  assert_int_equal(cJSON_GetObjectItem(doc, "rejected")->valueint, 3);
  assert_int_equal(item_status(doc, 0), 202);
  assert_int_equal(item_status(doc, 1), 422);
  assert_true(tc_has_error(cJSON_GetObjectItem(batch_item(doc, 1), "errors"), "value", "range"));
  assert_int_equal(item_status(doc, 2), 403);
  assert_int_equal(item_status(doc, 3), 422);
  assert_true(tc_has_error(cJSON_GetObjectItem(batch_item(doc, 3), "errors"), "", "syntax"));
  assert_int_equal(item_status(doc, 4), 202);
  for (int i = 0; i < 5; i++)
    assert_int_equal(cJSON_GetObjectItem(batch_item(doc, i), "index")->valueint, i);
  assert_true(cJSON_IsNumber(cJSON_GetObjectItem(batch_item(doc, 4), "offset")));
  cJSON_Delete(doc);
  tc_resp_free(&r);

  /* All good, as a JSON array: 202 with every item's place in Kafka. */
  post("/v1/measurements:batch", "KANKYO", JSON_CT,
       "[{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":31,"
       "\"unit\":\"percent\"},{\"measure_id\":\"" MEASURE_PLAN "\",\"observed_at\":"
       "\"2024-05-01\",\"value\":1,\"unit\":\"plan\"}]",
       &r);
  assert_int_equal(r.status, 202);
  doc = cJSON_Parse(r.body);
  assert_int_equal(cJSON_GetObjectItem(doc, "accepted")->valueint, 2);
  assert_int_equal(item_status(doc, 1), 202);
  cJSON_Delete(doc);
  tc_resp_free(&r);

  /* Shapes refused whole. */
  post("/v1/measurements:batch", "KANKYO", JSON_CT, "[]", &r);
  tc_expect_problem(&r, 422, "", "empty");
  tc_resp_free(&r);
  post("/v1/measurements:batch", "KANKYO", JSON_CT, "{\"a\":1}", &r);
  tc_expect_problem(&r, 400, "", "type");
  tc_resp_free(&r);
  post("/v1/measurements:batch", "KANKYO", JSON_CT, "[{", &r);
  tc_expect_problem(&r, 400, "", "syntax");
  tc_resp_free(&r);
  post("/v1/measurements:batch", "KANKYO", "Content-Type: text/plain\r\n", "a,b", &r);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  /* text/csv is a batch type (test_ingest_entry.c); a header of unknown columns is its 422. */
  post("/v1/measurements:batch", "KANKYO", "Content-Type: text/csv\r\n", "a,b", &r);
  tc_expect_problem(&r, 422, "a", "unknown_field");
  tc_resp_free(&r);
  post("/v1/measurements:batch?atomic=maybe", "KANKYO", JSON_CT, "[]", &r);
  tc_expect_problem(&r, 400, "atomic", NULL);
  tc_resp_free(&r);

  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  assert_non_null(tc_find_event(recs, n, "11111111-1111-4111-8111-111111111111"));
  assert_non_null(tc_find_event(recs, n, "22222222-2222-4222-8222-222222222222"));
  tc_records_free(recs, n);
}

static void test_batch_atomic(void **state) {
  (void)state;
  const char *bad =
      "[{\"event_id\":\"33333333-3333-4333-8333-333333333333\",\"measure_id\":\"" MEASURE_LED
      "\",\"observed_at\":\"2024-05-01\",\"value\":40,\"unit\":\"percent\"},"
      "{\"event_id\":\"44444444-4444-4444-8444-444444444444\",\"measure_id\":\"" MEASURE_PLAN
      "\",\"observed_at\":\"2024-05-01\",\"value\":7,\"unit\":\"plan\"},"
      "{\"event_id\":\"55555555-5555-4555-8555-555555555555\",\"measure_id\":\"" MEASURE_LED
      "\",\"observed_at\":\"2024-05-01\",\"value\":41,\"unit\":\"percent\"}]";
  tc_resp r;
  post("/v1/measurements:batch?atomic=true", "KANKYO", JSON_CT, bad, &r);
  cJSON *doc = tc_problem(&r, 422);
  /* One reason-phrase table: RFC 9110's name, as for every other 422. */
  assert_string_equal(cJSON_GetObjectItem(doc, "title")->valuestring, "Unprocessable Content");
  cJSON *results = cJSON_GetObjectItem(doc, "results");
  assert_int_equal(cJSON_GetArraySize(results), 1); /* the bad items only */
  cJSON *bad_item = cJSON_GetArrayItem(results, 0);
  assert_int_equal(cJSON_GetObjectItem(bad_item, "index")->valueint, 1);
  assert_int_equal(cJSON_GetObjectItem(bad_item, "status")->valueint, 422);
  assert_true(tc_has_error(cJSON_GetObjectItem(bad_item, "errors"), "value", "range"));
  cJSON_Delete(doc);
  tc_resp_free(&r);

  const char *good =
      "{\"event_id\":\"66666666-6666-4666-8666-666666666666\",\"measure_id\":\"" MEASURE_LED
      "\",\"observed_at\":\"2024-05-01\",\"value\":42,\"unit\":\"percent\"}\n"
      "{\"event_id\":\"77777777-7777-4777-8777-777777777777\",\"measure_id\":\"" MEASURE_PLAN
      "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"plan\"}\n";
  post("/v1/measurements:batch?atomic=true", "KANKYO", "Content-Type: application/x-ndjson\r\n",
       good, &r);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);

  /* The good batch was acknowledged after the bad one was refused, so reading the topic now
   * shows whether anything of the bad one went out. */
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  assert_null(tc_find_event(recs, n, "33333333-3333-4333-8333-333333333333"));
  assert_null(tc_find_event(recs, n, "44444444-4444-4444-8444-444444444444"));
  assert_null(tc_find_event(recs, n, "55555555-5555-4555-8555-555555555555"));
  assert_non_null(tc_find_event(recs, n, "66666666-6666-4666-8666-666666666666"));
  assert_non_null(tc_find_event(recs, n, "77777777-7777-4777-8777-777777777777"));
  tc_records_free(recs, n);
}

/* Event ids the service makes up come from a block of random bytes refilled every 256 ids
 * (ingest_handlers.c, random_event_id): 300 items in batches of 20 cross a refill, and every
 * id is a distinct UUID v4 on the topic as in the answers. */
static void test_event_ids_across_refills(void **state) {
  (void)state;
  enum { BATCHES = 15, ITEMS = 20 };
  char (*ids)[40] = calloc(BATCHES * ITEMS, sizeof(*ids));
  char body[4096];
  int n_ids = 0;
  for (int b = 0; b < BATCHES; b++) {
    size_t len = 0;
    for (int i = 0; i < ITEMS; i++)
      len += (size_t)snprintf(body + len, sizeof(body) - len,
                              "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                              "\"value\":%d,\"unit\":\"percent\"}\n", i);
    tc_resp r;
    post("/v1/measurements:batch", "KANKYO", "Content-Type: application/x-ndjson\r\n", body, &r);
    assert_int_equal(r.status, 202);
    cJSON *doc = cJSON_Parse(r.body);
    for (int i = 0; i < ITEMS; i++) {
      const char *id = cJSON_GetObjectItem(batch_item(doc, i), "event_id")->valuestring;
      assert_int_equal(strlen(id), 36);
      assert_int_equal(id[14], '4');                    /* version 4 */
      assert_non_null(strchr("89ab", id[19]));          /* RFC 9562 variant */
      for (int k = 0; k < n_ids; k++) assert_string_not_equal(ids[k], id);
      snprintf(ids[n_ids++], sizeof(ids[0]), "%s", id);
    }
    cJSON_Delete(doc);
    tc_resp_free(&r);
  }
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  for (int k = 0; k < n_ids; k++) assert_non_null(tc_find_event(recs, n, ids[k]));
  tc_records_free(recs, n);
  free(ids);
}

/* ---- HTTP framing ---- */

static void test_pipelined_in_order(void **state) {
  (void)state;
  char *a = tc_format("POST", "/v1/measurements", hdrs(tc_auth("KANKYO"), JSON_CT),
                      "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                      "\"value\":50,\"unit\":\"percent\"}");
  char *b = tc_format("GET", "/healthz", NULL, NULL);
  char *c = tc_format("POST", "/v1/measurements", hdrs(tc_auth("KANKYO"), JSON_CT),
                      "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                      "\"value\":500,\"unit\":\"percent\"}");
  char *d = tc_format("POST", "/v1/measurements:batch", hdrs(tc_auth("KANKYO"), JSON_CT),
                      "[{\"measure_id\":\"" MEASURE_PLAN "\",\"observed_at\":\"2024-05-01\","
                      "\"value\":1,\"unit\":\"plan\"}]");
  size_t total = strlen(a) + strlen(b) + strlen(c) + strlen(d);
  char *all = malloc(total + 1);
  snprintf(all, total + 1, "%s%s%s%s", a, b, c, d);
  int fd = tc_connect(svc.port);
  assert_int_equal(tc_write(fd, all, total), 0); /* one write: four requests */
  tc_resp r[4];
  assert_int_equal(tc_read(fd, r, 4, 20000, NULL), 4);
  assert_int_equal(r[0].status, 202);
  assert_int_equal(r[1].status, 200);
  tc_expect_problem(&r[2], 422, "value", "range");
  assert_int_equal(r[3].status, 202);
  for (int i = 0; i < 4; i++) tc_resp_free(&r[i]);
  close(fd);
  free(a), free(b), free(c), free(d), free(all);
}

static void test_chunked_and_continue(void **state) {
  (void)state;
  const char *json = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                     "\"value\":60,\"unit\":\"percent\"}";
  size_t jl = strlen(json);
  char req[2048];
  int n = snprintf(req, sizeof(req),
                   "POST /v1/measurements HTTP/1.1\r\nHost: t\r\n%s%s"
                   "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%.*s\r\n%zx\r\n%s\r\n0\r\n\r\n",
                   tc_auth("KANKYO"), JSON_CT, (size_t)10, 10, json, jl - 10, json + 10);
  int fd = tc_connect(svc.port);
  assert_int_equal(tc_write(fd, req, (size_t)n), 0);
  tc_resp r;
  assert_int_equal(tc_read(fd, &r, 1, 20000, NULL), 1);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);

  /* Expect: 100-continue on the same connection: the body only after the interim answer. */
  n = snprintf(req, sizeof(req),
               "POST /v1/measurements HTTP/1.1\r\nHost: t\r\n%s%sExpect: 100-continue\r\n"
               "Content-Length: %zu\r\n\r\n",
               tc_auth("KANKYO"), JSON_CT, jl);
  assert_int_equal(tc_write(fd, req, (size_t)n), 0);
  assert_int_equal(tc_read(fd, &r, 1, 5000, NULL), 1);
  assert_int_equal(r.status, 100);
  tc_resp_free(&r);
  assert_int_equal(tc_write(fd, json, jl), 0);
  assert_int_equal(tc_read(fd, &r, 1, 20000, NULL), 1);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);
  close(fd);
}

/* A client trickling its headers is cut at KPI_HTTP_HEADER_TIMEOUT_MS (500) with 408, while
 * another client is served meanwhile. */
static void test_slow_client_408(void **state) {
  (void)state;
  int slow = tc_connect(svc.port);
  const char *head = "POST /v1/measurements HTTP/1.1\r\nHost: t\r\nX-Slow: ";
  long long t0 = kpi_it_now_ms();
  int served = 0, cut = 0;
  tc_resp r;
  for (int i = 0; head[i] && !cut; i++) {
    if (write(slow, head + i, 1) != 1) break;
    if (i == 5) {
      long long s0 = kpi_it_now_ms();
      post_led("{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":70,"
               "\"unit\":\"percent\"}",
               &r);
      assert_int_equal(r.status, 202);
      assert_true(kpi_it_now_ms() - s0 < 2000);
      served = 1;
      tc_resp_free(&r);
    }
    struct pollfd pfd = {.fd = slow, .events = POLLIN};
    if (poll(&pfd, 1, 60) > 0) cut = 1;
  }
  assert_true(served);
  assert_int_equal(tc_read(slow, &r, 1, 3000, NULL), 1);
  tc_expect_problem(&r, 408, NULL, NULL);
  long long took = kpi_it_now_ms() - t0;
  assert_true(took >= 450 && took < 2500);
  tc_resp_free(&r);
  assert_true(tc_wait_eof(slow, 3000));
  close(slow);
}

/* ---- signals ---- */

/* Starts a second service on a private copy of the shipped catalog (KPI_BINARY_DIR/
 * it_ingest_NAME_PID.json, its path into PATH) and returns the catalog's text (caller frees). */
static char *catalog_copy_start(const char *name, char *path, size_t size, tc_service *other) {
  snprintf(path, size, "%s/it_ingest_%s_%d.json", KPI_BINARY_DIR, name, (int)getpid());
  char *text = kpi_it_read_file(KPI_SOURCE_DIR "/config/catalog.json", NULL);
  assert_non_null(text);
  assert_int_equal(kpi_it_write_file(path, text), 0);
  char cat_env[300];
  snprintf(cat_env, sizeof(cat_env), "KPI_CATALOG=%s", path);
  const char *env[] = {cat_env, NULL};
  tc_service_start(other, env, 1);
  return text;
}

/* Writes CAT (then freed) to PATH and tells OTHER to reload it (SIGHUP). */
static void catalog_rewrite_sighup(const char *path, cJSON *cat, const tc_service *other) {
  char *out = cJSON_Print(cat);
  assert_int_equal(kpi_it_write_file(path, out), 0);
  free(out);
  cJSON_Delete(cat);
  kill(other->pid, SIGHUP);
}

/* POSTs BODY with AUTH to PORT every 100 ms until it answers WANT or 5 s pass (a reload is
 * asynchronous); returns the last status. */
static int post_until(int port, const char *auth, const char *body, int want) {
  long long deadline = kpi_it_now_ms() + 5000;
  int status = 0;
  while (kpi_it_now_ms() < deadline) {
    tc_resp r;
    assert_int_equal(
        tc_request(port, "POST", "/v1/measurements", hdrs(auth, JSON_CT), body, &r), 0);
    status = r.status;
    tc_resp_free(&r);
    if (status == want) break;
    kpi_it_sleep_ms(100);
  }
  return status;
}

static void test_sighup_reloads_catalog(void **state) {
  (void)state;
  /* A private copy of the catalog, so that it can be broken and changed. */
  char path[256];
  tc_service other;
  char *text = catalog_copy_start("catalog", path, sizeof(path), &other);
  const char *led = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                    "\"value\":20,\"unit\":\"percent\"}";
  tc_resp r;
  assert_int_equal(tc_request(other.port, "POST", "/v1/measurements",
                              hdrs(tc_auth("KIKAKU"), JSON_CT), led, &r), 0);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);

  /* A broken file: the old catalog stays in force. */
  assert_int_equal(kpi_it_write_file(path, "{ broken"), 0);
  kill(other.pid, SIGHUP);
  kpi_it_sleep_ms(300);
  assert_int_equal(tc_request(other.port, "POST", "/v1/measurements",
                              hdrs(tc_auth("KANKYO"), JSON_CT), led, &r), 0);
  assert_int_equal(r.status, 202);
  tc_resp_free(&r);

  /* The LED measure handed to kikaku. */
  cJSON *cat = cJSON_Parse(text);
  cJSON *m;
  cJSON_ArrayForEach(m, cJSON_GetObjectItem(cat, "measures")) {
    if (strcmp(cJSON_GetObjectItem(m, "id")->valuestring, MEASURE_LED) == 0)
      cJSON_ReplaceItemInObject(m, "owner", cJSON_CreateString("kikaku"));
  }
  catalog_rewrite_sighup(path, cat, &other);
  free(text);
  assert_int_equal(post_until(other.port, tc_auth("KIKAKU"), led, 202), 202);
  tc_service_stop(&other);
  unlink(path);
}

/* A token verified once is remembered per header value (docs/ingest.md "Performance, fifth
 * round"); a reloaded catalog that gives the department another token hash must refuse the
 * old token from then on (401), not answer from what was remembered of the old catalog. */
static void test_sighup_forgets_verified_tokens(void **state) {
  (void)state;
  char path[256];
  tc_service other;
  char *text = catalog_copy_start("tokens", path, sizeof(path), &other);
  const char *led = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                    "\"value\":20,\"unit\":\"percent\"}";
  tc_resp r;
  for (int i = 0; i < 2; i++) { /* verified, then answered from what was remembered */
    assert_int_equal(tc_request(other.port, "POST", "/v1/measurements",
                                hdrs(tc_auth("KANKYO"), JSON_CT), led, &r), 0);
    assert_int_equal(r.status, 202);
    tc_resp_free(&r);
  }
  cJSON *cat = cJSON_Parse(text);
  cJSON *d;
  cJSON_ArrayForEach(d, cJSON_GetObjectItem(cat, "departments")) {
    if (strcmp(cJSON_GetObjectItem(d, "id")->valuestring, "kankyo") == 0)
      cJSON_ReplaceItemInObject(d, "token_sha256", cJSON_CreateString("0123456789abcdef0123456789"
                                                                       "abcdef0123456789abcdef01"
                                                                       "23456789abcdef"));
  }
  catalog_rewrite_sighup(path, cat, &other);
  free(text);
  assert_int_equal(post_until(other.port, tc_auth("KANKYO"), led, 401), 401);
  tc_service_stop(&other);
  unlink(path);
}

/* SIGTERM with a request in flight: it is still answered 202, then the process exits 0. */
static void test_sigterm_drains(void **state) {
  (void)state;
  int fd = tc_connect(svc.port);
  char *req = tc_format("POST", "/v1/measurements", hdrs(tc_auth("KANKYO"), JSON_CT),
                        "{\"event_id\":\"88888888-8888-4888-8888-888888888888\",\"measure_id\":\""
                        MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":80,"
                        "\"unit\":\"percent\"}");
  assert_int_equal(tc_write(fd, req, strlen(req)), 0);
  free(req);
  kpi_it_sleep_ms(2); /* let the loop read it; the delivery report takes longer (linger.ms) */
  kill(svc.pid, SIGTERM);
  tc_resp r;
  assert_int_equal(tc_read(fd, &r, 1, 20000, NULL), 1);
  assert_int_equal(r.status, 202);
  /* When the signal is handled before the delivery report, the answer closes the connection;
   * on a fast broker the report may win the race, and then the answer is an ordinary one. */
  const char *conn = tc_header(&r, "connection");
  if (conn) assert_string_equal(conn, "close");
  tc_resp_free(&r);
  close(fd);
  /* Already signalled: only wait. A second SIGTERM could land after the service closed its
   * signal handlers on the way out and kill it with the default action. */
  int status = kpi_it_stop(svc.pid, 0, 30000);
  if (!(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fail_msg("kpi-ingest did not exit 0 after SIGTERM (status %d); see %s", status, svc.log);
  svc.pid = 0;
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  assert_non_null(tc_find_event(recs, n, "88888888-8888-4888-8888-888888888888"));
  tc_records_free(recs, n);
}

/* ---- input as clerks write it (docs/ingest.md "Dates", "Units"; docs/http.md "Languages") ---- */

#define JA "Accept-Language: ja\r\n"

/* Posts BODY as DEPT with EXTRA header lines. */
static void post_ex(const char *path, const char *dept, const char *ct, const char *extra,
                    const char *body, tc_resp *r) {
  if (tc_request(svc.port, "POST", path, hdrs3(tc_auth(dept), ct, extra), body, r) != 0)
    fail_msg("no answer to POST %s", path);
}

/* The record of EVENT_ID on the topic, parsed. */
static void read_record(const char *event_id, kpi_measurement *m) {
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  const tc_record *rec = tc_find_event(recs, n, event_id);
  if (!rec) fail_msg("no record %s", event_id);
  kpi_errors errs = {0};
  assert_int_equal(kpi_measurement_parse(rec->value, strlen(rec->value), KPI_PARSE_RECORD, m,
                                         &errs), 0);
  tc_records_free(recs, n);
}

static void test_clerk_dates_and_units(void **state) {
  (void)state;
  tc_resp r;
  kpi_measurement m;
  /* JSON: a Reiwa date in full-width digits and the label 人 become 2024-03-31 and person. */
  post("/v1/measurements", "KIKAKU", JSON_CT,
       "{\"event_id\":\"5c1e0000-0000-4000-8000-000000000001\",\"measure_id\":\""
       MEASURE_SUPPORTERS "\",\"observed_at\":\"令和６年３月３１日\",\"value\":31,\"unit\":\"人\"}",
       &r);
  if (r.status != 202) fail_msg("%d: %s", r.status, r.body);
  tc_resp_free(&r);
  read_record("5c1e0000-0000-4000-8000-000000000001", &m);
  assert_string_equal(m.observed_at, "2024-03-31");
  assert_string_equal(m.unit, "person");

  /* A ratio's numerator in 件 is a count in case; in percent it is refused, naming unit. */
  post("/v1/measurements", "SHIMIN", JSON_CT,
       "{\"event_id\":\"5c1e0000-0000-4000-8000-000000000002\",\"measure_id\":\"" MEASURE_KONBINI
       "\",\"observed_at\":\"R6.3.31\",\"value\":12,\"unit\":\"件\",\"component\":\"numerator\"}",
       &r);
  if (r.status != 202) fail_msg("%d: %s", r.status, r.body);
  tc_resp_free(&r);
  read_record("5c1e0000-0000-4000-8000-000000000002", &m);
  assert_string_equal(m.observed_at, "2024-03-31");
  assert_string_equal(m.unit, "case");
  post("/v1/measurements", "SHIMIN", JSON_CT,
       "{\"measure_id\":\"" MEASURE_KONBINI "\",\"observed_at\":\"2024-03-31\",\"value\":12,"
       "\"unit\":\"percent\",\"component\":\"denominator\"}",
       &r);
  tc_expect_problem(&r, 422, "unit", "component_unit");
  tc_resp_free(&r);

  /* NDJSON and CSV go through the same parser: 2024/3/31, ２０２４／３／３１, 平成31年4月30日, ％. */
  post("/v1/measurements:batch", "KANKYO", "Content-Type: application/x-ndjson\r\n",
       "{\"event_id\":\"5c1e0000-0000-4000-8000-000000000003\",\"measure_id\":\"" MEASURE_LED
       "\",\"observed_at\":\"2024/3/31\",\"value\":20,\"unit\":\"％\"}\n"
       "{\"event_id\":\"5c1e0000-0000-4000-8000-000000000004\",\"measure_id\":\"" MEASURE_LED
       "\",\"observed_at\":\"２０２４／３／３１\",\"value\":21,\"unit\":\"%\"}\n",
       &r);
  if (r.status != 202) fail_msg("%d: %s", r.status, r.body);
  tc_resp_free(&r);
  post("/v1/measurements:batch", "KANKYO", "Content-Type: text/csv\r\n",
       "measure_id,observed_at,value,unit,event_id\n" MEASURE_LED ",平成31年4月30日,19,パーセント,"
       "5c1e0000-0000-4000-8000-000000000005\n" MEASURE_LED ",2024-2-30,19,percent,"
       "5c1e0000-0000-4000-8000-000000000006\n",
       &r);
  assert_int_equal(r.status, 207);
  cJSON *doc = cJSON_Parse(r.body);
  assert_int_equal(item_status(doc, 0), 202);
  assert_int_equal(item_status(doc, 1), 422);
  assert_true(tc_has_error(cJSON_GetObjectItem(batch_item(doc, 1), "errors"), "observed_at",
                           "format"));
  cJSON_Delete(doc);
  tc_resp_free(&r);
  read_record("5c1e0000-0000-4000-8000-000000000003", &m);
  assert_string_equal(m.observed_at, "2024-03-31");
  assert_string_equal(m.unit, "percent");
  read_record("5c1e0000-0000-4000-8000-000000000004", &m);
  assert_string_equal(m.observed_at, "2024-03-31");
  read_record("5c1e0000-0000-4000-8000-000000000005", &m);
  assert_string_equal(m.observed_at, "2019-04-30");
  assert_string_equal(m.unit, "percent");

  /* A day that does not exist: the existing 422 on observed_at, saying why. */
  post("/v1/measurements", "KIKAKU", JSON_CT,
       "{\"measure_id\":\"" MEASURE_SUPPORTERS "\",\"observed_at\":\"R6.13.1\",\"value\":31,"
       "\"unit\":\"人\"}",
       &r);
  tc_expect_problem(&r, 422, "observed_at", "format");
  assert_non_null(strstr(r.body, "no such day"));
  tc_resp_free(&r);
}

/* Problem details in Japanese on Accept-Language: ja; codes and fields unchanged. */
static void test_problem_language(void **state) {
  (void)state;
  const char *bad = "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-2-30\","
                    "\"value\":1,\"unit\":\"percent\"}";
  tc_resp r;
  post_ex("/v1/measurements", "KANKYO", JSON_CT, JA, bad, &r);
  cJSON *doc = tc_problem(&r, 422);
  assert_string_equal(cJSON_GetObjectItem(doc, "title")->valuestring, "入力内容に誤りがあります");
  assert_non_null(strstr(cJSON_GetObjectItem(doc, "detail")->valuestring, "errors"));
  assert_true(tc_has_error(doc, "observed_at", "format"));
  assert_string_equal(tc_header(&r, "content-language"), "ja");
  cJSON_Delete(doc);
  tc_resp_free(&r);

  /* English stays the default, and wins when preferred. */
  static const char *const english[] = {NULL, "Accept-Language: en-US,en;q=0.9,ja;q=0.8\r\n",
                                        "Accept-Language: fr\r\n"};
  for (size_t i = 0; i < sizeof(english) / sizeof(english[0]); i++) {
    post_ex("/v1/measurements", "KANKYO", JSON_CT, english[i], bad, &r);
    doc = tc_problem(&r, 422);
    assert_string_equal(cJSON_GetObjectItem(doc, "title")->valuestring, "Unprocessable Content");
    assert_string_equal(cJSON_GetObjectItem(doc, "detail")->valuestring,
                        "the measurement breaks the schema or the catalog");
    assert_string_equal(tc_header(&r, "content-language"), "en");
    cJSON_Delete(doc);
    tc_resp_free(&r);
  }
  /* Japanese preferred by q-value; other answers too: 401, 415, an atomic batch. */
  if (tc_request(svc.port, "POST", "/v1/measurements",
                 hdrs3("Accept-Language: en;q=0.3, ja;q=0.7\r\n", JSON_CT, NULL), bad, &r) != 0)
    fail_msg("no answer");
  doc = tc_problem(&r, 401);
  assert_string_equal(cJSON_GetObjectItem(doc, "title")->valuestring, "認証が必要です");
  assert_string_equal(cJSON_GetObjectItem(doc, "detail")->valuestring,
                      "アクセストークン（Bearer）が必要です");
  assert_non_null(tc_header(&r, "www-authenticate"));
  cJSON_Delete(doc);
  tc_resp_free(&r);
  post_ex("/v1/measurements", "KANKYO", "Content-Type: text/plain\r\n", JA, bad, &r);
  doc = tc_problem(&r, 415);
  assert_string_equal(cJSON_GetObjectItem(doc, "detail")->valuestring,
                      "Content-Type は application/json にしてください");
  cJSON_Delete(doc);
  tc_resp_free(&r);
  post_ex("/v1/measurements:batch?atomic=true", "KANKYO", JSON_CT, JA,
          "[{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,"
          "\"unit\":\"percent\"},{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"x\","
          "\"value\":1,\"unit\":\"percent\"}]",
          &r);
  doc = tc_problem(&r, 422);
  assert_string_equal(cJSON_GetObjectItem(doc, "title")->valuestring, "入力内容に誤りがあります");
  assert_non_null(strstr(cJSON_GetObjectItem(doc, "detail")->valuestring, "誤りのある項目: 1 件"));
  assert_string_equal(tc_header(&r, "content-language"), "ja");
  cJSON_Delete(doc);
  tc_resp_free(&r);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_accepted_and_read_back),
      cmocka_unit_test(test_auth_and_ownership),
      cmocka_unit_test(test_validation),
      cmocka_unit_test(test_value_bounds),
      cmocka_unit_test(test_routing_and_probes),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_batch_partial_207),
      cmocka_unit_test(test_batch_lines_over_arena),
      cmocka_unit_test(test_batch_read_back),
      cmocka_unit_test(test_batch_atomic),
      cmocka_unit_test(test_event_ids_across_refills),
      cmocka_unit_test(test_pipelined_in_order),
      cmocka_unit_test(test_chunked_and_continue),
      cmocka_unit_test(test_slow_client_408),
      cmocka_unit_test(test_sighup_reloads_catalog),
      cmocka_unit_test(test_sighup_forgets_verified_tokens),
      cmocka_unit_test(test_clerk_dates_and_units),
      cmocka_unit_test(test_problem_language),
      cmocka_unit_test(test_sigterm_drains),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
