/* nf_consume.c: kpi.alerts.v1 -> one notifications row per recipient -> Kafka offset commit. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kpi_codec.h"
#include "kpi_json.h"
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
  kpi_buf rows_json; /* parameter of the INSERT: a JSON array of rows (oom: not built) */
  size_t n_rows;
  bool insert_done;
  bool insert_pending;
  bool failed;     /* some step failed this round: retry the steps not done yet */
  bool stepping;   /* inside batch_step: settle once, at its end */
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

/* Batches -------------------------------------------------------------------------------- */

static void batch_free(nf_batch *b) {
  for (size_t i = 0; i < b->n; i++) rd_kafka_message_destroy(b->recs[i].msg);
  free(b->recs);
  kpi_buf_free(&b->rows_json);
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
  nf->consume_backoff_ms = nf_consume_backoff_next_ms(nf->consume_backoff_ms);
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

/* Starts the INSERT of B's rows unless it is done or pending. */
static void batch_insert(nf_batch *b) {
  notifier *nf = b->nf;
  if (b->n_rows == 0 || b->insert_done || b->insert_pending) return;
  if (b->rows_json.oom) {
    b->failed = true; /* the statement could not be built (out of memory) */
    return;
  }
  const char *params[1] = {kpi_buf_str(&b->rows_json)};
  b->insert_pending = true;
  if (kpi_pgasync_query(nf->pg, SQL_INSERT, 1, params, on_pg_inserted, b) != 0) {
    b->insert_pending = false;
    b->failed = true;
  }
}

/* Publishes the dead letter of bad record I of B, with where it came from in the headers. */
static void batch_dead_letter(nf_batch *b, size_t i) {
  nf_record *r = &b->recs[i];
  dlq_ref *ref = malloc(sizeof(*ref));
  if (!ref) {
    b->failed = true;
    return;
  }
  ref->b = b;
  ref->index = i;
  char part[16], off[24];
  snprintf(part, sizeof(part), "%d", (int)r->msg->partition);
  snprintf(off, sizeof(off), "%lld", (long long)r->msg->offset);
  const char *hdrs[] = {"kpi-source-topic", rd_kafka_topic_name(r->msg->rkt),
                        "kpi-source-partition", part, "kpi-source-offset", off, NULL};
  if (nf_dlq_publish(b->nf, r->msg->key, r->msg->key_len, r->msg->payload ? r->msg->payload : "",
                     r->msg->payload ? r->msg->len : 0, r->reason, hdrs, on_dlq_record_done,
                     ref) == 0) {
    r->dlq_pending = true;
  } else {
    free(ref);
    b->failed = true;
  }
}

/* Starts every step of B not done or pending yet: the INSERT and the dead letters. Their
 * callbacks run from later loop callbacks (kpi_pgasync_query and librdkafka's delivery
 * reports never call back inside the call), so B is settled once, here, after every step
 * was started; STEPPING keeps a settle out of the loop should that ever change. */
static void batch_step(nf_batch *b) {
  b->stepping = true;
  batch_insert(b);
  for (size_t i = 0; i < b->n; i++) {
    nf_record *r = &b->recs[i];
    if (r->bad && !r->dlq_done && !r->dlq_pending) batch_dead_letter(b, i);
  }
  b->stepping = false;
  batch_settle(b);
}

/* Records ------------------------------------------------------------------------------- */

#define NF_MAX_RECIPIENTS 64

/* The recipients of one alert: the catalog's, deduplicated. */
typedef struct {
  const char *addr[NF_MAX_RECIPIENTS]; /* into the catalog, valid while it is in force */
  size_t n;
} recipient_list;

static bool in_list(const recipient_list *l, const char *addr) {
  for (size_t i = 0; addr && i < l->n; i++)
    if (strcasecmp(l->addr[i], addr) == 0) return true;
  return false;
}

/* Adds ADDR to L unless it is invalid or already there (case-insensitively: mail systems
 * treat addresses that way in practice, and one person should get one mail). */
static void add_recipient(recipient_list *l, const char *addr, const char *alert_id) {
  if (!addr) return;
  if (!kpi_mail_address_valid(addr)) {
    kpi_log(KPI_LOG_WARN, "recipient_invalid", "alert %s: skipping an invalid catalog address",
            alert_id);
    return;
  }
  if (!in_list(l, addr) && l->n < NF_MAX_RECIPIENTS) l->addr[l->n++] = addr;
}

/* The owners' mailboxes of measure MS, then its watchers. */
static void catalog_recipients(const kpi_measure *ms, const char *alert_id, recipient_list *l) {
  l->n = 0;
  for (size_t i = 0; ms->owner_dept && i < ms->owner_dept->n_mailboxes; i++)
    add_recipient(l, ms->owner_dept->mailboxes[i], alert_id);
  for (size_t i = 0; i < ms->n_watchers; i++) add_recipient(l, ms->watchers[i], alert_id);
}

static void record_bad(nf_record *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void record_bad(nf_record *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
  va_end(ap);
  r->bad = true;
}

/* Decodes R's payload into A, or marks R bad with the reason (A then needs no clearing). */
static int record_decode(nf_record *r, kpi_alert *a) {
  rd_kafka_message_t *m = r->msg;
  if (!m->payload || m->len == 0) {
    record_bad(r, "empty record");
    return -1;
  }
  const char *json = m->payload;
  if (memchr(json, '\0', m->len) || !kpi_json_utf8_valid(json, m->len)) {
    record_bad(r, "record is not UTF-8 text");
    return -1;
  }
  kpi_errors errs = {0};
  if (kpi_alert_decode(json, m->len, a, &errs) != 0) {
    cJSON *ej = kpi_errors_to_json(&errs);
    char *es = ej ? cJSON_PrintUnformatted(ej) : NULL;
    record_bad(r, "invalid kpi.alert/1 record: %s", es ? es : "undecodable");
    free(es);
    cJSON_Delete(ej);
    return -1;
  }
  return 0;
}

/* Logs once per record (counts only, no address) when the record named recipients or a link
 * that the catalog and configuration do not give: they are ignored, and the operator should
 * know that a producer sends them. */
static void log_ignored_fields(notifier *nf, const kpi_alert *a, const recipient_list *l) {
  size_t foreign = 0;
  for (size_t i = 0; i < a->n_recipients; i++)
    if (!in_list(l, a->recipients[i].email)) foreign++;
  const char *ours = nf_dashboard_url(nf);
  bool link_ignored = a->dashboard_url && (!ours || strcmp(a->dashboard_url, ours) != 0);
  if (foreign == 0 && !link_ignored) return;
  char what[160];
  if (foreign > 0)
    snprintf(what, sizeof(what), "%zu recipient(s) the catalog does not name%s", foreign,
             link_ignored ? " and the record's dashboard link" : "");
  else
    snprintf(what, sizeof(what), "the record's dashboard link");
  kpi_metrics_inc(nf->m.ignored);
  kpi_log(KPI_LOG_WARN, "alert_fields_ignored",
          "alert %s (%s): ignoring %s; mailing the catalog's %zu address(es)", a->alert_id,
          a->measure_id, what, l->n);
}

/* Appends one row per recipient of L to the JSON array ROWS (opened by the caller). The
 * payload is kept verbatim: it is what the sender renders later (its recipients and link are
 * ignored there too). */
static void append_rows(kpi_buf *rows, const kpi_alert *a, const recipient_list *l,
                        const char *json, size_t len) {
  for (size_t i = 0; i < l->n; i++) {
    kpi_buf_adds(rows, rows->len > 1 ? ",{\"a\":" : "{\"a\":");
    kpi_json_buf_string(rows, a->alert_id);
    kpi_buf_adds(rows, ",\"r\":");
    kpi_json_buf_string(rows, l->addr[i]);
    kpi_buf_adds(rows, ",\"m\":");
    kpi_json_buf_string(rows, a->measure_id);
    kpi_buf_adds(rows, ",\"t\":");
    kpi_json_buf_string(rows, a->type);
    kpi_buf_adds(rows, ",\"p\":");
    kpi_json_buf_string_n(rows, json, len);
    kpi_buf_addc(rows, '}');
  }
}

/* Turns record R into rows appended to ROWS (a JSON array being built), counted in N_ROWS,
 * or marks it bad with the reason.
 *
 * A record on the alerts topic is input like an HTTP body (docs/notifier.md "Trust
 * boundary"): any producer with write access to the topic could otherwise make the city's
 * SMTP account mail any address with any link. So the recipients are exactly the owners'
 * mailboxes and the watchers that the notifier's own catalog gives the measure, and links are
 * built from its own configuration when the mail is composed (nf_send.c). The record's
 * recipients and link are ignored; when they differ from ours, that is logged once per record
 * (counts only, no address). A measure the catalog does not know is a dead letter. */
static void record_prepare(notifier *nf, nf_record *r, kpi_buf *rows, size_t *n_rows) {
  kpi_alert a;
  if (record_decode(r, &a) != 0) return;
  const kpi_measure *ms = nf->cat ? kpi_catalog_measure(nf->cat, a.measure_id) : NULL;
  recipient_list l = {.n = 0};
  if (ms) catalog_recipients(ms, a.alert_id, &l);
  if (!ms) {
    record_bad(r, "unknown_measure: measure %s of alert %s is not in the notifier's catalog",
               a.measure_id, a.alert_id);
  } else if (l.n == 0) {
    record_bad(r, "alert %s: the catalog gives measure %s no valid recipient", a.alert_id,
               a.measure_id);
  } else {
    log_ignored_fields(nf, &a, &l);
    append_rows(rows, &a, &l, r->msg->payload, r->msg->len);
    *n_rows += l.n;
    kpi_log(KPI_LOG_INFO, "alert_received", "alert %s (%s %s) for %s: %zu recipients",
            a.alert_id, a.type, a.status, a.measure_id, l.n);
  }
  kpi_alert_clear(&a);
}

/* Reads up to CAP records into a new array (*RECS, NULL when none came); serves every other
 * event of the consumer queue (rebalances, errors, logs, commit results) on the way. */
static size_t poll_records(notifier *nf, size_t cap, nf_record **recs) {
  size_t n = 0;
  *recs = NULL;
  while (n < cap) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(nf->consumer, 0);
    if (!m) break;
    if (m->err) {
      if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        kpi_log(KPI_LOG_WARN, "consumer_error", "%s", rd_kafka_message_errstr(m));
      rd_kafka_message_destroy(m);
      continue;
    }
    if (!*recs) *recs = calloc(cap, sizeof(**recs));
    if (!*recs) {
      /* Out of memory: the record is read again after a restart, as its offset is not stored. */
      kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot hold a batch");
      rd_kafka_message_destroy(m);
      break;
    }
    (*recs)[n++].msg = m;
  }
  return n;
}

/* Prepares every record of B: its rows into the INSERT's parameter, or the reason it is bad. */
static void batch_prepare(notifier *nf, nf_batch *b) {
  kpi_buf_addc(&b->rows_json, '[');
  for (size_t i = 0; i < b->n; i++) {
    nf_record *r = &b->recs[i];
    record_prepare(nf, r, &b->rows_json, &b->n_rows);
    if (r->bad) {
      kpi_metrics_inc(nf->m.invalid);
      kpi_log(KPI_LOG_WARN, "alert_invalid", "%s [%d] offset %lld: %s",
              rd_kafka_topic_name(r->msg->rkt), (int)r->msg->partition, (long long)r->msg->offset,
              r->reason);
    }
  }
  kpi_buf_addc(&b->rows_json, ']');
  kpi_metrics_add(nf->m.consumed, (double)b->n);
  if (b->n_rows > 0 && b->rows_json.oom) {
    /* Cannot even build the statement: treated like a failed insert and retried. */
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot encode %zu rows", b->n_rows);
  }
}

/* Reads up to consume_batch records and starts their batch. */
static void consume_more(notifier *nf) {
  if (nf->batch || !nf->db_ready || nf->shutdown.stopping || !nf->consumer) return;
  nf_record *recs;
  size_t n = poll_records(nf, (size_t)nf->cfg.consume_batch, &recs);
  if (n == 0) {
    free(recs);
    return;
  }
  nf_batch *b = calloc(1, sizeof(*b));
  if (!b) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot start a batch");
    for (size_t i = 0; i < n; i++) rd_kafka_message_destroy(recs[i].msg);
    free(recs);
    return;
  }
  b->nf = nf;
  b->recs = recs;
  b->n = n;
  batch_prepare(nf, b);
  nf->batch = b;
  batch_step(b);
}

void nf_consume_kick(notifier *nf) { consume_more(nf); }

bool nf_consume_idle(const notifier *nf) { return nf->batch == NULL; }

static void on_kafka_consumer_ready(kpi_kafka_waker *w) { consume_more(w->data); }

int64_t nf_consume_stats_lag(const char *json, size_t len, const char *topic) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return -1;
  }
  const cJSON *topics = cJSON_GetObjectItemCaseSensitive(root, "topics");
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(topics, topic);
  const cJSON *parts = cJSON_GetObjectItemCaseSensitive(t, "partitions");
  int64_t lag = 0;
  const cJSON *p;
  cJSON_ArrayForEach(p, parts) {
    /* "desired": assigned to this member; the internal partition "-1" and partitions of
     * other members are listed too. consumer_lag is -1 until both offsets are known. */
    const cJSON *desired = cJSON_GetObjectItemCaseSensitive(p, "desired");
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(p, "consumer_lag");
    if (cJSON_IsTrue(desired) && cJSON_IsNumber(l) && l->valuedouble > 0)
      lag += (int64_t)l->valuedouble;
  }
  cJSON_Delete(root);
  return lag;
}

/* librdkafka statistics, served by rd_kafka_consumer_poll like every other event of the
 * consumer queue: while a batch is in flight they wait for the next poll, so the gauge may be
 * a few seconds old, never wrong in the alerting sense (docs/notifier.md, "Metrics"). */
static int on_kafka_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  notifier *nf = opaque;
  (void)rk;
  int64_t lag = nf_consume_stats_lag(json, len, nf->topics[KPI_TOPIC_ALERTS].name);
  if (lag >= 0) kpi_metrics_set(nf->m.consumer_lag, (double)lag);
  return 0; /* librdkafka frees JSON */
}

/* librdkafka callbacks, all served on the loop through the consumer queue -------------- */

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

int nf_consume_start(notifier *nf, char *errstr, size_t errstr_size) {
  char err[512];
  /* Both topics the service uses exist before it reads or writes them. */
  kpi_topic_spec need[2] = {nf->topics[KPI_TOPIC_ALERTS], nf->topics[KPI_TOPIC_ALERTS_DLQ]};
  if (kpi_kafka_ensure_topics(nf->producer, need, 2, 10000, err, sizeof(err)) != 0)
    kpi_log(KPI_LOG_WARN, "topics_not_ensured", "%s (continuing: the broker may create them)", err);

  static const kpi_kafka_prop consumer_defaults[] = {{"auto.offset.reset", "earliest"},
                                                      {"statistics.interval.ms", "5000"},
                                                      {NULL, NULL}};
  /* Offsets are stored by hand, after the rows are committed: never automatically. */
  const kpi_kafka_prop consumer_fixed[] = {{"group.id", nf->cfg.group},
                                           {"enable.auto.commit", "false"},
                                           {"enable.auto.offset.store", "false"},
                                           {"log.queue", "true"},
                                           {NULL, NULL}};
  rd_kafka_conf_t *cconf = nf_kafka_conf(consumer_defaults, consumer_fixed, errstr, errstr_size);
  if (!cconf) return -2; /* a KPI_KAFKA_PROP_* refused or naming a fixed property */
  rd_kafka_conf_set_offset_commit_cb(cconf, on_kafka_commit);
  rd_kafka_conf_set_stats_cb(cconf, on_kafka_stats);
  rd_kafka_conf_set_opaque(cconf, nf);
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
  int rc = kpi_kafka_waker_init(nf->loop, &nf->consumer_waker, rd_kafka_queue_get_consumer(nf->consumer),
                            on_kafka_consumer_ready);
  if (rc) {
    snprintf(errstr, errstr_size, "consumer waker: %s", uv_strerror(rc));
    return -1;
  }
  nf->consumer_waker_on = true;
  kpi_log(KPI_LOG_INFO, "consumer_started", "topic %s, group %s",
          nf->topics[KPI_TOPIC_ALERTS].name, nf->cfg.group);
  return 0;
}

void nf_consume_init(notifier *nf) {
  uv_timer_init(nf->loop, &nf->consume_retry);
  nf->consume_retry.data = nf;
}

void nf_consume_stop(notifier *nf) { uv_timer_stop(&nf->consume_retry); }

void nf_consume_close(notifier *nf) {
  if (nf->consumer) {
    if (nf->consumer_waker_on) kpi_kafka_waker_close(&nf->consumer_waker, NULL);
    nf->consumer_waker_on = false;
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(nf->consumer);
    if (err) kpi_log(KPI_LOG_WARN, "consumer_close", "%s", rd_kafka_err2str(err));
    rd_kafka_destroy(nf->consumer);
    nf->consumer = NULL;
  }
  if (!uv_is_closing((uv_handle_t *)&nf->consume_retry)) uv_close((uv_handle_t *)&nf->consume_retry, NULL);
}
