/* test_entry_browser.c: the departments' entry page in headless chromium
 * (tests/browser/entry_browser.py over the DevTools protocol) against kpi-ingest, kpi-evaluator
 * and kpi-report on the real stack: the sample token, one value (202), a Shift_JIS CSV with a
 * Japanese note through the file input (preview, per-row results), the note on the report's
 * measure page, axe-core on /entry without critical or serious violations. Screenshots are
 * kept in <build>/artifacts/entry-browser/. Skipped (77) where chromium is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "kpi_it_pipeline.h"

#define KIKAKU_TOKEN "sample-kikaku-token-do-not-use-in-production"

static void test_entry_browser(void **state) {
  (void)state;
  /* As deployed: the owner migrates, the evaluator and the report log in with their roles. */
  kpi_it_pipeline pl;
  kpi_it_pipeline_init(&pl, "entrybr",
                       KPI_IT_SVC(KPI_IT_INGEST) | KPI_IT_SVC(KPI_IT_EVALUATOR) |
                           KPI_IT_SVC(KPI_IT_REPORT));
  static const char *const extra[] = {"KPI_ALLOW_SAMPLE_TOKENS=1", NULL};
  kpi_it_pipeline_start(&pl, NULL, extra);

  /* The tools are pinned and cached by scripts/browser-tools.sh; the first run fetches them. */
  char cmd[2048];
  snprintf(cmd, sizeof(cmd),
           "py=$(%s/scripts/browser-tools.sh) && \"$py\" %s/tests/browser/entry_browser.py "
           "http://127.0.0.1:%d http://127.0.0.1:%d %s/artifacts/entry-browser "
           "%s/.cache/node_modules/axe-core/axe.min.js " KIKAKU_TOKEN,
           KPI_SOURCE_DIR, KPI_SOURCE_DIR, pl.port[KPI_IT_INGEST], pl.port[KPI_IT_REPORT],
           KPI_BINARY_DIR, KPI_SOURCE_DIR);
  long long t0 = kpi_it_now_ms();
  int rc = system(cmd);
  fprintf(stderr, "browser checks took %lld ms; screenshots in %s/artifacts/entry-browser\n",
          kpi_it_now_ms() - t0, KPI_BINARY_DIR);
  if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
    fail_msg("entry_browser.py failed; logs: %s", kpi_it_pipeline_logs(&pl));

  kpi_it_pipeline_stop(&pl);
}

int main(void) {
  if (system("command -v chromium >/dev/null 2>&1") != 0) {
    fprintf(stderr, "chromium not installed (scripts/bootstrap.sh): skipped\n");
    return 77;
  }
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_entry_browser)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
