/* kpi_metrics.c: the Prometheus registry behind /metrics; families keep registration order. */
#include "kpi_metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_buf.h"

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

struct kpi_metric {
  struct kpi_metric *next; /* next series of the same family */
  metric_kind kind;
  char *labels;  /* "" when unlabelled */
  double value;  /* counter, gauge; histogram sum */
  unsigned long long count; /* histogram observations */
  unsigned long long *buckets; /* histogram, per bucket (not cumulative), n_bounds + 1 */
  size_t n_bounds;
  const double *bounds; /* the family's copy */
};

typedef struct family {
  struct family *next;
  metric_kind kind;
  char *name;
  char *help;
  double *bounds;
  size_t n_bounds;
  kpi_metric *series_head, *series_tail;
} family;

struct kpi_metrics {
  family *head, *tail;
};

kpi_metrics *kpi_metrics_new(void) { return calloc(1, sizeof(kpi_metrics)); }

void kpi_metrics_free(kpi_metrics *m) {
  if (!m) return;
  family *f = m->head;
  while (f) {
    family *fn = f->next;
    kpi_metric *s = f->series_head;
    while (s) {
      kpi_metric *sn = s->next;
      free(s->labels);
      free(s->buckets);
      free(s);
      s = sn;
    }
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
    f = fn;
  }
  free(m);
}

static int valid_name(const char *name) {
  if (!name || !*name) return 0;
  for (const char *p = name; *p; p++) {
    int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
    int digit = *p >= '0' && *p <= '9';
    if (!alpha && !(digit && p != name)) return 0;
  }
  return 1;
}

static family *family_get(kpi_metrics *m, const char *name, const char *help, metric_kind kind,
                          const double *bounds, size_t n_bounds) {
  for (family *f = m->head; f; f = f->next) {
    if (strcmp(f->name, name) != 0) continue;
    if (f->kind != kind) return NULL;
    /* A histogram without bounds has NULL arrays, and memcmp(NULL, NULL, 0) is undefined. */
    if (kind == KIND_HISTOGRAM &&
        (f->n_bounds != n_bounds ||
         (n_bounds > 0 && memcmp(f->bounds, bounds, n_bounds * sizeof(double)) != 0)))
      return NULL;
    if (!f->help && help) f->help = strdup(help); /* best effort: HELP is optional */
    return f;
  }
  family *f = calloc(1, sizeof(*f));
  if (!f) return NULL;
  f->kind = kind;
  f->name = strdup(name);
  f->help = help ? strdup(help) : NULL;
  if (kind == KIND_HISTOGRAM && n_bounds > 0) {
    f->bounds = malloc(n_bounds * sizeof(double));
    if (f->bounds) memcpy(f->bounds, bounds, n_bounds * sizeof(double));
  }
  f->n_bounds = n_bounds;
  if (!f->name || (help && !f->help) || (n_bounds > 0 && kind == KIND_HISTOGRAM && !f->bounds)) {
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
    return NULL;
  }
  if (m->tail) m->tail->next = f; else m->head = f;
  m->tail = f;
  return f;
}

static kpi_metric *series_get(kpi_metrics *m, const char *name, const char *labels,
                              const char *help, metric_kind kind, const double *bounds,
                              size_t n_bounds) {
  if (!m || !valid_name(name)) return NULL;
  if (kind == KIND_HISTOGRAM) {
    for (size_t i = 0; i < n_bounds; i++)
      if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) return NULL;
  }
  family *f = family_get(m, name, help, kind, bounds, n_bounds);
  if (!f) return NULL;
  if (!labels) labels = "";
  for (kpi_metric *s = f->series_head; s; s = s->next)
    if (strcmp(s->labels, labels) == 0) return s;
  kpi_metric *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  s->kind = kind;
  s->labels = strdup(labels);
  if (kind == KIND_HISTOGRAM) {
    s->buckets = calloc(n_bounds + 1, sizeof(*s->buckets));
    s->n_bounds = n_bounds;
    s->bounds = f->bounds;
  }
  if (!s->labels || (kind == KIND_HISTOGRAM && !s->buckets)) {
    free(s->labels);
    free(s->buckets);
    free(s);
    return NULL;
  }
  if (f->series_tail) f->series_tail->next = s; else f->series_head = s;
  f->series_tail = s;
  return s;
}

kpi_metric *kpi_metrics_counter(kpi_metrics *m, const char *name, const char *labels,
                                const char *help) {
  return series_get(m, name, labels, help, KIND_COUNTER, NULL, 0);
}

kpi_metric *kpi_metrics_gauge(kpi_metrics *m, const char *name, const char *labels,
                              const char *help) {
  return series_get(m, name, labels, help, KIND_GAUGE, NULL, 0);
}

kpi_metric *kpi_metrics_histogram(kpi_metrics *m, const char *name, const char *labels,
                                  const char *help, const double *bounds, size_t n_bounds) {
  if (n_bounds > 0 && !bounds) return NULL;
  return series_get(m, name, labels, help, KIND_HISTOGRAM, bounds, n_bounds);
}

void kpi_metrics_inc(kpi_metric *s) { kpi_metrics_add(s, 1.0); }

void kpi_metrics_add(kpi_metric *s, double v) {
  if (!s || s->kind == KIND_HISTOGRAM) return;
  if (s->kind == KIND_COUNTER && !(v >= 0)) return;
  s->value += v;
}

void kpi_metrics_set(kpi_metric *s, double v) {
  if (!s || s->kind == KIND_HISTOGRAM) return;
  s->value = v;
}

void kpi_metrics_observe(kpi_metric *s, double v) {
  if (!s || s->kind != KIND_HISTOGRAM || isnan(v)) return;
  /* Linear scan: bucket lists are short (about a dozen) and this beats a binary search
   * on branch prediction for the common small values. */
  size_t i = 0;
  while (i < s->n_bounds && v > s->bounds[i]) i++;
  s->buckets[i]++;
  s->count++;
  s->value += v;
}

double kpi_metrics_value(const kpi_metric *s) {
  if (!s) return 0;
  return s->kind == KIND_HISTOGRAM ? (double)s->count : s->value;
}

/* ---- rendering ---- */

/* Shortest text that reads back as the same double, so 0.1 renders as "0.1" and integral
 * values carry no exponent or fraction up to 1e15; Prometheus spells the specials +Inf,
 * -Inf and NaN. */
static void fmt_double(char out[32], double v) {
  if (isnan(v)) {
    strcpy(out, "NaN");
    return;
  }
  if (isinf(v)) {
    strcpy(out, v > 0 ? "+Inf" : "-Inf");
    return;
  }
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(out, 32, "%.*g", prec, v);
    if (strtod(out, NULL) == v) return;
  }
}

static void sb_help(kpi_buf *sb, const char *help) {
  /* The text format escapes only backslash and newline in HELP. */
  for (const char *p = help; *p; p++) {
    if (*p == '\\') kpi_buf_add(sb, "\\\\", 2);
    else if (*p == '\n') kpi_buf_add(sb, "\\n", 2);
    else kpi_buf_add(sb, p, 1);
  }
}

static void sb_sample(kpi_buf *sb, const char *name, const char *suffix, const char *labels,
                      const char *le, const char *value) {
  kpi_buf_adds(sb, name);
  kpi_buf_adds(sb, suffix);
  if (*labels || le) {
    kpi_buf_add(sb, "{", 1);
    kpi_buf_adds(sb, labels);
    if (le) {
      if (*labels) kpi_buf_add(sb, ",", 1);
      kpi_buf_adds(sb, "le=\"");
      kpi_buf_adds(sb, le);
      kpi_buf_add(sb, "\"", 1);
    }
    kpi_buf_add(sb, "}", 1);
  }
  kpi_buf_add(sb, " ", 1);
  kpi_buf_adds(sb, value);
  kpi_buf_add(sb, "\n", 1);
}

int kpi_metrics_render(const kpi_metrics *m, char **out, size_t *out_len) {
  static const char *const type_names[] = {"counter", "gauge", "histogram"};
  kpi_buf sb = KPI_BUF_INIT;
  kpi_buf_reserve(&sb, 1023); /* a small registry renders without regrowing */
  char num[32];
  for (const family *f = m ? m->head : NULL; f; f = f->next) {
    if (f->help) {
      kpi_buf_adds(&sb, "# HELP ");
      kpi_buf_adds(&sb, f->name);
      kpi_buf_add(&sb, " ", 1);
      sb_help(&sb, f->help);
      kpi_buf_add(&sb, "\n", 1);
    }
    kpi_buf_adds(&sb, "# TYPE ");
    kpi_buf_adds(&sb, f->name);
    kpi_buf_add(&sb, " ", 1);
    kpi_buf_adds(&sb, type_names[f->kind]);
    kpi_buf_add(&sb, "\n", 1);
    for (const kpi_metric *s = f->series_head; s; s = s->next) {
      if (s->kind != KIND_HISTOGRAM) {
        fmt_double(num, s->value);
        sb_sample(&sb, f->name, "", s->labels, NULL, num);
        continue;
      }
      unsigned long long cum = 0;
      char le[32];
      for (size_t i = 0; i <= s->n_bounds; i++) {
        cum += s->buckets[i];
        if (i < s->n_bounds) fmt_double(le, s->bounds[i]);
        else strcpy(le, "+Inf");
        snprintf(num, sizeof num, "%llu", cum);
        sb_sample(&sb, f->name, "_bucket", s->labels, le, num);
      }
      fmt_double(num, s->value);
      sb_sample(&sb, f->name, "_sum", s->labels, NULL, num);
      snprintf(num, sizeof num, "%llu", s->count);
      sb_sample(&sb, f->name, "_count", s->labels, NULL, num);
    }
  }
  /* An empty registry still renders "" rather than NULL. */
  *out = kpi_buf_detach(&sb, out_len);
  if (!*out) {
    if (out_len) *out_len = 0;
    return -1;
  }
  return 0;
}
