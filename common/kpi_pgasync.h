/* kpi_pgasync.h: one asynchronous PostgreSQL connection on a libuv loop (libpq non-blocking). */
#ifndef KPI_PGASYNC_H
#define KPI_PGASYNC_H

#include <libpq-fe.h>
#include <stddef.h>
#include <uv.h>

#define KPI_PGASYNC_EDOWN (-30001)  /* not connected: the query was not queued */
#define KPI_PGASYNC_ENOMEM (-30002)
#define KPI_PGASYNC_ECLOSED (-30003)
#define KPI_PGASYNC_EINVAL (-30004)  /* bad arguments: no SQL or callback, NPARAMS outside 0..65535,
                                        or parameters without VALUES */

typedef struct kpi_pgasync kpi_pgasync;

/* Called once per query, on the loop. RES is the query's result (the first failing one for a
 * multi-statement string, else the last), valid only during the call (freed after it returns);
 * check PQresultStatus. RES is NULL when the connection broke before the query completed or it
 * was still queued then: its outcome is unknown (a COMMIT may or may not have happened), so
 * callers redo their work idempotently once the connection is back. The callback may queue
 * more queries or close the connection. */
typedef void (*kpi_pgasync_result_cb)(kpi_pgasync *pg, const PGresult *res, void *arg);

/* Called with UP=1 each time a connection is established, UP=0 each time it is lost (after the
 * result callbacks of the failed queries ran). */
typedef void (*kpi_pgasync_state_cb)(kpi_pgasync *pg, int up, void *arg);

/* Starts connecting to CONNINFO at once and reconnects forever after a loss, with exponential
 * backoff from 100 ms to KPI_PG_RETRY_MAX_MS (5 s). Never blocks the loop. Returns NULL only
 * when out of memory (ERRSTR filled). */
kpi_pgasync *kpi_pgasync_new(uv_loop_t *loop, const char *conninfo, kpi_pgasync_state_cb on_state,
                             void *arg, char *errstr, size_t errstr_size);

/* Queues SQL with NPARAMS text parameters ($1…; VALUES[i] NULL = SQL NULL). SQL and values are
 * copied. Queries run one at a time in queue order. Returns 0 (CB will be called exactly once,
 * always from a later loop callback, never inside this call, even when the send finds the
 * connection broken), or KPI_PGASYNC_EDOWN / ENOMEM / ECLOSED / EINVAL (SQL or CB NULL,
 * NPARAMS outside 0..65535, VALUES NULL with NPARAMS > 0), in which case CB is never called
 * and the connection is left as it was. Since CB never runs inside the call, a caller marks
 * its own "query pending" state after a 0 return; there is no need to set it beforehand and
 * undo it on failure. */
int kpi_pgasync_query(kpi_pgasync *pg, const char *sql, int nparams, const char *const *values,
                      kpi_pgasync_result_cb cb, void *arg);

/* As kpi_pgasync_query, for a statement run often: NAME (not empty, unique per SQL text on the
 * connection) is prepared from SQL on first use on each connection (PQsendPrepare, parameter
 * types inferred as for an unnamed query), then executed by name (PQsendQueryPrepared), so the
 * server parses it once per connection and may reuse its plan (PostgreSQL's plan cache:
 * custom plans for the first five runs, then a generic plan when it costs no more; see
 * plan_cache_mode). A reconnect prepares again. A failed Parse is the query's result (CB gets
 * it), as the query's own error would be. EINVAL also when NAME is NULL or empty or was
 * prepared with another SQL on this connection. Out of memory for the bookkeeping, the query
 * is sent unnamed. */
int kpi_pgasync_query_prepared(kpi_pgasync *pg, const char *name, const char *sql, int nparams,
                               const char *const *values, kpi_pgasync_result_cb cb, void *arg);

/* As kpi_pgasync_query without parameters, for SQL a `COPY … FROM STDIN`: *DATA (LEN bytes,
 * malloc'd; in the COPY's format, e.g. text: tab-separated lines, `\N` for NULL, backslash
 * escapes) is its whole input, sent once the server asks for it, in pieces as the socket takes
 * them (libpq's buffer stays small), then the COPY is ended. Takes ownership of *DATA on every
 * path, errors included, and sets *DATA to NULL. CB gets the COPY's result: PGRES_COMMAND_OK
 * (PQcmdTuples: the rows copied) or the error that stopped it (a unique violation, bad data…;
 * the session's transaction is then aborted as for any failed statement); RES NULL as for any
 * query. A statement that asks for no COPY input just has its result; one that is not a COPY
 * FROM but asks for input gets its COPY refused. Returns 0 or the errors of kpi_pgasync_query
 * (EINVAL also for *DATA NULL with LEN > 0). */
int kpi_pgasync_copy_in(kpi_pgasync *pg, const char *sql, char **data, size_t len,
                        kpi_pgasync_result_cb cb, void *arg);

int kpi_pgasync_is_up(const kpi_pgasync *pg);

/* Queries queued or running. */
size_t kpi_pgasync_pending(const kpi_pgasync *pg);

/* Closes the connection; queued queries get their callback with RES NULL first. ON_CLOSED (may
 * be NULL) runs from the loop once every handle is closed; PG is freed before it runs. */
void kpi_pgasync_close(kpi_pgasync *pg, void (*on_closed)(void *arg), void *arg);

const char *kpi_pgasync_strerror(int err);

#endif
