/* SPDX-License-Identifier: MIT */
/*
 * This file contains the value codec of posh: dumps(obj) -> bytes and
 * loads(bytes, copy=False) -> obj.  None, bool, int (any size), float,
 * complex, str, bytes, bytearray and tuples, lists and dicts of these are
 * encoded natively; anything else with pickle protocol 5 (and the reducers
 * of multiprocessing.reduction as well as copyreg's), whose out-of-band
 * buffers of at least the threshold (64 KiB) are copied into heap blocks
 * and referenced by offset, so the receiver maps them without a copy (a
 * HeapBuffer object frees the block when the last view of it goes).
 *
 * Format (little endian; "v" = unsigned LEB128 varint):
 *   message = ['X' v:nrefs (u64 off, v:len) * nrefs] value
 *   value   = 'N' | 'T' | 'F'
 *           | 'i' v:zigzag(int64) | 'I' v:n n*byte (two's complement)
 *           | 'f' 8*byte | 'c' 16*byte
 *           | 's' v:n utf8 | 'S' v:n utf8 (surrogatepass)
 *           | 'b' v:n bytes | 'a' v:n bytes (bytearray)
 *           | 't' v:n value*n | 'l' v:n value*n | 'd' v:n (value value)*n
 *           | 'K' v:n pickle v:nbufs v:refindex*nbufs
 *   ref     = u64:off v:(len << 1) v:slot v:gen            (a heap block)
 *           | u64:off v:(id << 1 | 1) v:type v:slot v:gen  (a pin)
 * A message starts with 'X' iff it references heap blocks or objects (the
 * cheap "holds heap references" test of the containers).
 *
 * Out-of-band blocks are reference-counted.  The counts live in a table of
 * 64-bit words in the heap (a Buffer object named "posh.codec.refs", never
 * freed), one slot per live block:
 *   word = gen << 25 | dropped << 24 | count
 * A block's reference names (slot, gen); gen changes each time the slot is
 * reused, so a stale reference is recognised without touching freed memory.
 * The encoder creates a block with count 1: the reference of the message
 * (queue) or of the container that stores the encoding.  loads(consume=True)
 * takes over the message's reference (queue semantics: one loads per
 * message); loads(consume=False) takes one more reference per block (only
 * if the count is still > 0 with the same gen: otherwise the value was
 * released meanwhile and the caller re-reads it) for the views it returns.
 * release(data) drops a container's stored reference, at most once per block
 * (the dropped bit), so two processes that both saw the same old value can
 * both call it.  The last reference frees the block (posh_free).  A process
 * that dies holding references leaks those blocks (and their slots) until
 * the heap goes away.
 *
 * Posh objects (a Queue, a Lock, a posh dict ...) pickled into a value are
 * references to shared objects that must outlive the encoder's handle (a
 * temporary stored in a dict, a queue put by a process that exits): the
 * pickler pins each one (posh_obj_pin) and the message carries the pin as
 * a ref with a slot of its own, counted exactly like a block's.  The
 * pickler finds them through its dispatch table: every C base of the posh
 * objects and each of their subclasses (registered by the bases'
 * __init_subclass__) maps to a reducer that pins the object and then
 * returns its own __reduce_ex__ (a reference); other objects pay nothing.
 * The decoder opens the objects (unpickling) before it drops the message's
 * or its own count; the last count unpins the object instead of freeing a
 * block.  A pinned dict, list or queue unpinned for the last time first
 * releases what its own values or messages hold (pyposh_release_if_last),
 * through a worklist so that a deep nesting does not recurse.  Dict keys
 * pin nothing (a key's encoding must not vary).
 */
#include "pyposh.h"

#include <math.h>
#include <string.h>
#include <unistd.h>

#include "atomic.h"
#include "posh/object.h"

#define MAX_DEPTH 100
static Py_ssize_t g_threshold = 64 * 1024; /* out-of-band buffer size */
static PyObject *g_pickle_loads;

/* ------------------------------------------------------------------------
 * Reference counts of out-of-band blocks (see the top of the file).
 * Invariants: a slot with count 0 is free (its block was freed or is being
 * freed by the thread that dropped the count to 0); count > 0: the block at
 * the offset carried by the references is allocated; gen only changes when
 * a free slot is taken (rc_alloc).  Synchronization: atomic (CAS/fetch-add,
 * full barriers), no lock.
 * ---------------------------------------------------------------------- */
#define RC_SLOTS (1u << 16)
#define RC_NAME "posh.codec.refs"
#define RC_COUNT_MASK ((1ull << 24) - 1)
#define RC_DROPPED (1ull << 24)
#define RC_GEN_SHIFT 25
#define RC_GEN_MASK ((1ull << 39) - 1)

static posh_atomic_t *g_rc;    /* the table (same address in forked
                                  children); NULL until first use */
static uint32_t g_rc_cursor;   /* where rc_alloc looks first (GIL) */

/* The table, created or opened on first use; NULL (no exception) if it
 * cannot be had (then big buffers go in band). */
static posh_atomic_t *rc_table(void) {
  if (g_rc)
    return g_rc;
  posh_heap_t *h = pyposh_heap_if_any();
  if (!h)
    return NULL;
  posh_obj_t *obj = NULL;
  int r = posh_buffer_create(h, RC_NAME, RC_SLOTS * sizeof(posh_atomic_t), 64,
                             &obj);
  if (r == POSH_EEXIST)
    r = posh_obj_open(h, RC_NAME, POSH_OBJ_BUFFER, &obj);
  void *data = NULL;
  size_t size = 0;
  if (r == 0)
    r = posh_buffer_data(obj, &data, &size);
  if (r < 0 || size < RC_SLOTS * sizeof(posh_atomic_t))
    return NULL;
  /* the handle stays open for the life of the process (the name holds a
   * reference too: the table lives as long as the heap) */
  g_rc = data;
  g_rc_cursor = (uint32_t)getpid() * 2654435761u % RC_SLOTS;
  return g_rc;
}

/* Take a free slot with count 1; -1 when the table is full or missing. */
static int rc_alloc(uint32_t *slot, uint64_t *gen) {
  posh_atomic_t *t = rc_table();
  if (!t)
    return -1;
  for (uint32_t n = 0; n < RC_SLOTS; n++) {
    uint32_t i = (g_rc_cursor + n) % RC_SLOTS;
    uint64_t w = posh_atomic_load_relaxed(&t[i]);
    if (w & RC_COUNT_MASK)
      continue;
    uint64_t g = ((w >> RC_GEN_SHIFT) + 1) & RC_GEN_MASK;
    /* full barrier: pairs with the CAS/fetch-add of rc_unref that freed the
     * slot */
    if (posh_atomic_cas_bool_full(&t[i], w, g << RC_GEN_SHIFT | 1)) {
      g_rc_cursor = i + 1;
      *slot = i;
      *gen = g;
      return 0;
    }
  }
  return -1;
}

/* One more reference if the block (slot, gen) is still alive: 1, else 0. */
static int rc_tryref(uint32_t slot, uint64_t gen) {
  posh_atomic_t *t = rc_table();
  if (!t || slot >= RC_SLOTS)
    return 0;
  uint64_t w = posh_atomic_load_relaxed(&t[slot]);
  for (;;) {
    if (((w >> RC_GEN_SHIFT) & RC_GEN_MASK) != gen ||
        !(w & RC_COUNT_MASK) || (w & RC_COUNT_MASK) == RC_COUNT_MASK)
      return 0;
    /* full barrier: pairs with rc_unref's decrement (the block is not freed
     * while we hold the count) */
    uint64_t old = posh_atomic_cas_full(&t[slot], w, w + 1);
    if (old == w)
      return 1;
    w = old;
  }
}

/* Drop a reference the caller holds: 1 if it was the last (the caller then
 * frees the block). */
static int rc_unref(uint32_t slot, uint64_t gen) {
  posh_atomic_t *t = rc_table();
  if (!t || slot >= RC_SLOTS)
    return 0;
  /* full barrier: pairs with rc_tryref's CAS and rc_alloc's CAS */
  uint64_t old = posh_atomic_fetch_add_full(&t[slot], (uint64_t)-1);
  return (old & RC_COUNT_MASK) == 1;
}

/* Drop the stored (container's) reference, at most once: 1 if it was the
 * last reference. */
static int rc_drop_stored(uint32_t slot, uint64_t gen) {
  posh_atomic_t *t = rc_table();
  if (!t || slot >= RC_SLOTS)
    return 0;
  uint64_t w = posh_atomic_load_relaxed(&t[slot]);
  for (;;) {
    if (((w >> RC_GEN_SHIFT) & RC_GEN_MASK) != gen ||
        !(w & RC_COUNT_MASK) || (w & RC_DROPPED))
      return 0;
    /* full barrier: pairs with the other reference operations */
    uint64_t old = posh_atomic_cas_full(&t[slot], w, (w | RC_DROPPED) - 1);
    if (old == w)
      return (w & RC_COUNT_MASK) == 1;
    w = old;
  }
}

/* One heap reference of a message: an out-of-band block (off, len) or a
 * pin of the object (off, id, type). */
typedef struct {
  uint64_t off, len, gen;
  uint64_t id;   /* pin: the object's id */
  uint32_t type; /* pin: its enum posh_obj_type */
  uint32_t slot;
  int pin;
} oob_t;

/* ------------------------------------------------------------------------
 * Dropping pins.  The last count of a pin unpins its object; a dict or
 * list left with no other reference first releases its stored values,
 * which may drop more pins: those go on a worklist (process-local, under
 * the GIL) that the outermost call drains.
 * ---------------------------------------------------------------------- */
static posh_obj_ref_t *g_unpin;
static size_t g_unpin_n, g_unpin_cap;
static int g_unpinning;

static void pin_drop_one(posh_heap_t *h, const posh_obj_ref_t *ref) {
  posh_obj_t *o = NULL;
  if ((ref->type == POSH_OBJ_DICT || ref->type == POSH_OBJ_LIST ||
       ref->type == POSH_OBJ_QUEUE) &&
      posh_obj_open_ref(h, ref, &o) != 0)
    o = NULL;
  /* errors (a stale or damaged reference) leave everything as it was */
  (void)posh_obj_unpin(h, ref);
  if (o) {
    pyposh_release_if_last(o);
    posh_obj_close(o);
  }
}

static void pin_drop(posh_heap_t *h, const oob_t *pin) {
  posh_obj_ref_t ref = {pin->off, pin->id, pin->type, 0};
  if (g_unpinning) {
    if (g_unpin_n == g_unpin_cap) {
      size_t cap = g_unpin_cap ? g_unpin_cap * 2 : 16;
      posh_obj_ref_t *a = PyMem_Realloc(g_unpin, cap * sizeof *a);
      if (!a) { /* no memory: unpin now (its values' references leak) */
        (void)posh_obj_unpin(h, &ref);
        return;
      }
      g_unpin = a;
      g_unpin_cap = cap;
    }
    g_unpin[g_unpin_n++] = ref;
    return;
  }
  g_unpinning = 1;
  pin_drop_one(h, &ref);
  while (g_unpin_n) {
    ref = g_unpin[--g_unpin_n];
    pin_drop_one(h, &ref);
  }
  g_unpinning = 0;
}

/* The last count of ref went: free its block or drop its pin. */
static void ref_gone(posh_heap_t *h, const oob_t *ref) {
  if (ref->pin)
    pin_drop(h, ref);
  else
    posh_free_off(h, (posh_off_t){ref->off});
}

/* ------------------------------------------------------------------------
 * HeapBuffer: a writable buffer over one heap block, freed when the object
 * goes (only by the process that created the object: a forked child's copy
 * does not free its parent's block).
 * ---------------------------------------------------------------------- */
typedef struct {
  PyObject_HEAD
  void *ptr;
  Py_ssize_t len;
  pid_t pid;
  uint32_t slot; /* the reference it holds */
  uint64_t gen;
} HeapBuffer;

static void hb_dealloc(HeapBuffer *self) {
  posh_heap_t *h = pyposh_heap_if_any();
  if (self->ptr && h && self->pid == getpid() &&
      rc_unref(self->slot, self->gen))
    posh_free(h, self->ptr);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int hb_getbuffer(HeapBuffer *self, Py_buffer *view, int flags) {
  if (!pyposh_heap_if_any()) {
    PyErr_SetString(PyExc_BufferError, "posh: heap detached");
    return -1;
  }
  return PyBuffer_FillInfo(view, (PyObject *)self, self->ptr, self->len, 0,
                           flags);
}

static PyBufferProcs hb_as_buffer = {(getbufferproc)hb_getbuffer, NULL};

static PyObject *hb_repr(HeapBuffer *self) {
  return PyUnicode_FromFormat("<posh.HeapBuffer %zd bytes at offset %llu>",
                              self->len,
                              (unsigned long long)(pyposh_heap_if_any()
                                  ? posh_off(pyposh_heap_if_any(), self->ptr).v
                                  : 0));
}

static Py_ssize_t hb_len(HeapBuffer *self) { return self->len; }
static PySequenceMethods hb_as_seq = {.sq_length = (lenfunc)hb_len};

static PyTypeObject HeapBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh.HeapBuffer",
    .tp_basicsize = sizeof(HeapBuffer),
    .tp_dealloc = (destructor)hb_dealloc,
    .tp_repr = (reprfunc)hb_repr,
    .tp_as_buffer = &hb_as_buffer,
    .tp_as_sequence = &hb_as_seq,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writable buffer over a block of the posh heap (zero-copy "
              "receive side); the block is freed when the last view goes.",
};

static PyObject *hb_new(void *ptr, Py_ssize_t len, uint32_t slot,
                        uint64_t gen) {
  HeapBuffer *b = PyObject_New(HeapBuffer, &HeapBuffer_Type);
  if (!b)
    return NULL;
  b->ptr = ptr;
  b->len = len;
  b->pid = getpid();
  b->slot = slot;
  b->gen = gen;
  return (PyObject *)b;
}

/* ------------------------------------------------------------------------
 * Encoder.
 * ---------------------------------------------------------------------- */
typedef struct {
  unsigned char *buf;
  size_t len, cap;
  unsigned char *stackbuf; /* buf's initial storage, not PyMem (or NULL) */
  int key; /* encoding a dict key: canonical, no out-of-band buffers */
  /* heap blocks referenced, in order */
  oob_t *refs;
  size_t nrefs, refcap;
  PyObject *stack[MAX_DEPTH]; /* containers being encoded (cycle check) */
  int depth;
  int fallback; /* set: cycle or too deep -> pickle the whole object */
  /* pickle callback bookkeeping: ref indexes of the current pickle */
  size_t *cur_refs;
  size_t ncur, curcap;
} enc_t;

static int enc_grow(enc_t *e, size_t need) {
  if (e->len + need <= e->cap)
    return 0;
  size_t cap = e->cap ? e->cap : 256;
  while (cap < e->len + need)
    cap *= 2;
  unsigned char *b;
  if (e->buf && e->buf == e->stackbuf) {
    b = PyMem_Malloc(cap);
    if (b)
      memcpy(b, e->buf, e->len);
  } else {
    b = PyMem_Realloc(e->buf, cap);
  }
  if (!b) {
    PyErr_NoMemory();
    return -1;
  }
  e->buf = b;
  e->cap = cap;
  return 0;
}

static inline int enc_byte(enc_t *e, unsigned char c) {
  if (e->len + 1 > e->cap && enc_grow(e, 1) < 0)
    return -1;
  e->buf[e->len++] = c;
  return 0;
}

static int enc_raw(enc_t *e, const void *p, size_t n) {
  if (enc_grow(e, n) < 0)
    return -1;
  memcpy(e->buf + e->len, p, n);
  e->len += n;
  return 0;
}

static int enc_varint(enc_t *e, uint64_t v) {
  if (enc_grow(e, 10) < 0)
    return -1;
  while (v >= 0x80) {
    e->buf[e->len++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  e->buf[e->len++] = (unsigned char)v;
  return 0;
}

static int enc_tagged(enc_t *e, unsigned char tag, const void *p, size_t n) {
  if (enc_byte(e, tag) < 0 || enc_varint(e, n) < 0)
    return -1;
  return enc_raw(e, p, n);
}

/* Drop the references a message holds (freeing the blocks of which it was
 * the last holder). */
static void free_refs(posh_heap_t *h, const oob_t *refs, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (refs[i].off && rc_unref(refs[i].slot, refs[i].gen))
      ref_gone(h, &refs[i]);
}

static void enc_free(enc_t *e) {
  if (e->buf != e->stackbuf)
    PyMem_Free(e->buf);
  PyMem_Free(e->refs);
  PyMem_Free(e->cur_refs);
}

/* Room for one more ref (and, with cur, one more index of the current
 * pickle's buffers): 0, or -1 with MemoryError. */
static int refs_room(enc_t *e, int cur) {
  if (e->nrefs == e->refcap) {
    size_t rc = e->refcap ? e->refcap * 2 : 8;
    oob_t *a = PyMem_Realloc(e->refs, rc * sizeof *a);
    if (!a) {
      PyErr_NoMemory();
      return -1;
    }
    e->refs = a;
    e->refcap = rc;
  }
  if (cur && e->ncur == e->curcap) {
    size_t cc = e->curcap ? e->curcap * 2 : 8;
    size_t *c = PyMem_Realloc(e->cur_refs, cc * sizeof *c);
    if (!c) {
      PyErr_NoMemory();
      return -1;
    }
    e->cur_refs = c;
    e->curcap = cc;
  }
  return 0;
}

/* Pin the object of handle obj for the message (a ref with a count slot of
 * its own): 0, or -1 with an exception.  Keys pin nothing. */
static int enc_pin(enc_t *e, posh_obj_t *obj) {
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return -1;
  posh_obj_ref_t ref;
  if (e->key || posh_obj_heap(obj) != h || posh_obj_ref(obj, &ref) < 0)
    return 0; /* not an object of the package's heap: nothing to hold */
  uint32_t slot;
  uint64_t gen;
  if (refs_room(e, 0) < 0)
    return -1;
  if (rc_alloc(&slot, &gen) < 0) {
    PyErr_Format(PyExc_MemoryError,
                 "posh: too many posh objects and big buffers held by "
                 "queued messages and stored values (%u)", RC_SLOTS);
    return -1;
  }
  int r = posh_obj_pin(obj);
  if (r < 0) {
    rc_unref(slot, gen);
    pyposh_error(r);
    return -1;
  }
  oob_t *o = &e->refs[e->nrefs++];
  memset(o, 0, sizeof *o);
  o->off = ref.off;
  o->id = ref.id;
  o->type = ref.type;
  o->slot = slot;
  o->gen = gen;
  o->pin = 1;
  return 0;
}

/* buffer_callback of the pickler: big contiguous buffers into the heap
 * (return False: out of band), the rest in band (return True). */
static PyObject *enc_buffer(enc_t *e, PyObject *pb) {
  Py_buffer v;
  if (PyObject_GetBuffer(pb, &v, PyBUF_C_CONTIGUOUS) < 0) {
    PyErr_Clear();
    Py_RETURN_TRUE;
  }
  posh_heap_t *h = NULL;
  void *blk = NULL;
  uint32_t slot = 0;
  uint64_t gen = 0;
  if (!e->key && v.len >= g_threshold && (h = pyposh_heap()) != NULL) {
    blk = posh_alloc(h, (size_t)v.len);
    if (blk && rc_alloc(&slot, &gen) < 0) { /* no slot: in band */
      posh_free(h, blk);
      blk = NULL;
    }
  }
  if (!h)
    PyErr_Clear();
  if (!blk) { /* small, a key, or the heap is full: in band */
    PyBuffer_Release(&v);
    Py_RETURN_TRUE;
  }
  if (refs_room(e, 1) < 0) {
    rc_unref(slot, gen);
    posh_free(h, blk);
    PyBuffer_Release(&v);
    return NULL;
  }
  PYPOSH_BEGIN_HEAP_NOGIL;
  memcpy(blk, v.buf, (size_t)v.len);
  PYPOSH_END_HEAP_NOGIL;
  memset(&e->refs[e->nrefs], 0, sizeof e->refs[e->nrefs]);
  e->refs[e->nrefs].off = posh_off(h, blk).v;
  e->refs[e->nrefs].len = (uint64_t)v.len;
  e->refs[e->nrefs].slot = slot;
  e->refs[e->nrefs].gen = gen;
  e->cur_refs[e->ncur++] = e->nrefs++;
  PyBuffer_Release(&v);
  Py_RETURN_FALSE;
}

/* ------------------------------------------------------------------------
 * Pickling with multiprocessing's reducers.  Objects go through the
 * reducers of copyreg and of multiprocessing.reduction.ForkingPickler (what
 * multiprocessing's own queues and pipes use): a socket or a
 * multiprocessing Connection travels as a handle the receiver duplicates,
 * not as a dead fd number, and reducers registered with
 * multiprocessing.reduction.register apply.  pickle.dumps knows only
 * copyreg's, and a Pickler made per call costs ~4x pickle.dumps, so one
 * Pickler (with its BytesIO) is kept and reused: memo cleared, file
 * rewound.  A nested or concurrent pickle (a __reduce__ that encodes, or
 * another thread while this one runs Python code) finds it busy and makes
 * its own.  All of it under the GIL.
 * ---------------------------------------------------------------------- */
static PyObject *g_pickler_cls, *g_bytesio_cls;
static PyObject *g_copyreg_table, *g_mp_reducers; /* dicts; mp's may be NULL */
static PyObject *g_pin_types;      /* posh object types -> True (pinned) */
static PyObject *g_pk_table;       /* the three merged */
static Py_ssize_t g_pk_table_n = -1; /* their sizes when merged */
static PyObject *g_pk, *g_pk_file; /* the reusable Pickler and its file */
static int g_pk_busy;
static enc_t *g_pk_enc; /* whose buffers the reusable Pickler's callback takes */

static PyObject *enc_buffer_cb(PyObject *capsule, PyObject *pb) {
  enc_t *e = PyCapsule_GetPointer(capsule, NULL);
  return e ? enc_buffer(e, pb) : NULL;
}
static PyObject *pk_buffer_cb(PyObject *unused, PyObject *pb) {
  return enc_buffer(g_pk_enc, pb);
}
static PyMethodDef enc_cb_def = {"_posh_buffer_cb", enc_buffer_cb, METH_O,
                                 NULL};
static PyMethodDef pk_cb_def = {"_posh_buffer_cb", pk_buffer_cb, METH_O, NULL};

/* Reducer of the posh object types: pin obj for the encoder (the capsule's,
 * or with none the reusable Pickler's), then reduce obj as usual. */
static PyObject *s_reduce_ex, *g_five;
static PyObject *pin_reduce(PyObject *capsule, PyObject *obj) {
  enc_t *e = capsule ? PyCapsule_GetPointer(capsule, NULL) : g_pk_enc;
  posh_obj_t *h = pyposh_handle_of(obj);
  if (!e && !PyErr_Occurred())
    PyErr_SetString(PyExc_RuntimeError, "posh: pickling outside an encoder");
  if (!e || (h && enc_pin(e, h) < 0))
    return NULL;
  return PyObject_CallMethodOneArg(obj, s_reduce_ex, g_five);
}
static PyMethodDef pin_reduce_def = {"_posh_pin_reduce", pin_reduce, METH_O,
                                     NULL};
static PyObject *g_pin_reduce; /* pin_reduce without a capsule */

/* t[type] = reducer for every posh object type: 0, or -1. */
static int add_pin_reducers(PyObject *t, PyObject *reducer) {
  Py_ssize_t pos = 0;
  PyObject *type, *unused;
  while (PyDict_Next(g_pin_types, &pos, &type, &unused))
    if (PyDict_SetItem(t, type, reducer) < 0)
      return -1;
  return 0;
}

int pyposh_register_pinned(PyObject *cls) {
  return PyDict_SetItem(g_pin_types, cls, Py_True);
}

PyObject *pyposh_init_subclass(PyObject *cls, PyObject *args, PyObject *kw) {
  if ((args && PyTuple_GET_SIZE(args)) || (kw && PyDict_GET_SIZE(kw))) {
    PyErr_Format(PyExc_TypeError, "%s.__init_subclass__() takes no arguments",
                 ((PyTypeObject *)cls)->tp_name);
    return NULL;
  }
  if (pyposh_register_pinned(cls) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* The merged dispatch table, rebuilt when a source changed size (a reducer
 * registered after import, a new posh object class). */
static PyObject *pk_table(void) {
  Py_ssize_t n = PyDict_Size(g_copyreg_table) + PyDict_Size(g_pin_types) +
                 (g_mp_reducers ? PyDict_Size(g_mp_reducers) : 0);
  if (g_pk_table && n == g_pk_table_n)
    return g_pk_table;
  PyObject *t = PyDict_Copy(g_copyreg_table);
  if (!t || (g_mp_reducers && PyDict_Update(t, g_mp_reducers) < 0) ||
      add_pin_reducers(t, g_pin_reduce) < 0) {
    Py_XDECREF(t);
    return NULL;
  }
  Py_XSETREF(g_pk_table, t);
  g_pk_table_n = n;
  if (g_pk && PyObject_SetAttrString(g_pk, "dispatch_table", t) < 0) {
    PyErr_Clear();
    Py_CLEAR(g_pk); /* made anew below */
    Py_CLEAR(g_pk_file);
  }
  return t;
}

static PyObject *new_pickler(PyObject *file, PyObject *cb, PyObject *table) {
  PyObject *args = Py_BuildValue("(Oi)", file, 5);
  PyObject *kw = args ? Py_BuildValue("{sO}", "buffer_callback", cb) : NULL;
  PyObject *p = kw ? PyObject_Call(g_pickler_cls, args, kw) : NULL;
  Py_XDECREF(args);
  Py_XDECREF(kw);
  if (p && PyObject_SetAttrString(p, "dispatch_table", table) < 0)
    Py_CLEAR(p);
  return p;
}

/* Interned method names and 0, for the vectorcalls of the reused Pickler
 * (a format-string call per method doubled the cost of a small pickle). */
static PyObject *s_seek, *s_truncate, *s_clear_memo, *s_dump, *s_getvalue,
    *g_zero;

/* o.name() or o.name(arg), result dropped: 0, or -1 with an exception. */
static int call_ok(PyObject *o, PyObject *name, PyObject *arg) {
  PyObject *r = arg ? PyObject_CallMethodOneArg(o, name, arg)
                    : PyObject_CallMethodNoArgs(o, name);
  Py_XDECREF(r);
  return r ? 0 : -1;
}

/* Pickle obj (protocol 5, e's buffer callback): new bytes, or NULL. */
static PyObject *pickle_obj(enc_t *e, PyObject *obj) {
  PyObject *table = pk_table();
  if (!table)
    return NULL;
  if (g_pk_busy) { /* nested or concurrent: a Pickler of its own */
    PyObject *cap = PyCapsule_New(e, NULL, NULL);
    PyObject *cb = cap ? PyCFunction_New(&enc_cb_def, cap) : NULL;
    /* its own pin reducers too: the pins go to e */
    PyObject *pin = cb ? PyCFunction_New(&pin_reduce_def, cap) : NULL;
    PyObject *own = pin ? PyDict_Copy(table) : NULL;
    if (own && add_pin_reducers(own, pin) < 0)
      Py_CLEAR(own);
    PyObject *file = own ? PyObject_CallNoArgs(g_bytesio_cls) : NULL;
    PyObject *p = file ? new_pickler(file, cb, own) : NULL;
    PyObject *data = p && call_ok(p, s_dump, obj) == 0
                         ? PyObject_CallMethodNoArgs(file, s_getvalue)
                         : NULL;
    Py_XDECREF(p);
    Py_XDECREF(file);
    Py_XDECREF(own);
    Py_XDECREF(pin);
    Py_XDECREF(cb);
    Py_XDECREF(cap);
    return data;
  }
  if (!g_pk) {
    PyObject *cb = PyCFunction_New(&pk_cb_def, NULL);
    g_pk_file = cb ? PyObject_CallNoArgs(g_bytesio_cls) : NULL;
    g_pk = g_pk_file ? new_pickler(g_pk_file, cb, table) : NULL;
    Py_XDECREF(cb);
    if (!g_pk) {
      Py_CLEAR(g_pk_file);
      return NULL;
    }
  }
  /* Our references: a nested pickle may not replace them, but pk_table
   * may (it drops and remakes them only when not busy, i.e. not now). */
  PyObject *p = Py_NewRef(g_pk), *file = Py_NewRef(g_pk_file);
  g_pk_busy = 1;
  g_pk_enc = e;
  PyObject *data = NULL;
  if (call_ok(file, s_seek, g_zero) == 0 && call_ok(file, s_truncate, NULL) == 0 &&
      call_ok(p, s_dump, obj) == 0)
    data = PyObject_CallMethodNoArgs(file, s_getvalue);
  /* The memo would keep every pickled object alive until the next use;
   * after a failed dump, clear it with the dump's exception kept aside. */
  if (data) {
    if (call_ok(p, s_clear_memo, NULL) < 0)
      Py_CLEAR(data);
  } else {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (call_ok(p, s_clear_memo, NULL) < 0)
      PyErr_Clear();
    PyErr_Restore(et, ev, tb);
  }
  g_pk_busy = 0;
  g_pk_enc = NULL;
  Py_DECREF(p);
  Py_DECREF(file);
  if (data && !PyBytes_Check(data)) {
    Py_DECREF(data);
    PyErr_SetString(PyExc_TypeError, "posh: the pickler gave no bytes");
    return NULL;
  }
  return data;
}

static int enc_pickle(enc_t *e, PyObject *obj) {
  e->ncur = 0;
  size_t first_ref = e->nrefs;
  PyObject *data = pickle_obj(e, obj);
  int r = -1;
  if (data) {
    r = enc_tagged(e, 'K', PyBytes_AS_STRING(data),
                   (size_t)PyBytes_GET_SIZE(data));
    if (r == 0)
      r = enc_varint(e, e->ncur);
    for (size_t i = 0; r == 0 && i < e->ncur; i++)
      r = enc_varint(e, e->cur_refs[i]);
    Py_DECREF(data);
  }
  if (r < 0 && e->nrefs > first_ref) { /* this pickle's blocks */
    posh_heap_t *h = pyposh_heap_if_any();
    if (h)
      free_refs(h, e->refs + first_ref, e->nrefs - first_ref);
    e->nrefs = first_ref;
  }
  return r;
}

static int enc_value(enc_t *e, PyObject *obj);

static int enc_push(enc_t *e, PyObject *obj) {
  if (e->depth >= MAX_DEPTH) {
    e->fallback = 1;
    return -1;
  }
  for (int i = 0; i < e->depth; i++)
    if (e->stack[i] == obj) {
      e->fallback = 1;
      return -1;
    }
  e->stack[e->depth++] = obj;
  return 0;
}

static int enc_seq(enc_t *e, unsigned char tag, PyObject *obj,
                   PyObject **items, Py_ssize_t n) {
  if (enc_push(e, obj) < 0)
    return -1;
  int r = enc_byte(e, tag) < 0 || enc_varint(e, (uint64_t)n) < 0 ? -1 : 0;
  for (Py_ssize_t i = 0; r == 0 && i < n; i++)
    r = enc_value(e, items[i]);
  e->depth--;
  return r;
}

static int enc_value(enc_t *e, PyObject *obj) {
  PyTypeObject *t = Py_TYPE(obj);
  if (obj == Py_None)
    return enc_byte(e, 'N');
  if (e->key) {
    /* keys that compare equal (1 == 1.0 == True == (1+0j)) encode equally:
     * as the int */
    if (obj == Py_True || obj == Py_False)
      return enc_byte(e, 'i') < 0 ? -1 : enc_varint(e, obj == Py_True ? 2 : 0);
    if (t == &PyComplex_Type && PyComplex_ImagAsDouble(obj) == 0.0) {
      PyObject *re = PyFloat_FromDouble(PyComplex_RealAsDouble(obj));
      int r = re ? enc_value(e, re) : -1;
      Py_XDECREF(re);
      return r;
    }
    if (t == &PyFloat_Type) {
      double d = PyFloat_AS_DOUBLE(obj);
      if (isfinite(d) && d == floor(d)) {
        PyObject *i = PyLong_FromDouble(d);
        int r = i ? enc_value(e, i) : -1;
        Py_XDECREF(i);
        return r;
      }
    }
  }
  if (obj == Py_True)
    return enc_byte(e, 'T');
  if (obj == Py_False)
    return enc_byte(e, 'F');
  if (t == &PyLong_Type) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
      return -1;
    if (!overflow) {
      uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
      if (enc_byte(e, 'i') < 0)
        return -1;
      return enc_varint(e, z);
    }
    size_t bits = _PyLong_NumBits(obj);
    if (bits == (size_t)-1 && PyErr_Occurred())
      return -1;
    size_t n = bits / 8 + 1; /* room for the sign bit */
    if (enc_byte(e, 'I') < 0 || enc_varint(e, n) < 0 || enc_grow(e, n) < 0)
      return -1;
#if PY_VERSION_HEX >= 0x030D0000
    if (_PyLong_AsByteArray((PyLongObject *)obj, e->buf + e->len, n, 1, 1,
                            1) < 0)
#else
    if (_PyLong_AsByteArray((PyLongObject *)obj, e->buf + e->len, n, 1, 1) <
        0)
#endif
      return -1;
    e->len += n;
    return 0;
  }
  if (t == &PyFloat_Type) {
    double d = PyFloat_AS_DOUBLE(obj);
    if (enc_byte(e, 'f') < 0)
      return -1;
    return enc_raw(e, &d, 8);
  }
  if (t == &PyUnicode_Type) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
    if (s)
      return enc_tagged(e, 's', s, (size_t)n);
    PyErr_Clear(); /* lone surrogates */
    PyObject *b = PyUnicode_AsEncodedString(obj, "utf-8", "surrogatepass");
    if (!b)
      return -1;
    int r = enc_tagged(e, 'S', PyBytes_AS_STRING(b),
                       (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    return r;
  }
  if (t == &PyBytes_Type)
    return enc_tagged(e, 'b', PyBytes_AS_STRING(obj),
                      (size_t)PyBytes_GET_SIZE(obj));
  if (t == &PyByteArray_Type)
    return enc_tagged(e, 'a', PyByteArray_AS_STRING(obj),
                      (size_t)PyByteArray_GET_SIZE(obj));
  if (t == &PyTuple_Type)
    return enc_seq(e, 't', obj, &PyTuple_GET_ITEM(obj, 0),
                   PyTuple_GET_SIZE(obj));
  if (t == &PyList_Type) {
    /* a snapshot of the items: encoding may run Python code (pickle) that
     * mutates the list */
    PyObject *tup = PyList_AsTuple(obj);
    if (!tup)
      return -1;
    int r = enc_seq(e, 'l', obj, &PyTuple_GET_ITEM(tup, 0),
                    PyTuple_GET_SIZE(tup));
    Py_DECREF(tup);
    return r;
  }
  if (t == &PyDict_Type) {
    PyObject *items = PyDict_Items(obj);
    if (!items)
      return -1;
    if (enc_push(e, obj) < 0) {
      Py_DECREF(items);
      return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(items);
    int r = enc_byte(e, 'd') < 0 || enc_varint(e, (uint64_t)n) < 0 ? -1 : 0;
    for (Py_ssize_t i = 0; r == 0 && i < n; i++) {
      PyObject *kv = PyList_GET_ITEM(items, i);
      r = enc_value(e, PyTuple_GET_ITEM(kv, 0));
      if (r == 0)
        r = enc_value(e, PyTuple_GET_ITEM(kv, 1));
    }
    e->depth--;
    Py_DECREF(items);
    return r;
  }
  if (t == &PyComplex_Type) {
    Py_complex c = PyComplex_AsCComplex(obj);
    double d[2] = {c.real, c.imag};
    if (enc_byte(e, 'c') < 0)
      return -1;
    return enc_raw(e, d, 16);
  }
  return enc_pickle(e, obj);
}

/* Encode obj into out (out->small first, PyMem beyond).  key: canonical
 * dict-key encoding (equal keys of the native types encode equally; no
 * heap blocks); unhashable keys raise TypeError as dict does. */
int pyposh_encode(PyObject *obj, int key, pyposh_buf_t *out) {
  out->p = NULL;
  out->len = 0;
  out->alloc = NULL;
  if (key) {
    PyTypeObject *t = Py_TYPE(obj);
    if (t != &PyUnicode_Type && t != &PyLong_Type && t != &PyBytes_Type &&
        PyObject_Hash(obj) == -1)
      return -1;
  }
  enc_t e;
  memset(&e, 0, sizeof e);
  e.buf = e.stackbuf = out->small;
  e.cap = sizeof out->small;
  e.key = key;
  int r = enc_value(&e, obj);
  if (r < 0 && e.fallback) { /* cycle or too deep: pickle it all */
    PyErr_Clear();
    posh_heap_t *h = pyposh_heap_if_any();
    if (h)
      free_refs(h, e.refs, e.nrefs);
    e.nrefs = 0;
    e.len = 0;
    e.depth = 0;
    e.fallback = 0;
    r = enc_pickle(&e, obj);
  }
  if (r == 0 && e.nrefs == 0) {
    out->p = e.buf;
    out->len = e.len;
    if (e.buf != e.stackbuf) {
      out->alloc = e.buf;
      e.buf = e.stackbuf; /* now out's */
    }
  } else if (r == 0) {
    enc_t hdr;
    memset(&hdr, 0, sizeof hdr);
    r = enc_byte(&hdr, 'X') < 0 || enc_varint(&hdr, e.nrefs) < 0 ? -1 : 0;
    for (size_t i = 0; r == 0 && i < e.nrefs; i++) {
      const oob_t *o = &e.refs[i];
      r = enc_raw(&hdr, &o->off, 8);
      if (r == 0)
        r = enc_varint(&hdr, o->pin ? o->id << 1 | 1 : o->len << 1);
      if (r == 0 && o->pin)
        r = enc_varint(&hdr, o->type);
      if (r == 0)
        r = enc_varint(&hdr, e.refs[i].slot);
      if (r == 0)
        r = enc_varint(&hdr, e.refs[i].gen);
    }
    if (r == 0)
      r = enc_raw(&hdr, e.buf, e.len);
    if (r == 0) {
      out->p = out->alloc = hdr.buf;
      out->len = hdr.len;
    } else {
      enc_free(&hdr);
    }
  }
  if (r < 0 && e.nrefs) {
    posh_heap_t *h = pyposh_heap_if_any();
    if (h)
      free_refs(h, e.refs, e.nrefs);
  }
  enc_free(&e);
  return r;
}

void pyposh_buf_free(pyposh_buf_t *b) {
  PyMem_Free(b->alloc);
  b->alloc = NULL;
  b->p = NULL;
}

/* Encode obj into a new bytes object. */
static PyObject *encode(PyObject *obj) {
  pyposh_buf_t b;
  if (pyposh_encode(obj, 0, &b) < 0)
    return NULL;
  PyObject *out = PyBytes_FromStringAndSize((const char *)b.p,
                                            (Py_ssize_t)b.len);
  if (!out && b.len && b.p[0] == 'X')
    pyposh_discard(b.p, b.len);
  pyposh_buf_free(&b);
  return out;
}

/* ------------------------------------------------------------------------
 * Decoder.
 * ---------------------------------------------------------------------- */
typedef struct {
  const unsigned char *p, *end;
  PyObject **bufs; /* per ref: HeapBuffer (or bytearray copy) */
  size_t nrefs;
  int depth;
} dec_t;

static PyObject *dec_bad(void) {
  PyErr_SetString(PyExc_ValueError, "posh: malformed encoded value");
  return NULL;
}

static int dec_varint(dec_t *d, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (d->p >= d->end)
      break;
    unsigned char c = *d->p++;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *out = v;
      return 0;
    }
  }
  dec_bad();
  return -1;
}

/* a length followed by that many bytes */
static const unsigned char *dec_span(dec_t *d, size_t *n) {
  uint64_t v;
  if (dec_varint(d, &v) < 0)
    return NULL;
  if (v > (uint64_t)(d->end - d->p)) {
    dec_bad();
    return NULL;
  }
  const unsigned char *s = d->p;
  d->p += v;
  *n = (size_t)v;
  return s;
}

static PyObject *dec_value(dec_t *d);

static PyObject *dec_pickle(dec_t *d) {
  size_t n;
  const unsigned char *s = dec_span(d, &n);
  uint64_t nb;
  if (!s || dec_varint(d, &nb) < 0)
    return NULL;
  if (nb > d->nrefs)
    return dec_bad();
  PyObject *bufs = PyList_New((Py_ssize_t)nb);
  if (!bufs)
    return NULL;
  for (uint64_t i = 0; i < nb; i++) {
    uint64_t ix;
    if (dec_varint(d, &ix) < 0 || ix >= d->nrefs || !d->bufs[ix]) {
      Py_DECREF(bufs);
      return PyErr_Occurred() ? NULL : dec_bad();
    }
    Py_INCREF(d->bufs[ix]);
    PyList_SET_ITEM(bufs, (Py_ssize_t)i, d->bufs[ix]);
  }
  PyObject *data = PyMemoryView_FromMemory((char *)s, (Py_ssize_t)n,
                                           PyBUF_READ);
  PyObject *args = data ? Py_BuildValue("(N)", data) : NULL;
  PyObject *kw = args ? Py_BuildValue("{sN}", "buffers", bufs) : NULL;
  if (!kw)
    Py_DECREF(bufs);
  PyObject *out = kw ? PyObject_Call(g_pickle_loads, args, kw) : NULL;
  Py_XDECREF(args);
  Py_XDECREF(kw);
  return out;
}

static PyObject *dec_value(dec_t *d) {
  if (d->p >= d->end)
    return dec_bad();
  unsigned char tag = *d->p++;
  size_t n;
  const unsigned char *s;
  uint64_t v;
  switch (tag) {
  case 'N':
    Py_RETURN_NONE;
  case 'T':
    Py_RETURN_TRUE;
  case 'F':
    Py_RETURN_FALSE;
  case 'i':
    if (dec_varint(d, &v) < 0)
      return NULL;
    return PyLong_FromLongLong((long long)(v >> 1) ^ -(long long)(v & 1));
  case 'I':
    if (!(s = dec_span(d, &n)))
      return NULL;
    return _PyLong_FromByteArray(s, n, 1, 1);
  case 'f': {
    double x;
    if (d->end - d->p < 8)
      return dec_bad();
    memcpy(&x, d->p, 8);
    d->p += 8;
    return PyFloat_FromDouble(x);
  }
  case 'c': {
    double x[2];
    if (d->end - d->p < 16)
      return dec_bad();
    memcpy(x, d->p, 16);
    d->p += 16;
    return PyComplex_FromDoubles(x[0], x[1]);
  }
  case 's':
  case 'S':
    if (!(s = dec_span(d, &n)))
      return NULL;
    return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n,
                                tag == 'S' ? "surrogatepass" : NULL);
  case 'b':
    if (!(s = dec_span(d, &n)))
      return NULL;
    return PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)n);
  case 'a':
    if (!(s = dec_span(d, &n)))
      return NULL;
    return PyByteArray_FromStringAndSize((const char *)s, (Py_ssize_t)n);
  case 't':
  case 'l':
  case 'd': {
    if (dec_varint(d, &v) < 0)
      return NULL;
    /* each item takes at least one byte (two for a dict entry) */
    if (v > (uint64_t)(d->end - d->p) || d->depth >= MAX_DEPTH + 1)
      return dec_bad();
    Py_ssize_t cnt = (Py_ssize_t)v;
    PyObject *c = tag == 't'   ? PyTuple_New(cnt)
                  : tag == 'l' ? PyList_New(cnt)
                               : PyDict_New();
    if (!c)
      return NULL;
    d->depth++;
    for (Py_ssize_t i = 0; i < cnt; i++) {
      PyObject *x = dec_value(d);
      if (!x)
        goto fail;
      if (tag == 't') {
        PyTuple_SET_ITEM(c, i, x);
      } else if (tag == 'l') {
        PyList_SET_ITEM(c, i, x);
      } else {
        PyObject *y = dec_value(d);
        int r = y ? PyDict_SetItem(c, x, y) : -1;
        Py_DECREF(x);
        Py_XDECREF(y);
        if (r < 0)
          goto fail;
      }
    }
    d->depth--;
    return c;
  fail:
    d->depth--;
    Py_DECREF(c);
    return NULL;
  }
  case 'K':
    return dec_pickle(d);
  default:
    return dec_bad();
  }
}

/* Parse the 'X' header: fills *refs (a PyMem array) and *nrefs. */
static int dec_header(dec_t *d, oob_t **refs, size_t *nrefs) {
  *refs = NULL;
  *nrefs = 0;
  if (d->p >= d->end || *d->p != 'X')
    return 0;
  d->p++;
  uint64_t n, v;
  if (dec_varint(d, &n) < 0)
    return -1;
  if (n > (uint64_t)(d->end - d->p) / 11) {
    dec_bad();
    return -1;
  }
  *refs = PyMem_Malloc((n ? n : 1) * sizeof(oob_t));
  if (!*refs) {
    PyErr_NoMemory();
    return -1;
  }
  for (uint64_t i = 0; i < n; i++) {
    oob_t *o = &(*refs)[i];
    if (d->end - d->p < 8)
      goto bad;
    memset(o, 0, sizeof *o);
    memcpy(&o->off, d->p, 8);
    d->p += 8;
    uint64_t w, type = 0;
    if (dec_varint(d, &w) < 0)
      goto bad;
    o->pin = (int)(w & 1);
    if (o->pin) {
      o->id = w >> 1;
      if (dec_varint(d, &type) < 0 || type == 0 || type > POSH_OBJ_TYPE_MAX ||
          o->id == 0)
        goto bad;
      o->type = (uint32_t)type;
    } else {
      o->len = w >> 1;
    }
    if (dec_varint(d, &v) < 0 || dec_varint(d, &o->gen) < 0)
      goto bad;
    if (v >= RC_SLOTS || !o->off)
      goto bad;
    o->slot = (uint32_t)v;
  }
  *nrefs = (size_t)n;
  return 0;
bad:
  if (!PyErr_Occurred())
    dec_bad();
  PyMem_Free(*refs);
  *refs = NULL;
  return -1;
}

/* Decode.  consume: the message's references pass to the result (or are
 * dropped); else the result takes references of its own (then *stale is
 * set, NULL returned without an exception, if a block was released
 * meanwhile: re-read the value). */
PyObject *pyposh_decode(const void *data, size_t n, int copy, int consume,
                        int *stale) {
  const unsigned char *p = data;
  dec_t d = {p, p + n, NULL, 0, 0};
  oob_t *refs;
  size_t nrefs;
  if (stale)
    *stale = 0;
  if (dec_header(&d, &refs, &nrefs) < 0)
    return NULL;
  posh_heap_t *h = NULL;
  PyObject *out = NULL;
  if (nrefs) {
    h = pyposh_heap();
    if (!h)
      goto done;
    d.bufs = PyMem_Calloc(nrefs, sizeof(PyObject *));
    if (!d.bufs) {
      PyErr_NoMemory();
      goto done;
    }
    d.nrefs = nrefs;
    /* Take ownership of every block first (consume: so they are freed
     * whatever happens below). */
    for (size_t i = 0; i < nrefs; i++) {
      oob_t *o = &refs[i];
      if (!consume) {
        if (!rc_tryref(o->slot, o->gen)) {
          if (stale)
            *stale = 1;
          else
            PyErr_SetString(PyExc_ValueError,
                            "posh: the value's heap blocks were released");
          o->off = 0; /* nothing held */
          for (size_t j = i + 1; j < nrefs; j++)
            refs[j].off = 0;
          goto done;
        }
      }
      if (o->pin) /* held until the value has opened the object (done:) */
        continue;
      void *blk = posh_ptr(h, (posh_off_t){o->off});
      if (!posh_heap_contains(h, blk) || posh_usable_size(h, blk) < o->len) {
        dec_bad();
        goto done;
      }
      if (copy) {
        d.bufs[i] = PyByteArray_FromStringAndSize(blk, (Py_ssize_t)o->len);
        if (!d.bufs[i])
          goto done;
        if (rc_unref(o->slot, o->gen))
          posh_free(h, blk);
      } else {
        d.bufs[i] = hb_new(blk, (Py_ssize_t)o->len, o->slot, o->gen);
        if (!d.bufs[i])
          goto done;
      }
      o->off = 0; /* the reference is handled */
    }
  }
  out = dec_value(&d);
  if (out && d.p != d.end) {
    Py_CLEAR(out);
    dec_bad();
  }
done:
  if (h)
    free_refs(h, refs, nrefs); /* references not yet owned by an object */
  if (d.bufs) {
    for (size_t i = 0; i < nrefs; i++)
      Py_XDECREF(d.bufs[i]);
    PyMem_Free(d.bufs);
  }
  PyMem_Free(refs);
  return out;
}

/* Drop the references of an encoded value never decoded (a message's: one
 * each, unconditionally) or stored (release: a container's, at most once).
 * Returns the number of blocks, -1 with an exception on malformed data. */
static Py_ssize_t drop_refs(const void *data, size_t len, int stored) {
  dec_t d = {data, (const unsigned char *)data + len, NULL, 0, 0};
  oob_t *refs;
  size_t n;
  if (len == 0 || *(const unsigned char *)data != 'X')
    return 0;
  if (dec_header(&d, &refs, &n) < 0)
    return -1;
  posh_heap_t *h = pyposh_heap_if_any();
  if (h) {
    if (stored) {
      for (size_t i = 0; i < n; i++)
        if (rc_drop_stored(refs[i].slot, refs[i].gen))
          ref_gone(h, &refs[i]);
    } else {
      free_refs(h, refs, n);
    }
  }
  PyMem_Free(refs);
  return (Py_ssize_t)n;
}

Py_ssize_t pyposh_discard(const void *data, size_t len) {
  return drop_refs(data, len, 0);
}

Py_ssize_t pyposh_release(const void *data, size_t len) {
  return drop_refs(data, len, 1);
}

/* ------------------------------------------------------------------------
 * Module functions.
 * ---------------------------------------------------------------------- */
static PyObject *m_dumps(PyObject *self, PyObject *obj) { return encode(obj); }

static PyObject *m_loads(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"data", "copy", "consume", NULL};
  Py_buffer b;
  int copy = 0, consume = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|pp", kwlist, &b, &copy,
                                   &consume))
    return NULL;
  PyObject *out = pyposh_decode(b.buf, (size_t)b.len, copy, consume, NULL);
  PyBuffer_Release(&b);
  return out;
}

/* discard(data) / release(data): drop the message's / the container's
 * references of an encoded value */
static PyObject *drop_common(PyObject *arg, int stored) {
  Py_buffer b;
  if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
    return NULL;
  Py_ssize_t n = drop_refs(b.buf, (size_t)b.len, stored);
  PyBuffer_Release(&b);
  return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *m_discard(PyObject *self, PyObject *arg) {
  return drop_common(arg, 0);
}

static PyObject *m_release(PyObject *self, PyObject *arg) {
  return drop_common(arg, 1);
}

/* refcount(data) -> list of the reference counts of its blocks (tests) */
static PyObject *m_refcounts(PyObject *self, PyObject *arg) {
  Py_buffer b;
  if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
    return NULL;
  dec_t d = {b.buf, (const unsigned char *)b.buf + b.len, NULL, 0, 0};
  oob_t *refs;
  size_t n;
  int r = dec_header(&d, &refs, &n);
  PyBuffer_Release(&b);
  if (r < 0)
    return NULL;
  posh_atomic_t *t = n ? rc_table() : NULL;
  PyObject *out = PyList_New((Py_ssize_t)n);
  for (size_t i = 0; out && i < n; i++) {
    uint64_t w = t ? posh_atomic_load_acquire(&t[refs[i].slot]) : 0;
    /* acquire: pairs with the reference operations' full barriers */
    long c = ((w >> RC_GEN_SHIFT) & RC_GEN_MASK) == refs[i].gen
                 ? (long)(w & RC_COUNT_MASK) : 0;
    PyList_SET_ITEM(out, (Py_ssize_t)i, PyLong_FromLong(c));
  }
  PyMem_Free(refs);
  return out;
}

/* in_heap(obj) -> bool: the buffer of obj lies in the default heap */
static PyObject *m_in_heap(PyObject *self, PyObject *arg) {
  Py_buffer b;
  if (PyObject_GetBuffer(arg, &b, PyBUF_RECORDS_RO) < 0)
    return NULL;
  posh_heap_t *h = pyposh_heap_if_any();
  int in = h && b.len > 0 && posh_heap_contains(h, b.buf) &&
           posh_heap_contains(h, (char *)b.buf + b.len - 1);
  PyBuffer_Release(&b);
  return PyBool_FromLong(in);
}

static PyObject *m_set_threshold(PyObject *self, PyObject *arg) {
  Py_ssize_t n = PyLong_AsSsize_t(arg);
  if (n == -1 && PyErr_Occurred())
    return NULL;
  if (n < 1) {
    PyErr_SetString(PyExc_ValueError, "threshold must be >= 1");
    return NULL;
  }
  Py_ssize_t old = g_threshold;
  g_threshold = n;
  return PyLong_FromSsize_t(old);
}

static PyMethodDef codec_methods[] = {
    {"dumps", m_dumps, METH_O,
     "dumps(obj) -> bytes: encode obj (natively or with pickle 5; big "
     "buffers go to the heap)"},
    {"loads", (PyCFunction)(void (*)(void))m_loads,
     METH_VARARGS | METH_KEYWORDS,
     "loads(data, copy=False, consume=True): decode; consume: the message's "
     "references (heap blocks, pinned objects) pass to the result (once per "
     "message); consume=False: the result takes references of its own"},
    {"discard", m_discard, METH_O,
     "discard(data) -> n: drop the message's references (heap blocks, "
     "pinned objects) without decoding"},
    {"release", m_release, METH_O,
     "release(data) -> n: drop a container's stored references (heap "
     "blocks, pinned objects) of data (at most once each)"},
    {"_refcounts", m_refcounts, METH_O,
     "_refcounts(data) -> [count per heap reference] (0: released)"},
    {"in_heap", m_in_heap, METH_O, "in_heap(buffer) -> bool"},
    {"set_oob_threshold", m_set_threshold, METH_O,
     "set_oob_threshold(n) -> old: smallest buffer placed in the heap"},
    {NULL, NULL, 0, NULL},
};

int pyposh_codec_init(PyObject *m) {
  if (PyType_Ready(&HeapBuffer_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "HeapBuffer", (PyObject *)&HeapBuffer_Type) <
      0)
    return -1;
  PyObject *pickle = PyImport_ImportModule("pickle");
  if (!pickle)
    return -1;
  g_pickle_loads = PyObject_GetAttrString(pickle, "loads");
  g_pickler_cls = PyObject_GetAttrString(pickle, "Pickler");
  Py_DECREF(pickle);
  if (!g_pickle_loads || !g_pickler_cls)
    return -1;
  g_pin_types = PyDict_New();
  g_pin_reduce = PyCFunction_New(&pin_reduce_def, NULL);
  s_reduce_ex = PyUnicode_InternFromString("__reduce_ex__");
  g_five = PyLong_FromLong(5);
  if (!g_pin_types || !g_pin_reduce || !s_reduce_ex || !g_five)
    return -1;
  s_seek = PyUnicode_InternFromString("seek");
  s_truncate = PyUnicode_InternFromString("truncate");
  s_clear_memo = PyUnicode_InternFromString("clear_memo");
  s_dump = PyUnicode_InternFromString("dump");
  s_getvalue = PyUnicode_InternFromString("getvalue");
  g_zero = PyLong_FromLong(0);
  if (!s_seek || !s_truncate || !s_clear_memo || !s_dump || !s_getvalue ||
      !g_zero)
    return -1;
  PyObject *io = PyImport_ImportModule("io");
  g_bytesio_cls = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
  Py_XDECREF(io);
  PyObject *copyreg = g_bytesio_cls ? PyImport_ImportModule("copyreg") : NULL;
  g_copyreg_table =
      copyreg ? PyObject_GetAttrString(copyreg, "dispatch_table") : NULL;
  Py_XDECREF(copyreg);
  if (!g_copyreg_table || !PyDict_Check(g_copyreg_table))
    return -1;
  /* multiprocessing.connection registers the Connection reducer. */
  PyObject *conn = PyImport_ImportModule("multiprocessing.connection");
  PyObject *red = conn ? PyImport_ImportModule("multiprocessing.reduction") : NULL;
  PyObject *fp = red ? PyObject_GetAttrString(red, "ForkingPickler") : NULL;
  g_mp_reducers = fp ? PyObject_GetAttrString(fp, "_extra_reducers") : NULL;
  Py_XDECREF(conn);
  Py_XDECREF(red);
  Py_XDECREF(fp);
  if (!g_mp_reducers || !PyDict_Check(g_mp_reducers)) {
    PyErr_Clear(); /* copyreg's reducers only */
    Py_CLEAR(g_mp_reducers);
  }
  return PyModule_AddFunctions(m, codec_methods);
}
