/* kpi_time.h: calendar dates, RFC 3339 instants and Japanese fiscal years (年度) for the KPI plan. */
#ifndef KPI_TIME_H
#define KPI_TIME_H

#include <stdint.h>
#include <stddef.h>

/* Days since 1970-01-01 in the proleptic Gregorian calendar. A plain integer so that
 * date arithmetic (pace, staleness, report intervals) is subtraction. */
typedef int32_t kpi_day;

/* The plan's calendar is Japan time, UTC+09:00. Japan has had no DST since 1951, so a
 * fixed offset is exact for every date the plan can mention. */
#define KPI_TZ_OFFSET_MIN (9 * 60)

/* Converts a calendar date to a day number. Returns 0 and sets *out, or -1 if (y, m, d) is
 * not a real date or y is outside 1900..9999 (*out is then left untouched). */
int kpi_day_from_ymd(int y, int m, int d, kpi_day *out);

/* Converts a day number back to its calendar date. Defined for every kpi_day; no pointer
 * may be NULL. */
void kpi_day_to_ymd(kpi_day day, int *y, int *m, int *d);

/* The Japanese fiscal year containing DAY: FY N runs 1 April N .. 31 March N+1. */
int kpi_fy_of_day(kpi_day day);

/* First day of fiscal year FY: 1 April FY. */
kpi_day kpi_fy_first_day(int fy);

/* Last day of fiscal year FY: 31 March FY+1. */
kpi_day kpi_fy_last_day(int fy);

/* Parses a fiscal-year label as written in the catalog and in plans:
 *   Western:  "2024", "FY2024", "fy2024", "2024年度"
 *   Reiwa:    "R6", "R06", "r6", "令和6年度", "令和6年", "R元", "令和元年度", "R6年度"
 *   Heisei:   "H30", "平成30年度", "H31" (= FY2019), "平成元年度"
 * Digits may be ASCII or full-width (０-９); era numbers have 1 or 2 digits, Western years
 * exactly 4. Reiwa N = 2018+N, Heisei N = 1988+N for N in 1..31: H31 is accepted because
 * FY2019 began (1 April 2019) while Heisei was still current. Leading and trailing ASCII
 * spaces are ignored; anything else (R0, H32, "FY", "", "R", "2024x", a year outside
 * 1900..2200) is an error. Returns 0 and sets *fy, or -1 leaving *fy untouched. */
int kpi_fy_parse(const char *s, int *fy);

/* Formats FY for people: "令和6年度 (FY2024)", "令和元年度 (FY2019)", "平成30年度 (FY2018)",
 * and "FY1985" before 1989 (Showa labels are never needed by the plan). Writes at most
 * SIZE bytes including the NUL, like snprintf, and returns the length the full text needs;
 * 32 bytes always suffice. */
int kpi_fy_format(int fy, char *buf, size_t size);

/* Parses an observed_at value. Accepted forms:
 *   "YYYY-MM-DD"  a Japan calendar date; its instant is 00:00 JST of that date.
 *   "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)"  RFC 3339; 't', 'z' and a space in
 *                 place of 'T' are accepted, leap second 60 is not, fraction digits
 *                 beyond milliseconds are truncated.
 * A timestamp without an offset is rejected because its instant would be a guess.
 * Sets *unix_ms to the instant (ms since the epoch, UTC) and *day to its calendar date in
 * Japan time (for a date-only input, the date itself). Either pointer may be NULL.
 * Returns 0, or -1 on invalid input with both outputs untouched. */
int kpi_time_parse(const char *s, int64_t *unix_ms, kpi_day *day);

/* Results of kpi_time_parse_input besides 0. */
#define KPI_TIME_EFORM (-1)  /* not a form of date or timestamp that is accepted */
#define KPI_TIME_EDATE (-2)  /* a date's form, but no such day (2024-2-30, R6.13.1) */
#define KPI_TIME_EERA (-3)   /* a day outside its era (令和 before 2019-05-01, 平成 after 2019-04-30) */

/* Parses an observed_at value as people write it (docs/ingest.md "Dates"). First the
 * canonical forms of kpi_time_parse, kept as given; then a Japan calendar date written
 *   Western:  "2024/03/31", "2024/3/31", "2024-3-31", "2024.3.31", "2024年3月31日"
 *   Reiwa:    "R6.3.31", "R6/3/31", "R6-3-31", "令和6年3月31日", "令和元年5月1日", "R元.5.1"
 *   Heisei:   "H31.4.30", "平成31年4月30日", "平成元年1月8日"
 * with ASCII or full-width digits, letters and separators (０-９, Ｒ, ／, －, ．) and leading or trailing
 * ASCII or ideographic spaces. Era years: 令和 N = 2018+N from 2019-05-01 on, 平成 N = 1988+N
 * from 1989-01-08 to 2019-04-30. Such a date is written into CANON (SIZE >= 11) as
 * "YYYY-MM-DD"; a canonical input is copied as it is (SIZE must hold it). The outputs are
 * those of kpi_time_parse; any pointer but S may be NULL. Returns 0, or KPI_TIME_EFORM,
 * KPI_TIME_EDATE or KPI_TIME_EERA with the outputs untouched. */
int kpi_time_parse_input(const char *s, char *canon, size_t size, int64_t *unix_ms, kpi_day *day);

/* A message for a result of kpi_time_parse_input (English, for errors[].message). */
const char *kpi_time_input_strerror(int rc);

/* Formats an instant as RFC 3339 UTC with milliseconds, "2024-05-01T03:04:05.123Z".
 * BUF should hold at least 32 bytes; shorter output is truncated like snprintf. */
void kpi_time_format_utc(int64_t unix_ms, char *buf, size_t size);

/* Formats a day as "YYYY-MM-DD". BUF should hold at least 11 bytes. */
void kpi_day_format(kpi_day day, char *buf, size_t size);

/* The current wall-clock time (CLOCK_REALTIME) in ms since the epoch. */
int64_t kpi_time_now_ms(void);

/* The Japan calendar date of an instant, i.e. the UTC instant shifted by +09:00. */
kpi_day kpi_day_of_ms(int64_t unix_ms);

#endif /* KPI_TIME_H */
