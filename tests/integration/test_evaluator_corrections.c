/* test_evaluator_corrections.c: retractions and corrections on the real stack
 * (docs/corrections.md "Evaluator"): a cumulative amount retracted (the sum drops, the status
 * moves, one alert; a replay of the topic into a fresh database gives the same rows), a
 * retraction that comes before its measurement, retractions refused to the DLQ, and an atomic
 * correction that no history row shows half done. Records are produced straight to Kafka. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_records.h"
#include "kpi_time.h"
#include "test_evaluator_util.h"

#define CUMUL "g3-kosodate-3-maternity-grants" /* cumulative 250 by FY2024, owner kosodate */
#define LEVEL "g2-uiturn-4-supporters"         /* level 24 -> 50 by FY2024, owner kikaku */
#define EVAL_DATE "2024-06-01"
#define RECEIVED_MS 1717203600000LL /* 2024-06-01T01:00:00Z */

static const char *const quick[] = {"KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000",
                                    "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};

/* Produces a kpi.retraction/1 record of RETRACTS (keyed by MEASURE) and flushes; its id to
 * RID unless NULL. */
static void produce_retraction(evw *w, const char *retracts, const char *measure,
                               const char *dept, const char *reason, char *rid) {
  static kpi_retraction r;
  memset(&r, 0, sizeof(r));
  snprintf(r.retracts, sizeof(r.retracts), "%s", retracts);
  snprintf(r.measure_id, sizeof(r.measure_id), "%s", measure);
  snprintf(r.department, sizeof(r.department), "%s", dept);
  kpi_retraction_id(retracts, measure, dept, r.event_id);
  snprintf(r.reason, sizeof(r.reason), "%s", reason);
  r.received_ms = RECEIVED_MS;
  kpi_time_format_utc(r.received_ms, r.received_at, sizeof(r.received_at));
  size_t len = 0;
  char *json = kpi_retraction_encode(&r, &len);
  assert_non_null(json);
  evw_produce(w, w->t_meas, measure, json);
  evw_flush(w);
  free(json);
  if (rid) memcpy(rid, r.event_id, sizeof(r.event_id));
}

/* Produces a reading with the given EVENT_ID (a correction of CORRECTS unless NULL). */
static void produce_reading_id(evw *w, const char *event_id, const char *measure,
                               const char *dept, const char *day, double value,
                               const char *unit, const char *corrects) {
  char rec[1400];
  evw_measurement(rec, sizeof(rec), event_id, measure, dept, day, value, unit, NULL);
  if (corrects) {
    size_t n = strlen(rec);
    assert_true(rec[n - 1] == '}');
    snprintf(rec + n - 1, sizeof(rec) - (n - 1),
             ",\"corrects\":{\"event_id\":\"%s\",\"reason\":\"入力誤り\"}}", corrects);
  }
  evw_produce(w, w->t_meas, measure, rec);
  evw_flush(w);
}

static void sql_of(char *buf, size_t size, const char *fmt, const char *arg) {
  snprintf(buf, size, fmt, arg);
}

/* The rows a replay must reproduce, one text per table (processing times left out; the alert
 * bookkeeping of `attainment` depends on which evaluations happened, i.e. on batch bounds). */
static const char *const ROWS_SQL[] = {
    "SELECT string_agg(concat_ws('|', event_id, measure_id, department, observed_at, value,"
    " received_at, retracted_at, retracted_by, retraction_reason, retraction_id, corrects,"
    " kafka_partition, kafka_offset), ',' ORDER BY event_id) FROM measurements",
    "SELECT string_agg(concat_ws('|', event_id, retracts, measure_id, department, reason,"
    " received_at, state, refusal, correction, kafka_partition, kafka_offset), ','"
    " ORDER BY event_id) FROM retractions",
    "SELECT string_agg(concat_ws('|', measure_id, month, fiscal_year, component, events,"
    " round(total::numeric, 6)), ',' ORDER BY measure_id, month, component) FROM measure_totals",
    "SELECT string_agg(concat_ws('|', measure_id, as_of, value, progress, expected, status,"
    " stale, last_observed_at, events), ',' ORDER BY measure_id) FROM attainment",
};

static void test_retract_cumulative_and_replay(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evcorr1", EVAL_DATE);
  evw_start(&w, quick);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char a[KPI_UUID_STRLEN + 1], b[KPI_UUID_STRLEN + 1], rid[KPI_UUID_STRLEN + 1], sql[600];
  kpi_uuid_v4(a);
  kpi_uuid_v4(b);
  /* May (a whole month: from measure_totals) 200 + June 60 = 260 of 250: achieved. */
  produce_reading_id(&w, a, CUMUL, "kosodate", "2024-05-10", 200, "case", NULL);
  produce_reading_id(&w, b, CUMUL, "kosodate", "2024-06-01", 60, "case", NULL);
  evw_expect_sql(&w, "SELECT status || ' ' || value FROM attainment WHERE measure_id = '" CUMUL "'",
                 "achieved 260");
  char *before = evw_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" CUMUL "'");

  /* The 200 is taken back: 60 of 250 is lagging; May's total drops to nothing. */
  produce_retraction(&w, a, CUMUL, "kosodate", "二重計上のため取消", rid);
  evw_expect_sql(&w, "SELECT status || ' ' || value FROM attainment WHERE measure_id = '" CUMUL "'",
                 "lagging 60");
  sql_of(sql, sizeof(sql),
         "SELECT concat_ws(' ', retracted_by, retraction_reason, retraction_id,"
         " retracted_at = '2024-06-01T01:00:00Z') FROM measurements WHERE event_id = '%s'", a);
  char want[300];
  snprintf(want, sizeof(want), "kosodate 二重計上のため取消 %s t", rid);
  evw_assert_sql(&w, sql, want);
  sql_of(sql, sizeof(sql), "SELECT state FROM retractions WHERE event_id = '%s'", rid);
  evw_assert_sql(&w, sql, "applied");
  evw_assert_sql(&w,
                 "SELECT events || ' ' || total FROM measure_totals WHERE measure_id = '" CUMUL
                 "' AND month = '2024-05-01'",
                 "0 0");
  evw_assert_sql(&w, "SELECT events FROM attainment WHERE measure_id = '" CUMUL "'", "1");
  evw_assert_sql(&w,
                 "SELECT cause || ' ' || status FROM attainment_history WHERE measure_id = '" CUMUL
                 "' ORDER BY id DESC LIMIT 1",
                 "retraction lagging");
  /* Exactly one alert for the change. */
  long long n_before = atoll(before);
  free(before);
  char n_want[32];
  snprintf(n_want, sizeof(n_want), "%lld", n_before + 1);
  evw_assert_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" CUMUL "'", n_want);
  evw_assert_sql(&w,
                 "SELECT payload::json->>'status' FROM outbox WHERE msg_key = '" CUMUL
                 "' ORDER BY id DESC LIMIT 1",
                 "lagging");

  /* The same retraction again (a retried request): nothing moves. A sentinel reading of
   * another measure tells when it was read. */
  produce_retraction(&w, a, CUMUL, "kosodate", "二重計上のため取消", NULL);
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 30, "person", NULL);
  evw_expect_offsets(&w, NULL, 5, 30000);
  evw_assert_sql(&w, "SELECT count(*) FROM retractions", "1");
  evw_assert_sql(&w,
                 "SELECT events || ' ' || total FROM measure_totals WHERE measure_id = '" CUMUL
                 "' AND month = '2024-05-01'",
                 "0 0");
  evw_assert_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" CUMUL "'", n_want);
  evw_stop(&w);

  /* Replay: a second evaluator, new group and new database, reads the same topic. */
  evw r;
  evw_init(&r, "it_evcorr1r", EVAL_DATE);
  evw_replace_env(&r, "KPI_TOPIC_MEASUREMENTS", w.t_meas);
  evw_start(&r, quick);
  evw_expect_offsets(&r, NULL, 5, 60000);
  for (size_t i = 0; i < sizeof(ROWS_SQL) / sizeof(ROWS_SQL[0]); i++) {
    char *x = evw_sql(&w, ROWS_SQL[i]), *y = evw_sql(&r, ROWS_SQL[i]);
    if (strcmp(x, y) != 0) fail_msg("replay differs:\n%s\n%s", x, y);
    assert_true(x[0] != '\0');
    free(x);
    free(y);
  }
  evw_stop(&r);
  evw_close(&r);
  evw_close(&w);
}

static void test_retraction_before_measurement(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evcorr2", EVAL_DATE);
  evw_start(&w, quick);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char e[KPI_UUID_STRLEN + 1], f[KPI_UUID_STRLEN + 1], rid[KPI_UUID_STRLEN + 1], sql[400];
  kpi_uuid_v4(e);
  kpi_uuid_v4(f);
  produce_retraction(&w, e, CUMUL, "kosodate", "誤送信", rid);
  sql_of(sql, sizeof(sql), "SELECT state FROM retractions WHERE event_id = '%s'", rid);
  evw_expect_sql(&w, sql, "pending");
  /* Both in the evaluation date's month, which is read from `measurements`: the mark alone
   * keeps the 100 out. */
  produce_reading_id(&w, e, CUMUL, "kosodate", "2024-06-01", 100, "case", NULL);
  produce_reading_id(&w, f, CUMUL, "kosodate", "2024-06-01", 10, "case", NULL);
  evw_expect_offsets(&w, NULL, 3, 30000);
  evw_expect_sql(&w, sql, "applied");
  sql_of(sql, sizeof(sql),
         "SELECT retraction_id FROM measurements WHERE event_id = '%s'", e);
  evw_assert_sql(&w, sql, rid);
  /* Never counted: June's total holds the 10 only, and so does the attainment. */
  evw_assert_sql(&w,
                 "SELECT string_agg(events || ' ' || total, ',') FROM measure_totals"
                 " WHERE month = '2024-06-01'",
                 "1 10");
  evw_expect_sql(&w, "SELECT value || ' ' || events FROM attainment WHERE measure_id = '" CUMUL "'",
                 "10 1");
  evw_assert_sql(&w, "SELECT count(*) FROM attainment_history WHERE measure_id = '" CUMUL "' AND value >= 100", "0");
  /* The readings' COPY stood until the pending retraction was found, then rolled back for the
   * INSERT statement, which applied it (ev_txn.c SQL_COPY_TOTALS). */
  char *resp = evw_http_get(&w, "/metrics");
  assert_non_null(resp);
  assert_null(strstr(resp, "\nkpi_evaluator_copy_fallbacks_total 0\n"));
  assert_non_null(strstr(resp, "\nkpi_evaluator_copy_fallbacks_total "));
  free(resp);
  evw_stop(&w);
  evw_close(&w);
}

static void test_retractions_refused(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evcorr3", EVAL_DATE);
  evw_start(&w, quick);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char e[KPI_UUID_STRLEN + 1], g[KPI_UUID_STRLEN + 1], rid[KPI_UUID_STRLEN + 1], sql[400];
  kpi_uuid_v4(e);
  kpi_uuid_v4(g);
  produce_reading_id(&w, e, CUMUL, "kosodate", "2024-05-10", 100, "case", NULL);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", "100");
  /* Another department, then another measure's event: both refused. */
  produce_retraction(&w, e, CUMUL, "kikaku", "他課による取消", NULL);
  produce_retraction(&w, e, LEVEL, "kikaku", "別指標", NULL);
  /* Pending, then its measurement comes from another department: refused, counted. */
  produce_retraction(&w, g, CUMUL, "kikaku", "先回り", rid);
  produce_reading_id(&w, g, CUMUL, "kosodate", "2024-06-01", 5, "case", NULL);
  /* The evaluator goes on with other records. */
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 30, "person", NULL);
  evw_expect_offsets(&w, NULL, 6, 30000);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "30");
  evw_assert_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", "105");
  evw_assert_sql(&w, "SELECT count(*) FROM measurements WHERE retracted_at IS NOT NULL", "0");
  sql_of(sql, sizeof(sql),
         "SELECT state || ' ' || (refusal LIKE '%%kosodate%%') FROM retractions"
         " WHERE event_id = '%s'", rid);
  evw_assert_sql(&w, sql, "refused true");
  evw_assert_sql(&w, "SELECT count(*) FROM retractions", "1");
  int n = 0;
  evw_msg *dlq = evw_read_topic(w.t_dlq, 3, 2, 2000, 30000, &n);
  assert_int_equal(n, 2);
  int other_dept = 0, other_measure = 0;
  for (int i = 0; i < n; i++) {
    assert_non_null(dlq[i].error_header);
    fprintf(stderr, "kpi-error: %s\n", dlq[i].error_header);
    assert_non_null(strstr(dlq[i].error_header, "retraction: "));
    assert_non_null(strstr(dlq[i].value, "kpi.retraction/1"));
    if (strstr(dlq[i].value, "他課による取消")) other_dept++;
    if (strstr(dlq[i].value, "別指標")) other_measure++;
  }
  assert_int_equal(other_dept, 1);
  assert_int_equal(other_measure, 1);
  evw_msgs_free(dlq, n);
  /* The refused ones never stand in for the owner's: its retraction of G (whose mistaken
   * pending retraction was refused) applies, and its correction of E (retracted by mistake
   * twice above) replaces E: 100 + 5 -> 0 + 0 + 90. */
  char own[KPI_UUID_STRLEN + 1], fix[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(fix);
  produce_retraction(&w, g, CUMUL, "kosodate", "重複", own);
  produce_reading_id(&w, fix, CUMUL, "kosodate", "2024-05-10", 90, "case", e);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", "90");
  sql_of(sql, sizeof(sql), "SELECT state FROM retractions WHERE event_id = '%s'", own);
  evw_assert_sql(&w, sql, "applied");
  evw_assert_sql(&w, "SELECT count(*) FROM measurements WHERE retracted_by = 'kosodate'", "2");
  evw_stop(&w);
  evw_close(&w);
}

static void test_atomic_correction(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evcorr4", EVAL_DATE);
  evw_start(&w, quick);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char x[KPI_UUID_STRLEN + 1], c[KPI_UUID_STRLEN + 1], sql[400];
  kpi_uuid_v4(x);
  kpi_uuid_v4(c);
  /* 45 on 1 May is on track; 30 on 3 May lags (lagging/1). The correction says 31 on 2 May:
   * only the retraction mark keeps the 30, still the latest reading, out. Without the 30 (the
   * state between the two halves of a correction) the figure would be 45 and on track
   * again. */
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 45, "person", NULL);
  evw_expect_sql(&w, "SELECT status FROM attainment WHERE measure_id = '" LEVEL "'", "on_track");
  produce_reading_id(&w, x, LEVEL, "kikaku", "2024-05-03", 30, "person", NULL);
  evw_expect_sql(&w, "SELECT status FROM attainment WHERE measure_id = '" LEVEL "'", "lagging");
  produce_reading_id(&w, c, LEVEL, "kikaku", "2024-05-02", 31, "person", x);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "31");
  evw_assert_sql(&w,
                 "SELECT string_agg(value || ' ' || status || ' ' || cause, ', ' ORDER BY id)"
                 " FROM attainment_history WHERE measure_id = '" LEVEL "' AND value IS NOT NULL",
                 "45 on_track measurement, 30 lagging measurement, 31 lagging retraction");
  /* No resolved notice nor second alert: lagging/1 only. */
  evw_assert_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "'", "1");
  char rid[KPI_UUID_STRLEN + 1], want[200];
  kpi_retraction_id(x, LEVEL, "kikaku", rid);
  sql_of(sql, sizeof(sql), "SELECT retraction_id FROM measurements WHERE event_id = '%s'", x);
  evw_assert_sql(&w, sql, rid);
  sql_of(sql, sizeof(sql), "SELECT corrects FROM measurements WHERE event_id = '%s'", c);
  evw_assert_sql(&w, sql, x);
  snprintf(want, sizeof(want), "applied %s 入力誤り kikaku", c);
  sql_of(sql, sizeof(sql),
         "SELECT concat_ws(' ', state, correction, reason, department) FROM retractions"
         " WHERE event_id = '%s'", rid);
  evw_assert_sql(&w, sql, want);
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_retract_cumulative_and_replay),
      cmocka_unit_test(test_retraction_before_measurement),
      cmocka_unit_test(test_retractions_refused),
      cmocka_unit_test(test_atomic_correction),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
