/* test_ingest_entry.c: kpi-ingest's entry side over real HTTP against the stack's broker:
 * GET /v1/me for two departments and without a valid token, CSV batches (UTF-8 with BOM,
 * Shift_JIS with a Japanese note read back from the topic in UTF-8, a bad row → 207, atomic
 * → 422 with nothing published, header and charset refusals), and the entry page's three
 * files with their content types and security headers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_ingest_client.h"

#define LED "g4-carbon-2-led-rate"           /* kankyo, percent, level */
#define PLAN "g4-carbon-1-zero-carbon-plan"  /* kankyo, plan, milestone */
#define KONBINI "g4-digital-1-konbini-issuance" /* shimin, percent, ratio */
#define CSV_UTF8 "Content-Type: text/csv; charset=utf-8\r\n"
#define CSV_SJIS "Content-Type: text/csv; charset=Shift_JIS\r\n"
#define CSP                                                                                  \
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "            \
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

static tc_service svc;

static int setup(void **state) {
  (void)state;
  kpi_env_load_file(KPI_SOURCE_DIR "/config/sample-tokens.env");
  const char *env[] = {"KPI_INGEST_MAX_BATCH=20", NULL};
  tc_service_start(&svc, env, 1);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (svc.pid > 0) tc_service_stop(&svc);
  return 0;
}

static void request(const char *method, const char *path, const char *dept, const char *ct,
                    const char *body, tc_resp *r) {
  char headers[512];
  snprintf(headers, sizeof(headers), "%s%s", dept ? tc_auth(dept) : "", ct ? ct : "");
  if (tc_request(svc.port, method, path, headers, body, r) != 0)
    fail_msg("no answer to %s %s", method, path);
}

/* The batch answer's result for spreadsheet row ROW, or NULL. */
static const cJSON *result_for_row(const cJSON *doc, int row) {
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItem(doc, "results")) {
    const cJSON *r = cJSON_GetObjectItem(it, "row");
    if (cJSON_IsNumber(r) && r->valueint == row) return it;
  }
  return NULL;
}

static int status_of(const cJSON *result) {
  return cJSON_GetObjectItem(result, "status")->valueint;
}

/* The record with EVENT_ID read back from the service's topic, parsed; fails when absent. */
static void read_back(const char *event_id, kpi_measurement *m) {
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  const tc_record *rec = tc_find_event(recs, n, event_id);
  if (!rec) fail_msg("event %s not on %s", event_id, svc.topic);
  kpi_errors errs = {0};
  assert_int_equal(kpi_measurement_parse(rec->value, strlen(rec->value), KPI_PARSE_RECORD, m,
                                         &errs), 0);
  assert_string_equal(rec->key, m->measure_id);
  tc_records_free(recs, n);
}

static int on_topic(const char *event_id) {
  tc_record *recs;
  int n = tc_read_topic(svc.topic, 6, &recs);
  int found = tc_find_event(recs, n, event_id) != NULL;
  tc_records_free(recs, n);
  return found;
}

/* ---- GET /v1/me ---- */

static void test_me(void **state) {
  (void)state;
  tc_resp r;
  request("GET", "/v1/me", "KANKYO", NULL, NULL, &r);
  assert_int_equal(r.status, 200);
  assert_string_equal(tc_header(&r, "content-type"), "application/json");
  assert_string_equal(tc_header(&r, "cache-control"), "no-store");
  /* Nothing a department need not see: no mailbox, no token hash. */
  assert_null(strstr(r.body, "@"));
  assert_null(strstr(r.body, "sha256"));
  cJSON *doc = cJSON_Parse(r.body);
  assert_non_null(doc);
  const cJSON *dep = cJSON_GetObjectItem(doc, "department");
  assert_string_equal(cJSON_GetObjectItem(dep, "id")->valuestring, "kankyo");
  assert_non_null(strstr(cJSON_GetObjectItem(dep, "name")->valuestring, "環境"));
  const cJSON *ms = cJSON_GetObjectItem(doc, "measures");
  assert_int_equal(cJSON_GetArraySize(ms), 2);
  const cJSON *m0 = cJSON_GetArrayItem(ms, 0), *m1 = cJSON_GetArrayItem(ms, 1);
  assert_string_equal(cJSON_GetObjectItem(m0, "id")->valuestring, PLAN);
  assert_string_equal(cJSON_GetObjectItem(m0, "kind")->valuestring, "milestone");
  assert_string_equal(cJSON_GetObjectItem(m0, "unit")->valuestring, "plan");
  assert_int_equal(cJSON_GetObjectItem(m0, "value_max")->valueint, 1);
  assert_string_equal(cJSON_GetObjectItem(m1, "id")->valuestring, LED);
  assert_true(cJSON_IsString(cJSON_GetObjectItem(m1, "name")));
  assert_true(cJSON_IsString(cJSON_GetObjectItem(m1, "indicator")));
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m1, "components")), 0);
  assert_true(cJSON_IsFalse(cJSON_GetObjectItem(m1, "component_required")));
  /* The units a clerk may write: the canonical one first, then the catalog's labels. */
  char *units = cJSON_PrintUnformatted(cJSON_GetObjectItem(m1, "units"));
  assert_string_equal(units, "[\"percent\",\"%\",\"パーセント\"]");
  free(units);
  assert_null(cJSON_GetObjectItem(m1, "component_unit"));
  cJSON_Delete(doc);
  tc_resp_free(&r);

  request("GET", "/v1/me", "SHIMIN", NULL, NULL, &r);
  assert_int_equal(r.status, 200);
  doc = cJSON_Parse(r.body);
  assert_string_equal(
      cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "department"), "id")->valuestring, "shimin");
  ms = cJSON_GetObjectItem(doc, "measures");
  assert_int_equal(cJSON_GetArraySize(ms), 1);
  m0 = cJSON_GetArrayItem(ms, 0);
  assert_string_equal(cJSON_GetObjectItem(m0, "id")->valuestring, KONBINI);
  assert_string_equal(cJSON_GetObjectItem(m0, "kind")->valuestring, "ratio");
  const cJSON *comps = cJSON_GetObjectItem(m0, "components");
  assert_int_equal(cJSON_GetArraySize(comps), 2);
  assert_string_equal(cJSON_GetArrayItem(comps, 0)->valuestring, "numerator");
  assert_string_equal(cJSON_GetArrayItem(comps, 1)->valuestring, "denominator");
  assert_true(cJSON_IsTrue(cJSON_GetObjectItem(m0, "component_required")));
  /* A ratio is reported as counts: its component_unit and the words for it, no percent. */
  assert_string_equal(cJSON_GetObjectItem(m0, "component_unit")->valuestring, "case");
  char *cu = cJSON_PrintUnformatted(cJSON_GetObjectItem(m0, "component_units"));
  assert_string_equal(cu, "[\"case\",\"件\"]");
  free(cu);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m0, "units")), 0);
  cJSON_Delete(doc);
  tc_resp_free(&r);

  request("GET", "/v1/me", NULL, NULL, NULL, &r);
  tc_expect_problem(&r, 401, NULL, NULL);
  assert_string_equal(tc_header(&r, "www-authenticate"), "Bearer");
  tc_resp_free(&r);
  request("GET", "/v1/me", NULL, "Authorization: Bearer not-a-known-token\r\n", NULL, &r);
  tc_expect_problem(&r, 401, NULL, NULL);
  tc_resp_free(&r);
  request("POST", "/v1/me", "KANKYO", NULL, "", &r);
  tc_expect_problem(&r, 405, NULL, NULL);
  assert_string_equal(tc_header(&r, "allow"), "GET, HEAD");
  tc_resp_free(&r);
}

/* ---- CSV batches ---- */

static void test_csv_utf8_accepted(void **state) {
  (void)state;
  const char *body =
      "\xEF\xBB\xBFmeasure_id,observed_at,value,unit,note,event_id\r\n"
      LED ",2024-05-01,21.5,percent,\"LED化, 本庁舎\",6b0a7c1e-1111-4a2b-8c3d-000000000001\r\n"
      "\r\n"
      PLAN ",2024/6/1,1,plan,,6b0a7c1e-1111-4a2b-8c3d-000000000002\r\n";
  tc_resp r;
  request("POST", "/v1/measurements:batch", "KANKYO", CSV_UTF8, body, &r);
  if (r.status != 202) fail_msg("status %d: %s", r.status, r.body);
  assert_string_equal(tc_header(&r, "content-type"), "application/json");
  cJSON *doc = cJSON_Parse(r.body);
  assert_int_equal(cJSON_GetObjectItem(doc, "accepted")->valueint, 2);
  assert_int_equal(cJSON_GetObjectItem(doc, "rejected")->valueint, 0);
  const cJSON *a = result_for_row(doc, 2), *b = result_for_row(doc, 4);
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(cJSON_GetObjectItem(a, "index")->valueint, 0);
  assert_int_equal(cJSON_GetObjectItem(b, "index")->valueint, 1);
  assert_int_equal(status_of(a), 202);
  assert_string_equal(cJSON_GetObjectItem(a, "event_id")->valuestring,
                      "6b0a7c1e-1111-4a2b-8c3d-000000000001");
  assert_true(cJSON_IsNumber(cJSON_GetObjectItem(a, "partition")));
  assert_true(cJSON_IsNumber(cJSON_GetObjectItem(a, "offset")));
  cJSON_Delete(doc);
  tc_resp_free(&r);

  kpi_measurement m;
  read_back("6b0a7c1e-1111-4a2b-8c3d-000000000001", &m);
  assert_string_equal(m.measure_id, LED);
  assert_string_equal(m.department, "kankyo");
  assert_true(m.value == 21.5);
  assert_string_equal(m.note, "LED化, 本庁舎");
  read_back("6b0a7c1e-1111-4a2b-8c3d-000000000002", &m);
  assert_string_equal(m.observed_at, "2024-06-01"); /* Excel's 2024/6/1 */
  assert_false(m.has_note);
}

/* What Excel writes on Japanese Windows: CP932, CRLF; the note arrives in UTF-8. */
static void test_csv_shift_jis(void **state) {
  (void)state;
  const char *body = "measure_id,observed_at,value,unit,component,note,event_id\r\n"
                     KONBINI ",2024-05-31,412,\x8c\x8f,denominator," /* 件 */
                     "\x88\xb0\x95\xca\x20\x35\x8c\x8e\x95\xaa\x87\x40," /* 芦別 5月分① */
                     "6b0a7c1e-2222-4a2b-8c3d-000000000001\r\n";
  tc_resp r;
  request("POST", "/v1/measurements:batch", "SHIMIN", CSV_SJIS, body, &r);
  if (r.status != 202) fail_msg("status %d: %s", r.status, r.body);
  tc_resp_free(&r);
  kpi_measurement m;
  read_back("6b0a7c1e-2222-4a2b-8c3d-000000000001", &m);
  assert_string_equal(m.note, "芦別 5月分①");
  assert_int_equal(m.component, KPI_COMPONENT_DENOMINATOR);
  assert_string_equal(m.unit, "case"); /* 件 in CP932: a ratio's amount is a count */
  assert_true(m.value == 412);

  /* The same bytes declared as UTF-8: 400, naming the encoding, nothing published. */
  request("POST", "/v1/measurements:batch", "SHIMIN", CSV_UTF8, body, &r);
  tc_expect_problem(&r, 400, "", "encoding");
  tc_resp_free(&r);
}

static const char *const mixed_body =
    "measure_id,observed_at,value,unit,event_id\n"
    LED ",2024-05-03,22,percent,6b0a7c1e-3333-4a2b-8c3d-000000000001\n"
    LED ",2024-05-03,-1,person,6b0a7c1e-3333-4a2b-8c3d-000000000002\n"
    LED ",2024-05-03,22\n"
    KONBINI ",2024-05-03,1,percent,6b0a7c1e-3333-4a2b-8c3d-000000000004\n";

static void test_csv_bad_rows_207(void **state) {
  (void)state;
  tc_resp r;
  request("POST", "/v1/measurements:batch", "KANKYO", "Content-Type: text/csv\r\n", mixed_body,
          &r);
  if (r.status != 207) fail_msg("status %d: %s", r.status, r.body);
  cJSON *doc = cJSON_Parse(r.body);
  assert_int_equal(cJSON_GetObjectItem(doc, "accepted")->valueint, 1);
  assert_int_equal(cJSON_GetObjectItem(doc, "rejected")->valueint, 3);
  assert_int_equal(status_of(result_for_row(doc, 2)), 202);
  const cJSON *bad = result_for_row(doc, 3);
  assert_int_equal(status_of(bad), 422);
  assert_int_equal(cJSON_GetObjectItem(bad, "index")->valueint, 1);
  assert_true(tc_has_error(cJSON_GetObjectItem(bad, "errors"), "value", "range"));
  assert_true(tc_has_error(cJSON_GetObjectItem(bad, "errors"), "unit", "unit_mismatch"));
  bad = result_for_row(doc, 4);
  assert_int_equal(status_of(bad), 422);
  assert_true(tc_has_error(cJSON_GetObjectItem(bad, "errors"), "", "arity"));
  bad = result_for_row(doc, 5); /* another department's measure */
  assert_int_equal(status_of(bad), 403);
  assert_true(tc_has_error(cJSON_GetObjectItem(bad, "errors"), "measure_id", "forbidden"));
  cJSON_Delete(doc);
  tc_resp_free(&r);
  assert_true(on_topic("6b0a7c1e-3333-4a2b-8c3d-000000000001"));
  assert_false(on_topic("6b0a7c1e-3333-4a2b-8c3d-000000000002"));
}

static void test_csv_atomic_422(void **state) {
  (void)state;
  const char *body = "measure_id,observed_at,value,unit,event_id\n"
                     LED ",2024-05-04,23,percent,6b0a7c1e-4444-4a2b-8c3d-000000000001\n"
                     LED ",2024-05-04,101,percent,6b0a7c1e-4444-4a2b-8c3d-000000000002\n";
  tc_resp r;
  request("POST", "/v1/measurements:batch?atomic=true", "KANKYO", CSV_UTF8, body, &r);
  cJSON *doc = tc_problem(&r, 422);
  const cJSON *results = cJSON_GetObjectItem(doc, "results");
  assert_int_equal(cJSON_GetArraySize(results), 1);
  const cJSON *bad = result_for_row(doc, 3);
  assert_non_null(bad);
  assert_true(tc_has_error(cJSON_GetObjectItem(bad, "errors"), "value", "range"));
  assert_null(cJSON_GetObjectItem(doc, "accepted"));
  cJSON_Delete(doc);
  tc_resp_free(&r);
  assert_false(on_topic("6b0a7c1e-4444-4a2b-8c3d-000000000001"));
  assert_false(on_topic("6b0a7c1e-4444-4a2b-8c3d-000000000002"));
}

static void test_csv_refusals(void **state) {
  (void)state;
  const char *good = "measure_id,observed_at,value,unit\n" LED ",2024-05-05,1,percent\n";
  tc_resp r;
  request("POST", "/v1/measurements:batch", "KANKYO",
          "Content-Type: text/csv; charset=EBCDIC\r\n", good, &r);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  request("POST", "/v1/measurements:batch", "KANKYO",
          "Content-Type: text/csv; header=present\r\n", good, &r);
  tc_expect_problem(&r, 415, NULL, NULL);
  tc_resp_free(&r);
  request("POST", "/v1/measurements:batch", "KANKYO", CSV_UTF8,
          "measure_id,observed_at,value,unit,remarks\n" LED ",2024-05-05,1,percent,x\n", &r);
  tc_expect_problem(&r, 422, "remarks", "unknown_field");
  tc_resp_free(&r);
  request("POST", "/v1/measurements:batch", "KANKYO", CSV_UTF8,
          "measure_id,observed_at,unit\n" LED ",2024-05-05,percent\n", &r);
  tc_expect_problem(&r, 422, "value", "missing");
  tc_resp_free(&r);
  request("POST", "/v1/measurements:batch", "KANKYO", CSV_UTF8,
          "measure_id,observed_at,value,unit\n" LED ",2024-05-05,1,\"percent\n", &r);
  tc_expect_problem(&r, 422, "", "syntax");
  tc_resp_free(&r);
  request("POST", "/v1/measurements:batch", "KANKYO", CSV_UTF8,
          "measure_id,observed_at,value,unit\n", &r);
  tc_expect_problem(&r, 422, "", "empty");
  tc_resp_free(&r);
  /* More rows than KPI_INGEST_MAX_BATCH (20 here). */
  char big[4096];
  int n = snprintf(big, sizeof(big), "measure_id,observed_at,value,unit\n");
  for (int i = 0; i < 21; i++)
    n += snprintf(big + n, sizeof(big) - (size_t)n, LED ",2024-05-05,%d,percent\n", i);
  request("POST", "/v1/measurements:batch", "KANKYO", CSV_UTF8, big, &r);
  tc_expect_problem(&r, 413, NULL, NULL);
  tc_resp_free(&r);
  request("POST", "/v1/measurements:batch", NULL, CSV_UTF8, good, &r);
  tc_expect_problem(&r, 401, NULL, NULL);
  tc_resp_free(&r);
}

/* ---- the entry page ---- */

static void expect_page_headers(const tc_resp *r, const char *type) {
  assert_int_equal(r->status, 200);
  assert_string_equal(tc_header(r, "content-type"), type);
  assert_string_equal(tc_header(r, "content-security-policy"), CSP);
  assert_string_equal(tc_header(r, "x-content-type-options"), "nosniff");
  assert_string_equal(tc_header(r, "referrer-policy"), "no-referrer");
  assert_null(tc_header(r, "set-cookie"));
}

static void test_entry_page(void **state) {
  (void)state;
  tc_resp r;
  request("GET", "/entry", NULL, NULL, NULL, &r);
  expect_page_headers(&r, "text/html; charset=utf-8");
  assert_non_null(strstr(r.body, "<html lang=\"ja\">"));
  static const char *const ids[] = {"id=\"token\"",    "id=\"measure\"",   "id=\"value\"",
                                    "id=\"submit\"",   "id=\"result\"",    "id=\"csv-file\"",
                                    "id=\"csv-preview\"", "id=\"observed-at\"", "id=\"note\"",
                                    "aria-live=\"polite\"", "<legend>",
                                    "src=\"/entry.js\"", "href=\"/entry.css\""};
  for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
    if (!strstr(r.body, ids[i])) fail_msg("/entry lacks %s", ids[i]);
  /* The strict CSP holds only without inline script, style or handlers. */
  assert_null(strstr(r.body, "<script>"));
  assert_null(strstr(r.body, "<style"));
  assert_null(strstr(r.body, "style=\""));
  assert_null(strstr(r.body, "onclick"));
  tc_resp_free(&r);

  request("GET", "/entry.js", NULL, NULL, NULL, &r);
  expect_page_headers(&r, "text/javascript; charset=utf-8");
  assert_non_null(strstr(r.body, "/v1/me"));
  assert_null(strstr(r.body, "document.cookie"));
  assert_null(strstr(r.body, "innerHTML"));
  tc_resp_free(&r);

  request("GET", "/entry.css", NULL, NULL, NULL, &r);
  expect_page_headers(&r, "text/css; charset=utf-8");
  tc_resp_free(&r);

  request("POST", "/entry", NULL, NULL, "", &r);
  tc_expect_problem(&r, 405, NULL, NULL);
  tc_resp_free(&r);
  request("GET", "/entry.html", NULL, NULL, NULL, &r);
  tc_expect_problem(&r, 404, NULL, NULL);
  tc_resp_free(&r);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_me),
      cmocka_unit_test(test_csv_utf8_accepted),
      cmocka_unit_test(test_csv_shift_jis),
      cmocka_unit_test(test_csv_bad_rows_207),
      cmocka_unit_test(test_csv_atomic_422),
      cmocka_unit_test(test_csv_refusals),
      cmocka_unit_test(test_entry_page),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
