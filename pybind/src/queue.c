/* SPDX-License-Identifier: MIT */
/*
 * This file contains the C base type of posh's queues, posh._posh.QueueBase
 * (Queue, SimpleQueue and JoinableQueue of posh/queues.py subclass it), over
 * libposh's Queue object (include/posh/queue.h), and the message helpers
 * shared with the Pipe's Connection (pipe.c): a fast encoder/decoder of
 * small native values working on a stack buffer, with the codec
 * (posh.dumps / posh.loads of codec.c) as the fallback for everything else.
 *
 * The fast path of put/get is one C call: encode on the stack, one
 * non-blocking posh_queue_put (the GIL held: no system call when there is
 * room); get is one non-blocking posh_queue_get_msg and a decode.  Only a
 * call that would block releases the GIL and waits in slices of 200 ms
 * (libposh spins, then sleeps on a futex), checking for signals between
 * slices so Ctrl-C works.
 *
 * The fast format is a subset of the codec's (see codec.c): 'N' 'T' 'F',
 * 'i' zigzag varint, 'f' 8 bytes, 's' utf8, 'b' bytes, 't' 'l' 'd'
 * containers.  A message the fast decoder does not understand (out-of-band
 * 'X' header, pickles, big ints, ...) goes to the codec's loads whole.
 */
#include "pyposh.h"

#include <limits.h>
#include <string.h>
#include <time.h>

#include "posh/queue.h"

#define SLICE_NS 200000000LL /* 200 ms between signal checks */
#define FAST_DEPTH 16        /* deeper natives go to the codec */
#define STACK_MSG 1024       /* stack encode buffer */
#define Q_DEFAULT_SLOTS (1u << 16) /* "unbounded" queue: ring slots */

/* Codec entry points (module attributes set by pyposh_codec_init). */
static PyObject *g_dumps, *g_loads, *g_discard;
static PyObject *g_kw_copy, *g_kw_nocopy; /* loads keyword dicts */
static PyObject *g_Empty, *g_Full;       /* queue.Empty, queue.Full */

/* ------------------------------------------------------------------------
 * Fast native encoder / decoder (subset of the codec's format).
 * ---------------------------------------------------------------------- */
typedef struct {
  unsigned char *p, *end;
} fenc_t;

static int fe_varint(fenc_t *e, uint64_t v) {
  if (e->end - e->p < 10)
    return -1;
  while (v >= 0x80) {
    *e->p++ = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  *e->p++ = (unsigned char)v;
  return 0;
}

static int fe_span(fenc_t *e, unsigned char tag, const void *s, size_t n) {
  if (e->p >= e->end)
    return -1;
  *e->p++ = tag;
  if (fe_varint(e, n) < 0 || (size_t)(e->end - e->p) < n)
    return -1;
  memcpy(e->p, s, n);
  e->p += n;
  return 0;
}

/* 0, or -1: not fast-encodable (no exception set). */
static int fe_value(fenc_t *e, PyObject *o, int depth) {
  if (e->p >= e->end)
    return -1;
  if (o == Py_None) {
    *e->p++ = 'N';
    return 0;
  }
  if (o == Py_True) {
    *e->p++ = 'T';
    return 0;
  }
  if (o == Py_False) {
    *e->p++ = 'F';
    return 0;
  }
  PyTypeObject *t = Py_TYPE(o);
  if (t == &PyLong_Type) {
    int ovf = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &ovf);
    if (ovf || (v == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return -1;
    }
    *e->p++ = 'i';
    return fe_varint(e, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
  }
  if (t == &PyFloat_Type) {
    double d = PyFloat_AS_DOUBLE(o);
    if (e->end - e->p < 9)
      return -1;
    *e->p++ = 'f';
    memcpy(e->p, &d, 8);
    e->p += 8;
    return 0;
  }
  if (t == &PyUnicode_Type) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s) {
      PyErr_Clear(); /* lone surrogates: the codec's 'S' */
      return -1;
    }
    return fe_span(e, 's', s, (size_t)n);
  }
  if (t == &PyBytes_Type)
    return fe_span(e, 'b', PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
  if (depth >= FAST_DEPTH)
    return -1;
  if (t == &PyTuple_Type || t == &PyList_Type) {
    Py_ssize_t n = Py_SIZE(o);
    *e->p++ = t == &PyTuple_Type ? 't' : 'l';
    if (fe_varint(e, (uint64_t)n) < 0)
      return -1;
    /* no Python code runs here (natives only), so a list cannot change */
    for (Py_ssize_t i = 0; i < n; i++)
      if (fe_value(e,
                   t == &PyTuple_Type ? PyTuple_GET_ITEM(o, i)
                                      : PyList_GET_ITEM(o, i),
                   depth + 1) < 0)
        return -1;
    return 0;
  }
  if (t == &PyDict_Type) {
    *e->p++ = 'd';
    if (fe_varint(e, (uint64_t)PyDict_GET_SIZE(o)) < 0)
      return -1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &pos, &k, &v))
      if (fe_value(e, k, depth + 1) < 0 || fe_value(e, v, depth + 1) < 0)
        return -1;
    return 0;
  }
  return -1;
}

typedef struct {
  const unsigned char *p, *end;
} fdec_t;

static int fd_varint(fdec_t *d, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && d->p < d->end; shift += 7) {
    unsigned char c = *d->p++;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/* NULL without an exception: not for the fast path (or malformed: the
 * codec will say so). */
static PyObject *fd_value(fdec_t *d, int depth) {
  if (d->p >= d->end)
    return NULL;
  unsigned char tag = *d->p++;
  uint64_t v;
  switch (tag) {
  case 'N':
    Py_RETURN_NONE;
  case 'T':
    Py_RETURN_TRUE;
  case 'F':
    Py_RETURN_FALSE;
  case 'i':
    if (fd_varint(d, &v) < 0)
      return NULL;
    return PyLong_FromLongLong((long long)(v >> 1) ^ -(long long)(v & 1));
  case 'f': {
    double x;
    if (d->end - d->p < 8)
      return NULL;
    memcpy(&x, d->p, 8);
    d->p += 8;
    return PyFloat_FromDouble(x);
  }
  case 's':
  case 'b': {
    if (fd_varint(d, &v) < 0 || v > (uint64_t)(d->end - d->p))
      return NULL;
    const char *s = (const char *)d->p;
    d->p += v;
    PyObject *r = tag == 's' ? PyUnicode_DecodeUTF8(s, (Py_ssize_t)v, NULL)
                             : PyBytes_FromStringAndSize(s, (Py_ssize_t)v);
    if (!r)
      PyErr_Clear();
    return r;
  }
  case 't':
  case 'l':
  case 'd': {
    if (depth >= FAST_DEPTH || fd_varint(d, &v) < 0 ||
        v > (uint64_t)(d->end - d->p))
      return NULL;
    Py_ssize_t n = (Py_ssize_t)v;
    PyObject *c = tag == 't'   ? PyTuple_New(n)
                  : tag == 'l' ? PyList_New(n)
                               : PyDict_New();
    if (!c) {
      PyErr_Clear();
      return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *x = fd_value(d, depth + 1);
      if (!x)
        goto fail;
      if (tag == 't') {
        PyTuple_SET_ITEM(c, i, x);
      } else if (tag == 'l') {
        PyList_SET_ITEM(c, i, x);
      } else {
        PyObject *y = fd_value(d, depth + 1);
        int r = y ? PyDict_SetItem(c, x, y) : -1;
        Py_DECREF(x);
        Py_XDECREF(y);
        if (r < 0)
          goto fail;
      }
    }
    return c;
  fail:
    PyErr_Clear();
    Py_DECREF(c);
    return NULL;
  }
  default:
    return NULL;
  }
}

int pyposh_msg_encode(PyObject *obj, unsigned char *stack, size_t cap,
                      const void **data, size_t *len, PyObject **owned) {
  fenc_t e = {stack, stack + cap};
  *owned = NULL;
  if (fe_value(&e, obj, 0) == 0) {
    *data = stack;
    *len = (size_t)(e.p - stack);
    return 0;
  }
  PyObject *b = PyObject_CallOneArg(g_dumps, obj);
  if (!b)
    return -1;
  if (!PyBytes_Check(b)) {
    Py_DECREF(b);
    PyErr_SetString(PyExc_TypeError, "posh: dumps did not return bytes");
    return -1;
  }
  *owned = b;
  *data = PyBytes_AS_STRING(b);
  *len = (size_t)PyBytes_GET_SIZE(b);
  return 0;
}

void pyposh_msg_discard(PyObject *owned) {
  if (!owned)
    return;
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  PyObject *r = PyObject_CallOneArg(g_discard, owned);
  Py_XDECREF(r);
  PyErr_Clear();
  PyErr_Restore(t, v, tb);
  Py_DECREF(owned);
}

PyObject *pyposh_msg_decode(const void *p, size_t n, int copy) {
  fdec_t d = {p, (const unsigned char *)p + n};
  if (n && *(const unsigned char *)p != 'X') {
    PyObject *o = fd_value(&d, 0);
    if (o && d.p == d.end)
      return o;
    Py_XDECREF(o);
    if (PyErr_Occurred())
      return NULL;
  }
  /* the codec: takes over the heap blocks the message references */
  PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n,
                                         PyBUF_READ);
  if (!mv)
    return NULL;
  PyObject *args = PyTuple_Pack(1, mv);
  Py_DECREF(mv);
  if (!args)
    return NULL;
  PyObject *o = PyObject_Call(g_loads, args, copy ? g_kw_copy : g_kw_nocopy);
  Py_DECREF(args);
  return o;
}

/* ------------------------------------------------------------------------
 * Waiting: try without releasing the GIL, then in slices with it released.
 * ---------------------------------------------------------------------- */
#define PYQ_SIGNAL INT_MIN /* a signal handler raised */

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int pyposh_wait(pyposh_op_fn fn, void *ctx, int64_t ns) {
  int r = fn(ctx, 0);
  if (r != POSH_EAGAIN || ns == 0)
    return r;
  int64_t deadline = ns > 0 ? now_ns() + ns : 0;
  for (;;) {
    int64_t slice = SLICE_NS;
    if (ns > 0) {
      int64_t left = deadline - now_ns();
      if (left <= 0)
        return POSH_ETIMEDOUT;
      if (left < slice)
        slice = left;
    }
    PYPOSH_BEGIN_HEAP_NOGIL;
    r = fn(ctx, slice);
    PYPOSH_END_HEAP_NOGIL;
    if (r != POSH_ETIMEDOUT && r != POSH_EAGAIN)
      return r;
    if (PyErr_CheckSignals() < 0)
      return PYQ_SIGNAL;
  }
}

/* ------------------------------------------------------------------------
 * QueueBase.
 * ---------------------------------------------------------------------- */
enum { KIND_QUEUE = 0, KIND_SIMPLE = 1, KIND_JOINABLE = 2 };

typedef struct {
  PyObject_HEAD
  posh_obj_t *q;
  int kind;
  int closed;        /* close() called on this object (process-local) */
  Py_ssize_t maxsize;
} QueueBase;

static int qb_check(QueueBase *self) {
  if (!self->q) {
    PyErr_SetString(PyExc_RuntimeError, "posh: queue not initialised");
    return -1;
  }
  if (pyposh_heap_check() < 0)
    return -1;
  return 0;
}

/* check + multiprocessing's "use after close()" error */
static int qb_check_open(QueueBase *self) {
  if (qb_check(self) < 0)
    return -1;
  if (self->closed) {
    if (self->kind == KIND_SIMPLE)
      PyErr_SetString(PyExc_OSError, "handle is closed");
    else
      PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)self);
    return -1;
  }
  return 0;
}

/* _create(maxsize, kind) */
static PyObject *qb_create(QueueBase *self, PyObject *args) {
  Py_ssize_t maxsize;
  int kind;
  if (!PyArg_ParseTuple(args, "ni", &maxsize, &kind))
    return NULL;
  if (self->q) {
    PyErr_SetString(PyExc_RuntimeError, "posh: queue already initialised");
    return NULL;
  }
  if (kind < KIND_QUEUE || kind > KIND_JOINABLE) {
    PyErr_SetString(PyExc_ValueError, "bad queue kind");
    return NULL;
  }
  posh_queue_options_t o = {0, 0, 0, 0, 0, 0};
  if (maxsize <= 0) {
    maxsize = 0;
    o.capacity = Q_DEFAULT_SLOTS;
  } else {
    if ((uint64_t)maxsize > POSH_QUEUE_MAX_CAPACITY)
      maxsize = POSH_QUEUE_MAX_CAPACITY;
    uint32_t c = 2;
    while (c < (uint64_t)maxsize)
      c <<= 1;
    o.capacity = c;
    o.max_messages = (uint64_t)maxsize;
  }
  if (kind == KIND_JOINABLE)
    o.flags = POSH_QUEUE_JOINABLE;
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  int r = posh_queue_create(h, NULL, &o, &self->q);
  if (r < 0)
    return pyposh_error(r);
  self->kind = kind;
  self->maxsize = maxsize;
  if (pyposh_wrappers(self->q, 1) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* _open(off, id, kind, maxsize): after unpickling (heap attached) */
static PyObject *qb_open(QueueBase *self, PyObject *args) {
  unsigned long long off, id;
  int kind;
  Py_ssize_t maxsize;
  if (!PyArg_ParseTuple(args, "KKin", &off, &id, &kind, &maxsize))
    return NULL;
  if (self->q) {
    PyErr_SetString(PyExc_RuntimeError, "posh: queue already initialised");
    return NULL;
  }
  if (pyposh_obj_open(off, id, POSH_OBJ_QUEUE, &self->q) < 0)
    return NULL;
  self->kind = kind;
  self->maxsize = maxsize;
  if (pyposh_wrappers(self->q, 1) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* _ref() -> (off, id, kind, maxsize) */
static PyObject *qb_ref(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  unsigned long long off, id;
  if (pyposh_obj_ref(self->q, &off, &id) < 0)
    return NULL;
  return Py_BuildValue("(KKin)", off, id, self->kind, self->maxsize);
}

/* _bind(name) / _touch(): see posh/queues.py (fork and pickling) */
static PyObject *qb_bind(QueueBase *self, PyObject *arg) {
  if (qb_check(self) < 0)
    return NULL;
  const char *name = PyUnicode_AsUTF8(arg);
  if (!name)
    return NULL;
  int r = posh_obj_bind(self->q, name);
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

static PyObject *qb_touch(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  int r = posh_queue_closed(self->q);
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

static PyTypeObject QueueBase_Type;

posh_obj_t *pyposh_queue_handle(PyObject *o) {
  return PyObject_TypeCheck(o, &QueueBase_Type) ? ((QueueBase *)o)->q : NULL;
}

void pyposh_queue_discard_all(posh_obj_t *q) {
  posh_queue_msg_t m;
  while (posh_queue_get_msg(q, &m, 0) == 0) {
    if (PYPOSH_HAS_OOB(m.data, m.len) && pyposh_discard(m.data, m.len) < 0)
      PyErr_Clear();
    posh_queue_msg_release(q, &m);
  }
}

/* The last wrapper of the last process discards the messages left (their
 * heap blocks and pins) before the close frees the queue. */
static void qb_dealloc(QueueBase *self) {
  if (self->q && pyposh_heap_if_any())
    pyposh_wrapper_close(self->q);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* put */
typedef struct {
  posh_obj_t *q;
  const void *data;
  size_t len;
} put_ctx_t;

static int put_op(void *c, int64_t t) {
  put_ctx_t *p = c;
  return posh_queue_put(p->q, p->data, p->len, t);
}

/* common end of a put: 1 put, 0 full/timed out (no exception), -1 raised */
static int put_result(QueueBase *self, int r) {
  if (r == 0)
    return 1;
  if (r == POSH_EAGAIN || r == POSH_ETIMEDOUT)
    return 0;
  if (r == PYQ_SIGNAL)
    return -1;
  if (r == POSH_ECLOSED)
    PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)self);
  else
    pyposh_error(r);
  return -1;
}

static int64_t block_timeout(int block, PyObject *tmo) {
  if (!block)
    return 0;
  return pyposh_timeout(tmo);
}

/* put(obj, block=True, timeout=None) */
static PyObject *qb_put(QueueBase *self, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *kwnames) {
  static const char *const names[] = {"obj", "block", "timeout"};
  PyObject *v[3] = {NULL, Py_True, Py_None};
  Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  if (nargs > 3 || nargs + nk < 1) {
    PyErr_SetString(PyExc_TypeError, "put(obj, block=True, timeout=None)");
    return NULL;
  }
  for (Py_ssize_t i = 0; i < nargs; i++)
    v[i] = args[i];
  for (Py_ssize_t i = 0; i < nk; i++) {
    const char *k = PyUnicode_AsUTF8(PyTuple_GET_ITEM(kwnames, i));
    int j = 0;
    while (j < 3 && (!k || strcmp(k, names[j])))
      j++;
    if (j == 3) {
      PyErr_Format(PyExc_TypeError, "put() got an unexpected keyword %R",
                   PyTuple_GET_ITEM(kwnames, i));
      return NULL;
    }
    v[j] = args[nargs + i];
  }
  if (!v[0]) {
    PyErr_SetString(PyExc_TypeError, "put() missing obj");
    return NULL;
  }
  if (qb_check_open(self) < 0)
    return NULL;
  int block = v[1] == Py_True ? 1 : PyObject_IsTrue(v[1]);
  if (block < 0)
    return NULL;
  int64_t ns = block_timeout(block, v[2]);
  if (ns == -2)
    return NULL;
  unsigned char stack[STACK_MSG];
  put_ctx_t c = {self->q, NULL, 0};
  PyObject *owned;
  if (pyposh_msg_encode(v[0], stack, sizeof stack, &c.data, &c.len, &owned) <
      0)
    return NULL;
  int r = put_result(self, pyposh_wait(put_op, &c, ns));
  if (r == 1) {
    Py_XDECREF(owned);
    Py_RETURN_NONE;
  }
  pyposh_msg_discard(owned); /* not delivered: free its heap blocks */
  if (r == 0)
    PyErr_SetNone(g_Full);
  return NULL;
}

static PyObject *qb_put_nowait(QueueBase *self, PyObject *obj) {
  PyObject *args[2] = {obj, Py_False};
  return qb_put(self, args, 2, NULL);
}

/* get */
typedef struct {
  posh_obj_t *q;
  posh_queue_msg_t *m;
} get_ctx_t;

static int get_op(void *c, int64_t t) {
  get_ctx_t *g = c;
  return posh_queue_get_msg(g->q, g->m, t);
}

/* 1 got (*m filled), 0 empty/timed out, -1 raised */
static int get_msg(QueueBase *self, posh_queue_msg_t *m, int64_t ns) {
  get_ctx_t c = {self->q, m};
  int r = pyposh_wait(get_op, &c, ns);
  if (r == 0)
    return 1;
  if (r == POSH_EAGAIN || r == POSH_ETIMEDOUT)
    return 0;
  if (r == PYQ_SIGNAL)
    return -1;
  if (r == POSH_ECLOSED)
    PyErr_Format(PyExc_EOFError, "Queue %R was shut down and is empty",
                 (PyObject *)self);
  else
    pyposh_error(r);
  return -1;
}

/* get(block=True, timeout=None, copy=False) */
static PyObject *qb_get(QueueBase *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"block", "timeout", "copy", NULL};
  int block = 1, copy = 0;
  PyObject *tmo = Py_None;
  if ((args && PyTuple_GET_SIZE(args)) || kw) {
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|pOp", kwlist, &block, &tmo,
                                     &copy))
      return NULL;
  }
  if (qb_check_open(self) < 0)
    return NULL;
  int64_t ns = block_timeout(block, tmo);
  if (ns == -2)
    return NULL;
  posh_queue_msg_t m;
  int r = get_msg(self, &m, ns);
  if (r <= 0) {
    if (r == 0)
      PyErr_SetNone(g_Empty);
    return NULL;
  }
  PyObject *o = pyposh_msg_decode(m.data, m.len, copy);
  posh_queue_msg_release(self->q, &m);
  return o;
}

static PyObject *qb_get_nowait(QueueBase *self, PyObject *unused) {
  if (qb_check_open(self) < 0)
    return NULL;
  posh_queue_msg_t m;
  int r = get_msg(self, &m, 0);
  if (r <= 0) {
    if (r == 0)
      PyErr_SetNone(g_Empty);
    return NULL;
  }
  PyObject *o = pyposh_msg_decode(m.data, m.len, 0);
  posh_queue_msg_release(self->q, &m);
  return o;
}

/* Byte-level methods (posh.Pool): no codec, no Python layers. */
static PyObject *put_bytes_common(QueueBase *self, PyObject *b, int64_t ns,
                                  int want_bool) {
  if (qb_check_open(self) < 0)
    return NULL;
  Py_buffer view;
  if (PyObject_GetBuffer(b, &view, PyBUF_SIMPLE) < 0)
    return NULL;
  put_ctx_t c = {self->q, view.buf, (size_t)view.len};
  int r = put_result(self, pyposh_wait(put_op, &c, ns));
  PyBuffer_Release(&view);
  if (r < 0)
    return NULL;
  if (want_bool)
    return PyBool_FromLong(r);
  if (r == 0) { /* cannot happen with ns < 0 */
    PyErr_SetNone(g_Full);
    return NULL;
  }
  Py_RETURN_NONE;
}

static PyObject *qb_put_bytes(QueueBase *self, PyObject *b) {
  return put_bytes_common(self, b, POSH_FOREVER, 0);
}

static PyObject *qb_try_put_bytes(QueueBase *self, PyObject *b) {
  return put_bytes_common(self, b, 0, 1);
}

static PyObject *qb_put_bytes_timeout(QueueBase *self, PyObject *args) {
  PyObject *b, *t;
  if (!PyArg_ParseTuple(args, "OO", &b, &t))
    return NULL;
  int64_t ns = pyposh_timeout(t);
  if (ns == -2)
    return NULL;
  return put_bytes_common(self, b, ns, 1);
}

static PyObject *get_bytes_common(QueueBase *self, int64_t ns) {
  if (qb_check_open(self) < 0)
    return NULL;
  posh_queue_msg_t m;
  int r = get_msg(self, &m, ns);
  if (r < 0)
    return NULL;
  if (r == 0)
    Py_RETURN_NONE;
  PyObject *o = PyBytes_FromStringAndSize(m.data, (Py_ssize_t)m.len);
  posh_queue_msg_release(self->q, &m);
  return o;
}

static PyObject *qb_get_bytes(QueueBase *self, PyObject *unused) {
  return get_bytes_common(self, POSH_FOREVER);
}

static PyObject *qb_get_bytes_timeout(QueueBase *self, PyObject *t) {
  int64_t ns = pyposh_timeout(t);
  if (ns == -2)
    return NULL;
  return get_bytes_common(self, ns);
}

static PyObject *qb_get_many_bytes(QueueBase *self, PyObject *arg) {
  Py_ssize_t max = PyLong_AsSsize_t(arg);
  if (max == -1 && PyErr_Occurred())
    return NULL;
  if (max < 1) {
    PyErr_SetString(PyExc_ValueError, "get_many_bytes: max must be >= 1");
    return NULL;
  }
  PyObject *first = get_bytes_common(self, POSH_FOREVER);
  if (!first)
    return NULL;
  PyObject *list = PyList_New(1);
  if (!list) {
    Py_DECREF(first);
    return NULL;
  }
  PyList_SET_ITEM(list, 0, first);
  while (PyList_GET_SIZE(list) < max) {
    posh_queue_msg_t m;
    int r = posh_queue_get_msg(self->q, &m, 0);
    if (r < 0)
      break; /* empty, or closed: what we have */
    PyObject *o = PyBytes_FromStringAndSize(m.data, (Py_ssize_t)m.len);
    posh_queue_msg_release(self->q, &m);
    if (!o || PyList_Append(list, o) < 0) {
      Py_XDECREF(o);
      Py_DECREF(list);
      return NULL;
    }
    Py_DECREF(o);
  }
  return list;
}

static PyObject *qb_qsize(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  uint64_t n;
  int r = posh_queue_qsize(self->q, &n);
  return r < 0 ? pyposh_error(r) : PyLong_FromUnsignedLongLong(n);
}

static PyObject *qb_empty(QueueBase *self, PyObject *unused) {
  if (self->kind == KIND_SIMPLE ? qb_check_open(self) < 0 : qb_check(self) < 0)
    return NULL;
  int r = posh_queue_empty(self->q);
  return r < 0 ? pyposh_error(r) : PyBool_FromLong(r);
}

static PyObject *qb_full(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  int r = posh_queue_full(self->q);
  return r < 0 ? pyposh_error(r) : PyBool_FromLong(r);
}

/* close(): this object only, as multiprocessing (no more put/get through
 * it); the shared queue stays open for the other holders. */
static PyObject *qb_close(QueueBase *self, PyObject *unused) {
  self->closed = 1;
  Py_RETURN_NONE;
}

/* shutdown(): close the shared queue for every process: puts raise
 * ValueError, gets drain it then raise EOFError, blocked callers wake. */
static PyObject *qb_shutdown(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  int r = posh_queue_close(self->q);
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

static PyObject *qb_is_shutdown(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  int r = posh_queue_closed(self->q);
  return r < 0 ? pyposh_error(r) : PyBool_FromLong(r);
}

static PyObject *qb_join_thread(QueueBase *self, PyObject *unused) {
  if (!self->closed) {
    PyErr_Format(PyExc_AssertionError, "Queue %R not closed",
                 (PyObject *)self);
    return NULL;
  }
  Py_RETURN_NONE; /* no feeder thread: every put is done when it returns */
}

static PyObject *qb_cancel_join_thread(QueueBase *self, PyObject *unused) {
  Py_RETURN_NONE;
}

/* JoinableQueue */
static PyObject *qb_task_done(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  int r = posh_queue_task_done(self->q);
  if (r == POSH_ERANGE) {
    PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
    return NULL;
  }
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

typedef struct {
  posh_obj_t *q;
} join_ctx_t;

static int join_op(void *c, int64_t t) {
  return posh_queue_join(((join_ctx_t *)c)->q, t);
}

/* join(timeout=None) -> True, or False when the timeout passed */
static PyObject *qb_join(QueueBase *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"timeout", NULL};
  PyObject *tmo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &tmo))
    return NULL;
  if (qb_check(self) < 0)
    return NULL;
  int64_t ns = pyposh_timeout(tmo);
  if (ns == -2)
    return NULL;
  join_ctx_t c = {self->q};
  int r = pyposh_wait(join_op, &c, ns);
  if (r == 0)
    Py_RETURN_TRUE;
  if (r == POSH_EAGAIN || r == POSH_ETIMEDOUT)
    Py_RETURN_FALSE;
  if (r == PYQ_SIGNAL)
    return NULL;
  return pyposh_error(r);
}

static PyObject *qb_unfinished(QueueBase *self, PyObject *unused) {
  if (qb_check(self) < 0)
    return NULL;
  uint64_t n;
  int r = posh_queue_unfinished(self->q, &n);
  return r < 0 ? pyposh_error(r) : PyLong_FromUnsignedLongLong(n);
}

static PyObject *qb_get_closed(QueueBase *self, void *c) {
  return PyBool_FromLong(self->closed);
}

static PyObject *qb_get_maxsize(QueueBase *self, void *c) {
  return PyLong_FromSsize_t(self->maxsize);
}

static PyMethodDef qb_methods[] = {
    PYPOSH_INIT_SUBCLASS_METHOD,
    {"_create", (PyCFunction)qb_create, METH_VARARGS, NULL},
    {"_open", (PyCFunction)qb_open, METH_VARARGS, NULL},
    {"_ref", (PyCFunction)qb_ref, METH_NOARGS, NULL},
    {"_bind", (PyCFunction)qb_bind, METH_O, NULL},
    {"_touch", (PyCFunction)qb_touch, METH_NOARGS, NULL},
    {"put", (PyCFunction)(void (*)(void))qb_put,
     METH_FASTCALL | METH_KEYWORDS,
     "put(obj, block=True, timeout=None): queue.Full when full"},
    {"put_nowait", (PyCFunction)qb_put_nowait, METH_O, NULL},
    {"get", (PyCFunction)(void (*)(void))qb_get,
     METH_VARARGS | METH_KEYWORDS,
     "get(block=True, timeout=None, copy=False): queue.Empty when empty; "
     "copy=True gives private memory for out-of-band buffers"},
    {"get_nowait", (PyCFunction)qb_get_nowait, METH_NOARGS, NULL},
    {"put_bytes", (PyCFunction)qb_put_bytes, METH_O,
     "put_bytes(b): put raw bytes (blocking)"},
    {"try_put_bytes", (PyCFunction)qb_try_put_bytes, METH_O,
     "try_put_bytes(b) -> bool (non-blocking)"},
    {"put_bytes_timeout", (PyCFunction)qb_put_bytes_timeout, METH_VARARGS,
     "put_bytes_timeout(b, seconds) -> bool"},
    {"get_bytes", (PyCFunction)qb_get_bytes, METH_NOARGS,
     "get_bytes() -> bytes (blocking)"},
    {"get_bytes_timeout", (PyCFunction)qb_get_bytes_timeout, METH_O,
     "get_bytes_timeout(seconds) -> bytes or None"},
    {"get_many_bytes", (PyCFunction)qb_get_many_bytes, METH_O,
     "get_many_bytes(max) -> list of bytes: waits for the first"},
    {"qsize", (PyCFunction)qb_qsize, METH_NOARGS, NULL},
    {"empty", (PyCFunction)qb_empty, METH_NOARGS, NULL},
    {"full", (PyCFunction)qb_full, METH_NOARGS, NULL},
    {"close", (PyCFunction)qb_close, METH_NOARGS, NULL},
    {"shutdown", (PyCFunction)qb_shutdown, METH_NOARGS, NULL},
    {"is_shutdown", (PyCFunction)qb_is_shutdown, METH_NOARGS, NULL},
    {"join_thread", (PyCFunction)qb_join_thread, METH_NOARGS, NULL},
    {"cancel_join_thread", (PyCFunction)qb_cancel_join_thread, METH_NOARGS,
     NULL},
    {"_task_done", (PyCFunction)qb_task_done, METH_NOARGS, NULL},
    {"_join", (PyCFunction)(void (*)(void))qb_join,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_unfinished", (PyCFunction)qb_unfinished, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef qb_getset[] = {
    {"_closed", (getter)qb_get_closed, NULL, NULL, NULL},
    {"_maxsize", (getter)qb_get_maxsize, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject QueueBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh._posh.QueueBase",
    .tp_basicsize = sizeof(QueueBase),
    .tp_dealloc = (destructor)qb_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = qb_methods,
    .tp_getset = qb_getset,
    .tp_doc = "C base of posh's Queue, SimpleQueue and JoinableQueue",
};

int pyposh_queue_init(PyObject *m) {
  g_dumps = PyObject_GetAttrString(m, "dumps");
  g_loads = PyObject_GetAttrString(m, "loads");
  g_discard = PyObject_GetAttrString(m, "discard");
  if (!g_dumps || !g_loads || !g_discard)
    return -1;
  /* A codec whose loads takes consume= (reference-counted out-of-band
   * blocks) must be told that the message's references are ours to hand
   * over. */
  PyObject *doc = PyObject_GetAttrString(g_loads, "__doc__");
  PyObject *word = PyUnicode_FromString("consume");
  int consume = doc && word && PyUnicode_Check(doc) &&
                PyUnicode_Find(doc, word, 0, PY_SSIZE_T_MAX, 1) >= 0;
  Py_XDECREF(word);
  Py_XDECREF(doc);
  PyErr_Clear();
  g_kw_copy = consume ? Py_BuildValue("{sOsO}", "copy", Py_True, "consume",
                                      Py_True)
                      : Py_BuildValue("{sO}", "copy", Py_True);
  g_kw_nocopy = consume ? Py_BuildValue("{sOsO}", "copy", Py_False,
                                        "consume", Py_True)
                        : Py_BuildValue("{sO}", "copy", Py_False);
  if (!g_kw_copy || !g_kw_nocopy)
    return -1;
  PyObject *qmod = PyImport_ImportModule("queue");
  if (!qmod)
    return -1;
  g_Empty = PyObject_GetAttrString(qmod, "Empty");
  g_Full = PyObject_GetAttrString(qmod, "Full");
  Py_DECREF(qmod);
  if (!g_Empty || !g_Full)
    return -1;
  if (PyType_Ready(&QueueBase_Type) < 0)
    return -1;
  if (pyposh_register_pinned((PyObject *)&QueueBase_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "QueueBase", (PyObject *)&QueueBase_Type) < 0)
    return -1;
  if (PyModule_AddIntConstant(m, "QUEUE_DEFAULT_SLOTS", Q_DEFAULT_SLOTS) < 0)
    return -1;
  return pyposh_pipe_init(m); /* the Pipe shares the message helpers */
}
