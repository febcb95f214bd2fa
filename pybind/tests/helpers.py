# SPDX-License-Identifier: MIT
"""This file contains helpers shared by posh's Python tests: the start
methods to run cross-process tests under, and a timeout for joins.

Run the tests with the directory holding the posh package to test on
PYTHONPATH and this directory as the top level, e.g. after an in-place
build:  PYTHONPATH=pybind $PYTHON -m unittest discover -s pybind/tests
"""
import multiprocessing as mp

METHODS = [m for m in ("fork", "spawn", "forkserver")
           if m in mp.get_all_start_methods()]
JOIN = 60  # seconds: a hang fails the test instead of the suite


def join_all(testcase, procs):
    for p in procs:
        p.join(JOIN)
        if p.is_alive():
            p.kill()
            p.join()
            testcase.fail("child %s hung" % p.name)
