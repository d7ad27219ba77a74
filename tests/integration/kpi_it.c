/* kpi_it.c: integration test helpers (real PostgreSQL, Kafka and SMTP of the test stack). */
#include "kpi_it.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kpi_env.h"
#include "kpi_kafka.h"

void kpi_it_init(void) {
  const char *path = getenv("KPI_STACK_ENV");
  if (!path || kpi_env_load_file(path) != 0) {
    fprintf(stderr,
            "integration test: the stack is not up (KPI_STACK_ENV=%s); run through ctest, whose "
            "fixture stack.start runs scripts/stack.sh\n",
            path ? path : "(unset)");
    exit(1);
  }
  /* Every service the tests spawn inherits this: the shipped catalog's departments are
   * samples, refused without it. A test of the refusal overrides it in the child's env. */
  setenv("KPI_ALLOW_SAMPLE_TOKENS", "1", 1);
  signal(SIGPIPE, SIG_IGN);
}

void kpi_it_unique(const char *prefix, char *buf, size_t size) {
  static int counter;
  snprintf(buf, size, "%s_%d_%d_%lld", prefix, (int)getpid(), ++counter,
           kpi_it_now_ms() % 100000);
}

PGconn *kpi_it_pg(const char *conninfo) {
  PGconn *c = PQconnectdb(conninfo);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "connect %s: %s\n", conninfo, PQerrorMessage(c));
    exit(1);
  }
  return c;
}

int kpi_it_create_db(const char *name, char *conninfo, size_t size) {
  PGconn *c = kpi_it_pg("dbname=postgres");
  char sql[256];
  snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\"", name);
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(c));
  PQclear(r);
  PQfinish(c);
  snprintf(conninfo, size, "host=%s port=%s user=%s dbname=%s",
           kpi_env_str("PGHOST", "127.0.0.1"), kpi_env_str("PGPORT", "5432"),
           kpi_env_str("PGUSER", "postgres"), name);
  return ok ? 0 : -1;
}

char *kpi_it_pg_value1(PGconn *conn, const char *sql, const char *arg) {
  const char *params[1] = {arg};
  PGresult *r = PQexecParams(conn, sql, arg ? 1 : 0, NULL, arg ? params : NULL, NULL, NULL, 0);
  char *out = NULL;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
    out = strdup(PQgetvalue(r, 0, 0));
  else if (PQresultStatus(r) != PGRES_TUPLES_OK)
    fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(conn));
  PQclear(r);
  return out;
}

char *kpi_it_pg_value(PGconn *conn, const char *sql) { return kpi_it_pg_value1(conn, sql, NULL); }

long kpi_it_pg_long(PGconn *conn, const char *sql, const char *arg) {
  char *v = kpi_it_pg_value1(conn, sql, arg);
  long n = v ? strtol(v, NULL, 10) : -1;
  free(v);
  return n;
}

int kpi_it_wait_pg_value(PGconn *conn, const char *sql, const char *want, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  for (;;) {
    char *v = kpi_it_pg_value(conn, sql);
    int ok = v && strcmp(v, want) == 0;
    free(v);
    if (ok) return 0;
    if (kpi_it_now_ms() > deadline) return -1;
    kpi_it_sleep_ms(100);
  }
}

long kpi_it_wait_pg_long(PGconn *conn, const char *sql, const char *arg, long want,
                         int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  long v = -1;
  while (kpi_it_now_ms() < deadline) {
    v = kpi_it_pg_long(conn, sql, arg);
    if (v == want) break;
    kpi_it_sleep_ms(100);
  }
  return v;
}

void kpi_it_env_add(kpi_it_env *e, const char *fmt, ...) {
  if (e->n >= KPI_IT_ENV_MAX) {
    fprintf(stderr, "kpi_it_env: more than %d variables\n", KPI_IT_ENV_MAX);
    abort();
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->buf[e->n], sizeof(e->buf[0]), fmt, ap);
  va_end(ap);
  e->n++;
}

void kpi_it_env_set(kpi_it_env *e, const char *name, const char *value) {
  size_t n = strlen(name);
  for (size_t i = 0; i < e->n; i++) {
    if (strncmp(e->buf[i], name, n) == 0 && e->buf[i][n] == '=') {
      snprintf(e->buf[i], sizeof(e->buf[0]), "%s=%s", name, value);
      return;
    }
  }
  kpi_it_env_add(e, "%s=%s", name, value);
}

void kpi_it_env_extend(kpi_it_env *e, const char *const *extra) {
  for (const char *const *x = extra; x && *x; x++) kpi_it_env_add(e, "%s", *x);
}

const char *const *kpi_it_env_list(kpi_it_env *e) {
  /* Rebuilt on every call: the struct may have been copied since the last one. */
  for (size_t i = 0; i < e->n; i++) e->v[i] = e->buf[i];
  e->v[e->n] = NULL;
  return e->v;
}

pid_t kpi_it_spawn_argv(const char *const *argv, const char *const *env, const char *logfile,
                        const char *cwd) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid != 0) return pid;
  /* The child dies with the test program. A failed assertion longjmps past the test's own
   * stop (cmocka goes on with the next test), and ctest kills a test that times out with
   * SIGKILL, so no exit handler can be relied on to stop a service that would otherwise keep
   * consuming from the shared broker and retrying its database after the run. The signal
   * follows the thread that forked (the test's main thread) and survives execv. If the
   * parent died before prctl took effect, we were reparented already: getppid() tells. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(125);
  for (const char *const *e = env; e && *e; e++) putenv((char *)*e);
  int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  if (cwd && chdir(cwd) != 0) _exit(126);
  execv(argv[0], (char *const *)argv);
  fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

pid_t kpi_it_spawn(const char *binary, const char *const *env, const char *logfile) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", KPI_BINARY_DIR, binary);
  const char *argv[] = {path, NULL};
  return kpi_it_spawn_argv(argv, env, logfile, KPI_SOURCE_DIR);
}

int kpi_it_stop(pid_t pid, int sig, int timeout_ms) {
  int status;
  /* A reaped child's pid is free for reuse, and soon reused: pid_max is 32768 on small
   * machines and a test run forks thousands of processes, so a stale kill would hit whichever
   * process has the pid now. waitpid answers 0 only for a child of ours still running. */
  pid_t r = pid > 0 ? waitpid(pid, &status, WNOHANG) : -1;
  if (r == pid) return status;
  if (r != 0) return -1;
  if (sig) kill(pid, sig);
  long long deadline = kpi_it_now_ms() + timeout_ms;
  while (kpi_it_now_ms() < deadline) {
    r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    kpi_it_sleep_ms(20);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

int kpi_it_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(a);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(a.sin_port);
}

int kpi_it_connect(int port, int rcv_timeout_s) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (rcv_timeout_s > 0) {
    struct timeval tv = {.tv_sec = rcv_timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Connects and sends GET PATH with Connection: close; returns the socket or -1. */
static int http_send_get(int port, const char *path, int rcv_timeout_s) {
  int fd = kpi_it_connect(port, rcv_timeout_s);
  if (fd < 0) return -1;
  char req[512];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   path);
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return -1;
  }
  return fd;
}

static int http_status(int port, const char *path) {
  int fd = http_send_get(port, path, 2);
  if (fd < 0) return -1;
  char buf[64] = {0};
  ssize_t r = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  int status = -1;
  if (r > 12) sscanf(buf, "HTTP/1.%*d %d", &status);
  return status;
}

int kpi_it_wait_http(int port, const char *path, int status, int timeout_ms) {
  long long deadline = kpi_it_now_ms() + timeout_ms;
  while (kpi_it_now_ms() < deadline) {
    if (http_status(port, path) == status) return 0;
    kpi_it_sleep_ms(50);
  }
  return -1;
}

char *kpi_it_http_get(int port, const char *path, int rcv_timeout_s) {
  int fd = http_send_get(port, path, rcv_timeout_s);
  if (fd < 0) return NULL;
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
  return buf;
}

rd_kafka_conf_t *kpi_it_kafka_conf(const char *client_id, const char *const *kv, char *err,
                                   size_t err_size) {
  rd_kafka_conf_t *conf = kpi_kafka_conf_new(client_id, NULL, NULL, err, err_size);
  if (!conf) return NULL;
  for (const char *const *p = kv; p && p[0]; p += 2) {
    if (kpi_kafka_conf_set(conf, p[0], p[1], err, err_size) != 0) {
      rd_kafka_conf_destroy(conf);
      return NULL;
    }
  }
  return conf;
}

rd_kafka_resp_err_t kpi_it_produce(rd_kafka_t *producer, const char *topic, const char *key,
                                   const void *value, size_t len) {
  for (;;) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
    rd_kafka_poll(producer, 50);
  }
}

rd_kafka_t *kpi_it_kafka_subscriber(const char *client_id, const char *group, const char *topic) {
  char err[512];
  const char *kv[] = {"group.id", group, "auto.offset.reset", "earliest",
                      "enable.auto.commit", "false", NULL};
  rd_kafka_conf_t *conf = kpi_it_kafka_conf(client_id, kv, err, sizeof(err));
  if (!conf) {
    fprintf(stderr, "consumer conf: %s\n", err);
    return NULL;
  }
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
  if (!c) {
    fprintf(stderr, "consumer: %s\n", err);
    return NULL;
  }
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e = rd_kafka_subscribe(c, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (e) {
    fprintf(stderr, "subscribe %s: %s\n", topic, rd_kafka_err2str(e));
    rd_kafka_destroy(c);
    return NULL;
  }
  return c;
}

int kpi_it_kafka_find(rd_kafka_t *c, int timeout_ms,
                      int (*match)(const rd_kafka_message_t *m, void *arg), void *arg) {
  int found = 0;
  long long deadline = kpi_it_now_ms() + timeout_ms;
  while (!found && kpi_it_now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 500);
    if (!m) continue;
    if (!m->err && match(m, arg)) found = 1;
    rd_kafka_message_destroy(m);
  }
  return found;
}

void kpi_it_kafka_close(rd_kafka_t *c) {
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
}

char *kpi_it_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (!buf) {
    fclose(f);
    return NULL;
  }
  size_t got = fread(buf, 1, (size_t)n, f);
  buf[got] = '\0';
  fclose(f);
  if (len) *len = got;
  return buf;
}

int kpi_it_write_file(const char *path, const char *text) {
  char tmp[1024];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return -1;
  int bad = fputs(text, f) < 0;
  if (fclose(f) != 0 || bad) return -1;
  return rename(tmp, path) == 0 ? 0 : -1;
}

char *kpi_it_b64_decode(const char *s, size_t n) {
  char *clean = calloc(1, n + 1);
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] != '\r' && s[i] != '\n' && s[i] != ' ') clean[m++] = s[i];
  char *out = calloc(1, m + 4);
  int r = EVP_DecodeBlock((unsigned char *)out, (unsigned char *)clean, (int)m);
  if (r < 0) r = 0;
  /* EVP_DecodeBlock counts the bytes the padding stands for; they are not text. */
  size_t pad = 0;
  if (m >= 1 && clean[m - 1] == '=') pad++;
  if (m >= 2 && clean[m - 2] == '=') pad++;
  out[(size_t)r >= pad ? (size_t)r - pad : 0] = '\0';
  free(clean);
  return out;
}

const char *kpi_it_maildir(void) {
  const char *maildir = getenv("KPI_MAILDIR");
  if (!maildir) fprintf(stderr, "KPI_MAILDIR not set by the stack\n");
  return maildir;
}

static int each_message(const char *maildir, char **out, int max) {
  int count = 0;
  const char *subs[] = {"new", "cur"};
  for (int s = 0; s < 2; s++) {
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s", maildir, subs[s]);
    DIR *d = opendir(dir);
    if (!d) continue;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      if (out && count < max) {
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *buf = kpi_it_read_file(path, NULL);
        if (!buf) continue;
        out[count] = buf;
      }
      count++;
    }
    closedir(d);
  }
  return count;
}

int kpi_it_maildir_count(const char *maildir) { return each_message(maildir, NULL, 0); }

char **kpi_it_maildir_read(const char *maildir, int *count) {
  int n = each_message(maildir, NULL, 0);
  char **v = calloc((size_t)n + 1, sizeof(char *));
  *count = each_message(maildir, v, n);
  if (*count > n) *count = n;
  return v;
}

void kpi_it_strv_free(char **v) {
  for (char **p = v; p && *p; p++) free(*p);
  free(v);
}

void kpi_it_sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

long long kpi_it_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
