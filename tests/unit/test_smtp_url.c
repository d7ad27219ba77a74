/* test_smtp_url.c: unit tests for kpi_smtp_url_redact: SMTP URLs logged without their userinfo. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kpi_smtp.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_url_redact(void **state) {
  (void)state;
  static const struct {
    const char *url;
    int rc;
    int userinfo;
    const char *want;
  } cases[] = {
      {"smtp://127.0.0.1:25", 0, 0, "smtp://127.0.0.1:25/"},
      {"smtp://user:s3cret@mail.city.example:587", 0, 1, "smtp://mail.city.example:587/"},
      {"smtps://user@mail.city.example", 0, 1, "smtps://mail.city.example/"},
      {"smtp://:pw-only@relay:2525/city.example", 0, 1, "smtp://relay:2525/city.example"},
      {"smtp://u%40city:p%3Aw@relay", 0, 1, "smtp://relay/"},
      {"smtp://user;AUTH=PLAIN@relay", 0, 1, "smtp://relay/"},
      {"not a url", KPI_SMTP_EINVAL, 0, ""},
      {NULL, KPI_SMTP_EINVAL, 0, ""},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char out[256];
    int had = -1;
    int rc = kpi_smtp_url_redact(cases[i].url, out, sizeof(out), &had);
    if (rc != cases[i].rc || strcmp(out, cases[i].want) != 0 || had != cases[i].userinfo)
      fail_msg("case %zu (%s): rc %d \"%s\" userinfo %d", i, cases[i].url ? cases[i].url : "NULL",
               rc, out, had);
    assert_null(strstr(out, "s3cret"));
    assert_null(strstr(out, "user"));
  }
  /* Too small a buffer: an error and an empty string, never half a URL. */
  char small[8];
  assert_int_equal(kpi_smtp_url_redact("smtp://mail.city.example", small, sizeof(small), NULL),
                   KPI_SMTP_EINVAL);
  assert_string_equal(small, "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_redact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
