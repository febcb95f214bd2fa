# SPDX-License-Identifier: MIT
"""This file runs CPython's own multiprocessing test suite
(test._test_multiprocessing, Debian's libpython3.X-testsuite) with posh's
objects in place of multiprocessing's: every test class of the
"processes" kind gets posh's Lock, RLock, Semaphore, BoundedSemaphore,
Condition, Event, Barrier, Value, Array, RawValue, RawArray, Queue,
JoinableQueue, Pipe and Pool, and every class of the "manager" kind gets
posh.Manager() in place of multiprocessing.Manager().  Processes stay
multiprocessing's.

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
    "WithManagerTestContainers.test_list_iter":
        "iterating a posh list reads a snapshot taken by iter() "
        "(docs/python.md), not the live items",
    "WithManagerTestContainers.test_dict_iter":
        "iterating a posh dict reads a snapshot taken by iter(): a change "
        "during iteration raises nothing",
    "WithManagerTestEvent.test_repr":
        "posh's Manager hands out the shared objects themselves, not "
        "proxies: the repr is the Event's own",
    "WithManagerTestPool.test_make_pool":
        "Manager().Pool(-1) raises ValueError in the caller, as "
        "multiprocessing.Pool(-1) does (there is no server to raise "
        "RemoteError)",
}

for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition",
             "Event", "Barrier", "Value", "Array", "RawValue", "RawArray",
             "Queue", "JoinableQueue", "Pipe", "Pool"):
    setattr(T.ProcessesMixin, name, staticmethod(getattr(posh, name)))
# It reads multiprocessing's Condition's private semaphores.
T._TestCondition.check_invariant = lambda self, cond: None


# A posh.Manager() per manager test class.  multiprocessing's tearDownClass
# also counts the objects its server still holds (_number_of_objects): posh
# has no server; the objects' own reference counts free them.
@classmethod
def _manager_setup(cls):
    T.BaseMixin.setUpClass.__func__(cls)
    cls.manager = posh.Manager()


@classmethod
def _manager_teardown(cls):
    cls.manager.shutdown()
    cls.manager = None
    T.BaseMixin.tearDownClass.__func__(cls)


T.ManagerMixin.setUpClass = _manager_setup
T.ManagerMixin.tearDownClass = _manager_teardown

# At module level, so that spawned children (which import this file as
# __mp_main__) find the test classes their targets belong to.
T.install_tests_in_module_dict(
    globals(), sys.argv[1] if __name__ == "__main__" else "fork")


def main():
    pattern = sys.argv[2] if len(sys.argv) > 2 else ""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name, cls in sorted(globals().items()):
        if not (isinstance(cls, type)
                and name.startswith(("WithProcesses", "WithManager"))
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
