/* test_report_browser.c: the report pages in headless chromium (tests/browser/report_browser.py
 * over the DevTools protocol) against the real stack: rows and statuses in the DOM, the as_of
 * form, the chart, axe-core without critical or serious violations. Screenshots are kept as
 * artifacts in <build>/artifacts/report-browser/. Skipped (77) where chromium is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kpi_it_pipeline.h"
#include "test_evaluator_util.h"

#define SUPPORTERS "g2-uiturn-4-supporters"

static void test_browser(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_rpbrowser", "2024-03-01");
  evw_start(&w, NULL);
  if (evw_wait_ready(&w, 60000) != 0) fail_msg("evaluator not ready; log %s", w.log);
  evw_produce_noted(&w, SUPPORTERS, "kikaku", "2024-02-29", 26, "person",
                    "<script>alert(1)</script> 登録フォーム経由");
  evw_produce_reading(&w, SUPPORTERS, "kikaku", "2023-09-30", 25, "person", NULL);
  evw_produce_reading(&w, "g4-carbon-2-led-rate", "kankyo", "2024-02-01", 30.2, "percent", NULL);
  evw_produce_reading(&w, "g4-digital-4-hoiku-app-rate", "kosodate", "2024-01-31", 97, "percent",
                      NULL);
  evw_flush(&w);
  evw_expect_sql_within(&w, "SELECT count(*) FROM measurements", "4", 30000);
  evw_expect_sql_within(&w, "SELECT status FROM attainment WHERE measure_id = '" SUPPORTERS "'",
                        "lagging", 30000);

  int port;
  char log[256];
  pid_t rp = kpi_it_report_start(w.pg, w.conninfo, w.name, &port, log, sizeof(log));

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
