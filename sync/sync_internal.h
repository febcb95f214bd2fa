/* SPDX-License-Identifier: MIT */
/*
 * This file contains the internal layout of the sync/ objects: the common
 * header every object starts with (magic, type, size), the shared structure
 * of each primitive, and the helpers the sync/ sources share (argument
 * validation, creation and naming, waiting with a spin and a deadline).
 *
 * Every object lives in a heap and is reached by offset; fields of these
 * structures are shared by all attached processes.  Atomic fields start
 * with `x`; beside each field is what protects it.
 */
#ifndef POSH_SYNC_INTERNAL_H
#define POSH_SYNC_INTERNAL_H

#include "internal.h"
#include "posh/sync.h"

/* ------------------------------------------------------------------------
 * Common header.
 * ---------------------------------------------------------------------- */
#define POSH__SYNC_MAGIC 0x434e5953u /* "SYNC" */

/* Creation flags kept in the header (low bits are per type). */
#define POSH__SYNC_OWNS_LOCK (1u << 15) /* Condition: lock made by create */

typedef struct posh__sync_hdr {
  /* POSH__SYNC_MAGIC while the object is live, 0 before create finished
   * and after destroy.  Synchronization: release-store by create after
   * every other field (an object is published only by that, by the name
   * bind that follows it, or by passing the offset on); destroy clears it. */
  posh_atomic32_t xmagic;
  uint16_t type;  /* enum posh_sync_type; immutable */
  uint16_t flags; /* creation flags; immutable */
  uint32_t size;  /* bytes of the object; immutable */
  uint32_t pad;
} posh__sync_hdr_t;
_Static_assert(sizeof(posh__sync_hdr_t) == 16, "sync header is 16 bytes");

/* ------------------------------------------------------------------------
 * Lock and RLock (mutex.c).
 * ---------------------------------------------------------------------- */
typedef struct posh__lock_shared {
  posh__sync_hdr_t hdr;
  /* Owner token | WAITERS; see lockword.c.  Synchronization: its own. */
  posh__lockword_t lw;
} posh__lock_shared_t;

typedef struct posh__rlock_shared {
  posh__sync_hdr_t hdr;
  posh__lockword_t lw; /* as Lock */
  /* Recursion depth of the current owner.  Protected by lw: read and
   * written only by the thread that holds it (a new owner, also one that
   * takes the lock from a dead owner, sets it to 1). */
  uint32_t count;
  uint32_t pad;
} posh__rlock_shared_t;

/* ------------------------------------------------------------------------
 * Semaphore (semaphore.c).
 * Invariant (robust): value + sum(holders[].count) = initial value + units
 * added by releases that matched no holder.  Bounded: that sum <= bound.
 * ---------------------------------------------------------------------- */
/* One robust holder entry per registry slot: the token of the slot
 * incarnation that holds units, and how many. */
typedef struct posh__sem_holder {
  uint32_t token;
  uint32_t count;
} posh__sem_holder_t;

/* Undo record of the robust table (see semaphore.c): the old contents of
 * what the holder of table_lock is changing, so a successor can roll a
 * half-done change back. */
typedef struct posh__sem_undo {
  uint32_t active; /* 1 while the change is in progress */
  uint32_t value;  /* value before the change */
  uint32_t slot;   /* holder entry being changed */
  uint32_t pad;
  posh__sem_holder_t entry; /* its contents before the change */
} posh__sem_undo_t;

typedef struct posh__sem_shared {
  posh__sync_hdr_t hdr;
  /* The value; the futex word acquirers sleep on.  Synchronization:
   * atomic.  Plain semaphores change it by CAS only; robust ones change it
   * only while holding table_lock (still with atomic stores, because
   * sleepers read it without the lock). */
  posh_atomic32_t xvalue;
  /* Threads asleep on xvalue (a hint: a waiter that died leaves it too
   * high, which costs a spurious wake-up syscall, never a lost one).
   * Synchronization: atomic fetch-add by waiters. */
  posh_atomic32_t xsleepers;
  uint32_t bound;   /* bounded: initial value; immutable */
  uint32_t nslots;  /* robust: holder entries (registry slots); immutable */
  /* Adaptive spin before sleeping (see posh__sync_wait): a heuristic
   * shared by the waiters.  Synchronization: relaxed loads and stores
   * (a lost update only makes one wait spin more or less). */
  posh_atomic32_t xspin;
  uint32_t pad_spin;
  /* ---- robust only (nslots > 0): */
  /* Protects undo, holders[] and holder_bits[], and every change of
   * xvalue. */
  posh__lockword_t table_lock;
  posh__sem_undo_t undo; /* table_lock */
  /* Followed by: uint64_t holder_bits[(nslots + 63) / 64] (bit i set iff
   * holders[i].count > 0; table_lock), then posh__sem_holder_t
   * holders[nslots] (table_lock). */
} posh__sem_shared_t;
_Static_assert(sizeof(posh__sem_shared_t) % 8 == 0, "arrays after it stay aligned");

/* ------------------------------------------------------------------------
 * Condition and Event (condition.c).
 * ---------------------------------------------------------------------- */
typedef struct posh__cond_shared {
  posh__sync_hdr_t hdr;
  posh_off_t lock; /* a Lock or RLock of the same heap; immutable */
  /* Notification sequence: bumped by every notify; waiters sleep while it
   * still has the value they read (with the lock held) before waiting.
   * Synchronization: atomic fetch-add by notifiers, which hold the lock. */
  posh_atomic32_t xseq;
  /* Threads asleep in the kernel on xseq (a hint that lets notify skip the
   * wake-up syscall; a dead waiter leaves it too high, costing a syscall,
   * never a stall).  Synchronization: atomic fetch-add. */
  posh_atomic32_t xsleepers;
  /* Adaptive spin before sleeping (see posh__sync_wait): a heuristic
   * shared by the waiters.  Synchronization: relaxed loads and stores
   * (a lost update only makes one wait spin more or less). */
  posh_atomic32_t xspin;
  /* Who may return from a wait as notified (the scheme of glibc's condition
   * variable before 2.25, kept by counts, not by a list of waiters): a wait
   * counts itself in `entered`; notify(n) grants min(n, entered - granted)
   * wake-ups; a woken waiter takes one if `granted` moved since it entered
   * and `consumed` lags `granted` (so a notify is never taken by a waiter
   * that arrived after it); a waiter that times out counts itself both
   * granted and consumed (it leaves); notify_all sets both to `entered` and
   * bumps `broadcasts`, which every waiter that saw the old value obeys.  A
   * waiter that dies stays counted, which can make one later notify(1) wake
   * two (a spurious wake-up), never lose one; notify_all resets that.
   * Synchronization: plain fields, read and written only with the
   * condition's lock held.  uint32 arithmetic wraps; only differences and
   * inequalities are used. */
  uint32_t broadcasts;
  uint32_t entered;
  uint32_t granted;
  uint32_t consumed;
  uint32_t pad;
} posh__cond_shared_t;
_Static_assert(sizeof(posh__cond_shared_t) % 8 == 0, "arrays after it stay aligned");

/* Event word: generation << 1 | set bit.  set() bumps the generation when
 * it raises the bit, clear() drops the bit, so a waiter that saw the word
 * with the bit clear knows that any change of the word is a set(). */
#define POSH__EVENT_SET 1u
typedef struct posh__event_shared {
  posh__sync_hdr_t hdr;
  /* Synchronization: atomic (CAS by set and clear); the futex word. */
  posh_atomic32_t xword;
  /* Threads asleep on xword (hint, as Condition).  Atomic fetch-add. */
  posh_atomic32_t xsleepers;
  /* Adaptive spin before sleeping (see posh__sync_wait): a heuristic
   * shared by the waiters.  Synchronization: relaxed loads and stores
   * (a lost update only makes one wait spin more or less). */
  posh_atomic32_t xspin;
  uint32_t pad_spin;
} posh__event_shared_t;
_Static_assert(sizeof(posh__event_shared_t) % 8 == 0, "arrays after it stay aligned");

/* ------------------------------------------------------------------------
 * Barrier (barrier.c).
 * Word: generation << 1 | broken bit.  A trip or a reset ends a generation
 * (generation + 1, bit clear) and records in history bit (gen % 64) whether
 * it ended by a trip (1) or a reset (0); abort and breaking set the bit
 * without ending the generation.
 * ---------------------------------------------------------------------- */
#define POSH__BARRIER_BROKEN 1u
#define POSH__BARRIER_MAX_PARTIES 65535
typedef struct posh__barrier_shared {
  posh__sync_hdr_t hdr;
  /* Serialises arrivals, trips, aborts and resets.  A holder that dies is
   * a participant that died: its successor breaks the barrier. */
  posh__lockword_t lock;
  /* Generation | broken; the futex word waiters sleep on.
   * Synchronization: written under lock with release stores (after the
   * history bit it publishes), read by waiters without the lock (acquire). */
  posh_atomic32_t xword;
  /* Threads asleep on xword (hint, as Condition).  Atomic fetch-add. */
  posh_atomic32_t xsleepers;
  /* How each of the last 64 generations ended (bit g % 64: 1 = tripped).
   * Synchronization: written under lock before xword is released;
   * waiters read it (atomically) after their acquire-load of xword. */
  posh_atomic_t xhistory;
  uint32_t parties; /* immutable */
  uint32_t count;   /* lock: threads arrived in this generation */
  /* Adaptive spin before sleeping (see posh__sync_wait): a heuristic
   * shared by the waiters.  Synchronization: relaxed loads and stores
   * (a lost update only makes one wait spin more or less). */
  posh_atomic32_t xspin;
  uint32_t pad_spin;
  /* Followed by uint32_t tokens[parties]: tokens of the arrived threads of
   * this generation, by arrival index (lock; read by waiters under it). */
} posh__barrier_shared_t;
_Static_assert(sizeof(posh__barrier_shared_t) % 8 == 0, "arrays after it stay aligned");

/* ------------------------------------------------------------------------
 * RWLock (rwlock.c).
 * Gate word: epoch << 3 | NOTREC | RWAITERS | CLOSED.  CLOSED while a
 * writer holds (or is about to hold) the write side; RWAITERS when a reader
 * may sleep on the gate; NOTREC once the lock is not recoverable.
 * Reader entries: one per registry slot, 64 bits: token in the low half,
 * count (31 bits) | BLOCKED in the high half; the entries are the truth
 * about who reads (no aggregate counter that a dead reader could leave
 * wrong).
 * ---------------------------------------------------------------------- */
#define POSH__RW_CLOSED 1u
#define POSH__RW_RWAITERS 2u
#define POSH__RW_NOTREC 4u
#define POSH__RW_EPOCH_SHIFT 3
#define POSH__RW_BLOCKED (1ull << 63)
#define POSH__RW_COUNT_MASK 0x7fffffff00000000ull
#define POSH__RW_COUNT_ONE (1ull << 32)

typedef struct posh__rwlock_shared {
  posh__sync_hdr_t hdr;
  /* The write side: writers serialise on it, and it carries the writer's
   * token for owner-death recovery.  Synchronization: its own. */
  posh__lockword_t wlock;
  /* Gate.  Synchronization: written by the holder of wlock (release /
   * full-barrier stores), CAS by readers to add RWAITERS; futex word of
   * blocked readers. */
  posh_atomic32_t xgate;
  /* Bumped by a reader that leaves or steps back while the gate is closed;
   * the writer waiting for readers sleeps on it.  Atomic fetch-add. */
  posh_atomic32_t xrseq;
  /* 1 while the writer may sleep on xrseq (hint; written by the wlock
   * holder). */
  posh_atomic32_t xwsleep;
  uint32_t nslots; /* reader entries = the heap's registry slots; immutable */
  /* Adaptive spin before sleeping (see posh__sync_wait): a heuristic
   * shared by the waiters.  Synchronization: relaxed loads and stores
   * (a lost update only makes one wait spin more or less). */
  posh_atomic32_t xspin;
  uint32_t pad_spin;
  /* Followed by posh_atomic_t xbits[(nslots + 63) / 64] (bit i: entry i may
   * be non-zero; set by the slot's reader before it announces itself, never
   * cleared by anyone else), then posh_atomic_t xentries[nslots] (written
   * by the slot's own thread with full barriers; a dead token's entry is
   * cleared by CAS). */
} posh__rwlock_shared_t;
_Static_assert(sizeof(posh__rwlock_shared_t) % 8 == 0, "arrays after it stay aligned");

/* ------------------------------------------------------------------------
 * Helpers (common.c).
 * ---------------------------------------------------------------------- */
/* Spin before a futex sleep, in rounds of one pause (~19 ns on this
 * machine kind).  A wake-up round trip between processes costs ~25 µs
 * asleep and ~1 µs spinning, but a spinner also takes the CPU its partner
 * may need on a loaded machine.  So each object adapts its budget: a spin
 * that succeeds after k rounds raises it to at least 2k + MIN, a spin that
 * fails halves it (down to MIN), and every PROBE-th wait after failures
 * spins the full MAX once, so waiters that all fell back to sleeping find
 * their way back to spinning when the machine is quiet again.  Tuned with
 * bench/bench_sync. */
#define POSH__SPIN_MIN 16u
#define POSH__SPIN_MAX 512u
#define POSH__SPIN_PROBE 64u
/* Fixed spin where there is no adaptive state. */
#define POSH__SYNC_SPIN 256u

/* Validate (heap, obj) and return the object: POSH_EINVAL (null heap or
 * offset, uninitialised object), POSH_EDETACHED, POSH_EFAULT (offset out of
 * the heap or misaligned), POSH_ETYPE (another sync type). */
static inline int posh__sync_get(posh_heap_t *heap, posh_off_t obj,
                                 uint32_t type, void **out) {
  if (posh_unlikely(heap == NULL))
    return POSH_EINVAL;
  if (posh_unlikely(heap->detached))
    return POSH_EDETACHED;
  if (posh_unlikely(obj.v == 0))
    return POSH_EINVAL;
  if (posh_unlikely(obj.v < POSH_HEADER_SIZE || (obj.v & 15) != 0 ||
                    obj.v > heap->view.capacity - sizeof(posh__sync_hdr_t)))
    return POSH_EFAULT;
  posh__sync_hdr_t *h = (posh__sync_hdr_t *)(heap->view.base + obj.v);
  /* Relaxed load is enough: the offset reached us through the directory's
   * seqlock (acquire), a syscall or our own create, all of which order the
   * creator's release-store of the magic and the fields before it. */
  if (posh_unlikely(posh_atomic32_load_relaxed(&h->xmagic) != POSH__SYNC_MAGIC))
    return POSH_EINVAL;
  if (posh_unlikely(h->type != type))
    return POSH_ETYPE;
  if (posh_unlikely(h->size > heap->view.capacity - obj.v))
    return POSH_ECORRUPT;
  *out = h;
  return 0;
}

/* The calling thread's token (0 with *err set on failure). */
static inline uint32_t posh__sync_token(posh_heap_t *heap, int *err) {
  posh__tld_t *t = posh__tld_get(heap, err);
  return t ? t->token : 0;
}

/* posh_sync_destroy after checking that obj is of this type (POSH_ETYPE). */
int posh__sync_destroy_typed(posh_heap_t *heap, posh_off_t obj, uint32_t type);

/* posh__sync_get, then the calling thread's token. */
static inline int posh__sync_get_self(posh_heap_t *heap, posh_off_t obj,
                                      uint32_t type, void **out, uint32_t *tok) {
  int err = posh__sync_get(heap, obj, type, out);
  if (posh_unlikely(err))
    return err;
  *tok = posh__sync_token(heap, &err);
  return *tok ? 0 : err;
}

/* Inline fast paths over lockword.c for the uncontended case, so a Lock
 * costs what its two atomic operations cost.  Anything but "free and
 * consistent" / "ours, no waiters, consistent" goes to lockword.c; the
 * state check after the CAS mirrors lockword.c's lock_acquired (keep them
 * in step). */
/* 1 when not taken (call posh__lock_acquire), else 0, POSH_EOWNERDEAD
 * (taken) or POSH_ENOTRECOVERABLE (given back). */
static inline int posh__sync_acquire_fast(posh__lockword_t *lw, uint32_t tok) {
  /* Test before test-and-set: a busy lock costs no failed CAS here (the
   * slow path starts with its own).  Full-barrier CAS: acquire for the
   * critical section. */
  if (posh_atomic32_load_relaxed(&lw->xword) != 0 ||
      posh_atomic32_cas_full(&lw->xword, 0, tok) != 0)
    return 1;
  /* Acquire: pairs with the release-store of the state by the holder that
   * changed it (as lockword.c). */
  uint32_t st = posh_atomic32_load_acquire(&lw->xstate);
  if (posh_likely(st == POSH_LOCK_CONSISTENT))
    return 0;
  if (st == POSH_LOCK_OWNER_DIED)
    return POSH_EOWNERDEAD;
  posh__lock_release(lw, tok); /* not recoverable: nobody may hold it */
  return POSH_ENOTRECOVERABLE;
}
static inline int posh__sync_release_fast(posh__lockword_t *lw, uint32_t tok) {
  /* Relaxed: the state is written only by the holder; if that is not us
   * the CAS below fails and lockword.c reports EPERM. */
  if (posh_likely(posh_atomic32_load_relaxed(&lw->xstate) == POSH_LOCK_CONSISTENT) &&
      posh_likely(posh_atomic32_cas_full(&lw->xword, tok, 0) == tok))
    return 0; /* full-barrier CAS: releases the critical section */
  return posh__lock_release(lw, tok); /* waiters to wake, or not ours */
}

/* Allocate and zero an object of `size` bytes (64-byte aligned), fill its
 * header except the magic.  NULL with *err set on failure. */
void *posh__sync_alloc(posh_heap_t *heap, uint32_t type, uint32_t flags,
                       size_t size, int *err);
/* Publish a filled object (release-store of the magic), bind name if not
 * NULL (on failure the object is freed) and return its offset. */
int posh__sync_publish(posh_heap_t *heap, void *obj, const char *name,
                       posh_off_t *out);
/* Unpublish and free an object (no checks). */
void posh__sync_free(posh_heap_t *heap, void *obj);
/* Remaining time to a deadline (0 = none) as a timeout: -1 for none, 0 when
 * it has passed. */
int64_t posh__sync_remaining(uint64_t deadline);
/* Wait while *word == expected: spin (adaptively with the state *spin, or
 * POSH__SYNC_SPIN rounds when it is NULL), then sleep, counted in
 * *sleepers (may be NULL) while asleep.  With `backstop` the sleep lasts
 * at most one liveness period (for callers that check someone's
 * liveness); without it and without a deadline it has no timer at all.
 * 0 (changed or spurious), POSH_ETIMEDOUT, or POSH_EAGAIN (a backstop
 * period passed: check liveness, call again).
 * Waker side: change the word with a full barrier, then wake if
 * *sleepers != 0; the sleeper's full-barrier increment comes before the
 * kernel's compare of the word, so one of the two sees the other. */
int posh__sync_wait(posh_atomic32_t *word, uint32_t expected,
                    uint64_t deadline, posh_atomic32_t *spin,
                    posh_atomic32_t *sleepers, int backstop);
/* Take an internal lock word (barrier, semaphore table): calls repair(obj)
 * and makes the word consistent again when its holder died.  deadline as
 * posh__sync_wait.  0 or POSH_ETIMEDOUT / POSH_ENOTRECOVERABLE. */
int posh__sync_lock_internal(posh_heap_t *heap, posh__lockword_t *lw,
                             uint32_t token, uint64_t deadline,
                             void (*repair)(posh_heap_t *, void *), void *obj);

/* mutex.c: used by condition.c to wait on either kind of lock. */
/* Release the lock at lock_off completely (saving an RLock's count in
 * *saved).  POSH_EPERM if the caller does not hold it. */
int posh__mutex_release_all(posh_heap_t *heap, posh_off_t lock_off,
                            uint32_t token, uint32_t *saved);
/* Take it back (forever) and restore the count. */
int posh__mutex_reacquire(posh_heap_t *heap, posh_off_t lock_off,
                          uint32_t token, uint32_t saved);
/* 1 if the calling thread holds the Lock/RLock at lock_off. */
int posh__mutex_held(posh_heap_t *heap, posh_off_t lock_off, uint32_t token);
int posh__mutex_destroy(posh_heap_t *heap, posh_off_t lock_off);

/* Per-type destroy checks (return POSH_EBUSY to refuse). */
int posh__lock_destroy_check(posh_heap_t *heap, void *obj, uint32_t type);
int posh__rwlock_destroy_check(posh_heap_t *heap, void *obj);

#endif /* POSH_SYNC_INTERNAL_H */
