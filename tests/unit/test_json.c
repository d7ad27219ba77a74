/* test_json.c: kpi_json, the one JSON string writer (against cJSON's printer, byte for byte)
 * and the validators: UTF-8, ids, exactly one JSON value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_json.h"

/* What cJSON_PrintUnformatted writes for the string S (quotes included). */
static char *cjson_string(const char *s) {
  cJSON *v = cJSON_CreateString(s);
  assert_non_null(v);
  char *out = cJSON_PrintUnformatted(v);
  cJSON_Delete(v);
  assert_non_null(out);
  return out;
}

static void expect_like_cjson(const char *s) {
  kpi_buf b = KPI_BUF_INIT;
  kpi_json_buf_string(&b, s);
  char *want = cjson_string(s);
  assert_int_equal(b.oom, 0);
  if (strcmp(b.s, want) != 0) fail_msg("escape of [%s]: got %s want %s", s, b.s, want);
  assert_int_equal(b.len, strlen(want));
  assert_int_equal(kpi_json_escaped_len(s, strlen(s)) + 2, strlen(want));
  cJSON_free(want);
  kpi_buf_free(&b);
}

/* Every byte 1..255 alone, between letters, and every pair of bytes: the same as cJSON. */
static void test_escape_every_byte(void **state) {
  (void)state;
  for (int c = 1; c < 256; c++) {
    char one[2] = {(char)c, 0}, mid[4] = {'a', (char)c, 'z', 0};
    expect_like_cjson(one);
    expect_like_cjson(mid);
  }
  for (int c = 1; c < 256; c++)
    for (int d = 1; d < 256; d += 7) {
      char two[3] = {(char)c, (char)d, 0};
      expect_like_cjson(two);
    }
  /* NUL cannot be in a C string for cJSON; written as \u0000 like any other control byte. */
  kpi_buf b = KPI_BUF_INIT;
  kpi_json_buf_string_n(&b, "a\0b", 3);
  assert_string_equal(b.s, "\"a\\u0000b\"");
  kpi_buf_reset(&b);
  kpi_json_buf_string(&b, NULL);
  assert_string_equal(b.s, "null");
  kpi_buf_free(&b);
}

/* Each byte that must be escaped at every position of a 40-byte plain string, and two of them
 * 1..17 bytes apart: the runs of plain text are copied 8 bytes at a time, so a special byte
 * must be found wherever it falls in a word and at the tail. */
static void test_escape_long_runs(void **state) {
  (void)state;
  static const char specials[] = {'"', '\\', '\n', '\x01', '\x1f', '\t'};
  for (size_t k = 0; k < sizeof(specials); k++)
    for (int at = 0; at < 40; at++) {
      char s[41];
      memset(s, 'a' + at % 26, 40);
      s[40] = '\0';
      s[at] = specials[k];
      expect_like_cjson(s);
      for (int gap = 1; gap <= 17 && at + gap < 40; gap++) {
        s[at + gap] = specials[(k + 1) % sizeof(specials)];
        expect_like_cjson(s);
        s[at + gap] = 'x';
      }
    }
  /* Bytes just outside the special ranges (space, '!', '#', '[', ']', DEL, 0x80, 0xff) in
   * long runs stay as they are. */
  expect_like_cjson("                !!!!!!!!########[[[[]]]]]]]]\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f");
  char hi[33];
  memset(hi, '\x80', 16);
  memset(hi + 16, '\xff', 16);
  hi[32] = '\0';
  kpi_buf b = KPI_BUF_INIT;
  kpi_json_buf_string(&b, hi);
  assert_int_equal(b.len, 34);
  assert_memory_equal(b.s + 1, hi, 32);
  kpi_buf_free(&b);
}

/* Plain strings of every length 0..24 and each special byte at every position of them: runs
 * are tested 8 bytes at a time, so every tail length (0-7 bytes after the words) must find
 * its special byte wherever it falls and leave a plain tail as it is. */
static void test_escape_every_tail(void **state) {
  (void)state;
  static const char specials[] = {'"', '\\', '\n', '\x01', '\x1f', '\x7f', '\x80', ' '};
  for (int len = 0; len <= 24; len++) {
    char s[25];
    for (int i = 0; i < len; i++) s[i] = (char)('A' + i);
    s[len] = '\0';
    expect_like_cjson(s);
    for (size_t k = 0; k < sizeof(specials); k++)
      for (int at = 0; at < len; at++) {
        char t[25];
        memcpy(t, s, sizeof(t));
        t[at] = specials[k];
        expect_like_cjson(t);
      }
  }
}

/* kpi_json_utf8_valid checks 8 ASCII bytes at a time: one bad byte anywhere in a long ASCII
 * string, and a good multi-byte character straddling the words, are still seen. */
static void test_utf8_long_ascii(void **state) {
  (void)state;
  char s[64];
  for (int at = 0; at < 40; at++) {
    memset(s, 'a', 40);
    s[at] = '\xff';
    assert_false(kpi_json_utf8_valid(s, 40));
    s[at] = '\x80';
    assert_false(kpi_json_utf8_valid(s, 40));
    if (at + 3 <= 40) {
      memcpy(s + at, "\xe6\x97\xa5", 3); /* 日 */
      assert_true(kpi_json_utf8_valid(s, 40));
      assert_false(kpi_json_utf8_valid(s, (size_t)at + 2)); /* cut inside it */
    }
  }
}

static void test_escape_utf8_strings(void **state) {
  (void)state;
  static const char *const cases[] = {
      "", "plain", "環境局 ≥ 50%", "emoji \xf0\x9f\x98\x80 ok", "tab\tnew\nline\rcr",
      "\"quoted\" and \\back\\", "\x01\x1f\x7f", "</script>", "€uro",
      "mixed 日本語 \"q\" \b\f \x02"};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_true(kpi_json_utf8_valid(cases[i], strlen(cases[i])));
    expect_like_cjson(cases[i]);
  }
  /* Random valid-UTF-8 strings of mixed widths. */
  static const char *const pieces[] = {"a", "\"", "\\", "\n", "\x05", "é", "日", "\xf0\x9f\x98\x80",
                                       " ", "\x7f"};
  uint32_t r = 12345;
  for (int t = 0; t < 2000; t++) {
    char s[256] = "";
    size_t n = 0;
    for (int k = 0; k < 20; k++) {
      r = r * 1103515245u + 12345u;
      const char *p = pieces[(r >> 16) % 10];
      memcpy(s + n, p, strlen(p) + 1);
      n += strlen(p);
    }
    expect_like_cjson(s);
  }
}

static void test_put_escaped_and_fit(void **state) {
  (void)state;
  char out[64];
  char *end = kpi_json_put_escaped(out, "a\"\x01", 3);
  assert_int_equal(end - out, 1 + 2 + 6);
  assert_memory_equal(out, "a\\\"\\u0001", 9);
  static const struct {
    const char *s;
    size_t room, want;
  } fit[] = {
      {"abc", 0, 0},          {"abc", 2, 2},           {"abc", 9, 3},
      {"a\"b", 2, 1},         {"a\"b", 3, 2},          {"\x01x", 5, 0},
      {"\x01x", 6, 1},        {"日本", 2, 0},          {"日本", 3, 3},
      {"日本", 5, 3},         {"日本", 6, 6},          {"a\xf0\x9f\x98\x80", 4, 1},
      {"a\xf0\x9f\x98\x80", 5, 5},
  };
  for (size_t i = 0; i < sizeof(fit) / sizeof(fit[0]); i++) {
    size_t got = kpi_json_escape_fit(fit[i].s, strlen(fit[i].s), fit[i].room);
    if (got != fit[i].want) fail_msg("fit case %zu: got %zu want %zu", i, got, fit[i].want);
    assert_true(kpi_json_escaped_len(fit[i].s, got) <= fit[i].room);
  }
}

static void test_utf8(void **state) {
  (void)state;
  static const struct {
    const char *s;
    size_t len; /* 0: strlen */
    bool ok;
  } cases[] = {
      {"", 0, true},
      {"ascii", 0, true},
      {"日本語", 0, true},
      {"\xf0\x9f\x98\x80", 0, true},
      {"\xf4\x8f\xbf\xbf", 0, true},   /* U+10FFFF */
      {"a\0b", 3, true},               /* NUL is a character */
      {"\xff", 0, false},
      {"\x80", 0, false},              /* lone continuation */
      {"\xc0\xaf", 0, false},          /* overlong '/' */
      {"\xe0\x80\xaf", 0, false},      /* overlong */
      {"\xed\xa0\x80", 0, false},      /* surrogate */
      {"\xf4\x90\x80\x80", 0, false},  /* above U+10FFFF */
      {"\xf8\x88\x80\x80\x80", 0, false},
      {"\xe6\x97", 0, false},          /* cut */
      {"\xe6\x97\xa5", 2, false},      /* cut by LEN */
      {"\xe6x\xa5", 0, false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
    if (kpi_json_utf8_valid(cases[i].s, len) != cases[i].ok) fail_msg("utf8 case %zu", i);
  }
  /* Character lengths agree with the whole-string check. */
  static const struct {
    const char *s;
    size_t n, want;
  } chars[] = {{"a", 1, 1},         {"\0", 1, 1},           {"\xc3\xa9", 2, 2},
               {"\xc3\xa9", 1, 0},  {"\xe6\x97\xa5", 3, 3}, {"\xf0\x9f\x98\x80", 4, 4},
               {"\xc0\xaf", 2, 0},  {"\xed\xa0\x80", 3, 0}, {"\x80", 1, 0},
               {"", 0, 0}};
  for (size_t i = 0; i < sizeof(chars) / sizeof(chars[0]); i++)
    if (kpi_json_utf8_char_len(chars[i].s, chars[i].n) != chars[i].want)
      fail_msg("char case %zu", i);
}

/* kpi_json_id_valid reads a table of id bytes: every byte 1..255 alone and between letters
 * is an id exactly when it is an ASCII letter, digit, '-', '_' or '.'. */
static void test_id_every_byte(void **state) {
  (void)state;
  for (int c = 1; c < 256; c++) {
    bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.';
    char one[2] = {(char)c, 0}, mid[4] = {'a', (char)c, 'z', 0};
    if (kpi_json_id_valid(one) != want || kpi_json_id_valid(mid) != want)
      fail_msg("byte 0x%02x", c);
  }
}

static void test_id(void **state) {
  (void)state;
  char max[KPI_ID_MAX + 2];
  memset(max, 'a', sizeof(max));
  max[KPI_ID_MAX] = '\0';
  assert_true(kpi_json_id_valid(max));
  max[KPI_ID_MAX] = 'a';
  max[KPI_ID_MAX + 1] = '\0';
  assert_false(kpi_json_id_valid(max));
  static const struct {
    const char *s;
    bool ok;
  } cases[] = {
      {"", false},         {"a", true},          {"g4-carbon-2.led_rate", true},
      {"AZaz09-_.", true}, {"a b", false},       {"a/b", false},
      {"é", false},        {"a\"b", false},      {"a\nb", false},
      {"a:b", false},      {"%41", false},       {"..", true},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    if (kpi_json_id_valid(cases[i].s) != cases[i].ok) fail_msg("id case %zu (%s)", i, cases[i].s);
}

static void test_parse_one(void **state) {
  (void)state;
  static const struct {
    const char *s;
    size_t len; /* 0: strlen */
    bool nul_is_space;
    bool ok;
  } cases[] = {
      {"{}", 0, false, true},           {" [1, 2] \r\n\t", 0, false, true},
      {"{\"a\":1} x", 0, false, false}, {"{} {}", 0, false, false},
      {"1 2", 0, false, false},         {"", 0, false, false},
      {"   ", 0, false, false},         {"{", 0, false, false},
      {"{}\0", 3, false, false},        {"{}\0", 3, true, true},
      {"{}\0 \0", 5, true, true},       {"{}\v", 0, true, false},
      {"\"s\"", 0, false, true},        {"{}x", 2, false, true}, /* LEN bounds the text */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
    cJSON *v = kpi_json_parse_one(cases[i].s, len, cases[i].nul_is_space);
    if ((v != NULL) != cases[i].ok) fail_msg("parse case %zu", i);
    cJSON_Delete(v);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escape_every_byte), cmocka_unit_test(test_escape_utf8_strings),
      cmocka_unit_test(test_escape_long_runs), cmocka_unit_test(test_utf8_long_ascii),
      cmocka_unit_test(test_escape_every_tail),
      cmocka_unit_test(test_put_escaped_and_fit), cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_id_every_byte),
      cmocka_unit_test(test_id), cmocka_unit_test(test_parse_one),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
