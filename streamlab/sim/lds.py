"""A simulated population with known ground truth: a latent linear dynamical system
z_t = A z_{t-1} + w_t (w ~ N(0, Q)) drives Poisson spike counts with log-rate C z_t + b, or
calcium dF/F (those spikes through a double-exponential indicator kernel plus noise).

A, C, Q and b are exposed so the optimal filters (a Kalman filter on the latent) and batch
references can be computed. Generation is deterministic for a seed and independent of how
the stream is cut into blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamlab.errors import ConfigError


@dataclass
class LatentPoissonPopulation:
    """Poisson (or calcium) neurons reading out a slowly rotating, damped latent state.

    `rate` is samples (bins) per second; `latent_timescale` (s) sets how slowly the latent
    moves; `firing_rate` (Hz) is the mean rate at z = 0; `modulation` is the std of the
    log-rate driven by the latent."""

    n_neurons: int = 64
    n_latents: int = 4
    rate: float = 1000.0
    seed: int = 0
    kind: str = "spikes"
    firing_rate: float = 20.0
    modulation: float = 0.8
    latent_timescale: float = 1.0
    calcium_rise: float = 0.05
    calcium_decay: float = 0.5
    calcium_amplitude: float = 0.2
    calcium_noise: float = 0.02
    A: np.ndarray = field(init=False, repr=False)
    C: np.ndarray = field(init=False, repr=False)
    Q: np.ndarray = field(init=False, repr=False)
    b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("spikes", "calcium"):
            raise ConfigError(f"kind must be 'spikes' or 'calcium', not {self.kind!r}")
        if self.n_neurons < 1 or self.n_latents < 1 or self.rate <= 0:
            raise ConfigError("need n_neurons >= 1, n_latents >= 1 and rate > 0")
        params = np.random.default_rng([self.seed, 0])
        dt = 1.0 / self.rate
        decay = np.exp(-dt / self.latent_timescale)
        A = np.zeros((self.n_latents, self.n_latents))
        for i in range(0, self.n_latents - 1, 2):  # damped rotations at 0.5-2 Hz
            omega = 2 * np.pi * params.uniform(0.5, 2.0) * dt
            A[i : i + 2, i : i + 2] = decay * np.array(
                [[np.cos(omega), -np.sin(omega)], [np.sin(omega), np.cos(omega)]]
            )
        if self.n_latents % 2:
            A[-1, -1] = decay
        self.A = A
        self.Q = np.eye(self.n_latents) * (1.0 - decay**2)  # unit stationary variance
        self.C = params.standard_normal((self.n_neurons, self.n_latents)) * (
            self.modulation / np.sqrt(self.n_latents)
        )
        self.b = np.full(self.n_neurons, np.log(self.firing_rate * dt)) + params.normal(
            0, 0.3, self.n_neurons
        )
        self._latent_rng = np.random.default_rng([self.seed, 1])
        self._spike_rng = np.random.default_rng([self.seed, 2])
        self._noise_rng = np.random.default_rng([self.seed, 3])
        self._z = self._latent_rng.standard_normal(self.n_latents)
        self._rise = np.zeros(self.n_neurons)
        self._fall = np.zeros(self.n_neurons)
        self.samples_drawn = 0

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.kind == "spikes" else np.dtype("<f4")

    def sample(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The next m samples: observations (m, n_neurons) and the true latents (m, n_latents)."""
        noise = self._latent_rng.multivariate_normal(
            np.zeros(self.n_latents), self.Q, size=m, method="cholesky"
        )
        latents = np.empty((m, self.n_latents))
        z = self._z
        for i in range(m):
            z = self.A @ z + noise[i]
            latents[i] = z
        self._z = z
        log_rate = np.minimum(latents @ self.C.T + self.b, 10.0)  # guard exp overflow
        counts = self._spike_rng.poisson(np.exp(log_rate))
        self.samples_drawn += m
        if self.kind == "spikes":
            return counts.astype(self.dtype), latents
        return self._calcium(counts), latents

    def _calcium(self, counts: np.ndarray) -> np.ndarray:
        dt = 1.0 / self.rate
        rise_decay = np.exp(-dt / self.calcium_rise)
        fall_decay = np.exp(-dt / self.calcium_decay)
        dff = np.empty(counts.shape, dtype=np.float64)
        for i, spikes in enumerate(counts):
            self._rise = self._rise * rise_decay + spikes
            self._fall = self._fall * fall_decay + spikes
            dff[i] = self.calcium_amplitude * (self._fall - self._rise)
        dff += self._noise_rng.normal(0.0, self.calcium_noise, size=dff.shape)
        return dff.astype(self.dtype)

    def blocks(
        self, n_samples: int, block: int = 1000
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """All of `n_samples` at once, cut in blocks (for recording a session to a file)."""
        data, latents = [], []
        for lo in range(0, n_samples, block):
            d, z = self.sample(min(block, n_samples - lo))
            data.append(d)
            latents.append(z)
        return data, latents

    def hello_meta(self) -> dict[str, object]:
        """What the rig announces in its hello."""
        return {
            "source": "streamlab.sim.LatentPoissonPopulation",
            "kind": self.kind,
            "rate": self.rate,
            "n_channels": self.n_neurons,
            "channels": [f"neuron{i}" for i in range(self.n_neurons)],
            "units": "counts" if self.kind == "spikes" else "dF/F",
            "seed": self.seed,
            "n_latents": self.n_latents,
        }
