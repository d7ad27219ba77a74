/* bench/closed_loop_produce.c: baseline (f) of bench/bench_ingest.sh (not a service).
 *
 *   closed_loop_produce BROKER TOPIC N CLIENTS BATCH KEY RECORD [PROP=VALUE ...]
 *
 * The batch load's shape without HTTP and without any per-record work: CLIENTS uploads of
 * BATCH copies of RECORD (key KEY) are in one producer at once, and each is produced again as
 * soon as every one of its records has its delivery report, as the bench's wrk connections
 * send their next upload only after the 202 that follows the last ack. A service built on the
 * same producer settings that answers after the broker's ack should not exceed its rate on
 * that load (docs/ingest.md "Performance, eleventh round"). PROP=VALUE pairs are librdkafka
 * properties, applied in order (bench_ingest.sh passes kcat's).
 *
 * One untimed upload first connects and gets the producer id, as the service and wrk are warm
 * when (b) is timed; then whole uploads are produced until N records (rounded up to whole
 * uploads) are acknowledged. Env THINK_US (default 0): each upload waits that long after its
 * last report before it goes out again, without holding up the others, as an HTTP round trip
 * and the service's parse do for a wrk connection. Delivery reports wake the loop through
 * librdkafka's queue event on a pipe and due uploads through ppoll's timeout, so a wait is
 * THINK_US plus the wake-up's own latency. Prints
 *   CLOSED accepted=A duration_us=D cpu_us=C
 * with D from the first timed produce to the last delivery report and C this process's CPU
 * (user + system) over the same span. Exits 1 at the first error, 2 on bad arguments.
 */
#define _GNU_SOURCE /* ppoll, pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_TOOL "closed_loop_produce"
#include "bench_tool.h"

typedef struct {
  rd_kafka_message_t *msgs; /* BATCH slots, reused for every upload of this client */
  int pending;              /* records of the current upload awaiting their report */
  uint64_t due_ns;          /* THINK_US: when its next upload goes out (0: none waiting) */
} clp_client;

typedef struct {
  rd_kafka_topic_t *rkt;
  clp_client *clients;
  int nclients;
  int batch;
  char *key, *record;
  size_t key_len, record_len;
  long long want;      /* records to acknowledge */
  long long submitted; /* records handed to the producer */
  long long acked;
  uint64_t think_ns;
} clp_run;

static clp_run R;

static uint64_t clp_cpu_us(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
         (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* A whole decimal number in [MIN, MAX], or exit 2 naming WHAT. */
static long long clp_arg(const char *s, const char *what, long long min, long long max) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) {
    fprintf(stderr, "closed_loop_produce: %s: expected a whole number in [%lld, %lld]: %s\n",
            what, min, max, s);
    exit(2);
  }
  return v;
}

/* Hands client C's upload to the producer: one rd_kafka_produce_batch, as the service does per
 * partition (every record has the same key, so one partition). */
static void clp_submit(clp_client *c) {
  for (int i = 0; i < R.batch; i++) {
    rd_kafka_message_t *m = &c->msgs[i];
    memset(m, 0, sizeof(*m));
    /* Flags 0: librdkafka neither copies nor frees RECORD; it outlives every message. */
    m->payload = R.record;
    m->len = R.record_len;
    m->key = R.key;
    m->key_len = R.key_len;
    m->_private = c;
  }
  int n = rd_kafka_produce_batch(R.rkt, RD_KAFKA_PARTITION_UA, 0, c->msgs, R.batch);
  if (n != R.batch) {
    /* The refused records need not be the last ones: name the first. */
    for (int i = 0; i < R.batch; i++)
      if (c->msgs[i].err) bench_die("rd_kafka_produce_batch", rd_kafka_err2str(c->msgs[i].err));
    bench_die("rd_kafka_produce_batch", "records refused");
  }
  c->pending = R.batch;
  R.submitted += R.batch;
}

static void clp_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  (void)opaque;
  clp_client *c = m->_private;
  if (m->err) bench_die("delivery", rd_kafka_err2str(m->err));
  R.acked++;
  /* The whole upload is in Kafka: the client's next one goes out, as after a 202. */
  if (--c->pending > 0 || R.submitted >= R.want) return;
  if (R.think_ns) c->due_ns = bench_now_ns(CLOCK_MONOTONIC) + R.think_ns;
  else clp_submit(c);
}

/* Serves delivery reports until every wanted record is acknowledged, and sends each waiting
 * upload once its think time is over. WAKE is the read end of the pipe librdkafka writes to
 * when its main queue gets a report. */
static void clp_serve(rd_kafka_t *rk, int wake) {
  while (R.acked < R.want) {
    uint64_t now = bench_now_ns(CLOCK_MONOTONIC), next = 0;
    for (int i = 0; i < R.nclients; i++) {
      clp_client *c = &R.clients[i];
      if (!c->due_ns) continue;
      if (c->due_ns <= now) {
        c->due_ns = 0;
        if (R.submitted < R.want) clp_submit(c);
      } else if (!next || c->due_ns < next) {
        next = c->due_ns;
      }
    }
    /* Until a report arrives or the next upload is due (at most 100 ms: a lost report ends
     * in a delivery error after message.timeout.ms, which rd_kafka_poll serves). */
    uint64_t wait = next ? next - now : 100000000u;
    if (wait > 100000000u) wait = 100000000u;
    struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000u),
                          .tv_nsec = (long)(wait % 1000000000u)};
    struct pollfd pfd = {.fd = wake, .events = POLLIN};
    if (ppoll(&pfd, 1, &ts, NULL) > 0) {
      char drain[64];
      while (read(wake, drain, sizeof(drain)) > 0) {
      }
    }
    rd_kafka_poll(rk, 0);
  }
}

int main(int argc, char **argv) {
  if (argc < 8) {
    fprintf(stderr, "usage: closed_loop_produce BROKER TOPIC N CLIENTS BATCH KEY RECORD "
                    "[PROP=VALUE ...]\n");
    return 2;
  }
  long long n = clp_arg(argv[3], "N", 1, INT64_MAX / 2);
  R.nclients = (int)clp_arg(argv[4], "CLIENTS", 1, 100000);
  R.batch = (int)clp_arg(argv[5], "BATCH", 1, 1000000);
  R.key = argv[6];
  R.key_len = strlen(R.key);
  R.record = argv[7];
  R.record_len = strlen(R.record);
  const char *think = getenv("THINK_US");
  R.think_ns = think ? (uint64_t)clp_arg(think, "THINK_US", 0, 60000000) * 1000u : 0;
  /* ppoll's timeouts as asked, not rounded up by the default 50 us of timer slack. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);

  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  bench_conf_set(conf, "bootstrap.servers", argv[1]);
  bench_conf_set_words(conf, argv + 8, argc - 8);
  rd_kafka_conf_set_dr_msg_cb(conf, clp_on_delivery);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) bench_die("rd_kafka_new", err);
  R.rkt = rd_kafka_topic_new(rk, argv[2], NULL);
  if (!R.rkt) bench_die("rd_kafka_topic_new", rd_kafka_err2str(rd_kafka_last_error()));

  /* Reports wake clp_serve through a pipe, as they wake the services' libuv loops. */
  int wake[2];
  if (pipe2(wake, O_NONBLOCK) != 0) bench_die("pipe2", strerror(errno));
  rd_kafka_queue_t *main_q = rd_kafka_queue_get_main(rk);
  rd_kafka_queue_io_event_enable(main_q, wake[1], "1", 1);

  R.clients = bench_calloc((size_t)R.nclients, sizeof(*R.clients));
  for (int i = 0; i < R.nclients; i++)
    R.clients[i].msgs = bench_calloc((size_t)R.batch, sizeof(rd_kafka_message_t));

  /* Untimed: connect, get the producer id, learn the partitions. */
  R.want = R.batch;
  clp_submit(&R.clients[0]);
  clp_serve(rk, wake[0]);

  /* Timed: whole uploads until N records are acknowledged. */
  R.want = (n + R.batch - 1) / R.batch * R.batch;
  R.submitted = R.acked = 0;
  uint64_t c0 = clp_cpu_us(), t0 = bench_now_ns(CLOCK_MONOTONIC);
  for (int i = 0; i < R.nclients && R.submitted < R.want; i++) clp_submit(&R.clients[i]);
  clp_serve(rk, wake[0]);
  uint64_t t1 = bench_now_ns(CLOCK_MONOTONIC), c1 = clp_cpu_us();
  printf("CLOSED accepted=%lld duration_us=%llu cpu_us=%llu\n", R.acked,
         (unsigned long long)((t1 - t0) / 1000u), (unsigned long long)(c1 - c0));

  rd_kafka_queue_io_event_enable(main_q, -1, NULL, 0);
  rd_kafka_queue_destroy(main_q);
  rd_kafka_flush(rk, 10000);
  for (int i = 0; i < R.nclients; i++) free(R.clients[i].msgs);
  free(R.clients);
  rd_kafka_topic_destroy(R.rkt);
  rd_kafka_destroy(rk);
  close(wake[0]);
  close(wake[1]);
  return 0;
}
