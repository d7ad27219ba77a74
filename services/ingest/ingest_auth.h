/* ingest_auth.h: the Authorization header values already verified against the catalog, so
 * that a client sending the same token on every request is not hashed every time
 * (docs/ingest.md "Performance, fifth round"). */
#ifndef INGEST_AUTH_H
#define INGEST_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "kpi_catalog.h"

/* Header values up to INGEST_AUTH_MAX bytes are remembered, the last INGEST_AUTH_SLOTS of
 * them (one per department in practice); longer ones are verified every time. */
#define INGEST_AUTH_SLOTS 8
#define INGEST_AUTH_MAX 128

typedef struct {
  uint64_t value[INGEST_AUTH_MAX / 8]; /* the whole header value, zero-padded */
  size_t len;                          /* 0: the slot is free */
  const kpi_department *d;             /* the catalog's department it verified as */
} ingest_auth_slot;

typedef struct {
  ingest_auth_slot slots[INGEST_AUTH_SLOTS];
  unsigned next; /* the slot the next verified value replaces */
} ingest_auth_cache;

/* The department AUTH (a whole Authorization header value) verified as before, or NULL when
 * it is not remembered. Every slot is compared in full, in time independent of the bytes of
 * AUTH and of the slots (a prober learns nothing from how long a miss takes). */
const kpi_department *ingest_auth_find(const ingest_auth_cache *c, const char *auth);

/* Remembers that AUTH verified as D (a department of the catalog in force); values longer
 * than INGEST_AUTH_MAX are not kept. */
void ingest_auth_remember(ingest_auth_cache *c, const char *auth, const kpi_department *d);

/* Forgets every value (and wipes it): the catalog was replaced, or the process ends. */
void ingest_auth_clear(ingest_auth_cache *c);

#endif
