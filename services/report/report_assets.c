/* report_assets.c: lookup of the files embedded by cmake/embed_assets.cmake. */
#include <string.h>

#include "report_assets.h"

const report_asset *report_asset_find(const char *name) {
  for (const report_asset *a = report_assets; a->name; a++)
    if (strcmp(a->name, name) == 0) return a;
  return NULL;
}
