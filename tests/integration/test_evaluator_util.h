/* test_evaluator_util.h: shared helpers of the evaluator's integration tests (included by each
 * test_evaluator_*.c; static, so every test binary has its own copy): a per-test world of
 * database, topics and group, the spawned evaluator, a producer of measurement records and a
 * reader of whole topics. */
#ifndef TEST_EVALUATOR_UTIL_H
#define TEST_EVALUATOR_UTIL_H

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kpi_attainment.h"
#include "kpi_it.h"
#include "kpi_kafka.h"
#include "kpi_uuid.h"

/* Not every test uses every helper. */
#define EVW_FN static __attribute__((unused))

typedef struct {
  char name[96];
  char conninfo[512];
  char t_meas[128], t_alerts[128], t_dlq[128], t_alerts_dlq[128];
  char group[128];
  int port;
  char log[256];
  kpi_it_env env;
  pid_t pid;
  rd_kafka_t *prod;
  PGconn *pg;
} evw;

/* The last evaluator spawned, so that a failed assertion (cmocka longjmps out of the test)
 * does not leave it running after the test program exits. Killed only while it is still our
 * unreaped child, so a recycled pid is never hit. */
static pid_t evw_child;

EVW_FN void evw_atexit(void) {
  int st;
  if (evw_child > 0 && waitpid(evw_child, &st, WNOHANG) == 0) {
    kill(evw_child, SIGKILL);
    waitpid(evw_child, &st, 0);
  }
}

/* Replaces the variable NAME (e.g. "KPI_CATALOG") of the world's environment, or adds it. */
EVW_FN void evw_replace_env(evw *w, const char *name, const char *value) {
  kpi_it_env_set(&w->env, name, value);
}

/* A fresh database and topic names; EVAL_DATE may be NULL (today). */
EVW_FN void evw_init(evw *w, const char *prefix, const char *eval_date) {
  memset(w, 0, sizeof(*w));
  static int registered;
  if (!registered++) atexit(evw_atexit);
  kpi_it_unique(prefix, w->name, sizeof(w->name));
  if (kpi_it_create_db(w->name, w->conninfo, sizeof(w->conninfo)) != 0) abort();
  snprintf(w->t_meas, sizeof(w->t_meas), "%s.m", w->name);
  snprintf(w->t_alerts, sizeof(w->t_alerts), "%s.a", w->name);
  snprintf(w->t_dlq, sizeof(w->t_dlq), "%s.dlq", w->name);
  snprintf(w->t_alerts_dlq, sizeof(w->t_alerts_dlq), "%s.adlq", w->name);
  snprintf(w->group, sizeof(w->group), "%s_g", w->name);
  w->port = kpi_it_free_port();
  snprintf(w->log, sizeof(w->log), "/tmp/%s.log", w->name);
  kpi_it_env_add(&w->env, "DATABASE_URL=%s", w->conninfo);
  kpi_it_env_add(&w->env, "KPI_TOPIC_MEASUREMENTS=%s", w->t_meas);
  kpi_it_env_add(&w->env, "KPI_TOPIC_ALERTS=%s", w->t_alerts);
  kpi_it_env_add(&w->env, "KPI_TOPIC_MEASUREMENTS_DLQ=%s", w->t_dlq);
  kpi_it_env_add(&w->env, "KPI_TOPIC_ALERTS_DLQ=%s", w->t_alerts_dlq);
  kpi_it_env_add(&w->env, "KPI_EVALUATOR_GROUP=%s", w->group);
  kpi_it_env_add(&w->env, "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", w->port);
  kpi_it_env_add(&w->env, "KPI_CATALOG=%s/config/catalog.json", KPI_SOURCE_DIR);
  if (eval_date) kpi_it_env_add(&w->env, "KPI_EVAL_DATE=%s", eval_date);
  w->pg = kpi_it_pg(w->conninfo);

  char err[512];
  static const char *const kv[] = {"enable.idempotence", "true", "acks", "all",
                                   "linger.ms", "5", NULL};
  rd_kafka_conf_t *conf = kpi_it_kafka_conf("it-evaluator-producer", kv, err, sizeof(err));
  if (!conf) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
  w->prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!w->prod) abort();
}

/* Spawns the evaluator with the world's environment plus EXTRA (NULL-terminated, may be NULL),
 * and waits until it answers /healthz. */
EVW_FN pid_t evw_start(evw *w, const char *const *extra) {
  kpi_it_env env = w->env;
  kpi_it_env_extend(&env, extra);
  w->pid = kpi_it_spawn("services/evaluator/kpi-evaluator", kpi_it_env_list(&env), w->log);
  evw_child = w->pid;
  if (kpi_it_wait_http(w->port, "/healthz", 200, 30000) != 0) {
    fprintf(stderr, "evaluator did not start; log %s\n", w->log);
    abort();
  }
  return w->pid;
}

/* A second evaluator of the same world (same database, topics and group), on its own port and
 * log: copies W into W2 with its own environment. W2 shares W's producer and database
 * connection; close only W. */
EVW_FN void evw_twin(const evw *w, evw *w2, const char *suffix) {
  *w2 = *w;
  w2->port = kpi_it_free_port();
  char listen[64];
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", w2->port);
  evw_replace_env(w2, "KPI_EVALUATOR_LISTEN", listen);
  snprintf(w2->log, sizeof(w2->log), "/tmp/%s.%s.log", w->name, suffix);
  w2->pid = 0;
}

/* Waits until the evaluator is ready (database and broker), so that its topics exist. */
EVW_FN int evw_wait_ready(evw *w, int timeout_ms) {
  return kpi_it_wait_http(w->port, "/readyz", 200, timeout_ms);
}

EVW_FN void evw_produce(evw *w, const char *topic, const char *key, const char *value) {
  if (kpi_it_produce(w->prod, topic, key, value, strlen(value)) != RD_KAFKA_RESP_ERR_NO_ERROR)
    abort();
}

EVW_FN void evw_flush(evw *w) {
  if (rd_kafka_flush(w->prod, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) abort();
}

/* A kpi.measurement/1 record. COMPONENT may be NULL. */
EVW_FN void evw_measurement(char *buf, size_t size, const char *event_id, const char *measure,
                            const char *dept, const char *observed, double value,
                            const char *unit, const char *component) {
  char comp[64] = "";
  if (component) snprintf(comp, sizeof(comp), ",\"component\":\"%s\"", component);
  snprintf(buf, size,
           "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"%s\",\"measure_id\":\"%s\","
           "\"department\":\"%s\",\"observed_at\":\"%s\",\"value\":%.17g,\"unit\":\"%s\"%s,"
           "\"received_at\":\"2024-01-01T00:00:00Z\"}",
           event_id, measure, dept, observed, value, unit, comp);
}

/* Produces one kpi.measurement/1 record with a fresh event_id (copied to EVENT_ID unless
 * NULL) to the world's measurements topic, keyed by MEASURE, and flushes. */
EVW_FN void evw_produce_reading(evw *w, const char *measure, const char *dept, const char *day,
                                double value, const char *unit, char *event_id) {
  char rec[1024], id[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(id);
  evw_measurement(rec, sizeof(rec), id, measure, dept, day, value, unit, NULL);
  evw_produce(w, w->t_meas, measure, rec);
  evw_flush(w);
  if (event_id) memcpy(event_id, id, sizeof(id));
}

/* Produces one kpi.measurement/1 record received on 1 March 2024 with a fresh event_id and
 * NOTE_JSON (already escaped for a JSON string) to the world's measurements topic, keyed by
 * MEASURE; does not flush. */
EVW_FN void evw_produce_noted(evw *w, const char *measure, const char *dept, const char *day,
                              double value, const char *unit, const char *note_json) {
  char rec[2048], id[KPI_UUID_STRLEN + 1];
  kpi_uuid_v4(id);
  snprintf(rec, sizeof(rec),
           "{\"schema\":\"kpi.measurement/1\",\"event_id\":\"%s\",\"measure_id\":\"%s\","
           "\"department\":\"%s\",\"observed_at\":\"%s\",\"value\":%.17g,\"unit\":\"%s\","
           "\"note\":\"%s\",\"received_at\":\"2024-03-01T00:00:00Z\"}",
           id, measure, dept, day, value, unit, note_json);
  evw_produce(w, w->t_meas, measure, rec);
}

/* One message read back from a topic. */
typedef struct {
  char *key;
  char *value;
  char *error_header; /* kpi-error, or NULL */
} evw_msg;

EVW_FN void evw_msgs_free(evw_msg *v, int n) {
  for (int i = 0; i < n; i++) {
    free(v[i].key);
    free(v[i].value);
    free(v[i].error_header);
  }
  free(v);
}

/* Reads TOPIC (PARTITIONS partitions) from the beginning until IDLE_MS pass without a message
 * after at least MIN messages were seen, or TIMEOUT_MS in all. Returns the messages. */
EVW_FN evw_msg *evw_read_topic(const char *topic, int partitions, int min, int idle_ms,
                               int timeout_ms, int *count) {
  char err[512], group[128];
  kpi_it_unique("it_reader", group, sizeof(group));
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("it-evaluator-reader", NULL, NULL, err, sizeof(err));
  if (!conf || kpi_kafka_conf_set(conf, "group.id", group, err, sizeof(err)) ||
      kpi_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err)) ||
      kpi_kafka_conf_set(conf, "isolation.level", "read_committed", err, sizeof(err)))
    abort();
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!c) abort();
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; p++)
    rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(c, parts);
  rd_kafka_topic_partition_list_destroy(parts);
  int n = 0, cap = 16;
  evw_msg *v = calloc((size_t)cap, sizeof(*v));
  long long start = kpi_it_now_ms(), last = start;
  while (kpi_it_now_ms() - start < timeout_ms) {
    if (n >= min && kpi_it_now_ms() - last > idle_ms) break;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
    if (!m) continue;
    if (!m->err) {
      if (n == cap) {
        cap *= 2;
        v = realloc(v, (size_t)cap * sizeof(*v));
      }
      v[n].key = m->key ? strndup(m->key, m->key_len) : NULL;
      v[n].value = m->payload ? strndup(m->payload, m->len) : NULL;
      v[n].error_header = NULL;
      rd_kafka_headers_t *h = NULL;
      const void *hv;
      size_t hl;
      if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
          rd_kafka_header_get_last(h, "kpi-error", &hv, &hl) == RD_KAFKA_RESP_ERR_NO_ERROR)
        v[n].error_header = strndup(hv, hl);
      n++;
      last = kpi_it_now_ms();
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  *count = n;
  return v;
}

/* Polls SQL (one value) until it equals WANT or TIMEOUT_MS pass. Returns 0 when it did. */
EVW_FN int evw_wait_sql(evw *w, const char *sql, const char *want, int timeout_ms) {
  return kpi_it_wait_pg_value(w->pg, sql, want, timeout_ms);
}

/* The value of SQL as a string, "" for NULL; the caller frees. */
EVW_FN char *evw_sql(evw *w, const char *sql) {
  char *v = kpi_it_pg_value(w->pg, sql);
  return v ? v : strdup("");
}

/* GET PATH from the evaluator; returns the malloc'd response (status line, headers, body) or
 * NULL. Connection: close, so reading to EOF gets it all. */
EVW_FN char *evw_http_get(evw *w, const char *path) { return kpi_it_http_get(w->port, path, 5); }

EVW_FN void evw_close(evw *w) {
  if (w->pid > 0) kpi_it_stop(w->pid, SIGKILL, 5000);
  if (w->prod) rd_kafka_destroy(w->prod);
  if (w->pg) PQfinish(w->pg);
  w->prod = NULL;
  w->pg = NULL;
}

EVW_FN void evw_dump_log(const evw *w) {
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "tail -n 40 %s >&2", w->log);
  if (system(cmd) != 0) {
  }
}

/* The helpers below assert with cmocka: include <cmocka.h> before this header. */

/* Waits up to TIMEOUT_MS for SQL to read WANT; fails the test with the last value and the log
 * tail when it does not. */
EVW_FN void evw_expect_sql_within(evw *w, const char *sql, const char *want, int timeout_ms) {
  if (evw_wait_sql(w, sql, want, timeout_ms) != 0) {
    char *got = evw_sql(w, sql);
    evw_dump_log(w);
    fail_msg("%s: got \"%s\", want \"%s\"", sql, got, want);
  }
}

EVW_FN void evw_expect_sql(evw *w, const char *sql, const char *want) {
  evw_expect_sql_within(w, sql, want, 30000);
}

/* Waits up to TIMEOUT_MS for the stored offsets to cover N records; else fails the test with
 * the log tails of W and OTHER (a second evaluator of the world, may be NULL). */
EVW_FN void evw_expect_offsets(evw *w, const evw *other, long long n, int timeout_ms) {
  char want[32];
  snprintf(want, sizeof(want), "%lld", n);
  if (evw_wait_sql(w, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets", want,
                   timeout_ms) != 0) {
    evw_dump_log(w);
    if (other) evw_dump_log(other);
    fail_msg("offsets do not cover the %lld records produced", n);
  }
}

/* SQL reads WANT now. */
EVW_FN void evw_assert_sql(evw *w, const char *sql, const char *want) {
  char *got = evw_sql(w, sql);
  assert_string_equal(got, want);
  free(got);
}

/* The query telling whether the outbox row of the alert NAME (kpi_alert_id) was published, and
 * that alert_id in ID. */
EVW_FN void evw_alert_sent_sql(const char *name, char *sql, size_t size,
                               char id[KPI_UUID_STRLEN + 1]) {
  kpi_alert_id(name, id);
  snprintf(sql, size, "SELECT sent_at IS NOT NULL FROM outbox WHERE alert_id = '%s'", id);
}

/* Waits for the outbox row of the alert NAME to be published; its alert_id to ID unless NULL. */
EVW_FN void evw_expect_alert_sent(evw *w, const char *name, char *id) {
  char aid[KPI_UUID_STRLEN + 1], sql[200];
  evw_alert_sent_sql(name, sql, sizeof(sql), aid);
  evw_expect_sql(w, sql, "t");
  if (id) memcpy(id, aid, sizeof(aid));
}

/* SIGTERM: the evaluator drains and exits 0 within 20 s. */
EVW_FN void evw_stop(evw *w) {
  int status = kpi_it_stop(w->pid, SIGTERM, 20000);
  w->pid = 0;
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

#endif
