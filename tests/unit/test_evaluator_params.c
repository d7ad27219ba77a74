/* test_evaluator_params.c: the named array parameters of the evaluator's statements
 * (services/evaluator/ev_params.c): each member holds the PostgreSQL array literal of its column,
 * in $n order, with NULLs, quoting and the evaluation date's instants (Japan time). The COPY
 * path's input (text format: escapes, NULLs), built at once or while the batch fills, and its
 * totals per measure, month and component; where a partition without a stored offset starts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_records.h"

static kpi_day day(int y, int m, int d) {
  kpi_day out;
  assert_int_equal(kpi_day_from_ymd(y, m, d, &out), 0);
  return out;
}

static void fill_row(ev_row *r, const char *event_id, const char *measure, int32_t partition,
                     int64_t offset) {
  memset(r, 0, sizeof(*r));
  strcpy(r->event_id, event_id);
  strcpy(r->measure_id, measure);
  strcpy(r->department, "kikaku");
  strcpy(r->unit, "person");
  r->observed_day = day(2024, 3, 31); /* the last day of FY2023 */
  r->observed_ms = (int64_t)r->observed_day * 86400000LL;
  r->received_ms = r->observed_ms + 1000;
  r->value = 12.5;
  r->partition = partition;
  r->offset = offset;
}

static void test_insert_params(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  fill_row(ev_batch_add_row(&b), "00000000-0000-4000-8000-000000000001", "m1", 0, 7);
  ev_row *r = ev_batch_add_row(&b);
  fill_row(r, "00000000-0000-4000-8000-000000000002", "m2", 3, 9);
  r->component = KPI_COMPONENT_NUMERATOR;
  r->note = "say \"hi\", {x} \\ NULL";
  fill_row(ev_batch_add_row(&b), "00000000-0000-4000-8000-000000000003", "m3", 1, 1);
  ev_insert_params p;
  memset(&p, 0, sizeof(p));
  size_t idx[] = {0, 1}; /* row 2 not written (poison, or another range) */
  ev_insert_params_build(&p, &b, idx, 2);
  assert_false(ev_params_oom(p.v, EV_INSERT_NPARAMS));
  assert_string_equal(kpi_buf_str(&p.event_id),
                      "{\"00000000-0000-4000-8000-000000000001\","
                      "\"00000000-0000-4000-8000-000000000002\"}");
  assert_string_equal(kpi_buf_str(&p.measure_id), "{\"m1\",\"m2\"}");
  assert_string_equal(kpi_buf_str(&p.department), "{\"kikaku\",\"kikaku\"}");
  assert_string_equal(kpi_buf_str(&p.observed_day), "{2024-03-31,2024-03-31}");
  assert_string_equal(kpi_buf_str(&p.fiscal_year), "{2023,2023}");
  assert_string_equal(kpi_buf_str(&p.value), "{12.5,12.5}");
  assert_string_equal(kpi_buf_str(&p.unit), "{\"person\",\"person\"}");
  assert_string_equal(kpi_buf_str(&p.component), "{NULL,\"numerator\"}");
  assert_string_equal(kpi_buf_str(&p.note), "{NULL,\"say \\\"hi\\\", {x} \\\\ NULL\"}");
  assert_string_equal(kpi_buf_str(&p.partition), "{0,3}");
  assert_string_equal(kpi_buf_str(&p.offset), "{7,9}");
  assert_non_null(strstr(kpi_buf_str(&p.observed_at), "2024-03-31T00:00:00"));
  assert_non_null(strstr(kpi_buf_str(&p.received_at), "2024-03-31T00:00:01"));
  /* V is the members in $n order. */
  const char *vals[EV_INSERT_NPARAMS];
  ev_params_values(p.v, EV_INSERT_NPARAMS, vals);
  assert_ptr_equal(vals[0], p.event_id.s);
  assert_ptr_equal(vals[9], p.note.s);
  assert_ptr_equal(vals[12], p.offset.s);
  assert_ptr_equal(vals[13], p.corrects.s);
  assert_string_equal(kpi_buf_str(&p.corrects), "{NULL,NULL}");
  /* Rebuilt for the next transaction: nothing of the previous one is left. */
  size_t one[] = {2};
  ev_insert_params_build(&p, &b, one, 1);
  assert_string_equal(kpi_buf_str(&p.measure_id), "{\"m3\"}");
  assert_string_equal(kpi_buf_str(&p.note), "{NULL}");
  ev_params_free(p.v, EV_INSERT_NPARAMS);
  b.rows[1].note = NULL; /* not ours to free */
  ev_batch_free(&b);
}

#define E1 "00000000-0000-4000-8000-000000000001"
#define E2 "00000000-0000-4000-8000-000000000002"
#define E3 "00000000-0000-4000-8000-000000000003"
#define E4 "00000000-0000-4000-8000-000000000004"

/* The COPY path: the same columns as the insert arrays, one text-format line per row, and the
 * totals SQL_INSERT would add for the same rows, grouped by measure, month and component. */
static void test_copy_params(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  fill_row(ev_batch_add_row(&b), E1, "m1", 0, 7);
  ev_row *r = ev_batch_add_row(&b);
  fill_row(r, E2, "m2", 3, 9);
  r->component = KPI_COMPONENT_NUMERATOR;
  r->note = "tab\there\nnew\\back\rcr \\N";
  r = ev_batch_add_row(&b);
  fill_row(r, E3, "m1", 1, 1);
  r->observed_day = day(2024, 3, 15);
  r->value = 2;
  fill_row(ev_batch_add_row(&b), E4, "m0", 1, 2); /* not written */
  size_t idx[] = {1, 0, 2};
  kpi_buf rows = KPI_BUF_INIT;
  ev_copy_rows_build(&rows, &b, idx, 3);
  char obs[40], rec[40], want[1024];
  kpi_time_format_utc(b.rows[0].observed_ms, obs, sizeof(obs));
  kpi_time_format_utc(b.rows[0].received_ms, rec, sizeof(rec));
  snprintf(want, sizeof(want),
           E2 "\tm2\tkikaku\t%s\t2024-03-31\t2023\t12.5\tperson\tnumerator\t"
              "tab\\there\\nnew\\\\back\\rcr \\\\N\t%s\t3\t9\t\\N\n"
           E1 "\tm1\tkikaku\t%s\t2024-03-31\t2023\t12.5\tperson\t\\N\t\\N\t%s\t0\t7\t\\N\n",
           obs, rec, obs, rec);
  assert_true(strncmp(kpi_buf_str(&rows), want, strlen(want)) == 0);
  assert_non_null(strstr(kpi_buf_str(&rows) + strlen(want), E3 "\tm1\tkikaku\t"));
  assert_non_null(strstr(kpi_buf_str(&rows), "\t2024-03-15\t2023\t2\tperson\t"));
  /* Rebuilt for the next transaction: nothing of the previous one is left. */
  size_t one[] = {0};
  ev_copy_rows_build(&rows, &b, one, 1);
  assert_int_equal(strncmp(kpi_buf_str(&rows), E1 "\t", strlen(E1) + 1), 0);
  assert_int_equal(strchr(kpi_buf_str(&rows), '\n') - kpi_buf_str(&rows) + 1, (long)rows.len);
  kpi_buf_free(&rows);

  ev_copy_totals_params t;
  memset(&t, 0, sizeof(t));
  assert_int_equal(ev_copy_totals_build(&t, &b, idx, 3), 0);
  assert_string_equal(kpi_buf_str(&t.measure_id), "{\"m1\",\"m2\"}");
  assert_string_equal(kpi_buf_str(&t.month), "{2024-03-01,2024-03-01}");
  assert_string_equal(kpi_buf_str(&t.fiscal_year), "{2023,2023}");
  assert_string_equal(kpi_buf_str(&t.component), "{\"\",\"numerator\"}");
  assert_string_equal(kpi_buf_str(&t.events), "{2,1}");
  assert_string_equal(kpi_buf_str(&t.total), "{14.5,12.5}");
  /* The latest day of each group, whatever the rows' order (m1: the 31st and the 15th). */
  assert_string_equal(kpi_buf_str(&t.last_day), "{2024-03-31,2024-03-31}");
  size_t rev[] = {2, 1, 0};
  b.rows[0].observed_day = day(2024, 3, 2);
  assert_int_equal(ev_copy_totals_build(&t, &b, rev, 3), 0);
  assert_string_equal(kpi_buf_str(&t.last_day), "{2024-03-15,2024-03-31}");
  ev_params_free(t.v, EV_COPY_TOTALS_NPARAMS);
  b.rows[1].note = NULL; /* not ours to free */
  ev_batch_free(&b);
}

/* Many rows over several measures, months and components (the totals' hash table, sized
 * once from the row count, probes past collisions): one element per distinct (measure, month, component), in
 * that order, counting every row and summing every value once. */
static void test_copy_totals_many(void **state) {
  (void)state;
  enum { N = 600 };
  ev_batch b;
  memset(&b, 0, sizeof(b));
  size_t idx[N];
  double sum = 0;
  for (int i = 0; i < N; i++) {
    ev_row *r = ev_batch_add_row(&b);
    char id[40], m[8];
    snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012d", i);
    snprintf(m, sizeof(m), "m%d", i % 7);
    fill_row(r, id, m, 0, i);
    r->observed_day = day(2023, 1 + (i / 7) % 12, 1 + i % 28);
    r->component = i % 3 == 0 ? KPI_COMPONENT_NUMERATOR : KPI_COMPONENT_NONE;
    r->value = i;
    sum += i;
    idx[i] = (size_t)(N - 1 - i);
  }
  /* The groups counted the slow way. */
  size_t groups = 0;
  for (int i = 0; i < N; i++) {
    bool seen = false;
    for (int j = 0; j < i && !seen; j++)
      seen = i % 7 == j % 7 && (i / 7) % 12 == (j / 7) % 12 && (i % 3 == 0) == (j % 3 == 0);
    if (!seen) groups++;
  }
  ev_copy_totals_params t;
  memset(&t, 0, sizeof(t));
  assert_int_equal(ev_copy_totals_build(&t, &b, idx, N), 0);
  const char *ev = kpi_buf_str(&t.events), *tot = kpi_buf_str(&t.total);
  size_t n = 0;
  long long events = 0;
  double total = 0;
  for (const char *e = ev + 1, *v = tot + 1; *e && *e != '}'; n++) {
    char *end;
    events += strtoll(e, &end, 10);
    e = *end == ',' ? end + 1 : end;
    total += strtod(v, &end);
    v = *end == ',' ? end + 1 : end;
  }
  assert_int_equal(n, groups);
  assert_int_equal(events, N);
  assert_true(total == sum);
  /* Sorted by measure, then month: m0's first month leads, m6's last ends. */
  assert_int_equal(strncmp(kpi_buf_str(&t.measure_id), "{\"m0\",", 6), 0);
  assert_int_equal(strncmp(kpi_buf_str(&t.month), "{2023-01-01,", 12), 0);
  assert_non_null(strstr(kpi_buf_str(&t.measure_id), ",\"m6\"}"));
  ev_params_free(t.v, EV_COPY_TOTALS_NPARAMS);
  ev_batch_free(&b);
}

/* The COPY text built while a batch fills (ev_copy_rows_extend, docs/evaluator.md
 * "Performance"): after any sequence of additions it is ev_copy_rows_build's text of every
 * measurement row (acknowledgements and retractions skipped); a dropped last row, dropped
 * partitions or a cleared batch empty it, and the next extension builds it again from the first
 * row. */
static void assert_copy_matches(ev_batch *b) {
  size_t idx[8], n = 0;
  for (size_t i = 0; i < b->n_rows; i++)
    if (b->rows[i].kind == EV_ROW_MEASUREMENT) idx[n++] = i;
  kpi_buf want = KPI_BUF_INIT;
  ev_copy_rows_build(&want, b, idx, n);
  ev_copy_rows_extend(b);
  assert_int_equal(b->copy_upto, b->n_rows);
  assert_int_equal(b->copy.len, want.len);
  assert_string_equal(kpi_buf_str(&b->copy), kpi_buf_str(&want));
  kpi_buf_free(&want);
}

static void test_copy_rows_extend(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  fill_row(ev_batch_add_row(&b), E1, "m1", 0, 7);
  assert_copy_matches(&b);
  ev_row *r = ev_batch_add_row(&b);
  fill_row(r, E2, "m2", 3, 9);
  r->note = strdup("tab\there");
  r = ev_batch_add_row(&b);
  fill_row(r, E3, "m1", 1, 1);
  r->kind = EV_ROW_ACK;
  fill_row(ev_batch_add_row(&b), E4, "m0", 1, 2);
  assert_copy_matches(&b);
  assert_copy_matches(&b); /* nothing new: unchanged */
  size_t built = b.copy.len;
  /* The last row dropped after it was built: emptied, then rebuilt without it. */
  ev_batch_drop_last(&b);
  assert_int_equal(b.copy_upto, 0);
  assert_copy_matches(&b);
  assert_true(b.copy.len < built);
  /* A row added but not built yet, then dropped: what is built stays. */
  fill_row(ev_batch_add_row(&b), E4, "m0", 1, 2);
  ev_batch_drop_last(&b);
  assert_int_equal(b.copy_upto, b.n_rows);
  assert_copy_matches(&b);
  /* A revoked partition's rows dropped: the others' text, rebuilt. */
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, "t", 3);
  ev_batch_drop_partitions(&b, parts);
  rd_kafka_topic_partition_list_destroy(parts);
  assert_int_equal(b.copy_upto, 0);
  assert_int_equal(b.n_rows, 2);
  assert_copy_matches(&b);
  assert_null(strstr(kpi_buf_str(&b.copy), E2));
  ev_batch_clear(&b);
  assert_int_equal(b.copy_upto, 0);
  assert_int_equal(b.copy.len, 0);
  fill_row(ev_batch_add_row(&b), E2, "m2", 0, 8);
  assert_copy_matches(&b);
  ev_batch_free(&b);
}

/* A partition without a stored offset starts at offset 0 when the reset goes to the earliest
 * offset (whichever of librdkafka's names it has), else at the logical BEGINNING. */
static void test_unstored_offset(void **state) {
  (void)state;
  assert_int_equal(ev_kafka_unstored_offset("earliest"), 0);
  assert_int_equal(ev_kafka_unstored_offset("smallest"), 0);
  assert_int_equal(ev_kafka_unstored_offset("beginning"), 0);
  assert_int_equal(ev_kafka_unstored_offset("latest"), RD_KAFKA_OFFSET_BEGINNING);
  assert_int_equal(ev_kafka_unstored_offset("largest"), RD_KAFKA_OFFSET_BEGINNING);
  assert_int_equal(ev_kafka_unstored_offset("error"), RD_KAFKA_OFFSET_BEGINNING);
  assert_int_equal(ev_kafka_unstored_offset(NULL), RD_KAFKA_OFFSET_BEGINNING);
}

/* A batch of a measurement, a retraction, a correction and an acknowledgement: the insert
 * arrays carry the correction's `corrects`; the retraction arrays hold the retraction and
 * the correction's retraction half (id derived from the corrected event), with their
 * positions among the rows written and the measurements' positions; the ack arrays the ack. */
static void test_retract_ack_params(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  fill_row(ev_batch_add_row(&b), E1, "m1", 0, 1);
  ev_row *r = ev_batch_add_row(&b);
  fill_row(r, E2, "m1", 0, 2);
  r->kind = EV_ROW_RETRACTION;
  strcpy(r->retracts, E1);
  r->reason = "二重計上";
  r = ev_batch_add_row(&b);
  fill_row(r, E3, "m1", 0, 3);
  r->has_corrects = true;
  strcpy(r->retracts, E4);
  r->reason = "typo";
  r = ev_batch_add_row(&b);
  fill_row(r, E4, "m2", 1, 4);
  r->kind = EV_ROW_ACK;
  r->note = "対応方針";
  r->until_day = day(2024, 7, 1);
  assert_true(ev_row_retracts(&b.rows[1]));
  assert_true(ev_row_retracts(&b.rows[2]));
  assert_false(ev_row_retracts(&b.rows[0]));
  assert_false(ev_row_retracts(&b.rows[3]));

  size_t idx[] = {0, 1, 2, 3}, midx[] = {0, 2};
  ev_insert_params ins;
  memset(&ins, 0, sizeof(ins));
  ev_insert_params_build(&ins, &b, midx, 2);
  assert_string_equal(kpi_buf_str(&ins.corrects), "{NULL,\"" E4 "\"}");

  ev_retract_params p;
  memset(&p, 0, sizeof(p));
  ev_retract_params_build(&p, &b, idx, 4);
  assert_false(ev_params_oom(p.v, EV_RETRACT_NPARAMS));
  char rid[KPI_UUID_STRLEN + 1], want[200];
  kpi_retraction_id(E4, "m1", "kikaku", rid);
  snprintf(want, sizeof(want), "{\"%s\",\"%s\"}", E2, rid);
  assert_string_equal(kpi_buf_str(&p.event_id), want);
  assert_string_equal(kpi_buf_str(&p.retracts), "{\"" E1 "\",\"" E4 "\"}");
  assert_string_equal(kpi_buf_str(&p.reason), "{\"二重計上\",\"typo\"}");
  assert_string_equal(kpi_buf_str(&p.correction), "{NULL,\"" E3 "\"}");
  assert_string_equal(kpi_buf_str(&p.pos), "{2,3}");
  assert_string_equal(kpi_buf_str(&p.m_pos), "{1,3}");
  assert_string_equal(kpi_buf_str(&p.offset), "{2,3}");
  assert_non_null(strstr(kpi_buf_str(&p.received_at), "2024-03-31T00:00:01"));
  /* SQL_RETRACT_INSERT's $1..$9 are V's first nine. */
  const char *vals[EV_RETRACT_NPARAMS];
  ev_params_values(p.v, EV_RETRACT_NPARAMS, vals);
  assert_ptr_equal(vals[0], p.event_id.s);
  assert_ptr_equal(vals[8], p.offset.s);

  ev_ack_params a;
  memset(&a, 0, sizeof(a));
  ev_ack_params_build(&a, &b, idx, 4);
  assert_string_equal(kpi_buf_str(&a.event_id), "{\"" E4 "\"}");
  assert_string_equal(kpi_buf_str(&a.measure_id), "{\"m2\"}");
  assert_string_equal(kpi_buf_str(&a.note), "{\"対応方針\"}");
  assert_string_equal(kpi_buf_str(&a.until), "{2024-07-01}");
  assert_string_equal(kpi_buf_str(&a.partition), "{1}");
  ev_params_free(ins.v, EV_INSERT_NPARAMS);
  ev_params_free(p.v, EV_RETRACT_NPARAMS);
  ev_params_free(a.v, EV_ACK_NPARAMS);
  for (size_t i = 0; i < b.n_rows; i++) b.rows[i].note = b.rows[i].reason = NULL;
  ev_batch_free(&b);
}

/* The history cause: a retraction or correction row makes it `retraction` whatever else the
 * batch holds for the measure. */
static void test_causes(void **state) {
  (void)state;
  ev_row r;
  memset(&r, 0, sizeof(r));
  assert_int_equal(ev_row_cause(&r), EV_CAUSE_MEASUREMENT);
  r.has_corrects = true;
  assert_int_equal(ev_row_cause(&r), EV_CAUSE_RETRACTION);
  r.has_corrects = false;
  r.kind = EV_ROW_RETRACTION;
  assert_int_equal(ev_row_cause(&r), EV_CAUSE_RETRACTION);
  r.kind = EV_ROW_ACK;
  assert_int_equal(ev_row_cause(&r), EV_CAUSE_MEASUREMENT);
  assert_int_equal(ev_cause_merge(EV_CAUSE_MEASUREMENT, EV_CAUSE_RETRACTION),
                   EV_CAUSE_RETRACTION);
  assert_int_equal(ev_cause_merge(EV_CAUSE_RETRACTION, EV_CAUSE_MEASUREMENT),
                   EV_CAUSE_RETRACTION);
  assert_int_equal(ev_cause_merge(EV_CAUSE_MEASUREMENT, EV_CAUSE_MEASUREMENT),
                   EV_CAUSE_MEASUREMENT);
  assert_string_equal(ev_cause_name(EV_CAUSE_MEASUREMENT), "measurement");
  assert_string_equal(ev_cause_name(EV_CAUSE_RETRACTION), "retraction");
  assert_string_equal(ev_cause_name(EV_CAUSE_SWEEP), "sweep");
  assert_string_equal(ev_cause_name(EV_CAUSE_CATALOG_RELOAD), "catalog_reload");
}

static void test_offset_params(void **state) {
  (void)state;
  ev_batch b;
  memset(&b, 0, sizeof(b));
  ev_batch_set_offset(&b, 4, 100);
  ev_batch_set_offset(&b, 0, 3);
  ev_offset_params p;
  memset(&p, 0, sizeof(p));
  ev_offset_params_build(&p, &b);
  assert_string_equal(kpi_buf_str(&p.partition), "{4,0}");
  assert_string_equal(kpi_buf_str(&p.next_offset), "{100,3}");
  ev_params_free(p.v, EV_OFFSET_NARRAYS);
  ev_batch_free(&b);
}

static void test_aggregate_params(void **state) {
  (void)state;
  kpi_measure ms[3];
  memset(ms, 0, sizeof(ms));
  ms[0].id = "a-cum";
  ms[0].kind = KPI_KIND_CUMULATIVE;
  ms[0].window_from_fy = 2022;
  ms[0].window_to_fy = 2026;
  ms[1].id = "b-level";
  ms[1].kind = KPI_KIND_LEVEL;
  ms[2].id = "c-ratio";
  ms[2].kind = KPI_KIND_RATIO;
  kpi_catalog cat;
  memset(&cat, 0, sizeof(cat));
  cat.measures = ms;
  cat.n_measures = 3;
  unsigned char seen[3] = {1, 0, 1};
  ev_aggregate_params p;
  memset(&p, 0, sizeof(p));
  ev_aggregate_params_build(&p, &cat, seen, 3, day(2024, 4, 15)); /* FY2024 */
  assert_string_equal(kpi_buf_str(&p.ids), "{\"a-cum\",\"c-ratio\"}");
  assert_string_equal(kpi_buf_str(&p.window_from), "{2022,NULL}");
  assert_string_equal(kpi_buf_str(&p.window_to), "{2026,NULL}");
  assert_string_equal(kpi_buf_str(&p.is_ratio), "{false,true}");
  assert_string_equal(kpi_buf_str(&p.fiscal_year), "2024");
  assert_string_equal(kpi_buf_str(&p.month_start), "2024-04-01");
  assert_string_equal(kpi_buf_str(&p.day), "2024-04-15");
  /* Midnight in Japan (UTC+9) is 15:00 UTC the day before. */
  assert_non_null(strstr(kpi_buf_str(&p.end_at), "2024-04-15T15:00:00"));
  assert_non_null(strstr(kpi_buf_str(&p.month_start_at), "2024-03-31T15:00:00"));
  /* 31 March belongs to the fiscal year before. */
  ev_aggregate_params_build(&p, &cat, seen, 3, day(2024, 3, 31));
  assert_string_equal(kpi_buf_str(&p.fiscal_year), "2023");
  assert_string_equal(kpi_buf_str(&p.month_start), "2024-03-01");
  assert_string_equal(kpi_buf_str(&p.day), "2024-03-31");
  ev_params_free(p.v, EV_AGGREGATE_NPARAMS);
}

static void test_attainment_history_outbox_params(void **state) {
  (void)state;
  ev_attainment_params att;
  ev_history_params hist;
  ev_outbox_params out;
  memset(&att, 0, sizeof(att));
  memset(&hist, 0, sizeof(hist));
  memset(&out, 0, sizeof(out));
  ev_params_begin(att.v, EV_ATTAINMENT_NPARAMS);
  ev_params_begin(hist.v, EV_HISTORY_NPARAMS);
  ev_params_begin(out.v, EV_OUTBOX_NPARAMS);
  kpi_attainment a;
  memset(&a, 0, sizeof(a));
  a.has_value = true;
  a.value = 35.7;
  a.has_progress = true;
  a.progress = 0.25;
  a.expected = 0.5;
  a.status = KPI_STATUS_LAGGING;
  kpi_alert_track next;
  memset(&next, 0, sizeof(next));
  strcpy(next.state, "lagging");
  next.episode = 2;
  next.has_last_alert = true;
  next.last_alert_on = day(2024, 5, 1);
  ev_attainment_params_add(&att, "m1", day(2024, 5, 1), &a, "2024-04-30 10:00:00+00", "42",
                           &next, 1, 1);
  kpi_attainment none;
  memset(&none, 0, sizeof(none));
  none.stale = true;
  kpi_alert_track quiet;
  memset(&quiet, 0, sizeof(quiet));
  ev_attainment_params_add(&att, "m2", day(2024, 5, 1), &none, NULL, "0", &quiet, 2, 1);
  ev_history_params_add(&hist, "m1", day(2024, 5, 1), &a, 2, EV_CAUSE_RETRACTION);
  ev_outbox_params_add(&out, "id-1", "alerts", "m1", "{\"k\":1}");
  ev_params_end(att.v, EV_ATTAINMENT_NPARAMS);
  ev_params_end(hist.v, EV_HISTORY_NPARAMS);
  ev_params_end(out.v, EV_OUTBOX_NPARAMS);
  assert_string_equal(kpi_buf_str(&att.measure_id), "{\"m1\",\"m2\"}");
  assert_string_equal(kpi_buf_str(&att.as_of), "{2024-05-01,2024-05-01}");
  assert_string_equal(kpi_buf_str(&att.value), "{35.700000000000003,NULL}");
  assert_string_equal(kpi_buf_str(&att.progress), "{0.25,NULL}");
  assert_string_equal(kpi_buf_str(&att.expected), "{0.5,0}");
  assert_string_equal(kpi_buf_str(&att.status), "{\"lagging\",\"no_data\"}");
  assert_string_equal(kpi_buf_str(&att.stale), "{false,true}");
  assert_string_equal(kpi_buf_str(&att.last_observed_at), "{\"2024-04-30 10:00:00+00\",NULL}");
  assert_string_equal(kpi_buf_str(&att.events), "{42,0}");
  assert_string_equal(kpi_buf_str(&att.alert_state), "{\"lagging\",NULL}");
  assert_string_equal(kpi_buf_str(&att.episode), "{2,0}");
  assert_string_equal(kpi_buf_str(&att.last_alert_on), "{2024-05-01,NULL}");
  assert_string_equal(kpi_buf_str(&att.reminders), "{0,0}");
  assert_string_equal(kpi_buf_str(&att.catalog_version), "{1,2}");
  assert_string_equal(kpi_buf_str(&att.noted_catalog_version), "{1,1}");
  assert_string_equal(kpi_buf_str(&hist.catalog_version), "{2}");
  assert_string_equal(kpi_buf_str(&hist.value), "{35.700000000000003}");
  assert_string_equal(kpi_buf_str(&hist.status), "{\"lagging\"}");
  assert_string_equal(kpi_buf_str(&hist.cause), "{\"retraction\"}");
  assert_string_equal(kpi_buf_str(&out.payload), "{\"{\\\"k\\\":1}\"}");
  assert_string_equal(kpi_buf_str(&out.msg_key), "{\"m1\"}");
  ev_params_free(att.v, EV_ATTAINMENT_NPARAMS);
  ev_params_free(hist.v, EV_HISTORY_NPARAMS);
  ev_params_free(out.v, EV_OUTBOX_NPARAMS);
}

static void test_elements(void **state) {
  (void)state;
  kpi_buf b = KPI_BUF_INIT;
  kpi_buf_arr_begin(&b);
  ev_arr_double(&b, true, 1.0 / 0.0); /* not finite: NULL, never "inf" */
  ev_arr_double(&b, false, 3);
  ev_arr_double(&b, true, -0.1);
  ev_arr_int(&b, -9007199254740993LL);
  ev_arr_day(&b, day(2025, 1, 2));
  kpi_buf_arr_end(&b);
  assert_string_equal(kpi_buf_str(&b), "{NULL,NULL,-0.10000000000000001,-9007199254740993,2025-01-02}");
  kpi_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_insert_params),
      cmocka_unit_test(test_copy_params),
      cmocka_unit_test(test_copy_totals_many),
      cmocka_unit_test(test_copy_rows_extend),
      cmocka_unit_test(test_unstored_offset),
      cmocka_unit_test(test_retract_ack_params),
      cmocka_unit_test(test_causes),
      cmocka_unit_test(test_offset_params),
      cmocka_unit_test(test_aggregate_params),
      cmocka_unit_test(test_attainment_history_outbox_params),
      cmocka_unit_test(test_elements),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
