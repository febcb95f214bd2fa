/* SPDX-License-Identifier: MIT */
/*
 * This file contains the C base type of posh's shared objects made with
 * libposh's object core, posh._posh.ObjBase: for now Value and Array (with
 * or without a lock, i.e. also RawValue and RawArray).  It owns one process-
 * local handle (posh_obj_t), exports the data through the buffer protocol
 * (so numpy can map it without a copy), and converts scalars by type code.
 * Pickling (a reference: offset + unique id) is done in posh/sharedctypes.py.
 */
#include "pyposh.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#include "posh/value.h"

typedef struct {
  PyObject_HEAD
  posh_obj_t *obj;
  void *data;
  Py_ssize_t length;   /* items (1 for a Value) */
  Py_ssize_t itemsize;
  Py_ssize_t nbytes;   /* length * itemsize */
  Py_ssize_t one;      /* 1: the stride of a byte view */
  int type;            /* POSH_OBJ_VALUE or POSH_OBJ_ARRAY */
  char typecode[2];    /* buffer format */
} ObjBase;

static int ob_fill(ObjBase *self) {
  int r;
  size_t len = 1, isz = 0;
  char tc = 0;
  void *data = NULL;
  if (self->type == POSH_OBJ_VALUE)
    r = posh_value_data(self->obj, &data, &isz);
  else
    r = posh_array_data(self->obj, &data, &len, &isz);
  if (r == 0)
    r = posh_value_typecode(self->obj, &tc);
  if (r < 0) {
    pyposh_error(r);
    return -1;
  }
  self->data = data;
  self->length = (Py_ssize_t)len;
  self->itemsize = (Py_ssize_t)isz;
  self->typecode[0] = tc;
  self->typecode[1] = 0;
  self->nbytes = self->length * self->itemsize;
  self->one = 1;
  return 0;
}

static int ob_check(ObjBase *self) {
  if (!self->obj) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object not initialised");
    return -1;
  }
  if (pyposh_heap_check() < 0)
    return -1;
  return 0;
}

/* _create(kind, typecode, length, with_lock) */
static PyObject *ob_create(ObjBase *self, PyObject *args) {
  int type, with_lock, tc;
  Py_ssize_t length;
  if (!PyArg_ParseTuple(args, "iCnp", &type, &tc, &length, &with_lock))
    return NULL;
  if (self->obj) {
    PyErr_SetString(PyExc_RuntimeError, "posh: object already initialised");
    return NULL;
  }
  if (tc <= 0 || tc > 127 || posh_value_itemsize((char)tc) < 0) {
    PyErr_Format(PyExc_TypeError, "unsupported type code %R",
                 PyTuple_GET_ITEM(args, 1));
    return NULL;
  }
  if (length < 0) {
    PyErr_SetString(PyExc_ValueError, "negative array length");
    return NULL;
  }
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  int r = type == POSH_OBJ_VALUE
              ? posh_value_create(h, NULL, (char)tc, with_lock, &self->obj)
              : posh_array_create(h, NULL, (char)tc, (size_t)length,
                                  with_lock, &self->obj);
  if (r < 0)
    return pyposh_error(r);
  self->type = type;
  if (ob_fill(self) < 0)
    return NULL;
  Py_RETURN_NONE;
}

/* _open(off, id, type): after unpickling (the heap is attached) */
static PyObject *ob_open(ObjBase *self, PyObject *args) {
  unsigned long long off, id;
  unsigned int type;
  if (!PyArg_ParseTuple(args, "KKI", &off, &id, &type))
    return NULL;
  if (type != POSH_OBJ_VALUE && type != POSH_OBJ_ARRAY)
    return pyposh_error(POSH_ETYPE);
  if (pyposh_obj_open(off, id, type, &self->obj) < 0)
    return NULL;
  self->type = (int)type;
  if (ob_fill(self) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *ob_ref(ObjBase *self, PyObject *unused) {
  if (ob_check(self) < 0)
    return NULL;
  unsigned long long off, id;
  if (pyposh_obj_ref(self->obj, &off, &id) < 0)
    return NULL;
  return Py_BuildValue("(KKI)", off, id, (unsigned)self->type);
}

static PyTypeObject ObjBase_Type;

posh_obj_t *pyposh_objbase_handle(PyObject *o) {
  return PyObject_TypeCheck(o, &ObjBase_Type) ? ((ObjBase *)o)->obj : NULL;
}

static void ob_dealloc(ObjBase *self) {
  /* After exit processing detached the heap, the handle's heap is gone:
   * leave it (the process is ending). */
  if (self->obj && pyposh_heap_if_any())
    posh_obj_close(self->obj);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

/* scalar <-> Python by type code */
static PyObject *to_py(char tc, const void *p) {
  switch (tc) {
  case 'c':
    return PyBytes_FromStringAndSize(p, 1);
  case 'b':
    return PyLong_FromLong(*(const signed char *)p);
  case 'B':
    return PyLong_FromLong(*(const unsigned char *)p);
  case 'h':
    return PyLong_FromLong(*(const short *)p);
  case 'H':
    return PyLong_FromLong(*(const unsigned short *)p);
  case 'i':
    return PyLong_FromLong(*(const int *)p);
  case 'I':
    return PyLong_FromUnsignedLong(*(const unsigned int *)p);
  case 'l':
    return PyLong_FromLong(*(const long *)p);
  case 'L':
    return PyLong_FromUnsignedLong(*(const unsigned long *)p);
  case 'q':
    return PyLong_FromLongLong(*(const long long *)p);
  case 'Q':
    return PyLong_FromUnsignedLongLong(*(const unsigned long long *)p);
  case 'f':
    return PyFloat_FromDouble(*(const float *)p);
  case 'd':
    return PyFloat_FromDouble(*(const double *)p);
  default:
    PyErr_SetString(PyExc_TypeError, "unsupported type code");
    return NULL;
  }
}

/* Like ctypes: integers wrap to the type's width. */
static int from_py(char tc, PyObject *v, void *p) {
  if (tc == 'c') {
    if (PyBytes_Check(v) && PyBytes_GET_SIZE(v) == 1) {
      *(char *)p = PyBytes_AS_STRING(v)[0];
      return 0;
    }
    if (PyByteArray_Check(v) && PyByteArray_GET_SIZE(v) == 1) {
      *(char *)p = PyByteArray_AS_STRING(v)[0];
      return 0;
    }
    if (PyIndex_Check(v)) { /* int, numpy integers: __index__ */
      PyObject *iv = PyNumber_Index(v);
      if (iv == NULL)
        return -1;
      long x = PyLong_AsLong(iv);
      Py_DECREF(iv);
      if (x == -1 && PyErr_Occurred())
        return -1;
      *(char *)p = (char)x;
      return 0;
    }
    PyErr_SetString(PyExc_TypeError, "one character bytes or int expected");
    return -1;
  }
  if (tc == 'f' || tc == 'd') {
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred())
      return -1;
    if (tc == 'f')
      *(float *)p = (float)d;
    else
      *(double *)p = d;
    return 0;
  }
  /* As ctypes: anything with __index__ (int, bool, numpy integers), not
   * floats. */
  if (PyFloat_Check(v) || !PyIndex_Check(v)) {
    PyErr_Format(PyExc_TypeError, "int expected instead of %s",
                 Py_TYPE(v)->tp_name);
    return -1;
  }
  PyObject *iv = PyNumber_Index(v);
  if (iv == NULL)
    return -1;
  unsigned long long x = PyLong_AsUnsignedLongLongMask(iv);
  Py_DECREF(iv);
  if (x == (unsigned long long)-1 && PyErr_Occurred())
    return -1;
  switch (tc) {
  case 'b':
  case 'B':
    *(unsigned char *)p = (unsigned char)x;
    break;
  case 'h':
  case 'H':
    *(unsigned short *)p = (unsigned short)x;
    break;
  case 'i':
  case 'I':
    *(unsigned int *)p = (unsigned int)x;
    break;
  case 'l':
  case 'L':
    *(unsigned long *)p = (unsigned long)x;
    break;
  default:
    *(unsigned long long *)p = x;
    break;
  }
  return 0;
}

/* Value: _get() / _set(v) (under the lock if it has one) */
static PyObject *ob_get(ObjBase *self, PyObject *unused) {
  if (ob_check(self) < 0)
    return NULL;
  unsigned char buf[16];
  int r = posh_value_load(self->obj, buf);
  if (r < 0 && r != POSH_EOWNERDEAD)
    return pyposh_error(r);
  return to_py(self->typecode[0], buf);
}

static PyObject *ob_set(ObjBase *self, PyObject *v) {
  if (ob_check(self) < 0)
    return NULL;
  unsigned char buf[16] = {0};
  if (from_py(self->typecode[0], v, buf) < 0)
    return NULL;
  int r = posh_value_store(self->obj, buf);
  if (r < 0 && r != POSH_EOWNERDEAD)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

/* Array: _getitem(i) / _setitem(i, v): one item, no lock (the Python
 * layer takes it) */
static PyObject *ob_getitem(ObjBase *self, PyObject *arg) {
  /* any __index__ object (numpy integers too); a float is a TypeError */
  Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError);
  if (i == -1 && PyErr_Occurred())
    return NULL;
  if (ob_check(self) < 0)
    return NULL;
  if (i < 0 || i >= self->length) {
    PyErr_SetString(PyExc_IndexError, "invalid index");
    return NULL;
  }
  return to_py(self->typecode[0], (char *)self->data + i * self->itemsize);
}

static PyObject *ob_setitem(ObjBase *self, PyObject *args) {
  Py_ssize_t i;
  PyObject *v;
  if (!PyArg_ParseTuple(args, "nO", &i, &v))
    return NULL;
  if (ob_check(self) < 0)
    return NULL;
  if (i < 0 || i >= self->length) {
    PyErr_SetString(PyExc_IndexError, "invalid index");
    return NULL;
  }
  unsigned char buf[16] = {0};
  if (from_py(self->typecode[0], v, buf) < 0)
    return NULL;
  memcpy((char *)self->data + i * self->itemsize, buf,
         (size_t)self->itemsize);
  Py_RETURN_NONE;
}

/* _lock_acquire(block=True, timeout=None) -> bool */
static PyObject *ob_lock_acquire(ObjBase *self, PyObject *args,
                                 PyObject *kw) {
  static char *kwlist[] = {"block", "timeout", NULL};
  int block = 1;
  PyObject *tmo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|pO", kwlist, &block, &tmo))
    return NULL;
  if (ob_check(self) < 0)
    return NULL;
  int64_t ns = block ? pyposh_timeout(tmo) : 0;
  if (ns == -2)
    return NULL;
  int r = posh_value_lock(self->obj, 0);
  if ((r == POSH_EAGAIN || r == POSH_ETIMEDOUT) && ns != 0) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) { /* slices, so that signal handlers run */
      int64_t slice = 200000000LL;
      if (ns > 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        int64_t left = ns - ((t.tv_sec - t0.tv_sec) * 1000000000LL +
                             (t.tv_nsec - t0.tv_nsec));
        if (left <= 0)
          break;
        if (left < slice)
          slice = left;
      }
      PYPOSH_BEGIN_HEAP_NOGIL;
      r = posh_value_lock(self->obj, slice);
      PYPOSH_END_HEAP_NOGIL;
      if (r != POSH_ETIMEDOUT && r != POSH_EAGAIN)
        break;
      if (PyErr_CheckSignals() < 0)
        return NULL;
    }
  }
  if (r == 0 || r == POSH_EOWNERDEAD)
    Py_RETURN_TRUE;
  if (r == POSH_ETIMEDOUT || r == POSH_EAGAIN)
    Py_RETURN_FALSE;
  if (r == POSH_ENOSYS) {
    PyErr_SetString(PyExc_AttributeError, "object has no lock");
    return NULL;
  }
  return pyposh_error(r);
}

static PyObject *ob_lock_release(ObjBase *self, PyObject *unused) {
  if (ob_check(self) < 0)
    return NULL;
  int r = posh_value_unlock(self->obj);
  if (r == POSH_EPERM) {
    PyErr_SetString(PyExc_AssertionError,
                    "attempt to release recursive lock not owned by thread");
    return NULL;
  }
  if (r < 0)
    return pyposh_error(r);
  Py_RETURN_NONE;
}

static PyObject *ob_lock_owned(ObjBase *self, PyObject *unused) {
  if (ob_check(self) < 0)
    return NULL;
  int r = posh_value_lock_owned(self->obj);
  return r < 0 ? pyposh_error(r) : PyLong_FromLong(r);
}

static PyObject *ob_has_lock(ObjBase *self, PyObject *unused) {
  if (ob_check(self) < 0)
    return NULL;
  int r = posh_value_has_lock(self->obj);
  return r < 0 ? pyposh_error(r) : PyBool_FromLong(r);
}

static int ob_getbuffer(ObjBase *self, Py_buffer *view, int flags) {
  if (ob_check(self) < 0) {
    view->obj = NULL;
    return -1;
  }
  int typed = (flags & PyBUF_FORMAT) != 0;
  view->obj = (PyObject *)self;
  Py_INCREF(self);
  view->buf = self->data;
  view->len = self->nbytes;
  view->readonly = 0;
  view->ndim = 1;
  view->suboffsets = NULL;
  view->internal = NULL;
  /* with a format: items of the type code; without: plain bytes */
  view->itemsize = typed ? self->itemsize : 1;
  view->format = typed ? self->typecode : NULL;
  view->shape = !(flags & PyBUF_ND) ? NULL
                : typed             ? &self->length
                                    : &self->nbytes;
  view->strides = !(flags & PyBUF_STRIDES) ? NULL
                  : typed                  ? &self->itemsize
                                           : &self->one;
  return 0;
}

static PyBufferProcs ob_as_buffer = {(getbufferproc)ob_getbuffer, NULL};

static Py_ssize_t ob_len(ObjBase *self) {
  return self->obj ? self->length : 0;
}
static PySequenceMethods ob_as_seq = {.sq_length = (lenfunc)ob_len};

static PyObject *ob_get_typecode(ObjBase *self, void *c) {
  return PyUnicode_FromString(self->typecode);
}

static PyMethodDef ob_methods[] = {
    PYPOSH_INIT_SUBCLASS_METHOD,
    {"_create", (PyCFunction)ob_create, METH_VARARGS, NULL},
    {"_open", (PyCFunction)ob_open, METH_VARARGS, NULL},
    {"_ref", (PyCFunction)ob_ref, METH_NOARGS, NULL},
    {"_get", (PyCFunction)ob_get, METH_NOARGS, NULL},
    {"_set", (PyCFunction)ob_set, METH_O, NULL},
    {"_getitem", (PyCFunction)ob_getitem, METH_O, NULL},
    {"_setitem", (PyCFunction)ob_setitem, METH_VARARGS, NULL},
    {"_lock_acquire", (PyCFunction)(void (*)(void))ob_lock_acquire,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_lock_release", (PyCFunction)ob_lock_release, METH_NOARGS, NULL},
    {"_lock_owned", (PyCFunction)ob_lock_owned, METH_NOARGS, NULL},
    {"_has_lock", (PyCFunction)ob_has_lock, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ob_getset[] = {
    {"_typecode", (getter)ob_get_typecode, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ObjBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh._posh.ObjBase",
    .tp_basicsize = sizeof(ObjBase),
    .tp_dealloc = (destructor)ob_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = ob_methods,
    .tp_getset = ob_getset,
    .tp_as_buffer = &ob_as_buffer,
    .tp_as_sequence = &ob_as_seq,
    .tp_doc = "C base of posh's shared objects (Value, Array)",
};

int pyposh_objects_init(PyObject *m) {
  if (PyType_Ready(&ObjBase_Type) < 0)
    return -1;
  if (pyposh_register_pinned((PyObject *)&ObjBase_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "ObjBase", (PyObject *)&ObjBase_Type) < 0)
    return -1;
  if (PyModule_AddIntConstant(m, "OBJ_VALUE", POSH_OBJ_VALUE) < 0 ||
      PyModule_AddIntConstant(m, "OBJ_ARRAY", POSH_OBJ_ARRAY) < 0)
    return -1;
  return 0;
}
