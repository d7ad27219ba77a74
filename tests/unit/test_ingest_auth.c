/* test_ingest_auth.c: the verified Authorization values (services/ingest/ingest_auth.h): only
 * the very same whole value is found, values too long are never kept, the oldest of more than
 * INGEST_AUTH_SLOTS values goes, and clearing forgets them all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ingest_auth.h"

static const kpi_department dept_a = {.id = "a"}, dept_b = {.id = "b"};
static const char tok[] = "Bearer kpi_0123456789abcdefghijklmnopqrstuv";

static void test_same_value_only(void **state) {
  (void)state;
  ingest_auth_cache c = {0};
  assert_null(ingest_auth_find(&c, tok)); /* nothing remembered yet */
  ingest_auth_remember(&c, tok, &dept_a);
  assert_ptr_equal(ingest_auth_find(&c, tok), &dept_a);
  char v[sizeof(tok) + 1];
  /* One byte changed anywhere, a prefix, one byte more: each is another value. */
  for (size_t i = 0; i < sizeof(tok) - 1; i++) {
    memcpy(v, tok, sizeof(tok));
    v[i] ^= 1;
    assert_null(ingest_auth_find(&c, v));
  }
  memcpy(v, tok, sizeof(tok));
  v[sizeof(tok) - 2] = '\0';
  assert_null(ingest_auth_find(&c, v));
  snprintf(v, sizeof(v), "%sw", tok);
  assert_null(ingest_auth_find(&c, v));
  assert_null(ingest_auth_find(&c, "")); /* free slots never match */
  ingest_auth_clear(&c);
  assert_null(ingest_auth_find(&c, tok));
}

static void test_too_long_not_kept(void **state) {
  (void)state;
  ingest_auth_cache c = {0};
  ingest_auth_remember(&c, tok, &dept_a);
  char longv[INGEST_AUTH_MAX + 2];
  memset(longv, 'x', sizeof(longv) - 1);
  longv[sizeof(longv) - 1] = '\0';
  for (int i = 0; i < INGEST_AUTH_SLOTS + 1; i++) ingest_auth_remember(&c, longv, &dept_b);
  assert_null(ingest_auth_find(&c, longv));
  assert_ptr_equal(ingest_auth_find(&c, tok), &dept_a); /* and nothing was evicted for it */
  longv[INGEST_AUTH_MAX] = '\0';                        /* exactly INGEST_AUTH_MAX: kept */
  ingest_auth_remember(&c, longv, &dept_b);
  assert_ptr_equal(ingest_auth_find(&c, longv), &dept_b);
}

static void test_oldest_replaced(void **state) {
  (void)state;
  ingest_auth_cache c = {0};
  char v[INGEST_AUTH_SLOTS + 1][32];
  for (int i = 0; i <= INGEST_AUTH_SLOTS; i++) {
    snprintf(v[i], sizeof(v[i]), "Bearer t%d", i);
    ingest_auth_remember(&c, v[i], i % 2 ? &dept_b : &dept_a);
  }
  assert_null(ingest_auth_find(&c, v[0]));
  for (int i = 1; i <= INGEST_AUTH_SLOTS; i++)
    assert_ptr_equal(ingest_auth_find(&c, v[i]), i % 2 ? &dept_b : &dept_a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_same_value_only),
      cmocka_unit_test(test_too_long_not_kept),
      cmocka_unit_test(test_oldest_replaced),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
