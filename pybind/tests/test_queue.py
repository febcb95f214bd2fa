# SPDX-License-Identifier: MIT
"""This file contains the tests of posh's Queue, SimpleQueue and
JoinableQueue: multiprocessing's behaviour and exceptions (compared with
multiprocessing on the same scenario), sharing with children under every
start method, numpy zero copy, the byte-level methods of posh.Pool,
shutdown, signals, kill -9 of a blocked or producing process, bad input."""
import os
import pickle
import queue
import signal
import threading
import time
import unittest
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import posh
from posh import _posh
from helpers import METHODS, JOIN, join_all

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def outcome(fn):
    """The result of fn() or the name of the exception it raised."""
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001
        return ("raise", type(e).__name__)


def queue_scenario(lib):
    """The same calls on lib's queues; their outcomes."""
    out = []
    q = lib.Queue(2)
    out.append(outcome(lambda: q.put(1)))
    out.append(outcome(lambda: q.put((2, "two"))))
    out.append(outcome(lambda: q.put_nowait(3)))
    out.append(outcome(lambda: q.put(3, timeout=0.01)))
    out.append(outcome(lambda: q.put(3, False)))
    time.sleep(0.1)  # multiprocessing's feeder thread
    out.append(outcome(q.full))
    out.append(outcome(q.qsize))
    out.append(outcome(q.empty))
    out.append(outcome(q.join_thread))   # AssertionError: not closed
    out.append(outcome(lambda: q.get()))
    out.append(outcome(lambda: q.get(True, 1)))
    out.append(outcome(q.get_nowait))
    out.append(outcome(lambda: q.get(timeout=0.01)))
    out.append(outcome(lambda: q.get(block=False)))
    out.append(outcome(q.empty))
    out.append(outcome(q.cancel_join_thread))
    out.append(outcome(q.close))
    out.append(outcome(lambda: q.put(1)))
    out.append(outcome(q.get))
    out.append(outcome(q.join_thread))
    out.append(outcome(q.close))
    u = lib.Queue()
    for i in range(100):
        u.put(i)
    out.append(outcome(lambda: [u.get(timeout=5) for _ in range(100)]))
    j = lib.JoinableQueue()
    out.append(outcome(lambda: j.put("a")))
    out.append(outcome(lambda: j.put("b")))
    out.append(outcome(j.get))
    out.append(outcome(j.task_done))
    out.append(outcome(j.get))
    out.append(outcome(j.task_done))
    out.append(outcome(j.task_done))     # ValueError: too many times
    out.append(outcome(j.join))
    s = lib.SimpleQueue()
    out.append(outcome(s.empty))
    out.append(outcome(lambda: s.put({"k": [1, 2.5, None]})))
    out.append(outcome(s.empty))
    out.append(outcome(s.get))
    out.append(outcome(s.close))
    out.append(outcome(s.get))           # OSError: handle is closed
    out.append(outcome(lambda: s.put(1)))
    out.append(outcome(s.empty))
    return out


def worker(qin, qout):
    while True:
        x = qin.get()
        if x is None:
            break
        if np is not None and isinstance(x, np.ndarray):
            qout.put((float(x[-1]), _posh.in_heap(x)))
        else:
            qout.put(("echo", x))


def joinable_worker(jq, results):
    while True:
        x = jq.get()
        if x is None:
            jq.task_done()
            return
        results.put(x * 2)
        jq.task_done()


def block_forever(q, ready):
    ready.set()
    q.get()


def produce_forever(q):
    i = 0
    while True:
        q.put(("item", i))
        i += 1


def pool_task(q):
    q.put(os.getpid())
    return True


class QueueTest(unittest.TestCase):
    # Every method and exception behaves as multiprocessing's on one scenario.
    def test_compat_with_multiprocessing(self):
        self.assertEqual(queue_scenario(posh), queue_scenario(mp))

    # Values of every native kind and pickled ones come back equal, in order.
    def test_values_fifo(self):
        q = posh.Queue()
        vals = [None, True, False, 0, -1, 2**63 - 1, -2**63, 2**200, 1.5,
                float("inf"), "", "héllo", "\udc80", b"", b"\0" * 300,
                bytearray(b"ab"), (1, (2, [3, {"a": 4}])), [], {}, 3 + 4j,
                {1, 2}, frozenset(), range(3), "x" * 100000,
                list(range(1000))]
        for v in vals:
            q.put(v)
        self.assertEqual(q.qsize(), len(vals))
        got = [q.get() for _ in vals]
        self.assertEqual(got, vals)
        self.assertEqual([type(x) for x in got], [type(x) for x in vals])
        self.assertTrue(q.empty())

    # maxsize bounds the messages exactly; unbounded takes many.
    def test_maxsize(self):
        q = posh.Queue(3)
        for i in range(3):
            q.put(i)
        self.assertTrue(q.full())
        with self.assertRaises(queue.Full):
            q.put_nowait(9)
        t0 = time.monotonic()
        with self.assertRaises(queue.Full):
            q.put(9, timeout=0.1)
        self.assertGreaterEqual(time.monotonic() - t0, 0.09)
        self.assertEqual(q.get(), 0)
        q.put(3)
        self.assertEqual([q.get() for _ in range(3)], [1, 2, 3])
        u = posh.Queue()
        for i in range(10000):
            u.put_nowait(i)
        self.assertEqual(u.qsize(), 10000)
        self.assertFalse(u.full())

    # A blocked get is woken by a put from another thread (GIL released).
    def test_blocking_threads(self):
        q = posh.Queue()
        t = threading.Timer(0.1, q.put, ("late",))
        t.start()
        self.assertEqual(q.get(timeout=5), "late")
        t.join()

    # shutdown(): puts fail everywhere, gets drain then raise EOFError,
    # a blocked getter wakes up.
    def test_shutdown(self):
        q = posh.Queue()
        q.put(1)
        res = []
        q2 = posh.Queue()
        th = threading.Thread(target=lambda: res.append(outcome(q2.get)))
        th.start()
        time.sleep(0.1)
        q.shutdown()
        q2.shutdown()
        th.join(5)
        self.assertFalse(th.is_alive())
        self.assertEqual(res, [("raise", "EOFError")])
        self.assertTrue(q.is_shutdown())
        with self.assertRaises(ValueError):
            q.put(2)
        self.assertEqual(q.get(), 1)
        t0 = time.monotonic()
        with self.assertRaises(EOFError):
            q.get()
        with self.assertRaises(EOFError):
            q.get_bytes()
        self.assertLess(time.monotonic() - t0, 1)

    # The byte-level methods posh.Pool uses.
    def test_bytes_methods(self):
        q = posh.Queue(2)
        q.put_bytes(b"a")
        self.assertTrue(q.try_put_bytes(bytearray(b"b")))
        self.assertFalse(q.try_put_bytes(b"c"))
        self.assertFalse(q.put_bytes_timeout(b"c", 0.05))
        self.assertEqual(q.qsize(), 2)
        self.assertEqual(q.get_bytes(), b"a")
        self.assertTrue(q.put_bytes_timeout(memoryview(b"xyz"), 1))
        self.assertEqual(q.get_many_bytes(10), [b"b", b"xyz"])
        self.assertIsNone(q.get_bytes_timeout(0.05))
        big = os.urandom(1 << 20)
        q.put_bytes(big)
        self.assertEqual(q.get_bytes_timeout(1), big)
        s = posh.SimpleQueue()
        for i in range(5):
            s.put_bytes(b"%d" % i)
        self.assertEqual(s.get_many_bytes(3), [b"0", b"1", b"2"])
        self.assertEqual(s.get_many_bytes(3), [b"3", b"4"])
        with self.assertRaises(ValueError):
            s.get_many_bytes(0)
        with self.assertRaises(TypeError):
            s.put_bytes(123)

    # Bad input: bad arguments, unpicklable objects, malformed raw messages.
    def test_bad_input(self):
        q = posh.Queue()
        with self.assertRaises(TypeError):
            q.put()
        with self.assertRaises(TypeError):
            q.put(1, bogus=2)
        with self.assertRaises(TypeError):
            q.put(1, True, "soon")
        with self.assertRaises(ValueError):
            posh.Queue("many")
        with self.assertRaises(Exception):
            q.put(lambda: 0)
        self.assertTrue(q.empty())
        q.put_bytes(b"\xff\x00garbage")
        with self.assertRaises(ValueError):
            q.get()
        q.put("still fine")
        self.assertEqual(q.get(), "still fine")
        with self.assertRaises(RuntimeError):
            posh.queues.QueueBase().get()

    # Handles pickle; a queue travels through another queue.
    def test_pickle_and_nesting(self):
        q = posh.Queue()
        q2 = pickle.loads(pickle.dumps(q))
        q2.put("via copy")
        self.assertEqual(q.get(), "via copy")
        carrier = posh.Queue()
        carrier.put(q)
        q3 = carrier.get()
        self.assertIsInstance(q3, posh.Queue)
        q3.put(42)
        self.assertEqual(q.get(), 42)
        jq = posh.JoinableQueue()  # alive while its pickle is loaded
        j = pickle.loads(pickle.dumps(jq))
        self.assertIsInstance(j, posh.JoinableQueue)

    @unittest.skipIf(np is None, "numpy not installed")
    # A large numpy array arrives without a copy (its memory is in the
    # heap); copy=True gives private memory.
    def test_numpy_zero_copy(self):
        q = posh.Queue()
        a = np.arange(1 << 18, dtype=np.float64)
        q.put(a)
        r = q.get()
        self.assertTrue(_posh.in_heap(r))
        np.testing.assert_array_equal(r, a)
        r[0] = 5  # writable
        q.put(a)
        r2 = q.get(copy=True)
        self.assertFalse(_posh.in_heap(r2))
        np.testing.assert_array_equal(r2, a)
        small = np.arange(10)
        q.put(small)
        self.assertFalse(_posh.in_heap(q.get()))

    # A signal handler runs during a blocking get (Ctrl-C works).
    def test_signal_interrupts_get(self):
        def handler(signum, frame):
            raise KeyboardInterrupt
        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            t0 = time.monotonic()
            with self.assertRaises(KeyboardInterrupt):
                posh.Queue().get()
            self.assertLess(time.monotonic() - t0, 3)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    # Cross-process under every start method: objects, numpy zero copy,
    # a queue passed through a queue; the parent drops its handles of the
    # child's arguments right after start (fork keeps them alive).
    def test_cross_process(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = posh.get_context(m)
                qin, qout = ctx.Queue(), ctx.SimpleQueue()
                p = ctx.Process(target=worker, args=(qin, qout))
                p.start()
                qin.put((1, "a"))
                self.assertEqual(qout.get(), ("echo", (1, "a")))
                if np is not None:
                    qin.put(np.full(1 << 17, 3.0))
                    self.assertEqual(qout.get(), (3.0, True))
                extra = posh.Queue()
                qin.put(extra)
                _, got = qout.get()
                got.put("back")
                self.assertEqual(extra.get(timeout=5), "back")
                qin.put(None)
                join_all(self, [p])
                self.assertEqual(p.exitcode, 0)

    # JoinableQueue: task_done in children, join in the parent.
    def test_joinable_cross_process(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = posh.get_context(m)
                jq, res = ctx.JoinableQueue(), ctx.Queue()
                ps = [ctx.Process(target=joinable_worker, args=(jq, res))
                      for _ in range(2)]
                for p in ps:
                    p.start()
                for i in range(50):
                    jq.put(i)
                self.assertTrue(jq.join(timeout=JOIN))
                self.assertEqual(sorted(res.get(timeout=5) for _ in range(50)),
                                 [i * 2 for i in range(50)])
                for p in ps:
                    jq.put(None)
                jq.join()
                join_all(self, ps)

    # A queue is usable from ProcessPoolExecutor tasks (spawn).
    def test_process_pool_executor(self):
        q = posh.Queue()
        m = "spawn" if "spawn" in METHODS else METHODS[0]
        with ProcessPoolExecutor(2, mp_context=mp.get_context(m)) as ex:
            self.assertTrue(all(ex.map(pool_task, [q] * 4)))
        self.assertEqual(q.qsize(), 4)

    # kill -9 of a process blocked in get, and of a producer in the middle
    # of its puts: the others go on (no hang, queue still works).
    def test_kill9(self):
        ctx = posh.get_context("fork" if "fork" in METHODS else METHODS[0])
        q = ctx.Queue()
        ready = ctx.Event()
        p = ctx.Process(target=block_forever, args=(q, ready))
        p.start()
        self.assertTrue(ready.wait(JOIN))
        time.sleep(0.1)
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        q.put("after")
        self.assertEqual(q.get(timeout=5), "after")
        full = ctx.Queue(4)
        prods = [ctx.Process(target=produce_forever, args=(full,))
                 for _ in range(2)]
        for pr in prods:
            pr.start()
        got = [full.get(timeout=JOIN) for _ in range(200)]
        for pr in prods:
            os.kill(pr.pid, signal.SIGKILL)
        for pr in prods:
            pr.join()
        self.assertTrue(all(g[0] == "item" for g in got))
        while True:  # drain what they left; no hang on a half-put slot
            try:
                full.get(timeout=1)
            except queue.Empty:
                break
        full.put("ok")
        self.assertEqual(full.get(timeout=5), "ok")


if __name__ == "__main__":
    unittest.main()
