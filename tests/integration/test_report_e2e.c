/* test_report_e2e.c: the report service on the real stack. Measurements go through the
 * evaluator (produced to its topic); the report, logged in as a member of kpi_reader, shows the
 * plan's table with the evaluator's statuses, recomputes any past as_of with the same
 * attainment code, gives the same table as CSV (parsed back with libcsv), renders a note full
 * of markup as text, never shows a mail address, and drains on SIGTERM. */
#include <csv.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_it_pipeline.h"
#include "kpi_records.h"
#include "test_evaluator_util.h"

#define SUPPORTERS "g2-uiturn-4-supporters"
#define LED "g4-carbon-2-led-rate"

/* The body of an HTTP response (after the blank line), or NULL. */
static const char *body_of(const char *resp) {
  const char *b = resp ? strstr(resp, "\r\n\r\n") : NULL;
  return b ? b + 4 : NULL;
}

static char *get(int port, const char *path) {
  char *r = kpi_it_http_get(port, path, 10);
  if (!r) fail_msg("GET %s: no answer", path);
  return r;
}

/* The data-status of the table row of measure ID in the page HTML, into OUT. */
static void row_status(const char *html, const char *id, char *out, size_t size) {
  char key[128];
  snprintf(key, sizeof(key), "<tr id=\"m-%s\" data-status=\"", id);
  const char *p = strstr(html, key);
  if (!p) fail_msg("no row for %s", id);
  p += strlen(key);
  size_t n = strcspn(p, "\"");
  snprintf(out, size, "%.*s", (int)n, p);
}

/* CSV parsed back: rows of fields. */
typedef struct {
  char *f[64][24];
  int n_rows, n_fields;
} table;

static void on_field(void *s, size_t len, void *arg) {
  table *t = arg;
  if (t->n_rows < 64 && t->n_fields < 24) t->f[t->n_rows][t->n_fields] = strndup(s ? s : "", len);
  t->n_fields++;
}

static void on_row(int c, void *arg) {
  (void)c;
  table *t = arg;
  t->n_rows++;
  t->n_fields = 0;
}

/* Parses the report's CSV (after its UTF-8 BOM) strictly with libcsv into *T. */
static void parse_csv(const char *csv, table *t) {
  struct csv_parser p;
  assert_int_equal(csv_init(&p, CSV_STRICT | CSV_STRICT_FINI), 0);
  memset(t, 0, sizeof(*t));
  size_t len = strlen(csv + 3);
  assert_int_equal(csv_parse(&p, csv + 3, len, on_field, on_row, t), len);
  assert_int_equal(csv_fini(&p, on_field, on_row, t), 0);
  csv_free(&p);
}

static void table_free(table *t) {
  for (int r = 0; r < 64; r++)
    for (int c = 0; c < 24; c++) free(t->f[r][c]);
}

static const char *status_word(const char *status) {
  static const char *const map[][2] = {{"no_data", "未報告"}, {"on_track", "順調"},
                                        {"lagging", "遅れ"},   {"achieved", "達成"},
                                        {"failed", "未達成"}};
  for (size_t i = 0; i < 5; i++)
    if (strcmp(map[i][0], status) == 0) return map[i][1];
  return "?";
}

static void test_report(void **state) {
  (void)state;
  evw w;
  /* 1 March 2024: e = 336/731 for the R4 → R6 measures. */
  evw_init(&w, "it_report", "2024-03-01");
  evw_start(&w, NULL);
  if (evw_wait_ready(&w, 60000) != 0) fail_msg("evaluator not ready; log %s", w.log);

  /* 26 registrants against 24 → 50: p ≈ 0.08 < 0.8·e, lagging. The note is hostile markup. */
  evw_produce_noted(&w, SUPPORTERS, "kikaku", "2024-02-29", 26, "person",
                    "<script>alert(\\\"x\\\")</script> \\\" <b>bold</b>");
  /* LED rate 30.2% against 12.4 → 35.7: p ≈ 0.76, on track on 1 March 2024. */
  evw_produce_reading(&w, LED, "kankyo", "2024-02-01", 30.2, "percent", NULL);
  evw_flush(&w);
  evw_expect_sql_within(&w, "SELECT status FROM attainment WHERE measure_id = '" SUPPORTERS "'",
                        "lagging", 30000);
  evw_expect_sql_within(&w, "SELECT status FROM attainment WHERE measure_id = '" LED "'",
                        "on_track", 30000);

  /* A notice about the measure, as the notifier stores it: its address must never show. */
  char sql[1024], err[512];
  snprintf(sql, sizeof(sql),
           "INSERT INTO notifications (alert_id, recipient, measure_id, alert_type, payload,"
           " state, sent_at) VALUES (gen_random_uuid(), 'owner@secret-%s.example', '" SUPPORTERS
           "', 'alert', '{\"status\":\"lagging\"}', 'sent', now())",
           w.name);
  assert_int_equal(kpi_pg_exec(w.pg, sql, err, sizeof(err)), 0);

  /* The report logs in as a member of kpi_reader, as in a deployment. */
  int port;
  char log[256];
  pid_t rp = kpi_it_report_start(w.pg, w.conninfo, w.name, &port, log, sizeof(log));

  /* GET /: the evaluator's current statuses, every measure of the plan, headers for a strict
   * page. */
  char *resp = get(port, "/");
  assert_non_null(strstr(resp, "HTTP/1.1 200"));
  assert_non_null(strstr(resp, "Content-Security-Policy: default-src 'none'; style-src 'self'"));
  assert_non_null(strstr(resp, "X-Content-Type-Options: nosniff"));
  assert_non_null(strstr(resp, "Referrer-Policy: no-referrer"));
  const char *html = body_of(resp);
  assert_non_null(strstr(html, "<html lang=\"ja\">"));
  char st[32];
  row_status(html, SUPPORTERS, st, sizeof(st));
  assert_string_equal(st, "lagging");
  row_status(html, LED, st, sizeof(st));
  assert_string_equal(st, "on_track");
  row_status(html, "g3-kosodate-8-school-lunch", st, sizeof(st));
  assert_string_equal(st, "no_data");
  assert_non_null(strstr(html, "24名 <span class=\"fy\">(R4)</span>"));
  assert_non_null(strstr(html, "<strong data-count=\"lagging\">1</strong>"));
  assert_non_null(strstr(html, "<strong data-count=\"on_track\">1</strong>"));
  free(resp);

  /* as_of recomputes: on the evaluator's own date the same statuses (one implementation);
   * at the end of R4 nothing was reported yet; after the due date the shortfall is final. */
  resp = get(port, "/?as_of=2024-03-01");
  row_status(body_of(resp), SUPPORTERS, st, sizeof(st));
  assert_string_equal(st, "lagging");
  row_status(body_of(resp), LED, st, sizeof(st));
  assert_string_equal(st, "on_track");
  free(resp);
  resp = get(port, "/?as_of=2023-03-31");
  row_status(body_of(resp), SUPPORTERS, st, sizeof(st));
  assert_string_equal(st, "no_data");
  assert_non_null(strstr(body_of(resp), "<option value=\"2023-03-31\" selected>"));
  free(resp);
  resp = get(port, "/?as_of=2025-04-01&lang=en");
  assert_non_null(strstr(body_of(resp), "<html lang=\"en\">"));
  row_status(body_of(resp), SUPPORTERS, st, sizeof(st));
  assert_string_equal(st, "failed");
  row_status(body_of(resp), LED, st, sizeof(st));
  assert_string_equal(st, "failed");
  free(resp);
  /* A measure page in English links back to the same page in Japanese by its path (an empty
   * href would reload ?lang=en). */
  resp = get(port, "/measures/" SUPPORTERS "?lang=en");
  assert_non_null(strstr(body_of(resp), "<a href=\"/measures/" SUPPORTERS "\" lang=\"ja\""));
  free(resp);
  resp = get(port, "/?as_of=2024-02-30");
  assert_non_null(strstr(resp, "HTTP/1.1 400"));
  free(resp);

  /* CSV: BOM, CRLF, a Japanese header, and per measure the status the page shows. */
  resp = get(port, "/report.csv?as_of=2024-03-01");
  assert_non_null(strstr(resp, "Content-Type: text/csv; charset=utf-8"));
  const char *csv = body_of(resp);
  assert_int_equal(memcmp(csv, "\xEF\xBB\xBF", 3), 0);
  assert_non_null(strstr(csv, "\r\n"));
  char *page = get(port, "/?as_of=2024-03-01");
  table t;
  parse_csv(csv, &t);
  assert_int_equal(t.n_rows, 1 + 9);
  assert_string_equal(t.f[0][0], "基本目標");
  assert_string_equal(t.f[0][14], "状況");
  assert_string_equal(t.f[0][19], "施策ID");
  for (int r = 1; r < t.n_rows; r++) {
    row_status(body_of(page), t.f[r][19], st, sizeof(st));
    assert_string_equal(t.f[r][14], status_word(st));
    if (strcmp(t.f[r][19], SUPPORTERS) == 0) {
      assert_string_equal(t.f[r][6], "R4");
      assert_string_equal(t.f[r][7], "24");
      assert_string_equal(t.f[r][10], "26");
      assert_string_equal(t.f[r][11], "2024-02-29");
    }
  }
  table_free(&t);
  free(page);
  free(resp);

  /* The latest CSV is read from the evaluator's rows, the past one recomputed: on the
   * evaluator's date they are the same file, byte for byte (the second latest one comes from
   * the cache). */
  for (int i = 0; i < 2; i++) {
    char *latest = get(port, "/report.csv"), *past = get(port, "/report.csv?as_of=2024-03-01");
    assert_non_null(strstr(latest, "HTTP/1.1 200"));
    assert_string_equal(body_of(latest), body_of(past));
    free(latest);
    free(past);
  }

  /* The measure page: the note as text, the chart, the notice without its address. */
  resp = get(port, "/measures/" SUPPORTERS "?as_of=2024-03-01");
  html = body_of(resp);
  assert_non_null(strstr(resp, "HTTP/1.1 200"));
  assert_null(strstr(html, "<script"));
  assert_null(strstr(html, "<b>bold"));
  assert_non_null(strstr(html, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &quot; "
                               "&lt;b&gt;bold&lt;/b&gt;"));
  assert_non_null(strstr(html, "<svg class=\"chart\""));
  assert_non_null(strstr(html, "data-status=\"lagging\""));
  /* The notice was sent after that date: not part of the page as it stood then. */
  assert_non_null(strstr(html, "通知はまだ送信されていません"));
  free(resp);
  resp = get(port, "/measures/" SUPPORTERS);
  html = body_of(resp);
  assert_non_null(strstr(html, "data-status=\"lagging\""));
  assert_non_null(strstr(html, "配信済み 1/1"));
  assert_null(strstr(html, "@"));
  assert_null(strstr(html, "secret"));
  free(resp);
  resp = get(port, "/measures/no-such-measure");
  assert_non_null(strstr(resp, "HTTP/1.1 404"));
  free(resp);
  resp = get(port, "/static/report.css");
  assert_non_null(strstr(resp, "Content-Type: text/css"));
  free(resp);
  resp = get(port, "/metrics");
  assert_non_null(strstr(resp, "kpi_report_request_duration_seconds"));
  free(resp);

  /* A new reading changes the evaluator's rows: the cached latest page gives way at once. */
  resp = get(port, "/");
  row_status(body_of(resp), "g3-kosodate-8-school-lunch", st, sizeof(st));
  assert_string_equal(st, "no_data");
  free(resp);
  evw_produce_reading(&w, "g3-kosodate-8-school-lunch", "kyoiku", "2024-02-15", 3, "school",
                      NULL);
  evw_flush(&w);
  evw_expect_sql_within(&w,
                        "SELECT status FROM attainment WHERE measure_id = "
                        "'g3-kosodate-8-school-lunch'",
                        "achieved", 30000);
  resp = get(port, "/");
  row_status(body_of(resp), "g3-kosodate-8-school-lunch", st, sizeof(st));
  assert_string_equal(st, "achieved");
  free(resp);

  int s = kpi_it_stop(rp, SIGTERM, 20000);
  assert_true(WIFEXITED(s) && WEXITSTATUS(s) == 0);
  evw_close(&w);
}

/* docs/report.md "Measure page": a retracted reading stays on the page, struck through with
 * its reason, who and when, and a correction is marked; neither the retracted reading nor
 * the corrected one counts for the latest observation date (latest CSV), the chart or the
 * figures. The latest acknowledgement is shown with its writer, date and until. */
static void test_report_retractions_and_ack(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_report_ack", "2024-03-01");
  evw_start(&w, NULL);
  if (evw_wait_ready(&w, 60000) != 0) fail_msg("evaluator not ready; log %s", w.log);
  char a[KPI_UUID_STRLEN + 1], b[KPI_UUID_STRLEN + 1], c[KPI_UUID_STRLEN + 1], rec[2048];
  evw_produce_reading(&w, SUPPORTERS, "kikaku", "2024-02-20", 40, "person", a);
  evw_produce_reading(&w, SUPPORTERS, "kikaku", "2024-02-29", 26, "person", b);
  /* B retracted; A corrected by C (the same day, 41). */
  kpi_retraction r;
  memset(&r, 0, sizeof(r));
  snprintf(r.retracts, sizeof(r.retracts), "%s", b);
  snprintf(r.measure_id, sizeof(r.measure_id), SUPPORTERS);
  snprintf(r.department, sizeof(r.department), "kikaku");
  kpi_retraction_id(b, r.measure_id, r.department, r.event_id);
  snprintf(r.reason, sizeof(r.reason), "二重計上のため取消");
  kpi_time_parse("2024-02-29T03:00:00.000Z", &r.received_ms, NULL);
  kpi_time_format_utc(r.received_ms, r.received_at, sizeof(r.received_at));
  char *json = kpi_retraction_encode(&r, NULL);
  assert_non_null(json);
  evw_produce(&w, w.t_meas, SUPPORTERS, json);
  free(json);
  kpi_uuid_v4(c);
  evw_measurement(rec, sizeof(rec), c, SUPPORTERS, "kikaku", "2024-02-20", 41, "person", NULL);
  snprintf(rec + strlen(rec) - 1, sizeof(rec) - strlen(rec) + 1,
           ",\"corrects\":{\"event_id\":\"%s\",\"reason\":\"入力誤り\"}}", a);
  evw_produce(&w, w.t_meas, SUPPORTERS, rec);
  char k[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(k);
  snprintf(rec, sizeof(rec),
           "{\"schema\":\"kpi.acknowledgement/1\",\"event_id\":\"%s\",\"measure_id\":\""
           SUPPORTERS "\",\"department\":\"kikaku\",\"note\":\"<i>広報</i>を強化します\","
           "\"until\":\"2024-03-27\",\"received_at\":\"2024-02-28T00:00:00.000Z\"}", k);
  evw_produce(&w, w.t_meas, SUPPORTERS, rec);
  evw_flush(&w);
  evw_expect_sql(&w, "SELECT value || ' ' || (SELECT count(*) FROM acknowledgements)"
                     " FROM attainment WHERE measure_id = '" SUPPORTERS "'", "41 1");

  int port;
  char log[256];
  pid_t rp = kpi_it_report_start(w.pg, w.conninfo, w.name, &port, log, sizeof(log));
  /* The latest CSV's observation date: C's day, not the retracted B's 2024-02-29. */
  char *resp = get(port, "/report.csv");
  const char *csv = body_of(resp);
  const char *row = strstr(csv, SUPPORTERS);
  assert_non_null(row);
  while (row > csv && row[-1] != '\n') row--;
  char line[1024];
  snprintf(line, sizeof(line), "%.*s", (int)strcspn(row, "\r\n"), row);
  if (!strstr(line, "\"41\",\"2024-02-20\",") || strstr(line, "2024-02-29"))
    fail_msg("latest CSV row: %s", line);
  free(resp);

  resp = get(port, "/measures/" SUPPORTERS);
  const char *html = body_of(resp);
  /* Three readings listed: two struck through with their reasons, one correction. */
  assert_non_null(strstr(html, "<del>26"));
  assert_non_null(strstr(html, "<del>40"));
  assert_non_null(strstr(html, "取消: 二重計上のため取消（企画課（サンプル）, 2024-02-29 12:00）"));
  assert_non_null(strstr(html, "取消: 入力誤り（企画課（サンプル）, "));
  assert_non_null(strstr(html, "<span class=\"mark correction\">訂正</span>"));
  /* The chart counts the one reading that stands. */
  assert_non_null(strstr(html, "実績（1 点）"));
  /* The acknowledgement, its note as text. */
  assert_non_null(strstr(html, "<h2 id=\"ack-h\">対応方針</h2>"));
  assert_non_null(strstr(html, "&lt;i&gt;広報&lt;/i&gt;を強化します"));
  assert_non_null(strstr(html, "企画課（サンプル）, <time datetime=\"2024-02-28\">"));
  assert_non_null(strstr(html, "<time datetime=\"2024-03-27\">2024-03-27</time>まで"));
  free(resp);
  /* Before the acknowledgement was received: not on the page as it stood then. */
  resp = get(port, "/measures/" SUPPORTERS "?as_of=2024-02-27");
  assert_null(strstr(body_of(resp), "ack-h"));
  free(resp);

  int s = kpi_it_stop(rp, SIGTERM, 20000);
  assert_true(WIFEXITED(s) && WEXITSTATUS(s) == 0);
  evw_close(&w);
}

#define CUMUL "g3-kosodate-3-maternity-grants" /* cumulative 250 over FY2020-FY2024 */

/* Field COL of measure ID's row in the CSV at PATH, into OUT. */
static void csv_field(int port, const char *path, const char *id, int col, char *out,
                      size_t size) {
  char *resp = get(port, path);
  const char *csv = body_of(resp);
  assert_non_null(csv);
  table t;
  parse_csv(csv, &t);
  out[0] = '\0';
  for (int r = 1; r < t.n_rows && r < 64; r++)
    if (t.f[r][19] && strcmp(t.f[r][19], id) == 0) snprintf(out, size, "%s", t.f[r][col]);
  table_free(&t);
  free(resp);
  if (!out[0]) fail_msg("%s: no row for %s", path, id);
}

/* docs/evaluator.md "Aggregates": a date inside a month with readings after it sums that
 * month's readings up to the date; a date after the month's last reading takes the month's
 * totals row; both give the direct sums of the readings observed by then. */
static void test_report_month_total(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_report_month", "2024-06-30");
  evw_start(&w, NULL);
  if (evw_wait_ready(&w, 60000) != 0) fail_msg("evaluator not ready; log %s", w.log);
  evw_produce_reading(&w, CUMUL, "kosodate", "2024-05-10", 100, "case", NULL);
  evw_produce_reading(&w, CUMUL, "kosodate", "2024-06-10", 30, "case", NULL);
  evw_produce_reading(&w, CUMUL, "kosodate", "2024-06-20", 50, "case", NULL);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", "180");
  int port;
  char log[256], v[64];
  pid_t rp = kpi_it_report_start(w.pg, w.conninfo, w.name, &port, log, sizeof(log));
  static const struct {
    const char *path, *sum_sql;
  } cases[] = {
      {"/report.csv?as_of=2024-06-15", "2024-06-15"}, /* the 20th's 50 left out */
      {"/report.csv?as_of=2024-06-20", "2024-06-20"}, /* the month's row, exact */
      {"/report.csv?as_of=2024-06-30", "2024-06-30"},
      {"/report.csv?as_of=2024-05-31", "2024-05-31"},
      {"/report.csv", "2024-06-30"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT sum(value) FROM measurements WHERE measure_id = '" CUMUL "'"
             " AND observed_day <= '%s'", cases[i].sum_sql);
    char *want = evw_sql(&w, sql);
    csv_field(port, cases[i].path, CUMUL, 10, v, sizeof(v));
    if (strcmp(v, want) != 0) fail_msg("%s: value %s, direct sum %s", cases[i].path, v, want);
    free(want);
  }
  csv_field(port, "/report.csv?as_of=2024-06-15", CUMUL, 10, v, sizeof(v));
  assert_string_equal(v, "130");
  int s = kpi_it_stop(rp, SIGTERM, 20000);
  assert_true(WIFEXITED(s) && WEXITSTATUS(s) == 0);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_report),
                                     cmocka_unit_test(test_report_retractions_and_ack),
                                     cmocka_unit_test(test_report_month_total)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
