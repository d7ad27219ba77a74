/* ev_catalog.c: which catalog change the next alert about a measure states (docs/evaluator.md
 * "Catalog versions"). Pure: no I/O, unit-tested in tests/unit/test_evaluator_catalog.c. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "evaluator.h"

/* Figures compare as the stored float8 reads back: PostgreSQL prints the shortest text that
 * converts back exactly, so equal figures compare equal; the tolerance only absorbs a last-bit
 * difference of another client's formatting. */
static bool same_figure(double a, double b) {
  return fabs(a - b) <= 1e-12 * (fabs(a) + fabs(b) + 1);
}

static void add_change(kpi_catalog_change *c, const char *field, double from, double to) {
  if (same_figure(from, to) || c->n_changes >= KPI_CATALOG_CHANGES_MAX) return;
  kpi_catalog_field_change *fc = &c->changes[c->n_changes++];
  snprintf(fc->field, sizeof(fc->field), "%s", field);
  fc->from = from;
  fc->to = to;
}

int ev_catalog_note(const kpi_measure *m, int version, const ev_noted *noted, bool alerting,
                    kpi_catalog_change *out) {
  memset(out, 0, sizeof(*out));
  if (!noted->has_version || !noted->has_figures) return version;
  if (noted->version >= version) return noted->version > version ? noted->version : version;
  const ev_figures *f = &noted->figures;
  kpi_catalog_change c;
  memset(&c, 0, sizeof(c));
  /* The order the mail states them in: the goal first, then where it started. */
  add_change(&c, "target", f->target, m->target);
  add_change(&c, "target_fy", f->target_fy, m->target_fy);
  add_change(&c, "baseline", f->baseline, m->baseline);
  add_change(&c, "baseline_fy", f->baseline_fy, m->baseline_fy);
  if (c.n_changes == 0) return version;
  if (!alerting) return noted->version;
  c.present = true;
  c.version = version;
  c.previous_version = noted->version;
  *out = c;
  return version;
}
