/* ev_params.c: the named array parameters of the evaluator's statements (SQL in ev_txn.c), built as
 * PostgreSQL array literals with kpi_buf. Pure: no I/O, unit-tested in
 * tests/unit/test_evaluator_params.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_aggregate.h"
#include "kpi_records.h"

/* The unions overlay their named members on V: the members must be exactly V's elements. */
_Static_assert(sizeof(ev_insert_params) == sizeof(kpi_buf[EV_INSERT_NPARAMS]), "insert");
_Static_assert(sizeof(ev_offset_params) == sizeof(kpi_buf[EV_OFFSET_NARRAYS]), "offsets");
_Static_assert(sizeof(ev_copy_totals_params) == sizeof(kpi_buf[EV_COPY_TOTALS_NPARAMS]),
               "copy totals");
_Static_assert(sizeof(ev_aggregate_params) == sizeof(kpi_buf[EV_AGGREGATE_NPARAMS]), "agg");
_Static_assert(sizeof(ev_attainment_params) == sizeof(kpi_buf[EV_ATTAINMENT_NPARAMS]), "att");
_Static_assert(sizeof(ev_retract_params) == sizeof(kpi_buf[EV_RETRACT_NPARAMS]), "retract");
_Static_assert(sizeof(ev_ack_params) == sizeof(kpi_buf[EV_ACK_NPARAMS]), "ack");
_Static_assert(sizeof(ev_history_params) == sizeof(kpi_buf[EV_HISTORY_NPARAMS]), "history");
_Static_assert(sizeof(ev_outbox_params) == sizeof(kpi_buf[EV_OUTBOX_NPARAMS]), "outbox");

void ev_params_begin(kpi_buf *v, int n) {
  for (int i = 0; i < n; i++) kpi_buf_arr_begin(&v[i]);
}

void ev_params_end(kpi_buf *v, int n) {
  for (int i = 0; i < n; i++) kpi_buf_arr_end(&v[i]);
}

bool ev_params_oom(const kpi_buf *v, int n) {
  for (int i = 0; i < n; i++)
    if (v[i].oom) return true;
  return false;
}

void ev_params_free(kpi_buf *v, int n) {
  for (int i = 0; i < n; i++) kpi_buf_free(&v[i]);
}

const char *const *ev_params_values(const kpi_buf *v, int n, const char **vals) {
  for (int i = 0; i < n; i++) vals[i] = kpi_buf_str(&v[i]);
  return vals;
}

void ev_arr_double(kpi_buf *b, bool has, double v) {
  if (!has || !isfinite(v)) {
    kpi_buf_arr_null(b);
    return;
  }
  char num[40];
  snprintf(num, sizeof(num), "%.17g", v);
  kpi_buf_arr_raw(b, num);
}

void ev_arr_day(kpi_buf *b, kpi_day d) {
  char s[16];
  kpi_day_format(d, s, sizeof(s));
  kpi_buf_arr_raw(b, s);
}

void ev_arr_int(kpi_buf *b, long long v) {
  char s[24];
  snprintf(s, sizeof(s), "%lld", v);
  kpi_buf_arr_raw(b, s);
}

static void arr_str_or_null(kpi_buf *b, const char *s) {
  if (s) kpi_buf_arr_str(b, s);
  else kpi_buf_arr_null(b);
}

void ev_insert_params_build(ev_insert_params *p, const ev_batch *b, const size_t *idx, size_t n) {
  ev_params_begin(p->v, EV_INSERT_NPARAMS);
  char s[40];
  for (size_t k = 0; k < n; k++) {
    const ev_row *r = &b->rows[idx[k]];
    kpi_buf_arr_str(&p->event_id, r->event_id);
    kpi_buf_arr_str(&p->measure_id, r->measure_id);
    kpi_buf_arr_str(&p->department, r->department);
    kpi_time_format_utc(r->observed_ms, s, sizeof(s));
    kpi_buf_arr_str(&p->observed_at, s);
    ev_arr_day(&p->observed_day, r->observed_day);
    ev_arr_int(&p->fiscal_year, kpi_fy_of_day(r->observed_day));
    ev_arr_double(&p->value, true, r->value);
    kpi_buf_arr_str(&p->unit, r->unit);
    arr_str_or_null(&p->component, r->component == KPI_COMPONENT_NONE
                                       ? NULL
                                       : kpi_component_name(r->component));
    arr_str_or_null(&p->note, r->note);
    kpi_time_format_utc(r->received_ms, s, sizeof(s));
    kpi_buf_arr_str(&p->received_at, s);
    ev_arr_int(&p->partition, r->partition);
    ev_arr_int(&p->offset, r->offset);
    arr_str_or_null(&p->corrects, r->has_corrects ? r->retracts : NULL);
  }
  ev_params_end(p->v, EV_INSERT_NPARAMS);
}

/* One text-format COPY field (PostgreSQL's COPY "Text Format"): S with backslash, tab,
 * newline and carriage return escaped, or \N for NULL; then the tab or the end of line. */
static void copy_field(kpi_buf *b, const char *s, char end) {
  if (!s) {
    kpi_buf_add(b, "\\N", 2);
  } else {
    for (const char *p = s; *p;) {
      size_t run = strcspn(p, "\\\t\n\r");
      kpi_buf_add(b, p, run);
      p += run;
      if (!*p) break;
      kpi_buf_addc(b, '\\');
      kpi_buf_addc(b, *p == '\\' ? '\\' : *p == '\t' ? 't' : *p == '\n' ? 'n' : 'r');
      p++;
    }
  }
  kpi_buf_addc(b, end);
}

static void copy_row(kpi_buf *out, const ev_row *r) {
  char s[40];
  copy_field(out, r->event_id, '\t');
  copy_field(out, r->measure_id, '\t');
  copy_field(out, r->department, '\t');
  kpi_time_format_utc(r->observed_ms, s, sizeof(s));
  copy_field(out, s, '\t');
  kpi_day_format(r->observed_day, s, sizeof(s));
  copy_field(out, s, '\t');
  snprintf(s, sizeof(s), "%d", kpi_fy_of_day(r->observed_day));
  copy_field(out, s, '\t');
  if (isfinite(r->value)) snprintf(s, sizeof(s), "%.17g", r->value);
  copy_field(out, isfinite(r->value) ? s : NULL, '\t');
  copy_field(out, r->unit, '\t');
  copy_field(out, r->component == KPI_COMPONENT_NONE ? NULL : kpi_component_name(r->component),
             '\t');
  copy_field(out, r->note, '\t');
  kpi_time_format_utc(r->received_ms, s, sizeof(s));
  copy_field(out, s, '\t');
  snprintf(s, sizeof(s), "%d", (int)r->partition);
  copy_field(out, s, '\t');
  snprintf(s, sizeof(s), "%lld", (long long)r->offset);
  copy_field(out, s, '\t');
  copy_field(out, r->has_corrects ? r->retracts : NULL, '\n');
}

void ev_copy_rows_build(kpi_buf *out, const ev_batch *b, const size_t *idx, size_t n) {
  kpi_buf_reset(out);
  kpi_buf_reserve(out, n * 300); /* about one line: no regrowth for usual records */
  for (size_t k = 0; k < n; k++) copy_row(out, &b->rows[idx[k]]);
}

void ev_copy_rows_extend(ev_batch *b) {
  for (; b->copy_upto < b->n_rows; b->copy_upto++) {
    const ev_row *r = &b->rows[b->copy_upto];
    if (r->kind == EV_ROW_MEASUREMENT && !r->poison) copy_row(&b->copy, r);
  }
}

/* A group of the totals: its key (the measure of R, its first row, the month and the
 * component), and the count, sum and latest day of its rows. */
typedef struct {
  const ev_row *r;
  kpi_day month;
  const char *component;
  long long events;
  double total;
  kpi_day last_day;
} totals_group;

static int totals_group_cmp(const void *a, const void *b) {
  const totals_group *x = a, *y = b;
  int c = strcmp(x->r->measure_id, y->r->measure_id);
  if (c) return c;
  if (x->month != y->month) return x->month < y->month ? -1 : 1;
  return strcmp(x->component, y->component);
}

static void totals_group_add(ev_copy_totals_params *p, const totals_group *g) {
  kpi_buf_arr_str(&p->measure_id, g->r->measure_id);
  ev_arr_day(&p->month, g->month);
  ev_arr_int(&p->fiscal_year, kpi_fy_of_day(g->r->observed_day));
  kpi_buf_arr_str(&p->component, g->component);
  ev_arr_int(&p->events, g->events);
  ev_arr_double(&p->total, true, g->total);
  ev_arr_day(&p->last_day, g->last_day);
}

/* FNV-1a over the group key, for totals_find. */
static size_t totals_hash(const char *measure, kpi_day month, const char *component) {
  uint32_t h = 2166136261u;
  for (const unsigned char *s = (const unsigned char *)measure; *s; s++) h = (h ^ *s) * 16777619u;
  h = (h ^ (uint32_t)month) * 16777619u;
  return (h ^ (unsigned char)component[0]) * 16777619u;
}

/* The group of row R in the open-addressing table SLOT (CAP a power of two above twice the
 * rows; entries are group index + 1, 0 empty), added to G (N groups) when new. */
static totals_group *totals_find(totals_group *g, size_t *n, uint32_t *slot, size_t cap,
                                 const ev_row *r, kpi_day month, const char *component) {
  size_t h = totals_hash(r->measure_id, month, component) & (cap - 1);
  for (; slot[h]; h = (h + 1) & (cap - 1)) {
    totals_group *x = &g[slot[h] - 1];
    if (x->month == month && strcmp(x->component, component) == 0 &&
        strcmp(x->r->measure_id, r->measure_id) == 0)
      return x;
  }
  g[*n] = (totals_group){.r = r, .month = month, .component = component,
                         .last_day = r->observed_day};
  slot[h] = (uint32_t)++*n;
  return &g[*n - 1];
}

/* The rows are grouped through a hash table and only the groups (a few per measure and month)
 * are sorted: sorting the rows themselves cost about 1 ms per 5,000-record batch, spent while
 * the database waited for the transaction's first statement (docs/evaluator.md "Performance").
 * A group's rows are summed in the rows' order. */
int ev_copy_totals_build(ev_copy_totals_params *p, const ev_batch *b, const size_t *idx,
                         size_t n) {
  ev_params_begin(p->v, EV_COPY_TOTALS_NPARAMS);
  size_t cap = 16, ng = 0;
  while (cap < 2 * n) cap *= 2;
  totals_group *g = n ? malloc(n * sizeof(*g)) : NULL;
  uint32_t *slot = n ? calloc(cap, sizeof(*slot)) : NULL;
  if (n && (!g || !slot)) {
    free(g);
    free(slot);
    return -1;
  }
  for (size_t k = 0; k < n; k++) {
    const ev_row *r = &b->rows[idx[k]];
    int y, m, d;
    kpi_day month;
    kpi_day_to_ymd(r->observed_day, &y, &m, &d);
    if (kpi_day_from_ymd(y, m, 1, &month) != 0) month = r->observed_day;
    const char *component =
        r->component == KPI_COMPONENT_NONE ? "" : kpi_component_name(r->component);
    totals_group *x = totals_find(g, &ng, slot, cap, r, month, component);
    x->events++;
    x->total += r->value;
    if (r->observed_day > x->last_day) x->last_day = r->observed_day;
  }
  qsort(g, ng, sizeof(*g), totals_group_cmp);
  for (size_t k = 0; k < ng; k++) totals_group_add(p, &g[k]);
  free(g);
  free(slot);
  ev_params_end(p->v, EV_COPY_TOTALS_NPARAMS);
  return ev_params_oom(p->v, EV_COPY_TOTALS_NPARAMS) ? -1 : 0;
}

/* A correction's retraction half (docs/corrections.md): its id is kpi_retraction_id of the
 * corrected event under the correction's measure and department, received with it. */
void ev_retract_params_build(ev_retract_params *p, const ev_batch *b, const size_t *idx,
                             size_t n) {
  ev_params_begin(p->v, EV_RETRACT_NPARAMS);
  char s[40], rid[KPI_UUID_STRLEN + 1];
  for (size_t k = 0; k < n; k++) {
    const ev_row *r = &b->rows[idx[k]];
    if (r->kind == EV_ROW_MEASUREMENT) ev_arr_int(&p->m_pos, (long long)k + 1);
    if (!ev_row_retracts(r)) continue;
    bool correction = r->kind == EV_ROW_MEASUREMENT;
    if (correction) kpi_retraction_id(r->retracts, r->measure_id, r->department, rid);
    kpi_buf_arr_str(&p->event_id, correction ? rid : r->event_id);
    kpi_buf_arr_str(&p->retracts, r->retracts);
    kpi_buf_arr_str(&p->measure_id, r->measure_id);
    kpi_buf_arr_str(&p->department, r->department);
    kpi_buf_arr_str(&p->reason, r->reason ? r->reason : "");
    kpi_time_format_utc(r->received_ms, s, sizeof(s));
    kpi_buf_arr_str(&p->received_at, s);
    arr_str_or_null(&p->correction, correction ? r->event_id : NULL);
    ev_arr_int(&p->partition, r->partition);
    ev_arr_int(&p->offset, r->offset);
    ev_arr_int(&p->pos, (long long)k + 1);
  }
  ev_params_end(p->v, EV_RETRACT_NPARAMS);
}

void ev_offset_params_build(ev_offset_params *p, const ev_batch *b) {
  ev_params_begin(p->v, EV_OFFSET_NARRAYS);
  for (size_t i = 0; i < b->n_offs; i++) {
    ev_arr_int(&p->partition, b->offs[i].partition);
    ev_arr_int(&p->next_offset, b->offs[i].next_offset);
  }
  ev_params_end(p->v, EV_OFFSET_NARRAYS);
}

static void set_text(kpi_buf *b, const char *s) {
  kpi_buf_reset(b);
  kpi_buf_adds(b, s);
}

void ev_aggregate_params_build(ev_aggregate_params *p, const kpi_catalog *cat,
                               const unsigned char *seen, size_t n_seen, kpi_day as_of) {
  kpi_buf_arr_begin(&p->ids);
  kpi_buf_arr_begin(&p->window_from);
  kpi_buf_arr_begin(&p->window_to);
  kpi_buf_arr_begin(&p->is_ratio);
  for (size_t i = 0; i < n_seen; i++) {
    if (!seen[i]) continue;
    const kpi_measure *m = &cat->measures[i];
    kpi_buf_arr_str(&p->ids, m->id);
    if (m->kind == KPI_KIND_CUMULATIVE) {
      ev_arr_int(&p->window_from, m->window_from_fy);
      ev_arr_int(&p->window_to, m->window_to_fy);
    } else {
      kpi_buf_arr_null(&p->window_from);
      kpi_buf_arr_null(&p->window_to);
    }
    kpi_buf_arr_raw(&p->is_ratio, m->kind == KPI_KIND_RATIO ? "true" : "false");
  }
  kpi_buf_arr_end(&p->ids);
  kpi_buf_arr_end(&p->window_from);
  kpi_buf_arr_end(&p->window_to);
  kpi_buf_arr_end(&p->is_ratio);
  /* The date's bounds as the report computes them for the same query (common/kpi_aggregate). */
  kpi_aggregate_bounds b;
  kpi_aggregate_bounds_of(as_of, &b);
  set_text(&p->fiscal_year, b.fiscal_year);
  set_text(&p->end_at, b.end_at);
  set_text(&p->month_start_at, b.month_start_at);
  set_text(&p->month_start, b.month_start);
  set_text(&p->day, b.day);
}

void ev_attainment_params_add(ev_attainment_params *p, const char *measure_id, kpi_day as_of,
                              const kpi_attainment *a, const char *last_observed_at,
                              const char *events, const kpi_alert_track *next, int cv,
                              int noted) {
  kpi_buf_arr_str(&p->measure_id, measure_id);
  ev_arr_day(&p->as_of, as_of);
  ev_arr_double(&p->value, a->has_value, a->value);
  ev_arr_double(&p->progress, a->has_progress, a->progress);
  ev_arr_double(&p->expected, true, a->expected);
  kpi_buf_arr_str(&p->status, kpi_status_name(a->status));
  kpi_buf_arr_raw(&p->stale, a->stale ? "true" : "false");
  arr_str_or_null(&p->last_observed_at, last_observed_at);
  kpi_buf_arr_raw(&p->events, events);
  arr_str_or_null(&p->alert_state, next->state[0] ? next->state : NULL);
  ev_arr_int(&p->episode, next->episode);
  if (next->has_last_alert) ev_arr_day(&p->last_alert_on, next->last_alert_on);
  else kpi_buf_arr_null(&p->last_alert_on);
  ev_arr_int(&p->reminders, next->reminders);
  ev_arr_int(&p->catalog_version, cv);
  ev_arr_int(&p->noted_catalog_version, noted);
}

void ev_history_params_add(ev_history_params *p, const char *measure_id, kpi_day as_of,
                           const kpi_attainment *a, int cv, ev_cause cause) {
  kpi_buf_arr_str(&p->measure_id, measure_id);
  ev_arr_day(&p->as_of, as_of);
  ev_arr_double(&p->value, a->has_value, a->value);
  ev_arr_double(&p->progress, a->has_progress, a->progress);
  ev_arr_double(&p->expected, true, a->expected);
  kpi_buf_arr_str(&p->status, kpi_status_name(a->status));
  kpi_buf_arr_raw(&p->stale, a->stale ? "true" : "false");
  ev_arr_int(&p->catalog_version, cv);
  kpi_buf_arr_str(&p->cause, ev_cause_name(cause));
}

void ev_outbox_params_add(ev_outbox_params *p, const char *alert_id, const char *topic,
                          const char *key, const char *payload) {
  kpi_buf_arr_str(&p->alert_id, alert_id);
  kpi_buf_arr_str(&p->topic, topic);
  kpi_buf_arr_str(&p->msg_key, key);
  kpi_buf_arr_str(&p->payload, payload);
}
