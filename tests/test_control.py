"""Neural Kalman control against its references: the Kalman filter against a float64 NumPy
recursion and the closed-form joint Gaussian; Bio-OFC's filter against the optimal delayed Kalman
filter and its control against the LQG optimum (exact expected costs, no Monte Carlo noise); the
adaptive decoder against a Kalman decoder fitted offline by least squares, before and after drift.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.control import (
    INITIAL_ESTIMATE_RIDGE,
    AdaptiveKalmanDecoder,
    BioOFC,
    KalmanFilter,
)
from streamlab.sim.plant import (
    CosineTunedPopulation,
    DelayedKalmanFilter,
    LearnerPolicy,
    LQGController,
    double_integrator,
    expected_cost,
    learner_episodes,
    lqg_cost,
    riccati_gains,
    run_episodes,
)
from tests.conftest import ScriptedNoise


# -- the Kalman filter --------------------------------------------------------------------------
def random_model(k: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((k, k)))
    q = rng.standard_normal((k, k))
    r = rng.standard_normal((n, n))
    return {
        "A": 0.95 * rotation,
        "C": rng.standard_normal((n, k)),
        "Q": 0.1 * (q @ q.T / k + np.eye(k)),
        "R": r @ r.T / n + 0.5 * np.eye(n),
    }


def simulate_lds(model: dict[str, np.ndarray], steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, n = model["C"].shape[1], model["C"].shape[0]
    z, xs = rng.standard_normal(k), []
    for _ in range(steps):
        z = model["A"] @ z + rng.multivariate_normal(np.zeros(k), model["Q"])
        xs.append(model["C"] @ z + rng.multivariate_normal(np.zeros(n), model["R"]))
    return np.array(xs)


def numpy_kalman(model: dict[str, np.ndarray], xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook covariance-form filter with the Joseph update, float64."""
    A, C, Q, R = model["A"], model["C"], model["Q"], model["R"]
    k = A.shape[0]
    m, P, means = np.zeros(k), np.eye(k), []
    for x in xs:
        m, P = A @ m, A @ P @ A.T + Q
        gain = P @ C.T @ np.linalg.inv(C @ P @ C.T + R)
        m = m + gain @ (x - C @ m)
        joseph = np.eye(k) - gain @ C
        P = joseph @ P @ joseph.T + gain @ R @ gain.T
        means.append(m)
    return np.array(means), P


def kalman(model: dict[str, np.ndarray], dtype: str = "float64") -> KalmanFilter:
    return KalmanFilter(
        **{name: model[name].tolist() for name in "ACQR"}, device="cpu", dtype=dtype
    )


@pytest.mark.parametrize(("dtype", "atol"), [("float64", 1e-10), ("float32", 2e-4)])
def test_kalman_filter_matches_float64_numpy_reference(dtype: str, atol: float) -> None:
    model = random_model(4, 20, seed=0)
    xs = simulate_lds(model, 300, seed=1)
    means, cov = numpy_kalman(model, xs)
    kf = kalman(model, dtype)
    out = np.array([kf.step(torch.from_numpy(x)).double().numpy() for x in xs])
    scale = np.abs(means).max()
    np.testing.assert_allclose(out, means, rtol=0, atol=atol * scale)
    np.testing.assert_allclose(kf.covariance[0].double().numpy(), cov, rtol=0, atol=atol)


def test_kalman_filter_matches_joint_gaussian_closed_form() -> None:
    """E[z_T | x_1..x_T] and its covariance by conditioning the joint Gaussian of all states and
    observations (no recursion at all), against the filter after T steps."""
    model = random_model(3, 5, seed=2)
    A, C, Q, R = model["A"], model["C"], model["Q"], model["R"]
    k, T = 3, 12
    xs = simulate_lds(model, T, seed=3)
    # z_t = sum_{s<=t} A^{t-s} w_s with w_0 ~ N(0, A P0 A^T + Q) for the prior z_0 ~ N(0, I)
    powers = [np.linalg.matrix_power(A, p) for p in range(T)]
    noise_cov = [A @ A.T + Q] + [Q] * (T - 1)
    cov_z = np.zeros((T * k, T * k))
    for t in range(T):
        for u in range(T):
            cov_z[t * k : (t + 1) * k, u * k : (u + 1) * k] = sum(
                powers[t - s] @ noise_cov[s] @ powers[u - s].T for s in range(min(t, u) + 1)
            )
    big_c = np.kron(np.eye(T), C)
    cov_x = big_c @ cov_z @ big_c.T + np.kron(np.eye(T), R)
    cross = cov_z[-k:] @ big_c.T  # Cov(z_T, x_1..x_T)
    mean = cross @ np.linalg.solve(cov_x, xs.reshape(-1))
    cov = cov_z[-k:, -k:] - cross @ np.linalg.solve(cov_x, cross.T)
    kf = kalman(model)
    for x in xs:
        out = kf.step(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(kf.covariance[0].numpy(), cov, rtol=0, atol=1e-10)


def test_kalman_batch_equals_single_runs() -> None:
    model = random_model(2, 6, seed=4)
    streams = [simulate_lds(model, 50, seed=s) for s in range(3)]
    batched, singles = kalman(model), [kalman(model) for _ in streams]
    x = torch.from_numpy(np.stack(streams, axis=1))
    for t in range(len(x)):
        out = batched.step(x[t])
        for i, single in enumerate(singles):
            torch.testing.assert_close(out[i], single.step(x[t, i]), rtol=1e-12, atol=1e-12)


# -- the plant and its optimum ------------------------------------------------------------------
QUOTED_LQG = {0: 4.42, 1: 5.53, 2: 6.83, 3: 8.23}  # papers/README.md, from the authors' code


@pytest.mark.parametrize("delay", [0, 1, 3])
def test_lqg_exact_cost_matches_simulation_and_is_optimal(delay: int) -> None:
    exact = lqg_cost(double_integrator(delay))
    plant = double_integrator(delay, batch=40_000, seed=delay)
    costs = run_episodes(plant, LQGController(plant))
    assert abs(costs.mean() - exact) < 4 * costs.std() / np.sqrt(len(costs))
    # the reading of the noise covariances that reproduces the quoted optimum (within 2.5%;
    # the other reading gives 4.3, 7.4, 12.4, 19.3)
    assert abs(exact / QUOTED_LQG[delay] - 1) < 0.025

    class Detuned(LQGController):
        def __init__(self, plant, factor: float) -> None:
            super().__init__(plant)
            self.riccati = [gain * factor for gain in riccati_gains(plant)]

    for factor in (0.9, 1.1):
        assert expected_cost(double_integrator(delay), lambda p, f=factor: Detuned(p, f)) > exact


# -- Bio-OFC ------------------------------------------------------------------------------------
def bio_ofc(delay: int, seed: int, **params) -> BioOFC:
    return BioOFC(delay=delay, device="cpu", dtype="float64", seed=seed, **params)


def exact_policy_cost(learner: BioOFC, run: int) -> float:
    """Expected episode cost of run `run`'s learned policy without exploration, exactly."""
    return expected_cost(
        double_integrator(learner.delay), lambda p: LearnerPolicy(learner.frozen_copy(p.batch, run))
    )


def filter_error_ratio(learner: BioOFC, run: int, episodes: int = 4000) -> float:
    """E||C x_t - Ĉ x̂_t||^2 of the learned filter over E||C x_t - C x*_t||^2 of the optimal
    delayed Kalman filter on the same episodes (t = 1..10, exploring policy u = ξ), where x̂_t
    and x*_t use observations up to t - delay. Measured in observation space because Bio-OFC
    learns its state only up to an invertible transform."""
    policy = learner.frozen_copy(episodes, run, exploration=learner.exploration)
    plant = double_integrator(learner.delay, batch=episodes, seed=999)
    optimal = DelayedKalmanFilter(plant)
    observation = plant.reset()
    optimal.reset()
    u = policy.step(torch.from_numpy(observation)).numpy()
    learned_error = optimal_error = 0.0
    for _ in range(plant.horizon - 1):
        observation, cost = plant.step(u)
        best = optimal.update(observation, u)
        u = policy.step(torch.from_numpy(observation), torch.from_numpy(cost)).numpy()
        truth = plant.x @ plant.C.T
        predicted = torch.bmm(policy.model["C"], policy.estimate.unsqueeze(2)).squeeze(2)
        learned_error += ((predicted.numpy() - truth) ** 2).sum(1).mean()
        optimal_error += ((best @ plant.C.T - truth) ** 2).sum(1).mean()
    return learned_error / optimal_error


def test_bio_ofc_filter_converges_to_optimal_kalman_filter() -> None:
    """System identification with local rules (no policy learning, exploring controls u = ξ),
    delay 1, 5 runs: the learned filter's error ends within 15% of the Kalman filter that knows
    the plant (measured: 1.08 mean after 3,000 episodes, 1.22 after 1,000)."""
    learner = bio_ofc(delay=1, seed=0, policy_rate=0.0)
    plant = double_integrator(1, batch=5, seed=1)
    learner_episodes(plant, learner, 300)
    early = [filter_error_ratio(learner, run) for run in range(5)]
    learner_episodes(plant, learner, 2700)
    late = [filter_error_ratio(learner, run) for run in range(5)]
    assert np.mean(late) < 1.15 and max(late) < 1.2
    assert np.mean(early) > np.mean(late)


@pytest.mark.parametrize(("delay", "bound"), [(1, 1.10), (3, 1.20)])
def test_bio_ofc_control_approaches_lqg_optimum(delay: int, bound: float) -> None:
    """The reproduction: 10,000 training episodes from K̂ = 0 (random exploring actions), 5
    runs in lockstep, then the exact expected cost of each learned policy without exploration
    against the LQG optimum. Authors' code: +8% (delay 1), +18% (delay 3). Measured here (seed
    0): +19.5% / +8.5% after 1,000 / 10,000 episodes at delay 1, +52% / +16.5% at delay 3."""
    learner = bio_ofc(delay, seed=0)
    plant = double_integrator(delay, batch=5, seed=1)
    optimum = lqg_cost(double_integrator(delay))
    learner_episodes(plant, learner, 1000)
    early = np.mean([exact_policy_cost(learner, run) for run in range(5)]) / optimum
    learner_episodes(plant, learner, 9000)
    late = [exact_policy_cost(learner, run) / optimum for run in range(5)]
    assert np.mean(late) < bound
    assert max(late) < bound + 0.05
    assert np.mean(late) < early


def test_bio_ofc_batch_equals_single_runs() -> None:
    """B streams in lockstep equal B single runs given the same initial weights and the same
    exploration noise (the only randomness after initialisation), across episode boundaries
    and samples without a cost."""
    batch, steps = 3, 60
    rng = np.random.default_rng(8)
    observations = torch.from_numpy(rng.standard_normal((steps, batch, 2)))
    costs = torch.from_numpy(rng.uniform(0, 3, (steps, batch, 1)))
    noise = torch.from_numpy(rng.standard_normal((steps, batch, 1)))
    batched = bio_ofc(delay=2, seed=0)
    batched.initialize(2, batch)
    batched._randn = ScriptedNoise(noise)
    singles = [bio_ofc(delay=2, seed=0) for _ in range(batch)]
    for i, single in enumerate(singles):
        single.initialize(2)
        for name, tensor in single._state_tensors().items():
            tensor.copy_(batched._state_tensors()[name][i : i + 1])
        single._randn = ScriptedNoise(noise[:, i])
    for t in range(steps):
        if t == 30:  # an episode boundary marked by hand, mid-episode
            for learner in [batched, *singles]:
                learner.reset_episode()
        with_cost = t % 7 != 3
        out = batched.step(observations[t], costs[t] if with_cost else None)
        for i, single in enumerate(singles):
            expected = single.step(observations[t, i], costs[t, i] if with_cost else None)
            torch.testing.assert_close(out[i], expected, rtol=1e-12, atol=1e-12)


def test_bio_ofc_episodes_start_from_least_squares_estimate() -> None:
    """Each episode starts from the least-squares estimate of C x = y_0, regularised by
    INITIAL_ESTIMATE_RIDGE times the mean diagonal of C^T C (its closed form, in float64)."""
    learner = bio_ofc(delay=1, seed=3, episode_length=4)
    y = torch.tensor([0.3, -0.2], dtype=torch.float64)

    def expected(C: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        gram = C.T @ C
        ridge = INITIAL_ESTIMATE_RIDGE * gram.diagonal().mean()
        return torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=C.dtype), C.T @ obs)

    for _ in range(4):
        learner.step(y, torch.tensor([1.0], dtype=torch.float64))
    assert learner.episode_step == 0  # the next sample starts an episode by itself
    start = torch.tensor([1.0, 2.0], dtype=torch.float64)
    learner.step(start)
    C = learner.model["C"][0]
    torch.testing.assert_close(learner.estimate[0], expected(C, start))
    torch.testing.assert_close(C @ learner.estimate[0], start, rtol=1e-2, atol=1e-2)
    learner.step(y)
    learner.reset_episode()
    assert learner.episode_step == 0
    learner.step(y)
    torch.testing.assert_close(learner.estimate[0], expected(learner.model["C"][0], y))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_bio_ofc_episode_start_stays_bounded_when_its_learned_c_is_near_singular(backend) -> None:
    """A learned C with condition number 1e8: the plain least-squares start estimate is of size
    1e8 (the runaway that left the controller NaN for good); the regularised one stays of the
    observation's size, on both CPU paths."""
    learner = bio_ofc(delay=1, seed=3, episode_length=4, backend=backend)
    y = torch.tensor([0.3, -0.2], dtype=torch.float64)
    learner.step(y)
    learner.model["C"][0].copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-8]]))
    learner.reset_episode()
    learner.step(torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.isfinite(learner.estimate).all()
    assert learner.estimate.abs().max() < 10.0


# -- the adaptive decoder -----------------------------------------------------------------------
TRAIN, TEST, AFTER = 4000, 2000, 4000


def decode(kf: KalmanFilter, counts: np.ndarray) -> np.ndarray:
    return np.array([kf.step(row).numpy() for row in torch.from_numpy(counts)])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a - b) ** 2).sum(-1).mean())


@pytest.fixture(scope="module")
def decoding_run() -> dict[str, np.ndarray]:
    """50 cosine-tuned Poisson neurons at 20 Hz, 2-D velocity; drift after TRAIN + TEST bins
    (30% of units silent, tuning turned by ±60°). The adaptive decoder sees the labels all along
    and decodes each bin before learning from it."""
    population = CosineTunedPopulation(n_neurons=50, seed=0)
    before, v_before = population.sample(TRAIN + TEST)
    population.drift(fraction_lost=0.3, rotation=np.pi / 3)
    after, v_after = population.sample(AFTER)
    counts = np.concatenate([before, after])[:, 0]
    velocity = np.concatenate([v_before, v_after])[:, 0]
    decoder = AdaptiveKalmanDecoder(n_components=2, forgetting=0.999, device="cpu")
    x, y = (
        torch.from_numpy(counts.astype(np.float32)),
        torch.from_numpy(velocity.astype(np.float32)),
    )
    adaptive = np.array([decoder.step(x[t], y[t]).numpy() for t in range(len(x))])
    fixed = KalmanFilter.fit(counts[:TRAIN], velocity[:TRAIN], device="cpu", dtype="float64")
    drift = TRAIN + TEST
    refit = KalmanFilter.fit(
        counts[drift:], velocity[drift:], device="cpu", dtype="float64"
    )  # an oracle fitted after the drift
    return {
        "velocity": velocity,
        "adaptive": adaptive,
        "fixed": decode(fixed, counts),
        "refit": np.concatenate([np.zeros((drift, 2)), decode(refit, counts[drift:])]),
    }


def test_adaptive_decoder_converges_to_offline_least_squares_decoder(decoding_run) -> None:
    """On held-out bins before the drift the adaptive decoder's error is within 5% of the
    Kalman decoder fitted offline on the first TRAIN bins (measured 0.186 vs 0.181, velocity
    variance 1.9; these counts are drawn from that decoder's own model, cosine tuning and AR(1)
    velocity), after a first 25 bins more than three times worse (1.90)."""
    run = decoding_run
    test = slice(TRAIN, TRAIN + TEST)
    offline = mse(run["fixed"][test], run["velocity"][test])
    adaptive = mse(run["adaptive"][test], run["velocity"][test])
    assert adaptive < 1.05 * offline
    assert mse(run["adaptive"][:25], run["velocity"][:25]) > 2.5 * offline


def test_adaptive_decoder_recovers_from_drift_and_fixed_decoder_does_not(decoding_run) -> None:
    """Within 2,000 labelled bins (100 s) after the drift the adaptive decoder's error is within
    15% of a decoder refitted on the post-drift data, while the pre-drift offline decoder stays
    more than three times worse (measured: 0.255 vs 0.248 vs 1.41). In the first 500 bins
    after the drift it is 0.36 (the drift hurt; the generative decoder it replaced was at more
    than twice the target there, this one recovers faster)."""
    run = decoding_run
    drift = TRAIN + TEST
    late = slice(drift + 2000, drift + AFTER)
    target = mse(run["refit"][late], run["velocity"][late])
    assert mse(run["adaptive"][late], run["velocity"][late]) < 1.15 * target
    assert mse(run["fixed"][late], run["velocity"][late]) > 3 * target
    first = slice(drift, drift + 500)
    assert mse(run["adaptive"][first], run["velocity"][first]) > 1.3 * target  # the drift hurt


def test_decoder_batch_with_missing_labels_equals_single_runs() -> None:
    population = CosineTunedPopulation(n_neurons=12, seed=1, batch=3)
    counts, velocity = population.sample(300)
    labels = velocity.copy()
    labels[100:150, 1] = np.nan  # stream 1 loses its labels for 50 bins
    batched = AdaptiveKalmanDecoder(device="cpu", dtype="float64")
    singles = [AdaptiveKalmanDecoder(device="cpu", dtype="float64") for _ in range(3)]
    for t in range(len(counts)):
        out = batched.step(torch.from_numpy(counts[t]), torch.from_numpy(labels[t]))
        for i, single in enumerate(singles):
            y = None if np.isnan(labels[t, i]).any() else torch.from_numpy(labels[t, i])
            torch.testing.assert_close(
                out[i], single.step(torch.from_numpy(counts[t, i]), y), rtol=1e-10, atol=1e-10
            )


def test_decoder_with_known_dynamics_and_without_labels_only_decodes() -> None:
    decoder = AdaptiveKalmanDecoder(
        A=((0.9, 0.0), (0.0, 0.9)), W=((0.2, 0.0), (0.0, 0.2)), device="cpu", dtype="float64"
    )
    population = CosineTunedPopulation(n_neurons=8, seed=2)
    counts, velocity = population.sample(200)
    for t in range(100):
        decoder.step(torch.from_numpy(counts[t, 0]), torch.from_numpy(velocity[t, 0]))
    before = {k: v.clone() for k, v in decoder._state_tensors().items()}
    decoder.step(torch.from_numpy(counts[100, 0]))
    for name in ("W", "P", "gain", "dynamics", "dyn_noise", "y_mean", "y_count"):
        assert torch.equal(before[name], decoder._state_tensors()[name]), name
    np.testing.assert_array_equal(decoder._dynamics[0].numpy(), [[0.9, 0.0], [0.0, 0.9]])
    np.testing.assert_array_equal(decoder._dyn_noise[0].numpy(), [[0.2, 0.0], [0.0, 0.2]])


# -- shared contracts ---------------------------------------------------------------------------
def control_learners() -> list[tuple[object, np.ndarray, np.ndarray | None]]:
    """(learner, inputs (T, n), signals (T, q) or None) for each learner."""
    rng = np.random.default_rng(5)
    model = random_model(2, 4, seed=6)
    return [
        (kalman(model, "float32"), simulate_lds(model, 60, seed=7), None),
        (
            AdaptiveKalmanDecoder(device="cpu", seed=1),
            rng.poisson(3.0, (60, 4)),
            rng.standard_normal((60, 2)),
        ),
        (BioOFC(device="cpu", seed=2), rng.standard_normal((60, 2)), rng.uniform(0, 2, (60, 1))),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["kalman", "decoder", "bio_ofc"])
def test_state_dict_round_trip_gives_same_next_outputs(index: int) -> None:
    learner, xs, ys = control_learners()[index]
    fresh = type(learner)(**learner._get_params())
    x = torch.from_numpy(xs.astype(np.float32))
    y = None if ys is None else torch.from_numpy(ys.astype(np.float32))
    for t in range(30):
        learner.step(x[t], None if y is None else y[t])
    state = {
        k: (v.numpy() if isinstance(v, torch.Tensor) else v)
        for k, v in learner.state_dict().items()
    }
    fresh.load_state_dict(state)
    for t in range(30, 60):
        signal = None if y is None else y[t]
        torch.testing.assert_close(
            learner.step(x[t], signal), fresh.step(x[t], signal), rtol=0, atol=0
        )


@pytest.mark.parametrize("index", [0, 1, 2], ids=["kalman", "decoder", "bio_ofc"])
def test_inference_does_not_learn(index: int) -> None:
    learner, xs, ys = control_learners()[index]
    x = torch.from_numpy(xs.astype(np.float32))
    for t in range(5):
        learner.step(x[t], None if ys is None else torch.from_numpy(ys[t].astype(np.float32)))
    before = {k: v.clone() for k, v in learner._state_tensors().items()}
    first = learner.infer(x[5])
    torch.testing.assert_close(learner.infer(x[5]), first, rtol=0, atol=0)
    for name, tensor in learner._state_tensors().items():
        assert torch.equal(before[name], tensor), name


def test_clear_errors_for_bad_arguments_and_shapes() -> None:
    with pytest.raises(ConfigError, match="needs the model"):
        KalmanFilter()
    with pytest.raises(ConfigError, match="k x k"):
        KalmanFilter(A=((1.0, 0.0),), C=((1.0,),))
    with pytest.raises(ConfigError, match="positive semi-definite"):
        KalmanFilter(A=((1.0,),), C=((1.0,),), R=((-1.0,),))
    kf = KalmanFilter(A=((1.0,),), C=((1.0,), (2.0,)), device="cpu")
    with pytest.raises(ConfigError, match="2 rows but the stream has 3"):
        kf.step(torch.zeros(3))
    with pytest.raises(ConfigError, match="delay"):
        BioOFC(delay=0)
    with pytest.raises(ConfigError, match="forgetting"):
        AdaptiveKalmanDecoder(forgetting=1.5)
    with pytest.raises(ConfigError, match="both A and W"):
        AdaptiveKalmanDecoder(A=((1.0, 0.0), (0.0, 1.0)))
    decoder = AdaptiveKalmanDecoder(device="cpu")
    with pytest.raises(InputShapeError, match="decodes 2 components"):
        decoder.step(torch.ones(5), torch.ones(3))
    with pytest.raises(InputShapeError, match="stream"):
        decoder.step(torch.ones(2, 5), torch.ones(3, 2))
    with pytest.raises(ConfigError, match="no learned state"):
        BioOFC().frozen_copy(4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu_within_float32_tolerance() -> None:
    for index in range(3):
        learner, xs, ys = control_learners()[index]
        params = learner._get_params()
        if isinstance(learner, BioOFC):  # the devices' generators draw different noise
            params["exploration"] = 0.0
        cpu = type(learner)(**{**params, "device": "cpu"})
        gpu = type(learner)(**{**params, "device": "cuda"})
        x = torch.from_numpy(xs.astype(np.float32))
        y = None if ys is None else torch.from_numpy(ys.astype(np.float32))
        cpu.step(x[0], None if y is None else y[0])
        gpu.step(x[0].cuda(), None if y is None else y[0].cuda())
        for name, tensor in gpu._state_tensors().items():  # same initial weights
            tensor.copy_(cpu._state_tensors()[name])
        for t in range(1, 60):
            signal = None if y is None else y[t]
            out_cpu = cpu.step(x[t], signal)
            out_gpu = gpu.step(x[t].cuda(), None if signal is None else signal.cuda())
            torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-3, atol=1e-4)
