/* test_pgasync.c: kpi_pgasync against a scripted fake PostgreSQL server (a thread speaking just
 * enough of the v3 protocol to accept a connection): the promises of kpi_pgasync_query about
 * when callbacks run, without a database. The real server is exercised by it_test_pgasync. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kpi_pgasync.h"

/* ---- the fake server: accept one connection, answer the startup message with
 * AuthenticationOk + ReadyForQuery, then wait for a command on a pipe:
 * 'r' resets the connection (RST), 'c' closes it gracefully. ---- */

typedef struct {
  int listen_fd;
  int port;
  int cmd[2]; /* test -> server */
  pthread_t thread;
} fake_pg;

static int read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static void *fake_pg_main(void *arg) {
  fake_pg *f = arg;
  int fd = accept(f->listen_fd, NULL, NULL);
  if (fd < 0) return NULL;
  uint8_t hdr[4];
  if (read_full(fd, hdr, 4) == 0) {
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    char *rest = len >= 4 && len < 65536 ? malloc(len - 4) : NULL;
    if (rest && read_full(fd, rest, len - 4) == 0) {
      static const uint8_t hello[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, 'Z', 0, 0, 0, 5, 'I'};
      if (write(fd, hello, sizeof hello) != (ssize_t)sizeof hello) {
        /* the client will see the connection fail */
      }
    }
    free(rest);
  }
  char cmd = 'c';
  if (read(f->cmd[0], &cmd, 1) != 1) cmd = 'c';
  if (cmd == 'r') {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  close(fd);
  close(f->listen_fd);
  return NULL;
}

static void fake_pg_start(fake_pg *f) {
  f->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(f->listen_fd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(f->listen_fd, 4), 0);
  socklen_t sl = sizeof sa;
  assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&sa, &sl), 0);
  f->port = ntohs(sa.sin_port);
  assert_int_equal(pipe(f->cmd), 0);
  assert_int_equal(pthread_create(&f->thread, NULL, fake_pg_main, f), 0);
}

/* Sends CMD and waits until the server thread has acted on it. */
static void fake_pg_finish(fake_pg *f, char cmd) {
  assert_int_equal(write(f->cmd[1], &cmd, 1), 1);
  pthread_join(f->thread, NULL);
  close(f->cmd[0]);
  close(f->cmd[1]);
}

/* ---- the client side ---- */

typedef struct {
  int ups, downs;
  int results, null_results;
  int closed;
  int in_query; /* set around kpi_pgasync_query: a callback seeing it ran inside the call */
  int inside_calls;
} probe;

static void on_state(kpi_pgasync *pg, int up, void *arg) {
  (void)pg;
  probe *p = arg;
  if (p->in_query) p->inside_calls++;
  if (up) p->ups++;
  else p->downs++;
}

static void on_result(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  probe *p = arg;
  if (p->in_query) p->inside_calls++;
  p->results++;
  if (!res) p->null_results++;
}

static void on_closed(void *arg) { ((probe *)arg)->closed++; }

static kpi_pgasync *connect_fake(uv_loop_t *loop, fake_pg *f, probe *p) {
  char conninfo[160];
  snprintf(conninfo, sizeof conninfo,
           "host=127.0.0.1 port=%d user=u dbname=d sslmode=disable gssencmode=disable "
           "connect_timeout=5",
           f->port);
  char err[128];
  kpi_pgasync *pg = kpi_pgasync_new(loop, conninfo, on_state, p, err, sizeof err);
  assert_non_null(pg);
  for (int i = 0; i < 500 && !p->ups; i++) uv_run(loop, UV_RUN_ONCE);
  assert_int_equal(p->ups, 1);
  assert_true(kpi_pgasync_is_up(pg));
  return pg;
}

static void close_and_drain(uv_loop_t *loop, kpi_pgasync *pg, probe *p) {
  kpi_pgasync_close(pg, on_closed, p);
  uv_run(loop, UV_RUN_DEFAULT);
  assert_int_equal(p->closed, 1);
  assert_int_equal(uv_loop_close(loop), 0);
}

/* Argument errors are the caller's, not the connection's: libpq refuses more than 65535
 * parameters, and that must neither drop the session (failing every queued query and, for a
 * query that is retried, reconnecting forever) nor run callbacks inside the call. */
static void test_bad_arguments_keep_the_connection(void **state) {
  (void)state;
  static const struct {
    const char *sql;
    int nparams;
    int with_values;
  } cases[] = {
      {"SELECT 1", 65536, 1},
      {"SELECT 1", 100000, 1},
      {"SELECT 1", -1, 0},
      {"SELECT $1", 1, 0}, /* parameters announced, no array */
      {NULL, 0, 0},
  };
  const char **vals = calloc(100000, sizeof(char *));
  assert_non_null(vals);
  for (size_t i = 0; i < 100000; i++) vals[i] = "1";
  fake_pg f;
  fake_pg_start(&f);
  uv_loop_t loop;
  uv_loop_init(&loop);
  probe p = {0};
  kpi_pgasync *pg = connect_fake(&loop, &f, &p);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    p.in_query = 1;
    int rc = kpi_pgasync_query(pg, cases[i].sql, cases[i].nparams,
                               cases[i].with_values ? vals : NULL, on_result, &p);
    p.in_query = 0;
    assert_int_equal(rc, KPI_PGASYNC_EINVAL);
    assert_int_equal(p.inside_calls, 0);
    assert_int_equal(p.results, 0);
    assert_int_equal(p.downs, 0);
    assert_true(kpi_pgasync_is_up(pg));
    assert_int_equal(kpi_pgasync_pending(pg), 0);
  }
  fake_pg_finish(&f, 'c');
  close_and_drain(&loop, pg, &p);
  assert_int_equal(p.results, 0);
  free(vals);
}

/* A connection the server reset while the loop was busy elsewhere fails when the query is
 * sent, inside kpi_pgasync_query. The query was accepted (0), so its callback must still come
 * from a later loop callback, with RES NULL, followed by the state change. */
static void test_send_failure_reports_from_the_loop(void **state) {
  (void)state;
  fake_pg f;
  fake_pg_start(&f);
  uv_loop_t loop;
  uv_loop_init(&loop);
  probe p = {0};
  kpi_pgasync *pg = connect_fake(&loop, &f, &p);
  fake_pg_finish(&f, 'r');
  /* Let the RST arrive; the loop does not run, so only the next send can notice it. */
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  /* Two queries: libpq may notice the reset on the first send or only on the second. */
  for (int i = 0; i < 2; i++) {
    p.in_query = 1;
    int rc = kpi_pgasync_query(pg, "SELECT 1", 0, NULL, on_result, &p);
    p.in_query = 0;
    assert_true(rc == 0 || rc == KPI_PGASYNC_EDOWN);
    assert_int_equal(p.inside_calls, 0);
    if (rc != 0) break;
  }
  assert_int_equal(p.results, 0);
  size_t queued = kpi_pgasync_pending(pg);
  assert_true(queued >= 1);
  for (int i = 0; i < 500 && (size_t)p.results < queued; i++) uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(p.results, (int)queued);
  assert_int_equal(p.null_results, (int)queued);
  assert_int_equal(p.downs, 1);
  assert_false(kpi_pgasync_is_up(pg));
  close_and_drain(&loop, pg, &p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_arguments_keep_the_connection),
      cmocka_unit_test(test_send_failure_reports_from_the_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
