# SPDX-License-Identifier: MIT
"""posh.Pipe(duplex=True) -> (conn1, conn2): Connection objects like
multiprocessing.connection.Connection, over libposh's Pipe object.

send(obj)/recv() (posh's codec: natives without pickle, big buffers such as
numpy arrays out of band in heap blocks received without a copy; recv(copy=
True) for private memory), send_bytes(buf, offset=0, size=None),
recv_bytes(maxlength=None), recv_bytes_into(buf, offset=0), poll(timeout=
0.0), fileno() (an eventfd, readable while recv would not block: usable
with select/poll, multiprocessing.connection.wait and asyncio's
add_reader), close(), closed/readable/writable, context manager.  recv
raises EOFError when the peer end is gone (closed by every holder, or its
processes died) and nothing is left; use of a closed handle raises OSError.

A Connection pickles as a handle (so it can be passed to a spawned Process,
a ProcessPoolExecutor or through a posh Queue); the pickle holds a
reference (a directory name) until it is unpickled, so the sender may close
its copy right away, as with multiprocessing.  A pickle that is never
unpickled keeps the end open (the peer then sees no EOF).
"""
import itertools
import os

from . import _posh
from ._posh import ConnBase

__all__ = ["Connection", "Pipe"]

_seq = itertools.count()


def _rebuild(ref, handle, name):
    _posh.heap_attach(*handle)
    conn = Connection.__new__(Connection)
    conn._open(*ref)
    _posh.unbind(name)   # the pickle's reference: ours now
    return conn


class Connection(ConnBase):
    __slots__ = ("__weakref__",)

    def __reduce__(self):
        ref = self._ref()
        name = "pcp.%d.%d" % (os.getpid(), next(_seq))
        self._bind(name)
        return (_rebuild, (ref, _posh.heap_handle(), name))

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<posh.Connection closed>"
        return "<posh.Connection %s%s>" % ("r" if self.readable else "",
                                            "w" if self.writable else "")


def Pipe(duplex=True):
    """Two connected Connections.  duplex=False: (reader, writer)."""
    return _posh.pipe_pair(Connection, bool(duplex))
