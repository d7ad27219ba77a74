/* kpi_json.c: JSON string escaping and the validators (see kpi_json.h). */
#include "kpi_json.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

/* Bytes the escape of C takes: 1 (plain), 2 (\" \\ \b \f \n \r \t) or 6 (\u00xx). */
static size_t escape_width(unsigned char c) {
  if (c >= 32 && c != '"' && c != '\\') return 1;
  switch (c) {
    case '"': case '\\': case '\b': case '\f': case '\n': case '\r': case '\t': return 2;
    default: return 6;
  }
}

/* Whether the 8 bytes at P all go out as they are (no control byte, '"' or '\\'): the
 * exact "has a byte below n" and "has a zero byte" word tests (Bit Twiddling Hacks), so
 * the escaping below walks runs of plain text 8 bytes at a time. */
static inline bool word_plain(const unsigned char *p) {
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  uint64_t x;
  memcpy(&x, p, sizeof(x));
  uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
  uint64_t special = ((x - ones * 32) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b);
  return (special & highs) == 0;
}

/* Length of the run of plain bytes at the start of P (N bytes). */
static size_t plain_run(const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i + 8 <= n && word_plain(p + i)) i += 8;
  while (i < n && escape_width(p[i]) == 1) i++;
  return i;
}

size_t kpi_json_escaped_len(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t out = n, i = 0;
  if (!n) return 0; /* S may be NULL then */
  while ((i += plain_run(p + i, n - i)) < n) out += escape_width(p[i++]) - 1;
  return out;
}

char *kpi_json_put_escaped(char *o, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  if (!n) return o; /* S may be NULL then */
  for (;;) {
    size_t run = plain_run(p + i, n - i);
    if (run) memcpy(o, p + i, run);
    o += run;
    i += run;
    if (i == n) return o;
    unsigned char c = p[i++];
    *o++ = '\\';
    switch (c) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '\b': *o++ = 'b'; break;
      case '\f': *o++ = 'f'; break;
      case '\n': *o++ = 'n'; break;
      case '\r': *o++ = 'r'; break;
      case '\t': *o++ = 't'; break;
      default:
        memcpy(o, "u00", 3);
        o[3] = hex[c >> 4];
        o[4] = hex[c & 15];
        o += 5;
    }
  }
}

size_t kpi_json_escape_fit(const char *s, size_t n, size_t room) {
  const unsigned char *p = (const unsigned char *)s;
  size_t used = 0, i = 0;
  while (i < n) {
    /* A UTF-8 lead byte and its continuation bytes go in whole or not at all. */
    size_t j = i + 1;
    if (p[i] >= 0xC0)
      while (j < n && (p[j] & 0xC0) == 0x80) j++;
    size_t w = 0;
    for (size_t k = i; k < j; k++) w += escape_width(p[k]);
    if (used + w > room) break;
    used += w;
    i = j;
  }
  return i;
}

void kpi_json_buf_string_n(kpi_buf *b, const char *s, size_t n) {
  size_t e = kpi_json_escaped_len(s, n);
  if (e > SIZE_MAX - 2 || kpi_buf_reserve(b, e + 2)) {
    b->oom = 1;
    return;
  }
  char *o = b->s + b->len;
  *o++ = '"';
  o = kpi_json_put_escaped(o, s, n);
  *o++ = '"';
  *o = '\0';
  b->len = (size_t)(o - b->s);
}

void kpi_json_buf_string(kpi_buf *b, const char *s) {
  if (!s) kpi_buf_add(b, "null", 4);
  else kpi_json_buf_string_n(b, s, strlen(s));
}

/* Length of the well-formed UTF-8 character at S (N > 0 bytes available), 0 if none. */
static inline size_t utf8_char_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned min;
  if ((c & 0xE0) == 0xC0) len = 2, min = 0x80, c &= 0x1F;
  else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800, c &= 0x0F;
  else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000, c &= 0x07;
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  return len;
}

size_t kpi_json_utf8_char_len(const char *s, size_t n) {
  return n ? utf8_char_len((const unsigned char *)s, n) : 0;
}

bool kpi_json_utf8_valid(const char *str, size_t len) {
  const unsigned char *s = (const unsigned char *)str, *end = s + len;
  while (s < end) {
    uint64_t w;
    if (end - s >= 8 && (memcpy(&w, s, sizeof(w)), (w & 0x8080808080808080u) == 0)) {
      s += 8; /* eight ASCII bytes */
      continue;
    }
    if (*s < 0x80) {
      s++;
      continue;
    }
    size_t l = utf8_char_len(s, (size_t)(end - s));
    if (!l) return false;
    s += l;
  }
  return true;
}

/* The bytes of an id ([A-Za-z0-9._-]) as a table: one load per byte instead of a chain of
 * range tests; ids are checked for every record of a batch (measure_id, department). */
static const bool id_byte[256] = {
    ['-'] = true, ['.'] = true, ['_'] = true,
    ['0'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true,
    ['5'] = true, ['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true,
    ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true, ['E'] = true, ['F'] = true,
    ['G'] = true, ['H'] = true, ['I'] = true, ['J'] = true, ['K'] = true, ['L'] = true,
    ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true, ['Q'] = true, ['R'] = true,
    ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true, ['W'] = true, ['X'] = true,
    ['Y'] = true, ['Z'] = true,
    ['a'] = true, ['b'] = true, ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true,
    ['g'] = true, ['h'] = true, ['i'] = true, ['j'] = true, ['k'] = true, ['l'] = true,
    ['m'] = true, ['n'] = true, ['o'] = true, ['p'] = true, ['q'] = true, ['r'] = true,
    ['s'] = true, ['t'] = true, ['u'] = true, ['v'] = true, ['w'] = true, ['x'] = true,
    ['y'] = true, ['z'] = true,
};

bool kpi_json_id_valid(const char *s) {
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++)
    if (n == KPI_ID_MAX || !id_byte[*p]) return false;
  return n > 0;
}

cJSON *kpi_json_parse_one(const char *text, size_t len, bool nul_is_space) {
  const char *end = NULL;
  cJSON *v = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (!v) return NULL;
  for (const char *p = end; p < text + len; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && !(nul_is_space && *p == '\0')) {
      cJSON_Delete(v);
      return NULL;
    }
  return v;
}
