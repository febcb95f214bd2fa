# SPDX-License-Identifier: MIT
"""posh.reduction: multiprocessing.reduction (ForkingPickler, register,
DupFd, send_handle/recv_handle, ...), so that `import posh.reduction`
stands in for `import multiprocessing.reduction`.  posh's objects need
nothing from it (they pickle with any pickler, as small handles); these are
multiprocessing's very objects, so a reducer registered here is registered
for multiprocessing too."""
from multiprocessing.reduction import *  # noqa: F401,F403
from multiprocessing.reduction import __all__, AbstractReducer  # noqa: F401
