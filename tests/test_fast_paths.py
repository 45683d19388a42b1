"""The similarity-matching step's three code paths (NumPy on the CPU, eager torch, one CUDA graph
per step on CUDA) compute the same maths: pinned here against each other in float64, with the
graph's replay checked against eager torch on a GPU when one is visible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError
from streamlab.learners.control import KalmanFilter
from streamlab.learners.cuda_graphs import GraphedUpdate
from streamlab.learners.similarity import SimilarityMatching


def _stream(steps: int, batch: int, n: int, seed: int = 0) -> np.ndarray:
    """Correlated counts-like input: a few latent directions plus Poisson noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(steps, batch, 3)) @ rng.normal(size=(3, n))
    return rng.poisson(2.0, (steps, batch, n)) + latent


@pytest.mark.parametrize(
    ("center", "normalize", "batch"),
    [(True, True, 3), (False, False, 3), (True, False, 3), (True, True, 1), (False, True, 1)],
)
def test_numpy_and_torch_backends_agree(center: bool, normalize: bool, batch: int) -> None:
    """2,000 steps of B streams (B = 1 has its own NumPy step), re-inversions of M included:
    outputs and every state tensor."""
    x = torch.from_numpy(_stream(2000, batch, 40))
    learners = {
        backend: SimilarityMatching(
            n_components=3,
            center=center,
            normalize=normalize,
            backend=backend,
            device="cpu",
            dtype="float64",
            seed=4,
        )
        for backend in ("numpy", "torch")
    }
    for t in range(len(x)):
        outs = {name: learner.step(x[t]) for name, learner in learners.items()}
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-7, atol=1e-8)
    states = {name: learner.state_dict() for name, learner in learners.items()}
    for key, value in states["torch"].items():
        if isinstance(value, torch.Tensor) and key != "_generator":
            torch.testing.assert_close(states["numpy"][key], value, rtol=1e-7, atol=1e-8)
    assert states["numpy"]["_steps"] == states["torch"]["_steps"] == 2000


def test_auto_backend_on_cpu_is_numpy_and_resumes_from_torch_state() -> None:
    """A state saved by one path resumes on the other with the same next outputs (float64, so
    that the paths' different float32 rounding is not what is compared)."""
    x = torch.from_numpy(_stream(300, 1, 20, seed=1)[:, 0])
    first = SimilarityMatching(
        n_components=2, backend="torch", device="cpu", dtype="float64", seed=0
    )
    for t in range(200):
        first.step(x[t])
    resumed = SimilarityMatching(n_components=2, device="cpu", dtype="float64", seed=0)  # NumPy
    resumed.load_state_dict(first.state_dict())
    for t in range(200, 300):
        torch.testing.assert_close(resumed.step(x[t]), first.step(x[t]), rtol=1e-9, atol=1e-10)


def test_state_tensors_keep_their_storage() -> None:
    """A CUDA graph reads and writes fixed addresses: every path updates the state in place."""
    x = torch.from_numpy(_stream(30, 2, 16)).float()
    for backend in ("numpy", "torch"):
        learner = SimilarityMatching(n_components=2, backend=backend, device="cpu", seed=0)
        learner.step(x[0])
        before = {name: t.data_ptr() for name, t in learner._state_tensors().items()}
        for t in range(1, len(x)):
            learner.step(x[t])
        after = {name: t.data_ptr() for name, t in learner._state_tensors().items()}
        assert after == before, backend


def test_backend_is_checked() -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        SimilarityMatching(backend="jax")
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA tensor"):
        GraphedUpdate(lambda x, s: x, dict, torch.zeros(2), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_graph_replays_match_eager_torch() -> None:
    """On CUDA `auto` captures the step (two variants: with and without re-inversion) and
    replays it; 500 steps agree with the eager torch path on the same device."""
    x = torch.from_numpy(_stream(500, 4, 64)).float().cuda()
    graphed = SimilarityMatching(n_components=4, device="cuda", seed=0)
    eager = SimilarityMatching(n_components=4, backend="torch", device="cuda", seed=0)
    for t in range(len(x)):
        torch.testing.assert_close(graphed.step(x[t]), eager.step(x[t]), rtol=1e-4, atol=1e-5)
    assert graphed._graph is not None
    assert graphed._graph.replays + graphed._graph_refresh.replays == len(x)
    assert not graphed._graph.eager_variants


def test_kalman_numpy_and_torch_backends_agree() -> None:
    """The Kalman filter's NumPy step is its torch step: 500 samples of 3 streams, float64."""
    rng = np.random.default_rng(2)
    A = [[0.95, 0.1], [-0.1, 0.95]]
    C = rng.normal(size=(6, 2)).tolist()
    x = torch.from_numpy(rng.normal(size=(500, 3, 6)))
    filters = {
        backend: KalmanFilter(
            A=A,
            C=C,
            Q=0.1,
            R=0.5,
            d=tuple(range(6)),
            backend=backend,
            device="cpu",
            dtype="float64",
        )
        for backend in ("numpy", "torch")
    }
    for t in range(len(x)):
        outs = {name: f.step(x[t]) for name, f in filters.items()}
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(filters["numpy"].covariance, filters["torch"].covariance)


def test_numpy_steps_give_nan_not_an_exception_on_a_singular_system() -> None:
    """A NaN sample makes the NumPy steps' solves singular: NaN out, for the pipeline's
    roll-back, as torch's error-free solves give."""
    kf = KalmanFilter(A=[[1.0]], C=[[1.0], [1.0]], device="cpu")
    kf.step(torch.ones(2))
    assert not torch.isfinite(kf.step(torch.tensor([float("nan"), 1.0]))).all()
    sm = SimilarityMatching(n_components=2, refresh_every=1, device="cpu")
    sm.step(torch.ones(4))
    assert not torch.isfinite(sm.step(torch.tensor([float("nan"), 1.0, 2.0, 3.0]))).all()
