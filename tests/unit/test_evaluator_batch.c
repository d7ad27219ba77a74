/* test_evaluator_batch.c: the evaluator's batch bookkeeping (services/evaluator/batch.c): next
 * offsets per partition, the raw records kept for DLQ copies, revoked partitions forgotten,
 * and the scheduler's and read API's small pure rules (backoff, pending bound, ids). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"

static ev_row *add(ev_batch *b, int32_t partition, int64_t offset, const char *key,
                   const char *value) {
  ev_row *r = ev_batch_add_row(b);
  memset(r, 0, sizeof(*r));
  r->partition = partition;
  r->offset = offset;
  r->note = strdup("note");
  ev_batch_keep_raw(b, r, key, key ? strlen(key) : 0, value, strlen(value));
  ev_batch_set_offset(b, partition, offset + 1);
  b->n_records++;
  return r;
}

static int64_t next_of(const ev_batch *b, int32_t partition) {
  for (size_t i = 0; i < b->n_offs; i++)
    if (b->offs[i].partition == partition) return b->offs[i].next_offset;
  return -1;
}

static void test_offsets_per_partition(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  ev_batch_set_offset(&b, 2, 10);
  ev_batch_set_offset(&b, 0, 5);
  ev_batch_set_offset(&b, 2, 7); /* never backwards */
  ev_batch_set_offset(&b, 2, 12);
  for (int32_t p = 3; p < 40; p++) ev_batch_set_offset(&b, p, p); /* grows past 16 */
  assert_int_equal(b.n_offs, 39);
  assert_int_equal(next_of(&b, 2), 12);
  assert_int_equal(next_of(&b, 0), 5);
  assert_int_equal(next_of(&b, 39), 39);
  ev_batch_free(&b);
}

static void test_raw_arena(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  for (int i = 0; i < 300; i++) add(&b, i % 3, i, i % 2 ? "k" : NULL, "value-bytes");
  ev_row *r = &b.rows[7];
  assert_int_equal(r->key_len, 1);
  assert_int_equal(r->val_len, 11);
  assert_memory_equal(b.raw + r->raw_off, "kvalue-bytes", 12);
  r = &b.rows[8];
  assert_int_equal(r->key_len, 0);
  assert_memory_equal(b.raw + r->raw_off, "value-bytes", 11);
  char big[70000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  r = add(&b, 1, 1000, "big", big); /* the arena grows past its first 64 KiB */
  assert_memory_equal(b.raw + r->raw_off, "bigxxx", 6);
  assert_int_equal(b.raw_len, r->raw_off + 3 + sizeof(big) - 1);
  ev_batch_free(&b);
}

static void test_drop_partitions(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  for (int i = 0; i < 9; i++) add(&b, i % 3, 100 + i, "k", "v");
  rd_kafka_topic_partition_list_t *revoked = rd_kafka_topic_partition_list_new(2);
  rd_kafka_topic_partition_list_add(revoked, "t", 1);
  ev_batch_drop_partitions(&b, revoked);
  assert_int_equal(b.n_rows, 6);
  for (size_t i = 0; i < b.n_rows; i++) assert_int_not_equal(b.rows[i].partition, 1);
  assert_int_equal(b.rows[0].offset, 100); /* order kept */
  assert_int_equal(b.rows[1].offset, 102);
  assert_int_equal(b.n_offs, 2);
  assert_int_equal(next_of(&b, 1), -1);
  assert_int_equal(next_of(&b, 2), 109);
  assert_int_equal(b.n_records, 9); /* records remain: counted as read */
  rd_kafka_topic_partition_list_add(revoked, "t", 0);
  rd_kafka_topic_partition_list_add(revoked, "t", 2);
  ev_batch_drop_partitions(&b, revoked);
  assert_int_equal(b.n_rows, 0);
  assert_int_equal(b.n_offs, 0);
  assert_int_equal(b.n_records, 0);
  rd_kafka_topic_partition_list_destroy(revoked);
  ev_batch_free(&b);
}

static void test_clear_keeps_memory(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  add(&b, 0, 1, "k", "v");
  b.bisecting = true;
  ev_poison_push(&b, 0, 1);
  b.n_poison = b.round_poison = 1;
  ev_batch_clear(&b);
  assert_int_equal(b.n_rows + b.n_offs + b.n_records + b.raw_len + b.n_todo + b.n_poison, 0);
  assert_false(b.bisecting);
  assert_non_null(b.rows);
  ev_batch_free(&b);
  assert_null(b.rows);
}

static void test_backoff(void **state) {
  (void)state;
  static const int seq[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000};
  assert_int_equal(EV_BACKOFF_MIN_MS, seq[0]);
  for (size_t i = 0; i + 1 < sizeof(seq) / sizeof(seq[0]); i++)
    assert_int_equal(ev_backoff_next(seq[i]), seq[i + 1]);
}

static void test_api_pending_bound(void **state) {
  (void)state;
  assert_true(ev_api_admit(0, 1));
  assert_false(ev_api_admit(1, 1));
  assert_true(ev_api_admit(31, 32));
  assert_false(ev_api_admit(32, 32));
  assert_false(ev_api_admit(33, 32));
  assert_true(ev_api_valid_id("KPI-1.a_b"));
  assert_false(ev_api_valid_id(""));
  assert_false(ev_api_valid_id("a/b"));
  assert_false(ev_api_valid_id("a b"));
  char long_id[KPI_ID_MAX + 2];
  memset(long_id, 'a', sizeof(long_id) - 1);
  long_id[sizeof(long_id) - 1] = '\0';
  assert_false(ev_api_valid_id(long_id));
  long_id[KPI_ID_MAX] = '\0';
  assert_true(ev_api_valid_id(long_id));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_offsets_per_partition), cmocka_unit_test(test_raw_arena),
      cmocka_unit_test(test_drop_partitions),       cmocka_unit_test(test_clear_keeps_memory),
      cmocka_unit_test(test_backoff),               cmocka_unit_test(test_api_pending_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
