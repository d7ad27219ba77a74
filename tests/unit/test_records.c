/* test_records.c: kpi.retraction/1, kpi.acknowledgement/1 and the measurement's `corrects`:
 * inputs, records, round trips, refusals by field, record type sniffing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_records.h"

#define EV "0b6f3f3e-6a39-4c3e-9f5e-1d2c3b4a5f60"

static bool has_error(const kpi_errors *errs, const char *field, const char *code) {
  for (size_t i = 0; i < errs->n; i++)
    if (strcmp(errs->items[i].field, field) == 0 && strcmp(errs->items[i].code, code) == 0)
      return true;
  return false;
}

static void dump(const kpi_errors *errs) {
  for (size_t i = 0; i < errs->n; i++)
    fprintf(stderr, "  %s %s %s\n", errs->items[i].field, errs->items[i].code,
            errs->items[i].message);
}

static void test_type_of(void **state) {
  (void)state;
  const char *m = "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"x\"}";
  const char *m2 = "{\"event_id\":\"x\",\"schema\":\"kpi.measurement/1\"}";
  const char *r = "{\"schema\":\"kpi.retraction/1\"}";
  const char *a = " {\"note\":\"n\",\"schema\":\"kpi.acknowledgement/1\"}";
  const char *u = "{\"schema\":\"kpi.other/1\"}";
  assert_int_equal(kpi_record_type_of(m, strlen(m)), KPI_RECORD_MEASUREMENT);
  assert_int_equal(kpi_record_type_of(m2, strlen(m2)), KPI_RECORD_MEASUREMENT);
  assert_int_equal(kpi_record_type_of(r, strlen(r)), KPI_RECORD_RETRACTION);
  assert_int_equal(kpi_record_type_of(a, strlen(a)), KPI_RECORD_ACK);
  assert_int_equal(kpi_record_type_of(u, strlen(u)), KPI_RECORD_UNKNOWN);
  assert_int_equal(kpi_record_type_of("[", 1), KPI_RECORD_UNKNOWN);
  assert_int_equal(kpi_record_type_of("", 0), KPI_RECORD_UNKNOWN);
  assert_int_equal(kpi_record_type_of("{\"schema\":1}", 12), KPI_RECORD_UNKNOWN);
}

static void test_retraction_id(void **state) {
  (void)state;
  char a[KPI_UUID_STRLEN + 1], b[KPI_UUID_STRLEN + 1], c[KPI_UUID_STRLEN + 1];
  char d[KPI_UUID_STRLEN + 1], m[KPI_UUID_STRLEN + 1];
  kpi_retraction_id(EV, "g1-a", "kikaku", a);
  kpi_retraction_id("0B6F3F3E-6A39-4C3E-9F5E-1D2C3B4A5F60", "g1-a", "kikaku", b);
  kpi_retraction_id("1b6f3f3e-6a39-4c3e-9f5e-1d2c3b4a5f60", "g1-a", "kikaku", c);
  kpi_retraction_id(EV, "g1-a", "kankyo", d);
  kpi_retraction_id(EV, "g1-b", "kikaku", m);
  assert_int_equal(strlen(a), KPI_UUID_STRLEN);
  assert_string_equal(a, b);          /* case does not make another retraction */
  assert_string_not_equal(a, c);      /* another measurement does */
  assert_string_not_equal(a, d);      /* another department's (refused) one is not the owner's */
  assert_string_not_equal(a, m);      /* nor one filed under another measure */
  assert_string_not_equal(a, EV);     /* not the measurement's own id */
  assert_int_equal(a[14], '5');       /* version 5 */
}

static void test_retraction_input(void **state) {
  (void)state;
  kpi_retraction r;
  kpi_errors errs = {0};
  const char *ok = "{\"measure_id\":\"g1-a\",\"reason\":\"二重計上\"}";
  assert_int_equal(kpi_retraction_parse(ok, strlen(ok), KPI_PARSE_INPUT, &r, &errs), 0);
  assert_string_equal(r.measure_id, "g1-a");
  assert_string_equal(r.reason, "二重計上");

  struct { const char *body, *field, *code; } bad[] = {
      {"{\"measure_id\":\"g1-a\"}", "reason", "missing"},
      {"{\"measure_id\":\"g1-a\",\"reason\":\"\"}", "reason", "empty"},
      {"{\"measure_id\":\"g1-a\",\"reason\":7}", "reason", "type"},
      {"{\"reason\":\"x\"}", "measure_id", "missing"},
      {"{\"measure_id\":\"a b\",\"reason\":\"x\"}", "measure_id", "format"},
      {"{\"measure_id\":\"g1-a\",\"reason\":\"x\",\"department\":\"kikaku\"}", "department",
       "unknown_field"},
      {"[1]", "", "type"},
      {"{", "", "syntax"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    memset(&errs, 0, sizeof(errs));
    assert_int_equal(kpi_retraction_parse(bad[i].body, strlen(bad[i].body), KPI_PARSE_INPUT, &r,
                                          &errs), -1);
    if (!has_error(&errs, bad[i].field, bad[i].code)) {
      fprintf(stderr, "%s: wanted %s/%s\n", bad[i].body, bad[i].field, bad[i].code);
      dump(&errs);
      fail();
    }
  }
  char longer[KPI_REASON_MAX + 64];
  int n = snprintf(longer, sizeof(longer), "{\"measure_id\":\"g1-a\",\"reason\":\"");
  memset(longer + n, 'x', KPI_REASON_MAX + 1);
  strcpy(longer + n + KPI_REASON_MAX + 1, "\"}");
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(kpi_retraction_parse(longer, strlen(longer), KPI_PARSE_INPUT, &r, &errs), -1);
  assert_true(has_error(&errs, "reason", "too_long"));
}

static void test_retraction_round_trip(void **state) {
  (void)state;
  kpi_retraction r = {0}, back;
  strcpy(r.retracts, EV);
  strcpy(r.measure_id, "g1-a");
  strcpy(r.department, "kikaku");
  kpi_retraction_id(r.retracts, r.measure_id, r.department, r.event_id);
  strcpy(r.reason, "誤入力 \"quoted\"");
  strcpy(r.received_at, "2024-05-01T03:04:05.123Z");
  size_t len;
  char *s = kpi_retraction_encode(&r, &len);
  assert_non_null(s);
  assert_int_equal(kpi_record_type_of(s, len), KPI_RECORD_RETRACTION);
  kpi_errors errs = {0};
  int rc = kpi_retraction_parse(s, len, KPI_PARSE_RECORD, &back, &errs);
  dump(&errs);
  assert_int_equal(rc, 0);
  assert_string_equal(back.retracts, EV);
  assert_string_equal(back.event_id, r.event_id);
  assert_string_equal(back.reason, r.reason);
  assert_string_equal(back.department, "kikaku");
  assert_true(back.received_ms > 0);
  free(s);

  /* A record whose event_id is not derived from `retracts` is refused. */
  const char *forged = "{\"schema\":\"kpi.retraction/1\",\"event_id\":\"" EV "\",\"retracts\":\""
                       EV "\",\"measure_id\":\"g1-a\",\"department\":\"kikaku\",\"reason\":\"x\","
                       "\"received_at\":\"2024-05-01T03:04:05.123Z\"}";
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(kpi_retraction_parse(forged, strlen(forged), KPI_PARSE_RECORD, &back, &errs),
                   -1);
  assert_true(has_error(&errs, "event_id", "value"));
  /* A record without department or received_at is refused. */
  const char *thin = "{\"schema\":\"kpi.retraction/1\",\"measure_id\":\"g1-a\",\"reason\":\"x\"}";
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(kpi_retraction_parse(thin, strlen(thin), KPI_PARSE_RECORD, &back, &errs), -1);
  assert_true(has_error(&errs, "department", "missing"));
  assert_true(has_error(&errs, "received_at", "missing"));
  assert_true(has_error(&errs, "retracts", "missing"));
}

static void test_ack_input_and_until(void **state) {
  (void)state;
  kpi_ack a;
  kpi_errors errs = {0};
  const char *ok = "{\"note\":\"対応方針: 募集を強化\",\"until\":\"2024-12-31\"}";
  assert_int_equal(kpi_ack_parse(ok, strlen(ok), KPI_PARSE_INPUT, &a, &errs), 0);
  assert_true(a.has_until);
  kpi_time_parse("2024-12-01T10:00:00+09:00", &a.received_ms, NULL);
  assert_int_equal(kpi_ack_check(&a, &errs), 0);
  assert_string_equal(a.until, "2024-12-31");

  /* Absent: 28 days after the Japan day it was received. */
  const char *bare = "{\"note\":\"n\"}";
  assert_int_equal(kpi_ack_parse(bare, strlen(bare), KPI_PARSE_INPUT, &a, &errs), 0);
  assert_false(a.has_until);
  kpi_time_parse("2024-12-01T00:30:00+09:00", &a.received_ms, NULL); /* Nov 30 in UTC */
  assert_int_equal(kpi_ack_check(&a, &errs), 0);
  assert_string_equal(a.until, "2024-12-29");

  /* Before the day received, or more than a year ahead. */
  const char *past = "{\"note\":\"n\",\"until\":\"2024-11-30\"}";
  assert_int_equal(kpi_ack_parse(past, strlen(past), KPI_PARSE_INPUT, &a, &errs), 0);
  kpi_time_parse("2024-12-01T00:30:00+09:00", &a.received_ms, NULL);
  assert_int_equal(kpi_ack_check(&a, &errs), -1);
  assert_true(has_error(&errs, "until", "range"));
  const char *far = "{\"note\":\"n\",\"until\":\"2026-01-01\"}";
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(kpi_ack_parse(far, strlen(far), KPI_PARSE_INPUT, &a, &errs), 0);
  kpi_time_parse("2024-12-01T00:30:00+09:00", &a.received_ms, NULL);
  assert_int_equal(kpi_ack_check(&a, &errs), -1);

  struct { const char *body, *field, *code; } bad[] = {
      {"{}", "note", "missing"},
      {"{\"note\":\"\"}", "note", "empty"},
      {"{\"note\":\"n\",\"until\":\"2024-02-30\"}", "until", "format"},
      {"{\"note\":\"n\",\"until\":\"2024/12/31\"}", "until", "format"},
      {"{\"note\":\"n\",\"until\":\"2024-12-31x\"}", "until", "too_long"},
      {"{\"note\":\"n\",\"event_id\":\"nope\"}", "event_id", "format"},
      {"{\"note\":\"n\",\"measure_id\":\"g1-a\"}", "measure_id", "unknown_field"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    memset(&errs, 0, sizeof(errs));
    assert_int_equal(kpi_ack_parse(bad[i].body, strlen(bad[i].body), KPI_PARSE_INPUT, &a, &errs),
                     -1);
    if (!has_error(&errs, bad[i].field, bad[i].code)) {
      fprintf(stderr, "%s: wanted %s/%s\n", bad[i].body, bad[i].field, bad[i].code);
      dump(&errs);
      fail();
    }
  }
  /* 2048 bytes of note pass, 2049 do not. */
  char body[KPI_ACK_NOTE_MAX + 64];
  for (int extra = 0; extra <= 1; extra++) {
    int n = snprintf(body, sizeof(body), "{\"note\":\"");
    memset(body + n, 'x', (size_t)(KPI_ACK_NOTE_MAX + extra));
    strcpy(body + n + KPI_ACK_NOTE_MAX + extra, "\"}");
    memset(&errs, 0, sizeof(errs));
    assert_int_equal(kpi_ack_parse(body, strlen(body), KPI_PARSE_INPUT, &a, &errs),
                     extra ? -1 : 0);
  }
}

static void test_ack_round_trip(void **state) {
  (void)state;
  kpi_ack a = {0}, back;
  strcpy(a.event_id, EV);
  strcpy(a.measure_id, "g1-a");
  strcpy(a.department, "kikaku");
  strcpy(a.note, "対応方針：秋に再募集\n担当 山田");
  strcpy(a.until, "2025-01-31");
  a.has_until = true;
  strcpy(a.received_at, "2024-12-01T00:00:00.000Z");
  size_t len;
  char *s = kpi_ack_encode(&a, &len);
  assert_non_null(s);
  assert_int_equal(kpi_record_type_of(s, len), KPI_RECORD_ACK);
  kpi_errors errs = {0};
  assert_int_equal(kpi_ack_parse(s, len, KPI_PARSE_RECORD, &back, &errs), 0);
  assert_string_equal(back.note, a.note);
  assert_string_equal(back.until, "2025-01-31");
  assert_true(back.has_until);
  assert_string_equal(back.department, "kikaku");
  free(s);
  /* Records need `until` and the identity members. */
  const char *thin = "{\"schema\":\"kpi.acknowledgement/1\",\"note\":\"n\"}";
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(kpi_ack_parse(thin, strlen(thin), KPI_PARSE_RECORD, &back, &errs), -1);
  assert_true(has_error(&errs, "until", "missing"));
  assert_true(has_error(&errs, "event_id", "missing"));
  assert_true(has_error(&errs, "measure_id", "missing"));
}

static void test_measurement_corrects(void **state) {
  (void)state;
  kpi_measurement m, back;
  kpi_errors errs = {0};
  const char *in = "{\"measure_id\":\"g1-a\",\"observed_at\":\"2024-03-31\",\"value\":3,"
                   "\"unit\":\"person\",\"corrects\":{\"event_id\":\"" EV "\",\"reason\":\"桁誤り\"}}";
  assert_int_equal(kpi_measurement_parse(in, strlen(in), KPI_PARSE_INPUT, &m, &errs), 0);
  assert_true(m.has_corrects);
  assert_string_equal(m.corrects, EV);
  assert_string_equal(m.corrects_reason, "桁誤り");
  strcpy(m.event_id, "1b6f3f3e-6a39-4c3e-9f5e-1d2c3b4a5f60");
  strcpy(m.department, "kikaku");
  strcpy(m.received_at, "2024-05-01T03:04:05.123Z");
  size_t len;
  char *s = kpi_measurement_encode(&m, &len);
  assert_non_null(s);
  assert_int_equal(strlen(s), len);
  assert_int_equal(kpi_measurement_parse(s, len, KPI_PARSE_RECORD, &back, &errs), 0);
  assert_true(back.has_corrects);
  assert_string_equal(back.corrects, EV);
  assert_string_equal(back.corrects_reason, "桁誤り");
  free(s);
  /* Without corrects, nothing of it in the record. */
  m.has_corrects = false;
  s = kpi_measurement_encode(&m, &len);
  assert_null(strstr(s, "corrects"));
  free(s);

  struct { const char *corrects, *field, *code; } bad[] = {
      {"\"x\"", "corrects", "type"},
      {"{\"reason\":\"r\"}", "corrects.event_id", "missing"},
      {"{\"event_id\":\"nope\",\"reason\":\"r\"}", "corrects.event_id", "format"},
      {"{\"event_id\":\"" EV "\"}", "corrects.reason", "missing"},
      {"{\"event_id\":\"" EV "\",\"reason\":\"r\",\"by\":1}", "corrects", "unknown_field"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char body[512];
    snprintf(body, sizeof(body),
             "{\"measure_id\":\"g1-a\",\"observed_at\":\"2024-03-31\",\"value\":3,"
             "\"unit\":\"person\",\"corrects\":%s}", bad[i].corrects);
    memset(&errs, 0, sizeof(errs));
    assert_int_equal(kpi_measurement_parse(body, strlen(body), KPI_PARSE_INPUT, &m, &errs), -1);
    if (!has_error(&errs, bad[i].field, bad[i].code)) {
      fprintf(stderr, "%s: wanted %s/%s\n", body, bad[i].field, bad[i].code);
      dump(&errs);
      fail();
    }
  }
  /* A measurement cannot correct itself. */
  const char *self = "{\"event_id\":\"" EV "\",\"measure_id\":\"g1-a\",\"observed_at\":"
                     "\"2024-03-31\",\"value\":3,\"unit\":\"person\",\"corrects\":{\"event_id\":\""
                     EV "\",\"reason\":\"r\"}}";
  memset(&errs, 0, sizeof(errs));
  assert_int_equal(kpi_measurement_parse(self, strlen(self), KPI_PARSE_INPUT, &m, &errs), -1);
  assert_true(has_error(&errs, "corrects.event_id", "value"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_type_of),          cmocka_unit_test(test_retraction_id),
      cmocka_unit_test(test_retraction_input), cmocka_unit_test(test_retraction_round_trip),
      cmocka_unit_test(test_ack_input_and_until), cmocka_unit_test(test_ack_round_trip),
      cmocka_unit_test(test_measurement_corrects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
