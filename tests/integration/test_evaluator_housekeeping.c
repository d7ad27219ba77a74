/* test_evaluator_housekeeping.c: the stored offsets never move backwards, whoever wrote the
 * larger one; a partition without a stored offset is read from the first record its log still
 * holds; sent outbox rows older than KPI_OUTBOX_RETENTION_DAYS are purged in bounded batches
 * while unsent rows, measurements and attainment history are kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_evaluator_util.h"

#define LEVEL "g2-uiturn-4-supporters"

static void test_offsets_never_backwards(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evoffs", "2024-06-01");
  evw_start(&w, NULL);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  for (int i = 0; i < 3; i++)
    evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 40 + i, "person", NULL);
  evw_expect_offsets(&w, NULL, 3, 30000);
  /* One key, one partition. A newer owner of the partition (after a rebalance) has already
   * stored a later offset than the batch this evaluator is about to commit. */
  char *part = evw_sql(&w, "SELECT partition FROM consumer_offsets");
  char sql[256];
  snprintf(sql, sizeof(sql), "UPDATE consumer_offsets SET next_offset = 1000 WHERE partition = %s",
           part);
  PQclear(PQexec(w.pg, sql));
  evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-02", 44, "person", NULL);
  evw_expect_sql(&w, "SELECT value FROM attainment WHERE measure_id = '" LEVEL "'", "44");
  snprintf(sql, sizeof(sql), "SELECT next_offset FROM consumer_offsets WHERE partition = %s",
           part);
  evw_assert_sql(&w, sql, "1000");
  free(part);
  evw_stop(&w);
  evw_close(&w);
}

/* Deletes every record of the world's measurements topic up to its end (DeleteRecords), as
 * retention would: the log then starts at its former end. */
static void delete_all_records(evw *w) {
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(6);
  for (int p = 0; p < 6; p++)
    rd_kafka_topic_partition_list_add(parts, w->t_meas, p)->offset = RD_KAFKA_OFFSET_END;
  rd_kafka_DeleteRecords_t *del = rd_kafka_DeleteRecords_new(parts);
  rd_kafka_queue_t *q = rd_kafka_queue_new(w->prod);
  rd_kafka_DeleteRecords(w->prod, &del, 1, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  assert_non_null(ev);
  assert_int_equal(rd_kafka_event_error(ev), RD_KAFKA_RESP_ERR_NO_ERROR);
  const rd_kafka_topic_partition_list_t *done =
      rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
  for (int i = 0; done && i < done->cnt; i++) assert_int_equal(done->elems[i].err, 0);
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_DeleteRecords_destroy(del);
  rd_kafka_topic_partition_list_destroy(parts);
}

/* A partition without a stored offset is assigned at offset 0 (ev_kafka_unstored_offset, not
 * the logical beginning; docs/evaluator.md "Performance"). Here its log no longer starts at 0:
 * the fetch at 0 is out of range, the reset (earliest) moves it to the log's first record, and
 * every record still held is stored once, none of the deleted ones. */
static void test_start_after_deleted_records(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evlogstart", "2024-06-01");
  evw_start(&w, NULL); /* creates the topics; stores no offset (no record yet) */
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  evw_stop(&w);
  evw_assert_sql(&w, "SELECT count(*) FROM consumer_offsets", "0");
  for (int i = 0; i < 3; i++)
    evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-01", 10 + i, "person", NULL);
  delete_all_records(&w);
  for (int i = 0; i < 2; i++)
    evw_produce_reading(&w, LEVEL, "kikaku", "2024-05-02", 20 + i, "person", NULL);
  evw_start(&w, NULL);
  evw_expect_offsets(&w, NULL, 5, 30000); /* one key, one partition: next offset 5 */
  evw_assert_sql(&w, "SELECT string_agg(value::text, ',' ORDER BY value) FROM measurements",
                 "20,21");
  evw_stop(&w);
  evw_close(&w);
}

static void test_outbox_retention(void **state) {
  (void)state;
  evw w;
  evw_init(&w, "it_evretention", "2024-06-01");
  const char *extra[] = {"KPI_OUTBOX_RETENTION_DAYS=2", "KPI_SWEEP_INTERVAL_MS=300", NULL};
  evw_start(&w, extra);
  assert_int_equal(evw_wait_ready(&w, 30000), 0);
  /* 1,500 rows sent 3 days ago (more than one purge batch), one sent a day ago, one never sent
   * although created 10 days ago; old measurements and history rows beside them. */
  const char *setup =
      "INSERT INTO outbox (alert_id, topic, msg_key, payload, created_at, sent_at)"
      " SELECT gen_random_uuid(), 'it.retention', 'old', '{}', now() - interval '4 days',"
      "  now() - interval '3 days' FROM generate_series(1, 1500);"
      "INSERT INTO outbox (alert_id, topic, msg_key, payload, created_at, sent_at) VALUES"
      " (gen_random_uuid(), 'it.retention', 'recent', '{}', now() - interval '1 day',"
      "  now() - interval '1 day'),"
      " (gen_random_uuid(), 'it.retention', 'unsent', '{}', now() - interval '10 days', NULL);"
      "INSERT INTO measurements (event_id, measure_id, department, observed_at, observed_day,"
      " fiscal_year, value, unit, received_at, stored_at) VALUES (gen_random_uuid(), 'old',"
      " 'kikaku', '2020-05-01', '2020-05-01', 2020, 1, 'person', '2020-05-01',"
      " now() - interval '1000 days');"
      "INSERT INTO attainment_history (measure_id, as_of, expected, status, recorded_at)"
      " VALUES ('old', '2020-05-01', 0, 'on_track', now() - interval '1000 days')";
  PGresult *r = PQexec(w.pg, setup);
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  evw_expect_sql_within(&w,
                        "SELECT string_agg(msg_key, ',' ORDER BY msg_key) FROM outbox"
                        " WHERE topic = 'it.retention'",
                        "recent,unsent", 15000);
  evw_assert_sql(&w, "SELECT count(*) FROM measurements WHERE measure_id = 'old'", "1");
  evw_assert_sql(&w, "SELECT count(*) FROM attainment_history WHERE measure_id = 'old'", "1");
  char *resp = evw_http_get(&w, "/metrics");
  assert_non_null(resp);
  assert_non_null(strstr(resp, "kpi_evaluator_outbox_purged_total 1500"));
  free(resp);
  evw_stop(&w);
  evw_close(&w);
}

int main(void) {
  kpi_it_init();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_offsets_never_backwards),
                                     cmocka_unit_test(test_start_after_deleted_records),
                                     cmocka_unit_test(test_outbox_retention)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
