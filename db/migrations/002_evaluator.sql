-- 002_evaluator.sql: the evaluator's running totals and reminder counter.
-- measure_totals holds, per measure, calendar month (Japan dates; months never straddle a
-- fiscal year, which starts on 1 April) and ratio component, the count and sum of the distinct
-- measurements stored. The evaluator updates it in the same statement that inserts the
-- measurements, from the rows that were really inserted, so replays add nothing. Cumulative and
-- ratio aggregates then read one row per month instead of every measurement, and only the
-- evaluation date's own month is summed from `measurements` (to cut it at that date).
CREATE TABLE IF NOT EXISTS measure_totals (
    measure_id  text NOT NULL,
    month       date NOT NULL,              -- first day of the month of observed_day
    fiscal_year integer NOT NULL,           -- Japanese FY of that month
    component   text NOT NULL DEFAULT '',   -- 'numerator' | 'denominator' | '' (other kinds)
    events      bigint NOT NULL,
    total       double precision NOT NULL,
    PRIMARY KEY (measure_id, month, component)
);

-- Measurements stored before this migration (none in a fresh database).
INSERT INTO measure_totals (measure_id, month, fiscal_year, component, events, total)
SELECT measure_id, date_trunc('month', observed_day)::date, fiscal_year, coalesce(component, ''),
       count(*), sum(value)
  FROM measurements GROUP BY 1, 2, 3, 4
ON CONFLICT DO NOTHING;

-- Reminders sent in the current alert episode: part of the reminder's deterministic alert_id.
ALTER TABLE attainment ADD COLUMN IF NOT EXISTS reminders integer NOT NULL DEFAULT 0;
