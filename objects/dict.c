/* SPDX-License-Identifier: MIT */
/*
 * This file contains the dict shared object: an open-addressing hash table
 * (linear probing, XXH3 of the key) of 128-byte entries that hold the key
 * and value inline when they fit, in separate immutable heap blocks when
 * they do not.  Readers are optimistic (a sequence counter per entry plus a
 * table epoch; they write no shared memory); writers serialise on one
 * robust lock word and log each change (undo copy of the entry, blocks
 * allocated and blocks to free) so that the next holder can roll a dead
 * writer's change back or forward.  See docs/objects/dict.md.
 */
#include "object_internal.h"
#include "sync_internal.h"
#include "posh/dict.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
/* Inlined XXH3: for the short keys of a typical dict the hash is a few
 * dozen instructions, and a call into libxxhash (plus its size dispatch)
 * would double that on every get. */
#define XXH_INLINE_ALL
#include <xxhash.h>


/* Test hook (tests/test_dict.c): a process whose posh__dict_crash_point
 * equals a crash point's number kills itself there, so the test can check
 * the dict after a death at that step.  One load and an untaken branch per
 * point.  1: an entry published, its record not yet marked done; 2: a new
 * table zeroed, not yet filled or published. */
int posh__dict_crash_point;
#define CRASH_POINT(n)                                                       \
  do {                                                                       \
    if (posh_unlikely(posh__dict_crash_point == (n)))                        \
      raise(SIGKILL);                                                        \
  } while (0)

/* ------------------------------------------------------------------------
 * Layout.
 * ---------------------------------------------------------------------- */
#define DICT_ENTRY_SIZE 128u
#define DICT_DATA 104u /* inline bytes of an entry */
#define DICT_MIN_CAP 8u
#define DICT_TABLE_MAGIC 0x4c42415444434944ull /* "DICTTABL" */
/* Optimistic attempts before a reader takes the writers' lock (a writer
 * preempted or killed in the middle of an entry). */
#define DICT_READ_TRIES 2000u

enum dict_entry_state { E_EMPTY = 0, E_LIVE = 1, E_TOMB = 2 };
#define EF_KEY_EXT 1u /* data[0..8) holds the offset of a key block */
#define EF_VAL_EXT 2u /* data[kspan..+8) holds the offset of a value block */

/* One table slot.
 * Invariants: an EMPTY slot never held anything in this table (so a probe
 * stops there); LIVE and TOMB slots stay non-EMPTY until the table is
 * replaced.  Key block and value block (when EXT) are owned by exactly one
 * LIVE slot of the current table and never change while published (a new
 * value gets a new block).  Layout of data: key bytes (or key block offset
 * when KEY_EXT), then value bytes (or value block offset when VAL_EXT).
 * Every field except xseq: written only by the holder of the dict lock,
 * between the odd and the even store of xseq; readers copy them
 * optimistically and validate with xseq. */
typedef struct dict_entry {
  /* Seqlock: odd while the lock holder rewrites the slot.
   * Synchronization: written by the lock holder (odd store + full fence,
   * then release-store of the next even value); acquire-loaded by
   * readers, re-read after a full fence to validate. */
  posh_atomic32_t xseq;
  uint8_t state; /* enum dict_entry_state; seqlock */
  uint8_t flags; /* EF_*; seqlock */
  uint16_t pad;
  uint32_t klen; /* seqlock */
  uint32_t vlen; /* seqlock */
  uint64_t hash; /* XXH3 of the key; seqlock */
  unsigned char data[DICT_DATA]; /* seqlock */
} POSH_ALIGNED(128) dict_entry_t;
_Static_assert(sizeof(dict_entry_t) == DICT_ENTRY_SIZE, "entry is 128 bytes");

/* A table: a header line, then cap entries.  Immutable header; the
 * counters are the lock holder's. */
typedef struct dict_table {
  uint64_t magic; /* DICT_TABLE_MAGIC; immutable */
  uint64_t cap;   /* entries, a power of two; immutable */
  uint64_t used;  /* lock: LIVE + TOMB slots */
  uint64_t live;  /* lock: LIVE slots */
  uint64_t pad[12];
  dict_entry_t e[];
} POSH_ALIGNED(128) dict_table_t;
_Static_assert(sizeof(dict_table_t) == 128, "table header is 128 bytes");

enum dict_log_op {
  LOG_NONE = 0,
  LOG_ENTRY = 1,      /* rewriting log.index of log.table: undo holds the old */
  LOG_ENTRY_DONE = 2, /* entry published; old_blk[] still to free */
  LOG_RESIZE = 3,     /* migrating table_a into table_b */
  LOG_CLEAR = 4,      /* replacing table_a by the empty table_b */
};

/* Intent record of the lock holder (see the header comment of the file).
 * Every field: lock.  A block offset is set in the record before the
 * change that needs it and cleared before the block is freed, so a repair
 * never frees a block twice (a death between clearing and freeing leaks
 * that one block). */
typedef struct dict_log {
  posh_atomic32_t xop; /* enum dict_log_op; stores ordered after the fields */
  uint32_t pad;
  uint64_t table;      /* LOG_ENTRY*: the table (always the current one) */
  uint64_t index;      /* LOG_ENTRY*: the slot */
  uint64_t new_blk[2]; /* LOG_ENTRY: blocks of the new entry (free on undo) */
  uint64_t old_blk[2]; /* LOG_ENTRY*: blocks of the old entry (free on redo) */
  uint64_t table_a;    /* LOG_RESIZE/CLEAR: old table */
  uint64_t table_b;    /* LOG_RESIZE/CLEAR: new table */
  uint64_t pad2[7];
  dict_entry_t undo;   /* LOG_ENTRY: the slot's contents before the change */
} dict_log_t;

/* The dict object.
 * Invariants: xtable is the current table; xcount = its live count once
 * no change is in progress; xepoch changes after every table replacement
 * and before the old table is freed. */
typedef struct posh__dict_shared {
  posh__obj_hdr_t hdr;
  /* ---- read by every reader, written only when the table is replaced */
  /* Offset of the current table.  Synchronization: release-store by the
   * lock holder, acquire-load by readers. */
  POSH_ALIGNED(64) posh_atomic_t xtable;
  /* Table generation.  Synchronization: full-barrier increment by the
   * lock holder after storing xtable and before freeing the old table;
   * readers acquire-load it first and re-read it after a full fence. */
  posh_atomic_t xepoch;
  uint64_t min_cap; /* smallest table; immutable */
  /* ---- writers */
  POSH_ALIGNED(64) posh__lockword_t lock; /* serialises every change */
  /* Live keys.  Synchronization: relaxed stores by the lock holder,
   * relaxed loads by len (a snapshot). */
  posh_atomic_t xcount;
  uint64_t scan_hint; /* lock: where popitem starts looking */
  dict_log_t log;     /* lock */
} posh__dict_shared_t;

static void dict_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj);
const posh__obj_ops_t posh__dict_ops = {"dict", dict_finalize, NULL, NULL};

/* ------------------------------------------------------------------------
 * Helpers.
 * ---------------------------------------------------------------------- */
/* Seqlock fences.  src/atomic.h has only a full fence; a seqlock reader
 * needs its data loads ordered before the re-check load (load-load), a
 * writer its odd store before its data stores (store-store).  x86-TSO
 * keeps both orders in hardware, so there a compiler barrier is the fence
 * (and the CPU may overlap the cache misses of consecutive look-ups, which
 * an mfence would forbid); elsewhere use the full fence. */
#if defined(__x86_64__) || defined(__i386__)
#define dict_fence_loads() posh_compiler_barrier()
#define dict_fence_stores() posh_compiler_barrier()
#else
#define dict_fence_loads() posh_fence_full()
#define dict_fence_stores() posh_fence_full()
#endif

static const unsigned char empty_key[1];

static inline uint64_t key_hash(const void *key, size_t klen) {
  return XXH3_64bits(klen ? key : empty_key, klen);
}

/* key_hash of a key of 1 to 16 bytes, inline: XXH3_64bits is too big for
 * the compiler to inline, and its call plus size dispatch were a third of
 * a get.  xxHash 0.8's XXH3_64bits is exactly this for len <= 16 (a test
 * checks the two agree); another xxHash version takes the plain call. */
static inline uint64_t key_hash_short(const void *key, size_t klen) {
#if XXH_VERSION_MAJOR == 0 && XXH_VERSION_MINOR == 8
  return XXH3_len_0to16_64b((const xxh_u8 *)key, klen, XXH3_kSecret, 0);
#else
  return key_hash(key, klen);
#endif
}

/* [off, off + len) lies inside the heap's data (bounds check of an offset
 * read optimistically: it may be torn until the seqlock re-check). */
static inline int span_ok(const posh_heap_t *h, uint64_t off, uint64_t len) {
  uint64_t cap = h->view.capacity;
  return off >= POSH_HEADER_SIZE && off < cap && len <= cap - off;
}

static inline uint64_t rd64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
static inline void wr64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

/* The table at off, checked (it may be a freed one a reader still sees):
 * NULL when the offset or the header is not plausible. */
static inline dict_table_t *table_at(const posh_heap_t *h, uint64_t off,
                                     uint64_t *cap_out) {
  if (posh_unlikely((off & 127) != 0 || !span_ok(h, off, sizeof(dict_table_t))))
    return NULL;
  dict_table_t *t = (dict_table_t *)(h->view.base + off);
  uint64_t cap = *(volatile uint64_t *)&t->cap;
  if (posh_unlikely(cap == 0 || (cap & (cap - 1)) != 0 ||
                    cap > h->view.capacity / DICT_ENTRY_SIZE ||
                    !span_ok(h, off, sizeof(dict_table_t) + cap * DICT_ENTRY_SIZE)))
    return NULL;
  *cap_out = cap;
  return t;
}

/* The current table (lock held: nobody else replaces it). */
static inline dict_table_t *locked_table(posh_heap_t *h,
                                         posh__dict_shared_t *d) {
  return posh__at(h, posh_atomic_load_relaxed(&d->xtable));
}

uint64_t posh__dict_key_hash(const void *key, size_t klen) {
  return klen - 1 < 16 ? key_hash_short(key, klen) : key_hash(key, klen);
}

/* Span of the key part of the data area. */
static inline uint32_t kspan_of(uint32_t flags, uint32_t klen) {
  return (flags & EF_KEY_EXT) ? 8u : klen;
}

/* Plain copy of the fields of an entry, read once (volatile: the compiler
 * must not re-read a field it has bounds-checked). */
typedef struct entry_view {
  uint32_t state, flags, klen, vlen;
  uint64_t hash;
} entry_view_t;
static inline void entry_peek(const dict_entry_t *e, entry_view_t *v) {
  const volatile dict_entry_t *ve = e;
  v->state = ve->state;
  v->flags = ve->flags;
  v->klen = ve->klen;
  v->vlen = ve->vlen;
  v->hash = ve->hash;
}

/* Where an entry's key and value bytes are, bounds-checked; NULL pointers
 * when the view is not plausible (torn read or corruption). */
static inline int entry_locate(const posh_heap_t *h, const dict_entry_t *e,
                               const entry_view_t *v, const unsigned char **kp,
                               const unsigned char **vp) {
  if (v->klen > POSH_DICT_KEY_MAX || v->vlen > POSH_DICT_VALUE_MAX)
    return 0;
  uint32_t ks = kspan_of(v->flags, v->klen);
  uint32_t vs = (v->flags & EF_VAL_EXT) ? 8u : v->vlen;
  if ((uint64_t)ks + vs > DICT_DATA)
    return 0;
  if (v->flags & EF_KEY_EXT) {
    uint64_t off = rd64(e->data);
    if (!span_ok(h, off, v->klen))
      return 0;
    *kp = h->view.base + off;
  } else {
    *kp = e->data;
  }
  if (v->flags & EF_VAL_EXT) {
    uint64_t off = rd64(e->data + ks);
    if (!span_ok(h, off, v->vlen))
      return 0;
    *vp = h->view.base + off;
  } else {
    *vp = e->data + ks;
  }
  return 1;
}

/* Blocks owned by an entry (0 where none). */
static void entry_blocks(const dict_entry_t *e, uint64_t blk[2]) {
  blk[0] = blk[1] = 0;
  if (e->state != E_LIVE)
    return;
  if (e->flags & EF_KEY_EXT)
    blk[0] = rd64(e->data);
  if (e->flags & EF_VAL_EXT)
    blk[1] = rd64(e->data + kspan_of(e->flags, e->klen));
}

/* Free the block whose offset is in *slot: clear the record first, so a
 * death in between leaks the block rather than freeing it twice. */
static void free_logged(posh_heap_t *h, uint64_t *slot) {
  uint64_t off = *slot;
  if (!off)
    return;
  *slot = 0;
  posh_compiler_barrier(); /* the clear precedes the free (kill -9 order) */
  posh_free(h, posh__at(h, off));
}

/* Rewrite an entry under its seqlock with the contents of src (everything
 * but the seq). */
static void entry_publish(dict_entry_t *e, const dict_entry_t *src) {
  uint32_t s = posh_atomic32_load_relaxed(&e->xseq); /* ours: lock held */
  uint32_t odd = s | 1u; /* s is even: no change is in progress */
  posh_atomic32_store_relaxed(&e->xseq, odd);
  /* Store fence: the odd value is visible before any field changes (pairs
   * with the readers' load fence before their re-check of xseq). */
  dict_fence_stores();
  e->state = src->state;
  e->flags = src->flags;
  e->klen = src->klen;
  e->vlen = src->vlen;
  e->hash = src->hash;
  memcpy(e->data, src->data, DICT_DATA);
  /* Release: the fields are visible before the even value (pairs with the
   * readers' acquire-load of xseq). */
  posh_atomic32_store_release(&e->xseq, odd + 1u);
}

/* ------------------------------------------------------------------------
 * Repair (lock held, previous holder died) and finalization.
 * ---------------------------------------------------------------------- */
/* Free the key/value blocks referenced by the LIVE entries of a table that
 * is no longer published, clearing each reference first (idempotent). */
static void table_free_blocks(posh_heap_t *h, dict_table_t *t) {
  for (uint64_t i = 0; i < t->cap; i++) {
    dict_entry_t *e = &t->e[i];
    if (e->state != E_LIVE)
      continue;
    uint64_t blk[2];
    entry_blocks(e, blk);
    e->state = E_TOMB;
    posh_compiler_barrier(); /* unreferenced before freed (kill -9 order) */
    for (int k = 0; k < 2; k++)
      if (blk[k])
        posh_free(h, posh__at(h, blk[k]));
  }
}

static void recount(posh__dict_shared_t *d, dict_table_t *t) {
  uint64_t used = 0, live = 0;
  for (uint64_t i = 0; i < t->cap; i++) {
    used += t->e[i].state != E_EMPTY;
    live += t->e[i].state == E_LIVE;
  }
  t->used = used;
  t->live = live;
  posh_atomic_store_relaxed(&d->xcount, live);
}

static void dict_repair(posh_heap_t *h, void *obj) {
  posh__dict_shared_t *d = obj;
  dict_log_t *lg = &d->log;
  uint32_t op = posh_atomic32_load_relaxed(&lg->xop); /* lock held */
  uint64_t cur = posh_atomic_load_relaxed(&d->xtable); /* ours: lock held */
  switch (op) {
  case LOG_ENTRY: {
    /* Unless the new contents were published: roll back, restoring the
     * old contents under a fresh even seq that no reader can have seen,
     * then free the new blocks.  (A record naming
     * no slot of a table inside the heap is damage, not a writer's
     * death: nothing to restore.) */
    uint64_t tcap;
    dict_table_t *t = table_at(h, lg->table, &tcap);
    if (!t || lg->index >= tcap) {
      lg->new_blk[0] = lg->new_blk[1] = lg->old_blk[0] = lg->old_blk[1] = 0;
      break;
    }
    dict_entry_t *e = &t->e[lg->index];
    uint32_t s = posh_atomic32_load_relaxed(&e->xseq);
    uint32_t s0 = posh_atomic32_load_relaxed(&lg->undo.xseq);
    if (!(s0 & 1u) && s == s0 + 2u) {
      /* entry_publish finished (its closing even store is there): readers
       * may have seen the new contents, so rolling back would un-happen a
       * write they saw.  Roll forward instead, as LOG_ENTRY_DONE; the
       * counters are recounted below.  (Only the dead writer touched the
       * entry since the record was armed: it held the lock.) */
      lg->new_blk[0] = lg->new_blk[1] = 0;
      free_logged(h, &lg->old_blk[0]);
      free_logged(h, &lg->old_blk[1]);
      break;
    }
    uint32_t m = (s > s0 ? s : s0) | 1u;
    posh_atomic32_store_relaxed(&e->xseq, m);
    /* Store fence: odd before the fields change (as entry_publish). */
    dict_fence_stores();
    e->state = lg->undo.state;
    e->flags = lg->undo.flags;
    e->klen = lg->undo.klen;
    e->vlen = lg->undo.vlen;
    e->hash = lg->undo.hash;
    memcpy(e->data, lg->undo.data, DICT_DATA);
    /* Release: pairs with the readers' acquire of xseq. */
    posh_atomic32_store_release(&e->xseq, m + 1u);
    lg->old_blk[0] = lg->old_blk[1] = 0;
    free_logged(h, &lg->new_blk[0]);
    free_logged(h, &lg->new_blk[1]);
    break;
  }
  case LOG_ENTRY_DONE:
    lg->new_blk[0] = lg->new_blk[1] = 0;
    free_logged(h, &lg->old_blk[0]);
    free_logged(h, &lg->old_blk[1]);
    break;
  case LOG_RESIZE:
  case LOG_CLEAR:
    if (cur == lg->table_b) {
      /* Published: finish.  Bump the epoch again (the writer may have died
       * before its bump), then retire the old table.  Full barrier: as in
       * table_replace (pairs with the readers' re-read of xepoch). */
      posh_atomic_fetch_add_full(&d->xepoch, 1);
      uint64_t acap;
      dict_table_t *ta = table_at(h, lg->table_a, &acap);
      if (op == LOG_CLEAR && ta)
        table_free_blocks(h, ta);
      free_logged(h, &lg->table_a);
      lg->table_b = 0;
    } else {
      lg->table_a = 0;
      free_logged(h, &lg->table_b);
    }
    break;
  default:
    break;
  }
  /* Release: the record is disarmed only after the repair's stores (the
   * next holder reads it after its acquiring CAS on the lock word). */
  posh_atomic32_store_release(&lg->xop, LOG_NONE);
  uint64_t tcap;
  dict_table_t *t = table_at(h, cur, &tcap);
  if (t)
    recount(d, t);
}

static void dict_finalize(posh_heap_t *heap, posh__obj_hdr_t *obj) {
  posh__dict_shared_t *d = (posh__dict_shared_t *)obj;
  /* Nobody else can reach the object now: finish a dead writer's change,
   * then free every block. */
  if (posh_atomic32_load_relaxed(&d->log.xop) != LOG_NONE)
    dict_repair(heap, d);
  uint64_t off = posh_atomic_load_relaxed(&d->xtable), cap;
  dict_table_t *t = table_at(heap, off, &cap);
  if (!t)
    return; /* none, or damaged: its blocks stay (posh_heap_check says) */
  table_free_blocks(heap, t);
  posh_atomic_store_relaxed(&d->xtable, 0);
  posh_free(heap, t);
}

/* ------------------------------------------------------------------------
 * Locking.
 * ---------------------------------------------------------------------- */
static int dict_lock(posh_obj_t *o, posh__dict_shared_t *d, uint32_t *tok_out) {
  int err = 0;
  uint32_t tok = posh__obj_token(o, &err);
  if (!tok)
    return err ? err : POSH_EIO;
  int r = posh__sync_acquire_fast(&d->lock, tok);
  if (posh_likely(r == 0)) {
    *tok_out = tok;
    return 0;
  }
  if (r == POSH_EOWNERDEAD) {
    dict_repair(o->heap, d);
    posh__lock_consistent(&d->lock);
    r = 0;
  } else if (r == 1) {
    r = posh__sync_lock_internal(o->heap, &d->lock, tok, 0, dict_repair, d);
  }
  if (r == 0)
    *tok_out = tok;
  return r;
}

static void dict_unlock(posh__dict_shared_t *d, uint32_t tok) {
  posh__sync_release_fast(&d->lock, tok);
}

/* dict_lock for the writers, which then use the current table as it is:
 * also checks that the table lies inside the heap (a stray write into the
 * dict's header by a faulty process must give POSH_ECORRUPT, not a write
 * outside the heap; readers check it on every look-up). */
static int dict_lock_table(posh_obj_t *o, posh__dict_shared_t *d,
                           uint32_t *tok_out) {
  int r = dict_lock(o, d, tok_out);
  if (r)
    return r;
  uint64_t cap;
  if (posh_unlikely(!table_at(o->heap, posh_atomic_load_relaxed(&d->xtable),
                              &cap))) {
    dict_unlock(d, *tok_out);
    return POSH_ECORRUPT;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * Tables.
 * ---------------------------------------------------------------------- */
static uint64_t cap_for(uint64_t min_cap, uint64_t n) {
  uint64_t c = min_cap;
  while (c < 2 * n)
    c <<= 1;
  return c;
}

/* The memory of a table of cap slots, not yet initialised (table_init). */
static dict_table_t *table_alloc(posh_heap_t *h, uint64_t cap, int *err) {
  if (cap > (h->view.capacity - sizeof(dict_table_t)) / DICT_ENTRY_SIZE) {
    *err = POSH_ENOMEM;
    return NULL;
  }
  size_t bytes = sizeof(dict_table_t) + (size_t)cap * DICT_ENTRY_SIZE;
  dict_table_t *t = posh_aligned_alloc(h, DICT_ENTRY_SIZE, bytes);
  if (!t)
    *err = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
  return t;
}

/* An empty table: zeroing faults every page in, most of a growth's time. */
static void table_init(dict_table_t *t, uint64_t cap) {
  memset(t, 0, sizeof(dict_table_t) + (size_t)cap * DICT_ENTRY_SIZE);
  t->magic = DICT_TABLE_MAGIC;
  t->cap = cap;
}

static dict_table_t *table_new(posh_heap_t *h, uint64_t cap, int *err) {
  dict_table_t *t = table_alloc(h, cap, err);
  if (t)
    table_init(t, cap);
  return t;
}

/* Replace the current table by a new one of cap slots holding the same
 * items (or none, for clear).  Lock held. */
static int table_replace(posh_heap_t *h, posh__dict_shared_t *d, uint64_t cap,
                         int clear) {
  int err = 0;
  uint64_t aoff = posh_atomic_load_relaxed(&d->xtable); /* ours: lock held */
  dict_table_t *a = posh__at(h, aoff);
  dict_table_t *b = table_alloc(h, cap, &err);
  if (!b)
    return err;
  dict_log_t *lg = &d->log;
  lg->table_a = aoff;
  lg->table_b = posh__off_of(h, b);
  /* Release: the record's fields before it is armed (kill -9 order; a
   * repairer reads it after its acquiring CAS on the lock word).  Armed
   * before the new table is zeroed, the longest step: a death there frees
   * it instead of leaking it (the repair of an unpublished table only
   * frees it). */
  posh_atomic32_store_release(&lg->xop, clear ? LOG_CLEAR : LOG_RESIZE);
  table_init(b, cap);
  CRASH_POINT(2);
  if (!clear) {
    uint64_t mask = cap - 1;
    for (uint64_t i = 0; i < a->cap; i++) {
      const dict_entry_t *e = &a->e[i];
      if (e->state != E_LIVE)
        continue;
      uint64_t j = e->hash & mask;
      while (b->e[j].state != E_EMPTY)
        j = (j + 1) & mask;
      memcpy(&b->e[j], e, sizeof *e);
      b->e[j].xseq = 0;
      b->used++;
      b->live++;
    }
  }
  /* Release: the new table's contents are visible before its offset
   * (pairs with the readers' acquire-load of xtable). */
  posh_atomic_store_release(&d->xtable, lg->table_b);
  /* Full barrier: the new epoch is visible before the old table is freed
   * (pairs with the readers' fence + re-read of xepoch). */
  posh_atomic_fetch_add_full(&d->xepoch, 1);
  posh_atomic_store_relaxed(&d->xcount, b->live);
  if (clear)
    table_free_blocks(h, a);
  free_logged(h, &lg->table_a);
  lg->table_b = 0;
  /* Release: disarmed only after the work (as above). */
  posh_atomic32_store_release(&lg->xop, LOG_NONE);
  d->scan_hint = 0;
  return 0;
}

/* Writer's look-up (lock held): index of key, or -1 with *free_out = the
 * slot an insert should use. */
static int64_t wfind(posh_heap_t *h, dict_table_t *t, uint64_t hash,
                     const void *key, size_t klen, uint64_t *free_out) {
  uint64_t mask = t->cap - 1, i = hash & mask;
  int64_t tomb = -1;
  for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    dict_entry_t *e = &t->e[i];
    if (e->state == E_EMPTY) {
      *free_out = tomb >= 0 ? (uint64_t)tomb : i;
      return -1;
    }
    if (e->state == E_TOMB) {
      if (tomb < 0)
        tomb = (int64_t)i;
      continue;
    }
    if (e->hash != hash || e->klen != klen)
      continue;
    const unsigned char *kp = e->data;
    if (e->flags & EF_KEY_EXT) {
      if (!span_ok(h, rd64(e->data), klen))
        continue; /* a damaged entry: never ours (posh_heap_check says) */
      kp = posh__at(h, rd64(e->data));
    }
    if (klen == 0 || memcmp(kp, key, klen) == 0)
      return (int64_t)i;
  }
  *free_out = tomb >= 0 ? (uint64_t)tomb : 0; /* unreachable: load <= 3/4 */
  return -1;
}

/* The index of key in the current table *t_out, or -1 (lock held). */
static int64_t locked_find(posh_heap_t *h, posh__dict_shared_t *d,
                           uint64_t hash, const void *key, size_t klen,
                           dict_table_t **t_out) {
  uint64_t free_slot;
  *t_out = locked_table(h, d);
  return wfind(h, *t_out, hash, key, klen, &free_slot);
}

posh_atomic32_t *posh__dict_slot_seq(posh_obj_t *dict, const void *key,
                                     size_t klen) {
  posh__dict_shared_t *d;
  if (posh__obj_get(dict, POSH_OBJ_DICT, (void **)&d) != 0)
    return NULL;
  dict_table_t *t;
  int64_t i = locked_find(dict->heap, d, key_hash(key, klen), key, klen, &t);
  return i < 0 ? NULL : &t->e[i].xseq;
}

/* Grow (or rehash away tombstones) if one more used slot would pass 3/4.
 * Lock held. */
static int ensure_room(posh_heap_t *h, posh__dict_shared_t *d) {
  dict_table_t *t = locked_table(h, d);
  if ((t->used + 1) * 4 <= t->cap * 3)
    return 0;
  return table_replace(h, d, cap_for(d->min_cap, t->live + 1), 0);
}

/* Change slot idx of the current table to `ne` (a LIVE entry whose new
 * blocks are nb[], or a TOMB) under the log protocol.  Lock held. */
static void entry_commit(posh_heap_t *h, posh__dict_shared_t *d,
                         dict_table_t *t, uint64_t idx, const dict_entry_t *ne,
                         const uint64_t nb[2]) {
  dict_entry_t *e = &t->e[idx];
  dict_log_t *lg = &d->log;
  uint64_t ob[2];
  entry_blocks(e, ob);
  /* A block the new entry keeps (the key block of an overwrite) is not
   * the old entry's to free. */
  uint64_t keep[2];
  entry_blocks(ne, keep);
  for (int k = 0; k < 2; k++)
    for (int j = 0; j < 2; j++)
      if (ob[k] && ob[k] == keep[j])
        ob[k] = 0;
  lg->table = posh__off_of(h, t);
  lg->index = idx;
  lg->new_blk[0] = nb[0];
  lg->new_blk[1] = nb[1];
  lg->old_blk[0] = ob[0];
  lg->old_blk[1] = ob[1];
  memcpy(&lg->undo, e, sizeof *e);
  /* Release: the record's fields before it is armed (kill -9 order; a
   * repairer reads it after its acquiring CAS on the lock word). */
  posh_atomic32_store_release(&lg->xop, LOG_ENTRY);
  uint32_t was = e->state;
  entry_publish(e, ne);
  CRASH_POINT(1);
  if (was == E_EMPTY)
    t->used++;
  if (was == E_LIVE && ne->state != E_LIVE)
    t->live--;
  else if (was != E_LIVE && ne->state == E_LIVE)
    t->live++;
  posh_atomic_store_relaxed(&d->xcount, t->live);
  /* Release: the entry and counters before the record says "done" (as
   * above). */
  posh_atomic32_store_release(&lg->xop, LOG_ENTRY_DONE);
  lg->new_blk[0] = lg->new_blk[1] = 0;
  free_logged(h, &lg->old_blk[0]);
  free_logged(h, &lg->old_blk[1]);
  /* Release: disarmed only after the frees (as above). */
  posh_atomic32_store_release(&lg->xop, LOG_NONE);
}

/* Store key = val (lock held).  *existed (may be NULL) tells whether the
 * key was there. */
static int locked_set(posh_heap_t *h, posh__dict_shared_t *d, uint64_t hash,
                      const void *key, size_t klen, const void *val,
                      size_t vlen) {
  int r = ensure_room(h, d);
  dict_table_t *t = locked_table(h, d);
  uint64_t fslot = 0;
  int64_t idx = wfind(h, t, hash, key, klen, &fslot);
  if (r && idx < 0)
    return r; /* could not grow and the key needs a new slot */
  dict_entry_t ne;
  memset(&ne, 0, sizeof ne);
  ne.state = E_LIVE;
  ne.klen = (uint32_t)klen;
  ne.vlen = (uint32_t)vlen;
  ne.hash = hash;
  uint64_t nb[2] = {0, 0};
  int key_ext, val_ext;
  if (klen + vlen <= DICT_DATA) {
    key_ext = val_ext = 0;
  } else if (klen + 8 <= DICT_DATA) {
    key_ext = 0;
    val_ext = 1;
  } else {
    key_ext = 1;
    val_ext = 8 + vlen > DICT_DATA;
  }
  uint64_t koff = 0;
  if (key_ext) {
    dict_entry_t *old = idx >= 0 ? &t->e[idx] : NULL;
    if (old && (old->flags & EF_KEY_EXT)) {
      koff = rd64(old->data); /* an overwrite keeps the key block */
    } else {
      void *kb = posh_alloc(h, klen);
      if (!kb)
        return posh_last_error() ? posh_last_error() : POSH_ENOMEM;
      memcpy(kb, key, klen);
      koff = nb[0] = posh__off_of(h, kb);
    }
    ne.flags |= EF_KEY_EXT;
    wr64(ne.data, koff);
  } else if (klen) {
    memcpy(ne.data, key, klen);
  }
  uint32_t ks = kspan_of(ne.flags, (uint32_t)klen);
  if (val_ext) {
    void *vb = posh_alloc(h, vlen);
    if (!vb) {
      int e = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
      if (nb[0])
        posh_free(h, posh__at(h, nb[0]));
      return e;
    }
    memcpy(vb, val, vlen);
    nb[1] = posh__off_of(h, vb);
    ne.flags |= EF_VAL_EXT;
    wr64(ne.data + ks, nb[1]);
  } else if (vlen) {
    memcpy(ne.data + ks, val, vlen);
  }
  entry_commit(h, d, t, idx >= 0 ? (uint64_t)idx : fslot, &ne, nb);
  return 0;
}

static void locked_delete(posh_heap_t *h, posh__dict_shared_t *d,
                          dict_table_t *t, uint64_t idx) {
  dict_entry_t ne;
  memset(&ne, 0, sizeof ne);
  ne.state = E_TOMB;
  uint64_t nb[2] = {0, 0};
  entry_commit(h, d, t, idx, &ne, nb);
}

/* ------------------------------------------------------------------------
 * Readers.
 * ---------------------------------------------------------------------- */
enum { RD_DONE = 0, RD_RETRY = 1 };

/* One optimistic look-up.  RD_RETRY when a writer interfered; else RD_DONE
 * with *res = 0 (found; value copied when it fits: *res = POSH_EMSGSIZE
 * otherwise) or POSH_ENOENT / POSH_ECORRUPT. */
static int lookup_once(const posh_heap_t *h, posh__dict_shared_t *d,
                       uint64_t hash, const void *key, size_t klen, void *buf,
                       size_t cap, size_t *vlen_out, int *res) {
  /* Acquire: pairs with the full-barrier increment after a table is
   * published, so the xtable we load next is at least that new. */
  uint64_t e1 = posh_atomic_load_acquire(&d->xepoch);
  /* Acquire: pairs with the release-store of a new table's offset. */
  uint64_t toff = posh_atomic_load_acquire(&d->xtable);
  uint64_t tcap;
  dict_table_t *t = table_at(h, toff, &tcap);
  if (posh_unlikely(!t)) {
    dict_fence_loads(); /* as below: validate what we read */
    if (posh_atomic_load_relaxed(&d->xepoch) != e1)
      return RD_RETRY;
    *res = POSH_ECORRUPT;
    return RD_DONE;
  }
  uint64_t mask = tcap - 1, i = hash & mask;
  /* Both lines of the first slot at once (the value spans them). */
  __builtin_prefetch((const char *)&t->e[i] + 64);
  for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
    dict_entry_t *e = &t->e[i];
    /* Acquire: pairs with the writer's release-store of the even value,
     * so the fields we read next are at least that recent. */
    uint32_t s1 = posh_atomic32_load_acquire(&e->xseq);
    if (s1 & 1u)
      return RD_RETRY;
    /* Cheap reject before the full view: most probes end here.  A torn
     * read can only make us skip an entry being rewritten right now, and
     * a key's hash never changes while LIVE, so skipping is what an
     * earlier (or later) reader would have done too. */
    uint8_t st = *(const volatile uint8_t *)&e->state;
    if (st == E_EMPTY)
      break;
    if (st != E_LIVE || *(const volatile uint64_t *)&e->hash != hash)
      continue;
    entry_view_t v;
    entry_peek(e, &v);
    if (v.state == E_EMPTY)
      break;
    if (v.state != E_LIVE || v.hash != hash || v.klen != klen)
      continue; /* a key's hash and length never change while LIVE */
    const unsigned char *kp = NULL, *vp = NULL; /* set when entry_locate succeeds */
    int ok = entry_locate(h, e, &v, &kp, &vp);
    int match = ok && (klen == 0 || memcmp(kp, key, klen) == 0);
    if (match && buf && v.vlen <= cap)
      memcpy(buf, vp, v.vlen); /* copy out before validating */
    /* Load fence: every load above completes before the re-reads (pairs
     * with the writer's fence after its odd store and its full-barrier
     * epoch increment). */
    dict_fence_loads();
    if (posh_atomic32_load_relaxed(&e->xseq) != s1 ||
        posh_atomic_load_relaxed(&d->xepoch) != e1)
      return RD_RETRY;
    if (!ok) {
      *res = POSH_ECORRUPT; /* stable and implausible */
      return RD_DONE;
    }
    if (!match)
      continue;
    if (vlen_out)
      *vlen_out = v.vlen;
    /* Without vlen_out the caller only asks whether the key is there. */
    *res = vlen_out && v.vlen > cap ? POSH_EMSGSIZE : 0;
    return RD_DONE;
  }
  dict_fence_loads(); /* loads above before the epoch re-read (as above) */
  if (posh_atomic_load_relaxed(&d->xepoch) != e1)
    return RD_RETRY;
  *res = POSH_ENOENT;
  return RD_DONE;
}

/* Equality of two keys of the same length, 1 to 16 bytes, in at most two
 * word compares (overlapping when the length is not a multiple). */
static inline int key_eq_short(const unsigned char *a, const unsigned char *b,
                               size_t n) {
  if (n >= 8)
    return rd64(a) == rd64(b) && rd64(a + n - 8) == rd64(b + n - 8);
  if (n >= 4) {
    uint32_t a0, a1, b0, b1;
    memcpy(&a0, a, 4);
    memcpy(&a1, a + n - 4, 4);
    memcpy(&b0, b, 4);
    memcpy(&b1, b + n - 4, 4);
    return a0 == b0 && a1 == b1;
  }
  return a[0] == b[0] && a[n >> 1] == b[n >> 1] && a[n - 1] == b[n - 1];
}

/* memcpy of an inline value (n < DICT_DATA) with fixed-size moves, two
 * overlapping ones per size band: a call to memcpy is a good part of a
 * fast get. */
static inline void copy_short(unsigned char *dst, const unsigned char *src,
                              size_t n) {
  if (n >= 32 && n <= 64) {
    memcpy(dst, src, 32);
    memcpy(dst + n - 32, src + n - 32, 32);
  } else if (n >= 16 && n < 32) {
    memcpy(dst, src, 16);
    memcpy(dst + n - 16, src + n - 16, 16);
  } else if (n >= 8 && n < 16) {
    memcpy(dst, src, 8);
    memcpy(dst + n - 8, src + n - 8, 8);
  } else {
    memcpy(dst, src, n);
  }
}

/* get_fast's answer when it cannot decide (not an error code). */
#define GET_SLOW 1

/* The common get, in as few instructions as possible: a key of 1 to 16
 * bytes and a value inline in the entry, nothing in the way.  A get costs
 * one cache miss (and, on a big table, a TLB miss) on its entry; keeping
 * this path short lets the CPU overlap the misses of consecutive gets,
 * which is what a get's speed on a big table is (measured on the
 * reference VM: 40 extra instructions per get cut a bare loop over the
 * same layout from ~10 to ~6 M gets/s).  Returns 0 (value copied, *vlen_out set), POSH_ENOENT, or
 * GET_SLOW for anything unusual (a writer at work, a key or value in its
 * own block, a buffer too small, a long probe): lookup decides those. */
static inline __attribute__((always_inline)) int
get_fast(const posh_heap_t *h, posh__dict_shared_t *d, uint64_t hash,
         const void *key, size_t klen, void *buf, size_t cap,
         size_t *vlen_out) {
  /* Acquire loads as in lookup_once (same pairings). */
  uint64_t e1 = posh_atomic_load_acquire(&d->xepoch);
  uint64_t toff = posh_atomic_load_acquire(&d->xtable);
  /* Memory safety only, in few instructions (table_at checks more): the
   * header line and mask + 1 entries lie inside the heap, whatever the
   * table's contents (it may be one freed meanwhile: the epoch re-check
   * rejects what we read then). */
  uint64_t hcap = h->view.capacity;
  if (posh_unlikely(toff > hcap - 2 * DICT_ENTRY_SIZE || (toff & 127) != 0))
    return GET_SLOW;
  const dict_table_t *t = (const dict_table_t *)(h->view.base + toff);
  uint64_t mask = *(const volatile uint64_t *)&t->cap - 1;
  if (posh_unlikely(mask > ((hcap - toff) / DICT_ENTRY_SIZE) - 2))
    return GET_SLOW;
  /* At most 32 slots from home; the probe position counts from the hash,
   * which stays live anyway, so the loop needs no counter of its own
   * (each live register here is one fewer spill). */
  for (uint64_t j = hash; j - hash < 32; j++) {
    const dict_entry_t *e = &t->e[j & mask];
    /* Acquire: pairs with the writer's release-store of the even value. */
    uint32_t s1 = posh_atomic32_load_acquire(&e->xseq);
    const volatile dict_entry_t *ve = e;
    uint8_t st = ve->state;
    if (posh_likely(st == E_LIVE && ve->hash == hash)) {
      uint32_t kl = ve->klen, vl = ve->vlen;
      /* The value fits the buffer and lies in the entry. */
      if (posh_unlikely(((s1 & 1u) | ve->flags | (kl ^ (uint32_t)klen)) != 0 ||
                        vl > cap || vl > DICT_DATA - klen))
        return GET_SLOW;
      int match = key_eq_short(e->data, key, klen);
      if (match)
        copy_short(buf, e->data + klen, vl);
      /* Load fence: the copies before the re-reads (as lookup_once). */
      dict_fence_loads();
      if (posh_atomic32_load_relaxed(&e->xseq) != s1 ||
          posh_atomic_load_relaxed(&d->xepoch) != e1)
        return GET_SLOW;
      if (match) {
        if (vlen_out)
          *vlen_out = vl;
        return 0;
      }
    } else if (st == E_EMPTY) {
      if (s1 & 1u)
        return GET_SLOW;
      dict_fence_loads(); /* the loads above before the epoch re-read */
      if (posh_atomic_load_relaxed(&d->xepoch) != e1)
        return GET_SLOW;
      return POSH_ENOENT;
    }
    /* A tombstone, another key, or a slot being rewritten: skipping is
     * always a valid outcome (see lookup_once). */
  }
  return GET_SLOW;
}

/* Look-up with retries; after DICT_READ_TRIES failed attempts (a writer
 * stalled or killed in the middle of our entry) one attempt under the lock,
 * whose acquisition repairs a dead writer's entry. */
static int lookup(posh_obj_t *o, posh__dict_shared_t *d, uint64_t hash,
                  const void *key, size_t klen, void *buf, size_t cap,
                  size_t *vlen_out) {
  int res = 0;
  for (unsigned tries = 0; tries < DICT_READ_TRIES; tries++) {
    if (lookup_once(o->heap, d, hash, key, klen, buf, cap, vlen_out, &res) ==
        RD_DONE)
      return res;
    posh_cpu_relax();
  }
  uint32_t tok;
  int r = dict_lock(o, d, &tok);
  if (r)
    return r;
  /* With the lock held no writer runs (and taking it repaired a dead
   * one's entry): a retry now means an odd sequence or a moving epoch
   * nobody is writing, i.e. a damaged dict, not a reason to spin. */
  if (lookup_once(o->heap, d, hash, key, klen, buf, cap, vlen_out, &res) !=
      RD_DONE)
    res = POSH_ECORRUPT;
  dict_unlock(d, tok);
  return res;
}

/* ------------------------------------------------------------------------
 * Argument checks.
 * ---------------------------------------------------------------------- */
static inline int check_key(const void *key, size_t klen) {
  if (!key && klen)
    return POSH_EINVAL;
  if (klen > POSH_DICT_KEY_MAX)
    return POSH_EMSGSIZE;
  return 0;
}
static inline int check_val(const void *val, size_t vlen) {
  if (!val && vlen)
    return POSH_EINVAL;
  if (vlen > POSH_DICT_VALUE_MAX)
    return POSH_EMSGSIZE;
  return 0;
}

#define DICT_GET(o, d)                                                         \
  do {                                                                         \
    int r_ = posh__obj_get((o), POSH_OBJ_DICT, (void **)&(d));                 \
    if (posh_unlikely(r_))                                                     \
      return r_;                                                               \
  } while (0)

/* ------------------------------------------------------------------------
 * Public API.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_dict_create(posh_heap_t *heap, const char *name,
                                 const posh_dict_options_t *opts,
                                 posh_obj_t **dict_out) {
  if (!heap || !dict_out)
    return POSH_EINVAL;
  uint64_t want = opts && opts->capacity ? opts->capacity : 8; /* as dict.h says */
  if (want > heap->view.capacity / DICT_ENTRY_SIZE)
    return POSH_ENOMEM;
  uint64_t min_cap = DICT_MIN_CAP;
  while (min_cap * 3 < want * 4 + 4) /* want + 1 keys at load <= 3/4 */
    min_cap <<= 1;
  int err = 0;
  posh__dict_shared_t *d = posh__obj_alloc(heap, POSH_OBJ_DICT, 0, sizeof *d,
                                           DICT_ENTRY_SIZE, &err);
  if (!d)
    return err;
  dict_table_t *t = table_new(heap, min_cap, &err);
  if (!t) {
    posh__obj_discard(heap, d);
    return err;
  }
  d->min_cap = min_cap;
  posh__lock_init(&d->lock);
  posh_atomic_store_relaxed(&d->xtable, posh__off_of(heap, t));
  posh_atomic_store_relaxed(&d->xepoch, 1);
  /* publish orders these stores before the object becomes reachable. */
  return posh__obj_publish(heap, d, name, dict_out);
}

/* posh_dict_get with every check and every case (posh_dict_get's fast
 * path hands anything unusual to it). */
static __attribute__((noinline)) int dict_get_full(posh_obj_t *dict, const void *key, size_t klen,
                         void *buf, size_t cap, size_t *vlen_out) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (r)
    return r;
  if (!buf && cap)
    return POSH_EINVAL;
  size_t vl = 0;
  r = lookup(dict, d, key_hash(key, klen), key, klen, buf, cap, &vl);
  if (vlen_out && (r == 0 || r == POSH_EMSGSIZE))
    *vlen_out = vl;
  return r;
}

POSH_EXTERN int posh_dict_get(posh_obj_t *dict, const void *key, size_t klen,
                              void *buf, size_t cap, size_t *vlen_out) {
  /* Fast path (see get_fast): a ready handle, a key of 1 to 16 bytes, a
   * buffer.  Whatever it skips or cannot decide, dict_get_full does. */
  if (posh_likely(posh__obj_ready(dict, POSH_OBJ_DICT) && key && buf &&
                  klen - 1 < 16)) {
    int r = get_fast(dict->heap, (posh__dict_shared_t *)dict->hdr,
                     key_hash_short(key, klen), key, klen, buf, cap, vlen_out);
    if (posh_likely(r != GET_SLOW))
      return r;
  }
  return dict_get_full(dict, key, klen, buf, cap, vlen_out);
}

/* Keys whose entries posh_dict_get_many fetches together: enough misses in
 * flight to cover the memory latency, few enough that the entries are
 * still in the L1 cache when their gets read them. */
#define DICT_GET_MANY_BATCH 16

POSH_EXTERN int posh_dict_get_many(posh_obj_t *dict, posh_dict_get_req_t *reqs,
                                   size_t n) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  if (!reqs && n)
    return POSH_EINVAL;
  const posh_heap_t *h = dict->heap;
  uint64_t hash[DICT_GET_MANY_BATCH];
  for (size_t b = 0; b < n; b += DICT_GET_MANY_BATCH) {
    size_t m = n - b < DICT_GET_MANY_BATCH ? n - b : DICT_GET_MANY_BATCH;
    posh_dict_get_req_t *rq = reqs + b;
    /* 1. Hash every key and prefetch its home entry in the current table:
     * a hint only (the table may be replaced meanwhile: the gets below
     * check everything). */
    uint64_t tcap = 0;
    const dict_table_t *t =
        table_at(h, posh_atomic_load_acquire(&d->xtable), &tcap);
    for (size_t i = 0; i < m; i++) {
      hash[i] = 0;
      if (check_key(rq[i].key, rq[i].klen) != 0)
        continue; /* dict_get_full reports it */
      hash[i] = posh__dict_key_hash(rq[i].key, rq[i].klen);
      if (t) {
        /* The home entry and the next one (a quarter of the keys at the
         * dict's load live one slot past home): four lines. */
        uint64_t j = hash[i] & (tcap - 1);
        const char *e = (const char *)&t->e[j];
        const char *f = (const char *)&t->e[(j + 1) & (tcap - 1)];
        __builtin_prefetch(e);
        __builtin_prefetch(e + 64);
        __builtin_prefetch(f);
        __builtin_prefetch(f + 64);
      }
    }
    /* 2. The gets, each as posh_dict_get does it (the fast one when it
     * applies, with the hash computed above). */
    for (size_t i = 0; i < m; i++) {
      posh_dict_get_req_t *q = &rq[i];
      int r = GET_SLOW;
      if (posh__obj_ready(dict, POSH_OBJ_DICT) && q->key && q->buf &&
          q->klen - 1 < 16)
        r = get_fast(h, d, hash[i], q->key, q->klen, q->buf, q->cap, &q->vlen);
      if (r == GET_SLOW)
        r = dict_get_full(dict, q->key, q->klen, q->buf, q->cap, &q->vlen);
      if (r != 0 && r != POSH_EMSGSIZE)
        q->vlen = 0;
      q->result = r;
    }
  }
  return 0;
}

POSH_EXTERN int posh_dict_get_alloc(posh_obj_t *dict, const void *key,
                                    size_t klen, void **val_out,
                                    size_t *vlen_out) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (r)
    return r;
  if (!val_out)
    return POSH_EINVAL;
  uint64_t hash = key_hash(key, klen);
  size_t cap = 256, vl = 0;
  for (;;) {
    unsigned char *b = malloc(cap);
    if (!b)
      return POSH_ENOMEM;
    r = lookup(dict, d, hash, key, klen, b, cap, &vl);
    if (r == POSH_EMSGSIZE) {
      free(b);
      cap = vl ? vl : 1; /* retry with the size seen (it may change) */
      continue;
    }
    if (r) {
      free(b);
      return r;
    }
    *val_out = b;
    if (vlen_out)
      *vlen_out = vl;
    return 0;
  }
}

POSH_EXTERN int posh_dict_contains(posh_obj_t *dict, const void *key,
                                   size_t klen) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (r)
    return r;
  r = lookup(dict, d, key_hash(key, klen), key, klen, NULL, 0, NULL);
  return r == POSH_EMSGSIZE ? 0 : r;
}

POSH_EXTERN int posh_dict_len(posh_obj_t *dict, size_t *len_out) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  if (!len_out)
    return POSH_EINVAL;
  /* Relaxed: a snapshot of a counter only the lock holder writes. */
  *len_out = (size_t)posh_atomic_load_relaxed(&d->xcount);
  return 0;
}

POSH_EXTERN int posh_dict_set(posh_obj_t *dict, const void *key, size_t klen,
                              const void *val, size_t vlen) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (!r)
    r = check_val(val, vlen);
  if (r)
    return r;
  uint64_t hash = key_hash(key, klen);
  uint32_t tok;
  if ((r = dict_lock_table(dict, d, &tok)) != 0)
    return r;
  r = locked_set(dict->heap, d, hash, key, klen, val, vlen);
  dict_unlock(d, tok);
  return r;
}

POSH_EXTERN int posh_dict_delete(posh_obj_t *dict, const void *key,
                                 size_t klen) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (r)
    return r;
  uint64_t hash = key_hash(key, klen);
  uint32_t tok;
  if ((r = dict_lock_table(dict, d, &tok)) != 0)
    return r;
  posh_heap_t *h = dict->heap;
  dict_table_t *t;
  int64_t idx = locked_find(h, d, hash, key, klen, &t);
  if (idx < 0)
    r = POSH_ENOENT;
  else
    locked_delete(h, d, t, (uint64_t)idx);
  dict_unlock(d, tok);
  return r;
}

/* Value of the LIVE entry idx (lock held). */
static const unsigned char *locked_value(posh_heap_t *h, const dict_entry_t *e) {
  if (e->flags & EF_VAL_EXT)
    return posh__at(h, rd64(e->data + kspan_of(e->flags, e->klen)));
  return e->data + kspan_of(e->flags, e->klen);
}
static const unsigned char *locked_key(posh_heap_t *h, const dict_entry_t *e) {
  return (e->flags & EF_KEY_EXT) ? posh__at(h, rd64(e->data)) : e->data;
}

/* Copy the value of the LIVE entry e into buf (lock held): 0, or
 * POSH_EMSGSIZE when it does not fit cap; *vlen_out (may be NULL) gets its
 * length either way. */
static int locked_copy_value(posh_heap_t *h, const dict_entry_t *e, void *buf,
                             size_t cap, size_t *vlen_out) {
  if (vlen_out)
    *vlen_out = e->vlen;
  if (e->vlen > cap)
    return POSH_EMSGSIZE;
  if (e->vlen)
    memcpy(buf, locked_value(h, e), e->vlen);
  return 0;
}

POSH_EXTERN int posh_dict_setdefault(posh_obj_t *dict, const void *key,
                                     size_t klen, const void *dflt,
                                     size_t dlen, void *buf, size_t cap,
                                     size_t *vlen_out, int *inserted) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (!r)
    r = check_val(dflt, dlen);
  if (r)
    return r;
  if (!buf && cap)
    return POSH_EINVAL;
  uint64_t hash = key_hash(key, klen);
  uint32_t tok;
  if ((r = dict_lock_table(dict, d, &tok)) != 0)
    return r;
  posh_heap_t *h = dict->heap;
  dict_table_t *t;
  int64_t idx = locked_find(h, d, hash, key, klen, &t);
  if (idx >= 0) {
    r = locked_copy_value(h, &t->e[idx], buf, cap, vlen_out);
    if (inserted)
      *inserted = 0;
  } else {
    r = locked_set(h, d, hash, key, klen, dflt, dlen);
    if (!r) {
      if (vlen_out)
        *vlen_out = dlen;
      if (inserted)
        *inserted = 1;
    }
  }
  dict_unlock(d, tok);
  return r;
}

POSH_EXTERN int posh_dict_cas(posh_obj_t *dict, const void *key, size_t klen,
                              const void *expect, size_t elen,
                              const void *val, size_t vlen) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (!r)
    r = check_val(val, vlen);
  if (!r && expect)
    r = check_val(expect, elen);
  else if (!r && elen) /* "absent" with a length: a caller's mistake */
    r = POSH_EINVAL;
  if (r)
    return r;
  uint64_t hash = key_hash(key, klen);
  uint32_t tok;
  if ((r = dict_lock_table(dict, d, &tok)) != 0)
    return r;
  posh_heap_t *h = dict->heap;
  dict_table_t *t;
  int64_t idx = locked_find(h, d, hash, key, klen, &t);
  if (!expect) {
    r = idx >= 0 ? POSH_EEXIST : 0;
  } else if (idx < 0) {
    r = POSH_ENOENT;
  } else {
    dict_entry_t *e = &t->e[idx];
    if (e->vlen != elen || (elen && memcmp(locked_value(h, e), expect, elen)))
      r = POSH_EAGAIN;
  }
  if (!r)
    r = locked_set(h, d, hash, key, klen, val, vlen);
  dict_unlock(d, tok);
  return r;
}

POSH_EXTERN int posh_dict_pop(posh_obj_t *dict, const void *key, size_t klen,
                              void *buf, size_t cap, size_t *vlen_out) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  int r = check_key(key, klen);
  if (r)
    return r;
  if (!buf && cap)
    return POSH_EINVAL;
  uint64_t hash = key_hash(key, klen);
  uint32_t tok;
  if ((r = dict_lock_table(dict, d, &tok)) != 0)
    return r;
  posh_heap_t *h = dict->heap;
  dict_table_t *t;
  int64_t idx = locked_find(h, d, hash, key, klen, &t);
  if (idx < 0) {
    r = POSH_ENOENT;
  } else {
    r = locked_copy_value(h, &t->e[idx], buf, cap, vlen_out);
    if (!r)
      locked_delete(h, d, t, (uint64_t)idx);
  }
  dict_unlock(d, tok);
  return r;
}

POSH_EXTERN int posh_dict_popitem(posh_obj_t *dict, void *kbuf, size_t kcap,
                                  size_t *klen_out, void *vbuf, size_t vcap,
                                  size_t *vlen_out) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  if ((!kbuf && kcap) || (!vbuf && vcap))
    return POSH_EINVAL;
  uint32_t tok;
  int r = dict_lock_table(dict, d, &tok);
  if (r)
    return r;
  posh_heap_t *h = dict->heap;
  dict_table_t *t = locked_table(h, d);
  r = POSH_ENOENT;
  if (t->live) {
    uint64_t mask = t->cap - 1, i = d->scan_hint & mask;
    for (uint64_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
      dict_entry_t *e = &t->e[i];
      if (e->state != E_LIVE)
        continue;
      if (klen_out)
        *klen_out = e->klen;
      if (vlen_out)
        *vlen_out = e->vlen;
      if (e->klen > kcap || e->vlen > vcap) {
        r = POSH_EMSGSIZE;
        break;
      }
      if (e->klen)
        memcpy(kbuf, locked_key(h, e), e->klen);
      if (e->vlen)
        memcpy(vbuf, locked_value(h, e), e->vlen);
      d->scan_hint = i;
      locked_delete(h, d, t, i);
      r = 0;
      break;
    }
  }
  dict_unlock(d, tok);
  return r;
}

POSH_EXTERN int posh_dict_update(posh_obj_t *dict,
                                 const posh_dict_item_t *items, size_t n) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  if (!items && n)
    return POSH_EINVAL;
  for (size_t i = 0; i < n; i++) {
    int r = check_key(items[i].key, items[i].klen);
    if (!r)
      r = check_val(items[i].val, items[i].vlen);
    if (r)
      return r;
  }
  if (n == 0)
    return 0;
  uint32_t tok;
  int r = dict_lock_table(dict, d, &tok);
  if (r)
    return r;
  for (size_t i = 0; i < n && !r; i++)
    r = locked_set(dict->heap, d, key_hash(items[i].key, items[i].klen),
                   items[i].key, items[i].klen, items[i].val, items[i].vlen);
  dict_unlock(d, tok);
  return r;
}

POSH_EXTERN int posh_dict_clear(posh_obj_t *dict) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  uint32_t tok;
  int r = dict_lock_table(dict, d, &tok);
  if (r)
    return r;
  r = table_replace(dict->heap, d, d->min_cap, 1);
  dict_unlock(d, tok);
  return r;
}

/* One optimistic step of an iteration (see iter_next). */
static int iter_once(const posh_heap_t *h, posh__dict_shared_t *d,
                     posh_dict_iter_t *it, void *kbuf, size_t kcap,
                     size_t *klen_out, void *vbuf, size_t vcap,
                     size_t *vlen_out, int *res) {
  /* Acquire loads: as lookup_once. */
  uint64_t e1 = posh_atomic_load_acquire(&d->xepoch);
  uint64_t toff = posh_atomic_load_acquire(&d->xtable);
  uint64_t tcap;
  dict_table_t *t = table_at(h, toff, &tcap);
  if (posh_unlikely(!t)) {
    dict_fence_loads(); /* validate what we read (as lookup_once) */
    if (posh_atomic_load_relaxed(&d->xepoch) != e1)
      return RD_RETRY;
    *res = POSH_ECORRUPT;
    return RD_DONE;
  }
  if (!it->started) {
    it->started = 1;
    it->epoch = e1;
    it->pos = 0;
  } else if (it->epoch != e1) {
    it->epoch = e1; /* table replaced: start over on the new one */
    it->pos = 0;
    it->restarts++;
  }
  for (uint64_t i = it->pos; i < tcap; i++) {
    dict_entry_t *e = &t->e[i];
    /* Acquire: as lookup_once. */
    uint32_t s1 = posh_atomic32_load_acquire(&e->xseq);
    if (s1 & 1u) {
      it->pos = i;
      return RD_RETRY;
    }
    entry_view_t v;
    entry_peek(e, &v);
    if (v.state != E_LIVE)
      continue;
    const unsigned char *kp = NULL, *vp = NULL; /* set when entry_locate succeeds */
    int ok = entry_locate(h, e, &v, &kp, &vp);
    int fits = v.klen <= kcap && v.vlen <= vcap;
    if (ok && fits) {
      if (v.klen)
        memcpy(kbuf, kp, v.klen);
      if (v.vlen)
        memcpy(vbuf, vp, v.vlen);
    }
    dict_fence_loads(); /* copies done before the re-reads (as lookup_once) */
    if (posh_atomic32_load_relaxed(&e->xseq) != s1 ||
        posh_atomic_load_relaxed(&d->xepoch) != e1) {
      it->pos = i;
      return RD_RETRY;
    }
    if (!ok) {
      *res = POSH_ECORRUPT;
      return RD_DONE;
    }
    if (klen_out)
      *klen_out = v.klen;
    if (vlen_out)
      *vlen_out = v.vlen;
    it->pos = fits ? i + 1 : i;
    *res = fits ? 0 : POSH_EMSGSIZE;
    return RD_DONE;
  }
  dict_fence_loads(); /* as lookup_once */
  if (posh_atomic_load_relaxed(&d->xepoch) != e1)
    return RD_RETRY;
  it->pos = tcap;
  *res = POSH_ENOENT;
  return RD_DONE;
}

POSH_EXTERN int posh_dict_iter_next(posh_obj_t *dict, posh_dict_iter_t *it,
                                    void *kbuf, size_t kcap, size_t *klen_out,
                                    void *vbuf, size_t vcap, size_t *vlen_out) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  if (!it || (!kbuf && kcap) || (!vbuf && vcap))
    return POSH_EINVAL;
  int res = 0;
  for (unsigned tries = 0; tries < DICT_READ_TRIES; tries++) {
    if (iter_once(dict->heap, d, it, kbuf, kcap, klen_out, vbuf, vcap,
                  vlen_out, &res) == RD_DONE)
      return res;
    posh_cpu_relax();
  }
  uint32_t tok;
  int r = dict_lock(dict, d, &tok);
  if (r)
    return r;
  /* As in lookup: under the lock a retry means a damaged dict. */
  if (iter_once(dict->heap, d, it, kbuf, kcap, klen_out, vbuf, vcap, vlen_out,
                &res) != RD_DONE)
    res = POSH_ECORRUPT;
  dict_unlock(d, tok);
  return res;
}

POSH_EXTERN int posh_dict_foreach(posh_obj_t *dict, posh_dict_visit_fn visit,
                                  void *arg) {
  posh__dict_shared_t *d;
  DICT_GET(dict, d);
  if (!visit)
    return POSH_EINVAL;
  size_t kcap = 256, vcap = 4096;
  unsigned char *kb = malloc(kcap), *vb = malloc(vcap);
  int r = 0;
  posh_dict_iter_t it = POSH_DICT_ITER_INIT;
  while (kb && vb) {
    size_t kl = 0, vl = 0;
    r = posh_dict_iter_next(dict, &it, kb, kcap, &kl, vb, vcap, &vl);
    if (r == POSH_EMSGSIZE) {
      if (kl > kcap) {
        free(kb);
        kb = malloc(kcap = kl);
      }
      if (vl > vcap) {
        free(vb);
        vb = malloc(vcap = vl);
      }
      continue;
    }
    if (r == POSH_ENOENT) {
      r = 0;
      break;
    }
    if (r)
      break;
    if ((r = visit(kb, kl, vb, vl, arg)) != 0)
      break;
  }
  if (!kb || !vb)
    r = POSH_ENOMEM;
  free(kb);
  free(vb);
  return r;
}
