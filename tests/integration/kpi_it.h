/* kpi_it.h: helpers for integration tests against the real stack started by the ctest
 * fixture (scripts/stack.sh): environment, per-test databases and topics, child services. */
#ifndef KPI_IT_H
#define KPI_IT_H

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

/* Starts BINARY (relative to the build dir, e.g. "services/ingest/kpi-ingest") with the current
 * environment plus ENV (NULL-terminated "KEY=VALUE" list), stdout+stderr to LOGFILE. */
pid_t kpi_it_spawn(const char *binary, const char *const *env, const char *logfile);

/* Sends SIG and waits up to TIMEOUT_MS for exit; returns the exit status as from waitpid
 * (or -1 on timeout, after which the child is killed with SIGKILL). */
int kpi_it_stop(pid_t pid, int sig, int timeout_ms);

/* A currently free TCP port on 127.0.0.1. */
int kpi_it_free_port(void);

/* Waits until an HTTP GET of PATH on 127.0.0.1:PORT answers STATUS; returns 0 or -1. */
int kpi_it_wait_http(int port, const char *path, int status, int timeout_ms);

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
