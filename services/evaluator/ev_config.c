/* ev_config.c: the evaluator's configuration, read from the environment in one place
 * (docs/evaluator.md "Configuration"). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_env.h"

static int load_numbers(ev_config *cfg, char *err, size_t errsize) {
  int64_t v;
  if (kpi_env_int("KPI_BATCH_MAX", 5000, 1, 100000, &v, err, errsize)) return -1;
  cfg->batch_max = (int)v;
  if (kpi_env_int("KPI_EVALUATOR_COPY", 1, 0, 1, &v, err, errsize)) return -1;
  cfg->copy = v == 1;
  if (kpi_env_double("KPI_LAG_RATIO", KPI_LAG_RATIO_DEFAULT, 0.01, 1.0, &cfg->lag_ratio, err,
                     errsize))
    return -1;
  if (kpi_env_int("KPI_REPEAT_INTERVAL_DAYS", KPI_REPEAT_DAYS_DEFAULT, 1, 3660, &v, err, errsize))
    return -1;
  cfg->repeat_days = (int)v;
  if (kpi_env_int("KPI_SWEEP_INTERVAL_MS", 60000, 100, 86400000, &cfg->sweep_ms, err, errsize))
    return -1;
  if (kpi_env_int("KPI_DRAIN_TIMEOUT_MS", 10000, 100, 600000, &cfg->drain_timeout_ms, err,
                  errsize))
    return -1;
#ifdef KPI_TEST_HOOKS
  /* Fault injection for the integration tests, compiled in only with -DKPI_TEST_HOOKS=ON: a
   * release binary does not read these variables at all, so no environment can trigger them. */
  if (kpi_env_int("KPI_TEST_CRASH_AFTER_COMMIT", 0, 0, 1, &v, err, errsize)) return -1;
  cfg->crash_after_commit = v == 1;
  if (kpi_env_int("KPI_TEST_LOSE_COMMITS", 0, 0, 100, &v, err, errsize)) return -1;
  cfg->lose_commits = (int)v;
#endif
  if (kpi_env_int("KPI_EVALUATOR_API_MAX_PENDING", 32, 1, 10000, &v, err, errsize)) return -1;
  cfg->api_max_pending = (int)v;
  if (kpi_env_int("KPI_OUTBOX_RETENTION_DAYS", 30, 1, 36500, &v, err, errsize)) return -1;
  cfg->outbox_retention_days = (int)v;
  return 0;
}

/* KPI_OPERATOR_TOKEN_SHA256: 64 hex digits (either case), or unset (docs/evaluator.md). */
static int load_operator(ev_config *cfg, char *err, size_t errsize) {
  const char *hex = kpi_env_str("KPI_OPERATOR_TOKEN_SHA256", NULL);
  if (!hex) return 0;
  bool ok = strlen(hex) == 64;
  for (int i = 0; ok && i < 32; i++) {
    unsigned byte = 0;
    ok = isxdigit((unsigned char)hex[2 * i]) && isxdigit((unsigned char)hex[2 * i + 1]) &&
         sscanf(hex + 2 * i, "%2x", &byte) == 1;
    cfg->operator_sha256[i] = (uint8_t)byte;
  }
  if (!ok) {
    snprintf(err, errsize, "KPI_OPERATOR_TOKEN_SHA256: expected 64 hex digits (SHA-256 of the "
                           "operator token)");
    return -1;
  }
  cfg->operator_set = true;
  return 0;
}

int ev_config_load(ev_config *cfg, char *err, size_t errsize) {
  memset(cfg, 0, sizeof(*cfg));
  err[0] = '\0';
  if (kpi_env_path("KPI_CATALOG", "config/catalog.json", cfg->catalog_path,
                   sizeof(cfg->catalog_path), err, errsize))
    return -1;
  snprintf(cfg->group, sizeof(cfg->group), "%s", kpi_env_str("KPI_EVALUATOR_GROUP", "evaluator"));
  if (kpi_topics_from_env(cfg->topics, err, errsize)) return -1;
  if (load_numbers(cfg, err, errsize) || load_operator(cfg, err, errsize)) return -1;
  const char *date = kpi_env_str("KPI_EVAL_DATE", NULL);
  if (date) {
    kpi_day day;
    if (strlen(date) != 10 || kpi_time_parse(date, NULL, &day) != 0) {
      snprintf(err, errsize, "KPI_EVAL_DATE: expected YYYY-MM-DD, got \"%s\"", date);
      return -1;
    }
    cfg->fixed_date = true;
    cfg->eval_date = day;
  }
  if (kpi_env_listen("KPI_EVALUATOR_LISTEN", "127.0.0.1:8081", cfg->listen_host,
                     sizeof(cfg->listen_host), &cfg->listen_port, err, errsize))
    return -1;
  kpi_http_config_defaults(&cfg->http);
  cfg->http.max_body_bytes = KPI_HTTP_SMALL_BODY; /* GET only */
  if (kpi_http_config_from_env(&cfg->http) != 0) return -1; /* logged there */
  return 0;
}

kpi_day ev_config_today(const ev_config *cfg) {
  return cfg->fixed_date ? cfg->eval_date : kpi_day_of_ms(kpi_time_now_ms());
}
