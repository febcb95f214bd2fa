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
 *
 * A block a worker holds between two steps (being filled after its
 * allocation, or being verified before its free) is marked in its slot
 * (SLOT_HELD), so after a kill the parent finds it and frees it, as an
 * application's recovery would.  What is left in use after everything is
 * freed is then only what the allocator itself can lose to a kill: the
 * block whose allocation or free was cut short, plus the few instructions
 * between posh_alloc's return and the slot's update.  The test bounds that
 * and prints it.
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

/* A slot's low bit (offsets are 16-byte aligned): a worker holds the slot
 * (and the block in the rest of the word, if any); others leave it alone. */
#define SLOT_HELD 1ull

/* Shared control block, in the heap, bound as "torture.table". */
struct torture_shared {
  /* 0 empty; an offset: a published block; offset | SLOT_HELD (offset may
   * be 0): held by a worker.  Synchronization: CAS to take or claim; the
   * release of the publishing store pairs with the acquire of the CAS of
   * whoever takes the block, so contents are visible. */
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
  /* Register this process and thread before taking any block.  A forked
   * child's first call does it (~0.5 ms here, most of it first-touch page
   * faults of the child's own memory, ~15 us each on this VM); inside the
   * forget-then-free window below it made the first free of every fresh
   * worker a long window (~70 blocks lost per 1000 kills, against ~12). */
  void *warm = posh_alloc(heap, 64);
  if (warm && posh_free(heap, warm) != 0) /* NULL: transient exhaustion */
    posh_atomic_fetch_add_full(&sh->xfailures, 1);
  for (;;) {
    /* Mostly our own slots; sometimes another worker's (remote free). */
    int region = rng_next(&rng) % 8 == 0 ? (int)(rng_next(&rng) % WORKERS) : id;
    uint64_t i = (uint64_t)region * SLOTS_PER_WORKER + rng_next(&rng) % SLOTS_PER_WORKER;
    uint64_t v = posh_atomic_load_acquire(&sh->xslot[i]);
    if (v & SLOT_HELD)
      continue; /* another worker's, or a dead one's (the parent frees it) */
    if (!posh_atomic_cas_bool_full(&sh->xslot[i], v, v | SLOT_HELD))
      continue;
    if (v) { /* a published block: verify, then free it */
      void *p = posh_ptr(heap, (posh_off_t){v});
      if (!block_ok(p))
        posh_atomic_fetch_add_full(&sh->xfailures, 1);
      /* Forget the block before freeing it: a kill in between loses this
       * one block, where the other order could free it twice. */
      posh_atomic_store_release(&sh->xslot[i], SLOT_HELD);
      if (posh_free(heap, p) != 0)
        posh_atomic_fetch_add_full(&sh->xfailures, 1);
      posh_atomic_store_release(&sh->xslot[i], 0);
      continue;
    }
    size_t size = random_size(&rng);
    void *p = posh_alloc(heap, size);
    if (!p) { /* transient exhaustion is allowed: the parent reaps */
      posh_atomic_store_release(&sh->xslot[i], 0);
      continue;
    }
    uint64_t off = posh_off(heap, p).v;
    posh_atomic_store_release(&sh->xslot[i], off | SLOT_HELD);
    fill_block(p, size, rng_next(&rng));
    posh_atomic_store_release(&sh->xslot[i], off); /* published */
    posh_atomic_fetch_add_full(&sh->xops, 1);
  }
}

/* With every worker dead: free the blocks the killed workers held and
 * release their slots.  Returns the blocks freed. */
static unsigned recover_held(posh_heap_t *heap, struct torture_shared *sh) {
  unsigned n = 0;
  for (int i = 0; i < NSLOTS; i++) {
    uint64_t v = posh_atomic_load_acquire(&sh->xslot[i]);
    if (!(v & SLOT_HELD))
      continue;
    uint64_t off = v & ~SLOT_HELD;
    if (off) {
      void *p = posh_ptr(heap, (posh_off_t){off});
      assert_int_equal(posh_block_state(heap, p), POSH_BLOCK_ALLOCATED);
      assert_int_equal(posh_free(heap, p), 0);
      n++;
    }
    posh_atomic_store_release(&sh->xslot[i], 0);
  }
  return n;
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

static unsigned held_recovered; /* blocks recover_held freed, in all */

/* With every worker stopped: reap, free what the dead held, check, verify
 * every published block. */
static void verify_quiescent(posh_heap_t *heap, struct torture_shared *sh,
                             unsigned *published_out) {
  char report[4096];
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(heap, &reaped), 0);
  held_recovered += recover_held(heap, sh);
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
  assert_int_equal(posh_name_unbind(heap, "torture.table", table), 0);
  uint64_t ops = posh_atomic_load_relaxed(&sh->xops);
  assert_int_equal(posh_free_off(heap, table), 0);
  char report[4096];
  assert_int_equal(posh_heap_check(heap, report, sizeof report), 0);
  /* Everything the test knows of is freed: what is still in use was lost
   * to a kill inside the allocator's own window (see the file comment). */
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(heap, &st), 0);
  uint64_t lost_small = 0;
  for (uint32_t c = 0; c < st.size_classes; c++)
    lost_small += st.classes[c].blocks_in_use;
  fprintf(stderr,
          "torture: %d kills, %llu worker ops, %u blocks published at the end, "
          "%u held blocks recovered after kills; lost to kills: %llu small "
          "blocks, %llu large-run pages, %llu bytes\n",
          kills, (unsigned long long)ops, published, held_recovered,
          (unsigned long long)lost_small, (unsigned long long)st.pages_large,
          (unsigned long long)st.bytes_in_use);
  /* Measured: about 1 small block and 2 pages of large runs per 100 kills
   * (the windows are a few instructions of each operation, a page run's
   * free a little longer).  The bounds are ten times that: a kill that
   * lost a block it should not have (an unrecovered page, a held block
   * the recovery missed) costs far more than the window does.  (Five to
   * ten times: the run pages are at two per hundred.) */
  assert_true(lost_small <= (uint64_t)kills / 10);
  assert_true(st.pages_large <= (uint64_t)kills / 10);
  assert_int_equal(posh_heap_detach(heap), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kill9_torture),
  };
  return cmocka_run_group_tests_name("torture", tests, NULL, NULL);
}
