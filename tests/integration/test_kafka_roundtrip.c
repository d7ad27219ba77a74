/* test_kafka_roundtrip.c: a measurement record produced with the idempotent producer (acks=all)
 * to the real broker is consumed back with the same key and fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_codec.h"
#include "kpi_it.h"
#include "kpi_kafka.h"

static int delivered;
static rd_kafka_resp_err_t delivery_err = RD_KAFKA_RESP_ERR__FAIL;
static int32_t delivered_partition = -1;

static void on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  (void)rk;
  (void)opaque;
  delivered++;
  delivery_err = msg->err;
  delivered_partition = msg->partition;
}

/* The first record read back: the one produced (ARG), on the partition it was delivered to. */
static int on_roundtrip_record(const rd_kafka_message_t *msg, void *arg) {
  const kpi_measurement *m = arg;
  assert_int_equal(msg->partition, delivered_partition);
  assert_int_equal(msg->key_len, strlen(m->measure_id));
  assert_memory_equal(msg->key, m->measure_id, msg->key_len);
  kpi_measurement back;
  kpi_errors errs = {0};
  if (kpi_measurement_parse(msg->payload, msg->len, KPI_PARSE_RECORD, &back, &errs) != 0)
    fail_msg("%s: %s", errs.items[0].field, errs.items[0].message);
  assert_string_equal(back.event_id, m->event_id);
  assert_string_equal(back.department, "kankyo");
  assert_string_equal(back.note, "LED化 進捗");
  assert_true(back.value == 20.5);
  return 1;
}

static void test_produce_consume(void **state) {
  (void)state;
  char topic[128], group[128], err[512];
  kpi_it_unique("it_kafka_roundtrip", topic, sizeof(topic));
  kpi_it_unique("it_group", group, sizeof(group));

  static const char *const kv[] = {"enable.idempotence", "true", "acks", "all", NULL};
  rd_kafka_conf_t *conf = kpi_it_kafka_conf("it-producer", kv, err, sizeof(err));
  if (!conf) fail_msg("%s", err);
  rd_kafka_conf_set_dr_msg_cb(conf, on_kafka_delivery);
  rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  assert_non_null(prod);

  kpi_topic_spec spec = {.partitions = 6, .replication = 1};
  snprintf(spec.name, sizeof(spec.name), "%s", topic);
  if (kpi_kafka_ensure_topics(prod, &spec, 1, 10000, err, sizeof(err)) != 0) fail_msg("%s", err);
  /* A second call finds the topic and succeeds. */
  if (kpi_kafka_ensure_topics(prod, &spec, 1, 10000, err, sizeof(err)) != 0) fail_msg("%s", err);

  kpi_measurement m = {0};
  const char *body = "{\"measure_id\":\"g4-carbon-2-led-rate\",\"observed_at\":\"2024-05-01\","
                     "\"value\":20.5,\"unit\":\"percent\",\"note\":\"LED化 進捗\"}";
  kpi_errors errs = {0};
  assert_int_equal(kpi_measurement_parse(body, strlen(body), KPI_PARSE_INPUT, &m, &errs), 0);
  assert_int_equal(kpi_uuid_v4(m.event_id), 0);
  strcpy(m.department, "kankyo");
  m.received_ms = kpi_time_now_ms();
  kpi_time_format_utc(m.received_ms, m.received_at, sizeof(m.received_at));
  size_t len;
  char *value = kpi_measurement_encode(&m, &len);
  assert_int_equal(rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic),
                                     RD_KAFKA_V_KEY(m.measure_id, strlen(m.measure_id)),
                                     RD_KAFKA_V_VALUE(value, len),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                   RD_KAFKA_RESP_ERR_NO_ERROR);
  free(value);
  assert_int_equal(rd_kafka_flush(prod, 15000), RD_KAFKA_RESP_ERR_NO_ERROR);
  assert_int_equal(delivered, 1);
  assert_int_equal(delivery_err, RD_KAFKA_RESP_ERR_NO_ERROR);
  assert_true(delivered_partition >= 0 && delivered_partition < 6);
  rd_kafka_destroy(prod);

  rd_kafka_t *cons = kpi_it_kafka_subscriber("it-consumer", group, topic);
  assert_non_null(cons);
  int got = kpi_it_kafka_find(cons, 30000, on_roundtrip_record, &m);
  assert_true(got);
  kpi_it_kafka_close(cons);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_produce_consume)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
