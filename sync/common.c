/* SPDX-License-Identifier: MIT */
/*
 * This file contains what the sync/ primitives share: allocation and
 * publication of an object (header, magic, optional directory name),
 * opening by name with a type check, generic destroy, and the waiting
 * helpers (spin, then a futex sleep with a deadline and the liveness
 * backstop; internal lock words with repair on owner death).
 */
#include "sync_internal.h"

#include <stdlib.h>
#include <string.h>

void *posh__sync_alloc(posh_heap_t *heap, uint32_t type, uint32_t flags,
                       size_t size, int *err) {
  if (!heap) {
    *err = POSH_EINVAL;
    return NULL;
  }
  if (heap->detached) {
    *err = POSH_EDETACHED;
    return NULL;
  }
  if (size > UINT32_MAX - POSH_CACHELINE) {
    *err = POSH_ENOMEM;
    return NULL;
  }
  /* A cache line of its own: a contended lock must not share its line with
   * another object. */
  size_t rounded = (size_t)posh__align_up(size, POSH_CACHELINE);
  void *p = posh_aligned_alloc(heap, POSH_CACHELINE, rounded);
  if (!p) {
    *err = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
    return NULL;
  }
  memset(p, 0, rounded);
  posh__sync_hdr_t *h = p;
  h->type = (uint16_t)type;
  h->flags = (uint16_t)flags;
  h->size = (uint32_t)rounded;
  return p;
}

int posh__sync_publish(posh_heap_t *heap, void *obj, const char *name,
                       posh_off_t *out) {
  posh__sync_hdr_t *h = obj;
  /* Release: every field written by create is visible to whoever sees the
   * magic (pairs with the acquire of the directory lookup or any other
   * channel the offset travels through). */
  posh_atomic32_store_release(&h->xmagic, POSH__SYNC_MAGIC);
  posh_off_t off = posh_off(heap, obj);
  if (name) {
    int r = posh_name_bind(heap, name, off, POSH_SYNC_TAG(h->type));
    if (r) {
      posh__sync_free(heap, obj);
      return r;
    }
  }
  *out = off;
  return 0;
}

void posh__sync_free(posh_heap_t *heap, void *obj) {
  posh__sync_hdr_t *h = obj;
  /* Full barrier: a stale handle used after this sees "uninitialised"
   * (best effort: the memory may be reused later). */
  posh_atomic32_exchange_full(&h->xmagic, 0);
  posh_free(heap, obj);
}

int64_t posh__sync_remaining(uint64_t deadline) {
  if (!deadline)
    return -1;
  uint64_t now = posh__prim_now_ns();
  return now >= deadline ? 0 : (int64_t)(deadline - now);
}

/* Adaptive spin state: budget (rounds) in the low 16 bits, consecutive
 * failed spins in the high 16.  0 (a fresh object) means MAX. */
static unsigned spin_budget(uint32_t st) {
  unsigned budget = st & 0xffffu, fails = st >> 16;
  if (budget == 0 || fails >= POSH__SPIN_PROBE)
    return POSH__SPIN_MAX;
  return budget < POSH__SPIN_MIN ? POSH__SPIN_MIN : budget;
}

static void spin_update(posh_atomic32_t *spin, uint32_t st, int success,
                        unsigned rounds) {
  unsigned budget = spin_budget(st), fails = st >> 16;
  if (success) {
    unsigned want = 2 * rounds + POSH__SPIN_MIN;
    if (want > POSH__SPIN_MAX)
      want = POSH__SPIN_MAX;
    if (budget < want)
      budget = want;
    fails = 0;
  } else {
    budget = budget / 2 < POSH__SPIN_MIN ? POSH__SPIN_MIN : budget / 2;
    fails = fails >= POSH__SPIN_PROBE ? 0 : fails + 1; /* probe spent */
  }
  uint32_t nst = (fails << 16) | budget;
  if (nst != st) /* relaxed: a heuristic (see sync_internal.h) */
    posh_atomic32_store_relaxed(spin, nst);
}

/* Sleep while *word == expected, with the liveness backstop or, when the
 * caller needs none and has no deadline, without any timer (cheaper: no
 * hrtimer per sleep). */
static int sleep_on(posh_atomic32_t *word, uint32_t expected, uint64_t deadline,
                    int backstop) {
  if (backstop || deadline)
    return posh__futex_wait_until(word, expected, deadline);
  int r = posh__prim_futex_wait((volatile uint32_t *)word, expected, NULL);
  return r == POSH_EINTR ? 0 : r; /* a signal: the caller re-checks */
}

int posh__sync_wait(posh_atomic32_t *word, uint32_t expected,
                    uint64_t deadline, posh_atomic32_t *spin,
                    posh_atomic32_t *sleepers, int backstop) {
  if (spin) {
    uint32_t st = posh_atomic32_load_relaxed(spin);
    unsigned budget = spin_budget(st);
    for (unsigned k = 0; k < budget; k++) {
      posh_cpu_relax();
      if (posh_atomic32_load_relaxed(word) != expected) {
        spin_update(spin, st, 1, k);
        return 0;
      }
    }
    spin_update(spin, st, 0, budget);
  } else if (posh__spin_while_equal(word, expected, POSH__SYNC_SPIN) != expected) {
    return 0;
  }
  if (!sleepers)
    return sleep_on(word, expected, deadline, backstop);
  /* Full barrier before the kernel compares the word: pairs with the
   * waker's full-barrier change of the word followed by its read of
   * *sleepers (see sync_internal.h). */
  posh_atomic32_fetch_add_full(sleepers, 1);
  int r = sleep_on(word, expected, deadline, backstop);
  posh_atomic32_fetch_add_full(sleepers, (uint32_t)-1);
  return r;
}

int posh__sync_lock_internal(posh_heap_t *heap, posh__lockword_t *lw,
                             uint32_t token, uint64_t deadline,
                             void (*repair)(posh_heap_t *, void *), void *obj) {
  int64_t rem = posh__sync_remaining(deadline);
  int r;
  if (rem == 0) {
    r = posh__lock_try(heap, lw, token);
    if (r == POSH_EBUSY)
      r = POSH_ETIMEDOUT;
  } else {
    r = posh__lock_acquire(heap, lw, token, rem);
  }
  if (r == POSH_EOWNERDEAD) {
    if (repair)
      repair(heap, obj);
    posh__lock_consistent(lw);
    r = 0;
  }
  return r;
}

/* ------------------------------------------------------------------------
 * Public common operations.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_sync_type(posh_heap_t *heap, posh_off_t obj,
                               uint32_t *type_out) {
  if (!type_out)
    return POSH_EINVAL;
  void *p;
  /* Validate with a type that matches whatever the header says. */
  if (!heap || obj.v == 0)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  if (obj.v < POSH_HEADER_SIZE || (obj.v & 15) ||
      obj.v > heap->view.capacity - sizeof(posh__sync_hdr_t))
    return POSH_EFAULT;
  posh__sync_hdr_t *h = (posh__sync_hdr_t *)(heap->view.base + obj.v);
  int r = posh__sync_get(heap, obj, h->type, &p);
  if (r)
    return r;
  if (h->type < POSH_SYNC_LOCK || h->type > POSH_SYNC_RWLOCK)
    return POSH_ECORRUPT;
  *type_out = h->type;
  return 0;
}

POSH_EXTERN int posh_sync_open(posh_heap_t *heap, const char *name,
                               uint32_t type, posh_off_t *obj_out) {
  if (!heap || !name || !obj_out || type < POSH_SYNC_LOCK ||
      type > POSH_SYNC_RWLOCK)
    return POSH_EINVAL;
  posh_off_t off;
  uint32_t tag;
  int r = posh_name_lookup(heap, name, &off, &tag);
  if (r)
    return r;
  if (tag != POSH_SYNC_TAG(type))
    return POSH_ETYPE;
  void *p;
  r = posh__sync_get(heap, off, type, &p);
  if (r)
    return r;
  *obj_out = off;
  return 0;
}

POSH_EXTERN int posh_sync_bind(posh_heap_t *heap, const char *name,
                               posh_off_t obj) {
  uint32_t type;
  int r = posh_sync_type(heap, obj, &type);
  if (r)
    return r;
  if (!name)
    return POSH_EINVAL;
  return posh_name_bind(heap, name, obj, POSH_SYNC_TAG(type));
}

/* Names bound to one offset, collected by a directory walk. */
struct name_list {
  posh_off_t target;
  size_t n, cap;
  char (*names)[POSH_NAME_MAX + 1];
  int err;
};

static int collect_name(const char *name, posh_off_t off, uint32_t tag,
                        void *arg) {
  struct name_list *l = arg;
  if (off.v != l->target.v || (tag & 0xffff0000u) != POSH_SYNC_TAG_BASE)
    return 0;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    void *p = realloc(l->names, cap * sizeof *l->names);
    if (!p) {
      l->err = POSH_ENOMEM;
      return 1;
    }
    l->names = p;
    l->cap = cap;
  }
  strncpy(l->names[l->n], name, POSH_NAME_MAX);
  l->names[l->n][POSH_NAME_MAX] = '\0';
  l->n++;
  return 0;
}

/* Unbind every sync name bound to obj. */
static int unbind_all(posh_heap_t *heap, posh_off_t obj) {
  struct name_list l = {obj, 0, 0, NULL, 0};
  int r = posh_name_foreach(heap, collect_name, &l);
  if (r < 0 && r != 1)
    l.err = r;
  for (size_t i = 0; i < l.n; i++)
    posh_name_unbind(heap, l.names[i], obj); /* gone already: fine */
  free(l.names);
  return l.err;
}

int posh__sync_destroy_typed(posh_heap_t *heap, posh_off_t obj, uint32_t type) {
  void *p;
  int r = posh__sync_get(heap, obj, type, &p);
  return r ? r : posh_sync_destroy(heap, obj);
}

POSH_EXTERN int posh_sync_destroy(posh_heap_t *heap, posh_off_t obj) {
  uint32_t type;
  int r = posh_sync_type(heap, obj, &type);
  if (r)
    return r;
  void *p = posh_ptr(heap, obj);
  posh__sync_hdr_t *h = p;
  switch (type) {
  case POSH_SYNC_LOCK:
  case POSH_SYNC_RLOCK:
    r = posh__lock_destroy_check(heap, p, type);
    break;
  case POSH_SYNC_RWLOCK:
    r = posh__rwlock_destroy_check(heap, p);
    break;
  case POSH_SYNC_CONDITION:
    /* Its own lock goes with it: refuse while a live thread holds that. */
    r = 0;
    if (h->flags & POSH__SYNC_OWNS_LOCK) {
      void *lk;
      if (posh__sync_get(heap, ((posh__cond_shared_t *)p)->lock,
                         POSH_SYNC_RLOCK, &lk) == 0)
        r = posh__lock_destroy_check(heap, lk, POSH_SYNC_RLOCK);
    }
    break;
  default:
    r = 0;
  }
  if (r)
    return r;
  r = unbind_all(heap, obj);
  if (r)
    return r;
  if (type == POSH_SYNC_CONDITION && (h->flags & POSH__SYNC_OWNS_LOCK)) {
    posh__cond_shared_t *c = p;
    posh__mutex_destroy(heap, c->lock);
  }
  posh__sync_free(heap, p);
  return 0;
}
