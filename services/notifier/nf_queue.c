/* nf_queue.c: the queue's gauges (depth, age of the oldest row) and its lifetime: rows pending
 * longer than KPI_NOTIFY_MAX_AGE go dead, relay up or down. An unref'd timer runs both. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "kpi_log.h"
#include "notifier.h"

/* Rows older than the queue lifetime ($1 ms) go dead whatever the relay's state, like
 * Postfix's maximal_queue_lifetime, with their last error in the reason. Only rows that are
 * due (not leased to a send in flight, which will record its own outcome) and a bounded batch
 * per run; SKIP LOCKED lets replicas expire side by side. */
static const char SQL_EXPIRE[] =
    "UPDATE notifications n SET state = 'dead', "
    "  last_error = left('queue lifetime exceeded (KPI_NOTIFY_MAX_AGE ' || $2 || ')' "
    "                    || coalesce('; last error: ' || n.last_error, ''), 900) "
    "FROM (SELECT id FROM notifications"
    "      WHERE state = 'pending' AND next_attempt_at <= now()"
    "        AND created_at < now() - $1::bigint * interval '1 millisecond'"
    "      ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED) x "
    "WHERE n.id = x.id "
    "RETURNING n.id, n.state, n.recipient, n.measure_id, n.payload, n.attempts, "
    "  n.last_error AS reason";

/* Queue depth and the age of the oldest queued row: during a relay outage the depth says how
 * much waits and the age how long, against the queue lifetime. */
static const char SQL_DEPTH[] =
    "SELECT count(*) AS depth, "
    "  coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest "
    "FROM notifications WHERE state = 'pending'";

/* The gauges and the expiry run this often (and once a second after start). */
#define NF_QUEUE_REFRESH_MS 5000

static void on_pg_depth(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  notifier *nf = arg;
  nf->depth_inflight = 0;
  if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
    kpi_metrics_set(nf->m.queue_depth, strtod(PQgetvalue(res, 0, PQfnumber(res, "depth")), NULL));
    kpi_metrics_set(nf->m.queue_oldest,
                    strtod(PQgetvalue(res, 0, PQfnumber(res, "oldest")), NULL));
  }
}

static void on_pg_expired(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  notifier *nf = arg;
  nf->expire_inflight = false;
  if (nf->stopping) return;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "expire_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; retried with the next refresh");
    return;
  }
  if (PQntuples(res) == 0) return;
  kpi_metrics_add(nf->m.expired, (double)PQntuples(res));
  nf_dlq_publish_dead(nf, res, NULL);
}

/* Expires rows past the queue lifetime; runs with the depth refresh, relay up or down. */
static void expire(notifier *nf) {
  if (nf->expire_inflight || !nf->db_ready || nf->shutdown.stopping || !kpi_pgasync_is_up(nf->pg)) return;
  char age[24];
  snprintf(age, sizeof(age), "%" PRId64, nf->cfg.max_age_ms);
  const char *p[] = {age, nf->cfg.max_age_text};
  nf->expire_inflight = true;
  if (kpi_pgasync_query(nf->pg, SQL_EXPIRE, 2, p, on_pg_expired, nf) != 0)
    nf->expire_inflight = false;
}

void nf_queue_refresh_depth(notifier *nf) {
  if (nf->depth_inflight || !nf->db_ready || !kpi_pgasync_is_up(nf->pg)) return;
  nf->depth_inflight = 1;
  if (kpi_pgasync_query(nf->pg, SQL_DEPTH, 0, NULL, on_pg_depth, nf) != 0) nf->depth_inflight = 0;
}

static void on_uv_depth_timer(uv_timer_t *t) {
  expire(t->data);
  nf_queue_refresh_depth(t->data);
}

void nf_queue_init(notifier *nf) {
  uv_timer_init(nf->loop, &nf->depth_timer);
  nf->depth_timer.data = nf;
  uv_timer_start(&nf->depth_timer, on_uv_depth_timer, 1000, NF_QUEUE_REFRESH_MS);
  uv_unref((uv_handle_t *)&nf->depth_timer);
}

void nf_queue_stop(notifier *nf) { uv_timer_stop(&nf->depth_timer); }

void nf_queue_close(notifier *nf) {
  if (!uv_is_closing((uv_handle_t *)&nf->depth_timer)) uv_close((uv_handle_t *)&nf->depth_timer, NULL);
}
