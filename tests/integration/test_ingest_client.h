/* test_ingest_client.h: what the kpi-ingest integration tests share: a blocking HTTP/1.1 client
 * on raw sockets (responses parsed by http-parser, so pipelining and trickling are possible),
 * problem+json checks, reading a topic back, and spawning the service. Included by the
 * test_ingest_*.c programs only; every function is static. */
#ifndef TEST_INGEST_CLIENT_H
#define TEST_INGEST_CLIENT_H

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kpi_codec.h"
#include "kpi_env.h"
#include "kpi_it.h"
#include "kpi_kafka.h"

/* Each test program uses a different subset of these helpers. */
#define TC_FN static __attribute__((unused))

/* ---- HTTP ---- */

typedef struct {
  int status;
  char headers[4096]; /* "name: value\n" lines, names lower-cased */
  size_t headers_len;
  char *body; /* NUL-terminated, malloc'd */
  size_t body_len;
  int complete;
} tc_resp;

typedef struct {
  tc_resp *out;
  int max;
  int done;
  char field[128];
} tc_parse;

TC_FN void tc_resp_free(tc_resp *r) {
  free(r->body);
  memset(r, 0, sizeof(*r));
}

TC_FN int on_tc_header_field(http_parser *p, const char *at, size_t len) {
  tc_parse *tp = p->data;
  size_t n = len < sizeof(tp->field) - 1 ? len : sizeof(tp->field) - 1;
  for (size_t i = 0; i < n; i++) tp->field[i] = (char)tolower((unsigned char)at[i]);
  tp->field[n] = '\0';
  return 0;
}

TC_FN int on_tc_header_value(http_parser *p, const char *at, size_t len) {
  tc_parse *tp = p->data;
  tc_resp *r = &tp->out[tp->done];
  int n = snprintf(r->headers + r->headers_len, sizeof(r->headers) - r->headers_len, "%s: %.*s\n",
                   tp->field, (int)len, at);
  if (n > 0 && r->headers_len + (size_t)n < sizeof(r->headers)) r->headers_len += (size_t)n;
  return 0;
}

TC_FN int on_tc_body(http_parser *p, const char *at, size_t len) {
  tc_parse *tp = p->data;
  tc_resp *r = &tp->out[tp->done];
  r->body = realloc(r->body, r->body_len + len + 1);
  memcpy(r->body + r->body_len, at, len);
  r->body_len += len;
  r->body[r->body_len] = '\0';
  return 0;
}

TC_FN int on_tc_headers_complete(http_parser *p) {
  tc_parse *tp = p->data;
  tp->out[tp->done].status = (int)p->status_code;
  return 0;
}

TC_FN int on_tc_message_complete(http_parser *p) {
  tc_parse *tp = p->data;
  tc_resp *r = &tp->out[tp->done];
  if (!r->body) r->body = calloc(1, 1);
  r->complete = 1;
  tp->done++;
  /* Stop after the last wanted response: anything after it is not ours to parse. */
  if (tp->done >= tp->max) http_parser_pause(p, 1);
  return 0;
}

/* Reads N responses from FD (within TIMEOUT_MS overall). Returns how many were complete;
 * sets *EOF_SEEN (may be NULL) when the server closed. */
TC_FN int tc_read(int fd, tc_resp *out, int n, int timeout_ms, int *eof_seen) {
  http_parser_settings s = {0};
  s.on_header_field = on_tc_header_field;
  s.on_header_value = on_tc_header_value;
  s.on_headers_complete = on_tc_headers_complete;
  s.on_body = on_tc_body;
  s.on_message_complete = on_tc_message_complete;
  http_parser p;
  http_parser_init(&p, HTTP_RESPONSE);
  tc_parse tp = {.out = out, .max = n};
  p.data = &tp;
  memset(out, 0, sizeof(*out) * (size_t)n);
  if (eof_seen) *eof_seen = 0;
  long long deadline = kpi_it_now_ms() + timeout_ms;
  char buf[65536];
  while (tp.done < n) {
    long long left = deadline - kpi_it_now_ms();
    if (left <= 0) break;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)left) <= 0) break;
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r <= 0) {
      if (eof_seen) *eof_seen = 1;
      http_parser_execute(&p, &s, NULL, 0);
      break;
    }
    http_parser_execute(&p, &s, buf, (size_t)r);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_PAUSED) break;
  }
  /* A response cut short (timeout, close) is not returned: release what it had so far, since
   * callers free only the complete ones. */
  if (tp.done < n) tc_resp_free(&out[tp.done]);
  return tp.done;
}

/* True when FD is closed by the peer within TIMEOUT_MS (EOF or reset). */
TC_FN int tc_wait_eof(int fd, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  char buf[4096];
  while (kpi_it_now_ms() < deadline) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)(deadline - kpi_it_now_ms())) <= 0) return 0;
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r <= 0) return 1;
  }
  return 0;
}

TC_FN const char *tc_header(const tc_resp *r, const char *name) {
  static char val[512];
  size_t nl = strlen(name);
  const char *p = r->headers;
  while (*p) {
    const char *eol = strchr(p, '\n');
    if (!eol) break;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      size_t vl = (size_t)(eol - (p + nl + 2));
      if (vl >= sizeof(val)) vl = sizeof(val) - 1;
      memcpy(val, p + nl + 2, vl);
      val[vl] = '\0';
      return val;
    }
    p = eol + 1;
  }
  return NULL;
}

TC_FN int tc_connect(int port) {
  int fd = kpi_it_connect(port, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

TC_FN int tc_write(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, data, len);
    if (w <= 0) return -1;
    data += w;
    len -= (size_t)w;
  }
  return 0;
}

/* Formats one request into a malloc'd string: METHOD PATH, the extra HEADERS (each line
 * ending in "\r\n", may be NULL), and BODY (NULL: none) with its Content-Length. */
TC_FN char *tc_format(const char *method, const char *path, const char *headers,
                       const char *body) {
  size_t blen = body ? strlen(body) : 0;
  size_t cap = strlen(path) + (headers ? strlen(headers) : 0) + blen + 256;
  char *req = malloc(cap);
  int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: test\r\n%s", method, path,
                   headers ? headers : "");
  if (body) n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", blen);
  n += snprintf(req + n, cap - (size_t)n, "\r\n");
  if (body) memcpy(req + n, body, blen + 1);
  return req;
}

/* One request on a new connection; fills R. Returns 0 when a full response came. */
TC_FN int tc_request(int port, const char *method, const char *path, const char *headers,
                      const char *body, tc_resp *r) {
  int fd = tc_connect(port);
  if (fd < 0) return -1;
  char *req = tc_format(method, path, headers, body);
  int rc = tc_write(fd, req, strlen(req));
  free(req);
  if (rc == 0) rc = tc_read(fd, r, 1, 30000, NULL) == 1 ? 0 : -1;
  close(fd);
  return rc;
}

/* ---- problem+json ---- */

/* Checks R is an RFC 9457 problem with STATUS; returns the parsed document (caller frees). */
TC_FN cJSON *tc_problem(const tc_resp *r, int status) {
  if (r->status != status) fail_msg("expected %d, got %d: %s", status, r->status, r->body);
  const char *ct = tc_header(r, "content-type");
  if (!ct || strcmp(ct, "application/problem+json") != 0)
    fail_msg("status %d: content-type %s", status, ct ? ct : "(none)");
  cJSON *doc = cJSON_Parse(r->body);
  if (!doc) fail_msg("status %d: body is not JSON: %s", status, r->body);
  cJSON *st = cJSON_GetObjectItem(doc, "status");
  assert_true(cJSON_IsNumber(st));
  assert_int_equal(st->valueint, status);
  assert_true(cJSON_IsString(cJSON_GetObjectItem(doc, "title")));
  assert_true(cJSON_IsString(cJSON_GetObjectItem(doc, "type")));
  return doc;
}

/* True when the problem's errors[] (or ERRORS itself when given an array) names FIELD with
 * CODE (CODE NULL: any). */
TC_FN int tc_has_error(const cJSON *doc_or_errors, const char *field, const char *code) {
  const cJSON *errs = cJSON_IsArray(doc_or_errors)
                          ? doc_or_errors
                          : cJSON_GetObjectItem(doc_or_errors, "errors");
  const cJSON *e;
  cJSON_ArrayForEach(e, errs) {
    const cJSON *f = cJSON_GetObjectItem(e, "field"), *c = cJSON_GetObjectItem(e, "code");
    if (cJSON_IsString(f) && strcmp(f->valuestring, field) == 0 &&
        (!code || (cJSON_IsString(c) && strcmp(c->valuestring, code) == 0)))
      return 1;
  }
  return 0;
}

TC_FN void tc_expect_problem(const tc_resp *r, int status, const char *field, const char *code) {
  cJSON *doc = tc_problem(r, status);
  if (field && !tc_has_error(doc, field, code))
    fail_msg("status %d: no error for field '%s' code '%s': %s", status, field,
             code ? code : "*", r->body);
  cJSON_Delete(doc);
}

/* ---- Kafka: read a whole topic back ---- */

typedef struct {
  char key[128];
  char *value;
  int32_t partition;
  int64_t offset;
} tc_record;

TC_FN void tc_records_free(tc_record *recs, int n) {
  for (int i = 0; i < n; i++) free(recs[i].value);
  free(recs);
}

/* Reads every record present in TOPIC (NPARTS partitions) right now: the high watermarks are
 * taken first, then each partition is read up to them. Returns the count and *OUT. */
TC_FN int tc_read_topic(const char *topic, int nparts, tc_record **out) {
  char err[512];
  static const char *const kv[] = {"group.id", "it-ingest-unused", "enable.auto.commit", "false",
                                   NULL};
  rd_kafka_conf_t *conf = kpi_it_kafka_conf("it-ingest-reader", kv, err, sizeof(err));
  if (!conf) fail_msg("reader conf: %s", err);
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  assert_non_null(c);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nparts);
  int64_t *high = calloc((size_t)nparts, sizeof(int64_t));
  int64_t total = 0;
  for (int p = 0; p < nparts; p++) {
    int64_t lo = 0, hi = 0;
    /* A topic made moments ago may not have its leader known yet ("Not leader for
     * partition"): such errors are retried for a while, as any client would. */
    rd_kafka_resp_err_t e;
    long long until = kpi_it_now_ms() + 15000;
    while ((e = rd_kafka_query_watermark_offsets(c, topic, p, &lo, &hi, 10000)) != 0 &&
           (e == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
            e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
            e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) &&
           kpi_it_now_ms() < until)
      kpi_it_sleep_ms(100);
    if (e) fail_msg("watermarks %s/%d: %s", topic, p, rd_kafka_err2str(e));
    high[p] = hi;
    total += hi - lo;
    if (hi > lo) rd_kafka_topic_partition_list_add(parts, topic, p)->offset = lo;
  }
  tc_record *recs = calloc((size_t)total + 1, sizeof(tc_record));
  int n = 0;
  if (parts->cnt > 0) {
    assert_int_equal(rd_kafka_assign(c, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    long long deadline = kpi_it_now_ms() + 30000;
    while (n < total && kpi_it_now_ms() < deadline) {
      rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
      if (!m) continue;
      if (!m->err && m->offset < high[m->partition]) {
        tc_record *r = &recs[n++];
        snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len, (const char *)m->key);
        r->value = strndup(m->payload, m->len);
        r->partition = m->partition;
        r->offset = m->offset;
      }
      rd_kafka_message_destroy(m);
    }
  }
  assert_int_equal(n, total);
  rd_kafka_topic_partition_list_destroy(parts);
  free(high);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  *out = recs;
  return n;
}

/* The record with EVENT_ID, or NULL. */
TC_FN const tc_record *tc_find_event(const tc_record *recs, int n, const char *event_id) {
  for (int i = 0; i < n; i++) {
    kpi_measurement m;
    kpi_errors errs = {0};
    if (kpi_measurement_parse(recs[i].value, strlen(recs[i].value), KPI_PARSE_RECORD, &m,
                              &errs) == 0 &&
        strcmp(m.event_id, event_id) == 0)
      return &recs[i];
  }
  return NULL;
}

/* ---- the service ---- */

typedef struct {
  pid_t pid;
  int port;
  char topic[128];
  char log[256];
} tc_service;

/* Starts kpi-ingest on a free port with its own topic plus EXTRA (NULL-terminated
 * "KEY=VALUE" list, may be NULL) and waits for /healthz. With WAIT_READY it also waits for
 * /readyz. */
TC_FN void tc_service_start(tc_service *svc, const char *const *extra, int wait_ready) {
  kpi_it_env env = {0};
  svc->port = kpi_it_free_port();
  kpi_it_unique("it_ingest", svc->topic, sizeof(svc->topic));
  snprintf(svc->log, sizeof(svc->log), "%s/%s.log", KPI_BINARY_DIR, svc->topic);
  kpi_it_env_add(&env, "KPI_INGEST_LISTEN=127.0.0.1:%d", svc->port);
  kpi_it_env_add(&env, "KPI_TOPIC_MEASUREMENTS=%s", svc->topic);
  kpi_it_env_add(&env, "KPI_TOPIC_MEASUREMENTS_DLQ=%s_dlq", svc->topic);
  kpi_it_env_add(&env, "KPI_TOPIC_ALERTS=%s_alerts", svc->topic);
  kpi_it_env_add(&env, "KPI_TOPIC_ALERTS_DLQ=%s_alerts_dlq", svc->topic);
  kpi_it_env_extend(&env, extra);
  svc->pid = kpi_it_spawn("services/ingest/kpi-ingest", kpi_it_env_list(&env), svc->log);
  assert_true(svc->pid > 0);
  if (kpi_it_wait_http(svc->port, "/healthz", 200, 20000) != 0)
    fail_msg("kpi-ingest did not come up; see %s", svc->log);
  if (wait_ready && kpi_it_wait_http(svc->port, "/readyz", 200, 30000) != 0)
    fail_msg("kpi-ingest not ready; see %s", svc->log);
}

/* SIGTERM, and checks the service drained and exited 0. */
TC_FN void tc_service_stop(tc_service *svc) {
  int status = kpi_it_stop(svc->pid, SIGTERM, 30000);
  if (!(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0))
    fail_msg("kpi-ingest did not exit 0 on SIGTERM (status %d); see %s", status, svc->log);
  svc->pid = 0;
}

/* An Authorization header line for department DEPT ("KANKYO"...) from the sample tokens. */
TC_FN const char *tc_auth(const char *dept) {
  static char line[4][256];
  static int next;
  char var[64];
  snprintf(var, sizeof(var), "KPI_TOKEN_%s", dept);
  const char *tok = getenv(var);
  if (!tok) fail_msg("%s not set (config/sample-tokens.env)", var);
  char *l = line[next++ % 4];
  snprintf(l, sizeof(line[0]), "Authorization: Bearer %s\r\n", tok);
  return l;
}

#endif
