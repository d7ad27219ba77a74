/* test_schemas.c: the JSON Schemas in proto/schemas/ against the C codec (the source of truth),
 * so that neither can drift from the other: every schema is valid JSON; what the codec encodes
 * is declared by the schema and carries everything the schema requires; the schema's `required`
 * lists are exactly what the codec's parser insists on; the enums hold the codec's values; the
 * shipped catalog has every property the catalog schema requires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "kpi_catalog.h"
#include "kpi_codec.h"
#include "kpi_records.h"

#define SCHEMA_DIR KPI_SOURCE_DIR "/proto/schemas/"
#define MEASUREMENT_SCHEMA "kpi.measurement.v1.schema.json"
#define INPUT_SCHEMA "kpi.measurement-input.v1.schema.json"
#define ALERT_SCHEMA "kpi.alert.v1.schema.json"
#define CATALOG_SCHEMA "kpi.catalog.v1.schema.json"
#define RETRACTION_SCHEMA "kpi.retraction.v1.schema.json"
#define ACK_SCHEMA "kpi.acknowledgement.v1.schema.json"
#define SHIPPED_CATALOG KPI_SOURCE_DIR "/config/catalog.json"

static const char *const schema_files[] = {MEASUREMENT_SCHEMA, INPUT_SCHEMA, ALERT_SCHEMA,
                                           CATALOG_SCHEMA, RETRACTION_SCHEMA, ACK_SCHEMA};
#define N_SCHEMAS (sizeof(schema_files) / sizeof(schema_files[0]))
static cJSON *schemas[N_SCHEMAS];

/* ---- helpers ---------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 8192;
      char *nb = realloc(buf, cap + 1);
      if (!nb) break;
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  fclose(f);
  if (buf) buf[n] = '\0';
  *len = n;
  return buf;
}

static cJSON *load_json(const char *path) {
  size_t len = 0;
  char *text = read_file(path, &len);
  if (!text) fail_msg("cannot read %s", path);
  cJSON *doc = cJSON_ParseWithLength(text, len);
  if (!doc) fail_msg("%s: not valid JSON near byte %ld", path,
                     cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - text) : -1L);
  free(text);
  return doc;
}

static cJSON *schema_doc(const char *file) {
  for (size_t i = 0; i < N_SCHEMAS; i++)
    if (strcmp(schema_files[i], file) == 0) return schemas[i];
  fail_msg("no schema %s", file);
  return NULL;
}

/* Follows "$ref" ("#/$defs/x" within DOC, or "file.json#/$defs/x" to a sibling schema) until
 * the node has none. Only the JSON-pointer forms the schemas use are supported. */
static const cJSON *resolve(const cJSON *doc, const cJSON *node) {
  for (int hops = 0; hops < 8; hops++) {
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(node, "$ref");
    if (!cJSON_IsString(ref)) return node;
    const char *r = ref->valuestring, *hash = strchr(r, '#');
    assert_non_null(hash);
    if (hash != r) {
      char file[128];
      snprintf(file, sizeof(file), "%.*s", (int)(hash - r), r);
      doc = schema_doc(file);
    }
    const cJSON *cur = doc;
    char seg[64];
    for (const char *p = hash + 1; *p == '/';) {
      const char *q = strchr(p + 1, '/');
      size_t n = q ? (size_t)(q - p - 1) : strlen(p + 1);
      snprintf(seg, sizeof(seg), "%.*s", (int)n, p + 1);
      cur = cJSON_GetObjectItemCaseSensitive(cur, seg);
      if (!cur) fail_msg("unresolvable $ref %s", r);
      p += n + 1;
    }
    node = cur;
  }
  fail_msg("$ref chain too long");
  return NULL;
}

static const cJSON *properties_of(const cJSON *doc, const cJSON *obj_schema) {
  const cJSON *props = cJSON_GetObjectItemCaseSensitive(resolve(doc, obj_schema), "properties");
  assert_true(cJSON_IsObject(props));
  return props;
}

static const cJSON *property(const cJSON *doc, const cJSON *obj_schema, const char *name) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(properties_of(doc, obj_schema), name);
  if (!p) fail_msg("schema has no property %s", name);
  return resolve(doc, p);
}

static bool in_required(const cJSON *obj_schema, const char *name) {
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(obj_schema, "required")) {
    if (cJSON_IsString(it) && strcmp(it->valuestring, name) == 0) return true;
  }
  return false;
}

/* True when string VALUE is allowed by an `enum` or `const` of NODE, looking through $ref and
 * anyOf/oneOf branches. Fails the test when no enum or const is found at all. */
static bool enum_has_(const cJSON *doc, const cJSON *node, const char *value, bool *found) {
  node = resolve(doc, node);
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(node, "enum"), *it;
  if (e) {
    *found = true;
    cJSON_ArrayForEach(it, e) {
      if (cJSON_IsString(it) && strcmp(it->valuestring, value) == 0) return true;
    }
  }
  const cJSON *c = cJSON_GetObjectItemCaseSensitive(node, "const");
  if (c) {
    *found = true;
    if (cJSON_IsString(c) && strcmp(c->valuestring, value) == 0) return true;
  }
  const char *combinators[] = {"anyOf", "oneOf"};
  for (int k = 0; k < 2; k++)
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, combinators[k])) {
      if (enum_has_(doc, it, value, found)) return true;
    }
  return false;
}

static bool enum_has(const cJSON *doc, const cJSON *node, const char *value) {
  bool found = false;
  bool ok = enum_has_(doc, node, value, &found);
  if (!found) fail_msg("no enum or const for value %s", value);
  return ok;
}

/* The object OBJ (an encoded record) against OBJ_SCHEMA: every required property present,
 * every member declared. WHAT names the object in messages. */
static void check_object(const cJSON *doc, const cJSON *obj_schema, const cJSON *obj,
                         const char *what) {
  obj_schema = resolve(doc, obj_schema);
  assert_true(cJSON_IsObject(obj));
  const cJSON *it;
  cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(obj_schema, "required")) {
    assert_true(cJSON_IsString(it));
    if (!cJSON_GetObjectItemCaseSensitive(obj, it->valuestring))
      fail_msg("%s: the schema requires %s, the codec did not write it", what, it->valuestring);
  }
  const cJSON *props = properties_of(doc, obj_schema);
  cJSON_ArrayForEach(it, obj) {
    if (!cJSON_GetObjectItemCaseSensitive(props, it->string))
      fail_msg("%s: the codec wrote %s, the schema does not declare it", what, it->string);
  }
}

static bool has_error(const kpi_errors *errs, const char *field, const char *code) {
  for (size_t i = 0; i < errs->n; i++)
    if (strcmp(errs->items[i].field, field) == 0 && (!code || strcmp(errs->items[i].code, code) == 0))
      return true;
  return false;
}

/* ---- fixtures --------------------------------------------------------------------- */

static int setup(void **state) {
  (void)state;
  for (size_t i = 0; i < N_SCHEMAS; i++) {
    char path[512];
    snprintf(path, sizeof(path), "%s%s", SCHEMA_DIR, schema_files[i]);
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text) {
      fprintf(stderr, "cannot read %s\n", path);
      return -1;
    }
    schemas[i] = cJSON_ParseWithLength(text, len);
    free(text);
    if (!schemas[i]) {
      fprintf(stderr, "%s: not valid JSON\n", path);
      return -1;
    }
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (size_t i = 0; i < N_SCHEMAS; i++) cJSON_Delete(schemas[i]);
  return 0;
}

static void full_measurement(kpi_measurement *m) {
  memset(m, 0, sizeof(*m));
  snprintf(m->event_id, sizeof(m->event_id), "0b6f4a52-3c1e-4d8a-9f3e-2a1b5c7d9e01");
  snprintf(m->measure_id, sizeof(m->measure_id), "g4-digital-1-konbini-issuance");
  snprintf(m->department, sizeof(m->department), "shimin");
  snprintf(m->observed_at, sizeof(m->observed_at), "2024-05-31T17:00:00+09:00");
  m->value = 412;
  snprintf(m->unit, sizeof(m->unit), "percent");
  m->component = KPI_COMPONENT_DENOMINATOR;
  m->has_note = true;
  snprintf(m->note, sizeof(m->note), "5月分 諸証明発行総数");
  snprintf(m->received_at, sizeof(m->received_at), "2024-06-01T00:00:01.234Z");
  m->has_corrects = true;
  snprintf(m->corrects, sizeof(m->corrects), "1b6f4a52-3c1e-4d8a-9f3e-2a1b5c7d9e01");
  snprintf(m->corrects_reason, sizeof(m->corrects_reason), "桁の誤り");
}

static kpi_recipient recipients[] = {
    {"kankyo", "環境課（サンプル）", "kankyo@ashibetsu-city.example"},
    {NULL, NULL, "kikaku@ashibetsu-city.example"},
};

static void full_alert(kpi_alert *a) {
  memset(a, 0, sizeof(*a));
  snprintf(a->alert_id, sizeof(a->alert_id), "5d0c1c3e-8f7a-5b2e-9c4d-1e2f3a4b5c6d");
  snprintf(a->measure_id, sizeof(a->measure_id), "g4-carbon-1-zero-carbon-plan");
  snprintf(a->type, sizeof(a->type), "alert");
  snprintf(a->status, sizeof(a->status), "lagging");
  snprintf(a->previous_status, sizeof(a->previous_status), "on_track");
  a->stale = true;
  a->episode = 2;
  a->has_value = true;
  a->value = 0;
  a->progress = 0;
  a->expected = 0.8;
  snprintf(a->as_of, sizeof(a->as_of), "2024-11-01");
  snprintf(a->last_observed_day, sizeof(a->last_observed_day), "2024-03-31");
  a->measure_name = "ゼロカーボンシティの推進";
  a->indicator = "芦別市ゼロカーボン実行計画（区域施策編）の策定";
  a->unit = "plan";
  a->kind = "milestone";
  a->direction = "increase";
  a->baseline = 0;
  a->baseline_fy = 2022;
  a->target = 1;
  a->target_fy = 2024;
  snprintf(a->due, sizeof(a->due), "2025-03-31");
  a->plan_name = "第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）";
  a->dashboard_url = "http://localhost:8081/v1/attainment";
  a->recipients = recipients;
  a->n_recipients = 2;
  snprintf(a->created_at, sizeof(a->created_at), "2024-11-01T00:00:00.000Z");
}

/* ---- tests ------------------------------------------------------------------------ */

/* Each schema parses, says it is draft 2020-12, has an $id, and its `required` names are all
 * declared properties (also inside $defs). */
static void check_required_declared(const cJSON *doc, const cJSON *node, const char *file) {
  if (!cJSON_IsObject(node) && !cJSON_IsArray(node)) return;
  if (cJSON_IsObject(node)) {
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(node, "required");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(node, "properties");
    /* In an object schema, `required` must only name declared properties; the `required` of
     * an if/then/not condition tests the instance and is skipped (it has no `type`). */
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
    if (cJSON_IsArray(req) && cJSON_IsObject(props) && cJSON_IsString(type) &&
        strcmp(type->valuestring, "object") == 0) {
      const cJSON *it;
      cJSON_ArrayForEach(it, req) {
        assert_true(cJSON_IsString(it));
        if (!cJSON_GetObjectItemCaseSensitive(props, it->valuestring))
          fail_msg("%s: required %s is not among the properties", file, it->valuestring);
      }
    }
  }
  const cJSON *child;
  cJSON_ArrayForEach(child, node) { check_required_declared(doc, child, file); }
}

static void test_schemas_are_json(void **state) {
  (void)state;
  for (size_t i = 0; i < N_SCHEMAS; i++) {
    char path[512];
    snprintf(path, sizeof(path), "%s%s", SCHEMA_DIR, schema_files[i]);
    cJSON *doc = load_json(path);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(doc, "$schema");
    assert_true(cJSON_IsString(s));
    assert_string_equal(s->valuestring, "https://json-schema.org/draft/2020-12/schema");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "$id");
    assert_true(cJSON_IsString(id));
    /* The $id ends with the file name, so relative $refs between schemas resolve. */
    size_t n = strlen(id->valuestring), fn = strlen(schema_files[i]);
    assert_true(n >= fn && strcmp(id->valuestring + n - fn, schema_files[i]) == 0);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    assert_true(cJSON_IsString(type));
    assert_string_equal(type->valuestring, "object");
    check_required_declared(doc, doc, schema_files[i]);
    cJSON_Delete(doc);
  }
}

static void test_measurement_record(void **state) {
  (void)state;
  const cJSON *doc = schema_doc(MEASUREMENT_SCHEMA);
  assert_true(enum_has(doc, property(doc, doc, "schema"), KPI_MEASUREMENT_SCHEMA));
  for (int variant = 0; variant < 2; variant++) {
    kpi_measurement m;
    full_measurement(&m);
    if (variant == 1) { /* the optional members left out */
      m.component = KPI_COMPONENT_NONE;
      m.has_note = false;
      m.has_corrects = false;
    }
    size_t len = 0;
    char *text = kpi_measurement_encode(&m, &len);
    assert_non_null(text);
    cJSON *rec = cJSON_ParseWithLength(text, len);
    assert_non_null(rec);
    check_object(doc, doc, rec, "measurement");

    /* `required` is exactly what the parser reports missing in record mode. */
    const cJSON *it;
    cJSON_ArrayForEach(it, rec) {
      cJSON *copy = cJSON_Duplicate(rec, 1);
      cJSON_DeleteItemFromObjectCaseSensitive(copy, it->string);
      char *t = cJSON_PrintUnformatted(copy);
      kpi_errors errs = {0};
      kpi_measurement back;
      kpi_measurement_parse(t, strlen(t), KPI_PARSE_RECORD, &back, &errs);
      bool missing = has_error(&errs, it->string, "missing");
      if (missing != in_required(doc, it->string))
        fail_msg("measurement.%s: codec %s it, schema %s", it->string,
                 missing ? "requires" : "does not require",
                 in_required(doc, it->string) ? "requires" : "does not require");
      free(t);
      cJSON_Delete(copy);
    }
    kpi_errors errs = {0};
    kpi_measurement back;
    assert_int_equal(kpi_measurement_parse(text, len, KPI_PARSE_RECORD, &back, &errs), 0);
    cJSON_Delete(rec);
    free(text);
  }
  /* Every component the codec writes is in the schema's enum, and nothing else is. */
  const cJSON *comp = property(doc, doc, "component");
  for (kpi_component c = KPI_COMPONENT_NUMERATOR; c <= KPI_COMPONENT_DENOMINATOR; c++)
    assert_true(enum_has(doc, comp, kpi_component_name(c)));
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(comp, "enum"), *it;
  cJSON_ArrayForEach(it, e) {
    if (cJSON_IsNull(it)) continue;
    assert_true(cJSON_IsString(it));
    assert_true(strcmp(it->valuestring, "numerator") == 0 ||
                strcmp(it->valuestring, "denominator") == 0);
  }
  /* note: the byte limit is the codec's. */
  const cJSON *note = property(doc, doc, "note");
  const cJSON *ml = cJSON_GetObjectItemCaseSensitive(note, "maxLength");
  assert_true(cJSON_IsNumber(ml));
  assert_int_equal((int)ml->valuedouble, KPI_NOTE_MAX);
  const cJSON *idmax = cJSON_GetObjectItemCaseSensitive(property(doc, doc, "measure_id"),
                                                        "maxLength");
  assert_int_equal((int)idmax->valuedouble, KPI_ID_MAX);
}

/* The client's body: declared properties are exactly those the codec accepts in input mode,
 * `required` exactly those it reports missing, and unknown members are refused by both. */
static void test_measurement_input(void **state) {
  (void)state;
  const cJSON *doc = schema_doc(INPUT_SCHEMA);
  const cJSON *ap = cJSON_GetObjectItemCaseSensitive(doc, "additionalProperties");
  assert_true(cJSON_IsFalse(ap));

  const char *full =
      "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"0b6f4a52-3c1e-4d8a-9f3e-2a1b5c7d9e01\","
      "\"measure_id\":\"g4-digital-1-konbini-issuance\",\"department\":\"shimin\","
      "\"observed_at\":\"2024-05-31\",\"value\":12,\"unit\":\"percent\","
      "\"component\":\"numerator\",\"note\":\"ok\","
      "\"corrects\":{\"event_id\":\"1b6f4a52-3c1e-4d8a-9f3e-2a1b5c7d9e01\",\"reason\":\"r\"}}";
  cJSON *body = cJSON_Parse(full);
  assert_non_null(body);
  kpi_errors errs = {0};
  kpi_measurement m;
  assert_int_equal(kpi_measurement_from_json(body, KPI_PARSE_INPUT, &m, &errs), 0);

  /* Every member of the full body is declared, and every declared property is in it. */
  check_object(doc, doc, body, "input");
  const cJSON *it;
  cJSON_ArrayForEach(it, properties_of(doc, doc)) {
    if (!cJSON_GetObjectItemCaseSensitive(body, it->string))
      fail_msg("input schema declares %s, which the test body lacks", it->string);
  }
  cJSON_ArrayForEach(it, body) {
    cJSON *copy = cJSON_Duplicate(body, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(copy, it->string);
    kpi_errors e2 = {0};
    kpi_measurement_from_json(copy, KPI_PARSE_INPUT, &m, &e2);
    bool missing = has_error(&e2, it->string, "missing");
    if (missing != in_required(doc, it->string))
      fail_msg("input.%s: codec %s it, schema %s", it->string,
               missing ? "requires" : "does not require",
               in_required(doc, it->string) ? "requires" : "does not require");
    cJSON_Delete(copy);
  }
  /* A member the schema does not declare is an unknown_field for the codec. */
  cJSON_AddNumberToObject(body, "valeu", 1);
  kpi_errors e3 = {0};
  assert_int_equal(kpi_measurement_from_json(body, KPI_PARSE_INPUT, &m, &e3), -1);
  assert_true(has_error(&e3, "valeu", "unknown_field"));
  cJSON_Delete(body);
}

static void test_alert_record(void **state) {
  (void)state;
  const cJSON *doc = schema_doc(ALERT_SCHEMA);
  assert_true(enum_has(doc, property(doc, doc, "schema"), KPI_ALERT_SCHEMA));
  for (int variant = 0; variant < 3; variant++) {
    kpi_alert a;
    full_alert(&a);
    if (variant == 2) { /* the optional catalog_change present */
      a.catalog_change.present = true;
      a.catalog_change.version = 2;
      a.catalog_change.previous_version = 1;
      a.catalog_change.n_changes = 1;
      snprintf(a.catalog_change.changes[0].field, sizeof(a.catalog_change.changes[0].field),
               "target");
      a.catalog_change.changes[0].from = 1;
      a.catalog_change.changes[0].to = 2;
      a.acknowledgement.present = true; /* and an acknowledgement */
      a.acknowledgement.note = "対応方針: 説明会を開催";
      snprintf(a.acknowledgement.department, sizeof(a.acknowledgement.department), "kankyo");
      snprintf(a.acknowledgement.acknowledged_at, sizeof(a.acknowledgement.acknowledged_at),
               "2024-12-01T00:00:00.000Z");
      snprintf(a.acknowledgement.until, sizeof(a.acknowledgement.until), "2025-01-31");
    }
    if (variant == 1) { /* the nullable members null */
      a.previous_status[0] = '\0';
      a.last_observed_day[0] = '\0';
      a.has_value = false;
      a.dashboard_url = NULL;
      a.n_recipients = 1;
    }
    size_t len = 0;
    char *text = kpi_alert_encode(&a, &len);
    assert_non_null(text);
    cJSON *rec = cJSON_ParseWithLength(text, len);
    assert_non_null(rec);
    check_object(doc, doc, rec, "alert");
    const cJSON *mschema = property(doc, doc, "measure");
    check_object(doc, mschema, cJSON_GetObjectItemCaseSensitive(rec, "measure"), "alert.measure");
    const cJSON *rs_schema = property(doc, doc, "recipients");
    const cJSON *item_schema = resolve(doc, cJSON_GetObjectItemCaseSensitive(rs_schema, "items"));
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(rec, "recipients")) {
      check_object(doc, item_schema, r, "alert.recipients[]");
    }
    const cJSON *cc = cJSON_GetObjectItemCaseSensitive(rec, "catalog_change");
    assert_int_equal(cc != NULL, variant == 2);
    if (cc) {
      const cJSON *cc_schema = property(doc, doc, "catalog_change");
      check_object(doc, cc_schema, cc, "alert.catalog_change");
      const cJSON *ch_schema = resolve(
          doc, cJSON_GetObjectItemCaseSensitive(property(doc, cc_schema, "changes"), "items"));
      check_object(doc, ch_schema, cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cc, "changes"), 0),
                   "alert.catalog_change.changes[]");
    }
    const cJSON *ack = cJSON_GetObjectItemCaseSensitive(rec, "acknowledgement");
    assert_non_null(ack); /* always written: null when none */
    assert_int_equal(cJSON_IsObject(ack), variant == 2);
    if (cJSON_IsObject(ack)) {
      const cJSON *ack_schema = cJSON_GetArrayItem(
          cJSON_GetObjectItemCaseSensitive(property(doc, doc, "acknowledgement"), "anyOf"), 0);
      check_object(doc, ack_schema, ack, "alert.acknowledgement");
    }
    /* What the decoder insists on, the schema requires too. */
    const cJSON *it;
    cJSON_ArrayForEach(it, rec) {
      cJSON *copy = cJSON_Duplicate(rec, 1);
      cJSON_DeleteItemFromObjectCaseSensitive(copy, it->string);
      char *t = cJSON_PrintUnformatted(copy);
      kpi_errors errs = {0};
      kpi_alert back;
      if (kpi_alert_decode(t, strlen(t), &back, &errs) != 0 && !in_required(doc, it->string))
        fail_msg("alert.%s: the decoder requires it, the schema does not", it->string);
      kpi_alert_clear(&back);
      free(t);
      cJSON_Delete(copy);
    }
    kpi_errors errs = {0};
    kpi_alert back;
    assert_int_equal(kpi_alert_decode(text, len, &back, &errs), 0);
    kpi_alert_clear(&back);
    cJSON_Delete(rec);
    free(text);
  }

  /* Enums: every value in the schema is one the decoder accepts, and a value outside the
   * schema is one it refuses; the codec's fixed sets (kpi_codec.h) are all in the schema. */
  static const char *const types[] = {"alert", "reminder", "resolved"};
  static const char *const statuses[] = {"no_data", "on_track", "lagging", "achieved", "failed"};
  const cJSON *type_s = property(doc, doc, "type"), *status_s = property(doc, doc, "status"),
              *prev_s = cJSON_GetObjectItemCaseSensitive(properties_of(doc, doc), "previous_status");
  for (size_t i = 0; i < 3; i++) assert_true(enum_has(doc, type_s, types[i]));
  for (size_t i = 0; i < 5; i++) {
    assert_true(enum_has(doc, status_s, statuses[i]));
    assert_true(enum_has(doc, prev_s, statuses[i]));
  }
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(type_s, "enum")), 3);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(status_s, "enum")), 5);
  const char *probe[] = {"alert", "reminder", "resolved", "no_data", "on_track", "lagging",
                         "achieved", "failed", "warning", "ok", "LAGGING", "stale"};
  for (size_t i = 0; i < sizeof(probe) / sizeof(probe[0]); i++) {
    for (int field = 0; field < 2; field++) {
      kpi_alert a;
      full_alert(&a);
      char *dst = field == 0 ? a.type : a.status;
      snprintf(dst, 12, "%s", probe[i]);
      size_t len = 0;
      char *text = kpi_alert_encode(&a, &len);
      kpi_errors errs = {0};
      kpi_alert back;
      bool ok = kpi_alert_decode(text, len, &back, &errs) == 0;
      kpi_alert_clear(&back);
      free(text);
      bool in_schema = enum_has(doc, field == 0 ? type_s : status_s, probe[i]);
      if (ok != in_schema)
        fail_msg("%s \"%s\": decoder %s it, schema %s", field == 0 ? "type" : "status", probe[i],
                 ok ? "accepts" : "refuses", in_schema ? "allows" : "refuses");
    }
  }
}

/* The shipped catalog has what the catalog schema requires, at every level, its enums hold,
 * and every member it uses is documented in the schema. */
static void test_catalog(void **state) {
  (void)state;
  const cJSON *doc = schema_doc(CATALOG_SCHEMA);
  cJSON *cat = load_json(SHIPPED_CATALOG);
  char err[512];
  kpi_catalog *loaded =
      kpi_catalog_load_flags(SHIPPED_CATALOG, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  if (!loaded) fail_msg("%s", err);
  kpi_catalog_free(loaded);

  check_object(doc, doc, cat, "catalog");
  assert_true(enum_has(doc, property(doc, doc, "schema"),
                       cJSON_GetObjectItemCaseSensitive(cat, "schema")->valuestring));
  check_object(doc, property(doc, doc, "plan"), cJSON_GetObjectItemCaseSensitive(cat, "plan"),
               "plan");

  const cJSON *dept_s = resolve(doc, cJSON_GetObjectItemCaseSensitive(
                                          property(doc, doc, "departments"), "items"));
  const cJSON *d;
  cJSON_ArrayForEach(d, cJSON_GetObjectItemCaseSensitive(cat, "departments")) {
    check_object(doc, dept_s, d, "department");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(d, "token_sha256");
    if (h) {
      assert_true(cJSON_IsString(h));
      assert_int_equal(strlen(h->valuestring), 64);
      assert_int_equal(strspn(h->valuestring, "0123456789abcdefABCDEF"), 64);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(d, "sample"))) {
      const cJSON *mb;
      cJSON_ArrayForEach(mb, cJSON_GetObjectItemCaseSensitive(d, "mailboxes")) {
        size_t n = strlen(mb->valuestring);
        assert_true(n >= 8 && strcmp(mb->valuestring + n - 8, ".example") == 0);
      }
    }
  }

  const cJSON *meas_s = resolve(doc, cJSON_GetObjectItemCaseSensitive(
                                          property(doc, doc, "measures"), "items"));
  const cJSON *kind_s = property(doc, meas_s, "kind"), *dir_s = property(doc, meas_s, "direction");
  static const kpi_kind kinds[] = {KPI_KIND_LEVEL, KPI_KIND_CUMULATIVE, KPI_KIND_RATIO,
                                   KPI_KIND_MAINTAIN, KPI_KIND_MILESTONE};
  for (size_t i = 0; i < 5; i++) assert_true(enum_has(doc, kind_s, kpi_kind_name(kinds[i])));
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(kind_s, "enum")), 5);
  assert_true(enum_has(doc, dir_s, kpi_direction_name(KPI_DIR_INCREASE)));
  assert_true(enum_has(doc, dir_s, kpi_direction_name(KPI_DIR_DECREASE)));

  const cJSON *m;
  int n = 0;
  cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(cat, "measures")) {
    n++;
    check_object(doc, meas_s, m, "measure");
    const char *kind = cJSON_GetObjectItemCaseSensitive(m, "kind")->valuestring;
    assert_true(enum_has(doc, kind_s, kind));
    assert_true(enum_has(doc, dir_s, cJSON_GetObjectItemCaseSensitive(m, "direction")->valuestring));
    /* window exactly for cumulative measures */
    bool has_window = cJSON_GetObjectItemCaseSensitive(m, "window") != NULL;
    assert_int_equal(has_window, strcmp(kind, "cumulative") == 0);
    const char *amounts[] = {"baseline", "target", "window"};
    for (int k = 0; k < 3; k++) {
      const cJSON *a = cJSON_GetObjectItemCaseSensitive(m, amounts[k]);
      if (a) check_object(doc, property(doc, meas_s, amounts[k]), a, amounts[k]);
    }
  }
  assert_true(n > 0);
  cJSON_Delete(cat);
}

typedef int (*record_parse_fn)(const char *json, size_t len, kpi_parse_mode mode, void *out,
                               kpi_errors *errs);

static int parse_retraction(const char *json, size_t len, kpi_parse_mode mode, void *out,
                            kpi_errors *errs) {
  return kpi_retraction_parse(json, len, mode, out, errs);
}

static int parse_ack(const char *json, size_t len, kpi_parse_mode mode, void *out,
                     kpi_errors *errs) {
  return kpi_ack_parse(json, len, mode, out, errs);
}

/* TEXT (an encoded record) against schema FILE: declared members, and `required` exactly what
 * the parser reports missing in record mode. */
static void check_record(const char *file, const char *schema, const char *text,
                         record_parse_fn parse, void *out) {
  const cJSON *doc = schema_doc(file);
  assert_true(enum_has(doc, property(doc, doc, "schema"), schema));
  cJSON *rec = cJSON_Parse(text);
  assert_non_null(rec);
  check_object(doc, doc, rec, file);
  const cJSON *it;
  cJSON_ArrayForEach(it, rec) {
    cJSON *copy = cJSON_Duplicate(rec, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(copy, it->string);
    char *t = cJSON_PrintUnformatted(copy);
    kpi_errors errs = {0};
    parse(t, strlen(t), KPI_PARSE_RECORD, out, &errs);
    bool missing = has_error(&errs, it->string, "missing");
    if (missing != in_required(doc, it->string))
      fail_msg("%s.%s: codec %s it, schema %s", file, it->string,
               missing ? "requires" : "does not require",
               in_required(doc, it->string) ? "requires" : "does not require");
    free(t);
    cJSON_Delete(copy);
  }
  kpi_errors errs = {0};
  assert_int_equal(parse(text, strlen(text), KPI_PARSE_RECORD, out, &errs), 0);
  cJSON_Delete(rec);
}

static void test_retraction_and_ack_records(void **state) {
  (void)state;
  kpi_retraction r = {0};
  snprintf(r.retracts, sizeof(r.retracts), "0b6f4a52-3c1e-4d8a-9f3e-2a1b5c7d9e01");
  snprintf(r.measure_id, sizeof(r.measure_id), "g4-digital-1-konbini-issuance");
  snprintf(r.department, sizeof(r.department), "shimin");
  kpi_retraction_id(r.retracts, r.measure_id, r.department, r.event_id);
  snprintf(r.reason, sizeof(r.reason), "二重計上");
  snprintf(r.received_at, sizeof(r.received_at), "2024-06-01T00:00:01.234Z");
  char *text = kpi_retraction_encode(&r, NULL);
  kpi_retraction rback;
  check_record(RETRACTION_SCHEMA, KPI_RETRACTION_SCHEMA, text, parse_retraction, &rback);
  free(text);

  kpi_ack a = {0};
  snprintf(a.event_id, sizeof(a.event_id), "2b6f4a52-3c1e-4d8a-9f3e-2a1b5c7d9e01");
  snprintf(a.measure_id, sizeof(a.measure_id), "g4-digital-1-konbini-issuance");
  snprintf(a.department, sizeof(a.department), "shimin");
  snprintf(a.note, sizeof(a.note), "対応方針: 周知を強化");
  snprintf(a.until, sizeof(a.until), "2024-07-01");
  a.has_until = true;
  snprintf(a.received_at, sizeof(a.received_at), "2024-06-01T00:00:01.234Z");
  text = kpi_ack_encode(&a, NULL);
  kpi_ack aback;
  check_record(ACK_SCHEMA, KPI_ACK_SCHEMA, text, parse_ack, &aback);
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schemas_are_json),
      cmocka_unit_test(test_measurement_record),
      cmocka_unit_test(test_measurement_input),
      cmocka_unit_test(test_alert_record),
      cmocka_unit_test(test_retraction_and_ack_records),
      cmocka_unit_test(test_catalog),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
