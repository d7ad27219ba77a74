/* buf.c: growable strings, PostgreSQL array literals and batch bookkeeping for the evaluator. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"

static int buf_reserve(ev_buf *b, size_t extra) {
  if (b->oom) return -1;
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *s = realloc(b->s, cap);
  if (!s) {
    b->oom = 1;
    return -1;
  }
  b->s = s;
  b->cap = cap;
  return 0;
}

void ev_buf_reset(ev_buf *b) {
  b->len = 0;
  b->oom = 0;
  if (b->s) b->s[0] = '\0';
}

void ev_buf_free(ev_buf *b) {
  free(b->s);
  memset(b, 0, sizeof(*b));
}

void ev_buf_add(ev_buf *b, const char *s, size_t n) {
  if (buf_reserve(b, n)) return;
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void ev_buf_adds(ev_buf *b, const char *s) { ev_buf_add(b, s, strlen(s)); }

void ev_buf_addf(ev_buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || buf_reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Elements are separated lazily: the literal is "{" until the first element. */
void ev_arr_begin(ev_buf *b) {
  ev_buf_reset(b);
  ev_buf_add(b, "{", 1);
}

static void arr_sep(ev_buf *b) {
  if (b->len > 1) ev_buf_add(b, ",", 1);
}

void ev_arr_str(ev_buf *b, const char *s) {
  arr_sep(b);
  size_t n = strlen(s);
  if (buf_reserve(b, 2 * n + 2)) return;
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

void ev_arr_raw(ev_buf *b, const char *s) {
  arr_sep(b);
  ev_buf_adds(b, s);
}

void ev_arr_null(ev_buf *b) {
  arr_sep(b);
  ev_buf_add(b, "NULL", 4);
}

void ev_arr_end(ev_buf *b) { ev_buf_add(b, "}", 1); }

void ev_batch_clear(ev_batch *b) {
  for (size_t i = 0; i < b->n_rows; i++) free(b->rows[i].note);
  b->n_rows = 0;
  b->n_offs = 0;
  b->n_records = 0;
  b->raw_len = 0;
  b->bisecting = false;
  b->n_todo = 0;
  b->n_poison = 0;
  b->round_poison = 0;
}

void ev_batch_free(ev_batch *b) {
  ev_batch_clear(b);
  free(b->rows);
  free(b->offs);
  free(b->raw);
  free(b->todo);
  memset(b, 0, sizeof(*b));
}

static int in_list(const rd_kafka_topic_partition_list_t *parts, int32_t partition) {
  for (int i = 0; parts && i < parts->cnt; i++)
    if (parts->elems[i].partition == partition) return 1;
  return 0;
}

void ev_batch_drop_partitions(ev_batch *b, const rd_kafka_topic_partition_list_t *parts) {
  size_t w = 0;
  for (size_t i = 0; i < b->n_rows; i++) {
    if (in_list(parts, b->rows[i].partition)) {
      free(b->rows[i].note);
      continue;
    }
    b->rows[w++] = b->rows[i];
  }
  b->n_rows = w;
  w = 0;
  for (size_t i = 0; i < b->n_offs; i++)
    if (!in_list(parts, b->offs[i].partition)) b->offs[w++] = b->offs[i];
  b->n_offs = w;
  if (b->n_rows == 0 && b->n_offs == 0) b->n_records = 0;
}
