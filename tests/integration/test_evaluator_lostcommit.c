/* test_evaluator_lostcommit.c: a COMMIT whose answer never arrives (the connection died after
 * the server committed) is redone; the redo finds the alert already decided and its outbox row
 * already stored, so nothing but a rescan of the outbox can publish it. The KPI_TEST_LOSE_COMMITS
 * hook makes the evaluator treat its first successful COMMITs that carried alerts as lost; every
 * committed alert must still reach the alerts topic, once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters" /* level 24 -> 50, FY2022 -> FY2024, owner kikaku */

static void test_lost_commit(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evlost", "2024-06-01");
  /* The first sweep raises stale alerts (measures never reported); the batch below a lagging
   * one. Both COMMITs are reported as lost. */
  const char *extra[] = {"KPI_TEST_LOSE_COMMITS=2", "KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000",
                         "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_expect_sql(&w, "SELECT count(*) > 0 FROM attainment", "t");

  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 30, "person", NULL);

  char lag[KPI_UUID_STRLEN + 1];
  evw_expect_alert_sent(&w, LEVEL "/lagging/1", lag);
  evw_expect_sql(&w, "SELECT count(*) FROM outbox WHERE sent_at IS NULL", "0");
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "test $(grep -c test_lose_commit %s) -eq 2", w.log);
  if (system(cmd) != 0) {
    evw_dump_log(&w);
    fail_msg("the hook did not lose two commits");
  }
  char *total = evw_sql(&w, "SELECT count(*) FROM outbox");
  int n_outbox = atoi(total);
  free(total);

  evw_stop(&w);

  /* Every outbox row on the topic exactly once. */
  int n = 0;
  evw_msg *msgs = evw_read_topic(w.t_alerts, 3, n_outbox, 2000, 30000, &n);
  for (int i = 0; i < n; i++) {
    const char *a = strstr(msgs[i].value, "\"alert_id\":\"");
    assert_non_null(a);
    for (int j = 0; j < i; j++)
      if (strncmp(a, strstr(msgs[j].value, "\"alert_id\":\""), 12 + KPI_UUID_STRLEN) == 0)
        fail_msg("alert published twice: %s", msgs[i].value);
  }
  if (n != n_outbox) fail_msg("%d alerts on the topic, %d in the outbox", n, n_outbox);
  int seen = 0;
  for (int i = 0; i < n; i++)
    if (strstr(msgs[i].value, lag)) seen++;
  assert_int_equal(seen, 1);
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
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_lost_commit)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
