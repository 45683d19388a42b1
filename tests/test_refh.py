"""The recurrent EFH against its references on the 1-D filtering experiment of Makin, Dichter and
Sabes (2016): a damped spring observed through 15 Poisson neurons, filtered by the rEFH, by the
static harmonium (the same model without recurrent inputs) and by a Kalman filter that knows the
true dynamics; then the learner's contracts (batch equals single runs, state round trip, errors)
and the hippocampal linear track.

The stimulus space is circular, as in the reference (positions wrap within +-π/3), so positions
are decoded as the angle of a linear readout of (cos, sin) and errors are wrapped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamlab.adapters.linear_track import load_linear_track, running_position

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners import LEARNERS
from streamlab.learners.refh import RecurrentEFH
from streamlab.sim.spring import (
    TRIAL,
    centre_of_mass,
    kalman_on_centre_of_mass,
    readout,
    simulate_spring,
    wrap,
)
from tests.conftest import SHARED_DATA, ScriptedNoise


def run_learner(learner: RecurrentEFH, counts: np.ndarray, learn: bool) -> np.ndarray:
    """Hidden means (T, B, k), learning (`step`) or frozen (`track`), restarting the hidden state
    at each trajectory's start as the filters are."""
    x = torch.from_numpy(counts)
    out = np.empty((*counts.shape[:2], learner.n_components), dtype=np.float32)
    for t in range(len(x)):
        if t % TRIAL == 0:
            learner.reset_state()
        out[t] = (learner.step(x[t]) if learn else learner.track(x[t])).numpy()
    return out


def spring_learner(recurrent: bool, seed: int = 0) -> RecurrentEFH:
    """The reference's set-up: 240 hidden units, one set of weights for the 40 trajectories at
    the rates that suit their averaged statistics (1e-3 sensory, 1e-2 recurrent: the defaults
    before issue 20, which set lower ones for a single stream), and its schedule, every rate
    divided by 1.1 per epoch (an epoch: 1,000 steps of the 40)."""
    return RecurrentEFH(
        n_components=240,
        recurrent=recurrent,
        share_weights=True,
        learning_rate=1e-3,
        recurrent_learning_rate=1e-2,
        anneal=1.1,
        anneal_every=TRIAL,
        device="cpu",
        seed=seed,
    )


def spring_experiment(
    train_seed: int, test_seed: int, learner_seed: int, epochs: int = 10
) -> dict[str, float]:
    """The filtering experiment with the given seeds: 40 trajectories in lockstep, `epochs` x 1,000
    steps of online training for the rEFH (4 x 1,000 for the static harmonium, which matches the
    centre of mass by then), then each frozen model tracks the last 2,000 training steps (readout
    fit) and 1,000 held-out steps of 40 new trajectories (test). Every model is scored on every
    held-out step. Returns the position MSEs (rad^2) of the Kalman filter, the rEFH, the static
    harmonium and the centre of mass, and the velocity R^2 of the two harmoniums' readouts."""
    batch = 40
    train_counts, train_states = simulate_spring(epochs, batch, seed=train_seed)
    test_counts, test_states = simulate_spring(1, batch, seed=test_seed)
    # the observation noise the Kalman filter is given: the centre of mass's error variance,
    # measured on the training stream
    variance = float(np.var(wrap(centre_of_mass(train_counts) - train_states[..., 0])))
    truth = test_states[..., 0].ravel()

    def mse(position: np.ndarray) -> float:
        return float(np.mean(wrap(position.ravel() - truth) ** 2))

    results = {
        "kalman": mse(kalman_on_centre_of_mass(test_counts, variance)),
        "single_frame": mse(centre_of_mass(test_counts)),
    }
    for name, recurrent, train_trials in (("refh", True, epochs), ("static", False, 4)):
        learner = spring_learner(recurrent, learner_seed)
        run_learner(learner, train_counts[: train_trials * TRIAL], learn=True)
        fit = slice(len(train_counts) - 2 * TRIAL, None)
        fit_hidden = run_learner(learner, train_counts[fit], learn=False)
        hidden = run_learner(learner, test_counts, learn=False)
        position, velocity = readout(fit_hidden, train_states[fit], hidden)
        speed = test_states[..., 1].ravel()
        results[name] = mse(position)
        results[f"{name}_r2"] = float(1 - np.mean((velocity - speed) ** 2) / np.var(speed))
    return results


def test_refh_filters_the_spring_far_better_than_one_frame() -> None:
    """The filtering experiment (see `spring_experiment`): 400k samples of online CD-1 with the
    reference's annealing (the reference trains on 2M).

    Measured here (MSE of position, rad^2, held-out; seeds train 1, test 2, learner 0): Kalman
    filter 1.43e-4, rEFH 2.40e-4 (1.67 x KF), static harmonium 1.10e-3 (rEFH 0.22 x static), centre
    of mass 1.10e-3; velocity R^2 from the rEFH's hidden means 0.97 (static: 0.00). On three
    validation seed sets, used to choose the settings: 1.61, 1.79 and 1.95 x KF, 0.22-0.27 x static,
    R^2 0.97-0.98. The gain over the first version (2.3 x KF) comes from the annealing (2.07 x KF
    with the previous initial velocity N(0, 0.3^2)) and the reference's start at rest, which removes
    the first steps' velocity search (there the rEFH was 4-7 x KF). The issue's target rEFH <= 1.3 x
    KF is NOT reached: the learned filter leans on the current frame too much (its error's
    sensitivity to the current observation noise is 0.22, the Kalman filter's 0.13, and it decays
    faster), and neither 20 epochs (1.75-1.81 x), 480 hidden units, CD-3, persistent CD, the
    reference's sampled CD statistics, other momentum, recurrent-rate ratios or weight decay, nor
    decoding the reconstructed population's centre of mass (2.5-3 x) closed it. Nor does the
    architecture seem able to: the same 240 sigmoid units trained *with* the position by
    backpropagation through time (`benchmarks/refh_bptt_bound.py`, 100 epochs of this stream,
    scored the same way) reach only 1.57-1.59 x KF (two seeds; 1.60 x with 480 units), so CD,
    which never sees the position, comes within 6 % of a supervised network of its size. The
    bound below keeps a margin over the worst seed."""
    r = spring_experiment(train_seed=1, test_seed=2, learner_seed=0)
    kalman, refh, static = r["kalman"], r["refh"], r["static"]
    print(
        f"MSE: Kalman {kalman:.3g}, rEFH {refh:.3g} ({refh / kalman:.2f} x KF), static "
        f"{static:.3g} (rEFH {refh / static:.2f} x static), centre of mass "
        f"{r['single_frame']:.3g}; velocity R^2 rEFH {r['refh_r2']:.3f}, static "
        f"{r['static_r2']:.3f}"
    )
    assert kalman < 0.2 * r["single_frame"]  # the dynamics carry most of the information
    assert refh <= 2.2 * kalman  # the issue asks 1.3: not reached (see above)
    assert refh <= 0.4 * static  # the issue asks 0.8
    assert static <= 1.15 * r["single_frame"]  # the static model is a one-frame decoder
    assert r["refh_r2"] > 0.9  # velocity, never observed, from the recurrent hidden means
    assert r["static_r2"] < 0.1


# -- contracts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("visible", ["poisson", "bernoulli", "gaussian"])
def test_batch_equals_single_runs(visible: str) -> None:
    """B streams with their own weights equal B single runs given the same initial weights and
    the same uniform draws for the Gibbs samples (CD-2: two draws per step)."""
    batch, steps, hidden, n = 3, 40, 6, 5
    rng = np.random.default_rng(3)
    x = (
        rng.poisson(2.0, (steps, batch, n))
        if visible == "poisson"
        else rng.random((steps, batch, n))
    )
    if visible == "bernoulli":
        x = (x > 0.5).astype(float)
    x = torch.from_numpy(np.asarray(x, dtype=np.float64))
    draws = torch.from_numpy(rng.random((2 * steps, batch, hidden)))
    params = {
        "n_components": hidden,
        "visible": visible,
        "k": 2,
        "learning_rate": 1e-2,
        "recurrent_learning_rate": 5e-2,
        "init_scale": 0.1,
        "n_targets": 1,
        "anneal": 1.05,
        "anneal_every": 10,
        "device": "cpu",
        "dtype": "float64",
        "seed": 0,
    }
    y = torch.from_numpy(rng.standard_normal((steps, batch, 1)))
    batched = RecurrentEFH(**params)
    batched.initialize(n, batch)
    batched._rand = ScriptedNoise(draws)
    singles = [RecurrentEFH(**params) for _ in range(batch)]
    for i, single in enumerate(singles):
        single.initialize(n)
        for name, tensor in single._state_tensors().items():
            tensor.copy_(batched._state_tensors()[name][i : i + 1])
        single._rand = ScriptedNoise(draws[:, i])
    for t in range(steps):
        labelled = t % 3 != 1
        out = batched.step(x[t], y[t] if labelled else None)
        readout = batched.extra_outputs()["readout"]
        for i, single in enumerate(singles):
            expected = single.step(x[t, i], y[t, i] if labelled else None)
            torch.testing.assert_close(out[i], expected, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(
                readout[i], single.extra_outputs()["readout"][0], rtol=1e-10, atol=1e-10
            )


def test_gaussian_hidden_units_take_one_cd_step_as_the_closed_form() -> None:
    """Gaussian hidden (and so Gaussian recurrent visible) units with Gaussian observations: the
    hidden means are linear in the drive, a Gibbs sample is mean + N(0, 1), and one CD-1 step
    from known weights matches the update written out in float64 NumPy."""
    n, k = 3, 4
    rng = np.random.default_rng(9)
    learner = RecurrentEFH(
        n_components=k,
        visible="gaussian",
        hidden="gaussian",
        learning_rate=0.01,
        recurrent_learning_rate=0.05,
        weight_decay=0.0,
        init_scale=0.3,
        device="cpu",
        dtype="float64",
        seed=0,
    )
    learner.initialize(n)
    learner._previous.copy_(torch.from_numpy(rng.standard_normal((1, k))))
    W, b_h, b_v = (learner.weights[name][0].numpy().copy() for name in ("W", "b_h", "b_v"))
    prev, x = learner._previous[0].numpy().copy(), rng.standard_normal(n)
    noise = rng.standard_normal(k)
    learner._randn = ScriptedNoise(torch.from_numpy(noise[None, None, :]))
    out = learner.step(torch.from_numpy(x)).numpy()
    v = np.r_[prev, x]
    h = W.T @ v + b_h
    v_neg = W @ (h + noise) + b_v  # every visible unit Gaussian: means linear too
    h_neg = W.T @ v_neg + b_h
    rates = np.r_[np.full(k, 0.05), np.full(n, 0.01)][:, None]
    np.testing.assert_allclose(out, h, rtol=1e-12)
    np.testing.assert_allclose(
        learner.weights["W"][0].numpy(),
        W + rates * (np.outer(v, h) - np.outer(v_neg, h_neg)),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_allclose(learner.weights["b_h"][0].numpy(), b_h + 0.01 * (h - h_neg))
    np.testing.assert_allclose(learner.weights["b_v"][0].numpy(), b_v + rates[:, 0] * (v - v_neg))


def test_state_dict_round_trip_gives_same_next_outputs() -> None:
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.poisson(1.5, (60, 4, 7)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((60, 4, 2)).astype(np.float32))
    learner = RecurrentEFH(n_components=10, n_targets=2, share_weights=True, device="cpu", seed=5)
    fresh = RecurrentEFH(**learner._get_params())
    for t in range(30):
        learner.step(x[t], y[t])
    state = {
        k: (v.numpy() if isinstance(v, torch.Tensor) else v)
        for k, v in learner.state_dict().items()
    }
    fresh.load_state_dict(state)
    for t in range(30, 60):
        torch.testing.assert_close(learner.step(x[t], y[t]), fresh.step(x[t], y[t]), rtol=0, atol=0)
        torch.testing.assert_close(
            learner.extra_outputs()["readout"], fresh.extra_outputs()["readout"], rtol=0, atol=0
        )


def test_inference_and_tracking_do_not_learn() -> None:
    learner = RecurrentEFH(n_components=8, device="cpu", seed=1)
    x = torch.from_numpy(np.random.default_rng(6).poisson(2.0, (10, 5)).astype(np.float32))
    for t in range(5):
        learner.step(x[t])
    before = {k: v.clone() for k, v in learner.weights.items()}
    first = learner.infer(x[5])
    torch.testing.assert_close(learner.infer(x[5]), first, rtol=0, atol=0)
    torch.testing.assert_close(learner.track(x[5]), first, rtol=0, atol=0)
    torch.testing.assert_close(learner._previous[0], first, rtol=0, atol=0)  # carried forward
    for name, tensor in learner.weights.items():
        assert torch.equal(before[name], tensor), name


def test_exponential_link_cannot_overflow() -> None:
    """Huge counts and weights driven far out: the Poisson reconstruction is clipped at
    exp(max_log_rate), so nothing becomes inf or NaN."""
    learner = RecurrentEFH(n_components=4, learning_rate=0.5, device="cpu", seed=2)
    x = torch.full((3,), 1e4)
    for _ in range(5):
        out = learner.step(x)
        assert torch.isfinite(out).all()
    assert all(torch.isfinite(t).all() for t in learner.weights.values())


def test_registered_and_parsed() -> None:
    assert LEARNERS["refh"] is RecurrentEFH


def test_clear_errors_for_bad_arguments_and_shapes() -> None:
    for bad, match in [
        ({"visible": "binomial"}, "visible must be one of"),
        ({"hidden": "poisson"}, "hidden must be one of"),
        ({"k": 0}, "k must be a positive integer"),
        ({"n_components": 2.5}, "n_components must be a positive integer"),
        ({"momentum": 1.0}, "momentum"),
        ({"anneal": 0.5}, "anneal"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"n_targets": -1}, "n_targets"),
        ({"readout_forgetting": 0.0}, "readout_forgetting"),
    ]:
        with pytest.raises(ConfigError, match=match):
            RecurrentEFH(**bad)
    learner = RecurrentEFH(n_components=4, device="cpu")
    learner.step(torch.ones(2, 5))
    with pytest.raises(InputShapeError, match="2 stream"):
        learner.step(torch.ones(3, 5))
    with pytest.raises(InputShapeError, match="n_targets=0"):
        learner.step(torch.ones(2, 5), torch.ones(2, 1))
    with pytest.raises(InputShapeError, match="one sample"):
        learner.step(torch.ones(2, 5, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu_within_float32_tolerance() -> None:
    """Same weights and the same uniform draws on both devices (their generators differ)."""
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.poisson(2.0, (50, 4, 6)).astype(np.float32))
    draws = torch.from_numpy(rng.random((50, 4, 16)).astype(np.float32))
    params = {"n_components": 16, "n_targets": 1, "seed": 0}
    cpu, gpu = RecurrentEFH(**params, device="cpu"), RecurrentEFH(**params, device="cuda")
    cpu.initialize(6, 4)
    gpu.initialize(6, 4)
    for name, tensor in gpu._state_tensors().items():
        tensor.copy_(cpu._state_tensors()[name])
    cpu._rand, gpu._rand = ScriptedNoise(draws), ScriptedNoise(draws.cuda())
    y = torch.from_numpy(rng.standard_normal((50, 4, 1)).astype(np.float32))
    for t in range(50):
        out_cpu = cpu.step(x[t], y[t])
        out_gpu = gpu.step(x[t].cuda(), y[t].cuda())
        torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-3, atol=1e-4)


# -- real data: hippocampal place cells on a linear track -----------------------------------------
LINEAR_TRACK = SHARED_DATA / "hc-linear-track"


@pytest.mark.skipif(not LINEAR_TRACK.is_dir(), reason=f"{LINEAR_TRACK} is absent")
def test_refh_hidden_means_carry_position_on_the_linear_track() -> None:
    """15 minutes of running, 31 units in 250 ms bins; position along the track (first principal
    axis of the tracked x, y), standardised. The rEFH (100 hidden units) learns without labels
    from the first half (5 passes), then the frozen model tracks the whole session; a linear
    readout fitted on the first half is scored on the second. The score depends on the seed and
    on float rounding (sampled CD over 9,000 steps: one seed gave 0.49 with two threads and 0.75
    with one; 0.39 was measured on another machine), so the median of five seeds is asserted.
    Measured here (standardised position RMSE): rEFH 0.61, 0.75, 0.48, 0.53, 0.63 (median
    0.61), static harmonium 0.82, raw counts of the same bin 0.86, the first half's mean 0.875;
    for comparison the supervised adaptive Kalman decoder of test_control gets 0.60."""
    counts, position = running_position(load_linear_track(LINEAR_TRACK))
    position = position[:, 0]
    half = len(position) // 2

    def rmse(features: np.ndarray) -> float:
        design = np.c_[features, np.ones(len(features))]
        weights = np.linalg.lstsq(design[:half], position[:half], rcond=None)[0]
        return float(np.sqrt(np.mean((design[half:] @ weights - position[half:]) ** 2)))

    x = torch.from_numpy(counts.astype(np.float32))

    def score(recurrent: bool, seed: int) -> float:
        learner = RecurrentEFH(
            n_components=100,
            recurrent=recurrent,
            learning_rate=3e-3,
            recurrent_learning_rate=3e-2,
            anneal=1.0,  # constant rates, as measured (the default anneals since issue 20)
            device="cpu",
            seed=seed,
        )
        for _ in range(5):
            learner.reset_state()
            for t in range(half):
                learner.step(x[t])
        learner.reset_state()
        return rmse(np.array([learner.track(x[t]).numpy() for t in range(len(x))]))

    refh = [score(True, seed) for seed in range(5)]
    static = score(False, 0)
    raw = rmse(counts.astype(np.float64))
    chance = float(np.sqrt(np.mean((position[half:] - position[:half].mean()) ** 2)))
    median = float(np.median(refh))
    print(
        f"linear track RMSE: rEFH {', '.join(f'{r:.3f}' for r in refh)} (median {median:.3f}), "
        f"static {static:.3f}, raw counts {raw:.3f}, chance {chance:.3f}"
    )
    assert median < 0.8 * raw
    assert median < 0.8 * chance
    assert median < 0.85 * static
