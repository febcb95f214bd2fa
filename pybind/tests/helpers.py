# SPDX-License-Identifier: MIT
"""This file contains helpers shared by posh's Python tests: the start
methods to run cross-process tests under, and a timeout for joins.

Run the tests with the directory holding the posh package to test on
PYTHONPATH and this directory as the top level, e.g. after an in-place
build:  PYTHONPATH=pybind $PYTHON -m unittest discover -s pybind/tests
"""
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import textwrap

import posh

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


# where the posh package under test was imported from (an in-place build in
# pybind/, or a build directory)
POSH_PATH = os.path.dirname(os.path.dirname(os.path.abspath(posh.__file__)))


def run_py(code, env=None, timeout=120):
    """Run code in a fresh interpreter; return (rc, stdout, stderr)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = POSH_PATH + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("POSH_HEAP_CAPACITY", None)
    e.update(env or {})
    # a file, not -c: spawned children re-import the main module
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "script.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(code))
        p = subprocess.run([sys.executable, path], capture_output=True,
                           text=True, env=e, timeout=timeout)
    return p.returncode, p.stdout, p.stderr
