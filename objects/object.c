/* SPDX-License-Identifier: MIT */
/*
 * This file contains what every shared object has in common: creation and
 * publication, opening by name or reference, the process-local hold table,
 * reference counting (holder processes, names, inner references, pins), freeing
 * when the last reference goes, dropping a dead process's references, and
 * the consistency check of the object list.
 *
 * Shared state (heap header, under obj_lock): the doubly linked list of
 * live objects, the id serial, and an intent record.  A process killed
 * while holding obj_lock leaves at most one list change or name count half
 * done; the next holder gets EOWNERDEAD and finishes it from the record
 * (repair_locked).  Holder bits are set and cleared idempotently and need
 * no record.  One window is not covered: a process killed between
 * unlinking an object and freeing its blocks leaks those blocks (the heap
 * stays consistent; the blocks are simply never reused).
 *
 * Process-local state: the hold table maps (heap, object id) to the number
 * of this process's open handles of the object, so that only the first
 * open and the last close touch shared state.
 */
#include "object_internal.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Types.
 * ---------------------------------------------------------------------- */
/* Types whose file is not linked in (none, in a full build) have no ops;
 * weak references keep the table buildable one type at a time. */
extern const posh__obj_ops_t posh__queue_ops __attribute__((weak));
extern const posh__obj_ops_t posh__pipe_ops __attribute__((weak));
extern const posh__obj_ops_t posh__pipe_core_ops __attribute__((weak));
extern const posh__obj_ops_t posh__dict_ops __attribute__((weak));
extern const posh__obj_ops_t posh__list_ops __attribute__((weak));
extern const posh__obj_ops_t posh__value_ops __attribute__((weak));
extern const posh__obj_ops_t posh__array_ops __attribute__((weak));
extern const posh__obj_ops_t posh__sync_owner_ops __attribute__((weak));

static const posh__obj_ops_t *ops_of(uint32_t type) {
  switch (type) {
  case POSH_OBJ_QUEUE: return &posh__queue_ops;
  case POSH_OBJ_PIPE: return &posh__pipe_ops;
  case POSH_OBJ_PIPE_CORE: return &posh__pipe_core_ops;
  case POSH_OBJ_DICT: return &posh__dict_ops;
  case POSH_OBJ_LIST: return &posh__list_ops;
  case POSH_OBJ_VALUE: return &posh__value_ops;
  case POSH_OBJ_ARRAY: return &posh__array_ops;
  case POSH_OBJ_BUFFER: return &posh__buffer_ops;
  case POSH_OBJ_SYNC: return &posh__sync_owner_ops;
  default: return NULL;
  }
}

POSH_EXTERN const char *posh_obj_type_name(uint32_t type) {
  const posh__obj_ops_t *ops = ops_of(type);
  return ops ? ops->name : "?";
}

/* ------------------------------------------------------------------------
 * obj_lock and its repair.
 * ---------------------------------------------------------------------- */
static uint32_t holder_words(posh_heap_t *heap) {
  return (heap->hdr->max_slots + 63) / 64;
}

/* The object list and every object's holder bitmap live in the heap, where
 * a faulty process may have scribbled: code that reaches them through the
 * list or through an offset checks the offset first (plausible,
 * holders_of) and a walk of the list stops after walk_limit steps (a
 * cycle), so a damaged heap gives POSH_ECORRUPT (and posh_heap_check's
 * report), never a fault or a hang in another process. */

/* Is off a plausible object address: inside the data area, 64-aligned. */
static int plausible(posh_heap_t *heap, uint64_t off) {
  return off >= heap->hdr->data_off && (off & 63) == 0 &&
         off <= heap->view.capacity - sizeof(posh__obj_hdr_t);
}

/* More steps than objects can fit in the heap: the list has a cycle. */
static uint64_t walk_limit(posh_heap_t *heap) {
  return heap->view.capacity / sizeof(posh__obj_hdr_t);
}

/* The object's holder bitmap, or NULL when its offset is not inside the
 * data area (a damaged object). */
static uint64_t *holders_of(posh_heap_t *heap, posh__obj_hdr_t *o) {
  uint64_t off = o->holders_off, bytes = (uint64_t)holder_words(heap) * 8;
  if (posh_unlikely(off < heap->hdr->data_off || (off & 7) != 0 ||
                    off > heap->view.capacity ||
                    bytes > heap->view.capacity - off))
    return NULL;
  return (uint64_t *)posh__at(heap, off);
}

/* No name, inner reference, pin or holder keeps o.  A damaged bitmap
 * counts as a reference: nothing is freed on the strength of garbage. */
static int no_refs(posh_heap_t *heap, posh__obj_hdr_t *o) {
  if (o->names || o->inner || o->pins)
    return 0;
  uint64_t *bits = holders_of(heap, o);
  if (!bits)
    return 0;
  for (uint32_t i = 0, n = holder_words(heap); i < n; i++)
    if (bits[i])
      return 0;
  return 1;
}

struct count_arg {
  uint64_t off;
  uint32_t n;
};
static int count_names(const char *name, posh_off_t off, uint32_t tag,
                       void *arg) {
  (void)name;
  struct count_arg *c = arg;
  if (off.v == c->off && (tag & 0xffff0000u) == POSH_OBJ_TAG_BASE)
    c->n++;
  return 0;
}

/* Redo the list link or unlink the dead holder was doing; both are
 * idempotent given the object's own links, which neither changes. */
static void redo_link(posh_heap_t *heap, uint64_t off) {
  posh__hdr_t *h = heap->hdr;
  if (!plausible(heap, off))
    return; /* a damaged record: posh_heap_check reports the list */
  posh__obj_hdr_t *o = posh__at(heap, off);
  if (h->obj_head != off) {
    if (plausible(heap, o->next))
      ((posh__obj_hdr_t *)posh__at(heap, o->next))->prev = off;
    posh_compiler_barrier();
    h->obj_head = off;
  }
  posh_atomic32_store_release(&o->xmagic, POSH__OBJ_MAGIC);
}

static void redo_unlink(posh_heap_t *heap, uint64_t off) {
  posh__hdr_t *h = heap->hdr;
  if (!plausible(heap, off))
    return; /* a damaged record: posh_heap_check reports the list */
  posh__obj_hdr_t *o = posh__at(heap, off);
  posh__obj_hdr_t *prev =
      plausible(heap, o->prev) ? posh__at(heap, o->prev) : NULL;
  posh__obj_hdr_t *next =
      plausible(heap, o->next) ? posh__at(heap, o->next) : NULL;
  posh_atomic32_store_relaxed(&o->xmagic, 0);
  posh_compiler_barrier();
  if (prev) {
    if (prev->next == off)
      prev->next = o->next;
  } else if (h->obj_head == off) {
    h->obj_head = o->next;
  }
  if (next && next->prev == off)
    next->prev = o->prev;
}

static void repair_locked(posh_heap_t *heap) {
  posh__hdr_t *h = heap->hdr;
  uint64_t off = h->obj_log_off;
  switch (h->obj_log_op) {
  case POSH__OBJ_LOG_LINK:
    redo_link(heap, off);
    break;
  case POSH__OBJ_LOG_UNLINK:
    redo_unlink(heap, off);
    break;
  case POSH__OBJ_LOG_NAMES: {
    struct count_arg c = {off, 0};
    posh_name_foreach(heap, count_names, &c);
    if (plausible(heap, off))
      ((posh__obj_hdr_t *)posh__at(heap, off))->names = c.n;
    break;
  }
  default:
    break;
  }
  h->obj_log_op = POSH__OBJ_LOG_NONE;
  /* Recount the list: the count is not covered by the records. */
  uint64_t n = 0, limit = walk_limit(heap);
  for (uint64_t o = h->obj_head; o && plausible(heap, o) && n < limit;
       o = ((posh__obj_hdr_t *)posh__at(heap, o))->next)
    n++;
  h->obj_count = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static int obj_lock(posh_heap_t *heap, uint32_t *token_out) {
  int err = 0;
  uint32_t token = posh__self_token(heap, &err);
  if (!token)
    return err ? err : POSH_EAGAIN;
  int r = posh__lock_acquire(heap, &heap->hdr->obj_lock, token, -1);
  if (r == POSH_EOWNERDEAD) {
    repair_locked(heap);
    posh__lock_consistent(&heap->hdr->obj_lock);
    r = 0;
  }
  if (r == 0)
    *token_out = token;
  return r;
}

static void obj_unlock(posh_heap_t *heap, uint32_t token) {
  posh__lock_release(&heap->hdr->obj_lock, token);
}

/* Start / end an intent record.  The compiler barriers keep the record
 * before and after the stores it covers, which is all a kill -9 needs. */
static void log_begin(posh__hdr_t *h, uint32_t op, uint64_t off) {
  h->obj_log_off = off;
  posh_compiler_barrier();
  h->obj_log_op = op;
  posh_compiler_barrier();
}
static void log_end(posh__hdr_t *h) {
  posh_compiler_barrier();
  h->obj_log_op = POSH__OBJ_LOG_NONE;
}

/* Unlink an object whose references are all gone.  obj_lock held; the
 * caller frees it (destroy) after unlocking. */
static void unlink_locked(posh_heap_t *heap, posh__obj_hdr_t *o) {
  posh__hdr_t *h = heap->hdr;
  log_begin(h, POSH__OBJ_LOG_UNLINK, posh__off_of(heap, o));
  redo_unlink(heap, posh__off_of(heap, o));
  h->obj_count--;
  log_end(h);
}

/* Free an unlinked object and everything it owns. */
static void destroy(posh_heap_t *heap, posh__obj_hdr_t *o) {
  const posh__obj_ops_t *ops = ops_of(o->type);
  if (ops && ops->finalize)
    ops->finalize(heap, o);
  posh_free(heap, posh__at(heap, o->holders_off));
  posh_free(heap, o);
}

/* End a reference change made under obj_lock: if o (NULL: none) has no
 * reference left, unlink it, then drop obj_lock and free it. */
static void unlock_freeing(posh_heap_t *heap, posh__obj_hdr_t *o,
                           uint32_t tok) {
  int gone = o && no_refs(heap, o);
  if (gone)
    unlink_locked(heap, o);
  obj_unlock(heap, tok);
  if (gone)
    destroy(heap, o);
}

/* ------------------------------------------------------------------------
 * The process-local hold table: (heap, id) -> handles open in this process.
 * ---------------------------------------------------------------------- */
typedef struct posh__obj_hold {
  posh_heap_t *heap;
  uint64_t id;
  uint64_t off;
  /* proc_token of the registration whose holder bit we own; a forked
   * child inherits the parent's until it refreshes. */
  uint32_t proc_token;
  uint32_t handles;
  struct posh__obj_hold *next;
} posh__obj_hold_t;

#define HOLD_BUCKETS 256
static pthread_mutex_t holds_lock = PTHREAD_MUTEX_INITIALIZER;
static posh__obj_hold_t *holds[HOLD_BUCKETS]; /* holds_lock */
static pthread_once_t holds_once = PTHREAD_ONCE_INIT;

static posh__obj_hold_t **hold_slot(posh_heap_t *heap, uint64_t id) {
  posh__obj_hold_t **pp = &holds[id % HOLD_BUCKETS];
  while (*pp && !((*pp)->heap == heap && (*pp)->id == id))
    pp = &(*pp)->next;
  return pp;
}

/* Fork.  A child must hold its own reference to every object whose handles
 * it inherits *before* the parent can close them: the usual pattern is
 * `start a child with the handle; close the handle in the parent`.  So the
 * parent, just before fork (prepare), claims a registry slot for the child
 * in each heap where it holds objects, under its own identity, and sets
 * that slot's holder bit in each of them; the child (child handler) adopts
 * the slot (its pid and start time replace the parent's) and so owns
 * those references from its first instruction.  They go when the child
 * detaches or is reaped after its death, like any process's.  If the slot
 * cannot be claimed (registry full) or adopted, the child falls back to
 * taking its reference on first use (posh__obj_refresh).  A fork that
 * fails leaves the claimed slot to the parent until the parent exits.
 *
 * Until the child adopts the slot it looks like the parent's, which is
 * alive: a child that died before adopting it would leave it (and the
 * references) unreapable while the parent lives.  So the forking thread
 * blocks every signal from prepare on, the child unblocks them once it has
 * adopted, the parent right after fork: a SIGTERM sent the moment fork
 * returned (Pool.terminate) is delivered after the adoption.  Only SIGKILL
 * and SIGSTOP cannot be held back: a kill -9 in the child's first
 * instructions still leaves the slot to the parent's exit. */
#define FORK_MAX_HEAPS 16
static struct fork_slot {
  posh_heap_t *heap;
  uint32_t slot, token;
  uint32_t parent_token; /* the parent's registration in heap */
} fork_slots[FORK_MAX_HEAPS]; /* holds_lock, between prepare and parent/child */
static int nfork_slots;       /* holds_lock */
static sigset_t fork_saved_mask; /* holds_lock: the forking thread's mask */
static int fork_masked;          /* holds_lock: signals blocked by prepare */

static void fork_unmask(void) {
  if (fork_masked)
    pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL);
  fork_masked = 0;
}

static void fork_claim(posh_heap_t *heap) {
  if (nfork_slots == FORK_MAX_HEAPS || heap->detached || !posh__heap_registered(heap))
    return;
  for (int i = 0; i < nfork_slots; i++)
    if (fork_slots[i].heap == heap)
      return;
  uint32_t slot, token, tok;
  if (posh__registry_claim_fork_slot(heap, &slot, &token) != 0)
    return;
  if (obj_lock(heap, &tok) != 0)
    return; /* the slot holds nothing: reaped with the parent */
  for (int b = 0; b < HOLD_BUCKETS; b++)
    for (posh__obj_hold_t *h = holds[b]; h; h = h->next) {
      if (h->heap != heap || h->proc_token != heap->proc_token)
        continue; /* only references this process really holds */
      posh__obj_hdr_t *o = posh__at(heap, h->off);
      uint64_t *bits;
      if (posh_atomic32_load_relaxed(&o->xmagic) == POSH__OBJ_MAGIC &&
          o->id == h->id && (bits = holders_of(heap, o)) != NULL)
        bits[slot / 64] |= 1ull << (slot % 64);
    }
  obj_unlock(heap, tok);
  fork_slots[nfork_slots++] =
      (struct fork_slot){heap, slot, token, heap->proc_token};
}

static void holds_prepare(void) {
  pthread_mutex_lock(&holds_lock);
  nfork_slots = 0;
  for (int b = 0; b < HOLD_BUCKETS; b++)
    for (posh__obj_hold_t *h = holds[b]; h; h = h->next)
      fork_claim(h->heap);
  if (nfork_slots) {
    sigset_t all;
    sigfillset(&all);
    fork_masked = pthread_sigmask(SIG_BLOCK, &all, &fork_saved_mask) == 0;
  }
}

static void holds_parent(void) {
  nfork_slots = 0; /* the slots are the child's now */
  fork_unmask();
  pthread_mutex_unlock(&holds_lock);
}

static void holds_child(void) {
  /* Locked by holds_prepare in the thread that forked, the child's one
   * thread: it unlocks it at the end. */
  pid_t pid = posh__prim_getpid();
  uint64_t start = 0;
  if (nfork_slots && posh__prim_proc_start_time(pid, &start) != 0)
    nfork_slots = 0;
  for (int i = 0; i < nfork_slots; i++) {
    struct fork_slot *f = &fork_slots[i];
    posh_heap_t *heap = f->heap;
    if (posh__registry_adopt_fork_slot(heap, f->slot, f->token, pid, start))
      continue; /* lazy registration, as without this */
    /* Runs after heap.c's child handler (registered first), which marked
     * the handle for lazy registration: we are registered now. */
    heap->proc_slot = f->slot;
    heap->proc_token = f->token;
    heap->proc_pid = pid;
    heap->proc_start = start;
    posh_atomic32_store_release(&heap->xneeds_register, 0); /* after the fields */
    posh__heap_update_ready(heap);
    for (int b = 0; b < HOLD_BUCKETS; b++)
      for (posh__obj_hold_t *h = holds[b]; h; h = h->next)
        if (h->heap == heap && h->proc_token == f->parent_token)
          h->proc_token = f->token; /* its bit was set in prepare */
  }
  nfork_slots = 0;
  fork_unmask(); /* adopted: a signal that kills us now leaves a reapable slot */
  pthread_mutex_unlock(&holds_lock);
}

static void holds_init(void) {
  pthread_atfork(holds_prepare, holds_parent, holds_child);
}

void posh__objects_heap_detaching(posh_heap_t *heap) {
  posh__pipe_heap_detaching(heap);
}

void posh__objects_forget_heap(posh_heap_t *heap) {
  pthread_once(&holds_once, holds_init);
  pthread_mutex_lock(&holds_lock);
  for (int b = 0; b < HOLD_BUCKETS; b++) {
    posh__obj_hold_t **pp = &holds[b];
    while (*pp) {
      if ((*pp)->heap == heap) {
        posh__obj_hold_t *dead = *pp;
        *pp = dead->next;
        free(dead);
      } else {
        pp = &(*pp)->next;
      }
    }
  }
  pthread_mutex_unlock(&holds_lock);
}

/* ------------------------------------------------------------------------
 * Handles.
 * ---------------------------------------------------------------------- */
static int make_handle(posh_heap_t *heap, posh__obj_hdr_t *o,
                       posh__obj_hold_t *hold, posh_obj_t **out) {
  posh_obj_t *h = calloc(1, sizeof *h);
  if (!h)
    return POSH_ENOMEM;
  h->heap = heap;
  h->hdr = o;
  h->id = o->id;
  h->type = o->type;
  h->proc_token = hold->proc_token;
  const posh__obj_ops_t *ops = ops_of(o->type);
  if (ops && ops->local_open) {
    int r = ops->local_open(h);
    if (r) {
      free(h);
      return r;
    }
  }
  *out = h;
  return 0;
}

/* Drop this process's holder bit (obj_lock taken here); frees the object
 * when that was the last reference. */
static int release_holder(posh_heap_t *heap, uint64_t off, uint64_t id) {
  uint32_t tok;
  int r = obj_lock(heap, &tok);
  if (r)
    return r;
  posh__obj_hdr_t *o = posh__at(heap, off);
  uint64_t *bits;
  if (posh_atomic32_load_relaxed(&o->xmagic) == POSH__OBJ_MAGIC && o->id == id &&
      (bits = holders_of(heap, o)) != NULL) {
    uint32_t s = heap->proc_slot;
    bits[s / 64] &= ~(1ull << (s % 64));
  } else {
    o = NULL; /* not ours to free */
  }
  unlock_freeing(heap, o, tok);
  return 0;
}

/* Take a reference for this process on the object at off (which must have
 * id `id` (0: any) and type `type` (0: any)), obj_lock held by the caller.
 * Returns 0, POSH_ESTALE or POSH_ETYPE. */
static int hold_locked(posh_heap_t *heap, uint64_t off, uint64_t id,
                       uint32_t type) {
  posh__obj_hdr_t *o = posh__at(heap, off);
  if (posh_atomic32_load_relaxed(&o->xmagic) != POSH__OBJ_MAGIC ||
      (id && o->id != id))
    return POSH_ESTALE;
  if (type && o->type != type)
    return POSH_ETYPE;
  uint64_t *bits = holders_of(heap, o);
  if (!bits)
    return POSH_ECORRUPT;
  uint32_t s = heap->proc_slot;
  bits[s / 64] |= 1ull << (s % 64);
  return 0;
}

/* Open a handle to the object at off.  `lookup_name`: look the name up
 * under obj_lock instead (names change only under it). */
static int open_common(posh_heap_t *heap, const char *lookup_name, uint64_t off,
                       uint64_t id, uint32_t type, posh_obj_t **out) {
  int r = posh__heap_ensure_registered(heap);
  if (r)
    return r;
  pthread_once(&holds_once, holds_init);
  pthread_mutex_lock(&holds_lock);
  uint32_t tok;
  if ((r = obj_lock(heap, &tok)) != 0)
    goto out_holds;
  if (lookup_name) {
    posh_off_t noff;
    uint32_t tag;
    r = posh_name_lookup(heap, lookup_name, &noff, &tag);
    if (r == 0 && ((tag & 0xffff0000u) != POSH_OBJ_TAG_BASE ||
                   !plausible(heap, noff.v)))
      r = POSH_ETYPE;
    if (r)
      goto out_lock;
    off = noff.v;
    posh__obj_hdr_t *o = posh__at(heap, off);
    if (posh_atomic32_load_relaxed(&o->xmagic) != POSH__OBJ_MAGIC) {
      r = POSH_ECORRUPT; /* a name always holds its object */
      goto out_lock;
    }
    id = o->id;
  }
  posh__obj_hdr_t *o = posh__at(heap, off);
  posh__obj_hold_t **pp = hold_slot(heap, id), *hold = *pp;
  if (hold && hold->proc_token == heap->proc_token) {
    /* Already held by this process, so alive at hold->off: a reference
     * with this id and another offset names nothing we hold (regression:
     * it was accepted, and the handle pointed at whatever lay at off). */
    if (hold->off != off)
      r = POSH_ESTALE;
    else
      r = (type && o->type != type) ? POSH_ETYPE : 0;
  } else {
    r = hold_locked(heap, off, id, type);
  }
  if (r)
    goto out_lock;
  int fresh = hold == NULL;
  if (fresh) {
    hold = calloc(1, sizeof *hold);
    if (!hold) {
      r = POSH_ENOMEM;
      goto out_lock; /* the bit stays: dropped at detach or reap */
    }
    hold->heap = heap;
    hold->id = id;
    hold->off = off;
    *pp = hold;
  }
  hold->proc_token = heap->proc_token;
  obj_unlock(heap, tok);
  r = make_handle(heap, o, hold, out);
  if (r == 0)
    hold->handles++;
  else if (hold->handles == 0) {
    *hold_slot(heap, id) = hold->next;
    free(hold);
    release_holder(heap, off, id);
  }
  pthread_mutex_unlock(&holds_lock);
  return r;
out_lock:
  obj_unlock(heap, tok);
out_holds:
  pthread_mutex_unlock(&holds_lock);
  return r;
}

int posh__obj_refresh(posh_obj_t *o) {
  posh_heap_t *heap = o->heap;
  int r = posh__heap_ensure_registered(heap);
  if (r)
    return r;
  pthread_once(&holds_once, holds_init);
  pthread_mutex_lock(&holds_lock);
  posh__obj_hold_t *hold = *hold_slot(heap, o->id);
  if (!hold) {
    r = POSH_ESTALE; /* cannot happen while the handle is open */
  } else if (hold->proc_token != heap->proc_token) {
    uint32_t tok;
    if ((r = obj_lock(heap, &tok)) == 0) {
      r = hold_locked(heap, hold->off, hold->id, 0);
      obj_unlock(heap, tok);
      if (r == 0)
        hold->proc_token = heap->proc_token;
    }
  }
  if (r == 0)
    o->proc_token = hold->proc_token;
  pthread_mutex_unlock(&holds_lock);
  return r;
}

/* ------------------------------------------------------------------------
 * Creation.
 * ---------------------------------------------------------------------- */
void *posh__obj_alloc(posh_heap_t *heap, uint32_t type, uint32_t flags,
                      size_t size, size_t align, int *err) {
  if (!heap) {
    *err = POSH_EINVAL;
    return NULL;
  }
  if (heap->detached) {
    *err = POSH_EDETACHED;
    return NULL;
  }
  if (align < POSH_CACHELINE)
    align = POSH_CACHELINE;
  if (size < sizeof(posh__obj_hdr_t))
    size = sizeof(posh__obj_hdr_t);
  if (size > heap->view.capacity) {
    *err = POSH_ENOMEM;
    return NULL;
  }
  /* Whole cache lines: an object shares no line with its neighbours. */
  size = (size_t)posh__align_up(size, POSH_CACHELINE);
  posh__obj_hdr_t *o = posh_aligned_alloc(heap, align, size);
  uint64_t *bits = posh_calloc(heap, holder_words(heap), sizeof(uint64_t));
  if (!o || !bits) {
    *err = posh_last_error() ? posh_last_error() : POSH_ENOMEM;
    posh_free(heap, o);
    posh_free(heap, bits);
    return NULL;
  }
  memset(o, 0, size);
  o->type = (uint16_t)type;
  o->flags = (uint16_t)flags;
  o->size = size;
  o->holders_off = posh__off_of(heap, bits);
  return o;
}

void posh__obj_discard(posh_heap_t *heap, void *obj) {
  posh__obj_hdr_t *o = obj;
  if (!o)
    return;
  posh_free(heap, posh__at(heap, o->holders_off));
  posh_free(heap, o);
}

int posh__obj_publish(posh_heap_t *heap, void *obj, const char *name,
                      posh_obj_t **out) {
  posh__obj_hdr_t *o = obj;
  int r = posh__heap_ensure_registered(heap);
  if (r) {
    destroy(heap, o);
    return r;
  }
  pthread_once(&holds_once, holds_init);
  posh__obj_hold_t *hold = calloc(1, sizeof *hold);
  if (!hold) {
    destroy(heap, o);
    return POSH_ENOMEM;
  }
  pthread_mutex_lock(&holds_lock);
  uint32_t tok;
  if ((r = obj_lock(heap, &tok)) != 0) {
    pthread_mutex_unlock(&holds_lock);
    free(hold);
    destroy(heap, o);
    return r;
  }
  posh__hdr_t *h = heap->hdr;
  uint64_t off = posh__off_of(heap, o);
  o->id = ++h->obj_serial;
  uint32_t s = heap->proc_slot;
  holders_of(heap, o)[s / 64] |= 1ull << (s % 64);
  o->prev = 0;
  o->next = h->obj_head;
  /* The record covers the two stores that link it; the magic is stored
   * last with release, pairing with open_ref's first-filter load. */
  log_begin(h, POSH__OBJ_LOG_LINK, off);
  redo_link(heap, off);
  h->obj_count++;
  log_end(h);
  obj_unlock(heap, tok);

  hold->heap = heap;
  hold->id = o->id;
  hold->off = off;
  hold->proc_token = heap->proc_token;
  *hold_slot(heap, o->id) = hold;
  posh_obj_t *handle = NULL;
  r = make_handle(heap, o, hold, &handle);
  if (r == 0)
    hold->handles = 1;
  else {
    *hold_slot(heap, o->id) = hold->next;
    free(hold);
  }
  pthread_mutex_unlock(&holds_lock);
  if (r) {
    release_holder(heap, off, o->id);
    return r;
  }
  if (name && (r = posh_obj_bind(handle, name)) != 0) {
    posh_obj_close(handle);
    return r;
  }
  *out = handle;
  return 0;
}

/* ------------------------------------------------------------------------
 * Public API.
 * ---------------------------------------------------------------------- */
POSH_EXTERN int posh_obj_open(posh_heap_t *heap, const char *name,
                              uint32_t type, posh_obj_t **obj_out) {
  if (!heap || !name || !obj_out || type > POSH_OBJ_TYPE_MAX)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  return open_common(heap, name, 0, 0, type, obj_out);
}

/* The checks of a reference given by the caller: 0, POSH_EINVAL,
 * POSH_EDETACHED or POSH_EFAULT. */
static int check_ref(posh_heap_t *heap, const posh_obj_ref_t *ref) {
  if (!heap || !ref || ref->id == 0 || ref->type == 0 ||
      ref->type > POSH_OBJ_TYPE_MAX || ref->reserved)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  return plausible(heap, ref->off) ? 0 : POSH_EFAULT;
}

POSH_EXTERN int posh_obj_open_ref(posh_heap_t *heap, const posh_obj_ref_t *ref,
                                  posh_obj_t **obj_out) {
  int r = obj_out ? check_ref(heap, ref) : POSH_EINVAL;
  if (r)
    return r;
  return open_common(heap, NULL, ref->off, ref->id, ref->type, obj_out);
}

POSH_EXTERN int posh_obj_dup(posh_obj_t *obj, posh_obj_t **obj_out) {
  if (!obj || !obj_out)
    return POSH_EINVAL;
  void *shared;
  int r = posh__obj_get(obj, obj->type, &shared);
  if (r)
    return r;
  return open_common(obj->heap, NULL, posh__off_of(obj->heap, obj->hdr),
                     obj->id, obj->type, obj_out);
}

POSH_EXTERN int posh_obj_close(posh_obj_t *obj) {
  if (!obj)
    return 0;
  posh_heap_t *heap = obj->heap;
  const posh__obj_ops_t *ops = ops_of(obj->type);
  if (ops && ops->local_close)
    ops->local_close(obj);
  int r = 0;
  pthread_once(&holds_once, holds_init);
  pthread_mutex_lock(&holds_lock);
  posh__obj_hold_t **pp = hold_slot(heap, obj->id), *hold = *pp;
  if (hold && --hold->handles == 0) {
    *pp = hold->next;
    /* Only a reference this registration holds is ours to drop (a forked
     * child that never used the handle holds none: the parent's bit is the
     * parent's). */
    if (posh__heap_registered(heap) && hold->proc_token == heap->proc_token &&
        !heap->detached)
      r = release_holder(heap, hold->off, hold->id);
    free(hold);
  }
  pthread_mutex_unlock(&holds_lock);
  free(obj);
  return r;
}

POSH_EXTERN int posh_obj_ref(const posh_obj_t *obj, posh_obj_ref_t *ref_out) {
  if (!obj || !ref_out)
    return POSH_EINVAL;
  ref_out->off = posh__off_of(obj->heap, obj->hdr);
  ref_out->id = obj->id;
  ref_out->type = obj->type;
  ref_out->reserved = 0;
  return 0;
}

POSH_EXTERN int posh_obj_type(const posh_obj_t *obj) {
  return obj ? (int)obj->type : POSH_EINVAL;
}

POSH_EXTERN posh_heap_t *posh_obj_heap(const posh_obj_t *obj) {
  return obj ? obj->heap : NULL;
}

POSH_EXTERN posh_off_t posh_obj_off(const posh_obj_t *obj) {
  posh_off_t off = {obj ? posh__off_of(obj->heap, obj->hdr) : 0};
  return off;
}

POSH_EXTERN int posh_obj_bind(posh_obj_t *obj, const char *name) {
  if (!obj || !name)
    return POSH_EINVAL;
  void *shared;
  int r = posh__obj_get(obj, obj->type, &shared);
  if (r)
    return r;
  posh_heap_t *heap = obj->heap;
  uint32_t tok;
  if ((r = obj_lock(heap, &tok)) != 0)
    return r;
  posh__hdr_t *h = heap->hdr;
  uint64_t off = posh__off_of(heap, obj->hdr);
  log_begin(h, POSH__OBJ_LOG_NAMES, off);
  r = posh_name_bind(heap, name, (posh_off_t){off}, POSH_OBJ_TAG(obj->type));
  if (r == 0)
    obj->hdr->names++;
  log_end(h);
  obj_unlock(heap, tok);
  return r;
}

POSH_EXTERN int posh_obj_unbind(posh_heap_t *heap, const char *name) {
  if (!heap || !name)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  uint32_t tok;
  int r = obj_lock(heap, &tok);
  if (r)
    return r;
  posh_off_t off;
  uint32_t tag;
  posh__obj_hdr_t *o = NULL;
  r = posh_name_lookup(heap, name, &off, &tag);
  if (r == 0 && ((tag & 0xffff0000u) != POSH_OBJ_TAG_BASE ||
                 !plausible(heap, off.v)))
    r = POSH_ETYPE;
  if (r == 0) {
    posh__hdr_t *h = heap->hdr;
    o = posh__at(heap, off.v);
    log_begin(h, POSH__OBJ_LOG_NAMES, off.v);
    r = posh_name_unbind(heap, name, off);
    if (r == 0 && o->names > 0)
      o->names--;
    log_end(h);
    if (r != 0)
      o = NULL; /* unchanged */
  }
  unlock_freeing(heap, o, tok);
  return r;
}

/* Processes whose holder bit is set in o's bitmap (obj_lock held), or -1
 * for a damaged bitmap. */
static int64_t count_holders(posh_heap_t *heap, posh__obj_hdr_t *o) {
  uint64_t *bits = holders_of(heap, o);
  if (!bits)
    return -1;
  int64_t n = 0;
  for (uint32_t i = 0, w = holder_words(heap); i < w; i++)
    n += __builtin_popcountll(bits[i]);
  return n;
}

/* The info of o (obj_lock held): 0, or POSH_ECORRUPT. */
static int info_locked(posh_heap_t *heap, posh__obj_hdr_t *o,
                       posh_obj_info_t *info) {
  int64_t n = count_holders(heap, o);
  if (n < 0)
    return POSH_ECORRUPT;
  memset(info, 0, sizeof *info);
  info->ref.off = posh__off_of(heap, o);
  info->ref.id = o->id;
  info->ref.type = o->type;
  info->size = o->size;
  info->processes = (uint32_t)n;
  info->names = o->names;
  info->pins = o->pins;
  return 0;
}

/* Check the handle and take obj_lock: 0 (the caller unlocks), or an
 * error. */
static int obj_lock_handle(posh_obj_t *obj, uint32_t *tok) {
  if (!obj)
    return POSH_EINVAL;
  void *shared;
  int r = posh__obj_get(obj, obj->type, &shared);
  return r ? r : obj_lock(obj->heap, tok);
}

POSH_EXTERN int posh_obj_stat(posh_obj_t *obj, posh_obj_info_t *info_out) {
  if (!info_out)
    return POSH_EINVAL;
  uint32_t tok;
  int r = obj_lock_handle(obj, &tok);
  if (r)
    return r;
  r = info_locked(obj->heap, obj->hdr, info_out);
  obj_unlock(obj->heap, tok);
  return r;
}

POSH_EXTERN int posh_obj_refs(posh_obj_t *obj, uint32_t *processes,
                              uint32_t *names) {
  posh_obj_info_t info;
  int r = posh_obj_stat(obj, &info);
  if (r)
    return r;
  if (processes)
    *processes = info.processes;
  if (names)
    *names = info.names;
  return 0;
}

POSH_EXTERN int posh_obj_pin(posh_obj_t *obj) {
  uint32_t tok;
  int r = obj_lock_handle(obj, &tok);
  if (r)
    return r;
  if (obj->hdr->pins == UINT32_MAX)
    r = POSH_EOVERFLOW;
  else
    obj->hdr->pins++;
  obj_unlock(obj->heap, tok);
  return r;
}

POSH_EXTERN int posh_obj_unpin(posh_heap_t *heap, const posh_obj_ref_t *ref) {
  int r = check_ref(heap, ref);
  if (r == 0)
    r = posh__heap_ensure_registered(heap);
  uint32_t tok;
  if (r || (r = obj_lock(heap, &tok)) != 0)
    return r;
  posh__obj_hdr_t *o = posh__at(heap, ref->off);
  if (posh_atomic32_load_relaxed(&o->xmagic) != POSH__OBJ_MAGIC ||
      o->id != ref->id)
    r = POSH_ESTALE;
  else if (o->type != ref->type)
    r = POSH_ETYPE;
  else if (o->pins == 0)
    r = POSH_EINVAL; /* not pinned: nothing of ours to drop */
  else
    o->pins--;
  unlock_freeing(heap, r == 0 ? o : NULL, tok);
  return r;
}

int posh__obj_inner_ref(posh_heap_t *heap, posh__obj_hdr_t *o, int delta) {
  uint32_t tok;
  int r = obj_lock(heap, &tok);
  if (r)
    return r;
  if (delta > 0)
    o->inner += (uint32_t)delta;
  else if (o->inner >= (uint32_t)-delta)
    o->inner -= (uint32_t)-delta;
  unlock_freeing(heap, delta < 0 ? o : NULL, tok);
  return 0;
}

POSH_EXTERN int posh_obj_foreach(posh_heap_t *heap, posh_obj_visit_fn visit,
                                 void *arg) {
  if (!heap || !visit)
    return POSH_EINVAL;
  if (heap->detached)
    return POSH_EDETACHED;
  uint32_t tok;
  int r = obj_lock(heap, &tok);
  if (r)
    return r;
  uint64_t steps = 0, limit = walk_limit(heap);
  for (uint64_t off = heap->hdr->obj_head; off && r == 0;) {
    if (!plausible(heap, off) || ++steps > limit) {
      r = POSH_ECORRUPT;
      break;
    }
    posh__obj_hdr_t *o = posh__at(heap, off);
    posh_obj_info_t info;
    if ((r = info_locked(heap, o, &info)) != 0)
      break;
    r = visit(&info, arg);
    off = o->next;
  }
  obj_unlock(heap, tok);
  return r;
}

/* ------------------------------------------------------------------------
 * Reaping and checking.
 * ---------------------------------------------------------------------- */
int posh__objects_drop_slot(posh_heap_t *heap, uint32_t slot) {
  posh__hdr_t *h = heap->hdr;
  /* A plain read is enough: a dead process's bits are only in objects
   * that were linked before it died, so an empty list means none. */
  if (*(volatile uint64_t *)&h->obj_head == 0)
    return 0;
  for (;;) {
    uint32_t tok;
    int r = obj_lock(heap, &tok);
    if (r)
      return r;
    /* Unlink every object left without references; free them after
     * unlocking, up to a batch at a time. */
    posh__obj_hdr_t *dead[64];
    int ndead = 0, more = 0, bad = 0;
    uint64_t steps = 0, limit = walk_limit(heap);
    for (uint64_t off = h->obj_head; off;) {
      if (!plausible(heap, off) || ++steps > limit) {
        bad = 1; /* the rest of the list is unreachable */
        break;
      }
      posh__obj_hdr_t *o = posh__at(heap, off);
      off = o->next;
      uint64_t *bits = holders_of(heap, o);
      if (!bits) {
        bad = 1; /* keep the object: its references are unknown */
        continue;
      }
      uint64_t *w = &bits[slot / 64];
      if (!(*w & (1ull << (slot % 64))))
        continue;
      *w &= ~(1ull << (slot % 64));
      if (no_refs(heap, o)) {
        if (ndead == (int)POSH_ARRAY_SIZE(dead)) {
          *w |= 1ull << (slot % 64); /* next batch */
          more = 1;
          break;
        }
        unlink_locked(heap, o);
        dead[ndead++] = o;
      }
    }
    obj_unlock(heap, tok);
    for (int i = 0; i < ndead; i++)
      destroy(heap, dead[i]);
    if (!more)
      return bad ? POSH_ECORRUPT : 0;
  }
}

int posh__objects_check(posh_heap_t *heap, char *report, size_t len,
                        size_t *used) {
  uint32_t tok;
  int r = obj_lock(heap, &tok);
  if (r)
    return r;
  posh__hdr_t *h = heap->hdr;
  int bad = 0;
  uint32_t n = 0;
  uint64_t prev = 0;
  for (uint64_t off = h->obj_head; off; off = ((posh__obj_hdr_t *)posh__at(heap, off))->next) {
    if (!plausible(heap, off)) {
      posh__report(report, len, used, "objects: bad link %#llx\n",
                   (unsigned long long)off);
      bad = 1;
      break;
    }
    posh__obj_hdr_t *o = posh__at(heap, off);
    if (posh_atomic32_load_relaxed(&o->xmagic) != POSH__OBJ_MAGIC ||
        !ops_of(o->type) || o->prev != prev ||
        posh_block_state(heap, o) != POSH_BLOCK_ALLOCATED ||
        posh_block_state(heap, posh__at(heap, o->holders_off)) != POSH_BLOCK_ALLOCATED) {
      posh__report(report, len, used,
                   "objects: object at %#llx (type %u) is inconsistent\n",
                   (unsigned long long)off, o->type);
      bad = 1;
    } else if (no_refs(heap, o)) {
      posh__report(report, len, used,
                   "objects: object at %#llx has no references\n",
                   (unsigned long long)off);
      bad = 1;
    }
    prev = off;
    if (++n > h->obj_count)
      break;
  }
  if (n != h->obj_count) {
    posh__report(report, len, used, "objects: list has %u, count says %u\n",
                 n, h->obj_count);
    bad = 1;
  }
  obj_unlock(heap, tok);
  return bad ? POSH_ECORRUPT : 0;
}
