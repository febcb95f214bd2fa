/* SPDX-License-Identifier: MIT */
/*
 * This file contains the tests of the dict shared object: the operations
 * one by one (inline and block-held keys and values, the empty key, buffer
 * sizes), growth and clear, iteration alone and against a concurrent
 * writer, use from a forked child and from an exec'd unrelated process
 * (tests/dict_child), batched gets (alone and against a writer in another
 * process), multi-process stress with concurrent writers on
 * overlapping keys (checksummed values, final contents checked), the same
 * with writers SIGKILLed at random, and bad input.
 *
 * Scale the stress tests with DICT_STRESS (float, default 1).
 */
#include "testutil.h"

#include <sched.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#include "posh/dict.h"
#include "object_internal.h"

#include <xxhash.h>

#define DICT_CHILD_NO_MAIN
#include "dict_child.c"

static double stress_scale(void) {
  const char *s = getenv("DICT_STRESS");
  double f = s && *s ? atof(s) : 1.0;
  return f > 0 ? f : 1.0;
}

static posh_heap_t *new_heap(char *name, size_t len) {
  posh_heap_options_t o = {0};
  o.capacity = 256ull << 20;
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(tu_heap_name(name, len, "dict"), &o, &h), 0);
  return h;
}

static void drop_heap(posh_heap_t *h, const char *name) {
  assert_int_equal(tu_check(h), 0);
  posh_heap_detach(h);
  posh_heap_unlink(name);
}

static int set_str(posh_obj_t *d, const char *k, const char *v) {
  return posh_dict_set(d, k, strlen(k), v, strlen(v));
}

/* Set, get, overwrite, contains, delete and len behave as a map, for inline
 * and block-held keys and values, the empty key and the empty value; the
 * buffer-size protocol reports the length. */
static void test_basic(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  uint64_t base = tu_bytes_in_use(h);
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  size_t len = 99, vl = 0;
  char buf[64];
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 0);
  assert_int_equal(posh_dict_get(d, "a", 1, buf, sizeof buf, &vl), POSH_ENOENT);
  assert_int_equal(set_str(d, "a", "apple"), 0);
  assert_int_equal(posh_dict_get(d, "a", 1, buf, sizeof buf, &vl), 0);
  assert_int_equal(vl, 5);
  assert_memory_equal(buf, "apple", 5);
  assert_int_equal(set_str(d, "a", "avocado"), 0);
  assert_int_equal(posh_dict_get(d, "a", 1, buf, sizeof buf, &vl), 0);
  assert_int_equal(vl, 7);
  assert_memory_equal(buf, "avocado", 7);
  /* Too small a buffer: the length comes back. */
  assert_int_equal(posh_dict_get(d, "a", 1, buf, 3, &vl), POSH_EMSGSIZE);
  assert_int_equal(vl, 7);
  assert_int_equal(posh_dict_get(d, "a", 1, NULL, 0, &vl), POSH_EMSGSIZE);
  /* Empty key and empty value are ordinary. */
  assert_int_equal(posh_dict_set(d, NULL, 0, "empty-key", 9), 0);
  assert_int_equal(posh_dict_set(d, "e", 1, NULL, 0), 0);
  assert_int_equal(posh_dict_get(d, "", 0, buf, sizeof buf, &vl), 0);
  assert_int_equal(vl, 9);
  assert_int_equal(posh_dict_get(d, "e", 1, NULL, 0, &vl), 0);
  assert_int_equal(vl, 0);
  assert_int_equal(posh_dict_contains(d, "e", 1), 0);
  assert_int_equal(posh_dict_contains(d, "z", 1), POSH_ENOENT);
  /* Big keys and values (blocks), and every inline/block combination. */
  static unsigned char kbig[3000], vbig[100000], got[100000];
  size_t klens[] = {1, 20, 96, 97, 104, 200, 3000};
  size_t vlens[] = {0, 7, 80, 96, 103, 104, 500, 100000};
  for (size_t i = 0; i < NELEM(klens); i++)
    for (size_t j = 0; j < NELEM(vlens); j++) {
      tu_fill(kbig, klens[i], 7 + i);
      kbig[0] = (unsigned char)(0xA0 + i);
      tu_fill(vbig, vlens[j], 100 * i + j);
      assert_int_equal(posh_dict_set(d, kbig, klens[i], vbig, vlens[j]), 0);
      assert_int_equal(posh_dict_get(d, kbig, klens[i], got, sizeof got, &vl), 0);
      assert_int_equal(vl, vlens[j]);
      assert_memory_equal(got, vbig, vl);
    }
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 3 + NELEM(klens));
  void *ga = NULL;
  assert_int_equal(posh_dict_get_alloc(d, kbig, 3000, &ga, &vl), 0);
  assert_int_equal(vl, 100000);
  assert_memory_equal(ga, vbig, vl);
  free(ga);
  assert_int_equal(posh_dict_delete(d, "a", 1), 0);
  assert_int_equal(posh_dict_delete(d, "a", 1), POSH_ENOENT);
  assert_int_equal(posh_dict_contains(d, "a", 1), POSH_ENOENT);
  assert_int_equal(posh_dict_delete(d, kbig, 3000), 0);
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 1 + NELEM(klens));
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_obj_close(d), 0);
  /* Finalize freed every block. */
  assert_int_equal(tu_bytes_in_use(h), base);
  drop_heap(h, name);
}

/* Every short key length (the fast get's) with values of every size up to
 * what fits inline and past it, buffers exact, one byte short and larger:
 * the right value, nothing written past it, and a key that differs in any
 * one byte is another key.  The stored hash is XXH3_64bits of the key. */
static void test_short_keys(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  unsigned char key[16], other[16], val[128], buf[160];
  size_t vl;
  for (size_t kl = 1; kl <= 16; kl++) {
    for (size_t n = 0; n < sizeof val; n++) {
      tu_fill(key, kl, 1000 * kl + n);
      tu_fill(val, n, 7 * kl + n);
      assert_int_equal(posh_dict_set(d, key, kl, val, n), 0);
      memset(buf, 0xEE, sizeof buf);
      assert_int_equal(posh_dict_get(d, key, kl, buf, n, &vl), 0);
      assert_int_equal(vl, n);
      assert_memory_equal(buf, val, n);
      assert_int_equal(buf[n], 0xEE); /* nothing past the value */
      assert_int_equal(posh_dict_get(d, key, kl, buf, sizeof buf, &vl), 0);
      assert_int_equal(vl, n);
      assert_memory_equal(buf, val, n);
      if (n > 0) {
        vl = 0;
        assert_int_equal(posh_dict_get(d, key, kl, buf, n - 1, &vl),
                         POSH_EMSGSIZE);
        assert_int_equal(vl, n);
      }
      for (size_t b = 0; b < kl; b++) {
        memcpy(other, key, kl);
        other[b] ^= 0x40;
        assert_int_equal(posh_dict_get(d, other, kl, buf, sizeof buf, &vl),
                         POSH_ENOENT);
      }
      assert_int_equal(posh_dict_delete(d, key, kl), 0);
    }
  }
  for (size_t kl = 0; kl <= 300; kl++) {
    unsigned char k[300];
    tu_fill(k, kl, kl);
    assert_true(posh__dict_key_hash(k, kl) == XXH3_64bits(k, kl));
  }
  assert_int_equal(posh_obj_close(d), 0);
  drop_heap(h, name);
}

static int count_visit(const void *k, size_t kl, const void *v, size_t vl,
                       void *arg) {
  (void)k;
  (void)kl;
  (void)v;
  size_t *acc = arg;
  acc[0]++;
  acc[1] += vl;
  return acc[0] == acc[2] ? 42 : 0; /* stop after acc[2] items */
}

/* setdefault, compare-and-swap, pop, popitem, update, foreach and clear. */
static void test_ops(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  uint64_t base = tu_bytes_in_use(h);
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  char buf[512];
  size_t vl = 0, kl = 0;
  int ins = -1;
  assert_int_equal(posh_dict_setdefault(d, "k", 1, "one", 3, buf, sizeof buf, &vl, &ins), 0);
  assert_int_equal(ins, 1);
  assert_int_equal(vl, 3);
  assert_int_equal(posh_dict_setdefault(d, "k", 1, "two", 3, buf, sizeof buf, &vl, &ins), 0);
  assert_int_equal(ins, 0);
  assert_memory_equal(buf, "one", 3);
  assert_int_equal(posh_dict_setdefault(d, "k", 1, "two", 3, buf, 1, &vl, &ins), POSH_EMSGSIZE);
  /* cas */
  assert_int_equal(posh_dict_cas(d, "k", 1, NULL, 0, "x", 1), POSH_EEXIST);
  assert_int_equal(posh_dict_cas(d, "k", 1, "two", 3, "x", 1), POSH_EAGAIN);
  assert_int_equal(posh_dict_cas(d, "k", 1, "on", 2, "x", 1), POSH_EAGAIN);
  assert_int_equal(posh_dict_cas(d, "k", 1, "one", 3, "three", 5), 0);
  assert_int_equal(posh_dict_get(d, "k", 1, buf, sizeof buf, &vl), 0);
  assert_memory_equal(buf, "three", 5);
  assert_int_equal(posh_dict_cas(d, "n", 1, "one", 3, "x", 1), POSH_ENOENT);
  assert_int_equal(posh_dict_cas(d, "n", 1, NULL, 3, "bad", 3), POSH_EINVAL);
  assert_int_equal(posh_dict_cas(d, "n", 1, NULL, 0, "new", 3), 0);
  assert_int_equal(posh_dict_contains(d, "n", 1), 0);
  /* pop */
  assert_int_equal(posh_dict_pop(d, "n", 1, buf, 1, &vl), POSH_EMSGSIZE);
  assert_int_equal(posh_dict_contains(d, "n", 1), 0);
  assert_int_equal(posh_dict_pop(d, "n", 1, buf, sizeof buf, &vl), 0);
  assert_int_equal(vl, 3);
  assert_memory_equal(buf, "new", 3);
  assert_int_equal(posh_dict_pop(d, "n", 1, buf, sizeof buf, &vl), POSH_ENOENT);
  /* update */
  posh_dict_item_t items[40];
  char keys[40][8], vals[40][300];
  for (int i = 0; i < 40; i++) {
    snprintf(keys[i], sizeof keys[i], "u%d", i);
    tu_fill(vals[i], sizeof vals[i], (uint64_t)i);
    items[i] = (posh_dict_item_t){keys[i], strlen(keys[i]), vals[i], (size_t)(i * 7)};
  }
  assert_int_equal(posh_dict_update(d, items, 40), 0);
  posh_dict_item_t bad = {NULL, 3, "v", 1};
  assert_int_equal(posh_dict_update(d, &bad, 1), POSH_EINVAL);
  size_t len;
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 41);
  for (int i = 0; i < 40; i++) {
    assert_int_equal(posh_dict_get(d, keys[i], strlen(keys[i]), buf, sizeof buf, &vl), 0);
    assert_int_equal(vl, (size_t)(i * 7));
    assert_memory_equal(buf, vals[i], vl);
  }
  /* foreach sees every item (values up to 273 bytes: buffers grow) */
  size_t acc[3] = {0, 0, 1000}, total = 0;
  for (int i = 0; i < 40; i++)
    total += (size_t)(i * 7);
  assert_int_equal(posh_dict_foreach(d, count_visit, acc), 0);
  assert_int_equal(acc[0], 41);
  assert_int_equal(acc[1], total + 5);
  size_t stop[3] = {0, 0, 3};
  assert_int_equal(posh_dict_foreach(d, count_visit, stop), 42);
  assert_int_equal(stop[0], 3);
  /* popitem drains it */
  char kb[16];
  assert_int_equal(posh_dict_popitem(d, kb, 1, &kl, buf, sizeof buf, &vl), POSH_EMSGSIZE);
  size_t popped = 0;
  while (posh_dict_popitem(d, kb, sizeof kb, &kl, buf, sizeof buf, &vl) == 0)
    popped++;
  assert_int_equal(popped, 41);
  assert_int_equal(posh_dict_popitem(d, kb, sizeof kb, &kl, buf, sizeof buf, &vl), POSH_ENOENT);
  /* clear */
  assert_int_equal(posh_dict_update(d, items, 40), 0);
  assert_int_equal(posh_dict_clear(d), 0);
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 0);
  assert_int_equal(posh_dict_contains(d, "u3", 2), POSH_ENOENT);
  assert_int_equal(set_str(d, "after", "clear"), 0);
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 1);
  assert_int_equal(posh_obj_close(d), 0);
  assert_int_equal(tu_bytes_in_use(h), base);
  drop_heap(h, name);
}

/* The table grows from its smallest size to 20000 keys and rehashes away
 * tombstones; every key keeps its value; iteration returns each key once. */
static void test_growth_iter(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, "growdict", NULL, &d), 0);
  enum { N = 20000 };
  static unsigned char v[4096], got[4096];
  char k[32];
  for (unsigned i = 0; i < N; i++) {
    int kl = snprintf(k, sizeof k, "k%u", i);
    size_t vl = fill_value(v, i);
    assert_int_equal(posh_dict_set(d, k, (size_t)kl, v, vl), 0);
  }
  for (unsigned i = 0; i < N; i += 2) {
    int kl = snprintf(k, sizeof k, "k%u", i);
    assert_int_equal(posh_dict_delete(d, k, (size_t)kl), 0);
  }
  for (unsigned i = 0; i < N; i++) {
    int kl = snprintf(k, sizeof k, "k%u", i);
    size_t vl = fill_value(v, i), gl = 0;
    int r = posh_dict_get(d, k, (size_t)kl, got, sizeof got, &gl);
    if (i % 2 == 0) {
      assert_int_equal(r, POSH_ENOENT);
    } else {
      assert_int_equal(r, 0);
      assert_int_equal(gl, vl);
      assert_memory_equal(got, v, vl);
    }
  }
  static unsigned char seen[N];
  memset(seen, 0, sizeof seen);
  posh_dict_iter_t it = POSH_DICT_ITER_INIT;
  char ik[32];
  size_t kl, vl;
  int r, count = 0;
  /* a too-small buffer does not advance the iterator */
  assert_int_equal(posh_dict_iter_next(d, &it, ik, 1, &kl, got, sizeof got, &vl), POSH_EMSGSIZE);
  while ((r = posh_dict_iter_next(d, &it, ik, sizeof ik - 1, &kl, got, sizeof got, &vl)) == 0) {
    ik[kl] = 0;
    unsigned i = (unsigned)atoi(ik + 1);
    assert_true(i < N && i % 2 == 1);
    assert_int_equal(seen[i], 0);
    seen[i] = 1;
    assert_int_equal(vl, fill_value(v, i));
    assert_memory_equal(got, v, vl);
    count++;
  }
  assert_int_equal(r, POSH_ENOENT);
  assert_int_equal(count, N / 2);
  assert_int_equal(it.restarts, 0);
  /* Re-insert deleted keys: tombstones are reused / rehashed away. */
  for (int round = 0; round < 3; round++)
    for (unsigned i = 0; i < N; i += 2) {
      int kl2 = snprintf(k, sizeof k, "k%u", i);
      if (round % 2 == 0)
        assert_int_equal(posh_dict_set(d, k, (size_t)kl2, "x", 1), 0);
      else
        assert_int_equal(posh_dict_delete(d, k, (size_t)kl2), 0);
    }
  size_t len;
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, N);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_obj_unbind(h, "growdict"), 0);
  assert_int_equal(posh_obj_close(d), 0);
  drop_heap(h, name);
}

static posh_obj_t *g_d;
static int child_mutator(void *arg) {
  (void)arg;
  /* Changes keys the parent does not check, forcing growth and clear. */
  char k[32];
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 2000; i++) {
      int kl = snprintf(k, sizeof k, "tmp%d", i);
      CHILD_CHECK_EQ(posh_dict_set(g_d, k, (size_t)kl, k, (size_t)kl), 0);
    }
    for (int i = 0; i < 2000; i++) {
      int kl = snprintf(k, sizeof k, "tmp%d", i);
      CHILD_CHECK_EQ(posh_dict_delete(g_d, k, (size_t)kl), 0);
    }
  }
  return 0;
}

/* Iteration tolerates a concurrent writer in another process (growth,
 * tombstones): every stable key is returned, every item returned is
 * consistent. */
static void test_iter_concurrent(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  assert_int_equal(posh_dict_create(h, NULL, NULL, &g_d), 0);
  enum { N = 500 };
  char k[32], ik[32], v[64];
  for (int i = 0; i < N; i++) {
    int kl = snprintf(k, sizeof k, "stable%d", i);
    assert_int_equal(posh_dict_set(g_d, k, (size_t)kl, k, (size_t)kl), 0);
  }
  pid_t pid = tu_fork(child_mutator, NULL);
  assert_true(pid > 0);
  int walks = 0;
  do {
    static unsigned char seen[N];
    memset(seen, 0, sizeof seen);
    posh_dict_iter_t it = POSH_DICT_ITER_INIT;
    size_t kl, vl;
    int r;
    while ((r = posh_dict_iter_next(g_d, &it, ik, sizeof ik, &kl, v, sizeof v, &vl)) == 0) {
      assert_int_equal(kl, vl); /* every value equals its key */
      assert_memory_equal(ik, v, kl);
      if (kl > 6 && memcmp(ik, "stable", 6) == 0) {
        ik[kl] = 0;
        seen[atoi(ik + 6)] = 1;
      }
    }
    assert_int_equal(r, POSH_ENOENT);
    for (int i = 0; i < N; i++)
      assert_int_equal(seen[i], 1);
    walks++;
  } while (waitpid(pid, NULL, WNOHANG) == 0 || walks < 3);
  tu_kid_del(pid);
  assert_int_equal(posh_obj_close(g_d), 0);
  drop_heap(h, name);
}

/* posh_dict_get_many gives, request by request, what posh_dict_get gives:
 * keys of every length class (empty, 1-16 bytes, longer, block-held),
 * inline and block-held values, absent keys, buffers too small, bad
 * requests; batches below, at and above its internal batch size. */
static void test_get_many(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  enum { N = 600, Q = 1000 };
  static unsigned char keys[N][48], val[300];
  for (size_t i = 0; i < sizeof val; i++)
    val[i] = (unsigned char)(i * 7 + 1);
  for (int i = 0; i < N; i++) {
    size_t kl = (size_t)(i % 41); /* 0 (the empty key, once) to 40 bytes */
    for (size_t j = 0; j < kl; j++)
      keys[i][j] = (unsigned char)(i * 31 + j * 3);
    if (kl >= 2) { /* distinct keys of one length */
      keys[i][0] = (unsigned char)i;
      keys[i][1] = (unsigned char)(i >> 8);
    }
    size_t vlen = (size_t)(i * 13) % 200; /* inline and block-held */
    assert_int_equal(posh_dict_set(d, keys[i], kl, val, vlen), 0);
  }
  /* Requests: every key (some absent variants), and bad ones. */
  static posh_dict_get_req_t rq[Q];
  static unsigned char bufs[Q][256], ref[256];
  for (int q = 0; q < Q; q++) {
    int i = q % N;
    size_t kl = (size_t)(i % 41);
    memset(&rq[q], 0, sizeof rq[q]);
    rq[q].key = keys[i];
    rq[q].klen = kl;
    rq[q].buf = bufs[q];
    rq[q].cap = sizeof bufs[q];
    if (q % 7 == 3 && kl > 0)
      rq[q].klen = kl + 41; /* a longer key: absent */
    if (q % 11 == 5)
      rq[q].cap = 10; /* too small for most values */
    if (q == 17)
      rq[q].key = NULL; /* POSH_EINVAL (klen 17) */
    if (q == 29) {
      rq[q].buf = NULL; /* POSH_EINVAL (cap > 0) */
    }
    rq[q].result = 12345;
    rq[q].vlen = 999;
  }
  size_t sizes[] = {0, 1, 15, 16, 17, 100, Q - 100 - 17 - 16 - 15 - 1};
  size_t at = 0;
  assert_int_equal(posh_dict_get_many(d, NULL, 0), 0);
  for (size_t s = 0; s < NELEM(sizes); s++) {
    assert_int_equal(posh_dict_get_many(d, rq + at, sizes[s]), 0);
    at += sizes[s];
  }
  assert_int_equal(at, Q);
  int found = 0, absent = 0, small = 0, bad = 0;
  for (int q = 0; q < Q; q++) {
    size_t vl = 777;
    int r = posh_dict_get(d, rq[q].key, rq[q].klen, rq[q].buf ? ref : NULL,
                          rq[q].buf ? rq[q].cap : rq[q].cap, &vl);
    assert_int_equal(rq[q].result, r);
    if (r == 0) {
      assert_int_equal(rq[q].vlen, vl);
      assert_memory_equal(rq[q].buf, ref, vl);
      assert_memory_equal(rq[q].buf, val, vl);
      found++;
    } else if (r == POSH_EMSGSIZE) {
      assert_int_equal(rq[q].vlen, vl);
      small++;
    } else {
      assert_int_equal(rq[q].vlen, 0);
      r == POSH_ENOENT ? absent++ : bad++;
    }
  }
  assert_true(found > 700 && absent > 50 && small > 20 && bad == 2);
  /* Bad calls. */
  assert_int_equal(posh_dict_get_many(NULL, rq, 1), POSH_EINVAL);
  assert_int_equal(posh_dict_get_many(d, NULL, 1), POSH_EINVAL);
  posh_obj_t *buf;
  assert_int_equal(posh_buffer_create(h, NULL, 16, 0, &buf), 0);
  assert_int_equal(posh_dict_get_many(buf, rq, 1), POSH_ETYPE);
  assert_int_equal(posh_obj_close(buf), 0);
  assert_int_equal(posh_obj_close(d), 0);
  drop_heap(h, name);
}

/* A value of this test: 56 bytes of a generation's pattern and their
 * XXH64, so a reader can tell a whole value from a torn one. */
static void gm_value(unsigned char v[64], uint32_t key, uint32_t gen) {
  for (int j = 0; j < 56; j++)
    v[j] = (unsigned char)(key * 131 + gen * 7 + (uint32_t)j);
  uint64_t x = XXH64(v, 56, 0);
  memcpy(v + 56, &x, 8);
}

static int gm_writer(void *arg) {
  (void)arg;
  unsigned char v[64];
  for (uint32_t gen = 1; gen < 300; gen++)
    for (uint32_t k = 0; k < 64; k++) {
      gm_value(v, k, gen);
      CHILD_CHECK_EQ(posh_dict_set(g_d, &k, sizeof k, v, sizeof v), 0);
      if (k % 16 == 0 && gen % 50 == 0) /* absent for a while */
        CHILD_CHECK_EQ(posh_dict_delete(g_d, &k, sizeof k), 0);
    }
  return 0;
}

/* posh_dict_get_many against a writer in another process overwriting and
 * deleting the same keys: every value it returns is whole (never torn). */
static void test_get_many_concurrent(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  assert_int_equal(posh_dict_create(h, NULL, NULL, &g_d), 0);
  unsigned char v[64];
  for (uint32_t k = 0; k < 64; k++) {
    gm_value(v, k, 0);
    assert_int_equal(posh_dict_set(g_d, &k, sizeof k, v, sizeof v), 0);
  }
  pid_t pid = tu_fork(gm_writer, NULL);
  assert_true(pid > 0);
  static uint32_t kid[64];
  static unsigned char out[64][64];
  posh_dict_get_req_t rq[64];
  long whole = 0;
  int st = 0;
  pid_t done;
  do {
    for (uint32_t k = 0; k < 64; k++) {
      kid[k] = k;
      rq[k] = (posh_dict_get_req_t){&kid[k], sizeof kid[k], out[k], sizeof out[k], 0, 0};
    }
    assert_int_equal(posh_dict_get_many(g_d, rq, 64), 0);
    for (int k = 0; k < 64; k++) {
      if (rq[k].result == POSH_ENOENT)
        continue;
      assert_int_equal(rq[k].result, 0);
      assert_int_equal(rq[k].vlen, 64);
      uint64_t x = XXH64(out[k], 56, 0);
      assert_memory_equal(out[k] + 56, &x, 8);
      whole++;
    }
  } while ((done = waitpid(pid, &st, WNOHANG)) == 0);
  tu_kid_del(pid);
  assert_int_equal(done, pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_true(whole > 0);
  assert_int_equal(posh_obj_close(g_d), 0);
  drop_heap(h, name);
}

/* Spawn tests/dict_child (exec, no atfork handlers: an unrelated process). */
static pid_t spawn_dict_child(const char *const *args) {
  const char *dir = getenv("POSH_TEST_BINDIR");
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/dict_child", dir && *dir ? dir : tu_argv0_dir);
  const char *argv[16];
  int n = 0;
  argv[n++] = path;
  for (int i = 0; args[i] && n < 15; i++)
    argv[n++] = args[i];
  argv[n] = NULL;
  fflush(stdout);
  fflush(stderr);
  extern char **environ;
  pid_t pid;
  if (posix_spawn(&pid, path, NULL, NULL, (char *const *)argv, environ) != 0)
    return -1;
  tu_kid_add(pid);
  return pid;
}

static int forked_user(void *arg) {
  (void)arg;
  /* The inherited handle works in the child. */
  CHILD_CHECK_EQ(set_str(g_d, "from-fork", "hi"), 0);
  char b[8];
  size_t vl;
  CHILD_CHECK_EQ(posh_dict_get(g_d, "k1", 2, b, sizeof b, &vl), POSH_EMSGSIZE);
  return 0;
}

/* A forked child and an exec'd unrelated process (attaching by name) see
 * and change the same dict. */
static void test_cross_process(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  assert_int_equal(posh_dict_create(h, "xdict", NULL, &g_d), 0);
  enum { N = 300 };
  static unsigned char v[4096];
  char k[32];
  for (unsigned i = 0; i < N; i++) {
    int kl = snprintf(k, sizeof k, "k%u", i);
    assert_int_equal(posh_dict_set(g_d, k, (size_t)kl, v, fill_value(v, i)), 0);
  }
  const char *args[] = {name, "xdict", "verify", "300", NULL};
  pid_t pid = spawn_dict_child(args);
  assert_true(pid > 0);
  assert_int_equal(tu_wait(pid, TU_TIMEOUT_MS), 0);
  char b[16];
  size_t vl;
  assert_int_equal(posh_dict_get(g_d, "from-exec", 9, b, sizeof b, &vl), 0);
  assert_int_equal(vl, 5);
  assert_memory_equal(b, "hello", 5);
  assert_int_equal(tu_run_child(forked_user, NULL, TU_TIMEOUT_MS), 0);
  assert_int_equal(posh_dict_get(g_d, "from-fork", 9, b, sizeof b, &vl), 0);
  assert_memory_equal(b, "hi", 2);
  assert_int_equal(posh_obj_unbind(h, "xdict"), 0);
  assert_int_equal(posh_obj_close(g_d), 0);
  drop_heap(h, name);
}

/* ------------------------------------------------------------------------
 * Stress.
 * ---------------------------------------------------------------------- */
static uint64_t *g_rec;
typedef struct stress_arg {
  uint32_t id;
  uint64_t n;
  uint32_t nkeys;
  uint64_t seed;
} stress_arg_t;

static int stress_writer(void *arg) {
  stress_arg_t *a = arg;
  int line = dv_writer(g_d, g_rec, a->id, a->n, a->nkeys, a->seed);
  if (line)
    fprintf(stderr, "writer %u failed at line %d\n", a->id, line);
  return line ? 1 : 0;
}
static int stress_reader(void *arg) {
  stress_arg_t *a = arg;
  int line = dv_reader(g_d, a->n, a->nkeys, a->seed);
  if (line)
    fprintf(stderr, "reader failed at line %d\n", line);
  return line ? 1 : 0;
}

/* Reader of the kill test: checks until a byte arrives on its pipe (fd in
 * id). */
static int stress_reader_until(void *arg) {
  stress_arg_t *a = arg;
  for (uint64_t round = 0;; round++) {
    int line = dv_reader(g_d, 512, a->nkeys, a->seed + round);
    if (line) {
      fprintf(stderr, "reader failed at line %d\n", line);
      return 1;
    }
    struct pollfd p = {(int)a->id, POLLIN, 0};
    if (poll(&p, 1, 0) == 1)
      return 0;
  }
}

/* Final contents: every present key holds the last write of the writer
 * that wrote it; an absent key's last operation by some writer removed
 * it.  0 or a line. */
static int check_final(posh_obj_t *d, const uint64_t *rec, uint32_t nw,
                       uint32_t nkeys) {
  static unsigned char vb[DV_MAX];
  char kb[16];
  for (uint32_t k = 0; k < nkeys; k++) {
    size_t vl;
    int r = posh_dict_get(d, kb, dv_key(kb, k), vb, sizeof vb, &vl);
    if (r == 0) {
      uint32_t w;
      uint64_t seq;
      if (!dv_check(vb, vl, k))
        return __LINE__;
      dv_fields(vb, &w, &seq);
      if (w >= nw || rec[w * nkeys + k] != seq << 1)
        return __LINE__;
    } else if (r == POSH_ENOENT) {
      int any = 0;
      for (uint32_t w = 0; w < nw; w++)
        any |= rec[w * nkeys + k] == 0 || (rec[w * nkeys + k] & 1);
      if (!any)
        return __LINE__;
    } else {
      return __LINE__;
    }
  }
  return 0;
}

/* Several processes (forked and one exec'd) update overlapping keys with
 * every write operation while a reader checks each value's XXH3; at the
 * end each key holds the last write of its writer. */
static void test_stress(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  assert_int_equal(posh_dict_create(h, "sdict", NULL, &g_d), 0);
  enum { W = 4, K = 48 };
  posh_obj_t *rb;
  assert_int_equal(posh_buffer_create(h, "sdict-rec", W * K * 8, 0, &rb), 0);
  assert_int_equal(posh_buffer_data(rb, (void **)&g_rec, NULL), 0);
  uint64_t n = (uint64_t)(100000 * stress_scale());
  stress_arg_t a[W + 1];
  pid_t pids[W + 1];
  for (uint32_t w = 0; w < W - 1; w++) {
    a[w] = (stress_arg_t){w, n, K, 0x1234567ull * (w + 1)};
    pids[w] = tu_fork(stress_writer, &a[w]);
    assert_true(pids[w] > 0);
  }
  char ns[32], ss[32];
  snprintf(ns, sizeof ns, "%llu", (unsigned long long)n);
  snprintf(ss, sizeof ss, "%llu", 0xabcdefull);
  char ws[8];
  snprintf(ws, sizeof ws, "%u", W - 1);
  const char *args[] = {name, "sdict", "writer", ws, ns, "48", ss, NULL};
  pids[W - 1] = spawn_dict_child(args);
  assert_true(pids[W - 1] > 0);
  a[W] = (stress_arg_t){0, n / 4, K, 99};
  pids[W] = tu_fork(stress_reader, &a[W]);
  for (int i = 0; i <= W; i++)
    assert_int_equal(tu_wait(pids[i], 120000), 0);
  assert_int_equal(check_final(g_d, g_rec, W, K), 0);
  assert_int_equal(dv_verify_all(g_d, K), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_obj_unbind(h, "sdict"), 0);
  assert_int_equal(posh_obj_unbind(h, "sdict-rec"), 0);
  assert_int_equal(posh_obj_close(rb), 0);
  assert_int_equal(posh_obj_close(g_d), 0);
  drop_heap(h, name);
}

/* Writers SIGKILLed at random instants in the middle of operations never
 * hang the survivors or the reader, never leave a half-written value, and
 * the heap checks clean after reaping. */
static void test_kill_stress(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  assert_int_equal(posh_dict_create(h, "kdict", NULL, &g_d), 0);
  enum { W = 3, K = 32 };
  posh_obj_t *rb;
  assert_int_equal(posh_buffer_create(h, "kdict-rec", DV_MAX_WRITERS * K * 8, 0, &rb), 0);
  assert_int_equal(posh_buffer_data(rb, (void **)&g_rec, NULL), 0);
  int kills = (int)(300 * stress_scale());
  uint64_t rng = 0x5eed;
  stress_arg_t a[DV_MAX_WRITERS];
  pid_t pids[W];
  uint32_t next_id = 0;
  for (int w = 0; w < W; w++) {
    a[next_id] = (stress_arg_t){next_id, 1u << 30, K, 77 + next_id};
    pids[w] = tu_fork(stress_writer, &a[next_id]);
    next_id++;
  }
  int stop[2];
  assert_int_equal(pipe(stop), 0);
  stress_arg_t ra = {(uint32_t)stop[0], 0, K, 5};
  pid_t reader = tu_fork(stress_reader_until, &ra);
  assert_true(reader > 0);
  close(stop[0]);
  for (int i = 0; i < kills; i++) {
    tu_sleep_ms(1 + (unsigned)(dv_rand(&rng) % 15));
    int w = (int)(dv_rand(&rng) % W);
    assert_int_equal(tu_kill(pids[w]), TU_SIGNALED(SIGKILL));
    if (i % 8 == 0) /* now and then the survivors must repair alone */
      assert_int_equal(posh_heap_reap(h, NULL), 0);
    uint32_t id = next_id < DV_MAX_WRITERS ? next_id++ : (uint32_t)w;
    a[id] = (stress_arg_t){id, 1u << 30, K, dv_rand(&rng)};
    pids[w] = tu_fork(stress_writer, &a[id]);
    assert_true(pids[w] > 0);
  }
  for (int w = 0; w < W; w++)
    assert_int_equal(tu_kill(pids[w]), TU_SIGNALED(SIGKILL));
  assert_int_equal(tu_write_byte(stop[1], 'q'), 0);
  assert_int_equal(tu_wait(reader, 120000), 0);
  close(stop[1]);
  assert_int_equal(posh_heap_reap(h, NULL), 0);
  /* Every value readable and valid; len agrees with an iteration; a write
   * goes through (the lock was repaired). */
  assert_int_equal(dv_verify_all(g_d, K), 0);
  static unsigned char vb[DV_MAX];
  char kb[16];
  size_t len, present = 0, vl;
  for (uint32_t k = 0; k < K; k++)
    present += posh_dict_get(g_d, kb, dv_key(kb, k), vb, sizeof vb, &vl) == 0;
  assert_int_equal(posh_dict_len(g_d, &len), 0);
  assert_int_equal(len, present);
  size_t vlen = dv_make(vb, 0, 1, 1, 100);
  assert_int_equal(posh_dict_set(g_d, kb, dv_key(kb, 1), vb, vlen), 0);
  assert_int_equal(dv_verify_all(g_d, K), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_obj_unbind(h, "kdict"), 0);
  assert_int_equal(posh_obj_unbind(h, "kdict-rec"), 0);
  assert_int_equal(posh_obj_close(rb), 0);
  assert_int_equal(posh_obj_close(g_d), 0);
  assert_int_equal(tu_check(h), 0);
  drop_heap(h, name);
}

/* ------------------------------------------------------------------------
 * Bad input.
 * ---------------------------------------------------------------------- */
static int stale_user(void *arg) {
  int fd = *(int *)arg;
  CHILD_CHECK(tu_read_byte(fd, TU_TIMEOUT_MS) == 'g');
  /* The child took its own reference at fork: the dict outlives the
   * parent's close. */
  size_t len;
  CHILD_CHECK_EQ(posh_dict_len(g_d, &len), 0);
  CHILD_CHECK_EQ(len, 0);
  CHILD_CHECK_EQ(posh_dict_set(g_d, "a", 1, "b", 1), 0);
  CHILD_CHECK_EQ(posh_obj_close(g_d), 0);
  return 0;
}

/* NULL arguments, oversized keys and values, a handle of another type and
 * a stale reference are refused with their codes; an inherited handle
 * stays usable after the parent closed its own. */
static void test_bad_input(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  posh_obj_t *d, *buf;
  char b[8];
  size_t vl;
  assert_int_equal(posh_dict_create(NULL, NULL, NULL, &d), POSH_EINVAL);
  assert_int_equal(posh_dict_create(h, NULL, NULL, NULL), POSH_EINVAL);
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  assert_int_equal(posh_dict_get(NULL, "a", 1, b, sizeof b, &vl), POSH_EINVAL);
  assert_int_equal(posh_dict_set(NULL, "a", 1, "b", 1), POSH_EINVAL);
  assert_int_equal(posh_dict_get(d, NULL, 1, b, sizeof b, &vl), POSH_EINVAL);
  assert_int_equal(posh_dict_get(d, "a", 1, NULL, 4, &vl), POSH_EINVAL);
  assert_int_equal(posh_dict_set(d, "a", 1, NULL, 1), POSH_EINVAL);
  assert_int_equal(posh_dict_set(d, "a", POSH_DICT_KEY_MAX + 1, "b", 1), POSH_EMSGSIZE);
  assert_int_equal(posh_dict_set(d, "a", 1, "b", (size_t)POSH_DICT_VALUE_MAX + 1), POSH_EMSGSIZE);
  assert_int_equal(posh_dict_len(d, NULL), POSH_EINVAL);
  assert_int_equal(posh_dict_iter_next(d, NULL, b, 1, &vl, b, 1, &vl), POSH_EINVAL);
  assert_int_equal(posh_dict_get_alloc(d, "a", 1, NULL, &vl), POSH_EINVAL);
  assert_int_equal(posh_dict_update(d, NULL, 2), POSH_EINVAL);
  assert_int_equal(posh_dict_foreach(d, NULL, NULL), POSH_EINVAL);
  /* A value too large for the heap: ENOMEM, dict unchanged. */
  void *huge = malloc((size_t)POSH_DICT_VALUE_MAX);
  if (huge) {
    assert_int_equal(posh_dict_set(d, "a", 1, huge, (size_t)POSH_DICT_VALUE_MAX), POSH_ENOMEM);
    free(huge);
  }
  assert_int_equal(posh_dict_contains(d, "a", 1), POSH_ENOENT);
  /* Wrong type. */
  assert_int_equal(posh_buffer_create(h, NULL, 16, 0, &buf), 0);
  assert_int_equal(posh_dict_get(buf, "a", 1, b, sizeof b, &vl), POSH_ETYPE);
  assert_int_equal(posh_dict_set(buf, "a", 1, "b", 1), POSH_ETYPE);
  assert_int_equal(posh_dict_clear(buf), POSH_ETYPE);
  assert_int_equal(posh_obj_close(buf), 0);
  /* Stale reference. */
  posh_obj_ref_t ref;
  assert_int_equal(posh_obj_ref(d, &ref), 0);
  assert_int_equal(set_str(d, "x", "y"), 0);
  assert_int_equal(posh_obj_close(d), 0);
  posh_obj_t *d2 = NULL;
  assert_int_equal(posh_obj_open_ref(h, &ref, &d2), POSH_ESTALE);
  /* An inherited handle whose parent closed it before the child used it. */
  assert_int_equal(posh_dict_create(h, NULL, NULL, &g_d), 0);
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = tu_fork(stale_user, &p[0]);
  assert_true(pid > 0);
  assert_int_equal(posh_obj_close(g_d), 0);
  assert_int_equal(tu_write_byte(p[1], 'g'), 0);
  assert_int_equal(tu_wait(pid, TU_TIMEOUT_MS), 0);
  close(p[0]);
  close(p[1]);
  drop_heap(h, name);
}

/* A slot whose sequence word is odd while no writer is at work (a stray
 * write by a faulty process; a killed writer's slot is repaired when the
 * lock is taken) makes get, contains and iteration report POSH_ECORRUPT
 * after their bounded retries instead of spinning forever; with the word
 * even again the dict works as before. */
static void test_damaged_entry(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  const char *longkey = "a key longer than the fast get's sixteen bytes";
  assert_int_equal(set_str(d, "a", "1"), 0);
  assert_int_equal(set_str(d, longkey, "2"), 0);
  char b[8];
  size_t vl = 0;
  const char *keys[] = {"a", longkey};
  for (int k = 0; k < 2; k++) {
    posh_atomic32_t *seq = posh__dict_slot_seq(d, keys[k], strlen(keys[k]));
    assert_non_null(seq);
    uint32_t was = posh_atomic32_load_relaxed(seq);
    posh_atomic32_store_relaxed(seq, was | 1u);
    assert_int_equal(posh_dict_get(d, keys[k], strlen(keys[k]), b, sizeof b, &vl),
                     POSH_ECORRUPT);
    assert_int_equal(posh_dict_contains(d, keys[k], strlen(keys[k])),
                     POSH_ECORRUPT);
    /* The walk reaches the slot and stops there with the error. */
    posh_dict_iter_t it = POSH_DICT_ITER_INIT;
    char kb[64];
    size_t kl;
    int r, steps = 0;
    while ((r = posh_dict_iter_next(d, &it, kb, sizeof kb, &kl, b, sizeof b,
                                    &vl)) == 0)
      assert_true(++steps <= 2);
    assert_int_equal(r, POSH_ECORRUPT);
    posh_atomic32_store_relaxed(seq, was);
    assert_int_equal(posh_dict_get(d, keys[k], strlen(keys[k]), b, sizeof b, &vl), 0);
    assert_int_equal(vl, 1);
    assert_int_equal(b[0], k == 0 ? '1' : '2');
  }
  assert_int_equal(posh_obj_close(d), 0);
  drop_heap(h, name);
}

/* objects/dict.c's test hook: the crash point this process dies at. */
extern int posh__dict_crash_point;

struct dict_crash_arg {
  posh_obj_t *d;
  int point;
};
static int dict_crash_child(void *p) {
  struct dict_crash_arg *a = p;
  posh__dict_crash_point = a->point;
  static char big[200];
  memset(big, 'N', sizeof big);
  if (a->point == 1)
    posh_dict_set(a->d, "k", 1, big, sizeof big);
  for (int i = 0; i < 1000; i++) { /* point 2: the first growth */
    char k[16];
    int n = snprintf(k, sizeof k, "g%d", i);
    posh_dict_set(a->d, k, (size_t)n, "v", 1);
  }
  return 0; /* the crash point was not reached: the parent fails */
}

/* Proves: a writer killed right after publishing an entry (its record not
 * yet marked done) leaves the new value, which readers may already have
 * seen: the repair rolls forward, not back (regression test: it restored
 * the old value after readers had read the new one); and a writer killed
 * while growing the table, before publishing the new one, leaks nothing
 * (regression test: the record was armed only after the new table was
 * zeroed, so a death in the zeroing, the longest step, leaked the table). */
static void test_crash_points(void **state) {
  (void)state;
  char name[64];
  posh_heap_t *h = new_heap(name, sizeof name);
  char buf[256];
  size_t vl;
  /* 1: published, not done. */
  posh_obj_t *d;
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  uint64_t empty = tu_bytes_in_use(h);
  static char old[150];
  memset(old, 'O', sizeof old);
  assert_int_equal(posh_dict_set(d, "k", 1, old, sizeof old), 0);
  struct dict_crash_arg a = {d, 1};
  assert_int_equal(tu_run_child(dict_crash_child, &a, 20000), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_dict_get(d, "k", 1, buf, sizeof buf, &vl), 0);
  assert_int_equal(vl, 200); /* published: readers see it before any repair */
  assert_int_equal(set_str(d, "other", "x"), 0); /* takes the lock: repairs */
  assert_int_equal(posh_dict_get(d, "k", 1, buf, sizeof buf, &vl), 0);
  if (vl != 200 || buf[0] != 'N')
    fail_msg("after the repair \"k\" has a %zu-byte value '%c...': rolled back", vl,
             buf[0]);
  size_t len;
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_int_equal(len, 2);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_dict_delete(d, "k", 1), 0);
  assert_int_equal(posh_dict_delete(d, "other", 5), 0);
  assert_int_equal(tu_bytes_in_use(h), empty); /* old block freed, new one kept */
  assert_int_equal(posh_obj_close(d), 0);

  /* 2: growth, new table zeroed, not published. */
  assert_int_equal(posh_dict_create(h, NULL, NULL, &d), 0);
  uint64_t before = tu_bytes_in_use(h);
  a = (struct dict_crash_arg){d, 2};
  assert_int_equal(tu_run_child(dict_crash_child, &a, 20000), TU_SIGNALED(SIGKILL));
  assert_int_equal(posh_dict_len(d, &len), 0);
  assert_true(len > 0); /* the keys set before the growth (inline: no blocks) */
  /* A delete takes the lock (repairs) and cannot grow the table. */
  assert_int_equal(posh_dict_delete(d, "g0", 2), 0);
  uint64_t after = tu_bytes_in_use(h);
  if (after != before)
    fail_msg("a death in the growth leaked %lld bytes", (long long)(after - before));
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_obj_close(d), 0);
  drop_heap(h, name);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_short_keys),
      cmocka_unit_test(test_ops),
      cmocka_unit_test(test_growth_iter),
      cmocka_unit_test(test_iter_concurrent),
      cmocka_unit_test(test_get_many),
      cmocka_unit_test(test_get_many_concurrent),
      cmocka_unit_test(test_cross_process),
      cmocka_unit_test(test_stress),
      cmocka_unit_test(test_kill_stress),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_damaged_entry),
      cmocka_unit_test(test_crash_points),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
