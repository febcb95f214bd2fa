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

import os
import queue as _queue
import threading
import weakref
from multiprocessing import util as _mp_util

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
    (OSError "handle is closed" on use after close, as multiprocessing).

    _reader: multiprocessing's SimpleQueue is a pipe, and
    concurrent.futures' ProcessPoolExecutor waits on its read end
    (result_queue._reader, with multiprocessing.connection.wait) and reads
    from it.  posh's has no file descriptor, so the first use of _reader in
    a process starts a thread there that moves every message, still
    encoded, from the queue into a local pipe; _reader waits on that pipe
    and decodes what it reads (recv, poll, fileno).  From then on this
    process takes every message (concurrent.futures has one consumer).
    close() stops the thread."""
    __slots__ = ()

    def __init__(self, *, ctx=None):
        self._create(0, _KIND_SIMPLE)

    @property
    def _reader(self):
        with _bridges_lock:
            b = _bridges.get(self)
            if b is None or b.pid != os.getpid():
                b = _bridges[self] = _PipeBridge(self)
        return b

    def close(self):
        b = _bridges.pop(self, None)
        if b is not None and b.pid == os.getpid():
            b.close()
        super().close()


class _PipeBridge:
    """A SimpleQueue's reader with a file descriptor: a thread moves the
    encoded messages into a local pipe; recv() decodes them (in the caller,
    so that an error while unpickling is raised there)."""

    def __init__(self, q):
        import multiprocessing.connection as mpc
        self.pid = os.getpid()
        self._pipe_r, self._pipe_w = mpc.Pipe(duplex=False)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(q,),
                                        name="posh-SimpleQueue-reader",
                                        daemon=True)
        self._thread.start()
        # stopped before posh detaches at exit (priority -100)
        _mp_util.Finalize(self, _PipeBridge.close, args=(self,),
                          exitpriority=10)

    def _run(self, q):
        while not self._stopping.is_set():
            try:
                data = q.get_bytes_timeout(0.1)
            except (OSError, EOFError, RuntimeError):
                break  # closed or shut down here, or the heap detached
            if data is None:
                continue
            try:
                self._pipe_w.send_bytes(data)
            except OSError:
                _posh.discard(data)
                break

    @property
    def closed(self):
        return self._pipe_r.closed

    def fileno(self):
        return self._pipe_r.fileno()

    def poll(self, timeout=0.0):
        return self._pipe_r.poll(timeout)

    def recv_bytes(self):
        """The next message, encoded (posh.loads decodes it once)."""
        return self._pipe_r.recv_bytes()

    def recv(self):
        return _posh.loads(self._pipe_r.recv_bytes())

    def close(self):
        if self._pipe_r.closed:
            return
        self._stopping.set()
        # What was moved and not read is discarded (its heap blocks and
        # pins), also while the thread may be blocked writing a message
        # bigger than the pipe's buffer.
        while self._thread.is_alive() and \
                self._thread is not threading.current_thread():
            self._discard_pending()
            self._thread.join(0.05)
        self._pipe_w.close()
        self._discard_pending()
        self._pipe_r.close()

    def _discard_pending(self):
        while self._pipe_r.poll(0):
            try:
                _posh.discard(self._pipe_r.recv_bytes())
            except EOFError:
                break


_bridges = weakref.WeakKeyDictionary()  # SimpleQueue -> _PipeBridge
_bridges_lock = threading.Lock()


# The Pipe lives in posh/connection.py.
from .connection import Pipe, Connection  # noqa: E402
