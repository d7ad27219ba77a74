/* main.c: kpi-evaluator's entry point: configuration, then the service (ev_service.c) on one
 * libuv loop until it has drained. See docs/evaluator.md for the variables and the
 * guarantees. */
#include <signal.h>

#include "evaluator.h"
#include "kpi_log.h"

int main(void) {
  kpi_log_init("evaluator");
  signal(SIGPIPE, SIG_IGN);
  static ev_config cfg;
  char err[512];
  if (ev_config_load(&cfg, err, sizeof(err)) != 0) {
    if (err[0]) kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return KPI_EXIT_CONFIG;
  }
  static evaluator evs; /* one per process; reached from callbacks through handle data */
  uv_loop_t loop;
  uv_loop_init(&loop);
  int rc = ev_service_start(&evs, &loop, &cfg);
  if (rc != 0) return rc; /* logged */
  uv_run(&loop, UV_RUN_DEFAULT);
  ev_service_free(&evs);
  rc = uv_loop_close(&loop);
  if (rc) kpi_log(KPI_LOG_WARN, "loop_not_empty", "%s", uv_strerror(rc));
  return evs.life.shutdown.exit_code;
}
