/* kpi_smtp.c: SMTP over libcurl's multi socket API driven by uv_poll and one uv_timer. */
#include "kpi_smtp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "kpi_mail.h"

/* One message on its way. Owned by the client from kpi_smtp_send until DONE has run. */
typedef struct smtp_job {
  struct smtp_job *next; /* in the waiting queue, or in the running list */
  struct smtp_job *prev; /* in the running list */
  kpi_smtp *smtp;
  CURL *easy;            /* set while running */
  struct curl_slist *rcpt;
  char *from;
  char *message;
  size_t len;
  size_t pos;            /* bytes handed to libcurl so far */
  uint64_t queued_ns;
  int probe;             /* kpi_smtp_probe: NOOP instead of a message, own easy handle */
  int mail_started;      /* MAIL FROM went out: later replies are about this message */
  char reply[256];       /* last complete reply line */
  char errbuf[CURL_ERROR_SIZE];
  kpi_smtp_done_cb done;
  void *arg;
} smtp_job;

/* One socket libcurl asked us to watch; freed in its uv_close callback. */
typedef struct smtp_sock {
  uv_poll_t poll; /* first member: the poll callback finds the smtp_sock from the handle */
  curl_socket_t fd;
  kpi_smtp *smtp;
  struct smtp_sock *next, *prev; /* every socket not yet being closed */
} smtp_sock;

struct kpi_smtp {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  char *url, *user, *password, *ca_file;
  kpi_smtp_tls tls;
  int tls_verify;
  long connect_timeout_ms, timeout_ms;
  int max_connections;
  smtp_job *wait_head, *wait_tail;
  size_t n_waiting;
  smtp_job *running; /* transfers in the multi handle */
  int n_running;
  smtp_sock *socks;
  /* Easy handles kept after use: libcurl keeps the connections in the multi handle's cache,
   * and reusing the easy handles also keeps their settings and TLS session ids. */
  CURL **idle;
  int n_idle;
  unsigned open_handles; /* uv handles not yet closed (the timer and every socket poll) */
  int closing;
  int in_multi;          /* inside curl_multi_socket_action: completions are picked up after */
  void (*on_closed)(void *arg);
  void *closed_arg;
};

void kpi_smtp_config_defaults(kpi_smtp_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->tls = KPI_SMTP_TLS_TRY;
  cfg->tls_verify = 1;
  cfg->connect_timeout_ms = 10000;
  cfg->timeout_ms = 60000;
  cfg->max_connections = 4;
}

static void start_waiting(kpi_smtp *s);
static void check_multi_info(kpi_smtp *s);
static void maybe_finish_close(kpi_smtp *s);

static void on_uv_handle_closed(uv_handle_t *h) {
  kpi_smtp *s = h->data;
  if (h != (uv_handle_t *)&s->timer) free(h); /* a smtp_sock: its poll is its first member */
  s->open_handles--;
  maybe_finish_close(s);
}

static void on_uv_poll(uv_poll_t *h, int status, int events) {
  smtp_sock *sock = (smtp_sock *)h;
  kpi_smtp *s = sock->smtp;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (status == 0 && (events & UV_READABLE)) flags |= CURL_CSELECT_IN;
  if (status == 0 && (events & UV_WRITABLE)) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(s->multi, sock->fd, flags, &running);
  check_multi_info(s);
}

static void sock_close(kpi_smtp *s, smtp_sock *sock) {
  if (sock->prev) sock->prev->next = sock->next;
  else s->socks = sock->next;
  if (sock->next) sock->next->prev = sock->prev;
  uv_poll_stop(&sock->poll);
  uv_close((uv_handle_t *)&sock->poll, on_uv_handle_closed);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  (void)easy;
  kpi_smtp *s = userp;
  smtp_sock *sock = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (sock) {
      if (!s->closing) curl_multi_assign(s->multi, fd, NULL);
      sock_close(s, sock);
    }
    return 0;
  }
  if (!sock) {
    sock = calloc(1, sizeof(*sock));
    if (!sock) return -1;
    if (uv_poll_init_socket(s->loop, &sock->poll, fd) != 0) {
      free(sock);
      return -1;
    }
    sock->fd = fd;
    sock->smtp = s;
    /* The poll handle's data points at the kpi_smtp for the shared close callback; the
     * poll callback recovers the smtp_sock from the handle's address instead. */
    sock->poll.data = s;
    sock->next = s->socks;
    if (s->socks) s->socks->prev = sock;
    s->socks = sock;
    s->open_handles++;
    curl_multi_assign(s->multi, fd, sock);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&sock->poll, events, on_uv_poll);
  return 0;
}

static void on_uv_timer(uv_timer_t *t) {
  kpi_smtp *s = t->data;
  int running;
  curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi_info(s);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  kpi_smtp *s = userp;
  if (timeout_ms < 0) uv_timer_stop(&s->timer);
  else uv_timer_start(&s->timer, on_uv_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

static size_t on_curl_read(char *buf, size_t size, size_t nitems, void *userp) {
  smtp_job *job = userp;
  size_t room = size * nitems;
  size_t left = job->len - job->pos;
  size_t n = left < room ? left : room;
  memcpy(buf, job->message + job->pos, n);
  job->pos += n;
  return n;
}

/* libcurl hands SMTP server replies to the header callback, line by line; the last complete
 * one is the server's verdict on the message ("250 2.0.0 Ok: queued as …"). */
static size_t on_curl_header(char *buf, size_t size, size_t nitems, void *userp) {
  smtp_job *job = userp;
  size_t n = size * nitems;
  size_t len = n;
  while (len > 0 && (buf[len - 1] == '\r' || buf[len - 1] == '\n')) len--;
  /* The 221 answering QUIT after a failure would hide the reply that mattered. */
  /* Replies are the server's bytes, not necessarily UTF-8 ("250 ok \xff"): they are kept
   * printable and valid UTF-8, cut on a character boundary, because they end up in a
   * PostgreSQL text column (which refuses invalid UTF-8: the outcome could never be written
   * and the mail would hold its send slot forever) and in the logs. */
  if (len > 0 && !(len >= 4 && memcmp(buf, "221 ", 4) == 0 && job->reply[0]))
    kpi_mail_text_clean(buf, len, job->reply, sizeof(job->reply));
  return n;
}

/* libcurl shows every command it sends to the debug callback (CURLINFO_HEADER_OUT). The only
 * thing taken from it is whether this message's own transaction has begun: a reply before
 * MAIL FROM (greeting, EHLO, STARTTLS, AUTH) is about the relay and our session, a reply after
 * it is about the message. Nothing is logged from here (AUTH lines carry credentials). */
static int on_curl_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *userp) {
  (void)easy;
  smtp_job *job = userp;
  if (job && type == CURLINFO_HEADER_OUT && size >= 10 && memcmp(data, "MAIL FROM:", 10) == 0)
    job->mail_started = 1;
  return 0;
}

/* A probe's NOOP reply would otherwise be written to stdout as the "body". */
static size_t on_curl_discard(char *buf, size_t size, size_t nitems, void *userp) {
  (void)buf;
  (void)userp;
  return size * nitems;
}

static void job_free(smtp_job *job) {
  curl_slist_free_all(job->rcpt);
  free(job->from);
  free(job->message);
  free(job);
}

static void job_finish(kpi_smtp *s, smtp_job *job, kpi_smtp_result *r) {
  r->seconds = (double)(uv_hrtime() - job->queued_ns) / 1e9;
  kpi_smtp_done_cb done = job->done;
  void *arg = job->arg;
  job_free(job);
  done(s, r, arg);
}

/* Replies that mean our own session set-up is wrong rather than the message or mailbox, even
 * when they answer MAIL FROM: 530 (STARTTLS or authentication required), 534 and 538 (a
 * stronger mechanism / encryption required) and 535 (credentials refused). */
static int session_setup_reply(long code) {
  return code == 530 || code == 534 || code == 535 || code == 538;
}

/* The outcome of a finished transfer (docs/notifier.md, "Relay state", has the table). Only
 * what the relay said about this message counts against it: a 4xx or 5xx reply after MAIL
 * FROM went out. Everything else is the relay's state and no message's fault: no connection
 * or name, timeouts (whether before the greeting or in the middle of a transaction: the relay
 * said nothing about the message), TLS failures, a greeting or EHLO other than 2xx, AUTH
 * refused, a connection lost, and 421 anywhere (RFC 5321 §3.8: the service is closing the
 * channel). A 5xx to the message is permanent (RFC 5321 §4.2.1), except the session set-up
 * replies above, which wait for the operator like any other relay failure. */
kpi_smtp_outcome kpi_smtp_classify(int curl_code, long reply_code, int mail_started) {
  if (curl_code == CURLE_OK) return KPI_SMTP_SENT;
  if (!mail_started || reply_code == 421 || session_setup_reply(reply_code)) return KPI_SMTP_RELAY;
  if (reply_code >= 400 && reply_code <= 499) return KPI_SMTP_TRANSIENT;
  if (reply_code >= 500 && reply_code <= 599) return KPI_SMTP_PERMANENT;
  return KPI_SMTP_RELAY;
}

/* Appends SRC to the NUL-terminated DST of capacity SIZE, truncating. */
static void str_append(char *dst, size_t size, const char *src) {
  size_t used = strlen(dst);
  if (used + 1 >= size) return;
  size_t n = strlen(src);
  if (n > size - used - 1) n = size - used - 1;
  memcpy(dst + used, src, n);
  dst[used + n] = '\0';
}

static void running_unlink(kpi_smtp *s, smtp_job *job) {
  if (job->prev) job->prev->next = job->next;
  else s->running = job->next;
  if (job->next) job->next->prev = job->prev;
  job->next = job->prev = NULL;
  s->n_running--;
}

static void check_multi_info(kpi_smtp *s) {
  CURLMsg *msg;
  int left;
  /* A DONE callback may close the client: stop reading the multi handle then. */
  while (!s->closing && (msg = curl_multi_info_read(s->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode rc = msg->data.result;
    smtp_job *job = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&job);
    kpi_smtp_result r;
    memset(&r, 0, sizeof(r));
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    r.code = code;
    snprintf(r.reply, sizeof(r.reply), "%s", job->reply);
    if (rc != CURLE_OK) {
      char detail[sizeof(job->errbuf)];
      /* libcurl's detail may quote the server: the same rule as for replies. */
      kpi_mail_text_clean(job->errbuf, strnlen(job->errbuf, sizeof(job->errbuf)), detail,
                          sizeof(detail));
      str_append(r.error, sizeof(r.error), curl_easy_strerror(rc));
      str_append(r.error, sizeof(r.error), ": ");
      str_append(r.error, sizeof(r.error), detail[0] ? detail : "no detail");
    }
    r.outcome = kpi_smtp_classify((int)rc, code, job->mail_started);
    curl_multi_remove_handle(s->multi, easy);
    /* The job and its buffers go away now: an idle handle keeps no pointer into them. */
    curl_easy_setopt(easy, CURLOPT_MAIL_RCPT, NULL);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
    curl_easy_setopt(easy, CURLOPT_READDATA, NULL);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, NULL);
    curl_easy_setopt(easy, CURLOPT_DEBUGDATA, NULL);
    /* A probe's handle has probe settings: only mail handles are kept for reuse (the
     * connection itself stays in the multi handle's cache either way). */
    if (!job->probe && s->n_idle < s->max_connections && !s->closing) s->idle[s->n_idle++] = easy;
    else curl_easy_cleanup(easy);
    running_unlink(s, job);
    job->easy = NULL;
    job_finish(s, job, &r);
  }
  start_waiting(s);
}

static CURL *easy_new(kpi_smtp *s) {
  CURL *e = curl_easy_init();
  if (!e) return NULL;
  curl_easy_setopt(e, CURLOPT_URL, s->url);
  curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->timeout_ms);
  curl_easy_setopt(e, CURLOPT_READFUNCTION, on_curl_read);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header);
  curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_curl_debug);
  curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
  curl_easy_setopt(e, CURLOPT_USE_SSL, s->tls == KPI_SMTP_TLS_REQUIRE ? (long)CURLUSESSL_ALL
                                       : s->tls == KPI_SMTP_TLS_TRY   ? (long)CURLUSESSL_TRY
                                                                      : (long)CURLUSESSL_NONE);
  if (s->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file);
  if (!s->tls_verify) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (s->user) {
    curl_easy_setopt(e, CURLOPT_USERNAME, s->user);
    curl_easy_setopt(e, CURLOPT_PASSWORD, s->password ? s->password : "");
  }
  return e;
}

/* Moves waiting jobs onto connections while fewer than max_connections run. A job whose
 * transfer cannot even be started completes at once as transient. */
static void start_waiting(kpi_smtp *s) {
  while (!s->closing && s->wait_head && s->n_running < s->max_connections) {
    smtp_job *job = s->wait_head;
    s->wait_head = job->next;
    if (!s->wait_head) s->wait_tail = NULL;
    s->n_waiting--;
    job->next = NULL;
    CURL *e = s->n_idle > 0 ? s->idle[--s->n_idle] : easy_new(s);
    CURLMcode mc = CURLM_OUT_OF_MEMORY;
    if (e) {
      curl_easy_setopt(e, CURLOPT_PRIVATE, job);
      curl_easy_setopt(e, CURLOPT_MAIL_FROM, job->from);
      curl_easy_setopt(e, CURLOPT_MAIL_RCPT, job->rcpt);
      curl_easy_setopt(e, CURLOPT_READDATA, job);
      curl_easy_setopt(e, CURLOPT_HEADERDATA, job);
      curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->errbuf);
      curl_easy_setopt(e, CURLOPT_DEBUGDATA, job);
      curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)job->len);
      mc = curl_multi_add_handle(s->multi, e);
    }
    if (mc != CURLM_OK) {
      if (e) curl_easy_cleanup(e);
      kpi_smtp_result r;
      memset(&r, 0, sizeof(r));
      r.outcome = KPI_SMTP_TRANSIENT;
      snprintf(r.error, sizeof(r.error), "cannot start the transfer: %s", curl_multi_strerror(mc));
      job_finish(s, job, &r);
      continue;
    }
    job->easy = e;
    job->next = s->running;
    if (s->running) s->running->prev = job;
    s->running = job;
    s->n_running++;
  }
}

kpi_smtp *kpi_smtp_new(uv_loop_t *loop, const kpi_smtp_config *cfg, char *errstr,
                       size_t errstr_size) {
  if (!cfg || !cfg->url || (strncmp(cfg->url, "smtp://", 7) && strncmp(cfg->url, "smtps://", 8))) {
    snprintf(errstr, errstr_size, "SMTP URL must start with smtp:// or smtps://");
    return NULL;
  }
  if (cfg->max_connections < 1 || cfg->max_connections > 256) {
    snprintf(errstr, errstr_size, "SMTP connections must be 1..256");
    return NULL;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(errstr, errstr_size, "curl_global_init failed");
    return NULL;
  }
  kpi_smtp *s = calloc(1, sizeof(*s));
  if (!s) goto nomem_global;
  s->loop = loop;
  s->tls = cfg->tls;
  s->tls_verify = cfg->tls_verify;
  s->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
  s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 60000;
  s->max_connections = cfg->max_connections;
  s->url = strdup(cfg->url);
  if (cfg->user && *cfg->user) {
    s->user = strdup(cfg->user);
    s->password = strdup(cfg->password ? cfg->password : "");
    if (!s->user || !s->password) goto nomem;
  }
  if (cfg->ca_file && *cfg->ca_file && !(s->ca_file = strdup(cfg->ca_file))) goto nomem;
  s->idle = calloc((size_t)s->max_connections, sizeof(CURL *));
  s->multi = curl_multi_init();
  if (!s->url || !s->idle || !s->multi) goto nomem;
  curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
  curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
  curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
  curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, (long)s->max_connections);
  curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)s->max_connections);
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  s->open_handles = 1;
  return s;

nomem:
  if (s->multi) curl_multi_cleanup(s->multi);
  free(s->idle);
  free(s->url);
  free(s->user);
  free(s->password);
  free(s->ca_file);
  free(s);
nomem_global:
  curl_global_cleanup();
  snprintf(errstr, errstr_size, "out of memory");
  return NULL;
}

int kpi_smtp_send(kpi_smtp *s, const char *from, const char *to, char *message, size_t len,
                  kpi_smtp_done_cb done, void *arg) {
  if (!s || s->closing) {
    free(message);
    return KPI_SMTP_ECLOSED;
  }
  if (!from || !to || !message || !done) {
    free(message);
    return KPI_SMTP_EINVAL;
  }
  smtp_job *job = calloc(1, sizeof(*job));
  if (!job) {
    free(message);
    return KPI_SMTP_ENOMEM;
  }
  job->smtp = s;
  job->message = message;
  job->len = len;
  job->done = done;
  job->arg = arg;
  job->queued_ns = uv_hrtime();
  /* libcurl puts MAIL FROM:<…> around the address itself. */
  job->from = strdup(from);
  job->rcpt = curl_slist_append(NULL, to);
  if (!job->from || !job->rcpt) {
    job_free(job);
    return KPI_SMTP_ENOMEM;
  }
  if (s->wait_tail) s->wait_tail->next = job;
  else s->wait_head = job;
  s->wait_tail = job;
  s->n_waiting++;
  start_waiting(s);
  return 0;
}

int kpi_smtp_probe(kpi_smtp *s, kpi_smtp_done_cb done, void *arg) {
  if (!s || s->closing) return KPI_SMTP_ECLOSED;
  if (!done) return KPI_SMTP_EINVAL;
  smtp_job *job = calloc(1, sizeof(*job));
  if (!job) return KPI_SMTP_ENOMEM;
  job->smtp = s;
  job->probe = 1;
  job->done = done;
  job->arg = arg;
  job->queued_ns = uv_hrtime();
  CURL *e = easy_new(s);
  if (!e) {
    job_free(job);
    return KPI_SMTP_ENOMEM;
  }
  /* No upload and no recipients: libcurl's SMTP code then sets the session up as for a
   * message and sends the custom command instead of a mail transaction. The probe must
   * answer sooner than a whole transaction, but gets time for TLS and AUTH after connecting. */
  long limit = s->connect_timeout_ms * 2;
  if (limit > s->timeout_ms) limit = s->timeout_ms;
  curl_easy_setopt(e, CURLOPT_UPLOAD, 0L);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "NOOP");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_discard);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, limit);
  curl_easy_setopt(e, CURLOPT_PRIVATE, job);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, job);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->errbuf);
  curl_easy_setopt(e, CURLOPT_DEBUGDATA, job);
  if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
    curl_easy_cleanup(e);
    job_free(job);
    return KPI_SMTP_ECURL;
  }
  /* Running beside the messages, not behind them: a queue of messages waiting for a dead
   * relay must not delay the question whether it is back. */
  job->easy = e;
  job->next = s->running;
  if (s->running) s->running->prev = job;
  s->running = job;
  s->n_running++;
  return 0;
}

size_t kpi_smtp_pending(const kpi_smtp *s) { return s->n_waiting + (size_t)s->n_running; }

static void maybe_finish_close(kpi_smtp *s) {
  if (!s->closing || s->open_handles > 0) return;
  void (*cb)(void *) = s->on_closed;
  void *arg = s->closed_arg;
  free(s->idle);
  free(s->url);
  if (s->password) memset(s->password, 0, strlen(s->password));
  free(s->user);
  free(s->password);
  free(s->ca_file);
  free(s);
  curl_global_cleanup();
  if (cb) cb(arg);
}

void kpi_smtp_close(kpi_smtp *s, void (*on_closed)(void *arg), void *arg) {
  if (s->closing) return;
  s->closing = 1;
  s->on_closed = on_closed;
  s->closed_arg = arg;
  kpi_smtp_result r;
  memset(&r, 0, sizeof(r));
  r.outcome = KPI_SMTP_CANCELLED;
  snprintf(r.error, sizeof(r.error), "SMTP client closed");
  while (s->wait_head) {
    smtp_job *job = s->wait_head;
    s->wait_head = job->next;
    s->n_waiting--;
    job_finish(s, job, &r);
  }
  s->wait_tail = NULL;
  /* Running transfers: removing them may call the socket callback, which only closes poll
   * handles; their DONE callbacks run after, so none can re-enter the multi handle.
   * libcurl's SMTP "done" step, which curl_multi_remove_handle runs even for a transfer cut
   * short, sends the end-of-data marker when recipients are set and then waits for the reply
   * in a blocking loop (curl issues #4015, #8555): against a hung server that froze the whole
   * loop for up to the transaction timeout, and in the middle of DATA (libcurl 7.x) it would
   * have ended a half-sent message that the server then delivers truncated. Without
   * recipients that step does nothing, and the connection of a removed, unfinished transfer
   * is closed without QUIT. */
  while (s->running) {
    smtp_job *job = s->running;
    running_unlink(s, job);
    curl_easy_setopt(job->easy, CURLOPT_MAIL_RCPT, NULL);
    curl_multi_remove_handle(s->multi, job->easy);
    curl_easy_cleanup(job->easy);
    job->easy = NULL;
    job_finish(s, job, &r);
  }
  for (int i = 0; i < s->n_idle; i++) curl_easy_cleanup(s->idle[i]);
  s->n_idle = 0;
  /* Closes the cached connections; their sockets usually come back through CURL_POLL_REMOVE,
   * and any that do not are closed here so that the close always completes. */
  curl_multi_cleanup(s->multi);
  s->multi = NULL;
  while (s->socks) sock_close(s, s->socks);
  uv_timer_stop(&s->timer);
  uv_close((uv_handle_t *)&s->timer, on_uv_handle_closed);
}

int kpi_smtp_url_redact(const char *url, char *out, size_t out_size, int *had_userinfo) {
  if (had_userinfo) *had_userinfo = 0;
  if (out_size > 0) out[0] = '\0';
  CURLU *u = curl_url();
  if (!u) return KPI_SMTP_ENOMEM;
  int rc = KPI_SMTP_EINVAL;
  char *user = NULL, *password = NULL, *clean = NULL;
  if (url && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
    curl_url_get(u, CURLUPART_USER, &user, 0);
    curl_url_get(u, CURLUPART_PASSWORD, &password, 0);
    if (had_userinfo) *had_userinfo = (user && *user) || (password && *password);
    if (curl_url_set(u, CURLUPART_USER, NULL, 0) == CURLUE_OK &&
        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) == CURLUE_OK &&
        curl_url_set(u, CURLUPART_OPTIONS, NULL, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_URL, &clean, 0) == CURLUE_OK) {
      int n = snprintf(out, out_size, "%s", clean);
      rc = n >= 0 && (size_t)n < out_size ? 0 : KPI_SMTP_EINVAL;
      if (rc != 0 && out_size > 0) out[0] = '\0';
    }
  }
  if (password) {
    memset(password, 0, strlen(password));
    curl_free(password);
  }
  curl_free(user);
  curl_free(clean);
  curl_url_cleanup(u);
  return rc;
}

const char *kpi_smtp_outcome_name(kpi_smtp_outcome outcome) {
  switch (outcome) {
    case KPI_SMTP_SENT: return "sent";
    case KPI_SMTP_TRANSIENT: return "transient";
    case KPI_SMTP_PERMANENT: return "permanent";
    case KPI_SMTP_CANCELLED: return "cancelled";
    case KPI_SMTP_RELAY: return "relay";
  }
  return "unknown";
}

const char *kpi_smtp_strerror(int err) {
  switch (err) {
    case 0: return "success";
    case KPI_SMTP_EINVAL: return "invalid argument";
    case KPI_SMTP_ENOMEM: return "out of memory";
    case KPI_SMTP_ECLOSED: return "SMTP client closed";
    case KPI_SMTP_ECURL: return "libcurl error";
    default: return "unknown kpi_smtp error";
  }
}
