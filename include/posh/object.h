/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API common to libposh's shared objects
 * (Queue, Pipe, dict, list, Value, Array, Buffer): the process-local handle
 * type, opening an object by name or by reference, closing, names, and
 * reference counting.  Each object type has its own header (posh/queue.h,
 * posh/pipe.h, posh/dict.h, posh/list.h, posh/value.h) with its create
 * function and operations; all of them take a posh_obj_t *.
 *
 * Lifetime: an object counts its references: every process that holds at
 * least one open handle to it, and every directory name bound to it.
 * Closing the last handle of the last process, with no name left, frees the
 * object and everything it owns.  A process that dies (kill -9) or detaches
 * drops its references when it is reaped (posh_heap_reap, which every
 * attach, and any blocked operation that suspects a death, runs), so
 * nothing leaks.
 *
 * Handles: a posh_obj_t is private to the process that opened it (like a
 * FILE *).  Another process opens the same object from its name or from a
 * posh_obj_ref_t (offset + unique id), which is plain data and can travel
 * through a pipe, a file or a pickle.  A forked child may use the handles
 * it inherited: it holds its own reference to each of them from the fork
 * on (the parent claims a registry slot for the child just before fork),
 * so the parent may close its handles right after fork.  Only if that slot
 * could not be claimed (registry full) does the child take its reference
 * on first use instead, and get POSH_ESTALE if the object is gone by then.
 * One handle may be used by several threads at once.
 */
#ifndef POSH_OBJECT_H
#define POSH_OBJECT_H

#include "posh.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Process-local handle of a shared object. */
typedef struct posh_obj posh_obj_t;

/* Object types.  The directory tag of a named object is POSH_OBJ_TAG(t). */
enum posh_obj_type {
  POSH_OBJ_QUEUE = 1,    /* posh/queue.h (also JoinableQueue) */
  POSH_OBJ_PIPE = 2,     /* posh/pipe.h: one endpoint of a Pipe */
  POSH_OBJ_DICT = 3,     /* posh/dict.h */
  POSH_OBJ_LIST = 4,     /* posh/list.h */
  POSH_OBJ_VALUE = 5,    /* posh/value.h: typed scalar */
  POSH_OBJ_ARRAY = 6,    /* posh/value.h: typed fixed array */
  POSH_OBJ_BUFFER = 7,   /* posh/object.h: raw aligned bytes */
  POSH_OBJ_PIPE_CORE = 8, /* internal: the channels shared by two endpoints */
  POSH_OBJ_SYNC = 9,     /* posh/object.h: owner of a sync/ object */
  POSH_OBJ_TYPE_MAX = 9,
};
#define POSH_OBJ_TAG_BASE 0x4f420000u /* "OB" */
#define POSH_OBJ_TAG(type) (POSH_OBJ_TAG_BASE | (uint32_t)(type))

/* A reference to an object that another process can open: plain data.
 * `id` is unique over the heap's lifetime, so a reference to an object
 * that has been freed (even if its memory was reused) is recognised as
 * stale. */
typedef struct posh_obj_ref {
  uint64_t off;  /* offset of the object in its heap */
  uint64_t id;   /* the object's unique id */
  uint32_t type; /* enum posh_obj_type */
  uint32_t reserved; /* 0 */
} posh_obj_ref_t;

/* Open the object bound to name.  type: the expected enum posh_obj_type,
 * or 0 for any.  POSH_ENOENT (no such name), POSH_ETYPE (bound to an
 * object of another type, or to something that is not a shared object). */
POSH_EXTERN int posh_obj_open(posh_heap_t *heap, const char *name,
                              uint32_t type, posh_obj_t **obj_out);
/* Open the object a reference names.  POSH_ESTALE when it no longer
 * exists; POSH_EFAULT for an offset outside the heap; POSH_ETYPE when
 * ref->type does not match the object. */
POSH_EXTERN int posh_obj_open_ref(posh_heap_t *heap, const posh_obj_ref_t *ref,
                                  posh_obj_t **obj_out);
/* A second, independent handle to the same object. */
POSH_EXTERN int posh_obj_dup(posh_obj_t *obj, posh_obj_t **obj_out);
/* Close a handle (NULL: no-op).  The handle is freed whatever the result;
 * the object is freed if this was its last reference. */
POSH_EXTERN int posh_obj_close(posh_obj_t *obj);

/* The reference of an open object. */
POSH_EXTERN int posh_obj_ref(const posh_obj_t *obj, posh_obj_ref_t *ref_out);
/* enum posh_obj_type of the object, or POSH_EINVAL for NULL. */
POSH_EXTERN int posh_obj_type(const posh_obj_t *obj);
POSH_EXTERN posh_heap_t *posh_obj_heap(const posh_obj_t *obj);
/* Offset of the object in its heap (null offset for NULL). */
POSH_EXTERN posh_off_t posh_obj_off(const posh_obj_t *obj);
/* "queue", "dict", ...; "?" for an unknown type. */
POSH_EXTERN const char *posh_obj_type_name(uint32_t type);

/* Bind a name to the object; the name holds a reference until unbound.
 * POSH_EEXIST when the name is taken. */
POSH_EXTERN int posh_obj_bind(posh_obj_t *obj, const char *name);
/* Unbind a name bound to a shared object and drop its reference (the object
 * is freed if that was the last one).  POSH_ENOENT, POSH_ETYPE (the name is
 * bound to something that is not a shared object). */
POSH_EXTERN int posh_obj_unbind(posh_heap_t *heap, const char *name);

/* Pins: references stored in heap data.  A reference written into a
 * queued message, a dict or list value or any other shared data must keep
 * its object alive after the writer closes its handle: pin the object when
 * writing the reference and unpin it (by reference, from any process) when
 * the data is removed.  A pin belongs to no process, so it is not dropped
 * when a process dies; a pin never unpinned keeps its object until the
 * heap goes.  posh_obj_unpin frees the object when it was the last
 * reference; it gives POSH_ESTALE when the object no longer exists and
 * POSH_EINVAL when it has no pin left (a second unpin of the same pin),
 * and changes nothing then. */
POSH_EXTERN int posh_obj_pin(posh_obj_t *obj);
POSH_EXTERN int posh_obj_unpin(posh_heap_t *heap, const posh_obj_ref_t *ref);

/* Reference counts of an object (a snapshot): processes holding a handle
 * and names bound to it (posh_obj_stat gives the pins too). */
POSH_EXTERN int posh_obj_refs(posh_obj_t *obj, uint32_t *processes,
                              uint32_t *names);

typedef struct posh_obj_info {
  posh_obj_ref_t ref;
  uint64_t size;       /* bytes of the object's own block */
  uint32_t processes;  /* processes holding a handle */
  uint32_t names;      /* directory names bound to it */
  uint32_t pins;       /* references stored in heap data (posh_obj_pin) */
  uint32_t reserved;   /* 0 */
} posh_obj_info_t;
/* A snapshot of one object's reference, size and reference counts. */
POSH_EXTERN int posh_obj_stat(posh_obj_t *obj, posh_obj_info_t *info_out);
typedef int (*posh_obj_visit_fn)(const posh_obj_info_t *info, void *arg);
/* Call visit for every live object of the heap (under the heap's object
 * lock: visit must not open, close or bind objects).  A non-zero return
 * from visit stops the walk and is returned. */
POSH_EXTERN int posh_obj_foreach(posh_heap_t *heap, posh_obj_visit_fn visit,
                                 void *arg);

/* ---------------------------------------------------------------------------
 * Buffer: raw bytes in the heap, aligned, for zero-copy use (a numpy array
 * or an MPI window can live in one).  The bytes are zeroed at creation.
 * ------------------------------------------------------------------------- */
/* align: a power of two up to 65536, or 0 for 64.  size may be 0. */
POSH_EXTERN int posh_buffer_create(posh_heap_t *heap, const char *name,
                                   size_t size, size_t align,
                                   posh_obj_t **obj_out);
/* The bytes: local address and size. */
POSH_EXTERN int posh_buffer_data(posh_obj_t *obj, void **data_out,
                                 size_t *size_out);

/* ---------------------------------------------------------------------------
 * Sync owner: gives a sync/ object (posh/sync.h: Lock, Condition, ...) the
 * reference counting of shared objects.  The sync object is destroyed
 * (posh_sync_destroy) when the owner's last reference goes: handles, names,
 * and the references of dead processes, dropped when they are reaped.
 * This is how the Python package frees its Lock & co.
 * ------------------------------------------------------------------------- */
/* Own sync_obj (a live sync/ object of heap, which from now on must be
 * destroyed only through the owner).  depends_on (may be NULL): another
 * owner this one keeps alive until it goes itself, e.g. the owner of the
 * Lock a Condition uses.  POSH_EINVAL / POSH_ETYPE / POSH_EFAULT for a bad
 * sync_obj or depends_on (which must be a POSH_OBJ_SYNC of the same heap). */
POSH_EXTERN int posh_sync_own(posh_heap_t *heap, posh_off_t sync_obj,
                              posh_obj_t *depends_on, posh_obj_t **owner_out);
/* The sync object an owner owns. */
POSH_EXTERN int posh_sync_owned(posh_obj_t *owner, posh_off_t *sync_obj_out);

#ifdef __cplusplus
}
#endif

#endif /* POSH_OBJECT_H */
