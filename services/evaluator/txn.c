/* txn.c: the evaluator's PostgreSQL work. One transaction per batch writes the measurements,
 * the next Kafka offsets, the attainment of every affected measure, its history and the
 * outbox alerts; the sweep runs the same evaluation for every measure. Also the catalog mirror
 * and the outbox bookkeeping. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluator.h"
#include "kpi_log.h"
#include "kpi_pg.h"

/* Measurements of the batch, and the running totals of the rows that were really inserted:
 * a replayed event_id inserts nothing and adds nothing. */
static const char SQL_INSERT[] =
    "WITH ins AS ("
    " INSERT INTO measurements (event_id, measure_id, department, observed_at, observed_day,"
    "   fiscal_year, value, unit, component, note, received_at, kafka_partition, kafka_offset)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::date[],"
    "   $6::int[], $7::float8[], $8::text[], $9::text[], $10::text[], $11::timestamptz[],"
    "   $12::int[], $13::bigint[])"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING measure_id, date_trunc('month', observed_day)::date AS month, fiscal_year,"
    "   coalesce(component, '') AS component, value)"
    " INSERT INTO measure_totals AS t (measure_id, month, fiscal_year, component, events, total)"
    " SELECT measure_id, month, fiscal_year, component, count(*), sum(value) FROM ins"
    " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4"
    " ON CONFLICT (measure_id, month, component) DO UPDATE"
    " SET events = t.events + excluded.events, total = t.total + excluded.total";

/* Next offsets of the batch's partitions. Never backwards (GREATEST): during a rebalance the
 * previous owner may commit its last batch after the new owner already stored a later offset,
 * and every record below the larger offset is committed either way, so the larger one is the
 * true position; lowering it would only make the next owner re-read (and a stored offset
 * that moved back would hide how far the group really got). The price: after a topic is
 * deleted and recreated (offsets restart at 0) the group's rows must be deleted by the
 * operator, see docs/evaluator.md. */
/* Rows of the batch ($1 event_id, $2 measure_id, $3 department, in batch order) whose
 * event_id is already taken by a different measure or department: stored earlier, or, when
 * not stored, by an earlier row of this batch. ON CONFLICT (event_id) DO NOTHING would drop
 * such a record silently although it is not a replay but a client reusing an id (or two
 * clients colliding), so it goes to the DLQ instead. A true replay (same event_id, measure and
 * department) is not returned and stays a silent duplicate. Runs before SQL_INSERT in the same
 * transaction, so "stored" means committed by an earlier transaction. Returns the 1-based
 * position in the arrays and the event's first owner. */
static const char SQL_REUSED[] =
    "WITH u AS (SELECT u.e, u.m, u.d, u.i, first_value(u.m) OVER w AS m0,"
    "   first_value(u.d) OVER w AS d0"
    " FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS u(e, m, d, i)"
    " WINDOW w AS (PARTITION BY u.e ORDER BY u.i))"
    " SELECT u.i, coalesce(x.measure_id, u.m0) AS measure_id,"
    "   coalesce(x.department, u.d0) AS department, x.event_id IS NOT NULL AS stored"
    " FROM u LEFT JOIN measurements x ON x.event_id = u.e"
    " WHERE CASE WHEN x.event_id IS NOT NULL THEN x.measure_id <> u.m OR x.department <> u.d"
    "   ELSE u.m0 <> u.m OR u.d0 <> u.d END"
    " ORDER BY u.i";

static const char SQL_OFFSETS[] =
    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, updated_at)"
    " SELECT $1, $2, p, o, now() FROM unnest($3::int[], $4::bigint[]) AS u(p, o)"
    " ON CONFLICT (consumer_group, topic, partition) DO UPDATE"
    " SET next_offset = GREATEST(consumer_offsets.next_offset, excluded.next_offset),"
    " updated_at = now()";

/* Aggregates of the measures $1 at the evaluation date: $4 its fiscal year, $8 the first day
 * of its month, $6 .. $5 the instants from that day to the end of the date (Japan time).
 * Whole months before it come from measure_totals; only the current month is read from
 * measurements, so the cost does not grow with the history. */
static const char SQL_AGGREGATE[] =
    "SELECT m.id, lr.value AS latest, (lr.observed_day - DATE '1970-01-01') AS latest_day,"
    " lr.observed_at AS latest_at,"
    " (SELECT coalesce(sum(t.events), 0) FROM measure_totals t WHERE t.measure_id = m.id)"
    "   AS events,"
    " cw.total AS window_sum, rt.num, rt.den,"
    " a.status AS prev_status, a.stale AS prev_stale, a.value AS prev_value,"
    " a.progress AS prev_progress, (a.as_of - DATE '1970-01-01') AS prev_as_of,"
    " a.alert_state, a.episode, a.reminders,"
    " (a.last_alert_on - DATE '1970-01-01') AS last_alert_on"
    " FROM unnest($1::text[], $2::int[], $3::int[], $7::bool[]) AS m(id, wfrom, wto, is_ratio)"
    " LEFT JOIN LATERAL (SELECT x.value, x.observed_day, x.observed_at FROM measurements x"
    "   WHERE x.measure_id = m.id AND x.observed_at < $5"
    "   ORDER BY x.observed_at DESC, x.received_at DESC, x.event_id DESC LIMIT 1) lr ON true"
    " LEFT JOIN LATERAL (SELECT sum(s.v) AS total FROM ("
    "   SELECT t.total AS v FROM measure_totals t WHERE m.wfrom IS NOT NULL"
    "     AND t.measure_id = m.id AND t.month < $8::date"
    "     AND t.fiscal_year BETWEEN m.wfrom AND m.wto"
    "   UNION ALL"
    "   SELECT x.value FROM measurements x WHERE m.wfrom IS NOT NULL"
    "     AND $4 BETWEEN m.wfrom AND m.wto AND x.measure_id = m.id"
    "     AND x.observed_at >= $6 AND x.observed_at < $5) s) cw ON true"
    " LEFT JOIN LATERAL (SELECT s.fy, sum(s.num) AS num, sum(s.den) AS den FROM ("
    "   SELECT t.fiscal_year AS fy,"
    "     CASE WHEN t.component = 'numerator' THEN t.total ELSE 0 END AS num,"
    "     CASE WHEN t.component = 'denominator' THEN t.total ELSE 0 END AS den"
    "   FROM measure_totals t WHERE m.is_ratio AND t.measure_id = m.id AND t.month < $8::date"
    "     AND t.component <> ''"
    "   UNION ALL"
    "   SELECT $4, CASE WHEN x.component = 'numerator' THEN x.value ELSE 0 END,"
    "     CASE WHEN x.component = 'denominator' THEN x.value ELSE 0 END"
    "   FROM measurements x WHERE m.is_ratio AND x.measure_id = m.id"
    "     AND x.component IS NOT NULL AND x.observed_at >= $6 AND x.observed_at < $5) s"
    "   GROUP BY s.fy HAVING sum(s.den) > 0 ORDER BY s.fy DESC LIMIT 1) rt ON true"
    " LEFT JOIN attainment a ON a.measure_id = m.id"
    " ORDER BY m.id";

/* Serialises the evaluation of each measure across connections: a transaction takes these
 * locks (keys in one global order, so two transactions cannot deadlock on them) after its
 * INSERT and before SQL_AGGREGATE, and holds them until COMMIT. Without them, under READ
 * COMMITTED, another replica's sweep (or a replica still finishing a batch of a partition just
 * revoked) could aggregate from a snapshot taken before this transaction's measurements
 * committed and then overwrite the fresher attainment row (value, status, alert bookkeeping)
 * with older figures, which stay reported until the measure is evaluated again.
 * SQL_AGGREGATE is a later statement, so its snapshot sees everything the previous holder of
 * a lock committed. The key space (two int4 keys) never meets kpi_pg_migrate's bigint lock. */
static const char SQL_LOCK[] =
    "SELECT count(pg_advisory_xact_lock(1801, s.k)) FROM"
    " (SELECT DISTINCT hashtext(id) AS k FROM unnest($1::text[]) AS id ORDER BY 1) s";

static const char SQL_ATTAINMENT[] =
    "INSERT INTO attainment AS a (measure_id, as_of, value, progress, expected, status, stale,"
    "  last_observed_at, events, alert_state, episode, last_alert_on, reminders, updated_at)"
    " SELECT u.*, now() FROM unnest($1::text[], $2::date[], $3::float8[], $4::float8[],"
    "  $5::float8[], $6::text[], $7::bool[], $8::timestamptz[], $9::bigint[], $10::text[],"
    "  $11::int[], $12::date[], $13::int[]) AS u"
    " ON CONFLICT (measure_id) DO UPDATE SET as_of = excluded.as_of, value = excluded.value,"
    "  progress = excluded.progress, expected = excluded.expected, status = excluded.status,"
    "  stale = excluded.stale, last_observed_at = excluded.last_observed_at,"
    "  events = excluded.events, alert_state = excluded.alert_state,"
    "  episode = excluded.episode, last_alert_on = excluded.last_alert_on,"
    "  reminders = excluded.reminders, updated_at = now()";

static const char SQL_HISTORY[] =
    "INSERT INTO attainment_history (measure_id, as_of, value, progress, expected, status, stale)"
    " SELECT * FROM unnest($1::text[], $2::date[], $3::float8[], $4::float8[], $5::float8[],"
    "  $6::text[], $7::bool[])";

static const char SQL_OUTBOX[] =
    "INSERT INTO outbox (alert_id, topic, msg_key, payload)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])"
    " ON CONFLICT (alert_id) DO NOTHING RETURNING id, topic, msg_key, payload";

static const char SQL_MIRROR[] =
    "INSERT INTO measures AS t (id, goal, goal_name, program, name, indicator, unit, kind,"
    "  direction, baseline_fy, baseline, target_fy, target, window_from_fy, window_to_fy, owner,"
    "  watchers, report_interval_days, catalog_version, updated_at)"
    " SELECT x.id, x.goal, x.goal_name, x.program, x.name, x.indicator, x.unit, x.kind,"
    "  x.direction, x.baseline_fy, x.baseline, x.target_fy, x.target, x.window_from_fy,"
    "  x.window_to_fy, x.owner, coalesce(x.watchers, '{}'), x.report_interval_days, $2::int,"
    "  now()"
    " FROM jsonb_to_recordset($1::jsonb) AS x(id text, goal int, goal_name text, program text,"
    "  name text, indicator text, unit text, kind text, direction text, baseline_fy int,"
    "  baseline float8, target_fy int, target float8, window_from_fy int, window_to_fy int,"
    "  owner text, watchers text[], report_interval_days int)"
    " ON CONFLICT (id) DO UPDATE SET goal = excluded.goal, goal_name = excluded.goal_name,"
    "  program = excluded.program, name = excluded.name, indicator = excluded.indicator,"
    "  unit = excluded.unit, kind = excluded.kind, direction = excluded.direction,"
    "  baseline_fy = excluded.baseline_fy, baseline = excluded.baseline,"
    "  target_fy = excluded.target_fy, target = excluded.target,"
    "  window_from_fy = excluded.window_from_fy, window_to_fy = excluded.window_to_fy,"
    "  owner = excluded.owner, watchers = excluded.watchers,"
    "  report_interval_days = excluded.report_interval_days,"
    "  catalog_version = excluded.catalog_version, updated_at = now()";

#define N_PARAMS 13

typedef struct {
  int64_t id;
  char *topic, *key, *payload;
} ev_out;

typedef struct {
  evaluator *ev;
  ev_batch *batch; /* NULL for the sweep */
  size_t lo, hi;   /* the batch's rows written (poison rows skipped) */
  bool offsets;    /* the batch's offsets are stored: its last transaction */
  size_t *idx;     /* batch row of each array element of SQL_INSERT / SQL_REUSED */
  size_t n_idx, cap_idx;
  bool failed;
  bool lost; /* connection lost: outcome unknown */
  bool redo; /* rows were found poison before any write: run again without them at once */
  char sqlstate[6]; /* of the first failing statement, "" when none or connection lost */
  char primary[200]; /* its primary message, for the DLQ reason */
  char err[300];
  uint64_t t0;
  kpi_day as_of;
  unsigned char *seen; /* per catalog measure: affected by this transaction */
  size_t n_seen;
  size_t n_affected;
  ev_out *out;
  size_t n_out, cap_out;
  kpi_buf p[N_PARAMS];
} ev_txn;

kpi_day ev_today(const evaluator *ev) {
  return ev->fixed_date ? ev->eval_date : kpi_day_of_ms(kpi_time_now_ms());
}

void ev_txn_init(evaluator *ev) { ev->txn = calloc(1, sizeof(ev_txn)); }

static void txn_out_clear(ev_txn *t) {
  for (size_t i = 0; i < t->n_out; i++) {
    free(t->out[i].topic);
    free(t->out[i].key);
    free(t->out[i].payload);
  }
  t->n_out = 0;
}

void ev_txn_free(evaluator *ev) {
  ev_txn *t = ev->txn;
  if (!t) return;
  txn_out_clear(t);
  free(t->out);
  free(t->seen);
  free(t->idx);
  for (int i = 0; i < N_PARAMS; i++) kpi_buf_free(&t->p[i]);
  free(t);
  ev->txn = NULL;
}

/* Midnight (Japan time) at the start of DAY, as an RFC 3339 instant. */
static void day_start_instant(kpi_day day, char *buf, size_t size) {
  int64_t ms = (int64_t)day * 86400000LL - (int64_t)KPI_TZ_OFFSET_MIN * 60000LL;
  kpi_time_format_utc(ms, buf, size);
}

static const char *const *param_values(ev_txn *t, int n, const char **vals) {
  for (int i = 0; i < n; i++) vals[i] = t->p[i].s;
  return vals;
}

static int params_oom(ev_txn *t, int n) {
  for (int i = 0; i < n; i++)
    if (t->p[i].oom) return 1;
  return 0;
}

static void txn_fail(ev_txn *t, const PGresult *res, const char *what) {
  if (t->failed) return;
  t->failed = true;
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  snprintf(t->sqlstate, sizeof(t->sqlstate), "%s", state ? state : "");
  const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  snprintf(t->primary, sizeof(t->primary), "%s", primary ? primary : "");
  if (!res) {
    t->lost = true;
    snprintf(t->err, sizeof(t->err), "%s: connection lost", what);
  } else {
    const char *msg = PQresultErrorMessage(res);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
    snprintf(t->err, sizeof(t->err), "%s: %.*s", what, (int)n, msg);
  }
}

static void txn_done(ev_txn *t, bool ok);

static void on_db_step(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || (PQresultStatus(res) != PGRES_COMMAND_OK &&
               PQresultStatus(res) != PGRES_TUPLES_OK))
    txn_fail(t, res, "statement");
}

static void on_db_rollback(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  (void)res;
  txn_done(arg, false);
}

static void on_db_commit(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  evaluator *ev = t->ev;
#ifdef KPI_TEST_HOOKS
  if (res && !t->failed && t->n_out > 0 && ev->lose_commits > 0 &&
      PQresultStatus(res) == PGRES_COMMAND_OK) {
    /* Test hook (KPI_TEST_LOSE_COMMITS=N): the COMMIT succeeded, but we act as if the
     * connection had died before its answer came, the "outcome unknown" case. */
    ev->lose_commits--;
    kpi_log(KPI_LOG_WARN, "test_lose_commit", "%zu alerts committed; acting as if lost", t->n_out);
    res = NULL;
  }
#else
  (void)ev;
#endif
  if (!res) txn_fail(t, res, "COMMIT");
  else if (PQresultStatus(res) != PGRES_COMMAND_OK) txn_fail(t, res, "COMMIT");
  else if (!t->failed && strcmp(PQcmdStatus((PGresult *)res), "COMMIT") != 0)
    txn_fail(t, res, "COMMIT rolled back");
  txn_done(t, !t->failed);
}

static void on_db_outbox(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    txn_fail(t, res, "outbox");
    return;
  }
  int c_id = PQfnumber(res, "id"), c_topic = PQfnumber(res, "topic"),
      c_key = PQfnumber(res, "msg_key"), c_payload = PQfnumber(res, "payload");
  for (int r = 0; r < PQntuples(res); r++) {
    if (t->n_out == t->cap_out) {
      size_t cap = t->cap_out ? t->cap_out * 2 : 16;
      ev_out *o = realloc(t->out, cap * sizeof(*o));
      if (!o) return; /* published by the next rescan */
      t->out = o;
      t->cap_out = cap;
    }
    ev_out *o = &t->out[t->n_out++];
    o->id = strtoll(PQgetvalue(res, r, c_id), NULL, 10);
    o->topic = strdup(PQgetvalue(res, r, c_topic));
    o->key = strdup(PQgetvalue(res, r, c_key));
    o->payload = strdup(PQgetvalue(res, r, c_payload));
    if (!o->topic || !o->key || !o->payload) {
      free(o->topic);
      free(o->key);
      free(o->payload);
      t->n_out--;
    }
  }
}

/* A data exception (class 22: overflow, bad date, invalid text…) or an integrity violation
 * (class 23: NOT NULL, CHECK…) is caused by the rows written, not by the database's state, so
 * retrying the same rows fails forever: the batch is searched for the rows to refuse instead.
 * Duplicate event_ids never get here: ON CONFLICT absorbs them. */
static bool txn_data_error(const ev_txn *t) {
  return !t->lost && t->sqlstate[0] == '2' && (t->sqlstate[1] == '2' || t->sqlstate[1] == '3');
}

static void on_db_reused(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    txn_fail(t, res, "event_id check");
    return;
  }
  int n = PQntuples(res);
  if (n == 0) return;
  int c_i = PQfnumber(res, "i"), c_m = PQfnumber(res, "measure_id"),
      c_d = PQfnumber(res, "department"), c_s = PQfnumber(res, "stored");
  for (int r = 0; r < n; r++) {
    size_t i = (size_t)strtoull(PQgetvalue(res, r, c_i), NULL, 10);
    if (i < 1 || i > t->n_idx) continue;
    ev_row *row = &t->batch->rows[t->idx[i - 1]];
    char reason[300];
    snprintf(reason, sizeof(reason),
             "event_id reused: %s is %s for measure %s, department %s (this record: %s, %s)",
             row->event_id, PQgetvalue(res, r, c_s)[0] == 't' ? "stored" : "taken earlier",
             PQgetvalue(res, r, c_m), PQgetvalue(res, r, c_d), row->measure_id,
             row->department);
    ev_dlq_row(t->ev, t->batch, row, reason);
  }
  /* The INSERT queued behind this check would drop them silently: roll back, go again. */
  t->redo = true;
  txn_fail(t, res, "event_id reused");
}

static void arr_double(kpi_buf *b, bool has, double v) {
  if (!has || !isfinite(v)) {
    kpi_buf_arr_null(b);
    return;
  }
  char num[40];
  snprintf(num, sizeof(num), "%.17g", v);
  kpi_buf_arr_raw(b, num);
}

static void arr_day(kpi_buf *b, kpi_day d) {
  char s[16];
  kpi_day_format(d, s, sizeof(s));
  kpi_buf_arr_raw(b, s);
}

static void arr_int(kpi_buf *b, long long v) {
  char s[24];
  snprintf(s, sizeof(s), "%lld", v);
  kpi_buf_arr_raw(b, s);
}

/* Builds the kpi.alert/1 record of one action. Returns a malloc'd JSON string or NULL. */
static char *alert_payload(const evaluator *ev, const kpi_measure *m, const kpi_attainment *a,
                           kpi_alert_action act, const char *alert_id, const char *prev_status,
                           int episode, kpi_day as_of) {
  kpi_alert al;
  memset(&al, 0, sizeof(al));
  snprintf(al.alert_id, sizeof(al.alert_id), "%s", alert_id);
  snprintf(al.measure_id, sizeof(al.measure_id), "%s", m->id);
  snprintf(al.type, sizeof(al.type), "%s", kpi_alert_action_type(act));
  snprintf(al.status, sizeof(al.status), "%s", kpi_status_name(a->status));
  snprintf(al.previous_status, sizeof(al.previous_status), "%s", prev_status ? prev_status : "");
  al.stale = a->stale;
  al.episode = episode;
  al.has_value = a->has_value;
  al.value = a->value;
  al.progress = a->has_progress ? a->progress : 0;
  al.expected = a->expected;
  kpi_day_format(as_of, al.as_of, sizeof(al.as_of));
  al.measure_name = m->name;
  al.indicator = m->indicator;
  al.unit = m->unit;
  al.kind = (char *)kpi_kind_name(m->kind);
  al.direction = (char *)kpi_direction_name(m->direction);
  al.baseline = m->baseline;
  al.baseline_fy = m->baseline_fy;
  al.target = m->target;
  al.target_fy = m->target_fy;
  kpi_day_format(a->due, al.due, sizeof(al.due));
  al.plan_name = ev->cat->plan_name;
  al.dashboard_url = ev->cat->dashboard_url;
  const kpi_department *d = m->owner_dept;
  size_t n = (d ? d->n_mailboxes : 0) + m->n_watchers;
  kpi_recipient *rs = n ? calloc(n, sizeof(*rs)) : NULL;
  size_t k = 0;
  if (rs) {
    for (size_t i = 0; d && i < d->n_mailboxes; i++) {
      rs[k].department = d->id;
      rs[k].name = d->name;
      rs[k++].email = d->mailboxes[i];
    }
    for (size_t i = 0; i < m->n_watchers; i++) rs[k++].email = m->watchers[i];
  }
  al.recipients = rs;
  al.n_recipients = k;
  kpi_time_format_utc(kpi_time_now_ms(), al.created_at, sizeof(al.created_at));
  char *json = kpi_alert_encode(&al, NULL);
  free(rs); /* the strings belong to the catalog */
  return json;
}

static int getint(const PGresult *res, int r, int c, int def) {
  return PQgetisnull(res, r, c) ? def : atoi(PQgetvalue(res, r, c));
}

static bool same_double(bool has_a, double a, bool has_b, double b) {
  if (has_a != has_b) return false;
  return !has_a || fabs(a - b) <= 1e-12 * (fabs(a) + fabs(b) + 1);
}

/* The aggregates are in: evaluate, then queue the writes and COMMIT. */
static void on_db_aggregate(kpi_pgasync *pg, const PGresult *res, void *arg) {
  ev_txn *t = arg;
  evaluator *ev = t->ev;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) txn_fail(t, res, "aggregate");
  if (t->failed) {
    if (t->lost || kpi_pgasync_query(pg, "ROLLBACK", 0, NULL, on_db_rollback, t) != 0)
      txn_done(t, false);
    return;
  }
  /* attainment: 13 arrays in p[0..12]; history reuses none of them, so it is built in
   * separate buffers below (h), and the outbox in o. */
  kpi_buf h[7], o[4];
  memset(h, 0, sizeof(h));
  memset(o, 0, sizeof(o));
  for (int i = 0; i < N_PARAMS; i++) kpi_buf_arr_begin(&t->p[i]);
  for (int i = 0; i < 7; i++) kpi_buf_arr_begin(&h[i]);
  for (int i = 0; i < 4; i++) kpi_buf_arr_begin(&o[i]);
  size_t n_hist = 0, n_alerts = 0;
  int c_id = PQfnumber(res, "id"), c_latest = PQfnumber(res, "latest"),
      c_latest_day = PQfnumber(res, "latest_day"), c_latest_at = PQfnumber(res, "latest_at"),
      c_events = PQfnumber(res, "events"), c_wsum = PQfnumber(res, "window_sum"),
      c_num = PQfnumber(res, "num"), c_den = PQfnumber(res, "den"),
      c_pstatus = PQfnumber(res, "prev_status"), c_pstale = PQfnumber(res, "prev_stale"),
      c_pvalue = PQfnumber(res, "prev_value"), c_pprog = PQfnumber(res, "prev_progress"),
      c_pasof = PQfnumber(res, "prev_as_of"), c_astate = PQfnumber(res, "alert_state"),
      c_episode = PQfnumber(res, "episode"), c_rem = PQfnumber(res, "reminders"),
      c_lastalert = PQfnumber(res, "last_alert_on");
  for (int r = 0; r < PQntuples(res); r++) {
    const kpi_measure *m = kpi_catalog_measure(ev->cat, PQgetvalue(res, r, c_id));
    if (!m) continue;
    kpi_aggregate agg;
    memset(&agg, 0, sizeof(agg));
    if (!PQgetisnull(res, r, c_latest)) {
      agg.has_latest = true;
      agg.latest = strtod(PQgetvalue(res, r, c_latest), NULL);
      agg.latest_day = (kpi_day)atoi(PQgetvalue(res, r, c_latest_day));
    }
    if (!PQgetisnull(res, r, c_wsum)) agg.window_sum = strtod(PQgetvalue(res, r, c_wsum), NULL);
    if (!PQgetisnull(res, r, c_den)) {
      agg.has_ratio = true;
      agg.ratio_num = strtod(PQgetvalue(res, r, c_num), NULL);
      agg.ratio_den = strtod(PQgetvalue(res, r, c_den), NULL);
    }
    kpi_attainment a;
    kpi_attainment_eval(m, &agg, t->as_of, ev->lag_ratio, &a);

    bool had_row = !PQgetisnull(res, r, c_pstatus);
    const char *prev_status = had_row ? PQgetvalue(res, r, c_pstatus) : NULL;
    kpi_alert_track prev, next;
    memset(&prev, 0, sizeof(prev));
    if (had_row && !PQgetisnull(res, r, c_astate))
      snprintf(prev.state, sizeof(prev.state), "%s", PQgetvalue(res, r, c_astate));
    prev.episode = getint(res, r, c_episode, 0);
    prev.reminders = getint(res, r, c_rem, 0);
    if (!PQgetisnull(res, r, c_lastalert)) {
      prev.has_last_alert = true;
      prev.last_alert_on = (kpi_day)atoi(PQgetvalue(res, r, c_lastalert));
    }
    char name[160];
    kpi_alert_action act =
        kpi_alert_decide(m->id, &prev, &a, t->as_of, ev->repeat_days, &next, name, sizeof(name));

    kpi_buf_arr_str(&t->p[0], m->id);
    arr_day(&t->p[1], t->as_of);
    arr_double(&t->p[2], a.has_value, a.value);
    arr_double(&t->p[3], a.has_progress, a.progress);
    arr_double(&t->p[4], true, a.expected);
    kpi_buf_arr_str(&t->p[5], kpi_status_name(a.status));
    kpi_buf_arr_raw(&t->p[6], a.stale ? "true" : "false");
    if (PQgetisnull(res, r, c_latest_at)) kpi_buf_arr_null(&t->p[7]);
    else kpi_buf_arr_str(&t->p[7], PQgetvalue(res, r, c_latest_at));
    kpi_buf_arr_raw(&t->p[8], PQgetvalue(res, r, c_events));
    if (next.state[0]) kpi_buf_arr_str(&t->p[9], next.state);
    else kpi_buf_arr_null(&t->p[9]);
    arr_int(&t->p[10], next.episode);
    if (next.has_last_alert) arr_day(&t->p[11], next.last_alert_on);
    else kpi_buf_arr_null(&t->p[11]);
    arr_int(&t->p[12], next.reminders);

    bool changed = !had_row || strcmp(prev_status, kpi_status_name(a.status)) != 0 ||
                   (PQgetvalue(res, r, c_pstale)[0] == 't') != a.stale ||
                   getint(res, r, c_pasof, -1) != t->as_of ||
                   !same_double(!PQgetisnull(res, r, c_pvalue),
                                strtod(PQgetvalue(res, r, c_pvalue), NULL), a.has_value, a.value) ||
                   !same_double(!PQgetisnull(res, r, c_pprog),
                                strtod(PQgetvalue(res, r, c_pprog), NULL), a.has_progress,
                                a.progress);
    if (changed) {
      kpi_buf_arr_str(&h[0], m->id);
      arr_day(&h[1], t->as_of);
      arr_double(&h[2], a.has_value, a.value);
      arr_double(&h[3], a.has_progress, a.progress);
      arr_double(&h[4], true, a.expected);
      kpi_buf_arr_str(&h[5], kpi_status_name(a.status));
      kpi_buf_arr_raw(&h[6], a.stale ? "true" : "false");
      n_hist++;
    }
    if (act != KPI_ALERT_NONE) {
      char alert_id[KPI_UUID_STRLEN + 1];
      kpi_alert_id(name, alert_id);
      char *payload = alert_payload(ev, m, &a, act, alert_id, prev_status, next.episode, t->as_of);
      if (payload) {
        kpi_buf_arr_str(&o[0], alert_id);
        kpi_buf_arr_str(&o[1], ev->topics[KPI_TOPIC_ALERTS].name);
        kpi_buf_arr_str(&o[2], m->id);
        kpi_buf_arr_str(&o[3], payload);
        free(payload);
        n_alerts++;
        char as_of[16];
        kpi_day_format(t->as_of, as_of, sizeof(as_of));
        kpi_log(KPI_LOG_INFO, "alert_decided", "%s %s (%s, as of %s)", kpi_alert_action_type(act),
                name, alert_id, as_of);
      } else {
        txn_fail(t, res, "alert encoding: out of memory");
      }
    }
  }
  for (int i = 0; i < N_PARAMS; i++) kpi_buf_arr_end(&t->p[i]);
  for (int i = 0; i < 7; i++) kpi_buf_arr_end(&h[i]);
  for (int i = 0; i < 4; i++) kpi_buf_arr_end(&o[i]);
  int oom = params_oom(t, N_PARAMS);
  for (int i = 0; i < 7; i++) oom |= h[i].oom;
  for (int i = 0; i < 4; i++) oom |= o[i].oom;
  const char *vals[N_PARAMS];
  int rc = 0;
  if (oom || t->failed) {
    txn_fail(t, res, "out of memory");
    rc = -1;
  } else {
    rc = kpi_pgasync_query(pg, SQL_ATTAINMENT, N_PARAMS, param_values(t, N_PARAMS, vals),
                           on_db_step, t);
    if (!rc && n_hist) {
      for (int i = 0; i < 7; i++) vals[i] = h[i].s;
      rc = kpi_pgasync_query(pg, SQL_HISTORY, 7, vals, on_db_step, t);
    }
    if (!rc && n_alerts) {
      for (int i = 0; i < 4; i++) vals[i] = o[i].s;
      rc = kpi_pgasync_query(pg, SQL_OUTBOX, 4, vals, on_db_outbox, t);
    }
  }
  for (int i = 0; i < 7; i++) kpi_buf_free(&h[i]);
  for (int i = 0; i < 4; i++) kpi_buf_free(&o[i]);
  if (rc == 0) rc = kpi_pgasync_query(pg, "COMMIT", 0, NULL, on_db_commit, t);
  if (rc != 0) {
    /* Statements already queued run first; the ROLLBACK (or the lost connection) ends it. */
    txn_fail(t, NULL, "queueing");
    if (kpi_pgasync_query(pg, "ROLLBACK", 0, NULL, on_db_rollback, t) != 0) txn_done(t, false);
  }
}

static void on_retry_timer(uv_timer_t *h) { ev_kick(h->data); }

static void batch_push(ev_batch *b, size_t lo, size_t hi) {
  if (b->n_todo == b->cap_todo) {
    size_t cap = b->cap_todo ? b->cap_todo * 2 : 16;
    ev_range *r = realloc(b->todo, cap * sizeof(*r));
    if (!r) abort(); /* the batch is read again after the restart */
    b->todo = r;
    b->cap_todo = cap;
  }
  b->todo[b->n_todo].lo = lo;
  b->todo[b->n_todo].hi = hi;
  b->n_todo++;
}

/* A failed transaction whose cause lies in the data rather than in the database: rows found
 * reused (redo at once without them), or a data error, which either names a poison row (the
 * only row written) or splits the rows written into two halves, tried in batch order. The
 * halves commit on their own, so the state a row is judged against is the one every earlier
 * row of the batch left behind: of two amounts that overflow a total together, the second is
 * the poison one, and an amount that overflows a total stored long ago is poison as well.
 * Returns true when handled; the next transaction then starts from the retry timer at once,
 * without backoff. */
static bool txn_poison(ev_txn *t) {
  evaluator *ev = t->ev;
  if (t->lost || (!t->redo && !txn_data_error(t))) return false;
  if (!t->batch) {
    /* The sweep writes no rows: one measure whose stored figures PostgreSQL refuses to
     * aggregate must not keep every other measure from being evaluated. Measure by measure
     * from now on; the failing one is skipped (logged) until the next sweep. */
    if (!ev->sweep_split) {
      ev->sweep_split = true;
      ev->sweep_next = 0;
      kpi_log(KPI_LOG_WARN, "sweep_split", "%s; evaluating measure by measure", t->err);
    } else {
      const char *id = ev->sweep_next < ev->cat->n_measures
                           ? ev->cat->measures[ev->sweep_next].id : "?";
      kpi_log(KPI_LOG_ERROR, "measure_evaluation_failed", "%s: %s; skipped until the next sweep",
              id, t->err);
      ev->sweep_next++;
    }
    if (ev->sweep_next >= ev->cat->n_measures) ev->sweep_split = false;
    else ev->sweep_due = true;
    txn_out_clear(t);
    uv_timer_start(&ev->retry_timer, on_retry_timer, 0, 0);
    return true;
  }
  ev_batch *b = t->batch;
  if (!t->redo) {
    if (!t->offsets) {
      b->n_todo--; /* the range just tried; replaced by its halves below */
    } else if (b->bisecting && b->n_poison == b->round_poison) {
      /* Every row was written on its own and the rows together still fail: the error is not
       * in these rows. Nothing to refuse; retry with backoff like any other failure. */
      return false;
    } else {
      b->bisecting = true;
      b->round_poison = b->n_poison;
    }
    if (t->n_idx == 1) {
      char reason[400];
      snprintf(reason, sizeof(reason), "database: %s %s", t->sqlstate, t->primary);
      ev_dlq_row(ev, b, &b->rows[t->idx[0]], reason);
    } else if (t->n_idx > 1) {
      /* Halve by live rows, so that each half holds some; the second half is pushed first
       * so that the first is tried first. */
      size_t mid = t->idx[t->n_idx / 2];
      batch_push(b, mid, t->hi);
      batch_push(b, t->lo, mid);
    }
    kpi_log(KPI_LOG_WARN, "batch_poison_search", "%s; %zu rows [%zu, %zu) of %zu, %zu ranges left",
            t->err, t->n_idx, t->lo, t->hi, b->n_rows, b->n_todo);
  }
  txn_out_clear(t);
  uv_timer_start(&ev->retry_timer, on_retry_timer, 0, 0);
  return true;
}

static void txn_done(ev_txn *t, bool ok) {
  evaluator *ev = t->ev;
  ev->txn_busy = false;
  double secs = (double)(uv_hrtime() - t->t0) / 1e9;
  if (!ok && txn_poison(t)) return;
  if (!ok) {
    kpi_metrics_inc(ev->m_txn_fail);
    kpi_log(KPI_LOG_WARN, "transaction_failed", "%s (%s); retrying in %d ms", t->err,
            t->batch ? "batch" : "sweep", ev->backoff_ms);
    if (!t->batch) ev->sweep_due = true;
    /* A lost connection may have hidden a COMMIT that went through. Its outbox rows are then
     * stored but known to nobody: the retry finds their alert_ids taken (ON CONFLICT DO
     * NOTHING returns no row) and the alert decision already recorded, so only a rescan of the
     * outbox publishes them. */
    if (t->lost) ev->rescan_due = true;
    txn_out_clear(t);
    /* After a lost connection the state callback kicks us when it is back; otherwise wait. */
    uv_timer_start(&ev->retry_timer, on_retry_timer, (uint64_t)ev->backoff_ms, 0);
    ev->backoff_ms = ev->backoff_ms < 2500 ? ev->backoff_ms * 2 : 5000;
    return;
  }
  ev->backoff_ms = 100;
  kpi_metrics_observe(ev->m_commit, secs);
  if (t->batch && !t->offsets) {
    t->batch->n_todo--; /* one range of a poison search written; the batch goes on */
  } else if (t->batch) {
    kpi_metrics_inc(ev->m_batches);
    kpi_metrics_add(ev->m_rows, (double)t->batch->n_rows);
    kpi_log(KPI_LOG_DEBUG, "batch_committed", "%zu records, %zu measurements, %zu measures, %.1f ms",
            t->batch->n_records, t->batch->n_rows, t->n_affected, secs * 1000);
    ev_batch_clear(t->batch);
    ev->inflight = NULL;
  } else if (ev->sweep_split) {
    if (++ev->sweep_next >= ev->cat->n_measures) {
      ev->sweep_split = false;
      kpi_metrics_inc(ev->m_sweeps);
    } else {
      ev->sweep_due = true;
    }
  } else {
    kpi_metrics_inc(ev->m_sweeps);
  }
#ifdef KPI_TEST_HOOKS
  if (ev->crash_after_commit && t->n_out > 0) {
    /* Test hook (KPI_TEST_CRASH_AFTER_COMMIT=1): die between COMMIT and publishing, the
     * window the outbox exists for. */
    kpi_log(KPI_LOG_WARN, "test_crash_after_commit", "%zu alerts committed, exiting", t->n_out);
    _exit(3);
  }
#endif
  for (size_t i = 0; i < t->n_out; i++)
    ev_outbox_publish(ev, t->out[i].id, t->out[i].topic, t->out[i].key, t->out[i].payload);
  txn_out_clear(t);
  if (ev->rescan_due) ev_outbox_rescan(ev);
  ev_kick(ev);
  ev_kafka_pull(ev);
}

static void mark_affected(ev_txn *t, const kpi_measure *m) {
  size_t i = (size_t)(m - t->ev->cat->measures);
  if (i < t->n_seen && !t->seen[i]) {
    t->seen[i] = 1;
    t->n_affected++;
  }
}

/* Builds the 13 measurement arrays of the rows t->idx into p[0..12]. */
static void build_insert(ev_txn *t) {
  ev_batch *b = t->batch;
  for (int i = 0; i < N_PARAMS; i++) kpi_buf_arr_begin(&t->p[i]);
  char s[40];
  for (size_t k = 0; k < t->n_idx; k++) {
    const ev_row *r = &b->rows[t->idx[k]];
    kpi_buf_arr_str(&t->p[0], r->event_id);
    kpi_buf_arr_str(&t->p[1], r->measure_id);
    kpi_buf_arr_str(&t->p[2], r->department);
    kpi_time_format_utc(r->observed_ms, s, sizeof(s));
    kpi_buf_arr_str(&t->p[3], s);
    arr_day(&t->p[4], r->observed_day);
    arr_int(&t->p[5], kpi_fy_of_day(r->observed_day));
    arr_double(&t->p[6], true, r->value);
    kpi_buf_arr_str(&t->p[7], r->unit);
    if (r->component == KPI_COMPONENT_NONE) kpi_buf_arr_null(&t->p[8]);
    else kpi_buf_arr_str(&t->p[8], kpi_component_name(r->component));
    if (r->note) kpi_buf_arr_str(&t->p[9], r->note);
    else kpi_buf_arr_null(&t->p[9]);
    kpi_time_format_utc(r->received_ms, s, sizeof(s));
    kpi_buf_arr_str(&t->p[10], s);
    arr_int(&t->p[11], r->partition);
    arr_int(&t->p[12], r->offset);
  }
  for (int i = 0; i < N_PARAMS; i++) kpi_buf_arr_end(&t->p[i]);
}

/* Queues BEGIN, the writes and the aggregate query; on_db_aggregate continues. */
static void txn_start(evaluator *ev, ev_batch *batch) {
  ev_txn *t = ev->txn;
  t->ev = ev;
  t->batch = batch;
  t->failed = t->lost = false;
  t->err[0] = '\0';
  t->redo = false;
  t->sqlstate[0] = '\0';
  t->t0 = uv_hrtime();
  t->as_of = ev_today(ev);
  t->n_affected = 0;
  t->n_idx = 0;
  txn_out_clear(t);
  if (batch && batch->bisecting && batch->n_todo) {
    t->lo = batch->todo[batch->n_todo - 1].lo;
    t->hi = batch->todo[batch->n_todo - 1].hi;
    t->offsets = false;
  } else {
    t->lo = 0;
    t->hi = batch ? batch->n_rows : 0;
    t->offsets = batch != NULL;
  }
  if (t->hi - t->lo > t->cap_idx) {
    size_t *idx = realloc(t->idx, (t->hi - t->lo) * sizeof(*idx));
    if (!idx) abort(); /* nothing is lost: the batch is read again after the restart */
    t->idx = idx;
    t->cap_idx = t->hi - t->lo;
  }
  for (size_t i = t->lo; batch && i < t->hi; i++)
    if (!batch->rows[i].poison) t->idx[t->n_idx++] = i;
  if (t->n_seen < ev->cat->n_measures) {
    free(t->seen);
    t->seen = calloc(ev->cat->n_measures, 1);
    t->n_seen = t->seen ? ev->cat->n_measures : 0;
  }
  if (t->seen) memset(t->seen, 0, t->n_seen);
  if (batch) {
    for (size_t k = 0; k < t->n_idx; k++) {
      const kpi_measure *m = kpi_catalog_measure(ev->cat, batch->rows[t->idx[k]].measure_id);
      if (m) mark_affected(t, m);
    }
  } else if (ev->sweep_split) {
    if (ev->sweep_next < ev->cat->n_measures)
      mark_affected(t, &ev->cat->measures[ev->sweep_next]);
  } else {
    for (size_t i = 0; i < ev->cat->n_measures; i++) mark_affected(t, &ev->cat->measures[i]);
  }
  ev->txn_busy = true;
  const char *vals[N_PARAMS];
  if (kpi_pgasync_query(ev->db, "BEGIN", 0, NULL, on_db_step, t) != 0) {
    txn_fail(t, NULL, "BEGIN");
    txn_done(t, false);
    return;
  }
  int rc = 0;
  if (batch && t->n_idx) {
    build_insert(t);
    if (params_oom(t, N_PARAMS)) rc = -1;
    if (!rc) rc = kpi_pgasync_query(ev->db, SQL_REUSED, 3, param_values(t, 3, vals),
                                    on_db_reused, t);
    if (!rc) rc = kpi_pgasync_query(ev->db, SQL_INSERT, N_PARAMS, param_values(t, N_PARAMS, vals),
                                    on_db_step, t);
  }
  if (!rc && batch && t->offsets && batch->n_offs) {
    kpi_buf_arr_begin(&t->p[2]);
    kpi_buf_arr_begin(&t->p[3]);
    for (size_t i = 0; i < batch->n_offs; i++) {
      arr_int(&t->p[2], batch->offs[i].partition);
      arr_int(&t->p[3], batch->offs[i].next_offset);
    }
    kpi_buf_arr_end(&t->p[2]);
    kpi_buf_arr_end(&t->p[3]);
    const char *ov[4] = {ev->group, ev->topics[KPI_TOPIC_MEASUREMENTS].name, t->p[2].s, t->p[3].s};
    rc = params_oom(t, 4) ? -1
                          : kpi_pgasync_query(ev->db, SQL_OFFSETS, 4, ov, on_db_step, t);
  }
  if (!rc) {
    /* Aggregate parameters: ids, window from/to, current FY, end instant, month start instant,
     * is_ratio, month start date. */
    kpi_buf *ids = &t->p[0], *wf = &t->p[1], *wt = &t->p[2], *rat = &t->p[6];
    kpi_buf_arr_begin(ids);
    kpi_buf_arr_begin(wf);
    kpi_buf_arr_begin(wt);
    kpi_buf_arr_begin(rat);
    for (size_t i = 0; i < t->n_seen; i++) {
      if (!t->seen[i]) continue;
      const kpi_measure *m = &ev->cat->measures[i];
      kpi_buf_arr_str(ids, m->id);
      if (m->kind == KPI_KIND_CUMULATIVE) {
        arr_int(wf, m->window_from_fy);
        arr_int(wt, m->window_to_fy);
      } else {
        kpi_buf_arr_null(wf);
        kpi_buf_arr_null(wt);
      }
      kpi_buf_arr_raw(rat, m->kind == KPI_KIND_RATIO ? "true" : "false");
    }
    kpi_buf_arr_end(ids);
    kpi_buf_arr_end(wf);
    kpi_buf_arr_end(wt);
    kpi_buf_arr_end(rat);
    int fy = kpi_fy_of_day(t->as_of);
    kpi_buf_reset(&t->p[3]);
    kpi_buf_addf(&t->p[3], "%d", fy);
    int y, mo, d;
    kpi_day_to_ymd(t->as_of, &y, &mo, &d);
    kpi_day month = t->as_of - (d - 1);
    char end[40], month_start[40], month_day[16];
    day_start_instant(t->as_of + 1, end, sizeof(end));
    day_start_instant(month, month_start, sizeof(month_start));
    kpi_day_format(month, month_day, sizeof(month_day));
    kpi_buf_reset(&t->p[4]);
    kpi_buf_adds(&t->p[4], end);
    kpi_buf_reset(&t->p[5]);
    kpi_buf_adds(&t->p[5], month_start);
    kpi_buf_reset(&t->p[7]);
    kpi_buf_adds(&t->p[7], month_day);
    param_values(t, 8, vals);
    rc = params_oom(t, 8) ? -1 : kpi_pgasync_query(ev->db, SQL_LOCK, 1, vals, on_db_step, t);
    if (!rc)
      rc = kpi_pgasync_query(ev->db, SQL_AGGREGATE, 8, param_values(t, 8, vals), on_db_aggregate,
                             t);
  }
  if (rc != 0) {
    txn_fail(t, NULL, "queueing");
    if (kpi_pgasync_query(ev->db, "ROLLBACK", 0, NULL, on_db_rollback, t) != 0)
      txn_done(t, false);
  }
}

/* ---- catalog mirror ------------------------------------------------------------------- */

/* The catalog's measures as a JSON array for jsonb_to_recordset. Returns malloc'd or NULL. */
static char *mirror_json(const kpi_catalog *cat) {
  cJSON *arr = cJSON_CreateArray();
  if (!arr) return NULL;
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    cJSON *o = cJSON_CreateObject();
    if (!o) break;
    cJSON_AddItemToArray(arr, o);
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddNumberToObject(o, "goal", m->goal);
    if (m->goal_name) cJSON_AddStringToObject(o, "goal_name", m->goal_name);
    cJSON_AddStringToObject(o, "program", m->program ? m->program : "");
    cJSON_AddStringToObject(o, "name", m->name ? m->name : "");
    cJSON_AddStringToObject(o, "indicator", m->indicator ? m->indicator : "");
    cJSON_AddStringToObject(o, "unit", m->unit);
    cJSON_AddStringToObject(o, "kind", kpi_kind_name(m->kind));
    cJSON_AddStringToObject(o, "direction", kpi_direction_name(m->direction));
    cJSON_AddNumberToObject(o, "baseline_fy", m->baseline_fy);
    cJSON_AddNumberToObject(o, "baseline", m->baseline);
    cJSON_AddNumberToObject(o, "target_fy", m->target_fy);
    cJSON_AddNumberToObject(o, "target", m->target);
    if (m->kind == KPI_KIND_CUMULATIVE) {
      cJSON_AddNumberToObject(o, "window_from_fy", m->window_from_fy);
      cJSON_AddNumberToObject(o, "window_to_fy", m->window_to_fy);
    }
    cJSON_AddStringToObject(o, "owner", m->owner);
    cJSON *w = cJSON_AddArrayToObject(o, "watchers");
    for (size_t j = 0; w && j < m->n_watchers; j++)
      cJSON_AddItemToArray(w, cJSON_CreateString(m->watchers[j]));
    cJSON_AddNumberToObject(o, "report_interval_days", m->report_interval_days);
  }
  char *s = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  return s;
}

static void on_db_mirror(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->txn_busy = false;
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    kpi_log(KPI_LOG_WARN, "catalog_mirror_failed", "%s; retrying",
            res ? PQresultErrorMessage(res) : "connection lost");
    ev->reload_due = true; /* the file is read again: harmless */
    uv_timer_start(&ev->retry_timer, on_retry_timer, (uint64_t)ev->backoff_ms, 0);
    return;
  }
  kpi_log(KPI_LOG_INFO, "catalog_mirrored", "%zu measures, version %d", ev->cat->n_measures,
          ev->cat->version);
  ev->sweep_due = true; /* targets may have changed */
  ev_kick(ev);
}

/* Reloads the catalog file (SIGHUP) between transactions and mirrors it. A bad file keeps the
 * running catalog. */
static void reload_catalog(evaluator *ev) {
  ev->reload_due = false;
  char err[512];
  kpi_catalog *cat = kpi_catalog_load(ev->catalog_path, err, sizeof(err));
  if (!cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s; keeping version %d", err,
            ev->cat->version);
    return;
  }
  char *json = mirror_json(cat);
  if (!json) {
    kpi_catalog_free(cat);
    return;
  }
  kpi_catalog_free(ev->cat);
  ev->cat = cat;
  char version[16];
  snprintf(version, sizeof(version), "%d", cat->version);
  const char *vals[2] = {json, version};
  ev->txn_busy = true; /* before queueing: the callback may run inside the call */
  if (kpi_pgasync_query(ev->db, SQL_MIRROR, 2, vals, on_db_mirror, ev) != 0) {
    ev->txn_busy = false;
    ev->reload_due = true;
  }
  free(json);
}

/* ---- scheduling ----------------------------------------------------------------------- */

void ev_kick(evaluator *ev) {
  if (ev->txn_busy || ev->closed || ev->finishing || !ev->db) return;
  if (ev->stopping && ev->inflight && (ev->inflight->bisecting || ev->inflight->n_poison)) {
    /* A poison search may need many transactions: leave it. Its ranges committed so far are
     * rewritten as no-ops by the next owner, which finds the poison rows again (their DLQ
     * copies may then exist twice). */
    ev_batch_clear(ev->inflight);
    ev->inflight = NULL;
  }
  if (ev->stopping && !ev->inflight) {
    /* Only the transaction already under way is finished; the rest is re-read later. */
    ev_finish(ev);
    return;
  }
  if (uv_is_active((uv_handle_t *)&ev->retry_timer)) return;
  if (!kpi_pgasync_is_up(ev->db)) return; /* the state callback kicks again */
  if (ev->stopping) {
    txn_start(ev, ev->inflight);
    return;
  }
  if (ev->reload_due) {
    reload_catalog(ev);
    if (ev->txn_busy) return;
  }
  if (ev->inflight) {
    /* The transaction storing the offsets waits for the DLQ copies of its poison rows: a
     * record is never skipped without its copy (the delivery report kicks again). */
    bool offsets = !(ev->inflight->bisecting && ev->inflight->n_todo);
    if (offsets && ev->dlq_inflight > 0) return;
    txn_start(ev, ev->inflight);
    return;
  }
  if (ev->pending->n_records > 0 && ev->dlq_inflight == 0) {
    ev->inflight = ev->pending;
    ev->pending = ev->inflight == &ev->batches[0] ? &ev->batches[1] : &ev->batches[0];
    txn_start(ev, ev->inflight);
    return;
  }
  if (ev->sweep_due) {
    ev->sweep_due = false;
    txn_start(ev, NULL);
  }
}

/* ---- outbox bookkeeping --------------------------------------------------------------- */

static void on_db_marked(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->mark_busy = false;
  if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
    size_t done = (size_t)strtoull(PQcmdTuples((PGresult *)res), NULL, 10);
    (void)done;
    /* Everything sent up to the query is marked; later ids stay queued. */
    size_t n = ev->n_marking;
    memmove(ev->sent_ids, ev->sent_ids + n, (ev->n_sent - n) * sizeof(*ev->sent_ids));
    ev->n_sent -= n;
  } else {
    kpi_log(KPI_LOG_WARN, "outbox_mark_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; retrying");
  }
  ev->n_marking = 0;
  if (ev->n_sent && res) ev_outbox_mark_flush(ev);
  if (ev->on_marked) ev->on_marked(ev);
}

void ev_outbox_mark_flush(evaluator *ev) {
  if (ev->mark_busy || ev->n_sent == 0 || !ev->aux) return;
  kpi_buf ids;
  memset(&ids, 0, sizeof(ids));
  kpi_buf_arr_begin(&ids);
  for (size_t i = 0; i < ev->n_sent; i++) arr_int(&ids, ev->sent_ids[i]);
  kpi_buf_arr_end(&ids);
  if (ids.oom) {
    kpi_buf_free(&ids);
    return;
  }
  const char *vals[1] = {ids.s};
  /* Set before queueing: kpi_pgasync_query drives the connection and may complete this very
   * query (a loaded machine, a fast server) before it returns. */
  ev->mark_busy = true;
  ev->n_marking = ev->n_sent;
  if (kpi_pgasync_query(ev->aux,
                        "UPDATE outbox SET sent_at = now(), attempts = attempts + 1"
                        " WHERE id = ANY($1::bigint[]) AND sent_at IS NULL",
                        1, vals, on_db_marked, ev) != 0) {
    ev->mark_busy = false;
    ev->n_marking = 0;
  }
  kpi_buf_free(&ids);
}

/* Sent alerts are only bookkeeping once the notifier has them (its own queue keeps what it
 * mailed), so they are deleted after the retention period; unsent rows never are. A bounded
 * batch per statement keeps each DELETE short (no long lock, no huge WAL burst) after a long
 * time without purging; the callback queues the next batch while batches come back full.
 * Measurements and attainment history are the city's record and are never purged. */
static const char SQL_PURGE[] =
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
    " WHERE sent_at < now() - make_interval(days => $1::int) ORDER BY id LIMIT $2::int)";
#define PURGE_BATCH 1000

static void on_db_purged(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->purge_busy = false;
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    kpi_log(KPI_LOG_WARN, "outbox_purge_failed", "%s; retried at the next sweep",
            res ? PQresultErrorMessage(res) : "connection lost");
    return;
  }
  long n = strtol(PQcmdTuples((PGresult *)res), NULL, 10);
  if (n <= 0) return;
  kpi_metrics_add(ev->m_purged, (double)n);
  kpi_log(KPI_LOG_INFO, "outbox_purged", "%ld sent alerts older than %d days", n,
          ev->outbox_retention_days);
  if (n >= PURGE_BATCH) ev_outbox_purge(ev);
}

void ev_outbox_purge(evaluator *ev) {
  if (ev->purge_busy || ev->stopping || !ev->aux) return;
  char days[16], limit[16];
  snprintf(days, sizeof(days), "%d", ev->outbox_retention_days);
  snprintf(limit, sizeof(limit), "%d", PURGE_BATCH);
  const char *vals[2] = {days, limit};
  ev->purge_busy = true; /* before queueing: see ev_offsets_fetch */
  if (kpi_pgasync_query(ev->aux, SQL_PURGE, 2, vals, on_db_purged, ev) != 0)
    ev->purge_busy = false;
}

/* ---- start-up ------------------------------------------------------------------------- */

/* Returns 0 when ready, 1 when a stop was requested while waiting, -1 on error. */
int ev_db_prepare(evaluator *ev, const char *conninfo) {
  char err[512];
  PGconn *conn = NULL;
  int applied;
  for (int delay = 200;; delay = delay < 5000 ? delay * 2 : 5000) {
    conn = kpi_pg_connect(conninfo, err, sizeof(err));
    if (conn) {
      applied = kpi_pg_migrate(conn, err, sizeof(err));
      if (applied >= 0) break;
      PQfinish(conn);
      conn = NULL;
      /* Another replica (or an operator) holds the migration lock, or the schema waits for
       * `kpi-admin migrate` by its owner: transient, like a database that is not up yet. Any
       * other migration error needs a person. */
      if (applied != KPI_PG_ELOCKTIMEOUT && applied != KPI_PG_ENOTOWNER) {
        kpi_log(KPI_LOG_ERROR, "db_migrate_failed", "%s", err);
        return -1;
      }
      kpi_log(KPI_LOG_WARN,
              applied == KPI_PG_ELOCKTIMEOUT ? "db_migrate_lock_timeout" : "db_schema_not_current",
              "%s; retrying in %d ms", err, delay);
    } else {
      kpi_log(KPI_LOG_WARN, "db_unavailable", "%s; retrying in %d ms", err, delay);
    }
    if (ev_startup_wait((unsigned)delay)) return 1;
  }
  if (applied > 0) kpi_log(KPI_LOG_INFO, "db_migrated", "%d migrations applied", applied);
  char *json = mirror_json(ev->cat);
  char version[16];
  snprintf(version, sizeof(version), "%d", ev->cat->version);
  const char *vals[2] = {json, version};
  PGresult *res = json ? PQexecParams(conn, SQL_MIRROR, 2, NULL, vals, NULL, NULL, 0) : NULL;
  int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!ok)
    kpi_log(KPI_LOG_ERROR, "catalog_mirror_failed", "%s",
            res ? PQresultErrorMessage(res) : "out of memory");
  else
    kpi_log(KPI_LOG_INFO, "catalog_mirrored", "%zu measures, version %d", ev->cat->n_measures,
            ev->cat->version);
  PQclear(res);
  free(json);
  PQfinish(conn);
  return ok ? 0 : -1;
}
