/* report_format.c: fiscal years in era form, numbers, units, status words and grades. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "report_format.h"

int report_era_short(int fy, char *buf, size_t size) {
  if (fy >= 2019) {
    if (fy == 2019) return snprintf(buf, size, "R元");
    return snprintf(buf, size, "R%d", fy - 2018);
  }
  if (fy >= 1989) {
    if (fy == 1989) return snprintf(buf, size, "H元");
    return snprintf(buf, size, "H%d", fy - 1988);
  }
  return snprintf(buf, size, "FY%d", fy);
}

void report_num(double v, char *buf, size_t size) {
  if (!isfinite(v)) {
    snprintf(buf, size, "—");
    return;
  }
  double r = round(v * 100) / 100;
  if (r == 0) r = 0; /* no "-0" */
  snprintf(buf, size, "%.2f", r);
  char *dot = strchr(buf, '.');
  if (!dot) return;
  char *end = buf + strlen(buf);
  while (end > dot && (end[-1] == '0')) *--end = '\0';
  if (end == dot + 1) dot[0] = '\0';
}

typedef struct {
  const char *unit, *ja, *en;
} unit_words;

/* Counters the plan writes after its numbers; the English page writes the unit's name. */
static const unit_words units[] = {
    {"person", "名", " people"}, {"case", "件", " cases"},     {"school", "校", " schools"},
    {"facility", "施設", " facilities"}, {"percent", "%", "%"},
};

void report_value(const kpi_measure *m, double v, report_lang lang, char *buf, size_t size) {
  if (m->kind == KPI_KIND_MILESTONE) {
    bool done = v >= 1 - KPI_ATTAINMENT_EPS;
    snprintf(buf, size, "%s",
             lang == REPORT_LANG_EN ? (done ? "done" : "not yet") : (done ? "策定済み" : "未策定"));
    return;
  }
  char num[48];
  report_num(v, num, sizeof(num));
  const char *suffix = "";
  for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
    if (strcmp(m->unit, units[i].unit) == 0)
      suffix = lang == REPORT_LANG_EN ? units[i].en : units[i].ja;
  snprintf(buf, size, "%s%s", num, suffix);
}

const char *report_status_word(kpi_status s, report_lang lang) {
  static const char *const ja[] = {"未報告", "順調", "遅れ", "達成", "未達成"};
  static const char *const en[] = {"No data", "On track", "Lagging", "Achieved", "Not achieved"};
  if ((unsigned)s > KPI_STATUS_FAILED) return "";
  return lang == REPORT_LANG_EN ? en[s] : ja[s];
}

const char *report_status_symbol(kpi_status s) {
  static const char *const sym[] = {"－", "○", "△", "◎", "✕"};
  return (unsigned)s > KPI_STATUS_FAILED ? "" : sym[s];
}

char report_grade(const kpi_attainment *a) {
  if (!a->has_progress) return '-';
  double p = a->progress;
  if (p >= 1 - KPI_ATTAINMENT_EPS) return 'A';
  if (p >= 0.5 - KPI_ATTAINMENT_EPS) return 'B';
  if (p > KPI_ATTAINMENT_EPS) return 'C';
  return 'D';
}

const char *report_grade_meaning(char grade, report_lang lang) {
  bool en = lang == REPORT_LANG_EN;
  switch (grade) {
  case 'A': return en ? "target reached" : "目標を達成";
  case 'B': return en ? "half of the way or more" : "目標に向け進捗率50%以上";
  case 'C': return en ? "some progress" : "基準値から改善";
  case 'D': return en ? "no progress from the baseline" : "基準値から改善なし";
  default: return en ? "not reported" : "実績なし";
  }
}
