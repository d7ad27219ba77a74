/* kpi_buf.h: one growable byte string for every service (explicit length, amortised growth,
 * printf without a size limit, one failure flag), plus PostgreSQL array literals. */
#ifndef KPI_BUF_H
#define KPI_BUF_H

#include <stdarg.h>
#include <stddef.h>

/* A growable string, after redis's sds but as a plain struct the caller owns (embed it or
 * keep it on the stack; zero-initialise it with KPI_BUF_INIT or memset).
 *
 * Appends never report failure one by one: when an allocation fails (or a size would
 * overflow) OOM is set, the append and every later one do nothing, and the caller checks
 * OOM once, after building the whole text. S and LEN therefore always describe a valid prefix
 * of what was asked for; never use that prefix when OOM is set.
 *
 * S is NULL until the first successful append, then always NUL-terminated (LEN does not count
 * the NUL), so S may hold NUL bytes of its own when added with kpi_buf_add. Growth doubles
 * from 256 bytes, so N appends cost O(N) copies in total. */
typedef struct kpi_buf {
  char *s;
  size_t len; /* bytes in S, without the terminating NUL */
  size_t cap; /* bytes allocated at S */
  int oom;    /* set by any failed allocation; cleared only by reset */
} kpi_buf;

#define KPI_BUF_INIT {NULL, 0, 0, 0}

/* Empties B and clears OOM, keeping its memory for reuse. */
void kpi_buf_reset(kpi_buf *b);

/* Releases B's memory and leaves it as KPI_BUF_INIT (usable again). */
void kpi_buf_free(kpi_buf *b);

/* Gives back the spare capacity beyond the string and its NUL (for a buffer kept a long time
 * after it was filled). S may move: call it before taking pointers into S. */
void kpi_buf_trim(kpi_buf *b);

/* Makes room for EXTRA more bytes (and the NUL) ahead of time. Returns 0, or -1 with OOM set
 * (also when OOM was already set). Appends call it themselves; use it to avoid regrowth. */
int kpi_buf_reserve(kpi_buf *b, size_t extra);

/* Appends N bytes at S (S may be NULL when N is 0). */
void kpi_buf_add(kpi_buf *b, const void *s, size_t n);
/* Appends the NUL-terminated string S. */
void kpi_buf_adds(kpi_buf *b, const char *s);
void kpi_buf_addc(kpi_buf *b, char c);
/* Appends printf output of any length (formatted twice: once to measure, once to write). A
 * format error (vsnprintf < 0) sets OOM too, so the text is never silently short. */
void kpi_buf_addf(kpi_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kpi_buf_vaddf(kpi_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* S, or "" while nothing was appended; valid until the next append, reset or free. */
const char *kpi_buf_str(const kpi_buf *b);

/* Hands B's string over to the caller (free it with free()) and leaves B as KPI_BUF_INIT.
 * Returns NULL when OOM was set (the memory is then released); an empty buffer gives a
 * malloc'd "" (NULL only when even that fails). *LEN (may be NULL) gets the length. */
char *kpi_buf_detach(kpi_buf *b, size_t *len);

/* PostgreSQL array literals built element by element, for one bound text parameter such as
 * `$1::text[]`: kpi_buf_arr_begin, then any number of kpi_buf_arr_str / _raw / _null, then
 * kpi_buf_arr_end. The literal is "{a,b}"; elements are separated lazily (the first element
 * is the one appended while the buffer still holds only "{"), so B must hold nothing but the
 * literal being built. */

/* Starts over: empties B, clears OOM and appends "{". */
void kpi_buf_arr_begin(kpi_buf *b);
/* A string element, always double-quoted with '"' and '\' backslash-escaped, so any bytes
 * (commas, braces, blanks, "NULL", "") stay one element and never become SQL NULL. */
void kpi_buf_arr_str(kpi_buf *b, const char *s);
/* An element written as is: numbers, dates, anything that needs no quoting. */
void kpi_buf_arr_raw(kpi_buf *b, const char *s);
/* An SQL NULL element (the unquoted word NULL). */
void kpi_buf_arr_null(kpi_buf *b);
void kpi_buf_arr_end(kpi_buf *b);

#endif
