/* ingest_handlers.c: ingest's HTTP endpoints; records are answered from their delivery reports. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <http_parser.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "ingest_arena.h"
#include "ingest_csv.h"
#include "ingest_i18n.h"
#include "ingest_web.h"
#include "kpi_batch.h"
#include "kpi_buf.h"
#include "kpi_codec.h"
#include "kpi_json.h"
#include "kpi_log.h"
#include "kpi_records.h"

#define RETRY_AFTER_START "Retry-After: 2\r\n"
/* Plain `Bearer`, as proto/openapi.yaml fixes it: no realm to configure, and an error
 * attribute would tell a prober whether a token had the right shape. */
#define WWW_AUTH "WWW-Authenticate: Bearer\r\n"

/* One record of a request. Its address is the Kafka message's opaque, so the array that
 * holds it must not move until every delivery report came back. */
typedef struct ingest_item {
  struct ingest_request *req;
  int status;            /* 0 while its delivery report is awaited */
  unsigned row;          /* CSV uploads: the spreadsheet row (header = 1); else 0 */
  int32_t partition;
  int64_t offset;
  cJSON *errors;         /* problems of a rejected item (owned), else NULL */
  const char *detail;    /* static text of a failed delivery, else NULL */
  char event_id[KPI_UUID_STRLEN + 1];
  char measure_id[KPI_ID_MAX + 1];
  /* A retraction: the retracted event id; an acknowledgement: its `until`; else "". */
  char ref[KPI_UUID_STRLEN + 1];
} ingest_item;

/* A request held until the delivery reports of its records came back. */
typedef struct ingest_request {
  ingest_ctx *ctx;
  kpi_http_request *http;
  ingest_endpoint ep;
  int atomic;
  uint64_t start_ns;
  size_t n_items;
  size_t pending; /* produced, delivery report not yet seen */
  /* A batch's encodings, one after the other: librdkafka points into them (produced without
   * RD_KAFKA_MSG_F_COPY), so they live until the last delivery report, in request_free. */
  kpi_buf payloads;
  ingest_item items[];
} ingest_request;

static const char *const ep_names[INGEST_EP_COUNT] = {
    "measurements", "batch", "healthz", "readyz",    "metrics",
    "me",           "entry", "entry_js", "entry_css", "retract",
    "acknowledgements", "other"};

/* ---- metrics ---- */

int ingest_metrics_init(ingest_ctx *ctx) {
  static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10,   30};
  kpi_metrics *m = ctx->metrics = kpi_metrics_new();
  if (!m) return -1;
  for (int e = 0; e < INGEST_EP_COUNT; e++) {
    char labels[64];
    snprintf(labels, sizeof(labels), "endpoint=\"%s\"", ep_names[e]);
    ctx->m_duration[e] = kpi_metrics_histogram(
        m, "kpi_ingest_request_duration_seconds", labels,
        "Time from a complete request to its answer (delivery report included)", bounds,
        sizeof(bounds) / sizeof(bounds[0]));
  }
  ctx->m_records_produced = kpi_metrics_counter(
      m, "kpi_ingest_records_produced_total", NULL,
      "Records acknowledged by the broker (acks=all) and answered with 202");
  ctx->m_records_rejected = kpi_metrics_counter(
      m, "kpi_ingest_records_rejected_total", NULL,
      "Records refused before producing (syntax, schema, catalog, ownership)");
  ctx->m_delivery_failures = kpi_metrics_counter(
      m, "kpi_ingest_delivery_failures_total", NULL,
      "Records whose delivery report was an error (answered 503)");
  ctx->m_queue_full = kpi_metrics_counter(m, "kpi_ingest_queue_full_total", NULL,
                                          "Records refused because the producer queue was full");
  ctx->m_batch_items = kpi_metrics_counter(m, "kpi_ingest_batch_items_total", NULL,
                                           "Items received in batch requests");
  ctx->m_queue_depth = kpi_metrics_gauge(m, "kpi_ingest_producer_queue_depth", NULL,
                                         "Messages and requests waiting in the producer "
                                         "(rd_kafka_outq_len)");
  ctx->m_inflight = kpi_metrics_gauge(m, "kpi_ingest_inflight_requests", NULL,
                                      "Requests waiting for their delivery reports");
  ctx->m_ready = kpi_metrics_gauge(m, "kpi_ingest_ready", NULL,
                                   "1 while broker metadata for the topic is reachable");
  ctx->m_reload_ok = kpi_metrics_counter(m, "kpi_ingest_catalog_reloads_total",
                                         "result=\"ok\"", "Catalog reloads on SIGHUP");
  ctx->m_reload_failed = kpi_metrics_counter(m, "kpi_ingest_catalog_reloads_total",
                                             "result=\"failed\"", NULL);
  return 0;
}

static void count_response(ingest_ctx *ctx, ingest_endpoint ep, int status, uint64_t start_ns) {
  if (status < 100 || status > 599) status = 500;
  kpi_metric **slot = &ctx->m_requests[ep][status];
  if (!*slot) {
    char labels[64];
    snprintf(labels, sizeof(labels), "endpoint=\"%s\",code=\"%d\"", ep_names[ep], status);
    *slot = kpi_metrics_counter(ctx->metrics, "kpi_ingest_requests_total", labels,
                                "Answered requests by endpoint and status");
  }
  kpi_metrics_inc(*slot);
  kpi_metrics_observe(ctx->m_duration[ep], (double)(uv_hrtime() - start_ns) / 1e9);
}

/* ---- small answers ---- */

/* The language REQ asked for (Accept-Language; docs/http.md "Languages"). */
static ingest_lang request_lang(kpi_http_request *req) {
  return ingest_lang_of(kpi_http_header(req, "Accept-Language"));
}

/* EXTRA's header lines and the Content-Language of a problem in LANG, into OUT. */
static const char *problem_headers(ingest_lang lang, const char *extra, char *out, size_t size) {
  snprintf(out, size, "Content-Language: %s\r\n%s", ingest_lang_tag(lang), extra ? extra : "");
  return out;
}

/* A problem in the request's language: title and detail from the message table, field names
 * and codes (ERRORS) as they are. */
static void answer_problem(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep,
                           uint64_t t0, int status, const char *detail, cJSON *errors,
                           const char *extra) {
  ingest_lang lang = request_lang(req);
  char headers[256];
  count_response(ctx, ep, status, t0);
  kpi_http_respond_problem_ex(req, status, NULL, ingest_title(lang, status),
                              ingest_text(lang, detail), errors,
                              problem_headers(lang, extra, headers, sizeof(headers)));
}

static void answer_json(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep, uint64_t t0,
                        int status, const char *body, size_t len) {
  count_response(ctx, ep, status, t0);
  kpi_http_respond(req, status, "application/json", body, len, NULL);
}

static cJSON *one_error(const char *field, const char *code, const char *message) {
  kpi_errors errs = {0};
  kpi_errors_add(&errs, field, code, "%s", message);
  return kpi_errors_to_json(&errs);
}

/* ---- requests held across delivery reports ---- */

static ingest_request *request_new(ingest_ctx *ctx, kpi_http_request *http, ingest_endpoint ep,
                                   uint64_t t0, size_t n) {
  ingest_request *r = calloc(1, sizeof(*r) + n * sizeof(ingest_item));
  if (!r) return NULL;
  r->ctx = ctx;
  r->http = http;
  r->ep = ep;
  r->start_ns = t0;
  r->n_items = n;
  for (size_t i = 0; i < n; i++) r->items[i].req = r;
  ctx->inflight++;
  return r;
}

static void request_free(ingest_request *r) {
  for (size_t i = 0; i < r->n_items; i++) cJSON_Delete(r->items[i].errors);
  kpi_buf_free(&r->payloads);
  free(r);
}

/* The `errors` of a record that was valid but not published (429/503), as the contract's
 * FieldError codes `queue_full` / `unavailable`; NULL for other statuses. */
static cJSON *delivery_errors(const ingest_item *it) {
  if (it->status != 429 && it->status != 503) return NULL;
  return one_error("", it->status == 429 ? "queue_full" : "unavailable",
                   it->detail ? it->detail : "not published");
}

/* A BatchItemResult (proto/openapi.yaml) of a non-accepted item, through cJSON because it may
 * echo client text (a malformed measure_id). */
static char *item_failure_json(const ingest_item *it, size_t index) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddNumberToObject(o, "index", (double)index);
  if (it->row) cJSON_AddNumberToObject(o, "row", it->row);
  cJSON_AddNumberToObject(o, "status", it->status);
  if (it->event_id[0]) cJSON_AddStringToObject(o, "event_id", it->event_id);
  if (it->measure_id[0]) cJSON_AddStringToObject(o, "measure_id", it->measure_id);
  if (it->errors) cJSON_AddItemReferenceToObject(o, "errors", it->errors);
  else {
    cJSON *e = delivery_errors(it);
    if (e) cJSON_AddItemToObject(o, "errors", e);
  }
  char *t = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return t;
}

/* Writes V in decimal at O; returns the end. */
static char *put_i64(char *o, int64_t v) {
  char tmp[24];
  int n = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *o++ = '-';
  while (n) *o++ = tmp[--n];
  return o;
}

/* The BatchItemResult of accepted item IT at INDEX. Its strings are a UUID and an id that
 * passed the catalog's syntax, so escaping leaves them as they are; they go through the one
 * JSON writer all the same, so that no path writes client-reachable text unescaped. Written
 * by hand because a batch holds up to thousands of them and vsnprintf per item was a visible
 * share of a batch's cost. */
static void put_accepted(kpi_buf *b, const ingest_item *it, size_t index) {
  char tmp[64 + 6 * (KPI_UUID_STRLEN + KPI_ID_MAX) + 4 * 24 + 64];
  char *o = tmp;
#define PUT(lit) (memcpy(o, lit, sizeof(lit) - 1), o += sizeof(lit) - 1)
  PUT("{\"index\":");
  o = put_i64(o, (int64_t)index);
  if (it->row) {
    PUT(",\"row\":");
    o = put_i64(o, it->row);
  }
  PUT(",\"status\":202,\"event_id\":\"");
  o = kpi_json_put_escaped(o, it->event_id, strnlen(it->event_id, KPI_UUID_STRLEN));
  PUT("\",\"measure_id\":\"");
  o = kpi_json_put_escaped(o, it->measure_id, strnlen(it->measure_id, KPI_ID_MAX));
  PUT("\",\"partition\":");
  o = put_i64(o, it->partition);
  PUT(",\"offset\":");
  o = put_i64(o, it->offset);
  *o++ = '}';
#undef PUT
  kpi_buf_add(b, tmp, (size_t)(o - tmp));
}

/* Appends `"results":[…]` for every item (ONLY_BAD: the non-accepted ones only). */
static void put_results(kpi_buf *b, const ingest_request *r, int only_bad) {
  kpi_buf_adds(b, "\"results\":[");
  int first = 1;
  for (size_t i = 0; i < r->n_items && !b->oom; i++) {
    const ingest_item *it = &r->items[i];
    if (only_bad && (it->status == 202 || it->status == 0)) continue; /* 0: valid, unsent */
    if (!first) kpi_buf_add(b, ",", 1);
    first = 0;
    if (it->status == 202) {
      put_accepted(b, it, i);
      continue;
    }
    char *t = item_failure_json(it, i);
    if (!t) {
      b->oom = 1;
      break;
    }
    kpi_buf_adds(b, t);
    cJSON_free(t);
  }
  kpi_buf_add(b, "]", 1);
}

/* Appends the RFC 9457 members of a problem, every string escaped; CODE NULL: no `errors`. */
static void put_problem_head(kpi_buf *b, ingest_lang lang, int status, const char *detail,
                             const char *field, const char *code, const char *message) {
  kpi_buf_adds(b, "\"type\":\"about:blank\",\"title\":");
  kpi_json_buf_string(b, ingest_title(lang, status));
  kpi_buf_addf(b, ",\"status\":%d,\"detail\":", status);
  kpi_json_buf_string(b, ingest_text(lang, detail));
  kpi_buf_addc(b, ',');
  if (code) {
    kpi_buf_adds(b, "\"errors\":[{\"field\":");
    kpi_json_buf_string(b, field);
    kpi_buf_adds(b, ",\"code\":");
    kpi_json_buf_string(b, code);
    kpi_buf_adds(b, ",\"message\":");
    kpi_json_buf_string(b, message);
    kpi_buf_adds(b, "}],");
  }
}

/* Answers R with B's text (or 500 when B ran out of memory) and frees B. */
static void answer_buf(ingest_ctx *ctx, ingest_request *r, int status, kpi_buf *b,
                       const char *content_type, const char *extra) {
  if (b->oom) {
    kpi_buf_free(b);
    answer_problem(ctx, r->http, r->ep, r->start_ns, 500, "out of memory", NULL, NULL);
    return;
  }
  char headers[256];
  if (strcmp(content_type, "application/problem+json") == 0)
    extra = problem_headers(request_lang(r->http), extra, headers, sizeof(headers));
  count_response(ctx, r->ep, status, r->start_ns);
  kpi_http_respond(r->http, status, content_type, b->s, b->len, extra);
  kpi_buf_free(b);
}

/* The answer to a request of one record: a measurement, a retraction (with `retracts`) or an
 * acknowledgement (with `until`), 202 once the broker acknowledged it, else its problem. */
static void finish_single(ingest_ctx *ctx, ingest_request *r) {
  ingest_item *it = &r->items[0];
  if (it->status == 202) {
    kpi_buf b = KPI_BUF_INIT;
    kpi_buf_reserve(&b, 256); /* the whole answer: no reallocation while it grows */
    kpi_buf_adds(&b, "{\"event_id\":");
    kpi_json_buf_string(&b, it->event_id);
    if (r->ep == INGEST_EP_RETRACT || r->ep == INGEST_EP_ACK) {
      kpi_buf_adds(&b, r->ep == INGEST_EP_RETRACT ? ",\"retracts\":" : ",\"until\":");
      kpi_json_buf_string(&b, it->ref);
    }
    kpi_buf_adds(&b, ",\"measure_id\":");
    kpi_json_buf_string(&b, it->measure_id);
    char num[64], *o = num;
    memcpy(o, ",\"partition\":", 13);
    o = put_i64(o + 13, it->partition);
    memcpy(o, ",\"offset\":", 10);
    o = put_i64(o + 10, it->offset);
    *o++ = '}';
    kpi_buf_add(&b, num, (size_t)(o - num));
    answer_buf(ctx, r, 202, &b, "application/json", NULL);
    return;
  }
  const char *extra = ingest_retry_after(it->status);
  cJSON *errors = it->errors ? it->errors : delivery_errors(it);
  it->errors = NULL;
  answer_problem(ctx, r->http, r->ep, r->start_ns, it->status,
                 it->status == 429   ? "the producer queue is full; retry shortly"
                 : it->status == 503 ? "the record was not acknowledged by Kafka in time"
                                     : it->detail,
                 errors, extra);
}

/* A batch answer (status by ingest_batch_status) carries one result per item in input order;
 * an item reported 202 is in Kafka, any other was not published. */
static void finish_batch(ingest_ctx *ctx, ingest_request *r) {
  ingest_tally t = {0};
  for (size_t i = 0; i < r->n_items; i++) ingest_tally_add(&t, r->items[i].status);
  int status = ingest_batch_status(&t);
  /* Sized for the usual answer (about 150 bytes per accepted item) so that it is not
   * reallocated a dozen times while growing. */
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_reserve(&b, 256 + r->n_items * 160);
  kpi_buf_add(&b, "{", 1);
  ingest_lang lang = request_lang(r->http);
  if (status == 403)
    put_problem_head(&b, lang, 403, "every item is a measure owned by another department",
                     "measure_id", "forbidden", "owned by another department");
  else if (status == 429)
    put_problem_head(&b, lang, 429, "the producer queue is full; nothing was published", "",
                     "queue_full", "retry the items shortly");
  else if (status == 503)
    put_problem_head(&b, lang, 503, "the records were not acknowledged by Kafka in time", "",
                     "unavailable", "retry the items later, with the same event_id");
  kpi_buf_addf(&b, "\"accepted\":%zu,\"rejected\":%zu,", t.accepted, t.items - t.accepted);
  put_results(&b, r, 0);
  kpi_buf_add(&b, "}", 1);
  int problem = status != 202 && status != 207;
  answer_buf(ctx, r, status, &b, problem ? "application/problem+json" : "application/json",
             ingest_retry_after(status));
}

static void request_finish(ingest_request *r) {
  ingest_ctx *ctx = r->ctx;
  if (r->ep == INGEST_EP_BATCH) finish_batch(ctx, r);
  else finish_single(ctx, r);
  request_free(r);
  ctx->inflight--;
}

void ingest_log_delivery_failures(ingest_ctx *ctx, int force) {
  if (!ctx->dr_fail_unlogged) return;
  uint64_t now = uv_now(ctx->loop);
  if (!force && ctx->dr_fail_logged_at && now - ctx->dr_fail_logged_at < 1000) return;
  kpi_log(KPI_LOG_WARN, "kafka_delivery_failed", "%" PRIu64 " record(s) not delivered (last: %s)",
          ctx->dr_fail_unlogged, rd_kafka_err2str(ctx->dr_fail_last));
  ctx->dr_fail_logged_at = now;
  ctx->dr_fail_unlogged = 0;
}

void ingest_on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  (void)rk;
  ingest_ctx *ctx = opaque;
  ingest_item *it = msg->_private;
  if (!it) return;
  if (msg->err) {
    it->status = 503;
    it->detail = rd_kafka_err2str(msg->err);
    kpi_metrics_inc(ctx->m_delivery_failures);
    ctx->dr_fail_unlogged++;
    ctx->dr_fail_last = msg->err;
    ingest_log_delivery_failures(ctx, 0);
  } else {
    it->status = 202;
    it->partition = msg->partition;
    it->offset = msg->offset;
    kpi_metrics_inc(ctx->m_records_produced);
  }
  ingest_request *r = it->req;
  if (--r->pending == 0) request_finish(r);
}

/* ---- validation ---- */

/* Checks one item (OBJ, already parsed) for department D at NOW: ownership first (a
 * department learns nothing about measures it does not own), then the schema and the
 * catalog. Fills M; returns 0 when it may be produced, else 403 or 422 with ERRS filled. */
static int item_check(ingest_ctx *ctx, const cJSON *obj, const kpi_department *d, int64_t now,
                      kpi_measurement *m, kpi_errors *errs) {
  int rc = kpi_measurement_from_json(obj, KPI_PARSE_INPUT, m, errs);
  const kpi_measure *ms = m->measure_id[0] ? kpi_catalog_measure(ctx->catalog, m->measure_id)
                                           : NULL;
  if (ms && strcmp(ms->owner, d->id) != 0) {
    errs->n = 0;
    kpi_errors_add(errs, "measure_id", "forbidden",
                   "measure \"%s\" is not owned by department \"%s\"", m->measure_id, d->id);
    return 403;
  }
  if (m->department[0] && strcmp(m->department, d->id) != 0) {
    errs->n = 0;
    kpi_errors_add(errs, "department", "forbidden",
                   "must be the token's department \"%s\" (or left out)", d->id);
    return 403;
  }
  if (rc != 0) return 422;
  if (kpi_measurement_normalize_ms(m, ctx->catalog, ms, errs) != 0) return 422;
  if (!kpi_measurement_check_ms(m, ms, now, errs)) return 422;
  size_t dl = strnlen(d->id, sizeof(m->department) - 1);
  memcpy(m->department, d->id, dl);
  m->department[dl] = '\0';
  return 0;
}

/* IT was refused by the producer with E: 429 when the queue is full, else 503. */
static void item_refused(ingest_ctx *ctx, ingest_item *it, rd_kafka_resp_err_t e) {
  if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
    it->status = 429;
    it->detail = "the producer queue is full; retry shortly";
    kpi_metrics_inc(ctx->m_queue_full);
  } else {
    it->status = 503;
    it->detail = rd_kafka_err2str(e);
    kpi_metrics_inc(ctx->m_delivery_failures);
  }
}

/* Hands PAYLOAD (LEN bytes; taken over) to the producer with IT as the opaque. On success the
 * request waits for one more delivery report; on failure IT gets its final status (429 when
 * the queue is full). */
static int item_produce(ingest_ctx *ctx, ingest_item *it, char *payload, size_t len) {
  if (rd_kafka_produce(ctx->rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_FREE, payload, len,
                       it->measure_id, strlen(it->measure_id), it) == -1) {
    free(payload); /* still ours when produce fails */
    item_refused(ctx, it, rd_kafka_last_error());
    return -1;
  }
  it->req->pending++;
  return 0;
}

/* A fresh random (v4) event id into OUT from ctx->ids, refilled by RAND_bytes when spent.
 * Returns 0, or -1 when no random bytes could be had (OUT is then ""). */
static int random_event_id(ingest_ctx *ctx, char out[KPI_UUID_STRLEN + 1]) {
  if (ctx->ids_left < 16) {
    if (RAND_bytes(ctx->ids, (int)sizeof(ctx->ids)) != 1) {
      out[0] = '\0';
      return -1;
    }
    ctx->ids_left = sizeof(ctx->ids);
  }
  uint8_t b[16];
  uint8_t *src = ctx->ids + sizeof(ctx->ids) - ctx->ids_left;
  memcpy(b, src, 16);
  ctx->ids_left -= 16;
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 9562 variant */
  kpi_uuid_format(b, out);
  return 0;
}

/* received_at for NOW (kpi_time_format_utc), formatted once per millisecond. */
static const char *received_at(ingest_ctx *ctx, int64_t now) {
  if (now != ctx->received_ms || !ctx->received_at[0]) {
    kpi_time_format_utc(now, ctx->received_at, sizeof(ctx->received_at));
    ctx->received_ms = now;
  }
  return ctx->received_at;
}

/* Fills event_id when the client gave none: from the Idempotency-Key KEY (a UUID, single
 * records only), else a random (v4) UUID. */
static void assign_event_id(ingest_ctx *ctx, kpi_measurement *m, const uint8_t *key) {
  if (m->event_id[0]) return;
  if (key) kpi_uuid_format(key, m->event_id);
  else random_event_id(ctx, m->event_id);
}

/* Fills M's and IT's ids for a record that passed item_check. Returns 0, or -1 when IT
 * failed with 500. */
static int item_prepare(ingest_ctx *ctx, ingest_item *it, kpi_measurement *m, int64_t now,
                        const uint8_t *key) {
  assign_event_id(ctx, m, key);
  if (!m->event_id[0]) {
    it->status = 500;
    it->detail = "no random bytes for an event_id";
    return -1;
  }
  m->received_ms = now;
  memcpy(m->received_at, received_at(ctx, now), sizeof(m->received_at));
  memcpy(it->event_id, m->event_id, sizeof(it->event_id));
  memcpy(it->measure_id, m->measure_id, sizeof(it->measure_id));
  return 0;
}

/* item_prepare, then the record's encoding (malloc'd), or NULL (IT then failed with 500). */
static char *item_encode(ingest_ctx *ctx, ingest_item *it, kpi_measurement *m, int64_t now,
                         const uint8_t *key, size_t *len) {
  if (item_prepare(ctx, it, m, now, key) != 0) return NULL;
  char *payload = kpi_measurement_encode(m, len);
  if (!payload) {
    it->status = 500;
    it->detail = "out of memory";
  }
  return payload;
}

/* Whether M, a correction, would get the event id it corrects from the Idempotency-Key KEY
 * (the codec refuses a body whose own event_id is the corrected one; the evaluator would send
 * such a record to the DLQ after a 202). */
static bool corrects_itself(const kpi_measurement *m, const uint8_t key[16]) {
  uint8_t c[16];
  return m->has_corrects && kpi_uuid_parse(m->corrects, c) == 0 && memcmp(c, key, 16) == 0;
}

/* Reads the Idempotency-Key header into KEY. Returns 1 when present, 0 when absent, -1 when
 * it is not a UUID. */
static int idempotency_key(kpi_http_request *req, uint8_t key[16]) {
  const char *k = kpi_http_header(req, "Idempotency-Key");
  if (!k) return 0;
  if (strlen(k) == KPI_UUID_STRLEN && kpi_uuid_parse(k, key) == 0) return 1;
  return -1;
}

/* idempotency_key, answering 400 for a key that is not a UUID (then -1: the request is done). */
static int request_key(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep, uint64_t t0,
                       uint8_t key[16]) {
  int has_key = idempotency_key(req, key);
  if (has_key < 0)
    answer_problem(ctx, req, ep, t0, 400, "Idempotency-Key must be a UUID",
                   one_error("Idempotency-Key", "format", "must be a UUID"), NULL);
  return has_key;
}

/* ---- POST /v1/measurements ---- */

static void handle_single(ingest_ctx *ctx, kpi_http_request *req, const kpi_department *d,
                          uint64_t t0) {
  const ingest_endpoint ep = INGEST_EP_SINGLE;
  if (!kpi_http_media_type_is(kpi_http_header(req, "Content-Type"), "application/json")) {
    answer_problem(ctx, req, ep, t0, 415, "Content-Type must be application/json", NULL, NULL);
    return;
  }
  uint8_t keybuf[16];
  int has_key = request_key(ctx, req, ep, t0, keybuf);
  if (has_key < 0) return;
  /* The whole body is checked, not just note: any member name or value could otherwise
   * bring bytes that are not UTF-8 into an answer that echoes them. */
  size_t len;
  const char *body = kpi_http_request_body(req, &len);
  if (!kpi_json_utf8_valid(body, len)) {
    answer_problem(ctx, req, ep, t0, 400, "the body is not valid UTF-8",
                   one_error("", "encoding", "the body is not valid UTF-8"), NULL);
    return;
  }
  /* The tree comes from the loop thread's arena, as a batch line's (no batch is half-way
   * through: handlers run to their end), until the checks are done; errors get malloc. */
  ingest_arena_use(true);
  cJSON *obj = kpi_json_parse_one(body, len, false);
  if (!obj) {
    ingest_arena_use(false);
    answer_problem(ctx, req, ep, t0, 400, "the body is not valid JSON",
                   one_error("", "syntax", "not valid JSON"), NULL);
    return;
  }
  int64_t now = kpi_time_now_ms();
  kpi_measurement m;
  kpi_errors errs = {0};
  int status = item_check(ctx, obj, d, now, &m, &errs);
  ingest_arena_use(false);
  cJSON_Delete(obj);
  if (!status && has_key && !m.event_id[0] && corrects_itself(&m, keybuf)) {
    kpi_errors_add(&errs, "corrects.event_id", "value", "a measurement cannot correct itself");
    status = 422;
  }
  if (status) {
    kpi_metrics_inc(ctx->m_records_rejected);
    answer_problem(ctx, req, ep, t0, status,
                   status == 403 ? "this department may not report this record"
                                 : "the measurement breaks the schema or the catalog",
                   kpi_errors_to_json(&errs), NULL);
    return;
  }
  /* With both, the body's event_id wins (proto/openapi.yaml). */
  if (!ctx->topics_ok || ctx->fatal) {
    answer_problem(ctx, req, ep, t0, 503, "the broker is not reachable yet", NULL,
                   RETRY_AFTER_START);
    return;
  }
  ingest_request *r = request_new(ctx, req, ep, t0, 1);
  if (!r) {
    answer_problem(ctx, req, ep, t0, 500, "out of memory", NULL, NULL);
    return;
  }
  size_t plen;
  char *payload = item_encode(ctx, &r->items[0], &m, now, has_key ? keybuf : NULL, &plen);
  if (payload) item_produce(ctx, &r->items[0], payload, plen);
  if (r->pending == 0) request_finish(r);
}

/* ---- POST /v1/measurements:batch ---- */

/* Walks the items of a JSON array, NDJSON or CSV body, one parsed object at a time. */
typedef struct {
  int ndjson;
  int csv;
  ingest_charset charset;  /* CSV: the body's */
  ingest_csv rows;         /* CSV: every row, parsed up front */
  size_t next_row;
  const ingest_csv_row *row; /* CSV: the row of the last object returned */
  const char *body;
  size_t len;
  size_t pos;
  cJSON *array; /* JSON mode: the whole document */
  cJSON *cur;   /* JSON mode: the next element */
  cJSON *line;  /* NDJSON mode: the last parsed line, freed on the next step */
  size_t line_fallbacks; /* ingest_arena_fallbacks() before that line was parsed */
} batch_iter;

/* Sets *OBJ to the next item, or NULL when that NDJSON line is not valid JSON. Returns 0 at
 * the end. */
static int batch_next(batch_iter *bi, const cJSON **obj) {
  if (bi->csv) {
    if (bi->next_row >= bi->rows.n) return 0;
    bi->row = &bi->rows.rows[bi->next_row++];
    *obj = bi->row->obj;
    return 1;
  }
  if (!bi->ndjson) {
    if (!bi->cur) return 0;
    *obj = bi->cur;
    bi->cur = bi->cur->next;
    return 1;
  }
  ingest_arena_drop(bi->line, bi->line_fallbacks);
  bi->line = NULL;
  const char *l;
  size_t ll;
  if (!kpi_batch_ndjson_next(bi->body, bi->len, &bi->pos, &l, &ll)) return 0;
  /* The line's tree comes from the loop thread's arena (the previous one was just deleted),
   * until batch_check_items turns it off after the item's checks. */
  ingest_arena_use(true);
  bi->line_fallbacks = ingest_arena_fallbacks();
  bi->line = kpi_json_parse_one(l, ll, false);
  *obj = bi->line;
  return 1;
}

static void batch_iter_free(batch_iter *bi) {
  ingest_csv_free(&bi->rows);
  ingest_arena_drop(bi->line, bi->line_fallbacks);
  cJSON_Delete(bi->array);
}

/* Atomic batch refused, nothing published: STATUS (ingest_atomic_status: 422, or 403 when
 * every item is another department's measure) whose `results` list the bad items. */
static void answer_atomic_rejected(ingest_ctx *ctx, ingest_request *r, int status, size_t bad) {
  char detail[160];
  ingest_lang lang = request_lang(r->http);
  snprintf(detail, sizeof(detail),
           ingest_text(lang, "invalid items: %zu of %zu; nothing was published (atomic=true)"),
           bad, r->n_items);
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_add(&b, "{", 1);
  if (status == 403)
    put_problem_head(&b, lang, 403, detail, "measure_id", "forbidden",
                     "owned by another department");
  else
    put_problem_head(&b, lang, 422, detail, NULL, NULL, NULL);
  put_results(&b, r, 1);
  kpi_buf_add(&b, "}", 1);
  answer_buf(ctx, r, status, &b, "application/problem+json", NULL);
}

/* One batch request while handle_batch works on it. Each step below either moves it on or
 * answers the request itself and returns -1; batch_job_free releases whatever is held. */
typedef struct {
  ingest_ctx *ctx;
  kpi_http_request *req;
  const kpi_department *d;
  uint64_t t0;
  int atomic;
  batch_iter bi;
  size_t n;              /* items */
  ingest_request *r;     /* held across delivery reports once created */
  rd_kafka_message_t *msgs; /* the encodings of the items that passed, in input order */
  kpi_buf enc;              /* those encodings, one after the other */
  size_t n_msgs;
  size_t bad, forbidden; /* items refused by their checks, 403 among them */
} batch_job;

static int batch_fail(batch_job *j, int status, const char *detail, cJSON *errors,
                      const char *extra) {
  answer_problem(j->ctx, j->req, INGEST_EP_BATCH, j->t0, status, detail, errors, extra);
  return -1;
}

/* Content type, the atomic flag and the body's encoding. */
static int batch_read_request(batch_job *j) {
  const char *ct = kpi_http_header(j->req, "Content-Type");
  char charset[32];
  j->bi.ndjson = kpi_http_media_type_is(ct, "application/x-ndjson");
  j->bi.csv = kpi_http_media_type_charset(ct, "text/csv", charset, sizeof(charset));
  if (j->bi.csv && ingest_csv_charset(charset, &j->bi.charset) != 0)
    return batch_fail(j, 415,
                      "text/csv is read as charset=utf-8 (the default) or charset=Shift_JIS "
                      "(CP932)",
                      NULL, NULL);
  if (!j->bi.ndjson && !j->bi.csv && !kpi_http_media_type_is(ct, "application/json"))
    return batch_fail(j, 415,
                      "Content-Type must be application/json (an array), application/x-ndjson "
                      "or text/csv",
                      NULL, NULL);
  if (kpi_http_query_flag(kpi_http_request_query(j->req), "atomic", &j->atomic) != 0)
    return batch_fail(j, 400, "atomic must be true or false",
                      one_error("atomic", "value", "must be true or false"), NULL);
  /* The Idempotency-Key header is not used for batches (proto/openapi.yaml): each item
   * carries its own event_id when retries must be idempotent. */
  j->bi.body = kpi_http_request_body(j->req, &j->bi.len);
  /* A CSV body is checked against its own charset while it is converted (batch_open). */
  if (!j->bi.csv && !kpi_json_utf8_valid(j->bi.body, j->bi.len))
    return batch_fail(j, 400, "the body is not valid UTF-8",
                      one_error("", "encoding", "the body is not valid UTF-8"), NULL);
  return 0;
}

/* Counts the items (NDJSON lines, or the elements of the parsed array) and checks the count
 * and the broker before anything is allocated per item. */
static int batch_open(batch_job *j) {
  size_t max = (size_t)j->ctx->cfg.max_batch;
  if (j->bi.csv) {
    kpi_errors errs = {.n = 0};
    char detail[160];
    int st = ingest_csv_parse(j->bi.body, j->bi.len, j->bi.charset, max, &j->bi.rows, &errs,
                              detail, sizeof(detail));
    if (st)
      return batch_fail(j, st, detail, errs.n ? kpi_errors_to_json(&errs) : NULL, NULL);
    j->n = j->bi.rows.n;
  } else if (j->bi.ndjson) {
    j->n = kpi_batch_ndjson_count(j->bi.body, j->bi.len, max);
  } else {
    j->bi.array = kpi_json_parse_one(j->bi.body, j->bi.len, false);
    if (!j->bi.array)
      return batch_fail(j, 400, "the body is not valid JSON",
                        one_error("", "syntax", "not valid JSON"), NULL);
    if (!cJSON_IsArray(j->bi.array))
      return batch_fail(j, 400, "a batch is a JSON array of measurements",
                        one_error("", "type", "must be an array"), NULL);
    j->n = (size_t)cJSON_GetArraySize(j->bi.array);
    j->bi.cur = j->bi.array->child;
  }
  if (j->n > max) {
    char detail[96];
    snprintf(detail, sizeof(detail),
             ingest_text(request_lang(j->req), "a batch holds at most %zu items"), max);
    return batch_fail(j, 413, detail, NULL, NULL);
  }
  if (j->n == 0)
    return batch_fail(j, 422, "the batch is empty",
                      one_error("", "empty", "at least one item is required"), NULL);
  kpi_metrics_add(j->ctx->m_batch_items, (double)j->n);
  if (!j->ctx->topics_ok || j->ctx->fatal)
    return batch_fail(j, 503, "the broker is not reachable yet", NULL, RETRY_AFTER_START);
  return 0;
}

/* The request held across delivery reports, and the slots of the encodings. */
static int batch_alloc(batch_job *j) {
  j->r = request_new(j->ctx, j->req, INGEST_EP_BATCH, j->t0, j->n);
  if (j->r) j->msgs = calloc(j->n, sizeof(*j->msgs));
  if (!j->r || !j->msgs) {
    if (j->r) {
      request_free(j->r);
      j->ctx->inflight--;
      j->r = NULL;
    }
    return batch_fail(j, 500, "out of memory", NULL, NULL);
  }
  j->r->atomic = j->atomic;
  return 0;
}

/* Checks and encodes every item, keeping the encodings for batch_publish. */
static void batch_check_items(batch_job *j) {
  ingest_ctx *ctx = j->ctx;
  int64_t now = kpi_time_now_ms();
  kpi_measurement m;
  const cJSON *obj;
  for (size_t i = 0; i < j->n && batch_next(&j->bi, &obj); i++) {
    ingest_item *it = &j->r->items[i];
    kpi_errors errs;
    errs.n = 0; /* kpi_errors_add fills items[n]; the rest need not be zeroed per item */
    int status;
    if (j->bi.csv) it->row = j->bi.row->row;
    if (!obj && j->bi.csv) {
      /* A row that did not make an object (field count, NUL byte): the reason the CSV
       * reader gave, as this item's one error. */
      errs.items[0] = j->bi.row->err;
      errs.n = 1;
      status = 422;
    } else if (!obj) {
      kpi_errors_add(&errs, "", "syntax", "item %zu is not valid JSON", i);
      status = 422;
    } else {
      status = item_check(ctx, obj, j->d, now, &m, &errs);
    }
    ingest_arena_use(false); /* the errors' tree outlives the item: malloc */
    if (status) {
      it->status = status;
      it->errors = kpi_errors_to_json(&errs);
      if (obj && m.measure_id[0]) memcpy(it->measure_id, m.measure_id, sizeof(it->measure_id));
      kpi_metrics_inc(ctx->m_records_rejected);
      j->bad++;
      j->forbidden += status == 403;
      continue;
    }
    size_t at = j->enc.len;
    if (item_prepare(ctx, it, &m, now, NULL) != 0 || kpi_measurement_encode_buf(&m, &j->enc)) {
      if (!it->status) {
        it->status = 500;
        it->detail = "out of memory";
      }
      j->bad++;
      continue;
    }
    /* The offset for now: the buffer may still move (batch_publish points at it). */
    rd_kafka_message_t *msg = &j->msgs[j->n_msgs++];
    msg->payload = (void *)(uintptr_t)at;
    msg->len = j->enc.len - at;
    msg->key = it->measure_id;
    msg->key_len = strlen(it->measure_id);
    msg->_private = it;
  }
}

/* The records of MSGS (N) grouped by the partition librdkafka's murmur2_random partitioner
 * picks for their key among PARTITIONS, into OUT (N slots), input order kept within a
 * partition; RUNS[p] gets partition p's count. Each record's partition is noted in its own
 * `partition` field, which rd_kafka_produce_batch ignores (no RD_KAFKA_MSG_F_PARTITION). */
static void group_by_partition(rd_kafka_message_t *msgs, size_t n, int32_t partitions,
                               rd_kafka_message_t *out, size_t *runs) {
  memset(runs, 0, (size_t)partitions * sizeof(*runs));
  for (size_t k = 0; k < n; k++) {
    /* Every checked item has its measure id as key, so murmur2_random is murmur2 of the key
     * (the Java client's partitioner); its key-less random branch, which must run inside
     * librdkafka, is never taken here. */
    msgs[k].partition = rd_kafka_msg_partitioner_murmur2_random(NULL, msgs[k].key,
                                                                msgs[k].key_len, partitions,
                                                                NULL, NULL);
    runs[msgs[k].partition]++;
  }
  size_t start[256], at = 0;
  for (int32_t p = 0; p < partitions; p++) {
    start[p] = at;
    at += runs[p];
  }
  for (size_t k = 0; k < n; k++) out[start[msgs[k].partition]++] = msgs[k];
}

/* Produces the batch's records partition by partition (docs/ingest.md "Performance, eighth
 * round"): one rd_kafka_produce_batch call per partition appends its records under one
 * partition lock, where RD_KAFKA_PARTITION_UA runs the partitioner and takes the partition's
 * lock for each record. The partition is the one librdkafka would pick (murmur2_random of the
 * measure id, the topic's partition count from the probe), so a measure's records stay in
 * one partition, in input order. With another partitioner configured, a count not known yet
 * or above 256, the whole batch goes through RD_KAFKA_PARTITION_UA as before. Returns the
 * array whose err fields hold the outcome (J->msgs, or a regrouped copy in *SPARE). */
static rd_kafka_message_t *produce_by_partition(batch_job *j, rd_kafka_message_t **spare) {
  ingest_ctx *ctx = j->ctx;
  int32_t parts = ctx->partitions;
  size_t runs[256];
  *spare = NULL;
  if (ctx->murmur2_random && parts > 0 && parts <= 256 &&
      (*spare = malloc(j->n_msgs * sizeof(**spare)))) {
    group_by_partition(j->msgs, j->n_msgs, parts, *spare, runs);
    size_t at = 0;
    for (int32_t p = 0; p < parts; at += runs[p], p++)
      if (runs[p]) rd_kafka_produce_batch(ctx->rkt, p, 0, *spare + at, (int)runs[p]);
    return *spare;
  }
  rd_kafka_produce_batch(ctx->rkt, RD_KAFKA_PARTITION_UA, 0, j->msgs, (int)j->n_msgs);
  return j->msgs;
}

/* Hands the encodings to the producer (produce_by_partition): one clock reading and one
 * lock per partition for the batch instead of one per record. An atomic batch with any bad
 * item is refused whole instead, nothing published. Once the queue is full, librdkafka
 * refuses every later record of that call; each item's answer says whether it is in Kafka.
 * Returns -1 when the request was answered (and freed) here. */
static int batch_publish(batch_job *j) {
  int status = j->atomic ? ingest_atomic_status(j->n, j->bad, j->forbidden) : 0;
  if (status) {
    answer_atomic_rejected(j->ctx, j->r, status, j->bad);
    request_free(j->r);
    j->ctx->inflight--;
    j->r = NULL;
    return -1;
  }
  if (j->n_msgs == 0) return 0;
  /* No RD_KAFKA_MSG_F_COPY nor F_FREE: librdkafka keeps the pointers into the one buffer of
   * encodings, which must then stay unchanged until the delivery report of its last record
   * (rdkafka.h, rd_kafka_produce), so the request takes the buffer over and request_free
   * frees it after the last report. That saves librdkafka's copy of every payload; a record
   * the call refuses is not referenced by librdkafka afterwards, and no free depends on why
   * it failed (docs/ingest.md, "Performance, seventh round"). The buffer's spare capacity
   * (growth doubles) is given back first, as the request may hold it for up to
   * message.timeout.ms, outside librdkafka's queue.buffering.max.kbytes. */
  kpi_buf_trim(&j->enc);
  for (size_t k = 0; k < j->n_msgs; k++)
    j->msgs[k].payload = j->enc.s + (uintptr_t)j->msgs[k].payload;
  j->r->payloads = j->enc;
  j->enc = (kpi_buf)KPI_BUF_INIT;
  rd_kafka_message_t *spare, *done = produce_by_partition(j, &spare);
  for (size_t k = 0; k < j->n_msgs; k++) {
    ingest_item *it = done[k]._private;
    if (done[k].err) item_refused(j->ctx, it, done[k].err);
    else j->r->pending++;
  }
  free(spare);
  return 0;
}

/* Releases what the job holds; the request R is not its to free once handed on. */
static void batch_job_free(batch_job *j) {
  batch_iter_free(&j->bi);
  kpi_buf_free(&j->enc);
  free(j->msgs);
}

static void handle_batch(ingest_ctx *ctx, kpi_http_request *req, const kpi_department *d,
                         uint64_t t0) {
  batch_job j = {.ctx = ctx, .req = req, .d = d, .t0 = t0};
  if (batch_read_request(&j) == 0 && batch_open(&j) == 0 && batch_alloc(&j) == 0) {
    batch_check_items(&j);
    if (batch_publish(&j) == 0 && j.r->pending == 0) request_finish(j.r);
  }
  batch_job_free(&j);
}

/* ---- the rest ---- */

static const kpi_department *authenticate(ingest_ctx *ctx, kpi_http_request *req,
                                          ingest_endpoint ep, uint64_t t0) {
  const char *auth = kpi_http_header(req, "Authorization");
  const char *token;
  size_t tlen;
  if (!auth) {
    answer_problem(ctx, req, ep, t0, 401, "a bearer token is required", NULL, WWW_AUTH);
    return NULL;
  }
  /* The same header value verifies the same way until the catalog is replaced: a client's
   * token is hashed once, not on every request (docs/ingest.md "Performance, fifth round"). */
  const kpi_department *d = ingest_auth_find(&ctx->auth, auth);
  if (d) return d;
  d = kpi_http_bearer_token(auth, &token, &tlen) == 0
          ? kpi_catalog_authenticate(ctx->catalog, token, tlen)
          : NULL;
  if (d) ingest_auth_remember(&ctx->auth, auth, d);
  if (!d) {
    /* Never log the token; the fact alone is worth a debug line. */
    kpi_log(KPI_LOG_DEBUG, "auth_failed", "unknown or malformed bearer token");
    answer_problem(ctx, req, ep, t0, 401, "the bearer token is not valid", NULL,
                   WWW_AUTH);
  }
  return d;
}

/* ---- GET /v1/me ---- */

/* The words accepted for canonical unit UNIT: itself, then its catalog labels (docs/ingest.md
 * "Units"). */
static cJSON *me_unit_words(const kpi_catalog *cat, const char *unit) {
  cJSON *a = cJSON_CreateArray();
  if (!a) return NULL;
  cJSON_AddItemToArray(a, cJSON_CreateString(unit));
  const kpi_unit *u = kpi_catalog_unit(cat, unit);
  for (size_t i = 0; u && i < u->n_labels; i++)
    cJSON_AddItemToArray(a, cJSON_CreateString(u->labels[i]));
  return a;
}

/* The units a measurement of MS may carry: `units` for its value, and for a ratio the
 * `component_unit` of its amounts and the words accepted for it (null and [] when the catalog
 * names none: then any count unit but percent is taken as written). */
static void me_units(cJSON *o, const kpi_catalog *cat, const kpi_measure *ms) {
  if (ms->kind != KPI_KIND_RATIO) {
    cJSON_AddItemToObject(o, "units", me_unit_words(cat, ms->unit));
    return;
  }
  cJSON_AddItemToObject(o, "units", cJSON_CreateArray());
  if (ms->component_unit) {
    cJSON_AddStringToObject(o, "component_unit", ms->component_unit);
    cJSON_AddItemToObject(o, "component_units", me_unit_words(cat, ms->component_unit));
  } else {
    cJSON_AddNullToObject(o, "component_unit");
    cJSON_AddItemToObject(o, "component_units", cJSON_CreateArray());
  }
}

/* A measure as the entry page needs it: names, unit, kind and the rules a value must keep
 * (the codec's, stated so the page can guide the user; the server still checks them all). */
static cJSON *me_measure(const kpi_catalog *cat, const kpi_measure *ms) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "id", ms->id);
  cJSON_AddNumberToObject(o, "goal", ms->goal);
  cJSON_AddStringToObject(o, "program", ms->program ? ms->program : "");
  cJSON_AddStringToObject(o, "name", ms->name);
  cJSON_AddStringToObject(o, "indicator", ms->indicator);
  cJSON_AddStringToObject(o, "unit", ms->unit);
  cJSON_AddStringToObject(o, "kind", kpi_kind_name(ms->kind));
  cJSON_AddStringToObject(o, "direction", kpi_direction_name(ms->direction));
  cJSON *b = cJSON_AddObjectToObject(o, "baseline");
  if (b) {
    cJSON_AddNumberToObject(b, "fy", ms->baseline_fy);
    cJSON_AddNumberToObject(b, "value", ms->baseline);
  }
  cJSON *t = cJSON_AddObjectToObject(o, "target");
  if (t) {
    cJSON_AddNumberToObject(t, "fy", ms->target_fy);
    cJSON_AddNumberToObject(t, "value", ms->target);
  }
  cJSON_AddNumberToObject(o, "value_min", 0);
  cJSON_AddNumberToObject(o, "value_max", ms->kind == KPI_KIND_MILESTONE ? 1 : ms->value_max);
  /* Ratio measures are reported as their two additive amounts: each record names which one
   * it carries, and must; every other kind must not name one. */
  cJSON *comps = cJSON_AddArrayToObject(o, "components");
  if (comps && ms->kind == KPI_KIND_RATIO) {
    cJSON_AddItemToArray(comps, cJSON_CreateString("numerator"));
    cJSON_AddItemToArray(comps, cJSON_CreateString("denominator"));
  }
  cJSON_AddBoolToObject(o, "component_required", ms->kind == KPI_KIND_RATIO);
  me_units(o, cat, ms);
  return o;
}

/* The token's department and the measures it owns, in catalog (id) order. No mailbox, no
 * hash: only what the department itself needs to report. */
static void handle_me(ingest_ctx *ctx, kpi_http_request *req, const kpi_department *d,
                      uint64_t t0) {
  cJSON *doc = cJSON_CreateObject();
  cJSON *dep = doc ? cJSON_AddObjectToObject(doc, "department") : NULL;
  cJSON *list = doc ? cJSON_AddArrayToObject(doc, "measures") : NULL;
  int ok = dep && list;
  if (ok) {
    cJSON_AddStringToObject(dep, "id", d->id);
    cJSON_AddStringToObject(dep, "name", d->name ? d->name : d->id);
    for (size_t i = 0; i < ctx->catalog->n_measures && ok; i++) {
      const kpi_measure *ms = &ctx->catalog->measures[i];
      if (strcmp(ms->owner, d->id) != 0) continue;
      cJSON *o = me_measure(ctx->catalog, ms);
      ok = o != NULL;
      if (o) cJSON_AddItemToArray(list, o);
    }
  }
  char *text = ok ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  if (!text) {
    answer_problem(ctx, req, INGEST_EP_ME, t0, 500, "out of memory", NULL, NULL);
    return;
  }
  count_response(ctx, INGEST_EP_ME, 200, t0);
  kpi_http_respond(req, 200, "application/json", text, strlen(text),
                   "Cache-Control: no-store\r\n");
  cJSON_free(text);
}

/* ---- retractions and acknowledgements (docs/corrections.md "HTTP (ingest)") ---- */

#define RETRACT_PREFIX "/v1/measurements/"
#define RETRACT_SUFFIX ":retract"
#define ACK_PREFIX "/v1/measures/"
#define ACK_SUFFIX "/acknowledgements"

/* Copies the segment of PATH between PREFIX and SUFFIX into OUT (SIZE bytes). Returns 0, or -1
 * when PATH is not PREFIX + one non-empty segment (no '/') + SUFFIX, or the segment does not
 * fit: such a path names no resource (404). */
static int path_segment(const char *path, const char *prefix, const char *suffix, char *out,
                        size_t size) {
  size_t pl = strlen(prefix), sl = strlen(suffix), n = strlen(path);
  if (n <= pl + sl || strncmp(path, prefix, pl) != 0 || strcmp(path + n - sl, suffix) != 0)
    return -1;
  size_t len = n - pl - sl;
  if (len >= size || memchr(path + pl, '/', len)) return -1;
  memcpy(out, path + pl, len);
  out[len] = '\0';
  return 0;
}

/* True when the route's path has the shape of its resource (the table matches prefixes). */
static bool path_is_resource(kpi_http_request *req, ingest_endpoint ep) {
  char seg[KPI_UUID_STRLEN + KPI_ID_MAX + 2];
  const char *path = kpi_http_request_path(req);
  return ep == INGEST_EP_RETRACT
             ? path_segment(path, RETRACT_PREFIX, RETRACT_SUFFIX, seg, sizeof(seg)) == 0
             : path_segment(path, ACK_PREFIX, ACK_SUFFIX, seg, sizeof(seg)) == 0;
}

/* A body whose only error is at the body level (not UTF-8, not JSON) earns 400, like a
 * measurement's; field errors earn 422. */
static int body_status(const kpi_errors *errs) {
  if (errs->n == 1 && errs->items[0].field[0] == '\0' &&
      (strcmp(errs->items[0].code, "encoding") == 0 || strcmp(errs->items[0].code, "syntax") == 0))
    return 400;
  return 422;
}

/* The problem detail of a refused record body: for 400 (body_status) what was wrong with the
 * body as a whole, else SCHEMA_DETAIL. */
static const char *body_detail(int status, const kpi_errors *errs, const char *schema_detail) {
  if (status != 400) return schema_detail;
  return strcmp(errs->items[0].code, "syntax") == 0 ? "the body is not valid JSON"
                                                    : "the body is not valid UTF-8";
}

/* Publishes PAYLOAD (takes ownership; NULL: out of memory) of a one-record request for EP, its
 * item carrying EVENT_ID, MEASURE_ID and REF (ingest_item.ref): the same producer, opaque and delivery report as a measurement's, so the 202 comes after the
 * broker's ack (finish_single). */
static void produce_one(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep, uint64_t t0,
                        const char *event_id, const char *measure_id, const char *ref,
                        char *payload, size_t len) {
  if (!payload) {
    answer_problem(ctx, req, ep, t0, 500, "out of memory", NULL, NULL);
    return;
  }
  ingest_request *r = request_new(ctx, req, ep, t0, 1);
  if (!r) {
    free(payload);
    answer_problem(ctx, req, ep, t0, 500, "out of memory", NULL, NULL);
    return;
  }
  ingest_item *it = &r->items[0];
  snprintf(it->event_id, sizeof(it->event_id), "%s", event_id);
  snprintf(it->measure_id, sizeof(it->measure_id), "%s", measure_id);
  snprintf(it->ref, sizeof(it->ref), "%s", ref);
  item_produce(ctx, it, payload, len);
  if (r->pending == 0) request_finish(r);
}

/* 415 unless the body is declared JSON. Returns 0 to go on. */
static int record_preflight(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep,
                            uint64_t t0) {
  if (!kpi_http_media_type_is(kpi_http_header(req, "Content-Type"), "application/json")) {
    answer_problem(ctx, req, ep, t0, 415, "Content-Type must be application/json", NULL, NULL);
    return -1;
  }
  return 0;
}

/* 503 while the broker's topic is not known yet (as for measurements). Returns 0 to go on. */
static int broker_ready(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep,
                        uint64_t t0) {
  if (ctx->topics_ok && !ctx->fatal) return 0;
  answer_problem(ctx, req, ep, t0, 503, "the broker is not reachable yet", NULL,
                 RETRY_AFTER_START);
  return -1;
}

/* Checks a retraction request's measure for department D: 403 when another department owns
 * it (before any field error: a department learns nothing about others' measures), 422 when
 * the body's fields are wrong or the measure is unknown. Returns 0 when it may be published. */
static int retraction_check(ingest_ctx *ctx, const kpi_department *d, int rc,
                            kpi_retraction *rt, kpi_errors *errs) {
  const kpi_measure *ms = rt->measure_id[0] ? kpi_catalog_measure(ctx->catalog, rt->measure_id)
                                            : NULL;
  if (ms && strcmp(ms->owner, d->id) != 0) {
    errs->n = 0;
    kpi_errors_add(errs, "measure_id", "forbidden",
                   "measure \"%s\" is not owned by department \"%s\"", rt->measure_id, d->id);
    return 403;
  }
  if (rc != 0) return body_status(errs);
  if (!ms) {
    kpi_errors_add(errs, "measure_id", "unknown_measure", "no measure \"%s\" in the catalog",
                   rt->measure_id);
    return 422;
  }
  return 0;
}

/* POST /v1/measurements/{event_id}:retract: publishes kpi.retraction/1 keyed by the measure,
 * its event id derived from the retracted one (a retried request is the same record). */
static void handle_retract(ingest_ctx *ctx, kpi_http_request *req, const kpi_department *d,
                           uint64_t t0) {
  const ingest_endpoint ep = INGEST_EP_RETRACT;
  char id[KPI_UUID_STRLEN + KPI_ID_MAX + 2];
  path_segment(kpi_http_request_path(req), RETRACT_PREFIX, RETRACT_SUFFIX, id, sizeof(id));
  if (strlen(id) != KPI_UUID_STRLEN || kpi_uuid_parse(id, NULL) != 0) {
    answer_problem(ctx, req, ep, t0, 400, "the event_id in the path must be a UUID",
                   one_error("event_id", "format", "must be a UUID"), NULL);
    return;
  }
  if (record_preflight(ctx, req, ep, t0)) return;
  size_t len;
  const char *body = kpi_http_request_body(req, &len);
  kpi_retraction rt;
  kpi_errors errs = {0};
  int rc = kpi_retraction_parse(body, len, KPI_PARSE_INPUT, &rt, &errs);
  int status = retraction_check(ctx, d, rc, &rt, &errs);
  if (status) {
    kpi_metrics_inc(ctx->m_records_rejected);
    answer_problem(ctx, req, ep, t0, status,
                   status == 403 ? "only the measure's owner may retract its measurements"
                                 : body_detail(status, &errs,
                                               "the retraction breaks the schema or the catalog"),
                   kpi_errors_to_json(&errs), NULL);
    return;
  }
  if (broker_ready(ctx, req, ep, t0)) return;
  for (size_t i = 0; i < KPI_UUID_STRLEN; i++) rt.retracts[i] = (char)tolower((unsigned char)id[i]);
  rt.retracts[KPI_UUID_STRLEN] = '\0';
  snprintf(rt.department, sizeof(rt.department), "%s", d->id);
  kpi_retraction_id(rt.retracts, rt.measure_id, rt.department, rt.event_id);
  rt.received_ms = kpi_time_now_ms();
  kpi_time_format_utc(rt.received_ms, rt.received_at, sizeof(rt.received_at));
  size_t plen = 0;
  char *payload = kpi_retraction_encode(&rt, &plen);
  produce_one(ctx, req, ep, t0, rt.event_id, rt.measure_id, rt.retracts, payload, plen);
}

/* The measure of an acknowledgement path for department D: 404 when the catalog has none,
 * 403 when another department owns it. Returns it, or NULL when answered. */
static const kpi_measure *ack_measure(ingest_ctx *ctx, kpi_http_request *req,
                                      const kpi_department *d, uint64_t t0) {
  char id[KPI_UUID_STRLEN + KPI_ID_MAX + 2];
  path_segment(kpi_http_request_path(req), ACK_PREFIX, ACK_SUFFIX, id, sizeof(id));
  const kpi_measure *ms = kpi_catalog_measure(ctx->catalog, id);
  if (!ms) {
    answer_problem(ctx, req, INGEST_EP_ACK, t0, 404, "no such measure in the catalog", NULL,
                   NULL);
    return NULL;
  }
  if (strcmp(ms->owner, d->id) != 0) {
    kpi_metrics_inc(ctx->m_records_rejected);
    answer_problem(ctx, req, INGEST_EP_ACK, t0, 403, "only the measure's owner may acknowledge it",
                   one_error("measure_id", "forbidden", "owned by another department"), NULL);
    return NULL;
  }
  return ms;
}

/* POST /v1/measures/{id}/acknowledgements: the owner's note, published as
 * kpi.acknowledgement/1 keyed by the measure; `until` defaults to 28 days (kpi_ack_check). */
static void handle_ack(ingest_ctx *ctx, kpi_http_request *req, const kpi_department *d,
                       uint64_t t0) {
  const ingest_endpoint ep = INGEST_EP_ACK;
  const kpi_measure *ms = ack_measure(ctx, req, d, t0);
  if (!ms || record_preflight(ctx, req, ep, t0)) return;
  uint8_t key[16];
  int has_key = request_key(ctx, req, ep, t0, key);
  if (has_key < 0) return;
  size_t len;
  const char *body = kpi_http_request_body(req, &len);
  kpi_ack a;
  kpi_errors errs = {0};
  int rc = kpi_ack_parse(body, len, KPI_PARSE_INPUT, &a, &errs);
  a.received_ms = kpi_time_now_ms(); /* `until` is checked against the day received */
  kpi_time_format_utc(a.received_ms, a.received_at, sizeof(a.received_at));
  if (rc == 0) rc = kpi_ack_check(&a, &errs);
  if (rc != 0) {
    int status = body_status(&errs);
    kpi_metrics_inc(ctx->m_records_rejected);
    answer_problem(ctx, req, ep, t0, status,
                   body_detail(status, &errs, "the acknowledgement breaks the schema"),
                   kpi_errors_to_json(&errs), NULL);
    return;
  }
  if (broker_ready(ctx, req, ep, t0)) return;
  snprintf(a.measure_id, sizeof(a.measure_id), "%s", ms->id);
  snprintf(a.department, sizeof(a.department), "%s", d->id);
  /* A client's id (the body's wins over the key) is scoped to the measure and department. */
  char client[KPI_UUID_STRLEN + 1] = "";
  if (a.event_id[0]) memcpy(client, a.event_id, sizeof(client));
  else if (has_key) kpi_uuid_format(key, client);
  if (client[0]) kpi_ack_id(client, a.measure_id, a.department, a.event_id);
  else if (kpi_uuid_v4(a.event_id) != 0) {
    answer_problem(ctx, req, ep, t0, 500, "no random bytes for an event_id", NULL, NULL);
    return;
  }
  size_t plen = 0;
  char *payload = kpi_ack_encode(&a, &plen);
  produce_one(ctx, req, ep, t0, a.event_id, a.measure_id, a.until, payload, plen);
}

/* ---- the entry page's files ---- */

static void handle_page(ingest_ctx *ctx, kpi_http_request *req, ingest_endpoint ep,
                        uint64_t t0) {
  const ingest_web_file *f = ingest_web_find(ingest_http_routes[ep].path);
  if (!f) { /* a build without the file: a packaging defect, not the client's */
    answer_problem(ctx, req, ep, t0, 500, "the page was not built into this binary", NULL,
                   NULL);
    return;
  }
  count_response(ctx, ep, 200, t0);
  kpi_http_respond(req, 200, f->content_type, f->data, f->len, INGEST_PAGE_HEADERS);
}

static void handle_metrics(ingest_ctx *ctx, kpi_http_request *req, uint64_t t0) {
  kpi_metrics_set(ctx->m_queue_depth, (double)rd_kafka_outq_len(ctx->rk));
  kpi_metrics_set(ctx->m_inflight, (double)ctx->inflight);
  kpi_metrics_set(ctx->m_ready, ctx->ready ? 1 : 0);
  /* Count this scrape before rendering so that it sees itself. */
  count_response(ctx, INGEST_EP_METRICS, 200, t0);
  kpi_http_respond_metrics(req, &ctx->http, ctx->metrics);
}

/* In ingest_endpoint order: a request's route index is its endpoint. The server answers
 * unknown paths (404), methods a route does not list (405) and unknown methods (501). */
const kpi_http_route ingest_http_routes[INGEST_EP_OTHER] = {
    [INGEST_EP_SINGLE] = {"/v1/measurements", KPI_HTTP_POST},
    [INGEST_EP_BATCH] = {"/v1/measurements:batch", KPI_HTTP_POST},
    [INGEST_EP_HEALTHZ] = {"/healthz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [INGEST_EP_READYZ] = {"/readyz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [INGEST_EP_METRICS] = {"/metrics", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [INGEST_EP_ME] = {"/v1/me", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [INGEST_EP_ENTRY] = {"/entry", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [INGEST_EP_ENTRY_JS] = {"/entry.js", KPI_HTTP_GET | KPI_HTTP_HEAD},
    [INGEST_EP_ENTRY_CSS] = {"/entry.css", KPI_HTTP_GET | KPI_HTTP_HEAD},
    /* Prefixes: the handlers answer 404 for paths of another shape (path_is_resource). */
    [INGEST_EP_RETRACT] = {"/v1/measurements/*", KPI_HTTP_POST},
    [INGEST_EP_ACK] = {"/v1/measures/*", KPI_HTTP_POST},
};

void ingest_on_http_request(kpi_http_request *req, void *opaque) {
  ingest_ctx *ctx = opaque;
  uint64_t t0 = uv_hrtime();
  ingest_endpoint ep = (ingest_endpoint)kpi_http_request_route(req);
  if ((ep == INGEST_EP_RETRACT || ep == INGEST_EP_ACK) && !path_is_resource(req, ep)) {
    answer_problem(ctx, req, ep, t0, 404, "no such resource", NULL, NULL);
    return;
  }
  if (ep == INGEST_EP_SINGLE || ep == INGEST_EP_BATCH || ep == INGEST_EP_ME ||
      ep == INGEST_EP_RETRACT || ep == INGEST_EP_ACK) {
    const kpi_department *d = authenticate(ctx, req, ep, t0);
    if (!d) return;
    if (ep == INGEST_EP_SINGLE) handle_single(ctx, req, d, t0);
    else if (ep == INGEST_EP_BATCH) handle_batch(ctx, req, d, t0);
    else if (ep == INGEST_EP_RETRACT) handle_retract(ctx, req, d, t0);
    else if (ep == INGEST_EP_ACK) handle_ack(ctx, req, d, t0);
    else handle_me(ctx, req, d, t0);
    return;
  }
  if (ep == INGEST_EP_ENTRY || ep == INGEST_EP_ENTRY_JS || ep == INGEST_EP_ENTRY_CSS) {
    handle_page(ctx, req, ep, t0);
    return;
  }
  if (ep == INGEST_EP_HEALTHZ) {
    static const char ok[] = "{\"status\":\"ok\"}";
    answer_json(ctx, req, ep, t0, 200, ok, sizeof(ok) - 1);
  } else if (ep == INGEST_EP_READYZ) {
    if (ctx->ready && ctx->topics_ok && !ctx->fatal && !ctx->shutdown.stopping) {
      static const char ok[] = "{\"status\":\"ready\"}";
      answer_json(ctx, req, ep, t0, 200, ok, sizeof(ok) - 1);
    } else {
      answer_problem(ctx, req, ep, t0, 503,
                     ctx->shutdown.stopping       ? "shutting down"
                     : ctx->broker_err[0] ? ctx->broker_err
                                          : "the broker is not reachable yet",
                     NULL, RETRY_AFTER_START);
    }
  } else {
    handle_metrics(ctx, req, t0);
  }
}
