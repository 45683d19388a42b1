"""One worker thread for learners' one-off work (a burn-in's batch start), so that it runs
beside the stream instead of holding a step: LAPACK and torch release the GIL while they
compute. `StartBeside` is the learner's side of it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from streamlab.errors import InputShapeError

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _forget_pool_after_fork() -> None:
    """A forked child has no worker thread: the parent's pool would queue jobs that nothing
    runs (a `ProcessPoolExecutor` forks on Linux), so the child starts its own on first use."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


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


def for_worker(tensor: torch.Tensor) -> torch.Tensor:
    """A state tensor as the worker may read it: itself on the CPU (a start reads only state
    that nothing writes any more, and a restore allocates new tensors, so the step copies
    nothing), a host copy from a device (made here, on the stream's thread: no other thread
    touches the device)."""
    tensor = tensor.detach()
    return tensor if tensor.device.type == "cpu" else tensor.cpu()


class StartBeside:
    """A learner whose start (a batch fit of its burn-in) is computed on the worker thread and
    applied a fixed number of samples after the burn-in (`_start_lag`), so that its outputs
    never depend on the thread's timing. The job must read only state that no longer changes
    once the burn-in is over: a learner restored or unpickled in between computes the same
    start again when it is due."""

    _start: Future[Any] | None = None
    _start_lag: int = 0

    def _arm_start(self, lag: int) -> None:
        """At allocation: the start is due `lag` samples after the burn-in (0: no start), none
        is in flight, and the worker thread is started now, so the burn-in's end pays no
        thread start-up."""
        self._start_lag, self._start = lag, None
        if lag:
            start_pool()

    def _start_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The function computing the start and its arguments (host copies or CPU tensors)."""
        raise NotImplementedError

    def _begin_start(self) -> None:
        """Hand the start to the worker; it is due `_start_lag` samples later."""
        function, args = self._start_job()
        self._start = start_pool().submit(function, *args)

    def _start_result(self) -> Any:
        """The start's result, waiting for the worker only if it is not done yet. A start whose
        maths fails on the burn-in's samples (moments overflowed by huge values) raises
        `InputShapeError` saying so, instead of LAPACK's bare message."""
        if self._start is None:  # restored or unpickled since the burn-in ended
            self._begin_start()
        assert self._start is not None
        start, self._start = self._start, None
        try:
            return start.result()
        except (np.linalg.LinAlgError, torch.linalg.LinAlgError, ValueError) as exc:
            name = type(self).__name__
            raise InputShapeError(
                f"{name}'s batch start from its burn-in failed ({type(exc).__name__}: {exc}), "
                "most likely because samples too large for the learner's dtype overflowed the "
                "burn-in's moments: scale the channels (e.g. z-score them) or use "
                "dtype='float64', and start a new learner"
            ) from exc

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        state["_start"] = None  # a start in flight is computed again when due
        return state
