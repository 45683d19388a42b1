"""The learners' step paths (NumPy on the CPU, eager torch, CUDA graphs replayed on CUDA) compute
the same maths: the NumPy steps pinned against torch in float64, and on a GPU, when one is
visible, every graphed learner's replays against its eager torch steps."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.control import AdaptiveKalmanDecoder, BioOFC, KalmanFilter
from streamlab.learners.cuda_graphs import GraphedUpdate
from streamlab.learners.glm import SwitchingGLM
from streamlab.learners.local_rules import rectified_fixed_point, rectified_fixed_point_numpy
from streamlab.learners.similarity import (
    BioCCA,
    NonnegativeSimilarityMatching,
    SimilarityMatching,
)
from streamlab.sim.switching import simulate_switching_glm


def _stream(steps: int, batch: int, n: int, seed: int = 0) -> np.ndarray:
    """Correlated counts-like input: a few latent directions plus Poisson noise."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(steps, batch, 3)) @ rng.normal(size=(3, n))
    return rng.poisson(2.0, (steps, batch, n)) + latent


def _assert_same_state(learners: dict, rtol: float, atol: float) -> dict[str, dict]:
    """The "numpy" learner's state tensors match the "torch" one's; returns both state dicts."""
    states = {name: learner.state_dict() for name, learner in learners.items()}
    for key, value in states["torch"].items():
        if isinstance(value, torch.Tensor) and key != "_generator":
            torch.testing.assert_close(states["numpy"][key], value, rtol=rtol, atol=atol)
    return states


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
    states = _assert_same_state(learners, rtol=1e-7, atol=1e-8)
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
    graphs = graphed._cuda_graphs
    assert set(graphs) == {"step", "refresh"}
    assert sum(g.replays for g in graphs.values()) == len(x)
    assert not any(g.eager_variants for g in graphs.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_graphs_are_recaptured_after_a_state_is_loaded() -> None:
    """A graph holds the state tensors' addresses: a learner restored from a checkpoint (new
    tensors) or unpickled must step from the restored state, as eager torch does."""
    x = torch.from_numpy(_stream(300, 2, 32, seed=3)).float().cuda()
    first = SimilarityMatching(n_components=3, device="cuda", seed=1)
    for t in range(100):
        first.step(x[t])
    checkpoint = first.state_dict()
    for t in range(100, 150):  # the graphs move on past the checkpoint
        first.step(x[t])
    resumed = SimilarityMatching(n_components=3, device="cuda", seed=1)
    resumed.step(x[0])  # graphs captured against this learner's first tensors
    resumed.load_state_dict(checkpoint)
    eager = SimilarityMatching(n_components=3, backend="torch", device="cuda", seed=1)
    eager.load_state_dict(checkpoint)
    for t in range(100, 300):
        torch.testing.assert_close(resumed.step(x[t]), eager.step(x[t]), rtol=1e-4, atol=1e-5)
    copy = pickle.loads(pickle.dumps(resumed))
    for t in range(200, 220):
        torch.testing.assert_close(copy.step(x[t]), resumed.step(x[t]), rtol=1e-4, atol=1e-5)
    assert copy._cuda_graphs is not resumed._cuda_graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_kalman_filter_graph_replays_match_eager_torch() -> None:
    rng = np.random.default_rng(5)
    C = rng.normal(size=(16, 4)).tolist()
    A = (0.9 * np.eye(4)).tolist()
    x = torch.from_numpy(rng.normal(size=(400, 8, 16))).float().cuda()
    graphed, eager = (
        KalmanFilter(A=A, C=C, Q=0.1, R=0.5, backend=backend, device="cuda")
        for backend in ("auto", "torch")
    )
    for t in range(len(x)):
        torch.testing.assert_close(graphed.step(x[t]), eager.step(x[t]), rtol=1e-4, atol=1e-5)
    (graph,) = graphed._cuda_graphs.values()
    assert graph.replays == len(x) and not graph.eager_variants


def _graphable(name: str, backend: str):
    """The learners whose steps replay as CUDA graphs, built on CUDA with `backend`."""
    common = {"backend": backend, "device": "cuda", "seed": 2}
    if name == "sm":
        return SimilarityMatching(n_components=3, **common)
    if name == "nsm":
        return NonnegativeSimilarityMatching(n_components=4, **common)
    if name == "biocca":
        return BioCCA(n_components=2, eta=0.01, tau=0.5, **common)
    if name == "akd":
        return AdaptiveKalmanDecoder(n_components=2, forgetting=0.99, **common)
    rng = np.random.default_rng(0)
    return KalmanFilter(A=0.9 * np.eye(3), C=rng.normal(size=(24, 3)), Q=0.1, R=0.5, **common)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ["sm", "nsm", "biocca", "kalman", "akd"])
def test_graphed_steps_match_eager_torch(name: str) -> None:
    """Every graphable learner: 300 steps of 4 streams replayed from graphs give eager torch's
    outputs and state; with a target, some steps have none and some rows are NaN (unlabelled)."""
    rng = np.random.default_rng(7)
    x = torch.from_numpy(_stream(300, 4, 24, seed=7)).float().cuda()
    y = torch.from_numpy(rng.normal(size=(300, 4, 2))).float().cuda()
    y[::7, 1] = float("nan")
    graphed, eager = _graphable(name, "auto"), _graphable(name, "torch")
    for t in range(len(x)):
        target = None if name in ("sm", "nsm", "kalman") or t % 5 == 4 else y[t]
        if name == "biocca" and target is not None:
            target = torch.nan_to_num(target)
        torch.testing.assert_close(
            graphed.step(x[t], target) if target is not None else graphed.step(x[t]),
            eager.step(x[t], target) if target is not None else eager.step(x[t]),
            rtol=1e-4,
            atol=1e-5,
        )
    for key, value in eager.state_dict().items():
        if isinstance(value, torch.Tensor) and key != "_generator":
            torch.testing.assert_close(graphed.state_dict()[key], value, rtol=1e-4, atol=1e-5)
    graphs = graphed._cuda_graphs
    assert graphs and all(g.replays > 0 and not g.eager_variants for g in graphs.values())


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
    """A NaN sample gives NaN out of every NumPy step (the Kalman filter's and PSP's through a
    singular solve), for the pipeline's roll-back, as the torch steps give: never an
    exception."""
    kf = KalmanFilter(A=[[1.0]], C=[[1.0], [1.0]], device="cpu")
    kf.step(torch.ones(2))
    assert not torch.isfinite(kf.step(torch.tensor([float("nan"), 1.0]))).all()
    sm = SimilarityMatching(n_components=2, refresh_every=1, device="cpu")
    sm.step(torch.ones(4))
    assert not torch.isfinite(sm.step(torch.tensor([float("nan"), 1.0, 2.0, 3.0]))).all()
    bad = torch.tensor([float("nan"), 1.0, 2.0, 3.0])
    nsm = NonnegativeSimilarityMatching(n_components=2, init_samples=2, device="cpu", seed=0)
    glm = SwitchingGLM(n_states=2, burn_in=0, check_counts=False, device="cpu")
    for learner in (nsm, glm):
        for t in range(3):
            learner.step(torch.tensor([1.0, 0.0, 2.0, float(t)]))
        assert learner._numpy_step
        assert not torch.isfinite(learner.step(bad)).all(), type(learner).__name__


@pytest.mark.parametrize("advantage_clip", [0.0, 2.0])
def test_bio_ofc_numpy_and_torch_backends_agree(advantage_clip: float) -> None:
    """Bio-OFC's NumPy step is its torch step: 600 samples of 3 streams in float64 through
    episode starts, delayed innovations, policy-gradient steps (with and without advantage
    clipping) and samples without a cost; the exploration noise comes from the same generator."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3, 2))
    for t in range(1, len(x)):  # observations with dynamics to learn (white noise has none)
        x[t] += 0.8 * x[t - 1]
    x = torch.from_numpy(x)
    cost = x.square().sum(-1, keepdim=True)
    learners = {
        backend: BioOFC(
            delay=2,
            learning_rate=1e-3,
            policy_rate=1e-4,
            advantage_clip=advantage_clip,
            backend=backend,
            device="cpu",
            dtype="float64",
            seed=5,
        )
        for backend in ("numpy", "torch")
    }
    for t in range(len(x)):
        with_cost = t % 9 != 4
        outs = {
            name: learner.step(x[t], cost[t] if with_cost else None)
            for name, learner in learners.items()
        }
        assert outs["torch"].abs().max() < 100  # the learner stays in a sane range
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(
            learners["numpy"].extra_outputs()["estimate"],
            learners["torch"].extra_outputs()["estimate"],
            rtol=1e-9,
            atol=1e-10,
        )
    states = {name: learner.state_dict() for name, learner in learners.items()}
    for key, value in states["torch"].items():
        if key == "_generator":
            assert torch.equal(states["numpy"][key], value)  # the same draws were taken
        elif isinstance(value, torch.Tensor):
            torch.testing.assert_close(states["numpy"][key], value, rtol=1e-9, atol=1e-10)
        else:
            assert states["numpy"][key] == value, key


def _ring(steps: int, batch: int, n: int, seed: int = 0) -> np.ndarray:
    """Points on a circle embedded in n channels, plus noise: overlapping receptive fields, so
    the nonnegative network's fixed points have several active units."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, (steps, batch))
    basis = np.linalg.qr(rng.normal(size=(n, 2)))[0].T
    circle = np.stack([np.cos(angle), np.sin(angle)], -1) @ basis
    return 3.0 * circle + 0.1 * rng.normal(size=(steps, batch, n))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("solver", ["active_set", "jacobi"])
def test_rectified_fixed_point_numpy_matches_torch(batch: int, solver: str) -> None:
    """The NumPy fixed-point solve (its own single-stream form at B = 1) gives torch's answer on
    random problems: symmetric nonnegative lateral weights, drives of either sign."""
    rng = np.random.default_rng(11)
    active_counts = []
    for _ in range(200):
        k = int(rng.integers(2, 7))
        lateral = rng.uniform(0, 0.6, (batch, k, k))
        lateral = 0.5 * (lateral + lateral.transpose(0, 2, 1))
        lateral[:, np.arange(k), np.arange(k)] = 0.0
        drive = rng.normal(size=(batch, k))
        options = {"solver": solver, "damping": 0.5, "tol": 1e-10, "max_iter": 200}
        ours = rectified_fixed_point_numpy(drive, lateral, **options)
        reference = rectified_fixed_point(
            torch.from_numpy(drive), torch.from_numpy(lateral), early_exit=True, **options
        )
        np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-9, atol=1e-12)
        active_counts.append(int((ours > 0).sum(1).max()))
    assert max(active_counts) >= 3  # several units active in some problems
    assert 1 in active_counts  # and one alone in others (the single-stream shortcut)


@pytest.mark.parametrize(("data", "batch"), [("clusters", 1), ("ring", 1), ("ring", 3)])
def test_nonnegative_numpy_and_torch_backends_agree(data: str, batch: int) -> None:
    """The nonnegative network's NumPy step is its torch step: 1,500 samples in float64 through
    the initial buffer, outputs and every state tensor."""
    if data == "ring":
        x = torch.from_numpy(_ring(1500, batch, 30))
        k = 6
    else:
        x = torch.from_numpy(_stream(1500, batch, 30))
        k = 4
    learners = {
        backend: NonnegativeSimilarityMatching(
            n_components=k, backend=backend, device="cpu", dtype="float64", seed=3
        )
        for backend in ("numpy", "torch")
    }
    several_active = 0
    for t in range(len(x)):
        outs = {name: learner.step(x[t]) for name, learner in learners.items()}
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-8, atol=1e-10)
        several_active += int(((outs["numpy"] > 0).sum(-1) > 1).any())
    if data == "ring":
        assert several_active > 100  # the multi-unit solves were exercised
    _assert_same_state(learners, rtol=1e-8, atol=1e-10)


def test_nonnegative_auto_backend_is_numpy_for_small_batches_only() -> None:
    learner = NonnegativeSimilarityMatching(n_components=2, device="cpu")
    learner.initialize(8, batch=1)
    assert learner._numpy_step
    learner.initialize(8, batch=4096)
    assert not learner._numpy_step
    forced = NonnegativeSimilarityMatching(n_components=2, backend="numpy", device="cpu")
    forced.initialize(8, batch=4096)
    assert forced._numpy_step


@pytest.mark.parametrize(("center", "batch"), [(True, 1), (True, 3), (False, 2)])
def test_bio_cca_numpy_and_torch_backends_agree(center: bool, batch: int) -> None:
    """Bio-CCA's NumPy step is its torch step: 1,500 samples of two views sharing a latent
    signal, in float64, with steps that only infer (no second view) and the periodic
    re-inversion of M; outputs and every state tensor."""
    rng = np.random.default_rng(13)
    latent = rng.normal(size=(1500, batch, 2))
    x = torch.from_numpy(latent @ rng.normal(size=(2, 20)) + rng.normal(size=(1500, batch, 20)))
    y = torch.from_numpy(latent @ rng.normal(size=(2, 6)) + rng.normal(size=(1500, batch, 6)))
    learners = {
        backend: BioCCA(
            n_components=2,
            eta=0.01,
            tau=0.5,
            center=center,
            backend=backend,
            device="cpu",
            dtype="float64",
            seed=6,
        )
        for backend in ("numpy", "torch")
    }
    for t in range(len(x)):
        view = None if t % 6 == 5 else y[t]
        outs = {name: learner.step(x[t], view) for name, learner in learners.items()}
        # the burn-in's batch CCA start amplifies the two steps' rounding-level differences:
        # measured up to 7e-10 absolute (3e-8 relative) over the 1,250 learning steps
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-7, atol=1e-8)
    states = _assert_same_state(learners, rtol=1e-7, atol=1e-8)
    assert states["numpy"]["_learned"] == 1250


@pytest.mark.parametrize(
    "options",
    [
        {"prior": "none"},
        {"prior": "gaussian", "n_basis": 2, "basis": "raised_cosine"},
        {"prior": "onehot", "burn_in_fit": "moments"},
        {"prior": "gaussian", "n_inputs": 2, "check_counts": False},
    ],
)
def test_switching_glm_numpy_and_torch_backends_agree(options: dict) -> None:
    """The switching GLM's NumPy online step is its torch step: 1,000 bins of 2 simulated
    recordings in float64 past a 300-bin burn-in (EM or moments), with each prior (their torch
    steps interleaved on the same memory) and the curvature's periodic re-inversion; outputs,
    the bin's log-likelihood and every state tensor."""
    recording = simulate_switching_glm(1000, batch=2, seed=0)
    x = torch.from_numpy(recording.counts.astype(np.float64))
    learners = {
        backend: SwitchingGLM(
            n_states=3,
            burn_in=300,
            refresh_every=100,
            backend=backend,
            device="cpu",
            dtype="float64",
            seed=1,
            **options,
        )
        for backend in ("numpy", "torch")
    }
    for t in range(len(x)):
        outs = {name: learner.step(x[t]) for name, learner in learners.items()}
        torch.testing.assert_close(outs["numpy"], outs["torch"], rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(
            learners["numpy"].extra_outputs()["log_likelihood"],
            learners["torch"].extra_outputs()["log_likelihood"],
            rtol=1e-9,
            atol=1e-9,
        )
    states = _assert_same_state(learners, rtol=1e-8, atol=1e-10)
    assert states["numpy"]["cursor"] == states["torch"]["cursor"] == 1000


def test_switching_glm_numpy_step_still_checks_counts() -> None:
    learner = SwitchingGLM(n_states=2, burn_in=0, device="cpu")
    learner.step(torch.ones(4))
    assert learner._numpy_step
    with pytest.raises(InputShapeError, match="negative or fractional count"):
        learner.step(torch.tensor([1.0, 0.5, 0.0, 2.0]))
