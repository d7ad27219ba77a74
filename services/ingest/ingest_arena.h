/* ingest_arena.h: a bump arena for the cJSON tree of one batch item (docs/ingest.md,
 * "Performance, fourth round"). */
#ifndef INGEST_ARENA_H
#define INGEST_ARENA_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of one arena: an NDJSON item's tree takes about 1 KiB; a larger one falls back to
 * malloc for what does not fit. */
#define INGEST_ARENA_SIZE (32 * 1024)

/* Installs cJSON's allocation hooks (cJSON_InitHooks) for the whole process. Until a thread
 * turns its arena on they are malloc and free; free of a pointer inside an arena is a no-op.
 * Call once at start, before any cJSON tree exists. */
void ingest_arena_install(void);

/* Turns the calling thread's arena on or off for cJSON's allocations. Turning it on rewinds
 * it: no tree allocated from it may be in use any more (a tree from it may still be passed to
 * cJSON_Delete, which frees only what came from malloc). */
void ingest_arena_use(bool on);

/* Releases TREE (may be NULL), parsed by the calling thread while its arena was on, when
 * ingest_arena_fallbacks() read FALLBACKS just before the parse. When nothing fell back to
 * malloc since then, the whole tree lies in the arena and there is nothing to free: the walk
 * of cJSON_Delete (one hook call per node and string) is skipped. Otherwise cJSON_Delete
 * frees the nodes that came from malloc. Call it before the arena is rewound or used for
 * anything else (docs/ingest.md, "Performance, seventh round"). */
struct cJSON;
void ingest_arena_drop(struct cJSON *tree, size_t fallbacks);

/* Whether P lies in the calling thread's arena (tests). */
bool ingest_arena_holds(const void *p);

/* Allocations this thread's arena has passed on to malloc since the start (tests, docs). */
size_t ingest_arena_fallbacks(void);

#endif
