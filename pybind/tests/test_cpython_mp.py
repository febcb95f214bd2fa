# SPDX-License-Identifier: MIT
"""This file runs CPython's own multiprocessing tests against posh's
objects (cpython_mp_runner.py), in a fresh interpreter per start method:
fork always, spawn and forkserver too when CI=true or
POSH_CPYTHON_MP_METHODS names them (e.g. "fork,spawn")."""
import importlib.util
import os
import subprocess
import sys
import unittest

from helpers import METHODS, POSH_PATH

HERE = os.path.dirname(os.path.abspath(__file__))
HAVE_SUITE = importlib.util.find_spec("test._test_multiprocessing") is not None


def methods():
    wanted = os.environ.get("POSH_CPYTHON_MP_METHODS")
    if wanted:
        return [m for m in wanted.split(",") if m in METHODS]
    if os.environ.get("CI") == "true":
        return METHODS
    return ["fork"]


@unittest.skipUnless(HAVE_SUITE, "CPython's test suite is not installed "
                     "(Debian: libpython3.X-testsuite; tools/setup.sh "
                     "installs it)")
class CPythonMultiprocessingSuite(unittest.TestCase):
    def test_cpython_suite_with_posh_objects(self):
        for m in methods():
            with self.subTest(method=m):
                env = dict(os.environ)
                env["PYTHONPATH"] = POSH_PATH + os.pathsep + HERE
                p = subprocess.run(
                    [sys.executable, os.path.join(HERE, "cpython_mp_runner.py"), m],
                    capture_output=True, text=True, env=env, timeout=900)
                out = p.stdout + p.stderr
                self.assertEqual(p.returncode, 0, out[-6000:])
                self.assertIn("\nOK", out)


if __name__ == "__main__":
    unittest.main()
