/* test_report_format.c: era forms of fiscal years, numbers, units, status words and symbols,
 * grades, and the query parameters of the report pages. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "report.h"
#include "report_format.h"

static void test_era(void **state) {
  (void)state;
  static const struct {
    int fy;
    const char *want;
  } cases[] = {{2022, "R4"}, {2024, "R6"}, {2019, "R元"}, {2020, "R2"}, {2018, "H30"},
               {1990, "H2"}, {1989, "H元"}, {1988, "FY1988"}, {2030, "R12"}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char buf[16];
    report_era_short(cases[i].fy, buf, sizeof(buf));
    assert_string_equal(buf, cases[i].want);
    /* What we print, the catalog's parser reads back as the same year. */
    if (cases[i].fy >= 1989) {
      int fy = 0;
      assert_int_equal(kpi_fy_parse(buf, &fy), 0);
      assert_int_equal(fy, cases[i].fy);
    }
  }
}

static void test_numbers(void **state) {
  (void)state;
  static const struct {
    double v;
    const char *want;
  } cases[] = {{12.4, "12.4"}, {50, "50"}, {1.0 / 3, "0.33"}, {-1.5, "-1.5"},
               {35.70, "35.7"}, {0.004, "0"}, {-0.001, "0"}, {1e6, "1000000"},
               {NAN, "—"}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char buf[48];
    report_num(cases[i].v, buf, sizeof(buf));
    assert_string_equal(buf, cases[i].want);
  }
}

static void test_values_and_words(void **state) {
  (void)state;
  kpi_measure m = {0};
  char buf[64];
  m.kind = KPI_KIND_LEVEL;
  m.unit = "person";
  report_value(&m, 24, REPORT_LANG_JA, buf, sizeof(buf));
  assert_string_equal(buf, "24名");
  report_value(&m, 24, REPORT_LANG_EN, buf, sizeof(buf));
  assert_string_equal(buf, "24 people");
  m.unit = "percent";
  report_value(&m, 12.4, REPORT_LANG_JA, buf, sizeof(buf));
  assert_string_equal(buf, "12.4%");
  m.kind = KPI_KIND_MILESTONE;
  m.unit = "plan";
  report_value(&m, 0, REPORT_LANG_JA, buf, sizeof(buf));
  assert_string_equal(buf, "未策定");
  report_value(&m, 1, REPORT_LANG_EN, buf, sizeof(buf));
  assert_string_equal(buf, "done");
  /* Every status has distinct words and a distinct symbol: never colour alone. */
  for (int a = 0; a <= KPI_STATUS_FAILED; a++)
    for (int b = a + 1; b <= KPI_STATUS_FAILED; b++) {
      assert_string_not_equal(report_status_symbol(a), report_status_symbol(b));
      assert_string_not_equal(report_status_word(a, REPORT_LANG_JA),
                              report_status_word(b, REPORT_LANG_JA));
      assert_string_not_equal(report_status_word(a, REPORT_LANG_EN),
                              report_status_word(b, REPORT_LANG_EN));
    }
  assert_string_equal(report_status_word(KPI_STATUS_LAGGING, REPORT_LANG_JA), "遅れ");
}

static void test_grades(void **state) {
  (void)state;
  static const struct {
    bool has;
    double p;
    char want;
  } cases[] = {{true, 1.0, 'A'},  {true, 1.5, 'A'},  {true, 1 - 1e-12, 'A'}, {true, 0.99, 'B'},
               {true, 0.5, 'B'},  {true, 0.49, 'C'}, {true, 0.01, 'C'},      {true, 0, 'D'},
               {true, -0.3, 'D'}, {false, 0, '-'}};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kpi_attainment a = {0};
    a.has_progress = a.has_value = cases[i].has;
    a.progress = cases[i].p;
    assert_int_equal(report_grade(&a), cases[i].want);
    assert_true(report_grade_meaning(cases[i].want, REPORT_LANG_JA)[0] != '\0');
  }
}

static void test_query(void **state) {
  (void)state;
  char v[16];
  assert_int_equal(report_query_param("as_of=2024-03-31&lang=en", "as_of", v, sizeof(v)), 10);
  assert_string_equal(v, "2024-03-31");
  assert_int_equal(report_query_param("as_of=2024-03-31&lang=en", "lang", v, sizeof(v)), 2);
  assert_string_equal(v, "en");
  assert_int_equal(report_query_param("xas_of=1", "as_of", v, sizeof(v)), -1);
  assert_int_equal(report_query_param("", "as_of", v, sizeof(v)), -1);
  assert_int_equal(report_query_param("as_of=", "as_of", v, sizeof(v)), 0);
  assert_int_equal(report_query_param("a=%41%2b+b", "a", v, sizeof(v)), 4);
  assert_string_equal(v, "A+ b");
  assert_int_equal(report_query_param("a=%4", "a", v, sizeof(v)), -2);
  assert_int_equal(report_query_param("a=%zz", "a", v, sizeof(v)), -2);
  assert_int_equal(report_query_param("a=%00", "a", v, sizeof(v)), -2);
  assert_int_equal(report_query_param("a=0123456789abcdefgh", "a", v, sizeof(v)), -2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_era),    cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_values_and_words), cmocka_unit_test(test_grades),
      cmocka_unit_test(test_query),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
