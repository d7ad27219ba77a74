/* test_evaluator_crash.c: the evaluator is killed with SIGKILL several times while thousands of
 * additive records (cumulative amounts, ratio numerators and denominators, with duplicated
 * event_ids) flow; after the last restart the sums in PostgreSQL equal the sums of the distinct
 * records exactly, and so do the attainment values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "kpi_time.h"
#include "test_evaluator_util.h"

#define CUMUL "g3-kosodate-3-maternity-grants" /* cumulative, window FY2020-FY2024 */
#define RATIO "g4-digital-1-konbini-issuance"  /* ratio, percent */
#define N_DISTINCT 3200
#define N_ROUNDS 4

typedef struct {
  char id[KPI_UUID_STRLEN + 1];
  char rec[600];
  const char *key;
} crash_rec;

static void test_kill9(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evcrash", "2025-03-31");
  const char *extra[] = {"KPI_BATCH_MAX=25", "KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000",
                         "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};

  /* The records and the sums they must produce. */
  crash_rec *recs = calloc(N_DISTINCT, sizeof(*recs));
  long long sum_cumul_all = 0, sum_cumul_window = 0, num24 = 0, den24 = 0, sum_ratio_all = 0;
  kpi_day first = kpi_fy_first_day(2019), span = kpi_fy_last_day(2024) - first + 1;
  kpi_day r_first = kpi_fy_first_day(2023);
  for (int i = 0; i < N_DISTINCT; i++) {
    crash_rec *r = &recs[i];
    kpi_uuid_v4(r->id);
    char date[16];
    int value = 1 + i % 5;
    if (i % 5 < 3) {
      kpi_day d = first + (kpi_day)(((long long)i * 7919) % span);
      kpi_day_format(d, date, sizeof(date));
      evw_measurement(r->rec, sizeof(r->rec), r->id, CUMUL, "kosodate", date, value, "case",
                      NULL);
      r->key = CUMUL;
      sum_cumul_all += value;
      if (kpi_fy_of_day(d) >= 2020 && kpi_fy_of_day(d) <= 2024) sum_cumul_window += value;
    } else {
      kpi_day d = r_first + (kpi_day)(((long long)i * 13) % 731);
      kpi_day_format(d, date, sizeof(date));
      int numerator = i % 5 == 3;
      value = numerator ? 1 + (i / 5) % 9 : 10 + (i / 5) % 7;
      evw_measurement(r->rec, sizeof(r->rec), r->id, RATIO, "shimin", date, value, "percent",
                      numerator ? "numerator" : "denominator");
      r->key = RATIO;
      sum_ratio_all += value;
      if (kpi_fy_of_day(d) == 2024) {
        if (numerator) num24 += value;
        else den24 += value;
      }
    }
  }

  long long produced = 0;
  int per_round = N_DISTINCT / N_ROUNDS;
  /* The first start creates the topics; later rounds produce while the evaluator is dead. */
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  for (int round = 0; round < N_ROUNDS; round++) {
    for (int i = round * per_round; i < (round + 1) * per_round; i++) {
      evw_produce(&w, w.t_meas, recs[i].key, recs[i].rec);
      produced++;
      /* Replays of earlier records, as an at-least-once ingest would send them. */
      if (i % 7 == 0) {
        int j = i / 2;
        evw_produce(&w, w.t_meas, recs[j].key, recs[j].rec);
        produced++;
      }
    }
    if (round > 0) evw_start(&w, extra);
    evw_flush(&w);
    if (round == N_ROUNDS - 1) break;
    /* Kill it in the middle of the stream: once rows are moving. */
    char *before = evw_sql(&w, "SELECT count(*) FROM measurements");
    long long deadline = kpi_it_now_ms() + 40000;
    for (;;) {
      char *now = evw_sql(&w, "SELECT count(*) FROM measurements");
      int moved = strcmp(now, before) != 0;
      free(now);
      if (moved || kpi_it_now_ms() > deadline) break;
      kpi_it_sleep_ms(10);
    }
    free(before);
    kpi_it_sleep_ms(20 + 60 * round);
    int status = kpi_it_stop(w.pid, SIGKILL, 10000);
    assert_true(WIFSIGNALED(status));
    w.pid = 0;
    char *rows = evw_sql(&w, "SELECT count(*) FROM measurements");
    fprintf(stderr, "round %d: killed with %s distinct rows stored, %lld records produced\n",
            round, rows, produced);
    free(rows);
  }

  /* Every record consumed (the offsets cover all that was produced) ... */
  evw_expect_offsets(&w, NULL, produced, 60000);
  /* ... each distinct record stored exactly once ... */
  char *got = evw_sql(&w, "SELECT count(*) FROM measurements");
  assert_int_equal(atoi(got), N_DISTINCT);
  free(got);
  char want[64];
  snprintf(want, sizeof(want), "%lld", sum_cumul_all);
  evw_assert_sql(&w, "SELECT sum(value) FROM measurements WHERE measure_id = '" CUMUL "'", want);
  evw_assert_sql(&w, "SELECT sum(total) FROM measure_totals WHERE measure_id = '" CUMUL "'", want);
  snprintf(want, sizeof(want), "%lld", sum_ratio_all);
  evw_assert_sql(&w, "SELECT sum(value) FROM measurements WHERE measure_id = '" RATIO "'", want);
  evw_assert_sql(&w, "SELECT sum(total) FROM measure_totals WHERE measure_id = '" RATIO "'", want);

  /* ... and the attainment computed from them: the window sum, and FY2024's ratio. */
  snprintf(want, sizeof(want), "%lld", sum_cumul_window);
  evw_expect_sql_within(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", want,
                        20000);
  double ratio = 100.0 * (double)num24 / (double)den24;
  long long deadline = kpi_it_now_ms() + 20000;
  double v = -1;
  while (kpi_it_now_ms() < deadline) {
    got = evw_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" RATIO "'");
    v = *got ? strtod(got, NULL) : -1;
    free(got);
    if (fabs(v - ratio) < 1e-9) break;
    kpi_it_sleep_ms(100);
  }
  if (fabs(v - ratio) >= 1e-9) fail_msg("ratio attainment %.12f, want %.12f", v, ratio);
  fprintf(stderr, "%d distinct of %lld records; cumulative window sum %lld; ratio %.6f%%\n",
          N_DISTINCT, produced, sum_cumul_window, ratio);

  evw_stop(&w);
  free(recs);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_kill9)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
