"""The two things a new user runs: `streamlab demo` (a subprocess, on Prefect's embedded API)
and the Prefect replay flows, for real."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamlab.learners import SimilarityMatching
from streamlab.sessions import Session, load_session, save_session
from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.store.run_store import RunStore

pytestmark = pytest.mark.slow


def test_demo_writes_a_complete_store_and_a_picture(tmp_path) -> None:
    store = tmp_path / "demo.zarr"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    result = subprocess.run(
        [sys.executable, "-m", "streamlab", "demo", "--seconds", "3", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "samples" in result.stderr and "p99" in result.stderr  # live progress was shown
    assert "subspace" in result.stdout and "picture" in result.stdout
    run = RunStore.open(store)
    assert run.status == "complete"
    assert run.learner("sm").rows > 500
    assert run.input().rows == run.learner("sm").rows
    png = store.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def make_session(path, seed: int, samples: int = 1500) -> np.ndarray:
    data, _ = LatentPoissonPopulation(n_neurons=12, rate=500.0, seed=seed).sample(samples)
    save_session(
        path, Session(data, 500.0, "spikes", meta={"channels": [f"n{i}" for i in range(12)]})
    )
    return data


def test_replay_flow_runs_a_session_through_the_pipeline(prefect_api, tmp_path) -> None:
    from streamlab.flows.replay import replay_flow

    data = make_session(tmp_path / "session.npz", seed=1)
    result = replay_flow(
        str(tmp_path / "session.npz"), str(tmp_path / "out.zarr"), ["sm:n_components=3"]
    )
    assert result["samples"] == 1500 and result["gaps"] == 0 and result["rejects"] == 0
    learner = SimilarityMatching(n_components=3, device="cpu", seed=0)
    expected = np.stack([learner.step(torch.from_numpy(row.astype("f4"))).numpy() for row in data])
    run = RunStore.open(tmp_path / "out.zarr")
    assert run.status == "complete"
    np.testing.assert_array_equal(run.learner("sm").read("output"), expected)
    assert load_session(tmp_path / "session.npz").meta["channels"][0] == "n0"


def test_replay_many_fans_out_one_task_per_session(prefect_api, tmp_path) -> None:
    from streamlab.flows.replay import replay_sessions

    paths = []
    for seed in (2, 3):
        make_session(tmp_path / f"s{seed}.npz", seed, samples=800)
        paths.append(str(tmp_path / f"s{seed}.npz"))
    results = replay_sessions(paths, str(tmp_path / "stores"), ["sm:n_components=2"])
    assert [r["samples"] for r in results] == [800, 800]
    for seed in (2, 3):
        assert RunStore.open(tmp_path / "stores" / f"s{seed}.zarr").learner("sm").rows == 800


def test_replay_many_in_lockstep_matches_one_task_per_session(prefect_api, tmp_path) -> None:
    """The same sessions replayed as one batch give the rows the live path gives each alone."""
    from streamlab.flows.replay import replay_sessions

    paths = []
    for seed in (4, 5):
        make_session(tmp_path / f"s{seed}.npz", seed, samples=600)
        paths.append(str(tmp_path / f"s{seed}.npz"))
    specs = ["sm:n_components=2,dtype=float64"]  # float32 rounding differs between the paths
    alone = replay_sessions(paths, str(tmp_path / "alone"), specs)
    together = replay_sessions(
        paths, str(tmp_path / "lockstep"), specs, lockstep=True, device="cpu"
    )
    assert [r["lockstep_sessions"] for r in together] == [2, 2]
    assert [r["samples"] for r in together] == [r["samples"] for r in alone] == [600, 600]
    for seed in (4, 5):
        expected = RunStore.open(tmp_path / "alone" / f"s{seed}.zarr").learner("sm")
        got = RunStore.open(tmp_path / "lockstep" / f"s{seed}.zarr").learner("sm")
        np.testing.assert_allclose(
            got.read("output"), expected.read("output"), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_array_equal(got.read("seq"), expected.read("seq"))
