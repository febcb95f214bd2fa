# SPDX-License-Identifier: MIT
"""Contexts: posh.get_context(method) wraps multiprocessing's context of that
start method; processes come from multiprocessing, the shared objects from
posh."""
import multiprocessing

from . import sharedctypes, synchronize
from . import queues, connection


class PoshContext:
    """multiprocessing's context for one start method, with posh's objects.
    Everything posh does not provide is taken from the wrapped context."""

    def __init__(self, mpctx):
        self._ctx = mpctx

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def __repr__(self):
        return "<posh context %r>" % (self._ctx.get_start_method(),)

    @property
    def Process(self):
        return self._ctx.Process

    def get_context(self, method=None):
        return get_context(method)

    def get_start_method(self, allow_none=False):
        return self._ctx.get_start_method(allow_none)

    def Lock(self):
        return synchronize.Lock()

    def RLock(self):
        return synchronize.RLock()

    def Semaphore(self, value=1):
        return synchronize.Semaphore(value)

    def BoundedSemaphore(self, value=1):
        return synchronize.BoundedSemaphore(value)

    def Condition(self, lock=None):
        return synchronize.Condition(lock)

    def Event(self):
        return synchronize.Event()

    def Barrier(self, parties, action=None, timeout=None):
        return synchronize.Barrier(parties, action, timeout)

    def Value(self, typecode_or_type, *args, lock=True):
        return sharedctypes.Value(typecode_or_type, *args, lock=lock)

    def RawValue(self, typecode_or_type, *args):
        return sharedctypes.RawValue(typecode_or_type, *args)

    def Array(self, typecode_or_type, size_or_initializer, *, lock=True):
        return sharedctypes.Array(typecode_or_type, size_or_initializer,
                                  lock=lock)

    def RawArray(self, typecode_or_type, size_or_initializer):
        return sharedctypes.RawArray(typecode_or_type, size_or_initializer)

    def Queue(self, maxsize=0):
        return queues.Queue(maxsize)

    def SimpleQueue(self):
        return queues.SimpleQueue()

    def JoinableQueue(self, maxsize=0):
        return queues.JoinableQueue(maxsize)

    def Pipe(self, duplex=True):
        return connection.Pipe(duplex)

    def Pool(self, processes=None, initializer=None, initargs=(),
             maxtasksperchild=None):
        from .pool import Pool
        return Pool(processes, initializer, initargs, maxtasksperchild,
                    context=self._ctx)

    def Manager(self):
        from .managers import Manager
        return Manager(ctx=self._ctx)


def get_context(method=None):
    """posh's context for a start method ('fork', 'spawn', 'forkserver';
    None: the current default)."""
    return PoshContext(multiprocessing.get_context(method))
