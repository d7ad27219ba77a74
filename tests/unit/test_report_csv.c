/* test_report_csv.c: CSV rows written through libcsv parse back (with libcsv, strictly) to
 * the same fields: quotes, commas, CR/LF inside fields, Japanese text, empty fields. */
#include <csv.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "report_csv.h"

typedef struct {
  char fields[16][64];
  size_t n_fields;
  size_t n_rows;
  size_t row_len[4];
} parsed;

static void on_field(void *s, size_t len, void *arg) {
  parsed *p = arg;
  assert_true(p->n_fields < 16 && len < 64);
  memcpy(p->fields[p->n_fields], s ? s : "", len);
  p->fields[p->n_fields][len] = '\0';
  p->n_fields++;
}

static void on_row(int c, void *arg) {
  (void)c;
  parsed *p = arg;
  p->row_len[p->n_rows++] = p->n_fields;
}

static void test_roundtrip(void **state) {
  (void)state;
  const char *row1[] = {"基本目標", "施策, \"引用\"", "", "line1\r\nline2", NULL};
  const char *row2[] = {"2", "<script>", "12.4", "=1+1", "遅れ"};
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_adds(&b, REPORT_CSV_BOM);
  report_csv_row(&b, row1, 5);
  report_csv_row(&b, row2, 5);
  assert_false(b.oom);
  const char *s = kpi_buf_str(&b);
  assert_int_equal(memcmp(s, "\xEF\xBB\xBF", 3), 0);
  /* RFC 4180: quotes doubled inside a quoted field, rows end with CRLF. */
  assert_non_null(strstr(s, "\"施策, \"\"引用\"\"\""));
  assert_int_equal(memcmp(s + b.len - 2, "\r\n", 2), 0);

  struct csv_parser p;
  assert_int_equal(csv_init(&p, CSV_STRICT | CSV_STRICT_FINI), 0);
  parsed out = {0};
  size_t body = b.len - 3;
  assert_int_equal(csv_parse(&p, s + 3, body, on_field, on_row, &out), body);
  assert_int_equal(csv_fini(&p, on_field, on_row, &out), 0);
  csv_free(&p);
  assert_int_equal(out.n_rows, 2);
  assert_int_equal(out.row_len[0], 5);
  assert_int_equal(out.row_len[1], 10);
  for (int i = 0; i < 5; i++) {
    assert_string_equal(out.fields[i], row1[i] ? row1[i] : "");
    assert_string_equal(out.fields[5 + i], row2[i]);
  }
  kpi_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
