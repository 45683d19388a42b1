"""Noisy oscillators seen through tuned spike counts, for scoring latent filters (the rEFH) as
`EVALUATION.md` asks: families whose parameters are drawn from the seed, with model mismatch
built in, beside the two baselines of the filtering job (the Kalman filter with the true
dynamics on the population's centre of mass, and the static readout of the current counts).

Every family draws from its seed: the oscillator's period (20-200 samples) and damping ratio
(0.02-0.5), the population size (15-60), the neurons' preferred positions (even or jittered),
tuning widths, peak counts and baselines, and a share of untuned neurons. The position is
scaled to unit stationary variance. Unlike the rEFH's spring (`sim/spring.py`), the space is
a line, not a circle, and no trajectory restarts. Families:

- `damped`: a damped oscillator driven by white noise; Poisson counts, equal tuning widths.
- `driven`: the oscillator driven by a slow coloured force (an Ornstein-Uhlenbeck process,
  10-100 samples) as well as white noise, so the true state has three dimensions; unequal
  tuning widths and peak counts.
- `overdispersed`: either dynamics; gamma-Poisson (negative binomial) counts for a share of
  the neurons, unequal tuning and up to 20 % untuned neurons.
- `oscillator`: every choice above drawn per seed (the issue's family: dynamics, noise and
  tuning all varied together).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import expm, solve_discrete_lyapunov

from streamlab.errors import ConfigError

N_NEURONS = (15, 60)  # inclusive range of the population size
N_SAMPLES = 60_000  # default session length
PERIOD = (20.0, 200.0)  # oscillation period in samples (log-uniform)
DAMPING = (0.02, 0.5)  # damping ratio ζ (log-uniform): lightly to well damped
FORCE_TAU = (10.0, 100.0)  # time constant of the driving force, samples (log-uniform)
SPAN = 3.0  # preferred positions cover ±3 stationary sds, the range the position visits


@dataclass(frozen=True)
class OscillatorData:
    """One simulated session: counts (T, n) float32, the latent state (T, d) with the position
    in column 0, the true dynamics x_{t+1} = A x_t + w (A (d, d), w ~ N(0, Q)), the neurons'
    preferred positions (n,) (NaN for untuned neurons), the family name and every parameter
    drawn for it."""

    counts: np.ndarray
    states: np.ndarray
    dynamics: np.ndarray
    process_noise: np.ndarray
    centres: np.ndarray
    family: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def position(self) -> np.ndarray:
        return self.states[:, 0]

    @property
    def n_samples(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.counts.shape[1])

    def summary(self) -> str:
        """One line: family, sizes, the oscillator and the population's mean count."""
        p = self.params
        return (
            f"{self.family}: {self.n_samples} samples, {self.n_neurons} neurons (mean count "
            f"{float(self.counts.mean()):.2f}), period {p['period']:.0f}, ζ {p['damping']:.2f}, "
            f"{'driven' if p['driven'] else 'white noise'}, "
            f"{p['n_overdispersed']} overdispersed, {p['n_untuned']} untuned"
        )


def _generator(seed: int, family: str) -> np.random.Generator:
    """A generator for (seed, family): the same seed gives different draws in each family."""
    return np.random.default_rng([int(seed), zlib.crc32(family.encode())])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _dynamics(
    period: float, damping: float, force_tau: float | None, force_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact one-sample discretisation (Van Loan) of x'' = -ω² x - 2ζω x' + f + white noise,
    with f an OU force of time constant `force_tau` (None: no force); the noise intensities are
    scaled so that the position has unit stationary variance, `force_share` of it from f."""
    omega = 2 * np.pi / period
    if force_tau is None:
        drift = np.array([[0.0, 1.0], [-(omega**2), -2 * damping * omega]])
        intensities = [np.diag([0.0, 1.0])]
    else:
        drift = np.array(
            [[0.0, 1.0, 0.0], [-(omega**2), -2 * damping * omega, 1.0], [0.0, 0.0, -1 / force_tau]]
        )
        intensities = [np.diag([0.0, 1.0, 0.0]), np.diag([0.0, 0.0, 1.0])]
    d = len(drift)
    parts = []
    for intensity in intensities:
        block = np.zeros((2 * d, 2 * d))
        block[:d, :d], block[:d, d:], block[d:, d:] = -drift, intensity, drift.T
        e = expm(block)
        A = e[d:, d:].T
        Q = A @ e[:d, d:]
        Q = (Q + Q.T) / 2
        stationary = solve_discrete_lyapunov(A, Q)
        parts.append(Q / stationary[0, 0])  # this noise source alone gives unit position variance
    if force_tau is None:
        return A, parts[0]
    return A, (1 - force_share) * parts[0] + force_share * parts[1]


def _simulate_states(rng: np.random.Generator, A: np.ndarray, Q: np.ndarray, n: int) -> np.ndarray:
    """n states of x_{t+1} = A x_t + w, started from the stationary distribution."""
    d = len(A)
    chol = np.linalg.cholesky(Q + 1e-12 * np.eye(d))
    noise = rng.standard_normal((n, d)) @ chol.T
    state = np.linalg.cholesky(solve_discrete_lyapunov(A, Q) + 1e-12 * np.eye(d)) @ (
        rng.standard_normal(d)
    )
    out = np.empty((n, d))
    for t in range(n):
        out[t] = state
        state = A @ state + noise[t]
    return out


def _draw(
    family: str,
    seed: int,
    n_samples: int | None,
    driven: bool | None,
    overdispersed: bool | None,
    unequal: bool | None,
) -> OscillatorData:
    """One session; None for a choice lets the seed draw it (half the seeds each way)."""
    rng = _generator(seed, family)
    t_len = N_SAMPLES if n_samples is None else int(n_samples)
    if t_len < 100:
        raise ConfigError(f"n_samples must be at least 100, got {n_samples}")
    driven = bool(rng.random() < 0.5) if driven is None else driven
    overdispersed = bool(rng.random() < 0.5) if overdispersed is None else overdispersed
    unequal = bool(rng.random() < 0.5) if unequal is None else unequal
    period = float(_log_uniform(rng, *PERIOD))
    damping = float(_log_uniform(rng, *DAMPING))
    force_tau = float(_log_uniform(rng, *FORCE_TAU)) if driven else None
    force_share = float(rng.uniform(0.5, 0.9)) if driven else 0.0
    A, Q = _dynamics(period, damping, force_tau, force_share)
    n = int(rng.integers(N_NEURONS[0], N_NEURONS[1] + 1))
    untuned = rng.random(n) < (rng.uniform(0.0, 0.2) if overdispersed else 0.0)
    centres = np.linspace(-SPAN, SPAN, n)
    if unequal:  # jittered preferred positions, widths and gains spread per neuron
        centres = centres + rng.uniform(-0.5, 0.5, n) * 2 * SPAN / n
    # tuning sd in stationary sds of position: from sharp (0.15, half the spacing of 20 neurons;
    # the spring's is about one spacing) to broad
    width_median = float(_log_uniform(rng, 0.15, 0.6))
    width = width_median * (np.exp(0.4 * rng.standard_normal(n)) if unequal else np.ones(n))
    gain_median = float(_log_uniform(rng, 1.0, 10.0))  # peak count per sample
    gain = gain_median * (np.exp(0.5 * rng.standard_normal(n)) if unequal else np.ones(n))
    baseline = float(_log_uniform(rng, 0.005, 0.3)) * np.exp(0.5 * rng.standard_normal(n))
    flat = rng.uniform(0.2, 1.0, n) * gain  # untuned neurons' constant mean count
    dispersion = np.full(n, np.inf)
    if overdispersed:  # gamma-Poisson for a share of the neurons: Fano factor 1 + mean / shape
        over = rng.random(n) < rng.uniform(0.3, 1.0)
        dispersion[over] = _log_uniform(rng, 1.0, 10.0, int(over.sum()))
    over = np.isfinite(dispersion)
    # every parameter is drawn before the session, so a seed's population and dynamics do not
    # depend on the session's length
    states = _simulate_states(rng, A, Q, t_len)
    tuning = np.exp(-0.5 * ((states[:, :1] - centres) / width) ** 2)
    mean = baseline + np.where(untuned, flat, gain * tuning)
    if over.any():
        shape = dispersion[over]
        mean[:, over] *= rng.gamma(shape, 1 / shape, (t_len, int(over.sum())))
    counts = rng.poisson(mean).astype(np.float32)
    params = {
        "n_samples": t_len,
        "n_neurons": n,
        "driven": driven,
        "overdispersed": overdispersed,
        "unequal": unequal,
        "period": period,
        "damping": damping,
        "force_tau": force_tau,
        "force_share": force_share,
        "width_median": width_median,
        "gain_median": gain_median,
        "n_untuned": int(untuned.sum()),
        "n_overdispersed": int(np.isfinite(dispersion).sum()),
        "width": width,
        "gain": gain,
        "baseline": baseline,
        "dispersion": dispersion,
    }
    return OscillatorData(counts, states, A, Q, np.where(untuned, np.nan, centres), family, params)


def damped(seed: int, n_samples: int | None = None) -> OscillatorData:
    """A white-noise-driven damped oscillator; Poisson counts, equal tuning widths and gains."""
    return _draw("damped", seed, n_samples, driven=False, overdispersed=False, unequal=False)


def driven(seed: int, n_samples: int | None = None) -> OscillatorData:
    """The oscillator driven by a slow OU force besides white noise (3-D true state); Poisson
    counts, unequal tuning."""
    return _draw("driven", seed, n_samples, driven=True, overdispersed=False, unequal=True)


def overdispersed(seed: int, n_samples: int | None = None) -> OscillatorData:
    """Either dynamics; gamma-Poisson counts for 30-100 % of the neurons, unequal tuning, up to
    20 % untuned neurons."""
    return _draw("overdispersed", seed, n_samples, driven=None, overdispersed=True, unequal=True)


def oscillator(seed: int, n_samples: int | None = None) -> OscillatorData:
    """Dynamics, count noise and tuning equality all drawn per seed."""
    return _draw("oscillator", seed, n_samples, driven=None, overdispersed=None, unequal=None)


FAMILIES: dict[str, Callable[..., OscillatorData]] = {
    "oscillator": oscillator,
    "damped": damped,
    "driven": driven,
    "overdispersed": overdispersed,
}


# -- the baselines ---------------------------------------------------------------------------
def centre_of_mass(data: OscillatorData) -> np.ndarray:
    """The tuned neurons' centre of mass (T,): the single-frame position estimate; NaN where
    they are all silent."""
    tuned = np.isfinite(data.centres)
    counts = data.counts[:, tuned].astype(np.float64)
    total = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts @ data.centres[tuned] / total, np.nan)


def kalman_on_centre_of_mass(data: OscillatorData, fit: slice, start: int = 0) -> np.ndarray:
    """The Kalman filter with the true dynamics observing the centre of mass, calibrated on the
    `fit` samples (a + b·centre of mass ~ position by least squares; the residual variance is
    the observation noise). Silent samples are predictions only. Filtered positions (T,), from
    `start` on (NaN before it)."""
    com = centre_of_mass(data)
    seen = np.isfinite(com[fit])
    design = np.c_[com[fit][seen], np.ones(int(seen.sum()))]
    coef = np.linalg.lstsq(design, data.position[fit][seen], rcond=None)[0]
    variance = float(np.var(design @ coef - data.position[fit][seen]))
    return _kalman(data, com * coef[0] + coef[1], variance, start)


def kalman_on_readout(data: OscillatorData, fit: slice, start: int = 0) -> np.ndarray:
    """The Kalman filter with the true dynamics observing the static readout (the least-squares
    linear readout of the current counts fitted on the `fit` samples, its residual variance the
    observation noise): a stronger single-frame observation than the centre of mass where
    baselines, untuned or unequal neurons bias the latter. Filtered positions (T,), from `start`
    on (NaN before it)."""
    design = np.c_[data.counts.astype(np.float64), np.ones(data.n_samples)]
    weights = np.linalg.lstsq(design[fit], data.position[fit], rcond=None)[0]
    observed = design @ weights
    variance = float(np.var(observed[fit] - data.position[fit]))
    return _kalman(data, observed, variance, start)


def _kalman(data: OscillatorData, observed: np.ndarray, variance: float, start: int) -> np.ndarray:
    """Filtered positions (T,) of the true dynamics observing position + N(0, variance), started
    at `start` from the stationary prior; a NaN observation is a prediction step only."""
    A, Q = data.dynamics, data.process_noise
    mean = np.zeros(len(A))
    cov = solve_discrete_lyapunov(A, Q)
    out = np.full(len(observed), np.nan)
    for t in range(start, len(observed)):
        y = observed[t]
        if t > start:
            mean = A @ mean
            cov = A @ cov @ A.T + Q
        if np.isfinite(y):
            gain = cov[:, 0] / (cov[0, 0] + variance)
            mean = mean + gain * (y - mean[0])
            cov = cov - np.outer(gain, cov[0])
        out[t] = mean[0]
    return out


def readout_mse(features: np.ndarray, position: np.ndarray, fit: slice, score: slice) -> float:
    """Position MSE of the least-squares linear readout [features, 1] -> position fitted on the
    `fit` samples and applied to the `score` samples."""

    def design(s: slice) -> np.ndarray:
        f = features[s].astype(np.float64)
        return np.c_[f, np.ones(len(f))]

    weights = np.linalg.lstsq(design(fit), position[fit], rcond=None)[0]
    return float(np.mean((design(score) @ weights - position[score]) ** 2))


def split(n_samples: int, learn: float = 0.8) -> tuple[int, slice, slice]:
    """The scoring protocol's split of a session: the learner learns online on the first
    `learn` share; every readout is fitted on the second half of that part and scored on the
    rest, which no method has seen."""
    learned = int(learn * n_samples)
    return learned, slice(learned // 2, learned), slice(learned, n_samples)


def filter_scores(data: OscillatorData, hidden: np.ndarray, fit: slice, score: slice) -> dict:
    """Position MSEs on the `score` samples of the same linear readout fitted on `fit` applied
    to `hidden` (a filter's outputs, (T, k)) and to the current counts (the static readout),
    of the Kalman filter with the true dynamics on the centre of mass and on the static
    readout, and the ratios of the first to the others."""
    position = data.position
    start = max(score.start - 1000, 0)  # the filters have long forgotten their prior by then
    kalman = kalman_on_centre_of_mass(data, fit, start)[score] - position[score]
    kalman_readout = kalman_on_readout(data, fit, start)[score] - position[score]
    out = {
        "filter": readout_mse(hidden, position, fit, score),
        "static": readout_mse(data.counts, position, fit, score),
        "kalman": float(np.mean(kalman**2)),
        "kalman_readout": float(np.mean(kalman_readout**2)),
        "variance": float(np.var(position[score])),
    }
    for name in ("static", "kalman", "kalman_readout"):
        out[f"over_{name}"] = out["filter"] / out[name]
    return out
