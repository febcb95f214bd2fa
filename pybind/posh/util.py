# SPDX-License-Identifier: MIT
"""posh.util: multiprocessing.util's logging and process-level helpers
(get_logger, log_to_stderr, Finalize, register_after_fork, ...), so that
`import posh.util` stands in for `import multiprocessing.util`.  posh has
no logging of its own: these are multiprocessing's very objects (the same
logger, the same finalizer registry)."""
from multiprocessing.util import *  # noqa: F401,F403
from multiprocessing.util import __all__  # noqa: F401
