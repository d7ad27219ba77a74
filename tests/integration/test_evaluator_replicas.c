/* test_evaluator_replicas.c: two evaluators in one consumer group share the partitions; records
 * flow through both, each distinct record is stored once and the sums are exact. Both replicas
 * sweep every 100 ms while the other commits batches, and the test watches the reported sum of
 * a cumulative measure fed only positive amounts: it must never go down. Without the per-measure
 * advisory locks (ev_txn.c, SQL_LOCK) a sweep that aggregated before the other replica's COMMIT
 * overwrote the fresher attainment row with its older sum, hundreds of times per run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_time.h"
#include "test_evaluator_util.h"

#define CUMUL "g3-kosodate-3-maternity-grants" /* cumulative, window FY2020-FY2024, kosodate */
#define N_CUMUL 3000
#define N_CHUNKS 60

/* Level measures of different keys, so that both replicas own partitions with traffic. */
static const struct {
  const char *id, *dept, *unit;
} levels[] = {
    {"g2-uiturn-4-supporters", "kikaku", "person"},
    {"g3-kosodate-8-school-lunch", "kyoiku", "school"},
    {"g4-digital-2-signage", "kikaku", "facility"},
    {"g4-digital-3-boshi-app-users", "kosodate", "person"},
    {"g4-carbon-2-led-rate", "kankyo", "percent"},
};

static void test_two_replicas(void **state) {
  (void)state;
  evw w, w2;
  evw_init(&w, "it_evrepl", "2025-03-31");
  const char *extra[] = {"KPI_BATCH_MAX=5", "KPI_SWEEP_INTERVAL_MS=100",
                         "KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000", "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_twin(&w, &w2, "b");
  evw_start(&w2, extra);
  assert_int_equal(evw_wait_ready(&w2, 30000), 0);
  /* Let the group settle on two members before the stream starts. */
  kpi_it_sleep_ms(3000);

  long long produced = 0, sum_window = 0;
  double seen_max = 0;
  int went_down = 0;
  kpi_day first = kpi_fy_first_day(2020), span = kpi_fy_last_day(2024) - first + 1;
  for (int chunk = 0; chunk < N_CHUNKS; chunk++) {
    for (int i = chunk * (N_CUMUL / N_CHUNKS); i < (chunk + 1) * (N_CUMUL / N_CHUNKS); i++) {
      char rec[1024], id[KPI_UUID_STRLEN + 1], date[16];
      kpi_uuid_v4(id);
      kpi_day_format(first + (kpi_day)(((long long)i * 7919) % span), date, sizeof(date));
      int value = 1 + i % 3;
      evw_measurement(rec, sizeof(rec), id, CUMUL, "kosodate", date, value, "case", NULL);
      evw_produce(&w, w.t_meas, CUMUL, rec);
      produced++;
      sum_window += value;
      if (i % 2 == 0) {
        int k = (i / 2) % 5;
        kpi_uuid_v4(id);
        evw_measurement(rec, sizeof(rec), id, levels[k].id, levels[k].dept, "2024-06-01",
                        1 + i % 50, levels[k].unit, NULL);
        evw_produce(&w, w.t_meas, levels[k].id, rec);
        produced++;
      }
    }
    evw_flush(&w);
    /* Watch the reported sum meanwhile: it may only grow. */
    for (long long until = kpi_it_now_ms() + 100; kpi_it_now_ms() < until;) {
      char *v = evw_sql(&w, "SELECT coalesce(value, 0) FROM attainment"
                            " WHERE measure_id = '" CUMUL "'");
      double now = strtod(v, NULL);
      free(v);
      if (now < seen_max) went_down++;
      if (now > seen_max) seen_max = now;
    }
  }

  evw_expect_offsets(&w, &w2, produced, 40000);
  char want[64];
  snprintf(want, sizeof(want), "%lld", produced);
  evw_assert_sql(&w, "SELECT count(*) FROM measurements", want);
  snprintf(want, sizeof(want), "%lld", sum_window);
  evw_assert_sql(&w, "SELECT sum(total) FROM measure_totals WHERE measure_id = '" CUMUL "'", want);
  evw_expect_sql_within(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", want,
                        20000);

  /* Both replicas worked: each stored rows of the partitions it owned. */
  char *got = evw_sql(&w, "SELECT count(DISTINCT kafka_partition) FROM measurements");
  int parts = atoi(got);
  free(got);
  assert_true(parts >= 2);
  char cmd[600];
  snprintf(cmd, sizeof(cmd),
           "grep -q '\"partitions_assigned\".*[0-9]@' %s && grep -q '\"partitions_assigned\".*[0-9]@' "
           "%s",
           w.log, w2.log);
  assert_int_equal(system(cmd), 0);

  /* Never an older sum written over a newer one. */
  if (went_down) fail_msg("the reported cumulative sum went down %d times", went_down);
  got = evw_sql(&w,
                "SELECT count(*) FROM (SELECT value, lag(value) OVER (ORDER BY id) AS prev"
                " FROM attainment_history WHERE measure_id = '" CUMUL "') s"
                " WHERE value < prev");
  if (strcmp(got, "0") != 0) {
    char *hist = evw_sql(&w, "SELECT string_agg(value::text, ' ' ORDER BY id) FROM"
                             " attainment_history WHERE measure_id = '" CUMUL "'");
    fail_msg("cumulative history went down %s times: %s", got, hist);
  }
  free(got);
  /* The cumulative measure went lagging -> achieved once: no alert from a stale snapshot. */
  got = evw_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" CUMUL "'"
                    " AND payload LIKE '%\"type\":\"alert\"%'"
                    " AND payload LIKE '%\"status\":\"lagging\"%'");
  int lag_alerts = atoi(got);
  free(got);
  assert_true(lag_alerts <= 1);

  evw_stop(&w2);
  evw_stop(&w); /* evw_twin left W's pid as it was */
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_two_replicas)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
