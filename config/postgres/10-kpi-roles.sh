#!/bin/sh
# config/postgres/10-kpi-roles.sh: run once by the postgres image when its data volume is new
# (docker-entrypoint-initdb.d). Creates the login roles the services use, each a member of one
# least-privilege group (db/migrations/005_roles.sql, docs/database.md). The groups are made
# here too, so the grants can be given before the first migration; the migration finds them.
# Passwords come from the environment docker-compose.yml passes in.
set -eu
: "${KPI_EVALUATOR_DB_PASSWORD:?}" "${KPI_NOTIFIER_DB_PASSWORD:?}" "${KPI_READER_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v ev_pw="$KPI_EVALUATOR_DB_PASSWORD" -v nf_pw="$KPI_NOTIFIER_DB_PASSWORD" \
  -v rd_pw="$KPI_READER_DB_PASSWORD" <<'SQL'
CREATE ROLE kpi_evaluator NOLOGIN;
CREATE ROLE kpi_notifier NOLOGIN;
CREATE ROLE kpi_reader NOLOGIN;
CREATE ROLE evaluator LOGIN PASSWORD :'ev_pw' IN ROLE kpi_evaluator;
CREATE ROLE notifier LOGIN PASSWORD :'nf_pw' IN ROLE kpi_notifier;
CREATE ROLE reader LOGIN PASSWORD :'rd_pw' IN ROLE kpi_reader;
SQL
