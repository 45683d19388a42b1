"""One worker thread for learners' one-off work (a burn-in's batch start), so that it runs
beside the stream instead of holding a step: LAPACK releases the GIL while it computes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def start_pool() -> ThreadPoolExecutor:
    """The process's worker pool: one thread, started on the first call (so that a learner
    can call this when it allocates, and its first job pays no thread start-up), which runs
    the jobs in the order given."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamlab-learner")
            _pool.submit(int)  # starts the thread now
        return _pool
