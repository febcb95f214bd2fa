/* SPDX-License-Identifier: MIT */
/*
 * This file contains the C bases of posh.dict and posh.list
 * (posh._posh.DictBase, posh._posh.ListBase) over libposh's dict and list
 * objects: keys and values are encoded with the posh codec (dict keys in
 * its canonical key form).  The hot paths (d[k], d[k] = v, del d[k],
 * k in d, len, l[i], l[i] = v, append) are C slots with stack buffers; the
 * rest of the protocol is in posh/containers.py.
 *
 * Out-of-band blocks (values holding big buffers, see codec.c): a stored
 * encoding holds one reference of each of its blocks.  Readers decode with
 * consume=0 (their views take references of their own; a value released
 * between the read and the reference is re-read).  Whoever removes a value
 * from a container releases its stored references: dict overwrites use a
 * get + compare-and-swap loop and deletions use pop, so exactly one process
 * releases a given old value; list overwrites read the old value and then
 * set (no swap in the C list), and the release is idempotent (codec's
 * dropped bit), so a race can only leak (never free too early).  Stored
 * posh objects (pins, see codec.c) are released the same way.  The last
 * wrapper of the last process (pyposh_release_if_last) releases the values
 * still stored before the C object frees their bytes.
 *
 * Dict order: each stored value carries its key's insertion stamp (see
 * VHDR below); iteration sorts by it and popitem pops the largest, so the
 * dict keeps Python's insertion order (an overwrite keeps the place, a
 * delete + insert goes to the end).
 */
#include "pyposh.h"

#include <stdlib.h>
#include <string.h>

#include "posh/dict.h"
#include "posh/list.h"

#define STACK 1024 /* bytes read into a stack buffer before allocating */

typedef struct {
  PyObject_HEAD
  posh_obj_t *obj;
  PyObject *weak;
} Cont;

static int cont_check(Cont *self) {
  if (!self->obj) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object not initialised");
    return -1;
  }
  if (pyposh_heap_check() < 0)
    return -1;
  return 0;
}

/* _create(capacity=0) / _open(off, id) */
static PyObject *cont_create_common(Cont *self, int type, uint64_t cap) {
  if (self->obj) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object already initialised");
    return NULL;
  }
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  int r;
  if (type == POSH_OBJ_DICT) {
    posh_dict_options_t o = {cap};
    r = posh_dict_create(h, NULL, &o, &self->obj);
  } else {
    r = posh_list_create(h, NULL, &self->obj);
  }
  if (r < 0)
    return pyposh_error(r);
  if (pyposh_wrappers(self->obj, 1) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *cont_open_common(Cont *self, PyObject *args, uint32_t type) {
  unsigned long long off, id;
  if (!PyArg_ParseTuple(args, "KK", &off, &id))
    return NULL;
  if (self->obj) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object already initialised");
    return NULL;
  }
  if (pyposh_obj_open(off, id, type, &self->obj) < 0)
    return NULL;
  if (pyposh_wrappers(self->obj, 1) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* len() through fn (posh_dict_len or posh_list_len). */
static Py_ssize_t cont_len(Cont *self, int (*fn)(posh_obj_t *, size_t *)) {
  if (cont_check(self) < 0)
    return -1;
  size_t n;
  int r = fn(self->obj, &n);
  if (r < 0) {
    pyposh_error(r);
    return -1;
  }
  return (Py_ssize_t)n;
}

static PyObject *cont_ref(Cont *self, PyObject *unused) {
  if (cont_check(self) < 0)
    return NULL;
  unsigned long long off, id;
  if (pyposh_obj_ref(self->obj, &off, &id) < 0)
    return NULL;
  return Py_BuildValue("(KK)", off, id);
}

/* Dict values: a stored value is a header (VHDR bytes: VHDR_TAG, then the
 * entry's insertion stamp, a native-endian u64) followed by the codec
 * encoding.  The stamp is taken from the dict's counter (the value of the
 * empty key, which no codec key encoding is) when the key is first
 * inserted and kept by overwrites, so that sorting by it gives insertion
 * order.  Values without the header (none are written by this binding)
 * read as stamp 0. */
#define VHDR 9
#define VHDR_TAG 0x01

static inline size_t val_skip(const void *p, size_t n) {
  return n >= VHDR && ((const unsigned char *)p)[0] == VHDR_TAG ? VHDR : 0;
}

static inline uint64_t val_stamp(const void *p, size_t n) {
  uint64_t s = 0;
  if (val_skip(p, n))
    memcpy(&s, (const unsigned char *)p + 1, sizeof s);
  return s;
}

/* Decode / release the encoding of a stored dict value. */
static PyObject *val_decode(const void *p, size_t n, int copy, int *stale) {
  size_t h = val_skip(p, n);
  return pyposh_decode((const unsigned char *)p + h, n - h, copy, 0, stale);
}

static void val_release(const void *p, size_t n) {
  size_t h = val_skip(p, n);
  p = (const unsigned char *)p + h;
  n -= h;
  if (PYPOSH_HAS_OOB(p, n) && pyposh_release(p, n) < 0)
    PyErr_Clear();
}

/* Release the stored references of every value (the object is about to be
 * freed by this, its last handle). */
static int dict_release_visit(const void *key, size_t klen, const void *val,
                              size_t vlen, void *arg) {
  if (klen) /* not the stamp counter */
    val_release(val, vlen);
  return 0;
}

static int list_release_visit(void *arg, size_t i, const void *data,
                              size_t len) {
  if (PYPOSH_HAS_OOB(data, len) && pyposh_release(data, len) < 0)
    PyErr_Clear();
  return 0;
}

static PyTypeObject DictBase_Type, ListBase_Type;

posh_obj_t *pyposh_cont_handle(PyObject *o) {
  return PyObject_TypeCheck(o, &DictBase_Type) ||
                 PyObject_TypeCheck(o, &ListBase_Type)
             ? ((Cont *)o)->obj
             : NULL;
}

void pyposh_cont_release(posh_obj_t *obj) {
  if (posh_obj_type(obj) == POSH_OBJ_DICT)
    posh_dict_foreach(obj, dict_release_visit, NULL);
  else
    posh_list_get_slice(obj, 0, INT64_MAX, 1, list_release_visit, NULL);
}

static void cont_dealloc(Cont *self) {
  if (self->weak)
    PyObject_ClearWeakRefs((PyObject *)self);
  /* After exit processing detached the heap, the handle's heap is gone:
   * leave it (the process is ending). */
  if (self->obj && pyposh_heap_if_any())
    pyposh_wrapper_close(self->obj);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A stored value whose heap blocks were released keeps failing to decode:
 * only after a sort/reverse raced with an overwrite (see the docs). */
#define MAX_TRIES 10000
static PyObject *stale_error(void) {
  PyErr_SetString(PyExc_ValueError,
                  "posh: the stored value's heap blocks were released "
                  "(a sort or reverse raced with an overwrite)");
  return NULL;
}

/* A decoded value read by `read` (a posh_*_get into buf/cap): re-read while
 * its heap blocks were released between the read and the decode. */
typedef int (*read_fn)(Cont *self, const void *arg, void *buf, size_t cap,
                       size_t *len);

static PyObject *read_decode(Cont *self, read_fn rd, const void *arg,
                             int copy, int hdr) {
  unsigned char stack[STACK];
  for (int tries = 0;; tries++) {
    if (tries == MAX_TRIES)
      return stale_error();
    size_t len = 0;
    int r = rd(self, arg, stack, sizeof stack, &len);
    void *heap = NULL;
    const void *p = stack;
    while (r == POSH_EMSGSIZE) {
      free(heap);
      heap = malloc(len ? len : 1);
      if (!heap)
        return PyErr_NoMemory();
      size_t cap = len;
      r = rd(self, arg, heap, cap, &len);
      p = heap;
    }
    if (r < 0) {
      free(heap);
      return (PyObject *)(intptr_t)r; /* caller maps: never a valid ptr */
    }
    int stale = 0;
    PyObject *o = hdr ? val_decode(p, len, copy, &stale)
                      : pyposh_decode(p, len, copy, 0, &stale);
    free(heap);
    if (o || !stale)
      return o;
  }
}

#define IS_ERR(o) ((intptr_t)(o) < 0 && (intptr_t)(o) > -4096)

/* ------------------------------------------------------------------------
 * dict
 * ---------------------------------------------------------------------- */
static int dict_read(Cont *self, const void *arg, void *buf, size_t cap,
                     size_t *len) {
  const pyposh_buf_t *k = arg;
  return posh_dict_get(self->obj, k->p, k->len, buf, cap, len);
}

static PyObject *dict_lookup(Cont *self, PyObject *key, int copy,
                             int *missing) {
  pyposh_buf_t k;
  *missing = 0;
  if (cont_check(self) < 0 || pyposh_encode(key, 1, &k) < 0)
    return NULL;
  PyObject *o = read_decode(self, dict_read, &k, copy, 1);
  pyposh_buf_free(&k);
  if (IS_ERR(o)) {
    int r = (int)(intptr_t)o;
    if (r == POSH_ENOENT) {
      *missing = 1;
      return NULL;
    }
    return pyposh_error(r);
  }
  return o;
}

static PyObject *dict_subscript(Cont *self, PyObject *key) {
  int missing;
  PyObject *o = dict_lookup(self, key, 0, &missing);
  if (missing)
    PyErr_SetObject(PyExc_KeyError, key);
  return o;
}

/* get(key, default=None, copy=False) */
static PyObject *dict_get(Cont *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"key", "default", "copy", NULL};
  PyObject *key, *dflt = Py_None;
  int copy = 0, missing;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op", kwlist, &key, &dflt,
                                   &copy))
    return NULL;
  PyObject *o = dict_lookup(self, key, copy, &missing);
  if (missing)
    return Py_NewRef(dflt);
  return o;
}

/* get_many(keys, default=None, copy=False): [d.get(k, default) for k in
 * keys], with the keys' entries fetched together (posh_dict_get_many), in
 * batches of GET_MANY_BATCH.  Each get is atomic on its own; the list is
 * not a snapshot.  A value bigger than the batch buffer, or one whose
 * heap blocks were released before it was decoded, is read again by
 * itself (dict_lookup). */
#define GET_MANY_BATCH 16
static PyObject *dict_get_many(Cont *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"keys", "default", "copy", NULL};
  PyObject *keys, *dflt = Py_None;
  int copy = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op", kwlist, &keys, &dflt,
                                   &copy))
    return NULL;
  if (cont_check(self) < 0)
    return NULL;
  PyObject *seq = PySequence_Fast(keys, "get_many() keys must be iterable");
  if (!seq)
    return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject *out = PyList_New(n);
  pyposh_buf_t *kb = PyMem_Malloc(GET_MANY_BATCH * sizeof *kb);
  unsigned char *vb = PyMem_Malloc((size_t)GET_MANY_BATCH * STACK);
  if (!out || !kb || !vb) {
    if (out)
      PyErr_NoMemory();
    goto fail;
  }
  for (Py_ssize_t b = 0; b < n; b += GET_MANY_BATCH) {
    Py_ssize_t m = n - b < GET_MANY_BATCH ? n - b : GET_MANY_BATCH, enc = 0;
    posh_dict_get_req_t rq[GET_MANY_BATCH];
    for (; enc < m; enc++) {
      if (pyposh_encode(PySequence_Fast_GET_ITEM(seq, b + enc), 1, &kb[enc]) < 0)
        break;
      rq[enc].key = kb[enc].p;
      rq[enc].klen = kb[enc].len;
      rq[enc].buf = vb + (size_t)enc * STACK;
      rq[enc].cap = STACK;
    }
    int r = enc == m ? posh_dict_get_many(self->obj, rq, (size_t)m) : 0;
    if (r < 0)
      pyposh_error(r);
    for (Py_ssize_t i = 0; i < m && enc == m && r == 0; i++) {
      int res = rq[i].result, stale = 0, missing = 0;
      PyObject *o = NULL;
      if (res == POSH_ENOENT) {
        o = Py_NewRef(dflt);
      } else if (res == 0) {
        o = val_decode(rq[i].buf, rq[i].vlen, copy, &stale);
        if (!o && !stale) {
          r = -1; /* decode error, exception set */
          break;
        }
      } else if (res != POSH_EMSGSIZE) {
        pyposh_error(res);
        r = -1;
        break;
      }
      if (!o) { /* too big for the batch buffer, or released meanwhile */
        o = dict_lookup(self, PySequence_Fast_GET_ITEM(seq, b + i), copy,
                        &missing);
        if (missing)
          o = Py_NewRef(dflt);
        if (!o) {
          r = -1;
          break;
        }
      }
      PyList_SET_ITEM(out, b + i, o);
    }
    for (Py_ssize_t i = 0; i < enc; i++)
      pyposh_buf_free(&kb[i]);
    if (enc < m || r != 0)
      goto fail;
  }
  PyMem_Free(kb);
  PyMem_Free(vb);
  Py_DECREF(seq);
  return out;
fail:
  PyMem_Free(kb);
  PyMem_Free(vb);
  Py_XDECREF(out);
  Py_DECREF(seq);
  return NULL;
}

/* A value to store: the header (stamp set by sval_stamp) + encoding. */
typedef struct {
  unsigned char *p;
  size_t len;
  unsigned char *heap;
  unsigned char small[VHDR + 256];
} sval_t;

static int sval_make(sval_t *s, const pyposh_buf_t *v) {
  s->len = VHDR + v->len;
  s->heap = NULL;
  s->p = s->small;
  if (s->len > sizeof s->small && !(s->p = s->heap = malloc(s->len))) {
    PyErr_NoMemory();
    return -1;
  }
  s->p[0] = VHDR_TAG;
  memcpy(s->p + VHDR, v->p, v->len);
  return 0;
}

static inline void sval_stamp(sval_t *s, uint64_t stamp) {
  memcpy(s->p + 1, &stamp, sizeof stamp);
}

static inline void sval_free(sval_t *s) { free(s->heap); }

/* A new insertion stamp: the dict's counter (the value of the empty key,
 * a u64), incremented by compare-and-swap (so that stamps are unique and
 * increase in the order they are taken, across processes). */
static int next_stamp(Cont *self, uint64_t *out) {
  for (;;) {
    uint64_t c = 0, n;
    size_t len = 0;
    int r = posh_dict_get(self->obj, NULL, 0, &c, sizeof c, &len);
    if (r == POSH_ENOENT) {
      n = 1;
      r = posh_dict_cas(self->obj, NULL, 0, NULL, 0, &n, sizeof n);
      if (r == POSH_EEXIST)
        continue;
    } else if (r == 0 && len == sizeof c) {
      n = c + 1;
      r = posh_dict_cas(self->obj, NULL, 0, &c, sizeof c, &n, sizeof n);
      if (r == POSH_EAGAIN || r == POSH_ENOENT)
        continue;
    } else if (r == 0 || r == POSH_EMSGSIZE) {
      return POSH_EINVAL; /* not a counter: not a posh.dict's */
    }
    if (r == 0)
      *out = n;
    return r;
  }
}

/* Store k -> v (encoded), releasing the old value's heap blocks: exactly
 * the process whose compare-and-swap replaced the old value releases it.
 * A new key gets a new stamp; an overwrite keeps the old value's. */
static int dict_store(Cont *self, const pyposh_buf_t *k,
                      const pyposh_buf_t *v) {
  unsigned char stack[STACK];
  sval_t s;
  if (sval_make(&s, v) < 0)
    return -1;
  for (;;) {
    size_t len = 0;
    void *heap = NULL;
    const void *old = stack;
    int r = posh_dict_get(self->obj, k->p, k->len, stack, sizeof stack, &len);
    while (r == POSH_EMSGSIZE) {
      free(heap);
      heap = malloc(len ? len : 1);
      if (!heap) {
        sval_free(&s);
        PyErr_NoMemory();
        return -1;
      }
      r = posh_dict_get(self->obj, k->p, k->len, heap, len, &len);
      old = heap;
    }
    if (r == POSH_ENOENT) {
      uint64_t stamp;
      r = next_stamp(self, &stamp);
      if (r == 0) {
        sval_stamp(&s, stamp);
        r = posh_dict_cas(self->obj, k->p, k->len, NULL, 0, s.p, s.len);
        if (r == POSH_EEXIST) {
          free(heap);
          continue; /* inserted meanwhile (the stamp is left unused) */
        }
      }
    } else if (r == 0) {
      sval_stamp(&s, val_stamp(old, len));
      r = posh_dict_cas(self->obj, k->p, k->len, old, len, s.p, s.len);
      if (r == POSH_EAGAIN || r == POSH_ENOENT) {
        free(heap);
        continue; /* changed meanwhile */
      }
      if (r == 0)
        val_release(old, len);
    }
    free(heap);
    sval_free(&s);
    if (r < 0) {
      pyposh_error(r);
      return -1;
    }
    return 0;
  }
}

/* Remove key; its value into *out if out (decoded) else released.
 * 1 removed, 0 absent, -1 error. */
static int dict_remove(Cont *self, const pyposh_buf_t *k, PyObject **out) {
  unsigned char stack[STACK];
  size_t len = 0;
  void *heap = NULL;
  const void *p = stack;
  int r = posh_dict_pop(self->obj, k->p, k->len, stack, sizeof stack, &len);
  while (r == POSH_EMSGSIZE) {
    free(heap);
    heap = malloc(len ? len : 1);
    if (!heap) {
      PyErr_NoMemory();
      return -1;
    }
    r = posh_dict_pop(self->obj, k->p, k->len, heap, len, &len);
    p = heap;
  }
  if (r == POSH_ENOENT) {
    free(heap);
    return 0;
  }
  if (r < 0) {
    free(heap);
    pyposh_error(r);
    return -1;
  }
  int ret = 1;
  if (out) {
    /* we removed it: its stored references are still there (ours to
     * drop), so the decode cannot be stale */
    int stale = 0;
    *out = val_decode(p, len, 0, &stale);
    if (!*out) {
      if (stale)
        PyErr_SetString(PyExc_RuntimeError, "posh: popped value released");
      ret = -1;
    }
  }
  val_release(p, len);
  free(heap);
  return ret;
}

static int dict_ass_subscript(Cont *self, PyObject *key, PyObject *val) {
  pyposh_buf_t k, v;
  if (cont_check(self) < 0 || pyposh_encode(key, 1, &k) < 0)
    return -1;
  int r;
  if (!val) {
    r = dict_remove(self, &k, NULL);
    if (r == 0) {
      PyErr_SetObject(PyExc_KeyError, key);
      r = -1;
    }
    pyposh_buf_free(&k);
    return r < 0 ? -1 : 0;
  }
  if (pyposh_encode(val, 0, &v) < 0) {
    pyposh_buf_free(&k);
    return -1;
  }
  r = dict_store(self, &k, &v);
  if (r < 0 && PYPOSH_HAS_OOB(v.p, v.len))
    pyposh_discard(v.p, v.len);
  pyposh_buf_free(&k);
  pyposh_buf_free(&v);
  return r;
}

static int dict_contains(Cont *self, PyObject *key) {
  pyposh_buf_t k;
  if (cont_check(self) < 0 || pyposh_encode(key, 1, &k) < 0)
    return -1;
  int r = posh_dict_contains(self->obj, k.p, k.len);
  pyposh_buf_free(&k);
  if (r == 0)
    return 1;
  if (r == POSH_ENOENT)
    return 0;
  pyposh_error(r);
  return -1;
}

/* len(): the C dict's, less the stamp counter (the empty key). */
static Py_ssize_t dict_len(Cont *self) {
  Py_ssize_t n = cont_len(self, posh_dict_len);
  if (n > 0 && posh_dict_contains(self->obj, NULL, 0) == 0)
    n--;
  return n;
}

/* _pop(key) -> value; KeyError when absent */
static PyObject *dict_pop_m(Cont *self, PyObject *key) {
  pyposh_buf_t k;
  if (cont_check(self) < 0 || pyposh_encode(key, 1, &k) < 0)
    return NULL;
  PyObject *o = NULL;
  int r = dict_remove(self, &k, &o);
  pyposh_buf_free(&k);
  if (r == 0)
    PyErr_SetObject(PyExc_KeyError, key);
  return r == 1 ? o : NULL;
}

/* The walks below are posh_dict_foreach visits (weakly consistent: see
 * posh/dict.h); a visit returns WALK_PYERR to stop on a Python error. */
#define WALK_PYERR 1

static PyObject *walk_error(int r) {
  return r == WALK_PYERR ? NULL : pyposh_error(r);
}

/* The key (encoded) of the item with the largest stamp. */
typedef struct {
  unsigned char *key;
  size_t klen, kcap;
  uint64_t stamp;
  int found;
} last_t;

static int last_visit(const void *key, size_t klen, const void *val,
                      size_t vlen, void *arg) {
  last_t *l = arg;
  uint64_t st = val_stamp(val, vlen);
  if (!klen || (l->found && st <= l->stamp))
    return 0; /* the stamp counter, or older */
  if (klen > l->kcap) {
    unsigned char *nk = realloc(l->key, klen);
    if (!nk) {
      PyErr_NoMemory();
      return WALK_PYERR;
    }
    l->key = nk;
    l->kcap = klen;
  }
  memcpy(l->key, key, klen);
  l->klen = klen;
  l->stamp = st;
  l->found = 1;
  return 0;
}

/* popitem() -> (key, value): the last inserted item (largest stamp);
 * KeyError when empty.  One walk to find it, then an atomic pop of that
 * key: if another process popped it first, the walk starts again (two
 * processes never pop the same item). */
static PyObject *dict_popitem(Cont *self, PyObject *unused) {
  if (cont_check(self) < 0)
    return NULL;
  last_t l = {NULL, 0, 0, 0, 0};
  PyObject *out = NULL;
  for (;;) {
    l.found = 0;
    int r = posh_dict_foreach(self->obj, last_visit, &l);
    if (r != 0) {
      walk_error(r);
      break;
    }
    if (!l.found) {
      PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
      break;
    }
    pyposh_buf_t k = {l.key, l.klen, NULL, {0}};
    PyObject *val = NULL;
    r = dict_remove(self, &k, &val);
    if (r == 0)
      continue; /* popped by another process meanwhile */
    if (r < 0)
      break;
    PyObject *key = pyposh_decode(l.key, l.klen, 0, 1, NULL);
    if (key)
      out = PyTuple_Pack(2, key, val);
    Py_XDECREF(key);
    Py_DECREF(val);
    break;
  }
  free(l.key);
  return out;
}

/* setdefault(key, default=None): atomic get-or-insert */
static PyObject *dict_setdefault(Cont *self, PyObject *args) {
  PyObject *key, *dflt = Py_None;
  if (!PyArg_ParseTuple(args, "O|O", &key, &dflt))
    return NULL;
  pyposh_buf_t k, v;
  if (cont_check(self) < 0 || pyposh_encode(key, 1, &k) < 0)
    return NULL;
  if (pyposh_encode(dflt, 0, &v) < 0) {
    pyposh_buf_free(&k);
    return NULL;
  }
  sval_t s;
  PyObject *out = NULL;
  int stored = 0;
  if (sval_make(&s, &v) < 0)
    goto done;
  for (;;) {
    out = read_decode(self, dict_read, &k, 0, 1);
    if (!IS_ERR(out))
      break; /* the value, or NULL with a decode error */
    int r = (int)(intptr_t)out;
    uint64_t stamp;
    out = NULL;
    if (r == POSH_ENOENT && (r = next_stamp(self, &stamp)) == 0) {
      sval_stamp(&s, stamp);
      r = posh_dict_cas(self->obj, k.p, k.len, NULL, 0, s.p, s.len);
      if (r == 0) {
        stored = 1;
        out = Py_NewRef(dflt);
        break;
      }
      if (r == POSH_EEXIST)
        continue; /* inserted meanwhile */
    }
    pyposh_error(r);
    break;
  }
  sval_free(&s);
done:
  if (!stored && PYPOSH_HAS_OOB(v.p, v.len))
    pyposh_discard(v.p, v.len); /* not stored */
  pyposh_buf_free(&k);
  pyposh_buf_free(&v);
  return out;
}

/* A snapshot of the items: encoded keys and (if vals) values, with their
 * stamps; a key seen twice (the walk restarted on a new table) counts
 * once, as last seen. */
typedef struct {
  uint64_t stamp;
  size_t seq;
  PyObject *k, *v;
} ent_t;

typedef struct {
  ent_t *e;
  size_t n;
} snap_t;

static int ent_cmp(const void *a, const void *b) {
  const ent_t *x = a, *y = b;
  if (x->stamp != y->stamp)
    return x->stamp < y->stamp ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void snap_free(snap_t *sn) {
  for (size_t i = 0; i < sn->n; i++) {
    Py_XDECREF(sn->e[i].k);
    Py_XDECREF(sn->e[i].v);
  }
  PyMem_Free(sn->e);
  sn->e = NULL;
  sn->n = 0;
}

/* Drop the earlier entries of keys seen twice. */
static int snap_dedupe(snap_t *sn) {
  PyObject *last = PyDict_New(); /* encoded key -> its last index */
  if (!last)
    return -1;
  for (size_t i = 0; i < sn->n; i++) {
    PyObject *ix = PyLong_FromSize_t(i);
    int r = ix ? PyDict_SetItem(last, sn->e[i].k, ix) : -1;
    Py_XDECREF(ix);
    if (r < 0) {
      Py_DECREF(last);
      return -1;
    }
  }
  size_t m = 0;
  for (size_t i = 0; i < sn->n; i++) {
    PyObject *ix = PyDict_GetItemWithError(last, sn->e[i].k);
    if (ix && PyLong_AsSize_t(ix) == i) {
      sn->e[m++] = sn->e[i];
    } else {
      Py_DECREF(sn->e[i].k);
      Py_XDECREF(sn->e[i].v);
    }
  }
  sn->n = m;
  Py_DECREF(last);
  return 0;
}

/* Take the snapshot, in insertion (stamp) order.  0, or -1 with an
 * exception (nothing to free). */
static int snap_take(Cont *self, snap_t *sn, int vals) {
  sn->e = NULL;
  sn->n = 0;
  size_t cap = 0, kc = STACK, vc = STACK, kl, vl;
  posh_dict_iter_t it = POSH_DICT_ITER_INIT;
  unsigned char *kb = malloc(kc), *vb = malloc(vc);
  int r = kb && vb ? 0 : POSH_ENOMEM;
  while (r == 0) {
    r = posh_dict_iter_next(self->obj, &it, kb, kc, &kl, vb, vc, &vl);
    if (r == POSH_EMSGSIZE) {
      if (kl > kc) {
        free(kb);
        kb = malloc(kc = kl);
      }
      if (vl > vc) {
        free(vb);
        vb = malloc(vc = vl);
      }
      r = kb && vb ? 0 : POSH_ENOMEM;
      continue;
    }
    if (r < 0)
      break;
    if (!kl)
      continue; /* the stamp counter */
    if (sn->n == cap) {
      size_t nc = cap ? 2 * cap : 64;
      ent_t *ne = PyMem_Realloc(sn->e, nc * sizeof *ne);
      if (!ne) {
        PyErr_NoMemory();
        r = WALK_PYERR;
        break;
      }
      sn->e = ne;
      cap = nc;
    }
    ent_t *e = &sn->e[sn->n];
    e->stamp = val_stamp(vb, vl);
    e->seq = sn->n;
    e->k = PyBytes_FromStringAndSize((char *)kb, (Py_ssize_t)kl);
    e->v = vals && e->k ? PyBytes_FromStringAndSize((char *)vb,
                                                    (Py_ssize_t)vl)
                        : NULL;
    if (!e->k || (vals && !e->v)) {
      Py_XDECREF(e->k);
      r = WALK_PYERR;
      break;
    }
    sn->n++;
  }
  free(kb);
  free(vb);
  if (r != POSH_ENOENT) {
    walk_error(r);
    snap_free(sn);
    return -1;
  }
  if (it.restarts && snap_dedupe(sn) < 0) {
    snap_free(sn);
    return -1;
  }
  qsort(sn->e, sn->n, sizeof *sn->e, ent_cmp);
  return 0;
}

/* _items(what): 0 keys, 1 values, 2 items; a snapshot list in insertion
 * order (weakly consistent, no duplicates) */
static PyObject *dict_items(Cont *self, PyObject *arg) {
  long what = PyLong_AsLong(arg);
  if (what == -1 && PyErr_Occurred())
    return NULL;
  if (cont_check(self) < 0)
    return NULL;
  snap_t sn;
  if (snap_take(self, &sn, what != 0) < 0)
    return NULL;
  PyObject *out = PyList_New(0);
  for (size_t i = 0; out && i < sn.n; i++) {
    PyObject *k = sn.e[i].k, *v = sn.e[i].v;
    PyObject *key = NULL, *val = NULL, *item = NULL;
    if (what != 1)
      key = pyposh_decode(PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), 0, 1,
                          NULL);
    if (what && (what == 1 || key)) {
      int stale = 0;
      val = val_decode(PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v), 0,
                       &stale);
      if (!val && stale) { /* replaced meanwhile: read it again */
        pyposh_buf_t kk = {(unsigned char *)PyBytes_AS_STRING(k),
                           (size_t)PyBytes_GET_SIZE(k), NULL, {0}};
        val = read_decode(self, dict_read, &kk, 0, 1);
        if (IS_ERR(val)) {
          int e = (int)(intptr_t)val;
          Py_XDECREF(key);
          if (e == POSH_ENOENT)
            continue; /* deleted meanwhile */
          Py_CLEAR(out);
          pyposh_error(e);
          break;
        }
      }
    }
    if ((what != 1 && !key) || (what && !val)) {
      Py_XDECREF(key);
      Py_XDECREF(val);
      Py_CLEAR(out);
      break;
    }
    item = what == 0 ? Py_NewRef(key)
           : what == 1 ? Py_NewRef(val)
                       : PyTuple_Pack(2, key, val);
    Py_XDECREF(key);
    Py_XDECREF(val);
    if (!item || PyList_Append(out, item) < 0)
      Py_CLEAR(out);
    Py_XDECREF(item);
  }
  snap_free(&sn);
  return out;
}

/* clear(): remove every item seen by one walk, releasing each value (one
 * atomic pop per item, not one atomic clear; the stamp counter stays) */
static PyObject *dict_clear(Cont *self, PyObject *unused) {
  if (cont_check(self) < 0)
    return NULL;
  snap_t sn;
  if (snap_take(self, &sn, 0) < 0)
    return NULL;
  int r = 0;
  for (size_t i = 0; r >= 0 && i < sn.n; i++) {
    pyposh_buf_t k = {(unsigned char *)PyBytes_AS_STRING(sn.e[i].k),
                      (size_t)PyBytes_GET_SIZE(sn.e[i].k), NULL, {0}};
    r = dict_remove(self, &k, NULL);
  }
  snap_free(&sn);
  if (r < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *dict_create(Cont *self, PyObject *args) {
  unsigned long long cap = 0;
  if (!PyArg_ParseTuple(args, "|K", &cap))
    return NULL;
  return cont_create_common(self, POSH_OBJ_DICT, cap);
}

static PyObject *dict_open(Cont *self, PyObject *args) {
  return cont_open_common(self, args, POSH_OBJ_DICT);
}

static PyMethodDef dict_methods[] = {
    PYPOSH_INIT_SUBCLASS_METHOD,
    {"_create", (PyCFunction)dict_create, METH_VARARGS, NULL},
    {"_open", (PyCFunction)dict_open, METH_VARARGS, NULL},
    {"_ref", (PyCFunction)cont_ref, METH_NOARGS, NULL},
    {"get", (PyCFunction)(void (*)(void))dict_get,
     METH_VARARGS | METH_KEYWORDS,
     "get(key, default=None, copy=False): the value, or default; copy: "
     "private copies of big buffers instead of zero-copy heap views"},
    {"get_many", (PyCFunction)(void (*)(void))dict_get_many,
     METH_VARARGS | METH_KEYWORDS,
     "get_many(keys, default=None, copy=False): [get(k, default) for k in "
     "keys], the keys' entries fetched together (each get atomic, the list "
     "not a snapshot)"},
    {"_pop", (PyCFunction)dict_pop_m, METH_O, NULL},
    {"popitem", (PyCFunction)dict_popitem, METH_NOARGS,
     "remove and return the last inserted (key, value) pair (LIFO); "
     "KeyError if empty"},
    {"setdefault", (PyCFunction)dict_setdefault, METH_VARARGS,
     "setdefault(key, default=None): atomic get-or-insert"},
    {"_items", (PyCFunction)dict_items, METH_O, NULL},
    {"clear", (PyCFunction)dict_clear, METH_NOARGS,
     "remove every item (one atomic pop per item)"},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods dict_as_mapping = {
    (lenfunc)dict_len, (binaryfunc)dict_subscript,
    (objobjargproc)dict_ass_subscript};
static PySequenceMethods dict_as_seq = {.sq_contains =
                                            (objobjproc)dict_contains};

static PyTypeObject DictBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh._posh.DictBase",
    .tp_basicsize = sizeof(Cont),
    .tp_dealloc = (destructor)cont_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = dict_methods,
    .tp_as_mapping = &dict_as_mapping,
    .tp_as_sequence = &dict_as_seq,
    .tp_weaklistoffset = offsetof(Cont, weak),
    .tp_doc = "C base of posh.dict",
};

/* ------------------------------------------------------------------------
 * list
 * ---------------------------------------------------------------------- */
static int list_read(Cont *self, const void *arg, void *buf, size_t cap,
                     size_t *len) {
  return posh_list_get(self->obj, *(const int64_t *)arg, buf, cap, len);
}

static PyObject *list_err(int r) {
  if (r == POSH_ERANGE) {
    PyErr_SetString(PyExc_IndexError, "list index out of range");
    return NULL;
  }
  return pyposh_error(r);
}

/* The decoded items of a slice (a list), re-read if stale. */
static PyObject *list_slice(Cont *self, int64_t start, int64_t stop,
                            int64_t step, int copy) {
  for (int tries = 0;; tries++) {
    if (tries == MAX_TRIES)
      return stale_error();
    posh_list_item_t *items = NULL;
    size_t n = 0;
    int r = posh_list_get_slice_alloc(self->obj, start, stop, step, &items,
                                      &n);
    if (r < 0)
      return list_err(r);
    PyObject *out = PyList_New((Py_ssize_t)n);
    int stale = 0;
    for (size_t i = 0; out && i < n; i++) {
      PyObject *o = pyposh_decode(items[i].data, items[i].len, copy, 0,
                                  &stale);
      if (!o) {
        Py_CLEAR(out);
        break;
      }
      PyList_SET_ITEM(out, (Py_ssize_t)i, o);
    }
    posh_list_items_free(items, n);
    if (out || !stale)
      return out;
  }
}

static PyObject *list_item(Cont *self, Py_ssize_t i, int copy) {
  int64_t ix = i;
  PyObject *o = read_decode(self, list_read, &ix, copy, 0);
  if (IS_ERR(o))
    return list_err((int)(intptr_t)o);
  return o;
}

static PyObject *list_subscript(Cont *self, PyObject *key) {
  if (cont_check(self) < 0)
    return NULL;
  if (PyIndex_Check(key)) {
    Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred())
      return NULL;
    return list_item(self, i, 0);
  }
  if (PySlice_Check(key)) {
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0)
      return NULL;
    return list_slice(self, start, stop, step, 0);
  }
  return PyErr_Format(PyExc_TypeError,
                      "list indices must be integers or slices, not %.200s",
                      Py_TYPE(key)->tp_name);
}

/* Release the old encodings (a list of bytes) that held heap blocks. */
static void release_list(posh_list_item_t *items, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (PYPOSH_HAS_OOB(items[i].data, items[i].len) &&
        pyposh_release(items[i].data, items[i].len) < 0)
      PyErr_Clear();
}

/* Encode the items of an iterable: a PyMem array of n encodings. */
static pyposh_buf_t *encode_all(PyObject *iterable, size_t *n_out) {
  PyObject *seq = PySequence_Fast(iterable, "can only assign an iterable");
  if (!seq)
    return NULL;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  pyposh_buf_t *bufs = PyMem_Calloc(n ? (size_t)n : 1, sizeof *bufs);
  if (!bufs) {
    Py_DECREF(seq);
    PyErr_NoMemory();
    return NULL;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    if (pyposh_encode(PySequence_Fast_GET_ITEM(seq, i), 0, &bufs[i]) < 0) {
      for (Py_ssize_t j = 0; j < i; j++) {
        if (PYPOSH_HAS_OOB(bufs[j].p, bufs[j].len))
          pyposh_discard(bufs[j].p, bufs[j].len);
        pyposh_buf_free(&bufs[j]);
      }
      PyMem_Free(bufs);
      Py_DECREF(seq);
      return NULL;
    }
    /* the small buffer moves with the array: repoint */
    if (!bufs[i].alloc)
      bufs[i].p = bufs[i].small;
  }
  Py_DECREF(seq);
  *n_out = (size_t)n;
  return bufs;
}

static void free_all(pyposh_buf_t *bufs, size_t n, int discard) {
  for (size_t i = 0; i < n; i++) {
    if (discard && PYPOSH_HAS_OOB(bufs[i].p, bufs[i].len))
      pyposh_discard(bufs[i].p, bufs[i].len);
    pyposh_buf_free(&bufs[i]);
  }
  PyMem_Free(bufs);
}

static struct iovec *to_iov(pyposh_buf_t *bufs, size_t n) {
  struct iovec *iov = PyMem_Malloc((n ? n : 1) * sizeof *iov);
  if (!iov) {
    PyErr_NoMemory();
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    iov[i].iov_base = bufs[i].p;
    iov[i].iov_len = bufs[i].len;
  }
  return iov;
}

/* l[start:stop:step] = iterable (v NULL: delete), releasing the old
 * items' heap blocks (read first: not atomic with the write, see the top
 * of the file). */
static int list_ass_slice(Cont *self, Py_ssize_t start, Py_ssize_t stop,
                          Py_ssize_t step, PyObject *v) {
  pyposh_buf_t *bufs = NULL;
  size_t n = 0;
  struct iovec *iov = NULL;
  if (v) {
    if ((PyObject *)self == v) { /* l[:] = l */
      PyObject *snap = list_slice(self, 0, INT64_MAX, 1, 0);
      if (!snap)
        return -1;
      int r = list_ass_slice(self, start, stop, step, snap);
      Py_DECREF(snap);
      return r;
    }
    if (!(bufs = encode_all(v, &n)) || !(iov = to_iov(bufs, n))) {
      if (bufs)
        free_all(bufs, n, 1);
      return -1;
    }
  }
  posh_list_item_t *old = NULL;
  size_t nold = 0;
  int r = posh_list_get_slice_alloc(self->obj, start, stop, step, &old,
                                    &nold);
  if (r == 0)
    r = v ? posh_list_set_slice(self->obj, start, stop, step, iov, n)
          : posh_list_delete_slice(self->obj, start, stop, step);
  if (r == 0)
    release_list(old, nold);
  if (old)
    posh_list_items_free(old, nold);
  PyMem_Free(iov);
  if (bufs)
    free_all(bufs, n, r < 0);
  if (r == POSH_EINVAL && v && step != 1) {
    PyErr_Format(PyExc_ValueError,
                 "attempt to assign sequence of size %zu to extended slice "
                 "of size %zu", n, nold);
    return -1;
  }
  if (r < 0) {
    list_err(r);
    return -1;
  }
  return 0;
}

static int list_ass_subscript(Cont *self, PyObject *key, PyObject *v) {
  if (cont_check(self) < 0)
    return -1;
  if (PySlice_Check(key)) {
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0)
      return -1;
    return list_ass_slice(self, start, stop, step, v);
  }
  if (!PyIndex_Check(key)) {
    PyErr_Format(PyExc_TypeError,
                 "list indices must be integers or slices, not %.200s",
                 Py_TYPE(key)->tp_name);
    return -1;
  }
  Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
  if (i == -1 && PyErr_Occurred())
    return -1;
  unsigned char stack[STACK];
  size_t len = 0;
  void *heap = NULL;
  const void *p = stack;
  int r;
  if (!v) { /* del l[i]: pop is atomic, release what it removed */
    r = posh_list_pop(self->obj, i, stack, sizeof stack, &len);
    if (r == POSH_EMSGSIZE) {
      void *d = NULL;
      r = posh_list_pop_alloc(self->obj, i, &d, &len);
      p = heap = d;
    }
    if (r == 0 && PYPOSH_HAS_OOB(p, len) && pyposh_release(p, len) < 0)
      PyErr_Clear();
    free(heap);
    if (r < 0) {
      list_err(r);
      return -1;
    }
    return 0;
  }
  pyposh_buf_t e;
  if (pyposh_encode(v, 0, &e) < 0)
    return -1;
  /* the old value, to release its blocks after the overwrite */
  r = posh_list_get(self->obj, i, stack, sizeof stack, &len);
  if (r == POSH_EMSGSIZE) {
    void *d = NULL;
    r = posh_list_get_alloc(self->obj, i, &d, &len);
    p = heap = d;
  }
  if (r == 0)
    r = posh_list_set(self->obj, i, e.p, e.len);
  if (r == 0 && PYPOSH_HAS_OOB(p, len) && pyposh_release(p, len) < 0)
    PyErr_Clear();
  free(heap);
  if (r < 0 && PYPOSH_HAS_OOB(e.p, e.len))
    pyposh_discard(e.p, e.len);
  pyposh_buf_free(&e);
  if (r < 0) {
    if (r == POSH_ERANGE)
      PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
    else
      pyposh_error(r);
    return -1;
  }
  return 0;
}

static Py_ssize_t list_len(Cont *self) { return cont_len(self, posh_list_len); }

static PyObject *list_append(Cont *self, PyObject *v) {
  pyposh_buf_t e;
  if (cont_check(self) < 0 || pyposh_encode(v, 0, &e) < 0)
    return NULL;
  int r = posh_list_append(self->obj, e.p, e.len);
  if (r < 0 && PYPOSH_HAS_OOB(e.p, e.len))
    pyposh_discard(e.p, e.len);
  pyposh_buf_free(&e);
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

static PyObject *list_extend(Cont *self, PyObject *it) {
  if (cont_check(self) < 0)
    return NULL;
  if ((PyObject *)self == it) {
    PyObject *snap = list_slice(self, 0, INT64_MAX, 1, 0);
    if (!snap)
      return NULL;
    PyObject *r = list_extend(self, snap);
    Py_DECREF(snap);
    return r;
  }
  size_t n = 0;
  pyposh_buf_t *bufs = encode_all(it, &n);
  if (!bufs)
    return NULL;
  struct iovec *iov = to_iov(bufs, n);
  int r = iov ? posh_list_extend(self->obj, iov, n) : POSH_ENOMEM;
  PyMem_Free(iov);
  free_all(bufs, n, r < 0);
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

static PyObject *list_insert(Cont *self, PyObject *args) {
  Py_ssize_t i;
  PyObject *v;
  if (!PyArg_ParseTuple(args, "nO", &i, &v))
    return NULL;
  pyposh_buf_t e;
  if (cont_check(self) < 0 || pyposh_encode(v, 0, &e) < 0)
    return NULL;
  int r = posh_list_insert(self->obj, i, e.p, e.len);
  if (r < 0 && PYPOSH_HAS_OOB(e.p, e.len))
    pyposh_discard(e.p, e.len);
  pyposh_buf_free(&e);
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

static PyObject *list_pop(Cont *self, PyObject *args) {
  Py_ssize_t i = -1;
  if (!PyArg_ParseTuple(args, "|n", &i))
    return NULL;
  if (cont_check(self) < 0)
    return NULL;
  unsigned char stack[STACK];
  size_t len = 0;
  void *heap = NULL;
  const void *p = stack;
  int r = posh_list_pop(self->obj, i, stack, sizeof stack, &len);
  if (r == POSH_EMSGSIZE) {
    void *d = NULL;
    r = posh_list_pop_alloc(self->obj, i, &d, &len);
    p = heap = d;
  }
  if (r < 0) {
    free(heap);
    if (r == POSH_ERANGE) {
      size_t n = 1;
      posh_list_len(self->obj, &n);
      PyErr_SetString(PyExc_IndexError,
                      n ? "pop index out of range" : "pop from empty list");
      return NULL;
    }
    return pyposh_error(r);
  }
  int stale = 0;
  PyObject *o = pyposh_decode(p, len, 0, 0, &stale);
  if (!o && stale)
    PyErr_SetString(PyExc_RuntimeError, "posh: popped value released");
  if (PYPOSH_HAS_OOB(p, len) && pyposh_release(p, len) < 0)
    PyErr_Clear();
  free(heap);
  return o;
}

/* _get(i, copy) */
static PyObject *list_get(Cont *self, PyObject *args) {
  Py_ssize_t i;
  int copy = 0;
  if (!PyArg_ParseTuple(args, "n|p", &i, &copy))
    return NULL;
  if (cont_check(self) < 0)
    return NULL;
  return list_item(self, i, copy);
}

/* _snapshot(copy=False): every item, decoded */
static PyObject *list_snapshot(Cont *self, PyObject *args) {
  int copy = 0;
  if (!PyArg_ParseTuple(args, "|p", &copy))
    return NULL;
  if (cont_check(self) < 0)
    return NULL;
  return list_slice(self, 0, INT64_MAX, 1, copy);
}

/* _raw() -> list of the items' encodings (bytes) */
static int raw_visit(void *arg, size_t i, const void *data, size_t len) {
  PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
  if (!b)
    return -1;
  int r = PyList_Append((PyObject *)arg, b);
  Py_DECREF(b);
  return r < 0 ? -1 : 0;
}

static PyObject *list_raw(Cont *self, PyObject *unused) {
  if (cont_check(self) < 0)
    return NULL;
  PyObject *out = PyList_New(0);
  if (!out)
    return NULL;
  int r = posh_list_get_slice(self->obj, 0, INT64_MAX, 1, raw_visit, out);
  if (r < 0) {
    Py_DECREF(out);
    return r == -1 ? NULL : pyposh_error(r);
  }
  return out;
}

/* _set_raw(start, stop, list of bytes): l[start:stop] = the encodings, as
 * they are (a permutation of the list's own items: no reference change) */
static PyObject *list_set_raw(Cont *self, PyObject *args) {
  Py_ssize_t start, stop;
  PyObject *items;
  if (!PyArg_ParseTuple(args, "nnO!", &start, &stop, &PyList_Type, &items))
    return NULL;
  if (cont_check(self) < 0)
    return NULL;
  Py_ssize_t n = PyList_GET_SIZE(items);
  struct iovec *iov = PyMem_Malloc((n ? (size_t)n : 1) * sizeof *iov);
  if (!iov)
    return PyErr_NoMemory();
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *b = PyList_GET_ITEM(items, i);
    if (!PyBytes_Check(b)) {
      PyMem_Free(iov);
      PyErr_SetString(PyExc_TypeError, "bytes expected");
      return NULL;
    }
    iov[i].iov_base = PyBytes_AS_STRING(b);
    iov[i].iov_len = (size_t)PyBytes_GET_SIZE(b);
  }
  int r = posh_list_set_slice(self->obj, start, stop, 1, iov, (size_t)n);
  PyMem_Free(iov);
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

static PyObject *list_clear(Cont *self, PyObject *unused) {
  if (cont_check(self) < 0)
    return NULL;
  if (list_ass_slice(self, 0, INT64_MAX, 1, NULL) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *list_create(Cont *self, PyObject *unused) {
  return cont_create_common(self, POSH_OBJ_LIST, 0);
}

static PyObject *list_open(Cont *self, PyObject *args) {
  return cont_open_common(self, args, POSH_OBJ_LIST);
}

static PyMethodDef list_methods[] = {
    PYPOSH_INIT_SUBCLASS_METHOD,
    {"_create", (PyCFunction)list_create, METH_NOARGS, NULL},
    {"_open", (PyCFunction)list_open, METH_VARARGS, NULL},
    {"_ref", (PyCFunction)cont_ref, METH_NOARGS, NULL},
    {"append", (PyCFunction)list_append, METH_O, "append(x): atomic"},
    {"extend", (PyCFunction)list_extend, METH_O,
     "extend(iterable): atomic (all items or none)"},
    {"insert", (PyCFunction)list_insert, METH_VARARGS,
     "insert(i, x): atomic"},
    {"pop", (PyCFunction)list_pop, METH_VARARGS,
     "pop(i=-1): remove and return item i (atomic)"},
    {"_get", (PyCFunction)list_get, METH_VARARGS, NULL},
    {"_snapshot", (PyCFunction)list_snapshot, METH_VARARGS, NULL},
    {"_raw", (PyCFunction)list_raw, METH_NOARGS, NULL},
    {"_set_raw", (PyCFunction)list_set_raw, METH_VARARGS, NULL},
    {"clear", (PyCFunction)list_clear, METH_NOARGS,
     "remove every item (atomic)"},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods list_as_mapping = {
    (lenfunc)list_len, (binaryfunc)list_subscript,
    (objobjargproc)list_ass_subscript};
static PySequenceMethods list_as_seq = {.sq_length = (lenfunc)list_len};

static PyTypeObject ListBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh._posh.ListBase",
    .tp_basicsize = sizeof(Cont),
    .tp_dealloc = (destructor)cont_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = list_methods,
    .tp_as_mapping = &list_as_mapping,
    .tp_as_sequence = &list_as_seq,
    .tp_weaklistoffset = offsetof(Cont, weak),
    .tp_doc = "C base of posh.list",
};

int pyposh_containers_init(PyObject *m) {
  if (PyType_Ready(&DictBase_Type) < 0 || PyType_Ready(&ListBase_Type) < 0)
    return -1;
  if (pyposh_register_pinned((PyObject *)&DictBase_Type) < 0 ||
      pyposh_register_pinned((PyObject *)&ListBase_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "DictBase", (PyObject *)&DictBase_Type) < 0 ||
      PyModule_AddObjectRef(m, "ListBase", (PyObject *)&ListBase_Type) < 0)
    return -1;
  return 0;
}
