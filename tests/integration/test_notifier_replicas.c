/* test_notifier_replicas.c: two notifier replicas on one database and consumer group claim rows together: every mail exactly once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_notifier_util.h"

#define N_ALERTS 40
#define N_PER_ALERT 2

static const char *maildir;

static void test_two_replicas_send_each_mail_once(void **state) {
  (void)state;
  /* One SMTP connection each (4 mails in flight) and a fast claim poll: neither replica can
   * take the whole queue at once, so both claim, often at the same moment. */
  static const char *const extra[] = {"KPI_NOTIFY_GROUP_WAIT_MS=0", "KPI_NOTIFY_POLL_MS=50",
                                      "KPI_SMTP_CONNECTIONS=1", "KPI_NOTIFY_CONSUME_BATCH=10",
                                      NULL};
  nf_it a, b;
  nf_it_start(&a, "it_nf_replicas", extra);
  nf_it_start_replica(&b, &a, 2, extra);

  static char emails[N_ALERTS * N_PER_ALERT][128];
  for (int i = 0; i < N_ALERTS; i++) {
    for (int k = 0; k < N_PER_ALERT; k++)
      snprintf(emails[i * N_PER_ALERT + k], sizeof(emails[0]), "r%d.%d.%s@city.example", i, k,
               a.tag);
    const char *rc[] = {emails[i * N_PER_ALERT], emails[i * N_PER_ALERT + 1], NULL};
    char mid[64], mname[64];
    snprintf(mid, sizeof(mid), "it-replicas-%d", i);
    snprintf(mname, sizeof(mname), "複製テストの施策%d", i);
    kpi_alert *al = nf_it_alert(mid, mname, rc);
    /* Alternate producers only to spread the work of producing; the topic is shared. */
    nf_it_produce(i % 2 ? &b : &a, al);
    nf_it_alert_free(al);
  }

  int want = N_ALERTS * N_PER_ALERT;
  int got = nf_it_wait_mails(maildir, a.tag, want, 40000);
  if (got != want) fail_msg("%d of %d mails arrived (logs %s, %s)", got, want, a.log, b.log);
  kpi_it_sleep_ms(1500);
  int n;
  nf_it_mail *mails = nf_it_mails_for(maildir, a.tag, &n);
  for (int e = 0; e < want; e++) {
    int seen = 0;
    for (int i = 0; i < n; i++) {
      char *r = nf_it_rcpt(&mails[i]);
      if (r && strcmp(r, emails[e]) == 0) seen++;
      free(r);
    }
    if (seen != 1) fail_msg("%s received %d mails, expected exactly 1", emails[e], seen);
  }
  assert_int_equal(n, want);
  nf_it_mails_free(mails, n);
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

static int setup(void **state) {
  (void)state;
  kpi_it_init();
  maildir = getenv("KPI_MAILDIR");
  if (!maildir) {
    fprintf(stderr, "KPI_MAILDIR not set by the stack\n");
    return -1;
  }
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_replicas_send_each_mail_once),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
