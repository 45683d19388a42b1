"""The rEFH paper's 1-D filtering experiment (Makin, Dichter and Sabes 2016; papers/README.md
section 2): a damped spring whose position, on a circle of +-π/3, is seen by 15 Poisson neurons
with Gaussian tuning; the single-frame estimate (the population's centre of mass), the Kalman
filter that knows the true dynamics, and the linear readout the learners are scored with.
Shared by `tests/test_refh.py` and `benchmarks/refh_bptt_bound.py`.
"""

from __future__ import annotations

import numpy as np

SPRING = np.array([[1.0, 0.05], [-0.03, 0.9975]])  # dt 0.05, m 5, b 0.25, k 3
PROCESS_NOISE = np.array([5e-7, 5e-5])  # the reference's, unscaled
HALF_RANGE = np.pi / 3
N_NEURONS = 15
TRIAL = 1000  # steps per trajectory; each starts afresh: position uniform, velocity ~ 0
# The paper's experiment starts every trajectory at rest: initial velocity mean 0, variance
# 5e-10 (standard deviation 2.2e-5); the position prior is uniform over the range
INITIAL_SPEED = float(np.sqrt(5e-10))


def wrap(x: np.ndarray) -> np.ndarray:
    """Positions back into [-π/3, π/3)."""
    return (x + HALF_RANGE) % (2 * HALF_RANGE) - HALF_RANGE


def centres() -> np.ndarray:
    """The 15 neurons' preferred positions, evenly spaced over the range."""
    return -HALF_RANGE + (np.arange(N_NEURONS) + 0.5) * 2 * HALF_RANGE / N_NEURONS


def simulate_spring(trials: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts (T, B, 15) float32 and states (T, B, 2) (position, velocity) of B trajectories in
    lockstep, `trials` x 1,000 steps each. Tuning: Gaussian on the circle, FWHM 1/6 of the range,
    centres evenly spaced; the gain (peak count) is drawn from U(6.4, 9.6) per sample."""
    rng = np.random.default_rng(seed)
    steps = trials * TRIAL
    states = np.empty((steps, batch, 2))
    for t in range(steps):
        if t % TRIAL == 0:
            state = np.stack(
                [rng.uniform(-HALF_RANGE, HALF_RANGE, batch), rng.normal(0, INITIAL_SPEED, batch)],
                axis=1,
            )
        else:
            state = state @ SPRING.T + rng.standard_normal((batch, 2)) * np.sqrt(PROCESS_NOISE)
            state[:, 0] = wrap(state[:, 0])
        states[t] = state
    sigma = (2 * HALF_RANGE / 6) / (2 * np.sqrt(2 * np.log(2)))
    distance = wrap(states[..., :1] - centres())
    gain = rng.uniform(6.4, 9.6, (steps, batch, 1))
    counts = rng.poisson(gain * np.exp(-0.5 * (distance / sigma) ** 2))
    return counts.astype(np.float32), states


def centre_of_mass(counts: np.ndarray) -> np.ndarray:
    """The population's centre of mass on the circle: the single-frame position estimate."""
    angle = centres() * np.pi / HALF_RANGE
    return np.arctan2(counts @ np.sin(angle), counts @ np.cos(angle)) * HALF_RANGE / np.pi


def kalman_on_centre_of_mass(counts: np.ndarray, variance: float) -> np.ndarray:
    """The Kalman filter with the true dynamics and process noise observing the centre of mass
    with noise `variance`, restarted with the true prior at each trajectory's start. The
    innovation is wrapped (the space is a circle), which streamlab's `KalmanFilter` does not do,
    hence this NumPy filter. Returns the filtered positions (T, B)."""
    observed = centre_of_mass(counts)
    out = np.empty(observed.shape)
    for t in range(len(observed)):
        if t % TRIAL == 0:
            mean = np.zeros((observed.shape[1], 2))
            cov = np.diag([(2 * HALF_RANGE) ** 2 / 12, INITIAL_SPEED**2])
        else:
            mean = mean @ SPRING.T
            cov = SPRING @ cov @ SPRING.T + np.diag(PROCESS_NOISE)
        gain = cov[:, 0] / (cov[0, 0] + variance)
        mean = mean + wrap(observed[t] - mean[:, 0])[:, None] * gain
        mean[:, 0] = wrap(mean[:, 0])
        cov = cov - np.outer(gain, cov[0])
        out[t] = mean[:, 0]
    return out


def readout(
    fit_hidden: np.ndarray, fit_states: np.ndarray, hidden: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares linear readout of (cos, sin) of position and of velocity from [h̄, 1], fitted
    on one segment, applied to another: (positions, velocities), each flattened."""

    def design(h: np.ndarray) -> np.ndarray:
        flat = h.reshape(-1, h.shape[-1]).astype(np.float64)
        return np.c_[flat, np.ones(len(flat))]

    angle = fit_states[..., 0].ravel() * np.pi / HALF_RANGE
    targets = np.c_[np.cos(angle), np.sin(angle), fit_states[..., 1].ravel()]
    weights = np.linalg.lstsq(design(fit_hidden), targets, rcond=None)[0]
    decoded = design(hidden) @ weights
    return np.arctan2(decoded[:, 1], decoded[:, 0]) * HALF_RANGE / np.pi, decoded[:, 2]
