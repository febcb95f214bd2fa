/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Boost.Interprocess baseline of the allocator
 * benchmarks: the workloads of alloc_workloads.h run on a
 * managed_shared_memory segment (one segment-wide mutex around a best-fit
 * allocator), the usual way to share allocations between processes in C++.
 * Threadtest and allocfree use one thread, larson two threads on one
 * segment, prodcon two processes (the child opens the segment by name).
 *
 * Usage: bench_alloc_boost [FILTER...] as bench_alloc.
 */
#include "alloc_workloads.h"

#include <boost/interprocess/managed_shared_memory.hpp>
#include <new>

namespace bip = boost::interprocess;

/* Segment size: larson keeps up to 2 x 5000 x 1000 B live; reserved
 * sparsely (ftruncate on tmpfs). */
static const size_t kSegmentSize = 256u << 20;

static void *boost_alloc(void *ctx, size_t size) {
  return static_cast<bip::managed_shared_memory *>(ctx)->allocate(
      size, std::nothrow);
}
static int boost_free(void *ctx, void *p) {
  static_cast<bip::managed_shared_memory *>(ctx)->deallocate(p);
  return 0;
}
/* Handles are offsets from the segment base; 0 is the segment header, so a
 * block's handle is never 0. */
static uint64_t boost_handle(void *ctx, void *p) {
  return (uint64_t) static_cast<bip::managed_shared_memory *>(ctx)
      ->get_handle_from_address(p);
}
static void *boost_ptr(void *ctx, uint64_t h) {
  return static_cast<bip::managed_shared_memory *>(ctx)
      ->get_address_from_handle(
          (bip::managed_shared_memory::handle_t)h);
}
static const bw_alloc_t bw_boost = {"boost", boost_alloc, boost_free,
                                    boost_handle, boost_ptr};
BW_LARSON_ENTRY(boost_larson_entry, bw_boost)

/* A segment with a name unique to this process, removed before and after. */
struct Segment {
  char name[96];
  bip::managed_shared_memory *seg;
  explicit Segment(const char *tag) : seg(NULL) {
    static unsigned seq;
    snprintf(name, sizeof name, "boost-bench-%ld-%s-%u", (long)getpid(), tag,
             seq++);
    bip::shared_memory_object::remove(name);
    try {
      seg = new bip::managed_shared_memory(bip::create_only, name,
                                           kSegmentSize);
    } catch (const std::exception &e) {
      fprintf(stderr, "bench: boost segment %s: %s\n", name, e.what());
      seg = NULL;
    }
  }
  ~Segment() {
    delete seg;
    bip::shared_memory_object::remove(name);
  }
};

static int run_single(void **objs) {
  int failed = 0;
  double r;
  if (bw_selected("threadtest", "boost")) {
    Segment s("tt");
    if (s.seg == NULL)
      return 1;
    r = bw_threadtest(&bw_boost, s.seg, objs, bw_rep_ns(200));
    if (r < 0) {
      bw_fail("threadtest", "boost", "allocation failed");
      failed = 1;
    } else
      bw_print3("threadtest", "boost", r, "pairs/s");
  }
  if (bw_selected("allocfree", "boost")) {
    Segment s("af");
    if (s.seg == NULL)
      return 1;
    r = bw_allocfree(&bw_boost, s.seg, bw_rep_ns(100));
    if (r < 0) {
      bw_fail("allocfree", "boost", "allocation failed");
      failed = 1;
    } else
      bw_print3("allocfree", "boost", r, "pairs/s");
  }
  return failed;
}

static int run_larson(void) {
  bw_lane_t lanes[BW_LARSON_LANES];
  double r;
  int failed = 0;
  if (!bw_selected("larson", "boost"))
    return 0;
  Segment s("la");
  if (s.seg == NULL)
    return 1;
  memset(lanes, 0, sizeof lanes);
  r = bw_larson(boost_larson_entry, s.seg, lanes, bw_rep_ns(300));
  if (r < 0) {
    bw_fail("larson", "boost", "allocation failed");
    failed = 1;
  } else
    bw_print3("larson", "boost", r, "ops/s");
  bw_larson_drain(&bw_boost, lanes);
  return failed;
}

static int run_prodcon(void) {
  double r;
  int failed = 0;
  if (!bw_selected("prodcon", "boost"))
    return 0;
  Segment s("pc");
  if (s.seg == NULL)
    return 1;
  /* The ring lives in the segment, cache-line aligned. */
  bw_ring_t *ring = static_cast<bw_ring_t *>(
      s.seg->allocate_aligned(sizeof(bw_ring_t), BW_CACHELINE, std::nothrow));
  if (ring == NULL) {
    bw_fail("prodcon", "boost", "ring allocation failed");
    return 1;
  }
  bw_ring_init(ring);
  bip::managed_shared_memory::handle_t ring_h =
      s.seg->get_handle_from_address(ring);
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) {
    bw_fail("prodcon", "boost", "fork");
    return 1;
  }
  if (child == 0) {
    /* The consumer opens the segment by name (its own mapping) and leaves
     * the inherited one alone; _exit skips the parent's destructors. */
    int rc = 2;
    alarm(120);
    try {
      bip::managed_shared_memory mine(bip::open_only, s.name);
      rc = bw_consumer(&bw_boost, &mine,
                       static_cast<bw_ring_t *>(
                           mine.get_address_from_handle(ring_h)));
    } catch (const std::exception &e) {
      fprintf(stderr, "bench: consumer open %s: %s\n", s.name, e.what());
    }
    _exit(rc);
  }
  r = bw_producer(&bw_boost, s.seg, ring, child, bw_rep_ns(300));
  if (bw_reap_consumer(child, ring) != 0 || r < 0) {
    bw_fail("prodcon", "boost",
            r < 0 ? "producer failed or stuck" : "consumer failed");
    failed = 1;
  } else
    bw_print3("prodcon", "boost", r, "pairs/s");
  s.seg->deallocate(ring);
  return failed;
}

int main(int argc, char **argv) {
  int failed = 0;
  bw_select_init(argc, argv);
  void **objs = static_cast<void **>(calloc(BW_THREADTEST_K, sizeof(void *)));
  if (objs == NULL)
    return 1;
  failed |= run_single(objs);
  failed |= run_larson();
  failed |= run_prodcon();
  free(objs);
  return failed ? 1 : 0;
}
