/* kpi_pg.h: PostgreSQL connection set-up and schema migrations (libpq). */
#ifndef KPI_PG_H
#define KPI_PG_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct {
  const char *name; /* "001_init.sql" */
  const char *sql;
} kpi_migration;

/* The migrations embedded at build time from db/migrations, in order, ending with {0,0}. */
extern const kpi_migration kpi_migrations[];

/* The connection string services use: DATABASE_URL when set, else "" so that libpq reads its
 * own PG* variables (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD...). */
const char *kpi_pg_conninfo(void);

/* Connects (blocking) with CONNINFO and checks the server answers. Returns NULL and fills
 * ERRSTR on failure. */
PGconn *kpi_pg_connect(const char *conninfo, char *errstr, size_t errstr_size);

#define KPI_MIGRATE_LOCK_TIMEOUT_DEFAULT_MS 10000
/* kpi_pg_migrate: a lock (the migration advisory lock, or a table lock a migration's DDL
 * needs) was not obtained within KPI_MIGRATE_LOCK_TIMEOUT_MS. Transient: retry later. */
#define KPI_PG_ELOCKTIMEOUT (-2)
/* kpi_pg_migrate: the schema is not current and the connection's role may not change it (a
 * service's least-privilege role, docs/database.md). Transient too: the owner runs
 * `kpi-admin migrate`, and the service's next try finds the schema current. */
#define KPI_PG_ENOTOWNER (-3)

/* Applies every embedded migration not yet recorded in schema_migrations, each in its own
 * transaction, under a session advisory lock so that replicas starting together apply each
 * exactly once. Every lock wait (the advisory lock, DDL) is bounded by lock_timeout =
 * $KPI_MIGRATE_LOCK_TIMEOUT_MS (default 10 s, 1..3600000), reset afterwards. Idempotent.
 * A current schema is recognised first by reading schema_migrations only: no lock, no DDL.
 * Returns the number applied, KPI_PG_ELOCKTIMEOUT when a lock wait timed out,
 * KPI_PG_ENOTOWNER when the role may not migrate a schema that needs it, or -1 (also
 * for an invalid KPI_MIGRATE_LOCK_TIMEOUT_MS), with ERRSTR filled on both errors. */
int kpi_pg_migrate(PGconn *conn, char *errstr, size_t errstr_size);

/* Runs SQL with no parameters and expects success; returns 0 or -1 with ERRSTR. */
int kpi_pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

#endif
