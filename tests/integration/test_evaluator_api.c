/* test_evaluator_api.c: the read API has its own database connection and a bound. With
 * KPI_EVALUATOR_API_MAX_PENDING=2 and the API's queries held up by a lock, a burst of reads gets
 * 503 problem+json with Retry-After at once beyond the bound (none hangs), and the consumer is
 * unaffected: a rebalance (a second replica leaves) still reads its offsets and every record is
 * stored within seconds. Once the lock goes, the two held reads are answered 200. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>

#include "test_evaluator_util.h"

#define BURST 10

static const char *const measures[][3] = {
    {"g2-uiturn-4-supporters", "kikaku", "person"},
    {"g3-kosodate-3-maternity-grants", "kosodate", "case"},
    {"g3-kosodate-8-school-lunch", "kyoiku", "school"},
    {"g4-digital-2-signage", "kikaku", "facility"},
    {"g4-digital-3-boshi-app-users", "kosodate", "person"},
    {"g4-carbon-2-led-rate", "kankyo", "percent"},
};
#define N_MEASURES (int)(sizeof(measures) / sizeof(measures[0]))

/* One reading of every measure above, observed on DAY; waits until all are stored. */
static void produce_round(evw *w, const char *day, int timeout_ms) {
  char rec[1024], id[KPI_UUID_STRLEN + 1], sql[200];
  for (int i = 0; i < N_MEASURES; i++) {
    kpi_uuid_v4(id);
    evw_measurement(rec, sizeof(rec), id, measures[i][0], measures[i][1], day, 1, measures[i][2],
                    NULL);
    evw_produce(w, w->t_meas, measures[i][0], rec);
  }
  evw_flush(w);
  snprintf(sql, sizeof(sql), "SELECT count(*) FROM measurements WHERE observed_day = '%s'", day);
  char want[16];
  snprintf(want, sizeof(want), "%d", N_MEASURES);
  evw_expect_sql_within(w, sql, want, timeout_ms);
}

typedef struct {
  int fd;
  char buf[4096];
  size_t len;
  int done; /* the server closed: the response is complete */
} conn;

/* Reads from every open connection until DEADLINE_MS (monotonic) or all are done. */
static void read_until(conn *c, int n, long long deadline_ms) {
  while (kpi_it_now_ms() < deadline_ms) {
    struct pollfd p[BURST];
    int open = 0;
    for (int i = 0; i < n; i++) {
      p[i].fd = c[i].done ? -1 : c[i].fd;
      p[i].events = POLLIN;
      if (!c[i].done) open++;
    }
    if (!open) return;
    if (poll(p, (nfds_t)n, 100) <= 0) continue;
    for (int i = 0; i < n; i++) {
      if (c[i].done || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t r = read(c[i].fd, c[i].buf + c[i].len, sizeof(c[i].buf) - 1 - c[i].len);
      if (r <= 0) {
        c[i].done = 1;
        close(c[i].fd);
      } else {
        c[i].len += (size_t)r;
      }
      c[i].buf[c[i].len] = '\0';
    }
  }
}

static int count_status(const conn *c, int n, const char *status) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (c[i].done && strncmp(c[i].buf + 9, status, 3) == 0) k++;
  return k;
}

static void test_api_bound(void **state) {
  (void)state;
  evw w, w2;
  evw_init(&w, "it_evapi", "2024-06-01");
  evw_replace_env(&w, "KAFKA_SESSION_TIMEOUT_MS", "6000");
  evw_replace_env(&w, "KAFKA_HEARTBEAT_INTERVAL_MS", "500");
  evw_twin(&w, &w2, "second");
  const char *bound[] = {"KPI_EVALUATOR_API_MAX_PENDING=2", NULL};
  evw_start(&w, bound);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_start(&w2, NULL);
  assert_int_equal(evw_wait_ready(&w2, 30000), 0);
  produce_round(&w, "2024-05-01", 30000);

  /* The API's queries read `measures`, which the consumer never touches: locking it holds up
   * exactly the reads. */
  PGconn *holder = kpi_it_pg(w.conninfo);
  PQclear(PQexec(holder, "BEGIN"));
  PGresult *r = PQexec(holder, "LOCK TABLE measures IN ACCESS EXCLUSIVE MODE");
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);

  conn c[BURST];
  memset(c, 0, sizeof(c));
  for (int i = 0; i < BURST; i++) {
    c[i].fd = kpi_it_connect(w.port, 0);
    assert_true(c[i].fd >= 0);
    const char *req = "GET /v1/attainment HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(c[i].fd, req, strlen(req)), (ssize_t)strlen(req));
  }
  read_until(c, BURST, kpi_it_now_ms() + 3000);
  assert_int_equal(count_status(c, BURST, "503"), BURST - 2);
  for (int i = 0; i < BURST; i++) {
    if (!c[i].done) continue;
    assert_non_null(strstr(c[i].buf, "Retry-After: 1\r\n"));
    assert_non_null(strstr(c[i].buf, "application/problem+json"));
  }
  char *health = evw_http_get(&w, "/healthz");
  assert_non_null(health);
  assert_non_null(strstr(health, "200 OK"));
  free(health);

  /* A rebalance while the two reads wait: the second replica leaves, the first takes every
   * partition at the offsets it reads from PostgreSQL, and consumes them. */
  evw_stop(&w2);
  produce_round(&w, "2024-05-02", 20000);

  PQclear(PQexec(holder, "ROLLBACK"));
  read_until(c, BURST, kpi_it_now_ms() + 10000);
  for (int i = 0; i < BURST; i++)
    if (!c[i].done) fail_msg("request %d not answered after the lock was released", i);
  assert_int_equal(count_status(c, BURST, "200"), 2);
  char *resp = evw_http_get(&w, "/metrics");
  assert_non_null(resp);
  assert_non_null(strstr(resp, "kpi_evaluator_api_rejected_total 8"));
  free(resp);
  PQfinish(holder);
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_api_bound)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
