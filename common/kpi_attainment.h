/* kpi_attainment.h: the attainment of one measure (docs/evaluator.md "Attainment") and its alert episodes, as pure
 * functions of the catalog entry, the aggregated measurements and the evaluation date. */
#ifndef KPI_ATTAINMENT_H
#define KPI_ATTAINMENT_H

#include <stdbool.h>
#include <stddef.h>

#include "kpi_catalog.h"
#include "kpi_time.h"
#include "kpi_uuid.h"

typedef enum {
  KPI_STATUS_NO_DATA = 0,
  KPI_STATUS_ON_TRACK,
  KPI_STATUS_LAGGING,
  KPI_STATUS_ACHIEVED,
  KPI_STATUS_FAILED
} kpi_status;

/* "no_data", "on_track", "lagging", "achieved", "failed". */
const char *kpi_status_name(kpi_status s);
/* Returns 0 and sets *OUT, or -1 for an unknown name. */
int kpi_status_parse(const char *s, kpi_status *out);

#define KPI_LAG_RATIO_DEFAULT 0.8
#define KPI_GRACE_DAYS 90
#define KPI_REPEAT_DAYS_DEFAULT 7

/* Floating-point slack for the comparisons p >= 1 and p < lag_ratio*e: a ratio such as
 * 100*7/35 lands one ulp away from the target, and a city would not accept "not achieved"
 * for a number that prints as exactly the target. */
#define KPI_ATTAINMENT_EPS 1e-9

/* What the evaluator aggregated from the stored measurements of one measure, counting only
 * those observed on or before the evaluation date. Which fields matter depends on the kind;
 * the others are ignored. */
typedef struct {
  /* Every kind: the measurement with the latest observed_at (ties: the later received_at). */
  bool has_latest;
  double latest;          /* its value: v for level, maintain and milestone */
  kpi_day latest_day;     /* its Japan calendar date, for no_data and stale */
  /* cumulative: sum of the amounts observed inside the window (1 April of window_from_fy ..
   * 31 March after window_to_fy). */
  double window_sum;
  /* ratio: numerator and denominator sums of the latest FY whose denominator sum is > 0. */
  bool has_ratio;
  double ratio_num;
  double ratio_den;
} kpi_aggregate;

typedef struct {
  bool has_value; /* false: nothing to show (no reading, or a ratio without a denominator) */
  double value;
  bool has_progress; /* same as has_value */
  double progress;   /* p, unclamped */
  double expected;   /* e in [0, 1] */
  kpi_status status;
  bool stale;
  kpi_day start; /* see kpi_attainment_start */
  kpi_day due;   /* 31 March after the target FY */
} kpi_attainment;

/* `start` (docs/evaluator.md "Attainment"): the end of the baseline FY, or for a cumulative measure 1 April of the
 * window's first FY. */
kpi_day kpi_attainment_start(const kpi_measure *m);
/* `due`: the end of the target FY. */
kpi_day kpi_attainment_due(const kpi_measure *m);
/* The first day a measurement counts as "reported since the baseline": the day after `start`
 * (1 April after the baseline FY, since the baseline is taken as as the reading at the
 * end of its FY) for level, ratio, maintain and milestone; the window's first day for
 * cumulative. See docs/evaluator.md. */
kpi_day kpi_attainment_data_from(const kpi_measure *m);

/* Cumulative only: the days whose amounts count at AS_OF, the window (1 April of
 * window_from_fy .. 31 March after window_to_fy) cut at AS_OF. Returns false (FROM and TO
 * untouched) for other kinds or when nothing of the window has begun. */
bool kpi_attainment_window(const kpi_measure *m, kpi_day as_of, kpi_day *from, kpi_day *to);

/* Evaluates M at AS_OF from AGG with the given LAG_RATIO (0 < lag_ratio <= 1). Fills OUT;
 * never fails. */
void kpi_attainment_eval(const kpi_measure *m, const kpi_aggregate *agg, kpi_day as_of,
                         double lag_ratio, kpi_attainment *out);

/* Alert episodes ----------------------------------------------------------------------- */

/* The alert bookkeeping kept with the attainment row. STATE is the open alert: "lagging",
 * "failed", "stale", or "" when the measure is not alerting. EPISODE counts the alerts raised
 * so far (each transition into an alerting state opens a new episode), REMINDERS the reminders
 * sent in the current episode, LAST_ALERT_ON the date of the last alert or reminder. */
typedef struct {
  char state[12];
  int episode;
  int reminders;
  bool has_last_alert;
  kpi_day last_alert_on;
} kpi_alert_track;

typedef enum {
  KPI_ALERT_NONE = 0,
  KPI_ALERT_RAISE,  /* type "alert": entered lagging, failed or stale */
  KPI_ALERT_REMIND, /* type "reminder": still alerting after repeat_days */
  KPI_ALERT_RESOLVE /* type "resolved": left the alerting states */
} kpi_alert_action;

/* "alert", "reminder", "resolved", or "" for NONE. */
const char *kpi_alert_action_type(kpi_alert_action a);

/* The alerting state an attainment puts a measure in: "failed", else "lagging", else "stale"
 * when the stale flag is set, else "". */
const char *kpi_alert_state_of(const kpi_attainment *a);

/* Decides what, if anything, to announce when a measure whose alert bookkeeping was PREV is
 * now evaluated as NOW at AS_OF. Writes the new bookkeeping to NEXT and, for an action, the
 * alert_id name "measure_id/state/episode" (or ".../reminder-N", or "measure_id/resolved/
 * episode") to NAME. The name, hashed with kpi_alert_id, is the same on every replay of the
 * same evaluation. REPEAT_DAYS >= 1. */
kpi_alert_action kpi_alert_decide(const char *measure_id, const kpi_alert_track *prev,
                                  const kpi_attainment *now, kpi_day as_of, int repeat_days,
                                  kpi_alert_track *next, char *name, size_t name_size);

/* Acknowledgements (docs/corrections.md "Reminders and acknowledgements") ---------------- */

/* The measure's latest acknowledgement, as the reminder decision needs it. STATUS and STALE:
 * the measure's state committed when the evaluator stored it (HAS_STATUS false: the measure had
 * no attainment yet, so there is no state it was written for). CHANGED_SINCE: an attainment
 * history row recorded since then shows another status or stale flag (a transition after it). */
typedef struct {
  bool present;
  kpi_day until; /* the last day of the quiet period */
  bool has_status;
  kpi_status status;
  bool stale;
  bool changed_since;
} kpi_ack_hold;

/* True when ACK quiets a reminder about the measure evaluated as NOW at AS_OF: it is present,
 * AS_OF <= until, no transition was recorded since it was stored, and NOW has the status and
 * stale flag it was written for. Any change (worse: lagging -> failed, stale added; or better)
 * is a transition, which notifies on its own and ends the quiet period; a newer
 * acknowledgement starts a new one. ACK may be NULL (false). */
bool kpi_ack_quiets(const kpi_ack_hold *ack, const kpi_attainment *now, kpi_day as_of);

/* Applies ACK to the decision ACT of kpi_alert_decide (PREV, NEXT and NAME as given to it): a
 * reminder that ACK quiets becomes KPI_ALERT_NONE with NEXT = PREV and NAME "", so the
 * reminder count and last_alert_on stay those of the last notice really sent. The first
 * evaluation after the quiet period then finds a reminder due at once, numbered after the last
 * one sent: the same inputs give the same alert_id on every replay. Any other action is
 * returned unchanged. */
kpi_alert_action kpi_alert_apply_ack(kpi_alert_action act, const kpi_ack_hold *ack,
                                     const kpi_attainment *now, kpi_day as_of,
                                     const kpi_alert_track *prev, kpi_alert_track *next,
                                     char *name, size_t name_size);

/* The namespace UUID of every alert_id. */
extern const uint8_t kpi_alert_namespace[16];

/* alert_id = UUIDv5(kpi_alert_namespace, NAME). */
void kpi_alert_id(const char *name, char out[KPI_UUID_STRLEN + 1]);

#endif
