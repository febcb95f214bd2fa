/* SPDX-License-Identifier: MIT */
/*
 * This file contains the robust lock word used inside heaps (the page lock,
 * the directory lock, and the sync/ primitives built on it), and the futex
 * wait with a liveness backstop that every blocking call in libposh uses.
 *
 * The word holds the owner's token (registry slot + generation) and a
 * WAITERS bit.  Owner death is found through the registry, never through
 * the kernel's robust list (glibc owns that): a waiter sleeps at most
 * POSH_LIVENESS_PERIOD_NS, then asks whether the owner is alive, and steals
 * the lock with a CAS if it is not.
 */
#include "internal.h"

/* Spin iterations before sleeping: a cross-process cache-line handoff costs
 * ~0.7 µs and a futex sleep+wake ~25 µs, so a few µs of spinning pays. */
#define POSH_LOCK_SPIN_ROUNDS 256

void posh__lock_init(posh__lockword_t *lock) {
  posh_atomic32_store_relaxed(&lock->xword, 0);
  posh_atomic32_store_release(&lock->xstate, POSH_LOCK_CONSISTENT);
}

uint64_t posh__deadline_from_timeout(int64_t timeout_ns) {
  if (timeout_ns < 0)
    return 0;
  return posh__prim_now_ns() + (uint64_t)timeout_ns + 1;
}

int posh__futex_wait_until(posh_atomic32_t *word, uint32_t expected,
                           uint64_t deadline_ns) {
  uint64_t sleep_ns = POSH_LIVENESS_PERIOD_NS;
  int final = 0;
  if (deadline_ns) {
    uint64_t now = posh__prim_now_ns();
    if (now >= deadline_ns)
      return POSH_ETIMEDOUT;
    if (deadline_ns - now <= sleep_ns) {
      sleep_ns = deadline_ns - now;
      final = 1;
    }
  }
  struct timespec ts = {(time_t)(sleep_ns / 1000000000ull),
                        (long)(sleep_ns % 1000000000ull)};
  int r = posh__prim_futex_wait((volatile uint32_t *)word, expected, &ts);
  if (r == 0 || r == POSH_EINTR)
    return 0; /* woken, value changed, or a signal: the caller re-checks */
  if (r == POSH_ETIMEDOUT)
    return final ? POSH_ETIMEDOUT : POSH_EAGAIN;
  return r;
}

void posh__futex_wake(posh_atomic32_t *word, int count) {
  posh__prim_futex_wake((volatile uint32_t *)word, count);
}

uint32_t posh__spin_while_equal(posh_atomic32_t *word, uint32_t expected,
                                unsigned rounds) {
  uint32_t v = posh_atomic32_load_relaxed(word);
  while (v == expected && rounds--) {
    posh_cpu_relax();
    v = posh_atomic32_load_relaxed(word);
  }
  return v;
}

/* Called with the lock just acquired: report the recovery state. */
static int lock_acquired(posh__lockword_t *lock, uint32_t token) {
  /* Acquire-load: pairs with the release-store of the state by the holder
   * that set it (ordered before its unlock's full barrier anyway). */
  uint32_t st = posh_atomic32_load_acquire(&lock->xstate);
  if (posh_likely(st == POSH_LOCK_CONSISTENT))
    return 0;
  if (st == POSH_LOCK_OWNER_DIED)
    return POSH_EOWNERDEAD; /* an earlier recoverer died too */
  /* Not recoverable: give the lock back, nobody may hold it. */
  uint32_t old = posh_atomic32_exchange_full(&lock->xword, 0);
  if (old & POSH_LOCK_WAITERS)
    posh__futex_wake(&lock->xword, 1);
  (void)token;
  return POSH_ENOTRECOVERABLE;
}

/* Take the lock from a dead owner whose word we saw as `seen`. */
static int lock_steal(posh__lockword_t *lock, uint32_t seen, uint32_t token) {
  /* Keep WAITERS: others may be asleep behind the dead owner. */
  uint32_t desired = token | (seen & POSH_LOCK_WAITERS);
  if (posh_atomic32_cas_full(&lock->xword, seen, desired) != seen)
    return POSH_EAGAIN;
  if (posh_atomic32_load_acquire(&lock->xstate) == POSH_LOCK_NOTRECOVERABLE)
    return lock_acquired(lock, token);
  /* Release-store: the state is read by the next acquirer after our
   * unlock; the unlock's full barrier orders it in any case. */
  posh_atomic32_store_release(&lock->xstate, POSH_LOCK_OWNER_DIED);
  return POSH_EOWNERDEAD;
}

int posh__lock_try(posh_heap_t *heap, posh__lockword_t *lock, uint32_t token) {
  uint32_t w = posh_atomic32_load_relaxed(&lock->xword);
  if (w == 0) {
    /* CAS is a full barrier: acquire for the critical section. */
    w = posh_atomic32_cas_full(&lock->xword, 0, token);
    if (w == 0)
      return lock_acquired(lock, token);
  }
  uint32_t owner = w & POSH_TOKEN_MASK;
  if (owner == token)
    return POSH_EBUSY;
  /* The /proc check costs microseconds: a thread polling with try-lock
   * makes it at most once per liveness period. */
  static POSH_TLS uint64_t last_thorough_ns;
  int thorough = 0;
  if (owner != 0) {
    uint64_t now = posh__prim_now_ns();
    if (now - last_thorough_ns >= POSH_LIVENESS_PERIOD_NS) {
      last_thorough_ns = now;
      thorough = 1;
    }
  }
  if (owner != 0 && !posh__token_alive(heap, owner, thorough)) {
    int r = lock_steal(lock, w, token);
    if (r != POSH_EAGAIN)
      return r;
  }
  return POSH_EBUSY;
}

int posh__lock_acquire(posh_heap_t *heap, posh__lockword_t *lock,
                       uint32_t token, int64_t timeout_ns) {
  if (posh_likely(posh_atomic32_cas_full(&lock->xword, 0, token) == 0))
    return lock_acquired(lock, token);
  /* Exponential backoff: few loads, so the spinner does not keep pulling
   * the owner's cache line away while it works. */
  for (unsigned i = 0, n = 1; i < POSH_LOCK_SPIN_ROUNDS; i += n, n = n < 64 ? n * 2 : 64) {
    for (unsigned k = 0; k < n; k++)
      posh_cpu_relax();
    if (posh_atomic32_load_relaxed(&lock->xword) == 0 &&
        posh_atomic32_cas_full(&lock->xword, 0, token) == 0)
      return lock_acquired(lock, token);
  }
  uint64_t deadline = posh__deadline_from_timeout(timeout_ns);
  for (;;) {
    uint32_t w = posh_atomic32_load_relaxed(&lock->xword);
    if (w == 0) {
      /* We may have been woken by an unlock that saw WAITERS; others may
       * still sleep, so take the lock with WAITERS set (Drepper's "2"). */
      if (posh_atomic32_cas_full(&lock->xword, 0, token | POSH_LOCK_WAITERS) == 0)
        return lock_acquired(lock, token);
      continue;
    }
    uint32_t owner = w & POSH_TOKEN_MASK;
    if (owner == token)
      return POSH_EBUSY; /* non-recursive lock already held by this thread */
    /* Cheap check (registry record only) before every sleep. */
    if (!posh__token_alive(heap, owner, 0)) {
      int r = lock_steal(lock, w, token);
      if (r != POSH_EAGAIN)
        return r;
      continue;
    }
    if (!(w & POSH_LOCK_WAITERS)) {
      if (posh_atomic32_cas_full(&lock->xword, w, w | POSH_LOCK_WAITERS) != w)
        continue;
      w |= POSH_LOCK_WAITERS;
    }
    int r = posh__futex_wait_until(&lock->xword, w, deadline);
    if (r != 0 && r != POSH_EAGAIN && r != POSH_ETIMEDOUT)
      return r; /* the futex itself failed: do not spin on it */
    if (r == POSH_ETIMEDOUT) {
      /* Before giving up, make sure we are not timing out behind a dead
       * owner (short timeouts never reach the liveness backstop). */
      w = posh_atomic32_load_relaxed(&lock->xword);
      owner = w & POSH_TOKEN_MASK;
      if (owner && owner != token && !posh__token_alive(heap, owner, 1)) {
        int s = lock_steal(lock, w, token);
        if (s != POSH_EAGAIN)
          return s;
      }
      return POSH_ETIMEDOUT;
    }
    if (r == POSH_EAGAIN && !posh__token_alive(heap, owner, 1)) {
      /* Slept a whole liveness period: the owner is really gone. */
      int s = lock_steal(lock, w, token);
      if (s != POSH_EAGAIN)
        return s;
    }
  }
}

int posh__lock_release(posh__lockword_t *lock, uint32_t token) {
  uint32_t w = posh_atomic32_load_relaxed(&lock->xword);
  if ((w & POSH_TOKEN_MASK) != token)
    return POSH_EPERM;
  if (posh_atomic32_load_relaxed(&lock->xstate) == POSH_LOCK_OWNER_DIED)
    posh_atomic32_store_release(&lock->xstate, POSH_LOCK_NOTRECOVERABLE);
  /* Full-barrier exchange: releases the critical section's stores. */
  uint32_t old = posh_atomic32_exchange_full(&lock->xword, 0);
  if (old & POSH_LOCK_WAITERS)
    posh__futex_wake(&lock->xword, 1);
  return 0;
}

void posh__lock_consistent(posh__lockword_t *lock) {
  posh_atomic32_store_release(&lock->xstate, POSH_LOCK_CONSISTENT);
}

uint32_t posh__lock_owner(const posh__lockword_t *lock) {
  return posh_atomic32_load_acquire(&lock->xword) & POSH_TOKEN_MASK;
}
