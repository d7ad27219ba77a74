/* fuzz_codec.c: libFuzzer target for the measurement codec: parse, check, encode, re-parse. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_check.h"
#include "kpi_catalog.h"
#include "kpi_codec.h"
#include "kpi_json.h"

/* The shipped catalog, so that measure ids, units and kinds in the seeds are real. */
static kpi_catalog *catalog;

/* A fixed "now" keeps kpi_measurement_check deterministic: 2025-01-01T00:00:00Z. */
#define NOW_MS INT64_C(1735689600000)


int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *path = getenv("KPI_CATALOG");
  if (!path) path = KPI_SOURCE_DIR "/config/catalog.json";
  char err[512];
  catalog = kpi_catalog_load_flags(path, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof err);
  if (!catalog) {
    fprintf(stderr, "fuzz_codec: %s\n", err);
    exit(1);
  }
  return 0;
}

/* Every error goes into a problem+json body: its strings must be terminated, valid UTF-8. */
static void check_errors(const kpi_errors *errs) {
  CHECK(errs->n <= KPI_ERRORS_MAX, "%zu errors", errs->n);
  for (size_t i = 0; i < errs->n; i++) {
    const kpi_field_error *e = &errs->items[i];
    CHECK(memchr(e->field, 0, sizeof e->field) && memchr(e->code, 0, sizeof e->code) &&
              memchr(e->message, 0, sizeof e->message),
          "unterminated error %zu", i);
    CHECK(kpi_json_utf8_valid(e->field, strlen(e->field)), "field of error %zu", i);
    CHECK(kpi_json_utf8_valid(e->message, strlen(e->message)), "message of error %zu", i);
  }
  cJSON *arr = kpi_errors_to_json(errs);
  cJSON_Delete(arr);
}

/* cJSON prints 15 significant digits when they read back within one DBL_EPSILON of the
 * value (compare_double), and the encoder mirrors cJSON byte for byte, so a record may carry
 * a neighbour of the accepted double, never anything further away. */
static int same_value(double a, double b) {
  return a == b || fabs(a - b) <= 2 * DBL_EPSILON * fmax(fabs(a), fabs(b));
}

static void check_same(const kpi_measurement *a, const kpi_measurement *b) {
  CHECK(strcmp(a->event_id, b->event_id) == 0, "event_id");
  CHECK(strcmp(a->measure_id, b->measure_id) == 0, "measure_id");
  CHECK(strcmp(a->department, b->department) == 0, "department");
  CHECK(strcmp(a->observed_at, b->observed_at) == 0, "observed_at");
  CHECK(a->observed_ms == b->observed_ms && a->observed_day == b->observed_day, "observed");
  CHECK(same_value(a->value, b->value), "value %.17g became %.17g", a->value, b->value);
  CHECK(strcmp(a->unit, b->unit) == 0, "unit");
  CHECK(a->component == b->component, "component");
  CHECK(a->has_note == b->has_note && strcmp(a->note, b->note) == 0, "note");
  CHECK(strcmp(a->received_at, b->received_at) == 0, "received_at");
}

/* Encodes M, parses the encoding as a record, and checks that nothing changed; then that
 * encoding is a fixed point (the same bytes the second time). */
static void round_trip(const kpi_measurement *m) {
  size_t len = 0;
  char *json = kpi_measurement_encode(m, &len);
  CHECK(json != NULL, "encode failed");
  CHECK(strlen(json) == len, "length %zu, strlen %zu", len, strlen(json));
  kpi_measurement back;
  kpi_errors errs = {0};
  int rc = kpi_measurement_parse(json, len, KPI_PARSE_RECORD, &back, &errs);
  CHECK(rc == 0, "own record rejected: %s: %s (%s)", errs.n ? errs.items[0].field : "",
        errs.n ? errs.items[0].message : "", json);
  check_same(m, &back);
  size_t len2 = 0;
  char *json2 = kpi_measurement_encode(&back, &len2);
  CHECK(json2 && len2 == len && memcmp(json, json2, len) == 0, "not a fixed point: %s / %s",
        json, json2 ? json2 : "(null)");
  free(json2);
  free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  kpi_measurement m;
  kpi_errors errs = {0};

  /* A department's request body. */
  if (kpi_measurement_parse(text, size, KPI_PARSE_INPUT, &m, &errs) == 0) {
    CHECK(errs.n == 0, "success with %zu errors", errs.n);
    kpi_errors cerrs = {0};
    const kpi_measure *ms = kpi_measurement_check(&m, catalog, NOW_MS, &cerrs);
    CHECK((ms != NULL) == (cerrs.n == 0), "check result and errors disagree");
    check_errors(&cerrs);
    /* What the ingest adds before it writes the record. */
    if (!m.event_id[0]) strcpy(m.event_id, "0b6f3a52-7c1d-4e8f-9a2b-3c4d5e6f7a8b");
    if (!m.department[0]) strcpy(m.department, "kikaku");
    strcpy(m.received_at, "2024-06-01T00:00:00.000Z");
    m.received_ms = INT64_C(1717200000000);
    round_trip(&m);
  } else {
    CHECK(errs.n > 0, "failure without an error");
  }
  check_errors(&errs);

  /* A record read back from Kafka. */
  kpi_errors rerrs = {0};
  if (kpi_measurement_parse(text, size, KPI_PARSE_RECORD, &m, &rerrs) == 0) round_trip(&m);
  else CHECK(rerrs.n > 0, "record failure without an error");
  check_errors(&rerrs);
  return 0;
}
