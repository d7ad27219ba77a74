/* test_evaluator_poison.c: the evaluator's poison search (services/evaluator/poison.c): range
 * bookkeeping (next range, push, pop, halving by live rows), the "every row alone succeeded but
 * together they fail" rule, the SQLSTATE classes, and whole searches simulated against a
 * database that refuses given rows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"

static void batch_with_rows(ev_batch *b, size_t n) {
  memset(b, 0, sizeof(*b));
  for (size_t i = 0; i < n; i++) {
    ev_row *r = ev_batch_add_row(b);
    memset(r, 0, sizeof(*r));
  }
}

static void test_next_range(void **state) {
  (void)state;
  ev_batch b;
  batch_with_rows(&b, 6);
  size_t lo, hi;
  bool offsets;
  ev_poison_next_range(&b, &lo, &hi, &offsets);
  assert_int_equal(lo, 0);
  assert_int_equal(hi, 6);
  assert_true(offsets);
  assert_false(ev_poison_searching(&b));
  b.bisecting = true;
  ev_poison_push(&b, 3, 6);
  ev_poison_push(&b, 0, 3);
  assert_true(ev_poison_searching(&b));
  ev_poison_next_range(&b, &lo, &hi, &offsets);
  assert_int_equal(lo, 0); /* the top: the first half */
  assert_int_equal(hi, 3);
  assert_false(offsets);
  ev_poison_range_done(&b);
  ev_poison_next_range(&b, &lo, &hi, &offsets);
  assert_int_equal(lo, 3);
  assert_int_equal(hi, 6);
  ev_poison_range_done(&b);
  /* Every range written: the whole batch once more, with the offsets. */
  assert_false(ev_poison_searching(&b));
  ev_poison_next_range(&b, &lo, &hi, &offsets);
  assert_int_equal(lo, 0);
  assert_int_equal(hi, 6);
  assert_true(offsets);
  ev_batch_free(&b);
}

static void test_push_grows(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  for (size_t i = 0; i < 100; i++) ev_poison_push(&b, i, i + 1);
  assert_int_equal(b.n_todo, 100);
  assert_int_equal(b.todo[99].lo, 99);
  assert_int_equal(b.todo[0].hi, 1);
  ev_batch_free(&b);
}

static void test_first_failure_splits(void **state) {
  (void)state;
  ev_batch b;
  batch_with_rows(&b, 4);
  size_t idx[] = {0, 1, 2, 3};
  assert_int_equal(ev_poison_on_data_error(&b, true, idx, 4, 0, 4), EV_POISON_SPLIT);
  assert_true(b.bisecting);
  assert_int_equal(b.round_poison, 0);
  assert_int_equal(b.n_todo, 2);
  assert_int_equal(b.todo[1].lo, 0); /* top: first half first */
  assert_int_equal(b.todo[1].hi, 2);
  assert_int_equal(b.todo[0].lo, 2);
  assert_int_equal(b.todo[0].hi, 4);
  ev_batch_free(&b);
}

/* Halves hold live rows each: poison rows already found are not counted. */
static void test_split_by_live_rows(void **state) {
  (void)state;
  ev_batch b;
  batch_with_rows(&b, 10);
  size_t idx[] = {0, 3, 7, 9};
  assert_int_equal(ev_poison_on_data_error(&b, true, idx, 4, 0, 10), EV_POISON_SPLIT);
  assert_int_equal(b.todo[1].lo, 0);
  assert_int_equal(b.todo[1].hi, 7);
  assert_int_equal(b.todo[0].lo, 7);
  assert_int_equal(b.todo[0].hi, 10);
  ev_batch_free(&b);
}

static void test_range_failure_pops_then_names_row(void **state) {
  (void)state;
  ev_batch b;
  batch_with_rows(&b, 4);
  b.bisecting = true;
  ev_poison_push(&b, 2, 4);
  ev_poison_push(&b, 1, 2);
  size_t idx[] = {1};
  assert_int_equal(ev_poison_on_data_error(&b, false, idx, 1, 1, 2), EV_POISON_ROW);
  assert_int_equal(b.n_todo, 1); /* [1, 2) replaced by nothing: row 1 is the poison */
  size_t none[1];
  assert_int_equal(ev_poison_on_data_error(&b, false, none, 0, 2, 4), EV_POISON_EMPTY);
  assert_int_equal(b.n_todo, 0);
  ev_batch_free(&b);
}

/* Every row was written on its own and together they still fail: not the rows' fault. */
static void test_every_row_alone_succeeded_together_fail(void **state) {
  (void)state;
  ev_batch b;
  batch_with_rows(&b, 4);
  b.bisecting = true;
  b.n_poison = b.round_poison = 0;
  size_t idx[] = {0, 1, 2, 3};
  assert_int_equal(ev_poison_on_data_error(&b, true, idx, 4, 0, 4), EV_POISON_NOT_IN_ROWS);
  assert_int_equal(b.n_todo, 0);
  /* A round that found poison rows starts another round instead. */
  b.n_poison = 1;
  assert_int_equal(ev_poison_on_data_error(&b, true, idx, 4, 0, 4), EV_POISON_SPLIT);
  assert_int_equal(b.round_poison, 1);
  ev_batch_free(&b);
}

static void test_sqlstate_classes(void **state) {
  (void)state;
  static const struct {
    const char *state;
    bool data;
  } cases[] = {{"22003", true},  {"22P02", true},  {"23502", true}, {"23514", true},
               {"40001", false}, {"08006", false}, {"42P01", false}, {"2", false},
               {"", false},      {"57014", false}, {"21000", false}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(ev_sqlstate_is_data_error(cases[i].state), cases[i].data);
}

/* A database that refuses any transaction writing a row of BAD that is not yet poison (BAD
 * ends with SIZE_MAX); with ALWAYS it also refuses every transaction storing the offsets. */
static bool db_refuses(const ev_batch *b, const size_t *idx, size_t n, bool offsets,
                       const size_t *bad, bool always) {
  if (always && offsets) return true;
  for (size_t k = 0; k < n; k++)
    for (const size_t *p = bad; *p != SIZE_MAX; p++)
      if (idx[k] == *p && !b->rows[idx[k]].poison) return true;
  return false;
}

/* Runs the search as ev_txn.c does; returns the transactions run, -1 for "not in the rows". */
static int simulate(ev_batch *b, const size_t *bad, bool always) {
  size_t idx[64];
  for (int txns = 1; txns < 1000; txns++) {
    size_t lo, hi, n = 0;
    bool offsets;
    ev_poison_next_range(b, &lo, &hi, &offsets);
    for (size_t i = lo; i < hi; i++)
      if (!b->rows[i].poison) idx[n++] = i;
    if (!db_refuses(b, idx, n, offsets, bad, always)) {
      if (offsets) return txns;
      ev_poison_range_done(b);
      continue;
    }
    ev_poison_verdict v = ev_poison_on_data_error(b, offsets, idx, n, lo, hi);
    if (v == EV_POISON_NOT_IN_ROWS) return -1;
    if (v == EV_POISON_ROW) {
      b->rows[idx[0]].poison = true;
      b->n_poison++;
    }
  }
  fail_msg("the search does not end");
  return 0;
}

static void test_simulated_searches(void **state) {
  (void)state;
  static const struct {
    size_t n;
    size_t bad[6];
  } cases[] = {
      {1, {0, SIZE_MAX}},           {8, {5, SIZE_MAX}},      {8, {0, 7, SIZE_MAX}},
      {13, {2, 3, 4, SIZE_MAX}},    {64, {63, SIZE_MAX}},    {64, {0, 21, 22, 40, 63, SIZE_MAX}},
      {5, {SIZE_MAX}},
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    ev_batch b;
    batch_with_rows(&b, cases[c].n);
    assert_true(simulate(&b, cases[c].bad, false) > 0);
    size_t expected = 0;
    for (const size_t *p = cases[c].bad; *p != SIZE_MAX; p++) {
      assert_true(b.rows[*p].poison);
      expected++;
    }
    assert_int_equal(b.n_poison, expected); /* and no other row */
    assert_int_equal(b.n_todo, 0);
    ev_batch_free(&b);
  }
}

static void test_simulated_not_in_rows(void **state) {
  (void)state;
  ev_batch b;
  batch_with_rows(&b, 8);
  const size_t none[] = {SIZE_MAX};
  assert_int_equal(simulate(&b, none, true), -1);
  assert_int_equal(b.n_poison, 0);
  ev_batch_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_next_range),
      cmocka_unit_test(test_push_grows),
      cmocka_unit_test(test_first_failure_splits),
      cmocka_unit_test(test_split_by_live_rows),
      cmocka_unit_test(test_range_failure_pops_then_names_row),
      cmocka_unit_test(test_every_row_alone_succeeded_together_fail),
      cmocka_unit_test(test_sqlstate_classes),
      cmocka_unit_test(test_simulated_searches),
      cmocka_unit_test(test_simulated_not_in_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
