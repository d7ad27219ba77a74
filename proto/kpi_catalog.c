/* kpi_catalog.c: loads the JSON catalog (cJSON), validates every field, answers look-ups. */
#include "kpi_catalog.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_json.h"
#include "kpi_time.h"

static const char *const kind_names[] = {"level", "cumulative", "ratio", "maintain", "milestone"};

const char *kpi_kind_name(kpi_kind kind) {
  return (unsigned)kind < 5 ? kind_names[kind] : "unknown";
}

const char *kpi_direction_name(kpi_direction dir) {
  return dir == KPI_DIR_DECREASE ? "decrease" : "increase";
}

int kpi_kind_parse(const char *s, kpi_kind *out) {
  for (int i = 0; i < 5; i++)
    if (strcmp(s, kind_names[i]) == 0) {
      *out = (kpi_kind)i;
      return 0;
    }
  return -1;
}

typedef struct {
  char *errstr;
  size_t size;
  char where[64]; /* "measures[3]" */
} load_ctx;

__attribute__((format(printf, 3, 4))) static int fail(load_ctx *lc, const char *field,
                                                      const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (lc->where[0])
    snprintf(lc->errstr, lc->size, "%s.%s: %s", lc->where, field, msg);
  else
    snprintf(lc->errstr, lc->size, "%s: %s", field, msg);
  return -1;
}

/* Copies a required (or optional, when OPTIONAL) non-empty string member into *OUT. */
static int get_string(load_ctx *lc, const cJSON *obj, const char *field, bool optional,
                      char **out) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, field);
  *out = NULL;
  if (!it) return optional ? 0 : fail(lc, field, "missing");
  if (!cJSON_IsString(it)) return fail(lc, field, "must be a string");
  if (it->valuestring[0] == '\0') return fail(lc, field, "must not be empty");
  if (!(*out = strdup(it->valuestring))) return fail(lc, field, "out of memory");
  return 0;
}

/* Reads number member MEMBER of OBJ; errors name it as FIELD (`baseline.value`). */
static int get_number(load_ctx *lc, const cJSON *obj, const char *member, const char *field,
                      double *out) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, member);
  if (!it) return fail(lc, field, "missing");
  if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
    return fail(lc, field, "must be a finite number");
  *out = it->valuedouble;
  return 0;
}

static int get_fy(load_ctx *lc, const cJSON *obj, const char *field, const char *member,
                  int *out) {
  char name[64];
  snprintf(name, sizeof(name), "%s.%s", field, member);
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, member);
  if (!it) return fail(lc, name, "missing");
  if (cJSON_IsNumber(it)) {
    char buf[32];
    /* Range first: converting an out-of-range double to int is undefined behaviour. */
    if (!(it->valuedouble >= 1900 && it->valuedouble <= 2200))
      return fail(lc, name, "not a fiscal year");
    snprintf(buf, sizeof(buf), "%d", (int)it->valuedouble);
    if ((double)(int)it->valuedouble != it->valuedouble || kpi_fy_parse(buf, out) != 0)
      return fail(lc, name, "not a fiscal year");
    return 0;
  }
  if (!cJSON_IsString(it) || kpi_fy_parse(it->valuestring, out) != 0)
    return fail(lc, name, "not a fiscal year (2024, FY2024, R6, 令和6年度, H30...)");
  return 0;
}

static int get_string_array(load_ctx *lc, const cJSON *obj, const char *field, bool optional,
                            char ***out, size_t *n) {
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, field);
  *out = NULL;
  *n = 0;
  if (!arr) return optional ? 0 : fail(lc, field, "missing");
  if (!cJSON_IsArray(arr)) return fail(lc, field, "must be an array of strings");
  size_t count = (size_t)cJSON_GetArraySize(arr);
  if (count == 0) return optional ? 0 : fail(lc, field, "must not be empty");
  if (!(*out = calloc(count, sizeof(char *)))) return fail(lc, field, "out of memory");
  const cJSON *it;
  cJSON_ArrayForEach(it, arr) {
    if (!cJSON_IsString(it) || !strchr(it->valuestring, '@') ||
        strpbrk(it->valuestring, " \t\r\n<>,;\"") != NULL)
      return fail(lc, field, "[%zu] is not a mail address", *n);
    if (!((*out)[*n] = strdup(it->valuestring))) return fail(lc, field, "out of memory");
    (*n)++;
  }
  return 0;
}

static int hex_nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int load_department(load_ctx *lc, const cJSON *obj, kpi_department *d) {
  if (!cJSON_IsObject(obj)) return fail(lc, "", "must be an object");
  if (get_string(lc, obj, "id", false, &d->id)) return -1;
  if (!kpi_json_id_valid(d->id)) return fail(lc, "id", "only letters, digits, '-', '_', '.' (1-64)");
  if (get_string(lc, obj, "name", false, &d->name)) return -1;
  const cJSON *sample = cJSON_GetObjectItemCaseSensitive(obj, "sample");
  if (sample && !cJSON_IsBool(sample)) return fail(lc, "sample", "must be true or false");
  d->sample = cJSON_IsTrue(sample);
  char *hash = NULL;
  if (get_string(lc, obj, "token_sha256", true, &hash)) return -1;
  if (hash) {
    int ok = strlen(hash) == 64;
    for (int i = 0; ok && i < 32; i++) {
      int hi = hex_nibble(hash[2 * i]), lo = hex_nibble(hash[2 * i + 1]);
      if (hi < 0 || lo < 0) ok = 0;
      else d->token_sha256[i] = (uint8_t)(hi << 4 | lo);
    }
    free(hash);
    if (!ok) return fail(lc, "token_sha256", "must be 64 hex digits (SHA-256 of the token)");
    d->has_token = true;
  }
  if (get_string_array(lc, obj, "mailboxes", false, &d->mailboxes, &d->n_mailboxes)) return -1;
  if (d->sample) {
    for (size_t i = 0; i < d->n_mailboxes; i++) {
      size_t n = strlen(d->mailboxes[i]);
      if (n < 8 || strcmp(d->mailboxes[i] + n - 8, ".example") != 0)
        return fail(lc, "mailboxes", "[%zu] a sample department's mailbox must end in .example",
                    i);
    }
  }
  return 0;
}

/* The bound of one reported value for the measure's kind and unit (kpi_catalog.h). */
static double kind_unit_bound(const kpi_measure *m) {
  if (m->kind == KPI_KIND_MILESTONE) return 1;
  if (m->kind != KPI_KIND_RATIO && strcmp(m->unit, "percent") == 0) return KPI_VALUE_MAX_PERCENT;
  return KPI_VALUE_MAX_COUNT;
}

/* Sets m->value_max from the optional `max` member, which may only lower the kind and unit's
 * bound. For a ratio measure `max` bounds each numerator or denominator amount, for a
 * cumulative one each additive amount (not their sum). */
static int load_max(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  double bound = kind_unit_bound(m);
  m->value_max = bound;
  const cJSON *mx = cJSON_GetObjectItemCaseSensitive(obj, "max");
  if (mx) {
    if (m->kind == KPI_KIND_MILESTONE)
      return fail(lc, "max", "a milestone is 0 (not yet) or 1 (done) and takes no max");
    if (!cJSON_IsNumber(mx) || !isfinite(mx->valuedouble) || !(mx->valuedouble > 0) ||
        mx->valuedouble > bound)
      return fail(lc, "max", "must be a number > 0 and at most %g (the bound for %s)", bound,
                  bound == KPI_VALUE_MAX_PERCENT ? "a percentage" : "a count");
    m->has_max = true;
    m->value_max = mx->valuedouble;
  }
  /* Level and maintain measures are readings: a baseline or target above the largest value a
   * department may report would make the target unreachable. A cumulative target is a sum of
   * amounts and a ratio's is a percentage of sums, so neither compares with the bound. */
  if (m->kind == KPI_KIND_LEVEL || m->kind == KPI_KIND_MAINTAIN) {
    if (m->baseline > m->value_max)
      return fail(lc, "baseline.value", "above the largest value the measure accepts (%g%s)",
                  m->value_max, m->has_max ? ", its max" : "");
    if (m->target > m->value_max)
      return fail(lc, "target.value", "above the largest value the measure accepts (%g%s)",
                  m->value_max, m->has_max ? ", its max" : "");
  }
  return 0;
}

/* id, goal, names, unit, kind and direction. */
static int load_measure_names(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  if (get_string(lc, obj, "id", false, &m->id)) return -1;
  if (!kpi_json_id_valid(m->id)) return fail(lc, "id", "only letters, digits, '-', '_', '.' (1-64)");
  double goal = 0;
  if (get_number(lc, obj, "goal", "goal", &goal)) return -1;
  if (goal < 1 || goal > 99 || goal != (int)goal)
    return fail(lc, "goal", "must be a whole number 1-99");
  m->goal = (int)goal;
  if (get_string(lc, obj, "goal_name", true, &m->goal_name) ||
      get_string(lc, obj, "program", false, &m->program) ||
      get_string(lc, obj, "name", false, &m->name) ||
      get_string(lc, obj, "indicator", false, &m->indicator) ||
      get_string(lc, obj, "unit", false, &m->unit))
    return -1;
  char *s = NULL;
  if (get_string(lc, obj, "kind", false, &s)) return -1;
  int bad = kpi_kind_parse(s, &m->kind);
  free(s);
  if (bad) return fail(lc, "kind", "unknown kind (level, cumulative, ratio, maintain, milestone)");
  if (get_string(lc, obj, "direction", false, &s)) return -1;
  if (strcmp(s, "increase") == 0) m->direction = KPI_DIR_INCREASE;
  else if (strcmp(s, "decrease") == 0) m->direction = KPI_DIR_DECREASE;
  else bad = 1;
  free(s);
  if (bad) return fail(lc, "direction", "must be increase or decrease");
  return 0;
}

/* Baseline and target, then what each kind asks of them (docs/evaluator.md). */
static int load_measure_goal(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  const cJSON *base = cJSON_GetObjectItemCaseSensitive(obj, "baseline");
  const cJSON *target = cJSON_GetObjectItemCaseSensitive(obj, "target");
  if (!cJSON_IsObject(base)) return fail(lc, "baseline", "missing or not an object");
  if (!cJSON_IsObject(target)) return fail(lc, "target", "missing or not an object");
  if (get_fy(lc, base, "baseline", "fy", &m->baseline_fy) ||
      get_fy(lc, target, "target", "fy", &m->target_fy) ||
      get_number(lc, base, "value", "baseline.value", &m->baseline) ||
      get_number(lc, target, "value", "target.value", &m->target))
    return -1;
  if (m->target_fy < m->baseline_fy)
    return fail(lc, "target.fy", "before the baseline's fiscal year");
  switch (m->kind) {
    case KPI_KIND_LEVEL:
    case KPI_KIND_RATIO:
      if (m->target == m->baseline)
        return fail(lc, "target.value",
                    "equal to baseline, a %s measure needs a difference", kpi_kind_name(m->kind));
      if ((m->direction == KPI_DIR_INCREASE) != (m->target > m->baseline))
        return fail(lc, "target.value", "does not go in the measure's direction (%s)",
                    kpi_direction_name(m->direction));
      if (m->target_fy == m->baseline_fy)
        return fail(lc, "target.fy", "same fiscal year as the baseline: no time to progress");
      break;
    case KPI_KIND_CUMULATIVE:
      if (!(m->target > 0)) return fail(lc, "target.value", "a cumulative target must be > 0");
      if (m->direction != KPI_DIR_INCREASE)
        return fail(lc, "direction", "a cumulative measure can only increase");
      break;
    case KPI_KIND_MAINTAIN:
      if (m->baseline == 0 || m->target != m->baseline)
        return fail(lc, "target.value", "a maintain measure keeps its (non-zero) baseline");
      break;
    case KPI_KIND_MILESTONE:
      if (m->baseline != 0 || m->target != 1)
        return fail(lc, "target.value", "a milestone goes from 0 (not yet) to 1 (done)");
      break;
  }
  if (m->kind == KPI_KIND_RATIO && strcmp(m->unit, "percent") != 0)
    return fail(lc, "unit", "a ratio measure is reported in percent");
  return 0;
}

/* A cumulative measure's window of fiscal years; no other kind has one. */
static int load_measure_window(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  const cJSON *win = cJSON_GetObjectItemCaseSensitive(obj, "window");
  if (m->kind != KPI_KIND_CUMULATIVE)
    return win ? fail(lc, "window", "only a cumulative measure has a window") : 0;
  if (!cJSON_IsObject(win))
    return fail(lc, "window", "a cumulative measure needs {\"from\": FY, \"to\": FY}");
  if (get_fy(lc, win, "window", "from", &m->window_from_fy) ||
      get_fy(lc, win, "window", "to", &m->window_to_fy))
    return -1;
  if (m->window_to_fy < m->window_from_fy) return fail(lc, "window.to", "before window.from");
  if (m->window_to_fy != m->target_fy)
    return fail(lc, "window.to", "must be the target's fiscal year");
  return 0;
}

/* Owner, watchers and the reporting interval. */
static int load_measure_people(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  if (get_string(lc, obj, "owner", false, &m->owner) ||
      get_string_array(lc, obj, "watchers", true, &m->watchers, &m->n_watchers))
    return -1;
  m->report_interval_days = 365;
  const cJSON *ri = cJSON_GetObjectItemCaseSensitive(obj, "report_interval_days");
  if (ri) {
    if (!cJSON_IsNumber(ri) || ri->valuedouble < 1 || ri->valuedouble > 3660 ||
        ri->valuedouble != (int)ri->valuedouble)
      return fail(lc, "report_interval_days", "must be a whole number of days, 1-3660");
    m->report_interval_days = (int)ri->valuedouble;
  }
  return 0;
}

/* ---- units (docs/ingest.md "Units") ---- */

#define UNIT_MAX 31 /* bytes, as a record's unit (kpi.measurement/1) */

/* Copies S into OUT (SIZE bytes) with full-width ASCII forms (U+FF01..U+FF5E: UTF-8 EF BC
 * 81..BF and EF BD 80..9E) folded to ASCII and the ideographic space to ' ', trimming ASCII
 * spaces at both ends. Returns 0, or -1 when the result does not fit. */
static int fold_unit(const char *s, char *out, size_t size) {
  size_t n = 0;
  const unsigned char *p = (const unsigned char *)s;
  while (*p == ' ') p++;
  while (*p) {
    unsigned c = *p++;
    if (c == 0xEF && p[0] == 0xBC && p[1] >= 0x81 && p[1] <= 0xBF) {
      c = 0x21 + (p[1] - 0x81);
      p += 2;
    } else if (c == 0xEF && p[0] == 0xBD && p[1] >= 0x80 && p[1] <= 0x9E) {
      c = 0x60 + (p[1] - 0x80);
      p += 2;
    } else if (c == 0xE3 && p[0] == 0x80 && p[1] == 0x80) {
      c = ' ';
      p += 2;
    }
    if (n + 1 >= size) return -1;
    out[n++] = (char)c;
  }
  while (n > 0 && out[n - 1] == ' ') n--;
  out[n] = '\0';
  return 0;
}

const kpi_unit *kpi_catalog_unit(const kpi_catalog *cat, const char *name) {
  for (size_t i = 0; i < cat->n_units; i++)
    if (strcmp(cat->units[i].name, name) == 0) return &cat->units[i];
  return NULL;
}

/* Whether folded text F names unit U (its name or a label). */
static bool unit_names(const kpi_unit *u, const char *name, const char *f) {
  char g[4 * (UNIT_MAX + 1)];
  if (fold_unit(name, g, sizeof(g)) == 0 && strcmp(g, f) == 0) return true;
  for (size_t i = 0; u && i < u->n_labels; i++)
    if (fold_unit(u->labels[i], g, sizeof(g)) == 0 && strcmp(g, f) == 0) return true;
  return false;
}

bool kpi_catalog_unit_matches(const kpi_catalog *cat, const char *unit, const char *given) {
  char f[4 * (UNIT_MAX + 1)];
  if (!unit || !given || fold_unit(given, f, sizeof(f)) != 0) return false;
  return unit_names(kpi_catalog_unit(cat, unit), unit, f);
}

const char *kpi_catalog_unit_lookup(const kpi_catalog *cat, const char *given) {
  char f[4 * (UNIT_MAX + 1)];
  if (!given || fold_unit(given, f, sizeof(f)) != 0) return NULL;
  for (size_t i = 0; i < cat->n_units; i++)
    if (unit_names(&cat->units[i], cat->units[i].name, f)) return cat->units[i].name;
  return NULL;
}

/* A ratio measure's optional `component_unit`: the count its two amounts are reported in. A
 * percentage would make 100·Σnum/Σden meaningless, so it is refused here. */
static int load_component_unit(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  if (get_string(lc, obj, "component_unit", true, &m->component_unit)) return -1;
  if (!m->component_unit) return 0;
  if (m->kind != KPI_KIND_RATIO)
    return fail(lc, "component_unit", "only a ratio measure takes component_unit");
  if (strlen(m->component_unit) > UNIT_MAX)
    return fail(lc, "component_unit", "longer than %d bytes", UNIT_MAX);
  if (strcmp(m->component_unit, "percent") == 0)
    return fail(lc, "component_unit",
                "a numerator or denominator is a count (case, person...), not percent");
  return 0;
}

static int load_measure(load_ctx *lc, const cJSON *obj, kpi_measure *m) {
  if (!cJSON_IsObject(obj)) return fail(lc, "", "must be an object");
  if (load_measure_names(lc, obj, m) || load_measure_goal(lc, obj, m) ||
      load_measure_window(lc, obj, m) || load_measure_people(lc, obj, m) ||
      load_component_unit(lc, obj, m))
    return -1;
  return load_max(lc, obj, m);
}

/* One `units` member: NAME and its {"labels": [...]}. */
static int load_unit(load_ctx *lc, const cJSON *it, kpi_unit *u) {
  size_t n = strlen(it->string);
  if (n == 0 || n > UNIT_MAX || !kpi_json_utf8_valid(it->string, n))
    return fail(lc, "", "a unit name is 1-%d bytes of UTF-8", UNIT_MAX);
  if (!(u->name = strdup(it->string))) return fail(lc, "", "out of memory");
  const cJSON *labels = cJSON_GetObjectItemCaseSensitive(it, "labels");
  if (!cJSON_IsObject(it) || !cJSON_IsArray(labels))
    return fail(lc, "labels", "must be an array of strings");
  size_t count = (size_t)cJSON_GetArraySize(labels);
  if (count && !(u->labels = calloc(count, sizeof(char *)))) return fail(lc, "labels", "out of memory");
  const cJSON *l;
  cJSON_ArrayForEach(l, labels) {
    size_t ln = cJSON_IsString(l) ? strlen(l->valuestring) : 0;
    if (ln == 0 || ln > UNIT_MAX || !kpi_json_utf8_valid(l->valuestring, ln))
      return fail(lc, "labels", "[%zu] must be 1-%d bytes of UTF-8", u->n_labels, UNIT_MAX);
    if (!(u->labels[u->n_labels] = strdup(l->valuestring))) return fail(lc, "labels", "out of memory");
    u->n_labels++;
  }
  return 0;
}

/* A name or label of unit U that another unit loaded before it also answers to: one word
 * would then mean two units, and a report in it would depend on the measure. */
static int check_unit_unique(load_ctx *lc, const kpi_catalog *cat, const kpi_unit *u) {
  for (size_t j = 0; j <= u->n_labels; j++) {
    const char *w = j == 0 ? u->name : u->labels[j - 1];
    char f[4 * (UNIT_MAX + 1)];
    if (fold_unit(w, f, sizeof(f)) != 0) continue;
    for (size_t i = 0; i + 1 < cat->n_units; i++)
      if (unit_names(&cat->units[i], cat->units[i].name, f))
        return fail(lc, "labels", "\"%s\" already names unit \"%s\"", w, cat->units[i].name);
  }
  return 0;
}

/* The optional top-level `units`: {"person": {"labels": ["人", "名"]}, ...}. */
static int parse_units(load_ctx *lc, const cJSON *root, kpi_catalog *cat) {
  const cJSON *units = cJSON_GetObjectItemCaseSensitive(root, "units");
  lc->where[0] = '\0';
  if (!units) return 0;
  if (!cJSON_IsObject(units)) return fail(lc, "units", "must be an object of unit names");
  size_t n = (size_t)cJSON_GetArraySize(units);
  if (n && !(cat->units = calloc(n, sizeof(kpi_unit)))) return fail(lc, "units", "out of memory");
  const cJSON *it;
  cJSON_ArrayForEach(it, units) {
    snprintf(lc->where, sizeof(lc->where), "units.%.40s", it->string);
    kpi_unit *u = &cat->units[cat->n_units++];
    if (load_unit(lc, it, u) || check_unit_unique(lc, cat, u)) return -1;
  }
  lc->where[0] = '\0';
  return 0;
}

static int cmp_measure(const void *a, const void *b) {
  return strcmp(((const kpi_measure *)a)->id, ((const kpi_measure *)b)->id);
}

/* The top level: schema, version and the plan's names. Returns 0 or -1 (LC filled). */
static int parse_header(load_ctx *lc, const cJSON *root, kpi_catalog *cat) {
  if (!cJSON_IsObject(root)) return fail(lc, "catalog", "must be a JSON object");
  const cJSON *schema = cJSON_GetObjectItemCaseSensitive(root, "schema");
  if (!cJSON_IsString(schema) || strcmp(schema->valuestring, "kpi.catalog/1") != 0)
    return fail(lc, "schema", "must be \"kpi.catalog/1\"");
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
  if (ver && (!cJSON_IsNumber(ver) || !(ver->valuedouble >= 0 && ver->valuedouble <= 1e9) ||
              ver->valuedouble != (double)(int)ver->valuedouble))
    return fail(lc, "version", "must be a whole number");
  cat->version = ver ? (int)ver->valuedouble : 0;
  const cJSON *plan = cJSON_GetObjectItemCaseSensitive(root, "plan");
  if (!cJSON_IsObject(plan)) return fail(lc, "plan", "missing or not an object");
  snprintf(lc->where, sizeof(lc->where), "plan");
  if (get_string(lc, plan, "id", false, &cat->plan_id) ||
      get_string(lc, plan, "name", false, &cat->plan_name) ||
      get_string(lc, plan, "dashboard_url", true, &cat->dashboard_url))
    return -1;
  lc->where[0] = '\0';
  return 0;
}

/* Department D against the ones loaded before it: ids and token hashes are unique. */
static int check_department_unique(load_ctx *lc, const kpi_catalog *cat,
                                   const kpi_department *d) {
  for (size_t i = 0; i + 1 < cat->n_departments; i++) {
    const kpi_department *o = &cat->departments[i];
    if (strcmp(o->id, d->id) == 0) return fail(lc, "id", "duplicate department id \"%s\"", d->id);
    /* One token would authenticate as whichever department comes first: refuse it, so a
     * copied line cannot silently hand one department's measures to another. */
    if (d->has_token && o->has_token &&
        memcmp(o->token_sha256, d->token_sha256, sizeof(d->token_sha256)) == 0)
      return fail(lc, "token_sha256",
                  "same token hash as departments[%zu] \"%s\": \"%s\" and \"%s\" need a token "
                  "each (kpi-admin gen-token)",
                  i, o->id, o->id, d->id);
  }
  return 0;
}

static int parse_departments(load_ctx *lc, const cJSON *root, kpi_catalog *cat) {
  const cJSON *depts = cJSON_GetObjectItemCaseSensitive(root, "departments");
  if (!cJSON_IsArray(depts) || cJSON_GetArraySize(depts) == 0)
    return fail(lc, "departments", "missing or empty");
  size_t nd = (size_t)cJSON_GetArraySize(depts);
  if (!(cat->departments = calloc(nd, sizeof(kpi_department))))
    return fail(lc, "catalog", "out of memory");
  const cJSON *it;
  cJSON_ArrayForEach(it, depts) {
    snprintf(lc->where, sizeof(lc->where), "departments[%zu]", cat->n_departments);
    kpi_department *d = &cat->departments[cat->n_departments++];
    if (load_department(lc, it, d) || check_department_unique(lc, cat, d)) return -1;
  }
  return 0;
}

/* The measures, each with its owner resolved, sorted by id (kpi_catalog_measure bisects). */
static int parse_measures(load_ctx *lc, const cJSON *root, kpi_catalog *cat) {
  const cJSON *measures = cJSON_GetObjectItemCaseSensitive(root, "measures");
  lc->where[0] = '\0';
  if (!cJSON_IsArray(measures) || cJSON_GetArraySize(measures) == 0)
    return fail(lc, "measures", "missing or empty");
  size_t nm = (size_t)cJSON_GetArraySize(measures);
  if (!(cat->measures = calloc(nm, sizeof(kpi_measure))))
    return fail(lc, "catalog", "out of memory");
  const cJSON *it;
  cJSON_ArrayForEach(it, measures) {
    snprintf(lc->where, sizeof(lc->where), "measures[%zu]", cat->n_measures);
    kpi_measure *m = &cat->measures[cat->n_measures++];
    if (load_measure(lc, it, m)) return -1;
    m->owner_dept = kpi_catalog_department(cat, m->owner);
    if (!m->owner_dept) return fail(lc, "owner", "unknown department \"%s\"", m->owner);
  }
  lc->where[0] = '\0';
  qsort(cat->measures, cat->n_measures, sizeof(kpi_measure), cmp_measure);
  for (size_t i = 1; i < cat->n_measures; i++)
    if (strcmp(cat->measures[i - 1].id, cat->measures[i].id) == 0)
      return fail(lc, "measures", "duplicate measure id \"%s\"", cat->measures[i].id);
  return 0;
}

/* The canonical bytes are cJSON's unformatted print of the parsed file: re-indenting the file
 * or writing 90.0 for 90 is not a change that needs a new version; any other edit, a token or
 * a mailbox included, is (docs/evaluator.md "Catalog versions"). */
static int catalog_hash(load_ctx *lc, const cJSON *root, kpi_catalog *cat) {
  char *canon = cJSON_PrintUnformatted(root);
  if (!canon) return fail(lc, "catalog", "out of memory");
  SHA256((const unsigned char *)canon, strlen(canon), cat->sha256);
  free(canon);
  return 0;
}

kpi_catalog *kpi_catalog_parse(const char *json, size_t len, char *errstr, size_t errstr_size) {
  load_ctx lc = {.errstr = errstr, .size = errstr_size};
  kpi_catalog *cat = calloc(1, sizeof(*cat));
  cJSON *root = cJSON_ParseWithLength(json, len);
  if (!cat) {
    fail(&lc, "catalog", "out of memory");
  } else if (!root) {
    fail(&lc, "catalog", "not valid JSON (near byte %ld)",
         cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - json) : -1L);
  } else if (parse_header(&lc, root, cat) == 0 && parse_departments(&lc, root, cat) == 0 &&
             parse_measures(&lc, root, cat) == 0 && parse_units(&lc, root, cat) == 0 &&
             catalog_hash(&lc, root, cat) == 0) {
    cJSON_Delete(root);
    return cat;
  }
  cJSON_Delete(root);
  kpi_catalog_free(cat);
  return NULL;
}

/* SHA-256 of the tokens published in config/sample-tokens.env. A department that carries one
 * is a sample department whatever its "sample" field says: copying the shipped catalog and
 * deleting the marker must not put publicly known tokens into production. */
static const char *const published_sample_hashes[] = {
    "f93dfe2cc3de8e463e5ea8b08d7e7252d78ad599caa181288152675c8fcf3f1a",
    "08dc5acb04686ff035573d6632e296690154037d7f67f64f2f78cbebb1e3e9a5",
    "eeb507f4f94b3e6a00292a0206e8795254867578164760c182e7e83d0173f33c",
    "ad73b76bb0b683285912c1f1d5d440e8dcb073e6f53c781a3e2c99888d792e48",
    "1927c162594bf9c0737e5194865c696ea2d06d7fafc6097e83c9bb12a8b63142",
};

static bool has_published_hash(const kpi_department *d) {
  char hex[65];
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d->token_sha256[i]);
  for (size_t i = 0; i < sizeof(published_sample_hashes) / sizeof(published_sample_hashes[0]);
       i++)
    if (strcmp(hex, published_sample_hashes[i]) == 0) return true;
  return false;
}

int kpi_catalog_check_sample(const kpi_catalog *cat, unsigned flags, char *errstr,
                             size_t errstr_size) {
  if (flags & KPI_CATALOG_ALLOW_SAMPLE) return 0;
  for (size_t i = 0; i < cat->n_departments; i++) {
    const kpi_department *d = &cat->departments[i];
    if (!d->sample && has_published_hash(d)) {
      snprintf(errstr, errstr_size,
               "departments[%zu] \"%s\" uses a token published in config/sample-tokens.env; "
               "refusing it. Make a real token with `kpi-admin gen-token %s` and put the "
               "token_sha256 it prints into the catalog",
               i, d->id, d->id);
      return -1;
    }
    if (!d->sample) continue;
    snprintf(errstr, errstr_size,
             "departments[%zu] \"%s\" is a sample department (\"sample\": true) whose token "
             "is published in config/sample-tokens.env; refusing it. Make a real token for each "
             "department with `kpi-admin gen-token DEPARTMENT`, put the token_sha256 it prints "
             "into the catalog and remove \"sample\". For a local run or tests only, set "
             "KPI_ALLOW_SAMPLE_TOKENS=1",
             i, d->id);
    return -1;
  }
  return 0;
}

kpi_catalog *kpi_catalog_load(const char *path, char *errstr, size_t errstr_size) {
  const char *allow = getenv("KPI_ALLOW_SAMPLE_TOKENS");
  unsigned flags = 0;
  if (allow && strcmp(allow, "1") == 0) {
    flags |= KPI_CATALOG_ALLOW_SAMPLE;
  } else if (allow && allow[0] && strcmp(allow, "0") != 0) {
    snprintf(errstr, errstr_size, "KPI_ALLOW_SAMPLE_TOKENS must be 1 or 0 (unset), not \"%.32s\"",
             allow);
    return NULL;
  }
  return kpi_catalog_load_flags(path, flags, errstr, errstr_size);
}

kpi_catalog *kpi_catalog_load_flags(const char *path, unsigned flags, char *errstr,
                                    size_t errstr_size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? cap * 2 : 65536;
      if (cap > 64u << 20) {
        snprintf(errstr, errstr_size, "%s: larger than 64 MiB", path);
        goto err;
      }
      char *nb = realloc(buf, cap);
      if (!nb) {
        snprintf(errstr, errstr_size, "%s: out of memory", path);
        goto err;
      }
      buf = nb;
    }
    size_t r = fread(buf + len, 1, cap - len, f);
    len += r;
    if (r == 0) break;
  }
  if (ferror(f)) {
    snprintf(errstr, errstr_size, "%s: read error", path);
    goto err;
  }
  fclose(f);
  char inner[512];
  kpi_catalog *cat = kpi_catalog_parse(buf, len, inner, sizeof(inner));
  free(buf);
  if (cat && kpi_catalog_check_sample(cat, flags, inner, sizeof(inner)) != 0) {
    kpi_catalog_free(cat);
    cat = NULL;
  }
  if (!cat) snprintf(errstr, errstr_size, "%s: %s", path, inner);
  return cat;
err:
  fclose(f);
  free(buf);
  return NULL;
}

static void free_strings(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

void kpi_catalog_free(kpi_catalog *cat) {
  if (!cat) return;
  for (size_t i = 0; i < cat->n_departments; i++) {
    kpi_department *d = &cat->departments[i];
    free(d->id);
    free(d->name);
    free_strings(d->mailboxes, d->n_mailboxes);
  }
  for (size_t i = 0; i < cat->n_measures; i++) {
    kpi_measure *m = &cat->measures[i];
    free(m->id);
    free(m->goal_name);
    free(m->program);
    free(m->name);
    free(m->indicator);
    free(m->unit);
    free(m->owner);
    free(m->component_unit);
    free_strings(m->watchers, m->n_watchers);
  }
  for (size_t i = 0; i < cat->n_units; i++) {
    free(cat->units[i].name);
    free_strings(cat->units[i].labels, cat->units[i].n_labels);
  }
  free(cat->units);
  free(cat->departments);
  free(cat->measures);
  free(cat->plan_id);
  free(cat->plan_name);
  free(cat->dashboard_url);
  free(cat);
}

const kpi_measure *kpi_catalog_measure(const kpi_catalog *cat, const char *id) {
  kpi_measure key = {.id = (char *)id};
  return bsearch(&key, cat->measures, cat->n_measures, sizeof(kpi_measure), cmp_measure);
}

const kpi_department *kpi_catalog_department(const kpi_catalog *cat, const char *id) {
  for (size_t i = 0; i < cat->n_departments; i++)
    if (cat->departments[i].id && strcmp(cat->departments[i].id, id) == 0)
      return &cat->departments[i];
  return NULL;
}

/* SHA-256 runs once per authenticated request. OpenSSL 3's one-shot SHA256() fetches the
 * algorithm from its provider store on every call, which cost more than hashing a token; the
 * algorithm is fetched once instead and kept for the life of the process. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

static void token_sha256(const char *token, size_t len, uint8_t out[32]) {
  pthread_once(&sha256_once, sha256_fetch);
  if (!sha256_md || EVP_Digest(token, len, out, NULL, sha256_md, NULL) != 1)
    SHA256((const unsigned char *)token, len, out);
}

const kpi_department *kpi_catalog_authenticate(const kpi_catalog *cat, const char *token,
                                               size_t token_len) {
  uint8_t digest[32];
  token_sha256(token, token_len, digest);
  const kpi_department *found = NULL;
  for (size_t i = 0; i < cat->n_departments; i++) {
    const kpi_department *d = &cat->departments[i];
    int eq = CRYPTO_memcmp(digest, d->token_sha256, sizeof(digest)) == 0;
    if (eq && d->has_token && !found) found = d;
  }
  return found;
}

void kpi_catalog_sha256_hex(const kpi_catalog *cat, char *out) {
  for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", cat->sha256[i]);
}

bool kpi_catalog_version_ok(kpi_catalog_version_verdict v) {
  return v == KPI_CATALOG_VERSION_NEW || v == KPI_CATALOG_VERSION_SAME;
}

kpi_catalog_version_verdict kpi_catalog_version_check(int version, const char *sha_hex,
                                                      bool has_latest, int latest,
                                                      const char *recorded_hex, char *errstr,
                                                      size_t errstr_size) {
  if (errstr_size) errstr[0] = '\0';
  if (!has_latest || (!recorded_hex && version > latest)) return KPI_CATALOG_VERSION_NEW;
  /* A lower version is refused even when its content is the one recorded: rolling back to an
   * older file would make the history say that the older figures came after the newer ones.
   * The way back is a copy of the old file with a new version. */
  if (version < latest) {
    snprintf(errstr, errstr_size,
             "catalog version %d is older than version %d already run (%s); a catalog that "
             "changes, even back to earlier figures, needs a higher version: set \"version\": %d",
             version, latest,
             recorded_hex && strcmp(recorded_hex, sha_hex) == 0 ? "a rollback to an earlier file"
                                                                  : "unknown content",
             latest + 1);
    return KPI_CATALOG_VERSION_OLDER;
  }
  if (recorded_hex && strcmp(recorded_hex, sha_hex) == 0) return KPI_CATALOG_VERSION_SAME;
  snprintf(errstr, errstr_size,
           "catalog version %d was run with other content (sha256 %.12s…, this file %.12s…); "
           "a changed catalog needs a higher version: set \"version\": %d",
           version, recorded_hex ? recorded_hex : "?", sha_hex, latest + 1);
  return KPI_CATALOG_VERSION_CHANGED;
}
