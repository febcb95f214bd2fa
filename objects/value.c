/* SPDX-License-Identifier: MIT */
/*
 * This file contains the Value and Array objects: typed scalars and fixed
 * typed arrays (multiprocessing's type codes) in one heap block each, with
 * an optional recursive lock on the robust lock word (as sync/mutex.c's
 * RLock) and data aligned to 64 bytes on cache lines of their own, so that
 * numpy can map it directly and lock traffic does not bounce the data.
 *
 * A Value without a lock is read and written with single atomic accesses
 * (its scalar sits alone at the start of an aligned 8-byte word); its
 * fetch-add helpers are lock-free.  A holder of the lock that dies leaves
 * the data as it was at that instant; the next locker is told so
 * (POSH_EOWNERDEAD) and the lock stays usable.
 */
#include "object_internal.h"
#include "sync_internal.h"
#include "posh/value.h"

#include <string.h>

/* A Value or Array.  Invariant: data_off == sizeof(posh__value_shared_t)
 * and the data occupies [data_off, data_off + data_size) of the block. */
typedef struct posh__value_shared {
  posh__obj_hdr_t hdr;
  /* The recursive lock (has_lock only).  Synchronization: its own. */
  posh__lockword_t lw;
  /* Recursion depth of the holder.  Protected by lw: only the holder
   * reads and writes it (a new holder, also one taking the lock from a
   * dead holder, sets it to 1). */
  uint32_t count;
  uint32_t has_lock;  /* immutable */
  uint64_t length;    /* items (1 for a Value); immutable */
  uint64_t data_off;  /* from the object's start; immutable */
  uint64_t data_size; /* bytes allocated for the data (>= 8); immutable */
  uint32_t itemsize;  /* immutable */
  char typecode;      /* immutable */
  char pad0[3];
  uint64_t pad[2];
  /* Followed, on the next cache line, by the data.  Synchronization: the
   * lock if has_lock (by convention: direct pointer users may do what they
   * like), or atomic accesses for a lock-less Value. */
} posh__value_shared_t;
_Static_assert(sizeof(posh__value_shared_t) == 128,
               "value object: header line, lock line, then data");

static int value_open_check(posh_obj_t *o);
const posh__obj_ops_t posh__value_ops = {"value", NULL, NULL, value_open_check};
const posh__obj_ops_t posh__array_ops = {"array", NULL, NULL, value_open_check};

POSH_EXTERN int posh_value_itemsize(char typecode) {
  switch (typecode) {
  case 'c': case 'b': case 'B': return 1;
  case 'h': case 'H': return 2;
  case 'i': case 'I': return 4;
  case 'l': case 'L': return (int)sizeof(long);
  case 'q': case 'Q': return 8;
  case 'f': return (int)sizeof(float);
  case 'd': return (int)sizeof(double);
  default: return POSH_EINVAL;
  }
}

static int create(posh_heap_t *heap, const char *name, uint32_t type,
                  char typecode, size_t length, int with_lock,
                  posh_obj_t **out) {
  if (!heap || !out || (with_lock != 0 && with_lock != 1))
    return POSH_EINVAL;
  int isz = posh_value_itemsize(typecode);
  if (isz < 0)
    return isz;
  if (length > heap->view.capacity / (size_t)isz)
    return POSH_ENOMEM;
  size_t size = length * (size_t)isz;
  if (size < 8)
    size = 8;
  size = (size_t)posh__align_up(size, POSH_VALUE_ALIGN);
  int err = 0;
  posh__value_shared_t *v = posh__obj_alloc(
      heap, type, 0, sizeof *v + size, POSH_VALUE_ALIGN, &err);
  if (!v)
    return err;
  posh__lock_init(&v->lw);
  v->has_lock = (uint32_t)with_lock;
  v->length = length;
  v->data_off = sizeof *v;
  v->data_size = size;
  v->itemsize = (uint32_t)isz;
  v->typecode = typecode;
  return posh__obj_publish(heap, v, name, out);
}

POSH_EXTERN int posh_value_create(posh_heap_t *heap, const char *name,
                                  char typecode, int with_lock,
                                  posh_obj_t **value_out) {
  return create(heap, name, POSH_OBJ_VALUE, typecode, 1, with_lock, value_out);
}

POSH_EXTERN int posh_array_create(posh_heap_t *heap, const char *name,
                                  char typecode, size_t length, int with_lock,
                                  posh_obj_t **array_out) {
  return create(heap, name, POSH_OBJ_ARRAY, typecode, length, with_lock,
                array_out);
}

/* The immutable fields as create set them: a known type code and its item
 * size, the data inside the object's block, which lies inside the heap.
 * Checked when a handle is opened, so that a stray write by a faulty
 * process into the header gives POSH_ECORRUPT instead of accesses outside
 * the heap. */
static int value_open_check(posh_obj_t *o) {
  const posh__value_shared_t *v = (const posh__value_shared_t *)o->hdr;
  posh_heap_t *heap = o->heap;
  int isz = posh_value_itemsize(v->typecode);
  uint64_t off = posh__off_of(heap, v), size = v->hdr.size;
  if (isz < 0 || v->itemsize != (uint32_t)isz || v->has_lock > 1 ||
      (o->type == POSH_OBJ_VALUE && v->length != 1) ||
      v->data_off != sizeof *v || size < sizeof *v ||
      size > heap->view.capacity - off ||
      v->data_size > size - sizeof *v || v->data_size < 8 ||
      v->length > v->data_size / (uint64_t)isz)
    return POSH_ECORRUPT;
  return 0;
}

static inline unsigned char *data_of(posh__value_shared_t *v) {
  return (unsigned char *)v + v->data_off;
}

/* A Value or an Array. */
static inline int either_get(posh_obj_t *o, posh__value_shared_t **out) {
  if (!o)
    return POSH_EINVAL;
  if (o->type != POSH_OBJ_VALUE && o->type != POSH_OBJ_ARRAY)
    return POSH_ETYPE;
  return posh__obj_get(o, o->type, (void **)out);
}

POSH_EXTERN int posh_value_data(posh_obj_t *value, void **data_out,
                                size_t *size_out) {
  posh__value_shared_t *v;
  int r = posh__obj_get(value, POSH_OBJ_VALUE, (void **)&v);
  if (r)
    return r;
  if (data_out)
    *data_out = data_of(v);
  if (size_out)
    *size_out = v->itemsize;
  return 0;
}

POSH_EXTERN int posh_array_data(posh_obj_t *array, void **data_out,
                                size_t *length_out, size_t *itemsize_out) {
  posh__value_shared_t *v;
  int r = posh__obj_get(array, POSH_OBJ_ARRAY, (void **)&v);
  if (r)
    return r;
  if (data_out)
    *data_out = data_of(v);
  if (length_out)
    *length_out = (size_t)v->length;
  if (itemsize_out)
    *itemsize_out = v->itemsize;
  return 0;
}

POSH_EXTERN int posh_value_typecode(posh_obj_t *obj, char *typecode_out) {
  posh__value_shared_t *v;
  if (!typecode_out)
    return POSH_EINVAL;
  int r = either_get(obj, &v);
  if (r)
    return r;
  *typecode_out = v->typecode;
  return 0;
}

POSH_EXTERN int posh_value_has_lock(posh_obj_t *obj) {
  posh__value_shared_t *v;
  int r = either_get(obj, &v);
  return r ? r : (int)v->has_lock;
}

/* ------------------------------------------------------------------------
 * The recursive lock.
 * ---------------------------------------------------------------------- */
static int vlock(posh_heap_t *heap, posh__value_shared_t *v, uint32_t tok,
                 int64_t timeout_ns) {
  /* Only this thread can have stored its own token in the word, so an
   * equal owner means we hold it (no ordering needed). */
  if (posh__lock_owner(&v->lw) == tok) {
    if (v->count >= (uint32_t)INT32_MAX)
      return POSH_EOVERFLOW;
    v->count++;
    return 0;
  }
  int r = posh__sync_acquire_fast(&v->lw, tok);
  if (r == 1) {
    if (timeout_ns == 0) {
      r = posh__lock_try(heap, &v->lw, tok);
      if (r == POSH_EBUSY)
        r = POSH_EAGAIN;
    } else {
      r = posh__lock_acquire(heap, &v->lw, tok, timeout_ns);
    }
  }
  if (r == POSH_EOWNERDEAD) {
    /* Nothing to repair in plain data: report once, stay usable. */
    posh__lock_consistent(&v->lw);
    v->count = 1;
    return POSH_EOWNERDEAD;
  }
  if (r == 0)
    v->count = 1;
  return r;
}

static int vunlock(posh__value_shared_t *v, uint32_t tok) {
  if (posh__lock_owner(&v->lw) != tok)
    return POSH_EPERM;
  if (v->count > 1) {
    v->count--;
    return 0;
  }
  v->count = 0;
  return posh__sync_release_fast(&v->lw, tok);
}

static int get_locked_obj(posh_obj_t *obj, posh__value_shared_t **v,
                          uint32_t *tok) {
  int r = either_get(obj, v);
  if (r)
    return r;
  if (!(*v)->has_lock)
    return POSH_ENOSYS;
  int err = 0;
  *tok = posh__obj_token(obj, &err);
  return *tok ? 0 : (err ? err : POSH_EAGAIN);
}

POSH_EXTERN int posh_value_lock(posh_obj_t *obj, int64_t timeout_ns) {
  posh__value_shared_t *v;
  uint32_t tok;
  int r = get_locked_obj(obj, &v, &tok);
  return r ? r : vlock(obj->heap, v, tok, timeout_ns);
}

POSH_EXTERN int posh_value_unlock(posh_obj_t *obj) {
  posh__value_shared_t *v;
  uint32_t tok;
  int r = get_locked_obj(obj, &v, &tok);
  return r ? r : vunlock(v, tok);
}

POSH_EXTERN int posh_value_lock_owned(posh_obj_t *obj) {
  posh__value_shared_t *v;
  uint32_t tok;
  int r = get_locked_obj(obj, &v, &tok);
  if (r)
    return r;
  return posh__lock_owner(&v->lw) == tok ? (int)v->count : 0;
}

/* Lock for a convenience operation, if there is a lock: 0, or
 * POSH_EOWNERDEAD (held), or a failure. */
static int op_begin(posh_obj_t *obj, uint32_t type, posh__value_shared_t **v,
                    uint32_t *tok) {
  int r = posh__obj_get(obj, type, (void **)v);
  if (r)
    return r;
  if (!(*v)->has_lock)
    return 0;
  int err = 0;
  *tok = posh__obj_token(obj, &err);
  if (!*tok)
    return err ? err : POSH_EAGAIN;
  return vlock(obj->heap, *v, *tok, -1);
}

/* ------------------------------------------------------------------------
 * Scalars.
 * ---------------------------------------------------------------------- */
static int64_t get_i64(char tc, const void *p) {
  switch (tc) {
  case 'b': { int8_t x; memcpy(&x, p, 1); return x; }
  case 'B': { uint8_t x; memcpy(&x, p, 1); return x; }
  case 'h': { int16_t x; memcpy(&x, p, 2); return x; }
  case 'H': { uint16_t x; memcpy(&x, p, 2); return x; }
  case 'i': { int32_t x; memcpy(&x, p, 4); return x; }
  case 'I': { uint32_t x; memcpy(&x, p, 4); return x; }
  case 'l': { long x; memcpy(&x, p, sizeof x); return (int64_t)x; }
  case 'L': { unsigned long x; memcpy(&x, p, sizeof x); return (int64_t)x; }
  default: { int64_t x; memcpy(&x, p, 8); return x; } /* q, Q */
  }
}

static void put_i64(char tc, void *p, int64_t v) {
  switch (tc) {
  case 'b': case 'B': { uint8_t x = (uint8_t)v; memcpy(p, &x, 1); break; }
  case 'h': case 'H': { uint16_t x = (uint16_t)v; memcpy(p, &x, 2); break; }
  case 'i': case 'I': { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
  case 'l': case 'L': { unsigned long x = (unsigned long)v; memcpy(p, &x, sizeof x); break; }
  default: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
  }
}

static int is_int_code(char tc) {
  return tc != 'c' && tc != 'f' && tc != 'd';
}

/* Lock-less accesses of a Value: its scalar starts an aligned 8-byte word
 * (data is 64-aligned and at least 8 bytes); 1- and 2-byte scalars go
 * through the 4-byte word that contains them. */
static void raw_load(posh__value_shared_t *v, void *out) {
  unsigned char *d = data_of(v);
  if (v->itemsize == 8) {
    /* Acquire: pairs with raw_store's release, so data the writer stored
     * before its store is visible after this load. */
    uint64_t x = posh_atomic_load_acquire((posh_atomic_t *)d);
    memcpy(out, &x, 8);
  } else {
    uint32_t x = posh_atomic32_load_acquire((posh_atomic32_t *)d); /* as above */
    memcpy(out, &x, v->itemsize);
  }
}

static void raw_store(posh__value_shared_t *v, const void *in) {
  unsigned char *d = data_of(v);
  if (v->itemsize == 8) {
    uint64_t x;
    memcpy(&x, in, 8);
    posh_atomic_store_release((posh_atomic_t *)d, x); /* pairs with raw_load */
  } else if (v->itemsize == 4) {
    uint32_t x;
    memcpy(&x, in, 4);
    posh_atomic32_store_release((posh_atomic32_t *)d, x); /* pairs with raw_load */
  } else {
    /* CAS on the containing word keeps its other bytes (full barrier:
     * releases like the stores above). */
    posh_atomic32_t *w = (posh_atomic32_t *)d;
    uint32_t old = posh_atomic32_load_relaxed(w);
    for (;;) {
      uint32_t nw = old;
      memcpy(&nw, in, v->itemsize);
      uint32_t seen = posh_atomic32_cas_full(w, old, nw);
      if (seen == old)
        break;
      old = seen;
    }
  }
}

POSH_EXTERN int posh_value_load(posh_obj_t *value, void *out) {
  posh__value_shared_t *v;
  uint32_t tok = 0;
  if (!out)
    return POSH_EINVAL;
  int r = op_begin(value, POSH_OBJ_VALUE, &v, &tok);
  if (r && r != POSH_EOWNERDEAD)
    return r;
  if (!v->has_lock) {
    raw_load(v, out);
    return 0;
  }
  memcpy(out, data_of(v), v->itemsize);
  vunlock(v, tok);
  return r;
}

POSH_EXTERN int posh_value_store(posh_obj_t *value, const void *in) {
  posh__value_shared_t *v;
  uint32_t tok = 0;
  if (!in)
    return POSH_EINVAL;
  int r = op_begin(value, POSH_OBJ_VALUE, &v, &tok);
  if (r && r != POSH_EOWNERDEAD)
    return r;
  if (!v->has_lock) {
    raw_store(v, in);
    return 0;
  }
  memcpy(data_of(v), in, v->itemsize);
  vunlock(v, tok);
  return 0; /* the whole scalar is rewritten: consistent again */
}

POSH_EXTERN int posh_value_add_i64(posh_obj_t *value, int64_t delta,
                                   int64_t *result_out) {
  posh__value_shared_t *v;
  int r = posh__obj_get(value, POSH_OBJ_VALUE, (void **)&v);
  if (r)
    return r;
  if (!is_int_code(v->typecode))
    return POSH_EINVAL;
  uint32_t tok = 0;
  unsigned char *d = data_of(v);
  int64_t res;
  if (v->has_lock) {
    r = op_begin(value, POSH_OBJ_VALUE, &v, &tok);
    if (r && r != POSH_EOWNERDEAD)
      return r;
    res = (int64_t)((uint64_t)get_i64(v->typecode, d) + (uint64_t)delta);
    put_i64(v->typecode, d, res);
    res = get_i64(v->typecode, d); /* wrapped to the type's width */
    vunlock(v, tok);
  } else if (v->itemsize == 8) {
    uint64_t old = posh_atomic_fetch_add_full((posh_atomic_t *)d, (uint64_t)delta);
    res = (int64_t)(old + (uint64_t)delta);
  } else {
    posh_atomic32_t *w = (posh_atomic32_t *)d;
    uint32_t old = posh_atomic32_load_relaxed(w), nw;
    for (;;) {
      nw = old;
      put_i64(v->typecode, &nw,
              (int64_t)((uint64_t)get_i64(v->typecode, &old) + (uint64_t)delta));
      uint32_t seen = posh_atomic32_cas_full(w, old, nw);
      if (seen == old)
        break;
      old = seen;
    }
    res = get_i64(v->typecode, &nw);
  }
  if (result_out)
    *result_out = res;
  return r;
}

POSH_EXTERN int posh_value_add_f64(posh_obj_t *value, double delta,
                                   double *result_out) {
  posh__value_shared_t *v;
  int r = posh__obj_get(value, POSH_OBJ_VALUE, (void **)&v);
  if (r)
    return r;
  if (v->typecode != 'f' && v->typecode != 'd')
    return POSH_EINVAL;
  uint32_t tok = 0;
  unsigned char *d = data_of(v);
  double res;
  if (v->has_lock) {
    r = op_begin(value, POSH_OBJ_VALUE, &v, &tok);
    if (r && r != POSH_EOWNERDEAD)
      return r;
    if (v->typecode == 'd') {
      double x;
      memcpy(&x, d, 8);
      res = x + delta;
      memcpy(d, &res, 8);
    } else {
      float x;
      memcpy(&x, d, 4);
      x = (float)(x + delta);
      memcpy(d, &x, 4);
      res = x;
    }
    vunlock(v, tok);
  } else if (v->typecode == 'd') {
    posh_atomic_t *w = (posh_atomic_t *)d;
    uint64_t old = posh_atomic_load_relaxed(w), nw;
    for (;;) {
      memcpy(&res, &old, 8);
      res += delta;
      memcpy(&nw, &res, 8);
      uint64_t seen = posh_atomic_cas_full(w, old, nw);
      if (seen == old)
        break;
      old = seen;
    }
  } else {
    posh_atomic32_t *w = (posh_atomic32_t *)d;
    uint32_t old = posh_atomic32_load_relaxed(w), nw;
    for (;;) {
      float x;
      memcpy(&x, &old, 4);
      x = (float)(x + delta);
      memcpy(&nw, &x, 4);
      res = x;
      uint32_t seen = posh_atomic32_cas_full(w, old, nw);
      if (seen == old)
        break;
      old = seen;
    }
  }
  if (result_out)
    *result_out = res;
  return r;
}

/* ------------------------------------------------------------------------
 * Array ranges.
 * ---------------------------------------------------------------------- */
static int array_copy(posh_obj_t *array, size_t start, size_t count,
                      void *out, const void *in) {
  posh__value_shared_t *v;
  int r = posh__obj_get(array, POSH_OBJ_ARRAY, (void **)&v);
  if (r)
    return r;
  if (start > v->length || count > v->length - start)
    return POSH_ERANGE;
  if (count && !out && !in)
    return POSH_EINVAL;
  uint32_t tok = 0;
  r = op_begin(array, POSH_OBJ_ARRAY, &v, &tok);
  if (r && r != POSH_EOWNERDEAD)
    return r;
  unsigned char *d = data_of(v) + start * v->itemsize;
  if (count) {
    if (out)
      memcpy(out, d, count * v->itemsize);
    else
      memcpy(d, in, count * v->itemsize);
  }
  if (v->has_lock)
    vunlock(v, tok);
  return out ? r : 0;
}

POSH_EXTERN int posh_array_read(posh_obj_t *array, size_t start, size_t count,
                                void *out) {
  if (!out && count)
    return POSH_EINVAL;
  return array_copy(array, start, count, out ? out : (void *)"", NULL);
}

POSH_EXTERN int posh_array_write(posh_obj_t *array, size_t start, size_t count,
                                 const void *in) {
  if (!in && count)
    return POSH_EINVAL;
  return array_copy(array, start, count, NULL, in ? in : "");
}
