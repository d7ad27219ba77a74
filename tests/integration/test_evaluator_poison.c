/* test_evaluator_poison.c: records the database refuses do not stop the city. Amounts of one
 * cumulative measure break a limit the database enforces on its monthly total (in one batch,
 * and against the total already stored); the refused records land in the DLQ with the
 * database's reason while another department's measure keeps being evaluated within seconds,
 * the evaluator keeps running, and after a restart nothing is stuck. A value past the codec's
 * bound (1.7e308) is refused before the database, with its own reason. An event_id reused by
 * another measure or department is poison too; a true replay stays a silent duplicate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters"          /* level, owner kikaku */
#define CUMUL "g3-kosodate-3-maternity-grants"  /* cumulative, owner kosodate */
#define HUGE_AMOUNT 1.7e308

static void produce(evw *w, const char *id, const char *measure, const char *dept,
                    const char *day, double value, const char *unit) {
  char rec[1024];
  evw_measurement(rec, sizeof(rec), id, measure, dept, day, value, unit, NULL);
  evw_produce(w, w->t_meas, measure, rec);
}

/* B's reading VALUE becomes its attainment within 10 s of being produced. */
static void expect_level(evw *w, const char *value) {
  char want[64];
  snprintf(want, sizeof(want), "%s", value);
  evw_expect_sql_within(w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", want,
                        10000);
}

static void test_overflow_is_poison(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evpoison", "2024-06-01");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char a1[KPI_UUID_STRLEN + 1], a2[KPI_UUID_STRLEN + 1], a3[KPI_UUID_STRLEN + 1],
      huge[KPI_UUID_STRLEN + 1], id[KPI_UUID_STRLEN + 1];
  /* Since the codec bounds every amount (<= 1e12), float8 sums cannot overflow any more; a
   * CHECK constraint stands in for any limit the database enforces on what a batch writes
   * (SQLSTATE 23514, class 23, the same path as 22003 "value out of range: overflow"). */
  free(evw_sql(&w, "ALTER TABLE measure_totals ADD CONSTRAINT it_total_cap"
                   " CHECK (total <= 1000)"));
  evw_assert_sql(&w, "SELECT count(*) FROM pg_constraint WHERE conname = 'it_total_cap'", "1");

  /* B before, A twice (the second breaks the month's total, most likely in the same batch
   * as the first), B after, all in one flush. A and B are keyed to different partitions, so
   * their records need not share a batch: B's readings often commit in a batch of their own
   * before A's batch has even failed. */
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-01", 30, "person");
  kpi_uuid_v4(a1);
  produce(&w, a1, CUMUL, "kosodate", "2023-07-01", 600, "case");
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-02", 31, "person");
  kpi_uuid_v4(a2);
  produce(&w, a2, CUMUL, "kosodate", "2023-07-02", 600, "case");
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-03", 32, "person");
  evw_flush(&w);
  expect_level(&w, "32");
  /* B's 32 says nothing about A's batch, which may still be searching for its poison row: A1
   * is stored by the search's first half, on its own, after the failed try. So wait for it
   * rather than read it once; the offsets below then show the search finished. */
  char sql[512];
  snprintf(sql, sizeof(sql), "SELECT count(*) FROM measurements WHERE event_id = '%s'", a1);
  evw_expect_sql_within(&w, sql, "1", 10000);

  /* A third amount, alone in its batch, breaks the limit together with the stored total. */
  kpi_uuid_v4(a3);
  produce(&w, a3, CUMUL, "kosodate", "2023-07-03", 600, "case");
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-04", 33, "person");
  evw_flush(&w);
  expect_level(&w, "33");
  /* An absurd amount never reaches the database: the codec's bound refuses it. */
  kpi_uuid_v4(huge);
  produce(&w, huge, CUMUL, "kosodate", "2023-07-04", HUGE_AMOUNT, "case");
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-05", 34, "person");
  evw_flush(&w);
  expect_level(&w, "34");
  evw_expect_offsets(&w, NULL, 9, 10000);
  evw_assert_sql(&w, "SELECT count(*) FROM measurements WHERE measure_id = '" CUMUL "'", "1");
  evw_assert_sql(&w, "SELECT count(*) FROM measurements WHERE measure_id = '" LEVEL "'", "5");
  assert_int_equal(waitpid(w.pid, NULL, WNOHANG), 0); /* still running */

  /* Each refused record once, with its reason, in no promised order: the huge amount is
   * refused as it is read, and it is produced once B's 33 is stored, which may be before A3's
   * batch (another partition) has failed and sent A3's copy. */
  int n = 0;
  evw_msg *dlq = evw_read_topic(w.t_dlq, 1, 3, 1000, 20000, &n);
  assert_int_equal(n, 3);
  int seen_a2 = 0, seen_a3 = 0, seen_huge = 0;
  for (int i = 0; i < n; i++) {
    assert_string_equal(dlq[i].key, CUMUL);
    assert_non_null(dlq[i].error_header);
    fprintf(stderr, "kpi-error: %s\n", dlq[i].error_header);
    if (strstr(dlq[i].value, huge)) {
      seen_huge++;
      assert_non_null(strstr(dlq[i].error_header, "out_of_range"));
      continue;
    }
    if (strstr(dlq[i].value, a2)) seen_a2++;
    else if (strstr(dlq[i].value, a3)) seen_a3++;
    else fail_msg("unexpected DLQ record: %s", dlq[i].value);
    assert_non_null(strstr(dlq[i].error_header, "23514"));
    assert_non_null(strstr(dlq[i].error_header, "it_total_cap"));
  }
  assert_int_equal(seen_a2, 1);
  assert_int_equal(seen_a3, 1);
  assert_int_equal(seen_huge, 1);
  evw_msgs_free(dlq, n);

  /* A restart finds nothing stuck: it resumes at the stored offsets, the sweep commits, and
   * new records of both measures flow. */
  evw_stop(&w);
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-06", 35, "person");
  kpi_uuid_v4(id);
  produce(&w, id, CUMUL, "kosodate", "2024-05-05", 2, "case");
  evw_flush(&w);
  expect_level(&w, "35");
  evw_expect_offsets(&w, NULL, 11, 10000);
  evw_assert_sql(&w, "SELECT count(*) FROM measurements WHERE measure_id = '" CUMUL "'", "2");
  char *resp = evw_http_get(&w, "/metrics");
  assert_non_null(resp);
  assert_non_null(strstr(resp, "kpi_evaluator_sweeps_total 1"));
  free(resp);
  dlq = evw_read_topic(w.t_dlq, 1, 3, 1000, 20000, &n);
  assert_int_equal(n, 3);
  evw_msgs_free(dlq, n);
  evw_stop(&w);
  evw_close(&w);
}

static void test_event_id_reused(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evreuse", "2024-06-01");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char x[KPI_UUID_STRLEN + 1], y[KPI_UUID_STRLEN + 1], id[KPI_UUID_STRLEN + 1];

  kpi_uuid_v4(x);
  produce(&w, x, LEVEL, "kikaku", "2024-05-01", 40, "person");
  evw_flush(&w);
  expect_level(&w, "40");

  /* X again for another measure and department: poison. X again as it was: a replay, silent.
   * Y twice in one batch, the second time for another department: the second is poison. */
  produce(&w, x, CUMUL, "kosodate", "2023-07-01", 5, "case");
  produce(&w, x, LEVEL, "kikaku", "2024-05-01", 40, "person");
  kpi_uuid_v4(y);
  produce(&w, y, CUMUL, "kosodate", "2023-07-02", 3, "case");
  produce(&w, y, CUMUL, "kikaku", "2023-07-02", 3, "case");
  kpi_uuid_v4(id);
  produce(&w, id, LEVEL, "kikaku", "2024-05-02", 41, "person");
  evw_flush(&w);
  expect_level(&w, "41");
  evw_expect_offsets(&w, NULL, 6, 10000);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", "3");
  char sql[512];
  snprintf(sql, sizeof(sql),
           "SELECT measure_id || '|' || department || '|' || value FROM measurements"
           " WHERE event_id = '%s'", x);
  evw_assert_sql(&w, sql, LEVEL "|kikaku|40");
  snprintf(sql, sizeof(sql),
           "SELECT department FROM measurements WHERE event_id = '%s'", y);
  evw_assert_sql(&w, sql, "kosodate");

  int n = 0;
  evw_msg *dlq = evw_read_topic(w.t_dlq, 1, 2, 1500, 20000, &n);
  assert_int_equal(n, 2);
  int seen_x = 0, seen_y = 0;
  for (int i = 0; i < n; i++) {
    assert_non_null(dlq[i].error_header);
    fprintf(stderr, "kpi-error: %s\n", dlq[i].error_header);
    assert_non_null(strstr(dlq[i].error_header, "event_id reused"));
    if (strstr(dlq[i].value, x)) {
      seen_x++;
      assert_non_null(strstr(dlq[i].value, CUMUL));
    }
    if (strstr(dlq[i].value, y)) {
      seen_y++;
      assert_non_null(strstr(dlq[i].value, "\"department\":\"kikaku\""));
    }
  }
  assert_int_equal(seen_x, 1);
  assert_int_equal(seen_y, 1);
  evw_msgs_free(dlq, n);
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_overflow_is_poison),
                                     cmocka_unit_test(test_event_id_reused)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
