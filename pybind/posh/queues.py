# SPDX-License-Identifier: MIT
"""posh's queues: drop-ins for multiprocessing's Queue, SimpleQueue and
JoinableQueue over libposh's shared Queue object.

Every method is implemented in C (posh._posh.QueueBase); this module adds
pickling (a small handle: the heap's handle and the queue's reference), the
keeping of references across fork, and repr.  There is no feeder thread: a
put is a synchronous write into shared memory, done when it returns, so
close()/join_thread() never wait and a process that exits right after a
put loses nothing.

Values go through posh's codec: natives (None, bool, int, float, str,
bytes, tuples/lists/dicts of them) are encoded without pickle; anything else
with pickle protocol 5, buffers of 64 KiB or more (numpy arrays) out of band
in heap blocks, received without a copy (get(copy=True) for private memory).

posh extensions: get(..., copy=False), shutdown() (close the queue for every
process: puts raise ValueError, gets drain it then raise EOFError),
is_shutdown(), JoinableQueue.join(timeout=None) -> bool, and the byte-level
methods put_bytes/try_put_bytes/put_bytes_timeout/get_bytes/
get_bytes_timeout/get_many_bytes (raw bytes, no codec).
"""

from . import _posh
from ._posh import QueueBase

__all__ = ["Queue", "SimpleQueue", "JoinableQueue", "Pipe"]

_KIND_QUEUE, _KIND_SIMPLE, _KIND_JOINABLE = 0, 1, 2


# Fork needs nothing here: libposh gives a forked child its own reference to
# every object its parent holds, from the fork on (docs/objects.md), so a
# parent may drop a queue or connection right after Process.start().


def _rebuild(cls, ref, handle):
    _posh.heap_attach(*handle)
    obj = cls.__new__(cls)
    obj._open(*ref)
    return obj


class _Base(QueueBase):
    __slots__ = ("__weakref__",)

    def __reduce__(self):
        return (_rebuild, (type(self), self._ref(), _posh.heap_handle()))

    def __repr__(self):
        try:
            n = self.qsize()
        except Exception:
            n = "?"
        return "<posh.%s maxsize=%d qsize=%s%s>" % (
            type(self).__name__, self._maxsize, n,
            " closed" if self._closed else "")


class Queue(_Base):
    """multiprocessing.Queue(maxsize=0): put(obj, block=True, timeout=None)
    (queue.Full), get(block=True, timeout=None, copy=False) (queue.Empty),
    put_nowait, get_nowait, qsize, empty, full, close, join_thread,
    cancel_join_thread.  maxsize <= 0: "unbounded": a put blocks only when
    QUEUE_DEFAULT_SLOTS (65536) messages are queued."""
    __slots__ = ()

    def __init__(self, maxsize=0, *, ctx=None):
        self._create(int(maxsize), _KIND_QUEUE)


class JoinableQueue(_Base):
    """multiprocessing.JoinableQueue(maxsize=0): a Queue whose puts count
    unfinished tasks; task_done() (ValueError when called too many times)
    and join()."""
    __slots__ = ()

    def __init__(self, maxsize=0, *, ctx=None):
        self._create(int(maxsize), _KIND_JOINABLE)

    def task_done(self):
        self._task_done()

    def join(self, timeout=None):
        """Wait until every item put has been task_done()'d.  posh: with a
        timeout, returns False if it passed, True otherwise."""
        r = self._join(timeout)
        return None if timeout is None else r


class SimpleQueue(_Base):
    """multiprocessing.SimpleQueue(): get(), put(obj), empty(), close()
    (OSError "handle is closed" on use after close, as multiprocessing)."""
    __slots__ = ()

    def __init__(self, *, ctx=None):
        self._create(0, _KIND_SIMPLE)


# The Pipe lives in posh/connection.py.
from .connection import Pipe, Connection  # noqa: E402
