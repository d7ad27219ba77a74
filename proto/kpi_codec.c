/* kpi_codec.c: measurement and alert records to and from JSON, with field-level errors. */
#include "kpi_codec.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kpi_json.h"

/* Cuts a NUL-terminated string that snprintf may have truncated back to the last whole UTF-8
 * character, so that a long field name or message never puts invalid UTF-8 into a response. */
static void trim_partial_utf8(char *s) {
  size_t n = strlen(s);
  size_t i = n;
  while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--; /* continuation bytes */
  if (i == 0) return;
  unsigned char lead = (unsigned char)s[i - 1];
  size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
  if (n - (i - 1) < want) s[i - 1] = '\0';
}

void kpi_errors_add(kpi_errors *errs, const char *field, const char *code, const char *fmt, ...) {
  if (!errs || errs->n >= KPI_ERRORS_MAX) return;
  kpi_field_error *e = &errs->items[errs->n++];
  snprintf(e->field, sizeof(e->field), "%s", field);
  trim_partial_utf8(e->field);
  snprintf(e->code, sizeof(e->code), "%s", code);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof(e->message), fmt, ap);
  va_end(ap);
  trim_partial_utf8(e->message);
}

cJSON *kpi_errors_to_json(const kpi_errors *errs) {
  cJSON *arr = cJSON_CreateArray();
  if (!arr) return NULL;
  for (size_t i = 0; i < errs->n; i++) {
    cJSON *o = cJSON_CreateObject();
    if (!o) break;
    cJSON_AddStringToObject(o, "field", errs->items[i].field);
    cJSON_AddStringToObject(o, "code", errs->items[i].code);
    cJSON_AddStringToObject(o, "message", errs->items[i].message);
    cJSON_AddItemToArray(arr, o);
  }
  return arr;
}

const char *kpi_component_name(kpi_component c) {
  switch (c) {
    case KPI_COMPONENT_NUMERATOR: return "numerator";
    case KPI_COMPONENT_DENOMINATOR: return "denominator";
    default: return NULL;
  }
}

/* Copies string member IT (named NAME; NULL when absent) into DST (size SIZE). Returns 1 when
 * present and valid, 0 when absent, -1 when present but wrong (error already added). */
static int take_string_item(const cJSON *it, const char *name, char *dst, size_t size,
                            kpi_errors *errs) {
  if (!it || cJSON_IsNull(it)) return 0;
  if (!cJSON_IsString(it)) {
    kpi_errors_add(errs, name, "type", "must be a string");
    return -1;
  }
  size_t n = strlen(it->valuestring);
  if (n == 0) {
    kpi_errors_add(errs, name, "empty", "must not be empty");
    return -1;
  }
  if (n >= size) {
    kpi_errors_add(errs, name, "too_long", "longer than %zu bytes", size - 1);
    return -1;
  }
  memcpy(dst, it->valuestring, n + 1);
  return 1;
}

/* Same, looking member NAME up in OBJ. */
static int take_string(const cJSON *obj, const char *name, char *dst, size_t size,
                       kpi_errors *errs) {
  return take_string_item(cJSON_GetObjectItemCaseSensitive(obj, name), name, dst, size, errs);
}

/* The members of a measurement; F_RECEIVED_AT is a record's only (not client input). */
enum {
  F_SCHEMA,
  F_EVENT_ID,
  F_MEASURE_ID,
  F_DEPARTMENT,
  F_OBSERVED_AT,
  F_VALUE,
  F_UNIT,
  F_COMPONENT,
  F_NOTE,
  F_CORRECTS,
  F_RECEIVED_AT,
  F_COUNT
};
static const char *const field_names[F_COUNT] = {
    "schema", "event_id", "measure_id", "department", "observed_at", "value",
    "unit",   "component", "note",      "corrects",   "received_at"};

/* Index of member name S in field_names, or -1. One pass over the object with this replaces
 * a lookup (a strcmp walk over every member) per field. */
static int field_index(const char *s) {
  int i;
  switch (s[0]) {
    case 's': i = F_SCHEMA; break;
    case 'e': i = F_EVENT_ID; break;
    case 'm': i = F_MEASURE_ID; break;
    case 'd': i = F_DEPARTMENT; break;
    case 'o': i = F_OBSERVED_AT; break;
    case 'v': i = F_VALUE; break;
    case 'u': i = F_UNIT; break;
    case 'c': i = s[1] == 'o' && s[2] == 'r' ? F_CORRECTS : F_COMPONENT; break;
    case 'n': i = F_NOTE; break;
    case 'r': i = F_RECEIVED_AT; break;
    default: return -1;
  }
  return strcmp(s, field_names[i]) == 0 ? i : -1;
}

/* The members of OBJ by field, the first of each name (as cJSON_GetObjectItemCaseSensitive
 * finds it). Unknown members of an input are reported in the order they appear, before
 * anything else. */
static void measurement_members(const cJSON *obj, kpi_parse_mode mode, const cJSON *f[F_COUNT],
                                kpi_errors *errs) {
  const cJSON *it;
  cJSON_ArrayForEach(it, obj) {
    int i = it->string ? field_index(it->string) : -1;
    if (mode == KPI_PARSE_INPUT && (i < 0 || i == F_RECEIVED_AT)) {
      char field[32];
      snprintf(field, sizeof(field), "%s", it->string ? it->string : "");
      kpi_errors_add(errs, field, "unknown_field", "not a field of kpi.measurement/1 input");
      continue;
    }
    if (i >= 0 && !f[i]) f[i] = it;
  }
}

/* schema, event_id, measure_id, department: the record's identity. */
static void measurement_ids(const cJSON *const f[F_COUNT], kpi_parse_mode mode,
                            kpi_measurement *m, kpi_errors *errs) {
  char schema[32] = "";
  int r = take_string_item(f[F_SCHEMA], "schema", schema, sizeof(schema), errs);
  if (r == 0 && mode == KPI_PARSE_RECORD) kpi_errors_add(errs, "schema", "missing", "required");
  if (r == 1 && strcmp(schema, KPI_MEASUREMENT_SCHEMA) != 0)
    kpi_errors_add(errs, "schema", "value", "must be \"%s\"", KPI_MEASUREMENT_SCHEMA);

  r = take_string_item(f[F_EVENT_ID], "event_id", m->event_id, sizeof(m->event_id), errs);
  if (r == 0 && mode == KPI_PARSE_RECORD) kpi_errors_add(errs, "event_id", "missing", "required");
  if (r == 1 && (strlen(m->event_id) != KPI_UUID_STRLEN ||
                 kpi_uuid_parse(m->event_id, NULL) != 0)) {
    kpi_errors_add(errs, "event_id", "format", "must be a UUID");
    r = 0;
  }
  if (r != 1) m->event_id[0] = '\0';

  r = take_string_item(f[F_MEASURE_ID], "measure_id", m->measure_id, sizeof(m->measure_id), errs);
  if (r == 0) kpi_errors_add(errs, "measure_id", "missing", "required");
  if (r == 1 && !kpi_json_id_valid(m->measure_id))
    kpi_errors_add(errs, "measure_id", "format", "only letters, digits, '-', '_', '.'");

  r = take_string_item(f[F_DEPARTMENT], "department", m->department, sizeof(m->department), errs);
  if (r == 0 && mode == KPI_PARSE_RECORD)
    kpi_errors_add(errs, "department", "missing", "required");
  if (r == 1 && !kpi_json_id_valid(m->department))
    kpi_errors_add(errs, "department", "format", "only letters, digits, '-', '_', '.'");
}

/* observed_at: a record carries a canonical date or RFC 3339 timestamp; an input may also
 * carry a date as clerks write it (2024/3/31, R6.3.31, 令和6年3月31日: kpi_time_parse_input),
 * which becomes the canonical "YYYY-MM-DD" here, so that the record on the topic never
 * holds another form (docs/ingest.md "Dates"). */
static void measurement_observed_at(const cJSON *it, kpi_parse_mode mode, kpi_measurement *m,
                                    kpi_errors *errs) {
  char given[64];
  size_t size = mode == KPI_PARSE_INPUT ? sizeof(given) : sizeof(m->observed_at);
  int r = take_string_item(it, "observed_at", given, size, errs);
  if (r == 0) kpi_errors_add(errs, "observed_at", "missing", "required");
  if (r != 1) return;
  if (mode == KPI_PARSE_RECORD) {
    memcpy(m->observed_at, given, strlen(given) + 1);
    if (kpi_time_parse(m->observed_at, &m->observed_ms, &m->observed_day) != 0)
      kpi_errors_add(errs, "observed_at", "format",
                     "must be a date (YYYY-MM-DD) or an RFC 3339 timestamp with offset");
    return;
  }
  if (strlen(given) >= sizeof(m->observed_at) && kpi_time_parse(given, NULL, NULL) == 0) {
    kpi_errors_add(errs, "observed_at", "too_long", "longer than %zu bytes",
                   sizeof(m->observed_at) - 1);
    return;
  }
  int rc = kpi_time_parse_input(given, m->observed_at, sizeof(m->observed_at), &m->observed_ms,
                                &m->observed_day);
  if (rc != 0) {
    m->observed_at[0] = '\0';
    kpi_errors_add(errs, "observed_at", "format", "%s", kpi_time_input_strerror(rc));
  }
}

/* observed_at, value, unit, component: what was measured. */
static void measurement_reading(const cJSON *const f[F_COUNT], kpi_parse_mode mode,
                                kpi_measurement *m, kpi_errors *errs) {
  int r;
  measurement_observed_at(f[F_OBSERVED_AT], mode, m, errs);

  const cJSON *v = f[F_VALUE];
  if (!v || cJSON_IsNull(v)) kpi_errors_add(errs, "value", "missing", "required");
  else if (!cJSON_IsNumber(v)) kpi_errors_add(errs, "value", "type", "must be a number");
  else if (!isfinite(v->valuedouble))
    kpi_errors_add(errs, "value", "range", "must be a finite number");
  else m->value = v->valuedouble;

  r = take_string_item(f[F_UNIT], "unit", m->unit, sizeof(m->unit), errs);
  if (r == 0) kpi_errors_add(errs, "unit", "missing", "required");

  char comp[16] = "";
  r = take_string_item(f[F_COMPONENT], "component", comp, sizeof(comp), errs);
  if (r == 1) {
    if (strcmp(comp, "numerator") == 0) m->component = KPI_COMPONENT_NUMERATOR;
    else if (strcmp(comp, "denominator") == 0) m->component = KPI_COMPONENT_DENOMINATOR;
    else kpi_errors_add(errs, "component", "value", "must be \"numerator\" or \"denominator\"");
  }
}

int kpi_take_text(const cJSON *obj, const char *name, const char *field, char *dst,
                     size_t size, kpi_errors *errs) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!it || cJSON_IsNull(it)) return 0;
  size_t n = cJSON_IsString(it) ? strlen(it->valuestring) : 0;
  if (!cJSON_IsString(it)) kpi_errors_add(errs, field, "type", "must be a string");
  else if (n == 0) kpi_errors_add(errs, field, "empty", "must not be empty");
  else if (n >= size) kpi_errors_add(errs, field, "too_long", "longer than %zu bytes", size - 1);
  else if (!kpi_json_utf8_valid(it->valuestring, n))
    kpi_errors_add(errs, field, "encoding", "must be valid UTF-8");
  else {
    memcpy(dst, it->valuestring, n + 1);
    return 1;
  }
  return -1;
}

/* The optional `corrects` object of a correction: {"event_id": uuid, "reason": text}. */
static void measurement_corrects(const cJSON *c, kpi_measurement *m, kpi_errors *errs) {
  if (!c || cJSON_IsNull(c)) return;
  if (!cJSON_IsObject(c)) {
    kpi_errors_add(errs, "corrects", "type", "must be an object {\"event_id\", \"reason\"}");
    return;
  }
  const cJSON *it;
  cJSON_ArrayForEach(it, c) {
    if (!it->string || (strcmp(it->string, "event_id") != 0 && strcmp(it->string, "reason") != 0))
      kpi_errors_add(errs, "corrects", "unknown_field", "only event_id and reason");
  }
  int r = kpi_take_text(c, "event_id", "corrects.event_id", m->corrects, sizeof(m->corrects), errs);
  if (r == 0) kpi_errors_add(errs, "corrects.event_id", "missing", "required");
  if (r == 1 && (strlen(m->corrects) != KPI_UUID_STRLEN || kpi_uuid_parse(m->corrects, NULL) != 0))
    kpi_errors_add(errs, "corrects.event_id", "format", "must be a UUID");
  r = kpi_take_text(c, "reason", "corrects.reason", m->corrects_reason, sizeof(m->corrects_reason),
                errs);
  if (r == 0) kpi_errors_add(errs, "corrects.reason", "missing", "required");
  if (m->event_id[0] && strcasecmp(m->event_id, m->corrects) == 0)
    kpi_errors_add(errs, "corrects.event_id", "value", "a measurement cannot correct itself");
  m->has_corrects = true;
}

/* The optional note (<= KPI_NOTE_MAX bytes of UTF-8) and, in a record, received_at. */
static void measurement_extras(const cJSON *const f[F_COUNT], kpi_parse_mode mode,
                               kpi_measurement *m, kpi_errors *errs) {
  const cJSON *note = f[F_NOTE];
  if (note && !cJSON_IsNull(note)) {
    size_t n = cJSON_IsString(note) ? strlen(note->valuestring) : 0;
    if (!cJSON_IsString(note))
      kpi_errors_add(errs, "note", "type", "must be a string");
    else if (n > KPI_NOTE_MAX)
      kpi_errors_add(errs, "note", "too_long", "longer than %d bytes", KPI_NOTE_MAX);
    else if (!kpi_json_utf8_valid(note->valuestring, n))
      kpi_errors_add(errs, "note", "encoding", "must be valid UTF-8");
    else {
      memcpy(m->note, note->valuestring, n + 1);
      m->has_note = true;
    }
  }
  measurement_corrects(f[F_CORRECTS], m, errs);
  if (mode != KPI_PARSE_RECORD) return;
  int r = take_string_item(f[F_RECEIVED_AT], "received_at", m->received_at,
                           sizeof(m->received_at), errs);
  if (r == 0) kpi_errors_add(errs, "received_at", "missing", "required");
  /* A bare date parses as a time too; the ingest always writes a full timestamp. */
  if (r == 1 && (strlen(m->received_at) <= 10 ||
                 kpi_time_parse(m->received_at, &m->received_ms, NULL) != 0))
    kpi_errors_add(errs, "received_at", "format", "must be an RFC 3339 timestamp");
}

int kpi_measurement_from_json(const cJSON *obj, kpi_parse_mode mode, kpi_measurement *m,
                              kpi_errors *errs) {
  size_t before = errs->n;
  memset(m, 0, sizeof(*m));
  if (!cJSON_IsObject(obj)) {
    kpi_errors_add(errs, "", "type", "a measurement must be a JSON object");
    return -1;
  }
  const cJSON *f[F_COUNT] = {0};
  measurement_members(obj, mode, f, errs);
  measurement_ids(f, mode, m, errs);
  measurement_reading(f, mode, m, errs);
  measurement_extras(f, mode, m, errs);
  return errs->n == before ? 0 : -1;
}

int kpi_measurement_parse(const char *json, size_t len, kpi_parse_mode mode, kpi_measurement *m,
                          kpi_errors *errs) {
  memset(m, 0, sizeof(*m));
  if (!kpi_json_utf8_valid(json, len)) {
    kpi_errors_add(errs, "", "encoding", "the body is not valid UTF-8");
    return -1;
  }
  cJSON *root = kpi_json_parse_one(json, len, true);
  if (!root) {
    kpi_errors_add(errs, "", "syntax", "not valid JSON");
    return -1;
  }
  int rc = kpi_measurement_from_json(root, mode, m, errs);
  cJSON_Delete(root);
  return rc;
}

/* Whether GIVEN says "percent" for the catalog: the name, one of its labels, or "%" (also
 * full-width) when the catalog lists no labels for it. */
static bool says_percent(const kpi_catalog *cat, const char *given) {
  return kpi_catalog_unit_matches(cat, "percent", given) ||
         kpi_catalog_unit_matches(cat, "%", given);
}

int kpi_measurement_normalize(kpi_measurement *m, const kpi_catalog *cat, kpi_errors *errs) {
  return kpi_measurement_normalize_ms(m, cat, kpi_catalog_measure(cat, m->measure_id), errs);
}

int kpi_measurement_normalize_ms(kpi_measurement *m, const kpi_catalog *cat,
                                 const kpi_measure *ms, kpi_errors *errs) {
  if (!ms || !m->unit[0]) return 0; /* kpi_measurement_check reports it */
  const char *canon = NULL;
  if (ms->kind == KPI_KIND_RATIO && m->component != KPI_COMPONENT_NONE) {
    if (says_percent(cat, m->unit)) {
      kpi_errors_add(errs, "unit", "component_unit",
                     "a %s is a count in \"%s\", not a percentage",
                     kpi_component_name(m->component),
                     ms->component_unit ? ms->component_unit : "a count unit");
      return -1;
    }
    canon = ms->component_unit ? (kpi_catalog_unit_matches(cat, ms->component_unit, m->unit)
                                      ? ms->component_unit
                                      : NULL)
                               : kpi_catalog_unit_lookup(cat, m->unit);
  } else if (strcmp(m->unit, ms->unit) == 0 || kpi_catalog_unit_matches(cat, ms->unit, m->unit)) {
    /* The unit exactly as the catalog names it, what clients send nearly always: folding
     * both sides the same way (kpi_catalog_unit_matches) would say yes too, so the folds
     * and the unit lookup are skipped (docs/ingest.md, "Performance, seventh round"). */
    canon = ms->unit;
  }
  if (canon && canon != m->unit) {
    size_t n = strnlen(canon, sizeof(m->unit) - 1); /* as snprintf would cut it */
    memmove(m->unit, canon, n);
    m->unit[n] = '\0';
  }
  return 0;
}

const kpi_measure *kpi_measurement_check(const kpi_measurement *m, const kpi_catalog *cat,
                                         int64_t now_ms, kpi_errors *errs) {
  return kpi_measurement_check_ms(m, kpi_catalog_measure(cat, m->measure_id), now_ms, errs);
}

const kpi_measure *kpi_measurement_check_ms(const kpi_measurement *m, const kpi_measure *ms,
                                            int64_t now_ms, kpi_errors *errs) {
  size_t before = errs->n;
  if (!ms) {
    kpi_errors_add(errs, "measure_id", "unknown_measure", "no measure \"%s\" in the catalog",
                   m->measure_id);
    return NULL;
  }
  /* A ratio's amounts are counts in its component_unit. A record that says the measure's own
   * unit (percent) was written before component_unit existed; the evaluator still counts it,
   * while kpi_measurement_normalize keeps the ingest from writing new ones. */
  if (ms->kind == KPI_KIND_RATIO && m->component != KPI_COMPONENT_NONE) {
    if (ms->component_unit && strcmp(m->unit, ms->component_unit) != 0 &&
        strcmp(m->unit, ms->unit) != 0)
      kpi_errors_add(errs, "unit", "unit_mismatch",
                     "a numerator or denominator of this measure is a count in \"%s\"",
                     ms->component_unit);
  } else if (strcmp(m->unit, ms->unit) != 0) {
    kpi_errors_add(errs, "unit", "unit_mismatch", "this measure is reported in \"%s\"", ms->unit);
  }
  if (!isfinite(m->value)) kpi_errors_add(errs, "value", "range", "must be a finite number");
  if (m->value < 0)
    kpi_errors_add(errs, "value", "range", "must not be negative");
  if (strcmp(ms->unit, "percent") == 0 && ms->kind != KPI_KIND_RATIO && m->value > 100)
    kpi_errors_add(errs, "value", "range", "a percentage must not exceed 100");
  else if (ms->kind == KPI_KIND_MILESTONE && m->value != 0 && m->value != 1)
    kpi_errors_add(errs, "value", "range", "a milestone is 0 (not yet) or 1 (done)");
  /* The magnitude bound (kpi_catalog.h): a count above 1e12 or above the measure's catalog
   * `max` is a typo or an attack, not a measurement. Records on the topic go through this same
   * check in the evaluator, where such a record is poison. */
  else if (m->value > ms->value_max) {
    if (ms->has_max)
      kpi_errors_add(errs, "value", "out_of_range", "must not exceed %g, the measure's max",
                     ms->value_max);
    else
      kpi_errors_add(errs, "value", "out_of_range", "must not exceed %g for a measure in \"%s\"",
                     ms->value_max, ms->unit);
  }
  if (ms->kind == KPI_KIND_RATIO && m->component == KPI_COMPONENT_NONE)
    kpi_errors_add(errs, "component", "missing",
                   "a ratio measure takes \"numerator\" or \"denominator\" amounts");
  if (ms->kind != KPI_KIND_RATIO && m->component != KPI_COMPONENT_NONE)
    kpi_errors_add(errs, "component", "not_allowed", "only ratio measures take a component");
  if (m->observed_ms > now_ms + KPI_CLOCK_SKEW_MS)
    kpi_errors_add(errs, "observed_at", "future", "is in the future");
  return errs->n == before ? ms : NULL;
}

/* The record encoder writes what cJSON_PrintUnformatted wrote for the same object, byte for
 * byte (tests/unit/test_codec.c compares the two on many values), without the tree: building
 * and printing ten cJSON members cost about twenty allocations and a printf/scanf round trip
 * per record, more than the rest of the ingest path. Escaping and number formatting follow
 * cJSON's print_string_ptr and print_number; numbers that the fast path below cannot prove
 * identical are printed by cJSON itself. */

/* Formats D into BUF (at least 32 bytes) as cJSON's print_number does; returns the length,
 * or -1 when out of memory. The fast path covers zero, whole numbers below 1e15 and decimals
 * with at most 6 fraction digits and 15 significant ones (|d| >= 1e-4): for those, "%1.15g"
 * yields exactly the shortest decimal D = n / 10^k whose nearest double is d (the distance
 * from d to D is below half a unit in the 15th digit), the "%lg" read-back returns d, and
 * cJSON's integer branch, where it applies, prints the same digits. (double)n / 10^k == d
 * checks that D's nearest double is d, since both operands are exact and IEEE division
 * rounds correctly, like strtod. Anything else (NaN, -0, 1e-7, 0.1234567, 1e20…) goes
 * through cJSON's own printer. */
static int json_format_number(double d, char *buf) {
  static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
  double a = fabs(d);
  if (isfinite(d) && ((a == 0 && !signbit(d)) || a >= 1e-4)) {
    for (int k = 0; k <= 6; k++) {
      double t = a * p10[k];
      if (!(t < 1e15)) break;
      long long n = (long long)(t + 0.5);
      if ((double)n / p10[k] != a) continue;
      /* Digits of n, then the point k digits from the right, trailing zeros dropped. */
      char dig[24];
      int nd = 0;
      do {
        dig[nd++] = (char)('0' + n % 10);
        n /= 10;
      } while (n > 0);
      int frac = k;
      int skip = 0; /* trailing zeros of the fraction */
      while (skip < frac && dig[skip] == '0') skip++;
      frac -= skip;
      char *o = buf;
      if (signbit(d)) *o++ = '-';
      int int_digits = nd - k;
      if (int_digits <= 0) {
        *o++ = '0';
      } else {
        for (int i = nd - 1; i >= k; i--) *o++ = dig[i];
      }
      if (frac > 0) {
        *o++ = '.';
        for (int i = k - 1; i >= k - frac; i--) *o++ = i < nd ? dig[i] : '0';
      }
      *o = '\0';
      return (int)(o - buf);
    }
  }
  cJSON *num = cJSON_CreateNumber(d);
  char *text = num ? cJSON_PrintUnformatted(num) : NULL;
  cJSON_Delete(num);
  if (!text) return -1;
  size_t n = strlen(text);
  if (n > 31) {
    cJSON_free(text);
    return -1;
  }
  memcpy(buf, text, n + 1);
  cJSON_free(text);
  return (int)n;
}

#define PUT_LIT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) += sizeof(lit) - 1)

/* The record's strings, each measured once: its length and its escaped length (equal when
 * nothing needs escaping, the common case, which is then copied as it is). */
enum { S_SCHEMA, S_EVENT, S_MEASURE, S_DEPT, S_OBSERVED, S_UNIT, S_COMPONENT, S_NOTE,
       S_CORRECTS, S_REASON, S_RECEIVED, S_COUNT };
typedef struct {
  const char *s; /* NULL: the member is left out */
  size_t len, esc;
} enc_string;
typedef struct {
  char num[32];
  int num_len;
  enc_string str[S_COUNT];
} enc_plan;

static size_t plan_string(enc_string *e, const char *s) {
  e->s = s;
  e->len = s ? strlen(s) : 0;
  e->esc = s ? kpi_json_escaped_len(s, e->len) : 0;
  return e->esc;
}

/* Fills P for M and returns the bytes its record takes at most (with the NUL), or 0 when the
 * number cannot be printed. */
static size_t measurement_cap(const kpi_measurement *m, enc_plan *p) {
  p->num_len = json_format_number(m->value, p->num);
  if (p->num_len < 0) return 0;
  const char *const v[S_COUNT] = {
      [S_SCHEMA] = KPI_MEASUREMENT_SCHEMA, [S_EVENT] = m->event_id,
      [S_MEASURE] = m->measure_id,         [S_DEPT] = m->department,
      [S_OBSERVED] = m->observed_at,       [S_UNIT] = m->unit,
      [S_COMPONENT] = kpi_component_name(m->component),
      [S_NOTE] = m->has_note ? m->note : NULL,
      [S_CORRECTS] = m->has_corrects ? m->corrects : NULL,
      [S_REASON] = m->has_corrects ? m->corrects_reason : NULL,
      [S_RECEIVED] = m->received_at};
  /* Member names, quotes, colons, commas and braces; then the escaped values. */
  size_t cap = sizeof("{\"schema\":,\"event_id\":,\"measure_id\":,\"department\":,"
                      "\"observed_at\":,\"value\":,\"unit\":,\"received_at\":}") +
               sizeof(",\"component\":") + sizeof(",\"note\":") + 2 * 10 + (size_t)p->num_len +
               (m->has_corrects ? sizeof(",\"corrects\":{\"event_id\":\"\",\"reason\":}") + 2 : 0);
  for (int i = 0; i < S_COUNT; i++) cap += plan_string(&p->str[i], v[i]);
  return cap;
}

static char *put_string(char *o, const enc_string *e) {
  *o++ = '"';
  if (e->esc == e->len) memcpy(o, e->s, e->len);
  else kpi_json_put_escaped(o, e->s, e->len);
  o += e->esc;
  *o++ = '"';
  return o;
}

/* Writes the record planned in P at O (room for measurement_cap bytes); returns the end (at
 * the NUL written). */
static char *measurement_put(const enc_plan *p, char *o) {
  const enc_string *s = p->str;
  PUT_LIT(o, "{\"schema\":");
  o = put_string(o, &s[S_SCHEMA]);
  PUT_LIT(o, ",\"event_id\":");
  o = put_string(o, &s[S_EVENT]);
  PUT_LIT(o, ",\"measure_id\":");
  o = put_string(o, &s[S_MEASURE]);
  PUT_LIT(o, ",\"department\":");
  o = put_string(o, &s[S_DEPT]);
  PUT_LIT(o, ",\"observed_at\":");
  o = put_string(o, &s[S_OBSERVED]);
  PUT_LIT(o, ",\"value\":");
  memcpy(o, p->num, (size_t)p->num_len);
  o += p->num_len;
  PUT_LIT(o, ",\"unit\":");
  o = put_string(o, &s[S_UNIT]);
  if (s[S_COMPONENT].s) {
    PUT_LIT(o, ",\"component\":");
    o = put_string(o, &s[S_COMPONENT]);
  }
  if (s[S_NOTE].s) {
    PUT_LIT(o, ",\"note\":");
    o = put_string(o, &s[S_NOTE]);
  }
  if (s[S_CORRECTS].s) {
    PUT_LIT(o, ",\"corrects\":{\"event_id\":");
    o = put_string(o, &s[S_CORRECTS]);
    PUT_LIT(o, ",\"reason\":");
    o = put_string(o, &s[S_REASON]);
    *o++ = '}';
  }
  PUT_LIT(o, ",\"received_at\":");
  o = put_string(o, &s[S_RECEIVED]);
  *o++ = '}';
  *o = '\0';
  return o;
}

char *kpi_measurement_encode(const kpi_measurement *m, size_t *len) {
  enc_plan p;
  size_t cap = measurement_cap(m, &p);
  char *out = cap ? malloc(cap) : NULL;
  if (!out) return NULL;
  char *o = measurement_put(&p, out);
  if (len) *len = (size_t)(o - out);
  return out;
}

int kpi_measurement_encode_buf(const kpi_measurement *m, kpi_buf *b) {
  enc_plan p;
  size_t cap = measurement_cap(m, &p);
  if (!cap || kpi_buf_reserve(b, cap)) return -1;
  char *o = measurement_put(&p, b->s + b->len);
  b->len = (size_t)(o - b->s);
  return 0;
}

/* Alerts ------------------------------------------------------------------------------- */

static void add_opt_string(cJSON *o, const char *name, const char *v) {
  if (v) cJSON_AddStringToObject(o, name, v);
  else cJSON_AddNullToObject(o, name);
}

static const char *const catalog_change_fields[] = {"baseline", "baseline_fy", "target",
                                                    "target_fy", NULL};

bool kpi_catalog_change_field_known(const char *field) {
  for (int i = 0; catalog_change_fields[i]; i++)
    if (strcmp(field, catalog_change_fields[i]) == 0) return true;
  return false;
}

static void add_catalog_change(cJSON *o, const kpi_catalog_change *c) {
  cJSON *co = cJSON_AddObjectToObject(o, "catalog_change");
  if (!co) return;
  cJSON_AddNumberToObject(co, "version", c->version);
  cJSON_AddNumberToObject(co, "previous_version", c->previous_version);
  cJSON *arr = cJSON_AddArrayToObject(co, "changes");
  for (size_t i = 0; arr && i < c->n_changes && i < KPI_CATALOG_CHANGES_MAX; i++) {
    cJSON *it = cJSON_CreateObject();
    if (!it) break;
    cJSON_AddStringToObject(it, "field", c->changes[i].field);
    cJSON_AddNumberToObject(it, "from", c->changes[i].from);
    cJSON_AddNumberToObject(it, "to", c->changes[i].to);
    cJSON_AddItemToArray(arr, it);
  }
}

/* "acknowledgement": the measure's latest acknowledgement, or null. */
static void add_acknowledgement(cJSON *o, const kpi_alert_ack *k) {
  if (!k->present) {
    cJSON_AddNullToObject(o, "acknowledgement");
    return;
  }
  cJSON *ko = cJSON_AddObjectToObject(o, "acknowledgement");
  if (!ko) return;
  cJSON_AddStringToObject(ko, "note", k->note ? k->note : "");
  cJSON_AddStringToObject(ko, "department", k->department);
  add_opt_string(ko, "department_name", k->department_name);
  cJSON_AddStringToObject(ko, "acknowledged_at", k->acknowledged_at);
  cJSON_AddStringToObject(ko, "until", k->until);
}

char *kpi_alert_encode(const kpi_alert *a, size_t *len) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "schema", KPI_ALERT_SCHEMA);
  cJSON_AddStringToObject(o, "alert_id", a->alert_id);
  cJSON_AddStringToObject(o, "measure_id", a->measure_id);
  cJSON_AddStringToObject(o, "type", a->type);
  cJSON_AddStringToObject(o, "status", a->status);
  add_opt_string(o, "previous_status", a->previous_status[0] ? a->previous_status : NULL);
  cJSON_AddBoolToObject(o, "stale", a->stale);
  cJSON_AddNumberToObject(o, "episode", a->episode);
  if (a->has_value) cJSON_AddNumberToObject(o, "value", a->value);
  else cJSON_AddNullToObject(o, "value");
  cJSON_AddNumberToObject(o, "progress", a->progress);
  cJSON_AddNumberToObject(o, "expected", a->expected);
  cJSON_AddStringToObject(o, "as_of", a->as_of);
  add_opt_string(o, "last_observed_day", a->last_observed_day[0] ? a->last_observed_day : NULL);
  cJSON *mo = cJSON_AddObjectToObject(o, "measure");
  if (mo) {
    add_opt_string(mo, "name", a->measure_name);
    add_opt_string(mo, "indicator", a->indicator);
    add_opt_string(mo, "unit", a->unit);
    add_opt_string(mo, "kind", a->kind);
    add_opt_string(mo, "direction", a->direction);
    cJSON_AddNumberToObject(mo, "baseline", a->baseline);
    cJSON_AddNumberToObject(mo, "baseline_fy", a->baseline_fy);
    cJSON_AddNumberToObject(mo, "target", a->target);
    cJSON_AddNumberToObject(mo, "target_fy", a->target_fy);
    cJSON_AddStringToObject(mo, "due", a->due);
    add_opt_string(mo, "plan", a->plan_name);
    add_opt_string(mo, "url", a->dashboard_url);
  }
  cJSON *rs = cJSON_AddArrayToObject(o, "recipients");
  for (size_t i = 0; rs && i < a->n_recipients; i++) {
    cJSON *r = cJSON_CreateObject();
    if (!r) break;
    add_opt_string(r, "department", a->recipients[i].department);
    add_opt_string(r, "name", a->recipients[i].name);
    cJSON_AddStringToObject(r, "email", a->recipients[i].email);
    cJSON_AddItemToArray(rs, r);
  }
  cJSON_AddStringToObject(o, "created_at", a->created_at);
  if (a->catalog_change.present) add_catalog_change(o, &a->catalog_change);
  add_acknowledgement(o, &a->acknowledgement);
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (s && len) *len = strlen(s);
  return s;
}

void kpi_alert_clear(kpi_alert *a) {
  free(a->measure_name);
  free(a->indicator);
  free(a->unit);
  free(a->kind);
  free(a->direction);
  free(a->plan_name);
  free(a->dashboard_url);
  for (size_t i = 0; i < a->n_recipients; i++) {
    free(a->recipients[i].department);
    free(a->recipients[i].name);
    free(a->recipients[i].email);
  }
  free(a->recipients);
  free(a->acknowledgement.note);
  free(a->acknowledgement.department_name);
  memset(a, 0, sizeof(*a));
}

static char *dup_member(const cJSON *obj, const char *name) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(it) ? strdup(it->valuestring) : NULL;
}

static int take_number(const cJSON *obj, const char *name, double *out, bool required,
                       kpi_errors *errs) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!it || cJSON_IsNull(it)) {
    if (required) kpi_errors_add(errs, name, "missing", "required");
    return 0;
  }
  if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
    kpi_errors_add(errs, name, "type", "must be a finite number");
    return -1;
  }
  *out = it->valuedouble;
  return 1;
}

/* A whole number member within [MIN, MAX]; range checked before the conversion to int. */
static int take_int(const cJSON *obj, const char *name, int min, int max, int *out,
                    kpi_errors *errs) {
  double d;
  int r = take_number(obj, name, &d, false, errs);
  if (r != 1) return r;
  if (!(d >= min && d <= max) || d != (double)(int)d) {
    kpi_errors_add(errs, name, "range", "must be a whole number from %d to %d", min, max);
    return -1;
  }
  *out = (int)d;
  return 1;
}

static const char *const statuses[] = {"no_data", "on_track", "lagging", "achieved", "failed",
                                       NULL};

static bool known_status(const char *s) {
  for (int i = 0; statuses[i]; i++)
    if (strcmp(s, statuses[i]) == 0) return true;
  return false;
}

/* schema, alert_id, measure_id, type, status, previous_status: what the alert is about. */
static void alert_ids(const cJSON *o, kpi_alert *a, kpi_errors *errs) {
  char schema[32] = "";
  if (take_string(o, "schema", schema, sizeof(schema), errs) != 1 ||
      strcmp(schema, KPI_ALERT_SCHEMA) != 0)
    kpi_errors_add(errs, "schema", "value", "must be \"%s\"", KPI_ALERT_SCHEMA);
  if (take_string(o, "alert_id", a->alert_id, sizeof(a->alert_id), errs) != 1 ||
      kpi_uuid_parse(a->alert_id, NULL) != 0)
    kpi_errors_add(errs, "alert_id", "format", "must be a UUID");
  if (take_string(o, "measure_id", a->measure_id, sizeof(a->measure_id), errs) != 1)
    kpi_errors_add(errs, "measure_id", "missing", "required");
  if (take_string(o, "type", a->type, sizeof(a->type), errs) != 1 ||
      (strcmp(a->type, "alert") && strcmp(a->type, "reminder") && strcmp(a->type, "resolved")))
    kpi_errors_add(errs, "type", "value", "must be alert, reminder or resolved");
  if (take_string(o, "status", a->status, sizeof(a->status), errs) != 1 ||
      !known_status(a->status))
    kpi_errors_add(errs, "status", "value", "unknown status");
  int r = take_string(o, "previous_status", a->previous_status, sizeof(a->previous_status), errs);
  if (r == 1 && !known_status(a->previous_status))
    kpi_errors_add(errs, "previous_status", "value", "unknown status");
}

/* stale, episode, value, progress, expected, as_of, created_at: the evaluation it reports. */
static void alert_reading(const cJSON *o, kpi_alert *a, kpi_errors *errs) {
  a->stale = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stale"));
  take_int(o, "episode", 0, 1000000000, &a->episode, errs);
  a->has_value = take_number(o, "value", &a->value, false, errs) == 1;
  take_number(o, "progress", &a->progress, true, errs);
  take_number(o, "expected", &a->expected, true, errs);
  if (take_string(o, "as_of", a->as_of, sizeof(a->as_of), errs) != 1 ||
      kpi_time_parse(a->as_of, NULL, NULL) != 0)
    kpi_errors_add(errs, "as_of", "format", "must be a date");
  /* Optional: records written before the field existed lack it, and the mail then shows the
   * evaluation date alone. */
  if (take_string(o, "last_observed_day", a->last_observed_day, sizeof(a->last_observed_day),
                  errs) == 1 &&
      (strlen(a->last_observed_day) != 10 || kpi_time_parse(a->last_observed_day, NULL, NULL) != 0))
    kpi_errors_add(errs, "last_observed_day", "format", "must be a date");
  /* Required like the fields below (the schema says so): absent, the struct would hold ""
   * or 0, which kpi_alert_encode writes out and this decoder then refuses. */
  if (take_string(o, "created_at", a->created_at, sizeof(a->created_at), errs) == 0)
    kpi_errors_add(errs, "created_at", "missing", "required");
}

/* The "measure" object: the catalog's words and numbers the mail shows. */
static void alert_measure(const cJSON *o, kpi_alert *a, kpi_errors *errs) {
  const cJSON *mo = cJSON_GetObjectItemCaseSensitive(o, "measure");
  if (!cJSON_IsObject(mo)) {
    kpi_errors_add(errs, "measure", "missing", "required object");
    return;
  }
  a->measure_name = dup_member(mo, "name");
  a->indicator = dup_member(mo, "indicator");
  a->unit = dup_member(mo, "unit");
  a->kind = dup_member(mo, "kind");
  a->direction = dup_member(mo, "direction");
  a->plan_name = dup_member(mo, "plan");
  a->dashboard_url = dup_member(mo, "url");
  if (!a->measure_name) kpi_errors_add(errs, "measure.name", "missing", "required");
  take_number(mo, "baseline", &a->baseline, false, errs);
  take_number(mo, "target", &a->target, false, errs);
  if (take_int(mo, "baseline_fy", 1900, 2200, &a->baseline_fy, errs) == 0)
    kpi_errors_add(errs, "measure.baseline_fy", "missing", "required");
  if (take_int(mo, "target_fy", 1900, 2200, &a->target_fy, errs) == 0)
    kpi_errors_add(errs, "measure.target_fy", "missing", "required");
  if (take_string(mo, "due", a->due, sizeof(a->due), errs) == 0)
    kpi_errors_add(errs, "measure.due", "missing", "required");
}

/* "recipients": at least one, each with a plausible mail address (the rest are optional). */
static void alert_recipients(const cJSON *o, kpi_alert *a, kpi_errors *errs) {
  const cJSON *rs = cJSON_GetObjectItemCaseSensitive(o, "recipients");
  if (!cJSON_IsArray(rs) || cJSON_GetArraySize(rs) == 0) {
    kpi_errors_add(errs, "recipients", "missing", "at least one recipient is required");
    return;
  }
  size_t n = (size_t)cJSON_GetArraySize(rs);
  a->recipients = calloc(n, sizeof(kpi_recipient));
  const cJSON *it;
  cJSON_ArrayForEach(it, rs) {
    if (!a->recipients) break;
    char *email = dup_member(it, "email");
    if (!email || !strchr(email, '@') || strpbrk(email, " \t\r\n<>,;\"")) {
      free(email);
      kpi_errors_add(errs, "recipients", "format", "each recipient needs a mail address");
      continue;
    }
    kpi_recipient *rc = &a->recipients[a->n_recipients++];
    rc->email = email;
    rc->department = dup_member(it, "department");
    rc->name = dup_member(it, "name");
  }
}

/* The optional "catalog_change": absent or null is none; present, it must be whole. */
static void alert_catalog_change(const cJSON *o, kpi_alert *a, kpi_errors *errs) {
  const cJSON *co = cJSON_GetObjectItemCaseSensitive(o, "catalog_change");
  if (!co || cJSON_IsNull(co)) return;
  kpi_catalog_change *c = &a->catalog_change;
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(co, "changes");
  if (!cJSON_IsObject(co) || !cJSON_IsArray(arr) || cJSON_GetArraySize(arr) < 1 ||
      cJSON_GetArraySize(arr) > KPI_CATALOG_CHANGES_MAX) {
    kpi_errors_add(errs, "catalog_change", "type",
                   "must be an object with 1 to %d changes", KPI_CATALOG_CHANGES_MAX);
    return;
  }
  if (take_int(co, "version", 0, 1000000000, &c->version, errs) != 1 ||
      take_int(co, "previous_version", 0, 1000000000, &c->previous_version, errs) != 1)
    kpi_errors_add(errs, "catalog_change", "missing", "version and previous_version required");
  const cJSON *it;
  cJSON_ArrayForEach(it, arr) {
    kpi_catalog_field_change *fc = &c->changes[c->n_changes];
    if (take_string(it, "field", fc->field, sizeof(fc->field), errs) != 1 ||
        !kpi_catalog_change_field_known(fc->field) ||
        take_number(it, "from", &fc->from, true, errs) != 1 ||
        take_number(it, "to", &fc->to, true, errs) != 1) {
      kpi_errors_add(errs, "catalog_change", "value",
                     "each change needs a known field, from and to");
      return;
    }
    c->n_changes++;
  }
  c->present = true;
}

/* The "acknowledgement": absent or null is none (records written before it existed lack it);
 * present, note, department, acknowledged_at and until are required. */
static void alert_acknowledgement(const cJSON *o, kpi_alert *a, kpi_errors *errs) {
  const cJSON *ko = cJSON_GetObjectItemCaseSensitive(o, "acknowledgement");
  if (!ko || cJSON_IsNull(ko)) return;
  kpi_alert_ack *k = &a->acknowledgement;
  if (!cJSON_IsObject(ko)) {
    kpi_errors_add(errs, "acknowledgement", "type", "must be an object or null");
    return;
  }
  const cJSON *note = cJSON_GetObjectItemCaseSensitive(ko, "note");
  size_t n = cJSON_IsString(note) ? strlen(note->valuestring) : 0;
  if (n == 0 || n > KPI_ALERT_ACK_NOTE_MAX || !kpi_json_utf8_valid(note->valuestring, n))
    kpi_errors_add(errs, "acknowledgement.note", "value",
                   "1 to %d bytes of UTF-8 required", KPI_ALERT_ACK_NOTE_MAX);
  else if (!(k->note = strdup(note->valuestring)))
    kpi_errors_add(errs, "acknowledgement.note", "memory", "out of memory");
  if (kpi_take_text(ko, "department", "acknowledgement.department", k->department,
                    sizeof(k->department), errs) == 0)
    kpi_errors_add(errs, "acknowledgement.department", "missing", "required");
  if (kpi_take_text(ko, "acknowledged_at", "acknowledgement.acknowledged_at", k->acknowledged_at,
                    sizeof(k->acknowledged_at), errs) == 0)
    kpi_errors_add(errs, "acknowledgement.acknowledged_at", "missing", "required");
  if (kpi_take_text(ko, "until", "acknowledgement.until", k->until, sizeof(k->until), errs) != 1 ||
      strlen(k->until) != 10 || kpi_time_parse(k->until, NULL, NULL) != 0)
    kpi_errors_add(errs, "acknowledgement.until", "format", "must be a date");
  k->department_name = dup_member(ko, "department_name");
  k->present = true;
}

int kpi_alert_decode(const char *json, size_t len, kpi_alert *a, kpi_errors *errs) {
  memset(a, 0, sizeof(*a));
  size_t before = errs->n;
  cJSON *o = kpi_json_parse_one(json, len, true);
  if (!o || !cJSON_IsObject(o)) {
    kpi_errors_add(errs, "", "syntax", "not a JSON object");
    cJSON_Delete(o);
    return -1;
  }
  alert_ids(o, a, errs);
  alert_reading(o, a, errs);
  alert_measure(o, a, errs);
  alert_recipients(o, a, errs);
  alert_catalog_change(o, a, errs);
  alert_acknowledgement(o, a, errs);
  cJSON_Delete(o);
  if (errs->n != before) {
    kpi_alert_clear(a);
    return -1;
  }
  return 0;
}
