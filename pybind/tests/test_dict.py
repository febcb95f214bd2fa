# SPDX-License-Identifier: MIT
"""This file contains the tests of posh.dict: the mapping protocol against a
plain dict, insertion order and LIFO popitem (also across processes),
keyword names, key canonicalisation, sharing with children under every start
method and through ProcessPoolExecutor, zero-copy numpy values with
reference-counted heap blocks, a writer killed -9, and bad input."""
import os
import signal
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


def child_add(d, base, n):
    for i in range(n):
        d["k%d" % (base + i)] = (base + i, "v")
    d.setdefault("first", base)


def pool_task(d, k):
    d[k] = k * 2
    return d.get(k)


def hammer(d, ev):
    i = 0
    ev.set()
    while True:
        d["k%d" % (i % 50)] = ("x" * (i % 300), i)
        i += 1


def pop_all(d, out):
    # pop until empty; record the keys popped, in order
    got = []
    try:
        while True:
            got.append(d.popitem()[0])
    except KeyError:
        pass
    out.extend(got)


def insert_seq(d, tag, n):
    for i in range(n):
        d["%s%d" % (tag, i)] = i


def read_array(d, q):
    a = d["arr"]
    q.put((bool(_posh.in_heap(a)), float(a.sum())))


class DictProtocolTest(unittest.TestCase):
    # Every mapping operation gives the same results as on a plain dict.
    def test_against_dict(self):
        init = {"a": 1, "b": [1, 2], 3: None, (1, "t"): {"x": 1.5}}
        p = dict(init, z=0)
        s = posh.dict(init, z=0)
        self.assertEqual(s, p)
        ops = [
            lambda d: d.__setitem__("c", b"bytes"),
            lambda d: d.__setitem__("a", "over"),
            lambda d: d.__delitem__("b"),
            lambda d: d.get("a"), lambda d: d.get("nope", 7),
            lambda d: d.setdefault("n", 5), lambda d: d.setdefault("n", 6),
            lambda d: d.pop("c"), lambda d: d.pop("zz", "dflt"),
            lambda d: d.update({"u": 1}, w=2),
            lambda d: d.update([("p", 1), ("q", 2)]),
            lambda d: ("a" in d, "zz" in d, len(d)),
            lambda d: sorted(map(repr, d.keys())),
            lambda d: sorted(map(repr, d.values())),
            lambda d: sorted(map(repr, d.items())),
            lambda d: sorted(map(repr, iter(d))),
            lambda d: d == {"x": 1},
            lambda d: d.copy() if type(d) is dict else d.copy(),
        ]
        for op in ops:
            self.assertEqual(op(s), op(p))
            self.assertEqual(s.copy(), p)
        self.assertIs(type(s.copy()), dict)
        self.assertEqual(repr(s), repr(s.copy()))
        k, v = s.popitem()
        self.assertEqual(p.pop(k), v)
        self.assertEqual(s, p)
        s.clear()
        p.clear()
        self.assertEqual(s, p)
        with self.assertRaises(KeyError):
            s.popitem()
        self.assertEqual(posh.dict.fromkeys("ab", 0), {"a": 0, "b": 0})
        self.assertNotEqual(s, [])

    # Keys equal as numbers are one key (stored as the int); str, bytes,
    # int, tuple keys behave as in dict.
    def test_keys(self):
        d = posh.dict()
        d[1] = "int"
        self.assertEqual(d[1.0], "int")
        self.assertEqual(d[True], "int")
        self.assertEqual(d[complex(1, 0)], "int")
        d[1.0] = "float"
        self.assertEqual(len(d), 1)
        self.assertEqual(d[1], "float")
        d[0] = "zero"
        self.assertEqual(d[-0.0], "zero")
        self.assertEqual(d[False], "zero")
        d[1.5] = "f"
        d["1"] = "s"
        d[b"1"] = "b"
        d[(1, 2.0)] = "t"
        self.assertEqual(d[(True, 2)], "t")
        d[2**100] = "big"
        d[None] = "n"
        d[frozenset()] = "fs"
        p = {1: "float", 0: "zero", 1.5: "f", "1": "s", b"1": "b",
             (1, 2): "t", 2**100: "big", None: "n", frozenset(): "fs"}
        self.assertEqual(d, p)
        for k in p:
            self.assertIn(k, d)

    # Unhashable key -> TypeError, missing key -> KeyError.
    def test_bad_input(self):
        d = posh.dict()
        for k in ([1], {}, bytearray(b"x"), (1, [2])):
            with self.assertRaises(TypeError):
                d[k] = 1
            with self.assertRaises(TypeError):
                d[k]
            with self.assertRaises(TypeError):
                k in d
        with self.assertRaises(KeyError):
            d["missing"]
        with self.assertRaises(KeyError):
            del d["missing"]
        with self.assertRaises(KeyError):
            d.pop("missing")
        with self.assertRaises(TypeError):
            posh.dict({}, {})
        with self.assertRaises(TypeError):
            hash(d)

    # get_many gives what get gives for each key: present and absent keys,
    # canonical numeric keys, values bigger than its batch buffer, more
    # keys than one batch, any iterable; bad keys raise as get does.
    def test_get_many(self):
        big = "y" * 5000
        d = posh.dict({"a": 1, 2: "two", "big": big, (1, "t"): [1.5]})
        for i in range(40):
            d["k%d" % i] = i
        keys = ["a", 2.0, True, "nope", "big", (1, "t")] + \
            ["k%d" % i for i in range(40)] + ["k99"]
        self.assertEqual(d.get_many(keys),
                         [d.get(k) for k in keys])
        self.assertEqual(d.get_many(keys, "dflt"),
                         [d.get(k, "dflt") for k in keys])
        self.assertEqual(d.get_many(iter(["big", "a"]), default=0),
                         [big, 1])
        self.assertEqual(d.get_many(k for k in ("k3", "zz")), [3, None])
        self.assertEqual(d.get_many([]), [])
        with self.assertRaises(TypeError):
            d.get_many(["a", [1]])
        with self.assertRaises(TypeError):
            d.get_many(5)
        with self.assertRaises(TypeError):
            d.get_many()


class DictOrderTest(unittest.TestCase):
    # Iteration, views, repr, reversed, copy and popitem follow insertion
    # order, as dict: an overwrite keeps the key's place, a delete + insert
    # moves it to the end, popitem is LIFO.
    def test_insertion_order(self):
        keys = [(i * 7919) % 200 for i in range(200)]  # not hash order
        keys = keys[:50] + ["s%d" % k for k in keys[50:120]] + \
            [(k, "t") for k in keys[120:]] + [None, b"b", 2.5]
        p, s = {}, posh.dict()
        for i, k in enumerate(keys):
            p[k] = s[k] = i
        for k in keys[::3]:
            p[k] = s[k] = "over"         # keeps its place
        for k in keys[1::5]:
            del p[k], s[k]
        for k in keys[1::10]:
            p[k] = s[k] = "again"        # goes to the end
        self.assertEqual(p.setdefault("new", 1), s.setdefault("new", 1))
        self.assertEqual(p.setdefault(keys[0], 2), s.setdefault(keys[0], 2))
        p.update([("u1", 1), (keys[2], 2)], u2=3)
        s.update([("u1", 1), (keys[2], 2)], u2=3)
        self.assertEqual(s.keys(), list(p.keys()))
        self.assertEqual(list(s), list(p))
        self.assertEqual(s.values(), list(p.values()))
        self.assertEqual(s.items(), list(p.items()))
        self.assertEqual(list(reversed(s)), list(reversed(p)))
        self.assertEqual(repr(s), repr(p))
        self.assertEqual(list(s.copy().items()), list(p.items()))
        self.assertEqual(list((s | {"z": 0}).items()),
                         list((p | {"z": 0}).items()))
        self.assertEqual(list(({"z": 0, keys[0]: 1} | s).items()),
                         list(({"z": 0, keys[0]: 1} | p).items()))
        self.assertEqual(list(posh.dict.fromkeys("zyxab")), list("zyxab"))
        self.assertEqual(list(posh.dict(p)), list(p))
        while p:
            self.assertEqual(s.popitem(), p.popitem())
        self.assertEqual(len(s), 0)
        with self.assertRaises(KeyError):
            s.popitem()
        # the order goes on after the dict was emptied (and cleared)
        s["b"] = s["a"] = 1
        s.clear()
        self.assertEqual((len(s), s.items(), bool(s)), (0, [], False))
        s["b"] = s["a"] = 1
        self.assertEqual(list(s), ["b", "a"])
        self.assertEqual(s, {"a": 1, "b": 1})

    # Stamps travel with the object: a child's inserts go after the
    # parent's earlier ones and before its later ones; each process's own
    # inserts keep their order when two insert at once.
    def test_order_across_processes(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = mp.get_context(m)
                d = posh.dict()
                d["first"] = 0
                ps = [ctx.Process(target=insert_seq, args=(d, t, 300))
                      for t in ("a", "b")]
                for p in ps:
                    p.start()
                join_all(self, ps)
                d["last"] = 0
                keys = d.keys()
                self.assertEqual((keys[0], keys[-1], len(keys)),
                                 ("first", "last", 602))
                for t in ("a", "b"):
                    self.assertEqual([k for k in keys if k[0] == t],
                                     ["%s%d" % (t, i) for i in range(300)])

    # Processes popping at once never pop the same item, and each one
    # pops in LIFO order.
    def test_popitem_concurrent(self):
        ctx = mp.get_context("fork")
        d = posh.dict()
        n = 1500
        for i in range(n):
            d[i] = i
        outs = [posh.list() for _ in range(3)]
        ps = [ctx.Process(target=pop_all, args=(d, o)) for o in outs]
        for p in ps:
            p.start()
        join_all(self, ps)
        self.assertEqual([p.exitcode for p in ps], [0, 0, 0])
        got = [o.copy() for o in outs]
        for g in got:
            self.assertEqual(g, sorted(g, reverse=True))
        allk = [k for g in got for k in g]
        self.assertEqual(sorted(allk), list(range(n)))
        self.assertEqual(len(d), 0)

    # Keyword arguments of any name, as dict(**kw) / dict.update(**kw).
    def test_keyword_names(self):
        kw = {"other": 1, "self": 2, "iterable": 3, "mapping": 4, "kw": 5}
        self.assertEqual(posh.dict(**kw), dict(**kw))
        self.assertEqual(posh.dict({"a": 0}, other=9), {"a": 0, "other": 9})
        d = posh.dict()
        d.update(**kw)
        d.update({"x": 1}, other=7)
        d.update([("y", 2)], self=8)
        self.assertEqual(d, dict(kw, x=1, y=2, other=7, self=8))
        with self.assertRaises(TypeError):
            d.update({}, {})
        with self.assertRaises(TypeError):
            posh.dict.fromkeys("ab", 0, 1)
        with posh.Manager() as m:
            self.assertEqual(m.dict(other=1, iterable=2),
                             {"other": 1, "iterable": 2})
            self.assertEqual(m.dict(self=1), {"self": 1})


class DictSharingTest(unittest.TestCase):
    # Children under every start method write into the parent's dict.
    def test_processes(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = mp.get_context(m)
                d = posh.dict()
                ps = [ctx.Process(target=child_add, args=(d, i * 100, 50))
                      for i in range(2)]
                for p in ps:
                    p.start()
                join_all(self, ps)
                self.assertEqual([p.exitcode for p in ps], [0, 0])
                self.assertEqual(len(d), 101)
                self.assertEqual(d["k120"], (120, "v"))
                self.assertIn(d["first"], (0, 100))

    # The dict pickles as a handle into ProcessPoolExecutor tasks.
    def test_pool(self):
        for m in METHODS:
            with self.subTest(method=m):
                d = posh.dict()
                with ProcessPoolExecutor(2, mp_context=mp.get_context(m)) as ex:
                    res = list(ex.map(pool_task, [d] * 6, range(6)))
                self.assertEqual(res, [k * 2 for k in range(6)])
                self.assertEqual(d, {k: k * 2 for k in range(6)})

    # A writer killed -9 mid-stream leaves every key readable with a value
    # it wrote, and the dict writable.
    def test_kill9(self):
        d = posh.dict()
        ctx = mp.get_context("fork")
        ev = ctx.Event()
        p = ctx.Process(target=hammer, args=(d, ev))
        p.start()
        self.assertTrue(ev.wait(JOIN))
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGKILL)
        p.join(JOIN)
        self.assertGreater(len(d), 0)
        for k, v in d.items():
            self.assertEqual(v[0], "x" * (v[1] % 300))
            self.assertEqual(k, "k%d" % (v[1] % 50))
        d["k0"] = "after"
        self.assertEqual(d["k0"], "after")


@unittest.skipIf(np is None, "numpy needed")
class DictZeroCopyTest(unittest.TestCase):
    # Big arrays are read as views of the heap; copy=True gives private
    # memory; overwriting keeps live views valid; blocks are freed when the
    # last reference goes.
    def test_numpy(self):
        d = posh.dict()
        a = np.arange(100_000, dtype=np.float64)
        d["arr"] = a
        v1 = d["arr"]
        v2 = d.get("arr")
        self.assertTrue(_posh.in_heap(v1))
        self.assertTrue(np.shares_memory(v1, v2))
        self.assertTrue(np.array_equal(v1, a))
        c = d.get("arr", copy=True)
        self.assertFalse(_posh.in_heap(c))
        self.assertTrue(np.array_equal(c, a))
        m1, m2 = d.get_many(["arr", "arr"])
        self.assertTrue(_posh.in_heap(m1) and np.shares_memory(m1, v1))
        self.assertTrue(np.array_equal(m2, a))
        (mc,) = d.get_many(["arr"], copy=True)
        self.assertFalse(_posh.in_heap(mc))
        self.assertTrue(np.array_equal(mc, a))
        del m1, m2, mc
        base = posh.heap_info()["bytes_in_use"]
        d["arr"] = np.zeros(100_000)   # overwrite: views stay valid
        self.assertTrue(np.array_equal(v1, a))
        del v1, v2
        d["arr"] = 1                   # the zeros' block is freed at once
        del d["arr"]
        self.assertLessEqual(posh.heap_info()["bytes_in_use"], base)
        # pop/popitem hand the value over
        d["x"] = a
        r = d.pop("x")
        self.assertTrue(_posh.in_heap(r) and np.array_equal(r, a))
        d["y"] = [a, a]
        k, (r1, r2) = d.popitem()
        self.assertTrue(np.array_equal(r2, a))
        # a child reads the array zero-copy
        d["arr"] = a
        for m in METHODS:
            ctx = mp.get_context(m)
            q = ctx.Queue()
            p = ctx.Process(target=read_array, args=(d, q))
            p.start()
            self.assertEqual(q.get(timeout=JOIN), (True, float(a.sum())))
            join_all(self, [p])

    # The codec's counts: a stored value holds 1, each view 1 more; release
    # is idempotent.
    def test_refcounts(self):
        data = posh.dumps(np.ones(20_000))
        self.assertEqual(_posh._refcounts(data), [1])
        v = posh.loads(data, consume=False)
        self.assertEqual(_posh._refcounts(data), [2])
        self.assertEqual(_posh.release(data), 1)
        self.assertEqual(_posh.release(data), 1)  # no effect the 2nd time
        self.assertEqual(_posh._refcounts(data), [1])
        del v
        self.assertEqual(_posh._refcounts(data), [0])
        with self.assertRaises(ValueError):
            posh.loads(data, consume=False)   # released: stale


if __name__ == "__main__":
    unittest.main()
