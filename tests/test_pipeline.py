"""The pipeline in-process over real loopback sockets: stored outputs equal an offline run of
the same learner, outputs are published back tagged with the input seq, checkpoints are
consistent with the rows, and a failing store stops the run with a clear error."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from streamlab.learners import SimilarityMatching
from streamlab.pipeline import Pipeline
from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.sinks import ZarrSink, ZmqOutputSink
from streamlab.store.run_store import RunStore
from streamlab.stream import Frame, Publisher, ZmqSource, play
from tests.conftest import free_endpoint


def start_replay(data: np.ndarray, frame_samples: int = 1) -> tuple[Publisher, threading.Thread]:
    publisher = Publisher("tcp://127.0.0.1:0", pattern="push", send_timeout=20.0)
    thread = threading.Thread(
        target=play,
        args=(publisher, "sim/spikes", [data]),
        kwargs={
            "rate": 1000.0,
            "realtime": False,
            "frame_samples": frame_samples,
            "meta": {"n_channels": data.shape[1]},
        },
        daemon=True,
    )
    thread.start()
    return publisher, thread


@pytest.mark.parametrize("frame_samples", [1, 7])
def test_stored_outputs_equal_offline_learner(tmp_path, frame_samples) -> None:
    data, _ = LatentPoissonPopulation(n_neurons=24, rate=1000.0, seed=3).sample(2500)
    publisher, thread = start_replay(data, frame_samples)
    store = RunStore.create(tmp_path / "run.zarr", config={}, source={})
    with ZmqSource(publisher.endpoint, pattern="pull") as source:
        learners = {"sm": SimilarityMatching(n_components=3, device="cpu", seed=1)}
        sink = ZarrSink(store, block_rows=256, record_input=True)
        progress = Pipeline(source, learners, [sink], checkpoint_every=500).run(seconds=60)
    thread.join(5)
    publisher.close(linger=0)
    assert progress.samples == 2500 and progress.gaps == 0 and progress.rejects == 0
    reference = SimilarityMatching(n_components=3, device="cpu", seed=1)
    expected = np.stack(
        [reference.step(torch.from_numpy(row.astype("f4"))).numpy() for row in data]
    )
    reopened = RunStore.open(tmp_path / "run.zarr")
    table = reopened.learner("sm")
    np.testing.assert_array_equal(table.read("output"), expected)
    np.testing.assert_array_equal(table.read("seq"), np.arange(2500))
    np.testing.assert_allclose(table.read("t"), np.arange(2500) / 1000.0)
    assert (table.read("latency_us") > 0).all()
    np.testing.assert_array_equal(reopened.input().read("data"), data)
    assert reopened.status == "complete"
    assert reopened.checkpoint_seqs("sm")[-1] == 2499  # the final checkpoint
    assert reopened.attrs["stream"]["n_channels"] == 24


def test_outputs_are_published_back_with_the_input_seq(tmp_path) -> None:
    data, _ = LatentPoissonPopulation(n_neurons=8, rate=1000.0, seed=0).sample(300)
    out_endpoint = free_endpoint()
    output_sink = ZmqOutputSink(out_endpoint)
    listener = ZmqSource(out_endpoint, pattern="sub", topic="streamlab/sm")
    time.sleep(0.3)  # let the subscription reach the publisher before data flows
    publisher, thread = start_replay(data)
    store = RunStore.create(tmp_path / "run.zarr", config={}, source={})
    with ZmqSource(publisher.endpoint, pattern="pull") as source:
        Pipeline(
            source,
            {"sm": SimilarityMatching(n_components=2, device="cpu", seed=0)},
            [ZarrSink(store), output_sink],
        ).run(seconds=60)
    thread.join(5)
    received = []
    while (message := listener.receive(timeout=0.5)) is not None:
        if isinstance(message, Frame):
            received.append(message)
    listener.close()
    publisher.close(linger=0)
    assert [m.seq for m in received] == list(range(300))
    assert {m.kind for m in received} == {"sm"}
    stored = RunStore.open(tmp_path / "run.zarr").learner("sm").read("output")
    np.testing.assert_array_equal(np.concatenate([m.data for m in received]), stored)


class Fragile(SimilarityMatching):
    """PSP whose weights turn to NaN once, at its `break_at`-th step, as a diverging learner's
    would."""

    def __init__(self, break_at: int = -1, **params) -> None:
        self.break_at = break_at
        super().__init__(**params)
        self._broken = False

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        if self._steps + 1 == self.break_at and not self._broken:
            self._broken = True
            self._W.fill_(float("nan"))
        return super()._update(x)


def test_a_diverging_learner_is_rolled_back_and_the_others_carry_on(tmp_path) -> None:
    """At sample 1,234 one learner's state turns NaN: the pipeline sees the non-finite output
    at that sample, restores the learner's state at the last checkpoint (sample 999), records
    it, and the learner's later outputs equal a run restarted from that state; the healthy
    learner's outputs are exactly those of a run without the fault."""
    data, _ = LatentPoissonPopulation(n_neurons=12, rate=1000.0, seed=4).sample(2000)
    publisher, thread = start_replay(data, frame_samples=5)
    store = RunStore.create(tmp_path / "run.zarr", config={}, source={})
    params = {"n_components": 2, "device": "cpu", "seed": 2}
    with ZmqSource(publisher.endpoint, pattern="pull") as source:
        learners = {"healthy": SimilarityMatching(**params), "fragile": Fragile(1235, **params)}
        sink = ZarrSink(store, block_rows=256)
        progress = Pipeline(source, learners, [sink], checkpoint_every=500).run(seconds=60)
    thread.join(5)
    publisher.close(linger=0)
    assert progress.samples == 2000 and progress.divergences == 1
    run = RunStore.open(tmp_path / "run.zarr")
    x = torch.from_numpy(data.astype("f4"))
    reference = SimilarityMatching(**params)
    expected = np.stack([reference.step(row).numpy() for row in x])
    np.testing.assert_array_equal(run.learner("healthy").read("output"), expected)
    fragile = run.learner("fragile").read("output")
    divergence = run.root["learners/fragile"].attrs["divergences"]
    assert [(d["seq"], d["restored_from_seq"]) for d in divergence] == [(1234, 999)]
    assert not np.isfinite(fragile[1234:1235]).all() and np.isfinite(fragile[1235:]).all()
    np.testing.assert_array_equal(fragile[:1234], expected[:1234])
    restarted = SimilarityMatching(**params)
    for row in x[:1000]:
        restarted.step(row)
    # sample 1,234 ends its frame (frames of 5); from 1,235 on it continues from sample 999's
    # state, as a learner restarted there would
    later = np.stack([restarted.step(row).numpy() for row in x[1235:]])
    np.testing.assert_array_equal(fragile[1235:], later)


def test_lag_meter_is_wall_time_minus_stream_time_and_never_negative() -> None:
    """Behind = wall seconds since the first frame was taken minus the stream time covered:
    a consumer keeping pace is 0 behind, one taking 1.5 s for 1 s of stream is 0.5 behind,
    and a replay faster than real time is 0, not negative."""
    from streamlab.metrics import LagMeter

    lag = LagMeter()
    assert lag.update(10_000_000_000, 100.0) == 0.0  # the first frame sets the origin
    assert lag.update(11_000_000_000, 101.0) == pytest.approx(0.0)
    assert lag.update(12_500_000_000, 102.0) == pytest.approx(0.5)
    assert lag.update(12_600_000_000, 110.0) == 0.0  # the source is ahead of real time
    assert lag.max_behind_s == pytest.approx(0.5)
