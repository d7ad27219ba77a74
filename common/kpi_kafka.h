/* kpi_kafka.h: librdkafka configuration from the environment, topic set-up, libuv wake-ups. */
#ifndef KPI_KAFKA_H
#define KPI_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

/* Topic names and partition counts (docs/contracts.md, docs/evaluator.md "Configuration"),
 * overridable by environment so that tests
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

/* Operator passthrough: KPI_KAFKA_PROP_SASL_USERNAME sets librdkafka's sasl.username.
 * The prefix cannot collide with variables a platform injects on its own (Kubernetes gives
 * every pod KAFKA_PORT, KAFKA_SERVICE_HOST... for a Service named kafka). */
#define KPI_KAFKA_PROP_PREFIX "KPI_KAFKA_PROP_"

/* One librdkafka property. Lists of them end with {NULL, NULL}. */
typedef struct {
  const char *name;
  const char *value;
} kpi_kafka_prop;

/* The one way a service builds a client configuration, in this order:
 *   1. bootstrap.servers from KPI_KAFKA_BOOTSTRAP (default 127.0.0.1:9092), client.id;
 *   2. DEFAULTS, the service's tuning (may be NULL);
 *   3. every KPI_KAFKA_PROP_* variable (KPI_KAFKA_PROP_MESSAGE_TIMEOUT_MS -> message.timeout.ms),
 *      so the operator overrides any default;
 *   4. FIXED (may be NULL), what the service's guarantees rest on (group.id, manual offsets,
 *      idempotence): an operator variable naming one of them is an error, never a silent
 *      override in either direction.
 * Returns NULL with ERRSTR naming the variable or property at fault. */
rd_kafka_conf_t *kpi_kafka_conf_new(const char *client_id, const kpi_kafka_prop *defaults,
                                    const kpi_kafka_prop *fixed, char *errstr, size_t errstr_size);

/* The properties a client configuration CONF got from kpi_kafka_conf_new, as one line into OUT
 * (SIZE): "bootstrap.servers=... NAME=VALUE ...", then each of DEFAULTS, each operator
 * KPI_KAFKA_PROP_* property, and each of FIXED, once per name, with the value CONF holds (the
 * operator's where one overrode a default). Secret-looking values (password, secret, key,
 * jaas, sasl.oauthbearer.config) read "***". Pairs that do not fit, and values longer than
 * 511 bytes, are left out and counted at the end: "(+N not shown)". SIZE must exceed 32 for
 * any pair to be written. Returns the length. kpi_kafka_conf_new logs it (info, event
 * kafka_config). */
size_t kpi_kafka_conf_summary(const rd_kafka_conf_t *conf, const kpi_kafka_prop *defaults,
                              const kpi_kafka_prop *fixed, char *out, size_t size);

/* The passthrough variable of PROP ("linger.ms" -> "KPI_KAFKA_PROP_LINGER_MS") into VAR.
 * Returns 0, or -1 when VAR is too small. */
int kpi_kafka_prop_env_name(const char *prop, char *var, size_t var_size);

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
  rd_kafka_queue_t *queue; /* owned: destroyed on close; NULL once closed */
  /* Set while kpi_kafka_waker_serve polls QUEUE: a close from one of the callbacks it runs
   * leaves the queue to serve, which destroys it once librdkafka's poll has returned. */
  bool serving;
  rd_kafka_queue_t *retired;
  kpi_kafka_waker_cb on_ready;
  uv_close_cb on_closed;
  void *data;
};

/* Takes ownership of QUEUE. Returns 0 or a negative errno/uv error; on error QUEUE is destroyed. */
int kpi_kafka_waker_init(uv_loop_t *loop, kpi_kafka_waker *w, rd_kafka_queue_t *queue,
                         kpi_kafka_waker_cb on_ready);

/* The waker callback of a queue that carries only callback-served events (a producer's main
 * queue, rd_kafka_queue_get_main: delivery reports, errors, statistics, logs), for
 * kpi_kafka_waker_init: serves W's queue with rd_kafka_queue_poll_callback and timeout 0 until
 * it is empty, so every callback set in the client's configuration runs here, on the loop, and
 * the next event re-arms the empty-to-non-empty wake-up. Never blocks. Not for a queue that
 * carries messages (a consumer queue): those need rd_kafka_consumer_poll, which the service's
 * own callback calls. The callbacks it runs may close W (kpi_kafka_waker_close): serving then
 * stops after the events librdkafka already took in that poll (their callbacks still run, with
 * W's queue NULL), and the queue is destroyed once the poll has returned. Returns nothing; the
 * number of events served is of no use to a waker. */
void kpi_kafka_waker_serve(kpi_kafka_waker *w);

/* Stops watching, disables the io event, destroys the queue and closes the pipe; ON_CLOSED runs
 * from the loop once the uv handle is closed (W may be freed there). */
void kpi_kafka_waker_close(kpi_kafka_waker *w, uv_close_cb on_closed);

#endif
