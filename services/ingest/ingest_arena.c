/* ingest_arena.c: cJSON allocations from a per-thread bump arena while an item is parsed and
 * checked (see ingest_arena.h). */
#include "ingest_arena.h"

#include <cjson/cJSON.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>

/* cJSON's hooks are process-wide and take no context, so the arena is thread-local state
 * rather than a field of ingest_ctx: librdkafka's threads, or any thread that has not turned
 * its arena on, get plain malloc. */
typedef struct {
  alignas(max_align_t) unsigned char mem[INGEST_ARENA_SIZE];
  size_t used;
  bool on;
  size_t fallbacks;
} arena;

/* Zero-filled thread-local storage: nothing to allocate or free, untouched (no page used) on
 * threads that never turn it on. */
static _Thread_local arena tls_arena_mem;
static _Thread_local arena *tls_arena;

static bool holds(const arena *a, const void *p) {
  uintptr_t u = (uintptr_t)p, lo = (uintptr_t)a->mem;
  return u >= lo && u < lo + sizeof(a->mem);
}

static void *on_cjson_malloc(size_t size) {
  arena *a = tls_arena;
  if (a && a->on) {
    size_t step = (size + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    if (step >= size && step <= sizeof(a->mem) - a->used) {
      void *p = a->mem + a->used;
      a->used += step;
      return p;
    }
    a->fallbacks++;
  }
  return malloc(size);
}

static void on_cjson_free(void *p) {
  arena *a = tls_arena;
  if (a && holds(a, p)) return; /* rewound by the next ingest_arena_use(true) */
  free(p);
}

void ingest_arena_install(void) {
  cJSON_Hooks hooks = {.malloc_fn = on_cjson_malloc, .free_fn = on_cjson_free};
  cJSON_InitHooks(&hooks);
}

void ingest_arena_use(bool on) {
  arena *a = tls_arena;
  if (!a) {
    if (!on) return;
    a = tls_arena = &tls_arena_mem;
  }
  if (on) a->used = 0;
  a->on = on;
}

void ingest_arena_drop(cJSON *tree, size_t fallbacks) {
  if (!tree) return;
  if (ingest_arena_fallbacks() == fallbacks && ingest_arena_holds(tree)) return;
  cJSON_Delete(tree);
}

bool ingest_arena_holds(const void *p) { return tls_arena && holds(tls_arena, p); }

size_t ingest_arena_fallbacks(void) { return tls_arena ? tls_arena->fallbacks : 0; }
