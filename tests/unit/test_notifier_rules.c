/* test_notifier_rules.c: the notifier's pure rules (services/notifier/nf_rules.c, through the
 * kpi_notifier library): retry and probe backoff, relay state transitions, claim capacity,
 * digest grouping, what an SMTP outcome does to its rows, the queue lifetime's durations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nf_rules.h"

/* base * 2^(attempts-1), capped; attempts below 1 count as 1. */
static void test_backoff_nominal(void **state) {
  (void)state;
  static const struct {
    int64_t attempts, base, max, want;
  } cases[] = {
      {0, 1000, 300000, 1000},   {1, 1000, 300000, 1000},   {2, 1000, 300000, 2000},
      {3, 1000, 300000, 4000},   {9, 1000, 300000, 256000}, {10, 1000, 300000, 300000},
      {1000, 1000, 300000, 300000}, {-5, 1000, 300000, 1000}, {4, 1000, 1000, 1000},
      {3, 1, 3, 3},              {1, 5000, 3000, 3000},     /* base above the cap: capped */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(nf_backoff_nominal_ms(cases[i].attempts, cases[i].base, cases[i].max),
                     cases[i].want);
}

/* Equal jitter: half fixed, half random, never above the nominal delay. */
static void test_backoff_jitter(void **state) {
  (void)state;
  static const struct {
    int64_t nominal;
    long r;
    int64_t want;
  } cases[] = {
      {1000, 0, 500},    {1000, 500, 1000}, {1000, 501, 500}, {1000, 250, 750},
      {1, 12345, 0},     {0, 7, 0},         {3, 1, 2},        {3, 2, 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(nf_backoff_jitter_ms(cases[i].nominal, cases[i].r), cases[i].want);
  srandom(7);
  for (int64_t a = 1; a <= 12; a++)
    for (int k = 0; k < 100; k++) {
      int64_t nominal = nf_backoff_nominal_ms(a, 1000, 300000);
      int64_t d = nf_backoff_ms(a, 1000, 300000);
      assert_true(d >= nominal / 2 && d <= nominal);
    }
}

static void test_consume_backoff(void **state) {
  (void)state;
  static const uint64_t want[] = {250, 500, 1000, 2000, 4000, 8000, 10000, 10000};
  uint64_t d = 0;
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    d = nf_consume_backoff_next_ms(d);
    assert_int_equal(d, want[i]);
  }
}

/* Down once, up once; the probe backoff grows with failures and resets on any answer. */
static void test_relay_transitions(void **state) {
  (void)state;
  nf_relay r;
  nf_relay_init(&r);
  assert_true(r.up);
  assert_false(r.probe_inflight);
  assert_int_equal(r.backoff_n, 0);
  assert_false(nf_relay_mark_up(&r)); /* already up */

  assert_true(nf_relay_mark_down(&r, 1000));
  assert_false(r.up);
  assert_int_equal(r.down_since, 1000);
  assert_int_equal(r.backoff_n, 1);
  /* Mails still in the client fail on their own: no second transition, no extra backoff. */
  assert_false(nf_relay_mark_down(&r, 2000));
  assert_int_equal(r.down_since, 1000);
  assert_int_equal(r.backoff_n, 1);

  nf_relay_probe_failed(&r);
  nf_relay_probe_failed(&r);
  assert_int_equal(r.backoff_n, 3);
  for (int k = 0; k < 50; k++) {
    int64_t d = nf_relay_probe_delay_ms(&r, 1000, 30000);
    assert_true(d >= 2000 && d <= 4000); /* nominal 4000 at the third step */
  }
  nf_relay_answered(&r);
  assert_int_equal(r.backoff_n, 0);
  assert_false(r.up); /* answering resets the backoff; the caller brings it up */
  assert_true(nf_relay_mark_up(&r));
  assert_true(r.up);
  assert_false(nf_relay_mark_up(&r));

  /* Down again: the backoff starts over from one step. */
  assert_true(nf_relay_mark_down(&r, 5000));
  assert_int_equal(r.backoff_n, 1);
  for (int k = 0; k < 50; k++) {
    int64_t d = nf_relay_probe_delay_ms(&r, 1000, 30000);
    assert_true(d >= 500 && d <= 1000);
  }
  /* The probe delay is capped. */
  for (int k = 0; k < 20; k++) nf_relay_probe_failed(&r);
  for (int k = 0; k < 50; k++) {
    int64_t d = nf_relay_probe_delay_ms(&r, 1000, 30000);
    assert_true(d >= 15000 && d <= 30000);
  }
}

static void test_claim_capacity(void **state) {
  (void)state;
  assert_int_equal(nf_send_capacity(1), NF_MAILS_PER_CONNECTION);
  assert_int_equal(nf_send_capacity(4), 4 * NF_MAILS_PER_CONNECTION);
  assert_int_equal(nf_send_capacity(0), 0);
  static const struct {
    size_t cap, inflight, slots;
  } slots[] = {{16, 0, 16}, {16, 5, 11}, {16, 15, 1}, {16, 16, 0}, {16, 20, 0}, {0, 0, 0}};
  for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
    assert_int_equal(nf_claim_slots(slots[i].cap, slots[i].inflight), slots[i].slots);
  static const struct {
    bool again;
    size_t inflight, cap;
    bool want;
  } burst[] = {
      {true, 0, 16, true},   {true, 8, 16, true},   {true, 9, 16, false},
      {false, 0, 16, false}, {true, 2, 4, true},    {true, 3, 4, false},
  };
  for (size_t i = 0; i < sizeof(burst) / sizeof(burst[0]); i++)
    assert_int_equal(nf_claim_burst_now(burst[i].again, burst[i].inflight, burst[i].cap),
                     burst[i].want);
  /* Room counts mails still in SMTP against the capacity, and every unwritten outcome against
   * twice the capacity: finished mails waiting for the batched UPDATE free their connection,
   * but a slow database cannot pile up more than 2 x capacity of them. */
  static const struct {
    size_t cap, in_smtp, unwritten, room;
  } room[] = {
      {16, 0, 0, 16},  {16, 4, 20, 12}, {16, 0, 16, 16}, {16, 0, 24, 8}, {16, 2, 31, 1},
      {16, 0, 32, 0},  {16, 16, 16, 0}, {16, 17, 17, 0}, {4, 1, 4, 3},   {4, 0, 8, 0},
  };
  for (size_t i = 0; i < sizeof(room) / sizeof(room[0]); i++)
    assert_int_equal(nf_claim_room(room[i].cap, room[i].in_smtp, room[i].unwritten), room[i].room);
}

/* Rows of several recipients, shuffled: each digest is one recipient's rows, oldest first,
 * at most digest_max of them. */
/* Claiming ahead: the depth doubles from the send capacity while claims come back full, is
 * capped by KPI_NOTIFY_PREFETCH, and falls to 0 as soon as a claim comes back short; a claimed
 * mail may wait for a connection only as long as its lease leaves 5 transaction timeouts. */
static void test_claim_ahead(void **state) {
  (void)state;
  static const struct {
    size_t ahead, cap, max;
    bool full;
    size_t next;
  } steps[] = {
      {0, 16, 128, true, 16},   {16, 16, 128, true, 32},  {32, 16, 128, true, 64},
      {64, 16, 128, true, 128}, {128, 16, 128, true, 128}, {128, 16, 128, false, 0},
      {64, 16, 100, true, 100}, {0, 16, 0, true, 0},       {0, 4, 128, false, 0},
  };
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
    assert_int_equal(nf_claim_ahead_next(steps[i].ahead, steps[i].cap, steps[i].max, steps[i].full),
                     steps[i].next);
  /* Defaults: 600 s lease, 60 s transactions: a claimed mail may wait 300 s. */
  assert_int_equal(nf_ready_hold_ms(600000, 60000), 300000);
  assert_int_equal(nf_ready_hold_ms(10100, 2000), 100);
  assert_int_equal(nf_ready_hold_ms(300000, 60000), -1);
  assert_int_equal(nf_ready_hold_ms(1000, 60000), -1);
  static const struct {
    uint64_t claimed, now;
    int64_t hold;
    bool expired;
  } waits[] = {
      {1000, 1000, 100, false}, {1000, 1100, 100, false}, {1000, 1101, 100, true},
      {1000, 999, 100, false},  {1000, 9000000, -1, false}, {1000, 1001, 0, true},
  };
  for (size_t i = 0; i < sizeof(waits) / sizeof(waits[0]); i++)
    assert_int_equal(nf_ready_expired(waits[i].claimed, waits[i].now, waits[i].hold),
                     waits[i].expired);
  /* The release only while the lease is certainly still this claim's (NF_LEASE_MARGIN_MS to
   * spare); after that the mail is dropped, never released over another replica's claim. */
  assert_true(nf_ready_lease_held(1000, 1000, 600000));
  assert_true(nf_ready_lease_held(1000, 1000 + 600000 - NF_LEASE_MARGIN_MS - 1, 600000));
  assert_false(nf_ready_lease_held(1000, 1000 + 600000 - NF_LEASE_MARGIN_MS, 600000));
  assert_false(nf_ready_lease_held(1000, 1000 + 10 * 600000, 600000));
  assert_true(nf_ready_lease_held(5000, 4000, 600000)); /* clock not past the claim */
}

static void test_digest_grouping(void **state) {
  (void)state;
  nf_claimed_row rows[] = {
      {.id = 7, .recipient = "b@x", .created_ms = 30}, {.id = 1, .recipient = "a@x", .created_ms = 10},
      {.id = 9, .recipient = "a@x", .created_ms = 5},  {.id = 3, .recipient = "b@x", .created_ms = 30},
      {.id = 4, .recipient = "a@x", .created_ms = 10}, {.id = 2, .recipient = "c@x", .created_ms = 1},
      {.id = 5, .recipient = "a@x", .created_ms = 20},
  };
  size_t n = sizeof(rows) / sizeof(rows[0]);
  nf_digest_sort(rows, n);
  static const int64_t order[] = {9, 1, 4, 5, 3, 7, 2}; /* recipient, age, then id */
  for (size_t i = 0; i < n; i++) assert_int_equal(rows[i].id, order[i]);

  static const struct {
    size_t digest_max;
    size_t ends[8]; /* 0-terminated */
  } cases[] = {
      {50, {4, 6, 7}},
      {4, {4, 6, 7}},
      {3, {3, 4, 6, 7}},
      {2, {2, 4, 6, 7}},
      {1, {1, 2, 3, 4, 5, 6, 7}},
  };
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    size_t k = 0;
    for (size_t start = 0, end; start < n; start = end, k++) {
      end = nf_digest_end(rows, n, start, cases[c].digest_max);
      assert_int_equal(end, cases[c].ends[k]);
    }
    assert_int_equal(cases[c].ends[k], 0);
  }
}

static void test_rows_action(void **state) {
  (void)state;
  static const struct {
    bool forced;
    kpi_smtp_outcome outcome;
    nf_rows_action want;
  } cases[] = {
      {false, KPI_SMTP_SENT, NF_ROWS_SENT},         {false, KPI_SMTP_TRANSIENT, NF_ROWS_RETRY},
      {false, KPI_SMTP_PERMANENT, NF_ROWS_DEAD},    {false, KPI_SMTP_CANCELLED, NF_ROWS_RELEASE},
      {false, KPI_SMTP_RELAY, NF_ROWS_DEFER},       {true, KPI_SMTP_SENT, NF_ROWS_DEAD},
      {true, KPI_SMTP_CANCELLED, NF_ROWS_DEAD},     {true, KPI_SMTP_RELAY, NF_ROWS_DEAD},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(nf_rows_action_for(cases[i].forced, cases[i].outcome), cases[i].want);
}

static void test_outcome_texts(void **state) {
  (void)state;
  static const struct {
    kpi_smtp_outcome outcome;
    const char *error, *reply, *want_error, *want_dead;
  } cases[] = {
      {KPI_SMTP_TRANSIENT, "busy", "451 4.3.0 later", "busy (last reply: 451 4.3.0 later)",
       "busy (last reply: 451 4.3.0 later)"},
      {KPI_SMTP_TRANSIENT, "busy", "", "busy", "busy"},
      {KPI_SMTP_PERMANENT, "", "550 no", " (last reply: 550 no)", "550 no"},
      {KPI_SMTP_TRANSIENT, "", "", "unknown failure", ""},
      {KPI_SMTP_RELAY, "timeout", "", "relay: timeout", "timeout"},
      {KPI_SMTP_RELAY, "", "", "relay: unknown failure", ""},
      {KPI_SMTP_RELAY, "lost", "421 bye", "relay: lost (last reply: 421 bye)",
       "lost (last reply: 421 bye)"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    kpi_smtp_result r;
    memset(&r, 0, sizeof(r));
    r.outcome = cases[i].outcome;
    snprintf(r.error, sizeof(r.error), "%s", cases[i].error);
    snprintf(r.reply, sizeof(r.reply), "%s", cases[i].reply);
    char out[600], buf[600];
    nf_outcome_error(&r, out, sizeof(out));
    assert_string_equal(out, cases[i].want_error);
    assert_string_equal(nf_dead_reason(NULL, &r, buf, sizeof(buf)), cases[i].want_dead);
    assert_string_equal(nf_dead_reason("forced", &r, buf, sizeof(buf)), "forced");
  }
}

/* KPI_NOTIFY_MAX_AGE, the queue lifetime (the service refuses anything under 1 s). */
static void test_duration(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t want;
  } cases[] = {
      {"5d", 5LL * 86400000}, {"12h", 12LL * 3600000}, {"30m", 1800000}, {"90s", 90000},
      {"90", 90000},          {"1500ms", 1500},        {"0", 0},          {"0ms", 0},
      {"", -1},               {"d", -1},               {"-1s", -1},       {" 5s", -1},
      {"5 s", -1},            {"5x", -1},              {"5dd", -1},       {"1.5h", -1},
      {"99999999999999999999", -1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(nf_duration_ms(cases[i].s), cases[i].want);
  assert_int_equal(nf_duration_ms(NULL), -1);
}

static void test_dashboard_url(void **state) {
  (void)state;
  static const struct {
    const char *s;
    bool ok;
  } cases[] = {
      {"https://kpi.example/", true}, {"http://x", true},      {"ftp://x", false},
      {"https://a b", false},         {"https://\x7f", false}, {"https://\xe3\x81\x82", false},
      {"", false},                    {"HTTPS://x", false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_int_equal(nf_dashboard_url_valid(cases[i].s), cases[i].ok);
  kpi_catalog cat;
  memset(&cat, 0, sizeof(cat));
  assert_null(nf_dashboard_url_pick(NULL, NULL, NULL));
  assert_null(nf_dashboard_url_pick("", NULL, &cat));
  cat.dashboard_url = "";
  assert_null(nf_dashboard_url_pick(NULL, NULL, &cat));
  cat.dashboard_url = "https://cat/";
  assert_string_equal(nf_dashboard_url_pick(NULL, NULL, &cat), "https://cat/");
  assert_string_equal(nf_dashboard_url_pick("", "https://cfg/", &cat), "https://cfg/");
  /* The report's measure pages win over both when KPI_REPORT_BASE_URL is set. */
  assert_string_equal(nf_dashboard_url_pick("http://r/measures", "https://cfg/", &cat),
                      "http://r/measures");
  assert_string_equal(nf_dashboard_url_pick("http://r/measures", NULL, NULL), "http://r/measures");
}

static void test_report_link_base(void **state) {
  (void)state;
  static const struct {
    const char *in, *want; /* want NULL: refused */
  } cases[] = {
      {"http://127.0.0.1:8083", "http://127.0.0.1:8083/measures"},
      {"http://127.0.0.1:8083/", "http://127.0.0.1:8083/measures"},
      {"https://kpi.city.example/report//", "https://kpi.city.example/report/measures"},
      {"ftp://x", NULL},
      {"http://a b", NULL},
      {"", NULL},
      {NULL, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char buf[64] = "untouched";
    int rc = nf_report_link_base(cases[i].in, buf, sizeof(buf));
    if (!cases[i].want) {
      assert_int_equal(rc, -1);
    } else {
      assert_int_equal(rc, 0);
      assert_string_equal(buf, cases[i].want);
    }
  }
  char small[16];
  assert_int_equal(nf_report_link_base("http://127.0.0.1:8083", small, sizeof(small)), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_report_link_base),  cmocka_unit_test(test_backoff_nominal),   cmocka_unit_test(test_backoff_jitter),
      cmocka_unit_test(test_consume_backoff),   cmocka_unit_test(test_relay_transitions),
      cmocka_unit_test(test_claim_capacity),    cmocka_unit_test(test_claim_ahead),
      cmocka_unit_test(test_digest_grouping),
      cmocka_unit_test(test_rows_action),       cmocka_unit_test(test_outcome_texts),
      cmocka_unit_test(test_duration),          cmocka_unit_test(test_dashboard_url),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
