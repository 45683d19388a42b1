"""Store writes in a separate process, in order, off the hot path.

Zarr appends cost milliseconds of mostly Python work each, and a checkpoint tens of
milliseconds; done on a thread they hold the GIL and stall the per-sample loop (measured: p99
loop latency 13-24 ms at 1 kHz with a writer thread, from once-a-second checkpoints). So the
pipeline hands NumPy blocks to a child process that owns the store's writes.

Jobs run strictly in submission order, so a checkpoint submitted after some rows is written
after them. A failed write stops the writer: later jobs are dropped (nothing half-applied) and
`check()` raises the error in the pipeline's process. The child dies with its parent (Linux
parent-death signal, and a poll of the parent pid elsewhere), so a killed run never leaves a
writer behind to race the run that resumes it.

A daemonic process (a Dask worker, a multiprocessing pool) may not start children; there the
writer runs on a thread instead, with the same order and error semantics: fine for a replay,
which has no live latency to protect.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from streamlab.errors import StoreError

_SYNC = "sync"
_JOB = "job"
_PR_SET_PDEATHSIG = 1
WRITER_NICENESS = 10  # added to the writer process's nice value (lower priority)
WRITER_NAME = "streamlab-store-writer"
MAIN_GUARD_HINT = (
    "the store writer runs in a child process that imports your script again; a script that "
    'starts a streamlab run must put it under `if __name__ == "__main__":` (or run it with '
    "`python -c`, in a notebook, or through the `streamlab` command)"
)


def refuse_in_writer_process() -> None:
    """Raise a clear error where a run is started inside a store writer's process: its script,
    imported again there, starts a run at its top level (it had hung the parent 10 minutes)."""
    if multiprocessing.current_process().name == WRITER_NAME:
        raise StoreError(f"a run was started while the store writer started up: {MAIN_GUARD_HINT}")


class StoreWriter:
    """Runs `job(store, *args)` for each submitted job in a child process that holds the run
    store at `path` open for writing. `max_pending` bounds memory: a full queue makes `submit`
    wait (backpressure rather than unbounded growth)."""

    def __init__(self, path: str, *, max_pending: int = 256) -> None:
        self.in_thread = bool(multiprocessing.current_process().daemon)
        if self.in_thread:
            self._jobs: Any = queue.Queue(maxsize=max_pending)
            self._results: Any = queue.Queue()
            self._process: Any = threading.Thread(
                target=_serve,
                args=(path, self._jobs, self._results, None),
                name=WRITER_NAME,
                daemon=True,
            )
        else:
            context = multiprocessing.get_context("spawn")  # never fork with live threads
            self._jobs = context.Queue(maxsize=max_pending)
            self._results = context.Queue()
            self._process = context.Process(
                target=_serve,
                args=(path, self._jobs, self._results, os.getpid()),
                name=WRITER_NAME,
                daemon=True,
            )
        self._process.start()
        self._error: str | None = None
        self._started = False  # the writer reported that it runs
        self._syncs = 0
        self.path = path

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Queue `job(store, *args)`; `job` must be importable by name (a module-level function
        or a `RunStore` method) and `args` plain data (NumPy arrays, not tensors)."""
        self.check()
        self._jobs.put((_JOB, job, args))

    def check(self) -> None:
        """Raise StoreError if a write has failed (does not wait)."""
        while self._error is None:
            try:
                kind, value = self._results.get_nowait()
            except queue.Empty:
                break
            if kind == "error":
                self._error = value
            elif kind == "started":
                self._started = True
        if self._error is not None:
            raise StoreError(
                f"writing the store failed ({self._error}); rows committed before the failure "
                "stay readable; fix the cause (disk space, permissions) and continue with --resume"
            )
        self._check_alive()

    def _check_alive(self) -> None:
        """Raise StoreError if the writer process has died (without reading its results)."""
        exitcode = getattr(self._process, "exitcode", None)
        if self._error is None and not self._process.is_alive() and exitcode not in (0, None):
            # nobody reads the job queue any more: exiting must not wait to flush it
            self._jobs.cancel_join_thread()
            self._error = f"the store writer process died with exit code {exitcode}"
            if not self._started:
                self._error += f" before it started ({MAIN_GUARD_HINT})"
            self.check()

    def drain(self, timeout: float = 600.0) -> None:
        """Wait until every submitted job has run, then raise any write error."""
        self.check()
        self._syncs += 1
        self._jobs.put((_SYNC, self._syncs, ()))
        deadline = time.monotonic() + timeout
        while True:
            try:  # short waits: a writer that died is reported at once, not after `timeout`
                kind, value = self._results.get(timeout=0.5)
            except queue.Empty:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"the store writer did not finish within {timeout} s"
                    ) from None
                continue
            if kind == "started":
                self._started = True
            if kind == "error":
                self._error = value
                self.check()
            if kind == "ack" and value == self._syncs:
                return

    def close(self) -> None:
        """Let the child finish its queue and exit (errors are left for `check`)."""
        if self._process.is_alive():
            self._jobs.put(None)
            self._process.join(timeout=60)
        if self.in_thread:
            return
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._jobs.close()
        self._results.close()


def _serve(path: str, jobs: Any, results: Any, parent_pid: int | None) -> None:
    """The writer's loop: open the store, run jobs in order, report failures and syncs.
    `parent_pid` is None on a thread (nothing to outlive)."""
    if parent_pid is not None:
        _die_with_parent()
        # Ctrl-C and SIGTERM (sent to the whole process group by `timeout` or systemd) are
        # the parent's to handle: it flushes, checkpoints and closes the store through us
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            # a lower priority than the learner loop's: an append costs tens of milliseconds
            # of CPU, which on a machine with few cores delayed the samples arriving meanwhile
            os.nice(WRITER_NICENESS)
    from streamlab.store.run_store import RunStore

    store = None
    failed = False
    results.put(("started", None))
    while True:
        try:
            item = jobs.get(timeout=1.0)
        except queue.Empty:
            if parent_pid is not None and os.getppid() != parent_pid:
                return
            continue
        if item is None:
            return
        kind, job, args = item
        if kind == _SYNC:
            results.put(("ack", job))
            continue
        if failed:
            continue
        try:
            if store is None:
                store = RunStore.open(path, mode="r+")
            job(store, *args)
        except BaseException as exc:  # reported to the parent, which decides
            failed = True
            where = traceback.extract_tb(exc.__traceback__)[-1]
            results.put(
                ("error", f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})")
            )


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # else the parent-pid poll ends orphans
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
