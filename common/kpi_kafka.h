/* kpi_kafka.h: librdkafka configuration from the environment, topic set-up, libuv wake-ups. */
#ifndef KPI_KAFKA_H
#define KPI_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <uv.h>

/* Topic names and partition counts (design.md §5), overridable by environment so that tests
 * and parallel deployments can use their own: KPI_TOPIC_MEASUREMENTS, KPI_TOPIC_ALERTS,
 * KPI_TOPIC_MEASUREMENTS_DLQ, KPI_TOPIC_ALERTS_DLQ, and KPI_TOPIC_*_PARTITIONS,
 * KPI_TOPIC_REPLICATION (default 1: the local single broker). */
typedef struct {
  char name[128];
  int partitions;
  int replication;
} kpi_topic_spec;

typedef enum {
  KPI_TOPIC_MEASUREMENTS = 0,
  KPI_TOPIC_ALERTS,
  KPI_TOPIC_MEASUREMENTS_DLQ,
  KPI_TOPIC_ALERTS_DLQ,
  KPI_TOPIC_COUNT
} kpi_topic_id;

/* Fills SPECS[KPI_TOPIC_COUNT] from the environment. Returns 0 or -1 with ERRSTR. */
int kpi_topics_from_env(kpi_topic_spec specs[KPI_TOPIC_COUNT], char *errstr, size_t errstr_size);

/* A new configuration with bootstrap.servers from KPI_KAFKA_BOOTSTRAP (default
 * 127.0.0.1:9092), client.id CLIENT_ID, then every KAFKA_* variable passed through as a
 * librdkafka property (KAFKA_MESSAGE_TIMEOUT_MS -> message.timeout.ms). Passthrough comes last
 * so operators can override anything. Returns NULL with ERRSTR naming the bad property. */
rd_kafka_conf_t *kpi_kafka_conf_new(const char *client_id, char *errstr, size_t errstr_size);

/* librdkafka log callback writing through kpi_log (JSON lines), which kpi_kafka_conf_new
 * installs. It may run on librdkafka's threads (kpi_log is one write(2) per line); services that
 * want logs on their loop also set log.queue and rd_kafka_set_log_queue. */
void kpi_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* Sets one property or fills ERRSTR ("prop=value: reason"). */
int kpi_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                       char *errstr, size_t errstr_size);

/* Creates the topics that do not exist yet (admin API), waiting up to TIMEOUT_MS. Existing
 * topics are left as they are. Returns 0, or -1 with ERRSTR. */
int kpi_kafka_ensure_topics(rd_kafka_t *rk, const kpi_topic_spec *specs, size_t n,
                            int timeout_ms, char *errstr, size_t errstr_size);

/* Wakes a libuv loop when a librdkafka queue becomes non-empty, through
 * rd_kafka_queue_io_event_enable on a pipe watched by a uv_poll: no polling timer, no thread.
 * librdkafka writes to the pipe only when the queue goes from empty to non-empty, so ON_READY
 * must serve the queue until it is empty (rd_kafka_queue_poll / rd_kafka_poll with timeout 0
 * in a loop, or kpi_kafka_waker_serve). */
typedef struct kpi_kafka_waker kpi_kafka_waker;
typedef void (*kpi_kafka_waker_cb)(kpi_kafka_waker *w);
struct kpi_kafka_waker {
  uv_poll_t poll;
  int fds[2];
  rd_kafka_queue_t *queue; /* owned: destroyed on close */
  kpi_kafka_waker_cb on_ready;
  uv_close_cb on_closed;
  void *data;
};

/* Takes ownership of QUEUE. Returns 0 or a negative errno/uv error; on error QUEUE is destroyed. */
int kpi_kafka_waker_init(uv_loop_t *loop, kpi_kafka_waker *w, rd_kafka_queue_t *queue,
                         kpi_kafka_waker_cb on_ready);

/* Stops watching, disables the io event, destroys the queue and closes the pipe; ON_CLOSED runs
 * from the loop once the uv handle is closed (W may be freed there). */
void kpi_kafka_waker_close(kpi_kafka_waker *w, uv_close_cb on_closed);

#endif
