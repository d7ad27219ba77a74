/* ev_mirror.c: the catalog mirrored into the measures table: once at start (blocking, after the
 * migrations) and after each SIGHUP reload (on DB, between transactions). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "evaluator.h"
#include "kpi_log.h"
#include "kpi_pg.h"

/* Every measure of the catalog ($1, a JSON array from mirror_json) with the catalog version
 * ($2); rows of measures removed from the file stay (docs/evaluator.md "Known limits"). */
static const char SQL_MIRROR[] =
    "INSERT INTO measures AS t (id, goal, goal_name, program, name, indicator, unit, kind,"
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

static void on_pg_mirror(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  evaluator *ev = arg;
  ev_mirror_done_cb on_done = ev->on_mirrored;
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    kpi_log(KPI_LOG_WARN, "catalog_mirror_failed", "%s; retrying",
            res ? PQresultErrorMessage(res) : "connection lost");
    on_done(ev, false);
    return;
  }
  kpi_log(KPI_LOG_INFO, "catalog_mirrored", "%zu measures, version %d", ev->cat->n_measures,
          ev->cat->version);
  on_done(ev, true);
}

/* A bad file keeps the running catalog. */
int ev_mirror_reload(evaluator *ev, ev_mirror_done_cb on_done) {
  char err[512];
  kpi_catalog *cat = kpi_catalog_load(ev->cfg.catalog_path, err, sizeof(err));
  if (!cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_reload_failed", "%s; keeping version %d", err,
            ev->cat->version);
    return 1;
  }
  char *json = mirror_json(cat);
  if (!json) {
    kpi_catalog_free(cat);
    return 1;
  }
  kpi_catalog_free(ev->cat);
  ev->cat = cat;
  char version[16];
  snprintf(version, sizeof(version), "%d", cat->version);
  const char *vals[2] = {json, version};
  ev->on_mirrored = on_done;
  int rc = kpi_pgasync_query(ev->db, SQL_MIRROR, 2, vals, on_pg_mirror, ev);
  free(json);
  return rc == 0 ? 0 : -1;
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

int ev_db_prepare(evaluator *ev, const char *conninfo) {
  int rc = 0;
  PGconn *conn = db_connect_migrated(conninfo, &rc);
  if (!conn) return rc;
  char *json = mirror_json(ev->cat);
  char version[16];
  snprintf(version, sizeof(version), "%d", ev->cat->version);
  const char *vals[2] = {json, version};
  PGresult *res = json ? PQexecParams(conn, SQL_MIRROR, 2, NULL, vals, NULL, NULL, 0) : NULL;
  int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!ok)
    kpi_log(KPI_LOG_ERROR, "catalog_mirror_failed", "%s",
            res ? PQresultErrorMessage(res) : "out of memory");
  else
    kpi_log(KPI_LOG_INFO, "catalog_mirrored", "%zu measures, version %d", ev->cat->n_measures,
            ev->cat->version);
  PQclear(res);
  free(json);
  PQfinish(conn);
  return ok ? 0 : -1;
}
