/* kpi_kafka.c: Kafka client configuration, topic creation and libuv integration. */
#include "kpi_kafka.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kpi_env.h"
#include "kpi_log.h"

extern char **environ;

static const struct {
  const char *env;
  const char *def;
  int partitions;
} topic_defaults[KPI_TOPIC_COUNT] = {
    {"KPI_TOPIC_MEASUREMENTS", "kpi.measurements.v1", 6},
    {"KPI_TOPIC_ALERTS", "kpi.alerts.v1", 3},
    {"KPI_TOPIC_MEASUREMENTS_DLQ", "kpi.measurements.dlq.v1", 1},
    {"KPI_TOPIC_ALERTS_DLQ", "kpi.alerts.dlq.v1", 1},
};

int kpi_topics_from_env(kpi_topic_spec specs[KPI_TOPIC_COUNT], char *errstr, size_t errstr_size) {
  int64_t repl;
  if (kpi_env_int("KPI_TOPIC_REPLICATION", 1, 1, 32, &repl, errstr, errstr_size)) return -1;
  for (int i = 0; i < KPI_TOPIC_COUNT; i++) {
    const char *name = kpi_env_str(topic_defaults[i].env, topic_defaults[i].def);
    if (strlen(name) >= sizeof(specs[i].name)) {
      snprintf(errstr, errstr_size, "%s: topic name too long", topic_defaults[i].env);
      return -1;
    }
    snprintf(specs[i].name, sizeof(specs[i].name), "%s", name);
    char var[64];
    snprintf(var, sizeof(var), "%s_PARTITIONS", topic_defaults[i].env);
    int64_t parts;
    if (kpi_env_int(var, topic_defaults[i].partitions, 1, 10000, &parts, errstr, errstr_size))
      return -1;
    specs[i].partitions = (int)parts;
    specs[i].replication = (int)repl;
  }
  return 0;
}

/* Whether NAME's value must never be echoed into a log or an error: passwords, secrets, keys
 * (and key paths), JAAS settings, and sasl.oauthbearer.config, which may carry a client
 * secret. Masking a harmless value costs nothing; leaking one cannot be undone. */
static bool prop_is_secret(const char *name) {
  return strstr(name, "password") || strstr(name, "secret") || strstr(name, "key") ||
         strstr(name, "jaas") || strstr(name, "oauthbearer.config");
}

int kpi_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                       char *errstr, size_t errstr_size) {
  char err[256];
  if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
    snprintf(errstr, errstr_size, "kafka property %s=%s: %s", name,
             prop_is_secret(name) ? "***" : value, err);
    return -1;
  }
  return 0;
}

void kpi_kafka_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  (void)rk;
  /* syslog levels: 0-3 error, 4 warning, 5-6 notice/info, 7 debug. */
  kpi_log_level lv = level <= 3   ? KPI_LOG_ERROR
                     : level == 4 ? KPI_LOG_WARN
                     : level <= 6 ? KPI_LOG_INFO
                                  : KPI_LOG_DEBUG;
  kpi_log(lv, "kafka_log", "%s: %s", fac, buf);
}

int kpi_kafka_prop_env_name(const char *prop, char *var, size_t var_size) {
  size_t plen = sizeof(KPI_KAFKA_PROP_PREFIX) - 1, n = strlen(prop);
  if (plen + n + 1 > var_size) return -1;
  memcpy(var, KPI_KAFKA_PROP_PREFIX, plen);
  for (size_t i = 0; i < n; i++)
    var[plen + i] = prop[i] == '.' ? '_' : (char)toupper((unsigned char)prop[i]);
  var[plen + n] = '\0';
  return 0;
}

static int conf_set_list(rd_kafka_conf_t *conf, const kpi_kafka_prop *props, char *errstr,
                         size_t errstr_size) {
  for (const kpi_kafka_prop *p = props; p && p->name; p++)
    if (kpi_kafka_conf_set(conf, p->name, p->value, errstr, errstr_size)) return -1;
  return 0;
}

/* The entry of PROPS (NULL-name terminated, or NULL) named NAME, or NULL. */
static const kpi_kafka_prop *prop_find(const kpi_kafka_prop *props, const char *name) {
  for (const kpi_kafka_prop *p = props; p && p->name; p++)
    if (strcmp(p->name, name) == 0) return p;
  return NULL;
}

static bool prop_listed(const kpi_kafka_prop *props, const char *name) {
  return prop_find(props, name) != NULL;
}

/* The property an environment entry ENTRY ("KPI_KAFKA_PROP_LINGER_MS=5") passes through, into
 * PROP ("linger.ms"), with *VALUE at its value (so the variable's name is the VALUE - 1 - ENTRY
 * bytes before it). Returns 1, 0 when ENTRY is not a passthrough variable, or -1 (*VALUE set
 * all the same) when its name cannot be a property (empty, or too long for PROP). */
static int env_prop(const char *entry, char prop[128], const char **value) {
  const size_t plen = sizeof(KPI_KAFKA_PROP_PREFIX) - 1;
  if (strncmp(entry, KPI_KAFKA_PROP_PREFIX, plen) != 0) return 0;
  const char *eq = strchr(entry, '=');
  if (!eq) return 0;
  *value = eq + 1;
  size_t n = (size_t)(eq - entry) - plen;
  if (n == 0 || n >= 128) return -1;
  for (size_t i = 0; i < n; i++) {
    char c = entry[plen + i];
    prop[i] = c == '_' ? '.' : (char)tolower((unsigned char)c);
  }
  prop[n] = '\0';
  return 1;
}

/* Room kept at the end of a summary for its " (+N not shown)" note. */
#define SUMMARY_NOTE_ROOM 32

typedef struct {
  char *out;
  size_t cap;     /* bytes the pairs may use, the terminating NUL included */
  size_t len;
  size_t omitted; /* pairs that did not fit, or whose value is longer than 511 bytes */
} conf_summary;

/* Whether an environment entry before E passes the same property PROP through (one property
 * spelt twice: KPI_KAFKA_PROP_LINGER_MS and KPI_KAFKA_PROP_linger_ms). */
static bool env_prop_earlier(char **e, const char *prop) {
  for (char **d = environ; d < e; d++) {
    char other[128];
    const char *value;
    if (env_prop(*d, other, &value) == 1 && strcmp(other, prop) == 0) return true;
  }
  return false;
}

/* Appends " NAME=VALUE" to S, VALUE as CONF holds it ("***" when secret), unless librdkafka
 * does not know NAME. A pair that does not fit, or whose value is longer than 511 bytes, is
 * counted in S->omitted instead. */
static void summary_add(conf_summary *s, const rd_kafka_conf_t *conf, const char *name) {
  char value[512];
  size_t vlen = sizeof(value);
  if (rd_kafka_conf_get(conf, name, value, &vlen) != RD_KAFKA_CONF_OK) return;
  /* librdkafka copies what fits and reports the whole length: a longer value was cut. */
  int n = vlen > sizeof(value) ? -1
                               : snprintf(s->out + s->len, s->cap - s->len, "%s%s=%s",
                                          s->len ? " " : "", name,
                                          prop_is_secret(name) ? "***" : value);
  if (n < 0 || (size_t)n >= s->cap - s->len) {
    s->out[s->len] = '\0';
    s->omitted++;
    return;
  }
  s->len += (size_t)n;
}

size_t kpi_kafka_conf_summary(const rd_kafka_conf_t *conf, const kpi_kafka_prop *defaults,
                              const kpi_kafka_prop *fixed, char *out, size_t size) {
  if (size <= SUMMARY_NOTE_ROOM) {
    if (size) out[0] = '\0';
    return 0;
  }
  conf_summary s = {.out = out, .cap = size - SUMMARY_NOTE_ROOM, .len = 0, .omitted = 0};
  out[0] = '\0';
  summary_add(&s, conf, "bootstrap.servers");
  for (const kpi_kafka_prop *p = defaults; p && p->name; p++) summary_add(&s, conf, p->name);
  for (char **e = environ; *e; e++) {
    char prop[128];
    const char *value;
    if (env_prop(*e, prop, &value) == 1 && strcmp(prop, "bootstrap.servers") != 0 &&
        !prop_listed(defaults, prop) && !prop_listed(fixed, prop) && !env_prop_earlier(e, prop))
      summary_add(&s, conf, prop);
  }
  for (const kpi_kafka_prop *p = fixed; p && p->name; p++)
    if (!prop_listed(defaults, p->name)) summary_add(&s, conf, p->name);
  if (s.omitted) {
    int n = snprintf(out + s.len, size - s.len, "%s(+%zu not shown)", s.len ? " " : "",
                     s.omitted);
    if (n > 0) s.len += (size_t)n;
  }
  return s.len;
}

rd_kafka_conf_t *kpi_kafka_conf_new(const char *client_id, const kpi_kafka_prop *defaults,
                                    const kpi_kafka_prop *fixed, char *errstr,
                                    size_t errstr_size) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set_log_cb(conf, kpi_kafka_on_log);
  if (kpi_kafka_conf_set(conf, "bootstrap.servers",
                         kpi_env_str("KPI_KAFKA_BOOTSTRAP", "127.0.0.1:9092"), errstr,
                         errstr_size) ||
      kpi_kafka_conf_set(conf, "client.id", client_id, errstr, errstr_size) ||
      conf_set_list(conf, defaults, errstr, errstr_size))
    goto err;
  for (char **e = environ; *e; e++) {
    char prop[128];
    const char *value;
    int rc = env_prop(*e, prop, &value);
    if (rc == 0) continue;
    int name_len = (int)(value - 1 - *e);
    if (rc < 0) {
      snprintf(errstr, errstr_size, "%.*s: not a librdkafka property name", name_len, *e);
      goto err;
    }
    const kpi_kafka_prop *f = prop_find(fixed, prop);
    if (f) {
      snprintf(errstr, errstr_size, "%.*s: %s is set by the service (%s) and cannot be overridden",
               name_len, *e, prop, f->value);
      goto err;
    }
    if (kpi_kafka_conf_set(conf, prop, value, errstr, errstr_size)) goto err;
  }
  if (conf_set_list(conf, fixed, errstr, errstr_size)) goto err;
  /* The settings this client runs with, once at start (docs/operations.md "Kafka client
   * settings"): what an operator's KPI_KAFKA_PROP_* changed, and what the benches give their
   * baselines. */
  if (kpi_log_enabled(KPI_LOG_INFO)) {
    char summary[1536];
    kpi_kafka_conf_summary(conf, defaults, fixed, summary, sizeof(summary));
    kpi_log(KPI_LOG_INFO, "kafka_config", "%s: %s", client_id, summary);
  }
  return conf;
err:
  rd_kafka_conf_destroy(conf);
  return NULL;
}

int kpi_kafka_ensure_topics(rd_kafka_t *rk, const kpi_topic_spec *specs, size_t n,
                            int timeout_ms, char *errstr, size_t errstr_size) {
  rd_kafka_NewTopic_t **topics = calloc(n, sizeof(*topics));
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_event_t *ev = NULL;
  int rc = -1;
  char err[256];
  if (!topics) {
    snprintf(errstr, errstr_size, "out of memory");
    goto out;
  }
  rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, err, sizeof(err));
  rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, err, sizeof(err));
  for (size_t i = 0; i < n; i++) {
    topics[i] = rd_kafka_NewTopic_new(specs[i].name, specs[i].partitions, specs[i].replication,
                                      err, sizeof(err));
    if (!topics[i]) {
      snprintf(errstr, errstr_size, "topic %s: %s", specs[i].name, err);
      goto out;
    }
  }
  rd_kafka_CreateTopics(rk, topics, n, opts, q);
  ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
  if (!ev) {
    snprintf(errstr, errstr_size, "creating topics: no answer from the broker in %d ms",
             timeout_ms);
    goto out;
  }
  if (rd_kafka_event_error(ev)) {
    snprintf(errstr, errstr_size, "creating topics: %s", rd_kafka_event_error_string(ev));
    goto out;
  }
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t cnt;
  const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(res, &cnt);
  rc = 0;
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
    if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      snprintf(errstr, errstr_size, "topic %s: %s", rd_kafka_topic_result_name(results[i]),
               rd_kafka_topic_result_error_string(results[i])
                   ? rd_kafka_topic_result_error_string(results[i])
                   : rd_kafka_err2str(e));
      rc = -1;
      break;
    }
  }
out:
  if (ev) rd_kafka_event_destroy(ev);
  if (topics) {
    for (size_t i = 0; i < n; i++)
      if (topics[i]) rd_kafka_NewTopic_destroy(topics[i]);
    free(topics);
  }
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_queue_destroy(q);
  return rc;
}

static void on_uv_waker_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  kpi_kafka_waker *w = handle->data;
  char buf[256];
  /* Drain every wake-up byte first: a byte written while we serve the queue below then
   * triggers another callback instead of being lost. */
  while (read(w->fds[0], buf, sizeof(buf)) > 0) {
  }
  if (status < 0) return;
  w->on_ready(w);
}

int kpi_kafka_waker_init(uv_loop_t *loop, kpi_kafka_waker *w, rd_kafka_queue_t *queue,
                         kpi_kafka_waker_cb on_ready) {
  w->queue = queue;
  w->serving = false;
  w->retired = NULL;
  w->on_ready = on_ready;
  if (pipe2(w->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    int e = -errno;
    rd_kafka_queue_destroy(queue);
    w->queue = NULL;
    return e;
  }
  int rc = uv_poll_init(loop, &w->poll, w->fds[0]);
  if (rc) {
    close(w->fds[0]);
    close(w->fds[1]);
    rd_kafka_queue_destroy(queue);
    w->queue = NULL;
    return rc;
  }
  w->poll.data = w;
  rd_kafka_queue_io_event_enable(queue, w->fds[1], "1", 1);
  rc = uv_poll_start(&w->poll, UV_READABLE, on_uv_waker_readable);
  /* The queue may already hold events from before the io event was enabled, and librdkafka
   * only writes on an empty-to-non-empty transition: wake once now so they are served. */
  if (rc == 0 && write(w->fds[1], "1", 1) < 0) rc = -errno;
  return rc;
}

void kpi_kafka_waker_serve(kpi_kafka_waker *w) {
  /* W->queue is re-read each time: a callback that closed the waker set it to NULL and left
   * it in W->retired, since librdkafka still reads the queue handle after the callbacks ran. */
  w->serving = true;
  while (w->queue && rd_kafka_queue_poll_callback(w->queue, 0) > 0) {
  }
  w->serving = false;
  if (w->retired) {
    rd_kafka_queue_destroy(w->retired);
    w->retired = NULL;
  }
}

static void on_uv_waker_closed(uv_handle_t *h) {
  kpi_kafka_waker *w = h->data;
  close(w->fds[0]);
  close(w->fds[1]);
  if (w->on_closed) w->on_closed(h);
}

void kpi_kafka_waker_close(kpi_kafka_waker *w, uv_close_cb on_closed) {
  if (w->queue) {
    rd_kafka_queue_io_event_enable(w->queue, -1, NULL, 0);
    if (w->serving) w->retired = w->queue;
    else rd_kafka_queue_destroy(w->queue);
    w->queue = NULL;
  }
  w->on_closed = on_closed;
  uv_close((uv_handle_t *)&w->poll, on_uv_waker_closed);
}
