/* kpi_metrics.h: a small Prometheus registry (counters, gauges, histograms) rendered as text 0.0.4. */
#ifndef KPI_METRICS_H
#define KPI_METRICS_H

#include <stddef.h>

/* The registry a service owns; single-threaded, used from the loop thread only. */
typedef struct kpi_metrics kpi_metrics;
/* One series: a counter or gauge value, or one labelled histogram. */
typedef struct kpi_metric kpi_metric;

/* Returns NULL only when out of memory. */
kpi_metrics *kpi_metrics_new(void);
/* Frees the registry and every series; series pointers become invalid. NULL is allowed. */
void kpi_metrics_free(kpi_metrics *m);

/* Register-or-find a series. NAME is the family name ([a-zA-Z_:][a-zA-Z0-9_:]*), LABELS the
 * preformatted label set without braces (`code="202",method="POST"`, values already
 * escaped) or NULL, HELP the family's help text (the first non-NULL one is kept).
 * Registering the same NAME and LABELS again returns the same series, so callers may look
 * series up lazily. Returns NULL on a bad name, on a family registered with another type
 * (or other buckets), or when out of memory; every update function accepts NULL and does
 * nothing, so a failed registration never crashes a service. */
kpi_metric *kpi_metrics_counter(kpi_metrics *m, const char *name, const char *labels,
                                const char *help);
kpi_metric *kpi_metrics_gauge(kpi_metrics *m, const char *name, const char *labels,
                              const char *help);
/* BOUNDS are the upper bounds of the buckets, strictly increasing, without +Inf (added on
 * render); they are copied. Every series of one family must use the same bounds. */
kpi_metric *kpi_metrics_histogram(kpi_metrics *m, const char *name, const char *labels,
                                  const char *help, const double *bounds, size_t n_bounds);

/* Counter or gauge += 1 / += v. A counter ignores negative v (counters never go down). */
void kpi_metrics_inc(kpi_metric *s);
void kpi_metrics_add(kpi_metric *s, double v);
/* Gauge = v; on a counter it mirrors a monotonic value kept elsewhere (the HTTP server's
 * plain counters, librdkafka statistics). */
void kpi_metrics_set(kpi_metric *s, double v);
/* Histogram: counts v in the first bucket whose bound is >= v, adds v to the sum. */
void kpi_metrics_observe(kpi_metric *s, double v);
/* Current value of a counter or gauge, the count of a histogram; 0 for NULL. */
double kpi_metrics_value(const kpi_metric *s);

/* Renders every family in registration order: `# HELP`, `# TYPE`, then its series in
 * registration order. *OUT is a NUL-terminated malloc'd string the caller frees; *OUT_LEN
 * (may be NULL) its length. Returns 0, or -1 when out of memory (*OUT is then NULL). */
int kpi_metrics_render(const kpi_metrics *m, char **out, size_t *out_len);

/* The Content-Type of the rendered text. */
#define KPI_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
