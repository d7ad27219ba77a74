/* api.c: the evaluator's read API (GET /v1/attainment[/{id}]), health, readiness and metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_log.h"

/* JSON is assembled by PostgreSQL (json_agg/json_build_object), so values keep their exact
 * numeric text and no hand-written JSON is needed here. */
static const char SQL_LIST[] =
    "SELECT json_build_object('plan', $1::text, 'measures',"
    " coalesce(json_agg(x ORDER BY x.measure_id), '[]'::json))::text FROM ("
    " SELECT a.measure_id, m.name, m.indicator, m.unit, m.kind, m.direction, m.owner,"
    "  m.baseline_fy, m.baseline, m.target_fy, m.target, a.as_of, a.value, a.progress,"
    "  a.expected, a.status, a.stale, a.last_observed_at, a.events, a.alert_state,"
    "  a.updated_at"
    " FROM attainment a LEFT JOIN measures m ON m.id = a.measure_id) x";

static const char SQL_ONE[] =
    "SELECT (to_jsonb(x) || jsonb_build_object('history', coalesce((SELECT json_agg(h)"
    "  FROM (SELECT id, as_of, value, progress, expected, status, stale, recorded_at"
    "   FROM attainment_history WHERE measure_id = $1 ORDER BY id DESC LIMIT 500) h),"
    "  '[]'::json)))::text FROM ("
    " SELECT a.measure_id, m.name, m.indicator, m.unit, m.kind, m.direction, m.owner,"
    "  m.baseline_fy, m.baseline, m.target_fy, m.target, a.as_of, a.value, a.progress,"
    "  a.expected, a.status, a.stale, a.last_observed_at, a.events, a.alert_state,"
    "  a.episode, a.updated_at"
    " FROM attainment a LEFT JOIN measures m ON m.id = a.measure_id"
    " WHERE a.measure_id = $1) x";

static void on_db_read(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  kpi_http_request *req = arg;
  evaluator *ev = kpi_http_request_get_user(req);
  ev->api_pending--;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "the database is unavailable", NULL,
                                "Retry-After: 1\r\n");
    return;
  }
  if (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)) {
    kpi_http_respond_problem(req, 404, NULL, "no attainment for this measure", NULL);
    return;
  }
  const char *body = PQgetvalue(res, 0, 0);
  kpi_http_respond(req, 200, "application/json", body, strlen(body), NULL);
}

static int valid_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > KPI_ID_MAX) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_' || *p == '.'))
      return 0;
  return 1;
}

static void respond_metrics(evaluator *ev, kpi_http_request *req) {
  kpi_http_respond_metrics(req, &ev->http, ev->metrics);
}

/* The server answers unknown paths (404), other methods (405 with Allow) and unknown
 * methods (501) from this table. HEAD is answered like GET; the server leaves the body out. */
const kpi_http_route ev_http_routes[EV_HTTP_N_ROUTES] = {
    {"/healthz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    {"/readyz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    {"/metrics", KPI_HTTP_GET | KPI_HTTP_HEAD},
    {"/v1/attainment", KPI_HTTP_GET | KPI_HTTP_HEAD},
    {"/v1/attainment/*", KPI_HTTP_GET | KPI_HTTP_HEAD},
};

void ev_on_http_request(kpi_http_request *req, void *opaque) {
  evaluator *ev = opaque;
  const char *path = kpi_http_request_path(req);
  if (strcmp(path, "/healthz") == 0) {
    kpi_http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    return;
  }
  if (strcmp(path, "/readyz") == 0) {
    int db = kpi_pgasync_is_up(ev->db) && kpi_pgasync_is_up(ev->aux) &&
             kpi_pgasync_is_up(ev->api);
    int ready = db && ev->broker_up && !ev->stopping;
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"database\":%s,\"broker\":%s}",
                     ready ? "ready" : "not_ready", db ? "true" : "false",
                     ev->broker_up ? "true" : "false");
    kpi_http_respond(req, ready ? 200 : 503, "application/json", body, (size_t)n,
                     ready ? NULL : "Retry-After: 1\r\n");
    return;
  }
  if (strcmp(path, "/metrics") == 0) {
    respond_metrics(ev, req);
    return;
  }
  const char *id = path + 15;
  bool list = strcmp(path, "/v1/attainment") == 0;
  if (!list && !valid_id(id)) {
    kpi_http_respond_problem(req, 404, NULL, "not a measure id", NULL);
    return;
  }
  /* Bounded: past KPI_EVALUATOR_API_MAX_PENDING queries queued or running, a read is refused
   * at once instead of queueing without limit (every queued read holds a connection and its
   * buffers, and answers later and later). Clients retry after a second. */
  if (ev->api_pending >= ev->api_max_pending) {
    kpi_metrics_inc(ev->m_api_rejected);
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "too many read requests in progress",
                                NULL, "Retry-After: 1\r\n");
    return;
  }
  kpi_http_request_set_user(req, ev);
  const char *vals[1] = {list ? ev->cat->plan_id : id};
  int rc = kpi_pgasync_query(ev->api, list ? SQL_LIST : SQL_ONE, 1, vals, on_db_read, req);
  if (rc == 0) ev->api_pending++;
  else
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "the database is unavailable", NULL,
                                "Retry-After: 1\r\n");
}

int ev_metrics_init(evaluator *ev) {
  static const double commit_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,   0.25,   0.5,   1,    2.5,   5};
  kpi_metrics *m = kpi_metrics_new();
  if (!m) return -1;
  ev->metrics = m;
  ev->m_records = kpi_metrics_counter(m, "kpi_evaluator_records_total", NULL,
                                      "Records consumed from the measurements topic.");
  ev->m_rows = kpi_metrics_counter(m, "kpi_evaluator_measurements_total", NULL,
                                   "Decoded measurements written (duplicates included).");
  ev->m_batches = kpi_metrics_counter(m, "kpi_evaluator_batches_total", NULL,
                                      "Batch transactions committed.");
  ev->m_sweeps = kpi_metrics_counter(m, "kpi_evaluator_sweeps_total", NULL,
                                     "Sweep transactions committed.");
  ev->m_txn_fail = kpi_metrics_counter(m, "kpi_evaluator_transaction_retries_total", NULL,
                                       "Transactions that failed and were retried.");
  ev->m_commit = kpi_metrics_histogram(m, "kpi_evaluator_transaction_seconds", NULL,
                                       "Time from BEGIN to COMMIT of a transaction.",
                                       commit_bounds,
                                       sizeof(commit_bounds) / sizeof(commit_bounds[0]));
  ev->m_dlq = kpi_metrics_counter(m, "kpi_evaluator_dlq_total", NULL,
                                  "Records sent to the dead-letter topic.");
  ev->m_alerts = kpi_metrics_counter(m, "kpi_evaluator_alerts_published_total", NULL,
                                     "Outbox alerts acknowledged by the broker.");
  ev->m_outbox = kpi_metrics_gauge(m, "kpi_evaluator_outbox_inflight", NULL,
                                   "Outbox alerts produced and awaiting their delivery report.");
  ev->m_lag = kpi_metrics_gauge(m, "kpi_evaluator_consumer_lag", NULL,
                                "Records in the assigned partitions not yet consumed.");
  ev->m_assign = kpi_metrics_counter(m, "kpi_evaluator_assignments_total", NULL,
                                     "Partition assignments applied at PostgreSQL offsets.");
  ev->m_api_rejected = kpi_metrics_counter(
      m, "kpi_evaluator_api_rejected_total", NULL,
      "Read API requests answered 503 because KPI_EVALUATOR_API_MAX_PENDING were pending.");
  ev->m_purged = kpi_metrics_counter(m, "kpi_evaluator_outbox_purged_total", NULL,
                                     "Sent outbox rows deleted after the retention period.");
  return 0;
}
