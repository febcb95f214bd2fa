/* SPDX-License-Identifier: MIT */
/*
 * This file contains Barrier: a generation-counting barrier whose waiters
 * sleep on one futex word (generation | broken).  The last thread to arrive
 * runs the action outside the barrier's lock and ends the generation; a
 * waiter that times out, an action that fails, abort(), and the death of a
 * thread that had arrived (found by the waiters' periodic liveness check of
 * the arrival table) break it.  How each generation ended is kept in a
 * 64-bit history, so a woken waiter learns its outcome without the lock.
 */
#include "sync_internal.h"

static inline uint32_t *bar_tokens(posh__barrier_shared_t *b) {
  return (uint32_t *)(b + 1);
}
static inline uint32_t gen_of(uint32_t word) { return word >> 1; }

static void wake_all(posh__barrier_shared_t *b) {
  /* Callers changed xword with a full barrier (or released the lock, a
   * full barrier, after the release-store) before reading xsleepers. */
  if (posh_atomic32_load_relaxed(&b->xsleepers))
    posh__futex_wake(&b->xword, INT32_MAX);
}

/* Set the broken bit of the current generation.  lock held. */
static void break_locked(posh__barrier_shared_t *b) {
  uint32_t w = posh_atomic32_load_relaxed(&b->xword);
  /* Full barrier: the broken word is visible before we look for
   * sleepers in wake_all. */
  posh_atomic32_exchange_full(&b->xword, w | POSH__BARRIER_BROKEN);
}

/* The holder of the barrier's lock died: a participant died (or a thread
 * aborting or resetting it), so break the barrier. */
static void barrier_repair(posh_heap_t *heap, void *obj) {
  posh__barrier_shared_t *b = obj;
  (void)heap;
  if (b->count > b->parties)
    b->count = b->parties;
  break_locked(b);
  wake_all(b);
}

static int bar_lock(posh_heap_t *heap, posh__barrier_shared_t *b, uint32_t tok,
                    uint64_t deadline) {
  return posh__sync_lock_internal(heap, &b->lock, tok, deadline,
                                  barrier_repair, b);
}

static void bar_unlock(posh__barrier_shared_t *b, uint32_t tok) {
  posh__lock_release(&b->lock, tok);
}

/* 1 if a thread that arrived in this generation (other than us) is dead.
 * lock held. */
static int arrived_dead(posh_heap_t *heap, posh__barrier_shared_t *b,
                        uint32_t tok) {
  uint32_t *t = bar_tokens(b);
  uint32_t n = b->count < b->parties ? b->count : b->parties;
  for (uint32_t i = 0; i < n; i++)
    if (t[i] != tok && t[i] != 0 && !posh__token_alive(heap, t[i], 1))
      return 1;
  return 0;
}

/* Outcome for a waiter of the generation of `w` now that the word is
 * `cur` != w. */
static int outcome(posh__barrier_shared_t *b, uint32_t w, uint32_t cur,
                   uint32_t idx, unsigned *index_out) {
  if (gen_of(cur) == gen_of(w))
    return POSH_EBROKEN; /* same generation: the broken bit was set */
  /* The caller's acquire-load of xword pairs with the release-store that
   * ended the generation, after the history bit was written. */
  uint64_t hist = posh_atomic_load_relaxed(&b->xhistory);
  if (!((hist >> (gen_of(w) & 63)) & 1))
    return POSH_EBROKEN; /* ended by reset */
  if (index_out)
    *index_out = idx;
  return 0;
}

/* Wait until xword != w (a thread that has not arrived, waiting for a
 * tripping generation to end).  0 or POSH_ETIMEDOUT. */
static int wait_next(posh_heap_t *heap, posh__barrier_shared_t *b,
                     uint32_t tok, uint32_t w, uint64_t deadline) {
  for (;;) {
    int r = posh__sync_wait(&b->xword, w, deadline, &b->xspin,
                            &b->xsleepers, 1);
    if (posh_atomic32_load_acquire(&b->xword) != w)
      return 0;
    if (r == POSH_ETIMEDOUT)
      return r;
    if (r == POSH_EAGAIN && bar_lock(heap, b, tok, 0) == 0) {
      if (posh_atomic32_load_relaxed(&b->xword) == w && arrived_dead(heap, b, tok)) {
        break_locked(b);
        wake_all(b);
      }
      bar_unlock(b, tok);
    }
  }
}

/* Last arrival: run the action and end the generation.  lock held on
 * entry, released on return. */
static int trip(posh_heap_t *heap, posh__barrier_shared_t *b, uint32_t tok,
                uint32_t w, uint32_t idx, posh_barrier_action_fn action,
                void *arg, unsigned *index_out) {
  if (action) {
    /* Outside the lock: a long action must not keep waiters from their
     * liveness checks and timeouts (which may break the barrier). */
    bar_unlock(b, tok);
    int ar = action(arg);
    int r = bar_lock(heap, b, tok, 0);
    if (r)
      return r;
    if (posh_atomic32_load_relaxed(&b->xword) != w) {
      bar_unlock(b, tok); /* broken or reset meanwhile */
      return POSH_EBROKEN;
    }
    if (ar != 0) {
      break_locked(b);
      bar_unlock(b, tok);
      wake_all(b);
      return POSH_EBROKEN;
    }
  }
  uint64_t hist = posh_atomic_load_relaxed(&b->xhistory);
  posh_atomic_store_relaxed(&b->xhistory, hist | (1ull << (gen_of(w) & 63)));
  b->count = 0;
  /* Release: the history bit and everything the parties did before
   * arriving are visible to a waiter that sees the new generation. */
  posh_atomic32_store_release(&b->xword, w + 2u);
  bar_unlock(b, tok);
  wake_all(b);
  if (index_out)
    *index_out = idx;
  return 0;
}

POSH_EXTERN int posh_barrier_create(posh_heap_t *heap, const char *name,
                                    int parties, unsigned flags,
                                    posh_off_t *barrier_out) {
  int err = 0;
  if (!barrier_out || flags != 0 || parties < 1 ||
      parties > POSH__BARRIER_MAX_PARTIES)
    return POSH_EINVAL;
  size_t size = sizeof(posh__barrier_shared_t) + (size_t)parties * sizeof(uint32_t);
  posh__barrier_shared_t *b =
      posh__sync_alloc(heap, POSH_SYNC_BARRIER, 0, size, &err);
  if (!b)
    return err;
  posh__lock_init(&b->lock);
  b->parties = (uint32_t)parties;
  return posh__sync_publish(heap, b, name, barrier_out);
}

POSH_EXTERN int posh_barrier_open(posh_heap_t *heap, const char *name,
                                  posh_off_t *barrier_out) {
  return posh_sync_open(heap, name, POSH_SYNC_BARRIER, barrier_out);
}

POSH_EXTERN int posh_barrier_destroy(posh_heap_t *heap, posh_off_t barrier) {
  return posh__sync_destroy_typed(heap, barrier, POSH_SYNC_BARRIER);
}

POSH_EXTERN int posh_barrier_wait(posh_heap_t *heap, posh_off_t barrier,
                                  int64_t timeout_ns,
                                  posh_barrier_action_fn action, void *arg,
                                  unsigned *index_out) {
  posh__barrier_shared_t *b;
  uint32_t tok;
  int err = posh__sync_get_self(heap, barrier, POSH_SYNC_BARRIER, (void **)&b, &tok);
  if (posh_unlikely(err))
    return err;
  uint64_t deadline = timeout_ns >= 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  uint32_t w, idx;
  for (;;) {
    int r = bar_lock(heap, b, tok, deadline);
    if (r)
      return r; /* not arrived: the barrier is left as it was */
    w = posh_atomic32_load_relaxed(&b->xword);
    if (w & POSH__BARRIER_BROKEN) {
      bar_unlock(b, tok);
      return POSH_EBROKEN;
    }
    if (b->count < b->parties)
      break;
    /* Full: the last arrival is running the action.  Wait for the next
     * generation (more threads than parties form successive groups). */
    bar_unlock(b, tok);
    r = wait_next(heap, b, tok, w, deadline);
    if (r)
      return r;
  }
  idx = b->count;
  bar_tokens(b)[idx] = tok;
  b->count = idx + 1;
  if (b->count == b->parties)
    return trip(heap, b, tok, w, idx, action, arg, index_out);
  bar_unlock(b, tok);

  for (;;) {
    int r = timeout_ns == 0 ? POSH_ETIMEDOUT
                            : posh__sync_wait(&b->xword, w, deadline,
                                              &b->xspin, &b->xsleepers, 1);
    /* Acquire: pairs with the release-store that changed the word. */
    uint32_t cur = posh_atomic32_load_acquire(&b->xword);
    if (cur != w)
      return outcome(b, w, cur, idx, index_out);
    if (r == POSH_ETIMEDOUT) {
      /* Our timeout breaks the barrier for everyone, unless it tripped in
       * the meantime. */
      if (bar_lock(heap, b, tok, 0) == 0) {
        cur = posh_atomic32_load_relaxed(&b->xword);
        if (cur == w) {
          break_locked(b);
          bar_unlock(b, tok);
          wake_all(b);
          return POSH_ETIMEDOUT;
        }
        bar_unlock(b, tok);
      }
      cur = posh_atomic32_load_acquire(&b->xword);
      return cur != w ? outcome(b, w, cur, idx, index_out) : POSH_ETIMEDOUT;
    }
    if (r == POSH_EAGAIN && bar_lock(heap, b, tok, 0) == 0) {
      /* A liveness period asleep: has a thread that arrived died? */
      if (posh_atomic32_load_relaxed(&b->xword) == w && arrived_dead(heap, b, tok)) {
        break_locked(b);
        wake_all(b);
      }
      bar_unlock(b, tok);
    }
  }
}

POSH_EXTERN int posh_barrier_abort(posh_heap_t *heap, posh_off_t barrier) {
  posh__barrier_shared_t *b;
  uint32_t tok;
  int err = posh__sync_get_self(heap, barrier, POSH_SYNC_BARRIER, (void **)&b, &tok);
  if (posh_unlikely(err))
    return err;
  err = bar_lock(heap, b, tok, 0);
  if (err)
    return err;
  break_locked(b);
  bar_unlock(b, tok);
  wake_all(b);
  return 0;
}

POSH_EXTERN int posh_barrier_reset(posh_heap_t *heap, posh_off_t barrier) {
  posh__barrier_shared_t *b;
  uint32_t tok;
  int err = posh__sync_get_self(heap, barrier, POSH_SYNC_BARRIER, (void **)&b, &tok);
  if (posh_unlikely(err))
    return err;
  err = bar_lock(heap, b, tok, 0);
  if (err)
    return err;
  uint32_t w = posh_atomic32_load_relaxed(&b->xword);
  if (b->count != 0 || (w & POSH__BARRIER_BROKEN)) {
    /* End the generation as "reset": its waiters get POSH_EBROKEN. */
    uint64_t hist = posh_atomic_load_relaxed(&b->xhistory);
    posh_atomic_store_relaxed(&b->xhistory, hist & ~(1ull << (gen_of(w) & 63)));
    b->count = 0;
    /* Release: the history bit before the new generation (as trip). */
    posh_atomic32_store_release(&b->xword, (w & ~POSH__BARRIER_BROKEN) + 2u);
  }
  bar_unlock(b, tok);
  wake_all(b);
  return 0;
}

POSH_EXTERN int posh_barrier_parties(posh_heap_t *heap, posh_off_t barrier) {
  posh__barrier_shared_t *b;
  int err = posh__sync_get(heap, barrier, POSH_SYNC_BARRIER, (void **)&b);
  return err ? err : (int)b->parties;
}

POSH_EXTERN int posh_barrier_n_waiting(posh_heap_t *heap, posh_off_t barrier) {
  posh__barrier_shared_t *b;
  int err = posh__sync_get(heap, barrier, POSH_SYNC_BARRIER, (void **)&b);
  if (err)
    return err;
  /* A snapshot without the lock (a plain read of an aligned word). */
  uint32_t n = *(volatile uint32_t *)&b->count;
  return (int)(n < b->parties ? n : b->parties);
}

POSH_EXTERN int posh_barrier_broken(posh_heap_t *heap, posh_off_t barrier) {
  posh__barrier_shared_t *b;
  int err = posh__sync_get(heap, barrier, POSH_SYNC_BARRIER, (void **)&b);
  if (err)
    return err;
  return (posh_atomic32_load_acquire(&b->xword) & POSH__BARRIER_BROKEN) != 0;
}
