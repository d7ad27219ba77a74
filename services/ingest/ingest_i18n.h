/* ingest_i18n.h: the languages of ingest's problem details (title, detail): English, Japanese. */
#ifndef INGEST_I18N_H
#define INGEST_I18N_H

#include <stddef.h>

/* The languages an answer can be in; English is the default. */
typedef enum { INGEST_LANG_EN = 0, INGEST_LANG_JA = 1, INGEST_LANG_COUNT } ingest_lang;

/* The language for an Accept-Language header value AL (NULL: absent): Japanese when the
 * client prefers it to English (kpi_http_accept_language), else English. */
ingest_lang ingest_lang_of(const char *al);

/* The language's tag, "en" or "ja", as Content-Language says it. */
const char *ingest_lang_tag(ingest_lang lang);

/* The problem title of STATUS in LANG: the RFC 9110 reason phrase in English, its Japanese
 * counterpart from the message table, or the English one when the table has none. */
const char *ingest_title(ingest_lang lang, int status);

/* The text of English detail (or printf format) EN in LANG: EN itself for English, else its
 * entry in the message table; EN when the table has no entry. A format's Japanese text takes
 * the same conversions in the same order (tests/unit/test_ingest_i18n.c checks it). */
const char *ingest_text(ingest_lang lang, const char *en);

/* The number of entries of the message table and entry I's English and Japanese text, for
 * the test that checks the table. */
size_t ingest_text_count(void);
void ingest_text_at(size_t i, const char **en, const char **ja);

#endif
