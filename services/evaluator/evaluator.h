/* evaluator.h: the evaluator's context and the functions its files share (consumer, database
 * transactions, outbox publisher, read API). Everything runs on one libuv loop. */
#ifndef KPI_EVALUATOR_H
#define KPI_EVALUATOR_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kpi_attainment.h"
#include "kpi_buf.h"
#include "kpi_catalog.h"
#include "kpi_codec.h"
#include "kpi_http.h"
#include "kpi_kafka.h"
#include "kpi_metrics.h"
#include "kpi_pgasync.h"

/* One decoded measurement waiting for its transaction. */
typedef struct {
  char event_id[KPI_UUID_STRLEN + 1];
  char measure_id[KPI_ID_MAX + 1];
  char department[KPI_ID_MAX + 1];
  char unit[32];
  int64_t observed_ms;
  int64_t received_ms;
  kpi_day observed_day;
  double value;
  kpi_component component;
  char *note; /* malloc'd or NULL */
  int32_t partition;
  int64_t offset;
  /* The record as read (key then value) in the batch's raw arena, for its DLQ copy should the
   * database refuse it. */
  size_t raw_off;
  uint32_t key_len, val_len;
  bool poison; /* sent to the DLQ: no longer written */
} ev_row;

/* Rows [lo, hi) of a batch. */
typedef struct {
  size_t lo, hi;
} ev_range;

typedef struct {
  int32_t partition;
  int64_t next_offset;
} ev_offset;

/* Records pulled from Kafka, written by one transaction. */
typedef struct {
  ev_row *rows;
  size_t n_rows, cap_rows;
  ev_offset *offs; /* next offset per partition, DLQ'd records included */
  size_t n_offs, cap_offs;
  size_t n_records; /* all records, decodable or not */
  char *raw;        /* keys and values of the rows (ev_row.raw_off) */
  size_t raw_len, raw_cap;
  /* Poison search. When the batch's transaction fails with a data error (SQLSTATE class 22
   * or 23) the batch is split: TODO is a stack of row ranges still to be written, each in a
   * transaction of its own without offsets (top = next); a range that fails is halved, a
   * single row that fails is poison. Once TODO is empty the remaining rows are written once
   * more (no-ops by then) together with the offsets. */
  bool bisecting;
  ev_range *todo;
  size_t n_todo, cap_todo;
  size_t n_poison;
  size_t round_poison; /* n_poison when the current search round began */
} ev_batch;

void ev_batch_clear(ev_batch *b);
void ev_batch_free(ev_batch *b);
/* Forgets the records of the partitions in PARTS (revoked): their new owner re-reads them. */
void ev_batch_drop_partitions(ev_batch *b, const rd_kafka_topic_partition_list_t *parts);

/* An outbox row committed and waiting for its delivery report. */
typedef struct ev_outmsg {
  struct ev_outmsg *next;
  int64_t id;
} ev_outmsg;

typedef struct evaluator {
  uv_loop_t *loop;
  kpi_catalog *cat;
  char catalog_path[512];

  /* configuration */
  char group[128];
  kpi_topic_spec topics[KPI_TOPIC_COUNT];
  int batch_max;
  double lag_ratio;
  int repeat_days;
  int64_t sweep_ms;
  bool fixed_date;
  kpi_day eval_date;
  bool crash_after_commit;
  int lose_commits; /* test hook: successful COMMITs with alerts still to report as lost */
  char listen_host[64];
  int listen_port;
  int api_max_pending; /* read API queries queued or running on API; beyond: 503 */
  int outbox_retention_days;
  int64_t drain_timeout_ms;

  /* Kafka */
  rd_kafka_t *consumer;
  rd_kafka_t *producer;
  kpi_kafka_waker cwake;
  kpi_kafka_waker pwake;
  rd_kafka_topic_partition_list_t *want_assign; /* assignment waiting for its offsets */
  unsigned assign_gen;
  bool assign_busy;
  bool broker_up;
  int64_t consumer_lag;
  int dlq_inflight;

  /* PostgreSQL: DB runs the batch and sweep transactions, one at a time; AUX everything else
   * (offsets on assignment, outbox bookkeeping, the read API), so nothing of it can slip
   * between a transaction's BEGIN and COMMIT. */
  kpi_pgasync *db;
  kpi_pgasync *aux;
  /* The read API's own connection: a burst of reads queues here, never in front of AUX's
   * offset reads after a rebalance. At most api_max_pending queries wait on it. */
  kpi_pgasync *api;
  int api_pending;

  /* transactions */
  ev_batch batches[2];
  ev_batch *pending;  /* filling from Kafka */
  ev_batch *inflight; /* being written; NULL when none */
  bool txn_busy;
  bool sweep_due;
  /* After a data error in the sweep, the sweep runs one measure per transaction, so that the
   * one measure whose figures PostgreSQL refuses is skipped and every other is evaluated. */
  bool sweep_split;
  size_t sweep_next;
  bool reload_due;
  int backoff_ms;
  uv_timer_t retry_timer;
  uv_timer_t sweep_timer;
  void *txn; /* ev_txn state, private to txn.c */

  /* outbox */
  ev_outmsg *outbox_inflight;
  size_t n_outbox_inflight;
  int64_t *sent_ids;
  size_t n_sent, cap_sent;
  size_t n_marking; /* ids of sent_ids[0..n_marking) are being marked */
  bool mark_busy;
  void (*on_marked)(struct evaluator *ev); /* shutdown waits for the last mark */
  bool rescan_due;
  bool rescan_busy;
  bool purge_busy;

  /* read API and metrics */
  kpi_http_server http;
  bool http_inited;
  kpi_metrics *metrics;
  kpi_metric *m_records, *m_batches, *m_rows, *m_dlq, *m_commit, *m_txn_fail, *m_outbox,
      *m_alerts, *m_lag, *m_sweeps, *m_assign, *m_api_rejected, *m_purged;

  /* lifecycle */
  uv_signal_t sig_term, sig_int, sig_hup;
  bool stopping;
  bool finishing;
  bool closed;
  int exit_code;
  int open_handles;
} evaluator;

/* The evaluation date: KPI_EVAL_DATE when set, else today in Japan. */
kpi_day ev_today(const evaluator *ev);

/* main.c: leaves the group, flushes the producer and closes; once, when stopping and idle. */
void ev_finish(evaluator *ev);

/* kafka.c */
int ev_kafka_start(evaluator *ev, char *errstr, size_t errstr_size);
/* Pulls records into the pending batch while it has room and we are not stopping. */
void ev_kafka_pull(evaluator *ev);
/* Sends row R of batch B (its original key and value) to the DLQ with REASON in kpi-error, and
 * marks it poison; the batch's offsets are stored only once every DLQ copy is acknowledged
 * (dlq_inflight back to 0). Exits the process when the producer refuses the copy, as for
 * records that fail to decode. */
void ev_dlq_row(evaluator *ev, ev_batch *b, ev_row *r, const char *reason);
/* Publishes committed outbox rows (id, key, payload); takes nothing. */
void ev_outbox_publish(evaluator *ev, int64_t id, const char *topic, const char *key,
                       const char *payload);
/* Re-reads unsent outbox rows and publishes those not already in flight. */
void ev_outbox_rescan(evaluator *ev);
void ev_offsets_fetch(evaluator *ev);
void ev_kafka_stop(evaluator *ev);

/* txn.c */
/* Starts the next transaction if none runs and there is work (catalog mirror, a batch, the
 * sweep); schedules a retry with backoff after failures. Call after every state change. */
void ev_kick(evaluator *ev);
void ev_txn_init(evaluator *ev);
void ev_txn_free(evaluator *ev);
/* Blocking, at start: connects, migrates, mirrors the catalog. Returns 0 or -1 (logged). */
int ev_db_prepare(evaluator *ev, const char *conninfo);

/* Sleeps MS milliseconds during start-up (waiting for the database or the broker), before the
 * loop can deliver signals; returns true as soon as SIGTERM or SIGINT asked the process to stop,
 * so that a service whose dependencies are missing still stops at once with status 0. */
bool ev_startup_wait(unsigned ms);
/* Deletes outbox rows sent more than outbox_retention_days ago, in bounded batches, on AUX. */
void ev_outbox_purge(evaluator *ev);
/* Marks the delivered outbox rows (sent_ids) as sent, on AUX. */
void ev_outbox_mark_flush(evaluator *ev);

/* api.c */
void ev_on_http_request(kpi_http_request *req, void *opaque);
/* The read API's resources, for kpi_http_server_set_routes. */
#define EV_HTTP_N_ROUTES 5
extern const kpi_http_route ev_http_routes[EV_HTTP_N_ROUTES];
int ev_metrics_init(evaluator *ev);

#endif
