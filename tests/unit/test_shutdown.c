/* test_shutdown.c: kpi_shutdown on a real loop: SIGHUP reloads, the first SIGTERM begins the
 * drain, a second one or the deadline forces it, "drained" closes every handle once, and the
 * loop closes clean. Signals go to this process with uv_kill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <unistd.h>

#include "kpi_shutdown.h"

typedef struct {
  kpi_shutdown sd;
  uv_timer_t guard;
  int reloads, begins, expired, drained_polls, drained;
  int drained_after; /* is_drained answers true from this poll on (0: never) */
} ctx;

static void on_reload(kpi_shutdown *sd) {
  ctx *c = sd->data;
  c->reloads++;
  uv_kill(getpid(), SIGTERM);
}

static void on_begin(kpi_shutdown *sd) {
  ctx *c = sd->data;
  c->begins++;
  assert_true(sd->stopping);
}

static void on_begin_then_signal_again(kpi_shutdown *sd) {
  on_begin(sd);
  uv_kill(getpid(), SIGINT);
}

static void on_expired(kpi_shutdown *sd) {
  ctx *c = sd->data;
  c->expired++;
  kpi_shutdown_drained(sd);
}

static bool is_drained(kpi_shutdown *sd) {
  ctx *c = sd->data;
  return c->drained_after && ++c->drained_polls >= c->drained_after;
}

static void on_drained(kpi_shutdown *sd) {
  ctx *c = sd->data;
  c->drained++;
  uv_close((uv_handle_t *)&c->guard, NULL);
}

static void on_uv_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("the drain did not end in 10 s");
}

static void run(ctx *c, const kpi_shutdown_ops *ops, uint64_t timeout_ms, int first_signal) {
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(kpi_shutdown_init(&loop, &c->sd, ops, timeout_ms, c), 0);
  assert_int_equal(kpi_shutdown_start(&c->sd), 0);
  uv_timer_init(&loop, &c->guard);
  uv_timer_start(&c->guard, on_uv_guard, 10000, 0);
  if (first_signal) uv_kill(getpid(), first_signal);
  else kpi_shutdown_begin(&c->sd, KPI_EXIT_FATAL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  kpi_shutdown_drained(&c->sd); /* a second call does nothing */
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* SIGHUP reloads and sends SIGTERM; the drain polls until the work is done: exit 0. */
static void test_reload_then_drain(void **state) {
  (void)state;
  static const kpi_shutdown_ops ops = {.on_begin = on_begin, .on_reload = on_reload,
                                       .on_expired = on_expired, .is_drained = is_drained,
                                       .on_drained = on_drained};
  ctx c = {.drained_after = 3};
  run(&c, &ops, 5000, SIGHUP);
  assert_int_equal(c.reloads, 1);
  assert_int_equal(c.begins, 1);
  assert_int_equal(c.expired, 0);
  assert_int_equal(c.drained_polls, 3);
  assert_int_equal(c.drained, 1);
  assert_int_equal(c.sd.exit_code, KPI_EXIT_OK);
}

/* A second signal forces the end although the work never finishes. */
static void test_second_signal_forces(void **state) {
  (void)state;
  static const kpi_shutdown_ops ops = {.on_begin = on_begin_then_signal_again,
                                       .on_expired = on_expired, .is_drained = is_drained,
                                       .on_drained = on_drained};
  ctx c = {0};
  run(&c, &ops, 60000, SIGTERM);
  assert_int_equal(c.begins, 1);
  assert_int_equal(c.expired, 1);
  assert_int_equal(c.drained, 1);
}

/* Without is_drained the deadline is one timer; kpi_shutdown_begin passes its exit code. */
static void test_deadline_and_exit_code(void **state) {
  (void)state;
  static const kpi_shutdown_ops ops = {.on_begin = on_begin, .on_expired = on_expired,
                                       .on_drained = on_drained};
  ctx c = {0};
  run(&c, &ops, 20, 0);
  assert_int_equal(c.begins, 1);
  assert_int_equal(c.expired, 1);
  assert_int_equal(c.drained, 1);
  assert_int_equal(c.sd.exit_code, KPI_EXIT_FATAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_reload_then_drain),
                                     cmocka_unit_test(test_second_signal_forces),
                                     cmocka_unit_test(test_deadline_and_exit_code)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
