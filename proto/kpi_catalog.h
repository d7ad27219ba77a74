/* kpi_catalog.h: the plan's catalog of measures, departments and tokens, loaded and validated. */
#ifndef KPI_CATALOG_H
#define KPI_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  KPI_KIND_LEVEL = 0,
  KPI_KIND_CUMULATIVE,
  KPI_KIND_RATIO,
  KPI_KIND_MAINTAIN,
  KPI_KIND_MILESTONE
} kpi_kind;

typedef enum { KPI_DIR_INCREASE = 0, KPI_DIR_DECREASE } kpi_direction;

/* Upper bounds of one reported value. A count (any unit but percent, and the numerator and
 * denominator amounts of a ratio measure) is at most KPI_VALUE_MAX_COUNT: no city counts a
 * trillion of anything, and a bound far below DBL_MAX keeps sums, the ratio's 100·Σnum/Σden
 * and the progress arithmetic finite. A percentage is at most 100, a milestone at most 1. A
 * measure's catalog `max` can only lower these. */
#define KPI_VALUE_MAX_COUNT 1e12
#define KPI_VALUE_MAX_PERCENT 100.0

typedef struct kpi_department {
  char *id;
  char *name;
  bool sample;
  bool has_token;
  uint8_t token_sha256[32];
  char **mailboxes;
  size_t n_mailboxes;
} kpi_department;

typedef struct kpi_measure {
  char *id;
  int goal;
  char *goal_name;
  char *program;
  char *name;      /* 具体的な施策 */
  char *indicator; /* KPI indicator name */
  char *unit;
  kpi_kind kind;
  kpi_direction direction;
  int baseline_fy;
  double baseline;
  int target_fy;
  double target;
  int window_from_fy; /* cumulative only: the FYs whose amounts count; else 0 */
  int window_to_fy;
  char *owner;                       /* department id */
  const kpi_department *owner_dept;  /* resolved, never NULL after a successful load */
  char **watchers;                   /* extra mail addresses */
  size_t n_watchers;
  int report_interval_days;
  bool has_max;     /* the catalog gave `max` */
  double value_max; /* the largest value one measurement may carry: the catalog's `max`, else
                     * the bound of the measure's kind and unit (KPI_VALUE_MAX_*) */
  char *component_unit; /* ratio only: the count unit of its numerator and denominator
                         * amounts (`component_unit`, e.g. "case"); NULL when not given */
} kpi_measure;

/* A unit of the catalog's `units` and the labels people write for it (人, 件, ％…), which
 * the ingest accepts in its place (docs/ingest.md "Units"). */
typedef struct kpi_unit {
  char *name; /* canonical: what records carry */
  char **labels;
  size_t n_labels;
} kpi_unit;

typedef struct kpi_catalog {
  char *plan_id;
  char *plan_name;
  char *dashboard_url; /* may be NULL */
  int version;
  /* SHA-256 of the canonical bytes of the file (cJSON's unformatted print of the parsed text:
   * whitespace and number spelling do not count, everything else does). What the evaluator
   * records with the version (docs/evaluator.md "Catalog versions"). */
  uint8_t sha256[32];
  kpi_department *departments;
  size_t n_departments;
  kpi_measure *measures; /* sorted by id, for bsearch */
  size_t n_measures;
  kpi_unit *units; /* the optional `units` member, in catalog order */
  size_t n_units;
} kpi_catalog;

/* Parses and validates a catalog. Returns NULL and writes the first problem to ERRSTR, naming
 * the element and field (`measures[3].target.value: equal to baseline, a level measure needs a
 * difference`). Two departments with the same token hash are refused (naming both). Sample
 * departments are accepted here: refusing them is the deployment policy of kpi_catalog_load.
 * The returned catalog is immutable; free it with kpi_catalog_free. */
kpi_catalog *kpi_catalog_parse(const char *json, size_t len, char *errstr, size_t errstr_size);

/* Flags of kpi_catalog_load_flags. */
#define KPI_CATALOG_ALLOW_SAMPLE 0x1u /* accept departments marked "sample": true */

/* Reads PATH and calls kpi_catalog_parse; then, unless FLAGS has KPI_CATALOG_ALLOW_SAMPLE,
 * refuses a catalog with a sample department (kpi_catalog_check_sample). Errors are prefixed
 * with the path. */
kpi_catalog *kpi_catalog_load_flags(const char *path, unsigned flags, char *errstr,
                                    size_t errstr_size);

/* What every service calls, at start and on SIGHUP: kpi_catalog_load_flags with
 * KPI_CATALOG_ALLOW_SAMPLE when the environment has KPI_ALLOW_SAMPLE_TOKENS=1. Unset, empty
 * or 0 refuses sample departments; any other value is an error, so that a typo such as
 * `true` fails loudly instead of silently meaning "no". */
kpi_catalog *kpi_catalog_load(const char *path, char *errstr, size_t errstr_size);

/* Returns 0 when CAT has no sample department or FLAGS allows them; else -1 with ERRSTR naming
 * the first sample department and saying how to make real tokens (kpi-admin gen-token). The
 * sample departments' tokens are published in config/sample-tokens.env, so a catalog that
 * still has them must not reach a deployment by accident. */
int kpi_catalog_check_sample(const kpi_catalog *cat, unsigned flags, char *errstr,
                             size_t errstr_size);

void kpi_catalog_free(kpi_catalog *cat);

/* Measure by id, or NULL. O(log n). */
const kpi_measure *kpi_catalog_measure(const kpi_catalog *cat, const char *id);

const kpi_department *kpi_catalog_department(const kpi_catalog *cat, const char *id);

/* The department whose token hashes to the catalog's SHA-256, or NULL. Every department's hash
 * is compared in constant time (CRYPTO_memcmp), and all of them are always compared, so the time
 * taken says nothing about which hash or how many bytes matched. */
const kpi_department *kpi_catalog_authenticate(const kpi_catalog *cat, const char *token,
                                               size_t token_len);

/* Catalog versions (docs/evaluator.md "Catalog versions"): a catalog whose content changed
 * must carry a higher `version` than every catalog run before it. */
typedef enum {
  KPI_CATALOG_VERSION_NEW = 0, /* nothing recorded yet, or higher than the latest: record it */
  KPI_CATALOG_VERSION_SAME,    /* the latest version, recorded with this very content */
  KPI_CATALOG_VERSION_CHANGED, /* this version was recorded with other content: refused */
  KPI_CATALOG_VERSION_OLDER    /* below the latest recorded (a rollback to an older file,
                                * known or not): refused */
} kpi_catalog_version_verdict;

/* Judges a catalog of VERSION whose canonical SHA-256 is SHA_HEX (64 lower-case hex digits)
 * against what was recorded: HAS_LATEST and LATEST, the highest version recorded, and
 * RECORDED_HEX, the hash recorded with VERSION itself (NULL when VERSION was never recorded).
 * A refusal writes to ERRSTR what happened and which version to set instead (LATEST + 1);
 * otherwise ERRSTR is the empty string. Pure. */
kpi_catalog_version_verdict kpi_catalog_version_check(int version, const char *sha_hex,
                                                      bool has_latest, int latest,
                                                      const char *recorded_hex, char *errstr,
                                                      size_t errstr_size);
/* True for the verdicts under which the catalog may run (NEW, SAME). */
bool kpi_catalog_version_ok(kpi_catalog_version_verdict v);
/* CAT's sha256 as 64 lower-case hex digits into OUT (at least 65 bytes). */
void kpi_catalog_sha256_hex(const kpi_catalog *cat, char *out);

/* The unit NAME of the catalog's `units`, or NULL when the catalog gives it no labels. */
const kpi_unit *kpi_catalog_unit(const kpi_catalog *cat, const char *name);

/* Whether GIVEN, as a department wrote it, names canonical unit UNIT: UNIT itself or one of
 * its labels, compared after folding full-width ASCII forms (U+FF01..U+FF5E, so "％" is "%")
 * and trimming ASCII spaces. */
bool kpi_catalog_unit_matches(const kpi_catalog *cat, const char *unit, const char *given);

/* The canonical unit that GIVEN names among all the catalog's units (by name or label, as
 * kpi_catalog_unit_matches compares), or NULL. */
const char *kpi_catalog_unit_lookup(const kpi_catalog *cat, const char *given);

const char *kpi_kind_name(kpi_kind kind);
const char *kpi_direction_name(kpi_direction dir);
int kpi_kind_parse(const char *s, kpi_kind *out);

#endif
