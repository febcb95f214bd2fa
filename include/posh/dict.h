/* SPDX-License-Identifier: MIT */
/*
 * This file contains the public API of the dict shared object: a hash map
 * from byte-string keys to byte-string values that every process attached
 * to the heap can read and change at once, and that survives the death
 * (kill -9) of any of them in the middle of any operation.  Python's
 * posh.dict and Manager().dict() sit on top of it (values are encoded
 * bytes).  See docs/objects/dict.md for guarantees and performance.
 *
 * Readers (get, contains, len, iteration) write no shared memory and never
 * wait for each other; writers serialise on one robust lock.  A value is
 * always seen whole: old or new, never half-written.
 */
#ifndef POSH_DICT_H
#define POSH_DICT_H

#include "posh.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest key and value, bytes.  Longer ones: POSH_EMSGSIZE. */
#define POSH_DICT_KEY_MAX (1u << 20)
#define POSH_DICT_VALUE_MAX (1u << 30)

typedef struct posh_dict_options {
  /* Keys the dict should hold before its first growth; 0 = 8. */
  uint64_t capacity;
} posh_dict_options_t;

/* One item of posh_dict_update. */
typedef struct posh_dict_item {
  const void *key;
  size_t klen;
  const void *val;
  size_t vlen;
} posh_dict_item_t;

/* Iterator state: plain data, start with POSH_DICT_ITER_INIT (or zero it). */
typedef struct posh_dict_iter {
  uint64_t epoch;    /* table generation the position refers to */
  uint64_t pos;      /* next table slot to look at */
  uint32_t restarts; /* times the table was replaced during the walk (then
                        keys may have been returned twice) */
  uint32_t started;
} posh_dict_iter_t;
#define POSH_DICT_ITER_INIT {0, 0, 0, 0}

/* Create a dict (empty).  name: directory name or NULL; opts may be NULL. */
POSH_EXTERN int posh_dict_create(posh_heap_t *heap, const char *name,
                                 const posh_dict_options_t *opts,
                                 posh_obj_t **dict_out);

/* Copy the value of key into buf (cap bytes).  *vlen_out (may be NULL only
 * when cap is large enough) gets its length.  POSH_ENOENT when absent,
 * POSH_EMSGSIZE when cap is too small (*vlen_out set, buf unspecified).
 * Keys: klen may be 0 (the empty key is a valid key; key may then be
 * NULL). */
POSH_EXTERN int posh_dict_get(posh_obj_t *dict, const void *key, size_t klen,
                              void *buf, size_t cap, size_t *vlen_out);
/* One request of posh_dict_get_many: in, the arguments of a posh_dict_get;
 * out, its result and value length. */
typedef struct posh_dict_get_req {
  const void *key; /* in */
  size_t klen;     /* in */
  void *buf;       /* in: where the value goes */
  size_t cap;      /* in: bytes at buf */
  size_t vlen;     /* out: the value's length (with result 0 or
                      POSH_EMSGSIZE) */
  int result;      /* out: what posh_dict_get would return */
} posh_dict_get_req_t;

/* n gets in one call: each request as posh_dict_get would do it (each one
 * atomic; the batch is not a snapshot: a writer may change the dict
 * between two of them).  Faster than n calls when the table is big: the
 * entries of a batch of keys are fetched from memory together, not one
 * after the other.  Returns 0 once every request has its result, or the
 * handle's error (POSH_EINVAL, POSH_ETYPE, POSH_EDETACHED, POSH_ESTALE)
 * with no request done; reqs may be NULL only when n is 0. */
POSH_EXTERN int posh_dict_get_many(posh_obj_t *dict, posh_dict_get_req_t *reqs,
                                   size_t n);
/* As get, into a malloc()ed buffer (*val_out, free() it; at least 1 byte
 * allocated even for an empty value). */
POSH_EXTERN int posh_dict_get_alloc(posh_obj_t *dict, const void *key,
                                    size_t klen, void **val_out,
                                    size_t *vlen_out);
/* 0 present, POSH_ENOENT absent. */
POSH_EXTERN int posh_dict_contains(posh_obj_t *dict, const void *key,
                                   size_t klen);
/* Number of keys (a snapshot). */
POSH_EXTERN int posh_dict_len(posh_obj_t *dict, size_t *len_out);

/* Insert or overwrite.  POSH_ENOMEM when the heap is full (unchanged). */
POSH_EXTERN int posh_dict_set(posh_obj_t *dict, const void *key, size_t klen,
                              const void *val, size_t vlen);
/* Remove.  POSH_ENOENT when absent. */
POSH_EXTERN int posh_dict_delete(posh_obj_t *dict, const void *key,
                                 size_t klen);
/* Get-or-set: if key is present copy its value out as get does and set
 * *inserted = 0; else insert dflt and set *inserted = 1 (buf untouched:
 * the value is dflt).  buf may be NULL with cap 0 (then a present key gives
 * POSH_EMSGSIZE unless its value is empty; the dict is unchanged either
 * way).  inserted may be NULL. */
POSH_EXTERN int posh_dict_setdefault(posh_obj_t *dict, const void *key,
                                     size_t klen, const void *dflt,
                                     size_t dlen, void *buf, size_t cap,
                                     size_t *vlen_out, int *inserted);
/* Compare-and-swap: expect == NULL: insert val only if key is absent
 * (POSH_EEXIST otherwise); else replace the value only if it equals
 * expect[0..elen) (POSH_ENOENT if absent, POSH_EAGAIN if it differs).
 * expect == NULL with elen != 0 is POSH_EINVAL. */
POSH_EXTERN int posh_dict_cas(posh_obj_t *dict, const void *key, size_t klen,
                              const void *expect, size_t elen,
                              const void *val, size_t vlen);
/* Remove key and copy its value out.  POSH_ENOENT; POSH_EMSGSIZE (with
 * *vlen_out; nothing removed). */
POSH_EXTERN int posh_dict_pop(posh_obj_t *dict, const void *key, size_t klen,
                              void *buf, size_t cap, size_t *vlen_out);
/* Remove some item (no particular order) and copy it out.  POSH_ENOENT
 * when empty; POSH_EMSGSIZE when a buffer is too small (*klen_out and
 * *vlen_out set; nothing removed). */
POSH_EXTERN int posh_dict_popitem(posh_obj_t *dict, void *kbuf, size_t kcap,
                                  size_t *klen_out, void *vbuf, size_t vcap,
                                  size_t *vlen_out);
/* Set n items under one lock acquisition (each key atomic; other processes
 * may see some items before others).  All items are validated first
 * (nothing done on POSH_EINVAL / POSH_EMSGSIZE); POSH_ENOMEM part-way
 * leaves a prefix applied.  Later items win over earlier equal keys. */
POSH_EXTERN int posh_dict_update(posh_obj_t *dict,
                                 const posh_dict_item_t *items, size_t n);
/* Remove every item. */
POSH_EXTERN int posh_dict_clear(posh_obj_t *dict);

/* Next item of an iteration: copies key and value out.  0, POSH_ENOENT at
 * the end, POSH_EMSGSIZE when a buffer is too small (*klen_out and *vlen_out
 * set; the iterator does not advance, call again with bigger buffers).
 * Weakly consistent: every item returned was in the dict during the call;
 * a key present for the whole walk is returned at least once; keys added
 * or removed during the walk may or may not be seen.  If the table is
 * replaced (growth, clear) the walk restarts on the new table and
 * it->restarts grows: keys may then be returned twice. */
POSH_EXTERN int posh_dict_iter_next(posh_obj_t *dict, posh_dict_iter_t *it,
                                    void *kbuf, size_t kcap, size_t *klen_out,
                                    void *vbuf, size_t vcap, size_t *vlen_out);

/* Callback walk over the items, with iter_next's consistency (buffers
 * are malloc()ed and grown as needed).  A non-zero return of visit stops
 * the walk and is returned; POSH_ENOMEM if a buffer cannot be had. */
typedef int (*posh_dict_visit_fn)(const void *key, size_t klen,
                                  const void *val, size_t vlen, void *arg);
POSH_EXTERN int posh_dict_foreach(posh_obj_t *dict, posh_dict_visit_fn visit,
                                  void *arg);

#ifdef __cplusplus
}
#endif

#endif /* POSH_DICT_H */
