/* SPDX-License-Identifier: MIT */
/*
 * This file contains the declarations shared by the C sources of the Python
 * extension posh._posh: the process-wide default heap, error conversion,
 * timeouts, and the init functions of the codec and sync parts.
 */
#ifndef PYPOSH_H
#define PYPOSH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "posh.h"

/* The process's default heap, created on first use (pyposh_heap() creates
 * or returns it; NULL with a Python exception set on failure).  Every access
 * holds the GIL. */
posh_heap_t *pyposh_heap(void);
/* The heap if it exists, without creating it (NULL, no exception). */
posh_heap_t *pyposh_heap_if_any(void);
/* 0 while the heap is attached, else -1 with RuntimeError set (an object
 * used after exit processing detached the heap).  Creates nothing. */
int pyposh_heap_check(void);

/* Threads inside a heap call with the GIL released: exit processing must
 * not unmap the heap under them (a daemon thread blocked in a get wakes up
 * every slice).  Protected by the GIL: changed only by threads holding it.
 * Use the pair around every GIL-released call that touches the heap. */
extern int pyposh_nogil_users;
#define PYPOSH_BEGIN_HEAP_NOGIL                                               \
  pyposh_nogil_users++;                                                        \
  Py_BEGIN_ALLOW_THREADS
#define PYPOSH_END_HEAP_NOGIL                                                 \
  Py_END_ALLOW_THREADS;                                                        \
  pyposh_nogil_users--

/* Open the object (off, id) of the given type in the process's heap (the
 * _open of an unpickled handle): 0 with *obj_out, or -1 with an exception
 * set. */
int pyposh_obj_open(unsigned long long off, unsigned long long id,
                    uint32_t type, posh_obj_t **obj_out);
/* The (off, id) of obj's reference (what _ref pickles): 0, or -1 with an
 * exception set. */
int pyposh_obj_ref(posh_obj_t *obj, unsigned long long *off,
                   unsigned long long *id);

/* Raise the Python exception of a POSH_E* code and return NULL. */
PyObject *pyposh_error(int err);
extern PyObject *pyposh_Error; /* posh.PoshError (an OSError) */

/* Python timeout (None, or seconds as int/float) -> ns (POSH_FOREVER for
 * None; negatives become 0).  -2 with an exception set on bad input. */
int64_t pyposh_timeout(PyObject *timeout);

/* Codec (codec.c), for the containers.  An encoding: p/len, in small when
 * it fits (no allocation), else in alloc (PyMem; pyposh_buf_free). */
typedef struct pyposh_buf {
  unsigned char *p;
  size_t len;
  unsigned char *alloc;
  unsigned char small[256];
} pyposh_buf_t;
/* key: canonical dict-key encoding (1, 1.0, True encode equally; no heap
 * blocks; TypeError for unhashable keys).  0 or -1 with an exception. */
int pyposh_encode(PyObject *obj, int key, pyposh_buf_t *out);
void pyposh_buf_free(pyposh_buf_t *b);
/* consume=0: the result takes its own references of the heap blocks; if
 * one was released meanwhile, NULL with *stale = 1 and no exception. */
PyObject *pyposh_decode(const void *data, size_t n, int copy, int consume,
                        int *stale);
/* Drop a message's references (discard) / a container's stored reference
 * (release, at most once per block) of an encoding's heap blocks.  The
 * number of blocks, or -1 with an exception. */
Py_ssize_t pyposh_discard(const void *data, size_t len);
Py_ssize_t pyposh_release(const void *data, size_t len);
/* The encoding references heap blocks (must be released when dropped). */
#define PYPOSH_HAS_OOB(p, n) ((n) > 0 && ((const unsigned char *)(p))[0] == 'X')

/* The libposh handle of a posh shared object (Queue & co., Connection,
 * Lock & co., Value/Array, dict/list; the C bases and their subclasses),
 * or NULL (no exception) if o is none or not initialised.  What the codec
 * pins when it encodes a reference to the object.  One per C base type;
 * pyposh_handle_of tries them all. */
posh_obj_t *pyposh_queue_handle(PyObject *o);
posh_obj_t *pyposh_conn_handle(PyObject *o);
posh_obj_t *pyposh_sync_handle(PyObject *o);
posh_obj_t *pyposh_objbase_handle(PyObject *o);
posh_obj_t *pyposh_cont_handle(PyObject *o);
posh_obj_t *pyposh_handle_of(PyObject *o);
/* The codec pins the objects of the types registered here when it pickles
 * them (codec.c).  Each C base registers itself at init and has
 * PYPOSH_INIT_SUBCLASS_METHOD (pyposh_init_subclass) as __init_subclass__,
 * which registers every subclass. */
int pyposh_register_pinned(PyObject *cls);
PyObject *pyposh_init_subclass(PyObject *cls, PyObject *args, PyObject *kw);
#define PYPOSH_INIT_SUBCLASS_METHOD                                           \
  {"__init_subclass__", (PyCFunction)(void (*)(void))pyposh_init_subclass,    \
   METH_CLASS | METH_VARARGS | METH_KEYWORDS,                                \
   "registers the subclass with the codec, which pins its objects"}

/* Python wrappers (containers, queues) open in this process on obj's
 * object, counted per object id: add delta (+1 when a wrapper gets its
 * handle, -1 when it goes) and return the new count, or -1 with an
 * exception.  Under the GIL. */
long pyposh_wrappers(posh_obj_t *obj, int delta);
/* obj is a handle of this process that is about to be closed: if its object
 * is a dict, list or queue that has no other reference (no wrapper of this
 * process, no other process, name or pin), release the heap references its
 * data holds (stored values, queued messages: heap blocks and pins) before
 * the last close frees their bytes.  Does nothing otherwise; no
 * exception. */
void pyposh_release_if_last(posh_obj_t *obj);
/* A wrapper goes (its tp_dealloc, heap attached): count it out, release
 * what the object holds if that was its last reference, close obj.  Keeps
 * any exception being raised. */
void pyposh_wrapper_close(posh_obj_t *obj);
/* What pyposh_release_if_last does per type: release a dict's or list's
 * stored values (containers.c); take and discard a queue's messages
 * (queue.c). */
void pyposh_cont_release(posh_obj_t *obj);
void pyposh_queue_discard_all(posh_obj_t *q);

/* Parts of the module. */
int pyposh_codec_init(PyObject *module);
int pyposh_sync_init(PyObject *module);
int pyposh_objects_init(PyObject *module);
int pyposh_containers_init(PyObject *module);

/* Queue and Pipe (queue.c, pipe.c).  Messages: encode obj natively on the
 * stack buffer (cap bytes) or through the codec (then *owned is the bytes
 * object holding the data); pyposh_msg_discard frees the heap blocks of an
 * encoded message that was not delivered (and drops *owned); decode takes
 * over the message's heap blocks.  pyposh_wait runs fn(ctx, 0) with the GIL,
 * then, while it returns POSH_EAGAIN and ns allows, fn(ctx, slice) without
 * the GIL in slices of 200 ms, checking signals (INT_MIN: raised). */
int pyposh_queue_init(PyObject *module); /* also runs pyposh_pipe_init */
int pyposh_pipe_init(PyObject *module);
int pyposh_msg_encode(PyObject *obj, unsigned char *stack, size_t cap,
                      const void **data, size_t *len, PyObject **owned);
void pyposh_msg_discard(PyObject *owned);
PyObject *pyposh_msg_decode(const void *p, size_t n, int copy);
typedef int (*pyposh_op_fn)(void *ctx, int64_t timeout_ns);
int pyposh_wait(pyposh_op_fn fn, void *ctx, int64_t ns);

PyMODINIT_FUNC PyInit__posh(void);

#endif /* PYPOSH_H */
