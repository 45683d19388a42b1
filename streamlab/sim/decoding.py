"""Simulated populations encoding a behavioural variable, for scoring decoders as
`EVALUATION.md` asks: families whose parameters are drawn from the seed, with model mismatch
built in, so that no decoder's own model generates the data exactly.

Every family draws from its seed: the number of neurons (20-200), the bin width (50-100 ms),
the baseline and peak rates, the share of untuned neurons, the tuning shapes and widths, a
slow gain shared by the population (unrelated to behaviour), and the count noise: Poisson for
some neurons, gamma-Poisson (negative binomial, over-dispersed) for the others. Families:

- `place_field`: position on a linear track run in back-and-forth laps with pauses at the
  ends (q = 1), or in an open box (q = 2); place cells with fields of varied widths and shapes
  (Gaussian, skewed, flat-topped, a second field), direction-selective on the track, quieter at
  rest.
- `cosine_velocity`: 2-D hand velocity (reaches with bell-shaped speed profiles, or an
  Ornstein-Uhlenbeck process); units with baseline + depth * f(theta - pd) * speed^alpha, f a
  cosine or a sharper von Mises bump, rectified, leading the movement by 0-150 ms.
- `drifting`: `cosine_velocity` whose preferred directions, depths and baselines random-walk
  over the session and whose units may fall silent, so a decoder fit at calibration degrades.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlab.errors import ConfigError

N_NEURONS = (20, 200)  # inclusive range of the population size
N_BINS = (3000, 4000)  # inclusive range of the session length in bins (3.5 ± 0.5 k: seconds/seed)
BIN_S = (0.05, 0.1)  # bin width range (s)
SOFTPLUS_HZ = 1.0  # smoothness of the rectification of a drive to a rate


@dataclass(frozen=True)
class DecodingData:
    """One simulated session: spike counts (T, n), the behaviour they encode (T, q), the bin
    rate in Hz (bins per second), the family name and every parameter drawn for it."""

    counts: np.ndarray
    behaviour: np.ndarray
    rate: float
    family: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_neurons(self) -> int:
        return int(self.counts.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.behaviour.shape[1])

    def summary(self) -> str:
        """One line: family, sizes, bin width and the population's mean rate."""
        mean_hz = float(self.counts.mean()) * self.rate
        return (
            f"{self.family}: {self.n_bins} bins of {1e3 / self.rate:.0f} ms, {self.n_neurons} "
            f"neurons (mean {mean_hz:.1f} Hz), q = {self.n_targets}"
        )


# -- shared pieces -------------------------------------------------------------------------------
def _generator(seed: int, family: str) -> np.random.Generator:
    """A generator for (seed, family): the same seed gives different draws in each family."""
    return np.random.default_rng([int(seed), zlib.crc32(family.encode())])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _ou(
    rng: np.random.Generator, n: int, dt: float, tau: float, sd: float, dims: int
) -> np.ndarray:
    """An Ornstein-Uhlenbeck process (n, dims), stationary from the first sample."""
    a = np.exp(-dt / tau)
    noise = rng.standard_normal((n, dims)) * sd * np.sqrt(1.0 - a * a)
    out = np.empty((n, dims))
    state = rng.standard_normal(dims) * sd
    for t in range(n):
        state = a * state + noise[t]
        out[t] = state
    return out


def _softplus(drive: np.ndarray) -> np.ndarray:
    """A smooth rectification of a drive in Hz to a rate in Hz (>= 0)."""
    return SOFTPLUS_HZ * np.logaddexp(0.0, drive / SOFTPLUS_HZ)


@dataclass(frozen=True)
class _Common:
    """What every family draws the same way."""

    n_bins: int
    n_neurons: int
    bin_s: float
    untuned: np.ndarray  # (n,) bool
    baseline_hz: np.ndarray  # (n,)
    peak_hz: np.ndarray  # (n,) peak of the tuned part above baseline
    dispersion: np.ndarray  # (n,) gamma shape k (Fano ~ 1 + mean / k); inf: Poisson
    shared_gain: np.ndarray  # (T,) slow multiplicative gain of the whole population
    params: dict[str, Any]


def _common(rng: np.random.Generator, n_bins: int | None) -> _Common:
    t = int(rng.integers(N_BINS[0], N_BINS[1] + 1)) if n_bins is None else int(n_bins)
    if t < 20:
        raise ConfigError(f"n_bins must be at least 20, got {n_bins}")
    n = int(rng.integers(N_NEURONS[0], N_NEURONS[1] + 1))
    bin_s = float(rng.uniform(*BIN_S))
    untuned_share = float(rng.uniform(0.0, 0.3))
    untuned = rng.random(n) < untuned_share
    baseline_median = float(_log_uniform(rng, 0.2, 3.0))
    peak_median = float(_log_uniform(rng, 5.0, 30.0))
    baseline_hz = baseline_median * np.exp(0.6 * rng.standard_normal(n))
    peak_hz = peak_median * np.exp(0.5 * rng.standard_normal(n))
    over_share = float(rng.uniform(0.0, 1.0))
    dispersion = np.where(rng.random(n) < over_share, _log_uniform(rng, 0.5, 10.0, n), np.inf)
    gain_sd = float(rng.uniform(0.0, 0.3))
    gain_tau = float(rng.uniform(5.0, 30.0))
    shared_gain = np.exp(_ou(rng, t, bin_s, gain_tau, gain_sd, 1)[:, 0] - gain_sd**2 / 2)
    params = {
        "n_bins": t,
        "n_neurons": n,
        "bin_s": bin_s,
        "untuned_share": untuned_share,
        "n_untuned": int(untuned.sum()),
        "baseline_median_hz": baseline_median,
        "peak_median_hz": peak_median,
        "overdispersed_share": over_share,
        "n_overdispersed": int(np.isfinite(dispersion).sum()),
        "shared_gain_sd": gain_sd,
        "shared_gain_tau_s": gain_tau,
        "baseline_hz": baseline_hz,
        "peak_hz": peak_hz,
        "dispersion": dispersion,
    }
    return _Common(t, n, bin_s, untuned, baseline_hz, peak_hz, dispersion, shared_gain, params)


def _untuned_rates(rng: np.random.Generator, common: _Common) -> np.ndarray:
    """Constant rates (Hz) of the untuned neurons (between their baseline and a typical peak)."""
    return common.baseline_hz + rng.uniform(0.0, 0.5) * common.peak_hz


def _spike_counts(rng: np.random.Generator, rate_hz: np.ndarray, common: _Common) -> np.ndarray:
    """Counts (T, n) float64 of rates (T, n) in Hz times the shared gain: Poisson, or
    gamma-Poisson where a neuron's dispersion is finite."""
    mean = rate_hz * common.shared_gain[:, None] * common.bin_s
    over = np.isfinite(common.dispersion)
    if over.any():
        shape = common.dispersion[over]
        mean[:, over] *= rng.gamma(shape, 1.0 / shape, size=(len(mean), int(over.sum())))
    return rng.poisson(mean).astype(np.float64)


def _finish(
    family: str,
    rng: np.random.Generator,
    common: _Common,
    tuned_hz: np.ndarray,
    behaviour: np.ndarray,
    params: dict[str, Any],
) -> DecodingData:
    """Untuned neurons at constant rates, counts drawn, everything packed."""
    rate_hz = np.where(common.untuned[None, :], _untuned_rates(rng, common)[None, :], tuned_hz)
    counts = _spike_counts(rng, rate_hz, common)
    return DecodingData(
        counts,
        np.asarray(behaviour, dtype=np.float64),
        1.0 / common.bin_s,
        family,
        {**common.params, **params},
    )


# -- place cells ---------------------------------------------------------------------------------
def _laps(rng: np.random.Generator, n: int, dt: float, length: float) -> tuple[np.ndarray, dict]:
    """Back-and-forth laps on a track [0, length] cm: a log-normally fluctuating running speed,
    pauses of random length at the ends (reward) and now and then on the way."""
    speed_mean = float(rng.uniform(15.0, 40.0))
    end_pause_s = float(rng.uniform(1.0, 4.0))
    stop_rate_hz = float(rng.uniform(0.0, 0.05))
    fluctuation = np.exp(0.3 * _ou(rng, n, dt, 1.0, 1.0, 1)[:, 0])
    position = np.empty(n)
    x, direction, pause = float(rng.uniform(0, length)), 1.0, 0
    for t in range(n):
        if pause > 0:
            pause -= 1
        else:
            x += direction * speed_mean * fluctuation[t] * dt
            if x >= length or x <= 0.0:
                x = min(max(x, 0.0), length)
                direction = -direction
                pause = int(rng.exponential(end_pause_s) / dt)
            elif rng.random() < stop_rate_hz * dt:
                pause = int(rng.exponential(1.0) / dt)
        position[t] = x + rng.normal(0.0, 0.5)  # tracking jitter, cm
    params = {
        "speed_mean_cm_s": speed_mean,
        "end_pause_s": end_pause_s,
        "stop_rate_hz": stop_rate_hz,
    }
    return position[:, None], params


def _open_field(
    rng: np.random.Generator, n: int, dt: float, size: float
) -> tuple[np.ndarray, dict]:
    """A smooth random walk (OU velocity) in a [0, size]^2 cm box, reflected at the walls."""
    tau = float(rng.uniform(0.5, 2.0))
    speed_sd = float(rng.uniform(10.0, 25.0))
    velocity = _ou(rng, n, dt, tau, speed_sd, 2)
    position = np.empty((n, 2))
    x = rng.uniform(0, size, 2)
    sign = np.ones(2)
    for t in range(n):
        x = x + sign * velocity[t] * dt
        for axis in range(2):
            if x[axis] < 0.0 or x[axis] > size:
                x[axis] = -x[axis] if x[axis] < 0.0 else 2 * size - x[axis]
                sign[axis] = -sign[axis]
        position[t] = x
    return position, {"velocity_tau_s": tau, "velocity_sd_cm_s": speed_sd}


def place_field(seed: int, n_bins: int | None = None, dims: int | None = None) -> DecodingData:
    """Place cells encoding position on a linear track (q = 1, laps) or in an open box (q = 2);
    `dims` forces q, otherwise the seed picks 1 (60 %) or 2."""
    rng = _generator(seed, "place_field")
    common = _common(rng, n_bins)
    n, dt = common.n_neurons, common.bin_s
    q = int(dims) if dims is not None else (1 if rng.random() < 0.6 else 2)
    if q not in (1, 2):
        raise ConfigError(f"dims must be 1 or 2, got {dims}")
    size = float(rng.uniform(100.0, 200.0) if q == 1 else rng.uniform(60.0, 120.0))
    if q == 1:
        position, walk = _laps(rng, common.n_bins, dt, size)
    else:
        position, walk = _open_field(rng, common.n_bins, dt, size)
    speed = np.zeros(common.n_bins)
    speed[1:] = np.linalg.norm(np.diff(position, axis=0), axis=1) / dt
    # fields: centres over the whole space, widths (sd) log-uniform, shapes from a seed mixture
    centres = rng.uniform(-0.05 * size, 1.05 * size, (n, q))
    width = _log_uniform(rng, 0.03, 0.15, n) * size
    shape_mix = rng.dirichlet(np.ones(3))  # gaussian, skewed (1-D) / elongated (2-D), flat-top
    shape = rng.choice(3, size=n, p=shape_mix)
    skew = rng.uniform(0.3, 1.0, n)  # width ratio of the two sides (or the ellipse's axes)
    angle = rng.uniform(0.0, np.pi, n)
    second_share = float(rng.uniform(0.0, 0.3))
    second = rng.random(n) < second_share
    second_centres = rng.uniform(0.0, size, (n, q))
    second_gain = rng.uniform(0.3, 1.0, n)

    def field_at(centre: np.ndarray) -> np.ndarray:
        delta = position[:, None, :] - centre[None, :, :]  # (T, n, q)
        if q == 1:
            d = delta[..., 0]
            scale = np.where((shape == 1)[None, :] & (d < 0), width * skew, width)
            r2 = (d / scale) ** 2
        else:
            c, s = np.cos(angle), np.sin(angle)
            u = (delta[..., 0] * c + delta[..., 1] * s) / width
            v = (-delta[..., 0] * s + delta[..., 1] * c) / np.where(shape == 1, width * skew, width)
            r2 = u**2 + v**2
        return np.where(shape == 2, np.exp(-0.5 * r2**2), np.exp(-0.5 * r2))

    tuning = field_at(centres) + np.where(second, second_gain, 0.0) * field_at(second_centres)
    # on the track, some cells fire in one running direction only
    direction_share = float(rng.uniform(0.0, 0.7)) if q == 1 else 0.0
    if q == 1:
        heading = np.sign(np.gradient(position[:, 0]))
        directional = rng.random(n) < direction_share
        preferred = rng.choice([-1.0, 1.0], n)
        other = rng.uniform(0.0, 0.3, n)
        against = heading[:, None] * preferred[None, :] < 0
        tuning = tuning * np.where(directional[None, :] & against, other[None, :], 1.0)
    rest_floor = float(rng.uniform(0.2, 1.0))  # place fields fade at rest (SWR, no theta)
    speed_gate = rest_floor + (1.0 - rest_floor) * (1.0 - np.exp(-speed / 5.0))
    tuned_hz = common.baseline_hz + common.peak_hz * tuning * speed_gate[:, None]
    params = {
        "q": q,
        "size_cm": size,
        **walk,
        "shape_mix": shape_mix,
        "second_field_share": second_share,
        "direction_share": direction_share,
        "rest_floor": rest_floor,
        "centres": centres,
        "width_cm": width,
    }
    return _finish("place_field", rng, common, tuned_hz, position, params)


# -- velocity-tuned units ------------------------------------------------------------------------
def _reaches(rng: np.random.Generator, n: int, dt: float) -> tuple[np.ndarray, dict]:
    """2-D hand velocity (cm/s) of reaches between random targets within a radius, each with a
    minimum-jerk (bell-shaped) speed profile, separated by holds, plus a small OU tremor."""
    radius = float(rng.uniform(5.0, 15.0))
    hold_s = float(rng.uniform(0.2, 1.0))
    velocity = np.zeros((n, 2))
    position = np.zeros(2)
    t = 0
    while t < n:
        t += int(rng.exponential(hold_s) / dt)
        if t >= n:
            break
        target = rng.uniform(-radius, radius, 2)
        duration = int(rng.uniform(0.4, 1.0) / dt) + 2
        s = (np.arange(duration) + 0.5) / duration
        profile = 30.0 * s**2 * (1 - s) ** 2 / (duration * dt)  # integrates to 1
        stop = min(t + duration, n)
        velocity[t:stop] += np.outer(profile[: stop - t], target - position)
        position = target
        t += duration
    velocity += _ou(rng, n, dt, 0.1, 1.0, 2)
    return velocity, {"velocity": "reaches", "reach_radius_cm": radius, "hold_s": hold_s}


def _ou_velocity(rng: np.random.Generator, n: int, dt: float) -> tuple[np.ndarray, dict]:
    """2-D velocity (cm/s) as an Ornstein-Uhlenbeck process."""
    tau = float(rng.uniform(0.2, 1.0))
    sd = float(rng.uniform(5.0, 20.0))
    return _ou(rng, n, dt, tau, sd, 2), {"velocity": "ou", "tau_s": tau, "sd_cm_s": sd}


def _velocity_population(seed: int, n_bins: int | None, family: str, drift: bool) -> DecodingData:
    rng = _generator(seed, family)
    common = _common(rng, n_bins)
    n, dt, t_len = common.n_neurons, common.bin_s, common.n_bins
    velocity, walk = (_reaches if rng.random() < 0.5 else _ou_velocity)(rng, t_len, dt)
    # units lead the movement by 0-150 ms: their rate at t follows the velocity at t + lead
    lead = rng.integers(0, round(0.15 / dt) + 1, n)
    ahead = np.minimum(np.arange(t_len)[:, None] + lead[None, :], t_len - 1)  # (T, n)
    vx, vy = velocity[ahead, 0], velocity[ahead, 1]
    speed = np.hypot(vx, vy)
    speed_ref = float(np.sqrt((velocity**2).sum(1).mean()))
    theta = np.arctan2(vy, vx)
    # preferred directions: uniform, or bunched around one direction (von Mises, κ up to 1.5)
    bunching = float(rng.uniform(0.0, 1.5))
    pd = rng.vonmises(rng.uniform(-np.pi, np.pi), bunching, n)
    cosine_share = float(rng.uniform(0.3, 1.0))
    sharp = rng.random(n) >= cosine_share
    kappa = rng.uniform(1.0, 4.0, n)
    alpha = rng.uniform(0.5, 1.5, n)  # speed exponent
    speed_term = 0.3 * rng.standard_normal(n)  # a direction-free speed component
    depth = common.peak_hz.copy()
    baseline = common.baseline_hz.copy()
    pd_t = np.broadcast_to(pd, (t_len, n))
    depth_t = np.broadcast_to(depth, (t_len, n))
    baseline_t = np.broadcast_to(baseline, (t_len, n))
    drift_params: dict[str, Any] = {}
    if drift:
        steps = rng.standard_normal((3, t_len, n)) / np.sqrt(t_len)
        pd_sd = float(rng.uniform(0.5, 1.5))  # rad over the session (30-90 degrees)
        gain_sd = float(rng.uniform(0.2, 0.6))  # log-depth over the session
        base_sd = float(rng.uniform(0.1, 0.4))  # log-baseline over the session
        walks = np.cumsum(steps, axis=1)
        pd_t = pd[None, :] + pd_sd * walks[0]
        depth_t = depth[None, :] * np.exp(gain_sd * walks[1])
        baseline_t = baseline[None, :] * np.exp(base_sd * walks[2])
        loss_share = float(rng.uniform(0.0, 0.1))
        lost = rng.random(n) < loss_share
        lost_at = rng.integers(0, t_len, n)
        silent = lost[None, :] & (np.arange(t_len)[:, None] >= lost_at[None, :])
        depth_t = np.where(silent, 0.0, depth_t)
        baseline_t = np.where(silent, 0.0, baseline_t)
        drift_params = {
            "pd_drift_rad": pd_sd,
            "depth_drift_log": gain_sd,
            "baseline_drift_log": base_sd,
            "lost_share": loss_share,
            "n_lost": int(lost.sum()),
        }
    cos = np.cos(theta - pd_t)
    bump = (np.exp(kappa * (cos - 1.0)) - np.exp(-2.0 * kappa)) / (1.0 - np.exp(-2.0 * kappa))
    direction = np.where(sharp[None, :], 2.0 * bump - 1.0, cos)
    relative_speed = speed / speed_ref
    drive = baseline_t + depth_t * (
        relative_speed ** alpha[None, :] * direction + speed_term[None, :] * relative_speed
    )
    tuned_hz = _softplus(drive)
    if drift:  # a lost unit is silent, whatever the rectification leaves
        tuned_hz = np.where(silent, 0.0, tuned_hz)
    params = {
        "q": 2,
        **walk,
        "lead_bins": lead,
        "pd_bunching": bunching,
        "cosine_share": cosine_share,
        "preferred_direction": pd,
        "speed_exponent": alpha,
        **drift_params,
    }
    return _finish(family, rng, common, tuned_hz, velocity, params)


def cosine_velocity(seed: int, n_bins: int | None = None) -> DecodingData:
    """Units tuned to 2-D hand velocity (cosine or sharper bumps, speed-modulated, rectified,
    leading the movement); the tuning holds all session."""
    return _velocity_population(seed, n_bins, "cosine_velocity", drift=False)


def drifting(seed: int, n_bins: int | None = None) -> DecodingData:
    """`cosine_velocity` whose tuning random-walks over the session (preferred directions by
    30-90 degrees, depths and baselines by 20-60 % and 10-40 % in log) and whose units may fall
    silent: a decoder fit at calibration meets other tuning after it."""
    return _velocity_population(seed, n_bins, "drifting", drift=True)


FAMILIES: dict[str, Callable[..., DecodingData]] = {
    "place_field": place_field,
    "cosine_velocity": cosine_velocity,
    "drifting": drifting,
}
