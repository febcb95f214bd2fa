# SPDX-License-Identifier: MIT
"""Python benchmarks of issue 5: posh against multiprocessing, same run.

Prints one `BENCH <metric> <value> <unit>` line per figure:

  py.manager_dict.{posh,mp}        get+set ops/s on a Manager().dict() from a worker
  py.queue.small.{posh,mp}         one-way msgs/s of small tuples, worker -> parent
  py.queue.rtt.{posh,mp}           round trip parent -> worker -> parent, us
  py.pool.apply_async.{posh,mp}    tasks/s: N apply_async, then every get()
  py.pool.imap_unordered1.{posh,mp} tasks/s of imap_unordered, chunksize 1
  py.numpy100MB.{posh,mp}          seconds to pass a 100 MB array through a
                                   queue (put in the parent until the worker
                                   holds the array and has read its last byte)

Every figure is the best of BENCH_REPS (default 3) repetitions; BENCH_SCALE
(default 1) scales the work.  Processes are started before the clock.
Start method: fork (the fastest start for both; workers are started before
timing anyway).
"""

import multiprocessing as mp
import os
import sys
import time

try:
    import posh
except ImportError:  # measure the baselines alone
    posh = None

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
REPS = int(os.environ.get("BENCH_REPS", "3"))


def n_of(base):
    return max(1, int(base * SCALE))


def bench(metric, unit, fn):
    best = None
    for _ in range(REPS):
        v = fn()
        if best is None or (v > best if unit.endswith("/s") else v < best):
            best = v
    print("BENCH %s %.6g %s" % (metric, best, unit), flush=True)
    return best


# ---- manager dict ---------------------------------------------------------
def _dict_worker(d, n, out):
    t0 = time.perf_counter()
    for i in range(n):
        k = i & 255
        d[k] = i
        d[k]
    out.put(time.perf_counter() - t0)


def manager_dict(lib, n):
    with lib.Manager() as m:
        d = m.dict()
        out = lib.Queue()

        def run():
            p = mp.get_context("fork").Process(target=_dict_worker, args=(d, n, out))
            p.start()
            dt = out.get()
            p.join()
            return 2 * n / dt
        return bench("py.manager_dict.%s" % name_of(lib), "ops/s", run)


# ---- queues -----------------------------------------------------------------
def _producer(q, n, go):
    go.wait()
    item = (1, "x", 2.5)
    for _ in range(n):
        q.put(item)


def queue_small(lib, n):
    ctx = lib.get_context("fork")
    q = ctx.Queue()
    go = ctx.Event()

    def run():
        go.clear()
        p = ctx.Process(target=_producer, args=(q, n, go))
        p.start()
        time.sleep(0.05)
        t0 = time.perf_counter()
        go.set()
        get = q.get
        for _ in range(n):
            get()
        dt = time.perf_counter() - t0
        p.join()
        return n / dt
    return bench("py.queue.small.%s" % name_of(lib), "msgs/s", run)


def _echo(qin, qout):
    while True:
        x = qin.get()
        if x is None:
            return
        qout.put(x)


def queue_rtt(lib, n):
    ctx = lib.get_context("fork")
    a, b = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_echo, args=(a, b))
    p.start()
    for _ in range(100):  # warm up
        a.put(1)
        b.get()

    def run():
        t0 = time.perf_counter()
        for i in range(n):
            a.put(i)
            b.get()
        return (time.perf_counter() - t0) / n * 1e6
    r = bench("py.queue.rtt.%s" % name_of(lib), "us", run)
    a.put(None)
    p.join()
    return r


# ---- pool -------------------------------------------------------------------
def _square(x):
    return x * x


def pool_apply_async(lib, n):
    with lib.get_context("fork").Pool(2) as pool:
        pool.map(_square, range(100))  # workers up

        def run():
            t0 = time.perf_counter()
            rs = [pool.apply_async(_square, (i,)) for i in range(n)]
            for r in rs:
                r.get()
            return n / (time.perf_counter() - t0)
        return bench("py.pool.apply_async.%s" % name_of(lib), "tasks/s", run)


def pool_imap_unordered(lib, n):
    with lib.get_context("fork").Pool(2) as pool:
        pool.map(_square, range(100))

        def run():
            t0 = time.perf_counter()
            for _ in pool.imap_unordered(_square, range(n), chunksize=1):
                pass
            return n / (time.perf_counter() - t0)
        return bench("py.pool.imap_unordered1.%s" % name_of(lib), "tasks/s", run)


# ---- numpy ------------------------------------------------------------------
def _np_receiver(q, ack):
    while True:
        a = q.get()
        if a is None:
            return
        last = int(a[-1])  # touch the last byte: the array is really there
        del a  # done with it (a program would now let it go)
        ack.put(last)


def numpy100mb(lib):
    import numpy as np
    ctx = lib.get_context("fork")
    q, ack = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_np_receiver, args=(q, ack))
    p.start()
    arr = np.arange(100 * 1000 * 1000 // 8, dtype=np.int64)
    arr[-1] = 7

    def run():
        t0 = time.perf_counter()
        q.put(arr)
        assert ack.get() == 7
        return time.perf_counter() - t0
    r = bench("py.numpy100MB.%s" % name_of(lib), "s", run)
    q.put(None)
    p.join()
    return r


def name_of(lib):
    return "posh" if lib is posh else "mp"


def main():
    which = sys.argv[1:] or ["manager_dict", "queue_small", "queue_rtt",
                             "apply_async", "imap_unordered", "numpy"]
    for lib, scale in ((mp, 1), (posh, 20)):
        if lib is None:
            continue
        if "manager_dict" in which:
            manager_dict(lib, n_of(3000 * scale))
        if "queue_small" in which:
            queue_small(lib, n_of(30000 * scale))
        if "queue_rtt" in which:
            queue_rtt(lib, n_of(2000 * scale))
        if "apply_async" in which:
            pool_apply_async(lib, n_of(5000 * min(scale, 10)))
        if "imap_unordered" in which:
            pool_imap_unordered(lib, n_of(5000 * min(scale, 10)))
        if "numpy" in which:
            numpy100mb(lib)


if __name__ == "__main__":
    main()
