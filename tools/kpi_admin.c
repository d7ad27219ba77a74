/* tools/kpi_admin.c: kpi-admin — create the topics, apply migrations, check a catalog, make or
 * hash a department token. Uses the same environment variables as the services. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kpi_catalog.h"
#include "kpi_env.h"
#include "kpi_json.h"
#include "kpi_kafka.h"
#include "kpi_log.h"
#include "kpi_pg.h"
#include "kpi_shutdown.h"

static int usage(void) {
  fprintf(stderr,
          "usage: kpi-admin topics              create the four topics (KPI_KAFKA_BOOTSTRAP, "
          "KPI_TOPIC_*)\n"
          "       kpi-admin migrate             apply db/migrations (DATABASE_URL or PG*)\n"
          "       kpi-admin check-catalog FILE  validate a catalog as the services load it, print "
          "its measures\n"
          "       kpi-admin gen-token DEPARTMENT  make a new 256-bit token, print it once and "
          "its SHA-256 for the catalog\n"
          "       kpi-admin hash-token          read a token on stdin, print its SHA-256 for "
          "the catalog\n");
  return 2;
}

static int cmd_topics(void) {
  char err[512];
  kpi_topic_spec specs[KPI_TOPIC_COUNT];
  /* A KPI_TOPIC_* or KPI_KAFKA_PROP_* refused is bad configuration, as in every service
   * (docs/architecture.md "Start and stop"); the client or the broker failing is not. */
  int code = KPI_EXIT_CONFIG;
  if (kpi_topics_from_env(specs, err, sizeof(err))) goto fail;
  rd_kafka_conf_t *conf = kpi_kafka_conf_new("kpi-admin", NULL, NULL, err, sizeof(err));
  if (!conf) goto fail;
  code = KPI_EXIT_START;
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    goto fail;
  }
  int rc = kpi_kafka_ensure_topics(rk, specs, KPI_TOPIC_COUNT, 15000, err, sizeof(err));
  rd_kafka_destroy(rk);
  if (rc) goto fail;
  for (int i = 0; i < KPI_TOPIC_COUNT; i++)
    printf("topic %s: %d partitions, replication %d\n", specs[i].name, specs[i].partitions,
           specs[i].replication);
  return 0;
fail:
  fprintf(stderr, "kpi-admin topics: %s\n", err);
  return code;
}

static int cmd_migrate(void) {
  char err[512];
  PGconn *c = kpi_pg_connect(kpi_pg_conninfo(), err, sizeof(err));
  if (!c) goto fail;
  int n = kpi_pg_migrate(c, err, sizeof(err));
  PQfinish(c);
  if (n < 0) goto fail;
  printf("migrations applied: %d\n", n);
  return 0;
fail:
  fprintf(stderr, "kpi-admin migrate: %s\n", err);
  return 1;
}

static int cmd_check_catalog(const char *path) {
  char err[512];
  kpi_catalog *cat = kpi_catalog_load(path, err, sizeof(err));
  if (!cat) {
    fprintf(stderr, "kpi-admin check-catalog: %s\n", err);
    return KPI_EXIT_CONFIG; /* an invalid catalog is bad configuration, as in every service */
  }
  printf("%s: plan %s, %zu departments, %zu measures\n", path, cat->plan_id,
         cat->n_departments, cat->n_measures);
  for (size_t i = 0; i < cat->n_measures; i++) {
    const kpi_measure *m = &cat->measures[i];
    printf("  %-34s %-10s %g -> %g %s (FY%d -> FY%d) owner %s\n", m->id, kpi_kind_name(m->kind),
           m->baseline, m->target, m->unit, m->baseline_fy, m->target_fy, m->owner);
  }
  kpi_catalog_free(cat);
  return 0;
}

static int cmd_hash_token(void) {
  char tok[1024];
  if (!fgets(tok, sizeof(tok), stdin)) return usage();
  tok[strcspn(tok, "\r\n")] = '\0';
  unsigned char d[32];
  SHA256((const unsigned char *)tok, strlen(tok), d);
  for (int i = 0; i < 32; i++) printf("%02x", d[i]);
  printf("\n");
  return 0;
}

/* A token is KPI_TOKEN_PREFIX and 32 bytes from the CSPRNG in unpadded base64url (43
 * characters, safe in a header and a shell variable). The prefix lets secret scanners and
 * people recognise a leaked token; the catalog keeps only the SHA-256 of the whole string,
 * which is what the ingest compares. */
#define KPI_TOKEN_PREFIX "kpi_"
#define KPI_TOKEN_BYTES 32

static int cmd_gen_token(const char *dept) {
  if (!kpi_json_id_valid(dept)) {
    fprintf(stderr, "kpi-admin gen-token: \"%s\" is not a department id (1-64 letters, digits, "
                    "'.', '_', '-')\n", dept);
    return 2;
  }
  unsigned char raw[KPI_TOKEN_BYTES];
  if (RAND_bytes(raw, sizeof(raw)) != 1) {
    fprintf(stderr, "kpi-admin gen-token: the random number generator failed\n");
    return 1;
  }
  /* 4 * ceil(32 / 3) = 44 characters with one '=' of padding, plus the NUL. */
  char tok[sizeof(KPI_TOKEN_PREFIX) - 1 + 45];
  char *b64 = tok + sizeof(KPI_TOKEN_PREFIX) - 1;
  memcpy(tok, KPI_TOKEN_PREFIX, sizeof(KPI_TOKEN_PREFIX) - 1);
  int n = EVP_EncodeBlock((unsigned char *)b64, raw, sizeof(raw));
  OPENSSL_cleanse(raw, sizeof(raw));
  while (n > 0 && b64[n - 1] == '=') n--;
  b64[n] = '\0';
  for (char *p = b64; *p; p++) {
    if (*p == '+') *p = '-';
    else if (*p == '/') *p = '_';
  }
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)tok, strlen(tok), d);
  char hex[2 * SHA256_DIGEST_LENGTH + 1];
  for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);

  const char *catalog = getenv("KPI_CATALOG");
  if (!catalog || !catalog[0]) catalog = "config/catalog.json";
  printf("# Bearer token of department \"%s\". It is shown only this once and stored nowhere: "
         "hand it to the department over a secure channel.\n"
         "%s\n"
         "# Put this line into department \"%s\" of the catalog (%s), replacing its "
         "token_sha256 and removing \"sample\": true; then send SIGHUP to every service (or "
         "restart them).\n"
         "\"token_sha256\": \"%s\"\n",
         dept, tok, dept, catalog, hex);
  fflush(stdout);
  OPENSSL_cleanse(tok, sizeof(tok));

  /* A hint, not a failure: the catalog may not exist on this machine. */
  char err[512];
  kpi_catalog *cat = kpi_catalog_load_flags(catalog, KPI_CATALOG_ALLOW_SAMPLE, err, sizeof(err));
  if (cat && !kpi_catalog_department(cat, dept))
    fprintf(stderr, "kpi-admin gen-token: note: %s has no department \"%s\" yet\n", catalog,
            dept);
  kpi_catalog_free(cat);
  return 0;
}

int main(int argc, char **argv) {
  kpi_log_init("admin");
  if (argc < 2) return usage();
  if (strcmp(argv[1], "topics") == 0) return cmd_topics();
  if (strcmp(argv[1], "migrate") == 0) return cmd_migrate();
  if (strcmp(argv[1], "check-catalog") == 0 && argc == 3) return cmd_check_catalog(argv[2]);
  if (strcmp(argv[1], "gen-token") == 0 && argc == 3) return cmd_gen_token(argv[2]);
  if (strcmp(argv[1], "hash-token") == 0) return cmd_hash_token();
  return usage();
}
