/* nf_send.c: claim due notifications (SKIP LOCKED), send one digest mail per recipient, record the outcome. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_buf.h"
#include "kpi_codec.h"
#include "kpi_log.h"
#include "kpi_time.h"
#include "kpi_uuid.h"
#include "notifier.h"

/* The outcome statements below update rows they name by id, "only while pending", and the
 * claim's "picked" step re-checks the rows it found. They say so as
 * "state NOT IN ('sent', 'dead')", which the CHECK on state (pending, sent or dead; NOT NULL)
 * makes the same test, rather than "state = 'pending'": that form matches the predicate of
 * the partial index on pending rows (notifications_pending_age), and on
 * a table whose statistics do not yet count its pending rows (a burst: autovacuum has not run)
 * the planner then read every pending row through it and hash-joined the ids, about
 * 1 ms per statement with 5,000 rows waiting and growing with the queue, instead of one
 * primary-key lookup per id (docs/notifier.md "Performance", third round). */
#define NF_PENDING "state NOT IN ('sent', 'dead')"

/* Claims the due rows of recipients whose oldest due row has waited group_wait, like
 * Alertmanager's group_wait: up to digest_max due rows of each such recipient, oldest first,
 * join one digest (the rest follow in the next claim, at once). Capping rows per recipient
 * in SQL bounds the mails of a claim by its recipients ($2), which nf_claim_room sizes. The
 * rows are locked with SKIP LOCKED and leased in the same statement by pushing
 * next_attempt_at forward, so other replicas neither wait for nor re-send them; a crashed
 * sender's rows become due again when the lease ends.
 *
 * "ready" walks the pending rows oldest first (index notifications_pending_age, migration 010)
 * and stops after $3 due ones that have waited group_wait: the first $2 recipients met in that
 * walk are exactly those whose oldest due row is oldest, so the order is the one a GROUP BY
 * over every due row gave, while the cost no longer grows with the rows waiting. A recipient
 * holding more than $3 of the oldest rows only makes the claim take fewer recipients.
 * "ranked" takes up to $5 due rows of each of those recipients, oldest first, one lookup per
 * recipient in notifications_recipient_state (migration 011). Its state test is the range
 * "state >= 'pending' AND state <= 'pending'": the planner cannot prove "state = 'pending'"
 * from it, so the partial index on pending rows does not apply. A partial index is costed
 * from its last VACUUM or ANALYZE, and after one that saw nothing pending it looks empty:
 * the planner then read every pending row through it on each claim (docs/notifier.md
 * "Performance", fourth round; PostgreSQL 15). The range fixes state, so ordering by state
 * first lets the index give the order and the lookup stop after $5 due rows. "picked"
 * re-checks state and due time on the rows it locks, found by primary key (NF_PENDING, above,
 * for the same reason). */
static const char SQL_CLAIM[] =
    "WITH ready AS ("
    "  SELECT recipient FROM ("
    "    SELECT recipient, created_at, id FROM notifications"
    "    WHERE state = 'pending' AND next_attempt_at <= now()"
    "      AND created_at <= now() - $1::bigint * interval '1 millisecond'"
    "    ORDER BY created_at, id LIMIT $3) oldest"
    "  GROUP BY recipient ORDER BY min(created_at), min(id) LIMIT $2"
    "), ranked AS ("
    "  SELECT x.id FROM ready r CROSS JOIN LATERAL ("
    "    SELECT n.id FROM notifications n"
    "    WHERE n.recipient = r.recipient AND n.state >= 'pending' AND n.state <= 'pending'"
    "      AND n.next_attempt_at <= now()"
    "    ORDER BY n.state, n.created_at, n.id LIMIT $5::int) x"
    "), picked AS ("
    "  SELECT n.id FROM notifications n JOIN ranked k ON k.id = n.id"
    "  WHERE n." NF_PENDING " AND n.next_attempt_at <= now()"
    "  ORDER BY n.recipient, n.created_at, n.id"
    "  LIMIT $3"
    "  FOR UPDATE OF n SKIP LOCKED"
    ") "
    "UPDATE notifications n SET next_attempt_at = now() + $4::bigint * interval '1 millisecond' "
    "FROM picked WHERE n.id = picked.id "
    "RETURNING n.id, n.recipient, n.payload, n.attempts, "
    "  (extract(epoch FROM n.created_at) * 1000)::bigint AS created_ms";

/* Every mail accepted since the last one ran, in one statement: $1 holds each mail's row ids as
 * an array literal ("{1,2}"), $2 its Message-ID and $3 the server's reply, element by element.
 * One statement per batch instead of one per mail: the database's share of a mail was most of
 * the notifier's cost (docs/notifier.md, "Performance"). Each row is still updated once, and
 * only while pending, as before. */
static const char SQL_SENT_BATCH[] =
    "UPDATE notifications n SET state = 'sent', sent_at = now(), attempts = n.attempts + 1, "
    "  message_id = b.mid, smtp_reply = b.reply, last_error = NULL "
    "FROM (SELECT unnest(m.ids::bigint[]) AS id, m.mid, m.reply "
    "      FROM unnest($1::text[], $2::text[], $3::text[]) AS m(ids, mid, reply)) b "
    "WHERE n.id = b.id AND n." NF_PENDING;

/* A 4xx reply to the message itself: one more attempt counted, the next one after the
 * backoff, or dead when the attempts are used up or the row has outlived the queue lifetime
 * ($5 ms, KPI_NOTIFY_MAX_AGE). */
static const char SQL_RETRY[] =
    "UPDATE notifications SET attempts = attempts + 1, last_error = $2, "
    "  state = CASE WHEN attempts + 1 >= $3::int "
    "                 OR created_at < now() - $5::bigint * interval '1 millisecond' "
    "               THEN 'dead' ELSE 'pending' END, "
    "  next_attempt_at = now() + $4::bigint * interval '1 millisecond' "
    "WHERE id = ANY($1::bigint[]) AND " NF_PENDING " "
    "RETURNING id, state, recipient, measure_id, payload, attempts";

/* The relay failed, not the message: the attempt does not count and the rows are due again
 * at once, so they go out as soon as the relay is back (claims stop while it is down). The
 * reason is kept in last_error for the operator. */
static const char SQL_RELAY_DEFER[] =
    "UPDATE notifications SET last_error = $2, next_attempt_at = now() "
    "WHERE id = ANY($1::bigint[]) AND " NF_PENDING;

static const char SQL_DEAD[] =
    "UPDATE notifications SET attempts = attempts + 1, last_error = $2, state = 'dead' "
    "WHERE id = ANY($1::bigint[]) AND " NF_PENDING " "
    "RETURNING id, state, recipient, measure_id, payload, attempts";

/* Gives the lease back when a send was cancelled by shutdown. */
static const char SQL_RELEASE[] =
    "UPDATE notifications SET next_attempt_at = now() "
    "WHERE id = ANY($1::bigint[]) AND " NF_PENDING;

/* One mail: a digest of the rows of one recipient, from SMTP until its outcome is written. */
typedef struct nf_mail {
  struct nf_mail *next; /* in notifier.ready_head, sent_head or retry_head */
  notifier *nf;
  uint64_t claimed_at;  /* uv_now when its claim was sent: nf_ready_expired */
  nf_claimed_row *rows; /* claimed and not yet composed: its rows, strings in row_text */
  char *row_text;
  char recipient[KPI_MAIL_ADDR_MAX + 1];
  char message_id[KPI_MAIL_MSGID_MAX];
  kpi_buf ids;          /* the rows' ids as a PostgreSQL array literal, "{1,2,3}" */
  size_t n_rows;
  int max_attempts;     /* highest attempts count among the rows before this one */
  kpi_smtp_result result;
  const char *forced_error; /* set when the mail could not even be composed */
} nf_mail;

static void record_outcome(nf_mail *mail);
static void ready_release_all(notifier *nf, const char *why);
static void claim(notifier *nf);
static void sent_flush(notifier *nf);
static void sent_queued(notifier *nf);

static nf_mail *mail_new(notifier *nf, const char *recipient) {
  nf_mail *m = calloc(1, sizeof(*m));
  if (!m) return NULL;
  m->nf = nf;
  snprintf(m->recipient, sizeof(m->recipient), "%s", recipient);
  kpi_buf_arr_begin(&m->ids);
  return m;
}

static void mail_add_id(nf_mail *m, int64_t id) {
  char num[24];
  snprintf(num, sizeof(num), "%" PRId64, id);
  kpi_buf_arr_raw(&m->ids, num);
}

static void mail_free_rows(nf_mail *m) {
  free(m->rows);
  free(m->row_text);
  m->rows = NULL;
  m->row_text = NULL;
}

static void mail_free(nf_mail *m) {
  mail_free_rows(m);
  kpi_buf_free(&m->ids);
  free(m);
}

/* The mail's outcome is recorded (or dropped at exit): one send slot is free again. */
static void mail_done(nf_mail *m) {
  notifier *nf = m->nf;
  nf->mails_inflight--;
  kpi_metrics_set(nf->m.inflight, (double)nf->mails_inflight);
  mail_free(m);
  nf_send_kick(nf);
}

/* Outcome updates ------------------------------------------------------------------------ */

static void on_uv_update_retry(uv_timer_t *t) {
  notifier *nf = t->data;
  nf_mail *list = nf->retry_head;
  nf->retry_head = NULL;
  while (list) {
    nf_mail *m = list;
    list = m->next;
    m->next = NULL;
    record_outcome(m);
  }
}

/* The outcome could not be written (database away): keep it and try again, so a sent mail is
 * marked sent as soon as possible and its lease does not run out into a second send. */
static void outcome_retry_later(nf_mail *m) {
  notifier *nf = m->nf;
  if (nf->stopping) {
    mail_done(m); /* exiting: the lease makes the rows due again later */
    return;
  }
  m->next = nf->retry_head;
  nf->retry_head = m;
  if (!uv_is_active((uv_handle_t *)&nf->update_retry))
    uv_timer_start(&nf->update_retry, on_uv_update_retry, 1000, 0);
}

static void on_pg_outcome(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  nf_mail *m = arg;
  notifier *nf = m->nf;
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (!res || (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)) {
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "outcome_update_failed", "mail %s (%s): %s", m->message_id,
            kpi_smtp_outcome_name(m->result.outcome),
            res ? PQresultErrorMessage(res) : "connection lost; will retry");
    outcome_retry_later(m);
    return;
  }
  if (st == PGRES_TUPLES_OK) { /* SQL_DEAD or SQL_RETRY: some rows may have gone dead */
    char buf[600];
    nf_dlq_publish_dead(nf, res, nf_dead_reason(m->forced_error, &m->result, buf, sizeof(buf)));
  }
  mail_done(m);
}

/* Numbers as statement parameters. */
typedef struct {
  char s[24];
} num_text;

static num_text num(int64_t v) {
  num_text t;
  snprintf(t.s, sizeof(t.s), "%" PRId64, v);
  return t;
}

/* The batched "sent" UPDATE came back: each mail of the batch is done, or, when the statement
 * failed, kept and retried like any outcome (outcome_retry_later). */
static void on_pg_sent_batch(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  nf_mail *list = arg;
  notifier *nf = list->nf;
  nf->sent_inflight = false;
  bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
  if (!ok) {
    size_t n = 0;
    for (nf_mail *m = list; m; m = m->next) n++;
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "outcome_update_failed", "%zu sent mails (first %s): %s", n,
            list->message_id, res ? PQresultErrorMessage(res) : "connection lost; will retry");
  }
  while (list) {
    nf_mail *m = list;
    list = m->next;
    m->next = NULL;
    if (ok) mail_done(m);
    else outcome_retry_later(m);
  }
  sent_queued(nf);
}

/* Sends every waiting "sent" outcome in one statement, unless one is already running (the
 * mails that arrive meanwhile go in the next). */
static void sent_flush(notifier *nf) {
  if (nf->sent_inflight || !nf->sent_head) return;
  nf_mail *list = nf->sent_head;
  kpi_buf ids = {0}, mids = {0}, replies = {0};
  kpi_buf_arr_begin(&ids);
  kpi_buf_arr_begin(&mids);
  kpi_buf_arr_begin(&replies);
  for (nf_mail *m = list; m; m = m->next) {
    kpi_buf_arr_str(&ids, kpi_buf_str(&m->ids));
    kpi_buf_arr_str(&mids, m->message_id);
    kpi_buf_arr_str(&replies, m->result.reply[0] ? m->result.reply : "250");
  }
  kpi_buf_arr_end(&ids);
  kpi_buf_arr_end(&mids);
  kpi_buf_arr_end(&replies);
  int rc = KPI_PGASYNC_ENOMEM;
  if (!ids.oom && !mids.oom && !replies.oom) {
    const char *p[] = {kpi_buf_str(&ids), kpi_buf_str(&mids), kpi_buf_str(&replies)};
    rc = kpi_pgasync_query_prepared(nf->pg_sent, "nf_sent_batch", SQL_SENT_BATCH, 3, p,
                                    on_pg_sent_batch, list);
  }
  kpi_buf_free(&ids);
  kpi_buf_free(&mids);
  kpi_buf_free(&replies);
  nf->sent_head = nf->sent_tail = NULL;
  nf->sent_waiting = 0;
  uv_timer_stop(&nf->sent_timer);
  if (rc == 0) {
    nf->sent_inflight = true;
    return;
  }
  while (list) { /* not queued (database away): each kept and retried */
    nf_mail *m = list;
    list = m->next;
    m->next = NULL;
    outcome_retry_later(m);
  }
}

static void on_uv_sent_timer(uv_timer_t *t) { sent_flush(t->data); }

/* A sent mail joined the batch. Against a relay that answers one mail at a time, writing each
 * batch as soon as the previous one returned made most batches one mail long; so a batch is
 * written when it holds half the send capacity, when no other mail is in SMTP (nothing more
 * is coming soon), or NF_SENT_BATCH_WAIT_MS after its first mail, whichever comes first. The
 * wait only delays the row update (the duplicate window after a crash), never a send; "half
 * the send capacity" stays the threshold when claims run ahead, so the window does not grow
 * with the claim-ahead depth. */
static void sent_queued(notifier *nf) {
  if (nf->sent_inflight || !nf->sent_head) return; /* the running batch's return calls again */
  size_t capacity = nf_send_capacity(nf->smtp_connections);
  /* Claimed mails waiting for the outcomes to be written (feed) do not wait for the timer. */
  bool feed_blocked = nf->ready_head && nf->mails_inflight >= capacity;
  if (nf->sent_waiting >= capacity / 2 || nf->mails_smtp == 0 || feed_blocked) {
    sent_flush(nf);
    return;
  }
  if (!uv_is_active((uv_handle_t *)&nf->sent_timer))
    uv_timer_start(&nf->sent_timer, on_uv_sent_timer, NF_SENT_BATCH_WAIT_MS, 0);
}

/* Writes M's outcome to its rows: the statement nf_rows_action_for chooses. */
static void record_outcome(nf_mail *m) {
  notifier *nf = m->nf;
  if (nf->stopping) {
    mail_done(m);
    return;
  }
  const kpi_smtp_result *r = &m->result;
  const char *ids = kpi_buf_str(&m->ids);
  char err[600];
  nf_outcome_error(r, err, sizeof(err));
  int rc;
  switch (nf_rows_action_for(m->forced_error != NULL, r->outcome)) {
    case NF_ROWS_SENT:
      /* Joins the next batched UPDATE (sent_flush); failures come back per mail. */
      m->next = NULL;
      if (nf->sent_tail) nf->sent_tail->next = m;
      else nf->sent_head = m;
      nf->sent_tail = m;
      nf->sent_waiting++;
      sent_queued(nf);
      return;
    case NF_ROWS_RELEASE: {
      const char *p[] = {ids};
      rc = kpi_pgasync_query(nf->pg, SQL_RELEASE, 1, p, on_pg_outcome, m);
      break;
    }
    case NF_ROWS_DEFER: {
      const char *p[] = {ids, err};
      rc = kpi_pgasync_query(nf->pg, SQL_RELAY_DEFER, 2, p, on_pg_outcome, m);
      break;
    }
    case NF_ROWS_DEAD: {
      const char *p[] = {ids, m->forced_error ? m->forced_error : err};
      rc = kpi_pgasync_query(nf->pg, SQL_DEAD, 2, p, on_pg_outcome, m);
      break;
    }
    case NF_ROWS_RETRY:
    default: {
      num_text max_attempts = num(nf->cfg.max_attempts), max_age = num(nf->cfg.max_age_ms);
      num_text delay =
          num(nf_backoff_ms(m->max_attempts + 1, nf->cfg.retry_base_ms, nf->cfg.retry_max_ms));
      const char *p[] = {ids, err, max_attempts.s, delay.s, max_age.s};
      rc = kpi_pgasync_query(nf->pg, SQL_RETRY, 5, p, on_pg_outcome, m);
      break;
    }
  }
  if (rc != 0) outcome_retry_later(m);
}

/* Relay state ----------------------------------------------------------------------------- */

static void on_uv_relay_probe(uv_timer_t *t);

static void relay_schedule_probe(notifier *nf) {
  if (nf->shutdown.stopping || nf->stopping || nf->relay.probe_inflight) return;
  uint64_t d =
      (uint64_t)nf_relay_probe_delay_ms(&nf->relay, nf->cfg.probe_base_ms, nf->cfg.probe_max_ms);
  uv_timer_start(&nf->relay_timer, on_uv_relay_probe, d, 0);
}

/* A relay-level failure of a mail: the relay goes down once, logged once; mails still in the
 * SMTP client fail on their own and only give their rows back. */
static void relay_failed(notifier *nf, const char *reason) {
  if (!nf_relay_mark_down(&nf->relay, uv_now(nf->loop))) return;
  kpi_metrics_set(nf->m.relay_up, 0);
  kpi_log(KPI_LOG_WARN, "relay_down",
          "SMTP relay failed (%s); no mail is claimed until it answers a probe; queued mails "
          "keep their attempts",
          reason);
  relay_schedule_probe(nf);
  /* Claimed mails not yet handed to SMTP go back at once, attempts unchanged. */
  ready_release_all(nf, "relay down before the mail was sent");
}

static void relay_set_up(notifier *nf, const char *how) {
  if (!nf_relay_mark_up(&nf->relay)) return;
  uv_timer_stop(&nf->relay_timer);
  kpi_metrics_set(nf->m.relay_up, 1);
  kpi_log(KPI_LOG_INFO, "relay_up", "SMTP relay answers again (%s) after %.1f s down; deferred "
          "mails are due now",
          how, (double)(uv_now(nf->loop) - nf->relay.down_since) / 1000.0);
  /* Mails the relay failed were given back due at once: claim them now, back to back. */
  nf->claim_again = true;
  claim(nf);
}

/* The relay answered a command of a mail: the session works, whatever it said of the mail. */
static void relay_answered(notifier *nf) {
  nf_relay_answered(&nf->relay);
  if (!nf->stopping) relay_set_up(nf, "a mail transaction");
}

/* "ERROR REPLY" with the mailboxes masked: a refusal often quotes one ("550 5.1.1 <a@b>: no
 * such user"), and logs name mails by Message-ID, never by address. */
static void said_redacted(const kpi_smtp_result *r, char *out, size_t size) {
  char tmp[600];
  snprintf(tmp, sizeof(tmp), "%s%s%s", r->error, r->error[0] ? " " : "", r->reply);
  kpi_mail_redact_addresses(tmp, out, size);
}

static void on_smtp_probe(kpi_smtp *smtp, const kpi_smtp_result *r, void *arg) {
  (void)smtp;
  notifier *nf = arg;
  nf->relay.probe_inflight = false;
  if (r->outcome == KPI_SMTP_CANCELLED || nf->stopping) return;
  kpi_metrics_inc(nf->m.relay_probes);
  if (r->outcome == KPI_SMTP_SENT) {
    relay_set_up(nf, "probe");
    return;
  }
  char said[600];
  said_redacted(r, said, sizeof(said));
  nf_relay_probe_failed(&nf->relay);
  kpi_log(KPI_LOG_DEBUG, "relay_probe_failed", "%s", said);
  if (!nf->relay.up) relay_schedule_probe(nf);
}

static void on_uv_relay_probe(uv_timer_t *t) {
  notifier *nf = t->data;
  if (nf->relay.up || nf->relay.probe_inflight || nf->shutdown.stopping || nf->stopping || !nf->smtp)
    return;
  nf->relay.probe_inflight = true;
  int rc = kpi_smtp_probe(nf->smtp, on_smtp_probe, nf);
  if (rc != 0) {
    nf->relay.probe_inflight = false;
    kpi_log(KPI_LOG_WARN, "relay_probe_failed", "cannot start a probe: %s", kpi_smtp_strerror(rc));
    nf_relay_probe_failed(&nf->relay);
    relay_schedule_probe(nf);
  }
}

/* Sending --------------------------------------------------------------------------------- */

/* Counts and logs what SMTP said of M and keeps the relay state in step with it. */
static void note_smtp_result(nf_mail *m, const kpi_smtp_result *r) {
  notifier *nf = m->nf;
  char said[600];
  said_redacted(r, said, sizeof(said));
  switch (r->outcome) {
    case KPI_SMTP_SENT:
      relay_answered(nf);
      kpi_metrics_inc(nf->m.sent);
      kpi_metrics_add(nf->m.sent_rows, (double)m->n_rows);
      kpi_log(KPI_LOG_INFO, "mail_sent", "%s: %zu notifications, %.3f s, server: %s",
              m->message_id, m->n_rows, r->seconds, r->reply);
      break;
    case KPI_SMTP_TRANSIENT:
      relay_answered(nf);
      kpi_metrics_inc(nf->m.failed);
      kpi_log(KPI_LOG_WARN, "mail_failed", "%s (attempt %d of %lld): %s", m->message_id,
              m->max_attempts + 1, (long long)nf->cfg.max_attempts, said);
      break;
    case KPI_SMTP_PERMANENT:
      relay_answered(nf);
      kpi_metrics_inc(nf->m.failed);
      kpi_metrics_inc(nf->m.permanent);
      kpi_log(KPI_LOG_ERROR, "mail_rejected", "%s (permanent): %s", m->message_id, said);
      break;
    case KPI_SMTP_CANCELLED:
      kpi_log(KPI_LOG_INFO, "mail_cancelled", "%s: %s", m->message_id, r->error);
      break;
    case KPI_SMTP_RELAY:
      /* Once per mail only at debug level: the relay's transition is the event. */
      kpi_metrics_inc(nf->m.relay_deferred);
      kpi_log(KPI_LOG_DEBUG, "mail_deferred", "%s: relay failure, attempt not counted: %s",
              m->message_id, said);
      if (!nf->stopping) relay_failed(nf, said);
      break;
  }
}

static void on_smtp_done(kpi_smtp *smtp, const kpi_smtp_result *r, void *arg) {
  (void)smtp;
  nf_mail *m = arg;
  notifier *nf = m->nf;
  nf->mails_smtp--;
  m->result = *r;
  kpi_metrics_observe(nf->m.send_seconds, r->seconds);
  note_smtp_result(m, r);
  record_outcome(m);
  /* A connection is free although the outcome may wait for the batched UPDATE: the next
   * claim need not wait for it (nf_claim_room). */
  nf_send_kick(nf);
}

/* Starts recording M's outcome without sending it (cancelled, or dead when FORCED is set):
 * the mail takes a send slot until the outcome is written, like any other. */
static void mail_settle_unsent(nf_mail *m, const char *forced, const char *cancel_why) {
  notifier *nf = m->nf;
  nf->mails_inflight++;
  kpi_metrics_set(nf->m.inflight, (double)nf->mails_inflight);
  m->forced_error = forced;
  if (!forced) {
    m->result.outcome = KPI_SMTP_CANCELLED;
    snprintf(m->result.error, sizeof(m->result.error), "%s", cancel_why);
  }
  record_outcome(m);
}

/* A row whose stored payload does not decode (never expected: the consumer checked it) goes
 * dead on its own, outside the digest. */
static void reject_row(notifier *nf, const nf_claimed_row *row) {
  nf_mail *bad = mail_new(nf, row->recipient);
  if (!bad) return;
  mail_add_id(bad, row->id);
  kpi_buf_arr_end(&bad->ids);
  if (bad->ids.oom) {
    mail_free(bad);
    return;
  }
  bad->n_rows = 1;
  bad->forced_error = "stored payload is not a valid kpi.alert/1 record";
  nf->mails_inflight++;
  record_outcome(bad);
}

/* Decodes ROWS[0..N) into ALERTS and LIST (the digest's order), adding each good row's id to
 * M; rejects the rows that do not decode. Returns the number of good rows. */
static size_t decode_rows(nf_mail *m, const nf_claimed_row *rows, size_t n, kpi_alert *alerts,
                          const kpi_alert **list) {
  notifier *nf = m->nf;
  const char *base_url = nf_dashboard_url(nf);
  size_t good = 0;
  for (size_t i = 0; i < n; i++) {
    kpi_errors errs = {0};
    if (kpi_alert_decode(rows[i].payload, strlen(rows[i].payload), &alerts[good], &errs) != 0) {
      reject_row(nf, &rows[i]);
      continue;
    }
    /* The link comes from our configuration, never from the record (nf_consume.c). */
    free(alerts[good].dashboard_url);
    alerts[good].dashboard_url = base_url ? strdup(base_url) : NULL;
    list[good] = &alerts[good];
    good++;
    if (rows[i].attempts > m->max_attempts) m->max_attempts = rows[i].attempts;
    mail_add_id(m, rows[i].id);
  }
  kpi_buf_arr_end(&m->ids);
  return good;
}

/* The Message-ID is a name-based UUID of the rows the mail carries, so a retry of the same
 * digest (or a re-send after a crash between the 250 and the row update) carries the same id,
 * and receiving systems can recognise the duplicate. Then the message itself into *MSG. */
static int compose(nf_mail *m, const kpi_alert **list, size_t good, char **msg, size_t *len) {
  static const uint8_t MSGID_NS[16] = {0x2f, 0x0c, 0x61, 0x8e, 0x5b, 0x3d, 0x4a, 0x77,
                                       0x9c, 0x14, 0xd2, 0x6a, 0x80, 0x3b, 0xe1, 0x59};
  const nf_config *cfg = &m->nf->cfg;
  char uuid[KPI_UUID_STRLEN + 1];
  kpi_uuid_v5(MSGID_NS, m->ids.s, m->ids.len, uuid);
  if (!uuid[0] || kpi_mail_message_id(uuid, cfg->from, m->message_id, sizeof(m->message_id)) != 0)
    return KPI_MAIL_EINVAL;
  kpi_mail_params p = {.from = cfg->from,
                       .from_name = cfg->from_name,
                       .to = m->recipient,
                       .date_ms = kpi_time_now_ms(),
                       .message_id = m->message_id};
  return kpi_mail_compose(&p, list, good, msg, len);
}

/* Hands the composed mail M to SMTP, or records why it cannot go. */
static void dispatch(nf_mail *m, int rc, char *msg, size_t len) {
  notifier *nf = m->nf;
  if (rc == KPI_MAIL_ENOMEM) {
    /* Out of memory is passing: give the rows back (as a cancelled send does) instead of
     * burying them as dead. */
    mail_settle_unsent(m, NULL, "cannot compose the mail: out of memory");
    return;
  }
  if (rc != 0) {
    /* Only an invalid recipient gets here (the consumer validated it, so a row edited by
     * hand): retrying cannot help. */
    mail_settle_unsent(m, "cannot compose the mail (invalid recipient address)", NULL);
    return;
  }
  nf->mails_inflight++;
  kpi_metrics_set(nf->m.inflight, (double)nf->mails_inflight);
  rc = kpi_smtp_send(nf->smtp, nf->cfg.from, m->recipient, msg, len, on_smtp_done, m);
  if (rc == 0) nf->mails_smtp++;
  if (rc != 0) {
    m->result.outcome = KPI_SMTP_CANCELLED;
    snprintf(m->result.error, sizeof(m->result.error), "%s", kpi_smtp_strerror(rc));
    record_outcome(m);
  }
}

/* Composes the claimed mail M from its rows and hands it to SMTP (or records why not). The
 * rows are decoded only now, when a send slot is free, so that a large claim never holds the
 * loop for long while the connections could be fed. */
static void start_mail(nf_mail *m) {
  size_t n = m->n_rows;
  kpi_alert *alerts = calloc(n, sizeof(*alerts));
  const kpi_alert **list = calloc(n, sizeof(*list));
  if (!alerts || !list || kpi_buf_reserve(&m->ids, n * 21 + 1) != 0) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot compose a mail; its rows wait for the lease");
    mail_free(m);
    free(alerts);
    free(list);
    return;
  }
  size_t good = decode_rows(m, m->rows, n, alerts, list);
  mail_free_rows(m);
  m->n_rows = good;
  char *msg = NULL;
  size_t len = 0;
  int rc = good > 0 ? compose(m, list, good, &msg, &len) : KPI_MAIL_EINVAL;
  for (size_t i = 0; i < good; i++) kpi_alert_clear(&alerts[i]);
  free(alerts);
  free(list);
  if (good == 0) mail_free(m);
  else dispatch(m, rc, msg, len);
}

/* Gives a claimed mail that was never composed back to the queue: its lease ends now (the
 * rows are due again at once, attempts unchanged), through the same path as a cancelled send. */
static void ready_release(nf_mail *m, const char *why) {
  if (!nf_ready_lease_held(m->claimed_at, uv_now(m->nf->loop), m->nf->cfg.lease_ms)) {
    kpi_log(KPI_LOG_WARN, "mail_lease_ran_out", "%zu row(s) claimed ahead left to their lease (%s)",
            m->n_rows, why);
    mail_free(m); /* due again when the lease ends; another replica may hold them already */
    return;
  }
  for (size_t i = 0; i < m->n_rows; i++) mail_add_id(m, m->rows[i].id);
  kpi_buf_arr_end(&m->ids);
  mail_free_rows(m);
  if (m->ids.oom) {
    mail_free(m); /* the rows wait for their lease */
    return;
  }
  mail_settle_unsent(m, NULL, why);
}

static nf_mail *ready_pop(notifier *nf) {
  nf_mail *m = nf->ready_head;
  if (!m) return NULL;
  nf->ready_head = m->next;
  if (!nf->ready_head) nf->ready_tail = NULL;
  m->next = NULL;
  nf->mails_ready--;
  return m;
}

/* Every claimed mail still waiting for a connection goes back (the relay went down, or the
 * service is draining): none of them was sent, none counts an attempt. */
static void ready_release_all(notifier *nf, const char *why) {
  nf_mail *m;
  while ((m = ready_pop(nf))) ready_release(m, why);
}

/* Hands claimed mails to SMTP, oldest claim first, while fewer than the send capacity of mails
 * are in SMTP or have an outcome not yet written (mails_inflight): a crash re-sends at most
 * that many (the server may have taken them), however far the claims run ahead. A mail that
 * waited past nf_ready_expired goes back instead, so that none is in flight when its lease
 * ends. */
static void feed(notifier *nf) {
  size_t capacity = nf_send_capacity(nf->smtp_connections);
  if (nf->stopping) return;
  if (nf->shutdown.stopping || !nf->relay.up) {
    ready_release_all(nf, nf->relay.up ? "draining" : "relay down before the mail was sent");
    return;
  }
  while (nf->ready_head && nf_claim_slots(capacity, nf->mails_inflight) > 0) {
    nf_mail *m = ready_pop(nf);
    if (nf_ready_expired(m->claimed_at, uv_now(nf->loop), nf->ready_hold_ms))
      ready_release(m, "no connection free before the lease would have run short");
    else
      start_mail(m);
  }
}

/* Claims ---------------------------------------------------------------------------------- */

/* Reads the claimed rows of RES (their strings stay in RES). */
static nf_claimed_row *claimed_rows(const PGresult *res, int n) {
  nf_claimed_row *rows = calloc((size_t)n, sizeof(*rows));
  if (!rows) return NULL;
  int c_id = PQfnumber(res, "id"), c_rcpt = PQfnumber(res, "recipient");
  int c_payload = PQfnumber(res, "payload"), c_attempts = PQfnumber(res, "attempts");
  int c_created = PQfnumber(res, "created_ms");
  for (int i = 0; i < n; i++) {
    rows[i].id = strtoll(PQgetvalue(res, i, c_id), NULL, 10);
    rows[i].recipient = PQgetvalue(res, i, c_rcpt);
    rows[i].payload = PQgetvalue(res, i, c_payload);
    rows[i].attempts = atoi(PQgetvalue(res, i, c_attempts));
    rows[i].created_ms = strtoll(PQgetvalue(res, i, c_created), NULL, 10);
  }
  return rows;
}

/* A claimed mail for ROWS[0..N) (one recipient), waiting for a connection: the rows and their
 * strings are copied out of the claim's result, which lives only during its callback. */
static nf_mail *mail_claimed(notifier *nf, const nf_claimed_row *rows, size_t n) {
  size_t text = 0;
  for (size_t i = 0; i < n; i++) text += strlen(rows[i].recipient) + strlen(rows[i].payload) + 2;
  nf_mail *m = mail_new(nf, rows[0].recipient);
  if (!m) return NULL;
  m->rows = calloc(n, sizeof(*m->rows));
  m->row_text = malloc(text);
  if (!m->rows || !m->row_text) {
    mail_free(m);
    return NULL;
  }
  char *p = m->row_text;
  for (size_t i = 0; i < n; i++) {
    m->rows[i] = rows[i];
    size_t lr = strlen(rows[i].recipient) + 1, lp = strlen(rows[i].payload) + 1;
    m->rows[i].recipient = memcpy(p, rows[i].recipient, lr);
    m->rows[i].payload = memcpy(p + lr, rows[i].payload, lp);
    p += lr + lp;
  }
  m->n_rows = n;
  m->claimed_at = nf->claim_sent_at;
  return m;
}

/* Queues the digests of the sorted ROWS[0..N) as claimed mails; returns how many. */
static size_t queue_claimed(notifier *nf, const nf_claimed_row *rows, size_t n) {
  size_t mails = 0;
  for (size_t start = 0, end; start < n; start = end) {
    end = nf_digest_end(rows, n, start, (size_t)nf->cfg.digest_max);
    nf_mail *m = mail_claimed(nf, rows + start, end - start);
    if (!m) {
      kpi_log(KPI_LOG_ERROR, "out_of_memory",
              "cannot hold a claimed mail; its rows wait for the lease");
      continue;
    }
    if (nf->ready_tail) nf->ready_tail->next = m;
    else nf->ready_head = m;
    nf->ready_tail = m;
    nf->mails_ready++;
    mails++;
  }
  return mails;
}

static void on_pg_claimed(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  notifier *nf = arg;
  nf->claim_inflight = false;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "claim_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; rows stay leased until expiry");
    return;
  }
  int n = PQntuples(res);
  size_t capacity = nf_send_capacity(nf->smtp_connections);
  size_t max_ahead = nf->ready_hold_ms < 0 ? 0 : (size_t)nf->cfg.prefetch;
  if (n == 0) {
    nf->claim_ahead = nf_claim_ahead_next(nf->claim_ahead, capacity, max_ahead, false);
    return;
  }
  nf_claimed_row *rows = claimed_rows(res, n);
  if (!rows) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot hold %d claimed rows", n);
    return;
  }
  nf_digest_sort(rows, (size_t)n);
  size_t mails = queue_claimed(nf, rows, (size_t)n);
  free(rows);
  kpi_metrics_inc(nf->m.claims);
  nf->claim_ahead = nf_claim_ahead_next(nf->claim_ahead, capacity, max_ahead,
                                        mails >= nf->claim_asked);
  /* Rows came back: more are probably due, so claim again as soon as there is room instead
   * of waiting for the poll timer. An empty claim ends the burst. */
  nf->claim_again = true;
  kpi_log(KPI_LOG_DEBUG, "claimed", "%d rows, %zu mails, %zu ahead", n, mails, nf->claim_ahead);
  nf_send_kick(nf);
}

/* Claims as many recipients (one mail each) as fit the send capacity plus the claim-ahead
 * depth, counting the mails in SMTP and those claimed and waiting (nf_claim_room). */
static void claim(notifier *nf) {
  if (nf->claim_inflight || !nf->db_ready || nf->shutdown.stopping || !kpi_pgasync_is_up(nf->pg)) return;
  if (!nf->relay.up) return; /* the probe claims when the relay is back */
  size_t depth = nf_send_capacity(nf->smtp_connections) + nf->claim_ahead;
  size_t slots = nf_claim_room(depth, nf->mails_smtp + nf->mails_ready,
                               nf->mails_inflight + nf->mails_ready);
  if (slots == 0) return;
  num_text gw = num(nf->cfg.group_wait_ms), recipients = num((int64_t)slots);
  num_text limit = num(nf->cfg.claim_rows), lease = num(nf->cfg.lease_ms);
  num_text per_recipient = num(nf->cfg.digest_max);
  const char *p[] = {gw.s, recipients.s, limit.s, lease.s, per_recipient.s};
  if (kpi_pgasync_query_prepared(nf->pg, "nf_claim", SQL_CLAIM, 5, p, on_pg_claimed, nf) != 0)
    return;
  nf->claim_inflight = true;
  nf->claim_again = false;
  nf->claim_asked = slots;
  nf->claim_sent_at = uv_now(nf->loop);
}

void nf_send_kick(notifier *nf) {
  feed(nf);
  size_t depth = nf_send_capacity(nf->smtp_connections) + nf->claim_ahead;
  if (nf_claim_burst_now(nf->claim_again, nf->mails_smtp + nf->mails_ready, depth)) claim(nf);
}

static void on_uv_claim_timer(uv_timer_t *t) { claim(t->data); }

void nf_send_init(notifier *nf) {
  uv_timer_init(nf->loop, &nf->claim_timer);
  nf->claim_timer.data = nf;
  uv_timer_init(nf->loop, &nf->update_retry);
  nf->update_retry.data = nf;
  uv_timer_init(nf->loop, &nf->relay_timer);
  nf->relay_timer.data = nf;
  uv_timer_init(nf->loop, &nf->sent_timer);
  nf->sent_timer.data = nf;
  nf_relay_init(&nf->relay);
  kpi_metrics_set(nf->m.relay_up, 1);
  uv_timer_start(&nf->claim_timer, on_uv_claim_timer, (uint64_t)nf->cfg.poll_ms,
                 (uint64_t)nf->cfg.poll_ms);
}

bool nf_send_idle(const notifier *nf) {
  return !nf->claim_inflight && nf->mails_inflight == 0 && nf->mails_ready == 0;
}

void nf_send_stop(notifier *nf) {
  uv_timer_stop(&nf->claim_timer);
  uv_timer_stop(&nf->relay_timer);
  /* Draining: claimed mails not yet in SMTP go back at once instead of being sent. */
  if (!nf->stopping) ready_release_all(nf, "draining");
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void nf_send_close(notifier *nf) {
  nf_send_stop(nf);
  uv_timer_stop(&nf->update_retry);
  /* SMTP first: cancelled sends give their rows back to the lease. */
  if (nf->smtp) {
    kpi_smtp_close(nf->smtp, NULL, NULL);
    nf->smtp = NULL;
  }
  /* Claimed mails never sent are dropped: their rows are due again when the lease ends. */
  for (nf_mail *m; (m = ready_pop(nf));) mail_free(m);
  /* Each outcome still waiting to be written sees stopping and is dropped. */
  on_uv_update_retry(&nf->update_retry);
  uv_timer_stop(&nf->sent_timer);
  while (nf->sent_head) {
    nf_mail *m = nf->sent_head;
    nf->sent_head = m->next;
    mail_done(m);
  }
  nf->sent_tail = NULL;
  nf->sent_waiting = 0;
  close_handle((uv_handle_t *)&nf->claim_timer);
  close_handle((uv_handle_t *)&nf->update_retry);
  close_handle((uv_handle_t *)&nf->relay_timer);
  close_handle((uv_handle_t *)&nf->sent_timer);
}
