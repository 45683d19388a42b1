"""The decoders' figures, calibrate then decode (EVALUATION.md): seeded families of simulated
populations and the shared linear track, each decoder beside the offline baselines and its own
shift control. The full sweep (ten seeds of full-length sessions, every decoder) is
`benchmarks/decoding_science.py`; these are the parts that fit in the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamlab.adapters.linear_track import bin_session, load_linear_track

from streamlab.learners.control import AdaptiveKalmanDecoder
from streamlab.learners.refh import RecurrentEFH
from streamlab.learners.reservoir import ForceReadout, ThreeFactorReadout
from streamlab.learners.ridge import OnlineRidgeDecoder
from streamlab.scoring import (
    RidgeDecoder,
    baseline_scores,
    kalman_baseline,
    run_decoder,
    score,
    shifted,
)
from streamlab.sim.decoding import FAMILIES
from tests.conftest import SHARED_DATA

SEEDS = range(10)
BINS = 1500  # shorter sessions than the benchmark's 3,000-4,000 bins, to fit the suite


def _decode_with_control(
    learner: AdaptiveKalmanDecoder,
    x: np.ndarray,
    y: np.ndarray,
    calibration: int,
    feedback_every: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's decode of x and, as a second stream of the same batch, of its shift
    control (x circularly shifted against the labels), both given y for the first
    `calibration` rows and then only every `feedback_every`-th row (each decoded before its
    label is learned from); streams of a batch are independent (tests/test_control.py)."""
    pair = torch.from_numpy(np.stack([x, shifted(x, y)], 1).astype(np.float64))
    labels = torch.from_numpy(np.repeat(y[:, None, :], 2, 1).astype(np.float64))
    unlabelled = torch.full_like(labels[0], float("nan"))
    out = np.empty((len(x), 2, y.shape[1]))
    for t in range(len(x)):
        given = t < calibration or (
            feedback_every is not None and (t - calibration) % feedback_every == feedback_every - 1
        )
        out[t] = learner.step(pair[t], labels[t] if given else unlabelled).numpy()
    return out[:, 0], out[:, 1]


def test_adaptive_decoder_with_intermittent_labels_beats_ridge_and_kalman_on_drift() -> None:
    """Ten seeds of the drifting family (20-200 neurons, randomised rates and tuning; the
    tuning random-walks after calibration and some units fall silent), 1,500 bins, first half
    calibrated; then a label every 10 samples, each decoded before it is learned from. `akd`
    with forgetting 0.999 (its observation the online ridge regression on lagged square-root
    counts, a gain to its learned dynamics fit on the labels) beats ridge (lags and penalty by
    cross-validation) and the offline Kalman decoder fit on the calibration half, which cannot
    use those labels, in median and worst seed; its shift control (same batch, second stream)
    collapses on every seed. Measured (median / worst): 0.77 / 0.48 against ridge 0.75 / 0.40
    and Kalman 0.68 / 0.29, ahead of ridge on 9 of 10 seeds; controls at most -0.03. The
    families without feedback are in the benchmark
    (benchmarks/decoding_science.py): they do not fit the suite's time with this decoder."""
    ours, ridge, kalman, controls = [], [], [], []
    for seed in SEEDS:
        data = FAMILIES["drifting"](seed, n_bins=BINS)
        x, y = data.counts, data.behaviour
        calibration = len(x) // 2
        truth = y[calibration:]
        baselines = {row.name: row.mean_r2 for row in baseline_scores(x, y, calibration)}
        ridge.append(baselines["baseline: ridge"])
        kalman.append(baselines["baseline: Kalman (offline)"])
        learner = AdaptiveKalmanDecoder(n_components=y.shape[1], forgetting=0.999)
        decoded, control = _decode_with_control(learner, x, y, calibration, feedback_every=10)
        ours.append(score("akd", truth, decoded[calibration:]).mean_r2)
        controls.append(score("control", truth, control[calibration:]).mean_r2)
    assert np.median(ours) > np.median(ridge), (ours, ridge)
    assert np.median(ours) > np.median(kalman), (ours, kalman)
    assert min(ours) > min(ridge) and min(ours) > min(kalman), (ours, ridge, kalman)
    assert max(controls) <= 0.1, controls


def test_online_ridge_with_intermittent_labels_beats_the_static_decoders_on_drifting_tuning():
    """Ten seeds of the drifting family (tuning random-walks after calibration, some units
    fall silent), 1,500 bins, first half calibrated; then a label every 10 samples, each
    decoded before it is learned from. The online ridge decoder (forgetting 0.999) against
    ridge and the Kalman decoder fit on the calibration half, which cannot use those labels.
    Measured (median / worst): 0.77 / 0.49 against ridge 0.75 / 0.39 and Kalman 0.68 / 0.29;
    it beat ridge on all ten seeds."""
    ours, ridge, kalman = [], [], []
    for seed in SEEDS:
        data = FAMILIES["drifting"](seed, n_bins=BINS)
        x, y = data.counts, data.behaviour
        calibration = len(x) // 2
        truth = y[calibration:]
        learner = OnlineRidgeDecoder(n_components=y.shape[1], forgetting=0.999)
        decoded = run_decoder(learner, x, y, calibration, feedback_every=10)
        ours.append(score("ridge", truth, decoded[calibration:]).mean_r2)
        static = RidgeDecoder.fit(x[:calibration], y[:calibration]).predict(x)
        ridge.append(score("static ridge", truth, static[calibration:]).mean_r2)
        kalman.append(
            score("kalman", truth, kalman_baseline(x, y, calibration)[calibration:]).mean_r2
        )
    assert np.median(ours) > np.median(ridge) > np.median(kalman), (ours, ridge, kalman)
    assert min(ours) > min(ridge), (ours, ridge)
    assert sum(a > b for a, b in zip(ours, ridge, strict=True)) >= 8, (ours, ridge)


# -- the shared linear track -------------------------------------------------------------------
LINEAR_TRACK = SHARED_DATA / "hc-linear-track"


@pytest.mark.skipif(not LINEAR_TRACK.is_dir(), reason=f"{LINEAR_TRACK} is absent")
def test_linear_track_figures_for_every_decoder_beside_ridge() -> None:
    """The first 900 s of tracking (running), 31 units in 250 ms bins, the tracked (x, y) in
    pixels; calibrated on the first half, decoded on the second, every decoder at its defaults.
    Measured R² (mean of x and y): akd 0.37, online ridge 0.37, three-factor 0.43, FORCE 0.36
    against ridge 0.37, offline Kalman 0.42 and calibration mean -0.06: each of those four
    within 0.02 of ridge or above it (akd, whose observation is now the online ridge
    regression, lost the 0.05 it had over ridge with its generative model: it is 0.05 below
    the offline Kalman decoder here, not asserted); the rEFH readout -1.10, below the
    calibration mean, which is why the README does not recommend it for decoding. Every shift
    control collapses (at most 0.1)."""
    track = load_linear_track(LINEAR_TRACK)
    start = float(track.position_t[0])
    x, y, _ = bin_session(track, 0.25, start, start + 900.0)
    calibration = len(x) // 2
    truth = y[calibration:]
    baselines = {row.name: row.mean_r2 for row in baseline_scores(x, y, calibration)}
    ridge = baselines["baseline: ridge"]
    assert 0.3 < ridge < 0.45
    decoders = {
        "akd": AdaptiveKalmanDecoder,
        "online ridge": OnlineRidgeDecoder,
        "force": lambda: ForceReadout(n_components=2, seed=0),
        "three_factor": lambda: ThreeFactorReadout(n_components=2, seed=0),
        "refh": lambda: RecurrentEFH(n_targets=2, seed=0),
    }
    r2 = {}
    for name, make in decoders.items():
        decoded = run_decoder(make(), x, y, calibration)
        r2[name] = score(name, truth, decoded[calibration:]).mean_r2
        control = run_decoder(make(), shifted(x, y), y, calibration)
        assert score(name, truth, control[calibration:]).mean_r2 <= 0.1, name
    for name in ("akd", "online ridge", "three_factor", "force"):
        assert r2[name] >= ridge - 0.02, r2
    # the README's reason not to decode with the rEFH readout
    assert r2["refh"] < baselines["baseline: calibration mean"] + 0.2, r2
