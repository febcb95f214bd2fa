/* SPDX-License-Identifier: MIT */
/*
 * This file contains the page-level allocator: 64 KiB pages handed out one
 * at a time (for size classes) or as runs (for large blocks), the lists of
 * abandoned small pages waiting for adoption, and the return of freed
 * memory to the OS.  All of it is serialised by the heap's page_lock.
 *
 * Crash story: the page descriptors are the truth.  The free bitmap, the
 * free count, the abandoned lists and the dirty count are derived, and
 * posh__pages_repair rebuilds them when page_lock is taken from a dead
 * holder.  Descriptor updates are ordered so that any prefix of them is
 * repairable: a run is written body-first and head-last, and freed
 * head-first; a page the repair cannot account for becomes free.
 */
#include "alloc_internal.h"

#include <string.h>

/* Returning memory: free runs of at least punch_run_pages() pages are
 * punched at once; smaller ones are marked dirty and punched together once
 * purge_pages() are dirty.  Both are 256 MiB, or less in small heaps (an
 * eighth and a quarter of the heap).  Not lower: queues and the Python
 * codec free and re-allocate message blocks of MiBs to 100s of MiB all the
 * time, and a punched page faults back in on its next use (~40 us per
 * 4 KiB page on a VM: a 1 MiB message cost 10.8 ms of faults against
 * 0.13 ms of copying, a 100 MB numpy array 0.3 s).  So a heap keeps up to
 * 256 MiB of freed memory committed for reuse. */
#define RETAIN_PAGES 4096u /* 256 MiB */
static inline uint64_t punch_run_pages(const posh_heap_t *heap) {
  uint64_t n = heap->npages / 8;
  return n < RETAIN_PAGES ? (n ? n : 1) : RETAIN_PAGES;
}
static inline uint64_t purge_pages(const posh_heap_t *heap) {
  uint64_t n = heap->npages / 4;
  return n < RETAIN_PAGES ? (n ? n : 1) : RETAIN_PAGES;
}

static inline int freemap_test(const uint64_t *map, uint64_t i) {
  return (int)((map[i >> 6] >> (i & 63)) & 1u);
}
static inline void freemap_set(uint64_t *map, uint64_t i) {
  map[i >> 6] |= 1ull << (i & 63);
}
static inline void freemap_clear(uint64_t *map, uint64_t i) {
  map[i >> 6] &= ~(1ull << (i & 63));
}

void posh__pages_init(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  for (uint64_t i = 0; i < heap->npages; i++)
    freemap_set(heap->freemap, i);
  h->pages_free = heap->npages;
  h->page_hint = 0;
  h->pages_dirty = 0;
  h->pages_high = 0;
}

void posh__pages_note_stale_owners(posh_heap_t *heap, unsigned count) {
  if (count)
    posh_atomic_fetch_add_full(&heap->hdr->xstale_owners, count);
}

/* Push a small page onto its class's abandoned list.  page_lock held. */
static void abandon_page(posh_heap_t *heap, posh__page_t *pg) {
  posh__hdr_t *h = heap->hdr;
  uint32_t cls = pg->size_class;
  if (cls >= (uint32_t)POSH_SIZE_CLASS_MAX)
    return;
  /* Link first, then publish ABANDONED: a crash in between leaves the
   * page with its old (dead) owner, which the next sweep handles; repair
   * rebuilds the lists from the owner fields in any case. */
  pg->owner_next = h->abandoned_head[cls];
  posh_atomic32_store_release(&pg->xowner, POSH_OWNER_ABANDONED);
  h->abandoned_head[cls] = (uint32_t)(posh__page_index(heap, pg) + 1);
  posh_atomic_fetch_add_full(&h->xabandoned_count[cls], 1);
}

/* Move every small page whose owner is gone (its registry slot released
 * or found dead) to the abandoned lists.  page_lock held. */
static void sweep_stale_owners(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  uint64_t seen = posh_atomic_load_acquire(&h->xstale_owners);
  if (!seen)
    return;
  uint64_t high = h->pages_high < heap->npages ? h->pages_high : heap->npages;
  for (uint64_t i = 0; i < high; i++) {
    posh__page_t *pg = &heap->pages[i];
    if (pg->kind != POSH_PAGE_SMALL)
      continue;
    uint32_t owner = posh_atomic32_load_relaxed(&pg->xowner);
    if (owner != POSH_OWNER_ABANDONED && !posh__token_alive(heap, owner, 0))
      abandon_page(heap, pg);
  }
  /* Subtract only what we saw: reapers that added meanwhile get another
   * sweep. */
  posh_atomic_fetch_add_full(&h->xstale_owners, (uint64_t)0 - seen);
}

/* The header's page-state scalars and list heads are mutable and outside
 * the checksum: a stray write into the heap could leave any of them out of
 * range, and they are used as indices.  Checked on every take of
 * page_lock (a dozen compares against page-level work); out of range
 * means damage, which the repair rebuilds from the descriptors. */
static int page_state_sane(const posh_heap_t *heap) {
  const posh__hdr_t *h = heap->hdr;
  uint64_t n = heap->npages;
  if (h->pages_high > n || h->pages_free > n || h->page_hint > n ||
      h->pages_dirty > n)
    return 0;
  for (int c = 0; c < POSH_SIZE_CLASS_MAX; c++)
    if (h->abandoned_head[c] > n)
      return 0;
  return 1;
}

/* Takes page_lock; `fix_range` repairs out-of-range page state first (every
 * caller but the consistency check, which reports it instead). */
static int pages_lock(posh_heap_t *heap, uint32_t token, int fix_range) {
  int r = posh__lock_acquire(heap, &heap->hdr->page_lock, token, -1);
  if (r == 0 && fix_range && posh_unlikely(!page_state_sane(heap)))
    posh__pages_repair(heap);
  if (r == POSH_EOWNERDEAD) {
    posh__pages_repair(heap);
    /* The dead holder may have been sweeping: sweep again. */
    posh__pages_note_stale_owners(heap, 1);
    posh__lock_consistent(&heap->hdr->page_lock);
    r = 0;
  }
  if (r == 0 && posh_unlikely(posh_atomic_load_relaxed(&heap->hdr->xstale_owners)))
    sweep_stale_owners(heap);
  return r;
}

int posh__pages_lock(posh_heap_t *heap, uint32_t token) {
  return pages_lock(heap, token, 1);
}

void posh__pages_unlock(posh_heap_t *heap, uint32_t token) {
  posh__lock_release(&heap->hdr->page_lock, token);
}

static void set_kind(posh__page_t *pg, uint32_t kind) {
  /* Program order is what a crash sees: fields before kind. */
  posh_compiler_barrier();
  pg->kind = kind;
  posh_compiler_barrier();
}

void posh__pages_repair(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  uint64_t high = h->pages_high > heap->npages ? heap->npages : h->pages_high;
  h->pages_high = high;
  /* 1. Runs: a body page must belong to a head that covers it. */
  for (uint64_t i = 0; i < high; i++) {
    posh__page_t *pg = &heap->pages[i];
    if (pg->kind == POSH_PAGE_LARGE_HEAD) {
      uint64_t n = pg->run_pages;
      int ok = n >= 1 && i + n <= heap->npages;
      for (uint64_t j = 1; ok && j < n; j++)
        ok = heap->pages[i + j].kind == POSH_PAGE_LARGE_BODY &&
             heap->pages[i + j].run_pages == j;
      if (!ok)
        set_kind(pg, POSH_PAGE_FREE); /* bodies are freed below */
    }
  }
  for (uint64_t i = 0; i < high; i++) {
    posh__page_t *pg = &heap->pages[i];
    if (pg->kind == POSH_PAGE_LARGE_BODY) {
      uint64_t d = pg->run_pages;
      posh__page_t *head = d && d <= i ? &heap->pages[i - d] : NULL;
      if (!head || head->kind != POSH_PAGE_LARGE_HEAD || head->run_pages <= d)
        set_kind(pg, POSH_PAGE_FREE);
    } else if (pg->kind > POSH_PAGE_LARGE_BODY) {
      set_kind(pg, POSH_PAGE_FREE);
    }
  }
  /* 2. Derived state. */
  uint64_t nfree = 0;
  for (int c = 0; c < POSH_SIZE_CLASS_MAX; c++) {
    h->abandoned_head[c] = 0;
    posh_atomic_store_relaxed(&h->xabandoned_count[c], 0);
  }
  for (uint64_t i = heap->npages; i-- > 0;) {
    posh__page_t *pg = &heap->pages[i];
    if (i >= high || pg->kind == POSH_PAGE_FREE) {
      freemap_set(heap->freemap, i);
      nfree++;
      if (i < high)
        pg->flags |= POSH_PAGEF_DIRTY;
      continue;
    }
    freemap_clear(heap->freemap, i);
    if (pg->kind == POSH_PAGE_SMALL &&
        posh_atomic32_load_relaxed(&pg->xowner) == POSH_OWNER_ABANDONED &&
        pg->size_class < (uint32_t)POSH_SIZE_CLASS_MAX) {
      pg->owner_next = h->abandoned_head[pg->size_class];
      h->abandoned_head[pg->size_class] = (uint32_t)(i + 1);
      posh_atomic_fetch_add_full(&h->xabandoned_count[pg->size_class], 1);
    }
  }
  h->pages_free = nfree;
  h->pages_dirty = nfree - (heap->npages - high);
  h->page_hint = 0;
}

/* First-fit search for n free pages from the hint, wrapping once. */
static int64_t find_run(posh_heap_t *heap, uint64_t n) {
  uint64_t npages = heap->npages;
  if (n == 0 || n > heap->hdr->pages_free)
    return -1;
  uint64_t start = heap->hdr->page_hint % npages;
  for (int pass = 0; pass < 2; pass++) {
    uint64_t i = pass == 0 ? start : 0;
    uint64_t end = pass == 0 ? npages : start + n - 1;
    if (end > npages)
      end = npages;
    uint64_t run = 0;
    while (i < end) {
      uint64_t w = heap->freemap[i >> 6];
      if ((i & 63) == 0 && w == 0) { /* skip a fully used word */
        run = 0;
        i += 64;
        continue;
      }
      if (w == ~0ull && (i & 63) == 0 && i + 64 <= end) {
        run += 64;
        i += 64;
      } else if (freemap_test(heap->freemap, i)) {
        run++;
        i++;
      } else {
        run = 0;
        i++;
      }
      if (run >= n)
        return (int64_t)(i - run);
    }
  }
  return -1;
}

/* Mark [idx, idx+n) used in the derived state.  page_lock held. */
static void take_pages(posh_heap_t *heap, uint64_t idx, uint64_t n) {
  posh__hdr_t *h = heap->hdr;
  for (uint64_t j = 0; j < n; j++) {
    freemap_clear(heap->freemap, idx + j);
    if (heap->pages[idx + j].flags & POSH_PAGEF_DIRTY) {
      heap->pages[idx + j].flags &= ~POSH_PAGEF_DIRTY;
      h->pages_dirty--;
    }
  }
  h->pages_free -= n;
  h->page_hint = idx + n;
}

/* Extend the high-water mark before descriptors past it are written. */
static void raise_high(posh_heap_t *heap, uint64_t end) {
  if (heap->hdr->pages_high < end) {
    posh_compiler_barrier();
    heap->hdr->pages_high = end;
    posh_compiler_barrier();
  }
}

int64_t posh__pages_alloc_run(posh_heap_t *heap, uint32_t token, uint64_t n,
                              int *err) {
  int r = posh__pages_lock(heap, token);
  if (r) {
    *err = r;
    return -1;
  }
  int64_t idx = find_run(heap, n);
  if (idx < 0) {
    posh__pages_unlock(heap, token);
    *err = POSH_ENOMEM;
    return -1;
  }
  raise_high(heap, (uint64_t)idx + n);
  for (uint64_t j = n; j-- > 1;) {
    posh__page_t *body = &heap->pages[idx + j];
    body->run_pages = (uint32_t)j;
    set_kind(body, POSH_PAGE_LARGE_BODY);
  }
  posh__page_t *head = &heap->pages[idx];
  head->run_pages = (uint32_t)n;
  head->large_size = 0;
  posh_atomic32_store_relaxed(&head->xowner, token);
  set_kind(head, POSH_PAGE_LARGE_HEAD);
  take_pages(heap, (uint64_t)idx, n);
  posh__pages_unlock(heap, token);
  return idx;
}

/* Punch every dirty free page, in maximal contiguous ranges. */
static void purge_dirty(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  uint64_t high = h->pages_high < heap->npages ? h->pages_high : heap->npages;
  uint64_t i = 0;
  while (i < high) {
    if (!(heap->pages[i].flags & POSH_PAGEF_DIRTY) ||
        heap->pages[i].kind != POSH_PAGE_FREE) {
      i++;
      continue;
    }
    uint64_t j = i;
    while (j < high && (heap->pages[j].flags & POSH_PAGEF_DIRTY) &&
           heap->pages[j].kind == POSH_PAGE_FREE) {
      heap->pages[j].flags &= ~POSH_PAGEF_DIRTY;
      j++;
    }
    posh__prim_punch_hole(heap->fd, h->data_off + (i << POSH_PAGE_SHIFT),
                          (j - i) << POSH_PAGE_SHIFT);
    h->pages_dirty -= j - i;
    i = j;
  }
}

/* Return [idx, idx+n) to the free state.  page_lock held. */
static void release_pages(posh_heap_t *heap, uint64_t idx, uint64_t n) {
  posh__hdr_t *h = heap->hdr;
  /* Head first: a crash then leaves orphan bodies, which repair frees. */
  for (uint64_t j = 0; j < n; j++)
    set_kind(&heap->pages[idx + j], POSH_PAGE_FREE);
  for (uint64_t j = 0; j < n; j++)
    freemap_set(heap->freemap, idx + j);
  h->pages_free += n;
  if (idx < h->page_hint)
    h->page_hint = idx;
  if (n >= punch_run_pages(heap)) {
    posh__prim_punch_hole(heap->fd, h->data_off + (idx << POSH_PAGE_SHIFT),
                          n << POSH_PAGE_SHIFT);
  } else {
    for (uint64_t j = 0; j < n; j++)
      heap->pages[idx + j].flags |= POSH_PAGEF_DIRTY;
    h->pages_dirty += n;
    if (h->pages_dirty >= purge_pages(heap))
      purge_dirty(heap);
  }
}

int posh__pages_free_run(posh_heap_t *heap, uint32_t token, uint64_t index) {
  int r = posh__pages_lock(heap, token);
  if (r)
    return r;
  /* The caller saw a run head without the lock; a concurrent free of the
   * same block may have released it since. */
  posh__page_t *head = &heap->pages[index];
  uint64_t n = head->run_pages;
  if (head->kind != POSH_PAGE_LARGE_HEAD || n == 0 || index + n > heap->npages) {
    posh__pages_unlock(heap, token);
    return POSH_EDOUBLEFREE;
  }
  release_pages(heap, index, n);
  posh__pages_unlock(heap, token);
  return 0;
}

posh__page_t *posh__pages_alloc_small(posh_heap_t *heap, uint32_t token,
                                      int cls, int *err) {
  int r = posh__pages_lock(heap, token);
  if (r) {
    *err = r;
    return NULL;
  }
  int64_t idx = find_run(heap, 1);
  if (idx < 0) {
    posh__pages_unlock(heap, token);
    *err = POSH_ENOMEM;
    return NULL;
  }
  raise_high(heap, (uint64_t)idx + 1);
  posh__page_t *pg = &heap->pages[idx];
  posh__small_page_format(heap, pg, cls, token);
  set_kind(pg, POSH_PAGE_SMALL);
  take_pages(heap, (uint64_t)idx, 1);
  posh__pages_unlock(heap, token);
  return pg;
}

void posh__pages_free_small(posh_heap_t *heap, uint32_t token,
                            posh__page_t *pg) {
  if (posh__pages_lock(heap, token) != 0)
    return;
  release_pages(heap, posh__page_index(heap, pg), 1);
  posh__pages_unlock(heap, token);
}

posh__page_t *posh__pages_adopt(posh_heap_t *heap, uint32_t token, int cls) {
  posh__hdr_t *h = heap->hdr;
  if (posh_atomic_load_relaxed(&h->xabandoned_count[cls]) == 0)
    return NULL;
  if (posh__pages_lock(heap, token) != 0)
    return NULL;
  posh__page_t *pg = NULL;
  /* A list longer than the heap has pages is a cycle: damage. */
  for (uint64_t steps = 0; h->abandoned_head[cls]; steps++) {
    uint32_t idx = h->abandoned_head[cls] - 1;
    if (posh_unlikely(idx >= heap->npages || steps > heap->npages)) {
      posh__pages_repair(heap); /* rebuilds the lists from the descriptors */
      break;
    }
    posh__page_t *cand = &heap->pages[idx];
    h->abandoned_head[cls] = cand->owner_next;
    posh_atomic_fetch_add_full(&h->xabandoned_count[cls], (uint64_t)-1);
    /* CAS: the owner field is the page's only cross-process claim. */
    if (cand->kind == POSH_PAGE_SMALL && cand->size_class == (uint32_t)cls &&
        posh_atomic32_cas_full(&cand->xowner, POSH_OWNER_ABANDONED, token) ==
            POSH_OWNER_ABANDONED) {
      pg = cand;
      break;
    }
  }
  posh__pages_unlock(heap, token);
  return pg;
}

void posh__pages_abandon_owner(posh_heap_t *heap, uint32_t self_token,
                               uint32_t owner_token) {
  posh__hdr_t *h = heap->hdr;
  if (owner_token == POSH_OWNER_ABANDONED)
    return;
  if (posh__pages_lock(heap, self_token) != 0) {
    /* Cannot sweep now: leave it to the next lock holder. */
    posh__pages_note_stale_owners(heap, 1);
    return;
  }
  uint64_t high = h->pages_high < heap->npages ? h->pages_high : heap->npages;
  for (uint64_t i = 0; i < high; i++) {
    posh__page_t *pg = &heap->pages[i];
    if (pg->kind == POSH_PAGE_SMALL &&
        posh_atomic32_load_relaxed(&pg->xowner) == owner_token)
      abandon_page(heap, pg);
  }
  posh__pages_unlock(heap, self_token);
}

int posh__pages_check(posh_heap_t *heap, char *report, size_t len,
                      size_t *used) {
  posh__hdr_t *h = heap->hdr;
  int bad = 0, err = 0;
  uint32_t token = posh__self_token(heap, &err);
  if (!token)
    return err;
  if ((err = pages_lock(heap, token, 0)))
    return err;
  if (!page_state_sane(heap)) {
    posh__report(report, len, used,
                 "pages: page state in the header out of range (high %llu, "
                 "free %llu, hint %llu, dirty %llu of %llu pages, or a list head)\n",
                 (unsigned long long)h->pages_high, (unsigned long long)h->pages_free,
                 (unsigned long long)h->page_hint, (unsigned long long)h->pages_dirty,
                 (unsigned long long)heap->npages);
    bad = 1;
  }
  uint64_t nfree = 0;
  uint64_t high = h->pages_high;
  if (high > heap->npages) {
    posh__report(report, len, used, "pages: high-water %llu > %llu pages\n",
                 (unsigned long long)high, (unsigned long long)heap->npages);
    bad = 1;
    high = heap->npages;
  }
  for (uint64_t i = 0; i < heap->npages; i++) {
    posh__page_t *pg = &heap->pages[i];
    uint32_t kind = i < high ? pg->kind : POSH_PAGE_FREE;
    int is_free = kind == POSH_PAGE_FREE;
    nfree += (uint64_t)is_free;
    if (freemap_test(heap->freemap, i) != is_free) {
      posh__report(report, len, used, "pages: page %llu kind %u but freemap %d\n",
                   (unsigned long long)i, kind, freemap_test(heap->freemap, i));
      bad = 1;
    }
    if (kind == POSH_PAGE_LARGE_HEAD) {
      uint64_t n = pg->run_pages;
      if (n == 0 || i + n > heap->npages) {
        posh__report(report, len, used, "pages: run at %llu has bad length %llu\n",
                     (unsigned long long)i, (unsigned long long)n);
        bad = 1;
        continue;
      }
      for (uint64_t j = 1; j < n; j++)
        if (heap->pages[i + j].kind != POSH_PAGE_LARGE_BODY ||
            heap->pages[i + j].run_pages != j) {
          posh__report(report, len, used, "pages: run at %llu broken at +%llu\n",
                       (unsigned long long)i, (unsigned long long)j);
          bad = 1;
          break;
        }
      i += n - 1;
      continue;
    }
    if (kind == POSH_PAGE_LARGE_BODY) {
      posh__report(report, len, used, "pages: body page %llu without head\n",
                   (unsigned long long)i);
      bad = 1;
    } else if (kind == POSH_PAGE_SMALL) {
      /* The block count is stable only on the checking thread's own pages:
       * another owner updates its bitmap and count with plain stores, no
       * lock, so a check racing it would see one without the other. */
      uint32_t owner = posh_atomic32_load_relaxed(&pg->xowner);
      if (posh__small_page_check(heap, pg, owner == token, report, len, used))
        bad = 1;
    } else if (kind != POSH_PAGE_FREE) {
      posh__report(report, len, used, "pages: page %llu has kind %u\n",
                   (unsigned long long)i, kind);
      bad = 1;
    }
  }
  if (nfree != h->pages_free) {
    posh__report(report, len, used, "pages: %llu free pages, counter says %llu\n",
                 (unsigned long long)nfree, (unsigned long long)h->pages_free);
    bad = 1;
  }
  /* Abandoned lists: every member SMALL, right class, owner ABANDONED. */
  for (int c = 0; c < POSH_SIZE_CLASS_MAX; c++) {
    uint64_t steps = 0;
    for (uint32_t p = h->abandoned_head[c]; p; steps++) {
      if (p > heap->npages || steps > heap->npages) {
        posh__report(report, len, used, "pages: abandoned list %d broken\n", c);
        bad = 1;
        break;
      }
      posh__page_t *pg = &heap->pages[p - 1];
      if (pg->kind != POSH_PAGE_SMALL || pg->size_class != (uint32_t)c ||
          posh_atomic32_load_relaxed(&pg->xowner) != POSH_OWNER_ABANDONED) {
        posh__report(report, len, used,
                     "pages: abandoned list %d holds page %u of kind %u\n", c,
                     p - 1, pg->kind);
        bad = 1;
        break;
      }
      p = pg->owner_next;
    }
  }
  posh__pages_unlock(heap, token);
  return bad ? POSH_ECORRUPT : 0;
}
