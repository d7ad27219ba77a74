/* test_notifier_hardening.c: issue 8 on the real stack: recipients and links only from the
 * notifier's own catalog and configuration, no clear-text AUTH, SMTP replies that are not
 * UTF-8, no credentials or addresses in logs and dead-letter headers, retention of sent rows.
 * Quirky SMTP servers come from tests/integration/smtp_quirk_server.py (aiosmtpd). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_notifier_util.h"

/* One test's quirky SMTP server and notifier; global so that the teardown and an atexit
 * handler (nf_it_spawn exits the program when a notifier does not come up) stop them. */
static struct {
  int port;
  char dir[256]; /* Maildir */
  char log[256];
  pid_t pid;
  nf_it nf;
} fx;

static void kill_leftovers(void) {
  if (fx.nf.pid > 0) kpi_it_stop(fx.nf.pid, SIGKILL, 5000);
  fx.nf.pid = 0;
  if (fx.pid > 0) kpi_it_stop(fx.pid, SIGKILL, 5000);
  fx.pid = 0;
}

/* Starts smtp_quirk_server.py in MODE on a free port with a Maildir of its own. */
static void quirk_start(const char *mode) {
  char name[64];
  kpi_it_unique("it_nf_quirk", name, sizeof(name));
  fx.port = kpi_it_free_port();
  snprintf(fx.dir, sizeof(fx.dir), "%s/%s_maildir", KPI_BINARY_DIR, name);
  snprintf(fx.log, sizeof(fx.log), "%s/%s_smtpd.log", KPI_BINARY_DIR, name);
  char script[512], port[16];
  snprintf(script, sizeof(script), "%s/tests/integration/smtp_quirk_server.py", KPI_SOURCE_DIR);
  snprintf(port, sizeof(port), "%d", fx.port);
  const char *argv[] = {"/usr/bin/python3", script, "--mode", mode, "--port", port,
                        "--maildir", fx.dir, "--lifetime", "240", NULL};
  fx.pid = kpi_it_spawn_argv(argv, NULL, fx.log, NULL);
  long long deadline = kpi_it_now_ms() + 15000;
  while (nf_it_file_count(fx.log, "READY port=") == 0) {
    if (waitpid(fx.pid, NULL, WNOHANG) == fx.pid) {
      fx.pid = 0;
      fail_msg("the SMTP fixture exited at start (log %s)", fx.log);
    }
    if (kpi_it_now_ms() > deadline) fail_msg("the SMTP fixture did not start (log %s)", fx.log);
    kpi_it_sleep_ms(50);
  }
}

static int test_setup(void **state) {
  (void)state;
  memset(&fx, 0, sizeof(fx));
  return 0;
}

static int test_teardown(void **state) {
  (void)state;
  if (fx.nf.pid > 0) nf_it_stop(&fx.nf);
  fx.nf.pid = 0;
  if (fx.pid > 0) kpi_it_stop(fx.pid, SIGTERM, 5000);
  fx.pid = 0;
  kill_leftovers();
  return 0;
}

/* The file PATH does not contain NEEDLE. */
static void assert_not_in_file(const char *path, const char *needle) {
  int n = nf_it_file_count(path, needle);
  if (n != 0) fail_msg("\"%s\" appears %d times in %s", needle, n, path);
}

/* (1) Recipients and links --------------------------------------------------------------- */

/* A forged alert, produced straight onto the topic, names a foreign recipient and a phishing
 * link: the mail goes only to the catalog's owner and watcher, with the configured link, and
 * nothing reaches the foreign address. The log says what was ignored without the address. */
static void test_forged_alert_mails_only_catalog(void **state) {
  (void)state;
  static const char *const extra[] = {"KPI_NOTIFY_GROUP_WAIT_MS=0", NULL};
  nf_it *t = &fx.nf;
  nf_it_prepare(t, "it_nf_forged");
  char owner[128], watcher[128], attacker[128], tag[128];
  snprintf(tag, sizeof(tag), "forged.%s", t->tag);
  snprintf(owner, sizeof(owner), "owner.forged.%s@city.example", t->tag);
  snprintf(watcher, sizeof(watcher), "watcher.forged.%s@city.example", t->tag);
  snprintf(attacker, sizeof(attacker), "attacker.forged.%s@evil.example", t->tag);
  const char *owners[] = {owner, NULL}, *watchers[] = {watcher, NULL};
  nf_it_catalog_put(t->catalog, "it-forged", owners, watchers);
  nf_it_spawn(t, extra);

  const char *forged_rcpt[] = {attacker, NULL};
  kpi_alert *a = nf_it_alert("it-forged", "偽造アラートの施策", forged_rcpt);
  free(a->dashboard_url);
  a->dashboard_url = strdup("https://evil.example/phish");
  nf_it_produce(t, a);

  if (nf_it_wait_mails(nf_it_maildir, tag, 2, 30000) != 2)
    fail_msg("2 mails expected for the catalog's addresses (log %s)", t->log);
  kpi_it_sleep_ms(1500); /* a third (to the attacker) would show up now */
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 2);
  assert_int_equal(nf_it_count_rcpt(mails, n, owner), 1);
  assert_int_equal(nf_it_count_rcpt(mails, n, watcher), 1);
  assert_int_equal(nf_it_count_rcpt(mails, n, attacker), 0);
  for (int i = 0; i < n; i++) {
    char *to = nf_it_header(&mails[i], "To");
    assert_null(strstr(to, "evil.example"));
    free(to);
    char *body = nf_it_b64(mails[i].body, strlen(mails[i].body));
    if (!strstr(body, "詳細: " NF_IT_DASHBOARD "/it-forged"))
      fail_msg("the configured link is missing:\n%s", body);
    assert_null(strstr(body, "evil.example"));
    free(body);
  }
  nf_it_mails_free(mails, n);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE recipient "
                                         "ILIKE '%evil.example'", NULL),
                   0);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                              "'sent'", NULL, 2, 10000),
                   2);
  assert_true(nf_it_metric(t, "kpi_notifier_alert_fields_ignored_total") >= 1);
  assert_true(nf_it_file_count(t->log, "alert_fields_ignored") >= 1);
  assert_not_in_file(t->log, "attacker.forged");
  assert_not_in_file(t->log, "evil.example");
  nf_it_alert_free(a);

  /* A SIGHUP reload changes who is mailed next: the watcher is replaced. */
  char watcher2[128];
  snprintf(watcher2, sizeof(watcher2), "watcher2.forged.%s@city.example", t->tag);
  const char *watchers2[] = {watcher2, NULL};
  nf_it_catalog_set(t, "it-forged", owners, watchers2);
  a = nf_it_alert("it-forged", "偽造アラートの施策", forged_rcpt);
  nf_it_produce(t, a);
  nf_it_alert_free(a);
  if (nf_it_wait_mails(nf_it_maildir, tag, 4, 30000) != 4)
    fail_msg("2 more mails expected after the reload (log %s)", t->log);
  mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 4);
  assert_int_equal(nf_it_count_rcpt(mails, n, owner), 2);
  assert_int_equal(nf_it_count_rcpt(mails, n, watcher), 1);
  assert_int_equal(nf_it_count_rcpt(mails, n, watcher2), 1);
  assert_int_equal(nf_it_count_rcpt(mails, n, attacker), 0);
  nf_it_mails_free(mails, n);
  assert_int_equal(nf_it_stop(t), 0);
}

/* The dead letter of an alert for a measure the catalog does not know. */
static int on_unknown_measure(const rd_kafka_message_t *m, void *arg) {
  const char *alert_id = arg;
  if (!m->payload || !memmem(m->payload, m->len, alert_id, strlen(alert_id))) return 0;
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t vlen;
  assert_int_equal(rd_kafka_message_headers(m, &h), 0);
  assert_int_equal(rd_kafka_header_get_last(h, "kpi-error", &v, &vlen), 0);
  char *reason = strndup(v, vlen);
  if (!strstr(reason, "unknown_measure") || !strstr(reason, "it-not-in-catalog"))
    fail_msg("unexpected reason: %s", reason);
  free(reason);
  return 1;
}

/* An alert for a measure that is not in the notifier's catalog is a dead letter with its
 * reason; nobody is mailed, no row is queued, and the next alert still goes out. */
static void test_unknown_measure_to_dlq(void **state) {
  (void)state;
  static const char *const extra[] = {"KPI_NOTIFY_GROUP_WAIT_MS=0", NULL};
  nf_it *t = &fx.nf;
  nf_it_start(t, "it_nf_unknown", extra);
  char stranger[128], owner[128], tag[128];
  snprintf(tag, sizeof(tag), "unknown.%s", t->tag);
  snprintf(stranger, sizeof(stranger), "stranger.unknown.%s@city.example", t->tag);
  snprintf(owner, sizeof(owner), "owner.unknown.%s@city.example", t->tag);
  const char *rc[] = {stranger, NULL};
  kpi_alert *a = nf_it_alert("it-not-in-catalog", "カタログにない施策", rc);
  nf_it_produce(t, a);
  const char *rc2[] = {owner, NULL};
  nf_it_produce_alert(t, "it-known", "カタログにある施策", rc2);

  rd_kafka_t *c = nf_it_dlq_reader(t, "_reader");
  assert_non_null(c);
  int found = kpi_it_kafka_find(c, 30000, on_unknown_measure, a->alert_id);
  kpi_it_kafka_close(c);
  assert_true(found);
  assert_int_equal(nf_it_wait_mails(nf_it_maildir, tag, 1, 30000), 1);
  kpi_it_sleep_ms(1000);
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 1);
  assert_int_equal(nf_it_count_rcpt(mails, n, owner), 1);
  nf_it_mails_free(mails, n);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE measure_id = "
                                         "'it-not-in-catalog'", NULL),
                   0);
  nf_it_alert_free(a);
  assert_int_equal(nf_it_stop(t), 0);
}

/* (2) No AUTH in clear text -------------------------------------------------------------- */

/* Runs kpi-notifier with ENV (NULL-terminated) on top of a minimal set, expecting it to stop
 * at start; returns its exit code (-1 if it did not exit within 10 s). LOG gets its output. */
static int run_expecting_exit(const char *const *env_extra, const char *log) {
  kpi_it_env env = {0};
  int port = kpi_it_free_port();
  kpi_it_env_add(&env, "KPI_NOTIFIER_LISTEN=127.0.0.1:%d", port);
  kpi_it_env_add(&env, "PGDATABASE=postgres");
  kpi_it_env_extend(&env, env_extra);
  pid_t pid = kpi_it_spawn("services/notifier/kpi-notifier", kpi_it_env_list(&env), log);
  long long deadline = kpi_it_now_ms() + 10000;
  int status;
  while (kpi_it_now_ms() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    kpi_it_sleep_ms(50);
  }
  kpi_it_stop(pid, SIGTERM, 5000);
  return -1;
}

/* Credentials with KPI_SMTP_TLS=try or none: the service refuses to start, with a message
 * naming the way out, unless the operator explicitly accepts clear-text AUTH. */
static void test_credentials_without_tls_refused(void **state) {
  (void)state;
  static const char *const modes[] = {"try", "none"};
  for (size_t i = 0; i < 2; i++) {
    char log[256], tls[64];
    char name[64];
    kpi_it_unique("it_nf_insecure", name, sizeof(name));
    snprintf(log, sizeof(log), "%s/%s.log", KPI_BINARY_DIR, name);
    snprintf(tls, sizeof(tls), "KPI_SMTP_TLS=%s", modes[i]);
    const char *env[] = {"KPI_SMTP_URL=smtp://127.0.0.1:2525", "KPI_SMTP_USER=smtp-user-4711",
                         "KPI_SMTP_PASSWORD=smtp-pw-4711", tls, NULL};
    int code = run_expecting_exit(env, log);
    if (code <= 0) fail_msg("KPI_SMTP_TLS=%s with credentials: exit %d, want > 0 (log %s)",
                            modes[i], code, log);
    assert_true(nf_it_file_count(log, "config_invalid") >= 1);
    assert_true(nf_it_file_count(log, "KPI_SMTP_ALLOW_INSECURE_AUTH") >= 1);
    assert_not_in_file(log, "smtp-pw-4711");
  }
  /* Userinfo in the URL is a user too. */
  char log[256], name[64];
  kpi_it_unique("it_nf_insecure_url", name, sizeof(name));
  snprintf(log, sizeof(log), "%s/%s.log", KPI_BINARY_DIR, name);
  const char *env[] = {"KPI_SMTP_URL=smtp://url-user-4711:url-pw-4711@127.0.0.1:2525",
                       "KPI_SMTP_TLS=try", NULL};
  assert_true(run_expecting_exit(env, log) > 0);
  assert_not_in_file(log, "url-pw-4711");
  assert_not_in_file(log, "url-user-4711");
}

/* A user and no KPI_SMTP_TLS, against a server whose STARTTLS was stripped (it offers AUTH in
 * clear text): TLS is required, so nothing is sent, the credentials never leave, the rows
 * wait for retries. Neither the user nor the password (from the environment or the URL)
 * appears in the log. With the explicit insecure flag the operator gets what they asked. */
static void test_user_defaults_to_require(void **state) {
  (void)state;
  quirk_start("plain-auth");
  nf_it *t = &fx.nf;
  char url[128];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://url-user-5150:url-pw-5150@127.0.0.1:%d",
           fx.port);
  const char *extra[] = {url,
                         "KPI_SMTP_USER=env-user-5150",
                         "KPI_SMTP_PASSWORD=env-pw-5150",
                         "KPI_NOTIFY_GROUP_WAIT_MS=0",
                         "KPI_NOTIFY_RETRY_BASE_MS=200",
                         "KPI_NOTIFY_RETRY_MAX_MS=1000",
                         "KPI_NOTIFY_MAX_ATTEMPTS=1000",
                         "KPI_SMTP_CONNECT_TIMEOUT_MS=3000",
                         "KPI_SMTP_TIMEOUT_MS=5000",
                         NULL};
  nf_it_start(t, "it_nf_require", extra);
  char owner[128];
  nf_it_alert_owner(t, "require", "it-require", "暗号化必須の施策", owner, sizeof(owner));

  /* STARTTLS missing is the relay's state, not the mail's fault: the row waits with its
   * attempts untouched while the relay is probed (issue 13). */
  long got = kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                        "'pending' AND attempts = 0 AND last_error IS NOT NULL",
                                 NULL, 1, 20000);
  if (got != 1) fail_msg("the row should wait (log %s, server %s)", t->log, fx.log);
  kpi_it_sleep_ms(1500);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE attempts > 0",
                                  NULL), 0);
  assert_true(nf_it_metric(t, "kpi_notifier_relay_up") == 0);
  assert_int_equal(nf_it_file_count(fx.log, "AUTH seen"), 0);
  assert_int_equal(nf_it_file_count(fx.log, "DELIVERED"), 0);
  assert_int_equal(nf_it_wait_mails(fx.dir, t->tag, 1, 0), 0);
  assert_true(nf_it_alive(t));
  assert_int_equal(nf_it_stop(t), 0);
  static const char *const secrets[] = {"url-user-5150", "url-pw-5150", "env-user-5150",
                                        "env-pw-5150"};
  for (size_t i = 0; i < 4; i++) assert_not_in_file(t->log, secrets[i]);
  /* The start line names the server without its userinfo. */
  char host[64];
  snprintf(host, sizeof(host), "smtp://127.0.0.1:%d", fx.port);
  assert_true(nf_it_file_count(t->log, host) >= 1);

  /* The explicit opt-in: the same server now gets AUTH in clear text, and the mail. */
  const char *insecure[] = {url, "KPI_SMTP_USER=env-user-5150", "KPI_SMTP_PASSWORD=env-pw-5150",
                            "KPI_SMTP_TLS=try", "KPI_SMTP_ALLOW_INSECURE_AUTH=1",
                            "KPI_NOTIFY_GROUP_WAIT_MS=0", NULL};
  nf_it first = *t;
  nf_it_start_replica(t, &first, 1, insecure);
  if (nf_it_wait_mails(fx.dir, t->tag, 1, 20000) != 1)
    fail_msg("the waiting mail did not go out with the insecure flag (log %s)", t->log);
  assert_true(nf_it_file_count(fx.log, "AUTH seen") >= 1);
  assert_true(nf_it_file_count(t->log, "smtp_insecure_auth") >= 1);
  assert_int_equal(nf_it_stop(t), 0);
  for (size_t i = 0; i < 4; i++) assert_not_in_file(t->log, secrets[i]);
}

/* (3) Replies that are not UTF-8 ---------------------------------------------------------- */

/* The server answers every message with "250 ok \xff\xfe". More mails than the send capacity
 * (4 connections x 4): every one is delivered once, every row is marked sent, and the reply
 * is stored as valid UTF-8 with U+FFFD in place of the bad bytes. */
#define N_BAD_UTF8 20
static void test_invalid_utf8_reply_stored_clean(void **state) {
  (void)state;
  quirk_start("bad-utf8");
  nf_it *t = &fx.nf;
  char url[96];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.port);
  const char *extra[] = {url, "KPI_NOTIFY_GROUP_WAIT_MS=0", "KPI_NOTIFY_POLL_MS=100", NULL};
  nf_it_prepare(t, "it_nf_badutf8");
  nf_it_catalog_numbered(t, N_BAD_UTF8, "it-badutf8-", 1);
  nf_it_spawn(t, extra);
  static char emails[N_BAD_UTF8][128];
  const char *all[N_BAD_UTF8 + 1] = {0};
  for (int i = 0; i < N_BAD_UTF8; i++) {
    nf_it_produce_numbered(t, t->tag, i, "it-badutf8-", "不正な応答の施策", 1, &emails[i]);
    all[i] = emails[i];
  }
  long sent = kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = 'sent'",
                                  NULL, N_BAD_UTF8, 30000);
  if (sent != N_BAD_UTF8)
    fail_msg("%ld of %d rows sent (log %s, server %s)", sent, N_BAD_UTF8, t->log, fx.log);
  kpi_it_sleep_ms(1000);
  nf_it_assert_once_each(fx.dir, t->tag, all);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE smtp_reply = "
                                         "'250 ok ' || U&'\\FFFD\\FFFD'", NULL),
                   N_BAD_UTF8);
  assert_int_equal(nf_it_file_count(fx.log, "DELIVERED"), N_BAD_UTF8);
  assert_int_equal(nf_it_file_count(t->log, "outcome_update_failed"), 0);
  assert_int_equal((long)nf_it_metric(t, "kpi_notifier_mails_inflight"), 0);
  assert_int_equal(nf_it_stop(t), 0);
}

/* (4) No addresses in dead-letter headers or logs ---------------------------------------- */

struct dead_want {
  const char *alert_id;
  const char *recipient;
};

static int on_dead_letter(const rd_kafka_message_t *m, void *arg) {
  const struct dead_want *want = arg;
  if (!m->payload || !memmem(m->payload, m->len, want->alert_id, strlen(want->alert_id)))
    return 0;
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t vlen;
  assert_int_equal(rd_kafka_message_headers(m, &h), 0);
  assert_int_equal(rd_kafka_header_get_last(h, "kpi-error", &v, &vlen), 0);
  char *reason = strndup(v, vlen);
  fprintf(stderr, "dead letter reason: %s\n", reason);
  /* The reason still says what happened, with the quoted address masked. */
  assert_non_null(strstr(reason, "550"));
  assert_non_null(strstr(reason, "[address]"));
  free(reason);
  assert_int_equal(rd_kafka_header_get_last(h, "kpi-notification-id", &v, &vlen), 0);
  const char *name;
  for (size_t i = 0; rd_kafka_header_get_all(h, i, &name, &v, &vlen) == 0; i++)
    if (memchr(v, '@', vlen)) fail_msg("dead-letter header %s: %.*s", name, (int)vlen, (const char *)v);
  return 1;
}

/* The server refuses the recipient, quoting the address: the row goes dead and its dead
 * letter's headers name no address; the notifier's log does not either. */
static void test_dead_letter_headers_without_addresses(void **state) {
  (void)state;
  quirk_start("reject-rcpt");
  nf_it *t = &fx.nf;
  char url[96];
  snprintf(url, sizeof(url), "KPI_SMTP_URL=smtp://127.0.0.1:%d", fx.port);
  const char *extra[] = {url, "KPI_NOTIFY_GROUP_WAIT_MS=0", NULL};
  nf_it_start(t, "it_nf_deadhdr", extra);
  char owner[128];
  snprintf(owner, sizeof(owner), "rejected.%s@city.example", t->tag);
  const char *rc[] = {owner, NULL};
  nf_it_catalog_set(t, "it-deadhdr", rc, NULL);
  kpi_alert *a = nf_it_alert("it-deadhdr", "宛先拒否の施策", rc);
  nf_it_produce(t, a);
  assert_int_equal(kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                              "'dead' AND last_error LIKE '%550%'",
                                       NULL, 1, 20000),
                   1);
  rd_kafka_t *c = nf_it_dlq_reader(t, "_reader");
  assert_non_null(c);
  struct dead_want want = {a->alert_id, owner};
  int found = kpi_it_kafka_find(c, 20000, on_dead_letter, &want);
  kpi_it_kafka_close(c);
  assert_true(found);
  nf_it_alert_free(a);
  assert_int_equal(nf_it_stop(t), 0);
  assert_true(nf_it_file_count(t->log, "notification_dead") >= 1);
  assert_not_in_file(t->log, owner);
}

/* (5) Retention --------------------------------------------------------------------------- */

/* Rows of every kind, some backdated: only sent rows past KPI_NOTIFY_RETENTION_DAYS (90 by
 * default) are deleted, in batches of KPI_NOTIFY_PURGE_BATCH; recent sent rows, dead rows of
 * any age and pending rows stay. */
static void test_retention_purges_old_sent_rows(void **state) {
  (void)state;
  static const char *const extra[] = {"KPI_NOTIFY_PURGE_INTERVAL_MS=300",
                                      "KPI_NOTIFY_PURGE_BATCH=2", NULL};
  nf_it *t = &fx.nf;
  nf_it_start(t, "it_nf_retention", extra);
  static const char insert[] =
      "INSERT INTO notifications (alert_id, recipient, measure_id, alert_type, payload, state, "
      "  attempts, next_attempt_at, created_at, sent_at) "
      "SELECT gen_random_uuid(), 'r' || g || '.' || $1 || '@city.example', 'it-retention', "
      "  'alert', '{}', s.state, 1, now() + interval '1 day', now() - s.age, "
      "  CASE WHEN s.state = 'sent' THEN now() - s.age END "
      "FROM (VALUES ('sent', interval '91 days', 5), ('sent', interval '89 days', 1), "
      "             ('sent', interval '1 hour', 1), ('dead', interval '400 days', 2), "
      "             ('pending', interval '200 days', 1)) AS s(state, age, n), "
      "     generate_series(1, s.n) AS g";
  const char *params[] = {t->tag};
  PGresult *r = PQexecParams(t->pg, insert, 1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("insert: %s", PQerrorMessage(t->pg));
  PQclear(r);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications", NULL), 10);

  long old = kpi_it_wait_pg_long(t->pg, "SELECT count(*) FROM notifications WHERE state = 'sent' "
                                        "AND sent_at < now() - interval '90 days'",
                                 NULL, 0, 20000);
  if (old != 0) fail_msg("%ld old sent rows left (log %s)", old, t->log);
  kpi_it_sleep_ms(1000); /* another purge or two: nothing else may go */
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE state = 'sent'",
                                  NULL),
                   2);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE state = 'dead'",
                                  NULL),
                   2);
  assert_int_equal(nf_it_sql_long(t->pg, "SELECT count(*) FROM notifications WHERE state = "
                                         "'pending'", NULL),
                   1);
  assert_int_equal((long)nf_it_metric(t, "kpi_notifier_notifications_purged_total"), 5);
  /* Bounded batches: five rows took at least three statements. */
  assert_true(nf_it_file_count(t->log, "notifications_purged") >= 3);
  assert_int_equal(nf_it_stop(t), 0);
}

static int group_setup(void **state) {
  if (nf_it_setup(state) != 0) return -1;
  atexit(kill_leftovers);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_forged_alert_mails_only_catalog, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_unknown_measure_to_dlq, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_credentials_without_tls_refused, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_user_defaults_to_require, test_setup, test_teardown),
      cmocka_unit_test_setup_teardown(test_invalid_utf8_reply_stored_clean, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_dead_letter_headers_without_addresses, test_setup,
                                      test_teardown),
      cmocka_unit_test_setup_teardown(test_retention_purges_old_sent_rows, test_setup,
                                      test_teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
