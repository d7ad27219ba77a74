/* ev_api.c: the evaluator's read API (GET /v1/attainment[/{id}], the audit trail under
 * /v1/measures/{id}/), health, readiness and metrics. */
#include <openssl/crypto.h>
#include <openssl/sha.h>
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

/* ---- the audit read API (docs/corrections.md "Audit read API", docs/evaluator.md) ---- */

/* GET /v1/measures/{id}/history: measurements, retractions and acknowledgements of the measure
 * merged in the order received (received_at, then event_id), one page of at most $4 entries
 * after the cursor ($2 received_at, $3 event_id; $2 NULL: from the start; $3 NULL: after every
 * entry received at $2). The greatest UUID stands for "every event id" so that one row
 * comparison serves both cursors. */
static const char SQL_HISTORY[] =
    "SELECT json_build_object('measure_id', $1::text, 'entries',"
    " coalesce(json_agg(e.doc ORDER BY e.received_at, e.event_id), '[]'::json))::text FROM ("
    " SELECT u.received_at, u.event_id, u.doc FROM ("
    "  SELECT m.received_at, m.event_id, json_build_object('type', 'measurement',"
    "   'event_id', m.event_id, 'department', m.department, 'observed_at', m.observed_at,"
    "   'observed_day', m.observed_day, 'value', m.value, 'unit', m.unit,"
    "   'component', m.component, 'note', m.note, 'received_at', m.received_at,"
    "   'corrects', m.corrects, 'retracted', CASE WHEN m.retracted_at IS NULL THEN NULL"
    "   ELSE json_build_object('at', m.retracted_at, 'by', m.retracted_by,"
    "    'reason', m.retraction_reason, 'retraction_id', m.retraction_id) END) AS doc"
    "  FROM measurements m WHERE m.measure_id = $1"
    "  UNION ALL SELECT r.received_at, r.event_id, json_build_object('type', 'retraction',"
    "   'event_id', r.event_id, 'retracts', r.retracts, 'department', r.department,"
    "   'reason', r.reason, 'received_at', r.received_at, 'state', r.state,"
    "   'refusal', r.refusal, 'applied_at', r.applied_at, 'correction', r.correction)"
    "  FROM retractions r WHERE r.measure_id = $1"
    "  UNION ALL SELECT a.received_at, a.event_id, json_build_object('type', 'acknowledgement',"
    "   'event_id', a.event_id, 'department', a.department, 'note', a.note,"
    "   'until', a.until, 'received_at', a.received_at)"
    "  FROM acknowledgements a WHERE a.measure_id = $1) u"
    " WHERE $2::timestamptz IS NULL OR (u.received_at, u.event_id) >"
    "  ($2::timestamptz, coalesce($3::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid))"
    " ORDER BY u.received_at, u.event_id LIMIT $4::integer) e";

/* GET /v1/measures/{id}/notifications: the measure's alerts (the latest 1000), each with its
 * mails. An alert comes from the outbox (published_at: when the broker took it); once the
 * outbox's retention purged it, from its mails' copy of the record (published_at null), so a
 * mail never loses its alert. Mail states: pending without an attempt is queued, pending after
 * one is retrying. $2: the operator asked, with the operator token; otherwise the address is
 * left out (and masked in the SMTP texts, EV_MASK) and only its department in the alert's
 * recipients (or "watcher") is said. */
/* An SMTP reply quotes the address it is about ("451 4.3.0 <a@b.example>: …"): outside the
 * operator's view every address in COL is replaced by "(address)", so that no mail address
 * leaves the service in a public answer. */
#define EV_MASK(col)                                                                         \
  "CASE WHEN $2::boolean THEN " col " ELSE regexp_replace(" col                              \
  ", '[^[:space:]<>(),;:\"]+@[^[:space:]<>(),;:\"]+', '(address)', 'g') END"
static const char SQL_NOTIFICATIONS[] =
    "SELECT json_build_object('measure_id', $1::text, 'alerts',"
    " coalesce(json_agg(x.doc ORDER BY x.created_at, x.alert_id), '[]'::json))::text FROM ("
    " SELECT al.alert_id, al.created_at, json_build_object('alert_id', al.alert_id,"
    "  'type', al.p->>'type', 'status', al.p->>'status',"
    "  'previous_status', al.p->'previous_status', 'stale', al.p->'stale',"
    "  'episode', al.p->'episode', 'created_at', al.created_at,"
    "  'published_at', al.published_at, 'mails', coalesce((SELECT json_agg(CASE WHEN $2::boolean"
    "   THEN mm.mail ELSE mm.mail - 'recipient' END ORDER BY n.created_at, n.id)"
    "   FROM notifications n CROSS JOIN LATERAL (SELECT jsonb_build_object("
    "    'recipient', n.recipient, 'recipient_department', coalesce((SELECT r->>'department'"
    "     FROM jsonb_array_elements(CASE WHEN jsonb_typeof(al.p->'recipients') = 'array'"
    "      THEN al.p->'recipients' ELSE '[]'::jsonb END) r"
    "     WHERE lower(r->>'email') = lower(n.recipient) AND r->>'department' IS NOT NULL"
    "     LIMIT 1), 'watcher'),"
    "    'state', CASE WHEN n.state = 'pending' AND n.attempts = 0 THEN 'queued'"
    "     WHEN n.state = 'pending' THEN 'retrying' ELSE n.state END,"
    "    'attempts', n.attempts, 'last_smtp_reply', " EV_MASK("n.smtp_reply") ","
    "    'last_error', " EV_MASK("n.last_error") ","
    "    'created_at', n.created_at,"
    "    'next_attempt_at', CASE WHEN n.state = 'pending' THEN n.next_attempt_at END,"
    "    'sent_at', n.sent_at) AS mail) mm"
    "   WHERE n.alert_id = al.alert_id), '[]'::json)) AS doc"
    " FROM (SELECT o.alert_id, o.created_at, o.sent_at AS published_at, o.payload::jsonb AS p"
    "  FROM outbox o WHERE o.msg_key = $1"
    "  UNION ALL SELECT n.alert_id, min(n.created_at), NULL::timestamptz,"
    "   (array_agg(n.payload))[1]::jsonb FROM notifications n"
    "  WHERE n.measure_id = $1 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.alert_id ="
    "   n.alert_id) GROUP BY n.alert_id) al"
    " ORDER BY al.created_at DESC, al.alert_id LIMIT 1000) x";

int ev_api_audit_path(const char *path, char id[KPI_ID_MAX + 1], ev_api_audit *which) {
  static const char prefix[] = "/v1/measures/";
  if (strncmp(path, prefix, sizeof(prefix) - 1) != 0) return -1;
  const char *s = path + sizeof(prefix) - 1, *slash = strchr(s, '/');
  if (!slash || slash == s || (size_t)(slash - s) > KPI_ID_MAX) return -1;
  if (strcmp(slash, "/history") == 0) *which = EV_API_HISTORY;
  else if (strcmp(slash, "/notifications") == 0) *which = EV_API_NOTIFICATIONS;
  else return -1;
  memcpy(id, s, (size_t)(slash - s));
  id[slash - s] = '\0';
  return 0;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int ev_api_query_value(const char *query, const char *name, char *out, size_t size) {
  size_t nl = strlen(name);
  for (const char *p = query; p && *p;) {
    const char *end = strchr(p, '&');
    if (!end) end = p + strlen(p);
    if ((size_t)(end - p) >= nl && strncmp(p, name, nl) == 0 && (p[nl] == '=' || p + nl == end)) {
      size_t o = 0;
      for (const char *v = p[nl] == '=' ? p + nl + 1 : end; v < end; v++) {
        int c = (unsigned char)*v;
        if (c == '+') c = ' ';
        else if (c == '%') {
          int hi = v + 2 < end ? hex_value(v[1]) : -1, lo = hi >= 0 ? hex_value(v[2]) : -1;
          if (lo < 0) return -1;
          c = hi << 4 | lo;
          v += 2;
        }
        if (c == 0 || o + 1 >= size) return -1;
        out[o++] = (char)c;
      }
      out[o] = '\0';
      return 1;
    }
    p = *end ? end + 1 : end;
  }
  return 0;
}

int ev_api_history_page(const char *query, ev_api_page *page, char *err, size_t errsize) {
  char v[64];
  memset(page, 0, sizeof(*page));
  page->limit = EV_API_HISTORY_LIMIT;
  int rc = ev_api_query_value(query, "limit", v, sizeof(v));
  if (rc != 0) {
    char *end;
    long n = rc > 0 ? strtol(v, &end, 10) : 0;
    if (rc < 0 || !v[0] || *end || n < 1 || n > EV_API_HISTORY_LIMIT_MAX) {
      snprintf(err, errsize, "limit must be an integer from 1 to %d", EV_API_HISTORY_LIMIT_MAX);
      return -1;
    }
    page->limit = (int)n;
  }
  rc = ev_api_query_value(query, "after", v, sizeof(v));
  int64_t ms;
  if (rc < 0 || (rc > 0 && (strlen(v) <= 10 || kpi_time_parse(v, &ms, NULL) != 0))) {
    snprintf(err, errsize, "after must be an RFC 3339 timestamp with its offset");
    return -1;
  }
  if (rc > 0) kpi_time_format_utc(ms, page->after, sizeof(page->after));
  /* A cursor's event id means nothing without its instant: alone it is checked, then ignored. */
  rc = ev_api_query_value(query, "after_event_id", v, sizeof(v));
  if (rc < 0 || (rc > 0 && (strlen(v) != KPI_UUID_STRLEN || kpi_uuid_parse(v, NULL) != 0))) {
    snprintf(err, errsize, "after_event_id must be a UUID");
    return -1;
  }
  if (rc > 0 && page->after[0]) memcpy(page->after_event_id, v, KPI_UUID_STRLEN + 1);
  return 0;
}

int ev_api_operator(const char *auth, const ev_config *cfg) {
  if (!auth) return 0;
  const char *token;
  size_t len;
  if (kpi_http_bearer_token(auth, &token, &len) != 0 || !cfg->operator_set) return -1;
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)token, len, digest);
  return CRYPTO_memcmp(digest, cfg->operator_sha256, sizeof(digest)) == 0 ? 1 : -1;
}

/* Queries the audit resource WHICH of measure ID for REQ (answered from on_pg_read), or answers
 * it here: 400 for a bad page, 401 for a wrong operator token. */
static void audit_query(evaluator *ev, kpi_http_request *req, const char *id,
                        ev_api_audit which) {
  const char *vals[4] = {id, NULL, NULL, NULL};
  ev_api_page page;
  char limit[16], err[96];
  if (which == EV_API_HISTORY) {
    if (ev_api_history_page(kpi_http_request_query(req), &page, err, sizeof(err)) != 0) {
      kpi_http_respond_problem(req, 400, NULL, err, NULL);
      return;
    }
    snprintf(limit, sizeof(limit), "%d", page.limit);
    vals[1] = page.after[0] ? page.after : NULL;
    vals[2] = page.after_event_id[0] ? page.after_event_id : NULL;
    vals[3] = limit;
  } else {
    int op = ev_api_operator(kpi_http_header(req, "Authorization"), &ev->cfg);
    if (op < 0) {
      /* Never log the token: the fact alone. */
      kpi_log(KPI_LOG_DEBUG, "auth_failed", "wrong operator token on the notifications API");
      kpi_http_respond_problem_ex(req, 401, NULL, NULL, "the operator token is not valid", NULL,
                                  "WWW-Authenticate: Bearer\r\n");
      return;
    }
    vals[1] = op ? "true" : "false";
  }
  kpi_http_request_set_user(req, ev);
  int rc = which == EV_API_HISTORY
               ? kpi_pgasync_query(ev->api_db, SQL_HISTORY, 4, vals, on_pg_read, req)
               : kpi_pgasync_query(ev->api_db, SQL_NOTIFICATIONS, 2, vals, on_pg_read, req);
  if (rc == 0) ev->api.pending++;
  else
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "the database is unavailable", NULL,
                                "Retry-After: 1\r\n");
}

/* Whether one more read may queue on the API's connection; answers 503 + Retry-After when
 * KPI_EVALUATOR_API_MAX_PENDING are already waiting (docs/evaluator.md). */
static bool admitted(evaluator *ev, kpi_http_request *req) {
  if (ev_api_admit(ev->api.pending, ev->cfg.api_max_pending)) return true;
  kpi_metrics_inc(ev->m.api_rejected);
  kpi_http_respond_problem_ex(req, 503, NULL, NULL, "too many read requests in progress", NULL,
                              "Retry-After: 1\r\n");
  return false;
}

/* GET /v1/measures/{id}/history|notifications: 404 for another path or a measure the catalog
 * does not name, 503 past the read bound, else the query. */
static void audit_request(evaluator *ev, kpi_http_request *req, const char *path) {
  char id[KPI_ID_MAX + 1];
  ev_api_audit which;
  if (ev_api_audit_path(path, id, &which) != 0) {
    kpi_http_respond_problem(req, 404, NULL, "no such resource", NULL);
    return;
  }
  if (!ev_api_valid_id(id) || !kpi_catalog_measure(ev->cat, id)) {
    kpi_http_respond_problem(req, 404, NULL, "no such measure in the catalog", NULL);
    return;
  }
  if (!admitted(ev, req)) return;
  audit_query(ev, req, id, which);
}

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
    {"/v1/measures/*", KPI_HTTP_GET | KPI_HTTP_HEAD}, /* audit_request answers other shapes */
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
  if (strncmp(path, "/v1/measures/", 13) == 0) {
    audit_request(ev, req, path);
    return;
  }
  const char *id = path + 15;
  bool list = strcmp(path, "/v1/attainment") == 0;
  if (!list && !ev_api_valid_id(id)) {
    kpi_http_respond_problem(req, 404, NULL, "not a measure id", NULL);
    return;
  }
  if (!admitted(ev, req)) return;
  kpi_http_request_set_user(req, ev);
  const char *vals[1] = {list ? ev->cat->plan_id : id};
  int rc = kpi_pgasync_query(ev->api_db, list ? SQL_LIST : SQL_ONE, 1, vals, on_pg_read, req);
  if (rc == 0) ev->api.pending++;
  else
    kpi_http_respond_problem_ex(req, 503, NULL, NULL, "the database is unavailable", NULL,
                                "Retry-After: 1\r\n");
}

