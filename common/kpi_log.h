/* kpi_log.h: one JSON object per line on stderr, the only log format of every service. */
#ifndef KPI_LOG_H
#define KPI_LOG_H

typedef enum {
  KPI_LOG_DEBUG = 0,
  KPI_LOG_INFO = 1,
  KPI_LOG_WARN = 2,
  KPI_LOG_ERROR = 3
} kpi_log_level;

/* Sets the service name written in every line and the minimum level, read from
 * KPI_LOG_LEVEL (debug|info|warn|error, default info). Call once, before any thread. */
void kpi_log_init(const char *service);

/* Writes {"ts":…,"level":…,"service":…,"event":EVENT,"msg":…} on one line. The message is
 * printf-formatted and JSON-escaped, so data may contain quotes or newlines; never pass a
 * bearer token or a password. EVENT is a short stable identifier (`kafka_delivery_failed`). */
void kpi_log(kpi_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

int kpi_log_enabled(kpi_log_level level);

#endif
