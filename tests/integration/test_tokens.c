/* test_tokens.c: department tokens (issue 8): every service refuses a catalog with sample
 * departments unless KPI_ALLOW_SAMPLE_TOKENS=1, also on SIGHUP; kpi-admin gen-token makes a
 * fresh token each run whose hash is the catalog line it prints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/sha.h>

#include "test_ingest_client.h"

#define SHIPPED KPI_SOURCE_DIR "/config/catalog.json"
#define MEASURE_LED "g4-carbon-2-led-rate" /* kankyo, percent, level */
#define JSON_CT "Content-Type: application/json\r\n"

/* The child's getenv returns the first match and kpi_it_spawn putenv()s over the inherited
 * environment, so an empty value overrides the harness's KPI_ALLOW_SAMPLE_TOKENS=1. */
#define NO_SAMPLES "KPI_ALLOW_SAMPLE_TOKENS="

static int log_contains(const char *log, const char *needle) {
  char *text = kpi_it_read_file(log, NULL);
  int found = text && strstr(text, needle) != NULL;
  free(text);
  return found;
}

/* Each service, started with the shipped (sample) catalog and without the variable, exits 2
 * before it opens anything, and its log says why and how to make real tokens. */
static void test_services_refuse_sample_catalog(void **state) {
  (void)state;
  static const char *const binaries[] = {"services/ingest/kpi-ingest",
                                         "services/evaluator/kpi-evaluator",
                                         "services/notifier/kpi-notifier"};
  for (size_t i = 0; i < sizeof(binaries) / sizeof(binaries[0]); i++) {
    char log[256], listen[3][64];
    snprintf(log, sizeof(log), "%s/it_tokens_%d_%zu.log", KPI_BINARY_DIR, (int)getpid(), i);
    unlink(log);
    int port = kpi_it_free_port();
    snprintf(listen[0], sizeof(listen[0]), "KPI_INGEST_LISTEN=127.0.0.1:%d", port);
    snprintf(listen[1], sizeof(listen[1]), "KPI_EVALUATOR_LISTEN=127.0.0.1:%d", port);
    snprintf(listen[2], sizeof(listen[2]), "KPI_NOTIFIER_LISTEN=127.0.0.1:%d", port);
    const char *env[] = {NO_SAMPLES, "KPI_CATALOG=" SHIPPED, listen[0], listen[1], listen[2],
                         NULL};
    pid_t pid = kpi_it_spawn(binaries[i], env, log);
    assert_true(pid > 0);
    int status = kpi_it_stop(pid, 0, 20000); /* signal 0: only wait */
    if (!(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 2))
      fail_msg("%s did not exit 2 on a sample catalog (status %d); see %s", binaries[i], status,
               log);
    if (!log_contains(log, "catalog_invalid") || !log_contains(log, "is a sample department") ||
        !log_contains(log, "kpi-admin gen-token DEPARTMENT") ||
        !log_contains(log, "KPI_ALLOW_SAMPLE_TOKENS=1"))
      fail_msg("%s: the log does not explain the refusal; see %s", binaries[i], log);
    unlink(log);
  }
  /* With the variable (as the harness sets it) the same catalog starts the service. */
  const char *env[] = {"KPI_ALLOW_SAMPLE_TOKENS=1", "KPI_CATALOG=" SHIPPED, NULL};
  tc_service svc;
  tc_service_start(&svc, env, 0);
  tc_service_stop(&svc);
}

#define REAL_TOKEN_PREFIX "it-real-token-"

/* The catalog with its "sample" markers removed (WITHOUT_SAMPLE) or kept, and the LED measure
 * owned by OWNER. */
static char *catalog_text(int without_sample, const char *owner) {
  char *text = kpi_it_read_file(SHIPPED, NULL);
  assert_non_null(text);
  cJSON *cat = cJSON_Parse(text);
  free(text);
  cJSON *it;
  /* Without the markers, the published sample tokens would still be refused (their hashes are
   * known): each department gets the hash of a token of this test, REAL_TOKEN_PREFIX + id. */
  if (without_sample)
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(cat, "departments")) {
      cJSON_DeleteItemFromObject(it, "sample");
      char token[128], hex[65];
      unsigned char md[SHA256_DIGEST_LENGTH];
      snprintf(token, sizeof(token), REAL_TOKEN_PREFIX "%s",
               cJSON_GetObjectItem(it, "id")->valuestring);
      SHA256((const unsigned char *)token, strlen(token), md);
      for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
      cJSON_ReplaceItemInObject(it, "token_sha256", cJSON_CreateString(hex));
    }
  cJSON_ArrayForEach(it, cJSON_GetObjectItem(cat, "measures")) {
    if (strcmp(cJSON_GetObjectItem(it, "id")->valuestring, MEASURE_LED) == 0)
      cJSON_ReplaceItemInObject(it, "owner", cJSON_CreateString(owner));
  }
  char *out = cJSON_Print(cat);
  cJSON_Delete(cat);
  return out;
}

static int post_led_as_kikaku(int port) {
  tc_resp r;
  char hdr[512];
  snprintf(hdr, sizeof(hdr), "Authorization: Bearer " REAL_TOKEN_PREFIX "kikaku\r\n%s", JSON_CT);
  assert_int_equal(tc_request(port, "POST", "/v1/measurements", hdr,
                              "{\"measure_id\":\"" MEASURE_LED "\",\"observed_at\":\"2024-05-01\","
                              "\"value\":20,\"unit\":\"percent\"}",
                              &r),
                   0);
  int status = r.status;
  tc_resp_free(&r);
  return status;
}

/* A SIGHUP that would bring in sample departments is refused and the old catalog stays. */
static void test_sighup_refuses_sample_catalog(void **state) {
  (void)state;
  char path[256];
  snprintf(path, sizeof(path), "%s/it_tokens_catalog_%d.json", KPI_BINARY_DIR, (int)getpid());
  char *text = catalog_text(1, "kankyo");
  assert_int_equal(kpi_it_write_file(path, text), 0);
  free(text);
  char cat_env[300];
  snprintf(cat_env, sizeof(cat_env), "KPI_CATALOG=%s", path);
  const char *env[] = {NO_SAMPLES, cat_env, NULL};
  tc_service svc;
  tc_service_start(&svc, env, 1);
  assert_int_equal(post_led_as_kikaku(svc.port), 403);

  /* The LED measure handed to kikaku, but in a catalog with sample departments. */
  text = catalog_text(0, "kikaku");
  assert_int_equal(kpi_it_write_file(path, text), 0);
  free(text);
  kill(svc.pid, SIGHUP);
  long long deadline = kpi_it_now_ms() + 5000;
  while (kpi_it_now_ms() < deadline && !log_contains(svc.log, "catalog_reload_failed"))
    kpi_it_sleep_ms(50);
  if (!log_contains(svc.log, "catalog_reload_failed") ||
      !log_contains(svc.log, "is a sample department"))
    fail_msg("no catalog_reload_failed naming the sample department; see %s", svc.log);
  assert_int_equal(post_led_as_kikaku(svc.port), 403);

  /* The same change without the sample markers is taken. */
  text = catalog_text(1, "kikaku");
  assert_int_equal(kpi_it_write_file(path, text), 0);
  free(text);
  kill(svc.pid, SIGHUP);
  deadline = kpi_it_now_ms() + 5000;
  int status = 0;
  while (kpi_it_now_ms() < deadline && (status = post_led_as_kikaku(svc.port)) != 202)
    kpi_it_sleep_ms(100);
  assert_int_equal(status, 202);
  tc_service_stop(&svc);
  unlink(path);
}

/* Runs `kpi-admin gen-token DEPT`; fills TOKEN and HASH from its output, returns its exit
 * status and the whole output in OUT. */
static int gen_token(const char *dept, char *token, size_t token_size, char *hash,
                     char *out, size_t out_size) {
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "'%s/tools/kpi-admin' gen-token '%s' 2>/dev/null", KPI_BINARY_DIR,
           dept);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, out_size - 1, p);
  out[n] = '\0';
  int status = pclose(p);
  token[0] = hash[0] = '\0';
  for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
    if (strncmp(line, "kpi_", 4) == 0) snprintf(token, token_size, "%s", line);
    (void)sscanf(line, "\"token_sha256\": \"%64[0-9a-f]\"", hash);
  }
  return status;
}

static void test_gen_token(void **state) {
  (void)state;
  char tok[2][128], hash[2][65], out[4096];
  for (int i = 0; i < 2; i++) {
    int status = gen_token("kikaku", tok[i], sizeof(tok[i]), hash[i], out, sizeof(out));
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* kpi_ + 32 random bytes in unpadded base64url. */
    assert_int_equal(strlen(tok[i]), 4 + 43);
    assert_int_equal(strspn(tok[i] + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789-_"),
                     43);
    assert_int_equal(strlen(hash[i]), 64);
    unsigned char d[32];
    SHA256((const unsigned char *)tok[i], strlen(tok[i]), d);
    char want[65];
    for (int j = 0; j < 32; j++) snprintf(want + 2 * j, 3, "%02x", d[j]);
    assert_string_equal(hash[i], want);
  }
  assert_string_not_equal(tok[0], tok[1]);
  assert_string_not_equal(hash[0], hash[1]);

  /* The printed line, put into a catalog, makes the token authenticate its department. */
  char json[2048];
  snprintf(json, sizeof(json),
           "{\"schema\":\"kpi.catalog/1\",\"plan\":{\"id\":\"p\",\"name\":\"P\"},"
           "\"departments\":[{\"id\":\"kikaku\",\"name\":\"K\",\"token_sha256\":\"%s\","
           "\"mailboxes\":[\"k@city.jp\"]}],\"measures\":[{\"id\":\"m1\",\"goal\":2,"
           "\"program\":\"p\",\"name\":\"n\",\"indicator\":\"i\",\"unit\":\"person\","
           "\"kind\":\"level\",\"direction\":\"increase\",\"baseline\":{\"fy\":\"R4\","
           "\"value\":1},\"target\":{\"fy\":\"R6\",\"value\":5},\"owner\":\"kikaku\"}]}",
           hash[0]);
  char err[512];
  kpi_catalog *cat = kpi_catalog_parse(json, strlen(json), err, sizeof(err));
  if (!cat) fail_msg("%s", err);
  assert_int_equal(kpi_catalog_check_sample(cat, 0, err, sizeof(err)), 0);
  const kpi_department *d = kpi_catalog_authenticate(cat, tok[0], strlen(tok[0]));
  assert_non_null(d);
  assert_string_equal(d->id, "kikaku");
  assert_null(kpi_catalog_authenticate(cat, tok[1], strlen(tok[1])));
  kpi_catalog_free(cat);

  /* Not a department id: usage error, no token. */
  int status = gen_token("a b", tok[0], sizeof(tok[0]), hash[0], out, sizeof(out));
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 2);
  assert_string_equal(tok[0], "");
}

int main(void) {
  kpi_it_init();
  kpi_env_load_file(KPI_SOURCE_DIR "/config/sample-tokens.env");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_services_refuse_sample_catalog),
      cmocka_unit_test(test_sighup_refuses_sample_catalog),
      cmocka_unit_test(test_gen_token),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
