/* SPDX-License-Identifier: MIT */
/*
 * This file contains the internal layout common to every shared object
 * (objects/): the header each one starts with, the process-local handle,
 * the per-type operations table, and the helpers the type files share
 * (allocation and publication, fast handle validation, references held by
 * one object on another).
 *
 * Each object is one heap block that starts with posh__obj_hdr_t and then
 * holds its type's shared struct; it may own further blocks (a ring, hash
 * buckets, message bodies), which its type's finalize frees.  Live objects
 * form one list rooted in the heap header (obj_head), changed under the
 * heap's obj_lock; the list is what lets a reaper drop a dead process's
 * references.
 */
#ifndef POSH_OBJECT_INTERNAL_H
#define POSH_OBJECT_INTERNAL_H

#include "internal.h"
#include "posh/object.h"

#define POSH__OBJ_MAGIC 0x4a424f53u /* "SOBJ" */

/* Intent records of obj_lock holders (posh__hdr_t.obj_log_op). */
enum posh__obj_log_op {
  POSH__OBJ_LOG_NONE = 0,
  POSH__OBJ_LOG_LINK = 1,   /* linking obj_log_off at the list head */
  POSH__OBJ_LOG_UNLINK = 2, /* unlinking obj_log_off */
  POSH__OBJ_LOG_NAMES = 3,  /* binding/unbinding a name of obj_log_off */
};

/* Header of every shared object.
 * Invariants: an object is in the heap's list iff xmagic == POSH__OBJ_MAGIC;
 * it is freed exactly when it leaves the list, which happens when its last
 * reference (holder bit, name, inner reference, pin) goes. */
typedef struct posh__obj_hdr {
  /* POSH__OBJ_MAGIC while live.  Synchronization: written under obj_lock
   * (release-store when linked, store 0 when unlinked); read without it by
   * open_ref as a first filter, and again under obj_lock. */
  posh_atomic32_t xmagic;
  uint16_t type;  /* enum posh_obj_type; immutable */
  uint16_t flags; /* per-type creation flags; immutable */
  uint64_t id;    /* unique id (heap serial); immutable once linked */
  uint64_t size;  /* bytes of this block; immutable */
  uint64_t prev;  /* obj_lock: previous object in the heap's list, 0 = head */
  uint64_t next;  /* obj_lock: next object, 0 = last */
  /* Bitmap over registry slots: bit s set while the process in slot s
   * holds at least one handle (words = (max_slots + 63) / 64).
   * obj_lock. */
  uint64_t holders_off;
  uint32_t names; /* obj_lock: directory names bound to the object */
  uint32_t inner; /* obj_lock: references held by other objects */
  /* obj_lock: references stored in heap data (posh_obj_pin): a handle
   * written into a queued message or a container's value.  Held by no
   * process, so not dropped when one dies: whoever removes the data
   * unpins. */
  uint32_t pins;
  uint32_t pad;
} posh__obj_hdr_t;
_Static_assert(sizeof(posh__obj_hdr_t) == 64, "object header is one cache line");

/* Process-local handle. */
struct posh_obj {
  posh_heap_t *heap;
  posh__obj_hdr_t *hdr; /* local address of the object */
  uint64_t id;
  uint32_t type;
  /* proc_token of the heap registration under which this process holds
   * its reference (a forked child has another one: see posh__obj_get). */
  uint32_t proc_token;
  void *local; /* per-type process-local state, or NULL */
};

/* Per-type operations. */
typedef struct posh__obj_ops {
  const char *name;
  /* Free everything the object owns except its own block (called once,
   * after the last reference went and the object left the list; no lock
   * held).  May be NULL. */
  void (*finalize)(posh_heap_t *heap, posh__obj_hdr_t *obj);
  /* Free a handle's `local` state (posh_obj_close).  May be NULL. */
  void (*local_close)(posh_obj_t *handle);
  /* Handle opened (by name, reference or dup): set up `local`.  May be
   * NULL; a failure aborts the open. */
  int (*local_open)(posh_obj_t *handle);
} posh__obj_ops_t;

/* The operations of each type (defined in the type's file). */
extern const posh__obj_ops_t posh__queue_ops;
extern const posh__obj_ops_t posh__pipe_ops;
extern const posh__obj_ops_t posh__pipe_core_ops;
extern const posh__obj_ops_t posh__dict_ops;
extern const posh__obj_ops_t posh__list_ops;
extern const posh__obj_ops_t posh__value_ops;
extern const posh__obj_ops_t posh__array_ops;
extern const posh__obj_ops_t posh__buffer_ops;
extern const posh__obj_ops_t posh__sync_owner_ops;

/* The hash a dict stores for a key, computed the way its fast get does
 * (for the tests: it must equal XXH3_64bits of the key, the documented
 * format). */
uint64_t posh__dict_key_hash(const void *key, size_t klen);
/* For the tests: the sequence word of key's slot in the dict's current
 * table, or NULL when the key is absent (no lock taken: call it with no
 * writer running). */
posh_atomic32_t *posh__dict_slot_seq(posh_obj_t *dict, const void *key,
                                     size_t klen);

/* Allocate a zeroed object block of `size` bytes (>= the header; 64-byte
 * aligned, or `align` if larger) with its holder bitmap, header filled
 * except id and magic.  The caller fills its fields, then publishes it
 * (or discards it on failure).  NULL with *err on failure. */
void *posh__obj_alloc(posh_heap_t *heap, uint32_t type, uint32_t flags,
                      size_t size, size_t align, int *err);
/* Free an object that was never published (and nothing it owns). */
void posh__obj_discard(posh_heap_t *heap, void *obj);
/* Publish: give it an id, make the calling process a holder, link it into
 * the heap's list, bind name (if not NULL) and return a handle.  On
 * failure the object is finalized and freed (so the caller must have left
 * it in a state its finalize handles). */
int posh__obj_publish(posh_heap_t *heap, void *obj, const char *name,
                      posh_obj_t **out);

/* objects/pipe.c: stop and join the fd watcher threads of this process's
 * pipe handles on heap (posh__objects_heap_detaching). */
void posh__pipe_heap_detaching(posh_heap_t *heap);

/* Slow part of posh__obj_get: in a forked child, register and take the
 * child's own reference. */
int posh__obj_refresh(posh_obj_t *o);

/* Validate a handle of the expected type and return its shared object:
 * POSH_EINVAL (NULL), POSH_ETYPE, POSH_EDETACHED, POSH_ESTALE (a forked
 * child's inherited handle to an object freed meanwhile). */
/* A non-NULL handle of the expected type that needs no check beyond
 * these loads: its heap attached, the handle this process's own (not
 * inherited across a fork and not yet refreshed).  The inline test of a
 * type's fast path; anything false goes through posh__obj_get, which says
 * why. */
static inline int posh__obj_ready(const posh_obj_t *o, uint32_t type) {
  if (posh_unlikely(o == NULL))
    return 0;
  /* One compare of the adjacent type and proc_token (the compiler makes
   * it one 8-byte load) against the heap's ready token, which is 0 unless
   * the heap is attached and registered by this process: a handle's
   * proc_token is never 0.  Every instruction counts here: a get on a big
   * dict is a cache miss, and its speed is how many of them the CPU keeps
   * in flight, i.e. how few instructions separate them. */
  uint64_t have = (uint64_t)o->type | (uint64_t)o->proc_token << 32;
  return have == ((uint64_t)type | (uint64_t)posh__heap_ready_token(o->heap) << 32);
}

static inline int posh__obj_get(posh_obj_t *o, uint32_t type, void **out) {
  if (posh_likely(posh__obj_ready(o, type))) { /* the common case, one compare */
    *out = o->hdr;
    return 0;
  }
  if (posh_unlikely(o == NULL))
    return POSH_EINVAL;
  if (posh_unlikely(o->type != type))
    return POSH_ETYPE;
  posh_heap_t *h = o->heap;
  if (posh_unlikely(h->detached))
    return POSH_EDETACHED;
  if (posh_unlikely(!posh__heap_registered(h) || o->proc_token != h->proc_token)) {
    int r = posh__obj_refresh(o);
    if (r)
      return r;
  }
  *out = o->hdr;
  return 0;
}

/* The calling thread's token in the object's heap (0 with *err set). */
static inline uint32_t posh__obj_token(posh_obj_t *o, int *err) {
  posh__tld_t *t = posh__tld_get(o->heap, err);
  return t ? t->token : 0;
}

/* References held by one object on another (a Pipe endpoint on its
 * channels): +1 / -1 under obj_lock; the last one gone frees the target
 * (finalize runs in the caller).  `obj` must be live (a holder of the
 * reference guarantees that). */
int posh__obj_inner_ref(posh_heap_t *heap, posh__obj_hdr_t *obj, int delta);

/* Offset <-> pointer inside one heap, for fields of shared structs.  The
 * sum is taken on integers: an offset read from a damaged heap may be any
 * value, and the pointer it makes is then checked (posh_free,
 * posh_block_state) rather than used, which must not be undefined
 * behaviour on the way. */
static inline void *posh__at(posh_heap_t *heap, uint64_t off) {
  return off ? (void *)((uintptr_t)heap->view.base + (uintptr_t)off) : NULL;
}
static inline uint64_t posh__off_of(posh_heap_t *heap, const void *p) {
  return p ? (uint64_t)((const unsigned char *)p - heap->view.base) : 0;
}

#endif /* POSH_OBJECT_INTERNAL_H */
