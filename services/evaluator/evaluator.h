/* evaluator.h: the evaluator's context, grouped by the module that owns each part, and the
 * functions its modules share. Everything runs on one libuv loop.
 *
 * Modules and who may call whom (tools/check_call_cycles.sh checks that no two files call each
 * other both ways):
 *   main.c        thin entry point: ev_config_load, ev_service_start, uv_run, ev_service_free.
 *   ev_service.c  start-up, signals, closing every handle (the only caller of *_init/_close).
 *   ev_sched.c    ev_kick, the retry and sweep timers, the database state callback: the one
 *                 module that reacts to "something changed"; every other module reports up to
 *                 it only through callbacks it registered (ev_txn_done_cb, ev_mirror_done_cb,
 *                 the Kafka hooks, ev_outbox.on_marked), never by calling it.
 *   ev_drain.c    SIGTERM drain: the deadline (kpi_shutdown), ev_finish, kpi_shutdown_drained.
 *   ev_txn.c      one transaction (a batch, a poison-search range or the sweep) on DB.
 *   ev_mirror.c   the catalog mirror (at start, blocking; on SIGHUP, on DB).
 *   ev_kafka.c    consumer (assignment at stored offsets, records into batches), DLQ producer.
 *   ev_outbox.c   outbox alerts: publish, delivery reports, marking sent, rescan, purge (AUX).
 *   ev_api.c      the read API; ev_metrics.c the metric registry.
 *   ev_ack.c      acknowledgements: their statement and parameters, the latest one of a
 *                 measure read for the reminder decision and the alert record (pure).
 *   ev_params.c   the statements' named array parameters (pure); ev_batch.c the batch
 *                 bookkeeping (pure); ev_poison.c the poison-search range bookkeeping (pure);
 *                 ev_config.c the environment; ev_startup.c the signal-aware waits before the
 *                 loop runs. */
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
#include "kpi_shutdown.h"

typedef struct evaluator evaluator;

/* ---- ev_config.c ---------------------------------------------------------------------- */

/* Everything the evaluator reads from the environment, loaded once at start by
 * ev_config_load (docs/evaluator.md "Configuration"). Read-only afterwards, except
 * lose_commits, the countdown of a test hook. */
typedef struct {
  char catalog_path[512];
  char group[128];
  kpi_topic_spec topics[KPI_TOPIC_COUNT];
  int batch_max;
  bool copy; /* KPI_EVALUATOR_COPY: a batch's measurements by COPY first (ev_txn.c) */
  double lag_ratio;
  int repeat_days;
  int64_t sweep_ms;
  bool fixed_date; /* KPI_EVAL_DATE set: eval_date instead of today */
  kpi_day eval_date;
  bool crash_after_commit; /* test hook (KPI_TEST_HOOKS builds only) */
  int lose_commits; /* test hook: successful COMMITs with alerts still to report as lost */
  char listen_host[64];
  int listen_port;
  int api_max_pending; /* read API queries queued or running on API; beyond: 503 */
  /* KPI_OPERATOR_TOKEN_SHA256: the operator token's digest, which shows mail addresses in
   * GET /v1/measures/{id}/notifications; unset: addresses are never shown. */
  bool operator_set;
  uint8_t operator_sha256[32];
  int outbox_retention_days;
  int64_t drain_timeout_ms;
  kpi_http_config http;
} ev_config;

/* Fills CFG from the environment. Returns 0, or -1 with ERR (or, for the HTTP variables, after
 * kpi_http_config_from_env logged config_invalid itself, ERR then empty). */
int ev_config_load(ev_config *cfg, char *err, size_t errsize);
/* The evaluation date: KPI_EVAL_DATE when set, else today in Japan. */
kpi_day ev_config_today(const ev_config *cfg);

/* ---- ev_batch.c ----------------------------------------------------------------------- */

/* What a row of a batch is: a record type of kpi.measurements.v1 (docs/corrections.md). */
typedef enum {
  EV_ROW_MEASUREMENT = 0, /* a reading; a correction when has_corrects */
  EV_ROW_RETRACTION,
  EV_ROW_ACK
} ev_row_kind;

/* What made an attainment_history row (its `cause` column, docs/evaluator.md). */
typedef enum {
  EV_CAUSE_MEASUREMENT = 0,
  EV_CAUSE_RETRACTION,
  EV_CAUSE_SWEEP,
  EV_CAUSE_CATALOG_RELOAD
} ev_cause;

/* One decoded record waiting for its transaction. For a retraction event_id is its own id,
 * measure_id and department its own; for an acknowledgement note is the note. */
typedef struct {
  ev_row_kind kind;
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
  /* A retraction: the measurement taken back; a correction (has_corrects): corrects.event_id. */
  bool has_corrects;
  char retracts[KPI_UUID_STRLEN + 1];
  char *reason; /* malloc'd: the retraction's reason or corrects.reason; NULL otherwise */
  kpi_day until_day; /* an acknowledgement's `until` */
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
  /* Poison search (ev_poison.c). When the batch's transaction fails with a data error (SQLSTATE
   * class 22 or 23) the batch is split: TODO is a stack of row ranges still to be written, each
   * in a transaction of its own without offsets (top = next); a range that fails is halved, a
   * single row that fails is poison. Once TODO is empty the remaining rows are written once
   * more (no-ops by then) together with the offsets. */
  bool bisecting;
  ev_range *todo;
  size_t n_todo, cap_todo;
  size_t n_poison;
  size_t round_poison; /* n_poison when the current search round began */
  /* The COPY text of the measurement rows among rows [0, copy_upto), built while the batch
   * fills (ev_copy_rows_extend), so that its transaction's COPY starts without building it
   * (docs/evaluator.md "Performance"); emptied whenever rows are dropped. */
  kpi_buf copy;
  size_t copy_upto;
} ev_batch;

void ev_batch_clear(ev_batch *b);
void ev_batch_free(ev_batch *b);
/* A new row at the end of B (uninitialised). Aborts when out of memory: a record that cannot
 * be kept must be re-read after the restart, never skipped. */
ev_row *ev_batch_add_row(ev_batch *b);
/* Removes the last row added (its strings freed). */
void ev_batch_drop_last(ev_batch *b);
/* Records NEXT as PARTITION's next offset unless a larger one is recorded (aborts on OOM). */
void ev_batch_set_offset(ev_batch *b, int32_t partition, int64_t next);
/* Copies the record's key and value into B's raw arena for R's DLQ copy (aborts on OOM). */
void ev_batch_keep_raw(ev_batch *b, ev_row *r, const void *key, size_t key_len,
                       const void *value, size_t value_len);
/* Forgets the records of the partitions in PARTS (revoked): their new owner re-reads them. */
void ev_batch_drop_partitions(ev_batch *b, const rd_kafka_topic_partition_list_t *parts);
/* True when R takes a measurement back: a retraction, or a correction's retraction half. */
bool ev_row_retracts(const ev_row *r);
/* The cause a batch row gives its measure's history row: retraction for ev_row_retracts. */
ev_cause ev_row_cause(const ev_row *r);
/* Two rows of one batch for the same measure: a retraction wins (docs/evaluator.md). */
ev_cause ev_cause_merge(ev_cause a, ev_cause b);
/* The `cause` column's text. */
const char *ev_cause_name(ev_cause c);

/* ---- ev_poison.c: the poison search, pure bookkeeping on ev_batch --------------------- */

/* What the next transaction of B writes: the top range of the search while one runs (no
 * offsets), else every row with the offsets. */
void ev_poison_next_range(const ev_batch *b, size_t *lo, size_t *hi, bool *offsets);
/* True while ranges remain to be written on their own (the offsets wait for them). */
bool ev_poison_searching(const ev_batch *b);
/* Pushes [LO, HI) on B's stack of ranges still to write (aborts on OOM). */
void ev_poison_push(ev_batch *b, size_t lo, size_t hi);
/* The top range committed: the search goes on with the next one. */
void ev_poison_range_done(ev_batch *b);

typedef enum {
  EV_POISON_NOT_IN_ROWS, /* every row was written alone and together they still fail */
  EV_POISON_ROW,         /* the one row written, IDX[0], is poison: DLQ it */
  EV_POISON_SPLIT,       /* the range was halved: both halves pushed, first half on top */
  EV_POISON_EMPTY        /* no live row was written: nothing to refuse, go on */
} ev_poison_verdict;

/* A transaction of B that wrote the live rows IDX[0..N_IDX) of [LO, HI) (with the offsets when
 * OFFSETS) failed with a data error. Updates the search and says what to do. */
ev_poison_verdict ev_poison_on_data_error(ev_batch *b, bool offsets, const size_t *idx,
                                          size_t n_idx, size_t lo, size_t hi);
/* SQLSTATE class 22 (data exception) or 23 (integrity violation): caused by the rows written,
 * not by the database's state, so retrying the same rows fails forever. */
bool ev_sqlstate_is_data_error(const char *sqlstate);

/* ---- ev_params.c: named array parameters of the statements (ev_txn.c's SQL) ----------- */

/* Each statement's parameters as named kpi_buf members, overlaid on V (in $n order) for
 * kpi_pgasync_query. The buffers are kept between transactions for their memory. */
#define EV_INSERT_NPARAMS 14
typedef union {
  struct {
    kpi_buf event_id, measure_id, department; /* also SQL_REUSED's $1..$3 */
    kpi_buf observed_at, observed_day, fiscal_year, value, unit, component, note, received_at,
        partition, offset, corrects;
  };
  kpi_buf v[EV_INSERT_NPARAMS];
} ev_insert_params;

/* SQL_COPY_TOTALS (ev_txn.c, the COPY path): one element per (measure, month, component) of
 * the batch's rows: fiscal year, number of rows and sum of their values. */
#define EV_COPY_TOTALS_NPARAMS 7
typedef union {
  struct {
    kpi_buf measure_id, month, fiscal_year, component, events, total;
    kpi_buf last_day; /* the latest observed_day of the group (migration 009) */
  };
  kpi_buf v[EV_COPY_TOTALS_NPARAMS];
} ev_copy_totals_params;

#define EV_OFFSET_NARRAYS 2 /* $3, $4 of SQL_OFFSETS; $1 group and $2 topic are plain */
typedef union {
  struct {
    kpi_buf partition, next_offset;
  };
  kpi_buf v[EV_OFFSET_NARRAYS];
} ev_offset_params;

#define EV_AGGREGATE_NPARAMS 9
typedef union {
  struct {
    kpi_buf ids, window_from, window_to; /* ids also SQL_LOCK's $1 */
    kpi_buf fiscal_year;    /* $4: of the evaluation date */
    kpi_buf end_at;         /* $5: midnight (Japan) after the evaluation date */
    kpi_buf month_start_at; /* $6: midnight (Japan) at the first day of its month */
    kpi_buf is_ratio;
    kpi_buf month_start; /* $8: that first day as a date */
    kpi_buf day;         /* $9: the evaluation date itself */
  };
  kpi_buf v[EV_AGGREGATE_NPARAMS];
} ev_aggregate_params;

#define EV_ATTAINMENT_NPARAMS 15
typedef union {
  struct {
    kpi_buf measure_id, as_of, value, progress, expected, status, stale, last_observed_at,
        events, alert_state, episode, last_alert_on, reminders;
    kpi_buf catalog_version, noted_catalog_version; /* docs/evaluator.md "Catalog versions" */
  };
  kpi_buf v[EV_ATTAINMENT_NPARAMS];
} ev_attainment_params;

/* The retractions of a batch's rows: retraction records and the retraction halves of
 * corrections (ev_row_retracts). POS: each one's 1-based position among the rows written
 * (t->idx order); M_POS: the same for each measurement row, parallel to ev_insert_params, so
 * that the refusal check knows which measurement came earlier in the batch. */
#define EV_RETRACT_NPARAMS 11
typedef union {
  struct {
    kpi_buf event_id, retracts, measure_id, department, reason, received_at, correction,
        partition, offset; /* SQL_RETRACT_INSERT's $1..$9 */
    kpi_buf pos, m_pos;
  };
  kpi_buf v[EV_RETRACT_NPARAMS];
} ev_retract_params;

#define EV_ACK_NPARAMS 8
typedef union {
  struct {
    kpi_buf event_id, measure_id, department, note, until, received_at, partition, offset;
  };
  kpi_buf v[EV_ACK_NPARAMS];
} ev_ack_params;

#define EV_HISTORY_NPARAMS 9
typedef union {
  struct {
    kpi_buf measure_id, as_of, value, progress, expected, status, stale, catalog_version, cause;
  };
  kpi_buf v[EV_HISTORY_NPARAMS];
} ev_history_params;

#define EV_OUTBOX_NPARAMS 4
typedef union {
  struct {
    kpi_buf alert_id, topic, msg_key, payload;
  };
  kpi_buf v[EV_OUTBOX_NPARAMS];
} ev_outbox_params;

/* On V[0..N): begin every array literal, end them, tell whether any ran out of memory, free. */
void ev_params_begin(kpi_buf *v, int n);
void ev_params_end(kpi_buf *v, int n);
bool ev_params_oom(const kpi_buf *v, int n);
void ev_params_free(kpi_buf *v, int n);
/* VALS[i] = V[i]'s text, for kpi_pgasync_query. Returns VALS. */
const char *const *ev_params_values(const kpi_buf *v, int n, const char **vals);

/* Array elements: a finite double (%.17g) or NULL, a date, an integer. */
void ev_arr_double(kpi_buf *b, bool has, double v);
void ev_arr_day(kpi_buf *b, kpi_day d);
void ev_arr_int(kpi_buf *b, long long v);

/* The rows B->rows[IDX[k]], k < N, as SQL_INSERT's arrays (begun and ended). */
void ev_insert_params_build(ev_insert_params *p, const ev_batch *b, const size_t *idx, size_t n);
/* The rows B->rows[IDX[k]], k < N, as the input of `COPY measurements (EV_COPY_COLUMNS) FROM
 * STDIN` in text format (replacing OUT's content): the same columns and values as SQL_INSERT's
 * arrays, one line per row, `\N` for NULL, backslash, tab, newline and carriage return
 * escaped. */
#define EV_COPY_COLUMNS                                                                        \
  "event_id, measure_id, department, observed_at, observed_day, fiscal_year, value, unit,"     \
  " component, note, received_at, kafka_partition, kafka_offset, corrects"
void ev_copy_rows_build(kpi_buf *out, const ev_batch *b, const size_t *idx, size_t n);
/* Appends to B->copy the COPY lines (as ev_copy_rows_build) of the measurement rows added since
 * the last call, not poison, in order: B->copy then holds ev_copy_rows_build's text for every
 * measurement row of B, while no row is poison. */
void ev_copy_rows_extend(ev_batch *b);
/* SQL_COPY_TOTALS' arrays for the same rows (begun and ended): their count and sum per
 * (measure, month of observed_day, component or ''), as SQL_INSERT's totals would add for rows
 * none of which is retracted. Returns -1 when out of memory. */
int ev_copy_totals_build(ev_copy_totals_params *p, const ev_batch *b, const size_t *idx, size_t n);
/* The retractions among B->rows[IDX[k]], k < N (ev_retract_params; begun and ended). */
void ev_retract_params_build(ev_retract_params *p, const ev_batch *b, const size_t *idx,
                             size_t n);
/* B's next offsets per partition. */
void ev_offset_params_build(ev_offset_params *p, const ev_batch *b);
/* The measures CAT->measures[i] with SEEN[i] set (i < N_SEEN), evaluated at AS_OF. */
void ev_aggregate_params_build(ev_aggregate_params *p, const kpi_catalog *cat,
                               const unsigned char *seen, size_t n_seen, kpi_day as_of);
/* One element per array (after ev_params_begin): measure M's new attainment A at AS_OF, its
 * latest observation instant (NULL when none), its event count (a decimal integer), the alert
 * bookkeeping NEXT, the catalog version CV it was computed with and NOTED, the version whose
 * figures the alerts have stated (ev_catalog_note). */
void ev_attainment_params_add(ev_attainment_params *p, const char *measure_id, kpi_day as_of,
                              const kpi_attainment *a, const char *last_observed_at,
                              const char *events, const kpi_alert_track *next, int cv,
                              int noted);
void ev_history_params_add(ev_history_params *p, const char *measure_id, kpi_day as_of,
                           const kpi_attainment *a, int cv, ev_cause cause);
void ev_outbox_params_add(ev_outbox_params *p, const char *alert_id, const char *topic,
                          const char *key, const char *payload);

/* ---- ev_catalog.c: catalog versions and the change note of alerts (pure) -------------- */

/* A measure's figures as recorded for one catalog version (table measure_catalog). */
typedef struct {
  int baseline_fy;
  double baseline;
  int target_fy;
  double target;
} ev_figures;

/* What the attainment row says the alerts about a measure last stated. */
typedef struct {
  bool has_version; /* attainment.noted_catalog_version is set */
  int version;
  bool has_figures; /* measure_catalog holds that version's figures of the measure */
  ev_figures figures;
} ev_noted;

/* Measure M evaluated under catalog VERSION, after the alerts stated the figures of NOTED.
 * When ALERTING (an alert about M is written in this transaction) and M's figures differ from
 * NOTED's, fills OUT (present) with the differences; else OUT is not present. Returns the
 * version to store as noted: VERSION once nothing is left to state (stated now, or nothing
 * changed, or nothing noted before); NOTED's version while a change waits for the next alert,
 * or when NOTED is newer than VERSION (a replica still running an older catalog neither
 * states the change backwards nor forgets it). docs/evaluator.md "Catalog versions". */
int ev_catalog_note(const kpi_measure *m, int version, const ev_noted *noted, bool alerting,
                    kpi_catalog_change *out);

/* ---- ev_kafka.c ----------------------------------------------------------------------- */

typedef struct {
  rd_kafka_t *consumer;
  rd_kafka_t *producer;
  kpi_kafka_waker cwake;
  kpi_kafka_waker pwake;
  rd_kafka_topic_partition_list_t *want_assign; /* assignment waiting for its offsets */
  bool assign_busy;
  bool broker_up;
  int64_t consumer_lag;
  int dlq_inflight;
  /* The fetcher wake-up (ev_kafka_pull, docs/evaluator.md "Performance"): the consumer
   * queue's fill mark at which librdkafka parks the fetcher (queued.min.messages, or
   * queued.max.messages.kbytes over the mean record size), the mean record size, and whether
   * the queue reached the mark since the last wake-up. */
  int64_t park_msgs, park_bytes;
  double mean_len;
  bool parked;
  /* Records are decoded in slices of EV_PULL_SLICE, the next slice from this idle handle (once
   * per loop iteration): between slices the loop serves the DB connection, so the transaction
   * under way never waits for a whole batch to be decoded (docs/evaluator.md "Performance"). */
  uv_idle_t pull_idle;
  uv_work_t wake_req;
  rd_kafka_topic_partition_list_t *wake_parts; /* owned; non-NULL while wake_req runs */
  bool wake_again; /* a wake-up was wanted while wake_req ran: another once it is done */
  int64_t unstored_offset; /* where a partition without a stored offset starts */
  /* Set by the scheduler (ev_sched_init): ON_RECORDS when records may be waiting (consumer
   * wake-up, partitions assigned), ON_DLQ_ACKED when a DLQ copy was acknowledged. */
  void (*on_records)(evaluator *ev);
  void (*on_dlq_acked)(evaluator *ev);
} ev_kafka;

/* Creates the producer (and the topics), then the consumer, and subscribes. Blocking while the
 * broker is away (ev_startup_wait between attempts). Returns 0; -2 with ERRSTR when a client
 * configuration is refused (a KPI_KAFKA_PROP_* librdkafka rejects or one naming a fixed
 * property: bad configuration, docs/architecture.md "Start and stop"); or -1 with ERRSTR (and
 * ev->life.stopping set when a stop was asked for meanwhile). */
int ev_kafka_start(evaluator *ev, char *errstr, size_t errstr_size);
/* Pulls records into the pending batch while it has room. Returns false (nothing done) when
 * stopping or without a consumer. */
bool ev_kafka_pull(evaluator *ev);
/* The same from the next loop iteration (the pull's idle handle): after a COMMIT, so that the
 * next transaction's first statement leaves before a slice of records is decoded. */
void ev_kafka_pull_soon(evaluator *ev);
/* Sends row R of batch B (its original key and value) to the DLQ with REASON in kpi-error, and
 * marks it poison; the batch's offsets are stored only once every DLQ copy is acknowledged
 * (dlq_inflight back to 0). Exits the process when the producer refuses the copy, as for
 * records that fail to decode. */
void ev_dlq_row(evaluator *ev, ev_batch *b, ev_row *r, const char *reason);
/* The offset assigned to a partition without a row in consumer_offsets, for the consumer's
 * AUTO_OFFSET_RESET (librdkafka's name of the value in effect; may be NULL): 0 when that is
 * the earliest offset, else RD_KAFKA_OFFSET_BEGINNING. Both start at the beginning of the log:
 * at 0, a log that no longer starts there answers "out of range" and the reset (earliest)
 * moves the fetch to its first offset. The logical BEGINNING needs an offset lookup first,
 * which librdkafka 2.0 defers by a fixed 500 ms when it runs before the partition has joined
 * its leader's broker thread, a race it lost in most first assignments measured: half a
 * second of no fetching at such a start (docs/evaluator.md "Performance"). Pure. */
int64_t ev_kafka_unstored_offset(const char *auto_offset_reset);
/* Reads the stored offsets of a pending assignment on AUX, then assigns. */
void ev_offsets_fetch(evaluator *ev);
/* Blocking by nature (group leave, producer flush): once, at shutdown. */
void ev_kafka_stop(evaluator *ev);
/* Destroys the clients (after the loop ran out). */
void ev_kafka_free(evaluator *ev);

/* ---- ev_outbox.c ---------------------------------------------------------------------- */

/* An outbox row committed and waiting for its delivery report. */
typedef struct ev_outmsg {
  struct ev_outmsg *next;
  int64_t id;
} ev_outmsg;

typedef struct {
  ev_outmsg *inflight;
  size_t n_inflight;
  int64_t *sent_ids; /* delivered, waiting to be marked sent */
  size_t n_sent, cap_sent;
  size_t n_marking; /* ids of sent_ids[0..n_marking) are being marked */
  bool mark_busy;
  /* Runs after every mark query (set by the drain: shutdown waits for the last mark). */
  void (*on_marked)(evaluator *ev);
  bool rescan_due;
  bool rescan_busy;
  bool purge_busy;
} ev_outbox;

/* Frees what is left in flight (after the loop ran out). */
void ev_outbox_free(evaluator *ev);
/* Publishes a committed outbox row (id, key, payload) unless it is in flight or delivered;
 * copies everything. On failure the row waits for a rescan. */
void ev_outbox_publish(evaluator *ev, int64_t id, const char *topic, const char *key,
                       const char *payload);
/* The delivery report of OM (the message opaque of ev_outbox_publish); frees OM. ERR 0 when
 * stored. */
void ev_outbox_on_delivery(evaluator *ev, ev_outmsg *om, rd_kafka_resp_err_t err);
/* Re-reads unsent outbox rows on AUX and publishes those not already in flight. */
void ev_outbox_rescan(evaluator *ev);
/* Marks the delivered outbox rows (sent_ids) as sent, on AUX. */
void ev_outbox_mark_flush(evaluator *ev);
/* Deletes outbox rows sent more than outbox_retention_days ago, in bounded batches, on AUX. */
void ev_outbox_purge(evaluator *ev);

/* ---- ev_ack.c: acknowledgements (docs/corrections.md "Reminders and acknowledgements") -- */

/* The batch's acknowledgements (ev_ack_params), stored with the measure's committed state. */
extern const char ev_ack_sql_insert[];

/* The acknowledgements among B->rows[IDX[k]], k < N (begun and ended). */
void ev_ack_params_build(ev_ack_params *p, const ev_batch *b, const size_t *idx, size_t n);

/* A LATERAL join of the aggregate (the measure's id is g.id): the measure's latest
 * acknowledgement (latest received_at) as the columns ack_note, ack_department, ack_at (its
 * received_at, RFC 3339 UTC), ack_until (days since the epoch), ack_status, ack_stale, and
 * ack_changed: an attainment history row recorded since it was stored (the history row of its
 * own transaction included) shows another status or stale flag, a transition after it. All NULL
 * when the measure has none. */
#define EV_ACK_LATEST_SQL                                                                        \
  " LEFT JOIN LATERAL (SELECT k.note AS ack_note, k.department AS ack_department,"               \
  "   to_char(k.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS ack_at,"   \
  "   (k.until - DATE '1970-01-01') AS ack_until, k.status AS ack_status, k.stale AS ack_stale,"   \
  "   EXISTS (SELECT 1 FROM attainment_history h WHERE h.measure_id = k.measure_id"               \
  "     AND h.recorded_at >= k.stored_at"                                                        \
  "     AND (h.status IS DISTINCT FROM k.status OR h.stale <> k.stale)) AS ack_changed"           \
  "   FROM acknowledgements k WHERE k.measure_id = g.id"                                         \
  "   ORDER BY k.received_at DESC, k.event_id DESC LIMIT 1) ack ON true"

/* The columns of EV_ACK_LATEST_SQL in a result (-1 when absent). */
typedef struct {
  int note, department, at, until, status, stale, changed;
} ev_ack_cols;
ev_ack_cols ev_ack_cols_find(const PGresult *res);

/* Row R's latest acknowledgement as the reminder decision needs it (not present when none). */
void ev_ack_hold_read(const PGresult *res, int r, const ev_ack_cols *c, kpi_ack_hold *out);

/* Row R's latest acknowledgement for the alert record, the department's name from CAT. The
 * strings are borrowed from RES and CAT: valid while both are. */
void ev_ack_alert_read(const PGresult *res, int r, const ev_ack_cols *c, const kpi_catalog *cat,
                       kpi_alert_ack *out);

/* ---- ev_txn.c ------------------------------------------------------------------------- */

typedef struct ev_txn ev_txn;

typedef enum {
  EV_TXN_COMMITTED,
  EV_TXN_RETRY_NOW, /* failed because of the data; the next transaction may start at once */
  EV_TXN_FAILED     /* retry after backoff (or once the connection is back) */
} ev_txn_outcome;

typedef struct {
  ev_txn_outcome outcome;
  bool sweep;        /* the transaction was the sweep's */
  bool batch_done;   /* the batch is committed with its offsets (and cleared) */
  bool sweep_again;  /* the sweep goes on measure by measure: run it again */
  const char *err;   /* for EV_TXN_FAILED; valid during the callback */
} ev_txn_result;

/* Called once per ev_txn_start, from a libpq callback or from inside ev_txn_start when the
 * BEGIN cannot be queued. */
typedef void (*ev_txn_done_cb)(evaluator *ev, const ev_txn_result *r);

/* NULL when out of memory. */
ev_txn *ev_txn_new(evaluator *ev, ev_txn_done_cb on_done);
void ev_txn_free(ev_txn *t);
/* Queues BEGIN, the writes of BATCH (NULL: the sweep) and the evaluation; ON_DONE follows. */
void ev_txn_start(ev_txn *t, ev_batch *batch);
/* The cause of the sweep's history rows from now on: EV_CAUSE_SWEEP, or
 * EV_CAUSE_CATALOG_RELOAD for the evaluation after a catalog reload. */
void ev_txn_set_sweep_cause(ev_txn *t, ev_cause cause);

/* ---- ev_mirror.c ---------------------------------------------------------------------- */

/* Blocking, at start: connects, migrates, checks the catalog's version against those recorded
 * and records and mirrors it. Returns 0 when ready, 1 when a stop was requested while waiting
 * for the database (logged by the caller), -1 on an error that needs a person (logged here),
 * -2 when the catalog's version is refused (logged here: exit KPI_EXIT_CONFIG). */
int ev_db_prepare(evaluator *ev, const char *conninfo);

typedef void (*ev_mirror_done_cb)(evaluator *ev, bool ok);
/* Reloads the catalog file (SIGHUP), checks its version and records and mirrors it on DB, in
 * one transaction; the new catalog replaces the running one once that commits. A refused
 * version keeps the running catalog (logged, counted) and calls ON_DONE with true: nothing to
 * retry. Returns 0 when the queries are queued (ON_DONE follows), 1 when the file is unusable
 * (logged; the running catalog is kept), -1 when they could not be queued (try again later). */
int ev_mirror_reload(evaluator *ev, ev_mirror_done_cb on_done);

/* ---- ev_sched.c ----------------------------------------------------------------------- */

typedef struct {
  ev_batch batches[2];
  ev_batch *pending;  /* filling from Kafka */
  ev_batch *inflight; /* being written; NULL when none */
  ev_txn *txn;
  bool txn_busy; /* a transaction or the catalog mirror runs on DB */
  bool sweep_due;
  bool reload_due;
  bool reload_sweep; /* the sweep due is the one after a catalog reload (its history cause) */
  int backoff_ms;
  uv_timer_t retry_timer;
  uv_timer_t sweep_timer;
} ev_sched;

#define EV_BACKOFF_MIN_MS 100
/* The delay after BACKOFF_MS: doubled up to 2.5 s, then 5 s. */
int ev_backoff_next(int backoff_ms);

/* Initialises the timers and the transaction state and registers the scheduler's callbacks
 * with the other modules. Returns 0 or -1 (out of memory). */
int ev_sched_init(evaluator *ev);
/* Evaluates every measure now, then every sweep_ms. */
void ev_sched_start(evaluator *ev);
/* A stop was asked for: no more sweeps (the transaction under way is finished by ev_kick). */
void ev_sched_stop(evaluator *ev);
/* Starts the next transaction if none runs and there is work (catalog mirror, a batch, the
 * sweep); once stopping and idle, hands over to ev_finish. Call after every state change. */
void ev_kick(evaluator *ev);
/* The kpi_pgasync state callback of DB and AUX (and API, only logged). */
void ev_sched_on_pg_state(kpi_pgasync *pg, int up, void *arg);
void ev_sched_close(evaluator *ev, uv_close_cb on_closed);
void ev_sched_free(evaluator *ev);

/* ---- ev_drain.c ----------------------------------------------------------------------- */

/* kpi_shutdown's on_expired: KPI_DRAIN_TIMEOUT_MS passed (or a second signal came) while the
 * transaction, or later the marks, were still under way. */
void ev_drain_expired(kpi_shutdown *sd);
/* Leaves the group, flushes the producer, records the last deliveries, then calls
 * kpi_shutdown_drained; once, when stopping and idle (or at the drain timeout). */
void ev_finish(evaluator *ev);

/* ---- ev_startup.c --------------------------------------------------------------------- */

/* Until the loop runs, libuv cannot deliver signals: these catch SIGTERM/SIGINT (SIGHUP is
 * ignored, the catalog was just loaded) so that start-up waits end at once. */
void ev_startup_signals(void);
/* Sleeps MS milliseconds during start-up (waiting for the database or the broker); returns true
 * as soon as SIGTERM or SIGINT asked the process to stop, so that a service whose dependencies
 * are missing still stops at once with status 0. */
bool ev_startup_wait(unsigned ms);
/* A stop was asked for before the loop owned the signals. */
bool ev_startup_stop_requested(void);

/* ---- ev_api.c, ev_metrics.c ----------------------------------------------------------- */

typedef struct {
  kpi_http_server http;
  bool inited;
  int pending; /* queries queued or running on the API connection */
} ev_api;

/* A read may be queued while fewer than MAX are pending; beyond, it is answered 503. */
bool ev_api_admit(int pending, int max);
bool ev_api_valid_id(const char *s);

/* The audit read API (docs/evaluator.md "Audit read API"): its two resources of a measure. */
typedef enum { EV_API_HISTORY = 0, EV_API_NOTIFICATIONS } ev_api_audit;
#define EV_API_HISTORY_LIMIT 1000      /* entries per page by default */
#define EV_API_HISTORY_LIMIT_MAX 10000 /* ?limit= at most */

/* One page of a history: at most LIMIT entries received after AFTER (RFC 3339 UTC, "" from the
 * start) and, at that instant, after event AFTER_EVENT_ID ("": after every event then). */
typedef struct {
  int limit;
  char after[32];
  char after_event_id[KPI_UUID_STRLEN + 1];
} ev_api_page;

/* Splits PATH "/v1/measures/{id}/history" or ".../notifications" into ID (not yet checked
 * against the id syntax) and WHICH. Returns 0, or -1 for any other path. */
int ev_api_audit_path(const char *path, char id[KPI_ID_MAX + 1], ev_api_audit *which);
/* The percent-decoded value of query parameter NAME (QUERY: the text after '?', may be NULL)
 * into OUT (SIZE bytes; a bare NAME gives ""). Returns 1 when present (the first occurrence),
 * 0 when absent, -1 when its encoding is bad, it holds a NUL or does not fit. */
int ev_api_query_value(const char *query, const char *name, char *out, size_t size);
/* Reads ?limit=, ?after= and ?after_event_id= (ignored without after) of QUERY into PAGE.
 * Returns 0, or -1 with ERR saying which is wrong (answered 400). */
int ev_api_history_page(const char *query, ev_api_page *page, char *err, size_t errsize);
/* The Authorization header value AUTH (NULL: absent) for the notifications API: 1 when it is
 * `Bearer <the operator token>` (its SHA-256 compared in constant time with CFG's), 0 when
 * absent, -1 otherwise (answered 401), also whenever no operator token is configured. */
int ev_api_operator(const char *auth, const ev_config *cfg);

void ev_on_http_request(kpi_http_request *req, void *opaque);
/* The read API's resources, for kpi_http_server_set_routes. */
#define EV_HTTP_N_ROUTES 6
extern const kpi_http_route ev_http_routes[EV_HTTP_N_ROUTES];

typedef struct {
  kpi_metrics *reg;
  kpi_metric *records, *batches, *rows, *dlq, *commit, *txn_fail, *outbox, *alerts, *lag,
      *sweeps, *assign, *api_rejected, *purged, *catalog_refused, *fetch_kicks,
      *copy_batches, *copy_fallbacks;
} ev_metrics;

int ev_metrics_init(ev_metrics *m);
void ev_metrics_free(ev_metrics *m);

/* ---- ev_service.c --------------------------------------------------------------------- */

typedef struct {
  /* Signals, the drain deadline (ev_drain.c re-arms it for the marks) and the exit code. */
  kpi_shutdown shutdown;
  /* A stop was asked for: from the first signal on, and also during the blocking start-up
   * waits (ev_startup.c), before the loop and kpi_shutdown run. */
  bool stopping;
  bool finishing; /* ev_finish ran: the consumer left, the producer was flushed */
  bool closed;    /* every handle is closing */
} ev_life;

struct evaluator {
  uv_loop_t *loop;
  ev_config cfg;
  kpi_catalog *cat;
  /* PostgreSQL: DB runs the batch and sweep transactions, one at a time; AUX everything else
   * (offsets on assignment, outbox bookkeeping), so nothing of it can slip between a
   * transaction's BEGIN and COMMIT. API is the read API's own connection: a burst of reads
   * queues there, never in front of AUX's offset reads after a rebalance. */
  kpi_pgasync *db, *aux, *api_db;
  ev_kafka kafka;
  ev_sched sched;
  ev_mirror_done_cb on_mirrored; /* ev_mirror.c: the callback of the reload under way */
  kpi_catalog *reloading;        /* ev_mirror.c: the file read on SIGHUP, until recorded */
  bool reload_failed;            /* ev_mirror.c: a statement of that reload failed */
  ev_outbox outbox;
  ev_api api;
  ev_metrics m;
  ev_life life;
};

/* Starts everything on LOOP with CFG (copied) and the catalog loaded from it. Returns 0 when the
 * loop should run, else the exit status (logged): 0 for a stop asked for during start-up. On a
 * non-zero return the process is to exit at once: what start-up created is either closed
 * already (LOOP too) or left to the exit, as a failure after the clients exist would block in
 * their destruction. */
int ev_service_start(evaluator *ev, uv_loop_t *loop, const ev_config *cfg);
/* After uv_run: frees what the loop no longer references. */
void ev_service_free(evaluator *ev);

#endif
