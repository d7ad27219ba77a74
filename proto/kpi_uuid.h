/* kpi_uuid.h: UUID v4 (random) and v5 (name-based, deterministic) generation, parsing and formatting. */
#ifndef KPI_UUID_H
#define KPI_UUID_H

#include <stdint.h>
#include <stddef.h>

/* Length of the canonical text form, 8-4-4-4-12 hex digits, without the NUL. */
#define KPI_UUID_STRLEN 36

/* Writes a random (version 4) UUID in lower case into OUT, drawing from OpenSSL's
 * RAND_bytes. Returns 0, or -1 if the generator fails; OUT is then the empty string so that
 * a caller who ignores the result cannot send a half-random id. */
int kpi_uuid_v4(char out[KPI_UUID_STRLEN + 1]);

/* Parses the canonical 8-4-4-4-12 form (hex digits in either case, nothing before or after;
 * no braces, no "urn:uuid:"). Returns 0 and fills OUT, or -1. OUT may be NULL to only
 * validate; on failure it is left untouched. */
int kpi_uuid_parse(const char *s, uint8_t out[16]);

/* Formats 16 bytes as the canonical lower-case text form. */
void kpi_uuid_format(const uint8_t in[16], char out[KPI_UUID_STRLEN + 1]);

/* Name-based UUID version 5 (RFC 9562 §5.5: SHA-1 over NS then the LEN bytes of NAME) in
 * lower case. Deterministic, which is why alert_id uses it: a replay yields the same id.
 * NAME may be NULL when LEN is 0. If libcrypto fails (only on allocation failure), OUT is
 * the empty string. */
void kpi_uuid_v5(const uint8_t ns[16], const char *name, size_t len, char out[KPI_UUID_STRLEN + 1]);

#endif /* KPI_UUID_H */
