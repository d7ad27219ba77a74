/* test_notifier_delivery.c: alerts on Kafka become mails in the real SMTP server's Maildir: headers, Japanese body, duplicates, injection, digests, dead letters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_notifier_util.h"
#include "kpi_json.h"

static nf_it T;

#define GROUP_WAIT_MS 1500

static void addr(char *buf, size_t size, const char *who) {
  snprintf(buf, size, "%s.%s@city.example", who, T.tag);
}

/* Waits for WANT mails to the addresses containing TAG, then a little longer to be sure no
 * more come; returns the final count. */
static int settle_count(const char *tag, int want, int timeout_ms) {
  int n = nf_it_wait_mails(nf_it_maildir, tag, want, timeout_ms);
  if (n < want) return n;
  kpi_it_sleep_ms(GROUP_WAIT_MS + 800);
  return nf_it_wait_mails(nf_it_maildir, tag, 0, 0);
}

static void test_alert_becomes_mail_per_recipient(void **state) {
  (void)state;
  char owner[128], watcher[128], owner_upper[128], tag[128];
  snprintf(tag, sizeof(tag), "single.%s", T.tag);
  addr(owner, sizeof(owner), "owner.single");
  addr(watcher, sizeof(watcher), "watcher.single");
  /* The same owner twice, once in other case: one mail. */
  snprintf(owner_upper, sizeof(owner_upper), "OWNER.single.%s@city.example", T.tag);
  const char *emails[] = {owner, watcher, owner_upper, NULL};
  const char *owners[] = {owner, owner_upper, NULL}, *watchers[] = {watcher, NULL};
  nf_it_catalog_set(&T, "it-measure-single", owners, watchers);
  kpi_alert *a = nf_it_alert("it-measure-single", "「星の降る里あしべつ応援団」事業の推進", emails);
  nf_it_produce(&T, a);

  assert_int_equal(settle_count(tag, 2, 30000), 2);
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 2);
  int seen_owner = 0, seen_watcher = 0;
  for (int i = 0; i < n; i++) {
    nf_it_mail *m = &mails[i];
    char *to = nf_it_header(m, "To");
    assert_non_null(to);
    if (strstr(to, owner)) seen_owner++;
    if (strstr(to, watcher)) seen_watcher++;
    free(to);
    char *from = nf_it_header(m, "From");
    assert_non_null(strstr(from, "<kpi-it@notifier.test>"));
    free(from);
    char *raw_subject = nf_it_header(m, "Subject");
    assert_non_null(strstr(raw_subject, "=?UTF-8?B?"));
    char *subject = nf_it_decode_words(raw_subject);
    assert_string_equal(subject, "【KPI 遅れ / lagging】「星の降る里あしべつ応援団」事業の推進");
    free(subject);
    free(raw_subject);
    char *v = nf_it_header(m, "Message-ID");
    assert_non_null(v);
    assert_true(v[0] == '<' && strstr(v, "@notifier.test>"));
    free(v);
    v = nf_it_header(m, "Date");
    assert_non_null(v);
    assert_non_null(strstr(v, "+0900"));
    free(v);
    nf_it_assert_header(m, "Auto-Submitted", "auto-generated");
    nf_it_assert_header(m, "MIME-Version", "1.0");
    v = nf_it_header(m, "Content-Type");
    assert_string_equal(v, "text/plain; charset=UTF-8");
    free(v);
    nf_it_assert_header(m, "Content-Transfer-Encoding", "base64");
    nf_it_assert_header(m, "X-KPI-Alert-ID", a->alert_id);
    char *body = nf_it_b64(m->body, strlen(m->body));
    assert_true(kpi_json_utf8_valid(body, strlen(body)));
    static const char *const lines[] = {
        "第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）",
        "■ 「星の降る里あしべつ応援団」事業の推進",
        "状況: 遅れ",
        "前回の通知からの変化: 順調 → 遅れ",
        "指標: 登録者数",
        "基準値: 24人（令和4年度 (FY2022)）",
        "目標値: 50人（令和6年度 (FY2024)）",
        "期限: 2025年3月31日",
        "現在値: 30人（2024年10月1日 評価）",
        "進捗率: 23.1%（期待されるペース: 60.0%）",
        "詳細: " NF_IT_DASHBOARD "/it-measure-single",
        "Status: lagging",
        "Since the last notice: on track -> lagging",
        "Target: 50 persons (令和6年度 (FY2024))",
    };
    for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++)
      if (!strstr(body, lines[k])) fail_msg("body lacks \"%s\":\n%s", lines[k], body);
    assert_true(strstr(body, "状況: 遅れ") < strstr(body, "Status: lagging"));
    /* The alert's own link (http://localhost:8081/...) is not ours: the catalog's is used. */
    assert_null(strstr(body, "localhost:8081"));
    free(body);
  }
  assert_int_equal(seen_owner, 1);
  assert_int_equal(seen_watcher, 1);
  nf_it_mails_free(mails, n);

  /* The queue records both as sent, with the server's reply and the Message-ID. */
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(*) FROM notifications WHERE alert_id = $1::uuid "
                                        "AND state = 'sent' AND smtp_reply LIKE '250%' "
                                        "AND message_id LIKE '<%@notifier.test>'",
                                  a->alert_id),
                   2);
  nf_it_alert_free(a);
}

static void test_same_alert_twice_one_mail(void **state) {
  (void)state;
  char owner[128], watcher[128], tag[128];
  snprintf(tag, sizeof(tag), "dup.%s", T.tag);
  addr(owner, sizeof(owner), "owner.dup");
  addr(watcher, sizeof(watcher), "watcher.dup");
  const char *emails[] = {owner, watcher, NULL};
  nf_it_catalog_set(&T, "it-measure-dup", emails, NULL);
  kpi_alert *a = nf_it_alert("it-measure-dup", "重複テストの施策", emails);
  nf_it_produce(&T, a);
  nf_it_produce(&T, a);
  assert_int_equal(settle_count(tag, 2, 30000), 2);
  /* Replayed once more after the mails went out: still nothing new. */
  nf_it_produce(&T, a);
  kpi_it_sleep_ms(GROUP_WAIT_MS + 1500);
  assert_int_equal(nf_it_wait_mails(nf_it_maildir, tag, 0, 0), 2);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(*) FROM notifications WHERE alert_id = $1::uuid",
                                  a->alert_id),
                   2);
  nf_it_alert_free(a);
}

static void test_crlf_in_measure_name_cannot_inject(void **state) {
  (void)state;
  char owner[128], victim[128], tag[128], vtag[128];
  snprintf(tag, sizeof(tag), "inject.%s", T.tag);
  snprintf(vtag, sizeof(vtag), "victim.%s", T.tag);
  addr(owner, sizeof(owner), "owner.inject");
  addr(victim, sizeof(victim), "victim");
  char name[512];
  snprintf(name, sizeof(name),
           "悪意のある施策\r\nBcc: %s\r\nX-Injected: yes\r\n\r\n偽の本文\nSubject: 偽", victim);
  const char *emails[] = {owner, NULL};
  /* The measure id cannot carry CR/LF any more: the catalog (ids of [A-Za-z0-9._-]) must
   * know the measure, or the alert is a dead letter. */
  nf_it_catalog_set(&T, "it-measure-inject", emails, NULL);
  kpi_alert *a = nf_it_alert("it-measure-inject", name, emails);
  free(a->indicator);
  a->indicator = strdup("指標\r\nX-Indicator: 1");
  nf_it_produce(&T, a);
  assert_int_equal(settle_count(tag, 1, 30000), 1);
  assert_int_equal(nf_it_wait_mails(nf_it_maildir, vtag, 0, 0), 0);
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 1);
  nf_it_mail *m = &mails[0];
  /* No header line the data could have made. */
  for (const char *p = m->headers; *p;) {
    const char *eol = strchr(p, '\n');
    if (strncasecmp(p, "Bcc:", 4) == 0 || strncasecmp(p, "X-Injected", 10) == 0 ||
        strncasecmp(p, "X-Measure", 9) == 0 || strncasecmp(p, "X-Indicator", 11) == 0)
      fail_msg("injected header: %.*s", (int)(eol - p), p);
    p = eol + 1;
  }
  char *raw_subject = nf_it_header(m, "Subject");
  char *subject = nf_it_decode_words(raw_subject);
  assert_null(strpbrk(subject, "\r\n"));
  assert_non_null(strstr(subject, "悪意のある施策  Bcc: "));
  free(subject);
  free(raw_subject);
  nf_it_assert_header(m, "X-RcptTo", owner);
  /* In the body the name stays on its one line. */
  char *body = nf_it_b64(m->body, strlen(m->body));
  assert_non_null(strstr(body, "■ 悪意のある施策  Bcc: "));
  assert_null(strstr(body, "\nSubject: 偽"));
  assert_null(strstr(body, "\nX-Injected"));
  free(body);
  nf_it_mails_free(mails, n);
  nf_it_alert_free(a);
}

static void test_digest_three_alerts_one_mail(void **state) {
  (void)state;
  char owner[128], tag[128];
  snprintf(tag, sizeof(tag), "digest.%s", T.tag);
  addr(owner, sizeof(owner), "owner.digest");
  const char *emails[] = {owner, NULL};
  static const char *const names[] = {"ダイジェスト施策その一", "ダイジェスト施策その二",
                                      "ダイジェスト施策その三"};
  static const char *const ids[] = {"it-digest-1", "it-digest-2", "it-digest-3"};
  for (int i = 0; i < 3; i++) nf_it_catalog_set(&T, ids[i], emails, NULL);
  for (int i = 0; i < 3; i++) {
    kpi_alert *a = nf_it_alert(ids[i], names[i], emails);
    if (i == 1) {
      strcpy(a->status, "failed");
      strcpy(a->previous_status, "lagging");
    }
    nf_it_produce(&T, a);
    nf_it_alert_free(a);
    kpi_it_sleep_ms(200);
  }
  assert_int_equal(settle_count(tag, 1, 30000), 1);
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 1);
  char *raw_subject = nf_it_header(&mails[0], "Subject");
  char *subject = nf_it_decode_words(raw_subject);
  assert_non_null(strstr(subject, "施策3件"));
  free(subject);
  free(raw_subject);
  char *body = nf_it_b64(mails[0].body, strlen(mails[0].body));
  assert_non_null(strstr(body, "3件の施策についてお知らせします。"));
  for (int i = 0; i < 3; i++) {
    char line[128];
    snprintf(line, sizeof(line), "%d. %s", i + 1, names[i]);
    if (!strstr(body, line)) fail_msg("digest lacks \"%s\":\n%s", line, body);
    if (!strstr(body, ids[i])) fail_msg("digest lacks %s", ids[i]);
  }
  assert_non_null(strstr(body, "状況: 未達成\r\n"));
  free(body);
  nf_it_mails_free(mails, n);
  /* All three rows are sent under the one Message-ID. */
  char like[160];
  snprintf(like, sizeof(like), "%s", owner);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(DISTINCT message_id) FROM notifications "
                                        "WHERE recipient = $1 AND state = 'sent'",
                                  like),
                   1);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(*) FROM notifications WHERE recipient = $1 "
                                        "AND state = 'sent'",
                                  like),
                   3);
}

/* Produces, for the measure MID (catalog owner OWNER), an alert of TYPE reaching STATUS from
 * PREV, raised at CREATED (the evaluator's clock), observed on 2024-03-31. */
static void produce_state(const char *mid, const char *name, const char *owner, const char *type,
                          const char *status, const char *prev, bool stale,
                          const char *created) {
  const char *emails[] = {owner, NULL};
  kpi_alert *a = nf_it_alert(mid, name, emails);
  snprintf(a->type, sizeof(a->type), "%s", type);
  snprintf(a->status, sizeof(a->status), "%s", status);
  snprintf(a->previous_status, sizeof(a->previous_status), "%s", prev);
  a->stale = stale;
  snprintf(a->created_at, sizeof(a->created_at), "%s", created);
  strcpy(a->as_of, "2026-11-30");
  strcpy(a->last_observed_day, "2024-03-31");
  a->value = 31;
  nf_it_produce(&T, a);
  nf_it_alert_free(a);
}

/* The one mail to OWNER (TAG) as decoded text, its subject in *SUBJECT; both freed by the
 * caller. Every row of OWNER is sent under that mail's one Message-ID, none is left. */
static char *only_mail(const char *tag, const char *owner, int rows, char **subject) {
  assert_int_equal(settle_count(tag, 1, 30000), 1);
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 1);
  char *raw = nf_it_header(&mails[0], "Subject");
  *subject = nf_it_decode_words(raw);
  free(raw);
  assert_null(nf_it_header(&mails[0], "X-KPI-Alert-ID")); /* it carries two alerts */
  char *body = nf_it_b64(mails[0].body, strlen(mails[0].body));
  nf_it_mails_free(mails, n);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(*) FROM notifications WHERE recipient = $1 "
                                        "AND state = 'sent' AND message_id IS NOT NULL",
                                  owner),
                   rows);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(DISTINCT message_id) FROM notifications "
                                        "WHERE recipient = $1",
                                  owner),
                   1);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(*) FROM notifications WHERE recipient = $1 "
                                        "AND state <> 'sent'",
                                  owner),
                   0);
  return body;
}

/* Two alerts for one measure in one group wait (stale, then failed) make one mail with one
 * entry: the latest state, the earlier one as 前回/Previously; both rows are sent. */
static void test_two_alerts_one_measure_one_entry(void **state) {
  (void)state;
  char owner[128], tag[128];
  snprintf(tag, sizeof(tag), "twice.%s", T.tag);
  addr(owner, sizeof(owner), "owner.twice");
  const char *emails[] = {owner, NULL};
  const char *mid = "it-twice", *name = "二度通知される施策";
  nf_it_catalog_set(&T, mid, emails, NULL);
  produce_state(mid, name, owner, "alert", "lagging", "lagging", true, "2026-11-30T00:00:00.000Z");
  produce_state(mid, name, owner, "alert", "failed", "lagging", true, "2026-11-30T00:00:01.000Z");
  char *subject;
  char *body = only_mail(tag, owner, 2, &subject);
  assert_string_equal(subject, "【KPI 未達成 / not achieved】二度通知される施策");
  static const char *const expected[] = {
      "■ 二度通知される施策\r\n  状況: 未達成（報告遅延）\r\n  前回: 遅れ（報告遅延）\r\n"
      "  前回の通知からの変化: 遅れ → 未達成\r\n",
      "  現在値: 31人（2024年3月31日 観測・2026年11月30日 評価）\r\n",
      "* 二度通知される施策 [it-twice]\r\n  Status: not achieved (report overdue)\r\n"
      "  Previously: lagging (report overdue)\r\n  Since the last notice: lagging -> not achieved\r\n",
      "  Current value: 31 persons (observed 2024-03-31, evaluated 2026-11-30)\r\n",
  };
  for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
    if (!strstr(body, expected[i])) fail_msg("mail lacks \"%s\":\n%s", expected[i], body);
  assert_null(strstr(body, "1. ")); /* not a digest of two entries */
  free(body);
  free(subject);
}

/* A failed value corrected a second later: one entry, resolved, previously not achieved. The
 * entry follows the alerts' sequence, not their arrival: the resolution is produced first. */
static void test_failed_then_resolved_one_entry(void **state) {
  (void)state;
  char owner[128], tag[128];
  snprintf(tag, sizeof(tag), "corrected.%s", T.tag);
  addr(owner, sizeof(owner), "owner.corrected");
  const char *emails[] = {owner, NULL};
  const char *mid = "it-corrected", *name = "訂正された施策";
  nf_it_catalog_set(&T, mid, emails, NULL);
  produce_state(mid, name, owner, "resolved", "on_track", "failed", false,
                "2026-11-30T00:00:01.000Z");
  produce_state(mid, name, owner, "alert", "failed", "on_track", false, "2026-11-30T00:00:00.000Z");
  char *subject;
  char *body = only_mail(tag, owner, 2, &subject);
  assert_string_equal(subject, "【KPI 回復 / resolved】訂正された施策");
  static const char *const expected[] = {
      "  状況: 回復（順調）\r\n  前回: 未達成\r\n  前回の通知からの変化: 順調 → 未達成 → 順調\r\n",
      "  Status: resolved (on track)\r\n  Previously: not achieved\r\n"
      "  Since the last notice: on track -> not achieved -> on track\r\n",
  };
  for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
    if (!strstr(body, expected[i])) fail_msg("mail lacks \"%s\":\n%s", expected[i], body);
  free(body);
  free(subject);
}

/* The dead letter whose value is the string ARG, checked for its reason. */
static int on_dlq_junk(const rd_kafka_message_t *m, void *arg) {
  const char *junk = arg;
  if (m->len != strlen(junk) || memcmp(m->payload, junk, m->len) != 0) return 0;
  rd_kafka_headers_t *h = NULL;
  const void *v;
  size_t vlen;
  assert_int_equal(rd_kafka_message_headers(m, &h), 0);
  assert_int_equal(rd_kafka_header_get_last(h, "kpi-error", &v, &vlen), 0);
  char *reason = strndup(v, vlen);
  assert_non_null(strstr(reason, "alert_id"));
  free(reason);
  return 1;
}

/* A record that is not an alert goes to the dead-letter topic with its reason; the alert
 * after it is still delivered (the partition does not stall). */
static void test_undecodable_alert_to_dlq(void **state) {
  (void)state;
  rd_kafka_t *c = nf_it_dlq_reader(&T, "_dlq_reader");
  assert_non_null(c);

  /* Same key as the valid alert below: same partition, so order matters. */
  const char *junk = "{\"schema\":\"kpi.alert/1\",\"alert_id\":\"not-a-uuid\"}";
  nf_it_produce_raw(&T, "it-measure-after-junk", junk, strlen(junk));
  char owner[128], tag[128];
  snprintf(tag, sizeof(tag), "afterjunk.%s", T.tag);
  addr(owner, sizeof(owner), "owner.afterjunk");
  const char *emails[] = {owner, NULL};
  nf_it_produce_alert(&T, "it-measure-after-junk", "毒レコードの後の施策", emails);

  int found = kpi_it_kafka_find(c, 30000, on_dlq_junk, (void *)junk);
  kpi_it_kafka_close(c);
  assert_true(found);
  assert_int_equal(nf_it_wait_mails(nf_it_maildir, tag, 1, 30000), 1);
}

static void test_metrics_and_health(void **state) {
  (void)state;
  assert_int_equal(kpi_it_wait_http(T.port, "/healthz", 200, 5000), 0);
  assert_int_equal(kpi_it_wait_http(T.port, "/metrics", 200, 5000), 0);
  /* The consumer lag that deploy/prometheus/kpi-alerts.yml alerts on is exported (-1: no such
   * series); its computation is tested in tests/unit/test_notifier_lag.c. */
  double lag = nf_it_metric(&T, "kpi_notifier_consumer_lag");
  assert_true(lag >= 0);
  assert_true(nf_it_alive(&T));
  /* SIGHUP reloads the catalog; it neither stops nor disturbs the service. */
  kill(T.pid, SIGHUP);
  kpi_it_sleep_ms(300);
  assert_true(nf_it_alive(&T));
  assert_int_equal(kpi_it_wait_http(T.port, "/healthz", 200, 5000), 0);
}

static int setup(void **state) {
  if (nf_it_setup(state) != 0) return -1;
  static const char *const extra[] = {"KPI_NOTIFY_GROUP_WAIT_MS=1500", NULL};
  nf_it_start(&T, "it_nf_delivery", extra);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  if (T.pid <= 0) return 0; /* test_outcomes_do_not_read_the_queue stopped it */
  int rc = nf_it_stop(&T);
  if (rc != 0) {
    fprintf(stderr, "notifier exit status %d (log %s)\n", rc, T.log);
    return -1;
  }
  return 0;
}

/* The mail states the measure's latest acknowledgement the alert carries, who wrote it and the
 * quiet period it asked for, in both languages (docs/notifier.md "The mail"). */
static void test_acknowledgement_in_mail(void **state) {
  (void)state;
  char owner[128], tag[128];
  snprintf(tag, sizeof(tag), "ack.%s", T.tag);
  addr(owner, sizeof(owner), "owner.ack");
  const char *emails[] = {owner, NULL};
  nf_it_catalog_set(&T, "it-measure-ack", emails, NULL);
  kpi_alert *a = nf_it_alert("it-measure-ack", "応援団事業", emails);
  strcpy(a->type, "reminder");
  strcpy(a->previous_status, "lagging");
  a->acknowledgement.present = true;
  a->acknowledgement.note = strdup("12月に説明会を開催し、登録を呼びかけます。");
  strcpy(a->acknowledgement.department, "kikaku");
  a->acknowledgement.department_name = strdup("企画課");
  strcpy(a->acknowledgement.acknowledged_at, "2024-12-01T00:00:00.000Z");
  strcpy(a->acknowledgement.until, "2025-01-31");
  nf_it_produce(&T, a);
  nf_it_alert_free(a);
  assert_int_equal(settle_count(tag, 1, 30000), 1);
  int n;
  nf_it_mail *mails = nf_it_mails_for(nf_it_maildir, tag, &n);
  assert_int_equal(n, 1);
  char *body = nf_it_b64(mails[0].body, strlen(mails[0].body));
  static const char *const lines[] = {
      "  状況: 遅れ［再通知］\r\n",
      "  対応方針（企画課, 2024-12-01）: 12月に説明会を開催し、登録を呼びかけます。"
      "（2025-01-31 まで督促を停止）\r\n",
      "  Response plan (企画課, 2024-12-01): 12月に説明会を開催し、登録を呼びかけます。"
      " (reminders paused until 2025-01-31)\r\n",
  };
  for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++)
    if (!strstr(body, lines[k])) fail_msg("body lacks \"%s\":\n%s", lines[k], body);
  free(body);
  nf_it_mails_free(mails, n);
}

/* N rows of single-recipient mails to <PREFIX><i>.<TAG>@city.example in one transaction,
 * created and due at now() + AT (an interval: '-1 hour' is due at once, past the group wait,
 * as bench/bench_notifier.sh inserts them; '1 hour' is parked, pending but not due). */
static void insert_rows(const char *tag, int n, const char *prefix, const char *at) {
  static const char *const nobody[] = {"nobody@placeholder.city.example", NULL};
  kpi_alert *a = nf_it_alert("it-measure-burst", "一斉送信の施策", nobody);
  size_t len = 0;
  char *payload = kpi_alert_encode(a, &len);
  nf_it_alert_free(a);
  assert_non_null(payload);
  char count[16];
  snprintf(count, sizeof(count), "%d", n);
  const char *p[] = {tag, payload, count, prefix, at};
  PGresult *r = PQexecParams(
      T.pg,
      "INSERT INTO notifications "
      "  (alert_id, recipient, measure_id, alert_type, payload, created_at, next_attempt_at) "
      "SELECT gen_random_uuid(), $4 || i || '.' || $1 || '@city.example', 'it-measure-burst', "
      "'alert', $2, now() + $5::interval, now() + $5::interval "
      "FROM generate_series(1, $3::int) AS i",
      5, NULL, p, NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  free(payload);
}

/* A burst of due rows (docs/notifier.md "Performance"): the claims run ahead of the
 * connections, growing while they come back full, so 300 single-recipient mails take far fewer
 * claims than 300 / the send capacity (16 with the default 4 connections), the bound of every
 * claim before; still every mail exactly once and every row sent once. */
#define BURST_MAILS 300
static void test_burst_claims_ahead(void **state) {
  (void)state;
  char tag[80];
  snprintf(tag, sizeof(tag), "burst.%.60s", T.tag);
  double claims0 = nf_it_metric(&T, "kpi_notifier_claims_total");
  assert_true(claims0 >= 0);
  insert_rows(tag, BURST_MAILS, "b", "-1 hour");
  assert_int_equal(settle_count(tag, BURST_MAILS, 60000), BURST_MAILS);
  static char emails[BURST_MAILS][128];
  const char *all[BURST_MAILS + 1] = {0};
  for (int i = 0; i < BURST_MAILS; i++) {
    snprintf(emails[i], sizeof(emails[i]), "b%d.%s@city.example", i + 1, tag);
    all[i] = emails[i];
  }
  nf_it_assert_once_each(nf_it_maildir, tag, all);
  assert_int_equal(nf_it_sql_long(T.pg,
                                  "SELECT count(*) FROM notifications WHERE recipient LIKE "
                                  "'%' || $1 || '%' AND state = 'sent' AND attempts = 1",
                                  tag),
                   BURST_MAILS);
  double claims = nf_it_metric(&T, "kpi_notifier_claims_total") - claims0;
  fprintf(stderr, "burst: %d mails in %.0f claims\n", BURST_MAILS, claims);
  assert_true(claims >= 1 && claims < BURST_MAILS / 16);
}

/* The outcome statements say "pending" as state NOT IN ('sent', 'dead') (NF_PENDING in
 * nf_send.c, docs/notifier.md "Performance", third round), which is the same test only while
 * the table's CHECK allows exactly these three states: a new state must revisit NF_PENDING. */
static void test_states_are_the_three_nf_pending_assumes(void **state) {
  (void)state;
  char *def = kpi_it_pg_value1(T.pg,
                               "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                               "WHERE conrelid = 'notifications'::regclass AND contype = 'c' "
                               "AND pg_get_constraintdef(oid) LIKE $1",
                               "%state%");
  assert_non_null(def);
  fprintf(stderr, "notifications: %s\n", def);
  assert_string_equal(def, "CHECK ((state = ANY (ARRAY['pending'::text, 'sent'::text, "
                           "'dead'::text])))");
  free(def);
  assert_int_equal(nf_it_sql_long(T.pg, "SELECT count(*) FROM information_schema.columns "
                                        "WHERE table_name = 'notifications' AND column_name = "
                                        "'state' AND is_nullable = $1", "NO"),
                   1);
}

/* Index entries returned by the scans of the indexes that find pending rows, in T's database:
 * the partial one on their age and the claim's per-recipient one (migration 011)
 * (pg_stat_user_indexes; complete once the sessions that read them have ended). Sequential
 * scans are not counted: any count(*) of the test's own would be one. */
static long pending_index_reads(PGconn *c) {
  return nf_it_sql_long(c,
                        "SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes "
                        "WHERE indexrelname IN ($1 || '_pending_age', $1 || '_recipient_state')",
                        "notifications");
}

/* The outcome statements name their rows by id, so each must look the ids up by primary key
 * whatever the planner knows of the table (docs/notifier.md "Performance", third round), and
 * the claims look up each chosen recipient's rows by recipient (fourth round: with the
 * partial indexes' statistics from an ANALYZE that saw nothing pending, they had read every
 * pending row twice per claim, 69,051 entries here in one CI run). With
 * "id = ANY(…) AND state = 'pending'", on a table whose statistics do not count its pending
 * rows yet (autovacuum off here, as before its first run after a burst), every sent batch read
 * every pending row through a partial index on pending rows: here the QUEUE_PARKED rows, pending
 * but not due for an hour (nor past the group wait, so the claims' walk stops before them), at least
 * QUEUE_PARKED entries per batch, over 125,000 in all even at the largest batches (8 mails).
 * Looked up by id, the sends read a few entries per mail, in the claims. The queue gauge and
 * the expiry (nf_queue.c, every NF_QUEUE_REFRESH_MS = 5 s and once at start) may each read the
 * whole table once per tick through these indexes: the bound allows that for every
 * tick the run lasted (2 + seconds / 5), which stays under the regression's 125,000 for runs
 * up to about 50 s. Stops T's notifier (its sessions' statistics are complete once they have
 * ended): runs last. */
#define QUEUE_MAILS 200
#define QUEUE_PARKED 5000
static void test_outcomes_do_not_read_the_queue(void **state) {
  (void)state;
  char tag[80];
  snprintf(tag, sizeof(tag), "queue.%.60s", T.tag);
  PGresult *r = PQexec(T.pg, "ALTER TABLE notifications SET (autovacuum_enabled = off)");
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  /* Statistics taken now, with the earlier tests' mails sent: the partial index on pending
   * rows then looks nearly empty to the planner, whatever is inserted below. Without this,
   * whether autovacuum's last analyze saw pending rows decided the plans (and the test). */
  r = PQexec(T.pg, "ANALYZE notifications");
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  insert_rows(tag, QUEUE_PARKED, "parked", "1 hour");
  long reads0 = pending_index_reads(T.pg);
  assert_true(reads0 >= 0);
  long long t0 = kpi_it_now_ms();
  double sent0 = nf_it_metric(&T, "kpi_notifier_notifications_sent_total");
  insert_rows(tag, QUEUE_MAILS, "b", "-1 hour");
  assert_int_equal(nf_it_wait_mails(nf_it_maildir, tag, QUEUE_MAILS, 60000), QUEUE_MAILS);
  /* Waited for on the notifier's counter, not by polling the table, whose scans would count;
   * the drain on SIGTERM writes the outcomes still batched. */
  long long deadline = t0 + 60000;
  while (nf_it_metric(&T, "kpi_notifier_notifications_sent_total") < sent0 + QUEUE_MAILS) {
    if (kpi_it_now_ms() > deadline) fail_msg("the notifier counted fewer than %d sent", QUEUE_MAILS);
    kpi_it_sleep_ms(50);
  }
  char conninfo[sizeof(T.conninfo)], db[sizeof(T.db)];
  memcpy(conninfo, T.conninfo, sizeof(conninfo));
  memcpy(db, T.db, sizeof(db));
  assert_int_equal(nf_it_stop(&T), 0);
  long long secs = (kpi_it_now_ms() - t0) / 1000;
  PGconn *c = kpi_it_pg(conninfo);
  /* The notifier's sessions end a moment after it exits; then their reads are counted. */
  deadline = kpi_it_now_ms() + 30000;
  while (nf_it_sql_long(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                        "AND pid <> pg_backend_pid()", db) > 0) {
    if (kpi_it_now_ms() > deadline) fail_msg("the notifier's sessions did not end in 30 s");
    kpi_it_sleep_ms(50);
  }
  long reads = pending_index_reads(c) - reads0;
  long table = nf_it_sql_long(c, "SELECT count(*) FROM notifications", NULL);
  assert_int_equal(nf_it_sql_long(c, "SELECT count(*) FROM notifications WHERE state = 'sent' "
                                     "AND recipient LIKE 'b%.' || $1 || '@city.example'", tag),
                   QUEUE_MAILS);
  PQfinish(c);
  long bound = 2L * table * (2 + secs / 5);
  fprintf(stderr, "queue: %d mails beside %d parked rows in %lld s, %ld index entries read (bound %ld)\n",
          QUEUE_MAILS, QUEUE_PARKED, secs, reads, bound);
  assert_true(reads >= 0 && reads < bound);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alert_becomes_mail_per_recipient),
      cmocka_unit_test(test_same_alert_twice_one_mail),
      cmocka_unit_test(test_crlf_in_measure_name_cannot_inject),
      cmocka_unit_test(test_digest_three_alerts_one_mail),
      cmocka_unit_test(test_two_alerts_one_measure_one_entry),
      cmocka_unit_test(test_failed_then_resolved_one_entry),
      cmocka_unit_test(test_undecodable_alert_to_dlq),
      cmocka_unit_test(test_metrics_and_health),
      cmocka_unit_test(test_acknowledgement_in_mail),
      cmocka_unit_test(test_burst_claims_ahead),
      cmocka_unit_test(test_states_are_the_three_nf_pending_assumes),
      cmocka_unit_test(test_outcomes_do_not_read_the_queue), /* last: stops the notifier */
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
