/* test_report_browser.c: the report pages in headless chromium (tests/browser/report_browser.py
 * over the DevTools protocol) against the real stack: rows and statuses in the DOM, the as_of
 * form, the chart, axe-core without critical or serious violations. Screenshots are kept as
 * artifacts in <build>/artifacts/report-browser/. Skipped (77) where chromium is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_pg.h"
#include "test_evaluator_util.h"

#define SUPPORTERS "g2-uiturn-4-supporters"

static void test_browser(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_rpbrowser", "2024-03-01");
  evw_start(&w, NULL);
  if (evw_wait_ready(&w, 60000) != 0) fail_msg("evaluator not ready; log %s", w.log);
  char rec[2048], id[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(id);
  snprintf(rec, sizeof(rec),
           "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"%s\",\"measure_id\":\"" SUPPORTERS
           "\",\"department\":\"kikaku\",\"observed_at\":\"2024-02-29\",\"value\":26,"
           "\"unit\":\"person\",\"note\":\"<script>alert(1)</script> 登録フォーム経由\","
           "\"received_at\":\"2024-03-01T00:00:00Z\"}",
           id);
  evw_produce(&w, w.t_meas, SUPPORTERS, rec);
  evw_produce_reading(&w, SUPPORTERS, "kikaku", "2023-09-30", 25, "person", NULL);
  evw_produce_reading(&w, "g4-carbon-2-led-rate", "kankyo", "2024-02-01", 30.2, "percent", NULL);
  evw_produce_reading(&w, "g4-digital-4-hoiku-app-rate", "kosodate", "2024-01-31", 97, "percent",
                      NULL);
  evw_flush(&w);
  evw_expect_sql_within(&w, "SELECT count(*) FROM measurements", "4", 30000);
  evw_expect_sql_within(&w, "SELECT status FROM attainment WHERE measure_id = '" SUPPORTERS "'",
                        "lagging", 30000);

  char sql[256], err[512];
  snprintf(sql, sizeof(sql), "CREATE ROLE %s_rd LOGIN IN ROLE kpi_reader", w.name);
  assert_int_equal(kpi_pg_exec(w.pg, sql, err, sizeof(err)), 0);
  char rd_conninfo[700], log[256];
  snprintf(rd_conninfo, sizeof(rd_conninfo), "%s user=%s_rd", w.conninfo, w.name);
  snprintf(log, sizeof(log), "%s/%s-report.log", getenv("KPI_STACK_DIR"), w.name);
  int port = kpi_it_free_port();
  kpi_it_env e = {0};
  kpi_it_env_add(&e, "DATABASE_URL=%s", rd_conninfo);
  kpi_it_env_add(&e, "KPI_REPORT_LISTEN=127.0.0.1:%d", port);
  kpi_it_env_add(&e, "KPI_CATALOG=%s/config/catalog.json", KPI_SOURCE_DIR);
  kpi_it_env_add(&e, "KPI_ALLOW_SAMPLE_TOKENS=1");
  pid_t rp = kpi_it_spawn("services/report/kpi-report", kpi_it_env_list(&e), log);
  if (kpi_it_wait_http(port, "/readyz", 200, 30000) != 0) fail_msg("report not ready; log %s", log);

  /* The tools (websocket-client in the venv, axe-core from npm) are pinned and cached by the
   * script; the first run fetches them. */
  char cmd[2048];
  snprintf(cmd, sizeof(cmd),
           "py=$(%s/scripts/browser-tools.sh) && \"$py\" %s/tests/browser/report_browser.py "
           "http://127.0.0.1:%d %s/artifacts/report-browser "
           "%s/.cache/node_modules/axe-core/axe.min.js",
           KPI_SOURCE_DIR, KPI_SOURCE_DIR, port, KPI_BINARY_DIR, KPI_SOURCE_DIR);
  long long t0 = kpi_it_now_ms();
  int rc = system(cmd);
  fprintf(stderr, "browser checks took %lld ms; screenshots in %s/artifacts/report-browser\n",
          kpi_it_now_ms() - t0, KPI_BINARY_DIR);
  assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
  int s = kpi_it_stop(rp, SIGTERM, 20000);
  assert_true(WIFEXITED(s) && WEXITSTATUS(s) == 0);
  evw_close(&w);
}

int main(void) {
  if (system("command -v chromium >/dev/null 2>&1") != 0) {
    fprintf(stderr, "chromium not installed (scripts/bootstrap.sh): skipped\n");
    return 77;
  }
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_browser)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
