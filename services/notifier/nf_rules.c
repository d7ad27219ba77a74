/* nf_rules.c: the notifier's pure rules: backoff, relay state, claim capacity, digest
 * grouping, outcome actions, durations (nf_rules.h). */
#include "nf_rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t nf_backoff_nominal_ms(int64_t attempts, int64_t base_ms, int64_t max_ms) {
  if (attempts < 1) attempts = 1;
  int64_t d = base_ms;
  for (int64_t i = 1; i < attempts && d < max_ms; i++) d *= 2;
  if (d > max_ms) d = max_ms;
  return d;
}

int64_t nf_backoff_jitter_ms(int64_t nominal_ms, long r) {
  int64_t half = nominal_ms / 2;
  return half + (half > 0 ? (int64_t)(r % (half + 1)) : 0);
}

int64_t nf_backoff_ms(int64_t attempts, int64_t base_ms, int64_t max_ms) {
  int64_t d = nf_backoff_nominal_ms(attempts, base_ms, max_ms);
  /* random() only when there is something to spread, as before the split. */
  return d / 2 > 0 ? nf_backoff_jitter_ms(d, random()) : nf_backoff_jitter_ms(d, 0);
}

uint64_t nf_consume_backoff_next_ms(uint64_t prev_ms) {
  uint64_t d = prev_ms ? prev_ms * 2 : 250;
  return d > 10000 ? 10000 : d;
}

void nf_relay_init(nf_relay *r) { *r = (nf_relay){.up = true}; }

bool nf_relay_mark_down(nf_relay *r, uint64_t now) {
  if (!r->up) return false;
  r->up = false;
  r->down_since = now;
  r->backoff_n++;
  return true;
}

bool nf_relay_mark_up(nf_relay *r) {
  if (r->up) return false;
  r->up = true;
  return true;
}

void nf_relay_answered(nf_relay *r) { r->backoff_n = 0; }

void nf_relay_probe_failed(nf_relay *r) { r->backoff_n++; }

int64_t nf_relay_probe_delay_ms(const nf_relay *r, int64_t base_ms, int64_t max_ms) {
  return nf_backoff_ms(r->backoff_n, base_ms, max_ms);
}

size_t nf_send_capacity(int connections) {
  return connections > 0 ? (size_t)connections * NF_MAILS_PER_CONNECTION : 0;
}

size_t nf_claim_slots(size_t capacity, size_t inflight) {
  return inflight >= capacity ? 0 : capacity - inflight;
}

size_t nf_claim_room(size_t capacity, size_t in_smtp, size_t unwritten) {
  size_t smtp_room = nf_claim_slots(capacity, in_smtp);
  size_t write_room = nf_claim_slots(2 * capacity, unwritten);
  return smtp_room < write_room ? smtp_room : write_room;
}

bool nf_claim_burst_now(bool claim_again, size_t inflight, size_t capacity) {
  return claim_again && inflight <= capacity / 2;
}

size_t nf_claim_ahead_next(size_t ahead, size_t capacity, size_t max_ahead, bool full) {
  if (!full) return 0;
  size_t next = ahead ? ahead * 2 : capacity;
  return next < max_ahead ? next : max_ahead;
}

int64_t nf_ready_hold_ms(int64_t lease_ms, int64_t timeout_ms) {
  int64_t hold = lease_ms - (NF_MAILS_PER_CONNECTION + 1) * timeout_ms;
  return hold > 0 ? hold : -1;
}

bool nf_ready_expired(uint64_t claimed_at, uint64_t now, int64_t hold_ms) {
  return hold_ms >= 0 && now > claimed_at && now - claimed_at > (uint64_t)hold_ms;
}

bool nf_ready_lease_held(uint64_t claimed_at, uint64_t now, int64_t lease_ms) {
  if (now < claimed_at) return true;
  return (int64_t)(now - claimed_at) < lease_ms - NF_LEASE_MARGIN_MS;
}

static int cmp_rows(const void *pa, const void *pb) {
  const nf_claimed_row *a = pa, *b = pb;
  int c = strcmp(a->recipient, b->recipient);
  if (c) return c;
  if (a->created_ms != b->created_ms) return a->created_ms < b->created_ms ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

void nf_digest_sort(nf_claimed_row *rows, size_t n) {
  if (n > 1) qsort(rows, n, sizeof(*rows), cmp_rows);
}

size_t nf_digest_end(const nf_claimed_row *rows, size_t n, size_t start, size_t digest_max) {
  size_t i = start + 1;
  while (i < n && strcmp(rows[i].recipient, rows[start].recipient) == 0 &&
         i - start < digest_max)
    i++;
  return i;
}

nf_rows_action nf_rows_action_for(bool forced_dead, kpi_smtp_outcome outcome) {
  if (forced_dead) return NF_ROWS_DEAD;
  switch (outcome) {
    case KPI_SMTP_SENT: return NF_ROWS_SENT;
    case KPI_SMTP_CANCELLED: return NF_ROWS_RELEASE;
    case KPI_SMTP_RELAY: return NF_ROWS_DEFER;
    case KPI_SMTP_PERMANENT: return NF_ROWS_DEAD;
    case KPI_SMTP_TRANSIENT: break;
  }
  return NF_ROWS_RETRY;
}

void nf_outcome_error(const kpi_smtp_result *r, char *out, size_t size) {
  const char *prefix = r->outcome == KPI_SMTP_RELAY ? "relay: " : "";
  if (r->reply[0])
    snprintf(out, size, "%s%s (last reply: %s)", prefix, r->error, r->reply);
  else
    snprintf(out, size, "%s%s", prefix, r->error[0] ? r->error : "unknown failure");
}

const char *nf_dead_reason(const char *forced, const kpi_smtp_result *r, char *buf, size_t size) {
  if (forced) return forced;
  if (r->reply[0] && r->error[0]) {
    snprintf(buf, size, "%s (last reply: %s)", r->error, r->reply);
    return buf;
  }
  return r->error[0] ? r->error : r->reply;
}

int64_t nf_duration_ms(const char *s) {
  char *end;
  if (!s || *s < '0' || *s > '9') return -1;
  long long v = strtoll(s, &end, 10);
  if (v < 0 || v > 100LL * 365 * 86400 * 1000) return -1;
  int64_t unit;
  if (strcmp(end, "") == 0 || strcmp(end, "s") == 0) unit = 1000;
  else if (strcmp(end, "ms") == 0) unit = 1;
  else if (strcmp(end, "m") == 0) unit = 60000;
  else if (strcmp(end, "h") == 0) unit = 3600000;
  else if (strcmp(end, "d") == 0) unit = 86400000;
  else return -1;
  return (int64_t)v * unit;
}

bool nf_dashboard_url_valid(const char *s) {
  bool ok = strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0;
  for (const unsigned char *p = (const unsigned char *)s; ok && *p; p++) ok = *p > 0x20 && *p < 0x7F;
  return ok;
}

int nf_report_link_base(const char *report_base, char *buf, size_t size) {
  if (!report_base || !nf_dashboard_url_valid(report_base)) return -1;
  size_t n = strlen(report_base);
  while (n > 0 && report_base[n - 1] == '/') n--;
  int w = snprintf(buf, size, "%.*s/measures", (int)n, report_base);
  return w < 0 || (size_t)w >= size ? -1 : 0;
}

const char *nf_dashboard_url_pick(const char *report, const char *configured,
                                  const kpi_catalog *cat) {
  if (report && *report) return report;
  if (configured) return configured;
  return cat && cat->dashboard_url && *cat->dashboard_url ? cat->dashboard_url : NULL;
}
