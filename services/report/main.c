/* main.c: kpi-report: the plan's KPI table, one page per measure and CSV, read from
 * PostgreSQL. Only the process's start and end live here; the rest is the kpi_report library. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "kpi_log.h"
#include "report.h"

int main(void) {
  kpi_log_init("report");
  signal(SIGPIPE, SIG_IGN);
  report_ctx *ctx = calloc(1, sizeof(*ctx));
  uv_loop_t *loop = malloc(sizeof(*loop));
  if (!ctx || !loop || uv_loop_init(loop) != 0) {
    fprintf(stderr, "kpi-report: out of memory\n");
    return KPI_EXIT_START;
  }
  ctx->loop = loop;
  char err[512];
  int rc = 0;
  if (report_config_load(&ctx->cfg, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    rc = KPI_EXIT_CONFIG;
  } else if (report_catalog_load(ctx, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    rc = KPI_EXIT_CONFIG;
  } else if (report_metrics_init(ctx) != 0) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "metrics registry");
    rc = KPI_EXIT_START;
  } else if (report_http_start(ctx) != 0) {
    rc = KPI_EXIT_START;
  } else {
    report_signals_start(ctx);
    kpi_log(KPI_LOG_INFO, "listening", "http://%s:%d; catalog %s (%zu measures)",
            ctx->cfg.listen_host, kpi_http_server_port(&ctx->http), ctx->cfg.catalog_path,
            ctx->catalog->n_measures);
    uv_run(loop, UV_RUN_DEFAULT);
    rc = ctx->shutdown.exit_code;
    kpi_log(KPI_LOG_INFO, "exit", "code %d", rc);
  }
  if (uv_loop_close(loop) != 0) kpi_log(KPI_LOG_WARN, "loop_close", "handles left open");
  report_catalog_free(ctx);
  kpi_metrics_free(ctx->metrics);
  free(loop);
  free(ctx);
  return rc;
}
