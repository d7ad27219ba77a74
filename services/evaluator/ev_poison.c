/* ev_poison.c: the poison search's range bookkeeping on a batch (docs/evaluator.md "Records the
 * database refuses"). Pure: the transaction (ev_txn.c) writes the ranges and sends the rows found
 * poison to the DLQ. */
#include <stdlib.h>

#include "evaluator.h"

void ev_poison_next_range(const ev_batch *b, size_t *lo, size_t *hi, bool *offsets) {
  if (b->bisecting && b->n_todo) {
    *lo = b->todo[b->n_todo - 1].lo;
    *hi = b->todo[b->n_todo - 1].hi;
    *offsets = false;
  } else {
    *lo = 0;
    *hi = b->n_rows;
    *offsets = true;
  }
}

bool ev_poison_searching(const ev_batch *b) { return b->bisecting && b->n_todo; }

void ev_poison_push(ev_batch *b, size_t lo, size_t hi) {
  if (b->n_todo == b->cap_todo) {
    size_t cap = b->cap_todo ? b->cap_todo * 2 : 16;
    ev_range *r = realloc(b->todo, cap * sizeof(*r));
    if (!r) abort(); /* the batch is read again after the restart */
    b->todo = r;
    b->cap_todo = cap;
  }
  b->todo[b->n_todo].lo = lo;
  b->todo[b->n_todo].hi = hi;
  b->n_todo++;
}

void ev_poison_range_done(ev_batch *b) { b->n_todo--; }

/* The halves commit on their own, so the state a row is judged against is the one every
 * earlier row of the batch left behind: of two amounts that overflow a total together, the
 * second is the poison one, and an amount that overflows a total stored long ago is poison as
 * well. */
ev_poison_verdict ev_poison_on_data_error(ev_batch *b, bool offsets, const size_t *idx,
                                          size_t n_idx, size_t lo, size_t hi) {
  if (!offsets) {
    b->n_todo--; /* the range just tried; replaced by its halves below */
  } else if (b->bisecting && b->n_poison == b->round_poison) {
    /* Every row was written on its own and the rows together still fail: the error is not
     * in these rows. Nothing to refuse; retry with backoff like any other failure. */
    return EV_POISON_NOT_IN_ROWS;
  } else {
    b->bisecting = true;
    b->round_poison = b->n_poison;
  }
  if (n_idx == 1) return EV_POISON_ROW;
  if (n_idx == 0) return EV_POISON_EMPTY;
  /* Halve by live rows, so that each half holds some; the second half is pushed first so that
   * the first is tried first. */
  size_t mid = idx[n_idx / 2];
  ev_poison_push(b, mid, hi);
  ev_poison_push(b, lo, mid);
  return EV_POISON_SPLIT;
}

/* Duplicate event_ids never get here: ON CONFLICT absorbs them. */
bool ev_sqlstate_is_data_error(const char *s) {
  return s[0] == '2' && (s[1] == '2' || s[1] == '3');
}
