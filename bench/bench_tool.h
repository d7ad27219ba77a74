/* bench/bench_tool.h: the error exit and allocation of the bench's C tools (latency_load.c,
 * closed_loop_produce.c), which the scripts compile one file at a time. Define BENCH_TOOL (the
 * program's name, for messages) before including it. */
#ifndef BENCH_TOOL_H
#define BENCH_TOOL_H

#include <errno.h>
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

#endif
