# SPDX-License-Identifier: MIT
"""This file contains the tests of posh's default heap: lazy creation and
options, attaching from pickled handles (also when the creator is gone),
exit with threads still inside posh, children detaching or being reaped,
and that using posh leaves nothing behind: no /dev/shm entries, no
resource_tracker warnings, under every start method and after kill -9."""
import os
import time
import unittest
import multiprocessing as mp

import posh
from posh import _posh
from helpers import METHODS, JOIN, join_all, run_py


def shm_entries():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def attach_and_report(handle, lock, q):
    _posh.heap_attach(*handle)
    q.put((lock.acquire(timeout=JOIN), _posh.heap_handle()[:2]))
    lock.release()


def grandparent_child(lock, q, method):
    # Runs in a spawned child: passes the lock on to its own child after
    # the original creator of the heap may have gone.
    ctx = mp.get_context(method)
    p = ctx.Process(target=attach_and_report,
                    args=(_posh.heap_handle(), lock, q))
    p.start()
    p.join(JOIN)


class HeapTest(unittest.TestCase):
    # The heap is created lazily, anonymous (memfd), with the options given
    # before first use; options after first use raise.
    def test_lazy_and_options(self):
        rc, out, err = run_py("""
            import posh
            from posh import _posh
            assert not _posh.heap_exists()
            posh.set_heap_options(capacity=64 << 20, max_processes=64)
            l = posh.Lock()
            assert _posh.heap_exists()
            info = posh.heap_info()
            assert info["capacity"] == 64 << 20, info
            assert info["max_processes"] == 64, info
            fd = info["fd"]
            assert os.readlink("/proc/self/fd/%d" % fd).startswith("/memfd:")
            try:
                posh.set_heap_options(capacity=1 << 30)
            except RuntimeError:
                print("ok")
        """.replace("import posh\n", "import posh, os\n", 1))
        self.assertEqual((rc, out.strip(), err), (0, "ok", ""))

    # POSH_HEAP_CAPACITY sets the capacity (with a size suffix); the default
    # is 4 GiB reserved sparsely.
    def test_env_capacity(self):
        rc, out, err = run_py("import posh; print(posh.heap_info()['capacity'])",
                              env={"POSH_HEAP_CAPACITY": "256M"})
        self.assertEqual((rc, out.strip(), err), (0, str(256 << 20), ""))
        rc, out, err = run_py("import posh; print(posh.heap_info()['capacity'])")
        self.assertEqual(int(out), 4 << 30)
        rc, out, err = run_py("import posh", env={"POSH_HEAP_CAPACITY": "xyz"})
        self.assertNotEqual(rc, 0)
        self.assertIn("POSH_HEAP_CAPACITY", err)

    # A handle of another heap is refused once this process has a heap; a
    # handle whose processes are all gone fails cleanly.
    def test_handle_mismatch(self):
        h = _posh.heap_handle()
        rc, out, err = run_py("""
            import posh
            from posh import _posh
            posh.Lock()
            try:
                _posh.heap_attach(%d, %d, %r)
            except RuntimeError as e:
                print("mismatch")
        """ % (h[0], h[1], h[2]))
        self.assertEqual((rc, out.strip()), (0, "mismatch"), err)
        rc, out, err = run_py("""
            from posh import _posh
            try:
                _posh.heap_attach(1, 2, ((999999999, 3), (1, 12345)))
            except RuntimeError as e:
                print("unreachable")
        """)
        self.assertEqual((rc, out.strip()), (0, "unreachable"), err)

    # A child tries the candidates of a handle in turn (a dead pid first).
    def test_candidates(self):
        ctx = mp.get_context("spawn")
        ct, cs, cands = _posh.heap_handle()
        bogus = (ct, cs, ((999999999, 3),) + cands)
        lk, q = posh.Lock(), ctx.Queue()
        p = ctx.Process(target=attach_and_report, args=(bogus, lk, q))
        p.start()
        got, ident = q.get(timeout=JOIN)
        join_all(self, [p])
        self.assertTrue(got)
        self.assertEqual(ident, (ct, cs))

    # A grandchild attaches through its spawned parent's fd; handles carry
    # the pickling process as a candidate.
    def test_grandchild(self):
        ctx = mp.get_context("spawn")
        lk, q = posh.Lock(), ctx.Queue()
        p = ctx.Process(target=grandparent_child, args=(lk, q, "spawn"))
        p.start()
        got, ident = q.get(timeout=JOIN)
        join_all(self, [p])
        self.assertTrue(got)
        self.assertEqual(ident, _posh.heap_handle()[:2])

    # The heap survives its creator: the creator forks a child and exits;
    # the child, attached by inheritance, hands a lock to a spawned
    # grandchild, which attaches through the child's fd.
    def test_creator_exits(self):
        rc, out, err = run_py("""
            import multiprocessing as mp, os, sys, time
            import posh

            def grandchild(lk):
                sys.exit(0 if lk.acquire(timeout=10) else 3)

            if __name__ == "__main__":
                lk = posh.Lock()
                r, w = os.pipe()
                creator = os.getpid()
                if os.fork() != 0:
                    os._exit(0)          # the creator goes away
                os.close(w)
                os.read(r, 1)            # EOF: the creator has exited
                while open("/proc/%d/stat" % creator).read().split()[2] != "Z":
                    time.sleep(0.01)     # (a zombie until run() reaps it)
                ctx = mp.get_context("spawn")
                p = ctx.Process(target=grandchild, args=(lk,))
                p.start()
                p.join(60)
                print(p.exitcode)
                sys.exit(0)
        """)
        # the forked child outlives the script's main process; run() waits
        # for its output (it holds the pipe)
        self.assertEqual((rc, out.strip(), err), (0, "0", ""))

    # Using posh under every start method, with a child killed -9 while it
    # holds a lock, leaves no /dev/shm entry and prints nothing on stderr
    # (no resource_tracker warning).
    def test_no_leaks(self):
        before = shm_entries()
        code = """
            import multiprocessing as mp, os, signal, sys, time
            import numpy
            import posh

            def worker(lk, ev, sem, q):
                ev.wait(60)
                with lk:
                    sem.release()
                q.put(posh.loads(posh.dumps(numpy.ones(1 << 16))).sum())

            def holder(lk, ev):
                lk.acquire()
                ev.set()
                time.sleep(60)

            if __name__ == "__main__":
                maps = []
                for m in %r:
                    ctx = mp.get_context(m)
                    lk, ev, sem, q = posh.Lock(), posh.Event(), posh.Semaphore(0), ctx.Queue()
                    h = ctx.Process(target=holder, args=(lk, ev))
                    h.start()
                    ev.wait(60)
                    os.kill(h.pid, signal.SIGKILL)
                    ps = [ctx.Process(target=worker, args=(lk, ev, sem, q)) for _ in range(2)]
                    for p in ps: p.start()
                    for p in ps: assert q.get(timeout=60) == 65536.0
                    for p in ps: p.join(60)
                    h.join(60)
                    assert sem.get_value() == 2
                with open("/proc/self/maps") as f:
                    maps = [l for l in f if "memfd:" in l or "/dev/shm" in l]
                # the heap is a memfd; the only /dev/shm mappings are
                # multiprocessing's own semaphores, already unlinked
                assert any("memfd:posh" in l for l in maps), maps
                assert all("memfd:" in l or "(deleted)" in l for l in maps), maps
                print("ok", os.getpid())
        """ % (METHODS,)
        rc, out, err = run_py(code)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("ok"), out)
        self.assertEqual(err, "")
        time.sleep(0.2)
        new = shm_entries() - before
        # Other programs may create entries meanwhile; ours would be one of
        # multiprocessing's (sem.*, psm_*) or a posh heap name.
        ours = [n for n in new if n.startswith(("sem.mp-", "psm_", "posh-py"))]
        self.assertEqual(ours, [])

    # After exit processing the heap is detached: use raises cleanly.
    def test_shutdown(self):
        rc, out, err = run_py("""
            import posh
            from posh import _posh
            l = posh.Lock()
            _posh.shutdown()
            for f in (l.acquire, posh.Lock, posh.Event):
                try:
                    f()
                    print("no error", f)
                except RuntimeError:
                    pass
            print("ok")
        """)
        self.assertEqual(out.strip().splitlines()[-1], "ok", out + err)
        self.assertEqual(out.strip(), "ok")


    # Exit while daemon threads are blocked inside posh (GIL released, the
    # heap touched every wait slice) or spin on a Value: the heap must not
    # be unmapped under them (it was: a segfault at exit about one run in
    # three for Queue.get and Pipe.recv).  shutdown() reports that it kept
    # the heap while a thread is alive.
    def test_exit_with_blocked_daemon_threads(self):
        code = """
            import threading, time
            import posh
            from posh import _posh

            q = posh.Queue()
            lk = posh.Lock(); lk.acquire()
            c = posh.Condition()
            ev = posh.Event()
            sem = posh.Semaphore(0)
            a, b = posh.Pipe()
            jq = posh.JoinableQueue(); jq.put(1)
            bar = posh.Barrier(3)
            v = posh.Value("i", 0)
            d = posh.dict()

            def cond():
                with c:
                    c.wait()

            def spin():
                while True:
                    v.value += 1
                    d[b"k"] = b"v"

            targets = [q.get, lk.acquire, cond, ev.wait, sem.acquire,
                       a.recv, jq.join, bar.wait, spin, spin]
            for t in targets:
                threading.Thread(target=t, daemon=True).start()
            time.sleep(0.1)
            assert _posh.shutdown(True) is False  # kept: threads alive
            print("ok")
        """
        for _ in range(4):
            rc, out, err = run_py(code)
            self.assertEqual((rc, out.strip(), err), (0, "ok", ""))

    # A multiprocessing child detaches when it returns (a forked one leaves
    # through os._exit, which skips atexit); one that is killed is reaped by
    # heap_reap(), which frees its references.  In a fresh interpreter: no
    # other attached process may reap first.
    def test_children_detach_or_are_reaped(self):
        rc, out, err = run_py("""
            import multiprocessing as mp, time
            import posh

            def procs():
                return posh.heap_info()["processes"]

            def wait_after(started, ev):
                started.set()
                ev.wait(60)

            if __name__ == "__main__":
                lk = posh.Lock()
                for m in %r:
                    p = mp.get_context(m).Process(target=lk.locked)
                    p.start()
                    p.join(60)
                    assert p.exitcode == 0, (m, p.exitcode)
                    assert procs() == 1, (m, procs())
                started, ev = posh.Event(), posh.Event()
                p = mp.get_context("fork").Process(target=wait_after,
                                                    args=(started, ev))
                p.start()
                # kill -9 only once it runs: in its first instructions the
                # slot claimed for it is still under our identity
                assert started.wait(60)
                assert procs() == 2, procs()
                p.kill()
                p.join(60)
                assert posh.heap_reap() == 1
                assert procs() == 1, procs()
                assert posh.heap_reap() == 0
                print("ok")
        """ % (METHODS,))
        self.assertEqual((rc, out.strip(), err), (0, "ok", ""))

    # A forked child of a parent that runs threads detaches too (it left
    # the heap as if killed: _thread._count() in a fork child still counts
    # the parent's threads), and a thread it starts itself still keeps the
    # heap mapped at its exit.
    def test_fork_child_of_threaded_parent_detaches(self):
        rc, out, err = run_py("""
            import multiprocessing as mp, threading, time
            import posh
            from posh import _posh

            def procs():
                return posh.heap_info()["processes"]

            def child_with_thread(q):
                threading.Thread(target=q.get, daemon=True).start()
                time.sleep(0.1)

            if __name__ == "__main__":
                lk = posh.Lock()
                t = threading.Thread(target=time.sleep, args=(30,),
                                     daemon=True)
                t.start()
                ctx = mp.get_context("fork")
                p = ctx.Process(target=lk.locked)
                p.start()
                p.join(60)
                assert p.exitcode == 0, p.exitcode
                assert procs() == 1, procs()  # detached, not left to reap
                q = posh.Queue()
                p = ctx.Process(target=child_with_thread, args=(q,))
                p.start()
                p.join(60)
                assert p.exitcode == 0, p.exitcode
                assert procs() == 2, procs()  # kept: its thread was alive
                assert posh.heap_reap() == 1
                print("ok")
        """)
        self.assertEqual((rc, out.strip(), err), (0, "ok", ""))


if __name__ == "__main__":
    unittest.main()
