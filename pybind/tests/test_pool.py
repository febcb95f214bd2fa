# SPDX-License-Identifier: MIT
"""Tests of posh.Pool: the multiprocessing.Pool API under every start
method, the same scenarios run against multiprocessing.Pool with the
results compared, and workers killed mid-task (the task fails with
WorkerLostError, the pool goes on with a replacement worker)."""
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
import unittest

import posh
from helpers import METHODS, run_py


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail(x):
    raise ValueError("bad %r" % (x,))


def slow(x):
    time.sleep(0.05)
    return x


def die_on(x, target=3):
    if x == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def pid_of(_):
    return os.getpid()


def unpicklable_result(_):
    return threading.Lock()


def ident(*args, **kwds):
    return args, kwds


def nbytes(buf):
    return len(memoryview(buf))


def block(_):
    time.sleep(60)  # until terminate()


def gated(n, gate):
    """n items, then waits for gate before the rest: a lazy iterable still
    being fed when close() runs."""
    yield from range(n)
    gate.wait(30)
    yield from range(n, 40)


def pool_join(testcase, pool, timeout=30):
    t = threading.Thread(target=pool.join, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pool.terminate()
        testcase.fail("join() hung")


def drain(it, timeout=10):
    """Everything an imap iterator gives (exceptions as their type names);
    "TIMEOUT" at the end if it stopped giving before it ended."""
    out = []
    while True:
        try:
            out.append(it.next(timeout))
        except StopIteration:
            return out
        except mp.TimeoutError:
            return out + ["TIMEOUT"]
        except Exception as e:
            out.append(type(e).__name__)


def unpicklable_scenario(lib):
    """Unpicklable arguments: what the calls and their results do."""
    out = {}
    with lib.Pool(2) as p:
        calls = {
            "apply_async_lambda": lambda cb: p.apply_async(
                ident, (lambda: 1,), error_callback=cb),
            "apply_async_kwds": lambda cb: p.apply_async(
                ident, (), {"k": threading.Lock()}, error_callback=cb),
            "map_async": lambda cb: p.map_async(
                square, [1, 2, threading.Lock(), 4], chunksize=1,
                error_callback=cb),
            "map_async_chunk": lambda cb: p.map_async(
                square, [1, 2, threading.Lock(), 4], chunksize=2,
                error_callback=cb),
            "starmap_async": lambda cb: p.starmap_async(
                add, [(1, 2), (threading.Lock(), 1)], error_callback=cb),
            "starmap_async_task_error": lambda cb: p.starmap_async(
                add, [(1, 2), ("a", 1)], error_callback=cb),
        }
        for name, call in calls.items():
            errs = []
            try:
                r = call(errs.append)
            except Exception as e:
                out[name] = "raised at the call: " + type(e).__name__
                continue
            try:
                r.get(30)
                got = "no error"
            except Exception as e:
                got = type(e).__name__
            r.wait(30)
            deadline = time.monotonic() + 10
            while not errs and time.monotonic() < deadline:
                time.sleep(0.01)  # error_callback runs before ready()
            out[name] = (got, r.successful(), [type(e).__name__ for e in errs])
        for name, call in {"apply": lambda: p.apply(ident, (threading.Lock(),)),
                           "map": lambda: p.map(square, [threading.Lock()]),
                           "starmap": lambda: p.starmap(add, [(1, lambda: 1)]),
                           }.items():
            try:
                call()
                out[name] = "no error"
            except Exception as e:
                out[name] = type(e).__name__
        out["imap"] = drain(p.imap(square, [1, threading.Lock(), 3]))
        out["imap_unordered"] = sorted(map(str, drain(
            p.imap_unordered(square, [1, threading.Lock(), 3]))))
        out["imap_chunk"] = list(p.imap(square, [1, 2, 3], chunksize=2))
        # the pool goes on, and close() + join() finish
        out["after"] = p.map(square, range(5))
        p.close()
        p.join()
    return out


_init_value = None


def _initializer(v):
    global _init_value
    _init_value = v


def read_init(_):
    return _init_value


def scenario(lib, method):
    """A run through the whole API; returns what it saw."""
    out = {}
    with lib.get_context(method).Pool(2) as pool:
        out["map"] = pool.map(square, range(25))
        out["map_chunk"] = pool.map(square, range(25), chunksize=4)
        out["map_empty"] = pool.map(square, [])
        out["starmap"] = pool.starmap(add, [(1, 2), (3, 4), (5, 6)])
        out["apply"] = pool.apply(add, (2, 3))
        out["apply_kw"] = pool.apply(add, (), {"a": 1, "b": 9})
        out["imap"] = list(pool.imap(square, range(10)))
        out["imap_chunk"] = list(pool.imap(square, iter(range(10)), chunksize=3))
        out["imap_unordered"] = sorted(pool.imap_unordered(square, range(10)))
        out["map_async"] = pool.map_async(square, range(5)).get(30)
        out["starmap_async"] = pool.starmap_async(add, [(1, 1)]).get(30)
        r = pool.apply_async(fail, (7,))
        try:
            r.get(30)
        except ValueError as e:
            out["error"] = str(e)
        out["successful"] = r.successful()
        try:
            pool.map(fail, [1])
        except ValueError as e:
            out["map_error"] = str(e)
        got = []
        pool.apply_async(square, (4,), callback=got.append).wait(30)
        errs = []
        pool.apply_async(fail, (1,), error_callback=errs.append).wait(30)
        time.sleep(0.05)
        out["callback"] = got
        out["error_callback"] = [type(e).__name__ for e in errs]
        it = pool.imap(slow, [1])
        try:
            it.next(timeout=0.001)
            out["imap_timeout"] = "no"
        except mp.TimeoutError:
            out["imap_timeout"] = "yes"
        out["imap_rest"] = list(it)
    return out


class PoolCompat(unittest.TestCase):
    """posh.Pool gives what multiprocessing.Pool gives."""

    def test_same_results_as_multiprocessing(self):
        for method in METHODS:
            with self.subTest(method=method):
                self.assertEqual(scenario(posh, method), scenario(mp, method))


class PoolAPI(unittest.TestCase):
    def test_initializer_and_maxtasksperchild(self):
        """initializer runs in every worker; maxtasksperchild replaces
        workers and the tasks still all complete."""
        for method in METHODS:
            with self.subTest(method=method):
                ctx = posh.get_context(method)
                with posh.Pool(2, _initializer, ("hello",), context=ctx) as p:
                    self.assertEqual(p.map(read_init, range(4)), ["hello"] * 4)
                p = posh.Pool(2, maxtasksperchild=2, context=ctx)
                pids = p.map(pid_of, range(12), chunksize=1)
                p.close()
                p.join()
                self.assertGreaterEqual(len(set(pids)), 3)

    def test_close_join_and_states(self):
        """close() refuses new work, join() waits for the old; terminate()
        fails what is pending instead of leaving it hanging."""
        p = posh.Pool(2)
        r = p.map_async(slow, range(6))
        p.close()
        with self.assertRaises(ValueError):
            p.apply_async(square, (1,))
        p.join()
        self.assertEqual(r.get(0), list(range(6)))
        with self.assertRaises(ValueError):
            p.map(square, [1])
        p2 = posh.Pool(1)
        with self.assertRaises(ValueError):
            p2.join()  # still running
        rs = [p2.apply_async(slow, (i,)) for i in range(20)]
        p2.terminate()
        p2.join()
        outcomes = set()
        for r in rs:
            try:
                r.get(5)
                outcomes.add("done")
            except posh.PoolTerminatedError:
                outcomes.add("terminated")
        self.assertIn("terminated", outcomes)

    def test_multiprocessing_internals_code_reads(self):
        """What code written for multiprocessing.Pool reads besides the API:
        _pool (the worker processes), _state against multiprocessing.pool's
        names, the ResourceWarning of an unclosed running pool, and
        multiprocessing.pool's RemoteTraceback / MaybeEncodingError."""
        import gc
        import multiprocessing.pool as mpp
        import warnings
        p = posh.Pool(3)
        try:
            self.assertEqual(len(p._pool), 3)
            self.assertTrue(all(w.is_alive() for w in p._pool))
            self.assertEqual(p._state, mpp.RUN)
            with self.assertRaises(ValueError) as cm:
                p.apply(fail, (0,))
            self.assertIsInstance(cm.exception.__cause__, mpp.RemoteTraceback)
            self.assertIs(posh.pool.MaybeEncodingError, mpp.MaybeEncodingError)
            p.close()
            self.assertEqual(p._state, mpp.CLOSE)
            p.join()
        except BaseException:
            p.terminate()  # a failure must not leave the pool running
            raise
        p._state = mpp.RUN  # as CPython's test_resource_warning
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del p
            gc.collect()
        self.assertTrue(any(issubclass(w.category, ResourceWarning) and
                            "unclosed running multiprocessing pool"
                            in str(w.message) for w in caught), caught)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            posh.Pool(0)
        with self.assertRaises(ValueError):
            posh.Pool(1, maxtasksperchild=0)
        with self.assertRaises(TypeError):
            posh.Pool(1, initializer=3)
        with posh.Pool(1) as p:
            with self.assertRaises(ValueError):
                p.imap(square, [1], chunksize=0)
            with self.assertRaises(NotImplementedError):
                import pickle
                pickle.dumps(p)
            r = p.apply_async(unpicklable_result, (0,))
            with self.assertRaises(Exception) as cm:
                r.get(30)
            self.assertIn("Error sending result", str(cm.exception))

    def test_many_small_tasks(self):
        """More tasks than the task queue holds at once: the backlog feeder
        keeps apply_async from blocking, and every result arrives."""
        with posh.Pool(2) as p:
            rs = [p.apply_async(square, (i,)) for i in range(30000)]
            self.assertEqual([r.get(60) for r in rs],
                             [i * i for i in range(30000)])


class PoolShutdown(unittest.TestCase):
    """close()/join() and terminate() with work still coming or queued."""

    def test_close_join_finishes_lazy_imap(self):
        """close() while an imap is still taking tasks from a generator:
        as multiprocessing, every result is delivered and join() waits for
        them (workers retired by maxtasksperchild are still replaced)."""
        for kind in ("imap", "imap_unordered"):
            for chunksize in (1, 3):
                for maxtasks in (None, 2):
                    with self.subTest(kind=kind, chunksize=chunksize,
                                      maxtasks=maxtasks):
                        p = posh.Pool(2, maxtasksperchild=maxtasks)
                        gate = threading.Event()
                        it = getattr(p, kind)(square, gated(chunksize, gate),
                                              chunksize)
                        first = it.next(30)  # its feeder now waits on gate
                        p.close()
                        threading.Timer(0.2, gate.set).start()
                        pool_join(self, p)
                        got = [first] + drain(it)
                        want = [i * i for i in range(40)]
                        if kind == "imap_unordered":
                            got.sort(key=str)
                            want.sort(key=str)
                        self.assertEqual(got, want)

    def test_terminate_ends_lazy_imap(self):
        """terminate() while an imap feeds from a generator: the iteration
        ends with PoolTerminatedError instead of waiting forever."""
        p = posh.Pool(1)
        gate = threading.Event()
        it = p.imap(square, gated(1, gate))
        self.assertEqual(it.next(30), 0)
        p.terminate()
        gate.set()
        p.join()
        self.assertEqual(drain(it), ["PoolTerminatedError"])

    def _terminate_with_queued_payloads(self, pool):
        payload = pickle.PickleBuffer(bytearray(1 << 20))  # out of band
        try:
            self.assertEqual(pool.apply(nbytes, (payload,)), 1 << 20)
            pool.apply_async(block, (0,))  # keeps the only worker busy
            deadline = time.monotonic() + 30
            while pool._busy[0] <= 0:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
            base = posh.heap_info()["bytes_in_use"]
            rs = [pool.apply_async(nbytes, (payload,)) for _ in range(12)]
            self.assertGreater(posh.heap_info()["bytes_in_use"],
                               base + (10 << 20))
        finally:
            pool.terminate()
        pool.join()
        for r in rs:
            with self.assertRaises(posh.PoolTerminatedError):
                r.get(10)
        # The queued tasks' heap blocks were freed with their messages.
        self.assertLess(posh.heap_info()["bytes_in_use"], base + (1 << 20))

    def test_terminate_frees_queued_tasks(self):
        """Tasks still in the task queue at terminate(): their
        out-of-band buffers go back to the heap."""
        self._terminate_with_queued_payloads(posh.Pool(1))

    def test_terminate_frees_backlog(self):
        """The same for tasks in the backlog (the task queue was full)."""
        class SmallQueues:
            @staticmethod
            def make_queue():
                return posh.Queue(2)

            @staticmethod
            def make_busy(n):
                return posh.RawArray("q", n)

        class SmallPool(posh.Pool):
            _backend = SmallQueues

        p = SmallPool(1)
        self._terminate_with_queued_payloads(p)
        self.assertFalse(p._backlog)


class PoolUnpicklable(unittest.TestCase):
    def test_unpicklable_arguments_as_multiprocessing(self):
        """An argument that cannot be pickled fails the result (get(),
        error_callback; a map's whole result), not the call, as in
        multiprocessing; the pool stays usable and joins."""
        got = unpicklable_scenario(posh)
        self.assertEqual(got, unpicklable_scenario(mp))
        self.assertEqual(got["apply_async_kwds"],
                         ("TypeError", False, ["TypeError"]))
        self.assertEqual(got["map_async"], ("TypeError", False, ["TypeError"]))
        self.assertEqual(got["imap"], [1, "TypeError", 9])

    def test_no_leftovers_after_pickling_errors(self):
        p = posh.Pool(2)
        p.apply_async(ident, (threading.Lock(),))
        p.map_async(square, [threading.Lock()] * 3, chunksize=1)
        self.assertEqual(p.apply(square, (3,)), 9)
        self.assertEqual(p._cache, {})
        self.assertEqual(p._pending, {})
        p.close()
        pool_join(self, p)


class PoolWorkerDeath(unittest.TestCase):
    """A worker killed by a signal never hangs the pool."""

    def test_killed_worker_fails_its_task_and_is_replaced(self):
        for method in METHODS:
            with self.subTest(method=method):
                ctx = posh.get_context(method)
                with posh.Pool(2, context=ctx) as p:
                    rs = [p.apply_async(die_on, (i,)) for i in range(8)]
                    seen = []
                    for r in rs:
                        try:
                            seen.append(r.get(30))
                        except posh.WorkerLostError as e:
                            self.assertIn("died", str(e))
                            seen.append("lost")
                    self.assertEqual(seen, [0, 1, 2, "lost", 4, 5, 6, 7])
                    # The pool still works, with two live workers.
                    self.assertEqual(p.map(square, range(10)),
                                     [i * i for i in range(10)])
                    deadline = time.monotonic() + 30
                    while sum(w is not None and w.is_alive()
                              for w in p._workers) < 2:
                        self.assertLess(time.monotonic(), deadline,
                                        "the dead worker was not replaced")
                        time.sleep(0.05)

    def test_killed_from_outside_mid_map(self):
        """kill -9 of a worker in the middle of a map: the map fails with
        WorkerLostError instead of hanging."""
        with posh.Pool(2) as p:
            r = p.map_async(slow, range(200), chunksize=1)
            time.sleep(0.3)
            victim = next(w for w in p._workers if w is not None)
            os.kill(victim.pid, signal.SIGKILL)
            try:
                r.get(60)
            except posh.WorkerLostError:
                pass  # the victim was running a task: expected
            self.assertTrue(r.ready())
            self.assertEqual(p.map(square, range(5)), [0, 1, 4, 9, 16])



class PoolHeapUse(unittest.TestCase):
    # A finished Pool gives back all its heap memory and process slots:
    # workers that return detach at exit, and killed ones (terminate, a
    # crash) are reaped by the pool.  It kept ~17 MB and two slots per pool
    # when forked workers left through os._exit without detaching.  In a
    # fresh interpreter, so that nothing else uses the heap meanwhile.
    def test_finished_pools_give_back_the_heap(self):
        rc, out, err = run_py("""
            import gc, os, time
            import posh

            def square(x):
                return x * x

            def slow(x):
                time.sleep(30)

            def die(x):
                os._exit(3)

            def usage():
                gc.collect()
                i = posh.heap_info()
                return i["bytes_in_use"], i["processes"]

            if __name__ == "__main__":
                base = usage()
                for m in %r:
                    ctx = posh.get_context(m)
                    for _ in range(2):
                        with ctx.Pool(2) as p:
                            assert p.map(square, range(500)) == \
                                [x * x for x in range(500)]
                            p.close()
                            p.join()
                        del p
                        assert usage() == base, (m, "join", usage(), base)
                    p = ctx.Pool(2)
                    r = p.map_async(slow, range(4))
                    time.sleep(0.3)
                    p.terminate()
                    p.join()
                    del p, r
                    assert usage() == base, (m, "terminate", usage(), base)
                    p = ctx.Pool(2, maxtasksperchild=1)
                    try:
                        p.map(die, range(3), chunksize=1)
                    except posh.WorkerLostError:
                        pass
                    p.terminate()
                    p.join()
                    del p
                    assert usage() == base, (m, "crash", usage(), base)
                print("ok")
        """ % (METHODS,), timeout=300)
        self.assertEqual((rc, out.strip(), err), (0, "ok", ""))

def _processes_running(path):
    """pids of the live processes whose command line contains path."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if path.encode() in f.read():
                    with open("/proc/%s/stat" % pid) as st:
                        if st.read().rsplit(")", 1)[1].split()[0] != "Z":
                            found.append(int(pid))
        except OSError:
            pass
    return found


class PoolAtExit(unittest.TestCase):
    # A pool still running when the program exits is terminated first and
    # leaves no process behind.  Its worker thread used to start
    # replacements for the workers multiprocessing's exit handler had just
    # killed: they outlived the program (about one per run).
    # Forked workers carry the script's path in their command line, which
    # is how the leftovers are found; three runs, as it did not happen in
    # every one.
    def test_running_pool_leaves_no_process(self):
        for m in ["fork"] * 3:
            with self.subTest(method=m):
                rc, out, err = run_py("""
                    import posh

                    def fail(x):
                        raise ValueError(x)

                    if __name__ == "__main__":
                        p = posh.get_context(%r).Pool(3)
                        try:
                            p.apply(fail, (0,))
                        except ValueError:
                            pass
                        print(__file__)
                """ % m)
                self.assertEqual((rc, err), (0, ""))
                path = out.strip()
                deadline = time.monotonic() + 10
                while _processes_running(path) and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual(_processes_running(path), [])

if __name__ == "__main__":
    unittest.main()
