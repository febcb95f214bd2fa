/* SPDX-License-Identifier: MIT */
/*
 * This file contains the multi-process allocator's block level: size
 * classes, the owner's fast paths (plain loads and stores on pages it owns),
 * remote frees (one atomic bit set on the page's remote-free bitmap),
 * collection of remote frees, adoption of pages whose owner died, large
 * blocks as page runs, and the allocator parts of statistics and the
 * consistency check.
 *
 * Crash story of a small page: its blocks' states are two bitmaps in the
 * page's head.  The owner's free bitmap is written by the owner only, with
 * plain stores, one word per allocation or free, so a kill -9 at any
 * instruction leaves it meaning exactly "these blocks are free" (at worst
 * the one block being handed out is lost: a leak, never a double
 * hand-out).  Remote frees are bits in a second bitmap, set with CAS; the
 * owner ORs them into its free bitmap and only then clears them, so an
 * interrupted collection leaves a block marked free twice, which is the
 * same as once.  No allocator state lives in the blocks themselves, so
 * neither allocation nor free touches a block's memory.
 */
#include "alloc_internal.h"

#include <string.h>

posh__class_info_t posh__classes[POSH_SIZE_CLASS_MAX];
int posh__nclasses;
/* Class of each size <= 1024 in steps of 16: class_of16[(size+15)>>4]. */
static uint8_t class_of16[1024 / 16 + 1];

/* Size classes: 16..128 in steps of 16, then four per doubling up to
 * POSH_SMALL_MAX (about 12% worst-case internal waste). */
__attribute__((constructor)) static void classes_init(void) {
  int n = 0;
  for (uint32_t s = 16; s <= 128; s += 16)
    posh__classes[n++].block_size = s;
  for (uint32_t base = 128; base < POSH_SMALL_MAX; base *= 2)
    for (uint32_t k = 1; k <= 4; k++)
      posh__classes[n++].block_size = base + k * (base / 4);
  posh__nclasses = n;
  for (int c = 0; c < n; c++) {
    posh__class_info_t *ci = &posh__classes[c];
    uint32_t bs = ci->block_size;
    uint32_t align = bs & (~bs + 1); /* largest power of two dividing bs */
    if (align > 4096)
      align = 4096;
    ci->align = align;
    uint32_t maxblocks = (POSH_PAGE_SIZE - sizeof(posh__page_head_t)) / bs;
    ci->bitmap_words = (maxblocks + 63) / 64;
    /* Remote bitmap and the owner's free bitmap, each on its own lines. */
    ci->bitmap_stride = (uint32_t)posh__align_up(ci->bitmap_words * 8u, POSH_CACHELINE) / 8u;
    uint32_t head = (uint32_t)sizeof(posh__page_head_t) + 2u * ci->bitmap_stride * 8u;
    ci->first_block = (uint32_t)posh__align_up(head, align < 16 ? 16 : align);
    ci->capacity = (POSH_PAGE_SIZE - ci->first_block) / bs;
    ci->reciprocal = (uint32_t)(((1ull << 32) + bs - 1) / bs);
  }
  for (uint32_t i = 0; i <= 1024 / 16; i++) {
    uint32_t size = i == 0 ? 1 : i * 16;
    int c = 0;
    while (posh__classes[c].block_size < size)
      c++;
    class_of16[i] = (uint8_t)c;
  }
}

int posh__size_class_count(void) { return posh__nclasses; }
uint32_t posh__size_class_block(int cls) { return posh__classes[cls].block_size; }

static inline int size_class(size_t size) {
  if (posh_likely(size <= 1024))
    return class_of16[(size + 15) >> 4];
  int c = class_of16[1024 / 16];
  while (posh__classes[c].block_size < size)
    c++;
  return c;
}

static inline unsigned char *page_of(posh_heap_t *heap, const posh__page_t *pg) {
  return posh__page_addr(heap, posh__page_index(heap, pg));
}

/* Heap offset of block idx of pg. */
static inline uint64_t block_off(posh_heap_t *heap, const posh__page_t *pg,
                                 uint32_t idx) {
  return (uint64_t)(page_of(heap, pg) - heap->view.base) + pg->first_block +
         (uint64_t)idx * pg->block_size;
}
/* Index of the block at byte `in_page` of its page (exact for our sizes). */
static inline uint32_t block_index(const posh__page_t *pg, uint32_t in_page) {
  return (uint32_t)(((uint64_t)(in_page - pg->first_block) * pg->reciprocal) >> 32);
}

/* The owner's free bitmap: 1 = free.  Owner-only, plain loads/stores. */
#define free_bitmap posh__page_free_bitmap

/* Offset of a page's head: page index modulo POSH_PAGE_COLORS cache
 * lines, as long as that costs the class at most 1/32 of its blocks. */
static uint32_t posh__page_color(posh_heap_t *heap, const posh__page_t *pg,
                                 int cls) {
  const posh__class_info_t *ci = &posh__classes[cls];
  uint32_t color = (uint32_t)(posh__page_index(heap, pg) % POSH_PAGE_COLORS) * POSH_CACHELINE;
  uint32_t head = (uint32_t)sizeof(posh__page_head_t) + 2u * ci->bitmap_stride * 8u;
  uint32_t first = (uint32_t)posh__align_up(color + head, ci->align < 16 ? 16 : ci->align);
  if ((POSH_PAGE_SIZE - first) / ci->block_size < ci->capacity - ci->capacity / 32)
    return 0;
  return color;
}

void posh__small_page_format(posh_heap_t *heap, posh__page_t *pg, int cls,
                             uint32_t token) {
  const posh__class_info_t *ci = &posh__classes[cls];
  unsigned char *page = page_of(heap, pg);
  /* The page may have been used before (not punched yet): clear the head
   * and bitmaps, then mark every block free.  Block contents never
   * matter: the allocator keeps nothing in them. */
  uint32_t color = posh__page_color(heap, pg, cls);
  uint32_t head = (uint32_t)sizeof(posh__page_head_t) + 2u * ci->bitmap_stride * 8u;
  uint32_t first = (uint32_t)posh__align_up(color + head, ci->align < 16 ? 16 : ci->align);
  memset(page, 0, first);
  pg->size_class = (uint32_t)cls;
  pg->head_off = (uint16_t)color;
  pg->free_bitmap_off = (uint16_t)(color + sizeof(posh__page_head_t) + ci->bitmap_stride * 8u);
  pg->bitmap_words = (uint16_t)ci->bitmap_words;
  uint32_t capacity = (POSH_PAGE_SIZE - first) / ci->block_size;
  uint64_t *fb = free_bitmap(page, pg);
  for (uint32_t i = 0; i < capacity / 64; i++)
    fb[i] = ~0ull;
  if (capacity % 64)
    fb[capacity / 64] = (1ull << (capacity % 64)) - 1;
  pg->block_size = ci->block_size;
  pg->capacity = capacity;
  pg->first_block = first;
  pg->reciprocal = ci->reciprocal;
  pg->bump = 0;
  pg->used = 0;
  pg->cursor = 0;
  pg->owner_next = 0;
  posh_atomic32_store_relaxed(&pg->xowner, token);
}

/* Mask of the bits of word w that name blocks below `limit`. */
static inline uint64_t word_mask_below(uint32_t w, uint32_t limit) {
  if (limit >= (w + 1) * 64)
    return ~0ull;
  if (limit <= w * 64)
    return 0;
  return (1ull << (limit - w * 64)) - 1;
}

/* Move remote frees into the owner's free bitmap.  `force` scans even if
 * no remote free was flagged (adoption).  Returns the blocks gained. */
static uint32_t collect_remote(posh_heap_t *heap, posh__page_t *pg, int force) {
  unsigned char *page = page_of(heap, pg);
  posh__page_head_t *ph = posh__page_head(page, pg);
  if (!force && !posh_atomic_load_relaxed(&ph->xremote_pending))
    return 0;
  /* Clear the flag before scanning, with a full fence: a remote free whose
   * bit we miss sets the flag again after our clear. */
  posh_atomic_store_seqcst(&ph->xremote_pending, 0);
  uint64_t *rb = posh__page_remote_bitmap(page, pg), *fb = free_bitmap(page, pg);
  uint32_t words = posh__classes[pg->size_class].bitmap_words, got = 0;
  for (uint32_t w = 0; w < words; w++) {
    uint64_t r = posh_atomic_load_acquire((posh_atomic_t *)&rb[w]);
    if (!r)
      continue;
    /* Bits of blocks never handed out are bogus frees: drop them.  Bits
     * already free locally (an interrupted collection, or an undetected
     * remote double free) change nothing. */
    uint64_t fresh = r & word_mask_below(w, pg->bump) & ~fb[w];
    fb[w] |= fresh;
    got += (uint32_t)__builtin_popcountll(fresh);
    /* Only now forget the bits: until here a crash leaves them set. */
    posh_atomic_andnot_full((posh_atomic_t *)&rb[w], r);
  }
  pg->used -= got;
  return got;
}

void posh__small_page_rebuild(posh_heap_t *heap, posh__page_t *pg) {
  unsigned char *page = page_of(heap, pg);
  uint64_t *fb = free_bitmap(page, pg);
  if (pg->bump > pg->capacity)
    pg->bump = pg->capacity;
  collect_remote(heap, pg, 1);
  /* Blocks at or above bump were never handed out: free.  Recount. */
  uint32_t nfree = 0;
  for (uint32_t w = 0; w < posh__classes[pg->size_class].bitmap_words; w++) {
    uint64_t v = (fb[w] | ~word_mask_below(w, pg->bump)) & word_mask_below(w, pg->capacity);
    fb[w] = v;
    nfree += (uint32_t)__builtin_popcountll(v);
  }
  pg->used = pg->capacity - nfree;
  if (pg->cursor >= posh__classes[pg->size_class].bitmap_words)
    pg->cursor = 0;
}

/* ------------------------------------------------------------------------
 * Small allocation.
 * ---------------------------------------------------------------------- */
static inline void *pop_block(posh_heap_t *heap, posh__page_t *pg) {
  if (posh_unlikely(pg->used >= pg->capacity))
    return NULL; /* no block free locally (remote frees not collected) */
  unsigned char *page = page_of(heap, pg);
  uint64_t *fb = free_bitmap(page, pg);
  uint32_t w = pg->cursor, words = pg->bitmap_words;
  uint64_t v;
  while ((v = fb[w]) == 0) /* used < capacity: some word has a bit */
    w = w + 1 < words ? w + 1 : 0;
  uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(v);
  /* A remote bit on a block that is free here came from a bogus or double
   * remote free (of a block never handed out, or already free): drop it
   * before the block goes live, or the next collection would free the
   * live block and hand it out twice.  A legitimate remote free sets the
   * bit only while the block is live (its free bit clear), so it is never
   * dropped.  Relaxed: a bit set concurrently with this load belongs to a
   * free racing the hand-out, which is a free of the new live block. */
  uint64_t *rbw = &posh__page_remote_bitmap(page, pg)[w];
  if (posh_unlikely(posh_atomic_load_relaxed((posh_atomic_t *)rbw) & (v & -v)))
    posh_atomic_andnot_full((posh_atomic_t *)rbw, v & -v);
  /* bump before the bit: a crash in between leaves bump too high, which
   * only weakens a check; the other order would reject a valid free. */
  if (idx >= pg->bump) {
    pg->bump = idx + 1;
    posh_compiler_barrier();
  }
  fb[w] = v & (v - 1);
  posh_compiler_barrier();
  pg->cursor = w;
  pg->used++;
  return page + pg->first_block + (size_t)idx * pg->block_size;
}

static inline int page_has_room(const posh__page_t *pg) {
  return pg->used < pg->capacity;
}

__attribute__((noinline)) static void release_small_page(posh_heap_t *heap, posh__tld_t *tld,
                               posh__page_t *pg);
static void reclaim_own_pages(posh_heap_t *heap, posh__tld_t *tld);

__attribute__((noinline)) static void *alloc_small_slow(posh_heap_t *heap,
                                                        posh__tld_t *tld, int cls) {
  posh__class_cache_t *cc = &tld->classes[cls];
  posh__page_t *pg = cc->page;
  /* 1. Remote frees into the current page. */
  if (pg && collect_remote(heap, pg, 0))
    return pop_block(heap, pg);
  /* 2. The page of ours with the most room (after collecting its remote
   * frees): taking the first page with any room would come back here after
   * one or two allocations when frees are scattered over many pages. */
  posh__page_t *best = NULL;
  for (int collect = 0; collect < 2 && !best; collect++) {
    /* First pass reads only the owner lines; remote frees are collected
     * (a look at each page's flag line) only when no page has room. */
    for (uint32_t p = cc->head; p; p = heap->pages[p - 1].owner_next) {
      posh__page_t *cand = &heap->pages[p - 1];
      if (cand == pg)
        continue;
      if (collect)
        collect_remote(heap, cand, 0);
      if (page_has_room(cand) && (!best || cand->used < best->used)) {
        best = cand;
        if (cand->used <= cand->capacity / 2)
          break; /* plenty of room: stop looking */
      }
    }
  }
  if (best) {
    cc->page = best;
    return pop_block(heap, best);
  }
  /* 3. A page abandoned by a dead or exited owner; 4. a fresh page. */
  for (int attempt = 0; attempt < 2; attempt++) {
    posh__page_t *np;
    while ((np = posh__pages_adopt(heap, tld->token, cls)) != NULL) {
      posh__small_page_rebuild(heap, np);
      np->owner_next = cc->head;
      cc->head = (uint32_t)posh__page_index(heap, np) + 1;
      if (page_has_room(np)) {
        cc->page = np;
        return pop_block(heap, np);
      }
    }
    int err = 0;
    np = posh__pages_alloc_small(heap, tld->token, cls, &err);
    if (np) {
      np->owner_next = cc->head;
      cc->head = (uint32_t)posh__page_index(heap, np) + 1;
      cc->page = np;
      return pop_block(heap, np);
    }
    if (err != POSH_ENOMEM || attempt == 1) {
      posh__set_last_error(err);
      return NULL;
    }
    /* Exhausted: our own pages may hold remote frees, and pages of dead
     * processes may be waiting for adoption. */
    reclaim_own_pages(heap, tld);
    if (cc->page && page_has_room(cc->page))
      return pop_block(heap, cc->page);
    posh_heap_reap(heap, NULL);
  }
  posh__set_last_error(POSH_ENOMEM);
  return NULL;
}

/* Before reporting exhaustion: collect remote frees on every page this
 * thread owns and give back the pages that are then empty. */
static void reclaim_own_pages(posh_heap_t *heap, posh__tld_t *tld) {
  for (int c = 0; c < posh__nclasses; c++) {
    uint32_t p = tld->classes[c].head;
    while (p) {
      posh__page_t *pg = &heap->pages[p - 1];
      p = pg->owner_next;
      collect_remote(heap, pg, 0);
      if (pg->used == 0)
        release_small_page(heap, tld, pg);
    }
  }
}

/* Unlink pg from the owner's class list and give it back (used == 0). */
__attribute__((noinline)) static void release_small_page(posh_heap_t *heap, posh__tld_t *tld,
                               posh__page_t *pg) {
  posh__class_cache_t *cc = &tld->classes[pg->size_class];
  uint32_t me = (uint32_t)posh__page_index(heap, pg) + 1;
  for (uint32_t *link = &cc->head; *link; link = &heap->pages[*link - 1].owner_next)
    if (*link == me) {
      *link = pg->owner_next;
      break;
    }
  if (cc->page == pg)
    cc->page = NULL;
  posh__pages_free_small(heap, tld->token, pg);
}

/* ------------------------------------------------------------------------
 * Large blocks.
 * ---------------------------------------------------------------------- */
__attribute__((noinline)) static void *alloc_large(posh_heap_t *heap, size_t size) {
  int err = 0;
  uint32_t token = posh__self_token(heap, &err);
  if (!token) {
    posh__set_last_error(err);
    return NULL;
  }
  uint64_t n = ((uint64_t)size + POSH_PAGE_SIZE - 1) >> POSH_PAGE_SHIFT;
  if (n > heap->npages) {
    posh__set_last_error(POSH_ENOMEM);
    return NULL;
  }
  int64_t idx = posh__pages_alloc_run(heap, token, n, &err);
  if (idx < 0 && err == POSH_ENOMEM) {
    posh__tld_t *tld = posh__tld_get(heap, &err);
    if (tld)
      reclaim_own_pages(heap, tld);
    posh_heap_reap(heap, NULL);
    idx = posh__pages_alloc_run(heap, token, n, &err);
  }
  if (idx < 0) {
    posh__set_last_error(err);
    return NULL;
  }
  heap->pages[idx].large_size = size;
  return posh__page_addr(heap, (uint64_t)idx);
}

/* ------------------------------------------------------------------------
 * Public entry points.
 * ---------------------------------------------------------------------- */
/* A small block for the calling thread (tld): its class's current page,
 * else alloc_small_slow (a tail call: this path keeps no stack frame). */
static inline void *alloc_small(posh_heap_t *heap, posh__tld_t *tld,
                                size_t size) {
  int cls = size_class(size);
  posh__page_t *pg = tld->classes[cls].page;
  if (posh_likely(pg != NULL)) {
    void *p = pop_block(heap, pg);
    if (posh_likely(p != NULL))
      return p;
  }
  return alloc_small_slow(heap, tld, cls);
}

/* posh_alloc of a small block when the thread's cached state is not this
 * heap's (first use by the thread, another heap used last, a fork). */
__attribute__((noinline)) static void *alloc_small_tld_slow(posh_heap_t *heap,
                                                            size_t size) {
  int err;
  posh__tld_t *tld = posh__tld_get_slow(heap, &err);
  if (posh_unlikely(!tld)) {
    posh__set_last_error(err);
    return NULL;
  }
  return alloc_small(heap, tld, size);
}

POSH_EXTERN void *posh_alloc(posh_heap_t *heap, size_t size) {
  if (posh_unlikely(!heap)) {
    posh__set_last_error(POSH_EINVAL);
    return NULL;
  }
  if (posh_likely(size <= POSH_SMALL_MAX)) {
    /* posh__tld_get's fast test, with its slow side out of line (a tail
     * call), so the common path needs no stack frame. */
    posh__tld_t *tld = posh__tld_cache;
    if (posh_unlikely(tld == NULL || tld->heap != heap ||
                      tld->heap_id != heap->id))
      return alloc_small_tld_slow(heap, size);
    return alloc_small(heap, tld, size);
  }
  if (heap->detached) {
    posh__set_last_error(POSH_EDETACHED);
    return NULL;
  }
  return alloc_large(heap, size);
}

/* Locate ptr: returns its page and block index, or an error code. */
static int locate(posh_heap_t *heap, const void *ptr, posh__page_t **pg_out,
                  uint32_t *idx_out) {
  const unsigned char *p = ptr;
  if (p < heap->data || p >= heap->data + (heap->npages << POSH_PAGE_SHIFT))
    return POSH_EFAULT;
  uint64_t rel = (uint64_t)(p - heap->data);
  posh__page_t *pg = &heap->pages[rel >> POSH_PAGE_SHIFT];
  uint32_t in_page = (uint32_t)(rel & (POSH_PAGE_SIZE - 1));
  *pg_out = pg;
  uint32_t kind = pg->kind;
  if (kind == POSH_PAGE_SMALL) {
    if (in_page < pg->first_block || pg->block_size == 0)
      return POSH_EFAULT;
    uint32_t idx = block_index(pg, in_page);
    if (idx >= pg->capacity ||
        pg->first_block + idx * pg->block_size != in_page)
      return POSH_EFAULT;
    /* A damaged descriptor (the descriptors are shared memory) must not
     * send a free's bitmap and flag writes, or the owner's class look-ups,
     * outside the page: the head, both bitmaps' words for idx, and the
     * class index are bounded here (posh_heap_check checks the rest). */
    if (posh_unlikely(pg->size_class >= (uint32_t)posh__nclasses ||
                      pg->first_block > POSH_PAGE_SIZE ||
                      (uint64_t)pg->head_off + sizeof(posh__page_head_t) +
                              (idx / 64 + 1) * 8u > pg->free_bitmap_off ||
                      (uint64_t)pg->free_bitmap_off + (idx / 64 + 1) * 8u >
                          pg->first_block))
      return POSH_ECORRUPT;
    *idx_out = idx;
    return POSH_PAGE_SMALL;
  }
  if (kind == POSH_PAGE_LARGE_HEAD)
    return in_page == 0 ? POSH_PAGE_LARGE_HEAD : POSH_EFAULT;
  if (kind == POSH_PAGE_FREE)
    return in_page == 0 ? POSH_EDOUBLEFREE : POSH_EFAULT;
  return POSH_EFAULT;
}

/* Everything but the owner's small-block free: validation with clear
 * errors, remote frees, large runs. */
__attribute__((noinline)) static int free_slow(posh_heap_t *heap, void *ptr) {
  if (heap->detached)
    return POSH_EDETACHED;
  posh__page_t *pg;
  uint32_t idx = 0;
  int kind = locate(heap, ptr, &pg, &idx);
  if (kind == POSH_PAGE_SMALL) {
    int err;
    posh__tld_t *tld = posh__tld_get(heap, &err);
    if (posh_unlikely(!tld))
      return err;
    unsigned char *page = page_of(heap, pg);
    uint64_t bit = 1ull << (idx % 64);
    if (posh_atomic32_load_relaxed(&pg->xowner) == tld->token) {
      if (posh_unlikely(idx >= pg->bump))
        return POSH_EFAULT; /* never handed out */
      uint64_t *fw = &free_bitmap(page, pg)[idx / 64];
      if (*fw & bit)
        return POSH_EDOUBLEFREE;
#if POSH_DEBUG >= 2
      /* Freed by another thread already (not yet collected)? */
      if (posh_atomic_load_relaxed((posh_atomic_t *)&posh__page_remote_bitmap(page, pg)[idx / 64]) & bit)
        return POSH_EDOUBLEFREE;
#endif
      *fw |= bit;
      posh_compiler_barrier();
      if (--pg->used == 0 && tld->classes[pg->size_class].page != pg)
        release_small_page(heap, tld, pg);
      return 0;
    }
#if POSH_DEBUG >= 2
    /* A racy read of the owner's bitmap: a block we are freeing was handed
     * out before its pointer reached us, so a set bit means it is free. */
    if (free_bitmap(page, pg)[idx / 64] & bit)
      return POSH_EDOUBLEFREE;
#endif
    /* Another thread's or process's page: one atomic bit set on the bitmap
     * word (posh_atomic_bit_test_and_set_full).  We do not read `bump` (the
     * owner's line): a bit set for a block never handed out is dropped by
     * the owner when it collects. */
    uint64_t *bits = posh__page_remote_bitmap(page, pg);
    if (posh_atomic_bit_test_and_set_full((posh_atomic_t *)&bits[idx / 64],
                                          idx % 64))
      return POSH_EDOUBLEFREE;
    /* After the bit (the bit set is a full barrier): the owner clears the
     * flag before scanning, so it either sees our bit or sees the flag
     * again. */
    posh_atomic_t *pending = &posh__page_head(page, pg)->xremote_pending;
    /* Store only if clear: while the flag is up the line stays shared
     * instead of bouncing to us on every free.  Seeing 1 here (after our
     * full-barrier bit set) means the owner's clear comes later, and its
     * scan after that clear sees our bit. */
    if (!posh_atomic_load_relaxed(pending))
      posh_atomic_store_relaxed(pending, 1);
    return 0;
  }
  if (kind == POSH_PAGE_LARGE_HEAD) {
    int err = 0;
    uint32_t token = posh__self_token(heap, &err);
    if (!token)
      return err;
    return posh__pages_free_run(heap, token, posh__page_index(heap, pg));
  }
  return kind;
}

POSH_EXTERN int posh_free(posh_heap_t *heap, void *ptr) {
  if (posh_unlikely(!ptr))
    return 0;
  if (posh_unlikely(!heap))
    return POSH_EINVAL;
  /* Fast path: a small block of a page this thread owns.  Plain loads and
   * stores only; every check that fails falls to free_slow, which repeats
   * it with a precise error. */
  posh__tld_t *tld = posh__tld_cache;
  uint64_t rel = (uint64_t)((unsigned char *)ptr - heap->data);
  if (posh_likely(tld != NULL && tld->heap == heap && tld->heap_id == heap->id &&
                  rel < (heap->npages << POSH_PAGE_SHIFT))) {
    posh__page_t *pg = &heap->pages[rel >> POSH_PAGE_SHIFT];
    uint32_t in_page = (uint32_t)(rel & (POSH_PAGE_SIZE - 1));
    if (posh_likely(posh_atomic32_load_relaxed(&pg->xowner) == tld->token &&
                    pg->kind == POSH_PAGE_SMALL)) {
      uint32_t idx = block_index(pg, in_page);
      uint64_t *fw = &free_bitmap((unsigned char *)ptr - in_page, pg)[idx / 64];
      uint64_t bit = 1ull << (idx % 64);
      if (posh_likely(idx < pg->bump &&
                      pg->first_block + idx * pg->block_size == in_page &&
                      !(*fw & bit) && POSH_DEBUG < 2)) {
        *fw |= bit; /* one plain store: the block is free */
        posh_compiler_barrier();
        if (posh_unlikely(--pg->used == 0) &&
            tld->classes[pg->size_class].page != pg)
          release_small_page(heap, tld, pg);
        return 0;
      }
    }
  }
  return free_slow(heap, ptr);
}

POSH_EXTERN size_t posh_usable_size(posh_heap_t *heap, const void *ptr) {
  if (!heap || !ptr || heap->detached)
    return 0;
  posh__page_t *pg;
  uint32_t idx;
  int kind = locate(heap, ptr, &pg, &idx);
  if (kind == POSH_PAGE_SMALL)
    return idx < pg->bump ? pg->block_size : 0;
  if (kind == POSH_PAGE_LARGE_HEAD)
    return (size_t)pg->run_pages << POSH_PAGE_SHIFT;
  return 0;
}

POSH_EXTERN void *posh_calloc(posh_heap_t *heap, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) {
    posh__set_last_error(POSH_EINVAL);
    return NULL;
  }
  void *p = posh_alloc(heap, total);
  if (p)
    memset(p, 0, total);
  return p;
}

POSH_EXTERN void *posh_realloc(posh_heap_t *heap, void *ptr, size_t size) {
  if (!ptr)
    return posh_alloc(heap, size);
  if (!heap) {
    posh__set_last_error(POSH_EINVAL);
    return NULL;
  }
  /* Only a live block may be resized: taking a free one for live would
   * hand it out twice.  (The check walks the page's free list: realloc is
   * not a fast path.) */
  size_t usable = posh_block_state(heap, ptr) == POSH_BLOCK_ALLOCATED
                      ? posh_usable_size(heap, ptr)
                      : 0;
  if (usable == 0) {
    posh__set_last_error(POSH_EFAULT);
    return NULL;
  }
  if (size == 0) {
    posh_free(heap, ptr);
    posh__set_last_error(0);
    return NULL;
  }
  /* Stay in place when the block fits and is not more than twice too big. */
  if (size <= usable && (size > usable / 2 || usable <= 16)) {
    if (usable > POSH_SMALL_MAX) {
      posh__page_t *pg;
      uint32_t idx;
      locate(heap, ptr, &pg, &idx);
      pg->large_size = size;
    }
    return ptr;
  }
  void *np = posh_alloc(heap, size);
  if (!np)
    return NULL;
  memcpy(np, ptr, size < usable ? size : usable);
  posh_free(heap, ptr);
  return np;
}

POSH_EXTERN void *posh_aligned_alloc(posh_heap_t *heap, size_t alignment,
                                     size_t size) {
  if (!heap || alignment == 0 || (alignment & (alignment - 1)) ||
      alignment > POSH_PAGE_SIZE) {
    posh__set_last_error(POSH_EINVAL);
    return NULL;
  }
  if (alignment <= 16)
    return posh_alloc(heap, size);
  if (size <= POSH_SMALL_MAX) {
    /* A class whose blocks are all aligned: pages are 64 KiB aligned in
     * every mapping, and first_block/block_size keep the alignment. */
    for (int c = size_class(size); c < posh__nclasses; c++) {
      const posh__class_info_t *ci = &posh__classes[c];
      if (ci->align >= alignment && ci->block_size % alignment == 0) {
        if (ci->block_size > 2 * size + alignment)
          break; /* a page run wastes less than this class would */
        return posh_alloc(heap, ci->block_size);
      }
    }
  }
  if (heap->detached) {
    posh__set_last_error(POSH_EDETACHED);
    return NULL;
  }
  return alloc_large(heap, size < POSH_SMALL_MAX + 1 ? POSH_SMALL_MAX + 1 : size);
}

POSH_EXTERN posh_off_t posh_alloc_off(posh_heap_t *heap, size_t size) {
  void *p = posh_alloc(heap, size);
  return p ? posh_off(heap, p) : POSH_OFF_NULL;
}

POSH_EXTERN int posh_free_off(posh_heap_t *heap, posh_off_t off) {
  if (!heap)
    return POSH_EINVAL;
  if (off.v == 0)
    return 0;
  if (off.v >= heap->view.capacity)
    return POSH_EFAULT;
  return posh_free(heap, posh_ptr(heap, off));
}

POSH_EXTERN int posh_block_state(posh_heap_t *heap, const void *ptr) {
  if (!heap || !ptr || heap->detached)
    return POSH_BLOCK_INVALID;
  posh__page_t *pg;
  uint32_t idx = 0;
  int kind = locate(heap, ptr, &pg, &idx);
  if (kind == POSH_PAGE_LARGE_HEAD)
    return POSH_BLOCK_ALLOCATED;
  if (kind == POSH_EDOUBLEFREE)
    return POSH_BLOCK_FREE;
  if (kind != POSH_PAGE_SMALL)
    return POSH_BLOCK_INVALID;
  if (idx >= pg->bump)
    return POSH_BLOCK_FREE;
  unsigned char *page = page_of(heap, pg);
  uint64_t *rb = posh__page_remote_bitmap(page, pg);
  if ((posh_atomic_load_acquire((posh_atomic_t *)&rb[idx / 64]) >> (idx % 64)) & 1u)
    return POSH_BLOCK_FREE;
  if ((free_bitmap(page, pg)[idx / 64] >> (idx % 64)) & 1u)
    return POSH_BLOCK_FREE;
  return POSH_BLOCK_ALLOCATED;
}

/* ------------------------------------------------------------------------
 * Thread exit, statistics, check.
 * ---------------------------------------------------------------------- */
void posh__alloc_thread_exit(posh__tld_t *tld) {
  posh_heap_t *heap = tld->heap;
  for (int c = 0; c < posh__nclasses; c++)
    tld->classes[c].page = NULL; /* so reclaiming releases every empty page */
  reclaim_own_pages(heap, tld);
  for (int c = 0; c < posh__nclasses; c++)
    tld->classes[c].head = 0;
  /* Pages still holding live blocks wait for an adopter. */
  posh__pages_abandon_owner(heap, tld->token, tld->token);
}

void posh__alloc_stats(posh_heap_t *heap, posh_heap_stats_t *st) {
  posh__hdr_t *h = heap->hdr;
  uint64_t high = h->pages_high < heap->npages ? h->pages_high : heap->npages;
  st->size_classes = (uint32_t)posh__nclasses;
  for (int c = 0; c < posh__nclasses; c++)
    st->classes[c].block_size = posh__classes[c].block_size;
  for (uint64_t i = 0; i < high; i++) {
    posh__page_t *pg = &heap->pages[i];
    uint32_t kind = pg->kind;
    if (kind == POSH_PAGE_SMALL && pg->size_class < (uint32_t)posh__nclasses) {
      posh_class_stats_t *cs = &st->classes[pg->size_class];
      unsigned char *page = page_of(heap, pg);
      const posh__class_info_t *ci = &posh__classes[pg->size_class];
      uint64_t *rb = posh__page_remote_bitmap(page, pg), *fb = free_bitmap(page, pg);
      uint32_t nfree = 0;
      for (uint32_t w = 0; w < ci->bitmap_words; w++)
        nfree += (uint32_t)__builtin_popcountll(
            (fb[w] | posh_atomic_load_relaxed((posh_atomic_t *)&rb[w])) &
            word_mask_below(w, pg->capacity));
      uint64_t live = pg->capacity - nfree;
      cs->pages++;
      cs->blocks_in_use += live;
      cs->blocks_free += pg->capacity - live;
      st->pages_small++;
      st->bytes_in_use += live * pg->block_size;
      st->bytes_free += (pg->capacity - live) * pg->block_size;
    } else if (kind == POSH_PAGE_LARGE_HEAD) {
      st->pages_large += pg->run_pages;
      st->bytes_in_use += (uint64_t)pg->run_pages << POSH_PAGE_SHIFT;
    }
  }
  st->pages_free = h->pages_free;
  st->bytes_free += h->pages_free << POSH_PAGE_SHIFT;
}

int posh__small_page_check(posh_heap_t *heap, posh__page_t *pg, int count_stable,
                           char *report, size_t len, size_t *used) {
  uint64_t idx_pg = posh__page_index(heap, pg);
  if (pg->size_class >= (uint32_t)posh__nclasses) {
    posh__report(report, len, used, "page %llu: size class %u\n",
                 (unsigned long long)idx_pg, pg->size_class);
    return POSH_ECORRUPT;
  }
  const posh__class_info_t *ci = &posh__classes[pg->size_class];
  if (pg->block_size != ci->block_size ||
      pg->head_off != posh__page_color(heap, pg, (int)pg->size_class) ||
      pg->first_block != posh__align_up(pg->head_off + sizeof(posh__page_head_t) +
                                            2u * ci->bitmap_stride * 8u,
                                        ci->align < 16 ? 16 : ci->align) ||
      pg->capacity != (POSH_PAGE_SIZE - pg->first_block) / ci->block_size ||
      pg->reciprocal != ci->reciprocal || pg->bitmap_words != ci->bitmap_words ||
      pg->free_bitmap_off != pg->head_off + sizeof(posh__page_head_t) + ci->bitmap_stride * 8u ||
      pg->bump > pg->capacity) {
    posh__report(report, len, used, "page %llu: geometry does not match class %u\n",
                 (unsigned long long)idx_pg, pg->size_class);
    return POSH_ECORRUPT;
  }
  unsigned char *page = page_of(heap, pg);
  uint64_t *fb = free_bitmap(page, pg);
  uint32_t nfree = 0;
  for (uint32_t w = 0; w < ci->bitmap_words; w++) {
    if (fb[w] & ~word_mask_below(w, pg->capacity)) {
      posh__report(report, len, used,
                   "page %llu: free bitmap marks blocks beyond capacity\n",
                   (unsigned long long)idx_pg);
      return POSH_ECORRUPT;
    }
    nfree += (uint32_t)__builtin_popcountll(fb[w]);
  }
  if (pg->cursor >= ci->bitmap_words) {
    posh__report(report, len, used, "page %llu: cursor %u out of range\n",
                 (unsigned long long)idx_pg, pg->cursor);
    return POSH_ECORRUPT;
  }
  /* Remote bits may overlap free ones (an interrupted collection) or lie
   * beyond bump (a bogus remote free): both are dropped at collection.
   * The owner's count may be one off after its owner was killed mid-way
   * (adoption recomputes it), and it moves under us while another thread
   * owns the page: it is compared only when count_stable (our own page). */
  uint32_t expect = pg->capacity - nfree;
  if (count_stable && pg->used != expect) {
    posh__report(report, len, used, "page %llu: used %u but %u blocks are live\n",
                 (unsigned long long)idx_pg, pg->used, expect);
    return POSH_ECORRUPT;
  }
  return 0;
}
