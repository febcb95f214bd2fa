# SPDX-License-Identifier: MIT
"""This file contains the tests of posh's synchronisation objects: the
multiprocessing semantics in one process, the same objects shared with
children under fork, spawn and forkserver (as Process arguments and through
a queue), and the death of a lock holder (kill -9)."""
import os
import pickle
import signal
import threading
import time
import unittest
import multiprocessing as mp

import posh
from helpers import METHODS, JOIN, join_all


class SingleProcessTest(unittest.TestCase):
    # Lock: acquire/release, non-blocking and timed acquire, context manager.
    def test_lock(self):
        lk = posh.Lock()
        self.assertTrue(lk.acquire())
        self.assertFalse(lk.acquire(False))
        self.assertFalse(lk.acquire(timeout=0.05))
        self.assertFalse(lk.acquire(True, 0))
        self.assertTrue(lk.locked())
        lk.release()
        self.assertFalse(lk.locked())
        with self.assertRaises(ValueError):
            lk.release()
        with lk as got:
            self.assertTrue(got)
            # as multiprocessing: the process, and a thread other than
            # the main one after a '|'
            self.assertEqual(repr(lk), "<Lock(owner=MainProcess)>")
            names = []
            t = threading.Thread(target=lambda: names.append(repr(lk)),
                                 name="T1")
            t.start()
            t.join()
            self.assertEqual(names, ["<Lock(owner=SomeOtherThread)>"])
        self.assertFalse(lk.locked())
        self.assertIn("owner=None", repr(lk))

    # Lock: another thread blocks until release, then gets it; the holder
    # is the only one who may release.
    def test_lock_threads(self):
        lk = posh.Lock()
        lk.acquire()
        got = []
        t = threading.Thread(target=lambda: got.append(lk.acquire(timeout=10)))
        t.start()
        time.sleep(0.05)
        self.assertEqual(got, [])
        lk.release()
        t.join()
        self.assertEqual(got, [True])
        with self.assertRaises(ValueError):  # held by the (dead) thread
            lk.release()

    # RLock: recursion, release by a non-owner raises AssertionError.
    def test_rlock(self):
        r = posh.RLock()
        self.assertTrue(r.acquire())
        self.assertTrue(r.acquire(block=False))
        self.assertIn(", 2)", repr(r))
        res = []

        def other():
            res.append(r.acquire(timeout=0.05))
            res.append(repr(r))
        t = threading.Thread(target=other)
        t.start()
        t.join()
        self.assertEqual(res, [False, "<RLock(SomeOtherThread, nonzero)>"])
        r.release()
        r.release()
        self.assertEqual(repr(r), "<RLock(None, 0)>")
        with self.assertRaises(AssertionError):
            r.release()
        with r:
            with r:
                pass

    # Semaphore: counting, get_value, timeouts; unbounded release.
    def test_semaphore(self):
        s = posh.Semaphore(2)
        self.assertEqual(s.get_value(), 2)
        self.assertTrue(s.acquire())
        self.assertTrue(s.acquire())
        self.assertFalse(s.acquire(timeout=0.02))
        self.assertFalse(s.acquire(False))
        s.release()
        s.release()
        s.release()
        self.assertEqual(s.get_value(), 3)
        with s:
            self.assertEqual(s.get_value(), 2)
        with self.assertRaises(ValueError):
            posh.Semaphore(-1)
        self.assertIn("value=3", repr(s))

    # BoundedSemaphore: releasing above the initial value raises ValueError.
    def test_bounded_semaphore(self):
        b = posh.BoundedSemaphore(2)
        with self.assertRaises(ValueError):
            b.release()
        b.acquire()
        b.release()
        self.assertEqual(b.get_value(), 2)
        with self.assertRaises(ValueError):
            b.release()
        b.acquire()
        self.assertEqual(repr(b), "<BoundedSemaphore(value=1, maxvalue=2)>")

    # Condition: wait times out with the lock held again; notify wakes a
    # waiting thread; wait_for; wait/notify without the lock raise.
    def test_condition(self):
        c = posh.Condition()
        with self.assertRaises(AssertionError):
            c.wait(0.01)
        with self.assertRaises(AssertionError):
            c.notify()
        with c:
            self.assertFalse(c.wait(0.02))
            self.assertEqual(c.wait_for(lambda: 7, 0.01), 7)
            self.assertFalse(c.wait_for(lambda: False, 0.02))
        state = []

        def waiter():
            with c:
                state.append(c.wait_for(lambda: len(state) >= 1, 10))

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.05)
        with c:
            state.append("go")
            c.notify()
        t.join(10)
        self.assertEqual(state, ["go", True])
        c2 = posh.Condition(posh.Lock())
        with c2:
            c2.notify_all()
            c2.notify(3)
        with self.assertRaises(TypeError):
            posh.Condition(threading.Lock())

    # Condition: notify(n) lets exactly n plain waiters return True, as
    # multiprocessing's does (CPython's test_notify_n); notify_all the rest.
    def test_condition_notify_n(self):
        c = posh.Condition()
        woken = []
        waiting = posh.Semaphore(0)

        def waiter():
            with c:
                waiting.release()  # under the lock: we wait once it is free
                woken.append(c.wait(20))

        threads = [threading.Thread(target=waiter) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in threads:
            self.assertTrue(waiting.acquire(timeout=10))

        def settle(n):
            deadline = time.monotonic() + 10
            while len(woken) < n and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # room for wrongly woken ones to show
            return list(woken)

        with c:  # held: every waiter has released it inside wait()
            c.notify(0)
            c.notify()
        self.assertEqual(settle(1), [True])
        with c:
            c.notify(2)
        self.assertEqual(settle(3), [True] * 3)
        with c:
            c.notify_all()
        for t in threads:
            t.join(10)
        self.assertEqual(woken, [True] * 4)

    # Event: set/clear/is_set/wait with and without timeout.
    def test_event(self):
        e = posh.Event()
        self.assertRegex(repr(e), r"^<Event at 0x[0-9a-f]+ unset>$")
        self.assertFalse(e.is_set())
        self.assertFalse(e.wait(0.02))
        self.assertFalse(e.wait(0))
        e.set()
        self.assertTrue(e.is_set())
        self.assertTrue(e.wait())
        self.assertTrue(e.wait(0))
        e.clear()
        self.assertFalse(e.is_set())
        t = threading.Timer(0.05, e.set)
        t.start()
        self.assertTrue(e.wait(10))
        t.join()

    # Barrier: indexes, action run once, timeout/abort break it, reset
    # repairs, properties.
    def test_barrier(self):
        ran = []
        b = posh.Barrier(3, action=lambda: ran.append(1))
        self.assertEqual((b.parties, b.n_waiting, b.broken), (3, 0, False))
        out = []
        ts = [threading.Thread(target=lambda: out.append(b.wait(10)))
              for _ in range(2)]
        for t in ts:
            t.start()
        out.append(b.wait(10))
        for t in ts:
            t.join()
        self.assertEqual(sorted(out), [0, 1, 2])
        self.assertEqual(ran, [1])
        with self.assertRaises(threading.BrokenBarrierError):
            b.wait(0.05)  # alone: times out, breaks it
        self.assertTrue(b.broken)
        with self.assertRaises(threading.BrokenBarrierError):
            b.wait()
        b.reset()
        self.assertFalse(b.broken)
        b.abort()
        self.assertTrue(b.broken)
        b.reset()
        b1 = posh.Barrier(1, timeout=5)
        self.assertEqual(b1.wait(), 0)
        with self.assertRaises(ValueError):
            posh.Barrier(0)

    # A failing Barrier action breaks the barrier and raises in its caller.
    def test_barrier_action_error(self):
        def bad():
            raise KeyError("boom")
        b = posh.Barrier(1, action=bad)
        with self.assertRaises(KeyError):
            b.wait()
        self.assertTrue(b.broken)

    # Every object pickles as a small handle naming the same object.
    def test_pickle(self):
        lk = posh.Lock()
        for o in (lk, posh.RLock(), posh.Semaphore(3),
                  posh.BoundedSemaphore(), posh.Condition(lk), posh.Event(),
                  posh.Barrier(2, None, 1.5)):
            data = pickle.dumps(o)
            self.assertLess(len(data), 400)
            o2 = pickle.loads(data)
            self.assertIs(type(o2), type(o))
            self.assertEqual(o2._off, o._off)
        lk.acquire()
        self.assertTrue(pickle.loads(pickle.dumps(lk)).locked())
        # A pickle holds no reference: the objects stay alive meanwhile.
        c = posh.Condition(lk)
        c2 = pickle.loads(pickle.dumps(c))
        self.assertEqual(c2._lock._off, lk._off)
        lk.release()
        b = posh.Barrier(2, None, 1.5)
        self.assertEqual(pickle.loads(pickle.dumps(b))._timeout, 1.5)

    def test_objects_are_freed(self):
        """Locks & co. are reference-counted: creating and dropping many
        leaves the heap as it was, and a Condition keeps its Lock alive."""
        import gc
        posh.Lock(), posh.Condition()  # first use: per-thread state
        gc.collect()
        base = posh.heap_info()["bytes_in_use"]
        for _ in range(2000):
            posh.Lock(), posh.RLock(), posh.Semaphore(2), posh.Event()
            posh.Condition(), posh.Barrier(2)
        gc.collect()
        # 12000 objects of >= 200 bytes each would be > 2 MB if kept.
        self.assertLessEqual(posh.heap_info()["bytes_in_use"], base + (64 << 10))
        lk = posh.Lock()
        c = posh.Condition(lk)
        ref = c._lock._oref
        del lk
        gc.collect()
        with c:  # the Lock lives on through the Condition
            self.assertFalse(c.wait(0.01))
        self.assertEqual(c._lock._oref, ref)


# ---- children (module level: spawn and forkserver import them) ----------

def child_script(o, q):
    """Run in a child: each step checks one object against the parent."""
    res = {}
    res["lock_busy"] = o["lock"].acquire(timeout=0.05)       # parent holds
    res["rlock_busy"] = o["rlock"].acquire(block=False)      # parent holds
    res["sem_empty"] = o["sem"].acquire(timeout=0.05)        # value 0
    try:
        o["bsem"].release()
        res["bsem_overflow"] = False
    except ValueError:
        res["bsem_overflow"] = True
    q.put(("ready", res))
    res = {}
    res["event"] = o["event"].wait(JOIN)                     # parent sets
    res["lock"] = o["lock"].acquire(timeout=JOIN)            # parent released
    o["lock"].release()
    res["rlock"] = o["rlock"].acquire(timeout=JOIN)
    o["rlock"].release()
    o["sem"].release()                                       # parent acquires
    with o["cond"]:                                          # parent waits
        o["flag"].set()
        o["cond"].notify_all()
    res["barrier"] = o["barrier"].wait(JOIN)
    lk = o["q_in"].get(timeout=JOIN)                         # through a queue
    res["queued_lock"] = (type(lk).__name__, lk.acquire(False))
    q.put(("done", res))


def hold_lock_forever(lk, held):
    lk.acquire()
    held.set()
    time.sleep(600)


def wait_for_lock(lk, q):
    q.put(("got", lk.acquire(timeout=JOIN)))
    lk.release()


class CrossProcessTest(unittest.TestCase):
    def run_script(self, method):
        ctx = mp.get_context(method)
        o = {"lock": posh.Lock(), "rlock": posh.RLock(),
             "sem": posh.Semaphore(0), "bsem": posh.BoundedSemaphore(1),
             "event": posh.Event(), "flag": posh.Event(),
             "barrier": posh.Barrier(2), "q_in": ctx.Queue()}
        o["cond"] = posh.Condition(posh.Lock())
        q = ctx.Queue()
        o["lock"].acquire()
        o["rlock"].acquire()
        o["rlock"].acquire()
        p = ctx.Process(target=child_script, args=(o, q))
        p.start()
        tag, res = q.get(timeout=JOIN)
        self.assertEqual(tag, "ready")
        self.assertEqual(res, {"lock_busy": False, "rlock_busy": False,
                               "sem_empty": False, "bsem_overflow": True})
        o["lock"].release()
        o["rlock"].release()
        o["rlock"].release()
        o["event"].set()
        self.assertTrue(o["sem"].acquire(timeout=JOIN))
        with o["cond"]:
            self.assertTrue(o["cond"].wait_for(o["flag"].is_set, JOIN))
        idx = o["barrier"].wait(JOIN)
        late = posh.Lock()
        o["q_in"].put(late)
        tag, res = q.get(timeout=JOIN)
        self.assertEqual(tag, "done")
        self.assertEqual(sorted([idx, res.pop("barrier")]), [0, 1])
        self.assertEqual(res, {"event": True, "lock": True, "rlock": True,
                               "queued_lock": ("Lock", True)})
        self.assertTrue(late.locked())  # the child took it and exited
        join_all(self, [p])
        self.assertEqual(p.exitcode, 0)
        # the child is dead: its lock is taken over
        self.assertTrue(late.acquire(timeout=JOIN))

    def test_fork(self):
        self.run_script("fork")

    @unittest.skipUnless("spawn" in METHODS, "no spawn")
    def test_spawn(self):
        self.run_script("spawn")

    @unittest.skipUnless("forkserver" in METHODS, "no forkserver")
    def test_forkserver(self):
        self.run_script("forkserver")

    # kill -9 of a process holding a Lock: a process already waiting for it
    # and this one both get it afterwards; nothing hangs.
    def kill_holder(self, method, cls):
        ctx = mp.get_context(method)
        lk, held, q = cls(), posh.Event(), ctx.Queue()
        holder = ctx.Process(target=hold_lock_forever, args=(lk, held))
        holder.start()
        self.assertTrue(held.wait(JOIN))
        waiter = ctx.Process(target=wait_for_lock, args=(lk, q))
        waiter.start()
        time.sleep(0.1)
        self.assertFalse(lk.acquire(timeout=0.05))
        os.kill(holder.pid, signal.SIGKILL)
        self.assertEqual(q.get(timeout=JOIN), ("got", True))
        join_all(self, [holder, waiter])
        self.assertEqual(holder.exitcode, -signal.SIGKILL)
        self.assertTrue(lk.acquire(timeout=JOIN))
        lk.release()

    def test_kill_lock_holder(self):
        for m in METHODS:
            with self.subTest(method=m):
                self.kill_holder(m, posh.Lock)

    def test_kill_rlock_holder(self):
        self.kill_holder("fork", posh.RLock)


if __name__ == "__main__":
    unittest.main()
