/* batch.c: the records of one batch: rows, next offsets per partition, the raw records kept for
 * their DLQ copies, and forgetting revoked partitions. Pure bookkeeping, no I/O. */
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"

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
