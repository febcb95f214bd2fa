# SPDX-License-Identifier: MIT
"""This file contains the tests of posh.Pipe and its Connection objects:
multiprocessing's behaviour and exceptions (compared with multiprocessing
on the same scenario), fileno with select, multiprocessing.connection.wait
and asyncio, EOF when the peer closes or is killed -9, children under every
start method, large messages, numpy zero copy, pickling, bad input."""
import array
import asyncio
import os
import pickle
import select
import signal
import threading
import time
import unittest
import multiprocessing as mp
import multiprocessing.connection as mpc

import posh
from posh import _posh
from helpers import METHODS, JOIN, join_all

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None


def outcome(fn):
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001
        return ("raise", type(e).__name__, str(e) if isinstance(e, OSError)
                and not e.errno else "")


def pipe_scenario(lib):
    out = []
    a, b = lib.Pipe()
    out.append((a.readable, a.writable, b.readable, b.writable, a.closed))
    out.append(outcome(lambda: a.poll()))
    out.append(outcome(lambda: a.send({"x": [1, 2.5, "s", None]})))
    out.append(outcome(lambda: b.poll(1)))
    out.append(outcome(b.recv))
    out.append(outcome(lambda: b.send_bytes(b"hello world", 6)))
    out.append(outcome(lambda: b.send_bytes(b"hello world", 0, 5)))
    out.append(outcome(lambda: b.send_bytes(bytearray(b"abc"))))
    out.append(outcome(a.recv_bytes))
    out.append(outcome(lambda: a.recv_bytes(100)))
    buf = bytearray(10)
    out.append(outcome(lambda: a.recv_bytes_into(buf, 2)))
    out.append(bytes(buf))
    arr = array.array("i", [0] * 4)
    out.append(outcome(lambda: b.send_bytes(array.array("i", [7, 8]))))
    out.append(outcome(lambda: a.recv_bytes_into(arr)))
    out.append(list(arr))
    out.append(outcome(lambda: b.send_bytes(b"x" * 20)))
    small = bytearray(4)
    try:
        a.recv_bytes_into(small)
        out.append("no raise")
    except mp.BufferTooShort as e:
        out.append(("BufferTooShort", e.args[0]))
    out.append(outcome(lambda: b.send_bytes(b"abc", -1)))
    out.append(outcome(lambda: b.send_bytes(b"abc", 4)))
    out.append(outcome(lambda: b.send_bytes(b"abc", 1, -1)))
    out.append(outcome(lambda: b.send_bytes(b"abc", 1, 3)))
    out.append(outcome(lambda: a.recv_bytes(-1)))
    out.append(outcome(lambda: a.recv_bytes_into(bytearray(2), -1)))
    out.append(outcome(lambda: a.recv_bytes_into(bytearray(2), 3)))
    out.append(outcome(lambda: b.send_bytes(b"0123456789")))
    out.append(outcome(lambda: a.recv_bytes(5)))   # bad message length
    out.append((a.closed, a.readable, a.writable))
    out.append(outcome(lambda: b.send(1)))
    out.append(outcome(a.recv))                   # OSError: not readable
    b.close()
    out.append(outcome(b.recv))                   # handle is closed
    out.append(outcome(lambda: b.send(1)))
    out.append(outcome(b.fileno))
    out.append(outcome(lambda: b.poll()))
    out.append(outcome(b.close))
    out.append(b.closed)
    r, w = lib.Pipe(duplex=False)
    out.append((r.readable, r.writable, w.readable, w.writable))
    out.append(outcome(lambda: r.send(1)))
    out.append(outcome(w.recv))
    out.append(outcome(lambda: w.send([1, (2, 3)])))
    out.append(outcome(r.recv))
    w.close()
    out.append(outcome(lambda: r.poll(1)))
    out.append(outcome(r.recv))                   # EOFError
    with lib.Pipe()[0] as c:
        out.append(c.closed)
    out.append(c.closed)
    return out


def echo(conn):
    while True:
        try:
            x = conn.recv()
        except EOFError:
            return
        if x is None:  # under fork the child holds the parent's end too
            return     # (as with multiprocessing), so it would see no EOF
        if np is not None and isinstance(x, np.ndarray):
            conn.send((float(x[-1]), _posh.in_heap(x)))
        else:
            conn.send(x)


def send_then_exit(conn, n):
    for i in range(n):
        conn.send(i)
    conn.close()


def sleep_forever(conn, ready):
    ready.set()
    time.sleep(600)


class PipeTest(unittest.TestCase):
    # Every method and exception behaves as multiprocessing's.
    def test_compat_with_multiprocessing(self):
        mine, theirs = pipe_scenario(posh), pipe_scenario(mp)
        self.assertEqual(len(mine), len(theirs))
        for i, (x, y) in enumerate(zip(mine, theirs)):
            self.assertEqual(x, y, "step %d" % i)

    # Messages of every size (beyond the 64 KiB ring) and many in a row.
    def test_sizes(self):
        a, b = posh.Pipe()
        for n in (0, 1, 100, 5000, 70000, 3 << 20):
            data = os.urandom(n)
            # beyond the ring a send waits for the reader (as an OS pipe)
            t = threading.Thread(target=lambda: (a.send_bytes(data),
                                                 a.send(data)))
            t.start()
            self.assertEqual(b.recv_bytes(), data)
            self.assertEqual(b.recv(), data)
            t.join()
        for i in range(1000):
            a.send(i)
            self.assertEqual(b.recv(), i)

    @unittest.skipIf(np is None, "numpy not installed")
    # A big numpy array is received without a copy; recv(copy=True) gives
    # private memory.
    def test_numpy_zero_copy(self):
        a, b = posh.Pipe()
        x = np.arange(1 << 17, dtype=np.float64)
        a.send(x)
        y = b.recv()
        self.assertTrue(_posh.in_heap(y))
        np.testing.assert_array_equal(x, y)
        a.send(x)
        z = b.recv(copy=True)
        self.assertFalse(_posh.in_heap(z))
        np.testing.assert_array_equal(x, z)

    # fileno(): select/poll, multiprocessing.connection.wait and asyncio
    # see data arrive and EOF.
    def test_fileno(self):
        a, b = posh.Pipe()
        fd = b.fileno()
        self.assertIsInstance(fd, int)
        self.assertEqual(select.select([fd], [], [], 0)[0], [])
        a.send("x")
        self.assertEqual(select.select([fd], [], [], 5)[0], [fd])
        self.assertEqual(mpc.wait([b], timeout=5), [b])
        self.assertEqual(b.recv(), "x")
        time.sleep(0.05)
        self.assertEqual(mpc.wait([b], timeout=0.1), [])
        p = select.poll()
        p.register(fd, select.POLLIN)
        a.send_bytes(b"y")
        self.assertTrue(p.poll(5000))
        self.assertEqual(b.recv_bytes(), b"y")

        async def reader():
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            loop.add_reader(fd, lambda: fut.done() or fut.set_result(
                b.recv()))
            loop.call_later(0.05, a.send, "async")
            try:
                return await asyncio.wait_for(fut, 5)
            finally:
                loop.remove_reader(fd)
        self.assertEqual(asyncio.run(reader()), "async")
        a.close()
        self.assertEqual(select.select([fd], [], [], 5)[0], [fd])
        with self.assertRaises(EOFError):
            b.recv()

    # Pickling: a Connection passed through a posh Queue and pickle keeps
    # working; the sender may close its copy before the receiver loads it.
    def test_pickle(self):
        a, b = posh.Pipe()
        q = posh.Queue()
        q.put(b)
        b.close()
        b2 = q.get()
        a.send("through a queue")
        self.assertEqual(b2.recv(), "through a queue")
        data = pickle.dumps(b2)
        b2.close()
        b3 = pickle.loads(data)
        b3.send("back")
        self.assertEqual(a.recv(), "back")
        b3.close()
        with self.assertRaises(EOFError):
            a.recv()

    # Children under every start method: echo, then EOF when the child
    # exits; the parent closes the child's end right after start, as
    # multiprocessing code does.
    def test_cross_process(self):
        for m in METHODS:
            with self.subTest(method=m):
                ctx = posh.get_context(m)
                mine, theirs = ctx.Pipe()
                p = ctx.Process(target=echo, args=(theirs,))
                p.start()
                theirs.close()
                mine.send(("hi", 1))
                self.assertEqual(mine.recv(), ("hi", 1))
                if np is not None:
                    mine.send(np.full(1 << 17, 2.0))
                    self.assertEqual(mine.recv(), (2.0, True))
                mine.send(None)
                mine.close()
                join_all(self, [p])
                self.assertEqual(p.exitcode, 0)
                r, w = ctx.Pipe(False)
                p = ctx.Process(target=send_then_exit, args=(w, 100))
                p.start()
                w.close()
                self.assertEqual([r.recv() for _ in range(100)],
                                 list(range(100)))
                with self.assertRaises(EOFError):
                    r.recv()
                join_all(self, [p])

    # kill -9 of the peer process: the reader gets EOFError (no hang), and
    # a reader blocked in recv is woken.
    def test_peer_killed(self):
        ctx = posh.get_context("fork" if "fork" in METHODS else METHODS[0])
        mine, theirs = ctx.Pipe()
        ready = ctx.Event()
        p = ctx.Process(target=sleep_forever, args=(theirs, ready))
        p.start()
        theirs.close()
        self.assertTrue(ready.wait(JOIN))
        threading_t0 = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        self.assertTrue(mine.poll(JOIN))
        with self.assertRaises(EOFError):
            mine.recv()
        self.assertLess(time.monotonic() - threading_t0, JOIN)
        with self.assertRaises(BrokenPipeError):
            mine.send(1)

    # Bad input: wrong types, unpicklable objects, malformed messages.
    def test_bad_input(self):
        a, b = posh.Pipe()
        with self.assertRaises(TypeError):
            a.send_bytes("not bytes")
        with self.assertRaises((TypeError, BufferError)):
            a.recv_bytes_into(b"readonly")
        with self.assertRaises(Exception):
            a.send(lambda: 0)
        a.send_bytes(b"\x01garbage")
        with self.assertRaises(ValueError):
            b.recv()
        a.send("ok")
        self.assertEqual(b.recv(), "ok")
        with self.assertRaises(TypeError):
            _posh.pipe_pair(int, True)
        with self.assertRaises(OSError):
            posh.queues.Connection().recv()


if __name__ == "__main__":
    unittest.main()
