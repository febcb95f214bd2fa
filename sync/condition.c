/* SPDX-License-Identifier: MIT */
/*
 * This file contains Condition and Event.  Both sleep on a futex word whose
 * every change means "something happened" (a notify sequence number; an
 * event generation), never on a list of waiters, so a waiter that dies
 * leaves nothing behind that a notifier or setter could stall on.
 */
#include "sync_internal.h"

/* ------------------------------------------------------------------------
 * Condition.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_cond_create(posh_heap_t *heap, const char *name,
                                 posh_off_t lock, unsigned flags,
                                 posh_off_t *cond_out) {
  int err = 0;
  if (!heap || !cond_out || flags != 0)
    return POSH_EINVAL;
  unsigned hflags = 0;
  if (posh_off_is_null(lock)) {
    err = posh_rlock_create(heap, NULL, 0, &lock);
    if (err)
      return err;
    hflags = POSH__SYNC_OWNS_LOCK;
  } else {
    uint32_t type;
    err = posh_sync_type(heap, lock, &type);
    if (err)
      return err;
    if (type != POSH_SYNC_LOCK && type != POSH_SYNC_RLOCK)
      return POSH_ETYPE;
  }
  posh__cond_shared_t *c =
      posh__sync_alloc(heap, POSH_SYNC_CONDITION, hflags, sizeof *c, &err);
  if (!c)
    goto err;
  c->lock = lock;
  err = posh__sync_publish(heap, c, name, cond_out);
  if (err)
    goto err;
  return 0;
err:
  if (hflags & POSH__SYNC_OWNS_LOCK)
    posh_sync_destroy(heap, lock);
  return err;
}

POSH_EXTERN int posh_cond_open(posh_heap_t *heap, const char *name,
                               posh_off_t *cond_out) {
  return posh_sync_open(heap, name, POSH_SYNC_CONDITION, cond_out);
}

POSH_EXTERN int posh_cond_destroy(posh_heap_t *heap, posh_off_t cond) {
  return posh__sync_destroy_typed(heap, cond, POSH_SYNC_CONDITION);
}

POSH_EXTERN int posh_cond_lock(posh_heap_t *heap, posh_off_t cond,
                               posh_off_t *lock_out) {
  posh__cond_shared_t *c;
  int err = posh__sync_get(heap, cond, POSH_SYNC_CONDITION, (void **)&c);
  if (err)
    return err;
  if (!lock_out)
    return POSH_EINVAL;
  *lock_out = c->lock;
  return 0;
}

POSH_EXTERN int posh_cond_acquire(posh_heap_t *heap, posh_off_t cond,
                                  int64_t timeout_ns) {
  posh__cond_shared_t *c;
  int err = posh__sync_get(heap, cond, POSH_SYNC_CONDITION, (void **)&c);
  if (err)
    return err;
  err = posh_lock_acquire(heap, c->lock, timeout_ns);
  if (err == POSH_ETYPE)
    err = posh_rlock_acquire(heap, c->lock, timeout_ns);
  return err;
}

POSH_EXTERN int posh_cond_release(posh_heap_t *heap, posh_off_t cond) {
  posh__cond_shared_t *c;
  int err = posh__sync_get(heap, cond, POSH_SYNC_CONDITION, (void **)&c);
  if (err)
    return err;
  err = posh_lock_release(heap, c->lock);
  if (err == POSH_ETYPE)
    err = posh_rlock_release(heap, c->lock);
  return err;
}

/* With the lock held: may this waiter, which entered when `granted` was
 * `granted0` and `broadcasts` was `bcast0`, return as notified?  Takes the
 * wake-up it returns on (see posh__cond_shared_t). */
static int cond_take_wakeup(posh__cond_shared_t *c, uint32_t granted0,
                            uint32_t bcast0) {
  if (c->broadcasts != bcast0)
    return 1;
  if (c->granted != granted0 && c->consumed != c->granted) {
    c->consumed++;
    return 1;
  }
  return 0;
}

static int cond_wait(posh_heap_t *heap, posh__cond_shared_t *c, uint32_t tok,
                     uint64_t deadline, int try_only) {
  if (!posh__mutex_held(heap, c->lock, tok))
    return POSH_EPERM;
  uint32_t saved;
  int err;
  if (try_only) { /* timeout 0: let others in once, as Python does */
    err = posh__mutex_release_all(heap, c->lock, tok, &saved);
    if (err)
      return err;
    err = posh__mutex_reacquire(heap, c->lock, tok, saved);
    return err ? err : POSH_ETIMEDOUT;
  }
  const uint32_t granted0 = c->granted, bcast0 = c->broadcasts;
  c->entered++;
  for (;;) {
    /* We hold the lock and notifiers bump the sequence while holding it, so
     * this value cannot move until we release: relaxed is enough. */
    uint32_t seq = posh_atomic32_load_relaxed(&c->xseq);
    err = posh__mutex_release_all(heap, c->lock, tok, &saved);
    if (err)
      return err; /* cannot happen: we held it a moment ago */
    int w = POSH_EAGAIN;
    while (posh_atomic32_load_relaxed(&c->xseq) == seq && w != POSH_ETIMEDOUT)
      w = posh__sync_wait(&c->xseq, seq, deadline, &c->xspin, &c->xsleepers,
                          0); /* no owner to watch; 0 or EAGAIN: look again */
    /* Take the lock back whatever happened, as Python does; its owner-death
     * report wins over a timeout (the caller must repair first). */
    err = posh__mutex_reacquire(heap, c->lock, tok, saved);
    if (err && err != POSH_EOWNERDEAD)
      return err; /* not held: the counters are not ours to touch */
    if (cond_take_wakeup(c, granted0, bcast0))
      return err;
    if (w == POSH_ETIMEDOUT || err) {
      c->granted++; /* we leave: count ourselves woken and taken */
      c->consumed++;
      return err ? err : POSH_ETIMEDOUT;
    }
    /* The sequence moved for a wake-up someone else took: wait on. */
  }
}

POSH_EXTERN int posh_cond_wait(posh_heap_t *heap, posh_off_t cond,
                               int64_t timeout_ns) {
  posh__cond_shared_t *c;
  uint32_t tok;
  int err = posh__sync_get_self(heap, cond, POSH_SYNC_CONDITION, (void **)&c, &tok);
  if (posh_unlikely(err))
    return err;
  uint64_t deadline = timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  return cond_wait(heap, c, tok, deadline, timeout_ns == 0);
}

POSH_EXTERN int posh_cond_wait_for(posh_heap_t *heap, posh_off_t cond,
                                   posh_predicate_fn pred, void *arg,
                                   int64_t timeout_ns) {
  posh__cond_shared_t *c;
  int err = posh__sync_get(heap, cond, POSH_SYNC_CONDITION, (void **)&c);
  if (err)
    return err;
  if (!pred)
    return POSH_EINVAL;
  uint32_t tok = posh__sync_token(heap, &err);
  if (!tok)
    return err;
  if (!posh__mutex_held(heap, c->lock, tok))
    return POSH_EPERM;
  uint64_t deadline = timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  for (;;) {
    if (pred(arg))
      return 0;
    if (timeout_ns == 0 || (deadline && posh__sync_remaining(deadline) == 0))
      return POSH_ETIMEDOUT;
    int r = cond_wait(heap, c, tok, deadline, 0);
    if (r == POSH_ETIMEDOUT)
      return pred(arg) ? 0 : POSH_ETIMEDOUT;
    if (r)
      return r;
  }
}

static int cond_notify(posh_heap_t *heap, posh_off_t cond, int n) {
  posh__cond_shared_t *c;
  int err = posh__sync_get(heap, cond, POSH_SYNC_CONDITION, (void **)&c);
  if (err)
    return err;
  if (n < 0)
    return POSH_EINVAL;
  uint32_t tok = posh__sync_token(heap, &err);
  if (!tok)
    return err;
  if (!posh__mutex_held(heap, c->lock, tok))
    return POSH_EPERM;
  uint32_t waiting = c->entered - c->granted;
  if (n == 0 || waiting == 0)
    return 0;
  if (n == INT32_MAX) { /* notify_all: also forgets waiters that died */
    c->granted = c->consumed = c->entered;
    c->broadcasts++;
  } else
    c->granted += (uint32_t)n < waiting ? (uint32_t)n : waiting;
  /* Full barrier: the new sequence is visible before we read xsleepers
   * (pairs with the sleeper's increment before its futex compare).  Every
   * sleeper is woken: which of them may take a wake-up is decided under the
   * lock, and a FUTEX_WAKE(n) could pick ones that arrived after it. */
  posh_atomic32_fetch_add_full(&c->xseq, 1);
  if (posh_atomic32_load_relaxed(&c->xsleepers))
    posh__futex_wake(&c->xseq, INT32_MAX);
  return 0;
}

POSH_EXTERN int posh_cond_notify(posh_heap_t *heap, posh_off_t cond, int n) {
  return cond_notify(heap, cond, n);
}

POSH_EXTERN int posh_cond_notify_all(posh_heap_t *heap, posh_off_t cond) {
  return cond_notify(heap, cond, INT32_MAX);
}

/* ------------------------------------------------------------------------
 * Event.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_event_create(posh_heap_t *heap, const char *name,
                                  unsigned flags, posh_off_t *event_out) {
  int err = 0;
  if (!event_out || flags != 0)
    return POSH_EINVAL;
  posh__event_shared_t *e =
      posh__sync_alloc(heap, POSH_SYNC_EVENT, 0, sizeof *e, &err);
  if (!e)
    return err;
  return posh__sync_publish(heap, e, name, event_out);
}

POSH_EXTERN int posh_event_open(posh_heap_t *heap, const char *name,
                                posh_off_t *event_out) {
  return posh_sync_open(heap, name, POSH_SYNC_EVENT, event_out);
}

POSH_EXTERN int posh_event_destroy(posh_heap_t *heap, posh_off_t event) {
  return posh__sync_destroy_typed(heap, event, POSH_SYNC_EVENT);
}

POSH_EXTERN int posh_event_set(posh_heap_t *heap, posh_off_t event) {
  posh__event_shared_t *e;
  int err = posh__sync_get(heap, event, POSH_SYNC_EVENT, (void **)&e);
  if (posh_unlikely(err))
    return err;
  uint32_t w = posh_atomic32_load_relaxed(&e->xword);
  for (;;) {
    if (w & POSH__EVENT_SET)
      return 0;
    uint32_t nw = (w + 2u) | POSH__EVENT_SET; /* next generation, set */
    /* Full-barrier CAS: releases the setter's stores to the waiters, and
     * orders the new word before our read of xsleepers. */
    uint32_t seen = posh_atomic32_cas_full(&e->xword, w, nw);
    if (seen == w)
      break;
    w = seen;
  }
  if (posh_atomic32_load_relaxed(&e->xsleepers))
    posh__futex_wake(&e->xword, INT32_MAX);
  return 0;
}

POSH_EXTERN int posh_event_clear(posh_heap_t *heap, posh_off_t event) {
  posh__event_shared_t *e;
  int err = posh__sync_get(heap, event, POSH_SYNC_EVENT, (void **)&e);
  if (posh_unlikely(err))
    return err;
  /* Full barrier via fetch-and-not (the CAS loop of atomic.h). */
  posh_atomic32_fetch_andnot_full(&e->xword, POSH__EVENT_SET);
  return 0;
}

POSH_EXTERN int posh_event_is_set(posh_heap_t *heap, posh_off_t event) {
  posh__event_shared_t *e;
  int err = posh__sync_get(heap, event, POSH_SYNC_EVENT, (void **)&e);
  if (posh_unlikely(err))
    return err;
  /* Acquire: pairs with set's CAS, so what the setter wrote before set()
   * is visible to a caller that sees the flag. */
  return (posh_atomic32_load_acquire(&e->xword) & POSH__EVENT_SET) != 0;
}

POSH_EXTERN int posh_event_wait(posh_heap_t *heap, posh_off_t event,
                                int64_t timeout_ns) {
  posh__event_shared_t *e;
  int err = posh__sync_get(heap, event, POSH_SYNC_EVENT, (void **)&e);
  if (posh_unlikely(err))
    return err;
  /* Acquire: as is_set. */
  uint32_t w = posh_atomic32_load_acquire(&e->xword);
  if (w & POSH__EVENT_SET)
    return 0;
  if (timeout_ns == 0)
    return POSH_ETIMEDOUT;
  uint64_t deadline = timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  for (;;) {
    int r = posh__sync_wait(&e->xword, w, deadline, &e->xspin,
                            &e->xsleepers, 0); /* no owner to watch */
    /* Acquire: as is_set.  With the bit clear in w, only set() changes
     * the word (a clear of a clear flag writes nothing), so any change
     * means the event was set since we started, even if cleared again. */
    if (posh_atomic32_load_acquire(&e->xword) != w)
      return 0;
    if (r == POSH_ETIMEDOUT)
      return r;
  }
}
