/* kpi_batch.c: NDJSON framing of ingest batch bodies. */
#include "kpi_batch.h"

#include <stdbool.h>
#include <string.h>

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

int kpi_batch_ndjson_next(const char *buf, size_t len, size_t *pos, const char **line,
                          size_t *line_len) {
  size_t i = *pos;
  while (i < len) {
    const char *nl = memchr(buf + i, '\n', len - i);
    size_t end = nl ? (size_t)(nl - buf) : len;
    size_t next = nl ? end + 1 : len;
    size_t a = i, b = end;
    if (b > a && buf[b - 1] == '\r') b--;
    while (a < b && is_blank(buf[a])) a++;
    while (b > a && is_blank(buf[b - 1])) b--;
    i = next;
    if (b > a) {
      *line = buf + a;
      *line_len = b - a;
      *pos = i;
      return 1;
    }
  }
  *pos = len;
  return 0;
}

size_t kpi_batch_ndjson_count(const char *buf, size_t len, size_t limit) {
  size_t pos = 0, n = 0, l;
  const char *line;
  while (n <= limit && kpi_batch_ndjson_next(buf, len, &pos, &line, &l)) n++;
  return n;
}
