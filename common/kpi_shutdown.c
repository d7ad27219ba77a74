/* kpi_shutdown.c: the one SIGTERM drain of every service (signals, drain deadline, close). */
#include "kpi_shutdown.h"

#include <signal.h>

/* How often a drain with an is_drained callback looks at the service's work. */
#define KPI_SHUTDOWN_TICK_MS 50

static void expire(kpi_shutdown *sd) {
  if (sd->expired || sd->drained) return;
  sd->expired = true;
  if (sd->ops->on_expired) sd->ops->on_expired(sd);
  else kpi_shutdown_drained(sd);
}

static void on_uv_shutdown_tick(uv_timer_t *t) {
  kpi_shutdown *sd = t->data;
  if (sd->drained) return;
  if (sd->ops->is_drained(sd)) {
    kpi_shutdown_drained(sd);
    return;
  }
  if (uv_now(t->loop) >= sd->deadline) expire(sd);
}

static void on_uv_shutdown_deadline(uv_timer_t *t) { expire(t->data); }

static void on_uv_shutdown_signal(uv_signal_t *s, int signum) {
  kpi_shutdown *sd = s->data;
  if (signum == SIGHUP) {
    if (sd->ops->on_reload) sd->ops->on_reload(sd);
    return;
  }
  /* A second SIGTERM/SIGINT means "now": what is still in flight is given up at once. */
  if (sd->stopping) expire(sd);
  else kpi_shutdown_begin(sd, KPI_EXIT_OK);
}

int kpi_shutdown_init(uv_loop_t *loop, kpi_shutdown *sd, const kpi_shutdown_ops *ops,
                      uint64_t drain_timeout_ms, void *data) {
  *sd = (kpi_shutdown){.ops = ops, .data = data, .drain_timeout_ms = drain_timeout_ms};
  uv_signal_t *sigs[] = {&sd->sig_term, &sd->sig_int, &sd->sig_hup};
  for (int i = 0; i < 3; i++) {
    int rc = uv_signal_init(loop, sigs[i]);
    if (rc) return rc; /* only fails on an invalid loop: nothing to close */
    sigs[i]->data = sd;
  }
  uv_timer_init(loop, &sd->timer);
  sd->timer.data = sd;
  return 0;
}

int kpi_shutdown_start(kpi_shutdown *sd) {
  int rc = uv_signal_start(&sd->sig_term, on_uv_shutdown_signal, SIGTERM);
  if (rc == 0) rc = uv_signal_start(&sd->sig_int, on_uv_shutdown_signal, SIGINT);
  if (rc == 0) rc = uv_signal_start(&sd->sig_hup, on_uv_shutdown_signal, SIGHUP);
  sd->started = rc == 0;
  return rc;
}

void kpi_shutdown_begin(kpi_shutdown *sd, int exit_code) {
  if (!sd->started || sd->stopping || sd->closed) return;
  sd->stopping = true;
  sd->exit_code = exit_code;
  sd->ops->on_begin(sd);
  if (!sd->drained) kpi_shutdown_rearm(sd);
}

void kpi_shutdown_rearm(kpi_shutdown *sd) {
  if (sd->drained) return;
  sd->expired = false;
  sd->deadline = uv_now(sd->timer.loop) + sd->drain_timeout_ms;
  if (sd->ops->is_drained)
    uv_timer_start(&sd->timer, on_uv_shutdown_tick, 0, KPI_SHUTDOWN_TICK_MS);
  else
    uv_timer_start(&sd->timer, on_uv_shutdown_deadline, sd->drain_timeout_ms, 0);
}

void kpi_shutdown_drained(kpi_shutdown *sd) {
  if (sd->drained || !sd->ops) return;
  sd->drained = true;
  sd->stopping = true;
  uv_timer_stop(&sd->timer);
  if (sd->ops->on_drained) sd->ops->on_drained(sd);
  kpi_shutdown_close(sd);
}

void kpi_shutdown_close(kpi_shutdown *sd) {
  if (sd->closed || !sd->ops) return;
  sd->closed = true;
  uv_handle_t *hs[] = {(uv_handle_t *)&sd->sig_term, (uv_handle_t *)&sd->sig_int,
                       (uv_handle_t *)&sd->sig_hup, (uv_handle_t *)&sd->timer};
  for (int i = 0; i < 4; i++)
    if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
}
