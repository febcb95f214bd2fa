# SPDX-License-Identifier: MIT
"""posh's synchronisation objects: drop-ins for multiprocessing's Lock,
RLock, Semaphore, BoundedSemaphore, Condition, Event and Barrier.

Each object lives in the posh heap (the C object of libposh's sync API,
reference-counted through a sync owner: it is freed when the last process
holding it lets go or dies) and pickles as a small handle (heap identity +
the owner's reference), so it can be passed to children under every start
method, through queues, or to pool workers.  As for Value and Array, a
pickle holds no reference: keep the object alive until it is unpickled.
Waits release the GIL.  A lock whose holder died is taken over by the next
acquirer (libposh reports the owner's death; posh marks the lock consistent
and proceeds) -- nothing hangs.
"""
import threading
import time

from . import _posh
from ._posh import SyncBase

__all__ = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition",
           "Event", "Barrier"]


def _rebuild(cls, kind, oref, handle, state):
    _posh.heap_attach(*handle)
    obj = cls.__new__(cls)
    obj._attach(kind, *oref)
    obj._setstate(state)
    return obj


class _Base(SyncBase):
    __slots__ = ("__weakref__",)

    def __reduce__(self):
        return (_rebuild, (type(self), self._kind, self._oref,
                           _posh.heap_handle(), self._getstate()))

    def _getstate(self):
        return None

    def _setstate(self, state):
        pass

    # __enter__ (acquire) and __exit__ (release) come from SyncBase (C).


class Lock(_Base):
    """A non-recursive lock (multiprocessing.Lock).  posh locks are owned:
    only the thread holding it may release it (ValueError otherwise)."""
    __slots__ = ()

    def __init__(self, *, ctx=None):
        self._create(_posh.K_LOCK)

    def locked(self):
        return bool(self._info("locked"))

    def __repr__(self):
        if not self._kind:
            return "<Lock(uninitialised)>"
        if self._info("owned"):
            owner = _owner_name()
        elif self._info("locked"):
            owner = "SomeOtherThread"
        else:
            owner = "None"
        return "<%s(owner=%s)>" % (type(self).__name__, owner)


class RLock(_Base):
    """A recursive lock (multiprocessing.RLock)."""
    __slots__ = ()

    def __init__(self, *, ctx=None):
        self._create(_posh.K_RLOCK)

    def __repr__(self):
        # as multiprocessing's, which says SomeOtherProcess when it can
        # tell: posh says SomeOtherThread for a holder in any other thread
        if not self._kind:
            return "<RLock(uninitialised)>"
        n = self._info("owned")
        if n:
            owner, count = _owner_name(), n
        elif self._info("locked"):
            owner, count = "SomeOtherThread", "nonzero"
        else:
            owner, count = "None", 0
        return "<%s(%s, %s)>" % (type(self).__name__, owner, count)


class Semaphore(_Base):
    """A semaphore (multiprocessing.Semaphore)."""
    __slots__ = ()
    _flags = 0

    def __init__(self, value=1, *, ctx=None):
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._create(_posh.K_SEM, value, self._flags)

    def get_value(self):
        return self._info("value")

    @property
    def _semlock(self):
        # What multiprocessing's own Queue and JoinableQueue read of the
        # semaphores their context gives them (queues.py: full(), qsize(),
        # join()), so that they work with posh's context (the call queue of
        # concurrent.futures' ProcessPoolExecutor(mp_context=...) is one).
        return _SemLockView(self)

    def __repr__(self):
        return "<%s(value=%s)>" % (type(self).__name__, self.get_value())


class _SemLockView:
    """The part of multiprocessing's _multiprocessing.SemLock that
    multiprocessing.queues reads: _is_zero() and _get_value()."""
    __slots__ = ("_sem",)

    def __init__(self, sem):
        self._sem = sem

    def _get_value(self):
        return self._sem.get_value()

    def _is_zero(self):
        return self._sem.get_value() == 0


class BoundedSemaphore(Semaphore):
    """A bounded semaphore: releasing above the initial value raises
    ValueError (multiprocessing.BoundedSemaphore)."""
    __slots__ = ()
    _flags = _posh.SEM_BOUNDED

    def __repr__(self):
        return "<%s(value=%s, maxvalue=%s)>" % (
            type(self).__name__, self.get_value(), self._info("bound"))


class Condition(_Base):
    """A condition variable over a posh Lock or RLock (an RLock of its own
    by default), as multiprocessing.Condition."""
    __slots__ = ("_lock",)

    def __init__(self, lock=None, *, ctx=None):
        if lock is None:
            lock = RLock()
        self._create(_posh.K_COND, 0, 0, lock)
        self._lock = lock

    def _getstate(self):
        # The lock travels as its owner's reference (the Condition's owner
        # keeps it alive meanwhile).
        return (self._lock._kind, self._lock._oref)

    def _setstate(self, state):
        kind, oref = state
        cls = RLock if kind == _posh.K_RLOCK else Lock
        lock = cls.__new__(cls)
        lock._attach(kind, *oref)
        self._lock = lock

    def wait(self, timeout=None):
        return self._wait(timeout)

    def wait_for(self, predicate, timeout=None):
        result = predicate()
        if result:
            return result
        endtime = None if timeout is None else time.monotonic() + timeout
        waittime = None
        while not result:
            if endtime is not None:
                waittime = endtime - time.monotonic()
                if waittime <= 0:
                    break
            self.wait(waittime)
            result = predicate()
        return result

    def notify(self, n=1):
        if n < 0:
            raise ValueError("n must be >= 0")
        self._notify(n)

    def notify_all(self):
        self._notify(-1)

    notifyAll = notify_all

    def __repr__(self):
        return "<%s(%r)>" % (type(self).__name__, self._lock)


class Event(_Base):
    """An event flag (multiprocessing.Event)."""
    __slots__ = ()

    def __init__(self, *, ctx=None):
        self._create(_posh.K_EVENT)

    def is_set(self):
        return bool(self._info("is_set"))

    def set(self):
        self._set()

    def clear(self):
        self._clear()

    def wait(self, timeout=None):
        # True when the flag was set (also if cleared again since).
        return self._wait(timeout)

    def __repr__(self):  # as multiprocessing's
        return "<%s at %#x %s>" % (type(self).__qualname__, id(self),
                                   "set" if self.is_set() else "unset")


class Barrier(_Base):
    """A barrier (multiprocessing.Barrier / threading.Barrier): wait()
    returns the arrival index; threading.BrokenBarrierError when broken
    (aborted, reset while waiting, a waiter timed out or died, or the action
    raised)."""
    __slots__ = ("_action", "_timeout")

    def __init__(self, parties, action=None, timeout=None, *, ctx=None):
        if not isinstance(parties, int) or parties < 1:
            raise ValueError("parties must be > 0")
        self._create(_posh.K_BARRIER, parties)
        self._action = action
        self._timeout = timeout

    def _getstate(self):
        return (self._action, self._timeout)

    def _setstate(self, state):
        self._action, self._timeout = state

    def wait(self, timeout=None):
        if timeout is None:
            timeout = self._timeout
        return self._bwait(timeout, self._action,
                           threading.BrokenBarrierError)

    def reset(self):
        self._reset()

    def abort(self):
        self._abort()

    @property
    def parties(self):
        return self._info("parties")

    @property
    def n_waiting(self):
        return self._info("n_waiting")

    @property
    def broken(self):
        return bool(self._info("broken"))

    def __repr__(self):
        return "<%s(parties=%d, waiting=%d, broken=%s)>" % (
            type(self).__name__, self.parties, self.n_waiting, self.broken)


def _procname():
    import multiprocessing
    return multiprocessing.current_process().name


def _owner_name():
    """The holder's name in a lock's repr, as multiprocessing writes it:
    the process, and the thread unless it is the main one."""
    name = _procname()
    if threading.current_thread().name != "MainThread":
        name += "|" + threading.current_thread().name
    return name
