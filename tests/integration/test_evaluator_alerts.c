/* test_evaluator_alerts.c: a measure crossing into lagging yields one alert on the alerts topic
 * (a further lagging reading none, recovery one "resolved" notice); when the evaluator dies
 * between COMMIT and publishing (the KPI_TEST_CRASH_AFTER_COMMIT hook), the next start
 * publishes the alert, once per alert_id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters" /* level 24 -> 50, FY2022 -> FY2024, owner kikaku */

static void test_alerts(void **state) {
  (void)state;
  evw w;
  /* At 2024-06-01 the level measure expects e = 428/731: a reading of 30 (p = 0.23) lags. */
  evw_init(&w, "it_evalert", "2024-06-01");
  const char *plain[] = {"KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000", "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};
  const char *crashing[] = {"KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000", "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500",
                            "KPI_TEST_CRASH_AFTER_COMMIT=1", NULL};
  evw_start(&w, plain);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  char sql[256], lag1[KPI_UUID_STRLEN + 1], res1[KPI_UUID_STRLEN + 1], lag2[KPI_UUID_STRLEN + 1];

  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 30, "person", NULL);
  evw_alert_sent_sql(LEVEL "/lagging/1", sql, sizeof(sql), lag1);
  evw_expect_sql(&w, sql, "t");
  evw_expect_sql(&w, "SELECT status FROM attainment WHERE measure_id = '" LEVEL "'", "lagging");
  /* The record carries the latest reading's Japan date beside as_of, for the mail. */
  snprintf(sql, sizeof(sql),
           "SELECT payload::json->>'last_observed_day' || ' ' || (payload::json->>'as_of') "
           "FROM outbox WHERE alert_id = '%s'", lag1);
  evw_expect_sql(&w, sql, "2024-05-01 2024-06-01");

  /* Still lagging: no second alert (a reminder is due only after 7 days). */
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-02", 31, "person", NULL);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "31");
  evw_expect_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "'", "1");

  /* Back on track: the resolved notice of episode 1. */
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-20", 45, "person", NULL);
  evw_alert_sent_sql(LEVEL "/resolved/1", sql, sizeof(sql), res1);
  evw_expect_sql(&w, sql, "t");

  evw_stop(&w);

  /* Lagging again, and the evaluator dies right after the COMMIT that holds the alert. */
  evw_start(&w, crashing);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-25", 30, "person", NULL);
  long long deadline = kpi_it_now_ms() + 30000;
  int status = 0;
  pid_t r = 0;
  while (kpi_it_now_ms() < deadline && (r = waitpid(w.pid, &status, WNOHANG)) == 0)
    kpi_it_sleep_ms(50);
  if (r != w.pid) {
    evw_dump_log(&w);
    fail_msg("the evaluator did not take the crash hook");
  }
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 3);
  w.pid = 0;
  evw_alert_sent_sql(LEVEL "/lagging/2", sql, sizeof(sql), lag2);
  evw_assert_sql(&w, sql, "f"); /* committed, not published */

  /* The next start publishes it from the outbox. */
  evw_start(&w, plain);
  evw_expect_sql(&w, sql, "t");
  evw_stop(&w);

  /* On the topic: each alert once, with its content. */
  int n = 0;
  evw_msg *msgs = evw_read_topic(w.t_alerts, 3, 3, 2000, 30000, &n);
  int seen_lag1 = 0, seen_res1 = 0, seen_lag2 = 0, level_msgs = 0;
  for (int i = 0; i < n; i++) {
    assert_non_null(msgs[i].value);
    for (int j = 0; j < i; j++) {
      const char *a = strstr(msgs[i].value, "\"alert_id\":\"");
      const char *b = strstr(msgs[j].value, "\"alert_id\":\"");
      if (a && b && strncmp(a, b, 12 + KPI_UUID_STRLEN) == 0)
        fail_msg("alert published twice: %s", msgs[i].value);
    }
    if (!msgs[i].key || strcmp(msgs[i].key, LEVEL) != 0) continue;
    level_msgs++;
    const char *v = msgs[i].value;
    if (strstr(v, lag1)) {
      seen_lag1++;
      assert_non_null(strstr(v, "\"type\":\"alert\""));
      assert_non_null(strstr(v, "\"status\":\"lagging\""));
      assert_non_null(strstr(v, "kikaku@ashibetsu-city.example"));
    } else if (strstr(v, res1)) {
      seen_res1++;
      assert_non_null(strstr(v, "\"type\":\"resolved\""));
      assert_non_null(strstr(v, "\"previous_status\":\"lagging\""));
    } else if (strstr(v, lag2)) {
      seen_lag2++;
      assert_non_null(strstr(v, "\"episode\":2"));
    }
  }
  if (level_msgs != 3 || seen_lag1 != 1 || seen_res1 != 1 || seen_lag2 != 1) {
    for (int i = 0; i < n; i++) fprintf(stderr, "%s: %s\n", msgs[i].key, msgs[i].value);
    fail_msg("want lagging/1, resolved/1, lagging/2 once each; got %d %d %d of %d", seen_lag1,
             seen_res1, seen_lag2, level_msgs);
  }
  evw_msgs_free(msgs, n);
  evw_close(&w);
}

int main(void) {
#ifndef KPI_TEST_HOOKS
  /* The hook this test drives exists only in a build with -DKPI_TEST_HOOKS=ON. */
  fprintf(stderr, "skipped: the evaluator was built without KPI_TEST_HOOKS\n");
  return 77;
#endif
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_alerts)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
