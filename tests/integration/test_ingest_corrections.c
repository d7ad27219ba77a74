/* test_ingest_corrections.c: kpi-ingest's routes of issue 11 over real HTTP against the stack's
 * broker (docs/corrections.md "HTTP (ingest)"): a retraction by the measure's owner reaches the
 * topic as kpi.retraction/1 (and a retried one is the same record); another department's, a
 * bad body, a malformed path earn 403/422/400/404 and publish nothing; a correction (`corrects`)
 * reaches the topic, single and in an atomic batch; an acknowledgement reaches the topic with
 * `until` defaulted to 28 days, the owner's only, 404 for an unknown measure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_records.h"
#include "test_ingest_client.h"

#define MEASURE_LED "g4-carbon-2-led-rate"          /* kankyo, percent, level */
#define MEASURE_GRANTS "g3-kosodate-3-maternity-grants" /* kosodate, case, cumulative */
#define JSON_CT "Content-Type: application/json\r\n"
#define N_PARTS 6

static tc_service svc;

static char *hdrs(const char *a, const char *b, const char *c) {
  static char buf[4][1024];
  static int next;
  char *h = buf[next++ % 4];
  snprintf(h, sizeof(buf[0]), "%s%s%s", a ? a : "", b ? b : "", c ? c : "");
  return h;
}

/* POST BODY to PATH as department DEPT (NULL: no token) with EXTRA header lines (may be NULL). */
static void post(const char *path, const char *dept, const char *extra, const char *body,
                 tc_resp *r) {
  if (tc_request(svc.port, "POST", path, hdrs(dept ? tc_auth(dept) : NULL, JSON_CT, extra), body,
                 r) != 0)
    fail_msg("no answer to POST %s", path);
}

static int topic_count(void) {
  tc_record *recs;
  int n = tc_read_topic(svc.topic, N_PARTS, &recs);
  tc_records_free(recs, n);
  return n;
}

/* The retraction record with event id ID on the topic, parsed into *OUT; 0 when absent. */
static int find_retraction(const char *id, kpi_retraction *out, char *key, size_t key_size) {
  tc_record *recs;
  int n = tc_read_topic(svc.topic, N_PARTS, &recs), found = 0;
  for (int i = 0; i < n && !found; i++) {
    kpi_errors errs = {0};
    kpi_retraction rt;
    if (kpi_record_type_of(recs[i].value, strlen(recs[i].value)) != KPI_RECORD_RETRACTION)
      continue;
    assert_int_equal(kpi_retraction_parse(recs[i].value, strlen(recs[i].value),
                                          KPI_PARSE_RECORD, &rt, &errs), 0);
    if (strcmp(rt.event_id, id) == 0) {
      *out = rt;
      snprintf(key, key_size, "%s", recs[i].key);
      found++;
    }
  }
  tc_records_free(recs, n);
  return found;
}

static int find_ack(const char *id, kpi_ack *out, char *key, size_t key_size) {
  tc_record *recs;
  int n = tc_read_topic(svc.topic, N_PARTS, &recs), found = 0;
  for (int i = 0; i < n && !found; i++) {
    kpi_errors errs = {0};
    kpi_ack a;
    if (kpi_record_type_of(recs[i].value, strlen(recs[i].value)) != KPI_RECORD_ACK) continue;
    assert_int_equal(kpi_ack_parse(recs[i].value, strlen(recs[i].value), KPI_PARSE_RECORD, &a,
                                   &errs), 0);
    if (strcmp(a.event_id, id) == 0) {
      *out = a;
      snprintf(key, key_size, "%s", recs[i].key);
      found++;
    }
  }
  tc_records_free(recs, n);
  return found;
}

static const char *json_str(const cJSON *doc, const char *name) {
  const cJSON *v = cJSON_GetObjectItem(doc, name);
  if (!cJSON_IsString(v)) fail_msg("no string member %s", name);
  return v->valuestring;
}

static int setup(void **state) {
  (void)state;
  kpi_env_load_file(KPI_SOURCE_DIR "/config/sample-tokens.env");
  tc_service_start(&svc, NULL, 1);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (svc.pid > 0) kpi_it_stop(svc.pid, SIGKILL, 5000);
  return 0;
}

/* ---- retractions ---- */

static void test_retract_by_owner(void **state) {
  (void)state;
  const char *target = "0A1B2C3D-4E5F-4a6b-8c7d-9e0f1a2b3c4d"; /* upper case: kept canonical */
  char path[128], want_id[KPI_UUID_STRLEN + 1];
  snprintf(path, sizeof(path), "/v1/measurements/%s:retract", target);
  kpi_retraction_id("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", MEASURE_LED, "kankyo", want_id);
  tc_resp r;
  post(path, "KANKYO", NULL,
       "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"二重計上のため取消\"}", &r);
  if (r.status != 202) fail_msg("retract: %d %s", r.status, r.body);
  cJSON *doc = cJSON_Parse(r.body);
  assert_non_null(doc);
  assert_string_equal(json_str(doc, "event_id"), want_id);
  assert_string_equal(json_str(doc, "retracts"), "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
  assert_string_equal(json_str(doc, "measure_id"), MEASURE_LED);
  assert_true(cJSON_IsNumber(cJSON_GetObjectItem(doc, "offset")));
  cJSON_Delete(doc);
  tc_resp_free(&r);

  kpi_retraction rt;
  char key[128];
  assert_int_equal(find_retraction(want_id, &rt, key, sizeof(key)), 1);
  assert_string_equal(key, MEASURE_LED);
  assert_string_equal(rt.retracts, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
  assert_string_equal(rt.department, "kankyo");
  assert_string_equal(rt.reason, "二重計上のため取消");
  assert_true(rt.received_ms > 0);

  /* A retried request is the same record (same event id): idempotent by construction. */
  post(path, "KANKYO", NULL, "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"再送\"}", &r);
  assert_int_equal(r.status, 202);
  assert_non_null(strstr(r.body, want_id));
  tc_resp_free(&r);
}

static void test_retract_refused_publishes_nothing(void **state) {
  (void)state;
  const char *ok_path = "/v1/measurements/11111111-2222-4333-8444-555555555555:retract";
  int before = topic_count();
  tc_resp r;
  /* Another department's measure: 403 before any field check. */
  post(ok_path, "KOSODATE", NULL, "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"x\"}", &r);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);
  post(ok_path, "KOSODATE", NULL, "{\"measure_id\":\"" MEASURE_LED "\"}", &r);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);
  static const struct {
    const char *body;
    int status;
    const char *field, *code;
  } cases[] = {
      {"{\"measure_id\":\"" MEASURE_LED "\"}", 422, "reason", "missing"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"\"}", 422, "reason", "empty"},
      {"{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"x\",\"value\":1}", 422, "value",
       "unknown_field"},
      {"{\"measure_id\":\"no-such-measure\",\"reason\":\"x\"}", 422, "measure_id",
       "unknown_measure"},
      {"{\"reason\":\"x\"}", 422, "measure_id", "missing"},
      {"[1]", 422, "", "type"},
      {"{\"measure_id\":", 400, "", "syntax"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    post(ok_path, "KANKYO", NULL, cases[i].body, &r);
    tc_expect_problem(&r, cases[i].status, cases[i].field, cases[i].code);
    tc_resp_free(&r);
  }
  /* The path: a non-UUID event id is 400; another shape is no resource; other methods 405. */
  post("/v1/measurements/not-a-uuid:retract", "KANKYO", NULL,
       "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"x\"}", &r);
  tc_expect_problem(&r, 400, "event_id", "format");
  tc_resp_free(&r);
  post("/v1/measurements/11111111-2222-4333-8444-555555555555", "KANKYO", NULL,
       "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"x\"}", &r);
  tc_expect_problem(&r, 404, NULL, NULL);
  tc_resp_free(&r);
  post("/v1/measurements/a/b:retract", "KANKYO", NULL, "{}", &r);
  tc_expect_problem(&r, 404, NULL, NULL);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "GET", ok_path, NULL, NULL, &r), 0);
  assert_int_equal(r.status, 405);
  assert_string_equal(tc_header(&r, "allow"), "POST");
  tc_resp_free(&r);
  post(ok_path, NULL, NULL, "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"x\"}", &r);
  tc_expect_problem(&r, 401, NULL, NULL);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "POST", ok_path, hdrs(tc_auth("KANKYO"), NULL, NULL),
                              "{}", &r), 0);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  /* In Japanese when asked. */
  post(ok_path, "KOSODATE", "Accept-Language: ja\r\n",
       "{\"measure_id\":\"" MEASURE_LED "\",\"reason\":\"x\"}", &r);
  cJSON *doc = tc_problem(&r, 403);
  assert_string_equal(json_str(doc, "detail"),
                      "この指標の報告を取り消せるのは、指標を担当する部署だけです");
  cJSON_Delete(doc);
  tc_resp_free(&r);

  assert_int_equal(topic_count(), before);
}

/* ---- corrections ---- */

static void test_correction_on_topic(void **state) {
  (void)state;
  const char *fixed = "22222222-3333-4444-8555-666666666666";
  const char *body = "{\"event_id\":\"22222222-3333-4444-8555-666666666666\",\"measure_id\":\""
                     MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":30,"
                     "\"unit\":\"percent\",\"corrects\":{\"event_id\":"
                     "\"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\",\"reason\":\"桁の誤り\"}}";
  tc_resp r;
  post("/v1/measurements", "KANKYO", NULL, body, &r);
  if (r.status != 202) fail_msg("correction: %d %s", r.status, r.body);
  tc_resp_free(&r);
  /* In an atomic batch too, beside a plain measurement. */
  const char *batch =
      "[{\"event_id\":\"77777777-3333-4444-8555-666666666666\",\"measure_id\":\"" MEASURE_LED
      "\",\"observed_at\":\"2024-05-02\",\"value\":31,\"unit\":\"percent\",\"corrects\":"
      "{\"event_id\":\"22222222-3333-4444-8555-666666666666\",\"reason\":\"再訂正\"}},"
      "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-03\",\"value\":32,"
      "\"unit\":\"percent\"}]";
  post("/v1/measurements:batch?atomic=true", "KANKYO", NULL, batch, &r);
  if (r.status != 202) fail_msg("batch: %d %s", r.status, r.body);
  tc_resp_free(&r);
  /* Another department's correction is refused like any of its measurements; a correction
   * without a reason is not one. */
  int before = topic_count();
  post("/v1/measurements", "KOSODATE", NULL, body, &r);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);
  post("/v1/measurements", "KANKYO", NULL,
       "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":30,"
       "\"unit\":\"percent\",\"corrects\":{\"event_id\":\"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\"}}",
       &r);
  tc_expect_problem(&r, 422, "corrects.reason", NULL);
  tc_resp_free(&r);
  /* Nor may a correction take the id it corrects from its Idempotency-Key (the evaluator
   * would refuse it after a 202). */
  post("/v1/measurements", "KANKYO", "Idempotency-Key: 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\r\n",
       "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\",\"value\":30,"
       "\"unit\":\"percent\",\"corrects\":{\"event_id\":\"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d\","
       "\"reason\":\"r\"}}",
       &r);
  tc_expect_problem(&r, 422, "corrects.event_id", "value");
  tc_resp_free(&r);
  assert_int_equal(topic_count(), before);

  tc_record *recs;
  int n = tc_read_topic(svc.topic, N_PARTS, &recs);
  const char *ids[] = {fixed, "77777777-3333-4444-8555-666666666666"};
  const char *corrects[] = {"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", fixed};
  const char *reasons[] = {"桁の誤り", "再訂正"};
  for (int i = 0; i < 2; i++) {
    const tc_record *rec = tc_find_event(recs, n, ids[i]);
    assert_non_null(rec);
    kpi_measurement m;
    kpi_errors errs = {0};
    assert_int_equal(kpi_measurement_parse(rec->value, strlen(rec->value), KPI_PARSE_RECORD, &m,
                                           &errs), 0);
    assert_true(m.has_corrects);
    assert_string_equal(m.corrects, corrects[i]);
    assert_string_equal(m.corrects_reason, reasons[i]);
    assert_string_equal(m.department, "kankyo");
  }
  tc_records_free(recs, n);
}

/* ---- acknowledgements ---- */

static void test_ack_by_owner(void **state) {
  (void)state;
  tc_resp r;
  post("/v1/measures/" MEASURE_GRANTS "/acknowledgements", "KOSODATE", NULL,
       "{\"note\":\"対応方針: 窓口を増やす\"}", &r);
  if (r.status != 202) fail_msg("ack: %d %s", r.status, r.body);
  cJSON *doc = cJSON_Parse(r.body);
  char id[KPI_UUID_STRLEN + 1], until[16], want_until[16];
  snprintf(id, sizeof(id), "%s", json_str(doc, "event_id"));
  snprintf(until, sizeof(until), "%s", json_str(doc, "until"));
  assert_string_equal(json_str(doc, "measure_id"), MEASURE_GRANTS);
  cJSON_Delete(doc);
  tc_resp_free(&r);
  assert_int_equal(kpi_uuid_parse(id, NULL), 0);

  kpi_ack a;
  char key[128];
  assert_int_equal(find_ack(id, &a, key, sizeof(key)), 1);
  assert_string_equal(key, MEASURE_GRANTS);
  assert_string_equal(a.measure_id, MEASURE_GRANTS);
  assert_string_equal(a.department, "kosodate");
  assert_string_equal(a.note, "対応方針: 窓口を増やす");
  /* `until` defaulted: 28 days after the Japan day the record was received. */
  kpi_day_format(kpi_day_of_ms(a.received_ms) + KPI_ACK_DEFAULT_DAYS, want_until,
                 sizeof(want_until));
  assert_string_equal(a.until, want_until);
  assert_string_equal(until, want_until);

  /* The Idempotency-Key is the event id; an explicit `until` is kept. */
  char later[16], body[160];
  kpi_day_format(kpi_day_of_ms(kpi_time_now_ms()) + 2, later, sizeof(later));
  snprintf(body, sizeof(body), "{\"note\":\"再掲\",\"until\":\"%s\"}", later);
  post("/v1/measures/" MEASURE_GRANTS "/acknowledgements", "KOSODATE",
       "Idempotency-Key: 9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d\r\n", body, &r);
  assert_int_equal(r.status, 202);
  assert_non_null(strstr(r.body, "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"));
  tc_resp_free(&r);
  assert_int_equal(find_ack("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", &a, key, sizeof(key)), 1);
  assert_string_equal(a.until, later);
}

static void test_ack_refused_publishes_nothing(void **state) {
  (void)state;
  int before = topic_count();
  tc_resp r;
  const char *path = "/v1/measures/" MEASURE_GRANTS "/acknowledgements";
  post(path, "KANKYO", NULL, "{\"note\":\"x\"}", &r);
  tc_expect_problem(&r, 403, "measure_id", "forbidden");
  tc_resp_free(&r);
  post("/v1/measures/no-such-measure/acknowledgements", "KOSODATE", NULL, "{\"note\":\"x\"}",
       &r);
  tc_expect_problem(&r, 404, NULL, NULL);
  tc_resp_free(&r);
  post("/v1/measures/" MEASURE_GRANTS "/other", "KOSODATE", NULL, "{\"note\":\"x\"}", &r);
  tc_expect_problem(&r, 404, NULL, NULL);
  tc_resp_free(&r);
  char past[16], far[16], b1[96], b2[96];
  kpi_day today = kpi_day_of_ms(kpi_time_now_ms());
  kpi_day_format(today - 2, past, sizeof(past));
  kpi_day_format(today + KPI_ACK_MAX_DAYS + 2, far, sizeof(far));
  snprintf(b1, sizeof(b1), "{\"note\":\"x\",\"until\":\"%s\"}", past);
  snprintf(b2, sizeof(b2), "{\"note\":\"x\",\"until\":\"%s\"}", far);
  static char long_note[2200];
  memset(long_note, 0, sizeof(long_note));
  strcpy(long_note, "{\"note\":\"");
  memset(long_note + 9, 'a', 2049);
  strcat(long_note, "\"}");
  const struct {
    const char *body;
    int status;
    const char *field, *code;
  } cases[] = {
      {"{}", 422, "note", "missing"},
      {"{\"note\":\"x\",\"until\":\"2024-13-01\"}", 422, "until", "format"},
      {b1, 422, "until", "range"},
      {b2, 422, "until", "range"},
      {"{\"note\":\"x\",\"event_id\":\"nope\"}", 422, "event_id", "format"},
      {"{\"note\":\"x\",\"measure_id\":\"" MEASURE_GRANTS "\"}", 422, "measure_id",
       "unknown_field"},
      {long_note, 422, "note", "too_long"},
      {"not json", 400, "", "syntax"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    post(path, "KOSODATE", NULL, cases[i].body, &r);
    tc_expect_problem(&r, cases[i].status, cases[i].field, cases[i].code);
    tc_resp_free(&r);
  }
  post(path, "KOSODATE", "Idempotency-Key: nope\r\n", "{\"note\":\"x\"}", &r);
  tc_expect_problem(&r, 400, "Idempotency-Key", "format");
  tc_resp_free(&r);
  post(path, NULL, NULL, "{\"note\":\"x\"}", &r);
  tc_expect_problem(&r, 401, NULL, NULL);
  tc_resp_free(&r);
  assert_int_equal(tc_request(svc.port, "GET", path, hdrs(tc_auth("KOSODATE"), NULL, NULL), NULL,
                              &r), 0);
  assert_int_equal(r.status, 405);
  tc_resp_free(&r);
  assert_int_equal(topic_count(), before);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retract_by_owner),
      cmocka_unit_test(test_retract_refused_publishes_nothing),
      cmocka_unit_test(test_correction_on_topic),
      cmocka_unit_test(test_ack_by_owner),
      cmocka_unit_test(test_ack_refused_publishes_nothing),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
