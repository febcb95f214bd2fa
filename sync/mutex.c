/* SPDX-License-Identifier: MIT */
/*
 * This file contains Lock and RLock: process-shared mutexes on the robust
 * lock word of lockword.c (owner token + WAITERS, Drepper's futex mutex,
 * owner death found through the registry).  RLock adds a recursion count
 * that only the owner touches.  It also gives condition.c a way to release
 * either kind of lock completely around a wait and to take it back.
 */
#include "sync_internal.h"

/* Map posh__lock_try's "busy" for a zero timeout: the caller's own lock is
 * a would-be deadlock (EBUSY), anyone else's a timeout. */
static int try_once(posh_heap_t *heap, posh__lockword_t *lw, uint32_t tok) {
  int r = posh__lock_try(heap, lw, tok);
  if (r == POSH_EBUSY && posh__lock_owner(lw) != tok)
    r = POSH_ETIMEDOUT;
  return r;
}

static inline int take(posh_heap_t *heap, posh__lockword_t *lw, uint32_t tok,
                       int64_t timeout_ns) {
  int r = posh__sync_acquire_fast(lw, tok);
  if (posh_likely(r != 1))
    return r;
  if (timeout_ns == 0)
    return try_once(heap, lw, tok);
  return posh__lock_acquire(heap, lw, tok, timeout_ns);
}

/* Mark a lock acquired after an owner death consistent. */
static int make_consistent(posh__lockword_t *lw, uint32_t tok) {
  if (posh__lock_owner(lw) != tok)
    return POSH_EPERM;
  /* Relaxed: the state is written only by the holder, which we are. */
  if (posh_atomic32_load_relaxed(&lw->xstate) != POSH_LOCK_OWNER_DIED)
    return POSH_EINVAL;
  posh__lock_consistent(lw);
  return 0;
}

/* ------------------------------------------------------------------------
 * Lock.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_lock_create(posh_heap_t *heap, const char *name,
                                 unsigned flags, posh_off_t *lock_out) {
  int err = 0;
  if (!lock_out || flags != 0)
    return POSH_EINVAL;
  posh__lock_shared_t *l =
      posh__sync_alloc(heap, POSH_SYNC_LOCK, 0, sizeof *l, &err);
  if (!l)
    return err;
  posh__lock_init(&l->lw);
  return posh__sync_publish(heap, l, name, lock_out);
}

POSH_EXTERN int posh_lock_open(posh_heap_t *heap, const char *name,
                               posh_off_t *lock_out) {
  return posh_sync_open(heap, name, POSH_SYNC_LOCK, lock_out);
}

POSH_EXTERN int posh_lock_destroy(posh_heap_t *heap, posh_off_t lock) {
  return posh__sync_destroy_typed(heap, lock, POSH_SYNC_LOCK);
}

POSH_EXTERN int posh_lock_acquire(posh_heap_t *heap, posh_off_t lock,
                                  int64_t timeout_ns) {
  posh__lock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, lock, POSH_SYNC_LOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return take(heap, &l->lw, tok, timeout_ns);
}

POSH_EXTERN int posh_lock_release(posh_heap_t *heap, posh_off_t lock) {
  posh__lock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, lock, POSH_SYNC_LOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return posh__sync_release_fast(&l->lw, tok);
}

POSH_EXTERN int posh_lock_consistent(posh_heap_t *heap, posh_off_t lock) {
  posh__lock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, lock, POSH_SYNC_LOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return make_consistent(&l->lw, tok);
}

POSH_EXTERN int posh_lock_locked(posh_heap_t *heap, posh_off_t lock) {
  posh__lock_shared_t *l;
  int err = posh__sync_get(heap, lock, POSH_SYNC_LOCK, (void **)&l);
  if (err)
    return err;
  return posh__lock_owner(&l->lw) != 0;
}

POSH_EXTERN int posh_lock_owned(posh_heap_t *heap, posh_off_t lock) {
  posh__lock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, lock, POSH_SYNC_LOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return posh__lock_owner(&l->lw) == tok;
}

/* ------------------------------------------------------------------------
 * RLock.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_rlock_create(posh_heap_t *heap, const char *name,
                                  unsigned flags, posh_off_t *rlock_out) {
  int err = 0;
  if (!rlock_out || flags != 0)
    return POSH_EINVAL;
  posh__rlock_shared_t *l =
      posh__sync_alloc(heap, POSH_SYNC_RLOCK, 0, sizeof *l, &err);
  if (!l)
    return err;
  posh__lock_init(&l->lw);
  return posh__sync_publish(heap, l, name, rlock_out);
}

POSH_EXTERN int posh_rlock_open(posh_heap_t *heap, const char *name,
                                posh_off_t *rlock_out) {
  return posh_sync_open(heap, name, POSH_SYNC_RLOCK, rlock_out);
}

POSH_EXTERN int posh_rlock_destroy(posh_heap_t *heap, posh_off_t rlock) {
  return posh__sync_destroy_typed(heap, rlock, POSH_SYNC_RLOCK);
}

static int rlock_take(posh_heap_t *heap, posh__rlock_shared_t *l,
                      uint32_t tok, int64_t timeout_ns) {
  /* Only this thread can have stored its own token in the word, so an
   * equal owner means we hold it (no ordering needed). */
  if (posh__lock_owner(&l->lw) == tok) {
    if (l->count >= (uint32_t)INT32_MAX)
      return POSH_EOVERFLOW;
    l->count++;
    return 0;
  }
  int r = take(heap, &l->lw, tok, timeout_ns);
  if (r == 0 || r == POSH_EOWNERDEAD)
    l->count = 1; /* a dead owner's count goes with it */
  return r;
}

POSH_EXTERN int posh_rlock_acquire(posh_heap_t *heap, posh_off_t rlock,
                                   int64_t timeout_ns) {
  posh__rlock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, rlock, POSH_SYNC_RLOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return rlock_take(heap, l, tok, timeout_ns);
}

POSH_EXTERN int posh_rlock_release(posh_heap_t *heap, posh_off_t rlock) {
  posh__rlock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, rlock, POSH_SYNC_RLOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  if (posh__lock_owner(&l->lw) != tok)
    return POSH_EPERM;
  if (l->count > 1) {
    l->count--;
    return 0;
  }
  l->count = 0;
  return posh__sync_release_fast(&l->lw, tok);
}

POSH_EXTERN int posh_rlock_consistent(posh_heap_t *heap, posh_off_t rlock) {
  posh__rlock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, rlock, POSH_SYNC_RLOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return make_consistent(&l->lw, tok);
}

POSH_EXTERN int posh_rlock_owned(posh_heap_t *heap, posh_off_t rlock) {
  posh__rlock_shared_t *l;
  uint32_t tok;
  int err = posh__sync_get_self(heap, rlock, POSH_SYNC_RLOCK, (void **)&l, &tok);
  if (posh_unlikely(err))
    return err;
  return posh__lock_owner(&l->lw) == tok ? (int)l->count : 0;
}

POSH_EXTERN int posh_rlock_locked(posh_heap_t *heap, posh_off_t rlock) {
  posh__rlock_shared_t *l;
  int err = posh__sync_get(heap, rlock, POSH_SYNC_RLOCK, (void **)&l);
  if (err)
    return err;
  return posh__lock_owner(&l->lw) != 0;
}

/* ------------------------------------------------------------------------
 * For condition.c and common.c.
 * ---------------------------------------------------------------------- */
/* The lock word (and RLock, or NULL for a Lock) at lock_off. */
static int resolve(posh_heap_t *heap, posh_off_t lock_off,
                   posh__lockword_t **lw, posh__rlock_shared_t **rl) {
  void *p;
  int r = posh__sync_get(heap, lock_off, POSH_SYNC_LOCK, &p);
  if (r == 0) {
    *lw = &((posh__lock_shared_t *)p)->lw;
    *rl = NULL;
    return 0;
  }
  if (r != POSH_ETYPE)
    return r;
  r = posh__sync_get(heap, lock_off, POSH_SYNC_RLOCK, &p);
  if (r)
    return r;
  *rl = p;
  *lw = &(*rl)->lw;
  return 0;
}

int posh__mutex_held(posh_heap_t *heap, posh_off_t lock_off, uint32_t token) {
  posh__lockword_t *lw;
  posh__rlock_shared_t *rl;
  if (resolve(heap, lock_off, &lw, &rl))
    return 0;
  return posh__lock_owner(lw) == token;
}

int posh__mutex_release_all(posh_heap_t *heap, posh_off_t lock_off,
                            uint32_t token, uint32_t *saved) {
  posh__lockword_t *lw;
  posh__rlock_shared_t *rl;
  int r = resolve(heap, lock_off, &lw, &rl);
  if (r)
    return r;
  if (posh__lock_owner(lw) != token)
    return POSH_EPERM;
  *saved = rl ? rl->count : 1;
  if (rl)
    rl->count = 0;
  return posh__lock_release(lw, token);
}

int posh__mutex_reacquire(posh_heap_t *heap, posh_off_t lock_off,
                          uint32_t token, uint32_t saved) {
  posh__lockword_t *lw;
  posh__rlock_shared_t *rl;
  int r = resolve(heap, lock_off, &lw, &rl);
  if (r)
    return r;
  r = posh__lock_acquire(heap, lw, token, -1);
  if ((r == 0 || r == POSH_EOWNERDEAD) && rl)
    rl->count = saved;
  return r;
}

int posh__mutex_destroy(posh_heap_t *heap, posh_off_t lock_off) {
  posh__lockword_t *lw;
  posh__rlock_shared_t *rl;
  int r = resolve(heap, lock_off, &lw, &rl);
  if (r)
    return r;
  return posh_sync_destroy(heap, lock_off);
}

int posh__lock_destroy_check(posh_heap_t *heap, void *obj, uint32_t type) {
  posh__lockword_t *lw = type == POSH_SYNC_LOCK
                             ? &((posh__lock_shared_t *)obj)->lw
                             : &((posh__rlock_shared_t *)obj)->lw;
  uint32_t owner = posh__lock_owner(lw);
  if (owner != 0 && posh__token_alive(heap, owner, 1))
    return POSH_EBUSY;
  return 0;
}
