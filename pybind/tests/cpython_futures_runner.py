# SPDX-License-Identifier: MIT
"""This file runs CPython's own tests of concurrent.futures'
ProcessPoolExecutor (test.test_concurrent_futures, Debian's
libpython3.X-testsuite) with posh's context as the executor's mp_context:
posh's locks, semaphores and SimpleQueue under the executor, processes
still multiprocessing's.

    python3 cpython_futures_runner.py START_METHOD

Exit status 0 when every test passed or was skipped.  Run by
test_cpython_mp.py.
"""
import sys
import unittest

import test.test_concurrent_futures as T

import posh


def _posh_context(self):
    return posh.get_context(self.ctx)


T.ExecutorMixin.get_context = _posh_context

MIXIN = {"fork": "ProcessPoolFork", "spawn": "ProcessPoolSpawn",
         "forkserver": "ProcessPoolForkserver"}


def main():
    prefix = MIXIN[sys.argv[1]]
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name, cls in sorted(vars(T).items()):
        if not (isinstance(cls, type) and issubclass(cls, unittest.TestCase)
                and name.startswith(prefix)):
            continue
        # "ProcessPoolFork" is also the start of "ProcessPoolForkserver"
        if prefix == MIXIN["fork"] and name.startswith(MIXIN["forkserver"]):
            continue
        suite.addTests(loader.loadTestsFromTestCase(cls))
    T.setUpModule()
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


# spawned and forkserver children import this file as __mp_main__
if __name__ == "__main__":
    sys.exit(main())
