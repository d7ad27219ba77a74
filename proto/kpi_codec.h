/* kpi_codec.h: kpi.measurement/1 and kpi.alert/1 records: parse, validate, encode (cJSON). */
#ifndef KPI_CODEC_H
#define KPI_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kpi_buf.h"
#include "kpi_catalog.h"
#include "kpi_json.h"
#include "kpi_time.h"
#include "kpi_uuid.h"

#define KPI_MEASUREMENT_SCHEMA "kpi.measurement/1"
#define KPI_ALERT_SCHEMA "kpi.alert/1"
#define KPI_NOTE_MAX 1024
#define KPI_REASON_MAX 500 /* a retraction's or correction's reason, bytes of UTF-8 */

/* One problem with one field of a record, as reported in problem+json `errors`. */
typedef struct {
  char field[32];    /* "value", "observed_at", "" for the record as a whole */
  char code[24];     /* stable machine word: "missing", "type", "range", "unknown_measure"… */
  char message[160]; /* human sentence */
} kpi_field_error;

#define KPI_ERRORS_MAX 16
typedef struct {
  kpi_field_error items[KPI_ERRORS_MAX];
  size_t n;
} kpi_errors;

void kpi_errors_add(kpi_errors *errs, const char *field, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

typedef enum { KPI_COMPONENT_NONE = 0, KPI_COMPONENT_NUMERATOR, KPI_COMPONENT_DENOMINATOR } kpi_component;

const char *kpi_component_name(kpi_component c); /* NULL for NONE */

/* A measurement, fixed-size so parsing allocates nothing the caller must free. */
typedef struct {
  char event_id[KPI_UUID_STRLEN + 1]; /* "" when the client gave none */
  char measure_id[KPI_ID_MAX + 1];
  char department[KPI_ID_MAX + 1];
  char observed_at[40]; /* as given: a date or RFC 3339 */
  int64_t observed_ms;  /* instant */
  kpi_day observed_day; /* Japan calendar date */
  double value;
  char unit[32];
  kpi_component component;
  bool has_note;
  char note[KPI_NOTE_MAX + 1];
  char received_at[32]; /* RFC 3339 UTC; "" when not yet received */
  int64_t received_ms;
  /* A correction (docs/corrections.md): this measurement replaces event CORRECTS, which the
   * evaluator retracts in the same transaction, for CORRECTS_REASON. */
  bool has_corrects;
  char corrects[KPI_UUID_STRLEN + 1];
  char corrects_reason[KPI_REASON_MAX + 1];
} kpi_measurement;

typedef enum {
  /* A department's request body: schema, department and received_at are the server's to
   * fill; unknown fields are rejected so typos are not silently dropped. */
  KPI_PARSE_INPUT = 0,
  /* A record read from kpi.measurements.v1: every field the ingest writes is required. */
  KPI_PARSE_RECORD = 1
} kpi_parse_mode;

/* Parses one measurement (JSON object) into M, checking types, formats and lengths. Every
 * problem is added to ERRS by field; returns 0 when there was none, -1 otherwise. */
int kpi_measurement_parse(const char *json, size_t len, kpi_parse_mode mode, kpi_measurement *m,
                          kpi_errors *errs);

/* Same, from an already parsed cJSON object (batch items). */
struct cJSON;
int kpi_measurement_from_json(const struct cJSON *obj, kpi_parse_mode mode, kpi_measurement *m,
                              kpi_errors *errs);

/* Checks a parsed measurement against the catalog at instant NOW_MS: known measure, matching
 * unit (a ratio's numerator or denominator: its component_unit, or the measure's own unit as
 * records written before component_unit carry; without component_unit any unit), finite
 * value, kind rules (count >= 0, percent <= 100, milestone 0/1, component only and always
 * for ratio; code `range`), the value at most the measure's value_max (a count at most
 * KPI_VALUE_MAX_COUNT, or the catalog's `max`; code `out_of_range`), observed_at not in the
 * future (KPI_CLOCK_SKEW_MS of slack). Returns the measure, or NULL with ERRS filled. */
#define KPI_CLOCK_SKEW_MS (5 * 60 * 1000)
const kpi_measure *kpi_measurement_check(const kpi_measurement *m, const kpi_catalog *cat,
                                         int64_t now_ms, kpi_errors *errs);
/* The same check with M's measure MS already looked up (kpi_catalog_measure of m->measure_id;
 * NULL when unknown): the ingest looks a record's measure up once for the ownership check,
 * the normalization and this check. */
const kpi_measure *kpi_measurement_check_ms(const kpi_measurement *m, const kpi_measure *ms,
                                            int64_t now_ms, kpi_errors *errs);

/* Rewrites an input's unit to the canonical one the catalog names (docs/ingest.md "Units"):
 * a label of the measure's unit (人 for person, ％ for percent), or for a ratio's numerator
 * or denominator a label of its component_unit (件 for case; without component_unit, of any
 * catalog unit). A ratio component that says percent is refused (field `unit`, code
 * `component_unit`): its amounts are counts. Anything else is left for kpi_measurement_check
 * to judge. Returns 0, or -1 with ERRS filled. The ingest calls it before the check; the
 * evaluator does not, records being canonical already. */
int kpi_measurement_normalize(kpi_measurement *m, const kpi_catalog *cat, kpi_errors *errs);
/* The same with M's measure MS already looked up (NULL when unknown). */
int kpi_measurement_normalize_ms(kpi_measurement *m, const kpi_catalog *cat,
                                 const kpi_measure *ms, kpi_errors *errs);

/* Encodes a full kpi.measurement/1 record. Returns a malloc'd NUL-terminated string (caller
 * frees) and its length in *LEN, or NULL when out of memory. */
char *kpi_measurement_encode(const kpi_measurement *m, size_t *len);

/* The same record appended to B (its NUL written after it, not counted in B's length), so
 * that many records share one buffer. Returns 0, or -1 when out of memory (B unchanged but
 * perhaps for its OOM flag). */
int kpi_measurement_encode_buf(const kpi_measurement *m, kpi_buf *b);

/* Alerts ------------------------------------------------------------------------------- */

typedef struct {
  char *department; /* id, or NULL for a watcher */
  char *name;       /* department name, may be NULL */
  char *email;
} kpi_recipient;

/* A figure of the measure changed by a catalog reload: "baseline", "baseline_fy", "target" or
 * "target_fy" (the deadline is the end of target_fy), from one value to another. */
typedef struct {
  char field[16];
  double from, to;
} kpi_catalog_field_change;

#define KPI_CATALOG_CHANGES_MAX 4
/* The optional "catalog_change" of an alert (docs/evaluator.md "Catalog versions"): the first
 * alert about a measure after a reload changed its figures says so, once. */
typedef struct {
  bool present;
  int version;          /* the catalog the alert was evaluated with */
  int previous_version; /* the catalog whose figures the previous alert stated */
  size_t n_changes;
  kpi_catalog_field_change changes[KPI_CATALOG_CHANGES_MAX];
} kpi_catalog_change;

/* True for the field names of kpi_catalog_field_change. */
bool kpi_catalog_change_field_known(const char *field);

/* The optional "acknowledgement" of an alert (docs/corrections.md "Reminders and
 * acknowledgements"): the measure's latest acknowledgement (kpi.acknowledgement/1), which the
 * mail shows with who wrote it. NOTE and DEPARTMENT_NAME are owned by the decoded record
 * (kpi_alert_clear frees them) and borrowed by the encoder. */
#define KPI_ALERT_ACK_NOTE_MAX 2048 /* bytes of UTF-8, KPI_ACK_NOTE_MAX */
typedef struct {
  bool present;
  char *note;                       /* 1..KPI_ALERT_ACK_NOTE_MAX bytes */
  char department[KPI_ID_MAX + 1];  /* who wrote it (department id) */
  char *department_name;            /* the catalog's name of it, may be NULL */
  char acknowledged_at[32];         /* its received_at, RFC 3339 UTC */
  char until[11];                   /* YYYY-MM-DD, the last day of the quiet period */
} kpi_alert_ack;

typedef struct {
  char alert_id[KPI_UUID_STRLEN + 1];
  char measure_id[KPI_ID_MAX + 1];
  char type[12];            /* "alert" | "reminder" | "resolved" */
  char status[12];          /* no_data, on_track, lagging, achieved, failed */
  char previous_status[12]; /* "" when none */
  bool stale;
  int episode;
  bool has_value;
  double value;
  double progress;
  double expected;
  char as_of[11]; /* YYYY-MM-DD */
  /* The Japan calendar date of the latest reading (YYYY-MM-DD), "" when there is none or the
   * record predates the field; the mail shows it beside the evaluation date (docs/notifier.md
   * "The mail"). */
  char last_observed_day[11];
  char *measure_name;
  char *indicator;
  char *unit;
  char *kind;
  char *direction;
  double baseline;
  int baseline_fy;
  double target;
  int target_fy;
  char due[11]; /* YYYY-MM-DD */
  char *plan_name;
  char *dashboard_url;          /* may be NULL */
  kpi_recipient *recipients;    /* owners' mailboxes first, then watchers */
  size_t n_recipients;
  char created_at[32];
  kpi_catalog_change catalog_change; /* encoded only when present */
  kpi_alert_ack acknowledgement;     /* encoded always, null when not present */
} kpi_alert;

/* Returns a malloc'd JSON string of the kpi.alert/1 record, or NULL. */
char *kpi_alert_encode(const kpi_alert *a, size_t *len);

/* Parses a kpi.alert/1 record into A (whose strings it allocates; release with kpi_alert_clear).
 * Returns 0, or -1 with ERRS naming the bad fields and A left cleared. */
int kpi_alert_decode(const char *json, size_t len, kpi_alert *a, kpi_errors *errs);

void kpi_alert_clear(kpi_alert *a);

/* Copies string member NAME of OBJ, 1..SIZE-1 bytes of valid UTF-8, into DST. Returns 1 when
 * present and valid, 0 when absent (or null), -1 when wrong (error added under FIELD). Shared
 * by the record codecs (kpi_records.c). */
int kpi_take_text(const struct cJSON *obj, const char *name, const char *field, char *dst,
                  size_t size, kpi_errors *errs);

/* Converts ERRS to a cJSON array of {"field","code","message"} (caller owns). */
struct cJSON *kpi_errors_to_json(const kpi_errors *errs);

#endif
