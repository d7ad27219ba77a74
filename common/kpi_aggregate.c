/* kpi_aggregate.c: the date bounds and the row reader of the shared aggregate query. */
#include "kpi_aggregate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kpi_time.h"

static void day_start_instant(kpi_day day, char *buf, size_t size) {
  int64_t ms = (int64_t)day * 86400000LL - (int64_t)KPI_TZ_OFFSET_MIN * 60000LL;
  kpi_time_format_utc(ms, buf, size);
}

void kpi_aggregate_bounds_of(kpi_day as_of, kpi_aggregate_bounds *out) {
  int y, mo, d;
  kpi_day_to_ymd(as_of, &y, &mo, &d);
  kpi_day month = as_of - (d - 1);
  snprintf(out->fiscal_year, sizeof(out->fiscal_year), "%d", kpi_fy_of_day(as_of));
  day_start_instant(as_of + 1, out->end_at, sizeof(out->end_at));
  day_start_instant(month, out->month_start_at, sizeof(out->month_start_at));
  kpi_day_format(month, out->month_start, sizeof(out->month_start));
  kpi_day_format(as_of, out->day, sizeof(out->day));
}

kpi_aggregate_cols kpi_aggregate_cols_find(const PGresult *res) {
  kpi_aggregate_cols c = {
      .latest = PQfnumber(res, "latest"),
      .latest_day = PQfnumber(res, "latest_day"),
      .window_sum = PQfnumber(res, "window_sum"),
      .num = PQfnumber(res, "num"),
      .den = PQfnumber(res, "den"),
  };
  return c;
}

void kpi_aggregate_read(const PGresult *res, int r, const kpi_aggregate_cols *c,
                        kpi_aggregate *out) {
  memset(out, 0, sizeof(*out));
  if (c->latest >= 0 && !PQgetisnull(res, r, c->latest)) {
    out->has_latest = true;
    out->latest = strtod(PQgetvalue(res, r, c->latest), NULL);
    out->latest_day = (kpi_day)atoi(PQgetvalue(res, r, c->latest_day));
  }
  if (c->window_sum >= 0 && !PQgetisnull(res, r, c->window_sum))
    out->window_sum = strtod(PQgetvalue(res, r, c->window_sum), NULL);
  if (c->den >= 0 && !PQgetisnull(res, r, c->den)) {
    out->has_ratio = true;
    out->ratio_num = strtod(PQgetvalue(res, r, c->num), NULL);
    out->ratio_den = strtod(PQgetvalue(res, r, c->den), NULL);
  }
}
