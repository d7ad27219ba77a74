/* kpi_json.h: the one JSON string writer and the input validators (UTF-8, ids, "exactly one
 * JSON value") shared by the codec, the logger and the services. */
#ifndef KPI_JSON_H
#define KPI_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "kpi_buf.h"

struct cJSON;

/* Longest id (measure, department) in bytes; ids are 1..KPI_ID_MAX of [A-Za-z0-9._-]. */
#define KPI_ID_MAX 64

/* ---- writing ----
 *
 * Escaping is cJSON's (print_string_ptr), byte for byte, so that text we write by hand equals
 * what cJSON_PrintUnformatted gives for the same string: '"' and '\' backslashed, \b \f \n
 * \r \t by name, other bytes below 0x20 as \u00xx (lower-case hex), everything else (0x7f,
 * UTF-8 sequences, even invalid ones) copied. Callers that must emit valid UTF-8 check the
 * input with kpi_json_utf8_valid first; the writer never rejects. */

/* Bytes the escaped form of S[0..N) takes, without quotes. */
size_t kpi_json_escaped_len(const char *s, size_t n);

/* Writes the escaped form of S[0..N), without quotes, at O, which must have room for
 * kpi_json_escaped_len(S, N) bytes; returns the end of what it wrote (no NUL added). For
 * encoders that size their output once (kpi_measurement_encode). */
char *kpi_json_put_escaped(char *o, const char *s, size_t n);

/* The longest prefix of S[0..N) whose escaped form fits in ROOM bytes, never cutting a UTF-8
 * sequence: for writers with a hard size limit (log lines) that truncate rather than split. */
size_t kpi_json_escape_fit(const char *s, size_t n, size_t room);

/* Appends S (NUL-terminated) to B as a quoted, escaped JSON string. S NULL appends null. */
void kpi_json_buf_string(kpi_buf *b, const char *s);
/* Same for S[0..N), which may hold NUL bytes (written as \u0000). */
void kpi_json_buf_string_n(kpi_buf *b, const char *s, size_t n);

/* ---- validating ---- */

/* True when the LEN bytes at S are well-formed UTF-8: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no sequence cut at the end. NUL bytes are valid (callers that cannot hold
 * them check with memchr). */
bool kpi_json_utf8_valid(const char *s, size_t len);

/* Bytes of the well-formed UTF-8 character starting at S (N bytes available; 1..4), or 0 when
 * the bytes there are not one by the rules above (also when N is 0). For code that walks text
 * character by character and replaces what is invalid (mail text cleaning). */
size_t kpi_json_utf8_char_len(const char *s, size_t n);

/* True when S is an id: 1..KPI_ID_MAX bytes of ASCII letters, digits, '-', '_' and '.'. Ids
 * end up in URLs, Kafka keys, SQL parameters and mail headers, so the alphabet is kept small
 * and the same everywhere (catalog, codec, evaluator API). */
bool kpi_json_id_valid(const char *s);

/* Parses TEXT[0..LEN) as exactly one JSON value: after it only JSON white space (space, tab,
 * CR, LF) may follow, and also NUL bytes when NUL_IS_SPACE (records read back from Kafka,
 * which some producers terminate). cJSON_ParseWithLength alone would accept `{"a":1} junk`.
 * Returns the tree (caller frees with cJSON_Delete) or NULL when invalid or out of memory. */
struct cJSON *kpi_json_parse_one(const char *text, size_t len, bool nul_is_space);

#endif
