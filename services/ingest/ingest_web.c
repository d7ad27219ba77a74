/* ingest_web.c: finds the entry page's embedded files (ingest_web_gen.c) by path. */
#include "ingest_web.h"

#include <string.h>

const ingest_web_file *ingest_web_find(const char *path) {
  for (const ingest_web_file *f = ingest_web_files; f->path; f++)
    if (strcmp(f->path, path) == 0) return f;
  return NULL;
}
