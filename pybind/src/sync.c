/* SPDX-License-Identifier: MIT */
/*
 * This file contains the C base type of posh's synchronisation objects,
 * posh._posh.SyncBase: a (kind, offset) pair naming a Lock, RLock,
 * Semaphore, Condition, Event or Barrier of libposh's sync API in the
 * default heap, with the blocking operations (the GIL is released while
 * waiting).  The multiprocessing-compatible classes of posh/synchronize.py
 * subclass it and add pickling and the Python-level details.
 *
 * Waits without a deadline are cut into slices so that signal handlers
 * (KeyboardInterrupt) run; a slice ending is invisible to the caller.
 */
#include "pyposh.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLICE_NS 200000000LL /* 200 ms between signal checks */

enum { K_LOCK = 1, K_RLOCK, K_SEM, K_COND, K_EVENT, K_BARRIER };

typedef struct {
  PyObject_HEAD
  posh_off_t off;
  int kind;
  /* The owner (posh_sync_own) this handle holds: the object is destroyed
   * with the last owner reference of every process. */
  posh_obj_t *owner;
} SyncBase;

static PyTypeObject SyncBase_Type;

static posh_heap_t *heap_or_raise(SyncBase *s) {
  if (!s->kind) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object not initialised");
    return NULL;
  }
  posh_heap_t *h = pyposh_heap_if_any();
  if (!h)
    return pyposh_heap(); /* raises: detached at exit */
  return h;
}

/* _create(kind, value=0, flags=0, lock=None): make a new object */
static PyObject *sb_create(SyncBase *self, PyObject *args) {
  int kind, value = 0;
  unsigned flags = 0;
  PyObject *lockobj = Py_None;
  if (!PyArg_ParseTuple(args, "i|iIO", &kind, &value, &flags, &lockobj))
    return NULL;
  if (self->kind) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object already initialised");
    return NULL;
  }
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  int r;
  posh_off_t off = POSH_OFF_NULL;
  posh_obj_t *dep = NULL; /* a Condition's Lock's owner */
  switch (kind) {
  case K_LOCK:
    r = posh_lock_create(h, NULL, 0, &off);
    break;
  case K_RLOCK:
    r = posh_rlock_create(h, NULL, 0, &off);
    break;
  case K_SEM:
    if (value < 0) {
      PyErr_SetString(PyExc_ValueError, "semaphore initial value must be "
                                        ">= 0");
      return NULL;
    }
    r = posh_sem_create(h, NULL, value, flags, &off);
    break;
  case K_COND: {
    posh_off_t lk = POSH_OFF_NULL;
    dep = NULL;
    if (lockobj != Py_None) {
      if (!PyObject_TypeCheck(lockobj, &SyncBase_Type) ||
          (((SyncBase *)lockobj)->kind != K_LOCK &&
           ((SyncBase *)lockobj)->kind != K_RLOCK)) {
        PyErr_SetString(PyExc_TypeError,
                        "posh.Condition needs a posh Lock or RLock");
        return NULL;
      }
      lk = ((SyncBase *)lockobj)->off;
      dep = ((SyncBase *)lockobj)->owner;
    }
    r = posh_cond_create(h, NULL, lk, 0, &off);
    break;
  }
  case K_EVENT:
    r = posh_event_create(h, NULL, 0, &off);
    break;
  case K_BARRIER:
    r = posh_barrier_create(h, NULL, value, 0, &off);
    break;
  default:
    PyErr_SetString(PyExc_ValueError, "bad kind");
    return NULL;
  }
  if (r < 0)
    return pyposh_error(r);
  /* Reference counting: an owner object destroys it with its last
   * reference (the Condition's keeps its Lock alive). */
  posh_obj_t *owner = NULL;
  r = posh_sync_own(h, off, dep, &owner);
  if (r < 0) {
    posh_sync_destroy(h, off);
    return pyposh_error(r);
  }
  self->off = off;
  self->kind = kind;
  self->owner = owner;
  Py_RETURN_NONE;
}

static const uint32_t kind_type[] = {0,
                                     POSH_SYNC_LOCK,
                                     POSH_SYNC_RLOCK,
                                     POSH_SYNC_SEMAPHORE,
                                     POSH_SYNC_CONDITION,
                                     POSH_SYNC_EVENT,
                                     POSH_SYNC_BARRIER};

/* _attach(kind, owner_off, owner_id): open an existing object through its
 * owner's reference (after unpickling; the heap is attached already) */
static PyObject *sb_attach(SyncBase *self, PyObject *args) {
  int kind;
  unsigned long long ooff, oid;
  if (!PyArg_ParseTuple(args, "iKK", &kind, &ooff, &oid))
    return NULL;
  if (self->kind) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object already initialised");
    return NULL;
  }
  if (kind < K_LOCK || kind > K_BARRIER) {
    PyErr_SetString(PyExc_ValueError, "bad kind");
    return NULL;
  }
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  posh_obj_ref_t ref = {ooff, oid, POSH_OBJ_SYNC, 0};
  posh_obj_t *owner = NULL;
  int r = posh_obj_open_ref(h, &ref, &owner);
  posh_off_t off = POSH_OFF_NULL;
  uint32_t type = 0;
  if (r == 0)
    r = posh_sync_owned(owner, &off);
  if (r == 0)
    r = posh_sync_type(h, off, &type);
  if (r == 0 && type != kind_type[kind])
    r = POSH_ETYPE;
  if (r < 0) {
    posh_obj_close(owner);
    return pyposh_error(r);
  }
  self->off = off;
  self->kind = kind;
  self->owner = owner;
  Py_RETURN_NONE;
}

/* One blocking call, with slices and the GIL released.  fn gets the
 * remaining ns of the slice; returns a posh code.  A try without waiting
 * is made first with the GIL held (the fast path). */
typedef int (*wait_fn)(posh_heap_t *h, posh_off_t off, int64_t ns, void *a);

static int blocking(posh_heap_t *h, posh_off_t off, int64_t timeout,
                    wait_fn fn, void *a, int *err_raised) {
  *err_raised = 0;
  int r = fn(h, off, 0, a);
  if (r != POSH_ETIMEDOUT || timeout == 0)
    return r;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    int64_t slice = SLICE_NS;
    if (timeout > 0) {
      struct timespec t;
      clock_gettime(CLOCK_MONOTONIC, &t);
      int64_t el = (t.tv_sec - t0.tv_sec) * 1000000000LL +
                   (t.tv_nsec - t0.tv_nsec);
      int64_t left = timeout - el;
      if (left <= 0)
        return POSH_ETIMEDOUT;
      if (left < slice)
        slice = left;
    }
    PYPOSH_BEGIN_HEAP_NOGIL;
    r = fn(h, off, slice, a);
    PYPOSH_END_HEAP_NOGIL;
    if (r != POSH_ETIMEDOUT)
      return r;
    if (PyErr_CheckSignals() < 0) {
      *err_raised = 1;
      return r;
    }
  }
}

static int w_lock(posh_heap_t *h, posh_off_t o, int64_t ns, void *a) {
  int r = posh_lock_acquire(h, o, ns);
  if (r == POSH_EOWNERDEAD) /* the holder died: take over the lock */
    r = posh_lock_consistent(h, o) == 0 ? 0 : 0;
  return r;
}
static int w_rlock(posh_heap_t *h, posh_off_t o, int64_t ns, void *a) {
  int r = posh_rlock_acquire(h, o, ns);
  if (r == POSH_EOWNERDEAD)
    r = posh_rlock_consistent(h, o) == 0 ? 0 : 0;
  return r;
}
static int w_sem(posh_heap_t *h, posh_off_t o, int64_t ns, void *a) {
  return posh_sem_acquire(h, o, ns);
}
static int w_cond_acq(posh_heap_t *h, posh_off_t o, int64_t ns, void *a) {
  int r = posh_cond_acquire(h, o, ns);
  if (r == POSH_EOWNERDEAD) {
    posh_off_t lk;
    if (posh_cond_lock(h, o, &lk) == 0) {
      uint32_t t = 0;
      posh_sync_type(h, lk, &t);
      if (t == POSH_SYNC_RLOCK)
        posh_rlock_consistent(h, lk);
      else
        posh_lock_consistent(h, lk);
    }
    r = 0;
  }
  return r;
}
static int w_event(posh_heap_t *h, posh_off_t o, int64_t ns, void *a) {
  return posh_event_wait(h, o, ns);
}

/* acquire(block=True, timeout=None) -> bool */
static PyObject *sb_acquire(SyncBase *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"block", "timeout", NULL};
  int block = 1;
  PyObject *tmo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|pO", kwlist, &block, &tmo))
    return NULL;
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int64_t ns = block ? pyposh_timeout(tmo) : 0;
  if (ns == -2)
    return NULL;
  wait_fn fn;
  switch (self->kind) {
  case K_LOCK:
    fn = w_lock;
    break;
  case K_RLOCK:
    fn = w_rlock;
    break;
  case K_SEM:
    fn = w_sem;
    break;
  case K_COND:
    fn = w_cond_acq;
    break;
  default:
    PyErr_SetString(PyExc_TypeError, "not a lock or semaphore");
    return NULL;
  }
  int raised;
  int r = blocking(h, self->off, ns, fn, NULL, &raised);
  if (raised)
    return NULL;
  if (r == 0)
    Py_RETURN_TRUE;
  if (r == POSH_ETIMEDOUT)
    Py_RETURN_FALSE;
  if (r == POSH_EBUSY && self->kind == K_LOCK && ns == POSH_FOREVER) {
    /* Python's Lock: the holder acquiring again blocks forever.  We do not
     * deadlock silently. */
    PyErr_SetString(PyExc_RuntimeError,
                    "posh: deadlock: this thread already holds the Lock");
    return NULL;
  }
  if (r == POSH_EBUSY && self->kind == K_LOCK) {
    /* held by ourselves: like Python, wait out the timeout and fail */
    if (ns > 0) {
      Py_BEGIN_ALLOW_THREADS; /* touches no heap memory */
      struct timespec ts = {ns / 1000000000LL, ns % 1000000000LL};
      nanosleep(&ts, NULL);
      Py_END_ALLOW_THREADS;
    }
    Py_RETURN_FALSE;
  }
  return pyposh_error(r);
}

/* release() */
static PyObject *sb_release(SyncBase *self, PyObject *unused) {
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int r;
  switch (self->kind) {
  case K_LOCK:
    r = posh_lock_release(h, self->off);
    if (r == POSH_EPERM) {
      int locked = posh_lock_locked(h, self->off);
      PyErr_SetString(PyExc_ValueError,
                      locked > 0 ? "posh: lock held by another thread or "
                                   "process (posh Locks are owned)"
                                 : "semaphore or lock released too many "
                                   "times");
      return NULL;
    }
    break;
  case K_RLOCK:
    r = posh_rlock_release(h, self->off);
    if (r == POSH_EPERM) {
      PyErr_SetString(PyExc_AssertionError,
                      "attempt to release recursive lock not owned by "
                      "thread");
      return NULL;
    }
    break;
  case K_SEM:
    r = posh_sem_release(h, self->off, 1);
    if (r == POSH_EOVERFLOW) {
      PyErr_SetString(PyExc_ValueError,
                      "semaphore or lock released too many times");
      return NULL;
    }
    break;
  case K_COND:
    r = posh_cond_release(h, self->off);
    if (r == POSH_EPERM) {
      posh_off_t lk;
      uint32_t t = 0;
      if (posh_cond_lock(h, self->off, &lk) == 0)
        posh_sync_type(h, lk, &t);
      if (t == POSH_SYNC_RLOCK)
        PyErr_SetString(PyExc_AssertionError,
                        "attempt to release recursive lock not owned by "
                        "thread");
      else
        PyErr_SetString(PyExc_ValueError,
                        "semaphore or lock released too many times");
      return NULL;
    }
    break;
  default:
    PyErr_SetString(PyExc_TypeError, "not a lock or semaphore");
    return NULL;
  }
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

/* __exit__(*exc_info): release() */
static PyObject *sb_exit(SyncBase *self, PyObject *args) {
  return sb_release(self, NULL);
}

/* _info(what) -> int: 'locked' 'owned' 'value' 'bound' 'parties' 'n_waiting'
 * 'broken' 'is_set' 'count' */
static PyObject *sb_info(SyncBase *self, PyObject *arg) {
  const char *what = PyUnicode_AsUTF8(arg);
  if (!what)
    return NULL;
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int r;
  posh_off_t o = self->off;
  if (!strcmp(what, "locked"))
    r = self->kind == K_LOCK    ? posh_lock_locked(h, o)
        : self->kind == K_RLOCK ? posh_rlock_locked(h, o)
                                : POSH_EINVAL;
  else if (!strcmp(what, "owned"))
    r = self->kind == K_LOCK    ? posh_lock_owned(h, o)
        : self->kind == K_RLOCK ? posh_rlock_owned(h, o)
                                : POSH_EINVAL;
  else if (!strcmp(what, "value"))
    r = posh_sem_value(h, o);
  else if (!strcmp(what, "bound"))
    r = posh_sem_bound(h, o);
  else if (!strcmp(what, "parties"))
    r = posh_barrier_parties(h, o);
  else if (!strcmp(what, "n_waiting"))
    r = posh_barrier_n_waiting(h, o);
  else if (!strcmp(what, "broken"))
    r = posh_barrier_broken(h, o);
  else if (!strcmp(what, "is_set"))
    r = posh_event_is_set(h, o);
  else if (!strcmp(what, "cond_lock")) {
    posh_off_t lk;
    r = posh_cond_lock(h, o, &lk);
    if (r == 0) {
      uint32_t t = 0;
      r = posh_sync_type(h, lk, &t);
      if (r == 0)
        return Py_BuildValue("(iK)", t == POSH_SYNC_RLOCK ? K_RLOCK : K_LOCK,
                             (unsigned long long)lk.v);
    }
  } else
    r = POSH_EINVAL;
  if (r < 0)
    return pyposh_error(r);
  return PyLong_FromLong(r);
}

/* Condition: _wait(timeout) -> bool (False on timeout) */
static PyObject *sb_wait(SyncBase *self, PyObject *args) {
  PyObject *tmo = Py_None;
  if (!PyArg_ParseTuple(args, "|O", &tmo))
    return NULL;
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int64_t ns = pyposh_timeout(tmo);
  if (ns == -2)
    return NULL;
  if (self->kind == K_EVENT) {
    int raised;
    int r = blocking(h, self->off, ns, w_event, NULL, &raised);
    if (raised)
      return NULL;
    if (r == 0)
      Py_RETURN_TRUE;
    if (r == POSH_ETIMEDOUT)
      Py_RETURN_FALSE;
    return pyposh_error(r);
  }
  if (self->kind != K_COND) {
    PyErr_SetString(PyExc_TypeError, "not a condition or event");
    return NULL;
  }
  /* The lock is held between slices, so no notify can fall in the gap. */
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    int64_t slice = SLICE_NS;
    if (ns >= 0) {
      struct timespec t;
      clock_gettime(CLOCK_MONOTONIC, &t);
      int64_t left = ns - ((t.tv_sec - t0.tv_sec) * 1000000000LL +
                           (t.tv_nsec - t0.tv_nsec));
      if (left < slice)
        slice = left > 0 ? left : 0;
    }
    int r;
    PYPOSH_BEGIN_HEAP_NOGIL;
    r = posh_cond_wait(h, self->off, slice);
    PYPOSH_END_HEAP_NOGIL;
    if (r == POSH_EOWNERDEAD) /* we hold the lock again */
      r = w_cond_acq(h, self->off, 0, NULL) == 0 ? 0 : 0;
    if (r == 0)
      Py_RETURN_TRUE;
    if (r == POSH_EPERM) {
      PyErr_SetString(PyExc_AssertionError,
                      "must acquire() condition before using wait()");
      return NULL;
    }
    if (r != POSH_ETIMEDOUT)
      return pyposh_error(r);
    if (ns >= 0 && slice < SLICE_NS)
      Py_RETURN_FALSE;
    if (PyErr_CheckSignals() < 0)
      return NULL;
  }
}

/* Condition: _notify(n) (n < 0: all) */
static PyObject *sb_notify(SyncBase *self, PyObject *args) {
  int n = 1;
  if (!PyArg_ParseTuple(args, "|i", &n))
    return NULL;
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int r = n < 0 ? posh_cond_notify_all(h, self->off)
                : posh_cond_notify(h, self->off, n);
  if (r == POSH_EPERM) {
    PyErr_SetString(PyExc_AssertionError, "lock is not owned");
    return NULL;
  }
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

/* Semaphore: _release_n(n) */
static PyObject *sb_release_n(SyncBase *self, PyObject *args) {
  int n = 1;
  if (!PyArg_ParseTuple(args, "i", &n))
    return NULL;
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int r = posh_sem_release(h, self->off, n);
  if (r == POSH_EOVERFLOW) {
    PyErr_SetString(PyExc_ValueError,
                    "semaphore or lock released too many times");
    return NULL;
  }
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

/* fn(heap, the object) with no result: None, or the error raised. */
static PyObject *sb_call(SyncBase *self, int (*fn)(posh_heap_t *, posh_off_t)) {
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int r = fn(h, self->off);
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

/* Event: _set() / _clear() */
static PyObject *sb_set(SyncBase *self, PyObject *unused) {
  return sb_call(self, posh_event_set);
}
static PyObject *sb_clear(SyncBase *self, PyObject *unused) {
  return sb_call(self, posh_event_clear);
}

/* Barrier action: called by the last thread to arrive, GIL released. */
typedef struct {
  PyObject *action;
  /* exception raised by the action, if any */
  PyObject *etype, *evalue, *etb;
} action_arg_t;

static int run_action(void *arg) {
  action_arg_t *a = arg;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *r = PyObject_CallNoArgs(a->action);
  int rc = 0;
  if (!r) {
    PyErr_Fetch(&a->etype, &a->evalue, &a->etb);
    rc = 1; /* breaks the barrier */
  }
  Py_XDECREF(r);
  PyGILState_Release(g);
  return rc;
}

/* Barrier: _bwait(timeout, action) -> index; raises
 * threading.BrokenBarrierError (given as exc) when broken */
static PyObject *sb_bwait(SyncBase *self, PyObject *args) {
  PyObject *tmo, *action, *broken_exc;
  if (!PyArg_ParseTuple(args, "OOO", &tmo, &action, &broken_exc))
    return NULL;
  posh_heap_t *h = heap_or_raise(self);
  if (!h)
    return NULL;
  int64_t ns = pyposh_timeout(tmo);
  if (ns == -2)
    return NULL;
  action_arg_t a = {action, NULL, NULL, NULL};
  unsigned index = 0;
  int r;
  PYPOSH_BEGIN_HEAP_NOGIL;
  r = posh_barrier_wait(h, self->off, ns,
                        action != Py_None ? run_action : NULL, &a, &index);
  PYPOSH_END_HEAP_NOGIL;
  if (a.etype) { /* the action raised: re-raise it in its caller */
    PyErr_Restore(a.etype, a.evalue, a.etb);
    return NULL;
  }
  if (r == 0)
    return PyLong_FromUnsignedLong(index);
  if (r == POSH_EBROKEN || r == POSH_ETIMEDOUT) {
    PyErr_SetNone(broken_exc);
    return NULL;
  }
  return pyposh_error(r);
}

static PyObject *sb_abort(SyncBase *self, PyObject *unused) {
  return sb_call(self, posh_barrier_abort);
}
static PyObject *sb_reset(SyncBase *self, PyObject *unused) {
  return sb_call(self, posh_barrier_reset);
}

static PyObject *sb_get_off(SyncBase *self, void *c) {
  return PyLong_FromUnsignedLongLong(self->off.v);
}
static PyObject *sb_get_kind(SyncBase *self, void *c) {
  return PyLong_FromLong(self->kind);
}
/* The owner's reference (offset, id): what a pickle carries. */
static PyObject *sb_get_oref(SyncBase *self, void *c) {
  posh_obj_ref_t ref;
  if (!self->owner || posh_obj_ref(self->owner, &ref) != 0) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object not initialised");
    return NULL;
  }
  return Py_BuildValue("(KK)", (unsigned long long)ref.off,
                       (unsigned long long)ref.id);
}

posh_obj_t *pyposh_sync_handle(PyObject *o) {
  return PyObject_TypeCheck(o, &SyncBase_Type) ? ((SyncBase *)o)->owner
                                               : NULL;
}

static void sb_dealloc(SyncBase *self) {
  /* After exit processing detached the heap, the handle's heap is gone:
   * leave it (the process is ending). */
  if (self->owner && pyposh_heap_if_any())
    posh_obj_close(self->owner);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef sb_methods[] = {
    PYPOSH_INIT_SUBCLASS_METHOD,
    {"_create", (PyCFunction)sb_create, METH_VARARGS, NULL},
    {"_attach", (PyCFunction)sb_attach, METH_VARARGS, NULL},
    {"acquire", (PyCFunction)(void (*)(void))sb_acquire,
     METH_VARARGS | METH_KEYWORDS, "acquire(block=True, timeout=None)"},
    {"release", (PyCFunction)sb_release, METH_NOARGS, "release()"},
    {"__enter__", (PyCFunction)(void (*)(void))sb_acquire,
     METH_VARARGS | METH_KEYWORDS, "acquire()"},
    {"__exit__", (PyCFunction)sb_exit, METH_VARARGS, "release()"},
    {"_info", (PyCFunction)sb_info, METH_O, NULL},
    {"_wait", (PyCFunction)sb_wait, METH_VARARGS, NULL},
    {"_notify", (PyCFunction)sb_notify, METH_VARARGS, NULL},
    {"_release_n", (PyCFunction)sb_release_n, METH_VARARGS, NULL},
    {"_set", (PyCFunction)sb_set, METH_NOARGS, NULL},
    {"_clear", (PyCFunction)sb_clear, METH_NOARGS, NULL},
    {"_bwait", (PyCFunction)sb_bwait, METH_VARARGS, NULL},
    {"_abort", (PyCFunction)sb_abort, METH_NOARGS, NULL},
    {"_reset", (PyCFunction)sb_reset, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sb_getset[] = {
    {"_off", (getter)sb_get_off, NULL, "offset in the heap", NULL},
    {"_kind", (getter)sb_get_kind, NULL, NULL, NULL},
    {"_oref", (getter)sb_get_oref, NULL, "the owner's (offset, id)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SyncBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh._posh.SyncBase",
    .tp_basicsize = sizeof(SyncBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)sb_dealloc,
    .tp_methods = sb_methods,
    .tp_getset = sb_getset,
    .tp_doc = "C base of posh's synchronisation objects",
};

int pyposh_sync_init(PyObject *m) {
  if (PyType_Ready(&SyncBase_Type) < 0)
    return -1;
  if (pyposh_register_pinned((PyObject *)&SyncBase_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "SyncBase", (PyObject *)&SyncBase_Type) < 0)
    return -1;
  if (PyModule_AddIntConstant(m, "K_LOCK", K_LOCK) < 0 ||
      PyModule_AddIntConstant(m, "K_RLOCK", K_RLOCK) < 0 ||
      PyModule_AddIntConstant(m, "K_SEM", K_SEM) < 0 ||
      PyModule_AddIntConstant(m, "K_COND", K_COND) < 0 ||
      PyModule_AddIntConstant(m, "K_EVENT", K_EVENT) < 0 ||
      PyModule_AddIntConstant(m, "K_BARRIER", K_BARRIER) < 0 ||
      PyModule_AddIntConstant(m, "SEM_BOUNDED", POSH_SEM_BOUNDED) < 0 ||
      PyModule_AddIntConstant(m, "SEM_ROBUST", POSH_SEM_ROBUST) < 0)
    return -1;
  return 0;
}
