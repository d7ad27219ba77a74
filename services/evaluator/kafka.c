/* kafka.c: the evaluator's Kafka side: the consumer (assignment at offsets kept in PostgreSQL,
 * records into batches, poison records to the DLQ) and the producer (DLQ, outbox alerts). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_env.h"
#include "kpi_log.h"

/* Distinguishes DLQ messages from outbox messages in the delivery report. */
static char dlq_tag;

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  evaluator *ev = opaque;
  (void)rk;
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) ev->broker_up = false;
  kpi_log(err == RD_KAFKA_RESP_ERR__TRANSPORT ? KPI_LOG_DEBUG : KPI_LOG_WARN, "kafka_error",
          "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* librdkafka statistics (every few seconds): broker reachability for /readyz and the consumer
 * lag, computed against the offsets committed in PostgreSQL since the group's Kafka offsets are
 * never committed. */
static int on_kafka_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  evaluator *ev = opaque;
  (void)rk;
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!root) return 0;
  bool up = false;
  const cJSON *brokers = cJSON_GetObjectItemCaseSensitive(root, "brokers");
  const cJSON *b;
  cJSON_ArrayForEach(b, brokers) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(b, "state");
    if (cJSON_IsString(st) && strcmp(st->valuestring, "UP") == 0) up = true;
  }
  ev->broker_up = up;
  const cJSON *topics = cJSON_GetObjectItemCaseSensitive(root, "topics");
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(topics, ev->topics[KPI_TOPIC_MEASUREMENTS].name);
  const cJSON *parts = cJSON_GetObjectItemCaseSensitive(t, "partitions");
  int64_t lag = 0;
  const cJSON *p;
  cJSON_ArrayForEach(p, parts) {
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(p, "desired");
    const cJSON *hi = cJSON_GetObjectItemCaseSensitive(p, "hi_offset");
    /* app_offset: one past the last record handed to us; -1 before the first. */
    const cJSON *app = cJSON_GetObjectItemCaseSensitive(p, "app_offset");
    if (!cJSON_IsNumber(app) || app->valuedouble < 0)
      app = cJSON_GetObjectItemCaseSensitive(p, "next_offset");
    if (!cJSON_IsTrue(desired) || !cJSON_IsNumber(hi) || !cJSON_IsNumber(app)) continue;
    if (hi->valuedouble >= 0 && app->valuedouble >= 0 && hi->valuedouble > app->valuedouble)
      lag += (int64_t)(hi->valuedouble - app->valuedouble);
  }
  ev->consumer_lag = lag;
  kpi_metrics_set(ev->m_lag, (double)lag);
  cJSON_Delete(root);
  return 0;
}

/* ---- assignment at the offsets stored with the data --------------------------------- */

static void on_db_offsets(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->assign_busy = false;
  if (!ev->want_assign || ev->stopping) return;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    kpi_log(KPI_LOG_WARN, "offsets_read_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; retrying when it is back");
    return; /* retried from the aux on-state callback or the sweep */
  }
  rd_kafka_topic_partition_list_t *parts = ev->want_assign;
  ev->want_assign = NULL;
  int c_part = PQfnumber(res, "partition"), c_next = PQfnumber(res, "next_offset");
  for (int i = 0; i < parts->cnt; i++) {
    /* No row: nothing of this partition was ever stored, so read it from the beginning. */
    parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    for (int r = 0; r < PQntuples(res); r++) {
      if (atoi(PQgetvalue(res, r, c_part)) == parts->elems[i].partition) {
        parts->elems[i].offset = strtoll(PQgetvalue(res, r, c_next), NULL, 10);
        break;
      }
    }
  }
  rd_kafka_resp_err_t err = rd_kafka_assign(ev->consumer, parts);
  char list[512] = "";
  size_t n = 0;
  for (int i = 0; i < parts->cnt && n < sizeof(list) - 32; i++)
    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%d@%lld", i ? "," : "",
                          (int)parts->elems[i].partition, (long long)parts->elems[i].offset);
  if (err) kpi_log(KPI_LOG_ERROR, "kafka_assign_failed", "%s", rd_kafka_err2str(err));
  else kpi_log(KPI_LOG_INFO, "partitions_assigned", "%s at %s", ev->topics[0].name, list);
  kpi_metrics_inc(ev->m_assign);
  rd_kafka_topic_partition_list_destroy(parts);
  ev_kafka_pull(ev);
}

void ev_offsets_fetch(evaluator *ev) {
  if (!ev->want_assign || ev->assign_busy || ev->stopping) return;
  const char *params[2] = {ev->group, ev->topics[KPI_TOPIC_MEASUREMENTS].name};
  /* Busy before queueing: kpi_pgasync_query may run callbacks (even this one) before it
   * returns, and a flag set afterwards would then stay set forever. */
  ev->assign_busy = true;
  int rc = kpi_pgasync_query(ev->aux,
                             "SELECT partition, next_offset FROM consumer_offsets"
                             " WHERE consumer_group = $1 AND topic = $2",
                             2, params, on_db_offsets, ev);
  if (rc != 0) ev->assign_busy = false;
}

static void on_kafka_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts, void *opaque) {
  evaluator *ev = opaque;
  if (ev->want_assign) {
    rd_kafka_topic_partition_list_destroy(ev->want_assign);
    ev->want_assign = NULL;
  }
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && !ev->stopping) {
    /* The assignment is applied once the offsets are read from PostgreSQL (librdkafka waits
     * for the rd_kafka_assign call); the Kafka-committed offsets are never used. */
    ev->want_assign = rd_kafka_topic_partition_list_copy(parts);
    ev_offsets_fetch(ev);
    return;
  }
  kpi_log(KPI_LOG_INFO, "partitions_revoked", "%d partitions", parts->cnt);
  ev_batch_drop_partitions(ev->pending, parts);
  rd_kafka_assign(rk, NULL);
}

/* ---- records ------------------------------------------------------------------------ */

static void batch_set_offset(ev_batch *b, int32_t partition, int64_t next) {
  for (size_t i = 0; i < b->n_offs; i++) {
    if (b->offs[i].partition == partition) {
      if (next > b->offs[i].next_offset) b->offs[i].next_offset = next;
      return;
    }
  }
  if (b->n_offs == b->cap_offs) {
    size_t cap = b->cap_offs ? b->cap_offs * 2 : 16;
    ev_offset *o = realloc(b->offs, cap * sizeof(*o));
    if (!o) abort(); /* losing an offset would stall or skip: better to restart */
    b->offs = o;
    b->cap_offs = cap;
  }
  b->offs[b->n_offs].partition = partition;
  b->offs[b->n_offs].next_offset = next;
  b->n_offs++;
}

static ev_row *batch_add_row(ev_batch *b) {
  if (b->n_rows == b->cap_rows) {
    size_t cap = b->cap_rows ? b->cap_rows * 2 : 256;
    ev_row *r = realloc(b->rows, cap * sizeof(*r));
    if (!r) abort();
    b->rows = r;
    b->cap_rows = cap;
  }
  return &b->rows[b->n_rows++];
}

static int dlq_produce(evaluator *ev, const char *topic, const void *key, size_t key_len,
                       const void *value, size_t value_len, rd_kafka_headers_t *hdrs) {
  for (int attempt = 0;; attempt++) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        ev->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&dlq_tag), RD_KAFKA_V_END);
    if (!err) {
      ev->dlq_inflight++;
      return 0;
    }
    /* A full local queue empties as deliveries complete; the DLQ is rare, so waiting here
     * briefly is cheaper than carrying the record around. */
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt > 100) {
      kpi_log(KPI_LOG_ERROR, "dlq_produce_failed", "%s", rd_kafka_err2str(err));
      rd_kafka_headers_destroy(hdrs);
      return -1;
    }
    rd_kafka_poll(ev->producer, 50);
  }
}

static void dlq_send(evaluator *ev, const void *key, size_t key_len, const void *value,
                     size_t value_len, int32_t partition, int64_t offset, const char *reason) {
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
  char num[32];
  rd_kafka_header_add(hdrs, "kpi-error", -1, reason, -1);
  rd_kafka_header_add(hdrs, "kpi-source-topic", -1, ev->topics[KPI_TOPIC_MEASUREMENTS].name, -1);
  snprintf(num, sizeof(num), "%d", (int)partition);
  rd_kafka_header_add(hdrs, "kpi-source-partition", -1, num, -1);
  snprintf(num, sizeof(num), "%lld", (long long)offset);
  rd_kafka_header_add(hdrs, "kpi-source-offset", -1, num, -1);
  kpi_log(KPI_LOG_WARN, "record_to_dlq", "partition %d offset %lld: %s", (int)partition,
          (long long)offset, reason);
  if (dlq_produce(ev, ev->topics[KPI_TOPIC_MEASUREMENTS_DLQ].name, key, key_len, value,
                  value_len, hdrs) != 0) {
    /* Never skip a record silently: without its DLQ copy it must be read again. */
    kpi_log(KPI_LOG_ERROR, "dlq_unavailable", "exiting so the record is re-read after restart");
    exit(1);
  }
  kpi_metrics_inc(ev->m_dlq);
}

/* The consumer subscribes to the measurements topic only, so the source topic is that one. */
static void to_dlq(evaluator *ev, const rd_kafka_message_t *msg, const char *reason) {
  dlq_send(ev, msg->key, msg->key_len, msg->payload, msg->len, msg->partition, msg->offset,
           reason);
}

void ev_dlq_row(evaluator *ev, ev_batch *b, ev_row *r, const char *reason) {
  if (r->poison) return;
  r->poison = true;
  b->n_poison++;
  const char *raw = b->raw + r->raw_off;
  dlq_send(ev, r->key_len ? raw : NULL, r->key_len, raw + r->key_len, r->val_len, r->partition,
           r->offset, reason);
}

/* Keeps a copy of the record's key and value for a DLQ copy later (the database may refuse a
 * row that decoded fine). One arena per batch: a realloc now and then instead of a malloc per
 * record. */
static void batch_keep_raw(ev_batch *b, ev_row *r, const rd_kafka_message_t *msg) {
  size_t need = msg->key_len + msg->len;
  if (b->raw_len + need > b->raw_cap) {
    size_t cap = b->raw_cap ? b->raw_cap : 65536;
    while (cap < b->raw_len + need) cap *= 2;
    char *raw = realloc(b->raw, cap);
    if (!raw) abort(); /* as for the rows: a record we cannot keep must be re-read */
    b->raw = raw;
    b->raw_cap = cap;
  }
  r->raw_off = b->raw_len;
  r->key_len = (uint32_t)msg->key_len;
  r->val_len = (uint32_t)msg->len;
  if (msg->key_len) memcpy(b->raw + b->raw_len, msg->key, msg->key_len);
  memcpy(b->raw + b->raw_len + msg->key_len, msg->payload, msg->len);
  b->raw_len += need;
}

static void errors_text(const kpi_errors *errs, char *out, size_t size) {
  size_t n = 0;
  out[0] = '\0';
  for (size_t i = 0; i < errs->n && n + 1 < size; i++) {
    int w = snprintf(out + n, size - n, "%s%s%s%s: %s", i ? "; " : "", errs->items[i].field,
                     errs->items[i].field[0] ? " " : "", errs->items[i].code,
                     errs->items[i].message);
    if (w < 0) break;
    n += (size_t)w;
    if (n >= size) n = size - 1;
  }
}

static void handle_message(evaluator *ev, rd_kafka_message_t *msg) {
  if (msg->err) {
    if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
      kpi_log(KPI_LOG_WARN, "kafka_consume_error", "%s", rd_kafka_message_errstr(msg));
    return;
  }
  kpi_metrics_inc(ev->m_records);
  ev_batch *b = ev->pending;
  kpi_measurement m;
  kpi_errors errs;
  errs.n = 0;
  char reason[512];
  reason[0] = '\0';
  if (!msg->payload || msg->len == 0) {
    snprintf(reason, sizeof(reason), "decode: empty record");
  } else if (kpi_measurement_parse(msg->payload, msg->len, KPI_PARSE_RECORD, &m, &errs) != 0) {
    char text[400];
    errors_text(&errs, text, sizeof(text));
    snprintf(reason, sizeof(reason), "decode: %s", text);
  } else {
    /* Catalog rules too (unknown measure, wrong unit, component…): such a record would corrupt
     * the figures. "In the future" is not checked: the ingest did, at receipt. */
    if (!kpi_measurement_check(&m, ev->cat, INT64_MAX / 4, &errs)) {
      char text[400];
      errors_text(&errs, text, sizeof(text));
      snprintf(reason, sizeof(reason), "catalog: %s", text);
    }
  }
  if (reason[0]) {
    to_dlq(ev, msg, reason);
  } else {
    ev_row *r = batch_add_row(b);
    memcpy(r->event_id, m.event_id, sizeof(r->event_id));
    memcpy(r->measure_id, m.measure_id, sizeof(r->measure_id));
    memcpy(r->department, m.department, sizeof(r->department));
    memcpy(r->unit, m.unit, sizeof(r->unit));
    r->observed_ms = m.observed_ms;
    r->received_ms = m.received_ms;
    r->observed_day = m.observed_day;
    r->value = m.value;
    r->component = m.component;
    r->note = m.has_note ? strdup(m.note) : NULL;
    r->partition = msg->partition;
    r->offset = msg->offset;
    r->poison = false;
    batch_keep_raw(b, r, msg);
  }
  batch_set_offset(b, msg->partition, msg->offset + 1);
  b->n_records++;
}

void ev_kafka_pull(evaluator *ev) {
  if (ev->stopping || !ev->consumer) return;
  while (ev->pending->n_records < (size_t)ev->batch_max) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(ev->consumer, 0);
    if (!msg) break;
    handle_message(ev, msg);
    rd_kafka_message_destroy(msg);
    if (ev->stopping) break;
  }
  ev_kick(ev);
}

static void on_consumer_ready(kpi_kafka_waker *w) { ev_kafka_pull(w->data); }

/* ---- producer: DLQ and outbox ------------------------------------------------------- */

static void outbox_forget(evaluator *ev, ev_outmsg *om) {
  for (ev_outmsg **pp = &ev->outbox_inflight; *pp; pp = &(*pp)->next) {
    if (*pp == om) {
      *pp = om->next;
      ev->n_outbox_inflight--;
      break;
    }
  }
  free(om);
  kpi_metrics_set(ev->m_outbox, (double)ev->n_outbox_inflight);
}

static void on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  evaluator *ev = opaque;
  (void)rk;
  if (msg->_private == &dlq_tag) {
    if (msg->err) {
      /* Re-send until it is stored: its offset waits for it. */
      kpi_log(KPI_LOG_WARN, "dlq_delivery_failed", "%s; retrying", rd_kafka_err2str(msg->err));
      rd_kafka_headers_t *hdrs = NULL, *copy = NULL;
      if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        copy = rd_kafka_headers_copy(hdrs);
      ev->dlq_inflight--;
      if (dlq_produce(ev, rd_kafka_topic_name(msg->rkt), msg->key, msg->key_len, msg->payload,
                      msg->len, copy ? copy : rd_kafka_headers_new(1)) != 0)
        exit(1);
      return;
    }
    ev->dlq_inflight--;
    ev_kick(ev);
    return;
  }
  ev_outmsg *om = msg->_private;
  int64_t id = om->id;
  outbox_forget(ev, om);
  if (msg->err) {
    kpi_log(KPI_LOG_WARN, "alert_delivery_failed", "outbox %lld: %s; will retry", (long long)id,
            rd_kafka_err2str(msg->err));
    ev->rescan_due = true;
    return;
  }
  kpi_metrics_inc(ev->m_alerts);
  if (ev->n_sent == ev->cap_sent) {
    size_t cap = ev->cap_sent ? ev->cap_sent * 2 : 64;
    int64_t *ids = realloc(ev->sent_ids, cap * sizeof(*ids));
    if (!ids) return; /* re-published after a restart: same alert_id */
    ev->sent_ids = ids;
    ev->cap_sent = cap;
  }
  ev->sent_ids[ev->n_sent++] = id;
  ev_outbox_mark_flush(ev);
}

void ev_outbox_publish(evaluator *ev, int64_t id, const char *topic, const char *key,
                       const char *payload) {
  for (ev_outmsg *o = ev->outbox_inflight; o; o = o->next)
    if (o->id == id) return;
  /* Delivered and only waiting for its sent_at: a rescan must not publish it a second time. */
  for (size_t i = 0; i < ev->n_sent; i++)
    if (ev->sent_ids[i] == id) return;
  ev_outmsg *om = calloc(1, sizeof(*om));
  if (!om) {
    ev->rescan_due = true;
    return;
  }
  om->id = id;
  rd_kafka_resp_err_t err = rd_kafka_producev(
      ev->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
      RD_KAFKA_V_VALUE((void *)payload, strlen(payload)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_OPAQUE(om), RD_KAFKA_V_END);
  if (err) {
    kpi_log(KPI_LOG_WARN, "alert_produce_failed", "outbox %lld: %s; will retry", (long long)id,
            rd_kafka_err2str(err));
    free(om);
    ev->rescan_due = true;
    return;
  }
  om->next = ev->outbox_inflight;
  ev->outbox_inflight = om;
  ev->n_outbox_inflight++;
  kpi_metrics_set(ev->m_outbox, (double)ev->n_outbox_inflight);
}

static void on_db_rescan(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->rescan_busy = false;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    ev->rescan_due = true;
    return;
  }
  int c_id = PQfnumber(res, "id"), c_topic = PQfnumber(res, "topic"),
      c_key = PQfnumber(res, "msg_key"), c_payload = PQfnumber(res, "payload");
  int n = PQntuples(res);
  for (int r = 0; r < n && !ev->stopping; r++)
    ev_outbox_publish(ev, strtoll(PQgetvalue(res, r, c_id), NULL, 10),
                      PQgetvalue(res, r, c_topic), PQgetvalue(res, r, c_key),
                      PQgetvalue(res, r, c_payload));
  if (n > 0) kpi_log(KPI_LOG_INFO, "outbox_republished", "%d unsent alerts", n);
  if (n == 1000) ev->rescan_due = true;
}

void ev_outbox_rescan(evaluator *ev) {
  if (ev->rescan_busy || ev->stopping) return;
  ev->rescan_due = false;
  ev->rescan_busy = true; /* before queueing: see ev_offsets_fetch */
  if (kpi_pgasync_query(ev->aux,
                        "SELECT id, topic, msg_key, payload FROM outbox WHERE sent_at IS NULL"
                        " ORDER BY id LIMIT 1000",
                        0, NULL, on_db_rescan, ev) != 0) {
    ev->rescan_busy = false;
    ev->rescan_due = true;
  }
}

/* ---- set-up and shutdown ------------------------------------------------------------ */

int ev_kafka_start(evaluator *ev, char *errstr, size_t errstr_size) {
  /* The outbox and the DLQ are safe without idempotence (alert_ids deduplicate), but it keeps
   * retried sends in order and single; operators may still tune these. */
  static const kpi_kafka_prop producer_defaults[] = {
      {"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", "5"}, {NULL, NULL}};
  rd_kafka_conf_t *pconf =
      kpi_kafka_conf_new("kpi-evaluator", producer_defaults, NULL, errstr, errstr_size);
  if (!pconf) return -1;
  rd_kafka_conf_set_opaque(pconf, ev);
  rd_kafka_conf_set_dr_msg_cb(pconf, on_kafka_delivery);
  rd_kafka_conf_set_error_cb(pconf, on_kafka_error);
  char err[512];
  ev->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
  if (!ev->producer) {
    snprintf(errstr, errstr_size, "producer: %s", err);
    return -1;
  }

  /* Topics first: subscribing to a missing topic would only log errors until it appears. */
  for (int delay = 500;; delay = delay < 5000 ? delay * 2 : 5000) {
    /* A short admin timeout: this waits outside the loop, and SIGTERM is only looked at
     * between attempts. */
    if (kpi_kafka_ensure_topics(ev->producer, ev->topics, KPI_TOPIC_COUNT, 1000, err,
                                sizeof(err)) == 0) {
      ev->broker_up = true; /* it just answered; statistics keep this current from now on */
      break;
    }
    kpi_log(KPI_LOG_WARN, "kafka_topics_unavailable", "%s; retrying in %d ms", err, delay);
    if (ev_startup_wait((unsigned)delay)) {
      ev->stopping = true;
      snprintf(errstr, errstr_size, "stopped while waiting for the broker");
      return -1;
    }
  }

  static const kpi_kafka_prop consumer_defaults[] = {{"auto.offset.reset", "earliest"},
                                                      {"statistics.interval.ms", "5000"},
                                                      {"queued.max.messages.kbytes", "16384"},
                                                      {"fetch.wait.max.ms", "50"},
                                                      {NULL, NULL}};
  /* Exactly once rests on these: offsets live in PostgreSQL, never in Kafka. */
  const kpi_kafka_prop consumer_fixed[] = {{"group.id", ev->group},
                                           {"enable.auto.commit", "false"},
                                           {"enable.auto.offset.store", "false"},
                                           {NULL, NULL}};
  rd_kafka_conf_t *cconf = kpi_kafka_conf_new("kpi-evaluator", consumer_defaults, consumer_fixed,
                                              errstr, errstr_size);
  if (!cconf) return -1;
  rd_kafka_conf_set_opaque(cconf, ev);
  rd_kafka_conf_set_rebalance_cb(cconf, on_kafka_rebalance);
  rd_kafka_conf_set_error_cb(cconf, on_kafka_error);
  rd_kafka_conf_set_stats_cb(cconf, on_kafka_stats);
  ev->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, err, sizeof(err));
  if (!ev->consumer) {
    snprintf(errstr, errstr_size, "consumer: %s", err);
    return -1;
  }
  rd_kafka_poll_set_consumer(ev->consumer);

  int rc = kpi_kafka_waker_init(ev->loop, &ev->pwake, rd_kafka_queue_get_main(ev->producer),
                                kpi_kafka_waker_serve);
  if (rc) {
    snprintf(errstr, errstr_size, "producer waker: %s", uv_strerror(rc));
    return -1;
  }
  ev->pwake.data = ev;
  ev->open_handles++;
  rc = kpi_kafka_waker_init(ev->loop, &ev->cwake, rd_kafka_queue_get_consumer(ev->consumer),
                            on_consumer_ready);
  if (rc) {
    snprintf(errstr, errstr_size, "consumer waker: %s", uv_strerror(rc));
    return -1;
  }
  ev->cwake.data = ev;
  ev->open_handles++;

  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, ev->topics[KPI_TOPIC_MEASUREMENTS].name,
                                    RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(ev->consumer, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  if (e) {
    snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(e));
    return -1;
  }
  return 0;
}

static void on_waker_closed(uv_handle_t *h) {
  evaluator *ev = ((kpi_kafka_waker *)h->data)->data;
  ev->open_handles--;
}

/* Blocking by nature (group leave, producer flush) and only run once, at shutdown, after the
 * last transaction finished. */
void ev_kafka_stop(evaluator *ev) {
  if (ev->consumer) {
    kpi_kafka_waker_close(&ev->cwake, on_waker_closed);
    rd_kafka_consumer_close(ev->consumer);
    kpi_log(KPI_LOG_INFO, "consumer_closed", "left group %s", ev->group);
    if (ev->want_assign) {
      rd_kafka_topic_partition_list_destroy(ev->want_assign);
      ev->want_assign = NULL;
    }
  }
  if (ev->producer) {
    rd_kafka_resp_err_t err = rd_kafka_flush(ev->producer, (int)ev->drain_timeout_ms);
    if (err)
      kpi_log(KPI_LOG_WARN, "producer_flush_incomplete", "%d messages left: %s",
              rd_kafka_outq_len(ev->producer), rd_kafka_err2str(err));
    else
      kpi_log(KPI_LOG_INFO, "producer_flushed", "%zu alerts awaiting their mark",
              ev->n_sent);
    kpi_kafka_waker_close(&ev->pwake, on_waker_closed);
  }
}
