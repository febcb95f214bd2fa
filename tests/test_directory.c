/* SPDX-License-Identifier: MIT */
/*
 * This file contains the unit tests of the named-object directory
 * (src/directory.c): bind / lookup / unbind and their errors, foreach,
 * a full table and tombstone reuse, concurrent use by several processes
 * and threads, and recovery after a writer died in the middle of an update.
 */
#include "internal.h"
#include "testutil.h"

#include <pthread.h>
#include <xxhash.h>

static posh_heap_t *mk(uint32_t max_names) {
  posh_heap_options_t o = {.capacity = 16ull << 20, .max_names = max_names};
  posh_heap_t *h = NULL;
  int r = posh_heap_create(NULL, &o, &h);
  if (r)
    fprintf(stderr, "create: %s\n", posh_err_name(r));
  return h;
}

static int count_visit(const char *name, posh_off_t off, uint32_t tag,
                       void *arg) {
  (void)name;
  (void)off;
  (void)tag;
  (*(size_t *)arg)++;
  return 0;
}

static size_t foreach_count(posh_heap_t *h) {
  size_t n = 0;
  assert_int_equal(posh_name_foreach(h, count_visit, &n), 0);
  return n;
}

static uint32_t stats_names(posh_heap_t *h) {
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  return st.names;
}

/* ------------------------------------------------------------------------
 * Basics.
 * ---------------------------------------------------------------------- */

/* A bound name is found with its offset and tag (tag_out optional), an
 * unbound one is not, and it can be bound again afterwards. */
static void test_bind_lookup_unbind(void **state) {
  (void)state;
  posh_heap_t *h = mk(0);
  assert_non_null(h);
  posh_off_t off = posh_alloc_off(h, 64), got = {0};
  uint32_t tag = 0;
  assert_int_equal(posh_name_bind(h, "thing", off, 0xabcd), 0);
  assert_int_equal(posh_name_lookup(h, "thing", &got, &tag), 0);
  assert_int_equal(got.v, off.v);
  assert_int_equal(tag, 0xabcd);
  got.v = 0;
  assert_int_equal(posh_name_lookup(h, "thing", &got, NULL), 0);
  assert_int_equal(got.v, off.v);
  assert_int_equal(stats_names(h), 1);
  assert_int_equal(posh_name_unbind(h, "thing", POSH_OFF_NULL), 0);
  assert_int_equal(posh_name_lookup(h, "thing", &got, &tag), POSH_ENOENT);
  assert_int_equal(stats_names(h), 0);
  assert_int_equal(posh_name_bind(h, "thing", off, 7), 0);
  assert_int_equal(posh_name_lookup(h, "thing", &got, &tag), 0);
  assert_int_equal(tag, 7);
  /* Names are bytes: any non-NUL character goes, case matters. */
  static const char *odd[] = {
      "a/b/c", "with space", "caf\xc3\xa9", "Thing", "thing ", "\x01\x7f", "."};
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
    assert_int_equal(
        posh_name_bind(h, odd[i], (posh_off_t){off.v + i}, (uint32_t)i), 0);
  for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
    assert_int_equal(posh_name_lookup(h, odd[i], &got, &tag), 0);
    assert_int_equal(got.v, off.v + i);
    assert_int_equal(tag, i);
  }
  assert_int_equal(stats_names(h), 1 + sizeof odd / sizeof odd[0]);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Binding a bound name is EEXIST and changes nothing. */
static void test_bind_duplicate(void **state) {
  (void)state;
  posh_heap_t *h = mk(0);
  assert_non_null(h);
  assert_int_equal(posh_name_bind(h, "dup", (posh_off_t){4096}, 1), 0);
  assert_int_equal(posh_name_bind(h, "dup", (posh_off_t){8192}, 2),
                   POSH_EEXIST);
  assert_int_equal(posh_name_bind(h, "dup", (posh_off_t){4096}, 1),
                   POSH_EEXIST);
  posh_off_t got;
  uint32_t tag;
  assert_int_equal(posh_name_lookup(h, "dup", &got, &tag), 0);
  assert_int_equal(got.v, 4096);
  assert_int_equal(tag, 1);
  assert_int_equal(stats_names(h), 1);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Looking up or unbinding a name that is not bound is ENOENT. */
static void test_missing(void **state) {
  (void)state;
  posh_heap_t *h = mk(0);
  assert_non_null(h);
  posh_off_t got = {123};
  assert_int_equal(posh_name_lookup(h, "nothing", &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_name_unbind(h, "nothing", POSH_OFF_NULL), POSH_ENOENT);
  assert_int_equal(posh_name_unbind(h, "nothing", (posh_off_t){4096}),
                   POSH_ENOENT);
  assert_int_equal(posh_name_bind(h, "something", (posh_off_t){4096}, 0), 0);
  assert_int_equal(posh_name_lookup(h, "somethin", &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_name_lookup(h, "something2", &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Names of 1..POSH_NAME_MAX bytes work; longer ones are ENAMETOOLONG,
 * empty and NULL names and NULL arguments EINVAL, in every call. */
static void test_names_and_args(void **state) {
  (void)state;
  posh_heap_t *h = mk(0);
  assert_non_null(h);
  char name[POSH_NAME_MAX + 2];
  memset(name, 'x', sizeof name);
  name[POSH_NAME_MAX] = '\0';
  posh_off_t off = {4096}, got;
  assert_int_equal(posh_name_bind(h, name, off, 1), 0);
  assert_int_equal(posh_name_lookup(h, name, &got, NULL), 0);
  assert_int_equal(got.v, off.v);
  assert_int_equal(posh_name_bind(h, "x", off, 1), 0);
  name[POSH_NAME_MAX] = 'x';
  name[POSH_NAME_MAX + 1] = '\0';
  assert_int_equal(posh_name_bind(h, name, off, 1), POSH_ENAMETOOLONG);
  assert_int_equal(posh_name_lookup(h, name, &got, NULL), POSH_ENAMETOOLONG);
  assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), POSH_ENAMETOOLONG);
  char huge[1000];
  memset(huge, 'y', sizeof huge - 1);
  huge[sizeof huge - 1] = '\0';
  assert_int_equal(posh_name_bind(h, huge, off, 1), POSH_ENAMETOOLONG);

  assert_int_equal(posh_name_bind(h, "", off, 1), POSH_EINVAL);
  assert_int_equal(posh_name_lookup(h, "", &got, NULL), POSH_EINVAL);
  assert_int_equal(posh_name_unbind(h, "", POSH_OFF_NULL), POSH_EINVAL);
  assert_int_equal(posh_name_bind(h, NULL, off, 1), POSH_EINVAL);
  assert_int_equal(posh_name_lookup(h, NULL, &got, NULL), POSH_EINVAL);
  assert_int_equal(posh_name_unbind(h, NULL, POSH_OFF_NULL), POSH_EINVAL);
  assert_int_equal(posh_name_bind(NULL, "a", off, 1), POSH_EINVAL);
  assert_int_equal(posh_name_lookup(NULL, "x", &got, NULL), POSH_EINVAL);
  assert_int_equal(posh_name_lookup(h, "x", NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_name_unbind(NULL, "x", POSH_OFF_NULL), POSH_EINVAL);
  assert_int_equal(posh_name_foreach(NULL, count_visit, NULL), POSH_EINVAL);
  assert_int_equal(posh_name_foreach(h, NULL, NULL), POSH_EINVAL);
  assert_int_equal(stats_names(h), 2);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* The null offset is EINVAL, offsets at or past the capacity ERANGE; the
 * last byte of the heap is a valid offset. */
static void test_bind_offsets(void **state) {
  (void)state;
  posh_heap_t *h = mk(0);
  assert_non_null(h);
  uint64_t cap = posh_heap_capacity(h);
  assert_int_equal(posh_name_bind(h, "a", POSH_OFF_NULL, 1), POSH_EINVAL);
  assert_int_equal(posh_name_bind(h, "a", (posh_off_t){cap}, 1), POSH_ERANGE);
  assert_int_equal(posh_name_bind(h, "a", (posh_off_t){cap + 1}, 1),
                   POSH_ERANGE);
  assert_int_equal(posh_name_bind(h, "a", (posh_off_t){UINT64_MAX}, 1),
                   POSH_ERANGE);
  assert_int_equal(stats_names(h), 0);
  assert_int_equal(posh_name_bind(h, "a", (posh_off_t){cap - 1}, 1), 0);
  assert_int_equal(posh_name_bind(h, "b", (posh_off_t){1}, 1), 0);
  posh_off_t got;
  assert_int_equal(posh_name_lookup(h, "a", &got, NULL), 0);
  assert_int_equal(got.v, cap - 1);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Unbind with an expected offset removes the name only when it matches
 * (EBUSY otherwise, name still bound). */
static void test_unbind_expect(void **state) {
  (void)state;
  posh_heap_t *h = mk(0);
  assert_non_null(h);
  assert_int_equal(posh_name_bind(h, "n", (posh_off_t){4096}, 5), 0);
  assert_int_equal(posh_name_unbind(h, "n", (posh_off_t){8192}), POSH_EBUSY);
  assert_int_equal(posh_name_unbind(h, "n", (posh_off_t){4095}), POSH_EBUSY);
  posh_off_t got;
  uint32_t tag;
  assert_int_equal(posh_name_lookup(h, "n", &got, &tag), 0);
  assert_int_equal(got.v, 4096);
  assert_int_equal(tag, 5);
  assert_int_equal(posh_name_unbind(h, "n", (posh_off_t){4096}), 0);
  assert_int_equal(posh_name_lookup(h, "n", &got, &tag), POSH_ENOENT);
  assert_int_equal(posh_name_unbind(h, "n", (posh_off_t){4096}), POSH_ENOENT);
  assert_int_equal(stats_names(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct seen {
  unsigned char hit[200];
  int bad;
  int stop_after;
  int calls;
};

static int record_visit(const char *name, posh_off_t off, uint32_t tag,
                        void *arg) {
  struct seen *s = arg;
  unsigned i;
  s->calls++;
  if (sscanf(name, "obj%u", &i) != 1 || i >= 200 || off.v != 4096u * (i + 1) ||
      tag != i * 3 || s->hit[i])
    s->bad++;
  else
    s->hit[i] = 1;
  if (s->stop_after && s->calls == s->stop_after)
    return 42;
  return 0;
}

/* foreach visits every bound name exactly once with its offset and tag,
 * skips unbound ones, and stops with the visitor's non-zero return. */
static void test_foreach(void **state) {
  (void)state;
  posh_heap_t *h = mk(512);
  assert_non_null(h);
  char name[32];
  for (unsigned i = 0; i < 200; i++) {
    snprintf(name, sizeof name, "obj%u", i);
    assert_int_equal(
        posh_name_bind(h, name, (posh_off_t){4096u * (i + 1)}, i * 3), 0);
  }
  for (unsigned i = 0; i < 200; i += 5) {
    snprintf(name, sizeof name, "obj%u", i);
    assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), 0);
  }
  struct seen s;
  memset(&s, 0, sizeof s);
  assert_int_equal(posh_name_foreach(h, record_visit, &s), 0);
  assert_int_equal(s.bad, 0);
  assert_int_equal(s.calls, 160);
  for (unsigned i = 0; i < 200; i++)
    assert_int_equal(s.hit[i], i % 5 != 0);
  memset(&s, 0, sizeof s);
  s.stop_after = 10;
  assert_int_equal(posh_name_foreach(h, record_visit, &s), 42);
  assert_int_equal(s.calls, 10);
  assert_int_equal(stats_names(h), 160);
  posh_heap_t *e = mk(0);
  assert_non_null(e);
  assert_int_equal(foreach_count(e), 0);
  assert_int_equal(posh_heap_detach(e), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * A full table, tombstones and probe chains.
 * ---------------------------------------------------------------------- */

/* A table of max_names entries takes exactly that many names, then
 * ENOSPC; unbound entries are reused, also after long bind/unbind churn
 * that leaves no empty entry at all. */
static void test_full_and_tombstones(void **state) {
  (void)state;
  enum { N = 64 };
  posh_heap_t *h = mk(N);
  assert_non_null(h);
  char name[32];
  posh_off_t got;
  for (unsigned i = 0; i < N; i++) {
    snprintf(name, sizeof name, "n%u", i);
    assert_int_equal(posh_name_bind(h, name, (posh_off_t){64u * (i + 1)}, i),
                     0);
  }
  assert_int_equal(posh_name_bind(h, "one-more", (posh_off_t){64}, 0),
                   POSH_ENOSPC);
  assert_int_equal(posh_name_bind(h, "n5", (posh_off_t){64}, 0), POSH_EEXIST);
  assert_int_equal(stats_names(h), N);
  assert_int_equal(posh_name_lookup(h, "absent", &got, NULL), POSH_ENOENT);
  for (unsigned i = 0; i < N; i++) {
    snprintf(name, sizeof name, "n%u", i);
    assert_int_equal(posh_name_lookup(h, name, &got, NULL), 0);
    assert_int_equal(got.v, 64u * (i + 1));
  }
  for (unsigned i = 0; i < 10; i++) {
    snprintf(name, sizeof name, "n%u", i * 6);
    assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), 0);
  }
  for (unsigned i = 0; i < 10; i++) {
    snprintf(name, sizeof name, "new%u", i);
    assert_int_equal(posh_name_bind(h, name, (posh_off_t){128}, i), 0);
  }
  assert_int_equal(posh_name_bind(h, "one-more", (posh_off_t){64}, 0),
                   POSH_ENOSPC);
  assert_int_equal(stats_names(h), N);
  assert_int_equal(foreach_count(h), N);
  assert_int_equal(tu_check(h), 0);

  /* Empty it, then churn through many distinct names. */
  for (unsigned i = 0; i < N; i++) {
    snprintf(name, sizeof name, "n%u", i);
    int r = posh_name_unbind(h, name, POSH_OFF_NULL);
    assert_true(r == 0 || (r == POSH_ENOENT && i % 6 == 0 && i / 6 < 10));
  }
  for (unsigned i = 0; i < 10; i++) {
    snprintf(name, sizeof name, "new%u", i);
    assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), 0);
  }
  assert_int_equal(stats_names(h), 0);
  for (unsigned i = 0; i < 3000; i++) {
    snprintf(name, sizeof name, "churn%u", i);
    assert_int_equal(posh_name_bind(h, name, (posh_off_t){i + 1}, i), 0);
    if (i >= 20) { /* keep 20 bound at any time */
      snprintf(name, sizeof name, "churn%u", i - 20);
      assert_int_equal(posh_name_unbind(h, name, (posh_off_t){i - 19}), 0);
    }
  }
  for (unsigned i = 0; i < 3000; i++) {
    snprintf(name, sizeof name, "churn%u", i);
    int r = posh_name_lookup(h, name, &got, NULL);
    if (i >= 2980) {
      assert_int_equal(r, 0);
      assert_int_equal(got.v, i + 1);
    } else {
      assert_int_equal(r, POSH_ENOENT);
    }
  }
  assert_int_equal(stats_names(h), 20);
  assert_int_equal(foreach_count(h), 20);
  /* A miss probes only as far as the longest probe any name of its home
   * ever needed, not through every tombstone churn left (before the bound,
   * all 44 free entries were tombstones and a miss probed the whole
   * table). */
  uint32_t tomb = 0, worst = 0;
  for (uint32_t i = 0; i < N; i++) {
    tomb += h->dir[i].state == POSH_DIRENT_TOMBSTONE;
    uint32_t b = posh_atomic32_load_relaxed(&h->dir[i].xprobe_max);
    worst = b > worst ? b : worst;
  }
  fprintf(stderr, "      after churn: %u tombstones, longest probe bound %u of %u\n",
          tomb, worst, N);
  assert_int_equal(tomb, h->hdr->dir_tombstones);
  assert_true(worst < N / 2);
  assert_int_equal(tu_check(h), 0);
  for (unsigned i = 2980; i < 3000; i++) { /* the last one gone: reset */
    snprintf(name, sizeof name, "churn%u", i);
    assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), 0);
  }
  assert_int_equal(h->hdr->dir_tombstones, 0);
  for (uint32_t i = 0; i < N; i++) {
    assert_int_equal(h->dir[i].state, POSH_DIRENT_EMPTY);
    assert_int_equal(posh_atomic32_load_relaxed(&h->dir[i].xprobe_max), 0);
  }
  assert_int_equal(stats_names(h), 0);
  for (unsigned i = 0; i < 3000; i += 7) {
    snprintf(name, sizeof name, "churn%u", i);
    assert_int_equal(posh_name_lookup(h, name, &got, NULL), POSH_ENOENT);
  }
  assert_int_equal(tu_check(h), 0);

  /* The smallest table. */
  posh_heap_t *one = mk(1);
  assert_non_null(one);
  assert_int_equal(posh_name_bind(one, "a", (posh_off_t){64}, 0), 0);
  assert_int_equal(posh_name_bind(one, "b", (posh_off_t){64}, 0), POSH_ENOSPC);
  assert_int_equal(posh_name_lookup(one, "b", &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_name_unbind(one, "a", POSH_OFF_NULL), 0);
  assert_int_equal(posh_name_bind(one, "b", (posh_off_t){64}, 0), 0);
  assert_int_equal(posh_name_lookup(one, "a", &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_heap_detach(one), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* In a small table where every name shares probe chains, names behind
 * unbound entries are still found, and re-binding such a name is EEXIST
 * rather than a second copy in an earlier free entry. */
static void test_probe_chains(void **state) {
  (void)state;
  enum { N = 8 };
  posh_heap_t *h = mk(N);
  assert_non_null(h);
  char name[16];
  posh_off_t got;
  for (unsigned i = 0; i < N; i++) {
    snprintf(name, sizeof name, "p%u", i);
    assert_int_equal(posh_name_bind(h, name, (posh_off_t){64u * (i + 1)}, i),
                     0);
  }
  for (unsigned keep = 0; keep < N; keep++) {
    /* Unbind everything but `keep`, check it, then restore the table. */
    for (unsigned i = 0; i < N; i++) {
      if (i == keep)
        continue;
      snprintf(name, sizeof name, "p%u", i);
      assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), 0);
    }
    snprintf(name, sizeof name, "p%u", keep);
    assert_int_equal(posh_name_lookup(h, name, &got, NULL), 0);
    assert_int_equal(got.v, 64u * (keep + 1));
    assert_int_equal(posh_name_bind(h, name, (posh_off_t){4096}, 0),
                     POSH_EEXIST);
    assert_int_equal(stats_names(h), 1);
    assert_int_equal(posh_name_unbind(h, name, POSH_OFF_NULL), 0);
    assert_int_equal(posh_name_lookup(h, name, &got, NULL), POSH_ENOENT);
    for (unsigned i = 0; i < N; i++) {
      snprintf(name, sizeof name, "p%u", i);
      assert_int_equal(posh_name_bind(h, name, (posh_off_t){64u * (i + 1)}, i),
                       0);
    }
    assert_int_equal(stats_names(h), N);
  }
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_heap_check reports directory entries with a wrong hash, an offset
 * out of range or an unknown state, and passes again once repaired. */
static void test_check_detects_directory_damage(void **state) {
  (void)state;
  posh_heap_t *h = mk(16);
  assert_non_null(h);
  assert_int_equal(posh_name_bind(h, "entry", (posh_off_t){4096}, 1), 0);
  assert_int_equal(tu_check(h), 0);
  int i = -1;
  for (uint32_t k = 0; k < h->hdr->max_names; k++)
    if (h->dir[k].state == POSH_DIRENT_LIVE)
      i = (int)k;
  assert_true(i >= 0);
  posh__dirent_t *e = &h->dir[i];
  char report[512];
  e->hash ^= 1;
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  assert_non_null(strstr(report, "directory"));
  e->hash ^= 1;
  e->off = posh_heap_capacity(h);
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  e->off = 4096;
  e->state = 7;
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  e->state = POSH_DIRENT_LIVE;
  assert_int_equal(tu_check(h), 0);
  posh_off_t got;
  assert_int_equal(posh_name_lookup(h, "entry", &got, NULL), 0);
  assert_int_equal(got.v, 4096);
  /* A name bound one past its home (another name of the same home holds
   * it), with that home's probe bound damaged: the name is hidden, the
   * check reports it, and the repair after a writer's death raises the
   * bound again. */
  uint32_t home = (uint32_t)(e->hash % 16);
  assert_int_equal((uint32_t)i, home); /* alone in the table: at its home */
  char twin[32];
  for (unsigned t = 0;; t++) {
    snprintf(twin, sizeof twin, "twin%u", t);
    if (XXH3_64bits(twin, strlen(twin)) % 16 == home)
      break;
  }
  assert_int_equal(posh_name_bind(h, twin, (posh_off_t){8192}, 2), 0);
  posh__dirent_t *te = &h->dir[(home + 1) % 16];
  assert_int_equal(te->state, POSH_DIRENT_LIVE);
  assert_string_equal(te->name, twin);
  posh_atomic32_t *bound = &h->dir[home].xprobe_max;
  assert_int_equal(posh_atomic32_load_relaxed(bound), 1);
  posh_atomic32_store_relaxed(bound, 0);
  assert_int_equal(posh_name_lookup(h, twin, &got, NULL), POSH_ENOENT);
  assert_int_equal(posh_heap_check(h, report, sizeof report), POSH_ECORRUPT);
  assert_non_null(strstr(report, "probe bound"));
  assert_int_equal(posh__directory_repair(h), 0);
  assert_int_equal(posh_atomic32_load_relaxed(bound), 1);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_name_lookup(h, twin, &got, NULL), 0);
  assert_int_equal(got.v, 8192);
  /* Unbinding the first leaves a tombstone at the home: the twin is still
   * found behind it. */
  assert_int_equal(posh_name_unbind(h, "entry", POSH_OFF_NULL), 0);
  assert_int_equal(posh_name_lookup(h, twin, &got, NULL), 0);
  assert_int_equal(posh_name_bind(h, twin, (posh_off_t){64}, 2), POSH_EEXIST);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Concurrency: 2 processes x 2 threads.
 * ---------------------------------------------------------------------- */
#define SHARED_NAMES 16
#define OWN_NAMES 8
#define RUN_MS 2000

/* Tag that goes with an offset: a reader that got a torn entry would see
 * a mismatch. */
static uint32_t tag_of(uint64_t off) {
  return (uint32_t)((off * 0x9E3779B97F4A7C15ull) >> 32) | 1u;
}
/* Offsets stay below 2^30 (the 1 GiB default capacity). */
static uint64_t shared_off(unsigned j, unsigned worker, uint64_t iter) {
  return 1 +
         (((uint64_t)j << 25) | ((uint64_t)worker << 22) | (iter & 0x3fffff));
}

struct dworker {
  posh_heap_t *heap;
  unsigned id; /* 0..3 */
  uint64_t seed;
  uint64_t deadline_ms;
  long errors;
  long ops;
};

#define DCHECK(w, cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      if ((w)->errors++ < 5)                                                   \
        fprintf(stderr, "directory worker %u: ", (w)->id),                     \
            fprintf(stderr, __VA_ARGS__), fputc('\n', stderr);                 \
    }                                                                          \
  } while (0)

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *dir_worker(void *arg) {
  struct dworker *w = arg;
  posh_heap_t *h = w->heap;
  uint64_t own_off[OWN_NAMES] = {0};
  char name[32];
  uint64_t iter = 0;
  while (tu_now_ms() < w->deadline_ms) {
    iter++;
    uint64_t r = rnd(&w->seed);
    posh_off_t got;
    uint32_t tag;
    if (r & 1) {
      /* Own names: exact expectations. */
      unsigned k = (unsigned)(r >> 8) % OWN_NAMES;
      snprintf(name, sizeof name, "own-%u-%u", w->id, k);
      if (!own_off[k]) {
        uint64_t off = 1 + (((uint64_t)w->id << 26) | (iter & 0x3ffffff));
        int e = posh_name_bind(h, name, (posh_off_t){off}, tag_of(off));
        DCHECK(w, e == 0, "bind %s: %s", name, posh_err_name(e));
        if (e == 0)
          own_off[k] = off;
      } else {
        int e = posh_name_lookup(h, name, &got, &tag);
        DCHECK(w, e == 0 && got.v == own_off[k] && tag == tag_of(got.v),
               "lookup %s: %s", name, posh_err_name(e));
        e = posh_name_unbind(h, name, (posh_off_t){own_off[k] + 1});
        DCHECK(w, e == POSH_EBUSY, "unbind %s (wrong off): %s", name,
               posh_err_name(e));
        e = posh_name_unbind(h, name, (posh_off_t){own_off[k]});
        DCHECK(w, e == 0, "unbind %s: %s", name, posh_err_name(e));
        e = posh_name_lookup(h, name, &got, NULL);
        DCHECK(w, e == POSH_ENOENT, "lookup unbound %s: %s", name,
               posh_err_name(e));
        own_off[k] = 0;
      }
    } else {
      /* Shared names: any outcome allowed, but never a torn entry. */
      unsigned j = (unsigned)(r >> 8) % SHARED_NAMES;
      snprintf(name, sizeof name, "shared-%u", j);
      int e;
      switch ((r >> 16) % 3) {
      case 0: {
        uint64_t off = shared_off(j, w->id, iter);
        e = posh_name_bind(h, name, (posh_off_t){off}, tag_of(off));
        DCHECK(w, e == 0 || e == POSH_EEXIST, "bind %s: %s", name,
               posh_err_name(e));
        break;
      }
      case 1:
        e = posh_name_lookup(h, name, &got, &tag);
        DCHECK(w,
               e == POSH_ENOENT ||
                   (e == 0 && tag == tag_of(got.v) && ((got.v - 1) >> 25) == j),
               "lookup %s: %s off %llu tag %u", name, posh_err_name(e),
               (unsigned long long)got.v, tag);
        break;
      default:
        e = posh_name_unbind(h, name, POSH_OFF_NULL);
        DCHECK(w, e == 0 || e == POSH_ENOENT, "unbind %s: %s", name,
               posh_err_name(e));
        break;
      }
    }
    w->ops++;
  }
  /* Leave no own names behind. */
  for (unsigned k = 0; k < OWN_NAMES; k++)
    if (own_off[k]) {
      snprintf(name, sizeof name, "own-%u-%u", w->id, k);
      int e = posh_name_unbind(h, name, (posh_off_t){own_off[k]});
      DCHECK(w, e == 0, "final unbind %s: %s", name, posh_err_name(e));
    }
  return NULL;
}

struct dproc {
  posh_heap_t *heap;
  unsigned proc;
  uint64_t deadline_ms;
};

static int dir_process(void *arg) {
  struct dproc *p = arg;
  struct dworker w[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    w[i] = (struct dworker){p->heap,
                            p->proc * 2 + (unsigned)i,
                            0x1234567ull * (p->proc * 2 + (unsigned)i + 1),
                            p->deadline_ms,
                            0,
                            0};
    CHILD_CHECK(pthread_create(&th[i], NULL, dir_worker, &w[i]) == 0);
  }
  long errors = 0, ops = 0;
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    errors += w[i].errors;
    ops += w[i].ops;
  }
  if (getenv("POSH_TEST_VERBOSE"))
    fprintf(stderr, "directory process %u: %ld operations\n", p->proc, ops);
  CHILD_CHECK_EQ(errors, 0);
  CHILD_CHECK(ops > 0);
  CHILD_CHECK_EQ(posh_heap_detach(p->heap), 0);
  return 0;
}

static int shared_visit(const char *name, posh_off_t off, uint32_t tag,
                        void *arg) {
  unsigned j;
  int *bad = arg;
  if (sscanf(name, "shared-%u", &j) != 1 || j >= SHARED_NAMES ||
      tag != tag_of(off.v) || ((off.v - 1) >> 25) != j)
    (*bad)++;
  return 0;
}

/* Two processes with two threads each bind, look up and unbind their own
 * names (exact results) and shared names (any outcome, never a torn
 * entry) for a while; afterwards the directory is consistent. */
static void test_concurrent(void **state) {
  (void)state;
  posh_heap_options_t o = {.max_names = 256};
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  uint64_t deadline = tu_now_ms() + RUN_MS;
  struct dproc p[2] = {{h, 0, deadline}, {h, 1, deadline}};
  pid_t pid[2];
  for (int i = 0; i < 2; i++) {
    pid[i] = tu_fork(dir_process, &p[i]);
    assert_true(pid[i] > 0);
  }
  for (int i = 0; i < 2; i++)
    assert_int_equal(tu_wait(pid[i], RUN_MS + TU_TIMEOUT_MS), 0);
  int bad = 0;
  assert_int_equal(posh_name_foreach(h, shared_visit, &bad), 0);
  assert_int_equal(bad, 0);
  size_t n = foreach_count(h);
  assert_true(n <= SHARED_NAMES);
  assert_int_equal(stats_names(h), n);
  assert_int_equal(tu_check(h), 0);
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  assert_int_equal(st.processes, 1);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * A writer killed in the middle of an update.
 * ---------------------------------------------------------------------- */
struct killed_ctx {
  posh_heap_t *heap;
  int ready;
  const char *victim;  /* entry to leave half-unbound, or NULL */
  const char *newname; /* name to leave half-bound, or NULL */
};

static int find_entry(posh_heap_t *h, const char *name) {
  for (uint32_t i = 0; i < h->hdr->max_names; i++)
    if (h->dir[i].state == POSH_DIRENT_LIVE && !strcmp(h->dir[i].name, name))
      return (int)i;
  return -1;
}

/* Child: take dir_lock with its own token, start writing an entry (odd
 * sequence, fields half-changed) and wait to be killed. */
static int writer_dies(void *arg) {
  struct killed_ctx *c = arg;
  posh_heap_t *h = c->heap;
  int err = 0;
  uint32_t token = posh__self_token(h, &err);
  CHILD_CHECK(token != 0);
  CHILD_CHECK_EQ(posh__lock_acquire(h, &h->hdr->dir_lock, token, -1), 0);
  if (c->victim) {
    int i = find_entry(h, c->victim);
    CHILD_CHECK(i >= 0);
    posh__dirent_t *e = &h->dir[i];
    posh_atomic32_store_relaxed(&e->xseq,
                                posh_atomic32_load_relaxed(&e->xseq) + 1);
    e->off = 0xdeadbeefdeadull; /* half-written garbage */
    e->name[0] = '#';
  }
  if (c->newname) {
    /* Bind into the entry the name hashes to, killed half-way. */
    uint32_t n = h->hdr->max_names;
    uint64_t hash = XXH3_64bits(c->newname, strlen(c->newname));
    for (uint32_t k = 0; k < n; k++) {
      posh__dirent_t *e = &h->dir[(hash + k) % n];
      if (e->state == POSH_DIRENT_LIVE)
        continue;
      posh_atomic32_store_relaxed(&e->xseq,
                                  posh_atomic32_load_relaxed(&e->xseq) + 1);
      e->hash = hash;
      e->off = 12345;
      e->name_len = (uint16_t)strlen(c->newname);
      memcpy(e->name, c->newname, 3); /* rest of the name not yet written */
      e->state = POSH_DIRENT_LIVE;
      break;
    }
  }
  tu_write_byte(c->ready, 'R');
  for (;;)
    pause();
  return 0;
}

/* Survivor (a forked child, so a hang is caught): lookups, foreach and
 * binds work despite the dead writer. */
static int survivor(void *arg) {
  posh_heap_t *h = arg;
  posh_off_t got;
  uint32_t tag;
  char name[16];
  /* Names away from the broken entry need no repair. */
  for (unsigned i = 0; i < 20; i++) {
    snprintf(name, sizeof name, "name%u", i);
    CHILD_CHECK_EQ(posh_name_lookup(h, name, &got, &tag), 0);
    CHILD_CHECK_EQ(got.v, 4096u * (i + 1));
    CHILD_CHECK_EQ(tag, i);
  }
  /* The half-unbound name: gone (the unbind is completed) or still there
   * with its old value, never garbage. */
  int r = posh_name_lookup(h, "victim", &got, &tag);
  CHILD_CHECK(r == POSH_ENOENT || (r == 0 && got.v == 999 * 64 && tag == 99));
  /* The half-bound name never appears. */
  r = posh_name_lookup(h, "newname", &got, &tag);
  CHILD_CHECK_EQ(r, POSH_ENOENT);
  /* Writers recover the lock from the dead holder. */
  CHILD_CHECK_EQ(posh_name_bind(h, "after", (posh_off_t){64}, 1), 0);
  CHILD_CHECK_EQ(posh_name_bind(h, "newname", (posh_off_t){128}, 2), 0);
  r = posh_name_bind(h, "victim", (posh_off_t){192}, 3);
  CHILD_CHECK(r == 0 || r == POSH_EEXIST);
  CHILD_CHECK_EQ(posh_name_lookup(h, "newname", &got, &tag), 0);
  CHILD_CHECK_EQ(got.v, 128);
  CHILD_CHECK_EQ(posh__lock_owner(&h->hdr->dir_lock), 0);
  CHILD_CHECK_EQ(posh_atomic32_load_acquire(&h->hdr->dir_lock.xstate),
                 POSH_LOCK_CONSISTENT);
  CHILD_CHECK_EQ(posh_heap_check(h, NULL, 0), 0);
  CHILD_CHECK_EQ(posh_heap_detach(h), 0);
  return 0;
}

static void killed_writer_case(int half_unbind, int half_bind) {
  posh_heap_t *h = mk(64);
  assert_non_null(h);
  char name[16];
  for (unsigned i = 0; i < 20; i++) {
    snprintf(name, sizeof name, "name%u", i);
    assert_int_equal(posh_name_bind(h, name, (posh_off_t){4096u * (i + 1)}, i),
                     0);
  }
  assert_int_equal(posh_name_bind(h, "victim", (posh_off_t){999 * 64}, 99), 0);
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct killed_ctx c = {h, p[1], half_unbind ? "victim" : NULL,
                         half_bind ? "newname" : NULL};
  pid_t pid = tu_fork(writer_dies, &c);
  assert_true(pid > 0);
  close(p[1]);
  int ready = tu_read_byte(p[0], 20000);
  close(p[0]);
  if (ready != 'R')
    fail_msg("writer did not get ready: status %d", tu_wait(pid, 1000));
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  assert_int_equal(tu_run_child(survivor, h, TU_TIMEOUT_MS), 0);
  /* And from here, after the survivor repaired it. */
  posh_off_t got;
  assert_int_equal(posh_name_lookup(h, "newname", &got, NULL), 0);
  assert_int_equal(got.v, 128);
  assert_int_equal(posh_name_lookup(h, "name7", &got, NULL), 0);
  assert_int_equal(got.v, 4096u * 8);
  assert_int_equal(stats_names(h), foreach_count(h));
  assert_int_equal(tu_check(h), 0);
  posh_heap_reap(h, NULL);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* A writer killed holding dir_lock with an entry half-unbound: lookups of
 * other names still work, the broken name reads as absent or intact (never
 * garbage), the next writer repairs, and the heap check passes. */
static void test_writer_killed_mid_unbind(void **state) {
  (void)state;
  killed_writer_case(1, 0);
}

/* The same with an entry half-bound (name partly written): it never
 * appears, and the name can be bound afterwards. */
static void test_writer_killed_mid_bind(void **state) {
  (void)state;
  killed_writer_case(0, 1);
}

/* A writer killed holding dir_lock between updates (no entry broken):
 * the next writer takes the lock over. */
static void test_writer_killed_holding_lock(void **state) {
  (void)state;
  killed_writer_case(0, 0);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bind_lookup_unbind),
      cmocka_unit_test(test_bind_duplicate),
      cmocka_unit_test(test_missing),
      cmocka_unit_test(test_names_and_args),
      cmocka_unit_test(test_bind_offsets),
      cmocka_unit_test(test_unbind_expect),
      cmocka_unit_test(test_foreach),
      cmocka_unit_test(test_full_and_tombstones),
      cmocka_unit_test(test_probe_chains),
      cmocka_unit_test(test_check_detects_directory_damage),
      cmocka_unit_test(test_concurrent),
      cmocka_unit_test(test_writer_killed_mid_unbind),
      cmocka_unit_test(test_writer_killed_mid_bind),
      cmocka_unit_test(test_writer_killed_holding_lock),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
