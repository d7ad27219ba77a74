/* kpi_mail.c: the notifier's mails: Japanese/English text, RFC 2047 subjects, base64 MIME body. */
#include "kpi_mail.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "kpi_time.h"

/* A growable string. Every append keeps it NUL-terminated; the first allocation failure
 * sticks in FAILED so composition code can append freely and check once at the end. */
typedef struct {
  char *s;
  size_t len;
  size_t cap;
  int failed;
} sbuf;

static int sbuf_reserve(sbuf *b, size_t extra) {
  if (b->failed) return -1;
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 512;
  while (cap < b->len + extra + 1) cap *= 2;
  char *s = realloc(b->s, cap);
  if (!s) {
    b->failed = 1;
    return -1;
  }
  b->s = s;
  b->cap = cap;
  return 0;
}

static void sbuf_add(sbuf *b, const char *s, size_t n) {
  if (sbuf_reserve(b, n) != 0) return;
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

static void sbuf_puts(sbuf *b, const char *s) { sbuf_add(b, s, strlen(s)); }

static void sbuf_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbuf_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || sbuf_reserve(b, (size_t)n) != 0) {
    b->failed = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Returns B's string, or NULL (freeing it) if any append failed. */
static char *sbuf_finish(sbuf *b) {
  if (b->failed || !b->s) {
    free(b->s);
    return NULL;
  }
  return b->s;
}

/* Length of the well-formed UTF-8 sequence at S (at most N bytes available), or 0 when the
 * bytes there are not one: stray continuation bytes, overlongs, surrogates, > U+10FFFF. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return len;
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
static void sbuf_add_clean(sbuf *b, const char *text, const char *def) {
  if (!text) text = def;
  const unsigned char *s = (const unsigned char *)text;
  size_t n = strlen(text);
  for (size_t i = 0; i < n;) {
    size_t len;
    if (classify_char(s + i, n - i, &len) == CH_KEEP) sbuf_add(b, (const char *)s + i, len);
    else sbuf_add(b, " ", 1);
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

static void base64(sbuf *b, const unsigned char *in, size_t n) {
  size_t out = 4 * ((n + 2) / 3);
  if (sbuf_reserve(b, out) != 0) return;
  int w = EVP_EncodeBlock((unsigned char *)b->s + b->len, in, (int)n);
  b->len += (size_t)w;
  b->s[b->len] = '\0';
}

/* Appends encoded words for TEXT (already clean, valid UTF-8) to B. */
static void encode_words(sbuf *b, const char *text) {
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
    if (!first) sbuf_puts(b, "\r\n ");
    sbuf_puts(b, "=?UTF-8?B?");
    base64(b, s + i, take);
    sbuf_puts(b, "?=");
    i += take;
    first = 0;
  }
}

int kpi_mail_encode_words(const char *text, char *out, size_t out_size) {
  sbuf clean = {0}, enc = {0};
  sbuf_add_clean(&clean, text, "");
  if (!clean.failed && clean.s) encode_words(&enc, clean.s);
  int rc;
  if (clean.failed || enc.failed) {
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

static const struct {
  const char *status, *ja, *en;
} status_labels[] = {
    {"lagging", "遅れ", "lagging"},
    {"failed", "未達成（期限切れ）", "failed (deadline passed)"},
    {"no_data", "報告なし", "no data reported"},
    {"on_track", "順調", "on track"},
    {"achieved", "達成", "achieved"},
};

static int status_index(const char *status) {
  for (size_t i = 0; status && i < sizeof(status_labels) / sizeof(status_labels[0]); i++)
    if (strcmp(status, status_labels[i].status) == 0) return (int)i;
  return -1;
}

const char *kpi_mail_status_ja(const char *status) {
  int i = status_index(status);
  return i >= 0 ? status_labels[i].ja : (status ? status : "");
}

const char *kpi_mail_status_en(const char *status) {
  int i = status_index(status);
  return i >= 0 ? status_labels[i].en : (status ? status : "");
}

static bool is_resolved(const kpi_alert *a) { return strcmp(a->type, "resolved") == 0; }
static bool is_reminder(const kpi_alert *a) { return strcmp(a->type, "reminder") == 0; }

/* The one-word headline of an alert, as in the subject: 回復 for a recovery, 報告なし when
 * the measure is only stale, else the status. */
static const char *headline_ja(const kpi_alert *a) {
  if (is_resolved(a)) return "回復";
  if (a->stale && strcmp(a->status, "lagging") && strcmp(a->status, "failed")) return "報告なし";
  return kpi_mail_status_ja(a->status);
}

static const char *headline_en(const kpi_alert *a) {
  if (is_resolved(a)) return "resolved";
  if (a->stale && strcmp(a->status, "lagging") && strcmp(a->status, "failed")) return "stale";
  return kpi_mail_status_en(a->status);
}

/* Units: Japanese counters follow the number ("24人"); English gets a word ("24 persons"). */
static const struct {
  const char *unit, *ja, *en_one, *en_many;
} unit_labels[] = {
    {"person", "人", " person", " persons"},   {"case", "件", " case", " cases"},
    {"school", "校", " school", " schools"},   {"facility", "施設", " facility", " facilities"},
    {"percent", "%", "%", "%"},                {"plan", "件", " plan", " plans"},
};

static void add_number(sbuf *b, double v) {
  if (!isfinite(v)) {
    sbuf_puts(b, "-");
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
  sbuf_puts(b, buf);
}

static bool is_milestone(const kpi_alert *a) { return a->kind && strcmp(a->kind, "milestone") == 0; }

static void add_quantity(sbuf *b, const kpi_alert *a, double v, bool ja) {
  if (is_milestone(a)) {
    sbuf_puts(b, v >= 1 ? (ja ? "完了" : "done") : (ja ? "未完了" : "not done"));
    return;
  }
  add_number(b, v);
  for (size_t i = 0; a->unit && i < sizeof(unit_labels) / sizeof(unit_labels[0]); i++) {
    if (strcmp(a->unit, unit_labels[i].unit) == 0) {
      sbuf_puts(b, ja ? unit_labels[i].ja : (v == 1 ? unit_labels[i].en_one : unit_labels[i].en_many));
      return;
    }
  }
  if (a->unit && *a->unit) {
    sbuf_puts(b, " ");
    sbuf_add_clean(b, a->unit, "");
  }
}

static void add_fy(sbuf *b, int fy) {
  char buf[40];
  if (fy <= 0) {
    sbuf_puts(b, "-");
    return;
  }
  kpi_fy_format(fy, buf, sizeof(buf));
  sbuf_puts(b, buf);
}

static void add_percent(sbuf *b, double ratio) {
  if (!isfinite(ratio)) {
    sbuf_puts(b, "-");
    return;
  }
  sbuf_printf(b, "%.1f%%", ratio * 100.0);
}

/* The deadline: the alert's due date, else the end of its target fiscal year. */
static void due_ymd(const kpi_alert *a, int *y, int *m, int *d) {
  *y = *m = *d = 0;
  if (sscanf(a->due, "%4d-%2d-%2d", y, m, d) == 3) return;
  if (a->target_fy > 0) kpi_day_to_ymd(kpi_fy_last_day(a->target_fy), y, m, d);
}

static void add_url(sbuf *b, const kpi_alert *a) {
  sbuf_add_clean(b, a->dashboard_url, "");
  size_t n = a->dashboard_url ? strlen(a->dashboard_url) : 0;
  if (n == 0 || a->dashboard_url[n - 1] != '/') sbuf_puts(b, "/");
  sbuf_add_clean(b, a->measure_id, "");
}

static void add_block_ja(sbuf *b, const kpi_alert *a, size_t index, size_t n) {
  if (n > 1) sbuf_printf(b, "%zu. ", index + 1);
  else sbuf_puts(b, "■ ");
  sbuf_add_clean(b, a->measure_name, "(名称なし)");
  sbuf_puts(b, "\n");
  sbuf_puts(b, "  状況: ");
  sbuf_puts(b, headline_ja(a));
  if (is_resolved(a) || (a->stale && strcmp(headline_ja(a), "報告なし") != 0)) {
    sbuf_puts(b, "（");
    sbuf_puts(b, kpi_mail_status_ja(a->status));
    if (a->stale) sbuf_puts(b, "・最新の報告が古くなっています");
    sbuf_puts(b, "）");
  }
  if (is_reminder(a)) sbuf_puts(b, "［再通知］");
  sbuf_puts(b, "\n  前回の通知からの変化: ");
  if (!a->previous_status[0]) {
    sbuf_puts(b, "初めての通知です");
  } else if (strcmp(a->previous_status, a->status) == 0) {
    sbuf_printf(b, "変化なし（%s のまま）", kpi_mail_status_ja(a->status));
  } else {
    sbuf_printf(b, "%s → %s", kpi_mail_status_ja(a->previous_status),
                kpi_mail_status_ja(a->status));
  }
  sbuf_puts(b, "\n  指標: ");
  sbuf_add_clean(b, a->indicator, "-");
  sbuf_puts(b, "\n  基準値: ");
  add_quantity(b, a, a->baseline, true);
  sbuf_puts(b, "（");
  add_fy(b, a->baseline_fy);
  sbuf_puts(b, "）\n  目標値: ");
  add_quantity(b, a, a->target, true);
  sbuf_puts(b, "（");
  add_fy(b, a->target_fy);
  int y, m, d;
  due_ymd(a, &y, &m, &d);
  sbuf_puts(b, "）\n  期限: ");
  if (y) sbuf_printf(b, "%d年%d月%d日", y, m, d);
  else sbuf_puts(b, "-");
  sbuf_puts(b, "\n  現在値: ");
  if (a->has_value) add_quantity(b, a, a->value, true);
  else sbuf_puts(b, "報告なし");
  sbuf_puts(b, "（");
  sbuf_add_clean(b, a->as_of, "");
  sbuf_puts(b, " 時点）\n  進捗率: ");
  add_percent(b, a->progress);
  sbuf_puts(b, "（期待されるペース: ");
  add_percent(b, a->expected);
  sbuf_puts(b, "）\n");
  if (a->dashboard_url && *a->dashboard_url) {
    sbuf_puts(b, "  詳細: ");
    add_url(b, a);
    sbuf_puts(b, "\n");
  }
  sbuf_puts(b, "\n");
}

static void add_block_en(sbuf *b, const kpi_alert *a, size_t index, size_t n) {
  if (n > 1) sbuf_printf(b, "%zu. ", index + 1);
  else sbuf_puts(b, "* ");
  sbuf_add_clean(b, a->measure_name, "(unnamed)");
  sbuf_puts(b, " [");
  sbuf_add_clean(b, a->measure_id, "");
  sbuf_puts(b, "]\n  Status: ");
  sbuf_puts(b, headline_en(a));
  if (is_resolved(a) || (a->stale && strcmp(headline_en(a), "stale") != 0)) {
    sbuf_puts(b, " (");
    sbuf_puts(b, kpi_mail_status_en(a->status));
    if (a->stale) sbuf_puts(b, "; the latest report is overdue");
    sbuf_puts(b, ")");
  }
  if (is_reminder(a)) sbuf_puts(b, " [reminder]");
  sbuf_puts(b, "\n  Since the last notice: ");
  if (!a->previous_status[0]) {
    sbuf_puts(b, "first notice");
  } else if (strcmp(a->previous_status, a->status) == 0) {
    sbuf_printf(b, "no change (still %s)", kpi_mail_status_en(a->status));
  } else {
    sbuf_printf(b, "%s -> %s", kpi_mail_status_en(a->previous_status),
                kpi_mail_status_en(a->status));
  }
  sbuf_puts(b, "\n  Indicator: ");
  sbuf_add_clean(b, a->indicator, "-");
  sbuf_puts(b, "\n  Baseline: ");
  add_quantity(b, a, a->baseline, false);
  sbuf_puts(b, " (");
  add_fy(b, a->baseline_fy);
  sbuf_puts(b, ")\n  Target: ");
  add_quantity(b, a, a->target, false);
  sbuf_puts(b, " (");
  add_fy(b, a->target_fy);
  int y, m, d;
  due_ymd(a, &y, &m, &d);
  sbuf_puts(b, ")\n  Deadline: ");
  if (y) sbuf_printf(b, "%04d-%02d-%02d", y, m, d);
  else sbuf_puts(b, "-");
  sbuf_puts(b, "\n  Current value: ");
  if (a->has_value) add_quantity(b, a, a->value, false);
  else sbuf_puts(b, "nothing reported");
  sbuf_puts(b, " (as of ");
  sbuf_add_clean(b, a->as_of, "");
  sbuf_puts(b, ")\n  Progress: ");
  add_percent(b, a->progress);
  sbuf_puts(b, " (expected pace: ");
  add_percent(b, a->expected);
  sbuf_puts(b, ")\n");
  if (a->dashboard_url && *a->dashboard_url) {
    sbuf_puts(b, "  Details: ");
    add_url(b, a);
    sbuf_puts(b, "\n");
  }
  sbuf_puts(b, "\n");
}

/* The plan named by the alerts: the first one that names one. */
static const char *plan_of(const kpi_alert *const *alerts, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (alerts[i]->plan_name && *alerts[i]->plan_name) return alerts[i]->plan_name;
  return NULL;
}

char *kpi_mail_subject(const kpi_alert *const *alerts, size_t n) {
  if (n == 0 || !alerts) return NULL;
  sbuf b = {0};
  if (n == 1) {
    const kpi_alert *a = alerts[0];
    sbuf_printf(&b, "【KPI %s / %s", headline_ja(a), headline_en(a));
    if (is_reminder(a)) sbuf_puts(&b, "・再通知 / reminder");
    sbuf_puts(&b, "】");
    sbuf_add_clean(&b, a->measure_name, a->measure_id);
  } else {
    size_t alerting = 0, resolved = 0;
    for (size_t i = 0; i < n; i++) {
      if (is_resolved(alerts[i])) resolved++;
      else alerting++;
    }
    sbuf_printf(&b, "【KPI】施策%zu件のお知らせ（要対応%zu件・回復%zu件）/ KPI notice: %zu measures "
                "(%zu need attention, %zu resolved)",
                n, alerting, resolved, n, alerting, resolved);
  }
  return sbuf_finish(&b);
}

char *kpi_mail_body_text(const kpi_alert *const *alerts, size_t n) {
  if (n == 0 || !alerts) return NULL;
  sbuf b = {0};
  const char *plan = plan_of(alerts, n);
  if (plan) {
    sbuf_add_clean(&b, plan, "");
    sbuf_puts(&b, "\n");
  }
  sbuf_puts(&b, "KPI 進捗のお知らせ（English follows）\n\n");
  if (n > 1) sbuf_printf(&b, "%zu件の施策についてお知らせします。\n\n", n);
  for (size_t i = 0; i < n; i++) add_block_ja(&b, alerts[i], i, n);
  sbuf_puts(&b, "このメールは KPI 進捗管理システムから自動送信されています。返信はできません。\n");
  sbuf_puts(&b, "\n----------------------------------------------------------------\n\n");
  sbuf_puts(&b, "KPI progress notice\n\n");
  if (n > 1) sbuf_printf(&b, "This notice covers %zu measures.\n\n", n);
  for (size_t i = 0; i < n; i++) add_block_en(&b, alerts[i], i, n);
  sbuf_puts(&b, "This message was sent automatically by the KPI tracking system; replies are not "
                "read.\n");
  return sbuf_finish(&b);
}

/* Appends the base64 of TEXT in lines of 76 characters (RFC 2045 §6.8), CRLF-terminated. */
static void base64_lines(sbuf *b, const char *text, size_t n) {
  for (size_t i = 0; i < n; i += 57) {
    size_t take = n - i < 57 ? n - i : 57;
    base64(b, (const unsigned char *)text + i, take);
    sbuf_puts(b, "\r\n");
  }
}

/* The body with "\n" line ends turned into CRLF: the canonical form of text (RFC 2046
 * §4.1.1), which is what base64 must carry. */
static char *crlf_text(const char *text) {
  sbuf b = {0};
  for (const char *p = text; *p; p++) {
    if (*p == '\n') sbuf_add(&b, "\r\n", 2);
    else sbuf_add(&b, p, 1);
  }
  return sbuf_finish(&b);
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
  sbuf clean = {0};
  sbuf b = {0};
  if (!subject || !canon) goto nomem;

  char date[40];
  kpi_mail_date(p->date_ms, date, sizeof(date));

  sbuf_puts(&b, "From: ");
  if (p->from_name && *p->from_name) {
    sbuf_add_clean(&clean, p->from_name, "");
    if (clean.s) encode_words(&b, clean.s);
    sbuf_puts(&b, " ");
  }
  sbuf_printf(&b, "<%s>\r\n", p->from);
  sbuf_printf(&b, "To: <%s>\r\n", p->to);
  clean.len = 0;
  if (clean.s) clean.s[0] = '\0';
  sbuf_add_clean(&clean, subject, "");
  sbuf_puts(&b, "Subject: ");
  if (clean.s) encode_words(&b, clean.s);
  sbuf_puts(&b, "\r\n");
  sbuf_printf(&b, "Date: %s\r\n", date);
  sbuf_printf(&b, "Message-ID: %s\r\n", p->message_id);
  sbuf_puts(&b, "MIME-Version: 1.0\r\n");
  sbuf_puts(&b, "Content-Type: text/plain; charset=UTF-8\r\n");
  sbuf_puts(&b, "Content-Transfer-Encoding: base64\r\n");
  sbuf_puts(&b, "Content-Language: ja, en\r\n");
  sbuf_puts(&b, "Auto-Submitted: auto-generated\r\n");
  sbuf_puts(&b, "X-Auto-Response-Suppress: All\r\n");
  /* alert ids were checked as UUIDs by the decoder, so they are safe header text. */
  if (n == 1 && kpi_uuid_parse(alerts[0]->alert_id, NULL) == 0)
    sbuf_printf(&b, "X-KPI-Alert-ID: %s\r\n", alerts[0]->alert_id);
  sbuf_puts(&b, "\r\n");
  base64_lines(&b, canon, strlen(canon));
  if (b.failed || clean.failed) goto nomem;

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
