/* test_evaluator_catalog_version.c: catalog changes are part of the record (docs/evaluator.md
 * "Catalog versions"). A reload whose file changed without a higher version is refused (the
 * running figures stay, logged, counted); a higher version with a changed target is recorded,
 * the history rows carry it, and the next alert about the measure states the change once, as
 * the notifier's mail then does; a restart with a changed file under the same version, or
 * with an older file, exits 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "kpi_mail.h"
#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters" /* level 24 -> 50, FY2022 -> FY2024, owner kikaku */
#define ATT "SELECT %s FROM attainment WHERE measure_id = '" LEVEL "'"
#define LAST_OUTBOX "(SELECT payload::jsonb FROM outbox WHERE msg_key = '" LEVEL "' ORDER BY id DESC LIMIT 1)"

static void write_file(const char *path, const char *text) {
  assert_int_equal(kpi_it_write_file(path, text), 0);
}

/* TEXT with the first FROM after AFTER replaced by TO (a new string; TEXT is kept). */
static char *replaced(const char *text, const char *after, const char *from, const char *to) {
  const char *a = strstr(text, after);
  assert_non_null(a);
  const char *p = strstr(a, from);
  assert_non_null(p);
  size_t pre = (size_t)(p - text), fl = strlen(from), tl = strlen(to), n = strlen(text);
  char *out = malloc(n - fl + tl + 1);
  memcpy(out, text, pre);
  memcpy(out + pre, to, tl);
  memcpy(out + pre + tl, p + fl, n - pre - fl + 1);
  return out;
}

static void wait_log(const evw *w, const char *needle, int count) {
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "test $(grep -c '%s' %s) -ge %d", needle, w->log, count);
  long long deadline = kpi_it_now_ms() + 15000;
  while (system(cmd) != 0 && kpi_it_now_ms() < deadline) kpi_it_sleep_ms(100);
  if (system(cmd) != 0) fail_msg("no %d× %s in %s", count, needle, w->log);
}

static void expect_progress(evw *w, double want) {
  char *p = evw_sql(w, "SELECT progress FROM attainment WHERE measure_id = '" LEVEL "'");
  if (fabs(strtod(p, NULL) - want) > 1e-9) fail_msg("progress %s, want %.17g", p, want);
  free(p);
}

/* Spawns the evaluator, which must exit 2 at start naming the version to use. */
static void expect_refused_start(evw *w, const char *want_in_log) {
  pid_t pid = kpi_it_spawn("services/evaluator/kpi-evaluator", kpi_it_env_list(&w->env), w->log);
  int st = 0;
  long long deadline = kpi_it_now_ms() + 30000;
  pid_t r;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && kpi_it_now_ms() < deadline) kpi_it_sleep_ms(100);
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fail_msg("the evaluator did not exit; log %s", w->log);
  }
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 2);
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "grep catalog_version_refused %s | grep -q '%s'", w->log,
           want_in_log);
  if (system(cmd) != 0) fail_msg("no refusal naming %s in %s", want_in_log, w->log);
}

/* The alert's stored payload, as the notifier decodes and renders it. */
static void expect_mail_note(evw *w) {
  char *payload = evw_sql(w, "SELECT payload FROM outbox WHERE msg_key = '" LEVEL "'"
                             " AND payload::jsonb ? 'catalog_change'");
  kpi_alert a;
  kpi_errors errs = {0};
  assert_int_equal(kpi_alert_decode(payload, strlen(payload), &a, &errs), 0);
  const kpi_alert *list[] = {&a};
  char *body = kpi_mail_body_text(list, 1);
  assert_non_null(body);
  if (!strstr(body, "目標値が 50人 から 102人 に変更されました（カタログ v1 → v2）") ||
      !strstr(body, "Target changed from 50 persons to 102 persons (catalog v1 → v2)"))
    fail_msg("%s", body);
  free(body);
  kpi_alert_clear(&a);
  free(payload);
}

static void test_catalog_versions(void **state) {
  (void)state;
  evw w;
  /* At 2024-03-31, e = 366/731; a reading of 37 is p = 13/26 = 0.5: on track. */
  evw_init(&w, "it_evcatver", "2024-03-31");
  char path[256], src[300];
  snprintf(path, sizeof(path), "/tmp/%s.catalog.json", w.name);
  snprintf(src, sizeof(src), "%s/config/catalog.json", KPI_SOURCE_DIR);
  char *v1 = kpi_it_read_file(src, NULL);
  assert_non_null(v1);
  write_file(path, v1);
  evw_replace_env(&w, "KPI_CATALOG", path);
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_expect_sql(&w, "SELECT string_agg(version::text, ',') FROM catalog_versions", "1");
  evw_expect_sql(&w, "SELECT target FROM measure_catalog WHERE measure_id = '" LEVEL "'"
                     " AND catalog_version = 1", "50");
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-03-01", 37, "person", NULL);
  evw_expect_sql(&w, "SELECT status || ' ' || catalog_version || ' ' || noted_catalog_version"
                     " FROM attainment WHERE measure_id = '" LEVEL "'", "on_track 1 1");

  /* Target 50 -> 102 under the same version 1: refused, counted, the old target still used. */
  char *v1_changed = replaced(v1, "\"id\": \"" LEVEL "\"", "\"value\": 50}", "\"value\": 102}");
  write_file(path, v1_changed);
  assert_int_equal(kill(w.pid, SIGHUP), 0);
  wait_log(&w, "catalog_version_refused", 1);
  char *metrics = evw_http_get(&w, "/metrics");
  assert_non_null(strstr(metrics, "kpi_evaluator_catalog_refused_total 1"));
  free(metrics);
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-03-02", 38, "person", NULL);
  evw_expect_sql(&w, "SELECT value || ' ' || status FROM attainment WHERE measure_id = '" LEVEL "'",
                 "38 on_track");
  expect_progress(&w, 14.0 / 26.0);
  evw_assert_sql(&w, "SELECT target || ' ' || catalog_version FROM measures WHERE id = '" LEVEL "'",
                 "50 1");
  evw_assert_sql(&w, "SELECT count(*) FROM catalog_versions", "1");

  /* The same change as version 2: recorded; p = 14/78 < 0.8 e, lagging; the history rows of
   * the reload carry version 2 and the alert states the change. */
  char *v2 = replaced(v1_changed, "\"version\"", "1", "2");
  write_file(path, v2);
  assert_int_equal(kill(w.pid, SIGHUP), 0);
  evw_expect_sql(&w, "SELECT status || ' ' || catalog_version || ' ' || noted_catalog_version"
                     " FROM attainment WHERE measure_id = '" LEVEL "'", "lagging 2 2");
  expect_progress(&w, 14.0 / 78.0);
  evw_assert_sql(&w, "SELECT string_agg(version::text, ',' ORDER BY version) FROM catalog_versions",
                 "1,2");
  evw_assert_sql(&w, "SELECT catalog_version FROM attainment_history WHERE measure_id = '" LEVEL
                     "' ORDER BY id DESC LIMIT 1", "2");
  evw_assert_sql(&w, "SELECT string_agg(DISTINCT catalog_version::text, ',') FROM attainment_history"
                     " WHERE measure_id = '" LEVEL "' AND status = 'on_track'", "1");
  evw_expect_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "' AND sent_at IS NOT NULL",
                 "1");
  evw_assert_sql(&w, "SELECT (p->>'type') || ' ' || (p->'catalog_change')::text FROM " LAST_OUTBOX
                     " AS x(p)",
                 "alert {\"changes\": [{\"to\": 102, \"from\": 50, \"field\": \"target\"}], "
                 "\"version\": 2, \"previous_version\": 1}");
  expect_mail_note(&w);

  /* Once: the next alert (resolved at 90, p = 66/78) says nothing of it. */
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-03-20", 90, "person", NULL);
  evw_expect_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "' AND sent_at IS NOT NULL",
                 "2");
  evw_assert_sql(&w, "SELECT (p->>'type') || ' ' || (p ? 'catalog_change')::text FROM " LAST_OUTBOX
                     " AS x(p)", "resolved false");
  evw_stop(&w);

  /* Restarts: a changed file under version 2, and the older version 1 file, exit 2. */
  char *v2_changed = replaced(v2, "\"id\": \"" LEVEL "\"", "\"value\": 102}", "\"value\": 103}");
  write_file(path, v2_changed);
  expect_refused_start(&w, "set [^0-9]*version[^0-9]*: 3");
  write_file(path, v1);
  expect_refused_start(&w, "older than version 2");
  evw_assert_sql(&w, "SELECT count(*) FROM catalog_versions", "2");

  free(v1);
  free(v1_changed);
  free(v2);
  free(v2_changed);
  unlink(path);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_catalog_versions)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
