"""`streamlab attach` as a user runs it, in a subprocess, fed by a test publisher on loopback:
a deliberate gap and every kind of malformed message end up in the store with their reasons,
and a run killed with SIGKILL resumes from its last checkpoint without duplicate or torn rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from streamlab.learners import SimilarityMatching
from streamlab.metrics import resident_mb
from streamlab.sessions import Session, save_session
from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.store.run_store import RunStore
from streamlab.stream import Frame, Publisher, play
from tests.conftest import run_cli, streamlab_command

pytestmark = pytest.mark.slow


def offline_outputs(data: np.ndarray, n_components: int) -> np.ndarray:
    learner = SimilarityMatching(n_components=n_components, device="cpu", seed=0)
    return np.stack([learner.step(torch.from_numpy(row.astype("f4"))).numpy() for row in data])


def header(**fields) -> bytes:
    base = {"v": 1, "seq": 0, "t": 0.0, "kind": "spikes", "dtype": "<u2", "shape": [1, 4]}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


def test_gap_and_malformed_messages_are_stored_with_reasons(tmp_path, endpoint) -> None:
    data, _ = LatentPoissonPopulation(n_neurons=4, rate=100.0, seed=1).sample(200)
    store = tmp_path / "run.zarr"
    publisher = Publisher(endpoint, pattern="push", send_timeout=60.0)
    attach = subprocess.Popen(
        streamlab_command(
            "attach",
            endpoint,
            "--pull",
            "--learner",
            "sm:n_components=2",
            "--store",
            str(store),
            "--until-eos",
            "--quiet",
            "--checkpoint-every",
            "50",
            "--spin",  # busy-waiting for frames changes nothing of what is stored
            "0.002",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stream = "rig1/spikes"
    try:
        publisher.hello(stream, 0, 0.0, {"n_channels": 4, "rate": 100.0})
        for seq in range(200):
            if 100 <= seq < 110:
                continue  # the deliberate gap
            publisher.send(Frame(stream, data[seq : seq + 1], seq, seq / 100, "spikes", 100.0))
            if seq == 50:
                bad = [
                    [stream.encode(), b"{not json", b""],
                    [stream.encode(), header(seq=51, dtype=None), b"\x00" * 8],
                    [stream.encode(), header(seq=51, dtype="<x7"), b"\x00" * 8],
                    [stream.encode(), header(seq=51), b"\x00" * 7],
                    [stream.encode(), header(seq=51, v=3), b"\x00" * 8],
                    [
                        stream.encode(),
                        header(seq=51, dtype="<f4"),
                        np.array([[1, np.nan, 0, 0]], "<f4").tobytes(),
                    ],
                    [stream.encode(), header(seq=51, shape=[1, 5]), b"\x00" * 10],
                    [stream.encode(), header(seq=10), b"\x00" * 8],
                    [stream.encode(), header(seq=51)],
                ]
                for parts in bad:
                    publisher.send_raw(parts)
        publisher.eos(stream, 200, 2.0)
        _, err = attach.communicate(timeout=90)
    finally:
        attach.kill()
        publisher.close(linger=0)
    assert attach.returncode == 0, err

    run = RunStore.open(store)
    assert run.status == "complete"
    table = run.learner("sm")
    kept = np.r_[0:100, 110:200]
    np.testing.assert_array_equal(table.read("seq"), kept)
    np.testing.assert_array_equal(table.read("output"), offline_outputs(data[kept], 2))
    assert run.gaps.rows == 1
    assert (
        int(run.gaps.read("first_seq")[0]),
        int(run.gaps.read("n_missing")[0]),
        run.gaps.read("reason")[0],
    ) == (100, 10, "seq")
    codes = list(run.rejected.read("code"))
    assert codes == [
        "json",
        "field",
        "dtype",
        "size",
        "version",
        "nonfinite",
        "channels",
        "seq",
        "parts",
    ]
    details = list(run.rejected.read("detail"))
    assert "'dtype'" in details[1] and "7 bytes" in details[3] and "NaN" in details[5]
    assert all(s == stream for s in run.rejected.read("stream"))

    inspect = run_cli("inspect", str(store))
    assert inspect.returncode == 0
    assert "190 rows" in inspect.stdout and "gaps      1 (10 samples missing)" in inspect.stdout
    assert "rejected  9" in inspect.stdout
    summary = json.loads(run_cli("inspect", str(store), "--json").stdout)
    assert summary["rejected"]["by_code"]["nonfinite"] == 1


def paced_feeder(
    endpoint: str, data: np.ndarray, hold_at: int, *, rate: float, **play_kwargs
) -> tuple[Publisher, threading.Thread, threading.Event]:
    """A rig replaying `data` in real time over PUSH from a thread (not started yet). It sends
    samples [0, hold_at), then holds the rest until the returned event is set: a run that falls
    behind holds in its socket what the rig sent, and when that run dies (kill -9, a failed
    write) it takes those samples and the eos with it, so the rest must wait for the resume."""
    publisher = Publisher(endpoint, pattern="push", send_timeout=120.0)
    release = threading.Event()

    def rig() -> None:
        play(publisher, "rig/spikes", [data[:hold_at]], rate=rate, send_eos=False, **play_kwargs)
        release.wait(60)
        play(
            publisher,
            "rig/spikes",
            [data[hold_at:]],
            rate=rate,
            first_seq=hold_at,
            t0=hold_at / rate,
            **play_kwargs,
        )

    return publisher, threading.Thread(target=rig, daemon=True), release


def attach_args(store: Path, checkpoint_every: int) -> list[str]:
    return [
        "--pull",
        "--store",
        str(store),
        "--until-eos",
        "--quiet",
        "--checkpoint-every",
        str(checkpoint_every),
    ]


def wait_for_checkpoint(store: Path, min_seq: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            attrs = json.loads((store / "zarr.json").read_text())["attributes"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            attrs = {}
        checkpoint = attrs.get("checkpoint")
        if checkpoint and checkpoint["seq"] >= min_seq:
            return int(checkpoint["seq"])
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint past seq {min_seq} within {timeout} s")


def test_kill_9_then_resume_gives_the_uninterrupted_rows(tmp_path, endpoint) -> None:
    """SIGKILL mid-run, then the README's resume line: every sample that arrived is there
    once, as the uninterrupted run would have it, and the input is still recorded."""
    data, _ = LatentPoissonPopulation(n_neurons=16, rate=2000.0, seed=2).sample(8000)
    store = tmp_path / "run.zarr"
    publisher, feeder, resuming = paced_feeder(
        endpoint, data, 5000, rate=2000.0, meta={"n_channels": 16}
    )
    common = attach_args(store, checkpoint_every=200)
    first = subprocess.Popen(
        streamlab_command(
            "attach", endpoint, "--learner", "sm:n_components=3", "--record-input", *common
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    feeder.start()
    try:
        killed_at = wait_for_checkpoint(store, 1500)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert json.loads((store / "zarr.json").read_text())["attributes"]["status"] == "running"
        resuming.set()
        resumed = run_cli("attach", endpoint, "--resume", *common, timeout=120)
    finally:
        first.kill()
        resuming.set()
        feeder.join(timeout=30)
        publisher.close(linger=0)
    assert resumed.returncode == 0, resumed.stderr

    run = RunStore.open(store)
    assert run.status == "complete" and len(run.attrs["resumes"]) == 1
    checkpoint_seq = run.attrs["resumes"][0]["from_seq"]
    assert checkpoint_seq >= killed_at
    seq = run.learner("sm").read("seq").astype(np.int64)
    assert (np.diff(seq) > 0).all(), "duplicate or reordered rows"
    gaps = list(
        zip(
            run.gaps.read("first_seq").astype(int),
            run.gaps.read("n_missing").astype(int),
            run.gaps.read("reason"),
            strict=True,
        )
    )
    interrupted = [g for g in gaps if g[2] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0][0] == checkpoint_seq + 1
    missing = np.zeros(len(data), bool)
    for first_seq, n_missing, _ in gaps:
        missing[first_seq : first_seq + n_missing] = True
    np.testing.assert_array_equal(seq, np.flatnonzero(~missing))  # every other sample is there once
    # identical to an uninterrupted run over the samples that arrived: state resumed exactly
    np.testing.assert_array_equal(run.learner("sm").read("output"), offline_outputs(data[seq], 3))
    assert run.checkpoint_seqs("sm")[-1] == 7999
    # the resume line has no --record-input: the run continues with the configuration it was
    # started with (it had dropped the input after the resume: issue 22, fault 3)
    assert run.input().rows == len(seq)
    np.testing.assert_array_equal(run.input().read("data"), data[seq])


def test_replay_cli_from_npz_then_from_the_recorded_store(tmp_path) -> None:
    """A run that recorded its input replays exactly: same input, same outputs."""
    session = tmp_path / "session.npz"
    assert (
        run_cli(
            "sim", "--out", str(session), "--channels", "10", "--rate", "200", "--seconds", "4"
        ).returncode
        == 0
    )
    first = run_cli(
        "replay",
        str(session),
        "--learner",
        "sm:n_components=2",
        "--store",
        str(tmp_path / "a.zarr"),
        "--record-input",
        "--quiet",
    )
    assert first.returncode == 0, first.stderr
    second = run_cli(
        "replay",
        str(tmp_path / "a.zarr"),
        "--learner",
        "sm:n_components=2",
        "--store",
        str(tmp_path / "b.zarr"),
        "--quiet",
    )
    assert second.returncode == 0, second.stderr
    a, b = RunStore.open(tmp_path / "a.zarr"), RunStore.open(tmp_path / "b.zarr")
    assert a.learner("sm").rows == 800
    np.testing.assert_array_equal(a.learner("sm").read("output"), b.learner("sm").read("output"))
    np.testing.assert_array_equal(a.input().read("data"), np.load(session)["data"])
    assert a.attrs["stream"]["rate"] == 200.0


def test_unwritable_store_stops_cleanly_and_resumes_once_space_is_back(tmp_path, endpoint) -> None:
    """A real write failure: the attach process may not grow any file past 96 KiB (an
    RLIMIT_FSIZE, as a full disk would refuse). The run must stop with a clear error, keep what
    it committed readable, and `--resume` must finish the run once writes work again."""
    import resource

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))

    data, _ = LatentPoissonPopulation(n_neurons=64, rate=1000.0, firing_rate=200.0, seed=5).sample(
        20_000
    )
    store = tmp_path / "run.zarr"
    publisher, feeder, resuming = paced_feeder(
        endpoint, data, 12_000, rate=5000.0, frame_samples=10, hello_every=None
    )
    common = attach_args(store, checkpoint_every=1000)
    feeder.start()
    try:
        failed = subprocess.run(
            streamlab_command(
                "attach", endpoint, "--learner", "sm:n_components=2", "--record-input", *common
            ),
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=small_files,
            check=False,
        )
        assert failed.returncode == 1, failed.stderr
        assert "writing the store failed" in failed.stderr and "File too large" in failed.stderr
        assert "--resume" in failed.stderr
        run = RunStore.open(store)
        assert run.status == "failed" and "File too large" in run.attrs["error"]
        committed = run.learner("sm").rows
        assert 0 < committed < 20_000
        np.testing.assert_array_equal(
            run.input().read("data"), data[run.input().read("seq").astype(int)]
        )
        resuming.set()
        resumed = run_cli("attach", endpoint, "--resume", *common, "--seconds", "60", timeout=120)
    finally:
        resuming.set()
        feeder.join(timeout=60)
        publisher.close(linger=0)
    assert resumed.returncode == 0, resumed.stderr
    run = RunStore.open(store)
    assert run.status == "complete" and run.attrs["resumes"][0]["status_was"] == "failed"
    seq = run.learner("sm").read("seq").astype(np.int64)
    assert (np.diff(seq) > 0).all() and seq[-1] == 19_999
    np.testing.assert_array_equal(run.learner("sm").read("output"), offline_outputs(data[seq], 2))


def test_a_live_run_with_a_gap_replays_from_its_store_bit_for_bit_gap_included(
    tmp_path, endpoint
) -> None:
    """Live/replay parity: a live run records its input (`--record-input`) while the rig loses
    samples 700-899; `streamlab replay` of that store with the same learner specs and seeds gives
    the same outputs bit for bit, at the same seq and t, and records the same gap."""
    data, _ = LatentPoissonPopulation(n_neurons=24, rate=1000.0, seed=11).sample(2_000)
    learners = ["--learner", "sm:n_components=3,seed=4", "--learner", "nsm:n_components=2,seed=5"]
    publisher = Publisher(endpoint, pattern="push", send_timeout=60.0)

    def rig() -> None:
        play(publisher, "rig/spikes", [data[:700]], rate=4000.0, frame_samples=10, send_eos=False)
        play(
            publisher,
            "rig/spikes",
            [data[900:]],
            rate=4000.0,
            frame_samples=10,
            first_seq=900,
            t0=900 / 4000.0,
            hello_every=None,
        )

    feeder = threading.Thread(target=rig, daemon=True)
    feeder.start()
    try:
        live = run_cli(
            "attach",
            endpoint,
            *learners,
            "--record-input",
            *attach_args(tmp_path / "live.zarr", 500),
        )
    finally:
        feeder.join(timeout=60)
        publisher.close(linger=0)
    assert live.returncode == 0, live.stderr
    replayed = run_cli(
        "replay",
        str(tmp_path / "live.zarr"),
        *learners,
        "--store",
        str(tmp_path / "again.zarr"),
        "--quiet",
    )
    assert replayed.returncode == 0, replayed.stderr
    a, b = RunStore.open(tmp_path / "live.zarr"), RunStore.open(tmp_path / "again.zarr")
    for name in ("sm", "nsm"):
        assert a.learner(name).rows == 1_800
        for column in ("output", "seq", "t"):
            np.testing.assert_array_equal(
                a.learner(name).read(column), b.learner(name).read(column)
            )
    gaps = [
        (int(run.gaps.read("first_seq")[0]), int(run.gaps.read("n_missing")[0]), run.gaps.rows)
        for run in (a, b)
    ]
    assert gaps[0] == gaps[1] == (700, 200, 1)


def test_a_recording_published_as_a_live_rig_and_paced_replays(tmp_path, endpoint) -> None:
    """`sim --from` plays a recording to `attach` as a live rig would (every sample arrives
    over PUSH); `replay --speed` paces by a factor of the recorded rate and refuses nonsense."""
    data, _ = LatentPoissonPopulation(n_neurons=8, rate=200.0, seed=3).sample(400)
    save_session(tmp_path / "rec.npz", Session(data, 200.0))
    rig = subprocess.Popen(
        streamlab_command(
            "sim",
            "--from",
            str(tmp_path / "rec.npz"),
            "--publish",
            endpoint,
            "--push",
            "--speed",
            "max",
            "--frame-samples",
            "20",
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    live = run_cli(
        "attach", endpoint, "--learner", "sm:n_components=2", *attach_args(tmp_path / "a.zarr", 100)
    )
    assert rig.wait(timeout=60) == 0 and live.returncode == 0, live.stderr
    run = RunStore.open(tmp_path / "a.zarr")
    assert run.learner("sm").rows == 400 and run.attrs["stream"]["rate"] == 200.0
    start = time.monotonic()
    paced = run_cli(
        "replay",
        str(tmp_path / "rec.npz"),
        "--learner",
        "sm:n_components=2",
        "--store",
        str(tmp_path / "b.zarr"),
        "--speed",
        "2",
        "--quiet",
    )
    assert paced.returncode == 0, paced.stderr
    assert time.monotonic() - start >= 1.0  # 2 s of samples at twice the recorded rate
    wrong = run_cli(
        "replay", str(tmp_path / "rec.npz"), "--store", str(tmp_path / "c.zarr"), "--speed", "fast"
    )
    assert wrong.returncode == 1 and "--speed 'fast'" in wrong.stderr


def test_a_live_pub_rig_ten_times_faster_than_the_learners_costs_gaps_not_memory(
    tmp_path, endpoint
) -> None:
    """A PUB rig at 10 kHz x 384 channels (frames of 10 samples) into `attach` with learners that
    manage about a tenth of that (their eager torch steps; NumPy's keep up with half): the run's
    resident memory stays flat, bounded by the high-water marks (`--hwm 100` frames a side here,
    3 MB; the default 10,000 bounds it at 10,000 frames), and what it could not take is recorded
    as gaps whose sizes account for every missing sample. (What a PUB rig still holds queued
    when it exits, its eos included, is lost unseen: PUB/SUB is for live rigs; PUSH loses
    nothing.)"""
    bounded = ["--hwm", "100"]  # frames of 15 KB: at most 3 MB queued across both sockets
    # the premise, established rather than assumed: the learners are subscribed before the rig
    # publishes its first sample (a run still importing torch on a loaded machine had joined
    # late, seen only the tail and kept up with it: 0 gaps)
    attach = subprocess.Popen(
        [
            *streamlab_command(
                "attach", endpoint, "--store", str(tmp_path / "slow.zarr"), *bounded
            ),
            "--learner",
            "sm:n_components=16,backend=torch",
            "--learner",
            "nsm:n_components=8,backend=torch",
            "--until-eos",
            "--seconds",
            "25",
            "--quiet",
            "--device",
            "cpu",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert attach.stderr is not None
    listening = attach.stderr.readline()
    assert "listening at" in listening, listening
    rig = subprocess.Popen(
        [
            *streamlab_command("sim", "--publish", endpoint, *bounded),
            "--channels",
            "384",
            "--rate",
            "10000",
            "--seconds",
            "6",
            "--frame-samples",
            "10",
            "--startup-delay",
            "2",
        ],
        stderr=subprocess.DEVNULL,
    )
    memory = []
    try:
        while attach.poll() is None:
            if (resident := resident_mb(attach.pid)) is not None:
                memory.append(resident)
            time.sleep(0.5)
    finally:
        for process in (rig, attach):
            if process.poll() is None:
                process.kill()
        rig.wait(timeout=30)
    assert attach.returncode == 0, attach.stderr.read()
    run = RunStore.open(tmp_path / "slow.zarr")
    seq = run.learner("sm").read("seq").astype(np.int64)
    missing = int(run.gaps.read("n_missing").sum())
    assert seq[0] < 20_000, f"joined at seq {seq[0]}: the rig was not outpacing a subscribed run"
    assert run.gaps.rows >= 1 and missing > len(seq)  # most of the 60,000 samples were dropped
    assert len(seq) + missing >= seq[-1] - seq[0] + 1  # every hole in seq is a recorded gap
    steady = memory[len(memory) // 4 :]
    print(
        f"slow consumer: {len(seq)} learned, {missing} missing; RSS {steady[0]:.0f} -> "
        f"{max(steady):.0f} MB"
    )
    assert max(steady) - steady[0] < 40  # bounded: no queue grows with the backlog
