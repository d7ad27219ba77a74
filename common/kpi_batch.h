/* kpi_batch.h: request framing for ingest: NDJSON items, JSON text bounds, media types, query
 * flags and bearer tokens. Pure functions over the caller's buffers; nothing allocates. */
#ifndef KPI_BATCH_H
#define KPI_BATCH_H

#include <stdbool.h>
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

/* True when only JSON white space (space, tab, CR, LF) lies in [P, END). Used after
 * cJSON_ParseWithLengthOpts, which stops after the first value and would otherwise accept
 * `{"a":1} garbage`. */
bool kpi_batch_only_space(const char *p, const char *end);

/* True when the Content-Type header value CT names media type TYPE (case-insensitive), with
 * no parameter other than charset=utf-8 (any case, optionally quoted). NULL CT is false.
 * `application/json; charset=latin1` is false: the body would not be what we parse. */
bool kpi_batch_media_type_is(const char *ct, const char *type);

/* Reads the boolean query parameter NAME of QUERY (the text after '?', not decoded):
 * absent: 0 into *OUT; "true", "1" or a bare "NAME": 1; "false" or "0": 0. Returns 0, or -1
 * when the value is anything else (the caller answers 400). The first occurrence wins. */
int kpi_batch_query_flag(const char *query, const char *name, int *out);

/* Extracts the token of an `Authorization: Bearer <token>` header value (scheme matched
 * case-insensitively, one or more spaces, token68 characters only). Returns 0 and points
 * *TOKEN into AUTH (length *LEN), or -1 when AUTH is NULL, another scheme, or malformed. */
int kpi_batch_bearer_token(const char *auth, const char **token, size_t *len);

#endif
