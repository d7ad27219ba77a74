-- 009_totals_last_day.sql: per monthly totals row, the latest observation day ever counted in
-- it, so that the aggregate (common/kpi_aggregate.h, docs/evaluator.md "Aggregates") takes the
-- evaluation date's own month from measure_totals too when nothing in that row was observed
-- after the date, instead of summing every reading of the month from `measurements` at every
-- batch. The evaluator only ever raises it (GREATEST); a retraction leaves it as it is, so it
-- stays an upper bound of the days of the readings the row counts, which is all the aggregate
-- needs. 'infinity' means "not known": a row written without it (by an evaluator older than
-- this migration) is never taken for an exact month, its readings are summed as before.
ALTER TABLE measure_totals ADD COLUMN IF NOT EXISTS last_day date NOT NULL DEFAULT 'infinity';

-- Rows written before this migration: the latest day among the month's stored readings of that
-- component, retracted ones included (they were counted once; an upper bound is enough).
UPDATE measure_totals t SET last_day = s.last_day
  FROM (SELECT measure_id, date_trunc('month', observed_day)::date AS month,
               coalesce(component, '') AS component, max(observed_day) AS last_day
          FROM measurements GROUP BY 1, 2, 3) s
 WHERE t.measure_id = s.measure_id AND t.month = s.month AND t.component = s.component;
