/* ev_kafka.c: the evaluator's Kafka side: the consumer (assignment at offsets kept in PostgreSQL,
 * records into batches, poison records to the DLQ) and the producer (DLQ copies; ev_outbox.c
 * publishes the alerts on it). Reports up only through ev_kafka.on_records / on_dlq_acked. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_records.h"

/* Distinguishes DLQ messages from outbox messages in the delivery report. */
static char dlq_tag;

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  evaluator *ev = opaque;
  (void)rk;
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) ev->kafka.broker_up = false;
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
  ev->kafka.broker_up = up;
  const cJSON *topics = cJSON_GetObjectItemCaseSensitive(root, "topics");
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(topics, ev->cfg.topics[KPI_TOPIC_MEASUREMENTS].name);
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
  ev->kafka.consumer_lag = lag;
  kpi_metrics_set(ev->m.lag, (double)lag);
  cJSON_Delete(root);
  return 0;
}

/* ---- assignment at the offsets stored with the data --------------------------------- */

/* The group's next offsets as the batch transactions stored them (ev_txn.c, SQL_OFFSETS). */
static const char SQL_STORED_OFFSETS[] =
    "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2";

static void on_pg_offsets(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev->kafka.assign_busy = false;
  if (!ev->kafka.want_assign || ev->life.stopping) return;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    kpi_log(KPI_LOG_WARN, "offsets_read_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; retrying when it is back");
    return; /* retried from the aux on-state callback or the sweep */
  }
  rd_kafka_topic_partition_list_t *parts = ev->kafka.want_assign;
  ev->kafka.want_assign = NULL;
  int c_part = PQfnumber(res, "partition"), c_next = PQfnumber(res, "next_offset");
  for (int i = 0; i < parts->cnt; i++) {
    /* No row: nothing of this partition was ever stored, so read it from the beginning
     * (ev_kafka_unstored_offset: offset 0, not the logical BEGINNING, when the two agree). */
    parts->elems[i].offset = ev->kafka.unstored_offset;
    for (int r = 0; r < PQntuples(res); r++) {
      if (atoi(PQgetvalue(res, r, c_part)) == parts->elems[i].partition) {
        parts->elems[i].offset = strtoll(PQgetvalue(res, r, c_next), NULL, 10);
        break;
      }
    }
  }
  rd_kafka_resp_err_t err = rd_kafka_assign(ev->kafka.consumer, parts);
  char list[512] = "";
  size_t n = 0;
  for (int i = 0; i < parts->cnt && n < sizeof(list) - 32; i++)
    n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%d@%lld", i ? "," : "",
                          (int)parts->elems[i].partition, (long long)parts->elems[i].offset);
  if (err) kpi_log(KPI_LOG_ERROR, "kafka_assign_failed", "%s", rd_kafka_err2str(err));
  else kpi_log(KPI_LOG_INFO, "partitions_assigned", "%s at %s", ev->cfg.topics[0].name, list);
  kpi_metrics_inc(ev->m.assign);
  rd_kafka_topic_partition_list_destroy(parts);
  ev->kafka.on_records(ev);
}

void ev_offsets_fetch(evaluator *ev) {
  if (!ev->kafka.want_assign || ev->kafka.assign_busy || ev->life.stopping) return;
  const char *params[2] = {ev->cfg.group, ev->cfg.topics[KPI_TOPIC_MEASUREMENTS].name};
  /* The callback never runs inside kpi_pgasync_query (kpi_pgasync.h): busy once queued. */
  if (kpi_pgasync_query(ev->aux, SQL_STORED_OFFSETS, 2, params, on_pg_offsets, ev) == 0)
    ev->kafka.assign_busy = true;
}

int64_t ev_kafka_unstored_offset(const char *auto_offset_reset) {
  static const char *const earliest[] = {"earliest", "smallest", "beginning"};
  for (size_t i = 0; auto_offset_reset && i < sizeof(earliest) / sizeof(earliest[0]); i++)
    if (strcmp(auto_offset_reset, earliest[i]) == 0) return 0;
  return RD_KAFKA_OFFSET_BEGINNING;
}

static void on_kafka_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts, void *opaque) {
  evaluator *ev = opaque;
  if (ev->kafka.want_assign) {
    rd_kafka_topic_partition_list_destroy(ev->kafka.want_assign);
    ev->kafka.want_assign = NULL;
  }
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && !ev->life.stopping) {
    /* The assignment is applied once the offsets are read from PostgreSQL (librdkafka waits
     * for the rd_kafka_assign call); the Kafka-committed offsets are never used. */
    ev->kafka.want_assign = rd_kafka_topic_partition_list_copy(parts);
    ev_offsets_fetch(ev);
    return;
  }
  kpi_log(KPI_LOG_INFO, "partitions_revoked", "%d partitions", parts->cnt);
  ev_batch_drop_partitions(ev->sched.pending, parts);
  rd_kafka_assign(rk, NULL);
}

/* ---- records ------------------------------------------------------------------------ */

static int dlq_produce(evaluator *ev, const char *topic, const void *key, size_t key_len,
                       const void *value, size_t value_len, rd_kafka_headers_t *hdrs) {
  for (int attempt = 0;; attempt++) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        ev->kafka.producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
        RD_KAFKA_V_VALUE((void *)value, value_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&dlq_tag), RD_KAFKA_V_END);
    if (!err) {
      ev->kafka.dlq_inflight++;
      return 0;
    }
    /* A full local queue empties as deliveries complete; the DLQ is rare, so waiting here
     * briefly is cheaper than carrying the record around. */
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || attempt > 100) {
      kpi_log(KPI_LOG_ERROR, "dlq_produce_failed", "%s", rd_kafka_err2str(err));
      rd_kafka_headers_destroy(hdrs);
      return -1;
    }
    rd_kafka_poll(ev->kafka.producer, 50);
  }
}

static void dlq_send(evaluator *ev, const void *key, size_t key_len, const void *value,
                     size_t value_len, int32_t partition, int64_t offset, const char *reason) {
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
  char num[32];
  rd_kafka_header_add(hdrs, "kpi-error", -1, reason, -1);
  rd_kafka_header_add(hdrs, "kpi-source-topic", -1, ev->cfg.topics[KPI_TOPIC_MEASUREMENTS].name, -1);
  snprintf(num, sizeof(num), "%d", (int)partition);
  rd_kafka_header_add(hdrs, "kpi-source-partition", -1, num, -1);
  snprintf(num, sizeof(num), "%lld", (long long)offset);
  rd_kafka_header_add(hdrs, "kpi-source-offset", -1, num, -1);
  kpi_log(KPI_LOG_WARN, "record_to_dlq", "partition %d offset %lld: %s", (int)partition,
          (long long)offset, reason);
  if (dlq_produce(ev, ev->cfg.topics[KPI_TOPIC_MEASUREMENTS_DLQ].name, key, key_len, value,
                  value_len, hdrs) != 0) {
    /* Never skip a record silently: without its DLQ copy it must be read again. */
    kpi_log(KPI_LOG_ERROR, "dlq_unavailable", "exiting so the record is re-read after restart");
    exit(KPI_EXIT_FATAL); /* a fatal error after start: the supervisor restarts us */
  }
  kpi_metrics_inc(ev->m.dlq);
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

/* A measurement (a correction when it carries `corrects`) into a new row of B; on a refusal,
 * REASON is set and no row is added. */
static void decode_measurement(evaluator *ev, ev_batch *b, const rd_kafka_message_t *msg,
                               char *reason, size_t size) {
  kpi_measurement m;
  kpi_errors errs;
  errs.n = 0;
  char text[400];
  if (kpi_measurement_parse(msg->payload, msg->len, KPI_PARSE_RECORD, &m, &errs) != 0) {
    errors_text(&errs, text, sizeof(text));
    snprintf(reason, size, "decode: %s", text);
    return;
  }
  /* Catalog rules too (unknown measure, wrong unit, component…): such a record would corrupt
   * the figures. "In the future" is not checked: the ingest did, at receipt. */
  if (!kpi_measurement_check(&m, ev->cat, INT64_MAX / 4, &errs)) {
    errors_text(&errs, text, sizeof(text));
    snprintf(reason, size, "catalog: %s", text);
    return;
  }
  ev_row *r = ev_batch_add_row(b);
  memset(r, 0, sizeof(*r));
  r->kind = EV_ROW_MEASUREMENT;
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
  if (m.has_note && !r->note) abort(); /* as for the rows: re-read after the restart */
  if (m.has_corrects) {
    r->has_corrects = true;
    memcpy(r->retracts, m.corrects, sizeof(r->retracts));
    r->reason = strdup(m.corrects_reason);
    if (!r->reason) abort(); /* as for the rows: re-read after the restart */
  }
}

/* Whether a record parsed (RC 0); else REASON is "decode: " and its errors. */
static bool decoded(int rc, const kpi_errors *errs, char *reason, size_t size) {
  if (rc == 0) return true;
  char text[400];
  errors_text(errs, text, sizeof(text));
  snprintf(reason, size, "decode: %s", text);
  return false;
}

/* Whether MEASURE is in the catalog; else REASON says so (the record goes to the DLQ). */
static bool known_measure(const evaluator *ev, const char *measure, char *reason, size_t size) {
  if (kpi_catalog_measure(ev->cat, measure)) return true;
  snprintf(reason, size, "catalog: measure_id unknown: no measure %s in the catalog", measure);
  return false;
}

/* A retraction of a measure the catalog knows (docs/corrections.md); the checks that need the
 * stored measurement happen in the transaction (ev_txn.c). */
static void decode_retraction(evaluator *ev, ev_batch *b, const rd_kafka_message_t *msg,
                              char *reason, size_t size) {
  kpi_retraction rt;
  kpi_errors errs;
  errs.n = 0;
  int rc = kpi_retraction_parse(msg->payload, msg->len, KPI_PARSE_RECORD, &rt, &errs);
  if (!decoded(rc, &errs, reason, size)) return;
  if (!known_measure(ev, rt.measure_id, reason, size)) return;
  ev_row *r = ev_batch_add_row(b);
  memset(r, 0, sizeof(*r));
  r->kind = EV_ROW_RETRACTION;
  memcpy(r->event_id, rt.event_id, sizeof(r->event_id));
  memcpy(r->retracts, rt.retracts, sizeof(r->retracts));
  memcpy(r->measure_id, rt.measure_id, sizeof(r->measure_id));
  memcpy(r->department, rt.department, sizeof(r->department));
  r->received_ms = rt.received_ms;
  r->reason = strdup(rt.reason);
  if (!r->reason) abort(); /* as for the rows: re-read after the restart */
}

/* An acknowledgement of a measure the catalog knows, stored by the transaction (ev_ack.c). */
static void decode_ack(evaluator *ev, ev_batch *b, const rd_kafka_message_t *msg, char *reason,
                       size_t size) {
  kpi_ack ack;
  kpi_errors errs;
  errs.n = 0;
  int rc = kpi_ack_parse(msg->payload, msg->len, KPI_PARSE_RECORD, &ack, &errs);
  if (!decoded(rc, &errs, reason, size)) return;
  if (!known_measure(ev, ack.measure_id, reason, size)) return;
  ev_row *r = ev_batch_add_row(b);
  memset(r, 0, sizeof(*r));
  r->kind = EV_ROW_ACK;
  memcpy(r->event_id, ack.event_id, sizeof(r->event_id));
  memcpy(r->measure_id, ack.measure_id, sizeof(r->measure_id));
  memcpy(r->department, ack.department, sizeof(r->department));
  r->received_ms = ack.received_ms;
  r->until_day = ack.until_day;
  r->note = strdup(ack.note);
  if (!r->note) abort();
}

/* The one dispatch on the record type (docs/corrections.md "Record types"): each type decodes
 * into a batch row; what cannot be decoded goes to the DLQ with its reason. */
static void handle_message(evaluator *ev, rd_kafka_message_t *msg) {
  if (msg->err) {
    if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
      kpi_log(KPI_LOG_WARN, "kafka_consume_error", "%s", rd_kafka_message_errstr(msg));
    return;
  }
  kpi_metrics_inc(ev->m.records);
  ev_batch *b = ev->sched.pending;
  char reason[512];
  reason[0] = '\0';
  size_t before = b->n_rows;
  if (!msg->payload || msg->len == 0) {
    snprintf(reason, sizeof(reason), "decode: empty record");
  } else {
    kpi_record_type type = kpi_record_type_of(msg->payload, msg->len);
    switch (type) {
      case KPI_RECORD_RETRACTION:
        decode_retraction(ev, b, msg, reason, sizeof(reason));
        break;
      case KPI_RECORD_ACK:
        decode_ack(ev, b, msg, reason, sizeof(reason));
        break;
      case KPI_RECORD_MEASUREMENT:
      case KPI_RECORD_UNKNOWN:
        /* An unknown type is parsed as a measurement for its errors (not JSON, no or an
         * unknown schema), which name what is wrong. */
        decode_measurement(ev, b, msg, reason, sizeof(reason));
        if (type == KPI_RECORD_UNKNOWN && !reason[0]) {
          snprintf(reason, sizeof(reason), "decode: unknown record type");
          if (b->n_rows > before) ev_batch_drop_last(b);
        }
        break;
    }
  }
  if (reason[0]) {
    to_dlq(ev, msg, reason);
  } else if (b->n_rows > before) {
    ev_row *r = &b->rows[b->n_rows - 1];
    r->partition = msg->partition;
    r->offset = msg->offset;
    r->poison = false;
    ev_batch_keep_raw(b, r, msg->key, msg->key_len, msg->payload, msg->len);
  }
  ev_batch_set_offset(b, msg->partition, msg->offset + 1);
  b->n_records++;
}

/* librdkafka 2.0 stops fetching a partition while the consumer queue holds queued.min.messages
 * records or queued.max.messages.kbytes, and decides again only when the broker thread that
 * fetches it wakes up: on a response (none is in flight then), on a request queued to that
 * broker, or at the end of its one-second wait. Drained, the queue would stay empty for up to
 * that second, so the prefetch had to hold a second of work (16 MB of records, about 55 MB of
 * RSS). Instead, the consumer notes when the queue reached that mark (the fetcher is parked)
 * and, once it has drained it, queues a request to every leader of the assignment: a
 * ListOffsets (rd_kafka_offsets_for_times, latest), whose answer is ignored; serving it wakes
 * the broker thread, which then finds the queue empty and fetches. The call blocks for a
 * round trip, so it runs on libuv's thread pool, one at a time. The prefetch can then be a
 * fraction of a batch (docs/evaluator.md "Performance"). Pausing and resuming the partitions
 * would not do: librdkafka 2.0 serves those on its main thread, not the broker's. */
static void on_wake_work(uv_work_t *req) {
  evaluator *ev = req->data;
  rd_kafka_offsets_for_times(ev->kafka.consumer, ev->kafka.wake_parts, 1000);
}

static void fetcher_wake(evaluator *ev);

static void on_wake_done(uv_work_t *req, int status) {
  evaluator *ev = req->data;
  (void)status;
  rd_kafka_topic_partition_list_destroy(ev->kafka.wake_parts);
  ev->kafka.wake_parts = NULL;
  kpi_metrics_inc(ev->m.fetch_kicks);
  /* The fetcher may have parked again (and the queue been drained) while this request was
   * under way: one more, rather than a wait of up to a second. */
  if (ev->kafka.wake_again && !ev->life.stopping) fetcher_wake(ev);
}

static void fetcher_wake(evaluator *ev) {
  ev_kafka *k = &ev->kafka;
  rd_kafka_topic_partition_list_t *parts = NULL;
  k->wake_again = k->wake_parts != NULL;
  if (k->wake_parts || rd_kafka_assignment(k->consumer, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
    return;
  for (int i = 0; i < parts->cnt; i++) parts->elems[i].offset = RD_KAFKA_OFFSET_END;
  k->wake_req.data = ev;
  k->wake_parts = parts;
  if (parts->cnt == 0 || uv_queue_work(ev->loop, &k->wake_req, on_wake_work, on_wake_done)) {
    rd_kafka_topic_partition_list_destroy(parts);
    k->wake_parts = NULL;
  }
}

/* Whether the consumer queue holds as much as parks the fetcher (see fetcher_wake); records
 * are counted exactly, bytes through the mean record size (the key and value lengths). */
static bool queue_at_mark(const ev_kafka *k) {
  int64_t n = (int64_t)rd_kafka_queue_length(k->cwake.queue);
  return n >= k->park_msgs || (double)n * k->mean_len >= (double)k->park_bytes;
}

/* Records decoded per loop iteration: about 0.7 ms of work (2.7 us a record). */
#define EV_PULL_SLICE 64

/* An idle handle, not a 0 ms timer: libuv runs a timer re-armed with 0 ms again in the same
 * pass, before any I/O, while an idle callback runs once per loop iteration. */
static void on_pull_idle(uv_idle_t *h) {
  evaluator *ev = h->data;
  uv_idle_stop(h);
  ev->kafka.on_records(ev);
}

void ev_kafka_pull_soon(evaluator *ev) {
  if (ev->kafka.pull_idle.data && !ev->life.stopping)
    uv_idle_start(&ev->kafka.pull_idle, on_pull_idle);
}

bool ev_kafka_pull(evaluator *ev) {
  ev_kafka *k = &ev->kafka;
  if (ev->life.stopping || !k->consumer) return false;
  for (int n = 0; ev->sched.pending->n_records < (size_t)ev->cfg.batch_max; n++) {
    if (n == EV_PULL_SLICE) {
      uv_idle_start(&k->pull_idle, on_pull_idle);
      break;
    }
    if (!k->parked && k->cwake.queue && queue_at_mark(k)) k->parked = true;
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(k->consumer, 0);
    if (!msg) {
      if (k->parked) fetcher_wake(ev);
      k->parked = false;
      break;
    }
    k->mean_len += ((double)(msg->len + msg->key_len) - k->mean_len) / 64.0;
    handle_message(ev, msg);
    rd_kafka_message_destroy(msg);
    if (ev->life.stopping) break;
  }
  /* The COPY text of the rows just decoded, while the transaction under way has the database:
   * the next one then starts its COPY at once (ev_txn.c queue_copy). */
  if (ev->cfg.copy) ev_copy_rows_extend(ev->sched.pending);
  return true;
}

/* The consumer queue became non-empty: the scheduler pulls (until the batch is full) and kicks. */
static void on_consumer_ready(kpi_kafka_waker *w) {
  evaluator *ev = w->data;
  ev->kafka.on_records(ev);
}

/* ---- producer: DLQ and outbox ------------------------------------------------------- */

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
      ev->kafka.dlq_inflight--;
      if (dlq_produce(ev, rd_kafka_topic_name(msg->rkt), msg->key, msg->key_len, msg->payload,
                      msg->len, copy ? copy : rd_kafka_headers_new(1)) != 0)
        exit(KPI_EXIT_FATAL);
      return;
    }
    ev->kafka.dlq_inflight--;
    ev->kafka.on_dlq_acked(ev);
    return;
  }
  ev_outbox_on_delivery(ev, msg->_private, msg->err);
}

/* ---- set-up and shutdown ------------------------------------------------------------ */

static int producer_start(evaluator *ev, char *errstr, size_t errstr_size) {
  /* The outbox and the DLQ are safe without idempotence (alert_ids deduplicate), but it keeps
   * retried sends in order and single; operators may still tune these. */
  static const kpi_kafka_prop producer_defaults[] = {
      {"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", "5"}, {NULL, NULL}};
  rd_kafka_conf_t *pconf =
      kpi_kafka_conf_new("kpi-evaluator", producer_defaults, NULL, errstr, errstr_size);
  if (!pconf) return -2; /* a KPI_KAFKA_PROP_* refused: bad configuration */
  rd_kafka_conf_set_opaque(pconf, ev);
  rd_kafka_conf_set_dr_msg_cb(pconf, on_kafka_delivery);
  rd_kafka_conf_set_error_cb(pconf, on_kafka_error);
  char err[512];
  ev->kafka.producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
  if (!ev->kafka.producer) {
    snprintf(errstr, errstr_size, "producer: %s", err);
    return -1;
  }
  return 0;
}

/* Topics first: subscribing to a missing topic would only log errors until it appears. */
static int topics_wait(evaluator *ev, char *errstr, size_t errstr_size) {
  char err[512];
  for (int delay = 500;; delay = delay < 5000 ? delay * 2 : 5000) {
    /* A short admin timeout: this waits outside the loop, and SIGTERM is only looked at
     * between attempts. */
    if (kpi_kafka_ensure_topics(ev->kafka.producer, ev->cfg.topics, KPI_TOPIC_COUNT, 1000, err,
                                sizeof(err)) == 0) {
      ev->kafka.broker_up = true; /* it just answered; statistics keep this current from now on */
      return 0;
    }
    kpi_log(KPI_LOG_WARN, "kafka_topics_unavailable", "%s; retrying in %d ms", err, delay);
    if (ev_startup_wait((unsigned)delay)) {
      ev->life.stopping = true;
      snprintf(errstr, errstr_size, "stopped while waiting for the broker");
      return -1;
    }
  }
}

/* The queue fill at which librdkafka parks the fetcher, from the configuration in effect
 * (the defaults below or the operator's KPI_KAFKA_PROP_*), for ev_kafka_pull; and the offset
 * a partition without a stored one starts at (ev_kafka_unstored_offset). */
static void park_marks(evaluator *ev, const rd_kafka_conf_t *conf) {
  char v[32];
  size_t n = sizeof(v);
  ev->kafka.park_msgs = rd_kafka_conf_get(conf, "queued.min.messages", v, &n) == RD_KAFKA_CONF_OK
                            ? strtoll(v, NULL, 10)
                            : 100000;
  n = sizeof(v);
  ev->kafka.park_bytes =
      1024 * (rd_kafka_conf_get(conf, "queued.max.messages.kbytes", v, &n) == RD_KAFKA_CONF_OK
                  ? strtoll(v, NULL, 10)
                  : 65536);
  ev->kafka.mean_len = 256; /* until the first records are seen */
  n = sizeof(v);
  ev->kafka.unstored_offset = ev_kafka_unstored_offset(
      rd_kafka_conf_get(conf, "auto.offset.reset", v, &n) == RD_KAFKA_CONF_OK ? v : NULL);
}

static int consumer_start(evaluator *ev, char *errstr, size_t errstr_size) {
  /* The prefetch is the evaluator's largest memory: a queued record costs about 3.4 times its
   * payload in RSS (librdkafka's per-message bookkeeping and the fetch buffers it pins). It is
   * bounded to about one batch (5,000 records; 4 MB for records far larger than usual), and
   * one fetch response, which lands whole and may overshoot the bound, to 1 MB (256 kB per
   * partition). So small a queue keeps up only because ev_kafka_pull wakes the fetcher that
   * these bounds park (fetcher_wake; docs/evaluator.md "Performance"). Operators override any
   * of these with KPI_KAFKA_PROP_*. */
  static const kpi_kafka_prop consumer_defaults[] = {{"auto.offset.reset", "earliest"},
                                                      {"statistics.interval.ms", "5000"},
                                                      {"queued.max.messages.kbytes", "4096"},
                                                      {"queued.min.messages", "5000"},
                                                      {"fetch.max.bytes", "1048576"},
                                                      {"max.partition.fetch.bytes", "262144"},
                                                      {"fetch.wait.max.ms", "50"},
                                                      {NULL, NULL}};
  /* Exactly once rests on these: offsets live in PostgreSQL, never in Kafka. */
  const kpi_kafka_prop consumer_fixed[] = {{"group.id", ev->cfg.group},
                                           {"enable.auto.commit", "false"},
                                           {"enable.auto.offset.store", "false"},
                                           {NULL, NULL}};
  rd_kafka_conf_t *cconf = kpi_kafka_conf_new("kpi-evaluator", consumer_defaults, consumer_fixed,
                                              errstr, errstr_size);
  if (!cconf) return -2; /* a KPI_KAFKA_PROP_* refused or naming a fixed property */
  rd_kafka_conf_set_opaque(cconf, ev);
  rd_kafka_conf_set_rebalance_cb(cconf, on_kafka_rebalance);
  rd_kafka_conf_set_error_cb(cconf, on_kafka_error);
  rd_kafka_conf_set_stats_cb(cconf, on_kafka_stats);
  park_marks(ev, cconf);
  char err[512];
  ev->kafka.consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, err, sizeof(err));
  if (!ev->kafka.consumer) {
    snprintf(errstr, errstr_size, "consumer: %s", err);
    return -1;
  }
  rd_kafka_poll_set_consumer(ev->kafka.consumer);
  return 0;
}

/* The producer's queue carries only callback-served events (delivery reports, errors):
 * kpi_kafka_waker_serve serves it. The consumer's carries records: on_consumer_ready. */
static int wakers_start(evaluator *ev, char *errstr, size_t errstr_size) {
  ev_kafka *k = &ev->kafka;
  int rc = kpi_kafka_waker_init(ev->loop, &k->pwake, rd_kafka_queue_get_main(k->producer),
                                kpi_kafka_waker_serve);
  if (rc) {
    snprintf(errstr, errstr_size, "producer waker: %s", uv_strerror(rc));
    return -1;
  }
  k->pwake.data = ev;
  rc = kpi_kafka_waker_init(ev->loop, &k->cwake, rd_kafka_queue_get_consumer(k->consumer),
                            on_consumer_ready);
  if (rc) {
    snprintf(errstr, errstr_size, "consumer waker: %s", uv_strerror(rc));
    return -1;
  }
  k->cwake.data = ev;
  uv_idle_init(ev->loop, &k->pull_idle);
  k->pull_idle.data = ev;
  return 0;
}

int ev_kafka_start(evaluator *ev, char *errstr, size_t errstr_size) {
  int rc = producer_start(ev, errstr, errstr_size);
  if (rc == 0) rc = topics_wait(ev, errstr, errstr_size);
  if (rc == 0) rc = consumer_start(ev, errstr, errstr_size);
  if (rc == 0) rc = wakers_start(ev, errstr, errstr_size);
  if (rc != 0) return rc;
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, ev->cfg.topics[KPI_TOPIC_MEASUREMENTS].name,
                                    RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(ev->kafka.consumer, sub);
  rd_kafka_topic_partition_list_destroy(sub);
  if (e) {
    snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(e));
    return -1;
  }
  return 0;
}

/* Blocking by nature (group leave, producer flush) and only run once, at shutdown, after the
 * last transaction finished. */
void ev_kafka_stop(evaluator *ev) {
  if (ev->kafka.consumer) {
    kpi_kafka_waker_close(&ev->kafka.cwake, NULL);
    if (ev->kafka.pull_idle.data) uv_close((uv_handle_t *)&ev->kafka.pull_idle, NULL);
    rd_kafka_consumer_close(ev->kafka.consumer);
    kpi_log(KPI_LOG_INFO, "consumer_closed", "left group %s", ev->cfg.group);
    if (ev->kafka.want_assign) {
      rd_kafka_topic_partition_list_destroy(ev->kafka.want_assign);
      ev->kafka.want_assign = NULL;
    }
  }
  if (ev->kafka.producer) {
    rd_kafka_resp_err_t err = rd_kafka_flush(ev->kafka.producer, (int)ev->cfg.drain_timeout_ms);
    if (err)
      kpi_log(KPI_LOG_WARN, "producer_flush_incomplete", "%d messages left: %s",
              rd_kafka_outq_len(ev->kafka.producer), rd_kafka_err2str(err));
    else
      kpi_log(KPI_LOG_INFO, "producer_flushed", "%zu alerts awaiting their mark",
              ev->outbox.n_sent);
    kpi_kafka_waker_close(&ev->kafka.pwake, NULL);
  }
}

void ev_kafka_free(evaluator *ev) {
  if (ev->kafka.consumer) rd_kafka_destroy(ev->kafka.consumer);
  if (ev->kafka.producer) rd_kafka_destroy(ev->kafka.producer);
  ev->kafka.consumer = ev->kafka.producer = NULL;
}
