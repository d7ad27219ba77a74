/* ev_drain.c: the evaluator's draining shutdown: after SIGTERM the transaction under way may
 * finish, then the consumer leaves the group, the producer is flushed and the last deliveries
 * are marked, each phase within KPI_DRAIN_TIMEOUT_MS (kpi_shutdown's deadline, re-armed for the
 * marks). */
#include "evaluator.h"
#include "kpi_log.h"

static void drained(evaluator *ev) {
  if (ev->life.closed) return;
  kpi_shutdown_drained(&ev->life.shutdown);
}

static void on_last_mark(evaluator *ev) {
  if (!ev->outbox.mark_busy) drained(ev);
}

/* Runs once the in-flight transaction is over (or the drain timeout passed): leaves the group,
 * flushes the producer, records the last deliveries, closes. */
void ev_finish(evaluator *ev) {
  if (ev->life.finishing) return;
  ev->life.finishing = true;
  ev_batch_clear(ev->sched.pending); /* never committed: the next owner reads it again */
  ev_kafka_stop(ev);
  ev->outbox.on_marked = on_last_mark;
  ev_outbox_mark_flush(ev);
  if (!ev->outbox.mark_busy) drained(ev);
  else kpi_shutdown_rearm(&ev->life.shutdown); /* a fresh timeout for the marks */
}

void ev_drain_expired(kpi_shutdown *sd) {
  evaluator *ev = sd->data;
  if (ev->life.finishing) {
    /* Unmarked alerts are published again at the next start, with the same alert_id. */
    kpi_log(KPI_LOG_WARN, "drain_timeout", "delivered alerts not marked as sent in %lld ms",
            (long long)ev->cfg.drain_timeout_ms);
    drained(ev);
    return;
  }
  kpi_log(KPI_LOG_WARN, "drain_timeout", "the last transaction did not finish in %lld ms",
          (long long)ev->cfg.drain_timeout_ms);
  /* The transaction's callbacks still come (RES NULL once the connection closes); the
   * scheduler ignores them from now on (finishing). */
  ev->sched.txn_busy = false;
  ev_finish(ev);
}
