/* SPDX-License-Identifier: MIT */
/*
 * This file contains the allocator workloads of the benchmarks (threadtest,
 * alloc+free pairs, larson, producer/consumer), written once and run against
 * every allocator through a small vtable.  bench_alloc.c includes it for
 * posh, glibc and jemalloc, bench_alloc_boost.cpp for Boost.Interprocess, so
 * it is written in the common subset of C11 and C++11.
 *
 * Each workload function is always_inline and takes a vtable that is a
 * compile-time constant at its call site, so the compiler turns the vtable
 * calls into direct calls: the harness adds no indirect call to the
 * allocator's fast path.  Figures are the best of BW_REPS timed repetitions;
 * every repetition is bounded in time, not in operations, so a slow
 * allocator does not make the run long.
 *
 * The benchmarks sit outside the library and must build without it (the
 * baselines do not link libposh), so the ring uses GCC __atomic builtins
 * rather than the library's libatomic_ops wrapper (src/atomic.h is C-only
 * and internal).
 */
#ifndef BENCH_ALLOC_WORKLOADS_H
#define BENCH_ALLOC_WORKLOADS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BW_INLINE static inline __attribute__((always_inline))
#define BW_UNUSED __attribute__((unused))
#define BW_CACHELINE 64
#define BW_REPS 3

/* Threadtest: K objects of 64 bytes per round (Hoard's threadtest). */
#define BW_THREADTEST_K 1000
#define BW_THREADTEST_SIZE 64
/* Larson: slots per worker, sizes in [MIN, MAX], workers, thread lifetime. */
#define BW_LARSON_SLOTS 5000
#define BW_LARSON_MIN 16
#define BW_LARSON_MAX 1000
#define BW_LARSON_LANES 2
#define BW_LARSON_SLICE_NS 50000000ull /* each worker thread lives 50 ms */
/* Producer/consumer: block size and ring entries (a power of two). */
#define BW_PRODCON_SIZE 64
#define BW_RING_CAP 1024
/* The producer publishes its tail once per this many entries (a power of
 * two dividing 64 and BW_RING_CAP): one cache-line handoff per batch. */
#define BW_RING_BATCH 16
/* Spin rounds before a waiting side yields its core. */
#define BW_SPINS_BEFORE_YIELD 256
/* A side that makes no progress for this long reports failure. */
#define BW_STUCK_NS 10000000000ull

/* ------------------------------------------------------------------------
 * Allocator vtable.  ctx is passed separately so that the vtable itself can
 * be a static const object that the compiler folds.
 * ---------------------------------------------------------------------- */
typedef struct bw_alloc {
  const char *name; /* metric suffix: "posh", "glibc", "jemalloc", "boost" */
  void *(*alloc_fn)(void *ctx, size_t size);
  /* Returns 0, or non-zero when the allocator reports an error. */
  int (*free_fn)(void *ctx, void *p);
  /* Producer/consumer only: a block <-> a 64-bit handle that is valid in
   * another process mapping the same memory (non-zero for a block). */
  uint64_t (*to_handle_fn)(void *ctx, void *p);
  void *(*from_handle_fn)(void *ctx, uint64_t h);
} bw_alloc_t;

/* ------------------------------------------------------------------------
 * Clock, PRNG, output, options.
 * ---------------------------------------------------------------------- */
BW_INLINE uint64_t bw_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64* (Vigna): deterministic, seeded per worker. */
BW_INLINE uint64_t bw_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n) without a division (Lemire's multiply-shift). */
BW_INLINE uint32_t bw_rand_below(uint64_t *state, uint32_t n) {
  return (uint32_t)(((bw_rand(state) >> 32) * (uint64_t)n) >> 32);
}

/* Keep the compiler from proving a block dead (and dropping the malloc/free
 * pair or the stores into it). */
BW_INLINE void bw_escape(void *p) { __asm__ __volatile__("" : : "g"(p) : "memory"); }

BW_INLINE void bw_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

static BW_UNUSED void bw_print(const char *metric, double value,
                               const char *unit) {
  printf("BENCH %s %.6g %s\n", metric, value, unit);
  fflush(stdout);
}

static BW_UNUSED void bw_print3(const char *workload, const char *variant,
                                double value, const char *unit) {
  char metric[128];
  snprintf(metric, sizeof metric, "alloc.%s.%s", workload, variant);
  bw_print(metric, value, unit);
}

/* Length of one timed repetition: base_ms scaled by $BENCH_SCALE (default
 * 1; e.g. 0.1 under valgrind, 3 on a quiet machine for steadier figures). */
static BW_UNUSED uint64_t bw_rep_ns(unsigned base_ms) {
  static double scale = -1;
  if (scale < 0) {
    const char *s = getenv("BENCH_SCALE");
    scale = s ? strtod(s, NULL) : 1.0;
    if (!(scale > 0))
      scale = 1.0;
  }
  return (uint64_t)((double)base_ms * 1e6 * scale);
}

/* Command-line selection: with no arguments every metric runs; otherwise a
 * metric runs when one argument is a substring of its name
 * ("threadtest", "larson.posh", "alloc.prodcon.boost"). */
static int bw_argc;
static char **bw_argv;

static BW_UNUSED void bw_select_init(int argc, char **argv) {
  bw_argc = argc - 1;
  bw_argv = argv + 1;
}

static BW_UNUSED int bw_selected(const char *workload, const char *variant) {
  char metric[128];
  int i;
  if (bw_argc <= 0)
    return 1;
  snprintf(metric, sizeof metric, "alloc.%s.%s", workload, variant);
  for (i = 0; i < bw_argc; i++)
    if (strstr(metric, bw_argv[i]) != NULL)
      return 1;
  return 0;
}

static BW_UNUSED void bw_fail(const char *what, const char *variant,
                              const char *detail) {
  fprintf(stderr, "bench: alloc.%s.%s failed: %s\n", what, variant,
          detail ? detail : "");
}

/* ------------------------------------------------------------------------
 * Threadtest (Hoard): one thread; repeat { allocate K 64-byte objects and
 * write into each, free them all in allocation order }.  Returns the best
 * pairs/s over BW_REPS repetitions, or -1 on an allocation failure.
 * ---------------------------------------------------------------------- */
BW_INLINE double bw_threadtest(const bw_alloc_t *a, void *ctx, void **objs,
                               uint64_t rep_ns) {
  double best = 0;
  int rep;
  unsigned i;
  uint64_t errs = 0;
  for (rep = -1; rep < BW_REPS; rep++) { /* rep -1: untimed warm-up */
    uint64_t pairs = 0, t0 = bw_now_ns(), t;
    do {
      for (i = 0; i < BW_THREADTEST_K; i++) {
        uint64_t *p = (uint64_t *)a->alloc_fn(ctx, BW_THREADTEST_SIZE);
        if (p == NULL)
          return -1;
        p[0] = i;
        objs[i] = p;
      }
      for (i = 0; i < BW_THREADTEST_K; i++)
        errs += (uint64_t)(a->free_fn(ctx, objs[i]) != 0);
      pairs += BW_THREADTEST_K;
      t = bw_now_ns();
    } while (t - t0 < (rep < 0 ? rep_ns / 4 : rep_ns));
    if (rep >= 0 && (double)pairs * 1e9 / (double)(t - t0) > best)
      best = (double)pairs * 1e9 / (double)(t - t0);
  }
  return errs ? -1 : best;
}

/* ------------------------------------------------------------------------
 * Alloc+free pairs: one thread; allocate one 64-byte block, write it, free
 * it at once.  The best case of every allocator (one hot block).
 * ---------------------------------------------------------------------- */
BW_INLINE double bw_allocfree(const bw_alloc_t *a, void *ctx, uint64_t rep_ns) {
  double best = 0;
  int rep;
  unsigned i;
  uint64_t errs = 0;
  for (rep = -1; rep < BW_REPS; rep++) {
    uint64_t pairs = 0, t0 = bw_now_ns(), t;
    do {
      for (i = 0; i < 1024; i++) {
        uint64_t *p = (uint64_t *)a->alloc_fn(ctx, BW_THREADTEST_SIZE);
        if (p == NULL)
          return -1;
        p[0] = i;
        bw_escape(p);
        errs += (uint64_t)(a->free_fn(ctx, p) != 0);
      }
      pairs += 1024;
      t = bw_now_ns();
    } while (t - t0 < (rep < 0 ? rep_ns / 4 : rep_ns));
    if (rep >= 0 && (double)pairs * 1e9 / (double)(t - t0) > best)
      best = (double)pairs * 1e9 / (double)(t - t0);
  }
  return errs ? -1 : best;
}

/* ------------------------------------------------------------------------
 * Larson (Larson & Krishnan's server simulation, as in mimalloc-bench's
 * larson): BW_LARSON_LANES workers run at once; each owns an array of
 * BW_LARSON_SLOTS blocks of random sizes in [16, 1000].  One op frees a
 * random slot and allocates a block of a new random size into it.  A worker
 * thread lives BW_LARSON_SLICE_NS and then hands its array to a new thread,
 * so blocks are mostly freed by a thread other than the one that allocated
 * them.  Here the main thread runs the hand-off: it starts one thread per
 * lane, joins them after the slice and starts the next ones (joining makes
 * sure a thread's exit, including its allocator's thread-exit hook, is over
 * before the heap is torn down).
 *
 * The variant defines the thread entry with BW_LARSON_ENTRY so the loop is
 * compiled with its vtable as a constant.
 * ---------------------------------------------------------------------- */
typedef struct bw_lane {
  void *ctx;
  void **slot;      /* BW_LARSON_SLOTS blocks (process-private array) */
  uint32_t *size;   /* requested size of each block */
  uint64_t rng;     /* xorshift state, carried from thread to thread */
  uint64_t ops;     /* ops done by the last slice */
  uint64_t end_ns;  /* the slice ends at this time */
  int filled;       /* slot[] holds live blocks */
  int failed;       /* an allocation returned NULL or a free failed */
} bw_lane_t;

BW_INLINE void bw_larson_body(const bw_alloc_t *a, bw_lane_t *lane) {
  void *ctx = lane->ctx;
  void **slot = lane->slot;
  uint32_t *size = lane->size;
  uint64_t rng = lane->rng, ops = 0;
  uint32_t i;
  if (!lane->filled) {
    for (i = 0; i < BW_LARSON_SLOTS; i++) {
      uint32_t sz = BW_LARSON_MIN +
                    bw_rand_below(&rng, BW_LARSON_MAX - BW_LARSON_MIN + 1);
      uint64_t *p = (uint64_t *)a->alloc_fn(ctx, sz);
      if (p == NULL) {
        lane->failed = 1;
        lane->slot[i] = NULL;
        continue;
      }
      p[0] = sz;
      slot[i] = p;
      size[i] = sz;
    }
    lane->filled = 1;
  }
  for (;;) {
    for (i = 0; i < 256; i++) {
      uint32_t victim = bw_rand_below(&rng, BW_LARSON_SLOTS);
      uint32_t sz = BW_LARSON_MIN +
                    bw_rand_below(&rng, BW_LARSON_MAX - BW_LARSON_MIN + 1);
      uint64_t *p;
      if (slot[victim] != NULL && a->free_fn(ctx, slot[victim]) != 0)
        lane->failed = 1;
      p = (uint64_t *)a->alloc_fn(ctx, sz);
      if (p == NULL) {
        lane->failed = 1;
        slot[victim] = NULL;
        size[victim] = 0;
        continue;
      }
      p[0] = sz;
      slot[victim] = p;
      size[victim] = sz;
    }
    ops += 256;
    if (bw_now_ns() >= lane->end_ns || lane->failed)
      break;
  }
  lane->rng = rng;
  lane->ops = ops;
}

#define BW_LARSON_ENTRY(fn_name, vtable)                                       \
  static void *fn_name(void *arg) {                                            \
    bw_larson_body(&(vtable), (bw_lane_t *)arg);                               \
    return NULL;                                                               \
  }

/* Fill the lanes' arrays (untimed), then run BW_REPS timed repetitions of
 * rep_ns each.  Returns the best ops/s, or -1.  The blocks stay live
 * afterwards (for the overhead figure); free them with bw_larson_drain. */
static BW_UNUSED double bw_larson(void *(*entry)(void *), void *ctx,
                                  bw_lane_t *lanes, uint64_t rep_ns) {
  double best = 0;
  int rep, l;
  for (l = 0; l < BW_LARSON_LANES; l++) {
    lanes[l].ctx = ctx;
    lanes[l].slot = (void **)calloc(BW_LARSON_SLOTS, sizeof(void *));
    lanes[l].size = (uint32_t *)calloc(BW_LARSON_SLOTS, sizeof(uint32_t));
    lanes[l].rng = 0x9E3779B97F4A7C15ull * (uint64_t)(l + 1);
    lanes[l].filled = 0;
    lanes[l].failed = 0;
    if (lanes[l].slot == NULL || lanes[l].size == NULL)
      return -1;
  }
  for (rep = -1; rep < BW_REPS; rep++) { /* rep -1: fill + warm-up slice */
    uint64_t ops = 0, t0 = bw_now_ns(), t = t0;
    do {
      pthread_t tid[BW_LARSON_LANES];
      uint64_t end = t + BW_LARSON_SLICE_NS;
      if (rep >= 0 && end > t0 + rep_ns)
        end = t0 + rep_ns;
      int started = 0, failed = 0;
      for (l = 0; l < BW_LARSON_LANES; l++) {
        lanes[l].end_ns = end;
        if (pthread_create(&tid[l], NULL, entry, &lanes[l]) != 0)
          break;
        started++;
      }
      for (l = 0; l < started; l++) {
        pthread_join(tid[l], NULL);
        ops += lanes[l].ops;
        failed |= lanes[l].failed;
      }
      if (failed || started < BW_LARSON_LANES)
        return -1;
      t = bw_now_ns();
    } while (rep >= 0 && t - t0 < rep_ns);
    if (rep >= 0 && (double)ops * 1e9 / (double)(t - t0) > best)
      best = (double)ops * 1e9 / (double)(t - t0);
  }
  return best;
}

/* Bytes requested by the blocks still live in the lanes. */
static BW_UNUSED uint64_t bw_larson_live_bytes(const bw_lane_t *lanes) {
  uint64_t sum = 0;
  int l;
  uint32_t i;
  for (l = 0; l < BW_LARSON_LANES; l++)
    for (i = 0; i < BW_LARSON_SLOTS && lanes[l].slot != NULL; i++)
      if (lanes[l].slot[i] != NULL)
        sum += lanes[l].size[i];
  return sum;
}

/* Free every live block (from the calling thread) and the arrays. */
BW_INLINE void bw_larson_drain(const bw_alloc_t *a, bw_lane_t *lanes) {
  int l;
  uint32_t i;
  for (l = 0; l < BW_LARSON_LANES; l++) {
    for (i = 0; i < BW_LARSON_SLOTS && lanes[l].slot != NULL; i++)
      if (lanes[l].slot[i] != NULL)
        a->free_fn(lanes[l].ctx, lanes[l].slot[i]);
    free(lanes[l].slot);
    free(lanes[l].size);
    lanes[l].slot = NULL;
    lanes[l].size = NULL;
  }
}

/* ------------------------------------------------------------------------
 * Producer/consumer across two processes: a single-producer single-consumer
 * ring of block handles in shared memory (the caller places it in the heap
 * under test).  The producer (the parent) allocates 64-byte blocks, writes a
 * tag into each and pushes their handles; the consumer (a forked child that
 * attaches the heap itself) checks the tag and frees the block.  A
 * repetition stops when the consumer has freed every pushed block.
 *
 * Invariants: tail is written only by the producer, head only by the
 * consumer; entries [head, tail) are published and not yet consumed.
 * ---------------------------------------------------------------------- */
typedef struct bw_ring {
  /* Next entry the consumer will take.  Written by the consumer
   * (release), read by the producer (acquire). */
  __attribute__((aligned(BW_CACHELINE))) uint64_t xhead;
  /* Next entry the producer will fill.  Written by the producer
   * (release), read by the consumer (acquire). */
  __attribute__((aligned(BW_CACHELINE))) uint64_t xtail;
  /* Control words, each written by one side (release) and read by the
   * other (acquire). */
  __attribute__((aligned(BW_CACHELINE))) uint32_t xready; /* consumer */
  uint32_t xquit;                                         /* producer */
  uint32_t xbad;   /* consumer: tags that did not match, failed frees */
  __attribute__((aligned(BW_CACHELINE))) uint64_t entry[BW_RING_CAP];
} bw_ring_t;

BW_INLINE uint64_t bw_load_acquire(const uint64_t *p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
BW_INLINE void bw_store_release(uint64_t *p, uint64_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
BW_INLINE uint32_t bw_load32_acquire(const uint32_t *p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
BW_INLINE void bw_store32_release(uint32_t *p, uint32_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static BW_UNUSED void bw_ring_init(bw_ring_t *r) { memset(r, 0, sizeof *r); }

/* Pin the calling process to the n-th CPU (n = 0 producer, 1 consumer) of
 * the set it may run on, so that the two sides always run on two cores.
 * Unpinned, when a third process takes a core, producer and consumer share
 * the other one and trade the ring by time slices, with no cache-line
 * traffic at all: the figure then measures the scheduler (it jumps ~4x),
 * not cross-core allocation.  Skipped with fewer than two CPUs or when
 * $BENCH_NO_PIN is set.  *saved (may be NULL) gets the previous set. */
static BW_UNUSED int bw_pin_cpu(int n, cpu_set_t *saved) {
  cpu_set_t allowed, one;
  int cpu, seen = 0;
  if (getenv("BENCH_NO_PIN") != NULL)
    return 0;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 ||
      CPU_COUNT(&allowed) < 2)
    return 0;
  if (saved != NULL)
    *saved = allowed;
  for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (!CPU_ISSET(cpu, &allowed))
      continue;
    if (seen++ == n) {
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      return sched_setaffinity(0, sizeof one, &one) == 0;
    }
  }
  return 0;
}

/* Consumer loop, in the child.  ctx is the child's own view of the heap. */
BW_INLINE int bw_consumer(const bw_alloc_t *a, void *ctx, bw_ring_t *r) {
  uint64_t head = r->xhead, tail;
  uint32_t bad = 0;
  unsigned spins = 0;
  bw_pin_cpu(1, NULL);
  /* Release pairs with the producer's acquire-load of xready: the child is
   * attached before the parent starts its clock. */
  bw_store32_release(&r->xready, 1);
  for (;;) {
    /* Acquire pairs with the producer's release-store of xtail, so the
     * entries in [head, tail) and the blocks they name are written. */
    tail = bw_load_acquire(&r->xtail);
    if (tail == head) {
      /* Acquire pairs with the producer's release-store of xquit, which
       * follows its last push: an empty ring then is empty for good. */
      if (bw_load32_acquire(&r->xquit) &&
          bw_load_acquire(&r->xtail) == head)
        break;
      if (++spins < BW_SPINS_BEFORE_YIELD)
        bw_cpu_relax();
      else {
        spins = 0;
        sched_yield();
      }
      continue;
    }
    spins = 0;
    while (head != tail) {
      /* Check up to a batch of tags, then free those blocks.  Each tag
       * load fetches a line the producer just wrote; checked one by one
       * between frees, every load waited behind the previous free's
       * locked instruction (a full barrier on x86), so the ring, not the
       * allocator, set the pace.  Checked first, the loads overlap. */
      uint64_t *blk[BW_RING_BATCH];
      unsigned n = 0, j;
      while (head + n != tail && n < BW_RING_BATCH) {
        uint64_t h = r->entry[(head + n) & (BW_RING_CAP - 1)];
        uint64_t *p = (uint64_t *)a->from_handle_fn(ctx, h);
        if (p == NULL || p[0] != head + n) {
          bad++;
          p = NULL;
        }
        blk[n++] = p;
      }
      for (j = 0; j < n; j++)
        if (blk[j] != NULL && a->free_fn(ctx, blk[j]) != 0)
          bad++;
      head += n;
    }
    /* Release pairs with the producer's acquire-load of xhead: the entries
     * are read (and their blocks freed) before their slots are reused. */
    bw_store_release(&r->xhead, head);
  }
  __atomic_store_n(&r->xbad, bad, __ATOMIC_RELEASE);
  return bad ? 1 : 0;
}

/* Producer side, in the parent, after the child has been forked.  Returns
 * the best pairs/s over BW_REPS repetitions, or -1 (the child is told to
 * quit in every case; the caller reaps it). */
BW_INLINE double bw_producer(const bw_alloc_t *a, void *ctx, bw_ring_t *r,
                             pid_t child, uint64_t rep_ns) {
  uint64_t tail = r->xtail, head = bw_load_acquire(&r->xhead);
  uint64_t stuck_since = bw_now_ns();
  double best = 0;
  int rep, status;
  unsigned spins = 0;
  cpu_set_t saved;
  int pinned = bw_pin_cpu(0, &saved);
  /* Wait until the child has attached (acquire pairs with its release). */
  while (!bw_load32_acquire(&r->xready)) {
    if (waitpid(child, &status, WNOHANG) == child) {
      if (pinned)
        sched_setaffinity(0, sizeof saved, &saved);
      return -1;
    }
    if (bw_now_ns() - stuck_since > BW_STUCK_NS)
      goto fail;
    sched_yield();
  }
  for (rep = -1; rep < BW_REPS; rep++) { /* rep -1: untimed warm-up */
    uint64_t start_tail = tail, t0 = bw_now_ns(), t = t0;
    uint64_t limit = rep < 0 ? rep_ns / 4 : rep_ns;
    while (t - t0 < limit) {
      unsigned i;
      for (i = 0; i < 64; i++) {
        uint64_t *p;
        if (tail - head == BW_RING_CAP) {
          /* Full: acquire pairs with the consumer's release of xhead. */
          stuck_since = bw_now_ns();
          while ((head = bw_load_acquire(&r->xhead)) + BW_RING_CAP == tail) {
            if (++spins < BW_SPINS_BEFORE_YIELD) {
              bw_cpu_relax();
              continue;
            }
            spins = 0;
            sched_yield();
            if (bw_now_ns() - stuck_since > BW_STUCK_NS)
              goto fail;
          }
        }
        p = (uint64_t *)a->alloc_fn(ctx, BW_PRODCON_SIZE);
        if (p == NULL)
          goto fail;
        p[0] = tail; /* tag: the consumer checks it */
        r->entry[tail & (BW_RING_CAP - 1)] = a->to_handle_fn(ctx, p);
        tail++;
        if ((tail & (BW_RING_BATCH - 1)) == 0)
          /* Release pairs with the consumer's acquire-load of xtail: the
           * entries and their blocks' tags are written before they are
           * published.  Once per batch, so the line holding xtail moves
           * between the cores once per BW_RING_BATCH blocks. */
          bw_store_release(&r->xtail, tail);
      }
      t = bw_now_ns();
    }
    bw_store_release(&r->xtail, tail); /* the rest of the last batch */
    /* Drain: the repetition ends when every block has been freed. */
    stuck_since = bw_now_ns();
    while ((head = bw_load_acquire(&r->xhead)) != tail) {
      bw_cpu_relax();
      if (bw_now_ns() - stuck_since > BW_STUCK_NS)
        goto fail;
    }
    t = bw_now_ns();
    if (rep >= 0 && (double)(tail - start_tail) * 1e9 / (double)(t - t0) > best)
      best = (double)(tail - start_tail) * 1e9 / (double)(t - t0);
  }
  /* Release pairs with the consumer's acquire-load of xquit. */
  bw_store32_release(&r->xquit, 1);
  if (pinned)
    sched_setaffinity(0, sizeof saved, &saved);
  return best;
fail:
  bw_store32_release(&r->xquit, 1);
  kill(child, SIGKILL);
  if (pinned)
    sched_setaffinity(0, sizeof saved, &saved);
  return -1;
}

/* Reap the consumer; -1 when it failed or reported bad blocks. */
static BW_UNUSED int bw_reap_consumer(pid_t child, bw_ring_t *r) {
  int status;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return -1;
  return __atomic_load_n(&r->xbad, __ATOMIC_ACQUIRE) ? -1 : 0;
}

#endif /* BENCH_ALLOC_WORKLOADS_H */
