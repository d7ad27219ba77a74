/* test_ingest_rules.c: ingest's answer rules (services/ingest/ingest_rules.c, through the
 * kpi_ingest library): the status of a batch answer, an atomic batch's refusal, Retry-After. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "ingest.h"

/* Item statuses of a batch, 0-terminated, and the answer's status. */
static void test_batch_status(void **state) {
  (void)state;
  static const struct {
    int items[8];
    int want;
  } cases[] = {
      {{202}, 202},
      {{202, 202, 202}, 202},
      {{422}, 207},                /* a lone bad item: nothing for the client to retry */
      {{202, 422}, 207},
      {{202, 403}, 207},
      {{202, 429}, 207},           /* partial success never becomes a retry answer */
      {{202, 503}, 207},
      {{403}, 403},
      {{403, 403, 403}, 403},
      {{403, 422}, 207},
      {{403, 429}, 207},
      {{429}, 429},
      {{429, 429}, 429},
      {{503}, 503},
      {{429, 503}, 503},           /* retryable, but not every one for a full queue */
      {{503, 503, 429}, 503},
      {{429, 422}, 207},
      {{500}, 207},
      {{202, 500}, 207},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    ingest_tally t = {0};
    for (const int *s = cases[i].items; *s; s++) ingest_tally_add(&t, *s);
    int got = ingest_batch_status(&t);
    if (got != cases[i].want) fail_msg("case %zu: got %d want %d", i, got, cases[i].want);
  }
}

static void test_tally(void **state) {
  (void)state;
  ingest_tally t = {0};
  static const int statuses[] = {202, 202, 403, 422, 429, 503, 500};
  for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
    ingest_tally_add(&t, statuses[i]);
  assert_int_equal(t.items, 7);
  assert_int_equal(t.accepted, 2);
  assert_int_equal(t.forbidden, 1);
  assert_int_equal(t.retryable, 2);
  assert_int_equal(t.queue_full, 1);
}

static void test_atomic_status(void **state) {
  (void)state;
  static const struct {
    size_t items, bad, forbidden;
    int want;
  } cases[] = {
      {1, 0, 0, 0},   {5, 0, 0, 0},   /* all good: publish */
      {1, 1, 0, 422}, {5, 1, 0, 422}, {5, 5, 0, 422},
      {5, 2, 1, 422},                 /* some forbidden, not all: 422 lists them */
      {5, 5, 4, 422}, {1, 1, 1, 403}, {5, 5, 5, 403},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int got = ingest_atomic_status(cases[i].items, cases[i].bad, cases[i].forbidden);
    if (got != cases[i].want) fail_msg("case %zu: got %d want %d", i, got, cases[i].want);
  }
}

static void test_retry_after(void **state) {
  (void)state;
  assert_string_equal(ingest_retry_after(429), "Retry-After: 1\r\n");
  assert_string_equal(ingest_retry_after(503), "Retry-After: 5\r\n");
  static const int none[] = {200, 202, 207, 400, 403, 413, 422, 500, 502};
  for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++)
    assert_null(ingest_retry_after(none[i]));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch_status),
      cmocka_unit_test(test_tally),
      cmocka_unit_test(test_atomic_status),
      cmocka_unit_test(test_retry_after),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
