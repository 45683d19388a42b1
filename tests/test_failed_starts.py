"""A start that fails (a bad learner parameter, a busy `--publish` port, an existing store)
exits with the reason and a non-zero code, leaves no store behind to block the retry, and
says what to do in the words of the command that was run (issue 22, faults 1 and 5)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zmq

from streamlab.sessions import Session, save_session
from streamlab.stream import Publisher, play
from tests.conftest import free_endpoint, run_cli, streamlab_command

pytestmark = pytest.mark.slow


def test_a_bad_learner_parameter_exits_cleanly_and_makes_no_store(tmp_path: Path) -> None:
    """`sm:n_components=0` is refused before any socket opens: no ZeroMQ abort (rc 134), the
    message names the parameter, and the store path stays free, three times running."""
    store = tmp_path / "run.zarr"
    for _ in range(3):
        result = run_cli(
            "attach",
            free_endpoint(),
            "--learner",
            "sm:n_components=0",
            "--store",
            str(store),
            "--seconds",
            "5",
            "--quiet",
        )
        assert result.returncode == 1, (result.returncode, result.stderr)
        assert "n_components" in result.stderr
        assert not store.exists()


def test_an_unknown_y_channel_found_after_the_start_exits_cleanly(tmp_path: Path) -> None:
    """`akd:y=neuron99` can only be checked against the stream's channel names, after the
    sockets are open: the run must still close them in order and exit 1 with the names it
    has (it had printed them and then aborted in ZeroMQ, rc 134, on 4 of 6 runs)."""
    data = np.random.default_rng(0).poisson(1.0, size=(400, 6)).astype(np.float32)
    names = [f"neuron{i}" for i in range(6)]
    for attempt in range(2):  # the abort was intermittent: twice
        endpoint = free_endpoint()
        # not paced: once the run connects, every frame goes into the socket's queue at once
        publisher = Publisher(endpoint, pattern="push", send_timeout=60.0)
        stop = threading.Event()
        rig = threading.Thread(
            target=play,
            args=(publisher, "rig/spikes", [data]),
            kwargs={"rate": 200.0, "realtime": False, "meta": {"channels": names}, "stop": stop},
            daemon=True,
        )
        run = subprocess.Popen(
            streamlab_command(
                "attach",
                endpoint,
                "--pull",
                "--learner",
                "akd:y=neuron99",
                "--store",
                str(tmp_path / f"run{attempt}.zarr"),
                "--until-eos",
                "--quiet",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        rig.start()
        try:
            _, err = run.communicate(timeout=60)
        finally:
            run.kill()
            stop.set()
            rig.join(timeout=60)
            publisher.close(linger=0)
        assert run.returncode == 1, (run.returncode, err)
        assert "neuron99" in err and "neuron5" in err, err
        assert "Assertion failed" not in err and "Traceback" not in err, err


def test_a_busy_publish_port_makes_no_store(tmp_path: Path) -> None:
    """`--publish` on a port another socket holds fails at the bind, before the store is
    made, so the same command works once the port is free."""
    busy = free_endpoint()
    context = zmq.Context()
    holder = context.socket(zmq.PUB)
    holder.bind(busy)
    try:
        result = run_cli(
            "attach",
            free_endpoint(),
            "--learner",
            "sm:n_components=2",
            "--store",
            str(tmp_path / "run.zarr"),
            "--publish",
            busy,
            "--seconds",
            "5",
            "--quiet",
        )
    finally:
        holder.close(linger=0)
        context.term()
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert busy in result.stderr
    assert not (tmp_path / "run.zarr").exists()


def test_an_existing_store_names_overwrite_and_only_attach_names_resume(tmp_path: Path) -> None:
    """`replay` into an existing store names `--overwrite` (it has no `--resume`); `attach`
    names both; neither touches the store."""
    data = np.random.default_rng(0).poisson(1.0, (50, 4)).astype(np.uint16)
    save_session(tmp_path / "rec.npz", Session(data, 100.0))
    store = tmp_path / "run.zarr"
    first = run_cli(
        "replay", str(tmp_path / "rec.npz"), "--learner", "sm:n_components=2", "--store",
        str(store), "--quiet",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in store.rglob("*"))
    again = run_cli(
        "replay", str(tmp_path / "rec.npz"), "--learner", "sm:n_components=2", "--store",
        str(store), "--quiet",
    )  # fmt: skip
    assert again.returncode == 1
    assert "--overwrite" in again.stderr and "--resume" not in again.stderr
    live = run_cli(
        "attach", free_endpoint(), "--learner", "sm:n_components=2", "--store", str(store),
        "--seconds", "5", "--quiet",
    )  # fmt: skip
    assert live.returncode == 1
    assert "--overwrite" in live.stderr and "--resume" in live.stderr
    assert sorted(p.name for p in store.rglob("*")) == before


def test_attach_to_an_empty_endpoint_says_it_is_waiting_and_that_nothing_came(
    tmp_path: Path,
) -> None:
    """Nothing behind the endpoint: the run says where it listens, that it is waiting and for
    how long, and ends saying no stream arrived (it had printed `0 samples 0/s` forever)."""
    endpoint = free_endpoint()
    result = run_cli(
        "attach", endpoint, "--learner", "sm:n_components=2", "--store",
        str(tmp_path / "run.zarr"), "--seconds", "2.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"listening at {endpoint}" in result.stderr
    assert f"waiting for a stream at {endpoint}: nothing received in" in result.stderr
    assert f"no stream arrived at {endpoint}" in result.stderr


def test_a_script_without_a_main_guard_gets_the_reason_at_once(tmp_path: Path) -> None:
    """A plain script that replays at its top level: the store writer's child process imports
    the script again, whose run is refused there; the parent reports the dead writer and the
    fix within seconds (it had waited 10 minutes for the writer)."""
    data = np.random.default_rng(0).poisson(1.0, (200, 4)).astype(np.uint16)
    save_session(tmp_path / "rec.npz", Session(data, 100.0))
    script = tmp_path / "no_guard.py"
    script.write_text(
        "from streamlab.adapters import open_session\n"
        "from streamlab.runner import AttachOptions, replay\n"
        f"session = open_session({str(tmp_path / 'rec.npz')!r})\n"
        f"replay(session, AttachOptions(store={str(tmp_path / 'run.zarr')!r}, learners=['sm']))\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert 'if __name__ == "__main__":' in result.stderr
