/* ingest.h: the ingest service's context, shared by its main, Kafka glue and HTTP handlers. */
#ifndef INGEST_H
#define INGEST_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ingest_auth.h"
#include "kpi_catalog.h"
#include "kpi_http.h"
#include "kpi_kafka.h"
#include "kpi_metrics.h"
#include "kpi_shutdown.h"

/* Endpoints, for metric labels. */
typedef enum {
  INGEST_EP_SINGLE = 0,
  INGEST_EP_BATCH,
  INGEST_EP_HEALTHZ,
  INGEST_EP_READYZ,
  INGEST_EP_METRICS,
  INGEST_EP_ME,        /* GET /v1/me */
  INGEST_EP_ENTRY,     /* the entry page and its files: /entry, /entry.js, /entry.css */
  INGEST_EP_ENTRY_JS,
  INGEST_EP_ENTRY_CSS,
  INGEST_EP_RETRACT,   /* POST /v1/measurements/{event_id}:retract (docs/corrections.md) */
  INGEST_EP_ACK,       /* POST /v1/measures/{id}/acknowledgements */
  INGEST_EP_OTHER,
  INGEST_EP_COUNT
} ingest_endpoint;

typedef struct ingest_config {
  char listen_host[64];
  int listen_port;
  char catalog_path[1024];
  int64_t max_batch;
  int64_t delivery_timeout_ms;
  kpi_http_config http;
  kpi_topic_spec topic; /* kpi.measurements.v1 or KPI_TOPIC_MEASUREMENTS */
} ingest_config;

/* The one context of the process, reached from every callback through handle->data, the
 * request's user slot or librdkafka's opaques. Loop-thread only, except the probe_* fields
 * that the readiness probe's worker writes while probe_running (see ingest_kafka.c). */
typedef struct ingest_ctx {
  uv_loop_t *loop;
  ingest_config cfg;
  kpi_catalog *catalog;
  /* Authorization values verified against this catalog (ingest_auth.h), cleared when it is
   * replaced. */
  ingest_auth_cache auth;

  kpi_http_server http;
  kpi_kafka_waker waker;
  kpi_shutdown shutdown; /* signals, drain deadline, exit code (ingest_service.c) */
  uv_timer_t probe_timer;
  uv_work_t probe_work;

  rd_kafka_t *rk;
  rd_kafka_topic_t *rkt;

  /* Broker state, as last seen by the probe: topics_ok once the topic is known to exist,
   * ready while its metadata answers. Requests are refused with 503 until topics_ok. */
  bool topics_ok;
  bool ready;
  bool fatal; /* the idempotent producer hit a fatal error: refuse, drain, exit */
  bool probe_running;
  bool probe_need_topics; /* input of the worker */
  int probe_result;       /* outputs of the worker */
  bool probe_topics_done;
  char probe_err[256];
  int32_t probe_partitions; /* output of the worker: the topic's partition count */
  char broker_err[256]; /* loop-side copy of probe_err, for /readyz */
  /* Batches are produced one partition at a time when the partitioner in effect is
   * murmur2_random (the default) and the topic's partition count is known (from the probe):
   * see ingest_handlers.c batch_publish and docs/ingest.md "Performance, eighth round". */
  bool murmur2_random;
  int32_t partitions; /* loop-side copy of probe_partitions; 0 until known */

  /* Random bytes for the event ids the service makes up (UUID v4), drawn from RAND_bytes a
   * block at a time: one call per request cost more than the rest of the id's work
   * (ingest_handlers.c, random_event_id). The last ids_left bytes are unspent. */
  uint8_t ids[4096];
  size_t ids_left;
  /* received_at of the last record, reused for every record of the same millisecond. */
  int64_t received_ms;
  char received_at[32];

  uint64_t inflight; /* requests held by handlers (waiting for delivery reports) */
  bool purged;         /* the drain gave up on Kafka and purged the producer's queues */
  uint64_t drained_at; /* when the last held request was answered */

  /* Delivery failures are logged at most once a second, with a count, so that a lost
   * broker does not turn into one log line per request. */
  uint64_t dr_fail_logged_at;
  uint64_t dr_fail_unlogged;
  rd_kafka_resp_err_t dr_fail_last;

  kpi_metrics *metrics;
  kpi_metric *m_requests[INGEST_EP_COUNT][600]; /* by status code, registered lazily */
  kpi_metric *m_duration[INGEST_EP_COUNT];
  kpi_metric *m_records_produced;
  kpi_metric *m_records_rejected;
  kpi_metric *m_delivery_failures;
  kpi_metric *m_queue_full;
  kpi_metric *m_queue_depth;
  kpi_metric *m_inflight;
  kpi_metric *m_ready;
  kpi_metric *m_reload_ok;
  kpi_metric *m_reload_failed;
  kpi_metric *m_batch_items;
} ingest_ctx;

/* ingest_rules.c: the answer rules, pure (no context, no I/O). */

/* Final item statuses of a batch, counted. */
typedef struct ingest_tally {
  size_t items;
  size_t accepted;   /* 202: in Kafka */
  size_t retryable;  /* 429 or 503: valid, not published */
  size_t queue_full; /* 429 */
  size_t forbidden;  /* 403: another department's measure */
} ingest_tally;

/* Counts one item whose final status is STATUS. */
void ingest_tally_add(ingest_tally *t, int status);

/* The status of a non-atomic batch answer (proto/openapi.yaml): 202 when every item is in
 * Kafka; when none is, 403 if every item was another department's measure, 429 if every
 * item met a full queue, 503 if every failure is one to retry (so that the client sees
 * Retry-After); otherwise 207. */
int ingest_batch_status(const ingest_tally *t);

/* An atomic batch of ITEMS of which BAD failed their checks, FORBIDDEN of them with 403:
 * 0 when it may be published (BAD is 0), else 403 when every item is another department's
 * measure, else 422. Nothing of a refused atomic batch is published. */
int ingest_atomic_status(size_t items, size_t bad, size_t forbidden);

/* The Retry-After header line that goes with STATUS (429: 1 s, 503: 5 s), or NULL. */
const char *ingest_retry_after(int status);

/* ingest_kafka.c */
/* Creates the producer, its waker and the probe timer. Returns 0, -2 with ERRSTR when the
 * client configuration is refused (a KPI_KAFKA_PROP_* librdkafka rejects or one naming a fixed
 * property: bad configuration, docs/architecture.md "Start and stop"), or -1 with ERRSTR. */
int ingest_kafka_start(ingest_ctx *ctx, char *errstr, size_t errstr_size);
void ingest_kafka_probe_now(ingest_ctx *ctx);
void ingest_kafka_close(ingest_ctx *ctx);
void ingest_kafka_destroy(ingest_ctx *ctx);

/* ingest_handlers.c */

/* The headers of every entry page file (the page, its script and its stylesheet): a strict
 * Content-Security-Policy that allows only this origin's script, style and fetch, no framing,
 * no MIME sniffing, no Referer. */
#define INGEST_PAGE_HEADERS                                                                   \
  "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "       \
  "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n"      \
  "X-Content-Type-Options: nosniff\r\n"                                                      \
  "Referrer-Policy: no-referrer\r\n"                                                         \
  "Cache-Control: no-cache\r\n"

void ingest_on_http_request(kpi_http_request *req, void *opaque);
/* ingest's resources, indexed by ingest_endpoint, for kpi_http_server_set_routes. */
extern const kpi_http_route ingest_http_routes[INGEST_EP_OTHER];
int ingest_metrics_init(ingest_ctx *ctx);

/* ingest_service.c */

/* Reads the KPI_INGEST_*, KPI_CATALOG, KPI_TOPIC_* and KPI_HTTP_* variables into CFG.
 * Returns 0, or -1 with ERR saying which one is wrong. */
int ingest_config_load(ingest_config *cfg, char *err, size_t errsz);

/* Initializes ctx->shutdown and starts the HTTP server on ctx->cfg's address with ingest's
 * routes. On failure logs `listen_failed`, closes the producer's, the server's and the
 * shutdown's handles, runs the loop until they are closed and returns -1. */
int ingest_http_start(ingest_ctx *ctx);

/* Watches SIGTERM/SIGINT (the drain) and SIGHUP (catalog reload) through ctx->shutdown, which
 * ingest_http_start initialized; the drain closes them. */
void ingest_signals_start(ingest_ctx *ctx);


/* Logs the delivery failures counted since the last line, at most once a second unless
 * FORCE; the probe timer and the drain call it so that the last count is not lost. */
void ingest_log_delivery_failures(ingest_ctx *ctx, int force);

/* Delivery report for one record; MSG's opaque is the record's item. */
void ingest_on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);

#endif
