/* kpi_pg.c: blocking PostgreSQL helpers used at start-up: connect, migrate. */
#include "kpi_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"

/* Arbitrary but fixed: every replica of every service takes the same lock to migrate. */
#define KPI_MIGRATE_LOCK_KEY 7426151903LL

const char *kpi_pg_conninfo(void) {
  const char *url = getenv("DATABASE_URL");
  return url && *url ? url : "";
}

static void copy_error(PGconn *conn, const char *what, char *errstr, size_t size) {
  const char *msg = PQerrorMessage(conn);
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
  snprintf(errstr, size, "%s: %.*s", what, (int)n, msg);
}

PGconn *kpi_pg_connect(const char *conninfo, char *errstr, size_t errstr_size) {
  PGconn *conn = PQconnectdb(conninfo);
  if (!conn) {
    snprintf(errstr, errstr_size, "postgres: out of memory");
    return NULL;
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    copy_error(conn, "postgres connect", errstr, errstr_size);
    PQfinish(conn);
    return NULL;
  }
  return conn;
}

int kpi_pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size) {
  PGresult *res = PQexec(conn, sql);
  ExecStatusType st = PQresultStatus(res);
  int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) copy_error(conn, "postgres", errstr, errstr_size);
  PQclear(res);
  return ok ? 0 : -1;
}

/* True when RES failed because a lock wait was cut by lock_timeout (SQLSTATE 55P03,
 * lock_not_available); the SQLSTATE, unlike the message, does not depend on lc_messages. */
static int lock_timed_out(const PGresult *res) {
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  return state && strcmp(state, "55P03") == 0;
}

/* Returns 1 when NAME is recorded as applied, 0 when not, -1 on error. */
static int migration_applied(PGconn *conn, const char *name, char *errstr, size_t size) {
  const char *params[1] = {name};
  PGresult *res = PQexecParams(conn, "SELECT 1 FROM schema_migrations WHERE name = $1", 1, NULL,
                               params, NULL, NULL, 0);
  int rc;
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    copy_error(conn, "schema_migrations", errstr, size);
    rc = -1;
  } else {
    rc = PQntuples(res) > 0;
  }
  PQclear(res);
  return rc;
}

/* Returns 0, -1, or KPI_PG_ELOCKTIMEOUT when the migration's DDL waited too long for a lock. */
static int apply_one(PGconn *conn, const kpi_migration *m, char *errstr, size_t size) {
  if (kpi_pg_exec(conn, "BEGIN", errstr, size)) return -1;
  PGresult *res = PQexec(conn, m->sql);
  if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
    char inner[400];
    copy_error(conn, m->name, inner, sizeof(inner));
    snprintf(errstr, size, "migration %s", inner);
    int rc = lock_timed_out(res) ? KPI_PG_ELOCKTIMEOUT : -1;
    PQclear(res);
    PQclear(PQexec(conn, "ROLLBACK"));
    return rc;
  }
  PQclear(res);
  const char *params[1] = {m->name};
  res = PQexecParams(conn, "INSERT INTO schema_migrations (name) VALUES ($1)", 1, NULL, params,
                     NULL, NULL, 0);
  int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!ok) copy_error(conn, "schema_migrations", errstr, size);
  PQclear(res);
  if (!ok) {
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
  }
  return kpi_pg_exec(conn, "COMMIT", errstr, size);
}

/* Returns 1 when schema_migrations exists and records every embedded migration, 0 when not,
 * -1 on error. Reads only: see kpi_pg_migrate. */
static int all_applied(PGconn *conn, char *errstr, size_t size) {
  PGresult *res = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    copy_error(conn, "schema_migrations", errstr, size);
    PQclear(res);
    return -1;
  }
  int exists = PQgetvalue(res, 0, 0)[0] == 't';
  PQclear(res);
  if (!exists) return 0;
  for (const kpi_migration *m = kpi_migrations; m->name; m++) {
    int done = migration_applied(conn, m->name, errstr, size);
    if (done <= 0) return done;
  }
  return 1;
}

int kpi_pg_migrate(PGconn *conn, char *errstr, size_t errstr_size) {
  /* A current schema needs no lock and no DDL. This read-only path is what lets a service log
   * in with its least-privilege role (docs/database.md), which may create nothing: only
   * `kpi-admin migrate`, run as the schema's owner, applies new migrations then. */
  int current = all_applied(conn, errstr, errstr_size);
  if (current == 1) return 0;
  if (current < 0) return -1;
  int64_t timeout_ms;
  if (kpi_env_int("KPI_MIGRATE_LOCK_TIMEOUT_MS", KPI_MIGRATE_LOCK_TIMEOUT_DEFAULT_MS, 1, 3600000,
                  &timeout_ms, errstr, errstr_size))
    return -1;
  /* A replica that died while migrating frees the advisory lock with its session, but a
   * session stuck inside a migration (or a DDL lock held by a long transaction on a table a
   * migration alters) would otherwise block every starting service forever, silently. With
   * lock_timeout the wait for the advisory lock and each DDL lock ends in an error the caller
   * can log and retry. Session-level, and reset below, because kpi-admin keeps the
   * connection. */
  char sql[128];
  snprintf(sql, sizeof(sql), "SET lock_timeout = %lld", (long long)timeout_ms);
  if (kpi_pg_exec(conn, sql, errstr, errstr_size)) return -1;
  snprintf(sql, sizeof(sql), "SELECT pg_advisory_lock(%lld)", KPI_MIGRATE_LOCK_KEY);
  PGresult *res = PQexec(conn, sql);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    int timed_out = lock_timed_out(res);
    copy_error(conn, "migration lock", errstr, errstr_size);
    PQclear(res);
    if (timed_out)
      snprintf(errstr, errstr_size,
               "migration lock not obtained within %lld ms (KPI_MIGRATE_LOCK_TIMEOUT_MS): "
               "another process is migrating or holds advisory lock %lld",
               (long long)timeout_ms, KPI_MIGRATE_LOCK_KEY);
    kpi_pg_exec(conn, "RESET lock_timeout", sql, sizeof(sql));
    return timed_out ? KPI_PG_ELOCKTIMEOUT : -1;
  }
  PQclear(res);
  int applied = 0;
  /* "already exists, skipping" notices of a re-run are noise in the service logs. */
  kpi_pg_exec(conn, "SET client_min_messages = warning", errstr, errstr_size);
  if (kpi_pg_exec(conn,
                  "CREATE TABLE IF NOT EXISTS schema_migrations ("
                  " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                  errstr, errstr_size)) {
    applied = -1;
    goto unlock;
  }
  for (const kpi_migration *m = kpi_migrations; m->name; m++) {
    int done = migration_applied(conn, m->name, errstr, errstr_size);
    int rc = done ? 0 : apply_one(conn, m, errstr, errstr_size);
    if (done < 0 || rc < 0) {
      applied = rc == KPI_PG_ELOCKTIMEOUT ? rc : -1;
      goto unlock;
    }
    if (!done) applied++;
  }
unlock:
  if (applied < 0 && strstr(errstr, "permission denied")) {
    size_t n = strlen(errstr);
    snprintf(errstr + n, errstr_size > n ? errstr_size - n : 0,
             " (the schema is not current and this role may not change it: run `kpi-admin "
             "migrate` as the schema owner, docs/database.md)");
    applied = KPI_PG_ENOTOWNER;
  }
  snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%lld)", KPI_MIGRATE_LOCK_KEY);
  char ignore[128];
  kpi_pg_exec(conn, sql, ignore, sizeof(ignore));
  kpi_pg_exec(conn, "RESET lock_timeout", ignore, sizeof(ignore));
  return applied;
}
