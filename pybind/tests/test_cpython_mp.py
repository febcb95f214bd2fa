# SPDX-License-Identifier: MIT
"""This file runs CPython's own multiprocessing tests against posh's
objects (cpython_mp_runner.py), in a fresh interpreter per start method:
fork always, spawn and forkserver too when CI=true or
POSH_CPYTHON_MP_METHODS names them (e.g. "fork,spawn").  And CPython's
tests of concurrent.futures' ProcessPoolExecutor with posh's context
(cpython_futures_runner.py, about two minutes a start method): under fork
when CI=true, under the methods POSH_CPYTHON_FUTURES_METHODS names."""
import importlib.util
import os
import subprocess
import sys
import unittest

from helpers import METHODS, POSH_PATH

HERE = os.path.dirname(os.path.abspath(__file__))
HAVE_SUITE = importlib.util.find_spec("test._test_multiprocessing") is not None
HAVE_FUTURES_SUITE = (
    importlib.util.find_spec("test.test_concurrent_futures") is not None)


def methods():
    wanted = os.environ.get("POSH_CPYTHON_MP_METHODS")
    if wanted:
        return [m for m in wanted.split(",") if m in METHODS]
    if os.environ.get("CI") == "true":
        return METHODS
    return ["fork"]


def futures_methods():
    wanted = os.environ.get("POSH_CPYTHON_FUTURES_METHODS")
    if wanted is not None:
        return [m for m in wanted.split(",") if m in METHODS]
    return ["fork"] if os.environ.get("CI") == "true" else []


def run_runner(testcase, runner, method):
    env = dict(os.environ)
    env["PYTHONPATH"] = POSH_PATH + os.pathsep + HERE
    p = subprocess.run([sys.executable, os.path.join(HERE, runner), method],
                       capture_output=True, text=True, env=env, timeout=900)
    out = p.stdout + p.stderr
    testcase.assertEqual(p.returncode, 0, out[-6000:])
    testcase.assertIn("\nOK", out)


@unittest.skipUnless(HAVE_SUITE, "CPython's test suite is not installed "
                     "(Debian: libpython3.X-testsuite; tools/setup.sh "
                     "installs it)")
class CPythonMultiprocessingSuite(unittest.TestCase):
    def test_cpython_suite_with_posh_objects(self):
        for m in methods():
            with self.subTest(method=m):
                run_runner(self, "cpython_mp_runner.py", m)


@unittest.skipUnless(HAVE_FUTURES_SUITE, "CPython's test suite is not "
                     "installed (Debian: libpython3.X-testsuite)")
class CPythonFuturesSuite(unittest.TestCase):
    def test_process_pool_executor_with_posh_context(self):
        if not futures_methods():
            self.skipTest("set CI=true or POSH_CPYTHON_FUTURES_METHODS")
        for m in futures_methods():
            with self.subTest(method=m):
                run_runner(self, "cpython_futures_runner.py", m)


if __name__ == "__main__":
    unittest.main()
