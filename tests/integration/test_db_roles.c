/* test_db_roles.c: the least-privilege roles of db/migrations/005_roles.sql on the real
 * PostgreSQL (docs/database.md). Each group may do what its service needs and nothing else; a
 * service role finds a current schema without writing anything, and is told to run
 * `kpi-admin migrate` when the schema is not current. The services themselves run with these
 * roles in test_pipeline_e2e. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_it.h"
#include "kpi_pg.h"

/* Runs SQL as the connection's role; returns 0 on success, 1 on "permission denied" (SQLSTATE
 * 42501), and fails the test on any other error. */
static int try_sql(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  int rc;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    rc = 0;
  } else {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (!state || strcmp(state, "42501") != 0) fail_msg("%s: %s", sql, PQerrorMessage(c));
    rc = 1;
  }
  PQclear(r);
  return rc;
}

static PGconn *connect_as(const char *conninfo, const char *role) {
  char ci[700], err[512];
  snprintf(ci, sizeof(ci), "%s user=%s", conninfo, role);
  PGconn *c = kpi_pg_connect(ci, err, sizeof(err));
  if (!c) fail_msg("%s", err);
  return c;
}

static void test_roles(void **state) {
  (void)state;
  char db[64], conninfo[512], err[512], sql[256], ev[96], nf[96], rd[96];
  kpi_it_unique("it_roles", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, conninfo, sizeof(conninfo)), 0);
  PGconn *owner = kpi_pg_connect(conninfo, err, sizeof(err));
  if (!owner) fail_msg("%s", err);
  if (kpi_pg_migrate(owner, err, sizeof(err)) < 0) fail_msg("%s", err);
  snprintf(ev, sizeof(ev), "%s_ev", db);
  snprintf(nf, sizeof(nf), "%s_nf", db);
  snprintf(rd, sizeof(rd), "%s_rd", db);
  const char *const logins[][2] = {{ev, "kpi_evaluator"}, {nf, "kpi_notifier"}, {rd, "kpi_reader"}};
  for (int i = 0; i < 3; i++) {
    snprintf(sql, sizeof(sql), "CREATE ROLE %s LOGIN IN ROLE %s", logins[i][0], logins[i][1]);
    assert_int_equal(kpi_pg_exec(owner, sql, err, sizeof(err)), 0);
  }
  assert_int_equal(try_sql(owner, "INSERT INTO measurements (event_id, measure_id, department,"
                                  " observed_at, observed_day, fiscal_year, value, unit,"
                                  " received_at) VALUES ('7c9e6679-7425-40de-944b-e07fc1f90ae7',"
                                  " 'm', 'd', now(), current_date, 2024, 1, 'person', now())"),
                   0);

  /* Every role finds the schema current, without the lock or DDL it may not take. */
  PGconn *c_ev = connect_as(conninfo, ev), *c_nf = connect_as(conninfo, nf),
         *c_rd = connect_as(conninfo, rd);
  PGconn *each[] = {c_ev, c_nf, c_rd};
  for (int i = 0; i < 3; i++) {
    int n = kpi_pg_migrate(each[i], err, sizeof(err));
    if (n != 0) fail_msg("%s: migrate returned %d: %s", logins[i][0], n, err);
  }

  /* The evaluator: its own tables, never a deletion of the city's record, no mail queue
   * writes. */
  assert_int_equal(try_sql(c_ev, "SELECT count(*) FROM measurements"), 0);
  assert_int_equal(try_sql(c_ev, "INSERT INTO attainment_history (measure_id, as_of, status,"
                                 " stale, expected) VALUES ('m', current_date, 'no_data', false, 0)"),
                   0);
  assert_int_equal(try_sql(c_ev, "INSERT INTO outbox (alert_id, topic, msg_key, payload) VALUES"
                                 " ('7c9e6679-7425-40de-944b-e07fc1f90ae8', 't', 'k', '{}')"),
                   0);
  assert_int_equal(try_sql(c_ev, "DELETE FROM measurements"), 1);
  assert_int_equal(try_sql(c_ev, "UPDATE measurements SET value = 2"), 1);
  assert_int_equal(try_sql(c_ev, "DELETE FROM attainment_history"), 1);
  /* 007_corrections.sql: the audit read API reads the mail queue, never writes it; the
   * evaluator may set a measurement's retraction marks and nothing else on it. */
  assert_int_equal(try_sql(c_ev, "SELECT count(*) FROM notifications"), 0);
  assert_int_equal(try_sql(c_ev, "DELETE FROM notifications"), 1);
  assert_int_equal(try_sql(c_ev, "UPDATE measurements SET retracted_at = now(),"
                                 " retracted_by = 'd', retraction_reason = 'r'"),
                   0);
  assert_int_equal(try_sql(c_ev, "UPDATE measurements SET corrects = NULL"), 1);
  assert_int_equal(try_sql(c_ev, "CREATE TABLE evil (x int)"), 1);
  assert_int_equal(try_sql(c_ev, "DROP TABLE measurements"), 1);

  /* The notifier: its queue only. */
  assert_int_equal(try_sql(c_nf, "SELECT count(*) FROM notifications"), 0);
  assert_int_equal(try_sql(c_nf, "SELECT count(*) FROM measurements"), 1);
  assert_int_equal(try_sql(c_nf, "UPDATE attainment SET status = 'achieved'"), 1);
  assert_int_equal(try_sql(c_nf, "INSERT INTO outbox (alert_id, topic, msg_key, payload) VALUES"
                                 " ('7c9e6679-7425-40de-944b-e07fc1f90ae9', 't', 'k', '{}')"),
                   1);

  /* Readers read. */
  assert_int_equal(try_sql(c_rd, "SELECT count(*) FROM measurements"), 0);
  assert_int_equal(try_sql(c_rd, "SELECT count(*) FROM attainment_history"), 0);
  assert_int_equal(try_sql(c_rd, "DELETE FROM measurements"), 1);
  assert_int_equal(try_sql(c_rd, "INSERT INTO measures (id) VALUES ('x')"), 1);
  char *n = kpi_it_pg_value(c_rd, "SELECT count(*) FROM measurements");
  assert_string_equal(n, "1");
  free(n);

  /* A schema that is not current: a service role cannot migrate it and is told who can. */
  char db2[64], conninfo2[512];
  kpi_it_unique("it_roles_new", db2, sizeof(db2));
  assert_int_equal(kpi_it_create_db(db2, conninfo2, sizeof(conninfo2)), 0);
  PGconn *c_ev2 = connect_as(conninfo2, ev);
  assert_int_equal(kpi_pg_migrate(c_ev2, err, sizeof(err)), KPI_PG_ENOTOWNER);
  assert_non_null(strstr(err, "kpi-admin migrate"));
  char *tables = kpi_it_pg_value(c_ev2, "SELECT count(*) FROM information_schema.tables"
                                        " WHERE table_schema = 'public'");
  assert_string_equal(tables, "0");
  free(tables);
  PQfinish(c_ev2);

  for (int i = 0; i < 3; i++) PQfinish(each[i]);
  PQfinish(owner);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_roles)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
