/* services/notifier/main.c: kpi-notifier: alerts from Kafka become mails to the measure's owners.
 * Only the process's start and end live here; everything else is the kpi_notifier library. */
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kpi_log.h"
#include "notifier.h"

int main(void) {
  kpi_log_init("notifier");
  signal(SIGPIPE, SIG_IGN);
  /* Backoff jitter (nf_backoff_ms) differs between replicas and restarts. */
  srandom((unsigned)time(NULL) ^ (unsigned)getpid());
  notifier *nf = calloc(1, sizeof(*nf));
  if (!nf) return KPI_EXIT_START;
  nf->loop = uv_default_loop();
  int rc = nf_service_start(nf);
  if (rc == 0) {
    uv_run(nf->loop, UV_RUN_DEFAULT);
    rc = nf->shutdown.exit_code;
  }
  nf_service_free(nf);
  return rc;
}
