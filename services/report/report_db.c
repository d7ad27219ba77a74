/* report_db.c: the report's database sessions: a small pool of kpi_pgasync connections
 * (KPI_REPORT_DB_CONNECTIONS, default 3), each page's query sent to the least busy one, and
 * the session settings every connection starts with (jit = off, see report_db_conninfo). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_buf.h"
#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_pg.h"
#include "report.h"

/* Appends VAL to B as a single-quoted conninfo value ('\' and '\'' escaped). */
static void add_quoted(kpi_buf *b, const char *val) {
  kpi_buf_addc(b, '\'');
  for (const char *p = val; *p; p++) {
    if (*p == '\\' || *p == '\'') kpi_buf_addc(b, '\\');
    kpi_buf_addc(b, *p);
  }
  kpi_buf_addc(b, '\'');
}

/* The report's own session settings, in front of the user's options so that an explicit
 * "-c jit=on" in DATABASE_URL or PGOPTIONS still wins. JIT: the table queries of a large plan
 * cost more than jit_above_cost, and compiling them took about 19 of 43 ms at 1,000 measures
 * while the query runs once per page: JIT never pays for itself here. */
#define REPORT_SESSION_OPTIONS "-c jit=off"

char *report_db_conninfo(const char *conninfo, char *err, size_t errsz) {
  /* Why the startup packet's `options` rather than "SET jit = off" after connecting:
   * kpi_pgasync reconnects on its own after any loss and queues pages as soon as it is up; a
   * setting carried by the connection string is applied by the server before the first query
   * of every session, reconnects included, with no extra round trip, no ordering against the
   * pages' queries and no failure path of its own. ALTER ROLE … SET jit = off works too but
   * depends on each deployment's DBA (docs/report.md). PQconninfoParse accepts both the
   * key=value and the URI forms; the result is rebuilt as key=value. */
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
  if (!opts) {
    /* libpq's message may quote a piece of the string, a password included: not logged. */
    snprintf(err, errsz, "DATABASE_URL: %s",
             perr ? "not a valid connection string (key=value or URI)" : "out of memory");
    PQfreemem(perr);
    return NULL;
  }
  kpi_buf b = KPI_BUF_INIT;
  const char *user_opts = NULL;
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (!o->val) continue;
    if (strcmp(o->keyword, "options") == 0) {
      user_opts = o->val;
      continue;
    }
    kpi_buf_adds(&b, o->keyword);
    kpi_buf_addc(&b, '=');
    add_quoted(&b, o->val);
    kpi_buf_addc(&b, ' ');
  }
  /* An `options` in the string replaces PGOPTIONS for libpq: keep the variable's too. */
  if (!user_opts) user_opts = getenv("PGOPTIONS");
  kpi_buf opt = KPI_BUF_INIT;
  kpi_buf_adds(&opt, REPORT_SESSION_OPTIONS);
  if (user_opts && *user_opts) {
    kpi_buf_addc(&opt, ' ');
    kpi_buf_adds(&opt, user_opts);
  }
  kpi_buf_adds(&b, "options=");
  add_quoted(&b, kpi_buf_str(&opt));
  kpi_buf_free(&opt);
  PQconninfoFree(opts);
  if (b.oom) {
    kpi_buf_free(&b);
    snprintf(err, errsz, "out of memory");
    return NULL;
  }
  char *s = strdup(kpi_buf_str(&b));
  kpi_buf_free(&b);
  if (!s) snprintf(err, errsz, "out of memory");
  return s;
}

static void on_pg_state(kpi_pgasync *pg, int up, void *arg) {
  (void)pg;
  (void)arg;
  kpi_log(up ? KPI_LOG_INFO : KPI_LOG_WARN, up ? "db_up" : "db_down",
          up ? "connected to PostgreSQL" : "PostgreSQL connection lost; reconnecting");
}

int report_db_open(report_ctx *ctx) {
  char err[512];
  int64_t n;
  if (kpi_env_int("KPI_REPORT_DB_CONNECTIONS", 3, 1, REPORT_DB_MAX, &n, err, sizeof(err))) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return -1;
  }
  char *conninfo = report_db_conninfo(kpi_pg_conninfo(), err, sizeof(err));
  if (!conninfo) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return -1;
  }
  for (int i = 0; i < (int)n; i++) {
    ctx->db[i] = kpi_pgasync_new(ctx->loop, conninfo, on_pg_state, ctx, err, sizeof(err));
    if (!ctx->db[i]) {
      kpi_log(KPI_LOG_ERROR, "out_of_memory", "%s", err);
      free(conninfo);
      report_db_close(ctx);
      return -1;
    }
    ctx->n_db = i + 1;
  }
  free(conninfo);
  return 0;
}

void report_db_close(report_ctx *ctx) {
  for (int i = 0; i < ctx->n_db; i++) {
    if (ctx->db[i]) kpi_pgasync_close(ctx->db[i], NULL, NULL);
    ctx->db[i] = NULL;
  }
  ctx->n_db = 0;
}

kpi_pgasync *report_db_pick(report_ctx *ctx) {
  kpi_pgasync *best = NULL;
  for (int i = 0; i < ctx->n_db; i++) {
    kpi_pgasync *c = ctx->db[i];
    if (!c || !kpi_pgasync_is_up(c)) continue;
    if (!best || kpi_pgasync_pending(c) < kpi_pgasync_pending(best)) best = c;
  }
  return best;
}

bool report_db_up(const report_ctx *ctx) {
  for (int i = 0; i < ctx->n_db; i++)
    if (ctx->db[i] && kpi_pgasync_is_up(ctx->db[i])) return true;
  return false;
}
