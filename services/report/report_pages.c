/* report_pages.c: the report's HTTP endpoints: the KPI table (HTML and CSV), one page per
 * measure, the stylesheet, health, readiness and metrics. Every page is one or two
 * parameterised queries on the least busy of the read-only connections (report_db.c),
 * evaluated with kpi_attainment (the evaluator's own rules) and filled into an embedded
 * template; the latest table (the evaluator's rows) is cached per language while they do not
 * change. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kpi_aggregate.h"
#include "kpi_attainment.h"
#include "kpi_buf.h"
#include "kpi_json.h"
#include "kpi_log.h"
#include "report.h"
#include "report_assets.h"
#include "report_chart.h"
#include "report_csv.h"
#include "report_labels.h"
#include "report_tmpl.h"

/* Every HTML answer: nothing but our own stylesheet may load, no script at all, no framing,
 * forms only to ourselves. The chart is inline SVG (no img-src needed beyond data:). */
#define SECURITY_HEADERS                                                                     \
  "Content-Security-Policy: default-src 'none'; style-src 'self'; img-src 'self' data:; "   \
  "form-action 'self'; base-uri 'none'; frame-ancestors 'none'\r\n"                          \
  "X-Content-Type-Options: nosniff\r\n"                                                      \
  "Referrer-Policy: no-referrer\r\n"
#define NO_STORE "Cache-Control: no-store\r\n"
#define HTML_TYPE "text/html; charset=utf-8"

const kpi_http_route report_http_routes[REPORT_EP_COUNT] = {
    [REPORT_EP_INDEX] = {"/", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [REPORT_EP_MEASURE] = {"/measures/*", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [REPORT_EP_CSV] = {"/report.csv", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [REPORT_EP_STATIC] = {"/static/*", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [REPORT_EP_HEALTHZ] = {"/healthz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [REPORT_EP_READYZ] = {"/readyz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [REPORT_EP_METRICS] = {"/metrics", KPI_HTTP_GET | KPI_HTTP_HEAD},
};

static const char *const ep_names[REPORT_EP_COUNT] = {
    "index", "measure", "csv", "static", "healthz", "readyz", "metrics"};

/* ---- SQL ---- */

/* The aggregates of the measures at the date asked for: the evaluator's own query
 * (KPI_AGGREGATE_SQL, $1..$9; whole months from its monthly totals, the date's month too
 * when none of its readings was observed after the date, else from `measurements`), so a past
 * date is computed exactly as the evaluator computed it that day. $10: also join the
 * evaluator's current attainment row. The last report is the latest
 * received_at among the measurements counted, as a Japan date. */
static const char SQL_TABLE[] =
    "SELECT g.*,"
    " ((lx.last_received AT TIME ZONE 'Asia/Tokyo')::date - DATE '1970-01-01') AS last_day,"
    " a.value AS row_value, a.progress AS row_progress, a.expected AS row_expected,"
    " a.status AS row_status, a.stale AS row_stale, (a.as_of - DATE '1970-01-01') AS row_as_of"
    " FROM (" KPI_AGGREGATE_SQL ") g"
    " LEFT JOIN LATERAL (SELECT max(x.received_at) AS last_received FROM measurements x"
    "   WHERE x.measure_id = g.id AND x.observed_at < $5::timestamptz"
    "   AND x.retracted_at IS NULL) lx ON true"
    " LEFT JOIN attainment a ON $10::bool AND a.measure_id = g.id";

/* The latest page and CSV (no as_of): the evaluator's current attainment rows of the
 * measures $1, each with the two columns of the reading side that SQL_TABLE gives too, cut at
 * the instant $2 (00:00 JST of tomorrow): the latest reading's observation date (ties on
 * observed_at share it, so a backward index scan of one entry) and the latest received_at
 * among the readings counted. No aggregate: the statuses, values, progress and pace are the
 * evaluator's, exactly what SQL_TABLE's $10 join put over its recomputation, so a page costs
 * two index lookups per measure instead of the whole aggregate (on_pg_latest falls back to
 * SQL_TABLE when a measure has no row yet, as the page then recomputes it). */
static const char SQL_LATEST[] =
    "SELECT a.measure_id AS id,"
    " (lr.observed_day - DATE '1970-01-01') AS latest_day,"
    " ((lx.last_received AT TIME ZONE 'Asia/Tokyo')::date - DATE '1970-01-01') AS last_day,"
    " a.value AS row_value, a.progress AS row_progress, a.expected AS row_expected,"
    " a.status AS row_status, a.stale AS row_stale, (a.as_of - DATE '1970-01-01') AS row_as_of"
    " FROM attainment a"
    " LEFT JOIN LATERAL (SELECT x.observed_day FROM measurements x"
    "   WHERE x.measure_id = a.measure_id AND x.observed_at < $2::timestamptz"
    "   AND x.retracted_at IS NULL ORDER BY x.observed_at DESC LIMIT 1) lr ON true"
    " LEFT JOIN LATERAL (SELECT max(x.received_at) AS last_received FROM measurements x"
    "   WHERE x.measure_id = a.measure_id AND x.observed_at < $2::timestamptz"
    "   AND x.retracted_at IS NULL) lx ON true"
    " WHERE a.measure_id = ANY($1::text[])";

/* The version of the evaluator's rows the latest page is made of: it changes with every
 * attainment write (updated_at = now(), events = the measure's readings stored, which also
 * moves the page's observation and last-report dates). Read before SQL_LATEST, so a cached
 * page is never older than the version it is stored under. */
static const char SQL_VERSION[] =
    "SELECT coalesce(max(updated_at)::text, '') || '/' || count(*) || '/' ||"
    " coalesce(sum(events), 0) FROM attainment";

/* One measure's details as one JSON document: its latest 1000 readings (with the running
 * total of the amounts inside the cumulative window $3..$4, computed over all of them), the
 * ratio of each FY, its attainment history up to the date $6, and the notices about it,
 * one per alert: never the recipients' addresses, only how many were delivered. A retracted
 * reading is listed, marked with when, by whom and why, and counts for no figure at any date
 * (as in the shared aggregate, common/kpi_aggregate.h): not in the running total, the ratios,
 * the chart or the last report date; a correction is marked as one (docs/corrections.md). `ack`: the measure's latest acknowledgement received
 * before $2, or null (docs/report.md "Measure page"). */
static const char SQL_DETAIL[] =
    "SELECT json_build_object("
    " 'readings', coalesce((SELECT json_agg(r ORDER BY r.o, r.rc, r.event_id) FROM ("
    "   SELECT * FROM (SELECT x.event_id, x.observed_at AS o, x.received_at AS rc,"
    "     (x.observed_day - DATE '1970-01-01') AS day, x.value, x.component, x.department,"
    "     to_char(x.received_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD HH24:MI') AS received,"
    "     x.note, x.retracted_at IS NOT NULL AS retracted, x.retracted_by,"
    "     x.retraction_reason,"
    "     to_char(x.retracted_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD HH24:MI') AS retracted_on,"
    "     x.corrects IS NOT NULL AS correction,"
    "     sum(CASE WHEN x.fiscal_year BETWEEN $3::int AND $4::int"
    "       AND x.retracted_at IS NULL THEN x.value"
    "       ELSE 0 END) OVER (ORDER BY x.observed_at, x.received_at, x.event_id) AS running"
    "     FROM measurements x WHERE x.measure_id = $1 AND x.observed_at < $2::timestamptz) y"
    "   ORDER BY y.o DESC, y.rc DESC, y.event_id DESC LIMIT 1000) r), '[]'::json),"
    " 'ack', (SELECT json_build_object('note', k.note, 'department', k.department,"
    "     'on', to_char(k.received_at AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD'),"
    "     'until', k.until::text)"
    "   FROM acknowledgements k WHERE k.measure_id = $1 AND k.received_at < $2::timestamptz"
    "   ORDER BY k.received_at DESC, k.event_id DESC LIMIT 1),"
    " 'ratios', coalesce((SELECT json_agg(f ORDER BY f.fy) FROM ("
    "   SELECT x.fiscal_year AS fy,"
    "     100 * sum(CASE WHEN x.component = 'numerator' THEN x.value ELSE 0 END)"
    "     / sum(CASE WHEN x.component = 'denominator' THEN x.value ELSE 0 END) AS ratio"
    "   FROM measurements x WHERE x.measure_id = $1 AND x.component IS NOT NULL"
    "   AND x.observed_at < $2::timestamptz"
    "   AND x.retracted_at IS NULL GROUP BY x.fiscal_year"
    "   HAVING sum(CASE WHEN x.component = 'denominator' THEN x.value ELSE 0 END) > 0) f),"
    "   '[]'::json),"
    " 'history', coalesce((SELECT json_agg(h ORDER BY h.id DESC) FROM ("
    "   SELECT id, as_of::text AS as_of, value, progress, expected, status, stale"
    "   FROM attainment_history WHERE measure_id = $1 AND as_of <= $5::date"
    "   ORDER BY id DESC LIMIT 50) h), '[]'::json),"
    " 'notices', coalesce((SELECT json_agg(n ORDER BY n.t DESC) FROM ("
    "   SELECT min(created_at) AS t, alert_type, (payload::jsonb) ->> 'status' AS status,"
    "     to_char(min(created_at) AT TIME ZONE 'Asia/Tokyo', 'YYYY-MM-DD HH24:MI') AS created,"
    "     count(*) AS recipients, count(*) FILTER (WHERE state = 'sent') AS sent,"
    "     count(*) FILTER (WHERE state = 'dead') AS dead"
    "   FROM notifications WHERE measure_id = $1 AND created_at < $2::timestamptz"
    "   GROUP BY alert_id, alert_type, (payload::jsonb) ->> 'status'"
    "   ORDER BY min(created_at) DESC LIMIT 50) n), '[]'::json))::text";

/* ---- requests ---- */

typedef struct page {
  report_ctx *ctx;
  kpi_http_request *http;
  report_endpoint ep;
  report_lang lang;
  bool has_as_of;  /* ?as_of given: recompute; else the evaluator's current rows */
  kpi_day as_of;   /* the date asked for, or today (Japan) */
  uint64_t start_ns;
  char measure_id[KPI_ID_MAX + 1];
  kpi_attainment att; /* measure page: filled by the first query */
  bool att_from_row;
  kpi_day evaluated_on;
  bool has_last;
  kpi_day last_day;
  /* Latest / and CSV: the version of the evaluator's rows read before the page (SQL_VERSION),
   * kept with the rendered answer in the cache when set. */
  bool cache_store;
  char version[96];
} page;

int report_metrics_init(report_ctx *ctx) {
  static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,   0.25,   0.5,   1,    2.5,   5};
  kpi_metrics *m = ctx->metrics = kpi_metrics_new();
  if (!m) return -1;
  for (int e = 0; e < REPORT_EP_COUNT; e++) {
    char labels[64];
    snprintf(labels, sizeof(labels), "endpoint=\"%s\"", ep_names[e]);
    ctx->m_duration[e] = kpi_metrics_histogram(m, "kpi_report_request_duration_seconds", labels,
                                               "Time from a complete request to its answer",
                                               bounds, sizeof(bounds) / sizeof(bounds[0]));
  }
  ctx->m_db_errors = kpi_metrics_counter(m, "kpi_report_db_errors_total", NULL,
                                         "Pages answered 503 because a query failed");
  ctx->m_rejected = kpi_metrics_counter(m, "kpi_report_rejected_total", NULL,
                                        "Pages refused with 503 past KPI_REPORT_MAX_PENDING");
  return 0;
}

static void page_done(page *pg) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  kpi_metrics_observe(pg->ctx->m_duration[pg->ep], (double)(now - pg->start_ns) / 1e9);
  free(pg);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int report_query_param(const char *query, const char *name, char *out, size_t size) {
  size_t nl = strlen(name);
  const char *p = query;
  while (p && *p) {
    const char *end = strchr(p, '&');
    if (!end) end = p + strlen(p);
    if ((size_t)(end - p) >= nl && memcmp(p, name, nl) == 0 && (p[nl] == '=' || p + nl == end)) {
      const char *v = p + nl + (p[nl] == '=');
      size_t n = 0;
      for (; v < end; v++) {
        char c = *v;
        if (c == '+') c = ' ';
        else if (c == '%') {
          if (end - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0) return -2;
          c = (char)(hexval(v[1]) * 16 + hexval(v[2]));
          v += 2;
        }
        if (n + 1 >= size || c == '\0') return -2;
        out[n++] = c;
      }
      out[n] = '\0';
      return (int)n;
    }
    p = *end ? end + 1 : end;
  }
  return -1;
}

static kpi_day today_jst(void) { return kpi_day_of_ms(kpi_time_now_ms()); }

/* 00:00 JST of DAY, as an RFC 3339 instant for a timestamptz parameter. */
static void day_start(kpi_day day, char *buf, size_t size) {
  char d[16];
  kpi_day_format(day, d, sizeof(d));
  snprintf(buf, size, "%sT00:00:00+09:00", d);
}

static void respond_html(page *pg, int status, kpi_buf *b) {
  kpi_http_respond(pg->http, status, HTML_TYPE, b->s, b->len, SECURITY_HEADERS NO_STORE);
}

/* A small page in the site's layout for 400/404/503: the reason in words. */
static void respond_error(page *pg, int status, const char *msg) {
  report_view *v = report_view_new();
  kpi_buf body = KPI_BUF_INIT, out = KPI_BUF_INIT;
  const report_asset *t = report_asset_find("error.html");
  const report_asset *l = report_asset_find("layout.html");
  int rc = -1;
  if (v && t && l) {
    report_labels_set(v, pg->lang);
    report_set(v, "lang", pg->lang == REPORT_LANG_EN ? "en" : "ja");
    report_setf(v, "title", "%d %s", status, kpi_http_reason(status));
    report_set(v, "message", msg);
    report_set(v, "home", pg->lang == REPORT_LANG_EN ? "/?lang=en" : "/");
    rc = report_render(t->data, t->len, v, &body, NULL, 0);
    if (rc == 0) {
      report_set_raw(v, "content", kpi_buf_str(&body));
      rc = report_render(l->data, l->len, v, &out, NULL, 0);
    }
  }
  if (rc == 0)
    kpi_http_respond(pg->http, status, HTML_TYPE, out.s, out.len,
                     status == 503 ? SECURITY_HEADERS NO_STORE "Retry-After: 1\r\n"
                                   : SECURITY_HEADERS NO_STORE);
  else
    kpi_http_respond(pg->http, status, "text/plain; charset=utf-8", msg, strlen(msg),
                     SECURITY_HEADERS);
  kpi_buf_free(&body);
  kpi_buf_free(&out);
  report_view_free(v);
}

static void cache_put(const page *pg, const char *body, size_t len);

/* Renders page template NAME into the layout and answers 200; 500 when a template fails
 * (logged: that is a bug), 503 when out of memory. Frees nothing of V. */
static void respond_page(page *pg, const char *name, report_view *v) {
  const report_asset *t = report_asset_find(name), *l = report_asset_find("layout.html");
  kpi_buf body = KPI_BUF_INIT, out = KPI_BUF_INIT;
  char err[160] = "";
  int rc = t && l ? report_render(t->data, t->len, v, &body, err, sizeof(err)) : -1;
  if (rc == 0) {
    report_set_raw(v, "content", kpi_buf_str(&body));
    rc = report_render(l->data, l->len, v, &out, err, sizeof(err));
  }
  if (rc == 0) {
    cache_put(pg, out.s, out.len);
    respond_html(pg, 200, &out);
  } else {
    kpi_log(KPI_LOG_ERROR, "template_failed", "%s: %s", name, rc == -2 ? "out of memory" : err);
    respond_error(pg, rc == -2 ? 503 : 500, "the page could not be rendered");
  }
  kpi_buf_free(&body);
  kpi_buf_free(&out);
}

/* ---- the latest table's cache ---- */

/* The rendered latest / and CSV per language. Rendering the 1,000-row table costs more than
 * its query, and one loop thread renders every page: with several visitors the pages
 * queued behind each other's rendering. An entry is served while all of these hold: same
 * catalog load, same Japan date (the page shows it and cuts readings at its end), the same
 * SQL_VERSION text (asked before every hit, on the least busy connection: ~0.3 ms), and
 * younger than CACHE_MAX_AGE_MS. The age bound covers the one change the version can miss:
 * two evaluator replicas committing out of the order of their now(). Past dates and measure
 * pages are not cached. */
#define CACHE_MAX_AGE_MS 2000

typedef struct {
  const report_ctx *ctx;
  unsigned catalog_gen;
  kpi_day day;
  char version[96];
  uint64_t stored_ms;
  char *body; /* NULL: empty */
  size_t len;
} cache_entry;

static cache_entry latest_cache[2][REPORT_LANG_EN + 1]; /* [csv][lang] */

static cache_entry *cache_slot(const page *pg) {
  return &latest_cache[pg->ep == REPORT_EP_CSV][pg->lang == REPORT_LANG_EN ? REPORT_LANG_EN : REPORT_LANG_JA];
}

/* The cached answer of PG's page, or NULL. */
static const cache_entry *cache_get(const page *pg) {
  const cache_entry *e = cache_slot(pg);
  if (!e->body || e->ctx != pg->ctx || e->catalog_gen != pg->ctx->catalog_gen ||
      e->day != pg->as_of || strcmp(e->version, pg->version) != 0 ||
      uv_now(pg->ctx->loop) - e->stored_ms >= CACHE_MAX_AGE_MS)
    return NULL;
  return e;
}

/* Keeps BODY (LEN bytes) as PG's page when PG asked to store it. */
static void cache_put(const page *pg, const char *body, size_t len) {
  if (!pg->cache_store) return;
  cache_entry *e = cache_slot(pg);
  char *copy = malloc(len ? len : 1);
  if (!copy) return;
  memcpy(copy, body, len);
  free(e->body);
  e->body = copy;
  e->len = len;
  e->ctx = pg->ctx;
  e->catalog_gen = pg->ctx->catalog_gen;
  e->day = pg->as_of;
  snprintf(e->version, sizeof(e->version), "%s", pg->version);
  e->stored_ms = uv_now(pg->ctx->loop);
}

/* The CSV's headers: the file name carries its date. */
static void csv_headers(const page *pg, char *buf, size_t size) {
  char d[16];
  kpi_day_format(pg->as_of, d, sizeof(d));
  snprintf(buf, size, "Content-Disposition: attachment; filename=\"kpi-%s.csv\"\r\n" NO_STORE,
           d);
}

#define CSV_TYPE "text/csv; charset=utf-8; header=present"

/* ---- shared pieces of the pages ---- */

static const char *lang_code(report_lang l) { return l == REPORT_LANG_EN ? "en" : "ja"; }

/* The query string that keeps LANG and AS_OF in links: "", "?lang=en", "?as_of=…&lang=en". */
static void link_query(const page *pg, bool with_as_of, char *buf, size_t size) {
  char d[16] = "";
  if (with_as_of && pg->has_as_of) kpi_day_format(pg->as_of, d, sizeof(d));
  bool en = pg->lang == REPORT_LANG_EN;
  snprintf(buf, size, "%s%s%s%s%s", (*d || en) ? "?" : "", *d ? "as_of=" : "", d,
           (*d && en) ? "&" : "", en ? "lang=en" : "");
}

static void set_common(page *pg, report_view *v, const char *title) {
  report_ctx *ctx = pg->ctx;
  report_labels_set(v, pg->lang);
  report_set(v, "lang", lang_code(pg->lang));
  report_set(v, "title", title);
  report_set(v, "plan_name", ctx->catalog->plan_name);
  char q[64], d[16];
  link_query(pg, true, q, sizeof(q));
  report_setf(v, "home", "/%s", q);
  report_setf(v, "csv_href", "/report.csv%s", q);
  /* The other language, same page and date. */
  page other = *pg;
  other.lang = pg->lang == REPORT_LANG_EN ? REPORT_LANG_JA : REPORT_LANG_EN;
  link_query(&other, true, q, sizeof(q));
  /* A measure page links to itself by path: an empty href (Japanese, no as_of) would reload
   * the current URL, ?lang=en included. Ids are [A-Za-z0-9._-], safe in a path. */
  if (pg->ep == REPORT_EP_MEASURE)
    report_setf(v, "other_lang_href", "/measures/%s%s", pg->measure_id, q);
  else
    report_setf(v, "other_lang_href", "/%s", q);
  report_set(v, "other_lang", lang_code(other.lang));
  report_set_bool(v, "en", pg->lang == REPORT_LANG_EN);
  kpi_day_format(pg->as_of, d, sizeof(d));
  report_set(v, "as_of", d);
  report_set_bool(v, "has_as_of", pg->has_as_of);
}

/* The as_of selector: the end of every FY of the plan, and "latest". */
static void set_as_of_options(page *pg, report_view *v) {
  const kpi_catalog *cat = pg->ctx->catalog;
  int from = 9999, to = 0;
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    int f = m->kind == KPI_KIND_CUMULATIVE ? m->window_from_fy : m->baseline_fy + 1;
    if (f < from) from = f;
    if (m->target_fy > to) to = m->target_fy;
  }
  report_view *o = report_add(v, "as_of_options");
  if (o) {
    report_set(o, "value", "");
    report_set(o, "label", report_label("l_latest", pg->lang));
    report_set_bool(o, "selected", !pg->has_as_of);
  }
  bool listed = false;
  for (int fy = from; fy <= to && fy - from < 50; fy++) {
    kpi_day end = kpi_fy_last_day(fy);
    char d[16], era[16];
    kpi_day_format(end, d, sizeof(d));
    report_era_short(fy, era, sizeof(era));
    o = report_add(v, "as_of_options");
    if (!o) return;
    report_set(o, "value", d);
    if (pg->lang == REPORT_LANG_EN) report_setf(o, "label", "End of FY%d (%s): %s", fy, era, d);
    else report_setf(o, "label", "%s年度末（%s）", era, d);
    bool sel = pg->has_as_of && pg->as_of == end;
    listed = listed || sel;
    report_set_bool(o, "selected", sel);
  }
  if (pg->has_as_of && !listed) {
    char d[16];
    kpi_day_format(pg->as_of, d, sizeof(d));
    o = report_add(v, "as_of_options");
    if (!o) return;
    report_set(o, "value", d);
    report_set(o, "label", d);
    report_set_bool(o, "selected", true);
  }
}

/* Reads one row of SQL_TABLE into an attainment of M: recomputed at PG's date with the
 * evaluator's rules, or, for the latest page, the evaluator's own current row when there is
 * one. */
static void row_attainment(const page *pg, const kpi_measure *m, const PGresult *res, int r,
                           kpi_attainment *a, bool *from_row, kpi_day *evaluated_on,
                           bool *has_last, kpi_day *last_day) {
  int c_last = PQfnumber(res, "last_day"), c_rstatus = PQfnumber(res, "row_status");
  kpi_aggregate agg;
  memset(&agg, 0, sizeof(agg));
  if (r >= 0) {
    kpi_aggregate_cols ac = kpi_aggregate_cols_find(res);
    kpi_aggregate_read(res, r, &ac, &agg);
  }
  *has_last = r >= 0 && !PQgetisnull(res, r, c_last);
  if (*has_last) *last_day = (kpi_day)atoi(PQgetvalue(res, r, c_last));
  kpi_attainment_eval(m, &agg, pg->as_of, pg->ctx->cfg.lag_ratio, a);
  *from_row = false;
  *evaluated_on = pg->as_of;
  kpi_status st;
  if (!pg->has_as_of && r >= 0 && !PQgetisnull(res, r, c_rstatus) &&
      kpi_status_parse(PQgetvalue(res, r, c_rstatus), &st) == 0) {
    /* The evaluator's figures win on the latest page: they are what its alerts said. */
    int c_v = PQfnumber(res, "row_value"), c_p = PQfnumber(res, "row_progress"),
        c_e = PQfnumber(res, "row_expected"), c_s = PQfnumber(res, "row_stale"),
        c_asof = PQfnumber(res, "row_as_of");
    a->status = st;
    a->has_value = a->has_progress = !PQgetisnull(res, r, c_p) && !PQgetisnull(res, r, c_v);
    if (a->has_value) {
      a->value = strtod(PQgetvalue(res, r, c_v), NULL);
      a->progress = strtod(PQgetvalue(res, r, c_p), NULL);
    }
    a->expected = strtod(PQgetvalue(res, r, c_e), NULL);
    a->stale = PQgetvalue(res, r, c_s)[0] == 't';
    *evaluated_on = (kpi_day)atoi(PQgetvalue(res, r, c_asof));
    *from_row = true;
  }
}

static void fmt_day(kpi_day d, char *buf, size_t size) { kpi_day_format(d, buf, size); }

static void fmt_pct(bool has, double p, char *buf, size_t size) {
  if (!has || !isfinite(p)) snprintf(buf, size, "—");
  else snprintf(buf, size, "%.0f%%", round(p * 100) == 0 ? 0.0 : round(p * 100));
}

/* The fields of one table row, shared by the HTML table, the measure page and the CSV. */
typedef struct {
  char goal[16], baseline[64], baseline_fy[16], target[64], target_fy[16], actual[64],
      observed[16], progress[16], expected[16], last[16], grade[2];
  char baseline_num[48], target_num[48], actual_num[48];
} row_text;

static void row_fill(const page *pg, const kpi_measure *m, const kpi_attainment *a,
                     bool has_last, kpi_day last_day, const PGresult *res, int r, row_text *t) {
  snprintf(t->goal, sizeof(t->goal), "%d", m->goal);
  report_value(m, m->baseline, pg->lang, t->baseline, sizeof(t->baseline));
  report_value(m, m->target, pg->lang, t->target, sizeof(t->target));
  report_era_short(m->baseline_fy, t->baseline_fy, sizeof(t->baseline_fy));
  report_era_short(m->target_fy, t->target_fy, sizeof(t->target_fy));
  report_num(m->baseline, t->baseline_num, sizeof(t->baseline_num));
  report_num(m->target, t->target_num, sizeof(t->target_num));
  if (a->has_value) {
    report_value(m, a->value, pg->lang, t->actual, sizeof(t->actual));
    report_num(a->value, t->actual_num, sizeof(t->actual_num));
  } else {
    snprintf(t->actual, sizeof(t->actual), "—");
    t->actual_num[0] = '\0';
  }
  t->observed[0] = '\0';
  int c_ld = res ? PQfnumber(res, "latest_day") : -1;
  if (res && r >= 0 && c_ld >= 0 && !PQgetisnull(res, r, c_ld))
    fmt_day((kpi_day)atoi(PQgetvalue(res, r, c_ld)), t->observed, sizeof(t->observed));
  fmt_pct(a->has_progress, a->progress, t->progress, sizeof(t->progress));
  fmt_pct(true, a->expected, t->expected, sizeof(t->expected));
  t->last[0] = '\0';
  if (has_last) fmt_day(last_day, t->last, sizeof(t->last));
  t->grade[0] = report_grade(a);
  t->grade[1] = '\0';
}

static void set_status(report_view *v, const page *pg, const kpi_attainment *a) {
  report_set(v, "status", kpi_status_name(a->status));
  report_set(v, "status_word", report_status_word(a->status, pg->lang));
  report_set(v, "symbol", report_status_symbol(a->status));
  report_set_bool(v, "stale", a->stale);
}

/* ---- GET / and GET /report.csv ---- */

/* One line of the table (GET / and the CSV): the catalog's I-th measure in the plan's order,
 * its result row R (-1: none) and its attainment as row_attainment reads it. */
typedef struct {
  const kpi_measure *m;
  int r;
  kpi_attainment a;
  bool from_row, has_last;
  kpi_day ev_on, last;
} table_row;

static void table_row_at(page *pg, const PGresult *res, const int *row_of, size_t i,
                         table_row *out) {
  report_ctx *ctx = pg->ctx;
  out->m = ctx->order[i];
  out->r = row_of[out->m - ctx->catalog->measures];
  row_attainment(pg, out->m, res, out->r, &out->a, &out->from_row, &out->ev_on, &out->has_last,
                 &out->last);
}

static void render_csv(page *pg, const PGresult *res, const int *row_of) {
  report_ctx *ctx = pg->ctx;
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_adds(&b, REPORT_CSV_BOM);
  bool en = pg->lang == REPORT_LANG_EN;
  const char *head_ja[] = {"基本目標", "基本目標名", "事業", "具体的な施策", "指標", "単位",
                           "基準値年度", "基準値", "目標値年度", "目標値", "実績値", "観測日",
                           "進捗率(%)", "期待ペース(%)", "状況", "評価", "最終報告日",
                           "報告遅延", "基準日", "施策ID"};
  const char *head_en[] = {"Goal", "Goal name", "Program", "Measure", "Indicator", "Unit",
                           "Baseline FY", "Baseline", "Target FY", "Target", "Actual",
                           "Observed", "Progress (%)", "Expected pace (%)", "Status", "Grade",
                           "Last report", "Report overdue", "As of", "Measure ID"};
  report_csv_row(&b, en ? head_en : head_ja, 20);
  for (size_t i = 0; i < ctx->n_order; i++) {
    table_row tr;
    table_row_at(pg, res, row_of, i, &tr);
    const kpi_measure *m = tr.m;
    const kpi_attainment *a = &tr.a;
    row_text t;
    row_fill(pg, m, a, tr.has_last, tr.last, res, tr.r, &t);
    char prog[32] = "", exp[32], asof[16];
    if (a->has_progress) snprintf(prog, sizeof(prog), "%.1f", a->progress * 100);
    snprintf(exp, sizeof(exp), "%.1f", a->expected * 100);
    fmt_day(tr.ev_on, asof, sizeof(asof));
    const char *f[20] = {t.goal, m->goal_name, m->program, m->name, m->indicator, m->unit,
                         t.baseline_fy, t.baseline_num, t.target_fy, t.target_num, t.actual_num,
                         t.observed, prog, exp, report_status_word(a->status, pg->lang),
                         t.grade, t.last, a->stale ? (en ? "yes" : "あり") : "", asof, m->id};
    report_csv_row(&b, f, 20);
  }
  if (b.oom) respond_error(pg, 503, "out of memory");
  else {
    char disp[160];
    csv_headers(pg, disp, sizeof(disp));
    cache_put(pg, b.s, b.len);
    kpi_http_respond(pg->http, 200, CSV_TYPE, b.s, b.len, disp);
  }
  kpi_buf_free(&b);
}

/* The figures of a row that the table and the measure page both show. */
static void set_figures(report_view *v, const row_text *t) {
  report_set(v, "baseline", t->baseline);
  report_set(v, "baseline_fy", t->baseline_fy);
  report_set(v, "target", t->target);
  report_set(v, "target_fy", t->target_fy);
  report_set(v, "actual", t->actual);
  report_set(v, "progress", t->progress);
  report_set(v, "expected", t->expected);
  report_set(v, "grade", t->grade);
  report_set(v, "last", t->last);
}

/* One row of the KPI table: measure M's numbers at the page's date (row R of RES) and its
 * link, which keeps the page's query Q. */
static void set_index_row(page *pg, report_view *row, const kpi_measure *m,
                          const kpi_attainment *a, bool has_last, kpi_day last,
                          const PGresult *res, int r, const char *q) {
  row_text t;
  row_fill(pg, m, a, has_last, last, res, r, &t);
  report_set(row, "id", m->id);
  report_setf(row, "href", "/measures/%s%s", m->id, q);
  report_set(row, "program", m->program);
  report_set(row, "name", m->name);
  report_set(row, "indicator", m->indicator);
  set_figures(row, &t);
  report_set(row, "observed", t.observed);
  set_status(row, pg, a);
}

/* How many measures have each status, best first, no data last. */
static void set_status_counts(page *pg, report_view *v, const size_t *counts) {
  for (int s = KPI_STATUS_ACHIEVED;; s = s == KPI_STATUS_ACHIEVED ? KPI_STATUS_ON_TRACK
                                        : s == KPI_STATUS_ON_TRACK ? KPI_STATUS_LAGGING
                                        : s == KPI_STATUS_LAGGING  ? KPI_STATUS_FAILED
                                        : s == KPI_STATUS_FAILED   ? KPI_STATUS_NO_DATA
                                                                   : -1) {
    if (s < 0) break;
    report_view *c = report_add(v, "counts");
    if (!c) break;
    report_set(c, "status", kpi_status_name((kpi_status)s));
    report_set(c, "word", report_status_word((kpi_status)s, pg->lang));
    report_set(c, "symbol", report_status_symbol((kpi_status)s));
    report_setf(c, "n", "%zu", counts[s]);
  }
}

/* The grades' meanings, the table's legend. */
static void set_grades(page *pg, report_view *v) {
  for (char g = 'A'; g <= 'E'; g++) {
    report_view *gv = report_add(v, "grades");
    if (!gv) break;
    char gs[2] = {g == 'E' ? '-' : g, 0};
    report_set(gv, "grade", gs);
    report_set(gv, "meaning", report_grade_meaning(gs[0], pg->lang));
  }
}

static void render_index(page *pg, const PGresult *res, const int *row_of) {
  report_ctx *ctx = pg->ctx;
  report_view *v = report_view_new();
  if (!v) {
    respond_error(pg, 503, "out of memory");
    return;
  }
  set_common(pg, v, report_label("l_table", pg->lang));
  set_as_of_options(pg, v);
  char q[64];
  link_query(pg, true, q, sizeof(q));
  size_t counts[KPI_STATUS_FAILED + 1] = {0}, n_stale = 0;
  report_view *goal = NULL;
  int cur_goal = -1;
  kpi_day evaluated = 0;
  bool mixed = false, any_row = false;
  report_set_list(v, "goals");
  for (size_t i = 0; i < ctx->n_order; i++) {
    table_row tr;
    table_row_at(pg, res, row_of, i, &tr);
    const kpi_measure *m = tr.m;
    if (tr.from_row) {
      if (any_row && tr.ev_on != evaluated) mixed = true;
      if (!any_row || tr.ev_on > evaluated) evaluated = tr.ev_on;
      any_row = true;
    }
    counts[tr.a.status]++;
    n_stale += tr.a.stale;
    if (!goal || m->goal != cur_goal) {
      goal = report_add(v, "goals");
      if (!goal) break;
      cur_goal = m->goal;
      report_setf(goal, "goal_label", pg->lang == REPORT_LANG_EN ? "Basic goal %d" : "基本目標%d",
                  m->goal);
      report_set(goal, "goal_name", m->goal_name ? m->goal_name : "");
    }
    report_view *row = report_add(goal, "rows");
    if (!row) break;
    set_index_row(pg, row, m, &tr.a, tr.has_last, tr.last, res, tr.r, q);
  }
  set_status_counts(pg, v, counts);
  report_setf(v, "n_stale", "%zu", n_stale);
  char d[16] = "";
  if (any_row) fmt_day(evaluated, d, sizeof(d));
  report_set(v, "evaluated_on", d);
  report_set_bool(v, "evaluated_mixed", mixed);
  set_grades(pg, v);
  respond_page(pg, "index.html", v);
  report_view_free(v);
}

static void on_pg_table(kpi_pgasync *db, const PGresult *res, void *arg);
static void on_pg_latest(kpi_pgasync *db, const PGresult *res, void *arg);

/* Sends a query on the least busy connection of the pool (report_db.c). */
static int db_query(report_ctx *ctx, const char *sql, int n, const char *const *vals,
                    kpi_pgasync_result_cb cb, void *arg) {
  kpi_pgasync *db = report_db_pick(ctx);
  return db ? kpi_pgasync_query(db, sql, n, vals, cb, arg) : KPI_PGASYNC_EDOWN;
}

/* SQL_LATEST for the whole catalog. */
static int query_latest_rows(page *pg) {
  report_ctx *ctx = pg->ctx;
  kpi_buf ids = KPI_BUF_INIT;
  kpi_buf_arr_begin(&ids);
  for (size_t i = 0; i < ctx->catalog->n_measures; i++)
    kpi_buf_arr_str(&ids, ctx->catalog->measures[i].id);
  kpi_buf_arr_end(&ids);
  char bound[40];
  day_start(pg->as_of + 1, bound, sizeof(bound));
  const char *vals[2] = {ids.s, bound};
  int rc = ids.oom ? KPI_PGASYNC_ENOMEM : db_query(ctx, SQL_LATEST, 2, vals, on_pg_latest, pg);
  kpi_buf_free(&ids);
  return rc;
}

static void on_pg_version(kpi_pgasync *db, const PGresult *res, void *arg);

/* The latest / or CSV: the version first (SQL_VERSION), then the cache or SQL_LATEST. */
static int query_latest(page *pg) {
  return db_query(pg->ctx, SQL_VERSION, 0, NULL, on_pg_version, pg);
}

/* The arrays of SQL_TABLE for the whole catalog, or for one measure M. */
static int query_table(page *pg, const kpi_measure *one) {
  report_ctx *ctx = pg->ctx;
  kpi_buf ids = KPI_BUF_INIT, wf = KPI_BUF_INIT, wt = KPI_BUF_INIT, ratio = KPI_BUF_INIT;
  kpi_buf_arr_begin(&ids);
  kpi_buf_arr_begin(&wf);
  kpi_buf_arr_begin(&wt);
  kpi_buf_arr_begin(&ratio);
  for (size_t i = 0; i < ctx->catalog->n_measures; i++) {
    const kpi_measure *m = one ? one : &ctx->catalog->measures[i];
    kpi_buf_arr_str(&ids, m->id);
    char n[16];
    if (m->kind == KPI_KIND_CUMULATIVE) {
      snprintf(n, sizeof(n), "%d", m->window_from_fy);
      kpi_buf_arr_raw(&wf, n);
      snprintf(n, sizeof(n), "%d", m->window_to_fy);
      kpi_buf_arr_raw(&wt, n);
    } else {
      kpi_buf_arr_null(&wf);
      kpi_buf_arr_null(&wt);
    }
    kpi_buf_arr_raw(&ratio, m->kind == KPI_KIND_RATIO ? "t" : "f");
    if (one) break;
  }
  kpi_buf_arr_end(&ids);
  kpi_buf_arr_end(&wf);
  kpi_buf_arr_end(&wt);
  kpi_buf_arr_end(&ratio);
  kpi_aggregate_bounds b;
  kpi_aggregate_bounds_of(pg->as_of, &b);
  const char *vals[10] = {ids.s,   wf.s,          wt.s,    b.fiscal_year,
                          b.end_at, b.month_start_at, ratio.s, b.month_start,
                          b.day,    pg->has_as_of ? "f" : "t"};
  int rc = ids.oom || wf.oom || wt.oom || ratio.oom
               ? KPI_PGASYNC_ENOMEM
               : db_query(ctx, SQL_TABLE, 10, vals, on_pg_table, pg);
  kpi_buf_free(&ids);
  kpi_buf_free(&wf);
  kpi_buf_free(&wt);
  kpi_buf_free(&ratio);
  return rc;
}

static void on_pg_detail(kpi_pgasync *db, const PGresult *res, void *arg);

static void db_failed(page *pg, const PGresult *res, const char *what) {
  kpi_metrics_inc(pg->ctx->m_db_errors);
  kpi_log(KPI_LOG_WARN, "query_failed", "%s: %s", what,
          res ? PQresultErrorMessage(res) : "connection lost");
  respond_error(pg, 503, pg->lang == REPORT_LANG_EN ? "The database is unavailable; try again."
                                                : "データベースに接続できません。しばらくしてから再度お試しください。");
}

/* A failed query ends its page: the error answer, the page freed. Returns whether RES holds
 * rows to render. */
static bool page_result_ok(page *pg, const PGresult *res, const char *what) {
  if (res && PQresultStatus(res) == PGRES_TUPLES_OK) return true;
  pg->ctx->pending--;
  db_failed(pg, res, what);
  page_done(pg);
  return false;
}

/* Maps each catalog measure to its row of RES (-1: none, as for a measure added by a reload
 * between the query and its answer) and renders the table or the CSV. With MISSING (the
 * latest rows), renders nothing and returns 0 with *MISSING set when a measure has no row.
 * Returns -1 after answering 503 when out of memory. Leaves PG to the caller. */
static int render_table(page *pg, const PGresult *res, bool *missing) {
  report_ctx *ctx = pg->ctx;
  size_t n = ctx->catalog->n_measures;
  int *row_of = malloc((n ? n : 1) * sizeof(int));
  if (!row_of) {
    respond_error(pg, 503, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n; i++) row_of[i] = -1;
  int c_id = PQfnumber(res, "id");
  for (int r = 0; r < PQntuples(res); r++) {
    const kpi_measure *m = kpi_catalog_measure(ctx->catalog, PQgetvalue(res, r, c_id));
    if (m) row_of[m - ctx->catalog->measures] = r;
  }
  if (missing) {
    *missing = false;
    for (size_t i = 0; i < n && !*missing; i++) *missing = row_of[i] < 0;
  }
  if (!missing || !*missing) {
    if (pg->ep == REPORT_EP_CSV) render_csv(pg, res, row_of);
    else render_index(pg, res, row_of);
  }
  free(row_of);
  return 0;
}

static void on_pg_table(kpi_pgasync *db, const PGresult *res, void *arg) {
  (void)db;
  page *pg = arg;
  report_ctx *ctx = pg->ctx;
  if (!page_result_ok(pg, res, "table")) return;
  if (pg->ep == REPORT_EP_MEASURE) {
    const kpi_measure *m = kpi_catalog_measure(ctx->catalog, pg->measure_id);
    if (!m) {
      ctx->pending--;
      respond_error(pg, 404, "no such measure");
      page_done(pg);
      return;
    }
    row_attainment(pg, m, res, PQntuples(res) > 0 ? 0 : -1, &pg->att, &pg->att_from_row,
                   &pg->evaluated_on, &pg->has_last, &pg->last_day);
    char bound[40], wf[16] = "", wt[16] = "", d[16];
    day_start(pg->as_of + 1, bound, sizeof(bound));
    if (m->kind == KPI_KIND_CUMULATIVE) {
      snprintf(wf, sizeof(wf), "%d", m->window_from_fy);
      snprintf(wt, sizeof(wt), "%d", m->window_to_fy);
    }
    fmt_day(pg->as_of, d, sizeof(d));
    const char *vals[5] = {m->id, bound, *wf ? wf : NULL, *wt ? wt : NULL, d};
    if (db_query(ctx, SQL_DETAIL, 5, vals, on_pg_detail, pg) != 0) {
      ctx->pending--;
      db_failed(pg, NULL, "detail");
      page_done(pg);
    }
    return;
  }
  ctx->pending--;
  render_table(pg, res, NULL);
  page_done(pg);
}

static void on_pg_version(kpi_pgasync *db, const PGresult *res, void *arg) {
  (void)db;
  page *pg = arg;
  report_ctx *ctx = pg->ctx;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    ctx->pending--;
    db_failed(pg, res, "version");
    page_done(pg);
    return;
  }
  snprintf(pg->version, sizeof(pg->version), "%s", PQgetvalue(res, 0, 0));
  const cache_entry *e = cache_get(pg);
  if (e) {
    ctx->pending--;
    if (pg->ep == REPORT_EP_CSV) {
      char disp[160];
      csv_headers(pg, disp, sizeof(disp));
      kpi_http_respond(pg->http, 200, CSV_TYPE, e->body, e->len, disp);
    } else {
      kpi_http_respond(pg->http, 200, HTML_TYPE, e->body, e->len, SECURITY_HEADERS NO_STORE);
    }
    page_done(pg);
    return;
  }
  /* A version longer than the buffer is cut: never stored (it could not be compared). */
  pg->cache_store = strlen(PQgetvalue(res, 0, 0)) < sizeof(pg->version);
  int rc = query_latest_rows(pg);
  if (rc != 0) {
    ctx->pending--;
    db_failed(pg, NULL, kpi_pgasync_strerror(rc));
    page_done(pg);
  }
}

/* The latest page's rows. A catalog measure without an attainment row (never evaluated yet,
 * e.g. just added by a reload) is computed at today's date on that page: then, and only then,
 * the page is asked again through SQL_TABLE, which recomputes what has no row. */
static void on_pg_latest(kpi_pgasync *db, const PGresult *res, void *arg) {
  (void)db;
  page *pg = arg;
  report_ctx *ctx = pg->ctx;
  if (!page_result_ok(pg, res, "latest")) return;
  bool missing = false;
  if (render_table(pg, res, &missing) == 0 && missing) {
    int rc = query_table(pg, NULL);
    if (rc == 0) return; /* still pending */
    db_failed(pg, NULL, kpi_pgasync_strerror(rc));
  }
  ctx->pending--;
  page_done(pg);
}

/* ---- GET /measures/{id} ---- */

static double jnum(const cJSON *o, const char *k, bool *has) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
  if (has) *has = cJSON_IsNumber(x);
  return cJSON_IsNumber(x) ? x->valuedouble : 0;
}

static const char *jstr(const cJSON *o, const char *k) {
  const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, k));
  return s ? s : "";
}

/* The chart's series: readings for level, maintain and milestone; the running total inside
 * the window for cumulative; one point per FY (at its end, or the evaluation date in the
 * current FY) for ratio. Returns the number of points written to PTS (at most CAP). */
static size_t chart_points(const page *pg, const kpi_measure *m, const cJSON *doc,
                           report_point *pts, size_t cap) {
  size_t n = 0;
  const cJSON *it;
  if (m->kind == KPI_KIND_RATIO) {
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "ratios")) {
      if (n == cap) break;
      int fy = (int)jnum(it, "fy", NULL);
      kpi_day end = kpi_fy_last_day(fy);
      pts[n].day = end < pg->as_of ? end : pg->as_of;
      pts[n++].value = jnum(it, "ratio", NULL);
    }
    return n;
  }
  kpi_day from = 0, to = 0;
  bool window = kpi_attainment_window(m, pg->as_of, &from, &to);
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "readings")) {
    if (n == cap) break;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "retracted"))) continue;
    kpi_day day = (kpi_day)jnum(it, "day", NULL);
    if (m->kind == KPI_KIND_CUMULATIVE) {
      if (!window || day < from || day > to) continue;
      pts[n].day = day;
      pts[n++].value = jnum(it, "running", NULL);
    } else {
      pts[n].day = day;
      pts[n++].value = jnum(it, "value", NULL);
    }
  }
  return n;
}

static void set_chart(page *pg, report_view *v, const kpi_measure *m, const cJSON *doc) {
  size_t cap = 1000;
  report_point *pts = malloc(cap * sizeof(*pts));
  if (!pts) return;
  size_t n = chart_points(pg, m, doc, pts, cap);
  report_lang l = pg->lang;
  char unit[32];
  report_value(m, 0, l, unit, sizeof(unit)); /* "0名": keep what follows the number */
  const char *suffix = m->kind == KPI_KIND_MILESTONE ? "" : unit + 1;
  char desc[512];
  const char *series = m->kind == KPI_KIND_CUMULATIVE ? report_label("l_cumulative", l)
                       : m->kind == KPI_KIND_RATIO    ? report_label("l_ratio", l)
                                                      : report_label("l_actual", l);
  snprintf(desc, sizeof(desc),
           l == REPORT_LANG_EN ? "%s (%zu points) against the straight expected pace from the "
                             "baseline to the target."
                           : "%s（%zu 点）と、基準値から目標値までの期待ペース（直線）。",
           series, n);
  report_chart_spec spec = {
      .title = m->indicator,
      .desc = desc,
      .points = pts,
      .n_points = n,
      .start = pg->att.start,
      .start_value = m->kind == KPI_KIND_CUMULATIVE  ? 0
                     : m->kind == KPI_KIND_MILESTONE ? 0
                                                     : m->baseline,
      .due = pg->att.due,
      .target = m->kind == KPI_KIND_MAINTAIN ? m->baseline : m->target,
      .as_of = pg->as_of,
      .unit = suffix,
      .l_target = report_label("l_target", l),
      .l_due = report_label("l_due", l),
      .l_pace = report_label("l_pace", l),
      .l_actual = series,
      .l_as_of = report_label("l_as_of", l),
      .era_labels_en = l == REPORT_LANG_EN,
  };
  kpi_buf svg = KPI_BUF_INIT;
  if (report_chart_svg(&spec, &svg) == 0) report_set_raw(v, "chart", kpi_buf_str(&svg));
  kpi_buf_free(&svg);
  free(pts);
}

/* The measure's identity, its numbers at the page's date and its status. */
static void set_measure_head(page *pg, report_view *v, const kpi_measure *m) {
  report_lang l = pg->lang;
  set_common(pg, v, m->name);
  set_as_of_options(pg, v);
  report_setf(v, "form_action", "/measures/%s", m->id);
  report_setf(v, "goal_label", l == REPORT_LANG_EN ? "Basic goal %d" : "基本目標%d", m->goal);
  report_set(v, "goal_name", m->goal_name ? m->goal_name : "");
  report_set(v, "program", m->program);
  report_set(v, "name", m->name);
  report_set(v, "indicator", m->indicator);
  report_set(v, "id", m->id);
  char key[32];
  snprintf(key, sizeof(key), "kind_%s", kpi_kind_name(m->kind));
  report_set(v, "kind", report_label(key, l));
  report_set(v, "owner", m->owner_dept && m->owner_dept->name ? m->owner_dept->name : m->owner);
  row_text t;
  row_fill(pg, m, &pg->att, pg->has_last, pg->last_day, NULL, -1, &t);
  set_figures(v, &t);
  report_set(v, "grade_meaning", report_grade_meaning(t.grade[0], l));
  char d[16];
  fmt_day(pg->att.due, d, sizeof(d));
  report_set(v, "due", d);
  fmt_day(pg->evaluated_on, d, sizeof(d));
  report_set(v, "evaluated_on", d);
  set_status(v, pg, &pg->att);
}

/* The name of department ID in the catalog, else the id. */
static const char *dept_name(const page *pg, const char *id) {
  const kpi_department *dep = kpi_catalog_department(pg->ctx->catalog, id);
  return dep && dep->name ? dep->name : id;
}

/* A reading's marks (docs/corrections.md): a retracted one is struck through with "取消:
 * reason（department, when）", a correction says so. The record is public: a retracted reading
 * is shown, never hidden. */
static void set_reading_marks(const page *pg, report_view *r, const cJSON *it) {
  report_lang l = pg->lang;
  bool retracted = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "retracted"));
  report_set_bool(r, "retracted", retracted);
  report_set_bool(r, "correction",
                  cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "correction")));
  if (retracted)
    report_setf(r, "retraction", "%s: %s%s%s, %s%s", report_label("l_retracted", l),
                jstr(it, "retraction_reason"), l == REPORT_LANG_EN ? " (" : "（",
                dept_name(pg, jstr(it, "retracted_by")), jstr(it, "retracted_on"),
                l == REPORT_LANG_EN ? ")" : "）");
}

/* The measure's latest acknowledgement (docs/report.md "Measure page"): the note, who wrote it,
 * when, and the last day of the quiet period it asked for. */
static void set_ack(page *pg, report_view *v, const cJSON *doc) {
  const cJSON *ack = cJSON_GetObjectItemCaseSensitive(doc, "ack");
  bool has = cJSON_IsObject(ack);
  report_set_bool(v, "has_ack", has);
  if (!has) return;
  report_set(v, "ack_note", jstr(ack, "note"));
  report_set(v, "ack_department", dept_name(pg, jstr(ack, "department")));
  report_set(v, "ack_on", jstr(ack, "on"));
  report_set(v, "ack_until", jstr(ack, "until"));
}

/* Readings, newest first, as people read a ledger of reports. */
static void set_readings(page *pg, report_view *v, const kpi_measure *m, const cJSON *rs) {
  report_lang l = pg->lang;
  char d[16];
  report_set_list(v, "readings");
  for (int i = cJSON_GetArraySize(rs) - 1; i >= 0; i--) {
    const cJSON *it = cJSON_GetArrayItem(rs, i);
    report_view *r = report_add(v, "readings");
    if (!r) break;
    fmt_day((kpi_day)jnum(it, "day", NULL), d, sizeof(d));
    report_set(r, "observed", d);
    char val[64];
    if (m->kind == KPI_KIND_RATIO) report_num(jnum(it, "value", NULL), val, sizeof(val));
    else report_value(m, jnum(it, "value", NULL), l, val, sizeof(val));
    report_set(r, "value", val);
    const char *comp = jstr(it, "component");
    report_set(r, "component", strcmp(comp, "numerator") == 0     ? report_label("l_numerator", l)
                           : strcmp(comp, "denominator") == 0 ? report_label("l_denominator", l)
                                                              : "");
    report_set(r, "department", dept_name(pg, jstr(it, "department")));
    report_set(r, "received", jstr(it, "received"));
    report_set(r, "note", jstr(it, "note"));
    set_reading_marks(pg, r, it);
  }
}

/* The attainment history, as the evaluator recorded it day by day. */
static void set_history(page *pg, report_view *v, const kpi_measure *m, const cJSON *doc) {
  report_lang l = pg->lang;
  const cJSON *it;
  report_set_list(v, "history");
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "history")) {
    report_view *h = report_add(v, "history");
    if (!h) break;
    kpi_attainment a;
    memset(&a, 0, sizeof(a));
    bool hv, hp;
    a.value = jnum(it, "value", &hv);
    a.progress = jnum(it, "progress", &hp);
    a.has_value = hv;
    a.has_progress = hp;
    a.expected = jnum(it, "expected", NULL);
    if (kpi_status_parse(jstr(it, "status"), &a.status) != 0) a.status = KPI_STATUS_NO_DATA;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "stale");
    a.stale = cJSON_IsTrue(st);
    report_set(h, "as_of", jstr(it, "as_of"));
    char val[64] = "—", p[16], e[16];
    if (hv) report_value(m, a.value, l, val, sizeof(val));
    fmt_pct(hp, a.progress, p, sizeof(p));
    fmt_pct(true, a.expected, e, sizeof(e));
    report_set(h, "value", val);
    report_set(h, "progress", p);
    report_set(h, "expected", e);
    set_status(h, pg, &a);
  }
}

/* The alerts sent about the measure and how far their mails got. */
static void set_notices(page *pg, report_view *v, const cJSON *doc) {
  report_lang l = pg->lang;
  char key[32];
  const cJSON *it;
  report_set_list(v, "notices");
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(doc, "notices")) {
    report_view *nv = report_add(v, "notices");
    if (!nv) break;
    report_set(nv, "when", jstr(it, "created"));
    snprintf(key, sizeof(key), "notice_%s", jstr(it, "alert_type"));
    const char *type = report_label(key, l);
    kpi_status st;
    const char *stw = kpi_status_parse(jstr(it, "status"), &st) == 0
                          ? report_status_word(st, l)
                          : (strcmp(jstr(it, "status"), "stale") == 0 ? report_label("l_stale", l)
                                                                       : jstr(it, "status"));
    report_setf(nv, "notice", "%s（%s）", *type ? type : jstr(it, "alert_type"), stw);
    int recipients = (int)jnum(it, "recipients", NULL), sent = (int)jnum(it, "sent", NULL),
        dead = (int)jnum(it, "dead", NULL);
    report_setf(nv, "delivery", "%s %d/%d%s%s",
                report_label(sent == recipients ? "l_delivered" : "l_pending", l), sent, recipients,
                dead ? ", " : "", dead ? report_label("l_dead", l) : "");
    report_set_bool(nv, "delivered", sent == recipients);
  }
}

static void render_measure(page *pg, const kpi_measure *m, const cJSON *doc) {
  report_view *v = report_view_new();
  if (!v) {
    respond_error(pg, 503, "out of memory");
    return;
  }
  set_measure_head(pg, v, m);
  report_set_raw(v, "chart", "");
  set_chart(pg, v, m, doc);
  const cJSON *rs = cJSON_GetObjectItemCaseSensitive(doc, "readings");
  set_readings(pg, v, m, rs);
  report_set_bool(v, "is_ratio", m->kind == KPI_KIND_RATIO);
  set_history(pg, v, m, doc);
  set_notices(pg, v, doc);
  set_ack(pg, v, doc);
  report_set_bool(v, "has_readings", cJSON_GetArraySize(rs) > 0);
  report_set_bool(v, "has_history",
                  cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "history")) > 0);
  report_set_bool(v, "has_notices",
                  cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(doc, "notices")) > 0);
  respond_page(pg, "measure.html", v);
  report_view_free(v);
}

static void on_pg_detail(kpi_pgasync *db, const PGresult *res, void *arg) {
  (void)db;
  page *pg = arg;
  report_ctx *ctx = pg->ctx;
  ctx->pending--;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    db_failed(pg, res, "detail");
    page_done(pg);
    return;
  }
  const kpi_measure *m = kpi_catalog_measure(ctx->catalog, pg->measure_id);
  const char *text = PQgetvalue(res, 0, 0);
  cJSON *doc = kpi_json_parse_one(text, strlen(text), false);
  if (!m || !doc) respond_error(pg, m ? 503 : 404, m ? "out of memory" : "no such measure");
  else render_measure(pg, m, doc);
  cJSON_Delete(doc);
  page_done(pg);
}

/* ---- dispatch ---- */

static void serve_static(page *pg) {
  const char *name = kpi_http_request_path(pg->http) + strlen("/static/");
  const report_asset *a = NULL;
  size_t n = strlen(name);
  /* Only the stylesheet(s) of static/; templates are never served. */
  if (n > 4 && strcmp(name + n - 4, ".css") == 0 && !strchr(name, '/')) a = report_asset_find(name);
  if (!a) {
    respond_error(pg, 404, "not found");
    return;
  }
  kpi_http_respond(pg->http, 200, "text/css; charset=utf-8", a->data, a->len,
                   "X-Content-Type-Options: nosniff\r\nCache-Control: public, max-age=3600\r\n");
}

/* Reads ?lang and ?as_of. Returns 0, or -1 after answering 400. */
static int read_params(page *pg) {
  const char *q = kpi_http_request_query(pg->http);
  char val[32];
  int n = report_query_param(q, "lang", val, sizeof(val));
  pg->lang = n > 0 && strcmp(val, "en") == 0 ? REPORT_LANG_EN : REPORT_LANG_JA;
  if (n == -2 || (n >= 0 && strcmp(val, "en") != 0 && strcmp(val, "ja") != 0 && n != 0)) {
    respond_error(pg, 400, "lang: expected ja or en");
    return -1;
  }
  pg->as_of = today_jst();
  n = report_query_param(q, "as_of", val, sizeof(val));
  if (n == 0 || n == -1) return 0; /* absent, or the selector's "latest" */
  kpi_day d;
  int y, mo, dd;
  if (n != 10 || kpi_time_parse(val, NULL, &d) != 0 || (kpi_day_to_ymd(d, &y, &mo, &dd), y < 2000) ||
      y > 2100) {
    respond_error(pg, 400, pg->lang == REPORT_LANG_EN
                               ? "as_of: expected a date YYYY-MM-DD between 2000 and 2100"
                               : "as_of は 2000〜2100 年の YYYY-MM-DD 形式の日付で指定してください。");
    return -1;
  }
  pg->has_as_of = true;
  pg->as_of = d;
  return 0;
}

void report_on_http_request(kpi_http_request *req, void *opaque) {
  report_ctx *ctx = opaque;
  int route = kpi_http_request_route(req);
  page *pg = calloc(1, sizeof(*pg));
  if (!pg) {
    kpi_http_respond_problem(req, 503, NULL, "out of memory", NULL);
    return;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  pg->start_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  pg->ctx = ctx;
  pg->http = req;
  pg->ep = route >= 0 && route < REPORT_EP_COUNT ? (report_endpoint)route : REPORT_EP_INDEX;
  switch (pg->ep) {
  case REPORT_EP_HEALTHZ:
    kpi_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    page_done(pg);
    return;
  case REPORT_EP_READYZ: {
    int db = report_db_up(ctx);
    int ready = db && !ctx->shutdown.stopping;
    char body[96];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"database\":%s}",
                     ready ? "ready" : "not_ready", db ? "true" : "false");
    kpi_http_respond(req, ready ? 200 : 503, "application/json", body, (size_t)n,
                     ready ? NULL : "Retry-After: 1\r\n");
    page_done(pg);
    return;
  }
  case REPORT_EP_METRICS:
    kpi_http_respond_metrics(req, &ctx->http, ctx->metrics);
    page_done(pg);
    return;
  case REPORT_EP_STATIC:
    serve_static(pg);
    page_done(pg);
    return;
  default:
    break;
  }
  if (read_params(pg) != 0) {
    page_done(pg);
    return;
  }
  const kpi_measure *one = NULL;
  if (pg->ep == REPORT_EP_MEASURE) {
    const char *id = kpi_http_request_path(req) + strlen("/measures/");
    one = kpi_json_id_valid(id) ? kpi_catalog_measure(ctx->catalog, id) : NULL;
    if (!one) {
      respond_error(pg, 404, pg->lang == REPORT_LANG_EN ? "No such measure in the plan."
                                                    : "この施策は計画にありません。");
      page_done(pg);
      return;
    }
    snprintf(pg->measure_id, sizeof(pg->measure_id), "%s", one->id);
  }
  /* Bounded: past KPI_REPORT_MAX_PENDING pages waiting for the database, refuse at once
   * rather than queue without limit. */
  if (ctx->pending >= ctx->cfg.max_pending) {
    kpi_metrics_inc(ctx->m_rejected);
    respond_error(pg, 503, "too many pages in progress; try again");
    page_done(pg);
    return;
  }
  int rc = one || pg->has_as_of ? query_table(pg, one) : query_latest(pg);
  if (rc != 0) {
    db_failed(pg, NULL, kpi_pgasync_strerror(rc));
    page_done(pg);
    return;
  }
  ctx->pending++;
}
