# SPDX-License-Identifier: MIT
"""Tests of posh.Manager: every SyncManager factory, the same scenario run
against multiprocessing.Manager() with the results compared, proxies passed
to worker processes under every start method, and the manager life cycle."""
import multiprocessing as mp
import unittest

import posh
from helpers import METHODS, join_all


def scenario(manager):
    out = {}
    d = manager.dict({"a": 1}, b=2)
    d["c"] = [1, 2, (3, 4)]
    out["dict"] = sorted(d.items())
    out["dict_get"] = (d.get("a"), d.get("zz", "default"))
    l = manager.list(range(5))
    l.append(9)
    l[0] = "x"
    out["list"] = list(l)
    ns = manager.Namespace(x=1)
    ns.y = "two"
    out["ns"] = (ns.x, ns.y)
    v = manager.Value("i", 41)
    v.value += 1
    out["value"] = v.value
    a = manager.Array("d", [1.0, 2.0, 3.0])
    a[1] = 5.0
    out["array"] = (len(a), a[1], list(a))
    q = manager.Queue()
    q.put(("hi", 1))
    out["queue"] = q.get(timeout=5)
    jq = manager.JoinableQueue()
    jq.put(1)
    jq.get()
    jq.task_done()
    jq.join()
    lock = manager.Lock()
    with lock:
        pass
    rlock = manager.RLock()
    with rlock, rlock:
        pass
    sem = manager.Semaphore(2)
    out["sem"] = (sem.acquire(), sem.acquire(), sem.acquire(False))
    bsem = manager.BoundedSemaphore(1)
    bsem.acquire()
    bsem.release()
    cond = manager.Condition()
    with cond:
        out["cond_wait"] = cond.wait(0.01)
    ev = manager.Event()
    ev.set()
    out["event"] = ev.is_set()
    bar = manager.Barrier(1)
    out["barrier"] = bar.wait(5)
    with manager.Pool(2) as pool:
        out["pool"] = pool.map(abs, [-1, -2])
    return out


def worker(d, l, ns, v, a, q, lock):
    with lock:
        d["from_child"] = d.get("from_child", 0) + 1
        l.append("child")
        ns.seen = True
        v.value += 10
        a[0] = 99
    q.put("done")


class ManagerCompat(unittest.TestCase):
    def test_same_results_as_multiprocessing(self):
        with mp.Manager() as m:
            expected = scenario(m)
        with posh.Manager() as m:
            got = scenario(m)
        self.assertEqual(got, expected)


class ManagerAcrossProcesses(unittest.TestCase):
    def test_proxies_in_workers(self):
        """Objects handed out by the manager work in children started by
        every method, as multiprocessing's proxies do."""
        for method in METHODS:
            with self.subTest(method=method):
                ctx = mp.get_context(method)
                with posh.Manager() as m:
                    d, l, ns = m.dict(), m.list(), m.Namespace()
                    v, a = m.Value("i", 0), m.Array("i", [0, 0])
                    q, lock = m.Queue(), m.Lock()
                    args = (d, l, ns, v, a, q, lock)
                    ps = [ctx.Process(target=worker, args=args) for _ in range(3)]
                    for p in ps:
                        p.start()
                    for _ in ps:
                        self.assertEqual(q.get(timeout=60), "done")
                    join_all(self, ps)
                    self.assertEqual(d["from_child"], 3)
                    self.assertEqual(list(l), ["child"] * 3)
                    self.assertTrue(ns.seen)
                    self.assertEqual(v.value, 30)
                    self.assertEqual(a[0], 99)


class ManagerLifeCycle(unittest.TestCase):
    def test_states(self):
        m = posh.SyncManager()
        with self.assertRaises(RuntimeError):
            m.dict()  # not started
        m.start()
        with self.assertRaises(RuntimeError):
            m.start()
        d = m.dict(x=1)
        m.shutdown()
        with self.assertRaises(RuntimeError):
            m.list()
        self.assertEqual(d["x"], 1)  # objects outlive the manager's shutdown
        with self.assertRaises(NotImplementedError):
            posh.SyncManager.register("Thing", object)

    def test_namespace(self):
        with posh.Manager() as m:
            ns = m.Namespace(a=1)
            with self.assertRaises(AttributeError):
                ns.missing
            with self.assertRaises(AttributeError):
                ns._private = 1
            del ns.a
            with self.assertRaises(AttributeError):
                ns.a
            ns.b = 2
            self.assertEqual(repr(ns), "Namespace(b=2)")


if __name__ == "__main__":
    unittest.main()
