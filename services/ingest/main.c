/* services/ingest/main.c: kpi-ingest entry point (foundation stage: loads and checks its configuration). */
#include <stdio.h>
#include <stdlib.h>

#include "kpi_catalog.h"
#include "kpi_env.h"
#include "kpi_log.h"

int main(void) {
  kpi_log_init("ingest");
  char err[512];
  const char *path = kpi_env_str("KPI_CATALOG", "config/catalog.json");
  kpi_catalog *cat = kpi_catalog_load(path, err, sizeof(err));
  if (!cat) {
    kpi_log(KPI_LOG_ERROR, "catalog_invalid", "%s", err);
    return 2;
  }
  kpi_log(KPI_LOG_INFO, "config_ok", "catalog %s: %zu measures", path, cat->n_measures);
  kpi_catalog_free(cat);
  return 0;
}
