/* bench/bench_tool.h: the error exit, allocation and librdkafka property setter of the bench's
 * C tools (latency_load.c, closed_loop_produce.c), which the scripts compile one file at a
 * time. Define BENCH_TOOL (the program's name, for messages) before including it. */
#ifndef BENCH_TOOL_H
#define BENCH_TOOL_H

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Sets librdkafka property K to V on CONF, or bench_die naming K. */
static inline void bench_conf_set(rd_kafka_conf_t *conf, const char *k, const char *v) {
  char err[512];
  if (rd_kafka_conf_set(conf, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) bench_die(k, err);
}

#endif
