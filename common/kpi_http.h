/* kpi_http.h: the HTTP/1.1 server every service embeds, on the caller's libuv loop. */
#ifndef KPI_HTTP_H
#define KPI_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "kpi_metrics.h"

/* Error codes returned besides libuv's own (negative errno values); see kpi_http_strerror. */
#define KPI_HTTP_ENOMEM (-20001)
#define KPI_HTTP_EINVAL (-20002)
#define KPI_HTTP_ESTATE (-20003) /* started twice, or used after close */

/* Limits. Start from kpi_http_config_defaults(); zero is not "unlimited" anywhere. */
typedef struct kpi_http_config {
  size_t max_body_bytes;      /* decoded body, chunked or not; beyond: 413 + close (1 MiB);
                                 0: no request may carry a body. GET-only services set
                                 KPI_HTTP_SMALL_BODY before kpi_http_config_from_env */
  size_t max_header_bytes;    /* request target + header names and values; 431 (16 KiB);
                                 http-parser's own 80 KiB cap on the raw head also applies */
  unsigned max_headers;       /* header lines per request; beyond: 431 (100) */
  unsigned max_connections;   /* beyond: 503 and close at once (1024) */
  unsigned max_connections_per_peer; /* open connections from one peer address; beyond:
                                        503 and close at once (64) */
  uint64_t header_timeout_ms; /* first byte of a request to end of headers; 408 (10 s) */
  uint64_t body_timeout_ms;   /* end of headers to end of body; 408 (30 s) */
  uint64_t idle_timeout_ms;   /* keep-alive with nothing outstanding; silent close (60 s) */
  uint64_t write_timeout_ms;  /* responses queued but no byte of them taken by the peer for
                                 this long: close (30 s) */
  unsigned max_pipelined;     /* requests parsed but not yet written per connection before
                                 the server stops reading that socket (64) */
  bool reuseport;             /* bind with SO_REUSEPORT, so that several processes of one
                                 user can listen on the same port and the kernel spreads
                                 connections among them (false; docs/http.md "Scale-out") */
} kpi_http_config;

/* The body limit of a service that only serves GET/HEAD (evaluator, notifier): enough for a
 * stray small body, so that a POST still earns its 405 rather than a 413. */
#define KPI_HTTP_SMALL_BODY 4096

void kpi_http_config_defaults(kpi_http_config *cfg);

/* Overrides fields of CFG from KPI_HTTP_MAX_BODY, KPI_HTTP_MAX_HEADER_BYTES,
 * KPI_HTTP_MAX_HEADERS, KPI_HTTP_MAX_CONNECTIONS, KPI_HTTP_MAX_CONNECTIONS_PER_PEER,
 * KPI_HTTP_HEADER_TIMEOUT_MS, KPI_HTTP_BODY_TIMEOUT_MS, KPI_HTTP_IDLE_TIMEOUT_MS,
 * KPI_HTTP_WRITE_TIMEOUT_MS and KPI_HTTP_REUSEPORT when they are set (unset variables
 * leave the field alone, so call kpi_http_config_defaults first). Values are positive
 * decimal integers, except KPI_HTTP_REUSEPORT: 0 or 1. Returns 0, or -1 after logging `config_invalid` naming the variable;
 * CFG may then be partly updated. */
int kpi_http_config_from_env(kpi_http_config *cfg);

/* Plain counters, updated on the loop thread; read them directly or through
 * kpi_http_server_export_metrics. */
typedef struct kpi_http_stats {
  uint64_t requests;               /* complete requests handed to on_request */
  uint64_t responses[6];           /* by status class: [1] 1xx … [5] 5xx; [0] unused */
  uint64_t connections_accepted;
  uint64_t connections_rejected;   /* over max_connections or max_connections_per_peer */
  uint64_t connections_active;     /* gauge */
  uint64_t timeouts_header;
  uint64_t timeouts_body;
  uint64_t timeouts_idle;
  uint64_t timeouts_write;         /* peers that stopped reading their responses */
  uint64_t body_bytes;             /* gauge: request body bytes held in memory */
  uint64_t bad_requests;           /* parse errors and limit violations (400, 408, 413, 431) */
} kpi_http_stats;

/* Methods, as bits of kpi_http_route.methods. */
#define KPI_HTTP_GET (1u << 0)
#define KPI_HTTP_HEAD (1u << 1)
#define KPI_HTTP_POST (1u << 2)
#define KPI_HTTP_PUT (1u << 3)
#define KPI_HTTP_DELETE (1u << 4)
#define KPI_HTTP_PATCH (1u << 5)
#define KPI_HTTP_OPTIONS (1u << 6)

/* One resource of a service. PATH matches exactly, or, when it ends in '*', every path
 * starting with what precedes the '*' (so "/v1/attainment/" followed by '*' matches every
 * measure's resource). */
typedef struct kpi_http_route {
  const char *path;
  unsigned methods; /* KPI_HTTP_GET | KPI_HTTP_HEAD… */
} kpi_http_route;

typedef struct kpi_http_request kpi_http_request;
typedef struct kpi_http_server kpi_http_server;
typedef struct kpi_http_conn kpi_http_conn; /* private */

/* Called once per complete request, outside the parser, on the loop thread. The handler
 * owns REQ until it calls kpi_http_respond* exactly once, synchronously or from any later
 * loop callback; it must answer every request it is given, even after the server closed
 * (the answer is then discarded and REQ freed). */
typedef void (*kpi_http_request_cb)(kpi_http_request *req, void *opaque);
typedef void (*kpi_http_close_cb)(kpi_http_server *srv);

/* Embed this in the service's context; the fields below `stats` are private. */
struct kpi_http_server {
  void *data;           /* free for the owner, e.g. to find its context in the close cb */
  kpi_http_stats stats; /* read-only for callers */

  uv_loop_t *loop;
  kpi_http_config cfg;
  kpi_http_request_cb on_request;
  void *opaque;
  kpi_http_close_cb on_closed;
  const kpi_http_route *routes; /* NULL: every request goes to on_request */
  size_t n_routes;
  uv_tcp_t listener;
  uv_timer_t guard;     /* closed last, so close always completes from a callback */
  kpi_http_conn *conns; /* every open connection, for stop and close */
  unsigned n_conns;     /* connections not yet freed, rejected ones included */
  unsigned pending_closes;
  int port;
  int listening;
  int listener_closed;
  int draining;
  int closing;
  char *rbuf; /* one read buffer for all connections: reads are consumed before returning */
};

/* Prepares SRV (caller-owned storage, e.g. embedded) on LOOP with a copy of CFG (NULL for
 * the defaults). ON_REQUEST gets OPAQUE. Returns 0 or KPI_HTTP_ENOMEM/EINVAL; on failure
 * nothing needs closing. After a successful init, kpi_http_server_close must be called
 * (even when start fails) before SRV's storage is freed. */
int kpi_http_server_init(kpi_http_server *srv, uv_loop_t *loop, const kpi_http_config *cfg,
                         kpi_http_request_cb on_request, void *opaque);

/* Declares the service's resources (ROUTES, N entries; the caller keeps the array alive, a
 * static table). From then on the server answers by itself, without calling on_request:
 * 404 for a path no route matches, 405 with `Allow` for a method the route does not list.
 * Whatever the routes, a method the server does not implement (anything but GET, HEAD,
 * POST, PUT, DELETE, PATCH, OPTIONS, TRACE and CONNECT) gets 501. Returns 0 or
 * KPI_HTTP_EINVAL (an entry with a NULL path or no method). */
int kpi_http_server_set_routes(kpi_http_server *srv, const kpi_http_route *routes, size_t n);

/* Binds HOST (IPv4 or IPv6 literal) and PORT (0: any free port) and listens, with
 * SO_REUSEPORT when the config says reuseport. Returns 0 or a negative libuv error
 * (UV_EADDRINUSE… : without reuseport on both sides, a port another socket holds). */
int kpi_http_server_start(kpi_http_server *srv, const char *host, int port);

/* The bound port once started, else KPI_HTTP_ESTATE. */
int kpi_http_server_port(const kpi_http_server *srv);

/* Graceful stop: closes the listener; requests already received are still answered, their
 * responses carry `Connection: close`, and idle keep-alive connections are closed. */
void kpi_http_server_stop_accepting(kpi_http_server *srv);

/* Closes the listener and every connection at once; requests still held by the handler
 * become orphaned (their answers are discarded). ON_CLOSED (may be NULL) runs from a later
 * loop callback once every handle is closed and every connection freed; SRV's storage may
 * be freed from there. Orphaned requests are freed when the handler answers them. */
void kpi_http_server_close(kpi_http_server *srv, kpi_http_close_cb on_closed);

/* Mirrors SRV's stats into M as kpi_http_responses_total{class="1xx".."5xx"},
 * kpi_http_requests_total, kpi_http_connections_active, kpi_http_connections_total,
 * kpi_http_connections_rejected_total, kpi_http_timeouts_total{phase="header|body|idle"}
 * and kpi_http_bad_requests_total. Call it right before kpi_metrics_render. Returns 0 or
 * KPI_HTTP_ENOMEM. */
int kpi_http_server_export_metrics(const kpi_http_server *srv, kpi_metrics *m);

/* The /metrics answer every service gives: exports SRV's stats into M, renders M as
 * Prometheus text and answers REQ with it (500 problem+json when out of memory). REQ is
 * answered on every path. */
int kpi_http_respond_metrics(kpi_http_request *req, const kpi_http_server *srv, kpi_metrics *m);

/* ---- the request, valid until answered ---- */

/* "GET", "POST"… as http-parser spells them. */
const char *kpi_http_request_method(const kpi_http_request *req);
/* With routes set: the index in the routes array of the route REQ matched; else -1. */
int kpi_http_request_route(const kpi_http_request *req);
/* The request target up to '?', not percent-decoded ("/v1/measurements"). */
const char *kpi_http_request_path(const kpi_http_request *req);
/* The text after '?', "" when absent; not decoded. */
const char *kpi_http_request_query(const kpi_http_request *req);
/* Value of the first header named NAME (case-insensitive), or NULL. Values keep their bytes
 * as received, without leading or trailing blanks. Only the header section counts: the
 * trailer fields of a chunked body are read (within max_header_bytes) and discarded, so a
 * trailer can never pass for a header such as Authorization. */
const char *kpi_http_header(const kpi_http_request *req, const char *name);
size_t kpi_http_request_header_count(const kpi_http_request *req);
/* I < header_count; NAME/VALUE may be NULL. */
void kpi_http_request_header_at(const kpi_http_request *req, size_t i, const char **name,
                                const char **value);
/* The decoded body (chunked transfer coding removed), NUL-terminated for convenience; LEN
 * may be NULL. Never NULL: an empty body is "". */
const char *kpi_http_request_body(const kpi_http_request *req, size_t *len);
/* 1 once the connection is gone: the answer will be discarded. Handlers may use it to skip
 * work that only serves the response, never to skip answering. */
int kpi_http_request_orphaned(const kpi_http_request *req);
/* A slot for the handler (e.g. its per-request state across async steps). */
void kpi_http_request_set_user(kpi_http_request *req, void *user);
void *kpi_http_request_get_user(const kpi_http_request *req);

/* Answers REQ and gives it back: REQ is invalid after the call, on every path. The body
 * (LEN bytes, BODY may be NULL when LEN is 0) is copied. CONTENT_TYPE may be NULL (no
 * Content-Type). EXTRA_HEADERS is NULL or preformatted lines, each ending in "\r\n"
 * ("Retry-After: 1\r\n"); never put client data there unchecked (header injection).
 * Responses go out in request order whatever order handlers answer in. Content-Length and,
 * when the connection is to close, `Connection: close` are added here. Returns 0 (also when
 * the answer is discarded because the connection is gone), KPI_HTTP_EINVAL for a status
 * outside 200–599 or a CR/LF in CONTENT_TYPE (the connection is then closed), or
 * KPI_HTTP_ENOMEM (likewise). 204 and 304 are sent without a body. */
int kpi_http_respond(kpi_http_request *req, int status, const char *content_type,
                     const void *body, size_t len, const char *extra_headers);

/* RFC 9457 application/problem+json: {"type":"about:blank","title":…,"status":…,
 * "detail":…,"errors":[…]}. TITLE NULL: the status's reason phrase. DETAIL NULL: omitted.
 * ERRORS (NULL allowed) is a cJSON array; takes ownership, freed on every path. */
int kpi_http_respond_problem(kpi_http_request *req, int status, const char *title,
                             const char *detail, cJSON *errors);
/* Same with a TYPE URI (NULL: "about:blank") and EXTRA_HEADERS as for kpi_http_respond, for
 * 429/503 with Retry-After. */
int kpi_http_respond_problem_ex(kpi_http_request *req, int status, const char *type,
                                const char *title, const char *detail, cJSON *errors,
                                const char *extra_headers);

/* The reason phrase of STATUS as RFC 9110 names it ("Content Too Large", "Unprocessable
 * Content"), used in status lines and as the default problem title; "" when unknown. Every
 * service takes its titles from here, so one status never has two names. */
const char *kpi_http_reason(int status);

/* ---- header and query helpers: pure functions over strings the caller owns ---- */

/* True when the Content-Type header value CT names media type TYPE (case-insensitive), with
 * no parameter other than charset=utf-8 (any case, optionally quoted). NULL CT is false.
 * `application/json; charset=latin1` is false: the body would not be what we parse. */
bool kpi_http_media_type_is(const char *ct, const char *type);

/* Like kpi_http_media_type_is, for a body the service converts itself (ingest's text/csv in
 * Shift_JIS): true when CT names TYPE with no parameter other than one charset, whatever its
 * value. The value, unquoted, goes to CHARSET (SIZE bytes, "" when absent); a value that does
 * not fit, or an empty one, is false. The caller decides which charsets it accepts. */
bool kpi_http_media_type_charset(const char *ct, const char *type, char *charset, size_t size);

/* Reads the boolean query parameter NAME of QUERY (the text after '?', not decoded):
 * absent: 0 into *OUT; "true", "1" or a bare "NAME": 1; "false" or "0": 0. Returns 0, or -1
 * when the value is anything else (the caller answers 400). The first occurrence wins. */
int kpi_http_query_flag(const char *query, const char *name, int *out);

/* Picks the language of an answer from an Accept-Language header value (RFC 9110 12.5.4):
 * the index in LANGS (N primary tags such as {"en", "ja"}, the default first) of the one the
 * client prefers most. A range matches a tag when equal to it or to it followed by '-'
 * ("ja-JP" matches "ja"), case-insensitively; "*" matches every tag. The highest q wins, an
 * earlier range on a tie; q=0 means "not this one"; a range with a malformed q is skipped.
 * Returns 0 (the default) when AL is NULL or names none of LANGS. */
size_t kpi_http_accept_language(const char *al, const char *const *langs, size_t n);

/* Extracts the token of an `Authorization: Bearer <token>` header value (scheme matched
 * case-insensitively, one or more spaces, token68 characters only). Returns 0 and points
 * *TOKEN into AUTH (length *LEN), or -1 when AUTH is NULL, another scheme, or malformed. */
int kpi_http_bearer_token(const char *auth, const char **token, size_t *len);

const char *kpi_http_strerror(int err);

#endif
