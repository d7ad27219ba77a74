/* drain.c: the evaluator's draining shutdown: after SIGTERM the transaction under way may
 * finish, then the consumer leaves the group, the producer is flushed and the last deliveries
 * are marked, all within KPI_DRAIN_TIMEOUT_MS (a timer of its own). */
#include "evaluator.h"
#include "kpi_log.h"

static void on_drain_timeout(uv_timer_t *h);

void ev_drain_init(evaluator *ev) {
  uv_timer_init(ev->loop, &ev->life.drain_timer);
  ev->life.drain_timer.data = ev;
}

void ev_drain_begin(evaluator *ev) {
  uv_timer_start(&ev->life.drain_timer, on_drain_timeout, (uint64_t)ev->cfg.drain_timeout_ms, 0);
}

static void drained(evaluator *ev) {
  if (ev->life.closed) return;
  ev->life.on_drained(ev);
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
  else ev_drain_begin(ev); /* a fresh timeout for the marks */
}

static void on_drain_timeout(uv_timer_t *h) {
  evaluator *ev = h->data;
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

void ev_drain_close(evaluator *ev, uv_close_cb on_closed) {
  uv_close((uv_handle_t *)&ev->life.drain_timer, on_closed);
}
