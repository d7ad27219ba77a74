/* report_csv.h: CSV rows for Excel through libcsv: every field quoted by csv_write (RFC 4180:
 * '"' doubled), rows ended by CRLF, the file opened by a UTF-8 byte order mark. */
#ifndef REPORT_CSV_H
#define REPORT_CSV_H

#include <stddef.h>

#include "kpi_buf.h"

/* Excel reads a CSV as the ANSI code page unless it starts with this mark. */
#define REPORT_CSV_BOM "\xEF\xBB\xBF"

/* Appends one row of N fields (NULL fields are written as empty) and its CRLF. */
void report_csv_row(kpi_buf *b, const char *const *fields, size_t n);

#endif
