/* fuzz_batch.c: libFuzzer target for ingest request framing: NDJSON splitting (kpi_batch),
 * "exactly one JSON value" (kpi_json), and the HTTP helpers for media types, query flags and
 * bearer tokens (kpi_http). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz_check.h"
#include "kpi_batch.h"
#include "kpi_http.h"
#include "kpi_json.h"

static int blank(char c) { return c == ' ' || c == '\t'; }

/* Every item lies inside the body, holds no line break and no outer blank, items come in
 * order, and kpi_batch_ndjson_count agrees with the walk at every limit. */
static void check_ndjson(const char *buf, size_t len) {
  size_t pos = 0, n = 0, prev_end = 0;
  const char *line;
  size_t line_len;
  while (kpi_batch_ndjson_next(buf, len, &pos, &line, &line_len)) {
    CHECK(line >= buf && line_len > 0 && (size_t)(line - buf) + line_len <= len, "bounds");
    CHECK((size_t)(line - buf) >= prev_end && pos <= len, "order");
    CHECK(!memchr(line, '\n', line_len), "line break inside item %zu", n);
    CHECK(!blank(line[0]) && !blank(line[line_len - 1]), "blank at an edge of item %zu", n);
    prev_end = (size_t)(line - buf) + line_len;
    CHECK(pos >= prev_end, "position behind the item");
    n++;
  }
  CHECK(pos == len, "walk ended at %zu of %zu", pos, len);
  CHECK(kpi_batch_ndjson_count(buf, len, n + 5) == n, "count");
  if (n > 0) CHECK(kpi_batch_ndjson_count(buf, len, n - 1) == n, "count stops at limit + 1");
  CHECK(kpi_batch_ndjson_count(buf, len, 0) == (n > 0), "count with limit 0");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *buf = (const char *)data;
  check_ndjson(buf, size);
  cJSON_Delete(kpi_json_parse_one(buf, size, false));

  /* The string helpers read header values and query strings: NUL-terminated copies, cut at
   * the first NUL as the HTTP server would hand them over. */
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  (void)kpi_http_media_type_is(s, "application/json");
  (void)kpi_http_media_type_is(s, "application/x-ndjson");
  int flag = -1;
  int rc = kpi_http_query_flag(s, "atomic", &flag);
  CHECK((rc == 0 && (flag == 0 || flag == 1)) || (rc == -1 && flag == 0), "flag %d/%d", rc, flag);
  (void)kpi_http_query_flag(s, "", &flag);
  const char *token = NULL;
  size_t tlen = 0;
  if (kpi_http_bearer_token(s, &token, &tlen) == 0) {
    size_t slen = strlen(s);
    CHECK(token > s && tlen > 0 && (size_t)(token - s) + tlen <= slen, "token bounds");
    CHECK(!memchr(token, ' ', tlen), "blank in the token");
  }
  free(s);
  return 0;
}
