/* ev_outbox.c: the evaluator's outbox alerts after their COMMIT: publishing them, their delivery
 * reports, marking them sent, re-publishing what was left unsent, and purging old sent rows.
 * Everything on the AUX connection, so none of it slips into a batch transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_log.h"

static const char SQL_RESCAN[] =
    "SELECT id, topic, msg_key, payload FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1000";
#define RESCAN_BATCH 1000

static const char SQL_MARK[] =
    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1"
    " WHERE id = ANY($1::bigint[]) AND sent_at IS NULL";

/* Sent alerts are only bookkeeping once the notifier has them (its own queue keeps what it
 * mailed), so they are deleted after the retention period; unsent rows never are. A bounded
 * batch per statement keeps each DELETE short (no long lock, no huge WAL burst) after a long
 * time without purging; the callback queues the next batch while batches come back full.
 * Measurements and attainment history are the city's record and are never purged. */
static const char SQL_PURGE[] =
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
    " WHERE sent_at < now() - make_interval(days => $1::int) ORDER BY id LIMIT $2::int)";
#define PURGE_BATCH 1000

void ev_outbox_free(evaluator *ev) {
  ev_outbox *ob = &ev->outbox;
  free(ob->sent_ids);
  ob->sent_ids = NULL;
  while (ob->inflight) {
    ev_outmsg *o = ob->inflight;
    ob->inflight = o->next;
    free(o);
  }
}

static bool outbox_known(const ev_outbox *ob, int64_t id) {
  for (const ev_outmsg *o = ob->inflight; o; o = o->next)
    if (o->id == id) return true;
  /* Delivered and only waiting for its sent_at: a rescan must not publish it a second time. */
  for (size_t i = 0; i < ob->n_sent; i++)
    if (ob->sent_ids[i] == id) return true;
  return false;
}

void ev_outbox_publish(evaluator *ev, int64_t id, const char *topic, const char *key,
                       const char *payload) {
  ev_outbox *ob = &ev->outbox;
  if (outbox_known(ob, id)) return;
  ev_outmsg *om = calloc(1, sizeof(*om));
  if (!om) {
    ob->rescan_due = true;
    return;
  }
  om->id = id;
  rd_kafka_resp_err_t err = rd_kafka_producev(
      ev->kafka.producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
      RD_KAFKA_V_VALUE((void *)payload, strlen(payload)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_OPAQUE(om), RD_KAFKA_V_END);
  if (err) {
    kpi_log(KPI_LOG_WARN, "alert_produce_failed", "outbox %lld: %s; will retry", (long long)id,
            rd_kafka_err2str(err));
    free(om);
    ob->rescan_due = true;
    return;
  }
  om->next = ob->inflight;
  ob->inflight = om;
  ob->n_inflight++;
  kpi_metrics_set(ev->m.outbox, (double)ob->n_inflight);
}

static void outbox_forget(evaluator *ev, ev_outmsg *om) {
  ev_outbox *ob = &ev->outbox;
  for (ev_outmsg **pp = &ob->inflight; *pp; pp = &(*pp)->next) {
    if (*pp == om) {
      *pp = om->next;
      ob->n_inflight--;
      break;
    }
  }
  free(om);
  kpi_metrics_set(ev->m.outbox, (double)ob->n_inflight);
}

void ev_outbox_on_delivery(evaluator *ev, ev_outmsg *om, rd_kafka_resp_err_t err) {
  ev_outbox *ob = &ev->outbox;
  int64_t id = om->id;
  outbox_forget(ev, om);
  if (err) {
    kpi_log(KPI_LOG_WARN, "alert_delivery_failed", "outbox %lld: %s; will retry", (long long)id,
            rd_kafka_err2str(err));
    ob->rescan_due = true;
    return;
  }
  kpi_metrics_inc(ev->m.alerts);
  if (ob->n_sent == ob->cap_sent) {
    size_t cap = ob->cap_sent ? ob->cap_sent * 2 : 64;
    int64_t *ids = realloc(ob->sent_ids, cap * sizeof(*ids));
    if (!ids) return; /* re-published after a restart: same alert_id */
    ob->sent_ids = ids;
    ob->cap_sent = cap;
  }
  ob->sent_ids[ob->n_sent++] = id;
  ev_outbox_mark_flush(ev);
}

static void on_pg_rescan(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev_outbox *ob = &ev->outbox;
  ob->rescan_busy = false;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    ob->rescan_due = true;
    return;
  }
  int c_id = PQfnumber(res, "id"), c_topic = PQfnumber(res, "topic"),
      c_key = PQfnumber(res, "msg_key"), c_payload = PQfnumber(res, "payload");
  int n = PQntuples(res);
  for (int r = 0; r < n && !ev->life.stopping; r++)
    ev_outbox_publish(ev, strtoll(PQgetvalue(res, r, c_id), NULL, 10),
                      PQgetvalue(res, r, c_topic), PQgetvalue(res, r, c_key),
                      PQgetvalue(res, r, c_payload));
  if (n > 0) kpi_log(KPI_LOG_INFO, "outbox_republished", "%d unsent alerts", n);
  if (n == RESCAN_BATCH) ob->rescan_due = true;
}

void ev_outbox_rescan(evaluator *ev) {
  ev_outbox *ob = &ev->outbox;
  if (ob->rescan_busy || ev->life.stopping) return;
  ob->rescan_due = false;
  if (kpi_pgasync_query(ev->aux, SQL_RESCAN, 0, NULL, on_pg_rescan, ev) != 0) {
    ob->rescan_due = true;
    return;
  }
  ob->rescan_busy = true;
}

static void on_pg_marked(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev_outbox *ob = &ev->outbox;
  ob->mark_busy = false;
  if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
    /* Everything sent up to the query is marked; later ids stay queued. */
    size_t n = ob->n_marking;
    memmove(ob->sent_ids, ob->sent_ids + n, (ob->n_sent - n) * sizeof(*ob->sent_ids));
    ob->n_sent -= n;
  } else {
    kpi_log(KPI_LOG_WARN, "outbox_mark_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; retrying");
  }
  ob->n_marking = 0;
  if (ob->n_sent && res) ev_outbox_mark_flush(ev);
  if (ob->on_marked) ob->on_marked(ev);
}

void ev_outbox_mark_flush(evaluator *ev) {
  ev_outbox *ob = &ev->outbox;
  if (ob->mark_busy || ob->n_sent == 0 || !ev->aux) return;
  kpi_buf ids = KPI_BUF_INIT;
  kpi_buf_arr_begin(&ids);
  for (size_t i = 0; i < ob->n_sent; i++) ev_arr_int(&ids, ob->sent_ids[i]);
  kpi_buf_arr_end(&ids);
  const char *vals[1] = {kpi_buf_str(&ids)};
  /* The result callback never runs inside kpi_pgasync_query (kpi_pgasync.h), so the flags may
   * be set once the query is queued. */
  if (!ids.oom && kpi_pgasync_query(ev->aux, SQL_MARK, 1, vals, on_pg_marked, ev) == 0) {
    ob->mark_busy = true;
    ob->n_marking = ob->n_sent;
  }
  kpi_buf_free(&ids);
}

static void on_pg_purged(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->outbox.purge_busy = false;
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    kpi_log(KPI_LOG_WARN, "outbox_purge_failed", "%s; retried at the next sweep",
            res ? PQresultErrorMessage(res) : "connection lost");
    return;
  }
  long n = strtol(PQcmdTuples((PGresult *)res), NULL, 10);
  if (n <= 0) return;
  kpi_metrics_add(ev->m.purged, (double)n);
  kpi_log(KPI_LOG_INFO, "outbox_purged", "%ld sent alerts older than %d days", n,
          ev->cfg.outbox_retention_days);
  if (n >= PURGE_BATCH) ev_outbox_purge(ev);
}

void ev_outbox_purge(evaluator *ev) {
  if (ev->outbox.purge_busy || ev->life.stopping || !ev->aux) return;
  char days[16], limit[16];
  snprintf(days, sizeof(days), "%d", ev->cfg.outbox_retention_days);
  snprintf(limit, sizeof(limit), "%d", PURGE_BATCH);
  const char *vals[2] = {days, limit};
  if (kpi_pgasync_query(ev->aux, SQL_PURGE, 2, vals, on_pg_purged, ev) == 0)
    ev->outbox.purge_busy = true;
}
