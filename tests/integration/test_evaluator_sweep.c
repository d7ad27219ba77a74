/* test_evaluator_sweep.c: time alone moves a measure. With no new data, the periodic sweep of a
 * running evaluator (KPI_SWEEP_INTERVAL_MS=200) at a later evaluation date (KPI_EVAL_DATE, set
 * by restarting) makes the measure stale, reminds after repeat_interval (not a day earlier) and
 * marks it failed after due; each of those yields exactly one record on the alerts topic, however
 * many sweeps run. An acknowledgement quiets the reminders until its `until` (and no longer once
 * the measure moves). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters" /* level 24 -> 50, start 2023-03-31, due 2025-03-31 */

static void run_at(evw *w, const char *date) {
  if (w->pid > 0) evw_stop(w);
  evw_replace_env(w, "KPI_EVAL_DATE", date);
  const char *extra[] = {"KPI_SWEEP_INTERVAL_MS=200", "KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000",
                         "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};
  evw_start(w, extra);
  char sql[200];
  snprintf(sql, sizeof(sql), "SELECT as_of FROM attainment WHERE measure_id = '%s'", LEVEL);
  evw_expect_sql(w, sql, date);
}

static int level_alerts(evw *w) {
  char *n = evw_sql(w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "'");
  int v = atoi(n);
  free(n);
  return v;
}

static void test_time_moves(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evsweep", NULL);
  /* 2024-06-01: a reading of 45 made 2023-05-01 is p = 21/26 >= 0.8 e (e = 428/731), 397 days
   * old: on track, not stale. */
  run_at(&w, "2024-06-01");
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_produce_reading(&w, LEVEL, "kikaku", "2023-05-01", 45, "person", NULL);
  evw_expect_sql(&w, "SELECT value || ' ' || status || ' ' || stale FROM attainment"
                 " WHERE measure_id = '" LEVEL "'", "45 on_track false");
  assert_int_equal(level_alerts(&w), 0);

  /* 2024-08-01: 458 days without a report (> 365 + 90): stale, one alert. */
  run_at(&w, "2024-08-01");
  evw_expect_sql(&w, "SELECT status || ' ' || stale FROM attainment WHERE measure_id = '" LEVEL "'",
             "on_track true");
  evw_expect_alert_sent(&w, LEVEL "/stale/1", NULL);
  kpi_it_sleep_ms(1000); /* five more sweeps */
  assert_int_equal(level_alerts(&w), 1);

  /* 6 days later: no reminder yet; 7 days later: the first reminder. */
  run_at(&w, "2024-08-07");
  kpi_it_sleep_ms(1000);
  assert_int_equal(level_alerts(&w), 1);
  run_at(&w, "2024-08-08");
  evw_expect_alert_sent(&w, LEVEL "/stale/1/reminder-1", NULL);
  kpi_it_sleep_ms(600);
  assert_int_equal(level_alerts(&w), 2);

  /* The day after due: failed, a new episode. */
  run_at(&w, "2025-04-01");
  evw_expect_sql(&w, "SELECT status FROM attainment WHERE measure_id = '" LEVEL "'", "failed");
  evw_expect_alert_sent(&w, LEVEL "/failed/2", NULL);
  kpi_it_sleep_ms(600);
  assert_int_equal(level_alerts(&w), 3);
  char *h = evw_sql(&w, "SELECT string_agg(status || '/' || stale, ' ' ORDER BY id)"
                        " FROM attainment_history WHERE measure_id = '" LEVEL "'");
  fprintf(stderr, "history: %s\n", h);
  free(h);

  evw_stop(&w);

  /* On the topic: the three alerts of the measure, once each, with their types. */
  int n = 0;
  evw_msg *msgs = evw_read_topic(w.t_alerts, 3, 3, 2000, 30000, &n);
  static const struct {
    const char *name, *type, *status;
  } want[] = {{LEVEL "/stale/1", "\"type\":\"alert\"", "\"status\":\"on_track\""},
              {LEVEL "/stale/1/reminder-1", "\"type\":\"reminder\"", "\"status\":\"on_track\""},
              {LEVEL "/failed/2", "\"type\":\"alert\"", "\"status\":\"failed\""}};
  int level_msgs = 0;
  for (int i = 0; i < n; i++)
    if (msgs[i].key && strcmp(msgs[i].key, LEVEL) == 0) level_msgs++;
  for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++) {
    char aid[KPI_UUID_STRLEN + 1];
    kpi_alert_id(want[k].name, aid);
    int seen = 0;
    for (int i = 0; i < n; i++) {
      if (!msgs[i].value || !strstr(msgs[i].value, aid)) continue;
      seen++;
      assert_non_null(strstr(msgs[i].value, want[k].type));
      assert_non_null(strstr(msgs[i].value, want[k].status));
    }
    if (seen != 1) fail_msg("%s seen %d times on the topic", want[k].name, seen);
  }
  assert_int_equal(level_msgs, 3);
  evw_msgs_free(msgs, n);
  evw_close(&w);
}

/* A kpi.acknowledgement/1 record of LEVEL by its owner (docs/corrections.md). */
static void produce_ack(evw *w, const char *note, const char *until, const char *received_at) {
  char rec[1024], id[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(id);
  snprintf(rec, sizeof(rec),
           "{\"schema\":\"kpi.acknowledgement/1\",\"event_id\":\"%s\",\"measure_id\":\"" LEVEL "\","
           "\"department\":\"kikaku\",\"note\":\"%s\",\"until\":\"%s\",\"received_at\":\"%s\"}",
           id, note, until, received_at);
  evw_produce(w, w->t_meas, LEVEL, rec);
  evw_flush(w);
}

/* N alerts of LEVEL decided so far (outbox rows, published or not). */
static void expect_outbox(evw *w, int n) {
  char want[16];
  snprintf(want, sizeof(want), "%d", n);
  evw_assert_sql(w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "'", want);
}

/* docs/corrections.md "Reminders and acknowledgements": an acknowledged lagging measure gets no
 * weekly reminder until `until`, then one at once (numbered after the last one sent); a newer
 * acknowledgement quiets again; a move to failed during its period notifies at once, and the
 * failed state's reminders are not quieted by an acknowledgement written for lagging. Each
 * evaluation date's decision is committed with the attainment row's as_of (run_at waits for
 * it), so counting the outbox after it is no race. */
static void test_ack_quiets_reminders(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evack", NULL);
  /* 2024-06-01: a reading of 30 (p = 0.23 < 0.8 e): lagging, the first alert. */
  run_at(&w, "2024-06-01");
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 30, "person", NULL);
  evw_expect_alert_sent(&w, LEVEL "/lagging/1", NULL);
  produce_ack(&w, "説明会を開催し登録を呼びかけます", "2024-06-20", "2024-06-01T03:00:00.000Z");
  evw_expect_sql(&w, "SELECT status || ' ' || stale || ' ' || until FROM acknowledgements",
                 "lagging false 2024-06-20");
  expect_outbox(&w, 1);

  /* A reminder would be due on 06-08 and 06-15, and 06-20 is still inside the period. */
  run_at(&w, "2024-06-08");
  expect_outbox(&w, 1);
  run_at(&w, "2024-06-15");
  expect_outbox(&w, 1);
  run_at(&w, "2024-06-20");
  expect_outbox(&w, 1);
  evw_assert_sql(&w, "SELECT reminders || ' ' || last_alert_on FROM attainment"
                         " WHERE measure_id = '" LEVEL "'", "0 2024-06-01");

  /* The day after: the reminder is due at once, and carries the acknowledgement. */
  run_at(&w, "2024-06-21");
  char id[KPI_UUID_STRLEN + 1], sql[512];
  evw_expect_alert_sent(&w, LEVEL "/lagging/1/reminder-1", id);
  expect_outbox(&w, 2);
  snprintf(sql, sizeof(sql),
           "SELECT p->'acknowledgement'->>'note' || '|' || (p->'acknowledgement'->>'department')"
           " || '|' || (p->'acknowledgement'->>'department_name') || '|' ||"
           " (p->'acknowledgement'->>'acknowledged_at') || '|' || (p->'acknowledgement'->>'until')"
           " FROM (SELECT payload::json AS p FROM outbox WHERE alert_id = '%s') o", id);
  evw_assert_sql(&w, sql, "説明会を開催し登録を呼びかけます|kikaku|企画課（サンプル）|"
                              "2024-06-01T03:00:00.000Z|2024-06-20");

  /* A newer acknowledgement quiets the next week's reminder again. */
  produce_ack(&w, "追加の広報を行います", "2025-06-01", "2024-06-21T01:00:00.000Z");
  evw_expect_sql(&w, "SELECT count(*) FROM acknowledgements", "2");
  run_at(&w, "2024-06-28");
  expect_outbox(&w, 2);

  /* Past due while acknowledged: failed is worse, notified at once with the note. */
  run_at(&w, "2025-04-01");
  evw_expect_alert_sent(&w, LEVEL "/failed/2", id);
  expect_outbox(&w, 3);
  snprintf(sql, sizeof(sql),
           "SELECT payload::json->'acknowledgement'->>'note' FROM outbox WHERE alert_id = '%s'", id);
  evw_assert_sql(&w, sql, "追加の広報を行います");
  /* The acknowledgement was written for lagging: failed's reminders are not quieted. */
  run_at(&w, "2025-04-08");
  evw_expect_alert_sent(&w, LEVEL "/failed/2/reminder-1", NULL);
  expect_outbox(&w, 4);
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_time_moves),
                                     cmocka_unit_test(test_ack_quiets_reminders)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
