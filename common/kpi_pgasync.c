/* kpi_pgasync.c: libpq's non-blocking API driven by uv_poll on PQsocket, with a query queue and
 * automatic reconnection. One query is in flight at a time, which keeps transactions (BEGIN …
 * COMMIT sent as consecutive queries) on the one session that owns them. Named queries
 * (kpi_pgasync_query_prepared) are prepared on first use on each connection: the Parse is one
 * more step of the query at the head, and the names prepared die with the connection. */
#include "kpi_pgasync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_env.h"
#include "kpi_log.h"

typedef struct pg_query {
  struct pg_query *next;
  char *name; /* prepared statement name, or NULL: sent unnamed */
  int preparing; /* the statement NAME is being prepared: the result in flight is the Parse's */
  char *sql;
  int nparams;
  char **values;
  char *copy_data; /* kpi_pgasync_copy_in: the COPY's whole input, sent once it is asked for */
  size_t copy_len;
  size_t copy_off;  /* bytes handed to libpq so far */
  int copying;      /* the server asked for the input: copy_pump feeds it */
  kpi_pgasync_result_cb cb;
  void *arg;
} pg_query;

/* uv_poll handles are bound to one fd; a reconnect gets a new socket and so a new handle,
 * freed in its close callback. */
typedef struct {
  uv_poll_t handle;
  struct kpi_pgasync *owner;
} pg_poll;

typedef enum { PG_DOWN, PG_CONNECTING, PG_UP } pg_state;

/* A statement prepared on the current connection. */
typedef struct {
  char *name;
  char *sql;
} pg_prepared;

struct kpi_pgasync {
  uv_loop_t *loop;
  char *conninfo;
  kpi_pgasync_state_cb on_state;
  void *arg;
  PGconn *conn;
  pg_poll *poll;
  int poll_fd;
  uv_timer_t retry; /* embedded: closed last, frees the struct */
  pg_state state;
  uint64_t backoff_ms;
  uint64_t backoff_max_ms;
  pg_query *head, *tail;
  size_t pending;
  int sent;           /* head has been sent and its results are awaited */
  PGresult *result;   /* result kept for head */
  /* Statements prepared on this connection; entry [n_prepared] is reserved while a Parse is in
   * flight (prepared_reserve), and counted once it succeeded. */
  pg_prepared *prepared;
  size_t n_prepared, cap_prepared;
  int closing;
  int in_callback;
  /* Set when kpi_pgasync_query found the connection broken: the loss is reported from a
   * later loop callback (the retry timer, fired at once), never inside the call. */
  int lost;
  char lost_why[256];
  void (*on_closed)(void *);
  void *closed_arg;
};

static void pg_connect_start(kpi_pgasync *pg);
static void pg_drive(kpi_pgasync *pg, int may_read);

const char *kpi_pgasync_strerror(int err) {
  switch (err) {
    case KPI_PGASYNC_EDOWN: return "database connection is down";
    case KPI_PGASYNC_ENOMEM: return "out of memory";
    case KPI_PGASYNC_ECLOSED: return "database connection is closed";
    case KPI_PGASYNC_EINVAL: return "invalid query arguments";
    default: return "unknown error";
  }
}

static void query_free(pg_query *q) {
  for (int i = 0; i < q->nparams; i++) free(q->values[i]);
  free(q->values);
  free(q->copy_data);
  free(q->sql);
  free(q->name);
  free(q);
}

static const pg_prepared *prepared_find(const kpi_pgasync *pg, const char *name) {
  for (size_t i = 0; i < pg->n_prepared; i++)
    if (strcmp(pg->prepared[i].name, name) == 0) return &pg->prepared[i];
  return NULL;
}

/* Reserves entry [n_prepared] for Q's statement; -1 when out of memory. */
static int prepared_reserve(kpi_pgasync *pg, const pg_query *q) {
  if (pg->n_prepared == pg->cap_prepared) {
    size_t cap = pg->cap_prepared ? pg->cap_prepared * 2 : 16;
    pg_prepared *p = realloc(pg->prepared, cap * sizeof(*p));
    if (!p) return -1;
    pg->prepared = p;
    pg->cap_prepared = cap;
  }
  pg_prepared *e = &pg->prepared[pg->n_prepared];
  e->name = strdup(q->name);
  e->sql = strdup(q->sql);
  if (e->name && e->sql) return 0;
  free(e->name);
  free(e->sql);
  return -1;
}

/* Entry [n_prepared] counted (OK) or dropped (the Parse failed). */
static void prepared_settle(kpi_pgasync *pg, int ok) {
  if (ok) {
    pg->n_prepared++;
    return;
  }
  free(pg->prepared[pg->n_prepared].name);
  free(pg->prepared[pg->n_prepared].sql);
}

/* The connection is gone, and the statements prepared on it with it. */
static void prepared_clear(kpi_pgasync *pg) {
  for (size_t i = 0; i < pg->n_prepared; i++) {
    free(pg->prepared[i].name);
    free(pg->prepared[i].sql);
  }
  pg->n_prepared = 0;
}

static void on_uv_poll_closed(uv_handle_t *h) { free(h->data); }

static void poll_release(kpi_pgasync *pg) {
  if (!pg->poll) return;
  uv_poll_stop(&pg->poll->handle);
  uv_close((uv_handle_t *)&pg->poll->handle, on_uv_poll_closed);
  pg->poll = NULL;
  pg->poll_fd = -1;
}

/* Runs the callbacks of every queued query with RES NULL, in order. */
static void fail_all(kpi_pgasync *pg) {
  if (pg->head && pg->sent && pg->head->preparing) prepared_settle(pg, 0);
  prepared_clear(pg);
  pg_query *q = pg->head;
  pg->head = pg->tail = NULL;
  pg->pending = 0;
  pg->sent = 0;
  if (pg->result) {
    PQclear(pg->result);
    pg->result = NULL;
  }
  while (q) {
    pg_query *next = q->next;
    pg->in_callback++;
    q->cb(pg, NULL, q->arg);
    pg->in_callback--;
    query_free(q);
    q = next;
  }
}

static void on_uv_retry(uv_timer_t *t) {
  kpi_pgasync *pg = t->data;
  if (!pg->closing) pg_connect_start(pg);
}

static void connection_lost(kpi_pgasync *pg, const char *why) {
  int was_up = pg->state == PG_UP;
  pg->lost = 0;
  poll_release(pg);
  if (pg->conn) {
    kpi_log(KPI_LOG_WARN, "postgres_down", "%s", why);
    PQfinish(pg->conn);
    pg->conn = NULL;
  }
  pg->state = PG_DOWN;
  fail_all(pg);
  if (was_up && pg->on_state && !pg->closing) pg->on_state(pg, 0, pg->arg);
  if (pg->closing) return;
  uv_timer_start(&pg->retry, on_uv_retry, pg->backoff_ms, 0);
  pg->backoff_ms = pg->backoff_ms * 2 > pg->backoff_max_ms ? pg->backoff_max_ms
                                                           : pg->backoff_ms * 2;
}

static void on_uv_lost(uv_timer_t *t) {
  kpi_pgasync *pg = t->data;
  if (!pg->closing && pg->lost) connection_lost(pg, pg->lost_why);
}

/* A failure found while driving the connection. From the loop (MAY_READ) the loss is handled
 * at once; from kpi_pgasync_query it is deferred, because handling it runs the result
 * callbacks of every queued query and the state callback, and the caller of
 * kpi_pgasync_query was promised that none of its callbacks runs inside the call. WHY is
 * cut at its first line: libpq's messages end in newlines. */
static void drive_failed(kpi_pgasync *pg, int may_read, const char *what, const char *detail) {
  char why[sizeof pg->lost_why];
  snprintf(why, sizeof why, "%s%s", what, detail);
  why[strcspn(why, "\n")] = '\0';
  if (may_read) {
    connection_lost(pg, why);
    return;
  }
  if (pg->lost) return;
  pg->lost = 1;
  memcpy(pg->lost_why, why, sizeof why);
  uv_timer_start(&pg->retry, on_uv_lost, 0, 0);
}

static void on_uv_pg_io(uv_poll_t *h, int status, int events);

/* Watches the connection's socket for EVENTS, replacing the handle if the socket changed. */
static int poll_watch(kpi_pgasync *pg, int events) {
  int fd = PQsocket(pg->conn);
  if (fd < 0) return -1;
  if (pg->poll && pg->poll_fd != fd) poll_release(pg);
  if (!pg->poll) {
    pg_poll *p = malloc(sizeof(*p));
    if (!p) return -1;
    if (uv_poll_init(pg->loop, &p->handle, fd) != 0) {
      free(p);
      return -1;
    }
    p->handle.data = p;
    p->owner = pg;
    pg->poll = p;
    pg->poll_fd = fd;
  }
  return uv_poll_start(&pg->poll->handle, events, on_uv_pg_io);
}

static void connect_step(kpi_pgasync *pg) {
  PostgresPollingStatusType st = PQconnectPoll(pg->conn);
  switch (st) {
    case PGRES_POLLING_READING:
      if (poll_watch(pg, UV_READABLE)) connection_lost(pg, "cannot watch socket");
      return;
    case PGRES_POLLING_WRITING:
      if (poll_watch(pg, UV_WRITABLE)) connection_lost(pg, "cannot watch socket");
      return;
    case PGRES_POLLING_OK:
      pg->state = PG_UP;
      pg->backoff_ms = 100;
      PQsetnonblocking(pg->conn, 1);
      kpi_log(KPI_LOG_INFO, "postgres_up", "connected to %s:%s/%s", PQhost(pg->conn),
              PQport(pg->conn), PQdb(pg->conn));
      if (poll_watch(pg, UV_READABLE)) {
        connection_lost(pg, "cannot watch socket");
        return;
      }
      if (pg->on_state) pg->on_state(pg, 1, pg->arg);
      if (pg->state == PG_UP) pg_drive(pg, 1);
      return;
    default: {
      char why[512];
      snprintf(why, sizeof(why), "connect: %s", PQerrorMessage(pg->conn));
      why[strcspn(why, "\n")] = '\0';
      connection_lost(pg, why);
      return;
    }
  }
}

static void pg_connect_start(kpi_pgasync *pg) {
  pg->conn = PQconnectStart(pg->conninfo);
  if (!pg->conn || PQstatus(pg->conn) == CONNECTION_BAD) {
    connection_lost(pg, pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
    return;
  }
  pg->state = PG_CONNECTING;
  connect_step(pg);
}

/* Sends Q: the Parse of its statement when it is named and not yet prepared on this
 * connection, else the query itself. A statement that cannot be recorded (out of memory) is
 * sent unnamed: the same query, planned again. Returns libpq's 1/0. */
static int send_head(kpi_pgasync *pg, pg_query *q) {
  const char *const *values = (const char *const *)q->values;
  q->preparing = 0;
  if (q->name && !prepared_find(pg, q->name)) {
    if (prepared_reserve(pg, q) == 0) {
      q->preparing = 1;
      int ok = PQsendPrepare(pg->conn, q->name, q->sql, q->nparams, NULL);
      if (!ok) prepared_settle(pg, 0);
      return ok;
    }
  } else if (q->name) {
    return PQsendQueryPrepared(pg->conn, q->name, q->nparams, values, NULL, NULL, 0);
  }
  return q->nparams > 0 ? PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, values, NULL,
                                            NULL, 0)
                        : PQsendQuery(pg->conn, q->sql);
}

/* The Parse of Q's statement is complete. Prepared: returns 1, Q stays at the head and is sent
 * next. Failed: returns 0, and its result is Q's (the same error the query would have had). */
static int prepared_done(kpi_pgasync *pg, pg_query *q) {
  int ok = pg->result && PQresultStatus(pg->result) == PGRES_COMMAND_OK;
  prepared_settle(pg, ok);
  q->preparing = 0;
  if (!ok) return 0;
  PQclear(pg->result);
  pg->result = NULL;
  pg->sent = 0;
  return 1;
}

/* Feeds the head query's COPY input to libpq while the socket takes it: at most 64 kB more
 * than what is still unsent, so libpq's output buffer stays small whatever the input's size
 * (it never shrinks once grown). Ends the COPY after the last byte; a query that was not
 * queued as a COPY gets its COPY refused, which is then its result. Returns 0 when done or
 * waiting for the socket (pg_drive watches it for writing), -1 on a libpq failure. */
#define COPY_CHUNK (64 * 1024)
static int copy_pump(kpi_pgasync *pg, pg_query *q) {
  if (!q->copy_data) {
    q->copying = 0;
    return PQputCopyEnd(pg->conn, "no COPY data was given for this query") == 1 ? 0 : -1;
  }
  while (q->copy_off < q->copy_len) {
    int f = PQflush(pg->conn);
    if (f != 0) return f < 0 ? -1 : 0;
    size_t n = q->copy_len - q->copy_off < COPY_CHUNK ? q->copy_len - q->copy_off : COPY_CHUNK;
    int r = PQputCopyData(pg->conn, q->copy_data + q->copy_off, (int)n);
    if (r < 0) return -1;
    if (r == 0) return 0; /* libpq's buffer is full: wait for the socket */
    q->copy_off += n;
  }
  if (PQputCopyEnd(pg->conn, NULL) != 1) return -1;
  free(q->copy_data);
  q->copy_data = NULL;
  q->copying = 0;
  return 0;
}

/* Sends the head query if none is in flight and flushes; with MAY_READ also collects finished
 * results and runs their callbacks. kpi_pgasync_query passes 0, so that a callback never runs
 * inside the call that queued its query (a fast server may have answered already): callers can
 * then set their own state after queuing, as with any libuv request. */
static void pg_drive(kpi_pgasync *pg, int may_read) {
  while (pg->state == PG_UP && !pg->closing && !pg->lost) {
    if (!pg->sent) {
      if (!pg->head) {
        if (!may_read) return;
        /* Idle: still read, so that a server-side close is noticed now rather than at the
         * next query, and so that a readable socket does not wake the loop forever. */
        if (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) == CONNECTION_BAD)
          connection_lost(pg, "connection closed by the server");
        return;
      }
      if (!send_head(pg, pg->head)) {
        drive_failed(pg, may_read, "send: ", PQerrorMessage(pg->conn));
        return;
      }
      pg->sent = 1;
    }
    if (pg->head && pg->head->copying && copy_pump(pg, pg->head) != 0) {
      drive_failed(pg, may_read, "COPY: ", PQerrorMessage(pg->conn));
      return;
    }
    int f = PQflush(pg->conn);
    if (f < 0) {
      drive_failed(pg, may_read, "flush: ", PQerrorMessage(pg->conn));
      return;
    }
    if (poll_watch(pg, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE)) {
      drive_failed(pg, may_read, "cannot watch socket", "");
      return;
    }
    if (!may_read) return;
    if (!PQconsumeInput(pg->conn)) {
      drive_failed(pg, may_read, "read: ", PQerrorMessage(pg->conn));
      return;
    }
    /* Collect results until the query is complete (PQgetResult returns NULL) or more input
     * is needed (PQisBusy). */
    for (;;) {
      if (PQisBusy(pg->conn)) return;
      PGresult *r = PQgetResult(pg->conn);
      if (r && PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        if (pg->head->copying) {
          /* Input is still to be sent and the socket took no more (libpq reports COPY_IN
           * again at once, so looping would spin while the server is not reading): the write
           * watch brings us back when it can take more. */
          if (poll_watch(pg, UV_READABLE | UV_WRITABLE))
            drive_failed(pg, may_read, "cannot watch socket", "");
          return;
        }
        pg->head->copying = 1;
        break; /* back to the outer loop: feed the input, then wait for the COPY's result */
      }
      if (r) {
        int keep_old = pg->result && PQresultStatus(pg->result) == PGRES_FATAL_ERROR;
        if (keep_old) {
          PQclear(r);
        } else {
          PQclear(pg->result);
          pg->result = r;
        }
        continue;
      }
      pg_query *q = pg->head;
      if (q->preparing && prepared_done(pg, q)) break; /* prepared: now send the query */
      pg->head = q->next;
      if (!pg->head) pg->tail = NULL;
      pg->pending--;
      pg->sent = 0;
      PGresult *res = pg->result;
      pg->result = NULL;
      pg->in_callback++;
      q->cb(pg, res, q->arg);
      pg->in_callback--;
      PQclear(res);
      query_free(q);
      /* The callback may have closed PG (pg->conn is then NULL). */
      if (pg->closing) return;
      break; /* back to the outer loop: send the next query */
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
      connection_lost(pg, "connection lost");
      return;
    }
  }
}

static void on_uv_pg_io(uv_poll_t *h, int status, int events) {
  (void)events;
  kpi_pgasync *pg = ((pg_poll *)h->data)->owner;
  if (pg->closing) return;
  if (pg->lost) {
    connection_lost(pg, pg->lost_why);
    return;
  }
  if (status < 0) {
    connection_lost(pg, uv_strerror(status));
    return;
  }
  if (pg->state == PG_CONNECTING) connect_step(pg);
  else if (pg->state == PG_UP) pg_drive(pg, 1);
}

kpi_pgasync *kpi_pgasync_new(uv_loop_t *loop, const char *conninfo, kpi_pgasync_state_cb on_state,
                             void *arg, char *errstr, size_t errstr_size) {
  kpi_pgasync *pg = calloc(1, sizeof(*pg));
  if (!pg || !(pg->conninfo = strdup(conninfo))) {
    free(pg);
    snprintf(errstr, errstr_size, "out of memory");
    return NULL;
  }
  pg->loop = loop;
  pg->on_state = on_state;
  pg->arg = arg;
  pg->poll_fd = -1;
  pg->backoff_ms = 100;
  int64_t max_ms;
  char err[128];
  if (kpi_env_int("KPI_PG_RETRY_MAX_MS", 5000, 100, 600000, &max_ms, err, sizeof(err)))
    max_ms = 5000;
  pg->backoff_max_ms = (uint64_t)max_ms;
  uv_timer_init(loop, &pg->retry);
  pg->retry.data = pg;
  pg_connect_start(pg);
  return pg;
}

/* kpi_pgasync_query and kpi_pgasync_query_prepared; NAME NULL: unnamed. */
static int query_queue(kpi_pgasync *pg, const char *name, const char *sql, int nparams,
                       const char *const *values, kpi_pgasync_result_cb cb, void *arg) {
  if (pg->closing) return KPI_PGASYNC_ECLOSED;
  /* libpq would refuse these at send time, which pg_drive cannot tell from a broken
   * connection: checked here, they cost the caller one query instead of the session. */
  if (!sql || !cb || nparams < 0 || nparams > 65535 || (nparams > 0 && !values))
    return KPI_PGASYNC_EINVAL;
  if (name) {
    const pg_prepared *p = prepared_find(pg, name);
    if (!*name || (p && strcmp(p->sql, sql) != 0)) return KPI_PGASYNC_EINVAL;
  }
  if (pg->state != PG_UP || pg->lost) return KPI_PGASYNC_EDOWN;
  pg_query *q = calloc(1, sizeof(*q));
  if (!q) return KPI_PGASYNC_ENOMEM;
  if (name && !(q->name = strdup(name))) goto oom;
  q->sql = strdup(sql);
  q->nparams = nparams;
  q->cb = cb;
  q->arg = arg;
  if (nparams > 0) q->values = calloc((size_t)nparams, sizeof(char *));
  if (!q->sql || (nparams > 0 && !q->values)) goto oom;
  for (int i = 0; i < nparams; i++)
    if (values[i] && !(q->values[i] = strdup(values[i]))) goto oom;
  if (pg->tail) pg->tail->next = q;
  else pg->head = q;
  pg->tail = q;
  pg->pending++;
  if (!pg->in_callback) pg_drive(pg, 0);
  return 0;
oom:
  q->nparams = q->values ? nparams : 0;
  query_free(q);
  return KPI_PGASYNC_ENOMEM;
}

int kpi_pgasync_query(kpi_pgasync *pg, const char *sql, int nparams, const char *const *values,
                      kpi_pgasync_result_cb cb, void *arg) {
  return query_queue(pg, NULL, sql, nparams, values, cb, arg);
}

int kpi_pgasync_query_prepared(kpi_pgasync *pg, const char *name, const char *sql, int nparams,
                               const char *const *values, kpi_pgasync_result_cb cb, void *arg) {
  if (!name) return KPI_PGASYNC_EINVAL;
  return query_queue(pg, name, sql, nparams, values, cb, arg);
}

int kpi_pgasync_copy_in(kpi_pgasync *pg, const char *sql, char **data, size_t len,
                        kpi_pgasync_result_cb cb, void *arg) {
  char *owned = data ? *data : NULL;
  if (data) *data = NULL;
  if (!owned && len > 0) return KPI_PGASYNC_EINVAL;
  /* Queued (and possibly sent) by query_queue; the COPY input is asked for only once the server
   * answered the statement, so setting it on the tail right after is in time. */
  int rc = query_queue(pg, NULL, sql, 0, NULL, cb, arg);
  if (rc != 0) {
    free(owned);
    return rc;
  }
  pg->tail->copy_data = owned ? owned : strdup("");
  pg->tail->copy_len = owned ? len : 0;
  return 0;
}

int kpi_pgasync_is_up(const kpi_pgasync *pg) {
  return pg->state == PG_UP && !pg->closing && !pg->lost;
}

size_t kpi_pgasync_pending(const kpi_pgasync *pg) { return pg->pending; }

static void on_uv_retry_closed(uv_handle_t *h) {
  kpi_pgasync *pg = h->data;
  void (*cb)(void *) = pg->on_closed;
  void *arg = pg->closed_arg;
  free(pg->prepared);
  free(pg->conninfo);
  free(pg);
  if (cb) cb(arg);
}

void kpi_pgasync_close(kpi_pgasync *pg, void (*on_closed)(void *arg), void *arg) {
  if (pg->closing) return;
  pg->closing = 1;
  pg->on_closed = on_closed;
  pg->closed_arg = arg;
  poll_release(pg);
  if (pg->conn) {
    PQfinish(pg->conn);
    pg->conn = NULL;
  }
  pg->state = PG_DOWN;
  fail_all(pg);
  uv_timer_stop(&pg->retry);
  uv_close((uv_handle_t *)&pg->retry, on_uv_retry_closed);
}
