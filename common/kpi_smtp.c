/* kpi_smtp.c: SMTP over libcurl easy handles, one worker thread per connection, results handed back to the libuv loop. */
#include "kpi_smtp.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "kpi_mail.h"

/* Why threads rather than the multi socket API on the loop (docs/notifier.md, "SMTP client"):
 * libcurl's SMTP code waits for the reply to the end of the message in a blocking loop, even
 * under the multi interface (curl issue #8555). On the loop that made the connections take
 * turns: while one waited for its "250" after the data, no other connection, nor HTTP, Kafka
 * or PostgreSQL, made progress, so 4 connections sent no faster than 1. Each connection now
 * has a thread running curl_easy_perform on its own easy handle, which keeps the connection
 * (and its TLS session) cached between messages; the loop queues jobs under a mutex and gets
 * the results back through one uv_async. A blocking wait then holds only its own connection. */

/* One message (or probe) on its way. Owned by the client from kpi_smtp_send until DONE has
 * run and the worker is done with it. */
typedef struct smtp_job {
  struct smtp_job *next; /* in a queue (waiting, probes, done) */
  struct curl_slist *rcpt;
  char *from;
  char *message;
  size_t len;
  size_t pos;            /* bytes handed to libcurl so far */
  uint64_t queued_ns;
  int probe;             /* kpi_smtp_probe: NOOP instead of a message, on the probe worker */
  int mail_started;      /* MAIL FROM went out: later replies are about this message */
  int cancelled;         /* DONE already ran (kpi_smtp_close); the job is only freed; under mu */
  char reply[256];       /* last complete reply line */
  char errbuf[CURL_ERROR_SIZE];
  kpi_smtp_result result; /* written by the worker, read by the loop after the hand-back */
  kpi_smtp_done_cb done;
  void *arg;
} smtp_job;

/* One thread and its easy handle (its cached connection). */
typedef struct smtp_worker {
  kpi_smtp *smtp;
  uv_thread_t thread;
  int probe_only;        /* serves probes only, so that a probe never waits behind mails */
  curl_socket_t fd;      /* the handle's current socket, CURL_SOCKET_BAD when none; under mu */
  smtp_job *job;         /* running; under mu */
} smtp_worker;

struct kpi_smtp {
  uv_loop_t *loop;
  uv_async_t async;      /* workers -> loop: results are ready, or a worker exited */
  uv_mutex_t mu;
  uv_cond_t cond;        /* loop -> mail workers: a message was queued, or closing */
  uv_cond_t probe_cond;  /* loop -> the probe worker: a probe was queued, or closing. Apart, so
                            that each message wakes one mail worker and never the probe worker
                            (a context switch per message; docs/notifier.md "Performance") */
  char *url, *user, *password, *ca_file;
  kpi_smtp_tls tls;
  int tls_verify;
  long connect_timeout_ms, timeout_ms;
  int max_connections;
  smtp_worker *workers;  /* max_connections mail workers, then the probe worker */
  int n_workers;         /* threads started */
  atomic_int closing;    /* read by the progress callback without the lock */
  /* Under mu: */
  smtp_job *wait_head, *wait_tail;
  smtp_job *probe_head, *probe_tail;
  smtp_job *done_head, *done_tail;
  int n_exited;
  /* Loop thread only: */
  size_t n_pending;      /* jobs whose DONE has not run */
  int close_called, async_closing;
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

static void job_push(smtp_job **head, smtp_job **tail, smtp_job *job) {
  job->next = NULL;
  if (*tail) (*tail)->next = job;
  else *head = job;
  *tail = job;
}

static smtp_job *job_pop(smtp_job **head, smtp_job **tail) {
  smtp_job *job = *head;
  if (job) {
    *head = job->next;
    if (!*head) *tail = NULL;
    job->next = NULL;
  }
  return job;
}

/* Worker side: callbacks run inside curl_easy_perform ----------------------------------- */

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

/* Sockets are opened and closed through these so that kpi_smtp_close can shut down the
 * socket of a transfer stuck on the server: its blocking wait then ends at once, and a
 * message cut short is never completed (no end-of-data marker goes out on a dead socket). */
static curl_socket_t on_curl_open_socket(void *userp, curlsocktype purpose,
                                         struct curl_sockaddr *addr) {
  (void)purpose;
  smtp_worker *w = userp;
  kpi_smtp *s = w->smtp;
  curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
  if (fd == CURL_SOCKET_BAD) return fd;
  uv_mutex_lock(&s->mu);
  int closing = atomic_load(&s->closing);
  if (!closing) w->fd = fd;
  uv_mutex_unlock(&s->mu);
  if (closing) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  return fd;
}

static int on_curl_close_socket(void *userp, curl_socket_t fd) {
  smtp_worker *w = userp;
  uv_mutex_lock(&w->smtp->mu);
  if (w->fd == fd) w->fd = CURL_SOCKET_BAD;
  uv_mutex_unlock(&w->smtp->mu);
  return close(fd);
}

/* Ends a transfer (without its end-of-data marker) once the client is closing. */
static int on_curl_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                            curl_off_t ulnow) {
  (void)dltotal;
  (void)dlnow;
  (void)ultotal;
  (void)ulnow;
  smtp_worker *w = userp;
  return atomic_load(&w->smtp->closing) ? 1 : 0;
}

static void job_free(smtp_job *job) {
  curl_slist_free_all(job->rcpt);
  free(job->from);
  free(job->message);
  free(job);
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

/* The settings every handle of this client shares; a probe handle also gets NOOP and a
 * shorter limit (kpi_smtp_probe). */
static CURL *easy_new(kpi_smtp *s, smtp_worker *w) {
  CURL *e = curl_easy_init();
  if (!e) return NULL;
  curl_easy_setopt(e, CURLOPT_URL, s->url);
  curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(e, CURLOPT_MAXCONNECTS, 1L);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->timeout_ms);
  curl_easy_setopt(e, CURLOPT_READFUNCTION, on_curl_read);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_curl_header);
  curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_curl_debug);
  curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_curl_open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, w);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_curl_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, w);
  curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_curl_progress);
  curl_easy_setopt(e, CURLOPT_XFERINFODATA, w);
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
  if (w->probe_only) {
    /* No upload and no recipients: libcurl's SMTP code then sets the session up as for a
     * message and sends the custom command instead of a mail transaction. The probe must
     * answer sooner than a whole transaction, but gets time for TLS and AUTH after
     * connecting. */
    long limit = s->connect_timeout_ms * 2;
    if (limit > s->timeout_ms) limit = s->timeout_ms;
    curl_easy_setopt(e, CURLOPT_UPLOAD, 0L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "NOOP");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_curl_discard);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, limit);
  }
  return e;
}

/* Fills JOB->result from a finished transfer (RC), as the classification table says. */
static void job_result(smtp_job *job, CURL *e, CURLcode rc) {
  kpi_smtp_result *r = &job->result;
  memset(r, 0, sizeof(*r));
  long code = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  r->code = code;
  snprintf(r->reply, sizeof(r->reply), "%s", job->reply);
  if (rc != CURLE_OK) {
    char detail[sizeof(job->errbuf)];
    /* libcurl's detail may quote the server: the same rule as for replies. */
    kpi_mail_text_clean(job->errbuf, strnlen(job->errbuf, sizeof(job->errbuf)), detail,
                        sizeof(detail));
    str_append(r->error, sizeof(r->error), curl_easy_strerror(rc));
    str_append(r->error, sizeof(r->error), ": ");
    str_append(r->error, sizeof(r->error), detail[0] ? detail : "no detail");
  }
  r->outcome = kpi_smtp_classify((int)rc, code, job->mail_started);
}

/* Runs JOB on the worker's handle E (a blocking call: this is the worker thread). */
static void job_run(CURL *e, smtp_job *job) {
  curl_easy_setopt(e, CURLOPT_HEADERDATA, job);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, job->errbuf);
  curl_easy_setopt(e, CURLOPT_DEBUGDATA, job);
  if (!job->probe) {
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, job->from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, job->rcpt);
    curl_easy_setopt(e, CURLOPT_READDATA, job);
    curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)job->len);
  }
  CURLcode rc = curl_easy_perform(e);
  job_result(job, e, rc);
  /* The job goes away after the hand-back: the handle keeps no pointer into it. */
  curl_easy_setopt(e, CURLOPT_MAIL_RCPT, NULL);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, NULL);
  curl_easy_setopt(e, CURLOPT_READDATA, NULL);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, NULL);
  curl_easy_setopt(e, CURLOPT_DEBUGDATA, NULL);
}

/* The next job for W, waiting for one; NULL once the client is closing. Called under mu. */
static smtp_job *worker_next(kpi_smtp *s, smtp_worker *w) {
  for (;;) {
    if (atomic_load(&s->closing)) return NULL;
    smtp_job *job = w->probe_only ? job_pop(&s->probe_head, &s->probe_tail)
                                  : job_pop(&s->wait_head, &s->wait_tail);
    if (job) return job;
    uv_cond_wait(w->probe_only ? &s->probe_cond : &s->cond, &s->mu);
  }
}

static void worker_main(void *arg) {
  smtp_worker *w = arg;
  kpi_smtp *s = w->smtp;
  CURL *e = NULL;
  uv_mutex_lock(&s->mu);
  smtp_job *job;
  while ((job = worker_next(s, w))) {
    w->job = job;
    uv_mutex_unlock(&s->mu);
    if (!e) e = easy_new(s, w);
    if (e) {
      job_run(e, job);
    } else {
      memset(&job->result, 0, sizeof(job->result));
      job->result.outcome = job->probe ? KPI_SMTP_RELAY : KPI_SMTP_TRANSIENT;
      snprintf(job->result.error, sizeof(job->result.error), "cannot start the transfer: out of memory");
    }
    uv_mutex_lock(&s->mu);
    w->job = NULL;
    job_push(&s->done_head, &s->done_tail, job);
    uv_async_send(&s->async);
  }
  uv_mutex_unlock(&s->mu);
  /* The socket was shut down by kpi_smtp_close: no QUIT waits for a hung server. */
  if (e) curl_easy_cleanup(e);
  uv_mutex_lock(&s->mu);
  s->n_exited++;
  uv_async_send(&s->async);
  uv_mutex_unlock(&s->mu);
}

/* Loop side ------------------------------------------------------------------------------ */

static void job_finish(kpi_smtp *s, smtp_job *job, kpi_smtp_result *r) {
  r->seconds = (double)(uv_hrtime() - job->queued_ns) / 1e9;
  kpi_smtp_done_cb done = job->done;
  void *arg = job->arg;
  s->n_pending--;
  done(s, r, arg);
}

static void free_client(kpi_smtp *s) {
  free(s->workers);
  free(s->url);
  if (s->password) memset(s->password, 0, strlen(s->password));
  free(s->user);
  free(s->password);
  free(s->ca_file);
  free(s);
}

static void on_uv_async_closed(uv_handle_t *h) {
  kpi_smtp *s = h->data;
  void (*cb)(void *) = s->on_closed;
  void *arg = s->closed_arg;
  uv_cond_destroy(&s->probe_cond);
  uv_cond_destroy(&s->cond);
  uv_mutex_destroy(&s->mu);
  free_client(s);
  curl_global_cleanup();
  if (cb) cb(arg);
}

/* Once every worker has exited: join them (at once: they are past their last lock), free
 * what they handed back after the close, and close the async handle. */
static void maybe_finish_close(kpi_smtp *s) {
  if (!s->close_called || s->async_closing) return;
  uv_mutex_lock(&s->mu);
  int all_exited = s->n_exited == s->n_workers;
  smtp_job *left = all_exited ? s->done_head : NULL;
  if (all_exited) s->done_head = s->done_tail = NULL;
  uv_mutex_unlock(&s->mu);
  if (!all_exited) return;
  for (int i = 0; i < s->n_workers; i++) uv_thread_join(&s->workers[i].thread);
  while (left) {
    smtp_job *job = left;
    left = job->next;
    job_free(job); /* cancelled: its DONE ran in kpi_smtp_close */
  }
  s->async_closing = 1;
  uv_close((uv_handle_t *)&s->async, on_uv_async_closed);
}

/* Delivers the results the workers handed back, one at a time: a DONE callback may send
 * more, or close the client (which then delivers the rest itself). */
static void on_uv_async(uv_async_t *a) {
  kpi_smtp *s = a->data;
  while (!s->close_called) {
    uv_mutex_lock(&s->mu);
    smtp_job *job = job_pop(&s->done_head, &s->done_tail);
    uv_mutex_unlock(&s->mu);
    if (!job) break;
    job_finish(s, job, &job->result);
    job_free(job);
  }
  maybe_finish_close(s);
}

static int workers_start(kpi_smtp *s) {
  s->workers = calloc((size_t)s->max_connections + 1, sizeof(*s->workers));
  if (!s->workers) return -1;
  for (int i = 0; i <= s->max_connections; i++) {
    smtp_worker *w = &s->workers[i];
    w->smtp = s;
    w->fd = CURL_SOCKET_BAD;
    w->probe_only = i == s->max_connections;
    if (uv_thread_create(&w->thread, worker_main, w) != 0) return -1;
    s->n_workers++;
  }
  return 0;
}

/* Stops and joins the workers started so far (kpi_smtp_new failing half-way). */
static void workers_abort(kpi_smtp *s) {
  uv_mutex_lock(&s->mu);
  atomic_store(&s->closing, 1);
  uv_cond_broadcast(&s->cond);
  uv_cond_broadcast(&s->probe_cond);
  uv_mutex_unlock(&s->mu);
  for (int i = 0; i < s->n_workers; i++) uv_thread_join(&s->workers[i].thread);
}

static int client_copy_config(kpi_smtp *s, const kpi_smtp_config *cfg) {
  s->tls = cfg->tls;
  s->tls_verify = cfg->tls_verify;
  s->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
  s->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 60000;
  s->max_connections = cfg->max_connections;
  if (!(s->url = strdup(cfg->url))) return -1;
  if (cfg->user && *cfg->user) {
    s->user = strdup(cfg->user);
    s->password = strdup(cfg->password ? cfg->password : "");
    if (!s->user || !s->password) return -1;
  }
  if (cfg->ca_file && *cfg->ca_file && !(s->ca_file = strdup(cfg->ca_file))) return -1;
  return 0;
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
  if (!s) goto err_global;
  s->loop = loop;
  atomic_init(&s->closing, 0);
  if (client_copy_config(s, cfg) != 0) goto err_free;
  if (uv_mutex_init(&s->mu) != 0) goto err_free;
  if (uv_cond_init(&s->cond) != 0) goto err_mutex;
  if (uv_cond_init(&s->probe_cond) != 0) goto err_cond;
  if (uv_async_init(loop, &s->async, on_uv_async) != 0) goto err_probe_cond;
  s->async.data = s;
  if (workers_start(s) != 0) {
    workers_abort(s);
    s->async_closing = 1;
    s->on_closed = NULL;
    /* The async handle is closed on the loop, which frees the rest. */
    uv_close((uv_handle_t *)&s->async, on_uv_async_closed);
    snprintf(errstr, errstr_size, "cannot start the SMTP worker threads");
    return NULL;
  }
  return s;

err_probe_cond:
  uv_cond_destroy(&s->probe_cond);
err_cond:
  uv_cond_destroy(&s->cond);
err_mutex:
  uv_mutex_destroy(&s->mu);
err_free:
  free_client(s);
err_global:
  curl_global_cleanup();
  snprintf(errstr, errstr_size, "out of memory");
  return NULL;
}

int kpi_smtp_send(kpi_smtp *s, const char *from, const char *to, char *message, size_t len,
                  kpi_smtp_done_cb done, void *arg) {
  if (!s || s->close_called) {
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
  s->n_pending++;
  uv_mutex_lock(&s->mu);
  job_push(&s->wait_head, &s->wait_tail, job);
  uv_cond_signal(&s->cond); /* one message, one worker */
  uv_mutex_unlock(&s->mu);
  return 0;
}

int kpi_smtp_probe(kpi_smtp *s, kpi_smtp_done_cb done, void *arg) {
  if (!s || s->close_called) return KPI_SMTP_ECLOSED;
  if (!done) return KPI_SMTP_EINVAL;
  smtp_job *job = calloc(1, sizeof(*job));
  if (!job) return KPI_SMTP_ENOMEM;
  job->probe = 1;
  job->done = done;
  job->arg = arg;
  job->queued_ns = uv_hrtime();
  /* On its own worker, beside the messages, not behind them: a queue of messages waiting for
   * a dead relay must not delay the question whether it is back. */
  s->n_pending++;
  uv_mutex_lock(&s->mu);
  job_push(&s->probe_head, &s->probe_tail, job);
  uv_cond_signal(&s->probe_cond);
  uv_mutex_unlock(&s->mu);
  return 0;
}

size_t kpi_smtp_pending(const kpi_smtp *s) { return s->n_pending; }

static void cancel_job(kpi_smtp *s, smtp_job *job) {
  kpi_smtp_result r;
  memset(&r, 0, sizeof(r));
  r.outcome = KPI_SMTP_CANCELLED;
  snprintf(r.error, sizeof(r.error), "SMTP client closed");
  job_finish(s, job, &r);
}

/* Runs DONE with KPI_SMTP_CANCELLED for every job of LIST and frees them. */
static void cancel_list(kpi_smtp *s, smtp_job *list) {
  while (list) {
    smtp_job *job = list;
    list = job->next;
    cancel_job(s, job);
    job_free(job);
  }
}

void kpi_smtp_close(kpi_smtp *s, void (*on_closed)(void *arg), void *arg) {
  if (s->close_called) return;
  s->close_called = 1;
  s->on_closed = on_closed;
  s->closed_arg = arg;
  /* Jobs a worker still holds: listed here, not linked (the worker relinks them when it hands
   * them back); freed when it does. */
  smtp_job *running[257];
  int n_running = 0;
  uv_mutex_lock(&s->mu);
  atomic_store(&s->closing, 1);
  smtp_job *waiting = s->wait_head, *probes = s->probe_head, *done = s->done_head;
  s->wait_head = s->wait_tail = s->probe_head = s->probe_tail = s->done_head = s->done_tail = NULL;
  /* Transfers still running are cut short: their sockets are shut down, which ends any
   * blocking wait inside libcurl at once, and the progress callback aborts the rest, so a
   * half-sent message is never completed (no end-of-data marker). Idle connections are
   * shut down too: the workers then exit without waiting for a reply to QUIT. */
  for (int i = 0; i < s->n_workers; i++) {
    smtp_worker *w = &s->workers[i];
    if (w->job) {
      w->job->cancelled = 1;
      running[n_running++] = w->job;
    }
    if (w->fd != CURL_SOCKET_BAD) shutdown(w->fd, SHUT_RDWR);
  }
  uv_cond_broadcast(&s->cond);
  uv_cond_broadcast(&s->probe_cond);
  uv_mutex_unlock(&s->mu);
  /* Finished transfers keep their real outcome (a 250 must be recorded as sent). */
  while (done) {
    smtp_job *job = done;
    done = job->next;
    job_finish(s, job, &job->result);
    job_free(job);
  }
  cancel_list(s, waiting);
  cancel_list(s, probes);
  for (int i = 0; i < n_running; i++) cancel_job(s, running[i]);
  maybe_finish_close(s);
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
