/* report_tmpl.h: the report's one template renderer: {{name}} escaped by default, {{{name}}}
 * raw for markup the server made itself (the SVG chart), {{#list}}…{{/list}} sections. */
#ifndef REPORT_TMPL_H
#define REPORT_TMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "kpi_buf.h"

/* A view is a set of named values a template reads: text (escaped when rendered), raw markup,
 * a flag, or a list of child views. Every view and string belongs to the root view's arena
 * and is freed with it, so handlers build a page without tracking single allocations.
 * Lookups that miss in a child view continue in the view it was added to, so labels set once
 * on the root are visible inside every section.
 *
 * Setters never report failure one by one: out of memory marks the root, and report_render then
 * fails (the kpi_buf pattern). Setting a name twice keeps the last value. */
typedef struct report_view report_view;

/* A new root view, or NULL when out of memory. */
report_view *report_view_new(void);
/* Frees ROOT and everything set or added under it. NULL is allowed. Only for roots. */
void report_view_free(report_view *root);

/* Text: copied, escaped for HTML (& < > " ') when rendered. TEXT NULL sets "". */
void report_set(report_view *v, const char *name, const char *text);
void report_setf(report_view *v, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Markup the server produced itself (never data from the database or the catalog unescaped):
 * copied, written as is by {{{name}}}; {{name}} would still escape it. */
void report_set_raw(report_view *v, const char *name, const char *markup);
void report_set_bool(report_view *v, const char *name, bool on);
/* Declares NAME as a list (possibly empty) without adding an item. */
void report_set_list(report_view *v, const char *name);
/* Appends a new item to the list NAME of V (created on first use) and returns it; NULL only
 * when out of memory (the root is then marked). */
report_view *report_add(report_view *v, const char *name);

/* Renders TMPL (LEN bytes) against V, appending to OUT.
 *   {{name}}      the text, HTML-escaped (a flag or a list there is an error)
 *   {{{name}}}    markup set with report_set_raw, as is; text set with report_set is escaped even
 *                 here, so a template cannot unescape data by mistake
 *   {{#name}}…{{/name}}  once per item of a list (the item as the view), once when a flag is
 *                 true or a text is non-empty, never otherwise
 *   {{^name}}…{{/name}}  once when the list is empty, the flag false or the text empty
 *   {{! comment }}
 * Returns 0; -1 on a syntax error or a name that is set nowhere (a typo in a template is a
 * bug to see in tests, not a silent blank), writing the reason to ERR; -2 when out of memory
 * (also when the view ran out earlier). OUT then holds a partial page: discard it. */
int report_render(const char *tmpl, size_t len, const report_view *v, kpi_buf *out, char *err,
                  size_t err_size);

/* Appends S HTML-escaped to OUT: the one escaping function, also used by the chart. */
void report_escape(kpi_buf *out, const char *s, size_t n);

#endif
