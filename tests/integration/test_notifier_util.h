/* test_notifier_util.h: shared helpers of the notifier integration tests (header-only, static). */
#ifndef TEST_NOTIFIER_UTIL_H
#define TEST_NOTIFIER_UTIL_H

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
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
  char catalog[256]; /* the notifier's own catalog (KPI_CATALOG), see nf_it_catalog_set */
  int port;
  pid_t pid;
  PGconn *pg;
  rd_kafka_t *producer;
} nf_it;

/* Catalog ------------------------------------------------------------------------------------
 * The notifier mails only the addresses its own catalog gives a measure, so every test writes
 * the measures it alerts on into a catalog file of its own. */

/* The dashboard base of the test catalogs: links in mails must start with it. */
#define NF_IT_DASHBOARD "https://kpi.city.example/attainment"

/* How often NEEDLE occurs in the file PATH (0 when it cannot be read). */
static inline int nf_it_file_count(const char *path, const char *needle) {
  char *text = kpi_it_read_file(path, NULL);
  int n = 0;
  for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
  free(text);
  return n;
}

static inline cJSON *nf_it_strings(const char *const *v) {
  cJSON *a = cJSON_CreateArray();
  for (const char *const *p = v; p && *p; p++) cJSON_AddItemToArray(a, cJSON_CreateString(*p));
  return a;
}

/* A level measure ID owned by department OWNER (a valid catalog measure). */
static inline cJSON *nf_it_measure_json(const char *id, const char *owner,
                                        const char *const *watchers) {
  cJSON *m = cJSON_CreateObject();
  cJSON_AddStringToObject(m, "id", id);
  cJSON_AddNumberToObject(m, "goal", 2);
  cJSON_AddStringToObject(m, "program", "テスト事業");
  cJSON_AddStringToObject(m, "name", id);
  cJSON_AddStringToObject(m, "indicator", "登録者数");
  cJSON_AddStringToObject(m, "unit", "person");
  cJSON_AddStringToObject(m, "kind", "level");
  cJSON_AddStringToObject(m, "direction", "increase");
  cJSON *b = cJSON_AddObjectToObject(m, "baseline");
  cJSON_AddStringToObject(b, "fy", "R4");
  cJSON_AddNumberToObject(b, "value", 24);
  cJSON *t = cJSON_AddObjectToObject(m, "target");
  cJSON_AddStringToObject(t, "fy", "R6");
  cJSON_AddNumberToObject(t, "value", 50);
  cJSON_AddStringToObject(m, "owner", owner);
  if (watchers && *watchers) cJSON_AddItemToObject(m, "watchers", nf_it_strings(watchers));
  return m;
}

/* Writes measure ID into the catalog file PATH (created when missing) with a department of
 * its own whose mailboxes are OWNERS and the watchers WATCHERS (both NULL-terminated; OWNERS
 * not empty, WATCHERS may be NULL). Returns 1 when the file changed, 0 when it already said
 * exactly that. */
static inline int nf_it_catalog_put(const char *path, const char *id, const char *const *owners,
                                    const char *const *watchers) {
  char *text = kpi_it_read_file(path, NULL);
  cJSON *doc = text ? cJSON_Parse(text) : NULL;
  if (!doc) {
    static const char base[] =
        "{\"schema\":\"kpi.catalog/1\",\"version\":1,\"plan\":{\"id\":\"it\","
        "\"name\":\"第2期芦別市まち・ひと・しごと創生総合戦略（改訂版）\","
        "\"dashboard_url\":\"" NF_IT_DASHBOARD "\"},\"departments\":[],\"measures\":[]}";
    doc = cJSON_Parse(base);
  }
  char dept[96];
  snprintf(dept, sizeof(dept), "d-%s", id);
  cJSON *depts = cJSON_GetObjectItem(doc, "departments");
  cJSON *measures = cJSON_GetObjectItem(doc, "measures");
  cJSON *d = cJSON_CreateObject();
  cJSON_AddStringToObject(d, "id", dept);
  cJSON_AddStringToObject(d, "name", "テスト課");
  cJSON_AddItemToObject(d, "mailboxes", nf_it_strings(owners));
  cJSON *m = nf_it_measure_json(id, dept, watchers);
  int changed = 1;
  int i = 0;
  cJSON *old;
  cJSON_ArrayForEach(old, measures) {
    if (strcmp(cJSON_GetObjectItem(old, "id")->valuestring, id) == 0) break;
    i++;
  }
  if (old) {
    int j = 0;
    cJSON *od;
    cJSON_ArrayForEach(od, depts) {
      if (strcmp(cJSON_GetObjectItem(od, "id")->valuestring, dept) == 0) break;
      j++;
    }
    changed = !cJSON_Compare(old, m, 1) || !od || !cJSON_Compare(od, d, 1);
    cJSON_ReplaceItemInArray(measures, i, m);
    if (od) cJSON_ReplaceItemInArray(depts, j, d);
    else cJSON_AddItemToArray(depts, d);
  } else {
    cJSON_AddItemToArray(depts, d);
    cJSON_AddItemToArray(measures, m);
  }
  if (changed) {
    char *out = cJSON_Print(doc);
    if (kpi_it_write_file(path, out) != 0) {
      fprintf(stderr, "cannot write %s\n", path);
      exit(1);
    }
    free(out);
  }
  cJSON_Delete(doc);
  free(text);
  return changed;
}

/* Makes a running notifier T reload its catalog (SIGHUP) and waits until it did. */
static inline void nf_it_catalog_reload(const nf_it *t) {
  int before = nf_it_file_count(t->log, "catalog_reloaded");
  kill(t->pid, SIGHUP);
  long long deadline = kpi_it_now_ms() + 10000;
  while (nf_it_file_count(t->log, "catalog_reloaded") <= before) {
    if (kpi_it_now_ms() > deadline) {
      fprintf(stderr, "the notifier did not reload its catalog %s (log %s)\n", t->catalog, t->log);
      exit(1);
    }
    kpi_it_sleep_ms(10);
  }
}

/* Puts measure ID with OWNERS and WATCHERS into T's catalog and, when T runs and the file
 * changed, has it reloaded. */
static inline void nf_it_catalog_set(nf_it *t, const char *id, const char *const *owners,
                                     const char *const *watchers) {
  if (nf_it_catalog_put(t->catalog, id, owners, watchers) && t->pid > 0) nf_it_catalog_reload(t);
}

/* Spawns kpi-notifier for T (db, topics, group and port already set) with the extra settings
 * EXTRA, waits for /readyz and opens T's producer and database connection. */
static inline void nf_it_spawn(nf_it *t, const char *const *extra) {
  t->pg = kpi_it_pg(t->conninfo);
  t->port = kpi_it_free_port();
  kpi_it_env env = {0};
  kpi_it_env_add(&env, "PGDATABASE=%s", t->db);
  kpi_it_env_add(&env, "KPI_TOPIC_ALERTS=%s", t->topic);
  kpi_it_env_add(&env, "KPI_TOPIC_ALERTS_DLQ=%s", t->dlq);
  kpi_it_env_add(&env, "KPI_NOTIFIER_GROUP=%s", t->group);
  kpi_it_env_add(&env, "KPI_NOTIFIER_LISTEN=127.0.0.1:%d", t->port);
  kpi_it_env_add(&env, "KPI_MAIL_FROM=kpi-it@notifier.test");
  kpi_it_env_add(&env, "KPI_NOTIFY_POLL_MS=200");
  kpi_it_env_add(&env, "KPI_TOPIC_ALERTS_PARTITIONS=3");
  kpi_it_env_add(&env, "KPI_CATALOG=%s", t->catalog);
  kpi_it_env_extend(&env, extra);
  t->pid = kpi_it_spawn("services/notifier/kpi-notifier", kpi_it_env_list(&env), t->log);
  if (kpi_it_wait_http(t->port, "/readyz", 200, 30000) != 0) {
    fprintf(stderr, "notifier did not become ready; log %s\n", t->log);
    exit(1);
  }
  char err[512];
  static const char *const kv[] = {"acks", "all", NULL};
  rd_kafka_conf_t *conf = kpi_it_kafka_conf("it-notifier-producer", kv, err, sizeof(err));
  if (!conf) {
    fprintf(stderr, "producer conf: %s\n", err);
    exit(1);
  }
  t->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!t->producer) {
    fprintf(stderr, "producer: %s\n", err);
    exit(1);
  }
}

/* Names T's database, topics, group, tag, log and catalog after NAME and creates the
 * database and a catalog with one placeholder measure; nf_it_spawn starts the notifier. */
static inline void nf_it_prepare(nf_it *t, const char *name) {
  memset(t, 0, sizeof(*t));
  kpi_it_unique(name, t->db, sizeof(t->db));
  snprintf(t->topic, sizeof(t->topic), "%s_alerts", t->db);
  snprintf(t->dlq, sizeof(t->dlq), "%s_alerts_dlq", t->db);
  snprintf(t->group, sizeof(t->group), "%s_group", t->db);
  snprintf(t->tag, sizeof(t->tag), "%s", t->db);
  for (char *p = t->tag; *p; p++)
    if (*p == '_') *p = '-';
  snprintf(t->log, sizeof(t->log), "%s/%s.log", KPI_BINARY_DIR, t->db);
  snprintf(t->catalog, sizeof(t->catalog), "%s/%s_catalog.json", KPI_BINARY_DIR, t->db);
  if (kpi_it_create_db(t->db, t->conninfo, sizeof(t->conninfo)) != 0) {
    fprintf(stderr, "cannot create database %s\n", t->db);
    exit(1);
  }
  unlink(t->catalog);
  static const char *const nobody[] = {"nobody@placeholder.city.example", NULL};
  nf_it_catalog_put(t->catalog, "it-placeholder", nobody, NULL);
}

/* Starts kpi-notifier with the extra settings EXTRA ("KEY=VALUE", NULL-terminated, may be
 * NULL) on a database, topics, group and catalog of its own, and waits for /readyz. */
static inline void nf_it_start(nf_it *t, const char *name, const char *const *extra) {
  nf_it_prepare(t, name);
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
  memcpy(t->catalog, first->catalog, sizeof(t->catalog));
  snprintf(t->log, sizeof(t->log), "%s/%s_r%d.log", KPI_BINARY_DIR, first->db, replica);
  nf_it_spawn(t, extra);
}

/* The value of the unlabelled metric NAME on the notifier's /metrics, or -1. */
static inline double nf_it_metric(const nf_it *t, const char *name) {
  char *buf = kpi_it_http_get(t->port, "/metrics", 5);
  if (!buf) return -1;
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

/* Stops the notifier with SIGTERM; returns its exit status (0 expected). T's pid is then 0,
 * so a second stop (a teardown after the test stopped it) does nothing. */
static inline int nf_it_stop(nf_it *t) {
  if (t->pid <= 0) return -1;
  int status = kpi_it_stop(t->pid, SIGTERM, 30000);
  t->pid = 0;
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
  rd_kafka_resp_err_t err = kpi_it_produce(t->producer, t->topic, key, value, len);
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

/* Produces the lagging alert of nf_it_alert to T's topic and frees it. The catalog first
 * gets the measure with EMAILS as its owners' mailboxes, as the evaluator's alert would name
 * them (reloaded when that changed it). */
static inline void nf_it_produce_alert(nf_it *t, const char *measure_id, const char *name,
                                       const char *const *emails) {
  nf_it_catalog_set(t, measure_id, emails, NULL);
  kpi_alert *a = nf_it_alert(measure_id, name, emails);
  nf_it_produce(t, a);
  nf_it_alert_free(a);
}

/* Produces an alert about MEASURE_ID (NAME) for one owner, "LOCAL.<tag>@city.example",
 * written to OWNER (SIZE bytes). */
static inline void nf_it_alert_owner(nf_it *t, const char *local, const char *measure_id,
                                     const char *name, char *owner, size_t size) {
  snprintf(owner, size, "%s.%s@city.example", local, t->tag);
  const char *rc[] = {owner, NULL};
  nf_it_produce_alert(t, measure_id, name, rc);
}

/* The measure "<MID><I>" of a numbered series and its N_PER (at most 7) recipients
 * "r<I>.<K>.<TAG>@city.example", written to M_ID, EMAILS[0..N_PER) and RC (NULL-terminated). */
static inline void nf_it_numbered(const char *tag, int i, const char *mid, int n_per,
                                  char *m_id, size_t m_id_size, char (*emails)[128],
                                  const char **rc) {
  int k = 0;
  for (; k < n_per && k < 7; k++) {
    snprintf(emails[k], sizeof(emails[0]), "r%d.%d.%s@city.example", i, k, tag);
    rc[k] = emails[k];
  }
  rc[k] = NULL;
  snprintf(m_id, m_id_size, "%s%d", mid, i);
}

/* Puts the measures 0..N-1 of a numbered series into T's catalog before T starts (replicas
 * share the file, so no reload is needed later). */
static inline void nf_it_catalog_numbered(nf_it *t, int n, const char *mid, int n_per) {
  for (int i = 0; i < n; i++) {
    char emails[8][128], m_id[64];
    const char *rc[8];
    nf_it_numbered(t->tag, i, mid, n_per, m_id, sizeof(m_id), emails, rc);
    nf_it_catalog_put(t->catalog, m_id, rc, NULL);
  }
}

/* Alert I of a numbered series (nf_it_numbered), name "<NAME><I>"; the addresses are written
 * to EMAILS[0..N_PER). Produced through VIA. */
static inline void nf_it_produce_numbered(nf_it *via, const char *tag, int i, const char *mid,
                                          const char *name, int n_per, char (*emails)[128]) {
  const char *rc[8];
  char m_id[64], m_name[64];
  nf_it_numbered(tag, i, mid, n_per, m_id, sizeof(m_id), emails, rc);
  snprintf(m_name, sizeof(m_name), "%s%d", name, i);
  nf_it_produce_alert(via, m_id, m_name, rc);
}

/* A reader of T's dead-letter topic from its start, in a group of its own (T's group with
 * SUFFIX), or NULL. Close with kpi_it_kafka_close. */
static inline rd_kafka_t *nf_it_dlq_reader(const nf_it *t, const char *suffix) {
  char group[160];
  snprintf(group, sizeof(group), "%s%s", t->group, suffix);
  return kpi_it_kafka_subscriber("it-dlq-reader", group, t->dlq);
}

/* Mail parsing ---------------------------------------------------------------------------- */

/* A mail as stored in the Maildir (LF or CRLF lines). */
typedef struct {
  char *raw;
  char *headers; /* unfolded, one "Name: value\n" per line */
  const char *body;
} nf_it_mail;

static inline char *nf_it_b64(const char *s, size_t n) { return kpi_it_b64_decode(s, n); }

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

/* Runs a one-value query with $1 = ARG (may be NULL) and reads it as a number, -1 for NULL. */
static inline long nf_it_sql_long(PGconn *c, const char *sql, const char *arg) {
  return kpi_it_pg_long(c, sql, arg);
}

/* The helpers below assert with cmocka: include <cmocka.h> before this header. */

/* The stack's Maildir, set by nf_it_setup. */
static const char *nf_it_maildir __attribute__((unused));

/* Group setup of the tests that read the stack's Maildir. */
static inline int nf_it_setup(void **state) {
  (void)state;
  kpi_it_init();
  nf_it_maildir = kpi_it_maildir();
  return nf_it_maildir ? 0 : -1;
}

/* M's header NAME reads WANT. */
static inline void nf_it_assert_header(const nf_it_mail *m, const char *name, const char *want) {
  char *v = nf_it_header(m, name);
  assert_string_equal(v, want);
  free(v);
}

/* How many of MAILS[0..N) were delivered to exactly ADDR. */
static inline int nf_it_count_rcpt(const nf_it_mail *mails, int n, const char *addr) {
  int seen = 0;
  for (int i = 0; i < n; i++) {
    char *r = nf_it_rcpt(&mails[i]);
    if (r && strcmp(r, addr) == 0) seen++;
    free(r);
  }
  return seen;
}

/* Every address of EMAILS (NULL-terminated) got exactly one mail in MAILDIR, and no other
 * address with TAG got any. */
static inline void nf_it_assert_once_each(const char *maildir, const char *tag,
                                          const char *const *emails) {
  int n;
  nf_it_mail *mails = nf_it_mails_for(maildir, tag, &n);
  int want = 0;
  for (const char *const *e = emails; *e; e++, want++) {
    int seen = nf_it_count_rcpt(mails, n, *e);
    if (seen != 1) fail_msg("%s received %d mails, expected exactly 1", *e, seen);
  }
  assert_int_equal(n, want);
  nf_it_mails_free(mails, n);
}

#endif
