# SPDX-License-Identifier: MIT
"""This file contains the tests of posh as a drop-in for multiprocessing:
`import posh as multiprocessing` for the common subset, contexts whose
objects are posh's, and posh objects handed to ProcessPoolExecutor
workers."""
import concurrent.futures as cf
import importlib
import multiprocessing as mp
import unittest

import posh
from helpers import METHODS, JOIN


def bump(args):
    lock, sem = args
    with lock:
        sem.release()
    return sem.get_value() >= 1


_G = {}


def init_worker(lock, sem):
    _G["lock"], _G["sem"] = lock, sem


def use_global(i):
    with _G["lock"]:
        _G["sem"].release()
    return i


class CompatTest(unittest.TestCase):
    # The names multiprocessing code uses most exist and behave the same.
    def test_names(self):
        import posh as multiprocessing
        for name in ("Process", "current_process", "parent_process",
                     "active_children", "cpu_count", "get_context",
                     "set_start_method", "get_start_method",
                     "get_all_start_methods", "Lock", "RLock", "Semaphore",
                     "BoundedSemaphore", "Condition", "Event", "Barrier",
                     "Value", "Array", "RawValue", "RawArray",
                     "freeze_support", "TimeoutError", "ProcessError"):
            self.assertTrue(hasattr(multiprocessing, name), name)
        self.assertIs(multiprocessing.Process, mp.Process)
        self.assertEqual(multiprocessing.cpu_count(), mp.cpu_count())
        self.assertEqual(multiprocessing.current_process().name,
                         "MainProcess")

    # Every name of multiprocessing.__all__ exists in posh and is exported
    # by `from posh import *`; the logging and pickling helpers are
    # multiprocessing's own.
    def test_all_names(self):
        missing = [n for n in mp.__all__ if not hasattr(posh, n)]
        self.assertEqual(missing, [])
        self.assertEqual([n for n in mp.__all__ if n not in posh.__all__],
                         [])
        ns = {}
        exec("from posh import *", ns)
        self.assertTrue(set(mp.__all__) <= set(ns))
        self.assertIs(posh.get_logger(), mp.get_logger())
        import multiprocessing.util as mputil
        saved = (list(mp.get_logger().handlers), mputil._log_to_stderr)
        try:
            self.assertIs(posh.log_to_stderr(), mp.get_logger())
        finally:  # leave the logger as it was for the other tests
            mp.get_logger().handlers[:] = saved[0]
            mputil._log_to_stderr = saved[1]
        self.assertIs(posh.reducer.ForkingPickler, mp.reducer.ForkingPickler)
        posh.allow_connection_pickling()
        # the submodules, as multiprocessing.util / multiprocessing.reduction
        for m in ("util", "reduction"):
            mod = importlib.import_module("posh." + m)
            mpmod = importlib.import_module("multiprocessing." + m)
            self.assertIs(getattr(posh, m), mod)
            for n in mpmod.__all__:
                self.assertIs(getattr(mod, n), getattr(mpmod, n), (m, n))

    # get_context(method) gives that start method's Process and posh's
    # objects.
    def test_context(self):
        for m in METHODS:
            ctx = posh.get_context(m)
            self.assertEqual(ctx.get_start_method(), m)
            self.assertIs(ctx.Process, mp.get_context(m).Process)
            self.assertIsInstance(ctx.Lock(), posh.Lock)
            self.assertIsInstance(ctx.RLock(), posh.RLock)
            self.assertIsInstance(ctx.Semaphore(2), posh.Semaphore)
            self.assertIsInstance(ctx.BoundedSemaphore(2),
                                  posh.BoundedSemaphore)
            self.assertIsInstance(ctx.Condition(), posh.Condition)
            self.assertIsInstance(ctx.Event(), posh.Event)
            self.assertIsInstance(ctx.Barrier(2), posh.Barrier)
            self.assertIsInstance(ctx.Value("i", 1), posh.Value)
            self.assertIsInstance(ctx.RawValue("i", 1), posh.RawValue)
            self.assertIsInstance(ctx.Array("i", 2), posh.Array)
            self.assertIsInstance(ctx.RawArray("i", 2), posh.RawArray)
            self.assertEqual(ctx.cpu_count(), mp.cpu_count())
        self.assertIsInstance(posh.get_context(), posh.PoshContext)

    # posh objects travel as task arguments and as initializer arguments to
    # ProcessPoolExecutor workers (multiprocessing's own locks cannot go as
    # task arguments).
    def test_process_pool_executor(self):
        for m in METHODS:
            with self.subTest(method=m):
                lock, sem = posh.Lock(), posh.Semaphore(0)
                ctx = mp.get_context(m)
                with cf.ProcessPoolExecutor(2, mp_context=ctx,
                                            initializer=init_worker,
                                            initargs=(lock, sem)) as ex:
                    self.assertTrue(all(ex.map(bump, [(lock, sem)] * 4,
                                               timeout=JOIN)))
                    self.assertEqual(sorted(ex.map(use_global, range(4),
                                                   timeout=JOIN)),
                                     [0, 1, 2, 3])
                self.assertEqual(sem.get_value(), 8)
                self.assertFalse(lock.locked())


if __name__ == "__main__":
    unittest.main()
