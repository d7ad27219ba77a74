/* test_pgasync.c: the async libpq connection runs queries in order on a libuv loop, survives the
 * server killing its session (state down, then up again by itself), and closes cleanly. Named
 * (prepared) queries are prepared on first use and again on the new session after the loss.
 * kpi_pgasync_copy_in sends a COPY's input (escapes, NULLs, more than the socket takes at
 * once, fed in pieces), takes ownership of it, reports a refused COPY as its result, and leaves
 * the connection usable; while the server is not reading a COPY's input (a row waits on
 * another session's uncommitted key), the loop keeps running its other work. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_it.h"
#include "kpi_pgasync.h"

typedef struct {
  uv_loop_t loop;
  uv_timer_t step;
  kpi_pgasync *pg;
  char conninfo[512];
  int ups, downs;
  int results[8];
  int nresults;
  int lost; /* callbacks with RES NULL */
  int phase;
  int closed;
  char pid[32];
} ctx;

static void on_pg_state(kpi_pgasync *pg, int up, void *arg) {
  (void)pg;
  ctx *c = arg;
  if (up) c->ups++;
  else c->downs++;
}

static void on_pg_result(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ctx *c = arg;
  if (!res) {
    c->lost++;
    return;
  }
  if (PQresultStatus(res) == PGRES_TUPLES_OK && c->nresults < 8)
    c->results[c->nresults++] = atoi(PQgetvalue(res, 0, 0));
  else if (c->nresults < 8)
    c->results[c->nresults++] = -1;
}

static void on_pg_pid(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  ctx *c = arg;
  if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
    snprintf(c->pid, sizeof(c->pid), "%s", PQgetvalue(res, 0, 0));
}

static void on_pg_closed(void *arg) { ((ctx *)arg)->closed = 1; }

static void on_uv_step(uv_timer_t *t) {
  ctx *c = t->data;
  const char *p[1];
  switch (c->phase) {
    case 0: /* wait for the first connection, then queue three queries at once */
      if (!c->ups) return;
      for (int i = 1; i <= 3; i++) {
        char v[8];
        snprintf(v, sizeof(v), "%d", i * 10);
        p[0] = v;
        assert_int_equal(
            kpi_pgasync_query_prepared(c->pg, "q", "SELECT $1::int", 1, p, on_pg_result, c), 0);
      }
      /* An error result (here the failed Parse of a named query) is reported as such, and the
       * connection stays usable. */
      assert_int_equal(
          kpi_pgasync_query_prepared(c->pg, "bad", "SELECT nonsense", 0, NULL, on_pg_result, c),
          0);
      assert_int_equal(kpi_pgasync_query(c->pg, "SELECT pg_backend_pid()", 0, NULL, on_pg_pid, c),
                       0);
      c->phase = 1;
      return;
    case 1: /* kill our session from another connection */
      if (!c->pid[0]) return;
      /* "q" is prepared on this session now: another SQL under its name is refused. */
      p[0] = "1";
      assert_int_equal(kpi_pgasync_query_prepared(c->pg, "q", "SELECT $1::bigint", 1, p,
                                                  on_pg_result, c),
                       KPI_PGASYNC_EINVAL);
      {
        PGconn *admin = kpi_it_pg(c->conninfo);
        char sql[128];
        snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%s)", c->pid);
        PQclear(PQexec(admin, sql));
        PQfinish(admin);
      }
      c->phase = 2;
      return;
    case 2: /* the loss is noticed while idle, and the connection comes back */
      if (c->downs < 1 || c->ups < 2) return;
      /* A new session: "q" must be prepared again (else "prepared statement does not exist"). */
      p[0] = "42";
      assert_int_equal(
          kpi_pgasync_query_prepared(c->pg, "q", "SELECT $1::int", 1, p, on_pg_result, c), 0);
      c->phase = 3;
      return;
    case 3:
      if (c->nresults < 5) return;
      kpi_pgasync_close(c->pg, on_pg_closed, c);
      uv_close((uv_handle_t *)t, NULL);
      c->phase = 4;
      return;
  }
}

static void test_queries_and_reconnect(void **state) {
  (void)state;
  ctx c = {0};
  char db[64], err[256];
  kpi_it_unique("it_pgasync", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, c.conninfo, sizeof(c.conninfo)), 0);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  setenv("KPI_PG_RETRY_MAX_MS", "200", 1);
  c.pg = kpi_pgasync_new(&c.loop, c.conninfo, on_pg_state, &c, err, sizeof(err));
  assert_non_null(c.pg);
  uv_timer_init(&c.loop, &c.step);
  c.step.data = &c;
  uv_timer_start(&c.step, on_uv_step, 20, 20);

  /* Bounded: the loop ends once everything is closed, or the guard below trips. */
  long long deadline = kpi_it_now_ms() + 30000;
  while (uv_run(&c.loop, UV_RUN_ONCE) && kpi_it_now_ms() < deadline) {
  }
  assert_int_equal(c.phase, 4);
  assert_int_equal(c.closed, 1);
  assert_int_equal(c.nresults, 5);
  assert_int_equal(c.results[0], 10);
  assert_int_equal(c.results[1], 20);
  assert_int_equal(c.results[2], 30);
  assert_int_equal(c.results[3], -1); /* SELECT nonsense */
  assert_int_equal(c.results[4], 42);
  assert_int_equal(c.ups, 2);
  assert_int_equal(c.downs, 1);
  assert_int_equal(uv_loop_close(&c.loop), 0);
}

/* ---- COPY ------------------------------------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  kpi_pgasync *pg;
  int up, phase, closed;
  ExecStatusType status[8];
  char value[8][128];
  int n;
  char *big;
  size_t big_len;
} copy_ctx;

static void on_copy_result(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  copy_ctx *c = arg;
  if (c->n >= 8) return;
  c->status[c->n] = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
    snprintf(c->value[c->n], sizeof(c->value[0]), "%s", PQgetvalue(res, 0, 0));
  else if (res && PQresultStatus(res) == PGRES_COMMAND_OK)
    snprintf(c->value[c->n], sizeof(c->value[0]), "%s", PQcmdTuples((PGresult *)res));
  c->n++;
}

static void on_copy_closed(void *arg) { ((copy_ctx *)arg)->closed = 1; }

static void on_copy_state(kpi_pgasync *pg, int up, void *arg) {
  copy_ctx *c = arg;
  if (!up || c->up++) return;
  /* Escaped tab, newline and backslash, a NULL, then 120,000 lines (about 1.6 MB: fed to
   * libpq in 64 kB pieces as the socket takes them). */
  static const char small[] = "a\\tb\\nc\\\\d\t1\n\\N\t2\n";
  assert_int_equal(kpi_pgasync_query(pg, "CREATE TEMP TABLE t (a text, b int)", 0, NULL,
                                     on_copy_result, c),
                   0);
  char *data = strdup(small);
  assert_int_equal(kpi_pgasync_copy_in(pg, "COPY t FROM STDIN", &data, strlen(small),
                                       on_copy_result, c),
                   0);
  assert_null(data); /* taken */
  assert_int_equal(kpi_pgasync_copy_in(pg, "COPY t FROM STDIN", &c->big, c->big_len,
                                       on_copy_result, c),
                   0);
  assert_int_equal(kpi_pgasync_query(pg,
                                     "SELECT concat_ws('|', count(*), sum(b), count(a),"
                                     " (SELECT a FROM t WHERE b = 1)) FROM t",
                                     0, NULL, on_copy_result, c),
                   0);
  /* A refused COPY (not an integer) is its result; then a plain query asking for COPY input
   * gets it refused; the connection still answers. */
  data = strdup("x\ty\n");
  assert_int_equal(kpi_pgasync_copy_in(pg, "COPY t FROM STDIN", &data, 4, on_copy_result, c), 0);
  assert_int_equal(kpi_pgasync_query(pg, "COPY t FROM STDIN", 0, NULL, on_copy_result, c), 0);
  assert_int_equal(kpi_pgasync_query(pg, "SELECT count(*) FROM t", 0, NULL, on_copy_result, c),
                   0);
  assert_int_equal(kpi_pgasync_query(pg, "SELECT 1", 0, NULL, on_copy_result, c), 0);
}

static void on_copy_step(uv_timer_t *t) {
  copy_ctx *c = t->data;
  if (c->n < 8) return;
  kpi_pgasync_close(c->pg, on_copy_closed, c);
  uv_close((uv_handle_t *)t, NULL);
}

static void test_copy_in(void **state) {
  (void)state;
  copy_ctx c = {0};
  char db[64], conninfo[512], err[256];
  kpi_it_unique("it_pgcopy", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, conninfo, sizeof(conninfo)), 0);
  c.big = malloc(120000 * 24);
  assert_non_null(c.big);
  for (int i = 0; i < 120000; i++)
    c.big_len += (size_t)sprintf(c.big + c.big_len, "row %d\t%d\n", i, 3);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  c.pg = kpi_pgasync_new(&c.loop, conninfo, on_copy_state, &c, err, sizeof(err));
  assert_non_null(c.pg);
  uv_timer_t step;
  uv_timer_init(&c.loop, &step);
  step.data = &c;
  uv_timer_start(&step, on_copy_step, 20, 20);
  long long deadline = kpi_it_now_ms() + 30000;
  while (uv_run(&c.loop, UV_RUN_ONCE) && kpi_it_now_ms() < deadline) {
  }
  assert_null(c.big); /* kpi_pgasync's, freed once sent */
  assert_int_equal(c.closed, 1);
  assert_int_equal(c.n, 8);
  assert_int_equal(c.status[0], PGRES_COMMAND_OK);
  assert_int_equal(c.status[1], PGRES_COMMAND_OK);
  assert_string_equal(c.value[1], "2");
  assert_int_equal(c.status[2], PGRES_COMMAND_OK);
  assert_string_equal(c.value[2], "120000");
  assert_string_equal(c.value[3], "120002|360003|120001|a\tb\nc\\d");
  assert_int_equal(c.status[4], PGRES_FATAL_ERROR);
  assert_int_equal(c.status[5], PGRES_FATAL_ERROR);
  assert_string_equal(c.value[6], "120002");
  assert_string_equal(c.value[7], "1");
  assert_int_equal(uv_loop_close(&c.loop), 0);
}

/* A COPY far larger than the socket buffers whose first row waits on another session's
 * uncommitted insert of the same key, so the server stops reading: the loop must keep running
 * (a timer fires and lets the other session roll back), not spin inside the COPY. */
typedef struct {
  uv_loop_t loop;
  kpi_pgasync *pg;
  PGconn *blocker;
  char *data;
  size_t len;
  int up, fired, results_at_fire, closed;
  ExecStatusType status[2];
  char value[2][32];
  int n;
} stall_ctx;

static void on_stall_result(kpi_pgasync *pg, const PGresult *res, void *arg) {
  stall_ctx *c = arg;
  if (c->n < 2) {
    c->status[c->n] = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK)
      snprintf(c->value[c->n], sizeof(c->value[0]), "%s", PQcmdTuples((PGresult *)res));
  }
  if (++c->n == 2) kpi_pgasync_close(pg, NULL, NULL);
}

static void on_stall_state(kpi_pgasync *pg, int up, void *arg) {
  stall_ctx *c = arg;
  if (!up || c->up++) return;
  assert_int_equal(kpi_pgasync_query(pg, "SELECT 1", 0, NULL, on_stall_result, c), 0);
  assert_int_equal(kpi_pgasync_copy_in(pg, "COPY u FROM STDIN", &c->data, c->len,
                                       on_stall_result, c),
                   0);
}

static void on_stall_timer(uv_timer_t *t) {
  stall_ctx *c = t->data;
  c->fired = 1;
  c->results_at_fire = c->n;
  PQclear(PQexec(c->blocker, "ROLLBACK"));
  uv_close((uv_handle_t *)t, NULL);
}

static void test_copy_server_not_reading(void **state) {
  (void)state;
  stall_ctx c = {0};
  char db[64], conninfo[512], err[256];
  kpi_it_unique("it_pgstall", db, sizeof(db));
  assert_int_equal(kpi_it_create_db(db, conninfo, sizeof(conninfo)), 0);
  c.blocker = PQconnectdb(conninfo);
  assert_int_equal(PQstatus(c.blocker), CONNECTION_OK);
  PQclear(PQexec(c.blocker, "CREATE TABLE u (k int PRIMARY KEY, pad text)"));
  PQclear(PQexec(c.blocker, "BEGIN"));
  PGresult *r = PQexec(c.blocker, "INSERT INTO u VALUES (0, 'held')");
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  /* 100,000 rows of about 250 bytes: 25 MB, far more than both ends' socket buffers. */
  enum { ROWS = 100000, PAD = 240 };
  c.data = malloc((size_t)ROWS * (PAD + 16));
  assert_non_null(c.data);
  char pad[PAD + 1];
  memset(pad, 'p', PAD);
  pad[PAD] = '\0';
  for (int i = 0; i < ROWS; i++) c.len += (size_t)sprintf(c.data + c.len, "%d\t%s\n", i, pad);
  assert_int_equal(uv_loop_init(&c.loop), 0);
  c.pg = kpi_pgasync_new(&c.loop, conninfo, on_stall_state, &c, err, sizeof(err));
  assert_non_null(c.pg);
  uv_timer_t t;
  uv_timer_init(&c.loop, &t);
  t.data = &c;
  uv_timer_start(&t, on_stall_timer, 500, 0);
  long long deadline = kpi_it_now_ms() + 60000;
  while (uv_run(&c.loop, UV_RUN_ONCE) && kpi_it_now_ms() < deadline) {
  }
  PQfinish(c.blocker);
  assert_int_equal(c.fired, 1);
  assert_int_equal(c.results_at_fire, 1); /* the COPY was still waiting when the timer ran */
  assert_int_equal(c.n, 2);
  assert_int_equal(c.status[1], PGRES_COMMAND_OK);
  assert_string_equal(c.value[1], "100000");
  assert_int_equal(uv_loop_close(&c.loop), 0);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_queries_and_reconnect),
                                     cmocka_unit_test(test_copy_in),
                                     cmocka_unit_test(test_copy_server_not_reading)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
