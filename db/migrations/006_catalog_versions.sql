-- 006_catalog_versions.sql: catalog changes are part of the record (docs/evaluator.md "Catalog
-- versions", docs/database.md). The evaluator records every catalog it runs with, the figures
-- each measure was evaluated with under it, and which catalog each attainment was computed
-- with; a changed catalog must carry a higher version than every one recorded.

-- One row per catalog version run; sha256 of its canonical bytes (kpi_catalog.sha256). A
-- version is never recorded twice (a replica that finds its version recorded compares the
-- hash instead), and rows are never updated or deleted.
CREATE TABLE IF NOT EXISTS catalog_versions (
    version   integer PRIMARY KEY,
    sha256    text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    loaded_at timestamptz NOT NULL DEFAULT now()
);

-- The figures each measure had under each catalog version, written with catalog_versions in
-- the evaluator's recording transaction. The next alert about a measure compares them with the
-- figures the previous alert stated (attainment.noted_catalog_version).
CREATE TABLE IF NOT EXISTS measure_catalog (
    measure_id      text NOT NULL,
    catalog_version integer NOT NULL,
    baseline_fy     integer NOT NULL,
    baseline        double precision NOT NULL,
    target_fy       integer NOT NULL,
    target          double precision NOT NULL,
    PRIMARY KEY (measure_id, catalog_version)
);

-- The catalog version the current attainment and each history row were computed with (NULL:
-- before this migration), and the version whose figures the last alert about the measure
-- stated (or that had the same figures): a difference is announced by the next alert, once.
ALTER TABLE attainment ADD COLUMN IF NOT EXISTS catalog_version integer;
ALTER TABLE attainment ADD COLUMN IF NOT EXISTS noted_catalog_version integer;
ALTER TABLE attainment_history ADD COLUMN IF NOT EXISTS catalog_version integer;

-- The evaluator records (no UPDATE, no DELETE: this is the record); readers read.
GRANT SELECT, INSERT ON catalog_versions, measure_catalog TO kpi_evaluator;
GRANT SELECT ON catalog_versions, measure_catalog TO kpi_reader;
