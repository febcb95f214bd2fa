/* SPDX-License-Identifier: MIT */
/*
 * This file contains what tests/test_sync.c and tests/sync_child.c (the
 * program the cross-process tests exec) share: the scratch area both see in
 * the heap, child-side checks that exit instead of asserting, and the worker
 * loops run by forked and exec'd processes alike.
 */
#ifndef POSH_SYNC_TESTUTIL_H
#define POSH_SYNC_TESTUTIL_H

#include "posh.h"
#include "posh/sync.h"
#include "atomic.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Directory tag of the scratch block ("TEST"). */
#define TU_SCRATCH_TAG 0x54455354u
#define TU_SEC 1000000000ll
#define TU_MS 1000000ll

/* Scratch shared by a test and its children, bound as "scratch".  Every
 * field is atomic except `plain`, which is only touched under the lock
 * being tested (a lost update there is a mutual-exclusion failure). */
struct tu_scratch {
  posh_atomic_t inside;       /* threads inside the critical section */
  posh_atomic_t max_inside;   /* highest `inside` seen */
  posh_atomic_t violations;   /* mutual exclusion broken */
  posh_atomic_t acquisitions; /* successful acquisitions */
  posh_atomic_t owner_died;   /* POSH_EOWNERDEAD results seen */
  posh_atomic_t last_acq_ns;  /* monotonic time of the last acquisition */
  posh_atomic_t errors;       /* unexpected return codes */
  posh_atomic_t last_error;
  posh_atomic_t actions;      /* barrier actions run */
  posh_atomic_t writers_in;   /* rwlock: writers inside */
  posh_atomic_t readers_in;   /* rwlock: readers inside */
  posh_atomic_t stop;         /* ask loops to end */
  posh_atomic_t items;        /* condition: produced, not yet consumed */
  posh_atomic_t consumed;
  posh_atomic_t flag;
  posh_atomic_t round_index_bits[64]; /* barrier: indices seen per round */
  volatile uint64_t plain;
};

static inline uint64_t tu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void tu_sleep_ns(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static inline void tu_spin_ns(uint64_t ns) {
  uint64_t end = tu_now_ns() + ns;
  while (tu_now_ns() < end)
    posh_cpu_relax();
}

/* In a child: a failed check reports and exits with status 3. */
#define TU_CHECK(cond)                                                         \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "child %d: %s:%d: check failed: %s\n", (int)getpid(),    \
              __FILE__, __LINE__, #cond);                                      \
      _exit(3);                                                                \
    }                                                                          \
  } while (0)
#define TU_CHECK_RC(expr, want)                                                \
  do {                                                                         \
    int tu_rc_ = (expr);                                                       \
    if (tu_rc_ != (want)) {                                                    \
      fprintf(stderr, "child %d: %s:%d: %s = %s, want %s\n", (int)getpid(),    \
              __FILE__, __LINE__, #expr, posh_err_name(tu_rc_),                \
              posh_err_name(want));                                            \
      _exit(3);                                                                \
    }                                                                          \
  } while (0)

static inline void tu_max(posh_atomic_t *m, uint64_t v) {
  uint64_t cur = posh_atomic_load_relaxed(m);
  while (v > cur && !posh_atomic_cas_bool_full(m, cur, v))
    cur = posh_atomic_load_relaxed(m);
}

static inline struct tu_scratch *tu_scratch_open(posh_heap_t *h) {
  posh_off_t off;
  uint32_t tag;
  if (posh_name_lookup(h, "scratch", &off, &tag) != 0 || tag != TU_SCRATCH_TAG)
    return NULL;
  return posh_ptr(h, off);
}

/* The critical section of the lock tests: detects two owners at once and
 * lost updates.  After POSH_EOWNERDEAD the caller has reset `inside`. */
static inline void tu_critical(struct tu_scratch *s, uint64_t work_ns) {
  uint64_t prev = posh_atomic_fetch_add_full(&s->inside, 1);
  if (prev != 0)
    posh_atomic_fetch_add_full(&s->violations, 1);
  tu_max(&s->max_inside, prev + 1);
  s->plain = s->plain + 1;
  if (work_ns)
    tu_spin_ns(work_ns);
  posh_atomic_fetch_add_full(&s->inside, (uint64_t)-1);
}

/* Lock worker: iters acquisitions (< 0: until s->stop).  Recovers from
 * owner death the documented way: repair (reset `inside`), then mark the
 * lock consistent.  Returns an exit status. */
static inline int tu_lock_worker(posh_heap_t *h, posh_off_t lock,
                                 struct tu_scratch *s, long iters,
                                 uint64_t work_ns) {
  for (long i = 0; iters < 0 ? !posh_atomic_load_relaxed(&s->stop) : i < iters;
       i++) {
    int r = posh_lock_acquire(h, lock, 20 * TU_SEC);
    if (r == POSH_EOWNERDEAD) {
      posh_atomic_store_release(&s->inside, 0); /* the repair */
      posh_atomic_fetch_add_full(&s->owner_died, 1);
      TU_CHECK_RC(posh_lock_consistent(h, lock), 0);
    } else if (r != 0) {
      posh_atomic_fetch_add_full(&s->errors, 1);
      posh_atomic_store_relaxed(&s->last_error, (uint64_t)(int64_t)r);
      return 4;
    }
    posh_atomic_fetch_add_full(&s->acquisitions, 1);
    posh_atomic_store_release(&s->last_acq_ns, tu_now_ns());
    tu_critical(s, work_ns);
    TU_CHECK_RC(posh_lock_release(h, lock), 0);
  }
  return 0;
}

/* Barrier action: count it. */
static inline int tu_barrier_action(void *arg) {
  struct tu_scratch *s = arg;
  posh_atomic_fetch_add_full(&s->actions, 1);
  return 0;
}

/* Barrier worker: rounds waits; after each, the action of that round has
 * run exactly once; records the index it got. */
static inline int tu_barrier_worker(posh_heap_t *h, posh_off_t bar,
                                    struct tu_scratch *s, int rounds) {
  for (int r = 0; r < rounds; r++) {
    unsigned idx = 999;
    TU_CHECK_RC(posh_barrier_wait(h, bar, 20 * TU_SEC, tu_barrier_action, s, &idx), 0);
    TU_CHECK(idx < 64);
    TU_CHECK(posh_atomic_load_acquire(&s->actions) == (uint64_t)r + 1);
    uint64_t old = posh_atomic_fetch_or_full(&s->round_index_bits[r % 64], 1ull << idx);
    TU_CHECK(!(old & (1ull << idx))); /* no index twice in a round */
  }
  return 0;
}

#endif /* POSH_SYNC_TESTUTIL_H */
