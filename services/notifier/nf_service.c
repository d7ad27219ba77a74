/* nf_service.c: kpi-notifier's configuration and life cycle: start-up steps, health and
 * metrics, the database's readiness and migrations, signals (SIGHUP reloads the catalog) and
 * the graceful drain on SIGTERM. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"
#include "kpi_log.h"
#include "kpi_pg.h"
#include "notifier.h"

#define MIGRATE_RETRY_MS 2000

/* Configuration ---------------------------------------------------------------------------- */

/* One integer setting: its variable, default, bounds and where it goes. */
typedef struct {
  const char *name;
  int64_t def, min, max;
  size_t offset; /* into nf_config */
} int_setting;

#define NF_INT(name, def, min, max, field) {name, def, min, max, offsetof(nf_config, field)}
static const int_setting INT_SETTINGS[] = {
    NF_INT("KPI_NOTIFY_GROUP_WAIT_MS", 30000, 0, 86400000, group_wait_ms),
    NF_INT("KPI_NOTIFY_RETRY_BASE_MS", 1000, 1, 3600000, retry_base_ms),
    NF_INT("KPI_NOTIFY_RETRY_MAX_MS", 300000, 1, 86400000, retry_max_ms),
    NF_INT("KPI_NOTIFY_MAX_ATTEMPTS", 8, 1, 1000, max_attempts),
    NF_INT("KPI_NOTIFY_BATCH", 200, 1, 10000, claim_rows),
    NF_INT("KPI_NOTIFY_PREFETCH", 128, 0, 10000, prefetch),
    NF_INT("KPI_NOTIFY_DIGEST_MAX", 50, 1, 1000, digest_max),
    NF_INT("KPI_NOTIFY_LEASE_MS", 600000, 1000, 86400000, lease_ms),
    NF_INT("KPI_NOTIFY_POLL_MS", 1000, 10, 600000, poll_ms),
    NF_INT("KPI_NOTIFY_DRAIN_TIMEOUT_MS", 30000, 0, 600000, drain_timeout_ms),
    NF_INT("KPI_NOTIFY_CONSUME_BATCH", 100, 1, 10000, consume_batch),
    NF_INT("KPI_NOTIFY_RETENTION_DAYS", 90, 0, 36500, retention_days),
    NF_INT("KPI_NOTIFY_PURGE_INTERVAL_MS", 3600000, 100, 86400000, purge_interval_ms),
    NF_INT("KPI_NOTIFY_PURGE_BATCH", 1000, 1, 100000, purge_batch),
    NF_INT("KPI_SMTP_PROBE_BASE_MS", 1000, 10, 600000, probe_base_ms),
    NF_INT("KPI_SMTP_PROBE_MAX_MS", 30000, 10, 3600000, probe_max_ms),
};
#undef NF_INT

static int read_int_settings(nf_config *c, char *err, size_t errsz) {
  for (size_t i = 0; i < sizeof(INT_SETTINGS) / sizeof(INT_SETTINGS[0]); i++) {
    const int_setting *s = &INT_SETTINGS[i];
    int64_t *out = (int64_t *)((char *)c + s->offset);
    if (kpi_env_int(s->name, s->def, s->min, s->max, out, err, errsz)) return -1;
  }
  /* The notifier used to mail the addresses an alert record named; it now mails only what
   * its own catalog gives the measure. An operator who asked for "only the alert's
   * recipients" must learn that this is gone, not find mails going elsewhere. */
  int64_t v;
  if (kpi_env_int("KPI_NOTIFY_CATALOG_RECIPIENTS", 1, 0, 1, &v, err, errsz)) return -1;
  if (v == 0) {
    snprintf(err, errsz, "KPI_NOTIFY_CATALOG_RECIPIENTS=0 is no longer supported: mail goes "
                         "only to the owners and watchers the catalog names");
    return -1;
  }
  return 0;
}

/* The settings that are checked against each other or parsed beyond an integer. */
static int check_config(nf_config *c, char *err, size_t errsz) {
  c->dashboard_url = kpi_env_str("KPI_NOTIFY_DASHBOARD_URL", NULL);
  if (c->dashboard_url && !nf_dashboard_url_valid(c->dashboard_url)) {
    snprintf(err, errsz, "KPI_NOTIFY_DASHBOARD_URL: must be an http:// or https:// URL in "
                         "printable ASCII without spaces");
    return -1;
  }
  const char *report = kpi_env_str("KPI_REPORT_BASE_URL", NULL);
  c->report_link_base[0] = '\0';
  if (report && *report &&
      nf_report_link_base(report, c->report_link_base, sizeof(c->report_link_base)) != 0) {
    snprintf(err, errsz, "KPI_REPORT_BASE_URL: must be an http:// or https:// URL in "
                         "printable ASCII without spaces, at most 400 bytes");
    return -1;
  }
  c->max_age_text = kpi_env_str("KPI_NOTIFY_MAX_AGE", "5d");
  c->max_age_ms = nf_duration_ms(c->max_age_text);
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

int nf_config_load(nf_config *c, char *err, size_t errsz) {
  const char *from = kpi_env_str("KPI_MAIL_FROM", "kpi-notifier@localhost");
  if (!kpi_mail_address_valid(from)) {
    snprintf(err, errsz, "KPI_MAIL_FROM: not a plain mail address (user@domain)");
    return -1;
  }
  snprintf(c->from, sizeof(c->from), "%s", from);
  c->from_name = kpi_env_str("KPI_MAIL_FROM_NAME", "KPI進捗通知 (KPI notifier)");
  c->group = kpi_env_str("KPI_NOTIFIER_GROUP", "notifier");
  c->listen = kpi_env_str("KPI_NOTIFIER_LISTEN", "127.0.0.1:8082");
  if (read_int_settings(c, err, errsz) != 0) return -1;
  return check_config(c, err, errsz);
}

/* KPI_SMTP_TLS, and whether credentials may cross the network in clear text. Credentials
 * (KPI_SMTP_USER, or userinfo in KPI_SMTP_URL) over smtp:// are sent only inside STARTTLS:
 * with "try" a man in the middle who strips the STARTTLS offer gets AUTH in clear text, so
 * TLS defaults to "require" when a user is set, and "try" or "none" with credentials stops
 * the service unless KPI_SMTP_ALLOW_INSECURE_AUTH=1 says the operator means it (a relay on
 * the same host). smtps:// is TLS from the first byte. */
static int smtp_tls_config(kpi_smtp_config *sc, bool credentials, char *err, size_t errsz) {
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
  if (!credentials || implicit_tls || sc->tls == KPI_SMTP_TLS_REQUIRE) return 0;
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
  return 0;
}

/* SMTP settings into SC; URL_LOG gets the URL without its password, for the start line. */
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
  if (smtp_tls_config(sc, sc->user != NULL || url_userinfo, err, errsz) != 0) return -1;
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
  nf->ready_hold_ms = nf_ready_hold_ms(nf->cfg.lease_ms, to);
  /* Up to NF_MAILS_PER_CONNECTION mails per connection wait in the SMTP client (nf_send.c),
   * so the last one may finish 4 timeouts after it was handed over; with a shorter lease
   * nothing is claimed ahead either (nf_ready_hold_ms). */
  if (to * 5 >= nf->cfg.lease_ms)
    kpi_log(KPI_LOG_WARN, "config_lease_short",
            "KPI_NOTIFY_LEASE_MS (%lld) should exceed 5 x KPI_SMTP_TIMEOUT_MS (%lld), or a slow "
            "server may let another replica re-send a mail still in flight",
            (long long)nf->cfg.lease_ms, (long long)to);
  return 0;
}

/* Database --------------------------------------------------------------------------------- */

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
    uv_timer_start(&nf->migrate_timer, on_uv_migrate, MIGRATE_RETRY_MS, 0);
    return;
  }
  if (rc > 0) kpi_log(KPI_LOG_INFO, "migrated", "%d migrations applied", rc);
  nf->migrated = true;
}

/* db_ready: connected, migrated and not draining. Becoming ready serves the records that
 * waited and refreshes the queue gauges; the sender's poll timer finds the due rows. */
static void set_db_ready(notifier *nf) {
  bool ready = nf->migrated && kpi_pgasync_is_up(nf->pg) && !nf->shutdown.stopping;
  if (ready == nf->db_ready) return;
  nf->db_ready = ready;
  kpi_metrics_set(nf->m.db_up, ready ? 1 : 0);
  if (ready) {
    kpi_log(KPI_LOG_INFO, "db_ready", "database connected");
    nf_consume_kick(nf);
    nf_queue_refresh_depth(nf);
  }
}

static void on_uv_migrate(uv_timer_t *t) {
  notifier *nf = t->data;
  if (!kpi_pgasync_is_up(nf->pg) || nf->shutdown.stopping) return; /* the next "up" retries */
  try_migrate(nf);
  set_db_ready(nf);
}

static void on_pg_state(kpi_pgasync *pg, int up, void *arg) {
  (void)pg;
  notifier *nf = arg;
  if (up) {
    kpi_log(KPI_LOG_INFO, "db_up", "connected to PostgreSQL");
    if (!nf->shutdown.stopping) try_migrate(nf);
  } else if (!nf->shutdown.stopping) {
    kpi_log(KPI_LOG_WARN, "db_down", "PostgreSQL connection lost; reconnecting");
  }
  set_db_ready(nf);
}

/* HTTP: health and metrics ----------------------------------------------------------------- */

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
    if (nf->db_ready && !nf->shutdown.stopping) {
      static const char ok[] = "{\"status\":\"ready\"}";
      kpi_http_respond(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
    } else {
      kpi_http_respond_problem(req, 503, NULL,
                               nf->shutdown.stopping ? "shutting down" : "database not ready", NULL);
    }
  } else if (strcmp(path, "/metrics") == 0) {
    kpi_metrics_set(nf->m.inflight, (double)nf->mails_inflight);
    kpi_http_respond_metrics(req, &nf->http, nf->metrics);
  } else {
    kpi_http_respond_problem(req, 404, NULL, NULL, NULL);
  }
}

static int http_start(notifier *nf, const char *host, int port) {
  kpi_http_config hc;
  kpi_http_config_defaults(&hc);
  hc.max_body_bytes = KPI_HTTP_SMALL_BODY; /* GET only */
  if (kpi_http_config_from_env(&hc) != 0) return -1;
  int rc = kpi_http_server_init(&nf->http, nf->loop, &hc, on_http_request, nf);
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "http_init_failed", "%s", kpi_http_strerror(rc));
    return -1;
  }
  nf->http_inited = true;
  kpi_http_server_set_routes(&nf->http, http_routes, sizeof http_routes / sizeof http_routes[0]);
  rc = kpi_http_server_start(&nf->http, host, port);
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "http_listen_failed", "%s:%d: %s", host, port, uv_strerror(rc));
    return -1;
  }
  return 0;
}

static const double SEND_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1,     2.5,  5,     10,   30,  60};

/* The service's metrics, registered once at start (served at /metrics). */
static void register_metrics(notifier *nf) {
  kpi_metrics *m = nf->metrics;
  nf->m.consumed = kpi_metrics_counter(m, "kpi_notifier_alerts_consumed_total", NULL,
                                       "Alert records read from the alerts topic.");
  nf->m.invalid = kpi_metrics_counter(m, "kpi_notifier_alerts_invalid_total", NULL,
                                      "Alert records that could not be decoded (sent to the DLQ).");
  nf->m.queued = kpi_metrics_counter(
      m, "kpi_notifier_notifications_queued_total", NULL,
      "Notification rows newly inserted (one per alert and recipient).");
  nf->m.sent = kpi_metrics_counter(m, "kpi_notifier_sent_total", NULL,
                                   "Mails accepted by the SMTP server.");
  nf->m.sent_rows = kpi_metrics_counter(
      m, "kpi_notifier_notifications_sent_total", NULL,
      "Notification rows delivered (a digest mail carries several).");
  nf->m.failed = kpi_metrics_counter(m, "kpi_notifier_failed_total", NULL,
                                     "Mail attempts that failed (transient and permanent).");
  nf->m.permanent = kpi_metrics_counter(m, "kpi_notifier_rejected_total", NULL,
                                        "Mail attempts refused with a permanent 5xx reply.");
  nf->m.dead = kpi_metrics_counter(m, "kpi_notifier_dead_total", NULL,
                                   "Notification rows given up (state dead).");
  nf->m.dlq_published = kpi_metrics_counter(
      m, "kpi_notifier_dlq_published_total", NULL,
      "Records acknowledged on the alerts dead-letter topic.");
  nf->m.dlq_failed = kpi_metrics_counter(m, "kpi_notifier_dlq_failed_total", NULL,
                                         "Dead letters that could not be published.");
  nf->m.queue_depth = kpi_metrics_gauge(
      m, "kpi_notifier_queue_depth", NULL,
      "Notification rows pending (waiting, due or being retried).");
  nf->m.inflight = kpi_metrics_gauge(m, "kpi_notifier_mails_inflight", NULL,
                                     "Mails handed to SMTP whose outcome is not yet recorded.");
  nf->m.db_up = kpi_metrics_gauge(m, "kpi_notifier_db_up", NULL,
                                  "1 when the database is connected and migrated.");
  nf->m.db_errors = kpi_metrics_counter(
      m, "kpi_notifier_db_errors_total", NULL,
      "Database statements that failed or lost their connection.");
  nf->m.ignored = kpi_metrics_counter(
      m, "kpi_notifier_alert_fields_ignored_total", NULL,
      "Alert records whose own recipients or link differed from the catalog's (ignored).");
  nf->m.purged = kpi_metrics_counter(
      m, "kpi_notifier_notifications_purged_total", NULL,
      "Delivered notification rows deleted after the retention age.");
  nf->m.relay_up = kpi_metrics_gauge(
      m, "kpi_notifier_relay_up", NULL,
      "1 while the SMTP relay is taken to answer, 0 while it is down (nothing is claimed; it is "
      "probed).");
  nf->m.relay_deferred = kpi_metrics_counter(
      m, "kpi_notifier_relay_deferred_total", NULL,
      "Mails given back because the relay failed (their attempts are not counted).");
  nf->m.relay_probes = kpi_metrics_counter(m, "kpi_notifier_relay_probes_total", NULL,
                                           "Probes of a relay taken to be down.");
  nf->m.claims = kpi_metrics_counter(m, "kpi_notifier_claims_total", NULL,
                                     "Claim statements that took rows.");
  nf->m.queue_oldest = kpi_metrics_gauge(
      m, "kpi_notifier_queue_oldest_seconds", NULL,
      "Age of the oldest pending notification row (refreshed every 5 s).");
  nf->m.expired = kpi_metrics_counter(
      m, "kpi_notifier_expired_total", NULL,
      "Rows given up after the queue lifetime (KPI_NOTIFY_MAX_AGE).");
  nf->m.consumer_lag = kpi_metrics_gauge(
      m, "kpi_notifier_consumer_lag", NULL,
      "Alert records in assigned partitions not yet committed (statistics, every 5 s).");
  nf->m.send_seconds = kpi_metrics_histogram(
      m, "kpi_notifier_send_duration_seconds", NULL,
      "Time from handing a mail to the SMTP client to the server's final reply.", SEND_BUCKETS,
      sizeof(SEND_BUCKETS) / sizeof(SEND_BUCKETS[0]));
}

/* Shutdown --------------------------------------------------------------------------------- */

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Closes everything: SMTP first (cancelled sends give their rows back to the lease), then the
 * dead letters still queued (flushed, then purged, so that every delivery callback has run
 * before the batches they point to are released), the database (queued queries report
 * "outcome unknown", which now just releases), Kafka, HTTP and every handle. The drain's own
 * handles are closed by kpi_shutdown after this. */
static void on_shutdown_drained(kpi_shutdown *sd) {
  notifier *nf = sd->data;
  nf->stopping = true;
  nf_purge_stop(nf);
  nf_queue_stop(nf);
  nf_consume_stop(nf);
  nf_send_close(nf);
  nf_dlq_flush(nf);
  if (nf->pg) {
    kpi_pgasync_close(nf->pg, NULL, NULL);
    nf->pg = NULL;
  }
  if (nf->pg_sent) {
    kpi_pgasync_close(nf->pg_sent, NULL, NULL);
    nf->pg_sent = NULL;
  }
  nf_consume_close(nf);
  nf_dlq_close(nf);
  if (nf->http_inited) kpi_http_server_close(&nf->http, NULL);
  nf->http_inited = false;
  nf_queue_close(nf);
  nf_purge_close(nf);
  close_handle((uv_handle_t *)&nf->migrate_timer);
  kpi_log(KPI_LOG_INFO, "stopped", "notifier stopped");
}

static bool on_shutdown_is_drained(kpi_shutdown *sd) {
  notifier *nf = sd->data;
  return nf_consume_idle(nf) && nf_send_idle(nf) && nf_dlq_pending(nf) == 0;
}

/* KPI_NOTIFY_DRAIN_TIMEOUT_MS passed, or a second signal came: stop with what is in flight. */
static void on_shutdown_expired(kpi_shutdown *sd) {
  notifier *nf = sd->data;
  if (!on_shutdown_is_drained(sd))
    kpi_log(KPI_LOG_WARN, "drain_timeout",
            "stopping with %zu mails in flight (batch %s, claim %s, %d Kafka messages queued); "
            "leased rows become due again when the lease ends",
            nf->mails_inflight, nf_consume_idle(nf) ? "done" : "pending",
            nf->claim_inflight ? "pending" : "done", nf_dlq_pending(nf));
  kpi_shutdown_drained(sd);
}

/* SIGHUP: reload the catalog, which alone names the recipients of each alert (its measure's
 * owners' mailboxes and watchers) and, without KPI_NOTIFY_DASHBOARD_URL, the link base. The
 * catalog is only read synchronously (an alert turned into rows, a mail composed), so swapping
 * it here is safe; a broken file keeps the old one. Rows already queued keep their
 * recipients; links follow the catalog in force when the mail is composed. */
static void on_shutdown_reload(kpi_shutdown *sd) {
  notifier *nf = sd->data;
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

/* SIGTERM or SIGINT: stop claiming, reading and housekeeping; let in-flight work finish within
 * KPI_NOTIFY_DRAIN_TIMEOUT_MS. A second signal stops at once. */
static void on_shutdown_begin(kpi_shutdown *sd) {
  notifier *nf = sd->data;
  kpi_log(KPI_LOG_INFO, "draining", "finishing in-flight work");
  nf_send_stop(nf);
  nf_queue_stop(nf);
  nf_purge_stop(nf);
  uv_timer_stop(&nf->migrate_timer);
}

static const kpi_shutdown_ops shutdown_ops = {.on_begin = on_shutdown_begin,
                                              .on_reload = on_shutdown_reload,
                                              .on_expired = on_shutdown_expired,
                                              .is_drained = on_shutdown_is_drained,
                                              .on_drained = on_shutdown_drained};

/* Start ------------------------------------------------------------------------------------ */

/* What start-up reads before any handle exists. */
typedef struct {
  kpi_smtp_config smtp;
  char smtp_url_log[512];
  const char *catalog_path;
  char host[128];
  int port;
} start_config;

/* Configuration, catalog, topics, SMTP settings, listen address and metrics. Returns 0, or -1
 * after logging why. */
static int load_config(notifier *nf, start_config *sc) {
  char err[512];
  if (nf_config_load(&nf->cfg, err, sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return -1;
  }
  sc->catalog_path = kpi_env_str("KPI_CATALOG", "config/catalog.json");
  nf->cat = kpi_catalog_load(sc->catalog_path, err, sizeof(err));
  if (!nf->cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    return -1;
  }
  if (kpi_topics_from_env(nf->topics, err, sizeof(err)) != 0 ||
      smtp_config(nf, &sc->smtp, sc->smtp_url_log, sizeof(sc->smtp_url_log), err,
                  sizeof(err)) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return -1;
  }
  if (kpi_env_split_hostport(nf->cfg.listen, sc->host, sizeof(sc->host), &sc->port) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "KPI_NOTIFIER_LISTEN: expected host:port");
    return -1;
  }
  nf->metrics = kpi_metrics_new();
  if (!nf->metrics) return -1;
  register_metrics(nf);
  return 0;
}

/* Every timer and signal handle of the service, so that on_shutdown_drained may close them all
 * whatever fails later. */
static void init_handles(notifier *nf) {
  uv_timer_init(nf->loop, &nf->migrate_timer);
  nf->migrate_timer.data = nf;
  kpi_shutdown_init(nf->loop, &nf->shutdown, &shutdown_ops, (uint64_t)nf->cfg.drain_timeout_ms,
                    nf);
  kpi_shutdown_start(&nf->shutdown);
  nf_consume_init(nf);
  nf_send_init(nf);
  nf_queue_init(nf);
  nf_purge_init(nf);
}

/* SMTP, PostgreSQL and Kafka. Returns 0, or after logging why -2 (a Kafka client
 * configuration refused: bad configuration) or -1. */
static int clients_start(notifier *nf, const kpi_smtp_config *sc) {
  char err[512];
  nf->smtp = kpi_smtp_new(nf->loop, sc, err, sizeof(err));
  if (!nf->smtp) {
    /* The URL and the connection count were checked by load_config (exit 2): what is left
     * (curl, threads, memory) is a runtime failure at start. */
    kpi_log(KPI_LOG_ERROR, "smtp_init_failed", "%s", err);
    return -1;
  }
  nf->conninfo = strdup(kpi_pg_conninfo());
  nf->pg = kpi_pgasync_new(nf->loop, nf->conninfo, on_pg_state, nf, err, sizeof(err));
  /* The batched "sent" outcomes have a connection of their own (nf_send.c, sent_flush). */
  if (nf->conninfo && nf->pg)
    nf->pg_sent = kpi_pgasync_new(nf->loop, nf->conninfo, NULL, NULL, err, sizeof(err));
  if (!nf->conninfo || !nf->pg || !nf->pg_sent) {
    kpi_log(KPI_LOG_ERROR, "db_init_failed", "%s", err);
    return -1;
  }
  int rc = nf_dlq_start(nf, err, sizeof(err));
  if (rc == 0) rc = nf_consume_start(nf, err, sizeof(err));
  if (rc != 0) {
    kpi_log(KPI_LOG_ERROR, "kafka_init_failed", "%s", err);
    return rc;
  }
  return 0;
}

int nf_service_start(notifier *nf) {
  start_config sc;
  if (load_config(nf, &sc) != 0) return KPI_EXIT_CONFIG;
  init_handles(nf);
  int rc = http_start(nf, sc.host, sc.port) != 0 ? -1 : clients_start(nf, &sc.smtp);
  if (rc != 0) {
    /* Start-up failed after handles existed: close them through the normal path. */
    kpi_shutdown_drained(&nf->shutdown);
    uv_run(nf->loop, UV_RUN_DEFAULT);
    return rc == -2 ? KPI_EXIT_CONFIG : KPI_EXIT_START;
  }
  kpi_log(KPI_LOG_INFO, "started",
          "listening on %s:%d; SMTP %s (%d connections); from %s; group wait %lld ms; catalog %s "
          "(%zu measures); queue lifetime %s",
          sc.host, kpi_http_server_port(&nf->http), sc.smtp_url_log, nf->smtp_connections,
          nf->cfg.from, (long long)nf->cfg.group_wait_ms, sc.catalog_path, nf->cat->n_measures,
          nf->cfg.max_age_text);
  return 0;
}

void nf_service_free(notifier *nf) {
  int lc = uv_loop_close(nf->loop);
  if (lc != 0) kpi_log(KPI_LOG_WARN, "loop_not_closed", "%s", uv_strerror(lc));
  kpi_metrics_free(nf->metrics);
  kpi_catalog_free(nf->cat);
  free(nf->conninfo);
  free(nf);
}
