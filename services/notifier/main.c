/* services/notifier/main.c: kpi-notifier: configuration, the loop, health and metrics, graceful shutdown. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_pg.h"
#include "notifier.h"

static const double SEND_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1,     2.5,  5,     10,   30,  60};

/* A duration such as "5d", "12h", "30m", "90s" or "1500ms" (a bare number is seconds) in
 * milliseconds, or -1. */
static int64_t parse_duration_ms(const char *s) {
  char *end;
  if (!s || *s < '0' || *s > '9') return -1;
  long long v = strtoll(s, &end, 10);
  if (v < 0 || v > 100LL * 365 * 86400 * 1000) return -1;
  int64_t unit;
  if (strcmp(end, "") == 0 || strcmp(end, "s") == 0) unit = 1000;
  else if (strcmp(end, "ms") == 0) unit = 1;
  else if (strcmp(end, "m") == 0) unit = 60000;
  else if (strcmp(end, "h") == 0) unit = 3600000;
  else if (strcmp(end, "d") == 0) unit = 86400000;
  else return -1;
  return (int64_t)v * unit;
}

static int read_config(notifier *nf, char *err, size_t errsz) {
  nf_config *c = &nf->cfg;
  const char *from = kpi_env_str("KPI_MAIL_FROM", "kpi-notifier@localhost");
  if (!kpi_mail_address_valid(from)) {
    snprintf(err, errsz, "KPI_MAIL_FROM: not a plain mail address (user@domain)");
    return -1;
  }
  snprintf(c->from, sizeof(c->from), "%s", from);
  c->from_name = kpi_env_str("KPI_MAIL_FROM_NAME", "KPI進捗通知 (KPI notifier)");
  c->group = kpi_env_str("KPI_NOTIFIER_GROUP", "notifier");
  c->listen = kpi_env_str("KPI_NOTIFIER_LISTEN", "127.0.0.1:8082");
  int64_t v;
  if (kpi_env_int("KPI_NOTIFY_GROUP_WAIT_MS", 30000, 0, 86400000, &c->group_wait_ms, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_RETRY_BASE_MS", 1000, 1, 3600000, &c->retry_base_ms, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_RETRY_MAX_MS", 300000, 1, 86400000, &c->retry_max_ms, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_MAX_ATTEMPTS", 8, 1, 1000, &c->max_attempts, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_BATCH", 200, 1, 10000, &c->claim_rows, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_DIGEST_MAX", 50, 1, 1000, &c->digest_max, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_LEASE_MS", 600000, 1000, 86400000, &c->lease_ms, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_POLL_MS", 1000, 10, 600000, &c->poll_ms, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_DRAIN_TIMEOUT_MS", 30000, 0, 600000, &c->drain_timeout_ms, err,
                  errsz) ||
      kpi_env_int("KPI_NOTIFY_CONSUME_BATCH", 100, 1, 10000, &c->consume_batch, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_RETENTION_DAYS", 90, 0, 36500, &c->retention_days, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_PURGE_INTERVAL_MS", 3600000, 100, 86400000, &c->purge_interval_ms,
                  err, errsz) ||
      kpi_env_int("KPI_NOTIFY_PURGE_BATCH", 1000, 1, 100000, &c->purge_batch, err, errsz) ||
      kpi_env_int("KPI_SMTP_PROBE_BASE_MS", 1000, 10, 600000, &c->probe_base_ms, err, errsz) ||
      kpi_env_int("KPI_SMTP_PROBE_MAX_MS", 30000, 10, 3600000, &c->probe_max_ms, err, errsz) ||
      kpi_env_int("KPI_NOTIFY_CATALOG_RECIPIENTS", 1, 0, 1, &v, err, errsz))
    return -1;
  /* The notifier used to mail the addresses an alert record named; it now mails only what
   * its own catalog gives the measure. An operator who asked for "only the alert's
   * recipients" must learn that this is gone, not find mails going elsewhere. */
  if (v == 0) {
    snprintf(err, errsz, "KPI_NOTIFY_CATALOG_RECIPIENTS=0 is no longer supported: mail goes "
                         "only to the owners and watchers the catalog names");
    return -1;
  }
  c->dashboard_url = kpi_env_str("KPI_NOTIFY_DASHBOARD_URL", NULL);
  if (c->dashboard_url) {
    bool ok = strncmp(c->dashboard_url, "https://", 8) == 0 ||
              strncmp(c->dashboard_url, "http://", 7) == 0;
    for (const unsigned char *p = (const unsigned char *)c->dashboard_url; ok && *p; p++)
      ok = *p > 0x20 && *p < 0x7F;
    if (!ok) {
      snprintf(err, errsz, "KPI_NOTIFY_DASHBOARD_URL: must be an http:// or https:// URL in "
                           "printable ASCII without spaces");
      return -1;
    }
  }
  c->max_age_text = kpi_env_str("KPI_NOTIFY_MAX_AGE", "5d");
  c->max_age_ms = parse_duration_ms(c->max_age_text);
  if (c->max_age_ms < 1000) {
    snprintf(err, errsz, "KPI_NOTIFY_MAX_AGE: a duration of at least 1 s such as 5d, 12h, 30m, "
                         "90s or 1500ms");
    return -1;
  }
  if (c->probe_max_ms < c->probe_base_ms) {
    snprintf(err, errsz, "KPI_SMTP_PROBE_MAX_MS must be >= KPI_SMTP_PROBE_BASE_MS");
    return -1;
  }
  if (c->retry_max_ms < c->retry_base_ms) {
    snprintf(err, errsz, "KPI_NOTIFY_RETRY_MAX_MS must be >= KPI_NOTIFY_RETRY_BASE_MS");
    return -1;
  }
  return 0;
}

/* SMTP settings. Credentials (KPI_SMTP_USER, or userinfo in KPI_SMTP_URL) over smtp:// are
 * sent only inside STARTTLS: with "try" a man in the middle who strips the STARTTLS offer
 * gets AUTH in clear text, so TLS defaults to "require" when a user is set, and "try" or
 * "none" with credentials stops the service unless KPI_SMTP_ALLOW_INSECURE_AUTH=1 says the
 * operator means it (a relay on the same host). smtps:// is TLS from the first byte. */
static int smtp_config(notifier *nf, kpi_smtp_config *sc, char *url_log, size_t url_log_size,
                       char *err, size_t errsz) {
  kpi_smtp_config_defaults(sc);
  sc->url = kpi_env_str("KPI_SMTP_URL", "smtp://127.0.0.1:25");
  sc->user = kpi_env_str("KPI_SMTP_USER", NULL);
  sc->password = kpi_env_str("KPI_SMTP_PASSWORD", NULL);
  sc->ca_file = kpi_env_str("KPI_SMTP_CA_FILE", NULL);
  int url_userinfo = 0;
  if (kpi_smtp_url_redact(sc->url, url_log, url_log_size, &url_userinfo) != 0) {
    snprintf(err, errsz, "KPI_SMTP_URL: not a valid smtp:// or smtps:// URL");
    return -1;
  }
  bool credentials = sc->user != NULL || url_userinfo;
  bool implicit_tls = strncmp(sc->url, "smtps://", 8) == 0;
  const char *tls = kpi_env_str("KPI_SMTP_TLS", credentials ? "require" : "try");
  if (strcmp(tls, "none") == 0) sc->tls = KPI_SMTP_TLS_NONE;
  else if (strcmp(tls, "try") == 0) sc->tls = KPI_SMTP_TLS_TRY;
  else if (strcmp(tls, "require") == 0) sc->tls = KPI_SMTP_TLS_REQUIRE;
  else {
    snprintf(err, errsz, "KPI_SMTP_TLS: must be none, try or require");
    return -1;
  }
  int64_t insecure_auth;
  if (kpi_env_int("KPI_SMTP_ALLOW_INSECURE_AUTH", 0, 0, 1, &insecure_auth, err, errsz))
    return -1;
  if (credentials && !implicit_tls && sc->tls != KPI_SMTP_TLS_REQUIRE) {
    if (!insecure_auth) {
      snprintf(err, errsz,
               "KPI_SMTP_TLS=%s with SMTP credentials could send the password in clear text "
               "(a stripped STARTTLS); use KPI_SMTP_TLS=require or smtps://, or set "
               "KPI_SMTP_ALLOW_INSECURE_AUTH=1 to accept that risk",
               tls);
      return -1;
    }
    kpi_log(KPI_LOG_WARN, "smtp_insecure_auth",
            "KPI_SMTP_TLS=%s with credentials and KPI_SMTP_ALLOW_INSECURE_AUTH=1: the password "
            "may cross the network in clear text",
            tls);
  }
  int64_t verify, conns, cto, to;
  if (kpi_env_int("KPI_SMTP_TLS_VERIFY", 1, 0, 1, &verify, err, errsz) ||
      kpi_env_int("KPI_SMTP_CONNECTIONS", 4, 1, 64, &conns, err, errsz) ||
      kpi_env_int("KPI_SMTP_CONNECT_TIMEOUT_MS", 10000, 100, 600000, &cto, err, errsz) ||
      kpi_env_int("KPI_SMTP_TIMEOUT_MS", 60000, 100, 3600000, &to, err, errsz))
    return -1;
  sc->tls_verify = (int)verify;
  sc->max_connections = (int)conns;
  sc->connect_timeout_ms = (long)cto;
  sc->timeout_ms = (long)to;
  nf->smtp_connections = (int)conns;
  /* Up to 4 mails per connection wait in the SMTP client (nf_send.c), so the last one may
   * finish 4 timeouts after its claim. */
  if (to * 5 >= nf->cfg.lease_ms)
    kpi_log(KPI_LOG_WARN, "config_lease_short",
            "KPI_NOTIFY_LEASE_MS (%lld) should exceed 5 x KPI_SMTP_TIMEOUT_MS (%lld), or a slow "
            "server may let another replica re-send a mail still in flight",
            (long long)nf->cfg.lease_ms, (long long)to);
  return 0;
}

/* Database ------------------------------------------------------------------------------- */

static void on_uv_migrate(uv_timer_t *t);

/* Migrations run once, with a short blocking connection, the first time the database is
 * reachable; every replica may try, kpi_pg_migrate serialises them with an advisory lock. */
static void try_migrate(notifier *nf) {
  if (nf->migrated) return;
  char err[512];
  PGconn *c = kpi_pg_connect(nf->conninfo, err, sizeof(err));
  int rc = c ? kpi_pg_migrate(c, err, sizeof(err)) : -1;
  if (c) PQfinish(c);
  if (rc < 0) {
    kpi_log(KPI_LOG_WARN, "migrate_failed", "%s (retrying)", err);
    uv_timer_start(&nf->migrate_timer, on_uv_migrate, 2000, 0);
    return;
  }
  if (rc > 0) kpi_log(KPI_LOG_INFO, "migrated", "%d migrations applied", rc);
  nf->migrated = true;
}

static void set_db_ready(notifier *nf) {
  bool ready = nf->migrated && kpi_pgasync_is_up(nf->pg) && !nf->draining;
  if (ready == nf->db_ready) return;
  nf->db_ready = ready;
  kpi_metrics_set(nf->m.db_up, ready ? 1 : 0);
  if (ready) {
    kpi_log(KPI_LOG_INFO, "db_ready", "database connected");
    nf_consume_kick(nf);
    nf_send_refresh_depth(nf);
  }
}

static void on_uv_migrate(uv_timer_t *t) {
  notifier *nf = t->data;
  if (!kpi_pgasync_is_up(nf->pg) || nf->draining) return; /* the next "up" retries */
  try_migrate(nf);
  set_db_ready(nf);
}

static void on_pg_state(kpi_pgasync *pg, int up, void *arg) {
  (void)pg;
  notifier *nf = arg;
  if (up) {
    kpi_log(KPI_LOG_INFO, "db_up", "connected to PostgreSQL");
    if (!nf->draining) try_migrate(nf);
  } else if (!nf->draining) {
    kpi_log(KPI_LOG_WARN, "db_down", "PostgreSQL connection lost; reconnecting");
  }
  set_db_ready(nf);
}

/* HTTP ----------------------------------------------------------------------------------- */

/* The server answers unknown paths (404), other methods (405 with Allow) and unknown
 * methods (501) from this table. */
static const kpi_http_route http_routes[] = {
    {"/healthz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    {"/readyz", KPI_HTTP_GET | KPI_HTTP_HEAD},
    {"/metrics", KPI_HTTP_GET | KPI_HTTP_HEAD},
};

static void on_http_request(kpi_http_request *req, void *opaque) {
  notifier *nf = opaque;
  const char *path = kpi_http_request_path(req);
  if (strcmp(path, "/healthz") == 0) {
    static const char ok[] = "{\"status\":\"ok\"}";
    kpi_http_respond(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
  } else if (strcmp(path, "/readyz") == 0) {
    if (nf->db_ready && !nf->draining) {
      static const char ok[] = "{\"status\":\"ready\"}";
      kpi_http_respond(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
    } else {
      kpi_http_respond_problem(req, 503, NULL,
                               nf->draining ? "shutting down" : "database not ready", NULL);
    }
  } else if (strcmp(path, "/metrics") == 0) {
    kpi_metrics_set(nf->m.inflight, (double)nf->mails_inflight);
    kpi_http_respond_metrics(req, &nf->http, nf->metrics);
  } else {
    kpi_http_respond_problem(req, 404, NULL, NULL, NULL);
  }
}

/* Shutdown -------------------------------------------------------------------------------- */

static void finish_shutdown(notifier *nf);

static void on_uv_drain(uv_timer_t *t) {
  notifier *nf = t->data;
  bool idle = nf_consume_idle(nf) && nf_send_idle(nf) &&
              (!nf->producer || rd_kafka_outq_len(nf->producer) == 0);
  if (idle || uv_now(nf->loop) >= nf->drain_deadline) {
    if (!idle)
      kpi_log(KPI_LOG_WARN, "drain_timeout",
              "stopping with %zu mails in flight (batch %s, claim %s, %d Kafka messages queued); "
              "leased rows become due again when the lease ends",
              nf->mails_inflight, nf_consume_idle(nf) ? "done" : "pending",
              nf->claim_inflight ? "pending" : "done",
              nf->producer ? rd_kafka_outq_len(nf->producer) : 0);
    finish_shutdown(nf);
  }
}

/* SIGHUP: reload the catalog, which alone names the recipients of each alert (its measure's
 * owners' mailboxes and watchers) and, without KPI_NOTIFY_DASHBOARD_URL, the link base. The
 * catalog is only read synchronously (an alert turned into rows, a mail composed), so swapping
 * it here is safe; a broken file keeps the old one. Rows already queued keep their
 * recipients; links follow the catalog in force when the mail is composed. */
static void on_uv_sighup(uv_signal_t *s, int signum) {
  (void)signum;
  notifier *nf = s->data;
  const char *path = kpi_env_str("KPI_CATALOG", "config/catalog.json");
  char err[512];
  kpi_catalog *cat = kpi_catalog_load(path, err, sizeof(err));
  if (!cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s (keeping the previous catalog)", err);
    return;
  }
  kpi_catalog_free(nf->cat);
  nf->cat = cat;
  kpi_log(KPI_LOG_INFO, "catalog_reloaded", "%s: %zu measures", path, cat->n_measures);
}

static void on_uv_signal(uv_signal_t *s, int signum) {
  notifier *nf = s->data;
  if (nf->draining) {
    /* A second signal: stop now. */
    nf->drain_deadline = uv_now(nf->loop);
    return;
  }
  kpi_log(KPI_LOG_INFO, "draining", "signal %d: finishing in-flight work", signum);
  nf->draining = true;
  nf->drain_deadline = uv_now(nf->loop) + (uint64_t)nf->cfg.drain_timeout_ms;
  nf_send_stop(nf);
  nf_purge_stop(nf);
  uv_timer_stop(&nf->migrate_timer);
  uv_timer_start(&nf->drain_timer, on_uv_drain, 0, 50);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void finish_shutdown(notifier *nf) {
  nf->stopping = true;
  uv_timer_stop(&nf->drain_timer);
  nf_send_stop(nf);
  nf_purge_stop(nf);
  uv_timer_stop(&nf->consume_retry);
  uv_timer_stop(&nf->update_retry);

  /* SMTP first: cancelled sends give their rows back to the lease. */
  if (nf->smtp) {
    kpi_smtp_close(nf->smtp, NULL, NULL);
    nf->smtp = NULL;
  }
  nf_send_abandon(nf);
  /* Dead letters still queued get a few seconds, then are purged so that every delivery
   * callback has run before the batches they point to are released. */
  if (nf->producer) {
    rd_kafka_flush(nf->producer, 5000);
    if (rd_kafka_outq_len(nf->producer) > 0) {
      rd_kafka_purge(nf->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_poll(nf->producer, 100);
    }
  }
  /* The database: queued queries report "outcome unknown", which now just releases. */
  if (nf->pg) {
    kpi_pgasync_close(nf->pg, NULL, NULL);
    nf->pg = NULL;
  }
  if (nf->consumer) {
    if (nf->closing_handles & 2) kpi_kafka_waker_close(&nf->consumer_waker, NULL);
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(nf->consumer);
    if (err) kpi_log(KPI_LOG_WARN, "consumer_close", "%s", rd_kafka_err2str(err));
    rd_kafka_destroy(nf->consumer);
    nf->consumer = NULL;
  }
  if (nf->producer) {
    if (nf->closing_handles & 1) kpi_kafka_waker_close(&nf->producer_waker, NULL);
    rd_kafka_destroy(nf->producer);
    nf->producer = NULL;
  }
  if (nf->http_inited) kpi_http_server_close(&nf->http, NULL);
  nf->http_inited = false;
  close_handle((uv_handle_t *)&nf->drain_timer);
  close_handle((uv_handle_t *)&nf->claim_timer);
  close_handle((uv_handle_t *)&nf->depth_timer);
  close_handle((uv_handle_t *)&nf->purge_timer);
  close_handle((uv_handle_t *)&nf->update_retry);
  close_handle((uv_handle_t *)&nf->relay_timer);
  close_handle((uv_handle_t *)&nf->consume_retry);
  close_handle((uv_handle_t *)&nf->migrate_timer);
  close_handle((uv_handle_t *)&nf->sigterm);
  close_handle((uv_handle_t *)&nf->sigint);
  close_handle((uv_handle_t *)&nf->sighup);
  kpi_log(KPI_LOG_INFO, "stopped", "notifier stopped");
}

/* Start ---------------------------------------------------------------------------------- */

static void register_metrics(notifier *nf) {
  kpi_metrics *m = nf->metrics;
  nf->m.consumed = kpi_metrics_counter(m, "kpi_notifier_alerts_consumed_total", NULL,
                                       "Alert records read from the alerts topic.");
  nf->m.invalid = kpi_metrics_counter(m, "kpi_notifier_alerts_invalid_total", NULL,
                                      "Alert records that could not be decoded (sent to the DLQ).");
  nf->m.queued = kpi_metrics_counter(m, "kpi_notifier_notifications_queued_total", NULL,
                                     "Notification rows newly inserted (one per alert and recipient).");
  nf->m.sent = kpi_metrics_counter(m, "kpi_notifier_sent_total", NULL,
                                   "Mails accepted by the SMTP server.");
  nf->m.sent_rows = kpi_metrics_counter(m, "kpi_notifier_notifications_sent_total", NULL,
                                        "Notification rows delivered (a digest mail carries several).");
  nf->m.failed = kpi_metrics_counter(m, "kpi_notifier_failed_total", NULL,
                                     "Mail attempts that failed (transient and permanent).");
  nf->m.permanent = kpi_metrics_counter(m, "kpi_notifier_rejected_total", NULL,
                                        "Mail attempts refused with a permanent 5xx reply.");
  nf->m.dead = kpi_metrics_counter(m, "kpi_notifier_dead_total", NULL,
                                   "Notification rows given up (state dead).");
  nf->m.dlq_published = kpi_metrics_counter(m, "kpi_notifier_dlq_published_total", NULL,
                                            "Records acknowledged on the alerts dead-letter topic.");
  nf->m.dlq_failed = kpi_metrics_counter(m, "kpi_notifier_dlq_failed_total", NULL,
                                         "Dead letters that could not be published.");
  nf->m.queue_depth = kpi_metrics_gauge(m, "kpi_notifier_queue_depth", NULL,
                                        "Notification rows pending (waiting, due or being retried).");
  nf->m.inflight = kpi_metrics_gauge(m, "kpi_notifier_mails_inflight", NULL,
                                     "Mails handed to SMTP whose outcome is not yet recorded.");
  nf->m.send_seconds = kpi_metrics_histogram(
      m, "kpi_notifier_send_duration_seconds", NULL,
      "Time from handing a mail to the SMTP client to the server's final reply.", SEND_BUCKETS,
      sizeof(SEND_BUCKETS) / sizeof(SEND_BUCKETS[0]));
  nf->m.db_up = kpi_metrics_gauge(m, "kpi_notifier_db_up", NULL,
                                  "1 when the database is connected and migrated.");
  nf->m.db_errors = kpi_metrics_counter(m, "kpi_notifier_db_errors_total", NULL,
                                        "Database statements that failed or lost their connection.");
  nf->m.ignored = kpi_metrics_counter(
      m, "kpi_notifier_alert_fields_ignored_total", NULL,
      "Alert records whose own recipients or link differed from the catalog's (ignored).");
  nf->m.purged = kpi_metrics_counter(m, "kpi_notifier_notifications_purged_total", NULL,
                                     "Delivered notification rows deleted after the retention age.");
  nf->m.relay_up = kpi_metrics_gauge(m, "kpi_notifier_relay_up", NULL,
                                     "1 while the SMTP relay is taken to answer, 0 while it is down "
                                     "(nothing is claimed; it is probed).");
  nf->m.relay_deferred = kpi_metrics_counter(
      m, "kpi_notifier_relay_deferred_total", NULL,
      "Mails given back because the relay failed (their attempts are not counted).");
  nf->m.relay_probes = kpi_metrics_counter(m, "kpi_notifier_relay_probes_total", NULL,
                                           "Probes of a relay taken to be down.");
  nf->m.queue_oldest = kpi_metrics_gauge(m, "kpi_notifier_queue_oldest_seconds", NULL,
                                         "Age of the oldest pending notification row (refreshed "
                                         "every 5 s).");
  nf->m.expired = kpi_metrics_counter(m, "kpi_notifier_expired_total", NULL,
                                      "Rows given up after the queue lifetime (KPI_NOTIFY_MAX_AGE).");
}

const char *nf_dashboard_url(const notifier *nf) {
  if (nf->cfg.dashboard_url) return nf->cfg.dashboard_url;
  return nf->cat && nf->cat->dashboard_url && *nf->cat->dashboard_url ? nf->cat->dashboard_url
                                                                       : NULL;
}

int main(void) {
  kpi_log_init("notifier");
  signal(SIGPIPE, SIG_IGN);
  srandom((unsigned)time(NULL) ^ (unsigned)getpid());
  char err[512];
  notifier *nf = calloc(1, sizeof(*nf));
  if (!nf) return 1;
  nf->loop = uv_default_loop();
  if (read_config(nf, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    free(nf);
    return 2;
  }
  const char *path = kpi_env_str("KPI_CATALOG", "config/catalog.json");
  nf->cat = kpi_catalog_load(path, err, sizeof(err));
  if (!nf->cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    free(nf);
    return 2;
  }
  if (kpi_topics_from_env(nf->topics, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    goto fail;
  }
  kpi_smtp_config sc;
  char smtp_url_log[512];
  if (smtp_config(nf, &sc, smtp_url_log, sizeof(smtp_url_log), err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    goto fail;
  }
  char host[128];
  int port;
  if (kpi_env_split_hostport(nf->cfg.listen, host, sizeof(host), &port) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "KPI_NOTIFIER_LISTEN: expected host:port");
    goto fail;
  }
  nf->metrics = kpi_metrics_new();
  if (!nf->metrics) goto fail;
  register_metrics(nf);

  uv_timer_init(nf->loop, &nf->migrate_timer);
  nf->migrate_timer.data = nf;
  uv_timer_init(nf->loop, &nf->drain_timer);
  nf->drain_timer.data = nf;
  uv_timer_init(nf->loop, &nf->consume_retry);
  nf->consume_retry.data = nf;
  uv_signal_init(nf->loop, &nf->sigterm);
  nf->sigterm.data = nf;
  uv_signal_init(nf->loop, &nf->sigint);
  nf->sigint.data = nf;
  uv_signal_start(&nf->sigterm, on_uv_signal, SIGTERM);
  uv_signal_start(&nf->sigint, on_uv_signal, SIGINT);
  uv_signal_init(nf->loop, &nf->sighup);
  nf->sighup.data = nf;
  uv_signal_start(&nf->sighup, on_uv_sighup, SIGHUP);
  nf_send_init(nf);
  nf_purge_init(nf);

  kpi_http_config hc;
  kpi_http_config_defaults(&hc);
  hc.max_body_bytes = KPI_HTTP_SMALL_BODY; /* GET only */
  if (kpi_http_config_from_env(&hc) != 0) goto fail_loop;
  int rc = kpi_http_server_init(&nf->http, nf->loop, &hc, on_http_request, nf);
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "http_init_failed", "%s", kpi_http_strerror(rc));
    goto fail_loop;
  }
  nf->http_inited = true;
  kpi_http_server_set_routes(&nf->http, http_routes, sizeof http_routes / sizeof http_routes[0]);
  rc = kpi_http_server_start(&nf->http, host, port);
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "http_listen_failed", "%s:%d: %s", host, port, uv_strerror(rc));
    goto fail_loop;
  }

  nf->smtp = kpi_smtp_new(nf->loop, &sc, err, sizeof(err));
  if (!nf->smtp) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "SMTP: %s", err);
    goto fail_loop;
  }
  nf->conninfo = strdup(kpi_pg_conninfo());
  nf->pg = kpi_pgasync_new(nf->loop, nf->conninfo, on_pg_state, nf, err, sizeof(err));
  if (!nf->conninfo || !nf->pg) {
    kpi_log(KPI_LOG_ERROR, "db_init_failed", "%s", err);
    goto fail_loop;
  }
  if (nf_consume_start(nf, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "kafka_init_failed", "%s", err);
    goto fail_loop;
  }
  kpi_log(KPI_LOG_INFO, "started",
          "listening on %s:%d; SMTP %s (%d connections); from %s; group wait %lld ms; catalog %s "
          "(%zu measures); queue lifetime %s",
          host, kpi_http_server_port(&nf->http), smtp_url_log, nf->smtp_connections, nf->cfg.from,
          (long long)nf->cfg.group_wait_ms, path, nf->cat->n_measures, nf->cfg.max_age_text);

  uv_run(nf->loop, UV_RUN_DEFAULT);
  int code = nf->exit_code;
  int lc = uv_loop_close(nf->loop);
  if (lc != 0) kpi_log(KPI_LOG_WARN, "loop_not_closed", "%s", uv_strerror(lc));
  kpi_metrics_free(nf->metrics);
  kpi_catalog_free(nf->cat);
  free(nf->conninfo);
  free(nf);
  return code;

fail_loop:
  /* Start-up failed after handles existed: close them through the normal path. */
  nf->exit_code = 1;
  nf->draining = true;
  finish_shutdown(nf);
  uv_run(nf->loop, UV_RUN_DEFAULT);
  uv_loop_close(nf->loop);
  kpi_metrics_free(nf->metrics);
  kpi_catalog_free(nf->cat);
  free(nf->conninfo);
  free(nf);
  return 1;
fail:
  kpi_metrics_free(nf->metrics);
  kpi_catalog_free(nf->cat);
  free(nf);
  return 2;
}
