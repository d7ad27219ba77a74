/* notifier.h: the kpi-notifier service context shared by its consumer, sender and main. */
#ifndef KPI_NOTIFIER_H
#define KPI_NOTIFIER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "kpi_catalog.h"
#include "kpi_http.h"
#include "kpi_kafka.h"
#include "kpi_mail.h"
#include "kpi_metrics.h"
#include "kpi_pgasync.h"
#include "kpi_smtp.h"

/* Configuration, read once from the environment (docs/notifier.md has the table). */
typedef struct nf_config {
  char from[KPI_MAIL_ADDR_MAX + 1]; /* KPI_MAIL_FROM */
  const char *from_name;            /* KPI_MAIL_FROM_NAME */
  const char *group;                /* KPI_NOTIFIER_GROUP */
  const char *listen;               /* KPI_NOTIFIER_LISTEN */
  int64_t group_wait_ms;            /* KPI_NOTIFY_GROUP_WAIT_MS */
  int64_t retry_base_ms;            /* KPI_NOTIFY_RETRY_BASE_MS */
  int64_t retry_max_ms;             /* KPI_NOTIFY_RETRY_MAX_MS */
  int64_t max_attempts;             /* KPI_NOTIFY_MAX_ATTEMPTS */
  int64_t max_age_ms;               /* KPI_NOTIFY_MAX_AGE: queue lifetime of a row */
  const char *max_age_text;         /* KPI_NOTIFY_MAX_AGE as written, for reasons and logs */
  int64_t probe_base_ms;            /* KPI_SMTP_PROBE_BASE_MS: first relay probe delay */
  int64_t probe_max_ms;             /* KPI_SMTP_PROBE_MAX_MS: relay probe delay cap */
  int64_t claim_rows;               /* KPI_NOTIFY_BATCH: rows per claim */
  int64_t digest_max;               /* KPI_NOTIFY_DIGEST_MAX: alerts per mail */
  int64_t lease_ms;                 /* KPI_NOTIFY_LEASE_MS */
  int64_t poll_ms;                  /* KPI_NOTIFY_POLL_MS */
  int64_t drain_timeout_ms;         /* KPI_NOTIFY_DRAIN_TIMEOUT_MS */
  int64_t consume_batch;            /* KPI_NOTIFY_CONSUME_BATCH */
  const char *dashboard_url;        /* KPI_NOTIFY_DASHBOARD_URL, NULL: the catalog's */
  int64_t retention_days;           /* KPI_NOTIFY_RETENTION_DAYS, 0: keep sent rows */
  int64_t purge_interval_ms;        /* KPI_NOTIFY_PURGE_INTERVAL_MS */
  int64_t purge_batch;              /* KPI_NOTIFY_PURGE_BATCH: rows per DELETE */
} nf_config;

typedef struct nf_batch nf_batch;

typedef struct notifier {
  uv_loop_t *loop;
  nf_config cfg;
  kpi_catalog *cat;
  kpi_topic_spec topics[KPI_TOPIC_COUNT];

  rd_kafka_t *consumer;
  kpi_kafka_waker consumer_waker;
  rd_kafka_t *producer; /* dead letters */
  kpi_kafka_waker producer_waker;

  kpi_pgasync *pg;
  char *conninfo;
  bool db_ready;       /* connected and migrated */
  bool migrated;
  uv_timer_t migrate_timer;

  kpi_smtp *smtp;
  int smtp_connections;

  kpi_http_server http;
  kpi_metrics *metrics;
  struct {
    kpi_metric *consumed, *invalid, *queued, *sent, *sent_rows, *failed, *permanent, *dead;
    kpi_metric *dlq_published, *dlq_failed, *queue_depth, *inflight, *send_seconds, *db_up;
    kpi_metric *db_errors, *ignored, *purged;
    kpi_metric *relay_up, *relay_deferred, *relay_probes, *queue_oldest, *expired;
  } m;

  /* Consumer side: at most one batch of records in flight (insert + dead letters). */
  nf_batch *batch;
  uv_timer_t consume_retry;
  uint64_t consume_backoff_ms;

  /* Sender side. */
  uv_timer_t claim_timer;
  uv_timer_t depth_timer;
  bool claim_inflight;
  bool claim_again;    /* the last claim was full: more rows are due */
  size_t mails_inflight;   /* mails handed to SMTP and not yet recorded in the database */
  size_t updates_waiting;  /* outcomes waiting to be written (database down) */
  uv_timer_t update_retry;
  struct nf_mail *retry_head; /* outcomes whose UPDATE failed, retried on update_retry */
  size_t depth_inflight;
  bool expire_inflight;

  /* The relay's state (nf_send.c, docs/notifier.md "Relay state"). While it is down nothing
   * is claimed and the relay is probed with its own backoff; mails it failed are given back
   * due at once, their attempts unchanged. */
  bool relay_up;              /* assumed up at start: the first mail or probe tells */
  bool probe_inflight;
  int64_t relay_backoff_n;    /* failed probes and down transitions since a mail got through */
  uint64_t relay_down_since;  /* uv_now when it went down */
  uv_timer_t relay_timer;     /* next probe */
  /* Retention: an unref'd timer deletes delivered rows past their age (nf_purge.c). */
  uv_timer_t purge_timer;
  bool purge_inflight;

  /* Shutdown. */
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t drain_timer;
  bool draining;   /* SIGTERM: no new work, in-flight work finishes */
  bool stopping;   /* closing everything: callbacks only release */
  bool http_inited;
  uint64_t drain_deadline;
  int exit_code;
  int closing_handles;
} notifier;

/* nf_consume.c: alerts topic -> notifications rows -> offsets. */
int nf_consume_start(notifier *nf, char *errstr, size_t errstr_size);
void nf_consume_kick(notifier *nf);   /* serve the consumer queue (db became ready...) */
bool nf_consume_idle(const notifier *nf);
void on_kafka_producer_ready(kpi_kafka_waker *w);

/* Publishes one dead letter: VALUE with header kpi-error = REASON (and the extra header
 * pairs in HDRS, NULL-terminated name/value list). ON_DONE(nf, ok, arg) runs after the
 * broker acknowledged (ok=1) or gave up (ok=0); NULL for fire-and-forget. Returns 0 or -1
 * (ON_DONE then never runs). */
typedef void (*nf_dlq_cb)(notifier *nf, int ok, void *arg);
int nf_dlq_publish(notifier *nf, const char *key, size_t key_len, const void *value,
                   size_t value_len, const char *reason, const char *const *hdrs,
                   nf_dlq_cb on_done, void *arg);

/* nf_send.c: claim due rows -> digest mails -> SMTP -> record the outcome. */
void nf_send_init(notifier *nf);
void nf_send_kick(notifier *nf);      /* claim now if there is room */
bool nf_send_idle(const notifier *nf);
void nf_send_stop(notifier *nf);      /* stops the timers */
void nf_send_abandon(notifier *nf);   /* at exit: drops outcomes still waiting to be written */
void nf_send_refresh_depth(notifier *nf);

/* The base of the dashboard links in mails: KPI_NOTIFY_DASHBOARD_URL, else the catalog's
 * plan.dashboard_url, else NULL (no link). Never taken from an alert record. */
const char *nf_dashboard_url(const notifier *nf);

/* nf_purge.c: deletes sent rows older than KPI_NOTIFY_RETENTION_DAYS, in bounded batches. */
void nf_purge_init(notifier *nf);
void nf_purge_stop(notifier *nf);

/* Backoff before attempt ATTEMPTS+1, exponential from BASE_MS to MAX_MS with jitter. */
int64_t nf_backoff_ms(int64_t attempts, int64_t base_ms, int64_t max_ms);

#endif
