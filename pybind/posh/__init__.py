# SPDX-License-Identifier: MIT
"""posh: objects shared between processes through a libposh heap, as
drop-ins for multiprocessing's.

    import posh as multiprocessing

works for Process, current_process, cpu_count, get_context,
set_start_method and the synchronisation objects (Lock, RLock, Semaphore,
BoundedSemaphore, Condition, Event, Barrier) and Value, Array,
RawValue, RawArray, which are posh's own: they live
in a shared heap, pickle as small handles and survive the death of any
process.  See docs/python.md.

The heap: an anonymous (memfd) heap created on first use, reserving
POSH_HEAP_CAPACITY bytes sparsely (default 4 GiB; suffixes K, M, G, T).
Spawned and forkserver children attach to it through /proc/<pid>/fd of a
live process holding it; the kernel frees it when the last one exits, so
nothing is ever left in /dev/shm.
"""
import _thread
import os as _os
from multiprocessing import util as _mp_util

from . import _posh
from ._posh import PoshError, HeapBuffer, dumps, loads
from .synchronize import (Lock, RLock, Semaphore, BoundedSemaphore,
                          Condition, Event, Barrier)
from .sharedctypes import Value, RawValue, Array, RawArray
from .containers import SharedDict as dict, SharedList as list  # noqa: A001
from .queues import Queue, SimpleQueue, JoinableQueue, Pipe
from .context import get_context, PoshContext
from .pool import Pool, WorkerLostError, PoolTerminatedError
from .managers import Manager, SyncManager
from . import util, reduction  # noqa: F401  (multiprocessing.util, ...)

# Re-exported from multiprocessing, so `import posh as multiprocessing`
# works for them.
from multiprocessing import (Process, current_process, parent_process,
                             active_children, cpu_count, set_start_method,
                             get_start_method, get_all_start_methods,
                             freeze_support, set_executable,
                             set_forkserver_preload, AuthenticationError,
                             BufferTooShort, ProcessError, TimeoutError,
                             log_to_stderr, get_logger,
                             allow_connection_pickling, reducer)

__version__ = "0.1.0"

__all__ = [
    "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event",
    "Barrier", "Value", "RawValue", "Array", "RawArray",
    "Queue", "SimpleQueue", "JoinableQueue", "Pipe", "Process", "current_process", "parent_process",
    "active_children", "cpu_count", "set_start_method", "get_start_method",
    "get_all_start_methods", "get_context", "freeze_support",
    "set_executable", "set_forkserver_preload", "set_heap_options",
    "heap_info", "heap_objects", "heap_reap", "dumps", "loads", "PoshError", "HeapBuffer",
    "Pool", "WorkerLostError", "PoolTerminatedError", "Manager", "SyncManager",
    "AuthenticationError", "BufferTooShort", "ProcessError", "TimeoutError",
    "log_to_stderr", "get_logger", "allow_connection_pickling", "reducer",
]

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_size(text):
    t = text.strip().upper().rstrip("B").rstrip("I")
    num, suf = (t[:-1], t[-1]) if t and t[-1] in _SUFFIX else (t, "")
    return int(float(num) * _SUFFIX[suf])


def set_heap_options(capacity=None, max_processes=None):
    """Set the default heap's reserved capacity in bytes (sparse: untouched
    pages cost nothing) and its number of process slots.  Only before the
    heap is first used (RuntimeError after)."""
    _posh.set_options(capacity=int(capacity or 0),
                      max_processes=int(max_processes or 0))


def heap_info():
    """A dict describing the default heap (creates it)."""
    return _posh.heap_info()


def heap_objects():
    """A list with a dict for every live shared object of the default heap
    (a snapshot, as `posh-stat` prints it): type ("queue", "dict", "sync",
    ...), offset, id, size, and its references: processes holding a handle,
    names, and pins (references held by queued messages and stored
    values)."""
    return _posh.heap_objects()


def _init_from_env():
    cap = _os.environ.get("POSH_HEAP_CAPACITY")
    if cap:
        try:
            size = _parse_size(cap)
        except (ValueError, KeyError):
            raise ValueError("POSH_HEAP_CAPACITY=%r: not a size" % cap)
        _posh.set_options(capacity=size)


def heap_reap():
    """Reclaim the process slots and object references of processes that
    died attached to the default heap (killed, or left through os._exit);
    returns how many.  Survivors also do it by themselves when they attach,
    when the heap runs short, and Pool does it when its workers are gone."""
    return _posh.heap_reap()


# _thread._count() in a forked child still counts the parent's threads
# (CPython 3.11 does not reset it), which never run there: the count taken
# right after the fork is subtracted.  Regression: every child of a parent
# with a thread (a Pool's, multiprocessing's resource sharer) skipped its
# detach, and its references stayed until it was reaped.
_parent_threads = 0


def _count_parent_threads():
    global _parent_threads
    _parent_threads = _thread._count()


_os.register_at_fork(after_in_child=_count_parent_threads)


def _threads_alive():
    """Threads besides the main one that run in this process."""
    return _thread._count() - _parent_threads


def _detach_at_exit():
    # Detach (drop our references, free our slot) unless another thread may
    # still use the heap: a daemon thread blocked in a get or a wait keeps
    # touching it until the interpreter is gone, and unmapping it under the
    # thread would crash the exit.  Then we leave as a killed process does
    # and the survivors reap us.
    _posh.shutdown(_threads_alive() > 0)


def _register_detach(_=None):
    # From multiprocessing's exit processing (util._exit_function, which it
    # runs at atexit, and which the children of its fork and forkserver
    # start methods run before os._exit skips atexit), last: after the
    # finalizers of pools (which terminate a running pool) and queues, and
    # after the daemonic children were killed.
    _mp_util.Finalize(None, _detach_at_exit, exitpriority=-100)


_init_from_env()
_register_detach()
# A multiprocessing child's finalizer registry starts empty.  (A plain
# os.fork child inherits the registry and util's atexit handler.)
_mp_util.register_after_fork(_detach_at_exit, _register_detach)
