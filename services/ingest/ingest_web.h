/* ingest_web.h: the entry page's static files (services/ingest/web), embedded at build time
 * by embed_web.cmake. */
#ifndef INGEST_WEB_H
#define INGEST_WEB_H

#include <stddef.h>

typedef struct ingest_web_file {
  const char *path;         /* "/entry" for entry.html, "/entry.js", "/entry.css" */
  const char *content_type; /* with charset=utf-8 */
  const char *data;
  size_t len;
} ingest_web_file;

/* Every file, ended by an entry whose path is NULL. */
extern const ingest_web_file ingest_web_files[];

/* The file served at PATH, or NULL. */
const ingest_web_file *ingest_web_find(const char *path);

#endif
