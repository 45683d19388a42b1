"""Online principal subspace projection (Pehlevan, Sengupta and Chklovskii 2018) against its
closed form: the top-k eigenvectors of the data covariance from numpy.linalg.eigh."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners import LEARNERS, SimilarityMatching, build_learners, parse_spec
from streamlab.learners.similarity import principal_angles, subspace_error, top_eigenpairs


def spiked_covariance(n: int, k: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's synthetic set-up: k signal directions with variances 1..0.5, isotropic noise."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n, k)))
    variances = np.linspace(1.0, 0.5, k)
    x = (rng.standard_normal((samples, k)) * np.sqrt(variances)) @ basis.T
    return x + np.sqrt(0.002) * rng.standard_normal((samples, n)), basis


def run(
    sm: SimilarityMatching, x: np.ndarray, checkpoints: tuple[int, ...], reference: np.ndarray
) -> dict[int, float]:
    errors = {}
    data = torch.from_numpy(x.astype(np.float32 if sm.dtype == "float32" else np.float64))
    for t in range(len(x)):
        sm.step(data[t])
        if t + 1 in checkpoints:
            errors[t + 1] = subspace_error(sm.filters[0].cpu().numpy(), reference)
    return errors


@pytest.mark.parametrize("seed", [0, 1])
def test_subspace_converges_to_top_eigenvectors(seed: int) -> None:
    """n=256, k=16 as in the paper. Stated figure: subspace error < 0.05 after 1,000 samples and
    within 3x of batch PCA (eigh of the sample covariance) after 6,000."""
    x, _ = spiked_covariance(256, 16, 6000, seed)
    _, eigvecs = np.linalg.eigh(np.cov(x.T))
    top = eigvecs[:, ::-1][:, :16]
    sm = SimilarityMatching(n_components=16, gamma=1.5, device="cpu", seed=seed)
    errors = run(sm, x, (100, 1000, 6000), top)
    assert errors[1000] < 0.05
    assert errors[6000] < errors[1000] < errors[100]
    assert np.degrees(principal_angles(sm.filters[0].numpy(), top).max()) < 5.0
    batch_error = subspace_error(top.T, spiked_covariance(256, 16, 1, seed)[1])
    online_error_true = subspace_error(
        sm.filters[0].numpy(), spiked_covariance(256, 16, 1, seed)[1]
    )
    assert online_error_true < 3 * batch_error + 1e-3


def test_float32_tracks_float64_reference() -> None:
    x, basis = spiked_covariance(64, 4, 3000, 3)
    single = SimilarityMatching(n_components=4, device="cpu", seed=3)
    double = SimilarityMatching(n_components=4, device="cpu", seed=3, dtype="float64")
    run(single, x, (), basis)
    run(double, x, (), basis)
    assert subspace_error(single.filters[0].numpy(), double.filters[0].numpy().T) < 1e-3


def test_sherman_morrison_inverse_stays_exact() -> None:
    x, _ = spiked_covariance(32, 4, 997, 4)
    sm = SimilarityMatching(n_components=4, device="cpu", seed=0, refresh_every=10, dtype="float64")
    run(sm, x, (), np.eye(32)[:, :4])
    assert sm._steps % 10 != 0  # the recursion itself, not a fresh inverse, is being checked
    np.testing.assert_allclose(sm._Minv[0].numpy() @ sm._M[0].numpy(), np.eye(4), atol=1e-8)
    assert np.linalg.eigvalsh(sm._M[0].numpy()).min() > 0  # M stays positive definite


def test_batch_of_streams_equals_single_runs() -> None:
    streams = [spiked_covariance(20, 3, 400, s)[0] for s in range(3)]
    batched = SimilarityMatching(n_components=3, device="cpu", seed=5, dtype="float64")
    singles = [
        SimilarityMatching(n_components=3, device="cpu", seed=5, dtype="float64") for _ in streams
    ]
    # give every single learner the same initial weights as its slice of the batch
    batched.initialize(20, batch=3)
    for i, single in enumerate(singles):
        single.initialize(20)
        single._W.copy_(batched._W[i : i + 1])
    x = torch.from_numpy(np.stack(streams, axis=1))  # (T, B, n)
    for t in range(len(x)):
        out = batched.step(x[t])
        for i, single in enumerate(singles):
            torch.testing.assert_close(out[i], single.step(x[t, i]), rtol=1e-9, atol=1e-12)


def test_state_dict_round_trip_gives_same_next_outputs() -> None:
    x, _ = spiked_covariance(16, 2, 600, 6)
    a = SimilarityMatching(n_components=2, device="cpu", seed=1)
    run(a, x[:300], (), np.eye(16)[:, :2])
    state = {
        k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in a.state_dict().items()
    }
    b = SimilarityMatching(n_components=2, device="cpu", seed=99)
    b.load_state_dict(state)
    for row in torch.from_numpy(x[300:].astype(np.float32)):
        torch.testing.assert_close(a.step(row), b.step(row), rtol=0, atol=0)


def test_the_burn_in_start_runs_beside_the_stream_and_lands_later(monkeypatch) -> None:
    """The batch PCA that ends the burn-in is computed on the worker thread, not in a step, and
    replaces W and M some samples later (5 at 192 channels after a 200-sample burn-in) with
    PSP's fixed point for the burn-in's samples: W = Λ U^T, M = Λ for the top eigenpairs of
    their covariance, scaled by the network's running mean square norm."""
    import streamlab.learners.similarity as similarity

    threads = []

    def recording(*args):
        threads.append(threading.current_thread().name)
        return top_eigenpairs(*args)

    monkeypatch.setattr(similarity, "top_eigenpairs", recording)
    n, k, burn_in = 192, 3, 200
    x, _ = spiked_covariance(n, k, 240, 8)
    data = torch.from_numpy(x)
    sm = SimilarityMatching(n_components=k, init_samples=burn_in, device="cpu", dtype="float64")
    for t in range(burn_in):
        sm.step(data[t])
    lag = sm._start_lag
    assert lag == 5
    sm._start.result()  # the start in flight
    assert threads == ["streamlab-learner_0"]
    for t in range(burn_in, burn_in + lag - 1):
        sm.step(data[t])
    before = sm._W.clone()
    sm._finish_start()  # what the step at burn_in + lag does before it learns
    assert not torch.equal(before, sm._W)
    # the scale is the running mean square norm of x - (running mean), as the network sees it
    mean, msn = np.zeros(n), 0.0
    for t in range(burn_in):
        mean += (x[t] - mean) / (t + 1)
        msn += (((x[t] - mean) ** 2).sum() - msn) / (t + 1)
    assert sm._start_scale[0] == pytest.approx(1 / msn, rel=1e-9)
    centred = x[:burn_in] - x[:burn_in].mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred / burn_in / msn)
    top, lam = vectors[:, ::-1][:, :k], values[::-1][:k]
    np.testing.assert_allclose(
        np.abs(sm._W[0].numpy()), np.abs(lam[:, None] * top.T), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(sm._M[0].numpy(), np.diag(lam), rtol=1e-6)


def test_a_learner_restored_or_unpickled_before_its_start_is_due_computes_the_same_start() -> None:
    x, _ = spiked_covariance(10, 2, 400, 9)
    data = torch.from_numpy(x.astype(np.float32))
    a = SimilarityMatching(n_components=2, init_samples=200, device="cpu", seed=1)
    for t in range(210):
        a.step(data[t])
    state = {
        k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in a.state_dict().items()
    }
    b = SimilarityMatching(n_components=2, init_samples=200, device="cpu", seed=7)
    b.load_state_dict(state)
    c = pickle.loads(pickle.dumps(a))
    for row in data[210:]:
        out = a.step(row)
        torch.testing.assert_close(b.step(row), out, rtol=0, atol=0)
        torch.testing.assert_close(c.step(row), out, rtol=0, atol=0)


def test_inference_does_not_learn() -> None:
    sm = SimilarityMatching(n_components=2, device="cpu", seed=0)
    assert torch.equal(sm.infer(torch.ones(5)), torch.zeros(2))
    sm.step(torch.arange(5.0))
    sm.step(torch.arange(5.0) * 2)
    before = {k: v.clone() for k, v in sm._state_tensors().items()}
    sm.infer(torch.ones(5))
    for name, tensor in sm._state_tensors().items():
        assert torch.equal(before[name], tensor), name


def test_clear_errors_for_bad_shapes_and_arguments() -> None:
    sm = SimilarityMatching(n_components=2, device="cpu")
    sm.step(torch.zeros(5))
    with pytest.raises(InputShapeError, match="built for 1 stream"):
        sm.step(torch.zeros(6))
    with pytest.raises(InputShapeError, match="one sample"):
        sm.step(torch.zeros(2, 2, 5))
    with pytest.raises(ConfigError, match="exceeds"):
        SimilarityMatching(n_components=8, device="cpu").step(torch.zeros(5))
    with pytest.raises(ConfigError, match="too large"):
        SimilarityMatching(t0=0.5, device="cpu")
    with pytest.raises(ConfigError, match=r"no GPU|not a torch device"):
        SimilarityMatching(device="cuda:7" if not torch.cuda.is_available() else "nonsense")


def test_specs_parse_and_name_copies() -> None:
    spec = parse_spec("sm:n_components=4,gamma=1.5,center=false")
    assert spec.params == {"n_components": 4, "gamma": 1.5, "center": False}
    learners = build_learners(["sm", "sm:n_components=3"], device="cpu")
    assert list(learners) == ["sm", "sm_2"] and learners["sm_2"].n_components == 3
    with pytest.raises(ConfigError, match="unknown learner"):
        parse_spec("pca")
    with pytest.raises(ConfigError, match="no parameter 'k'"):
        parse_spec("sm:k=3")
    with pytest.raises(ConfigError, match="not a valid int"):
        parse_spec("sm:n_components=four")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu() -> None:
    """The CPU's NumPy step and CUDA's graphed step, from the same start, in float64 (in float32
    their different rounding grows over 500 learning steps to ~1e-3)."""
    x, _ = spiked_covariance(64, 4, 500, 7)
    cpu = SimilarityMatching(n_components=4, device="cpu", dtype="float64", seed=2)
    gpu = SimilarityMatching(n_components=4, device="cuda", dtype="float64", seed=2)
    cpu.initialize(64)
    gpu.initialize(64)
    gpu._W.copy_(cpu._W)
    for row in torch.from_numpy(x):
        out_cpu, out_gpu = cpu.step(row), gpu.step(row.cuda())
        torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-7, atol=1e-9)


def test_a_forked_child_runs_its_own_starts() -> None:
    """A process forked after the worker thread started (as a `ProcessPoolExecutor` forks)
    still gets its burn-in start: the child makes its own worker instead of queueing the job
    on the parent's, which no thread in the child runs."""
    import multiprocessing
    import warnings

    SimilarityMatching(n_components=2, device="cpu").initialize(8)  # the parent's worker
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():  # Python 3.12 warns of fork() with threads: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        with context.Pool(1) as pool:
            outcome = pool.apply_async(_stream_through_the_start)
            assert outcome.get(timeout=30) == 1.0


def _stream_through_the_start() -> float:
    x, _ = spiked_covariance(8, 2, 60, 3)
    sm = SimilarityMatching(n_components=2, init_samples=50, device="cpu", dtype="float64")
    for row in torch.from_numpy(x):
        sm.step(row)
    return float(sm._M[0, 0, 0] > 0)


@pytest.mark.parametrize("name", ["sm", "biocca"])
def test_a_start_that_fails_on_overflowed_moments_says_why(name: str) -> None:
    """One finite but huge sample in the burn-in overflows its float32 moments; the start's
    eigendecomposition then fails, and the step that applies it raises InputShapeError naming
    the cause and the remedy, not LAPACK's bare message."""
    import warnings

    learner = LEARNERS[name](n_components=2, init_samples=50, device="cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    x[10] *= 1e20
    y = torch.from_numpy(rng.standard_normal((200, 4)).astype(np.float32))

    def stream() -> None:
        for t, row in enumerate(torch.from_numpy(x)):
            learner.step(row, y[t] if name == "biocca" else None)

    with warnings.catch_warnings():  # the overflow itself warns in NumPy's steps
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(InputShapeError, match=r"overflowed the burn-in's moments.*float64"):
            stream()
