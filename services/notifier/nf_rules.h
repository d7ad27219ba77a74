/* nf_rules.h: the notifier's pure rules (backoff, relay state, claim capacity, digest grouping,
 * what an SMTP outcome does to its rows, durations): no loop, no I/O, table-tested in
 * tests/unit/test_notifier_rules.c. The files that own the loop call these and act on the
 * answer. */
#ifndef NF_RULES_H
#define NF_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kpi_catalog.h"
#include "kpi_smtp.h"

/* ---- retry and probe backoff ---- */

/* The nominal delay before attempt ATTEMPTS+1: BASE_MS * 2^(ATTEMPTS-1), capped at MAX_MS
 * (ATTEMPTS below 1 counts as 1). */
int64_t nf_backoff_nominal_ms(int64_t attempts, int64_t base_ms, int64_t max_ms);

/* "Equal jitter" on NOMINAL_MS: half fixed, half taken from the random number R (any
 * non-negative value), so that retries of many mails spread out while each still waits at
 * least half the nominal delay: NOMINAL/2 + R % (NOMINAL/2 + 1). */
int64_t nf_backoff_jitter_ms(int64_t nominal_ms, long r);

/* The two above with random(): the delay the sender and the relay probe really wait. */
int64_t nf_backoff_ms(int64_t attempts, int64_t base_ms, int64_t max_ms);

/* The consumer's retry delay after PREV_MS (0: the first failure): 250 ms, doubling, at most
 * 10 s. A batch that fails is held and retried; nothing else is read meanwhile. */
uint64_t nf_consume_backoff_next_ms(uint64_t prev_ms);

/* ---- relay state (docs/notifier.md "Relay state") ----
 *
 * The relay is assumed up at start. A relay-level failure of a mail takes it down once (the
 * first one counts; mails still in the client fail on their own). While it is down nothing is
 * claimed and it is probed with its own backoff; any answer (a probe's or a mail's) brings it
 * back up. BACKOFF_N counts failed probes and down transitions since a mail or probe got an
 * answer, and sets the probe delay. */
typedef struct nf_relay {
  bool up;
  bool probe_inflight;
  int64_t backoff_n;
  uint64_t down_since; /* uv_now when it went down */
} nf_relay;

/* Up, no probe in flight, no backoff. */
void nf_relay_init(nf_relay *r);
/* A relay-level failure at NOW: true when this took the relay down (it was up). */
bool nf_relay_mark_down(nf_relay *r, uint64_t now);
/* True when this brought the relay up (it was down). */
bool nf_relay_mark_up(nf_relay *r);
/* The relay answered a command: the session works, whatever it said of the mail. Resets the
 * probe backoff; the caller brings the relay up (nf_relay_mark_up) unless it is stopping. */
void nf_relay_answered(nf_relay *r);
/* A probe failed or could not start: the next probe waits longer. */
void nf_relay_probe_failed(nf_relay *r);
/* The delay before the next probe, with jitter. */
int64_t nf_relay_probe_delay_ms(const nf_relay *r, int64_t base_ms, int64_t max_ms);

/* ---- claim capacity ---- */

/* Mails allowed in SMTP at once per connection: enough to keep every connection busy while
 * the next claim runs, few enough that the last of them is sent within the lease even when
 * every transaction times out (4 rounds of KPI_SMTP_TIMEOUT_MS; nf_service.c warns when the
 * lease is shorter). */
#define NF_MAILS_PER_CONNECTION 4

/* How long the first sent mail of a partial batch waits for others before their rows are
 * marked sent in one statement (nf_send.c, sent_queued). */
#define NF_SENT_BATCH_WAIT_MS 20

/* Mails in SMTP at once with CONNECTIONS connections. */
size_t nf_send_capacity(int connections);
/* Recipients (one mail each) the next claim may take with INFLIGHT mails out of CAPACITY; 0:
 * do not claim. */
size_t nf_claim_slots(size_t capacity, size_t inflight);
/* Recipients the next claim may take: free send slots counting only the mails still in SMTP
 * (IN_SMTP; a mail whose server reply is in and whose outcome waits for the batched UPDATE
 * holds no connection), and never more than 2 x CAPACITY mails whose outcome is not yet
 * written (UNWRITTEN, those in SMTP included), which bounds what a slow database leaves in
 * memory and in the duplicate window. 0: do not claim. */
size_t nf_claim_room(size_t capacity, size_t in_smtp, size_t unwritten);
/* Claim again at once, outside the poll timer? Only when the last claim was full (CLAIM_AGAIN:
 * more rows are due) and at least half the capacity is free; otherwise the poll timer comes
 * back soon enough. */
bool nf_claim_burst_now(bool claim_again, size_t inflight, size_t capacity);

/* ---- claiming ahead of the connections (docs/notifier.md "Performance") ----
 *
 * A claim may take more mails than there are free send slots: the extra ones wait, claimed and
 * not yet composed, until a connection is free, so the connections keep sending while the next
 * claim runs. How far ahead ("ahead", mails beyond the send capacity) grows only while the
 * queue has more due rows than the claims take. */

/* The next claims' ahead after a claim that took every recipient it asked for (FULL: more rows
 * are probably due) or not: doubles, starting from CAPACITY, up to MAX_AHEAD (KPI_NOTIFY_PREFETCH);
 * a short claim (the due rows ran out) sets it back to 0, so a queue that trickles is claimed
 * as before, a few mails at a time, and replicas share it. */
size_t nf_claim_ahead_next(size_t ahead, size_t capacity, size_t max_ahead, bool full);

/* How long a claimed mail may wait for a connection before it is given back unsent: the lease
 * LEASE_MS less the NF_MAILS_PER_CONNECTION + 1 transaction timeouts (TIMEOUT_MS) it may take
 * once handed to SMTP, so that no mail is still in flight when its lease ends. -1 when the
 * lease leaves no such time (lease below 5 timeouts, warned at start): nothing is then claimed
 * ahead. */
int64_t nf_ready_hold_ms(int64_t lease_ms, int64_t timeout_ms);

/* True when a mail claimed at CLAIMED_AT (loop ms) has waited past HOLD_MS (nf_ready_hold_ms)
 * at NOW and must be given back instead of sent. Never with HOLD_MS -1: claims then take only
 * free send slots and their mails are handed to SMTP at once. */
bool nf_ready_expired(uint64_t claimed_at, uint64_t now, int64_t hold_ms);

/* True while a claim sent at CLAIMED_AT (loop ms) still certainly holds its lease LEASE_MS at
 * NOW (with NF_LEASE_MARGIN_MS to spare for the release statement's own round trip). A mail
 * given back after that is not released but dropped: its lease has run out or is about to,
 * so another replica may have claimed the rows already, and a release (due again at once)
 * would cut that replica's lease short and let a third claim send them twice
 * (docs/notifier.md "Claiming ahead"). */
#define NF_LEASE_MARGIN_MS 2000
bool nf_ready_lease_held(uint64_t claimed_at, uint64_t now, int64_t lease_ms);

/* ---- digest grouping ---- */

/* One claimed row; the strings point into the claim's PGresult and live as long as it. */
typedef struct nf_claimed_row {
  int64_t id;
  const char *recipient;
  const char *payload;
  int attempts;
  int64_t created_ms;
} nf_claimed_row;

/* Orders ROWS by recipient, then age (created_ms), then id, so that each recipient's rows are
 * adjacent and oldest first. */
void nf_digest_sort(nf_claimed_row *rows, size_t n);
/* The end (exclusive) of the digest that starts at START in sorted ROWS[0..N): the rows of
 * one recipient, at most DIGEST_MAX of them (the rest start the next digest). START < N. */
size_t nf_digest_end(const nf_claimed_row *rows, size_t n, size_t start, size_t digest_max);

/* ---- what an outcome does to its rows ---- */

typedef enum {
  NF_ROWS_SENT,    /* 250: state sent */
  NF_ROWS_RELEASE, /* cancelled (shutdown, out of memory): lease given back, nothing counted */
  NF_ROWS_DEFER,   /* the relay failed: due again at once, attempts unchanged */
  NF_ROWS_DEAD,    /* 5xx, or a mail that could not be composed: dead at once */
  NF_ROWS_RETRY    /* 4xx: one attempt counted; dead when attempts or queue lifetime run out
                    * (decided in SQL_RETRY against the database's clock) */
} nf_rows_action;

/* FORCED_DEAD: the mail could not even be composed (its rows are dead whatever OUTCOME). */
nf_rows_action nf_rows_action_for(bool forced_dead, kpi_smtp_outcome outcome);

/* The text kept in last_error for a failed mail: "ERROR (last reply: REPLY)", or ERROR alone,
 * or "unknown failure"; relay failures are prefixed "relay: ". Cut to fit OUT (SIZE > 0). */
void nf_outcome_error(const kpi_smtp_result *r, char *out, size_t size);

/* The reason a dead row's dead letter and log carry: FORCED when set, else the error with the
 * last reply, else the reply alone. Returns FORCED, R's own text, or BUF (filled). */
const char *nf_dead_reason(const char *forced, const kpi_smtp_result *r, char *buf, size_t size);

/* ---- configuration values ---- */

/* A duration such as "5d", "12h", "30m", "90s" or "1500ms" (a bare number is seconds) in
 * milliseconds, or -1 (NULL, not a number, an unknown unit, or beyond 100 years). The queue
 * lifetime KPI_NOTIFY_MAX_AGE is written this way. */
int64_t nf_duration_ms(const char *s);

/* True when S may be the dashboard link base: http:// or https://, printable ASCII, no
 * spaces. */
bool nf_dashboard_url_valid(const char *s);

/* Writes to BUF the link base that makes a mail's link the measure's report page,
 * <REPORT_BASE>/measures (trailing slashes of REPORT_BASE, KPI_REPORT_BASE_URL, dropped), so
 * that links read <REPORT_BASE>/measures/<measure_id>. Returns 0, or -1 when REPORT_BASE is
 * NULL, not a valid link base (nf_dashboard_url_valid) or too long for BUF. */
int nf_report_link_base(const char *report_base, char *buf, size_t size);

/* The base of the links in mails: REPORT (nf_report_link_base of KPI_REPORT_BASE_URL) when
 * set and not empty, else CONFIGURED (KPI_NOTIFY_DASHBOARD_URL) when set, else the catalog's
 * plan.dashboard_url when not empty, else NULL (no link). Never taken from an alert record.
 * REPORT, CONFIGURED and CAT may be NULL. */
const char *nf_dashboard_url_pick(const char *report, const char *configured,
                                  const kpi_catalog *cat);

#endif
