# SPDX-License-Identifier: MIT
"""posh.Pool: a drop-in for multiprocessing.Pool whose tasks and results
travel through libposh shared-memory queues.

Differences from multiprocessing.Pool that users can see:

* A worker killed by a signal (or the OOM killer) never hangs the pool: the
  task it was running fails with :class:`WorkerLostError`, and the worker is
  replaced.
* ``terminate()`` fails every result still pending with
  :class:`PoolTerminatedError` instead of leaving ``get()`` waiting forever.
* Tasks are put on the queue by the calling thread (no task-handler
  thread); when the queue is full they wait in a backlog that a feeder
  thread drains, so ``apply_async`` never blocks and callbacks may submit
  more work.

How a lost task is found: every worker owns a slot in a shared int64 array
and stores there the sequence number of the task it is running (the first
field of the task message, stored right after decoding it), and -1 when
idle.  When a worker dies with a sequence number in its slot,
that task failed.  A worker killed in the few instructions between taking
a task and recording it leaves no trace; for that case, after an
unexplained death, the pool watches for quiescence (both queues empty,
every live worker idle, the same pending set twice in a row 100 ms apart)
and fails the tasks still pending then.
"""

import collections
import itertools
import os
import pickle
import threading
import time
import traceback
import warnings
import weakref
from multiprocessing import TimeoutError
from multiprocessing import util as _mp_util
from multiprocessing.connection import wait as _wait_sentinels

from ._posh import discard, dumps, heap_reap, loads

__all__ = ["Pool", "AsyncResult", "ApplyResult", "MapResult", "IMapIterator",
           "IMapUnorderedIterator", "WorkerLostError", "PoolTerminatedError",
           "MaybeEncodingError", "RemoteTraceback"]

# multiprocessing.pool's state names: code (and CPython's tests) that peeks
# at pool._state compares with them.
from multiprocessing.pool import RUN, CLOSE, TERMINATE  # noqa: E402
_STOP = dumps(None)  # tells a worker (or the result thread) to stop
_POLL = 0.1          # seconds between housekeeping rounds
_INLINE_TASKS = 100000  # imap submits sized iterables up to this inline
_FUNC_CACHE = 256       # pickled functions remembered (parent and workers)


class WorkerLostError(RuntimeError):
    """The worker process running a task died (killed by a signal, the OOM
    killer, os._exit...) before it returned a result."""


class PoolTerminatedError(RuntimeError):
    """The pool was terminated before the task finished."""


# multiprocessing.pool's own, so `except multiprocessing.pool.X` works.
from multiprocessing.pool import RemoteTraceback, MaybeEncodingError  # noqa


class _ExceptionWithTraceback:
    def __init__(self, exc, tb):
        tb = "".join(traceback.format_exception(type(exc), exc, tb))
        self.exc = exc
        self.tb = '\n"""\n%s"""' % tb

    def __reduce__(self):
        return _rebuild_exc, (self.exc, self.tb)


def _rebuild_exc(exc, tb):
    exc.__cause__ = RemoteTraceback(tb)
    return exc


def _mapstar(args):
    return list(map(*args))


def _starmapstar(args):
    return list(itertools.starmap(args[0], args[1]))


# --------------------------------------------------------------------------
# The worker process.
# --------------------------------------------------------------------------
def _worker(taskq, resultq, busy, slot, initializer, initargs, maxtasks):
    if initializer is not None:
        initializer(*initargs)
    done = 0
    get, put = taskq.get_bytes, resultq.put_bytes
    functions = {}  # pickled function -> function (see Pool._pickled)
    while maxtasks is None or done < maxtasks:
        task = loads(get())
        if task is None:
            break
        seq, job, i, fbytes, args, kwds = task
        busy[slot] = seq  # first thing: the task is ours (see module doc)
        task = None
        try:
            func = functions.get(fbytes)
            if func is None:
                if len(functions) >= _FUNC_CACHE:
                    functions.clear()
                func = functions[fbytes] = pickle.loads(fbytes)
            result = (True, func(*args, **kwds))
        except Exception as e:
            result = (False, _ExceptionWithTraceback(e, e.__traceback__))
        try:
            data = dumps((seq, job, i) + result)
        except Exception as e:
            data = dumps((seq, job, i, False, MaybeEncodingError(e, result[1])))
        func = args = kwds = result = None
        put(data)
        busy[slot] = -1
        done += 1


# --------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------
class ApplyResult:
    """The result of apply_async (multiprocessing.pool.AsyncResult)."""

    __slots__ = ("_pool", "_job", "_callback", "_error_callback", "_ready",
                 "_success", "_value", "__weakref__")

    def __init__(self, pool, callback, error_callback):
        self._pool = pool
        self._job = next(pool._job_counter)
        self._callback = callback
        self._error_callback = error_callback
        self._ready = False
        pool._cache[self._job] = self

    def ready(self):
        return self._ready

    def successful(self):
        if not self._ready:
            raise ValueError("{0!r} not ready".format(self))
        return self._success

    def wait(self, timeout=None):
        if self._ready:
            return
        self._pool._wait_until(lambda: self._ready, timeout)

    def get(self, timeout=None):
        self.wait(timeout)
        if not self._ready:
            raise TimeoutError
        if self._success:
            return self._value
        raise self._value

    def _set(self, i, obj):
        self._success, self._value = obj
        self._finish()

    def _finish(self):
        try:
            if self._success:
                if self._callback:
                    self._callback(self._value)
            elif self._error_callback:
                self._error_callback(self._value)
        finally:
            self._ready = True
            self._pool._cache.pop(self._job, None)
            # Waiters are woken by whoever delivered the result, once per
            # batch (Pool._handle_results, Pool._fail_tasks).

    # Called by the pool for results that will never come.
    def _fail(self, i, exc):
        if not self._ready:
            self._set(i, (False, exc))


AsyncResult = ApplyResult


class MapResult(ApplyResult):
    __slots__ = ("_chunksize", "_number_left", "_length")

    def __init__(self, pool, chunksize, length, callback, error_callback):
        super().__init__(pool, callback, error_callback)
        self._success = True
        self._value = [None] * length
        self._chunksize = chunksize
        self._length = length
        if chunksize <= 0:
            self._number_left = 0
            self._ready = True
            pool._cache.pop(self._job, None)
            if callback:
                callback(self._value)
        else:
            self._number_left = length // chunksize + bool(length % chunksize)

    def _set(self, i, success_result):
        self._number_left -= 1
        success, result = success_result
        if success and self._success:
            self._value[i * self._chunksize:(i + 1) * self._chunksize] = result
            if self._number_left == 0:
                self._finish()
        else:
            if self._success:
                self._success = False
                self._value = result
                self._finish()
            elif self._number_left == 0 and not self._ready:
                self._finish()

    def _finish(self):
        if self._ready:
            return
        super()._finish()

    def _fail(self, i, exc):
        self._set(i, (False, exc))


class IMapIterator:
    """Iterator of imap (results in order)."""

    def __init__(self, pool):
        self._pool = pool
        self._job = next(pool._job_counter)
        self._items = collections.deque()
        self._index = 0
        self._length = None
        self._unsorted = {}
        pool._cache[self._job] = self

    def __iter__(self):
        return self

    def next(self, timeout=None):
        pool = self._pool
        if not self._items:
            if self._length is not None and self._index == self._length:
                self._done()
                raise StopIteration from None
            pool._wait_until(
                lambda: self._items or
                (self._length is not None and self._index == self._length),
                timeout)
            if not self._items:
                if self._length is not None and self._index == self._length:
                    self._done()
                    raise StopIteration from None
                raise TimeoutError from None
        success, value = self._items.popleft()
        if success:
            return value
        raise value

    __next__ = next

    def _done(self):
        self._pool._cache.pop(self._job, None)

    def _set(self, i, obj):
        if self._index == i:
            self._items.append(obj)
            self._index += 1
            while self._index in self._unsorted:
                self._items.append(self._unsorted.pop(self._index))
                self._index += 1
        else:
            self._unsorted[i] = obj

    def _fail(self, i, exc):
        self._set(i, (False, exc))

    def _set_length(self, length):
        self._length = length
        self._pool._notify()


class IMapUnorderedIterator(IMapIterator):
    def _set(self, i, obj):
        self._items.append(obj)
        self._index += 1


class _ChunkedIMap:
    """Adapter for imap with chunksize > 1: flattens the chunks."""

    def __init__(self, it):
        self._it = it
        self._chunk = iter(())

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            try:
                return next(self._chunk)
            except StopIteration:
                self._chunk = iter(next(self._it))

    def next(self, timeout=None):
        while True:
            try:
                return next(self._chunk)
            except StopIteration:
                self._chunk = iter(self._it.next(timeout))


# --------------------------------------------------------------------------
# The pool.
# --------------------------------------------------------------------------
class Pool:
    """A process pool with multiprocessing.Pool's API (see the module doc
    for what differs)."""

    # Where queues and the worker table come from (a class with two static
    # methods, so tests can substitute them).
    _backend = None

    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, context=None):
        if processes is None:
            processes = os.cpu_count() or 1
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
                not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        import multiprocessing
        self._ctx = context or multiprocessing.get_context()
        backend = self._backend or _PoshBackend
        self._processes = processes
        self._initializer = initializer
        self._initargs = initargs
        self._maxtasks = maxtasksperchild
        self._taskq = backend.make_queue()
        self._resultq = backend.make_queue()
        self._busy = backend.make_busy(processes)
        self._state = RUN
        self._cache = {}
        self._job_counter = itertools.count()
        self._seq = itertools.count(1)
        self._functions = {}     # function -> its pickle (_pickled)
        # seq -> (job, i): put, no result yet.  Single dict operations are
        # atomic under the GIL; _lock serialises the multi-step readers.
        self._pending = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0        # threads in _wait_until (_cond)
        self._backlog = collections.deque()  # task messages waiting for room
        self._feeder = None
        # Serialises _submit's registering and queueing of a task with
        # terminate(): no task is queued once terminate() has begun, so the
        # ones it drains are all there are.
        self._submit_lock = threading.Lock()
        self._feeders = 0        # imap feeders still taking from an iterable
        # Held while results are delivered (_set, _fail: callbacks run under
        # it), by the result thread and by the threads that fail tasks
        # (pickling errors, lost workers, terminate): a result's bookkeeping
        # is not thread-safe on its own.  Reentrant: a callback may submit.
        self._deliver_lock = threading.RLock()
        self._workers = [None] * processes   # slot -> Process
        self._suspect_loss = False
        self._quiet_seen = None
        for slot in range(processes):
            self._start_worker(slot)
        self._result_thread = threading.Thread(
            target=self._handle_results, name="posh.Pool results", daemon=True)
        self._result_thread.start()
        self._worker_thread = threading.Thread(
            target=self._handle_workers, name="posh.Pool workers", daemon=True)
        self._worker_thread.start()
        # A pool still running at exit is terminated before multiprocessing
        # kills the daemonic children (priority 15, as multiprocessing's
        # pool): else its worker thread would start replacements for the
        # killed workers, which outlived the program.  Through a weak
        # reference: the finalizer must not keep the pool alive.
        self._exit_finalizer = _mp_util.Finalize(
            self, _terminate_at_exit, args=(weakref.ref(self),),
            exitpriority=15)

    # ---- workers -------------------------------------------------------
    def _start_worker(self, slot):
        self._busy[slot] = -1
        p = self._ctx.Process(
            target=_worker,
            args=(self._taskq, self._resultq, self._busy, slot,
                  self._initializer, self._initargs, self._maxtasks))
        p.name = p.name.replace("Process", "PoshPoolWorker")
        p.daemon = True
        p.start()
        self._workers[slot] = p

    def _handle_workers(self):
        while True:
            workers = [p for p in self._workers if p is not None]
            if self._state == TERMINATE:
                if not workers:
                    return
                # terminate() may have run while a replacement was starting:
                # make sure every worker is told (SIGTERM is idempotent).
                for p in workers:
                    if p.exitcode is None:
                        p.terminate()
            _wait_sentinels([p.sentinel for p in workers], timeout=_POLL)
            killed = False
            for slot, p in enumerate(self._workers):
                if p is None or p.exitcode is None:
                    continue
                p.join()
                # A worker that returns detaches from the heap at its exit;
                # one killed (or gone through os._exit) leaves its slot and
                # object references to be reaped.
                killed = killed or p.exitcode != 0
                seq = self._busy[slot]
                self._workers[slot] = None
                if seq > 0 and self._state == TERMINATE:
                    # terminate() killed it: the task was terminated, not lost.
                    self._fail_tasks([seq], PoolTerminatedError(
                        "the pool was terminated"))
                elif seq > 0:
                    self._fail_tasks([seq], WorkerLostError(
                        "worker process %d died (exit code %s) while running "
                        "this task" % (p.pid, p.exitcode)))
                elif p.exitcode != 0:
                    self._suspect_loss = True  # may have died mid-take
                # Not at interpreter exit: multiprocessing's exit handler
                # kills the daemonic workers it knows of, and a replacement
                # started after that would outlive us.
                if not _mp_util.is_exiting() and (
                        self._state == RUN or (self._state == CLOSE and
                                               self._work_left())):
                    self._start_worker(slot)
            if killed:
                heap_reap()
            if self._suspect_loss:
                self._check_quiescence()
            if self._state == CLOSE and not self._work_left() and \
                    all(p is None for p in self._workers):
                return

    def _work_left(self):
        """Tasks pending, or still to come from an imap feeder (close() lets
        those finish, as multiprocessing's does).  The feeders are read
        first: a feeder submits all its tasks before it stops counting."""
        return bool(self._feeders or self._pending)

    def _check_quiescence(self):
        """Fail the pending tasks when nothing can be running them any more
        (see the module doc)."""
        with self._lock:
            pending = frozenset(self._pending)
        busy = any(p is not None and self._busy[s] > 0
                   for s, p in enumerate(self._workers))
        quiet = (pending and not busy and not self._backlog and
                 self._taskq.qsize() == 0 and self._resultq.qsize() == 0)
        if not quiet:
            self._quiet_seen = None
            if not pending:
                self._suspect_loss = False
            return
        if self._quiet_seen != pending:
            self._quiet_seen = pending
            return
        self._quiet_seen = None
        self._suspect_loss = False
        self._fail_tasks(list(pending), WorkerLostError(
            "a worker process died while taking this task"))

    def _fail_tasks(self, seqs, exc):
        lost = []
        with self._lock:
            for seq in seqs:
                where = self._pending.pop(seq, None)
                if where is not None:
                    lost.append(where)
        with self._deliver_lock:
            for job, i in lost:
                obj = self._cache.get(job)
                if obj is not None:
                    obj._fail(i, exc)
        self._notify()

    # ---- results -------------------------------------------------------
    def _handle_results(self):
        # Results are taken in batches (all that are queued, after waiting
        # for the first) and waiters are woken once per batch: a thread
        # wake-up costs more than decoding a result.
        get_many = self._resultq.get_many_bytes
        cache, pending = self._cache, self._pending
        stop = False
        while not stop:
            msgs = get_many(256)
            with self._deliver_lock:
                for msg in msgs:
                    if msg == _STOP:
                        stop = True
                        break
                    seq, job, i, ok, value = loads(msg)
                    if pending.pop(seq, None) is None:
                        continue  # already failed (worker lost) or terminated
                    obj = cache.get(job)
                    if obj is not None:
                        try:
                            obj._set(i, (ok, value))
                        except Exception:  # a callback raised: as multiprocessing
                            traceback.print_exc()
            msgs = msg = value = obj = None
            self._notify()

    def _notify(self):
        if self._waiters:
            with self._cond:
                self._cond.notify_all()

    def _wait_until(self, predicate, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                while not predicate():
                    if deadline is None:
                        self._cond.wait(1.0)
                    else:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return
                        self._cond.wait(min(left, 1.0))
            finally:
                self._waiters -= 1

    # ---- submitting ----------------------------------------------------
    def _check_running(self):
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _pickled(self, func):
        """func pickled, once per function: pickling a function by
        reference costs ~1.6 us each way, more than the rest of a small
        task's message; workers keep the reverse map."""
        try:
            return self._functions[func]
        except (KeyError, TypeError):
            pass
        data = pickle.dumps(func, protocol=5)
        try:
            if len(self._functions) >= _FUNC_CACHE:
                self._functions.clear()
            self._functions[func] = data
        except TypeError:
            pass  # unhashable callable: pickled every time
        return data

    def _submit(self, job, i, func, args, kwds):
        seq = next(self._seq)
        try:
            msg = dumps((seq, job, i, self._pickled(func), args, kwds))
        except Exception as e:
            # An unpicklable function or argument: as multiprocessing, the
            # result carries the error (get() raises it, error_callback gets
            # it; a map's whole result fails), not the call.
            self._deliver_error(job, i, e)
            return
        with self._submit_lock:
            if self._state != TERMINATE:
                # One dict store: atomic under the GIL, as are the result
                # thread's pop and the snapshots of _check_quiescence.
                self._pending[seq] = (job, i)
                if not self._backlog and self._taskq.try_put_bytes(msg):
                    return
                self._backlog.append(msg)
                if self._feeder is None or not self._feeder.is_alive():
                    self._feeder = threading.Thread(
                        target=self._feed, name="posh.Pool feeder", daemon=True)
                    self._feeder.start()
                return
        # terminate() has begun (an imap feeder was between two tasks).
        discard(msg)
        self._deliver_error(job, i, PoolTerminatedError(
            "the pool was terminated"))

    def _deliver_error(self, job, i, exc):
        """Fail task i of job with exc from the submitting thread."""
        with self._deliver_lock:
            obj = self._cache.get(job)
            if obj is None:
                return
            try:
                obj._set(i, (False, exc))
            except Exception:  # error_callback raised: as the result thread
                traceback.print_exc()
        self._notify()

    def _feed(self):
        while self._backlog and self._state != TERMINATE:
            msg = self._backlog[0]
            if self._taskq.put_bytes_timeout(msg, _POLL):
                self._backlog.popleft()

    def apply(self, func, args=(), kwds={}):
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None,
                    error_callback=None):
        self._check_running()
        result = ApplyResult(self, callback, error_callback)
        self._submit(result._job, 0, func, tuple(args), dict(kwds))
        return result

    def map(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, _mapstar, chunksize).get()

    def starmap(self, func, iterable, chunksize=None):
        return self._map_async(func, iterable, _starmapstar, chunksize).get()

    def map_async(self, func, iterable, chunksize=None, callback=None,
                  error_callback=None):
        return self._map_async(func, iterable, _mapstar, chunksize, callback,
                               error_callback)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None):
        return self._map_async(func, iterable, _starmapstar, chunksize,
                               callback, error_callback)

    def _map_async(self, func, iterable, mapper, chunksize=None, callback=None,
                   error_callback=None):
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:
            chunksize, extra = divmod(len(iterable), len(self._workers) * 4)
            if extra:
                chunksize += 1
        if len(iterable) == 0:
            chunksize = 0
        result = MapResult(self, chunksize, len(iterable), callback,
                           error_callback)
        for i, chunk in enumerate(_chunks(iterable, chunksize)):
            self._submit(result._job, i, mapper, ((func, chunk),), {})
        return result

    def imap(self, func, iterable, chunksize=1):
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func, iterable, chunksize=1):
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    def _imap(self, kind, func, iterable, chunksize):
        self._check_running()
        if chunksize < 1:
            raise ValueError("Chunksize must be 1+, not {0:n}".format(chunksize))
        result = kind(self)
        if chunksize == 1:
            tasks = ((func, (x,)) for x in iterable)
        else:
            tasks = ((_mapstar, ((func, c),)) for c in _chunks(iterable, chunksize))
        # Counted from here, before close() can run: join() waits for the
        # feeder and the workers stay until it is done (see _work_left).
        with self._lock:
            self._feeders += 1
        if hasattr(iterable, "__len__") and len(iterable) <= _INLINE_TASKS:
            # A sized, modest iterable: submit from here (cheaper than a
            # thread hand-off; the task queue's backlog keeps it
            # non-blocking).
            self._feed_imap(result, tasks)
        else:
            # The iterable may be lazy or endless: a thread feeds it, as
            # multiprocessing's task handler does.
            threading.Thread(target=self._feed_imap, args=(result, tasks),
                             name="posh.Pool imap", daemon=True).start()
        return result if chunksize == 1 else _ChunkedIMap(result)

    def _feed_imap(self, result, tasks):
        n = 0
        try:
            for f, a in tasks:
                if self._state == TERMINATE:
                    # The rest will never run: say so instead of ending the
                    # iteration as if it were complete.
                    with self._deliver_lock:
                        result._set(n, (False, PoolTerminatedError(
                            "the pool was terminated")))
                    n += 1
                    break
                self._submit(result._job, n, f, a, {})
                n += 1
        except Exception as e:  # the iterable raised: as multiprocessing
            with self._deliver_lock:
                result._set(n, (False, e))
            n += 1
        finally:
            result._set_length(n)
            with self._lock:
                self._feeders -= 1
            self._notify()

    # ---- shutting down -------------------------------------------------
    def close(self):
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self):
        if self._state == TERMINATE:
            return
        with self._submit_lock:  # from here on nothing is queued (_submit)
            self._state = TERMINATE
        for p in self._workers:
            if p is not None and p.exitcode is None:
                p.terminate()
        # The task messages never taken hold references of heap blocks
        # (out-of-band buffers): drop them, or the blocks leak.  The feeder
        # stops within _POLL; the task queue is drained once no worker can
        # take from it any more.
        feeder = self._feeder
        if feeder is not None:
            feeder.join()
        while self._backlog:
            discard(self._backlog.popleft())
        self._worker_thread.join()
        while True:
            msg = self._taskq.get_bytes_timeout(0)
            if msg is None:
                break
            discard(msg)
        with self._lock:
            seqs = list(self._pending)
        self._fail_tasks(seqs, PoolTerminatedError("the pool was terminated"))
        self._stop_results()

    def join(self):
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state == CLOSE:
            # Wait for every task, those an imap is still feeding included
            # (_work_left), then tell the workers to stop.
            self._wait_until(lambda: not self._work_left(), None)
            for _ in self._workers:
                self._taskq.put_bytes(_STOP)
            self._worker_thread.join()
        for p in self._workers:
            if p is not None:
                p.join()
        self._stop_results()

    def _stop_results(self):
        if self._result_thread.is_alive():
            self._resultq.put_bytes(_STOP)
            self._result_thread.join()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __reduce__(self):
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    def __repr__(self):
        return "<%s.%s state=%s pool_size=%d>" % (
            type(self).__module__, type(self).__qualname__,
            getattr(self, "_state", None), len(getattr(self, "_workers", ())))

    @property
    def _pool(self):
        """The live worker processes (multiprocessing.Pool's attribute,
        which code reads to find the workers' pids)."""
        return [p for p in self._workers if p is not None]

    def __del__(self, _warn=warnings.warn, RUN=RUN):
        # As multiprocessing's.  A running pool's threads keep it alive, so
        # this is seen for a pool that was never fully constructed or whose
        # state was forced back.
        if getattr(self, "_state", None) == RUN:
            _warn("unclosed running multiprocessing pool %r" % (self,),
                  ResourceWarning, source=self)


def _terminate_at_exit(pool_ref):
    pool = pool_ref()
    if pool is not None and pool._state != TERMINATE:
        pool.terminate()


class _PoshBackend:
    """Queues and the worker table of a posh.Pool: libposh objects."""

    @staticmethod
    def make_queue():
        from posh import SimpleQueue
        return SimpleQueue()

    @staticmethod
    def make_busy(n):
        from posh import RawArray
        return RawArray("q", n)


def _chunks(iterable, size):
    it = iter(iterable)
    while True:
        chunk = tuple(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk
