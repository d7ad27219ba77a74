/* kpi_it_pipeline.h: the services of the pipeline started together against the real stack, as a
 * city deploys them (docs/database.md): the owner migrates a fresh database, each service logs
 * in with its own least-privilege role, all share one set of topics and one catalog. Static,
 * so every test binary has its own copy; include after <cmocka.h>. */
#ifndef KPI_IT_PIPELINE_H
#define KPI_IT_PIPELINE_H

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "kpi_it.h"
#include "kpi_pg.h"

/* Not every test uses every helper. */
#define KPI_IT_PIPE_FN static __attribute__((unused))

/* A growing response buffer for kpi_it_http. */
typedef struct {
  char *data;
  size_t len;
} kpi_it_buf;

KPI_IT_PIPE_FN size_t kpi_it_on_curl_write(char *p, size_t size, size_t n, void *arg) {
  kpi_it_buf *b = arg;
  b->data = realloc(b->data, b->len + size * n + 1);
  memcpy(b->data + b->len, p, size * n);
  b->len += size * n;
  b->data[b->len] = '\0';
  return size * n;
}

/* One JSON request (libcurl; the test calls curl_global_init) with header lines H1, H2 (may be
 * NULL) and BODY (NULL: none); the status (-1: no answer), the body in *OUT and the response
 * headers in *HEADERS (either may be NULL; caller frees). */
KPI_IT_PIPE_FN long kpi_it_http(const char *method, const char *url, const char *h1,
                                const char *h2, const char *body, char **out, char **headers) {
  CURL *c = curl_easy_init();
  kpi_it_buf b = {0}, hb = {0};
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  if (h1) h = curl_slist_append(h, h1);
  if (h2) h = curl_slist_append(h, h2);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, kpi_it_on_curl_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, kpi_it_on_curl_write);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &hb);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
  long status = -1;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  if (out) *out = b.data ? b.data : strdup("");
  else free(b.data);
  if (headers) *headers = hb.data ? hb.data : strdup("");
  else free(hb.data);
  return status;
}

/* The services, in the order they are spawned (the evaluator first, so that it owns its group
 * before measurements arrive), waited for and stopped (the ingest first, so that nothing new
 * comes in while the others drain). */
enum { KPI_IT_EVALUATOR, KPI_IT_NOTIFIER, KPI_IT_INGEST, KPI_IT_REPORT, KPI_IT_N_SERVICES };
#define KPI_IT_SVC(s) (1u << (s))

typedef struct {
  char tag[64];        /* database, topics, groups, roles and logs are named after it */
  char conninfo[512];  /* the owner's */
  unsigned services;   /* KPI_IT_SVC(...) | ... */
  int port[KPI_IT_N_SERVICES];
  pid_t pid[KPI_IT_N_SERVICES];
  char log[KPI_IT_N_SERVICES][256];
} kpi_it_pipeline;

static const struct {
  const char *name, *binary, *listen, *group, *role, *ready;
  int stop_ms;
} kpi_it_svc[KPI_IT_N_SERVICES] __attribute__((unused)) = {
    [KPI_IT_EVALUATOR] = {"evaluator", "services/evaluator/kpi-evaluator", "KPI_EVALUATOR_LISTEN",
                          "KPI_EVALUATOR_GROUP", "kpi_evaluator", "/healthz", 20000},
    [KPI_IT_NOTIFIER] = {"notifier", "services/notifier/kpi-notifier", "KPI_NOTIFIER_LISTEN",
                         "KPI_NOTIFIER_GROUP", "kpi_notifier", "/healthz", 40000},
    [KPI_IT_INGEST] = {"ingest", "services/ingest/kpi-ingest", "KPI_INGEST_LISTEN", NULL, NULL,
                       "/readyz", 20000},
    [KPI_IT_REPORT] = {"report", "services/report/kpi-report", "KPI_REPORT_LISTEN", NULL,
                       "kpi_reader", "/readyz", 20000},
};

/* The role suffix of service S: TAG_ev, TAG_nf, TAG_rd. */
static const char *const kpi_it_svc_suffix[KPI_IT_N_SERVICES] __attribute__((unused)) = {"ev", "nf", NULL, "rd"};

/* Creates the login role NAME_SUFFIX in the group role GROUP (as the database's owner, on
 * OWNER) and writes the service's conninfo (CONNINFO as that user) to OUT. */
KPI_IT_PIPE_FN void kpi_it_login_role(PGconn *owner, const char *conninfo, const char *name,
                                      const char *suffix, const char *group, char *out,
                                      size_t size) {
  char sql[256], err[512];
  snprintf(sql, sizeof(sql), "CREATE ROLE %s_%s LOGIN IN ROLE %s", name, suffix, group);
  assert_int_equal(kpi_pg_exec(owner, sql, err, sizeof(err)), 0);
  snprintf(out, size, "%s user=%s_%s", conninfo, name, suffix);
}

/* Starts kpi-report on a free port (*PORT) logged in as NAME_rd, a new member of kpi_reader
 * made on OWNER, with the shipped catalog and the sample tokens; log in LOG (the stack's
 * directory). Waits until it answers /readyz. */
KPI_IT_PIPE_FN pid_t kpi_it_report_start(PGconn *owner, const char *conninfo, const char *name,
                                         int *port, char *log, size_t log_size) {
  char rd_conninfo[700];
  kpi_it_login_role(owner, conninfo, name, "rd", "kpi_reader", rd_conninfo, sizeof(rd_conninfo));
  snprintf(log, log_size, "%s/%s-report.log", getenv("KPI_STACK_DIR"), name);
  *port = kpi_it_free_port();
  kpi_it_env e = {0};
  kpi_it_env_add(&e, "DATABASE_URL=%s", rd_conninfo);
  kpi_it_env_add(&e, "KPI_REPORT_LISTEN=127.0.0.1:%d", *port);
  kpi_it_env_add(&e, "KPI_CATALOG=%s/config/catalog.json", KPI_SOURCE_DIR);
  kpi_it_env_add(&e, "KPI_ALLOW_SAMPLE_TOKENS=1");
  pid_t rp = kpi_it_spawn("services/report/kpi-report", kpi_it_env_list(&e), log);
  if (kpi_it_wait_http(*port, "/readyz", 200, 30000) != 0) fail_msg("report not ready; log %s", log);
  return rp;
}

/* A fresh database named after a unique tag from PREFIX, migrated by its owner, with a login
 * role for each of SERVICES that needs one. */
KPI_IT_PIPE_FN void kpi_it_pipeline_init(kpi_it_pipeline *p, const char *prefix,
                                         unsigned services) {
  memset(p, 0, sizeof(*p));
  p->services = services;
  kpi_it_unique(prefix, p->tag, sizeof(p->tag));
  assert_int_equal(kpi_it_create_db(p->tag, p->conninfo, sizeof(p->conninfo)), 0);
  char err[512];
  PGconn *owner = kpi_pg_connect(p->conninfo, err, sizeof(err));
  if (!owner || kpi_pg_migrate(owner, err, sizeof(err)) < 0) fail_msg("%s", err);
  char ignored[700];
  for (int s = 0; s < KPI_IT_N_SERVICES; s++)
    if ((services & KPI_IT_SVC(s)) && kpi_it_svc[s].role)
      kpi_it_login_role(owner, p->conninfo, p->tag, kpi_it_svc_suffix[s], kpi_it_svc[s].role,
                        ignored, sizeof(ignored));
  PQfinish(owner);
}

/* The logs of the services, for a failure message ("a b c"). */
KPI_IT_PIPE_FN const char *kpi_it_pipeline_logs(const kpi_it_pipeline *p) {
  static char out[4 * 260];
  out[0] = '\0';
  for (int s = 0; s < KPI_IT_N_SERVICES; s++)
    if (p->services & KPI_IT_SVC(s)) {
      if (out[0]) strcat(out, " ");
      strcat(out, p->log[s]);
    }
  return out;
}

/* Starts the services with CATALOG (NULL: the shipped one), the tag's topics, a free port each
 * and EXTRA (NULL-terminated "KEY=VALUE", may be NULL); each service that has a role logs in
 * with it. Fails the test unless every one answers its health check within 30 s. */
KPI_IT_PIPE_FN void kpi_it_pipeline_start(kpi_it_pipeline *p, const char *catalog,
                                          const char *const *extra) {
  kpi_it_env e = {0};
  if (catalog) kpi_it_env_add(&e, "KPI_CATALOG=%s", catalog);
  else kpi_it_env_add(&e, "KPI_CATALOG=%s/config/catalog.json", KPI_SOURCE_DIR);
  kpi_it_env_add(&e, "KPI_TOPIC_MEASUREMENTS=%s_m", p->tag);
  kpi_it_env_add(&e, "KPI_TOPIC_ALERTS=%s_a", p->tag);
  kpi_it_env_add(&e, "KPI_TOPIC_MEASUREMENTS_DLQ=%s_md", p->tag);
  kpi_it_env_add(&e, "KPI_TOPIC_ALERTS_DLQ=%s_ad", p->tag);
  for (int s = 0; s < KPI_IT_N_SERVICES; s++) {
    if (!(p->services & KPI_IT_SVC(s))) continue;
    p->port[s] = kpi_it_free_port();
    kpi_it_env_add(&e, "%s=127.0.0.1:%d", kpi_it_svc[s].listen, p->port[s]);
    if (kpi_it_svc[s].group)
      kpi_it_env_add(&e, "%s=%s_%s", kpi_it_svc[s].group, p->tag, kpi_it_svc_suffix[s]);
  }
  kpi_it_env_extend(&e, extra);
  for (int s = 0; s < KPI_IT_N_SERVICES; s++) {
    if (!(p->services & KPI_IT_SVC(s))) continue;
    kpi_it_env es = e;
    if (kpi_it_svc[s].role)
      kpi_it_env_add(&es, "DATABASE_URL=%s user=%s_%s", p->conninfo, p->tag,
                     kpi_it_svc_suffix[s]);
    snprintf(p->log[s], sizeof(p->log[s]), "%s/%s-%s.log", getenv("KPI_STACK_DIR"), p->tag,
             kpi_it_svc[s].name);
    p->pid[s] = kpi_it_spawn(kpi_it_svc[s].binary, kpi_it_env_list(&es), p->log[s]);
  }
  static const int wait_order[] = {KPI_IT_INGEST, KPI_IT_EVALUATOR, KPI_IT_NOTIFIER,
                                   KPI_IT_REPORT};
  for (size_t i = 0; i < sizeof(wait_order) / sizeof(wait_order[0]); i++) {
    int s = wait_order[i];
    if ((p->services & KPI_IT_SVC(s)) &&
        kpi_it_wait_http(p->port[s], kpi_it_svc[s].ready, 200, 30000) != 0)
      fail_msg("services did not come up; logs: %s", kpi_it_pipeline_logs(p));
  }
}

/* Sends SIGTERM to every service (the ingest first) and asserts each drains and exits 0. */
KPI_IT_PIPE_FN void kpi_it_pipeline_stop(kpi_it_pipeline *p) {
  static const int stop_order[] = {KPI_IT_INGEST, KPI_IT_EVALUATOR, KPI_IT_NOTIFIER,
                                   KPI_IT_REPORT};
  int st[KPI_IT_N_SERVICES] = {0};
  for (size_t i = 0; i < sizeof(stop_order) / sizeof(stop_order[0]); i++) {
    int s = stop_order[i];
    if (p->services & KPI_IT_SVC(s)) st[s] = kpi_it_stop(p->pid[s], SIGTERM, kpi_it_svc[s].stop_ms);
  }
  for (size_t i = 0; i < sizeof(stop_order) / sizeof(stop_order[0]); i++) {
    int s = stop_order[i];
    if ((p->services & KPI_IT_SVC(s)) && !(WIFEXITED(st[s]) && WEXITSTATUS(st[s]) == 0))
      fail_msg("%s did not exit 0 on SIGTERM (status %d); log %s", kpi_it_svc[s].name, st[s],
               p->log[s]);
  }
}

#endif
