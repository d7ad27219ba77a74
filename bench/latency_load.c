/* bench/latency_load.c: open-loop load and observers for bench/bench_latency.sh (not a service).
 *
 *   latency_load http HOST:PORT RATE SECONDS CONNS TEMPLATES OUT
 *     POSTs RATE requests/s for SECONDS, open loop: a 1 ms timer writes every request due by
 *     then, on an idle keep-alive connection, or pipelined behind the least busy one when all
 *     CONNS are busy (counted, never waited for). TEMPLATES: lines MEASURE<TAB>TOKEN<TAB>BODY,
 *     used in turn. OUT: one line per request "index template write_ns answer_ns status".
 *   latency_load poll CONNINFO INTERVAL_US OUT
 *     until SIGTERM: reads `attainment` (measure_id, events, updated_at) every INTERVAL_US and
 *     writes "seen_ns measure_id events updated_at_us" whenever a measure's events changed;
 *     seen_ns is taken when the answer arrived (an upper bound of the commit's visibility).
 *   latency_load kafka BROKER TOPIC RATE SECONDS OUT PROP=VALUE... -- PROP=VALUE...
 *     creates TOPIC (6 partitions), produces RATE records/s for SECONDS with the producer
 *     settings before `--` and consumes them in another thread, in a group of its own, with
 *     the consumer settings after it. bench_latency.sh passes the ingest's producer settings
 *     and the evaluator's consumer settings as the services logged them at start (their
 *     kafka_config lines). OUT: one line per record "seq produce_ns delivered_ns consumed_ns".
 * Every timestamp is CLOCK_REALTIME in ns, comparable with PostgreSQL's now() on this machine.
 * See bench/README.md "Latency".
 */
#include <errno.h>
#include <http_parser.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define BENCH_TOOL "latency_load"
#include "bench_tool.h"

#define LAT_MAX_TEMPLATES 64
#define LAT_RING 4096 /* requests in flight per connection; a power of two */
#define LAT_DRAIN_S 30 /* seconds allowed after the last request for the answers */
#define LAT_PAD 240    /* payload padding: about the size of an ingest record */

/* Every timestamp is CLOCK_REALTIME, comparable with PostgreSQL's now() (header). */
static uint64_t lat_now_ns(void) { return bench_now_ns(CLOCK_REALTIME); }

/* ---------------------------------------------------------------- http ---- */

typedef struct lat_gen lat_gen;

typedef struct {
  uv_tcp_t tcp;
  http_parser parser;
  lat_gen *gen;
  uint32_t ring[LAT_RING];
  unsigned head, count;
  char rbuf[65536];
} lat_conn;

struct lat_gen {
  uv_loop_t *loop;
  uv_timer_t tick, deadline;
  http_parser_settings settings;
  lat_conn *conns;
  int nconn, connected, next;
  char *req[LAT_MAX_TEMPLATES];
  size_t req_len[LAT_MAX_TEMPLATES];
  int ntmpl;
  double rate;
  uint64_t total, sent, done, pipelined, t0;
  uint64_t *write_ns, *answer_ns;
  uint16_t *status;
  uv_write_t *writes;
  bool stopped;
};

/* Reads TEMPLATES into complete HTTP requests, one per line. */
static void lat_templates_load(lat_gen *g, const char *path, const char *hostport) {
  FILE *f = fopen(path, "r");
  if (!f) bench_die(path, strerror(errno));
  char line[8192];
  while (fgets(line, sizeof(line), f) && g->ntmpl < LAT_MAX_TEMPLATES) {
    line[strcspn(line, "\n")] = '\0';
    char *tok = strchr(line, '\t');
    char *body = tok ? strchr(tok + 1, '\t') : NULL;
    if (!body) bench_die(path, "a line is not MEASURE<TAB>TOKEN<TAB>BODY");
    *body++ = '\0';
    tok++;
    size_t cap = strlen(tok) + strlen(body) + strlen(hostport) + 256;
    char *r = bench_calloc(1, cap);
    int n = snprintf(r, cap,
                     "POST /v1/measurements HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     hostport, tok, strlen(body), body);
    g->req[g->ntmpl] = r;
    g->req_len[g->ntmpl++] = (size_t)n;
  }
  fclose(f);
  if (g->ntmpl == 0) bench_die(path, "no templates");
}

static void on_uv_closed(uv_handle_t *h) { (void)h; }

static void lat_gen_stop(lat_gen *g) {
  if (g->stopped) return;
  g->stopped = true;
  uv_timer_stop(&g->tick);
  uv_timer_stop(&g->deadline);
  for (int i = 0; i < g->nconn; i++)
    if (!uv_is_closing((uv_handle_t *)&g->conns[i].tcp))
      uv_close((uv_handle_t *)&g->conns[i].tcp, on_uv_closed);
  uv_close((uv_handle_t *)&g->tick, on_uv_closed);
  uv_close((uv_handle_t *)&g->deadline, on_uv_closed);
}

static int on_http_complete(http_parser *p) {
  lat_conn *c = p->data;
  lat_gen *g = c->gen;
  if (c->count == 0) bench_die("http", "an answer without a request");
  uint32_t i = c->ring[c->head];
  c->head = (c->head + 1) & (LAT_RING - 1);
  c->count--;
  g->answer_ns[i] = lat_now_ns();
  g->status[i] = (uint16_t)p->status_code;
  if (++g->done == g->total) lat_gen_stop(g);
  return 0;
}

static void on_uv_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  lat_conn *c = h->data;
  *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_uv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  lat_conn *c = s->data;
  if (nread == 0) return;
  if (nread < 0) bench_die("http read", uv_strerror((int)nread));
  size_t used = http_parser_execute(&c->parser, &c->gen->settings, buf->base, (size_t)nread);
  if (used != (size_t)nread)
    bench_die("http parse", http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
}

static void on_uv_write(uv_write_t *w, int status) {
  (void)w;
  if (status < 0) bench_die("http write", uv_strerror(status));
}

/* The connection for the next request: the first idle one after the last used (so the load
 * is spread), else the one with the fewest requests in flight (pipelining, counted). */
static lat_conn *lat_conn_pick(lat_gen *g) {
  int best = -1;
  for (int k = 0; k < g->nconn; k++) {
    int i = (g->next + k) % g->nconn;
    if (g->conns[i].count == 0) {
      best = i;
      break;
    }
    if (best < 0 || g->conns[i].count < g->conns[best].count) best = i;
  }
  if (g->conns[best].count > 0) g->pipelined++;
  if (g->conns[best].count == LAT_RING) bench_die("http", "too many requests in flight");
  g->next = (best + 1) % g->nconn;
  return &g->conns[best];
}

static void on_uv_tick(uv_timer_t *t) {
  lat_gen *g = t->data;
  uint64_t now = lat_now_ns();
  uint64_t due = (uint64_t)((double)(now - g->t0) * g->rate / 1e9) + 1;
  if (due > g->total) due = g->total;
  while (g->sent < due) {
    uint32_t i = (uint32_t)g->sent++;
    int m = (int)(i % (uint32_t)g->ntmpl);
    lat_conn *c = lat_conn_pick(g);
    c->ring[(c->head + c->count++) & (LAT_RING - 1)] = i;
    uv_buf_t b = uv_buf_init(g->req[m], (unsigned)g->req_len[m]);
    g->write_ns[i] = lat_now_ns();
    int rc = uv_write(&g->writes[i], (uv_stream_t *)&c->tcp, &b, 1, on_uv_write);
    if (rc) bench_die("uv_write", uv_strerror(rc));
  }
  if (g->sent == g->total) uv_timer_stop(&g->tick);
}

static void on_uv_deadline(uv_timer_t *t) {
  lat_gen *g = t->data;
  fprintf(stderr, "latency_load: %llu of %llu answers after the deadline\n",
          (unsigned long long)g->done, (unsigned long long)g->total);
  lat_gen_stop(g);
}

static void on_uv_connect(uv_connect_t *req, int status) {
  lat_conn *c = req->data;
  lat_gen *g = c->gen;
  free(req);
  if (status < 0) bench_die("connect", uv_strerror(status));
  c->tcp.data = c;
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_uv_alloc, on_uv_read);
  if (++g->connected < g->nconn) return;
  g->t0 = lat_now_ns();
  uv_timer_start(&g->tick, on_uv_tick, 0, 1);
  uint64_t run_ms = (uint64_t)((double)g->total / g->rate * 1000.0);
  uv_timer_start(&g->deadline, on_uv_deadline, run_ms + LAT_DRAIN_S * 1000, 0);
}

static void lat_conns_open(lat_gen *g, const char *hostport) {
  char host[256];
  snprintf(host, sizeof(host), "%s", hostport);
  char *colon = strrchr(host, ':');
  if (!colon) bench_die(hostport, "not HOST:PORT");
  *colon = '\0';
  struct sockaddr_in addr;
  if (uv_ip4_addr(host, atoi(colon + 1), &addr)) bench_die(hostport, "not an IPv4 address");
  for (int i = 0; i < g->nconn; i++) {
    lat_conn *c = &g->conns[i];
    c->gen = g;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    uv_tcp_init(g->loop, &c->tcp);
    uv_connect_t *req = bench_calloc(1, sizeof(*req));
    req->data = c;
    int rc = uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)&addr, on_uv_connect);
    if (rc) bench_die("uv_tcp_connect", uv_strerror(rc));
  }
}

static void lat_gen_write(const lat_gen *g, const char *out) {
  FILE *f = fopen(out, "w");
  if (!f) bench_die(out, strerror(errno));
  for (uint64_t i = 0; i < g->total; i++)
    fprintf(f, "%llu %llu %llu %llu %u\n", (unsigned long long)i,
            (unsigned long long)(i % (uint64_t)g->ntmpl), (unsigned long long)g->write_ns[i],
            (unsigned long long)g->answer_ns[i], (unsigned)g->status[i]);
  if (fclose(f)) bench_die(out, strerror(errno));
  fprintf(stderr, "latency_load: http: %llu requests, %llu answered, %llu pipelined\n",
          (unsigned long long)g->total, (unsigned long long)g->done,
          (unsigned long long)g->pipelined);
}

static int lat_http_main(int argc, char **argv) {
  if (argc != 8) bench_die("usage", "http HOST:PORT RATE SECONDS CONNS TEMPLATES OUT");
  static lat_gen g;
  g.loop = uv_default_loop();
  g.rate = atof(argv[3]);
  g.total = (uint64_t)(g.rate * atof(argv[4]));
  g.nconn = atoi(argv[5]);
  if (g.rate <= 0 || g.total == 0 || g.nconn <= 0) bench_die("usage", "RATE, SECONDS, CONNS > 0");
  lat_templates_load(&g, argv[6], argv[2]);
  g.settings.on_message_complete = on_http_complete;
  g.conns = bench_calloc((size_t)g.nconn, sizeof(lat_conn));
  g.write_ns = bench_calloc(g.total, sizeof(uint64_t));
  g.answer_ns = bench_calloc(g.total, sizeof(uint64_t));
  g.status = bench_calloc(g.total, sizeof(uint16_t));
  g.writes = bench_calloc(g.total, sizeof(uv_write_t));
  uv_timer_init(g.loop, &g.tick);
  uv_timer_init(g.loop, &g.deadline);
  g.tick.data = g.deadline.data = &g;
  for (int i = 0; i < g.nconn; i++) g.conns[i].tcp.data = &g.conns[i];
  lat_conns_open(&g, argv[2]);
  uv_run(g.loop, UV_RUN_DEFAULT);
  lat_gen_write(&g, argv[7]);
  return g.done == g.total ? 0 : 1;
}

/* ---------------------------------------------------------------- poll ---- */

static volatile sig_atomic_t lat_stop;

static void on_signal_stop(int sig) {
  (void)sig;
  lat_stop = 1;
}

typedef struct {
  char id[128];
  long long events;
} lat_seen;

/* One read of attainment; writes the rows whose events changed since the last read. */
static void lat_poll_once(PGconn *db, FILE *out, lat_seen *seen, int *nseen) {
  PGresult *r = PQexecParams(db,
                             "SELECT measure_id, events,"
                             " (extract(epoch FROM updated_at) * 1000000)::bigint AS upd"
                             " FROM attainment",
                             0, NULL, NULL, NULL, NULL, 0);
  uint64_t t = lat_now_ns();
  if (PQresultStatus(r) != PGRES_TUPLES_OK) bench_die("poll", PQerrorMessage(db));
  int cid = PQfnumber(r, "measure_id"), cev = PQfnumber(r, "events"), cup = PQfnumber(r, "upd");
  for (int i = 0; i < PQntuples(r); i++) {
    const char *id = PQgetvalue(r, i, cid);
    long long ev = atoll(PQgetvalue(r, i, cev));
    int k = 0;
    while (k < *nseen && strcmp(seen[k].id, id) != 0) k++;
    if (k == *nseen) {
      if (*nseen == 1024) continue;
      snprintf(seen[k].id, sizeof(seen[k].id), "%s", id);
      seen[k].events = -1;
      (*nseen)++;
    }
    if (seen[k].events == ev) continue;
    seen[k].events = ev;
    fprintf(out, "%llu %s %lld %s\n", (unsigned long long)t, id, ev, PQgetvalue(r, i, cup));
  }
  PQclear(r);
}

static int lat_poll_main(int argc, char **argv) {
  if (argc != 5) bench_die("usage", "poll CONNINFO INTERVAL_US OUT");
  PGconn *db = PQconnectdb(argv[2]);
  if (PQstatus(db) != CONNECTION_OK) bench_die("poll", PQerrorMessage(db));
  long interval_us = atol(argv[3]);
  FILE *out = fopen(argv[4], "w");
  if (!out) bench_die(argv[4], strerror(errno));
  signal(SIGTERM, on_signal_stop);
  signal(SIGINT, on_signal_stop);
  static lat_seen seen[1024];
  int nseen = 0;
  uint64_t polls = 0;
  while (!lat_stop) {
    lat_poll_once(db, out, seen, &nseen);
    polls++;
    struct timespec ts = {interval_us / 1000000, (interval_us % 1000000) * 1000};
    nanosleep(&ts, NULL);
  }
  fprintf(stderr, "latency_load: poll: %llu reads\n", (unsigned long long)polls);
  PQfinish(db);
  return fclose(out) ? 1 : 0;
}

/* --------------------------------------------------------------- kafka ---- */

typedef struct {
  rd_kafka_t *producer, *consumer;
  const char *topic;
  uint64_t total;
  uint64_t *produce_ns, *delivered_ns, *consumed_ns;
  atomic_ullong consumed;
  atomic_bool assigned, stop;
} lat_kafka;

static void on_kafka_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  lat_kafka *k = opaque;
  if (m->err) bench_die("delivery", rd_kafka_err2str(m->err));
  uintptr_t seq = (uintptr_t)m->_private;
  if (seq < k->total) k->delivered_ns[seq] = lat_now_ns();
}

static void on_kafka_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts, void *opaque) {
  lat_kafka *k = opaque;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    rd_kafka_assign(rk, parts);
    atomic_store(&k->assigned, true);
  } else {
    rd_kafka_assign(rk, NULL);
  }
}

/* A producer with PROPS (N words "PROP=VALUE": the ingest's settings). */
static rd_kafka_t *lat_producer_new(lat_kafka *k, const char *broker, char **props, int n) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  bench_conf_set(conf, "bootstrap.servers", broker);
  bench_conf_set_words(conf, props, n);
  rd_kafka_conf_set_dr_msg_cb(conf, on_kafka_delivery);
  rd_kafka_conf_set_opaque(conf, k);
  char err[512];
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) bench_die("producer", err);
  return rk;
}

/* A consumer with PROPS (N words "PROP=VALUE": the evaluator's settings), in a group of its
 * own. At the steady rates of this bench the evaluator's bounded prefetch never fills, so its
 * fetcher wake-up (docs/evaluator.md "Performance") is not needed here. */
static rd_kafka_t *lat_consumer_new(lat_kafka *k, const char *broker, char **props, int n) {
  char group[256];
  snprintf(group, sizeof(group), "%s.lat", k->topic);
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  bench_conf_set(conf, "bootstrap.servers", broker);
  bench_conf_set_words(conf, props, n);
  bench_conf_set(conf, "group.id", group);
  rd_kafka_conf_set_rebalance_cb(conf, on_kafka_rebalance);
  rd_kafka_conf_set_opaque(conf, k);
  char err[512];
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!rk) bench_die("consumer", err);
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

static void lat_topic_create(rd_kafka_t *rk, const char *topic) {
  char err[512];
  rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 6, 1, err, sizeof(err));
  if (!nt) bench_die("NewTopic", err);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
  if (!ev) bench_die("CreateTopics", "no answer in 15 s");
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t n = 0;
  const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;
  if (rd_kafka_event_error(ev)) bench_die("CreateTopics", rd_kafka_event_error_string(ev));
  if (n == 1 && rd_kafka_topic_result_error(tr[0]) &&
      rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
    bench_die("CreateTopics", rd_kafka_topic_result_error_string(tr[0]));
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
}

static void *lat_consume_thread(void *arg) {
  lat_kafka *k = arg;
  while (!atomic_load(&k->stop)) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(k->consumer, 100);
    if (!m) continue;
    uint64_t t = lat_now_ns();
    if (!m->err && m->len > 4 && memcmp(m->payload, "seq=", 4) == 0) {
      char num[24] = {0};
      memcpy(num, (const char *)m->payload + 4, m->len - 4 < 20 ? m->len - 4 : 20);
      uint64_t seq = strtoull(num, NULL, 10);
      if (seq < k->total && k->consumed_ns[seq] == 0) k->consumed_ns[seq] = t;
      atomic_fetch_add(&k->consumed, 1);
    }
    rd_kafka_message_destroy(m);
  }
  return NULL;
}

/* Produces record SEQ (SEQ == total is the warm-up record) with a measure-like key. */
static void lat_produce(lat_kafka *k, uint64_t seq) {
  char payload[32 + LAT_PAD], key[32];
  int n = snprintf(payload, sizeof(payload), "seq=%llu ", (unsigned long long)seq);
  memset(payload + n, 'x', LAT_PAD);
  snprintf(key, sizeof(key), "lat-measure-%llu", (unsigned long long)(seq % 9));
  if (seq < k->total) k->produce_ns[seq] = lat_now_ns();
  rd_kafka_resp_err_t err;
  while ((err = rd_kafka_producev(k->producer, RD_KAFKA_V_TOPIC(k->topic),
                                  RD_KAFKA_V_KEY(key, strlen(key)),
                                  RD_KAFKA_V_VALUE(payload, (size_t)n + LAT_PAD),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_OPAQUE((void *)(uintptr_t)seq), RD_KAFKA_V_END)) ==
         RD_KAFKA_RESP_ERR__QUEUE_FULL)
    rd_kafka_poll(k->producer, 1);
  if (err) bench_die("produce", rd_kafka_err2str(err));
  rd_kafka_poll(k->producer, 0);
}

/* Waits until the consumer is assigned and has read a first record, so that the timed
 * records do not pay for the group join. */
static void lat_kafka_warm(lat_kafka *k) {
  for (int i = 0; i < 300 && !atomic_load(&k->assigned); i++) usleep(100000);
  if (!atomic_load(&k->assigned)) bench_die("kafka", "no partition assignment in 30 s");
  lat_produce(k, k->total);
  rd_kafka_flush(k->producer, 10000);
  for (int i = 0; i < 300 && atomic_load(&k->consumed) == 0; i++) usleep(100000);
  if (atomic_load(&k->consumed) == 0) bench_die("kafka", "the warm-up record was not consumed");
  atomic_store(&k->consumed, 0);
}

static void lat_kafka_pace(lat_kafka *k, double rate) {
  uint64_t t0 = lat_now_ns(), sent = 0;
  while (sent < k->total) {
    uint64_t due = (uint64_t)((double)(lat_now_ns() - t0) * rate / 1e9) + 1;
    while (sent < due && sent < k->total) lat_produce(k, sent++);
    rd_kafka_poll(k->producer, 0);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  rd_kafka_flush(k->producer, 30000);
  uint64_t end = lat_now_ns() + (uint64_t)LAT_DRAIN_S * 1000000000u;
  while (atomic_load(&k->consumed) < k->total && lat_now_ns() < end) usleep(10000);
}

static int lat_kafka_main(int argc, char **argv) {
  int sep = 7;
  while (sep < argc && strcmp(argv[sep], "--") != 0) sep++;
  if (argc < 7 || sep == argc)
    bench_die("usage", "kafka BROKER TOPIC RATE SECONDS OUT PROP=VALUE... -- PROP=VALUE...");
  static lat_kafka k;
  double rate = atof(argv[4]);
  k.topic = argv[3];
  k.total = (uint64_t)(rate * atof(argv[5]));
  if (k.total == 0) bench_die("usage", "RATE, SECONDS > 0");
  k.produce_ns = bench_calloc(k.total, sizeof(uint64_t));
  k.delivered_ns = bench_calloc(k.total, sizeof(uint64_t));
  k.consumed_ns = bench_calloc(k.total, sizeof(uint64_t));
  k.producer = lat_producer_new(&k, argv[2], argv + 7, sep - 7);
  lat_topic_create(k.producer, k.topic);
  k.consumer = lat_consumer_new(&k, argv[2], argv + sep + 1, argc - sep - 1);
  rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(sub, k.topic, RD_KAFKA_PARTITION_UA);
  if (rd_kafka_subscribe(k.consumer, sub)) bench_die("subscribe", k.topic);
  rd_kafka_topic_partition_list_destroy(sub);
  pthread_t th;
  pthread_create(&th, NULL, lat_consume_thread, &k);
  lat_kafka_warm(&k);
  lat_kafka_pace(&k, rate);
  atomic_store(&k.stop, true);
  pthread_join(th, NULL);
  FILE *f = fopen(argv[6], "w");
  if (!f) bench_die(argv[6], strerror(errno));
  for (uint64_t i = 0; i < k.total; i++)
    fprintf(f, "%llu %llu %llu %llu\n", (unsigned long long)i, (unsigned long long)k.produce_ns[i],
            (unsigned long long)k.delivered_ns[i], (unsigned long long)k.consumed_ns[i]);
  fclose(f);
  rd_kafka_consumer_close(k.consumer);
  rd_kafka_destroy(k.consumer);
  rd_kafka_destroy(k.producer);
  return atomic_load(&k.consumed) >= k.total ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "http") == 0) return lat_http_main(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "poll") == 0) return lat_poll_main(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "kafka") == 0) return lat_kafka_main(argc, argv);
  fprintf(stderr, "usage: latency_load http|poll|kafka ...\n");
  return 2;
}
