/* ingest_service.c: ingest's configuration and life cycle: start-up steps, signals (SIGHUP
 * reloads the catalog) and the graceful drain on SIGTERM or a fatal producer error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "kpi_env.h"
#include "kpi_log.h"

/* After the last delivery report, how long open connections get to take their answers
 * before everything is closed (kpi_http lingers up to 2 s after a final response). */
#define DRAIN_CONN_GRACE_MS 3000

int ingest_config_load(ingest_config *cfg, char *err, size_t errsz) {
  if (kpi_env_listen("KPI_INGEST_LISTEN", "127.0.0.1:8080", cfg->listen_host,
                     sizeof(cfg->listen_host), &cfg->listen_port, err, errsz) ||
      kpi_env_path("KPI_CATALOG", "config/catalog.json", cfg->catalog_path,
                   sizeof(cfg->catalog_path), err, errsz) ||
      kpi_env_int("KPI_INGEST_MAX_BATCH", 1000, 1, 100000, &cfg->max_batch, err, errsz) ||
      kpi_env_int("KPI_INGEST_DELIVERY_TIMEOUT_MS", 10000, 100, 3600000,
                  &cfg->delivery_timeout_ms, err, errsz))
    return -1;
  kpi_topic_spec specs[KPI_TOPIC_COUNT];
  if (kpi_topics_from_env(specs, err, errsz)) return -1;
  cfg->topic = specs[KPI_TOPIC_MEASUREMENTS];
  kpi_http_config_defaults(&cfg->http);
  if (kpi_http_config_from_env(&cfg->http) != 0) {
    snprintf(err, errsz, "KPI_HTTP_* limits (see the log line above)");
    return -1;
  }
  return 0;
}

static void on_http_closed(kpi_http_server *srv) {
  (void)srv;
  kpi_log(KPI_LOG_INFO, "http_closed", "every connection closed");
}

/* Draining: wait for the delivery reports of every held request (bounded by
 * message.timeout.ms; past the deadline the producer's queues are purged, which reports the
 * rest as failed, answered 503), then give connections a moment to take their answers. */
static bool on_shutdown_is_drained(kpi_shutdown *sd) {
  ingest_ctx *ctx = sd->data;
  uint64_t now = uv_now(ctx->loop);
  if (ctx->inflight > 0) return false;
  if (!ctx->drained_at) {
    ingest_log_delivery_failures(ctx, 1);
    ctx->drained_at = now;
    kpi_log(KPI_LOG_INFO, "drained", "every request answered");
  }
  return ctx->http.stats.connections_active == 0 || now - ctx->drained_at >= DRAIN_CONN_GRACE_MS;
}

/* The deadline passed or a second signal came: the reports still awaited are purged (each
 * then arrives as failed), and the drain goes on until they have. */
static void on_shutdown_expired(kpi_shutdown *sd) {
  ingest_ctx *ctx = sd->data;
  if (ctx->inflight == 0 || ctx->purged) return;
  kpi_log(KPI_LOG_WARN, "drain_timeout", "%llu request(s) still wait for Kafka; purging",
          (unsigned long long)ctx->inflight);
  rd_kafka_purge(ctx->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  ctx->purged = true;
}

/* Every request answered: close every handle so that uv_run returns. */
static void on_shutdown_drained(kpi_shutdown *sd) {
  ingest_ctx *ctx = sd->data;
  ingest_kafka_close(ctx);
  kpi_http_server_close(&ctx->http, on_http_closed);
}

static void on_shutdown_begin(kpi_shutdown *sd) {
  ingest_ctx *ctx = sd->data;
  kpi_log(KPI_LOG_INFO, "shutdown", "stop accepting; %llu request(s) wait for Kafka",
          (unsigned long long)ctx->inflight);
  kpi_http_server_stop_accepting(&ctx->http);
  uv_timer_stop(&ctx->probe_timer);
}

/* SIGHUP. Requests copy the ids they need out of the catalog, so swapping it between callbacks
 * is safe. A broken file keeps the old catalog in force. */
static void on_shutdown_reload(kpi_shutdown *sd) {
  ingest_ctx *ctx = sd->data;
  char err[512];
  kpi_catalog *cat = kpi_catalog_load(ctx->cfg.catalog_path, err, sizeof(err));
  if (!cat) {
    kpi_metrics_inc(ctx->m_reload_failed);
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s; keeping the previous catalog", err);
    return;
  }
  ingest_auth_clear(&ctx->auth); /* its departments belong to the old catalog */
  kpi_catalog_free(ctx->catalog);
  ctx->catalog = cat;
  kpi_metrics_inc(ctx->m_reload_ok);
  kpi_log(KPI_LOG_INFO, "catalog_reloaded", "%s: version %d, %zu measures",
          ctx->cfg.catalog_path, cat->version, cat->n_measures);
}

static const kpi_shutdown_ops shutdown_ops = {.on_begin = on_shutdown_begin,
                                              .on_reload = on_shutdown_reload,
                                              .on_expired = on_shutdown_expired,
                                              .is_drained = on_shutdown_is_drained,
                                              .on_drained = on_shutdown_drained};

static void shutdown_init(ingest_ctx *ctx) {
  /* Delivery reports come within message.timeout.ms; 5 s more for the last answers. */
  kpi_shutdown_init(ctx->loop, &ctx->shutdown, &shutdown_ops,
                    (uint64_t)ctx->cfg.delivery_timeout_ms + 5000, ctx);
}

void ingest_signals_start(ingest_ctx *ctx) { kpi_shutdown_start(&ctx->shutdown); }

int ingest_http_start(ingest_ctx *ctx) {
  shutdown_init(ctx);
  ctx->http.data = ctx;
  int hrc = kpi_http_server_init(&ctx->http, ctx->loop, &ctx->cfg.http, ingest_on_http_request,
                                 ctx);
  if (hrc == 0) hrc = kpi_http_server_set_routes(&ctx->http, ingest_http_routes, INGEST_EP_OTHER);
  if (hrc == 0) hrc = kpi_http_server_start(&ctx->http, ctx->cfg.listen_host, ctx->cfg.listen_port);
  if (hrc != 0) {
    kpi_log(KPI_LOG_ERROR, "listen_failed", "%s:%d: %s", ctx->cfg.listen_host,
            ctx->cfg.listen_port, kpi_http_strerror(hrc));
    /* Close what was opened and let the loop finish the closes before returning. */
    ingest_kafka_close(ctx);
    kpi_http_server_close(&ctx->http, NULL);
    kpi_shutdown_close(&ctx->shutdown);
    uv_run(ctx->loop, UV_RUN_DEFAULT);
    return -1;
  }
  return 0;
}
