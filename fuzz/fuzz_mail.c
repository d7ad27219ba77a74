/* fuzz_mail.c: libFuzzer target for mail composition (common/kpi_mail): alerts and digests
 * rendered from fuzzed fields, checked for header injection and line limits. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "kpi_mail.h"

/* Input, one item per "\n"-terminated line:
 *   line 1   from TAB to TAB from_name TAB date_ms TAB uuid   (missing fields: defaults)
 *   then     up to MAX_ALERTS alerts, each either a kpi.alert/1 JSON record (a line that
 *            starts with '{', decoded by kpi_alert_decode as the notifier does) or raw
 *            fields separated by TAB, in the order of raw_fields below, which reach the
 *            composer with values the decoder would refuse (no status, NaN, FY 0...). */
#define MAX_ALERTS 8
#define MAX_FIELDS 26


/* Splits [P, END) at SEP into at most MAX NUL-terminated copies (caller frees each). */
static size_t split(const char *p, const char *end, char sep, char **out, size_t max) {
  size_t n = 0;
  while (n < max) {
    const char *q = memchr(p, sep, (size_t)(end - p));
    const char *stop = q ? q : end;
    out[n] = strndup(p, (size_t)(stop - p));
    if (!out[n]) break;
    n++;
    if (!q) break;
    p = q + 1;
  }
  return n;
}

static void copy_fixed(char *dst, size_t size, const char *src) {
  snprintf(dst, size, "%s", src ? src : "");
}

static char *take(char **f, size_t n, size_t i) {
  if (i >= n) return NULL;
  char *s = f[i];
  f[i] = NULL;
  return s;
}

/* Raw alert: type status previous stale name indicator unit kind direction plan url due
 * as_of measure_id alert_id has_value value progress expected baseline target baseline_fy
 * target_fy episode last_observed_day created_at. Numbers go through strtod/strtol, so "nan", "inf", "-1e308" occur. */
static void raw_alert(const char *p, const char *end, kpi_alert *a) {
  char *f[MAX_FIELDS] = {0};
  size_t n = split(p, end, '\t', f, MAX_FIELDS);
  memset(a, 0, sizeof(*a));
  copy_fixed(a->type, sizeof a->type, n > 0 ? f[0] : NULL);
  copy_fixed(a->status, sizeof a->status, n > 1 ? f[1] : NULL);
  copy_fixed(a->previous_status, sizeof a->previous_status, n > 2 ? f[2] : NULL);
  a->stale = n > 3 && f[3][0] == '1';
  a->measure_name = take(f, n, 4);
  a->indicator = take(f, n, 5);
  a->unit = take(f, n, 6);
  a->kind = take(f, n, 7);
  a->direction = take(f, n, 8);
  a->plan_name = take(f, n, 9);
  a->dashboard_url = take(f, n, 10);
  copy_fixed(a->due, sizeof a->due, n > 11 ? f[11] : NULL);
  copy_fixed(a->as_of, sizeof a->as_of, n > 12 ? f[12] : NULL);
  copy_fixed(a->measure_id, sizeof a->measure_id, n > 13 ? f[13] : NULL);
  copy_fixed(a->alert_id, sizeof a->alert_id, n > 14 ? f[14] : NULL);
  a->has_value = n > 15 && f[15][0] == '1';
  double *nums[] = {&a->value, &a->progress, &a->expected, &a->baseline, &a->target};
  for (size_t i = 0; i < 5; i++)
    if (16 + i < n) *nums[i] = strtod(f[16 + i], NULL);
  int *ints[] = {&a->baseline_fy, &a->target_fy, &a->episode};
  for (size_t i = 0; i < 3; i++)
    if (21 + i < n) *ints[i] = (int)strtol(f[21 + i], NULL, 10);
  copy_fixed(a->last_observed_day, sizeof a->last_observed_day, n > 24 ? f[24] : NULL);
  copy_fixed(a->created_at, sizeof a->created_at, n > 25 ? f[25] : NULL);
  for (size_t i = 0; i < n; i++) free(f[i]);
}

static int same_str(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* cJSON prints a double with 15 digits when they read back within DBL_EPSILON of it. */
static int same_num(double a, double b) {
  return a == b || fabs(a - b) <= 2 * DBL_EPSILON * fmax(fabs(a), fabs(b));
}

/* The notifier decodes what the evaluator encodes: an alert the decoder accepted must come
 * back unchanged through kpi_alert_encode and kpi_alert_decode. */
static void check_alert_round_trip(const kpi_alert *a) {
  size_t len = 0;
  char *json = kpi_alert_encode(a, &len);
  CHECK(json != NULL, "encode failed");
  kpi_alert b;
  kpi_errors errs = {0};
  int rc = kpi_alert_decode(json, len, &b, &errs);
  CHECK(rc == 0, "own encoding rejected: %s %s: %s (%s)", errs.n ? errs.items[0].field : "",
        errs.n ? errs.items[0].code : "", errs.n ? errs.items[0].message : "", json);
  CHECK(strcmp(a->alert_id, b.alert_id) == 0 && strcmp(a->measure_id, b.measure_id) == 0 &&
            strcmp(a->type, b.type) == 0 && strcmp(a->status, b.status) == 0 &&
            strcmp(a->previous_status, b.previous_status) == 0 && a->stale == b.stale &&
            a->episode == b.episode && a->has_value == b.has_value &&
            strcmp(a->as_of, b.as_of) == 0 && strcmp(a->due, b.due) == 0 &&
            strcmp(a->last_observed_day, b.last_observed_day) == 0 &&
            strcmp(a->created_at, b.created_at) == 0,
        "fixed fields changed: %s", json);
  CHECK(same_str(a->measure_name, b.measure_name) && same_str(a->indicator, b.indicator) &&
            same_str(a->unit, b.unit) && same_str(a->kind, b.kind) &&
            same_str(a->direction, b.direction) && same_str(a->plan_name, b.plan_name) &&
            same_str(a->dashboard_url, b.dashboard_url),
        "strings changed: %s", json);
  CHECK((!a->has_value || same_num(a->value, b.value)) && same_num(a->progress, b.progress) &&
            same_num(a->expected, b.expected) && same_num(a->baseline, b.baseline) &&
            same_num(a->target, b.target) && a->baseline_fy == b.baseline_fy &&
            a->target_fy == b.target_fy,
        "numbers changed: %s", json);
  CHECK(a->n_recipients == b.n_recipients, "recipients changed: %s", json);
  for (size_t i = 0; i < a->n_recipients; i++)
    CHECK(same_str(a->recipients[i].email, b.recipients[i].email) &&
              same_str(a->recipients[i].department, b.recipients[i].department) &&
              same_str(a->recipients[i].name, b.recipients[i].name),
          "recipient %zu changed: %s", i, json);
  kpi_alert_clear(&b);
  free(json);
}

/* The header section may hold printable ASCII only, in CRLF-terminated lines of at most
 * 998 characters (folded lines start with a space); the body is base64 in lines of 76. */
static void check_message(const char *msg, size_t len) {
  CHECK(strlen(msg) == len, "length");
  const char *sep = strstr(msg, "\r\n\r\n");
  CHECK(sep != NULL, "no blank line");
  size_t head = (size_t)(sep - msg) + 2;
  size_t line = 0;
  for (size_t i = 0; i < head; i++) {
    unsigned char c = (unsigned char)msg[i];
    if (c == '\r') {
      CHECK(msg[i + 1] == '\n', "bare CR in the header at %zu", i);
      CHECK(line <= 998, "header line of %zu characters", line); /* RFC 5322 2.1.1 */
      i++;
      line = 0;
      if (i + 1 < head) {
        char next = msg[i + 1];
        CHECK(next == ' ' || (next >= 'A' && next <= 'Z'), "line starts with 0x%02x", next);
      }
      continue;
    }
    CHECK(c >= 0x20 && c < 0x7F, "byte 0x%02x in the header at %zu", c, i);
    line++;
  }
  line = 0;
  for (size_t i = head + 2; i < len; i++) {
    char c = msg[i];
    if (c == '\r') {
      CHECK(msg[i + 1] == '\n' && line > 0 && line <= 76, "body line of %zu", line);
      i++;
      line = 0;
      continue;
    }
    CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '=',
          "byte 0x%02x in the base64 body", (unsigned char)c);
    line++;
  }
  CHECK(line == 0, "body does not end in CRLF");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data, *end = p + size;
  const char *nl = memchr(p, '\n', size);
  const char *first_end = nl ? nl : end;
  char *pf[5] = {0};
  size_t npf = split(p, first_end, '\t', pf, 5);
  p = nl ? nl + 1 : end;

  kpi_alert alerts[MAX_ALERTS];
  const kpi_alert *list[MAX_ALERTS];
  size_t n = 0;
  while (p < end && n < MAX_ALERTS) {
    nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    kpi_alert *a = &alerts[n];
    if (le > p && *p == '{') {
      kpi_errors errs = {0};
      if (kpi_alert_decode(p, (size_t)(le - p), a, &errs) == 0) {
        check_alert_round_trip(a);
        list[n] = a;
        n++;
      } else {
        CHECK(errs.n > 0, "decode failed without an error");
      }
    } else {
      raw_alert(p, le, a);
      list[n] = a;
      n++;
    }
    p = nl ? nl + 1 : end;
  }

  const char *from = npf > 0 ? pf[0] : "kpi@city.example";
  const char *to = npf > 1 ? pf[1] : "owner@city.example";
  const char *from_name = npf > 2 ? pf[2] : NULL;
  int64_t date_ms = npf > 3 ? strtoll(pf[3], NULL, 10) : INT64_C(1727740800000);
  const char *uuid = npf > 4 ? pf[4] : "6f1c2a70-3a5e-5c1e-9a3b-0c8d2f3e4a51";

  char words[256];
  int wl = kpi_mail_encode_words(from_name ? from_name : "", words, sizeof words);
  CHECK(wl == KPI_MAIL_ENOMEM || (size_t)wl == strlen(words), "encode_words length");
  for (const char *w = words; *w; w++)
    CHECK((*w >= 0x20 && *w < 0x7F) || *w == '\r' || *w == '\n', "encoded word byte");

  char msgid[KPI_MAIL_MSGID_MAX];
  int idrc = kpi_mail_message_id(uuid, from, msgid, sizeof msgid);
  if (idrc != 0) snprintf(msgid, sizeof msgid, "<fixed@city.example>");
  kpi_mail_params params = {
      .from = from, .from_name = from_name, .to = to, .date_ms = date_ms, .message_id = msgid};

  char *subject = kpi_mail_subject(list, n);
  char *body = kpi_mail_body_text(list, n);
  CHECK((subject != NULL) == (n > 0) && (body != NULL) == (n > 0), "subject/body for %zu", n);
  free(subject);
  free(body);

  char *msg = NULL;
  size_t len = 0;
  int rc = kpi_mail_compose(&params, list, n, &msg, &len);
  int addresses_ok = kpi_mail_address_valid(from) && kpi_mail_address_valid(to);
  if (n > 0 && addresses_ok) {
    CHECK(rc == 0, "compose failed: %s", kpi_mail_strerror(rc));
    check_message(msg, len);
  } else {
    CHECK(rc == KPI_MAIL_EINVAL && msg == NULL, "compose accepted bad input");
  }
  free(msg);

  for (size_t i = 0; i < n; i++) kpi_alert_clear(&alerts[i]);
  for (size_t i = 0; i < npf; i++) free(pf[i]);
  return 0;
}
