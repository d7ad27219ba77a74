/* ev_mirror.c: the catalog checked against the versions recorded, recorded and mirrored into the
 * measures table: once at start (blocking, after the migrations) and after each SIGHUP reload
 * (on DB, between transactions). docs/evaluator.md "Catalog versions". */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "evaluator.h"
#include "kpi_log.h"
#include "kpi_pg.h"

/* Serialises the version check and the recording across replicas (and an operator's second
 * start): without it two replicas reading two different files could both find their version
 * unrecorded and record both. Key space 1802 (ev_txn.c's measure locks use 1801). */
static const char SQL_VERSION_LOCK[] = "SELECT pg_advisory_xact_lock(1802, 0)";

/* What is recorded: the latest version and the hash recorded with $1 (NULL when none). */
static const char SQL_VERSIONS[] =
    "SELECT (SELECT max(version) FROM catalog_versions) AS latest,"
    " (SELECT sha256 FROM catalog_versions WHERE version = $1::int) AS sha256";

/* The catalog ($2 its version, $3 its hash) and its measures' figures, recorded once (a
 * replica, a restart or a retry after a lost COMMIT finds them recorded and adds nothing), then
 * every measure of the catalog ($1, a JSON array from mirror_json) mirrored with the version;
 * rows of measures removed from the file stay (docs/evaluator.md "Known limits"). */
static const char SQL_RECORD[] =
    "WITH v AS (INSERT INTO catalog_versions (version, sha256) VALUES ($2::int, $3)"
    "  ON CONFLICT (version) DO NOTHING),"
    " f AS (INSERT INTO measure_catalog (measure_id, catalog_version, baseline_fy, baseline,"
    "  target_fy, target)"
    "  SELECT x.id, $2::int, x.baseline_fy, x.baseline, x.target_fy, x.target"
    "  FROM jsonb_to_recordset($1::jsonb) AS x(id text, baseline_fy int, baseline float8,"
    "   target_fy int, target float8)"
    "  ON CONFLICT (measure_id, catalog_version) DO NOTHING)"
    " INSERT INTO measures AS t (id, goal, goal_name, program, name, indicator, unit, kind,"
    "  direction, baseline_fy, baseline, target_fy, target, window_from_fy, window_to_fy, owner,"
    "  watchers, report_interval_days, catalog_version, updated_at)"
    " SELECT x.id, x.goal, x.goal_name, x.program, x.name, x.indicator, x.unit, x.kind,"
    "  x.direction, x.baseline_fy, x.baseline, x.target_fy, x.target, x.window_from_fy,"
    "  x.window_to_fy, x.owner, coalesce(x.watchers, '{}'), x.report_interval_days, $2::int,"
    "  now()"
    " FROM jsonb_to_recordset($1::jsonb) AS x(id text, goal int, goal_name text, program text,"
    "  name text, indicator text, unit text, kind text, direction text, baseline_fy int,"
    "  baseline float8, target_fy int, target float8, window_from_fy int, window_to_fy int,"
    "  owner text, watchers text[], report_interval_days int)"
    " ON CONFLICT (id) DO UPDATE SET goal = excluded.goal, goal_name = excluded.goal_name,"
    "  program = excluded.program, name = excluded.name, indicator = excluded.indicator,"
    "  unit = excluded.unit, kind = excluded.kind, direction = excluded.direction,"
    "  baseline_fy = excluded.baseline_fy, baseline = excluded.baseline,"
    "  target_fy = excluded.target_fy, target = excluded.target,"
    "  window_from_fy = excluded.window_from_fy, window_to_fy = excluded.window_to_fy,"
    "  owner = excluded.owner, watchers = excluded.watchers,"
    "  report_interval_days = excluded.report_interval_days,"
    "  catalog_version = excluded.catalog_version, updated_at = now()";

/* The catalog's measures as a JSON array for jsonb_to_recordset. Returns malloc'd or NULL. */
static char *mirror_json(const kpi_catalog *cat) {
  cJSON *arr = cJSON_CreateArray();
  if (!arr) return NULL;
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    cJSON *o = cJSON_CreateObject();
    if (!o) break;
    cJSON_AddItemToArray(arr, o);
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddNumberToObject(o, "goal", m->goal);
    if (m->goal_name) cJSON_AddStringToObject(o, "goal_name", m->goal_name);
    cJSON_AddStringToObject(o, "program", m->program ? m->program : "");
    cJSON_AddStringToObject(o, "name", m->name ? m->name : "");
    cJSON_AddStringToObject(o, "indicator", m->indicator ? m->indicator : "");
    cJSON_AddStringToObject(o, "unit", m->unit);
    cJSON_AddStringToObject(o, "kind", kpi_kind_name(m->kind));
    cJSON_AddStringToObject(o, "direction", kpi_direction_name(m->direction));
    cJSON_AddNumberToObject(o, "baseline_fy", m->baseline_fy);
    cJSON_AddNumberToObject(o, "baseline", m->baseline);
    cJSON_AddNumberToObject(o, "target_fy", m->target_fy);
    cJSON_AddNumberToObject(o, "target", m->target);
    if (m->kind == KPI_KIND_CUMULATIVE) {
      cJSON_AddNumberToObject(o, "window_from_fy", m->window_from_fy);
      cJSON_AddNumberToObject(o, "window_to_fy", m->window_to_fy);
    }
    cJSON_AddStringToObject(o, "owner", m->owner);
    cJSON *w = cJSON_AddArrayToObject(o, "watchers");
    for (size_t j = 0; w && j < m->n_watchers; j++)
      cJSON_AddItemToArray(w, cJSON_CreateString(m->watchers[j]));
    cJSON_AddNumberToObject(o, "report_interval_days", m->report_interval_days);
  }
  char *s = cJSON_PrintUnformatted(arr);
  cJSON_Delete(arr);
  return s;
}

/* The parameters of SQL_RECORD for CAT: JSON (malloc'd, the caller frees; NULL when out of
 * memory), VERSION and SHA. */
typedef struct {
  char *json;
  char version[16];
  char sha[65];
} record_params;

static int record_params_init(record_params *rp, const kpi_catalog *cat) {
  rp->json = mirror_json(cat);
  snprintf(rp->version, sizeof(rp->version), "%d", cat->version);
  kpi_catalog_sha256_hex(cat, rp->sha);
  return rp->json ? 0 : -1;
}

/* Judges CAT against SQL_VERSIONS' result RES (logging a refusal as catalog_version_refused,
 * with what to do). */
static kpi_catalog_version_verdict version_verdict(const kpi_catalog *cat, const PGresult *res) {
  char sha[65], err[400];
  kpi_catalog_sha256_hex(cat, sha);
  int c_latest = PQfnumber(res, "latest"), c_sha = PQfnumber(res, "sha256");
  bool has_latest = !PQgetisnull(res, 0, c_latest);
  int latest = has_latest ? atoi(PQgetvalue(res, 0, c_latest)) : 0;
  const char *recorded = PQgetisnull(res, 0, c_sha) ? NULL : PQgetvalue(res, 0, c_sha);
  kpi_catalog_version_verdict v = kpi_catalog_version_check(cat->version, sha, has_latest, latest,
                                                            recorded, err, sizeof(err));
  if (!kpi_catalog_version_ok(v)) kpi_log(KPI_LOG_ERROR, "catalog_version_refused", "%s", err);
  return v;
}

/* ---- SIGHUP: BEGIN, lock, SQL_VERSIONS, then SQL_RECORD and COMMIT (or ROLLBACK) on DB ---- */

static void reload_finish(evaluator *ev, bool ok) {
  kpi_catalog_free(ev->reloading);
  ev->reloading = NULL;
  ev->on_mirrored(ev, ok);
}

static void on_pg_reload_step(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || ev->reload_failed) return;
  ev->reload_failed = true;
  kpi_log(KPI_LOG_WARN, "catalog_mirror_failed", "%s; retrying",
          res ? PQresultErrorMessage(res) : "connection lost");
}

/* The end of a reload that recorded nothing: a failure (retried) or a refused version (kept). */
static void on_pg_reload_rollback(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  (void)res;
  evaluator *ev = arg;
  reload_finish(ev, !ev->reload_failed);
}

static void on_pg_reload_commit(kpi_pgasync *pg, const PGresult *res, void *arg) {
  on_pg_reload_step(pg, res, arg);
  evaluator *ev = arg;
  if (ev->reload_failed) {
    reload_finish(ev, false); /* the file is read and judged again */
    return;
  }
  kpi_catalog_free(ev->cat);
  ev->cat = ev->reloading;
  ev->reloading = NULL;
  kpi_log(KPI_LOG_INFO, "catalog_mirrored", "%zu measures, version %d", ev->cat->n_measures,
          ev->cat->version);
  ev->on_mirrored(ev, true);
}

/* Records and mirrors the catalog (and COMMITs), or ROLLBACKs a refused one. */
static void on_pg_versions(kpi_pgasync *pg, const PGresult *res, void *arg) {
  evaluator *ev = arg;
  on_pg_reload_step(pg, res, arg);
  kpi_catalog_version_verdict v = KPI_CATALOG_VERSION_NEW;
  if (!ev->reload_failed && PQntuples(res) == 1) v = version_verdict(ev->reloading, res);
  int rc = -1;
  if (!ev->reload_failed && kpi_catalog_version_ok(v)) {
    record_params rp;
    if (record_params_init(&rp, ev->reloading) == 0) {
      const char *vals[3] = {rp.json, rp.version, rp.sha};
      rc = kpi_pgasync_query(pg, SQL_RECORD, 3, vals, on_pg_reload_step, ev);
      if (!rc) rc = kpi_pgasync_query(pg, "COMMIT", 0, NULL, on_pg_reload_commit, ev);
    }
    free(rp.json);
    if (rc == 0) return;
    ev->reload_failed = true;
  } else if (!ev->reload_failed) {
    /* Refused: the running catalog stays, and nothing is retried until the next SIGHUP. */
    kpi_metrics_inc(ev->m.catalog_refused);
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "version %d refused; keeping version %d",
            ev->reloading->version, ev->cat->version);
  }
  if (kpi_pgasync_query(pg, "ROLLBACK", 0, NULL, on_pg_reload_rollback, ev) != 0) {
    ev->reload_failed = true;
    reload_finish(ev, false);
  }
}

/* A bad file or a refused version keeps the running catalog. */
int ev_mirror_reload(evaluator *ev, ev_mirror_done_cb on_done) {
  char err[512];
  kpi_catalog *cat = kpi_catalog_load(ev->cfg.catalog_path, err, sizeof(err));
  if (!cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s; keeping version %d", err,
            ev->cat->version);
    return 1;
  }
  ev->reloading = cat;
  ev->reload_failed = false;
  ev->on_mirrored = on_done;
  char version[16];
  snprintf(version, sizeof(version), "%d", cat->version);
  const char *vals[1] = {version};
  int rc = kpi_pgasync_query(ev->db, "BEGIN", 0, NULL, on_pg_reload_step, ev);
  if (!rc) rc = kpi_pgasync_query(ev->db, SQL_VERSION_LOCK, 0, NULL, on_pg_reload_step, ev);
  if (!rc) rc = kpi_pgasync_query(ev->db, SQL_VERSIONS, 1, vals, on_pg_versions, ev);
  if (rc == 0) return 0;
  if (kpi_pgasync_query(ev->db, "ROLLBACK", 0, NULL, on_pg_reload_rollback, ev) == 0) {
    ev->reload_failed = true; /* the queued statements run first; the rollback ends it */
    return 0;
  }
  ev->reloading = NULL;
  kpi_catalog_free(cat);
  return -1;
}

/* Connects (waiting while the database is away or the schema is being migrated elsewhere)
 * and migrates. Returns the connection, or NULL with *RC 1 (stop requested) or -1 (logged). */
static PGconn *db_connect_migrated(const char *conninfo, int *rc) {
  char err[512];
  for (int delay = 200;; delay = delay < 5000 ? delay * 2 : 5000) {
    PGconn *conn = kpi_pg_connect(conninfo, err, sizeof(err));
    if (conn) {
      int applied = kpi_pg_migrate(conn, err, sizeof(err));
      if (applied >= 0) {
        if (applied > 0) kpi_log(KPI_LOG_INFO, "db_migrated", "%d migrations applied", applied);
        return conn;
      }
      PQfinish(conn);
      /* Another replica (or an operator) holds the migration lock, or the schema waits for
       * `kpi-admin migrate` by its owner: transient, like a database that is not up yet. Any
       * other migration error needs a person. */
      if (applied != KPI_PG_ELOCKTIMEOUT && applied != KPI_PG_ENOTOWNER) {
        kpi_log(KPI_LOG_ERROR, "db_migrate_failed", "%s", err);
        *rc = -1;
        return NULL;
      }
      kpi_log(KPI_LOG_WARN,
              applied == KPI_PG_ELOCKTIMEOUT ? "db_migrate_lock_timeout" : "db_schema_not_current",
              "%s; retrying in %d ms", err, delay);
    } else {
      kpi_log(KPI_LOG_WARN, "db_unavailable", "%s; retrying in %d ms", err, delay);
    }
    if (ev_startup_wait((unsigned)delay)) {
      *rc = 1;
      return NULL;
    }
  }
}

/* PQexecParams expecting status WANT; logs and returns NULL (result cleared) otherwise. */
static PGresult *exec_expect(PGconn *conn, const char *sql, int n, const char *const *vals,
                             ExecStatusType want) {
  PGresult *res = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
  if (res && PQresultStatus(res) == want) return res;
  kpi_log(KPI_LOG_ERROR, "catalog_mirror_failed", "%s",
          res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
  PQclear(res);
  return NULL;
}

/* One transaction: the version check, then the record and the mirror. Returns 0, -1 (error,
 * logged) or -2 (version refused, logged). */
static int record_blocking(PGconn *conn, const kpi_catalog *cat) {
  char version[16];
  snprintf(version, sizeof(version), "%d", cat->version);
  const char *vals1[1] = {version};
  PGresult *res = exec_expect(conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK);
  if (res) {
    PQclear(res);
    res = exec_expect(conn, SQL_VERSION_LOCK, 0, NULL, PGRES_TUPLES_OK);
  }
  if (res) {
    PQclear(res);
    res = exec_expect(conn, SQL_VERSIONS, 1, vals1, PGRES_TUPLES_OK);
  }
  if (!res) return -1; /* PQfinish rolls back */
  kpi_catalog_version_verdict v = version_verdict(cat, res);
  PQclear(res);
  if (!kpi_catalog_version_ok(v)) return -2;
  record_params rp;
  if (record_params_init(&rp, cat) != 0) {
    kpi_log(KPI_LOG_ERROR, "catalog_mirror_failed", "out of memory");
    return -1;
  }
  const char *vals[3] = {rp.json, rp.version, rp.sha};
  res = exec_expect(conn, SQL_RECORD, 3, vals, PGRES_COMMAND_OK);
  free(rp.json);
  if (res) {
    PQclear(res);
    res = exec_expect(conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK);
  }
  if (!res) return -1;
  PQclear(res);
  kpi_log(KPI_LOG_INFO, "catalog_mirrored", "%zu measures, version %d", cat->n_measures,
          cat->version);
  return 0;
}

int ev_db_prepare(evaluator *ev, const char *conninfo) {
  int rc = 0;
  PGconn *conn = db_connect_migrated(conninfo, &rc);
  if (!conn) return rc;
  rc = record_blocking(conn, ev->cat);
  PQfinish(conn);
  return rc;
}
