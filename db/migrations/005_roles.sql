-- 005_roles.sql: least-privilege group roles, one per service that touches the database
-- (docs/database.md). Migrations run as the schema's owner (kpi-admin migrate); each service
-- then logs in as a role that is a member of exactly one of these groups:
--   kpi_evaluator  its own tables: measurements, totals, attainment, history, offsets, outbox,
--                  and the catalog mirror in measures
--   kpi_notifier   the send queue (notifications) only
--   kpi_reader     read-only, for reports and people (never writes)
-- ingest has no database connection at all. Roles are cluster-wide objects: the first database
-- migrated creates them, later ones (and concurrent test databases) find them. Every later
-- migration that adds a table grants it here-style to the group that needs it.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['kpi_evaluator', 'kpi_notifier', 'kpi_reader'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL; -- another database's migration created it just now
      END;
    END IF;
  END LOOP;
END
$$;

-- PostgreSQL 15 no longer lets PUBLIC create in schema public; usage is still needed.
GRANT USAGE ON SCHEMA public TO kpi_evaluator, kpi_notifier, kpi_reader;

-- Every service checks at start that its schema is current (kpi_pg_migrate's read-only path).
GRANT SELECT ON schema_migrations TO kpi_evaluator, kpi_notifier, kpi_reader;

-- The evaluator: no DELETE on the city's record (measurements, history); UPDATE only where a
-- row is a current state (attainment, totals, offsets, the catalog mirror, outbox marks).
GRANT SELECT, INSERT, UPDATE ON measures, measure_totals, attainment, consumer_offsets
  TO kpi_evaluator;
GRANT SELECT, INSERT ON measurements, attainment_history TO kpi_evaluator;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO kpi_evaluator; -- DELETE: retention of sent rows
GRANT USAGE ON SEQUENCE attainment_history_id_seq, outbox_id_seq TO kpi_evaluator;

-- The notifier: its queue; DELETE for the retention of delivered rows.
GRANT SELECT, INSERT, UPDATE, DELETE ON notifications TO kpi_notifier;
GRANT USAGE ON SEQUENCE notifications_id_seq TO kpi_notifier;

-- Readers: everything that exists now, read-only.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO kpi_reader;
