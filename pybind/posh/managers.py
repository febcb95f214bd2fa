# SPDX-License-Identifier: MIT
"""posh.Manager: a drop-in for multiprocessing.Manager() / SyncManager with
no server process.

Every object a manager hands out lives in libposh shared memory, so an
operation on it is a shared-memory access instead of a socket round trip
to a server.  The objects are posh's own (posh.dict, posh.list,
posh.Queue, ...); they pickle as small handles, so they can be passed to
worker processes exactly as multiprocessing's proxies can.

What stays as in multiprocessing: the factory methods and their
signatures, start()/shutdown()/join(), the context manager, the proxy
behaviour of the returned objects (Value has .value/.get()/.set() and
holds any picklable object, its typecode only recorded; Array supports
indexing and len(); Queue is joinable, as queue.Queue: task_done()/join();
Namespace has attributes).

What differs: there is no server, so address/authkey are accepted and
ignored, connect() has nothing to do, start()'s initializer runs in the
calling process, and register() of custom types is not supported (it
raises NotImplementedError: there is no server process to host them).
After shutdown() the manager's factories raise; objects already handed out
stay usable until their last handle is closed (libposh counts references
across processes).
"""

import threading

__all__ = ["SyncManager", "BaseManager", "Namespace", "ValueProxy",
           "ArrayProxy", "Manager"]

_INITIAL, _STARTED, _SHUTDOWN = 0, 1, 2


class Namespace:
    """Attribute namespace backed by a posh.dict (string keys)."""

    # _d: the shared dict; __dict__: the attributes whose names start with
    # '_', which stay local to this object, as on multiprocessing's
    # NamespaceProxy.
    __slots__ = ("_d", "__dict__")

    def __init__(self, _d=None, **kwds):
        from posh import dict as shared_dict
        object.__setattr__(self, "_d", _d if _d is not None else shared_dict())
        for k, v in kwds.items():
            self._d[k] = v

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._d[name]
        except KeyError:
            raise AttributeError(
                "'Namespace' object has no attribute %r" % name) from None

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)  # local, not shared
            return
        self._d[name] = value

    def __delattr__(self, name):
        if name.startswith("_"):
            object.__delattr__(self, name)
            return
        try:
            del self._d[name]
        except KeyError:
            raise AttributeError(name) from None

    def __reduce__(self):
        return (_rebuild_namespace, (self._d,))

    def __repr__(self):
        items = sorted(self._d.items())
        return "Namespace(%s)" % ", ".join("%s=%r" % kv for kv in items)


def _rebuild_namespace(d):
    return Namespace(_d=d)


class ValueProxy:
    """multiprocessing.managers.ValueProxy: the manager's Value holds any
    picklable object (the typecode is only recorded, as multiprocessing's
    does), kept in a one-item posh.list so every process sees the same
    value; get()/set() are single atomic operations on it."""

    __slots__ = ("_typecode", "_cell")

    def __init__(self, typecode, cell):
        self._typecode = typecode
        self._cell = cell

    @property
    def typecode(self):
        """The typecode given to Manager().Value (not enforced)."""
        return self._typecode

    def get(self):
        return self._cell[0]

    def set(self, value):
        self._cell[0] = value

    value = property(get, set)

    def __reduce__(self):
        return (ValueProxy, (self._typecode, self._cell))

    def __repr__(self):
        return "%s(%r, %r)" % (type(self).__name__, self._typecode,
                               self._cell[0])


class ArrayProxy:
    """multiprocessing.managers.ArrayProxy over a posh Array."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    def __len__(self):
        return len(self._a)

    def __getitem__(self, i):
        return self._a[i]

    def __setitem__(self, i, value):
        self._a[i] = value

    def __iter__(self):
        return iter(self._a[:])

    def __reduce__(self):
        return (ArrayProxy, (self._a,))

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self._a[:])


class BaseManager:
    """Accepts multiprocessing.managers.BaseManager's constructor arguments;
    see the module doc for what they mean without a server."""

    def __init__(self, address=None, authkey=None, serializer="pickle",
                 ctx=None, *, shutdown_timeout=1.0):
        if serializer not in ("pickle", "xmlrpclib"):
            raise ValueError("unknown serializer %r" % (serializer,))
        self._address = address
        self._authkey = authkey
        self._ctx = ctx
        self._state = _INITIAL
        self._lock = threading.Lock()

    @property
    def address(self):
        return self._address

    def start(self, initializer=None, initargs=()):
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        with self._lock:
            if self._state == _STARTED:
                raise RuntimeError("Already started manager")
            if self._state == _SHUTDOWN:
                raise RuntimeError("Manager has shut down")
            self._state = _STARTED
        if initializer is not None:
            initializer(*initargs)

    def connect(self):
        with self._lock:
            if self._state == _SHUTDOWN:
                raise RuntimeError("Manager has shut down")
            self._state = _STARTED

    def get_server(self):
        raise NotImplementedError("posh managers have no server process")

    def shutdown(self):
        with self._lock:
            self._state = _SHUTDOWN

    def join(self, timeout=None):
        pass

    @classmethod
    def register(cls, typeid, callable=None, proxytype=None, exposed=None,
                 method_to_typeid=None, create_method=True):
        raise NotImplementedError(
            "posh.Manager has no server process to host custom types; share "
            "data through posh.dict/posh.list/posh.Value or pass objects "
            "through a posh.Queue instead")

    def __enter__(self):
        if self._state == _INITIAL:
            self.start()
        elif self._state == _SHUTDOWN:
            raise RuntimeError("Manager has shut down")
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def _check(self):
        if self._state == _SHUTDOWN:
            raise RuntimeError("Manager has shut down")
        if self._state == _INITIAL:
            raise RuntimeError("Manager has not been started")


class SyncManager(BaseManager):
    """multiprocessing.managers.SyncManager with every object in shared
    memory."""

    def dict(self, /, *args, **kwds):
        self._check()
        import posh
        d = posh.dict()
        if args or kwds:
            d.update(*args, **kwds)
        return d

    def list(self, sequence=()):
        self._check()
        import posh
        return posh.list(sequence)

    def Namespace(self, **kwds):
        self._check()
        return Namespace(**kwds)

    def Queue(self, maxsize=0):
        # multiprocessing's is a proxy of a queue.Queue, which has
        # task_done() and join(): a posh.JoinableQueue is the match.
        self._check()
        import posh
        return posh.JoinableQueue(maxsize)

    def JoinableQueue(self, maxsize=0):
        self._check()
        import posh
        return posh.JoinableQueue(maxsize)

    def Lock(self):
        self._check()
        import posh
        return posh.Lock()

    def RLock(self):
        self._check()
        import posh
        return posh.RLock()

    def Semaphore(self, value=1):
        self._check()
        import posh
        return posh.Semaphore(value)

    def BoundedSemaphore(self, value=1):
        self._check()
        import posh
        return posh.BoundedSemaphore(value)

    def Condition(self, lock=None):
        self._check()
        import posh
        return posh.Condition(lock)

    def Event(self):
        self._check()
        import posh
        return posh.Event()

    def Barrier(self, parties, action=None, timeout=None):
        self._check()
        import posh
        return posh.Barrier(parties, action, timeout)

    def Value(self, typecode, value, lock=True):
        # As multiprocessing: any picklable value, the typecode is only
        # recorded, lock is accepted and ignored.
        self._check()
        import posh
        return ValueProxy(typecode, posh.list([value]))

    def Array(self, typecode, sequence, lock=True):
        self._check()
        import posh
        return ArrayProxy(posh.Array(typecode, sequence, lock=lock))

    def Pool(self, processes=None, initializer=None, initargs=(),
             maxtasksperchild=None, context=None):
        self._check()
        import posh
        return posh.Pool(processes, initializer, initargs, maxtasksperchild,
                         context)


def Manager(*, ctx=None):
    """Return a started SyncManager (as multiprocessing.Manager())."""
    m = SyncManager(ctx=ctx)
    m.start()
    return m
