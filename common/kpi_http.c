/* kpi_http.c: HTTP/1.1 server on libuv + http-parser: limits, timeouts, ordered pipelining. */
#include "kpi_http.h"

#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kpi_env.h"
#include "kpi_log.h"

/* One read buffer serves every connection: parser callbacks copy what they keep, so the
 * buffer is free again when on_uv_read returns. Only bytes left unparsed while a connection
 * is paused are copied aside (conn->pending). */
#define READ_BUF_SIZE (64 * 1024)
/* Most requests fit the inline arena and header table, so a small request costs one
 * allocation for itself and one for its response. */
#define HEAD_INLINE 1024
#define HDRS_INLINE 16
/* After our FIN, how long we keep draining what the client still sends; closing with
 * unread data would make the kernel answer RST, which can destroy the response in flight. */
#define LINGER_MS 2000

typedef struct {
  uint32_t name_off, name_len, value_off, value_len;
} hdr_entry;

enum { LAST_NONE, LAST_FIELD, LAST_VALUE };

struct kpi_http_request {
  kpi_http_conn *conn; /* NULL once orphaned: the connection closed before the answer */
  kpi_http_server *srv; /* for stats.body_bytes; NULL once orphaned (SRV may be freed) */
  kpi_http_request *next;
  uv_write_t write_req;
  void *user;
  int method;
  int status;
  int route; /* index in srv->routes, or -1 */
  unsigned keep_alive : 1, http10 : 1, is_head : 1, responded : 1, expect_continue : 1,
      continue_sent : 1, headers_done : 1;
  int last_cb;
  size_t hdr_bytes; /* target + names + values as received, for max_header_bytes */
  size_t path_off, query_off;
  char *head; /* arena: target, then NUL-terminated names and values */
  size_t head_len, head_cap;
  hdr_entry *hdrs;
  unsigned n_hdrs, hdrs_cap;
  char *body;
  size_t body_len, body_cap; /* body_cap is what stats.body_bytes counts for this request */
  char *resp; /* status line and headers (without Connection), then "\r\n" and the body */
  size_t resp_head_len, resp_len;
  hdr_entry hdrs_inline[HDRS_INLINE];
  char head_inline[HEAD_INLINE];
};

typedef enum {
  PH_WAIT,    /* between requests */
  PH_HEADERS, /* a request started, headers incomplete */
  PH_BODY,    /* reading a body */
  PH_FAILED,  /* an error response is queued; input is discarded */
  PH_LINGER   /* FIN sent, draining input until EOF or LINGER_MS */
} conn_phase;

struct kpi_http_conn {
  uv_tcp_t tcp;
  uv_timer_t timer;  /* the deadline of the current phase, started lazily (conn_arm) */
  uv_timer_t wtimer; /* write progress, armed while libuv holds unsent response bytes */
  uv_shutdown_t shutdown_req;
  http_parser parser;
  kpi_http_server *srv;
  kpi_http_conn *prev, *next;
  kpi_http_request *cur;   /* being parsed */
  kpi_http_request *ready; /* complete, handed over once the parser returns */
  /* Dispatched requests whose responses are not yet written, in request order; a response
   * leaves the queue only from its head, which is what keeps pipelined answers in order. */
  kpi_http_request *q_head, *q_tail;
  unsigned q_len;
  unsigned writes; /* uv_write calls in flight */
  char *pending;   /* unparsed input kept while reading is paused */
  size_t pending_len;
  uint64_t bytes_queued; /* every byte ever passed to uv_write on this connection */
  uint64_t wmark;        /* bytes the kernel had taken when wtimer was (re)armed */
  uint64_t deadline;     /* loop time the current phase ends; 0: no phase timeout runs */
  uint64_t timer_due;    /* loop time TIMER fires at; 0: not running */
  unsigned char peer[16]; /* the peer's address (IPv4-mapped IPv6 as IPv4), for the cap */
  unsigned peer_len;      /* 4 or 16; 0 when unknown (never counted against a peer) */
  conn_phase phase;
  int fail_status; /* set by a parser callback before it returns -1 */
  int handles_open;
  unsigned closing : 1, reading : 1, paused : 1, no_more : 1, peer_eof : 1, active : 1,
      wwatch : 1, fin_due : 1; /* fin_due: the last response was handed to the socket */
};


/* http-parser's reason phrases, except where RFC 9110 renamed one (422, 413, 416). */
const char *kpi_http_reason(int status) {
  switch (status) {
    case 413: return "Content Too Large";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    default: return http_status_str((enum http_status)status);
  }
}

static int on_parser_message_begin(http_parser *p);
static int on_parser_url(http_parser *p, const char *at, size_t len);
static int on_parser_header_field(http_parser *p, const char *at, size_t len);
static int on_parser_header_value(http_parser *p, const char *at, size_t len);
static int on_parser_headers_complete(http_parser *p);
static int on_parser_body(http_parser *p, const char *at, size_t len);
static int on_parser_chunk_header(http_parser *p);
static int on_parser_message_complete(http_parser *p);

static const http_parser_settings parser_settings = {
    .on_message_begin = on_parser_message_begin,
    .on_url = on_parser_url,
    .on_header_field = on_parser_header_field,
    .on_header_value = on_parser_header_value,
    .on_headers_complete = on_parser_headers_complete,
    .on_body = on_parser_body,
    .on_chunk_header = on_parser_chunk_header,
    .on_message_complete = on_parser_message_complete,
};

static void conn_close(kpi_http_conn *conn);
static void conn_fail(kpi_http_conn *conn, int status, const char *detail);
static void conn_flush(kpi_http_conn *conn);
static void conn_update_reading(kpi_http_conn *conn);
static void conn_arm(kpi_http_conn *conn, uint64_t ms);
static void conn_disarm(kpi_http_conn *conn);
static void conn_watch_writes(kpi_http_conn *conn);

/* ---- configuration ---- */

void kpi_http_config_defaults(kpi_http_config *cfg) {
  cfg->max_body_bytes = 1024 * 1024;
  cfg->max_header_bytes = 16 * 1024;
  cfg->max_headers = 100;
  cfg->max_connections = 1024;
  cfg->max_connections_per_peer = 64;
  cfg->header_timeout_ms = 10000;
  cfg->body_timeout_ms = 30000;
  cfg->idle_timeout_ms = 60000;
  cfg->max_pipelined = 64;
  cfg->write_timeout_ms = 30000;
  cfg->reuseport = false;
}

static int env_u64(const char *name, unsigned long long max, unsigned long long *out) {
  const char *s = getenv(name);
  if (!s) return 0;
  char *end = NULL;
  errno = 0;
  unsigned long long v = (*s >= '0' && *s <= '9') ? strtoull(s, &end, 10) : 0;
  if (end == NULL || *end != '\0' || errno == ERANGE || v == 0 || v > max) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s=\"%s\": expected an integer from 1 to %llu",
            name, s, max);
    return -1;
  }
  *out = v;
  return 1;
}

int kpi_http_config_from_env(kpi_http_config *cfg) {
  /* Caps keep arithmetic on sizes and timer values far from overflow. */
  const unsigned long long size_max = 1ULL << 40, count_max = 1000000, ms_max = 86400000;
  /* Header offsets are 32-bit; http-parser stops at 80 KiB anyway. */
  const unsigned long long header_max = 1ULL << 24;
  unsigned long long v;
  int rc;
#define KPI_HTTP_ENV(name, max, field)       \
  if ((rc = env_u64(name, max, &v)) < 0) return -1; \
  if (rc > 0) cfg->field = v;
  KPI_HTTP_ENV("KPI_HTTP_MAX_BODY", size_max, max_body_bytes)
  KPI_HTTP_ENV("KPI_HTTP_MAX_HEADER_BYTES", header_max, max_header_bytes)
  KPI_HTTP_ENV("KPI_HTTP_MAX_HEADERS", count_max, max_headers)
  KPI_HTTP_ENV("KPI_HTTP_MAX_CONNECTIONS", count_max, max_connections)
  KPI_HTTP_ENV("KPI_HTTP_MAX_CONNECTIONS_PER_PEER", count_max, max_connections_per_peer)
  KPI_HTTP_ENV("KPI_HTTP_HEADER_TIMEOUT_MS", ms_max, header_timeout_ms)
  KPI_HTTP_ENV("KPI_HTTP_BODY_TIMEOUT_MS", ms_max, body_timeout_ms)
  KPI_HTTP_ENV("KPI_HTTP_IDLE_TIMEOUT_MS", ms_max, idle_timeout_ms)
  KPI_HTTP_ENV("KPI_HTTP_WRITE_TIMEOUT_MS", ms_max, write_timeout_ms)
#undef KPI_HTTP_ENV
  int64_t reuse = 0;
  char err[160];
  if (kpi_env_int("KPI_HTTP_REUSEPORT", cfg->reuseport, 0, 1, &reuse, err, sizeof err) != 0) {
    kpi_log(KPI_LOG_ERROR, "config_invalid", "%s", err);
    return -1;
  }
  cfg->reuseport = reuse != 0;
  return 0;
}

const char *kpi_http_strerror(int err) {
  switch (err) {
  case 0: return "success";
  case KPI_HTTP_ENOMEM: return "out of memory";
  case KPI_HTTP_EINVAL: return "invalid argument";
  case KPI_HTTP_ESTATE: return "server not in a state that allows this call";
  default: return uv_strerror(err);
  }
}

/* ---- requests ---- */

static kpi_http_request *req_new(kpi_http_server *srv) {
  /* The inline header table and arena (most of the struct) are written before they are
   * read, so only the fields before them are cleared. */
  kpi_http_request *req = malloc(sizeof(*req));
  if (!req) return NULL;
  memset(req, 0, offsetof(kpi_http_request, hdrs_inline));
  req->srv = srv;
  req->route = -1;
  req->head = req->head_inline;
  req->head_cap = HEAD_INLINE;
  req->hdrs = req->hdrs_inline;
  req->hdrs_cap = HDRS_INLINE;
  req->keep_alive = 1;
  return req;
}

/* Frees what only the handler reads (body, header arena and table) and keeps what the
 * writer needs: once answered, a request waiting for its turn on the wire must not pin a
 * body of up to max_body_bytes, or a client that stops reading would keep every one of its
 * pipelined bodies in memory. */
static void req_release_input(kpi_http_request *req) {
  if (req->srv) req->srv->stats.body_bytes -= req->body_cap;
  free(req->body);
  req->body = NULL;
  req->body_len = req->body_cap = 0;
  if (req->head != req->head_inline) free(req->head);
  req->head = req->head_inline;
  req->head_cap = HEAD_INLINE;
  req->head_len = 0;
  if (req->hdrs != req->hdrs_inline) free(req->hdrs);
  req->hdrs = req->hdrs_inline;
  req->hdrs_cap = HDRS_INLINE;
  req->n_hdrs = 0;
}

static void req_free(kpi_http_request *req) {
  if (!req) return;
  req_release_input(req);
  free(req->resp);
  free(req);
}

/* The connection is gone but the handler still holds REQ: its body no longer counts
 * against the server, which may be freed before the handler answers. */
static void req_orphan(kpi_http_request *req) {
  if (req->srv) req->srv->stats.body_bytes -= req->body_cap;
  req->srv = NULL;
  req->conn = NULL;
}

static int arena_reserve(kpi_http_request *req, size_t len) {
  if (req->head_len + len + 1 > req->head_cap) {
    size_t cap = req->head_cap * 2;
    if (cap < req->head_len + len + 1) cap = req->head_len + len + 1;
    char *nh = req->head == req->head_inline ? malloc(cap) : realloc(req->head, cap);
    if (!nh) return -1;
    if (req->head == req->head_inline) memcpy(nh, req->head, req->head_len);
    req->head = nh;
    req->head_cap = cap;
  }
  return 0;
}

static int arena_put(kpi_http_request *req, const char *data, size_t len) {
  if (arena_reserve(req, len) < 0) return -1;
  memcpy(req->head + req->head_len, data, len);
  req->head_len += len;
  return 0;
}

/* Appends LEN bytes found at OFF in the arena itself, then a NUL; reserving first means
 * the source is read from where it lives after any reallocation. */
static int arena_put_self(kpi_http_request *req, size_t off, size_t len) {
  if (arena_reserve(req, len + 1) < 0) return -1;
  memcpy(req->head + req->head_len, req->head + off, len);
  req->head[req->head_len + len] = '\0';
  req->head_len += len + 1;
  return 0;
}

/* Terminates whatever the parser delivered last (target, name or value) so that every
 * string in the arena is NUL-terminated once headers are complete. */
static int req_finish_item(kpi_http_request *req) {
  if (req->last_cb == LAST_NONE) {
    req->query_off = req->head_len; /* target length until split */
    return arena_put(req, "", 1);
  }
  hdr_entry *h = &req->hdrs[req->n_hdrs - 1];
  if (req->last_cb == LAST_FIELD) {
    h->name_len = (uint32_t)(req->head_len - h->name_off);
    if (arena_put(req, "", 1) < 0) return -1;
    h->value_off = (uint32_t)req->head_len;
  }
  size_t vlen = req->head_len - h->value_off;
  /* http-parser drops leading blanks but keeps trailing ones. */
  while (vlen > 0 && (req->head[h->value_off + vlen - 1] == ' ' ||
                      req->head[h->value_off + vlen - 1] == '\t'))
    vlen--;
  h->value_len = (uint32_t)vlen;
  if (arena_put(req, "", 1) < 0) return -1;
  req->head[h->value_off + vlen] = '\0';
  return 0;
}

/* Splits the target into path and query. Origin form is split in place; absolute form
 * ("http://host/p?q", legal for servers to accept) is parsed and its parts appended. */
static int req_split_target(kpi_http_request *req) {
  size_t tlen = req->query_off;
  char *t = req->head;
  req->path_off = 0;
  if (tlen > 0 && t[0] == '/') {
    char *q = memchr(t, '?', tlen);
    if (q) {
      *q = '\0';
      req->query_off = (size_t)(q - t) + 1;
    }
    return 0;
  }
  if (tlen == 1 && t[0] == '*') return 0;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(t, tlen, 0, &u) != 0) return -1;
  size_t p_off = req->head_len;
  if (u.field_set & (1 << UF_PATH)) {
    if (arena_put_self(req, u.field_data[UF_PATH].off, u.field_data[UF_PATH].len) < 0)
      return -2;
  } else if (arena_put(req, "/", 2) < 0) {
    return -2;
  }
  size_t q_off = req->head_len;
  size_t q_len = (u.field_set & (1 << UF_QUERY)) ? u.field_data[UF_QUERY].len : 0;
  if (arena_put_self(req, u.field_data[UF_QUERY].off, q_len) < 0) return -2;
  req->path_off = p_off;
  req->query_off = q_off;
  return 0;
}

const char *kpi_http_request_method(const kpi_http_request *req) {
  return http_method_str((enum http_method)req->method);
}

int kpi_http_request_route(const kpi_http_request *req) { return req->route; }

const char *kpi_http_request_path(const kpi_http_request *req) {
  return req->head + req->path_off;
}

const char *kpi_http_request_query(const kpi_http_request *req) {
  return req->head + req->query_off;
}

const char *kpi_http_header(const kpi_http_request *req, const char *name) {
  for (unsigned i = 0; i < req->n_hdrs; i++)
    if (strcasecmp(req->head + req->hdrs[i].name_off, name) == 0)
      return req->head + req->hdrs[i].value_off;
  return NULL;
}

size_t kpi_http_request_header_count(const kpi_http_request *req) { return req->n_hdrs; }

void kpi_http_request_header_at(const kpi_http_request *req, size_t i, const char **name,
                                const char **value) {
  if (name) *name = req->head + req->hdrs[i].name_off;
  if (value) *value = req->head + req->hdrs[i].value_off;
}

const char *kpi_http_request_body(const kpi_http_request *req, size_t *len) {
  if (len) *len = req->body_len;
  return req->body ? req->body : "";
}

int kpi_http_request_orphaned(const kpi_http_request *req) { return req->conn == NULL; }

void kpi_http_request_set_user(kpi_http_request *req, void *user) { req->user = user; }

void *kpi_http_request_get_user(const kpi_http_request *req) { return req->user; }

/* ---- parser callbacks: they only record; handlers run after http_parser_execute returns,
 * so a handler may answer, close or even free nothing that the parser still uses. ---- */

static int parser_fail(kpi_http_conn *conn, int status) {
  conn->fail_status = status;
  return -1;
}

static int on_parser_message_begin(http_parser *p) {
  kpi_http_conn *conn = p->data;
  kpi_http_request *req = req_new(conn->srv);
  if (!req) return parser_fail(conn, 503);
  conn->cur = req;
  conn->phase = PH_HEADERS;
  /* Armed once per request, not per read: a client trickling bytes cannot extend it. */
  conn_arm(conn, conn->srv->cfg.header_timeout_ms);
  return 0;
}

static int count_header_bytes(kpi_http_conn *conn, size_t len, int status) {
  kpi_http_request *req = conn->cur;
  req->hdr_bytes += len;
  if (req->hdr_bytes > conn->srv->cfg.max_header_bytes) return parser_fail(conn, status);
  return 0;
}

static int on_parser_url(http_parser *p, const char *at, size_t len) {
  kpi_http_conn *conn = p->data;
  if (count_header_bytes(conn, len, 414) < 0) return -1;
  if (arena_put(conn->cur, at, len) < 0) return parser_fail(conn, 503);
  return 0;
}

static int on_parser_header_field(http_parser *p, const char *at, size_t len) {
  kpi_http_conn *conn = p->data;
  kpi_http_request *req = conn->cur;
  /* After the headers, http-parser reports a chunked body's trailer fields through the same
   * callbacks. They are bounded like headers and dropped: stored, they would pass for
   * headers (an `Authorization` trailer authenticating a request that had none). */
  if (req->headers_done) return count_header_bytes(conn, len, 431);
  if (req->last_cb != LAST_FIELD) {
    if (req_finish_item(req) < 0) return parser_fail(conn, 503);
    if (req->n_hdrs >= conn->srv->cfg.max_headers) return parser_fail(conn, 431);
    if (req->n_hdrs == req->hdrs_cap) {
      unsigned cap = req->hdrs_cap * 2;
      hdr_entry *nh = req->hdrs == req->hdrs_inline ? malloc(cap * sizeof(*nh))
                                                    : realloc(req->hdrs, cap * sizeof(*nh));
      if (!nh) return parser_fail(conn, 503);
      if (req->hdrs == req->hdrs_inline) memcpy(nh, req->hdrs, req->n_hdrs * sizeof(*nh));
      req->hdrs = nh;
      req->hdrs_cap = cap;
    }
    memset(&req->hdrs[req->n_hdrs], 0, sizeof(hdr_entry));
    req->hdrs[req->n_hdrs++].name_off = (uint32_t)req->head_len;
    req->last_cb = LAST_FIELD;
  }
  if (count_header_bytes(conn, len, 431) < 0) return -1;
  if (arena_put(req, at, len) < 0) return parser_fail(conn, 503);
  return 0;
}

static int on_parser_header_value(http_parser *p, const char *at, size_t len) {
  kpi_http_conn *conn = p->data;
  kpi_http_request *req = conn->cur;
  if (req->headers_done) return count_header_bytes(conn, len, 431);
  if (req->last_cb != LAST_VALUE) {
    hdr_entry *h = &req->hdrs[req->n_hdrs - 1];
    h->name_len = (uint32_t)(req->head_len - h->name_off);
    if (arena_put(req, "", 1) < 0) return parser_fail(conn, 503);
    h->value_off = (uint32_t)req->head_len;
    req->last_cb = LAST_VALUE;
  }
  if (count_header_bytes(conn, len, 431) < 0) return -1;
  if (arena_put(req, at, len) < 0) return parser_fail(conn, 503);
  return 0;
}

static void on_uv_continue_written(uv_write_t *w, int status) {
  kpi_http_conn *conn = w->data;
  free(w);
  conn->writes--;
  if (!conn->closing && status < 0) conn_close(conn);
  else conn_watch_writes(conn);
}

/* `100 Continue` may go out only when no earlier response is still owed, or it would land
 * in the middle of the pipelined answers; otherwise conn_flush sends it once they are out. */
/* Returns -1 on failure without closing: it runs inside parser callbacks too, where the
 * caller must fail the parse instead of freeing the request under the parser. */
static int conn_maybe_continue(kpi_http_conn *conn) {
  static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
  kpi_http_request *req = conn->cur;
  if (!req || !req->expect_continue || req->continue_sent || conn->q_head) return 0;
  req->continue_sent = 1;
  uv_write_t *w = malloc(sizeof(*w));
  if (!w) return -1;
  w->data = conn;
  uv_buf_t buf = uv_buf_init((char *)line, sizeof line - 1);
  if (uv_write(w, (uv_stream_t *)&conn->tcp, &buf, 1, on_uv_continue_written) < 0) {
    free(w);
    return -1;
  }
  conn->writes++;
  conn->bytes_queued += sizeof line - 1;
  conn_watch_writes(conn);
  return 0;
}

static int on_parser_headers_complete(http_parser *p) {
  kpi_http_conn *conn = p->data;
  kpi_http_request *req = conn->cur;
  const kpi_http_config *cfg = &conn->srv->cfg;
  if (req_finish_item(req) < 0) return parser_fail(conn, 503);
  req->headers_done = 1;
  int rc = req_split_target(req);
  if (rc == -1) return parser_fail(conn, 400);
  if (rc < 0) return parser_fail(conn, 503);
  req->method = p->method;
  req->http10 = p->http_major == 1 && p->http_minor == 0;
  req->is_head = p->method == HTTP_HEAD;
  req->keep_alive = http_should_keep_alive(p) ? 1 : 0;
  int has_length = (p->flags & F_CONTENTLENGTH) != 0;
  /* Refuse before any body byte is read, so the client is told instead of waiting for
   * `100 Continue` or uploading a megabyte for nothing. */
  if (has_length && p->content_length > cfg->max_body_bytes) return parser_fail(conn, 413);
  int has_body = (p->flags & F_CHUNKED) || (has_length && p->content_length > 0);
  if (!has_body) return 0;
  if (has_length) {
    req->body = malloc((size_t)p->content_length + 1);
    if (!req->body) return parser_fail(conn, 503);
    req->body_cap = (size_t)p->content_length + 1;
    conn->srv->stats.body_bytes += req->body_cap;
  }
  conn->phase = PH_BODY;
  conn_arm(conn, conn->srv->cfg.body_timeout_ms);
  const char *expect = kpi_http_header(req, "expect");
  if (expect && !req->http10 && strcasecmp(expect, "100-continue") == 0) {
    req->expect_continue = 1;
    if (conn_maybe_continue(conn) < 0) return parser_fail(conn, 503);
  }
  return 0;
}

static int on_parser_chunk_header(http_parser *p) {
  kpi_http_conn *conn = p->data;
  /* Here content_length is the announced chunk size: refuse it before buffering it. */
  if (p->content_length > conn->srv->cfg.max_body_bytes - conn->cur->body_len)
    return parser_fail(conn, 413);
  return 0;
}

static int on_parser_body(http_parser *p, const char *at, size_t len) {
  kpi_http_conn *conn = p->data;
  kpi_http_request *req = conn->cur;
  size_t max = conn->srv->cfg.max_body_bytes;
  if (len > max - req->body_len) return parser_fail(conn, 413);
  if (req->body_len + len + 1 > req->body_cap) {
    /* Chunked bodies grow by doubling, never beyond the limit. */
    size_t cap = req->body_cap ? req->body_cap * 2 : 4096;
    if (cap < req->body_len + len + 1) cap = req->body_len + len + 1;
    if (cap > max + 1) cap = max + 1;
    char *nb = realloc(req->body, cap);
    if (!nb) return parser_fail(conn, 503);
    req->body = nb;
    conn->srv->stats.body_bytes += cap - req->body_cap;
    req->body_cap = cap;
  }
  memcpy(req->body + req->body_len, at, len);
  req->body_len += len;
  return 0;
}

static int on_parser_message_complete(http_parser *p) {
  kpi_http_conn *conn = p->data;
  kpi_http_request *req = conn->cur;
  if (req->body) req->body[req->body_len] = '\0';
  /* After an Upgrade or CONNECT the rest of the stream is another protocol: answer this
   * request and close. While draining, this request is the connection's last. */
  if (p->upgrade || conn->srv->draining) req->keep_alive = 0;
  conn->cur = NULL;
  conn->ready = req;
  conn->phase = PH_WAIT;
  conn_disarm(conn);
  /* Pausing hands control back to conn_feed, which dispatches outside the parser. */
  http_parser_pause(p, 1);
  return 0;
}

/* ---- connections ---- */

static void srv_maybe_closed(kpi_http_server *srv) {
  if (!srv->closing || srv->pending_closes > 0 || srv->n_conns > 0) return;
  free(srv->rbuf);
  srv->rbuf = NULL;
  kpi_http_close_cb cb = srv->on_closed;
  srv->on_closed = NULL;
  if (cb) cb(srv); /* last: it may free SRV */
}

static void on_uv_conn_closed(uv_handle_t *h) {
  kpi_http_conn *conn = h->data;
  if (--conn->handles_open > 0) return;
  kpi_http_server *srv = conn->srv;
  free(conn);
  srv->n_conns--;
  srv_maybe_closed(srv);
}

static void on_uv_timer(uv_timer_t *t);

/* The phase deadline. Every request sets it twice (headers, then idle after the answer) and
 * clears it once, and restarting a libuv timer each time is a heap removal and insertion per
 * call: a visible share of a small request's cost. So the deadline is a field, and the timer
 * is restarted only when it would fire too late for it; when it fires early, on_uv_timer
 * starts it again for what is left. A timeout still ends its phase at the very time the
 * phase armed it for. */
static void conn_arm(kpi_http_conn *conn, uint64_t ms) {
  uint64_t now = uv_now(conn->srv->loop);
  conn->deadline = now + ms;
  if (conn->timer_due == 0 || conn->timer_due > conn->deadline) {
    conn->timer_due = conn->deadline;
    uv_timer_start(&conn->timer, on_uv_timer, ms, 0);
  }
}

/* No phase timeout: a timer still running finds no deadline and does nothing. */
static void conn_disarm(kpi_http_conn *conn) { conn->deadline = 0; }

/* Bytes the kernel has taken: everything queued minus what libuv still holds. */
static uint64_t conn_bytes_sent(kpi_http_conn *conn) {
  return conn->bytes_queued - uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp);
}

static void on_uv_write_timer(uv_timer_t *t) {
  kpi_http_conn *conn = t->data;
  conn->wwatch = 0;
  if (conn->closing) return;
  uint64_t sent = conn_bytes_sent(conn);
  if (uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) == 0) return;
  if (sent != conn->wmark) {
    conn_watch_writes(conn);
    return;
  }
  conn->srv->stats.timeouts_write++;
  kpi_log(KPI_LOG_DEBUG, "http_write_timeout", "the client stopped reading its responses");
  conn_close(conn);
}

/* The write-progress deadline. It runs only while libuv holds bytes the kernel would not
 * take, i.e. the peer's window is full, so the common case (every write goes straight to
 * the socket) never touches the timer. Progress is measured in bytes taken, not in
 * completed writes, so a large response read slowly but steadily is never cut. Without
 * it a client that stops reading would hold its connection and its queued responses
 * forever: no phase timer runs while answers are owed. */
static void conn_watch_writes(kpi_http_conn *conn) {
  if (conn->closing) return;
  if (uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) == 0) {
    if (conn->wwatch) uv_timer_stop(&conn->wtimer);
    conn->wwatch = 0;
    return;
  }
  if (conn->wwatch) return;
  conn->wwatch = 1;
  conn->wmark = conn_bytes_sent(conn);
  uv_timer_start(&conn->wtimer, on_uv_write_timer, conn->srv->cfg.write_timeout_ms, 0);
}

/* Closes at once. Answered requests still queued are freed; unanswered ones stay with
 * their handler, orphaned, and are freed by kpi_http_respond. Writes in flight are
 * cancelled by libuv, whose callbacks run before the close callbacks free CONN. */
static void conn_close(kpi_http_conn *conn) {
  if (conn->closing) return;
  kpi_http_server *srv = conn->srv;
  conn->closing = 1;
  kpi_http_request *req = conn->q_head;
  while (req) {
    kpi_http_request *next = req->next;
    req->next = NULL;
    if (req->responded) req_free(req);
    else req_orphan(req);
    req = next;
  }
  conn->q_head = conn->q_tail = NULL;
  conn->q_len = 0;
  req_free(conn->cur);
  conn->cur = NULL;
  req_free(conn->ready);
  conn->ready = NULL;
  free(conn->pending);
  conn->pending = NULL;
  if (conn->active) {
    conn->active = 0;
    srv->stats.connections_active--;
    if (conn->prev) conn->prev->next = conn->next;
    else srv->conns = conn->next;
    if (conn->next) conn->next->prev = conn->prev;
    conn->prev = conn->next = NULL;
  }
  uv_close((uv_handle_t *)&conn->tcp, on_uv_conn_closed);
  uv_close((uv_handle_t *)&conn->timer, on_uv_conn_closed);
  uv_close((uv_handle_t *)&conn->wtimer, on_uv_conn_closed);
}

static void on_uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  kpi_http_conn *conn = h->data;
  *buf = uv_buf_init(conn->srv->rbuf, READ_BUF_SIZE);
}

static void on_uv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void conn_update_reading(kpi_http_conn *conn) {
  int want = !conn->closing && !conn->peer_eof && !conn->paused;
  if (want && !conn->reading) {
    if (uv_read_start((uv_stream_t *)&conn->tcp, on_uv_alloc, on_uv_read) < 0) {
      conn_close(conn);
      return;
    }
    conn->reading = 1;
  } else if (!want && conn->reading) {
    uv_read_stop((uv_stream_t *)&conn->tcp);
    conn->reading = 0;
  }
}

static void on_uv_shutdown(uv_shutdown_t *sr, int status) {
  kpi_http_conn *conn = sr->data;
  if (conn->closing) return;
  if (status < 0 || conn->peer_eof) conn_close(conn);
}

/* The last response is out: send FIN, then drain input until the client closes. */
static void conn_shutdown(kpi_http_conn *conn) {
  conn->phase = PH_LINGER;
  conn->no_more = 1;
  conn->paused = 0;
  free(conn->pending);
  conn->pending = NULL;
  conn->shutdown_req.data = conn;
  if (uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_uv_shutdown) < 0) {
    conn_close(conn);
    return;
  }
  conn_arm(conn, LINGER_MS);
  conn_update_reading(conn);
}

static void conn_feed(kpi_http_conn *conn, const char *data, size_t len);

/* Called whenever a response left the connection. */
static void conn_after_write(kpi_http_conn *conn) {
  kpi_http_server *srv = conn->srv;
  if (conn->paused && conn->q_len + conn->writes < srv->cfg.max_pipelined) {
    conn->paused = 0;
    char *pending = conn->pending;
    size_t pending_len = conn->pending_len;
    conn->pending = NULL;
    conn->pending_len = 0;
    if (pending) conn_feed(conn, pending, pending_len);
    free(pending);
    if (conn->closing) return;
    conn_update_reading(conn);
  }
  if (conn->q_len > 0 || conn->writes > 0) return;
  /* A half-closed client cannot finish a request it started: nothing more is owed. */
  if (conn->peer_eof) {
    conn_close(conn);
    return;
  }
  if (conn->phase != PH_WAIT) return;
  if (srv->draining) {
    conn_close(conn);
    return;
  }
  conn_arm(conn, srv->cfg.idle_timeout_ms);
}

/* What follows a response leaving the connection: once the last one is out (fin_due and no
 * write left in libuv) the connection ends with FIN; otherwise reading may resume or the idle
 * timeout starts. */
static void conn_written(kpi_http_conn *conn) {
  conn_watch_writes(conn);
  if (conn->fin_due) {
    if (conn->writes == 0) conn_shutdown(conn);
    return;
  }
  conn_after_write(conn);
}

static void on_uv_write(uv_write_t *w, int status) {
  kpi_http_request *req = w->data;
  kpi_http_conn *conn = req->conn;
  req_free(req);
  conn->writes--;
  if (conn->closing) return;
  if (status < 0) {
    conn_close(conn);
    return;
  }
  conn_written(conn);
}

/* Sends REQ's response (BUFS, TOTAL bytes). Most responses fit the socket's buffer at once:
 * uv_try_write sends them without a write request, whose completion would cost a deferred
 * callback and an epoll_ctl (libuv re-registers the socket each time its write queue drains).
 * Whatever the kernel did not take, and every response while libuv still holds earlier bytes
 * (uv_try_write then refuses, which keeps the order), goes through uv_write. So does every
 * response of a paused connection: resuming it parses and dispatches the requests kept aside,
 * which must happen from on_uv_write, never inside the kpi_http_respond of another request.
 * Returns 1 when the whole response was written (REQ is then freed), 0 when it was queued, or
 * -1 on a write error (REQ freed, the connection is the caller's to close). */
static int conn_write(kpi_http_conn *conn, kpi_http_request *req, uv_buf_t *bufs,
                      unsigned nbufs, size_t total) {
  conn->bytes_queued += total;
  int n = conn->paused ? 0 : uv_try_write((uv_stream_t *)&conn->tcp, bufs, nbufs);
  if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
  if (n < 0) {
    req_free(req);
    return -1;
  }
  if ((size_t)n == total) {
    req_free(req);
    return 1;
  }
  size_t skip = (size_t)n;
  unsigned first = 0;
  while (skip >= bufs[first].len) skip -= bufs[first++].len;
  bufs[first].base += skip;
  bufs[first].len -= skip;
  req->write_req.data = req;
  if (uv_write(&req->write_req, (uv_stream_t *)&conn->tcp, bufs + first, nbufs - first,
               on_uv_write) < 0) {
    req_free(req);
    return -1;
  }
  conn->writes++;
  return 0;
}

/* Writes the answered requests at the head of the queue; a later answer waits for every
 * earlier one. The Connection header is chosen here, not when answering, because only now
 * is it known whether this response is the connection's last. */
static void conn_flush(kpi_http_conn *conn) {
  static const char close_hdr[] = "Connection: close\r\n";
  static const char keep_hdr[] = "Connection: keep-alive\r\n";
  kpi_http_server *srv = conn->srv;
  int written = 0;
  while (!conn->closing && conn->q_head && conn->q_head->responded) {
    kpi_http_request *req = conn->q_head;
    conn->q_head = req->next;
    if (!conn->q_head) conn->q_tail = NULL;
    req->next = NULL;
    conn->q_len--;
    if (!conn->q_head &&
        (conn->peer_eof || (srv->draining && conn->phase == PH_WAIT)))
      req->keep_alive = 0;
    if (!req->keep_alive) conn->no_more = 1;
    /* RESP holds the head, then "\r\n" and the body (TAIL; HEAD: the "\r\n" only): one
     * buffer, unless a Connection header goes in between. */
    size_t tail = req->is_head ? 2 : req->resp_len - req->resp_head_len;
    const char *conn_hdr = !req->keep_alive ? close_hdr : req->http10 ? keep_hdr : NULL;
    uv_buf_t bufs[3];
    unsigned nbufs = 0;
    if (!conn_hdr) {
      bufs[nbufs++] = uv_buf_init(req->resp, (unsigned)(req->resp_head_len + tail));
    } else {
      bufs[nbufs++] = uv_buf_init(req->resp, (unsigned)req->resp_head_len);
      bufs[nbufs++] = uv_buf_init((char *)conn_hdr, (unsigned)strlen(conn_hdr));
      bufs[nbufs++] = uv_buf_init(req->resp + req->resp_head_len, (unsigned)tail);
    }
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
    if (!req->keep_alive) conn->fin_due = 1;
    int rc = conn_write(conn, req, bufs, nbufs, total);
    if (rc < 0) {
      conn_close(conn);
      return;
    }
    written |= rc;
  }
  /* Responses written at once are done here as on_uv_write does it for queued ones. */
  if (written && !conn->closing) conn_written(conn);
  else conn_watch_writes(conn);
  if (!conn->closing && !conn->fin_due && conn_maybe_continue(conn) < 0) conn_close(conn);
}

static void conn_enqueue(kpi_http_conn *conn, kpi_http_request *req) {
  req->conn = conn;
  req->next = NULL;
  if (conn->q_tail) conn->q_tail->next = req;
  else conn->q_head = req;
  conn->q_tail = req;
  conn->q_len++;
}

/* Queues an error answer behind the requests already received and stops parsing: after
 * a parse error the stream position is unknown, so the connection ends with this answer.
 * The phase timer becomes a hard deadline in case earlier answers never come. */
static void conn_fail(kpi_http_conn *conn, int status, const char *detail) {
  kpi_http_server *srv = conn->srv;
  if (status < 500) srv->stats.bad_requests++;
  req_free(conn->cur);
  conn->cur = NULL;
  conn->phase = PH_FAILED;
  conn->no_more = 1;
  conn_arm(conn, srv->cfg.header_timeout_ms);
  kpi_http_request *req = req_new(srv);
  if (!req) {
    conn_close(conn);
    return;
  }
  req->keep_alive = 0;
  conn_enqueue(conn, req);
  kpi_http_respond_problem(req, status, NULL, detail, NULL);
}

/* The route bit of an http-parser method; 0 for a method no route can list. */
static unsigned method_bit(int method) {
  switch (method) {
  case HTTP_GET: return KPI_HTTP_GET;
  case HTTP_HEAD: return KPI_HTTP_HEAD;
  case HTTP_POST: return KPI_HTTP_POST;
  case HTTP_PUT: return KPI_HTTP_PUT;
  case HTTP_DELETE: return KPI_HTTP_DELETE;
  case HTTP_PATCH: return KPI_HTTP_PATCH;
  case HTTP_OPTIONS: return KPI_HTTP_OPTIONS;
  default: return 0;
  }
}

/* RFC 9110's methods plus PATCH: the ones this server knows (QUERY, still an IETF draft
 * that http-parser does not parse, is unknown: 501, as RFC 9110 §15.6.2 asks). http-parser also parses
 * WebDAV, UPnP and other extensions; those are 501 like any method it does not know, since
 * "known" would promise a 405 naming what the resource does support. */
static int method_implemented(int method) {
  return method_bit(method) != 0 || method == HTTP_TRACE || method == HTTP_CONNECT;
}

static int route_matches(const kpi_http_route *rt, const char *path) {
  size_t n = strlen(rt->path);
  if (n > 0 && rt->path[n - 1] == '*') return strncmp(path, rt->path, n - 1) == 0;
  return strcmp(path, rt->path) == 0;
}

/* Answers REQ with 405 and the `Allow` header its route's METHODS make. */
static void respond_405(kpi_http_request *req, unsigned methods) {
  static const struct {
    unsigned bit;
    const char *name;
  } names[] = {{KPI_HTTP_GET, "GET"},       {KPI_HTTP_HEAD, "HEAD"},
               {KPI_HTTP_POST, "POST"},     {KPI_HTTP_PUT, "PUT"},
               {KPI_HTTP_DELETE, "DELETE"}, {KPI_HTTP_PATCH, "PATCH"},
               {KPI_HTTP_OPTIONS, "OPTIONS"}};
  /* Every name, with separators, fits: "GET, HEAD, POST, ..., OPTIONS" is 45 bytes. */
  char allow[96] = "Allow: ";
  size_t n = 7;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!(methods & names[i].bit)) continue;
    if (n > 7) {
      memcpy(allow + n, ", ", 2);
      n += 2;
    }
    size_t len = strlen(names[i].name);
    memcpy(allow + n, names[i].name, len);
    n += len;
  }
  allow[n] = '\0';
  char detail[128];
  snprintf(detail, sizeof detail, "this resource allows %.60s", allow + 7);
  memcpy(allow + n, "\r\n", 3);
  kpi_http_respond_problem_ex(req, 405, NULL, NULL, detail, NULL, allow);
}

/* Hands REQ to the service, unless the server can answer it alone: an unimplemented
 * method (501), and with routes declared an unknown path (404) or a method the route does
 * not list (405). The connection stays open in all three cases: the request was parsed. */
static void conn_dispatch(kpi_http_conn *conn, kpi_http_request *req) {
  kpi_http_server *srv = conn->srv;
  conn_enqueue(conn, req);
  if (!req->keep_alive) conn->no_more = 1;
  if (!method_implemented(req->method)) {
    kpi_http_respond_problem(req, 501, NULL, "the request method is not implemented", NULL);
    return;
  }
  if (srv->routes) {
    const char *path = kpi_http_request_path(req);
    size_t i = 0;
    while (i < srv->n_routes && !route_matches(&srv->routes[i], path)) i++;
    if (i == srv->n_routes) {
      kpi_http_respond_problem(req, 404, NULL, "no such resource", NULL);
      return;
    }
    if (!(srv->routes[i].methods & method_bit(req->method))) {
      respond_405(req, srv->routes[i].methods);
      return;
    }
    req->route = (int)i;
  }
  srv->stats.requests++;
  srv->on_request(req, srv->opaque);
}

static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* http-parser stops at the first byte that no method it knows continues with. The
 * request is a well-formed one with an unknown method (501) when the bytes from there to
 * the next space are token characters and the method is not empty; the bytes before the
 * failure were a known method's prefix, hence token characters too. Input that ends
 * inside the token counts as a method: the parser cannot resume to see more. */
static int unknown_method_token(const kpi_http_conn *conn, const char *at, size_t len) {
  size_t k = 0;
  while (k < len && is_tchar((unsigned char)at[k])) k++;
  if (k + (conn->cur ? 1 : 0) == 0) return 0;
  return k == len || at[k] == ' ';
}

static const char *status_detail(int status) {
  switch (status) {
  case 413: return "the request body exceeds the server's limit";
  case 414: return "the request target exceeds the server's header size limit";
  case 431: return "the request headers exceed the server's size or count limit";
  case 501: return "the request method is not implemented";
  default: return "the server could not allocate memory for the request";
  }
}

/* Parses until input runs out, the connection must stop, or too many answers are owed;
 * in the last case the rest is kept and reading stops until answers drain (back-pressure
 * on clients that pipeline faster than handlers answer). */
static void conn_feed(kpi_http_conn *conn, const char *data, size_t len) {
  kpi_http_server *srv = conn->srv;
  while (len > 0 && !conn->closing && !conn->no_more && conn->phase < PH_FAILED) {
    size_t n = http_parser_execute(&conn->parser, &parser_settings, data, len);
    data += n;
    len -= n;
    enum http_errno err = HTTP_PARSER_ERRNO(&conn->parser);
    if (err == HPE_PAUSED) {
      http_parser_pause(&conn->parser, 0);
      kpi_http_request *req = conn->ready;
      conn->ready = NULL;
      conn_dispatch(conn, req);
      if (conn->closing || conn->no_more) return;
      /* Pause even when this read ended exactly after the request: a client that sends
       * one request per segment would otherwise never hit the bound. */
      if (conn->q_len + conn->writes >= srv->cfg.max_pipelined) {
        if (len > 0) {
          conn->pending = malloc(len);
          if (!conn->pending) {
            conn_close(conn);
            return;
          }
          memcpy(conn->pending, data, len);
          conn->pending_len = len;
        }
        conn->paused = 1;
        conn_update_reading(conn);
        return;
      }
      continue;
    }
    if (err != HPE_OK) {
      int status = conn->fail_status;
      if (status == 0) status = err == HPE_HEADER_OVERFLOW ? 431 : 400;
      if (status == 400 && err == HPE_INVALID_METHOD && unknown_method_token(conn, data, len))
        status = 501;
      const char *detail =
          status == 400 ? http_errno_description(err) : status_detail(status);
      conn->fail_status = 0;
      conn_fail(conn, status, detail);
      return;
    }
    return; /* HPE_OK consumes all input */
  }
}

static void on_uv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  kpi_http_conn *conn = s->data;
  if (conn->closing || nread == 0) return;
  if (nread < 0) {
    if (nread != UV_EOF) {
      conn_close(conn);
      return;
    }
    /* A half-closed client still gets the answers it is owed; with none owed, or in the
     * linger phase, there is nothing left to do. */
    conn->peer_eof = 1;
    conn_update_reading(conn);
    if (conn->phase == PH_LINGER || (conn->q_len == 0 && conn->writes == 0))
      conn_close(conn);
    return;
  }
  /* After the last request, input is read only to be discarded (see LINGER_MS). */
  if (conn->no_more || conn->phase >= PH_FAILED) return;
  conn_feed(conn, buf->base, (size_t)nread);
}

static void on_uv_timer(uv_timer_t *t) {
  kpi_http_conn *conn = t->data;
  kpi_http_stats *st = &conn->srv->stats;
  conn->timer_due = 0;
  if (conn->deadline == 0) return;
  uint64_t now = uv_now(conn->srv->loop);
  if (now < conn->deadline) { /* armed for an earlier deadline since replaced: wait on */
    conn->timer_due = conn->deadline;
    uv_timer_start(t, on_uv_timer, conn->deadline - now, 0);
    return;
  }
  conn->deadline = 0;
  switch (conn->phase) {
  case PH_HEADERS:
    st->timeouts_header++;
    kpi_log(KPI_LOG_DEBUG, "http_header_timeout", "request headers incomplete in time");
    conn_fail(conn, 408, "the request headers did not arrive in time");
    break;
  case PH_BODY:
    st->timeouts_body++;
    kpi_log(KPI_LOG_DEBUG, "http_body_timeout", "request body incomplete in time");
    conn_fail(conn, 408, "the request body did not arrive in time");
    break;
  case PH_WAIT:
    st->timeouts_idle++;
    conn_close(conn);
    break;
  case PH_FAILED:
  case PH_LINGER:
    conn_close(conn);
    break;
  }
}

/* Over the connection limit the socket is still accepted, because libuv stops accepting
 * until we do, and told 503 in one best-effort write before it is closed. */
static void conn_reject(kpi_http_server *srv, kpi_http_conn *conn) {
  static const char body[] = "{\"type\":\"about:blank\",\"title\":\"Service Unavailable\","
                             "\"status\":503,\"detail\":\"too many connections\"}";
  char msg[512];
  int n = snprintf(msg, sizeof msg,
                   "HTTP/1.1 503 Service Unavailable\r\n"
                   "Content-Type: application/problem+json\r\nContent-Length: %zu\r\n"
                   "Retry-After: 1\r\nConnection: close\r\n\r\n%s",
                   sizeof body - 1, body);
  uv_buf_t buf = uv_buf_init(msg, (unsigned)n);
  (void)uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
  srv->stats.connections_rejected++;
  conn->closing = 1;
  uv_close((uv_handle_t *)&conn->tcp, on_uv_conn_closed);
}

/* Records the peer's address; IPv4 peers of a dual-stack listener arrive as IPv4-mapped
 * IPv6 and are stored as IPv4, so one client counts as one peer however it connects. */
static void conn_set_peer(kpi_http_conn *conn) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  conn->peer_len = 0;
  if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&ss, &len) < 0) return;
  if (ss.ss_family == AF_INET) {
    memcpy(conn->peer, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    conn->peer_len = 4;
  } else if (ss.ss_family == AF_INET6) {
    const unsigned char *a = ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
      memcpy(conn->peer, a + 12, 4);
      conn->peer_len = 4;
    } else {
      memcpy(conn->peer, a, 16);
      conn->peer_len = 16;
    }
  }
}

/* Open connections from CONN's peer. A walk of the list, at most max_connections long, on
 * accept only: a few microseconds at 1024 connections, cheaper than keeping a table in
 * step with every close. */
static unsigned peer_count(const kpi_http_server *srv, const kpi_http_conn *conn) {
  unsigned n = 0;
  for (const kpi_http_conn *c = srv->conns; c; c = c->next)
    if (c->peer_len == conn->peer_len && memcmp(c->peer, conn->peer, conn->peer_len) == 0) n++;
  return n;
}

static void on_uv_connection(uv_stream_t *listener, int status) {
  kpi_http_server *srv = listener->data;
  if (status < 0) {
    kpi_log(KPI_LOG_WARN, "http_accept_failed", "%s", uv_strerror(status));
    return;
  }
  kpi_http_conn *conn = calloc(1, sizeof(*conn));
  if (!conn) {
    kpi_log(KPI_LOG_ERROR, "http_accept_failed", "out of memory");
    return;
  }
  conn->srv = srv;
  uv_tcp_init(srv->loop, &conn->tcp);
  conn->tcp.data = conn;
  conn->handles_open = 1;
  srv->n_conns++;
  if (uv_accept(listener, (uv_stream_t *)&conn->tcp) < 0) {
    conn->closing = 1;
    uv_close((uv_handle_t *)&conn->tcp, on_uv_conn_closed);
    return;
  }
  if (srv->stats.connections_active >= srv->cfg.max_connections || srv->draining) {
    conn_reject(srv, conn);
    return;
  }
  conn_set_peer(conn);
  if (conn->peer_len && peer_count(srv, conn) >= srv->cfg.max_connections_per_peer) {
    conn_reject(srv, conn);
    return;
  }
  uv_timer_init(srv->loop, &conn->timer);
  conn->timer.data = conn;
  uv_timer_init(srv->loop, &conn->wtimer);
  conn->wtimer.data = conn;
  conn->handles_open = 3;
  conn->active = 1;
  conn->next = srv->conns;
  if (srv->conns) srv->conns->prev = conn;
  srv->conns = conn;
  srv->stats.connections_active++;
  srv->stats.connections_accepted++;
  http_parser_init(&conn->parser, HTTP_REQUEST);
  conn->parser.data = conn;
  /* Small responses must not wait for Nagle's delayed ACK dance. */
  uv_tcp_nodelay(&conn->tcp, 1);
  conn->phase = PH_WAIT;
  /* A fresh connection gets the header timeout, not the idle one: a client that connects
   * and sends nothing is the cheapest way to hold a slot. */
  conn_arm(conn, srv->cfg.header_timeout_ms);
  conn_update_reading(conn);
}

/* ---- responses ---- */

/* Writes "HTTP/1.1 <status> <reason>\r\n", then unless BODYLESS "Content-Length: <len>\r\n",
 * into LINE (160 bytes: the longest reason phrase is 31) and returns its length. By hand,
 * because it runs for every response and snprintf was a visible share of a small one. */
static int status_line(char *line, int status, int bodyless, size_t len) {
  const char *reason = kpi_http_reason(status);
  size_t rl = strnlen(reason, 64);
  char *o = line;
  memcpy(o, "HTTP/1.1 ", 9);
  o += 9;
  *o++ = (char)('0' + status / 100);
  *o++ = (char)('0' + status / 10 % 10);
  *o++ = (char)('0' + status % 10);
  *o++ = ' ';
  memcpy(o, reason, rl);
  o += rl;
  memcpy(o, "\r\n", 2);
  o += 2;
  if (!bodyless) {
    char dig[24];
    int nd = 0;
    do {
      dig[nd++] = (char)('0' + len % 10);
      len /= 10;
    } while (len);
    memcpy(o, "Content-Length: ", 16);
    o += 16;
    while (nd) *o++ = dig[--nd];
    memcpy(o, "\r\n", 2);
    o += 2;
  }
  return (int)(o - line);
}

int kpi_http_respond(kpi_http_request *req, int status, const char *content_type,
                     const void *body, size_t len, const char *extra_headers) {
  kpi_http_conn *conn = req->conn;
  if (!conn) {
    req_free(req);
    return 0;
  }
  if (status < 200 || status > 599 || (content_type && strpbrk(content_type, "\r\n"))) {
    conn_close(conn); /* orphans REQ, which is ours to free */
    req_free(req);
    return KPI_HTTP_EINVAL;
  }
  /* 204 and 304 carry neither a body nor (for 204) a Content-Length. */
  int bodyless = status == 204 || status == 304;
  if (bodyless) len = 0;
  char line[160];
  int n = status_line(line, status, bodyless, len);
  size_t ct_len = content_type ? strlen(content_type) : 0;
  size_t extra_len = extra_headers ? strlen(extra_headers) : 0;
  int extra_crlf = extra_len >= 2 && memcmp(extra_headers + extra_len - 2, "\r\n", 2) == 0;
  size_t head_len = (size_t)n + (content_type ? ct_len + 16 : 0) + extra_len +
                    (extra_len && !extra_crlf ? 2 : 0);
  char *resp = malloc(head_len + 2 + len);
  if (!resp) {
    conn_close(conn);
    req_free(req);
    return KPI_HTTP_ENOMEM;
  }
  char *p = resp;
  memcpy(p, line, (size_t)n);
  p += n;
  if (content_type) {
    memcpy(p, "Content-Type: ", 14);
    memcpy(p + 14, content_type, ct_len);
    memcpy(p + 14 + ct_len, "\r\n", 2);
    p += ct_len + 16;
  }
  if (extra_len) {
    memcpy(p, extra_headers, extra_len);
    p += extra_len;
    if (!extra_crlf) {
      memcpy(p, "\r\n", 2);
      p += 2;
    }
  }
  memcpy(p, "\r\n", 2);
  if (len) memcpy(p + 2, body, len); /* BODY may be REQ's own: release only after this */
  req_release_input(req);
  req->resp = resp;
  req->resp_head_len = head_len;
  req->resp_len = head_len + 2 + len;
  req->status = status;
  req->responded = 1;
  conn->srv->stats.responses[status / 100]++;
  conn_flush(conn);
  return 0;
}

int kpi_http_respond_problem_ex(kpi_http_request *req, int status, const char *type,
                                const char *title, const char *detail, cJSON *errors,
                                const char *extra_headers) {
  cJSON *doc = cJSON_CreateObject();
  char *text = NULL;
  if (!doc) goto err;
  if (!title) title = kpi_http_reason(status);
  if (!cJSON_AddStringToObject(doc, "type", type ? type : "about:blank") ||
      !cJSON_AddStringToObject(doc, "title", title) ||
      !cJSON_AddNumberToObject(doc, "status", status) ||
      (detail && !cJSON_AddStringToObject(doc, "detail", detail)))
    goto err;
  if (errors) {
    cJSON_AddItemToObject(doc, "errors", errors);
    errors = NULL; /* now owned by DOC */
  }
  text = cJSON_PrintUnformatted(doc);
  if (!text) goto err;
  cJSON_Delete(doc);
  int rc = kpi_http_respond(req, status, "application/problem+json", text, strlen(text),
                            extra_headers);
  cJSON_free(text);
  return rc;
err:
  cJSON_Delete(doc);
  cJSON_Delete(errors);
  if (req->conn) conn_close(req->conn);
  req_free(req);
  return KPI_HTTP_ENOMEM;
}

int kpi_http_respond_problem(kpi_http_request *req, int status, const char *title,
                             const char *detail, cJSON *errors) {
  return kpi_http_respond_problem_ex(req, status, NULL, title, detail, errors, NULL);
}

/* ---- server ---- */

int kpi_http_server_init(kpi_http_server *srv, uv_loop_t *loop, const kpi_http_config *cfg,
                         kpi_http_request_cb on_request, void *opaque) {
  if (!srv || !loop || !on_request) return KPI_HTTP_EINVAL;
  void *data = srv->data; /* the owner may have set it already */
  memset(srv, 0, sizeof(*srv));
  srv->data = data;
  if (cfg) srv->cfg = *cfg;
  else kpi_http_config_defaults(&srv->cfg);
  const kpi_http_config *c = &srv->cfg;
  /* max_body_bytes may be 0: a service that takes no bodies at all. */
  if (!c->max_header_bytes || !c->max_headers || !c->max_connections ||
      !c->max_connections_per_peer || !c->header_timeout_ms || !c->body_timeout_ms ||
      !c->idle_timeout_ms || !c->write_timeout_ms || !c->max_pipelined)
    return KPI_HTTP_EINVAL;
  srv->loop = loop;
  srv->on_request = on_request;
  srv->opaque = opaque;
  srv->port = KPI_HTTP_ESTATE;
  srv->rbuf = malloc(READ_BUF_SIZE);
  if (!srv->rbuf) return KPI_HTTP_ENOMEM;
  int rc = uv_tcp_init(loop, &srv->listener);
  if (rc < 0) {
    free(srv->rbuf);
    srv->rbuf = NULL;
    return rc;
  }
  uv_timer_init(loop, &srv->guard);
  srv->listener.data = srv;
  srv->guard.data = srv;
  return 0;
}

/* libuv 1.44 has no UV_TCP_REUSEPORT: the listener gets its socket here, with SO_REUSEPORT,
 * before uv_tcp_bind (which then binds that socket). Linux spreads new connections among the
 * sockets bound to the port by a hash of the peer's address and port (docs/http.md
 * "Scale-out"). Every process must set it: a socket bound without it blocks the port. */
static int listener_reuseport(kpi_http_server *srv, int family) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int one = 1, rc = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) rc = -errno;
  else rc = uv_tcp_open(&srv->listener, fd);
  if (rc < 0) close(fd);
  return rc;
}

int kpi_http_server_start(kpi_http_server *srv, const char *host, int port) {
  if (srv->listening || srv->listener_closed) return KPI_HTTP_ESTATE;
  if (port < 0 || port > 65535 || !host) return KPI_HTTP_EINVAL;
  struct sockaddr_storage ss;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
  if (rc < 0) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
  if (rc < 0) return KPI_HTTP_EINVAL;
  if (srv->cfg.reuseport && (rc = listener_reuseport(srv, ss.ss_family)) < 0) return rc;
  if ((rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&ss, 0)) < 0) return rc;
  if ((rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_uv_connection)) < 0) return rc;
  int len = sizeof ss;
  if ((rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len)) < 0) return rc;
  srv->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  srv->listening = 1;
  return 0;
}

int kpi_http_server_set_routes(kpi_http_server *srv, const kpi_http_route *routes, size_t n) {
  if (!routes || n == 0) return KPI_HTTP_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!routes[i].path || !routes[i].methods) return KPI_HTTP_EINVAL;
  srv->routes = routes;
  srv->n_routes = n;
  return 0;
}


int kpi_http_server_port(const kpi_http_server *srv) {
  return srv->listening ? srv->port : KPI_HTTP_ESTATE;
}

static void on_uv_server_handle_closed(uv_handle_t *h) {
  kpi_http_server *srv = h->data;
  srv->pending_closes--;
  srv_maybe_closed(srv);
}

void kpi_http_server_stop_accepting(kpi_http_server *srv) {
  if (!srv->listener_closed) {
    srv->listener_closed = 1;
    srv->listening = 0;
    srv->pending_closes++;
    uv_close((uv_handle_t *)&srv->listener, on_uv_server_handle_closed);
  }
  srv->draining = 1;
  /* Idle keep-alive connections would otherwise hold the process for idle_timeout_ms. */
  kpi_http_conn *conn = srv->conns;
  while (conn) {
    kpi_http_conn *next = conn->next;
    if (conn->phase == PH_WAIT && conn->q_len == 0 && conn->writes == 0) conn_close(conn);
    conn = next;
  }
}

void kpi_http_server_close(kpi_http_server *srv, kpi_http_close_cb on_closed) {
  if (srv->closing) return;
  kpi_http_server_stop_accepting(srv);
  srv->closing = 1;
  srv->on_closed = on_closed;
  srv->pending_closes++;
  uv_close((uv_handle_t *)&srv->guard, on_uv_server_handle_closed);
  while (srv->conns) conn_close(srv->conns);
}

int kpi_http_server_export_metrics(const kpi_http_server *srv, kpi_metrics *m) {
  static const char *const classes[] = {NULL, "class=\"1xx\"", "class=\"2xx\"",
                                        "class=\"3xx\"", "class=\"4xx\"", "class=\"5xx\""};
  static const char *const phases[] = {"phase=\"header\"", "phase=\"body\"", "phase=\"idle\"",
                                       "phase=\"write\""};
  const kpi_http_stats *st = &srv->stats;
  const uint64_t timeouts[] = {st->timeouts_header, st->timeouts_body, st->timeouts_idle,
                               st->timeouts_write};
  kpi_metric *s;
  for (int i = 1; i <= 5; i++) {
    if (!(s = kpi_metrics_counter(m, "kpi_http_responses_total", classes[i],
                                  "HTTP responses by status class.")))
      return KPI_HTTP_ENOMEM;
    kpi_metrics_set(s, (double)st->responses[i]);
  }
  if (!(s = kpi_metrics_counter(m, "kpi_http_requests_total", NULL,
                                "Complete HTTP requests handed to the service.")))
    return KPI_HTTP_ENOMEM;
  kpi_metrics_set(s, (double)st->requests);
  if (!(s = kpi_metrics_gauge(m, "kpi_http_connections_active", NULL,
                              "Open HTTP connections.")))
    return KPI_HTTP_ENOMEM;
  kpi_metrics_set(s, (double)st->connections_active);
  if (!(s = kpi_metrics_counter(m, "kpi_http_connections_total", NULL,
                                "Accepted HTTP connections.")))
    return KPI_HTTP_ENOMEM;
  kpi_metrics_set(s, (double)st->connections_accepted);
  if (!(s = kpi_metrics_counter(m, "kpi_http_connections_rejected_total", NULL,
                                "Connections refused with 503 over the connection limit "
                                "(total or per peer address).")))
    return KPI_HTTP_ENOMEM;
  kpi_metrics_set(s, (double)st->connections_rejected);
  for (int i = 0; i < 4; i++) {
    if (!(s = kpi_metrics_counter(m, "kpi_http_timeouts_total", phases[i],
                                  "Connections cut off by a header, body, idle or write "
                                  "timeout.")))
      return KPI_HTTP_ENOMEM;
    kpi_metrics_set(s, (double)timeouts[i]);
  }
  if (!(s = kpi_metrics_counter(m, "kpi_http_bad_requests_total", NULL,
                                "Requests refused for malformed syntax or a limit.")))
    return KPI_HTTP_ENOMEM;
  kpi_metrics_set(s, (double)st->bad_requests);
  if (!(s = kpi_metrics_gauge(m, "kpi_http_request_body_bytes", NULL,
                              "Request body bytes held in memory, answered requests excluded.")))
    return KPI_HTTP_ENOMEM;
  kpi_metrics_set(s, (double)st->body_bytes);
  return 0;
}

int kpi_http_respond_metrics(kpi_http_request *req, const kpi_http_server *srv, kpi_metrics *m) {
  char *text = NULL;
  size_t len = 0;
  if (kpi_http_server_export_metrics(srv, m) != 0 || kpi_metrics_render(m, &text, &len) != 0)
    return kpi_http_respond_problem(req, 500, NULL, "out of memory", NULL);
  int rc = kpi_http_respond(req, 200, KPI_METRICS_CONTENT_TYPE, text, len, NULL);
  free(text);
  return rc;
}

/* ---- header and query helpers ---- */

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

/* Skips optional white space (RFC 9110 OWS). */
static const char *skip_ows(const char *p) {
  while (is_blank(*p)) p++;
  return p;
}

bool kpi_http_media_type_charset(const char *ct, const char *type, char *charset,
                                 size_t size) {
  if (size) charset[0] = '\0';
  if (!ct) return false;
  const char *p = skip_ows(ct);
  size_t tl = strlen(type);
  if (strncasecmp(p, type, tl) != 0) return false;
  p = skip_ows(p + tl);
  while (*p) {
    if (*p != ';') return false;
    p = skip_ows(p + 1);
    if (*p == '\0') return true;
    if (strncasecmp(p, "charset", 7) != 0) return false;
    p = skip_ows(p + 7);
    if (*p != '=') return false;
    p = skip_ows(p + 1);
    bool quoted = *p == '"';
    if (quoted) p++;
    size_t n = 0;
    while (p[n] && p[n] != '"' && p[n] != ';' && !is_blank(p[n])) n++;
    if (n == 0 || n >= size) return false;
    memcpy(charset, p, n);
    charset[n] = '\0';
    p += n;
    if (quoted) {
      if (*p != '"') return false;
      p++;
    }
    p = skip_ows(p);
  }
  return true;
}

bool kpi_http_media_type_is(const char *ct, const char *type) {
  if (!ct) return false;
  const char *p = skip_ows(ct);
  size_t tl = strlen(type);
  if (strncasecmp(p, type, tl) != 0) return false;
  p = skip_ows(p + tl);
  while (*p) {
    if (*p != ';') return false;
    p = skip_ows(p + 1);
    if (*p == '\0') return true; /* a trailing ';' is harmless */
    if (strncasecmp(p, "charset", 7) != 0) return false;
    p = skip_ows(p + 7);
    if (*p != '=') return false;
    p = skip_ows(p + 1);
    bool quoted = *p == '"';
    if (quoted) p++;
    if (strncasecmp(p, "utf-8", 5) != 0) return false;
    p += 5;
    if (quoted) {
      if (*p != '"') return false;
      p++;
    }
    p = skip_ows(p);
  }
  return true;
}

int kpi_http_query_flag(const char *query, const char *name, int *out) {
  *out = 0;
  size_t nl = strlen(name);
  const char *p = query ? query : "";
  while (*p) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen >= nl && strncmp(p, name, nl) == 0 && (plen == nl || p[nl] == '=')) {
      const char *v = plen == nl ? "" : p + nl + 1;
      size_t vl = plen == nl ? 0 : plen - nl - 1;
      if ((vl == 0 && plen == nl) || (vl == 4 && strncmp(v, "true", 4) == 0) ||
          (vl == 1 && v[0] == '1')) {
        *out = 1;
        return 0;
      }
      if ((vl == 5 && strncmp(v, "false", 5) == 0) || (vl == 1 && v[0] == '0')) return 0;
      return -1;
    }
    if (!amp) break;
    p = amp + 1;
  }
  return 0;
}

/* Reads the weight of one Accept-Language range from its parameters P (up to END) into *Q,
 * in thousandths: absent means 1000. Returns -1 when a q parameter is malformed. */
static int accept_weight(const char *p, const char *end, int *q) {
  *q = 1000;
  while (p < end) {
    while (p < end && (*p == ';' || *p == ' ' || *p == '\t')) p++;
    if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
      p += 2;
      int v = 0, digits = 0;
      if (p < end && (*p == '0' || *p == '1')) v = (*p++ - '0') * 1000;
      else return -1;
      if (p < end && *p == '.')
        for (p++; p < end && *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
          v += (*p - '0') * (digits == 0 ? 100 : digits == 1 ? 10 : 1);
      while (p < end && (*p == ' ' || *p == '\t')) p++;
      if ((p < end && *p != ';') || v > 1000) return -1;
      *q = v;
    } else {
      while (p < end && *p != ';') p++; /* another parameter: not ours */
    }
  }
  return 0;
}

size_t kpi_http_accept_language(const char *al, const char *const *langs, size_t n) {
  size_t best = 0;
  int best_q = 0;
  for (const char *p = al; p && *p;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    const char *semi = p;
    while (semi < end && *semi != ';') semi++;
    const char *rend = semi;
    while (rend > p && (rend[-1] == ' ' || rend[-1] == '\t')) rend--;
    size_t rl = (size_t)(rend - p);
    int q;
    if (rl > 0 && accept_weight(semi, end, &q) == 0) {
      for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(langs[i]);
        bool match = (rl == 1 && *p == '*') ||
                     (rl >= tl && strncasecmp(p, langs[i], tl) == 0 && (rl == tl || p[tl] == '-'));
        if (match && q > best_q) {
          best = i;
          best_q = q;
        }
      }
    }
    p = comma ? comma + 1 : end;
  }
  return best;
}

/* RFC 7235 token68: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "=" padding. */
static bool is_token68(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

int kpi_http_bearer_token(const char *auth, const char **token, size_t *len) {
  if (!auth || strncasecmp(auth, "Bearer", 6) != 0 || auth[6] != ' ') return -1;
  const char *p = auth + 6;
  while (*p == ' ') p++;
  const char *t = p;
  while (is_token68(*p)) p++;
  while (*p == '=') p++;
  if (p == t || *skip_ows(p) != '\0') return -1;
  *token = t;
  *len = (size_t)(p - t);
  return 0;
}
