/* kpi_mail.h: composition of the notifier's mails (RFC 5322 + MIME), pure: no I/O, no clock. */
#ifndef KPI_MAIL_H
#define KPI_MAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kpi_codec.h"

/* Error codes (negative), see kpi_mail_strerror. */
#define KPI_MAIL_EINVAL (-40001) /* a bad address, no alert, a bad message id */
#define KPI_MAIL_ENOMEM (-40002)

/* The longest address accepted (RFC 5321 §4.5.3.1.3 path limit minus the brackets). */
#define KPI_MAIL_ADDR_MAX 254

/* An encoded-word never exceeds 75 characters (RFC 2047 §2); ours carry at most this many
 * bytes of UTF-8 text so that "Subject: " plus the first word still fits a 78-column line. */
#define KPI_MAIL_WORD_BYTES 39

/* Returns true when ADDR is a plain addr-spec we are willing to put in a header and on the
 * SMTP envelope: exactly one '@' with a non-empty local part and domain, printable ASCII
 * only, and none of CR, LF, space, tab, '<', '>', ',', ';', '"', '(', ')', '\\'. Such an
 * address can never end a header line or smuggle a second recipient. NULL is invalid. */
bool kpi_mail_address_valid(const char *addr);

/* Appends to OUT (capacity OUT_SIZE, NUL-terminated) the RFC 2047 form of the UTF-8 text
 * TEXT: a sequence of "=?UTF-8?B?...?=" words separated by "\r\n " (folding), each word
 * carrying at most KPI_MAIL_WORD_BYTES bytes and never splitting a UTF-8 character. Control
 * characters (CR, LF, TAB, other C0, DEL) and invalid UTF-8 bytes become spaces first, so a
 * decoded header still holds one line. Returns the length written, or KPI_MAIL_ENOMEM when
 * OUT is too small (OUT is then the empty string). An empty TEXT writes nothing. */
int kpi_mail_encode_words(const char *text, char *out, size_t out_size);

/* What a mail needs besides its alerts. Every string is borrowed. */
typedef struct kpi_mail_params {
  const char *from;       /* envelope and header sender, checked with kpi_mail_address_valid */
  const char *from_name;  /* display name (UTF-8, encoded), NULL for none */
  const char *to;         /* the one recipient, checked likewise */
  int64_t date_ms;        /* the Date header's instant (ms since the epoch) */
  const char *message_id; /* "<local@domain>" as from kpi_mail_message_id */
} kpi_mail_params;

/* Writes "<UUID@DOMAIN>" into OUT (at least KPI_MAIL_MSGID_MAX bytes), DOMAIN being the part
 * of FROM after '@' (FROM must be valid). Returns 0 or KPI_MAIL_EINVAL. */
#define KPI_MAIL_MSGID_MAX (KPI_UUID_STRLEN + KPI_MAIL_ADDR_MAX + 4)
int kpi_mail_message_id(const char *uuid, const char *from, char *out, size_t out_size);

/* Formats MS as an RFC 5322 date in Japan time, "Tue, 01 Oct 2024 09:00:00 +0900". OUT needs
 * 32 bytes. */
void kpi_mail_date(int64_t ms, char *out, size_t out_size);

/* A mail has one entry per measure: alerts for the same measure_id (several may fall in one
 * group wait, e.g. stale then failed, or failed then resolved a second later) are one entry,
 * shown by the latest of them in the order raised (episode, then created_at, then the order
 * given), with the one before it as "previously" (前回) and the change line running through
 * all of them (docs/notifier.md "Grouping"). Every alert still belongs to the mail.
 *
 * The UTF-8 subject (before encoding) of a mail about the N alerts in ALERTS: one entry gives
 * "【KPI 遅れ / lagging】<measure name>", several give a digest subject naming their count.
 * Returns a malloc'd string (caller frees) or NULL when out of memory or N is 0. */
char *kpi_mail_subject(const kpi_alert *const *alerts, size_t n);

/* The UTF-8 text body, Japanese first, English after: for every entry the plan, measure and
 * indicator, its state (one wording per state, kpi_mail_status_ja/_en) and the previous one
 * when several alerts were merged, what changed since the last notice, baseline and target
 * with their fiscal years in 令和 and Western notation, the deadline, the current value with
 * its unit, its observation date and the evaluation date, progress and expected pace in
 * percent ("—" where there is no value), and the dashboard address. Lines end in "\n".
 * Returns a malloc'd string (caller frees) or NULL when out of memory or N is 0. */
char *kpi_mail_body_text(const kpi_alert *const *alerts, size_t n);

/* The whole message (headers, blank line, base64 body, CRLF line endings), ready for SMTP
 * DATA: From, To, Subject (encoded words), Date, Message-ID, MIME-Version, Content-Type
 * text/plain; charset=UTF-8, Content-Transfer-Encoding: base64, Auto-Submitted:
 * auto-generated, X-Auto-Response-Suppress. No byte of alert data reaches a header except
 * inside base64 encoded-words, and addresses are validated first. Returns 0 and sets *OUT (a
 * malloc'd NUL-terminated string the caller frees) and *OUT_LEN, or KPI_MAIL_EINVAL /
 * KPI_MAIL_ENOMEM with *OUT NULL. */
int kpi_mail_compose(const kpi_mail_params *p, const kpi_alert *const *alerts, size_t n,
                     char **out, size_t *out_len);

/* The one Japanese and English wording of a state, used wherever a mail names one: the
 * statuses no_data, on_track, lagging, achieved, failed ("failed" -> "未達成", "not
 * achieved"), the flag "stale" ("報告遅延", "report overdue") and "resolved" ("回復").
 * Unknown states get the state itself for both. Never NULL. */
const char *kpi_mail_status_ja(const char *status);
const char *kpi_mail_status_en(const char *status);

/* Copies the LEN bytes at TEXT (any bytes, NUL included) into OUT as one line of printable,
 * valid UTF-8 for a log or a database text column: each invalid UTF-8 byte becomes U+FFFD,
 * control characters (C0, DEL, C1, U+2028/2029) become spaces. The copy is cut on a character
 * boundary so that it fits OUT_SIZE bytes with its NUL (OUT_SIZE must be at least 1). Returns
 * the length written. Server replies are data: PostgreSQL refuses invalid UTF-8 in text, and
 * an outcome that cannot be written would keep its mail's send slot forever. */
size_t kpi_mail_text_clean(const char *text, size_t len, char *out, size_t out_size);

/* Copies the NUL-terminated TEXT into OUT (OUT_SIZE >= 1, cut on a character boundary),
 * replacing every word that contains '@' (a run of characters other than whitespace and
 * <>()[],;:"') by "[address]", so that an SMTP reply such as "550 5.1.1 <a@b.example>: no such
 * user" can go to a dead-letter header or a log without the recipient's address. Returns the
 * length written. */
size_t kpi_mail_redact_addresses(const char *text, char *out, size_t out_size);

const char *kpi_mail_strerror(int err);

#endif
