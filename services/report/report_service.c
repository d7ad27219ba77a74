/* report_service.c: the report's configuration and life cycle: catalog (and its plan order),
 * HTTP listener, signals (SIGHUP reloads the catalog) and the drain on SIGTERM. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_pg.h"
#include "report.h"

/* Pages wait for one query each; past this, the drain gives up on them. */
#define DRAIN_MAX_MS 10000

int report_config_load(report_config *cfg, char *err, size_t errsz) {
  if (kpi_env_listen("KPI_REPORT_LISTEN", "127.0.0.1:8083", cfg->listen_host,
                     sizeof(cfg->listen_host), &cfg->listen_port, err, errsz) ||
      kpi_env_path("KPI_CATALOG", "config/catalog.json", cfg->catalog_path,
                   sizeof(cfg->catalog_path), err, errsz) ||
      kpi_env_int("KPI_REPORT_MAX_PENDING", 64, 1, 10000, &cfg->max_pending, err, errsz) ||
      kpi_env_double("KPI_LAG_RATIO", KPI_LAG_RATIO_DEFAULT, 0.01, 1, &cfg->lag_ratio, err,
                     errsz))
    return -1;
  kpi_http_config_defaults(&cfg->http);
  cfg->http.max_body_bytes = KPI_HTTP_SMALL_BODY;
  if (kpi_http_config_from_env(&cfg->http) != 0) {
    snprintf(err, errsz, "KPI_HTTP_* limits (see the log line above)");
    return -1;
  }
  return 0;
}

/* The measures in the order the catalog file lists them (the plan's order). kpi_catalog has
 * validated the file already, so a measure missing here is only appended at the end. */
static const kpi_measure **plan_order(const kpi_catalog *cat, const char *path, size_t *n_out) {
  const kpi_measure **order = calloc(cat->n_measures ? cat->n_measures : 1, sizeof(*order));
  if (!order) return NULL;
  size_t n = 0;
  FILE *f = fopen(path, "rb");
  char *text = NULL;
  long len = -1;
  if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (text = malloc((size_t)len + 1)) && fread(text, 1, (size_t)len, f) == (size_t)len) {
    cJSON *root = cJSON_ParseWithLength(text, (size_t)len);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "measures"), *it;
    cJSON_ArrayForEach(it, ms) {
      const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "id"));
      const kpi_measure *m = id ? kpi_catalog_measure(cat, id) : NULL;
      bool dup = false;
      for (size_t i = 0; m && i < n; i++) dup = dup || order[i] == m;
      if (m && !dup && n < cat->n_measures) order[n++] = m;
    }
    cJSON_Delete(root);
  }
  if (f) fclose(f);
  free(text);
  for (size_t i = 0; i < cat->n_measures; i++) {
    bool seen = false;
    for (size_t j = 0; j < n && !seen; j++) seen = order[j] == &cat->measures[i];
    if (!seen) order[n++] = &cat->measures[i];
  }
  *n_out = n;
  return order;
}

int report_catalog_load(report_ctx *ctx, char *err, size_t errsz) {
  kpi_catalog *cat = kpi_catalog_load(ctx->cfg.catalog_path, err, errsz);
  if (!cat) return -1;
  size_t n = 0;
  const kpi_measure **order = plan_order(cat, ctx->cfg.catalog_path, &n);
  if (!order) {
    kpi_catalog_free(cat);
    snprintf(err, errsz, "out of memory");
    return -1;
  }
  report_catalog_free(ctx);
  ctx->catalog = cat;
  ctx->order = order;
  ctx->n_order = n;
  ctx->catalog_gen++;
  return 0;
}

void report_catalog_free(report_ctx *ctx) {
  free((void *)ctx->order);
  kpi_catalog_free(ctx->catalog);
  ctx->order = NULL;
  ctx->catalog = NULL;
  ctx->n_order = 0;
}

static void on_http_closed(kpi_http_server *srv) {
  (void)srv;
  kpi_log(KPI_LOG_INFO, "http_closed", "every connection closed");
}

/* Pages already asked for are answered (each waits for one query), then every handle is
 * closed so that uv_run returns. */
static bool on_shutdown_is_drained(kpi_shutdown *sd) {
  const report_ctx *ctx = sd->data;
  return ctx->pending == 0;
}

static void on_shutdown_drained(kpi_shutdown *sd) {
  report_ctx *ctx = sd->data;
  kpi_log(KPI_LOG_INFO, "drained", "%lld page(s) still waiting", (long long)ctx->pending);
  report_db_close(ctx);
  kpi_http_server_close(&ctx->http, on_http_closed);
}

static void on_shutdown_begin(kpi_shutdown *sd) {
  report_ctx *ctx = sd->data;
  kpi_log(KPI_LOG_INFO, "shutdown", "stop accepting; %lld page(s) in progress",
          (long long)ctx->pending);
  kpi_http_server_stop_accepting(&ctx->http);
}

/* SIGHUP. Pages are rendered within one callback, so swapping the catalog between callbacks is
 * safe; a query in flight carries the measure id it asked for, never a pointer. A broken file
 * keeps the old catalog in force. */
static void on_shutdown_reload(kpi_shutdown *sd) {
  report_ctx *ctx = sd->data;
  char err[512];
  if (report_catalog_load(ctx, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s; keeping the previous catalog", err);
    return;
  }
  kpi_log(KPI_LOG_INFO, "catalog_reloaded", "%s: version %d, %zu measures",
          ctx->cfg.catalog_path, ctx->catalog->version, ctx->catalog->n_measures);
}

/* No on_expired: past DRAIN_MAX_MS (or at a second signal) the pages still waiting are given
 * up and everything closes (kpi_shutdown_drained). */
static const kpi_shutdown_ops shutdown_ops = {.on_begin = on_shutdown_begin,
                                              .on_reload = on_shutdown_reload,
                                              .is_drained = on_shutdown_is_drained,
                                              .on_drained = on_shutdown_drained};

static void shutdown_init(report_ctx *ctx) {
  kpi_shutdown_init(ctx->loop, &ctx->shutdown, &shutdown_ops, DRAIN_MAX_MS, ctx);
}

void report_signals_start(report_ctx *ctx) { kpi_shutdown_start(&ctx->shutdown); }

int report_http_start(report_ctx *ctx) {
  shutdown_init(ctx);
  if (report_db_open(ctx) != 0) {
    kpi_shutdown_close(&ctx->shutdown);
    uv_run(ctx->loop, UV_RUN_DEFAULT);
    return -1;
  }
  ctx->http.data = ctx;
  int hrc = kpi_http_server_init(&ctx->http, ctx->loop, &ctx->cfg.http, report_on_http_request,
                                 ctx);
  if (hrc == 0) hrc = kpi_http_server_set_routes(&ctx->http, report_http_routes, REPORT_EP_COUNT);
  if (hrc == 0) hrc = kpi_http_server_start(&ctx->http, ctx->cfg.listen_host, ctx->cfg.listen_port);
  if (hrc != 0) {
    kpi_log(KPI_LOG_ERROR, "listen_failed", "%s:%d: %s", ctx->cfg.listen_host,
            ctx->cfg.listen_port, kpi_http_strerror(hrc));
    report_db_close(ctx);
    kpi_http_server_close(&ctx->http, NULL);
    kpi_shutdown_close(&ctx->shutdown);
    uv_run(ctx->loop, UV_RUN_DEFAULT);
    return -1;
  }
  return 0;
}
