/* kpi_records.c: kpi.retraction/1 and kpi.acknowledgement/1 records (docs/corrections.md). */
#include "kpi_records.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "kpi_json.h"

/* "kpi-retraction-1" */
static const uint8_t retraction_namespace[16] = {0x6b, 0x70, 0x69, 0x2d, 0x72, 0x65, 0x74, 0x72,
                                                 0x61, 0x63, 0x74, 0x69, 0x6f, 0x6e, 0x2d, 0x31};

kpi_record_type kpi_record_type_of(const char *json, size_t len) {
  static const char fast[] = "{\"schema\":\"" KPI_MEASUREMENT_SCHEMA "\"";
  if (len >= sizeof(fast) - 1 && memcmp(json, fast, sizeof(fast) - 1) == 0)
    return KPI_RECORD_MEASUREMENT;
  cJSON *root = kpi_json_parse_one(json, len, true);
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "schema");
  kpi_record_type t = KPI_RECORD_UNKNOWN;
  if (cJSON_IsString(s)) {
    if (strcmp(s->valuestring, KPI_MEASUREMENT_SCHEMA) == 0) t = KPI_RECORD_MEASUREMENT;
    else if (strcmp(s->valuestring, KPI_RETRACTION_SCHEMA) == 0) t = KPI_RECORD_RETRACTION;
    else if (strcmp(s->valuestring, KPI_ACK_SCHEMA) == 0) t = KPI_RECORD_ACK;
  }
  cJSON_Delete(root);
  return t;
}

void kpi_retraction_id(const char *retracts, const char *measure_id, const char *department,
                       char out[KPI_UUID_STRLEN + 1]) {
  char name[KPI_UUID_STRLEN + 2 * KPI_ID_MAX + 3];
  size_t n = strnlen(retracts, KPI_UUID_STRLEN);
  for (size_t i = 0; i < n; i++) name[i] = (char)tolower((unsigned char)retracts[i]);
  int len = snprintf(name + n, sizeof(name) - n, "/%.*s/%.*s", KPI_ID_MAX, measure_id,
                     KPI_ID_MAX, department);
  kpi_uuid_v5(retraction_namespace, name, n + (size_t)len, out);
}

/* Refuses members of OBJ not named in ALLOWED (NULL-terminated). */
static void refuse_unknown(const cJSON *obj, const char *const *allowed, const char *schema,
                           kpi_errors *errs) {
  const cJSON *it;
  cJSON_ArrayForEach(it, obj) {
    bool known = false;
    for (size_t i = 0; it->string && allowed[i]; i++)
      if (strcmp(it->string, allowed[i]) == 0) known = true;
    if (!known) {
      char field[32];
      snprintf(field, sizeof(field), "%s", it->string ? it->string : "");
      kpi_errors_add(errs, field, "unknown_field", "not a field of %s input", schema);
    }
  }
}

/* A required-or-optional string member that must be a UUID. Returns 1 when present and valid. */
static int take_uuid(const cJSON *obj, const char *name, char *dst, bool required,
                     kpi_errors *errs) {
  int r = kpi_take_text(obj, name, name, dst, KPI_UUID_STRLEN + 1, errs);
  if (r == 0 && required) kpi_errors_add(errs, name, "missing", "required");
  if (r == 1 && (strlen(dst) != KPI_UUID_STRLEN || kpi_uuid_parse(dst, NULL) != 0)) {
    kpi_errors_add(errs, name, "format", "must be a UUID");
    r = -1;
  }
  if (r != 1) dst[0] = '\0';
  return r;
}

/* A catalog id member (measure_id, department). */
static void take_id(const cJSON *obj, const char *name, char *dst, bool required,
                    kpi_errors *errs) {
  int r = kpi_take_text(obj, name, name, dst, KPI_ID_MAX + 1, errs);
  if (r == 0 && required) kpi_errors_add(errs, name, "missing", "required");
  if (r == 1 && !kpi_json_id_valid(dst))
    kpi_errors_add(errs, name, "format", "only letters, digits, '-', '_', '.'");
}

/* The record's schema and received_at (KPI_PARSE_RECORD only). */
static void take_record_frame(const cJSON *obj, const char *schema, char *received_at,
                              int64_t *received_ms, kpi_errors *errs) {
  char got[32] = "";
  int r = kpi_take_text(obj, "schema", "schema", got, sizeof(got), errs);
  if (r == 0) kpi_errors_add(errs, "schema", "missing", "required");
  if (r == 1 && strcmp(got, schema) != 0)
    kpi_errors_add(errs, "schema", "value", "must be \"%s\"", schema);
  r = kpi_take_text(obj, "received_at", "received_at", received_at, 32, errs);
  if (r == 0) kpi_errors_add(errs, "received_at", "missing", "required");
  if (r == 1 && (strlen(received_at) <= 10 || kpi_time_parse(received_at, received_ms, NULL) != 0))
    kpi_errors_add(errs, "received_at", "format", "must be an RFC 3339 timestamp");
}

/* Parses JSON into a fresh cJSON object, or adds the body-level error and returns NULL. */
static cJSON *parse_object(const char *json, size_t len, const char *what, kpi_errors *errs) {
  if (!kpi_json_utf8_valid(json, len)) {
    kpi_errors_add(errs, "", "encoding", "the body is not valid UTF-8");
    return NULL;
  }
  cJSON *root = kpi_json_parse_one(json, len, true);
  if (!root) {
    kpi_errors_add(errs, "", "syntax", "not valid JSON");
    return NULL;
  }
  if (!cJSON_IsObject(root)) {
    kpi_errors_add(errs, "", "type", "%s must be a JSON object", what);
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

int kpi_retraction_parse(const char *json, size_t len, kpi_parse_mode mode, kpi_retraction *r,
                         kpi_errors *errs) {
  static const char *const input_fields[] = {"measure_id", "reason", NULL};
  size_t before = errs->n;
  memset(r, 0, sizeof(*r));
  cJSON *o = parse_object(json, len, "a retraction", errs);
  if (!o) return -1;
  bool rec = mode == KPI_PARSE_RECORD;
  if (!rec) refuse_unknown(o, input_fields, KPI_RETRACTION_SCHEMA, errs);
  take_id(o, "measure_id", r->measure_id, true, errs);
  if (kpi_take_text(o, "reason", "reason", r->reason, sizeof(r->reason), errs) == 0)
    kpi_errors_add(errs, "reason", "missing", "required");
  if (rec) {
    take_record_frame(o, KPI_RETRACTION_SCHEMA, r->received_at, &r->received_ms, errs);
    take_id(o, "department", r->department, true, errs);
    int have_id = take_uuid(o, "event_id", r->event_id, true, errs);
    if (take_uuid(o, "retracts", r->retracts, true, errs) == 1 && have_id == 1) {
      char want[KPI_UUID_STRLEN + 1];
      kpi_retraction_id(r->retracts, r->measure_id, r->department, want);
      if (strcasecmp(want, r->event_id) != 0)
        kpi_errors_add(errs, "event_id", "value", "must be the retraction id of `retracts`");
    }
  }
  cJSON_Delete(o);
  return errs->n == before ? 0 : -1;
}

char *kpi_retraction_encode(const kpi_retraction *r, size_t *len) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "schema", KPI_RETRACTION_SCHEMA);
  cJSON_AddStringToObject(o, "event_id", r->event_id);
  cJSON_AddStringToObject(o, "retracts", r->retracts);
  cJSON_AddStringToObject(o, "measure_id", r->measure_id);
  cJSON_AddStringToObject(o, "department", r->department);
  cJSON_AddStringToObject(o, "reason", r->reason);
  cJSON_AddStringToObject(o, "received_at", r->received_at);
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (s && len) *len = strlen(s);
  return s;
}

/* `until`: a YYYY-MM-DD date. */
static void take_until(const cJSON *o, kpi_ack *a, bool required, kpi_errors *errs) {
  int r = kpi_take_text(o, "until", "until", a->until, sizeof(a->until), errs);
  if (r == 0 && required) kpi_errors_add(errs, "until", "missing", "required");
  if (r != 1) return;
  int y, mo, d;
  char tail;
  if (strlen(a->until) != 10 || sscanf(a->until, "%4d-%2d-%2d%c", &y, &mo, &d, &tail) != 3 ||
      kpi_day_from_ymd(y, mo, d, &a->until_day) != 0) {
    kpi_errors_add(errs, "until", "format", "must be a date YYYY-MM-DD");
    return;
  }
  a->has_until = true;
}

int kpi_ack_parse(const char *json, size_t len, kpi_parse_mode mode, kpi_ack *a,
                  kpi_errors *errs) {
  static const char *const input_fields[] = {"note", "until", "event_id", NULL};
  size_t before = errs->n;
  memset(a, 0, sizeof(*a));
  cJSON *o = parse_object(json, len, "an acknowledgement", errs);
  if (!o) return -1;
  bool rec = mode == KPI_PARSE_RECORD;
  if (!rec) refuse_unknown(o, input_fields, KPI_ACK_SCHEMA, errs);
  if (kpi_take_text(o, "note", "note", a->note, sizeof(a->note), errs) == 0)
    kpi_errors_add(errs, "note", "missing", "required");
  take_until(o, a, rec, errs);
  take_uuid(o, "event_id", a->event_id, rec, errs);
  if (rec) {
    take_record_frame(o, KPI_ACK_SCHEMA, a->received_at, &a->received_ms, errs);
    take_id(o, "measure_id", a->measure_id, true, errs);
    take_id(o, "department", a->department, true, errs);
  }
  cJSON_Delete(o);
  return errs->n == before ? 0 : -1;
}

int kpi_ack_check(kpi_ack *a, kpi_errors *errs) {
  kpi_day received = kpi_day_of_ms(a->received_ms);
  if (!a->has_until) {
    a->until_day = received + KPI_ACK_DEFAULT_DAYS;
    kpi_day_format(a->until_day, a->until, sizeof(a->until));
    a->has_until = true;
    return 0;
  }
  if (a->until_day < received) {
    kpi_errors_add(errs, "until", "range", "must not be before today (%s)", a->received_at);
    return -1;
  }
  if (a->until_day > received + KPI_ACK_MAX_DAYS) {
    kpi_errors_add(errs, "until", "range", "at most %d days ahead", KPI_ACK_MAX_DAYS);
    return -1;
  }
  return 0;
}

char *kpi_ack_encode(const kpi_ack *a, size_t *len) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddStringToObject(o, "schema", KPI_ACK_SCHEMA);
  cJSON_AddStringToObject(o, "event_id", a->event_id);
  cJSON_AddStringToObject(o, "measure_id", a->measure_id);
  cJSON_AddStringToObject(o, "department", a->department);
  cJSON_AddStringToObject(o, "note", a->note);
  cJSON_AddStringToObject(o, "until", a->until);
  cJSON_AddStringToObject(o, "received_at", a->received_at);
  char *s = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (s && len) *len = strlen(s);
  return s;
}
