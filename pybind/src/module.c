/* SPDX-License-Identifier: MIT */
/*
 * This file contains the module posh._posh itself: the process-wide default
 * heap (anonymous, created lazily, attached by spawned children through
 * /proc/<pid>/fd/<fd> of a live process holding it), its handle for
 * pickling, options, and error conversion.
 *
 * Why anonymous: a memfd heap has no name in /dev/shm, so nothing can leak
 * there; the kernel frees the memory when the last process holding the fd
 * or a mapping exits, however it exits.
 */
#include "pyposh.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* Process-wide state; protected by the GIL. */
static posh_heap_t *g_heap;       /* default heap, NULL until first use */
static int g_shutdown;            /* detached at exit: no new heap */
static uint64_t g_capacity;       /* option: bytes to reserve (0: default) */
static uint32_t g_max_processes;  /* option: registry slots (0: default) */
static posh_heap_info_t g_info;   /* identity of g_heap */
/* Where the heap can be attached from (pid, fd): the creator, and the
 * process we attached through.  This process itself is always added when a
 * handle is made. */
static pid_t g_creator_pid, g_from_pid;
static int g_creator_fd = -1, g_from_fd = -1;

#define DEFAULT_CAPACITY (4ull << 30) /* 4 GiB, reserved sparsely */

PyObject *pyposh_Error;

PyObject *pyposh_error(int err) {
  switch (err) {
  case POSH_ENOMEM:
    return PyErr_Format(PyExc_MemoryError, "posh: %s", posh_strerror(err));
  case POSH_EINVAL:
  case POSH_ERANGE:
  case POSH_EOVERFLOW:
    return PyErr_Format(PyExc_ValueError, "posh: %s", posh_strerror(err));
  case POSH_ETYPE:
    return PyErr_Format(PyExc_TypeError, "posh: %s", posh_strerror(err));
  case POSH_ETIMEDOUT:
    return PyErr_Format(PyExc_TimeoutError, "posh: %s", posh_strerror(err));
  default: {
    PyObject *args = Py_BuildValue("(is)", -err, posh_strerror(err));
    if (args) {
      PyErr_SetObject(pyposh_Error, args);
      Py_DECREF(args);
    }
    return NULL;
  }
  }
}

int64_t pyposh_timeout(PyObject *timeout) {
  if (timeout == NULL || timeout == Py_None)
    return POSH_FOREVER;
  double s = PyFloat_AsDouble(timeout);
  if (s == -1.0 && PyErr_Occurred())
    return -2;
  if (!(s > 0)) /* negative, zero, NaN */
    return 0;
  if (s > 9.0e9) /* ~285 years: forever */
    return POSH_FOREVER;
  return (int64_t)(s * 1e9);
}

static int remember_identity(void) {
  int r = posh_heap_info(g_heap, &g_info);
  return r;
}

posh_heap_t *pyposh_heap_if_any(void) { return g_heap; }

/* object id -> wrappers open in this process (see pyposh_wrappers) */
static PyObject *g_wrappers;

long pyposh_wrappers(posh_obj_t *obj, int delta) {
  posh_obj_ref_t ref;
  if (posh_obj_ref(obj, &ref) < 0)
    return 0;
  if (!g_wrappers && !(g_wrappers = PyDict_New()))
    return -1;
  PyObject *k = PyLong_FromUnsignedLongLong(ref.id);
  if (!k)
    return -1;
  PyObject *v = PyDict_GetItemWithError(g_wrappers, k);
  long n = (v ? PyLong_AsLong(v) : 0) + delta;
  int r = 0;
  if (n <= 0) {
    n = 0;
    r = v ? PyDict_DelItem(g_wrappers, k) : 0;
  } else if (delta) {
    PyObject *nv = PyLong_FromLong(n);
    r = nv ? PyDict_SetItem(g_wrappers, k, nv) : -1;
    Py_XDECREF(nv);
  }
  Py_DECREF(k);
  return r < 0 || PyErr_Occurred() ? -1 : n;
}

void pyposh_release_if_last(posh_obj_t *obj) {
  int type = posh_obj_type(obj);
  if (type != POSH_OBJ_DICT && type != POSH_OBJ_LIST &&
      type != POSH_OBJ_QUEUE)
    return;
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  posh_obj_info_t info;
  /* A stored value holding a pin of this object (a dict inside a dict, a
   * queue in a message) keeps it and what it holds: only the very last
   * reference releases. */
  if (posh_obj_stat(obj, &info) == 0 && info.processes <= 1 &&
      info.names == 0 && info.pins == 0 && pyposh_wrappers(obj, 0) == 0) {
    if (type == POSH_OBJ_QUEUE)
      pyposh_queue_discard_all(obj);
    else
      pyposh_cont_release(obj);
  }
  PyErr_Clear();
  PyErr_Restore(et, ev, tb);
}

void pyposh_wrapper_close(posh_obj_t *obj) {
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  if (pyposh_wrappers(obj, -1) == 0)
    pyposh_release_if_last(obj);
  PyErr_Clear();
  PyErr_Restore(et, ev, tb);
  posh_obj_close(obj);
}

posh_obj_t *pyposh_handle_of(PyObject *o) {
  posh_obj_t *h = pyposh_queue_handle(o);
  if (!h)
    h = pyposh_cont_handle(o);
  if (!h)
    h = pyposh_sync_handle(o);
  if (!h)
    h = pyposh_objbase_handle(o);
  if (!h)
    h = pyposh_conn_handle(o);
  return h;
}

static void set_detached_error(void) {
  PyErr_SetString(PyExc_RuntimeError,
                  "posh: the heap was detached at interpreter exit");
}

int pyposh_heap_check(void) {
  if (g_heap)
    return 0;
  set_detached_error();
  return -1;
}

int pyposh_obj_open(unsigned long long off, unsigned long long id,
                    uint32_t type, posh_obj_t **obj_out) {
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return -1;
  posh_obj_ref_t ref = {off, id, type, 0};
  int r = posh_obj_open_ref(h, &ref, obj_out);
  if (r < 0) {
    pyposh_error(r);
    return -1;
  }
  return 0;
}

int pyposh_obj_ref(posh_obj_t *obj, unsigned long long *off,
                   unsigned long long *id) {
  posh_obj_ref_t ref;
  int r = posh_obj_ref(obj, &ref);
  if (r < 0) {
    pyposh_error(r);
    return -1;
  }
  *off = ref.off;
  *id = ref.id;
  return 0;
}

posh_heap_t *pyposh_heap(void) {
  if (g_heap)
    return g_heap;
  if (g_shutdown) {
    set_detached_error();
    return NULL;
  }
  posh_heap_options_t opts = {0};
  opts.capacity = g_capacity ? g_capacity : DEFAULT_CAPACITY;
  opts.max_processes = g_max_processes;
  posh_heap_t *h = NULL;
  int r = posh_heap_create(NULL, &opts, &h);
  if (r < 0)
    return (posh_heap_t *)pyposh_error(r);
  g_heap = h;
  r = remember_identity();
  if (r < 0) {
    posh_heap_detach(h);
    g_heap = NULL;
    return (posh_heap_t *)pyposh_error(r);
  }
  g_creator_pid = getpid();
  g_creator_fd = posh_heap_fd(h);
  return g_heap;
}

/* set_options(capacity=0, max_processes=0): before the heap exists. */
static PyObject *m_set_options(PyObject *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"capacity", "max_processes", NULL};
  unsigned long long cap = 0;
  unsigned int maxp = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|KI", kwlist, &cap, &maxp))
    return NULL;
  if (g_heap) {
    PyErr_SetString(PyExc_RuntimeError,
                    "posh: heap options must be set before the heap is "
                    "first used");
    return NULL;
  }
  if (cap && cap < POSH_MIN_CAPACITY) {
    PyErr_Format(PyExc_ValueError, "posh: capacity below the minimum %llu",
                 (unsigned long long)POSH_MIN_CAPACITY);
    return NULL;
  }
  g_capacity = cap;
  g_max_processes = maxp;
  Py_RETURN_NONE;
}

/* heap_exists() -> bool */
static PyObject *m_heap_exists(PyObject *self, PyObject *unused) {
  return PyBool_FromLong(g_heap != NULL);
}

/* heap_info() -> dict (creates the heap). */
static PyObject *m_heap_info(PyObject *self, PyObject *unused) {
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  posh_heap_info_t info;
  int r = posh_heap_info(h, &info);
  if (r < 0)
    return pyposh_error(r);
  posh_heap_stats_t st;
  r = posh_heap_stats(h, &st);
  if (r < 0)
    return pyposh_error(r);
  return Py_BuildValue(
      "{sKsKsKsIsIsKsKsKsIsi}", "capacity", (unsigned long long)info.capacity,
      "page_size", (unsigned long long)info.page_size, "pages",
      (unsigned long long)info.pages, "max_processes", info.max_processes,
      "attached", info.attached, "create_time_ns",
      (unsigned long long)info.create_time_ns, "checksum",
      (unsigned long long)info.checksum, "bytes_in_use",
      (unsigned long long)st.bytes_in_use, "processes", st.processes, "fd",
      posh_heap_fd(h));
}

/* heap_handle() -> (create_time_ns, checksum, ((pid, fd), ...)): what a
 * pickled object carries to find the heap in another process. */
static PyObject *m_heap_handle(PyObject *self, PyObject *unused) {
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  pid_t me = getpid();
  int fd = posh_heap_fd(h);
  PyObject *cands = PyList_New(0);
  if (!cands)
    return NULL;
  pid_t pids[3] = {me, g_creator_pid, g_from_pid};
  int fds[3] = {fd, g_creator_fd, g_from_fd};
  for (int i = 0; i < 3; i++) {
    if (pids[i] <= 0 || fds[i] < 0 || (i > 0 && pids[i] == me))
      continue;
    if (i == 2 && pids[2] == g_creator_pid)
      continue;
    PyObject *t = Py_BuildValue("(ii)", (int)pids[i], fds[i]);
    if (!t || PyList_Append(cands, t) < 0) {
      Py_XDECREF(t);
      Py_DECREF(cands);
      return NULL;
    }
    Py_DECREF(t);
  }
  PyObject *tup = PyList_AsTuple(cands);
  Py_DECREF(cands);
  if (!tup)
    return NULL;
  return Py_BuildValue("(KKN)", (unsigned long long)g_info.create_time_ns,
                       (unsigned long long)g_info.checksum, tup);
}

/* heap_attach(create_time_ns, checksum, ((pid, fd), ...)): make sure the
 * default heap is the one described (attaching it if this process has
 * none).  RuntimeError if this process already uses another heap or no
 * candidate could be attached. */
static PyObject *m_heap_attach(PyObject *self, PyObject *args) {
  unsigned long long ctime, sum;
  PyObject *cands;
  if (!PyArg_ParseTuple(args, "KKO!", &ctime, &sum, &PyTuple_Type, &cands))
    return NULL;
  if (g_heap) {
    if (g_info.create_time_ns == ctime && g_info.checksum == sum)
      Py_RETURN_NONE;
    PyErr_SetString(PyExc_RuntimeError,
                    "posh: object belongs to another posh heap than this "
                    "process's");
    return NULL;
  }
  if (g_shutdown) {
    set_detached_error();
    return NULL;
  }
  int last = POSH_ENOENT;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cands); i++) {
    int pid, fd;
    if (!PyArg_ParseTuple(PyTuple_GET_ITEM(cands, i), "ii", &pid, &fd))
      return NULL;
    if (pid == getpid())
      continue;
    posh_heap_t *h = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS;
    r = posh_heap_attach_pid_fd(pid, fd, &h);
    Py_END_ALLOW_THREADS;
    if (r < 0) {
      last = r;
      continue;
    }
    posh_heap_info_t info;
    r = posh_heap_info(h, &info);
    if (r < 0 || info.create_time_ns != ctime || info.checksum != sum) {
      /* pid's fd now names something else (pid or fd reused) */
      posh_heap_detach(h);
      last = r < 0 ? r : POSH_ENOENT;
      continue;
    }
    g_heap = h;
    g_info = info;
    g_from_pid = pid;
    g_from_fd = fd;
    Py_RETURN_NONE;
  }
  PyErr_Format(PyExc_RuntimeError,
               "posh: cannot attach the heap of this object: no process "
               "holding it is reachable (last error: %s)",
               posh_strerror(last));
  return NULL;
}

int pyposh_nogil_users;

/* shutdown(threads_alive=False) -> bool: detach the default heap at exit;
 * later uses raise.  Not while another thread may still touch the heap
 * (threads_alive: the caller knows of live Python threads; or one is inside
 * a GIL-released heap call): unmapping it under them would crash the exit,
 * so the heap stays attached and this process leaves it as a killed one
 * does (its slot and references are reclaimed when a survivor reaps).
 * True when it detached (or there was nothing to detach). */
static PyObject *m_shutdown(PyObject *self, PyObject *args) {
  int threads_alive = 0;
  if (!PyArg_ParseTuple(args, "|p", &threads_alive))
    return NULL;
  if (!g_heap)
    Py_RETURN_TRUE;
  if (threads_alive || pyposh_nogil_users > 0)
    Py_RETURN_FALSE;
  posh_heap_t *h = g_heap;
  g_heap = NULL;
  g_shutdown = 1;
  posh_heap_detach(h);
  Py_RETURN_TRUE;
}

/* heap_reap() -> int: reclaim the slots and references of attached
 * processes that died (posh_heap_reap); the number reclaimed.  0 when there
 * is no heap yet. */
static PyObject *m_heap_reap(PyObject *self, PyObject *unused) {
  posh_heap_t *h = pyposh_heap_if_any();
  if (!h) {
    if (pyposh_heap_check() < 0)
      return NULL;
    return PyLong_FromLong(0);
  }
  unsigned reaped = 0;
  int r;
  PYPOSH_BEGIN_HEAP_NOGIL;
  r = posh_heap_reap(h, &reaped);
  PYPOSH_END_HEAP_NOGIL;
  if (r < 0)
    return pyposh_error(r);
  return PyLong_FromUnsignedLong(reaped);
}

/* heap_check() -> None or raises with the report. */
static PyObject *m_heap_check(PyObject *self, PyObject *unused) {
  posh_heap_t *h = pyposh_heap();
  if (!h)
    return NULL;
  char report[1024] = "";
  int r = posh_heap_check(h, report, sizeof report);
  if (r < 0) {
    PyErr_Format(PyExc_RuntimeError, "posh heap check: %s", report);
    return NULL;
  }
  Py_RETURN_NONE;
}

static int objects_visit(const posh_obj_info_t *info, void *arg) {
  PyObject *d = Py_BuildValue(
      "{sssKsKsKsIsIsI}", "type", posh_obj_type_name(info->ref.type), "offset",
      (unsigned long long)info->ref.off, "id", (unsigned long long)info->ref.id,
      "size", (unsigned long long)info->size, "processes", info->processes,
      "names", info->names, "pins", info->pins);
  int r = d ? PyList_Append(arg, d) : -1;
  Py_XDECREF(d);
  return r < 0 ? 1 : 0;
}

/* heap_objects() -> [{type, offset, id, size, processes, names, pins}] */
static PyObject *m_heap_objects(PyObject *self, PyObject *unused) {
  posh_heap_t *h = pyposh_heap();
  PyObject *out = h ? PyList_New(0) : NULL;
  if (!out)
    return NULL;
  int r = posh_obj_foreach(h, objects_visit, out);
  if (r != 0) {
    Py_DECREF(out);
    return r < 0 ? pyposh_error(r) : NULL; /* 1: visit raised */
  }
  return out;
}

static PyMethodDef methods[] = {
    {"set_options", (PyCFunction)(void (*)(void))m_set_options,
     METH_VARARGS | METH_KEYWORDS,
     "set_options(capacity=0, max_processes=0): before first use"},
    {"heap_exists", m_heap_exists, METH_NOARGS, NULL},
    {"heap_info", m_heap_info, METH_NOARGS, "a dict describing the heap"},
    {"heap_handle", m_heap_handle, METH_NOARGS, NULL},
    {"heap_attach", m_heap_attach, METH_VARARGS, NULL},
    {"heap_check", m_heap_check, METH_NOARGS, NULL},
    {"heap_objects", m_heap_objects, METH_NOARGS,
     "heap_objects() -> list of dicts: every live shared object"},
    {"shutdown", m_shutdown, METH_VARARGS,
     "shutdown(threads_alive=False) -> bool: detach the heap at exit"},
    {"heap_reap", m_heap_reap, METH_NOARGS,
     "heap_reap() -> int: reclaim what dead processes held"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "posh._posh",
    .m_doc = "C core of posh: heap, codec, synchronisation objects",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__posh(void) {
  PyObject *m = PyModule_Create(&moddef);
  if (!m)
    return NULL;
  pyposh_Error = PyErr_NewException("posh.PoshError", PyExc_OSError, NULL);
  if (!pyposh_Error || PyModule_AddObjectRef(m, "PoshError", pyposh_Error) < 0)
    goto err;
  if (PyModule_AddIntConstant(m, "DEFAULT_CAPACITY",
                              (long long)DEFAULT_CAPACITY) < 0)
    goto err;
  if (pyposh_codec_init(m) < 0 || pyposh_sync_init(m) < 0 ||
      pyposh_objects_init(m) < 0 ||
      pyposh_containers_init(m) < 0 ||
      pyposh_queue_init(m) < 0)
    goto err;
  return m;
err:
  Py_DECREF(m);
  return NULL;
}
