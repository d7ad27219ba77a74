/* test_catalog.c: the shipped catalog loads with one measure per KPI row of the seed, and each
 * broken catalog fails with a message naming the exact problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_catalog.h"

#define SHIPPED KPI_SOURCE_DIR "/config/catalog.json"
/* The plan document the catalog was made from (config/catalog.json's "source" names where it
 * came from; a copy is kept in the repository so that this test stands alone). */
#define SEED KPI_SOURCE_DIR "/tests/data/000_acdad34392815b8b.txt"

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = '\0';
  fclose(f);
  return buf;
}

static void test_shipped_catalog_loads(void **state) {
  (void)state;
  char err[512] = "";
  kpi_catalog *cat = kpi_catalog_load_flags(SHIPPED, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  if (!cat) fail_msg("%s", err);
  assert_int_equal(cat->n_measures, 9);
  assert_int_equal(cat->n_departments, 5);

  const kpi_measure *m = kpi_catalog_measure(cat, "g2-uiturn-4-supporters");
  assert_non_null(m);
  assert_int_equal(m->kind, KPI_KIND_LEVEL);
  assert_int_equal(m->baseline_fy, 2022);
  assert_int_equal(m->target_fy, 2024);
  assert_true(m->baseline == 24 && m->target == 50);
  assert_string_equal(m->unit, "person");
  assert_string_equal(m->owner_dept->id, "kikaku");

  m = kpi_catalog_measure(cat, "g3-kosodate-3-maternity-grants");
  assert_non_null(m);
  assert_int_equal(m->kind, KPI_KIND_CUMULATIVE);
  assert_int_equal(m->baseline_fy, 2018); /* H30 */
  assert_int_equal(m->window_from_fy, 2020);
  assert_int_equal(m->window_to_fy, 2024);
  assert_true(m->target == 250);

  m = kpi_catalog_measure(cat, "g4-digital-1-konbini-issuance");
  assert_int_equal(m->kind, KPI_KIND_RATIO);
  m = kpi_catalog_measure(cat, "g4-digital-4-hoiku-app-rate");
  assert_int_equal(m->kind, KPI_KIND_MAINTAIN);
  assert_true(m->baseline == 96);
  m = kpi_catalog_measure(cat, "g4-carbon-1-zero-carbon-plan");
  assert_int_equal(m->kind, KPI_KIND_MILESTONE);
  m = kpi_catalog_measure(cat, "g4-carbon-2-led-rate");
  assert_true(m->baseline == 12.4 && m->target == 35.7);
  assert_null(kpi_catalog_measure(cat, "no-such-measure"));

  /* Every sample department's mailboxes are marked as samples. */
  for (size_t i = 0; i < cat->n_departments; i++) {
    assert_true(cat->departments[i].sample);
    for (size_t j = 0; j < cat->departments[i].n_mailboxes; j++)
      assert_non_null(strstr(cat->departments[i].mailboxes[j], ".example"));
  }
  kpi_catalog_free(cat);
}

/* The seed's KPI tables each start with a "具体的な施策\t基準値" header row followed by one
 * measure row; the catalog must have exactly one measure per such row, and each measure's
 * indicator baseline must appear in the seed. */
static void test_one_measure_per_seed_row(void **state) {
  (void)state;
  char *seed = read_file(SEED);
  if (!seed) fail_msg("cannot read the seed at %s", SEED);
  int rows = 0;
  for (char *p = seed; (p = strstr(p, "具体的な施策\t基準値")); p++) rows++;
  char err[512];
  kpi_catalog *cat = kpi_catalog_load_flags(SHIPPED, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  assert_non_null(cat);
  assert_int_equal(rows, 9);
  assert_int_equal(cat->n_measures, (size_t)rows);
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    /* The measure's name (具体的な施策) appears in the seed verbatim. */
    if (!strstr(seed, m->name)) fail_msg("measure %s: name %s not in the seed", m->id, m->name);
  }
  kpi_catalog_free(cat);
  free(seed);
}

static void test_authenticate(void **state) {
  (void)state;
  char err[512];
  kpi_catalog *cat = kpi_catalog_load_flags(SHIPPED, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  assert_non_null(cat);
  const char *tok = "sample-kosodate-token-do-not-use-in-production";
  const kpi_department *d = kpi_catalog_authenticate(cat, tok, strlen(tok));
  assert_non_null(d);
  assert_string_equal(d->id, "kosodate");
  assert_null(kpi_catalog_authenticate(cat, "wrong", 5));
  assert_null(kpi_catalog_authenticate(cat, tok, strlen(tok) - 1));
  kpi_catalog_free(cat);
}

/* A minimal valid catalog with one measure; cases below patch one piece of it. */
#define DEPT                                                                              \
  "{\"id\":\"d1\",\"name\":\"Dept\",\"sample\":true,\"token_sha256\":"                    \
  "\"f93dfe2cc3de8e463e5ea8b08d7e7252d78ad599caa181288152675c8fcf3f1a\","                 \
  "\"mailboxes\":[\"a@b.example\"]}"
#define MEASURE(kind, extra, base, target)                                                 \
  "{\"id\":\"m1\",\"goal\":2,\"program\":\"p\",\"name\":\"n\",\"indicator\":\"i\","       \
  "\"unit\":\"person\",\"kind\":\"" kind "\",\"direction\":\"increase\","                  \
  "\"baseline\":{\"fy\":\"R4\",\"value\":" base "},\"target\":{\"fy\":\"R6\",\"value\":" \
  target "},\"owner\":\"d1\"" extra "}"
#define DEPT_HASH "\"f93dfe2cc3de8e463e5ea8b08d7e7252d78ad599caa181288152675c8fcf3f1a\""
#define DEPT2(hash)                                                                       \
  "{\"id\":\"d2\",\"name\":\"Dept 2\",\"token_sha256\":" hash ",\"mailboxes\":[\"c@d\"]}"
#define PERCENT_MEASURE(kind, extra, base, target)                                         \
  "{\"id\":\"m1\",\"goal\":2,\"program\":\"p\",\"name\":\"n\",\"indicator\":\"i\","       \
  "\"unit\":\"percent\",\"kind\":\"" kind "\",\"direction\":\"increase\","                 \
  "\"baseline\":{\"fy\":\"R4\",\"value\":" base "},\"target\":{\"fy\":\"R6\",\"value\":" \
  target "},\"owner\":\"d1\"" extra "}"
#define CATALOG(depts, measures)                                                          \
  "{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":[" \
  depts "],\"measures\":[" measures "]}"

static const struct {
  const char *json;
  const char *error; /* NULL: must load */
} cases[] = {
    {CATALOG(DEPT, MEASURE("level", "", "1", "5")), NULL},
    {CATALOG(DEPT, MEASURE("cumulative", ",\"window\":{\"from\":\"R2\",\"to\":\"R6\"}", "50",
                           "250")),
     NULL},
    {CATALOG(DEPT, MEASURE("maintain", "", "96", "96")), NULL},
    {CATALOG(DEPT, MEASURE("milestone", "", "0", "1")), NULL},
    {"{", "not valid JSON"},
    {"[]", "must be a JSON object"},
    {"{\"schema\":\"x\"}", "schema: must be \"kpi.catalog/1\""},
    {CATALOG(DEPT, MEASURE("levels", "", "1", "5")), "measures[0].kind: unknown kind"},
    {CATALOG(DEPT, MEASURE("level", "", "5", "5")),
     "measures[0].target.value: equal to baseline, a level measure needs a difference"},
    {CATALOG(DEPT, MEASURE("ratio", "", "5", "5")),
     "measures[0].target.value: equal to baseline, a ratio measure needs a difference"},
    {CATALOG(DEPT, MEASURE("level", "", "9", "5")),
     "measures[0].target.value: does not go in the measure's direction"},
    {CATALOG(DEPT, MEASURE("cumulative", "", "50", "250")),
     "measures[0].window: a cumulative measure needs"},
    {CATALOG(DEPT, MEASURE("level", ",\"window\":{\"from\":\"R2\",\"to\":\"R6\"}", "1", "5")),
     "measures[0].window: only a cumulative measure has a window"},
    {CATALOG(DEPT, MEASURE("milestone", "", "0", "2")),
     "measures[0].target.value: a milestone goes from 0"},
    {CATALOG(DEPT, MEASURE("maintain", "", "96", "97")),
     "measures[0].target.value: a maintain measure keeps"},
    {CATALOG(DEPT, MEASURE("level", "", "1", "5") "," MEASURE("level", "", "1", "5")),
     "measures: duplicate measure id \"m1\""},
    {CATALOG(DEPT "," DEPT, MEASURE("level", "", "1", "5")),
     "departments[1].id: duplicate department id \"d1\""},
    {CATALOG(DEPT, "{\"id\":\"m1\"}"), "measures[0].goal: missing"},
    {CATALOG(DEPT, MEASURE("level", ",\"report_interval_days\":0", "1", "5")),
     "measures[0].report_interval_days: must be a whole number"},
    {CATALOG(DEPT, MEASURE("level", ",\"watchers\":[\"not-an-address\"]", "1", "5")),
     "measures[0].watchers: [0] is not a mail address"},
    {CATALOG(DEPT, "{\"id\":\"m 1\"}"), "measures[0].id: only letters"},
    {CATALOG("{\"id\":\"d1\",\"name\":\"D\",\"sample\":true,\"mailboxes\":[\"a@b.jp\"]}",
             MEASURE("level", "", "1", "5")),
     "departments[0].mailboxes: [0] a sample department's mailbox must end in .example"},
    {CATALOG("{\"id\":\"d1\",\"name\":\"D\",\"token_sha256\":\"abc\",\"mailboxes\":[\"a@b\"]}",
             MEASURE("level", "", "1", "5")),
     "departments[0].token_sha256: must be 64 hex digits"},
    {CATALOG(DEPT, "{\"id\":\"m1\",\"goal\":2,\"program\":\"p\",\"name\":\"n\","
                   "\"indicator\":\"i\",\"unit\":\"person\",\"kind\":\"level\","
                   "\"direction\":\"increase\",\"baseline\":{\"fy\":\"R99x\",\"value\":1},"
                   "\"target\":{\"fy\":\"R6\",\"value\":5},\"owner\":\"d1\"}"),
     "measures[0].baseline.fy: not a fiscal year"},
    {CATALOG(DEPT, "{\"id\":\"m1\",\"goal\":2,\"program\":\"p\",\"name\":\"n\","
                   "\"indicator\":\"i\",\"unit\":\"person\",\"kind\":\"level\","
                   "\"direction\":\"increase\",\"baseline\":{\"fy\":\"R4\",\"value\":1},"
                   "\"target\":{\"fy\":\"R6\"},\"owner\":\"d1\"}"),
     "measures[0].target.value: missing"},
    /* cJSON reads 1e400 as infinity: it must be refused as non-finite. */
    {CATALOG(DEPT, MEASURE("level", "", "1", "1e400")),
     "measures[0].target.value: must be a finite number"},
    {CATALOG(DEPT, "{\"id\":\"m1\",\"goal\":2,\"program\":\"p\",\"name\":\"n\","
                   "\"indicator\":\"i\",\"unit\":\"person\",\"kind\":\"level\","
                   "\"direction\":\"increase\",\"baseline\":{\"fy\":\"R4\",\"value\":1},"
                   "\"target\":{\"fy\":\"R6\",\"value\":5},\"owner\":\"nobody\"}"),
     "measures[0].owner: unknown department \"nobody\""},
    /* One token for two departments: refused, naming both. A department without a token
     * does not collide with anything. */
    {CATALOG(DEPT "," DEPT2(DEPT_HASH), MEASURE("level", "", "1", "5")),
     "departments[1].token_sha256: same token hash as departments[0] \"d1\": \"d1\" and \"d2\""},
    {CATALOG(DEPT "," DEPT2("\"f93dfe2cc3de8e463e5ea8b08d7e7252d78ad599caa181288152675c8fcf3f1b\""),
             MEASURE("level", "", "1", "5")),
     NULL},
    {CATALOG("{\"id\":\"d1\",\"name\":\"D\",\"mailboxes\":[\"a@b\"]},"
             "{\"id\":\"d2\",\"name\":\"D\",\"mailboxes\":[\"a@b\"]}",
             MEASURE("level", "", "1", "5")),
     NULL},
    /* The optional per-measure max: > 0, within the kind and unit's bound, and for readings
     * at least the baseline and the target. */
    {CATALOG(DEPT, MEASURE("level", ",\"max\":5", "1", "5")), NULL},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":1e12", "1", "5")), NULL},
    {CATALOG(DEPT, MEASURE("cumulative",
                           ",\"window\":{\"from\":\"R2\",\"to\":\"R6\"},\"max\":10", "50",
                           "250")),
     NULL},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":4", "1", "5")),
     "measures[0].target.value: above the largest value the measure accepts (4, its max)"},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":3", "4", "5")),
     "measures[0].baseline.value: above the largest value the measure accepts (3, its max)"},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":0", "1", "5")),
     "measures[0].max: must be a number > 0 and at most 1e+12 (the bound for a count)"},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":2e12", "1", "5")),
     "measures[0].max: must be a number > 0 and at most 1e+12"},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":\"10\"", "1", "5")),
     "measures[0].max: must be a number"},
    {CATALOG(DEPT, MEASURE("level", ",\"max\":1e400", "1", "5")),
     "measures[0].max: must be a number"},
    {CATALOG(DEPT, MEASURE("milestone", ",\"max\":1", "0", "1")),
     "measures[0].max: a milestone is 0 (not yet) or 1 (done) and takes no max"},
    {CATALOG(DEPT, MEASURE("level", "", "1", "2e12")),
     "measures[0].target.value: above the largest value the measure accepts (1e+12)"},
    {CATALOG(DEPT, PERCENT_MEASURE("level", ",\"max\":50", "10", "40")), NULL},
    {CATALOG(DEPT, PERCENT_MEASURE("level", ",\"max\":101", "10", "40")),
     "measures[0].max: must be a number > 0 and at most 100 (the bound for a percentage)"},
    {CATALOG(DEPT, PERCENT_MEASURE("level", "", "10", "120")),
     "measures[0].target.value: above the largest value the measure accepts (100)"},
    /* A ratio's max bounds its numerator and denominator amounts, which are counts. */
    {CATALOG(DEPT, PERCENT_MEASURE("ratio", ",\"max\":5000", "0", "20")), NULL},
    /* component_unit: a ratio's amounts are counts (docs/ingest.md "Units"). */
    {CATALOG(DEPT, PERCENT_MEASURE("ratio", ",\"component_unit\":\"case\"", "0", "20")), NULL},
    {CATALOG(DEPT, PERCENT_MEASURE("ratio", ",\"component_unit\":\"percent\"", "0", "20")),
     "measures[0].component_unit: a numerator or denominator is a count"},
    {CATALOG(DEPT, MEASURE("level", ",\"component_unit\":\"case\"", "1", "5")),
     "measures[0].component_unit: only a ratio measure takes component_unit"},
    {CATALOG(DEPT, PERCENT_MEASURE("ratio", ",\"component_unit\":5", "0", "20")),
     "measures[0].component_unit: must be a string"},
    /* units: labels per canonical unit, one word naming one unit. */
    {"{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":["
     DEPT "],\"measures\":[" MEASURE("level", "", "1", "5") "],\"units\":{\"person\":{\"labels\":"
     "[\"人\",\"名\"]},\"case\":{\"labels\":[\"件\"]}}}",
     NULL},
    {"{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":["
     DEPT "],\"measures\":[" MEASURE("level", "", "1", "5") "],\"units\":{\"person\":{\"labels\":"
     "[\"人\"]},\"case\":{\"labels\":[\"件\",\"人\"]}}}",
     "units.case.labels: \"人\" already names unit \"person\""},
    {"{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":["
     DEPT "],\"measures\":[" MEASURE("level", "", "1", "5") "],\"units\":{\"percent\":{\"labels\":"
     "[\"%\"]},\"pct\":{\"labels\":[\"％\"]}}}",
     "units.pct.labels: \"％\" already names unit \"percent\""},
    {"{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":["
     DEPT "],\"measures\":[" MEASURE("level", "", "1", "5") "],\"units\":{\"person\":{\"labels\":"
     "[\"\"]}}}",
     "units.person.labels: [0] must be 1-31 bytes"},
    {"{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":["
     DEPT "],\"measures\":[" MEASURE("level", "", "1", "5") "],\"units\":[]}",
     "units: must be an object of unit names"},
    {"{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},\"departments\":["
     DEPT "],\"measures\":[" MEASURE("level", "", "1", "5") "],\"units\":{\"person\":[\"人\"]}}",
     "units.person.labels: must be an array of strings"},
};

/* The shipped catalog's units: each unit its measures use has its Japanese labels (seed:
 * 人, 件, 校, 施設, %), and the ratio measure reports its amounts in 件 (case). */
static void test_shipped_units(void **state) {
  (void)state;
  char err[512];
  kpi_catalog *cat = kpi_catalog_load_flags(SHIPPED, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  if (!cat) fail_msg("%s", err);
  static const struct {
    const char *unit, *label;
  } labels[] = {{"person", "人"},   {"case", "件"},     {"school", "校"},
                {"facility", "施設"}, {"percent", "%"},   {"percent", "％"},
                {"plan", "計画"},    {"person", " 名 "}};
  for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
    if (!kpi_catalog_unit_matches(cat, labels[i].unit, labels[i].label))
      fail_msg("%s should answer to \"%s\"", labels[i].unit, labels[i].label);
    assert_string_equal(kpi_catalog_unit_lookup(cat, labels[i].label), labels[i].unit);
  }
  assert_false(kpi_catalog_unit_matches(cat, "person", "件"));
  assert_null(kpi_catalog_unit_lookup(cat, "世帯"));
  /* Every measure's unit has labels; every ratio names its component_unit, never percent. */
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    if (!kpi_catalog_unit(cat, m->unit)) fail_msg("%s: unit %s has no labels", m->id, m->unit);
    if (m->kind == KPI_KIND_RATIO) {
      assert_non_null(m->component_unit);
      assert_string_not_equal(m->component_unit, "percent");
      assert_non_null(kpi_catalog_unit(cat, m->component_unit));
    } else {
      assert_null(m->component_unit);
    }
  }
  kpi_catalog_free(cat);
}

static void test_broken_catalogs(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char err[512] = "";
    kpi_catalog *cat = kpi_catalog_parse(cases[i].json, strlen(cases[i].json), err, sizeof(err));
    if (cases[i].error == NULL) {
      if (!cat) fail_msg("case %zu: expected to load, got: %s", i, err);
      kpi_catalog_free(cat);
    } else {
      if (cat) fail_msg("case %zu: expected \"%s\", but it loaded", i, cases[i].error);
      if (!strstr(err, cases[i].error))
        fail_msg("case %zu: expected \"%s\", got \"%s\"", i, cases[i].error, err);
    }
  }
}

/* The bound each shipped measure's values get, by kind and unit. */
static void test_value_bounds(void **state) {
  (void)state;
  char err[512];
  kpi_catalog *cat = kpi_catalog_load_flags(SHIPPED, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  assert_non_null(cat);
  static const struct {
    const char *id;
    double max;
  } want[] = {
      {"g2-uiturn-4-supporters", KPI_VALUE_MAX_COUNT},        /* person, level */
      {"g3-kosodate-3-maternity-grants", KPI_VALUE_MAX_COUNT}, /* case, cumulative */
      {"g4-digital-1-konbini-issuance", KPI_VALUE_MAX_COUNT},  /* percent, ratio: amounts */
      {"g4-carbon-2-led-rate", KPI_VALUE_MAX_PERCENT},         /* percent, level */
      {"g4-digital-4-hoiku-app-rate", KPI_VALUE_MAX_PERCENT},  /* percent, maintain */
      {"g4-carbon-1-zero-carbon-plan", 1},                     /* milestone */
  };
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    const kpi_measure *m = kpi_catalog_measure(cat, want[i].id);
    assert_non_null(m);
    assert_false(m->has_max);
    if (m->value_max != want[i].max)
      fail_msg("%s: value_max %g, want %g", want[i].id, m->value_max, want[i].max);
  }
  kpi_catalog_free(cat);
  const char *json = CATALOG(DEPT, MEASURE("level", ",\"max\":70", "1", "5"));
  cat = kpi_catalog_parse(json, strlen(json), err, sizeof(err));
  assert_non_null(cat);
  assert_true(cat->measures[0].has_max);
  assert_true(cat->measures[0].value_max == 70);
  kpi_catalog_free(cat);
}

/* Sample departments: parsed, but refused by kpi_catalog_load unless KPI_ALLOW_SAMPLE_TOKENS=1,
 * with a message that says how to make real tokens. */
static void test_sample_departments_refused(void **state) {
  (void)state;
  char err[1024] = "";
  unsetenv("KPI_ALLOW_SAMPLE_TOKENS");
  assert_null(kpi_catalog_load(SHIPPED, err, sizeof(err)));
  assert_non_null(strstr(err, "catalog.json: departments[0] \"kikaku\" is a sample department"));
  assert_non_null(strstr(err, "kpi-admin gen-token DEPARTMENT"));
  assert_non_null(strstr(err, "KPI_ALLOW_SAMPLE_TOKENS=1"));
  assert_null(kpi_catalog_load_flags(SHIPPED, 0, err, sizeof(err)));
  assert_non_null(strstr(err, "is a sample department"));

  static const struct {
    const char *value;
    int loads;
  } values[] = {{"", 0}, {"0", 0}, {"1", 1}, {"true", 0}, {"yes", 0}, {"11", 0}};
  for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
    setenv("KPI_ALLOW_SAMPLE_TOKENS", values[i].value, 1);
    err[0] = '\0';
    kpi_catalog *cat = kpi_catalog_load(SHIPPED, err, sizeof(err));
    if ((cat != NULL) != values[i].loads)
      fail_msg("KPI_ALLOW_SAMPLE_TOKENS=\"%s\": %s", values[i].value, cat ? "loaded" : err);
    if (!cat && values[i].value[0] && strcmp(values[i].value, "0") != 0)
      assert_non_null(strstr(err, "KPI_ALLOW_SAMPLE_TOKENS must be 1 or 0"));
    kpi_catalog_free(cat);
  }
  unsetenv("KPI_ALLOW_SAMPLE_TOKENS");

  /* The same catalog without the sample markers loads without the variable. */
  const char *json = CATALOG(DEPT, MEASURE("level", "", "1", "5"));
  kpi_catalog *cat = kpi_catalog_parse(json, strlen(json), err, sizeof(err));
  assert_non_null(cat);
  assert_int_equal(kpi_catalog_check_sample(cat, 0, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "departments[0] \"d1\" is a sample department"));
  assert_int_equal(kpi_catalog_check_sample(cat, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err)), 0);
  kpi_catalog_free(cat);
  json = CATALOG("{\"id\":\"d1\",\"name\":\"D\",\"token_sha256\":"
                 "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\""
                 ",\"mailboxes\":[\"a@b.jp\"]}",
                 MEASURE("level", "", "1", "5"));
  cat = kpi_catalog_parse(json, strlen(json), err, sizeof(err));
  assert_non_null(cat);
  assert_int_equal(kpi_catalog_check_sample(cat, 0, err, sizeof(err)), 0);
  kpi_catalog_free(cat);

  /* Deleting the marker from a copy of the shipped catalog does not make its published token
   * (sample-kikaku-token-do-not-use-in-production) a real one. */
  json = CATALOG("{\"id\":\"d1\",\"name\":\"D\",\"token_sha256\":"
                 "\"f93dfe2cc3de8e463e5ea8b08d7e7252d78ad599caa181288152675c8fcf3f1a\""
                 ",\"mailboxes\":[\"a@b.jp\"]}",
                 MEASURE("level", "", "1", "5"));
  cat = kpi_catalog_parse(json, strlen(json), err, sizeof(err));
  assert_non_null(cat);
  assert_int_equal(kpi_catalog_check_sample(cat, 0, err, sizeof(err)), -1);
  assert_non_null(strstr(err, "uses a token published in config/sample-tokens.env"));
  assert_int_equal(kpi_catalog_check_sample(cat, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err)), 0);
  kpi_catalog_free(cat);
}

static void test_missing_file(void **state) {
  (void)state;
  char err[512];
  assert_null(kpi_catalog_load("/nonexistent/catalog.json", err, sizeof(err)));
  assert_non_null(strstr(err, "/nonexistent/catalog.json: No such file"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shipped_catalog_loads),
      cmocka_unit_test(test_one_measure_per_seed_row),
      cmocka_unit_test(test_authenticate),
      cmocka_unit_test(test_broken_catalogs),
      cmocka_unit_test(test_value_bounds),
      cmocka_unit_test(test_sample_departments_refused),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_shipped_units),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
