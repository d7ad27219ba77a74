/* nf_send.c: claim due notifications (SKIP LOCKED), send one digest mail per recipient, record the outcome. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_codec.h"
#include "kpi_log.h"
#include "kpi_time.h"
#include "kpi_uuid.h"
#include "notifier.h"

/* Claims the due rows of recipients whose oldest due row has waited group_wait, like
 * Alertmanager's group_wait: up to digest_max due rows of each such recipient, oldest first,
 * join one digest (the rest follow in the next claim, at once). Capping rows per recipient
 * in SQL bounds the mails of a claim by its recipients, so mails in flight never exceed the
 * send capacity that the lease is sized for. The rows are locked with SKIP LOCKED and leased
 * in the same statement by pushing next_attempt_at forward, so other replicas neither wait
 * for nor re-send them; a crashed sender's rows become due again when the lease ends. The
 * window function cannot share a level with FOR UPDATE, hence the separate "ranked" step;
 * "picked" re-checks state and due time on the rows it locks. */
static const char SQL_CLAIM[] =
    "WITH ready AS ("
    "  SELECT recipient FROM notifications"
    "  WHERE state = 'pending' AND next_attempt_at <= now()"
    "  GROUP BY recipient"
    "  HAVING min(created_at) <= now() - $1::bigint * interval '1 millisecond'"
    "  ORDER BY min(created_at) LIMIT $2"
    "), ranked AS ("
    "  SELECT n.id, row_number() OVER (PARTITION BY n.recipient ORDER BY n.created_at, n.id) AS rn"
    "  FROM notifications n JOIN ready r ON r.recipient = n.recipient"
    "  WHERE n.state = 'pending' AND n.next_attempt_at <= now()"
    "), picked AS ("
    "  SELECT n.id FROM notifications n JOIN ranked k ON k.id = n.id"
    "  WHERE k.rn <= $5::int AND n.state = 'pending' AND n.next_attempt_at <= now()"
    "  ORDER BY n.recipient, n.created_at, n.id"
    "  LIMIT $3"
    "  FOR UPDATE OF n SKIP LOCKED"
    ") "
    "UPDATE notifications n SET next_attempt_at = now() + $4::bigint * interval '1 millisecond' "
    "FROM picked WHERE n.id = picked.id "
    "RETURNING n.id, n.recipient, n.payload, n.attempts, "
    "  (extract(epoch FROM n.created_at) * 1000)::bigint AS created_ms";

static const char SQL_SENT[] =
    "UPDATE notifications SET state = 'sent', sent_at = now(), attempts = attempts + 1, "
    "  message_id = $2, smtp_reply = $3, last_error = NULL "
    "WHERE id = ANY($1::bigint[]) AND state = 'pending'";

/* A 4xx reply to the message itself: one more attempt counted, the next one after the
 * backoff, or dead when the attempts are used up or the row has outlived the queue lifetime
 * ($5 ms, KPI_NOTIFY_MAX_AGE). */
static const char SQL_RETRY[] =
    "UPDATE notifications SET attempts = attempts + 1, last_error = $2, "
    "  state = CASE WHEN attempts + 1 >= $3::int "
    "                 OR created_at < now() - $5::bigint * interval '1 millisecond' "
    "               THEN 'dead' ELSE 'pending' END, "
    "  next_attempt_at = now() + $4::bigint * interval '1 millisecond' "
    "WHERE id = ANY($1::bigint[]) AND state = 'pending' "
    "RETURNING id, state, recipient, measure_id, payload, attempts";

/* The relay failed, not the message: the attempt does not count and the rows are due again
 * at once, so they go out as soon as the relay is back (claims stop while it is down). The
 * reason is kept in last_error for the operator. */
static const char SQL_RELAY_DEFER[] =
    "UPDATE notifications SET last_error = $2, next_attempt_at = now() "
    "WHERE id = ANY($1::bigint[]) AND state = 'pending'";

/* Rows older than the queue lifetime ($1 ms) go dead whatever the relay's state, like
 * Postfix's maximal_queue_lifetime, with their last error in the reason. Only rows that are
 * due (not leased to a send in flight, which will record its own outcome) and a bounded batch
 * per run; SKIP LOCKED lets replicas expire side by side. */
static const char SQL_EXPIRE[] =
    "UPDATE notifications n SET state = 'dead', "
    "  last_error = left('queue lifetime exceeded (KPI_NOTIFY_MAX_AGE ' || $2 || ')' "
    "                    || coalesce('; last error: ' || n.last_error, ''), 900) "
    "FROM (SELECT id FROM notifications"
    "      WHERE state = 'pending' AND next_attempt_at <= now()"
    "        AND created_at < now() - $1::bigint * interval '1 millisecond'"
    "      ORDER BY created_at LIMIT 500 FOR UPDATE SKIP LOCKED) x "
    "WHERE n.id = x.id "
    "RETURNING n.id, n.state, n.recipient, n.measure_id, n.payload, n.attempts, "
    "  n.last_error AS reason";

static const char SQL_DEAD[] =
    "UPDATE notifications SET attempts = attempts + 1, last_error = $2, state = 'dead' "
    "WHERE id = ANY($1::bigint[]) AND state = 'pending' "
    "RETURNING id, state, recipient, measure_id, payload, attempts";

/* Gives the lease back when a send was cancelled by shutdown. */
static const char SQL_RELEASE[] =
    "UPDATE notifications SET next_attempt_at = now() "
    "WHERE id = ANY($1::bigint[]) AND state = 'pending'";

/* Queue depth and the age of the oldest queued row: during a relay outage the depth says how
 * much waits and the age how long, against the queue lifetime. */
static const char SQL_DEPTH[] =
    "SELECT count(*) AS depth, "
    "  coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest "
    "FROM notifications WHERE state = 'pending'";

typedef struct {
  int64_t id;
  const char *recipient; /* into the PGresult, valid while it is */
  const char *payload;
  int attempts;
  int64_t created_ms;
} claimed_row;

/* One mail: a digest of the rows of one recipient, from SMTP until its outcome is written. */
typedef struct nf_mail {
  struct nf_mail *next; /* in notifier.retry_head */
  notifier *nf;
  char recipient[KPI_MAIL_ADDR_MAX + 1];
  char message_id[KPI_MAIL_MSGID_MAX];
  char *ids;            /* "{1,2,3}" */
  size_t n_rows;
  int max_attempts;     /* highest attempts count among the rows before this one */
  kpi_smtp_result result;
  const char *forced_error; /* set when the mail could not even be composed */
} nf_mail;

static void record_outcome(nf_mail *mail);
static void claim(notifier *nf);
static void relay_failed(notifier *nf, const char *reason);
static void relay_answered(notifier *nf);

int64_t nf_backoff_ms(int64_t attempts, int64_t base_ms, int64_t max_ms) {
  /* base * 2^(attempts-1), capped, then "equal jitter": half fixed, half random, so retries
   * of many mails spread out while each still waits at least half the nominal delay. */
  if (attempts < 1) attempts = 1;
  int64_t d = base_ms;
  for (int64_t i = 1; i < attempts && d < max_ms; i++) d *= 2;
  if (d > max_ms) d = max_ms;
  int64_t half = d / 2;
  return half + (half > 0 ? (int64_t)(random() % (half + 1)) : 0);
}

static void mail_free(nf_mail *m) {
  free(m->ids);
  free(m);
}

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

/* REASON NULL: each row's own, from the column "reason". */
static void publish_dead(notifier *nf, const PGresult *res, const char *reason) {
  int c_id = PQfnumber(res, "id"), c_state = PQfnumber(res, "state");
  int c_reason = PQfnumber(res, "reason");
  const char *fixed = reason;
  int c_measure = PQfnumber(res, "measure_id");
  int c_payload = PQfnumber(res, "payload"), c_attempts = PQfnumber(res, "attempts");
  for (int i = 0; i < PQntuples(res); i++) {
    if (strcmp(PQgetvalue(res, i, c_state), "dead") != 0) continue;
    kpi_metrics_inc(nf->m.dead);
    const char *measure = PQgetvalue(res, i, c_measure);
    const char *payload = PQgetvalue(res, i, c_payload);
    reason = fixed ? fixed : c_reason >= 0 ? PQgetvalue(res, i, c_reason) : "unknown";
    /* Neither the log nor the dead letter names the recipient: the notification id finds
     * the row, which holds it (nf_dlq_publish also masks addresses quoted in REASON). */
    char why_log[600];
    kpi_mail_redact_addresses(reason, why_log, sizeof(why_log));
    kpi_log(KPI_LOG_ERROR, "notification_dead", "notification %s (%s) gave up after %s attempts: %s",
            PQgetvalue(res, i, c_id), measure, PQgetvalue(res, i, c_attempts), why_log);
    const char *hdrs[] = {"kpi-attempts", PQgetvalue(res, i, c_attempts),
                          "kpi-notification-id", PQgetvalue(res, i, c_id), NULL};
    char why[700];
    snprintf(why, sizeof(why), "smtp: %s", reason);
    /* The row stays in the table as 'dead' with last_error: the database is the record, the
     * dead letter is the signal, so a failed publish is logged and not retried. */
    nf_dlq_publish(nf, measure, strlen(measure), payload, strlen(payload), why, hdrs, NULL, NULL);
  }
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
  if (st == PGRES_TUPLES_OK) {
    const char *reason = m->forced_error ? m->forced_error
                         : m->result.error[0] ? m->result.error
                                              : m->result.reply;
    char buf[600];
    if (!m->forced_error && m->result.reply[0] && m->result.error[0]) {
      snprintf(buf, sizeof(buf), "%s (last reply: %s)", m->result.error, m->result.reply);
      reason = buf;
    }
    publish_dead(nf, res, reason);
  }
  mail_done(m);
}

static void record_outcome(nf_mail *m) {
  notifier *nf = m->nf;
  if (nf->stopping) {
    mail_done(m);
    return;
  }
  char attempts_max[16], delay[24];
  const kpi_smtp_result *r = &m->result;
  char err[600];
  int rc;
  if (m->forced_error) {
    const char *p[] = {m->ids, m->forced_error};
    rc = kpi_pgasync_query(nf->pg, SQL_DEAD, 2, p, on_pg_outcome, m);
  } else if (r->outcome == KPI_SMTP_SENT) {
    const char *p[] = {m->ids, m->message_id, r->reply[0] ? r->reply : "250"};
    rc = kpi_pgasync_query(nf->pg, SQL_SENT, 3, p, on_pg_outcome, m);
  } else if (r->outcome == KPI_SMTP_CANCELLED) {
    const char *p[] = {m->ids};
    rc = kpi_pgasync_query(nf->pg, SQL_RELEASE, 1, p, on_pg_outcome, m);
  } else if (r->outcome == KPI_SMTP_RELAY) {
    if (r->reply[0]) snprintf(err, sizeof(err), "relay: %s (last reply: %s)", r->error, r->reply);
    else snprintf(err, sizeof(err), "relay: %s", r->error[0] ? r->error : "unknown failure");
    const char *p[] = {m->ids, err};
    rc = kpi_pgasync_query(nf->pg, SQL_RELAY_DEFER, 2, p, on_pg_outcome, m);
  } else {
    if (r->reply[0]) snprintf(err, sizeof(err), "%s (last reply: %s)", r->error, r->reply);
    else snprintf(err, sizeof(err), "%s", r->error[0] ? r->error : "unknown failure");
    if (r->outcome == KPI_SMTP_PERMANENT) {
      const char *p[] = {m->ids, err};
      rc = kpi_pgasync_query(nf->pg, SQL_DEAD, 2, p, on_pg_outcome, m);
    } else {
      snprintf(attempts_max, sizeof(attempts_max), "%" PRId64, nf->cfg.max_attempts);
      snprintf(delay, sizeof(delay), "%" PRId64,
               nf_backoff_ms(m->max_attempts + 1, nf->cfg.retry_base_ms, nf->cfg.retry_max_ms));
      char max_age[24];
      snprintf(max_age, sizeof(max_age), "%" PRId64, nf->cfg.max_age_ms);
      const char *p[] = {m->ids, err, attempts_max, delay, max_age};
      rc = kpi_pgasync_query(nf->pg, SQL_RETRY, 5, p, on_pg_outcome, m);
    }
  }
  if (rc != 0) outcome_retry_later(m);
}

static void on_smtp_done(kpi_smtp *smtp, const kpi_smtp_result *r, void *arg) {
  (void)smtp;
  nf_mail *m = arg;
  notifier *nf = m->nf;
  m->result = *r;
  kpi_metrics_observe(nf->m.send_seconds, r->seconds);
  /* A refusal often quotes the mailbox ("550 5.1.1 <a@b>: no such user"); logs name mails
   * by Message-ID, never by address. */
  char said[600], tmp[600];
  snprintf(tmp, sizeof(tmp), "%s%s%s", r->error, r->error[0] ? " " : "", r->reply);
  kpi_mail_redact_addresses(tmp, said, sizeof(said));
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
  record_outcome(m);
}

/* Relay state ----------------------------------------------------------------------------- */

static void on_uv_relay_probe(uv_timer_t *t);

static void relay_schedule_probe(notifier *nf) {
  if (nf->draining || nf->stopping || nf->probe_inflight) return;
  uint64_t d = (uint64_t)nf_backoff_ms(nf->relay_backoff_n, nf->cfg.probe_base_ms,
                                       nf->cfg.probe_max_ms);
  uv_timer_start(&nf->relay_timer, on_uv_relay_probe, d, 0);
}

/* A relay-level failure of a mail (or of the first probe after "up"): the relay goes down
 * once, logged once; mails still in the SMTP client fail on their own and only give their
 * rows back. */
static void relay_failed(notifier *nf, const char *reason) {
  if (!nf->relay_up) return;
  nf->relay_up = false;
  nf->relay_down_since = uv_now(nf->loop);
  nf->relay_backoff_n++;
  kpi_metrics_set(nf->m.relay_up, 0);
  kpi_log(KPI_LOG_WARN, "relay_down",
          "SMTP relay failed (%s); no mail is claimed until it answers a probe; queued mails "
          "keep their attempts",
          reason);
  relay_schedule_probe(nf);
}

static void relay_set_up(notifier *nf, const char *how) {
  if (nf->relay_up) return;
  nf->relay_up = true;
  uv_timer_stop(&nf->relay_timer);
  kpi_metrics_set(nf->m.relay_up, 1);
  kpi_log(KPI_LOG_INFO, "relay_up", "SMTP relay answers again (%s) after %.1f s down; deferred "
          "mails are due now",
          how, (double)(uv_now(nf->loop) - nf->relay_down_since) / 1000.0);
  /* Mails the relay failed were given back due at once: claim them now, back to back. */
  nf->claim_again = true;
  claim(nf);
}

/* The relay answered a command of a mail: the session works, whatever it said of the mail. */
static void relay_answered(notifier *nf) {
  nf->relay_backoff_n = 0;
  if (!nf->relay_up && !nf->stopping) relay_set_up(nf, "a mail transaction");
}

static void on_smtp_probe(kpi_smtp *smtp, const kpi_smtp_result *r, void *arg) {
  (void)smtp;
  notifier *nf = arg;
  nf->probe_inflight = false;
  if (r->outcome == KPI_SMTP_CANCELLED || nf->stopping) return;
  kpi_metrics_inc(nf->m.relay_probes);
  if (r->outcome == KPI_SMTP_SENT) {
    relay_set_up(nf, "probe");
    return;
  }
  char said[600], tmp[600];
  snprintf(tmp, sizeof(tmp), "%s%s%s", r->error, r->error[0] ? " " : "", r->reply);
  kpi_mail_redact_addresses(tmp, said, sizeof(said));
  nf->relay_backoff_n++;
  kpi_log(KPI_LOG_DEBUG, "relay_probe_failed", "%s", said);
  if (!nf->relay_up) relay_schedule_probe(nf);
}

static void on_uv_relay_probe(uv_timer_t *t) {
  notifier *nf = t->data;
  if (nf->relay_up || nf->probe_inflight || nf->draining || nf->stopping || !nf->smtp) return;
  nf->probe_inflight = true;
  int rc = kpi_smtp_probe(nf->smtp, on_smtp_probe, nf);
  if (rc != 0) {
    nf->probe_inflight = false;
    kpi_log(KPI_LOG_WARN, "relay_probe_failed", "cannot start a probe: %s", kpi_smtp_strerror(rc));
    nf->relay_backoff_n++;
    relay_schedule_probe(nf);
  }
}

/* Claims ---------------------------------------------------------------------------------- */

static int cmp_rows(const void *pa, const void *pb) {
  const claimed_row *a = pa, *b = pb;
  int c = strcmp(a->recipient, b->recipient);
  if (c) return c;
  if (a->created_ms != b->created_ms) return a->created_ms < b->created_ms ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

/* Composes and queues one mail for ROWS[0..N) (one recipient). Rows whose payload does not
 * decode (never expected: the consumer checked it) are sent to the dead state alone. */
static void start_mail(notifier *nf, const claimed_row *rows, size_t n) {
  nf_mail *m = calloc(1, sizeof(*m));
  kpi_alert *alerts = calloc(n, sizeof(*alerts));
  const kpi_alert **list = calloc(n, sizeof(*list));
  size_t idlen = 2 + n * 21;
  if (m) m->ids = malloc(idlen);
  if (!m || !alerts || !list || !m->ids) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot compose a mail; its rows wait for the lease");
    if (m) free(m->ids);
    free(m);
    free(alerts);
    free(list);
    return;
  }
  m->nf = nf;
  snprintf(m->recipient, sizeof(m->recipient), "%s", rows[0].recipient);
  size_t pos = 0, good = 0;
  const char *base_url = nf_dashboard_url(nf);
  m->ids[pos++] = '{';
  for (size_t i = 0; i < n; i++) {
    kpi_errors errs = {0};
    if (kpi_alert_decode(rows[i].payload, strlen(rows[i].payload), &alerts[good], &errs) != 0) {
      /* Mark this row dead on its own. */
      nf_mail *bad = calloc(1, sizeof(*bad));
      if (bad && (bad->ids = malloc(24))) {
        bad->nf = nf;
        snprintf(bad->ids, 24, "{%" PRId64 "}", rows[i].id);
        snprintf(bad->recipient, sizeof(bad->recipient), "%s", rows[i].recipient);
        bad->n_rows = 1;
        bad->forced_error = "stored payload is not a valid kpi.alert/1 record";
        nf->mails_inflight++;
        record_outcome(bad);
      } else {
        free(bad);
      }
      continue;
    }
    /* The link comes from our configuration, never from the record (nf_consume.c). */
    free(alerts[good].dashboard_url);
    alerts[good].dashboard_url = base_url ? strdup(base_url) : NULL;
    list[good] = &alerts[good];
    good++;
    if (rows[i].attempts > m->max_attempts) m->max_attempts = rows[i].attempts;
    pos += (size_t)snprintf(m->ids + pos, idlen - pos, "%s%" PRId64, pos > 1 ? "," : "", rows[i].id);
  }
  m->ids[pos++] = '}';
  m->ids[pos] = '\0';
  m->n_rows = good;
  char *msg = NULL;
  size_t len = 0;
  int rc = KPI_MAIL_EINVAL;
  /* The Message-ID is a name-based UUID of the rows the mail carries, so a retry of the same
   * digest (or a re-send after a crash between the 250 and the row update) carries the same
   * id, and receiving systems can recognise the duplicate. */
  static const uint8_t MSGID_NS[16] = {0x2f, 0x0c, 0x61, 0x8e, 0x5b, 0x3d, 0x4a, 0x77,
                                       0x9c, 0x14, 0xd2, 0x6a, 0x80, 0x3b, 0xe1, 0x59};
  char uuid[KPI_UUID_STRLEN + 1];
  kpi_uuid_v5(MSGID_NS, m->ids, strlen(m->ids), uuid);
  if (good > 0 && uuid[0] &&
      kpi_mail_message_id(uuid, nf->cfg.from, m->message_id, sizeof(m->message_id)) == 0) {
    kpi_mail_params p = {.from = nf->cfg.from,
                         .from_name = nf->cfg.from_name,
                         .to = m->recipient,
                         .date_ms = kpi_time_now_ms(),
                         .message_id = m->message_id};
    rc = kpi_mail_compose(&p, list, good, &msg, &len);
  }
  for (size_t i = 0; i < good; i++) kpi_alert_clear(&alerts[i]);
  free(alerts);
  free(list);
  if (good == 0) {
    mail_free(m);
    return;
  }
  nf->mails_inflight++;
  kpi_metrics_set(nf->m.inflight, (double)nf->mails_inflight);
  if (rc == KPI_MAIL_ENOMEM) {
    /* Out of memory is passing: give the rows back (as a cancelled send does) instead of
     * burying them as dead. */
    m->result.outcome = KPI_SMTP_CANCELLED;
    snprintf(m->result.error, sizeof(m->result.error), "cannot compose the mail: out of memory");
    record_outcome(m);
    return;
  }
  if (rc != 0) {
    /* Only an invalid recipient gets here (the consumer validated it, so a row edited by
     * hand): retrying cannot help. */
    m->forced_error = "cannot compose the mail (invalid recipient address)";
    record_outcome(m);
    return;
  }
  rc = kpi_smtp_send(nf->smtp, nf->cfg.from, m->recipient, msg, len, on_smtp_done, m);
  if (rc != 0) {
    m->result.outcome = KPI_SMTP_CANCELLED;
    snprintf(m->result.error, sizeof(m->result.error), "%s", kpi_smtp_strerror(rc));
    record_outcome(m);
  }
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
  if (n == 0) return;
  claimed_row *rows = calloc((size_t)n, sizeof(*rows));
  if (!rows) {
    kpi_log(KPI_LOG_ERROR, "out_of_memory", "cannot hold %d claimed rows", n);
    return;
  }
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
  qsort(rows, (size_t)n, sizeof(*rows), cmp_rows);
  size_t start = 0;
  for (size_t i = 1; i <= (size_t)n; i++) {
    bool boundary = i == (size_t)n || strcmp(rows[i].recipient, rows[start].recipient) != 0 ||
                    i - start >= (size_t)nf->cfg.digest_max;
    if (!boundary) continue;
    start_mail(nf, rows + start, i - start);
    start = i;
  }
  free(rows);
  /* Rows came back: more are probably due, so claim again as soon as there is room instead
   * of waiting for the poll timer. An empty claim ends the burst. */
  nf->claim_again = true;
  kpi_log(KPI_LOG_DEBUG, "claimed", "%d rows", n);
  nf_send_kick(nf);
}

/* Mails allowed in SMTP at once: enough to keep every connection busy while the next claim
 * runs, few enough that the last of them is sent within the lease even when every
 * transaction times out (4 rounds of KPI_SMTP_TIMEOUT_MS; main.c warns when the lease is
 * shorter). */
#define NF_MAILS_PER_CONNECTION 4
static size_t send_capacity(const notifier *nf) {
  return (size_t)nf->smtp_connections * NF_MAILS_PER_CONNECTION;
}

static void claim(notifier *nf) {
  if (nf->claim_inflight || !nf->db_ready || nf->draining || !kpi_pgasync_is_up(nf->pg)) return;
  if (!nf->relay_up) return; /* the probe claims when the relay is back */
  size_t cap = send_capacity(nf);
  if (nf->mails_inflight >= cap) return;
  size_t free_slots = cap - nf->mails_inflight;
  char gw[24], recipients[24], limit[24], lease[24], per_recipient[24];
  snprintf(gw, sizeof(gw), "%" PRId64, nf->cfg.group_wait_ms);
  snprintf(recipients, sizeof(recipients), "%zu", free_slots);
  snprintf(limit, sizeof(limit), "%" PRId64, nf->cfg.claim_rows);
  snprintf(lease, sizeof(lease), "%" PRId64, nf->cfg.lease_ms);
  snprintf(per_recipient, sizeof(per_recipient), "%" PRId64, nf->cfg.digest_max);
  const char *p[] = {gw, recipients, limit, lease, per_recipient};
  /* Flags first: kpi_pgasync may run the callback before kpi_pgasync_query returns when the
   * answer is already there. */
  nf->claim_inflight = true;
  nf->claim_again = false;
  if (kpi_pgasync_query(nf->pg, SQL_CLAIM, 5, p, on_pg_claimed, nf) != 0)
    nf->claim_inflight = false;
}

void nf_send_kick(notifier *nf) {
  /* Claim again at once only when the last claim was full (more rows are due) and at least
   * half the capacity is free; otherwise the poll timer comes back soon enough. */
  if (nf->claim_again && nf->mails_inflight <= send_capacity(nf) / 2) claim(nf);
}

static void on_uv_claim_timer(uv_timer_t *t) { claim(t->data); }

static void on_pg_depth(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  notifier *nf = arg;
  nf->depth_inflight = 0;
  if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
    kpi_metrics_set(nf->m.queue_depth, strtod(PQgetvalue(res, 0, PQfnumber(res, "depth")), NULL));
    kpi_metrics_set(nf->m.queue_oldest,
                    strtod(PQgetvalue(res, 0, PQfnumber(res, "oldest")), NULL));
  }
}

static void on_pg_expired(kpi_pgasync *pg, const PGresult *res, void *arg) {
  (void)pg;
  notifier *nf = arg;
  nf->expire_inflight = false;
  if (nf->stopping) return;
  if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
    kpi_metrics_inc(nf->m.db_errors);
    kpi_log(KPI_LOG_WARN, "expire_failed", "%s",
            res ? PQresultErrorMessage(res) : "connection lost; retried with the next refresh");
    return;
  }
  if (PQntuples(res) == 0) return;
  kpi_metrics_add(nf->m.expired, (double)PQntuples(res));
  publish_dead(nf, res, NULL);
}

/* Expires rows past the queue lifetime; runs with the depth refresh, relay up or down. */
static void expire(notifier *nf) {
  if (nf->expire_inflight || !nf->db_ready || nf->draining || !kpi_pgasync_is_up(nf->pg)) return;
  char age[24];
  snprintf(age, sizeof(age), "%" PRId64, nf->cfg.max_age_ms);
  const char *p[] = {age, nf->cfg.max_age_text};
  nf->expire_inflight = true;
  if (kpi_pgasync_query(nf->pg, SQL_EXPIRE, 2, p, on_pg_expired, nf) != 0)
    nf->expire_inflight = false;
}

void nf_send_refresh_depth(notifier *nf) {
  if (nf->depth_inflight || !nf->db_ready || !kpi_pgasync_is_up(nf->pg)) return;
  nf->depth_inflight = 1;
  if (kpi_pgasync_query(nf->pg, SQL_DEPTH, 0, NULL, on_pg_depth, nf) != 0) nf->depth_inflight = 0;
}

static void on_uv_depth_timer(uv_timer_t *t) {
  expire(t->data);
  nf_send_refresh_depth(t->data);
}

void nf_send_init(notifier *nf) {
  uv_timer_init(nf->loop, &nf->claim_timer);
  nf->claim_timer.data = nf;
  uv_timer_init(nf->loop, &nf->depth_timer);
  nf->depth_timer.data = nf;
  uv_timer_init(nf->loop, &nf->update_retry);
  nf->update_retry.data = nf;
  uv_timer_init(nf->loop, &nf->relay_timer);
  nf->relay_timer.data = nf;
  nf->relay_up = true;
  kpi_metrics_set(nf->m.relay_up, 1);
  uv_timer_start(&nf->claim_timer, on_uv_claim_timer, (uint64_t)nf->cfg.poll_ms,
                 (uint64_t)nf->cfg.poll_ms);
  uv_timer_start(&nf->depth_timer, on_uv_depth_timer, 1000, 5000);
  uv_unref((uv_handle_t *)&nf->depth_timer);
}

bool nf_send_idle(const notifier *nf) { return !nf->claim_inflight && nf->mails_inflight == 0; }

void nf_send_abandon(notifier *nf) {
  nf->stopping = true;
  on_uv_update_retry(&nf->update_retry); /* each outcome sees stopping and is dropped */
}

void nf_send_stop(notifier *nf) {
  uv_timer_stop(&nf->claim_timer);
  uv_timer_stop(&nf->depth_timer);
  uv_timer_stop(&nf->relay_timer);
}
