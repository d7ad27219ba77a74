/* test_ingest_batch.c: kpi_batch: NDJSON items, media types, query flags, bearer tokens. */
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

static void test_only_space(void **state) {
  (void)state;
  const char *s = " \t\r\n";
  assert_true(kpi_batch_only_space(s, s + 4));
  assert_true(kpi_batch_only_space(s, s));
  const char *t = " x";
  assert_false(kpi_batch_only_space(t, t + 2));
}

static void test_media_type(void **state) {
  (void)state;
  static const struct {
    const char *ct;
    bool json;
  } cases[] = {
      {"application/json", true},
      {"Application/JSON", true},
      {"application/json; charset=utf-8", true},
      {"application/json;charset=UTF-8", true},
      {"application/json ; charset=\"utf-8\"", true},
      {"application/json;", true},
      {" application/json ", true},
      {"application/json; charset=latin1", false},
      {"application/json; boundary=x", false},
      {"application/jsonx", false},
      {"application/json-seq", false},
      {"text/json", false},
      {"application/json; charset=\"utf-8", false},
      {"", false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (kpi_batch_media_type_is(cases[i].ct, "application/json") != cases[i].json)
      fail_msg("'%s'", cases[i].ct);
  }
  assert_false(kpi_batch_media_type_is(NULL, "application/json"));
  assert_true(kpi_batch_media_type_is("application/x-ndjson", "application/x-ndjson"));
  assert_false(kpi_batch_media_type_is("application/x-ndjson", "application/json"));
}

static void test_query_flag(void **state) {
  (void)state;
  static const struct {
    const char *q;
    int rc;
    int value;
  } cases[] = {
      {"", 0, 0},           {"atomic=true", 0, 1},  {"atomic=1", 0, 1},
      {"atomic", 0, 1},     {"atomic=false", 0, 0}, {"atomic=0", 0, 0},
      {"x=1&atomic=true", 0, 1}, {"atomicity=true", 0, 0}, {"atomic=yes", -1, 0},
      {"atomic=", -1, 0},   {"atomic=true&atomic=false", 0, 1}, {"a=b&c", 0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int v = -7;
    int rc = kpi_batch_query_flag(cases[i].q, "atomic", &v);
    if (rc != cases[i].rc || (rc == 0 && v != cases[i].value))
      fail_msg("'%s': rc %d value %d", cases[i].q, rc, v);
  }
  int v;
  assert_int_equal(kpi_batch_query_flag(NULL, "atomic", &v), 0);
  assert_int_equal(v, 0);
}

static void test_bearer(void **state) {
  (void)state;
  static const struct {
    const char *h;
    const char *token;
  } cases[] = {
      {"Bearer abc", "abc"},
      {"bearer abc", "abc"},
      {"BEARER   a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="},
      {"Bearer abc  ", "abc"},
      {"Bearer", NULL},
      {"Bearer ", NULL},
      {"Bearerabc", NULL},
      {"Basic abc", NULL},
      {"Bearer a b", NULL},
      {"Bearer a=b", NULL},
      {"Bearer ab\"c", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *t = NULL;
    size_t len = 0;
    int rc = kpi_batch_bearer_token(cases[i].h, &t, &len);
    if (!cases[i].token) {
      if (rc != -1) fail_msg("'%s' accepted", cases[i].h);
      continue;
    }
    if (rc != 0) fail_msg("'%s' refused", cases[i].h);
    assert_int_equal(len, strlen(cases[i].token));
    assert_memory_equal(t, cases[i].token, len);
  }
  const char *t;
  size_t len;
  assert_int_equal(kpi_batch_bearer_token(NULL, &t, &len), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ndjson),       cmocka_unit_test(test_only_space),
      cmocka_unit_test(test_media_type),   cmocka_unit_test(test_query_flag),
      cmocka_unit_test(test_bearer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
