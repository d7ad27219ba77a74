/* kpi_env.c: environment variable parsing with range checks and clear errors. */
#include "kpi_env.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *kpi_env_str(const char *name, const char *def) {
  const char *v = getenv(name);
  return v && *v ? v : def;
}

int kpi_env_int(const char *name, int64_t def, int64_t min, int64_t max, int64_t *out,
                char *errstr, size_t errstr_size) {
  const char *v = getenv(name);
  if (!v || !*v) {
    *out = def;
    return 0;
  }
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < min || x > max) {
    snprintf(errstr, errstr_size, "%s=\"%s\": expected a whole number from %lld to %lld", name,
             v, (long long)min, (long long)max);
    return -1;
  }
  *out = x;
  return 0;
}

int kpi_env_double(const char *name, double def, double min, double max, double *out,
                   char *errstr, size_t errstr_size) {
  const char *v = getenv(name);
  if (!v || !*v) {
    *out = def;
    return 0;
  }
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || end == v || *end || !isfinite(x) || x < min || x > max) {
    snprintf(errstr, errstr_size, "%s=\"%s\": expected a number from %g to %g", name, v, min,
             max);
    return -1;
  }
  *out = x;
  return 0;
}

int kpi_env_split_hostport(const char *s, char *host, size_t host_size, int *port) {
  const char *colon;
  const char *h = s;
  size_t hlen;
  if (*s == '[') {
    const char *close = strchr(s, ']');
    if (!close || close[1] != ':') return -1;
    h = s + 1;
    hlen = (size_t)(close - h);
    colon = close + 1;
  } else {
    colon = strrchr(s, ':');
    if (!colon) return -1;
    hlen = (size_t)(colon - s);
  }
  if (hlen == 0 || hlen >= host_size) return -1;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || *end || p < 0 || p > 65535) return -1;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = (int)p;
  return 0;
}

int kpi_env_listen(const char *name, const char *def, char *host, size_t host_size, int *port,
                   char *errstr, size_t errstr_size) {
  const char *v = kpi_env_str(name, def);
  if (kpi_env_split_hostport(v, host, host_size, port) == 0) return 0;
  snprintf(errstr, errstr_size, "%s: expected host:port, got \"%s\"", name, v);
  return -1;
}

int kpi_env_path(const char *name, const char *def, char *dst, size_t dst_size, char *errstr,
                 size_t errstr_size) {
  const char *v = kpi_env_str(name, def);
  if (strlen(v) >= dst_size) {
    snprintf(errstr, errstr_size, "%s: path too long", name);
    return -1;
  }
  memcpy(dst, v, strlen(v) + 1);
  return 0;
}

int kpi_env_load_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[4096];
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '#' || line[0] == '\0') continue;
    char *eq = strchr(line, '=');
    if (!eq) continue;
    *eq = '\0';
    setenv(line, eq + 1, 0);
  }
  fclose(f);
  return 0;
}
