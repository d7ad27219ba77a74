/* test_notifier_replicas.c: two notifier replicas on one database and consumer group claim rows together: every mail exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_notifier_util.h"

#define N_ALERTS 40
#define N_PER_ALERT 2

static void test_two_replicas_send_each_mail_once(void **state) {
  (void)state;
  /* One SMTP connection each (4 mails in flight) and a fast claim poll: neither replica can
   * take the whole queue at once, so both claim, often at the same moment. */
  static const char *const extra[] = {"KPI_NOTIFY_GROUP_WAIT_MS=0", "KPI_NOTIFY_POLL_MS=50",
                                      "KPI_SMTP_CONNECTIONS=1", "KPI_NOTIFY_CONSUME_BATCH=10",
                                      NULL};
  nf_it a, b;
  nf_it_prepare(&a, "it_nf_replicas");
  nf_it_catalog_numbered(&a, N_ALERTS, "it-replicas-", N_PER_ALERT);
  nf_it_spawn(&a, extra);
  nf_it_start_replica(&b, &a, 2, extra);

  static char emails[N_ALERTS * N_PER_ALERT][128];
  const char *all[N_ALERTS * N_PER_ALERT + 1] = {0};
  for (int e = 0; e < N_ALERTS * N_PER_ALERT; e++) all[e] = emails[e];
  for (int i = 0; i < N_ALERTS; i++) {
    /* Alternate producers only to spread the work of producing; the topic is shared. */
    nf_it_produce_numbered(i % 2 ? &b : &a, a.tag, i, "it-replicas-", "複製テストの施策",
                           N_PER_ALERT, &emails[i * N_PER_ALERT]);
  }

  int want = N_ALERTS * N_PER_ALERT;
  int got = nf_it_wait_mails(nf_it_maildir, a.tag, want, 40000);
  if (got != want) fail_msg("%d of %d mails arrived (logs %s, %s)", got, want, a.log, b.log);
  kpi_it_sleep_ms(1500);
  nf_it_assert_once_each(nf_it_maildir, a.tag, all);
  assert_int_equal(nf_it_sql_long(a.pg, "SELECT count(*) FROM notifications WHERE state = 'sent'",
                                  NULL),
                   want);
  /* Between them the replicas sent each mail once, and both took part. */
  double sa = nf_it_metric(&a, "kpi_notifier_sent_total");
  double sb = nf_it_metric(&b, "kpi_notifier_sent_total");
  fprintf(stderr, "replicas: %.0f + %.0f mails\n", sa, sb);
  assert_int_equal((long)(sa + sb), want);
  assert_true(sa > 0 && sb > 0);
  assert_int_equal(nf_it_stop(&b), 0);
  assert_int_equal(nf_it_stop(&a), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_replicas_send_each_mail_once),
  };
  return cmocka_run_group_tests(tests, nf_it_setup, NULL);
}
