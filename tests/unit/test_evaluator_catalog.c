/* test_evaluator_catalog.c: ev_catalog_note, which catalog change the next alert about a
 * measure states and which version the attainment then records as stated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "evaluator.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void test_note(void **state) {
  (void)state;
  kpi_measure m;
  memset(&m, 0, sizeof(m));
  m.baseline_fy = 2022;
  m.baseline = 24;
  m.target_fy = 2024;
  m.target = 90;
  const ev_figures same = {2022, 24, 2024, 90};
  const ev_figures old_target = {2022, 24, 2024, 80};
  const ev_figures old_all = {2021, 20, 2023, 80};
  static const struct {
    const char *what;
    int version;
    bool has_version;
    int noted;
    bool has_figures;
    int fig; /* 0 same, 1 old target, 2 everything old */
    bool alerting;
    int want_next;
    size_t want_changes; /* 0: no note */
  } cases[] = {
      {"never noted (new measure, or before the migration)", 2, false, 0, false, 1, true, 2, 0},
      {"noted version without figures", 2, true, 1, false, 1, true, 2, 0},
      {"same version", 2, true, 2, true, 0, true, 2, 0},
      {"newer version, same figures (a name changed)", 3, true, 2, true, 0, true, 3, 0},
      {"newer version, same figures, no alert", 3, true, 2, true, 0, false, 3, 0},
      {"target changed, alert: stated now", 2, true, 1, true, 1, true, 2, 1},
      {"target changed, no alert: waits", 2, true, 1, true, 1, false, 1, 0},
      {"everything changed", 5, true, 1, true, 2, true, 5, 4},
      {"older replica: neither backwards nor forgotten", 1, true, 2, true, 1, true, 2, 0},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    ev_noted n;
    memset(&n, 0, sizeof(n));
    n.has_version = cases[i].has_version;
    n.version = cases[i].noted;
    n.has_figures = cases[i].has_figures;
    n.figures = cases[i].fig == 0 ? same : cases[i].fig == 1 ? old_target : old_all;
    kpi_catalog_change c;
    int next = ev_catalog_note(&m, cases[i].version, &n, cases[i].alerting, &c);
    if (next != cases[i].want_next)
      fail_msg("%s: next %d, want %d", cases[i].what, next, cases[i].want_next);
    if (c.present != (cases[i].want_changes > 0) || c.n_changes != cases[i].want_changes)
      fail_msg("%s: %zu changes, want %zu", cases[i].what, c.n_changes, cases[i].want_changes);
    if (!c.present) continue;
    assert_int_equal(c.version, cases[i].version);
    assert_int_equal(c.previous_version, cases[i].noted);
    assert_string_equal(c.changes[0].field, "target");
    assert_true(c.changes[0].from == 80 && c.changes[0].to == 90);
    for (size_t k = 0; k < c.n_changes; k++) assert_true(kpi_catalog_change_field_known(c.changes[k].field));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_note)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
