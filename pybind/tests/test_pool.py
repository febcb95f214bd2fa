# SPDX-License-Identifier: MIT
"""Tests of posh.Pool: the multiprocessing.Pool API under every start
method, the same scenarios run against multiprocessing.Pool with the
results compared, and workers killed mid-task (the task fails with
WorkerLostError, the pool goes on with a replacement worker)."""
import multiprocessing as mp
import os
import signal
import threading
import time
import unittest

import posh
from helpers import METHODS


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


if __name__ == "__main__":
    unittest.main()
