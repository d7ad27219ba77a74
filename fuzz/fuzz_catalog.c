/* fuzz_catalog.c: libFuzzer target for the catalog loader: bytes -> kpi_catalog_parse. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "kpi_catalog.h"


/* What the services rely on after a successful load (kpi_catalog.h): ids unique and
 * non-empty, measures sorted for bsearch, every owner resolved, every string present. */
static void check_catalog(const kpi_catalog *cat) {
  CHECK(cat->plan_id && cat->plan_name, "plan strings");
  CHECK(cat->n_departments > 0 && cat->n_measures > 0, "empty catalog");
  for (size_t i = 0; i < cat->n_departments; i++) {
    const kpi_department *d = &cat->departments[i];
    CHECK(d->id && d->id[0] && d->name, "department %zu strings", i);
    CHECK(kpi_catalog_department(cat, d->id) == d, "department %zu not unique", i);
    CHECK(d->n_mailboxes > 0, "department %zu mailboxes", i);
    for (size_t k = 0; k < d->n_mailboxes; k++) CHECK(strchr(d->mailboxes[k], '@'), "mailbox");
  }
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    CHECK(m->id && m->program && m->name && m->indicator && m->unit && m->owner,
          "measure %zu strings", i);
    if (i > 0) CHECK(strcmp(cat->measures[i - 1].id, m->id) < 0, "measures not sorted");
    CHECK(kpi_catalog_measure(cat, m->id) == m, "bsearch misses measure %zu", i);
    CHECK(m->owner_dept && strcmp(m->owner_dept->id, m->owner) == 0, "owner of %zu", i);
    CHECK(m->baseline_fy >= 1900 && m->target_fy <= 2200 && m->baseline_fy <= m->target_fy,
          "fiscal years of %zu", i);
    CHECK(m->report_interval_days >= 1 && m->report_interval_days <= 3660, "interval");
    CHECK(strcmp(kpi_kind_name(m->kind), "unknown") != 0, "kind");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  memset(err, 0x55, sizeof err); /* a failure must overwrite it with a terminated message */
  kpi_catalog *cat = kpi_catalog_parse((const char *)data, size, err, sizeof err);
  if (!cat) {
    CHECK(memchr(err, 0, sizeof err) && err[0], "failure without a message");
    return 0;
  }
  check_catalog(cat);
  /* Look-ups with bytes of the input as keys and as a token. */
  char key[65];
  size_t n = size < sizeof key - 1 ? size : sizeof key - 1;
  memcpy(key, data, n);
  key[n] = '\0';
  (void)kpi_catalog_measure(cat, key);
  (void)kpi_catalog_department(cat, key);
  const kpi_department *d = kpi_catalog_authenticate(cat, (const char *)data, size);
  CHECK(!d || d->has_token, "authenticated a department without a token");
  kpi_catalog_free(cat);
  return 0;
}
