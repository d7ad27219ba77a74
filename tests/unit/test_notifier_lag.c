/* test_notifier_lag.c: the notifier's consumer lag read from librdkafka statistics
 * (nf_consume_stats_lag in services/notifier/nf_consume.c), the series kpi_notifier_consumer_lag
 * that deploy/prometheus/kpi-alerts.yml alerts on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "notifier.h"

/* Shaped as librdkafka 1.9+/2.x writes it (STATISTICS.md), trimmed to what is read. */
static const char STATS[] =
    "{\"name\":\"kpi-notifier#consumer-1\",\"type\":\"consumer\",\"topics\":{"
    "\"kpi.alerts.v1\":{\"topic\":\"kpi.alerts.v1\",\"partitions\":{"
    "\"0\":{\"partition\":0,\"desired\":true,\"hi_offset\":120,\"committed_offset\":100,"
    "\"consumer_lag\":20},"
    "\"1\":{\"partition\":1,\"desired\":true,\"hi_offset\":7,\"committed_offset\":-1001,"
    "\"consumer_lag\":-1},"
    "\"2\":{\"partition\":2,\"desired\":false,\"hi_offset\":50,\"consumer_lag\":50},"
    "\"-1\":{\"partition\":-1,\"desired\":false,\"consumer_lag\":-1}}},"
    "\"other.topic\":{\"partitions\":{\"0\":{\"desired\":true,\"consumer_lag\":9}}}}}";

static void test_lag_sums_assigned_partitions(void **state) {
  (void)state;
  /* Partition 0 counts; 1 has no committed offset yet (-1: unknown, not negative lag); 2 and
   * the internal -1 are not ours; the other topic is not the alerts topic. */
  assert_int_equal(nf_consume_stats_lag(STATS, strlen(STATS), "kpi.alerts.v1"), 20);
  assert_int_equal(nf_consume_stats_lag(STATS, strlen(STATS), "other.topic"), 9);
}

static void test_lag_without_the_topic_is_zero(void **state) {
  (void)state;
  static const char none[] = "{\"name\":\"c\",\"topics\":{}}";
  assert_int_equal(nf_consume_stats_lag(none, strlen(none), "kpi.alerts.v1"), 0);
  assert_int_equal(nf_consume_stats_lag(STATS, strlen(STATS), "kpi.alerts.v2"), 0);
}

static void test_lag_of_a_broken_document(void **state) {
  (void)state;
  static const char *const bad[] = {"", "[]", "{\"topics\":", "42", "null"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(nf_consume_stats_lag(bad[i], strlen(bad[i]), "kpi.alerts.v1"), -1);
  /* Cut anywhere, the document is never read past LEN. */
  for (size_t n = 0; n + 1 < sizeof(STATS) - 1; n++)
    assert_int_equal(nf_consume_stats_lag(STATS, n, "kpi.alerts.v1"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lag_sums_assigned_partitions),
      cmocka_unit_test(test_lag_without_the_topic_is_zero),
      cmocka_unit_test(test_lag_of_a_broken_document),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
