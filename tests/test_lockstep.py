"""Lockstep replay: several recorded sessions through one batch of learners give each session
the same outputs, store rows, gaps and final state as replaying it alone would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError
from streamlab.learners.registry import build_learners
from streamlab.lockstep import group_for_lockstep, lockstep_key, replay_lockstep
from streamlab.sessions import Session
from streamlab.store.run_store import RunStore

# float64: the batched torch step and the single-stream NumPy step order their sums differently,
# and learning amplifies float32 rounding over hundreds of samples (by how much depends on the
# CPU's kernels); in float64 both paths agree to far under the tolerance on any machine
SPECS = ["sm:n_components=3,dtype=float64", "nsm:n_components=2,dtype=float64"]


def _session(n_samples: int, n_channels: int, seed: int, lose: tuple[int, int] | None = None):
    """Poisson counts around a few latent directions; `lose` drops rows [a, b) as a live run
    that lost them would have recorded it (seq jumps there)."""
    rng = np.random.default_rng(seed)
    rates = np.exp(0.4 * rng.normal(size=(n_samples, 2)) @ rng.normal(size=(2, n_channels)))
    data = rng.poisson(rates).astype(np.float32)
    seq = np.arange(n_samples, dtype=np.uint64) + 10
    if lose is not None:
        keep = np.r_[0 : lose[0], lose[1] : n_samples]
        data, seq = data[keep], seq[keep]
    return Session(
        data, rate=100.0, stream=f"rig/{seed}", seq=seq, t=seq.astype(np.float64) / 100.0
    )


def _alone(session: Session, device: str = "cpu") -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Each learner stepped through `session` on its own (B = 1) on `device` (where the random
    initial weights are drawn): outputs and final state."""
    learners = build_learners(SPECS, device=device, seed=3)
    outputs = {name: [] for name in learners}
    for row in torch.from_numpy(session.data).to(device):
        for name, learner in learners.items():
            outputs[name].append(learner.step(row).cpu().numpy().copy())
    return (
        {name: np.stack(rows) for name, rows in outputs.items()},
        {name: learner.state_dict() for name, learner in learners.items()},
    )


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_lockstep_matches_each_session_replayed_alone(tmp_path, device: str) -> None:
    """On the CPU, and on CUDA where there is one (the batch and each session alone both on
    the GPU)."""
    sessions = [_session(700, 12, 0), _session(450, 12, 1, lose=(100, 130)), _session(900, 12, 2)]
    stores = [tmp_path / f"s{i}.zarr" for i in range(len(sessions))]
    results = replay_lockstep(sessions, SPECS, stores, device=device, seed=3, block_rows=256)
    assert [r.progress.samples for r in results] == [700, 420, 900]
    assert [(r.progress.gaps, r.progress.missing) for r in results] == [(0, 0), (1, 30), (0, 0)]
    for session, path in zip(sessions, stores, strict=True):
        expected, states = _alone(session, device)
        store = RunStore.open(path)
        assert store.status == "complete"
        for name in ("sm", "nsm"):
            table = store.learner(name)
            assert table.rows == session.n_samples
            np.testing.assert_allclose(table.read("output"), expected[name], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(table.read("seq"), session.seq)
            np.testing.assert_allclose(table.read("t"), session.t)
            saved = store.load_state(name, int(session.seq[-1]))
            assert int(saved["_steps"]) == session.n_samples
            for key, value in states[name].items():
                if isinstance(value, torch.Tensor) and key != "_generator":
                    np.testing.assert_allclose(
                        saved[key], value.cpu().numpy(), rtol=1e-7, atol=1e-9
                    )
        gaps = store.gaps
        if session.stream == "rig/1":
            assert gaps.rows == 1
            assert int(gaps.read("first_seq")[0]) == 110 and int(gaps.read("n_missing")[0]) == 30
        else:
            assert gaps.rows == 0


def test_resumes_alone_from_a_lockstep_checkpoint(tmp_path) -> None:
    """The state saved per session is a single-stream learner's: it loads into B = 1."""
    sessions = [_session(300, 8, 5), _session(200, 8, 6)]
    stores = [tmp_path / "a.zarr", tmp_path / "b.zarr"]
    replay_lockstep(sessions, ["sm:n_components=2"], stores, device="cpu", seed=0)
    state = RunStore.open(stores[1]).load_state("sm", int(sessions[1].seq[-1]))
    learner = build_learners(["sm:n_components=2"], device="cpu")["sm"]
    learner.load_state_dict(state)
    assert learner.step(torch.ones(8)).shape == (2,)


def test_refuses_mixed_channel_counts_and_shared_state(tmp_path) -> None:
    sessions = [_session(50, 8, 0), _session(50, 9, 1)]
    with pytest.raises(ConfigError, match=r"same channel count.*group_for_lockstep"):
        replay_lockstep(sessions, ["sm"], [tmp_path / "a", tmp_path / "b"], device="cpu")
    keys = [lockstep_key(s) for s in [*sessions, _session(20, 8, 2)]]
    assert group_for_lockstep(keys) == [[0, 2], [1]]
    same = [_session(50, 8, 0), _session(50, 8, 1)]
    stores = [tmp_path / "c.zarr", tmp_path / "d.zarr"]
    with pytest.raises(ConfigError, match="shared across streams"):
        replay_lockstep(same, ["refh:share_weights=True"], stores, device="cpu")
    assert not stores[0].exists()  # refused before anything was written
