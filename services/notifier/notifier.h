/* notifier.h: the kpi-notifier service context and the functions its files offer each other.
 *
 * Who calls whom (no two files call each other both ways; docs/notifier.md "Source layout"):
 *   main.c -> nf_service.c -> nf_consume.c -> nf_send.c -> nf_dlq.c
 *                          -> nf_queue.c ------------------> nf_dlq.c
 *                          -> nf_purge.c
 * and every file may call the pure rules of nf_rules.c, which call nothing of the service. */
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
#include "kpi_shutdown.h"
#include "kpi_smtp.h"
#include "nf_rules.h"

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
  int64_t prefetch;                 /* KPI_NOTIFY_PREFETCH: most mails claimed ahead */
  int64_t digest_max;               /* KPI_NOTIFY_DIGEST_MAX: alerts per mail */
  int64_t lease_ms;                 /* KPI_NOTIFY_LEASE_MS */
  int64_t poll_ms;                  /* KPI_NOTIFY_POLL_MS */
  int64_t drain_timeout_ms;         /* KPI_NOTIFY_DRAIN_TIMEOUT_MS */
  int64_t consume_batch;            /* KPI_NOTIFY_CONSUME_BATCH */
  const char *dashboard_url;        /* KPI_NOTIFY_DASHBOARD_URL, NULL: the catalog's */
  char report_link_base[512];       /* KPI_REPORT_BASE_URL + "/measures", "": not set */
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
  bool consumer_waker_on; /* consumer_waker initialised: close it at shutdown */
  rd_kafka_t *producer; /* dead letters (nf_dlq.c) */
  kpi_kafka_waker producer_waker;
  bool producer_waker_on;

  kpi_pgasync *pg;
  /* The batched "sent" outcomes only (nf_send.c, sent_flush): on their own connection they
   * never wait behind a claim, so outcomes are written while the next claim runs and the
   * mails whose outcome is unwritten (the crash duplicate window) stay few. */
  kpi_pgasync *pg_sent;
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
    kpi_metric *consumer_lag, *claims;
  } m;

  /* Consumer side: at most one batch of records in flight (insert + dead letters). */
  nf_batch *batch;
  uv_timer_t consume_retry;
  uint64_t consume_backoff_ms;

  /* Sender side. */
  uv_timer_t claim_timer;
  uv_timer_t depth_timer;
  bool claim_inflight;
  bool claim_again;    /* the last claim returned rows: more are probably due */
  size_t mails_inflight;   /* mails handed to SMTP and not yet recorded in the database */
  size_t mails_smtp;       /* of those, mails whose SMTP transaction has not finished */
  /* Claimed ahead of the connections (docs/notifier.md "Performance"): mails whose rows are
   * leased and copied but not yet composed, handed to SMTP as slots free up (nf_send.c feed). */
  struct nf_mail *ready_head, *ready_tail;
  size_t mails_ready;
  size_t claim_ahead;      /* mails the next claim may take beyond the send capacity */
  size_t claim_asked;      /* recipients the running claim asked for */
  uint64_t claim_sent_at;  /* uv_now when the running claim was sent */
  int64_t ready_hold_ms;   /* nf_ready_hold_ms of the lease and SMTP timeout; -1: no claim-ahead */
  size_t updates_waiting;  /* outcomes waiting to be written (database down) */
  uv_timer_t update_retry;
  struct nf_mail *retry_head; /* outcomes whose UPDATE failed, retried on update_retry */
  struct nf_mail *sent_head;  /* sent mails whose rows wait for the next batched UPDATE */
  struct nf_mail *sent_tail;
  bool sent_inflight;         /* a batched SQL_SENT_BATCH is running */
  size_t sent_waiting;        /* mails in sent_head */
  uv_timer_t sent_timer;      /* writes a partial batch NF_SENT_BATCH_WAIT_MS after its first mail */
  size_t depth_inflight;
  bool expire_inflight;

  /* The relay's state (rules in nf_rules.c, acted on in nf_send.c; docs/notifier.md "Relay
   * state"). While it is down nothing is claimed and the relay is probed with its own
   * backoff; mails it failed are given back due at once, their attempts unchanged. */
  nf_relay relay;
  uv_timer_t relay_timer;     /* next probe */
  /* Retention: an unref'd timer deletes delivered rows past their age (nf_purge.c). */
  uv_timer_t purge_timer;
  bool purge_inflight;

  /* Shutdown: signals, the drain deadline and the exit code; shutdown.stopping from SIGTERM
   * on (no new work, in-flight work finishes). */
  kpi_shutdown shutdown;
  bool stopping;   /* closing everything: callbacks only release */
  bool http_inited;
} notifier;

/* nf_service.c: configuration, start-up, health and metrics, signals, the drain. */

/* Reads the configuration, loads the catalog and starts every part of the service on
 * NF->loop (NF zeroed, with loop set). Returns 0, or the process's exit code after logging
 * why: 2 when the configuration or catalog is invalid, 1 when a part failed to start (its
 * handles are then closed and the loop run until they are). */
/* Reads the notifier's environment (docs/notifier.md) into C, once at start. Returns 0, or -1
 * with ERR naming the variable at fault. */
int nf_config_load(nf_config *c, char *err, size_t errsz);
int nf_service_start(notifier *nf);
/* After uv_run returned (or nf_service_start failed): closes the loop and frees NF. */
void nf_service_free(notifier *nf);

/* nf_consume.c: alerts topic -> notifications rows -> offsets. */
void nf_consume_init(notifier *nf);   /* the retry timer; before anything can fail */
/* Creates the consumer (after nf_dlq_start: it makes sure the topics exist through the
 * producer) and subscribes. Returns 0; -2 with ERRSTR when the client configuration is refused
 * (a KPI_KAFKA_PROP_* librdkafka rejects or one naming a fixed property: bad configuration,
 * docs/architecture.md "Start and stop"); or -1 with ERRSTR. */
int nf_consume_start(notifier *nf, char *errstr, size_t errstr_size);
void nf_consume_kick(notifier *nf);   /* serve the consumer queue (db became ready...) */
bool nf_consume_idle(const notifier *nf);
/* The consumer lag of TOPIC in a librdkafka statistics document (JSON of LEN bytes): the sum,
 * over the partitions assigned to us, of records not yet committed (librdkafka's
 * "consumer_lag"; unknown partitions count 0). Returns -1 when JSON is not a statistics
 * document. Pure: unit-tested in tests/unit/test_notifier_lag.c. */
int64_t nf_consume_stats_lag(const char *json, size_t len, const char *topic);
void nf_consume_stop(notifier *nf);   /* stops the retry timer */
/* At exit, after the database was closed: closes the consumer and its handles. */
void nf_consume_close(notifier *nf);

/* nf_dlq.c: the dead-letter producer (kpi.alerts.dlq.v1). */
/* Creates the producer and its waker. Returns 0, -2 with ERRSTR when the client configuration
 * is refused (as for nf_consume_start), or -1 with ERRSTR. */
int nf_dlq_start(notifier *nf, char *errstr, size_t errstr_size);
/* A librdkafka configuration for this service (shared error callback), NULL with ERRSTR. */
rd_kafka_conf_t *nf_kafka_conf(const kpi_kafka_prop *defaults, const kpi_kafka_prop *fixed,
                               char *errstr, size_t errstr_size);

/* Publishes one dead letter: VALUE with header kpi-error = REASON (and the extra header
 * pairs in HDRS, NULL-terminated name/value list). ON_DONE(nf, ok, arg) runs after the
 * broker acknowledged (ok=1) or gave up (ok=0), always from a later loop callback (the
 * producer's waker); NULL for fire-and-forget. Returns 0 or -1 (ON_DONE then never runs). */
typedef void (*nf_dlq_cb)(notifier *nf, int ok, void *arg);
int nf_dlq_publish(notifier *nf, const char *key, size_t key_len, const void *value,
                   size_t value_len, const char *reason, const char *const *hdrs,
                   nf_dlq_cb on_done, void *arg);
/* For every row of RES (columns id, state, measure_id, payload, attempts, and reason when
 * REASON is NULL) whose state is dead: counts, logs and publishes its dead letter. */
void nf_dlq_publish_dead(notifier *nf, const PGresult *res, const char *reason);
/* Dead letters queued or in flight. */
int nf_dlq_pending(const notifier *nf);
/* At exit: gives queued dead letters a few seconds, then purges them so that every delivery
 * callback has run. */
void nf_dlq_flush(notifier *nf);
void nf_dlq_close(notifier *nf);

/* nf_send.c: claim due rows -> digest mails -> SMTP -> record the outcome; the relay state. */
void nf_send_init(notifier *nf);
void nf_send_kick(notifier *nf);      /* claim now if the last claim was full and there is room */
bool nf_send_idle(const notifier *nf);
void nf_send_stop(notifier *nf);      /* draining: stops claiming and probing */
/* At exit: closes the SMTP client (cancelled sends give their rows back), drops outcomes
 * still waiting to be written, closes the sender's handles. */
void nf_send_close(notifier *nf);

/* nf_queue.c: the queue's gauges (depth, oldest row) and its lifetime (expiry). */
void nf_queue_init(notifier *nf);
void nf_queue_refresh_depth(notifier *nf);
void nf_queue_stop(notifier *nf);
void nf_queue_close(notifier *nf);

/* nf_purge.c: deletes sent rows older than KPI_NOTIFY_RETENTION_DAYS, in bounded batches. */
void nf_purge_init(notifier *nf);
void nf_purge_stop(notifier *nf);
void nf_purge_close(notifier *nf);

/* The base of the links in mails (nf_dashboard_url_pick): the report's measure pages when
 * KPI_REPORT_BASE_URL is set, else KPI_NOTIFY_DASHBOARD_URL, else the catalog in force. */
static inline const char *nf_dashboard_url(const notifier *nf) {
  return nf_dashboard_url_pick(nf->cfg.report_link_base, nf->cfg.dashboard_url, nf->cat);
}

#endif
