/* test_notifier_util.h: shared helpers of the notifier integration tests (header-only, static). */
#ifndef TEST_NOTIFIER_UTIL_H
#define TEST_NOTIFIER_UTIL_H

#include <librdkafka/rdkafka.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "kpi_codec.h"
#include "kpi_env.h"
#include "kpi_it.h"
#include "kpi_kafka.h"
#include "kpi_uuid.h"

/* One notifier under test, with its own database, topics and group. */
typedef struct {
  char db[64];
  char conninfo[256];
  char topic[128];
  char dlq[128];
  char group[128];
  char tag[64];   /* unique per run: part of every recipient address */
  char log[256];
  int port;
  pid_t pid;
  PGconn *pg;
  rd_kafka_t *producer;
} nf_it;

/* Env strings must outlive the child's putenv; the child copies them on exec. */
static char nf_it_env_buf[32][300];

/* Spawns kpi-notifier for T (db, topics, group and port already set) with the extra settings
 * EXTRA, waits for /readyz and opens T's producer and database connection. */
static inline void nf_it_spawn(nf_it *t, const char *const *extra) {
  t->pg = kpi_it_pg(t->conninfo);
  t->port = kpi_it_free_port();
  const char *env[32];
  int n = 0;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "PGDATABASE=%s", t->db);
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_TOPIC_ALERTS=%s", t->topic);
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_TOPIC_ALERTS_DLQ=%s", t->dlq);
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_NOTIFIER_GROUP=%s", t->group);
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_NOTIFIER_LISTEN=127.0.0.1:%d", t->port);
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_MAIL_FROM=kpi-it@notifier.test");
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_NOTIFY_POLL_MS=200");
  env[n] = nf_it_env_buf[n];
  n++;
  snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "KPI_TOPIC_ALERTS_PARTITIONS=3");
  env[n] = nf_it_env_buf[n];
  n++;
  for (const char *const *e = extra; e && *e && n < 31; e++) {
    snprintf(nf_it_env_buf[n], sizeof(nf_it_env_buf[n]), "%s", *e);
    env[n] = nf_it_env_buf[n];
    n++;
  }
  env[n] = NULL;
  t->pid = kpi_it_spawn("services/notifier/kpi-notifier", env, t->log);
  if (kpi_it_wait_http(t->port, "/readyz", 200, 30000) != 0) {
    fprintf(stderr, "notifier did not become ready; log %s\n", t->log);
    exit(1);
  }
  char err[512];
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("it-notifier-producer", err, sizeof(err));
  if (!conf || kpi_kafka_conf_set(conf, "acks", "all", err, sizeof(err))) {
    fprintf(stderr, "producer conf: %s\n", err);
    exit(1);
  }
  t->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!t->producer) {
    fprintf(stderr, "producer: %s\n", err);
    exit(1);
  }
}

/* Starts kpi-notifier with the extra settings EXTRA ("KEY=VALUE", NULL-terminated, may be
 * NULL) on a database, topics and group of its own, and waits for /readyz. */
static inline void nf_it_start(nf_it *t, const char *name, const char *const *extra) {
  memset(t, 0, sizeof(*t));
  kpi_it_unique(name, t->db, sizeof(t->db));
  snprintf(t->topic, sizeof(t->topic), "%s_alerts", t->db);
  snprintf(t->dlq, sizeof(t->dlq), "%s_alerts_dlq", t->db);
  snprintf(t->group, sizeof(t->group), "%s_group", t->db);
  snprintf(t->tag, sizeof(t->tag), "%s", t->db);
  for (char *p = t->tag; *p; p++)
    if (*p == '_') *p = '-';
  snprintf(t->log, sizeof(t->log), "%s/%s.log", KPI_BINARY_DIR, t->db);
  if (kpi_it_create_db(t->db, t->conninfo, sizeof(t->conninfo)) != 0) {
    fprintf(stderr, "cannot create database %s\n", t->db);
    exit(1);
  }
  nf_it_spawn(t, extra);
}

/* Starts another replica beside FIRST: the same database, topics, group and tag, its own
 * port and log (FIRST's log name with the suffix "_rN"). */
static inline void nf_it_start_replica(nf_it *t, const nf_it *first, int replica,
                                       const char *const *extra) {
  memset(t, 0, sizeof(*t));
  memcpy(t->db, first->db, sizeof(t->db));
  memcpy(t->conninfo, first->conninfo, sizeof(t->conninfo));
  memcpy(t->topic, first->topic, sizeof(t->topic));
  memcpy(t->dlq, first->dlq, sizeof(t->dlq));
  memcpy(t->group, first->group, sizeof(t->group));
  memcpy(t->tag, first->tag, sizeof(t->tag));
  snprintf(t->log, sizeof(t->log), "%s/%s_r%d.log", KPI_BINARY_DIR, first->db, replica);
  nf_it_spawn(t, extra);
}

/* The value of the unlabelled metric NAME on the notifier's /metrics, or -1. */
static inline double nf_it_metric(const nf_it *t, const char *name) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
    close(fd);
    return -1;
  }
  size_t len = 0, cap = 16384;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r <= 0) break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  double v = -1;
  size_t nl = strlen(name);
  for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
    if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
      v = strtod(p + nl + 1, NULL);
      break;
    }
  }
  free(buf);
  return v;
}

/* Stops the notifier with SIGTERM; returns its exit status (0 expected). */
static inline int nf_it_stop(nf_it *t) {
  int status = kpi_it_stop(t->pid, SIGTERM, 30000);
  if (t->producer) rd_kafka_destroy(t->producer);
  t->producer = NULL;
  if (t->pg) PQfinish(t->pg);
  t->pg = NULL;
  if (status == -1 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

static inline bool nf_it_alive(const nf_it *t) { return waitpid(t->pid, NULL, WNOHANG) == 0; }

/* Produces raw bytes to the alerts topic and waits for the acknowledgement. */
static inline void nf_it_produce_raw(nf_it *t, const char *key, const char *value, size_t len) {
  rd_kafka_resp_err_t err = rd_kafka_producev(
      t->producer, RD_KAFKA_V_TOPIC(t->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_END);
  if (err) {
    fprintf(stderr, "produce: %s\n", rd_kafka_err2str(err));
    exit(1);
  }
  if (rd_kafka_flush(t->producer, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    fprintf(stderr, "flush timed out\n");
    exit(1);
  }
}

static inline void nf_it_produce(nf_it *t, const kpi_alert *a) {
  size_t len;
  char *json = kpi_alert_encode(a, &len);
  nf_it_produce_raw(t, a->measure_id, json, len);
  free(json);
}

/* A lagging alert with the given recipients (NULL-terminated). Free with nf_it_alert_free. */
static inline kpi_alert *nf_it_alert(const char *measure_id, const char *name, const char *const *emails) {
  kpi_alert *a = calloc(1, sizeof(*a));
  kpi_uuid_v4(a->alert_id);
  snprintf(a->measure_id, sizeof(a->measure_id), "%s", measure_id);
  strcpy(a->type, "alert");
  strcpy(a->status, "lagging");
  strcpy(a->previous_status, "on_track");
  a->episode = 1;
  a->has_value = true;
  a->value = 30;
  a->progress = 0.2307692;
  a->expected = 0.6;
  strcpy(a->as_of, "2024-10-01");
  a->measure_name = strdup(name);
  a->indicator = strdup("登録者数");
  a->unit = strdup("person");
  a->kind = strdup("level");
  a->direction = strdup("increase");
  a->baseline = 24;
  a->baseline_fy = 2022;
  a->target = 50;
  a->target_fy = 2024;
  strcpy(a->due, "2025-03-31");
  a->plan_name = strdup("第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）");
  a->dashboard_url = strdup("http://localhost:8081/v1/attainment");
  size_t n = 0;
  while (emails[n]) n++;
  a->recipients = calloc(n, sizeof(kpi_recipient));
  for (size_t i = 0; i < n; i++) {
    a->recipients[i].email = strdup(emails[i]);
    a->recipients[i].department = i == 0 ? strdup("kikaku") : NULL;
  }
  a->n_recipients = n;
  strcpy(a->created_at, "2024-10-01T00:00:00.000Z");
  return a;
}

static inline void nf_it_alert_free(kpi_alert *a) {
  kpi_alert_clear(a);
  free(a);
}

/* Mail parsing ---------------------------------------------------------------------------- */

/* A mail as stored in the Maildir (LF or CRLF lines). */
typedef struct {
  char *raw;
  char *headers; /* unfolded, one "Name: value\n" per line */
  const char *body;
} nf_it_mail;

static inline char *nf_it_b64(const char *s, size_t n) {
  char *clean = calloc(1, n + 1);
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] != '\r' && s[i] != '\n' && s[i] != ' ') clean[m++] = s[i];
  char *out = calloc(1, m + 4);
  int r = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)clean, (int)m);
  if (r < 0) r = 0;
  size_t pad = 0;
  if (m >= 1 && clean[m - 1] == '=') pad++;
  if (m >= 2 && clean[m - 2] == '=') pad++;
  out[(size_t)r >= pad ? (size_t)r - pad : 0] = '\0';
  free(clean);
  return out;
}

/* The raw value of header NAME (first occurrence), unfolded, malloc'd, or NULL. */
static inline char *nf_it_header(const nf_it_mail *m, const char *name) {
  size_t nl = strlen(name);
  for (const char *p = m->headers; *p;) {
    const char *eol = strchr(p, '\n');
    if (!eol) break;
    if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
      const char *v = p + nl + 1;
      while (*v == ' ') v++;
      return strndup(v, (size_t)(eol - v));
    }
    p = eol + 1;
  }
  return NULL;
}

/* Decodes the RFC 2047 words of a header value (UTF-8 B-encoding only, which is all the
 * notifier writes); text outside words is kept. */
static inline char *nf_it_decode_words(const char *v) {
  char *out = calloc(1, strlen(v) * 2 + 1);
  const char *p = v;
  int prev_word = 0;
  while (*p) {
    if (strncmp(p, "=?UTF-8?B?", 10) == 0 || strncmp(p, "=?utf-8?b?", 10) == 0) {
      const char *end = strstr(p + 10, "?=");
      if (!end) break;
      char *part = nf_it_b64(p + 10, (size_t)(end - p - 10));
      strcat(out, part);
      free(part);
      p = end + 2;
      prev_word = 1;
      continue;
    }
    /* Whitespace between two encoded words is not part of the text (RFC 2047 §6.2). */
    if (*p == ' ' && prev_word) {
      const char *q = p;
      while (*q == ' ') q++;
      if (strncasecmp(q, "=?UTF-8?B?", 10) == 0) {
        p = q;
        continue;
      }
    }
    strncat(out, p, 1);
    prev_word = 0;
    p++;
  }
  return out;
}

static inline bool nf_it_parse(const char *raw, nf_it_mail *m) {
  memset(m, 0, sizeof(*m));
  m->raw = strdup(raw);
  char *sep = strstr(m->raw, "\n\n");
  char *sep2 = strstr(m->raw, "\r\n\r\n");
  if (sep2 && (!sep || sep2 < sep)) {
    *sep2 = '\0';
    m->body = sep2 + 4;
  } else if (sep) {
    *sep = '\0';
    m->body = sep + 2;
  } else {
    free(m->raw);
    return false;
  }
  /* Unfold headers and normalise line ends. */
  size_t n = strlen(m->raw);
  m->headers = calloc(1, n + 3);
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    if (m->raw[i] == '\r') continue;
    if (m->raw[i] == '\n' && (m->raw[i + 1] == ' ' || m->raw[i + 1] == '\t')) {
      i++;
      m->headers[o++] = ' ';
      continue;
    }
    m->headers[o++] = m->raw[i];
  }
  m->headers[o++] = '\n';
  m->headers[o] = '\0';
  return true;
}

static inline void nf_it_mail_free(nf_it_mail *m) {
  free(m->raw);
  free(m->headers);
}

/* The envelope recipient as aiosmtpd recorded it (X-RcptTo), else the To header. */
static inline char *nf_it_rcpt(const nf_it_mail *m) {
  char *v = nf_it_header(m, "X-RcptTo");
  if (!v) v = nf_it_header(m, "To");
  return v;
}

/* Reads MAILDIR and returns the mails whose envelope recipient contains TAG (malloc'd array of
 * *N parsed mails). */
static inline nf_it_mail *nf_it_mails_for(const char *maildir, const char *tag, int *n) {
  int count = 0;
  char **all = kpi_it_maildir_read(maildir, &count);
  nf_it_mail *out = calloc((size_t)count + 1, sizeof(*out));
  *n = 0;
  for (int i = 0; i < count; i++) {
    nf_it_mail m;
    if (!nf_it_parse(all[i], &m)) continue;
    char *r = nf_it_rcpt(&m);
    if (r && strstr(r, tag)) out[(*n)++] = m;
    else nf_it_mail_free(&m);
    free(r);
  }
  kpi_it_strv_free(all);
  return out;
}

static inline void nf_it_mails_free(nf_it_mail *v, int n) {
  for (int i = 0; i < n; i++) nf_it_mail_free(&v[i]);
  free(v);
}

/* Waits until at least WANT mails for TAG are in MAILDIR (or TIMEOUT_MS passes); returns the
 * count seen. */
static inline int nf_it_wait_mails(const char *maildir, const char *tag, int want, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  int n = 0;
  for (;;) {
    nf_it_mail *v = nf_it_mails_for(maildir, tag, &n);
    nf_it_mails_free(v, n);
    if (n >= want || kpi_it_now_ms() >= deadline) return n;
    kpi_it_sleep_ms(100);
  }
}

/* Runs a one-value query with $1 = ARG; malloc'd result or NULL. */
static inline char *nf_it_sql1(PGconn *c, const char *sql, const char *arg) {
  const char *p[1] = {arg};
  PGresult *r = PQexecParams(c, sql, arg ? 1 : 0, NULL, arg ? p : NULL, NULL, NULL, 0);
  char *out = NULL;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
    out = strdup(PQgetvalue(r, 0, 0));
  else if (PQresultStatus(r) != PGRES_TUPLES_OK)
    fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
  PQclear(r);
  return out;
}

static inline long nf_it_sql_long(PGconn *c, const char *sql, const char *arg) {
  char *v = nf_it_sql1(c, sql, arg);
  long n = v ? strtol(v, NULL, 10) : -1;
  free(v);
  return n;
}

#endif
