/* nf_consume.c: kpi.alerts.v1 -> one notifications row per recipient -> Kafka offset commit. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kpi_codec.h"
#include "kpi_env.h"
#include "kpi_log.h"
#include "notifier.h"

/* One record of a batch. A record is either queued (its rows are in the batch's INSERT) or
 * bad (it goes to the dead-letter topic); its offset is stored only once both the INSERT
 * committed and, for a bad one, the broker acknowledged the dead letter. */
typedef struct {
  rd_kafka_message_t *msg;
  bool bad;
  bool dlq_done;
  bool dlq_pending;
  char reason[400];
} nf_record;

struct nf_batch {
  notifier *nf;
  nf_record *recs;
  size_t n;
  char *rows_json; /* parameter of the INSERT; NULL when no record had rows */
  size_t n_rows;
  bool insert_done;
  bool insert_pending;
  bool failed;     /* some step failed this round: retry the steps not done yet */
  bool stepping;   /* inside batch_step: callbacks that run synchronously must not settle */
};

/* The rows are inserted by one statement, so a batch lands entirely or not at all, and
 * ON CONFLICT makes a replayed alert add nothing. */
static const char SQL_INSERT[] =
    "INSERT INTO notifications (alert_id, recipient, measure_id, alert_type, payload) "
    "SELECT (r->>'a')::uuid, r->>'r', r->>'m', r->>'t', r->>'p' "
    "FROM jsonb_array_elements($1::jsonb) AS r "
    "ON CONFLICT (alert_id, recipient) DO NOTHING";

static void batch_step(nf_batch *b);
static void consume_more(notifier *nf);

/* Dead letters --------------------------------------------------------------------------- */

typedef struct {
  notifier *nf;
  nf_dlq_cb cb;
  void *arg;
} dlq_opaque;

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

void on_kafka_producer_ready(kpi_kafka_waker *w) {
  notifier *nf = w->data;
  while (rd_kafka_poll(nf->producer, 0) > 0) {
  }
}

/* Batches -------------------------------------------------------------------------------- */

static void batch_free(nf_batch *b) {
  for (size_t i = 0; i < b->n; i++) rd_kafka_message_destroy(b->recs[i].msg);
  free(b->recs);
  free(b->rows_json);
  free(b);
}

static bool batch_busy(const nf_batch *b) {
  if (b->insert_pending) return true;
  for (size_t i = 0; i < b->n; i++)
    if (b->recs[i].dlq_pending) return true;
  return false;
}

static bool batch_complete(const nf_batch *b) {
  if (b->n_rows > 0 && !b->insert_done) return false;
  for (size_t i = 0; i < b->n; i++)
    if (b->recs[i].bad && !b->recs[i].dlq_done) return false;
  return true;
}

/* Stores the next offset of every record of the batch and commits them asynchronously. The
 * rows are already committed in PostgreSQL, so a crash before the commit only replays
 * records whose rows ON CONFLICT then ignores. */
static void batch_commit_offsets(notifier *nf, nf_batch *b) {
  rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new((int)b->n);
  for (size_t i = 0; i < b->n; i++) {
    rd_kafka_message_t *m = b->recs[i].msg;
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(offs, topic, m->partition);
    if (!p) p = rd_kafka_topic_partition_list_add(offs, topic, m->partition);
    if (p->offset < m->offset + 1) p->offset = m->offset + 1;
  }
  rd_kafka_resp_err_t err = rd_kafka_offsets_store(nf->consumer, offs);
  if (err) {
    /* Partitions revoked meanwhile: their new owner re-reads the records, which the unique
     * key turns into no-ops. */
    kpi_log(KPI_LOG_INFO, "offsets_store_partial", "%s", rd_kafka_err2str(err));
  }
  rd_kafka_topic_partition_list_destroy(offs);
  err = rd_kafka_commit(nf->consumer, NULL, 1);
  if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
    kpi_log(KPI_LOG_WARN, "offset_commit_failed", "%s", rd_kafka_err2str(err));
}

static void on_uv_consume_retry(uv_timer_t *t) {
  notifier *nf = t->data;
  if (nf->batch) batch_step(nf->batch);
}

/* Called whenever a step of B finished. When nothing is outstanding: done -> commit and
 * read on; failed -> try the missing steps again after a backoff. */
static void batch_settle(nf_batch *b) {
  notifier *nf = b->nf;
  if (b->stepping || batch_busy(b)) return;
  if (nf->stopping) {
    /* Exiting: commit what is complete, leave the rest to be read again. */
    if (batch_complete(b) && nf->consumer) batch_commit_offsets(nf, b);
    nf->batch = NULL;
    batch_free(b);
    return;
  }
  if (batch_complete(b)) {
    batch_commit_offsets(nf, b);
    nf->batch = NULL;
    nf->consume_backoff_ms = 0;
    batch_free(b);
    nf_send_kick(nf);
    consume_more(nf);
    return;
  }
  nf->consume_backoff_ms = nf->consume_backoff_ms ? nf->consume_backoff_ms * 2 : 250;
  if (nf->consume_backoff_ms > 10000) nf->consume_backoff_ms = 10000;
  b->failed = false;
  uv_timer_start(&nf->consume_retry, on_uv_consume_retry, nf->consume_backoff_ms, 0);
}

static void on_pg_inserted(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  nf_batch *b = arg;
  notifier *nf = b->nf;
  b->insert_pending = false;
  if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
    b->insert_done = true;
    const char *n = PQcmdTuples((PGresult *)res);
    kpi_metrics_add(nf->m.queued, n && *n ? strtod(n, NULL) : 0);
    kpi_log(KPI_LOG_DEBUG, "rows_queued", "%s of %zu rows new", n ? n : "?", b->n_rows);
  } else {
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "queue_insert_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; will retry");
    b->failed = true;
  }
  batch_settle(b);
}

typedef struct {
  nf_batch *b;
  size_t index;
} dlq_ref;

static void on_dlq_record_done(notifier *nf, int ok, void *arg) {
  (void)nf;
  dlq_ref *ref = arg;
  nf_batch *b = ref->b;
  nf_record *r = &b->recs[ref->index];
  free(ref);
  r->dlq_pending = false;
  if (ok) r->dlq_done = true;
  else b->failed = true;
  batch_settle(b);
}

static void batch_step(nf_batch *b) {
  notifier *nf = b->nf;
  /* kpi_pgasync may answer before kpi_pgasync_query returns: mark the step pending first and
   * settle only at the end, so B cannot be freed under our feet. */
  b->stepping = true;
  if (b->rows_json && !b->insert_done && !b->insert_pending) {
    const char *params[1] = {b->rows_json};
    b->insert_pending = true;
    if (kpi_pgasync_query(nf->pg, SQL_INSERT, 1, params, on_pg_inserted, b) != 0) {
      b->insert_pending = false;
      b->failed = true;
    }
  } else if (!b->rows_json && b->n_rows > 0) {
    b->failed = true; /* the statement could not be built (out of memory) */
  }
  for (size_t i = 0; i < b->n; i++) {
    nf_record *r = &b->recs[i];
    if (!r->bad || r->dlq_done || r->dlq_pending) continue;
    dlq_ref *ref = malloc(sizeof(*ref));
    if (!ref) {
      b->failed = true;
      continue;
    }
    ref->b = b;
    ref->index = i;
    char part[16], off[24];
    snprintf(part, sizeof(part), "%d", (int)r->msg->partition);
    snprintf(off, sizeof(off), "%lld", (long long)r->msg->offset);
    const char *hdrs[] = {"kpi-source-topic", rd_kafka_topic_name(r->msg->rkt),
                          "kpi-source-partition", part, "kpi-source-offset", off, NULL};
    if (nf_dlq_publish(nf, r->msg->key, r->msg->key_len, r->msg->payload ? r->msg->payload : "",
                       r->msg->payload ? r->msg->len : 0, r->reason, hdrs, on_dlq_record_done,
                       ref) == 0) {
      r->dlq_pending = true;
    } else {
      free(ref);
      b->failed = true;
    }
  }
  b->stepping = false;
  batch_settle(b);
}

/* Records ------------------------------------------------------------------------------- */

/* Adds ADDR to the recipient list unless it is invalid or already there (case-insensitively:
 * mail systems treat addresses that way in practice, and one person should get one mail). */
static void add_recipient(const char **list, size_t *n, size_t max, const char *addr,
                          const char *alert_id) {
  if (!addr) return;
  if (!kpi_mail_address_valid(addr)) {
    kpi_log(KPI_LOG_WARN, "recipient_invalid", "alert %s: skipping an invalid catalog address",
            alert_id);
    return;
  }
  for (size_t i = 0; i < *n; i++)
    if (strcasecmp(list[i], addr) == 0) return;
  if (*n < max) list[(*n)++] = addr;
}

static bool in_list(const char *const *list, size_t n, const char *addr) {
  for (size_t i = 0; addr && i < n; i++)
    if (strcasecmp(list[i], addr) == 0) return true;
  return false;
}

#define NF_MAX_RECIPIENTS 64

/* Turns record R into rows of ROWS (cJSON array), or marks it bad with the reason.
 *
 * A record on the alerts topic is input like an HTTP body (design.md §7): any producer with
 * write access to the topic could otherwise make the city's SMTP account mail any address
 * with any link. So the recipients are exactly the owners' mailboxes and the watchers that
 * the notifier's own catalog gives the measure, and links are built from its own
 * configuration when the mail is composed (nf_send.c). The record's recipients and link are
 * ignored; when they differ from ours, that is logged once per record (counts only, no
 * address). A measure the catalog does not know is a dead letter. */
static void record_prepare(notifier *nf, nf_record *r, cJSON *rows, size_t *n_rows) {
  rd_kafka_message_t *m = r->msg;
  if (!m->payload || m->len == 0) {
    r->bad = true;
    snprintf(r->reason, sizeof(r->reason), "empty record");
    return;
  }
  const char *json = m->payload;
  if (memchr(json, '\0', m->len) || !kpi_utf8_valid(json, m->len)) {
    r->bad = true;
    snprintf(r->reason, sizeof(r->reason), "record is not UTF-8 text");
    return;
  }
  kpi_alert a;
  kpi_errors errs = {0};
  if (kpi_alert_decode(json, m->len, &a, &errs) != 0) {
    r->bad = true;
    cJSON *ej = kpi_errors_to_json(&errs);
    char *es = ej ? cJSON_PrintUnformatted(ej) : NULL;
    snprintf(r->reason, sizeof(r->reason), "invalid kpi.alert/1 record: %s",
             es ? es : "undecodable");
    free(es);
    cJSON_Delete(ej);
    return;
  }
  const kpi_measure *ms = nf->cat ? kpi_catalog_measure(nf->cat, a.measure_id) : NULL;
  if (!ms) {
    r->bad = true;
    snprintf(r->reason, sizeof(r->reason),
             "unknown_measure: measure %s of alert %s is not in the notifier's catalog",
             a.measure_id, a.alert_id);
    kpi_alert_clear(&a);
    return;
  }
  const char *list[NF_MAX_RECIPIENTS];
  size_t n = 0;
  for (size_t i = 0; ms->owner_dept && i < ms->owner_dept->n_mailboxes; i++)
    add_recipient(list, &n, NF_MAX_RECIPIENTS, ms->owner_dept->mailboxes[i], a.alert_id);
  for (size_t i = 0; i < ms->n_watchers; i++)
    add_recipient(list, &n, NF_MAX_RECIPIENTS, ms->watchers[i], a.alert_id);
  if (n == 0) {
    r->bad = true;
    snprintf(r->reason, sizeof(r->reason),
             "alert %s: the catalog gives measure %s no valid recipient", a.alert_id,
             a.measure_id);
    kpi_alert_clear(&a);
    return;
  }
  size_t foreign = 0;
  for (size_t i = 0; i < a.n_recipients; i++)
    if (!in_list(list, n, a.recipients[i].email)) foreign++;
  const char *ours = nf_dashboard_url(nf);
  bool link_ignored = a.dashboard_url && (!ours || strcmp(a.dashboard_url, ours) != 0);
  if (foreign > 0 || link_ignored) {
    char what[160];
    if (foreign > 0)
      snprintf(what, sizeof(what), "%zu recipient(s) the catalog does not name%s", foreign,
               link_ignored ? " and the record's dashboard link" : "");
    else
      snprintf(what, sizeof(what), "the record's dashboard link");
    kpi_metrics_inc(nf->m.ignored);
    kpi_log(KPI_LOG_WARN, "alert_fields_ignored",
            "alert %s (%s): ignoring %s; mailing the catalog's %zu address(es)", a.alert_id,
            a.measure_id, what, n);
  }
  /* The payload is kept verbatim: it is what the sender renders later (its recipients and
   * link are ignored there too). */
  char *payload = strndup(json, m->len);
  for (size_t i = 0; payload && i < n; i++) {
    cJSON *row = cJSON_CreateObject();
    if (!row) break;
    cJSON_AddStringToObject(row, "a", a.alert_id);
    cJSON_AddStringToObject(row, "r", list[i]);
    cJSON_AddStringToObject(row, "m", a.measure_id);
    cJSON_AddStringToObject(row, "t", a.type);
    cJSON_AddStringToObject(row, "p", payload);
    cJSON_AddItemToArray(rows, row);
    (*n_rows)++;
  }
  kpi_log(KPI_LOG_INFO, "alert_received", "alert %s (%s %s) for %s: %zu recipients", a.alert_id,
          a.type, a.status, a.measure_id, n);
  free(payload);
  kpi_alert_clear(&a);
}

/* Reads up to consume_batch records and starts their batch; serves every other event of the
 * consumer queue (rebalances, errors, logs, commit results) on the way. */
static void consume_more(notifier *nf) {
  if (nf->batch || !nf->db_ready || nf->draining || !nf->consumer) return;
  size_t cap = (size_t)nf->cfg.consume_batch;
  nf_record *recs = NULL;
  size_t n = 0;
  while (n < cap) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(nf->consumer, 0);
    if (!m) break;
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        kpi_log(KPI_LOG_WARN, "consumer_error", "%s", rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    if (!recs) recs = calloc(cap, sizeof(*recs));
    if (!recs) {
      /* Out of memory: the record is read again after a restart, as its offset is not stored. */
      kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot hold a batch");
      rd_kafka_message_destroy(m);
      break;
    }
    recs[n++].msg = m;
  }
  if (n == 0) {
    free(recs);
    return;
  }
  nf_batch *b = calloc(1, sizeof(*b));
  cJSON *rows = cJSON_CreateArray();
  if (!b || !rows) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot start a batch");
    for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(recs[i].msg);
    free(recs);
    free(b);
    cJSON_Delete(rows);
    return;
  }
  b->nf = nf;
  b->recs = recs;
  b->n = n;
  for (size_t i = 0; i < n; i++) {
    record_prepare(nf, &recs[i], rows, &b->n_rows);
    if (recs[i].bad) {
      kpi_metrics_inc(nf->m.invalid);
      kpi_log(KPI_LOG_WARN, "alert_invalid", "%s [%d] offset %lld: %s",
              rd_kafka_topic_name(recs[i].msg->rkt), (int)recs[i].msg->partition,
              (long long)recs[i].msg->offset, recs[i].reason);
    }
  }
  kpi_metrics_add(nf->m.consumed, (double)n);
  if (b->n_rows > 0) b->rows_json = cJSON_PrintUnformatted(rows);
  cJSON_Delete(rows);
  if (b->n_rows > 0 && !b->rows_json) {
    /* Cannot even build the statement: treat like a failed insert and retry. */
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot encode %zu rows", b->n_rows);
  }
  nf->batch = b;
  batch_step(b);
}

void nf_consume_kick(notifier *nf) { consume_more(nf); }

bool nf_consume_idle(const notifier *nf) { return nf->batch == NULL; }

static void on_kafka_consumer_ready(kpi_kafka_waker *w) { consume_more(w->data); }

/* librdkafka callbacks, all served on the loop through the consumer queue -------------- */

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)rk;
  (void)opaque;
  kpi_log(rd_kafka_fatal_error(rk, NULL, 0) ? KPI_LOG_ERROR : KPI_LOG_WARN, "kafka_error",
          "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void on_kafka_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *offsets, void *opaque) {
  (void)rk;
  (void)opaque;
  if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    kpi_log(KPI_LOG_WARN, "offset_commit_failed", "%s", rd_kafka_err2str(err));
    return;
  }
  for (int i = 0; offsets && i < offsets->cnt; i++)
    if (offsets->elems[i].err)
      kpi_log(KPI_LOG_WARN, "offset_commit_failed", "%s [%d]: %s", offsets->elems[i].topic,
              (int)offsets->elems[i].partition, rd_kafka_err2str(offsets->elems[i].err));
}

static rd_kafka_conf_t *conf_common(const char *client_id, const kpi_kafka_prop *defaults,
                                    const kpi_kafka_prop *fixed, char *errstr,
                                    size_t errstr_size) {
  rd_kafka_conf_t *conf = kpi_kafka_conf_new(client_id, defaults, fixed, errstr, errstr_size);
  if (conf) rd_kafka_conf_set_error_cb(conf, on_kafka_error);
  return conf;
}

int nf_consume_start(notifier *nf, char *errstr, size_t errstr_size) {
  char err[512];
  /* The dead-letter producer: idempotent, acks from all in-sync replicas. */
  static const kpi_kafka_prop producer_defaults[] = {{"enable.idempotence", "true"},
                                                      {NULL, NULL}};
  static const kpi_kafka_prop producer_fixed[] = {{"log.queue", "true"}, {NULL, NULL}};
  rd_kafka_conf_t *pconf =
      conf_common("kpi-notifier", producer_defaults, producer_fixed, errstr, errstr_size);
  if (!pconf) return -1;
  rd_kafka_conf_set_dr_msg_cb(pconf, on_kafka_delivery);
  nf->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
  if (!nf->producer) {
    rd_kafka_conf_destroy(pconf);
    snprintf(errstr, errstr_size, "producer: %s", err);
    return -1;
  }
  rd_kafka_set_log_queue(nf->producer, NULL);
  nf->producer_waker.data = nf;
  int rc = kpi_kafka_waker_init(nf->loop, &nf->producer_waker, rd_kafka_queue_get_main(nf->producer),
                                on_kafka_producer_ready);
  if (rc) {
    snprintf(errstr, errstr_size, "producer waker: %s", uv_strerror(rc));
    return -1;
  }
  nf->closing_handles |= 1;

  /* Both topics the service uses exist before it reads or writes them. */
  kpi_topic_spec need[2] = {nf->topics[KPI_TOPIC_ALERTS], nf->topics[KPI_TOPIC_ALERTS_DLQ]};
  if (kpi_kafka_ensure_topics(nf->producer, need, 2, 10000, err, sizeof(err)) != 0)
    kpi_log(KPI_LOG_WARN, "topics_not_ensured", "%s (continuing: the broker may create them)", err);

  static const kpi_kafka_prop consumer_defaults[] = {{"auto.offset.reset", "earliest"},
                                                      {NULL, NULL}};
  /* Offsets are stored by hand, after the rows are committed: never automatically. */
  const kpi_kafka_prop consumer_fixed[] = {{"group.id", nf->cfg.group},
                                           {"enable.auto.commit", "false"},
                                           {"enable.auto.offset.store", "false"},
                                           {"log.queue", "true"},
                                           {NULL, NULL}};
  rd_kafka_conf_t *cconf =
      conf_common("kpi-notifier", consumer_defaults, consumer_fixed, errstr, errstr_size);
  if (!cconf) return -1;
  rd_kafka_conf_set_offset_commit_cb(cconf, on_kafka_commit);
  nf->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, err, sizeof(err));
  if (!nf->consumer) {
    rd_kafka_conf_destroy(cconf);
    snprintf(errstr, errstr_size, "consumer: %s", err);
    return -1;
  }
  rd_kafka_set_log_queue(nf->consumer, NULL);
  rd_kafka_poll_set_consumer(nf->consumer);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, nf->topics[KPI_TOPIC_ALERTS].name, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t kerr = rd_kafka_subscribe(nf->consumer, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (kerr) {
    snprintf(errstr, errstr_size, "subscribe %s: %s", nf->topics[KPI_TOPIC_ALERTS].name,
             rd_kafka_err2str(kerr));
    return -1;
  }
  nf->consumer_waker.data = nf;
  rc = kpi_kafka_waker_init(nf->loop, &nf->consumer_waker, rd_kafka_queue_get_consumer(nf->consumer),
                            on_kafka_consumer_ready);
  if (rc) {
    snprintf(errstr, errstr_size, "consumer waker: %s", uv_strerror(rc));
    return -1;
  }
  nf->closing_handles |= 2;
  kpi_log(KPI_LOG_INFO, "consumer_started", "topic %s, group %s",
          nf->topics[KPI_TOPIC_ALERTS].name, nf->cfg.group);
  return 0;
}
