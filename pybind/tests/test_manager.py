# SPDX-License-Identifier: MIT
"""Tests of posh.Manager: every SyncManager factory, the same scenario run
against multiprocessing.Manager() with the results compared, proxies passed
to worker processes under every start method, and the manager life cycle."""
import multiprocessing as mp
import pickle
import threading
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
    # the manager's Value holds any picklable object; the typecode is only
    # recorded
    vs = manager.Value("i", "not an int")
    out["value_str"] = vs.get()
    vs.set({"k": [1, (2, 3)]})
    out["value_any"] = vs.value
    vs.value = None
    out["value_none"] = vs.value
    out["value_float"] = manager.Value("d", 1.5).value
    a = manager.Array("d", [1.0, 2.0, 3.0])
    a[1] = 5.0
    out["array"] = (len(a), a[1], list(a))
    ai = manager.Array("i", range(4))
    ai[-1] = 7
    out["array_i"] = (len(ai), ai[0], ai[-1], list(ai), list(ai[1:3]))
    q = manager.Queue()
    q.put(("hi", 1))
    out["queue"] = q.get(timeout=5)
    # a queue.Queue proxy: task_done/join, qsize/empty/full, *_nowait
    q.task_done()
    q.join()
    q.put_nowait(1)
    q.put(2)
    out["queue_q"] = (q.qsize(), q.empty(), q.full())
    out["queue_nowait"] = (q.get_nowait(), q.get(False))
    q.task_done()
    q.task_done()
    q.join()
    out["queue_empty"] = q.empty()
    try:
        q.get_nowait()
    except Exception as e:
        out["queue_get_empty"] = type(e).__name__
    bq = manager.Queue(1)
    bq.put(1)
    try:
        bq.put_nowait(2)
    except Exception as e:
        out["queue_put_full"] = (type(e).__name__, bq.full())
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


def set_value(v, q):
    v.value = {"from": "child", "typecode": v.typecode}
    q.put("set")


def consume(q, out, n):
    for _ in range(n):
        out.append(q.get(timeout=60))
        q.task_done()


def produce(args):
    q, i = args
    q.put(i * i)
    return i


def drain_one(q):
    item = q.get(timeout=60)
    q.task_done()
    return item


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


    def test_value_any_object_in_workers(self):
        """The manager's Value holds any picklable object, shared: a child
        sets a dict, the parent sees it; the typecode travels along."""
        for method in METHODS:
            with self.subTest(method=method):
                ctx = mp.get_context(method)
                with posh.Manager() as m:
                    v = m.Value("i", 0)
                    q = m.Queue()
                    p = ctx.Process(target=set_value, args=(v, q))
                    p.start()
                    self.assertEqual(q.get(timeout=60), "set")
                    join_all(self, [p])
                    self.assertEqual(v.value,
                                     {"from": "child", "typecode": "i"})
                    self.assertEqual(v.typecode, "i")

    def test_queue_join_across_processes(self):
        """Manager().Queue() is joinable (queue.Queue): items consumed and
        task_done()'d in children release the parent's join()."""
        for method in METHODS:
            with self.subTest(method=method):
                ctx = mp.get_context(method)
                with posh.Manager() as m:
                    q, out = m.Queue(), m.list()
                    ps = [ctx.Process(target=consume, args=(q, out, 3))
                          for _ in range(2)]
                    for p in ps:
                        p.start()
                    for i in range(6):
                        q.put(i)
                    t = threading.Thread(target=q.join, daemon=True)
                    t.start()
                    t.join(60)
                    self.assertFalse(t.is_alive(), "join() hung")
                    join_all(self, ps)
                    self.assertEqual(sorted(out), list(range(6)))
                    with self.assertRaises(ValueError):
                        q.task_done()

    def test_queue_to_pool_workers(self):
        """Manager().Queue() goes to Pool workers as a task argument (posh's
        Pool and multiprocessing's), and task_done() there counts."""
        with posh.Manager() as m:
            q = m.Queue()
            with m.Pool(2) as pool:
                self.assertEqual(
                    pool.map(produce, [(q, i) for i in range(5)]),
                    list(range(5)))
            self.assertEqual(sorted(q.get(timeout=60) for _ in range(5)),
                             [i * i for i in range(5)])
            for _ in range(5):
                q.task_done()
            q.join()
            for i in range(3):
                q.put(i)
            with mp.get_context(METHODS[-1]).Pool(2) as pool:
                got = pool.map(drain_one, [q] * 3)
            self.assertEqual(sorted(got), [0, 1, 2])
            q.join()


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
            # '_' names stay local to this object, as on multiprocessing's
            # NamespaceProxy: not shared, not in the repr
            ns._private = 1
            self.assertEqual(ns._private, 1)
            self.assertFalse(hasattr(pickle.loads(pickle.dumps(ns)),
                                     "_private"))
            del ns._private
            with self.assertRaises(AttributeError):
                ns._private
            del ns.a
            with self.assertRaises(AttributeError):
                ns.a
            ns.b = 2
            self.assertEqual(repr(ns), "Namespace(b=2)")

    def test_value_and_array_proxies(self):
        with posh.Manager() as m:
            v = m.Value("d", [1, "two"], lock=False)
            self.assertEqual((v.typecode, v.value), ("d", [1, "two"]))
            w = pickle.loads(pickle.dumps(v))
            w.value = object.__class__  # any picklable object (a type)
            self.assertIs(v.value, type)
            self.assertEqual(w.typecode, "d")
            self.assertEqual(repr(m.Value("i", "x")), "ValueProxy('i', 'x')")
            with self.assertRaises(Exception):
                v.value = lambda: 0  # not picklable, as multiprocessing
            self.assertIs(v.value, type)
            a = m.Array("i", [1, 2, 3])
            b = pickle.loads(pickle.dumps(a))
            b[0] = 10
            self.assertEqual(list(a), [10, 2, 3])
            with self.assertRaises(IndexError):
                a[3]
            with self.assertRaises(TypeError):
                a[0] = "x"


if __name__ == "__main__":
    unittest.main()
