/* test_ingest_csv.c: CSV uploads to measurement input objects (services/ingest/ingest_csv.c):
 * quoting, CRLF/LF, BOM, CP932 (「芦別」 and a Japanese note), empty cells, ratio components,
 * row numbers, bad arity, header errors, bad bytes; every truncation of a body must neither
 * crash nor read out of bounds (run under ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_csv.h"
#include "kpi_http.h"

#define H "measure_id,observed_at,value,unit"
#define LED "g4-carbon-2-led-rate"
#define KONBINI "g4-digital-1-konbini-issuance"
/* CP932 bytes: 芦別 = 88 B0 95 CA; 「5月分 諸証明」; ① (NEC row 13) and ～ (FF5E in CP932). */
#define SJIS_ASHIBETSU "\x88\xb0\x95\xca"
#define SJIS_NOTE "\x35\x8c\x8e\x95\xaa\x20\x8f\x94\x8f\xd8\x96\xbe"
#define SJIS_EXT "\x87\x40\x81\x60"

/* One expected row: its spreadsheet number and either the object's compact JSON or, for a
 * bad row, "!" followed by the error code. */
typedef struct {
  unsigned row;
  const char *want;
} row_want;

typedef struct {
  const char *name;
  const char *body;
  size_t len; /* 0: strlen(body) */
  ingest_charset cs;
  int status;
  const char *err_field; /* a refusal: the first error's field and code */
  const char *err_code;
  row_want rows[6];
} csv_case;

static const csv_case cases[] = {
    {"lf", H "\n" LED ",2024-05-01,20.5,percent\n", 0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":20.5,"
          "\"unit\":\"percent\"}"}}},
    {"crlf, no final newline, blank rows counted", H "\r\n\r\n" LED ",2024-05-01,1,percent\r\n,,,\r\n" LED
     ",2024-05-02,2,percent",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{3, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"percent\"}"},
      {5, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-02\",\"value\":2,\"unit\":\"percent\"}"}}},
    {"bom, any column order and case, quoting", "\xEF\xBB\xBF" "Unit,VALUE,measure_id,observed_at,note\r\n"
     "percent,3," LED ",2024-05-01,\"a, \"\"quoted\"\"\r\nnote\"\r\n",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "{\"unit\":\"percent\",\"value\":3,\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\","
          "\"note\":\"a, \\\"quoted\\\"\\r\\nnote\"}"}}},
    {"a quoted field over two lines is one row", H ",note\n" LED ",2024-05-01,1,percent,\"x\ny\"\n" LED
     ",2024-05-02,2,percent,\n",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"percent\",\"note\":\"x\\ny\"}"},
      {3, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-02\",\"value\":2,\"unit\":\"percent\"}"}}},
    {"empty note and component are absent; ratio component", H ",component,note\n" KONBINI
     ",2024-05-31,412,percent,denominator,\n" KONBINI ",2024-05-31,3,percent,numerator,5月分\n",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "{\"measure_id\":\"" KONBINI "\",\"observed_at\":\"2024-05-31\",\"value\":412,\"unit\":\"percent\","
          "\"component\":\"denominator\"}"},
      {3, "{\"measure_id\":\"" KONBINI "\",\"observed_at\":\"2024-05-31\",\"value\":3,\"unit\":\"percent\","
          "\"component\":\"numerator\",\"note\":\"5月分\"}"}}},
    {"values that are not numbers stay strings; dates as written (the codec reads them); spaces trimmed", H "\n" LED
     ", 2024/5/1 ,abc,percent\n" LED ",2024/13/1,-1.5e1,percent\n" LED ",2024-05-01,nan,percent\n",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024/5/1\",\"value\":\"abc\",\"unit\":\"percent\"}"},
      {3, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024/13/1\",\"value\":-15,\"unit\":\"percent\"}"},
      {4, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":\"nan\",\"unit\":\"percent\"}"}}},
    {"cp932: 芦別 and a Japanese note", H ",note\r\n" LED ",2024-05-01,1,percent," SJIS_ASHIBETSU
     "\r\n" LED ",2024-05-02,2,percent," SJIS_NOTE SJIS_EXT "\r\n",
     0, INGEST_CHARSET_CP932, 0, NULL, NULL,
     {{2, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"percent\",\"note\":\"芦別\"}"},
      {3, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-02\",\"value\":2,\"unit\":\"percent\","
          "\"note\":\"5月分 諸証明①～\"}"}}},
    {"bad arity: that row only", H "\n" LED ",2024-05-01,1\n" LED ",2024-05-01,1,percent,x\n" LED
     ",2024-05-01,1,percent\n",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "!arity"}, {3, "!arity"},
      {4, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"percent\"}"}}},
    {"a NUL byte in a cell", H "\n" LED ",2024-05-01,1,perc\0ent\n", sizeof(H "\n" LED ",2024-05-01,1,perc\0ent\n") - 1,
     INGEST_CHARSET_UTF8, 0, NULL, NULL, {{2, "!encoding"}}},
    {"a value under an empty header cell", H ",\n" LED ",2024-05-01,1,percent,x\n" LED ",2024-05-01,1,percent,\n",
     0, INGEST_CHARSET_UTF8, 0, NULL, NULL,
     {{2, "!unknown_field"},
      {3, "{\"measure_id\":\"" LED "\",\"observed_at\":\"2024-05-01\",\"value\":1,\"unit\":\"percent\"}"}}},
    {"header only: no rows", H "\r\n", 0, INGEST_CHARSET_UTF8, 0, NULL, NULL, {{0, NULL}}},
    {"unknown column", H ",remarks\n" LED ",2024-05-01,1,percent,x\n", 0, INGEST_CHARSET_UTF8, 422,
     "remarks", "unknown_field", {{0, NULL}}},
    {"missing column", "measure_id,observed_at,unit\n" LED ",2024-05-01,percent\n", 0,
     INGEST_CHARSET_UTF8, 422, "value", "missing", {{0, NULL}}},
    {"duplicate column", H ",value\n", 0, INGEST_CHARSET_UTF8, 422, "value", "duplicate", {{0, NULL}}},
    {"empty body", "", 0, INGEST_CHARSET_UTF8, 422, "", "empty", {{0, NULL}}},
    {"blank lines only", "\r\n\n,,\n", 0, INGEST_CHARSET_UTF8, 422, "", "empty", {{0, NULL}}},
    {"stray quote", H "\n" LED ",2024-05-01,1,per\"cent\n", 0, INGEST_CHARSET_UTF8, 422, "", "syntax",
     {{0, NULL}}},
    {"unclosed quote", H "\n" LED ",2024-05-01,1,\"percent\n", 0, INGEST_CHARSET_UTF8, 422, "",
     "syntax", {{0, NULL}}},
    {"shift_jis sent as utf-8", H ",note\n" LED ",2024-05-01,1,percent," SJIS_ASHIBETSU "\n", 0,
     INGEST_CHARSET_UTF8, 400, "", "encoding", {{0, NULL}}},
    {"bytes that are not cp932", H ",note\n" LED ",2024-05-01,1,percent,\x85\x40\n", 0,
     INGEST_CHARSET_CP932, 400, "", "encoding", {{0, NULL}}},
    {"cp932 lead byte cut at the end", H ",note\n" LED ",2024-05-01,1,percent,\x88", 0,
     INGEST_CHARSET_CP932, 400, "", "encoding", {{0, NULL}}},
};

static void check_case(const csv_case *c) {
  size_t len = c->len ? c->len : strlen(c->body);
  ingest_csv out;
  kpi_errors errs = {.n = 0};
  char detail[160];
  int st = ingest_csv_parse(c->body, len, c->cs, 100, &out, &errs, detail, sizeof(detail));
  if (st != c->status) fail_msg("%s: status %d, want %d (%s)", c->name, st, c->status, detail);
  if (st) {
    assert_true(errs.n > 0);
    assert_true(detail[0] != '\0');
    if (strcmp(errs.items[0].field, c->err_field) || strcmp(errs.items[0].code, c->err_code))
      fail_msg("%s: error %s/%s, want %s/%s", c->name, errs.items[0].field, errs.items[0].code,
               c->err_field, c->err_code);
    assert_int_equal(out.n, 0);
    assert_null(out.rows);
    return;
  }
  size_t want_n = 0;
  while (want_n < 6 && c->rows[want_n].want) want_n++;
  if (out.n != want_n) fail_msg("%s: %zu rows, want %zu", c->name, out.n, want_n);
  for (size_t i = 0; i < want_n; i++) {
    const ingest_csv_row *r = &out.rows[i];
    if (r->row != c->rows[i].row)
      fail_msg("%s: row %zu numbered %u, want %u", c->name, i, r->row, c->rows[i].row);
    const char *want = c->rows[i].want;
    if (want[0] == '!') {
      assert_null(r->obj);
      if (strcmp(r->err.code, want + 1) != 0)
        fail_msg("%s: row %u code %s, want %s", c->name, r->row, r->err.code, want + 1);
      assert_true(r->err.message[0] != '\0');
      continue;
    }
    assert_non_null(r->obj);
    char *got = cJSON_PrintUnformatted(r->obj);
    if (strcmp(got, want) != 0) fail_msg("%s: row %u\n got %s\nwant %s", c->name, r->row, got, want);
    cJSON_free(got);
  }
  ingest_csv_free(&out);
}

static void test_cases(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) check_case(&cases[i]);
}

/* Every prefix of every case, from a fresh heap copy so that ASan sees any read past it:
 * whatever the status, nothing leaks and a refusal leaves no rows. */
static void test_every_prefix(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const csv_case *c = &cases[i];
    size_t len = c->len ? c->len : strlen(c->body);
    for (size_t k = 0; k <= len; k++) {
      char *b = malloc(k ? k : 1);
      memcpy(b, c->body, k);
      ingest_csv out;
      kpi_errors errs = {.n = 0};
      char detail[160];
      int st = ingest_csv_parse(b, k, c->cs, 100, &out, &errs, detail, sizeof(detail));
      assert_true(st == 0 || st == 400 || st == 422);
      if (st) assert_int_equal(out.n, 0);
      ingest_csv_free(&out);
      free(b);
    }
  }
}

/* Parsing stops after MAX_ROWS + 1 data rows, so that the caller can answer 413 early. */
static void test_row_limit(void **state) {
  (void)state;
  char body[8192];
  int n = snprintf(body, sizeof(body), H "\n");
  for (int i = 0; i < 50; i++)
    n += snprintf(body + n, sizeof(body) - (size_t)n, LED ",2024-05-01,%d,percent\n", i);
  ingest_csv out;
  kpi_errors errs = {.n = 0};
  char detail[160];
  assert_int_equal(ingest_csv_parse(body, (size_t)n, INGEST_CHARSET_UTF8, 10, &out, &errs,
                                    detail, sizeof(detail)), 0);
  assert_int_equal(out.n, 11);
  assert_int_equal(out.rows[10].row, 12);
  ingest_csv_free(&out);
}

static void test_charsets(void **state) {
  (void)state;
  static const struct {
    const char *name;
    int rc;
    ingest_charset cs;
  } t[] = {
      {"", 0, INGEST_CHARSET_UTF8},          {"UTF-8", 0, INGEST_CHARSET_UTF8},
      {"utf8", 0, INGEST_CHARSET_UTF8},      {"us-ascii", 0, INGEST_CHARSET_UTF8},
      {"Shift_JIS", 0, INGEST_CHARSET_CP932}, {"shift-jis", 0, INGEST_CHARSET_CP932},
      {"SJIS", 0, INGEST_CHARSET_CP932},     {"cp932", 0, INGEST_CHARSET_CP932},
      {"Windows-31J", 0, INGEST_CHARSET_CP932}, {"MS932", 0, INGEST_CHARSET_CP932},
      {"EBCDIC", -1, 0},                     {"ebcdic-cp-us", -1, 0},
      {"euc-jp", -1, 0},                     {"iso-2022-jp", -1, 0},
      {"latin1", -1, 0},                     {"utf-16", -1, 0},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    ingest_charset cs = INGEST_CHARSET_UTF8;
    if (ingest_csv_charset(t[i].name, &cs) != t[i].rc) fail_msg("charset %s", t[i].name);
    if (t[i].rc == 0 && cs != t[i].cs) fail_msg("charset %s: wrong mapping", t[i].name);
  }
}

/* The Content-Type parameter reader the batch endpoint uses for text/csv. */
static void test_media_type_charset(void **state) {
  (void)state;
  static const struct {
    const char *ct;
    int ok;
    const char *charset;
  } t[] = {
      {"text/csv", 1, ""},
      {"text/csv; charset=Shift_JIS", 1, "Shift_JIS"},
      {"TEXT/CSV;charset=\"utf-8\"", 1, "utf-8"},
      {"text/csv; charset=EBCDIC ", 1, "EBCDIC"},
      {"text/csv;", 1, ""},
      {"text/csv; header=present", 0, ""},
      {"text/csv; charset=", 0, ""},
      {"text/csv; charset=\"utf-8", 0, ""},
      {"text/csvx", 0, ""},
      {"application/json", 0, ""},
      {NULL, 0, ""},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    char cs[32];
    bool ok = kpi_http_media_type_charset(t[i].ct, "text/csv", cs, sizeof(cs));
    if (ok != (t[i].ok != 0)) fail_msg("%s: %d", t[i].ct ? t[i].ct : "(null)", ok);
    if (ok && strcmp(cs, t[i].charset) != 0) fail_msg("%s: charset %s", t[i].ct, cs);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cases),        cmocka_unit_test(test_every_prefix),
      cmocka_unit_test(test_row_limit),    cmocka_unit_test(test_charsets),
      cmocka_unit_test(test_media_type_charset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
