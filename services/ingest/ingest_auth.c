/* ingest_auth.c: verified Authorization header values (see ingest_auth.h). */
#include "ingest_auth.h"

#include <openssl/crypto.h>
#include <string.h>

/* AUTH zero-padded into OUT; returns its length, or 0 when it is empty or too long. */
static size_t pad(const char *auth, uint64_t out[INGEST_AUTH_MAX / 8]) {
  size_t len = strnlen(auth, INGEST_AUTH_MAX + 1);
  if (len > INGEST_AUTH_MAX) return 0;
  memset(out, 0, INGEST_AUTH_MAX);
  memcpy(out, auth, len);
  return len;
}

const kpi_department *ingest_auth_find(const ingest_auth_cache *c, const char *auth) {
  uint64_t v[INGEST_AUTH_MAX / 8];
  size_t len = pad(auth, v);
  if (!len) return NULL;
  const kpi_department *found = NULL;
  for (size_t s = 0; s < INGEST_AUTH_SLOTS; s++) {
    const ingest_auth_slot *slot = &c->slots[s];
    /* Word by word with no early exit, as CRYPTO_memcmp does byte by byte: a free slot
     * (len 0) never matches, since LEN is not 0. */
    uint64_t diff = (uint64_t)(slot->len ^ len);
    for (size_t i = 0; i < INGEST_AUTH_MAX / 8; i++) diff |= slot->value[i] ^ v[i];
    if (diff == 0 && !found) found = slot->d;
  }
  OPENSSL_cleanse(v, sizeof(v));
  return found;
}

void ingest_auth_remember(ingest_auth_cache *c, const char *auth, const kpi_department *d) {
  if (strnlen(auth, INGEST_AUTH_MAX + 1) > INGEST_AUTH_MAX) return;
  ingest_auth_slot *slot = &c->slots[c->next];
  slot->len = pad(auth, slot->value);
  slot->d = d;
  c->next = (c->next + 1) % INGEST_AUTH_SLOTS;
}

void ingest_auth_clear(ingest_auth_cache *c) {
  OPENSSL_cleanse(c, sizeof(*c));
}
