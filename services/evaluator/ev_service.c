/* ev_service.c: the evaluator's start-up (configuration in hand: catalog, database, broker,
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

/* Once drained: closes the connections, the read API and every handle (kpi_shutdown closes
 * its own after this). */
static void on_shutdown_drained(kpi_shutdown *sd) {
  evaluator *ev = sd->data;
  if (ev->life.closed) return;
  ev->life.closed = true;
  kpi_log(KPI_LOG_INFO, "stopped", "drained; closing");
  if (ev->db) kpi_pgasync_close(ev->db, NULL, NULL);
  if (ev->aux) kpi_pgasync_close(ev->aux, NULL, NULL);
  if (ev->api_db) kpi_pgasync_close(ev->api_db, NULL, NULL);
  ev->db = ev->aux = ev->api_db = NULL;
  if (ev->api.inited) kpi_http_server_close(&ev->api.http, NULL);
  ev_sched_close(ev, NULL);
}

static void on_shutdown_reload(kpi_shutdown *sd) {
  evaluator *ev = sd->data;
  kpi_log(KPI_LOG_INFO, "catalog_reload", "SIGHUP: reloading %s", ev->cfg.catalog_path);
  ev->sched.reload_due = true;
  ev_kick(ev);
}

/* The first SIGTERM/SIGINT: the transaction under way may finish (ev_kick hands over to
 * ev_finish once idle), within the drain deadline kpi_shutdown starts after this. */
static void on_shutdown_begin(kpi_shutdown *sd) {
  evaluator *ev = sd->data;
  ev->life.stopping = true;
  kpi_log(KPI_LOG_INFO, "stopping", "finishing the transaction under way");
  if (ev->api.inited) kpi_http_server_stop_accepting(&ev->api.http);
  ev_sched_stop(ev);
  ev_kick(ev);
}

static const kpi_shutdown_ops shutdown_ops = {.on_begin = on_shutdown_begin,
                                              .on_reload = on_shutdown_reload,
                                              .on_expired = ev_drain_expired,
                                              .on_drained = on_shutdown_drained};

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
    /* A catalog whose version is refused is bad configuration (docs/evaluator.md "Catalog
     * versions"): exit 2, like a file that does not parse. */
    return startup_abort(ev, prep > 0 ? KPI_EXIT_OK
                             : prep == -2 ? KPI_EXIT_CONFIG : KPI_EXIT_START);
  }
  kpi_shutdown_init(ev->loop, &ev->life.shutdown, &shutdown_ops,
                    (uint64_t)ev->cfg.drain_timeout_ms, ev);
  char err[512];
  int krc = ev_kafka_start(ev, err, sizeof(err));
  if (krc != 0) {
    if (ev->life.stopping) {
      kpi_log(KPI_LOG_INFO, "stopped", "%s", err);
      return startup_abort(ev, KPI_EXIT_OK);
    }
    kpi_log(KPI_LOG_ERROR, "kafka_setup_failed", "%s", err);
    /* A refused KPI_KAFKA_PROP_* is bad configuration: a restart cannot fix it. */
    return startup_abort(ev, krc == -2 ? KPI_EXIT_CONFIG : KPI_EXIT_START);
  }
  return -1;
}

int ev_service_start(evaluator *ev, uv_loop_t *loop, const ev_config *cfg) {
  memset(ev, 0, sizeof(*ev));
  ev->cfg = *cfg;
  ev->loop = loop;
  char err[512];
  ev->cat = kpi_catalog_load(ev->cfg.catalog_path, err, sizeof(err));
  if (!ev->cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    uv_loop_close(loop); /* nothing on it yet */
    return KPI_EXIT_CONFIG;
  }
  if (ev_sched_init(ev) != 0 || ev_metrics_init(&ev->m) != 0) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "at start");
    return KPI_EXIT_START;
  }
  ev_startup_signals();
  const char *conninfo = kpi_pg_conninfo();
  int rc = startup_blocking(ev, conninfo);
  if (rc >= 0) return rc;
  kpi_shutdown_start(&ev->life.shutdown); /* libuv's handlers replace the start-up ones */
  if (connections_open(ev, conninfo) != 0 || http_start(ev) != 0) return KPI_EXIT_START;
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
  kpi_catalog_free(ev->reloading);
  ev->reloading = NULL;
}
