/* test_pg_migrate.c: migrations apply on the real PostgreSQL, a second run applies nothing and
 * changes nothing, and rows round-trip through the schema with event_id unique; a migration
 * lock held elsewhere makes migrate fail within KPI_MIGRATE_LOCK_TIMEOUT_MS instead of
 * blocking forever. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kpi_it.h"
#include "kpi_pg.h"

static void test_migrate_twice_and_round_trip(void **state) {
  (void)state;
  char db[64], conninfo[512], err[512];
  kpi_it_unique("it_migrate", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, conninfo, sizeof(conninfo)), 0);

  PGconn *c = kpi_pg_connect(conninfo, err, sizeof(err));
  if (!c) fail_msg("%s", err);
  int n = kpi_pg_migrate(c, err, sizeof(err));
  if (n < 0) fail_msg("%s", err);
  int expected = 0;
  for (const kpi_migration *m = kpi_migrations; m->name; m++) expected++;
  assert_int_equal(n, expected);
  char *tables = kpi_it_pg_value(c, "SELECT count(*) FROM information_schema.tables WHERE "
                                    "table_schema = 'public'");
  n = kpi_pg_migrate(c, err, sizeof(err));
  assert_int_equal(n, 0);
  char *tables2 = kpi_it_pg_value(c, "SELECT count(*) FROM information_schema.tables WHERE "
                                     "table_schema = 'public'");
  assert_string_equal(tables, tables2);
  assert_true(atoi(tables) >= 8);
  free(tables);
  free(tables2);

  const char *params[] = {"7c9e6679-7425-40de-944b-e07fc1f90ae7", "g4-carbon-2-led-rate",
                          "kankyo", "2024-05-01T00:00:00+09:00", "20.5", "percent",
                          "LED化率"};
  const char *sql =
      "INSERT INTO measurements (event_id, measure_id, department, observed_at, observed_day, "
      "fiscal_year, value, unit, note, received_at) VALUES ($1, $2, $3, $4, "
      "($4::timestamptz AT TIME ZONE 'Asia/Tokyo')::date, 2024, $5, $6, $7, now()) "
      "ON CONFLICT (event_id) DO NOTHING";
  PGresult *r = PQexecParams(c, sql, 7, NULL, params, NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  assert_string_equal(PQcmdTuples(r), "1");
  PQclear(r);
  /* The same event again is absorbed by the primary key. */
  r = PQexecParams(c, sql, 7, NULL, params, NULL, NULL, 0);
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  assert_string_equal(PQcmdTuples(r), "0");
  PQclear(r);
  char *v = kpi_it_pg_value(c, "SELECT value::text || '|' || note || '|' || observed_day::text "
                               "FROM measurements");
  assert_string_equal(v, "20.5|LED化率|2024-05-01");
  free(v);
  /* A status outside the contract is refused by the schema. */
  r = PQexec(c, "INSERT INTO attainment (measure_id, as_of, expected, status) VALUES "
                "('m', '2024-01-01', 0, 'great')");
  assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
  PQclear(r);
  PQfinish(c);
}

/* Another session holds the migration lock (a replica stuck mid-migration): migrate gives up
 * after the lock timeout with KPI_PG_ELOCKTIMEOUT, and succeeds once the lock is free. The
 * migrate runs in a child process, so that a migrate that blocks fails this test in seconds
 * instead of hanging it. */
static void test_migrate_lock_timeout(void **state) {
  (void)state;
  char db[64], conninfo[512], err[512];
  kpi_it_unique("it_migrate_lock", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, conninfo, sizeof(conninfo)), 0);
  PGconn *holder = kpi_it_pg(conninfo);
  char *got = kpi_it_pg_value(holder, "SELECT pg_advisory_lock(7426151903)::text");
  free(got);

  setenv("KPI_MIGRATE_LOCK_TIMEOUT_MS", "1000", 1);
  long long t0 = kpi_it_now_ms();
  pid_t pid = fork();
  if (pid == 0) {
    PGconn *c = kpi_pg_connect(conninfo, err, sizeof(err));
    int rc = c ? kpi_pg_migrate(c, err, sizeof(err)) : 99;
    fprintf(stderr, "migrate while locked: %d: %s\n", rc, err);
    _exit(rc == KPI_PG_ELOCKTIMEOUT && strstr(err, "KPI_MIGRATE_LOCK_TIMEOUT_MS") ? 0 : 1);
  }
  int status = kpi_it_stop(pid, 0, 6000); /* signal 0: only wait */
  if (status == -1) fail_msg("kpi_pg_migrate still blocked 6 s after start (lock timeout 1 s)");
  long long took = kpi_it_now_ms() - t0;
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  assert_true(took >= 900);
  assert_true(took < 5000);

  /* Nothing was applied, and the lock, once released, lets migrate through. */
  char *n = kpi_it_pg_value(holder, "SELECT count(*) FROM pg_tables WHERE tablename = 'measurements'");
  assert_string_equal(n, "0");
  free(n);
  got = kpi_it_pg_value(holder, "SELECT pg_advisory_unlock(7426151903)::text");
  assert_string_equal(got, "true");
  free(got);
  PGconn *c = kpi_pg_connect(conninfo, err, sizeof(err));
  if (!c) fail_msg("%s", err);
  if (kpi_pg_migrate(c, err, sizeof(err)) <= 0) fail_msg("%s", err);
  /* The session's lock_timeout is back to the server default after migrate. */
  char *lt = kpi_it_pg_value(c, "SHOW lock_timeout");
  assert_string_equal(lt, "0");
  free(lt);
  unsetenv("KPI_MIGRATE_LOCK_TIMEOUT_MS");
  PQfinish(c);
  PQfinish(holder);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_migrate_twice_and_round_trip),
                                     cmocka_unit_test(test_migrate_lock_timeout)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
