/* report_service.c: the report's configuration and life cycle: catalog (and its plan order),
 * HTTP listener, signals (SIGHUP reloads the catalog) and the drain on SIGTERM. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_pg.h"
#include "report.h"

#define DRAIN_TICK_MS 50
/* Pages wait for one query each; past this, the drain gives up on them. */
#define DRAIN_MAX_MS 10000

int report_config_load(report_config *cfg, char *err, size_t errsz) {
  const char *listen = kpi_env_str("KPI_REPORT_LISTEN", "127.0.0.1:8083");
  if (kpi_env_split_hostport(listen, cfg->listen_host, sizeof(cfg->listen_host),
                             &cfg->listen_port) != 0) {
    snprintf(err, errsz, "KPI_REPORT_LISTEN: expected host:port, got \"%s\"", listen);
    return -1;
  }
  const char *cat = kpi_env_str("KPI_CATALOG", "config/catalog.json");
  if (strlen(cat) >= sizeof(cfg->catalog_path)) {
    snprintf(err, errsz, "KPI_CATALOG: path too long");
    return -1;
  }
  snprintf(cfg->catalog_path, sizeof(cfg->catalog_path), "%s", cat);
  if (kpi_env_int("KPI_REPORT_MAX_PENDING", 64, 1, 10000, &cfg->max_pending, err, errsz) ||
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

static void close_all(report_ctx *ctx) {
  uv_close((uv_handle_t *)&ctx->sig_term, NULL);
  uv_close((uv_handle_t *)&ctx->sig_int, NULL);
  uv_close((uv_handle_t *)&ctx->sig_hup, NULL);
  report_db_close(ctx);
  kpi_http_server_close(&ctx->http, on_http_closed);
}

/* Draining: pages already asked for are answered (each waits for one query, bounded by
 * DRAIN_MAX_MS), then every handle is closed so that uv_run returns. */
static void on_uv_drain_tick(uv_timer_t *t) {
  report_ctx *ctx = t->data;
  if (ctx->pending > 0 && uv_now(ctx->loop) - ctx->drain_started < DRAIN_MAX_MS) return;
  uv_close((uv_handle_t *)t, NULL);
  kpi_log(KPI_LOG_INFO, "drained", "%lld page(s) still waiting", (long long)ctx->pending);
  close_all(ctx);
}

static void begin_shutdown(report_ctx *ctx, int code) {
  if (ctx->stopping) return;
  ctx->stopping = 1;
  ctx->exit_code = code;
  kpi_log(KPI_LOG_INFO, "shutdown", "stop accepting; %lld page(s) in progress",
          (long long)ctx->pending);
  kpi_http_server_stop_accepting(&ctx->http);
  ctx->drain_started = uv_now(ctx->loop);
  uv_timer_start(&ctx->drain_timer, on_uv_drain_tick, 0, DRAIN_TICK_MS);
}

static void on_uv_signal(uv_signal_t *s, int signum) {
  report_ctx *ctx = s->data;
  if (signum != SIGHUP) {
    begin_shutdown(ctx, 0);
    return;
  }
  /* Pages are rendered within one callback, so swapping the catalog between callbacks is
   * safe; a query in flight carries the measure id it asked for, never a pointer. A broken
   * file keeps the old catalog in force. */
  char err[512];
  if (report_catalog_load(ctx, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s; keeping the previous catalog", err);
    return;
  }
  kpi_log(KPI_LOG_INFO, "catalog_reloaded", "%s: version %d, %zu measures",
          ctx->cfg.catalog_path, ctx->catalog->version, ctx->catalog->n_measures);
}

int report_http_start(report_ctx *ctx) {
  if (report_db_open(ctx) != 0) return -1;
  ctx->http.data = ctx;
  int hrc = kpi_http_server_init(&ctx->http, ctx->loop, &ctx->cfg.http, report_on_http_request,
                                 ctx);
  if (hrc == 0) hrc = kpi_http_server_set_routes(&ctx->http, report_http_routes, RP_EP_COUNT);
  if (hrc == 0) hrc = kpi_http_server_start(&ctx->http, ctx->cfg.listen_host, ctx->cfg.listen_port);
  if (hrc != 0) {
    kpi_log(KPI_LOG_ERROR, "listen_failed", "%s:%d: %s", ctx->cfg.listen_host,
            ctx->cfg.listen_port, kpi_http_strerror(hrc));
    report_db_close(ctx);
    kpi_http_server_close(&ctx->http, NULL);
    uv_run(ctx->loop, UV_RUN_DEFAULT);
    return -1;
  }
  return 0;
}

void report_signals_start(report_ctx *ctx) {
  uv_timer_init(ctx->loop, &ctx->drain_timer);
  ctx->drain_timer.data = ctx;
  uv_signal_t *sigs[] = {&ctx->sig_term, &ctx->sig_int, &ctx->sig_hup};
  int signums[] = {SIGTERM, SIGINT, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(ctx->loop, sigs[i]);
    sigs[i]->data = ctx;
    uv_signal_start(sigs[i], on_uv_signal, signums[i]);
  }
}
