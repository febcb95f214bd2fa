/* SPDX-License-Identifier: MIT */
/*
 * This file contains the shared layout of the Queue object (objects/queue.c):
 * the slot word encoding, the ring slot, and the queue's shared struct.  It
 * is separate so that tests can build exact crash states (a slot claimed or
 * taken by a process that is then killed).
 */
#ifndef POSH_QUEUE_INTERNAL_H
#define POSH_QUEUE_INTERNAL_H

#include "object_internal.h"
#include "posh/queue.h"

/* ------------------------------------------------------------------------
 * Layout.
 * ---------------------------------------------------------------------- */
enum {
  POSH__Q_EMPTY = 0,
  POSH__Q_CLAIMED = 1,
  POSH__Q_FULL = 2,
  POSH__Q_TAKEN = 3,
};

static inline uint64_t posh__q_word(uint32_t lap, unsigned st, uint32_t tok) {
  return (uint64_t)lap << 32 | (uint64_t)st << 30 | (tok & POSH_TOKEN_MASK);
}
static inline uint32_t posh__q_lap(uint64_t w) { return (uint32_t)(w >> 32); }
static inline unsigned posh__q_state(uint64_t w) {
  return (unsigned)(w >> 30) & 3u;
}
static inline uint32_t posh__q_token(uint64_t w) {
  return (uint32_t)w & POSH_TOKEN_MASK;
}

/* Slot meta word: payload length in the low 48 bits, flags above. */
#define POSH__Q_META_LEN_MASK ((1ull << 48) - 1)
#define POSH__Q_META_LARGE                                                     \
  (1ull << 48) /* payload in the heap block at data[0..8) */
#define POSH__Q_META_COUNTED                                                   \
  (1ull << 49)                          /* counted in xunfinished (joinable) */
#define POSH__Q_META_BYTES (1ull << 50) /* counted in xbytes (byte bound) */

/* One ring slot (slot_size bytes, a multiple of the cache line).
 * Invariant: meta == 0 whenever the slot is EMPTY. */
typedef struct posh__queue_slot {
  /* lap | state | token (see the file comment).  Synchronization: atomic;
   * every transition is a full-barrier CAS by the thread that owns the
   * slot in its current state (or that took it over from a dead one). */
  posh_atomic_t xword;
  /* Length and META_* flags.  Written only by the owner of the slot
   * (claimant, taker, repairer) with plain stores, in the order the
   * repair relies on (compiler barriers); published by the FULL CAS. */
  uint64_t meta;
  /* Inline payload (slot_size - 16 bytes) or, with POSH__Q_META_LARGE, the
   * offset of the payload's heap block.  Same protection as meta. */
  unsigned char data[];
} posh__queue_slot_t;

#define POSH__Q_SLOT_HDR 16u

/* Large-block cache: entries, and the smallest block worth caching. */
#define POSH__Q_BLK_CACHE 8
#define POSH__Q_BLK_CACHE_MIN (64u * 1024)

/* Invariants: xhead <= (the first position not yet taken or skipped) and
 * xtail <= (the first position not yet claimed); both only grow; every
 * position below xtail has been claimed; max_messages <= capacity. */
typedef struct posh__queue_shared {
  posh__obj_hdr_t hdr;
  /* ---- read-mostly line: immutable options, and the closed flag */
  uint32_t capacity;     /* slots, a power of two; immutable */
  uint32_t cap_shift;    /* log2(capacity); immutable */
  uint32_t slot_size;    /* bytes per slot; immutable */
  uint32_t slot_shift;   /* log2(slot_size); immutable */
  uint32_t inline_max;   /* slot_size - POSH__Q_SLOT_HDR; immutable */
  uint32_t qflags;       /* enum posh_queue_flags; immutable */
  uint64_t max_messages; /* immutable */
  uint64_t max_bytes;    /* 0: none; immutable */
  uint64_t ring_off;     /* offset of slot 0 from the object; immutable */
  /* 1 once closed.  Synchronization: atomic; set by a full-barrier CAS,
   * read (acquire) by producers after their claim CAS and by consumers
   * before their last look at an empty slot (see try_take). */
  posh_atomic32_t xclosed;
  uint32_t pad0;
  /* ---- producers' line */
  /* Next position to claim (a hint that lags by the claims whose
   * claimant has not advanced it yet).  Synchronization: atomic, CAS
   * t -> t + 1 by whoever sees slot t claimed. */
  POSH_ALIGNED(64) posh_atomic_t xtail;
  /* Adaptive spin of producers waiting for room (see ev_wait).
   * Synchronization: relaxed (a heuristic). */
  posh_atomic32_t xprod_spin;
  /* ---- consumers' line */
  /* Next position to take (a hint, as xtail).  CAS h -> h + 1. */
  POSH_ALIGNED(64) posh_atomic_t xhead;
  posh_atomic32_t xcons_spin; /* as xprod_spin, for consumers */
  /* ---- "not empty" eventcount: consumers sleep on xnotempty; a producer
   * that published a message bumps it when xcons_sleepers != 0. */
  POSH_ALIGNED(64) posh_atomic32_t xnotempty; /* atomic fetch-add */
  /* Threads asleep on xnotempty (a hint: a sleeper that died leaves it too
   * high, which costs wake-up syscalls, never a lost wake-up).  Atomic. */
  posh_atomic32_t xcons_sleepers;
  /* ---- "not full" eventcount: producers sleep on xnotfull; a consumer
   * that freed a slot bumps it when xprod_sleepers != 0. */
  POSH_ALIGNED(64) posh_atomic32_t xnotfull; /* atomic fetch-add */
  posh_atomic32_t xprod_sleepers;            /* as xcons_sleepers */
  /* ---- counters written by both sides (only when enabled) */
  /* Payload bytes queued (byte bound only).  Signed: a consumer may
   * subtract before the producer's add lands.  Atomic fetch-add; a death
   * can only leave it too low (see put_commit / finish_take). */
  POSH_ALIGNED(64) posh_atomic_t xbytes;
  /* Unfinished tasks (joinable only).  Atomic: fetch-add by put, CAS
   * (never below 0) by task_done and repair. */
  posh_atomic_t xunfinished;
  /* Join eventcount: bumped when xunfinished reaches 0 and someone
   * sleeps in join (xjoin_sleepers, a hint as above). */
  posh_atomic32_t xjoin_ev;
  posh_atomic32_t xjoin_sleepers;
  /* Cache of large message blocks (offsets, 0 = empty entry): consumers
   * put the blocks of large messages here instead of freeing them, and
   * producers reuse them: no page lock per message, and no faults,
   * since a freed run may be given back to the system (at once when it
   * is large for the heap, or with the next purge of dirty pages: see
   * allocators/pages.c) and the next allocation then faults its pages in
   * again (~10 ms per MiB on the reference machine).  An entry holds its
   * block: whoever CASes it to 0 owns the block; a process killed between
   * that CAS and using the block leaks it.  Synchronization: atomic (CAS
   * 0 -> off to stash, off -> 0 to take; ABA is harmless because the
   * value is the ownership itself). */
  POSH_ALIGNED(64) posh_atomic_t xblk_cache[POSH__Q_BLK_CACHE];
} posh__queue_shared_t;

static inline posh__queue_slot_t *posh__q_slot_at(posh__queue_shared_t *sh,
                                                  uint64_t pos) {
  return (posh__queue_slot_t *)((unsigned char *)sh + sh->ring_off +
                                ((pos & (sh->capacity - 1)) << sh->slot_shift));
}
static inline uint32_t posh__q_lap_of(posh__queue_shared_t *sh, uint64_t pos) {
  return (uint32_t)(pos >> sh->cap_shift);
}

#endif /* POSH_QUEUE_INTERNAL_H */
