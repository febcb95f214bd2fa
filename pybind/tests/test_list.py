# SPDX-License-Identifier: MIT
"""This file contains the tests of posh.list: the sequence protocol against
a plain list (indices, slices, extended slices, every method), sharing
with children under every start method and ProcessPoolExecutor, zero-copy
numpy items, an appender killed -9, and bad input."""
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


def child_append(l, base, n):
    for i in range(n):
        l.append(base + i)


def pool_task(l, x):
    l.append(x)
    return len(l) > 0


def hammer(l, ev):
    i = 0
    ev.set()
    while True:
        l[i % 10] = ("y" * (i % 500), i)
        l.append(i)
        if len(l) > 200:
            del l[10:]
        i += 1


class ListProtocolTest(unittest.TestCase):
    # Every sequence operation gives the same result as on a plain list.
    def test_against_list(self):
        init = [3, "a", None, 1.5, (1, 2), [4], b"z", 3]
        p = list(init)
        s = posh.list(init)
        self.assertEqual(s, p)
        ops = [
            lambda l: l[0], lambda l: l[-1], lambda l: l[2:5],
            lambda l: l[::-1], lambda l: l[1::3], lambda l: l[-3:],
            lambda l: l.__setitem__(1, "b"),
            lambda l: l.__setitem__(-1, 9),
            lambda l: l.__setitem__(slice(1, 3), ["x", "y", "z"]),
            lambda l: l.__setitem__(slice(0, 6, 2), [0, 2, 4]),
            lambda l: l.__delitem__(slice(None, None, 3)),
            lambda l: l.__delitem__(0),
            lambda l: l.append({"d": 1}),
            lambda l: l.extend(range(4)),
            lambda l: l.insert(2, "ins"), lambda l: l.insert(-100, "front"),
            lambda l: l.insert(100, "back"),
            lambda l: l.pop(), lambda l: l.pop(0), lambda l: l.pop(-2),
            lambda l: l.remove("ins"),
            lambda l: l.index(2), lambda l: l.count(2),
            lambda l: (2 in l, "nope" in l, len(l)),
            lambda l: l.reverse(),
            lambda l: list(iter(l)), lambda l: list(reversed(l)),
            lambda l: l + [1], lambda l: [0] + l, lambda l: l * 2,
            lambda l: 2 * l,
            lambda l: (l == p, l != [], l < [99], l <= l, l > [], l >= []),
        ]
        for i, op in enumerate(ops):
            self.assertEqual(op(s), op(p), i)
            self.assertEqual(s, p, i)
        s2 = posh.list([5, 1, 4, 2])
        p2 = [5, 1, 4, 2]
        for kw in ({}, {"reverse": True}, {"key": lambda x: -x}):
            s2.sort(**kw)
            p2.sort(**kw)
            self.assertEqual(s2, p2)
        s2 += [7]
        p2 += [7]
        s2 *= 2
        p2 *= 2
        self.assertEqual(s2, p2)
        self.assertIs(type(s2 + []), list)
        self.assertIs(type(s2.copy()), list)
        self.assertEqual(repr(s2), repr(p2))
        s2[:] = s2
        self.assertEqual(s2, p2)
        s2.clear()
        self.assertEqual(s2, [])
        s2 *= 0
        self.assertEqual(len(s2), 0)

    # Bad input: IndexError, ValueError, TypeError as list.
    def test_bad_input(self):
        s = posh.list([1, 2, 3])
        with self.assertRaises(IndexError):
            s[3]
        with self.assertRaises(IndexError):
            s[-4]
        with self.assertRaises(IndexError):
            s[5] = 1
        with self.assertRaises(IndexError):
            del s[9]
        with self.assertRaises(IndexError):
            posh.list().pop()
        with self.assertRaises(ValueError):
            s.remove(42)
        with self.assertRaises(ValueError):
            s.index(42)
        with self.assertRaises(ValueError):
            s[::2] = [1, 2, 3]
        with self.assertRaises(ValueError):
            s[::0]
        with self.assertRaises(TypeError):
            s["x"]
        with self.assertRaises(TypeError):
            hash(s)
        self.assertEqual(s, [1, 2, 3])


class ListIterableTest(unittest.TestCase):
    # Any iterable builds / extends a list: numpy arrays (whose truth
    # value is ambiguous or False), empty generators, ranges, dicts.
    @unittest.skipIf(np is None, "numpy needed")
    def test_numpy_and_iterables(self):
        a = np.arange(5)
        self.assertEqual(posh.list(a), list(a))
        self.assertEqual(posh.list(np.array([7])), [7])
        self.assertEqual(posh.list(np.array([])), [])
        self.assertEqual(posh.list(x for x in ()), [])
        self.assertEqual(posh.list(x * 2 for x in range(3)), [0, 2, 4])
        self.assertEqual(posh.list({"a": 1, "b": 2}), ["a", "b"])
        rows = posh.list(np.ones((2, 3)))
        self.assertEqual(len(rows), 2)
        self.assertTrue(np.array_equal(rows[1], np.ones(3)))
        with self.assertRaises(TypeError):
            posh.list(5)
        with self.assertRaises(TypeError):
            posh.list(iterable=[1])        # as list: positional only
        l = posh.list([1])
        l += np.arange(2)
        l[1:2] = np.array([8, 9])
        self.assertEqual(l, [1, 8, 9, 1])
        # numpy integers (any __index__) repeat, as for list
        n = np.int64(2)
        self.assertEqual(posh.list([1, 2]) * n, [1, 2] * n)
        self.assertEqual(n * posh.list([1, 2]), [1, 2, 1, 2])
        l = posh.list([1, 2])
        l *= n
        self.assertEqual(l, [1, 2, 1, 2])
        with self.assertRaises(TypeError):
            posh.list([1]) * 2.0
        with self.assertRaisesRegex(ValueError, "not in list"):
            l.remove(9)


class ListSharingTest(unittest.TestCase):
    # Children under every start method append to the parent's list.
    def test_processes(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = mp.get_context(m)
                s = posh.list()
                ps = [ctx.Process(target=child_append, args=(s, i * 100, 50))
                      for i in range(2)]
                for p in ps:
                    p.start()
                join_all(self, ps)
                self.assertEqual(sorted(s), list(range(50)) +
                                 list(range(100, 150)))

    # The list pickles as a handle into ProcessPoolExecutor tasks.
    def test_pool(self):
        for m in METHODS:
            with self.subTest(method=m):
                s = posh.list()
                with ProcessPoolExecutor(2, mp_context=mp.get_context(m)) as ex:
                    self.assertTrue(all(ex.map(pool_task, [s] * 5, range(5))))
                self.assertEqual(sorted(s), list(range(5)))

    # A writer killed -9 leaves the list usable, every item decodable.
    def test_kill9(self):
        s = posh.list([None] * 10)
        ctx = mp.get_context("fork")
        ev = ctx.Event()
        p = ctx.Process(target=hammer, args=(s, ev))
        p.start()
        self.assertTrue(ev.wait(JOIN))
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGKILL)
        p.join(JOIN)
        items = s.copy()
        self.assertGreaterEqual(len(items), 10)
        for x in items[:10]:
            if x is not None:
                self.assertEqual(x[0], "y" * (x[1] % 500))
        s.append("after")
        self.assertEqual(s[-1], "after")


@unittest.skipIf(np is None, "numpy needed")
class ListZeroCopyTest(unittest.TestCase):
    # Big items are heap views; get(copy=True) is private; overwrite and
    # delete keep live views valid and free the blocks after.
    def test_numpy(self):
        s = posh.list()
        a = np.arange(50_000, dtype=np.int64)
        s.append(a)
        v = s[0]
        self.assertTrue(_posh.in_heap(v))
        self.assertTrue(np.array_equal(v, a))
        c = s.get(0, copy=True)
        self.assertFalse(_posh.in_heap(c))
        base = posh.heap_info()["bytes_in_use"]
        s[0] = np.zeros(50_000)
        self.assertTrue(np.array_equal(v, a))
        del v
        s[0:1] = [0]
        s.clear()
        self.assertLessEqual(posh.heap_info()["bytes_in_use"], base)
        s.extend([a, a])
        r = s.pop()
        self.assertTrue(_posh.in_heap(r) and np.array_equal(r, a))
        s.sort(key=lambda x: 0)
        self.assertTrue(np.array_equal(s[0], a))


if __name__ == "__main__":
    unittest.main()
