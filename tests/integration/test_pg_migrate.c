/* test_pg_migrate.c: migrations apply on the real PostgreSQL, a second run applies nothing and
 * changes nothing, and rows round-trip through the schema with event_id unique. */
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

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_migrate_twice_and_round_trip)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
