/* test_metrics.c: exact Prometheus text rendered by kpi_metrics for each metric type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_metrics.h"

static void expect_render(const kpi_metrics *m, const char *expected) {
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(kpi_metrics_render(m, &out, &len), 0);
  assert_non_null(out);
  assert_string_equal(out, expected);
  assert_int_equal(len, strlen(expected));
  free(out);
}

static void test_empty_registry(void **state) {
  (void)state;
  kpi_metrics *m = kpi_metrics_new();
  expect_render(m, "");
  kpi_metrics_free(m);
}

static void test_counter_with_labels_grouped_by_family(void **state) {
  (void)state;
  kpi_metrics *m = kpi_metrics_new();
  kpi_metric *c202 = kpi_metrics_counter(m, "kpi_http_requests_total", "code=\"202\"",
                                         "HTTP requests by status code.");
  kpi_metric *up = kpi_metrics_gauge(m, "kpi_up", NULL, "1 when the service runs.");
  kpi_metric *c413 = kpi_metrics_counter(m, "kpi_http_requests_total", "code=\"413\"", NULL);
  assert_non_null(c202);
  assert_non_null(c413);
  /* The same name and labels give back the same series. */
  assert_ptr_equal(kpi_metrics_counter(m, "kpi_http_requests_total", "code=\"202\"", NULL), c202);
  kpi_metrics_inc(c202);
  kpi_metrics_inc(c202);
  kpi_metrics_add(c413, 3);
  kpi_metrics_add(c413, -1); /* ignored: counters never decrease */
  kpi_metrics_set(up, 1);
  expect_render(m,
                "# HELP kpi_http_requests_total HTTP requests by status code.\n"
                "# TYPE kpi_http_requests_total counter\n"
                "kpi_http_requests_total{code=\"202\"} 2\n"
                "kpi_http_requests_total{code=\"413\"} 3\n"
                "# HELP kpi_up 1 when the service runs.\n"
                "# TYPE kpi_up gauge\n"
                "kpi_up 1\n");
  kpi_metrics_free(m);
}

static void test_gauge_values(void **state) {
  (void)state;
  static const struct {
    double v;
    const char *text;
  } cases[] = {
      {0, "0"},          {-2, "-2"},          {0.1, "0.1"},         {1.5e-7, "1.5e-07"},
      {123456789, "123456789"}, {1.0 / 3, "0.3333333333333333"}, {INFINITY, "+Inf"},
      {-INFINITY, "-Inf"}, {NAN, "NaN"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kpi_metrics *m = kpi_metrics_new();
    kpi_metric *g = kpi_metrics_gauge(m, "queue_depth", "queue=\"a\"", "Depth\\of\nqueue.");
    kpi_metrics_set(g, cases[i].v);
    char expected[256];
    snprintf(expected, sizeof expected,
             "# HELP queue_depth Depth\\\\of\\nqueue.\n"
             "# TYPE queue_depth gauge\n"
             "queue_depth{queue=\"a\"} %s\n",
             cases[i].text);
    expect_render(m, expected);
    kpi_metrics_free(m);
  }
}

static void test_histogram(void **state) {
  (void)state;
  kpi_metrics *m = kpi_metrics_new();
  static const double bounds[] = {0.005, 0.1, 1};
  kpi_metric *h = kpi_metrics_histogram(m, "kpi_http_request_duration_seconds",
                                        "route=\"ingest\"", "Request latency.", bounds, 3);
  kpi_metric *plain = kpi_metrics_histogram(m, "kpi_http_request_duration_seconds", NULL,
                                            NULL, bounds, 3);
  assert_non_null(h);
  assert_non_null(plain);
  kpi_metrics_observe(h, 0.005); /* on a bound: counted in that bucket (le is <=) */
  kpi_metrics_observe(h, 0.05);
  kpi_metrics_observe(h, 0.25);
  kpi_metrics_observe(h, 4);
  assert_true(kpi_metrics_value(h) == 4);
  expect_render(m,
                "# HELP kpi_http_request_duration_seconds Request latency.\n"
                "# TYPE kpi_http_request_duration_seconds histogram\n"
                "kpi_http_request_duration_seconds_bucket{route=\"ingest\",le=\"0.005\"} 1\n"
                "kpi_http_request_duration_seconds_bucket{route=\"ingest\",le=\"0.1\"} 2\n"
                "kpi_http_request_duration_seconds_bucket{route=\"ingest\",le=\"1\"} 3\n"
                "kpi_http_request_duration_seconds_bucket{route=\"ingest\",le=\"+Inf\"} 4\n"
                "kpi_http_request_duration_seconds_sum{route=\"ingest\"} 4.305\n"
                "kpi_http_request_duration_seconds_count{route=\"ingest\"} 4\n"
                "kpi_http_request_duration_seconds_bucket{le=\"0.005\"} 0\n"
                "kpi_http_request_duration_seconds_bucket{le=\"0.1\"} 0\n"
                "kpi_http_request_duration_seconds_bucket{le=\"1\"} 0\n"
                "kpi_http_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"
                "kpi_http_request_duration_seconds_sum 0\n"
                "kpi_http_request_duration_seconds_count 0\n");
  kpi_metrics_free(m);
}

static void test_rejected_registrations(void **state) {
  (void)state;
  kpi_metrics *m = kpi_metrics_new();
  static const double b1[] = {1, 2}, b2[] = {1, 3}, bad[] = {2, 1};
  assert_non_null(kpi_metrics_counter(m, "x_total", NULL, NULL));
  assert_null(kpi_metrics_gauge(m, "x_total", "a=\"1\"", NULL));  /* type clash */
  assert_null(kpi_metrics_counter(m, "1bad", NULL, NULL));        /* bad name */
  assert_null(kpi_metrics_counter(m, "bad-name", NULL, NULL));
  assert_non_null(kpi_metrics_histogram(m, "h", NULL, NULL, b1, 2));
  assert_null(kpi_metrics_histogram(m, "h", "a=\"1\"", NULL, b2, 2)); /* other buckets */
  assert_null(kpi_metrics_histogram(m, "h2", NULL, NULL, bad, 2));    /* not increasing */
  /* A histogram with only the +Inf bucket has no bounds array at all; looking its family up
   * again once compared NULL with NULL through memcmp, undefined even for zero bytes. */
  kpi_metric *only_inf = kpi_metrics_histogram(m, "h3", NULL, NULL, NULL, 0);
  assert_non_null(only_inf);
  kpi_metric *again = kpi_metrics_histogram(m, "h3", "a=\"1\"", NULL, NULL, 0);
  assert_non_null(again);
  assert_ptr_not_equal(only_inf, again);
  assert_ptr_equal(kpi_metrics_histogram(m, "h3", NULL, NULL, NULL, 0), only_inf);
  kpi_metrics_observe(again, 5);
  assert_true(kpi_metrics_value(again) == 1);
  /* Updates through a failed registration are no-ops, not crashes. */
  kpi_metrics_inc(NULL);
  kpi_metrics_set(NULL, 1);
  kpi_metrics_observe(NULL, 1);
  kpi_metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_registry),
      cmocka_unit_test(test_counter_with_labels_grouped_by_family),
      cmocka_unit_test(test_gauge_values),
      cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_rejected_registrations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
