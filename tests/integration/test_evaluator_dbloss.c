/* test_evaluator_dbloss.c: the evaluator's database connections are cut again and again
 * (pg_terminate_backend) while records flow; it reconnects with backoff, pauses meanwhile,
 * skips nothing and counts nothing twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"

#define CUMUL "g3-kosodate-3-maternity-grants" /* cumulative, window FY2020-FY2024 */
#define N_RECORDS 2000

static void test_db_loss(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evdbloss", "2024-06-01");
  const char *extra[] = {"KPI_BATCH_MAX=20", NULL};
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);

  char rec[1024], id[KPI_UUID_STRLEN + 1], kill_sql[512];
  snprintf(kill_sql, sizeof(kill_sql),
           "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
           " WHERE datname = '%s' AND pid <> pg_backend_pid()",
           w.name);
  long long sum = 0;
  int cuts = 0;
  for (int i = 0; i < N_RECORDS; i++) {
    kpi_uuid_v4(id);
    int value = 1 + i % 4;
    evw_measurement(rec, sizeof(rec), id, CUMUL, "kosodate", i % 2 ? "2023-04-01" : "2024-03-31",
                    value, "case", NULL);
    evw_produce(&w, w.t_meas, CUMUL, rec);
    sum += value;
    if (i % 200 == 199) {
      evw_flush(&w);
      kpi_it_sleep_ms(40);
      /* Right after a cut the evaluator may still be reconnecting: cut once it is back. */
      for (int attempt = 0; attempt < 100; attempt++) {
        char *n = kpi_it_pg_value(w.pg, kill_sql);
        int killed = n && atoi(n) > 0;
        free(n);
        if (killed) {
          cuts++;
          break;
        }
        kpi_it_sleep_ms(20);
      }
    }
  }
  evw_flush(&w);
  fprintf(stderr, "cut the evaluator's connections %d times\n", cuts);
  assert_true(cuts >= 8);

  evw_expect_offsets(&w, NULL, N_RECORDS, 60000);
  char want[32];
  snprintf(want, sizeof(want), "%d/%lld", N_RECORDS, sum);
  evw_assert_sql(&w, "SELECT count(*) || '/' || sum(value) FROM measurements", want);
  snprintf(want, sizeof(want), "%lld", sum);
  evw_expect_sql_within(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", want,
                        20000);
  evw_assert_sql(&w, "SELECT sum(total) FROM measure_totals", want);
  char *resp = evw_http_get(&w, "/readyz");
  assert_non_null(resp);
  assert_non_null(strstr(resp, " 200 "));
  free(resp);

  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_db_loss)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
