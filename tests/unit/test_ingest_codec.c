/* test_ingest_codec.c: kpi_measurement_encode, the record writer on ingest's hot path, against
 * the cJSON printer it replaced: the same bytes for every value and string tried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_codec.h"

/* The encoder as it was: a cJSON tree printed unformatted. */
static char *reference_encode(const kpi_measurement *m) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "schema", KPI_MEASUREMENT_SCHEMA);
  cJSON_AddStringToObject(o, "event_id", m->event_id);
  cJSON_AddStringToObject(o, "measure_id", m->measure_id);
  cJSON_AddStringToObject(o, "department", m->department);
  cJSON_AddStringToObject(o, "observed_at", m->observed_at);
  cJSON_AddNumberToObject(o, "value", m->value);
  cJSON_AddStringToObject(o, "unit", m->unit);
  if (m->component != KPI_COMPONENT_NONE)
    cJSON_AddStringToObject(o, "component", kpi_component_name(m->component));
  if (m->has_note) cJSON_AddStringToObject(o, "note", m->note);
  cJSON_AddStringToObject(o, "received_at", m->received_at);
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return s;
}

static void base(kpi_measurement *m) {
  memset(m, 0, sizeof(*m));
  strcpy(m->event_id, "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b");
  strcpy(m->measure_id, "g4-carbon-2-led-rate");
  strcpy(m->department, "kankyo");
  strcpy(m->observed_at, "2024-05-01");
  strcpy(m->unit, "percent");
  strcpy(m->received_at, "2024-05-01T00:00:00.000Z");
  m->value = 20.5;
}

static void expect_same(const kpi_measurement *m) {
  size_t len = 0;
  char *got = kpi_measurement_encode(m, &len);
  char *want = reference_encode(m);
  assert_non_null(got);
  assert_non_null(want);
  if (strcmp(got, want) != 0) fail_msg("value %.17g:\n got  %s\n want %s", m->value, got, want);
  assert_int_equal(len, strlen(want));
  /* kpi_measurement_encode_buf (the batch path): the same bytes, appended after what the
   * buffer holds, twice in a row. */
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_add(&b, "prefix", 6);
  assert_int_equal(kpi_measurement_encode_buf(m, &b), 0);
  assert_int_equal(kpi_measurement_encode_buf(m, &b), 0);
  assert_int_equal(b.len, 6 + 2 * len);
  assert_memory_equal(b.s + 6, want, len);
  assert_memory_equal(b.s + 6 + len, want, len);
  assert_int_equal(b.s[b.len], '\0');
  kpi_buf_free(&b);
  free(got);
  cJSON_free(want);
}

static void same_for_value(double v) {
  kpi_measurement m;
  base(&m);
  m.value = v;
  expect_same(&m);
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static void test_numbers(void **state) {
  (void)state;
  static const double edge[] = {0.0, -0.0, 1, -1, 0.5, 20.5, 12.4, 35.7, 96, 100, 100.0000001,
                                0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 1e-4, 9.9999e-5, 1.5e-4,
                                0.0001234, 0.00012345, 1e-5, 1e-7, 123456.789012, 0.1234567,
                                999999999999999.0, 1e15, 1e15 + 1, 123456789012345.6,
                                12345678901234.56, 2147483647.0, 2147483648.0, -2147483648.0,
                                -2147483649.0, 4294967296.5, 9007199254740992.0, 1e20, 1e300,
                                DBL_MAX, DBL_MIN, DBL_TRUE_MIN, -DBL_MAX, 5e-324, 0.05, 0.15,
                                0.25, 0.35, 0.45, 1.005, 2.675, 1.0000005, 0.9999995,
                                99999.9999995, 1e14 + 0.5, 1e13 + 0.25, 314.159265358979,
                                NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) same_for_value(edge[i]);
  /* Decimals as clients write them: n / 10^k, and their neighbours. */
  static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
  for (int i = 0; i < 300000; i++) {
    uint64_t r = next_rand();
    int k = (int)(r % 9);
    long long n = (long long)((r >> 8) % (i % 3 == 0 ? 100000ULL : 10000000000000000ULL));
    double v = (double)n / p10[k];
    if (r & (1ULL << 62)) v = -v;
    same_for_value(v);
    if (i % 7 == 0) same_for_value(nextafter(v, INFINITY));
  }
  /* Any bit pattern. */
  for (int i = 0; i < 200000; i++) {
    uint64_t bits = next_rand();
    double v;
    memcpy(&v, &bits, sizeof(v));
    same_for_value(v);
  }
}

static void test_strings(void **state) {
  (void)state;
  kpi_measurement m;
  /* Every byte value in every string member, alone and between others. */
  for (int c = 1; c < 256; c++) {
    base(&m);
    m.has_note = true;
    snprintf(m.note, sizeof(m.note), "a%cb%c", c, c);
    snprintf(m.unit, sizeof(m.unit), "%c", c);
    snprintf(m.observed_at, sizeof(m.observed_at), "x%cy", c);
    snprintf(m.department, sizeof(m.department), "%c%c", c, c);
    expect_same(&m);
  }
  base(&m);
  m.has_note = true;
  strcpy(m.note, "応援団の登録者数（年度末）\"quoted\" back\\slash /slash \x7f tab\t nl\n");
  m.component = KPI_COMPONENT_NUMERATOR;
  expect_same(&m);
  m.component = KPI_COMPONENT_DENOMINATOR;
  m.has_note = false;
  expect_same(&m);
  /* Empty strings and the longest note. */
  base(&m);
  m.event_id[0] = m.department[0] = m.received_at[0] = '\0';
  expect_same(&m);
  m.has_note = true;
  memset(m.note, '\x01', KPI_NOTE_MAX);
  m.note[KPI_NOTE_MAX] = '\0';
  expect_same(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_strings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
