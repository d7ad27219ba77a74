/* bench/bench_tool.h: the error exit, allocation, clock and librdkafka property setters of the
 * bench's C tools (latency_load.c, closed_loop_produce.c), which the scripts compile one file
 * at a time. Define BENCH_TOOL (the program's name, for messages) before including it. */
#ifndef BENCH_TOOL_H
#define BENCH_TOOL_H

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "BENCH_TOOL: WHAT: WHY" on stderr, then exit 1. */
static inline void bench_die(const char *what, const char *why) {
  fprintf(stderr, "%s: %s: %s\n", BENCH_TOOL, what, why);
  exit(1);
}

/* calloc that never returns NULL (bench_die instead); N may be 0. */
static inline void *bench_calloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) bench_die("calloc", strerror(errno));
  return p;
}

/* CLOCK's time in nanoseconds. */
static inline uint64_t bench_now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sets librdkafka property K to V on CONF, or bench_die naming K. */
static inline void bench_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) bench_die(k, err);
}

/* Sets each of WORDS[0..N) ("PROP=VALUE") on CONF, or bench_die naming the word at fault. The
 * scripts pass the settings a service logged at start (bench_kafka_config in bench_lib.sh). */
static inline void bench_conf_set_words(rd_kafka_conf_t *conf, char **words, int n) {
  for (int i = 0; i < n; i++) {
    char prop[256];
    const char *eq = strchr(words[i], '=');
    if (!eq || eq == words[i] || (size_t)(eq - words[i]) >= sizeof(prop))
      bench_die(words[i], "expected PROP=VALUE");
    memcpy(prop, words[i], (size_t)(eq - words[i]));
    prop[eq - words[i]] = '\0';
    bench_conf_set(conf, prop, eq + 1);
  }
}

#endif
