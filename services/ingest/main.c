/* services/ingest/main.c: kpi-ingest: departments POST measurements, acknowledged once in Kafka.
 * Only the process's start and end live here; everything else is the kpi_ingest library. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "ingest.h"
#include "ingest_arena.h"
#include "kpi_log.h"

/* Configuration, catalog, metrics and producer, in that order. Returns 0, or the exit code
 * (KPI_EXIT_CONFIG: the environment or the catalog is invalid, KPI_EXIT_START: anything else)
 * after logging why. */
static int start_services(ingest_ctx *ctx) {
  char err[512];
  if (ingest_config_load(&ctx->cfg, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return KPI_EXIT_CONFIG;
  }
  ctx->catalog = kpi_catalog_load(ctx->cfg.catalog_path, err, sizeof(err));
  if (!ctx->catalog) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    return KPI_EXIT_CONFIG;
  }
  if (ingest_metrics_init(ctx) != 0) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "metrics registry");
    return KPI_EXIT_START;
  }
  int rc = ingest_kafka_start(ctx, err, sizeof(err));
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return rc == -2 ? KPI_EXIT_CONFIG : KPI_EXIT_START;
  }
  return 0;
}

static void log_listening(const ingest_ctx *ctx) {
  kpi_log(KPI_LOG_INFO, "listening",
          "http://%s:%d; topic %s; catalog %s (%zu measures); max batch %lld; delivery "
          "timeout %lld ms",
          ctx->cfg.listen_host, kpi_http_server_port(&ctx->http), ctx->cfg.topic.name,
          ctx->cfg.catalog_path, ctx->catalog->n_measures, (long long)ctx->cfg.max_batch,
          (long long)ctx->cfg.delivery_timeout_ms);
}

/* Runs once uv_run returned or start-up failed: the loop must hold no handle by now. */
static void free_services(ingest_ctx *ctx) {
  ingest_kafka_destroy(ctx);
  if (uv_loop_close(ctx->loop) != 0) kpi_log(KPI_LOG_WARN, "loop_close", "handles left open");
  ingest_auth_clear(&ctx->auth);
  kpi_catalog_free(ctx->catalog);
  kpi_metrics_free(ctx->metrics);
  free(ctx->loop);
  free(ctx);
}

int main(void) {
  kpi_log_init("ingest");
  ingest_arena_install();
  signal(SIGPIPE, SIG_IGN);
  ingest_ctx *ctx = calloc(1, sizeof(*ctx));
  uv_loop_t *loop = malloc(sizeof(*loop));
  if (!ctx || !loop || uv_loop_init(loop) != 0) {
    fprintf(stderr, "kpi-ingest: out of memory\n");
    return KPI_EXIT_START;
  }
  ctx->loop = loop;
  int rc = start_services(ctx);
  if (rc == 0 && ingest_http_start(ctx) != 0) rc = KPI_EXIT_START;
  else if (rc == 0) {
    ingest_signals_start(ctx);
    log_listening(ctx);
    uv_run(loop, UV_RUN_DEFAULT);
    rc = ctx->shutdown.exit_code;
    kpi_log(KPI_LOG_INFO, "exit", "code %d", rc);
  }
  free_services(ctx);
  return rc;
}
