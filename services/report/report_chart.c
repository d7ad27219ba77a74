/* report_chart.c: the SVG chart of one measure (see report_chart.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report_chart.h"
#include "report_format.h"
#include "report_tmpl.h"

#define PAD_LEFT 64.0
#define PAD_RIGHT 24.0
#define PAD_TOP 28.0
#define PAD_BOTTOM 44.0

void report_chart_map_init(report_chart_map *m, kpi_day x0, kpi_day x1, double y0, double y1,
                           double width, double height) {
  if (x1 <= x0) x1 = x0 + 1;
  if (!(y1 > y0)) y1 = y0 + 1;
  m->x0 = x0;
  m->x1 = x1;
  m->y0 = y0;
  m->y1 = y1;
  m->width = width;
  m->height = height;
  m->left = PAD_LEFT;
  m->right = width - PAD_RIGHT;
  m->top = PAD_TOP;
  m->bottom = height - PAD_BOTTOM;
}

double report_chart_x(const report_chart_map *m, kpi_day d) {
  return m->left + (m->right - m->left) * (double)(d - m->x0) / (double)(m->x1 - m->x0);
}

double report_chart_y(const report_chart_map *m, double v) {
  return m->bottom - (m->bottom - m->top) * (v - m->y0) / (m->y1 - m->y0);
}

double report_chart_nice(double v) {
  if (!(v > 0) || !isfinite(v)) return 1;
  double p = pow(10, floor(log10(v)));
  static const double steps[] = {1, 2, 2.5, 5, 10};
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
    if (steps[i] * p >= v * (1 - 1e-12)) return steps[i] * p;
  return 10 * p;
}

static void text(kpi_buf *o, const char *cls, double x, double y, const char *anchor,
                 const char *s) {
  kpi_buf_addf(o, "<text class=\"%s\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">", cls, x, y,
               anchor);
  report_escape(o, s, strlen(s));
  kpi_buf_adds(o, "</text>");
}

/* The data domain of the chart before report_chart_map_init widens an empty one: whole fiscal
 * years on the x axis (the plan thinks in them), nice bounds on the value axis. */
typedef struct {
  kpi_day x0, x1;
  double lo, hi;
} chart_domain;

static chart_domain chart_domain_of(const report_chart_spec *s) {
  kpi_day x0 = s->start < s->due ? s->start : s->due, x1 = s->due;
  double lo = 0, hi = fmax(s->target, s->start_value);
  if (s->start_value < lo) lo = s->start_value;
  if (s->target < lo) lo = s->target;
  for (size_t i = 0; i < s->n_points; i++) {
    const report_point *p = &s->points[i];
    if (p->day < x0) x0 = p->day;
    if (p->day > x1) x1 = p->day;
    if (p->value > hi) hi = p->value;
    if (p->value < lo) lo = p->value;
  }
  if (s->as_of > x1) x1 = s->as_of;
  chart_domain d = {.x0 = kpi_fy_first_day(kpi_fy_of_day(x0)),
                    .x1 = kpi_fy_last_day(kpi_fy_of_day(x1)) + 1,
                    .hi = report_chart_nice(hi * 1.05),
                    .lo = lo};
  if (lo < 0) d.lo = -report_chart_nice(-lo * 1.05);
  return d;
}

/* Grid: five value steps, one band per fiscal year. */
static void chart_grid(kpi_buf *o, const report_chart_map *m, const chart_domain *d,
                       const report_chart_spec *s) {
  kpi_buf_adds(o, "<g class=\"grid\">");
  char lab[256], num[48];
  for (int i = 0; i <= 4; i++) {
    double v = d->lo + (d->hi - d->lo) * i / 4;
    double y = report_chart_y(m, v);
    kpi_buf_addf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", m->left, y,
                 m->right, y);
    report_num(v, num, sizeof(num));
    text(o, "tick", m->left - 6, y + 4, "end", num);
  }
  for (int fy = kpi_fy_of_day(d->x0); kpi_fy_first_day(fy) < d->x1; fy++) {
    double xa = report_chart_x(m, kpi_fy_first_day(fy));
    double xb = report_chart_x(m, kpi_fy_last_day(fy) + 1);
    kpi_buf_addf(o, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", xa, m->top, xa,
                 m->bottom);
    if (s->era_labels_en) snprintf(lab, sizeof(lab), "FY%d", fy);
    else report_era_short(fy, lab, sizeof(lab));
    text(o, "tick", (xa + xb) / 2, m->bottom + 16, "middle", lab);
  }
  kpi_buf_adds(o, "</g>");
}

/* Target, due date, as-of date and the expected pace: the straight line from the start to
 * the target at the due date. */
static void chart_marks(kpi_buf *o, const report_chart_map *m, const chart_domain *d,
                        const report_chart_spec *s) {
  char lab[256], num[48];
  double yt = report_chart_y(m, s->target), xd = report_chart_x(m, s->due);
  kpi_buf_addf(o, "<line class=\"target\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
               m->left, yt, m->right, yt);
  report_num(s->target, num, sizeof(num));
  snprintf(lab, sizeof(lab), "%s %s%s", s->l_target, num, s->unit);
  text(o, "label target", m->left + 4, yt - 5, "start", lab);
  kpi_buf_addf(o, "<line class=\"due\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", xd,
               m->top, xd, m->bottom);
  char day[16];
  kpi_day_format(s->due, day, sizeof(day));
  snprintf(lab, sizeof(lab), "%s %s", s->l_due, day);
  text(o, "label due", xd - 4, m->top - 8, "end", lab);
  if (s->as_of >= d->x0 && s->as_of <= d->x1) {
    double xa = report_chart_x(m, s->as_of);
    kpi_buf_addf(o, "<line class=\"asof\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
                 xa, m->top, xa, m->bottom);
  }

  /* Expected pace: the straight line from the start to the target at the due date. */
  kpi_buf_addf(o, "<line class=\"pace\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
               report_chart_x(m, s->start), report_chart_y(m, s->start_value), xd, yt);
}

/* The series: a line through the readings and a labelled dot for each. */
static void chart_series(kpi_buf *o, const report_chart_map *m, const report_chart_spec *s) {
  char day[16], num[48], lab[256];
  if (s->n_points > 1) {
    kpi_buf_adds(o, "<polyline class=\"series\" points=\"");
    for (size_t i = 0; i < s->n_points; i++)
      kpi_buf_addf(o, "%s%.1f,%.1f", i ? " " : "", report_chart_x(m, s->points[i].day),
                   report_chart_y(m, s->points[i].value));
    kpi_buf_adds(o, "\"/>");
  }
  for (size_t i = 0; i < s->n_points; i++) {
    kpi_day_format(s->points[i].day, day, sizeof(day));
    report_num(s->points[i].value, num, sizeof(num));
    kpi_buf_addf(o, "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\"><title>",
                 report_chart_x(m, s->points[i].day), report_chart_y(m, s->points[i].value));
    snprintf(lab, sizeof(lab), "%s %s: %s%s", s->l_actual, day, num, s->unit);
    report_escape(o, lab, strlen(lab));
    kpi_buf_adds(o, "</title></circle>");
  }
}

/* Legend in words, readable in black and white. */
static void chart_legend(kpi_buf *o, const report_chart_map *m, const report_chart_spec *s) {
  double ly = m->height - 8;
  kpi_buf_addf(o, "<g class=\"legend\"><line class=\"series\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\""
               " y2=\"%.1f\"/>", m->left, ly - 4, m->left + 24, ly - 4);
  text(o, "label", m->left + 30, ly, "start", s->l_actual);
  kpi_buf_addf(o, "<line class=\"pace\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
               m->left + 150, ly - 4, m->left + 174, ly - 4);
  text(o, "label", m->left + 180, ly, "start", s->l_pace);
  kpi_buf_addf(o, "<line class=\"asof\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>",
               m->left + 320, ly - 10, m->left + 320, ly + 2);
  text(o, "label", m->left + 328, ly, "start", s->l_as_of);
}

int report_chart_svg(const report_chart_spec *s, kpi_buf *o) {
  chart_domain d = chart_domain_of(s);
  report_chart_map m;
  report_chart_map_init(&m, d.x0, d.x1, d.lo, d.hi, 720, 320);

  kpi_buf_addf(o,
               "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\""
               " role=\"img\" aria-labelledby=\"chart-title chart-desc\">",
               m.width, m.height);
  kpi_buf_adds(o, "<title id=\"chart-title\">");
  report_escape(o, s->title, strlen(s->title));
  kpi_buf_adds(o, "</title><desc id=\"chart-desc\">");
  report_escape(o, s->desc, strlen(s->desc));
  kpi_buf_adds(o, "</desc>");

  chart_grid(o, &m, &d, s);
  chart_marks(o, &m, &d, s);
  chart_series(o, &m, s);
  chart_legend(o, &m, s);
  kpi_buf_adds(o, "</g></svg>");
  return o->oom ? -1 : 0;
}
