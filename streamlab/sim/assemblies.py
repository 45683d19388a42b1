"""Simulated populations with cell assemblies, for scoring clustering learners (nonnegative
similarity matching) as `EVALUATION.md` asks: families whose parameters are drawn from the
seed, with model mismatch built in, and the offline baselines of the same job on the same
frames.

Every family draws from its seed: the number of cells (30-200) and assemblies (3-8); the
assemblies' sizes (unequal, at least 3 cells) and event rates (unequal, 15-80 events per
session); a share of member cells that also belong to a second assembly (overlap, 0-20 %); a
share of background cells in no assembly (10-50 %); each cell's background rate, its
probability of joining an event of its assembly and its gain there; event lengths; the frame
rate (2-30 Hz). No learner's model generates these exactly: assemblies overlap, fire
together by chance, members join only some events, and background cells fire at their own
rates. Families:

- `spike_counts`: spike counts per frame (Poisson, gamma-Poisson for some cells).
- `calcium`: dF/F: the same kind of spike counts convolved with an exponential kernel of a
  randomised decay (0.3-2 s, jittered per cell), scaled by a per-cell amplitude, plus
  Gaussian noise (the rig's shot noise) and a slow drift of the baseline.

The truth is the membership matrix; cells in exactly one assembly have a label and are the
ones scored (as on the published zebrafish assemblies).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlab.errors import ConfigError

N_CELLS = (30, 200)  # inclusive range of the population size
N_ASSEMBLIES = (3, 8)  # inclusive range of the number of assemblies
N_FRAMES = (3000, 4000)  # inclusive range of the session length in frames
FRAME_HZ = (2.0, 30.0)  # frame rate range (log-uniform)
EVENTS = (15, 80)  # range of the expected number of events per assembly in a session
MIN_SIZE = 3  # the smallest assembly, in cells


@dataclass(frozen=True)
class AssemblyData:
    """One simulated session: activity (T, n) (counts or dF/F), membership (n, K) bool, the
    frame rate in Hz, the family name and every parameter drawn for it."""

    activity: np.ndarray
    membership: np.ndarray
    rate: float
    family: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.activity.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.activity.shape[1])

    @property
    def n_assemblies(self) -> int:
        return int(self.membership.shape[1])

    @property
    def scored(self) -> np.ndarray:
        """(n,) bool: the cells in exactly one assembly (the only ones with a true label)."""
        return self.membership.sum(1) == 1

    @property
    def labels(self) -> np.ndarray:
        """(n,) the assembly of each cell in exactly one, -1 for the others."""
        return np.where(self.scored, self.membership.argmax(1), -1)

    def summary(self) -> str:
        """One line: family, sizes, frame rate, assembly sizes."""
        sizes = self.membership.sum(0).tolist()
        return (
            f"{self.family}: {self.n_frames} frames at {self.rate:.1f} Hz, {self.n_cells} cells, "
            f"{self.n_assemblies} assemblies of {sizes} cells, "
            f"{int((self.membership.sum(1) == 0).sum())} in none, "
            f"{int((self.membership.sum(1) > 1).sum())} in two"
        )


def _generator(seed: int, family: str) -> np.random.Generator:
    """A generator for (seed, family): the same seed gives different draws in each family."""
    return np.random.default_rng([int(seed), zlib.crc32(family.encode())])


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _membership(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Unequal assemblies (Dirichlet shares, each at least MIN_SIZE cells) over the member
    cells, a share of background cells in none, and a share of members in a second one."""
    background_share = float(rng.uniform(0.1, 0.5))
    members = max(round(n * (1.0 - background_share)), k * MIN_SIZE)
    concentration = float(rng.uniform(1.0, 5.0))  # lower: more unequal sizes
    shares = rng.dirichlet(np.full(k, concentration))
    sizes = MIN_SIZE + rng.multinomial(members - k * MIN_SIZE, shares)
    order = rng.permutation(n)
    membership = np.zeros((n, k), dtype=bool)
    start = 0
    for j, size in enumerate(sizes):
        membership[order[start : start + size], j] = True
        start += size
    overlap_share = float(rng.uniform(0.0, 0.2))
    member_cells = order[:members]
    doubled = member_cells[rng.random(members) < overlap_share]
    for cell in doubled:
        other = rng.choice(np.flatnonzero(~membership[cell]))
        membership[cell, other] = True
    params = {
        "background_share": background_share,
        "size_concentration": concentration,
        "overlap_share": overlap_share,
        "sizes": membership.sum(0),
    }
    return membership, params


def _spikes(
    rng: np.random.Generator, n_frames: int, n: int, k: int, frame_hz: float
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Spike counts (T, n) per frame of assemblies firing at Poisson event times over cells'
    own background firing, and the membership (n, K)."""
    membership, member_params = _membership(rng, n, k)
    events = _log_uniform(rng, *EVENTS, k)  # expected events per assembly (unequal rates)
    event_s = float(rng.uniform(0.1, 0.5))  # length of an event
    event_frames = max(1, round(event_s * frame_hz))
    background_hz = _log_uniform(rng, 0.05, 2.0) * np.exp(0.7 * rng.standard_normal(n))
    join = rng.uniform(0.4, 0.95, n)  # probability that a member joins an event of its assembly
    event_hz = _log_uniform(rng, 5.0, 30.0) * np.exp(0.5 * rng.standard_normal(n))
    drive = np.tile(background_hz / frame_hz, (n_frames, 1))  # expected spikes per frame
    onsets = rng.random((n_frames, k)) < events / n_frames
    for j in range(k):
        cells = np.flatnonzero(membership[:, j])
        for t in np.flatnonzero(onsets[:, j]):
            joined = cells[rng.random(cells.size) < join[cells]]
            stop = min(t + event_frames, n_frames)
            drive[t:stop, joined] += event_hz[joined] / frame_hz
    over = rng.random(n) < rng.uniform(0.0, 1.0)  # gamma-Poisson (over-dispersed) cells
    shape = _log_uniform(rng, 0.5, 10.0, n)
    if over.any():
        drive[:, over] *= rng.gamma(shape[over], 1.0 / shape[over], (n_frames, int(over.sum())))
    counts = rng.poisson(drive).astype(np.float64)
    params = {
        **member_params,
        "events_per_assembly": events,
        "events_drawn": onsets.sum(0),
        "event_s": event_s,
        "background_hz": background_hz,
        "join_probability": join,
        "event_hz": event_hz,
        "n_overdispersed": int(over.sum()),
    }
    return counts, membership, params


def _draw_sizes(
    rng: np.random.Generator, n_frames: int | None
) -> tuple[int, int, int, float, dict[str, Any]]:
    t = int(rng.integers(N_FRAMES[0], N_FRAMES[1] + 1))  # drawn always: same cells at any length
    t = t if n_frames is None else int(n_frames)
    if t < 100:
        raise ConfigError(f"n_frames must be at least 100, got {n_frames}")
    n = int(rng.integers(N_CELLS[0], N_CELLS[1] + 1))
    k = int(rng.integers(N_ASSEMBLIES[0], N_ASSEMBLIES[1] + 1))
    frame_hz = float(_log_uniform(rng, *FRAME_HZ))
    return t, n, k, frame_hz, {"n_frames": t, "n_cells": n, "n_assemblies": k, "frame_hz": frame_hz}


def spike_counts(seed: int, n_frames: int | None = None) -> AssemblyData:
    """Spike counts per frame of a population with assemblies (see the module docstring)."""
    rng = _generator(seed, "spike_counts")
    t, n, k, frame_hz, sizes = _draw_sizes(rng, n_frames)
    counts, membership, params = _spikes(rng, t, n, k, frame_hz)
    return AssemblyData(counts, membership, frame_hz, "spike_counts", {**sizes, **params})


def calcium(seed: int, n_frames: int | None = None) -> AssemblyData:
    """dF/F of a population with assemblies: spike counts convolved with an exponential
    kernel (decay 0.3-2 s, jittered per cell), per-cell amplitudes, Gaussian noise and a
    slow baseline drift."""
    rng = _generator(seed, "calcium")
    t, n, k, frame_hz, sizes = _draw_sizes(rng, n_frames)
    counts, membership, params = _spikes(rng, t, n, k, frame_hz)
    decay_s = float(_log_uniform(rng, 0.3, 2.0)) * np.exp(0.2 * rng.standard_normal(n))
    keep = np.exp(-1.0 / (frame_hz * decay_s))  # per-frame decay of each cell's indicator
    amplitude = _log_uniform(rng, 0.05, 0.5) * np.exp(0.5 * rng.standard_normal(n))
    noise_sd = _log_uniform(rng, 0.02, 0.3) * np.exp(0.3 * rng.standard_normal(n))
    trace = np.empty_like(counts)
    level = np.zeros(n)
    for frame in range(t):
        level = keep * level + counts[frame]
        trace[frame] = level
    drift_sd = float(rng.uniform(0.0, 0.05))
    drift = np.cumsum(rng.standard_normal((t, n)), axis=0) * drift_sd / np.sqrt(t)
    dff = amplitude * trace + drift + noise_sd * rng.standard_normal((t, n))
    params = {
        **params,
        "decay_s": decay_s,
        "amplitude": amplitude,
        "noise_sd": noise_sd,
        "drift_sd": drift_sd,
    }
    return AssemblyData(dff, membership, frame_hz, "calcium", {**sizes, **params})


FAMILIES: dict[str, Callable[..., AssemblyData]] = {
    "spike_counts": spike_counts,
    "calcium": calcium,
}


# -- scoring -------------------------------------------------------------------------------------
def assign_cells(prototypes: np.ndarray) -> np.ndarray:
    """Each cell's unit: the argmax over units of a (k, n) matrix of per-unit prototypes
    (feedforward weights, cluster centroids, NMF components)."""
    return np.asarray(prototypes).argmax(0)


def channels_owned(prototypes: np.ndarray) -> np.ndarray:
    """(k,) how many channels (cells) each unit owns: is the argmax of `assign_cells` for."""
    prototypes = np.asarray(prototypes)
    return np.bincount(assign_cells(prototypes), minlength=prototypes.shape[0])


def frame_shares(outputs: np.ndarray) -> np.ndarray:
    """(k,) each unit's share of the frames it wins (largest output), among the frames where
    any unit answers (outputs (T, k), nonnegative)."""
    outputs = np.asarray(outputs)
    active = outputs.max(1) > 0
    won = np.bincount(outputs[active].argmax(1), minlength=outputs.shape[1])
    return won / max(int(active.sum()), 1)


def assembly_ari(data: AssemblyData, assignment: np.ndarray) -> float:
    """Adjusted Rand index of the cells' assignment against the truth, on the scored cells."""
    from sklearn.metrics import adjusted_rand_score

    scored = data.scored
    return float(adjusted_rand_score(data.labels[scored], np.asarray(assignment)[scored]))


def offline_assignments(activity: np.ndarray, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The offline baselines' cell assignments (needs scikit-learn), k units each: k-means on
    the frames (each cell to the centroid where it is largest), NMF of the frames (negative
    values clipped to 0; each cell to its largest component) and spectral clustering of the
    cells on their positive correlations."""
    import warnings

    from sklearn.cluster import KMeans, SpectralClustering
    from sklearn.decomposition import NMF

    x = np.asarray(activity, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    kmeans = KMeans(k, n_init=10, random_state=seed).fit(x)
    out["kmeans"] = assign_cells(kmeans.cluster_centers_)
    with warnings.catch_warnings():  # NMF may stop at max_iter; spectral may see islands
        warnings.simplefilter("ignore")
        nmf = NMF(k, init="nndsvda", max_iter=500, random_state=seed).fit(np.clip(x, 0.0, None))
        out["nmf"] = assign_cells(nmf.components_)
        affinity = np.nan_to_num(np.clip(np.corrcoef(x.T), 0.0, None))
        spectral = SpectralClustering(k, affinity="precomputed", random_state=seed)
        out["spectral"] = spectral.fit(affinity).labels_
    return out
