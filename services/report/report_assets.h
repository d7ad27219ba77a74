/* report_assets.h: the templates and static files embedded at build time
 * (cmake/embed_assets.cmake), so no install path has to be right at run time. */
#ifndef REPORT_ASSETS_H
#define REPORT_ASSETS_H

#include <stddef.h>

typedef struct {
  const char *name; /* file name, "index.html", "report.css" */
  const char *data; /* NUL-terminated; LEN excludes the NUL */
  size_t len;
} report_asset;

/* Every embedded file, ending with {0, 0, 0}. */
extern const report_asset report_assets[];

/* The file NAME, or NULL. */
const report_asset *report_asset_find(const char *name);

#endif
