/* kpi_mail.c: the notifier's mails: Japanese/English text, RFC 2047 subjects, base64 MIME body. */
#include "kpi_mail.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "kpi_buf.h"
#include "kpi_json.h"
#include "kpi_time.h"

/* Length of the well-formed UTF-8 sequence at S (at most N bytes available), or 0 when the
 * bytes there are not one: stray continuation bytes, overlongs, surrogates, > U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  return kpi_json_utf8_char_len((const char *)s, n);
}

/* What one character of data becomes in a line of text. */
typedef enum { CH_KEEP, CH_CONTROL, CH_INVALID } ch_class;

/* Classifies the character at S (N bytes available) and sets *LEN to the bytes it spans (1
 * for an invalid byte). C0 controls and DEL, C1 controls (U+0080..U+009F, encoded C2 80..C2
 * 9F) and the Unicode line and paragraph separators (U+2028/2029, E2 80 A8/A9) all break
 * lines in some reader. */
static ch_class classify_char(const unsigned char *s, size_t n, size_t *len) {
  size_t l = utf8_seq_len(s, n);
  *len = l ? l : 1;
  if (l == 0) return CH_INVALID;
  if (s[0] < 0x20 || s[0] == 0x7F) return CH_CONTROL;
  if ((l == 2 && s[0] == 0xC2 && s[1] < 0xA0) ||
      (l == 3 && s[0] == 0xE2 && s[1] == 0x80 && (s[2] == 0xA8 || s[2] == 0xA9)))
    return CH_CONTROL;
  return CH_KEEP;
}

/* Appends TEXT to B as one line of text: control characters (CR and LF among them) and
 * invalid UTF-8 become spaces. Data never starts a new line, in a header or in the body,
 * so a measure name cannot forge a "詳細:" line or a header. NULL appends DEF. */
static void buf_add_clean(kpi_buf *b, const char *text, const char *def) {
  if (!text) text = def;
  const unsigned char *s = (const unsigned char *)text;
  size_t n = strlen(text);
  for (size_t i = 0; i < n;) {
    size_t len;
    if (classify_char(s + i, n - i, &len) == CH_KEEP) kpi_buf_add(b, (const char *)s + i, len);
    else kpi_buf_add(b, " ", 1);
    i += len;
  }
}

size_t kpi_mail_text_clean(const char *text, size_t len, char *out, size_t out_size) {
  static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */
  const unsigned char *s = (const unsigned char *)text;
  size_t o = 0;
  for (size_t i = 0; text && i < len;) {
    size_t l;
    ch_class c = classify_char(s + i, len - i, &l);
    const char *put = c == CH_KEEP ? text + i : c == CH_CONTROL ? " " : REPLACEMENT;
    size_t put_len = c == CH_KEEP ? l : c == CH_CONTROL ? 1 : sizeof(REPLACEMENT) - 1;
    if (o + put_len + 1 > out_size) break; /* the whole character or nothing */
    memcpy(out + o, put, put_len);
    o += put_len;
    i += l;
  }
  out[o] = '\0';
  return o;
}

size_t kpi_mail_redact_addresses(const char *text, char *out, size_t out_size) {
  static const char MASK[] = "[address]";
  static const char DELIMS[] = " \t\r\n<>()[],;:\"'";
  size_t n = text ? strlen(text) : 0, o = 0;
  for (size_t i = 0; i < n;) {
    if (!strchr(DELIMS, text[i])) {
      size_t w = strcspn(text + i, DELIMS);
      if (memchr(text + i, '@', w)) {
        if (o + sizeof(MASK) > out_size) break;
        memcpy(out + o, MASK, sizeof(MASK) - 1);
        o += sizeof(MASK) - 1;
        i += w;
        continue;
      }
    }
    size_t l = utf8_seq_len((const unsigned char *)text + i, n - i);
    if (l == 0) l = 1;
    if (o + l + 1 > out_size) break;
    memcpy(out + o, text + i, l);
    o += l;
    i += l;
  }
  out[o] = '\0';
  return o;
}

bool kpi_mail_address_valid(const char *addr) {
  if (!addr) return false;
  size_t n = strlen(addr);
  if (n < 3 || n > KPI_MAIL_ADDR_MAX) return false;
  const char *at = strchr(addr, '@');
  if (!at || at == addr || at[1] == '\0' || strchr(at + 1, '@')) return false;
  for (const unsigned char *p = (const unsigned char *)addr; *p; p++) {
    if (*p <= 0x20 || *p >= 0x7F) return false;
    if (strchr("<>,;\"()\\[]:", *p)) return false;
  }
  if (at[1] == '.' || addr[n - 1] == '.') return false;
  return true;
}

static void base64(kpi_buf *b, const unsigned char *in, size_t n) {
  size_t out = 4 * ((n + 2) / 3);
  if (kpi_buf_reserve(b, out) != 0) return;
  int w = EVP_EncodeBlock((unsigned char *)b->s + b->len, in, (int)n);
  b->len += (size_t)w;
  b->s[b->len] = '\0';
}

/* Appends encoded words for TEXT (already clean, valid UTF-8) to B. */
static void encode_words(kpi_buf *b, const char *text) {
  const unsigned char *s = (const unsigned char *)text;
  size_t n = strlen(text);
  size_t i = 0;
  int first = 1;
  while (i < n) {
    size_t take = 0;
    while (i + take < n) {
      size_t len = utf8_seq_len(s + i + take, n - i - take);
      if (len == 0) len = 1; /* cannot happen for clean text; keeps the loop finite */
      if (take + len > KPI_MAIL_WORD_BYTES) break;
      take += len;
    }
    if (!first) kpi_buf_adds(b, "\r\n ");
    kpi_buf_adds(b, "=?UTF-8?B?");
    base64(b, s + i, take);
    kpi_buf_adds(b, "?=");
    i += take;
    first = 0;
  }
}

int kpi_mail_encode_words(const char *text, char *out, size_t out_size) {
  kpi_buf clean = KPI_BUF_INIT, enc = KPI_BUF_INIT;
  buf_add_clean(&clean, text, "");
  if (!clean.oom && clean.s) encode_words(&enc, clean.s);
  int rc;
  if (clean.oom || enc.oom) {
    rc = KPI_MAIL_ENOMEM;
  } else if (enc.len + 1 > out_size) {
    rc = KPI_MAIL_ENOMEM;
  } else {
    if (enc.len) memcpy(out, enc.s, enc.len);
    out[enc.len] = '\0';
    rc = (int)enc.len;
  }
  if (rc < 0 && out_size > 0) out[0] = '\0';
  free(clean.s);
  free(enc.s);
  return rc;
}

int kpi_mail_message_id(const char *uuid, const char *from, char *out, size_t out_size) {
  if (!uuid || kpi_uuid_parse(uuid, NULL) != 0 || !kpi_mail_address_valid(from))
    return KPI_MAIL_EINVAL;
  int n = snprintf(out, out_size, "<%s@%s>", uuid, strchr(from, '@') + 1);
  return n > 0 && (size_t)n < out_size ? 0 : KPI_MAIL_EINVAL;
}

void kpi_mail_date(int64_t ms, char *out, size_t out_size) {
  static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int64_t secs = ms / 1000 + KPI_TZ_OFFSET_MIN * 60;
  if (ms < 0 && ms % 1000) secs--;
  time_t t = (time_t)secs;
  struct tm tm;
  gmtime_r(&t, &tm);
  snprintf(out, out_size, "%s, %02d %s %04d %02d:%02d:%02d +%02d%02d", days[tm.tm_wday],
           tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
           KPI_TZ_OFFSET_MIN / 60, KPI_TZ_OFFSET_MIN % 60);
}

/* Labels ------------------------------------------------------------------------------ */

/* The one wording of every state a mail names (docs/notifier.md "The mail"): the five
 * statuses, the stale flag and a recovery. The subject, the status line, the "previously"
 * line and the change line all take their words from this table, so that a state reads the
 * same everywhere in a mail and each language has one word for it. The words are the report
 * pages' (docs/report.md), in lower case in English because they stand inside sentences. */
static const struct {
  const char *state, *ja, *en;
} state_labels[] = {
    {"no_data", "未報告", "no data"},
    {"on_track", "順調", "on track"},
    {"lagging", "遅れ", "lagging"},
    {"achieved", "達成", "achieved"},
    {"failed", "未達成", "not achieved"},
    {"stale", "報告遅延", "report overdue"},
    {"resolved", "回復", "resolved"},
};

/* What the mail shows where there is no value (no reading, no progress, no fiscal year). */
static const char NONE[] = "—";

static int state_index(const char *state) {
  for (size_t i = 0; state && i < sizeof(state_labels) / sizeof(state_labels[0]); i++)
    if (strcmp(state, state_labels[i].state) == 0) return (int)i;
  return -1;
}

const char *kpi_mail_status_ja(const char *status) {
  int i = state_index(status);
  return i >= 0 ? state_labels[i].ja : (status ? status : "");
}

const char *kpi_mail_status_en(const char *status) {
  int i = state_index(status);
  return i >= 0 ? state_labels[i].en : (status ? status : "");
}

static bool is_resolved(const kpi_alert *a) { return strcmp(a->type, "resolved") == 0; }
static bool is_reminder(const kpi_alert *a) { return strcmp(a->type, "reminder") == 0; }

/* The state an alert is mainly about, the one its subject names: "resolved" for a recovery,
 * "stale" when the measure is only overdue (neither lagging nor failed), else its status. */
static const char *headline_state(const kpi_alert *a) {
  if (is_resolved(a)) return "resolved";
  if (a->stale && strcmp(a->status, "lagging") != 0 && strcmp(a->status, "failed") != 0)
    return "stale";
  return a->status;
}

/* Digest entries ------------------------------------------------------------------------ */

/* The alerts of one mail as entries, one per measure (docs/notifier.md "Grouping"): ORDER
 * holds the alerts grouped by entry, entries in the order their measure first appears, and
 * each entry's alerts in the order they were raised, so entry I is ORDER[START[I] ..
 * START[I] + COUNT[I]) and its last alert is the measure's latest state. */
typedef struct {
  size_t n;
  size_t *start, *count;
  const kpi_alert **order;
} mail_entries;

/* True when A was raised before B: a lower episode (episodes only grow), else an earlier
 * created_at (the evaluator's clock). Equal or unreadable keys keep the claim order, which
 * follows the measure's Kafka partition. */
static bool raised_before(const kpi_alert *a, const kpi_alert *b) {
  if (a->episode != b->episode) return a->episode < b->episode;
  int64_t ta, tb;
  if (kpi_time_parse(a->created_at, &ta, NULL) != 0 ||
      kpi_time_parse(b->created_at, &tb, NULL) != 0)
    return false;
  return ta < tb;
}

static void entries_free(mail_entries *e) {
  free(e->start);
  free(e->count);
  free(e->order);
  memset(e, 0, sizeof(*e));
}

/* Groups ALERTS[0..N) into E (release with entries_free). Returns 0, or -1 out of memory. */
static int entries_build(mail_entries *e, const kpi_alert *const *alerts, size_t n) {
  memset(e, 0, sizeof(*e));
  size_t *entry_of = malloc(n * sizeof(*entry_of)), *first = malloc(n * sizeof(*first));
  e->start = calloc(n, sizeof(*e->start));
  e->count = calloc(n, sizeof(*e->count));
  e->order = calloc(n, sizeof(*e->order));
  if (!entry_of || !first || !e->start || !e->count || !e->order) {
    free(entry_of);
    free(first);
    entries_free(e);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    size_t k = 0;
    while (k < e->n && strcmp(alerts[first[k]]->measure_id, alerts[i]->measure_id) != 0) k++;
    if (k == e->n) first[e->n++] = i;
    entry_of[i] = k;
    e->count[k]++;
  }
  for (size_t k = 1; k < e->n; k++) e->start[k] = e->start[k - 1] + e->count[k - 1];
  size_t *filled = first; /* reused: alerts placed so far per entry */
  memset(filled, 0, n * sizeof(*filled));
  for (size_t i = 0; i < n; i++) {
    size_t k = entry_of[i], lo = e->start[k], j = lo + filled[k]++;
    while (j > lo && raised_before(alerts[i], e->order[j - 1])) {
      e->order[j] = e->order[j - 1];
      j--;
    }
    e->order[j] = alerts[i];
  }
  free(entry_of);
  free(first);
  return 0;
}

static const kpi_alert *entry_latest(const mail_entries *e, size_t k) {
  return e->order[e->start[k] + e->count[k] - 1];
}

/* Units: Japanese counters follow the number ("24人"); English gets a word ("24 persons"). */
static const struct {
  const char *unit, *ja, *en_one, *en_many;
} unit_labels[] = {
    {"person", "人", " person", " persons"},   {"case", "件", " case", " cases"},
    {"school", "校", " school", " schools"},   {"facility", "施設", " facility", " facilities"},
    {"percent", "%", "%", "%"},                {"plan", "件", " plan", " plans"},
};

static void add_number(kpi_buf *b, double v) {
  if (!isfinite(v)) {
    kpi_buf_adds(b, NONE);
    return;
  }
  char buf[64];
  if (fabs(v) >= 1e15) {
    /* "%.2f" would need up to 312 characters here: a truncated copy stripped of its
     * "trailing zeros" once showed 1e300 as "1". No plan counts this high; an exponent at
     * least shows a typo for what it is. */
    snprintf(buf, sizeof(buf), "%.15g", v);
  } else if (fabs(v - round(v)) < 1e-9) {
    snprintf(buf, sizeof(buf), "%.0f", round(v));
  } else {
    snprintf(buf, sizeof(buf), "%.2f", v);
    char *e = buf + strlen(buf) - 1;
    while (*e == '0') *e-- = '\0';
    if (*e == '.') *e = '\0';
  }
  if (strcmp(buf, "-0") == 0) strcpy(buf, "0");
  kpi_buf_adds(b, buf);
}

static bool is_milestone(const kpi_alert *a) { return a->kind && strcmp(a->kind, "milestone") == 0; }

static void add_quantity(kpi_buf *b, const kpi_alert *a, double v, bool ja) {
  if (is_milestone(a)) {
    kpi_buf_adds(b, v >= 1 ? (ja ? "完了" : "done") : (ja ? "未完了" : "not done"));
    return;
  }
  add_number(b, v);
  for (size_t i = 0; a->unit && i < sizeof(unit_labels) / sizeof(unit_labels[0]); i++) {
    if (strcmp(a->unit, unit_labels[i].unit) == 0) {
      kpi_buf_adds(b, ja ? unit_labels[i].ja : (v == 1 ? unit_labels[i].en_one : unit_labels[i].en_many));
      return;
    }
  }
  if (a->unit && *a->unit) {
    kpi_buf_adds(b, " ");
    buf_add_clean(b, a->unit, "");
  }
}

static void add_fy(kpi_buf *b, int fy) {
  char buf[40];
  if (fy <= 0) {
    kpi_buf_adds(b, NONE);
    return;
  }
  kpi_fy_format(fy, buf, sizeof(buf));
  kpi_buf_adds(b, buf);
}

static void add_percent(kpi_buf *b, double ratio) {
  if (!isfinite(ratio)) {
    kpi_buf_adds(b, NONE);
    return;
  }
  kpi_buf_addf(b, "%.1f%%", ratio * 100.0);
}

/* The deadline: the alert's due date, else the end of its target fiscal year. */
static void due_ymd(const kpi_alert *a, int *y, int *m, int *d) {
  *y = *m = *d = 0;
  if (sscanf(a->due, "%4d-%2d-%2d", y, m, d) == 3) return;
  if (a->target_fy > 0) kpi_day_to_ymd(kpi_fy_last_day(a->target_fy), y, m, d);
}

static void add_url(kpi_buf *b, const kpi_alert *a) {
  buf_add_clean(b, a->dashboard_url, "");
  size_t n = a->dashboard_url ? strlen(a->dashboard_url) : 0;
  if (n == 0 || a->dashboard_url[n - 1] != '/') kpi_buf_adds(b, "/");
  buf_add_clean(b, a->measure_id, "");
}

/* A figure of a catalog change, as the mail shows it: a fiscal year in both notations, a
 * quantity with its unit. */
static void add_change_figure(kpi_buf *b, const kpi_alert *a, const char *field, double v,
                              bool ja) {
  if (strstr(field, "_fy")) add_fy(b, isfinite(v) && fabs(v) < 1e6 ? (int)v : 0);
  else add_quantity(b, a, v, ja);
}

/* The note of a catalog change (docs/evaluator.md "Catalog versions"), one line in the language
 * JA: "  計画の変更: 目標値が 80% から 90% に変更されました（カタログ v1 → v2）" or "  Plan
 * change: Target changed from 80% to 90% (catalog v1 → v2)". Nothing without a change. */
static void add_catalog_change(kpi_buf *b, const kpi_alert *a, bool ja) {
  static const struct {
    const char *field, *ja, *en;
  } labels[] = {{"target", "目標値", "Target"},
                {"target_fy", "目標年度", "Target year"},
                {"baseline", "基準値", "Baseline"},
                {"baseline_fy", "基準年度", "Baseline year"}};
  const kpi_catalog_change *c = &a->catalog_change;
  if (!c->present || c->n_changes == 0) return;
  kpi_buf_adds(b, ja ? "\n  計画の変更: " : "\n  Plan change: ");
  for (size_t i = 0; i < c->n_changes && i < KPI_CATALOG_CHANGES_MAX; i++) {
    const kpi_catalog_field_change *fc = &c->changes[i];
    const char *label = fc->field;
    for (size_t k = 0; k < sizeof(labels) / sizeof(labels[0]); k++)
      if (strcmp(fc->field, labels[k].field) == 0) label = ja ? labels[k].ja : labels[k].en;
    if (i > 0) kpi_buf_adds(b, ja ? "、" : "; ");
    kpi_buf_adds(b, label);
    kpi_buf_adds(b, ja ? "が " : " changed from ");
    add_change_figure(b, a, fc->field, fc->from, ja);
    kpi_buf_adds(b, ja ? " から " : " to ");
    add_change_figure(b, a, fc->field, fc->to, ja);
    if (ja) kpi_buf_adds(b, " に");
  }
  kpi_buf_addf(b, ja ? "変更されました（カタログ v%d → v%d）" : " (catalog v%d → v%d)",
               c->previous_version, c->version);
}

/* One language's words of the body, so that both languages go through one renderer and
 * differ only in data. Members ending in _fmt are printf formats with the arguments noted. */
typedef struct {
  bool ja;                          /* Japanese counters and milestone words (add_quantity) */
  const char *(*label)(const char *state); /* kpi_mail_status_ja or _en */
  const char *intro;                /* opening line(s) of the language's part */
  const char *count_fmt;            /* %zu: measures, when more than one */
  const char *bullet;               /* before the name of a lone measure */
  const char *unnamed;              /* a measure without a name */
  bool show_id;                     /* " [measure_id]" after the name */
  const char *status_label, *previously_label;
  const char *open, *sep, *close;   /* parentheses around asides, and between two of them */
  const char *reminder;
  const char *since_label, *first_notice;
  const char *no_change_fmt;        /* %s: status */
  const char *arrow;                /* between two states of a change */
  const char *indicator_label, *baseline_label, *target_label, *deadline_label;
  bool ja_date;                     /* 2025年3月31日 rather than 2025-03-31 */
  const char *current_label;
  const char *observed_fmt, *evaluated_fmt; /* %s: a date */
  const char *progress_label, *pace_open;
  const char *details_label;
  const char *ack_label;     /* before the acknowledgement's writer and date */
  const char *ack_open, *ack_sep, *ack_close; /* around "企画課, 2024-12-01" */
  const char *ack_until_fmt; /* %s: the last day of the quiet period */
  const char *footer;
} mail_words;

static const mail_words words_ja = {
    .ja = true, .label = kpi_mail_status_ja,
    .intro = "KPI 進捗のお知らせ（English follows）\n\n",
    .count_fmt = "%zu件の施策についてお知らせします。\n\n",
    .bullet = "■ ", .unnamed = "(名称なし)", .show_id = false,
    .status_label = "\n  状況: ", .previously_label = "\n  前回: ",
    .open = "（", .sep = "・", .close = "）", .reminder = "［再通知］",
    .since_label = "\n  前回の通知からの変化: ", .first_notice = "初めての通知です",
    .no_change_fmt = "変化なし（%s のまま）", .arrow = " → ",
    .indicator_label = "\n  指標: ", .baseline_label = "\n  基準値: ",
    .target_label = "\n  目標値: ", .deadline_label = "\n  期限: ", .ja_date = true,
    .current_label = "\n  現在値: ", .observed_fmt = "%s 観測", .evaluated_fmt = "%s 評価",
    .progress_label = "\n  進捗率: ", .pace_open = "（期待されるペース: ",
    .details_label = "  詳細: ",
    .ack_label = "\n  対応方針", .ack_open = "（", .ack_sep = ", ", .ack_close = "）: ",
    .ack_until_fmt = "（%s まで督促を停止）",
    .footer = "このメールは KPI 進捗管理システムから自動送信されています。返信はできません。\n",
};

static const mail_words words_en = {
    .ja = false, .label = kpi_mail_status_en,
    .intro = "KPI progress notice\n\n",
    .count_fmt = "This notice covers %zu measures.\n\n",
    .bullet = "* ", .unnamed = "(unnamed)", .show_id = true,
    .status_label = "\n  Status: ", .previously_label = "\n  Previously: ",
    .open = " (", .sep = ", ", .close = ")", .reminder = " [reminder]",
    .since_label = "\n  Since the last notice: ", .first_notice = "first notice",
    .no_change_fmt = "no change (still %s)", .arrow = " -> ",
    .indicator_label = "\n  Indicator: ", .baseline_label = "\n  Baseline: ",
    .target_label = "\n  Target: ", .deadline_label = "\n  Deadline: ", .ja_date = false,
    .current_label = "\n  Current value: ", .observed_fmt = "observed %s",
    .evaluated_fmt = "evaluated %s",
    .progress_label = "\n  Progress: ", .pace_open = " (expected pace: ",
    .details_label = "  Details: ",
    .ack_label = "\n  Response plan", .ack_open = " (", .ack_sep = ", ", .ack_close = "): ",
    .ack_until_fmt = " (reminders paused until %s)",
    .footer = "This message was sent automatically by the KPI tracking system; replies are not "
              "read.\n",
};

/* The formats come from the two tables above, never from data. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"

/* A quantity and, in parentheses, its fiscal year: "24人（2022年度）". */
static void add_quantity_fy(kpi_buf *b, const mail_words *w, const kpi_alert *a, double v,
                            int fy) {
  add_quantity(b, a, v, w->ja);
  kpi_buf_adds(b, w->open);
  add_fy(b, fy);
  kpi_buf_adds(b, w->close);
}

/* A date in W's notation ("2025年3月31日", "2025-03-31"), "—" when Y is 0. */
static void add_ymd(kpi_buf *b, const mail_words *w, int y, int m, int d) {
  if (!y) kpi_buf_adds(b, NONE);
  else if (w->ja_date) kpi_buf_addf(b, "%d年%d月%d日", y, m, d);
  else kpi_buf_addf(b, "%04d-%02d-%02d", y, m, d);
}

/* The "YYYY-MM-DD" date YMD (checked by the decoder) in W's notation, put through FMT. */
static void add_day(kpi_buf *b, const mail_words *w, const char *fmt, const char *ymd) {
  int y = 0, m = 0, d = 0;
  if (sscanf(ymd, "%4d-%2d-%2d", &y, &m, &d) != 3) y = 0;
  kpi_buf day = KPI_BUF_INIT;
  add_ymd(&day, w, y, m, d);
  kpi_buf_addf(b, fmt, day.s ? day.s : NONE);
  if (day.oom) b->oom = 1;
  free(day.s);
}

/* An alert's state in W's words: its headline state, then in parentheses what else holds
 * (the status a recovery reached, an overdue report), each word once: "未達成（報告遅延）",
 * "回復（順調）", "report overdue (on track)". */
static void add_state(kpi_buf *b, const mail_words *w, const kpi_alert *a) {
  const char *head = headline_state(a), *aside[2];
  size_t n = 0;
  if (strcmp(head, a->status) != 0) aside[n++] = a->status;
  if (a->stale && strcmp(head, "stale") != 0) aside[n++] = "stale";
  kpi_buf_adds(b, w->label(head));
  for (size_t i = 0; i < n; i++) {
    kpi_buf_adds(b, i ? w->sep : w->open);
    kpi_buf_adds(b, w->label(aside[i]));
  }
  if (n) kpi_buf_adds(b, w->close);
}

/* What changed since the last notice, for an entry's alerts ITEMS[0..K) in the order raised:
 * the status before the first of them, then each status they reached, repeats dropped
 * ("順調 → 未達成 → 順調"); one status alone is the first notice or "no change". */
static void add_since(kpi_buf *b, const mail_words *w, const kpi_alert *const *items, size_t k) {
  const char *first = items[0]->previous_status[0] ? items[0]->previous_status : NULL;
  const char *last = first;
  size_t steps = first ? 1 : 0;
  for (size_t i = 0; i < k; i++) {
    if (last && strcmp(last, items[i]->status) == 0) continue;
    last = items[i]->status;
    steps++;
  }
  kpi_buf_adds(b, w->since_label);
  if (steps == 1 && !first) {
    kpi_buf_adds(b, w->first_notice);
    return;
  }
  if (steps == 1) {
    kpi_buf_addf(b, w->no_change_fmt, w->label(first));
    return;
  }
  last = first;
  if (first) kpi_buf_adds(b, w->label(first));
  for (size_t i = 0; i < k; i++) {
    if (last && strcmp(last, items[i]->status) == 0) continue;
    if (last) kpi_buf_adds(b, w->arrow);
    last = items[i]->status;
    kpi_buf_adds(b, w->label(last));
  }
}

/* The current value with the date it was observed and the date it was evaluated:
 * "31人（2024年3月31日 観測・2026年11月30日 評価）"; "—" without a value, and no observation
 * date when the record carries none. */
static void add_current(kpi_buf *b, const mail_words *w, const kpi_alert *a) {
  kpi_buf_adds(b, w->current_label);
  if (a->has_value) add_quantity(b, a, a->value, w->ja);
  else kpi_buf_adds(b, NONE);
  kpi_buf_adds(b, w->open);
  if (a->last_observed_day[0]) {
    add_day(b, w, w->observed_fmt, a->last_observed_day);
    kpi_buf_adds(b, w->sep);
  }
  add_day(b, w, w->evaluated_fmt, a->as_of);
  kpi_buf_adds(b, w->close);
}

/* The measure's numbers, from its latest alert A: indicator, baseline, target, deadline,
 * current value, progress (the record's progress is 0 without a value, so "—" then; the
 * evaluator's has_progress is has_value) and the expected pace. */
static void add_figures(kpi_buf *b, const mail_words *w, const kpi_alert *a) {
  kpi_buf_adds(b, w->indicator_label);
  buf_add_clean(b, a->indicator, NONE);
  kpi_buf_adds(b, w->baseline_label);
  add_quantity_fy(b, w, a, a->baseline, a->baseline_fy);
  kpi_buf_adds(b, w->target_label);
  add_quantity_fy(b, w, a, a->target, a->target_fy);
  int y, m, d;
  due_ymd(a, &y, &m, &d);
  kpi_buf_adds(b, w->deadline_label);
  add_ymd(b, w, y, m, d);
  add_current(b, w, a);
  kpi_buf_adds(b, w->progress_label);
  if (a->has_value) add_percent(b, a->progress);
  else kpi_buf_adds(b, NONE);
  kpi_buf_adds(b, w->pace_open);
  add_percent(b, a->expected);
  kpi_buf_adds(b, w->close);
}

/* The measure's latest acknowledgement, from the latest of the entry's alerts ITEMS[0..K)
 * that carries one (docs/corrections.md "Reminders and acknowledgements"): who wrote it (the
 * department's name, else its id), the Japan date it was received, the note on the same line
 * (data never starts a line) and the quiet period asked for:
 * "  対応方針（企画課, 2024-12-01）: …（2025-01-31 まで督促を停止）",
 * "  Response plan (企画課, 2024-12-01): … (reminders paused until 2025-01-31)".
 * Nothing when none carries one. */
static void add_acknowledgement(kpi_buf *b, const mail_words *w, const kpi_alert *const *items,
                                size_t k) {
  const kpi_alert_ack *ack = NULL;
  for (size_t i = k; i-- > 0 && !ack;)
    if (items[i]->acknowledgement.present) ack = &items[i]->acknowledgement;
  if (!ack) return;
  int64_t ms = 0;
  char day[16] = "";
  if (kpi_time_parse(ack->acknowledged_at, &ms, NULL) == 0)
    kpi_day_format(kpi_day_of_ms(ms), day, sizeof(day));
  kpi_buf_adds(b, w->ack_label);
  kpi_buf_adds(b, w->ack_open);
  buf_add_clean(b, ack->department_name && *ack->department_name ? ack->department_name
                                                                  : ack->department, "");
  if (day[0]) {
    kpi_buf_adds(b, w->ack_sep);
    kpi_buf_adds(b, day);
  }
  kpi_buf_adds(b, w->ack_close);
  buf_add_clean(b, ack->note, "");
  kpi_buf_addf(b, w->ack_until_fmt, ack->until);
}

/* One measure's block of the body, in the language of W: the entry ITEMS[0..K) (its alerts
 * in the order raised) shown by its latest state, the one before it as "previously". */
static void add_block(kpi_buf *b, const mail_words *w, const kpi_alert *const *items, size_t k,
                      size_t index, size_t n) {
  const kpi_alert *a = items[k - 1];
  if (n > 1) kpi_buf_addf(b, "%zu. ", index + 1);
  else kpi_buf_adds(b, w->bullet);
  buf_add_clean(b, a->measure_name, w->unnamed);
  if (w->show_id) {
    kpi_buf_adds(b, " [");
    buf_add_clean(b, a->measure_id, "");
    kpi_buf_adds(b, "]");
  }
  kpi_buf_adds(b, w->status_label);
  add_state(b, w, a);
  if (is_reminder(a)) kpi_buf_adds(b, w->reminder);
  if (k > 1) {
    kpi_buf_adds(b, w->previously_label);
    add_state(b, w, items[k - 2]);
  }
  add_since(b, w, items, k);
  add_catalog_change(b, a, w->ja);
  add_acknowledgement(b, w, items, k);
  add_figures(b, w, a);
  kpi_buf_adds(b, "\n");
  if (a->dashboard_url && *a->dashboard_url) {
    kpi_buf_adds(b, w->details_label);
    add_url(b, a);
    kpi_buf_adds(b, "\n");
  }
  kpi_buf_adds(b, "\n");
}

/* One language's part of the body: intro, a block per entry, footer. */
static void add_part(kpi_buf *b, const mail_words *w, const mail_entries *e) {
  kpi_buf_adds(b, w->intro);
  if (e->n > 1) kpi_buf_addf(b, w->count_fmt, e->n);
  for (size_t i = 0; i < e->n; i++)
    add_block(b, w, e->order + e->start[i], e->count[i], i, e->n);
  kpi_buf_adds(b, w->footer);
}

#pragma GCC diagnostic pop

/* The plan named by the alerts: the first one that names one. */
static const char *plan_of(const kpi_alert *const *alerts, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (alerts[i]->plan_name && *alerts[i]->plan_name) return alerts[i]->plan_name;
  return NULL;
}

char *kpi_mail_subject(const kpi_alert *const *alerts, size_t n) {
  mail_entries e;
  if (n == 0 || !alerts || entries_build(&e, alerts, n) != 0) return NULL;
  kpi_buf b = KPI_BUF_INIT;
  if (e.n == 1) {
    const kpi_alert *a = entry_latest(&e, 0);
    const char *head = headline_state(a);
    kpi_buf_addf(&b, "【KPI %s / %s", kpi_mail_status_ja(head), kpi_mail_status_en(head));
    if (is_reminder(a)) kpi_buf_adds(&b, "・再通知 / reminder");
    kpi_buf_adds(&b, "】");
    buf_add_clean(&b, a->measure_name, a->measure_id);
  } else {
    size_t alerting = 0, resolved = 0;
    for (size_t k = 0; k < e.n; k++) {
      if (is_resolved(entry_latest(&e, k))) resolved++;
      else alerting++;
    }
    kpi_buf_addf(&b, "【KPI】施策%zu件のお知らせ（要対応%zu件・回復%zu件）/ KPI notice: %zu measures "
                "(%zu need attention, %zu resolved)",
                e.n, alerting, resolved, e.n, alerting, resolved);
  }
  entries_free(&e);
  return kpi_buf_detach(&b, NULL);
}

char *kpi_mail_body_text(const kpi_alert *const *alerts, size_t n) {
  mail_entries e;
  if (n == 0 || !alerts || entries_build(&e, alerts, n) != 0) return NULL;
  kpi_buf b = KPI_BUF_INIT;
  const char *plan = plan_of(alerts, n);
  if (plan) {
    buf_add_clean(&b, plan, "");
    kpi_buf_adds(&b, "\n");
  }
  add_part(&b, &words_ja, &e);
  kpi_buf_adds(&b, "\n----------------------------------------------------------------\n\n");
  add_part(&b, &words_en, &e);
  entries_free(&e);
  return kpi_buf_detach(&b, NULL);
}

/* Appends the base64 of TEXT in lines of 76 characters (RFC 2045 §6.8), CRLF-terminated. */
static void base64_lines(kpi_buf *b, const char *text, size_t n) {
  for (size_t i = 0; i < n; i += 57) {
    size_t take = n - i < 57 ? n - i : 57;
    base64(b, (const unsigned char *)text + i, take);
    kpi_buf_adds(b, "\r\n");
  }
}

/* The body with "\n" line ends turned into CRLF: the canonical form of text (RFC 2046
 * §4.1.1), which is what base64 must carry. */
static char *crlf_text(const char *text) {
  kpi_buf b = KPI_BUF_INIT;
  for (const char *p = text; *p; p++) {
    if (*p == '\n') kpi_buf_add(&b, "\r\n", 2);
    else kpi_buf_add(&b, p, 1);
  }
  return kpi_buf_detach(&b, NULL);
}

int kpi_mail_compose(const kpi_mail_params *p, const kpi_alert *const *alerts, size_t n,
                     char **out, size_t *out_len) {
  *out = NULL;
  if (out_len) *out_len = 0;
  if (!p || n == 0 || !alerts || !kpi_mail_address_valid(p->from) ||
      !kpi_mail_address_valid(p->to) || !p->message_id)
    return KPI_MAIL_EINVAL;
  /* The message id is ours, but check it like data: "<", printable ASCII without blanks, ">". */
  size_t idlen = strlen(p->message_id);
  if (idlen < 3 || p->message_id[0] != '<' || p->message_id[idlen - 1] != '>') return KPI_MAIL_EINVAL;
  for (size_t i = 1; i + 1 < idlen; i++) {
    unsigned char c = (unsigned char)p->message_id[i];
    if (c <= 0x20 || c >= 0x7F || c == '<' || c == '>') return KPI_MAIL_EINVAL;
  }

  char *subject = kpi_mail_subject(alerts, n);
  char *text = kpi_mail_body_text(alerts, n);
  char *canon = text ? crlf_text(text) : NULL;
  kpi_buf clean = KPI_BUF_INIT;
  kpi_buf b = KPI_BUF_INIT;
  if (!subject || !canon) goto nomem;

  char date[40];
  kpi_mail_date(p->date_ms, date, sizeof(date));

  kpi_buf_adds(&b, "From: ");
  if (p->from_name && *p->from_name) {
    buf_add_clean(&clean, p->from_name, "");
    if (clean.s) encode_words(&b, clean.s);
    kpi_buf_adds(&b, " ");
  }
  kpi_buf_addf(&b, "<%s>\r\n", p->from);
  kpi_buf_addf(&b, "To: <%s>\r\n", p->to);
  if (clean.oom) goto nomem;
  kpi_buf_reset(&clean);
  buf_add_clean(&clean, subject, "");
  kpi_buf_adds(&b, "Subject: ");
  if (clean.s) encode_words(&b, clean.s);
  kpi_buf_adds(&b, "\r\n");
  kpi_buf_addf(&b, "Date: %s\r\n", date);
  kpi_buf_addf(&b, "Message-ID: %s\r\n", p->message_id);
  kpi_buf_adds(&b, "MIME-Version: 1.0\r\n");
  kpi_buf_adds(&b, "Content-Type: text/plain; charset=UTF-8\r\n");
  kpi_buf_adds(&b, "Content-Transfer-Encoding: base64\r\n");
  kpi_buf_adds(&b, "Content-Language: ja, en\r\n");
  kpi_buf_adds(&b, "Auto-Submitted: auto-generated\r\n");
  kpi_buf_adds(&b, "X-Auto-Response-Suppress: All\r\n");
  /* alert ids were checked as UUIDs by the decoder, so they are safe header text. */
  if (n == 1 && kpi_uuid_parse(alerts[0]->alert_id, NULL) == 0)
    kpi_buf_addf(&b, "X-KPI-Alert-ID: %s\r\n", alerts[0]->alert_id);
  kpi_buf_adds(&b, "\r\n");
  base64_lines(&b, canon, strlen(canon));
  if (b.oom || clean.oom) goto nomem;

  free(subject);
  free(text);
  free(canon);
  free(clean.s);
  *out = b.s;
  if (out_len) *out_len = b.len;
  return 0;

nomem:
  free(subject);
  free(text);
  free(canon);
  free(clean.s);
  free(b.s);
  return KPI_MAIL_ENOMEM;
}

const char *kpi_mail_strerror(int err) {
  switch (err) {
    case 0: return "success";
    case KPI_MAIL_EINVAL: return "invalid mail parameters (address or message id)";
    case KPI_MAIL_ENOMEM: return "out of memory";
    default: return "unknown kpi_mail error";
  }
}
