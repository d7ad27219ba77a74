/* report.h: the report service's context, shared by its main, life cycle and page handlers. */
#ifndef REPORT_H
#define REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kpi_catalog.h"
#include "kpi_http.h"
#include "kpi_metrics.h"
#include "kpi_pgasync.h"
#include "kpi_shutdown.h"
#include "report_format.h"

typedef struct report_config {
  char listen_host[64];
  int listen_port;
  char catalog_path[1024];
  int64_t max_pending; /* page queries queued or running before 503 */
  double lag_ratio;    /* KPI_LAG_RATIO, as the evaluator reads it */
  kpi_http_config http;
} report_config;

/* Pages, for metric labels and the route table (same order). */
typedef enum {
  REPORT_EP_INDEX = 0,
  REPORT_EP_MEASURE,
  REPORT_EP_CSV,
  REPORT_EP_STATIC,
  REPORT_EP_HEALTHZ,
  REPORT_EP_READYZ,
  REPORT_EP_METRICS,
  REPORT_EP_COUNT
} report_endpoint;

/* At most this many database connections (KPI_REPORT_DB_CONNECTIONS). */
#define REPORT_DB_MAX 16

extern const kpi_http_route report_http_routes[REPORT_EP_COUNT];

/* The one context of the process, reached from callbacks through handle->data and the
 * request's user slot. Loop thread only. */
typedef struct report_ctx {
  uv_loop_t *loop;
  report_config cfg;
  kpi_catalog *catalog;
  /* Measure ids in the catalog file's order, which follows the plan (基本目標 → 事業 →
   * 施策); kpi_catalog keeps its measures sorted by id for lookups. Owned. */
  const kpi_measure **order;
  size_t n_order;
  unsigned catalog_gen; /* bumped by every load: keys the latest table's cache */

  kpi_http_server http;
  /* The pool (report_db.c): pages go to the least busy connection that is up. */
  kpi_pgasync *db[REPORT_DB_MAX];
  int n_db;
  kpi_shutdown shutdown; /* signals, drain deadline, exit code (report_service.c) */
  int64_t pending;

  kpi_metrics *metrics;
  kpi_metric *m_duration[REPORT_EP_COUNT];
  kpi_metric *m_db_errors;
  kpi_metric *m_rejected;
} report_ctx;

/* report_service.c */
int report_config_load(report_config *cfg, char *err, size_t errsz);
/* Loads the catalog at PATH and its plan order. Returns 0, or -1 with ERR filled (CTX
 * unchanged). */
int report_catalog_load(report_ctx *ctx, char *err, size_t errsz);
void report_catalog_free(report_ctx *ctx);
/* Initializes ctx->shutdown (SIGTERM/SIGINT drain, SIGHUP catalog reload), opens the database
 * connection and starts the HTTP server. On failure logs why, closes what it opened, runs the
 * loop until the closes are done and returns -1. report_signals_start then watches the
 * signals. */
int report_http_start(report_ctx *ctx);
void report_signals_start(report_ctx *ctx);

/* report_db.c */
/* Opens KPI_REPORT_DB_CONNECTIONS connections to DATABASE_URL (report_db_conninfo). Returns 0,
 * or -1 after logging why (bad setting, out of memory). */
int report_db_open(report_ctx *ctx);
/* Closes every connection; their queued pages get their callbacks with a NULL result. */
void report_db_close(report_ctx *ctx);
/* The connection that is up with the fewest queries queued or running, or NULL when none is
 * up. */
kpi_pgasync *report_db_pick(report_ctx *ctx);
bool report_db_up(const report_ctx *ctx);
/* CONNINFO (key=value or URI) rebuilt as key=value with the report's session options (jit =
 * off) in front of its own `options` or PGOPTIONS. Malloc'd; NULL with ERR filled when
 * CONNINFO does not parse or out of memory. */
char *report_db_conninfo(const char *conninfo, char *err, size_t errsz);

/* report_pages.c */
int report_metrics_init(report_ctx *ctx);
void report_on_http_request(kpi_http_request *req, void *opaque);

/* Query helpers (report_pages.c), pure, for tests. Copies the value of parameter NAME of
 * QUERY (text after '?'), percent-decoded, into OUT. Returns its length, -1 when absent,
 * -2 when malformed or longer than SIZE - 1. */
int report_query_param(const char *query, const char *name, char *out, size_t size);

#endif
