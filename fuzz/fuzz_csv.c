/* fuzz_csv.c: libFuzzer target for ingest's CSV uploads (services/ingest/ingest_csv.c): any
 * bytes in either charset give a known status, rows in increasing spreadsheet order, each row
 * either an object of known columns or one error, and never more than MAX_ROWS + 1 rows. The
 * first input byte picks the charset (odd: CP932) and the row bound. */
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_check.h"
#include "ingest_csv.h"

static int known_column(const char *s) {
  static const char *const names[] = {"measure_id", "observed_at", "value", "unit",
                                      "component",  "note",        "event_id"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (strcmp(s, names[i]) == 0) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  ingest_charset cs = (data[0] & 1) ? INGEST_CHARSET_CP932 : INGEST_CHARSET_UTF8;
  size_t max_rows = 1 + (data[0] >> 1) % 16;
  ingest_csv out;
  kpi_errors errs = {.n = 0};
  char detail[160];
  int st = ingest_csv_parse((const char *)data + 1, size - 1, cs, max_rows, &out, &errs, detail,
                            sizeof(detail));
  CHECK(st == 0 || st == 400 || st == 422 || st == 500, "status %d", st);
  if (st) {
    CHECK(out.n == 0 && !out.rows, "rows kept after a refusal");
    CHECK(errs.n > 0 || st == 500, "a refusal without an error");
    CHECK(detail[0], "a refusal without a detail");
    return 0;
  }
  CHECK(out.n <= max_rows + 1, "%zu rows for a bound of %zu", out.n, max_rows);
  unsigned prev = 1;
  for (size_t i = 0; i < out.n; i++) {
    const ingest_csv_row *r = &out.rows[i];
    CHECK(r->row > prev, "row %u after %u", r->row, prev);
    prev = r->row;
    if (!r->obj) {
      CHECK(r->err.code[0] && r->err.message[0], "a bad row without its error");
      continue;
    }
    CHECK(cJSON_IsObject(r->obj), "row %u is not an object", r->row);
    const cJSON *m;
    cJSON_ArrayForEach(m, r->obj) {
      CHECK(m->string && known_column(m->string), "unknown member");
      CHECK(cJSON_IsString(m) || (cJSON_IsNumber(m) && strcmp(m->string, "value") == 0),
            "member %s of the wrong type", m->string);
      if (cJSON_IsString(m)) CHECK(m->valuestring[0], "empty member %s", m->string);
    }
  }
  ingest_csv_free(&out);
  return 0;
}
