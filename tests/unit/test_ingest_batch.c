/* test_ingest_batch.c: kpi_batch: NDJSON items (media types, query flags and bearer tokens are
 * tested with the HTTP module in test_http.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_batch.h"

/* Collects the items of BUF joined by '|'. */
static void items(const char *buf, size_t len, char *out, size_t size) {
  size_t pos = 0, l, o = 0;
  const char *line;
  out[0] = '\0';
  while (kpi_batch_ndjson_next(buf, len, &pos, &line, &l))
    o += (size_t)snprintf(out + o, size - o, "%s%.*s", o ? "|" : "", (int)l, line);
}

static void test_ndjson(void **state) {
  (void)state;
  static const struct {
    const char *in;
    const char *want;
    size_t count;
  } cases[] = {
      {"", "", 0},
      {"\n\n\r\n  \t\n", "", 0},
      {"a", "a", 1},
      {"a\n", "a", 1},
      {"a\r\nb\r\n", "a|b", 2},
      {"a\n\nb", "a|b", 2},
      {"  a  \n\tb\t\r\n", "a|b", 2},
      {"{\"x\":\"a b\"}\n{}\n", "{\"x\":\"a b\"}|{}", 2},
      {"a\rb\n", "a\rb", 1}, /* a lone CR inside a line is the line's business */
  };
  char got[256];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    items(cases[i].in, strlen(cases[i].in), got, sizeof(got));
    assert_string_equal(got, cases[i].want);
    assert_int_equal(kpi_batch_ndjson_count(cases[i].in, strlen(cases[i].in), 100),
                     cases[i].count);
  }
  /* Counting stops just past the limit. */
  assert_int_equal(kpi_batch_ndjson_count("a\nb\nc\nd\ne\n", 10, 2), 3);
  /* Every prefix of a body splits into a prefix of its items, never past LEN. */
  const char *body = "{\"a\":1}\r\n\n {\"b\":2}\n{\"c\":3}";
  size_t blen = strlen(body);
  for (size_t n = 0; n <= blen; n++) {
    char *copy = malloc(n ? n : 1);
    memcpy(copy, body, n);
    size_t pos = 0, l;
    const char *line;
    while (kpi_batch_ndjson_next(copy, n, &pos, &line, &l)) {
      assert_true(line >= copy && line + l <= copy + n);
      assert_true(l > 0);
    }
    assert_int_equal(pos, n);
    free(copy);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ndjson),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
