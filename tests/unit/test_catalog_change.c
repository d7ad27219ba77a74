/* test_catalog_change.c: catalog versions in the shared code: the version rule
 * (kpi_catalog_version_check, the canonical hash), the alert's optional catalog_change (codec
 * round trip and refusals) and the mail's note of it in Japanese and English (kpi_mail). Kept
 * apart from test_catalog.c, test_codec.c and test_mail.c, which test the rest of each module. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kpi_catalog.h"
#include "kpi_codec.h"
#include "kpi_mail.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char *const HASH_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *const HASH_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static void test_version_rule(void **state) {
  (void)state;
  static const struct {
    int version;
    const char *sha;
    bool has_latest;
    int latest;
    const char *recorded; /* hash recorded with VERSION */
    kpi_catalog_version_verdict want;
    const char *msg; /* in the error, "" when none */
  } cases[] = {
      {1, HASH_A, false, 0, NULL, KPI_CATALOG_VERSION_NEW, ""},   /* first catalog */
      {0, HASH_A, false, 0, NULL, KPI_CATALOG_VERSION_NEW, ""},   /* version 0 (absent) */
      {2, HASH_B, true, 1, NULL, KPI_CATALOG_VERSION_NEW, ""},    /* higher */
      {7, HASH_B, true, 1, NULL, KPI_CATALOG_VERSION_NEW, ""},    /* gaps are allowed */
      {1, HASH_A, true, 1, HASH_A, KPI_CATALOG_VERSION_SAME, ""}, /* restart, same file */
      {1, HASH_B, true, 1, HASH_A, KPI_CATALOG_VERSION_CHANGED, "\"version\": 2"},
      {3, HASH_B, true, 3, HASH_A, KPI_CATALOG_VERSION_CHANGED, "\"version\": 4"},
      {1, HASH_A, true, 2, HASH_A, KPI_CATALOG_VERSION_OLDER, "rollback"}, /* known old file */
      {1, HASH_B, true, 2, HASH_A, KPI_CATALOG_VERSION_OLDER, "\"version\": 3"},
      {1, HASH_B, true, 5, NULL, KPI_CATALOG_VERSION_OLDER, "\"version\": 6"}, /* never run */
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    char err[400];
    kpi_catalog_version_verdict v =
        kpi_catalog_version_check(cases[i].version, cases[i].sha, cases[i].has_latest,
                                  cases[i].latest, cases[i].recorded, err, sizeof(err));
    if (v != cases[i].want) fail_msg("case %zu: verdict %d, want %d", i, (int)v, (int)cases[i].want);
    assert_int_equal(kpi_catalog_version_ok(v), cases[i].msg[0] == '\0');
    if (cases[i].msg[0] && !strstr(err, cases[i].msg))
      fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, cases[i].msg);
    if (!cases[i].msg[0]) assert_string_equal(err, "");
  }
}

#define CATALOG(VERSION, TARGET, SPACE)                                                        \
  "{\"schema\":\"kpi.catalog/1\"," SPACE "\"version\":" VERSION ","                           \
  "\"plan\":{\"id\":\"p\",\"name\":\"Plan\"},"                                                \
  "\"departments\":[{\"id\":\"d\",\"name\":\"D\",\"mailboxes\":[\"d@city.example\"]}],"       \
  "\"measures\":[{\"id\":\"m\",\"goal\":1,\"program\":\"P\",\"name\":\"N\",\"indicator\":\"I\"," \
  "\"unit\":\"person\",\"kind\":\"level\",\"direction\":\"increase\","                        \
  "\"baseline\":{\"fy\":2022,\"value\":10},\"target\":{\"fy\":2024,\"value\":" TARGET "},"   \
  "\"owner\":\"d\"}]}"

static kpi_catalog *parse(const char *text) {
  char err[256];
  kpi_catalog *cat = kpi_catalog_parse(text, strlen(text), err, sizeof(err));
  if (!cat) fail_msg("%s", err);
  return cat;
}

/* The hash is of the canonical text: layout and number spelling do not count, a figure does. */
static void test_canonical_hash(void **state) {
  (void)state;
  kpi_catalog *a = parse(CATALOG("1", "20", ""));
  kpi_catalog *spaced = parse(CATALOG("1", "20.0", " \n  "));
  kpi_catalog *changed = parse(CATALOG("1", "21", ""));
  assert_memory_equal(a->sha256, spaced->sha256, 32);
  assert_memory_not_equal(a->sha256, changed->sha256, 32);
  char hex[65];
  kpi_catalog_sha256_hex(a, hex);
  assert_int_equal(strlen(hex), 64);
  assert_int_equal(strspn(hex, "0123456789abcdef"), 64);
  kpi_catalog_free(a);
  kpi_catalog_free(spaced);
  kpi_catalog_free(changed);
}

static kpi_recipient recipient[] = {{NULL, NULL, (char *)"owner@city.example"}};

static kpi_alert sample_alert(void) {
  kpi_alert a;
  memset(&a, 0, sizeof(a));
  snprintf(a.alert_id, sizeof(a.alert_id), "6f1c2a70-3a5e-5c1e-9a3b-0c8d2f3e4a51");
  snprintf(a.measure_id, sizeof(a.measure_id), "m-1");
  strcpy(a.type, "alert");
  strcpy(a.status, "lagging");
  strcpy(a.previous_status, "on_track");
  a.has_value = true;
  a.value = 30;
  a.progress = 0.25;
  a.expected = 0.6;
  strcpy(a.as_of, "2024-10-01");
  a.measure_name = (char *)"移住者の増加";
  a.indicator = (char *)"登録者数";
  a.unit = (char *)"person";
  a.kind = (char *)"level";
  a.direction = (char *)"increase";
  a.baseline = 24;
  a.baseline_fy = 2022;
  a.target = 90;
  a.target_fy = 2025;
  strcpy(a.due, "2026-03-31");
  a.plan_name = (char *)"Plan";
  a.recipients = recipient;
  a.n_recipients = 1;
  strcpy(a.created_at, "2024-10-01T00:00:00.000Z");
  return a;
}

static void set_change(kpi_alert *a) {
  kpi_catalog_change *c = &a->catalog_change;
  c->present = true;
  c->version = 2;
  c->previous_version = 1;
  c->n_changes = 2;
  snprintf(c->changes[0].field, sizeof(c->changes[0].field), "target");
  c->changes[0].from = 80;
  c->changes[0].to = 90;
  snprintf(c->changes[1].field, sizeof(c->changes[1].field), "target_fy");
  c->changes[1].from = 2024;
  c->changes[1].to = 2025;
}

static void test_codec_round_trip(void **state) {
  (void)state;
  for (int with = 0; with < 2; with++) {
    kpi_alert a = sample_alert();
    if (with) set_change(&a);
    size_t len;
    char *json = kpi_alert_encode(&a, &len);
    assert_non_null(json);
    assert_int_equal(strstr(json, "\"catalog_change\"") != NULL, with); /* absent when none */
    kpi_alert b;
    kpi_errors errs = {0};
    if (kpi_alert_decode(json, len, &b, &errs) != 0) fail_msg("%s", errs.items[0].message);
    assert_int_equal(b.catalog_change.present, with);
    if (with) {
      assert_int_equal(b.catalog_change.version, 2);
      assert_int_equal(b.catalog_change.previous_version, 1);
      assert_int_equal(b.catalog_change.n_changes, 2);
      assert_string_equal(b.catalog_change.changes[0].field, "target");
      assert_true(b.catalog_change.changes[0].from == 80 && b.catalog_change.changes[0].to == 90);
      assert_string_equal(b.catalog_change.changes[1].field, "target_fy");
      assert_true(b.catalog_change.changes[1].to == 2025);
    }
    kpi_alert_clear(&b);
    free(json);
  }
}

/* A present catalog_change must be whole; null is none. */
static void test_codec_refusals(void **state) {
  (void)state;
  static const char *const bad[] = {
      "\"catalog_change\":{\"version\":2,\"previous_version\":1,\"changes\":[]}",
      "\"catalog_change\":{\"version\":2,\"previous_version\":1}",
      "\"catalog_change\":{\"previous_version\":1,\"changes\":[{\"field\":\"target\",\"from\":1,"
      "\"to\":2}]}",
      "\"catalog_change\":{\"version\":2,\"previous_version\":1,\"changes\":[{\"field\":\"name\","
      "\"from\":1,\"to\":2}]}",
      "\"catalog_change\":{\"version\":2,\"previous_version\":1,\"changes\":[{\"field\":"
      "\"target\",\"to\":2}]}",
      "\"catalog_change\":\"target changed\"",
  };
  kpi_alert a = sample_alert();
  char *json = kpi_alert_encode(&a, NULL);
  assert_non_null(json);
  size_t n = strlen(json);
  for (size_t i = 0; i <= ARRAY_LEN(bad); i++) {
    const char *member = i < ARRAY_LEN(bad) ? bad[i] : "\"catalog_change\":null";
    char buf[4096];
    snprintf(buf, sizeof(buf), "%.*s,%s}", (int)(n - 1), json, member);
    kpi_alert b;
    kpi_errors errs = {0};
    int rc = kpi_alert_decode(buf, strlen(buf), &b, &errs);
    if (i < ARRAY_LEN(bad)) {
      if (rc != -1) fail_msg("case %zu accepted", i);
      bool named = false;
      for (size_t k = 0; k < errs.n; k++) named |= strcmp(errs.items[k].field, "catalog_change") == 0;
      if (!named) fail_msg("case %zu: no error names catalog_change", i);
    } else {
      assert_int_equal(rc, 0);
      assert_false(b.catalog_change.present);
      kpi_alert_clear(&b);
    }
  }
  free(json);
}

static void test_mail_note(void **state) {
  (void)state;
  kpi_alert a = sample_alert();
  const kpi_alert *list[] = {&a};
  char *plain = kpi_mail_body_text(list, 1);
  assert_non_null(plain);
  assert_null(strstr(plain, "カタログ"));
  assert_null(strstr(plain, "catalog v"));
  free(plain);
  set_change(&a);
  char *body = kpi_mail_body_text(list, 1);
  assert_non_null(body);
  const char *ja = strstr(body, "計画の変更: 目標値が 80人 から 90人 に、目標年度が ");
  if (!ja) fail_msg("%s", body);
  if (!strstr(ja, "2025")) fail_msg("%s", body);
  assert_non_null(strstr(ja, " に変更されました（カタログ v1 → v2）\n"));
  const char *en = strstr(body, "Plan change: Target changed from 80 persons to 90 persons; "
                                "Target year changed from ");
  if (!en) fail_msg("%s", body);
  assert_non_null(strstr(en, " (catalog v1 → v2)\n"));
  assert_true(ja < en); /* Japanese first */
  free(body);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_version_rule),     cmocka_unit_test(test_canonical_hash),
      cmocka_unit_test(test_codec_round_trip), cmocka_unit_test(test_codec_refusals),
      cmocka_unit_test(test_mail_note),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
