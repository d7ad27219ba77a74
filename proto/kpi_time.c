/* kpi_time.c: calendar arithmetic, RFC 3339 parsing and Japanese fiscal-year labels without libc time zones. */
#include "kpi_time.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define MS_PER_DAY INT64_C(86400000)
#define TZ_OFFSET_MS ((int64_t)KPI_TZ_OFFSET_MIN * 60 * 1000)

#define YEAR_MIN 1900
#define YEAR_MAX 9999
#define FY_MIN 1900
#define FY_MAX 2200

/* Era bases: era year N is Gregorian year base+N. */
#define REIWA_BASE 2018
#define HEISEI_BASE 1988
#define HEISEI_LAST 31 /* FY2019 opened on 1 April 2019, a month before Heisei ended */

/* Howard Hinnant's days_from_civil: shifting the year to start in March puts the leap day
 * last, so the day of the year is a linear formula of the month and no table is needed.
 * 64-bit intermediates keep every int year free of overflow. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;                                  /* [0, 399] */
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1; /* [0, 365] */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;          /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil, same source. */
static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : mdays[m - 1];
}

/* Floor division, so that instants before 1970 land on the day they belong to rather
 * than the next one (C division truncates toward zero). */
static int64_t floor_div(int64_t a, int64_t b, int64_t *rem)
{
    int64_t q = a / b, r = a % b;
    if (r < 0) {
        q--;
        r += b;
    }
    *rem = r;
    return q;
}

int kpi_day_from_ymd(int y, int m, int d, kpi_day *out)
{
    if (y < YEAR_MIN || y > YEAR_MAX || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return -1;
    *out = (kpi_day)days_from_civil(y, m, d);
    return 0;
}

void kpi_day_to_ymd(kpi_day day, int *y, int *m, int *d)
{
    civil_from_days(day, y, m, d);
}

int kpi_fy_of_day(kpi_day day)
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    return m >= 4 ? y : y - 1;
}

kpi_day kpi_fy_first_day(int fy)
{
    return (kpi_day)days_from_civil(fy, 4, 1);
}

kpi_day kpi_fy_last_day(int fy)
{
    return (kpi_day)days_from_civil((int64_t)fy + 1, 3, 31);
}

kpi_day kpi_day_of_ms(int64_t unix_ms)
{
    /* Divide first and add the offset to the remainder, so that no input overflows. */
    int64_t rem;
    int64_t day = floor_div(unix_ms, MS_PER_DAY, &rem);
    if (rem >= MS_PER_DAY - TZ_OFFSET_MS)
        day++;
    return (kpi_day)day;
}

/* ---- fiscal-year labels ---------------------------------------------------------- */

/* Consumes LIT if the text at *p starts with it. */
static int eat(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return 0;
    *p += n;
    return 1;
}

/* Consumes one ASCII or full-width digit (U+FF10..U+FF19, UTF-8 EF BC 90..99) and returns
 * its value, or returns -1 without consuming. Full-width digits are common in Japanese
 * documents typed with an IME, so the catalog's authors will paste them. */
static int eat_digit(const char **p, const char *end)
{
    const unsigned char *s = (const unsigned char *)*p;
    if (s < (const unsigned char *)end && s[0] >= '0' && s[0] <= '9') {
        *p += 1;
        return s[0] - '0';
    }
    if (end - *p >= 3 && s[0] == 0xEF && s[1] == 0xBC && s[2] >= 0x90 && s[2] <= 0x99) {
        *p += 3;
        return s[2] - 0x90;
    }
    return -1;
}

/* Reads between MIN and MAX digits; more digits than MAX is an error rather than a
 * silently shorter number. Returns the value or -1. */
static int eat_number(const char **p, const char *end, int min, int max)
{
    int v = 0, n = 0, dig;
    const char *q = *p;
    while ((dig = eat_digit(&q, end)) >= 0) {
        if (++n > max)
            return -1;
        v = v * 10 + dig;
    }
    if (n < min)
        return -1;
    *p = q;
    return v;
}

int kpi_fy_parse(const char *s, int *fy)
{
    if (s == NULL)
        return -1;
    const char *p = s, *end = s + strlen(s);
    while (p < end && *p == ' ')
        p++;
    while (end > p && end[-1] == ' ')
        end--;

    int base = 0, max_n = 0, year;
    if (eat(&p, end, "令和") || eat(&p, end, "R") || eat(&p, end, "r")) {
        base = REIWA_BASE;
        max_n = FY_MAX - REIWA_BASE; /* the FY range check below is the real limit */
    } else if (eat(&p, end, "平成") || eat(&p, end, "H") || eat(&p, end, "h")) {
        base = HEISEI_BASE;
        max_n = HEISEI_LAST;
    }

    if (base != 0) {
        /* 元 ("first") is how the first year of an era is written. */
        int n = eat(&p, end, "元") ? 1 : eat_number(&p, end, 1, 2);
        if (n < 1 || n > max_n)
            return -1;
        /* 年度 (fiscal year) and 年 (year) both occur after an era year in plans. */
        if (!eat(&p, end, "年度"))
            eat(&p, end, "年");
        year = base + n;
    } else {
        int prefixed = end - p >= 2 && (p[0] == 'F' || p[0] == 'f') && (p[1] == 'Y' || p[1] == 'y');
        if (prefixed)
            p += 2;
        year = eat_number(&p, end, 4, 4);
        if (year < 0)
            return -1;
        if (!prefixed)
            eat(&p, end, "年度");
    }

    if (p != end || year < FY_MIN || year > FY_MAX)
        return -1;
    *fy = year;
    return 0;
}

int kpi_fy_format(int fy, char *buf, size_t size)
{
    const char *era;
    int n;
    if (fy >= REIWA_BASE + 1) {
        era = "令和";
        n = fy - REIWA_BASE;
    } else if (fy >= HEISEI_BASE + 1) {
        era = "平成";
        n = fy - HEISEI_BASE;
    } else {
        return snprintf(buf, size, "FY%d", fy);
    }
    /* FY2019 is written 令和元年度 even though its first month was still Heisei: that is
     * how the government and municipalities label it. */
    if (n == 1)
        return snprintf(buf, size, "%s元年度 (FY%d)", era, fy);
    return snprintf(buf, size, "%s%d年度 (FY%d)", era, n, fy);
}

/* ---- instants --------------------------------------------------------------------- */

/* Reads exactly N ASCII digits. Locale-free on purpose: isdigit() may accept more. */
static int fixed_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int kpi_time_parse(const char *s, int64_t *unix_ms, kpi_day *day)
{
    int y, mo, d, hh, mi, ss;
    kpi_day date;

    /* Each check stops at the first non-matching byte, so the terminating NUL of a
     * truncated input is always caught before reading past it. */
    if (s == NULL || fixed_digits(s, 4, &y) != 0 || s[4] != '-' || fixed_digits(s + 5, 2, &mo) != 0 ||
        s[7] != '-' || fixed_digits(s + 8, 2, &d) != 0 || kpi_day_from_ymd(y, mo, d, &date) != 0)
        return -1;

    const char *p = s + 10;
    if (*p == '\0') {
        /* A bare date is a Japan calendar date; its instant is that day's JST midnight. */
        if (unix_ms)
            *unix_ms = (int64_t)date * MS_PER_DAY - TZ_OFFSET_MS;
        if (day)
            *day = date;
        return 0;
    }

    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (fixed_digits(p, 2, &hh) != 0 || p[2] != ':' || fixed_digits(p + 3, 2, &mi) != 0 || p[5] != ':' ||
        fixed_digits(p + 6, 2, &ss) != 0)
        return -1;
    /* A leap second cannot be represented in Unix time; rejecting it is simpler and
     * no sensor in the plan reports one. */
    if (hh > 23 || mi > 59 || ss > 59)
        return -1;
    p += 8;

    int frac_ms = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            frac_ms *= 10;
    }

    int offset_min;
    if (*p == 'Z' || *p == 'z') {
        offset_min = 0;
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (fixed_digits(p + 1, 2, &oh) != 0 || p[3] != ':' || fixed_digits(p + 4, 2, &om) != 0 || oh > 23 ||
            om > 59)
            return -1;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        /* No offset: a local time of unknown zone is not an instant. */
        return -1;
    }
    if (*p != '\0')
        return -1;

    /* Local wall time minus the offset is UTC. The year range keeps this far from overflow. */
    int64_t secs = (int64_t)date * 86400 + hh * 3600 + mi * 60 + ss - (int64_t)offset_min * 60;
    int64_t ms = secs * 1000 + frac_ms;
    if (unix_ms)
        *unix_ms = ms;
    if (day)
        *day = kpi_day_of_ms(ms);
    return 0;
}

void kpi_time_format_utc(int64_t unix_ms, char *buf, size_t size)
{
    int64_t rem;
    int64_t days = floor_div(unix_ms, MS_PER_DAY, &rem);
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    int ms = (int)(rem % 1000);
    int secs = (int)(rem / 1000);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, m, d, secs / 3600, secs / 60 % 60, secs % 60,
             ms);
}

void kpi_day_format(kpi_day day, char *buf, size_t size)
{
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    snprintf(buf, size, "%04d-%02d-%02d", y, m, d);
}

int64_t kpi_time_now_ms(void)
{
    /* C11 timespec_get(TIME_UTC) reads CLOCK_REALTIME on glibc and needs no POSIX
     * feature macro. */
    struct timespec ts;
    if (timespec_get(&ts, TIME_UTC) != TIME_UTC)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- dates as people write them ------------------------------------------------------ */

/* The first day of 令和 and the first day of 平成 (the last of 平成 is the day before 令和). */
#define REIWA_FIRST_Y 2019
#define REIWA_FIRST_M 5
#define HEISEI_FIRST_Y 1989
#define HEISEI_FIRST_D 8 /* 1989-01-08 */
#define WRITTEN_MAX 64   /* longer input is no date anyone writes */

/* Copies S into OUT (SIZE bytes) with the full-width forms an IME produces folded to ASCII:
 * U+FF01..U+FF5E (UTF-8 EF BC 81..BF, EF BD 80..9E: ０-９, ／, －, ．, Ｒ, Ｈ…) and the
 * ideographic space (E3 80 80) to ' '. Other bytes (the era and 年月日 kanji) are kept.
 * Returns the length, or -1 when S does not fit. */
static int fold_width(const char *s, char *out, size_t size)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        char c;
        if (p[0] == 0xEF && p[1] == 0xBC && p[2] >= 0x81 && p[2] <= 0xBF) {
            c = (char)(0x21 + (p[2] - 0x81));
            p += 3;
        } else if (p[0] == 0xEF && p[1] == 0xBD && p[2] >= 0x80 && p[2] <= 0x9E) {
            c = (char)(0x60 + (p[2] - 0x80));
            p += 3;
        } else if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) {
            c = ' ';
            p += 3;
        } else {
            c = (char)*p++;
        }
        if (n + 1 >= size)
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return (int)n;
}

/* Reads the month and day after the year: "M月D日" when KANJI, else "M<sep>D" with the
 * separator SEP the year was followed by. Returns 0, or -1 when the rest is not that form. */
static int written_month_day(const char **p, const char *end, int kanji, char sep, int *m, int *d)
{
    *m = eat_number(p, end, 1, 2);
    if (*m < 0)
        return -1;
    if (kanji ? !eat(p, end, "月") : (*p >= end || **p != sep))
        return -1;
    if (!kanji)
        (*p)++;
    *d = eat_number(p, end, 1, 2);
    if (*d < 0 || (kanji && !eat(p, end, "日")))
        return -1;
    return *p == end ? 0 : -1;
}

/* The year and what follows it: an era name and year (元 or 1-2 digits), or 4 Western digits;
 * then 年 or one of . / -. Sets *BASE to the era's base year (0 for Western). */
static int written_year(const char **p, const char *end, int *base, int *y, int *kanji, char *sep)
{
    *base = 0;
    if (eat(p, end, "令和") || eat(p, end, "R") || eat(p, end, "r"))
        *base = REIWA_BASE;
    else if (eat(p, end, "平成") || eat(p, end, "H") || eat(p, end, "h"))
        *base = HEISEI_BASE;
    if (*base)
        *y = eat(p, end, "元") ? 1 : eat_number(p, end, 1, 2);
    else
        *y = eat_number(p, end, 4, 4);
    if (*y < 0)
        return -1;
    *kanji = eat(p, end, "年");
    if (!*kanji) {
        if (*p >= end || (**p != '.' && **p != '/' && **p != '-'))
            return -1;
        *sep = *(*p)++;
    }
    return 0;
}

/* Parses a written date (kpi_time_parse_input) into *OUT. */
static int written_date(const char *s, kpi_day *out)
{
    char buf[WRITTEN_MAX];
    int n = fold_width(s, buf, sizeof(buf));
    if (n < 0)
        return KPI_TIME_EFORM;
    const char *p = buf, *end = buf + n;
    while (p < end && *p == ' ')
        p++;
    while (end > p && end[-1] == ' ')
        end--;

    int base, y, m, d, kanji;
    char sep = 0;
    if (written_year(&p, end, &base, &y, &kanji, &sep) != 0 ||
        written_month_day(&p, end, kanji, sep, &m, &d) != 0)
        return KPI_TIME_EFORM;
    if (base && y == 0)
        return KPI_TIME_EERA;
    kpi_day day;
    if (kpi_day_from_ymd(base + y, m, d, &day) != 0)
        return KPI_TIME_EDATE;
    /* An era year names a day only while the era lasted: 令和元年4月30日 was 平成31年. */
    kpi_day reiwa_first = (kpi_day)days_from_civil(REIWA_FIRST_Y, REIWA_FIRST_M, 1);
    if (base == REIWA_BASE && day < reiwa_first)
        return KPI_TIME_EERA;
    if (base == HEISEI_BASE &&
        (day >= reiwa_first || day < (kpi_day)days_from_civil(HEISEI_FIRST_Y, 1, HEISEI_FIRST_D)))
        return KPI_TIME_EERA;
    *out = day;
    return 0;
}

int kpi_time_parse_input(const char *s, char *canon, size_t size, int64_t *unix_ms, kpi_day *day)
{
    if (s == NULL)
        return KPI_TIME_EFORM;
    int64_t ms;
    kpi_day date;
    if (kpi_time_parse(s, &ms, &date) == 0) {
        if (canon && strlen(s) >= size)
            return KPI_TIME_EFORM;
        if (canon)
            memcpy(canon, s, strlen(s) + 1);
    } else {
        int rc = written_date(s, &date);
        if (rc != 0)
            return rc;
        if (canon && size < 11)
            return KPI_TIME_EFORM;
        if (canon)
            kpi_day_format(date, canon, size);
        ms = (int64_t)date * MS_PER_DAY - TZ_OFFSET_MS;
    }
    if (unix_ms)
        *unix_ms = ms;
    if (day)
        *day = date;
    return 0;
}

const char *kpi_time_input_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case KPI_TIME_EDATE:
        return "no such day: the month must be 1-12 and the day within the month";
    case KPI_TIME_EERA:
        return "not a day of that era: 令和 began on 2019-05-01 (令和元年5月1日), 平成 ran from "
               "1989-01-08 to 2019-04-30";
    default:
        return "must be a date (2024-03-31, 2024/3/31, R6.3.31, 令和6年3月31日) or an RFC 3339 "
               "timestamp with offset";
    }
}
