/* report_tmpl.c: the template renderer of the report pages (see report_tmpl.h). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report_tmpl.h"

typedef enum { V_TEXT, V_RAW, V_BOOL, V_LIST } v_type;

typedef struct entry {
  const char *name;
  v_type type;
  const char *s;
  bool on;
  report_view **items;
  size_t n, cap;
} entry;

/* Arena block: every allocation of a page lives until report_view_free. */
typedef struct block {
  struct block *next;
  size_t used, cap;
  max_align_t data[];
} block;

struct report_view {
  report_view *root;
  const report_view *parent;
  entry *e;
  size_t n, cap;
  /* root only */
  block *blocks;
  int oom;
};

#define BLOCK_MIN (16 * 1024)

static void *arena_alloc(report_view *root, size_t n) {
  if (root->oom) return NULL;
  n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
  block *b = root->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > BLOCK_MIN ? n : BLOCK_MIN;
    b = malloc(sizeof(block) + cap);
    if (!b) {
      root->oom = 1;
      return NULL;
    }
    b->used = 0;
    b->cap = cap;
    b->next = root->blocks;
    root->blocks = b;
  }
  void *p = (char *)b->data + b->used;
  b->used += n;
  return p;
}

static const char *arena_strdup(report_view *root, const char *s) {
  size_t n = strlen(s);
  char *p = arena_alloc(root, n + 1);
  if (p) memcpy(p, s, n + 1);
  return p;
}

report_view *report_view_new(void) {
  report_view *v = calloc(1, sizeof(*v));
  if (v) v->root = v;
  return v;
}

void report_view_free(report_view *root) {
  if (!root) return;
  block *b = root->blocks;
  while (b) {
    block *next = b->next;
    free(b);
    b = next;
  }
  free(root);
}

/* The entry NAME of V, created when missing; NULL when out of memory. */
static entry *slot(report_view *v, const char *name) {
  for (size_t i = 0; i < v->n; i++)
    if (strcmp(v->e[i].name, name) == 0) return &v->e[i];
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    entry *e = arena_alloc(v->root, cap * sizeof(*e));
    if (!e) return NULL;
    if (v->n) memcpy(e, v->e, v->n * sizeof(*e));
    v->e = e;
    v->cap = cap;
  }
  entry *e = &v->e[v->n];
  memset(e, 0, sizeof(*e));
  e->name = arena_strdup(v->root, name);
  if (!e->name) return NULL;
  v->n++;
  return e;
}

static void set_str(report_view *v, const char *name, const char *s, v_type type) {
  entry *e = slot(v, name);
  if (!e) return;
  const char *copy = arena_strdup(v->root, s ? s : "");
  if (!copy) return;
  e->type = type;
  e->s = copy;
}

void report_set(report_view *v, const char *name, const char *text) {
  set_str(v, name, text, V_TEXT);
}

void report_setf(report_view *v, const char *name, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0) {
    v->root->oom = 1;
    return;
  }
  if ((size_t)n < sizeof(small)) {
    set_str(v, name, small, V_TEXT);
    return;
  }
  char *big = arena_alloc(v->root, (size_t)n + 1);
  if (!big) return;
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  entry *e = slot(v, name);
  if (!e) return;
  e->type = V_TEXT;
  e->s = big;
}

void report_set_raw(report_view *v, const char *name, const char *markup) {
  set_str(v, name, markup, V_RAW);
}

void report_set_bool(report_view *v, const char *name, bool on) {
  entry *e = slot(v, name);
  if (!e) return;
  e->type = V_BOOL;
  e->on = on;
}

void report_set_list(report_view *v, const char *name) {
  entry *e = slot(v, name);
  if (e && e->type != V_LIST) {
    e->type = V_LIST;
    e->n = 0;
  }
}

report_view *report_add(report_view *v, const char *name) {
  report_set_list(v, name);
  entry *e = slot(v, name);
  if (!e) return NULL;
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 8;
    report_view **items = arena_alloc(v->root, cap * sizeof(*items));
    if (!items) return NULL;
    if (e->n) memcpy(items, e->items, e->n * sizeof(*items));
    e->items = items;
    e->cap = cap;
  }
  report_view *c = arena_alloc(v->root, sizeof(*c));
  if (!c) return NULL;
  memset(c, 0, sizeof(*c));
  c->root = v->root;
  c->parent = v;
  e->items[e->n++] = c;
  return c;
}

void report_escape(kpi_buf *out, const char *s, size_t n) {
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    const char *rep;
    switch (s[i]) {
    case '&': rep = "&amp;"; break;
    case '<': rep = "&lt;"; break;
    case '>': rep = "&gt;"; break;
    case '"': rep = "&quot;"; break;
    case '\'': rep = "&#39;"; break;
    default: continue;
    }
    kpi_buf_add(out, s + run, i - run);
    kpi_buf_adds(out, rep);
    run = i + 1;
  }
  kpi_buf_add(out, s + run, n - run);
}

static const entry *lookup(const report_view *v, const char *name, size_t len) {
  for (; v; v = v->parent)
    for (size_t i = 0; i < v->n; i++)
      if (strlen(v->e[i].name) == len && memcmp(v->e[i].name, name, len) == 0) return &v->e[i];
  return NULL;
}

typedef struct {
  kpi_buf *out;
  char *err;
  size_t err_size;
  int depth;
} rctx;

static int fail(rctx *c, const char *fmt, const char *name, size_t len) {
  snprintf(c->err, c->err_size, fmt, (int)len, name);
  return -1;
}

/* Trims blanks around the tag's name T[0..N). */
static void trim(const char **t, size_t *n) {
  while (*n && (**t == ' ')) (*t)++, (*n)--;
  while (*n && (*t)[*n - 1] == ' ') (*n)--;
}

/* Finds the {{/name}} closing the section whose body starts at P, skipping nested sections of
 * the same name. Returns its position, or NULL. */
static const char *find_close(const char *p, const char *end, const char *name, size_t len) {
  int level = 1;
  while (p < end) {
    const char *o = memmem(p, (size_t)(end - p), "{{", 2);
    if (!o) return NULL;
    const char *t = o + 2;
    const char *c = memmem(t, (size_t)(end - t), "}}", 2);
    if (!c) return NULL;
    if (*t == '#' || *t == '^' || *t == '/') {
      const char *nm = t + 1;
      size_t nl = (size_t)(c - nm);
      trim(&nm, &nl);
      if (nl == len && memcmp(nm, name, len) == 0) {
        level += *t == '/' ? -1 : 1;
        if (level == 0) return o;
      }
    }
    p = c + 2;
  }
  return NULL;
}

static int render(rctx *c, const char *p, const char *end, const report_view *v) {
  if (++c->depth > 32) return fail(c, "sections nested too deep at %.*s", "", 0);
  while (p < end) {
    const char *o = memmem(p, (size_t)(end - p), "{{", 2);
    if (!o) {
      kpi_buf_add(c->out, p, (size_t)(end - p));
      break;
    }
    kpi_buf_add(c->out, p, (size_t)(o - p));
    const char *t = o + 2;
    bool raw = t < end && *t == '{';
    const char *close = memmem(t, (size_t)(end - t), raw ? "}}}" : "}}", raw ? 3 : 2);
    if (!close) return fail(c, "unclosed tag %.*s", o, (size_t)(end - o) > 20 ? 20 : (size_t)(end - o));
    const char *after = close + (raw ? 3 : 2);
    char kind = raw ? '{' : *t;
    const char *name = t + (kind == '#' || kind == '^' || kind == '!' || kind == '{' || kind == '/');
    size_t len = (size_t)(close - name);
    trim(&name, &len);
    if (kind == '!') {
      p = after;
      continue;
    }
    if (kind == '/') return fail(c, "unopened section end %.*s", name, len);
    const entry *e = lookup(v, name, len);
    if (!e) return fail(c, "no value named %.*s", name, len);
    if (kind == '#' || kind == '^') {
      const char *body_end = find_close(after, end, name, len);
      if (!body_end) return fail(c, "section %.*s not closed", name, len);
      const char *next = memmem(body_end, (size_t)(end - body_end), "}}", 2) + 2;
      bool truthy = e->type == V_LIST ? e->n > 0 : e->type == V_BOOL ? e->on : e->s[0] != 0;
      if (kind == '^') {
        if (!truthy && render(c, after, body_end, v)) return -1;
      } else if (e->type == V_LIST) {
        for (size_t i = 0; i < e->n; i++)
          if (render(c, after, body_end, e->items[i])) return -1;
      } else if (truthy && render(c, after, body_end, v)) {
        return -1;
      }
      p = next;
      continue;
    }
    if (e->type == V_LIST || e->type == V_BOOL)
      return fail(c, "%.*s is a list or flag, not text", name, len);
    if (raw && e->type == V_RAW) kpi_buf_adds(c->out, e->s);
    else report_escape(c->out, e->s, strlen(e->s));
    p = after;
  }
  c->depth--;
  return 0;
}

int report_render(const char *tmpl, size_t len, const report_view *v, kpi_buf *out, char *err,
                  size_t err_size) {
  char dummy[1];
  rctx c = {out, err ? err : dummy, err ? err_size : sizeof(dummy), 0};
  if (v->root->oom) return -2;
  if (render(&c, tmpl, tmpl + len, v)) return -1;
  return out->oom ? -2 : 0;
}
