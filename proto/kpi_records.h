/* kpi_records.h: the other record types of kpi.measurements.v1 — kpi.retraction/1 and
 * kpi.acknowledgement/1 — and telling a record's type from its `schema` (docs/corrections.md). */
#ifndef KPI_RECORDS_H
#define KPI_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kpi_codec.h"

#define KPI_RETRACTION_SCHEMA "kpi.retraction/1"
#define KPI_ACK_SCHEMA "kpi.acknowledgement/1"
#define KPI_ACK_NOTE_MAX 2048  /* bytes of UTF-8 */
#define KPI_ACK_DEFAULT_DAYS 28
#define KPI_ACK_MAX_DAYS 366   /* `until` at most this many days after receipt */

typedef enum {
  KPI_RECORD_UNKNOWN = 0, /* not JSON, no schema, or a schema nobody knows */
  KPI_RECORD_MEASUREMENT,
  KPI_RECORD_RETRACTION,
  KPI_RECORD_ACK
} kpi_record_type;

/* The type of the record JSON (LEN bytes) by its `schema` member. Records as the ingest writes
 * them (schema first) are recognised without parsing; anything else is parsed once. */
kpi_record_type kpi_record_type_of(const char *json, size_t len);

/* Retractions ------------------------------------------------------------------------- */

typedef struct {
  char event_id[KPI_UUID_STRLEN + 1]; /* the retraction's own id: kpi_retraction_id(retracts) */
  char retracts[KPI_UUID_STRLEN + 1]; /* the measurement taken back */
  char measure_id[KPI_ID_MAX + 1];
  char department[KPI_ID_MAX + 1];
  char reason[KPI_REASON_MAX + 1];
  char received_at[32];
  int64_t received_ms;
} kpi_retraction;

/* The retraction's event id: UUID v5 of "<retracted event id, lower-cased>/<measure>/<department>",
 * so that one department retracting one measurement twice is one retraction, while a mistaken
 * retraction of the same event by another department or under another measure (refused by the
 * evaluator) never takes the id of the owner's real one (docs/corrections.md). */
void kpi_retraction_id(const char *retracts, const char *measure_id, const char *department,
                       char out[KPI_UUID_STRLEN + 1]);

/* Parses a retraction. KPI_PARSE_INPUT: a request body {"measure_id", "reason"} (unknown
 * members refused; the caller fills retracts, event_id, department, received_at);
 * KPI_PARSE_RECORD: every member required, event_id must be kpi_retraction_id(retracts).
 * Returns 0, or -1 with ERRS naming each bad field. */
int kpi_retraction_parse(const char *json, size_t len, kpi_parse_mode mode, kpi_retraction *r,
                         kpi_errors *errs);

/* A malloc'd kpi.retraction/1 record (length in *LEN), or NULL when out of memory. */
char *kpi_retraction_encode(const kpi_retraction *r, size_t *len);

/* Acknowledgements -------------------------------------------------------------------- */

typedef struct {
  char event_id[KPI_UUID_STRLEN + 1];
  char measure_id[KPI_ID_MAX + 1];
  char department[KPI_ID_MAX + 1];
  char note[KPI_ACK_NOTE_MAX + 1];
  bool has_until;
  char until[11]; /* YYYY-MM-DD, a Japan date */
  kpi_day until_day;
  char received_at[32];
  int64_t received_ms;
} kpi_ack;

/* Parses an acknowledgement. KPI_PARSE_INPUT: a request body {"note", "until"?, "event_id"?}
 * (the measure comes from the path, the department from the token); KPI_PARSE_RECORD: every
 * member required, `until` included. Returns 0, or -1 with ERRS. */
int kpi_ack_parse(const char *json, size_t len, kpi_parse_mode mode, kpi_ack *a,
                  kpi_errors *errs);

/* Checks an input's `until` against its receipt (received_ms set): not before the day it was
 * received, at most KPI_ACK_MAX_DAYS after it (code `range`); when absent, sets it to
 * KPI_ACK_DEFAULT_DAYS after that day. Returns 0, or -1 with ERRS. */
int kpi_ack_check(kpi_ack *a, kpi_errors *errs);

/* A malloc'd kpi.acknowledgement/1 record (length in *LEN), or NULL when out of memory. */
char *kpi_ack_encode(const kpi_ack *a, size_t *len);

#endif
