/* SPDX-License-Identifier: MIT */
/*
 * This file contains the allocator's kill -9 torture test: forked workers
 * allocate, fill, publish, verify and free blocks of random sizes (small,
 * medium and page runs, freed locally and by other processes) while the
 * parent SIGKILLs them at random instants, at least POSH_TORTURE_KILLS
 * times (default 1000).  Every so often and at the end the parent stops all
 * workers, reaps them, runs the full consistency check and verifies every
 * published block: still allocated, contents intact (a block handed out
 * twice would have been overwritten).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "posh.h"
#include "atomic.h"

#define WORKERS 3
#define SLOTS_PER_WORKER 512
#define NSLOTS (WORKERS * SLOTS_PER_WORKER)
#define BLOCK_MAGIC 0x706f7368626c6b21ull

/* Shared control block, in the heap, bound as "torture.table". */
struct torture_shared {
  /* Published blocks (heap offsets, 0 = empty).  Synchronization: atomic
   * exchange; the release in the publishing exchange pairs with the
   * acquire of whoever takes the slot, so contents are visible. */
  posh_atomic_t xslot[NSLOTS];
  /* Set by a worker that found a corrupted block.  Atomic. */
  posh_atomic_t xfailures;
  posh_atomic_t xops;
};

struct block_head {
  uint64_t magic;
  uint64_t size; /* whole block, header included */
  uint64_t hash; /* XXH3 of the bytes after the header */
};

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static size_t random_size(uint64_t *rng) {
  uint64_t r = rng_next(rng) % 100;
  if (r < 70)
    return sizeof(struct block_head) + rng_next(rng) % 1000;
  if (r < 97)
    return sizeof(struct block_head) + rng_next(rng) % 16000;
  return 70000 + rng_next(rng) % 300000; /* page runs */
}

static void fill_block(void *p, size_t size, uint64_t seed) {
  struct block_head *h = p;
  unsigned char *d = (unsigned char *)(h + 1);
  size_t n = size - sizeof *h;
  uint64_t s = seed | 1;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng_next(&s);
    memcpy(d + i, &v, n - i < 8 ? n - i : 8);
  }
  h->size = size;
  h->hash = XXH3_64bits(d, n);
  h->magic = BLOCK_MAGIC;
}

static int block_ok(const void *p) {
  const struct block_head *h = p;
  if (h->magic != BLOCK_MAGIC || h->size < sizeof *h || h->size > (1u << 20))
    return 0;
  return XXH3_64bits(h + 1, h->size - sizeof *h) == h->hash;
}

static void worker(posh_heap_t *heap, struct torture_shared *sh, int id,
                   uint64_t seed) {
  uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
  for (;;) {
    /* Mostly our own slots; sometimes another worker's (remote free). */
    int region = rng_next(&rng) % 8 == 0 ? (int)(rng_next(&rng) % WORKERS) : id;
    uint64_t i = (uint64_t)region * SLOTS_PER_WORKER + rng_next(&rng) % SLOTS_PER_WORKER;
    uint64_t off = posh_atomic_exchange_full(&sh->xslot[i], 0);
    if (off) {
      void *p = posh_ptr(heap, (posh_off_t){off});
      if (!block_ok(p))
        posh_atomic_fetch_add_full(&sh->xfailures, 1);
      if (posh_free(heap, p) != 0)
        posh_atomic_fetch_add_full(&sh->xfailures, 1);
      continue;
    }
    size_t size = random_size(&rng);
    void *p = posh_alloc(heap, size);
    if (!p)
      continue; /* transient exhaustion is allowed: the parent reaps */
    fill_block(p, size, rng_next(&rng));
    uint64_t prev = posh_atomic_exchange_full(&sh->xslot[i], posh_off(heap, p).v);
    if (prev) { /* someone published meanwhile: free theirs */
      void *q = posh_ptr(heap, (posh_off_t){prev});
      if (!block_ok(q) || posh_free(heap, q) != 0)
        posh_atomic_fetch_add_full(&sh->xfailures, 1);
    }
    posh_atomic_fetch_add_full(&sh->xops, 1);
  }
}

static pid_t spawn(posh_heap_t *heap, struct torture_shared *sh, int id,
                   uint64_t seed) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(120); /* never outlive a broken parent */
    worker(heap, sh, id, seed);
    _exit(0);
  }
  return pid;
}

static void kill_and_wait(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

/* With every worker stopped: reap, check, verify every published block. */
static void verify_quiescent(posh_heap_t *heap, struct torture_shared *sh,
                             unsigned *published_out) {
  char report[4096];
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(heap, &reaped), 0);
  int r = posh_heap_check(heap, report, sizeof report);
  if (r != 0)
    fprintf(stderr, "posh_heap_check: %s\n%s", posh_err_name(r), report);
  assert_int_equal(r, 0);
  unsigned published = 0;
  for (int i = 0; i < NSLOTS; i++) {
    uint64_t off = posh_atomic_load_acquire(&sh->xslot[i]);
    if (!off)
      continue;
    void *p = posh_ptr(heap, (posh_off_t){off});
    assert_int_equal(posh_block_state(heap, p), POSH_BLOCK_ALLOCATED);
    assert_true(block_ok(p));
    published++;
  }
  assert_int_equal(posh_atomic_load_acquire(&sh->xfailures), 0);
  if (published_out)
    *published_out = published;
}

/* Workers SIGKILLed at random instants never corrupt the heap, lose a
 * published block, or get a live block handed out twice. */
static void test_kill9_torture(void **state) {
  (void)state;
  const char *env = getenv("POSH_TORTURE_KILLS");
  int kills_wanted = env ? atoi(env) : 1000;
  /* Anonymous (memfd): the forked workers share it, and nothing is left
   * in /dev/shm if this test fails or is killed. */
  posh_heap_options_t opts = {.capacity = 512ull << 20};
  posh_heap_t *heap;
  assert_int_equal(posh_heap_create(NULL, &opts, &heap), 0);
  posh_off_t table = posh_alloc_off(heap, sizeof(struct torture_shared));
  assert_false(posh_off_is_null(table));
  struct torture_shared *sh = posh_ptr(heap, table);
  memset(sh, 0, sizeof *sh);
  assert_int_equal(posh_name_bind(heap, "torture.table", table, 1), 0);

  pid_t pids[WORKERS];
  uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)getpid();
  fprintf(stderr, "torture seed %llu, %d kills\n", (unsigned long long)seed,
          kills_wanted);
  uint64_t rng = seed | 1;
  for (int w = 0; w < WORKERS; w++)
    pids[w] = spawn(heap, sh, w, rng_next(&rng));

  int kills = 0;
  while (kills < kills_wanted) {
    /* Let them run a random while: from "just forked" to a few ms. */
    usleep((useconds_t)(rng_next(&rng) % 4000));
    int w = (int)(rng_next(&rng) % WORKERS);
    kill_and_wait(pids[w]);
    kills++;
    if (kills % 200 == 0) {
      for (int k = 0; k < WORKERS; k++)
        if (k != w) {
          kill_and_wait(pids[k]);
          kills++;
        }
      unsigned published;
      verify_quiescent(heap, sh, &published);
      for (int k = 0; k < WORKERS; k++)
        pids[k] = spawn(heap, sh, k, rng_next(&rng));
      continue;
    }
    posh_heap_reap(heap, NULL);
    pids[w] = spawn(heap, sh, w, rng_next(&rng));
  }
  for (int w = 0; w < WORKERS; w++) {
    kill_and_wait(pids[w]);
    kills++;
  }
  unsigned published;
  verify_quiescent(heap, sh, &published);

  /* The survivor now allocates heavily, adopting the dead workers' pages:
   * the published blocks must come through untouched. */
  enum { EXTRA = 20000 };
  void **extra = calloc(EXTRA, sizeof *extra);
  assert_non_null(extra);
  for (int i = 0; i < EXTRA; i++) {
    size_t size = random_size(&rng);
    if (size > 20000)
      size = 64;
    extra[i] = posh_alloc(heap, size);
    assert_non_null(extra[i]);
    fill_block(extra[i], size, rng_next(&rng));
  }
  verify_quiescent(heap, sh, NULL);
  for (int i = 0; i < EXTRA; i++) {
    assert_true(block_ok(extra[i]));
    assert_int_equal(posh_free(heap, extra[i]), 0);
  }
  free(extra);
  for (int i = 0; i < NSLOTS; i++) {
    uint64_t off = posh_atomic_exchange_full(&sh->xslot[i], 0);
    if (off)
      assert_int_equal(posh_free(heap, posh_ptr(heap, (posh_off_t){off})), 0);
  }
  char report[4096];
  assert_int_equal(posh_heap_check(heap, report, sizeof report), 0);
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(heap, &st), 0);
  fprintf(stderr,
          "torture: %d kills, %llu worker ops, %u blocks published at the end, "
          "%llu bytes still in use after freeing everything (blocks in flight "
          "when their process was killed)\n",
          kills, (unsigned long long)posh_atomic_load_relaxed(&sh->xops),
          published, (unsigned long long)st.bytes_in_use);
  assert_int_equal(posh_name_unbind(heap, "torture.table", table), 0);
  assert_int_equal(posh_heap_detach(heap), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kill9_torture),
  };
  return cmocka_run_group_tests_name("torture", tests, NULL, NULL);
}
