/* kpi_uuid.c: UUID v4/v5 over libcrypto, and the canonical text form. */
#include "kpi_uuid.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

/* Byte offsets in the text form where the four dashes go. */
static int is_dash_pos(int i)
{
    return i == 8 || i == 13 || i == 18 || i == 23;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 9562 §4.1–4.2: the version lives in the high nibble of byte 6, the variant (binary
 * 10) in the two high bits of byte 8. */
static void set_version(uint8_t b[16], unsigned version)
{
    b[6] = (uint8_t)((b[6] & 0x0F) | (version << 4));
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);
}

int kpi_uuid_v4(char out[KPI_UUID_STRLEN + 1])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1) {
        out[0] = '\0';
        return -1;
    }
    set_version(b, 4);
    kpi_uuid_format(b, out);
    return 0;
}

int kpi_uuid_parse(const char *s, uint8_t out[16])
{
    uint8_t b[16];
    int n = 0;
    if (s == NULL)
        return -1;
    /* Walking the fixed layout stops at the first wrong byte, so a short string's NUL is
     * seen before anything past it is read. */
    for (int i = 0; i < KPI_UUID_STRLEN; i++) {
        if (is_dash_pos(i)) {
            if (s[i] != '-')
                return -1;
            continue;
        }
        int hi = hex_value(s[i]);
        if (hi < 0)
            return -1;
        int lo = hex_value(s[++i]);
        if (lo < 0)
            return -1;
        b[n++] = (uint8_t)(hi << 4 | lo);
    }
    if (s[KPI_UUID_STRLEN] != '\0')
        return -1;
    if (out)
        for (int i = 0; i < 16; i++)
            out[i] = b[i];
    return 0;
}

void kpi_uuid_format(const uint8_t in[16], char out[KPI_UUID_STRLEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    int n = 0;
    for (int i = 0; i < KPI_UUID_STRLEN; i++) {
        if (is_dash_pos(i)) {
            out[i] = '-';
            continue;
        }
        out[i] = hex[in[n] >> 4];
        out[++i] = hex[in[n] & 0x0F];
        n++;
    }
    out[KPI_UUID_STRLEN] = '\0';
}

void kpi_uuid_v5(const uint8_t ns[16], const char *name, size_t len, char out[KPI_UUID_STRLEN + 1])
{
    /* SHA-1 is mandated by the v5 definition; it serves only as a deterministic mix here,
     * not as a security boundary. EVP rather than SHA1() because the latter is deprecated
     * in OpenSSL 3. */
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(ctx, ns, 16) == 1 &&
             (len == 0 || EVP_DigestUpdate(ctx, name, len) == 1) && EVP_DigestFinal_ex(ctx, md, &md_len) == 1 &&
             md_len >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        out[0] = '\0';
        return;
    }
    set_version(md, 5);
    kpi_uuid_format(md, out);
}
