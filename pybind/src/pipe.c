/* SPDX-License-Identifier: MIT */
/*
 * This file contains the C base type of posh's Connection (the two ends of
 * posh.Pipe(); posh/connection.py subclasses it), posh._posh.ConnBase,
 * over one endpoint of libposh's Pipe object (include/posh/pipe.h):
 * send/recv of objects (the message helpers of queue.c: natives on the
 * stack, the codec otherwise), send_bytes/recv_bytes/recv_bytes_into, poll,
 * fileno (an eventfd readable while recv would not block), with
 * multiprocessing.connection.Connection's signatures and exceptions.
 *
 * Calls first try without releasing the GIL; a call that would block
 * releases it and waits in 200 ms slices (signal handlers run between).
 */
#include "pyposh.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "posh/pipe.h"

#define STACK_MSG 4096

static PyObject *g_BufferTooShort; /* multiprocessing.BufferTooShort */

typedef struct {
  PyObject_HEAD
  posh_obj_t *end;
  unsigned flags; /* POSH_PIPE_READABLE | POSH_PIPE_WRITABLE */
} ConnBase;

static PyTypeObject ConnBase_Type;

static int cb_fill(ConnBase *self) {
  int r = posh_pipe_flags(self->end, &self->flags);
  if (r < 0) {
    pyposh_error(r);
    return -1;
  }
  return 0;
}

static int cb_check(ConnBase *self) {
  if (!self->end) {
    PyErr_SetString(PyExc_OSError, "handle is closed");
    return -1;
  }
  if (pyposh_heap_check() < 0)
    return -1;
  return 0;
}

static int cb_check_readable(ConnBase *self) {
  if (cb_check(self) < 0)
    return -1;
  if (!(self->flags & POSH_PIPE_READABLE)) {
    PyErr_SetString(PyExc_OSError, "connection is write-only");
    return -1;
  }
  return 0;
}

static int cb_check_writable(ConnBase *self) {
  if (cb_check(self) < 0)
    return -1;
  if (!(self->flags & POSH_PIPE_WRITABLE)) {
    PyErr_SetString(PyExc_OSError, "connection is read-only");
    return -1;
  }
  return 0;
}

/* pipe_pair(cls, duplex) -> (end0, end1): instances of cls (a ConnBase
 * subclass).  duplex false: end0 receives only, end1 sends only. */
static PyObject *m_pipe_pair(PyObject *mod, PyObject *args) {
  PyTypeObject *cls;
  int duplex;
  if (!PyArg_ParseTuple(args, "O!p", &PyType_Type, &cls, &duplex))
    return NULL;
  if (!PyType_IsSubtype(cls, &ConnBase_Type)) {
    PyErr_SetString(PyExc_TypeError, "pipe_pair: not a ConnBase subclass");
    return NULL;
  }
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  ConnBase *a = (ConnBase *)cls->tp_alloc(cls, 0);
  ConnBase *b = a ? (ConnBase *)cls->tp_alloc(cls, 0) : NULL;
  if (!b) {
    Py_XDECREF(a);
    return NULL;
  }
  int r = posh_pipe_create(h, duplex, &a->end, &b->end);
  if (r < 0) {
    Py_DECREF(a);
    Py_DECREF(b);
    return pyposh_error(r);
  }
  if (cb_fill(a) < 0 || cb_fill(b) < 0) {
    Py_DECREF(a);
    Py_DECREF(b);
    return NULL;
  }
  return Py_BuildValue("(NN)", a, b);
}

/* _open(off, id): after unpickling (heap attached) */
static PyObject *cb_open(ConnBase *self, PyObject *args) {
  unsigned long long off, id;
  if (!PyArg_ParseTuple(args, "KK", &off, &id))
    return NULL;
  if (self->end) {
    PyErr_SetString(PyExc_RuntimeError, "posh: connection already open");
    return NULL;
  }
  if (pyposh_obj_open(off, id, POSH_OBJ_PIPE, &self->end) < 0)
    return NULL;
  if (cb_fill(self) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *cb_ref(ConnBase *self, PyObject *unused) {
  if (cb_check(self) < 0)
    return NULL;
  unsigned long long off, id;
  if (pyposh_obj_ref(self->end, &off, &id) < 0)
    return NULL;
  return Py_BuildValue("(KK)", off, id);
}

static PyObject *cb_bind(ConnBase *self, PyObject *arg) {
  if (cb_check(self) < 0)
    return NULL;
  const char *name = PyUnicode_AsUTF8(arg);
  if (!name)
    return NULL;
  int r = posh_obj_bind(self->end, name);
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

/* _unbind(name): module-level unbind in the default heap (ENOENT ignored) */
static PyObject *m_unbind(PyObject *mod, PyObject *arg) {
  const char *name = PyUnicode_AsUTF8(arg);
  if (!name)
    return NULL;
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  int r = posh_obj_unbind(h, name);
  if (r < 0 && r != POSH_ENOENT)
    return pyposh_error(r);
  return PyBool_FromLong(r == 0);
}

static PyObject *cb_touch(ConnBase *self, PyObject *unused) {
  if (!self->end || !pyposh_heap_if_any())
    Py_RETURN_NONE;
  unsigned f;
  int r = posh_pipe_flags(self->end, &f);
  return r < 0 ? pyposh_error(r) : (Py_INCREF(Py_None), Py_None);
}

posh_obj_t *pyposh_conn_handle(PyObject *o) {
  return PyObject_TypeCheck(o, &ConnBase_Type) ? ((ConnBase *)o)->end : NULL;
}

static void cb_dealloc(ConnBase *self) {
  if (self->end && pyposh_heap_if_any())
    posh_pipe_close(self->end);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *cb_close(ConnBase *self, PyObject *unused) {
  if (self->end) {
    posh_obj_t *e = self->end;
    self->end = NULL;
    if (pyposh_heap_if_any())
      posh_pipe_close(e);
  }
  Py_RETURN_NONE;
}

/* ---- sending ---- */
typedef struct {
  posh_obj_t *end;
  const void *data;
  size_t len;
} send_ctx_t;

static int send_op(void *c, int64_t t) {
  send_ctx_t *s = c;
  return posh_pipe_send(s->end, s->data, s->len, t);
}

static int send_raw(ConnBase *self, const void *data, size_t len) {
  send_ctx_t c = {self->end, data, len};
  int r = pyposh_wait(send_op, &c, POSH_FOREVER);
  if (r == 0)
    return 0;
  if (r == INT_MIN)
    return -1;
  if (r == POSH_ECLOSED) {
    errno = EPIPE;
    PyErr_SetFromErrno(PyExc_OSError); /* BrokenPipeError */
  } else if (r == POSH_EPERM) {
    PyErr_SetString(PyExc_OSError, "connection is read-only");
  } else {
    pyposh_error(r);
  }
  return -1;
}

/* send_bytes(buf, offset=0, size=None) */
static PyObject *cb_send_bytes(ConnBase *self, PyObject *args,
                               PyObject *kw) {
  static char *kwlist[] = {"buf", "offset", "size", NULL};
  Py_buffer b;
  Py_ssize_t offset = 0;
  PyObject *sizeo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|nO", kwlist, &b, &offset,
                                   &sizeo))
    return NULL;
  PyObject *res = NULL;
  if (cb_check_writable(self) < 0)
    goto out;
  Py_ssize_t n = b.len, size;
  if (offset < 0) {
    PyErr_SetString(PyExc_ValueError, "offset is negative");
    goto out;
  }
  if (n < offset) {
    PyErr_SetString(PyExc_ValueError, "buffer length < offset");
    goto out;
  }
  if (sizeo == Py_None) {
    size = n - offset;
  } else {
    size = PyLong_AsSsize_t(sizeo);
    if (size == -1 && PyErr_Occurred())
      goto out;
    if (size < 0) {
      PyErr_SetString(PyExc_ValueError, "size is negative");
      goto out;
    }
    if (offset + size > n) {
      PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
      goto out;
    }
  }
  if (send_raw(self, (const char *)b.buf + offset, (size_t)size) == 0) {
    Py_INCREF(Py_None);
    res = Py_None;
  }
out:
  PyBuffer_Release(&b);
  return res;
}

/* send(obj) */
static PyObject *cb_send(ConnBase *self, PyObject *obj) {
  if (cb_check_writable(self) < 0)
    return NULL;
  unsigned char stack[STACK_MSG];
  const void *data;
  size_t len;
  PyObject *owned;
  if (pyposh_msg_encode(obj, stack, sizeof stack, &data, &len, &owned) < 0)
    return NULL;
  if (send_raw(self, data, len) < 0) {
    pyposh_msg_discard(owned);
    return NULL;
  }
  Py_XDECREF(owned);
  Py_RETURN_NONE;
}

/* ---- receiving ---- */
typedef struct {
  posh_obj_t *end;
  void *buf;
  size_t cap, len;
} recv_ctx_t;

static int recv_op(void *c, int64_t t) {
  recv_ctx_t *x = c;
  return posh_pipe_recv(x->end, x->buf, x->cap, &x->len, t);
}

/* Receive one message.  0: in stack (*len), or in *big (a bytes object)
 * when it did not fit; -1 raised.  max >= 0: a message longer than max is
 * dropped and reported as POSH_EMSGSIZE (returns -2, *len its length). */
static int recv_msg(ConnBase *self, unsigned char *stack, size_t cap,
                    size_t *len, PyObject **big, Py_ssize_t max) {
  *big = NULL;
  recv_ctx_t c = {self->end, stack, cap, 0};
  int r = pyposh_wait(recv_op, &c, POSH_FOREVER);
  while (r == POSH_EMSGSIZE) {
    if (max >= 0 && c.len > (size_t)max) {
      /* take it out (multiprocessing loses it too) */
      void *tmp = NULL;
      size_t l2;
      int r2 = posh_pipe_recv_alloc(self->end, &tmp, &l2, POSH_FOREVER);
      free(tmp);
      if (r2 < 0 && r2 != POSH_ECLOSED)
        return (pyposh_error(r2), -1);
      *len = c.len;
      return -2;
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)c.len);
    if (!b)
      return -1;
    c.buf = PyBytes_AS_STRING(b);
    c.cap = c.len;
    r = pyposh_wait(recv_op, &c, POSH_FOREVER);
    if (r == 0) {
      if (c.len != (size_t)PyBytes_GET_SIZE(b)) { /* another, shorter one */
        PyObject *s = PyBytes_FromStringAndSize(c.buf, (Py_ssize_t)c.len);
        Py_DECREF(b);
        b = s;
        if (!b)
          return -1;
      }
      *big = b;
      *len = c.len;
      return 0;
    }
    Py_DECREF(b);
  }
  if (r == 0) {
    *len = c.len;
    return 0;
  }
  if (r == INT_MIN)
    return -1;
  if (r == POSH_ECLOSED)
    PyErr_SetNone(PyExc_EOFError);
  else if (r == POSH_EPERM)
    PyErr_SetString(PyExc_OSError, "connection is write-only");
  else
    pyposh_error(r);
  return -1;
}

/* multiprocessing's _bad_message_length */
static PyObject *bad_length(ConnBase *self) {
  if (self->flags & POSH_PIPE_WRITABLE) {
    self->flags &= ~POSH_PIPE_READABLE;
  } else {
    PyObject *r = PyObject_CallMethod((PyObject *)self, "close", NULL);
    Py_XDECREF(r);
    PyErr_Clear();
  }
  PyErr_SetString(PyExc_OSError, "bad message length");
  return NULL;
}

/* recv_bytes(maxlength=None) */
static PyObject *cb_recv_bytes(ConnBase *self, PyObject *args,
                               PyObject *kw) {
  static char *kwlist[] = {"maxlength", NULL};
  PyObject *mo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &mo))
    return NULL;
  Py_ssize_t max = -1;
  if (mo != Py_None) {
    max = PyLong_AsSsize_t(mo);
    if (max == -1 && PyErr_Occurred())
      return NULL;
    if (max < 0) {
      PyErr_SetString(PyExc_ValueError, "negative maxlength");
      return NULL;
    }
  }
  if (cb_check_readable(self) < 0)
    return NULL;
  unsigned char stack[STACK_MSG];
  size_t len;
  PyObject *big;
  int r = recv_msg(self, stack, sizeof stack, &len, &big, max);
  if (r == -2)
    return bad_length(self);
  if (r < 0)
    return NULL;
  if (big)
    return big;
  if (max >= 0 && len > (size_t)max)
    return bad_length(self);
  return PyBytes_FromStringAndSize((const char *)stack, (Py_ssize_t)len);
}

/* recv_bytes_into(buf, offset=0) -> number of items */
static PyObject *cb_recv_bytes_into(ConnBase *self, PyObject *args,
                                    PyObject *kw) {
  static char *kwlist[] = {"buf", "offset", NULL};
  PyObject *bo;
  Py_ssize_t offset = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|n", kwlist, &bo, &offset))
    return NULL;
  if (cb_check_readable(self) < 0)
    return NULL;
  Py_buffer b;
  if (PyObject_GetBuffer(bo, &b, PyBUF_CONTIG | PyBUF_FORMAT) < 0)
    return NULL;
  PyObject *res = NULL;
  if (offset < 0) {
    PyErr_SetString(PyExc_ValueError, "negative offset");
    goto out;
  }
  if (offset > b.len) {
    PyErr_SetString(PyExc_ValueError, "offset too large");
    goto out;
  }
  recv_ctx_t c = {self->end, (char *)b.buf + offset,
                  (size_t)(b.len - offset), 0};
  int r = pyposh_wait(recv_op, &c, POSH_FOREVER);
  if (r == POSH_EMSGSIZE) {
    /* as multiprocessing: BufferTooShort carrying the whole message */
    unsigned char stack[64];
    size_t len;
    PyObject *big;
    if (recv_msg(self, stack, sizeof stack, &len, &big, -1) < 0)
      goto out;
    if (!big)
      big = PyBytes_FromStringAndSize((const char *)stack, (Py_ssize_t)len);
    if (big) {
      PyErr_SetObject(g_BufferTooShort, big);
      Py_DECREF(big);
    }
    goto out;
  }
  if (r == 0) {
    res = PyLong_FromSize_t(c.len); /* bytes, as multiprocessing */
  } else if (r == POSH_ECLOSED) {
    PyErr_SetNone(PyExc_EOFError);
  } else if (r != INT_MIN) {
    pyposh_error(r);
  }
out:
  PyBuffer_Release(&b);
  return res;
}

/* recv(copy=False) */
static PyObject *cb_recv(ConnBase *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"copy", NULL};
  int copy = 0;
  if ((args && PyTuple_GET_SIZE(args)) || kw)
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|p", kwlist, &copy))
      return NULL;
  if (cb_check_readable(self) < 0)
    return NULL;
  unsigned char stack[STACK_MSG];
  size_t len;
  PyObject *big;
  if (recv_msg(self, stack, sizeof stack, &len, &big, -1) < 0)
    return NULL;
  PyObject *o = pyposh_msg_decode(big ? PyBytes_AS_STRING(big) : (char *)stack,
                                  len, copy);
  Py_XDECREF(big);
  return o;
}

/* poll(timeout=0.0) -> bool */
typedef struct {
  posh_obj_t *end;
} poll_ctx_t;

static int poll_op(void *c, int64_t t) {
  int r = posh_pipe_poll(((poll_ctx_t *)c)->end, t);
  if (r == 0)
    return t == 0 ? POSH_EAGAIN : POSH_ETIMEDOUT;
  return r;
}

static PyObject *cb_poll(ConnBase *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"timeout", NULL};
  PyObject *tmo = NULL;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", kwlist, &tmo))
    return NULL;
  if (cb_check_readable(self) < 0)
    return NULL;
  int64_t ns = tmo ? pyposh_timeout(tmo) : 0;
  if (ns == -2)
    return NULL;
  poll_ctx_t c = {self->end};
  int r = pyposh_wait(poll_op, &c, ns);
  if (r == 1)
    Py_RETURN_TRUE;
  if (r == POSH_EAGAIN || r == POSH_ETIMEDOUT)
    Py_RETURN_FALSE;
  if (r == POSH_ECLOSED)
    Py_RETURN_TRUE; /* EOF: recv will not block */
  if (r == INT_MIN)
    return NULL;
  return pyposh_error(r);
}

static PyObject *cb_fileno(ConnBase *self, PyObject *unused) {
  if (cb_check(self) < 0)
    return NULL;
  int fd = -1;
  int r = posh_pipe_fileno(self->end, &fd);
  return r < 0 ? pyposh_error(r) : PyLong_FromLong(fd);
}

static PyObject *cb_get_closed(ConnBase *self, void *c) {
  return PyBool_FromLong(self->end == NULL);
}
static PyObject *cb_get_readable(ConnBase *self, void *c) {
  return PyBool_FromLong((self->flags & POSH_PIPE_READABLE) != 0);
}
static PyObject *cb_get_writable(ConnBase *self, void *c) {
  return PyBool_FromLong((self->flags & POSH_PIPE_WRITABLE) != 0);
}

static PyMethodDef cb_methods[] = {
    PYPOSH_INIT_SUBCLASS_METHOD,
    {"_open", (PyCFunction)cb_open, METH_VARARGS, NULL},
    {"_ref", (PyCFunction)cb_ref, METH_NOARGS, NULL},
    {"_bind", (PyCFunction)cb_bind, METH_O, NULL},
    {"_touch", (PyCFunction)cb_touch, METH_NOARGS, NULL},
    {"send_bytes", (PyCFunction)(void (*)(void))cb_send_bytes,
     METH_VARARGS | METH_KEYWORDS, "send_bytes(buf, offset=0, size=None)"},
    {"recv_bytes", (PyCFunction)(void (*)(void))cb_recv_bytes,
     METH_VARARGS | METH_KEYWORDS, "recv_bytes(maxlength=None) -> bytes"},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))cb_recv_bytes_into,
     METH_VARARGS | METH_KEYWORDS, "recv_bytes_into(buf, offset=0) -> n"},
    {"send", (PyCFunction)cb_send, METH_O, "send(obj)"},
    {"recv", (PyCFunction)(void (*)(void))cb_recv,
     METH_VARARGS | METH_KEYWORDS,
     "recv(copy=False) -> obj; EOFError when the peer is gone"},
    {"poll", (PyCFunction)(void (*)(void))cb_poll,
     METH_VARARGS | METH_KEYWORDS, "poll(timeout=0.0) -> bool"},
    {"fileno", (PyCFunction)cb_fileno, METH_NOARGS,
     "fileno() -> eventfd readable while recv would not block"},
    {"close", (PyCFunction)cb_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef cb_getset[] = {
    {"closed", (getter)cb_get_closed, NULL, "True if the handle is closed",
     NULL},
    {"readable", (getter)cb_get_readable, NULL, NULL, NULL},
    {"writable", (getter)cb_get_writable, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ConnBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "posh._posh.ConnBase",
    .tp_basicsize = sizeof(ConnBase),
    .tp_dealloc = (destructor)cb_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = cb_methods,
    .tp_getset = cb_getset,
    .tp_doc = "C base of posh's Connection (one end of a posh Pipe)",
};

static PyMethodDef pipe_functions[] = {
    {"pipe_pair", m_pipe_pair, METH_VARARGS, "pipe_pair(cls, duplex)"},
    {"unbind", m_unbind, METH_O, "unbind(name) -> bool"},
    {NULL, NULL, 0, NULL},
};

int pyposh_pipe_init(PyObject *m) {
  PyObject *mp = PyImport_ImportModule("multiprocessing");
  if (!mp)
    return -1;
  g_BufferTooShort = PyObject_GetAttrString(mp, "BufferTooShort");
  Py_DECREF(mp);
  if (!g_BufferTooShort)
    return -1;
  if (PyType_Ready(&ConnBase_Type) < 0)
    return -1;
  if (pyposh_register_pinned((PyObject *)&ConnBase_Type) < 0)
    return -1;
  if (PyModule_AddObjectRef(m, "ConnBase", (PyObject *)&ConnBase_Type) < 0)
    return -1;
  return PyModule_AddFunctions(m, pipe_functions);
}
