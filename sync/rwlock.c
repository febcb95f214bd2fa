/* SPDX-License-Identifier: MIT */
/*
 * This file contains RWLock.  Writers serialise on a robust lock word (so a
 * dead writer is handled as a dead Lock owner) and close a gate to new
 * readers; readers announce themselves in their registry slot's entry (the
 * only record of who reads, so a dead reader is subtracted by clearing its
 * entry) and step back while the gate is closed.  Fairness is phase-like:
 * a writer closes the gate as soon as it holds the write side (readers
 * cannot starve writers), and a writer first lets in the readers that the
 * previous writer kept out, for at most POSH__RW_GRACE_NS (writers cannot
 * starve readers).
 */
#include "sync_internal.h"

/* How long a writer waits for readers blocked by the previous write phase
 * to come in before it closes the gate anyway. */
#define POSH__RW_GRACE_NS (2ull * 1000 * 1000)

static inline posh_atomic_t *rw_bits(posh__rwlock_shared_t *rw) {
  return (posh_atomic_t *)(rw + 1);
}
static inline posh_atomic_t *rw_entries(posh__rwlock_shared_t *rw) {
  return rw_bits(rw) + (rw->nslots + 63) / 64;
}
static inline uint32_t e_token(uint64_t e) { return (uint32_t)e; }
static inline uint32_t e_count(uint64_t e) {
  return (uint32_t)((e & POSH__RW_COUNT_MASK) >> 32);
}
static inline uint64_t e_make(uint32_t tok, uint32_t count, int blocked) {
  return (uint64_t)tok | ((uint64_t)count << 32) |
         (blocked ? POSH__RW_BLOCKED : 0);
}

/* Store our own entry and make it visible before anything we read next
 * (store-load order: the Dekker handshake with the writer's gate).  The
 * release keeps a departing reader's reads of the protected data before
 * it. */
static inline void entry_publish(posh_atomic_t *ent, uint64_t v) {
  posh_atomic_store_release(ent, v);
  posh_fence_full();
}

/* A reader left or stepped back: if a writer is waiting for readers, let
 * it re-scan. */
static void reader_left(posh__rwlock_shared_t *rw) {
  posh_atomic32_fetch_add_full(&rw->xrseq, 1);
  if (posh_atomic32_load_relaxed(&rw->xwsleep))
    posh__futex_wake(&rw->xrseq, 1);
}

/* Open the gate (next epoch) and wake readers sleeping on it.  Held by the
 * writer. */
static void gate_open(posh__rwlock_shared_t *rw) {
  uint32_t g = posh_atomic32_load_relaxed(&rw->xgate);
  uint32_t ng = ((g >> POSH__RW_EPOCH_SHIFT) + 1u) << POSH__RW_EPOCH_SHIFT;
  /* Full barrier; release for the write phase's stores (pairs with the
   * reader's acquire-load of an open gate). */
  uint32_t old = posh_atomic32_exchange_full(&rw->xgate, ng);
  if (old & POSH__RW_RWAITERS)
    posh__futex_wake(&rw->xgate, INT32_MAX);
}

/* Count readers inside (entries with a count, other than `self`).  Dead
 * ones are cleared (CAS, so a new incarnation of the slot is never
 * touched).  thorough: look in /proc, else only the registry's record. */
static uint32_t scan(posh_heap_t *heap, posh__rwlock_shared_t *rw,
                     uint32_t self, int thorough, int blocked_only) {
  posh_atomic_t *bits = rw_bits(rw), *ent = rw_entries(rw);
  uint32_t n = 0;
  for (uint32_t w = 0; w < (rw->nslots + 63) / 64; w++) {
    uint64_t b = posh_atomic_load_acquire(&bits[w]);
    while (b) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(b);
      b &= b - 1;
      /* Acquire: pairs with the reader's release-store of its entry, so a
       * count of 0 means its reads are done. */
      uint64_t e = posh_atomic_load_acquire(&ent[i]);
      int hit = blocked_only ? (e & POSH__RW_BLOCKED) != 0 : e_count(e) > 0;
      if (!hit || e_token(e) == self)
        continue;
      if (!posh__token_alive(heap, e_token(e), thorough)) {
        posh_atomic_cas_full(&ent[i], e, 0);
        continue;
      }
      n++;
    }
  }
  return n;
}

/* Wait until scan() finds nobody (up to deadline, 0 = none).  0 or
 * POSH_ETIMEDOUT.  Caller holds wlock. */
static int wait_scan(posh_heap_t *heap, posh__rwlock_shared_t *rw,
                     uint32_t self, uint64_t deadline, int blocked_only) {
  int thorough = 0, r = 0;
  posh_atomic32_exchange_full(&rw->xwsleep, 1);
  for (;;) {
    uint32_t s = posh_atomic32_load_acquire(&rw->xrseq);
    if (scan(heap, rw, self, thorough, blocked_only) == 0) {
      r = 0;
      break;
    }
    r = posh__sync_wait(&rw->xrseq, s, deadline, &rw->xspin, NULL, 1);
    if (r == POSH_ETIMEDOUT) {
      /* Dead ones may be among them: one thorough look before giving up. */
      r = scan(heap, rw, self, 1, blocked_only) == 0 ? 0 : POSH_ETIMEDOUT;
      break;
    }
    thorough = (r == POSH_EAGAIN);
  }
  posh_atomic32_exchange_full(&rw->xwsleep, 0);
  return r;
}

/* The write side, from taking wlock to an empty lock with the gate closed.
 * 0, POSH_EOWNERDEAD (held), POSH_ETIMEDOUT, POSH_ENOTRECOVERABLE,
 * POSH_EBUSY. */
static int write_lock(posh_heap_t *heap, posh__rwlock_shared_t *rw,
                      uint32_t tok, uint64_t deadline, int try_only) {
  int r;
  if (try_only) {
    r = posh__lock_try(heap, &rw->wlock, tok);
    if (r == POSH_EBUSY)
      r = posh__lock_owner(&rw->wlock) == tok ? POSH_EBUSY : POSH_ETIMEDOUT;
  } else {
    int64_t rem = posh__sync_remaining(deadline);
    r = rem == 0 ? POSH_ETIMEDOUT : posh__lock_acquire(heap, &rw->wlock, tok, rem);
  }
  if (r != 0 && r != POSH_EOWNERDEAD)
    return r;
  int died = r == POSH_EOWNERDEAD;
  uint32_t g = posh_atomic32_load_relaxed(&rw->xgate);
  if (!(g & POSH__RW_CLOSED)) {
    /* Readers kept out by the previous writer go first (bounded). */
    if (!try_only) {
      uint64_t grace = posh__prim_now_ns() + POSH__RW_GRACE_NS;
      if (deadline && deadline < grace && !died)
        grace = deadline;
      wait_scan(heap, rw, tok, grace, 1);
    }
    /* Close the gate.  Full barrier before the scan of the entries (pairs
     * with the reader's announce-then-read-gate). */
    posh_atomic32_exchange_full(&rw->xgate,
                                (g & ~(uint32_t)POSH__RW_RWAITERS) | POSH__RW_CLOSED);
  }
  /* Else a dead writer left it closed: keep it so. */
  if (try_only && !died) {
    if (scan(heap, rw, tok, 0, 0) != 0) {
      gate_open(rw);
      posh__lock_release(&rw->wlock, tok);
      return POSH_ETIMEDOUT;
    }
    return 0;
  }
  /* After an owner death the lock cannot be given back without making it
   * not recoverable, so the wait for readers that were inside when the
   * writer died ignores the deadline (they are alive and leaving, or dead
   * and subtracted). */
  r = wait_scan(heap, rw, tok, died ? 0 : deadline, 0);
  if (r) {
    gate_open(rw);
    posh__lock_release(&rw->wlock, tok);
    return r;
  }
  return died ? POSH_EOWNERDEAD : 0;
}

static void write_unlock(posh__rwlock_shared_t *rw, uint32_t tok) {
  /* Relaxed: the state is written only by the holder of wlock (us). */
  if (posh_atomic32_load_relaxed(&rw->wlock.xstate) == POSH_LOCK_OWNER_DIED) {
    /* Released without being made consistent: the lock becomes not
     * recoverable.  The gate stays closed and says so to readers. */
    uint32_t old = posh_atomic32_fetch_or_full(&rw->xgate, POSH__RW_NOTREC);
    (void)old;
    posh__lock_release(&rw->wlock, tok);
    posh__futex_wake(&rw->xgate, INT32_MAX);
    return;
  }
  gate_open(rw);
  posh__lock_release(&rw->wlock, tok);
}

/* ------------------------------------------------------------------------
 * Public API.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_rwlock_create(posh_heap_t *heap, const char *name,
                                   unsigned flags, posh_off_t *rw_out) {
  int err = 0;
  if (!heap || !rw_out || flags != 0)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  uint32_t nslots = heap->hdr->max_slots;
  size_t size = sizeof(posh__rwlock_shared_t) +
                ((nslots + 63) / 64 + nslots) * sizeof(posh_atomic_t);
  posh__rwlock_shared_t *rw =
      posh__sync_alloc(heap, POSH_SYNC_RWLOCK, 0, size, &err);
  if (!rw)
    return err;
  posh__lock_init(&rw->wlock);
  rw->nslots = nslots;
  return posh__sync_publish(heap, rw, name, rw_out);
}

POSH_EXTERN int posh_rwlock_open(posh_heap_t *heap, const char *name,
                                 posh_off_t *rw_out) {
  return posh_sync_open(heap, name, POSH_SYNC_RWLOCK, rw_out);
}

POSH_EXTERN int posh_rwlock_destroy(posh_heap_t *heap, posh_off_t rw) {
  return posh__sync_destroy_typed(heap, rw, POSH_SYNC_RWLOCK);
}

int posh__rwlock_destroy_check(posh_heap_t *heap, void *obj) {
  posh__rwlock_shared_t *rw = obj;
  uint32_t owner = posh__lock_owner(&rw->wlock);
  if (owner != 0 && posh__token_alive(heap, owner, 1))
    return POSH_EBUSY;
  if (scan(heap, rw, 0, 1, 0) != 0)
    return POSH_EBUSY;
  return 0;
}

static int rw_get(posh_heap_t *heap, posh_off_t obj,
                  posh__rwlock_shared_t **rw, uint32_t *tok) {
  int err = posh__sync_get(heap, obj, POSH_SYNC_RWLOCK, (void **)rw);
  if (posh_unlikely(err))
    return err;
  *tok = posh__sync_token(heap, &err);
  if (posh_unlikely(!*tok))
    return err;
  if (posh_unlikely(posh__token_slot(*tok) >= (*rw)->nslots))
    return POSH_ECORRUPT;
  return 0;
}

POSH_EXTERN int posh_rwlock_rdlock(posh_heap_t *heap, posh_off_t obj,
                                   int64_t timeout_ns) {
  posh__rwlock_shared_t *rw;
  uint32_t tok;
  int err = rw_get(heap, obj, &rw, &tok);
  if (err)
    return err;
  uint32_t slot = posh__token_slot(tok);
  posh_atomic_t *ent = &rw_entries(rw)[slot];
  /* Our own entry: only this thread writes it while it is alive (others
   * only clear entries of dead tokens), so a relaxed read is exact. */
  uint64_t e = posh_atomic_load_relaxed(ent);
  if (e_token(e) == tok && e_count(e) > 0) {
    /* Recursive read: granted even with the gate closed, since a writer
     * waiting for us would otherwise wait forever. */
    if (e_count(e) >= 0x7fffffffu)
      return POSH_EOVERFLOW;
    posh_atomic_store_relaxed(ent, e + POSH__RW_COUNT_ONE);
    return 0;
  }
  if (posh__lock_owner(&rw->wlock) == tok)
    return POSH_EBUSY; /* the writer itself: would deadlock */
  posh_atomic_t *bw = &rw_bits(rw)[slot / 64];
  uint64_t mask = 1ull << (slot % 64);
  /* Full barrier (fetch-or) orders the bit before our first announce, so
   * a writer that can see the entry can find it. */
  if (!(posh_atomic_load_relaxed(bw) & mask))
    posh_atomic_fetch_or_full(bw, mask);

  uint64_t deadline = timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  int last = timeout_ns == 0;
  int was_blocked = 0;
  for (;;) {
    entry_publish(ent, e_make(tok, 1, 0));
    /* Acquire: pairs with gate_open's exchange, so the last write phase's
     * stores are visible once we see the gate open. */
    uint32_t g = posh_atomic32_load_acquire(&rw->xgate);
    if (!(g & POSH__RW_CLOSED)) {
      if (was_blocked)
        reader_left(rw); /* our BLOCKED mark is gone: tell the writer */
      return 0;
    }
    /* Closed: step back, marked as kept out (the next writer lets us in
     * first). */
    entry_publish(ent, e_make(tok, 0, 1));
    was_blocked = 1;
    reader_left(rw);
    if (g & POSH__RW_NOTREC || last) {
      entry_publish(ent, e_make(tok, 0, 0));
      reader_left(rw);
      return (g & POSH__RW_NOTREC) ? POSH_ENOTRECOVERABLE : POSH_ETIMEDOUT;
    }
    /* Sleep until the gate changes. */
    for (;;) {
      g = posh_atomic32_load_acquire(&rw->xgate);
      if (!(g & POSH__RW_CLOSED) || (g & POSH__RW_NOTREC))
        break;
      if (!(g & POSH__RW_RWAITERS)) {
        if (posh_atomic32_cas_full(&rw->xgate, g, g | POSH__RW_RWAITERS) != g)
          continue;
        g |= POSH__RW_RWAITERS;
      }
      int r = posh__sync_wait(&rw->xgate, g, deadline, &rw->xspin, NULL, 1);
      if (r == POSH_ETIMEDOUT) {
        last = 1; /* one more look at the gate, then give up */
        break;
      }
      if (r == POSH_EAGAIN) {
        uint32_t owner = posh__lock_owner(&rw->wlock);
        if (owner != 0 && !posh__token_alive(heap, owner, 1)) {
          /* The writer died with the gate closed: recover through the
           * write side (someone must repair before anyone reads). */
          entry_publish(ent, e_make(tok, 0, 0));
          reader_left(rw);
          int w = write_lock(heap, rw, tok, deadline, 0);
          if (w != 0)
            return w; /* EOWNERDEAD: held for writing */
          /* Another writer had recovered it: downgrade to a read hold.
           * Announce while the gate is still closed by us, then open. */
          entry_publish(ent, e_make(tok, 1, 0));
          write_unlock(rw, tok);
          return 0;
        }
      }
    }
  }
}

POSH_EXTERN int posh_rwlock_wrlock(posh_heap_t *heap, posh_off_t obj,
                                   int64_t timeout_ns) {
  posh__rwlock_shared_t *rw;
  uint32_t tok;
  int err = rw_get(heap, obj, &rw, &tok);
  if (err)
    return err;
  uint64_t e = posh_atomic_load_relaxed(&rw_entries(rw)[posh__token_slot(tok)]);
  if (e_token(e) == tok && e_count(e) > 0)
    return POSH_EBUSY; /* a reader cannot upgrade: would deadlock */
  if (posh__lock_owner(&rw->wlock) == tok)
    return POSH_EBUSY;
  uint64_t deadline = timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  return write_lock(heap, rw, tok, deadline, timeout_ns == 0);
}

POSH_EXTERN int posh_rwlock_unlock(posh_heap_t *heap, posh_off_t obj) {
  posh__rwlock_shared_t *rw;
  uint32_t tok;
  int err = rw_get(heap, obj, &rw, &tok);
  if (err)
    return err;
  if (posh__lock_owner(&rw->wlock) == tok) {
    write_unlock(rw, tok);
    return 0;
  }
  posh_atomic_t *ent = &rw_entries(rw)[posh__token_slot(tok)];
  uint64_t e = posh_atomic_load_relaxed(ent);
  if (e_token(e) != tok || e_count(e) == 0)
    return POSH_EPERM;
  if (e_count(e) > 1) {
    posh_atomic_store_relaxed(ent, e - POSH__RW_COUNT_ONE); /* still inside */
    return 0;
  }
  entry_publish(ent, e_make(tok, 0, 0));
  /* After the fence: a writer that closed the gate before it may be
   * waiting for us. */
  if (posh_atomic32_load_relaxed(&rw->xgate) & POSH__RW_CLOSED)
    reader_left(rw);
  return 0;
}

POSH_EXTERN int posh_rwlock_consistent(posh_heap_t *heap, posh_off_t obj) {
  posh__rwlock_shared_t *rw;
  uint32_t tok;
  int err = rw_get(heap, obj, &rw, &tok);
  if (err)
    return err;
  if (posh__lock_owner(&rw->wlock) != tok)
    return POSH_EPERM;
  if (posh_atomic32_load_relaxed(&rw->wlock.xstate) != POSH_LOCK_OWNER_DIED)
    return POSH_EINVAL;
  posh__lock_consistent(&rw->wlock);
  return 0;
}

POSH_EXTERN int posh_rwlock_readers(posh_heap_t *heap, posh_off_t obj) {
  posh__rwlock_shared_t *rw;
  int err = posh__sync_get(heap, obj, POSH_SYNC_RWLOCK, (void **)&rw);
  if (err)
    return err;
  posh_atomic_t *bits = rw_bits(rw), *ent = rw_entries(rw);
  int n = 0;
  for (uint32_t w = 0; w < (rw->nslots + 63) / 64; w++) {
    uint64_t b = posh_atomic_load_acquire(&bits[w]);
    while (b) {
      uint32_t i = w * 64 + (uint32_t)__builtin_ctzll(b);
      b &= b - 1;
      if (e_count(posh_atomic_load_acquire(&ent[i])) > 0)
        n++;
    }
  }
  return n;
}
