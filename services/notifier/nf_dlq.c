/* nf_dlq.c: the dead-letter producer: poison alert records and given-up notifications go to
 * kpi.alerts.dlq.v1 with the reason in the kpi-error header. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_log.h"
#include "notifier.h"

/* The message opaque of one dead letter, freed in its delivery callback. */
typedef struct {
  notifier *nf;
  nf_dlq_cb cb;
  void *arg;
} dlq_opaque;

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)opaque;
  kpi_log(rd_kafka_fatal_error(rk, NULL, 0) ? KPI_LOG_ERROR : KPI_LOG_WARN, "kafka_error",
          "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

rd_kafka_conf_t *nf_kafka_conf(const kpi_kafka_prop *defaults, const kpi_kafka_prop *fixed,
                               char *errstr, size_t errstr_size) {
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("kpi-notifier", defaults, fixed, errstr, errstr_size);
  if (conf) rd_kafka_conf_set_error_cb(conf, on_kafka_error);
  return conf;
}

int nf_dlq_publish(notifier *nf, const char *key, size_t key_len, const void *value,
                   size_t value_len, const char *reason, const char *const *hdrs,
                   nf_dlq_cb on_done, void *arg) {
  dlq_opaque *op = malloc(sizeof(*op));
  rd_kafka_headers_t *h = rd_kafka_headers_new(4);
  if (!op || !h) {
    free(op);
    if (h) rd_kafka_headers_destroy(h);
    return -1;
  }
  op->nf = nf;
  op->cb = on_done;
  op->arg = arg;
  /* Reasons quote SMTP replies and decoder messages, which may name a mailbox ("550 5.1.1
   * <a@b>: unknown user"): dead-letter headers carry no addresses. */
  char why[700];
  kpi_mail_redact_addresses(reason, why, sizeof(why));
  rd_kafka_header_add(h, "kpi-error", -1, why, -1);
  for (const char *const *p = hdrs; p && p[0] && p[1]; p += 2)
    rd_kafka_header_add(h, p[0], -1, p[1], -1);
  rd_kafka_resp_err_t err = rd_kafka_producev(
      nf->producer, RD_KAFKA_V_TOPIC(nf->topics[KPI_TOPIC_ALERTS_DLQ].name),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(key, key ? key_len : 0),
      RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(op),
      RD_KAFKA_V_END);
  if (err) {
    kpi_log(KPI_LOG_WARN, "dlq_produce_failed", "%s", rd_kafka_err2str(err));
    rd_kafka_headers_destroy(h);
    free(op);
    kpi_metrics_inc(nf->m.dlq_failed);
    return -1;
  }
  return 0;
}

/* Column numbers of a RETURNING list of dead or retried rows. */
typedef struct {
  int id, state, reason, measure, payload, attempts;
} dead_cols;

static void publish_dead_row(notifier *nf, const PGresult *res, int i, const dead_cols *c,
                             const char *reason) {
  kpi_metrics_inc(nf->m.dead);
  const char *id = PQgetvalue(res, i, c->id), *attempts = PQgetvalue(res, i, c->attempts);
  const char *measure = PQgetvalue(res, i, c->measure);
  const char *payload = PQgetvalue(res, i, c->payload);
  /* Neither the log nor the dead letter names the recipient: the notification id finds the
   * row, which holds it (nf_dlq_publish also masks addresses quoted in REASON). */
  char why_log[600];
  kpi_mail_redact_addresses(reason, why_log, sizeof(why_log));
  kpi_log(KPI_LOG_ERROR, "notification_dead", "notification %s (%s) gave up after %s attempts: %s",
          id, measure, attempts, why_log);
  const char *hdrs[] = {"kpi-attempts", attempts, "kpi-notification-id", id, NULL};
  char why[700];
  snprintf(why, sizeof(why), "smtp: %s", reason);
  /* The row stays in the table as 'dead' with last_error: the database is the record, the
   * dead letter is the signal, so a failed publish is logged and not retried. */
  nf_dlq_publish(nf, measure, strlen(measure), payload, strlen(payload), why, hdrs, NULL, NULL);
}

void nf_dlq_publish_dead(notifier *nf, const PGresult *res, const char *reason) {
  dead_cols c = {.id = PQfnumber(res, "id"),
                 .state = PQfnumber(res, "state"),
                 .reason = PQfnumber(res, "reason"),
                 .measure = PQfnumber(res, "measure_id"),
                 .payload = PQfnumber(res, "payload"),
                 .attempts = PQfnumber(res, "attempts")};
  for (int i = 0; i < PQntuples(res); i++) {
    if (strcmp(PQgetvalue(res, i, c.state), "dead") != 0) continue;
    const char *why = reason ? reason : c.reason >= 0 ? PQgetvalue(res, i, c.reason) : "unknown";
    publish_dead_row(nf, res, i, &c, why);
  }
}

static void on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  (void)rk;
  (void)opaque;
  dlq_opaque *op = msg->_private;
  if (!op) return;
  notifier *nf = op->nf;
  if (msg->err) {
    kpi_log(KPI_LOG_ERROR, "dlq_delivery_failed", "%s: %s", rd_kafka_topic_name(msg->rkt),
            rd_kafka_err2str(msg->err));
    kpi_metrics_inc(nf->m.dlq_failed);
  } else {
    kpi_metrics_inc(nf->m.dlq_published);
  }
  if (op->cb) op->cb(nf, msg->err ? 0 : 1, op->arg);
  free(op);
}

int nf_dlq_start(notifier *nf, char *errstr, size_t errstr_size) {
  char err[512];
  /* The dead-letter producer: idempotent, acks from all in-sync replicas. */
  static const kpi_kafka_prop defaults[] = {{"enable.idempotence", "true"}, {NULL, NULL}};
  static const kpi_kafka_prop fixed[] = {{"log.queue", "true"}, {NULL, NULL}};
  rd_kafka_conf_t *conf = nf_kafka_conf(defaults, fixed, errstr, errstr_size);
  if (!conf) return -2; /* a KPI_KAFKA_PROP_* refused: bad configuration */
  rd_kafka_conf_set_dr_msg_cb(conf, on_kafka_delivery);
  nf->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!nf->producer) {
    rd_kafka_conf_destroy(conf);
    snprintf(errstr, errstr_size, "producer: %s", err);
    return -1;
  }
  rd_kafka_set_log_queue(nf->producer, NULL);
  /* The main queue carries only callback-served events (delivery reports, logs, errors):
   * kpi_kafka_waker_serve runs them all on the loop. */
  nf->producer_waker.data = nf;
  int rc = kpi_kafka_waker_init(nf->loop, &nf->producer_waker,
                                rd_kafka_queue_get_main(nf->producer), kpi_kafka_waker_serve);
  if (rc) {
    snprintf(errstr, errstr_size, "producer waker: %s", uv_strerror(rc));
    return -1;
  }
  nf->producer_waker_on = true;
  return 0;
}

int nf_dlq_pending(const notifier *nf) { return nf->producer ? rd_kafka_outq_len(nf->producer) : 0; }

void nf_dlq_flush(notifier *nf) {
  if (!nf->producer) return;
  rd_kafka_flush(nf->producer, 5000);
  if (rd_kafka_outq_len(nf->producer) > 0) {
    rd_kafka_purge(nf->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(nf->producer, 100);
  }
}

void nf_dlq_close(notifier *nf) {
  if (!nf->producer) return;
  if (nf->producer_waker_on) kpi_kafka_waker_close(&nf->producer_waker, NULL);
  nf->producer_waker_on = false;
  rd_kafka_destroy(nf->producer);
  nf->producer = NULL;
}
