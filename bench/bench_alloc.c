/* SPDX-License-Identifier: MIT */
/*
 * This file contains the allocator benchmark driver for libposh and its
 * process-private baselines.  Built twice: bench/bench_alloc runs the posh
 * and glibc variants (threadtest, allocfree, larson with the posh overhead
 * figures, and posh's two-process producer/consumer); built with
 * -DBENCH_JEMALLOC and linked with the unprefixed jemalloc instead of
 * libposh, bench/bench_alloc_jemalloc runs the jemalloc variants.  The
 * workloads themselves live in alloc_workloads.h.
 *
 * Usage: bench_alloc [FILTER...]; a metric runs when a FILTER is a substring
 * of its name (no FILTER: all).  $BENCH_SCALE scales the time per figure.
 */
#include "alloc_workloads.h"

#ifdef BENCH_JEMALLOC
/* ------------------------------------------------------------------------
 * jemalloc.  Debian's libjemalloc is unprefixed: linked into this program
 * it is malloc/free.  mallctl (declared here, not through <jemalloc.h>, so
 * the system declarations of malloc stay the only ones) proves that it is.
 * ---------------------------------------------------------------------- */
int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp,
            size_t newlen);

static void *je_alloc(void *ctx, size_t size) { return malloc(size); }
static int je_free(void *ctx, void *p) {
  free(p);
  return 0;
}
static const bw_alloc_t bw_jemalloc = {"jemalloc", je_alloc, je_free, NULL,
                                       NULL};
BW_LARSON_ENTRY(je_larson_entry, bw_jemalloc)

#else /* posh + glibc */
#include <posh.h>

/* ------------------------------------------------------------------------
 * glibc.  Called through __libc_malloc/__libc_free (what malloc/free are in
 * glibc) so that the baseline stays ptmalloc even if something linked into
 * this program (libposh may use jemalloc for private memory) replaces
 * malloc.
 * ---------------------------------------------------------------------- */
extern void *__libc_malloc(size_t size);
extern void __libc_free(void *p);

static void *glibc_alloc(void *ctx, size_t size) { return __libc_malloc(size); }
static int glibc_free(void *ctx, void *p) {
  __libc_free(p);
  return 0;
}
static const bw_alloc_t bw_glibc = {"glibc", glibc_alloc, glibc_free, NULL,
                                    NULL};
BW_LARSON_ENTRY(glibc_larson_entry, bw_glibc)

/* ------------------------------------------------------------------------
 * posh.  Handles are heap offsets.
 * ---------------------------------------------------------------------- */
static void *posh_a(void *ctx, size_t size) {
  return posh_alloc((posh_heap_t *)ctx, size);
}
static int posh_f(void *ctx, void *p) { return posh_free((posh_heap_t *)ctx, p); }
static uint64_t posh_h(void *ctx, void *p) {
  return posh_off((posh_heap_t *)ctx, p).v;
}
static void *posh_p(void *ctx, uint64_t h) {
  posh_off_t off;
  off.v = h;
  return posh_ptr((posh_heap_t *)ctx, off);
}
static const bw_alloc_t bw_posh = {"posh", posh_a, posh_f, posh_h, posh_p};
BW_LARSON_ENTRY(posh_larson_entry, bw_posh)

/* Create a named heap with a name unique to this process and run. */
static posh_heap_t *posh_bench_heap(const char *tag, char *name, size_t len) {
  static unsigned seq;
  posh_heap_options_t opts;
  posh_heap_t *heap = NULL;
  int rc;
  snprintf(name, len, "/posh-bench-%ld-%s-%u", (long)getpid(), tag, seq++);
  memset(&opts, 0, sizeof opts);
  opts.capacity = 1ull << 30; /* reserved sparsely */
  rc = posh_heap_create(name, &opts, &heap);
  if (rc != 0) {
    fprintf(stderr, "bench: posh_heap_create(%s): %s\n", name,
            posh_strerror(rc));
    return NULL;
  }
  return heap;
}

static void posh_bench_heap_done(posh_heap_t *heap, const char *name,
                                 int unlinked) {
  if (!unlinked)
    posh_heap_unlink(name);
  posh_heap_detach(heap);
}

static int run_posh_single(void **objs) {
  char name[POSH_NAME_MAX + 1];
  posh_heap_t *heap;
  double r;
  int failed = 0;

  if (bw_selected("threadtest", "posh")) {
    if ((heap = posh_bench_heap("tt", name, sizeof name)) == NULL)
      return 1;
    posh_heap_unlink(name); /* one process: the name is not needed */
    r = bw_threadtest(&bw_posh, heap, objs, bw_rep_ns(200));
    if (r < 0) {
      bw_fail("threadtest", "posh", posh_strerror(posh_last_error()));
      failed = 1;
    } else
      bw_print3("threadtest", "posh", r, "pairs/s");
    posh_bench_heap_done(heap, name, 1);
  }
  if (bw_selected("allocfree", "posh")) {
    if ((heap = posh_bench_heap("af", name, sizeof name)) == NULL)
      return 1;
    posh_heap_unlink(name);
    r = bw_allocfree(&bw_posh, heap, bw_rep_ns(100));
    if (r < 0) {
      bw_fail("allocfree", "posh", posh_strerror(posh_last_error()));
      failed = 1;
    } else
      bw_print3("allocfree", "posh", r, "pairs/s");
    posh_bench_heap_done(heap, name, 1);
  }
  return failed;
}

static int run_posh_larson(void) {
  char name[POSH_NAME_MAX + 1];
  bw_lane_t lanes[BW_LARSON_LANES];
  posh_heap_stats_t st;
  posh_heap_t *heap;
  uint64_t live;
  double r;
  int rc, failed = 0;

  if (!bw_selected("larson", "posh"))
    return 0;
  if ((heap = posh_bench_heap("la", name, sizeof name)) == NULL)
    return 1;
  posh_heap_unlink(name);
  memset(lanes, 0, sizeof lanes);
  r = bw_larson(posh_larson_entry, heap, lanes, bw_rep_ns(300));
  if (r < 0) {
    bw_fail("larson", "posh", posh_strerror(posh_last_error()));
    failed = 1;
  } else {
    bw_print3("larson", "posh", r, "ops/s");
    /* Overhead at the end of the run, every worker thread gone: heap bytes
     * in use (live blocks rounded to their class) and pages held, against
     * the bytes requested by the blocks still live. */
    live = bw_larson_live_bytes(lanes);
    rc = posh_heap_stats(heap, &st);
    if (rc != 0 || live == 0) {
      bw_fail("larson", "posh.overhead", posh_strerror(rc));
      failed = 1;
    } else {
      fprintf(stderr,
              "bench: larson.posh end: live requested %llu B, bytes_in_use "
              "%llu B, pages small %llu large %llu (x %llu B), bytes_free "
              "%llu B\n",
              (unsigned long long)live, (unsigned long long)st.bytes_in_use,
              (unsigned long long)st.pages_small,
              (unsigned long long)st.pages_large,
              (unsigned long long)st.page_size,
              (unsigned long long)st.bytes_free);
      bw_print("alloc.larson.posh.overhead",
               (double)st.bytes_in_use / (double)live, "ratio");
      bw_print("alloc.larson.posh.overhead_pages",
               (double)((st.pages_small + st.pages_large) * st.page_size) /
                   (double)live,
               "ratio");
    }
  }
  bw_larson_drain(&bw_posh, lanes);
  posh_bench_heap_done(heap, name, 1);
  return failed;
}

static int run_posh_prodcon(void) {
  char name[POSH_NAME_MAX + 1];
  posh_heap_t *heap;
  bw_ring_t *ring;
  posh_off_t ring_off;
  pid_t child;
  double r;
  int failed = 0;

  if (!bw_selected("prodcon", "posh"))
    return 0;
  if ((heap = posh_bench_heap("pc", name, sizeof name)) == NULL)
    return 1;
  /* The ring lives in the heap, its indices on their own cache lines. */
  ring = (bw_ring_t *)posh_aligned_alloc(heap, BW_CACHELINE, sizeof(bw_ring_t));
  if (ring == NULL) {
    bw_fail("prodcon", "posh", posh_strerror(posh_last_error()));
    posh_bench_heap_done(heap, name, 0);
    return 1;
  }
  bw_ring_init(ring);
  ring_off = posh_off(heap, ring);
  fflush(stdout);
  child = fork();
  if (child < 0) {
    bw_fail("prodcon", "posh", "fork");
    posh_bench_heap_done(heap, name, 0);
    return 1;
  }
  if (child == 0) {
    /* The consumer attaches by name, as an unrelated process would, and
     * leaves the inherited handle alone. */
    posh_heap_t *mine;
    int rc;
    alarm(120);
    rc = posh_heap_attach(name, &mine);
    if (rc != 0) {
      fprintf(stderr, "bench: consumer attach %s: %s\n", name,
              posh_strerror(rc));
      _exit(2);
    }
    rc = bw_consumer(&bw_posh, mine, (bw_ring_t *)posh_ptr(mine, ring_off));
    posh_heap_detach(mine);
    _exit(rc);
  }
  r = bw_producer(&bw_posh, heap, ring, child, bw_rep_ns(300));
  if (bw_reap_consumer(child, ring) != 0 || r < 0) {
    bw_fail("prodcon", "posh",
            r < 0 ? "producer failed or stuck" : "consumer failed");
    failed = 1;
  } else
    bw_print3("prodcon", "posh", r, "pairs/s");
  posh_free(heap, ring);
  posh_bench_heap_done(heap, name, 0);
  return failed;
}
#endif /* BENCH_JEMALLOC */

/* The process-private allocators: threadtest, allocfree, larson. */
#define RUN_PRIVATE(vt, entry, objs, failed)                                   \
  do {                                                                         \
    double r_;                                                                 \
    bw_lane_t lanes_[BW_LARSON_LANES];                                         \
    if (bw_selected("threadtest", (vt).name)) {                                \
      r_ = bw_threadtest(&(vt), NULL, (objs), bw_rep_ns(200));                 \
      if (r_ < 0) {                                                            \
        bw_fail("threadtest", (vt).name, "allocation failed");                 \
        (failed) = 1;                                                          \
      } else                                                                   \
        bw_print3("threadtest", (vt).name, r_, "pairs/s");                     \
    }                                                                          \
    if (bw_selected("allocfree", (vt).name)) {                                 \
      r_ = bw_allocfree(&(vt), NULL, bw_rep_ns(100));                          \
      if (r_ < 0) {                                                            \
        bw_fail("allocfree", (vt).name, "allocation failed");                  \
        (failed) = 1;                                                          \
      } else                                                                   \
        bw_print3("allocfree", (vt).name, r_, "pairs/s");                      \
    }                                                                          \
    if (bw_selected("larson", (vt).name)) {                                    \
      memset(lanes_, 0, sizeof lanes_);                                        \
      r_ = bw_larson((entry), NULL, lanes_, bw_rep_ns(300));                   \
      if (r_ < 0) {                                                            \
        bw_fail("larson", (vt).name, "allocation failed");                     \
        (failed) = 1;                                                          \
      } else                                                                   \
        bw_print3("larson", (vt).name, r_, "ops/s");                           \
      bw_larson_drain(&(vt), lanes_);                                          \
    }                                                                          \
  } while (0)

int main(int argc, char **argv) {
  void **objs;
  int failed = 0;

  bw_select_init(argc, argv);
  objs = (void **)calloc(BW_THREADTEST_K, sizeof(void *));
  if (objs == NULL)
    return 1;
#ifdef BENCH_JEMALLOC
  {
    const char *version = NULL;
    size_t len = sizeof version;
    if (mallctl("version", &version, &len, NULL, 0) != 0) {
      fprintf(stderr, "bench: jemalloc is not the malloc of this program\n");
      return 1;
    }
    fprintf(stderr, "bench: jemalloc %s\n", version);
  }
  RUN_PRIVATE(bw_jemalloc, je_larson_entry, objs, failed);
#else
  failed |= run_posh_single(objs);
  RUN_PRIVATE(bw_glibc, glibc_larson_entry, objs, failed);
  failed |= run_posh_larson();
  failed |= run_posh_prodcon();
#endif
  free(objs);
  return failed ? 1 : 0;
}
