/* ev_api.c: the evaluator's read API (GET /v1/attainment[/{id}]), health, readiness and metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_log.h"

/* JSON is assembled by PostgreSQL (json_agg/json_build_object), so values keep their exact
 * numeric text and no hand-written JSON is needed here.
 *
 * Each instant also comes as its Japan calendar day (last_observed_day, updated_day,
 * recorded_day: "YYYY-MM-DD" at UTC+09:00, docs/evaluator.md "Read API"), because the instant
 * of a report dated 2024-03-31 is 2024-03-30T15:00:00Z and a reader would take it for the
 * 30th. AT TIME ZONE with an interval is a fixed offset (ISO sign: +09:00 is east of UTC), so
 * the answer does not depend on the server's time zone data; Japan has no DST. */
#define EV_JST_DAY(col) "to_char(" col " AT TIME ZONE INTERVAL '+09:00', 'YYYY-MM-DD')"
static const char SQL_LIST[] =
    "SELECT json_build_object('plan', $1::text, 'measures',"
    " coalesce(json_agg(x ORDER BY x.measure_id), '[]'::json))::text FROM ("
    " SELECT a.measure_id, m.name, m.indicator, m.unit, m.kind, m.direction, m.owner,"
    "  m.baseline_fy, m.baseline, m.target_fy, m.target, a.as_of, a.value, a.progress,"
    "  a.expected, a.status, a.stale, a.last_observed_at,"
    "  " EV_JST_DAY("a.last_observed_at") " AS last_observed_day, a.events, a.alert_state,"
    "  a.updated_at, " EV_JST_DAY("a.updated_at") " AS updated_day"
    " FROM attainment a LEFT JOIN measures m ON m.id = a.measure_id) x";

static const char SQL_ONE[] =
    "SELECT (to_jsonb(x) || jsonb_build_object('history', coalesce((SELECT json_agg(h)"
    "  FROM (SELECT id, as_of, value, progress, expected, status, stale, recorded_at,"
    "   " EV_JST_DAY("recorded_at") " AS recorded_day"
    "   FROM attainment_history WHERE measure_id = $1 ORDER BY id DESC LIMIT 500) h),"
    "  '[]'::json)))::text FROM ("
    " SELECT a.measure_id, m.name, m.indicator, m.unit, m.kind, m.direction, m.owner,"
    "  m.baseline_fy, m.baseline, m.target_fy, m.target, a.as_of, a.value, a.progress,"
    "  a.expected, a.status, a.stale, a.last_observed_at,"
    "  " EV_JST_DAY("a.last_observed_at") " AS last_observed_day, a.events, a.alert_state,"
    "  a.episode, a.updated_at, " EV_JST_DAY("a.updated_at") " AS updated_day"
    " FROM attainment a LEFT JOIN measures m ON m.id = a.measure_id"
    " WHERE a.measure_id = $1) x";

static void on_pg_read(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  kpi_http_request *req = arg;
  evaluator *ev = kpi_http_request_get_user(req);
  ev->api.pending--;
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

bool ev_api_valid_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > KPI_ID_MAX) return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_' || *p == '.'))
      return false;
  return true;
}

/* Bounded: past KPI_EVALUATOR_API_MAX_PENDING queries queued or running, a read is refused at
 * once instead of queueing without limit (every queued read holds a connection and its
 * buffers, and answers later and later). Clients retry after a second. */
bool ev_api_admit(int pending, int max) { return pending < max; }

static void respond_metrics(evaluator *ev, kpi_http_request *req) {
  kpi_http_respond_metrics(req, &ev->api.http, ev->m.reg);
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
             kpi_pgasync_is_up(ev->api_db);
    int ready = db && ev->kafka.broker_up && !ev->life.stopping;
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"database\":%s,\"broker\":%s}",
                     ready ? "ready" : "not_ready", db ? "true" : "false",
                     ev->kafka.broker_up ? "true" : "false");
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
  if (!list && !ev_api_valid_id(id)) {
    kpi_http_respond_problem(req, 404, NULL, "not a measure id", NULL);
    return;
  }
  if (!ev_api_admit(ev->api.pending, ev->cfg.api_max_pending)) {
    kpi_metrics_inc(ev->m.api_rejected);
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "too many read requests in progress",
                                NULL, "Retry-After: 1\r\n");
    return;
  }
  kpi_http_request_set_user(req, ev);
  const char *vals[1] = {list ? ev->cat->plan_id : id};
  int rc = kpi_pgasync_query(ev->api_db, list ? SQL_LIST : SQL_ONE, 1, vals, on_pg_read, req);
  if (rc == 0) ev->api.pending++;
  else
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "the database is unavailable", NULL,
                                "Retry-After: 1\r\n");
}

