"""Shared fixtures: free loopback endpoints, a quiet offline Prefect, and helpers to run the CLI
as a user would (a real subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Prefect: offline, no telemetry, a private home per test session, time to start on 2 cores.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


class ScriptedNoise:
    """Stands in for a learner's random draws (`_randn`, `_rand`) after initialisation: hands out
    the given draws in turn, so batched and single runs can be fed the same noise."""

    def __init__(self, draws: torch.Tensor) -> None:
        self.draws, self.calls = draws, 0

    def __call__(self, *shape: int) -> torch.Tensor:
        self.calls += 1
        return self.draws[self.calls - 1].reshape(shape).clone()


def free_endpoint() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def endpoint() -> str:
    return free_endpoint()


def streamlab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamlab", *args]


def run_cli(
    *args: str, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `streamlab ARGS` to completion and return its result (stdout and stderr as text)."""
    return subprocess.run(
        streamlab_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


@pytest.fixture(autouse=True, scope="session")
def _prefect_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))


@pytest.fixture(scope="session")
def prefect_api():
    """Prefect's real API server, started once for the test session (about 17 s on 2 cores)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread, torch's and BLAS's, for the whole suite: its learners take small
    steps and a second thread only spin-waits on them; on a busy 2-core machine that made a
    6 s replay take minutes, the spring test 185 s instead of 40, and the adaptive decoder's
    10,000 steps in test_control 158 s instead of 6. (Commands run as subprocesses keep
    their own defaults.)"""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)
