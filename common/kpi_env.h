/* kpi_env.h: typed reads of the environment variables that configure every service. */
#ifndef KPI_ENV_H
#define KPI_ENV_H

#include <stddef.h>
#include <stdint.h>

/* The value of NAME, or DEF when unset or empty. */
const char *kpi_env_str(const char *name, const char *def);

/* Reads NAME as a whole number in [MIN, MAX] into *OUT (DEF when unset). Returns 0, or -1 with
 * ERRSTR naming the variable and the accepted range, so a typo stops the service at start
 * instead of silently running with a default. */
int kpi_env_int(const char *name, int64_t def, int64_t min, int64_t max, int64_t *out,
                char *errstr, size_t errstr_size);

int kpi_env_double(const char *name, double def, double min, double max, double *out,
                   char *errstr, size_t errstr_size);

/* Splits "host:port" (port required; "[::1]:8080" for IPv6). Returns 0 or -1. */
int kpi_env_split_hostport(const char *s, char *host, size_t host_size, int *port);

/* A service's listen address: NAME (DEF when unset) split into HOST and *PORT. Returns 0, or -1
 * with ERRSTR ("NAME: expected host:port, got ..."). */
int kpi_env_listen(const char *name, const char *def, char *host, size_t host_size, int *port,
                   char *errstr, size_t errstr_size);

/* A file path: NAME (DEF when unset) copied into DST. Returns 0, or -1 with ERRSTR when it does
 * not fit (a cut path would name another file). */
int kpi_env_path(const char *name, const char *def, char *dst, size_t dst_size, char *errstr,
                 size_t errstr_size);

/* Loads KEY=VALUE lines of FILE into the environment without overriding what is already set
 * (comments and blank lines skipped). Returns 0, or -1 when the file cannot be read. Used by
 * tests to pick up the addresses of the stack they run against. */
int kpi_env_load_file(const char *path);

#endif
