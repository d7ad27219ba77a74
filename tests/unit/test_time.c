/* test_time.c: unit tests for kpi_time — calendar math, fiscal-year labels, RFC 3339 parsing and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kpi_time.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Day number of a date the test knows to be valid. */
static kpi_day ymd(int y, int m, int d)
{
    kpi_day day = 0;
    assert_int_equal(kpi_day_from_ymd(y, m, d, &day), 0);
    return day;
}

/* Parses from an exact-size heap copy so that AddressSanitizer reports any read past the
 * terminating NUL, which a string literal inside a larger section would hide. */
static int parse_exact(const char *s, size_t n, int64_t *ms, kpi_day *day)
{
    char *copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    copy[n] = '\0';
    int rc = kpi_time_parse(copy, ms, day);
    free(copy);
    return rc;
}

/* ---- calendar ---------------------------------------------------------------------- */

static void test_day_anchors(void **state)
{
    (void)state;
    static const struct {
        int y, m, d;
        kpi_day day;
    } cases[] = {
        {1970, 1, 1, 0},         {1969, 12, 31, -1},     {2000, 2, 29, 11016},
        {2024, 4, 1, 19814},     {1900, 1, 1, -25567},   {9999, 12, 31, 2932896},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        kpi_day day = 12345;
        assert_int_equal(kpi_day_from_ymd(cases[i].y, cases[i].m, cases[i].d, &day), 0);
        assert_int_equal(day, cases[i].day);
        int y, m, d;
        kpi_day_to_ymd(cases[i].day, &y, &m, &d);
        assert_int_equal(y, cases[i].y);
        assert_int_equal(m, cases[i].m);
        assert_int_equal(d, cases[i].d);
    }
}

static void test_day_invalid(void **state)
{
    (void)state;
    static const int cases[][3] = {
        {2023, 2, 29}, {1900, 2, 29}, {2100, 2, 29}, {2024, 2, 30}, {2024, 4, 31}, {2024, 13, 1},
        {2024, 0, 1},  {2024, 1, 0},  {2024, 1, 32}, {1899, 12, 31}, {10000, 1, 1}, {2024, -1, 1},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        kpi_day day = 777;
        assert_int_equal(kpi_day_from_ymd(cases[i][0], cases[i][1], cases[i][2], &day), -1);
        assert_int_equal(day, 777);
    }
}

static void test_leap_years(void **state)
{
    (void)state;
    kpi_day day;
    assert_int_equal(kpi_day_from_ymd(2024, 2, 29, &day), 0);
    assert_int_equal(kpi_day_from_ymd(2000, 2, 29, &day), 0);
    assert_int_equal(kpi_day_from_ymd(2023, 2, 29, &day), -1);
    assert_int_equal(kpi_day_from_ymd(1900, 2, 29, &day), -1);
    assert_int_equal(ymd(2024, 3, 1) - ymd(2024, 2, 28), 2);
    assert_int_equal(ymd(2023, 3, 1) - ymd(2023, 2, 28), 1);
}

/* Walks every day from 1900-01-01 to 9999-12-31 with a naive calendar counter and checks
 * both directions of the conversion against it. */
static void test_ymd_round_trip(void **state)
{
    (void)state;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = 1900, m = 1, d = 1;
    for (kpi_day day = ymd(1900, 1, 1); day <= ymd(9999, 12, 31); day++) {
        int gy, gm, gd;
        kpi_day_to_ymd(day, &gy, &gm, &gd);
        if (gy != y || gm != m || gd != d)
            fail_msg("day %d: got %04d-%02d-%02d, want %04d-%02d-%02d", (int)day, gy, gm, gd, y, m, d);
        kpi_day back;
        if (kpi_day_from_ymd(y, m, d, &back) != 0 || back != day)
            fail_msg("%04d-%02d-%02d does not map back to day %d", y, m, d, (int)day);
        int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        int len = m == 2 && leap ? 29 : mdays[m - 1];
        if (++d > len) {
            d = 1;
            if (++m > 12) {
                m = 1;
                y++;
            }
        }
    }
}

/* ---- fiscal years ------------------------------------------------------------------ */

static void test_fy_of_day(void **state)
{
    (void)state;
    assert_int_equal(kpi_fy_of_day(ymd(2024, 3, 31)), 2023);
    assert_int_equal(kpi_fy_of_day(ymd(2024, 4, 1)), 2024);
    assert_int_equal(kpi_fy_of_day(ymd(2024, 12, 31)), 2024);
    assert_int_equal(kpi_fy_of_day(ymd(2025, 1, 1)), 2024);
    assert_int_equal(kpi_fy_of_day(ymd(1970, 1, 1)), 1969);
    assert_int_equal(kpi_fy_first_day(2024), ymd(2024, 4, 1));
    assert_int_equal(kpi_fy_last_day(2024), ymd(2025, 3, 31));
    assert_int_equal(kpi_fy_last_day(2023) + 1, kpi_fy_first_day(2024));
    for (int fy = 1900; fy <= 2200; fy++) {
        assert_int_equal(kpi_fy_of_day(kpi_fy_first_day(fy)), fy);
        assert_int_equal(kpi_fy_of_day(kpi_fy_last_day(fy)), fy);
        assert_int_equal(kpi_fy_of_day(kpi_fy_first_day(fy) - 1), fy - 1);
    }
}

/* The FY boundary is Japan midnight, which is 15:00 UTC the day before. */
static void test_fy_boundary_rfc3339(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int fy;
    } cases[] = {
        {"2024-03-31T15:00:00Z", 2024},      {"2024-03-31T14:59:59Z", 2023},
        {"2024-03-31T14:59:59.999Z", 2023},  {"2024-04-01T00:00:00+09:00", 2024},
        {"2024-03-31T23:59:59+09:00", 2023}, {"2024-03-31T10:00:00-05:00", 2024},
        {"2024-04-01", 2024},                {"2024-03-31", 2023},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        kpi_day day;
        assert_int_equal(kpi_time_parse(cases[i].s, NULL, &day), 0);
        if (kpi_fy_of_day(day) != cases[i].fy)
            fail_msg("%s: FY%d, want FY%d", cases[i].s, kpi_fy_of_day(day), cases[i].fy);
    }
}

static void test_fy_parse_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int fy;
    } cases[] = {
        {"2024", 2024},
        {"FY2024", 2024},
        {"fy2024", 2024},
        {"Fy2024", 2024},
        {"2024年度", 2024},
        {"R6", 2024},
        {"R06", 2024},
        {"r6", 2024},
        {"R6年度", 2024},
        {"R6年", 2024},
        {"令和6年度", 2024},
        {"令和6年", 2024},
        {"令和6", 2024},
        {"令和06年度", 2024},
        {"R1", 2019},
        {"R01", 2019},
        {"R元", 2019},
        {"R元年度", 2019},
        {"令和元年度", 2019},
        {"令和元年", 2019},
        {"H30", 2018},
        {"h30", 2018},
        {"平成30年度", 2018},
        {"H30年度", 2018},
        {"H31", 2019},
        {"平成31年度", 2019},
        {"H1", 1989},
        {"平成元年度", 1989},
        {"R99", 2117},
        {"令和６年度", 2024},           /* full-width digit */
        {"R０６", 2024},
        {"平成３０年度", 2018},
        {"２０２４", 2024},
        {"FY２０２４", 2024},
        {"  R6  ", 2024},
        {" 2024", 2024},
        {"令和6年度   ", 2024},
        {"1900", 1900},
        {"2200", 2200},
        {"FY1900", 1900},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int fy = -7;
        if (kpi_fy_parse(cases[i].s, &fy) != 0)
            fail_msg("\"%s\" rejected", cases[i].s);
        if (fy != cases[i].fy)
            fail_msg("\"%s\": %d, want %d", cases[i].s, fy, cases[i].fy);
    }
}

static void test_fy_parse_invalid(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",         "   ",       "R",          "H",         "FY",       "fy",        "R0",
        "R00",      "H0",        "H32",        "H99",       "平成32年度", "令和0年度", "令和",
        "令和年度", "R元元",     "R元6",       "R123",      "R 6",      "R-1",       "R+6",
        "R6x",      "R6年度年",  "R6年年度",   "2024x",     "x2024",    "FY2024年度", "FY 2024",
        "20245",    "202",       "24",         "1899",      "2201",     "FY1899",    "FY2201",
        "2024 年度", "\t2024",   "2024\n",     "Ｒ6",       "S60",      "昭和60年度", "FYR6",
        "FY-2024",  "+2024",     "2024.0",     "2024年度度",
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int fy = -7;
        if (kpi_fy_parse(cases[i], &fy) != -1)
            fail_msg("\"%s\" accepted as %d", cases[i], fy);
        assert_int_equal(fy, -7);
    }
    int fy = -7;
    assert_int_equal(kpi_fy_parse(NULL, &fy), -1);
}

/* A truncated UTF-8 era name or full-width digit must be rejected, not read past. */
static void test_fy_parse_truncated(void **state)
{
    (void)state;
    static const char *const valid[] = {"令和６年度", "平成元年度", "FY2024", "R元年度"};
    for (size_t i = 0; i < ARRAY_LEN(valid); i++) {
        size_t n = strlen(valid[i]);
        for (size_t k = 0; k < n; k++) {
            char *copy = malloc(k + 1);
            assert_non_null(copy);
            memcpy(copy, valid[i], k);
            copy[k] = '\0';
            int fy = -7;
            int rc = kpi_fy_parse(copy, &fy);
            /* Cutting right after a complete era number ("令和６", "R元") or before an
             * optional suffix leaves a valid label of the same year (the era numbers
             * here are single characters, so no prefix names another year); every
             * other prefix must fail. */
            if (rc == 0 && fy != (i == 1 ? 1989 : i == 3 ? 2019 : 2024))
                fail_msg("prefix %zu of \"%s\" parsed as %d", k, valid[i], fy);
            free(copy);
        }
    }
    int fy;
    assert_int_equal(kpi_fy_parse("令", &fy), -1);
    assert_int_equal(kpi_fy_parse("R\xEF\xBC", &fy), -1);
    assert_int_equal(kpi_fy_parse("R6\xE5\xB9", &fy), -1);
    assert_int_equal(kpi_fy_parse("R6年\xE5", &fy), -1);
}

static void test_fy_format(void **state)
{
    (void)state;
    static const struct {
        int fy;
        const char *want;
    } cases[] = {
        {2024, "令和6年度 (FY2024)"}, {2019, "令和元年度 (FY2019)"}, {2020, "令和2年度 (FY2020)"},
        {2018, "平成30年度 (FY2018)"}, {1989, "平成元年度 (FY1989)"}, {1988, "FY1988"},
        {1985, "FY1985"},             {2117, "令和99年度 (FY2117)"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char buf[64];
        int n = kpi_fy_format(cases[i].fy, buf, sizeof buf);
        assert_string_equal(buf, cases[i].want);
        assert_int_equal(n, (int)strlen(cases[i].want));
    }
    /* snprintf contract: truncated output, full length returned. */
    char small[8];
    int n = kpi_fy_format(2024, small, sizeof small);
    assert_int_equal(n, (int)strlen("令和6年度 (FY2024)"));
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(kpi_fy_format(2024, NULL, 0), n);
}

/* ---- instants ---------------------------------------------------------------------- */

static void test_time_parse_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ms;
        const char *day;
    } cases[] = {
        {"2024-04-01", INT64_C(1711897200000), "2024-04-01"}, /* JST midnight */
        {"1970-01-01", INT64_C(-32400000), "1970-01-01"},
        {"2024-02-29", INT64_C(1709132400000), "2024-02-29"},
        {"2024-03-31T15:00:00Z", INT64_C(1711897200000), "2024-04-01"},
        {"2024-03-31T14:59:59Z", INT64_C(1711897199000), "2024-03-31"},
        {"2024-05-01T03:04:05.123Z", INT64_C(1714532645123), "2024-05-01"},
        {"2024-05-01T12:04:05.123+09:00", INT64_C(1714532645123), "2024-05-01"},
        {"2024-04-30T21:34:05.123-05:30", INT64_C(1714532645123), "2024-05-01"},
        {"2024-05-01t03:04:05.123z", INT64_C(1714532645123), "2024-05-01"},
        {"2024-05-01 03:04:05.123Z", INT64_C(1714532645123), "2024-05-01"},
        {"2024-05-01T03:04:05.1Z", INT64_C(1714532645100), "2024-05-01"},
        {"2024-05-01T03:04:05.12Z", INT64_C(1714532645120), "2024-05-01"},
        {"2024-05-01T03:04:05.123999999Z", INT64_C(1714532645123), "2024-05-01"}, /* truncated */
        {"2024-05-01T03:04:05+00:00", INT64_C(1714532645000), "2024-05-01"},
        {"2024-05-01T03:04:05-00:00", INT64_C(1714532645000), "2024-05-01"},
        {"2024-04-30T15:00:00Z", INT64_C(1714489200000), "2024-05-01"},
        {"1970-01-01T00:00:00Z", INT64_C(0), "1970-01-01"},
        {"1969-12-31T23:59:59.999Z", INT64_C(-1), "1970-01-01"},
        {"1969-12-31T14:59:59.999Z", INT64_C(-32400001), "1969-12-31"},
        {"1900-01-01T00:00:00+09:00", INT64_C(-2209021200000), "1900-01-01"},
        {"9999-12-31T23:59:59Z", INT64_C(253402300799000), "10000-01-01"},
        {"2019-04-30T23:59:59+09:00", INT64_C(1556636399000), "2019-04-30"},
        {"2024-01-01T00:00:00+23:59", INT64_C(1704067200000) - INT64_C(86340000), "2023-12-31"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int64_t ms = 0;
        kpi_day day = 0;
        if (parse_exact(cases[i].s, strlen(cases[i].s), &ms, &day) != 0)
            fail_msg("\"%s\" rejected", cases[i].s);
        if (ms != cases[i].ms)
            fail_msg("\"%s\": %lld ms, want %lld", cases[i].s, (long long)ms, (long long)cases[i].ms);
        char buf[16];
        kpi_day_format(day, buf, sizeof buf);
        if (strcmp(buf, cases[i].day) != 0)
            fail_msg("\"%s\": day %s, want %s", cases[i].s, buf, cases[i].day);
        /* Either output may be NULL. */
        assert_int_equal(kpi_time_parse(cases[i].s, NULL, NULL), 0);
    }
}

static void test_time_parse_invalid(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        " ",
        "2024",
        "2024-04",
        "2024-04-1",
        "2024-4-01",
        "24-04-01",
        "2024/04/01",
        "2024-13-01",
        "2024-00-10",
        "2024-02-30",
        "2023-02-29",
        "1899-12-31",
        "10000-01-01",
        "-2024-01-01",
        " 2024-04-01",
        "2024-04-01 ",
        "2024-04-01T",
        "2024-04-01x",
        "２０２４-04-01",
        "2024-04-01T00:00:00",          /* no offset */
        "2024-04-01T00:00:00.123",      /* no offset */
        "2024-04-01 00:00:00",          /* no offset */
        "2024-04-01T00:00Z",            /* no seconds */
        "2024-04-01T0:00:00Z",
        "2024-04-01T24:00:00Z",
        "2024-04-01T23:60:00Z",
        "2024-04-01T23:59:60Z",         /* leap second */
        "2024-04-01T00:00:00.Z",
        "2024-04-01T00:00:00,5Z",
        "2024-04-01T00:00:00ZZ",
        "2024-04-01T00:00:00Zx",
        "2024-04-01T00:00:00Z ",
        "2024-04-01T00:00:00 Z",
        "2024-04-01T00:00:00+0900",
        "2024-04-01T00:00:00+09",
        "2024-04-01T00:00:00+9:00",
        "2024-04-01T00:00:00+24:00",
        "2024-04-01T00:00:00+09:60",
        "2024-04-01T00:00:00+09:00:00",
        "2024-04-01T00:00:00+09:00Z",
        "2024-04-01T00:00:00UTC",
        "2024-04-01X00:00:00Z",
        "2024-04-01TT00:00:00Z",
        "2024-02-30T00:00:00Z",
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int64_t ms = 42;
        kpi_day day = 42;
        if (parse_exact(cases[i], strlen(cases[i]), &ms, &day) != -1)
            fail_msg("\"%s\" accepted", cases[i]);
        assert_int_equal(ms, 42);
        assert_int_equal(day, 42);
    }
    assert_int_equal(kpi_time_parse(NULL, NULL, NULL), -1);
}

/* Every proper prefix of a timestamp must be rejected, except the bare date, which is
 * itself a valid observed_at. */
static void test_time_parse_truncated(void **state)
{
    (void)state;
    static const char *const valid[] = {
        "2024-05-01T12:04:05.123+09:00",
        "2024-04-30T21:34:05.123456-05:30",
        "2024-05-01T03:04:05Z",
        "2024-05-01 03:04:05.9z",
    };
    for (size_t i = 0; i < ARRAY_LEN(valid); i++) {
        size_t n = strlen(valid[i]);
        assert_int_equal(parse_exact(valid[i], n, NULL, NULL), 0);
        for (size_t k = 0; k < n; k++) {
            int want = k == 10 ? 0 : -1;
            if (parse_exact(valid[i], k, NULL, NULL) != want)
                fail_msg("prefix %zu of \"%s\": want %d", k, valid[i], want);
        }
    }
}

/* ---- dates as people write them (kpi_time_parse_input, docs/ingest.md "Dates") ---------- */

/* Every accepted form and the canonical text the record carries. */
static const struct {
    const char *in;
    const char *canon;
} written_ok[] = {
    {"2024-03-31", "2024-03-31"},
    {"2024-03-31T10:00:00+09:00", "2024-03-31T10:00:00+09:00"}, /* RFC 3339: kept as given */
    {"2024-03-30T15:00:00Z", "2024-03-30T15:00:00Z"},
    {"2024/03/31", "2024-03-31"},
    {"2024/3/31", "2024-03-31"},
    {"2024-3-31", "2024-03-31"},
    {"2024-3-1", "2024-03-01"},
    {"2024.3.31", "2024-03-31"},
    {"2024年3月31日", "2024-03-31"},
    {"2024年03月31日", "2024-03-31"},
    {"R6.3.31", "2024-03-31"},
    {"r6.3.31", "2024-03-31"},
    {"R6/3/31", "2024-03-31"},
    {"R6-3-31", "2024-03-31"},
    {"R06.03.31", "2024-03-31"},
    {"令和6年3月31日", "2024-03-31"},
    {"令和６年３月３１日", "2024-03-31"},
    {"２０２４／３／３１", "2024-03-31"},
    {"２０２４－０３－３１", "2024-03-31"},
    {"Ｒ６．３．３１", "2024-03-31"},
    {"Ｈ３１／４／３０", "2019-04-30"},
    {"令和元年5月1日", "2019-05-01"},
    {"R元.5.1", "2019-05-01"},
    {"R1.5.1", "2019-05-01"},
    {"令和元年12月31日", "2019-12-31"},
    {"H31.4.30", "2019-04-30"},
    {"平成31年4月30日", "2019-04-30"},
    {"平成30年3月31日", "2018-03-31"},
    {"平成元年1月8日", "1989-01-08"},
    {"H1.1.8", "1989-01-08"},
    {"h30.3.31", "2018-03-31"},
    {"R6.2.29", "2024-02-29"},
    {"  2024/3/31  ", "2024-03-31"},
    {"\xe3\x80\x80令和6年3月31日\xe3\x80\x80", "2024-03-31"}, /* ideographic spaces */
};

/* Refusals and the reason each gets. */
static const struct {
    const char *in;
    int rc;
} written_bad[] = {
    {"２０２４／２／３０", KPI_TIME_EDATE},
    {"2024-2-30", KPI_TIME_EDATE},
    {"2023/2/29", KPI_TIME_EDATE},
    {"R6.13.1", KPI_TIME_EDATE},
    {"R6.0.1", KPI_TIME_EDATE},
    {"令和6年4月31日", KPI_TIME_EDATE},
    {"2024/3/0", KPI_TIME_EDATE},
    {"1899/12/31", KPI_TIME_EDATE},
    {"令和元年4月30日", KPI_TIME_EERA}, /* still 平成31年 */
    {"R1.1.1", KPI_TIME_EERA},
    {"R0.5.1", KPI_TIME_EERA},
    {"H31.5.1", KPI_TIME_EERA},          /* already 令和元年 */
    {"平成32年1月1日", KPI_TIME_EERA},
    {"H1.1.7", KPI_TIME_EERA},           /* 昭和64年 */
    {"H0.1.8", KPI_TIME_EERA},
    {"2024/3-31", KPI_TIME_EFORM},       /* mixed separators */
    {"2024/3/31/", KPI_TIME_EFORM},
    {"2024年3月31", KPI_TIME_EFORM},
    {"2024年3/31", KPI_TIME_EFORM},
    {"24/3/31", KPI_TIME_EFORM},
    {"R6.3", KPI_TIME_EFORM},
    {"R123.1.1", KPI_TIME_EFORM},
    {"2024/003/31", KPI_TIME_EFORM},
    {"2024-03-31T10:00:00", KPI_TIME_EFORM}, /* no offset: not an instant */
    {"S64.1.7", KPI_TIME_EFORM},             /* 昭和 is not read */
    {"31/3/2024", KPI_TIME_EFORM},
    {"", KPI_TIME_EFORM},
    {"令和", KPI_TIME_EFORM},
};

static void test_time_parse_input(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(written_ok); i++) {
        char canon[40] = "";
        int64_t ms = 0, ms_canon = 0;
        kpi_day day = 0, day_canon = 0;
        int rc = kpi_time_parse_input(written_ok[i].in, canon, sizeof(canon), &ms, &day);
        if (rc != 0 || strcmp(canon, written_ok[i].canon) != 0)
            fail_msg("\"%s\": rc %d, \"%s\", want \"%s\"", written_ok[i].in, rc, canon,
                     written_ok[i].canon);
        /* The canonical text means the same instant and day as the input. */
        assert_int_equal(kpi_time_parse(canon, &ms_canon, &day_canon), 0);
        assert_true(ms == ms_canon);
        assert_int_equal(day, day_canon);
    }
    for (size_t i = 0; i < ARRAY_LEN(written_bad); i++) {
        char canon[40] = "untouched";
        kpi_day day = 42;
        int rc = kpi_time_parse_input(written_bad[i].in, canon, sizeof(canon), NULL, &day);
        if (rc != written_bad[i].rc)
            fail_msg("\"%s\": rc %d, want %d", written_bad[i].in, rc, written_bad[i].rc);
        assert_string_equal(canon, "untouched");
        assert_int_equal(day, 42);
        assert_non_null(strstr(kpi_time_input_strerror(rc), rc == KPI_TIME_EERA ? "2019-05-01"
                                                          : rc == KPI_TIME_EDATE ? "no such day"
                                                                                 : "R6.3.31"));
    }
    /* A date's instant is that day's 00:00 JST, whichever way it was written. */
    int64_t ms;
    assert_int_equal(kpi_time_parse_input("令和6年3月31日", NULL, 0, &ms, NULL), 0);
    assert_true(ms == INT64_C(1711810800000)); /* 2024-03-30T15:00:00Z */
    /* A canonical value that does not fit CANON is refused rather than cut. */
    char small[11];
    assert_int_equal(kpi_time_parse_input("2024-03-31T10:00:00+09:00", small, sizeof(small), NULL,
                                          NULL),
                     KPI_TIME_EFORM);
    assert_int_equal(kpi_time_parse_input(NULL, NULL, 0, NULL, NULL), KPI_TIME_EFORM);
}

/* Every prefix of every accepted form, from an exact-size heap copy (AddressSanitizer sees a
 * read past the NUL): never a crash, and a cut multi-byte character is never a date. */
static void test_time_parse_input_truncated(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(written_ok); i++) {
        size_t n = strlen(written_ok[i].in);
        for (size_t k = 0; k < n; k++) {
            char *copy = malloc(k + 1);
            assert_non_null(copy);
            memcpy(copy, written_ok[i].in, k);
            copy[k] = '\0';
            char canon[40];
            kpi_day day;
            int rc = kpi_time_parse_input(copy, canon, sizeof(canon), NULL, &day);
            /* A shorter prefix may still be a date (2024/3/3 of 2024/3/31); then it parses
             * as exactly that. */
            if (rc == 0) assert_int_equal(kpi_time_parse(canon, NULL, NULL), 0);
            free(copy);
        }
    }
}

static void test_day_of_ms(void **state)
{
    (void)state;
    assert_int_equal(kpi_day_of_ms(INT64_C(1711897199999)), ymd(2024, 3, 31));
    assert_int_equal(kpi_day_of_ms(INT64_C(1711897200000)), ymd(2024, 4, 1));
    assert_int_equal(kpi_day_of_ms(INT64_C(-32400001)), ymd(1969, 12, 31));
    assert_int_equal(kpi_day_of_ms(INT64_C(-32400000)), ymd(1970, 1, 1));
    assert_int_equal(kpi_day_of_ms(0), ymd(1970, 1, 1));
    /* Extreme inputs must not overflow (UBSan watches); the value itself is irrelevant. */
    (void)kpi_day_of_ms(INT64_MAX);
    (void)kpi_day_of_ms(INT64_MIN);
}

static void test_time_format(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {INT64_C(1714532645123), "2024-05-01T03:04:05.123Z"},
        {INT64_C(1711897200000), "2024-03-31T15:00:00.000Z"},
        {INT64_C(-2209021200000), "1899-12-31T15:00:00.000Z"},
        {INT64_C(253402300799999), "9999-12-31T23:59:59.999Z"},
        {INT64_C(951782400000), "2000-02-29T00:00:00.000Z"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char buf[32];
        kpi_time_format_utc(cases[i].ms, buf, sizeof buf);
        assert_string_equal(buf, cases[i].want);
        /* What we print, we parse back to the same instant. */
        int64_t back = 0;
        if (cases[i].ms >= INT64_C(-2208988800000)) { /* printable year >= 1900 */
            assert_int_equal(kpi_time_parse(buf, &back, NULL), 0);
            assert_int_equal(back, cases[i].ms);
        }
    }
    for (int64_t ms = INT64_C(-2208988800000); ms < INT64_C(253402300799999); ms += INT64_C(86399999) * 367) {
        char buf[32];
        int64_t back = 0;
        kpi_time_format_utc(ms, buf, sizeof buf);
        assert_int_equal(kpi_time_parse(buf, &back, NULL), 0);
        assert_int_equal(back, ms);
    }

    char small[11];
    kpi_time_format_utc(0, small, sizeof small);
    assert_string_equal(small, "1970-01-01");

    static const struct {
        int y, m, d;
        const char *want;
    } days[] = {{1970, 1, 1, "1970-01-01"}, {2024, 2, 29, "2024-02-29"}, {1900, 12, 31, "1900-12-31"},
                {9999, 12, 31, "9999-12-31"}};
    for (size_t i = 0; i < ARRAY_LEN(days); i++) {
        char buf[11];
        kpi_day_format(ymd(days[i].y, days[i].m, days[i].d), buf, sizeof buf);
        assert_string_equal(buf, days[i].want);
        kpi_day day = 0;
        assert_int_equal(kpi_time_parse(buf, NULL, &day), 0);
        assert_int_equal(day, ymd(days[i].y, days[i].m, days[i].d));
    }
}

static void test_now(void **state)
{
    (void)state;
    int64_t a = kpi_time_now_ms();
    assert_true(a > INT64_C(1704067200000)); /* after 2024-01-01 */
    assert_true(a < INT64_C(4102444800000)); /* before 2100-01-01 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_day_anchors),        cmocka_unit_test(test_day_invalid),
        cmocka_unit_test(test_leap_years),         cmocka_unit_test(test_ymd_round_trip),
        cmocka_unit_test(test_fy_of_day),          cmocka_unit_test(test_fy_boundary_rfc3339),
        cmocka_unit_test(test_fy_parse_valid),     cmocka_unit_test(test_fy_parse_invalid),
        cmocka_unit_test(test_fy_parse_truncated), cmocka_unit_test(test_fy_format),
        cmocka_unit_test(test_time_parse_valid),   cmocka_unit_test(test_time_parse_invalid),
        cmocka_unit_test(test_time_parse_truncated), cmocka_unit_test(test_day_of_ms),
        cmocka_unit_test(test_time_format),        cmocka_unit_test(test_now),
        cmocka_unit_test(test_time_parse_input),   cmocka_unit_test(test_time_parse_input_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
