/* test_report_db.c: the report's connection string: jit = off added to every form, in front of
 * the user's own options (which win), PGOPTIONS kept, values quoted, bad strings refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "report.h"

/* The value of KEYWORD after libpq parses CONNINFO again, or NULL. Malloc'd. */
static char *parsed(const char *conninfo, const char *keyword) {
  PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
  assert_non_null(opts);
  char *v = NULL;
  for (PQconninfoOption *o = opts; o->keyword; o++)
    if (strcmp(o->keyword, keyword) == 0 && o->val) v = strdup(o->val);
  PQconninfoFree(opts);
  return v;
}

static void expect(const char *in, const char *keyword, const char *want) {
  char err[256];
  char *out = report_db_conninfo(in, err, sizeof(err));
  assert_non_null(out);
  char *v = parsed(out, keyword);
  if (want) {
    assert_non_null(v);
    assert_string_equal(v, want);
  } else {
    assert_null(v);
  }
  free(v);
  free(out);
}

static void test_conninfo(void **state) {
  (void)state;
  unsetenv("PGOPTIONS");
  expect("", "options", "-c jit=off");
  expect("dbname=kpi user=reader", "options", "-c jit=off");
  expect("dbname=kpi user=reader", "dbname", "kpi");
  expect("dbname=kpi user=reader", "user", "reader");
  expect("postgresql://reader@db.example:5433/kpi?sslmode=require", "options", "-c jit=off");
  expect("postgresql://reader@db.example:5433/kpi?sslmode=require", "port", "5433");
  expect("postgresql://reader@db.example:5433/kpi?sslmode=require", "sslmode", "require");
  /* The user's options come last: their own jit setting wins. */
  expect("dbname=kpi options='-c jit=on -c work_mem=8MB'", "options",
         "-c jit=off -c jit=on -c work_mem=8MB");
  /* Quotes and backslashes survive the round trip. */
  expect("dbname=kpi password='it\\'s \\\\ secret'", "password", "it's \\ secret");
  expect("dbname=kpi password='a\\'b'", "password", "a'b");
  setenv("PGOPTIONS", "-c statement_timeout=5s", 1);
  expect("dbname=kpi", "options", "-c jit=off -c statement_timeout=5s");
  expect("dbname=kpi options=-cgeqo=off", "options", "-c jit=off -cgeqo=off");
  unsetenv("PGOPTIONS");
  char err[256] = "";
  assert_null(report_db_conninfo("dbname=kpi nonsense=1", err, sizeof(err)));
  assert_non_null(strstr(err, "DATABASE_URL"));
  assert_null(strchr(err, '\n'));
  assert_null(report_db_conninfo("postgresql://[broken", err, sizeof(err)));
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_conninfo)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
