/* test_evaluator_flow.c: records produced to the measurements topic become the right rows and
 * attainment; a duplicated event_id counts once; poison records land in the DLQ with their
 * reason while later records still flow; the read API answers; SIGTERM exits 0. A backlog
 * drained through a prefetch queue far smaller than it wakes the parked fetcher and still
 * stores every record once. The COPY path and its fallback (a replayed batch) store exactly the
 * rows and totals that the INSERT statement alone stores. The evaluation date's month comes
 * from its totals when they are exact at the date, else from the readings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_pg.h"
#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters"          /* level 24 -> 50, FY2022 -> FY2024 */
#define CUMUL "g3-kosodate-3-maternity-grants"  /* cumulative 250 over FY2020-FY2024 */

static void test_flow(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evflow", "2024-06-01");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char rec[1024], id1[KPI_UUID_STRLEN + 1], id2[KPI_UUID_STRLEN + 1], id3[KPI_UUID_STRLEN + 1];

  /* A reading becomes a row and the measure's value, shortly after it is produced. */
  kpi_uuid_v4(id1);
  evw_measurement(rec, sizeof(rec), id1, LEVEL, "kikaku", "2024-05-01", 40, "person", NULL);
  long long t0 = kpi_it_now_ms();
  evw_produce(&w, w.t_meas, LEVEL, rec);
  evw_flush(&w);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "40");
  fprintf(stderr, "first reading visible in attainment after %lld ms\n", kpi_it_now_ms() - t0);
  char sql[512];
  snprintf(sql, sizeof(sql),
           "SELECT concat_ws('|', measure_id, department, observed_day, fiscal_year, value, unit,"
           " observed_at = '2024-05-01T00:00:00+09:00') FROM measurements WHERE event_id = '%s'",
           id1);
  evw_expect_sql(&w, sql, LEVEL "|kikaku|2024-05-01|2024|40|person|t");
  /* e = 428/731 at 2024-06-01, p = 16/26: on track (0.615 >= 0.8 * 0.585). */
  evw_expect_sql(&w, "SELECT status FROM attainment WHERE measure_id = '" LEVEL "'", "on_track");

  /* Duplicates: A and B, each sent several times, count once. */
  kpi_uuid_v4(id2);
  kpi_uuid_v4(id3);
  const char *ids[] = {id2, id3, id2, id3, id2};
  const double vals[] = {3, 4, 3, 4, 3};
  for (int i = 0; i < 5; i++) {
    evw_measurement(rec, sizeof(rec), ids[i], CUMUL, "kosodate", "2023-07-01", vals[i], "case",
                    NULL);
    evw_produce(&w, w.t_meas, CUMUL, rec);
  }
  evw_flush(&w);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" CUMUL "'", "7");
  evw_expect_sql(&w, "SELECT count(*) || '/' || sum(value) FROM measurements WHERE measure_id = '"
                 CUMUL "'", "2/7");
  evw_expect_sql(&w, "SELECT sum(events) || '/' || sum(total) FROM measure_totals WHERE measure_id = '"
                 CUMUL "'", "2/7");

  /* Poison: not JSON, an unknown measure, a wrong unit; then a good record still flows. */
  evw_produce(&w, w.t_meas, LEVEL, "this is not json");
  kpi_uuid_v4(id2);
  evw_measurement(rec, sizeof(rec), id2, "no-such-measure", "kikaku", "2024-05-02", 1, "person",
                  NULL);
  evw_produce(&w, w.t_meas, LEVEL, rec);
  kpi_uuid_v4(id2);
  evw_measurement(rec, sizeof(rec), id2, LEVEL, "kikaku", "2024-05-02", 1, "case", NULL);
  evw_produce(&w, w.t_meas, LEVEL, rec);
  kpi_uuid_v4(id3);
  evw_measurement(rec, sizeof(rec), id3, LEVEL, "kikaku", "2024-05-15", 45, "person", NULL);
  evw_produce(&w, w.t_meas, LEVEL, rec);
  evw_flush(&w);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "45");

  /* A note with every character that array literals and JSON escape survives intact. */
  kpi_uuid_v4(id2);
  snprintf(rec, sizeof(rec),
           "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"%s\",\"measure_id\":\"" LEVEL
           "\",\"department\":\"kikaku\",\"observed_at\":\"2024-05-16T10:00:00+09:00\","
           "\"value\":46,\"unit\":\"person\",\"note\":\"a \\\"quoted\\\", {braced}"
           " back\\\\slash NULL 応援団\",\"received_at\":\"2024-05-16T01:00:00Z\"}",
           id2);
  evw_produce(&w, w.t_meas, LEVEL, rec);
  evw_flush(&w);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "46");
  snprintf(sql, sizeof(sql), "SELECT note FROM measurements WHERE event_id = '%s'", id2);
  evw_expect_sql(&w, sql, "a \"quoted\", {braced} back\\slash NULL 応援団");
  /* Every record's offset is stored, the poison ones included: 1 + 5 + 4 + 1 records. */
  evw_expect_sql(&w, "SELECT sum(next_offset) FROM consumer_offsets", "11");
  evw_expect_sql(&w, "SELECT count(*) FROM measurements", "5");

  int n = 0;
  evw_msg *dlq = evw_read_topic(w.t_dlq, 1, 3, 1000, 20000, &n);
  assert_int_equal(n, 3);
  assert_string_equal(dlq[0].value, "this is not json");
  assert_string_equal(dlq[0].key, LEVEL);
  assert_non_null(dlq[0].error_header);
  assert_non_null(strstr(dlq[0].error_header, "decode"));
  assert_non_null(dlq[1].error_header);
  assert_non_null(strstr(dlq[1].error_header, "unknown_measure"));
  assert_non_null(dlq[2].error_header);
  assert_non_null(strstr(dlq[2].error_header, "unit_mismatch"));
  evw_msgs_free(dlq, n);

  /* The read API. */
  char *resp = evw_http_get(&w, "/v1/attainment/" LEVEL);
  assert_non_null(resp);
  assert_non_null(strstr(resp, "200 OK"));
  assert_non_null(strstr(resp, "\"history\""));
  assert_non_null(strstr(resp, "\"value\": 46"));
  free(resp);
  resp = evw_http_get(&w, "/v1/attainment");
  assert_non_null(resp);
  assert_non_null(strstr(resp, CUMUL));
  free(resp);
  resp = evw_http_get(&w, "/v1/attainment/nothing-here");
  assert_non_null(resp);
  assert_non_null(strstr(resp, " 404 "));
  free(resp);
  resp = evw_http_get(&w, "/metrics");
  assert_non_null(resp);
  assert_non_null(strstr(resp, "kpi_evaluator_dlq_total 3"));
  assert_non_null(strstr(resp, "kpi_evaluator_records_total 11"));
  free(resp);

  /* SIGTERM drains and exits 0. */
  evw_stop(&w);
  evw_close(&w);
}

/* The value of the metric NAME (0 when absent). */
static long long metric(evw *w, const char *name) {
  char *resp = evw_http_get(w, "/metrics");
  assert_non_null(resp);
  char key[128];
  snprintf(key, sizeof(key), "\n%s ", name);
  const char *m = strstr(resp, key);
  long long v = m ? strtoll(m + strlen(key), NULL, 10) : 0;
  free(resp);
  return v;
}

/* A backlog of 400 records read through a prefetch of 20 (queued.min.messages) in batches of
 * 50: librdkafka parks its fetcher each time the queue reaches 20, and the evaluator wakes it
 * once it has drained the queue (ev_kafka.c fetcher_wake, docs/evaluator.md "Performance").
 * Every record is stored once, with its offset, whatever the number of wake-ups; at least one
 * happened (the first fetch alone returns more than 20 records). */
static void test_prefetch_wakeup(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evprefetch", "2024-06-01");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_stop(&w);
  char rec[1024], id[KPI_UUID_STRLEN + 1];
  for (int i = 0; i < 400; i++) {
    kpi_uuid_v4(id);
    evw_measurement(rec, sizeof(rec), id, CUMUL, "kosodate", "2023-07-01", 1, "case", NULL);
    evw_produce(&w, w.t_meas, id, rec);
  }
  evw_flush(&w);
  static const char *const small[] = {"KPI_KAFKA_PROP_QUEUED_MIN_MESSAGES=20",
                                      "KPI_BATCH_MAX=50", NULL};
  evw_start(&w, small);
  evw_expect_sql_within(&w, "SELECT sum(next_offset) FROM consumer_offsets", "400", 60000);
  evw_expect_sql(&w, "SELECT count(*) || '/' || sum(value) FROM measurements", "400/400");
  evw_expect_sql(&w, "SELECT sum(events) || '/' || sum(total) FROM measure_totals", "400/400");
  /* The last wake-up may come after the last commit: the pull that finds the queue empty runs
   * once that commit is done, and the counter moves when the ListOffsets answers. */
  long long wakeups = 0;
  for (int i = 0; i < 300 && (wakeups = metric(&w, "kpi_evaluator_fetch_wakeups_total")) < 1; i++)
    kpi_it_sleep_ms(100);
  assert_true(wakeups >= 1);
  evw_stop(&w);
  evw_close(&w);
}

/* Every stored column but the Kafka position and stored_at, and the totals, as one digest. */
static char *rows_digest(evw *w) {
  return evw_sql(
      w,
      "SELECT md5(coalesce((SELECT string_agg(concat_ws('|', event_id, measure_id, department,"
      " observed_at, observed_day, fiscal_year, value, unit, component, note, received_at,"
      " retracted_at, retraction_id), ',' ORDER BY event_id) FROM measurements), '') || ';' ||"
      " coalesce((SELECT string_agg(concat_ws('|', measure_id, month, fiscal_year, component,"
      " events, total, last_day), ',' ORDER BY measure_id, month, component)"
      " FROM measure_totals), ''))");
}

#define N_COPY 40

/* 40 readings (two measures, several months, notes with characters COPY escapes), then the
 * first 20 again and one new: the world's digest, and its COPY counters in COPIES and
 * FALLBACKS. */
static char *copy_world(const char *prefix, const char *const *extra,
                        char ids[N_COPY + 1][KPI_UUID_STRLEN + 1], long long *copies,
                        long long *fallbacks) {
  evw w;
  evw_init(&w, prefix, "2024-06-01");
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char rec[1024];
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i <= N_COPY; i++) {
      if ((round == 0 && i == N_COPY) || (round == 1 && i >= 20 && i < N_COPY)) continue;
      const char *m = i % 2 ? CUMUL : LEVEL;
      snprintf(rec, sizeof(rec),
               "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"%s\",\"measure_id\":\"%s\","
               "\"department\":\"%s\",\"observed_at\":\"2024-%02d-%02dT10:00:00+09:00\","
               "\"value\":%d.25,\"unit\":\"%s\",\"note\":\"n%d\\ttab\\nline\\\\back\\r\","
               "\"received_at\":\"2024-06-01T01:00:00Z\"}",
               ids[i], m, i % 2 ? "kosodate" : "kikaku", 1 + i % 5, 1 + i % 28, i,
               i % 2 ? "case" : "person", i);
      evw_produce(&w, w.t_meas, m, rec);
    }
    evw_flush(&w);
    evw_expect_offsets(&w, NULL, round == 0 ? N_COPY : 2 * N_COPY - 20 + 1, 30000);
  }
  evw_expect_sql(&w, "SELECT count(*) FROM measurements", "41");
  /* Every totals row's last_day is the latest day of the readings it counts (migration 009). */
  evw_assert_sql(&w, "SELECT count(*) FROM measure_totals t WHERE t.last_day IS DISTINCT FROM"
                     " (SELECT max(x.observed_day) FROM measurements x WHERE x.measure_id ="
                     " t.measure_id AND date_trunc('month', x.observed_day) = t.month"
                     " AND coalesce(x.component, '') = t.component)", "0");
  char *digest = rows_digest(&w);
  *copies = metric(&w, "kpi_evaluator_copy_batches_total");
  *fallbacks = metric(&w, "kpi_evaluator_copy_fallbacks_total");
  evw_stop(&w);
  evw_close(&w);
  return digest;
}

static void test_copy_and_fallback(void **state) {
  (void)state;
  char ids[N_COPY + 1][KPI_UUID_STRLEN + 1];
  for (int i = 0; i <= N_COPY; i++) kpi_uuid_v4(ids[i]);
  long long copies, fallbacks;
  char *by_copy = copy_world("it_evcopy", NULL, ids, &copies, &fallbacks);
  assert_true(copies >= 1);    /* the first readings went in by COPY */
  assert_true(fallbacks >= 1); /* the replay's batch fell back to the INSERT statement */
  static const char *const insert_only[] = {"KPI_EVALUATOR_COPY=0", NULL};
  char *by_insert = copy_world("it_evinsert", insert_only, ids, &copies, &fallbacks);
  assert_int_equal(copies, 0);
  assert_int_equal(fallbacks, 0);
  assert_string_equal(by_copy, by_insert);
  free(by_copy);
  free(by_insert);
}

#define RATIO "g4-digital-1-konbini-issuance" /* ratio, components in cases, owner shimin */

static void produce_part(evw *w, const char *day, double value, const char *component) {
  char rec[1024], id[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(id);
  evw_measurement(rec, sizeof(rec), id, RATIO, "shimin", day, value, "case", component);
  evw_produce(w, w->t_meas, RATIO, rec);
}

/* Restarts W's evaluator at DATE; its start-up sweep evaluates every measure at that date. */
static void restart_at(evw *w, const char *date) {
  evw_stop(w);
  evw_replace_env(w, "KPI_EVAL_DATE", date);
  evw_start(w, NULL);
  assert_int_equal(evw_wait_ready(w, 30000), 0);
}

#define VALUES_SQL                                                                        \
  "SELECT string_agg(measure_id || '=' || round(value::numeric, 6) || '@' || as_of, ' '"  \
  " ORDER BY measure_id) FROM attainment WHERE measure_id IN ('" CUMUL "', '" RATIO "')"

/* docs/evaluator.md "Aggregates": the evaluation date's month comes from measure_totals when
 * none of its readings was observed after the date, else from the readings. On 15 June with
 * readings of the 20th and 25th already stored, those are left out; on 30 June the month's
 * totals rows are exact and give the direct sums. A totals row altered behind the
 * evaluator's back shows which source each date used. */
static void test_month_total(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evmonth", "2024-06-15");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_produce_reading(&w, CUMUL, "kosodate", "2024-05-10", 100, "case", NULL);
  evw_produce_reading(&w, CUMUL, "kosodate", "2024-06-10", 30, "case", NULL);
  evw_produce_reading(&w, CUMUL, "kosodate", "2024-06-20", 50, "case", NULL);
  produce_part(&w, "2024-06-05", 10, "numerator");
  produce_part(&w, "2024-06-05", 40, "denominator");
  produce_part(&w, "2024-06-25", 30, "numerator");
  produce_part(&w, "2024-06-25", 40, "denominator");
  evw_flush(&w);
  evw_expect_offsets(&w, NULL, 7, 30000);
  /* 15 June: 100 + 30, and 10 of 40; the readings after the date do not count. */
  evw_expect_sql(&w, VALUES_SQL,
                 CUMUL "=130.000000@2024-06-15 " RATIO "=25.000000@2024-06-15");
  evw_assert_sql(&w, "SELECT string_agg(measure_id || ' ' || component || ' ' || last_day, ','"
                     " ORDER BY measure_id, component) FROM measure_totals"
                     " WHERE month = '2024-06-01'",
                 CUMUL "  2024-06-20," RATIO " denominator 2024-06-25," RATIO
                       " numerator 2024-06-25");
  /* Migration 009's backfill gives rows written before it the same days. */
  char err[512];
  assert_int_equal(kpi_pg_exec(w.pg, "UPDATE measure_totals SET last_day = 'infinity'", err,
                               sizeof(err)),
                   0);
  char *mig = kpi_it_read_file(KPI_SOURCE_DIR "/db/migrations/009_totals_last_day.sql", NULL);
  assert_non_null(mig);
  assert_int_equal(kpi_pg_exec(w.pg, mig, err, sizeof(err)), 0);
  free(mig);
  evw_assert_sql(&w, "SELECT string_agg(last_day::text, ',' ORDER BY measure_id, month,"
                     " component) FROM measure_totals",
                 "2024-05-10,2024-06-20,2024-06-25,2024-06-25");

  /* 30 June: the month's totals rows are exact; the figures equal the direct sums. */
  restart_at(&w, "2024-06-30");
  evw_expect_sql(&w, VALUES_SQL,
                 CUMUL "=180.000000@2024-06-30 " RATIO "=50.000000@2024-06-30");
  evw_assert_sql(&w, "SELECT sum(value) FROM measurements WHERE measure_id = '" CUMUL "'"
                     " AND observed_day <= '2024-06-30'", "180");

  /* Which source: June's totals raised by 1000 behind the evaluator's back count on 30 June
   * (the month's total is used) and not on 15 June (the readings are summed). */
  evw_stop(&w);
  assert_int_equal(kpi_pg_exec(w.pg, "UPDATE measure_totals SET total = total + 1000"
                                     " WHERE measure_id = '" CUMUL "' AND month = '2024-06-01'",
                               err, sizeof(err)),
                   0);
  evw_replace_env(&w, "KPI_EVAL_DATE", "2024-06-15");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_expect_sql(&w, VALUES_SQL,
                 CUMUL "=130.000000@2024-06-15 " RATIO "=25.000000@2024-06-15");
  restart_at(&w, "2024-06-30");
  evw_expect_sql(&w, VALUES_SQL,
                 CUMUL "=1180.000000@2024-06-30 " RATIO "=50.000000@2024-06-30");
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_flow),
                                     cmocka_unit_test(test_prefetch_wakeup),
                                     cmocka_unit_test(test_copy_and_fallback),
                                     cmocka_unit_test(test_month_total)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
