-- 002_evaluator.sql: the evaluator's running totals and reminder counter.
-- measure_totals holds, per measure, fiscal year and ratio component, the count and sum of the
-- distinct measurements stored. The evaluator updates it in the same statement that inserts
-- the measurements (only rows that were really inserted, so replays add nothing), which keeps
-- cumulative and ratio aggregates O(fiscal years) instead of a scan of every measurement on
-- each batch.
CREATE TABLE IF NOT EXISTS measure_totals (
    measure_id  text NOT NULL,
    fiscal_year integer NOT NULL,
    component   text NOT NULL DEFAULT '',   -- 'numerator' | 'denominator' | '' (other kinds)
    events      bigint NOT NULL,
    total       double precision NOT NULL,
    PRIMARY KEY (measure_id, fiscal_year, component)
);

-- Measurements stored before this migration (none in a fresh database).
INSERT INTO measure_totals (measure_id, fiscal_year, component, events, total)
SELECT measure_id, fiscal_year, coalesce(component, ''), count(*), sum(value)
  FROM measurements GROUP BY 1, 2, 3
ON CONFLICT DO NOTHING;

-- Reminders sent in the current alert episode: part of the reminder's deterministic alert_id.
ALTER TABLE attainment ADD COLUMN IF NOT EXISTS reminders integer NOT NULL DEFAULT 0;
