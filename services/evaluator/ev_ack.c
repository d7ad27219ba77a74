/* ev_ack.c: the owners' acknowledgements in the evaluator (docs/corrections.md "Reminders and
 * acknowledgements"): their statement and parameters in a batch transaction, and reading a
 * measure's latest acknowledgement from the aggregate (EV_ACK_LATEST_SQL) for the reminder
 * decision (kpi_alert_apply_ack) and for the alert record. Pure: no I/O of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evaluator.h"
#include "kpi_records.h"

_Static_assert(KPI_ALERT_ACK_NOTE_MAX == KPI_ACK_NOTE_MAX, "an alert carries any note stored");

/* The batch's acknowledgements, with the measure's status and stale flag as committed before
 * the batch: the state the owner wrote about. A replay inserts nothing (event_id). */
const char ev_ack_sql_insert[] =
    "INSERT INTO acknowledgements (event_id, measure_id, department, note, until, received_at,"
    "  status, stale, kafka_partition, kafka_offset)"
    " SELECT u.e, u.m, u.d, u.n, u.t, u.r, a.status, coalesce(a.stale, false), u.p, u.o"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[],"
    "  $6::timestamptz[], $7::int[], $8::bigint[]) AS u(e, m, d, n, t, r, p, o)"
    " LEFT JOIN attainment a ON a.measure_id = u.m"
    " ON CONFLICT (event_id) DO NOTHING";

void ev_ack_params_build(ev_ack_params *p, const ev_batch *b, const size_t *idx, size_t n) {
  ev_params_begin(p->v, EV_ACK_NPARAMS);
  char s[40];
  for (size_t k = 0; k < n; k++) {
    const ev_row *r = &b->rows[idx[k]];
    if (r->kind != EV_ROW_ACK) continue;
    kpi_buf_arr_str(&p->event_id, r->event_id);
    kpi_buf_arr_str(&p->measure_id, r->measure_id);
    kpi_buf_arr_str(&p->department, r->department);
    kpi_buf_arr_str(&p->note, r->note ? r->note : "");
    ev_arr_day(&p->until, r->until_day);
    kpi_time_format_utc(r->received_ms, s, sizeof(s));
    kpi_buf_arr_str(&p->received_at, s);
    ev_arr_int(&p->partition, r->partition);
    ev_arr_int(&p->offset, r->offset);
  }
  ev_params_end(p->v, EV_ACK_NPARAMS);
}

ev_ack_cols ev_ack_cols_find(const PGresult *res) {
  ev_ack_cols c = {
      .note = PQfnumber(res, "ack_note"),
      .department = PQfnumber(res, "ack_department"),
      .at = PQfnumber(res, "ack_at"),
      .until = PQfnumber(res, "ack_until"),
      .status = PQfnumber(res, "ack_status"),
      .stale = PQfnumber(res, "ack_stale"),
      .changed = PQfnumber(res, "ack_changed"),
  };
  return c;
}

static bool present(const PGresult *res, int r, const ev_ack_cols *c) {
  return c->note >= 0 && !PQgetisnull(res, r, c->note);
}

void ev_ack_hold_read(const PGresult *res, int r, const ev_ack_cols *c, kpi_ack_hold *out) {
  memset(out, 0, sizeof(*out));
  if (!present(res, r, c)) return;
  out->present = true;
  out->until = (kpi_day)atoi(PQgetvalue(res, r, c->until));
  out->has_status = !PQgetisnull(res, r, c->status) &&
                    kpi_status_parse(PQgetvalue(res, r, c->status), &out->status) == 0;
  out->stale = PQgetvalue(res, r, c->stale)[0] == 't';
  out->changed_since = PQgetvalue(res, r, c->changed)[0] == 't';
}

void ev_ack_alert_read(const PGresult *res, int r, const ev_ack_cols *c, const kpi_catalog *cat,
                       kpi_alert_ack *out) {
  memset(out, 0, sizeof(*out));
  if (!present(res, r, c)) return;
  out->present = true;
  out->note = PQgetvalue(res, r, c->note);
  snprintf(out->department, sizeof(out->department), "%s", PQgetvalue(res, r, c->department));
  const kpi_department *d = kpi_catalog_department(cat, out->department);
  out->department_name = d ? d->name : NULL;
  snprintf(out->acknowledged_at, sizeof(out->acknowledged_at), "%s", PQgetvalue(res, r, c->at));
  kpi_day_format((kpi_day)atoi(PQgetvalue(res, r, c->until)), out->until, sizeof(out->until));
}
