/* ingest_kafka.c: ingest's idempotent producer, woken on the loop, and its broker probe. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "kpi_log.h"

/* How often the probe runs, and how long its broker calls may take. The calls block, so
 * they run on libuv's thread pool, never on the loop. */
#define PROBE_INTERVAL_MS 1000
#define PROBE_METADATA_TIMEOUT_MS 2000
#define PROBE_CREATE_TIMEOUT_MS 5000

/* Defaults tuned for throughput on one broker; the operator's KPI_KAFKA_PROP_* variables
 * override each of them (kpi_kafka_conf_new applies those after these). */
static const kpi_kafka_prop producer_defaults[] = {
    {"linger.ms", "1"},
    {"batch.num.messages", "10000"},
    {"batch.size", "1000000"},
    {"queue.buffering.max.messages", "100000"},
    {"queue.buffering.max.kbytes", "16384"},
    /* The Java client's partitioner: a record lands on the same partition whichever
     * client wrote it, which keeps one measure's events in order across tools. */
    {"partitioner", "murmur2_random"},
    {"socket.nagle.disable", "true"},
    {NULL, NULL},
};

static void on_kafka_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  ingest_ctx *ctx = opaque;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char why[512];
    rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
    kpi_log(KPI_LOG_ERROR, "kafka_fatal", "%s: %s; draining and exiting for a restart",
            rd_kafka_err2name(orig), why);
    ctx->fatal = true;
    ctx->ready = false;
    kpi_shutdown_begin(&ctx->shutdown, KPI_EXIT_FATAL);
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    if (ctx->ready) kpi_log(KPI_LOG_WARN, "broker_unreachable", "%s", reason);
    ctx->ready = false;
    return;
  }
  kpi_log(KPI_LOG_WARN, "kafka_error", "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err),
          reason);
}

/* ---- probe ---- */

static void on_probe_work(uv_work_t *work) {
  ingest_ctx *ctx = work->data;
  char err[256];
  ctx->probe_result = -1;
  ctx->probe_err[0] = '\0';
  if (ctx->probe_need_topics) {
    if (kpi_kafka_ensure_topics(ctx->rk, &ctx->cfg.topic, 1, PROBE_CREATE_TIMEOUT_MS, err,
                                sizeof(err)) != 0) {
      snprintf(ctx->probe_err, sizeof(ctx->probe_err), "%s", err);
      return;
    }
    ctx->probe_topics_done = true;
  }
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = rd_kafka_metadata(ctx->rk, 0, ctx->rkt, &md, PROBE_METADATA_TIMEOUT_MS);
  if (e) {
    snprintf(ctx->probe_err, sizeof(ctx->probe_err), "metadata: %s", rd_kafka_err2str(e));
    return;
  }
  if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
    snprintf(ctx->probe_err, sizeof(ctx->probe_err), "topic %s: %s", ctx->cfg.topic.name,
             md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "not in metadata");
  } else {
    ctx->probe_result = 0;
    ctx->probe_partitions = md->topics[0].partition_cnt;
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
      if (md->topics[0].partitions[i].leader < 0) {
        snprintf(ctx->probe_err, sizeof(ctx->probe_err), "topic %s: partition %d has no leader",
                 ctx->cfg.topic.name, md->topics[0].partitions[i].id);
        ctx->probe_result = -1;
        break;
      }
  }
  rd_kafka_metadata_destroy(md);
}

static void on_probe_done(uv_work_t *work, int status) {
  ingest_ctx *ctx = work->data;
  ctx->probe_running = false;
  if (status == UV_ECANCELED) return;
  if (ctx->probe_topics_done && !ctx->topics_ok) {
    ctx->topics_ok = true;
    kpi_log(KPI_LOG_INFO, "topics_ready", "topic %s (%d partitions) exists",
            ctx->cfg.topic.name, ctx->cfg.topic.partitions);
  }
  bool ready = ctx->probe_result == 0 && ctx->topics_ok && !ctx->fatal;
  if (ctx->probe_result == 0) ctx->partitions = ctx->probe_partitions;
  if (ready && !ctx->ready) kpi_log(KPI_LOG_INFO, "broker_ready", "broker metadata reachable");
  if (!ready && (ctx->ready || !ctx->topics_ok))
    kpi_log(ctx->topics_ok ? KPI_LOG_WARN : KPI_LOG_INFO, "broker_unreachable",
            "%s; retrying every %d ms", ctx->probe_err[0] ? ctx->probe_err : "not ready",
            PROBE_INTERVAL_MS);
  ctx->ready = ready;
  memcpy(ctx->broker_err, ctx->probe_err, sizeof(ctx->broker_err));
}

void ingest_kafka_probe_now(ingest_ctx *ctx) {
  if (ctx->probe_running || ctx->shutdown.stopping) return;
  ctx->probe_need_topics = !ctx->topics_ok;
  ctx->probe_topics_done = false;
  ctx->probe_work.data = ctx;
  if (uv_queue_work(ctx->loop, &ctx->probe_work, on_probe_work, on_probe_done) == 0)
    ctx->probe_running = true;
}

static void on_uv_probe_timer(uv_timer_t *t) {
  ingest_ctx *ctx = t->data;
  ingest_log_delivery_failures(ctx, 0);
  ingest_kafka_probe_now(ctx);
}

/* ---- life cycle ---- */

int ingest_kafka_start(ingest_ctx *ctx, char *errstr, size_t errstr_size) {
  /* message.timeout.ms is a default too: KPI_KAFKA_PROP_MESSAGE_TIMEOUT_MS wins over
   * KPI_INGEST_DELIVERY_TIMEOUT_MS. */
  char timeout[32];
  snprintf(timeout, sizeof(timeout), "%lld", (long long)ctx->cfg.delivery_timeout_ms);
  kpi_kafka_prop defaults[sizeof(producer_defaults) / sizeof(producer_defaults[0]) + 1];
  memcpy(defaults, producer_defaults, sizeof(producer_defaults));
  size_t n_defaults = sizeof(producer_defaults) / sizeof(producer_defaults[0]);
  defaults[n_defaults - 1] = (kpi_kafka_prop){"message.timeout.ms", timeout};
  defaults[n_defaults] = (kpi_kafka_prop){NULL, NULL};
  /* The delivery contract (docs/ingest.md) rests on these: a 202 promises the record is durably
   * in Kafka. An operator variable that names one of them stops the service at start. */
  static const kpi_kafka_prop fixed[] = {
      {"enable.idempotence", "true"}, {"acks", "all"}, {"log.queue", "true"}, {NULL, NULL}};
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("kpi-ingest", defaults, fixed, errstr, errstr_size);
  if (!conf) return -2; /* a KPI_KAFKA_PROP_* refused: bad configuration */
  char partitioner[32];
  size_t plen = sizeof(partitioner);
  ctx->murmur2_random = rd_kafka_conf_get(conf, "partitioner", partitioner, &plen) ==
                            RD_KAFKA_CONF_OK &&
                        strcmp(partitioner, "murmur2_random") == 0;
  rd_kafka_conf_set_opaque(conf, ctx);
  rd_kafka_conf_set_dr_msg_cb(conf, ingest_on_kafka_delivery);
  rd_kafka_conf_set_error_cb(conf, on_kafka_error);

  char err[512];
  ctx->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!ctx->rk) {
    snprintf(errstr, errstr_size, "producer: %s", err);
    goto err; /* rd_kafka_new leaves CONF to us on failure */
  }
  conf = NULL;
  /* Logs go to the main queue too, so that they are written from the loop thread. */
  rd_kafka_set_log_queue(ctx->rk, NULL);
  ctx->rkt = rd_kafka_topic_new(ctx->rk, ctx->cfg.topic.name, NULL);
  if (!ctx->rkt) {
    snprintf(errstr, errstr_size, "topic %s: %s", ctx->cfg.topic.name,
             rd_kafka_err2str(rd_kafka_last_error()));
    return -1; /* ingest_kafka_destroy frees rk */
  }
  /* The main queue carries only callback-served events (delivery reports, errors, logs):
   * kpi_kafka_waker_serve runs them all on the loop, including any queued before the waker
   * started (kpi_kafka_waker_init wakes once at start). */
  ctx->waker.data = ctx;
  int rc = kpi_kafka_waker_init(ctx->loop, &ctx->waker, rd_kafka_queue_get_main(ctx->rk),
                                kpi_kafka_waker_serve);
  if (rc) {
    snprintf(errstr, errstr_size, "kafka waker: %s", uv_strerror(rc));
    return -1;
  }

  uv_timer_init(ctx->loop, &ctx->probe_timer);
  ctx->probe_timer.data = ctx;
  uv_timer_start(&ctx->probe_timer, on_uv_probe_timer, PROBE_INTERVAL_MS, PROBE_INTERVAL_MS);
  uv_unref((uv_handle_t *)&ctx->probe_timer);
  ingest_kafka_probe_now(ctx);
  return 0;
err:
  if (conf) rd_kafka_conf_destroy(conf);
  return -1;
}

void ingest_kafka_close(ingest_ctx *ctx) {
  if (!uv_is_closing((uv_handle_t *)&ctx->probe_timer))
    uv_close((uv_handle_t *)&ctx->probe_timer, NULL);
  if (ctx->waker.queue) kpi_kafka_waker_close(&ctx->waker, NULL);
  if (ctx->probe_running) uv_cancel((uv_req_t *)&ctx->probe_work);
}

void ingest_kafka_destroy(ingest_ctx *ctx) {
  if (ctx->rkt) rd_kafka_topic_destroy(ctx->rkt);
  ctx->rkt = NULL;
  if (ctx->rk) {
    /* Every record's request was answered before the loop ended, so nothing is left that
     * could call back into freed request state. */
    rd_kafka_resp_err_t e = rd_kafka_flush(ctx->rk, 5000);
    if (e) kpi_log(KPI_LOG_WARN, "kafka_flush", "%s", rd_kafka_err2str(e));
    rd_kafka_destroy(ctx->rk);
    ctx->rk = NULL;
  }
}
