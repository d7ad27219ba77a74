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

#include "kpi_it.h"
#include "kpi_pg.h"

#define KIKAKU_TOKEN "sample-kikaku-token-do-not-use-in-production"

static void test_entry_browser(void **state) {
  (void)state;
  char tag[64], conninfo[512], err[512], sql[256];
  kpi_it_unique("entrybr", tag, sizeof(tag));
  assert_int_equal(kpi_it_create_db(tag, conninfo, sizeof(conninfo)), 0);
  /* As deployed: the owner migrates, the evaluator and the report log in with their roles. */
  PGconn *owner_pg = kpi_pg_connect(conninfo, err, sizeof(err));
  if (!owner_pg || kpi_pg_migrate(owner_pg, err, sizeof(err)) < 0) fail_msg("%s", err);
  snprintf(sql, sizeof(sql), "CREATE ROLE %s_ev LOGIN IN ROLE kpi_evaluator", tag);
  assert_int_equal(kpi_pg_exec(owner_pg, sql, err, sizeof(err)), 0);
  snprintf(sql, sizeof(sql), "CREATE ROLE %s_rd LOGIN IN ROLE kpi_reader", tag);
  assert_int_equal(kpi_pg_exec(owner_pg, sql, err, sizeof(err)), 0);
  PQfinish(owner_pg);

  int p_ing = kpi_it_free_port(), p_ev = kpi_it_free_port(), p_rp = kpi_it_free_port();
  kpi_it_env e = {0};
  kpi_it_env_add(&e, "KPI_CATALOG=%s/config/catalog.json", KPI_SOURCE_DIR);
  kpi_it_env_add(&e, "KPI_ALLOW_SAMPLE_TOKENS=1");
  kpi_it_env_add(&e, "KPI_TOPIC_MEASUREMENTS=%s_m", tag);
  kpi_it_env_add(&e, "KPI_TOPIC_ALERTS=%s_a", tag);
  kpi_it_env_add(&e, "KPI_TOPIC_MEASUREMENTS_DLQ=%s_md", tag);
  kpi_it_env_add(&e, "KPI_TOPIC_ALERTS_DLQ=%s_ad", tag);
  kpi_it_env_add(&e, "KPI_INGEST_LISTEN=127.0.0.1:%d", p_ing);
  kpi_it_env_add(&e, "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", p_ev);
  kpi_it_env_add(&e, "KPI_REPORT_LISTEN=127.0.0.1:%d", p_rp);
  kpi_it_env_add(&e, "KPI_EVALUATOR_GROUP=%s_ev", tag);
  kpi_it_env e_ev = e, e_rp = e;
  kpi_it_env_add(&e_ev, "DATABASE_URL=%s user=%s_ev", conninfo, tag);
  kpi_it_env_add(&e_rp, "DATABASE_URL=%s user=%s_rd", conninfo, tag);
  char log_ing[256], log_ev[256], log_rp[256];
  snprintf(log_ing, sizeof(log_ing), "%s/%s-ingest.log", getenv("KPI_STACK_DIR"), tag);
  snprintf(log_ev, sizeof(log_ev), "%s/%s-evaluator.log", getenv("KPI_STACK_DIR"), tag);
  snprintf(log_rp, sizeof(log_rp), "%s/%s-report.log", getenv("KPI_STACK_DIR"), tag);
  pid_t ev = kpi_it_spawn("services/evaluator/kpi-evaluator", kpi_it_env_list(&e_ev), log_ev);
  pid_t ing = kpi_it_spawn("services/ingest/kpi-ingest", kpi_it_env_list(&e), log_ing);
  pid_t rp = kpi_it_spawn("services/report/kpi-report", kpi_it_env_list(&e_rp), log_rp);
  if (kpi_it_wait_http(p_ing, "/readyz", 200, 30000) ||
      kpi_it_wait_http(p_ev, "/healthz", 200, 30000) ||
      kpi_it_wait_http(p_rp, "/readyz", 200, 30000))
    fail_msg("services did not come up; logs: %s %s %s", log_ing, log_ev, log_rp);

  /* The tools are pinned and cached by scripts/browser-tools.sh; the first run fetches them. */
  char cmd[2048];
  snprintf(cmd, sizeof(cmd),
           "py=$(%s/scripts/browser-tools.sh) && \"$py\" %s/tests/browser/entry_browser.py "
           "http://127.0.0.1:%d http://127.0.0.1:%d %s/artifacts/entry-browser "
           "%s/.cache/node_modules/axe-core/axe.min.js " KIKAKU_TOKEN,
           KPI_SOURCE_DIR, KPI_SOURCE_DIR, p_ing, p_rp, KPI_BINARY_DIR, KPI_SOURCE_DIR);
  long long t0 = kpi_it_now_ms();
  int rc = system(cmd);
  fprintf(stderr, "browser checks took %lld ms; screenshots in %s/artifacts/entry-browser\n",
          kpi_it_now_ms() - t0, KPI_BINARY_DIR);
  if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0)
    fail_msg("entry_browser.py failed; logs: %s %s %s", log_ing, log_ev, log_rp);

  int s1 = kpi_it_stop(ing, SIGTERM, 20000);
  int s2 = kpi_it_stop(ev, SIGTERM, 20000);
  int s3 = kpi_it_stop(rp, SIGTERM, 20000);
  assert_true(WIFEXITED(s1) && WEXITSTATUS(s1) == 0);
  assert_true(WIFEXITED(s2) && WEXITSTATUS(s2) == 0);
  assert_true(WIFEXITED(s3) && WEXITSTATUS(s3) == 0);
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
