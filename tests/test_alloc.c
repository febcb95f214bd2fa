/* SPDX-License-Identifier: MIT */
/*
 * This file contains the unit tests of the multi-process allocator
 * (allocators/): every size class, alignment, calloc/realloc, rejection of
 * bad and double frees without damage, exhaustion, large runs, frees from
 * other threads and processes, a multi-process multi-thread stress run,
 * adoption of the pages of a killed process and of an exited thread, and
 * the statistics.
 */
#include "../allocators/alloc_internal.h"
#include "testutil.h"

#include <pthread.h>

#define MiB (1ull << 20)

static posh_heap_t *mk(uint64_t cap) {
  posh_heap_options_t o = {.capacity = cap};
  posh_heap_t *h = NULL;
  int r = posh_heap_create(NULL, &o, &h);
  if (r)
    fprintf(stderr, "create: %s\n", posh_err_name(r));
  return h;
}

static posh_heap_stats_t stats(posh_heap_t *h) {
  posh_heap_stats_t st;
  assert_int_equal(posh_heap_stats(h, &st), 0);
  return st;
}

static int aligned(const void *p, size_t a) {
  return ((uintptr_t)p & (a - 1)) == 0;
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* A heap check that must pass, and bytes in use that must be `expect`. */
#define ASSERT_HEAP_OK(h, expect)                                              \
  do {                                                                         \
    assert_int_equal(tu_check(h), 0);                                          \
    assert_int_equal(tu_bytes_in_use(h), (uint64_t)(expect));                  \
  } while (0)

/* ------------------------------------------------------------------------
 * Sizes.
 * ---------------------------------------------------------------------- */

/* The class table is increasing, 16-byte granular and ends at the small
 * maximum; every class boundary (block-1, block, block+1), 0 bytes and
 * large sizes allocate 16-byte aligned blocks of enough usable size whose
 * contents survive all the other allocations. */
static void test_size_classes(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  int n = posh__size_class_count();
  assert_true(n > 8 && n <= POSH_SIZE_CLASS_MAX);
  for (int c = 0; c < n; c++) {
    uint32_t b = posh__size_class_block(c);
    assert_int_equal(b % 16, 0);
    if (c)
      assert_true(b > posh__size_class_block(c - 1));
  }
  assert_int_equal(posh__size_class_block(n - 1), POSH_SMALL_MAX);

  size_t sizes[3 * POSH_SIZE_CLASS_MAX + 16];
  size_t ns = 0;
  sizes[ns++] = 0;
  sizes[ns++] = 1;
  for (int c = 0; c < n; c++) {
    uint32_t b = posh__size_class_block(c);
    sizes[ns++] = b - 1;
    sizes[ns++] = b;
    sizes[ns++] = b + 1;
  }
  static const size_t large[] = {65535,  65536,   65537,
                                 131072, 1000000, 3 * MiB + 5};
  for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
    sizes[ns++] = large[i];

  void *p[sizeof sizes / sizeof sizes[0]];
  for (size_t i = 0; i < ns; i++) {
    p[i] = posh_alloc(h, sizes[i]);
    if (!p[i])
      fail_msg("alloc(%zu): %s", sizes[i], posh_err_name(posh_last_error()));
    assert_true(aligned(p[i], 16));
    size_t usable = posh_usable_size(h, p[i]);
    assert_true(usable >= sizes[i]);
    assert_true(usable >= 16);
    if (sizes[i] > 0 && sizes[i] <= POSH_SMALL_MAX) {
      /* The smallest class that fits. */
      int c = 0;
      while (posh__size_class_block(c) < sizes[i])
        c++;
      assert_int_equal(usable, posh__size_class_block(c));
    }
    assert_int_equal(posh_block_state(h, p[i]), POSH_BLOCK_ALLOCATED);
    tu_fill(p[i], usable, i);
  }
  for (size_t i = 0; i < ns; i++)
    if (!tu_verify(p[i], posh_usable_size(h, p[i]), i))
      fail_msg("block %zu (%zu bytes) was overwritten", i, sizes[i]);
  assert_int_equal(tu_check(h), 0);
  for (size_t i = 0; i < ns; i++) {
    assert_int_equal(posh_free(h, p[i]), 0);
    if (sizes[i] <= POSH_SMALL_MAX)
      assert_int_equal(posh_block_state(h, p[i]), POSH_BLOCK_FREE);
  }
  ASSERT_HEAP_OK(h, 0);
  assert_null(posh_alloc(NULL, 10));
  assert_int_equal(posh_last_error(), POSH_EINVAL);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Random interleaved allocations and frees of mixed sizes never hand out
 * overlapping memory: every block keeps its contents until freed. */
static void test_contents_preserved(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  enum { SLOTS = 1500, ROUNDS = 30000 };
  static void *p[SLOTS];
  static size_t sz[SLOTS];
  memset(p, 0, sizeof p);
  uint64_t seed = 12345;
  for (int r = 0; r < ROUNDS; r++) {
    uint64_t x = rnd(&seed);
    int k = (int)(x % SLOTS);
    if (p[k]) {
      if (!tu_verify(p[k], sz[k], (uint64_t)k * 7919 + sz[k]))
        fail_msg("slot %d (%zu bytes) corrupted at round %d", k, sz[k], r);
      assert_int_equal(posh_free(h, p[k]), 0);
      p[k] = NULL;
    } else {
      size_t s =
          (x >> 20) % 64 == 0 ? 16385 + (x >> 30) % 200000 : (x >> 20) % 2048;
      p[k] = posh_alloc(h, s);
      assert_non_null(p[k]);
      sz[k] = s;
      tu_fill(p[k], s, (uint64_t)k * 7919 + s);
    }
  }
  assert_int_equal(tu_check(h), 0);
  for (int k = 0; k < SLOTS; k++)
    if (p[k]) {
      assert_true(tu_verify(p[k], sz[k], (uint64_t)k * 7919 + sz[k]));
      assert_int_equal(posh_free(h, p[k]), 0);
    }
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_aligned_alloc honours every power-of-two alignment up to 64 KiB for
 * small and large sizes; 0, non-powers of two and alignments above 64 KiB
 * are EINVAL. */
static void test_aligned_alloc(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  for (size_t a = 1; a <= 65536; a *= 2) {
    size_t sizes[] = {0,    1,     17,   a - 1 ? a - 1 : 1, a, a + 1, 3 * a,
                      5000, 20000, 70000};
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      p[i] = posh_aligned_alloc(h, a, sizes[i]);
      if (!p[i])
        fail_msg("aligned_alloc(%zu, %zu): %s", a, sizes[i],
                 posh_err_name(posh_last_error()));
      if (!aligned(p[i], a < 16 ? 16 : a))
        fail_msg("aligned_alloc(%zu, %zu) = %p", a, sizes[i], p[i]);
      assert_true(posh_usable_size(h, p[i]) >= sizes[i]);
      tu_fill(p[i], sizes[i], a + i);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      assert_true(tu_verify(p[i], sizes[i], a + i));
      assert_int_equal(posh_free(h, p[i]), 0);
    }
  }
  static const size_t bad[] = {0,     3,      6,          48,
                               65535, 131072, 1ull << 40, SIZE_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_null(posh_aligned_alloc(h, bad[i], 64));
    assert_int_equal(posh_last_error(), POSH_EINVAL);
  }
  assert_null(posh_aligned_alloc(NULL, 64, 64));
  assert_int_equal(posh_last_error(), POSH_EINVAL);
  assert_null(posh_aligned_alloc(h, 4096, 1ull << 40));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* calloc returns zeroed memory even where a freed block left garbage, and
 * rejects count*size overflow with EINVAL. */
static void test_calloc_zeroes(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  static const size_t sizes[] = {1, 48, 1000, 16384, 100000, 2 * MiB};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *d = posh_alloc(h, sizes[i]);
    assert_non_null(d);
    memset(d, 0xAB, sizes[i]);
    assert_int_equal(posh_free(h, d), 0);
    unsigned char *z = posh_calloc(h, 1, sizes[i]);
    assert_non_null(z);
    for (size_t j = 0; j < sizes[i]; j++)
      if (z[j])
        fail_msg("calloc(%zu): byte %zu is %#x", sizes[i], j, z[j]);
    assert_int_equal(posh_free(h, z), 0);
  }
  void *z = posh_calloc(h, 100, 24);
  assert_non_null(z);
  assert_true(posh_usable_size(h, z) >= 2400);
  assert_int_equal(posh_free(h, z), 0);
  z = posh_calloc(h, 0, 10);
  assert_non_null(z);
  assert_int_equal(posh_free(h, z), 0);
  assert_null(posh_calloc(h, SIZE_MAX, 2));
  assert_int_equal(posh_last_error(), POSH_EINVAL);
  assert_null(posh_calloc(h, 2, SIZE_MAX));
  assert_int_equal(posh_last_error(), POSH_EINVAL);
  assert_null(posh_calloc(h, 1ull << 32, 1ull << 32));
  assert_int_equal(posh_last_error(), POSH_EINVAL);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* realloc keeps the contents over grow and shrink across small and large
 * sizes, acts as alloc on NULL and as free with size 0, and rejects
 * pointers that are not blocks (EFAULT) without freeing anything. */
static void test_realloc_contents(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *p = posh_realloc(h, NULL, 100);
  assert_non_null(p);
  tu_fill(p, 100, 1);
  static const size_t steps[] = {
      200,           5000,  16384, 16385, 100000, 3 * MiB,
      3 * MiB - 100, 50000, 1000,  10,    16,     300};
  size_t keep = 100;
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    unsigned char *q = posh_realloc(h, p, steps[i]);
    if (!q)
      fail_msg("realloc to %zu: %s", steps[i],
               posh_err_name(posh_last_error()));
    assert_true(aligned(q, 16));
    assert_true(posh_usable_size(h, q) >= steps[i]);
    size_t n = keep < steps[i] ? keep : steps[i];
    if (!tu_verify(q, n, 1))
      fail_msg("realloc to %zu lost the first %zu bytes", steps[i], n);
    if (q != p) /* the old block was freed */
      assert_int_not_equal(posh_block_state(h, p), POSH_BLOCK_ALLOCATED);
    p = q;
    tu_fill(p, steps[i], 1);
    keep = steps[i];
  }
  /* Same size: in place. */
  assert_ptr_equal(posh_realloc(h, p, keep), p);
  assert_true(tu_verify(p, keep, 1));

  /* Pointers that are not blocks. */
  int local;
  void *m = malloc(64);
  unsigned char *s = posh_alloc(h, 64);
  assert_non_null(s);
  void *bad[] = {&local, m, s + 16, s + 1,
                 (unsigned char *)tu_heap_base(h) + 64};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_null(posh_realloc(h, bad[i], 128));
    assert_int_equal(posh_last_error(), POSH_EFAULT);
  }
  free(m);
  assert_int_equal(posh_block_state(h, s), POSH_BLOCK_ALLOCATED);
  assert_null(posh_realloc(NULL, s, 10));
  assert_int_equal(posh_last_error(), POSH_EINVAL);
  /* A failing grow leaves the block as it was. */
  assert_null(posh_realloc(h, p, 1ull << 40));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  assert_true(tu_verify(p, keep, 1));
  assert_int_equal(posh_block_state(h, p), POSH_BLOCK_ALLOCATED);
  /* Size 0 frees. */
  assert_null(posh_realloc(h, p, 0));
  assert_int_not_equal(posh_block_state(h, p), POSH_BLOCK_ALLOCATED);
  void *big = posh_alloc(h, 200000);
  assert_non_null(big);
  assert_null(posh_realloc(h, big, 0));
  assert_int_equal(posh_block_state(h, big), POSH_BLOCK_FREE);
  assert_int_equal(posh_free(h, s), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* realloc of a pointer that is not a live block -- a small block already
 * freed, a block never handed out -- fails with EFAULT (posh.h) instead of
 * handing that block out twice (regression test: fixed in 0faa7da). */
static void test_realloc_not_live(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *p = posh_alloc(h, 64), *q = posh_alloc(h, 64);
  assert_non_null(p);
  assert_non_null(q);
  assert_int_equal(posh_free(h, p), 0);
  unsigned char *never = q + 64; /* next block of the page, not handed out */
  assert_int_equal(posh_block_state(h, p), POSH_BLOCK_FREE);
  assert_int_equal(posh_block_state(h, never), POSH_BLOCK_FREE);
  void *r1 = posh_realloc(h, p, 64);
  int e1 = posh_last_error();
  void *r2 = posh_realloc(h, never, 48);
  int e2 = posh_last_error();
  /* What an allocator that took those for live blocks does next: */
  void *a = posh_alloc(h, 64), *b = posh_alloc(h, 64);
  int twice = (r1 && (r1 == a || r1 == b)) || (r2 && (r2 == a || r2 == b));
  if (r1 != p && r1)
    posh_free(h, r1);
  if (r2 != never && r2)
    posh_free(h, r2);
  posh_free(h, a);
  posh_free(h, b);
  posh_free(h, q);
  assert_int_equal(posh_heap_detach(h), 0);
  if (r1 || r2)
    fail_msg("realloc(freed block) = %p (%s), realloc(never-allocated block) = "
             "%p (%s)%s",
             r1, posh_err_name(e1), r2, posh_err_name(e2),
             twice ? "; the same block was then handed out again" : "");
  assert_int_equal(e1, POSH_EFAULT);
  assert_int_equal(e2, POSH_EFAULT);
}

static void *fail_einval(void *arg) {
  (void)arg;
  void *p = posh_aligned_alloc((posh_heap_t *)arg, 3, 10);
  return (void *)(intptr_t)(p ? 0 : posh_last_error());
}

/* posh_last_error is per thread: a failure in one thread does not show in
 * another. */
static void test_last_error_per_thread(void **state) {
  (void)state;
  posh_heap_t *h = mk(16 * MiB);
  assert_non_null(h);
  assert_null(posh_alloc(h, 1ull << 40));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  pthread_t th;
  void *ret;
  assert_int_equal(pthread_create(&th, NULL, fail_einval, h), 0);
  pthread_join(th, &ret);
  assert_int_equal((int)(intptr_t)ret, POSH_EINVAL);
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* usable_size is the class size for small blocks, the run for large ones,
 * and 0 for NULL, foreign and interior pointers. */
static void test_usable_size(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *s = posh_alloc(h, 100);
  unsigned char *l = posh_alloc(h, 100000);
  assert_non_null(s);
  assert_non_null(l);
  assert_true(posh_usable_size(h, s) >= 100 && posh_usable_size(h, s) < 200);
  assert_int_equal(posh_usable_size(h, l), 2 * 65536);
  int local;
  assert_int_equal(posh_usable_size(h, NULL), 0);
  assert_int_equal(posh_usable_size(NULL, s), 0);
  assert_int_equal(posh_usable_size(h, &local), 0);
  assert_int_equal(posh_usable_size(h, s + 16), 0);
  assert_int_equal(posh_usable_size(h, l + 65536), 0);
  assert_int_equal(posh_usable_size(h, l + 8), 0);
  assert_int_equal(posh_free(h, s), 0);
  assert_int_equal(posh_free(h, l), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Bad and double frees.
 * ---------------------------------------------------------------------- */

static int static_thing;

/* Frees of pointers that are not blocks of this heap (stack, malloc,
 * static, header, metadata, interior of small and large blocks, blocks
 * never handed out) are EFAULT and leave the heap exactly as it was. */
static void test_bad_frees(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  posh_heap_t *other = mk(16 * MiB);
  assert_non_null(other);
  unsigned char *s = posh_alloc(h, 32);
  unsigned char *l = posh_alloc(h, 200000);
  unsigned char *o = posh_alloc(other, 32);
  assert_non_null(s);
  assert_non_null(l);
  assert_non_null(o);
  uint64_t in_use = tu_bytes_in_use(h);
  int local;
  void *m = malloc(32);
  unsigned char *base = (unsigned char *)tu_heap_base(h);
  void *bad[] = {&local,
                 m,
                 &static_thing,
                 o,                           /* a block of another heap */
                 base + 8,                    /* header */
                 base + h->hdr->registry_off, /* registry */
                 base + h->hdr->directory_off + 128,
                 base + h->hdr->pagetab_off,
                 s + 1,
                 s + 8,
                 s + 16, /* interior of a 32-byte block */
                 s + 32, /* next block: never handed out */
                 s + 64 * 32,
                 l + 8,
                 l + 4096,
                 l + 65536, /* body page of the run */
                 l + 3 * 65536 + 16,
                 base + posh_heap_capacity(h) - 16};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int r = posh_free(h, bad[i]);
    if (r != POSH_EFAULT)
      fail_msg("free of bad pointer #%zu returned %s", i, posh_err_name(r));
    r = posh_free_off(h,
                      (posh_off_t){(uint64_t)((unsigned char *)bad[i] - base)});
    if (r != POSH_EFAULT && r != POSH_EDOUBLEFREE)
      fail_msg("free_off of bad pointer #%zu returned %s", i, posh_err_name(r));
    /* (s + 32 and s + 64 * 32 start blocks that are merely free.) */
    if (bad[i] != s + 32 && bad[i] != s + 64 * 32) {
      assert_int_equal(posh_block_state(h, bad[i]), POSH_BLOCK_INVALID);
      assert_int_equal(posh_usable_size(h, bad[i]), 0);
    }
    ASSERT_HEAP_OK(h, in_use);
  }
  /* The start of a page that was never used is not a block either (a
   * double-free report is tolerable there; the heap must not change). */
  unsigned char *unused = h->data + ((h->npages - 1) << POSH_PAGE_SHIFT);
  int r = posh_free(h, unused);
  assert_true(r == POSH_EFAULT || r == POSH_EDOUBLEFREE);
  ASSERT_HEAP_OK(h, in_use);
  assert_int_equal(posh_free_off(h, (posh_off_t){posh_heap_capacity(h)}),
                   POSH_EFAULT);
  assert_int_equal(posh_free_off(h, (posh_off_t){UINT64_MAX}), POSH_EFAULT);
  assert_int_equal(posh_free(h, NULL), 0);
  assert_int_equal(posh_free(NULL, s), POSH_EINVAL);
  ASSERT_HEAP_OK(h, in_use);
  free(m);
  assert_int_equal(posh_free(h, s), 0);
  assert_int_equal(posh_free(h, l), 0);
  assert_int_equal(posh_free(other, o), 0);
  ASSERT_HEAP_OK(h, 0);
  ASSERT_HEAP_OK(other, 0);
  assert_int_equal(posh_heap_detach(other), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* A second free of a large block, and of the small block freed last, is
 * EDOUBLEFREE and changes nothing: later allocations are all distinct. */
static void test_double_free(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *keep = posh_alloc(h, 64);
  assert_non_null(keep);
  uint64_t in_use = tu_bytes_in_use(h);
  static const size_t large[] = {20000, 100000, 2 * MiB};
  for (size_t i = 0; i < sizeof large / sizeof large[0]; i++) {
    void *l = posh_alloc(h, large[i]);
    assert_non_null(l);
    assert_int_equal(posh_free(h, l), 0);
    assert_int_equal(posh_free(h, l), POSH_EDOUBLEFREE);
    assert_int_equal(posh_free_off(h, posh_off(h, l)), POSH_EDOUBLEFREE);
    ASSERT_HEAP_OK(h, in_use);
  }
  void *a = posh_alloc(h, 64), *b = posh_alloc(h, 64);
  assert_non_null(a);
  assert_non_null(b);
  assert_int_equal(posh_free(h, a), 0);
  assert_int_equal(posh_free(h, a), POSH_EDOUBLEFREE);
  ASSERT_HEAP_OK(h, in_use + 64);
  assert_int_equal(posh_free(h, b), 0);
  assert_int_equal(posh_free(h, b), POSH_EDOUBLEFREE);
  ASSERT_HEAP_OK(h, in_use);
#if POSH_DEBUG >= 2
  /* Debug builds also catch a block that is not the last one freed. */
  assert_int_equal(posh_free(h, a), POSH_EDOUBLEFREE);
  ASSERT_HEAP_OK(h, in_use);
#endif
  /* The free list holds a and b once each. */
  void *x[4];
  for (int i = 0; i < 4; i++) {
    x[i] = posh_alloc(h, 64);
    assert_non_null(x[i]);
    for (int j = 0; j < i; j++)
      assert_ptr_not_equal(x[i], x[j]);
    assert_ptr_not_equal(x[i], keep);
  }
  for (int i = 0; i < 4; i++)
    assert_int_equal(posh_free(h, x[i]), 0);
  assert_int_equal(posh_free(h, keep), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct twice {
  posh_heap_t *heap;
  void *p;
  int r1, r2;
};

static void *free_twice_thread(void *arg) {
  struct twice *t = arg;
  t->r1 = posh_free(t->heap, t->p);
  t->r2 = posh_free(t->heap, t->p);
  return NULL;
}

static int free_twice_child(void *arg) {
  struct twice *t = arg;
  CHILD_CHECK_EQ(posh_free(t->heap, t->p), 0);
  CHILD_CHECK_EQ(posh_free(t->heap, t->p), POSH_EDOUBLEFREE);
  CHILD_CHECK_EQ(posh_heap_detach(t->heap), 0);
  return 0;
}

/* A block freed twice by another thread, or by another process, is
 * EDOUBLEFREE the second time, and the heap stays consistent. */
static void test_double_remote_free(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  void *p = posh_alloc(h, 48), *q = posh_alloc(h, 48);
  assert_non_null(p);
  assert_non_null(q);
  struct twice t = {h, p, -1, -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, free_twice_thread, &t), 0);
  pthread_join(th, NULL);
  assert_int_equal(t.r1, 0);
  assert_int_equal(t.r2, POSH_EDOUBLEFREE);
  assert_int_equal(posh_block_state(h, p), POSH_BLOCK_FREE);
  ASSERT_HEAP_OK(h, 48);
  struct twice c = {h, q, 0, 0};
  assert_int_equal(tu_run_child(free_twice_child, &c, TU_TIMEOUT_MS), 0);
  ASSERT_HEAP_OK(h, 0);
  /* Both come back exactly once. */
  void *x[3];
  for (int i = 0; i < 3; i++) {
    x[i] = posh_alloc(h, 48);
    assert_non_null(x[i]);
    for (int j = 0; j < i; j++)
      assert_ptr_not_equal(x[i], x[j]);
  }
  for (int i = 0; i < 3; i++)
    assert_int_equal(posh_free(h, x[i]), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

static void *free_once_thread(void *arg) {
  struct twice *t = arg;
  t->r1 = posh_free(t->heap, t->p);
  return NULL;
}

/* posh_free(h, p) from a thread of its own (a remote free): its result. */
static int free_in_other_thread(posh_heap_t *h, void *p) {
  struct twice t = {h, p, -1, -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, free_once_thread, &t), 0);
  pthread_join(th, NULL);
  return t.r1;
}

/* A free from another thread into a page whose descriptor was damaged
 * (the descriptors are shared memory: a stray write) is POSH_ECORRUPT and
 * writes nothing: not with the class index, the head offset or the free
 * bitmap offset pointing elsewhere.  Undamaged again, it frees normally. */
static void test_remote_free_damaged_descriptor(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *p = posh_alloc(h, 48), *keep = posh_alloc(h, 48);
  assert_non_null(p);
  assert_non_null(keep);
  posh__page_t *pg = &h->pages[(uint64_t)(p - h->data) >> POSH_PAGE_SHIFT];
  const posh__page_t saved = *pg;
  for (int d = 0; d < 4; d++) {
    switch (d) {
    case 0: pg->size_class = 200; break;
    case 1: pg->head_off = 65535; break;       /* head past the bitmaps */
    case 2: pg->free_bitmap_off = 65535; break; /* bitmap past the blocks */
    case 3: pg->first_block = 1u << 20; break;  /* past the page */
    }
    int r = free_in_other_thread(h, p);
    assert_true(r == POSH_ECORRUPT || r == POSH_EFAULT);
    assert_int_equal(posh_block_state(h, p), POSH_BLOCK_INVALID);
    *pg = saved;
    assert_int_equal(posh_block_state(h, p), POSH_BLOCK_ALLOCATED);
  }
  assert_int_equal(free_in_other_thread(h, p), 0);
  assert_int_equal(posh_free(h, keep), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* Debug builds: a double free split between the owner and another thread
 * (either order) is EDOUBLEFREE and leaves the heap consistent (a
 * regression test: the owner's free once accepted a block whose remote bit
 * was set). */
static void test_double_free_owner_and_remote(void **state) {
  (void)state;
#if POSH_DEBUG < 2
  skip();
#else
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  void *keep = posh_alloc(h, 80);
  void *p = posh_alloc(h, 80), *q = posh_alloc(h, 80);
  assert_non_null(p);
  assert_non_null(q);
  /* Owner first, then another thread. */
  assert_int_equal(posh_free(h, p), 0);
  void *spacer = posh_alloc(h, 8); /* another class: p stays in the list */
  struct twice t = {h, p, -1, -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, free_once_thread, &t), 0);
  pthread_join(th, NULL);
  assert_int_equal(t.r1, POSH_EDOUBLEFREE);
  ASSERT_HEAP_OK(h, 80 + 80 + 16);
  /* Another thread first, then the owner. */
  t = (struct twice){h, q, -1, -1};
  assert_int_equal(pthread_create(&th, NULL, free_once_thread, &t), 0);
  pthread_join(th, NULL);
  assert_int_equal(t.r1, 0);
  int r = posh_free(h, q);
  int check = tu_check(h);
  assert_int_equal(posh_free(h, keep), 0);
  assert_int_equal(posh_free(h, spacer), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  if (r != POSH_EDOUBLEFREE || check != 0)
    fail_msg("owner's free of a block another thread already freed "
             "returned %s, heap check %s",
             posh_err_name(r), posh_err_name(check));
#endif
}

/* Every build: a remote free the release build cannot detect (of a slot
 * never handed out, or a double free split between another thread and the
 * owner) must not make the allocator hand one block out twice.  Regression
 * test: the stale remote bit used to survive the block's next hand-out, and
 * the collection after it freed the new live block. */
#define STALE_N 10000 /* more than a 16-byte page holds: forces a collection */
static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
  return x < y ? -1 : x > y;
}
static void assert_distinct_blocks(posh_heap_t *h, size_t size) {
  static void *ptrs[STALE_N], *sorted[STALE_N];
  for (int i = 0; i < STALE_N; i++) {
    ptrs[i] = posh_alloc(h, size);
    assert_non_null(ptrs[i]);
  }
  memcpy(sorted, ptrs, sizeof ptrs);
  qsort(sorted, STALE_N, sizeof sorted[0], cmp_ptr);
  for (int i = 1; i < STALE_N; i++)
    if (sorted[i] == sorted[i - 1])
      fail_msg("one block handed out twice: %p", sorted[i]);
  assert_int_equal(tu_check(h), 0);
  for (int i = 0; i < STALE_N; i++)
    assert_int_equal(posh_free(h, ptrs[i]), 0);
}

static void test_stale_remote_bit_never_doubles(void **state) {
  (void)state;
  /* A slot never handed out, freed by another thread. */
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  char *first = posh_alloc(h, 16);
  assert_non_null(first);
  struct twice t = {h, first + 16 * 3, -1, -1};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, free_once_thread, &t), 0);
  pthread_join(th, NULL);
  /* Release builds do not report it (the bit is dropped); debug builds
   * see the slot free in the owner's bitmap. */
  assert_true(t.r1 == 0 || t.r1 == POSH_EDOUBLEFREE);
  assert_distinct_blocks(h, 16);
  assert_int_equal(posh_free(h, first), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);

  /* Another thread's free, then the owner's free of the same block. */
  h = mk(64 * MiB);
  assert_non_null(h);
  void *victim = posh_alloc(h, 16);
  assert_non_null(victim);
  t = (struct twice){h, victim, -1, -1};
  assert_int_equal(pthread_create(&th, NULL, free_once_thread, &t), 0);
  pthread_join(th, NULL);
  assert_int_equal(t.r1, 0);
  int r = posh_free(h, victim);
  assert_true(r == 0 || r == POSH_EDOUBLEFREE); /* detected in debug builds */
  assert_distinct_blocks(h, 16);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct adopt_race {
  posh_heap_t *heap;
  void **blocks;
  size_t n;
  long freed; /* frees done so far (atomic) */
  long wrong; /* frees that did not return 0 */
  int first_err;
};

TU_UNUSED static void *alloc_and_exit(void *arg) {
  struct adopt_race *a = arg;
  for (size_t i = 0; i < a->n; i++)
    a->blocks[i] = posh_alloc(a->heap, 64);
  return NULL; /* exits: its pages are abandoned with every block live */
}

TU_UNUSED static void *free_while_adopted(void *arg) {
  struct adopt_race *a = arg;
  /* Interleave the pages so frees hit every page during the run. */
  for (size_t k = 0; k < 1000; k++)
    for (size_t i = k; i < a->n; i += 1000) {
      int r = posh_free(a->heap, a->blocks[i]);
      if (r != 0 && a->wrong++ == 0)
        a->first_err = r;
      __atomic_add_fetch(&a->freed, 1, __ATOMIC_RELEASE);
    }
  return NULL;
}

/* Debug builds: blocks of abandoned pages freed by another thread while
 * those pages are being adopted are accepted (no spurious EDOUBLEFREE while
 * the adopter rebuilds the page; a regression test: the rebuild once
 * zeroed the bitmap before refilling it). */
static void test_remote_free_during_adoption(void **state) {
  (void)state;
#if POSH_DEBUG < 2
  skip();
#else
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  enum { N = 20000, ROUNDS = 10 };
  void **blocks = calloc(N, sizeof *blocks);
  void **mine = calloc(N, sizeof *mine);
  long wrong = 0;
  int first = 0;
  for (int round = 0; round < ROUNDS; round++) {
    struct adopt_race a = {h, blocks, N, 0, 0, 0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, alloc_and_exit, &a), 0);
    pthread_join(th, NULL);
    for (size_t i = 0; i < N; i++)
      assert_non_null(blocks[i]);
    assert_int_equal(pthread_create(&th, NULL, free_while_adopted, &a), 0);
    /* Adopt while the frees are in full swing. */
    while (__atomic_load_n(&a.freed, __ATOMIC_ACQUIRE) < N / 20)
      ;
    for (size_t i = 0; i < N; i++) {
      mine[i] = posh_alloc(h, 64); /* adopts the abandoned pages */
      assert_non_null(mine[i]);
    }
    pthread_join(th, NULL);
    if (a.wrong && !wrong)
      first = a.first_err;
    wrong += a.wrong;
    for (size_t i = 0; i < N; i++)
      assert_int_equal(posh_free(h, mine[i]), 0);
  }
  int check = tu_check(h);
  free(blocks);
  free(mine);
  assert_int_equal(posh_heap_detach(h), 0);
  if (wrong)
    fail_msg("%ld of %d remote frees during adoption failed (first: %s)", wrong,
             N * ROUNDS, posh_err_name(first));
  assert_int_equal(check, 0);
#endif
}

/* ------------------------------------------------------------------------
 * Exhaustion and large runs.
 * ---------------------------------------------------------------------- */

/* Fill h with blocks of `size` until the allocator says ENOMEM; returns
 * how many it got (blocks in *out, filled with a pattern). */
static size_t fill_up(posh_heap_t *h, size_t size, void **out, size_t max) {
  size_t n = 0;
  for (;;) {
    assert_true(n < max);
    void *p = posh_alloc(h, size);
    if (!p)
      break;
    tu_fill(p, size < 256 ? size : 256, n);
    out[n++] = p;
  }
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  return n;
}

/* A minimum-size heap runs out (NULL, ENOMEM) for small, large and huge
 * requests without damage; once everything is freed it serves the same
 * amount again, and the free page count returns to its start. */
static void test_exhaustion(void **state) {
  (void)state;
  posh_heap_options_t o = {.capacity = POSH_MIN_CAPACITY};
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  enum { MAX = 8000 };
  static void *p[MAX];
  uint64_t free0 = stats(h).pages_free;
  assert_true(free0 >= 8);

  size_t n1 = fill_up(h, 1000, p, MAX);
  assert_true(n1 > (free0 - 2) * 32);
  assert_null(posh_alloc(h, 100000));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  assert_null(posh_alloc(h, 16));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  /* A grow that cannot be served leaves the block alone. */
  assert_null(posh_realloc(h, p[0], 5000));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  assert_int_equal(tu_check(h), 0);
  for (size_t i = 0; i < n1; i++) {
    assert_true(tu_verify(p[i], 256, i));
    assert_int_equal(posh_free(h, p[i]), 0);
  }
  ASSERT_HEAP_OK(h, 0);
  size_t n2 = fill_up(h, 1000, p, MAX);
  assert_int_equal(n2, n1);
  for (size_t i = 0; i < n2; i++)
    assert_int_equal(posh_free(h, p[i]), 0);
  ASSERT_HEAP_OK(h, 0);

  /* Large runs: all of them come back. */
  posh_heap_t *g = mk(POSH_MIN_CAPACITY);
  assert_non_null(g);
  uint64_t gfree0 = stats(g).pages_free;
  size_t n3 = fill_up(g, 1 * MiB, p, MAX);
  assert_int_equal(n3, gfree0 / 16);
  for (size_t i = 0; i < n3; i++)
    assert_int_equal(posh_free(g, p[i]), 0);
  ASSERT_HEAP_OK(g, 0);
  assert_int_equal(stats(g).pages_free, gfree0);
  void *all = posh_alloc(g, gfree0 * 65536);
  assert_non_null(all);
  assert_null(posh_alloc(g, 16));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  assert_int_equal(posh_free(g, all), 0);
  assert_null(posh_alloc(g, (gfree0 + 1) * 65536));
  assert_int_equal(posh_last_error(), POSH_ENOMEM);
  static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 65534, SIZE_MAX / 2,
                                1ull << 46};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    assert_null(posh_alloc(g, huge[i]));
    int e = posh_last_error();
    assert_true(e == POSH_ENOMEM || e == POSH_EINVAL);
  }
  ASSERT_HEAP_OK(g, 0);
  assert_int_equal(stats(g).pages_free, gfree0);
  assert_int_equal(posh_heap_detach(g), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct strand {
  posh_heap_t *heap;
  void **blocks;
  size_t n;
  int bad;
};

static void *free_all_thread(void *arg) {
  struct strand *s = arg;
  for (size_t i = 0; i < s->n; i++)
    if (posh_free(s->heap, s->blocks[i]) != 0)
      s->bad++;
  return NULL;
}

/* Memory freed by other threads is not lost to its owner (a regression
 * test: pages emptied by remote frees were once never collected): a thread
 * that filled the heap, had every block freed by another thread and then
 * allocates (another class, a large block) is served, not told ENOMEM
 * while nothing is in use. */
static void test_exhausted_owner_gets_remote_frees_back(void **state) {
  (void)state;
  posh_heap_options_t o = {.capacity = POSH_MIN_CAPACITY};
  posh_heap_t *h = NULL;
  assert_int_equal(posh_heap_create(NULL, &o, &h), 0);
  enum { MAX = 8000 };
  static void *p[MAX];
  size_t n = fill_up(h, 1000, p, MAX);
  struct strand s = {h, p, n, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, free_all_thread, &s), 0);
  pthread_join(th, NULL);
  assert_int_equal(s.bad, 0);
  assert_int_equal(tu_bytes_in_use(h), 0);
  void *small = posh_alloc(h, 100);
  int e1 = small ? 0 : posh_last_error();
  void *large = posh_alloc(h, 1 * MiB);
  int e2 = large ? 0 : posh_last_error();
  posh_heap_stats_t st = stats(h);
  if (small)
    posh_free(h, small);
  if (large)
    posh_free(h, large);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
  if (!small || !large)
    fail_msg("with 0 bytes in use the owner got: 100 bytes -> %s, 1 MiB -> %s "
             "(%llu small pages, %llu free pages)",
             posh_err_name(e1), posh_err_name(e2),
             (unsigned long long)st.pages_small,
             (unsigned long long)st.pages_free);
}

/* Large blocks are page runs: pages_large counts them while they live,
 * pages_free returns to its start value after they are freed, and a big
 * run's memory goes back to the system. */
static void test_large_runs(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  posh_heap_stats_t s0 = stats(h);
  static const size_t sizes[] = {16385, 65536, 65537, 200000, 1 * MiB, 40 * MiB};
  void *p[6];
  uint64_t pages = 0;
  for (int i = 0; i < 6; i++) {
    p[i] = posh_alloc(h, sizes[i]);
    assert_non_null(p[i]);
    assert_true(aligned(p[i], 65536));
    memset(p[i], 0x5a, sizes[i]);
    pages += (sizes[i] + 65535) / 65536;
  }
  posh_heap_stats_t s1 = stats(h);
  assert_int_equal(s1.pages_large, pages);
  assert_int_equal(s1.pages_free, s0.pages_free - pages);
  assert_int_equal(s1.bytes_in_use, pages * 65536);
  assert_int_equal(tu_check(h), 0);
  struct stat st;
  assert_int_equal(fstat(posh_heap_fd(h), &st), 0);
  uint64_t blocks_before = (uint64_t)st.st_blocks;
  for (int i = 0; i < 6; i++)
    assert_int_equal(posh_free(h, p[i]), 0);
  posh_heap_stats_t s2 = stats(h);
  assert_int_equal(s2.pages_large, 0);
  assert_int_equal(s2.pages_free, s0.pages_free);
  assert_int_equal(s2.bytes_in_use, 0);
  /* The 40 MiB run (at least: in a 256 MiB heap, runs from 32 MiB go at
   * once, smaller ones wait for a batch) was handed back to tmpfs. */
  assert_int_equal(fstat(posh_heap_fd(h), &st), 0);
  assert_true((uint64_t)st.st_blocks * 512 + 40 * MiB <= blocks_before * 512);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* posh_block_state tells allocated, free (freed locally, freed by another
 * thread, never handed out, freed large run) and invalid blocks apart. */
static void test_block_state(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *a = posh_alloc(h, 64), *b = posh_alloc(h, 64),
                *c = posh_alloc(h, 64);
  unsigned char *l = posh_alloc(h, 100000);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(c);
  assert_non_null(l);
  assert_int_equal(posh_block_state(h, a), POSH_BLOCK_ALLOCATED);
  assert_int_equal(posh_block_state(h, l), POSH_BLOCK_ALLOCATED);
  assert_int_equal(posh_block_state(h, c + 64),
                   POSH_BLOCK_FREE); /* never used */
  assert_int_equal(posh_free(h, a), 0);
  assert_int_equal(posh_block_state(h, a), POSH_BLOCK_FREE);
  assert_int_equal(posh_block_state(h, b), POSH_BLOCK_ALLOCATED);
  assert_int_equal(free_in_other_thread(h, b), 0);
  assert_int_equal(posh_block_state(h, b), POSH_BLOCK_FREE); /* remote */
  assert_int_equal(posh_block_state(h, l + 65536), POSH_BLOCK_INVALID);
  assert_int_equal(posh_free(h, l), 0);
  assert_int_equal(posh_block_state(h, l), POSH_BLOCK_FREE);
  int local;
  assert_int_equal(posh_block_state(h, &local), POSH_BLOCK_INVALID);
  assert_int_equal(posh_block_state(h, c + 1), POSH_BLOCK_INVALID);
  assert_int_equal(posh_block_state(h, NULL), POSH_BLOCK_INVALID);
  assert_int_equal(posh_block_state(NULL, c), POSH_BLOCK_INVALID);
  assert_int_equal(posh_free(h, c), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Frees from other threads and processes.
 * ---------------------------------------------------------------------- */
#define XN 4000

static size_t mixed_size(size_t i) {
  static const size_t s[] = {8,    16,   40,   64,   100,   250,   512,
                             1000, 2000, 4000, 9000, 16384, 30000, 70000};
  return i % 50 == 49 ? s[12 + (i / 50) % 2] : s[i % 12];
}

struct xthread {
  posh_heap_t *heap;
  void **blocks;
  int bad;
  pthread_barrier_t *bar;
};

static void *x_alloc(void *arg) {
  struct xthread *x = arg;
  for (size_t i = 0; i < XN; i++) {
    x->blocks[i] = posh_alloc(x->heap, mixed_size(i));
    if (!x->blocks[i]) {
      x->bad++;
      continue;
    }
    tu_fill(x->blocks[i], mixed_size(i), i);
  }
  if (x->bar) {
    pthread_barrier_wait(x->bar); /* blocks handed over */
    pthread_barrier_wait(x->bar); /* the other thread freed them */
    /* Allocate again: collects the remote frees, hands out each block
     * once. */
    void **again = calloc(XN, sizeof *again);
    for (size_t i = 0; i < XN; i++) {
      again[i] = posh_alloc(x->heap, mixed_size(i));
      if (!again[i]) {
        x->bad++;
        continue;
      }
      tu_fill(again[i], mixed_size(i), i + XN);
    }
    for (size_t i = 0; i < XN; i++)
      if (again[i]) {
        if (!tu_verify(again[i], mixed_size(i), i + XN) ||
            posh_free(x->heap, again[i]) != 0)
          x->bad++;
      }
    free(again);
  }
  return NULL;
}

static void *x_free(void *arg) {
  struct xthread *x = arg;
  if (x->bar)
    pthread_barrier_wait(x->bar);
  for (size_t i = 0; i < XN; i++) {
    if (!x->blocks[i])
      continue;
    if (!tu_verify(x->blocks[i], mixed_size(i), i))
      x->bad++;
    if (posh_free(x->heap, x->blocks[i]) != 0)
      x->bad++;
  }
  if (x->bar)
    pthread_barrier_wait(x->bar);
  return NULL;
}

/* Blocks allocated by thread A and freed by thread B, while A lives (A then
 * reuses them) and after A exited (its pages wait for adoption): bytes in
 * use return to 0 and the heap check passes. */
static void test_cross_thread_free(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  void **blocks = calloc(XN, sizeof *blocks);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, 2);
  struct xthread x = {h, blocks, 0, &bar};
  struct xthread y = {h, blocks, 0, &bar};
  pthread_t a, b;
  assert_int_equal(pthread_create(&a, NULL, x_alloc, &x), 0);
  assert_int_equal(pthread_create(&b, NULL, x_free, &y), 0);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  assert_int_equal(x.bad, 0);
  assert_int_equal(y.bad, 0);
  ASSERT_HEAP_OK(h, 0);

  /* A exits first, B frees into the abandoned pages. */
  x = (struct xthread){h, blocks, 0, NULL};
  y = (struct xthread){h, blocks, 0, NULL};
  assert_int_equal(pthread_create(&a, NULL, x_alloc, &x), 0);
  pthread_join(a, NULL);
  assert_int_equal(x.bad, 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(pthread_create(&b, NULL, x_free, &y), 0);
  pthread_join(b, NULL);
  assert_int_equal(y.bad, 0);
  ASSERT_HEAP_OK(h, 0);
  /* And the main thread can use all of it again. */
  x = (struct xthread){h, blocks, 0, NULL};
  x_alloc(&x);
  assert_int_equal(x.bad, 0);
  y = (struct xthread){h, blocks, 0, NULL};
  x_free(&y);
  assert_int_equal(y.bad, 0);
  ASSERT_HEAP_OK(h, 0);
  pthread_barrier_destroy(&bar);
  free(blocks);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct xproc {
  posh_heap_t *heap;
  void **blocks;
};

static int child_frees_parents(void *arg) {
  struct xproc *x = arg;
  for (size_t i = 0; i < XN; i++) {
    CHILD_CHECK(tu_verify(x->blocks[i], mixed_size(i), i));
    CHILD_CHECK_EQ(posh_free(x->heap, x->blocks[i]), 0);
  }
  CHILD_CHECK_EQ(posh_heap_check(x->heap, NULL, 0), 0);
  CHILD_CHECK_EQ(posh_heap_detach(x->heap), 0);
  return 0;
}

/* A forked child frees every block the parent allocated, an exec'd
 * unrelated process frees blocks given by offset and blocks published in
 * the heap, and the parent frees blocks an exec'd process allocated: bytes
 * in use return to 0 and the check passes each time. */
static void test_cross_process_free(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  void **blocks = calloc(XN, sizeof *blocks);
  for (size_t i = 0; i < XN; i++) {
    blocks[i] = posh_alloc(h, mixed_size(i));
    assert_non_null(blocks[i]);
    tu_fill(blocks[i], mixed_size(i), i);
  }
  struct xproc x = {h, blocks};
  assert_int_equal(tu_run_child(child_frees_parents, &x, TU_TIMEOUT_MS), 0);
  ASSERT_HEAP_OK(h, 0);
  /* We reuse what the child freed. */
  for (size_t i = 0; i < XN; i++) {
    blocks[i] = posh_alloc(h, mixed_size(i));
    assert_non_null(blocks[i]);
    tu_fill(blocks[i], mixed_size(i), i + 1);
  }
  for (size_t i = 0; i < XN; i++) {
    assert_true(tu_verify(blocks[i], mixed_size(i), i + 1));
    assert_int_equal(posh_free(h, blocks[i]), 0);
  }
  ASSERT_HEAP_OK(h, 0);
  free(blocks);
  assert_int_equal(posh_heap_detach(h), 0);

  if (!tu_have_attach_child())
    return;
  /* Unrelated processes need a name. */
  char name[64];
  posh_heap_options_t o = {.capacity = 256 * MiB};
  assert_int_equal(
      posh_heap_create(tu_heap_name(name, sizeof name, "xfree"), &o, &h), 0);
  char offs[20][24];
  const char *args[24] = {name, "free-offs"};
  for (int i = 0; i < 20; i++) {
    void *p = posh_alloc(h, mixed_size((size_t)i * 7));
    assert_non_null(p);
    snprintf(offs[i], sizeof offs[i], "%llu",
             (unsigned long long)posh_off(h, p).v);
    args[2 + i] = offs[i];
  }
  args[22] = NULL;
  assert_int_equal(tu_exec_child(args, TU_TIMEOUT_MS), 0);
  ASSERT_HEAP_OK(h, 0);

  /* A published list of blocks, freed by the unrelated process. */
  tu_blocklist_t *bl = posh_alloc(h, sizeof *bl + 300 * sizeof bl->b[0]);
  assert_non_null(bl);
  bl->count = 300;
  for (uint64_t i = 0; i < 300; i++) {
    void *p = posh_alloc(h, mixed_size(i));
    assert_non_null(p);
    tu_fill(p, mixed_size(i), 1000 + i);
    bl->b[i].off = posh_off(h, p).v;
    bl->b[i].size = mixed_size(i);
    bl->b[i].seed = 1000 + i;
  }
  assert_int_equal(posh_name_bind(h, "parent-blocks", posh_off(h, bl), 1), 0);
  const char *fn[] = {name, "free-named", "parent-blocks", NULL};
  assert_int_equal(tu_exec_child(fn, TU_TIMEOUT_MS), 0);
  ASSERT_HEAP_OK(h, 0);

  /* Blocks of an unrelated process that has detached: we free them. */
  const char *ap[] = {name, "alloc-publish", "child-blocks", "200", "77", NULL};
  assert_int_equal(tu_exec_child(ap, TU_TIMEOUT_MS), 0);
  posh_off_t off;
  assert_int_equal(posh_name_lookup(h, "child-blocks", &off, NULL), 0);
  bl = posh_ptr(h, off);
  assert_int_equal(bl->count, 200);
  for (uint64_t i = 0; i < bl->count; i++) {
    void *p = posh_ptr(h, (posh_off_t){bl->b[i].off});
    assert_true(tu_verify(p, (size_t)bl->b[i].size, bl->b[i].seed));
    assert_int_equal(posh_free(h, p), 0);
  }
  assert_int_equal(posh_name_unbind(h, "child-blocks", off), 0);
  assert_int_equal(posh_free_off(h, off), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
  assert_int_equal(posh_heap_unlink(name), 0);
}

/* ------------------------------------------------------------------------
 * Stress: 2 processes x 2 threads.
 * ---------------------------------------------------------------------- */
#define RING 64
#define OWN 384
#define STRESS_MS 2500

/* Every stress block starts with its size and seed; the rest is pattern. */
typedef struct sblock {
  uint64_t size, seed;
} sblock_t;

struct sworker {
  posh_heap_t *heap;
  posh_atomic_t *ring;
  uint64_t seed, deadline_ms;
  long errors, ops, exchanged;
};

static void sfill(sblock_t *b, size_t size, uint64_t seed) {
  b->size = size;
  b->seed = seed;
  tu_fill(b + 1, size - sizeof *b, seed);
}
static int sok(const sblock_t *b) {
  return b->size >= sizeof *b && b->size <= 300000 &&
         tu_verify(b + 1, (size_t)b->size - sizeof *b, b->seed);
}

#define SCHECK(w, cond, what)                                                  \
  do {                                                                         \
    if (!(cond) && (w)->errors++ < 5)                                          \
      fprintf(stderr, "stress worker (pid %d): %s\n", (int)getpid(), what);    \
  } while (0)

static void *stress_worker(void *arg) {
  struct sworker *w = arg;
  posh_heap_t *h = w->heap;
  sblock_t *own[OWN] = {0};
  while (tu_now_ms() < w->deadline_ms) {
    uint64_t r = rnd(&w->seed);
    w->ops++;
    if (r % 16 == 0) {
      posh_atomic_t *slot = &w->ring[(r >> 8) % RING];
      int k = (int)((r >> 20) % OWN);
      if ((r & 16) && own[k]) {
        /* Hand one of ours to whoever takes it. */
        if (posh_atomic_cas_bool_full(slot, 0, posh_off(h, own[k]).v))
          own[k] = NULL;
      } else {
        uint64_t off = posh_atomic_exchange_full(slot, 0);
        if (off) {
          sblock_t *b = posh_ptr(h, (posh_off_t){off});
          SCHECK(w, sok(b), "exchanged block corrupted");
          SCHECK(w, posh_free(h, b) == 0, "free of exchanged block");
          w->exchanged++;
        }
      }
      continue;
    }
    int k = (int)(r % OWN);
    if (own[k]) {
      SCHECK(w, sok(own[k]), "own block corrupted");
      SCHECK(w, posh_free(h, own[k]) == 0, "free of own block");
      own[k] = NULL;
    } else {
      size_t size = (r >> 32) % 100 < 3    ? 16385 + (r >> 40) % 200000
                    : (r >> 32) % 100 < 20 ? 1025 + (r >> 40) % 15000
                                           : 16 + (r >> 40) % 1008;
      sblock_t *b = posh_alloc(h, size);
      SCHECK(w, b != NULL, "allocation failed");
      if (b) {
        sfill(b, size, r);
        own[k] = b;
      }
    }
  }
  for (int k = 0; k < OWN; k++)
    if (own[k]) {
      SCHECK(w, sok(own[k]), "own block corrupted at the end");
      SCHECK(w, posh_free(h, own[k]) == 0, "final free");
    }
  return NULL;
}

struct sproc {
  posh_heap_t *heap;
  posh_atomic_t *ring;
  unsigned id;
  uint64_t deadline_ms;
};

static int stress_process(void *arg) {
  struct sproc *p = arg;
  struct sworker w[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    w[i] = (struct sworker){p->heap,
                            p->ring,
                            0x9e3779b9ull * (p->id * 2 + (unsigned)i + 1),
                            p->deadline_ms,
                            0,
                            0,
                            0};
    CHILD_CHECK(pthread_create(&th[i], NULL, stress_worker, &w[i]) == 0);
  }
  long errors = 0, ops = 0, ex = 0;
  for (int i = 0; i < 2; i++) {
    pthread_join(th[i], NULL);
    errors += w[i].errors;
    ops += w[i].ops;
    ex += w[i].exchanged;
  }
  if (getenv("POSH_TEST_VERBOSE"))
    fprintf(stderr, "stress process %u: %ld ops, %ld exchanged\n", p->id, ops,
            ex);
  CHILD_CHECK_EQ(errors, 0);
  CHILD_CHECK(ops > 0);
  CHILD_CHECK_EQ(posh_heap_detach(p->heap), 0);
  return 0;
}

/* Two processes with two threads each allocate, verify and free blocks of
 * random sizes and pass blocks to each other through a ring in the heap
 * for a few seconds: no block is ever corrupted or refused, and afterwards
 * nothing is in use and the check passes. */
static void test_stress(void **state) {
  (void)state;
  posh_heap_t *h = mk(512 * MiB);
  assert_non_null(h);
  posh_atomic_t *ring = posh_calloc(h, RING, sizeof *ring);
  assert_non_null(ring);
  uint64_t deadline = tu_now_ms() + STRESS_MS;
  struct sproc p[2] = {{h, ring, 0, deadline}, {h, ring, 1, deadline}};
  pid_t pid[2];
  for (int i = 0; i < 2; i++) {
    pid[i] = tu_fork(stress_process, &p[i]);
    assert_true(pid[i] > 0);
  }
  for (int i = 0; i < 2; i++)
    assert_int_equal(tu_wait(pid[i], STRESS_MS + TU_TIMEOUT_MS), 0);
  assert_int_equal(tu_check(h), 0);
  for (int i = 0; i < RING; i++) {
    uint64_t off = posh_atomic_exchange_full(&ring[i], 0);
    if (off) {
      sblock_t *b = posh_ptr(h, (posh_off_t){off});
      assert_true(sok(b));
      assert_int_equal(posh_free(h, b), 0);
    }
  }
  assert_int_equal(posh_free(h, (void *)ring), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(stats(h).processes, 1);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Adoption.
 * ---------------------------------------------------------------------- */
#define ADOPT_N 3000

static size_t adopt_size(uint64_t i) {
  static const size_t s[] = {24, 64, 100, 1000, 5000};
  return s[i % 5];
}

struct adopt_ctx {
  posh_heap_t *heap;
  int ready;
};

/* Child: allocate many blocks, free every third one itself, publish the
 * rest, and wait to be killed. */
static int adopt_child(void *arg) {
  struct adopt_ctx *c = arg;
  posh_heap_t *h = c->heap;
  static void *b[ADOPT_N];
  uint64_t live = 0;
  for (uint64_t i = 0; i < ADOPT_N; i++) {
    b[i] = posh_alloc(h, adopt_size(i));
    CHILD_CHECK(b[i] != NULL);
    tu_fill(b[i], adopt_size(i), i);
  }
  for (uint64_t i = 0; i < ADOPT_N; i += 3) {
    CHILD_CHECK_EQ(posh_free(h, b[i]), 0);
    b[i] = NULL;
  }
  for (uint64_t i = 0; i < ADOPT_N; i++)
    live += b[i] != NULL;
  tu_blocklist_t *bl = posh_alloc(h, sizeof *bl + live * sizeof bl->b[0]);
  CHILD_CHECK(bl != NULL);
  bl->count = 0;
  for (uint64_t i = 0; i < ADOPT_N; i++)
    if (b[i]) {
      bl->b[bl->count].off = posh_off(h, b[i]).v;
      bl->b[bl->count].size = adopt_size(i);
      bl->b[bl->count].seed = i;
      bl->count++;
    }
  CHILD_CHECK_EQ(posh_name_bind(h, "published", posh_off(h, bl), 1), 0);
  tu_write_byte(c->ready, 'R');
  for (;;)
    pause();
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* A child that allocated many blocks (some freed by itself, some by us) is
 * SIGKILLed; after reaping, heavy allocation adopts its pages but never
 * hands out a published block, whose contents stay intact and which can
 * all be freed: then nothing is in use and the check passes. */
static void test_adoption_after_kill(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct adopt_ctx c = {h, p[1]};
  pid_t pid = tu_fork(adopt_child, &c);
  assert_true(pid > 0);
  close(p[1]);
  int ready = tu_read_byte(p[0], 20000);
  close(p[0]);
  if (ready != 'R')
    fail_msg("child did not get ready: status %d", tu_wait(pid, 1000));
  posh_off_t off;
  assert_int_equal(posh_name_lookup(h, "published", &off, NULL), 0);
  tu_blocklist_t *bl = posh_ptr(h, off);
  uint64_t n = bl->count;
  assert_int_equal(n, ADOPT_N - (ADOPT_N + 2) / 3);
  /* Free every 7th published block from here while the owner lives: it
   * will be adopted with remote-free bits set. */
  unsigned char *gone = calloc(n, 1);
  for (uint64_t i = 0; i < n; i += 7) {
    assert_int_equal(posh_free_off(h, (posh_off_t){bl->b[i].off}), 0);
    gone[i] = 1;
  }
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  assert_true(reaped >= 1);
  assert_int_equal(tu_check(h), 0);

  /* Published offsets, sorted, and the child's pages. */
  uint64_t *pub = malloc(n * sizeof *pub);
  uint64_t npub = 0;
  for (uint64_t i = 0; i < n; i++)
    if (!gone[i])
      pub[npub++] = bl->b[i].off;
  qsort(pub, npub, sizeof *pub, cmp_u64);

  /* Allocate heavily in the same classes. */
  enum { M = 4 * ADOPT_N };
  void **mine = malloc(M * sizeof *mine);
  uint64_t adopted = 0;
  for (uint64_t i = 0; i < M; i++) {
    mine[i] = posh_alloc(h, adopt_size(i));
    assert_non_null(mine[i]);
    uint64_t o = posh_off(h, mine[i]).v;
    if (bsearch(&o, pub, npub, sizeof *pub, cmp_u64))
      fail_msg("block at offset %llu handed out while still published",
               (unsigned long long)o);
    tu_fill(mine[i], adopt_size(i), 1000000 + i);
    /* In a page the child owned? */
    uint64_t page = (o - (uint64_t)(h->data - h->view.base)) >> POSH_PAGE_SHIFT;
    for (uint64_t k = 0; k < npub; k += 97)
      if ((pub[k] - (uint64_t)(h->data - h->view.base)) >> POSH_PAGE_SHIFT ==
          page) {
        adopted++;
        break;
      }
  }
  assert_true(adopted > 0); /* the child's pages were reused */
  for (uint64_t i = 0; i < n; i++)
    if (!gone[i] && !tu_verify(posh_ptr(h, (posh_off_t){bl->b[i].off}),
                               (size_t)bl->b[i].size, bl->b[i].seed))
      fail_msg("published block %llu corrupted", (unsigned long long)i);
  for (uint64_t i = 0; i < M; i++)
    assert_true(tu_verify(mine[i], adopt_size(i), 1000000 + i));
  assert_int_equal(tu_check(h), 0);
  for (uint64_t i = 0; i < n; i++)
    if (!gone[i])
      assert_int_equal(posh_free_off(h, (posh_off_t){bl->b[i].off}), 0);
  assert_int_equal(posh_name_unbind(h, "published", off), 0);
  assert_int_equal(posh_free_off(h, off), 0);
  for (uint64_t i = 0; i < M; i++)
    assert_int_equal(posh_free(h, mine[i]), 0);
  ASSERT_HEAP_OK(h, 0);
  free(mine);
  free(pub);
  free(gone);
  assert_int_equal(posh_heap_detach(h), 0);
}

static void *exit_with_blocks(void *arg) {
  posh_heap_t *h = ((void **)arg)[0];
  void **out = ((void **)arg)[1];
  for (int i = 0; i < 100; i++) {
    out[i] = posh_alloc(h, 64);
    if (out[i])
      tu_fill(out[i], 64, (uint64_t)i);
  }
  return NULL; /* exits holding them */
}

/* A thread that exits with live blocks abandons its page; another thread
 * adopts it for its next allocations, never hands out the live blocks, and
 * can free them as their new owner. */
static void test_thread_exit_adoption(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  void *blocks[100];
  void *args[2] = {h, blocks};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, exit_with_blocks, args), 0);
  pthread_join(th, NULL);
  for (int i = 0; i < 100; i++)
    assert_non_null(blocks[i]);
  uint64_t pidx =
      (uint64_t)((unsigned char *)blocks[0] - h->data) >> POSH_PAGE_SHIFT;
  posh__page_t *pg = &h->pages[pidx];
  int cls = (int)pg->size_class;
  assert_int_equal(pg->kind, POSH_PAGE_SMALL);
  assert_int_equal(posh_atomic32_load_relaxed(&pg->xowner),
                   POSH_OWNER_ABANDONED);
  assert_true(posh_atomic_load_relaxed(&h->hdr->xabandoned_count[cls]) > 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(tu_bytes_in_use(h), 100 * 64);

  void *mine[300];
  for (int i = 0; i < 300; i++) {
    mine[i] = posh_alloc(h, 64);
    assert_non_null(mine[i]);
    for (int j = 0; j < 100; j++)
      assert_ptr_not_equal(mine[i], blocks[j]);
    memset(mine[i], 0xee, 64);
  }
  /* The first came from the adopted page, which is ours now. */
  assert_int_equal(
      (uint64_t)((unsigned char *)mine[0] - h->data) >> POSH_PAGE_SHIFT, pidx);
  int err = 0;
  assert_int_equal(posh_atomic32_load_relaxed(&pg->xowner),
                   posh__self_token(h, &err));
  assert_int_equal(posh_atomic_load_relaxed(&h->hdr->xabandoned_count[cls]), 0);
  for (int i = 0; i < 100; i++) {
    assert_true(tu_verify(blocks[i], 64, (uint64_t)i));
    assert_int_equal(posh_free(h, blocks[i]), 0);
  }
  for (int i = 0; i < 300; i++)
    assert_int_equal(posh_free(h, mine[i]), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Processes killed inside the allocator (simulated at exact points).
 * ---------------------------------------------------------------------- */
enum { HOLD_ONLY, HALF_ALLOC_RUN, HALF_FREE_RUN };

struct plock_ctx {
  posh_heap_t *heap;
  int mode;
  int ready;
};

/* Child: take page_lock with its own token, leave page-level state as a
 * kill at that point of alloc_run / release would, and wait to be killed. */
static int die_holding_page_lock(void *arg) {
  struct plock_ctx *c = arg;
  posh_heap_t *h = c->heap;
  int err = 0;
  uint32_t token = posh__self_token(h, &err);
  CHILD_CHECK(token != 0);
  unsigned char *l = NULL;
  if (c->mode == HALF_FREE_RUN)
    CHILD_CHECK((l = posh_alloc(h, 5 * 65536)) != NULL);
  CHILD_CHECK_EQ(posh__pages_lock(h, token), 0);
  posh__hdr_t *hdr = h->hdr;
  if (c->mode == HALF_ALLOC_RUN) {
    /* A 4-page run at the high-water mark: bodies written back to front,
     * killed before the head. */
    uint64_t idx = hdr->pages_high;
    hdr->pages_high = idx + 4;
    h->pages[idx + 3].run_pages = 3;
    h->pages[idx + 3].kind = POSH_PAGE_LARGE_BODY;
    h->pages[idx + 2].run_pages = 2;
    h->pages[idx + 2].kind = POSH_PAGE_LARGE_BODY;
  } else if (c->mode == HALF_FREE_RUN) {
    /* Descriptors already free, free-page bitmap and counter not yet. */
    uint64_t idx = (uint64_t)(l - h->data) >> POSH_PAGE_SHIFT;
    for (uint64_t j = 0; j < 5; j++)
      h->pages[idx + j].kind = POSH_PAGE_FREE;
  }
  tu_write_byte(c->ready, 'R');
  for (;;)
    pause();
  return 0;
}

static int page_lock_survivor(void *arg) {
  posh_heap_t *h = arg;
  void *s = posh_alloc(h, 100);
  CHILD_CHECK(s != NULL);
  void *l = posh_alloc(h, 300000);
  CHILD_CHECK(l != NULL);
  CHILD_CHECK_EQ(posh_heap_check(h, NULL, 0), 0);
  CHILD_CHECK_EQ(posh_free(h, s), 0);
  CHILD_CHECK_EQ(posh_free(h, l), 0);
  CHILD_CHECK_EQ(posh_heap_detach(h), 0);
  return 0;
}

static void page_lock_case(int mode) {
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct plock_ctx c = {h, mode, p[1]};
  pid_t pid = tu_fork(die_holding_page_lock, &c);
  assert_true(pid > 0);
  close(p[1]);
  int ready = tu_read_byte(p[0], 20000);
  close(p[0]);
  if (ready != 'R')
    fail_msg("child did not get ready: status %d", tu_wait(pid, 1000));
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  /* The survivor runs in a child so that a hang fails the test. */
  assert_int_equal(tu_run_child(page_lock_survivor, h, TU_TIMEOUT_MS), 0);
  assert_int_equal(tu_check(h), 0);
  posh_heap_stats_t st = stats(h);
  assert_int_equal(st.pages_large, 0);
  assert_int_equal(st.pages_small + st.pages_free, st.pages_total);
  assert_int_equal(st.bytes_in_use, 0);
  assert_int_equal(posh__lock_owner(&h->hdr->page_lock), 0);
  /* Everything free is usable: one run over all free pages but the
   * (possibly) still carved small pages. */
  void *all = posh_alloc(h, (st.pages_free - st.pages_small - 2) * 65536);
  assert_non_null(all);
  assert_int_equal(posh_free(h, all), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* A process killed while holding the page lock (between updates, half way
 * through writing a large run, half way through freeing one) blocks no one:
 * the next allocator takes the lock over, repairs the page table, and the
 * heap is consistent with every free page usable. */
static void test_killed_holding_page_lock(void **state) {
  (void)state;
  page_lock_case(HOLD_ONLY);
  page_lock_case(HALF_ALLOC_RUN);
  page_lock_case(HALF_FREE_RUN);
}

struct collect_ctx {
  posh_heap_t *heap;
  int ready, go;
};

#define CN 50

/* Child: allocate CN blocks of 64 bytes, publish them; once the parent has
 * freed 10..19 remotely, move 10..14 to its free list as a collection does
 * and get killed before clearing their remote bits. */
static int die_mid_collection(void *arg) {
  struct collect_ctx *c = arg;
  posh_heap_t *h = c->heap;
  tu_blocklist_t *bl = posh_alloc(h, sizeof *bl + CN * sizeof bl->b[0]);
  CHILD_CHECK(bl != NULL);
  bl->count = CN;
  for (int i = 0; i < CN; i++) {
    void *b = posh_alloc(h, 64);
    CHILD_CHECK(b != NULL);
    tu_fill(b, 64, (uint64_t)i);
    bl->b[i].off = posh_off(h, b).v;
    bl->b[i].size = 64;
    bl->b[i].seed = (uint64_t)i;
  }
  CHILD_CHECK_EQ(posh_name_bind(h, "blocks", posh_off(h, bl), 1), 0);
  tu_write_byte(c->ready, 'R');
  CHILD_CHECK_EQ(tu_read_byte(c->go, 20000), 'G');
  unsigned char *b0 = posh_ptr(h, (posh_off_t){bl->b[0].off});
  posh__page_t *pg = &h->pages[(uint64_t)(b0 - h->data) >> POSH_PAGE_SHIFT];
  uint64_t *fb = posh__page_free_bitmap(b0 - ((uint64_t)(b0 - h->data) & (POSH_PAGE_SIZE - 1)), pg);
  for (int i = 10; i < 15; i++) {
    unsigned char *b = posh_ptr(h, (posh_off_t){bl->b[i].off});
    uint32_t in_page = (uint32_t)((uint64_t)(b - h->data) & (POSH_PAGE_SIZE - 1));
    uint32_t idx = (in_page - pg->first_block) / pg->block_size;
    fb[idx / 64] |= 1ull << (idx % 64); /* free, remote bit still set */
    pg->used--;
  }
  tu_write_byte(c->ready, 'R');
  for (;;)
    pause();
  return 0;
}

/* An owner killed half way through collecting remote frees leaves blocks
 * both on its free list and flagged; whoever adopts the page hands each of
 * them out once, and the blocks still in use are never handed out. */
static void test_killed_mid_collection(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  int ready[2], go[2];
  assert_int_equal(pipe(ready), 0);
  assert_int_equal(pipe(go), 0);
  struct collect_ctx c = {h, ready[1], go[0]};
  pid_t pid = tu_fork(die_mid_collection, &c);
  assert_true(pid > 0);
  close(ready[1]);
  close(go[0]);
  if (tu_read_byte(ready[0], 20000) != 'R')
    fail_msg("child did not get ready: status %d", tu_wait(pid, 1000));
  posh_off_t off;
  assert_int_equal(posh_name_lookup(h, "blocks", &off, NULL), 0);
  tu_blocklist_t *bl = posh_ptr(h, off);
  for (int i = 10; i < 20; i++)
    assert_int_equal(posh_free_off(h, (posh_off_t){bl->b[i].off}), 0);
  assert_int_equal(tu_write_byte(go[1], 'G'), 0);
  assert_int_equal(tu_read_byte(ready[0], 20000), 'R');
  close(ready[0]);
  close(go[1]);
  assert_int_equal(tu_kill(pid), TU_SIGNALED(SIGKILL));
  unsigned reaped = 0;
  assert_int_equal(posh_heap_reap(h, &reaped), 0);
  assert_int_equal(reaped, 1);
  assert_int_equal(tu_check(h), 0);

  /* Take every block of the page, and some more. */
  uint32_t cap = posh__classes[0].capacity; /* at least as many as 64's */
  size_t n = (size_t)cap + 64;
  void **got = calloc(n, sizeof *got);
  uint64_t in_page = 0;
  unsigned char *page = posh_ptr(h, (posh_off_t){bl->b[0].off});
  uint64_t pidx = (uint64_t)(page - h->data) >> POSH_PAGE_SHIFT;
  for (size_t i = 0; i < n; i++) {
    got[i] = posh_alloc(h, 64);
    assert_non_null(got[i]);
    memset(got[i], 0xcc, 64);
    if ((uint64_t)((unsigned char *)got[i] - h->data) >> POSH_PAGE_SHIFT ==
        pidx)
      in_page++;
    for (int k = 0; k < CN; k++)
      if ((k < 10 || k >= 20) && posh_off(h, got[i]).v == bl->b[k].off)
        fail_msg("live block %d handed out again", k);
  }
  qsort(got, n, sizeof *got, cmp_u64);
  for (size_t i = 1; i < n; i++)
    if (got[i] == got[i - 1])
      fail_msg("block %p handed out twice", got[i]);
  /* The adopted page was used up: its capacity minus the 40 live blocks. */
  posh__page_t *pg = &h->pages[pidx];
  assert_int_equal(in_page, pg->capacity - 40);
  for (int k = 0; k < CN; k++)
    if (k < 10 || k >= 20) {
      assert_true(
          tu_verify(posh_ptr(h, (posh_off_t){bl->b[k].off}), 64, (uint64_t)k));
      assert_int_equal(posh_free_off(h, (posh_off_t){bl->b[k].off}), 0);
    }
  for (size_t i = 0; i < n; i++)
    assert_int_equal(posh_free(h, got[i]), 0);
  assert_int_equal(posh_name_unbind(h, "blocks", off), 0);
  assert_int_equal(posh_free_off(h, off), 0);
  ASSERT_HEAP_OK(h, 0);
  free(got);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * The check itself.
 * ---------------------------------------------------------------------- */
static void expect_corrupt(posh_heap_t *h, const char *what) {
  char report[1024] = "";
  int r = posh_heap_check(h, report, sizeof report);
  if (r != POSH_ECORRUPT || !report[0])
    fail_msg("%s: check returned %s with report \"%s\"", what, posh_err_name(r),
             report);
}

/* posh_heap_check is not vacuous: it reports a free bitmap that marks
 * blocks beyond the page, a search cursor out of range, a page descriptor
 * out of its bounds or with a wrong count, a free-page bitmap or counter
 * that disagrees, and a broken large run; with each damage undone it
 * passes again. */
static void test_check_detects_page_damage(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  unsigned char *p = posh_alloc(h, 64), *q = posh_alloc(h, 64),
                *keep = posh_alloc(h, 64);
  unsigned char *l = posh_alloc(h, 200000);
  assert_non_null(p);
  assert_non_null(q);
  assert_non_null(keep);
  assert_non_null(l);
  assert_int_equal(posh_free(h, p), 0);
  assert_int_equal(posh_free(h, q), 0);
  assert_int_equal(tu_check(h), 0);

  {
    uint64_t pi = (uint64_t)(keep - h->data) >> POSH_PAGE_SHIFT;
    posh__page_t *pp = &h->pages[pi];
    const posh__class_info_t *ci = &posh__classes[pp->size_class];
    uint64_t *fb = posh__page_free_bitmap(h->data + (pi << POSH_PAGE_SHIFT), pp);
    uint32_t last = ci->bitmap_words - 1;
    uint64_t saved = fb[last];
    if (pp->capacity % 64) {
      fb[last] |= 1ull << 63;
      expect_corrupt(h, "free bitmap marks a block beyond capacity");
      fb[last] = saved;
    }
    uint32_t cursor = pp->cursor;
    pp->cursor = ci->bitmap_words + 3;
    expect_corrupt(h, "cursor out of range");
    pp->cursor = cursor;
    assert_int_equal(tu_check(h), 0);
  }

  uint64_t pidx = (uint64_t)(keep - h->data) >> POSH_PAGE_SHIFT;
  posh__page_t *pg = &h->pages[pidx];
  uint32_t bump = pg->bump;
  pg->bump = pg->capacity + 1;
  expect_corrupt(h, "bump beyond capacity");
  pg->bump = bump;
  pg->used++;
  expect_corrupt(h, "used count off by one (owner alive)");
  pg->used--;
  uint32_t bs = pg->block_size;
  pg->block_size = bs + 16;
  expect_corrupt(h, "geometry not of its class");
  pg->block_size = bs;
  assert_int_equal(tu_check(h), 0);

  h->freemap[pidx / 64] ^= 1ull << (pidx % 64);
  expect_corrupt(h, "free-page bitmap says a used page is free");
  h->freemap[pidx / 64] ^= 1ull << (pidx % 64);
  h->hdr->pages_free++;
  expect_corrupt(h, "free page counter");
  h->hdr->pages_free--;
  uint64_t lidx = (uint64_t)(l - h->data) >> POSH_PAGE_SHIFT;
  h->pages[lidx + 2].run_pages = 7;
  expect_corrupt(h, "large run body with a wrong distance");
  h->pages[lidx + 2].run_pages = 2;
  assert_int_equal(tu_check(h), 0);

  assert_int_equal(posh_free(h, keep), 0);
  assert_int_equal(posh_free(h, l), 0);
  ASSERT_HEAP_OK(h, 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

static void *alloc_in_new_thread(void *arg) {
  posh_heap_t *h = arg;
  /* A new thread owns no page: it goes to the page allocator. */
  void *p = posh_alloc(h, 16);
  if (p && posh_free(h, p) != 0)
    p = NULL; /* (a remote free: the block stays with the exited thread) */
  return p;
}

/* The header's page state (counters, search hint, abandoned-list heads) is
 * outside the checksum, and stray writes may put it out of range: the check
 * reports it, and the next page-level operation repairs it instead of
 * indexing with it (regression test: an abandoned-list head past the page
 * table crashed the next allocation that looked for a page to adopt). */
static void test_header_page_state_damage(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  void *keep = posh_alloc(h, 100), *large = posh_alloc(h, 300000);
  assert_non_null(keep);
  assert_non_null(large);
  posh__hdr_t *hdr = h->hdr;
  for (int what = 0; what < 5; what++) {
    switch (what) {
    case 0: hdr->pages_high = h->npages + 5; break;
    case 1: hdr->pages_free = h->npages + 1; break;
    case 2: hdr->page_hint = UINT64_MAX; break;
    case 3: hdr->pages_dirty = h->npages + 1; break;
    case 4:
      hdr->abandoned_head[0] = UINT32_MAX;
      posh_atomic_store_relaxed(&hdr->xabandoned_count[0], 1);
      break;
    }
    expect_corrupt(h, "header page state out of range");
    pthread_t th;
    void *got = NULL;
    assert_int_equal(pthread_create(&th, NULL, alloc_in_new_thread, h), 0);
    pthread_join(th, &got);
    if (!got)
      fail_msg("damage %d: allocation in a new thread failed", what);
    assert_int_equal(tu_check(h), 0);
  }
  assert_int_equal(posh_free(h, keep), 0);
  assert_int_equal(posh_free(h, large), 0);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

struct busy_worker {
  posh_heap_t *heap;
  int stop; /* atomic */
};

static void *alloc_free_until_stopped(void *arg) {
  struct busy_worker *b = arg;
  void *p[64];
  while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
    for (int i = 0; i < 64; i++)
      p[i] = posh_alloc(b->heap, 48);
    for (int i = 0; i < 64; i++)
      posh_free(b->heap, p[i]);
  }
  return NULL;
}

/* A check racing another thread that allocates and frees reports no damage
 * on a healthy heap (regression test: it compared that thread's block
 * count with its bitmap, which the owner updates without a lock, and
 * reported POSH_ECORRUPT within ~1000 checks). */
static void test_check_while_busy(void **state) {
  (void)state;
  posh_heap_t *h = mk(64 * MiB);
  assert_non_null(h);
  struct busy_worker b = {h, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, alloc_free_until_stopped, &b), 0);
  char report[512];
  int r = 0, i;
  for (i = 0; i < 20000 && r == 0; i++)
    r = posh_heap_check(h, report, sizeof report);
  __atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  if (r != 0)
    fail_msg("check %d on a busy heap: %s: %s", i, posh_err_name(r), report);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

/* ------------------------------------------------------------------------
 * Statistics.
 * ---------------------------------------------------------------------- */

/* Per-class statistics count exactly the live blocks, pages and free
 * blocks; the totals add up (bytes in use and free, small, large and free
 * pages); everything returns to zero use after the frees. */
static void test_stats(void **state) {
  (void)state;
  posh_heap_t *h = mk(256 * MiB);
  assert_non_null(h);
  posh_heap_stats_t s0 = stats(h);
  int n = posh__size_class_count();
  assert_int_equal(s0.capacity, posh_heap_capacity(h));
  assert_int_equal(s0.page_size, 65536);
  assert_int_equal(s0.pages_total, h->npages);
  assert_int_equal(s0.pages_free, h->npages);
  assert_int_equal(s0.bytes_in_use, 0);
  assert_int_equal(s0.bytes_metadata, h->hdr->data_off);
  assert_int_equal(s0.size_classes, (uint32_t)n);
  assert_int_equal(s0.processes, 1);
  assert_int_equal(s0.names, 0);
  assert_int_equal(s0.bytes_free + s0.bytes_metadata, s0.capacity);

  enum { PER = 160 };
  static void *p[POSH_SIZE_CLASS_MAX][PER];
  for (int c = 0; c < n; c++)
    for (int k = 0; k < (c % 5) * 40; k++) {
      p[c][k] = posh_alloc(h, posh__size_class_block(c));
      assert_non_null(p[c][k]);
    }
  void *l1 = posh_alloc(h, 100000), *l2 = posh_alloc(h, 300000);
  assert_non_null(l1);
  assert_non_null(l2);
  assert_int_equal(posh_name_bind(h, "a", posh_off(h, l1), 1), 0);
  assert_int_equal(posh_name_bind(h, "b", posh_off(h, l2), 2), 0);

  posh_heap_stats_t s = stats(h);
  uint64_t in_use = 0, free_bytes = 0, small_pages = 0;
  for (int c = 0; c < n; c++) {
    const posh_class_stats_t *cs = &s.classes[c];
    assert_int_equal(cs->block_size, posh__size_class_block(c));
    assert_int_equal(cs->blocks_in_use, (uint64_t)((c % 5) * 40));
    /* Page heads are colored: a page may hold up to 1/32 fewer blocks. */
    uint64_t cap = posh__classes[c].capacity;
    assert_in_range(cs->blocks_in_use + cs->blocks_free,
                    (uint64_t)cs->pages * (cap - cap / 32), (uint64_t)cs->pages * cap);
    assert_true(cs->pages == 0 || cs->blocks_in_use > 0);
    in_use += cs->blocks_in_use * cs->block_size;
    free_bytes += cs->blocks_free * cs->block_size;
    small_pages += cs->pages;
  }
  assert_int_equal(s.pages_small, small_pages);
  assert_int_equal(s.pages_large, 2 + 5);
  assert_int_equal(s.bytes_in_use, in_use + 7 * 65536);
  assert_int_equal(s.pages_small + s.pages_large + s.pages_free, s.pages_total);
  assert_int_equal(s.bytes_free, free_bytes + s.pages_free * 65536);
  assert_int_equal(s.names, 2);
  assert_int_equal(s.processes, 1);
  assert_int_equal(posh_heap_stats(NULL, &s), POSH_EINVAL);
  assert_int_equal(posh_heap_stats(h, NULL), POSH_EINVAL);
  assert_int_equal(posh_heap_check(NULL, NULL, 0), POSH_EINVAL);

  for (int c = 0; c < n; c++)
    for (int k = 0; k < (c % 5) * 40; k++)
      assert_int_equal(posh_free(h, p[c][k]), 0);
  assert_int_equal(posh_free(h, l1), 0);
  assert_int_equal(posh_free(h, l2), 0);
  s = stats(h);
  for (int c = 0; c < n; c++)
    assert_int_equal(s.classes[c].blocks_in_use, 0);
  assert_int_equal(s.bytes_in_use, 0);
  assert_int_equal(s.pages_large, 0);
  assert_int_equal(s.pages_small + s.pages_free, s.pages_total);
  assert_int_equal(tu_check(h), 0);
  assert_int_equal(posh_heap_detach(h), 0);
}

int main(int argc, char **argv) {
  tu_init(argc, argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_size_classes),
      cmocka_unit_test(test_contents_preserved),
      cmocka_unit_test(test_aligned_alloc),
      cmocka_unit_test(test_calloc_zeroes),
      cmocka_unit_test(test_realloc_contents),
      cmocka_unit_test(test_realloc_not_live),
      cmocka_unit_test(test_last_error_per_thread),
      cmocka_unit_test(test_usable_size),
      cmocka_unit_test(test_bad_frees),
      cmocka_unit_test(test_double_free),
      cmocka_unit_test(test_double_remote_free),
      cmocka_unit_test(test_remote_free_damaged_descriptor),
      cmocka_unit_test(test_double_free_owner_and_remote),
      cmocka_unit_test(test_stale_remote_bit_never_doubles),
      cmocka_unit_test(test_remote_free_during_adoption),
      cmocka_unit_test(test_exhaustion),
      cmocka_unit_test(test_exhausted_owner_gets_remote_frees_back),
      cmocka_unit_test(test_large_runs),
      cmocka_unit_test(test_block_state),
      cmocka_unit_test(test_cross_thread_free),
      cmocka_unit_test(test_cross_process_free),
      cmocka_unit_test(test_stress),
      cmocka_unit_test(test_adoption_after_kill),
      cmocka_unit_test(test_thread_exit_adoption),
      cmocka_unit_test(test_killed_holding_page_lock),
      cmocka_unit_test(test_killed_mid_collection),
      cmocka_unit_test(test_check_detects_page_damage),
      cmocka_unit_test(test_header_page_state_damage),
      cmocka_unit_test(test_check_while_busy),
      cmocka_unit_test(test_stats),
  };
  return cmocka_run_group_tests(tests, NULL, tu_group_teardown);
}
