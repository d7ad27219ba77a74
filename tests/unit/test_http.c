/* test_http.c: kpi_http over real sockets on 127.0.0.1: limits, timeouts, pipelining, close. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "kpi_http.h"

/* The server's loop runs on its own thread so that the test body (main thread, where
 * cmocka's asserts must run) can use plain blocking sockets as the client. The main thread
 * touches the loop only through uv_async_send (fixture_call). */

typedef enum { MODE_ECHO, MODE_REVERSE, MODE_DELAYED, MODE_HOLD } handler_mode;

typedef struct fixture fixture;
typedef void (*loop_fn)(fixture *fx);

struct fixture {
  uv_loop_t loop;
  kpi_http_server srv;
  uv_async_t cmd_async;
  uv_timer_t answer_timer;
  sem_t cmd_done;
  loop_fn cmd;
  pthread_t thread;
  int port;
  handler_mode mode;
  kpi_http_request *held[16];
  int n_held;
  /* Loop-thread counters, read by the main thread only after the join. */
  int requests_seen;
  int last_route;
  int orphaned_answers;
  int closed_calls;
  int loop_close_rc;
};

/* ---- loop side ---- */

static void answer(kpi_http_request *req) {
  char body[512];
  size_t blen = 0;
  const char *b = kpi_http_request_body(req, &blen);
  const char *xt = kpi_http_header(req, "x-test");
  int n = snprintf(body, sizeof body, "%s %s %s h=%s len=%zu:%.*s", kpi_http_request_method(req),
                   kpi_http_request_path(req), kpi_http_request_query(req), xt ? xt : "-", blen,
                   (int)(blen < 200 ? blen : 200), b);
  kpi_http_respond(req, 200, "text/plain", body, (size_t)n, "X-Served: yes\r\n");
}

static void on_uv_answer_timer(uv_timer_t *t) {
  fixture *fx = t->data;
  if (fx->mode == MODE_REVERSE) {
    for (int i = fx->n_held - 1; i >= 0; i--) answer(fx->held[i]);
  } else {
    for (int i = 0; i < fx->n_held; i++) {
      if (kpi_http_request_orphaned(fx->held[i])) fx->orphaned_answers++;
      answer(fx->held[i]);
    }
  }
  fx->n_held = 0;
}

static void on_http_request(kpi_http_request *req, void *opaque) {
  fixture *fx = opaque;
  fx->requests_seen++;
  fx->last_route = kpi_http_request_route(req);
  const char *path = kpi_http_request_path(req);
  if (strcmp(path, "/big") == 0) {
    /* A response far larger than the socket buffers, for the write timeout. */
    size_t n = strtoul(kpi_http_request_query(req), NULL, 10);
    char *big = malloc(n);
    memset(big, 'x', n);
    kpi_http_respond(req, 200, "text/plain", big, n, NULL);
    free(big);
    return;
  }
  if (strcmp(path, "/hold") == 0) {
    fx->held[fx->n_held++] = req;
    return;
  }
  if (strcmp(path, "/problem") == 0) {
    cJSON *errors = cJSON_CreateArray();
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "field", "value");
    cJSON_AddItemToArray(errors, item);
    kpi_http_respond_problem_ex(req, 429, NULL, NULL, "slow down", errors, "Retry-After: 1");
    return;
  }
  if (strcmp(path, "/nocontent") == 0) {
    kpi_http_respond(req, 204, NULL, NULL, 0, NULL);
    return;
  }
  switch (fx->mode) {
  case MODE_ECHO:
    answer(req);
    break;
  case MODE_REVERSE:
    fx->held[fx->n_held++] = req;
    if (fx->n_held == 3) uv_timer_start(&fx->answer_timer, on_uv_answer_timer, 20, 0);
    break;
  case MODE_DELAYED:
    fx->held[fx->n_held++] = req;
    uv_timer_start(&fx->answer_timer, on_uv_answer_timer, 300, 0);
    break;
  case MODE_HOLD:
    fx->held[fx->n_held++] = req;
    break;
  }
}

static void on_srv_closed(kpi_http_server *srv) {
  fixture *fx = srv->data;
  fx->closed_calls++;
  /* Requests still held are orphans now; answering them must just free them. */
  for (int i = 0; i < fx->n_held; i++) {
    if (kpi_http_request_orphaned(fx->held[i])) fx->orphaned_answers++;
    answer(fx->held[i]);
  }
  fx->n_held = 0;
}

static void cmd_close_all(fixture *fx) {
  kpi_http_server_close(&fx->srv, on_srv_closed);
  uv_close((uv_handle_t *)&fx->answer_timer, NULL);
  uv_close((uv_handle_t *)&fx->cmd_async, NULL);
}

static void cmd_stop_accepting(fixture *fx) { kpi_http_server_stop_accepting(&fx->srv); }

/* Copied on the loop thread, so the main thread reads a consistent snapshot. */
static kpi_http_stats stats_snapshot;
static void cmd_snapshot(fixture *fx) { stats_snapshot = fx->srv.stats; }

static void on_uv_cmd(uv_async_t *a) {
  fixture *fx = a->data;
  loop_fn fn = fx->cmd;
  fx->cmd = NULL;
  if (fn) fn(fx);
  sem_post(&fx->cmd_done);
}

static void *loop_thread(void *arg) {
  fixture *fx = arg;
  uv_run(&fx->loop, UV_RUN_DEFAULT);
  fx->loop_close_rc = uv_loop_close(&fx->loop);
  return NULL;
}

static void fixture_call(fixture *fx, loop_fn fn) {
  fx->cmd = fn;
  uv_async_send(&fx->cmd_async);
  sem_wait(&fx->cmd_done);
}

static fixture *fixture_start_routes(const kpi_http_config *cfg, handler_mode mode,
                                     const kpi_http_route *routes, size_t n_routes) {
  fixture *fx = calloc(1, sizeof(*fx));
  assert_non_null(fx);
  fx->mode = mode;
  assert_int_equal(uv_loop_init(&fx->loop), 0);
  fx->srv.data = fx;
  assert_int_equal(kpi_http_server_init(&fx->srv, &fx->loop, cfg, on_http_request, fx), 0);
  if (routes) assert_int_equal(kpi_http_server_set_routes(&fx->srv, routes, n_routes), 0);
  assert_ptr_equal(fx->srv.data, fx);
  assert_int_equal(kpi_http_server_port(&fx->srv), KPI_HTTP_ESTATE);
  assert_int_equal(kpi_http_server_start(&fx->srv, "127.0.0.1", 0), 0);
  fx->port = kpi_http_server_port(&fx->srv);
  assert_true(fx->port > 0);
  uv_async_init(&fx->loop, &fx->cmd_async, on_uv_cmd);
  fx->cmd_async.data = fx;
  uv_timer_init(&fx->loop, &fx->answer_timer);
  fx->answer_timer.data = fx;
  sem_init(&fx->cmd_done, 0, 0);
  assert_int_equal(pthread_create(&fx->thread, NULL, loop_thread, fx), 0);
  return fx;
}

static fixture *fixture_start(const kpi_http_config *cfg, handler_mode mode) {
  return fixture_start_routes(cfg, mode, NULL, 0);
}

/* Closes everything, joins the loop thread and checks the loop closed clean. The fixture
 * stays readable (stats, counters) until fixture_free. */
static void fixture_stop(fixture *fx) {
  fixture_call(fx, cmd_close_all);
  pthread_join(fx->thread, NULL);
  assert_int_equal(fx->closed_calls, 1);
  assert_int_equal(fx->loop_close_rc, 0);
  assert_int_equal(fx->srv.stats.connections_active, 0);
}

static void fixture_free(fixture *fx) {
  sem_destroy(&fx->cmd_done);
  free(fx);
}

static kpi_http_config test_config(void) {
  kpi_http_config cfg;
  kpi_http_config_defaults(&cfg);
  cfg.max_body_bytes = 1024;
  cfg.max_header_bytes = 2048;
  cfg.max_headers = 10;
  cfg.header_timeout_ms = 5000;
  return cfg;
}

/* ---- client side (main thread) ---- */

typedef struct {
  int fd;
  size_t len;
  char buf[1 << 16];
} client;

typedef struct {
  int status;
  char head[4096];
  char body[8192];
  size_t body_len;
} response;

/* A client from the loopback address FROM (e.g. "127.0.0.2"; NULL: the kernel's choice) with
 * a receive buffer of RCVBUF bytes (0: the default). */
static client *client_open_ex(int port, const char *from, int rcvbuf) {
  client *c = calloc(1, sizeof(*c));
  assert_non_null(c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(c->fd >= 0);
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (rcvbuf > 0) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (from) {
    struct sockaddr_in local = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, from, &local.sin_addr), 1);
    assert_int_equal(bind(c->fd, (struct sockaddr *)&local, sizeof local), 0);
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return c;
}

static client *client_open(int port) { return client_open_ex(port, NULL, 0); }

static void client_close(client *c) {
  close(c->fd);
  free(c);
}

/* Closes with RST rather than FIN, like a crashed or impatient client. */
static void client_abort(client *c) {
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  client_close(c);
}

static void client_send(client *c, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n <= 0) return; /* the server may have closed; the reads tell */
    data += n;
    len -= (size_t)n;
  }
}

static void client_sends(client *c, const char *s) { client_send(c, s, strlen(s)); }

/* >0 bytes read, 0 EOF, -1 timeout or error. */
static int client_fill(client *c, int timeout_ms) {
  struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
  if (poll(&pfd, 1, timeout_ms) <= 0) return -1;
  if (c->len == sizeof c->buf) return -1;
  ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
  if (n < 0) return -1;
  c->len += (size_t)n;
  return (int)n;
}

/* Reads one response; IS_HEAD: no body follows whatever Content-Length says. */
static int client_response(client *c, response *r, int is_head) {
  memset(r, 0, sizeof(*r));
  char *end;
  while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
    if (client_fill(c, 5000) <= 0) return -1;
  size_t head_len = (size_t)(end - c->buf) + 4;
  if (head_len >= sizeof r->head) return -1;
  memcpy(r->head, c->buf, head_len);
  if (sscanf(r->head, "HTTP/1.1 %d", &r->status) != 1) return -1;
  const char *cl = strcasestr(r->head, "\r\nContent-Length:");
  size_t body_len = cl && !is_head ? strtoul(cl + 17, NULL, 10) : 0;
  if (body_len >= sizeof r->body) return -1;
  while (c->len < head_len + body_len)
    if (client_fill(c, 5000) <= 0) return -1;
  memcpy(r->body, c->buf + head_len, body_len);
  r->body_len = body_len;
  memmove(c->buf, c->buf + head_len + body_len, c->len - head_len - body_len);
  c->len -= head_len + body_len;
  return 0;
}

static int client_at_eof(client *c) {
  if (c->len > 0) return 0;
  for (;;) {
    int n = client_fill(c, 3000);
    if (n == 0) return 1;
    if (n < 0) return 0;
    c->len = 0; /* discard anything after the last response */
  }
}

static void expect_response(client *c, int status, const char *body_prefix) {
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_int_equal(r.status, status);
  if (body_prefix) {
    if (strncmp(r.body, body_prefix, strlen(body_prefix)) != 0)
      fail_msg("body \"%s\" does not start with \"%s\"", r.body, body_prefix);
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- tests ---- */

static void test_simple_get(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open(fx->port);
  client_sends(c, "GET /v1/x?a=1&b=2 HTTP/1.1\r\nHost: t\r\nX-Test:  hello  \r\n\r\n");
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body, "GET /v1/x a=1&b=2 h=hello len=0:");
  assert_non_null(strstr(r.head, "Content-Type: text/plain\r\n"));
  assert_non_null(strstr(r.head, "X-Served: yes\r\n"));
  assert_null(strstr(r.head, "Connection:"));
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.requests, 1);
  assert_int_equal(fx->srv.stats.responses[2], 1);
  fixture_free(fx);
}

/* Each step is one request on the same connection, sent after the previous answer. */
static void test_keep_alive(void **state) {
  (void)state;
  static const struct {
    const char *request;
    int is_head, status;
    const char *body, *conn_header; /* conn_header NULL: must be absent */
  } steps[] = {
      {"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n", 0, 200, "GET /1  h=- len=0:", NULL},
      {"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 0, 200,
       "POST /2  h=- len=3:abc", NULL},
      {"HEAD /3 HTTP/1.1\r\nHost: t\r\n\r\n", 1, 200, "", NULL},
      {"GET /nocontent HTTP/1.1\r\nHost: t\r\n\r\n", 0, 204, "", NULL},
      {"GET /problem HTTP/1.1\r\nHost: t\r\n\r\n", 0, 429,
       "{\"type\":\"about:blank\",\"title\":\"Too Many Requests\",\"status\":429,"
       "\"detail\":\"slow down\",\"errors\":[{\"field\":\"value\"}]}",
       NULL},
      {"GET /http://x HTTP/1.1\r\nHost: t\r\n\r\n", 0, 200, "GET /http://x  h=- len=0:", NULL},
      {"GET http://example.org/abs?q=1 HTTP/1.1\r\nHost: t\r\n\r\n", 0, 200,
       "GET /abs q=1 h=- len=0:", NULL},
  };
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open(fx->port);
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    client_sends(c, steps[i].request);
    response r;
    assert_int_equal(client_response(c, &r, steps[i].is_head), 0);
    assert_int_equal(r.status, steps[i].status);
    assert_string_equal(r.body, steps[i].body);
    if (steps[i].is_head) assert_non_null(strstr(r.head, "Content-Length: 19\r\n"));
    if (steps[i].status == 204) assert_null(strstr(r.head, "Content-Length"));
    if (steps[i].status == 429) {
      assert_non_null(strstr(r.head, "Content-Type: application/problem+json\r\n"));
      assert_non_null(strstr(r.head, "Retry-After: 1\r\n"));
    }
    assert_null(strstr(r.head, "Connection:"));
  }
  /* HTTP/1.0 keeps the connection only when asked, and is told so. */
  client_sends(c, "GET /10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_non_null(strstr(r.head, "Connection: keep-alive\r\n"));
  client_sends(c, "GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_non_null(strstr(r.head, "Connection: close\r\n"));
  assert_true(client_at_eof(c));
  client_close(c);

  c = client_open(fx->port);
  client_sends(c, "GET /10 HTTP/1.0\r\n\r\n");
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_non_null(strstr(r.head, "Connection: close\r\n"));
  assert_true(client_at_eof(c));
  client_close(c);

  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.connections_accepted, 2);
  kpi_metrics *m = kpi_metrics_new();
  assert_int_equal(kpi_http_server_export_metrics(&fx->srv, m), 0);
  char *text = NULL;
  assert_int_equal(kpi_metrics_render(m, &text, NULL), 0);
  assert_non_null(strstr(text, "kpi_http_responses_total{class=\"2xx\"} 9\n"));
  assert_non_null(strstr(text, "kpi_http_responses_total{class=\"4xx\"} 1\n"));
  assert_non_null(strstr(text, "kpi_http_connections_active 0\n"));
  free(text);
  kpi_metrics_free(m);
  fixture_free(fx);
}

static void test_pipelining_answers_in_request_order(void **state) {
  (void)state;
  static const handler_mode modes[] = {MODE_ECHO, MODE_REVERSE};
  for (size_t i = 0; i < 2; i++) {
    fixture *fx = fixture_start(NULL, modes[i]);
    client *c = client_open(fx->port);
    client_sends(c, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
                    "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nxy"
                    "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_response(c, 200, "GET /a ");
    expect_response(c, 200, "POST /b  h=- len=2:xy");
    expect_response(c, 200, "GET /c ");
    client_close(c);
    fixture_stop(fx);
    assert_int_equal(fx->requests_seen, 3);
    fixture_free(fx);
  }
}

/* More pipelined requests than max_pipelined: reading pauses, then resumes as answers go. */
static void test_pipelining_backpressure(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.max_pipelined = 2;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *c = client_open(fx->port);
  char req[8192] = "";
  for (int i = 0; i < 40; i++) {
    char one[64];
    snprintf(one, sizeof one, "GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    strcat(req, one);
  }
  client_sends(c, req);
  for (int i = 0; i < 40; i++) {
    char want[32];
    snprintf(want, sizeof want, "GET /p%d ", i);
    expect_response(c, 200, want);
  }
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 40);
  fixture_free(fx);
}

/* The bound holds when requests arrive one read at a time, too: a client that pipelines
 * slowly (one request per segment, each held by the handler) must not get more than
 * max_pipelined of them parsed and held, or each would pin its request and body. */
static void test_pipelining_bound_one_read_at_a_time(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.max_pipelined = 2;
  fixture *fx = fixture_start(&cfg, MODE_HOLD);
  client *c = client_open(fx->port);
  for (int i = 0; i < 6; i++) {
    char one[64];
    snprintf(one, sizeof one, "GET /s%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
    client_sends(c, one);
    usleep(30 * 1000); /* its own read on the server */
  }
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 2);
  assert_int_equal(fx->orphaned_answers, 2);
  client_close(c);
  fixture_free(fx);
}

static void test_chunked_body(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open(fx->port);
  client_sends(c, "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
  expect_response(c, 200, "POST /c  h=- len=11:hello world");
  client_close(c);
  fixture_stop(fx);
  fixture_free(fx);
}

static void test_expect_continue(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *c = client_open(fx->port);
  client_sends(c, "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  "Expect: 100-continue\r\n\r\n");
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_int_equal(r.status, 100);
  client_sends(c, "hello");
  expect_response(c, 200, "POST /e  h=- len=5:hello");
  client_close(c);

  /* Too large: refused at once, no 100, and the connection ends. */
  c = client_open(fx->port);
  client_sends(c, "POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                  "Expect: 100-continue\r\n\r\n");
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_int_equal(r.status, 413);
  assert_non_null(strstr(r.head, "Connection: close\r\n"));
  assert_true(client_at_eof(c));
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 1);
  fixture_free(fx);
}

/* Requests the server must refuse, each on a fresh connection, answered with a problem
 * document and then closed. */
static void test_refused_requests(void **state) {
  (void)state;
  static char big_header[4096];
  memset(big_header, 0, sizeof big_header);
  strcpy(big_header, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ");
  memset(big_header + strlen(big_header), 'a', 3000);
  strcat(big_header, "\r\n\r\n");
  static char many_headers[4096];
  strcpy(many_headers, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < 20; i++) {
    char h[32];
    snprintf(h, sizeof h, "X-H%d: v\r\n", i);
    strcat(many_headers, h);
  }
  strcat(many_headers, "\r\n");
  static char long_chunks[4096];
  strcpy(long_chunks, "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "258\r\n"); /* 600 bytes, twice: past the 1024-byte limit */
  memset(long_chunks + strlen(long_chunks), 'b', 600);
  strcat(long_chunks, "\r\n258\r\n");
  memset(long_chunks + strlen(long_chunks), 'c', 600);
  strcat(long_chunks, "\r\n0\r\n\r\n");
  const struct {
    const char *name, *request;
    int status;
  } cases[] = {
      {"content-length too large",
       "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n", 413},
      {"chunked body too large", long_chunks, 413},
      {"too many headers", many_headers, 431},
      {"header bytes too large", big_header, 431},
      {"header line without colon", "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n", 400},
      {"garbage", "\x01\x02 nonsense\r\n\r\n", 400},
      {"bad version", "GET / HTTP/9.x\r\n\r\n", 400},
      {"both length and chunked",
       "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
       "3\r\nabc\r\n0\r\n\r\n",
       400},
      {"bad chunk size", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       400},
  };
  kpi_http_config cfg = test_config();
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    client *c = client_open(fx->port);
    client_sends(c, cases[i].request);
    response r;
    if (client_response(c, &r, 0) != 0) fail_msg("%s: no response", cases[i].name);
    if (r.status != cases[i].status)
      fail_msg("%s: status %d, expected %d", cases[i].name, r.status, cases[i].status);
    assert_non_null(strstr(r.head, "Content-Type: application/problem+json\r\n"));
    assert_non_null(strstr(r.head, "Connection: close\r\n"));
    cJSON *doc = cJSON_ParseWithLength(r.body, r.body_len);
    assert_non_null(doc);
    assert_int_equal(cJSON_GetObjectItem(doc, "status")->valueint, cases[i].status);
    assert_string_equal(cJSON_GetObjectItem(doc, "type")->valuestring, "about:blank");
    cJSON_Delete(doc);
    if (!client_at_eof(c)) fail_msg("%s: connection left open", cases[i].name);
    client_close(c);
  }
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 0);
  fixture_free(fx);
}

/* Every request fed one byte per write must parse exactly as when sent whole. */
static void test_byte_by_byte(void **state) {
  (void)state;
  static const struct {
    const char *request, *body;
  } cases[] = {
      {"GET /b?x=1 HTTP/1.1\r\nHost: t\r\nX-Test: split\r\n\r\n", "GET /b x=1 h=split len=0:"},
      {"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
       "POST /p  h=- len=5:hello"},
      {"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n"
       "0\r\n\r\n",
       "POST /c  h=- len=5:abcde"},
  };
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open(fx->port);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *s = cases[i].request;
    for (size_t k = 0; s[k]; k++) {
      client_send(c, s + k, 1);
      usleep(500); /* let each byte arrive as its own read */
    }
    expect_response(c, 200, cases[i].body);
  }
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 3);
  fixture_free(fx);
}

static void test_slow_header_client_cut_off(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.header_timeout_ms = 200;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  double t0 = now_ms();
  client *slow = client_open(fx->port);
  client_sends(slow, "GET /slow HTTP/1.1\r\nHost: t\r\n");
  /* Another client is served while the slow one trickles. */
  client *fast = client_open(fx->port);
  client_sends(fast, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(fast, 200, "GET /fast ");
  struct pollfd pfd = {.fd = slow->fd, .events = POLLIN};
  while (poll(&pfd, 1, 50) == 0 && now_ms() - t0 < 3000) client_sends(slow, "X-T: 1\r\n");
  double elapsed = now_ms() - t0;
  response r;
  assert_int_equal(client_response(slow, &r, 0), 0);
  assert_int_equal(r.status, 408);
  assert_true(client_at_eof(slow));
  assert_true(elapsed >= 150 && elapsed < 1500);
  client_close(slow);
  /* The fast client's connection is unaffected. */
  client_sends(fast, "GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(fast, 200, "GET /again ");
  client_close(fast);
  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.timeouts_header, 1);
  fixture_free(fx);
}

static void test_idle_timeout_closes(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.idle_timeout_ms = 100;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *c = client_open(fx->port);
  client_sends(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(c, 200, "GET / ");
  assert_true(client_at_eof(c));
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.timeouts_idle, 1);
  fixture_free(fx);
}

static void test_max_connections(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.max_connections = 2;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *a = client_open(fx->port), *b = client_open(fx->port);
  client_sends(a, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
  client_sends(b, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(a, 200, "GET /a ");
  expect_response(b, 200, "GET /b ");
  client *c = client_open(fx->port);
  expect_response(c, 503, "{\"type\":\"about:blank\"");
  assert_true(client_at_eof(c));
  client_close(c);
  client_close(a);
  client_close(b);
  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.connections_rejected, 1);
  fixture_free(fx);
}

/* Loop-side reads for the main thread (through fixture_call, so no race on the counters). */
static int seen_snapshot;
static void cmd_seen(fixture *fx) {
  seen_snapshot = fx->requests_seen;
  stats_snapshot = fx->srv.stats;
}
static void cmd_answer_held(fixture *fx) {
  for (int i = 0; i < fx->n_held; i++) {
    if (kpi_http_request_orphaned(fx->held[i])) fx->orphaned_answers++;
    answer(fx->held[i]);
  }
  fx->n_held = 0;
  fx->mode = MODE_ECHO;
}

/* Waits (up to 3 s) until the loop has seen N requests and has at most ACTIVE connections. */
static void wait_loop(fixture *fx, int n, uint64_t active) {
  double t0 = now_ms();
  do {
    fixture_call(fx, cmd_seen);
    if (seen_snapshot >= n && stats_snapshot.connections_active <= active) return;
    usleep(5 * 1000);
  } while (now_ms() - t0 < 3000);
}

/* The handler answers later; meanwhile the client vanished (RST, or FIN). The answer is given
 * only once the server has seen the requests and the reset, so the order does not depend on
 * how fast the machine is. */
static void test_client_gone_before_async_answer(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_HOLD);
  client *c = client_open(fx->port);
  client_sends(c, "GET /gone HTTP/1.1\r\nHost: t\r\n\r\n");
  wait_loop(fx, 1, 1);
  client_abort(c);
  wait_loop(fx, 1, 0); /* the reset is seen: the request is an orphan now */
  c = client_open(fx->port);
  client_sends(c, "GET /halfgone HTTP/1.1\r\nHost: t\r\n\r\n");
  wait_loop(fx, 2, 1);
  client_close(c);
  fixture_call(fx, cmd_answer_held);
  /* The server keeps serving: this one gets its answer. */
  c = client_open(fx->port);
  client_sends(c, "GET /alive HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(c, 200, "GET /alive ");
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 3);
  assert_true(fx->orphaned_answers >= 1); /* the RST one at least */
  fixture_free(fx);
}

/* Closing the server while the handler still holds requests orphans them; answering them
 * later (in the close callback here) only frees them. */
static void test_close_with_requests_in_flight(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_HOLD);
  client *c = client_open(fx->port);
  client_sends(c, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "POST /3 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
  usleep(100 * 1000);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 2);
  assert_int_equal(fx->orphaned_answers, 2);
  assert_true(client_at_eof(c));
  client_close(c);
  fixture_free(fx);
}

/* stop_accepting: the held request is still answered (with Connection: close), idle
 * connections are closed, new connections are refused. */
static void test_stop_accepting_drains(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_DELAYED);
  client *busy = client_open(fx->port);
  client *idle = client_open(fx->port);
  client_sends(idle, "GET /idle HTTP/1.1\r\nHost: t\r\n\r\n");
  usleep(20 * 1000);
  client_sends(busy, "GET /busy HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(idle, 200, "GET /idle "); /* both answered by the same timer */
  response r;
  assert_int_equal(client_response(busy, &r, 0), 0);
  client_sends(busy, "GET /busy2 HTTP/1.1\r\nHost: t\r\n\r\n");
  usleep(50 * 1000);
  fixture_call(fx, cmd_stop_accepting);
  assert_true(client_at_eof(idle));
  assert_int_equal(client_response(busy, &r, 0), 0);
  assert_string_equal(r.body, "GET /busy2  h=- len=0:");
  assert_non_null(strstr(r.head, "Connection: close\r\n"));
  assert_true(client_at_eof(busy));
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx->port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_not_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  close(fd);
  client_close(idle);
  client_close(busy);
  fixture_stop(fx);
  fixture_free(fx);
}

static void test_config_from_env(void **state) {
  (void)state;
  static const struct {
    const char *name, *value;
    int rc;
  } cases[] = {
      {"KPI_HTTP_MAX_BODY", "2048", 0},         {"KPI_HTTP_MAX_BODY", "0", -1},
      {"KPI_HTTP_MAX_BODY", "12k", -1},         {"KPI_HTTP_MAX_BODY", "-5", -1},
      {"KPI_HTTP_MAX_HEADERS", "", -1},         {"KPI_HTTP_IDLE_TIMEOUT_MS", "1500", 0},
      {"KPI_HTTP_MAX_CONNECTIONS", "99999999999999999999999", -1},
      {"KPI_HTTP_MAX_CONNECTIONS_PER_PEER", "0", -1},
      {"KPI_HTTP_WRITE_TIMEOUT_MS", "x", -1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kpi_http_config cfg;
    kpi_http_config_defaults(&cfg);
    setenv(cases[i].name, cases[i].value, 1);
    assert_int_equal(kpi_http_config_from_env(&cfg), cases[i].rc);
    unsetenv(cases[i].name);
  }
  kpi_http_config cfg;
  kpi_http_config_defaults(&cfg);
  setenv("KPI_HTTP_MAX_BODY", "2048", 1);
  setenv("KPI_HTTP_HEADER_TIMEOUT_MS", "250", 1);
  setenv("KPI_HTTP_MAX_CONNECTIONS_PER_PEER", "8", 1);
  setenv("KPI_HTTP_WRITE_TIMEOUT_MS", "1500", 1);
  assert_int_equal(cfg.max_connections_per_peer, 64);
  assert_int_equal(cfg.write_timeout_ms, 30000);
  assert_int_equal(kpi_http_config_from_env(&cfg), 0);
  assert_int_equal(cfg.max_body_bytes, 2048);
  assert_int_equal(cfg.header_timeout_ms, 250);
  assert_int_equal(cfg.max_headers, 100);
  assert_int_equal(cfg.max_connections_per_peer, 8);
  assert_int_equal(cfg.write_timeout_ms, 1500);
  unsetenv("KPI_HTTP_MAX_BODY");
  unsetenv("KPI_HTTP_HEADER_TIMEOUT_MS");
  unsetenv("KPI_HTTP_MAX_CONNECTIONS_PER_PEER");
  unsetenv("KPI_HTTP_WRITE_TIMEOUT_MS");
}

/* Init, start and close with no traffic: the loop must close clean. */
static void test_close_without_traffic(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  fixture_stop(fx);
  fixture_free(fx);
}


/* Trailer fields of a chunked body are never headers: a trailer `Authorization` must not
 * authenticate anything. The padded case makes the header arena move to the heap, where a
 * value left unterminated would read past its end. */
static void test_trailers_never_headers(void **state) {
  (void)state;
  static char padded[4096];
  strcpy(padded, "POST /t HTTP/1.1\r\nHost: t\r\nX-Pad: ");
  memset(padded + strlen(padded), 'p', 1500);
  strcat(padded, "\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                 "X-Test: from-trailer\r\nAuthorization: Bearer t\r\n\r\n");
  const char *const requests[] = {
      "POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
      "X-Test: from-trailer\r\nAuthorization: Bearer t\r\n\r\n",
      padded,
  };
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open(fx->port);
  for (size_t i = 0; i < sizeof requests / sizeof requests[0]; i++) {
    client_sends(c, requests[i]);
    response r;
    assert_int_equal(client_response(c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /t  h=- len=5:hello");
  }
  /* The connection is still in step: the next request parses. */
  client_sends(c, "GET /after HTTP/1.1\r\nHost: t\r\nX-Test: real\r\n\r\n");
  expect_response(c, 200, "GET /after  h=real ");
  client_close(c);
  fixture_stop(fx);
  fixture_free(fx);
}

/* RFC 9110 §15.6.2: a method the server does not implement is 501, whatever the path; a
 * byte sequence that is no method token at all stays a 400. */
static void test_unknown_method_501(void **state) {
  (void)state;
  static const struct {
    const char *request;
    int status, closes;
  } cases[] = {
      {"QUERYX /x HTTP/1.1\r\nHost: t\r\n\r\n", 501, 1},
      {"FOOBAR /x HTTP/1.1\r\nHost: t\r\n\r\n", 501, 1},
      {"get /x HTTP/1.1\r\nHost: t\r\n\r\n", 501, 1},
      {"GETX /x HTTP/1.1\r\nHost: t\r\n\r\n", 501, 1},
      {"M-SEARCHING /x HTTP/1.1\r\nHost: t\r\n\r\n", 501, 1},
      {"PROPFIND /x HTTP/1.1\r\nHost: t\r\n\r\n", 501, 0}, /* parsed: keep-alive */
      {"MKCALENDAR /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab", 501, 0},
      {"\x01\x02 nonsense\r\n\r\n", 400, 1},
      {"GE\x01 /x HTTP/1.1\r\n\r\n", 400, 1},
  };
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    client *c = client_open(fx->port);
    client_sends(c, cases[i].request);
    response r;
    if (client_response(c, &r, 0) != 0) fail_msg("case %zu: no response", i);
    if (r.status != cases[i].status)
      fail_msg("case %zu: status %d, expected %d", i, r.status, cases[i].status);
    assert_non_null(strstr(r.head, "Content-Type: application/problem+json\r\n"));
    if (cases[i].status == 501)
      assert_non_null(strstr(r.body, "\"title\":\"Not Implemented\""));
    if (cases[i].closes) {
      assert_true(client_at_eof(c));
    } else {
      client_sends(c, "GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
      expect_response(c, 200, "GET /next ");
    }
    client_close(c);
  }
  /* QUERY is not implemented (an IETF draft; RFC 9110 §15.6.2), whole or trickled. */
  client *c = client_open(fx->port);
  client_sends(c, "QUERY /q?a=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
  expect_response(c, 501, NULL);
  client_close(c);
  c = client_open(fx->port);
  const char *q = "QUERY /x HTTP/1.1\r\n\r\n";
  for (size_t k = 0; q[k]; k++) {
    client_send(c, q + k, 1);
    usleep(500);
  }
  expect_response(c, 501, NULL);
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 2); /* the two GET /next after a parsed 501 */
  fixture_free(fx);
}

/* With routes declared, the server answers 404 and 405 (with Allow) itself. */
static void test_routes_404_405(void **state) {
  (void)state;
  static const kpi_http_route routes[] = {
      {"/r", KPI_HTTP_GET | KPI_HTTP_HEAD},
      {"/p", KPI_HTTP_POST},
      {"/pre/*", KPI_HTTP_GET | KPI_HTTP_HEAD},
  };
  static const struct {
    const char *request;
    int status;
    const char *allow;
    int route;
  } cases[] = {
      {"GET /r HTTP/1.1\r\nHost: t\r\n\r\n", 200, NULL, 0},
      {"GET /r?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", 200, NULL, 0},
      {"POST /r HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", 405, "GET, HEAD", -1},
      {"PUT /r HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405, "GET, HEAD", -1},
      {"TRACE /r HTTP/1.1\r\nHost: t\r\n\r\n", 405, "GET, HEAD", -1},
      {"OPTIONS /p HTTP/1.1\r\nHost: t\r\n\r\n", 405, "POST", -1},
      {"DELETE /p HTTP/1.1\r\nHost: t\r\n\r\n", 405, "POST", -1},
      {"GET /p HTTP/1.1\r\nHost: t\r\n\r\n", 405, "POST", -1},
      {"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab", 200, NULL, 1},
      {"GET /pre/abc HTTP/1.1\r\nHost: t\r\n\r\n", 200, NULL, 2},
      {"GET /pre HTTP/1.1\r\nHost: t\r\n\r\n", 404, NULL, -1},
      {"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, NULL, -1},
      {"PATCH /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, NULL, -1},
      {"PROPFIND /r HTTP/1.1\r\nHost: t\r\n\r\n", 501, NULL, -1},
  };
  fixture *fx = fixture_start_routes(NULL, MODE_ECHO, routes, 3);
  client *c = client_open(fx->port);
  int served = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fx->last_route = -2;
    client_sends(c, cases[i].request);
    response r;
    if (client_response(c, &r, 0) != 0) fail_msg("case %zu: no response", i);
    if (r.status != cases[i].status)
      fail_msg("case %zu: status %d, expected %d", i, r.status, cases[i].status);
    const char *allow = strcasestr(r.head, "\r\nAllow: ");
    if (cases[i].allow) {
      char want[64];
      snprintf(want, sizeof want, "\r\nAllow: %s\r\n", cases[i].allow);
      if (!allow || strncmp(allow, want, strlen(want)) != 0)
        fail_msg("case %zu: Allow missing or wrong: %s", i, r.head);
    } else {
      assert_null(allow);
    }
    if (cases[i].status == 200) {
      served++;
      assert_int_equal(fx->last_route, cases[i].route); /* written before the answer */
    } else {
      assert_non_null(strstr(r.head, "Content-Type: application/problem+json\r\n"));
      assert_null(strstr(r.head, "Connection: close"));
    }
  }
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, served);
  fixture_free(fx);
}

static kpi_http_stats snapshot(fixture *fx) {
  fixture_call(fx, cmd_snapshot);
  return stats_snapshot;
}

/* A client that stops reading is cut off once its responses make no progress for
 * write_timeout_ms; one that reads slowly but steadily is not. */
static void test_write_timeout(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.write_timeout_ms = 300;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *stuck = client_open_ex(fx->port, NULL, 4096);
  client_sends(stuck, "GET /big?33554432 HTTP/1.1\r\nHost: t\r\n\r\n");
  double t0 = now_ms();
  while (snapshot(fx).timeouts_write == 0 && now_ms() - t0 < 5000) usleep(20 * 1000);
  double elapsed = now_ms() - t0;
  kpi_http_stats st = snapshot(fx);
  assert_int_equal(st.connections_active, 0);
  assert_int_equal(st.timeouts_write, 1);
  assert_true(elapsed >= 250);
  client_abort(stuck);

  /* 2 MiB read 64 KiB at a time every 50 ms: slow, but never 300 ms without progress. */
  client *slow = client_open_ex(fx->port, NULL, 4096);
  client_sends(slow, "GET /big?2097152 HTTP/1.1\r\nHost: t\r\n\r\n");
  size_t got = 0;
  char buf[65536];
  while (got < 2097152 + 40) {
    usleep(50 * 1000);
    ssize_t n = recv(slow->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) break;
    if (n > 0) got += (size_t)n;
  }
  assert_true(got > 2097152);
  assert_int_equal(snapshot(fx).timeouts_write, 1);
  client_close(slow);
  fixture_stop(fx);
  fixture_free(fx);
}

/* Reads one response whose body may be far larger than a response struct holds: returns its
 * status and checks every body byte is BYTE; the rest of the input stays in C. */
static int client_big_response(client *c, char byte, size_t *body_len) {
  char *end;
  while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
    if (client_fill(c, 5000) <= 0) return -1;
  size_t head_len = (size_t)(end - c->buf) + 4;
  int status = 0;
  if (sscanf(c->buf, "HTTP/1.1 %d", &status) != 1) return -1;
  const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
  if (!cl || cl > end) return -1;
  size_t left = strtoul(cl + 17, NULL, 10);
  *body_len = left;
  memmove(c->buf, c->buf + head_len, c->len - head_len);
  c->len -= head_len;
  while (left > 0) {
    if (c->len == 0 && client_fill(c, 5000) <= 0) return -1;
    size_t n = c->len < left ? c->len : left;
    for (size_t i = 0; i < n; i++)
      if (c->buf[i] != byte) return -1;
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    left -= n;
  }
  return status;
}

/* A response the socket does not take at once (a small receive buffer, 4 MiB) is finished by
 * libuv's queued write, and the pipelined answers behind it, written while it is still
 * queued, follow it in order; the last, `Connection: close`, ends the connection only once
 * everything before it is out. */
static void test_large_response_then_pipelined(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open_ex(fx->port, NULL, 4096);
  client_sends(c, "GET /big?4194304 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /after HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /big?65536 HTTP/1.1\r\nHost: t\r\n\r\n"
                  "GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  usleep(100 * 1000); /* every answer is queued behind the first before anything is read */
  size_t len = 0;
  assert_int_equal(client_big_response(c, 'x', &len), 200);
  assert_int_equal(len, 4194304);
  expect_response(c, 200, "GET /after ");
  assert_int_equal(client_big_response(c, 'x', &len), 200);
  assert_int_equal(len, 65536);
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_string_equal(r.body, "GET /last  h=- len=0:");
  assert_non_null(strstr(r.head, "Connection: close\r\n"));
  assert_true(client_at_eof(c));
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->requests_seen, 4);
  fixture_free(fx);
}

/* The phase timer is started lazily (it keeps running for a later deadline when a phase
 * ends): a header timeout shorter than the idle timeout still cuts a keep-alive client off
 * with 408 while the timer was last started for the idle deadline. */
static void test_header_timeout_after_idle_deadline(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.header_timeout_ms = 200;
  cfg.idle_timeout_ms = 60000;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *c = client_open(fx->port);
  for (int i = 0; i < 3; i++) {
    client_sends(c, "GET /k HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_response(c, 200, "GET /k ");
  }
  /* Past the first header deadline: the timer now runs for the idle one, 60 s away. */
  usleep(400 * 1000);
  client_sends(c, "GET /slow HTTP/1.1\r\nHost: t\r\n");
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_int_equal(r.status, 408);
  assert_true(client_at_eof(c));
  client_close(c);
  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.timeouts_header, 1);
  assert_int_equal(fx->srv.stats.timeouts_idle, 0);
  fixture_free(fx);
}

/* Answered requests waiting behind an unanswered one keep their response only: their
 * bodies are freed when answered. */
static void test_body_freed_once_answered(void **state) {
  (void)state;
  fixture *fx = fixture_start(NULL, MODE_ECHO);
  client *c = client_open(fx->port);
  char body[1001];
  memset(body, 'b', 1000);
  body[1000] = '\0';
  char req[4096];
  snprintf(req, sizeof req,
           "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n"
           "POST /b1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n%s"
           "POST /b2 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
           "3e8\r\n%s\r\n0\r\n\r\n",
           body, body);
  client_sends(c, req);
  double t0 = now_ms();
  while (fx->requests_seen < 3 && now_ms() - t0 < 3000) usleep(10 * 1000);
  kpi_http_stats st = snapshot(fx);
  assert_int_equal(st.requests, 3);
  assert_int_equal(st.body_bytes, 0);
  client_close(c);
  fixture_stop(fx); /* answers the held request */
  assert_int_equal(fx->srv.stats.body_bytes, 0);
  fixture_free(fx);
}

/* max_body_bytes 0 (a GET-only service): any body is 413, requests without one pass. */
static void test_zero_body_limit(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.max_body_bytes = 0;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *c = client_open(fx->port);
  client_sends(c, "GET /g HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
  expect_response(c, 200, "GET /g ");
  client_sends(c, "POST /g HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
  expect_response(c, 413, NULL);
  client_close(c);
  c = client_open(fx->port);
  client_sends(c, "POST /g HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  "1\r\nx\r\n0\r\n\r\n");
  expect_response(c, 413, NULL);
  client_close(c);
  fixture_stop(fx);
  fixture_free(fx);
}

/* Past max_connections_per_peer, a peer's new connections are refused; other peers and
 * the peer's later connections, once some closed, are not. */
static void test_max_connections_per_peer(void **state) {
  (void)state;
  kpi_http_config cfg = test_config();
  cfg.max_connections_per_peer = 2;
  fixture *fx = fixture_start(&cfg, MODE_ECHO);
  client *a = client_open_ex(fx->port, "127.0.0.1", 0);
  client *b = client_open_ex(fx->port, "127.0.0.1", 0);
  client_sends(a, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n");
  client_sends(b, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(a, 200, "GET /a ");
  expect_response(b, 200, "GET /b ");
  client *c = client_open_ex(fx->port, "127.0.0.1", 0);
  response r;
  assert_int_equal(client_response(c, &r, 0), 0);
  assert_int_equal(r.status, 503);
  assert_non_null(strstr(r.head, "Retry-After: 1\r\n"));
  assert_true(client_at_eof(c));
  client_close(c);
  client *other = client_open_ex(fx->port, "127.0.0.2", 0);
  client_sends(other, "GET /o HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(other, 200, "GET /o ");
  client_close(a);
  double t0 = now_ms();
  while (snapshot(fx).connections_active > 2 && now_ms() - t0 < 3000) usleep(10 * 1000);
  c = client_open_ex(fx->port, "127.0.0.1", 0);
  client_sends(c, "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
  expect_response(c, 200, "GET /c ");
  client_close(c);
  client_close(b);
  client_close(other);
  fixture_stop(fx);
  assert_int_equal(fx->srv.stats.connections_rejected, 1);
  fixture_free(fx);
}

/* One table of reason phrases, RFC 9110's names. */
/* Accept-Language: the preferred supported language, the default (index 0) otherwise. */
static void test_accept_language(void **state) {
  (void)state;
  static const char *const langs[] = {"en", "ja"};
  static const struct {
    const char *al;
    size_t want;
  } cases[] = {
      {NULL, 0},
      {"", 0},
      {"ja", 1},
      {"JA-jp", 1},
      {"en", 0},
      {"ja, en", 1},
      {"en, ja", 0},
      {"en;q=0.5, ja", 1},
      {"ja;q=0.5, en;q=0.9", 0},
      {"ja;q=0.9, en;q=0.5", 1},
      {"en-US,en;q=0.9,ja;q=0.8", 0},
      {"ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", 1},
      {"fr, ja;q=0.3", 1},
      {"fr", 0},
      {"ja;q=0", 0},
      {"ja;q=bad, en;q=0.1", 0},
      {"ja;q=2", 0},
      {"*", 0},
      {"jav", 0},
      {" ja ; q=1.000 ", 1},
      {"de;q=0.9, ja;level=1;q=0.8", 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t got = kpi_http_accept_language(cases[i].al, langs, 2);
    if (got != cases[i].want) fail_msg("\"%s\": got %zu, want %zu", cases[i].al ? cases[i].al : "(null)", got, cases[i].want);
  }
}

static void test_reason_phrases(void **state) {
  (void)state;
  assert_string_equal(kpi_http_reason(422), "Unprocessable Content");
  assert_string_equal(kpi_http_reason(413), "Content Too Large");
  assert_string_equal(kpi_http_reason(501), "Not Implemented");
  assert_string_equal(kpi_http_reason(405), "Method Not Allowed");
}

/* ---- header and query helpers (pure) ---- */

static void test_media_type(void **state) {
  (void)state;
  static const struct {
    const char *ct;
    bool json;
  } cases[] = {
      {"application/json", true},
      {"Application/JSON", true},
      {"application/json; charset=utf-8", true},
      {"application/json;charset=UTF-8", true},
      {"application/json ; charset=\"utf-8\"", true},
      {"application/json;", true},
      {" application/json ", true},
      {"application/json; charset=latin1", false},
      {"application/json; boundary=x", false},
      {"application/jsonx", false},
      {"application/json-seq", false},
      {"text/json", false},
      {"application/json; charset=\"utf-8", false},
      {"", false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    if (kpi_http_media_type_is(cases[i].ct, "application/json") != cases[i].json)
      fail_msg("'%s'", cases[i].ct);
  }
  assert_false(kpi_http_media_type_is(NULL, "application/json"));
  assert_true(kpi_http_media_type_is("application/x-ndjson", "application/x-ndjson"));
  assert_false(kpi_http_media_type_is("application/x-ndjson", "application/json"));
}

static void test_query_flag(void **state) {
  (void)state;
  static const struct {
    const char *q;
    int rc;
    int value;
  } cases[] = {
      {"", 0, 0},           {"atomic=true", 0, 1},  {"atomic=1", 0, 1},
      {"atomic", 0, 1},     {"atomic=false", 0, 0}, {"atomic=0", 0, 0},
      {"x=1&atomic=true", 0, 1}, {"atomicity=true", 0, 0}, {"atomic=yes", -1, 0},
      {"atomic=", -1, 0},   {"atomic=true&atomic=false", 0, 1}, {"a=b&c", 0, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int v = -7;
    int rc = kpi_http_query_flag(cases[i].q, "atomic", &v);
    if (rc != cases[i].rc || (rc == 0 && v != cases[i].value))
      fail_msg("'%s': rc %d value %d", cases[i].q, rc, v);
  }
  int v;
  assert_int_equal(kpi_http_query_flag(NULL, "atomic", &v), 0);
  assert_int_equal(v, 0);
}

static void test_bearer(void **state) {
  (void)state;
  static const struct {
    const char *h;
    const char *token;
  } cases[] = {
      {"Bearer abc", "abc"},
      {"bearer abc", "abc"},
      {"BEARER   a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="},
      {"Bearer abc  ", "abc"},
      {"Bearer", NULL},
      {"Bearer ", NULL},
      {"Bearerabc", NULL},
      {"Basic abc", NULL},
      {"Bearer a b", NULL},
      {"Bearer a=b", NULL},
      {"Bearer ab\"c", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *t = NULL;
    size_t len = 0;
    int rc = kpi_http_bearer_token(cases[i].h, &t, &len);
    if (!cases[i].token) {
      if (rc != -1) fail_msg("'%s' accepted", cases[i].h);
      continue;
    }
    if (rc != 0) fail_msg("'%s' refused", cases[i].h);
    assert_int_equal(len, strlen(cases[i].token));
    assert_memory_equal(t, cases[i].token, len);
  }
  const char *t;
  size_t len;
  assert_int_equal(kpi_http_bearer_token(NULL, &t, &len), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simple_get),
      cmocka_unit_test(test_media_type),
      cmocka_unit_test(test_query_flag),
      cmocka_unit_test(test_bearer),
      cmocka_unit_test(test_keep_alive),
      cmocka_unit_test(test_pipelining_answers_in_request_order),
      cmocka_unit_test(test_pipelining_backpressure),
      cmocka_unit_test(test_pipelining_bound_one_read_at_a_time),
      cmocka_unit_test(test_chunked_body),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_refused_requests),
      cmocka_unit_test(test_byte_by_byte),
      cmocka_unit_test(test_slow_header_client_cut_off),
      cmocka_unit_test(test_idle_timeout_closes),
      cmocka_unit_test(test_max_connections),
      cmocka_unit_test(test_client_gone_before_async_answer),
      cmocka_unit_test(test_close_with_requests_in_flight),
      cmocka_unit_test(test_stop_accepting_drains),
      cmocka_unit_test(test_config_from_env),
      cmocka_unit_test(test_close_without_traffic),
      cmocka_unit_test(test_trailers_never_headers),
      cmocka_unit_test(test_unknown_method_501),
      cmocka_unit_test(test_routes_404_405),
      cmocka_unit_test(test_write_timeout),
      cmocka_unit_test(test_large_response_then_pipelined),
      cmocka_unit_test(test_header_timeout_after_idle_deadline),
      cmocka_unit_test(test_body_freed_once_answered),
      cmocka_unit_test(test_zero_body_limit),
      cmocka_unit_test(test_max_connections_per_peer),
      cmocka_unit_test(test_reason_phrases),
      cmocka_unit_test(test_accept_language),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
