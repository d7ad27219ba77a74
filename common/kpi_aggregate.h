/* kpi_aggregate.h: the one aggregate query of a measure's readings at a date, shared by the
 * evaluator (its current date) and the report (any past date), and its row reader. */
#ifndef KPI_AGGREGATE_H
#define KPI_AGGREGATE_H

#include <libpq-fe.h>
#include "kpi_attainment.h"

/* The aggregates (kpi_aggregate) of the measures $1 with their cumulative windows $2..$3 (FYs,
 * NULL when not cumulative) and ratio flags $7, from the readings observed before the instant
 * $5 (00:00 JST of the day after the date D asked for, $9). Whole months before D's month are
 * read from the evaluator's monthly `measure_totals` (month < $8, the first day of D's month).
 * D's own month comes from `measure_totals` too when it is exact at D: no row of that month
 * has a `last_day` (the latest observation day it ever counted, migration 009) after D, i.e.
 * the evaluator's current date, or a past date after the month's last reading. Otherwise
 * (a date inside a month with readings after it: a report's `as_of`, KPI_EVAL_DATE in the
 * past) D's month is summed from `measurements` (observed_at >= $6, 00:00 JST of its first
 * day), counted in D's FY $4 (a month never straddles two FYs: they start on 1 April).
 * Retracted readings (`retracted_at` set, docs/corrections.md) count nowhere: not in
 * "latest", not in D's month; the evaluator takes them out of `measure_totals` when it marks
 * them.
 *
 * "Latest" is read in two ways of which the first answering wins (LIMIT 1 over UNION ALL; the
 * second runs only when the first finds nothing): the readings at the measure's latest
 * observed_at of all (an index descent, max() without a filter), when one of them stands; else
 * the latest reading that stands. Both give the same row; the first spares the planner its
 * guess for `retracted_at IS NULL` on a table never analyzed (a backlog drained into a fresh
 * database), with which it sorted every reading of the measure at every batch.
 *
 * Columns: id, latest (the latest reading's value; ties on observed_at go to the later
 * received, then the larger event_id), latest_day (its Japan date, days since 1970-01-01),
 * latest_at, window_sum (NULL: nothing in the window), num and den (the latest FY whose
 * denominator sum is > 0; NULL: none). One row per measure, in no particular order.
 *
 * A macro, so callers wrap it in their own statement at compile time:
 *   "SELECT g.*, ... FROM (" KPI_AGGREGATE_SQL ") g LEFT JOIN ... ON ... = g.id"
 * kpi_aggregate_bounds gives $4, $5, $6, $8 and $9 for a date. */
#define KPI_AGGREGATE_SQL                                                                     \
  "SELECT m.id, lr.value AS latest, (lr.observed_day - DATE '1970-01-01') AS latest_day,"    \
  " lr.observed_at AS latest_at, cw.total AS window_sum, rt.num, rt.den"                     \
  " FROM unnest($1::text[], $2::int[], $3::int[], $7::bool[]) AS m(id, wfrom, wto, is_ratio)" \
  " CROSS JOIN LATERAL (SELECT NOT EXISTS (SELECT 1 FROM measure_totals t"                   \
  "   WHERE t.measure_id = m.id AND t.month = $8::date AND t.last_day > $9::date) AS exact) cm" \
  " LEFT JOIN LATERAL ((SELECT x.value, x.observed_day, x.observed_at FROM measurements x"   \
  "   WHERE x.measure_id = m.id AND x.retracted_at IS NULL AND x.observed_at ="              \
  "     (SELECT max(y.observed_at) FROM measurements y WHERE y.measure_id = m.id"            \
  "       AND y.observed_at < $5::timestamptz)"                                              \
  "   ORDER BY x.received_at DESC, x.event_id DESC LIMIT 1)"                                 \
  "   UNION ALL"                                                                             \
  "  (SELECT x.value, x.observed_day, x.observed_at FROM measurements x"                     \
  "   WHERE x.measure_id = m.id AND x.observed_at < $5::timestamptz"                         \
  "     AND x.retracted_at IS NULL"                                                          \
  "   ORDER BY x.observed_at DESC, x.received_at DESC, x.event_id DESC LIMIT 1) LIMIT 1) lr" \
  "   ON true"                                                                               \
  " LEFT JOIN LATERAL (SELECT sum(s.v) AS total FROM ("                                      \
  "   SELECT t.total AS v FROM measure_totals t WHERE m.wfrom IS NOT NULL"                   \
  "     AND t.measure_id = m.id AND t.month <= $8::date"                                     \
  "     AND (t.month < $8::date OR cm.exact)"                                                \
  "     AND t.fiscal_year BETWEEN m.wfrom AND m.wto"                                         \
  "   UNION ALL"                                                                             \
  "   SELECT x.value FROM measurements x WHERE m.wfrom IS NOT NULL AND NOT cm.exact"         \
  "     AND $4::int BETWEEN m.wfrom AND m.wto AND x.measure_id = m.id"                       \
  "     AND x.observed_at >= $6::timestamptz AND x.observed_at < $5::timestamptz"            \
  "     AND x.retracted_at IS NULL) s) cw"                                                   \
  "   ON true"                                                                               \
  " LEFT JOIN LATERAL (SELECT s.fy, sum(s.num) AS num, sum(s.den) AS den FROM ("             \
  "   SELECT t.fiscal_year AS fy,"                                                           \
  "     CASE WHEN t.component = 'numerator' THEN t.total ELSE 0 END AS num,"                 \
  "     CASE WHEN t.component = 'denominator' THEN t.total ELSE 0 END AS den"                \
  "   FROM measure_totals t WHERE m.is_ratio AND t.measure_id = m.id"                        \
  "     AND t.month <= $8::date AND (t.month < $8::date OR cm.exact)"                        \
  "     AND t.component <> ''"                                                               \
  "   UNION ALL"                                                                             \
  "   SELECT $4::int, CASE WHEN x.component = 'numerator' THEN x.value ELSE 0 END,"          \
  "     CASE WHEN x.component = 'denominator' THEN x.value ELSE 0 END"                       \
  "   FROM measurements x WHERE m.is_ratio AND NOT cm.exact AND x.measure_id = m.id"         \
  "     AND x.component IS NOT NULL AND x.observed_at >= $6::timestamptz"                    \
  "     AND x.observed_at < $5::timestamptz AND x.retracted_at IS NULL) s"                   \
  "   GROUP BY s.fy HAVING sum(s.den) > 0 ORDER BY s.fy DESC LIMIT 1) rt ON true"

/* The date-dependent parameters of KPI_AGGREGATE_SQL for the Japan date AS_OF. */
typedef struct {
  char fiscal_year[16];    /* $4 */
  char end_at[40];         /* $5: 00:00 JST of the next day, as UTC text */
  char month_start_at[40]; /* $6: 00:00 JST of the first day of the month */
  char month_start[16];    /* $8: that day, YYYY-MM-DD */
  char day[16];            /* $9: AS_OF itself, YYYY-MM-DD */
} kpi_aggregate_bounds;

void kpi_aggregate_bounds_of(kpi_day as_of, kpi_aggregate_bounds *out);

/* KPI_AGGREGATE_SQL's columns in a result (-1: absent), looked up once per result. */
typedef struct {
  int latest, latest_day, window_sum, num, den;
} kpi_aggregate_cols;

kpi_aggregate_cols kpi_aggregate_cols_find(const PGresult *res);

/* Reads row R into *OUT (every field set; absent values leave their has_* false). */
void kpi_aggregate_read(const PGresult *res, int r, const kpi_aggregate_cols *c,
                        kpi_aggregate *out);

#endif
