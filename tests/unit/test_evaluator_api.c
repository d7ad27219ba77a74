/* test_evaluator_api.c: the audit read API's pure parts (services/evaluator/ev_api.c): the
 * path split, query values, the history page and the operator token check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/sha.h>
#include <string.h>

#include "evaluator.h"

static void test_audit_path(void **state) {
  (void)state;
  char id[KPI_ID_MAX + 1];
  ev_api_audit w;
  assert_int_equal(ev_api_audit_path("/v1/measures/g2-a/history", id, &w), 0);
  assert_string_equal(id, "g2-a");
  assert_int_equal(w, EV_API_HISTORY);
  assert_int_equal(ev_api_audit_path("/v1/measures/x/notifications", id, &w), 0);
  assert_int_equal(w, EV_API_NOTIFICATIONS);
  static const char *const bad[] = {"/v1/measures/", "/v1/measures//history",
                                    "/v1/measures/x/history/", "/v1/measures/x/y/history",
                                    "/v1/measures/x", "/v1/measures/x/other", "/v1/measure/x/history"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(ev_api_audit_path(bad[i], id, &w), -1);
}

static void test_query_value(void **state) {
  (void)state;
  char v[16];
  assert_int_equal(ev_api_query_value("a=1&limit=20", "limit", v, sizeof(v)), 1);
  assert_string_equal(v, "20");
  assert_int_equal(ev_api_query_value("limits=3&limit=4", "limit", v, sizeof(v)), 1);
  assert_string_equal(v, "4");
  assert_int_equal(ev_api_query_value("x=%2B09%3a00+y", "x", v, sizeof(v)), 1);
  assert_string_equal(v, "+09:00 y");
  assert_int_equal(ev_api_query_value("x", "x", v, sizeof(v)), 1);
  assert_string_equal(v, "");
  assert_int_equal(ev_api_query_value("", "x", v, sizeof(v)), 0);
  assert_int_equal(ev_api_query_value(NULL, "x", v, sizeof(v)), 0);
  assert_int_equal(ev_api_query_value("x=%2", "x", v, sizeof(v)), -1);
  assert_int_equal(ev_api_query_value("x=%zz", "x", v, sizeof(v)), -1);
  assert_int_equal(ev_api_query_value("x=%00", "x", v, sizeof(v)), -1);
  assert_int_equal(ev_api_query_value("x=0123456789abcdef", "x", v, sizeof(v)), -1);
}

static void test_history_page(void **state) {
  (void)state;
  ev_api_page p;
  char err[96];
  assert_int_equal(ev_api_history_page("", &p, err, sizeof(err)), 0);
  assert_int_equal(p.limit, EV_API_HISTORY_LIMIT);
  assert_string_equal(p.after, "");
  assert_int_equal(ev_api_history_page("limit=10000&after=2024-05-01T12:04:05.123%2B09:00&"
                                       "after_event_id=0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
                                       &p, err, sizeof(err)),
                   0);
  assert_int_equal(p.limit, 10000);
  assert_string_equal(p.after, "2024-05-01T03:04:05.123Z");
  assert_string_equal(p.after_event_id, "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D");
  /* The same cursor pasted unencoded: its '+' arrives as a space. */
  assert_int_equal(ev_api_history_page("after=2024-05-01T12:04:05.123+09:00", &p, err,
                                       sizeof(err)), 0);
  assert_string_equal(p.after, "2024-05-01T03:04:05.123Z");
  /* An event id without its instant is ignored. */
  assert_int_equal(ev_api_history_page("after_event_id=0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", &p,
                                       err, sizeof(err)),
                   0);
  assert_string_equal(p.after_event_id, "");
  static const char *const bad[] = {"limit=0", "limit=10001", "limit=", "limit=1x", "limit=-1",
                                    "after=2024-05-01", "after=yesterday", "after=%zz",
                                    "after=2024-05-01T00:00:00Z&after_event_id=nope"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    assert_int_equal(ev_api_history_page(bad[i], &p, err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
  }
}

static void test_operator(void **state) {
  (void)state;
  ev_config cfg;
  memset(&cfg, 0, sizeof(cfg));
  /* No operator token configured: no header is the public view, any header is refused. */
  assert_int_equal(ev_api_operator(NULL, &cfg), 0);
  assert_int_equal(ev_api_operator("Bearer anything", &cfg), -1);
  SHA256((const unsigned char *)"op-token", 8, cfg.operator_sha256);
  cfg.operator_set = true;
  assert_int_equal(ev_api_operator("Bearer op-token", &cfg), 1);
  assert_int_equal(ev_api_operator("bearer  op-token", &cfg), 1);
  assert_int_equal(ev_api_operator("Bearer op-token2", &cfg), -1);
  assert_int_equal(ev_api_operator("Basic b3A6dG9rZW4=", &cfg), -1);
  assert_int_equal(ev_api_operator(NULL, &cfg), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_audit_path),
      cmocka_unit_test(test_query_value),
      cmocka_unit_test(test_history_page),
      cmocka_unit_test(test_operator),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
