-- 007_corrections.sql: retractions, corrections, acknowledgements and the cause of each
-- history row (docs/corrections.md). Nothing is deleted from the city's record: a retracted
-- measurement stays, marked; the evaluator may set the marks and nothing else on it.

ALTER TABLE measurements
    ADD COLUMN IF NOT EXISTS retracted_at      timestamptz, -- received_at of the retraction
    ADD COLUMN IF NOT EXISTS retracted_by      text,        -- department that retracted
    ADD COLUMN IF NOT EXISTS retraction_reason text,
    ADD COLUMN IF NOT EXISTS retraction_id     uuid,        -- retractions.event_id
    ADD COLUMN IF NOT EXISTS corrects          uuid;        -- a correction: the event it replaced

-- One row per retraction (kpi.retraction/1, or the retraction half of a correction, whose
-- event_id is kpi_retraction_id of the corrected event). `pending`: its measurement has not
-- arrived yet; `applied`: the measurement is marked; `refused`: it named a measurement of
-- another measure or department (refusal says which), nothing was changed.
CREATE TABLE IF NOT EXISTS retractions (
    event_id        uuid PRIMARY KEY,
    retracts        uuid NOT NULL,
    measure_id      text NOT NULL,
    department      text NOT NULL,
    reason          text NOT NULL,
    received_at     timestamptz NOT NULL,
    state           text NOT NULL CHECK (state IN ('pending', 'applied', 'refused')),
    refusal         text,
    applied_at      timestamptz,
    correction      uuid,                   -- the correcting measurement, when part of one
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS retractions_retracts ON retractions (retracts);
CREATE INDEX IF NOT EXISTS retractions_measure ON retractions (measure_id, received_at);

-- The owners' acknowledgements (kpi.acknowledgement/1). status/stale: the measure's state
-- when the evaluator stored it — reminders stay quiet while the measure is still in this
-- state and the evaluation date is on or before `until` (docs/corrections.md).
CREATE TABLE IF NOT EXISTS acknowledgements (
    event_id        uuid PRIMARY KEY,
    measure_id      text NOT NULL,
    department      text NOT NULL,
    note            text NOT NULL,
    until           date NOT NULL,
    received_at     timestamptz NOT NULL,
    status          text,
    stale           boolean NOT NULL DEFAULT false,
    kafka_partition integer,
    kafka_offset    bigint,
    stored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS acknowledgements_measure ON acknowledgements (measure_id, received_at);

-- What made each history row: 'measurement', 'retraction', 'sweep', 'catalog_reload'
-- (NULL for rows written before this migration).
ALTER TABLE attainment_history ADD COLUMN IF NOT EXISTS cause text;

GRANT SELECT, INSERT, UPDATE ON retractions TO kpi_evaluator;
GRANT SELECT, INSERT ON acknowledgements TO kpi_evaluator;
GRANT UPDATE (retracted_at, retracted_by, retraction_reason, retraction_id) ON measurements
  TO kpi_evaluator;
-- The evaluator's audit read API (GET /v1/measures/{id}/notifications) reads the mail queue.
GRANT SELECT ON notifications TO kpi_evaluator;
GRANT SELECT ON retractions, acknowledgements TO kpi_reader;
