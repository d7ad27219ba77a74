/* report_labels.h: the words of the report pages in Japanese and English, one table. */
#ifndef REPORT_LABELS_H
#define REPORT_LABELS_H

#include "report_format.h"
#include "report_tmpl.h"

/* Sets every label (l_*, h_*) of LANG on view V, for the templates to use anywhere. */
void report_labels_set(report_view *v, report_lang lang);

/* One label by key, or "" (for text composed in C, such as the chart's legend). */
const char *report_label(const char *key, report_lang lang);

#endif
