/* ingest_csv.h: spreadsheet uploads (text/csv in UTF-8 or Shift_JIS/CP932) turned into the
 * very input objects a JSON batch carries, so that every row takes the one validation path
 * of POST /v1/measurements. Pure: no loop, no context, no I/O. */
#ifndef INGEST_CSV_H
#define INGEST_CSV_H

#include <stddef.h>

#include "kpi_codec.h"

struct cJSON;

typedef enum { INGEST_CHARSET_UTF8 = 0, INGEST_CHARSET_CP932 } ingest_charset;

/* Maps the charset parameter of a text/csv Content-Type (case-insensitive) to what the body
 * is converted from: "" (absent), utf-8, utf8 and us-ascii are UTF-8; shift_jis, shift-jis,
 * sjis, x-sjis, cp932, ms932, windows-31j and ms_kanji are all read as CP932, the superset
 * Excel actually writes on Japanese Windows whatever the label. Returns 0, or -1 for any
 * other charset (the caller answers 415). */
int ingest_csv_charset(const char *name, ingest_charset *out);

/* One data row. */
typedef struct ingest_csv_row {
  unsigned row;          /* spreadsheet row number: the header is row 1, blank rows count */
  struct cJSON *obj;     /* the row as a kpi.measurement/1 input object; NULL when bad */
  kpi_field_error err;   /* when OBJ is NULL: why (`arity`, `encoding`, `unknown_field`) */
} ingest_csv_row;

/* The rows of one body, owned by it; release with ingest_csv_free. */
typedef struct ingest_csv {
  ingest_csv_row *rows;
  size_t n;
  size_t cap;
} ingest_csv;

/* The columns a header may name, in any order and any case: measure_id, observed_at, value
 * and unit are required; component, note and event_id are optional. */
#define INGEST_CSV_COLUMNS "measure_id,observed_at,value,unit[,component,note,event_id]"

/* Parses BODY[0..LEN) in charset CS with libcsv (RFC 4180 quoting, strict: a stray quote is
 * an error; CRLF or LF; a UTF-8 byte-order mark is skipped) into OUT (zeroed by the caller
 * or fresh). The first non-blank row is the header; rows whose cells are all empty are
 * skipped. An empty cell is an absent member. `value` becomes a JSON number when it is
 * written as one (else a string, which the codec refuses as `type`), and an observed_at
 * written as Excel's Japanese dates Y/M/D becomes YYYY-MM-DD; nothing else is interpreted.
 * A row whose field count differs from the header's keeps OBJ NULL with ERR `arity`.
 * Parsing stops once MAX_ROWS + 1 data rows were read, so that the caller can answer 413.
 *
 * Returns 0 with OUT filled (possibly with no row), else the HTTP status of a refusal of the
 * whole body, with ERRS naming the problem and DETAIL (DETAIL_SIZE bytes) a sentence:
 * 400 `encoding` (bytes not valid in CS), 422 `syntax` (CSV quoting), 422 `unknown_field` /
 * `missing` / `duplicate` (header), 500 out of memory. OUT is empty after a refusal. */
int ingest_csv_parse(const char *body, size_t len, ingest_charset cs, size_t max_rows,
                     ingest_csv *out, kpi_errors *errs, char *detail, size_t detail_size);

void ingest_csv_free(ingest_csv *c);

#endif
