/* report_format.h: how the report writes fiscal years, numbers, statuses and grades, in
 * Japanese (the plan's own forms) or English. Pure functions, table-tested. */
#ifndef REPORT_FORMAT_H
#define REPORT_FORMAT_H

#include <stddef.h>

#include "kpi_attainment.h"
#include "kpi_catalog.h"

typedef enum { REPORT_LANG_JA = 0, REPORT_LANG_EN } report_lang;

/* The short era form the plan prints beside its columns: "R4", "R元" (FY2019), "H30", and
 * "FY1985" before Heisei. Writes at most SIZE bytes like snprintf; 16 bytes suffice. */
int report_era_short(int fy, char *buf, size_t size);

/* A number as people read it in the plan: at most two decimals, trailing zeros dropped
 * ("12.4", "50", "0.33", "-1.5"); non-finite values as "—". */
void report_num(double v, char *buf, size_t size);

/* V with the measure's unit the way the plan writes it: "24名", "12.4%", "3校", a milestone
 * as "策定済み"/"未策定" ("done"/"not yet" in English). 64 bytes suffice. */
void report_value(const kpi_measure *m, double v, report_lang lang, char *buf, size_t size);

/* The status in words ("順調", "On track") and as a symbol (◎ ○ △ ✕ －), so that a page never
 * tells it by colour alone. */
const char *report_status_word(kpi_status s, report_lang lang);
const char *report_status_symbol(kpi_status s);

/* The evaluation grade (評価) of an attainment, from its progress p as municipal KPI reviews
 * grade it: 'A' p >= 1 (target reached), 'B' p >= 0.5, 'C' p > 0 (some progress), 'D' no
 * progress or worse; '-' without a value. For a maintain measure p is 1 while the baseline
 * holds, so it is A or, below, graded by how close it stays. */
char report_grade(const kpi_attainment *a);
/* What the grade means, for the legend and the CSV's readers. */
const char *report_grade_meaning(char grade, report_lang lang);

#endif
