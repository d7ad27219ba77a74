/* test_notifier_tls_auth.c: the notifier against a real SMTP server that requires STARTTLS
 * and AUTH (aiosmtpd, tests/integration/smtp_tls_auth_server.py, with a self-signed
 * certificate made for this run): the right CA and credentials deliver every mail once over
 * an authenticated TLS session; a wrong password or an untrusted certificate delivers nothing
 * while the rows wait for retries and the service stays healthy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <errno.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_notifier_util.h"

#define FIXTURE_USER "kpi-notifier"
#define FIXTURE_PASSWORD "correct horse battery staple"
#define WRONG_PASSWORD "wrong-password-4711"

/* The certificate for 127.0.0.1/localhost, made once for the whole group. */
static struct {
  char dir[256];
  char cert[320];
  char key[320];
  char log[320];
} certs;

/* One test's SMTP server and notifiers; global so that the teardown and an atexit handler
 * (nf_it_spawn exits the program when a notifier does not come up) can stop them. */
typedef struct {
  int port;
  char dir[256]; /* Maildir */
  char log[256];
  pid_t pid;
} tls_server;

static struct {
  tls_server srv;
  nf_it nf[2];
} fx;

/* Process helpers ------------------------------------------------------------------------- */

static void kill_leftovers(void) {
  for (int i = 0; i < 2; i++)
    if (fx.nf[i].pid > 0) {
      kpi_it_stop(fx.nf[i].pid, SIGKILL, 5000);
      fx.nf[i].pid = 0;
    }
  if (fx.srv.pid > 0) kpi_it_stop(fx.srv.pid, SIGKILL, 5000);
  fx.srv.pid = 0;
}

/* Stops notifier I with SIGTERM; returns its exit code (0 expected) or -1. */
static int nf_stop(int i) {
  if (fx.nf[i].pid <= 0) return -1;
  int rc = nf_it_stop(&fx.nf[i]);
  fx.nf[i].pid = 0;
  return rc;
}

static void server_stop(void) {
  if (fx.srv.pid > 0) kpi_it_stop(fx.srv.pid, SIGTERM, 5000);
  fx.srv.pid = 0;
}

/* How often NEEDLE occurs in the file PATH (0 when it cannot be read). */
static int file_count(const char *path, const char *needle) {
  char *text = kpi_it_read_file(path, NULL);
  int n = 0;
  for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
  free(text);
  return n;
}

/* Starts the fixture server on a free port with its own Maildir, accepting only
 * FIXTURE_USER/FIXTURE_PASSWORD, and waits for its READY line. */
static void server_start(const char *name) {
  tls_server *s = &fx.srv;
  s->port = kpi_it_free_port();
  snprintf(s->dir, sizeof(s->dir), "%s/%s_maildir", KPI_BINARY_DIR, name);
  snprintf(s->log, sizeof(s->log), "%s/%s_smtpd.log", KPI_BINARY_DIR, name);
  char script[512], port[16];
  snprintf(script, sizeof(script), "%s/tests/integration/smtp_tls_auth_server.py",
           KPI_SOURCE_DIR);
  snprintf(port, sizeof(port), "%d", s->port);
  const char *argv[] = {"/usr/bin/python3", script,     "--port", port,      "--maildir",
                        s->dir,             "--cert",   certs.cert, "--key", certs.key,
                        "--lifetime",       "120",      NULL};
  const char *env[] = {"SMTP_FIXTURE_USER=" FIXTURE_USER,
                       "SMTP_FIXTURE_PASSWORD=" FIXTURE_PASSWORD, NULL};
  s->pid = kpi_it_spawn_argv(argv, env, s->log, NULL);
  long long deadline = kpi_it_now_ms() + 15000;
  while (file_count(s->log, "READY port=") == 0) {
    if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
      s->pid = 0;
      fail_msg("the TLS/AUTH SMTP fixture exited at start (log %s)", s->log);
    }
    if (kpi_it_now_ms() > deadline) fail_msg("the TLS/AUTH SMTP fixture did not start (log %s)", s->log);
    kpi_it_sleep_ms(50);
  }
}

/* The notifier's settings for the fixture server: TLS required, quick retries, short
 * timeouts. TLS_EXTRA (NULL-terminated) adds CA file, verification and credentials. */
static void nf_env(char (*buf)[384], const char **extra, const char *const *tls_extra) {
  int n = 0;
  snprintf(buf[n], sizeof(buf[0]), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.srv.port);
  extra[n] = buf[n];
  n++;
  static const char *const fixed[] = {"KPI_SMTP_TLS=require",
                                      "KPI_NOTIFY_GROUP_WAIT_MS=0",
                                      "KPI_NOTIFY_RETRY_BASE_MS=200",
                                      "KPI_NOTIFY_RETRY_MAX_MS=1000",
                                      "KPI_NOTIFY_MAX_ATTEMPTS=1000",
                                      "KPI_SMTP_CONNECT_TIMEOUT_MS=3000",
                                      "KPI_SMTP_TIMEOUT_MS=10000",
                                      "KPI_NOTIFY_LEASE_MS=60000",
                                      "KPI_NOTIFY_DRAIN_TIMEOUT_MS=3000",
                                      NULL};
  for (const char *const *f = fixed; *f; f++) extra[n++] = *f;
  for (const char *const *f = tls_extra; f && *f; f++) {
    snprintf(buf[n], sizeof(buf[0]), "%s", *f);
    extra[n] = buf[n];
    n++;
  }
  extra[n] = NULL;
}

/* Fixtures -------------------------------------------------------------------------------- */

static int group_setup(void **state) {
  (void)state;
  kpi_it_init();
  atexit(kill_leftovers);
  const char *tmp = getenv("TMPDIR");
  snprintf(certs.dir, sizeof(certs.dir), "%s/kpi_it_tls_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(certs.dir)) {
    fprintf(stderr, "mkdtemp %s: %s\n", certs.dir, strerror(errno));
    return -1;
  }
  snprintf(certs.cert, sizeof(certs.cert), "%s/cert.pem", certs.dir);
  snprintf(certs.key, sizeof(certs.key), "%s/key.pem", certs.dir);
  snprintf(certs.log, sizeof(certs.log), "%s/openssl.log", certs.dir);
  const char *argv[] = {"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                        "-days", "1", "-keyout", certs.key, "-out", certs.cert, NULL};
  pid_t pid = kpi_it_spawn_argv(argv, NULL, certs.log, NULL);
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      access(certs.cert, R_OK) != 0 || access(certs.key, R_OK) != 0) {
    fprintf(stderr, "openssl could not make the test certificate (log %s)\n", certs.log);
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  unlink(certs.cert);
  unlink(certs.key);
  unlink(certs.log);
  rmdir(certs.dir);
  return 0;
}

static int test_setup(void **state) {
  (void)state;
  memset(&fx, 0, sizeof(fx));
  return 0;
}

/* Runs after every test, passed or failed: nothing it started outlives it. */
static int test_teardown(void **state) {
  (void)state;
  for (int i = 0; i < 2; i++)
    if (fx.nf[i].pid > 0) nf_stop(i);
  server_stop();
  kill_leftovers();
  return 0;
}

/* Assertions ------------------------------------------------------------------------------ */

/* The notifier is up and answers /healthz and /readyz with 200. */
static void assert_healthy(int i) {
  assert_true(nf_it_alive(&fx.nf[i]));
  assert_int_equal(kpi_it_wait_http(fx.nf[i].port, "/healthz", 200, 2000), 0);
  assert_int_equal(kpi_it_wait_http(fx.nf[i].port, "/readyz", 200, 2000), 0);
}

/* The notifier's log does not contain the password. */
static void assert_password_not_logged(int i, const char *password) {
  int n = file_count(fx.nf[i].log, password);
  if (n != 0) fail_msg("the SMTP password appears %d times in %s", n, fx.nf[i].log);
}

/* Tests ----------------------------------------------------------------------------------- */

/* (1) STARTTLS required, the CA file given, the right credentials: every recipient gets its
 * mail exactly once, and the server saw each one over TLS from the authenticated user. */
/* Waits until exactly WANT rows of T's queue are pending with no attempt counted (a session
 * set-up failure is the relay's state, not the mail's fault: issue 13) and a last_error
 * matching the SQL condition ERROR_COND ("TRUE" for any), and the relay is reported down;
 * fails with the whole queue and the notifier's log otherwise. */
static void expect_retried_rows(nf_it *t, const char *error_cond, long want) {
  char sql[512];
  snprintf(sql, sizeof(sql),
           "SELECT count(*) FROM notifications WHERE state = 'pending' AND attempts = 0 AND %s",
           error_cond);
  long got = kpi_it_wait_pg_long(t->pg, sql, NULL, want, 20000);
  if (got != want) {
    char *e = kpi_it_pg_value(t->pg, "SELECT string_agg(state || ' ' || attempts || ' ' || "
                                     "coalesce(last_error, '-'), ' | ') FROM notifications");
    fail_msg("%ld waiting rows expected, got %ld: %s (notifier log %s)", want, got, e ? e : "?",
             t->log);
  }
  long long deadline = kpi_it_now_ms() + 10000;
  while (nf_it_metric(t, "kpi_notifier_relay_up") != 0 && kpi_it_now_ms() < deadline)
    kpi_it_sleep_ms(50);
  assert_true(nf_it_metric(t, "kpi_notifier_relay_up") == 0);
}

static void test_tls_auth_delivers_once(void **state) {
  (void)state;
  char name[64];
  kpi_it_unique("it_nf_tls_ok", name, sizeof(name));
  server_start(name);
  char ca[400];
  snprintf(ca, sizeof(ca), "KPI_SMTP_CA_FILE=%s", certs.cert);
  const char *tls_extra[] = {ca, "KPI_SMTP_TLS_VERIFY=1", "KPI_SMTP_USER=" FIXTURE_USER,
                             "KPI_SMTP_PASSWORD=" FIXTURE_PASSWORD, NULL};
  char buf[24][384];
  const char *extra[24];
  nf_env(buf, extra, tls_extra);
  nf_it *t = &fx.nf[0];
  nf_it_start(t, "it_nf_tls_ok", extra);

  char emails_buf[4][128];
  const char *emails[5] = {0};
  for (int i = 0; i < 4; i++) {
    snprintf(emails_buf[i], sizeof(emails_buf[i]), "tls%d.%s@city.example", i, t->tag);
    emails[i] = emails_buf[i];
  }
  /* One alert for three recipients: three mails, up to three connections at once. */
  const char *first[] = {emails[0], emails[1], emails[2], NULL};
  nf_it_produce_alert(t, "it-tls-1", "暗号化送信の施策", first);
  if (nf_it_wait_mails(fx.srv.dir, t->tag, 3, 20000) != 3)
    fail_msg("3 mails expected in %s (server log %s, notifier log %s)", fx.srv.dir, fx.srv.log,
             t->log);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                              "'sent' AND smtp_reply LIKE '250%'",
                                       NULL, 3, 10000),
                   3);
  /* A second alert once those went out: sent over a cached, already authenticated TLS
   * connection (or a new one): it must arrive the same way. */
  const char *second[] = {emails[3], NULL};
  nf_it_produce_alert(t, "it-tls-2", "暗号化送信の施策2", second);
  assert_int_equal(nf_it_wait_mails(fx.srv.dir, t->tag, 4, 20000), 4);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                              "'sent'",
                                       NULL, 4, 10000),
                   4);
  kpi_it_sleep_ms(1000); /* a duplicate would show up now */
  nf_it_assert_once_each(fx.srv.dir, t->tag, emails);

  /* Each stored mail records the session it came in: TLS and the one user. */
  int n;
  nf_it_mail *mails = nf_it_mails_for(fx.srv.dir, t->tag, &n);
  assert_int_equal(n, 4);
  for (int i = 0; i < n; i++) {
    char *tls = nf_it_header(&mails[i], "X-Fixture-TLS");
    assert_non_null(tls);
    if (strncmp(tls, "TLSv1.", 6) != 0) fail_msg("mail %d not over TLS: X-Fixture-TLS: %s", i, tls);
    free(tls);
    nf_it_assert_header(&mails[i], "X-Fixture-Auth", FIXTURE_USER);
    nf_it_assert_header(&mails[i], "X-MailFrom", "kpi-it@notifier.test");
  }
  nf_it_mails_free(mails, n);

  /* The server's own account: four deliveries, all over TLS by the user, no refused AUTH. */
  assert_int_equal(file_count(fx.srv.log, "DELIVERED "), 4);
  assert_int_equal(file_count(fx.srv.log, "auth=" FIXTURE_USER "\n"), 4);
  assert_int_equal(file_count(fx.srv.log, "tls=none"), 0);
  assert_int_equal(file_count(fx.srv.log, "AUTH fail"), 0);
  int handshakes = file_count(fx.srv.log, "TLS peer=");
  int logins = file_count(fx.srv.log, "AUTH ok user=" FIXTURE_USER " mechanism=");
  fprintf(stderr, "tls+auth: 4 mails over %d TLS sessions, %d logins (server log %s)\n",
          handshakes, logins, fx.srv.log);
  assert_true(handshakes >= 1 && handshakes <= 4);
  assert_int_equal(logins, handshakes); /* one AUTH per TLS session, none before TLS */

  assert_healthy(0);
  assert_int_equal(nf_stop(0), 0);
  assert_password_not_logged(0, FIXTURE_PASSWORD);
}

/* (2) A wrong password: the server answers 535, nothing is delivered, the rows stay pending
 * with no attempt counted while the relay is probed (AUTH failures are relay failures,
 * docs/notifier.md "Relay state"), the service stays
 * healthy; a notifier with the right password later delivers them, once. */
static void test_wrong_password_waits_then_delivers(void **state) {
  (void)state;
  char name[64];
  kpi_it_unique("it_nf_tls_badpw", name, sizeof(name));
  server_start(name);
  char ca[400];
  snprintf(ca, sizeof(ca), "KPI_SMTP_CA_FILE=%s", certs.cert);
  const char *tls_bad[] = {ca, "KPI_SMTP_USER=" FIXTURE_USER, "KPI_SMTP_PASSWORD=" WRONG_PASSWORD,
                           NULL};
  char buf[24][384];
  const char *extra[24];
  nf_env(buf, extra, tls_bad);
  nf_it *t = &fx.nf[0];
  nf_it_start(t, "it_nf_tls_badpw", extra);

  char emails_buf[2][128];
  const char *emails[3] = {0};
  for (int i = 0; i < 2; i++) {
    snprintf(emails_buf[i], sizeof(emails_buf[i]), "badpw%d.%s@city.example", i, t->tag);
    emails[i] = emails_buf[i];
  }
  nf_it_produce_alert(t, "it-tls-badpw", "認証失敗の施策", emails);

  expect_retried_rows(t, "last_error LIKE '%535%'", 2);
  char *err = kpi_it_pg_value(t->pg, "SELECT last_error FROM notifications LIMIT 1");
  fprintf(stderr, "wrong password: last_error = %s\n", err ? err : "(null)");
  free(err);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE state <> "
                                         "'pending'", NULL),
                   0);
  assert_int_equal(nf_it_wait_mails(fx.srv.dir, t->tag, 1, 0), 0);
  assert_int_equal(file_count(fx.srv.log, "DELIVERED "), 0);
  assert_int_equal(file_count(fx.srv.log, "AUTH ok"), 0);
  /* The server really checked (and refused) the credentials, over TLS. */
  assert_true(file_count(fx.srv.log, "AUTH fail user=" FIXTURE_USER " mechanism=") >= 2);
  assert_int_equal(file_count(fx.srv.log, "tls=none"), 0);
  /* Session set-up failures are the relay's: counted as deferred mails, not failed attempts. */
  assert_true(nf_it_metric(t, "kpi_notifier_relay_deferred_total") >= 1);
  assert_true(nf_it_metric(t, "kpi_notifier_failed_total") == 0);
  assert_true(nf_it_metric(t, "kpi_notifier_sent_total") == 0);
  assert_true(nf_it_metric(t, "kpi_notifier_rejected_total") == 0);
  assert_healthy(0);
  assert_int_equal(nf_stop(0), 0);
  assert_password_not_logged(0, WRONG_PASSWORD);

  /* The password is fixed (a restart, as an operator would): the waiting rows go out. */
  const char *tls_good[] = {ca, "KPI_SMTP_USER=" FIXTURE_USER,
                            "KPI_SMTP_PASSWORD=" FIXTURE_PASSWORD, NULL};
  nf_env(buf, extra, tls_good);
  nf_it_start_replica(&fx.nf[1], t, 1, extra);
  if (nf_it_wait_mails(fx.srv.dir, t->tag, 2, 20000) != 2)
    fail_msg("the waiting mails did not arrive after the fix (server log %s, notifier log %s)",
             fx.srv.log, fx.nf[1].log);
  assert_int_equal(kpi_it_wait_pg_long(fx.nf[1].pg, "SELECT count(*) FROM notifications WHERE "
                                                    "state = 'sent'",
                                       NULL, 2, 10000),
                   2);
  kpi_it_sleep_ms(1000);
  nf_it_assert_once_each(fx.srv.dir, t->tag, emails);
  assert_int_equal(nf_stop(1), 0);
  assert_password_not_logged(1, FIXTURE_PASSWORD);
}

/* (3) Verification on and no CA file: the self-signed certificate is not trusted, so the
 * handshake fails, the credentials are never sent, nothing is delivered, the rows wait and
 * the service stays healthy. */
static void test_untrusted_certificate_no_delivery(void **state) {
  (void)state;
  char name[64];
  kpi_it_unique("it_nf_tls_untrusted", name, sizeof(name));
  server_start(name);
  const char *tls_extra[] = {"KPI_SMTP_TLS_VERIFY=1", "KPI_SMTP_USER=" FIXTURE_USER,
                             "KPI_SMTP_PASSWORD=" FIXTURE_PASSWORD, NULL};
  char buf[24][384];
  const char *extra[24];
  nf_env(buf, extra, tls_extra);
  nf_it *t = &fx.nf[0];
  nf_it_start(t, "it_nf_tls_untrusted", extra);

  char owner[128];
  nf_it_alert_owner(t, "untrusted", "it-tls-untrusted", "証明書不信の施策", owner, sizeof(owner));

  expect_retried_rows(t, "last_error ILIKE '%certificate%'", 1);
  char *err = kpi_it_pg_value(t->pg, "SELECT last_error FROM notifications LIMIT 1");
  fprintf(stderr, "untrusted certificate: last_error = %s\n", err ? err : "(null)");
  free(err);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE state <> "
                                         "'pending'", NULL),
                   0);
  assert_int_equal(nf_it_wait_mails(fx.srv.dir, t->tag, 1, 0), 0);
  assert_int_equal(file_count(fx.srv.log, "DELIVERED "), 0);
  /* No handshake completed (the client refused the certificate: the server logged the
   * notifier's "unknown CA" alert) and no credentials reached the server. */
  assert_int_equal(file_count(fx.srv.log, "TLS peer="), 0);
  assert_true(file_count(fx.srv.log, "TLSV1_ALERT_UNKNOWN_CA") >= 1);
  assert_int_equal(file_count(fx.srv.log, "AUTH ok"), 0);
  assert_int_equal(file_count(fx.srv.log, "AUTH fail"), 0);
  /* Session set-up failures are the relay's: counted as deferred mails, not failed attempts. */
  assert_true(nf_it_metric(t, "kpi_notifier_relay_deferred_total") >= 1);
  assert_true(nf_it_metric(t, "kpi_notifier_failed_total") == 0);
  assert_true(nf_it_metric(t, "kpi_notifier_sent_total") == 0);
  assert_healthy(0);
  assert_int_equal(nf_stop(0), 0);
  assert_password_not_logged(0, FIXTURE_PASSWORD);
}

/* A notifier configured without STARTTLS against a server that requires it gets 530: that is
 * our session set-up, not the message, so the row waits and is retried instead of going dead
 * at the first attempt. */
static void test_starttls_required_is_retried(void **state) {
  (void)state;
  char name[64];
  kpi_it_unique("it_nf_tls_530", name, sizeof(name));
  server_start(name);
  const char *tls_extra[] = {"KPI_SMTP_TLS=none", NULL};
  char buf[24][384];
  const char *extra[24];
  nf_env(buf, extra, tls_extra);
  nf_it *t = &fx.nf[0];
  nf_it_start(t, "it_nf_tls_530", extra);

  char owner[128];
  nf_it_alert_owner(t, "plain", "it-tls-530", "平文送信の施策", owner, sizeof(owner));

  expect_retried_rows(t, "TRUE", 1);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                         "'dead'", NULL),
                   0);
  assert_int_equal(nf_it_wait_mails(fx.srv.dir, t->tag, 1, 0), 0);
  assert_int_equal(file_count(fx.srv.log, "DELIVERED "), 0);
  assert_healthy(0);
  assert_int_equal(nf_stop(0), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_tls_auth_delivers_once, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_wrong_password_waits_then_delivers, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_untrusted_certificate_no_delivery, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_starttls_required_is_retried, test_setup,
                                      test_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
