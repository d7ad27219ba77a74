/* test_ingest_i18n.c: ingest's message table (services/ingest/ingest_i18n.c): languages picked
 * from Accept-Language, a Japanese title for every problem status, and Japanese details that
 * take the same printf conversions as their English keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ingest_i18n.h"
#include "kpi_http.h"

static void test_lang_of(void **state) {
  (void)state;
  static const struct {
    const char *al;
    ingest_lang want;
  } cases[] = {
      {NULL, INGEST_LANG_EN},           {"ja", INGEST_LANG_JA},
      {"ja-JP", INGEST_LANG_JA},        {"en-US,en;q=0.9,ja;q=0.8", INGEST_LANG_EN},
      {"ja,en;q=0.5", INGEST_LANG_JA},  {"en;q=0.4,ja;q=0.6", INGEST_LANG_JA},
      {"ja;q=0.4,en;q=0.6", INGEST_LANG_EN}, {"de", INGEST_LANG_EN},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(ingest_lang_of(cases[i].al), cases[i].want);
  assert_string_equal(ingest_lang_tag(INGEST_LANG_JA), "ja");
  assert_string_equal(ingest_lang_tag(INGEST_LANG_EN), "en");
}

static void test_titles(void **state) {
  (void)state;
  static const int statuses[] = {400, 401, 403, 404, 405, 408, 413, 414,
                                 415, 422, 429, 431, 500, 501, 503};
  for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
    const char *en = ingest_title(INGEST_LANG_EN, statuses[i]);
    const char *ja = ingest_title(INGEST_LANG_JA, statuses[i]);
    assert_string_equal(en, kpi_http_reason(statuses[i]));
    if (strcmp(en, ja) == 0) fail_msg("%d has no Japanese title", statuses[i]);
  }
  assert_string_equal(ingest_title(INGEST_LANG_JA, 422), "入力内容に誤りがあります");
}

/* The conversions of printf format F, in order ("%zu%s"), into OUT. */
static void conversions(const char *f, char *out, size_t size) {
  size_t n = 0;
  for (const char *p = f; *p; p++) {
    if (*p != '%') continue;
    p++;
    while (*p && strchr("0123456789.-+ #lhzjt", *p) && n + 1 < size) out[n++] = *p++;
    if (*p && n + 1 < size) out[n++] = *p;
    if (!*p) break;
  }
  out[n] = '\0';
}

static void test_texts(void **state) {
  (void)state;
  assert_true(ingest_text_count() > 20);
  for (size_t i = 0; i < ingest_text_count(); i++) {
    const char *en, *ja;
    ingest_text_at(i, &en, &ja);
    char ce[16], cj[16];
    conversions(en, ce, sizeof(ce));
    conversions(ja, cj, sizeof(cj));
    if (strcmp(ce, cj) != 0) fail_msg("\"%s\": conversions %s vs %s", en, ce, cj);
    if (strcmp(en, ja) == 0) fail_msg("\"%s\" is not translated", en);
    assert_string_equal(ingest_text(INGEST_LANG_EN, en), en);
    assert_string_equal(ingest_text(INGEST_LANG_JA, en), ja);
  }
  /* A text without an entry (a broker's error string) stays as it is. */
  assert_string_equal(ingest_text(INGEST_LANG_JA, "Local: Broker transport failure"),
                      "Local: Broker transport failure");
  assert_null(ingest_text(INGEST_LANG_JA, NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lang_of),
      cmocka_unit_test(test_titles),
      cmocka_unit_test(test_texts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
