/* kpi_attainment.c: value, progress, expected pace, status and alert episodes (docs/evaluator.md "Attainment"). */
#include "kpi_attainment.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[] = {"no_data", "on_track", "lagging", "achieved",
                                           "failed"};

const char *kpi_status_name(kpi_status s) {
  if ((unsigned)s >= sizeof(status_names) / sizeof(status_names[0])) return "no_data";
  return status_names[s];
}

int kpi_status_parse(const char *s, kpi_status *out) {
  for (size_t i = 0; i < sizeof(status_names) / sizeof(status_names[0]); i++) {
    if (s && strcmp(s, status_names[i]) == 0) {
      *out = (kpi_status)i;
      return 0;
    }
  }
  return -1;
}

kpi_day kpi_attainment_start(const kpi_measure *m) {
  if (m->kind == KPI_KIND_CUMULATIVE) return kpi_fy_first_day(m->window_from_fy);
  return kpi_fy_last_day(m->baseline_fy);
}

kpi_day kpi_attainment_due(const kpi_measure *m) { return kpi_fy_last_day(m->target_fy); }

kpi_day kpi_attainment_data_from(const kpi_measure *m) {
  /* docs/evaluator.md "Attainment": a baseline of FY B is a reading at the end of FY B, so only a reading taken
   * after that day is news; a cumulative measure counts from its window's first day. */
  kpi_day start = kpi_attainment_start(m);
  return m->kind == KPI_KIND_CUMULATIVE ? start : start + 1;
}

bool kpi_attainment_window(const kpi_measure *m, kpi_day as_of, kpi_day *from, kpi_day *to) {
  if (m->kind != KPI_KIND_CUMULATIVE) return false;
  kpi_day first = kpi_fy_first_day(m->window_from_fy);
  kpi_day last = kpi_fy_last_day(m->window_to_fy);
  if (as_of < first) return false;
  *from = first;
  *to = as_of < last ? as_of : last;
  return true;
}

/* (v - b) / (t - b): 0 at the baseline, 1 at the target, in either direction. The catalog
 * rejects t == b for the kinds that use it; should one slip through, meeting the target
 * counts as complete rather than dividing by zero. */
static double progress_between(double v, double b, double t, kpi_direction dir) {
  if (t == b) {
    int met = dir == KPI_DIR_INCREASE ? v >= t : v <= t;
    return met ? 1.0 : 0.0;
  }
  return (v - b) / (t - b);
}

static double progress_maintain(double v, double b, kpi_direction dir) {
  if (dir == KPI_DIR_INCREASE) {
    if (v >= b) return 1.0;
    return b != 0 ? v / b : 0.0;
  }
  if (v <= b) return 1.0;
  return v != 0 ? b / v : 0.0;
}

static double expected_pace(kpi_day as_of, kpi_day start, kpi_day due) {
  if (due <= start) return as_of >= due ? 1.0 : 0.0;
  double e = (double)(as_of - start) / (double)(due - start);
  if (e < 0) return 0.0;
  if (e > 1) return 1.0;
  return e;
}

void kpi_attainment_eval(const kpi_measure *m, const kpi_aggregate *agg, kpi_day as_of,
                         double lag_ratio, kpi_attainment *out) {
  memset(out, 0, sizeof(*out));
  out->start = kpi_attainment_start(m);
  out->due = kpi_attainment_due(m);
  out->expected = expected_pace(as_of, out->start, out->due);
  bool has_data = agg->has_latest && agg->latest_day >= kpi_attainment_data_from(m);

  switch (m->kind) {
    case KPI_KIND_LEVEL:
    case KPI_KIND_MAINTAIN:
    case KPI_KIND_MILESTONE:
      out->has_value = agg->has_latest;
      out->value = agg->latest;
      break;
    case KPI_KIND_CUMULATIVE:
      /* Zero amounts inside the window are still a report of zero; with no report since the
       * window opened there is no value to show. */
      out->has_value = has_data;
      out->value = agg->window_sum;
      break;
    case KPI_KIND_RATIO:
      out->has_value = agg->has_ratio && agg->ratio_den > 0;
      out->value = out->has_value ? 100.0 * agg->ratio_num / agg->ratio_den : 0.0;
      break;
  }
  if (!out->has_value) out->value = 0.0;

  if (out->has_value) {
    double v = out->value;
    switch (m->kind) {
      case KPI_KIND_LEVEL:
      case KPI_KIND_RATIO:
        out->progress = progress_between(v, m->baseline, m->target, m->direction);
        break;
      case KPI_KIND_CUMULATIVE:
        out->progress = m->target != 0 ? v / m->target : (v > 0 ? 1.0 : 0.0);
        break;
      case KPI_KIND_MAINTAIN:
        out->progress = progress_maintain(v, m->baseline, m->direction);
        break;
      case KPI_KIND_MILESTONE:
        out->progress = v;
        break;
    }
    out->has_progress = true;
  }

  bool done = out->has_progress && out->progress >= 1.0 - KPI_ATTAINMENT_EPS;
  bool past_due = as_of > out->due;
  if (!has_data || !out->has_value) {
    out->status = KPI_STATUS_NO_DATA;
  } else if (m->kind == KPI_KIND_MAINTAIN) {
    /* Keeping a level can only be declared kept once the period is over. */
    if (done) out->status = past_due ? KPI_STATUS_ACHIEVED : KPI_STATUS_ON_TRACK;
    else out->status = past_due ? KPI_STATUS_FAILED : KPI_STATUS_LAGGING;
  } else if (done) {
    out->status = KPI_STATUS_ACHIEVED;
  } else if (past_due) {
    out->status = KPI_STATUS_FAILED;
  } else if (m->kind == KPI_KIND_MILESTONE) {
    out->status = out->expected >= 0.75 ? KPI_STATUS_LAGGING : KPI_STATUS_ON_TRACK;
  } else if (out->progress < lag_ratio * out->expected - KPI_ATTAINMENT_EPS) {
    out->status = KPI_STATUS_LAGGING;
  } else {
    out->status = KPI_STATUS_ON_TRACK;
  }

  /* Stale: the department has gone quiet for longer than its reporting interval plus grace.
   * Without any reading, the clock runs from `start`, when reports became due. An achieved
   * measure needs no further reports, so it is never stale. */
  int limit = (m->report_interval_days > 0 ? m->report_interval_days : 365) + KPI_GRACE_DAYS;
  kpi_day since = agg->has_latest ? agg->latest_day : out->start;
  out->stale = out->status != KPI_STATUS_ACHIEVED && as_of - since > limit;
}

/* Alert episodes ----------------------------------------------------------------------- */

/* Fixed forever: changing it would change every alert_id and defeat deduplication. */
const uint8_t kpi_alert_namespace[16] = {0x6b, 0x70, 0x69, 0x2d, 0x61, 0x6c, 0x65, 0x72,
                                         0x74, 0x2d, 0x4e, 0x53, 0x2d, 0x76, 0x31, 0x00};

void kpi_alert_id(const char *name, char out[KPI_UUID_STRLEN + 1]) {
  kpi_uuid_v5(kpi_alert_namespace, name, strlen(name), out);
}

const char *kpi_alert_action_type(kpi_alert_action a) {
  switch (a) {
    case KPI_ALERT_RAISE: return "alert";
    case KPI_ALERT_REMIND: return "reminder";
    case KPI_ALERT_RESOLVE: return "resolved";
    default: return "";
  }
}

const char *kpi_alert_state_of(const kpi_attainment *a) {
  if (a->status == KPI_STATUS_FAILED) return "failed";
  if (a->status == KPI_STATUS_LAGGING) return "lagging";
  if (a->stale) return "stale";
  return "";
}

kpi_alert_action kpi_alert_decide(const char *measure_id, const kpi_alert_track *prev,
                                  const kpi_attainment *now, kpi_day as_of, int repeat_days,
                                  kpi_alert_track *next, char *name, size_t name_size) {
  const char *state = kpi_alert_state_of(now);
  *next = *prev;
  if (name_size) name[0] = '\0';
  if (!*state) {
    if (!prev->state[0]) return KPI_ALERT_NONE;
    /* The resolved notice closes the episode it belongs to, so it shares its number. */
    snprintf(name, name_size, "%s/resolved/%d", measure_id, prev->episode);
    next->state[0] = '\0';
    next->reminders = 0;
    next->has_last_alert = true;
    next->last_alert_on = as_of;
    return KPI_ALERT_RESOLVE;
  }
  if (strcmp(state, prev->state) != 0) {
    /* Every transition into an alerting state (also lagging -> failed) is a new episode, so
     * lagging -> stale -> lagging yields two distinct lagging alerts instead of one id that
     * the outbox would silently deduplicate. */
    snprintf(next->state, sizeof(next->state), "%s", state);
    next->episode = prev->episode + 1;
    next->reminders = 0;
    next->has_last_alert = true;
    next->last_alert_on = as_of;
    snprintf(name, name_size, "%s/%s/%d", measure_id, state, next->episode);
    return KPI_ALERT_RAISE;
  }
  if (!prev->has_last_alert) {
    next->has_last_alert = true;
    next->last_alert_on = as_of;
    return KPI_ALERT_NONE;
  }
  if (repeat_days < 1) repeat_days = 1;
  if (as_of - prev->last_alert_on < repeat_days) return KPI_ALERT_NONE;
  next->reminders = prev->reminders + 1;
  next->last_alert_on = as_of;
  snprintf(name, name_size, "%s/%s/%d/reminder-%d", measure_id, state, prev->episode,
           next->reminders);
  return KPI_ALERT_REMIND;
}

/* Acknowledgements --------------------------------------------------------------------- */

bool kpi_ack_quiets(const kpi_ack_hold *ack, const kpi_attainment *now, kpi_day as_of) {
  if (!ack || !ack->present || !ack->has_status || ack->changed_since) return false;
  if (as_of > ack->until) return false;
  /* The state it was written for, unchanged: a change either way is a transition. */
  return now->status == ack->status && now->stale == ack->stale;
}

kpi_alert_action kpi_alert_apply_ack(kpi_alert_action act, const kpi_ack_hold *ack,
                                     const kpi_attainment *now, kpi_day as_of,
                                     const kpi_alert_track *prev, kpi_alert_track *next,
                                     char *name, size_t name_size) {
  if (act != KPI_ALERT_REMIND || !kpi_ack_quiets(ack, now, as_of)) return act;
  *next = *prev;
  if (name_size) name[0] = '\0';
  return KPI_ALERT_NONE;
}
