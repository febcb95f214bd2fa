/* SPDX-License-Identifier: MIT */
/*
 * This file contains libposh's internal declarations: the layout of a heap
 * segment (header, registry, directory, page table, pages), the process-local
 * heap handle, the robust lock word used inside the heap, and the functions
 * each internal file exports to the others, grouped by defining file.
 *
 * Names: internal non-static functions are posh__*; fields of shared
 * structures that are accessed atomically start with `x`; everything in a
 * struct named *_shared or posh__hdr/posh__slot/posh__page lives in the heap
 * and is reached by offset.
 */
#ifndef POSH_INTERNAL_H
#define POSH_INTERNAL_H

#include "config.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "posh.h"
#include "atomic.h"
#include "prim.h"

/* ------------------------------------------------------------------------
 * Assertions: three levels (POSH_DEBUG 0/1/2) as mimalloc.  Level 1 checks
 * cheap invariants, level 2 expensive ones (double frees on the owner path,
 * repair validation).  An assertion never allocates from the shared heap.
 * ---------------------------------------------------------------------- */
#ifndef POSH_DEBUG
#define POSH_DEBUG 0
#endif
void posh__assert_fail(const char *expr, const char *file, int line);
#if POSH_DEBUG >= 1
#define posh_assert(e) ((e) ? (void)0 : posh__assert_fail(#e, __FILE__, __LINE__))
#else
#define posh_assert(e) ((void)0)
#endif
#if POSH_DEBUG >= 2
#define posh_assert_expensive(e) posh_assert(e)
#else
#define posh_assert_expensive(e) ((void)0)
#endif

#define POSH_CACHELINE 64
#define POSH_ALIGNED(n) __attribute__((aligned(n)))
#define posh_likely(x) __builtin_expect(!!(x), 1)
#define posh_unlikely(x) __builtin_expect(!!(x), 0)
/* Thread-locals: initial-exec, so a lookup in libposh.so is one
 * %fs-relative load instead of a __tls_get_addr call (libposh is linked,
 * not dlopen()ed late; Python loads it at import, where the static TLS
 * reserve covers these few words). */
#define POSH_TLS __thread __attribute__((tls_model("initial-exec")))
#define POSH_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t posh__align_up(uint64_t v, uint64_t a) {
  return (v + a - 1) & ~(a - 1);
}

/* ------------------------------------------------------------------------
 * Layout constants.
 * ---------------------------------------------------------------------- */
#define POSH_MAGIC 0x5045454830534f50ull /* "POS0HEEP" little-endian */
#define POSH_ABI_VERSION 4u /* 2: shared-object table (objects/); 3: Condition wake-up counts; 4: object pins */
#define POSH_PAGE_SHIFT 16
#define POSH_PAGE_SIZE (1u << POSH_PAGE_SHIFT) /* allocator page: 64 KiB */
#define POSH_HEADER_SIZE 4096u
#define POSH_MAX_SLOTS 4096u /* token format limit (12 bits) */
#define POSH_DEFAULT_SLOTS 1024u
#define POSH_DEFAULT_NAMES 4096u
#define POSH_MAX_NAMES (1u << 20)
/* Data pages a heap needs at least; creation refuses fewer, attach too. */
#define POSH_MIN_DATA_PAGES 8

/* ------------------------------------------------------------------------
 * Tokens.  A token names one registry slot incarnation: 12 bits of slot
 * index and 18 bits of the slot's generation (bumped on every reuse), so a
 * token left in a lock word or page by a dead thread never matches a later
 * user of the same slot.  Bits 30 and 31 are free for lock-word flags.
 * Token 0 is never issued (generations start at 1).
 * ---------------------------------------------------------------------- */
#define POSH_TOKEN_SLOT_BITS 12
#define POSH_TOKEN_GEN_BITS 18
#define POSH_TOKEN_MASK ((1u << (POSH_TOKEN_SLOT_BITS + POSH_TOKEN_GEN_BITS)) - 1u)
static inline uint32_t posh__token_make(uint32_t slot, uint32_t gen) {
  return ((gen & ((1u << POSH_TOKEN_GEN_BITS) - 1u)) << POSH_TOKEN_SLOT_BITS) |
         slot;
}
static inline uint32_t posh__token_slot(uint32_t token) {
  return token & ((1u << POSH_TOKEN_SLOT_BITS) - 1u);
}
static inline uint32_t posh__token_gen(uint32_t token) {
  return (token >> POSH_TOKEN_SLOT_BITS) & ((1u << POSH_TOKEN_GEN_BITS) - 1u);
}

/* ------------------------------------------------------------------------
 * Robust lock word (lockword.c).  A futex word holding the owner's token,
 * with WAITERS set when someone may sleep on it; Drepper's three-state
 * mutex with the owner's identity in place of "1".  A waiter sleeps at most
 * POSH_LIVENESS_PERIOD_NS at a time and then checks the owner's liveness in
 * the registry, so a dead owner is noticed within that period.
 * ---------------------------------------------------------------------- */
#define POSH_LOCK_WAITERS (1u << 31)
#define POSH_LIVENESS_PERIOD_NS (50ull * 1000 * 1000) /* 50 ms backstop */

enum posh__lock_state {
  POSH_LOCK_CONSISTENT = 0,
  POSH_LOCK_OWNER_DIED = 1,      /* acquired after a death; not yet fixed */
  POSH_LOCK_NOTRECOVERABLE = 2,  /* released without being made consistent */
};

typedef struct posh__lockword {
  /* Owner token | WAITERS, 0 when free.
   * Synchronization: atomic (CAS to acquire, exchange to release). */
  posh_atomic32_t xword;
  /* enum posh__lock_state.  Written only by the lock's holder. */
  posh_atomic32_t xstate;
} posh__lockword_t;

/* ------------------------------------------------------------------------
 * Process registry (registry.c).  One 64-byte slot per attached process and
 * per thread that allocates or locks.  The first 16 bytes are changed with
 * one double-width CAS so a slot is claimed with its pid and start time at
 * once: a process killed while claiming leaves either a free slot or a
 * complete one.
 * ---------------------------------------------------------------------- */
enum posh__slot_state {
  POSH_SLOT_FREE = 0,
  POSH_SLOT_LIVE = 1,
  POSH_SLOT_DEAD = 2, /* found dead by someone; waiting to be reclaimed */
};
enum posh__slot_kind { POSH_SLOT_PROCESS = 1, POSH_SLOT_THREAD = 2 };

/* Slot control word: state:2 | kind:2 | gen:28 | pid:32 (low). */
static inline uint64_t posh__slotw_make(uint32_t state, uint32_t kind,
                                        uint32_t gen, uint32_t pid) {
  return ((uint64_t)state << 62) | ((uint64_t)kind << 60) |
         ((uint64_t)(gen & 0x0fffffffu) << 32) | pid;
}
static inline uint32_t posh__slotw_state(uint64_t w) { return (uint32_t)(w >> 62); }
static inline uint32_t posh__slotw_kind(uint64_t w) { return (uint32_t)(w >> 60) & 3u; }
static inline uint32_t posh__slotw_gen(uint64_t w) { return (uint32_t)(w >> 32) & 0x0fffffffu; }
static inline uint32_t posh__slotw_pid(uint64_t w) { return (uint32_t)w; }

typedef struct posh__slot {
  /* [0] control word, [1] start time of the process (clock ticks).
   * Synchronization: every change is a double-width CAS (claim, LIVE ->
   * DEAD, release).  Readers use posh__slot_read: two plain loads of the
   * word around the start time (every change alters the word, as claims
   * bump the generation), so reading dirties no cache line. */
  AO_double_t xid;
  /* Informational (shown by tools, never used for liveness): the process
   * slot a thread slot belongs to, and the thread id.  Written by the
   * claimer after its claim. */
  uint32_t parent;
  int32_t tid;
  uint32_t pad[10];
} POSH_ALIGNED(64) posh__slot_t;
_Static_assert(sizeof(posh__slot_t) == 64, "slot is one cache line");

/* ------------------------------------------------------------------------
 * Header: offset 0 of every heap.  The immutable part is written once by the
 * creator, covered by an XXH3 checksum, and published by storing `magic`
 * last (release); attach reads magic with acquire.
 * ---------------------------------------------------------------------- */
typedef struct posh__hdr {
  /* ---- immutable after creation (checksummed) */
  uint64_t magic;
  uint32_t abi_version;
  uint32_t header_size;
  uint64_t capacity;
  uint32_t flags;
  uint32_t page_shift;
  uint32_t max_slots;
  uint32_t max_names;
  uint64_t registry_off; /* posh__slot_t[max_slots] */
  uint64_t directory_off; /* posh__dirent_t[max_names] */
  uint64_t pagetab_off;  /* posh__page_t[npages] */
  uint64_t freemap_off;  /* uint64_t[(npages+63)/64], 1 = free page */
  uint64_t data_off;     /* first allocator page, 64 KiB aligned */
  uint64_t npages;
  uint64_t create_time_ns;
  char name[POSH_NAME_MAX + 1];
  uint64_t checksum; /* XXH3 of the bytes before this field */

  /* ---- mutable state, each group on its own cache line */
  /* Unused (was a count of attached processes; the count is now the
   * registry's live process slots, posh__registry_count_processes).  Kept
   * so the layout, and the ABI version, stay as they are. */
  POSH_ALIGNED(64) posh_atomic_t unused_attached;
  /* Set once the name has been unlinked.  Synchronization: atomic. */
  posh_atomic_t xunlinked;

  /* Protects freemap, page kind transitions, run lengths, abandoned lists
   * and the dirty-page count. */
  POSH_ALIGNED(64) posh__lockword_t page_lock;
  uint64_t page_hint;       /* page_lock: where the next search starts */
  uint64_t pages_free;      /* page_lock */
  uint64_t pages_dirty;     /* page_lock: free pages not yet punched */
  uint64_t pages_high;      /* page_lock: 1 + highest page ever used; scans
                               stop here so untouched metadata stays sparse.
                               Read without the lock as a hint (monotonic). */
  /* Abandoned pages per size class (page index + 1; 0 = empty), linked
   * through posh__page.owner_next.  page_lock. */
  uint32_t abandoned_head[POSH_SIZE_CLASS_MAX];
  /* Hint for allocators: abandoned pages exist.  Written under page_lock,
   * read without (a stale read only delays adoption). */
  posh_atomic_t xabandoned_count[POSH_SIZE_CLASS_MAX];
  /* Registry slots freed since the page table was last swept for pages
   * whose owner is gone.  Reapers add (no lock: they need no token); the
   * next allocator that takes page_lock sweeps and subtracts what it saw.
   * Synchronization: atomic. */
  posh_atomic_t xstale_owners;

  /* Serialises directory writers; readers are lock-free (seqlock). */
  POSH_ALIGNED(64) posh__lockword_t dir_lock;
  uint32_t dir_count; /* dir_lock: bound names */
  uint32_t dir_tombstones; /* dir_lock */

  /* Shared objects (objects/object.c): the list of live objects, the
   * serial that gives each one its id, and an intent record that lets the
   * next holder of obj_lock finish a list change or name count whose
   * writer died (see object.c).  Lock order: obj_lock before dir_lock. */
  POSH_ALIGNED(64) posh__lockword_t obj_lock;
  uint64_t obj_head;   /* obj_lock: offset of the first live object, 0 = none */
  uint64_t obj_serial; /* obj_lock: id of the last object created */
  uint32_t obj_count;  /* obj_lock: live objects in the list */
  uint32_t obj_log_op; /* obj_lock: enum posh__obj_log_op in progress, 0 = none */
  uint64_t obj_log_off; /* obj_lock: the object it concerns */
} posh__hdr_t;
_Static_assert(sizeof(posh__hdr_t) <= POSH_HEADER_SIZE, "header fits its page");

/* ------------------------------------------------------------------------
 * Directory entries (directory.c): open addressing with linear probing.
 * ---------------------------------------------------------------------- */
enum posh__dirent_state {
  POSH_DIRENT_EMPTY = 0,
  POSH_DIRENT_LIVE = 1,
  POSH_DIRENT_TOMBSTONE = 2,
};
typedef struct posh__dirent {
  /* Seqlock: odd while a writer (holding dir_lock) changes the entry.
   * Synchronization: release-stores by the writer, acquire-loads by readers. */
  posh_atomic32_t xseq;
  uint32_t state;     /* enum posh__dirent_state; dir_lock (seqlock for readers) */
  uint64_t hash;      /* XXH3 of the name; dir_lock */
  uint64_t off;       /* dir_lock */
  uint32_t type_tag;  /* dir_lock */
  uint16_t name_len;  /* dir_lock */
  uint16_t pad;
  char name[POSH_NAME_MAX + 1]; /* dir_lock */
  /* Of this entry as a home (the slot a hash picks first), not of the name
   * stored in it: the longest probe (entries past the home) of any name
   * bound with this home.  Look-ups stop after it, so tombstones left by
   * churn do not make a miss probe the whole table.  Only grows (reset
   * when the directory is empty); too large is harmless, so a writer
   * killed after raising it loses nothing.  Synchronization: written under
   * dir_lock with a full-barrier exchange before the entry it covers
   * becomes LIVE; readers load it with acquire before probing. */
  posh_atomic32_t xprobe_max;
  uint32_t pad3;
  uint64_t pad2[3];
} posh__dirent_t;
_Static_assert(sizeof(posh__dirent_t) == 128, "dirent is two cache lines");

/* ------------------------------------------------------------------------
 * Page descriptors (allocators/): one per 64 KiB page, in the page table.
 * ---------------------------------------------------------------------- */
enum posh__page_kind {
  POSH_PAGE_FREE = 0,
  POSH_PAGE_SMALL = 1,      /* carved into blocks of one size class */
  POSH_PAGE_LARGE_HEAD = 2, /* first page of a large run */
  POSH_PAGE_LARGE_BODY = 3, /* other pages of a large run */
};

#define POSH_PAGEF_DIRTY 1u /* free page whose memory is still committed */

/* Owner token of an abandoned small page (its owner died or exited). */
#define POSH_OWNER_ABANDONED 0u

typedef struct posh__page {
  /* enum posh__page_kind.  page_lock; read without it by free() to
   * validate a pointer (a page being freed has no live blocks). */
  uint32_t kind;
  /* LARGE_HEAD: pages in the run; LARGE_BODY: distance to the head. */
  uint32_t run_pages;
  /* SMALL: owner token, POSH_OWNER_ABANDONED while abandoned.
   * Synchronization: atomic; CAS ABANDONED -> adopter, plain store by the
   * page allocator when the page is carved. */
  posh_atomic32_t xowner;
  uint32_t size_class;  /* SMALL; immutable while SMALL */
  uint32_t block_size;  /* SMALL; immutable while SMALL */
  uint32_t capacity;    /* SMALL: blocks in the page; immutable */
  uint32_t first_block; /* SMALL: byte offset of block 0 in the page */
  uint32_t reciprocal;  /* SMALL: ceil(2^32 / block_size), for index math */
  uint16_t flags;       /* page_lock: POSH_PAGEF_* */
  uint16_t head_off;    /* SMALL: where the page head starts in the page.
                           Heads are staggered by page index ("colored") so
                           that the heads of many 64 KiB-aligned pages do not
                           all fall into the same cache sets. */
  uint16_t free_bitmap_off; /* SMALL: byte offset of the owner's free bitmap
                               in the page (copied from the class table so
                               the fast paths need no table look-up) */
  uint16_t bitmap_words;    /* SMALL: words per bitmap */
  uint16_t pad0;
  uint64_t large_size;  /* LARGE_HEAD: bytes requested */
  /* ---- owner-only fields (plain loads/stores by the owning thread), on
   * their own cache line: remote freers read only the line above, so the
   * owner's stores never bounce it between cores.  Stores are ordered
   * (compiler barrier) so a kill -9 between any two leaves the free list
   * well formed; adoption recomputes `used`. */
  POSH_ALIGNED(64) uint32_t bump; /* blocks [bump, capacity) never handed out;
                                     only grows while the page is SMALL */
  uint32_t used;        /* blocks not free in the owner's bitmap (live or
                           remote-freed and not yet collected) */
  uint32_t cursor;      /* free-bitmap word where the next search starts */
  uint32_t owner_next;  /* owner's per-class page list / abandoned list:
                           page index + 1, 0 = end */
} POSH_ALIGNED(64) posh__page_t;
_Static_assert(sizeof(posh__page_t) == 128,
               "page descriptor: a read-mostly line and an owner line");

/* Layout of the start of a SMALL page: a cache line with the remote-free
 * flag, then the remote-free bitmap (1 bit per block: freed by another
 * thread and not yet collected), then the owner's free bitmap (1 = free;
 * owner-only), each bitmap starting on its own cache line, then the
 * blocks. */
typedef struct posh__page_head {
  /* Set to 1 by a remote freer after it sets a bitmap bit; cleared by the
   * owner before it scans.  Synchronization: atomic. */
  posh_atomic_t xremote_pending;
  uint64_t pad[7];
} posh__page_head_t;

/* ------------------------------------------------------------------------
 * The process-local handle.
 * ---------------------------------------------------------------------- */
struct posh_heap {
  struct posh__heap_view view; /* must be first: base, capacity */
  posh__hdr_t *hdr;
  posh__slot_t *slots;
  posh__dirent_t *dir;
  posh__page_t *pages;
  uint64_t *freemap;
  unsigned char *data; /* base + data_off */
  uint64_t npages;
  uint64_t map_size;
  int fd;
  int detached;      /* set by posh_heap_detach just before it frees the handle */
  /* Nonzero in a forked child until it registers (on first use, so a
   * child that only execs never takes a registry slot).  Synchronization:
   * changed under handles_lock (heap.c) or in a fork handler; the
   * release-store of 0 comes after proc_slot, proc_token, proc_pid and
   * proc_start are set, and a thread that did not register acquire-loads
   * it (posh__heap_registered) before reading them. */
  posh_atomic32_t xneeds_register;
  /* proc_token while the handle is usable by this process without a
   * check (registered, not detached), else 0 (no token is 0): the fast
   * paths' one-compare handle test (posh__obj_ready).  Synchronization:
   * stored by posh__heap_update_ready wherever xneeds_register or
   * proc_token change (release: after them), acquire-loaded.  (Detach
   * frees the handle, so its setting of `detached` needs no update.) */
  posh_atomic32_t xready_token;
  uint32_t proc_slot;  /* this process's registry slot */
  uint32_t proc_token;
  pid_t proc_pid;      /* pid that registered proc_slot (fork check) */
  uint64_t proc_start;
  char name[POSH_NAME_MAX + 2];
  int named;
  uint32_t id;             /* process-unique handle id, for TLS caches */
  struct posh_heap *next;  /* process-wide list of handles (fork) */
};

/* The handle's registration is this process's: proc_slot and proc_token
 * may be read.  Acquire: pairs with the release-store of 0 by the thread
 * that registered, so its stores to them are visible. */
static inline int posh__heap_registered(const posh_heap_t *h) {
  return posh_atomic32_load_acquire(&h->xneeds_register) == 0;
}

/* Recompute xready_token after a change of registration, detachment or
 * proc_token (by the thread that made it, which owns those fields then).
 * Release: a thread that acquire-loads the token sees the fields too. */
static inline void posh__heap_update_ready(posh_heap_t *h) {
  uint32_t ready = !h->detached && posh_atomic32_load_relaxed(&h->xneeds_register) == 0
                       ? h->proc_token
                       : 0u;
  posh_atomic32_store_release(&h->xready_token, ready);
}

/* The token of this process's usable registration, or 0 (see
 * xready_token).  Acquire: pairs with posh__heap_update_ready. */
static inline uint32_t posh__heap_ready_token(const posh_heap_t *h) {
  return posh_atomic32_load_acquire(&h->xready_token);
}

/* Per-thread, per-heap state: the thread's registry slot (its token is the
 * owner of its pages and locks) and the allocator's current pages. */
typedef struct posh__class_cache {
  posh__page_t *page;  /* current page, NULL if none */
  uint32_t head;       /* list of owned pages of this class (idx + 1) */
} posh__class_cache_t;

typedef struct posh__tld {
  posh_heap_t *heap;
  uint32_t heap_id;
  uint32_t slot;
  uint32_t token;
  pid_t pid;  /* process that claimed the slot (fork detection) */
  posh__class_cache_t classes[POSH_SIZE_CLASS_MAX];
  struct posh__tld *next;
} posh__tld_t;

/* ---- error.c */
void posh__set_last_error(int err);

/* ---- prim.c: see prim.h */

/* ---- lockword.c */
void posh__lock_init(posh__lockword_t *lock);
/* Acquire.  timeout_ns < 0 waits forever.  Returns 0, POSH_EOWNERDEAD
 * (acquired; previous owner died; call posh__lock_consistent after
 * repairing), POSH_ENOTRECOVERABLE (not acquired), POSH_ETIMEDOUT. */
int posh__lock_acquire(posh_heap_t *heap, posh__lockword_t *lock,
                       uint32_t token, int64_t timeout_ns);
int posh__lock_try(posh_heap_t *heap, posh__lockword_t *lock, uint32_t token);
/* POSH_EPERM if token does not own the lock. */
int posh__lock_release(posh__lockword_t *lock, uint32_t token);
void posh__lock_consistent(posh__lockword_t *lock);
uint32_t posh__lock_owner(const posh__lockword_t *lock);
/* Futex wait on a 32-bit word with a liveness backstop: sleeps while
 * *word == expected, at most until deadline_ns (0 = none) and at most one
 * POSH_LIVENESS_PERIOD_NS at a time.  Returns 0 (woken or value changed),
 * POSH_ETIMEDOUT (deadline passed) or POSH_EAGAIN (backstop period passed:
 * caller re-checks liveness and calls again). */
int posh__futex_wait_until(posh_atomic32_t *word, uint32_t expected,
                           uint64_t deadline_ns);
void posh__futex_wake(posh_atomic32_t *word, int count);
/* Spin up to `rounds` while *word == expected; returns the last value. */
uint32_t posh__spin_while_equal(posh_atomic32_t *word, uint32_t expected,
                                unsigned rounds);
/* Deadline from a relative timeout (<0: none -> 0). */
uint64_t posh__deadline_from_timeout(int64_t timeout_ns);

/* ---- registry.c */
int posh__registry_init(posh_heap_t *heap); /* creator: zero slots */
/* Claim the process slot for the calling process (attach, after fork). */
int posh__registry_register_process(posh_heap_t *heap);
void posh__registry_unregister_process(posh_heap_t *heap);
/* Processes attached: LIVE process slots (fork slots claimed for children
 * included).  A scan of the registry. */
uint32_t posh__registry_count_processes(posh_heap_t *heap);
/* Fork hand-over (objects/object.c): a parent about to fork claims a
 * process slot under its own identity; the child adopts it (pid and start
 * time become the child's, the token stays).  POSH_ESTALE when the slot
 * was reaped meanwhile. */
int posh__registry_claim_fork_slot(posh_heap_t *heap, uint32_t *slot_out,
                                   uint32_t *token_out);
int posh__registry_adopt_fork_slot(posh_heap_t *heap, uint32_t slot,
                                   uint32_t token, pid_t pid, uint64_t start);
/* Claim / release a thread slot under this process's slot. */
int posh__registry_claim_thread(posh_heap_t *heap, uint32_t *slot_out,
                                uint32_t *token_out);
void posh__registry_release_thread(posh_heap_t *heap, uint32_t slot,
                                   uint32_t token);
/* 1 if the thread/process named by token is alive, 0 if not.  Marks a slot
 * found dead as DEAD.  `thorough` also checks /proc (costs a few µs);
 * without it only the registry's own record and pid existence are used. */
int posh__token_alive(posh_heap_t *heap, uint32_t token, int thorough);
/* Consistent read of a slot's control word and start time. */
void posh__slot_read(posh__slot_t *slot, uint64_t *word, uint64_t *start);

/* ---- heap.c */
/* The calling thread's state for heap (claims a thread slot on first use);
 * NULL with *err set when the registry is full or the heap detached. */
posh__tld_t *posh__tld_get_slow(posh_heap_t *heap, int *err);
extern POSH_TLS posh__tld_t *posh__tld_cache;
static inline posh__tld_t *posh__tld_get(posh_heap_t *heap, int *err) {
  posh__tld_t *t = posh__tld_cache;
  if (posh_likely(t != NULL && t->heap == heap && t->heap_id == heap->id))
    return t;
  return posh__tld_get_slow(heap, err);
}
/* In a forked child, register the process on first use (0 or code). */
int posh__heap_ensure_registered(posh_heap_t *heap);
/* Token of the calling thread in heap (0 on failure, *err set). */
uint32_t posh__self_token(posh_heap_t *heap, int *err);
uint64_t posh__header_checksum(const posh__hdr_t *hdr);

/* ---- objects/object.c */
/* Drop every object reference held by the (dead or detaching) process in
 * registry slot `slot`; objects left without references are freed.
 * 0, or a code when obj_lock could not be taken (the caller keeps the slot
 * so that a later reap retries). */
int posh__objects_drop_slot(posh_heap_t *heap, uint32_t slot);
int posh__objects_check(posh_heap_t *heap, char *report, size_t len,
                        size_t *used);
/* Forget this process's hold records of a heap being detached. */
void posh__objects_forget_heap(posh_heap_t *heap);
/* First step of detaching a heap: stop what this process runs on its own
 * for handles left open on it (the pipes' fd watcher threads), which would
 * go on using the heap after it is unmapped. */
void posh__objects_heap_detaching(posh_heap_t *heap);

/* ---- directory.c */
int posh__directory_init(posh_heap_t *heap);
int posh__directory_repair(posh_heap_t *heap); /* dir_lock held */
int posh__directory_check(posh_heap_t *heap, char *report, size_t len,
                          size_t *used);

/* ---- allocators/pages.c */
void posh__pages_init(posh_heap_t *heap);
/* Acquire page_lock, repairing page-level state if its holder died. */
/* Fills in h's table offsets and page count from capacity, max_slots and
 * max_names (creation, and attach's check of a header). */
void posh__compute_layout(posh__hdr_t *h);
int posh__pages_lock(posh_heap_t *heap, uint32_t token);
void posh__pages_unlock(posh_heap_t *heap, uint32_t token);
/* Rebuild freemap, free count and abandoned lists from the descriptors and
 * drop half-written runs.  page_lock held. */
void posh__pages_repair(posh_heap_t *heap);
/* Allocate a run of n pages (page_lock taken inside).  Returns the first
 * page index or -1 with *err. */
int64_t posh__pages_alloc_run(posh_heap_t *heap, uint32_t token, uint64_t n,
                              int *err);
/* Free the run starting at index (page_lock taken inside). */
/* Free the large run whose head is page index, after re-checking under
 * page_lock that it still is one: POSH_EDOUBLEFREE otherwise. */
int posh__pages_free_run(posh_heap_t *heap, uint32_t token, uint64_t index);
/* Mark the small pages owned by token as abandoned (thread exit). */
void posh__pages_abandon_owner(posh_heap_t *heap, uint32_t self_token,
                               uint32_t owner_token);
/* Tell allocators that registry slots were freed: their pages need a sweep. */
void posh__pages_note_stale_owners(posh_heap_t *heap, unsigned count);
int posh__pages_check(posh_heap_t *heap, char *report, size_t len,
                      size_t *used);

/* ---- allocators/alloc.c */
void posh__alloc_thread_exit(posh__tld_t *tld);
void posh__alloc_stats(posh_heap_t *heap, posh_heap_stats_t *stats);
/* count_stable: pg is the calling thread's own page, so its block count
 * can be compared with its bitmap (another owner may be mid-update). */
int posh__small_page_check(posh_heap_t *heap, posh__page_t *pg, int count_stable,
                           char *report, size_t len, size_t *used);
int posh__size_class_count(void);
uint32_t posh__size_class_block(int cls);
/* Rebuild an adopted page's free list and used count from the list, the
 * remote bitmap and the bump index (idempotent). */
void posh__small_page_rebuild(posh_heap_t *heap, posh__page_t *pg);

/* ---- check.c */
/* Append a formatted line to a report buffer (tracks *used). */
void posh__report(char *report, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline uint64_t posh__page_index(const posh_heap_t *heap,
                                        const posh__page_t *pg) {
  return (uint64_t)(pg - heap->pages);
}
static inline unsigned char *posh__page_addr(const posh_heap_t *heap,
                                             uint64_t index) {
  return heap->data + (index << POSH_PAGE_SHIFT);
}

#endif /* POSH_INTERNAL_H */
