/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of libposh's synchronisation primitives
 * (sync/): Lock, RLock, Semaphore (and BoundedSemaphore), Condition, Event,
 * Barrier and RWLock, shared by every process attached to a heap and robust
 * against the death of a process that holds or waits on them.
 *
 * Conventions (the same for every primitive; docs/sync.md has the details):
 *  - An object lives in a heap and is named by (heap, offset): functions
 *    take the process-local heap handle and the object's posh_off_t, which
 *    is the same in every process at whatever address it maps the heap.
 *    There is no process-local handle to open or close.
 *  - Every function returns 0 (or a documented non-negative value) or a
 *    negative POSH_E* code.  Bad input never crashes: a null offset or an
 *    uninitialised object gives POSH_EINVAL, an offset outside the heap
 *    POSH_EFAULT, an object of another type POSH_ETYPE.
 *  - Blocking calls take timeout_ns: < 0 (POSH_FOREVER) waits without limit,
 *    0 tries once, > 0 waits at most that long.  Not getting what was asked
 *    for in time is POSH_ETIMEDOUT, always (also for timeout 0).
 *  - Owners are threads: a Lock held by one thread cannot be released by
 *    another (POSH_EPERM), and the death of the owner (its process killed,
 *    or the thread exiting, or the process detaching) is detected through
 *    the heap's process registry within about 100 ms.
 *  - create functions take an optional name: when not NULL the object is
 *    also bound in the heap's directory (type tag POSH_SYNC_TAG(type)) so
 *    other processes can open it by name; POSH_EEXIST if the name is taken.
 */
#ifndef POSH_SYNC_H
#define POSH_SYNC_H

#include "posh.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Wait without a time limit. */
#define POSH_FOREVER ((int64_t)-1)

/* Object types.  The directory tag of a named object is POSH_SYNC_TAG(t). */
enum posh_sync_type {
  POSH_SYNC_LOCK = 1,
  POSH_SYNC_RLOCK = 2,
  POSH_SYNC_SEMAPHORE = 3, /* also BoundedSemaphore (POSH_SEM_BOUNDED) */
  POSH_SYNC_CONDITION = 4,
  POSH_SYNC_EVENT = 5,
  POSH_SYNC_BARRIER = 6,
  POSH_SYNC_RWLOCK = 7,
};
#define POSH_SYNC_TAG_BASE 0x53590000u /* "SY" */
#define POSH_SYNC_TAG(type) (POSH_SYNC_TAG_BASE | (uint32_t)(type))

/* ---------------------------------------------------------------------------
 * Common operations.
 * ------------------------------------------------------------------------- */
/* Type (enum posh_sync_type) of the object at obj, in *type_out. */
POSH_EXTERN int posh_sync_type(posh_heap_t *heap, posh_off_t obj,
                               uint32_t *type_out);
/* Look name up in the directory and check it names a live object of the
 * given type: POSH_ENOENT, POSH_ETYPE (bound to something else). */
POSH_EXTERN int posh_sync_open(posh_heap_t *heap, const char *name,
                               uint32_t type, posh_off_t *obj_out);
/* Bind one more name to an existing object (with its type tag). */
POSH_EXTERN int posh_sync_bind(posh_heap_t *heap, const char *name,
                               posh_off_t obj);
/* Destroy any sync object: unbinds every directory name bound to it, marks
 * it uninitialised and frees its memory.  A Lock, RLock or RWLock held by a
 * live thread gives POSH_EBUSY.  For the other types the caller guarantees
 * nobody uses the object any more.  A Condition created with its own lock
 * destroys that lock too. */
POSH_EXTERN int posh_sync_destroy(posh_heap_t *heap, posh_off_t obj);

/* ---------------------------------------------------------------------------
 * Lock: a non-recursive mutex (Python's Lock, but owned: only the holder may
 * release it).  On owner death the next acquirer gets POSH_EOWNERDEAD with
 * the lock held; it repairs the protected state and calls
 * posh_lock_consistent, or else the release makes the lock not recoverable
 * (every later acquire: POSH_ENOTRECOVERABLE).
 * ------------------------------------------------------------------------- */
POSH_EXTERN int posh_lock_create(posh_heap_t *heap, const char *name,
                                 unsigned flags, posh_off_t *lock_out);
POSH_EXTERN int posh_lock_open(posh_heap_t *heap, const char *name,
                               posh_off_t *lock_out);
POSH_EXTERN int posh_lock_destroy(posh_heap_t *heap, posh_off_t lock);
/* 0, POSH_EOWNERDEAD (acquired), POSH_ENOTRECOVERABLE, POSH_ETIMEDOUT,
 * POSH_EBUSY (the calling thread already holds it: would deadlock). */
POSH_EXTERN int posh_lock_acquire(posh_heap_t *heap, posh_off_t lock,
                                  int64_t timeout_ns);
/* 0 or POSH_EPERM (not held by the calling thread). */
POSH_EXTERN int posh_lock_release(posh_heap_t *heap, posh_off_t lock);
/* After POSH_EOWNERDEAD: declare the protected state repaired.  POSH_EPERM
 * if the caller does not hold the lock, POSH_EINVAL if it is consistent. */
POSH_EXTERN int posh_lock_consistent(posh_heap_t *heap, posh_off_t lock);
/* 1 if held (by anyone), 0 if free, or a negative code. */
POSH_EXTERN int posh_lock_locked(posh_heap_t *heap, posh_off_t lock);
/* 1 if held by the calling thread, 0 if not, or a negative code. */
POSH_EXTERN int posh_lock_owned(posh_heap_t *heap, posh_off_t lock);

/* ---------------------------------------------------------------------------
 * RLock: a recursive mutex.  The owner may acquire it again (the count goes
 * up, at most 2^31 - 1) and must release it as many times.  Owner death as
 * Lock (the count of the dead owner is dropped).
 * ------------------------------------------------------------------------- */
POSH_EXTERN int posh_rlock_create(posh_heap_t *heap, const char *name,
                                  unsigned flags, posh_off_t *rlock_out);
POSH_EXTERN int posh_rlock_open(posh_heap_t *heap, const char *name,
                                posh_off_t *rlock_out);
POSH_EXTERN int posh_rlock_destroy(posh_heap_t *heap, posh_off_t rlock);
/* 0, POSH_EOWNERDEAD, POSH_ENOTRECOVERABLE, POSH_ETIMEDOUT, POSH_EOVERFLOW
 * (recursion count at its maximum). */
POSH_EXTERN int posh_rlock_acquire(posh_heap_t *heap, posh_off_t rlock,
                                   int64_t timeout_ns);
POSH_EXTERN int posh_rlock_release(posh_heap_t *heap, posh_off_t rlock);
POSH_EXTERN int posh_rlock_consistent(posh_heap_t *heap, posh_off_t rlock);
/* Recursion count if the calling thread holds it, 0 if not. */
POSH_EXTERN int posh_rlock_owned(posh_heap_t *heap, posh_off_t rlock);
/* 1 if held (by anyone), 0 if free, or a negative code. */
POSH_EXTERN int posh_rlock_locked(posh_heap_t *heap, posh_off_t rlock);

/* ---------------------------------------------------------------------------
 * Semaphore.  POSH_SEM_BOUNDED makes a BoundedSemaphore: a release that
 * would raise the value above the initial value fails with POSH_EOVERFLOW
 * and changes nothing.  POSH_SEM_ROBUST tracks which thread holds which
 * units: units acquired by a thread that dies (or exits) without releasing
 * them are returned to the semaphore.  A release first gives back a unit
 * the releasing thread holds, else one held by another thread (a unit
 * handed on), else adds a new one.
 * ------------------------------------------------------------------------- */
enum posh_sem_flags {
  POSH_SEM_BOUNDED = 1u << 0,
  POSH_SEM_ROBUST = 1u << 1,
};
#define POSH_SEM_VALUE_MAX 0x7fffffff

/* value: 0..POSH_SEM_VALUE_MAX (POSH_EINVAL if negative). */
POSH_EXTERN int posh_sem_create(posh_heap_t *heap, const char *name, int value,
                                unsigned flags, posh_off_t *sem_out);
POSH_EXTERN int posh_sem_open(posh_heap_t *heap, const char *name,
                              posh_off_t *sem_out);
POSH_EXTERN int posh_sem_destroy(posh_heap_t *heap, posh_off_t sem);
/* Take one unit: 0, POSH_ETIMEDOUT. */
POSH_EXTERN int posh_sem_acquire(posh_heap_t *heap, posh_off_t sem,
                                 int64_t timeout_ns);
/* Give n >= 1 units: 0, POSH_EINVAL (n < 1), POSH_EOVERFLOW (bounded, or the
 * value would pass POSH_SEM_VALUE_MAX). */
POSH_EXTERN int posh_sem_release(posh_heap_t *heap, posh_off_t sem, int n);
/* Current value (a snapshot), or a negative code. */
POSH_EXTERN int posh_sem_value(posh_heap_t *heap, posh_off_t sem);
/* A bounded semaphore's bound (its initial value); POSH_SEM_VALUE_MAX for
 * one that is not bounded. */
POSH_EXTERN int posh_sem_bound(posh_heap_t *heap, posh_off_t sem);
/* Robust semaphores: return the units of dead holders now (acquire does it
 * by itself when it would otherwise sleep).  *returned may be NULL. */
POSH_EXTERN int posh_sem_reap(posh_heap_t *heap, posh_off_t sem,
                              unsigned *returned);

/* ---------------------------------------------------------------------------
 * Condition: wait/notify over a Lock or RLock of the same heap.  Waiting
 * releases the lock (all recursion levels of an RLock) and takes it back
 * before returning, also on timeout.  notify(n) lets n of the threads
 * waiting when it was called return (a later waiter never takes its
 * wake-up).  Waiters are not listed anywhere (counts under the lock and a
 * sequence counter on a futex), so a waiter that dies never stalls a
 * notify; it can make one later notify(1) wake two (a spurious wake-up), so
 * use posh_cond_wait_for or re-check the predicate.
 * ------------------------------------------------------------------------- */
/* lock: a Lock or RLock, or POSH_OFF_NULL to give the condition its own
 * RLock (destroyed with it). */
POSH_EXTERN int posh_cond_create(posh_heap_t *heap, const char *name,
                                 posh_off_t lock, unsigned flags,
                                 posh_off_t *cond_out);
POSH_EXTERN int posh_cond_open(posh_heap_t *heap, const char *name,
                               posh_off_t *cond_out);
POSH_EXTERN int posh_cond_destroy(posh_heap_t *heap, posh_off_t cond);
/* The condition's lock (a Lock or an RLock). */
POSH_EXTERN int posh_cond_lock(posh_heap_t *heap, posh_off_t cond,
                               posh_off_t *lock_out);
/* Acquire / release the condition's lock (as posh_lock_* or posh_rlock_*). */
POSH_EXTERN int posh_cond_acquire(posh_heap_t *heap, posh_off_t cond,
                                  int64_t timeout_ns);
POSH_EXTERN int posh_cond_release(posh_heap_t *heap, posh_off_t cond);
/* Caller holds the lock.  0 (notified, or spuriously woken), POSH_ETIMEDOUT,
 * POSH_EPERM (lock not held: nothing done); after the wait the lock is held
 * again, and its reacquisition may report POSH_EOWNERDEAD (held) or
 * POSH_ENOTRECOVERABLE (not held). */
POSH_EXTERN int posh_cond_wait(posh_heap_t *heap, posh_off_t cond,
                               int64_t timeout_ns);
/* Wait until pred(arg) returns non-zero (called with the lock held).
 * 0 when it did, POSH_ETIMEDOUT when it still does not at the deadline, or
 * the errors of posh_cond_wait. */
typedef int (*posh_predicate_fn)(void *arg);
POSH_EXTERN int posh_cond_wait_for(posh_heap_t *heap, posh_off_t cond,
                                   posh_predicate_fn pred, void *arg,
                                   int64_t timeout_ns);
/* Caller holds the lock (POSH_EPERM otherwise).  n >= 0 (POSH_EINVAL). */
POSH_EXTERN int posh_cond_notify(posh_heap_t *heap, posh_off_t cond, int n);
POSH_EXTERN int posh_cond_notify_all(posh_heap_t *heap, posh_off_t cond);

/* ---------------------------------------------------------------------------
 * Event: a flag that threads wait for.  A waiter returns 0 once the flag has
 * been set after it started waiting (even if cleared again since).
 * ------------------------------------------------------------------------- */
POSH_EXTERN int posh_event_create(posh_heap_t *heap, const char *name,
                                  unsigned flags, posh_off_t *event_out);
POSH_EXTERN int posh_event_open(posh_heap_t *heap, const char *name,
                                posh_off_t *event_out);
POSH_EXTERN int posh_event_destroy(posh_heap_t *heap, posh_off_t event);
POSH_EXTERN int posh_event_set(posh_heap_t *heap, posh_off_t event);
POSH_EXTERN int posh_event_clear(posh_heap_t *heap, posh_off_t event);
/* 1 if set, 0 if not, or a negative code. */
POSH_EXTERN int posh_event_is_set(posh_heap_t *heap, posh_off_t event);
/* 0 (set), POSH_ETIMEDOUT. */
POSH_EXTERN int posh_event_wait(posh_heap_t *heap, posh_off_t event,
                                int64_t timeout_ns);

/* ---------------------------------------------------------------------------
 * Barrier: parties threads wait until all have arrived.  A barrier breaks
 * (every waiter, and every later arrival until posh_barrier_reset, gets
 * POSH_EBROKEN) when it is aborted, when a waiter times out, when the
 * action fails, and when a waiting participant dies.
 * ------------------------------------------------------------------------- */
/* parties: 1..65535 (POSH_EINVAL otherwise). */
POSH_EXTERN int posh_barrier_create(posh_heap_t *heap, const char *name,
                                    int parties, unsigned flags,
                                    posh_off_t *barrier_out);
POSH_EXTERN int posh_barrier_open(posh_heap_t *heap, const char *name,
                                  posh_off_t *barrier_out);
POSH_EXTERN int posh_barrier_destroy(posh_heap_t *heap, posh_off_t barrier);
/* The action is run by the last thread to arrive, before any waiter is
 * released (a function pointer is process-local, so each process passes
 * its own: normally the same code everywhere).  Returning non-zero breaks
 * the barrier. */
typedef int (*posh_barrier_action_fn)(void *arg);
/* Wait for the other parties.  0 with *index_out (may be NULL) = arrival
 * index, 0..parties-1, distinct per waiter (parties-1 ran the action);
 * POSH_EBROKEN; POSH_ETIMEDOUT (this waiter timed out: the barrier is now
 * broken for the others). */
POSH_EXTERN int posh_barrier_wait(posh_heap_t *heap, posh_off_t barrier,
                                  int64_t timeout_ns,
                                  posh_barrier_action_fn action, void *arg,
                                  unsigned *index_out);
/* Break the barrier: waiters and later arrivals get POSH_EBROKEN. */
POSH_EXTERN int posh_barrier_abort(posh_heap_t *heap, posh_off_t barrier);
/* Back to empty and not broken; current waiters get POSH_EBROKEN. */
POSH_EXTERN int posh_barrier_reset(posh_heap_t *heap, posh_off_t barrier);
POSH_EXTERN int posh_barrier_parties(posh_heap_t *heap, posh_off_t barrier);
/* Threads waiting in the current cycle, or a negative code. */
POSH_EXTERN int posh_barrier_n_waiting(posh_heap_t *heap, posh_off_t barrier);
/* 1 if broken, 0 if not, or a negative code. */
POSH_EXTERN int posh_barrier_broken(posh_heap_t *heap, posh_off_t barrier);

/* ---------------------------------------------------------------------------
 * RWLock: many readers or one writer.  Fairness: a writer that arrives
 * closes the gate to new readers (writers do not starve), and readers that a
 * writer kept out enter before the next writer closes the gate again
 * (readers do not starve).  Writer death as Lock; readers that die are
 * subtracted.  Readers may re-enter (recursive read); a writer may not
 * read-lock or write-lock again (POSH_EBUSY), and a reader may not upgrade
 * (POSH_EBUSY).
 * ------------------------------------------------------------------------- */
POSH_EXTERN int posh_rwlock_create(posh_heap_t *heap, const char *name,
                                   unsigned flags, posh_off_t *rw_out);
POSH_EXTERN int posh_rwlock_open(posh_heap_t *heap, const char *name,
                                 posh_off_t *rw_out);
POSH_EXTERN int posh_rwlock_destroy(posh_heap_t *heap, posh_off_t rw);
/* 0, POSH_ETIMEDOUT, POSH_ENOTRECOVERABLE, POSH_EBUSY, or POSH_EOWNERDEAD:
 * the last writer died; the caller now holds the lock for WRITING so it can
 * repair (posh_rwlock_consistent), and releases it with posh_rwlock_unlock. */
POSH_EXTERN int posh_rwlock_rdlock(posh_heap_t *heap, posh_off_t rw,
                                   int64_t timeout_ns);
/* 0, POSH_EOWNERDEAD (held for writing), POSH_ENOTRECOVERABLE,
 * POSH_ETIMEDOUT, POSH_EBUSY. */
POSH_EXTERN int posh_rwlock_wrlock(posh_heap_t *heap, posh_off_t rw,
                                   int64_t timeout_ns);
/* Release the write side if the caller holds it, else one read hold;
 * POSH_EPERM if it holds neither. */
POSH_EXTERN int posh_rwlock_unlock(posh_heap_t *heap, posh_off_t rw);
POSH_EXTERN int posh_rwlock_consistent(posh_heap_t *heap, posh_off_t rw);
/* Readers inside now (a snapshot; dead readers not yet subtracted count). */
POSH_EXTERN int posh_rwlock_readers(posh_heap_t *heap, posh_off_t rw);

#ifdef __cplusplus
}
#endif

#endif /* POSH_SYNC_H */
