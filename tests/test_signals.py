"""SIGTERM, as `timeout`, `kill` or systemd's stop send it to the whole process group, is a
clean stop like Ctrl-C: the store writer (a child process) survives it to flush, the store
ends `stopped` with every row the learners produced, and the command says it was interrupted
(issue 22, fault 7)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamlab.sessions import Session, save_session
from streamlab.store.run_store import RunStore
from tests.conftest import streamlab_command

pytestmark = pytest.mark.slow


def test_sigterm_to_the_process_group_stops_a_replay_cleanly(tmp_path: Path) -> None:
    data = np.random.default_rng(0).poisson(1.0, (60 * 200, 8)).astype(np.uint16)
    save_session(tmp_path / "rec.npz", Session(data, 200.0))
    store = tmp_path / "run.zarr"
    replay = subprocess.Popen(
        streamlab_command(
            "replay", str(tmp_path / "rec.npz"), "--learner", "sm:n_components=2", "--store",
            str(store), "--speed", "realtime",
        ),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a service or `timeout` runs it
    )  # fmt: skip
    assert replay.stderr is not None
    try:
        for line in replay.stderr:  # the progress line: samples are flowing
            if " samples " in line and not line.lstrip().startswith("0 samples"):
                break
        os.killpg(replay.pid, signal.SIGTERM)
        _, rest = replay.communicate(timeout=60)
    finally:
        if replay.poll() is None:
            os.killpg(replay.pid, signal.SIGKILL)
    assert replay.returncode == 130, rest
    assert "interrupted (stopped cleanly)" in rest and "died" not in rest
    run = RunStore.open(store)
    assert run.status == "stopped"
    assert 0 < run.learner("sm").rows < len(data)
