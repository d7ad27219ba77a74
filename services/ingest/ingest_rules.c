/* ingest_rules.c: ingest's answer rules as pure functions, apart from the loop and the broker
 * so that tests/unit/test_ingest_rules.c can table-test them. */
#include <stddef.h>

#include "ingest.h"

#define RETRY_AFTER_FULL "Retry-After: 1\r\n"
#define RETRY_AFTER_DOWN "Retry-After: 5\r\n"

void ingest_tally_add(ingest_tally *t, int status) {
  t->items++;
  t->accepted += status == 202;
  t->retryable += status == 429 || status == 503;
  t->queue_full += status == 429;
  t->forbidden += status == 403;
}

int ingest_batch_status(const ingest_tally *t) {
  size_t failed = t->items - t->accepted;
  if (failed == 0) return 202;
  if (t->accepted == 0 && t->forbidden == failed) return 403;
  if (t->accepted == 0 && t->retryable == failed) return t->queue_full == failed ? 429 : 503;
  return 207;
}

int ingest_atomic_status(size_t items, size_t bad, size_t forbidden) {
  if (bad == 0) return 0;
  return forbidden == items ? 403 : 422;
}

const char *ingest_retry_after(int status) {
  return status == 429 ? RETRY_AFTER_FULL : status == 503 ? RETRY_AFTER_DOWN : NULL;
}
