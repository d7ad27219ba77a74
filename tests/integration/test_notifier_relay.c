/* test_notifier_relay.c: issue 13 on the real stack: a relay outage of any length costs no mail and no attempt, and everything queued goes out within a minute of the relay's return; replies about a mail still count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_notifier_util.h"

/* One test's own relay (aiosmtpd, or smtp_quirk_server.py in a mode) and notifier; global so
 * that the teardown stops them whatever failed. */
static struct {
  int port;
  char dir[256]; /* the relay's Maildir */
  char log[256];
  pid_t pid;
  nf_it nf;
} fx;

static bool port_open(int port) {
  int fd = kpi_it_connect(port, 0);
  if (fd >= 0) close(fd);
  return fd >= 0;
}

/* Names the relay (port, Maildir, log) without starting it: the notifier may start first. */
static void relay_prepare(const char *name) {
  char unique[64];
  kpi_it_unique(name, unique, sizeof(unique));
  fx.port = kpi_it_free_port();
  snprintf(fx.dir, sizeof(fx.dir), "%s/%s_maildir", KPI_BINARY_DIR, unique);
  snprintf(fx.log, sizeof(fx.log), "%s/%s_smtpd.log", KPI_BINARY_DIR, unique);
}

/* Starts the relay: a plain aiosmtpd Mailbox (MODE NULL) or smtp_quirk_server.py in MODE. */
static void relay_start(const char *mode) {
  char listen[64], port[16], script[512];
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", fx.port);
  snprintf(port, sizeof(port), "%d", fx.port);
  snprintf(script, sizeof(script), "%s/tests/integration/smtp_quirk_server.py", KPI_SOURCE_DIR);
  const char *plain[] = {"/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", listen, "-c",
                         "aiosmtpd.handlers.Mailbox", fx.dir, NULL};
  const char *quirk[] = {"/usr/bin/python3", script, "--mode", mode, "--port", port,
                         "--maildir", fx.dir, "--lifetime", "400", NULL};
  fx.pid = kpi_it_spawn_argv(mode ? quirk : plain, NULL, fx.log, NULL);
  long long deadline = kpi_it_now_ms() + 20000;
  while (!port_open(fx.port)) {
    if (kpi_it_now_ms() > deadline) fail_msg("the relay did not start (log %s)", fx.log);
    kpi_it_sleep_ms(20);
  }
}

/* Kills the relay outright, as a crash or a pulled cable would. */
static void relay_kill(void) {
  if (fx.pid > 0) kpi_it_stop(fx.pid, SIGKILL, 10000);
  fx.pid = 0;
}

static int test_setup(void **state) {
  (void)state;
  memset(&fx, 0, sizeof(fx));
  return 0;
}

static int test_teardown(void **state) {
  (void)state;
  if (fx.nf.pid > 0) nf_it_stop(&fx.nf);
  relay_kill();
  return 0;
}

/* Waits until the notifier's metric NAME reads WANT; fails with the log otherwise. */
static void wait_metric(const nf_it *t, const char *name, double want, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  double v;
  while ((v = nf_it_metric(t, name)) != want) {
    if (kpi_it_now_ms() > deadline) fail_msg("%s is %g, expected %g (log %s)", name, v, want, t->log);
    kpi_it_sleep_ms(50);
  }
}

static long q(const nf_it *t, const char *sql) { return nf_it_sql_long(t->pg, sql, NULL); }

/* Waits until every one of the N addresses EMAILS has at least one mail in the relay's
 * Maildir; returns the time it happened (kpi_it_now_ms), or fails after TIMEOUT_MS naming how
 * many are still missing. */
static long long wait_every_owner(const char *tag, char (*emails)[128], int n, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  for (;;) {
    int got;
    nf_it_mail *mails = nf_it_mails_for(fx.dir, tag, &got);
    int missing = 0;
    for (int i = 0; i < n; i++)
      if (nf_it_count_rcpt(mails, got, emails[i]) == 0) missing++;
    nf_it_mails_free(mails, got);
    long long now = kpi_it_now_ms();
    if (missing == 0) return now;
    if (now > deadline) fail_msg("%d of %d owners still have no mail (log %s)", missing, n, fx.nf.log);
    kpi_it_sleep_ms(100);
  }
}

/* Kills the notifier with SIGKILL and starts it again on the same database, topics, group and
 * catalog, logging to a file of its own (suffix _runN). */
static void notifier_crash_restart(nf_it *t, int run, const char *const *extra) {
  kpi_it_stop(t->pid, SIGKILL, 10000);
  t->pid = 0;
  PQfinish(t->pg);
  t->pg = NULL;
  rd_kafka_destroy(t->producer);
  t->producer = NULL;
  char *suffix = strstr(t->log, ".log");
  if (suffix) snprintf(suffix, sizeof(t->log) - (size_t)(suffix - t->log), "_run%d.log", run);
  nf_it_spawn(t, extra);
}

/* (1) The relay is down for far longer than the whole per-mail retry budget (3 attempts,
 * 100-200 ms apart, so under a second): no mail goes dead, no attempt is counted, claims
 * stop (the deferred counter stays still), the queue metrics show what waits, the relay's
 * down and up are logged once each, and every mail is delivered within 60 s of the relay's
 * return. Probing uses the defaults (1 s doubling to 30 s), as a new user would have them.
 * A row older than the queue lifetime goes dead meanwhile, with that reason. */
static void test_outage_longer_than_retry_budget(void **state) {
  (void)state;
  relay_prepare("it_nf_relay_out");
  char url[96];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.port);
  const char *extra[] = {url,
                         "KPI_NOTIFY_GROUP_WAIT_MS=0",
                         "KPI_NOTIFY_RETRY_BASE_MS=100",
                         "KPI_NOTIFY_RETRY_MAX_MS=200",
                         "KPI_NOTIFY_MAX_ATTEMPTS=3",
                         "KPI_SMTP_CONNECT_TIMEOUT_MS=1000",
                         NULL};
  nf_it *t = &fx.nf;
  enum { N = 20 };
  nf_it_prepare(t, "it_nf_relay_out");
  nf_it_catalog_numbered(t, N, "it-out-", 1);
  nf_it_spawn(t, extra);
  char emails[N][128];
  for (int i = 0; i < N; i++) {
    char one[8][128];
    nf_it_produce_numbered(t, t->tag, i, "it-out-", "停止中の施策", 1, one);
    memcpy(emails[i], one[0], sizeof(emails[i]));
  }
  /* The first claim meets the dead relay: the relay goes down, the rows wait untouched. */
  wait_metric(t, "kpi_notifier_relay_up", 0, 20000);
  long waiting = kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                            "'pending' AND attempts = 0",
                                     NULL, N, 20000);
  assert_int_equal(waiting, N);
  kpi_it_sleep_ms(1000); /* mails already in the SMTP client fail too, then nothing more */
  double deferred_early = nf_it_metric(t, "kpi_notifier_relay_deferred_total");
  assert_true(deferred_early >= 1);

  /* A row queued longer than the lifetime (5 days by default) goes dead, relay or not. */
  static const char *const old_owner_fmt = "old.%s@city.example";
  char old_owner[128];
  snprintf(old_owner, sizeof(old_owner), old_owner_fmt, t->tag);
  const char *old_rc[] = {old_owner, NULL};
  nf_it_produce_alert(t, "it-out-old", "古い施策", old_rc);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE "
                                              "measure_id = 'it-out-old'", NULL, 1, 20000), 1);
  PQclear(PQexec(t->pg, "UPDATE notifications SET created_at = now() - interval '6 days' "
                        "WHERE measure_id = 'it-out-old'"));
  long expired = kpi_it_wait_pg_long(
      t->pg, "SELECT count(*) FROM notifications WHERE measure_id = 'it-out-old' AND state = "
             "'dead' AND last_error LIKE 'queue lifetime exceeded (KPI_NOTIFY_MAX_AGE 5d)%'",
      NULL, 1, 20000);
  assert_int_equal(expired, 1);

  /* Twenty seconds of outage: forty times the old retry budget. */
  kpi_it_sleep_ms(20000);
  assert_true(nf_it_alive(t));
  assert_int_equal(q(t, "SELECT count(*) FROM notifications WHERE state = 'dead' AND "
                        "measure_id <> 'it-out-old'"), 0);
  assert_int_equal(q(t, "SELECT count(*) FROM notifications WHERE attempts > 0"), 0);
  /* The mails that met the dead relay keep its reason; the rest were never claimed. */
  assert_true(q(t, "SELECT count(*) FROM notifications WHERE state = 'pending' AND "
                   "last_error LIKE 'relay: %'") >= 1);
  /* Nothing was claimed during the outage: only the mails of the first claims were deferred. */
  assert_true(nf_it_metric(t, "kpi_notifier_relay_deferred_total") == deferred_early);
  assert_true(nf_it_metric(t, "kpi_notifier_relay_probes_total") >= 3);
  assert_true(nf_it_metric(t, "kpi_notifier_queue_depth") == N);
  assert_true(nf_it_metric(t, "kpi_notifier_queue_oldest_seconds") >= 15);
  assert_true(nf_it_metric(t, "kpi_notifier_expired_total") == 1);

  /* The relay returns: everything queued is delivered within a minute. */
  long long back = kpi_it_now_ms();
  relay_start(NULL);
  long long last = wait_every_owner(t->tag, emails, N, 90000);
  fprintf(stderr, "relay outage: relay back -> last of %d mails delivered in %lld ms\n", N,
          last - back);
  assert_true(last - back <= 60000);
  const char *once[N + 1];
  for (int i = 0; i < N; i++) once[i] = emails[i];
  once[N] = NULL;
  kpi_it_sleep_ms(1000);
  nf_it_assert_once_each(fx.dir, t->tag, once);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                              "'sent' AND attempts = 1", NULL, N, 10000), N);
  assert_int_equal(q(t, "SELECT count(*) FROM notifications WHERE state = 'pending'"), 0);
  wait_metric(t, "kpi_notifier_relay_up", 1, 5000);
  /* Transitions are logged once each, not once per mail. */
  assert_int_equal(nf_it_file_count(t->log, "\"relay_down\""), 1);
  assert_int_equal(nf_it_file_count(t->log, "\"relay_up\""), 1);
  assert_int_equal(nf_it_file_count(t->log, "mail_failed"), 0);
  assert_int_equal(nf_it_stop(t), 0);
}

/* (2) 200 owners with their first alerts; the relay is killed before the first send; the
 * notifier is killed with SIGKILL during the outage and again while sending. Every owner gets
 * its mail; a second copy only for mails in flight at the second crash (the documented window:
 * at most the send capacity, and with the same Message-ID); nothing dead, the queue empty. */
static void test_200_owners_relay_and_notifier_crashes(void **state) {
  (void)state;
  relay_prepare("it_nf_relay_200");
  char url[96];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.port);
  /* Capacity 2 x 4 = 8 mails in flight; a short lease so that rows leased by the killed
   * notifier come back within the test (5 x the transaction timeout, as main.c asks). */
  const char *extra[] = {url,
                         "KPI_NOTIFY_GROUP_WAIT_MS=1000",
                         "KPI_NOTIFY_MAX_ATTEMPTS=3",
                         "KPI_SMTP_CONNECTIONS=2",
                         "KPI_SMTP_CONNECT_TIMEOUT_MS=1000",
                         "KPI_SMTP_TIMEOUT_MS=2000",
                         "KPI_NOTIFY_LEASE_MS=10100",
                         "KPI_SMTP_PROBE_MAX_MS=5000",
                         NULL};
  nf_it *t = &fx.nf;
  enum { N = 200, CAPACITY = 8 };
  nf_it_prepare(t, "it_nf_relay_200");
  nf_it_catalog_numbered(t, N, "it-owner-", 1);
  relay_start(NULL);
  relay_kill(); /* killed before the first send */
  nf_it_spawn(t, extra);
  static char emails[N][128];
  for (int i = 0; i < N; i++) {
    char one[8][128];
    nf_it_produce_numbered(t, t->tag, i, "it-owner-", "初めての通知", 1, one);
    memcpy(emails[i], one[0], sizeof(emails[i]));
  }
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications", NULL, N,
                                       30000), N);
  wait_metric(t, "kpi_notifier_relay_up", 0, 20000);

  /* Crash during the outage, and come back into it. */
  notifier_crash_restart(t, 2, extra);
  wait_metric(t, "kpi_notifier_relay_up", 0, 20000);
  kpi_it_sleep_ms(3000);
  assert_int_equal(q(t, "SELECT count(*) FROM notifications WHERE state = 'pending' AND "
                        "attempts = 0"), N);

  /* The relay returns; crash again in the middle of sending. */
  long long back = kpi_it_now_ms();
  relay_start(NULL);
  long long deadline = back + 60000;
  int seen = 0;
  while (seen < 20 && kpi_it_now_ms() < deadline) {
    nf_it_mail *v = nf_it_mails_for(fx.dir, t->tag, &seen);
    nf_it_mails_free(v, seen);
    if (seen < 20) kpi_it_sleep_ms(20);
  }
  assert_true(seen >= 20);
  notifier_crash_restart(t, 3, extra);
  long sent_at_crash = seen;
  fprintf(stderr, "200 owners: killed while sending, %ld mails delivered by then\n", sent_at_crash);

  long long last = wait_every_owner(t->tag, emails, N, 120000);
  fprintf(stderr, "200 owners: relay back -> last mail delivered in %lld ms (lease 10.1 s)\n",
          last - back);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                              "'sent'", NULL, N, 30000), N);
  assert_int_equal(q(t, "SELECT count(*) FROM notifications WHERE state <> 'sent'"), 0);
  assert_int_equal(q(t, "SELECT count(*) FROM notifications WHERE attempts > 1"), 0);

  /* Duplicates only inside the crash window, each a copy of the same mail (Message-ID). */
  kpi_it_sleep_ms(1000);
  int n;
  nf_it_mail *mails = nf_it_mails_for(fx.dir, t->tag, &n);
  int dups = 0;
  for (int i = 0; i < N; i++) {
    int c = nf_it_count_rcpt(mails, n, emails[i]);
    if (c > 1) {
      dups += c - 1;
      char *first = NULL;
      for (int k = 0; k < n; k++) {
        char *r = nf_it_rcpt(&mails[k]);
        if (r && strcmp(r, emails[i]) == 0) {
          char *id = nf_it_header(&mails[k], "Message-ID");
          if (!first) first = id;
          else {
            assert_string_equal(id, first);
            free(id);
          }
        }
        free(r);
      }
      free(first);
    }
  }
  fprintf(stderr, "200 owners: %d mails, %d duplicates (crash window <= %d)\n", n, dups, CAPACITY);
  assert_true(dups <= CAPACITY);
  assert_int_equal(n, N + dups);
  nf_it_mails_free(mails, n);
  assert_int_equal(nf_it_stop(t), 0);
}

/* (3) A 5xx reply to the mail still kills it at once, with its reason, and says nothing about
 * the relay: it stays up. */
static void test_5xx_still_dead_at_once(void **state) {
  (void)state;
  relay_prepare("it_nf_relay_5xx");
  relay_start("reject-rcpt");
  char url[96];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.port);
  const char *extra[] = {url, "KPI_NOTIFY_GROUP_WAIT_MS=0", "KPI_NOTIFY_MAX_ATTEMPTS=5", NULL};
  nf_it *t = &fx.nf;
  nf_it_start(t, "it_nf_relay_5xx", extra);
  char owner[128];
  nf_it_alert_owner(t, "refused", "it-5xx", "拒否される施策", owner, sizeof(owner));
  long dead = kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                         "'dead' AND attempts = 1 AND last_error LIKE '%550 5.1.1%'",
                                  NULL, 1, 20000);
  if (dead != 1) fail_msg("the refused mail should be dead after one attempt (log %s)", t->log);
  assert_true(nf_it_metric(t, "kpi_notifier_relay_up") == 1);
  assert_int_equal(nf_it_file_count(t->log, "\"relay_down\""), 0);
  assert_int_equal(nf_it_stop(t), 0);
}

/* (4) A 4xx reply to the mail is what the relay said about it: it counts, and the row goes
 * dead when the attempts are used up, with the reason on the dead-letter topic. The relay
 * stays up throughout. */
static void test_4xx_counts_attempts(void **state) {
  (void)state;
  relay_prepare("it_nf_relay_4xx");
  relay_start("tempfail-rcpt");
  char url[96];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.port);
  const char *extra[] = {url,
                         "KPI_NOTIFY_GROUP_WAIT_MS=0",
                         "KPI_NOTIFY_RETRY_BASE_MS=100",
                         "KPI_NOTIFY_RETRY_MAX_MS=200",
                         "KPI_NOTIFY_MAX_ATTEMPTS=3",
                         NULL};
  nf_it *t = &fx.nf;
  nf_it_start(t, "it_nf_relay_4xx", extra);
  char owner[128];
  nf_it_alert_owner(t, "later", "it-4xx", "一時エラーの施策", owner, sizeof(owner));
  long dead = kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                         "'dead' AND attempts = 3 AND last_error LIKE '%451 4.3.0%'",
                                  NULL, 1, 20000);
  if (dead != 1) fail_msg("the tempfailed mail should be dead after 3 attempts (log %s)", t->log);
  assert_int_equal(nf_it_file_count(fx.log, "TEMPFAIL rcpt"), 3);
  assert_true(nf_it_metric(t, "kpi_notifier_relay_up") == 1);
  assert_int_equal(nf_it_file_count(t->log, "\"relay_down\""), 0);
  assert_int_equal(nf_it_stop(t), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_outage_longer_than_retry_budget, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_200_owners_relay_and_notifier_crashes, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_5xx_still_dead_at_once, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_4xx_counts_attempts, test_setup, test_teardown),
  };
  kpi_it_init();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
