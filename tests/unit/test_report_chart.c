/* test_report_chart.c: the chart's one data-to-SVG mapping (domain corners to plot corners,
 * linear in between), nice axis bounds, and the SVG itself: accessible name, escaped labels,
 * the expected-pace line from start to target, one dot per reading. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "report_chart.h"

static kpi_day ymd(int y, int m, int d) {
  kpi_day day = 0;
  assert_int_equal(kpi_day_from_ymd(y, m, d, &day), 0);
  return day;
}

static void test_map(void **state) {
  (void)state;
  report_chart_map m;
  kpi_day a = ymd(2023, 4, 1), b = ymd(2025, 4, 1);
  report_chart_map_init(&m, a, b, 0, 100, 720, 320);
  assert_true(m.left > 0 && m.right < 720 && m.top > 0 && m.bottom < 320);
  assert_float_equal(report_chart_x(&m, a), m.left, 1e-9);
  assert_float_equal(report_chart_x(&m, b), m.right, 1e-9);
  assert_float_equal(report_chart_y(&m, 0), m.bottom, 1e-9);   /* y grows downwards in SVG */
  assert_float_equal(report_chart_y(&m, 100), m.top, 1e-9);
  assert_float_equal(report_chart_y(&m, 50), (m.top + m.bottom) / 2, 1e-9);
  kpi_day mid = a + (b - a) / 2;
  assert_float_equal(report_chart_x(&m, mid), (m.left + m.right) / 2, 1.0);
  /* Negative values (a decrease below zero) map below the zero line. */
  report_chart_map_init(&m, a, b, -50, 50, 720, 320);
  assert_true(report_chart_y(&m, -50) > report_chart_y(&m, 0));
  /* An empty domain is widened, never a division by zero. */
  report_chart_map_init(&m, a, a, 5, 5, 720, 320);
  assert_true(isfinite(report_chart_x(&m, a)) && isfinite(report_chart_y(&m, 5)));
}

static void test_nice(void **state) {
  (void)state;
  static const double in[] = {0.8, 1, 1.3, 2.2, 3, 52.5, 190, 260, 0};
  static const double want[] = {1, 1, 2, 2.5, 5, 100, 200, 500, 1};
  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
    assert_float_equal(report_chart_nice(in[i]), want[i], 1e-9);
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
  return n;
}

static void test_svg(void **state) {
  (void)state;
  report_point pts[] = {{ymd(2023, 9, 30), 30}, {ymd(2024, 2, 29), 34}};
  report_chart_spec s = {
      .title = "登録者数 <b>",
      .desc = "実績と期待ペース",
      .points = pts,
      .n_points = 2,
      .start = ymd(2023, 3, 31),
      .start_value = 24,
      .due = ymd(2025, 3, 31),
      .target = 50,
      .as_of = ymd(2024, 3, 31),
      .unit = "名",
      .l_target = "目標",
      .l_due = "期限",
      .l_pace = "期待ペース",
      .l_actual = "実績",
      .l_as_of = "基準日",
  };
  kpi_buf b = KPI_BUF_INIT;
  assert_int_equal(report_chart_svg(&s, &b), 0);
  const char *svg = kpi_buf_str(&b);
  assert_int_equal(strncmp(svg, "<svg ", 5), 0);
  assert_non_null(strstr(svg, "role=\"img\""));
  assert_non_null(strstr(svg, "<title id=\"chart-title\">登録者数 &lt;b&gt;</title>"));
  assert_null(strstr(svg, "<b>"));
  assert_int_equal(count(svg, "<circle class=\"point\""), 2);
  assert_int_equal(count(svg, "<polyline class=\"series\""), 1);
  assert_non_null(strstr(svg, "目標 50名"));
  assert_non_null(strstr(svg, "期限 2025-03-31"));
  assert_non_null(strstr(svg, ">R5<"));
  assert_non_null(strstr(svg, ">R6<"));
  /* The pace line ends where the target line meets the due line. */
  const char *pace = strstr(svg, "<line class=\"pace\"");
  assert_non_null(pace);
  double x1, y1, x2, y2;
  assert_int_equal(sscanf(pace, "<line class=\"pace\" x1=\"%lf\" y1=\"%lf\" x2=\"%lf\" y2=\"%lf\"",
                          &x1, &y1, &x2, &y2), 4);
  const char *due = strstr(svg, "<line class=\"due\" x1=\"");
  double xd = strtod(due + strlen("<line class=\"due\" x1=\""), NULL);
  assert_float_equal(x2, xd, 1e-6);
  assert_true(y2 < y1); /* rising to the target */
  assert_true(strcmp(svg + b.len - 6, "</svg>") == 0);
  kpi_buf_free(&b);

  /* No readings: still a chart with the pace line, no series. */
  s.n_points = 0;
  assert_int_equal(report_chart_svg(&s, &b), 0);
  assert_int_equal(count(kpi_buf_str(&b), "<circle"), 0);
  assert_non_null(strstr(kpi_buf_str(&b), "class=\"pace\""));
  kpi_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_map),
      cmocka_unit_test(test_nice),
      cmocka_unit_test(test_svg),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
