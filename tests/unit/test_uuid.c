/* test_uuid.c: unit tests for kpi_uuid — v4 layout, strict parsing, v5 known vectors, format/parse round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kpi_uuid.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* RFC 9562 Appendix A namespaces. */
static const uint8_t NS_DNS[16] = {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1,
                                   0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};
static const uint8_t NS_URL[16] = {0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                   0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};

/* Parses from an exact-size heap copy so AddressSanitizer sees any read past the NUL. */
static int parse_exact(const char *s, size_t n, uint8_t out[16])
{
    char *copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    copy[n] = '\0';
    int rc = kpi_uuid_parse(copy, out);
    free(copy);
    return rc;
}

static void assert_canonical_lower(const char *s)
{
    assert_int_equal(strlen(s), KPI_UUID_STRLEN);
    for (int i = 0; i < KPI_UUID_STRLEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(s[i], '-');
        else
            assert_true((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'));
    }
}

static void test_v4(void **state)
{
    (void)state;
    char a[KPI_UUID_STRLEN + 1], b[KPI_UUID_STRLEN + 1];
    for (int i = 0; i < 64; i++) {
        assert_int_equal(kpi_uuid_v4(a), 0);
        assert_canonical_lower(a);
        assert_int_equal(a[14], '4');                       /* version nibble */
        assert_non_null(strchr("89ab", a[19]));             /* variant 10xx */
        uint8_t bytes[16];
        assert_int_equal(kpi_uuid_parse(a, bytes), 0);
        assert_int_equal(bytes[6] >> 4, 4);
        assert_int_equal(bytes[8] >> 6, 2);
    }
    assert_int_equal(kpi_uuid_v4(b), 0);
    assert_string_not_equal(a, b);
}

static void test_v5_vectors(void **state)
{
    (void)state;
    static const struct {
        const uint8_t *ns;
        const char *name;
        const char *want;
    } cases[] = {
        {NS_DNS, "www.example.com", "2ed6657d-e927-568b-95e1-2665a8aea6a2"}, /* RFC 9562 A.4 */
        {NS_DNS, "python.org", "886313e1-3b8a-5372-9b90-0c9aee199e5d"},      /* Python docs */
        {NS_URL, "https://example.org/", "527dda32-a0de-5105-a042-cb475b5f7d11"},
        {NS_DNS, "", "4ebd0208-8328-5d69-8c44-ec50939c0967"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char out[KPI_UUID_STRLEN + 1];
        kpi_uuid_v5(cases[i].ns, cases[i].name, strlen(cases[i].name), out);
        assert_string_equal(out, cases[i].want);
    }
    /* Deterministic, and LEN (not the NUL) bounds the name. */
    char x[KPI_UUID_STRLEN + 1], y[KPI_UUID_STRLEN + 1];
    kpi_uuid_v5(NS_DNS, "www.example.com.trailing", 15, x);
    assert_string_equal(x, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
    kpi_uuid_v5(NS_DNS, NULL, 0, y);
    assert_string_equal(y, "4ebd0208-8328-5d69-8c44-ec50939c0967");
    kpi_uuid_v5(NS_DNS, "www.example.org", 15, x);
    assert_string_not_equal(x, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
}

static void test_parse_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint8_t bytes[16];
    } cases[] = {
        {"6ba7b810-9dad-11d1-80b4-00c04fd430c8",
         {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}},
        {"6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
         {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}},
        {"6Ba7b810-9dAd-11d1-80b4-00c04fD430c8",
         {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}},
        {"00000000-0000-0000-0000-000000000000", {0}},
        {"ffffffff-ffff-ffff-ffff-ffffffffffff",
         {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t out[16];
        assert_int_equal(parse_exact(cases[i].s, strlen(cases[i].s), out), 0);
        assert_memory_equal(out, cases[i].bytes, 16);
        assert_int_equal(kpi_uuid_parse(cases[i].s, NULL), 0); /* validate only */
    }
}

static void test_parse_invalid(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c",     /* 35 chars */
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8a",   /* 37 chars */
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8 ",
        " 6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "6ba7b8109dad11d180b400c04fd430c8",        /* no dashes */
        "6ba7b8109-dad-11d1-80b4-00c04fd430c8",    /* dash misplaced */
        "6ba7b810-9dad-11d180b4-00c04fd430c8-",
        "6ba7b810-9dad-11d1-80b4000c04fd430c8",
        "6ba7b810-9dad-11d1-80b4-00c04fd430-8",
        "6ba7b810_9dad_11d1_80b4_00c04fd430c8",
        "6ba7b810-9dad-11d1-80b4-00c04fd430cg",    /* non-hex */
        "6ba7b81x-9dad-11d1-80b4-00c04fd430c8",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c\xc3\xa9",
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
        "urn:uuid:6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "+ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "------------------------------------",
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t out[16];
        memset(out, 0xAA, sizeof out);
        if (parse_exact(cases[i], strlen(cases[i]), out) != -1)
            fail_msg("\"%s\" accepted", cases[i]);
        for (int k = 0; k < 16; k++)
            assert_int_equal(out[k], 0xAA); /* untouched on failure */
    }
    assert_int_equal(kpi_uuid_parse(NULL, NULL), -1);

    /* Every proper prefix of a valid UUID is rejected without reading past its end. */
    static const char valid[] = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
    for (size_t k = 0; k < KPI_UUID_STRLEN; k++)
        assert_int_equal(parse_exact(valid, k, NULL), -1);
}

static void test_round_trip(void **state)
{
    (void)state;
    uint8_t in[16], back[16];
    char text[KPI_UUID_STRLEN + 1];
    /* Every byte value in every position. */
    for (int v = 0; v < 256; v++) {
        for (int i = 0; i < 16; i++)
            in[i] = (uint8_t)(v + i * 17);
        kpi_uuid_format(in, text);
        assert_canonical_lower(text);
        assert_int_equal(kpi_uuid_parse(text, back), 0);
        assert_memory_equal(in, back, 16);
    }
    static const uint8_t dns[16] = {0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1,
                                    0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};
    kpi_uuid_format(dns, text);
    assert_string_equal(text, "6ba7b810-9dad-11d1-80b4-00c04fd430c8");

    /* Upper-case input is normalised to lower case. */
    assert_int_equal(kpi_uuid_parse("2ED6657D-E927-568B-95E1-2665A8AEA6A2", back), 0);
    kpi_uuid_format(back, text);
    assert_string_equal(text, "2ed6657d-e927-568b-95e1-2665a8aea6a2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4),          cmocka_unit_test(test_v5_vectors),
        cmocka_unit_test(test_parse_valid), cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
