/* bench/closed_loop_produce.c: baseline (f) of bench/bench_ingest.sh (not a service).
 *
 *   closed_loop_produce BROKER TOPIC N CLIENTS BATCH KEY RECORD [PROP=VALUE ...]
 *
 * The batch load's shape without HTTP and without any per-record work: CLIENTS batches of
 * BATCH copies of RECORD (key KEY) are in the producer at once, and each is produced again as
 * soon as every one of its records has its delivery report, as the bench's wrk connections
 * send their next upload only after the 202 that follows the last ack. That is the most any
 * service can reach on this load when it answers after the broker's ack (docs/ingest.md
 * "Performance, eleventh round"). PROP=VALUE pairs are librdkafka properties, applied in
 * order (bench_ingest.sh passes kcat's). One untimed batch first connects and gets the
 * producer id; then whole batches are produced until N records are acknowledged.
 * Env THINK_US (default 0): each client waits that long after its last report before its next
 * upload, without holding up the others, as an HTTP round trip and the service's parse do for
 * a wrk connection. Prints
 *   CLOSED accepted=A duration_us=D cpu_us=C
 * with D from the first timed produce to the last delivery report and C this process's CPU
 * (user + system) over the same span. Exits 1 at the first delivery error.
 */
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  rd_kafka_message_t *msgs; /* BATCH slots, reused for every upload of this client */
  int pending;              /* records of the current upload awaiting their report */
  uint64_t due;             /* THINK_US: when the next upload goes out (0: none waiting) */
} client;

typedef struct {
  rd_kafka_topic_t *rkt;
  client *clients;
  int batch;
  long long want;      /* records to acknowledge in the timed part */
  long long submitted; /* records handed to the producer */
  long long acked;
  uint64_t think_us;
  const char *key, *record;
} run;

static run R;

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "closed_loop_produce: %s: %s\n", what, why);
  exit(1);
}

/* Hands client C's batch to the producer: one rd_kafka_produce_batch, as the service does per
 * partition (every record has the same key, so one partition). */
static void submit(client *c) {
  for (int i = 0; i < R.batch; i++) {
    rd_kafka_message_t *m = &c->msgs[i];
    memset(m, 0, sizeof(*m));
    m->payload = (void *)R.record;
    m->len = strlen(R.record);
    m->key = (void *)R.key;
    m->key_len = strlen(R.key);
    m->_private = c;
  }
  int n = rd_kafka_produce_batch(R.rkt, RD_KAFKA_PARTITION_UA, 0, c->msgs, R.batch);
  if (n != R.batch) die("rd_kafka_produce_batch", rd_kafka_err2str(c->msgs[n].err));
  c->pending = R.batch;
  R.submitted += R.batch;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  client *c = m->_private;
  if (m->err) die("delivery", rd_kafka_err2str(m->err));
  R.acked++;
  /* The whole upload is in Kafka: the client's next one goes out, as after a 202. */
  if (--c->pending > 0 || R.submitted >= R.want) return;
  if (R.think_us) c->due = now_us() + R.think_us;
  else submit(c);
}

/* Serves delivery reports until every wanted record is acknowledged, sending the uploads
 * whose think time is over (every 50 us at most: no client waits for another's). */
static void serve(rd_kafka_t *rk, int clients) {
  while (R.acked < R.want) {
    if (!R.think_us) {
      rd_kafka_poll(rk, 100);
      continue;
    }
    rd_kafka_poll(rk, 0);
    uint64_t t = now_us();
    for (int i = 0; i < clients; i++)
      if (R.clients[i].due && R.clients[i].due <= t) {
        R.clients[i].due = 0;
        if (R.submitted < R.want) submit(&R.clients[i]);
      }
    usleep(50);
  }
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr,
            "usage: closed_loop_produce BROKER TOPIC N CLIENTS BATCH KEY RECORD "
            "[PROP=VALUE ...]\n");
    return 2;
  }
  long long n = atoll(argv[3]);
  int clients = atoi(argv[4]);
  R.batch = atoi(argv[5]);
  R.key = argv[6];
  R.record = argv[7];
  if (n <= 0 || clients <= 0 || R.batch <= 0) die("arguments", "N, CLIENTS and BATCH are > 0");
  const char *think = getenv("THINK_US");
  R.think_us = think ? strtoull(think, NULL, 10) : 0;

  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof(err)) != RD_KAFKA_CONF_OK)
    die("bootstrap.servers", err);
  for (int i = 8; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq) die(argv[i], "expected PROP=VALUE");
    *eq = '\0';
    if (rd_kafka_conf_set(conf, argv[i], eq + 1, err, sizeof(err)) != RD_KAFKA_CONF_OK)
      die(argv[i], err);
  }
  rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) die("rd_kafka_new", err);
  R.rkt = rd_kafka_topic_new(rk, argv[2], NULL);
  if (!R.rkt) die("rd_kafka_topic_new", rd_kafka_err2str(rd_kafka_last_error()));
  R.clients = calloc((size_t)clients, sizeof(*R.clients));
  if (!R.clients) die("calloc", "out of memory");
  for (int i = 0; i < clients; i++) {
    R.clients[i].msgs = calloc((size_t)R.batch, sizeof(rd_kafka_message_t));
    if (!R.clients[i].msgs) die("calloc", "out of memory");
  }

  /* Untimed: connect, get the producer id, learn the partitions. */
  R.want = R.batch;
  submit(&R.clients[0]);
  serve(rk, clients);

  /* Timed: whole batches until N records are acknowledged. */
  long long batches = (n + R.batch - 1) / R.batch;
  R.want = batches * R.batch;
  R.submitted = R.acked = 0;
  uint64_t c0 = cpu_us(), t0 = now_us();
  for (int i = 0; i < clients && R.submitted < R.want; i++) submit(&R.clients[i]);
  serve(rk, clients);
  uint64_t t1 = now_us(), c1 = cpu_us();
  printf("CLOSED accepted=%lld duration_us=%llu cpu_us=%llu\n", R.acked,
         (unsigned long long)(t1 - t0), (unsigned long long)(c1 - c0));

  rd_kafka_flush(rk, 10000);
  for (int i = 0; i < clients; i++) free(R.clients[i].msgs);
  free(R.clients);
  rd_kafka_topic_destroy(R.rkt);
  rd_kafka_destroy(rk);
  return 0;
}
