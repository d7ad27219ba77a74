/* test_mail.c: unit tests for kpi_mail — addresses, RFC 2047 words, header injection, bodies, digests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "kpi_json.h"
#include "kpi_mail.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* 2024-10-01T00:00:00Z */
#define DATE_MS 1727740800000LL

static kpi_recipient one_recipient[] = {{NULL, NULL, (char *)"owner@city.example"}};

/* A lagging level measure as the evaluator would describe it; strings are literals, so the
 * tests never call kpi_alert_clear on it. */
static kpi_alert sample_alert(const char *id, const char *measure_id, const char *name) {
  kpi_alert a;
  memset(&a, 0, sizeof(a));
  snprintf(a.alert_id, sizeof(a.alert_id), "%s", id);
  snprintf(a.measure_id, sizeof(a.measure_id), "%s", measure_id);
  strcpy(a.type, "alert");
  strcpy(a.status, "lagging");
  strcpy(a.previous_status, "on_track");
  a.has_value = true;
  a.value = 30;
  a.progress = 0.2307692;
  a.expected = 0.6;
  strcpy(a.as_of, "2024-10-01");
  a.measure_name = (char *)name;
  a.indicator = (char *)"登録者数";
  a.unit = (char *)"person";
  a.kind = (char *)"level";
  a.direction = (char *)"increase";
  a.baseline = 24;
  a.baseline_fy = 2022;
  a.target = 50;
  a.target_fy = 2024;
  strcpy(a.due, "2025-03-31");
  a.plan_name = (char *)"第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）";
  a.dashboard_url = (char *)"http://localhost:8081/v1/attainment";
  a.recipients = one_recipient;
  a.n_recipients = 1;
  strcpy(a.created_at, "2024-10-01T00:00:00.000Z");
  return a;
}

static const char *ID1 = "6f1c2a70-3a5e-5c1e-9a3b-0c8d2f3e4a51";
static const char *ID2 = "7a2d3b81-4b6f-5d2f-8b4c-1d9e3a4f5b62";
static const char *ID3 = "8b3e4c92-5c7a-5e3a-9c5d-2eaf4b5a6c73";

/* Decodes base64 text (line breaks allowed) into a NUL-terminated malloc'd string. */
static char *b64_decode(const char *s, size_t n) {
  char *clean = calloc(1, n + 1);
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] != '\r' && s[i] != '\n') clean[m++] = s[i];
  char *out = calloc(1, m + 4);
  int r = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)clean, (int)m);
  assert_true(r >= 0);
  /* EVP_DecodeBlock counts the padding as zero bytes; drop them. */
  size_t pad = 0;
  if (m >= 1 && clean[m - 1] == '=') pad++;
  if (m >= 2 && clean[m - 2] == '=') pad++;
  out[r - (int)pad] = '\0';
  free(clean);
  return out;
}

/* Decodes a header value made of encoded words separated by folding whitespace. */
static char *decode_words(const char *v) {
  char *out = calloc(1, strlen(v) + 1);
  const char *p = v;
  while ((p = strstr(p, "=?UTF-8?B?"))) {
    p += 10;
    const char *end = strstr(p, "?=");
    assert_non_null(end);
    char *part = b64_decode(p, (size_t)(end - p));
    strcat(out, part);
    free(part);
    p = end + 2;
  }
  return out;
}

/* Splits a message at the blank line; returns the header block (malloc'd, ends in CRLF) and
 * points *BODY into MSG. */
static char *split_headers(const char *msg, const char **body) {
  const char *sep = strstr(msg, "\r\n\r\n");
  assert_non_null(sep);
  *body = sep + 4;
  return strndup(msg, (size_t)(sep - msg) + 2);
}

/* The unfolded value of header NAME in HEADERS, malloc'd, or NULL. */
static char *header_value(const char *headers, const char *name) {
  size_t nl = strlen(name);
  const char *p = headers;
  while (*p) {
    const char *eol = strstr(p, "\r\n");
    assert_non_null(eol);
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      char *v = calloc(1, strlen(headers) + 1);
      const char *q = p + nl + 1;
      for (;;) {
        strncat(v, q, (size_t)(eol - q));
        if (eol[2] == ' ' || eol[2] == '\t') {
          q = eol + 2;
          eol = strstr(q, "\r\n");
        } else {
          break;
        }
      }
      return v;
    }
    p = eol + 2;
  }
  return NULL;
}

/* Every header line is "Name: value" with a known name, or a folded continuation; every
 * line ends in CRLF with no stray CR or LF; no line exceeds 78 characters. */
static void assert_headers_sane(const char *headers) {
  static const char *const allowed[] = {"From", "To", "Subject", "Date", "Message-ID",
                                        "MIME-Version", "Content-Type",
                                        "Content-Transfer-Encoding", "Content-Language",
                                        "Auto-Submitted", "X-Auto-Response-Suppress",
                                        "X-KPI-Alert-ID"};
  const char *p = headers;
  while (*p) {
    const char *eol = strstr(p, "\r\n");
    assert_non_null(eol);
    for (const char *q = p; q < eol; q++) {
      assert_true(*q != '\r' && *q != '\n');
      assert_true((unsigned char)*q >= 0x20 && (unsigned char)*q < 0x7F);
    }
    assert_true(eol - p <= 78);
    if (*p != ' ' && *p != '\t') {
      const char *colon = memchr(p, ':', (size_t)(eol - p));
      assert_non_null(colon);
      int known = 0;
      for (size_t i = 0; i < ARRAY_LEN(allowed); i++)
        if (strlen(allowed[i]) == (size_t)(colon - p) && strncmp(p, allowed[i], (size_t)(colon - p)) == 0)
          known = 1;
      if (!known) fail_msg("unexpected header line: %.*s", (int)(eol - p), p);
    }
    p = eol + 2;
  }
}

static char *compose(const kpi_alert *const *alerts, size_t n, const char *to) {
  kpi_mail_params p = {.from = "kpi-notifier@city.example",
                       .from_name = "KPI通知 (KPI notifier)",
                       .to = to,
                       .date_ms = DATE_MS,
                       .message_id = "<6f1c2a70-3a5e-4c1e-9a3b-0c8d2f3e4a51@city.example>"};
  char *out = NULL;
  size_t len = 0;
  assert_int_equal(kpi_mail_compose(&p, alerts, n, &out, &len), 0);
  assert_non_null(out);
  assert_int_equal(strlen(out), len);
  return out;
}

/* ---------------------------------------------------------------------------------- */

static void test_address_validation(void **state) {
  (void)state;
  static const struct {
    const char *addr;
    bool ok;
  } cases[] = {
      {"owner@city.example", true},
      {"a.b+tag@sub.city.example", true},
      {"x@y", true},
      {"", false},
      {"no-at-sign", false},
      {"@city.example", false},
      {"owner@", false},
      {"a@b@c", false},
      {"owner@city.example\r\nBcc: evil@x", false},
      {"owner@city.example\n", false},
      {"owner@city.example\r", false},
      {"Owner <owner@city.example>", false},
      {"owner@city.example, evil@x", false},
      {"owner @city.example", false},
      {"own\ter@city.example", false},
      {"owner@city.example;evil@x", false},
      {"\"quoted\"@city.example", false},
      {"持ち主@city.example", false},
      {"owner@.example", false},
      {"owner@city.example.", false},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    if (kpi_mail_address_valid(cases[i].addr) != cases[i].ok)
      fail_msg("address %zu \"%s\": expected %d", i, cases[i].addr, cases[i].ok);
  }
  assert_false(kpi_mail_address_valid(NULL));
  char longaddr[300];
  memset(longaddr, 'a', sizeof(longaddr));
  longaddr[0] = 'b';
  longaddr[100] = '@';
  longaddr[299] = '\0';
  assert_false(kpi_mail_address_valid(longaddr));
}

static void test_encoded_words(void **state) {
  (void)state;
  static const struct {
    const char *text;
    const char *decoded; /* expected after decoding, NULL = same as text */
    size_t min_words;
  } cases[] = {
      {"KPI", NULL, 1},
      {"遅れ", NULL, 1},
      /* 3-byte characters: 39 bytes hold exactly 13 of them. */
      {"あいうえおかきくけこさしすせそたちつてと", NULL, 2},
      {"【KPI 遅れ / lagging】「星の降る里あしべつ応援団」事業の推進と第2期芦別市まち・ひと・しごと"
       "創生総合戦略（改訂版）に基づく住宅リフォーム及び空き家対策補助金交付件数の長い名前",
       NULL, 6},
      /* 4-byte characters (emoji) and mixed widths must not be split either. */
      {"😀😀😀😀😀😀😀😀😀😀a😀éé😀", NULL, 2},
      {"line1\r\nBcc: evil@example.com", "line1  Bcc: evil@example.com", 1},
      {"tab\there\x01\x7f", "tab here  ", 1},
      {"bad \xff\xfe utf8 \xe3\x81", "bad    utf8   ", 1},
      {"sep\xe2\x80\xa8line", "sep line", 1},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char out[2048];
    int n = kpi_mail_encode_words(cases[i].text, out, sizeof(out));
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(out));
    /* Word by word: each at most 75 chars, each decodes to whole UTF-8 characters. */
    size_t words = 0;
    const char *p = out;
    while (*p) {
      assert_memory_equal(p, "=?UTF-8?B?", 10);
      const char *end = strstr(p + 10, "?=");
      assert_non_null(end);
      size_t wlen = (size_t)(end + 2 - p);
      assert_true(wlen <= 75);
      assert_true(strlen("Subject: ") + wlen <= 76);
      char *part = b64_decode(p + 10, (size_t)(end - p - 10));
      assert_true(strlen(part) <= KPI_MAIL_WORD_BYTES);
      assert_true(kpi_json_utf8_valid(part, strlen(part)));
      assert_null(strpbrk(part, "\r\n"));
      free(part);
      words++;
      p = end + 2;
      if (*p) {
        assert_memory_equal(p, "\r\n ", 3);
        p += 3;
      }
    }
    if (words < cases[i].min_words) fail_msg("case %zu: %zu words", i, words);
    char *decoded = decode_words(out);
    assert_string_equal(decoded, cases[i].decoded ? cases[i].decoded : cases[i].text);
    free(decoded);
  }
  /* Too small a buffer is an error, never a truncated word. */
  char tiny[16];
  assert_int_equal(kpi_mail_encode_words("遅れ遅れ遅れ", tiny, sizeof(tiny)), KPI_MAIL_ENOMEM);
  assert_string_equal(tiny, "");
  char empty[4];
  assert_int_equal(kpi_mail_encode_words("", empty, sizeof(empty)), 0);
}

static void test_single_alert_headers_and_body(void **state) {
  (void)state;
  kpi_alert a = sample_alert(ID1, "g2-uiturn-4-supporters", "「星の降る里あしべつ応援団」事業の推進");
  const kpi_alert *list[] = {&a};
  char *msg = compose(list, 1, "owner@city.example");
  const char *body;
  char *headers = split_headers(msg, &body);
  assert_headers_sane(headers);

  char *v = header_value(headers, "To");
  assert_string_equal(v, " <owner@city.example>");
  free(v);
  v = header_value(headers, "Date");
  assert_string_equal(v, " Tue, 01 Oct 2024 09:00:00 +0900");
  free(v);
  v = header_value(headers, "Message-ID");
  assert_string_equal(v, " <6f1c2a70-3a5e-4c1e-9a3b-0c8d2f3e4a51@city.example>");
  free(v);
  v = header_value(headers, "Auto-Submitted");
  assert_string_equal(v, " auto-generated");
  free(v);
  v = header_value(headers, "Content-Type");
  assert_string_equal(v, " text/plain; charset=UTF-8");
  free(v);
  v = header_value(headers, "Content-Transfer-Encoding");
  assert_string_equal(v, " base64");
  free(v);
  v = header_value(headers, "MIME-Version");
  assert_string_equal(v, " 1.0");
  free(v);
  v = header_value(headers, "Subject");
  char *subject = decode_words(v);
  assert_string_equal(subject, "【KPI 遅れ / lagging】「星の降る里あしべつ応援団」事業の推進");
  free(subject);
  free(v);
  v = header_value(headers, "From");
  char *from = decode_words(v);
  assert_string_equal(from, "KPI通知 (KPI notifier)");
  assert_non_null(strstr(v, "<kpi-notifier@city.example>"));
  free(from);
  free(v);

  /* Body lines are base64 of at most 76 characters. */
  for (const char *p = body; *p;) {
    const char *eol = strstr(p, "\r\n");
    assert_non_null(eol);
    assert_true(eol - p <= 76);
    p = eol + 2;
  }
  char *text = b64_decode(body, strlen(body));
  static const char *const expected_lines[] = {
      "第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）\r\n",
      "■ 「星の降る里あしべつ応援団」事業の推進\r\n",
      "  状況: 遅れ\r\n",
      "  前回の通知からの変化: 順調 → 遅れ\r\n",
      "  指標: 登録者数\r\n",
      "  基準値: 24人（令和4年度 (FY2022)）\r\n",
      "  目標値: 50人（令和6年度 (FY2024)）\r\n",
      "  期限: 2025年3月31日\r\n",
      "  現在値: 30人（2024年10月1日 評価）\r\n",
      "  進捗率: 23.1%（期待されるペース: 60.0%）\r\n",
      "  詳細: http://localhost:8081/v1/attainment/g2-uiturn-4-supporters\r\n",
      "  Status: lagging\r\n",
      "  Since the last notice: on track -> lagging\r\n",
      "  Baseline: 24 persons (令和4年度 (FY2022))\r\n",
      "  Target: 50 persons (令和6年度 (FY2024))\r\n",
      "  Deadline: 2025-03-31\r\n",
      "  Current value: 30 persons (evaluated 2024-10-01)\r\n",
      "  Progress: 23.1% (expected pace: 60.0%)\r\n",
      "  Details: http://localhost:8081/v1/attainment/g2-uiturn-4-supporters\r\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(expected_lines); i++)
    if (!strstr(text, expected_lines[i])) fail_msg("body lacks line %zu: %s\n%s", i, expected_lines[i], text);
  /* Japanese first, English after. */
  assert_true(strstr(text, "状況: 遅れ") < strstr(text, "Status: lagging"));
  assert_true(kpi_json_utf8_valid(text, strlen(text)));
  free(text);
  free(headers);
  free(msg);
}

/* Every state's status line, exact, in both languages, with the subject it gives: one
 * wording per state (the label table), no state named twice on a line. */
static void test_status_labels(void **state) {
  (void)state;
  static const struct {
    const char *type, *status, *prev;
    bool stale;
    const char *subject_prefix;
    const char *ja_line, *en_line;
  } cases[] = {
      {"alert", "lagging", "on_track", false, "【KPI 遅れ / lagging】", "\n  状況: 遅れ\n",
       "\n  Status: lagging\n"},
      {"alert", "failed", "lagging", false, "【KPI 未達成 / not achieved】", "\n  状況: 未達成\n",
       "\n  Status: not achieved\n"},
      /* Was "未達成（期限切れ）（未達成（期限切れ）・最新の報告が古くなっています）". */
      {"alert", "failed", "lagging", true, "【KPI 未達成 / not achieved】",
       "\n  状況: 未達成（報告遅延）\n", "\n  Status: not achieved (report overdue)\n"},
      {"alert", "lagging", "lagging", true, "【KPI 遅れ / lagging】", "\n  状況: 遅れ（報告遅延）\n",
       "\n  Status: lagging (report overdue)\n"},
      {"alert", "on_track", "on_track", true, "【KPI 報告遅延 / report overdue】",
       "\n  状況: 報告遅延（順調）\n", "\n  Status: report overdue (on track)\n"},
      {"alert", "achieved", "achieved", true, "【KPI 報告遅延 / report overdue】",
       "\n  状況: 報告遅延（達成）\n", "\n  Status: report overdue (achieved)\n"},
      {"alert", "no_data", "", true, "【KPI 報告遅延 / report overdue】",
       "\n  状況: 報告遅延（未報告）\n", "\n  Status: report overdue (no data)\n"},
      {"resolved", "on_track", "lagging", false, "【KPI 回復 / resolved】",
       "\n  状況: 回復（順調）\n", "\n  Status: resolved (on track)\n"},
      {"resolved", "achieved", "failed", false, "【KPI 回復 / resolved】",
       "\n  状況: 回復（達成）\n", "\n  Status: resolved (achieved)\n"},
      {"reminder", "lagging", "lagging", false, "【KPI 遅れ / lagging・再通知 / reminder】",
       "\n  状況: 遅れ［再通知］\n", "\n  Status: lagging [reminder]\n"},
      {"reminder", "failed", "failed", true, "【KPI 未達成 / not achieved・再通知 / reminder】",
       "\n  状況: 未達成（報告遅延）［再通知］\n", "\n  Status: not achieved (report overdue) [reminder]\n"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    kpi_alert a = sample_alert(ID1, "m1", "施策A");
    strcpy(a.type, cases[i].type);
    strcpy(a.status, cases[i].status);
    strcpy(a.previous_status, cases[i].prev);
    a.stale = cases[i].stale;
    const kpi_alert *list[] = {&a};
    char *subject = kpi_mail_subject(list, 1);
    if (strncmp(subject, cases[i].subject_prefix, strlen(cases[i].subject_prefix)) != 0)
      fail_msg("case %zu subject %s", i, subject);
    char *text = kpi_mail_body_text(list, 1);
    if (!strstr(text, cases[i].ja_line)) fail_msg("case %zu lacks %s:\n%s", i, cases[i].ja_line, text);
    if (!strstr(text, cases[i].en_line)) fail_msg("case %zu lacks %s:\n%s", i, cases[i].en_line, text);
    /* The old words for the same states are gone. */
    assert_null(strstr(text, "報告なし"));
    assert_null(strstr(text, "期限切れ"));
    assert_null(strstr(text, "stale"));
    free(text);
    free(subject);
  }
  /* The change line uses the same words. */
  static const struct {
    const char *type, *status, *prev, *ja, *en;
  } since[] = {
      {"alert", "failed", "lagging", "\n  前回の通知からの変化: 遅れ → 未達成\n",
       "\n  Since the last notice: lagging -> not achieved\n"},
      {"reminder", "lagging", "lagging", "\n  前回の通知からの変化: 変化なし（遅れ のまま）\n",
       "\n  Since the last notice: no change (still lagging)\n"},
      {"alert", "lagging", "", "\n  前回の通知からの変化: 初めての通知です\n",
       "\n  Since the last notice: first notice\n"},
      {"alert", "lagging", "no_data", "\n  前回の通知からの変化: 未報告 → 遅れ\n",
       "\n  Since the last notice: no data -> lagging\n"},
  };
  for (size_t i = 0; i < ARRAY_LEN(since); i++) {
    kpi_alert a = sample_alert(ID1, "m1", "施策A");
    strcpy(a.type, since[i].type);
    strcpy(a.status, since[i].status);
    strcpy(a.previous_status, since[i].prev);
    const kpi_alert *list[] = {&a};
    char *text = kpi_mail_body_text(list, 1);
    if (!strstr(text, since[i].ja)) fail_msg("since %zu lacks %s:\n%s", i, since[i].ja, text);
    if (!strstr(text, since[i].en)) fail_msg("since %zu lacks %s:\n%s", i, since[i].en, text);
    free(text);
  }
}

/* A measure without a value shows "—" for the value and the progress (the API's null), never
 * "0.0%"; the current value carries its observation date beside the evaluation date. */
static void test_no_value_and_dates(void **state) {
  (void)state;
  static const struct {
    bool has_value;
    double value, progress;
    const char *observed, *as_of;
    const char *ja_value, *ja_progress, *en_value, *en_progress;
  } cases[] = {
      {true, 31, 0.2692, "2024-03-31", "2026-11-30",
       "\n  現在値: 31人（2024年3月31日 観測・2026年11月30日 評価）\n",
       "\n  進捗率: 26.9%（期待されるペース: 60.0%）\n",
       "\n  Current value: 31 persons (observed 2024-03-31, evaluated 2026-11-30)\n",
       "\n  Progress: 26.9% (expected pace: 60.0%)\n"},
      /* No reading at all: the record's progress is 0, the mail says nothing instead. */
      {false, 0, 0, "", "2024-10-01", "\n  現在値: —（2024年10月1日 評価）\n",
       "\n  進捗率: —（期待されるペース: 60.0%）\n", "\n  Current value: — (evaluated 2024-10-01)\n",
       "\n  Progress: — (expected pace: 60.0%)\n"},
      /* Readings, but no value (a ratio without a denominator): the last report's date. */
      {false, 0, 0, "2024-09-30", "2024-10-01",
       "\n  現在値: —（2024年9月30日 観測・2024年10月1日 評価）\n",
       "\n  進捗率: —（期待されるペース: 60.0%）\n",
       "\n  Current value: — (observed 2024-09-30, evaluated 2024-10-01)\n",
       "\n  Progress: — (expected pace: 60.0%)\n"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    kpi_alert a = sample_alert(ID1, "m1", "施策");
    a.has_value = cases[i].has_value;
    a.value = cases[i].value;
    a.progress = cases[i].progress;
    strcpy(a.last_observed_day, cases[i].observed);
    strcpy(a.as_of, cases[i].as_of);
    if (!a.has_value) {
      strcpy(a.status, "no_data");
      a.stale = true;
    }
    const kpi_alert *list[] = {&a};
    char *text = kpi_mail_body_text(list, 1);
    const char *want[] = {cases[i].ja_value, cases[i].ja_progress, cases[i].en_value,
                          cases[i].en_progress};
    for (size_t j = 0; j < ARRAY_LEN(want); j++)
      if (!strstr(text, want[j])) fail_msg("case %zu lacks %s:\n%s", i, want[j], text);
    if (!a.has_value) assert_null(strstr(text, "0.0%（"));
    free(text);
  }
}

/* Counts the occurrences of NEEDLE in HAY. */
static size_t count_of(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

/* Two alerts for one measure in one group wait are one entry: its latest state (by episode
 * and created_at, whatever order they come in), the one before as 前回/Previously, the
 * change line through both. */
static void test_digest_merges_measure(void **state) {
  (void)state;
  kpi_alert stale = sample_alert(ID1, "m-one", "施策その一");
  stale.stale = true;
  strcpy(stale.previous_status, "lagging");
  strcpy(stale.created_at, "2024-10-01T00:00:00.000Z");
  kpi_alert failed = sample_alert(ID2, "m-one", "施策その一");
  strcpy(failed.status, "failed");
  strcpy(failed.previous_status, "lagging");
  strcpy(failed.created_at, "2024-10-01T00:00:00.900Z");
  failed.value = 31;
  kpi_alert other = sample_alert(ID3, "m-two", "施策その二");
  const kpi_alert *orders[][3] = {{&stale, &failed, &other}, {&failed, &other, &stale}};
  for (size_t o = 0; o < ARRAY_LEN(orders); o++) {
    char *subject = kpi_mail_subject(orders[o], 3);
    assert_string_equal(subject, "【KPI】施策2件のお知らせ（要対応2件・回復0件）/ KPI notice: 2 "
                                 "measures (2 need attention, 0 resolved)");
    free(subject);
    char *text = kpi_mail_body_text(orders[o], 3);
    static const char *const expected[] = {
        "2件の施策についてお知らせします。",
        "\n  状況: 未達成\n  前回: 遅れ（報告遅延）\n  前回の通知からの変化: 遅れ → 未達成\n",
        "\n  現在値: 31人（",
        "This notice covers 2 measures.",
        "\n  Status: not achieved\n  Previously: lagging (report overdue)\n"
        "  Since the last notice: lagging -> not achieved\n",
        "\n  Current value: 31 persons (",
    };
    for (size_t i = 0; i < ARRAY_LEN(expected); i++)
      if (!strstr(text, expected[i])) fail_msg("order %zu lacks %s:\n%s", o, expected[i], text);
    assert_int_equal(count_of(text, "施策その一"), 2); /* once per language */
    assert_int_equal(count_of(text, "施策その二"), 2);
    assert_int_equal(count_of(text, "前回: "), 1);
    assert_int_equal(count_of(text, "Previously: "), 1);
    free(text);
  }
  /* A value corrected a second later: failed, then resolved. The entry says resolved,
   * previously failed; the pair does not cancel out. */
  kpi_alert bad = sample_alert(ID1, "m-one", "施策その一");
  strcpy(bad.status, "failed");
  strcpy(bad.previous_status, "on_track");
  strcpy(bad.created_at, "2024-10-01T00:00:00.000Z");
  kpi_alert fixed = sample_alert(ID2, "m-one", "施策その一");
  strcpy(fixed.type, "resolved");
  strcpy(fixed.status, "on_track");
  strcpy(fixed.previous_status, "failed");
  strcpy(fixed.created_at, "2024-10-01T00:00:01.000Z");
  const kpi_alert *pair[] = {&fixed, &bad};
  char *subject = kpi_mail_subject(pair, 2);
  assert_string_equal(subject, "【KPI 回復 / resolved】施策その一");
  free(subject);
  char *text = kpi_mail_body_text(pair, 2);
  static const char *const expected[] = {
      "■ 施策その一\n  状況: 回復（順調）\n  前回: 未達成\n"
      "  前回の通知からの変化: 順調 → 未達成 → 順調\n",
      "* 施策その一 [m-one]\n  Status: resolved (on track)\n  Previously: not achieved\n"
      "  Since the last notice: on track -> not achieved -> on track\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(expected); i++)
    if (!strstr(text, expected[i])) fail_msg("pair lacks %s:\n%s", expected[i], text);
  free(text);
  /* Same created_at: a later episode wins; same episode too: the order given. */
  strcpy(fixed.created_at, bad.created_at);
  fixed.episode = 2;
  bad.episode = 1;
  subject = kpi_mail_subject(pair, 2);
  assert_string_equal(subject, "【KPI 回復 / resolved】施策その一");
  free(subject);
  fixed.episode = bad.episode = 1;
  const kpi_alert *given[] = {&fixed, &bad};
  subject = kpi_mail_subject(given, 2);
  assert_string_equal(subject, "【KPI 未達成 / not achieved】施策その一");
  free(subject);
}

/* Data with CR/LF in every field that reaches a header or the body cannot add a header or a
 * body line, and bad addresses are refused outright. */
static void test_header_injection(void **state) {
  (void)state;
  static const char *const names[] = {
      "施策\r\nBcc: evil@example.com",
      "施策\nBcc: evil@example.com",
      "施策\rBcc: evil@example.com",
      "\r\n\r\nInjected body",
      "施策\r\n Subject: continued",
      "=?UTF-8?B?DQpCY2M6IGV2aWxAZXhhbXBsZS5jb20=?=",
      "施策\xc2\x85NEL\xe2\x80\xa8LS",
  };
  for (size_t i = 0; i < ARRAY_LEN(names); i++) {
    kpi_alert a = sample_alert(ID1, "m1\r\nX-Evil: 1", names[i]);
    a.plan_name = (char *)"計画\r\nBcc: plan@example.com";
    a.indicator = (char *)"指標\r\nX-Indicator: 1";
    const kpi_alert *list[] = {&a};
    kpi_mail_params p = {.from = "kpi@city.example", .from_name = "通知\r\nBcc: from@example.com",
                         .to = "owner@city.example", .date_ms = DATE_MS,
                         .message_id = "<x@city.example>"};
    char *msg = NULL;
    size_t len;
    assert_int_equal(kpi_mail_compose(&p, list, 1, &msg, &len), 0);
    const char *body;
    char *headers = split_headers(msg, &body);
    assert_headers_sane(headers);
    assert_null(strstr(headers, "Bcc"));
    assert_null(strstr(headers, "X-Evil"));
    char *subject_raw = header_value(headers, "Subject");
    char *subject = decode_words(subject_raw);
    assert_null(strpbrk(subject, "\r\n"));
    free(subject);
    free(subject_raw);
    /* The body: every decoded line is one the template wrote; the data stays on its line. */
    char *text = b64_decode(body, strlen(body));
    assert_null(strstr(text, "\r\nBcc"));
    assert_null(strstr(text, "\r\nX-Evil"));
    assert_null(strstr(text, "\r\nInjected"));
    assert_null(strstr(text, "\r\n Subject"));
    for (const char *q = text; *q; q++)
      if (*q == '\n') assert_true(q > text && q[-1] == '\r');
    free(text);
    free(headers);
    free(msg);
  }
  /* Addresses and message ids with CR/LF are refused, never escaped. */
  kpi_alert a = sample_alert(ID1, "m1", "施策");
  const kpi_alert *list[] = {&a};
  static const struct {
    const char *from, *to, *msgid;
  } bad[] = {
      {"kpi@city.example", "owner@city.example\r\nBcc: evil@x", "<x@y>"},
      {"kpi@city.example\r\nBcc: evil@x", "owner@city.example", "<x@y>"},
      {"kpi@city.example", "Owner <owner@city.example>", "<x@y>"},
      {"kpi@city.example", "owner@city.example", "<x@y>\r\nBcc: evil@x"},
      {"kpi@city.example", "owner@city.example", "x@y"},
      {"kpi@city.example", "owner@city.example", NULL},
  };
  for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
    kpi_mail_params p = {.from = bad[i].from, .to = bad[i].to, .date_ms = DATE_MS,
                         .message_id = bad[i].msgid};
    char *msg = (char *)1;
    assert_int_equal(kpi_mail_compose(&p, list, 1, &msg, NULL), KPI_MAIL_EINVAL);
    assert_null(msg);
  }
}

static void test_digest(void **state) {
  (void)state;
  kpi_alert a = sample_alert(ID1, "m-one", "施策その一");
  kpi_alert b = sample_alert(ID2, "m-two", "施策その二");
  kpi_alert c = sample_alert(ID3, "m-three", "施策その三");
  strcpy(b.status, "failed");
  strcpy(b.previous_status, "lagging");
  strcpy(c.type, "resolved");
  strcpy(c.status, "achieved");
  strcpy(c.previous_status, "lagging");
  const kpi_alert *list[] = {&a, &b, &c};
  char *msg = compose(list, 3, "owner@city.example");
  const char *body;
  char *headers = split_headers(msg, &body);
  assert_headers_sane(headers);
  assert_null(header_value(headers, "X-KPI-Alert-ID")); /* one id only for one alert */
  char *raw = header_value(headers, "Subject");
  char *subject = decode_words(raw);
  assert_string_equal(subject, "【KPI】施策3件のお知らせ（要対応2件・回復1件）/ KPI notice: 3 measures "
                               "(2 need attention, 1 resolved)");
  free(subject);
  free(raw);
  char *text = b64_decode(body, strlen(body));
  static const char *const expected[] = {
      "3件の施策についてお知らせします。",
      "1. 施策その一\r\n",
      "2. 施策その二\r\n",
      "3. 施策その三\r\n",
      "  状況: 未達成\r\n",
      "  状況: 回復（達成）\r\n",
      "/v1/attainment/m-one\r\n",
      "/v1/attainment/m-two\r\n",
      "/v1/attainment/m-three\r\n",
      "This notice covers 3 measures.",
      "1. 施策その一 [m-one]\r\n",
      "3. 施策その三 [m-three]\r\n",
      "  Status: resolved (achieved)\r\n",
  };
  for (size_t i = 0; i < ARRAY_LEN(expected); i++)
    if (!strstr(text, expected[i])) fail_msg("digest lacks %s:\n%s", expected[i], text);
  /* Order kept: one, two, three. */
  assert_true(strstr(text, "1. 施策その一") < strstr(text, "2. 施策その二"));
  assert_true(strstr(text, "2. 施策その二") < strstr(text, "3. 施策その三"));
  free(text);
  free(headers);
  free(msg);
}

static void test_values_and_units(void **state) {
  (void)state;
  static const struct {
    const char *unit, *kind;
    double value;
    bool has_value;
    const char *ja, *en;
  } cases[] = {
      {"percent", "level", 12.4, true, "現在値: 12.4%（", "Current value: 12.4% ("},
      {"case", "cumulative", 1, true, "現在値: 1件（", "Current value: 1 case ("},
      {"facility", "level", 3.25, true, "現在値: 3.25施設（", "Current value: 3.25 facilities ("},
      {"plan", "milestone", 0, true, "現在値: 未完了（", "Current value: not done ("},
      {"plan", "milestone", 1, true, "現在値: 完了（", "Current value: done ("},
      {"person", "level", 0, false, "現在値: —（", "Current value: — ("},
      {"widgets\r\nX: 1", "level", 5, true, "現在値: 5 widgets  X: 1（", "Current value: 5 widgets  X: 1 ("},
      /* Past 1e15 the value is shown in exponent form; it used to be cut to 63 characters of
       * "%.2f" and then stripped of its "trailing zeros", so 1e300 read "1". */
      {"person", "level", 1e300, true, "現在値: 1e+300人（", "Current value: 1e+300 persons ("},
      {"case", "level", -2.5e70, true, "現在値: -2.5e+70件（", "Current value: -2.5e+70 cases ("},
      {"person", "level", 1.5e15, true, "現在値: 1.5e+15人（", "Current value: 1.5e+15 persons ("},
      {"person", "level", 999999999999999, true, "現在値: 999999999999999人（",
       "Current value: 999999999999999 persons ("},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    kpi_alert a = sample_alert(ID1, "m1", "施策");
    a.unit = (char *)cases[i].unit;
    a.kind = (char *)cases[i].kind;
    a.value = cases[i].value;
    a.has_value = cases[i].has_value;
    const kpi_alert *list[] = {&a};
    char *text = kpi_mail_body_text(list, 1);
    if (!strstr(text, cases[i].ja)) fail_msg("case %zu lacks %s:\n%s", i, cases[i].ja, text);
    if (!strstr(text, cases[i].en)) fail_msg("case %zu lacks %s:\n%s", i, cases[i].en, text);
    free(text);
  }
}

static void test_date_and_message_id(void **state) {
  (void)state;
  char buf[40];
  kpi_mail_date(0, buf, sizeof(buf));
  assert_string_equal(buf, "Thu, 01 Jan 1970 09:00:00 +0900");
  kpi_mail_date(1711897199000LL, buf, sizeof(buf)); /* 2024-03-31T14:59:59Z */
  assert_string_equal(buf, "Sun, 31 Mar 2024 23:59:59 +0900");
  char id[KPI_MAIL_MSGID_MAX];
  assert_int_equal(kpi_mail_message_id(ID1, "kpi@city.example", id, sizeof(id)), 0);
  assert_string_equal(id, "<6f1c2a70-3a5e-5c1e-9a3b-0c8d2f3e4a51@city.example>");
  assert_int_equal(kpi_mail_message_id("not-a-uuid", "kpi@city.example", id, sizeof(id)),
                   KPI_MAIL_EINVAL);
  assert_int_equal(kpi_mail_message_id(ID1, "kpi@city.example\r\n", id, sizeof(id)),
                   KPI_MAIL_EINVAL);
  assert_string_equal(kpi_mail_status_ja("lagging"), "遅れ");
  assert_string_equal(kpi_mail_status_en("failed"), "not achieved");
  assert_string_equal(kpi_mail_status_ja("stale"), "報告遅延");
  assert_string_equal(kpi_mail_status_ja("weird"), "weird");
  assert_null(kpi_mail_subject(NULL, 0));
  assert_null(kpi_mail_body_text(NULL, 0));
}

/* Server replies become printable, valid UTF-8 cut on character boundaries. */
static void test_text_clean(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t len; /* 0: strlen */
    size_t out_size;
    const char *want;
  } cases[] = {
      {"250 2.0.0 Ok: queued as 4711", 0, 256, "250 2.0.0 Ok: queued as 4711"},
      {"250 ok \xff\xfe", 0, 256, "250 ok \xEF\xBF\xBD\xEF\xBF\xBD"},
      {"250 \xc3\x28 x", 0, 256, "250 \xEF\xBF\xBD( x"},         /* bad continuation */
      {"250 \xe3\x81", 0, 256, "250 \xEF\xBF\xBD\xEF\xBF\xBD"},  /* cut character */
      {"250 \xed\xa0\x80", 0, 256, "250 \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
      {"250 \xc0\xaf", 0, 256, "250 \xEF\xBF\xBD\xEF\xBF\xBD"}, /* overlong */
      {"a\r\nb\tc\x7f", 0, 256, "a  b c "},
      {"a\xc2\x85" "b\xe2\x80\xa8" "c", 0, 256, "a b c"},               /* C1 NEL, U+2028 */
      {"a\0b", 3, 256, "a b"},                                        /* NUL is a control */
      {"受付完了", 0, 256, "受付完了"},
      {"受付完了", 0, 7, "受付"},       /* 6 bytes + NUL: a third character does not fit */
      {"受付完了", 0, 3, ""},           /* not even one */
      {"ab\xff", 0, 5, "ab"},          /* U+FFFD needs 3 bytes, only 2 left */
      {"", 0, 1, ""},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char out[256];
    size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
    memset(out, 'X', sizeof(out));
    size_t n = kpi_mail_text_clean(cases[i].in, len, out, cases[i].out_size);
    if (strcmp(out, cases[i].want) != 0)
      fail_msg("case %zu: \"%s\", want \"%s\"", i, out, cases[i].want);
    assert_int_equal(n, strlen(cases[i].want));
    assert_true(kpi_json_utf8_valid(out, n));
  }
  /* Every byte value, every length: always valid UTF-8 without control characters. */
  unsigned char all[256];
  for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
  for (size_t size = 1; size <= 64; size++) {
    char out[64];
    size_t n = kpi_mail_text_clean((const char *)all, sizeof(all), out, size);
    assert_true(n < size);
    assert_true(kpi_json_utf8_valid(out, n));
    for (size_t k = 0; k < n; k++) assert_true((unsigned char)out[k] >= 0x20 && out[k] != 0x7F);
  }
}

/* Addresses quoted in replies are masked before they reach a header or a log. */
static void test_redact_addresses(void **state) {
  (void)state;
  static const struct {
    const char *in;
    size_t out_size;
    const char *want;
  } cases[] = {
      {"550 5.1.1 <owner@city.example>: Recipient address rejected", 256,
       "550 5.1.1 <[address]>: Recipient address rejected"},
      {"smtp: 550 mailbox a@b and c@d unknown", 256, "smtp: 550 mailbox [address] and [address] unknown"},
      {"Couldn't connect to server: Failed to connect to 127.0.0.1 port 9", 256,
       "Couldn't connect to server: Failed to connect to 127.0.0.1 port 9"},
      {"RCPT TO:(x@y.example);", 256, "RCPT TO:([address]);"},
      {"受信者 a@b 不明", 256, "受信者 [address] 不明"},
      {"mail to a@b", 9, "mail to "},     /* the mask does not fit: cut before it */
      {"受信者", 5, "受"},
      {"", 1, ""},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char out[256];
    size_t n = kpi_mail_redact_addresses(cases[i].in, out, cases[i].out_size);
    if (strcmp(out, cases[i].want) != 0)
      fail_msg("case %zu: \"%s\", want \"%s\"", i, out, cases[i].want);
    assert_int_equal(n, strlen(cases[i].want));
    assert_null(strchr(out, '@'));
  }
}

/* The acknowledgement block (docs/notifier.md "The mail"): who wrote it, the Japan date it was
 * received, the note on one line and the quiet period, exact in both languages, right after
 * the change line; a note cannot start a line of its own; an entry shows the latest alert's
 * acknowledgement (or an earlier alert's when the latest has none); none, no block. */
static void test_acknowledgement_block(void **state) {
  (void)state;
  kpi_alert a = sample_alert(ID1, "g2-uiturn-4-supporters", "応援団事業");
  a.acknowledgement.present = true;
  a.acknowledgement.note = (char *)"PR を強化し、12月に説明会を開催します。";
  snprintf(a.acknowledgement.department, sizeof(a.acknowledgement.department), "kikaku");
  a.acknowledgement.department_name = (char *)"企画課";
  /* 15:30 UTC on 30 November is 1 December in Japan. */
  snprintf(a.acknowledgement.acknowledged_at, sizeof(a.acknowledgement.acknowledged_at),
           "2024-11-30T15:30:00.000Z");
  snprintf(a.acknowledgement.until, sizeof(a.acknowledgement.until), "2025-01-31");
  const kpi_alert *list[] = {&a};
  char *text = kpi_mail_body_text(list, 1);
  assert_non_null(text);
  assert_non_null(strstr(text, "  前回の通知からの変化: 順調 → 遅れ\n"
                               "  対応方針（企画課, 2024-12-01）: PR を強化し、12月に説明会を開催します。"
                               "（2025-01-31 まで督促を停止）\n"
                               "  指標: 登録者数\n"));
  assert_non_null(strstr(text, "  Since the last notice: on track -> lagging\n"
                               "  Response plan (企画課, 2024-12-01): PR を強化し、12月に説明会を開催"
                               "します。 (reminders paused until 2025-01-31)\n"
                               "  Indicator: 登録者数\n"));
  free(text);

  /* No name in the catalog: the department id; a note with line breaks stays on its line. */
  a.acknowledgement.department_name = NULL;
  a.acknowledgement.note = (char *)"line one\n  詳細: http://evil.example\r\nline two";
  text = kpi_mail_body_text(list, 1);
  assert_non_null(strstr(text, "  対応方針（kikaku, 2024-12-01）: line one   詳細: "
                               "http://evil.example  line two（2025-01-31 まで督促を停止）\n"));
  assert_null(strstr(text, "\n  詳細: http://evil.example"));
  free(text);

  /* Two alerts of one measure merged: the latest without one shows the earlier one's. */
  kpi_alert b = sample_alert(ID2, "g2-uiturn-4-supporters", "応援団事業");
  strcpy(b.status, "failed");
  strcpy(b.previous_status, "lagging");
  b.episode = 2;
  strcpy(b.created_at, "2024-10-01T00:00:01.000Z");
  const kpi_alert *two[] = {&a, &b};
  text = kpi_mail_body_text(two, 2);
  assert_non_null(strstr(text, "  対応方針（kikaku, 2024-12-01）: line one"));
  free(text);

  /* None: no block in either language. */
  a.acknowledgement.present = false;
  text = kpi_mail_body_text(list, 1);
  assert_null(strstr(text, "対応方針"));
  assert_null(strstr(text, "Response plan"));
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_address_validation),
      cmocka_unit_test(test_encoded_words),
      cmocka_unit_test(test_single_alert_headers_and_body),
      cmocka_unit_test(test_status_labels),
      cmocka_unit_test(test_header_injection),
      cmocka_unit_test(test_digest),
      cmocka_unit_test(test_no_value_and_dates),
      cmocka_unit_test(test_digest_merges_measure),
      cmocka_unit_test(test_values_and_units),
      cmocka_unit_test(test_date_and_message_id),
      cmocka_unit_test(test_text_clean),
      cmocka_unit_test(test_redact_addresses),
      cmocka_unit_test(test_acknowledgement_block),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
