/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Queue object (and JoinableQueue): a bounded
 * multi-producer multi-consumer ring of slots in the heap, whose slot
 * protocol survives the death of any process at any instant.  Small
 * messages are copied into the slot; large ones travel in a heap block
 * whose offset the slot carries (written with streaming stores from 512 KiB
 * on, see copy_to_block).  Blocking uses eventcounts (futex words
 * bumped only when someone sleeps), after an adaptive spin.
 *
 * Slot protocol (a Vyukov-style bounded MPMC queue in which the claim is a
 * CAS on the slot word, and the word names its claimant): position p maps
 * to slot p % capacity and lap p / capacity.  A slot word is
 * lap << 32 | state << 30 | token, and each position's slot goes through
 *     EMPTY(L) -> CLAIMED(L, producer) -> FULL(L) -> TAKEN(L, consumer)
 *              -> EMPTY(L + 1)
 * or, when its producer died (or found the queue closed) after claiming,
 *     CLAIMED(L, producer) -> EMPTY(L + 1)        (a skipped position).
 * The slot CAS is the commit point; xtail / xhead only say where to look
 * and are advanced by whoever sees they lag (helping), so a process killed
 * between its slot CAS and its index CAS stalls nobody.  A waiter that
 * finds a CLAIMED or TAKEN slot blocking it for a while checks the token's
 * liveness and, if its owner is dead, takes the slot over (CAS of the token
 * to its own), undoes the owner's counters, frees its block, and moves the
 * slot to EMPTY(L + 1): a dead producer's message never appears, a dead
 * consumer's message is lost with it.
 */
#include "queue_internal.h"
#include "sync_internal.h" /* spin constants, posh__sync_remaining */

#include <limits.h>
#include <string.h>
#include <xxhash.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------------
 * Finalize: free the blocks of large messages still in the ring.
 * ---------------------------------------------------------------------- */
/* The queue's immutable geometry, as posh_queue_create set it: the ring
 * lies inside the object's block, which lies inside the heap.  Checked
 * when a handle is opened (and before finalize walks the ring), so that a
 * stray write by a faulty process into a queue's header gives
 * POSH_ECORRUPT instead of slot addresses outside the heap. */
static int geometry_ok(posh_heap_t *heap, const posh__queue_shared_t *sh) {
  uint32_t c = sh->capacity;
  uint64_t off = posh__off_of(heap, sh), size = sh->hdr.size;
  if (c == 0 || (c & (c - 1)) != 0 || sh->cap_shift != (uint32_t)__builtin_ctz(c) ||
      sh->slot_shift < 6 || sh->slot_shift > 8 ||
      sh->slot_size != 1u << sh->slot_shift ||
      sh->inline_max != sh->slot_size - POSH__Q_SLOT_HDR ||
      sh->max_messages > c || sh->ring_off < sizeof *sh)
    return 0;
  return size <= heap->view.capacity - off && sh->ring_off <= size &&
         ((uint64_t)c << sh->slot_shift) <= size - sh->ring_off;
}

static int queue_open_check(posh_obj_t *q) {
  return geometry_ok(q->heap, (const posh__queue_shared_t *)q->hdr)
             ? 0
             : POSH_ECORRUPT;
}

/* A large message's block: its offset names len bytes inside the heap,
 * else NULL (a damaged slot, as for geometry_ok). */
static void *large_block(posh_heap_t *heap, uint64_t off, uint64_t len) {
  uint64_t hcap = heap->view.capacity;
  if (off < heap->hdr->data_off || off > hcap || len > hcap - off)
    return NULL;
  return posh__at(heap, off);
}

static void queue_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj) {
  posh__queue_shared_t *sh = (posh__queue_shared_t *)obj;
  for (uint64_t i = 0; geometry_ok(heap, sh) && i < sh->capacity; i++) {
    posh__queue_slot_t *s = posh__q_slot_at(sh, i);
    if (s->meta & POSH__Q_META_LARGE) {
      uint64_t off;
      memcpy(&off, s->data, sizeof off);
      s->meta = 0;
      posh_free(heap, posh__at(heap, off));
    }
  }
  for (int i = 0; i < POSH__Q_BLK_CACHE; i++) {
    uint64_t off = posh_atomic_load_relaxed(&sh->xblk_cache[i]);
    sh->xblk_cache[i] = 0;
    if (off)
      posh_free(heap, posh__at(heap, off));
  }
}

/* ------------------------------------------------------------------------
 * Large-block cache (see xblk_cache).
 * ---------------------------------------------------------------------- */
/* A cached block of at least len bytes, or NULL. */
static void *blk_take(posh_heap_t *heap, posh__queue_shared_t *sh, size_t len) {
  for (int i = 0; i < POSH__Q_BLK_CACHE; i++) {
    uint64_t off = posh_atomic_load_relaxed(&sh->xblk_cache[i]);
    if (!off)
      continue;
    void *b = posh__at(heap, off);
    if (posh_usable_size(heap, b) < len)
      continue;
    /* Full-barrier CAS: the block is ours; pairs with the stasher's. */
    if (posh_atomic_cas_bool_full(&sh->xblk_cache[i], off, 0))
      return b;
  }
  return NULL;
}

/* Is b in the reuse cache (a message released twice)?  Relaxed: a block
 * cached by this release's own earlier copy is seen; a racing release of
 * the same message by another thread is the caller's double free. */
static int blk_cached(posh_heap_t *heap, posh__queue_shared_t *sh, void *b) {
  uint64_t off = posh__off_of(heap, b);
  for (int i = 0; i < POSH__Q_BLK_CACHE; i++)
    if (posh_atomic_load_relaxed(&sh->xblk_cache[i]) == off)
      return 1;
  return 0;
}

/* Keep a block we own for reuse, or free it. */
static void blk_give(posh_heap_t *heap, posh__queue_shared_t *sh, void *b) {
  if (posh_usable_size(heap, b) >= POSH__Q_BLK_CACHE_MIN) {
    uint64_t off = posh__off_of(heap, b);
    for (int i = 0; i < POSH__Q_BLK_CACHE; i++)
      if (posh_atomic_load_relaxed(&sh->xblk_cache[i]) == 0 &&
          posh_atomic_cas_bool_full(&sh->xblk_cache[i], 0, off))
        return;
  }
  posh_free(heap, b);
}

const posh__obj_ops_t posh__queue_ops = {"queue", queue_finalize, NULL,
                                         queue_open_check};

/* ------------------------------------------------------------------------
 * Copying a large message into its block.
 * ---------------------------------------------------------------------- */
/* From this size on, put copies into the block with non-temporal stores.
 * The block's lines were last read by a consumer, usually on another core,
 * so an ordinary store must first take each line back from that core's
 * cache (a read-for-ownership per 64 bytes); glibc's memcpy does ordinary
 * stores above the L2 size on AMD (rep movsb below it), and on the
 * reference VM that made a 1 MiB copy cost 130-150 us instead of 25-30 us
 * (queue.1p1c.1MiB at 6-7 GB/s instead of 20+).  Streaming stores write
 * whole lines without fetching them, and the producer never reads the
 * block again, so nothing is lost by bypassing its cache.  Below this
 * size memcpy is as fast (the lines fit the caches) and leaves the
 * message cached for a consumer that may run on the same core. */
#define Q_STREAM_MIN (512u * 1024)

static void copy_to_block(void *dst, const void *src, size_t len) {
#if defined(__SSE2__)
  if (len >= Q_STREAM_MIN) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    size_t head = (size_t)(-(uintptr_t)d & 63); /* to a line boundary */
    memcpy(d, s, head);
    d += head;
    s += head;
    len -= head;
    size_t body = len & ~(size_t)63;
    for (size_t i = 0; i < body; i += 64) {
      __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
      __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
      __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
      __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
      _mm_stream_si128((__m128i *)(d + i), a);
      _mm_stream_si128((__m128i *)(d + i + 16), b);
      _mm_stream_si128((__m128i *)(d + i + 32), c);
      _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d + body, s + body, len - body);
    /* Streaming stores are weakly ordered: the fence makes them globally
     * visible before the full-barrier CAS that publishes the message
     * (put_commit), which pairs with the consumer's acquire of FULL. */
    _mm_sfence();
    return;
  }
#endif
  memcpy(dst, src, len);
}

/* ------------------------------------------------------------------------
 * Eventcounts.
 * ---------------------------------------------------------------------- */
/* Wake the sleepers of an eventcount after the caller changed what they
 * wait for with a full barrier (a CAS): pairs with the sleeper's
 * full-barrier increment of *sleepers before its last look (ev_wait). */
static inline void ev_signal(posh_atomic32_t *ev, posh_atomic32_t *sleepers) {
  if (posh_unlikely(posh_atomic32_load_relaxed(sleepers) != 0)) {
    posh_atomic32_fetch_add_full(ev, 1);
    posh__futex_wake(ev, INT_MAX);
  }
}
static void ev_broadcast(posh_atomic32_t *ev) {
  posh_atomic32_fetch_add_full(ev, 1);
  posh__futex_wake(ev, INT_MAX);
}

/* Adaptive spin state, as sync/common.c: budget in the low 16 bits,
 * consecutive failed spins in the high 16; 0 means the maximum.  The
 * bounds are the queue's own: a queue round trip is the product's hot
 * path and a partner on another core answers within a few microseconds,
 * so the budget never drops below Q_SPIN_MIN rounds (a few µs) and probes
 * the maximum again after Q_SPIN_PROBE failures; bench/bench_queue's
 * queue.rtt.8B.posh is what tuned them. */
#define Q_SPIN_MIN 128u
#define Q_SPIN_MAX 2048u
#define Q_SPIN_PROBE 16u
static unsigned spin_budget(uint32_t st) {
  unsigned budget = st & 0xffffu, fails = st >> 16;
  if (budget == 0 || fails >= Q_SPIN_PROBE)
    return Q_SPIN_MAX;
  return budget < Q_SPIN_MIN ? Q_SPIN_MIN : budget;
}
static void spin_update(posh_atomic32_t *spin, uint32_t st, int success,
                        unsigned rounds) {
  unsigned budget = spin_budget(st), fails = st >> 16;
  if (success) {
    unsigned want = 2 * rounds + Q_SPIN_MIN;
    if (want > Q_SPIN_MAX)
      want = Q_SPIN_MAX;
    if (budget < want)
      budget = want;
    fails = 0;
  } else {
    budget = budget / 2 < Q_SPIN_MIN ? Q_SPIN_MIN : budget / 2;
    fails = fails >= Q_SPIN_PROBE ? 0 : fails + 1;
  }
  uint32_t nst = (fails << 16) | budget;
  if (nst != st) /* relaxed: a heuristic */
    posh_atomic32_store_relaxed(spin, nst);
}

/* Wait until *watch != val (or the eventcount moves): spin first, then
 * sleep on ev with the liveness backstop.  0 (look again), POSH_ETIMEDOUT,
 * or POSH_EAGAIN (a backstop period passed: look again, check liveness). */
static int ev_wait(posh_atomic32_t *ev, posh_atomic32_t *sleepers,
                   posh_atomic32_t *spin, const posh_atomic_t *watch,
                   uint64_t val, uint64_t deadline) {
  /* Acquire: pairs with the full-barrier bump of ev by a waker, so what it
   * changed before is visible when we see the new count. */
  uint32_t e = posh_atomic32_load_acquire(ev);
  if (posh_atomic_load_relaxed(watch) != val)
    return 0;
  uint32_t st = posh_atomic32_load_relaxed(spin);
  unsigned budget = spin_budget(st);
  for (unsigned k = 0; k < budget; k++) {
    posh_cpu_relax();
    if (posh_atomic_load_relaxed(watch) != val ||
        posh_atomic32_load_relaxed(ev) != e) {
      spin_update(spin, st, 1, k);
      return 0;
    }
  }
  spin_update(spin, st, 0, budget);
  /* Full barrier before the last look: pairs with the waker's change of
   * *watch (full-barrier CAS) followed by its read of *sleepers. */
  posh_atomic32_fetch_add_full(sleepers, 1);
  int r = 0;
  if (posh_atomic_load_relaxed(watch) == val)
    r = posh__futex_wait_until(ev, e, deadline);
  posh_atomic32_fetch_add_full(sleepers, (uint32_t)-1);
  return r;
}

/* ------------------------------------------------------------------------
 * Death of a slot's owner.
 * ---------------------------------------------------------------------- */
/* The slot this thread last found blocked by someone else's CLAIMED or
 * TAKEN word, and since when: liveness is checked only after the same
 * word has blocked us for SUSPECT_NS, then at most every RECHECK_NS. */
#define SUSPECT_NS (1000ull * 1000)      /* 1 ms */
#define RECHECK_NS (10ull * 1000 * 1000) /* 10 ms */
static POSH_TLS const void *sus_slot;
static POSH_TLS uint64_t sus_word, sus_since, sus_checked;

static int owner_dead(posh_heap_t *heap, const posh__queue_slot_t *s,
                      uint64_t w) {
  uint64_t now = posh__prim_now_ns();
  if (sus_slot != s || sus_word != w) {
    sus_slot = s;
    sus_word = w;
    sus_since = now;
    sus_checked = 0;
    return 0;
  }
  if (now - sus_since < SUSPECT_NS ||
      (sus_checked && now - sus_checked < RECHECK_NS))
    return 0;
  sus_checked = now;
  return !posh__token_alive(heap, posh__q_token(w), 1);
}

/* xunfinished -= n, never below 0; wakes join when it reaches 0.  Returns
 * POSH_ERANGE (and changes nothing) when it was below n and strict. */
static int unfinished_sub(posh__queue_shared_t *sh, uint64_t n, int strict) {
  uint64_t old = posh_atomic_load_relaxed(&sh->xunfinished);
  for (;;) {
    if (old < n && strict)
      return POSH_ERANGE;
    uint64_t nv = old < n ? 0 : old - n;
    uint64_t seen = posh_atomic_cas_full(&sh->xunfinished, old, nv);
    if (seen == old) {
      if (nv == 0)
        ev_signal(&sh->xjoin_ev, &sh->xjoin_sleepers);
      return 0;
    }
    old = seen;
  }
}

/* Take over slot s, whose word w is CLAIMED or TAKEN by a dead thread,
 * undo what its owner had counted, free its block, and move it to
 * EMPTY(lap + 1).  A repairer that dies half-way leaves the slot owned by
 * its own (dead) token, and the next one redoes what is left: counters may
 * be undone twice (they err low: bounds get looser, join earlier), the
 * block is never freed twice (meta is cleared before the free). */
static void repair_slot(posh_heap_t *heap, posh__queue_shared_t *sh,
                        posh__queue_slot_t *s, uint64_t w, uint32_t me) {
  uint32_t lap = posh__q_lap(w);
  uint64_t mine = posh__q_word(lap, posh__q_state(w), me);
  if (!posh_atomic_cas_bool_full(&s->xword, w, mine))
    return; /* someone else changed it: look again */
  uint64_t meta = s->meta;
  uint64_t blk = 0;
  if (meta & POSH__Q_META_LARGE)
    memcpy(&blk, s->data, sizeof blk);
  if (meta & POSH__Q_META_COUNTED)
    unfinished_sub(sh, 1, 0);
  if (meta & POSH__Q_META_BYTES)
    posh_atomic_fetch_add_full(&sh->xbytes, 0 - (meta & POSH__Q_META_LEN_MASK));
  s->meta = 0;
  posh_compiler_barrier(); /* meta cleared before the block is freed */
  if (blk)
    posh_free(heap, posh__at(heap, blk));
  /* Full-barrier CAS: publishes meta = 0 with the empty slot; pairs with
   * the next claimant's CAS. */
  posh_atomic_cas_bool_full(&s->xword, mine,
                            posh__q_word(lap + 1, POSH__Q_EMPTY, 0));
  ev_signal(&sh->xnotfull, &sh->xprod_sleepers);
  ev_signal(&sh->xnotempty, &sh->xcons_sleepers);
  sus_slot = NULL;
}

/* ------------------------------------------------------------------------
 * Producer side.
 * ---------------------------------------------------------------------- */
/* What a blocked caller waits for: *watch to differ from val. */
typedef struct wait_on {
  const posh_atomic_t *watch;
  uint64_t val;
} wait_on_t;

/* Claim the next position.  0 with *slot_out / *lap_out, POSH_EAGAIN
 * (full: *wo says what to wait for). */
static int try_claim(posh_heap_t *heap, posh__queue_shared_t *sh, uint32_t tok,
                     size_t len, posh__queue_slot_t **slot_out,
                     uint32_t *lap_out, wait_on_t *wo) {
  for (;;) {
    /* Relaxed: xtail is only a hint; the slot word (acquire) decides. */
    uint64_t t = posh_atomic_load_relaxed(&sh->xtail);
    if (sh->max_messages < sh->capacity) {
      /* Exact: if our claim at t succeeds, t was the tail, and the head
       * can only have grown since we read it. */
      uint64_t h = posh_atomic_load_acquire(&sh->xhead);
      if ((int64_t)(t - h) >= (int64_t)sh->max_messages) {
        /* Full by count.  The head position may hold no message at all: a
         * producer that died claiming it, or a consumer that took it and
         * died before moving the head.  Repair or pass it as a consumer
         * would, or the bound would hold producers until one came. */
        posh__queue_slot_t *hs = posh__q_slot_at(sh, h);
        uint64_t hw = posh_atomic_load_acquire(&hs->xword);
        int32_t hd = (int32_t)(posh__q_lap(hw) - posh__q_lap_of(sh, h));
        unsigned hst = posh__q_state(hw);
        if (hd > 0 || (hd == 0 && hst == POSH__Q_TAKEN)) {
          posh_atomic_cas_bool_full(&sh->xhead, h, h + 1); /* help */
          continue;
        }
        if (hd == 0 && hst == POSH__Q_CLAIMED && owner_dead(heap, hs, hw)) {
          repair_slot(heap, sh, hs, hw, tok);
          continue;
        }
        wo->watch = &sh->xhead;
        wo->val = h;
        return POSH_EAGAIN;
      }
    }
    if (sh->max_bytes) {
      uint64_t b = posh_atomic_load_relaxed(&sh->xbytes);
      if ((int64_t)b > 0 && b + len > sh->max_bytes) {
        wo->watch = &sh->xbytes;
        wo->val = b;
        return POSH_EAGAIN;
      }
    }
    posh__queue_slot_t *s = posh__q_slot_at(sh, t);
    uint32_t lap = posh__q_lap_of(sh, t);
    /* Acquire: pairs with the full-barrier CAS that gave the slot this
     * word (a consumer's EMPTY: its reads of the old payload are done). */
    uint64_t w = posh_atomic_load_acquire(&s->xword);
    int32_t d = (int32_t)(posh__q_lap(w) - lap);
    if (d == 0) {
      if (posh__q_state(w) == POSH__Q_EMPTY) {
        if (posh_atomic_cas_bool_full(
                &s->xword, w, posh__q_word(lap, POSH__Q_CLAIMED, tok))) {
          posh_atomic_cas_bool_full(&sh->xtail, t, t + 1);
          *slot_out = s;
          *lap_out = lap;
          return 0;
        }
        continue;
      }
      posh_atomic_cas_bool_full(&sh->xtail, t, t + 1); /* help */
      continue;
    }
    if (d > 0) { /* position t was claimed and more: the tail lags */
      posh_atomic_cas_bool_full(&sh->xtail, t, t + 1);
      continue;
    }
    /* The slot's previous lap is not done: full. */
    unsigned st = posh__q_state(w);
    if ((st == POSH__Q_CLAIMED || st == POSH__Q_TAKEN) &&
        owner_dead(heap, s, w)) {
      repair_slot(heap, sh, s, w, tok);
      continue;
    }
    wo->watch = &s->xword;
    wo->val = w;
    return POSH_EAGAIN;
  }
}

static inline int64_t deadline_check(uint64_t deadline) {
  return deadline && posh__prim_now_ns() >= deadline;
}

/* One blocking round of a call with timeout_ns (0: non-blocking, < 0:
 * forever) after a failed attempt: POSH_EAGAIN for a non-blocking call,
 * POSH_ETIMEDOUT past *deadline (set on the first round), else ev_wait on
 * (watch, val) and 0: try again. */
static int wait_round(posh_atomic32_t *ev, posh_atomic32_t *sleepers,
                      posh_atomic32_t *spin, const posh_atomic_t *watch,
                      uint64_t val, int64_t timeout_ns, uint64_t *deadline) {
  if (timeout_ns == 0)
    return POSH_EAGAIN;
  if (timeout_ns > 0 && *deadline == 0)
    *deadline = posh__deadline_from_timeout(timeout_ns);
  else if (deadline_check(*deadline))
    return POSH_ETIMEDOUT;
  int r = ev_wait(ev, sleepers, spin, watch, val, *deadline);
  return r == POSH_ETIMEDOUT ? r : 0;
}

/* Claim a slot, waiting as the timeout says.  0, POSH_ECLOSED, POSH_EAGAIN,
 * POSH_ETIMEDOUT. */
static int claim_wait(posh_heap_t *heap, posh__queue_shared_t *sh, uint32_t tok,
                      size_t len, int64_t timeout_ns, uint64_t *deadline,
                      posh__queue_slot_t **slot_out, uint32_t *lap_out) {
  for (;;) {
    if (posh_unlikely(posh_atomic32_load_acquire(&sh->xclosed)))
      return POSH_ECLOSED;
    wait_on_t wo;
    int r = try_claim(heap, sh, tok, len, slot_out, lap_out, &wo);
    if (posh_likely(r == 0))
      return 0;
    r = wait_round(&sh->xnotfull, &sh->xprod_sleepers, &sh->xprod_spin,
                   wo.watch, wo.val, timeout_ns, deadline);
    if (r)
      return r;
  }
}

/* Fill a claimed slot and publish it.  blk: offset of the payload's block
 * (0: copy msg inline).  0 or POSH_ECLOSED (the claim is given back). */
static int put_commit(posh_heap_t *heap, posh__queue_shared_t *sh,
                      posh__queue_slot_t *s, uint32_t lap, uint32_t tok,
                      const void *msg, size_t len, uint64_t blk) {
  (void)heap;
  uint64_t claimed = posh__q_word(lap, POSH__Q_CLAIMED, tok);
  /* Acquire (after our full-barrier claim CAS): if close's CAS came
   * before our claim we see it; if after, a consumer that sees closed also
   * sees our claim and waits for it (see try_take). */
  if (posh_unlikely(posh_atomic32_load_acquire(&sh->xclosed))) {
    posh_atomic_cas_bool_full(&s->xword, claimed,
                              posh__q_word(lap + 1, POSH__Q_EMPTY, 0));
    ev_signal(&sh->xnotempty, &sh->xcons_sleepers);
    ev_signal(&sh->xnotfull, &sh->xprod_sleepers);
    return POSH_ECLOSED;
  }
  uint64_t meta = (uint64_t)len;
  if (blk) {
    memcpy(s->data, &blk, sizeof blk);
    meta |= POSH__Q_META_LARGE;
  } else if (len) {
    memcpy(s->data, msg, len);
  }
  /* Program order is all a kill -9 needs (see atomic.h): each flag is
   * stored before the counter it covers is changed, so a repairer that
   * sees the flag may undo a change that never happened (counters err
   * low), never miss one that did. */
  posh_compiler_barrier();
  s->meta = meta;
  if (sh->qflags & POSH_QUEUE_JOINABLE) {
    meta |= POSH__Q_META_COUNTED;
    posh_compiler_barrier();
    s->meta = meta;
    posh_compiler_barrier();
    posh_atomic_fetch_add_full(&sh->xunfinished, 1);
  }
  if (sh->max_bytes) {
    meta |= POSH__Q_META_BYTES;
    posh_compiler_barrier();
    s->meta = meta;
    posh_compiler_barrier();
    posh_atomic_fetch_add_full(&sh->xbytes, len);
  }
  /* Full-barrier CAS: releases the payload and meta to the consumer that
   * acquires FULL, and orders the publication before our read of
   * xcons_sleepers (eventcount, see ev_wait). */
  if (posh_unlikely(!posh_atomic_cas_bool_full(
          &s->xword, claimed, posh__q_word(lap, POSH__Q_FULL, 0)))) {
    /* Only a repairer that thought we were dead can have changed it. */
    return POSH_ECORRUPT;
  }
  ev_signal(&sh->xnotempty, &sh->xcons_sleepers);
  return 0;
}

static int put_common(posh_obj_t *q, const void *msg, size_t len, void *block,
                      int64_t timeout_ns) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (posh_unlikely(r))
    return r;
  if (posh_unlikely(msg == NULL && len > 0 && block == NULL))
    return POSH_EINVAL;
  if (posh_unlikely((uint64_t)len > POSH__Q_META_LEN_MASK ||
                    (sh->max_bytes && len > sh->max_bytes)))
    return POSH_EMSGSIZE;
  posh_heap_t *heap = q->heap;
  uint32_t tok = posh__obj_token(q, &r);
  if (posh_unlikely(!tok))
    return r ? r : POSH_EAGAIN;
  if (posh_unlikely(posh_atomic32_load_acquire(&sh->xclosed)))
    return POSH_ECLOSED;
  uint64_t blk = 0;
  void *own = NULL; /* a block we allocated here (freed on failure) */
  if (block) {
    if (posh_block_state(heap, block) != POSH_BLOCK_ALLOCATED ||
        posh_usable_size(heap, block) < len)
      return POSH_EFAULT;
    blk = posh__off_of(heap, block);
  } else if (len > sh->inline_max) {
    /* Copied once, before the claim, so the slot is held briefly. */
    own = len >= POSH__Q_BLK_CACHE_MIN ? blk_take(heap, sh, len) : NULL;
    if (!own)
      own = posh_alloc(heap, len);
    if (!own)
      return posh_last_error() ? posh_last_error() : POSH_ENOMEM;
    copy_to_block(own, msg, len);
    blk = posh__off_of(heap, own);
  }
  uint64_t deadline = 0;
  posh__queue_slot_t *s;
  uint32_t lap;
  r = claim_wait(heap, sh, tok, len, timeout_ns, &deadline, &s, &lap);
  if (r == 0)
    r = put_commit(heap, sh, s, lap, tok, msg, len, blk);
  /* POSH_ECORRUPT: a repairer took our claim over (it judged us dead) and
   * owns the block now; leaking it is the safe side. */
  if (r && own && r != POSH_ECORRUPT)
    blk_give(heap, sh, own);
  return r;
}

POSH_EXTERN int posh_queue_put(posh_obj_t *q, const void *msg, size_t len,
                               int64_t timeout_ns) {
  return put_common(q, msg, len, NULL, timeout_ns);
}

POSH_EXTERN int posh_queue_put_block(posh_obj_t *q, void *block, size_t len,
                                     int64_t timeout_ns) {
  if (!block)
    return POSH_EINVAL;
  return put_common(q, NULL, len, block, timeout_ns);
}

POSH_EXTERN int posh_queue_put_many(posh_obj_t *q, const struct iovec *msgs,
                                    size_t n, size_t *done,
                                    int64_t timeout_ns) {
  if (done)
    *done = 0;
  if (!msgs && n)
    return POSH_EINVAL;
  if (n == 0) { /* nothing to put, but the handle must still be a queue */
    void *sh;
    return posh__obj_get(q, POSH_OBJ_QUEUE, &sh);
  }
  uint64_t deadline =
      timeout_ns > 0 ? posh__deadline_from_timeout(timeout_ns) : 0;
  for (size_t i = 0; i < n; i++) {
    int64_t t = timeout_ns;
    if (deadline) {
      t = posh__sync_remaining(deadline);
      if (t == 0)
        t = 1; /* one last non-waiting try that reports ETIMEDOUT */
    }
    int r = put_common(q, msgs[i].iov_base, msgs[i].iov_len, NULL, t);
    if (r)
      return r;
    if (done)
      *done = i + 1;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Consumer side.
 * ---------------------------------------------------------------------- */
/* Take the next message.  0 with the slot (TAKEN by tok), POSH_EAGAIN
 * (empty: *wo), POSH_ECLOSED (closed and drained), POSH_EMSGSIZE (does not
 * fit cap: *need). */
static int try_take(posh_heap_t *heap, posh__queue_shared_t *sh, uint32_t tok,
                    size_t cap, size_t *need, posh__queue_slot_t **slot_out,
                    uint32_t *lap_out, wait_on_t *wo) {
  for (;;) {
    uint64_t h = posh_atomic_load_relaxed(&sh->xhead); /* a hint */
    posh__queue_slot_t *s = posh__q_slot_at(sh, h);
    uint32_t lap = posh__q_lap_of(sh, h);
    /* Acquire: pairs with the producer's full-barrier FULL CAS, so its
     * payload and meta are visible. */
    uint64_t w = posh_atomic_load_acquire(&s->xword);
    int32_t d = (int32_t)(posh__q_lap(w) - lap);
    unsigned st = posh__q_state(w);
    if (d == 0) {
      if (st == POSH__Q_FULL) {
        uint64_t len = s->meta & POSH__Q_META_LEN_MASK;
        if (posh_unlikely(len > cap)) {
          /* The length is valid only if the word did not move meanwhile
           * (seqlock-style re-check; the fence keeps the meta read before
           * the second load of the word). */
          posh_fence_full();
          if (posh_atomic_load_relaxed(&s->xword) != w)
            continue;
          *need = (size_t)len;
          return POSH_EMSGSIZE;
        }
        if (posh_atomic_cas_bool_full(&s->xword, w,
                                      posh__q_word(lap, POSH__Q_TAKEN, tok))) {
          posh_atomic_cas_bool_full(&sh->xhead, h, h + 1);
          *slot_out = s;
          *lap_out = lap;
          return 0;
        }
        continue;
      }
      if (st == POSH__Q_EMPTY) {
        /* Closed and nothing claimed here: drained.  The closed flag is
         * read before the slot is looked at again (acquire orders the two
         * loads); a producer that claimed before close's CAS is seen
         * (CLAIMED), one that claims after it sees closed (put_commit). */
        if (posh_unlikely(posh_atomic32_load_acquire(&sh->xclosed)) &&
            posh_atomic_load_acquire(&s->xword) == w)
          return POSH_ECLOSED;
        wo->watch = &s->xword;
        wo->val = w;
        return POSH_EAGAIN;
      }
      if (st == POSH__Q_TAKEN) { /* another consumer has it: the head lags */
        posh_atomic_cas_bool_full(&sh->xhead, h, h + 1);
        continue;
      }
      /* CLAIMED: its producer is writing it. */
    } else if (d > 0) { /* taken or skipped already: the head lags */
      posh_atomic_cas_bool_full(&sh->xhead, h, h + 1);
      continue;
    }
    /* Blocked by a producer writing this position (CLAIMED, lap) or by a
     * consumer still copying out the previous lap (TAKEN, lap - 1). */
    if ((st == POSH__Q_CLAIMED || st == POSH__Q_TAKEN) &&
        owner_dead(heap, s, w)) {
      repair_slot(heap, sh, s, w, tok);
      continue;
    }
    wo->watch = &s->xword;
    wo->val = w;
    return POSH_EAGAIN;
  }
}

static int take_wait(posh_obj_t *q, posh__queue_shared_t *sh, uint32_t tok,
                     size_t cap, size_t *need, int64_t timeout_ns,
                     uint64_t *deadline, posh__queue_slot_t **slot_out,
                     uint32_t *lap_out) {
  for (;;) {
    wait_on_t wo;
    int r = try_take(q->heap, sh, tok, cap, need, slot_out, lap_out, &wo);
    if (posh_likely(r != POSH_EAGAIN))
      return r;
    r = wait_round(&sh->xnotempty, &sh->xcons_sleepers, &sh->xcons_spin,
                   wo.watch, wo.val, timeout_ns, deadline);
    if (r)
      return r;
  }
}

/* Copy a taken slot's message out (or hand its block over when keep_block
 * is not NULL) and give the slot back.  0, or POSH_ECORRUPT for a large
 * message whose block is not inside the heap (dropped: nothing copied,
 * *len_out 0, the slot given back all the same). */
static int finish_take(posh_heap_t *heap, posh__queue_shared_t *sh,
                       posh__queue_slot_t *s, uint32_t lap, uint32_t tok,
                       void *buf, size_t *len_out, void **keep_block) {
  uint64_t meta = s->meta;
  size_t len = (size_t)(meta & POSH__Q_META_LEN_MASK);
  void *blk = NULL;
  int r = 0;
  if (meta & POSH__Q_META_LARGE) {
    uint64_t off;
    memcpy(&off, s->data, sizeof off);
    blk = large_block(heap, off, len);
    if (!blk) {
      r = POSH_ECORRUPT;
      len = 0;
    }
    if (keep_block)
      *keep_block = blk;
    else if (len)
      memcpy(buf, blk, len);
  } else if (len) {
    memcpy(buf, s->data, len);
    if (keep_block)
      *keep_block = NULL;
  } else if (keep_block) {
    *keep_block = NULL;
  }
  *len_out = len;
  /* Subtract before clearing the flag: a death in between makes the
   * repairer subtract again (too low: the bound gets looser, never
   * stuck). */
  if (meta & POSH__Q_META_BYTES)
    posh_atomic_fetch_add_full(&sh->xbytes, 0 - (uint64_t)len);
  posh_compiler_barrier();
  s->meta = 0; /* before EMPTY (invariant), and before the block is freed */
  /* Full-barrier CAS: our reads of the slot are done before a producer
   * can claim it again (pairs with its acquire of the word), and it is
   * ordered before our read of xprod_sleepers (eventcount). */
  posh_atomic_cas_bool_full(&s->xword, posh__q_word(lap, POSH__Q_TAKEN, tok),
                            posh__q_word(lap + 1, POSH__Q_EMPTY, 0));
  ev_signal(&sh->xnotfull, &sh->xprod_sleepers);
  if (blk && !keep_block)
    blk_give(heap, sh, blk);
  return r;
}

POSH_EXTERN int posh_queue_get(posh_obj_t *q, void *buf, size_t cap,
                               size_t *len_out, int64_t timeout_ns) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (posh_unlikely(r))
    return r;
  if (posh_unlikely(!len_out || (!buf && cap)))
    return POSH_EINVAL;
  uint32_t tok = posh__obj_token(q, &r);
  if (posh_unlikely(!tok))
    return r ? r : POSH_EAGAIN;
  uint64_t deadline = 0;
  posh__queue_slot_t *s;
  uint32_t lap;
  size_t need = 0;
  r = take_wait(q, sh, tok, cap, &need, timeout_ns, &deadline, &s, &lap);
  if (posh_likely(r == 0))
    r = finish_take(q->heap, sh, s, lap, tok, buf, len_out, NULL);
  else if (r == POSH_EMSGSIZE)
    *len_out = need;
  return r;
}

/* A received message's tag (posh_queue_msg_t.reserved): its block and the
 * queue it came from, so that msg_release takes back only what get_msg of
 * this queue handed out, not any block a damaged or made-up message points
 * at (the block would go into this queue's cache and be reused under its
 * real owner). */
static uint64_t msg_tag(posh_heap_t *heap, const posh__queue_shared_t *sh,
                        const void *blk) {
  uint64_t key[2] = {posh__off_of(heap, blk), posh__off_of(heap, sh)};
  return XXH3_64bits_withSeed(key, sizeof key, 0x706f73686d736721ull);
}

POSH_EXTERN int posh_queue_get_msg(posh_obj_t *q, posh_queue_msg_t *m,
                                   int64_t timeout_ns) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (posh_unlikely(r))
    return r;
  if (!m)
    return POSH_EINVAL;
  m->data = NULL;
  m->len = 0;
  m->block = NULL;
  m->reserved = 0;
  uint32_t tok = posh__obj_token(q, &r);
  if (posh_unlikely(!tok))
    return r ? r : POSH_EAGAIN;
  uint64_t deadline = 0;
  posh__queue_slot_t *s;
  uint32_t lap;
  size_t need = 0;
  r = take_wait(q, sh, tok, SIZE_MAX, &need, timeout_ns, &deadline, &s, &lap);
  if (r)
    return r;
  void *blk = NULL;
  r = finish_take(q->heap, sh, s, lap, tok, m->inline_buf, &m->len, &blk);
  if (r)
    return r; /* m stays empty */
  m->block = blk;
  m->data = blk ? blk : (void *)m->inline_buf;
  if (blk)
    m->reserved = msg_tag(q->heap, sh, blk);
  return 0;
}

POSH_EXTERN int posh_queue_msg_release(posh_obj_t *q, posh_queue_msg_t *m) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  if (!m)
    return POSH_EINVAL;
  if (m->block) {
    /* Bounds first: msg_tag takes the block's offset in the heap. */
    if (posh_block_state(q->heap, m->block) != POSH_BLOCK_ALLOCATED)
      return POSH_EFAULT; /* nothing taken back; m left as it is */
    if (m->reserved != msg_tag(q->heap, sh, m->block) ||
        blk_cached(q->heap, sh, m->block))
      return POSH_EINVAL; /* not from get_msg of this queue, or released */
    blk_give(q->heap, sh, m->block);
  }
  m->block = NULL;
  m->reserved = 0;
  m->data = NULL;
  m->len = 0;
  return r;
}

POSH_EXTERN int posh_queue_get_many(posh_obj_t *q, const struct iovec *bufs,
                                    size_t *lens, size_t n, size_t *done,
                                    int64_t timeout_ns) {
  if (done)
    *done = 0;
  if (!bufs || !lens || n == 0)
    return POSH_EINVAL;
  int r = posh_queue_get(q, bufs[0].iov_base, bufs[0].iov_len, &lens[0],
                         timeout_ns);
  if (r)
    return r;
  size_t i = 1;
  for (; i < n; i++) {
    if (posh_queue_get(q, bufs[i].iov_base, bufs[i].iov_len, &lens[i], 0))
      break; /* empty, closed, or does not fit: stop with what we have */
  }
  if (done)
    *done = i;
  return 0;
}

/* ------------------------------------------------------------------------
 * Creation, state, close, JoinableQueue.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_queue_create(posh_heap_t *heap, const char *name,
                                  const posh_queue_options_t *opts,
                                  posh_obj_t **q_out) {
  if (!heap || !q_out)
    return POSH_EINVAL;
  posh_queue_options_t o = {0, 0, 0, 0, 0, 0};
  if (opts)
    o = *opts;
  if (o.capacity == 0)
    o.capacity = POSH_QUEUE_DEFAULT_CAPACITY;
  if (o.slot_size == 0)
    o.slot_size = POSH_QUEUE_DEFAULT_SLOT;
  if (o.capacity < 2 || o.capacity > POSH_QUEUE_MAX_CAPACITY ||
      (o.capacity & (o.capacity - 1)) || (o.flags & ~POSH_QUEUE_JOINABLE) ||
      o.max_messages > o.capacity || o.reserved ||
      (o.slot_size != 64 && o.slot_size != 128 && o.slot_size != 256))
    return POSH_EINVAL;
  if (o.max_messages == 0)
    o.max_messages = o.capacity;
  size_t ring_off =
      (size_t)posh__align_up(sizeof(posh__queue_shared_t), POSH_CACHELINE);
  uint64_t ring = (uint64_t)o.capacity * o.slot_size;
  if (ring > heap->view.capacity)
    return POSH_ENOMEM;
  int err = 0;
  posh__queue_shared_t *sh = posh__obj_alloc(heap, POSH_OBJ_QUEUE, o.flags,
                                             ring_off + (size_t)ring, 0, &err);
  if (!sh)
    return err;
  sh->capacity = o.capacity;
  sh->cap_shift = (uint32_t)__builtin_ctz(o.capacity);
  sh->slot_size = o.slot_size;
  sh->slot_shift = (uint32_t)__builtin_ctz(o.slot_size);
  sh->inline_max = o.slot_size - POSH__Q_SLOT_HDR;
  sh->qflags = o.flags;
  sh->max_messages = o.max_messages;
  sh->max_bytes = o.max_bytes;
  sh->ring_off = ring_off;
  /* The block is zeroed: every slot is EMPTY(0) with meta 0, head = tail =
   * 0.  Publication (obj_lock, magic release-store) orders these stores
   * before any other process sees the object. */
  return posh__obj_publish(heap, sh, name, q_out);
}

POSH_EXTERN int posh_queue_info(posh_obj_t *q, posh_queue_info_t *info) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  if (!info)
    return POSH_EINVAL;
  memset(info, 0, sizeof *info);
  info->capacity = sh->capacity;
  info->flags = sh->qflags;
  info->max_messages = sh->max_messages;
  info->max_bytes = sh->max_bytes;
  info->slot_size = sh->slot_size;
  info->inline_max = sh->inline_max;
  return 0;
}

static uint64_t qsize_of(posh__queue_shared_t *sh) {
  /* Head first: the tail read after it is at least as recent, so the
   * difference is not negative unless a repair skipped ahead of a lagging
   * tail (clamped). */
  uint64_t h = posh_atomic_load_acquire(&sh->xhead);
  uint64_t t = posh_atomic_load_acquire(&sh->xtail);
  return (int64_t)(t - h) > 0 ? t - h : 0;
}

POSH_EXTERN int posh_queue_qsize(posh_obj_t *q, uint64_t *n_out) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  if (!n_out)
    return POSH_EINVAL;
  *n_out = qsize_of(sh);
  return 0;
}

POSH_EXTERN int posh_queue_empty(posh_obj_t *q) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  return qsize_of(sh) == 0;
}

POSH_EXTERN int posh_queue_full(posh_obj_t *q) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  if (qsize_of(sh) >= sh->max_messages)
    return 1;
  return sh->max_bytes && (int64_t)posh_atomic_load_relaxed(&sh->xbytes) >=
                              (int64_t)sh->max_bytes;
}

POSH_EXTERN int posh_queue_close(posh_obj_t *q) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  /* Full barrier: see put_commit and try_take for what it pairs with. */
  posh_atomic32_fetch_or_full(&sh->xclosed, 1);
  ev_broadcast(&sh->xnotempty);
  ev_broadcast(&sh->xnotfull);
  return 0;
}

POSH_EXTERN int posh_queue_closed(posh_obj_t *q) {
  posh__queue_shared_t *sh;
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)&sh);
  if (r)
    return r;
  return posh_atomic32_load_acquire(&sh->xclosed) != 0;
}

static int joinable(posh_obj_t *q, posh__queue_shared_t **out) {
  int r = posh__obj_get(q, POSH_OBJ_QUEUE, (void **)out);
  if (r)
    return r;
  return ((*out)->qflags & POSH_QUEUE_JOINABLE) ? 0 : POSH_ETYPE;
}

POSH_EXTERN int posh_queue_task_done(posh_obj_t *q) {
  posh__queue_shared_t *sh;
  int r = joinable(q, &sh);
  if (r)
    return r;
  return unfinished_sub(sh, 1, 1);
}

POSH_EXTERN int posh_queue_unfinished(posh_obj_t *q, uint64_t *n_out) {
  posh__queue_shared_t *sh;
  int r = joinable(q, &sh);
  if (r)
    return r;
  if (!n_out)
    return POSH_EINVAL;
  *n_out = posh_atomic_load_acquire(&sh->xunfinished);
  return 0;
}

POSH_EXTERN int posh_queue_join(posh_obj_t *q, int64_t timeout_ns) {
  posh__queue_shared_t *sh;
  int r = joinable(q, &sh);
  if (r)
    return r;
  uint64_t deadline = 0;
  for (;;) {
    /* Acquire: pairs with task_done's full-barrier CAS. */
    uint64_t n = posh_atomic_load_acquire(&sh->xunfinished);
    if (n == 0)
      return 0;
    /* Spin state: the consumers' (join is a consumer-side wait). */
    r = wait_round(&sh->xjoin_ev, &sh->xjoin_sleepers, &sh->xcons_spin,
                   &sh->xunfinished, n, timeout_ns, &deadline);
    if (r)
      return r;
  }
}
