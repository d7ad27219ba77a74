/* report_csv.c: one CSV row at a time, quoting by libcsv. */
#include <csv.h>
#include <string.h>

#include "report_csv.h"

static void field(kpi_buf *b, const char *s) {
  size_t n = strlen(s);
  /* csv_write returns the size the quoted field needs and writes only what fits, so size it
   * first (at most 2n + 2 bytes) and write straight into the buffer's free space. */
  size_t need = csv_write(NULL, 0, s, n);
  if (kpi_buf_reserve(b, need) != 0) return;
  csv_write(b->s + b->len, need, s, n);
  b->len += need;
  b->s[b->len] = '\0';
}

void report_csv_row(kpi_buf *b, const char *const *fields, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (i) kpi_buf_addc(b, ',');
    field(b, fields[i] ? fields[i] : "");
  }
  kpi_buf_add(b, "\r\n", 2);
}
