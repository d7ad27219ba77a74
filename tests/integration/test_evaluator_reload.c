/* test_evaluator_reload.c: SIGHUP reloads the catalog. A changed target reaches the `measures`
 * mirror and the attainment (the reload is followed by a sweep); a broken file is refused, the
 * running catalog kept, and the service goes on consuming. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters" /* level 24 -> 50, FY2022 -> FY2024, owner kikaku */

/* Written beside and renamed (kpi_it_write_file), so the evaluator never reads half a file. */
static void write_file(const char *path, const char *text) {
  assert_int_equal(kpi_it_write_file(path, text), 0);
}

/* Replaces the first occurrence of FROM after AFTER in TEXT (in place when the lengths are
 * equal, else into a new string; TEXT is freed). */
static char *replace_after(char *text, const char *after, const char *from, const char *to) {
  char *a = strstr(text, after);
  assert_non_null(a);
  char *p = strstr(a, from);
  assert_non_null(p);
  size_t pre = (size_t)(p - text), fl = strlen(from), tl = strlen(to), n = strlen(text);
  char *out = malloc(n - fl + tl + 1);
  memcpy(out, text, pre);
  memcpy(out + pre, to, tl);
  memcpy(out + pre + tl, p + fl, n - pre - fl + 1);
  free(text);
  return out;
}

static void test_sighup(void **state) {
  (void)state;
  evw w;
  /* At 2024-03-31, e = 366/731; a reading of 37 is p = 13/26 = 0.5: on track. */
  evw_init(&w, "it_evreload", "2024-03-31");
  char path[256], src[300];
  snprintf(path, sizeof(path), "/tmp/%s.catalog.json", w.name);
  snprintf(src, sizeof(src), "%s/config/catalog.json", KPI_SOURCE_DIR);
  char *orig = kpi_it_read_file(src, NULL);
  assert_non_null(orig);
  write_file(path, orig);
  evw_replace_env(&w, "KPI_CATALOG", path);
  const char *extra[] = {"KPI_KAFKA_PROP_SESSION_TIMEOUT_MS=6000", "KPI_KAFKA_PROP_HEARTBEAT_INTERVAL_MS=500", NULL};
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);

  evw_expect_sql(&w, "SELECT target FROM measures WHERE id = '" LEVEL "'", "50");
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-03-01", 37, "person", NULL);
  evw_expect_sql(&w, "SELECT status || ' ' || progress FROM attainment WHERE measure_id = '" LEVEL "'",
             "on_track 0.5");

  /* Target 50 -> 102 and version 1 -> 2: p = 13/78 = 1/6 < 0.8 e, so lagging. */
  char *cat = strdup(orig);
  cat = replace_after(cat, "\"version\"", "1", "2");
  cat = replace_after(cat, "\"id\": \"" LEVEL "\"", "\"value\": 50}", "\"value\": 102}");
  write_file(path, cat);
  free(cat);
  assert_int_equal(kill(w.pid, SIGHUP), 0);
  evw_expect_sql(&w, "SELECT target || ' ' || catalog_version FROM measures WHERE id = '" LEVEL "'",
             "102 2");
  evw_expect_sql(&w, "SELECT status FROM attainment WHERE measure_id = '" LEVEL "'", "lagging");
  char *p = evw_sql(&w, "SELECT progress FROM attainment WHERE measure_id = '" LEVEL "'");
  assert_true(fabs(strtod(p, NULL) - 13.0 / 78.0) < 1e-9);
  free(p);
  /* The transition into lagging is announced like any other. */
  evw_expect_sql(&w, "SELECT count(*) FROM outbox WHERE msg_key = '" LEVEL "' AND sent_at IS NOT NULL",
             "1");

  /* A broken file: refused, the running catalog (target 102) kept, the service alive. */
  write_file(path, "{\"schema\": \"kpi.catalog/1\", \"version\": 3, \"measures\": [");
  assert_int_equal(kill(w.pid, SIGHUP), 0);
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "grep -q catalog_reload_failed %s", w.log);
  long long deadline = kpi_it_now_ms() + 10000;
  while (system(cmd) != 0 && kpi_it_now_ms() < deadline) kpi_it_sleep_ms(100);
  assert_int_equal(system(cmd), 0);
  int st;
  assert_int_equal(waitpid(w.pid, &st, WNOHANG), 0);
  assert_int_equal(kpi_it_wait_http(w.port, "/healthz", 200, 5000), 0);
  /* Still consuming, still with the reloaded target: 90 is p = 66/78. */
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-03-20", 90, "person", NULL);
  evw_expect_sql(&w, "SELECT value || ' ' || status FROM attainment WHERE measure_id = '" LEVEL "'",
             "90 on_track");
  p = evw_sql(&w, "SELECT progress FROM attainment WHERE measure_id = '" LEVEL "'");
  assert_true(fabs(strtod(p, NULL) - 66.0 / 78.0) < 1e-9);
  free(p);
  evw_expect_sql(&w, "SELECT target || ' ' || catalog_version FROM measures WHERE id = '" LEVEL "'",
             "102 2");

  evw_stop(&w);
  free(orig);
  unlink(path);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_sighup)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
