"""A background thread that performs store writes in order, off the hot path.

Zarr appends cost milliseconds each; the pipeline hands blocks of rows to this thread and goes
on. Jobs run strictly in submission order, so a checkpoint submitted after some rows is written
after them. A failed write stops the writer: later jobs are dropped (nothing half-applied) and
`check()` raises the error in the pipeline's thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from streamlab.errors import StoreError

_STOP = object()


class StoreWriter:
    """Runs submitted callables one at a time on a daemon thread; `max_pending` bounds memory
    (a full queue makes `submit` wait: backpressure rather than unbounded growth)."""

    def __init__(self, *, max_pending: int = 256, name: str = "streamlab-store-writer") -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.jobs_done = 0

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        self.check()
        self._queue.put((job, args))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    job, args = item
                    job(*args)
                    self.jobs_done += 1
            except BaseException as exc:  # handed to the pipeline thread by check()
                self._error = exc
            finally:
                self._queue.task_done()

    def check(self) -> None:
        """Raise StoreError if a write has failed."""
        if self._error is not None:
            raise StoreError(
                f"writing the store failed ({type(self._error).__name__}: {self._error}); rows "
                "committed before the failure stay readable; fix the cause (disk space, "
                "permissions) and continue with --resume"
            ) from self._error

    def drain(self) -> None:
        """Wait until every submitted job has run, then raise any write error."""
        self._queue.join()
        self.check()

    def close(self) -> None:
        """Finish pending jobs and stop the thread (errors are left for `check`)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
