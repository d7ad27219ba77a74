/* main.c: kpi-evaluator entry point: configuration, start-up, the libuv loop, signals and the
 * draining shutdown. See docs/evaluator.md for the variables and the guarantees. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evaluator.h"
#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_pg.h"

static void close_all(evaluator *ev);

/* Until the loop runs, libuv cannot deliver signals. A stop asked for while start-up waits for
 * the database or the broker is remembered here: the waits end at once, and a stop that arrives
 * after them is handed on to the loop just before it starts. */
static volatile sig_atomic_t startup_stop;

static void on_startup_signal(int signum) {
  if (signum != SIGHUP) startup_stop = 1; /* the catalog was just loaded: nothing to reload */
}

static void on_uv_walk_close(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Leaves start-up early (a stop was requested while waiting): closes what exists so far. */
static int startup_abort(evaluator *ev, uv_loop_t *loop, int code) {
  if (ev->producer) rd_kafka_destroy(ev->producer);
  ev->producer = NULL;
  uv_walk(loop, on_uv_walk_close, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  ev_txn_free(ev);
  kpi_metrics_free(ev->metrics);
  kpi_catalog_free(ev->cat);
  return code;
}

bool ev_startup_wait(unsigned ms) {
  for (unsigned waited = 0; waited < ms && !startup_stop; waited += 50) uv_sleep(50);
  return startup_stop != 0;
}

static void on_uv_closed(uv_handle_t *h) {
  evaluator *ev = h->data;
  ev->open_handles--;
}

static void on_http_closed(kpi_http_server *srv) {
  evaluator *ev = srv->data;
  ev->open_handles--;
}

static void on_pg_closed(void *arg) {
  evaluator *ev = arg;
  ev->open_handles--;
}

static void close_all(evaluator *ev) {
  if (ev->closed) return;
  ev->closed = true;
  kpi_log(KPI_LOG_INFO, "stopped", "drained; closing");
  if (ev->db) kpi_pgasync_close(ev->db, on_pg_closed, ev);
  if (ev->aux) kpi_pgasync_close(ev->aux, on_pg_closed, ev);
  if (ev->api) kpi_pgasync_close(ev->api, on_pg_closed, ev);
  ev->db = ev->aux = ev->api = NULL;
  if (ev->http_inited) kpi_http_server_close(&ev->http, on_http_closed);
  uv_close((uv_handle_t *)&ev->retry_timer, on_uv_closed);
  uv_close((uv_handle_t *)&ev->sweep_timer, on_uv_closed);
  uv_close((uv_handle_t *)&ev->sig_term, on_uv_closed);
  uv_close((uv_handle_t *)&ev->sig_int, on_uv_closed);
  uv_close((uv_handle_t *)&ev->sig_hup, on_uv_closed);
}

static void on_last_mark(evaluator *ev) {
  if (!ev->mark_busy) close_all(ev);
}

static void on_drain_timeout(uv_timer_t *h);

/* Runs once the in-flight transaction is over (or the drain timeout passed): leaves the group,
 * flushes the producer, records the last deliveries, closes. */
void ev_finish(evaluator *ev) {
  if (ev->finishing) return;
  ev->finishing = true;
  uv_timer_stop(&ev->retry_timer);
  uv_timer_stop(&ev->sweep_timer);
  ev_batch_clear(ev->pending); /* never committed: the next owner reads it again */
  ev_kafka_stop(ev);
  ev->on_marked = on_last_mark;
  ev_outbox_mark_flush(ev);
  if (!ev->mark_busy) close_all(ev);
  else uv_timer_start(&ev->sweep_timer, on_drain_timeout, (uint64_t)ev->drain_timeout_ms, 0);
}

static void on_drain_timeout(uv_timer_t *h) {
  evaluator *ev = h->data;
  if (ev->finishing) {
    /* Unmarked alerts are published again at the next start, with the same alert_id. */
    kpi_log(KPI_LOG_WARN, "drain_timeout", "delivered alerts not marked as sent in %lld ms",
            (long long)ev->drain_timeout_ms);
    close_all(ev);
    return;
  }
  kpi_log(KPI_LOG_WARN, "drain_timeout", "the last transaction did not finish in %lld ms",
          (long long)ev->drain_timeout_ms);
  ev->txn_busy = false;
  ev_finish(ev);
}

static void on_uv_signal(uv_signal_t *h, int signum) {
  evaluator *ev = h->data;
  if (signum == SIGHUP) {
    kpi_log(KPI_LOG_INFO, "catalog_reload", "SIGHUP: reloading %s", ev->catalog_path);
    ev->reload_due = true;
    ev_kick(ev);
    return;
  }
  if (ev->stopping) return;
  ev->stopping = true;
  kpi_log(KPI_LOG_INFO, "stopping", "signal %d: finishing the transaction under way", signum);
  if (ev->http_inited) kpi_http_server_stop_accepting(&ev->http);
  uv_timer_stop(&ev->sweep_timer);
  uv_timer_start(&ev->sweep_timer, on_drain_timeout, (uint64_t)ev->drain_timeout_ms, 0);
  ev_kick(ev);
}

static void on_sweep_timer(uv_timer_t *h) {
  evaluator *ev = h->data;
  ev->sweep_due = true;
  if (ev->rescan_due) ev_outbox_rescan(ev);
  ev_offsets_fetch(ev);
  ev_outbox_mark_flush(ev);
  ev_outbox_purge(ev);
  ev_kick(ev);
}

static void on_pg_state(kpi_pgasync *pg, int up, void *arg) {
  evaluator *ev = arg;
  const char *which = pg == ev->db ? "db" : pg == ev->aux ? "aux" : "api";
  kpi_log(up ? KPI_LOG_INFO : KPI_LOG_WARN, up ? "db_up" : "db_down", "%s connection %s", which,
          up ? "established" : "lost; retrying with backoff");
  if (!up || ev->closed || pg == ev->api) return;
  if (pg == ev->db) {
    /* A retry timer armed while the database was away would only delay us now. */
    uv_timer_stop(&ev->retry_timer);
    if (ev->rescan_due && !ev->stopping) ev_outbox_rescan(ev);
    ev_kick(ev);
  } else if (!ev->stopping) {
    ev_outbox_rescan(ev);
    ev_offsets_fetch(ev);
    ev_outbox_mark_flush(ev);
    ev_outbox_purge(ev);
  }
}

static int load_config(evaluator *ev, char *err, size_t errsize) {
  snprintf(ev->catalog_path, sizeof(ev->catalog_path), "%s",
           kpi_env_str("KPI_CATALOG", "config/catalog.json"));
  snprintf(ev->group, sizeof(ev->group), "%s", kpi_env_str("KPI_EVALUATOR_GROUP", "evaluator"));
  if (kpi_topics_from_env(ev->topics, err, errsize)) return -1;
  int64_t v;
  if (kpi_env_int("KPI_BATCH_MAX", 5000, 1, 100000, &v, err, errsize)) return -1;
  ev->batch_max = (int)v;
  if (kpi_env_double("KPI_LAG_RATIO", KPI_LAG_RATIO_DEFAULT, 0.01, 1.0, &ev->lag_ratio, err,
                     errsize))
    return -1;
  if (kpi_env_int("KPI_REPEAT_INTERVAL_DAYS", KPI_REPEAT_DAYS_DEFAULT, 1, 3660, &v, err, errsize))
    return -1;
  ev->repeat_days = (int)v;
  if (kpi_env_int("KPI_SWEEP_INTERVAL_MS", 60000, 100, 86400000, &ev->sweep_ms, err, errsize))
    return -1;
  if (kpi_env_int("KPI_DRAIN_TIMEOUT_MS", 10000, 100, 600000, &ev->drain_timeout_ms, err,
                  errsize))
    return -1;
#ifdef KPI_TEST_HOOKS
  /* Fault injection for the integration tests, compiled in only with -DKPI_TEST_HOOKS=ON: a
   * release binary does not read these variables at all, so no environment can trigger them. */
  if (kpi_env_int("KPI_TEST_CRASH_AFTER_COMMIT", 0, 0, 1, &v, err, errsize)) return -1;
  ev->crash_after_commit = v == 1;
  if (kpi_env_int("KPI_TEST_LOSE_COMMITS", 0, 0, 100, &v, err, errsize)) return -1;
  ev->lose_commits = (int)v;
#endif
  if (kpi_env_int("KPI_EVALUATOR_API_MAX_PENDING", 32, 1, 10000, &v, err, errsize)) return -1;
  ev->api_max_pending = (int)v;
  if (kpi_env_int("KPI_OUTBOX_RETENTION_DAYS", 30, 1, 36500, &v, err, errsize)) return -1;
  ev->outbox_retention_days = (int)v;
  const char *date = kpi_env_str("KPI_EVAL_DATE", NULL);
  if (date) {
    kpi_day day;
    if (strlen(date) != 10 || kpi_time_parse(date, NULL, &day) != 0) {
      snprintf(err, errsize, "KPI_EVAL_DATE: expected YYYY-MM-DD, got \"%s\"", date);
      return -1;
    }
    ev->fixed_date = true;
    ev->eval_date = day;
  }
  const char *listen = kpi_env_str("KPI_EVALUATOR_LISTEN", "127.0.0.1:8081");
  if (kpi_env_split_hostport(listen, ev->listen_host, sizeof(ev->listen_host),
                             &ev->listen_port) != 0) {
    snprintf(err, errsize, "KPI_EVALUATOR_LISTEN: expected host:port, got \"%s\"", listen);
    return -1;
  }
  return 0;
}

int main(void) {
  kpi_log_init("evaluator");
  signal(SIGPIPE, SIG_IGN);
  static evaluator evs; /* one per process; reached from callbacks through handle data */
  evaluator *ev = &evs;
  char err[512];
  if (load_config(ev, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return 2;
  }
  ev->cat = kpi_catalog_load(ev->catalog_path, err, sizeof(err));
  if (!ev->cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    return 2;
  }
  kpi_http_config hcfg;
  kpi_http_config_defaults(&hcfg);
  hcfg.max_body_bytes = KPI_HTTP_SMALL_BODY; /* GET only */
  if (kpi_http_config_from_env(&hcfg) != 0) return 2;

  uv_loop_t loop;
  uv_loop_init(&loop);
  ev->loop = &loop;
  ev->pending = &ev->batches[0];
  ev->backoff_ms = 100;
  ev_txn_init(ev);
  if (!ev->txn || ev_metrics_init(ev) != 0) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "at start");
    return 1;
  }
  struct sigaction sa = {.sa_handler = on_startup_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  const char *conninfo = kpi_pg_conninfo();
  int prep = ev_db_prepare(ev, conninfo);
  if (prep != 0) {
    if (prep > 0) kpi_log(KPI_LOG_INFO, "stopped", "stop requested while waiting for the database");
    return startup_abort(ev, &loop, prep > 0 ? 0 : 1);
  }

  uv_timer_init(&loop, &ev->retry_timer);
  uv_timer_init(&loop, &ev->sweep_timer);
  uv_signal_init(&loop, &ev->sig_term);
  uv_signal_init(&loop, &ev->sig_int);
  uv_signal_init(&loop, &ev->sig_hup);
  ev->retry_timer.data = ev->sweep_timer.data = ev;
  ev->sig_term.data = ev->sig_int.data = ev->sig_hup.data = ev;
  ev->open_handles += 5;

  if (ev_kafka_start(ev, err, sizeof(err)) != 0) {
    if (ev->stopping) {
      kpi_log(KPI_LOG_INFO, "stopped", "%s", err);
      return startup_abort(ev, &loop, 0);
    }
    kpi_log(KPI_LOG_ERROR, "kafka_setup_failed", "%s", err);
    return startup_abort(ev, &loop, 1);
  }
  /* From here on libuv owns the signals (its handlers replace on_startup_signal). */
  uv_signal_start(&ev->sig_term, on_uv_signal, SIGTERM);
  uv_signal_start(&ev->sig_int, on_uv_signal, SIGINT);
  uv_signal_start(&ev->sig_hup, on_uv_signal, SIGHUP);
  ev->db = kpi_pgasync_new(&loop, conninfo, on_pg_state, ev, err, sizeof(err));
  ev->aux = kpi_pgasync_new(&loop, conninfo, on_pg_state, ev, err, sizeof(err));
  ev->api = kpi_pgasync_new(&loop, conninfo, on_pg_state, ev, err, sizeof(err));
  if (!ev->db || !ev->aux || !ev->api) {
    kpi_log(KPI_LOG_ERROR, "db_setup_failed", "%s", err);
    return 1;
  }
  ev->open_handles += 3;

  if (kpi_http_server_init(&ev->http, &loop, &hcfg, ev_on_http_request, ev) != 0) {
    kpi_log(KPI_LOG_ERROR, "http_setup_failed", "out of memory");
    return 1;
  }
  ev->http.data = ev;
  ev->http_inited = true;
  kpi_http_server_set_routes(&ev->http, ev_http_routes, EV_HTTP_N_ROUTES);
  ev->open_handles++;
  int rc = kpi_http_server_start(&ev->http, ev->listen_host, ev->listen_port);
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "http_listen_failed", "%s:%d: %s", ev->listen_host, ev->listen_port,
            kpi_http_strerror(rc));
    return 1;
  }

  /* Evaluate every measure once at start, then every KPI_SWEEP_INTERVAL_MS. */
  ev->sweep_due = true;
  uv_timer_start(&ev->sweep_timer, on_sweep_timer, (uint64_t)ev->sweep_ms, (uint64_t)ev->sweep_ms);
  char date[16] = "today";
  if (ev->fixed_date) kpi_day_format(ev->eval_date, date, sizeof(date));
  kpi_log(KPI_LOG_INFO, "started",
          "catalog %s (%zu measures), group %s, topic %s, listening on %s:%d, evaluation date %s",
          ev->catalog_path, ev->cat->n_measures, ev->group,
          ev->topics[KPI_TOPIC_MEASUREMENTS].name, ev->listen_host,
          kpi_http_server_port(&ev->http), date);

  if (startup_stop) uv_kill(getpid(), SIGTERM); /* asked for after the waits, before now */
  uv_run(&loop, UV_RUN_DEFAULT);

  if (ev->consumer) rd_kafka_destroy(ev->consumer);
  if (ev->producer) rd_kafka_destroy(ev->producer);
  ev_batch_free(&ev->batches[0]);
  ev_batch_free(&ev->batches[1]);
  ev_txn_free(ev);
  free(ev->sent_ids);
  while (ev->outbox_inflight) {
    ev_outmsg *o = ev->outbox_inflight;
    ev->outbox_inflight = o->next;
    free(o);
  }
  kpi_metrics_free(ev->metrics);
  kpi_catalog_free(ev->cat);
  rc = uv_loop_close(&loop);
  if (rc) kpi_log(KPI_LOG_WARN, "loop_not_empty", "%s", uv_strerror(rc));
  return ev->exit_code;
}
