/* kpi_buf.c: the growable string and PostgreSQL array literals (see kpi_buf.h). */
#include "kpi_buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KPI_BUF_MIN_CAP 256

int kpi_buf_reserve(kpi_buf *b, size_t extra) {
  if (b->oom) return -1;
  if (extra > SIZE_MAX - 1 - b->len) goto fail;
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : KPI_BUF_MIN_CAP;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) {
      cap = need;
      break;
    }
    cap *= 2;
  }
  char *s = realloc(b->s, cap);
  if (!s) goto fail;
  b->s = s;
  b->cap = cap;
  return 0;
fail:
  b->oom = 1;
  return -1;
}

void kpi_buf_reset(kpi_buf *b) {
  b->len = 0;
  b->oom = 0;
  if (b->s) b->s[0] = '\0';
}

void kpi_buf_free(kpi_buf *b) {
  free(b->s);
  memset(b, 0, sizeof(*b));
}

void kpi_buf_trim(kpi_buf *b) {
  if (!b->s || b->cap <= b->len + 1) return;
  char *s = realloc(b->s, b->len + 1);
  if (!s) return; /* the larger block stays valid */
  b->s = s;
  b->cap = b->len + 1;
}

void kpi_buf_add(kpi_buf *b, const void *s, size_t n) {
  if (kpi_buf_reserve(b, n)) return;
  if (n) memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void kpi_buf_adds(kpi_buf *b, const char *s) { kpi_buf_add(b, s, strlen(s)); }

void kpi_buf_addc(kpi_buf *b, char c) {
  if (kpi_buf_reserve(b, 1)) return;
  b->s[b->len++] = c;
  b->s[b->len] = '\0';
}

void kpi_buf_vaddf(kpi_buf *b, const char *fmt, va_list ap) {
  if (b->oom) return;
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if (kpi_buf_reserve(b, (size_t)n)) return;
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void kpi_buf_addf(kpi_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kpi_buf_vaddf(b, fmt, ap);
  va_end(ap);
}

const char *kpi_buf_str(const kpi_buf *b) { return b->s ? b->s : ""; }

char *kpi_buf_detach(kpi_buf *b, size_t *len) {
  if (!b->oom && !b->s) kpi_buf_reserve(b, 0);
  if (b->oom) {
    kpi_buf_free(b);
    return NULL;
  }
  if (!b->len) b->s[0] = '\0';
  char *s = b->s;
  if (len) *len = b->len;
  memset(b, 0, sizeof(*b));
  return s;
}

void kpi_buf_arr_begin(kpi_buf *b) {
  kpi_buf_reset(b);
  kpi_buf_addc(b, '{');
}

static void arr_sep(kpi_buf *b) {
  if (b->len > 1) kpi_buf_addc(b, ',');
}

void kpi_buf_arr_str(kpi_buf *b, const char *s) {
  arr_sep(b);
  size_t n = strlen(s);
  /* Worst case every byte escaped, plus the quotes: one reservation, then plain stores. */
  if (n > (SIZE_MAX - 2) / 2 || kpi_buf_reserve(b, 2 * n + 2)) {
    b->oom = 1;
    return;
  }
  char *o = b->s + b->len;
  *o++ = '"';
  for (const char *p = s; *p; p++) {
    if (*p == '"' || *p == '\\') *o++ = '\\';
    *o++ = *p;
  }
  *o++ = '"';
  *o = '\0';
  b->len = (size_t)(o - b->s);
}

void kpi_buf_arr_raw(kpi_buf *b, const char *s) {
  arr_sep(b);
  kpi_buf_adds(b, s);
}

void kpi_buf_arr_null(kpi_buf *b) {
  arr_sep(b);
  kpi_buf_add(b, "NULL", 4);
}

void kpi_buf_arr_end(kpi_buf *b) { kpi_buf_addc(b, '}'); }
