# SPDX-License-Identifier: MIT
"""This file runs CPython's own multiprocessing test suite
(test._test_multiprocessing, Debian's libpython3.X-testsuite) with posh's
objects in place of multiprocessing's: every test class of the
"processes" kind gets posh's Lock, RLock, Semaphore, BoundedSemaphore,
Condition, Event, Barrier, Value, Array, RawValue, RawArray, Queue,
JoinableQueue, Pipe and Pool.  Processes stay multiprocessing's.

    python3 cpython_mp_runner.py START_METHOD [NAME_FILTER]

Exit status 0 when every test passed or was skipped.  The few tests that
check what posh deliberately does differently are skipped here, each with
its reason (KNOWN_DIFFERENCES); so is a check of multiprocessing's
Condition internals.  Run by test_cpython_mp.py.
"""
import sys
import unittest

import test._test_multiprocessing as T

import posh

KNOWN_DIFFERENCES = {
    "WithProcessesTestConnection.test_fd_transfer":
        "multiprocessing.reduction.send_handle needs a socket-based "
        "Connection; posh's Pipe is shared memory (send the socket, or a "
        "multiprocessing.reduction.DupFd, through it instead)",
    "WithProcessesTestConnection.test_large_fd_transfer": "as test_fd_transfer",
    "WithProcessesTestConnection.test_missing_fd_transfer": "as test_fd_transfer",
    "WithProcessesTestQueue.test_queue_feeder_donot_stop_onexc":
        "posh's Queue.put pickles in the caller (no feeder thread): an "
        "object that cannot be pickled raises from put() instead of being "
        "dropped by a feeder thread",
}

for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition",
             "Event", "Barrier", "Value", "Array", "RawValue", "RawArray",
             "Queue", "JoinableQueue", "Pipe", "Pool"):
    setattr(T.ProcessesMixin, name, staticmethod(getattr(posh, name)))
# It reads multiprocessing's Condition's private semaphores.
T._TestCondition.check_invariant = lambda self, cond: None

# At module level, so that spawned children (which import this file as
# __mp_main__) find the test classes their targets belong to.
T.install_tests_in_module_dict(
    globals(), sys.argv[1] if __name__ == "__main__" else "fork")


def main():
    pattern = sys.argv[2] if len(sys.argv) > 2 else ""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name, cls in sorted(globals().items()):
        if not (isinstance(cls, type) and name.startswith("WithProcesses")
                and pattern in name):
            continue
        for test_name, reason in KNOWN_DIFFERENCES.items():
            cls_name, meth = test_name.split(".")
            if cls_name == name:
                setattr(cls, meth, unittest.skip(reason)(getattr(cls, meth)))
        suite.addTests(loader.loadTestsFromTestCase(cls))
    setUpModule()  # noqa: F821 (installed above)
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    finally:
        tearDownModule()  # noqa: F821
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
