/* SPDX-License-Identifier: MIT */
/* ab_dict_get: compare posh_dict_get of two builds of libposh in one
 * process, on one table.
 *
 *   bench/ab_dict_get LIB_A LIB_B [ROUNDS]
 *
 * LIB_A and LIB_B are paths of two libposh.so files (say the .so of main
 * and of a change, copied aside).  Each is loaded in its own link-map
 * namespace (dlmopen), so both live in this process with their own state.
 * A creates a heap and a dict of AB_KEYS keys (default 1M: 16-byte keys,
 * 64-byte values, as bench_dict); B attaches to that heap by name and opens
 * the same dict, so both builds read the very same table in memory.  Then
 * ROUNDS rounds (default 20) each time AB_PER gets (default 400000) with
 * A and with B, in the order AB, BA, AB, ... over the same key sequence.
 *
 * Output: the median rate of each and the median, first and third
 * quartiles of the per-round ratio B/A.  On this shared VM a get on a big
 * table costs what the host's memory system gives at that moment: runs of
 * one binary a minute apart differ by up to 2x, so separate runs of two
 * builds cannot resolve a few percent.  Rounds of both builds a fraction
 * of a second apart, on one table, can: the same library as A and B gives
 * B/A 1.00 with quartiles within 2% (docs/bench.md, "Comparing two
 * builds").  Not a benchmark of `make bench` (it needs two builds); built
 * with the benchmarks so that it keeps compiling. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "posh.h"

#define KLEN 16
#define VLEN 64
#define MAX_ROUNDS 200

typedef int (*heap_create_fn)(const char *, const posh_heap_options_t *,
                              posh_heap_t **);
typedef int (*heap_attach_fn)(const char *, posh_heap_t **);
typedef int (*heap_unlink_fn)(const char *);
typedef int (*heap_detach_fn)(posh_heap_t *);
typedef int (*dict_create_fn)(posh_heap_t *, const char *,
                              const posh_dict_options_t *, posh_obj_t **);
typedef int (*obj_open_fn)(posh_heap_t *, const char *, uint32_t,
                           posh_obj_t **);
typedef int (*obj_close_fn)(posh_obj_t *);
typedef int (*dict_set_fn)(posh_obj_t *, const void *, size_t, const void *,
                           size_t);
typedef int (*dict_get_fn)(posh_obj_t *, const void *, size_t, void *, size_t,
                           size_t *);
typedef const char *(*strerror_fn)(int);

/* One build: its entry points and its handles. */
typedef struct build {
  const char *path;
  void *lib;
  heap_unlink_fn heap_unlink;
  heap_detach_fn heap_detach;
  obj_close_fn obj_close;
  dict_get_fn dict_get;
  strerror_fn strerror;
  posh_heap_t *heap;
  posh_obj_t *dict;
} build_t;

static char heap_name[64];
static build_t *creator; /* unlinks the heap at exit */

static void cleanup(void) {
  if (creator && creator->heap_unlink)
    creator->heap_unlink(heap_name);
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "ab_dict_get: %s: %s\n", what, why);
  exit(1);
}

static void *sym(build_t *b, const char *name) {
  void *p = dlsym(b->lib, name);
  if (!p)
    die(b->path, dlerror());
  return p;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* bench_dict's keys: two 8-byte words from the index. */
static void make_key(unsigned char *k, uint64_t i) {
  uint64_t a = i * 0x9E3779B97F4A7C15ull, b = ~i * 0xBF58476D1CE4E5B9ull;
  memcpy(k, &a, 8);
  memcpy(k + 8, &b, 8);
}

static uint64_t env_u64(const char *name, uint64_t dflt) {
  const char *s = getenv(name);
  if (!s || !*s)
    return dflt;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || *end || v == 0)
    die(name, "not a positive integer");
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Load a build and set up its handles: the first creates and fills the
 * dict, the second opens it in the first one's heap. */
static void setup(build_t *b, int first, uint64_t nkeys,
                  const unsigned char *keys) {
  b->lib = dlmopen(LM_ID_NEWLM, b->path, RTLD_NOW | RTLD_LOCAL);
  if (!b->lib)
    die(b->path, dlerror());
  b->heap_unlink = (heap_unlink_fn)sym(b, "posh_heap_unlink");
  b->heap_detach = (heap_detach_fn)sym(b, "posh_heap_detach");
  b->obj_close = (obj_close_fn)sym(b, "posh_obj_close");
  b->dict_get = (dict_get_fn)sym(b, "posh_dict_get");
  b->strerror = (strerror_fn)sym(b, "posh_strerror");
  int r;
  if (first) {
    heap_create_fn create = (heap_create_fn)sym(b, "posh_heap_create");
    dict_create_fn dcreate = (dict_create_fn)sym(b, "posh_dict_create");
    dict_set_fn set = (dict_set_fn)sym(b, "posh_dict_set");
    posh_heap_options_t o = {0};
    o.capacity = 2ull << 30;
    if ((r = create(heap_name, &o, &b->heap)) != 0)
      die("heap create", b->strerror(r));
    creator = b;
    atexit(cleanup);
    posh_dict_options_t dopt = {nkeys};
    if ((r = dcreate(b->heap, "ab", &dopt, &b->dict)) != 0)
      die("dict create", b->strerror(r));
    unsigned char v[VLEN];
    memset(v, 'v', sizeof v);
    for (uint64_t i = 0; i < nkeys; i++)
      if ((r = set(b->dict, keys + i * KLEN, KLEN, v, VLEN)) != 0)
        die("dict set", b->strerror(r));
  } else {
    heap_attach_fn attach = (heap_attach_fn)sym(b, "posh_heap_attach");
    obj_open_fn open = (obj_open_fn)sym(b, "posh_obj_open");
    if ((r = attach(heap_name, &b->heap)) != 0)
      die("heap attach", b->strerror(r));
    if ((r = open(b->heap, "ab", POSH_OBJ_DICT, &b->dict)) != 0)
      die("dict open", b->strerror(r));
  }
}

/* per gets of the keys in seq from position *pos on: the rate. */
static double run(const build_t *b, const unsigned char *seq, uint64_t nkeys,
                  uint64_t *pos, uint64_t per) {
  unsigned char v[VLEN];
  size_t vl;
  uint64_t bad = 0, i = *pos;
  double t0 = now_s();
  for (uint64_t end = i + per; i < end; i++)
    bad += b->dict_get(b->dict, seq + (size_t)(i % nkeys) * KLEN, KLEN, v,
                       sizeof v, &vl) != 0;
  double dt = now_s() - t0;
  if (bad)
    die(b->path, "a get failed");
  *pos = i;
  return (double)per / dt;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s LIB_A LIB_B [ROUNDS]\n", argv[0]);
    return 2;
  }
  int rounds = 20;
  if (argc == 4) {
    rounds = atoi(argv[3]);
    if (rounds < 2 || rounds > MAX_ROUNDS)
      die("ROUNDS", "must be 2 to 200");
  }
  uint64_t nkeys = env_u64("AB_KEYS", 1000000);
  uint64_t per = env_u64("AB_PER", 400000);
  if (nkeys > UINT32_MAX)
    die("AB_KEYS", "too large");
  snprintf(heap_name, sizeof heap_name, "/posh-ab-%d", (int)getpid());

  /* Keys, and the order the gets visit them in (a fixed shuffle). */
  unsigned char *keys = malloc((size_t)nkeys * KLEN);
  unsigned char *seq = malloc((size_t)nkeys * KLEN);
  uint32_t *order = malloc((size_t)nkeys * sizeof *order);
  if (!keys || !seq || !order)
    die("memory", strerror(ENOMEM));
  for (uint64_t i = 0; i < nkeys; i++) {
    make_key(keys + i * KLEN, i);
    order[i] = (uint32_t)i;
  }
  uint64_t s = 88172645463325252ull;
  for (uint64_t i = nkeys - 1; i > 0; i--) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    uint64_t j = s % (i + 1);
    uint32_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (uint64_t i = 0; i < nkeys; i++)
    memcpy(seq + i * KLEN, keys + (size_t)order[i] * KLEN, KLEN);

  build_t b[2] = {{.path = argv[1]}, {.path = argv[2]}};
  setup(&b[0], 1, nkeys, keys);
  setup(&b[1], 0, nkeys, keys);

  static double rate[2][MAX_ROUNDS], ratio[MAX_ROUNDS];
  uint64_t pos = 0;
  run(&b[0], seq, nkeys, &pos, per / 2); /* warm up both */
  run(&b[1], seq, nkeys, &pos, per / 2);
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < 2; k++) {
      int w = (r & 1) ? 1 - k : k; /* AB, BA, AB, ... */
      rate[w][r] = run(&b[w], seq, nkeys, &pos, per);
    }
    ratio[r] = rate[1][r] / rate[0][r];
  }
  qsort(rate[0], (size_t)rounds, sizeof(double), cmp_double);
  qsort(rate[1], (size_t)rounds, sizeof(double), cmp_double);
  qsort(ratio, (size_t)rounds, sizeof(double), cmp_double);
  printf("A %s: median %.2f M gets/s\n", b[0].path, rate[0][rounds / 2] / 1e6);
  printf("B %s: median %.2f M gets/s\n", b[1].path, rate[1][rounds / 2] / 1e6);
  printf("B/A per round: median %.3f, quartiles %.3f %.3f (%d rounds of "
         "%llu gets, %llu keys)\n",
         ratio[rounds / 2], ratio[rounds / 4], ratio[(3 * rounds) / 4], rounds,
         (unsigned long long)per, (unsigned long long)nkeys);
  for (int k = 1; k >= 0; k--) {
    b[k].obj_close(b[k].dict);
    b[k].heap_detach(b[k].heap);
  }
  free(keys);
  free(seq);
  free(order);
  return 0;
}
