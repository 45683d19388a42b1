"""The reservoir readouts (papers/README.md section 3) on the paradigms of the seed paper: target
learning (a sum of sinusoids), "what and when" (a cue, then one of three outcomes 200 ms later
with probabilities 0.6, 0.3, 0.1) and adaptation (the probabilities swap mid-stream); then the
contracts (batch equals single runs, state round trip, pickling, errors, a shared reservoir
advances once per sample) and the hippocampal linear track.

Sizes: N = 300 Izhikevich neurons (20% fast-spiking), density 0.1, 20-ms stream bins of twenty
1-ms Euler sub-steps (2-ms sub-steps change the dynamics: mean rates of about 190 Hz instead of 21
Hz on the sinusoid drive), synaptic traces with time constants log-uniform in 10-500 ms. The batch
dimension runs independent streams (each with its own random target phases or its own outcome
draws) as the "seeds"; the reservoir's weights are one draw (seed 0).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from streamlab.adapters.linear_track import load_linear_track, running_position

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.reservoir import ForceReadout, SpikingReservoir, ThreeFactorReadout
from streamlab.sim.reservoir_tasks import Block, sum_of_sinusoids, what_and_when
from tests.conftest import SHARED_DATA

# the reproductions' own reservoir (raw input, spiking), set explicitly: the defaults now
# standardise the input and readouts default to rate neurons
RESERVOIR = {
    "neuron": "izhikevich",
    "standardize": False,
    "n_neurons": 300,
    "bin_ms": 20.0,
    "dt_ms": 1.0,
    "recurrent_scale": 0.3,
    "input_scale": 20.0,
    "tau_syn_max_ms": 500.0,
    "device": "cpu",
}


def normalised_error(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MSE / variance of the target, per stream (axis 1)."""
    return ((prediction - target) ** 2).mean(0) / target.var(0)


# -- target learning ------------------------------------------------------------------------------
def test_both_readouts_learn_a_sum_of_sinusoids() -> None:
    """Drive: (cos, sin) of a 500-ms period; target: three harmonics with random phases per
    stream (4 streams). 500 samples (10 s) of online learning, then 100 samples predicted with
    learning off. Measured normalised error on those, per stream: three-factor (rate 0.5)
    0.045, 0.047, 0.051, 0.048; FORCE 0.004, 0.003, 0.004, 0.005 (mean rate about 21 Hz)."""
    batch, train, test = 4, 500, 100
    drive, target = sum_of_sinusoids(train + test, batch, period_bins=25, seed=1)
    # weaker recurrence than the trial tasks: an input-driven (not self-sustained) regime
    sine_reservoir = {**RESERVOIR, "recurrent_scale": 0.1, "input_scale": 10.0}
    reservoir = SpikingReservoir(**{**sine_reservoir, "tau_syn_max_ms": 200.0}, seed=0)
    three = ThreeFactorReadout(n_components=1, learning_rate=0.5, reservoir=reservoir, device="cpu")
    force = ForceReadout(n_components=1, reservoir=reservoir, device="cpu")
    x, y = torch.from_numpy(drive), torch.from_numpy(target)
    outputs = np.zeros((2, train + test, batch))
    for t in range(train + test):
        signal = y[t] if t < train else None
        outputs[0, t] = three.step(x[t], signal)[:, 0].numpy()
        outputs[1, t] = force.step(x[t], signal)[:, 0].numpy()
    held_out = slice(train, None)
    errors = [normalised_error(out[held_out], target[held_out, :, 0]) for out in outputs]
    print(f"normalised error: three-factor {errors[0]}, FORCE {errors[1]}")
    assert reservoir._steps == train + test  # shared: advanced once per sample
    assert (errors[0] < 0.1).all()
    assert (errors[1] < 0.1).all()
    assert three.weights.shape == force.weights.shape == (batch, 1, 301)


# -- what and when, and adaptation ----------------------------------------------------------------
P_BEFORE = (0.6, 0.3, 0.1)
P_AFTER = (0.1, 0.3, 0.6)
TRIAL_BINS, CUE_BIN, DELAY = 14, 1, 8
PRE, POST = 80, 40
STIMULUS_BIN = CUE_BIN + DELAY


def probe_responses(weights: list[torch.Tensor], trajectory: torch.Tensor) -> np.ndarray:
    """The response (trials, B, bins, K) each trial's final weights give to a trial: the
    reservoir restarts from rest at every trial, so its trajectory [r, 1] (bins, N + 1) is the
    same in every trial (asserted), and a probe trial without learning is weights @ trajectory."""
    return torch.einsum("nbkf,tf->nbtk", torch.stack(weights), trajectory).numpy()


def trials_to_readapt(correlation: np.ndarray, threshold: float = 0.9) -> int:
    """Trials after the switch until the correlation stays above `threshold` for good."""
    failing = np.flatnonzero(correlation <= threshold)
    return 0 if failing.size == 0 else int(failing[-1]) + 1


def test_what_and_when_and_adaptation_to_changed_probabilities() -> None:
    """A cue at bin 1, outcome k at bin 9 (160 ms later) with probability (0.6, 0.3, 0.1) for
    80 trials, then (0.1, 0.3, 0.6) for 40 trials; 8 streams draw their own outcomes. The gate
    (last column of y) is 1 from the cue to 3 bins past the stimulus bin, 0 elsewhere. The
    reservoir restarts from rest at each trial (a trial marker of the task), so its trajectory is
    the same in every trial. Three readouts share the reservoir: three-factor (rate 1.0), FORCE,
    and FORCE whose covariance is reset at the switch.

    Measured after the first 80 trials (probe responses, no learning), task seed 1, reservoir
    seed 0: both readouts' responses peak at bin 9 for all 3 outcomes in all 8 streams (24/24);
    the streams' mean heights at bin 9 are three-factor (0.68, 0.28, 0.11), FORCE (0.63, 0.27,
    0.10), correlation with (0.6, 0.3, 0.1) 0.99 and 1.00.

    Adaptation, trials after the swap until the stream-mean heights correlate with the new
    probabilities above 0.9 for good: three-factor 16, FORCE without reset 26, FORCE with its
    covariance reset 0 (the first trial after the reset already fits). FORCE without a reset
    is 1.6x slower than the three-factor rule here; its re-adaptation time grows with the
    training before the switch (after 40 trials, in a shorter run: three-factor 20, FORCE 25),
    the constant-rate three-factor rule's does not.

    Other seeds (task, reservoir), same script: (2, 1) three-factor 18, FORCE not re-adapted
    within the 40 trials (and its trained peaks scattered over bins 4-12); (3, 2) three-factor
    33, FORCE 33, and the three-factor's p = 0.1 curve peaked at the cue. So the assertions below
    hold for the pinned seeds (1, 0), not for every reservoir draw: the ratio is seed-dependent
    (1.0 to more than 2.2 over three seeds)."""
    batch = 8
    task = what_and_when(
        [Block(PRE, DELAY, P_BEFORE), Block(POST, DELAY, P_AFTER)],
        batch=batch,
        trial_bins=TRIAL_BINS,
        cue_bin=CUE_BIN,
        gate_after=3,
        seed=1,
    )
    reservoir = SpikingReservoir(**RESERVOIR, seed=0)
    readouts = {
        "three-factor": ThreeFactorReadout(
            n_components=3, learning_rate=1.0, gated=True, reservoir=reservoir, device="cpu"
        ),
        "FORCE": ForceReadout(n_components=3, gated=True, reservoir=reservoir, device="cpu"),
        "FORCE reset": ForceReadout(n_components=3, gated=True, reservoir=reservoir, device="cpu"),
    }
    x, y = torch.from_numpy(task.cue), torch.from_numpy(task.target(gated=True))
    weights: dict[str, list[torch.Tensor]] = {name: [] for name in readouts}
    first, last = [], []
    switch = PRE * TRIAL_BINS
    for t in range(len(x)):
        if t % TRIAL_BINS == 0:
            reservoir.reset_state()
        if t == switch:
            readouts["FORCE reset"].reset_covariance()
        for readout in readouts.values():
            readout.step(x[t], y[t])
        if t < TRIAL_BINS:
            first.append(reservoir.traces.clone())
        if t >= len(x) - TRIAL_BINS:
            last.append(reservoir.traces.clone())
        if t % TRIAL_BINS == TRIAL_BINS - 1:
            for name, readout in readouts.items():
                weights[name].append(readout.weights.clone())
    assert torch.equal(torch.stack(first), torch.stack(last))  # the trial trajectory repeats
    trajectory = torch.cat([torch.stack(first)[:, 0], torch.ones(TRIAL_BINS, 1)], dim=1)

    readapt = {}
    for name, readout_weights in weights.items():
        response = probe_responses(readout_weights, trajectory)
        window = slice(CUE_BIN + 1, STIMULUS_BIN + 4)  # the gated bins after the cue
        peaks = response[:, :, window].argmax(2) + window.start  # (trials, B, K)
        heights = response[:, :, STIMULUS_BIN].mean(1)  # (trials, K), mean over streams
        trained = peaks[PRE - 1]
        if name != "FORCE reset":  # identical to FORCE before the switch
            on_time = np.abs(trained - STIMULUS_BIN) <= 1
            print(
                f"{name}: peaks within one bin {on_time.sum()}/{on_time.size}, heights "
                f"{np.round(heights[PRE - 1], 2)}"
            )
            assert on_time[:, :2].all()  # the two likelier outcomes, every stream
            assert on_time.mean() >= 0.9
            assert np.corrcoef(heights[PRE - 1], P_BEFORE)[0, 1] > 0.9
        correlation = np.array([np.corrcoef(h, P_AFTER)[0, 1] for h in heights[PRE:]])
        readapt[name] = trials_to_readapt(correlation)
    print(f"trials to re-adapt after the swap: {readapt}")
    assert readapt["three-factor"] <= 22  # measured 16
    assert readapt["FORCE"] >= 1.25 * readapt["three-factor"]  # measured 26 vs 16 (1.6x)
    assert readapt["FORCE reset"] <= 5  # measured 0
    assert readapt["FORCE"] >= 15  # without a reset its gain has decayed


# -- contracts ------------------------------------------------------------------------------------
SMALL = {
    "neuron": "izhikevich",
    "standardize": False,
    "n_neurons": 40,
    "bin_ms": 4.0,
    "dt_ms": 1.0,
    "recurrent_scale": 0.3,
    "device": "cpu",
}


@pytest.mark.parametrize("neuron", ["izhikevich", "rate"])
def test_batch_equals_single_runs(neuron: str) -> None:
    """B streams in lockstep equal B single runs (float64), targets with NaNs and gates."""
    batch, steps = 3, 40
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((steps, batch, 5)))
    y = rng.standard_normal((steps, batch, 3))
    y[::4, 1, 0] = np.nan
    y[:, :, 2] = rng.random((steps, batch)) > 0.3  # the gate
    y = torch.from_numpy(y)
    params = {**SMALL, "neuron": neuron, "dtype": "float64", "seed": 2, "gated": True}
    scale = 1.0 if neuron == "rate" else 20.0
    for cls in (ThreeFactorReadout, ForceReadout):
        batched = cls(n_components=2, **params)
        singles = [cls(n_components=2, **params) for _ in range(batch)]
        for t in range(steps):
            signal = y[t] if t % 5 else None
            out = batched.step(x[t] * scale, signal)
            for i, single in enumerate(singles):
                expected = single.step(x[t, i] * scale, None if signal is None else signal[i])
                torch.testing.assert_close(out[i], expected, rtol=1e-9, atol=1e-9)


def test_state_dict_round_trip_and_pickling_give_identical_next_outputs() -> None:
    rng = np.random.default_rng(4)
    x = torch.from_numpy(rng.random((60, 2, 3)).astype(np.float32) * 20)
    y = torch.from_numpy(rng.standard_normal((60, 2, 1)).astype(np.float32))
    for cls in (ThreeFactorReadout, ForceReadout):
        learner = cls(n_components=1, **SMALL, seed=5)
        for t in range(30):
            learner.step(x[t], y[t])
        state = {
            k: (v.numpy() if isinstance(v, torch.Tensor) else v)
            for k, v in learner.state_dict().items()
        }
        assert "reservoir_v" in state and "reservoir_u" in state and "reservoir_s" in state
        fresh = cls(**learner._get_params())
        fresh.load_state_dict(state)
        copy = pickle.loads(pickle.dumps(learner))
        assert pickle.dumps(learner) == pickle.dumps(learner)  # no addresses in it
        for t in range(30, 60):
            expected = learner.step(x[t], y[t])
            torch.testing.assert_close(fresh.step(x[t], y[t]), expected, rtol=0, atol=0)
            torch.testing.assert_close(copy.step(x[t], y[t]), expected, rtol=0, atol=0)


def test_shared_reservoir_advances_once_per_sample() -> None:
    """Two readouts on one reservoir see the same traces as each readout on its own copy, and
    the reservoir's count equals the samples; stepping out of lockstep raises."""
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((20, 3)).astype(np.float32) * 20)
    y = torch.from_numpy(rng.standard_normal((20, 1)).astype(np.float32))
    shared = SpikingReservoir(**SMALL, seed=1)
    three = ThreeFactorReadout(n_components=1, reservoir=shared, device="cpu")
    force = ForceReadout(n_components=1, reservoir=shared, device="cpu")
    alone = ThreeFactorReadout(n_components=1, **SMALL, seed=1, dtype="float32")
    for t in range(20):
        out = three.step(x[t], y[t])
        force.step(x[t], y[t])
        torch.testing.assert_close(out, alone.step(x[t], y[t]), rtol=0, atol=0)
    assert shared._steps == 20 and three._steps == force._steps == 20
    three.step(x[0], y[0])  # three alone moves on twice: the reservoir is two ahead of force
    three.step(x[1], y[1])
    with pytest.raises(InputShapeError, match="lockstep"):
        force.step(x[0], y[0])
    before = three.infer(x[2])
    torch.testing.assert_close(three.infer(x[2]), before)  # infer changes nothing


def test_clear_errors_for_bad_arguments_and_shapes() -> None:
    for bad, match in [
        ({"n_components": 0}, "n_components must be a positive integer"),
        ({"n_neurons": 2.5}, "n_neurons must be a positive integer"),
        ({"neuron": "lif"}, "neuron must be one of"),
        ({"density": 1.5}, r"density must be a finite number in \(0, 1.0\]"),
        ({"dt_ms": 20.0, "bin_ms": 10.0}, r"dt_ms must be a finite number in \(0, 10.0\]"),
        ({"fs_fraction": -0.1}, r"fs_fraction .* \[0, 1.0\]"),
        ({"tau_syn_ms": 50.0, "tau_syn_max_ms": 10.0}, "tau_syn_max_ms must be >="),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number in > 0"),
        ({"reservoir": "big"}, "reservoir must be a SpikingReservoir"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ThreeFactorReadout(**bad)
    for bad, match in [({"alpha": -1.0}, "alpha"), ({"forgetting": 1.5}, r"\(0, 1.0\]")]:
        with pytest.raises(ConfigError, match=match):
            ForceReadout(**bad)
    readout = ForceReadout(n_components=2, gated=True, **SMALL)
    with pytest.raises(InputShapeError, match="3 values per stream"):
        readout.step(torch.ones(4), torch.ones(2))
    readout.step(torch.ones(4), torch.ones(3))
    with pytest.raises(InputShapeError, match="1 stream"):
        readout.step(torch.ones(2, 4), torch.ones(2, 3))
    shared = SpikingReservoir(**SMALL)
    shared.step(torch.ones(2, 4))
    with pytest.raises(InputShapeError, match="shared reservoir was built for 2"):
        ThreeFactorReadout(reservoir=shared, device="cpu").step(torch.ones(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu_within_float32_tolerance() -> None:
    """Rate reservoir (no spike thresholds, where float32 rounding may flip a spike) and the
    spiking one's first samples; the same weights on both devices."""
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.random((30, 4, 3)).astype(np.float32))
    y = torch.from_numpy(rng.standard_normal((30, 4, 2)).astype(np.float32))
    for cls in (ThreeFactorReadout, ForceReadout):
        params = {**SMALL, "neuron": "rate", "seed": 0}
        cpu = cls(n_components=2, **params)
        gpu = cls(n_components=2, **{**params, "device": "cuda"})
        cpu.step(x[0], y[0])
        gpu.step(x[0].cuda(), y[0].cuda())
        gpu._reservoir._W_in.copy_(cpu._reservoir._W_in)
        for name, tensor in gpu._state_tensors().items():
            tensor.copy_(cpu._state_tensors()[name])
        gpu._reservoir._J = cpu._reservoir._J.cuda()
        for t in range(1, 30):
            out_cpu = cpu.step(x[t], y[t])
            out_gpu = gpu.step(x[t].cuda(), y[t].cuda())
            torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-3, atol=1e-4)


# -- real data: position from hippocampal place cells --------------------------------------------
LINEAR_TRACK = SHARED_DATA / "hc-linear-track"


@pytest.mark.skipif(not LINEAR_TRACK.is_dir(), reason=f"{LINEAR_TRACK} is absent")
def test_position_from_the_linear_track() -> None:
    """15 minutes of running, 31 units in 250-ms bins, position along the track standardised.
    Each count bin is one 20-ms reservoir sample (the reservoir's clock runs 12.5x faster than
    the recording's, to keep the test short); input_scale 1, no recurrence (recurrent_scale 0:
    the recorded population's own dynamics drive the heterogeneous traces; 0.05 gave the same),
    float64 (FORCE's covariance). Both readouts share the reservoir and learn online from the
    labels of the first half (each bin predicted before it is learned from), then decode the
    second half without labels. Measured RMSE on the second half: three-factor (rate 0.5) 0.742,
    FORCE 0.636, chance (the first half's mean) 0.875; by quarters three-factor 0.55, 0.51,
    0.77, 0.72 and FORCE 0.34, 0.35, 0.65, 0.62 (the first two online with labels). For
    comparison test_control's adaptive Kalman decoder, with labels all along, gets 0.60."""
    counts, position = running_position(load_linear_track(LINEAR_TRACK))
    x, y = torch.from_numpy(counts), torch.from_numpy(position)
    params = {**RESERVOIR, "recurrent_scale": 0.0, "input_scale": 1.0, "dtype": "float64"}
    reservoir = SpikingReservoir(**params, seed=0)
    three = ThreeFactorReadout(
        n_components=1, learning_rate=0.5, reservoir=reservoir, dtype="float64", device="cpu"
    )
    force = ForceReadout(
        n_components=1, alpha=100.0, reservoir=reservoir, dtype="float64", device="cpu"
    )
    truth = position[:, 0]
    half = len(truth) // 2
    predictions = np.zeros((2, len(x)))
    for t in range(len(x)):
        label = y[t] if t < half else None
        predictions[0, t] = three.step(x[t], label)[0].item()
        predictions[1, t] = force.step(x[t], label)[0].item()
    chance = float(np.sqrt(np.mean((truth[half:] - truth[:half].mean()) ** 2)))
    rmse = [float(np.sqrt(np.mean((p[half:] - truth[half:]) ** 2))) for p in predictions]
    quarters = [
        [
            round(float(np.sqrt(np.mean((p[s] - truth[s]) ** 2))), 2)
            for s in np.array_split(np.arange(len(truth)), 4)
        ]
        for p in predictions
    ]
    print(
        f"linear track RMSE (2nd half, no labels): three-factor {rmse[0]:.3f}, FORCE "
        f"{rmse[1]:.3f}, chance {chance:.3f}; by quarters {quarters}; mean rate "
        f"{float(reservoir.traces.mean()):.1f} Hz"
    )
    assert rmse[0] < 0.93 * chance  # measured 0.85 x chance
    assert rmse[1] < 0.8 * chance  # measured 0.73 x chance
