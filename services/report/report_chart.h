/* report_chart.h: a measure's readings against its expected pace, as inline SVG made on the
 * server (no script, colours from the one stylesheet, every mark also labelled in text). */
#ifndef REPORT_CHART_H
#define REPORT_CHART_H

#include <stdbool.h>
#include <stddef.h>

#include "kpi_buf.h"
#include "kpi_time.h"

typedef struct {
  kpi_day day;
  double value;
} report_point;

/* The one mapping from data (days, values) to SVG user units: the plot area spans
 * [left, right] × [top, bottom] of a WIDTH × HEIGHT viewBox; X0..X1 and Y0..Y1 are the data
 * domain (Y0 at the bottom). Every mark of the chart goes through report_chart_x /
 * report_chart_y. */
typedef struct {
  kpi_day x0, x1;
  double y0, y1;
  double width, height;
  double left, right, top, bottom;
} report_chart_map;

/* Sets the domain, widened so that it is never empty (x1 > x0, y1 > y0), and the plot area
 * inside a WIDTH × HEIGHT viewBox with room for the axis labels. */
void report_chart_map_init(report_chart_map *m, kpi_day x0, kpi_day x1, double y0, double y1,
                           double width, double height);
double report_chart_x(const report_chart_map *m, kpi_day d);
double report_chart_y(const report_chart_map *m, double v);

/* A "nice" upper bound for an axis: the smallest of 1, 2, 2.5, 5 × 10^k that is >= V (> 0). */
double report_chart_nice(double v);

/* What to draw. Strings are plain text (escaped here); the chart's own markup is the only
 * thing the caller may insert raw. */
typedef struct {
  const char *title;       /* accessible name, e.g. the indicator */
  const char *desc;        /* one sentence saying what the chart shows */
  const report_point *points;  /* the series, by day */
  size_t n_points;
  kpi_day start;           /* the expected-pace line runs from (start, start_value) */
  double start_value;
  kpi_day due;             /* … to (due, target) */
  double target;
  kpi_day as_of;           /* a vertical mark for the evaluation date */
  const char *unit;        /* appended to value labels ("名", "%"), may be "" */
  const char *l_target;    /* "目標" */
  const char *l_due;       /* "期限" */
  const char *l_pace;      /* "期待ペース" */
  const char *l_actual;    /* "実績" */
  const char *l_as_of;     /* "基準日" */
  bool era_labels_en;      /* x labels "FY2024" instead of "R6" */
} report_chart_spec;

/* Appends <svg …>…</svg> to OUT. Returns 0, or -1 when OUT is out of memory. */
int report_chart_svg(const report_chart_spec *spec, kpi_buf *out);

#endif
