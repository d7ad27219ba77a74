/* fuzz_http.c: libFuzzer target for the HTTP server (common/kpi_http): bytes in over a real
 * loopback connection, responses out, every connection closed and freed per input. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>

#include "fuzz_check.h"
#include "kpi_http.h"
#include "kpi_metrics.h"

/* Input: byte 0 holds options, the rest is what the client sends.
 *   bit 0  server with the defaults (1) or with small limits (0: 1 KiB body, 2 KiB of
 *          headers, 10 headers, 2 requests in flight), which reach the 413/431/pause paths
 *   bit 1  the handler answers from a zero timer, in reverse order, instead of at once
 * Each 0xFF byte of the rest ends one write (and is not sent), so the server sees the
 * stream in the pieces the input chose: 0xFF never occurs in a valid request head.
 * After the last piece the client shuts down its side and reads until the server closes.
 *
 * The handler answers by path: /204 (no content), /problem (429 problem+json with
 * Retry-After), /metrics, /bad (an invalid status: the server closes the connection), and
 * everything else with an echo of its sequence number, method, path, query, one header and
 * the body. */

#define SPLIT 0xFF
#define MAX_HELD 256
/* A connection that outlives this after the client's FIN is a bug (hang), not slowness. */
#define GUARD_MS 3000


typedef struct {
  uv_loop_t loop;
  kpi_http_server srv[2];
  int port[2];
  uv_timer_t answer_timer;
  uv_timer_t guard;
  kpi_metrics *metrics;
  int defer;
  int guard_fired;
  int saw_head;  /* a HEAD request was answered: its response has no body to frame */
  int saw_bad;   /* the connection was cut by an invalid answer: output may end anywhere */
  unsigned seq;  /* requests dispatched for this input; echoes carry it, in order */
  kpi_http_request *held[MAX_HELD];
  int n_held;
} fuzz_ctx;

static fuzz_ctx ctx;

static void answer(kpi_http_request *req) {
  const char *path = kpi_http_request_path(req);
  if (strcmp(kpi_http_request_method(req), "HEAD") == 0) ctx.saw_head = 1;
  if (strcmp(path, "/204") == 0) {
    kpi_http_respond(req, 204, NULL, NULL, 0, NULL);
  } else if (strcmp(path, "/problem") == 0) {
    cJSON *errors = cJSON_CreateArray();
    kpi_http_respond_problem_ex(req, 429, NULL, NULL, "slow down", errors, "Retry-After: 1");
  } else if (strcmp(path, "/metrics") == 0) {
    kpi_http_respond_metrics(req, &ctx.srv[0], ctx.metrics);
  } else if (strcmp(path, "/bad") == 0) {
    /* An orphan's answer is discarded before it is looked at: 0 is the contract. */
    int orphan = kpi_http_request_orphaned(req);
    if (!orphan) ctx.saw_bad = 1;
    int rc = kpi_http_respond(req, 99, "text/plain", "x", 1, NULL);
    CHECK(rc == (orphan ? 0 : KPI_HTTP_EINVAL), "status 99 gave %d", rc);
  } else {
    char body[512];
    size_t blen = 0;
    const char *b = kpi_http_request_body(req, &blen);
    CHECK(b[blen] == '\0', "body not terminated");
    const char *xt = kpi_http_header(req, "x-test");
    size_t nh = kpi_http_request_header_count(req);
    for (size_t i = 0; i < nh; i++) {
      const char *name, *value;
      kpi_http_request_header_at(req, i, &name, &value);
      CHECK(name && value, "header %zu", i);
    }
    unsigned seq = (unsigned)(uintptr_t)kpi_http_request_get_user(req);
    int n = snprintf(body, sizeof body, "#%u %s %s %s h=%s n=%zu len=%zu:%.*s", seq,
                     kpi_http_request_method(req), path, kpi_http_request_query(req),
                     xt ? xt : "-", nh, blen, (int)(blen < 100 ? blen : 100), b);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof body) n = sizeof body - 1;
    kpi_http_respond(req, 200, "text/plain", body, (size_t)n, "X-Served: yes\r\n");
  }
}

static void on_uv_answer_timer(uv_timer_t *t) {
  (void)t;
  while (ctx.n_held > 0) answer(ctx.held[--ctx.n_held]);
}

static void on_http_request(kpi_http_request *req, void *opaque) {
  (void)opaque;
  kpi_http_request_set_user(req, (void *)(uintptr_t)++ctx.seq);
  if (!ctx.defer || ctx.n_held == MAX_HELD) {
    answer(req);
    return;
  }
  ctx.held[ctx.n_held++] = req;
  uv_timer_start(&ctx.answer_timer, on_uv_answer_timer, 0, 0);
}

static void on_uv_guard(uv_timer_t *t) {
  (void)t;
  ctx.guard_fired = 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  CHECK(uv_loop_init(&ctx.loop) == 0, "loop");
  kpi_http_config cfg[2];
  kpi_http_config_defaults(&cfg[0]);
  cfg[0].max_body_bytes = 1024;
  cfg[0].max_header_bytes = 2048;
  cfg[0].max_headers = 10;
  cfg[0].max_pipelined = 2;
  kpi_http_config_defaults(&cfg[1]);
  for (int i = 0; i < 2; i++) {
    CHECK(kpi_http_server_init(&ctx.srv[i], &ctx.loop, &cfg[i], on_http_request, NULL) == 0,
          "init");
    CHECK(kpi_http_server_start(&ctx.srv[i], "127.0.0.1", 0) == 0, "start");
    ctx.port[i] = kpi_http_server_port(&ctx.srv[i]);
  }
  uv_timer_init(&ctx.loop, &ctx.answer_timer);
  uv_timer_init(&ctx.loop, &ctx.guard);
  ctx.metrics = kpi_metrics_new();
  CHECK(ctx.metrics != NULL, "metrics");
  return 0;
}

/* ---- client side: a plain non-blocking socket, driven between loop turns ---- */

typedef struct {
  int fd;
  int eof;
  char *buf;
  size_t len, cap;
} client;

static void client_drain(client *c) {
  while (!c->eof) {
    if (c->len == c->cap) {
      size_t cap = c->cap ? c->cap * 2 : 16384;
      char *nb = realloc(c->buf, cap);
      CHECK(nb != NULL, "client buffer");
      c->buf = nb;
      c->cap = cap;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n > 0) c->len += (size_t)n;
    else if (n == 0) c->eof = 1;
    else if (errno == EINTR) continue;
    else if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    else c->eof = 1; /* ECONNRESET: the server cut the connection, which it may */
  }
}

static void client_send(client *c, const uint8_t *p, size_t len) {
  while (len > 0 && !c->eof) {
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      uv_run(&ctx.loop, UV_RUN_ONCE); /* the server reads, or answers and closes */
      client_drain(c);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return; /* EPIPE/ECONNRESET: the server closed; the rest is never read */
    }
  }
}

/* The response stream must frame as HTTP/1.1 responses (unless a HEAD answer, whose
 * Content-Length describes no bytes, or a cut connection makes that undecidable), and the
 * echoes must come back in request order even when the handler answered in reverse. */
typedef struct {
  int complete;
  unsigned last_seq;
  char head[16]; /* the first bytes of the current body */
  size_t head_len;
} resp_state;

static int on_resp_begin(http_parser *p) {
  resp_state *st = p->data;
  st->head_len = 0;
  return 0;
}

static int on_resp_body(http_parser *p, const char *at, size_t len) {
  resp_state *st = p->data;
  size_t take = sizeof st->head - 1 - st->head_len;
  if (take > len) take = len;
  memcpy(st->head + st->head_len, at, take);
  st->head_len += take;
  return 0;
}

static int on_resp_complete(http_parser *p) {
  resp_state *st = p->data;
  st->complete++;
  st->head[st->head_len] = '\0';
  unsigned seq;
  if (p->status_code == 200 && sscanf(st->head, "#%u ", &seq) == 1) {
    CHECK(seq > st->last_seq, "response to request %u after the one to %u", seq, st->last_seq);
    st->last_seq = seq;
  }
  return 0;
}

static void check_responses(const client *c) {
  if (c->len == 0) return;
  CHECK(c->len >= 9 && memcmp(c->buf, "HTTP/1.1 ", 9) == 0, "output is not a response");
  if (ctx.saw_head || ctx.saw_bad) return;
  http_parser_settings settings;
  memset(&settings, 0, sizeof settings);
  settings.on_message_begin = on_resp_begin;
  settings.on_body = on_resp_body;
  settings.on_message_complete = on_resp_complete;
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  resp_state st = {0};
  parser.data = &st;
  size_t n = http_parser_execute(&parser, &settings, c->buf, c->len);
  CHECK(HTTP_PARSER_ERRNO(&parser) == HPE_OK && n == c->len, "responses do not frame: %s at %zu",
        http_errno_name(HTTP_PARSER_ERRNO(&parser)), n);
  CHECK(st.complete > 0, "no complete response in %zu bytes", c->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  int which = data[0] & 1;
  kpi_http_server *srv = &ctx.srv[which];
  ctx.defer = (data[0] >> 1) & 1;
  ctx.saw_head = ctx.saw_bad = ctx.guard_fired = 0;
  ctx.seq = 0;
  data++;
  size--;

  /* Non-blocking from the start: libFuzzer's SIGALRM would interrupt a blocking connect.
   * The handshake completes in the kernel; the accept below waits for it. */
  client c = {.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)};
  CHECK(c.fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ctx.port[which])};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int crc = connect(c.fd, (struct sockaddr *)&sa, sizeof sa);
  CHECK(crc == 0 || errno == EINPROGRESS || errno == EINTR, "connect: %s", strerror(errno));
  uint64_t accepted = srv->stats.connections_accepted + srv->stats.connections_rejected;
  while (srv->stats.connections_accepted + srv->stats.connections_rejected == accepted)
    uv_run(&ctx.loop, UV_RUN_ONCE);

  /* One write per piece, each read by the server before the next is sent. */
  size_t start = 0;
  for (size_t i = 0; i <= size; i++) {
    if (i < size && data[i] != SPLIT) continue;
    client_send(&c, data + start, i - start);
    uv_run(&ctx.loop, UV_RUN_NOWAIT);
    client_drain(&c);
    start = i + 1;
  }
  shutdown(c.fd, SHUT_WR);

  uv_timer_start(&ctx.guard, on_uv_guard, GUARD_MS, 0);
  while (!(c.eof && srv->n_conns == 0 && ctx.n_held == 0) && !ctx.guard_fired) {
    uv_run(&ctx.loop, UV_RUN_ONCE);
    client_drain(&c);
  }
  uv_timer_stop(&ctx.guard);
  CHECK(!ctx.guard_fired, "connection still open %d ms after the client's FIN (eof %d, conns %u, "
        "held %d)", GUARD_MS, c.eof, srv->n_conns, ctx.n_held);
  CHECK(srv->stats.connections_active == 0, "active connections left");
  /* FUZZ_HTTP_DUMP=1 shows what the client received, to read a reproduced crash. */
  if (getenv("FUZZ_HTTP_DUMP")) fprintf(stderr, "--- %zu bytes:\n%.*s\n---\n", c.len, (int)c.len,
                                        c.buf ? c.buf : "");
  check_responses(&c);

  /* An RST instead of a FIN: the server already closed, so nothing is lost, and no
   * TIME_WAIT entry is left behind per input. */
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(c.fd);
  free(c.buf);
  return 0;
}
