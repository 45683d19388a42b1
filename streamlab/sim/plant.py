"""Simulated plants for the control learners, with the optimum each learner is measured against.

`LinearPlant` is a linear-Gaussian system x_{t+1} = A x_t + B u_t + w_t, y_t = C x_t + v_t with
quadratic cost x^T Q x + u^T R u, run in episodes of `horizon` states x_0 .. x_{horizon-1} from a
fixed x_0, and a sensory delay: at control step t the newest observation is y_{t-delay} (y_0, the
trial-start cue, before that). `double_integrator` builds the task of Friedrich, Golkar,
Farashahi et al. (NeurIPS 2021). `LQGController` is the optimum for it: time-varying Riccati
gains, a time-varying Kalman filter on the true model and a prediction over the delay.
`expected_cost` evaluates any linear policy exactly (no Monte Carlo noise).

`CosineTunedPopulation` is a population of Poisson neurons cosine-tuned to a 2-D velocity (the
behaviour an adaptive Kalman decoder reads out), with `drift()` to lose units and rotate tuning.

Everything here is NumPy float64; B independent episodes (or sessions) run as a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamlab.errors import ConfigError


def _sqrt_psd(matrix: np.ndarray, name: str) -> np.ndarray:
    """A square root S (S S^T = matrix) of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    if values.min() < -1e-12 * max(1.0, values.max()):
        raise ConfigError(f"{name} must be a covariance (positive semi-definite) matrix")
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def _matrix(value: object, name: str) -> np.ndarray:
    array = np.atleast_2d(np.asarray(value, dtype=np.float64))
    if array.ndim != 2 or not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} must be a finite matrix, got {value!r}")
    return array


@dataclass
class LinearPlant:
    """A batch of `batch` independent episodes of a delayed linear-Gaussian system.

    `process_noise` and `observation_noise` are covariance matrices. `reset()` starts new episodes
    and returns the trial-start observation y_0 (batch, n): the start cue C x_0, noise-free
    unless `noisy_start` (every episode starts at the known x_0, which the optimum uses too).
    `step(u)` applies u_t (batch, p) and returns the newest observation available at step t+1,
    y_{max(t+1-delay, 0)}, and the cost of that action, c_{t+1} = x_{t+1}^T Q x_{t+1} +
    u_t^T R u_t (batch,). The cost of an episode is x_0^T Q x_0 plus the costs of its
    horizon-1 actions."""

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    process_noise: np.ndarray
    observation_noise: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    x0: np.ndarray
    horizon: int = 11
    delay: int = 1
    batch: int = 1
    seed: int = 0
    noisy_start: bool = False
    x: np.ndarray = field(init=False, repr=False)
    t: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.A = _matrix(self.A, "A")
        self.B = _matrix(self.B, "B")
        self.C = _matrix(self.C, "C")
        self.process_noise = _matrix(self.process_noise, "process_noise")
        self.observation_noise = _matrix(self.observation_noise, "observation_noise")
        self.Q = _matrix(self.Q, "Q")
        self.R = _matrix(self.R, "R")
        self.x0 = np.asarray(self.x0, dtype=np.float64).reshape(-1)
        m, p, n = self.A.shape[0], self.B.shape[1], self.C.shape[0]
        shapes = {
            "A": (self.A.shape, (m, m)),
            "B": (self.B.shape, (m, p)),
            "C": (self.C.shape, (n, m)),
            "process_noise": (self.process_noise.shape, (m, m)),
            "observation_noise": (self.observation_noise.shape, (n, n)),
            "Q": (self.Q.shape, (m, m)),
            "R": (self.R.shape, (p, p)),
            "x0": (self.x0.shape, (m,)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ConfigError(f"{name} has shape {got}, expected {want} (A is {m}x{m})")
        if self.horizon < 2 or self.delay < 0 or self.batch < 1:
            raise ConfigError("need horizon >= 2, delay >= 0 and batch >= 1")
        self._w_chol = _sqrt_psd(self.process_noise, "process_noise")
        self._v_chol = _sqrt_psd(self.observation_noise, "observation_noise")
        self._rng = np.random.default_rng(self.seed)
        self.reset()

    @property
    def n_states(self) -> int:
        return self.A.shape[0]

    @property
    def n_controls(self) -> int:
        return self.B.shape[1]

    @property
    def n_observations(self) -> int:
        return self.C.shape[0]

    def initial_mean(self) -> np.ndarray:
        """What a controller knows of x_0 before any observation, per row (batch, m)."""
        return np.tile(self.x0, (self.batch, 1))

    def _process_noise(self) -> np.ndarray:
        """w_t for every row, (batch, m)."""
        return self._rng.standard_normal((self.batch, self.n_states)) @ self._w_chol.T

    def _observe(self, x: np.ndarray) -> np.ndarray:
        noise = self._rng.standard_normal((len(x), self.n_observations)) @ self._v_chol.T
        return x @ self.C.T + noise

    def reset(self) -> np.ndarray:
        """Start `batch` new episodes at x_0; returns y_0 (batch, n)."""
        self.t = 0
        self.x = np.tile(self.x0, (self.batch, 1))
        self._observations = [self._observe(self.x) if self.noisy_start else self.x @ self.C.T]
        return self._observations[0]

    def step(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply u_t (batch, p); returns (the newest available observation, c_{t+1})."""
        u = np.asarray(u, dtype=np.float64).reshape(self.batch, self.n_controls)
        self.x = self.x @ self.A.T + u @ self.B.T + self._process_noise()
        self.t += 1
        self._observations.append(self._observe(self.x))
        cost = np.einsum("bi,ij,bj->b", self.x, self.Q, self.x) + np.einsum(
            "bi,ij,bj->b", u, self.R, u
        )
        return self._observations[max(self.t - self.delay, 0)], cost

    @property
    def initial_cost(self) -> float:
        """x_0^T Q x_0, the part of every episode's cost no action changes."""
        return float(self.x0 @ self.Q @ self.x0)


def double_integrator(delay: int = 1, batch: int = 1, seed: int = 0) -> LinearPlant:
    """The reaching task of Friedrich, Golkar, Farashahi et al. (2021): position and velocity,
    the control pushes velocity, cost on position and effort, 11-step episodes from (-1, 0).

    The authors' code names the noise covariances V = 0.01 I (2 x 2) and W = diag(0.04, 0.25);
    their 3-observation variant pairs W (3 x 3) with the observations and V with the 2 states, so
    V is the process noise and W the observation noise. With that reading the LQG optimum of
    this module reproduces the costs quoted from running their code (4.42, 5.53, 6.83, 8.23 at
    delays 0 to 3) within sampling error; with the roles swapped it gives 4.3, 7.4, 12.4, 19.3.
    """
    return LinearPlant(
        A=np.array([[1.0, 1.0], [0.0, 1.0]]),
        B=np.array([[0.0], [1.0]]),
        C=np.eye(2),
        process_noise=0.01 * np.eye(2),
        observation_noise=np.diag([0.04, 0.25]),
        Q=np.diag([1.0, 0.0]),
        R=np.eye(1),
        x0=np.array([-1.0, 0.0]),
        horizon=11,
        delay=delay,
        batch=batch,
        seed=seed,
    )


# -- the optimum -----------------------------------------------------------------------------
def riccati_gains(plant: LinearPlant) -> list[np.ndarray]:
    """Feedback gains K_t, t = 0 .. horizon-2, minimising the episode cost (u_t = -K_t x_t)."""
    A, B, Q, R = plant.A, plant.B, plant.Q, plant.R
    S = Q.copy()
    gains: list[np.ndarray] = [np.empty(0)] * (plant.horizon - 1)
    for t in range(plant.horizon - 2, -1, -1):
        gains[t] = np.linalg.solve(R + B.T @ S @ B, B.T @ S @ A)
        S = Q + A.T @ S @ (A - B @ gains[t])
    return gains


def kalman_gains(plant: LinearPlant) -> list[np.ndarray]:
    """Posterior gains G_t of the Kalman filter on the true model with x_0 known (G_0 = 0):
    x_{t|t} = x_{t|t-1} + G_t (y_t - C x_{t|t-1})."""
    A, C, W, V = plant.A, plant.C, plant.process_noise, plant.observation_noise
    m = plant.n_states
    gains = [np.zeros((m, plant.n_observations))]
    P = np.zeros((m, m))
    for _ in range(1, plant.horizon):
        prior = A @ P @ A.T + W
        gain = np.linalg.solve(C @ prior @ C.T + V, C @ prior).T
        P = (np.eye(m) - gain @ C) @ prior
        P = 0.5 * (P + P.T)
        gains.append(gain)
    return gains


class DelayedKalmanFilter:
    """The optimal estimate of x_t from y_0 .. y_{t-delay} and the past controls, on the true
    model: a time-varying Kalman filter on the delayed stream, predicted over the delay."""

    def __init__(self, plant: LinearPlant) -> None:
        self.plant = plant
        self.gains = kalman_gains(plant)

    def reset(self) -> np.ndarray:
        """Start `plant.batch` episodes; returns the estimate of x_0 (the known start)."""
        self._posterior = [self.plant.initial_mean()]  # x_{s|s}, s = 0, 1, ...
        self._controls: list[np.ndarray] = []
        self.t = 0
        return self._posterior[0].copy()

    def update(self, observation: np.ndarray, control: np.ndarray) -> np.ndarray:
        """Take the control just applied (u_t) and the observation now available; returns the
        estimate of x_{t+1} from y_0 .. y_{t+1-delay}."""
        plant = self.plant
        self._controls.append(np.asarray(control, dtype=np.float64).reshape(-1, plant.n_controls))
        self.t += 1
        s = self.t - plant.delay
        if s >= 1:  # the filter step for the newest observation y_s
            prior = self._posterior[s - 1] @ plant.A.T + self._controls[s - 1] @ plant.B.T
            innovation = observation - prior @ plant.C.T
            self._posterior.append(prior + innovation @ self.gains[s].T)
        estimate = self._posterior[max(s, 0)]
        for k in range(max(s, 0), self.t):  # predict over the delay with the known controls
            estimate = estimate @ plant.A.T + self._controls[k] @ plant.B.T
        return estimate


class Policy(Protocol):
    """What `run_episodes` drives: `reset(y_0) -> u_0` at an episode start, then
    `act(observation, cost) -> u_t` with the newest observation and the last action's cost."""

    def reset(self, observation: np.ndarray) -> np.ndarray: ...

    def act(self, observation: np.ndarray, cost: np.ndarray) -> np.ndarray: ...


class LQGController:
    """The LQG optimum for a `LinearPlant`: u_t = -K_t x_{t|t-delay} (separation holds with a
    sensory delay). A `Policy`: it ignores y_0 (x_0 is known) and the costs."""

    def __init__(self, plant: LinearPlant) -> None:
        self.plant = plant
        self.riccati = riccati_gains(plant)
        self.filter = DelayedKalmanFilter(plant)

    def reset(self, observation: np.ndarray | None = None) -> np.ndarray:
        """Start `plant.batch` episodes; returns u_0."""
        self._estimate = self.filter.reset()
        self._u = -self._estimate @ self.riccati[0].T
        return self._u

    def act(self, observation: np.ndarray, cost: np.ndarray | None = None) -> np.ndarray:
        """The next control from the observation now available (zero after the last action)."""
        self._estimate = self.filter.update(observation, self._u)
        t = self.filter.t
        gain = self.riccati[t] if t < len(self.riccati) else np.zeros_like(self.riccati[0])
        self._u = -self._estimate @ gain.T
        return self._u

    @property
    def estimate(self) -> np.ndarray:
        """x_{t|t-delay} behind the last control, (batch, m)."""
        return self._estimate


class LearnerPolicy:
    """A `Policy` from a learning controller with `reset_episode()` and `step(observation,
    cost) -> control` (e.g. `BioOFC`, whose batch rows are the plant's episodes)."""

    def __init__(self, learner: Any) -> None:
        self.learner = learner
        self._float32 = getattr(learner, "dtype", "float64") == "float32"

    def _tensor(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(array.astype(np.float32) if self._float32 else array)

    def reset(self, observation: np.ndarray) -> np.ndarray:
        self.learner.reset_episode()
        return self.learner.step(self._tensor(observation)).cpu().numpy().astype(np.float64)

    def act(self, observation: np.ndarray, cost: np.ndarray) -> np.ndarray:
        control = self.learner.step(self._tensor(observation), self._tensor(cost))
        return control.cpu().numpy().astype(np.float64)


def run_episodes(plant: LinearPlant, policy: Policy) -> np.ndarray:
    """Run `plant.batch` episodes under `policy`; returns each episode's cost (batch,)."""
    observation = plant.reset()
    total = np.full(plant.batch, plant.initial_cost)
    u = policy.reset(observation)
    for _ in range(plant.horizon - 1):
        observation, cost = plant.step(u)
        total += cost
        u = policy.act(observation, cost)
    return total


def learner_episodes(plant: LinearPlant, learner: Any, episodes: int) -> np.ndarray:
    """Train a learning controller (see `LearnerPolicy`) for `episodes` rounds of `plant.batch`
    episodes, one independent run per batch row; returns the costs (episodes, batch)."""
    policy = LearnerPolicy(learner)
    return np.stack([run_episodes(plant, policy) for _ in range(episodes)])


def lqg_cost(plant: LinearPlant) -> float:
    """The expected episode cost of the LQG optimum, exactly (see `expected_cost`)."""
    return expected_cost(plant, LQGController)


class _AffinePlant(LinearPlant):
    """A plant whose rows are an affine expansion in the noise: row 0 carries the mean (x_0,
    no noise), row 1 + j the coefficient of the j-th unit Gaussian of the episode (one per
    process-noise and observation-noise dimension and step). Any policy that is linear in its
    observations gives, row by row, exactly these coefficients, so E[cost] = sum over rows."""

    def __post_init__(self) -> None:
        m, n, horizon = self.A.shape[0], np.atleast_2d(self.C).shape[0], self.horizon
        self.batch = 1 + (horizon - 1) * m + horizon * n
        super().__post_init__()

    def initial_mean(self) -> np.ndarray:
        mean = np.zeros((self.batch, self.n_states))
        mean[0] = self.x0
        return mean

    def _unit(self, offset: int, size: int) -> np.ndarray:
        block = np.zeros((self.batch, size))
        block[1 + offset : 1 + offset + size] = np.eye(size)
        return block

    def _observe(self, x: np.ndarray) -> np.ndarray:
        m, n = self.n_states, self.n_observations
        offset = (self.horizon - 1) * m + self.t * n
        return x @ self.C.T + self._unit(offset, n) @ self._v_chol.T

    def reset(self) -> np.ndarray:
        self.t = 0
        self.x = np.zeros((self.batch, self.n_states))
        self.x[0] = self.x0
        self._observations = [self._observe(self.x) if self.noisy_start else self.x @ self.C.T]
        return self._observations[0]

    def _process_noise(self) -> np.ndarray:
        return self._unit(self.t * self.n_states, self.n_states) @ self._w_chol.T


def expected_cost(plant: LinearPlant, make_policy: Callable[[LinearPlant], Policy]) -> float:
    """Exact expected episode cost of a policy that is linear in its observations, with no
    constant term and no randomness of its own (`LQGController`, a frozen `BioOFC`), by running
    it once on the affine expansion of the plant in its noise (one row per unit Gaussian).
    `make_policy(plant)` builds the policy for a plant of that many rows."""
    affine = _AffinePlant(
        A=plant.A,
        B=plant.B,
        C=plant.C,
        process_noise=plant.process_noise,
        observation_noise=plant.observation_noise,
        Q=plant.Q,
        R=plant.R,
        x0=plant.x0,
        horizon=plant.horizon,
        delay=plant.delay,
        noisy_start=plant.noisy_start,
    )
    policy = make_policy(affine)
    costs = run_episodes(affine, policy)
    # row 0 counted x_0^T Q x_0 like every row; only the mean row carries it
    return float(costs.sum() - (affine.batch - 1) * affine.initial_cost)


# -- cosine-tuned neurons ---------------------------------------------------------------------
@dataclass
class CosineTunedPopulation:
    """Poisson neurons cosine-tuned to a 2-D velocity that follows a smooth random walk.

    Velocity: v_t = a v_{t-1} + sqrt(1 - a^2) * speed * N(0, I), a = exp(-dt / timescale), so
    each component has standard deviation `speed`. Rate of neuron i (Hz):
    max(base_i + depth_i * <p_i, v_t> / speed, 0) with unit preferred direction p_i; counts per
    bin of dt = 1/`rate` seconds are Poisson. `batch` independent sessions share the tuning."""

    n_neurons: int = 50
    rate: float = 20.0
    seed: int = 0
    batch: int = 1
    speed: float = 1.0
    timescale: float = 0.5
    base_rate: tuple[float, float] = (10.0, 30.0)
    depth: tuple[float, float] = (5.0, 20.0)
    preferred: np.ndarray = field(init=False, repr=False)
    base: np.ndarray = field(init=False, repr=False)
    gain: np.ndarray = field(init=False, repr=False)
    alive: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_neurons < 1 or self.rate <= 0 or self.timescale <= 0 or self.batch < 1:
            raise ConfigError("need n_neurons >= 1, rate > 0, timescale > 0 and batch >= 1")
        params = np.random.default_rng([self.seed, 0])
        angles = params.uniform(0, 2 * np.pi, self.n_neurons)
        self.preferred = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        self.base = params.uniform(*self.base_rate, self.n_neurons)
        self.gain = params.uniform(*self.depth, self.n_neurons)
        self.alive = np.ones(self.n_neurons, dtype=bool)
        self._drift_rng = np.random.default_rng([self.seed, 1])
        self._velocity_rng = np.random.default_rng([self.seed, 2])
        self._spike_rng = np.random.default_rng([self.seed, 3])
        self._v = self._velocity_rng.standard_normal((self.batch, 2)) * self.speed

    @property
    def decay(self) -> float:
        return float(np.exp(-1.0 / (self.rate * self.timescale)))

    def rates(self, velocity: np.ndarray) -> np.ndarray:
        """Firing rates (Hz), shape velocity.shape[:-1] + (n_neurons,)."""
        drive = self.base + self.gain * (velocity @ self.preferred.T) / self.speed
        return np.maximum(drive, 0.0) * self.alive

    def sample(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The next m bins: counts (m, batch, n_neurons) and velocities (m, batch, 2)."""
        a = self.decay
        noise = self._velocity_rng.standard_normal((m, self.batch, 2))
        velocity = np.empty((m, self.batch, 2))
        v = self._v
        for i in range(m):
            v = a * v + np.sqrt(1 - a * a) * self.speed * noise[i]
            velocity[i] = v
        self._v = v
        counts = self._spike_rng.poisson(self.rates(velocity) / self.rate)
        return counts.astype(np.float64), velocity

    def drift(self, fraction_lost: float = 0.3, rotation: float = np.pi / 3) -> np.ndarray:
        """Recording drift: a random `fraction_lost` of the live units fall silent and every
        remaining unit's preferred direction turns by `rotation` radians (randomly signed per
        unit). Returns the indices of the units lost."""
        if not 0 <= fraction_lost < 1:
            raise ConfigError(f"fraction_lost must be in [0, 1), got {fraction_lost}")
        live = np.flatnonzero(self.alive)
        lost = self._drift_rng.choice(live, round(fraction_lost * len(live)), replace=False)
        self.alive[lost] = False
        turn = rotation * self._drift_rng.choice([-1.0, 1.0], self.n_neurons)
        cos, sin = np.cos(turn), np.sin(turn)
        x, y = self.preferred[:, 0], self.preferred[:, 1]
        self.preferred = np.stack([cos * x - sin * y, sin * x + cos * y], axis=1)
        return np.sort(lost)
