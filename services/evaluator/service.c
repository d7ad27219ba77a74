/* service.c: the evaluator's start-up (configuration in hand: catalog, database, broker,
 * connections, read API), its signals, and closing every handle once drained. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluator.h"
#include "kpi_log.h"
#include "kpi_pg.h"

static void on_uv_walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Leaves start-up early (a stop was asked for, or the database or broker set-up failed): closes
 * and frees what exists so far, and the loop, and returns CODE. */
static int startup_abort(evaluator *ev, int code) {
  ev_kafka_free(ev);
  uv_walk(ev->loop, on_uv_walk_close, NULL);
  uv_run(ev->loop, UV_RUN_DEFAULT);
  uv_loop_close(ev->loop);
  ev_service_free(ev);
  return code;
}

/* Once drained: closes the connections, the read API and every handle. */
static void close_all(evaluator *ev) {
  if (ev->life.closed) return;
  ev->life.closed = true;
  kpi_log(KPI_LOG_INFO, "stopped", "drained; closing");
  if (ev->db) kpi_pgasync_close(ev->db, NULL, NULL);
  if (ev->aux) kpi_pgasync_close(ev->aux, NULL, NULL);
  if (ev->api_db) kpi_pgasync_close(ev->api_db, NULL, NULL);
  ev->db = ev->aux = ev->api_db = NULL;
  if (ev->api.inited) kpi_http_server_close(&ev->api.http, NULL);
  ev_sched_close(ev, NULL);
  ev_drain_close(ev, NULL);
  uv_close((uv_handle_t *)&ev->life.sig_term, NULL);
  uv_close((uv_handle_t *)&ev->life.sig_int, NULL);
  uv_close((uv_handle_t *)&ev->life.sig_hup, NULL);
}

static void on_uv_signal(uv_signal_t *h, int signum) {
  evaluator *ev = h->data;
  if (signum == SIGHUP) {
    kpi_log(KPI_LOG_INFO, "catalog_reload", "SIGHUP: reloading %s", ev->cfg.catalog_path);
    ev->sched.reload_due = true;
    ev_kick(ev);
    return;
  }
  if (ev->life.stopping) return;
  ev->life.stopping = true;
  kpi_log(KPI_LOG_INFO, "stopping", "signal %d: finishing the transaction under way", signum);
  if (ev->api.inited) kpi_http_server_stop_accepting(&ev->api.http);
  ev_sched_stop(ev);
  ev_drain_begin(ev);
  ev_kick(ev);
}

static void signals_init(evaluator *ev) {
  uv_signal_init(ev->loop, &ev->life.sig_term);
  uv_signal_init(ev->loop, &ev->life.sig_int);
  uv_signal_init(ev->loop, &ev->life.sig_hup);
  ev->life.sig_term.data = ev->life.sig_int.data = ev->life.sig_hup.data = ev;
}

/* From here on libuv owns the signals (its handlers replace the start-up ones). */
static void signals_start(evaluator *ev) {
  uv_signal_start(&ev->life.sig_term, on_uv_signal, SIGTERM);
  uv_signal_start(&ev->life.sig_int, on_uv_signal, SIGINT);
  uv_signal_start(&ev->life.sig_hup, on_uv_signal, SIGHUP);
}

static int connections_open(evaluator *ev, const char *conninfo) {
  char err[512];
  ev->db = kpi_pgasync_new(ev->loop, conninfo, ev_sched_on_pg_state, ev, err, sizeof(err));
  ev->aux = kpi_pgasync_new(ev->loop, conninfo, ev_sched_on_pg_state, ev, err, sizeof(err));
  ev->api_db = kpi_pgasync_new(ev->loop, conninfo, ev_sched_on_pg_state, ev, err, sizeof(err));
  if (!ev->db || !ev->aux || !ev->api_db) {
    kpi_log(KPI_LOG_ERROR, "db_setup_failed", "%s", err);
    return -1;
  }
  return 0;
}

static int http_start(evaluator *ev) {
  if (kpi_http_server_init(&ev->api.http, ev->loop, &ev->cfg.http, ev_on_http_request, ev) != 0) {
    kpi_log(KPI_LOG_ERROR, "http_setup_failed", "out of memory");
    return -1;
  }
  ev->api.http.data = ev;
  ev->api.inited = true;
  kpi_http_server_set_routes(&ev->api.http, ev_http_routes, EV_HTTP_N_ROUTES);
  int rc = kpi_http_server_start(&ev->api.http, ev->cfg.listen_host, ev->cfg.listen_port);
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "http_listen_failed", "%s:%d: %s", ev->cfg.listen_host,
            ev->cfg.listen_port, kpi_http_strerror(rc));
    return -1;
  }
  return 0;
}

static void log_started(const evaluator *ev) {
  char date[16] = "today";
  if (ev->cfg.fixed_date) kpi_day_format(ev->cfg.eval_date, date, sizeof(date));
  kpi_log(KPI_LOG_INFO, "started",
          "catalog %s (%zu measures), group %s, topic %s, listening on %s:%d, evaluation date %s",
          ev->cfg.catalog_path, ev->cat->n_measures, ev->cfg.group,
          ev->cfg.topics[KPI_TOPIC_MEASUREMENTS].name, ev->cfg.listen_host,
          kpi_http_server_port(&ev->api.http), date);
}

/* Blocking steps before the loop runs: the database (migrations, catalog mirror), then the
 * broker. Returns -1 to go on, else the exit status (start-up closed). */
static int startup_blocking(evaluator *ev, const char *conninfo) {
  int prep = ev_db_prepare(ev, conninfo);
  if (prep != 0) {
    if (prep > 0) kpi_log(KPI_LOG_INFO, "stopped", "stop requested while waiting for the database");
    return startup_abort(ev, prep > 0 ? 0 : 1);
  }
  ev_drain_init(ev);
  signals_init(ev);
  char err[512];
  if (ev_kafka_start(ev, err, sizeof(err)) != 0) {
    if (ev->life.stopping) {
      kpi_log(KPI_LOG_INFO, "stopped", "%s", err);
      return startup_abort(ev, 0);
    }
    kpi_log(KPI_LOG_ERROR, "kafka_setup_failed", "%s", err);
    return startup_abort(ev, 1);
  }
  return -1;
}

int ev_service_start(evaluator *ev, uv_loop_t *loop, const ev_config *cfg) {
  memset(ev, 0, sizeof(*ev));
  ev->cfg = *cfg;
  ev->loop = loop;
  ev->life.on_drained = close_all;
  char err[512];
  ev->cat = kpi_catalog_load(ev->cfg.catalog_path, err, sizeof(err));
  if (!ev->cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    uv_loop_close(loop); /* nothing on it yet */
    return 2;
  }
  if (ev_sched_init(ev) != 0 || ev_metrics_init(&ev->m) != 0) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "at start");
    return 1;
  }
  ev_startup_signals();
  const char *conninfo = kpi_pg_conninfo();
  int rc = startup_blocking(ev, conninfo);
  if (rc >= 0) return rc;
  signals_start(ev);
  if (connections_open(ev, conninfo) != 0 || http_start(ev) != 0) return 1;
  /* Evaluate every measure once at start, then every KPI_SWEEP_INTERVAL_MS. */
  ev_sched_start(ev);
  log_started(ev);
  if (ev_startup_stop_requested()) uv_kill(getpid(), SIGTERM); /* after the waits, before now */
  return 0;
}

void ev_service_free(evaluator *ev) {
  ev_kafka_free(ev);
  ev_sched_free(ev);
  ev_outbox_free(ev);
  ev_metrics_free(&ev->m);
  kpi_catalog_free(ev->cat);
  ev->cat = NULL;
}
