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

/* Applies every embedded migration not yet recorded in schema_migrations, each in its own
 * transaction, under a session advisory lock so that replicas starting together apply each
 * exactly once. Idempotent. Returns the number applied, or -1 with ERRSTR. */
int kpi_pg_migrate(PGconn *conn, char *errstr, size_t errstr_size);

/* Runs SQL with no parameters and expects success; returns 0 or -1 with ERRSTR. */
int kpi_pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

#endif
