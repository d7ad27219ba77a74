/* ingest.h: the ingest service's context, shared by its main, Kafka glue and HTTP handlers. */
#ifndef INGEST_H
#define INGEST_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

#include "kpi_catalog.h"
#include "kpi_http.h"
#include "kpi_kafka.h"
#include "kpi_metrics.h"

/* Endpoints, for metric labels. */
typedef enum {
  INGEST_EP_SINGLE = 0,
  INGEST_EP_BATCH,
  INGEST_EP_HEALTHZ,
  INGEST_EP_READYZ,
  INGEST_EP_METRICS,
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

  kpi_http_server http;
  kpi_kafka_waker waker;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t probe_timer;
  uv_timer_t drain_timer;
  uv_work_t probe_work;

  rd_kafka_t *rk;
  rd_kafka_topic_t *rkt;

  /* Broker state, as last seen by the probe: topics_ok once the topic is known to exist,
   * ready while its metadata answers. Requests are refused with 503 until topics_ok. */
  int topics_ok;
  int ready;
  int fatal; /* the idempotent producer hit a fatal error: refuse, drain, exit */
  int probe_running;
  int probe_need_topics; /* input of the worker */
  int probe_result;      /* outputs of the worker */
  int probe_topics_done;
  char probe_err[256];
  char broker_err[256]; /* loop-side copy of probe_err, for /readyz */

  uint64_t inflight; /* requests held by handlers (waiting for delivery reports) */
  int stopping;
  int purged;
  int exit_code;
  uint64_t drain_deadline;
  uint64_t drained_at;

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

/* ingest_kafka.c */
int ingest_kafka_start(ingest_ctx *ctx, char *errstr, size_t errstr_size);
void ingest_kafka_probe_now(ingest_ctx *ctx);
void ingest_kafka_close(ingest_ctx *ctx);
void ingest_kafka_destroy(ingest_ctx *ctx);

/* ingest_handlers.c */
void ingest_on_http_request(kpi_http_request *req, void *opaque);
/* ingest's resources, indexed by ingest_endpoint, for kpi_http_server_set_routes. */
extern const kpi_http_route ingest_http_routes[INGEST_EP_OTHER];
int ingest_metrics_init(ingest_ctx *ctx);

/* main.c: graceful stop (SIGTERM, or a fatal producer error): stop accepting, answer every
 * request once its delivery report came, close everything, exit with EXIT_CODE. */
void ingest_begin_shutdown(ingest_ctx *ctx, int exit_code);

/* Logs the delivery failures counted since the last line, at most once a second unless
 * FORCE; the probe timer and the drain call it so that the last count is not lost. */
void ingest_log_delivery_failures(ingest_ctx *ctx, int force);

/* Delivery report for one record; MSG's opaque is the record's item. */
void ingest_on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);

#endif
