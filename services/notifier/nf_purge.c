/* nf_purge.c: retention: deletes delivered notifications past KPI_NOTIFY_RETENTION_DAYS, in bounded batches. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "kpi_log.h"
#include "notifier.h"

/* One bounded batch of the oldest delivered rows past the retention age. Small batches keep
 * each transaction (and the locks and WAL it holds) short however far behind the purge is;
 * SKIP LOCKED lets replicas purge side by side without waiting on each other. Dead rows are
 * never purged here: they are the record of notices that did not arrive, kept until an
 * operator retries or deletes them (docs/notifier.md). The partial index of 004 serves the
 * scan. */
static const char SQL_PURGE[] =
    "DELETE FROM notifications WHERE id IN ("
    "  SELECT id FROM notifications"
    "  WHERE state = 'sent' AND sent_at < now() - $1::int * interval '1 day'"
    "  ORDER BY sent_at LIMIT $2::int"
    "  FOR UPDATE SKIP LOCKED)";

/* Delay before the next batch when the last one was full: yields the loop and the database to
 * the real work between batches. */
#define NF_PURGE_NEXT_BATCH_MS 50

static void on_uv_purge(uv_timer_t *t);

static void on_pg_purged(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  notifier *nf = arg;
  nf->purge_inflight = false;
  if (nf->stopping) return;
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "purge_failed", "%s (next try in %" PRId64 " ms)",
            res ? PQresultErrorMessage(res) : "connection lost", nf->cfg.purge_interval_ms);
    return;
  }
  const char *n = PQcmdTuples((PGresult *)res);
  int64_t deleted = n && *n ? strtoll(n, NULL, 10) : 0;
  if (deleted <= 0) return;
  kpi_metrics_add(nf->m.purged, (double)deleted);
  kpi_log(KPI_LOG_INFO, "notifications_purged",
          "%" PRId64 " sent notifications older than %" PRId64 " days deleted", deleted,
          nf->cfg.retention_days);
  /* A full batch: more are probably due; the timer then goes back to its interval. */
  if (deleted >= nf->cfg.purge_batch && !nf->shutdown.stopping)
    uv_timer_start(&nf->purge_timer, on_uv_purge, NF_PURGE_NEXT_BATCH_MS,
                   (uint64_t)nf->cfg.purge_interval_ms);
}

static void on_uv_purge(uv_timer_t *t) {
  notifier *nf = t->data;
  if (nf->purge_inflight || !nf->db_ready || nf->shutdown.stopping || !kpi_pgasync_is_up(nf->pg)) return;
  char days[24], limit[24];
  snprintf(days, sizeof(days), "%" PRId64, nf->cfg.retention_days);
  snprintf(limit, sizeof(limit), "%" PRId64, nf->cfg.purge_batch);
  const char *p[] = {days, limit};
  nf->purge_inflight = true; /* cleared by on_pg_purged, or below when the query is refused */
  if (kpi_pgasync_query(nf->pg, SQL_PURGE, 2, p, on_pg_purged, nf) != 0)
    nf->purge_inflight = false;
}

void nf_purge_init(notifier *nf) {
  uv_timer_init(nf->loop, &nf->purge_timer);
  nf->purge_timer.data = nf;
  if (nf->cfg.retention_days == 0) return; /* keep sent rows forever */
  /* The first purge within a minute of start, so that a service restarted more often than
   * the interval still purges; then every interval. Housekeeping never keeps the loop
   * alive. */
  uint64_t first = (uint64_t)nf->cfg.purge_interval_ms;
  if (first > 60000) first = 60000;
  uv_timer_start(&nf->purge_timer, on_uv_purge, first, (uint64_t)nf->cfg.purge_interval_ms);
  uv_unref((uv_handle_t *)&nf->purge_timer);
}

void nf_purge_stop(notifier *nf) { uv_timer_stop(&nf->purge_timer); }

void nf_purge_close(notifier *nf) {
  if (!uv_is_closing((uv_handle_t *)&nf->purge_timer)) uv_close((uv_handle_t *)&nf->purge_timer, NULL);
}
