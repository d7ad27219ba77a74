/* kpi_shutdown.h: the one SIGTERM drain of every service: signals on the loop, a drain deadline,
 * and the exit codes the services share. */
#ifndef KPI_SHUTDOWN_H
#define KPI_SHUTDOWN_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Exit codes of every service (docs/architecture.md "Start and stop"). */
enum {
  KPI_EXIT_OK = 0,     /* a clean stop: SIGTERM/SIGINT, drained (or the drain timed out) */
  KPI_EXIT_START = 1,  /* a runtime failure at start: cannot bind, migrations refused, OOM */
  KPI_EXIT_CONFIG = 2, /* bad configuration: an environment variable or the catalog */
  KPI_EXIT_FATAL = 70  /* a fatal error after start (EX_SOFTWARE): the supervisor restarts it */
};

typedef struct kpi_shutdown kpi_shutdown;
typedef void (*kpi_shutdown_cb)(kpi_shutdown *sd);

/* What the service does at each step; every callback runs on the loop. */
typedef struct {
  /* The first SIGTERM or SIGINT, or kpi_shutdown_begin: stop accepting and stop starting new
   * work; in-flight work goes on. Required. */
  kpi_shutdown_cb on_begin;
  /* SIGHUP: reload the catalog. NULL: SIGHUP is ignored. */
  kpi_shutdown_cb on_reload;
  /* The drain deadline passed, or a second SIGTERM/SIGINT came: give up on what is still in
   * flight. The service then calls kpi_shutdown_drained once it has let go (or IS_DRAINED says
   * so at the next tick). Runs at most once per deadline (kpi_shutdown_rearm starts another). */
  kpi_shutdown_cb on_expired;
  /* Optional: polled every tick while draining; true means the work is done, and the helper
   * calls kpi_shutdown_drained. NULL: the service calls kpi_shutdown_drained itself, from the
   * callback that finished its last piece of work. */
  bool (*is_drained)(kpi_shutdown *sd);
  /* Once, from kpi_shutdown_drained: flush the producer, close every handle of the service.
   * The helper closes its own handles right after. */
  kpi_shutdown_cb on_drained;
} kpi_shutdown_ops;

/* Embedded in the service's context struct, reached back through DATA. The signal handles stay
 * referenced while the service runs, so they keep the loop alive; the timer runs only while
 * draining. uv_run returns once on_drained has closed the service's handles and the helper its
 * own: nothing needs uv_unref. */
struct kpi_shutdown {
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t timer;
  const kpi_shutdown_ops *ops;
  void *data;
  uint64_t drain_timeout_ms;
  uint64_t deadline;
  int exit_code;  /* what main returns: KPI_EXIT_OK unless kpi_shutdown_begin said otherwise */
  bool started;   /* the signal handlers are installed */
  bool stopping;  /* draining or drained */
  bool expired;   /* on_expired ran for the current deadline */
  bool drained;   /* on_drained ran */
  bool closed;    /* the helper's handles are closing */
};

/* Initializes the handles (nothing is watched yet) so that every later failure can close them
 * with kpi_shutdown_close. OPS must outlive SD. Returns 0 or a negative uv error. */
int kpi_shutdown_init(uv_loop_t *loop, kpi_shutdown *sd, const kpi_shutdown_ops *ops,
                      uint64_t drain_timeout_ms, void *data);

/* Starts watching SIGTERM, SIGINT and SIGHUP (libuv's handlers replace any earlier ones). */
int kpi_shutdown_start(kpi_shutdown *sd);

/* Starts the drain as the first signal does, with EXIT_CODE for main (KPI_EXIT_FATAL for a
 * fatal error). Does nothing before kpi_shutdown_start (start-up reports its own errors) or
 * once stopping: later calls are ignored, a later signal forces the end (on_expired). */
void kpi_shutdown_begin(kpi_shutdown *sd, int exit_code);

/* Starts a fresh drain deadline from now (a second phase of the drain, such as the evaluator's
 * marks after its producer flush). */
void kpi_shutdown_rearm(kpi_shutdown *sd);

/* The service's work is done (or given up): runs on_drained once, then closes the helper's
 * handles. Safe to call more than once, and before kpi_shutdown_begin (a start-up failure). */
void kpi_shutdown_drained(kpi_shutdown *sd);

/* Closes the helper's handles without running any callback (start-up failure paths that close
 * everything themselves). Safe to call more than once. */
void kpi_shutdown_close(kpi_shutdown *sd);

#endif
