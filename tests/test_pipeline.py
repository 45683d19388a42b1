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
