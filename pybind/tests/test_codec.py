# SPDX-License-Identifier: MIT
"""This file contains the tests of posh's value codec (posh.dumps/loads):
native round trips, the pickle fallback and zero-copy heap buffers."""
import collections
import enum
import math
import multiprocessing
import multiprocessing.reduction
import pickle
import socket
import unittest

import posh
from posh import _posh
from helpers import METHODS, JOIN

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def rt(obj, **kw):
    return posh.loads(posh.dumps(obj), **kw)


class Color(enum.IntEnum):
    RED = 1


class CodecTest(unittest.TestCase):
    # Every native type round-trips to an equal value of the same exact type.
    def test_native_scalars(self):
        values = [None, True, False, 0, 1, -1, 2**63 - 1, -2**63, 2**63,
                  -2**63 - 1, 2**64, 10**100, -10**100, 255, -256, 1.5,
                  -0.0, math.inf, -math.inf, 1e-300, 1 + 2j, complex(0, -0.0),
                  "", "abc", "héllo wörld ☃ 𝄞", "\udc80lone", b"", b"\x00\xff",
                  bytearray(b"ab"), bytearray()]
        for v in values:
            with self.subTest(v=v):
                r = rt(v)
                self.assertIs(type(r), type(v))
                self.assertEqual(r, v)
        self.assertEqual(math.copysign(1, rt(-0.0)), -1)
        self.assertTrue(math.isnan(rt(math.nan)))
        self.assertEqual(math.copysign(1, rt(complex(0, -0.0)).imag), -1)

    # Big ints of every size near byte boundaries survive, both signs.
    def test_big_ints(self):
        for bits in range(60, 300, 7):
            for v in (2**bits, -2**bits, 2**bits - 1, -(2**bits) + 1):
                self.assertEqual(rt(v), v)

    # Nested containers keep structure, types and order.
    def test_containers(self):
        v = {"a": [1, (2, 3.0, [None, {"x": b"y"}])], 1: (), 2.5: [],
             (1, 2): {"": bytearray(b"z")}, None: {}}
        r = rt(v)
        self.assertEqual(r, v)
        self.assertEqual(list(r), list(v))
        self.assertIs(type(r[(1, 2)][""]), bytearray)
        deep = cur = []
        for _ in range(90):
            nxt = []
            cur.append(nxt)
            cur = nxt
        self.assertEqual(rt(deep), deep)

    # Non-native values (subclasses too) fall back to pickle, keep their type.
    def test_pickle_fallback(self):
        od = collections.OrderedDict(a=1)
        for v in (od, Color.RED, {1, 2}, frozenset([3]), range(5),
                  [od, Color.RED], ValueError("x")):
            r = rt(v)
            self.assertIs(type(r), type(v))
            if not isinstance(v, Exception):
                self.assertEqual(r, v)

    # Cycles and too-deep nesting are pickled whole (pickle keeps identity).
    def test_cycles_and_depth(self):
        a = []
        a.append(a)
        r = rt(a)
        self.assertIs(r[0], r)
        d = {}
        d["self"] = [d]
        r = rt(d)
        self.assertIs(r["self"][0], r)
        deep = cur = []
        for _ in range(300):
            nxt = []
            cur.append(nxt)
            cur = nxt
        self.assertEqual(rt(deep), deep)

    # Native encoding is compact: small values take a few bytes.
    def test_compact(self):
        self.assertLessEqual(len(posh.dumps(5)), 2)
        self.assertLessEqual(len(posh.dumps("ab")), 4)
        self.assertLess(len(posh.dumps([1, 2, 3])), len(pickle.dumps([1, 2, 3])))

    # Malformed input raises ValueError, never crashes.
    def test_malformed(self):
        good = posh.dumps({"a": [1, 2**80, "x", b"y", 1.0]})
        for i in range(len(good)):
            try:
                posh.loads(good[:i])
            except ValueError:
                pass
            else:
                self.fail("truncated input %d accepted" % i)
        for bad in (b"", b"Z", b"l\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
                    b"X\x01" + b"\x00" * 9 + b"N", b"NN"):
            with self.assertRaises(ValueError):
                posh.loads(bad)
        with self.assertRaises(TypeError):
            posh.loads("str")

    # Unpicklable values raise the pickle error and leak no heap block.
    def test_unpicklable(self):
        with self.assertRaises(Exception):
            posh.dumps([1, lambda: 0])


class Token:
    """Pickled through a reducer registered with multiprocessing.reduction
    only (plain pickle would copy its __dict__)."""
    def __init__(self, value):
        self.value = value


def _rebuild_token(value):
    return Token(("reduced", value))


def _reduce_token(t):
    return _rebuild_token, (t.value,)


multiprocessing.reduction.register(Token, _reduce_token)


def _use_handles(q, done):
    sock, conn = q.get(timeout=JOIN)
    sock.sendall(b"through the socket")
    conn.send("through the connection")
    sock.close()
    conn.close()
    done.set()


class ReducerTest(unittest.TestCase):
    # Objects are pickled with multiprocessing's reducers as well as
    # copyreg's, as multiprocessing's own queues do: a reducer registered
    # with multiprocessing.reduction.register is used, in nested pickles
    # too (a __reduce__ that encodes).
    def test_registered_reducer(self):
        self.assertEqual(posh.loads(posh.dumps(Token(5))).value,
                         ("reduced", 5))
        self.assertEqual(posh.loads(posh.dumps([Token(1), {"k": Token(2)}]))
                         [1]["k"].value, ("reduced", 2))

        class Nested:
            def __reduce__(self):
                return posh.loads, (posh.dumps(Token(3)),)
        self.assertEqual(posh.loads(posh.dumps(Nested())).value,
                         ("reduced", 3))
        # The reused pickler keeps nothing alive after a dumps.
        import weakref
        t = Token(4)
        r = weakref.ref(t)
        posh.dumps(t)
        del t
        self.assertIsNone(r())

    # A socket and a multiprocessing Connection sent through a posh queue
    # arrive usable in the child, under every start method (they travel as
    # handles the receiver duplicates; they used to fail to pickle, or to
    # arrive as a dead fd number).
    def test_socket_and_connection_through_queue(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = multiprocessing.get_context(m)
                a, b = socket.socketpair()
                r, w = multiprocessing.Pipe(duplex=False)
                q, done = posh.Queue(), posh.Event()
                p = ctx.Process(target=_use_handles, args=(q, done))
                p.start()
                q.put((b, w))
                b.close()
                w.close()
                self.assertTrue(done.wait(JOIN))
                a.settimeout(JOIN)
                self.assertEqual(a.recv(100), b"through the socket")
                self.assertTrue(r.poll(JOIN))
                self.assertEqual(r.recv(), "through the connection")
                p.join(JOIN)
                self.assertEqual(p.exitcode, 0)
                a.close()
                r.close()


@unittest.skipIf(np is None, "numpy missing")
class ZeroCopyTest(unittest.TestCase):
    # A big array comes back as a view of heap memory; copy=True is private.
    def test_numpy_zero_copy(self):
        a = np.arange(100_000, dtype=np.float64)  # 800 KB
        data = posh.dumps({"arr": a, "tag": "x"})
        self.assertLess(len(data), 1000)  # the payload is out of band
        r = posh.loads(data)["arr"]
        self.assertTrue(_posh.in_heap(r))
        self.assertTrue(np.array_equal(r, a))
        self.assertFalse(np.shares_memory(r, a))
        self.assertTrue(r.flags.writeable)
        r[0] = 42.0  # writable heap memory
        r2 = posh.loads(posh.dumps(a), copy=True)
        self.assertFalse(_posh.in_heap(r2))
        self.assertTrue(np.array_equal(r2, a))

    # Small arrays stay in band; non-contiguous arrays round-trip too.
    def test_small_and_strided(self):
        s = np.arange(10)
        r = rt(s)
        self.assertFalse(_posh.in_heap(r))
        self.assertTrue(np.array_equal(r, s))
        big = np.arange(400_000, dtype=np.int32).reshape(400, 1000)
        t = big.T  # F-contiguous
        self.assertTrue(np.array_equal(rt(t), t))
        sl = big[::2, ::3]  # not contiguous: pickled in band
        self.assertTrue(np.array_equal(rt(sl), sl))

    # Heap blocks are freed when the last view goes, and by discard().
    def test_blocks_freed(self):
        a = np.ones(1 << 20, dtype=np.uint8)
        base = posh.heap_info()["bytes_in_use"]
        for _ in range(50):
            r = posh.loads(posh.dumps(a))
            self.assertTrue(_posh.in_heap(r))
            del r
        data = posh.dumps([a, a])
        self.assertEqual(_posh.discard(data), 2)
        self.assertLessEqual(posh.heap_info()["bytes_in_use"], base + (2 << 20))

    # The out-of-band threshold is configurable.
    def test_threshold(self):
        old = _posh.set_oob_threshold(1 << 30)
        try:
            r = rt(np.ones(1 << 17))
            self.assertFalse(_posh.in_heap(r))
        finally:
            _posh.set_oob_threshold(old)
        with self.assertRaises(ValueError):
            _posh.set_oob_threshold(0)

    # A HeapBuffer exports writable memory and reports its size.
    def test_heapbuffer(self):
        r = posh.loads(posh.dumps(np.zeros(1 << 17, dtype=np.uint8)))
        hb = r.base
        while hb is not None and not isinstance(hb, posh.HeapBuffer):
            hb = getattr(hb, "base", None) or getattr(hb, "obj", None)
        self.assertIsInstance(hb, posh.HeapBuffer)
        m = memoryview(hb)
        self.assertEqual(m.nbytes, 1 << 17)
        self.assertFalse(m.readonly)


if __name__ == "__main__":
    unittest.main()
