/* kpi_smtp.h: an SMTP client for a libuv loop: libcurl on one worker thread per connection, reused connections. */
#ifndef KPI_SMTP_H
#define KPI_SMTP_H

#include <stddef.h>
#include <uv.h>

#define KPI_SMTP_EINVAL (-50001)
#define KPI_SMTP_ENOMEM (-50002)
#define KPI_SMTP_ECLOSED (-50003)
#define KPI_SMTP_ECURL (-50004)

typedef enum {
  KPI_SMTP_TLS_NONE = 0, /* plain SMTP (smtps:// URLs still use implicit TLS) */
  KPI_SMTP_TLS_TRY,      /* STARTTLS when the server offers it */
  KPI_SMTP_TLS_REQUIRE   /* STARTTLS or fail (a transient failure: the mail waits) */
} kpi_smtp_tls;

typedef struct kpi_smtp_config {
  const char *url;      /* "smtp://127.0.0.1:2525", "smtps://mail.example:465" (copied) */
  const char *user;     /* AUTH when non-NULL and non-empty (copied) */
  const char *password; /* (copied; never logged) */
  kpi_smtp_tls tls;
  const char *ca_file;  /* CA bundle for TLS, NULL: the system's */
  int tls_verify;       /* 0 turns peer and host verification off (test servers only) */
  long connect_timeout_ms;
  long timeout_ms;      /* one whole transaction, connect included */
  int max_connections;  /* parallel transactions = connections kept open for reuse */
} kpi_smtp_config;

/* Fills CFG with the defaults: TLS_TRY, verify on, 10 s connect, 60 s total, 4 connections;
 * URL NULL (must be set). */
void kpi_smtp_config_defaults(kpi_smtp_config *cfg);

/* What a finished transaction says, and about whom. A reply the relay gave to this message's
 * own commands (MAIL FROM, RCPT TO, DATA and the end of data) is about the message:
 * TRANSIENT or PERMANENT. Everything else is about the relay and says nothing about the
 * message: RELAY. The table is in docs/notifier.md ("Relay state"). */
typedef enum {
  KPI_SMTP_SENT = 0,      /* the server accepted the message (2xx after DATA) */
  KPI_SMTP_TRANSIENT = 1, /* a 4xx reply to MAIL FROM, RCPT TO or DATA (not 421) */
  KPI_SMTP_PERMANENT = 2, /* a 5xx reply to MAIL FROM, RCPT TO or DATA: retrying cannot help */
  KPI_SMTP_CANCELLED = 3, /* the client was closed before the transaction finished */
  KPI_SMTP_RELAY = 4      /* the relay failed, not the message: no connection, timeout, TLS,
                             greeting, EHLO or AUTH refused, 421, connection lost */
} kpi_smtp_outcome;

typedef struct kpi_smtp_result {
  kpi_smtp_outcome outcome;
  long code;        /* the last SMTP reply code, 0 when none was received */
  char reply[256];  /* the last reply line from the server ("250 OK"), "" when none;
                       printable valid UTF-8 (kpi_mail_text_clean), whatever the server sent */
  char error[256];  /* libcurl's explanation when not sent, else ""; likewise clean */
  double seconds;   /* from kpi_smtp_send to completion, queueing included */
} kpi_smtp_result;

typedef struct kpi_smtp kpi_smtp;

/* Runs once per kpi_smtp_send that returned 0, on the loop thread (never on a worker);
 * RESULT is valid during the call. The callback may call kpi_smtp_send or kpi_smtp_close. */
typedef void (*kpi_smtp_done_cb)(kpi_smtp *smtp, const kpi_smtp_result *result, void *arg);

/* A client on LOOP: starts max_connections worker threads (each with its own libcurl easy
 * handle and cached connection) and one for probes. Every other call is made on the loop's
 * thread. Returns NULL with ERRSTR filled on a bad configuration, out of memory, or when the
 * threads cannot be started. */
kpi_smtp *kpi_smtp_new(uv_loop_t *loop, const kpi_smtp_config *cfg, char *errstr,
                       size_t errstr_size);

/* Queues one message from FROM to TO (both plain addresses, already validated by the
 * caller). Takes ownership of MESSAGE (malloc'd, LEN bytes, CRLF lines; freed on every path).
 * Up to max_connections transactions run at once, each on its worker's cached connection;
 * the rest wait in FIFO order. Returns 0 (DONE will run exactly once) or a negative KPI_SMTP_E* code (DONE
 * never runs). */
int kpi_smtp_send(kpi_smtp *smtp, const char *from, const char *to, char *message, size_t len,
                  kpi_smtp_done_cb done, void *arg);

/* Checks that the relay answers: connects (or reuses a cached connection), sets the session
 * up exactly as a mail would (greeting, EHLO, STARTTLS, AUTH) and sends NOOP, without
 * sending any message. Runs at once, beside the queued messages (it does not wait behind
 * them, on its own worker), within 2 x the connect timeout (at most the transaction timeout);
 * its connection stays cached for the next probe (messages use their workers' own). DONE runs once with KPI_SMTP_SENT (the relay
 * answered), KPI_SMTP_RELAY (with the reason in error/reply) or KPI_SMTP_CANCELLED (closed).
 * Returns 0 or a negative KPI_SMTP_E* code (DONE never runs). */
int kpi_smtp_probe(kpi_smtp *smtp, kpi_smtp_done_cb done, void *arg);

/* The outcome of a finished transaction: CURL_CODE is libcurl's CURLcode, REPLY_CODE the last
 * SMTP reply code (0 when none), MAIL_STARTED non-zero once MAIL FROM went out. Pure; the table
 * is in docs/notifier.md ("Relay state"). */
kpi_smtp_outcome kpi_smtp_classify(int curl_code, long reply_code, int mail_started);

/* Transactions queued or running (probes included). */
size_t kpi_smtp_pending(const kpi_smtp *smtp);

/* Cancels what is still queued or running (their DONE runs with KPI_SMTP_CANCELLED; a
 * transaction that finished but whose DONE had not run yet gets its real result), shuts the
 * connections down without waiting for the server, and stops the workers; ON_CLOSED (may be
 * NULL) runs from the loop once every thread is joined and the handle closed, after SMTP is
 * freed. No DONE runs after this returns. To drain first, wait for kpi_smtp_pending() == 0. */
void kpi_smtp_close(kpi_smtp *smtp, void (*on_closed)(void *arg), void *arg);

/* Writes URL without its userinfo and login options into OUT ("smtp://user:pw@host:587" ->
 * "smtp://host:587/"), for logs. *HAD_USERINFO (may be NULL) is set when the URL carried a
 * user name or password, which libcurl would use to log in. Returns 0, KPI_SMTP_EINVAL when
 * URL does not parse or OUT is too small (OUT is then ""), or KPI_SMTP_ENOMEM. */
int kpi_smtp_url_redact(const char *url, char *out, size_t out_size, int *had_userinfo);

const char *kpi_smtp_outcome_name(kpi_smtp_outcome outcome);
const char *kpi_smtp_strerror(int err);

#endif
