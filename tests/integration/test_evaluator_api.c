/* test_evaluator_api.c: the read API has its own database connection and a bound. With
 * KPI_EVALUATOR_API_MAX_PENDING=2 and the API's queries held up by a lock, a burst of reads gets
 * 503 problem+json with Retry-After at once beyond the bound (none hangs), and the consumer is
 * unaffected: a rebalance (a second replica leaves) still reads its offsets and every record is
 * stored within seconds. Once the lock goes, the two held reads are answered 200. The read
 * API's instants also come as Japan calendar days (test_api_japan_days). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <poll.h>

#include "kpi_time.h"
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

/* The body of an HTTP response RESP (after the blank line), parsed. */
static cJSON *response_json(const char *resp) {
  const char *body = resp ? strstr(resp, "\r\n\r\n") : NULL;
  if (!body) fail_msg("no HTTP body: %s", resp ? resp : "(no answer)");
  cJSON *doc = cJSON_Parse(body + 4);
  if (!doc) fail_msg("not JSON: %s", body + 4);
  return doc;
}

static const char *member_string(const cJSON *o, const char *name) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
  if (!cJSON_IsString(it)) fail_msg("%s is not a string", name);
  return it->valuestring;
}

/* Instants also as Japan calendar days (docs/evaluator.md "Read API"): a value reported for
 * 2024-03-31 has last_observed_at 2024-03-30T15:00:00Z, and last_observed_day 2024-03-31. Ratio
 * amounts in their count unit and, from older records, in percent are both stored. */
static void test_api_japan_days(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evday", "2024-06-01");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_produce_reading(&w, "g2-uiturn-4-supporters", "kikaku", "2024-03-31", 31, "person", NULL);
  char rec[1024], id[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(id);
  evw_measurement(rec, sizeof(rec), id, "g4-digital-1-konbini-issuance", "shimin", "2024-05-31",
                  12, "case", "numerator");
  evw_produce(&w, w.t_meas, "g4-digital-1-konbini-issuance", rec);
  kpi_uuid_v4(id);
  evw_measurement(rec, sizeof(rec), id, "g4-digital-1-konbini-issuance", "shimin", "2024-05-31",
                  100, "percent", "denominator");
  evw_produce(&w, w.t_meas, "g4-digital-1-konbini-issuance", rec);
  evw_flush(&w);
  evw_expect_sql(&w,
                 "SELECT last_observed_at IS NOT NULL FROM attainment"
                 " WHERE measure_id = 'g2-uiturn-4-supporters'",
                 "t");
  evw_expect_sql(&w,
                 "SELECT count(*) FROM measurements"
                 " WHERE measure_id = 'g4-digital-1-konbini-issuance'",
                 "2");
  evw_expect_sql(&w,
                 "SELECT count(*) > 0 FROM attainment_history"
                 " WHERE measure_id = 'g2-uiturn-4-supporters'",
                 "t");

  char *resp = evw_http_get(&w, "/v1/attainment/g2-uiturn-4-supporters");
  cJSON *doc = response_json(resp);
  free(resp);
  /* The instant is the JST midnight, which in UTC is still the 30th. */
  int64_t ms;
  assert_int_equal(kpi_time_parse(member_string(doc, "last_observed_at"), &ms, NULL), 0);
  assert_true(ms == INT64_C(1711810800000)); /* 2024-03-30T15:00:00Z */
  assert_string_equal(member_string(doc, "last_observed_day"), "2024-03-31");
  kpi_day day;
  assert_int_equal(kpi_time_parse(member_string(doc, "updated_at"), &ms, NULL), 0);
  assert_int_equal(kpi_time_parse(member_string(doc, "updated_day"), NULL, &day), 0);
  assert_int_equal(day, kpi_day_of_ms(ms));
  const cJSON *h0 = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "history"), 0);
  assert_non_null(h0);
  assert_int_equal(kpi_time_parse(member_string(h0, "recorded_at"), &ms, NULL), 0);
  assert_int_equal(kpi_time_parse(member_string(h0, "recorded_day"), NULL, &day), 0);
  assert_int_equal(day, kpi_day_of_ms(ms));
  cJSON_Delete(doc);

  /* The list too; a measure with no data has null for both. */
  resp = evw_http_get(&w, "/v1/attainment");
  doc = response_json(resp);
  free(resp);
  const cJSON *m;
  int seen = 0;
  cJSON_ArrayForEach(m, cJSON_GetObjectItem(doc, "measures")) {
    const char *mid = member_string(m, "measure_id");
    const cJSON *lod = cJSON_GetObjectItem(m, "last_observed_day");
    if (strcmp(mid, "g2-uiturn-4-supporters") == 0) {
      assert_string_equal(lod->valuestring, "2024-03-31");
      seen++;
    } else if (strcmp(mid, "g4-digital-1-konbini-issuance") == 0) {
      assert_string_equal(lod->valuestring, "2024-05-31");
      seen++;
    } else if (strcmp(mid, "g4-carbon-1-zero-carbon-plan") == 0) {
      assert_true(cJSON_IsNull(lod));
      assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "last_observed_at")));
      seen++;
    }
    assert_true(cJSON_IsString(cJSON_GetObjectItem(m, "updated_day")));
  }
  assert_int_equal(seen, 3);
  cJSON_Delete(doc);
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_api_bound),
                                     cmocka_unit_test(test_api_japan_days)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
