/* kpi_log.c: JSON-lines logger on stderr (one write(2) per line, so lines never interleave). */
#include "kpi_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "kpi_json.h"

static char log_service[32] = "kpi";
static kpi_log_level log_min = KPI_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void kpi_log_init(const char *service) {
  snprintf(log_service, sizeof(log_service), "%s", service ? service : "kpi");
  const char *lv = getenv("KPI_LOG_LEVEL");
  if (lv) {
    for (int i = 0; i < 4; i++)
      if (strcasecmp(lv, level_names[i]) == 0) log_min = (kpi_log_level)i;
  }
}

int kpi_log_enabled(kpi_log_level level) { return level >= log_min; }

/* Appends S JSON-escaped to BUF at *POS, leaving CAP-1 untouched; a text that does not fit is
 * truncated at a whole character rather than split, so every line stays valid JSON (and
 * valid UTF-8 when S is) after the closing. The line is built on the stack on purpose: logging
 * must work when memory is short. */
static void put_escaped(char *buf, size_t cap, size_t *pos, const char *s) {
  size_t room = cap > *pos + 1 ? cap - 1 - *pos : 0;
  size_t n = kpi_json_escape_fit(s, strlen(s), room);
  *pos = (size_t)(kpi_json_put_escaped(buf + *pos, s, n) - buf);
}

void kpi_log(kpi_log_level level, const char *event, const char *fmt, ...) {
  if (level < log_min) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);

  char line[4096];
  size_t pos = (size_t)snprintf(line, sizeof(line),
                                "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\","
                                "\"service\":\"",
                                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
  put_escaped(line, sizeof(line), &pos, log_service);
  pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\",\"event\":\"");
  put_escaped(line, sizeof(line), &pos, event);
  pos += (size_t)snprintf(line + pos, sizeof(line) - pos, "\",\"msg\":\"");
  put_escaped(line, sizeof(line) - 4, &pos, msg);
  memcpy(line + pos, "\"}\n", 3);
  pos += 3;
  ssize_t w = write(STDERR_FILENO, line, pos);
  (void)w;
}
