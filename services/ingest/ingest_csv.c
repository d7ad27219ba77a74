/* ingest_csv.c: text/csv batch bodies (UTF-8 or CP932) to measurement input objects, with
 * iconv for the conversion and libcsv for the quoting. */
#include "ingest_csv.h"

#include <cjson/cJSON.h>
#include <csv.h>
#include <errno.h>
#include <iconv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kpi_buf.h"
#include "kpi_json.h"

/* More fields than this in one record cannot be a measurement row (seven columns exist);
 * the rest of such a record is not kept, only counted. */
#define MAX_FIELDS 64

enum { C_MEASURE_ID, C_OBSERVED_AT, C_VALUE, C_UNIT, C_COMPONENT, C_NOTE, C_EVENT_ID, C_COUNT };
static const char *const column_names[C_COUNT] = {"measure_id", "observed_at", "value", "unit",
                                                  "component",  "note",        "event_id"};
#define C_REQUIRED 4 /* the first four */
#define C_IGNORED (-1) /* a column with an empty header cell */

int ingest_csv_charset(const char *name, ingest_charset *out) {
  static const char *const utf8[] = {"", "utf-8", "utf8", "us-ascii"};
  static const char *const cp932[] = {"shift_jis", "shift-jis", "sjis",        "x-sjis",
                                      "cp932",     "ms932",     "windows-31j", "ms_kanji"};
  for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++)
    if (strcasecmp(name, utf8[i]) == 0) {
      *out = INGEST_CHARSET_UTF8;
      return 0;
    }
  for (size_t i = 0; i < sizeof(cp932) / sizeof(cp932[0]); i++)
    if (strcasecmp(name, cp932[i]) == 0) {
      *out = INGEST_CHARSET_CP932;
      return 0;
    }
  return -1;
}

/* ---- charset ---- */

/* The line (from 1) of byte OFF of S: for messages that point at a bad byte. */
static unsigned line_of(const char *s, size_t off) {
  unsigned line = 1;
  for (size_t i = 0; i < off; i++) line += s[i] == '\n';
  return line;
}

/* Converts CP932 BODY to UTF-8 into OUT. Returns 0, 1 when a byte sequence is not CP932
 * (*BAD: its offset), -1 out of memory. */
static int cp932_to_utf8(const char *body, size_t len, kpi_buf *out, size_t *bad) {
  iconv_t cd = iconv_open("UTF-8", "CP932");
  if (cd == (iconv_t)-1) return -1;
  /* Every CP932 character takes at most 3 bytes of UTF-8 (a single-byte half-width kana
   * becomes 3): one reservation always suffices, so E2BIG cannot happen. */
  if (len > ((size_t)-1 - 1) / 3 || kpi_buf_reserve(out, 3 * len + 1) != 0) {
    iconv_close(cd);
    return -1;
  }
  char *in = (char *)body;
  size_t in_left = len;
  char *o = out->s;
  size_t o_left = out->cap - 1;
  int rc = 0;
  if (iconv(cd, &in, &in_left, &o, &o_left) == (size_t)-1) {
    rc = errno == E2BIG ? -1 : 1; /* EILSEQ, or EINVAL: a lead byte cut at the end */
    *bad = (size_t)(in - body);
  }
  iconv_close(cd);
  out->len = (size_t)(o - out->s);
  out->s[out->len] = '\0';
  return rc;
}

/* Offset of the first byte of S[0..N) that does not start a well-formed UTF-8 character. */
static size_t first_bad_utf8(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t k = kpi_json_utf8_char_len(s + i, n - i);
    if (k == 0) break;
    i += k;
  }
  return i;
}

/* ---- libcsv callbacks ---- */

typedef struct {
  ingest_csv *out;
  size_t max_rows;
  int status; /* first refusal of the body (callbacks then do nothing), else 0 */
  kpi_errors *errs;
  char *detail;
  size_t detail_size;

  unsigned row;   /* records seen, blank ones included */
  int prev_end;   /* the character that ended the previous record */
  int have_header;
  int col[MAX_FIELDS]; /* header: column → C_* or C_IGNORED */
  size_t ncols;

  /* The record being read: fields NUL-separated in REC, starting at OFF[i]. */
  kpi_buf rec;
  size_t off[MAX_FIELDS];
  size_t flen[MAX_FIELDS];
  size_t nf;       /* fields seen (may exceed MAX_FIELDS: only counted then) */
  int any_nonempty;
} csv_state;

static void refuse(csv_state *st, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse(csv_state *st, int status, const char *fmt, ...) {
  st->status = status;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->detail, st->detail_size, fmt, ap);
  va_end(ap);
}

static void on_csv_field(void *s, size_t len, void *data) {
  csv_state *st = data;
  if (st->status) return;
  if (st->nf < MAX_FIELDS) {
    st->off[st->nf] = st->rec.len;
    st->flen[st->nf] = len;
    kpi_buf_add(&st->rec, s, len);
    kpi_buf_addc(&st->rec, '\0');
  }
  st->nf++;
  st->any_nonempty |= len > 0;
}

static const char *field_at(const csv_state *st, size_t i) { return st->rec.s + st->off[i]; }

static void header_row(csv_state *st) {
  int seen[C_COUNT] = {0};
  size_t nf = st->nf < MAX_FIELDS ? st->nf : MAX_FIELDS;
  for (size_t i = 0; i < nf; i++) {
    const char *name = field_at(st, i);
    st->col[i] = C_IGNORED;
    if (!*name) continue;
    int c = 0;
    while (c < C_COUNT && strcasecmp(name, column_names[c]) != 0) c++;
    if (c == C_COUNT) {
      kpi_errors_add(st->errs, name, "unknown_field", "not a column of the CSV upload (%s)",
                     INGEST_CSV_COLUMNS);
      continue;
    }
    if (seen[c]++) {
      kpi_errors_add(st->errs, column_names[c], "duplicate", "the header names it twice");
      continue;
    }
    st->col[i] = c;
  }
  if (st->nf > MAX_FIELDS)
    kpi_errors_add(st->errs, "", "arity", "the header has %zu columns", st->nf);
  for (int c = 0; c < C_REQUIRED; c++)
    if (!seen[c]) kpi_errors_add(st->errs, column_names[c], "missing", "required column");
  st->ncols = nf;
  st->have_header = 1;
  if (st->errs->n)
    refuse(st, 422, "the header row (row %u) must name the columns %s", st->row,
           INGEST_CSV_COLUMNS);
}

/* True when S is a decimal number as people and spreadsheets write them: an optional sign,
 * digits with an optional fraction, an optional exponent. strtod alone would also take
 * "inf", "nan" and hexadecimal. */
static int is_decimal(const char *s) {
  if (*s == '+' || *s == '-') s++;
  size_t digits = 0;
  while (*s >= '0' && *s <= '9') s++, digits++;
  if (*s == '.') {
    s++;
    while (*s >= '0' && *s <= '9') s++, digits++;
  }
  if (!digits) return 0;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-') s++;
    if (!(*s >= '0' && *s <= '9')) return 0;
    while (*s >= '0' && *s <= '9') s++;
  }
  return *s == '\0';
}

static void row_error(ingest_csv_row *r, const char *field, const char *code, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static void row_error(ingest_csv_row *r, const char *field, const char *code, const char *fmt,
                      ...) {
  kpi_errors e = {.n = 0};
  char msg[sizeof(e.items[0].message)];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  kpi_errors_add(&e, field, code, "%s", msg);
  r->err = e.items[0];
  cJSON_Delete(r->obj);
  r->obj = NULL;
}

/* Builds the input object of the current record into R. */
static int data_row(csv_state *st, ingest_csv_row *r) {
  if (st->nf != st->ncols) {
    row_error(r, "", "arity", "row %u has %zu fields, the header %zu", r->row, st->nf,
              st->ncols);
    return 0;
  }
  r->obj = cJSON_CreateObject();
  if (!r->obj) return -1;
  for (size_t i = 0; i < st->nf; i++) {
    const char *v = field_at(st, i);
    int c = st->col[i];
    if (strlen(v) != st->flen[i]) {
      row_error(r, c == C_IGNORED ? "" : column_names[c], "encoding",
                "row %u, column %zu holds a NUL byte", r->row, i + 1);
      return 0;
    }
    if (!*v) continue; /* an empty cell is an absent member */
    if (c == C_IGNORED) {
      row_error(r, "", "unknown_field", "row %u, column %zu has a value but no header",
                r->row, i + 1);
      return 0;
    }
    /* observed_at goes to the codec as written: Excel's 2024/5/31 and the other forms clerks
     * type are read by the one date parser (kpi_time_parse_input, docs/ingest.md "Dates"). */
    cJSON *item;
    if (c == C_VALUE && is_decimal(v)) item = cJSON_CreateNumber(strtod(v, NULL));
    else item = cJSON_CreateString(v);
    if (!item) return -1;
    cJSON_AddItemToObject(r->obj, column_names[c], item);
  }
  return 0;
}

static void on_csv_row(int end, void *data) {
  csv_state *st = data;
  if (st->status) return;
  /* With CSV_REPALL_NL every line end is reported, so blank lines can be counted as the
   * spreadsheet rows they are; the LF of a CRLF that ended a record is not a row. */
  int lf_of_crlf = st->nf == 0 && end == '\n' && st->prev_end == '\r';
  st->prev_end = end;
  if (lf_of_crlf) return;
  st->row++;
  if (st->rec.oom) {
    refuse(st, 500, "out of memory");
  } else if (!st->any_nonempty) {
    /* a blank row: counted, nothing else */
  } else if (!st->have_header) {
    header_row(st);
  } else if (st->out->n <= st->max_rows) {
    ingest_csv *o = st->out;
    if (o->n == o->cap) {
      size_t cap = o->cap ? 2 * o->cap : 16;
      ingest_csv_row *rows = realloc(o->rows, cap * sizeof(*rows));
      if (!rows) {
        refuse(st, 500, "out of memory");
        return;
      }
      o->rows = rows;
      o->cap = cap;
    }
    ingest_csv_row *r = &o->rows[o->n++];
    memset(r, 0, sizeof(*r));
    r->row = st->row;
    if (data_row(st, r) != 0) refuse(st, 500, "out of memory");
  }
  st->nf = 0;
  st->any_nonempty = 0;
  kpi_buf_reset(&st->rec);
}

/* ---- the body ---- */

void ingest_csv_free(ingest_csv *c) {
  for (size_t i = 0; i < c->n; i++) cJSON_Delete(c->rows[i].obj);
  free(c->rows);
  memset(c, 0, sizeof(*c));
}

int ingest_csv_parse(const char *body, size_t len, ingest_charset cs, size_t max_rows,
                     ingest_csv *out, kpi_errors *errs, char *detail, size_t detail_size) {
  memset(out, 0, sizeof(*out));
  detail[0] = '\0';
  kpi_buf conv = KPI_BUF_INIT;
  const char *text = body;
  size_t n = len;
  if (cs == INGEST_CHARSET_CP932) {
    size_t bad = 0;
    int rc = cp932_to_utf8(body, len, &conv, &bad);
    if (rc < 0) {
      kpi_buf_free(&conv);
      snprintf(detail, detail_size, "out of memory");
      return 500;
    }
    if (rc > 0) {
      kpi_buf_free(&conv);
      kpi_errors_add(errs, "", "encoding", "byte 0x%02x at offset %zu (line %u) is not Shift_JIS",
                     bad < len ? (unsigned char)body[bad] : 0, bad, line_of(body, bad));
      snprintf(detail, detail_size, "the body is not valid Shift_JIS (CP932)");
      return 400;
    }
    text = conv.s ? conv.s : "";
    n = conv.len;
  } else if (!kpi_json_utf8_valid(body, len)) {
    size_t bad = first_bad_utf8(body, len);
    kpi_errors_add(errs, "", "encoding",
                   "byte 0x%02x at offset %zu (line %u) is not UTF-8; a file saved by Excel "
                   "as plain CSV is Shift_JIS: send charset=Shift_JIS",
                   (unsigned char)body[bad], bad, line_of(body, bad));
    snprintf(detail, detail_size, "the body is not valid UTF-8");
    return 400;
  }
  if (n >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3, n -= 3;

  csv_state st = {.out = out,
                  .max_rows = max_rows,
                  .errs = errs,
                  .detail = detail,
                  .detail_size = detail_size};
  struct csv_parser p;
  if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_REPALL_NL) != 0) {
    kpi_buf_free(&conv);
    snprintf(detail, detail_size, "out of memory");
    return 500;
  }
  /* Fed in slices so that parsing ends soon after MAX_ROWS + 1 rows or a refusal. */
  size_t pos = 0;
  while (pos < n && !st.status && out->n <= max_rows) {
    size_t step = n - pos < 4096 ? n - pos : 4096;
    size_t used = csv_parse(&p, text + pos, step, on_csv_field, on_csv_row, &st);
    if (used != step) break;
    pos += step;
  }
  int err = csv_error(&p);
  if (!st.status && pos >= n && csv_fini(&p, on_csv_field, on_csv_row, &st) != 0)
    err = CSV_EPARSE;
  if (!st.status && err == CSV_EPARSE) {
    /* The record being read when libcsv gave up is the one after the last complete one. */
    kpi_errors_add(errs, "", "syntax",
                   "row %u: a quote inside an unquoted field, or a quoted field not closed",
                   st.row + 1);
    refuse(&st, 422, "the body is not valid CSV (RFC 4180)");
  } else if (!st.status && err != CSV_SUCCESS) {
    refuse(&st, 500, "out of memory");
  }
  if (!st.status && !st.have_header) {
    kpi_errors_add(errs, "", "empty", "a header row and at least one data row are required");
    refuse(&st, 422, "the CSV has no header row");
  }
  csv_free(&p);
  kpi_buf_free(&st.rec);
  kpi_buf_free(&conv);
  if (st.status) ingest_csv_free(out);
  return st.status;
}
