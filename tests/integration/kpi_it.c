/* kpi_it.c: integration test helpers (real PostgreSQL, Kafka and SMTP of the test stack). */
#include "kpi_it.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kpi_env.h"

void kpi_it_init(void) {
  const char *path = getenv("KPI_STACK_ENV");
  if (!path || kpi_env_load_file(path) != 0) {
    fprintf(stderr,
            "integration test: the stack is not up (KPI_STACK_ENV=%s); run through ctest, whose "
            "fixture stack.start runs scripts/stack.sh\n",
            path ? path : "(unset)");
    exit(1);
  }
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

char *kpi_it_pg_value(PGconn *conn, const char *sql) {
  PGresult *r = PQexec(conn, sql);
  char *out = NULL;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
    out = strdup(PQgetvalue(r, 0, 0));
  else if (PQresultStatus(r) != PGRES_TUPLES_OK)
    fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(conn));
  PQclear(r);
  return out;
}

pid_t kpi_it_spawn(const char *binary, const char *const *env, const char *logfile) {
  char path[1024];
  snprintf(path, sizeof(path), "%s/%s", KPI_BINARY_DIR, binary);
  pid_t pid = fork();
  if (pid != 0) return pid;
  for (const char *const *e = env; e && *e; e++) putenv((char *)*e);
  int fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
  }
  if (chdir(KPI_SOURCE_DIR) != 0) _exit(126);
  execl(path, path, (char *)NULL);
  fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
  _exit(127);
}

int kpi_it_stop(pid_t pid, int sig, int timeout_ms) {
  kill(pid, sig);
  long long deadline = kpi_it_now_ms() + timeout_ms;
  int status;
  while (kpi_it_now_ms() < deadline) {
    pid_t r = waitpid(pid, &status, WNOHANG);
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

static int http_status(int port, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  struct timeval tv = {.tv_sec = 2};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  char req[512];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                   path);
  if (write(fd, req, (size_t)n) != n) {
    close(fd);
    return -1;
  }
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
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)n + 1);
        size_t got = fread(buf, 1, (size_t)n, f);
        buf[got] = '\0';
        fclose(f);
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
