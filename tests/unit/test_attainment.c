/* test_attainment.c: unit tests for kpi_attainment — every kind and direction, every status
 * rule and its boundaries, fiscal years across 31 March / 1 April, alert episodes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kpi_attainment.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static kpi_day ymd(int y, int m, int d) {
  kpi_day day = 0;
  assert_int_equal(kpi_day_from_ymd(y, m, d, &day), 0);
  return day;
}

/* The measures under test, built directly (the catalog parser has its own tests). */
enum {
  L_INC,  /* level 24 -> 50, FY2022 -> FY2024: start 2023-03-31, due 2025-03-31, 731 days */
  L_DEC,  /* level 100 -> 60, same years */
  R_INC,  /* ratio 0% -> 20% */
  R_DEC,  /* ratio 30% -> 10% */
  C_INC,  /* cumulative 250 over FY2020-FY2024: start 2020-04-01, 1825 days */
  C_DEC,  /* cumulative marked decrease (the catalog refuses it; direction is ignored) */
  M_INC,  /* maintain 96 (at least) */
  M_DEC,  /* maintain 5 (at most) */
  MS_INC, /* milestone FY2022 -> FY2025: start 2023-03-31, due 2026-03-31, 1096 days */
  MS_DEC, /* milestone marked decrease: p is still v */
  LB_INC, /* level 0 -> 10, FY2022 -> FY2025 (1096 days: e = 0.5 after 548) */
  LB_DEC, /* level 10 -> 0, same years */
  L_INT30, /* like L_INC, reporting every 30 days */
  S_LED,   /* seed g4-carbon-2-led-rate: level 12.4% -> 35.7%, FY2022 (R4) -> FY2024 (R6) */
  S_ZC     /* seed g4-carbon-1-zero-carbon-plan: milestone, FY2022 -> FY2024, 731 days */
};

static const struct {
  kpi_kind kind;
  kpi_direction dir;
  int bfy;
  double b;
  int tfy;
  double t;
  int wfrom, wto;
  int interval;
} defs[] = {
    [L_INC] = {KPI_KIND_LEVEL, KPI_DIR_INCREASE, 2022, 24, 2024, 50, 0, 0, 365},
    [L_DEC] = {KPI_KIND_LEVEL, KPI_DIR_DECREASE, 2022, 100, 2024, 60, 0, 0, 365},
    [R_INC] = {KPI_KIND_RATIO, KPI_DIR_INCREASE, 2022, 0, 2024, 20, 0, 0, 365},
    [R_DEC] = {KPI_KIND_RATIO, KPI_DIR_DECREASE, 2022, 30, 2024, 10, 0, 0, 365},
    [C_INC] = {KPI_KIND_CUMULATIVE, KPI_DIR_INCREASE, 2018, 50, 2024, 250, 2020, 2024, 365},
    [C_DEC] = {KPI_KIND_CUMULATIVE, KPI_DIR_DECREASE, 2018, 50, 2024, 100, 2020, 2024, 365},
    [M_INC] = {KPI_KIND_MAINTAIN, KPI_DIR_INCREASE, 2022, 96, 2024, 96, 0, 0, 365},
    [M_DEC] = {KPI_KIND_MAINTAIN, KPI_DIR_DECREASE, 2022, 5, 2024, 5, 0, 0, 365},
    [MS_INC] = {KPI_KIND_MILESTONE, KPI_DIR_INCREASE, 2022, 0, 2025, 1, 0, 0, 365},
    [MS_DEC] = {KPI_KIND_MILESTONE, KPI_DIR_DECREASE, 2022, 0, 2025, 1, 0, 0, 365},
    [LB_INC] = {KPI_KIND_LEVEL, KPI_DIR_INCREASE, 2022, 0, 2025, 10, 0, 0, 365},
    [LB_DEC] = {KPI_KIND_LEVEL, KPI_DIR_DECREASE, 2022, 10, 2025, 0, 0, 0, 365},
    [L_INT30] = {KPI_KIND_LEVEL, KPI_DIR_INCREASE, 2022, 24, 2024, 50, 0, 0, 30},
    [S_LED] = {KPI_KIND_LEVEL, KPI_DIR_INCREASE, 2022, 12.4, 2024, 35.7, 0, 0, 365},
    [S_ZC] = {KPI_KIND_MILESTONE, KPI_DIR_INCREASE, 2022, 0, 2024, 1, 0, 0, 365},
};

static kpi_measure make(int which) {
  kpi_measure m;
  memset(&m, 0, sizeof(m));
  m.id = "m";
  m.kind = defs[which].kind;
  m.direction = defs[which].dir;
  m.baseline_fy = defs[which].bfy;
  m.baseline = defs[which].b;
  m.target_fy = defs[which].tfy;
  m.target = defs[which].t;
  m.window_from_fy = defs[which].wfrom;
  m.window_to_fy = defs[which].wto;
  m.report_interval_days = defs[which].interval;
  return m;
}

#define NOV -1 /* "no value" in the table */

/* One evaluation. The reading (level, maintain, milestone, and "last observed" for every kind)
 * is given by its value and date; Y == 0 means no measurement at all. SUM is the cumulative
 * window sum; NUM/DEN the ratio of the latest FY with a denominator (DEN < 0: none). AS_OF is a
 * date plus PLUS days. Expected: HAS (1 value, 0 none), V, P, E, status and stale. */
typedef struct {
  const char *what;
  int measure;
  double latest;
  int ly, lm, ld;
  double sum;
  double num, den;
  int ay, am, ad, plus;
  double lag;
  int has;
  double v, p, e;
  kpi_status status;
  int stale;
} eval_case;

static const eval_case eval_cases[] = {
    /* level, increase */
    {"level: nothing reported", L_INC, 0, 0, 0, 0, 0, 0, -1, 2024, 3, 31, 0, 0.8, 0, 0, 0,
     366.0 / 731, KPI_STATUS_NO_DATA, 0},
    {"level: reading of 31 March before the baseline FY is not data", L_INC, 30, 2022, 3, 31, 0,
     0, -1, 2024, 3, 31, 0, 0.8, 1, 30, 6.0 / 26, 366.0 / 731, KPI_STATUS_NO_DATA, 1},
    /* docs/evaluator.md ("no_data"): the baseline is the reading at the end of its FY, so a reading on that very
     * day (or earlier in the baseline FY) is not news; the next day is. */
    {"level: reading at the end of the baseline FY is not data", L_INC, 30, 2023, 3, 31, 0, 0, -1,
     2024, 3, 31, 0, 0.8, 1, 30, 6.0 / 26, 366.0 / 731, KPI_STATUS_NO_DATA, 0},
    {"level: reading of 1 April after the baseline FY is data", L_INC, 30, 2023, 4, 1, 0, 0, -1,
     2023, 6, 1, 0, 0.8, 1, 30, 6.0 / 26, 62.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"level: before start, e = 0, a reading of the baseline FY is not data", L_INC, 24, 2022, 4,
     1, 0, 0, -1, 2022, 6, 1, 0, 0.8, 1, 24, 0, 0, KPI_STATUS_NO_DATA, 0},
    {"level: on pace", L_INC, 37, 2024, 3, 31, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1, 37, 0.5,
     366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"level: behind pace", L_INC, 30, 2024, 3, 31, 0, 0, -1, 2024, 9, 30, 0, 0.8, 1, 30,
     6.0 / 26, 549.0 / 731, KPI_STATUS_LAGGING, 0},
    {"level: exactly the target", L_INC, 50, 2024, 3, 31, 0, 0, -1, 2024, 9, 30, 0, 0.8, 1, 50,
     1, 549.0 / 731, KPI_STATUS_ACHIEVED, 0},
    {"level: beyond the target, p unclamped", L_INC, 60, 2024, 3, 31, 0, 0, -1, 2024, 9, 30, 0,
     0.8, 1, 60, 36.0 / 26, 549.0 / 731, KPI_STATUS_ACHIEVED, 0},
    {"level: below the baseline, p negative", L_INC, 20, 2024, 3, 31, 0, 0, -1, 2024, 3, 31, 0,
     0.8, 1, 20, -4.0 / 26, 366.0 / 731, KPI_STATUS_LAGGING, 0},
    {"level: as_of equal to due is not failed yet", L_INC, 40, 2025, 3, 1, 0, 0, -1, 2025, 3, 31,
     0, 0.8, 1, 40, 16.0 / 26, 1, KPI_STATUS_LAGGING, 0},
    {"level: the day after due is failed", L_INC, 40, 2025, 3, 1, 0, 0, -1, 2025, 4, 1, 0, 0.8, 1,
     40, 16.0 / 26, 1, KPI_STATUS_FAILED, 0},
    {"level: achieved beats failed", L_INC, 50, 2025, 3, 1, 0, 0, -1, 2025, 4, 1, 0, 0.8, 1, 50,
     1, 1, KPI_STATUS_ACHIEVED, 0},
    {"level: on track at due when p >= 0.8", L_INC, 45, 2025, 3, 1, 0, 0, -1, 2025, 3, 31, 0, 0.8,
     1, 45, 21.0 / 26, 1, KPI_STATUS_ON_TRACK, 0},
    /* level, decrease */
    {"level dec: on pace", L_DEC, 80, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1, 80, 0.5,
     366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"level dec: went the wrong way", L_DEC, 110, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1,
     110, -0.25, 366.0 / 731, KPI_STATUS_LAGGING, 0},
    {"level dec: below the target is achieved", L_DEC, 55, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0,
     0.8, 1, 55, 1.125, 366.0 / 731, KPI_STATUS_ACHIEVED, 0},
    {"level dec: failed", L_DEC, 70, 2025, 3, 1, 0, 0, -1, 2025, 4, 1, 0, 0.8, 1, 70, 0.75, 1,
     KPI_STATUS_FAILED, 0},
    /* p exactly at lag_ratio * e (e = 0.5 after 548 of 1096 days) */
    {"boundary inc: p == 0.8 e is on track", LB_INC, 4, 2024, 9, 1, 0, 0, -1, 2023, 3, 31, 548,
     0.8, 1, 4, 0.4, 0.5, KPI_STATUS_ON_TRACK, 0},
    {"boundary inc: just under 0.8 e is lagging", LB_INC, 3.9, 2024, 9, 1, 0, 0, -1, 2023, 3, 31,
     548, 0.8, 1, 3.9, 0.39, 0.5, KPI_STATUS_LAGGING, 0},
    {"boundary inc: lag ratio 0.5, p == 0.5 e", LB_INC, 2.5, 2024, 9, 1, 0, 0, -1, 2023, 3, 31,
     548, 0.5, 1, 2.5, 0.25, 0.5, KPI_STATUS_ON_TRACK, 0},
    {"boundary inc: lag ratio 0.5, under", LB_INC, 2.4, 2024, 9, 1, 0, 0, -1, 2023, 3, 31, 548,
     0.5, 1, 2.4, 0.24, 0.5, KPI_STATUS_LAGGING, 0},
    {"boundary dec: p == 0.8 e is on track", LB_DEC, 6, 2024, 9, 1, 0, 0, -1, 2023, 3, 31, 548,
     0.8, 1, 6, 0.4, 0.5, KPI_STATUS_ON_TRACK, 0},
    {"boundary dec: just under 0.8 e is lagging", LB_DEC, 6.1, 2024, 9, 1, 0, 0, -1, 2023, 3, 31,
     548, 0.8, 1, 6.1, 0.39, 0.5, KPI_STATUS_LAGGING, 0},
    /* ratio */
    {"ratio: 10 of 100 is half way", R_INC, 1, 2024, 3, 1, 0, 10, 100, 2024, 3, 31, 0, 0.8, 1, 10,
     0.5, 366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"ratio: 7 of 35 is the target despite rounding", R_INC, 1, 2024, 3, 1, 0, 7, 35, 2024, 3,
     31, 0, 0.8, 1, 20, 1, 366.0 / 731, KPI_STATUS_ACHIEVED, 0},
    {"ratio: no FY with a denominator is no data", R_INC, 5, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0,
     0.8, 0, 0, 0, 366.0 / 731, KPI_STATUS_NO_DATA, 0},
    {"ratio: zero denominator sum is no value", R_INC, 0, 2024, 3, 1, 0, 3, 0, 2024, 3, 31, 0, 0.8,
     0, 0, 0, 366.0 / 731, KPI_STATUS_NO_DATA, 0},
    {"ratio dec: half way", R_DEC, 1, 2024, 3, 1, 0, 20, 100, 2024, 3, 31, 0, 0.8, 1, 20, 0.5,
     366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"ratio dec: worse than baseline", R_DEC, 1, 2024, 3, 1, 0, 35, 100, 2024, 3, 31, 0, 0.8, 1,
     35, -0.25, 366.0 / 731, KPI_STATUS_LAGGING, 0},
    {"ratio dec: failed", R_DEC, 1, 2025, 3, 1, 0, 15, 100, 2025, 4, 2, 0, 0.8, 1, 15, 0.75, 1,
     KPI_STATUS_FAILED, 0},
    /* cumulative */
    {"cumulative: amounts only before the window are no data", C_INC, 5, 2020, 3, 31, 0, 0, -1,
     2020, 6, 1, 0, 0.8, 0, 0, 0, 61.0 / 1825, KPI_STATUS_NO_DATA, 0},
    {"cumulative: first day of the window", C_INC, 10, 2020, 4, 1, 10, 0, -1, 2020, 4, 1, 0, 0.8,
     1, 10, 0.04, 0, KPI_STATUS_ON_TRACK, 0},
    {"cumulative: just on pace", C_INC, 1, 2022, 9, 1, 100, 0, -1, 2022, 9, 30, 0, 0.8, 1, 100,
     0.4, 912.0 / 1825, KPI_STATUS_ON_TRACK, 0},
    {"cumulative: behind", C_INC, 1, 2022, 9, 1, 90, 0, -1, 2022, 9, 30, 0, 0.8, 1, 90, 0.36,
     912.0 / 1825, KPI_STATUS_LAGGING, 0},
    {"cumulative: achieved early", C_INC, 1, 2022, 9, 1, 250, 0, -1, 2022, 9, 30, 0, 0.8, 1, 250,
     1, 912.0 / 1825, KPI_STATUS_ACHIEVED, 0},
    {"cumulative: one short after due", C_INC, 1, 2025, 3, 31, 249, 0, -1, 2025, 4, 1, 0, 0.8, 1,
     249, 0.996, 1, KPI_STATUS_FAILED, 0},
    {"cumulative: a report of zero is data", C_INC, 0, 2021, 5, 1, 0, 0, -1, 2021, 6, 1, 0, 0.8, 1,
     0, 0, 426.0 / 1825, KPI_STATUS_LAGGING, 0},
    {"cumulative dec: direction does not change p", C_DEC, 1, 2022, 9, 1, 40, 0, -1, 2022, 9, 30,
     0, 0.8, 1, 40, 0.4, 912.0 / 1825, KPI_STATUS_ON_TRACK, 0},
    /* maintain */
    {"maintain: kept before due is on track", M_INC, 97, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0, 0.8,
     1, 97, 1, 366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"maintain: kept at due is still on track", M_INC, 96, 2025, 3, 1, 0, 0, -1, 2025, 3, 31, 0,
     0.8, 1, 96, 1, 1, KPI_STATUS_ON_TRACK, 0},
    {"maintain: kept after due is achieved", M_INC, 96, 2025, 3, 1, 0, 0, -1, 2025, 4, 1, 0, 0.8,
     1, 96, 1, 1, KPI_STATUS_ACHIEVED, 0},
    {"maintain: below is lagging whatever the pace", M_INC, 90, 2023, 5, 1, 0, 0, -1, 2023, 5, 1,
     0, 0.8, 1, 90, 0.9375, 31.0 / 731, KPI_STATUS_LAGGING, 0},
    {"maintain: below after due is failed", M_INC, 90, 2025, 3, 1, 0, 0, -1, 2025, 4, 1, 0, 0.8, 1,
     90, 0.9375, 1, KPI_STATUS_FAILED, 0},
    {"maintain dec: at most the baseline", M_DEC, 4, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1,
     4, 1, 366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"maintain dec: zero meets it", M_DEC, 0, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1, 0, 1,
     366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"maintain dec: above is b/v", M_DEC, 8, 2024, 3, 1, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1, 8,
     0.625, 366.0 / 731, KPI_STATUS_LAGGING, 0},
    {"maintain dec: achieved after due", M_DEC, 5, 2025, 3, 1, 0, 0, -1, 2025, 4, 1, 0, 0.8, 1, 5,
     1, 1, KPI_STATUS_ACHIEVED, 0},
    /* milestone near the deadline: e reaches 0.75 after 822 of 1096 days */
    {"milestone: not done, e just under 0.75", MS_INC, 0, 2025, 5, 1, 0, 0, -1, 2023, 3, 31, 821,
     0.8, 1, 0, 0, 821.0 / 1096, KPI_STATUS_ON_TRACK, 0},
    {"milestone: not done, e == 0.75 is lagging", MS_INC, 0, 2025, 5, 1, 0, 0, -1, 2023, 3, 31,
     822, 0.8, 1, 0, 0, 0.75, KPI_STATUS_LAGGING, 0},
    {"milestone: done", MS_INC, 1, 2025, 5, 1, 0, 0, -1, 2025, 6, 1, 0, 0.8, 1, 1, 1,
     793.0 / 1096, KPI_STATUS_ACHIEVED, 0},
    {"milestone: not done at due", MS_INC, 0, 2025, 5, 1, 0, 0, -1, 2026, 3, 31, 0, 0.8, 1, 0, 0,
     1, KPI_STATUS_LAGGING, 0},
    {"milestone: not done after due", MS_INC, 0, 2025, 5, 1, 0, 0, -1, 2026, 4, 1, 0, 0.8, 1, 0, 0,
     1, KPI_STATUS_FAILED, 0},
    {"milestone dec: p is v", MS_DEC, 1, 2025, 5, 1, 0, 0, -1, 2025, 6, 1, 0, 0.8, 1, 1, 1,
     793.0 / 1096, KPI_STATUS_ACHIEVED, 0},
    /* seed measures, recomputed by hand. LED: start 2023-03-31, due 2025-03-31; at 2024-03-31
     * e = 366/731 (the leap day 2024-02-29 is inside), a reading of 20 is p = 7.6/23.3 =
     * 0.326 < 0.8 e = 0.4006: lagging. 22 would be 0.412: on track. */
    {"seed LED: 20 at 2024-03-31 lags", S_LED, 20, 2024, 3, 31, 0, 0, -1, 2024, 3, 31, 0, 0.8, 1,
     20, 7.6 / 23.3, 366.0 / 731, KPI_STATUS_LAGGING, 0},
    {"seed LED: 22 at 2024-03-31 on track", S_LED, 22, 2024, 3, 31, 0, 0, -1, 2024, 3, 31, 0, 0.8,
     1, 22, 9.6 / 23.3, 366.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"seed LED: 35.7 reached", S_LED, 35.7, 2024, 12, 1, 0, 0, -1, 2025, 1, 1, 0, 0.8, 1, 35.7, 1,
     642.0 / 731, KPI_STATUS_ACHIEVED, 0},
    /* zero-carbon plan: 0.75 * 731 = 548.25, so e = 548/731 < 0.75 on 2024-09-29 and
     * 549/731 >= 0.75 on 2024-09-30 */
    {"seed milestone: 2024-09-29 still on track", S_ZC, 0, 2024, 4, 1, 0, 0, -1, 2024, 9, 29, 0,
     0.8, 1, 0, 0, 548.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"seed milestone: 2024-09-30 lagging", S_ZC, 0, 2024, 4, 1, 0, 0, -1, 2024, 9, 30, 0, 0.8, 1,
     0, 0, 549.0 / 731, KPI_STATUS_LAGGING, 0},
    /* maternity grants: 250 over FY2020-FY2024, as of 2023-03-31 (1094 of 1825 days, so
     * 0.8 e = 0.47956): 120 is p = 0.48, on track; 119 is 0.476, lagging. */
    {"seed cumulative: 120 by 2023-03-31 on track", C_INC, 5, 2023, 3, 1, 120, 0, -1, 2023, 3, 31,
     0, 0.8, 1, 120, 0.48, 1094.0 / 1825, KPI_STATUS_ON_TRACK, 0},
    {"seed cumulative: 119 by 2023-03-31 lags", C_INC, 5, 2023, 3, 1, 119, 0, -1, 2023, 3, 31, 0,
     0.8, 1, 119, 0.476, 1094.0 / 1825, KPI_STATUS_LAGGING, 0},
    /* stale: older than report_interval_days + 90 */
    {"stale: 455 days is not stale", L_INC, 30, 2023, 6, 1, 0, 0, -1, 2023, 6, 1, 455, 0.8, 1, 30,
     6.0 / 26, 517.0 / 731, KPI_STATUS_LAGGING, 0},
    {"stale: 456 days is stale", L_INC, 30, 2023, 6, 1, 0, 0, -1, 2023, 6, 1, 456, 0.8, 1, 30,
     6.0 / 26, 518.0 / 731, KPI_STATUS_LAGGING, 1},
    {"stale: shorter interval", L_INT30, 40, 2023, 6, 1, 0, 0, -1, 2023, 6, 1, 121, 0.8, 1, 40,
     16.0 / 26, 183.0 / 731, KPI_STATUS_ON_TRACK, 1},
    {"stale: interval boundary", L_INT30, 40, 2023, 6, 1, 0, 0, -1, 2023, 6, 1, 120, 0.8, 1, 40,
     16.0 / 26, 182.0 / 731, KPI_STATUS_ON_TRACK, 0},
    {"stale: an achieved measure needs no more reports", L_INC, 50, 2023, 6, 1, 0, 0, -1, 2025, 3,
     31, 0, 0.8, 1, 50, 1, 1, KPI_STATUS_ACHIEVED, 0},
    {"stale: never reported counts from start", C_INC, 0, 0, 0, 0, 0, 0, -1, 2020, 4, 1, 456, 0.8,
     0, 0, 0, 456.0 / 1825, KPI_STATUS_NO_DATA, 1},
    {"stale: never reported, 455 days", C_INC, 0, 0, 0, 0, 0, 0, -1, 2020, 4, 1, 455, 0.8, 0, 0, 0,
     455.0 / 1825, KPI_STATUS_NO_DATA, 0},
};

static void test_eval_table(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(eval_cases); i++) {
    const eval_case *c = &eval_cases[i];
    kpi_measure m = make(c->measure);
    kpi_aggregate agg;
    memset(&agg, 0, sizeof(agg));
    if (c->ly) {
      agg.has_latest = true;
      agg.latest = c->latest;
      agg.latest_day = ymd(c->ly, c->lm, c->ld);
    }
    agg.window_sum = c->sum;
    if (c->den >= 0) {
      agg.has_ratio = true;
      agg.ratio_num = c->num;
      agg.ratio_den = c->den;
    }
    kpi_day as_of = ymd(c->ay, c->am, c->ad) + c->plus;
    kpi_attainment a;
    kpi_attainment_eval(&m, &agg, as_of, c->lag, &a);
    char msg[256];
    snprintf(msg, sizeof(msg), "case %zu (%s): has=%d v=%.6f p=%.6f e=%.6f status=%s stale=%d", i,
             c->what, a.has_value, a.value, a.progress, a.expected, kpi_status_name(a.status),
             a.stale);
    if (a.has_value != (c->has == 1) || a.status != c->status || a.stale != (c->stale == 1) ||
        fabs(a.expected - c->e) > 1e-12 ||
        (c->has == 1 && (fabs(a.value - c->v) > 1e-9 || fabs(a.progress - c->p) > 1e-9)) ||
        a.has_progress != a.has_value) {
      fail_msg("%s; expected has=%d v=%.6f p=%.6f e=%.6f status=%s stale=%d", msg, c->has, c->v,
               c->p, c->e, kpi_status_name(c->status), c->stale);
    }
  }
}

static void test_fiscal_bounds(void **state) {
  (void)state;
  kpi_measure l = make(L_INC), c = make(C_INC), ms = make(MS_INC);
  assert_int_equal(kpi_attainment_start(&l), ymd(2023, 3, 31));
  assert_int_equal(kpi_attainment_due(&l), ymd(2025, 3, 31));
  assert_int_equal(kpi_attainment_data_from(&l), ymd(2023, 4, 1));
  assert_int_equal(kpi_attainment_start(&c), ymd(2020, 4, 1));
  assert_int_equal(kpi_attainment_due(&c), ymd(2025, 3, 31));
  assert_int_equal(kpi_attainment_data_from(&c), ymd(2020, 4, 1));
  assert_int_equal(kpi_attainment_due(&ms), ymd(2026, 3, 31));
  /* observed_at across the FY boundary in Japan time: 2024-03-31T14:59:59Z is 23:59:59 JST on
   * 31 March (FY2023), 15:00:00Z is 1 April 00:00 JST (FY2024). */
  kpi_day d1 = 0, d2 = 0;
  assert_int_equal(kpi_time_parse("2024-03-31T14:59:59Z", NULL, &d1), 0);
  assert_int_equal(kpi_time_parse("2024-03-31T15:00:00Z", NULL, &d2), 0);
  assert_int_equal(kpi_fy_of_day(d1), 2023);
  assert_int_equal(kpi_fy_of_day(d2), 2024);
  assert_int_equal(kpi_time_parse("2024-04-01T00:00:00+09:00", NULL, &d2), 0);
  assert_int_equal(kpi_fy_of_day(d2), 2024);
  /* The leap day of 2024 falls inside FY2023: the 731 days of FY2023-FY2024. */
  assert_int_equal(kpi_attainment_due(&l) - kpi_attainment_start(&l), 731);
}

static void test_window(void **state) {
  (void)state;
  kpi_measure c = make(C_INC), l = make(L_INC);
  static const struct {
    int y, m, d;
    int ok;
    int fy, fm, fd, ty, tm, td;
  } cases[] = {
      {2020, 3, 31, 0, 0, 0, 0, 0, 0, 0},                 /* window not begun */
      {2020, 4, 1, 1, 2020, 4, 1, 2020, 4, 1},            /* its first day */
      {2022, 9, 30, 1, 2020, 4, 1, 2022, 9, 30},          /* cut at as_of */
      {2025, 3, 31, 1, 2020, 4, 1, 2025, 3, 31},          /* due */
      {2026, 1, 1, 1, 2020, 4, 1, 2025, 3, 31},           /* amounts of FY2025 do not count */
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    kpi_day from = -7, to = -7;
    bool ok = kpi_attainment_window(&c, ymd(cases[i].y, cases[i].m, cases[i].d), &from, &to);
    assert_int_equal(ok, cases[i].ok);
    if (!ok) {
      assert_int_equal(from, -7);
      continue;
    }
    assert_int_equal(from, ymd(cases[i].fy, cases[i].fm, cases[i].fd));
    assert_int_equal(to, ymd(cases[i].ty, cases[i].tm, cases[i].td));
  }
  kpi_day from, to;
  assert_false(kpi_attainment_window(&l, ymd(2024, 1, 1), &from, &to));
}

static void test_status_names(void **state) {
  (void)state;
  for (int s = KPI_STATUS_NO_DATA; s <= KPI_STATUS_FAILED; s++) {
    kpi_status back;
    assert_int_equal(kpi_status_parse(kpi_status_name((kpi_status)s), &back), 0);
    assert_int_equal(back, s);
  }
  kpi_status x;
  assert_int_equal(kpi_status_parse("stale", &x), -1);
  assert_int_equal(kpi_status_parse(NULL, &x), -1);
}

/* Alert episodes: a sequence of evaluations of one measure, each with the expected action. */
typedef struct {
  kpi_status status;
  int stale;
  int y, m, d;
  kpi_alert_action action;
  const char *name;
} alert_step;

static void test_alert_sequence(void **state) {
  (void)state;
  static const alert_step steps[] = {
      {KPI_STATUS_NO_DATA, 0, 2024, 1, 1, KPI_ALERT_NONE, ""},
      {KPI_STATUS_ON_TRACK, 0, 2024, 1, 2, KPI_ALERT_NONE, ""},
      {KPI_STATUS_LAGGING, 0, 2024, 1, 3, KPI_ALERT_RAISE, "m/lagging/1"},
      {KPI_STATUS_LAGGING, 0, 2024, 1, 3, KPI_ALERT_NONE, ""}, /* replayed evaluation */
      {KPI_STATUS_LAGGING, 1, 2024, 1, 9, KPI_ALERT_NONE, ""}, /* 6 days; stale is inside */
      {KPI_STATUS_LAGGING, 0, 2024, 1, 10, KPI_ALERT_REMIND, "m/lagging/1/reminder-1"},
      {KPI_STATUS_LAGGING, 0, 2024, 1, 16, KPI_ALERT_NONE, ""},
      {KPI_STATUS_LAGGING, 0, 2024, 1, 17, KPI_ALERT_REMIND, "m/lagging/1/reminder-2"},
      {KPI_STATUS_LAGGING, 0, 2024, 1, 1, KPI_ALERT_NONE, ""}, /* clock set back */
      {KPI_STATUS_FAILED, 0, 2024, 1, 18, KPI_ALERT_RAISE, "m/failed/2"},
      {KPI_STATUS_ACHIEVED, 0, 2024, 1, 19, KPI_ALERT_RESOLVE, "m/resolved/2"},
      {KPI_STATUS_ACHIEVED, 0, 2024, 2, 19, KPI_ALERT_NONE, ""},
      {KPI_STATUS_ON_TRACK, 1, 2024, 3, 1, KPI_ALERT_RAISE, "m/stale/3"},
      {KPI_STATUS_LAGGING, 1, 2024, 3, 2, KPI_ALERT_RAISE, "m/lagging/4"},
      {KPI_STATUS_ON_TRACK, 1, 2024, 3, 3, KPI_ALERT_RAISE, "m/stale/5"},
      {KPI_STATUS_ON_TRACK, 0, 2024, 3, 4, KPI_ALERT_RESOLVE, "m/resolved/5"},
  };
  kpi_alert_track track;
  memset(&track, 0, sizeof(track));
  for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
    kpi_attainment a;
    memset(&a, 0, sizeof(a));
    a.status = steps[i].status;
    a.stale = steps[i].stale;
    kpi_alert_track next;
    char name[128];
    kpi_alert_action act = kpi_alert_decide("m", &track, &a, ymd(steps[i].y, steps[i].m, steps[i].d),
                                            KPI_REPEAT_DAYS_DEFAULT, &next, name, sizeof(name));
    if (act != steps[i].action || strcmp(name, steps[i].name) != 0)
      fail_msg("step %zu: got %s \"%s\", expected %s \"%s\"", i, kpi_alert_action_type(act), name,
               kpi_alert_action_type(steps[i].action), steps[i].name);
    track = next;
  }
  assert_string_equal(track.state, "");
  assert_int_equal(track.episode, 5);
}

static void test_alert_id(void **state) {
  (void)state;
  char a[KPI_UUID_STRLEN + 1], b[KPI_UUID_STRLEN + 1], c[KPI_UUID_STRLEN + 1];
  kpi_alert_id("m/lagging/1", a);
  kpi_alert_id("m/lagging/1", b);
  kpi_alert_id("m/lagging/2", c);
  assert_string_equal(a, b);
  assert_string_not_equal(a, c);
  assert_int_equal(strlen(a), KPI_UUID_STRLEN);
  assert_int_equal(a[14], '5'); /* version 5 */
  assert_int_equal(kpi_uuid_parse(a, NULL), 0);
}

/* kpi_ack_quiets: states x acknowledgement x dates (docs/corrections.md "Reminders and
 * acknowledgements"). The acknowledgement was written while lagging (not stale), until
 * 2025-01-31. */
static void test_ack_quiets_table(void **state) {
  (void)state;
  enum { LAG = KPI_STATUS_LAGGING, FAIL = KPI_STATUS_FAILED, OK = KPI_STATUS_ON_TRACK,
         ND = KPI_STATUS_NO_DATA };
  static const struct {
    const char *what;
    bool present, has_status;
    int ack_status;
    bool ack_stale, changed_since;
    int now_status;
    bool now_stale;
    int y, m, d;
    bool quiet;
  } rows[] = {
      {"same state, inside the period", true, true, LAG, false, false, LAG, false, 2024, 12, 8, true},
      {"same state, on until", true, true, LAG, false, false, LAG, false, 2025, 1, 31, true},
      {"same state, the day after until", true, true, LAG, false, false, LAG, false, 2025, 2, 1, false},
      {"no acknowledgement", false, true, LAG, false, false, LAG, false, 2024, 12, 8, false},
      {"worse: lagging -> failed", true, true, LAG, false, false, FAIL, false, 2024, 12, 8, false},
      {"worse: stale added", true, true, LAG, false, false, LAG, true, 2024, 12, 8, false},
      {"better: stale gone (a transition)", true, true, LAG, true, false, LAG, false, 2024, 12, 8, false},
      {"better: failed -> lagging (a transition)", true, true, FAIL, false, false, LAG, false, 2024, 12, 8, false},
      {"stale on track, unchanged", true, true, OK, true, false, OK, true, 2024, 12, 8, true},
      {"stale, status moved (no_data)", true, true, OK, true, false, ND, true, 2024, 12, 8, false},
      {"a transition since, back to the same state", true, true, LAG, false, true, LAG, false, 2024, 12, 8, false},
      {"written before any attainment", true, false, ND, false, false, LAG, false, 2024, 12, 8, false},
      {"failed acknowledged, still failed", true, true, FAIL, false, false, FAIL, false, 2025, 1, 1, true},
  };
  for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
    kpi_ack_hold ack = {.present = rows[i].present, .until = ymd(2025, 1, 31),
                        .has_status = rows[i].has_status, .status = (kpi_status)rows[i].ack_status,
                        .stale = rows[i].ack_stale, .changed_since = rows[i].changed_since};
    kpi_attainment now;
    memset(&now, 0, sizeof(now));
    now.status = (kpi_status)rows[i].now_status;
    now.stale = rows[i].now_stale;
    bool got = kpi_ack_quiets(&ack, &now, ymd(rows[i].y, rows[i].m, rows[i].d));
    if (got != rows[i].quiet) fail_msg("%s: quiet %d, expected %d", rows[i].what, got, rows[i].quiet);
  }
  kpi_attainment now = {.status = KPI_STATUS_LAGGING};
  assert_false(kpi_ack_quiets(NULL, &now, ymd(2024, 12, 8)));
}

/* kpi_alert_apply_ack over a lagging episode with weekly reminders: quiet reminders leave the
 * bookkeeping alone, the day after until the next reminder (numbered after the last one sent)
 * is due at once, and a move to failed raises at once. */
static void test_ack_reminders(void **state) {
  (void)state;
  kpi_ack_hold ack = {.present = true, .until = ymd(2024, 12, 31), .has_status = true,
                      .status = KPI_STATUS_LAGGING};
  kpi_alert_track track = {.state = "lagging", .episode = 1, .reminders = 1, .has_last_alert = true,
                           .last_alert_on = ymd(2024, 11, 27)};
  static const struct {
    int m, d;
    kpi_status status;
    kpi_alert_action action;
    const char *name;
  } steps[] = {
      {12, 4, KPI_STATUS_LAGGING, KPI_ALERT_NONE, ""},   /* due, quiet */
      {12, 11, KPI_STATUS_LAGGING, KPI_ALERT_NONE, ""},  /* due, quiet */
      {12, 31, KPI_STATUS_LAGGING, KPI_ALERT_NONE, ""},  /* until: still quiet */
      {1, 1, KPI_STATUS_LAGGING, KPI_ALERT_REMIND, "m/lagging/1/reminder-2"},
      {1, 2, KPI_STATUS_LAGGING, KPI_ALERT_NONE, ""},    /* the weekly pace again */
      {1, 8, KPI_STATUS_LAGGING, KPI_ALERT_REMIND, "m/lagging/1/reminder-3"},
  };
  for (size_t i = 0; i < ARRAY_LEN(steps); i++) {
    kpi_attainment a = {.status = steps[i].status};
    kpi_day day = ymd(steps[i].m == 12 ? 2024 : 2025, steps[i].m, steps[i].d);
    kpi_alert_track next;
    char name[64];
    kpi_alert_action act = kpi_alert_decide("m", &track, &a, day, 7, &next, name, sizeof(name));
    act = kpi_alert_apply_ack(act, &ack, &a, day, &track, &next, name, sizeof(name));
    if (act != steps[i].action || strcmp(name, steps[i].name) != 0)
      fail_msg("step %zu: got %s \"%s\"", i, kpi_alert_action_type(act), name);
    if (act == KPI_ALERT_NONE && steps[i].m == 12) assert_int_equal(next.reminders, 1);
    track = next;
  }
  /* During the period, a move to failed is a new episode at once. */
  kpi_alert_track lag = {.state = "lagging", .episode = 1, .has_last_alert = true,
                         .last_alert_on = ymd(2024, 11, 27)};
  kpi_attainment failed = {.status = KPI_STATUS_FAILED};
  kpi_alert_track next;
  char name[64];
  kpi_alert_action act =
      kpi_alert_decide("m", &lag, &failed, ymd(2024, 12, 10), 7, &next, name, sizeof(name));
  act = kpi_alert_apply_ack(act, &ack, &failed, ymd(2024, 12, 10), &lag, &next, name, sizeof(name));
  assert_int_equal(act, KPI_ALERT_RAISE);
  assert_string_equal(name, "m/failed/2");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_eval_table),   cmocka_unit_test(test_fiscal_bounds),
      cmocka_unit_test(test_window),       cmocka_unit_test(test_status_names),
      cmocka_unit_test(test_alert_sequence), cmocka_unit_test(test_alert_id),
      cmocka_unit_test(test_ack_quiets_table), cmocka_unit_test(test_ack_reminders),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
