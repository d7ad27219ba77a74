/* ev_txn.c: one evaluator transaction on the DB connection. A batch's transaction writes its
 * measurements, the next Kafka offsets, the attainment of every affected measure, its history
 * and the outbox alerts; a poison-search range writes rows only; the sweep runs the same
 * evaluation for every measure. The outcome goes to the scheduler's ev_txn_done_cb. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluator.h"
#include "kpi_aggregate.h"
#include "kpi_log.h"

/* Measurements of the batch, and the running totals of the rows that were really inserted:
 * a replayed event_id inserts nothing and adds nothing. A measurement whose retraction came
 * first (pending, same measure and department) is stored already marked and never counted,
 * (its month's totals row made all the same, with nothing added: the rows are then those of
 * the other order, counted then taken back, so a replay gives the same rows whatever the
 * batch bounds), and its retraction applied; a pending retraction of another measure or department is
 * refused instead, and the measurement counted (docs/corrections.md). SQL_RETRACT_INSERT runs
 * before, so a retraction earlier in the same batch is pending by now. Each totals row's
 * last_day is raised to the latest observed_day inserted into it (a marked row's too: it is an
 * upper bound, migration 009), so the aggregate knows when a month's row is exact at a date.
 *
 * The same statement answers the event_id check: the rows whose event_id is already taken by
 * a different measure or department, stored earlier or by an earlier row of this batch.
 * ON CONFLICT (event_id) DO NOTHING would drop such a record silently although it is not a
 * replay but a client reusing an id (or two clients colliding), so it goes to the DLQ and the
 * transaction is rolled back and run again without it (on_pg_reused). A true replay (same
 * event_id, measure and department) is not returned and stays a silent duplicate. Only a row
 * that was not inserted can be either, so the check (a sort of the batch's ids and a
 * primary-key lookup per row) runs only when fewer rows were inserted than given ($15, the
 * arrays' length): a one-time filter, so a batch of new events (the usual case) pays nothing
 * for it. Every part of the statement sees the snapshot taken before it, so `measurements`
 * there holds what earlier transactions stored, never this statement's rows. Returns the
 * 1-based position in the arrays and the event's first owner (docs/evaluator.md). */
static const char SQL_INSERT[] =
    "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],"
    "   $5::date[], $6::int[], $7::float8[], $8::text[], $9::text[], $10::text[],"
    "   $11::timestamptz[], $12::int[], $13::bigint[], $14::uuid[]) WITH ORDINALITY"
    "   AS u(event_id, measure_id, department, observed_at, observed_day, fiscal_year, value,"
    "   unit, component, note, received_at, kafka_partition, kafka_offset, corrects, i)),"
    " ins AS ("
    " INSERT INTO measurements (event_id, measure_id, department, observed_at, observed_day,"
    "   fiscal_year, value, unit, component, note, received_at, kafka_partition, kafka_offset,"
    "   corrects, retracted_at, retracted_by, retraction_reason, retraction_id)"
    " SELECT u.event_id, u.measure_id, u.department, u.observed_at, u.observed_day,"
    "   u.fiscal_year, u.value, u.unit, u.component, u.note, u.received_at, u.kafka_partition,"
    "   u.kafka_offset, u.corrects, r.received_at, r.department, r.reason, r.event_id FROM u"
    " LEFT JOIN retractions r ON r.retracts = u.event_id AND r.state = 'pending'"
    "   AND r.measure_id = u.measure_id AND r.department = u.department"
    " ON CONFLICT (event_id) DO NOTHING"
    " RETURNING event_id, measure_id, department, date_trunc('month', observed_day)::date AS month,"
    "   fiscal_year, coalesce(component, '') AS component, value, retraction_id, observed_day),"
    " ap AS (UPDATE retractions r SET state = 'applied', applied_at = now() FROM ins"
    "   WHERE r.event_id = ins.retraction_id),"
    " rf AS (UPDATE retractions r SET state = 'refused',"
    "   refusal = format('event %s is measure %s of department %s', ins.event_id,"
    "     ins.measure_id, ins.department)"
    "   FROM ins WHERE r.retracts = ins.event_id AND r.state = 'pending'"
    "   AND r.event_id IS DISTINCT FROM ins.retraction_id),"
    " tot AS (INSERT INTO measure_totals AS t (measure_id, month, fiscal_year, component,"
    "   events, total, last_day)"
    " SELECT measure_id, month, fiscal_year, component,"
    "   count(*) FILTER (WHERE retraction_id IS NULL),"
    "   coalesce(sum(value) FILTER (WHERE retraction_id IS NULL), 0), max(observed_day) FROM ins"
    " GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4"
    " ON CONFLICT (measure_id, month, component) DO UPDATE"
    " SET events = t.events + excluded.events, total = t.total + excluded.total,"
    "   last_day = GREATEST(t.last_day, excluded.last_day)),"
    " w AS (SELECT u.event_id AS e, u.measure_id AS m, u.department AS d, u.i,"
    "   first_value(u.measure_id) OVER f AS m0, first_value(u.department) OVER f AS d0"
    "   FROM u WHERE (SELECT count(*) FROM ins) < $15::bigint"
    "   WINDOW f AS (PARTITION BY u.event_id ORDER BY u.i))"
    " SELECT w.i, coalesce(x.measure_id, w.m0) AS measure_id,"
    "   coalesce(x.department, w.d0) AS department, x.event_id IS NOT NULL AS stored"
    " FROM w LEFT JOIN measurements x ON x.event_id = w.e"
    " WHERE CASE WHEN x.event_id IS NOT NULL THEN x.measure_id <> w.m OR x.department <> w.d"
    "   ELSE w.m0 <> w.m OR w.d0 <> w.d END"
    " ORDER BY w.i";

/* The COPY path (KPI_EVALUATOR_COPY, docs/evaluator.md "Performance"): a batch's measurements
 * go in first by COPY, after a SAVEPOINT, which costs PostgreSQL about half of SQL_INSERT (no
 * array literals to parse, no speculative insertion, no CTEs). COPY inserts every row or fails
 * whole, so it is right exactly when SQL_INSERT would have inserted every row and applied no
 * retraction: no event_id already stored or repeated in the batch (else a unique violation
 * fails it) and no pending retraction naming one of the rows (SQL_COPY_TOTALS checks, after the
 * COPY, so it sees at least what SQL_INSERT would have seen). In every other case the transaction rolls
 * back to the savepoint and runs SQL_INSERT, which decides as always: replays, reused
 * event_ids, pending retractions and data errors keep one code path. Batches with retractions
 * or corrections take SQL_INSERT directly. */
static const char SQL_BEGIN_COPY[] =
    "BEGIN; SAVEPOINT ev_copy; COPY measurements (" EV_COPY_COLUMNS ") FROM STDIN";

/* After SQL_BEGIN_COPY: whether a pending retraction names a measurement this transaction stored
 * (stored_at is the transaction's start; another transaction started in the same microsecond
 * could only cause a needless fallback), and only if none, the batch's monthly totals, counted
 * by the evaluator (ev_copy_totals_build): what SQL_INSERT's `tot` adds when it inserts every
 * row and marks none. Same lock order (ORDER BY) as there. The pending retractions are few and
 * indexed apart (migration 008), so the check costs about nothing when there are none. */
static const char SQL_COPY_TOTALS[] =
    "WITH p AS (SELECT EXISTS (SELECT 1 FROM retractions r JOIN measurements x"
    "   ON x.event_id = r.retracts WHERE r.state = 'pending' AND x.stored_at = now()) AS pending),"
    " tot AS (INSERT INTO measure_totals AS t (measure_id, month, fiscal_year, component,"
    "   events, total, last_day)"
    " SELECT u.m, u.mo, u.fy, u.c, u.n, u.v, u.l FROM unnest($1::text[], $2::date[], $3::int[],"
    "   $4::text[], $5::bigint[], $6::float8[], $7::date[]) AS u(m, mo, fy, c, n, v, l)"
    " WHERE NOT (SELECT pending FROM p) ORDER BY 1, 2, 4"
    " ON CONFLICT (measure_id, month, component) DO UPDATE"
    " SET events = t.events + excluded.events, total = t.total + excluded.total,"
    "   last_day = GREATEST(t.last_day, excluded.last_day))"
    " SELECT pending FROM p";

/* Retractions of the batch ($5 position among the rows written, $6 the event taken back,
 * $7 measure, $8 department) that name a measurement of another measure or department: stored,
 * or a measurement row earlier in the batch ($1..$3 as SQL_INSERT's, $4 their positions). They
 * change nothing and go to the DLQ (`retraction: …`); the transaction is run again without
 * them, as for a reused event_id (SQL_INSERT). A target not known yet is no refusal: the retraction waits
 * (pending). */
static const char SQL_RETRACT_CHECK[] =
    "WITH m AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[])"
    "   AS m(e, mid, d, pos)),"
    " r AS (SELECT * FROM unnest($5::int[], $6::uuid[], $7::text[], $8::text[])"
    "   AS r(pos, target, mid, d))"
    " SELECT r.pos, o.mid AS measure_id, o.d AS department, o.stored FROM r"
    " CROSS JOIN LATERAL (SELECT * FROM ("
    "   SELECT x.measure_id AS mid, x.department AS d, true AS stored, 0 AS pos"
    "   FROM measurements x WHERE x.event_id = r.target"
    "   UNION ALL"
    "   SELECT m.mid, m.d, false, m.pos FROM m WHERE m.e = r.target AND m.pos < r.pos) c"
    "   ORDER BY c.stored DESC, c.pos LIMIT 1) o"
    " WHERE o.mid <> r.mid OR o.d <> r.d"
    " ORDER BY r.pos";

/* Every retraction of the batch, pending until SQL_INSERT or SQL_RETRACT_APPLY applies it.
 * The id derives from the retracted event, measure and department: a replay, or the same
 * department retracting the same measurement again, inserts nothing; a mistaken retraction by
 * another department has another id, so it can never stand in for the owner's. */
static const char SQL_RETRACT_INSERT[] =
    "INSERT INTO retractions (event_id, retracts, measure_id, department, reason, received_at,"
    "  state, correction, kafka_partition, kafka_offset)"
    " SELECT u.e, u.x, u.m, u.d, u.r, u.t, 'pending', u.c, u.p, u.o"
    " FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],"
    "  $6::timestamptz[], $7::uuid[], $8::int[], $9::bigint[]) AS u(e, x, m, d, r, t, c, p, o)"
    " ON CONFLICT (event_id) DO NOTHING";

/* The batch's retractions $1 still pending whose measurement is stored (SQL_RETRACT_CHECK
 * refused the mismatched ones): mark it, take its amount out of the monthly totals (only for a
 * mark really set: a measurement marked already is not subtracted twice), applied. The row's
 * last_day stays: an upper bound of the days it counts is all the aggregate needs. */
static const char SQL_RETRACT_APPLY[] =
    "WITH r AS (SELECT r.event_id, r.retracts, r.measure_id, r.department, r.reason,"
    "   r.received_at FROM retractions r"
    "   WHERE r.event_id = ANY($1::uuid[]) AND r.state = 'pending'),"
    " mk AS (UPDATE measurements x SET retracted_at = r.received_at,"
    "   retracted_by = r.department, retraction_reason = r.reason, retraction_id = r.event_id"
    "   FROM r WHERE x.event_id = r.retracts AND x.measure_id = r.measure_id"
    "   AND x.department = r.department AND x.retracted_at IS NULL"
    "   RETURNING x.measure_id, date_trunc('month', x.observed_day)::date AS month,"
    "   coalesce(x.component, '') AS component, x.value),"
    " ap AS (UPDATE retractions s SET state = 'applied', applied_at = now()"
    "   FROM r JOIN measurements x ON x.event_id = r.retracts AND x.measure_id = r.measure_id"
    "   AND x.department = r.department WHERE s.event_id = r.event_id)"
    " UPDATE measure_totals t SET events = t.events - s.n, total = t.total - s.v"
    " FROM (SELECT measure_id, month, component, count(*) AS n, sum(value) AS v FROM mk"
    "   GROUP BY 1, 2, 3) s"
    " WHERE t.measure_id = s.measure_id AND t.month = s.month AND t.component = s.component";

/* Next offsets of the batch's partitions. Never backwards (GREATEST): during a rebalance the
 * previous owner may commit its last batch after the new owner already stored a later offset,
 * and every record below the larger offset is committed either way, so the larger one is the
 * true position; lowering it would only make the next owner re-read (and a stored offset
 * that moved back would hide how far the group really got). The price: after a topic is
 * deleted and recreated (offsets restart at 0) the group's rows must be deleted by the
 * operator, see docs/evaluator.md. */
static const char SQL_OFFSETS[] =
    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, updated_at)"
    " SELECT $1, $2, p, o, now() FROM unnest($3::int[], $4::bigint[]) AS u(p, o)"
    " ON CONFLICT (consumer_group, topic, partition) DO UPDATE"
    " SET next_offset = GREATEST(consumer_offsets.next_offset, excluded.next_offset),"
    " updated_at = now()";

/* Aggregates of the measures $1 at the evaluation date $9: $4 its fiscal year, $8 the first
 * day of its month, $6 .. $5 the instants from that day to the end of the date (Japan time).
 * Whole months before it come from measure_totals, and so does the current month when no
 * reading of it was observed after the date (the usual case: the date is today); only
 * otherwise is the current month read from measurements, so the cost grows neither with the
 * history nor with the month's readings. The query itself is
 * KPI_AGGREGATE_SQL (common/kpi_aggregate.h), shared with the report's past dates. */
static const char SQL_AGGREGATE[] =
    "SELECT g.*,"
    " (SELECT coalesce(sum(t.events), 0) FROM measure_totals t WHERE t.measure_id = g.id)"
    "   AS events,"
    " a.status AS prev_status, a.stale AS prev_stale, a.value AS prev_value,"
    " a.progress AS prev_progress, (a.as_of - DATE '1970-01-01') AS prev_as_of,"
    " a.alert_state, a.episode, a.reminders,"
    " (a.last_alert_on - DATE '1970-01-01') AS last_alert_on,"
    " a.catalog_version AS prev_catalog_version, a.noted_catalog_version,"
    " mc.baseline_fy AS noted_baseline_fy, mc.baseline AS noted_baseline,"
    " mc.target_fy AS noted_target_fy, mc.target AS noted_target, ack.*"
    " FROM (" KPI_AGGREGATE_SQL ") g"
    " LEFT JOIN attainment a ON a.measure_id = g.id"
    /* The latest acknowledgement: quiets reminders, rides on the alerts (ev_ack.c). */
    EV_ACK_LATEST_SQL
    /* The figures the alerts last stated, for the catalog change note (ev_catalog_note). */
    " LEFT JOIN measure_catalog mc ON mc.measure_id = g.id"
    "  AND mc.catalog_version = a.noted_catalog_version"
    " ORDER BY g.id";

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

/* Every evaluated measure's attainment and alert bookkeeping (ev_attainment_params). */
static const char SQL_ATTAINMENT[] =
    "INSERT INTO attainment AS a (measure_id, as_of, value, progress, expected, status, stale,"
    "  last_observed_at, events, alert_state, episode, last_alert_on, reminders,"
    "  catalog_version, noted_catalog_version, updated_at)"
    " SELECT u.*, now() FROM unnest($1::text[], $2::date[], $3::float8[], $4::float8[],"
    "  $5::float8[], $6::text[], $7::bool[], $8::timestamptz[], $9::bigint[], $10::text[],"
    "  $11::int[], $12::date[], $13::int[], $14::int[], $15::int[]) AS u"
    " ON CONFLICT (measure_id) DO UPDATE SET as_of = excluded.as_of, value = excluded.value,"
    "  progress = excluded.progress, expected = excluded.expected, status = excluded.status,"
    "  stale = excluded.stale, last_observed_at = excluded.last_observed_at,"
    "  events = excluded.events, alert_state = excluded.alert_state,"
    "  episode = excluded.episode, last_alert_on = excluded.last_alert_on,"
    "  reminders = excluded.reminders, catalog_version = excluded.catalog_version,"
    "  noted_catalog_version = excluded.noted_catalog_version, updated_at = now()";

/* The measures whose figures changed, or that a newer catalog evaluated (ev_history_params). */
static const char SQL_HISTORY[] =
    "INSERT INTO attainment_history (measure_id, as_of, value, progress, expected, status, stale,"
    "  catalog_version, cause)"
    " SELECT * FROM unnest($1::text[], $2::date[], $3::float8[], $4::float8[], $5::float8[],"
    "  $6::text[], $7::bool[], $8::int[], $9::text[])";

/* The alerts decided (ev_outbox_params); an alert_id already stored (a retry after a lost
 * COMMIT) returns nothing and is published by the outbox rescan. */
static const char SQL_OUTBOX[] =
    "INSERT INTO outbox (alert_id, topic, msg_key, payload)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])"
    " ON CONFLICT (alert_id) DO NOTHING RETURNING id, topic, msg_key, payload";


/* An outbox row committed by this transaction, published after the COMMIT. */
typedef struct {
  int64_t id;
  char *topic, *key, *payload;
} ev_out;

/* Per-statement parameters, kept between transactions for their memory. */
typedef struct {
  ev_insert_params ins;
  kpi_buf copy_rows; /* SQL_BEGIN_COPY's input, until handed to kpi_pgasync_copy_in */
  ev_copy_totals_params ctot;
  ev_retract_params ret;
  ev_ack_params ack;
  ev_offset_params offs;
  ev_aggregate_params agg;
  ev_attainment_params att;
  ev_history_params hist;
  ev_outbox_params out;
} txn_params;

struct ev_txn {
  evaluator *ev;
  ev_txn_done_cb on_done;
  ev_batch *batch; /* NULL for the sweep */
  size_t lo, hi;   /* the batch's rows written (poison rows skipped) */
  bool offsets;    /* the batch's offsets are stored: its last transaction */
  size_t *idx;     /* the live rows written, every kind (the poison search's unit) */
  size_t n_idx, cap_idx;
  size_t *midx;    /* batch row of each array element of SQL_INSERT */
  size_t n_midx;
  size_t n_ret, n_ack; /* retractions (corrections included) and acknowledgements written */
  bool failed;
  bool lost; /* connection lost: outcome unknown */
  bool redo; /* rows were found reused before any write: run again without them at once */
  bool copying; /* the COPY path: the rest is queued once SQL_COPY_TOTALS answered */
  bool copy_ok; /* SQL_BEGIN_COPY succeeded */
  char sqlstate[6];  /* of the first failing statement, "" when none or connection lost */
  char primary[200]; /* its primary message, for the DLQ reason */
  char err[300];
  uint64_t t0;
  kpi_day as_of;
  unsigned char *seen; /* per catalog measure: affected by this transaction */
  unsigned char *cause; /* per catalog measure: the ev_cause of its history row */
  size_t n_seen;
  ev_cause sweep_cause;
  size_t n_affected;
  /* After a data error in the sweep, the sweep runs one measure per transaction, so that the
   * one measure whose figures PostgreSQL refuses is skipped and every other is evaluated. */
  bool sweep_split;
  size_t sweep_next;
  ev_out *out;
  size_t n_out, cap_out;
  size_t n_hist, n_alerts; /* rows in params.hist and params.out */
  txn_params p;
};

ev_txn *ev_txn_new(evaluator *ev, ev_txn_done_cb on_done) {
  ev_txn *t = calloc(1, sizeof(*t));
  if (!t) return NULL;
  t->ev = ev;
  t->on_done = on_done;
  t->sweep_cause = EV_CAUSE_SWEEP;
  return t;
}

void ev_txn_set_sweep_cause(ev_txn *t, ev_cause cause) { t->sweep_cause = cause; }

static void txn_out_clear(ev_txn *t) {
  for (size_t i = 0; i < t->n_out; i++) {
    free(t->out[i].topic);
    free(t->out[i].key);
    free(t->out[i].payload);
  }
  t->n_out = 0;
}

void ev_txn_free(ev_txn *t) {
  if (!t) return;
  txn_out_clear(t);
  free(t->out);
  free(t->seen);
  free(t->cause);
  free(t->idx);
  free(t->midx);
  ev_params_free(t->p.ins.v, EV_INSERT_NPARAMS);
  kpi_buf_free(&t->p.copy_rows);
  ev_params_free(t->p.ctot.v, EV_COPY_TOTALS_NPARAMS);
  ev_params_free(t->p.ret.v, EV_RETRACT_NPARAMS);
  ev_params_free(t->p.ack.v, EV_ACK_NPARAMS);
  ev_params_free(t->p.offs.v, EV_OFFSET_NARRAYS);
  ev_params_free(t->p.agg.v, EV_AGGREGATE_NPARAMS);
  ev_params_free(t->p.att.v, EV_ATTAINMENT_NPARAMS);
  ev_params_free(t->p.hist.v, EV_HISTORY_NPARAMS);
  ev_params_free(t->p.out.v, EV_OUTBOX_NPARAMS);
  free(t);
}

static void on_pg_rollback(kpi_pgasync *pg, const PGresult *res, void *arg);

/* ---- failure and outcome ---------------------------------------------------------------- */

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

static void txn_finish(ev_txn *t, ev_txn_outcome outcome, bool batch_done, bool sweep_again) {
  ev_txn_result r = {.outcome = outcome,
                     .sweep = t->batch == NULL,
                     .batch_done = batch_done,
                     .sweep_again = sweep_again,
                     .err = t->err};
  t->on_done(t->ev, &r);
}

/* The sweep writes no rows: one measure whose stored figures PostgreSQL refuses to aggregate
 * must not keep every other measure from being evaluated. Measure by measure from now on; the
 * failing one is skipped (logged) until the next sweep. */
static void sweep_data_error(ev_txn *t) {
  const kpi_catalog *cat = t->ev->cat;
  if (!t->sweep_split) {
    t->sweep_split = true;
    t->sweep_next = 0;
    kpi_log(KPI_LOG_WARN, "sweep_split", "%s; evaluating measure by measure", t->err);
  } else {
    const char *id = t->sweep_next < cat->n_measures ? cat->measures[t->sweep_next].id : "?";
    kpi_log(KPI_LOG_ERROR, "measure_evaluation_failed", "%s: %s; skipped until the next sweep",
            id, t->err);
    t->sweep_next++;
  }
  bool again = t->sweep_next < cat->n_measures;
  if (!again) t->sweep_split = false;
  txn_out_clear(t);
  txn_finish(t, EV_TXN_RETRY_NOW, false, again);
}

/* A failed transaction whose cause lies in the data rather than in the database: rows found
 * reused (redo at once without them), or a data error, which either names a poison row (the
 * only row written) or splits the rows written into two halves (ev_poison.c). Returns true when
 * handled; the next transaction then starts at once, without backoff. */
static bool txn_poison(ev_txn *t) {
  bool data_error = !t->lost && ev_sqlstate_is_data_error(t->sqlstate);
  if (t->lost || (!t->redo && !data_error)) return false;
  if (!t->batch) {
    sweep_data_error(t);
    return true;
  }
  ev_batch *b = t->batch;
  if (!t->redo) {
    ev_poison_verdict v = ev_poison_on_data_error(b, t->offsets, t->idx, t->n_idx, t->lo, t->hi);
    if (v == EV_POISON_NOT_IN_ROWS) return false;
    if (v == EV_POISON_ROW) {
      char reason[400];
      snprintf(reason, sizeof(reason), "database: %s %s", t->sqlstate, t->primary);
      ev_dlq_row(t->ev, b, &b->rows[t->idx[0]], reason);
    }
    kpi_log(KPI_LOG_WARN, "batch_poison_search", "%s; %zu rows [%zu, %zu) of %zu, %zu ranges left",
            t->err, t->n_idx, t->lo, t->hi, b->n_rows, b->n_todo);
  }
  txn_out_clear(t);
  txn_finish(t, EV_TXN_RETRY_NOW, false, false);
  return true;
}

static void txn_failed(ev_txn *t) {
  if (txn_poison(t)) return;
  kpi_metrics_inc(t->ev->m.txn_fail);
  /* A lost connection may have hidden a COMMIT that went through. Its outbox rows are then
   * stored but known to nobody: the retry finds their alert_ids taken (ON CONFLICT DO NOTHING
   * returns no row) and the alert decision already recorded, so only a rescan of the outbox
   * publishes them. */
  if (t->lost) t->ev->outbox.rescan_due = true;
  txn_out_clear(t);
  txn_finish(t, EV_TXN_FAILED, false, false);
}

/* Metrics, logs and the batch or sweep bookkeeping of a COMMIT. Returns whether the batch is
 * done (committed with its offsets) and whether the split sweep goes on. */
static void txn_committed_bookkeeping(ev_txn *t, double secs, bool *batch_done, bool *again) {
  evaluator *ev = t->ev;
  *batch_done = *again = false;
  kpi_metrics_observe(ev->m.commit, secs);
  if (t->batch && !t->offsets) {
    ev_poison_range_done(t->batch); /* one range of a poison search written; the batch goes on */
  } else if (t->batch) {
    kpi_metrics_inc(ev->m.batches);
    kpi_metrics_add(ev->m.rows, (double)t->batch->n_rows);
    kpi_log(KPI_LOG_DEBUG, "batch_committed", "%zu records, %zu measurements, %zu measures, %.1f ms",
            t->batch->n_records, t->batch->n_rows, t->n_affected, secs * 1000);
    ev_batch_clear(t->batch);
    *batch_done = true;
  } else if (t->sweep_split) {
    if (++t->sweep_next >= ev->cat->n_measures) {
      t->sweep_split = false;
      kpi_metrics_inc(ev->m.sweeps);
    } else {
      *again = true;
    }
  } else {
    kpi_metrics_inc(ev->m.sweeps);
  }
}

static void txn_committed(ev_txn *t) {
  evaluator *ev = t->ev;
  double secs = (double)(uv_hrtime() - t->t0) / 1e9;
  bool batch_done, again;
  txn_committed_bookkeeping(t, secs, &batch_done, &again);
#ifdef KPI_TEST_HOOKS
  if (ev->cfg.crash_after_commit && t->n_out > 0) {
    /* Test hook (KPI_TEST_CRASH_AFTER_COMMIT=1): die between COMMIT and publishing, the
     * window the outbox exists for. */
    kpi_log(KPI_LOG_WARN, "test_crash_after_commit", "%zu alerts committed, exiting", t->n_out);
    _exit(3);
  }
#endif
  for (size_t i = 0; i < t->n_out; i++)
    ev_outbox_publish(ev, t->out[i].id, t->out[i].topic, t->out[i].key, t->out[i].payload);
  txn_out_clear(t);
  if (ev->outbox.rescan_due) ev_outbox_rescan(ev);
  txn_finish(t, EV_TXN_COMMITTED, batch_done, again);
}

static void txn_done(ev_txn *t, bool ok) {
  if (ok) txn_committed(t);
  else txn_failed(t);
}

/* Queues ROLLBACK after a failure on a live connection; the ROLLBACK's callback ends the
 * transaction. On a lost connection (or when even that cannot be queued) it ends here. */
static void txn_abort(ev_txn *t) {
  if (t->lost || kpi_pgasync_query(t->ev->db, "ROLLBACK", 0, NULL, on_pg_rollback, t) != 0)
    txn_done(t, false);
}

/* ---- statement callbacks ---------------------------------------------------------------- */

static void on_pg_step(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || (PQresultStatus(res) != PGRES_COMMAND_OK &&
               PQresultStatus(res) != PGRES_TUPLES_OK))
    txn_fail(t, res, "statement");
}

static void on_pg_rollback(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  (void)res;
  txn_done(arg, false);
}

static void on_pg_commit(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
#ifdef KPI_TEST_HOOKS
  evaluator *ev = t->ev;
  if (res && !t->failed && t->n_out > 0 && ev->cfg.lose_commits > 0 &&
      PQresultStatus(res) == PGRES_COMMAND_OK) {
    /* Test hook (KPI_TEST_LOSE_COMMITS=N): the COMMIT succeeded, but we act as if the
     * connection had died before its answer came, the "outcome unknown" case. */
    ev->cfg.lose_commits--;
    kpi_log(KPI_LOG_WARN, "test_lose_commit", "%zu alerts committed; acting as if lost", t->n_out);
    res = NULL;
  }
#endif
  if (!res) txn_fail(t, res, "COMMIT");
  else if (PQresultStatus(res) != PGRES_COMMAND_OK) txn_fail(t, res, "COMMIT");
  else if (!t->failed && strcmp(PQcmdStatus((PGresult *)res), "COMMIT") != 0)
    txn_fail(t, res, "COMMIT rolled back");
  txn_done(t, !t->failed);
}

static bool out_add(ev_txn *t, const PGresult *res, int r, int c_id, int c_topic, int c_key,
                    int c_payload) {
  if (t->n_out == t->cap_out) {
    size_t cap = t->cap_out ? t->cap_out * 2 : 16;
    ev_out *o = realloc(t->out, cap * sizeof(*o));
    if (!o) return false; /* published by the next rescan */
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
  return true;
}

static void on_pg_outbox(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    txn_fail(t, res, "outbox");
    return;
  }
  int c_id = PQfnumber(res, "id"), c_topic = PQfnumber(res, "topic"),
      c_key = PQfnumber(res, "msg_key"), c_payload = PQfnumber(res, "payload");
  for (int r = 0; r < PQntuples(res); r++)
    if (!out_add(t, res, r, c_id, c_topic, c_key, c_payload)) return;
}

static void on_pg_reused(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    txn_fail(t, res, "measurements");
    return;
  }
  int n = PQntuples(res);
  if (n == 0) return;
  int c_i = PQfnumber(res, "i"), c_m = PQfnumber(res, "measure_id"),
      c_d = PQfnumber(res, "department"), c_s = PQfnumber(res, "stored");
  for (int r = 0; r < n; r++) {
    size_t i = (size_t)strtoull(PQgetvalue(res, r, c_i), NULL, 10);
    if (i < 1 || i > t->n_midx) continue;
    ev_row *row = &t->batch->rows[t->midx[i - 1]];
    char reason[300];
    snprintf(reason, sizeof(reason),
             "event_id reused: %s is %s for measure %s, department %s (this record: %s, %s)",
             row->event_id, PQgetvalue(res, r, c_s)[0] == 't' ? "stored" : "taken earlier",
             PQgetvalue(res, r, c_m), PQgetvalue(res, r, c_d), row->measure_id,
             row->department);
    ev_dlq_row(t->ev, t->batch, row, reason);
  }
  /* The INSERT dropped them silently: roll back, go again without them. */
  t->redo = true;
  txn_fail(t, res, "event_id reused");
}

/* SQL_RETRACT_CHECK's answer: each retraction (or correction) naming a measurement of
 * another measure or department goes to the DLQ whole, and the transaction is run again
 * without it (docs/corrections.md "Evaluator"). */
static void on_pg_refused(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    txn_fail(t, res, "retraction check");
    return;
  }
  int n = PQntuples(res);
  if (n == 0) return;
  int c_p = PQfnumber(res, "pos"), c_m = PQfnumber(res, "measure_id"),
      c_d = PQfnumber(res, "department"), c_s = PQfnumber(res, "stored");
  for (int r = 0; r < n; r++) {
    size_t pos = (size_t)strtoull(PQgetvalue(res, r, c_p), NULL, 10);
    if (pos < 1 || pos > t->n_idx) continue;
    ev_row *row = &t->batch->rows[t->idx[pos - 1]];
    char reason[400];
    snprintf(reason, sizeof(reason),
             "retraction: %s %s is measure %s of department %s%s; this %s is for measure %s "
             "by department %s",
             row->kind == EV_ROW_RETRACTION ? "the measurement retracted" : "the corrected event",
             row->retracts, PQgetvalue(res, r, c_m), PQgetvalue(res, r, c_d),
             PQgetvalue(res, r, c_s)[0] == 't' ? "" : " (earlier in the batch)",
             row->kind == EV_ROW_RETRACTION ? "retraction" : "correction", row->measure_id,
             row->department);
    ev_dlq_row(t->ev, t->batch, row, reason);
  }
  t->redo = true;
  txn_fail(t, res, "retraction refused");
}

/* ---- evaluation: one row of SQL_AGGREGATE ----------------------------------------------- */

/* Builds the kpi.alert/1 record of one action; AGG gives the latest reading's date, which the
 * mail shows beside the evaluation date. Returns a malloc'd JSON string or NULL. */
static char *alert_payload(const evaluator *ev, const kpi_measure *m, const kpi_attainment *a,
                           const kpi_aggregate *agg, kpi_alert_action act, const char *alert_id,
                           const char *prev_status, int episode, kpi_day as_of,
                           const kpi_catalog_change *change, const kpi_alert_ack *ack) {
  kpi_alert al;
  memset(&al, 0, sizeof(al));
  al.catalog_change = *change;
  al.acknowledgement = *ack;
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
  if (agg->has_latest)
    kpi_day_format(agg->latest_day, al.last_observed_day, sizeof(al.last_observed_day));
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

/* SQL_AGGREGATE's columns, looked up once per result. */
typedef struct {
  int id, latest, latest_day, latest_at, events, window_sum, num, den;
  int prev_status, prev_stale, prev_value, prev_progress, prev_as_of;
  int alert_state, episode, reminders, last_alert_on;
  int prev_catalog_version, noted_version, noted_baseline_fy, noted_baseline, noted_target_fy,
      noted_target;
  ev_ack_cols ack;
} agg_cols;

static agg_cols agg_cols_find(const PGresult *res) {
  agg_cols c = {
      .id = PQfnumber(res, "id"),
      .latest = PQfnumber(res, "latest"),
      .latest_day = PQfnumber(res, "latest_day"),
      .latest_at = PQfnumber(res, "latest_at"),
      .events = PQfnumber(res, "events"),
      .window_sum = PQfnumber(res, "window_sum"),
      .num = PQfnumber(res, "num"),
      .den = PQfnumber(res, "den"),
      .prev_status = PQfnumber(res, "prev_status"),
      .prev_stale = PQfnumber(res, "prev_stale"),
      .prev_value = PQfnumber(res, "prev_value"),
      .prev_progress = PQfnumber(res, "prev_progress"),
      .prev_as_of = PQfnumber(res, "prev_as_of"),
      .alert_state = PQfnumber(res, "alert_state"),
      .episode = PQfnumber(res, "episode"),
      .reminders = PQfnumber(res, "reminders"),
      .last_alert_on = PQfnumber(res, "last_alert_on"),
      .prev_catalog_version = PQfnumber(res, "prev_catalog_version"),
      .noted_version = PQfnumber(res, "noted_catalog_version"),
      .noted_baseline_fy = PQfnumber(res, "noted_baseline_fy"),
      .noted_baseline = PQfnumber(res, "noted_baseline"),
      .noted_target_fy = PQfnumber(res, "noted_target_fy"),
      .noted_target = PQfnumber(res, "noted_target"),
      .ack = ev_ack_cols_find(res),
  };
  return c;
}

static int getint(const PGresult *res, int r, int c, int def) {
  return PQgetisnull(res, r, c) ? def : atoi(PQgetvalue(res, r, c));
}

static bool same_double(bool has_a, double a, bool has_b, double b) {
  if (has_a != has_b) return false;
  return !has_a || fabs(a - b) <= 1e-12 * (fabs(a) + fabs(b) + 1);
}

static kpi_aggregate row_aggregate(const PGresult *res, int r, const agg_cols *c) {
  kpi_aggregate_cols ac = {c->latest, c->latest_day, c->window_sum, c->num, c->den};
  kpi_aggregate agg;
  kpi_aggregate_read(res, r, &ac, &agg);
  return agg;
}

/* The alert bookkeeping stored with the previous attainment (HAD_ROW: there was one). */
static kpi_alert_track row_alert_track(const PGresult *res, int r, const agg_cols *c,
                                       bool had_row) {
  kpi_alert_track prev;
  memset(&prev, 0, sizeof(prev));
  if (had_row && !PQgetisnull(res, r, c->alert_state))
    snprintf(prev.state, sizeof(prev.state), "%s", PQgetvalue(res, r, c->alert_state));
  prev.episode = getint(res, r, c->episode, 0);
  prev.reminders = getint(res, r, c->reminders, 0);
  if (!PQgetisnull(res, r, c->last_alert_on)) {
    prev.has_last_alert = true;
    prev.last_alert_on = (kpi_day)atoi(PQgetvalue(res, r, c->last_alert_on));
  }
  return prev;
}

/* The catalog version and figures the alerts about the measure last stated. */
static ev_noted row_noted(const PGresult *res, int r, const agg_cols *c) {
  ev_noted n;
  memset(&n, 0, sizeof(n));
  n.has_version = !PQgetisnull(res, r, c->noted_version);
  n.version = getint(res, r, c->noted_version, 0);
  n.has_figures = n.has_version && !PQgetisnull(res, r, c->noted_target);
  if (n.has_figures) {
    n.figures.baseline_fy = getint(res, r, c->noted_baseline_fy, 0);
    n.figures.baseline = strtod(PQgetvalue(res, r, c->noted_baseline), NULL);
    n.figures.target_fy = getint(res, r, c->noted_target_fy, 0);
    n.figures.target = strtod(PQgetvalue(res, r, c->noted_target), NULL);
  }
  return n;
}

/* A history row is written when anything shown differs from the stored attainment, or when a
 * newer catalog than the stored attainment's evaluated it (the record says from when on the
 * new figures counted, even when the status stayed). */
static bool row_changed(const PGresult *res, int r, const agg_cols *c, const kpi_attainment *a,
                        kpi_day as_of, int catalog_version) {
  if (PQgetisnull(res, r, c->prev_status)) return true;
  return getint(res, r, c->prev_catalog_version, catalog_version) < catalog_version ||
         strcmp(PQgetvalue(res, r, c->prev_status), kpi_status_name(a->status)) != 0 ||
         (PQgetvalue(res, r, c->prev_stale)[0] == 't') != a->stale ||
         getint(res, r, c->prev_as_of, -1) != as_of ||
         !same_double(!PQgetisnull(res, r, c->prev_value),
                      strtod(PQgetvalue(res, r, c->prev_value), NULL), a->has_value, a->value) ||
         !same_double(!PQgetisnull(res, r, c->prev_progress),
                      strtod(PQgetvalue(res, r, c->prev_progress), NULL), a->has_progress,
                      a->progress);
}

/* Adds the alert ACT of measure M to the outbox parameters. Returns false when out of memory. */
static bool add_alert(ev_txn *t, const kpi_measure *m, const kpi_attainment *a,
                      const kpi_aggregate *agg, kpi_alert_action act, const char *name,
                      const char *prev_status, int episode, const kpi_catalog_change *change,
                      const kpi_alert_ack *ack) {
  evaluator *ev = t->ev;
  char alert_id[KPI_UUID_STRLEN + 1];
  kpi_alert_id(name, alert_id);
  char *payload =
      alert_payload(ev, m, a, agg, act, alert_id, prev_status, episode, t->as_of, change, ack);
  if (!payload) return false;
  ev_outbox_params_add(&t->p.out, alert_id, ev->cfg.topics[KPI_TOPIC_ALERTS].name, m->id,
                       payload);
  free(payload);
  t->n_alerts++;
  char as_of[16];
  kpi_day_format(t->as_of, as_of, sizeof(as_of));
  kpi_log(KPI_LOG_INFO, "alert_decided", "%s %s (%s, as of %s)", kpi_alert_action_type(act), name,
          alert_id, as_of);
  return true;
}

/* Evaluates row R of SQL_AGGREGATE's result: its attainment, history row and alert. */
static void eval_row(ev_txn *t, const PGresult *res, int r, const agg_cols *c) {
  evaluator *ev = t->ev;
  const kpi_measure *m = kpi_catalog_measure(ev->cat, PQgetvalue(res, r, c->id));
  if (!m) return;
  kpi_aggregate agg = row_aggregate(res, r, c);
  kpi_attainment a;
  kpi_attainment_eval(m, &agg, t->as_of, ev->cfg.lag_ratio, &a);
  bool had_row = !PQgetisnull(res, r, c->prev_status);
  const char *prev_status = had_row ? PQgetvalue(res, r, c->prev_status) : NULL;
  kpi_alert_track prev = row_alert_track(res, r, c, had_row), next;
  char name[160];
  kpi_alert_action act = kpi_alert_decide(m->id, &prev, &a, t->as_of, ev->cfg.repeat_days, &next,
                                          name, sizeof(name));
  /* An acknowledgement quiets the reminders of the state it was written for. */
  kpi_ack_hold hold;
  ev_ack_hold_read(res, r, &c->ack, &hold);
  act = kpi_alert_apply_ack(act, &hold, &a, t->as_of, &prev, &next, name, sizeof(name));
  const char *latest_at = PQgetisnull(res, r, c->latest_at) ? NULL
                                                             : PQgetvalue(res, r, c->latest_at);
  /* The change note rides on this alert and is marked stated by the same attainment row, in
   * the same transaction as the outbox row: once, even across a lost COMMIT's retry. */
  int cv = ev->cat->version;
  ev_noted noted = row_noted(res, r, c);
  kpi_catalog_change change;
  int noted_next = ev_catalog_note(m, cv, &noted, act != KPI_ALERT_NONE, &change);
  ev_attainment_params_add(&t->p.att, m->id, t->as_of, &a, latest_at,
                           PQgetvalue(res, r, c->events), &next, cv, noted_next);
  if (row_changed(res, r, c, &a, t->as_of, cv)) {
    size_t i = (size_t)(m - ev->cat->measures);
    ev_cause cause = t->batch ? (i < t->n_seen && t->cause ? (ev_cause)t->cause[i]
                                                            : EV_CAUSE_MEASUREMENT)
                              : t->sweep_cause;
    ev_history_params_add(&t->p.hist, m->id, t->as_of, &a, cv, cause);
    t->n_hist++;
  }
  if (act == KPI_ALERT_NONE) return;
  kpi_alert_ack ack;
  ev_ack_alert_read(res, r, &c->ack, ev->cat, &ack);
  if (!add_alert(t, m, &a, &agg, act, name, prev_status, next.episode, &change, &ack))
    txn_fail(t, res, "alert encoding: out of memory");
}

/* Queues the attainment, history and outbox writes, then COMMIT. Every fixed statement of the
 * transaction is a named prepared statement (kpi_pgasync_query_prepared): parsed once per
 * connection instead of once per batch (docs/evaluator.md "Performance"). */
static int queue_writes(ev_txn *t, kpi_pgasync *pg) {
  const char *vals[EV_ATTAINMENT_NPARAMS];
  int rc = kpi_pgasync_query_prepared(
      pg, "ev_attainment", SQL_ATTAINMENT, EV_ATTAINMENT_NPARAMS,
      ev_params_values(t->p.att.v, EV_ATTAINMENT_NPARAMS, vals), on_pg_step, t);
  if (!rc && t->n_hist)
    rc = kpi_pgasync_query_prepared(pg, "ev_history", SQL_HISTORY, EV_HISTORY_NPARAMS,
                                    ev_params_values(t->p.hist.v, EV_HISTORY_NPARAMS, vals),
                                    on_pg_step, t);
  if (!rc && t->n_alerts)
    rc = kpi_pgasync_query_prepared(pg, "ev_outbox", SQL_OUTBOX, EV_OUTBOX_NPARAMS,
                                    ev_params_values(t->p.out.v, EV_OUTBOX_NPARAMS, vals),
                                    on_pg_outbox, t);
  if (!rc) rc = kpi_pgasync_query(pg, "COMMIT", 0, NULL, on_pg_commit, t);
  return rc;
}

/* The aggregates are in: evaluate every measure, then queue the writes and COMMIT. */
static void on_pg_aggregate(kpi_pgasync *pg, const PGresult *res, void *arg) {
  ev_txn *t = arg;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) txn_fail(t, res, "aggregate");
  if (t->failed) {
    txn_abort(t);
    return;
  }
  ev_params_begin(t->p.att.v, EV_ATTAINMENT_NPARAMS);
  ev_params_begin(t->p.hist.v, EV_HISTORY_NPARAMS);
  ev_params_begin(t->p.out.v, EV_OUTBOX_NPARAMS);
  t->n_hist = t->n_alerts = 0;
  agg_cols c = agg_cols_find(res);
  for (int r = 0; r < PQntuples(res); r++) eval_row(t, res, r, &c);
  ev_params_end(t->p.att.v, EV_ATTAINMENT_NPARAMS);
  ev_params_end(t->p.hist.v, EV_HISTORY_NPARAMS);
  ev_params_end(t->p.out.v, EV_OUTBOX_NPARAMS);
  bool oom = ev_params_oom(t->p.att.v, EV_ATTAINMENT_NPARAMS) ||
             ev_params_oom(t->p.hist.v, EV_HISTORY_NPARAMS) ||
             ev_params_oom(t->p.out.v, EV_OUTBOX_NPARAMS);
  if (oom || t->failed) txn_fail(t, res, "out of memory");
  if (!oom && !t->failed && queue_writes(t, pg) == 0) return;
  /* Statements already queued run first; the ROLLBACK (or the lost connection) ends it. */
  txn_fail(t, NULL, "queueing");
  if (kpi_pgasync_query(pg, "ROLLBACK", 0, NULL, on_pg_rollback, t) != 0) txn_done(t, false);
}

/* ---- start: rows, affected measures, statements ----------------------------------------- */

static void mark_affected(ev_txn *t, const kpi_measure *m) {
  size_t i = (size_t)(m - t->ev->cat->measures);
  if (i < t->n_seen && !t->seen[i]) {
    t->seen[i] = 1;
    t->n_affected++;
  }
}

static void txn_reset(ev_txn *t, ev_batch *batch) {
  t->batch = batch;
  t->failed = t->lost = false;
  t->err[0] = '\0';
  t->redo = false;
  t->copying = t->copy_ok = false;
  t->sqlstate[0] = '\0';
  t->t0 = uv_hrtime();
  t->as_of = ev_config_today(&t->ev->cfg);
  t->n_affected = 0;
  t->n_idx = t->n_midx = t->n_ret = t->n_ack = 0;
  txn_out_clear(t);
}

/* The live (not poison) rows of the range this transaction writes, into t->idx. */
static void select_rows(ev_txn *t) {
  ev_batch *batch = t->batch;
  if (batch) {
    ev_poison_next_range(batch, &t->lo, &t->hi, &t->offsets);
  } else {
    t->lo = t->hi = 0;
    t->offsets = false;
  }
  if (t->hi - t->lo > t->cap_idx) {
    size_t *idx = realloc(t->idx, (t->hi - t->lo) * sizeof(*idx));
    size_t *midx = realloc(t->midx, (t->hi - t->lo) * sizeof(*midx));
    if (idx) t->idx = idx;
    if (midx) t->midx = midx;
    if (!idx || !midx) abort(); /* nothing is lost: the batch is read again after the restart */
    t->cap_idx = t->hi - t->lo;
  }
  for (size_t i = t->lo; batch && i < t->hi; i++) {
    const ev_row *r = &batch->rows[i];
    if (r->poison) continue;
    t->idx[t->n_idx++] = i;
    if (r->kind == EV_ROW_MEASUREMENT) t->midx[t->n_midx++] = i;
    if (ev_row_retracts(r)) t->n_ret++;
    if (r->kind == EV_ROW_ACK) t->n_ack++;
  }
}

/* The measures to evaluate: those of the rows written, or every one for the sweep (one at a
 * time once the sweep is split). */
static void select_measures(ev_txn *t) {
  const kpi_catalog *cat = t->ev->cat;
  if (t->n_seen < cat->n_measures) {
    free(t->seen);
    free(t->cause);
    t->seen = calloc(cat->n_measures, 1);
    t->cause = calloc(cat->n_measures, 1);
    t->n_seen = t->seen && t->cause ? cat->n_measures : 0;
  }
  if (t->n_seen) {
    memset(t->seen, 0, t->n_seen);
    memset(t->cause, EV_CAUSE_MEASUREMENT, t->n_seen);
  }
  if (t->batch) {
    /* An acknowledgement changes no figure: it is stored, its measure not evaluated. */
    for (size_t k = 0; k < t->n_idx; k++) {
      const ev_row *r = &t->batch->rows[t->idx[k]];
      const kpi_measure *m = r->kind == EV_ROW_ACK ? NULL : kpi_catalog_measure(cat, r->measure_id);
      if (!m) continue;
      mark_affected(t, m);
      size_t i = (size_t)(m - cat->measures);
      if (i < t->n_seen)
        t->cause[i] = (unsigned char)ev_cause_merge((ev_cause)t->cause[i], ev_row_cause(r));
    }
  } else if (t->sweep_split) {
    if (t->sweep_next < cat->n_measures) mark_affected(t, &cat->measures[t->sweep_next]);
  } else {
    for (size_t i = 0; i < cat->n_measures; i++) mark_affected(t, &cat->measures[i]);
  }
}

/* The retraction check, the retractions (pending), the measurements, then the pending
 * retractions whose measurement is stored by now (docs/corrections.md "Evaluator"). */
static int queue_retractions(ev_txn *t, int (*then)(ev_txn *t)) {
  kpi_pgasync *db = t->ev->db;
  const ev_retract_params *r = &t->p.ret;
  const ev_insert_params *m = &t->p.ins;
  const char *check[8] = {kpi_buf_str(&m->event_id), kpi_buf_str(&m->measure_id),
                          kpi_buf_str(&m->department), kpi_buf_str(&r->m_pos),
                          kpi_buf_str(&r->pos), kpi_buf_str(&r->retracts),
                          kpi_buf_str(&r->measure_id), kpi_buf_str(&r->department)};
  const char *vals[EV_RETRACT_NPARAMS];
  ev_params_values(r->v, EV_RETRACT_NPARAMS, vals);
  int rc = kpi_pgasync_query_prepared(db, "ev_retract_check", SQL_RETRACT_CHECK, 8, check,
                                      on_pg_refused, t);
  if (!rc)
    rc = kpi_pgasync_query_prepared(db, "ev_retract_insert", SQL_RETRACT_INSERT, 9, vals,
                                    on_pg_step, t);
  if (!rc) rc = then(t);
  if (!rc)
    rc = kpi_pgasync_query_prepared(db, "ev_retract_apply", SQL_RETRACT_APPLY, 1, vals,
                                    on_pg_step, t);
  return rc;
}

/* The measurements and, in the same statement, the event_id check (SQL_INSERT). */
static int queue_measurements(ev_txn *t) {
  if (!t->n_midx) return 0;
  const char *vals[EV_INSERT_NPARAMS + 1];
  ev_params_values(t->p.ins.v, EV_INSERT_NPARAMS, vals);
  char n_rows[24];
  snprintf(n_rows, sizeof(n_rows), "%zu", t->n_midx);
  vals[EV_INSERT_NPARAMS] = n_rows;
  return kpi_pgasync_query_prepared(t->ev->db, "ev_insert", SQL_INSERT, EV_INSERT_NPARAMS + 1,
                                    vals, on_pg_reused, t);
}

/* The measurements and retractions by SQL_INSERT and the retraction statements. */
static int queue_insert_rows(ev_txn *t) {
  ev_insert_params_build(&t->p.ins, t->batch, t->midx, t->n_midx);
  if (ev_params_oom(t->p.ins.v, EV_INSERT_NPARAMS)) return -1;
  if (!t->n_ret) return queue_measurements(t);
  ev_retract_params_build(&t->p.ret, t->batch, t->idx, t->n_idx);
  if (ev_params_oom(t->p.ret.v, EV_RETRACT_NPARAMS)) return -1;
  return queue_retractions(t, queue_measurements);
}

static void on_pg_copied(kpi_pgasync *pg, const PGresult *res, void *arg);
static void on_pg_copy_totals(kpi_pgasync *pg, const PGresult *res, void *arg);

/* Whether the transaction writes its measurements by COPY: a batch with measurements and no
 * retraction or correction (SQL_BEGIN_COPY). */
static bool copy_path(const ev_txn *t) {
  return t->batch && t->n_idx && t->ev->cfg.copy && t->n_midx && !t->n_ret;
}

/* The COPY input of the rows written: the text built while the batch filled (ev_batch.copy)
 * when they are all of its rows and none is poison, as in the usual transaction, else built
 * now. Detached: kpi_pgasync frees it once sent, so a batch's rows are not held a second time
 * while they are written (a retry builds it again). NULL when out of memory. */
static char *copy_rows_take(ev_txn *t, size_t *len) {
  ev_batch *b = t->batch;
  if (t->lo == 0 && t->hi == b->n_rows && b->n_poison == 0) {
    ev_copy_rows_extend(b);
    b->copy_upto = 0;
    return kpi_buf_detach(&b->copy, len);
  }
  ev_copy_rows_build(&t->p.copy_rows, b, t->midx, t->n_midx);
  return kpi_buf_detach(&t->p.copy_rows, len);
}

/* The COPY path's statements: "BEGIN; SAVEPOINT ev_copy; COPY …" in one round trip (a
 * multi-statement string; the first failure, if any, is its result), then SQL_COPY_TOTALS;
 * on_pg_copy_totals queues the rest. */
static int queue_copy(ev_txn *t) {
  kpi_pgasync *db = t->ev->db;
  size_t len = 0;
  char *rows = copy_rows_take(t, &len);
  if (!rows || ev_copy_totals_build(&t->p.ctot, t->batch, t->midx, t->n_midx) != 0) {
    free(rows);
    return -1;
  }
  const char *vals[EV_COPY_TOTALS_NPARAMS];
  ev_params_values(t->p.ctot.v, EV_COPY_TOTALS_NPARAMS, vals);
  int rc = kpi_pgasync_copy_in(db, SQL_BEGIN_COPY, &rows, len, on_pg_copied, t);
  if (!rc)
    rc = kpi_pgasync_query_prepared(db, "ev_copy_totals", SQL_COPY_TOTALS,
                                    EV_COPY_TOTALS_NPARAMS, vals, on_pg_copy_totals, t);
  if (!rc) t->copying = true;
  return rc;
}

/* The measurements and retractions: by COPY when the batch has measurements and no retraction
 * or correction (SQL_BEGIN_COPY), else by SQL_INSERT. */
static int queue_rows(ev_txn *t) {
  if (!t->batch || !t->n_idx) return 0;
  return copy_path(t) ? queue_copy(t) : queue_insert_rows(t);
}

/* The acknowledgements; the one place a record type's statements are queued besides
 * queue_rows. */
static int queue_acks(ev_txn *t) {
  if (!t->batch || !t->n_ack) return 0;
  ev_ack_params_build(&t->p.ack, t->batch, t->idx, t->n_idx);
  if (ev_params_oom(t->p.ack.v, EV_ACK_NPARAMS)) return -1;
  const char *vals[EV_ACK_NPARAMS];
  ev_params_values(t->p.ack.v, EV_ACK_NPARAMS, vals);
  return kpi_pgasync_query_prepared(t->ev->db, "ev_ack_insert", ev_ack_sql_insert,
                                    EV_ACK_NPARAMS, vals, on_pg_step, t);
}

static int queue_offsets(ev_txn *t) {
  if (!t->batch || !t->offsets || !t->batch->n_offs) return 0;
  evaluator *ev = t->ev;
  ev_offset_params_build(&t->p.offs, t->batch);
  if (ev_params_oom(t->p.offs.v, EV_OFFSET_NARRAYS)) return -1;
  const char *vals[4] = {ev->cfg.group, ev->cfg.topics[KPI_TOPIC_MEASUREMENTS].name,
                         kpi_buf_str(&t->p.offs.partition), kpi_buf_str(&t->p.offs.next_offset)};
  return kpi_pgasync_query_prepared(ev->db, "ev_offsets", SQL_OFFSETS, 4, vals, on_pg_step, t);
}

/* The locks of the measures to evaluate, then their aggregates (on_pg_aggregate goes on). */
static int queue_aggregate(ev_txn *t) {
  evaluator *ev = t->ev;
  ev_aggregate_params_build(&t->p.agg, ev->cat, t->seen, t->n_seen, t->as_of);
  if (ev_params_oom(t->p.agg.v, EV_AGGREGATE_NPARAMS)) return -1;
  const char *vals[EV_AGGREGATE_NPARAMS];
  ev_params_values(t->p.agg.v, EV_AGGREGATE_NPARAMS, vals);
  int rc = kpi_pgasync_query_prepared(ev->db, "ev_lock", SQL_LOCK, 1, vals, on_pg_step, t);
  if (!rc)
    rc = kpi_pgasync_query_prepared(ev->db, "ev_aggregate", SQL_AGGREGATE, EV_AGGREGATE_NPARAMS,
                                    vals, on_pg_aggregate, t);
  return rc;
}

/* Everything after the measurements: acknowledgements, offsets, locks and aggregates (then
 * on_pg_aggregate goes on). */
static int queue_after_rows(ev_txn *t) {
  int rc = queue_acks(t);
  if (!rc) rc = queue_offsets(t);
  if (!rc) rc = queue_aggregate(t);
  return rc;
}

/* SQL_BEGIN_COPY's outcome: kept for on_pg_copy_totals. Its failure is no failure of the
 * transaction (the savepoint undoes it); a lost connection is. */
static void on_pg_copied(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ev_txn *t = arg;
  if (!res) {
    txn_fail(t, res, "COPY");
    return;
  }
  t->copy_ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!t->copy_ok) {
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    kpi_log(KPI_LOG_DEBUG, "copy_fallback", "COPY refused (%s); the INSERT statement decides",
            state ? state : "?");
  }
}

/* SQL_COPY_TOTALS answered: the COPY stands (no pending retraction names its rows) and the
 * rest follows, or the transaction rolls back to the savepoint and SQL_INSERT writes the
 * measurements instead. */
static void on_pg_copy_totals(kpi_pgasync *pg, const PGresult *res, void *arg) {
  ev_txn *t = arg;
  evaluator *ev = t->ev;
  /* After a refused COPY this statement fails too (the transaction is aborted): expected. */
  if (!res || (t->copy_ok && PQresultStatus(res) != PGRES_TUPLES_OK)) txn_fail(t, res, "totals");
  if (t->failed) {
    txn_abort(t);
    return;
  }
  bool pending = t->copy_ok && PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
  int rc = 0;
  if (t->copy_ok && !pending) {
    kpi_metrics_inc(ev->m.copy_batches);
  } else {
    kpi_metrics_inc(ev->m.copy_fallbacks);
    rc = kpi_pgasync_query(pg, "ROLLBACK TO SAVEPOINT ev_copy", 0, NULL, on_pg_step, t);
    if (!rc) rc = queue_insert_rows(t);
  }
  if (!rc) rc = queue_after_rows(t);
  if (rc == 0) return;
  txn_fail(t, NULL, "queueing");
  if (kpi_pgasync_query(pg, "ROLLBACK", 0, NULL, on_pg_rollback, t) != 0) txn_done(t, false);
}

void ev_txn_start(ev_txn *t, ev_batch *batch) {
  evaluator *ev = t->ev;
  txn_reset(t, batch);
  select_rows(t);
  select_measures(t);
  /* The COPY path sends its BEGIN with the COPY (queue_copy). */
  if (!copy_path(t) && kpi_pgasync_query(ev->db, "BEGIN", 0, NULL, on_pg_step, t) != 0) {
    txn_fail(t, NULL, "BEGIN");
    txn_done(t, false);
    return;
  }
  int rc = queue_rows(t);
  if (!rc && !t->copying) rc = queue_after_rows(t);
  if (rc != 0) {
    txn_fail(t, NULL, "queueing");
    if (kpi_pgasync_query(ev->db, "ROLLBACK", 0, NULL, on_pg_rollback, t) != 0)
      txn_done(t, false);
  }
}
