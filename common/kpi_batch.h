/* kpi_batch.h: NDJSON framing of ingest batch bodies. Pure functions over the caller's buffer;
 * nothing allocates. (Media types, query flags and bearer tokens are HTTP: kpi_http.h; "exactly
 * one JSON value" is kpi_json_parse_one.) */
#ifndef KPI_BATCH_H
#define KPI_BATCH_H

#include <stddef.h>

/* Returns the next NDJSON item of BUF[0..LEN) starting at *POS: a line without its "\n" or
 * "\r\n", with surrounding blanks (space, tab) trimmed. Blank lines are skipped, so a final
 * newline or an empty trailing line is not an item. Returns 1 and sets *LINE / *LINE_LEN
 * (pointing into BUF) and advances *POS past the line; returns 0 at the end. */
int kpi_batch_ndjson_next(const char *buf, size_t len, size_t *pos, const char **line,
                          size_t *line_len);

/* Counts the NDJSON items of BUF, stopping at LIMIT + 1 so that an oversized batch is
 * refused without walking all of it. */
size_t kpi_batch_ndjson_count(const char *buf, size_t len, size_t limit);

#endif
