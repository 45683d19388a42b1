"""Crash anywhere: an attach run is killed with SIGKILL twelve times at random moments (right
after a checkpoint, during the next flushes and checkpoints) and resumed each time. The final
store must hold, for every sample that reached the run, exactly the output an uninterrupted run
gives on those samples, no duplicate and no torn row, each interruption recorded as a gap, and
the status `complete` with every resume noted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import numpy as np

from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.store.run_store import RunStore
from streamlab.stream import Publisher, play
from tests.conftest import streamlab_command
from tests.test_cli_attach import attach_args, offline_outputs, wait_for_checkpoint

KILLS, CHUNK, RATE = 12, 600, 2000.0


def test_a_dozen_kills_at_random_moments_then_resume_lose_nothing_checkpointed(
    tmp_path, endpoint
) -> None:
    data, _ = LatentPoissonPopulation(n_neurons=16, rate=RATE, seed=7).sample((KILLS + 1) * CHUNK)
    store = tmp_path / "run.zarr"
    publisher = Publisher(endpoint, pattern="push", send_timeout=120.0)
    releases = [threading.Event() for _ in range(KILLS + 1)]

    def rig() -> None:
        """Chunk k waits for run k to start: what a dead run held in its socket is lost with
        it, so the next chunk must go to the next run (see test_cli_attach)."""
        for k, release in enumerate(releases):
            release.wait(120)
            last = k == KILLS
            play(
                publisher,
                "rig/spikes",
                [data[k * CHUNK : (k + 1) * CHUNK]],
                rate=RATE,
                first_seq=k * CHUNK,
                t0=k * CHUNK / RATE,
                meta={"n_channels": 16},
                send_eos=last,
            )

    feeder = threading.Thread(target=rig, daemon=True)
    feeder.start()
    common = attach_args(store, checkpoint_every=100)
    rng = np.random.default_rng(11)
    killed_after = []
    try:
        for k in range(KILLS):
            extra = ["--learner", "sm:n_components=3"] if k == 0 else ["--resume"]
            run = subprocess.Popen(
                streamlab_command("attach", endpoint, *extra, *common),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            releases[k].set()
            try:
                seen = wait_for_checkpoint(store, k * CHUNK + 100, timeout=90)
                threading.Event().wait(rng.uniform(0.0, 0.12))  # into the next flushes
                os.kill(run.pid, signal.SIGKILL)
                run.wait(timeout=10)
            finally:
                run.kill()
            killed_after.append(seen)
            status = json.loads((store / "zarr.json").read_text())["attributes"]["status"]
            assert status == "running"
        releases[KILLS].set()
        final = subprocess.run(
            streamlab_command("attach", endpoint, "--resume", *common),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        for release in releases:
            release.set()
        feeder.join(timeout=30)
        publisher.close(linger=0)
    assert final.returncode == 0, final.stderr

    result = RunStore.open(store)
    assert result.status == "complete" and len(result.attrs["resumes"]) == KILLS
    seq = result.learner("sm").read("seq").astype(np.int64)
    assert (np.diff(seq) > 0).all(), "duplicate or reordered rows"
    gaps = list(
        zip(
            result.gaps.read("first_seq").astype(int),
            result.gaps.read("n_missing").astype(int),
            result.gaps.read("reason"),
            strict=True,
        )
    )
    resumed_from = [int(r["from_seq"]) for r in result.attrs["resumes"]]
    interrupted = [first for first, _, reason in gaps if reason == "interrupted"]
    # a run killed after its last sample was checkpointed lost nothing, so it left no gap
    assert set(interrupted) <= {s + 1 for s in resumed_from} and len(interrupted) >= KILLS // 2
    assert all(after <= resume for after, resume in zip(killed_after, resumed_from, strict=True))
    missing = np.zeros(len(data), bool)
    for first, n_missing, _ in gaps:
        missing[first : first + n_missing] = True
    np.testing.assert_array_equal(seq, np.flatnonzero(~missing))  # each sample once, or a gap
    np.testing.assert_array_equal(
        result.learner("sm").read("output"), offline_outputs(data[seq], 3)
    )
    assert seq[-1] == len(data) - 1
    print(
        f"{KILLS} kills; {len(interrupted)} interruptions lost {int(missing.sum())} samples "
        f"held by the dead runs (recorded as gaps); {len(seq)} rows, all equal to the "
        "uninterrupted run"
    )
