/* test_notifier_dbloss.c: the notifier's PostgreSQL sessions are killed while alerts flow: every mail still arrives exactly once and the service stays up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_notifier_util.h"

#define N_ALERTS 30
#define N_PER_ALERT 2

/* Terminates every session of database DB but the caller's own; returns how many. */
static long kill_sessions(PGconn *c, const char *db) {
  return nf_it_sql_long(c,
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = $1 AND pid <> pg_backend_pid()",
                        db);
}

static void test_sessions_killed_while_alerts_flow(void **state) {
  (void)state;
  static const char *const extra[] = {"KPI_NOTIFY_GROUP_WAIT_MS=300",
                                      "KPI_NOTIFY_RETRY_BASE_MS=200",
                                      "KPI_NOTIFY_RETRY_MAX_MS=1000",
                                      "KPI_NOTIFY_CONSUME_BATCH=5",
                                      "KPI_PG_RETRY_MAX_MS=500",
                                      NULL};
  nf_it t;
  nf_it_prepare(&t, "it_nf_dbloss");
  nf_it_catalog_numbered(&t, N_ALERTS, "it-dbloss-", N_PER_ALERT);
  nf_it_spawn(&t, extra);

  static char emails[N_ALERTS * N_PER_ALERT][128];
  const char *all[N_ALERTS * N_PER_ALERT + 1] = {0};
  for (int e = 0; e < N_ALERTS * N_PER_ALERT; e++) all[e] = emails[e];
  int kills_that_hit = 0;
  long long t0 = kpi_it_now_ms();
  /* Phase 1: alerts trickle in; every third one, the notifier's session is killed, so inserts,
   * claims and outcome updates all meet a dead connection at some point. */
  for (int i = 0; i < N_ALERTS; i++) {
    nf_it_produce_numbered(&t, t.tag, i, "it-dbloss-", "接続断テストの施策", N_PER_ALERT,
                           &emails[i * N_PER_ALERT]);
    if (i % 3 == 0 && kill_sessions(t.pg, t.db) > 0) kills_that_hit++;
    kpi_it_sleep_ms(60);
  }
  /* Phase 2: a storm while the queue drains: the session is killed again as soon as it is
   * back, for about two seconds. */
  for (int i = 0; i < 20; i++) {
    if (kill_sessions(t.pg, t.db) > 0) kills_that_hit++;
    kpi_it_sleep_ms(100);
  }
  assert_true(kills_that_hit >= 5);
  assert_true(nf_it_alive(&t));
  assert_int_equal(kpi_it_wait_http(t.port, "/healthz", 200, 2000), 0);

  /* Everything arrives, once per recipient. */
  int want = N_ALERTS * N_PER_ALERT;
  int got = nf_it_wait_mails(nf_it_maildir, t.tag, want, 40000);
  if (got != want) fail_msg("%d of %d mails arrived (log %s)", got, want, t.log);
  kpi_it_sleep_ms(1500);
  nf_it_assert_once_each(nf_it_maildir, t.tag, all);
  assert_int_equal(nf_it_sql_long(t.pg, "SELECT count(*) FROM notifications WHERE state = 'sent'",
                                  NULL),
                   want);
  assert_int_equal(nf_it_sql_long(t.pg, "SELECT count(*) FROM notifications", NULL), want);
  /* The notifier itself counts each mail once. */
  assert_int_equal((long)nf_it_metric(&t, "kpi_notifier_sent_total"), want);
  assert_int_equal(kpi_it_wait_http(t.port, "/healthz", 200, 2000), 0);
  assert_int_equal(kpi_it_wait_http(t.port, "/readyz", 200, 10000), 0);
  fprintf(stderr, "dbloss: %d kills hit a session; all %d mails in %.1f s\n", kills_that_hit,
          want, (double)(kpi_it_now_ms() - t0) / 1000.0);
  assert_int_equal(nf_it_stop(&t), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sessions_killed_while_alerts_flow),
  };
  return cmocka_run_group_tests(tests, nf_it_setup, NULL);
}
