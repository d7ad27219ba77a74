/* test_ingest_arena.c: the cJSON arena of batch items (services/ingest/ingest_arena.h): trees
 * come from it while it is on, what does not fit falls back to malloc and is freed by
 * cJSON_Delete, arena pointers are never passed to free, and turning it on rewinds it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest_arena.h"

static const char small[] = "{\"measure_id\":\"m\",\"value\":1.5,\"unit\":\"percent\"}";

static void test_small_tree_in_arena(void **state) {
  (void)state;
  ingest_arena_use(true);
  cJSON *a = cJSON_Parse(small);
  assert_non_null(a);
  assert_true(ingest_arena_holds(a));
  assert_true(ingest_arena_holds(a->child));
  assert_true(ingest_arena_holds(a->child->string));
  assert_string_equal(cJSON_GetObjectItem(a, "unit")->valuestring, "percent");
  cJSON_Delete(a); /* frees nothing: every node is in the arena */
  /* Turning it on again rewinds it: the next tree starts where the first did. */
  ingest_arena_use(true);
  cJSON *b = cJSON_Parse(small);
  assert_ptr_equal(a, b);
  cJSON_Delete(b);
  ingest_arena_use(false);
}

/* {"note":"xxx…"} with N x's (malloc'd, the caller frees it). */
static char *note_json(size_t n) {
  char *text = malloc(n + 16);
  assert_non_null(text);
  memcpy(text, "{\"note\":\"", 9);
  memset(text + 9, 'x', n);
  memcpy(text + 9 + n, "\"}", 3);
  return text;
}

/* One string larger than the whole arena: malloc'd, freed by cJSON_Delete (the sanitizer
 * build reports a leak or a bad free otherwise). */
static void test_allocation_over_arena(void **state) {
  (void)state;
  size_t n = INGEST_ARENA_SIZE + 100;
  char *text = note_json(n);
  size_t before = ingest_arena_fallbacks();
  ingest_arena_use(true);
  cJSON *t = cJSON_Parse(text);
  ingest_arena_use(false);
  assert_non_null(t);
  assert_true(ingest_arena_holds(t));
  assert_false(ingest_arena_holds(t->child->valuestring));
  assert_int_equal(strlen(t->child->valuestring), n);
  assert_true(ingest_arena_fallbacks() > before);
  cJSON_Delete(t);
  free(text);
}

/* A tree that outgrows the arena half-way: its first nodes in the arena, the rest malloc'd. */
static void test_tree_over_arena(void **state) {
  (void)state;
  size_t count = INGEST_ARENA_SIZE / 16, cap = count * 3 + 16, len = 0;
  char *text = malloc(cap);
  assert_non_null(text);
  text[len++] = '[';
  for (size_t i = 0; i < count; i++)
    len += (size_t)snprintf(text + len, cap - len, "%s%zu", i ? "," : "", i % 10);
  text[len++] = ']';
  text[len] = '\0';
  ingest_arena_use(true);
  cJSON *t = cJSON_Parse(text);
  ingest_arena_use(false);
  assert_non_null(t);
  assert_int_equal(cJSON_GetArraySize(t), (int)count);
  assert_true(ingest_arena_holds(t->child));
  const cJSON *last = t->child;
  while (last->next) last = last->next;
  assert_false(ingest_arena_holds(last));
  assert_int_equal(last->valueint, (int)((count - 1) % 10));
  cJSON_Delete(t);
  free(text);
}

/* Off (the default, and on every other thread): plain malloc, whatever was allocated before. */
static void test_off_is_malloc(void **state) {
  (void)state;
  cJSON *t = cJSON_Parse(small);
  assert_non_null(t);
  assert_false(ingest_arena_holds(t));
  char *s = cJSON_PrintUnformatted(t); /* cJSON prints without realloc under custom hooks */
  assert_string_equal(s, small);
  cJSON_free(s);
  cJSON_Delete(t);
}

/* ingest_arena_drop skips cJSON_Delete only for a tree wholly in the arena; a tree with any
 * malloc'd node, or one parsed with the arena off, is freed (the sanitizer build reports a
 * leak otherwise). */
static void test_drop(void **state) {
  (void)state;
  ingest_arena_drop(NULL, ingest_arena_fallbacks());
  /* Wholly in the arena: nothing to free, and the tree is left as it was. */
  ingest_arena_use(true);
  size_t mark = ingest_arena_fallbacks();
  cJSON *a = cJSON_Parse(small);
  assert_non_null(a);
  ingest_arena_drop(a, mark);
  assert_string_equal(cJSON_GetObjectItem(a, "unit")->valuestring, "percent");
  ingest_arena_use(false);
  /* A value larger than the arena: malloc'd, so the tree is deleted. */
  size_t n = INGEST_ARENA_SIZE + 100;
  char *text = note_json(n);
  ingest_arena_use(true);
  mark = ingest_arena_fallbacks();
  cJSON *big = cJSON_Parse(text);
  assert_non_null(big);
  assert_true(ingest_arena_fallbacks() > mark);
  ingest_arena_drop(big, mark);
  ingest_arena_use(false);
  free(text);
  /* Parsed with the arena off: every node is malloc'd. */
  mark = ingest_arena_fallbacks();
  cJSON *off = cJSON_Parse(small);
  assert_non_null(off);
  assert_false(ingest_arena_holds(off));
  ingest_arena_drop(off, mark);
}

int main(void) {
  ingest_arena_install();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_tree_in_arena),
      cmocka_unit_test(test_allocation_over_arena),
      cmocka_unit_test(test_tree_over_arena),
      cmocka_unit_test(test_off_is_malloc),
      cmocka_unit_test(test_drop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
