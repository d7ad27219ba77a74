/* test_report_tmpl.c: the report's template renderer: escaping by default, raw only for markup
 * set as such, sections over lists, flags and text, inverted sections, and every template
 * error (unknown name, unclosed tag or section) reported instead of rendered as a blank. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "report_assets.h"
#include "report_tmpl.h"

/* Renders T against V; returns the rc and leaves the text in OUT (caller frees). */
static int render(const char *t, report_view *v, kpi_buf *out) {
  char err[128];
  kpi_buf_reset(out);
  return report_render(t, strlen(t), v, out, err, sizeof(err));
}

static void test_escapes_by_default(void **state) {
  (void)state;
  report_view *v = report_view_new();
  kpi_buf out = KPI_BUF_INIT;
  report_set(v, "note", "<script>alert(\"x\")</script> & 'q'");
  assert_int_equal(render("<td>{{note}}</td>", v, &out), 0);
  assert_string_equal(kpi_buf_str(&out),
                      "<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;q&#39;</td>");
  /* Triple braces do not unescape text: only report_set_raw values pass through. */
  assert_int_equal(render("{{{note}}}", v, &out), 0);
  assert_null(strstr(kpi_buf_str(&out), "<script>"));
  report_set_raw(v, "svg", "<svg><title>a</title></svg>");
  assert_int_equal(render("{{{svg}}}|{{svg}}", v, &out), 0);
  assert_string_equal(kpi_buf_str(&out),
                      "<svg><title>a</title></svg>|&lt;svg&gt;&lt;title&gt;a&lt;/title&gt;&lt;/svg&gt;");
  /* Attribute values are escaped the same way, so a quote cannot end the attribute. */
  report_set(v, "href", "/x?a=1&b=\"><img>");
  assert_int_equal(render("<a href=\"{{href}}\">", v, &out), 0);
  assert_string_equal(kpi_buf_str(&out), "<a href=\"/x?a=1&amp;b=&quot;&gt;&lt;img&gt;\">");
  kpi_buf_free(&out);
  report_view_free(v);
}

static void test_sections(void **state) {
  (void)state;
  report_view *v = report_view_new();
  kpi_buf out = KPI_BUF_INIT;
  report_set(v, "label", "L");
  report_set_list(v, "rows");
  report_set_bool(v, "on", true);
  report_set_bool(v, "off", false);
  report_set(v, "empty", "");
  assert_int_equal(render("[{{#rows}}x{{/rows}}][{{^rows}}none{{/rows}}]", v, &out), 0);
  assert_string_equal(kpi_buf_str(&out), "[][none]");
  for (int i = 0; i < 3; i++) {
    report_view *r = report_add(v, "rows");
    report_setf(r, "n", "%d", i);
    if (i == 1) report_set(r, "label", "own");
  }
  /* Items see their own values first, then the view they were added to. */
  assert_int_equal(render("{{#rows}}<{{n}}{{label}}>{{/rows}}", v, &out), 0);
  assert_string_equal(kpi_buf_str(&out), "<0L><1own><2L>");
  assert_int_equal(render("{{#on}}a{{/on}}{{#off}}b{{/off}}{{^off}}c{{/off}}{{#empty}}d{{/empty}}"
                          "{{#label}}e{{/label}}{{! a comment }}",
                          v, &out),
                   0);
  assert_string_equal(kpi_buf_str(&out), "ace");
  /* Nested sections of the same name close at the right tag. The second item has no list of
   * its own, so its inner section finds the outer list (two items): lookups climb. */
  report_view *r0 = report_add(v, "outer");
  report_add(r0, "outer");
  report_add(v, "outer");
  assert_int_equal(render("{{#outer}}({{#outer}}i{{/outer}}){{/outer}}", v, &out), 0);
  assert_string_equal(kpi_buf_str(&out), "(i)(ii)");
  kpi_buf_free(&out);
  report_view_free(v);
}

static void test_errors(void **state) {
  (void)state;
  report_view *v = report_view_new();
  kpi_buf out = KPI_BUF_INIT;
  report_set(v, "a", "1");
  report_set_list(v, "l");
  static const char *const bad[] = {"{{nope}}", "{{a",     "{{#a}}x",  "x{{/a}}",
                                    "{{{a}}",   "{{l}}",   "{{#nope}}{{/nope}}"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char err[128] = "";
    kpi_buf_reset(&out);
    assert_int_equal(report_render(bad[i], strlen(bad[i]), v, &out, err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
  }
  kpi_buf_free(&out);
  report_view_free(v);
}

/* Many values and items: the arena grows past its first block and the strings stay intact. */
static void test_many_values(void **state) {
  (void)state;
  report_view *v = report_view_new();
  kpi_buf out = KPI_BUF_INIT;
  for (int i = 0; i < 5000; i++) {
    report_view *r = report_add(v, "rows");
    report_setf(r, "x", "%d", i);
  }
  assert_int_equal(render("{{#rows}}{{x}},{{/rows}}", v, &out), 0);
  assert_int_equal(strncmp(kpi_buf_str(&out), "0,1,2,", 6), 0);
  assert_non_null(strstr(kpi_buf_str(&out), ",4999,"));
  kpi_buf_free(&out);
  report_view_free(v);
}

/* The embedded templates: present, and free of inline script and style (the CSP forbids
 * them, so they would only break). */
static void test_embedded_templates(void **state) {
  (void)state;
  static const char *const names[] = {"layout.html", "index.html", "measure.html", "error.html",
                                      "report.css"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    const report_asset *a = report_asset_find(names[i]);
    assert_non_null(a);
    assert_int_equal(strlen(a->data), a->len);
    assert_null(strstr(a->data, "<script"));
    assert_null(strstr(a->data, "style="));
    assert_null(strstr(a->data, "<style"));
  }
  assert_null(report_asset_find("nope.html"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escapes_by_default), cmocka_unit_test(test_sections),
      cmocka_unit_test(test_errors),             cmocka_unit_test(test_many_values),
      cmocka_unit_test(test_embedded_templates),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
