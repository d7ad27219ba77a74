/* kpi_it.h: helpers for integration tests against the real stack started by the ctest
 * fixture (scripts/stack.sh): environment, per-test databases and topics, child services. */
#ifndef KPI_IT_H
#define KPI_IT_H

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

/* Loads $KPI_STACK_ENV (written by scripts/stack.sh) into the environment; aborts the test
 * program with a clear message when the stack is not up. Call first in main(). */
void kpi_it_init(void);

/* A name unique to this process and call, e.g. "it_kafka_4711_1", safe for topics, groups and
 * database names (lower case, digits, underscores). */
void kpi_it_unique(const char *prefix, char *buf, size_t size);

/* Creates database NAME on the stack's server and writes a libpq conninfo for it to CONNINFO.
 * Returns 0 or -1. The database is left behind: the stack is thrown away after the run. */
int kpi_it_create_db(const char *name, char *conninfo, size_t size);

/* Connects to a conninfo or aborts. */
PGconn *kpi_it_pg(const char *conninfo);

/* Runs SQL returning one value; returns a malloc'd string (or NULL for SQL NULL / error). */
char *kpi_it_pg_value(PGconn *conn, const char *sql);

/* The same with $1 = ARG (ARG NULL: no parameter). */
char *kpi_it_pg_value1(PGconn *conn, const char *sql, const char *arg);

/* The one value of SQL ($1 = ARG, may be NULL) as a number; -1 for NULL or an error. */
long kpi_it_pg_long(PGconn *conn, const char *sql, const char *arg);

/* Polls SQL (one value) every 100 ms until it equals WANT or TIMEOUT_MS pass. Returns 0 when
 * it did, else -1. */
int kpi_it_wait_pg_value(PGconn *conn, const char *sql, const char *want, int timeout_ms);

/* Polls kpi_it_pg_long(SQL, ARG) every 100 ms until it equals WANT or TIMEOUT_MS pass; returns
 * the last value read (WANT when it got there). */
long kpi_it_wait_pg_long(PGconn *conn, const char *sql, const char *arg, long want,
                         int timeout_ms);

/* The environment of one child service: "KEY=VALUE" strings held in the struct itself, so a
 * copy of the struct is a copy of the environment. Adding past the capacity aborts. */
#define KPI_IT_ENV_MAX 32
typedef struct {
  char buf[KPI_IT_ENV_MAX][640];
  const char *v[KPI_IT_ENV_MAX + 1];
  size_t n;
} kpi_it_env;

/* Appends one "KEY=VALUE" made from FMT. */
void kpi_it_env_add(kpi_it_env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Replaces the variable NAME, or appends it. The child's getenv returns the first match, so
 * appending a second definition would not override the first. */
void kpi_it_env_set(kpi_it_env *e, const char *name, const char *value);

/* Appends every string of EXTRA (NULL-terminated, may be NULL). */
void kpi_it_env_extend(kpi_it_env *e, const char *const *extra);

/* The NULL-terminated list for kpi_it_spawn, pointing into E (valid while E is). */
const char *const *kpi_it_env_list(kpi_it_env *e);

/* Starts BINARY (relative to the build dir, e.g. "services/ingest/kpi-ingest") with the current
 * environment plus ENV (NULL-terminated "KEY=VALUE" list), stdout+stderr to LOGFILE. */
pid_t kpi_it_spawn(const char *binary, const char *const *env, const char *logfile);

/* Starts ARGV[0] (an absolute path) with ARGV, the current environment plus ENV (may be NULL),
 * stdout+stderr appended to LOGFILE, in the directory CWD (NULL: this one). The child is
 * killed (SIGKILL) when the test program ends, however it ends: call from the main thread,
 * since the kill follows the thread that forked. */
pid_t kpi_it_spawn_argv(const char *const *argv, const char *const *env, const char *logfile,
                        const char *cwd);

/* Sends SIG and waits up to TIMEOUT_MS for exit; returns the exit status as from waitpid
 * (or -1 on timeout, after which the child is killed with SIGKILL). Only a child of ours
 * that has not been reaped yet is signalled: for any other PID (reaped by an earlier stop)
 * it returns -1 and sends nothing, since that pid may be another process's by now. */
int kpi_it_stop(pid_t pid, int sig, int timeout_ms);

/* A currently free TCP port on 127.0.0.1. */
int kpi_it_free_port(void);

/* A TCP connection to 127.0.0.1:PORT with a receive timeout of RCV_TIMEOUT_S seconds (0: none),
 * or -1. */
int kpi_it_connect(int port, int rcv_timeout_s);

/* Waits until an HTTP GET of PATH on 127.0.0.1:PORT answers STATUS; returns 0 or -1. */
int kpi_it_wait_http(int port, const char *path, int status, int timeout_ms);

/* GET PATH from 127.0.0.1:PORT with Connection: close; returns the whole malloc'd response
 * (status line, headers, body), or NULL when it cannot connect or send. Reads wait at most
 * RCV_TIMEOUT_S seconds each. */
char *kpi_it_http_get(int port, const char *path, int rcv_timeout_s);

/* A Kafka configuration for CLIENT_ID with the properties KV (NULL-terminated name, value
 * pairs, may be NULL), or NULL with ERR filled. */
rd_kafka_conf_t *kpi_it_kafka_conf(const char *client_id, const char *const *kv, char *err,
                                   size_t err_size);

/* Produces a copy of VALUE (LEN bytes) with KEY to TOPIC, waiting while the local queue is
 * full; does not flush. Returns 0, or the librdkafka error. */
rd_kafka_resp_err_t kpi_it_produce(rd_kafka_t *producer, const char *topic, const char *key,
                                   const void *value, size_t len);

/* A consumer in GROUP subscribed to TOPIC from the earliest offset, without auto-commit, or
 * NULL. */
rd_kafka_t *kpi_it_kafka_subscriber(const char *client_id, const char *group, const char *topic);

/* Polls C until MATCH returns non-zero for a message without error (MATCH may use cmocka
 * assertions), or TIMEOUT_MS pass. Returns 1 when a message matched, else 0. */
int kpi_it_kafka_find(rd_kafka_t *c, int timeout_ms,
                      int (*match)(const rd_kafka_message_t *m, void *arg), void *arg);

/* Closes and destroys a consumer. */
void kpi_it_kafka_close(rd_kafka_t *c);

/* The whole file at PATH as a malloc'd NUL-terminated string (*LEN its size, LEN may be NULL),
 * or NULL. */
char *kpi_it_read_file(const char *path, size_t *len);

/* Writes TEXT beside PATH and renames it over PATH, as an operator's deploy would, so that a
 * reader never sees half a file. Returns 0 or -1. */
int kpi_it_write_file(const char *path, const char *text);

/* Decodes the base64 text S (N bytes; line breaks and spaces skipped) into a malloc'd
 * NUL-terminated string. */
char *kpi_it_b64_decode(const char *s, size_t n);

/* The stack's Maildir ($KPI_MAILDIR), or NULL after saying on stderr that it is not set. */
const char *kpi_it_maildir(void);

/* Counts the files in the Maildir's new/ (and cur/) folders. */
int kpi_it_maildir_count(const char *maildir);

/* Reads every message of the Maildir into a NULL-terminated array of malloc'd strings. */
char **kpi_it_maildir_read(const char *maildir, int *count);
void kpi_it_strv_free(char **v);

/* Sleeps MS milliseconds. */
void kpi_it_sleep_ms(int ms);

/* Monotonic milliseconds. */
long long kpi_it_now_ms(void);

#endif
