/* ev_batch.c: the records of one batch: rows, next offsets per partition, the raw records kept for
 * their DLQ copies, and forgetting revoked partitions. Pure bookkeeping, no I/O. */
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"

static void row_free(ev_row *r) {
  free(r->note);
  free(r->reason);
}

void ev_batch_clear(ev_batch *b) {
  for (size_t i = 0; i < b->n_rows; i++) row_free(&b->rows[i]);
  b->n_rows = 0;
  b->n_offs = 0;
  b->n_records = 0;
  b->raw_len = 0;
  b->bisecting = false;
  b->n_todo = 0;
  b->n_poison = 0;
  b->round_poison = 0;
  kpi_buf_reset(&b->copy);
  b->copy_upto = 0;
}

void ev_batch_free(ev_batch *b) {
  ev_batch_clear(b);
  free(b->rows);
  free(b->offs);
  free(b->raw);
  free(b->todo);
  kpi_buf_free(&b->copy);
  memset(b, 0, sizeof(*b));
}

ev_row *ev_batch_add_row(ev_batch *b) {
  if (b->n_rows == b->cap_rows) {
    size_t cap = b->cap_rows ? b->cap_rows * 2 : 256;
    ev_row *r = realloc(b->rows, cap * sizeof(*r));
    if (!r) abort();
    b->rows = r;
    b->cap_rows = cap;
  }
  return &b->rows[b->n_rows++];
}

void ev_batch_set_offset(ev_batch *b, int32_t partition, int64_t next) {
  for (size_t i = 0; i < b->n_offs; i++) {
    if (b->offs[i].partition == partition) {
      if (next > b->offs[i].next_offset) b->offs[i].next_offset = next;
      return;
    }
  }
  if (b->n_offs == b->cap_offs) {
    size_t cap = b->cap_offs ? b->cap_offs * 2 : 16;
    ev_offset *o = realloc(b->offs, cap * sizeof(*o));
    if (!o) abort(); /* losing an offset would stall or skip: better to restart */
    b->offs = o;
    b->cap_offs = cap;
  }
  b->offs[b->n_offs].partition = partition;
  b->offs[b->n_offs].next_offset = next;
  b->n_offs++;
}

/* One arena per batch: a realloc now and then instead of a malloc per record. */
void ev_batch_keep_raw(ev_batch *b, ev_row *r, const void *key, size_t key_len,
                       const void *value, size_t value_len) {
  size_t need = key_len + value_len;
  if (b->raw_len + need > b->raw_cap) {
    size_t cap = b->raw_cap ? b->raw_cap : 65536;
    while (cap < b->raw_len + need) cap *= 2;
    char *raw = realloc(b->raw, cap);
    if (!raw) abort(); /* as for the rows: a record we cannot keep must be re-read */
    b->raw = raw;
    b->raw_cap = cap;
  }
  r->raw_off = b->raw_len;
  r->key_len = (uint32_t)key_len;
  r->val_len = (uint32_t)value_len;
  if (key_len) memcpy(b->raw + b->raw_len, key, key_len);
  if (value_len) memcpy(b->raw + b->raw_len + key_len, value, value_len);
  b->raw_len += need;
}

void ev_batch_drop_last(ev_batch *b) {
  if (b->n_rows == 0) return;
  row_free(&b->rows[--b->n_rows]);
  if (b->copy_upto > b->n_rows) {
    kpi_buf_reset(&b->copy); /* rebuilt from the first row when next extended */
    b->copy_upto = 0;
  }
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
      row_free(&b->rows[i]);
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
  kpi_buf_reset(&b->copy); /* rows moved: rebuilt from the first row when next extended */
  b->copy_upto = 0;
}

bool ev_row_retracts(const ev_row *r) {
  return r->kind == EV_ROW_RETRACTION || (r->kind == EV_ROW_MEASUREMENT && r->has_corrects);
}

ev_cause ev_row_cause(const ev_row *r) {
  return ev_row_retracts(r) ? EV_CAUSE_RETRACTION : EV_CAUSE_MEASUREMENT;
}

/* docs/evaluator.md "History causes": one history row per measure and transaction, so a batch
 * that both adds and takes back figures of a measure names the retraction, the rarer and more
 * telling of the two. */
ev_cause ev_cause_merge(ev_cause a, ev_cause b) {
  return a == EV_CAUSE_RETRACTION || b == EV_CAUSE_RETRACTION ? EV_CAUSE_RETRACTION : a;
}

const char *ev_cause_name(ev_cause c) {
  switch (c) {
    case EV_CAUSE_RETRACTION: return "retraction";
    case EV_CAUSE_SWEEP: return "sweep";
    case EV_CAUSE_CATALOG_RELOAD: return "catalog_reload";
    case EV_CAUSE_MEASUREMENT: break;
  }
  return "measurement";
}
