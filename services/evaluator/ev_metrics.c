/* ev_metrics.c: the evaluator's metric registry (served at /metrics by ev_api.c). */
#include "evaluator.h"

int ev_metrics_init(ev_metrics *em) {
  static const double commit_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,   0.25,   0.5,   1,    2.5,   5};
  kpi_metrics *m = kpi_metrics_new();
  if (!m) return -1;
  em->reg = m;
  em->records = kpi_metrics_counter(m, "kpi_evaluator_records_total", NULL,
                                      "Records consumed from the measurements topic.");
  em->rows = kpi_metrics_counter(m, "kpi_evaluator_measurements_total", NULL,
                                   "Decoded measurements written (duplicates included).");
  em->batches = kpi_metrics_counter(m, "kpi_evaluator_batches_total", NULL,
                                      "Batch transactions committed.");
  em->sweeps = kpi_metrics_counter(m, "kpi_evaluator_sweeps_total", NULL,
                                     "Sweep transactions committed.");
  em->txn_fail = kpi_metrics_counter(m, "kpi_evaluator_transaction_retries_total", NULL,
                                       "Transactions that failed and were retried.");
  em->commit = kpi_metrics_histogram(m, "kpi_evaluator_transaction_seconds", NULL,
                                       "Time from BEGIN to COMMIT of a transaction.",
                                       commit_bounds,
                                       sizeof(commit_bounds) / sizeof(commit_bounds[0]));
  em->dlq = kpi_metrics_counter(m, "kpi_evaluator_dlq_total", NULL,
                                  "Records sent to the dead-letter topic.");
  em->alerts = kpi_metrics_counter(m, "kpi_evaluator_alerts_published_total", NULL,
                                     "Outbox alerts acknowledged by the broker.");
  em->outbox = kpi_metrics_gauge(m, "kpi_evaluator_outbox_inflight", NULL,
                                   "Outbox alerts produced and awaiting their delivery report.");
  em->lag = kpi_metrics_gauge(m, "kpi_evaluator_consumer_lag", NULL,
                                "Records in the assigned partitions not yet consumed.");
  em->assign = kpi_metrics_counter(m, "kpi_evaluator_assignments_total", NULL,
                                     "Partition assignments applied at PostgreSQL offsets.");
  em->api_rejected = kpi_metrics_counter(
      m, "kpi_evaluator_api_rejected_total", NULL,
      "Read API requests answered 503 because KPI_EVALUATOR_API_MAX_PENDING were pending.");
  em->purged = kpi_metrics_counter(m, "kpi_evaluator_outbox_purged_total", NULL,
                                     "Sent outbox rows deleted after the retention period.");
  em->catalog_refused = kpi_metrics_counter(
      m, "kpi_evaluator_catalog_refused_total", NULL,
      "Catalog reloads refused because the file changed without a higher version.");
  em->fetch_kicks = kpi_metrics_counter(
      m, "kpi_evaluator_fetch_wakeups_total", NULL,
      "Times the consumer drained a full prefetch queue and woke librdkafka's fetcher.");
  em->copy_batches = kpi_metrics_counter(
      m, "kpi_evaluator_copy_batches_total", NULL,
      "Batch measurements written by COPY (KPI_EVALUATOR_COPY).");
  em->copy_fallbacks = kpi_metrics_counter(
      m, "kpi_evaluator_copy_fallbacks_total", NULL,
      "COPY attempts rolled back for the INSERT statement (a stored event_id, a pending "
      "retraction, or any error).");
  return 0;
}

void ev_metrics_free(ev_metrics *em) {
  kpi_metrics_free(em->reg);
  em->reg = NULL;
}
