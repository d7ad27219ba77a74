/* test_pipeline_e2e.c: the three services together on the real stack, as a city runs them: a
 * department's POST reaches the attainment table and the read API, the owner of the measure
 * that falls behind gets one mail, a duplicate POST changes nothing, the recovery sends the
 * "resolved" notice, and every service drains and exits 0 on SIGTERM. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "kpi_it_pipeline.h"

#define KIKAKU_TOKEN "sample-kikaku-token-do-not-use-in-production"
#define MEASURE "g2-uiturn-4-supporters"

/* Performs one HTTP request as kikaku (with an Idempotency-Key when IDEM is not NULL); returns
 * the status and the body in *OUT (caller frees). */
static long http(const char *method, const char *url, const char *body, const char *idem,
                 char **out) {
  char idem_h[128];
  if (idem) snprintf(idem_h, sizeof(idem_h), "Idempotency-Key: %s", idem);
  return kpi_it_http(method, url, "Authorization: Bearer " KIKAKU_TOKEN, idem ? idem_h : NULL,
                     body, out, NULL);
}

/* Writes a copy of the shipped catalog whose mailboxes are on DOMAIN, so that the mails of this
 * test cannot mix with other tests' in the shared Maildir. */
static void write_catalog(const char *path, const char *domain) {
  char *text = kpi_it_read_file(KPI_SOURCE_DIR "/config/catalog.json", NULL);
  assert_non_null(text);
  FILE *out = fopen(path, "wb");
  assert_non_null(out);
  const char *from = "@ashibetsu-city.example";
  char *p = text, *at;
  while ((at = strstr(p, from))) {
    fwrite(p, 1, (size_t)(at - p), out);
    fprintf(out, "@%s", domain);
    p = at + strlen(from);
  }
  fputs(p, out);
  fclose(out);
  free(text);
}

/* Mails addressed to ADDR, with base64 text parts decoded and appended, so that assertions can
 * look for the Japanese text. Returns how many; *ALL gets them concatenated (caller frees). */
static int mails_to(const char *addr, char **all) {
  int count = 0, n;
  char **msgs = kpi_it_maildir_read(getenv("KPI_MAILDIR"), &n);
  size_t cap = 1, len = 0;
  char *acc = calloc(1, 1);
  for (int i = 0; i < n; i++) {
    char to[256];
    snprintf(to, sizeof(to), "<%s>", addr);
    if (!strstr(msgs[i], to)) continue;
    count++;
    size_t mlen = strlen(msgs[i]);
    char *decoded = calloc(1, mlen + 1);
    /* Decode every base64 block: the lines after a blank line following a base64 header. */
    const char *p = msgs[i];
    while ((p = strstr(p, "Content-Transfer-Encoding: base64"))) {
      const char *body = strstr(p, "\n\n");
      const char *body2 = strstr(p, "\r\n\r\n");
      if (!body || (body2 && body2 < body)) body = body2;
      if (!body) break;
      body += body == body2 ? 4 : 2;
      /* The block runs to the next MIME boundary ("--..."), which base64 never contains. */
      char *part = kpi_it_b64_decode(body, strcspn(body, "-"));
      strcat(decoded, part);
      free(part);
      p = body;
    }
    size_t add = mlen + strlen(decoded) + 2;
    acc = realloc(acc, cap + add);
    len += (size_t)sprintf(acc + len, "%s\n%s\n", msgs[i], decoded);
    cap += add;
    free(decoded);
  }
  kpi_it_strv_free(msgs);
  if (all) *all = acc;
  else free(acc);
  return count;
}

static int wait_mails(const char *addr, int want, int timeout_ms, char **all) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  int n = 0;
  while ((n = mails_to(addr, NULL)) < want && kpi_it_now_ms() < deadline) kpi_it_sleep_ms(200);
  kpi_it_sleep_ms(500); /* a duplicate would arrive right after: give it the chance */
  return mails_to(addr, all);
}

static void test_pipeline(void **state) {
  (void)state;
  /* As in a deployment (docs/database.md): the owner migrates, each service logs in with its
   * own least-privilege role. */
  kpi_it_pipeline pl;
  kpi_it_pipeline_init(&pl, "e2e",
                       KPI_IT_SVC(KPI_IT_INGEST) | KPI_IT_SVC(KPI_IT_EVALUATOR) |
                           KPI_IT_SVC(KPI_IT_NOTIFIER));
  char domain[96], catalog[256];
  snprintf(domain, sizeof(domain), "%s.example", pl.tag);
  for (char *p = domain; *p; p++)
    if (*p == '_') *p = '-';
  snprintf(catalog, sizeof(catalog), "%s/%s-catalog.json", getenv("KPI_STACK_DIR"), pl.tag);
  write_catalog(catalog, domain);

  /* 1 March 2024: e = 336/731 of the way from 31 March 2023 to 31 March 2025, nothing stale. */
  static const char *const fixed[] = {"KPI_EVAL_DATE=2024-03-01", "KPI_SWEEP_INTERVAL_MS=1000",
                                      "KPI_NOTIFY_GROUP_WAIT_MS=1000", "KPI_NOTIFY_POLL_MS=200",
                                      /* Links go to the report's measure page (trailing
                                       * slash dropped), not the catalog's dashboard. */
                                      "KPI_REPORT_BASE_URL=http://127.0.0.1:8083/", NULL};
  kpi_it_pipeline_start(&pl, catalog, fixed);
  int p_ing = pl.port[KPI_IT_INGEST], p_ev = pl.port[KPI_IT_EVALUATOR];

  char url[256], *body = NULL;
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/measurements", p_ing);
  const char *idem = "5d0c6c52-3a55-4f0e-9a51-7d8c2f1e9b01";
  /* 26 registrants against a baseline of 24 and a target of 50: p = 2/26 ≈ 0.08, far below
   * 0.8 × e ≈ 0.37, so the measure is lagging. */
  const char *lagging = "{\"measure_id\":\"" MEASURE "\",\"observed_at\":\"2024-02-29\","
                        "\"value\":26,\"unit\":\"person\",\"note\":\"E2E 登録者数\"}";
  long st = http("POST", url, lagging, idem, &body);
  if (st != 202) fail_msg("POST: %ld %s", st, body);
  assert_non_null(strstr(body, idem));
  free(body);

  char att_url[256];
  snprintf(att_url, sizeof(att_url), "http://127.0.0.1:%d/v1/attainment/%s", p_ev, MEASURE);
  long long deadline = kpi_it_now_ms() + 30000;
  int seen = 0;
  while (!seen && kpi_it_now_ms() < deadline) {
    body = NULL;
    if (http("GET", att_url, NULL, NULL, &body) == 200 && strstr(body, "\"lagging\"")) seen = 1;
    free(body);
    if (!seen) kpi_it_sleep_ms(200);
  }
  assert_true(seen);

  char owner[160], *mail = NULL;
  snprintf(owner, sizeof(owner), "kikaku@%s", domain);
  int n = wait_mails(owner, 1, 30000, &mail);
  if (n != 1) fail_msg("expected 1 mail to %s, got %d", owner, n);
  assert_non_null(strstr(mail, "Auto-Submitted: auto-generated"));
  assert_non_null(strstr(mail, "=?UTF-8?"));              /* encoded subject */
  assert_non_null(strstr(mail, "星の降る里あしべつ応援団")); /* the measure, in Japanese */
  if (!strstr(mail, "詳細: http://127.0.0.1:8083/measures/" MEASURE "\r\n"))
    fail_msg("the mail does not link to the report's measure page:\n%s", mail);
  free(mail);

  /* The same measurement again (same Idempotency-Key) is stored once. */
  st = http("POST", url, lagging, idem, NULL);
  assert_int_equal(st, 202);
  PGconn *pg = kpi_it_pg(pl.conninfo);
  kpi_it_sleep_ms(2000);
  char *count = kpi_it_pg_value(pg, "SELECT count(*) FROM measurements");
  assert_string_equal(count, "1");
  free(count);

  /* The target is reached: the measure recovers and the owner gets the resolved notice. */
  const char *achieved = "{\"measure_id\":\"" MEASURE "\",\"observed_at\":\"2024-03-01\","
                         "\"value\":50,\"unit\":\"person\"}";
  st = http("POST", url, achieved, NULL, NULL);
  assert_int_equal(st, 202);
  n = wait_mails(owner, 2, 30000, &mail);
  if (n != 2) fail_msg("expected 2 mails to %s (alert, resolved), got %d", owner, n);
  free(mail);
  char *status = kpi_it_pg_value(pg, "SELECT status || '/' || value FROM attainment WHERE "
                                     "measure_id = '" MEASURE "'");
  assert_string_equal(status, "achieved/50");
  free(status);
  PQfinish(pg);

  /* Nobody else was written to: the other measures had nothing to say on 1 March 2024. */
  char other[160];
  snprintf(other, sizeof(other), "kankyo@%s", domain);
  assert_int_equal(mails_to(other, NULL), 0);

  kpi_it_pipeline_stop(&pl);
}

int main(void) {
  kpi_it_init();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_pipeline)};
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
