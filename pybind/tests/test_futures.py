# SPDX-License-Identifier: MIT
"""This file tests posh's contexts where the standard library takes a
multiprocessing context: concurrent.futures.ProcessPoolExecutor(
mp_context=posh.get_context(m)) under every start method (it used to hang:
its manager thread died on the private attributes it reads), and
multiprocessing's own Queue and JoinableQueue built over posh's locks and
semaphores (ctx=...)."""
import concurrent.futures as cf
import multiprocessing.queues as mpq
import os
import pickle
import signal
import unittest

import posh
from helpers import JOIN, METHODS


def square(x):
    return x * x


def fail(x):
    raise RuntimeError(x)


def die(_):
    os.kill(os.getpid(), signal.SIGKILL)


class Blob:
    """Pickles its bytes out of band (a heap block in a posh message)."""
    def __init__(self, n):
        self.data = bytearray(n)

    def __reduce_ex__(self, protocol):
        return _rebuild_blob, (pickle.PickleBuffer(self.data),)


def _rebuild_blob(buf):
    b = Blob(0)
    b.data = bytearray(buf)
    return b


class ProcessPoolExecutorTest(unittest.TestCase):
    def test_map_submit_errors(self):
        for m in METHODS:
            with self.subTest(method=m):
                with cf.ProcessPoolExecutor(
                        2, mp_context=posh.get_context(m)) as ex:
                    self.assertEqual(
                        list(ex.map(square, range(500), chunksize=7)),
                        [x * x for x in range(500)])
                    fut = ex.submit(fail, 123)
                    with self.assertRaises(RuntimeError) as cm:
                        fut.result(timeout=JOIN)
                    self.assertEqual(cm.exception.args, (123,))
                    # the worker's traceback is the cause, as with
                    # multiprocessing's context
                    self.assertIn("raise RuntimeError(x)",
                                  cm.exception.__cause__.tb)

    def test_killed_worker_breaks_the_pool(self):
        ex = cf.ProcessPoolExecutor(2, mp_context=posh.get_context("fork"))
        with self.assertRaises(cf.process.BrokenProcessPool):
            ex.submit(die, 0).result(timeout=JOIN)
        ex.shutdown(wait=True)


class SimpleQueueReaderTest(unittest.TestCase):
    # _reader: what concurrent.futures waits on and reads from.
    def test_reader(self):
        import multiprocessing.connection as mpc
        q = posh.SimpleQueue()
        r = q._reader
        self.assertIs(q._reader, r)
        self.assertFalse(r.poll(0))
        q.put({"a": bytearray(1 << 17)})  # bigger than the pipe's buffer
        q.put("two")
        self.assertEqual(mpc.wait([r], timeout=JOIN), [r])
        self.assertEqual(r.recv(), {"a": bytearray(1 << 17)})
        self.assertTrue(r.poll(JOIN))
        self.assertEqual(r.recv(), "two")
        posh._posh.discard(posh.dumps(Blob(1 << 17)))  # the codec's table
        used = posh.heap_info()["bytes_in_use"]
        q.put(Blob(1 << 20))  # a heap block; moved, never read: discarded
        q.put(bytearray(1 << 18))  # blocks the thread on the full pipe
        self.assertTrue(r.poll(JOIN))
        q.close()
        self.assertTrue(r.closed)
        self.assertLess(posh.heap_info()["bytes_in_use"], used + (1 << 19))


class MultiprocessingQueueOverPoshTest(unittest.TestCase):
    # multiprocessing.queues.Queue(ctx=...) takes its locks and semaphore
    # from the context and reads the semaphore's _semlock.
    def test_queue_and_joinable(self):
        ctx = posh.get_context("fork")
        q = mpq.Queue(2, ctx=ctx)
        q.put(1)
        q.put(2)
        self.assertTrue(q.full())
        self.assertEqual(q.qsize(), 2)
        self.assertEqual((q.get(timeout=JOIN), q.get(timeout=JOIN)), (1, 2))
        self.assertFalse(q.full())
        q.close()
        q.join_thread()
        jq = mpq.JoinableQueue(ctx=ctx)
        jq.put("x")
        self.assertEqual(jq.get(timeout=JOIN), "x")
        jq.task_done()
        jq.join()
        jq.close()
        jq.join_thread()


if __name__ == "__main__":
    unittest.main()
