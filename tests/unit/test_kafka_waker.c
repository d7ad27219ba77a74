/* test_kafka_waker.c: librdkafka's queue wakes a libuv loop through kpi_kafka_waker: delivery
 * reports arrive on the loop with no polling timer, and every handle closes. Uses librdkafka's
 * built-in mock cluster (test.mock.num.brokers), so no broker is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "kpi_kafka.h"

typedef struct {
  kpi_kafka_waker waker;
  rd_kafka_t *rk;
  uv_timer_t guard;
  int delivered;
  int wakes;
  int closed;
  int late; /* delivery reports served after the waker closed */
} ctx;

static void on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  (void)rk;
  ctx *c = opaque;
  assert_int_equal(msg->err, RD_KAFKA_RESP_ERR_NO_ERROR);
  c->delivered++;
}

static void on_waker_closed(uv_handle_t *h) {
  ctx *c = ((kpi_kafka_waker *)h->data)->data;
  c->closed++;
}

static void on_waker_ready(kpi_kafka_waker *w) {
  ctx *c = w->data;
  c->wakes++;
  while (rd_kafka_poll(c->rk, 0) > 0) {
  }
  if (c->delivered == 10) {
    kpi_kafka_waker_close(&c->waker, on_waker_closed);
    uv_close((uv_handle_t *)&c->guard, NULL);
  }
}

static void on_uv_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("no delivery report reached the loop in 20 s");
}

/* A producer on librdkafka's mock cluster (one broker, linger 1 ms) whose delivery reports go
 * to ON_DELIVERY with C as opaque, and C's waker on LOOP (initialised here) serving its main
 * queue with ON_READY. */
static void producer_with_waker(ctx *c, uv_loop_t *loop,
                                void (*on_delivery)(rd_kafka_t *, const rd_kafka_message_t *,
                                                    void *),
                                kpi_kafka_waker_cb on_ready) {
  char err[256];
  assert_int_equal(uv_loop_init(loop), 0);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(conf, "test.mock.num.brokers", "1", err, sizeof(err)),
                   RD_KAFKA_CONF_OK);
  assert_int_equal(rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof(err)), RD_KAFKA_CONF_OK);
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_conf_set_opaque(conf, c);
  c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(c->rk);

  c->waker.data = c;
  assert_int_equal(kpi_kafka_waker_init(loop, &c->waker, rd_kafka_queue_get_main(c->rk), on_ready),
                   0);
}

/* Arms C's 20 s guard on LOOP and produces N records "m0".."m<N-1>" to TOPIC. */
static void guard_and_produce(ctx *c, uv_loop_t *loop, const char *topic, int n) {
  uv_timer_init(loop, &c->guard);
  uv_timer_start(&c->guard, on_uv_guard, 20000, 0);
  for (int i = 0; i < n; i++) {
    char v[16];
    snprintf(v, sizeof(v), "m%d", i);
    assert_int_equal(rd_kafka_producev(c->rk, RD_KAFKA_V_TOPIC(topic),
                                       RD_KAFKA_V_VALUE(v, strlen(v)),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
  }
}

static void test_delivery_reports_wake_the_loop(void **state) {
  (void)state;
  ctx c = {0};
  uv_loop_t loop;
  producer_with_waker(&c, &loop, on_kafka_delivery, on_waker_ready);
  guard_and_produce(&c, &loop, "waker-test", 10);
  /* Runs until the waker and guard are closed: nothing else keeps the loop alive. */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(c.delivered, 10);
  assert_int_equal(c.closed, 1);
  assert_true(c.wakes >= 1);
  assert_int_equal(uv_loop_close(&loop), 0);
  rd_kafka_destroy(c.rk);
}

/* kpi_kafka_waker_serve as the waker's callback: the delivery callback it runs closes the
 * waker at the tenth report; serving stops after the reports of that poll, and the queue handle
 * librdkafka is still reading is destroyed only then (this crashed before it was deferred). */
static void on_kafka_delivery_close_at_ten(rd_kafka_t *rk, const rd_kafka_message_t *msg,
                                           void *opaque) {
  (void)rk;
  ctx *c = opaque;
  assert_int_equal(msg->err, RD_KAFKA_RESP_ERR_NO_ERROR);
  if (!c->waker.queue) {
    c->late++;
    return;
  }
  if (++c->delivered == 10) {
    kpi_kafka_waker_close(&c->waker, on_waker_closed);
    uv_close((uv_handle_t *)&c->guard, NULL);
  }
}

static void test_serve_runs_callbacks_until_closed(void **state) {
  (void)state;
  ctx c = {0};
  uv_loop_t loop;
  producer_with_waker(&c, &loop, on_kafka_delivery_close_at_ten, kpi_kafka_waker_serve);
  /* An empty queue: serving returns at once and leaves the waker open. */
  kpi_kafka_waker_serve(&c.waker);
  assert_non_null(c.waker.queue);
  assert_int_equal(c.delivered, 0);

  /* Twelve records: the last two are reported after the waker closed. */
  guard_and_produce(&c, &loop, "waker-serve-test", 12);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(c.delivered, 10);
  assert_int_equal(c.closed, 1);
  assert_null(c.waker.queue);
  assert_null(c.waker.retired);
  /* Serving a closed waker does nothing. */
  int late = c.late;
  kpi_kafka_waker_serve(&c.waker);
  assert_int_equal(c.late, late);
  assert_int_equal(uv_loop_close(&loop), 0);
  /* Reports the closing poll had not taken are served by the flush, off the loop. */
  assert_int_equal(rd_kafka_flush(c.rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  assert_int_equal(c.delivered + c.late, 12);
  rd_kafka_destroy(c.rk);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_delivery_reports_wake_the_loop),
                                     cmocka_unit_test(test_serve_runs_callbacks_until_closed)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
