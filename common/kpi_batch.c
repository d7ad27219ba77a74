/* kpi_batch.c: ingest request framing helpers (NDJSON lines, media types, flags, tokens). */
#include "kpi_batch.h"

#include <string.h>
#include <strings.h>

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

int kpi_batch_ndjson_next(const char *buf, size_t len, size_t *pos, const char **line,
                          size_t *line_len) {
  size_t i = *pos;
  while (i < len) {
    const char *nl = memchr(buf + i, '\n', len - i);
    size_t end = nl ? (size_t)(nl - buf) : len;
    size_t next = nl ? end + 1 : len;
    size_t a = i, b = end;
    if (b > a && buf[b - 1] == '\r') b--;
    while (a < b && is_blank(buf[a])) a++;
    while (b > a && is_blank(buf[b - 1])) b--;
    i = next;
    if (b > a) {
      *line = buf + a;
      *line_len = b - a;
      *pos = i;
      return 1;
    }
  }
  *pos = len;
  return 0;
}

size_t kpi_batch_ndjson_count(const char *buf, size_t len, size_t limit) {
  size_t pos = 0, n = 0, l;
  const char *line;
  while (n <= limit && kpi_batch_ndjson_next(buf, len, &pos, &line, &l)) n++;
  return n;
}

bool kpi_batch_only_space(const char *p, const char *end) {
  for (; p < end; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') return false;
  return true;
}

/* Skips optional white space (RFC 9110 OWS). */
static const char *skip_ows(const char *p) {
  while (is_blank(*p)) p++;
  return p;
}

bool kpi_batch_media_type_is(const char *ct, const char *type) {
  if (!ct) return false;
  const char *p = skip_ows(ct);
  size_t tl = strlen(type);
  if (strncasecmp(p, type, tl) != 0) return false;
  p = skip_ows(p + tl);
  while (*p) {
    if (*p != ';') return false;
    p = skip_ows(p + 1);
    if (*p == '\0') return true; /* a trailing ';' is harmless */
    if (strncasecmp(p, "charset", 7) != 0) return false;
    p = skip_ows(p + 7);
    if (*p != '=') return false;
    p = skip_ows(p + 1);
    bool quoted = *p == '"';
    if (quoted) p++;
    if (strncasecmp(p, "utf-8", 5) != 0) return false;
    p += 5;
    if (quoted) {
      if (*p != '"') return false;
      p++;
    }
    p = skip_ows(p);
  }
  return true;
}

int kpi_batch_query_flag(const char *query, const char *name, int *out) {
  *out = 0;
  size_t nl = strlen(name);
  const char *p = query ? query : "";
  while (*p) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen >= nl && strncmp(p, name, nl) == 0 && (plen == nl || p[nl] == '=')) {
      const char *v = plen == nl ? "" : p + nl + 1;
      size_t vl = plen == nl ? 0 : plen - nl - 1;
      if ((vl == 0 && plen == nl) || (vl == 4 && strncmp(v, "true", 4) == 0) ||
          (vl == 1 && v[0] == '1')) {
        *out = 1;
        return 0;
      }
      if ((vl == 5 && strncmp(v, "false", 5) == 0) || (vl == 1 && v[0] == '0')) return 0;
      return -1;
    }
    if (!amp) break;
    p = amp + 1;
  }
  return 0;
}

/* RFC 7235 token68: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "=" padding. */
static bool is_token68(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

int kpi_batch_bearer_token(const char *auth, const char **token, size_t *len) {
  if (!auth || strncasecmp(auth, "Bearer", 6) != 0 || auth[6] != ' ') return -1;
  const char *p = auth + 6;
  while (*p == ' ') p++;
  const char *t = p;
  while (is_token68(*p)) p++;
  while (*p == '=') p++;
  if (p == t || *skip_ows(p) != '\0') return -1;
  *token = t;
  *len = (size_t)(p - t);
  return 0;
}
