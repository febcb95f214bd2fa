/* SPDX-License-Identifier: MIT */
/*
 * This file contains libposh's only door to atomic operations: thin inline
 * wrappers over libatomic_ops whose names carry the memory order.  Nothing
 * else in the tree calls AO_ directly.  Two widths: posh_atomic_t (64-bit,
 * AO_t) for offsets and counters, posh_atomic32_t (AO_int: futex words).
 * Fields of these types are prefixed with `x` by convention.
 */
#ifndef POSH_ATOMIC_H
#define POSH_ATOMIC_H

#include <atomic_ops.h>
#include <stdint.h>

#if !defined(AO_HAVE_load_acquire) || !defined(AO_HAVE_store_release) ||      \
    !defined(AO_HAVE_fetch_compare_and_swap_full) ||                          \
    !defined(AO_HAVE_fetch_and_add_full) || !defined(AO_HAVE_nop_full) ||     \
    !defined(AO_HAVE_int_fetch_compare_and_swap_full) ||                      \
    !defined(AO_HAVE_int_fetch_and_add_full) || !defined(AO_HAVE_int_load) || \
    !defined(AO_HAVE_int_store_release) || !defined(AO_HAVE_load) ||         \
    !defined(AO_HAVE_store) || !defined(AO_HAVE_and_full)
#error "libposh needs full-barrier CAS/fetch-add and acquire/release loads and stores from libatomic_ops"
#endif

_Static_assert(sizeof(AO_t) == 8, "libposh needs a 64-bit AO_t");
_Static_assert(sizeof(unsigned int) == 4, "futex words are 32-bit");

typedef volatile AO_t posh_atomic_t;
typedef volatile unsigned int posh_atomic32_t;

/* Stop the compiler from moving memory accesses across this point (no CPU
 * fence).  Used where only program order matters for crash consistency:
 * kill -9 stops a process between instructions and its earlier stores are
 * already coherent, so ordering the stores in the instruction stream is
 * enough for another process to see a consistent prefix. */
#define posh_compiler_barrier() __asm__ __volatile__("" ::: "memory")

/* ---- 64-bit */
static inline uint64_t posh_atomic_load_relaxed(const posh_atomic_t *p) {
  return AO_load((const volatile AO_t *)p);
}
static inline uint64_t posh_atomic_load_acquire(const posh_atomic_t *p) {
  return AO_load_acquire((const volatile AO_t *)p);
}
static inline void posh_atomic_store_relaxed(posh_atomic_t *p, uint64_t v) {
  AO_store(p, (AO_t)v);
}
static inline void posh_atomic_store_release(posh_atomic_t *p, uint64_t v) {
  AO_store_release(p, (AO_t)v);
}
/* Sequentially consistent store: store then full fence. */
static inline void posh_atomic_store_seqcst(posh_atomic_t *p, uint64_t v) {
  AO_store(p, (AO_t)v);
  AO_nop_full();
}
/* Returns the previous value; success iff it equals expected. */
static inline uint64_t posh_atomic_cas_full(posh_atomic_t *p, uint64_t expected,
                                            uint64_t desired) {
  return AO_fetch_compare_and_swap_full(p, (AO_t)expected, (AO_t)desired);
}
static inline int posh_atomic_cas_bool_full(posh_atomic_t *p, uint64_t expected,
                                            uint64_t desired) {
  return AO_fetch_compare_and_swap_full(p, (AO_t)expected, (AO_t)desired) ==
         (AO_t)expected;
}
static inline uint64_t posh_atomic_fetch_add_full(posh_atomic_t *p,
                                                  uint64_t delta) {
  return AO_fetch_and_add_full(p, (AO_t)delta);
}
static inline uint64_t posh_atomic_exchange_full(posh_atomic_t *p, uint64_t v) {
  uint64_t old = posh_atomic_load_relaxed(p);
  for (;;) {
    uint64_t seen = posh_atomic_cas_full(p, old, v);
    if (seen == old)
      return old;
    old = seen;
  }
}
/* Atomically OR bits in; returns the previous value. */
static inline uint64_t posh_atomic_fetch_or_full(posh_atomic_t *p,
                                                 uint64_t bits) {
  uint64_t old = posh_atomic_load_relaxed(p);
  for (;;) {
    uint64_t seen = posh_atomic_cas_full(p, old, old | bits);
    if (seen == old)
      return old;
    old = seen;
  }
}
/* Atomically clear bits, without the old value: one locked instruction
 * where the CPU has it (no load first, so the line is fetched once, for
 * writing). */
static inline void posh_atomic_andnot_full(posh_atomic_t *p, uint64_t bits) {
  AO_and_full(p, (AO_t)~bits);
}
/* Atomically set bit `bit` (0-63) of *p; returns its previous value (0 or
 * 1).  libatomic_ops has no bit test-and-set: on x86-64 it is one `lock
 * bts` (a CAS loop loads the line shared, then must fetch it again for
 * writing, and retries under contention; in the allocator's remote free
 * that made the difference between 63 and 68 M frees/s across processes),
 * elsewhere the CAS loop of posh_atomic_fetch_or_full. */
static inline int posh_atomic_bit_test_and_set_full(posh_atomic_t *p,
                                                    unsigned bit) {
/* Not under ThreadSanitizer: it cannot see an asm instruction as the
 * release it is, and would report the block handed over by a remote free
 * as a race. */
#if defined(__x86_64__) && defined(__GCC_ASM_FLAG_OUTPUTS__) && !defined(__SANITIZE_THREAD__)
  int was;
  __asm__ __volatile__("lock btsq %2, %0"
                       : "+m"(*p), "=@ccc"(was)
                       : "r"((uint64_t)(bit & 63u))
                       : "memory");
  return was;
#else
  uint64_t mask = 1ull << (bit & 63u);
  return (posh_atomic_fetch_or_full(p, mask) & mask) != 0;
#endif
}

/* ---- 32-bit (futex words) */
static inline uint32_t posh_atomic32_load_relaxed(const posh_atomic32_t *p) {
  return AO_int_load((const volatile unsigned int *)p);
}
static inline uint32_t posh_atomic32_load_acquire(const posh_atomic32_t *p) {
  return AO_int_load_acquire((const volatile unsigned int *)p);
}
static inline void posh_atomic32_store_relaxed(posh_atomic32_t *p, uint32_t v) {
  AO_int_store(p, v);
}
static inline void posh_atomic32_store_release(posh_atomic32_t *p, uint32_t v) {
  AO_int_store_release(p, v);
}
static inline uint32_t posh_atomic32_cas_full(posh_atomic32_t *p,
                                              uint32_t expected,
                                              uint32_t desired) {
  return AO_int_fetch_compare_and_swap_full(p, expected, desired);
}
static inline uint32_t posh_atomic32_fetch_add_full(posh_atomic32_t *p,
                                                    uint32_t delta) {
  return AO_int_fetch_and_add_full(p, delta);
}
static inline uint32_t posh_atomic32_exchange_full(posh_atomic32_t *p,
                                                   uint32_t v) {
  uint32_t old = posh_atomic32_load_relaxed(p);
  for (;;) {
    uint32_t seen = posh_atomic32_cas_full(p, old, v);
    if (seen == old)
      return old;
    old = seen;
  }
}
static inline uint32_t posh_atomic32_fetch_or_full(posh_atomic32_t *p,
                                                   uint32_t bits) {
  uint32_t old = posh_atomic32_load_relaxed(p);
  for (;;) {
    uint32_t seen = posh_atomic32_cas_full(p, old, old | bits);
    if (seen == old)
      return old;
    old = seen;
  }
}
static inline uint32_t posh_atomic32_fetch_andnot_full(posh_atomic32_t *p,
                                                       uint32_t bits) {
  uint32_t old = posh_atomic32_load_relaxed(p);
  for (;;) {
    uint32_t seen = posh_atomic32_cas_full(p, old, old & ~bits);
    if (seen == old)
      return old;
    old = seen;
  }
}

/* ---- fences */
static inline void posh_fence_full(void) { AO_nop_full(); }
static inline void posh_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  posh_compiler_barrier();
#endif
}

#endif /* POSH_ATOMIC_H */
