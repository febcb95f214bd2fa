# SPDX-License-Identifier: MIT
"""This file contains the tests of posh's Value, RawValue, Array and
RawArray: multiprocessing semantics, sharing with children under every
start method, zero-copy numpy views, and a lock holder killed -9."""
import ctypes
import os
import pickle
import signal
import unittest
import multiprocessing as mp

import posh
from posh import _posh
from helpers import METHODS, JOIN, join_all

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def add_many(v, arr, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1
        with arr:
            arr[0] += 1


def fill_numpy(raw):
    a = np.frombuffer(raw, dtype=np.float64)
    a[:] = np.arange(len(a))


def hold_value_lock(v, ev):
    v.get_lock().acquire()
    v.value = 99
    ev.set()
    import time
    time.sleep(600)


class ValueTest(unittest.TestCase):
    # Value: every type code and its ctypes type, value get/set, wrapping
    # integers like ctypes, the recursive lock.
    def test_value(self):
        for tc, x in (("b", -5), ("B", 250), ("h", -300), ("H", 60000),
                      ("i", -2**31), ("I", 2**32 - 1), ("l", -2**63),
                      ("L", 2**64 - 1), ("q", 2**63 - 1), ("Q", 2**64 - 1),
                      ("f", 1.5), ("d", -2.25), ("c", b"x")):
            v = posh.Value(tc, x)
            self.assertEqual(v.value, x, tc)
        self.assertEqual(posh.Value("i").value, 0)
        self.assertEqual(posh.Value("B", 257).value, 1)  # wraps
        self.assertEqual(posh.Value(ctypes.c_double, 0.5).value, 0.5)
        self.assertEqual(posh.Value(ctypes.c_int64, -1).value, -1)
        with self.assertRaises(TypeError):
            posh.Value("z")
        with self.assertRaises(TypeError):
            posh.Value(ctypes.c_wchar_p)
        with self.assertRaises(TypeError):
            posh.Value("i", "not an int")
        v = posh.Value("i", 1)
        with v.get_lock():
            with v.get_lock():
                v.value += 1
        with v:
            v.value *= 10
        self.assertTrue(v.acquire(timeout=1))
        v.release()
        with self.assertRaises(AssertionError):
            v.release()
        self.assertEqual(v.value, 20)
        self.assertIn("c_int(20)", repr(v))

    # RawValue has no lock; Value(lock=some Lock) uses that lock.
    def test_raw_and_given_lock(self):
        r = posh.RawValue("d", 2.0)
        self.assertEqual(r.value, 2.0)
        with self.assertRaises(AttributeError):
            r.get_lock()
        lk = posh.RLock()
        v = posh.Value("i", 3, lock=lk)
        self.assertIs(v.get_lock(), lk)
        with v:
            v.value += 1
        self.assertEqual(v.value, 4)
        self.assertIsInstance(pickle.loads(pickle.dumps(v)).get_lock(),
                              posh.RLock)
        with self.assertRaises(AttributeError):  # as multiprocessing
            posh.Value("i", lock="yes")
        with self.assertRaises(AttributeError):
            posh.Array("i", 3, lock="yes")
        # lock=False gives the raw object, without get_lock/get_obj, as
        # multiprocessing does (CPython's test_getobj_getlock)
        for raw in (posh.Value("i", 7, lock=False), posh.RawValue("i", 7),
                    posh.Array("i", [7, 8], lock=False),
                    posh.RawArray("i", [7, 8])):
            self.assertFalse(hasattr(raw, "get_lock"))
            self.assertFalse(hasattr(raw, "get_obj"))
            self.assertEqual(raw.value if hasattr(raw, "value") and
                             not isinstance(raw, posh.RawArray) else raw[0], 7)
            self.assertIs(type(pickle.loads(pickle.dumps(raw))), type(raw))
        self.assertIsInstance(posh.Value("i", 7, lock=False), posh.RawValue)
        self.assertIsInstance(posh.Array("i", 2, lock=False), posh.RawArray)
        for locked in (posh.Value("i"), posh.Value("i", lock=None),
                       posh.Array("i", 2), posh.Array("i", 2, lock=lk)):
            self.assertTrue(hasattr(locked, "get_lock"))
            self.assertIs(locked.get_obj(), locked)

    # Array: initialisers, indexing, negative indexes, slices, iteration,
    # char arrays' value/raw, errors.
    def test_array(self):
        a = posh.Array("i", [1, 2, 3, 4])
        self.assertEqual(len(a), 4)
        self.assertEqual(a[:], [1, 2, 3, 4])
        self.assertEqual(a[-1], 4)
        self.assertEqual(a[1:3], [2, 3])
        self.assertEqual(a[::2], [1, 3])
        a[0] = 10
        a[-1] = 40
        a[1:3] = [20, 30]
        self.assertEqual(list(a), [10, 20, 30, 40])
        with self.assertRaises(IndexError):
            a[4]
        with self.assertRaises(IndexError):
            a[-5] = 1
        with self.assertRaises(ValueError):
            a[0:2] = [1]
        self.assertEqual(posh.Array("d", 3)[:], [0.0, 0.0, 0.0])
        self.assertEqual(len(posh.Array("d", 0)), 0)
        c = posh.Array("c", b"hello")
        self.assertEqual((c.value, c.raw, c[1:3], c[0]),
                         (b"hello", b"hello", b"el", b"h"))
        c.value = b"hi"
        self.assertEqual((c.value, c.raw), (b"hi", b"hi\0lo"))
        with self.assertRaises(ValueError):
            c.value = b"toolong"
        ra = posh.RawArray(ctypes.c_ubyte, 3)
        with self.assertRaises(AttributeError):
            ra.get_lock()
        ra[0] = 255
        self.assertEqual(ra[:], [255, 0, 0])
        with a.get_lock():
            a[0] += 1
        self.assertEqual(a[0], 11)
        with self.assertRaises(ValueError):
            posh.Array("i", -1)

    # numpy scalars are accepted as ctypes accepts them: integers (through
    # __index__) for the integer codes and 'c', anything float-like for
    # 'f'/'d'; indexes and sizes may be numpy integers; a numpy array is an
    # initializer.  Non-numbers stay a TypeError.
    @unittest.skipIf(np is None, "numpy missing")
    def test_numpy_scalars(self):
        for tc, x, want in (("i", np.int64(-7), -7), ("q", np.int32(5), 5),
                            ("B", np.uint8(200), 200),
                            ("b", np.int16(300), 44),  # wraps as ctypes
                            ("Q", np.uint64(2**64 - 1), 2**64 - 1),
                            ("l", np.intp(3), 3), ("I", np.uint32(7), 7),
                            ("d", np.float64(2.5), 2.5),
                            ("f", np.float32(1.5), 1.5),
                            ("d", np.int64(4), 4.0),
                            ("c", np.uint8(65), b"A")):
            with self.subTest(typecode=tc, value=repr(x)):
                v = posh.Value(tc, x)
                self.assertEqual(v.value, want)
                v.value = x
                self.assertEqual(v.value, want)
                r = posh.RawValue(tc)
                r.value = x
                self.assertEqual(r.value, want)
        self.assertEqual(posh.Value("b", np.int16(300)).value,
                         ctypes.c_byte(np.int16(300)).value)
        a = posh.Array("q", np.arange(4))
        self.assertEqual(a[:], [0, 1, 2, 3])
        a[np.int64(2)] = np.int64(9)
        a[np.int32(-1)] = np.uint8(7)
        self.assertEqual((a[np.int64(2)], a[np.intp(-1)], a[np.uint8(0)]),
                         (9, 7, 0))
        a[:] = np.array([5, 6, 7, 8], dtype=np.int32)
        self.assertEqual(a[:], [5, 6, 7, 8])
        with self.assertRaises(IndexError):
            a[np.int64(4)]
        self.assertEqual(posh.Array("d", np.linspace(0, 1, 3))[:],
                         [0.0, 0.5, 1.0])
        self.assertEqual(len(posh.Array("i", np.int64(3))), 3)
        self.assertEqual(posh.RawArray("B", np.array([1, 2], np.uint8))[:],
                         [1, 2])
        for tc, bad in (("i", 1.5), ("i", np.float64(1.0)), ("i", "3"),
                        ("q", None), ("d", "x"), ("c", "x")):
            with self.subTest(typecode=tc, bad=repr(bad)):
                with self.assertRaises(TypeError):
                    posh.Value(tc, bad)
        with self.assertRaises(OverflowError):
            posh.Value("d", 10**400)  # as ctypes.c_double
        for bad in (1.0, np.float64(1), "1", None):
            with self.subTest(index=repr(bad)):
                with self.assertRaises(TypeError):
                    a[bad]
                with self.assertRaises(TypeError):
                    a[bad] = 1
        with self.assertRaises(TypeError):
            a._getitem(1.0)

    # The data is a buffer: memoryview and numpy see the shared memory.
    @unittest.skipIf(np is None, "numpy missing")
    def test_numpy_view(self):
        a = posh.RawArray("d", 1000)
        n = np.frombuffer(a, dtype=np.float64)
        n[:] = 1.5
        self.assertEqual(a[999], 1.5)
        self.assertTrue(_posh.in_heap(n))
        m = memoryview(posh.Array("q", 4).get_obj())
        self.assertEqual((m.format, m.itemsize, m.shape), ("q", 8, (4,)))

    # Pickling gives a handle to the same object.
    def test_pickle(self):
        a = posh.Array("i", [1, 2])
        b = pickle.loads(pickle.dumps(a))
        b[0] = 5
        self.assertEqual(a[0], 5)
        self.assertLess(len(pickle.dumps(a)), 300)

    # A handle to an object freed since (last reference closed) is stale:
    # PoshError, never a crash or another object's memory.
    def test_stale(self):
        a = posh.Array("i", 4)
        data = pickle.dumps(a)
        del a
        posh.Array("i", 4)  # may reuse the memory
        with self.assertRaises(posh.PoshError):
            pickle.loads(data)


class ValueCrossProcessTest(unittest.TestCase):
    # Increments under the lock from several children are never lost.
    def test_counter(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = posh.get_context(m)
                v, arr = ctx.Value("i", 0), ctx.Array("q", 2)
                ps = [ctx.Process(target=add_many, args=(v, arr, 300))
                      for _ in range(3)]
                for p in ps:
                    p.start()
                join_all(self, ps)
                self.assertEqual([p.exitcode for p in ps], [0, 0, 0])
                self.assertEqual(v.value, 900)
                self.assertEqual(arr[:], [900, 0])

    # A child writes a RawArray through numpy; the parent sees it.
    @unittest.skipIf(np is None, "numpy missing")
    def test_numpy_shared(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = mp.get_context(m)
                raw = posh.RawArray("d", 10000)
                p = ctx.Process(target=fill_numpy, args=(raw,))
                p.start()
                join_all(self, [p])
                self.assertEqual(p.exitcode, 0)
                self.assertTrue(np.array_equal(
                    np.frombuffer(raw, dtype=np.float64), np.arange(10000)))

    # A child killed -9 while holding a Value's lock: the value is usable.
    def test_kill_holder(self):
        for m in ("fork", "spawn"):
            with self.subTest(method=m):
                ctx = mp.get_context(m)
                v, ev = posh.Value("i", 0), posh.Event()
                p = ctx.Process(target=hold_value_lock, args=(v, ev))
                p.start()
                self.assertTrue(ev.wait(JOIN))
                self.assertFalse(v.get_lock().acquire(timeout=0.05))
                os.kill(p.pid, signal.SIGKILL)
                join_all(self, [p])
                self.assertTrue(v.get_lock().acquire(timeout=JOIN))
                v.value += 1
                v.get_lock().release()
                self.assertEqual(v.value, 100)


if __name__ == "__main__":
    unittest.main()
