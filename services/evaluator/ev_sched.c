/* ev_sched.c: the evaluator's scheduler. ev_kick starts the next piece of work on the DB
 * connection (catalog mirror, a batch, the sweep) when none runs; the retry and sweep timers
 * and the database state callback live here. The other modules report up to it only through
 * the callbacks registered in ev_sched_init, so no module calls back into its caller. */
#include "evaluator.h"
#include "kpi_log.h"

int ev_backoff_next(int backoff_ms) { return backoff_ms < 2500 ? backoff_ms * 2 : 5000; }

static void on_retry_timer(uv_timer_t *h) { ev_kick(h->data); }

/* Records may be waiting: pull while the pending batch has room, then kick. */
static void pull_and_kick(evaluator *ev) {
  if (ev_kafka_pull(ev)) ev_kick(ev);
}

static void on_txn_done(evaluator *ev, const ev_txn_result *r) {
  ev_sched *s = &ev->sched;
  s->txn_busy = false;
  if (r->sweep_again) s->sweep_due = true;
  if (r->outcome == EV_TXN_RETRY_NOW) {
    uv_timer_start(&s->retry_timer, on_retry_timer, 0, 0);
    return;
  }
  if (r->outcome == EV_TXN_FAILED) {
    kpi_log(KPI_LOG_WARN, "transaction_failed", "%s (%s); retrying in %d ms", r->err,
            r->sweep ? "sweep" : "batch", s->backoff_ms);
    if (r->sweep) s->sweep_due = true;
    /* After a lost connection the state callback kicks us when it is back; otherwise wait. */
    uv_timer_start(&s->retry_timer, on_retry_timer, (uint64_t)s->backoff_ms, 0);
    s->backoff_ms = ev_backoff_next(s->backoff_ms);
    return;
  }
  s->backoff_ms = EV_BACKOFF_MIN_MS;
  if (r->sweep && !r->sweep_again) s->reload_sweep = false; /* the reload's sweep is done */
  if (r->batch_done) s->inflight = NULL;
  ev_kick(ev);
  /* Inside the COMMIT's callback: the next transaction's statements are sent only once it
   * returns, so the pending batch refills from the next loop iteration instead of now. */
  ev_kafka_pull_soon(ev);
}

static void on_mirror_done(evaluator *ev, bool ok) {
  ev_sched *s = &ev->sched;
  s->txn_busy = false;
  if (!ok) {
    s->reload_due = true; /* the file is read again: harmless */
    uv_timer_start(&s->retry_timer, on_retry_timer, (uint64_t)s->backoff_ms, 0);
    return;
  }
  s->sweep_due = true; /* targets may have changed */
  s->reload_sweep = true;
  ev_kick(ev);
}

static void on_dlq_acked(evaluator *ev) { ev_kick(ev); }

int ev_sched_init(evaluator *ev) {
  ev_sched *s = &ev->sched;
  s->pending = &s->batches[0];
  s->backoff_ms = EV_BACKOFF_MIN_MS;
  s->txn = ev_txn_new(ev, on_txn_done);
  if (!s->txn) return -1;
  ev->kafka.on_records = pull_and_kick;
  ev->kafka.on_dlq_acked = on_dlq_acked;
  uv_timer_init(ev->loop, &s->retry_timer);
  uv_timer_init(ev->loop, &s->sweep_timer);
  s->retry_timer.data = s->sweep_timer.data = ev;
  return 0;
}

/* Housekeeping on AUX that is retried from here: offsets of a pending assignment, marks,
 * purge. */
static void aux_housekeeping(evaluator *ev) {
  ev_offsets_fetch(ev);
  ev_outbox_mark_flush(ev);
  ev_outbox_purge(ev);
}

static void on_sweep_timer(uv_timer_t *h) {
  evaluator *ev = h->data;
  ev->sched.sweep_due = true;
  if (ev->outbox.rescan_due) ev_outbox_rescan(ev);
  aux_housekeeping(ev);
  ev_kick(ev);
}

void ev_sched_start(evaluator *ev) {
  ev->sched.sweep_due = true;
  uv_timer_start(&ev->sched.sweep_timer, on_sweep_timer, (uint64_t)ev->cfg.sweep_ms,
                 (uint64_t)ev->cfg.sweep_ms);
}

void ev_sched_on_pg_state(kpi_pgasync *pg, int up, void *arg) {
  evaluator *ev = arg;
  const char *which = pg == ev->db ? "db" : pg == ev->aux ? "aux" : "api";
  kpi_log(up ? KPI_LOG_INFO : KPI_LOG_WARN, up ? "db_up" : "db_down", "%s connection %s", which,
          up ? "established" : "lost; retrying with backoff");
  if (!up || ev->life.closed || pg == ev->api_db) return;
  if (pg == ev->db) {
    /* A retry timer armed while the database was away would only delay us now. */
    uv_timer_stop(&ev->sched.retry_timer);
    if (ev->outbox.rescan_due && !ev->life.stopping) ev_outbox_rescan(ev);
    ev_kick(ev);
  } else if (!ev->life.stopping) {
    ev_outbox_rescan(ev);
    aux_housekeeping(ev);
  }
}

static void start_txn(evaluator *ev, ev_batch *batch) {
  ev->sched.txn_busy = true; /* before: a BEGIN that cannot be queued reports at once */
  ev_txn_start(ev->sched.txn, batch);
}

/* Reloads the catalog (SIGHUP) between transactions. Returns true when its mirror runs. */
static bool reload_catalog(evaluator *ev) {
  ev_sched *s = &ev->sched;
  s->reload_due = false;
  int rc = ev_mirror_reload(ev, on_mirror_done);
  if (rc == 0) s->txn_busy = true;
  else if (rc < 0) s->reload_due = true;
  return rc == 0;
}

/* While stopping, only the transaction already under way is finished; the rest is re-read
 * later. Returns true when nothing more is to be done here. */
static bool kick_stopping(evaluator *ev) {
  ev_sched *s = &ev->sched;
  if (s->inflight && (s->inflight->bisecting || s->inflight->n_poison)) {
    /* A poison search may need many transactions: leave it. Its ranges committed so far are
     * rewritten as no-ops by the next owner, which finds the poison rows again (their DLQ
     * copies may then exist twice). */
    ev_batch_clear(s->inflight);
    s->inflight = NULL;
  }
  if (!s->inflight) {
    uv_timer_stop(&s->retry_timer);
    uv_timer_stop(&s->sweep_timer);
    ev_finish(ev);
    return true;
  }
  return false;
}

void ev_kick(evaluator *ev) {
  ev_sched *s = &ev->sched;
  if (s->txn_busy || ev->life.closed || ev->life.finishing || !ev->db) return;
  if (ev->life.stopping && kick_stopping(ev)) return;
  if (uv_is_active((uv_handle_t *)&s->retry_timer)) return;
  if (!kpi_pgasync_is_up(ev->db)) return; /* the state callback kicks again */
  if (ev->life.stopping) {
    start_txn(ev, s->inflight);
    return;
  }
  if (s->reload_due && reload_catalog(ev)) return;
  if (s->inflight) {
    /* The transaction storing the offsets waits for the DLQ copies of its poison rows: a
     * record is never skipped without its copy (the delivery report kicks again). */
    if (!ev_poison_searching(s->inflight) && ev->kafka.dlq_inflight > 0) return;
    start_txn(ev, s->inflight);
    return;
  }
  if (s->pending->n_records > 0 && ev->kafka.dlq_inflight == 0) {
    s->inflight = s->pending;
    s->pending = s->inflight == &s->batches[0] ? &s->batches[1] : &s->batches[0];
    start_txn(ev, s->inflight);
    return;
  }
  if (s->sweep_due) {
    s->sweep_due = false;
    ev_txn_set_sweep_cause(s->txn, s->reload_sweep ? EV_CAUSE_CATALOG_RELOAD : EV_CAUSE_SWEEP);
    start_txn(ev, NULL);
  }
}

void ev_sched_close(evaluator *ev, uv_close_cb on_closed) {
  uv_close((uv_handle_t *)&ev->sched.retry_timer, on_closed);
  uv_close((uv_handle_t *)&ev->sched.sweep_timer, on_closed);
}

void ev_sched_free(evaluator *ev) {
  ev_batch_free(&ev->sched.batches[0]);
  ev_batch_free(&ev->sched.batches[1]);
  ev_txn_free(ev->sched.txn);
  ev->sched.txn = NULL;
}

void ev_sched_stop(evaluator *ev) { uv_timer_stop(&ev->sched.sweep_timer); }
