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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

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
  char env[12][640];
  const char *envp[16];
  size_t n_env;
  pid_t pid;
  rd_kafka_t *prod;
  PGconn *pg;
} evw;

EVW_FN void evw_setenv(evw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
EVW_FN void evw_setenv(evw *w, const char *fmt, ...) {
  if (w->n_env >= 12) abort();
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->env[w->n_env], sizeof(w->env[0]), fmt, ap);
  va_end(ap);
  w->envp[w->n_env] = w->env[w->n_env];
  w->n_env++;
  w->envp[w->n_env] = NULL;
}

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

/* Replaces the variable NAME (e.g. "KPI_CATALOG") of the world's environment, or adds it.
 * getenv returns the first match, so appending a second definition would not override. */
EVW_FN void evw_replace_env(evw *w, const char *name, const char *value) {
  size_t n = strlen(name);
  for (size_t i = 0; i < w->n_env; i++) {
    if (strncmp(w->env[i], name, n) == 0 && w->env[i][n] == '=') {
      snprintf(w->env[i], sizeof(w->env[0]), "%s=%s", name, value);
      return;
    }
  }
  evw_setenv(w, "%s=%s", name, value);
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
  evw_setenv(w, "DATABASE_URL=%s", w->conninfo);
  evw_setenv(w, "KPI_TOPIC_MEASUREMENTS=%s", w->t_meas);
  evw_setenv(w, "KPI_TOPIC_ALERTS=%s", w->t_alerts);
  evw_setenv(w, "KPI_TOPIC_MEASUREMENTS_DLQ=%s", w->t_dlq);
  evw_setenv(w, "KPI_TOPIC_ALERTS_DLQ=%s", w->t_alerts_dlq);
  evw_setenv(w, "KPI_EVALUATOR_GROUP=%s", w->group);
  evw_setenv(w, "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", w->port);
  evw_setenv(w, "KPI_CATALOG=%s/config/catalog.json", KPI_SOURCE_DIR);
  if (eval_date) evw_setenv(w, "KPI_EVAL_DATE=%s", eval_date);
  w->pg = kpi_it_pg(w->conninfo);

  char err[512];
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("it-evaluator-producer", err, sizeof(err));
  if (!conf || kpi_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
      kpi_kafka_conf_set(conf, "acks", "all", err, sizeof(err)) ||
      kpi_kafka_conf_set(conf, "linger.ms", "5", err, sizeof(err))) {
    fprintf(stderr, "%s\n", err);
    abort();
  }
  w->prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!w->prod) abort();
}

/* Spawns the evaluator with the world's environment plus EXTRA (NULL-terminated, may be NULL),
 * and waits until it answers /healthz. */
EVW_FN pid_t evw_start(evw *w, const char *const *extra) {
  const char *envp[32];
  size_t n = 0;
  for (size_t i = 0; i < w->n_env; i++) envp[n++] = w->envp[i];
  for (const char *const *e = extra; e && *e && n < 31; e++) envp[n++] = *e;
  envp[n] = NULL;
  w->pid = kpi_it_spawn("services/evaluator/kpi-evaluator", envp, w->log);
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
  for (size_t i = 0; i < w2->n_env; i++) w2->envp[i] = w2->env[i];
  w2->envp[w2->n_env] = NULL;
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
  for (;;) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        w->prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    if (!err) return;
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) abort();
    rd_kafka_poll(w->prod, 50);
  }
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
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("it-evaluator-reader", err, sizeof(err));
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
  long long deadline = kpi_it_now_ms() + timeout_ms;
  for (;;) {
    char *v = kpi_it_pg_value(w->pg, sql);
    int ok = v && strcmp(v, want) == 0;
    free(v);
    if (ok) return 0;
    if (kpi_it_now_ms() > deadline) return -1;
    kpi_it_sleep_ms(100);
  }
}

/* The value of SQL as a string, "" for NULL; the caller frees. */
EVW_FN char *evw_sql(evw *w, const char *sql) {
  char *v = kpi_it_pg_value(w->pg, sql);
  return v ? v : strdup("");
}

/* GET PATH from the evaluator; returns the malloc'd response (status line, headers, body) or
 * NULL. Connection: close, so reading to EOF gets it all. */
EVW_FN char *evw_http_get(evw *w, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return NULL;
  }
  char req[512];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   path);
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return NULL;
  }
  size_t len = 0, cap = 4096;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 1024 > cap) buf = realloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  return buf;
}

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

#endif
