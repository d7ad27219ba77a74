/* test_buf.c: kpi_buf, the growable string: growth, printf without a size limit, the failure
 * flag (realloc made to fail through the linker's --wrap), PostgreSQL array literals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_buf.h"

/* Linked with -Wl,--wrap=realloc (tests/CMakeLists.txt): every realloc of the libraries comes
 * here. FAIL_AFTER < 0 passes everything through; otherwise that many calls succeed, then all
 * fail. */
void *__real_realloc(void *p, size_t n);
static int fail_after = -1;
void *__wrap_realloc(void *p, size_t n) {
  if (fail_after == 0) return NULL;
  if (fail_after > 0) fail_after--;
  return __real_realloc(p, n);
}

static void expect_buf(const kpi_buf *b, const char *want, size_t want_len) {
  assert_int_equal(b->oom, 0);
  assert_int_equal(b->len, want_len);
  assert_true(b->cap >= b->len + 1);
  assert_int_equal(b->s[b->len], '\0');
  assert_memory_equal(b->s, want, want_len);
}

static void test_empty(void **state) {
  (void)state;
  kpi_buf b = KPI_BUF_INIT;
  assert_null(b.s);
  assert_string_equal(kpi_buf_str(&b), "");
  kpi_buf_add(&b, NULL, 0);
  expect_buf(&b, "", 0);
  kpi_buf_reset(&b);
  expect_buf(&b, "", 0);
  size_t len = 99;
  char *s = kpi_buf_detach(&b, &len);
  assert_string_equal(s, "");
  assert_int_equal(len, 0);
  assert_null(b.s);
  free(s);
  kpi_buf_free(&b);
}

/* Appends of many sizes and chunkings give exactly the bytes appended, NULs included. */
static void test_growth(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 2, 255, 256, 257, 511, 512, 513, 1000, 4095, 4096, 4097,
                                 65536, 100003};
  static const size_t chunks[] = {1, 3, 7, 64, 255, 256, 1000, 70000};
  char *want = malloc(100003);
  assert_non_null(want);
  for (size_t i = 0; i < 100003; i++) want[i] = (char)(i * 31 + 7);
  for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++)
    for (size_t ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
      kpi_buf b = KPI_BUF_INIT;
      size_t n = sizes[si], c = chunks[ci];
      for (size_t at = 0; at < n; at += c) kpi_buf_add(&b, want + at, at + c > n ? n - at : c);
      expect_buf(&b, want, n);
      /* Amortised: never more than twice what is needed, once past the first block. */
      assert_true(b.cap <= 256 || b.cap < 2 * (n + 1));
      kpi_buf_free(&b);
      assert_null(b.s);
      assert_int_equal(b.len, 0);
    }
  free(want);
}

static void test_adds_addc_reset(void **state) {
  (void)state;
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_adds(&b, "abc");
  kpi_buf_addc(&b, '-');
  kpi_buf_addc(&b, '\0');
  kpi_buf_adds(&b, "z");
  expect_buf(&b, "abc-\0z", 6);
  char *keep = b.s;
  kpi_buf_reset(&b);
  expect_buf(&b, "", 0);
  assert_ptr_equal(b.s, keep); /* memory kept for reuse */
  kpi_buf_adds(&b, "again");
  assert_string_equal(kpi_buf_str(&b), "again");
  kpi_buf_free(&b);
}

/* printf output of any length: the old per-module buffers stopped at 512 bytes. */
static void test_printf_unbounded(void **state) {
  (void)state;
  static const size_t lens[] = {0, 1, 255, 256, 511, 512, 513, 2048, 100000};
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    char *arg = malloc(lens[i] + 1);
    assert_non_null(arg);
    memset(arg, 'x', lens[i]);
    arg[lens[i]] = '\0';
    kpi_buf b = KPI_BUF_INIT;
    kpi_buf_adds(&b, "<");
    kpi_buf_addf(&b, "%s|%d|%.3f", arg, -42, 2.5);
    char tail[32];
    int tl = snprintf(tail, sizeof(tail), "|%d|%.3f", -42, 2.5);
    assert_int_equal(b.len, 1 + lens[i] + (size_t)tl);
    assert_int_equal(b.s[0], '<');
    assert_memory_equal(b.s + 1, arg, lens[i]);
    assert_string_equal(b.s + 1 + lens[i], tail);
    kpi_buf_free(&b);
    free(arg);
  }
}

static void test_detach(void **state) {
  (void)state;
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_addf(&b, "%d-%s", 7, "seven");
  size_t len = 0;
  char *s = kpi_buf_detach(&b, &len);
  assert_string_equal(s, "7-seven");
  assert_int_equal(len, 7);
  assert_null(b.s);
  assert_int_equal(b.cap, 0);
  free(s);
}

/* One failed allocation sets OOM; every later append is a no-op, the prefix stays valid, and
 * only reset (or arr_begin) clears the flag. */
static void test_failure_flag(void **state) {
  (void)state;
  static const struct {
    int succeed; /* reallocs allowed before the failure */
    size_t bytes; /* appended in 100-byte steps */
  } cases[] = {{0, 100}, {1, 300}, {1, 1000}, {2, 2000}, {3, 5000}};
  char chunk[100];
  memset(chunk, 'q', sizeof(chunk));
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kpi_buf b = KPI_BUF_INIT;
    fail_after = cases[i].succeed;
    for (size_t n = 0; n < cases[i].bytes; n += 100) kpi_buf_add(&b, chunk, 100);
    size_t len_at_failure = b.len;
    assert_int_equal(b.oom, 1);
    kpi_buf_adds(&b, "more");
    kpi_buf_addc(&b, 'c');
    kpi_buf_addf(&b, "%s", "printf");
    kpi_buf_arr_str(&b, "s");
    assert_int_equal(b.len, len_at_failure);
    assert_int_equal(kpi_buf_reserve(&b, 0), -1);
    for (size_t k = 0; k < b.len; k++) assert_int_equal(b.s[k], 'q');
    fail_after = -1;
    kpi_buf_reset(&b);
    assert_int_equal(b.oom, 0);
    kpi_buf_adds(&b, "ok");
    expect_buf(&b, "ok", 2);
    fail_after = 0;
    kpi_buf_add(&b, chunk, 100); /* may or may not need to grow */
    kpi_buf_addf(&b, "%0*d", 100000, 1);
    assert_int_equal(b.oom, 1);
    fail_after = -1;
    assert_null(kpi_buf_detach(&b, NULL));
    assert_null(b.s);
    kpi_buf_free(&b);
  }
  /* A size that cannot be represented fails the same way, without calling realloc. */
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_adds(&b, "x");
  assert_int_equal(kpi_buf_reserve(&b, SIZE_MAX), -1);
  assert_int_equal(b.oom, 1);
  kpi_buf_free(&b);
}

/* PostgreSQL array literals: the exact text ev_arr_* wrote. */
typedef enum { E_END = 0, E_STR, E_RAW, E_NULL } elem_kind;
typedef struct {
  elem_kind kind;
  const char *s;
} elem;

/* kpi_buf_trim: the capacity shrinks to the string and its NUL, the bytes stay; a refused
 * realloc leaves the buffer as it was; an empty buffer is left alone. */
static void test_trim(void **state) {
  (void)state;
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_trim(&b);
  assert_null(b.s);
  for (int i = 0; i < 300; i++) kpi_buf_addc(&b, (char)('a' + i % 26));
  assert_true(b.cap > b.len + 1);
  char want[300];
  memcpy(want, b.s, sizeof(want));
  size_t cap = b.cap;
  fail_after = 0;
  kpi_buf_trim(&b);
  fail_after = -1;
  assert_int_equal(b.cap, cap);
  expect_buf(&b, want, sizeof(want));
  kpi_buf_trim(&b);
  assert_int_equal(b.cap, b.len + 1);
  expect_buf(&b, want, sizeof(want));
  kpi_buf_trim(&b); /* nothing to give back */
  assert_int_equal(b.cap, 301);
  kpi_buf_free(&b);
}

static void test_array_literals(void **state) {
  (void)state;
  static const struct {
    elem elems[5];
    const char *want;
  } cases[] = {
      {{{E_END, NULL}}, "{}"},
      {{{E_STR, "a"}}, "{\"a\"}"},
      {{{E_STR, ""}}, "{\"\"}"},
      {{{E_STR, "NULL"}, {E_NULL, NULL}}, "{\"NULL\",NULL}"},
      {{{E_NULL, NULL}, {E_NULL, NULL}}, "{NULL,NULL}"},
      {{{E_STR, "say \"hi\""}}, "{\"say \\\"hi\\\"\"}"},
      {{{E_STR, "back\\slash"}, {E_STR, "\\"}}, "{\"back\\\\slash\",\"\\\\\"}"},
      {{{E_STR, "a,b"}, {E_STR, "{c}"}, {E_STR, " d "}}, "{\"a,b\",\"{c}\",\" d \"}"},
      {{{E_STR, "環境局"}, {E_STR, "€\xf0\x9f\x98\x80"}}, "{\"環境局\",\"€\xf0\x9f\x98\x80\"}"},
      {{{E_RAW, "12.5"}, {E_NULL, NULL}, {E_RAW, "2024-05-01"}}, "{12.5,NULL,2024-05-01}"},
      {{{E_STR, "x"}, {E_RAW, "1"}, {E_STR, "\"\\"}, {E_NULL, NULL}, {E_STR, "'"}},
       "{\"x\",1,\"\\\"\\\\\",NULL,\"'\"}"},
  };
  kpi_buf b = KPI_BUF_INIT;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kpi_buf_adds(&b, "leftover text from the previous use");
    kpi_buf_arr_begin(&b);
    for (const elem *e = cases[i].elems; e < cases[i].elems + 5 && e->kind != E_END; e++) {
      if (e->kind == E_STR) kpi_buf_arr_str(&b, e->s);
      else if (e->kind == E_RAW) kpi_buf_arr_raw(&b, e->s);
      else kpi_buf_arr_null(&b);
    }
    kpi_buf_arr_end(&b);
    if (b.oom || strcmp(b.s, cases[i].want) != 0)
      fail_msg("case %zu: got %s want %s", i, b.s, cases[i].want);
    assert_int_equal(b.len, strlen(cases[i].want));
  }
  /* A long element is escaped in one reservation: 3000 quotes become 6000 bytes. */
  char q[3001];
  memset(q, '"', 3000);
  q[3000] = '\0';
  kpi_buf_arr_begin(&b);
  kpi_buf_arr_str(&b, q);
  kpi_buf_arr_end(&b);
  assert_int_equal(b.len, 6000 + 4);
  /* arr_begin starts over, failure flag included, as ev_arr_begin did. */
  b.oom = 1;
  kpi_buf_arr_begin(&b);
  assert_int_equal(b.oom, 0);
  assert_string_equal(b.s, "{");
  kpi_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),           cmocka_unit_test(test_growth),
      cmocka_unit_test(test_adds_addc_reset), cmocka_unit_test(test_printf_unbounded),
      cmocka_unit_test(test_detach),          cmocka_unit_test(test_failure_flag),
      cmocka_unit_test(test_array_literals),  cmocka_unit_test(test_trim),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
