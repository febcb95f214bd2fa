/* SPDX-License-Identifier: MIT */
/*
 * This file contains Semaphore and BoundedSemaphore.  A plain semaphore is
 * a futex word changed by CAS.  A robust one (POSH_SEM_ROBUST) also keeps,
 * per registry slot, which thread holds how many units, in a table guarded
 * by an internal lock word with an undo record, so that the units of a
 * thread that died can be given back and a holder killed in the middle of
 * an update leaves nothing half done.
 */
#include "sync_internal.h"

/* ------------------------------------------------------------------------
 * Layout of the robust table.
 * ---------------------------------------------------------------------- */
static inline uint64_t *sem_bits(posh__sem_shared_t *s) {
  return (uint64_t *)(s + 1);
}
static inline posh__sem_holder_t *sem_holders(posh__sem_shared_t *s) {
  return (posh__sem_holder_t *)(sem_bits(s) + (s->nslots + 63) / 64);
}

static inline void set_bit(uint64_t *bits, uint32_t i, int on) {
  if (on)
    bits[i / 64] |= 1ull << (i % 64);
  else
    bits[i / 64] &= ~(1ull << (i % 64));
}

/* One logged change of the table: value := new_value and holders[slot] :=
 * entry.  table_lock held.  The undo record is complete before it is
 * marked active, and cleared only after the change, so a successor that
 * finds it active rolls back to exactly the old state.  Compiler barriers
 * are enough: kill -9 stops us between instructions, and the next holder
 * takes the lock with a full-barrier CAS. */
static void table_change(posh__sem_shared_t *s, uint32_t new_value,
                         uint32_t slot, posh__sem_holder_t entry) {
  posh__sem_holder_t *h = &sem_holders(s)[slot];
  s->undo.value = posh_atomic32_load_relaxed(&s->xvalue);
  s->undo.slot = slot;
  s->undo.entry = *h;
  posh_compiler_barrier();
  s->undo.active = 1;
  posh_compiler_barrier();
  /* Release: sleepers compare the value without the lock; anything they
   * read after seeing it is what the release orders before. */
  posh_atomic32_store_release(&s->xvalue, new_value);
  *h = entry;
  set_bit(sem_bits(s), slot, entry.count > 0);
  posh_compiler_barrier();
  s->undo.active = 0;
}

/* Successor of a table_lock holder that died: roll its change back and
 * recompute the bitmap (a bitmap word may be half updated). */
static void sem_repair(posh_heap_t *heap, void *obj) {
  posh__sem_shared_t *s = obj;
  (void)heap;
  if (s->undo.active && s->undo.slot < s->nslots) {
    posh_atomic32_store_release(&s->xvalue, s->undo.value);
    sem_holders(s)[s->undo.slot] = s->undo.entry;
  }
  s->undo.active = 0;
  posh__sem_holder_t *h = sem_holders(s);
  for (uint32_t i = 0; i < s->nslots; i++)
    set_bit(sem_bits(s), i, h[i].count > 0);
}

/* Give back the units of dead holders.  table_lock held.  Returns how many
 * units came back. */
static uint32_t reap_locked(posh_heap_t *heap, posh__sem_shared_t *s,
                            int thorough) {
  uint64_t *bits = sem_bits(s);
  posh__sem_holder_t *h = sem_holders(s);
  uint32_t returned = 0;
  for (uint32_t w = 0; w < (s->nslots + 63) / 64; w++) {
    uint64_t b = bits[w];
    while (b) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(b);
      b &= b - 1;
      posh__sem_holder_t e = h[i];
      if (e.count == 0 || posh__token_alive(heap, e.token, thorough))
        continue;
      uint32_t v = posh_atomic32_load_relaxed(&s->xvalue);
      uint32_t add = e.count;
      if (add > (uint32_t)POSH_SEM_VALUE_MAX - v)
        add = (uint32_t)POSH_SEM_VALUE_MAX - v; /* cannot happen if sane */
      table_change(s, v + add, i, (posh__sem_holder_t){0, 0});
      returned += add;
    }
  }
  return returned;
}

static void wake_waiters(posh__sem_shared_t *s, uint32_t n) {
  /* The caller's change of the value was a full barrier (CAS) or is
   * followed by the unlock's; waiters increment xsleepers with a full
   * barrier before the kernel compares the value: one of us sees the
   * other. */
  if (n && posh_atomic32_load_relaxed(&s->xsleepers))
    posh__futex_wake(&s->xvalue, n > (uint32_t)INT32_MAX ? INT32_MAX : (int)n);
}

/* ------------------------------------------------------------------------
 * Create / open / destroy.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_sem_create(posh_heap_t *heap, const char *name, int value,
                                unsigned flags, posh_off_t *sem_out) {
  int err = 0;
  /* value <= POSH_SEM_VALUE_MAX (INT32_MAX) by its type. */
  if (!sem_out || value < 0 || (flags & ~(unsigned)(POSH_SEM_BOUNDED | POSH_SEM_ROBUST)))
    return POSH_EINVAL;
  if (!heap)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  uint32_t nslots = (flags & POSH_SEM_ROBUST) ? heap->hdr->max_slots : 0;
  size_t size = sizeof(posh__sem_shared_t);
  if (nslots)
    size += (nslots + 63) / 64 * sizeof(uint64_t) +
            nslots * sizeof(posh__sem_holder_t);
  posh__sem_shared_t *s =
      posh__sync_alloc(heap, POSH_SYNC_SEMAPHORE, flags, size, &err);
  if (!s)
    return err;
  posh_atomic32_store_relaxed(&s->xvalue, (uint32_t)value);
  s->bound = (flags & POSH_SEM_BOUNDED) ? (uint32_t)value
                                        : (uint32_t)POSH_SEM_VALUE_MAX;
  s->nslots = nslots;
  posh__lock_init(&s->table_lock);
  return posh__sync_publish(heap, s, name, sem_out);
}

POSH_EXTERN int posh_sem_open(posh_heap_t *heap, const char *name,
                              posh_off_t *sem_out) {
  return posh_sync_open(heap, name, POSH_SYNC_SEMAPHORE, sem_out);
}

POSH_EXTERN int posh_sem_destroy(posh_heap_t *heap, posh_off_t sem) {
  return posh__sync_destroy_typed(heap, sem, POSH_SYNC_SEMAPHORE);
}

/* ------------------------------------------------------------------------
 * Acquire.
 * ---------------------------------------------------------------------- */
/* One attempt at a unit without sleeping.  Plain: CAS loop.  Robust: under
 * table_lock, recording the holder; reaps dead holders first when the
 * value is 0 and reap >= 0 (1 = thorough).  Returns 0 (got it), POSH_EAGAIN
 * (none left), or a lock error. */
static int try_take(posh_heap_t *heap, posh__sem_shared_t *s, uint32_t tok,
                    uint64_t deadline, int reap) {
  if (!s->nslots) {
    uint32_t v = posh_atomic32_load_relaxed(&s->xvalue);
    while (v > 0) {
      /* Full-barrier CAS: acquire for what the releaser published. */
      uint32_t seen = posh_atomic32_cas_full(&s->xvalue, v, v - 1);
      if (seen == v)
        return 0;
      v = seen;
    }
    return POSH_EAGAIN;
  }
  int r = posh__sync_lock_internal(heap, &s->table_lock, tok, deadline,
                                   sem_repair, s);
  if (r)
    return r;
  uint32_t v = posh_atomic32_load_relaxed(&s->xvalue);
  uint32_t returned = 0;
  if (v == 0 && reap >= 0) {
    returned = reap_locked(heap, s, reap);
    v = posh_atomic32_load_relaxed(&s->xvalue);
  }
  if (v > 0) {
    uint32_t slot = posh__token_slot(tok);
    posh__sem_holder_t e = sem_holders(s)[slot];
    uint32_t nv = v - 1;
    if (e.token != tok) {
      /* A former incarnation of our slot exited or died holding units:
       * they come back now (the slot could not be ours otherwise). */
      if (e.count > (uint32_t)POSH_SEM_VALUE_MAX - nv)
        e.count = (uint32_t)POSH_SEM_VALUE_MAX - nv;
      nv += e.count;
      returned += e.count;
      e.count = 0;
    }
    table_change(s, nv, slot, (posh__sem_holder_t){tok, e.count + 1});
    r = 0;
  } else {
    r = POSH_EAGAIN;
  }
  posh__lock_release(&s->table_lock, tok);
  /* Units given back by dead holders: others may be waiting for them. */
  if (returned)
    wake_waiters(s, returned);
  return r;
}

POSH_EXTERN int posh_sem_acquire(posh_heap_t *heap, posh_off_t sem,
                                 int64_t timeout_ns) {
  posh__sem_shared_t *s;
  uint32_t tok;
  int err = posh__sync_get_self(heap, sem, POSH_SYNC_SEMAPHORE, (void **)&s, &tok);
  if (posh_unlikely(err))
    return err;
  uint64_t deadline = timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  /* First attempt: no reaping (the common case finds a unit). */
  int r = try_take(heap, s, tok, deadline, -1);
  if (r != POSH_EAGAIN)
    return r;
  if (timeout_ns == 0) {
    r = try_take(heap, s, tok, 0, 0); /* robust: cheap reap, then give up */
    return r == POSH_EAGAIN ? POSH_ETIMEDOUT : r;
  }
  int reap = 0;
  for (;;) {
    r = try_take(heap, s, tok, deadline, reap);
    if (r != POSH_EAGAIN)
      return r;
    /* Robust: the backstop is when dead holders are looked for. */
    r = posh__sync_wait(&s->xvalue, 0, deadline, &s->xspin, &s->xsleepers,
                        s->nslots != 0);
    if (r == POSH_ETIMEDOUT) {
      /* Last chance, so a wake-up meant for us is never lost: if a unit is
       * there, take it (the releaser woke at most as many as it gave). */
      r = try_take(heap, s, tok, 0, 1);
      return r == POSH_EAGAIN ? POSH_ETIMEDOUT : r;
    }
    /* A whole liveness period asleep: look at the holders in /proc. */
    reap = (r == POSH_EAGAIN) ? 1 : 0;
  }
}

/* ------------------------------------------------------------------------
 * Release.
 * ---------------------------------------------------------------------- */
static int release_plain(posh__sem_shared_t *s, uint32_t n) {
  uint32_t v = posh_atomic32_load_relaxed(&s->xvalue);
  for (;;) {
    if (n > s->bound || v > s->bound - n)
      return POSH_EOVERFLOW;
    /* Full-barrier CAS: releases the caller's stores to the acquirer. */
    uint32_t seen = posh_atomic32_cas_full(&s->xvalue, v, v + n);
    if (seen == v)
      break;
    v = seen;
  }
  wake_waiters(s, n);
  return 0;
}

static int release_robust(posh_heap_t *heap, posh__sem_shared_t *s,
                          uint32_t tok, uint32_t n) {
  int r = posh__sync_lock_internal(heap, &s->table_lock, tok, 0, sem_repair, s);
  if (r)
    return r;
  uint32_t v = posh_atomic32_load_relaxed(&s->xvalue);
  if (n > s->bound || v > s->bound - n) {
    posh__lock_release(&s->table_lock, tok);
    return POSH_EOVERFLOW;
  }
  posh__sem_holder_t *h = sem_holders(s);
  uint64_t *bits = sem_bits(s);
  uint32_t left = n;
  /* Our own units first. */
  uint32_t slot = posh__token_slot(tok);
  if (h[slot].token == tok && h[slot].count > 0) {
    uint32_t k = h[slot].count < left ? h[slot].count : left;
    v += k;
    table_change(s, v, slot, (posh__sem_holder_t){tok, h[slot].count - k});
    left -= k;
  }
  /* Then units held by others (handed on to us, e.g. producer/consumer). */
  for (uint32_t w = 0; left && w < (s->nslots + 63) / 64; w++) {
    uint64_t b = bits[w];
    while (left && b) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(b);
      b &= b - 1;
      posh__sem_holder_t e = h[i];
      if (e.count == 0)
        continue;
      uint32_t k = e.count < left ? e.count : left;
      v += k;
      table_change(s, v, i, (posh__sem_holder_t){e.token, e.count - k});
      left -= k;
    }
  }
  /* Then new units. */
  if (left) {
    v += left;
    /* Release: as in table_change. */
    posh_atomic32_store_release(&s->xvalue, v);
  }
  posh__lock_release(&s->table_lock, tok);
  wake_waiters(s, n);
  return 0;
}

POSH_EXTERN int posh_sem_release(posh_heap_t *heap, posh_off_t sem, int n) {
  posh__sem_shared_t *s;
  int err = posh__sync_get(heap, sem, POSH_SYNC_SEMAPHORE, (void **)&s);
  if (posh_unlikely(err))
    return err;
  if (n < 1)
    return POSH_EINVAL;
  if (!s->nslots)
    return release_plain(s, (uint32_t)n);
  uint32_t tok = posh__sync_token(heap, &err);
  if (!tok)
    return err;
  return release_robust(heap, s, tok, (uint32_t)n);
}

POSH_EXTERN int posh_sem_value(posh_heap_t *heap, posh_off_t sem) {
  posh__sem_shared_t *s;
  int err = posh__sync_get(heap, sem, POSH_SYNC_SEMAPHORE, (void **)&s);
  if (err)
    return err;
  return (int)posh_atomic32_load_acquire(&s->xvalue);
}

POSH_EXTERN int posh_sem_bound(posh_heap_t *heap, posh_off_t sem) {
  posh__sem_shared_t *s;
  int err = posh__sync_get(heap, sem, POSH_SYNC_SEMAPHORE, (void **)&s);
  if (err)
    return err;
  /* set at creation: the initial value, or POSH_SEM_VALUE_MAX unbounded */
  return s->bound <= POSH_SEM_VALUE_MAX ? (int)s->bound : POSH_SEM_VALUE_MAX;
}

POSH_EXTERN int posh_sem_reap(posh_heap_t *heap, posh_off_t sem,
                              unsigned *returned) {
  posh__sem_shared_t *s;
  int err = posh__sync_get(heap, sem, POSH_SYNC_SEMAPHORE, (void **)&s);
  if (err)
    return err;
  uint32_t got = 0;
  if (s->nslots) {
    uint32_t tok = posh__sync_token(heap, &err);
    if (!tok)
      return err;
    err = posh__sync_lock_internal(heap, &s->table_lock, tok, 0, sem_repair, s);
    if (err)
      return err;
    got = reap_locked(heap, s, 1);
    posh__lock_release(&s->table_lock, tok);
    wake_waiters(s, got);
  }
  if (returned)
    *returned = got;
  return 0;
}
