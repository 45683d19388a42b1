"""Similarity matching: Hebbian/anti-Hebbian networks derived from similarity-matching objectives
(Pehlevan, Sengupta and Chklovskii 2018, Neural Computation 30:84).

`SimilarityMatching` is the online principal subspace projection (PSP): output y = M^-1 W x,
feedforward weights learn Hebbian (W <- (1-2η) W + 2η y x^T), lateral weights anti-Hebbian
(M <- (1-η/τ) M + (η/τ) y y^T), with η_t = 1 / (γ t + t0). M^-1 is kept by Sherman-Morrison
rank-one updates (the paper's fast variant, O(nk + k^2) per sample) and re-inverted from M every
`refresh_every` samples: the rank-one recursion amplifies round-off by 1/(1-η/τ) per step, and in
float32 it was measured to drift by 100% within 800 samples without the refresh.

`NonnegativeSimilarityMatching` (rectified outputs: clustering, manifold tiling) and `BioCCA`
(canonical subspace of two views) are the family's other networks; the plasticity rules and the
rectified fixed-point solve they share with PSP live in `streamlab.learners.local_rules`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.base import Learner, StateValue, TargetLearner, require_positive_int
from streamlab.learners.local_rules import (
    bmv,
    hebbian_,
    lateral_rank_one_,
    np_bmv,
    np_lateral_rank_one_,
    rectified_fixed_point,
    rectified_fixed_point_numpy,
    solve_or_nan,
)
from streamlab.learners.worker import StartBeside, for_worker

INIT_SCALE = 0.01  # the reference initialises W and M at 1/100 of an orthonormal basis / identity
SEED_TRIALS = 8  # NSM's k-means++ candidates per row (sklearn: 2 + log k; 8 measured better)
# A burn-in's batch start lands `share` x the burn-in after its end at START_LAG_CHANNELS
# channels and more, and sooner below, in proportion to the start's cost. PSP and Bio-CCA's
# eigendecompositions (cost n^3; share 0.1, so n samples after the default burn-in of 10 n,
# at 1 kHz ample for the n x n eigh: 12 ms idle, up to 190 ms on a loaded 2-core machine at
# n = 384): a later start leaves the network smaller steps after it, measured to cost
# calcium-family seeds up to 0.04 at 6,000 samples, so the lag shrinks as n^2 below 384.
START_LAG, START_LAG_CHANNELS = 0.1, 384
# NSM's k-means++ seeding (cost n): outputs stay zero until it lands, so a late start only
# delays them; measured 8 ms at n = 384, k = 4 and 79 ms at n = 1,024, k = 8 (100 and 200
# sample periods at this share)
NSM_START_LAG = 0.5


def start_lag(n_init: int, channels: int, share: float = START_LAG, power: int = 2) -> int:
    """Samples between the end of a burn-in of `n_init` samples and its start's landing, for a
    start whose cost per channel grows as channels^power (see START_LAG); 0 without one."""
    scale = min(1.0, (channels / START_LAG_CHANNELS) ** power)
    return max(1, int(n_init * share * scale)) if n_init else 0


def signs_like(filters: torch.Tensor, learned: torch.Tensor) -> torch.Tensor:
    """(B, 1, k) signs for a batch start's filters (B, n, k): each that of the filter learned
    so far (B, n, k), so outputs keep their sign across the start, or where that is undecided,
    the one that makes the largest entry positive."""
    agreement = torch.sign((filters * learned).sum(1, keepdim=True))
    peak = torch.sign(filters.gather(1, filters.abs().argmax(1, keepdim=True)))
    return torch.where(agreement != 0, agreement, peak)


def top_eigenpairs(
    moments: np.ndarray, count: int, scale: Sequence[float], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (B, k) and eigenvectors (B, n, k), largest first, of the
    covariances (M + M^T) scale / (2 count) of summed co-moments M (B, n, n), in float64."""
    summed = moments.astype(np.float64)
    cov = (summed + summed.transpose(0, 2, 1)) * (np.asarray(scale) / (2.0 * count))[:, None, None]
    values, vectors = np.linalg.eigh(cov)
    return values[:, ::-1][:, :k], vectors[:, :, ::-1][:, :, :k]


class SimilarityMatching(StartBeside, Learner):
    """Online principal subspace projection by a Hebbian/anti-Hebbian network.

    Parameters
    ----------
    n_components
        Output size k: the dimension of the principal subspace tracked.
    gamma, t0
        Step size η_t = max(1 / (gamma * t + t0), eta_min).
    tau
        Ratio of lateral to feedforward learning rates (lateral rate η/τ); 0.5 as in the paper.
    eta_min
        Floor of the step size; above 0 the network keeps tracking a drifting subspace.
    center
        Subtract a running mean of the input (the model assumes centred data).
    normalize
        Divide by the running root-mean-square norm of the centred input (the reference scales
        data to unit mean norm), which makes the step sizes independent of the units.
    refresh_every
        Recompute M^-1 from M every this many samples (0: never); k^3/refresh_every per sample.
    init_samples
        Burn-in: over the first this many samples (None: 2,000, or 10 n where that is more;
        0: no burn-in) the input's second moments are summed while the network learns as
        usual; at the end W and M are replaced by the fixed point of their batch PCA (F = top-k
        eigenvectors U^T of the covariance C of the centred, scaled input; W = U^T C,
        M = U^T C U), each filter keeping the sign it had learned. From a random start the
        network is a slow power iteration: at low signal-to-noise (k = 1, n = 83, eigenvalue
        ratio about 1.3) it was still at error 0.79 after 6,000 samples, where batch PCA of
        the same samples was at 0.13; and after the start it barely moves along small
        eigengaps, so the start must already resolve them: with a burn-in of 2 n samples two of
        forty seeds of `streamlab.sim.subspaces` (near-equal and decaying spectra) ended 0.14
        above batch PCA at 20,000 samples, with 2,000 both within 0.05. Memory: n^2 per stream.
        The eigendecomposition runs on a worker thread beside the stream, in float64, and its
        result replaces W and M up to a tenth of the burn-in later (`START_LAG`): done in one
        step, the n x n `eigh` held a 384-channel stream for 12-45 ms at its end.
    backend
        How a step is computed, all with the same maths: `"auto"` (NumPy on the CPU, where
        torch's per-op overhead dominates at these sizes, and one replayed CUDA graph per step
        on CUDA), `"torch"` (eager torch ops everywhere) or `"numpy"` (CPU only).
    device, dtype, seed
        Torch device (`"auto"`: CUDA when present), `"float32"` or `"float64"`, and the seed of
        the learner's own random generator (initial weights).

    """

    def __init__(
        self,
        n_components: int = 4,
        gamma: float = 0.6,
        t0: float = 5.0,
        tau: float = 0.5,
        eta_min: float = 0.0,
        center: bool = True,
        normalize: bool = True,
        refresh_every: int = 10,
        init_samples: int | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.init_samples = init_samples
        self.gamma = gamma
        self.t0 = t0
        self.tau = tau
        self.eta_min = eta_min
        self.center = center
        self.normalize = normalize
        self.refresh_every = refresh_every
        self._init_common(device, dtype, seed)
        self._init_backend(backend)
        require_positive_int(n_components, "n_components")
        if gamma <= 0 or t0 <= 0 or tau <= 0 or eta_min < 0:
            raise ConfigError("gamma, t0 and tau must be positive and eta_min non-negative")
        if init_samples is not None and (int(init_samples) != init_samples or init_samples < 0):
            raise ConfigError(f"init_samples must be None or an integer >= 0, got {init_samples!r}")
        if 1.0 / (gamma + t0) / tau >= 1.0 or max(1.0 / (gamma + t0), eta_min) >= 0.5:
            raise ConfigError(
                f"the first step size 1/(gamma + t0) = {1 / (gamma + t0):.3g} is too large for "
                f"tau={tau}: need eta/tau < 1 and eta < 0.5; raise t0 or tau"
            )

    def _allocate(self, n_features: int, batch: int) -> None:
        k = self.n_components
        if k > n_features:
            raise ConfigError(f"n_components={k} exceeds the {n_features} input channels")
        basis = torch.linalg.qr(
            self._randn(batch, n_features, k)
        ).Q  # (B, n, k) orthonormal columns
        self._W = (basis.transpose(1, 2) * INIT_SCALE).contiguous()  # (B, k, n)
        self._M = (
            torch.eye(k, dtype=self._torch_dtype, device=self._device).repeat(batch, 1, 1)
            * INIT_SCALE
        )
        self._Minv = torch.linalg.inv(self._M)
        self._mean = self._zeros(batch, n_features)
        self._mean_sq_norm = self._zeros(batch)
        self._xc = self._zeros(batch, n_features)
        # see init_samples: 2,000 resolves the small eigengaps of streamlab.sim.subspaces
        default = max(2000, 10 * n_features, 10 * k)
        self._n_init = default if self.init_samples is None else int(self.init_samples)
        self._moments = self._zeros(batch, n_features, n_features)  # summed x x^T of the burn-in
        self._arm_start(start_lag(self._n_init, n_features))
        self._start_scale = [1.0] * batch  # the burn-in's input scale, set at its end

    def _end_burn_in(self) -> None:
        """End of the burn-in: its batch PCA goes to the worker thread while the stream goes on.
        The scale (the running mean square norm, by now that of the burn-in's samples) is kept
        with the state, and the moments stay as they are from here, so that a learner restored
        before the start is due computes the same start."""
        if self.normalize:
            self._start_scale = (self._mean_sq_norm + 1e-12).reciprocal().tolist()
        else:
            self._start_scale = [1.0] * self._batch
        self._begin_start()

    def _start_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The batch PCA of the burn-in's moments (see `for_worker`)."""
        moments = for_worker(self._moments)
        return top_eigenpairs, (moments.numpy(), self._n_init, self._start_scale, self.n_components)

    def _finish_start(self) -> None:
        """`_start_lag` samples after the burn-in: W and M set to PSP's fixed point for its
        batch PCA (W = Λ U^T, M = Λ)."""
        values, vectors = self._start_result()
        top = torch.as_tensor(vectors.copy()).to(self._device, self._torch_dtype)  # (B, n, k)
        lam = torch.as_tensor(values.copy()).to(self._device, self._torch_dtype).clamp(min=1e-12)
        top = top * signs_like(top, torch.bmm(self._Minv, self._W).transpose(1, 2))
        self._W.copy_(lam.unsqueeze(2) * top.transpose(1, 2))
        self._M.copy_(torch.diag_embed(lam))
        self._Minv.copy_(torch.diag_embed(lam.reciprocal()))

    def _state_scalars(self) -> dict[str, StateValue]:
        return {"start_scale": list(self._start_scale)}

    def _load_scalars(self, scalars: dict[str, Any]) -> None:
        self._start_scale = [float(v) for v in scalars.get("start_scale", [1.0] * self._batch)]

    def _eta(self, t: int) -> float:
        return max(1.0 / (self.gamma * t + self.t0), self.eta_min)

    def _centred(self, x: torch.Tensor) -> torch.Tensor:
        """x centred and scaled with the running statistics, without updating them."""
        xc = torch.sub(x, self._mean) if self.center else x.clone()
        if self.normalize:
            xc.mul_(torch.rsqrt(self._mean_sq_norm + 1e-12).unsqueeze(1))
        return xc

    def _step_scalars(self) -> tuple[list[float], bool]:
        """This step's host-side numbers (running-average rate 1/t, Hebbian rate 2η, lateral
        rate η/τ) and whether M^-1 is re-inverted now; the step counter is already advanced."""
        t = self._steps
        eta = self._eta(t)
        refresh = bool(self.refresh_every) and t % self.refresh_every == 0
        return [1.0 / t, 2.0 * eta, eta / self.tau], refresh

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        if self._steps > self._n_init:
            if self._steps == self._n_init + self._start_lag:
                self._finish_start()
            return self._psp_step(x)
        before = x - self._mean if self.center else x
        y = self._psp_step(x)
        # Welford's co-moment (x - old mean)(x - new mean)^T: no cancellation against large offsets
        after = x - self._mean if self.center else x
        self._moments.baddbmm_(before.unsqueeze(2), after.unsqueeze(1))
        if self._steps == self._n_init:
            self._end_burn_in()
        return y

    def _psp_step(self, x: torch.Tensor) -> torch.Tensor:
        scalars, refresh = self._step_scalars()
        if self._numpy_step:
            return self._update_numpy(x, scalars, refresh)
        if self._graph_step:
            return self._graphed(
                lambda xs, rates: self._update_tensor(xs, rates, refresh),
                x,
                scalars,
                "refresh" if refresh else "step",
            )
        rates = torch.tensor(scalars, dtype=self._torch_dtype).to(self._device, non_blocking=True)
        return self._update_tensor(x, rates, refresh)

    def _update_tensor(self, x: torch.Tensor, rates: torch.Tensor, refresh: bool) -> torch.Tensor:
        """One PSP step in torch ops with the step's rates as a tensor (1/t, 2η, η/τ), so the
        same ops can be captured once as a CUDA graph and replayed with new rates."""
        mean_rate, hebbian_rate, lateral_rate = rates[0], rates[1], rates[2]
        xc = self._xc
        if self.center:
            self._mean.add_((x - self._mean) * mean_rate)
            torch.sub(x, self._mean, out=xc)
        else:
            xc.copy_(x)
        if self.normalize:
            self._mean_sq_norm.mul_(1.0 - mean_rate).add_(xc.square().sum(1) * mean_rate)
            xc.mul_(torch.rsqrt(self._mean_sq_norm + 1e-12).unsqueeze(1))
        y = torch.bmm(self._Minv, torch.bmm(self._W, xc.unsqueeze(2)))  # (B, k, 1)
        self._W.mul_(1.0 - hebbian_rate).add_(y * xc.unsqueeze(1) * hebbian_rate)
        y = y.squeeze(2)
        lateral_rank_one_(self._M, self._Minv, y, lateral_rate, refresh)
        return y

    def _update_numpy(self, x: torch.Tensor, scalars: list[float], refresh: bool) -> torch.Tensor:
        """The same step as `_update_tensor` in NumPy on views of the same CPU tensors: at the
        sizes of a recording (hundreds of channels, a few components) each op costs about a
        microsecond instead of torch's several."""
        if self._batch == 1:
            return self._update_numpy_one(x, scalars, refresh)
        mean_rate, hebbian_rate, lateral_rate = scalars
        views = self._views()
        W, M, Minv, xc = views["W"], views["M"], views["Minv"], views["xc"]
        xn = x.numpy()
        if self.center:
            mean = views["mean"]
            np.subtract(xn, mean, out=xc)
            xc *= mean_rate
            mean += xc
            np.subtract(xn, mean, out=xc)
        else:
            xc[...] = xn
        if self.normalize:
            msn = views["mean_sq_norm"]
            msn *= 1.0 - mean_rate
            msn += mean_rate * np.einsum("bn,bn->b", xc, xc)
            xc *= (1.0 / np.sqrt(msn + 1e-12))[:, None]
        y = np.matmul(Minv, np.matmul(W, xc[:, :, None]))  # (B, k, 1)
        W *= 1.0 - hebbian_rate
        W += hebbian_rate * (y * xc[:, None, :])
        np_lateral_rank_one_(M, Minv, y, lateral_rate, refresh)
        return torch.from_numpy(y[:, :, 0])

    def _update_numpy_one(
        self, x: torch.Tensor, scalars: list[float], refresh: bool
    ) -> torch.Tensor:
        """`_update_numpy` for a single stream, in vector and matrix ops (half the calls: the
        live closed loop's step). Uses x - mean_new = (1 - 1/t)(x - mean_old)."""
        mean_rate, hebbian_rate, lateral_rate = scalars
        views = self._views()
        W, M, Minv, xc = views["W"][0], views["M"][0], views["Minv"][0], views["xc"][0]
        xn = x.numpy()[0]
        if self.center:
            mean = views["mean"][0]
            np.subtract(xn, mean, out=xc)
            mean += mean_rate * xc
            xc *= 1.0 - mean_rate
        else:
            xc[...] = xn
        if self.normalize:
            msn = views["mean_sq_norm"]
            msn[0] = (1.0 - mean_rate) * float(msn[0]) + mean_rate * float(xc @ xc)
            xc *= 1.0 / math.sqrt(float(msn[0]) + 1e-12)
        y = Minv @ (W @ xc)
        # each rank-one update as one broadcast product (np.outer adds a Python call and ravels)
        W *= 1.0 - hebbian_rate
        W += (hebbian_rate * y)[:, None] * xc
        M *= 1.0 - lateral_rate
        M += (lateral_rate * y)[:, None] * y
        Minv /= 1.0 - lateral_rate
        z = Minv @ y
        Minv -= (lateral_rate / (1.0 + lateral_rate * float(z @ y)) * z)[:, None] * z
        if refresh:
            Minv[...] = solve_or_nan(M, np.eye(M.shape[-1], dtype=M.dtype))
        return torch.from_numpy(y[None])

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self._steps == 0:
            return self._zeros(x.shape[0], self.n_components)
        xc = self._centred(x)
        return torch.bmm(self._Minv, torch.bmm(self._W, xc.unsqueeze(2))).squeeze(2)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "W": self._W,
            "M": self._M,
            "Minv": self._Minv,
            "mean": self._mean,
            "mean_sq_norm": self._mean_sq_norm,
            "moments": self._moments,
        }

    def _numpy_tensors(self) -> dict[str, torch.Tensor]:
        return {**self._state_tensors(), "xc": self._xc}

    @property
    def filters(self) -> torch.Tensor:
        """F = M^-1 W, (B, k, n): the projection the network applies to centred, scaled input."""
        return torch.bmm(self._Minv, self._W)

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "device": "cpu", "seed": 1}


def subspace_error(filters: np.ndarray, basis: np.ndarray) -> float:
    """Normalised projection error ||P_F - P_U||_F^2 / ||P_U||_F^2 between the row space of
    `filters` (k, n) and the column space of `basis` (n, k); 0 when they span the same subspace,
    2 when orthogonal (the measure of the online_psp reference)."""
    q_f, _ = np.linalg.qr(np.asarray(filters, dtype=np.float64).T)
    q_u, _ = np.linalg.qr(np.asarray(basis, dtype=np.float64))
    p_f = q_f @ q_f.T
    p_u = q_u @ q_u.T
    return float(np.linalg.norm(p_f - p_u) ** 2 / np.linalg.norm(p_u) ** 2)


def principal_angles(filters: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between rows of `filters` and columns of `basis`."""
    q_f, _ = np.linalg.qr(np.asarray(filters, dtype=np.float64).T)
    q_u, _ = np.linalg.qr(np.asarray(basis, dtype=np.float64))
    cosines = np.clip(np.linalg.svd(q_f.T @ q_u, compute_uv=False), -1.0, 1.0)
    return np.sort(np.arccos(cosines))


def _positive_number(value: object) -> bool:
    try:
        return float(value) > 0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


class NonnegativeSimilarityMatching(StartBeside, Learner):
    """Nonnegative similarity matching (NSM): a Hebbian/anti-Hebbian network with rectified
    outputs that clusters its input or tiles an input manifold with localized receptive fields
    (Sengupta et al. 2018, NeurIPS; Bahroun et al. for clustering).

    Each sample's output is the fixed point y = max(0, W x - b - L y) of the network dynamics
    (L the off-diagonal lateral weights, M_ii = 1), solved per sample to `tol` (see `solver`).
    Learning then uses per-unit activity-dependent rates: Ŷ_i += y_i^2,
    W_i += (y_i x - y_i^2 W_i) / Ŷ_i (Hebbian), L_ij += (y_i y_j - y_i^2 L_ij) / Ŷ_i
    (anti-Hebbian), and homeostatic thresholds b += threshold_rate (y - target_activity). So W_i
    is the activity-weighted mean of the inputs unit i answers and L_ij the overlap of units i
    and j.

    Which unit a channel belongs to (the cells of an assembly) is read from running statistics
    kept beside the weights: `membership`, each unit's output covariance with each channel over
    its output's standard deviation, and `assignments`, its argmax over units. By the largest
    feedforward weight instead, the zebrafish tectum's assemblies scored ARI 0.49 (k-means 0.70,
    NMF 0.51); by correlation 0.68, the assembly families unchanged or better (median ARI
    spike counts 0.86, calcium 0.57 at full length; benchmarks/nsm_science.py).

    Initialisation is data-driven, because random weights left units sharing a cluster (ARI 1.0
    in only 5 of 9 seeds in the prototype): the first `init_samples` samples of each stream are
    buffered (output zeros meanwhile), the running mean and scale are taken from them, and W's
    rows are set to k of them chosen by greedy k-means++ seeding (deterministic, per stream).

    Parameters
    ----------
    n_components
        Number of output units k (clusters, or tiles of the manifold).
    init_samples
        Samples buffered for the initialisation (None: 50 k); at least k. The seeding runs on
        a worker thread beside the stream and lands up to half as many samples later
        (`NSM_START_LAG`, in proportion to n below 384 channels); outputs are zeros until then.
    activity_init
        Initial cumulative activity Ŷ, the weight of the initial W as a pseudo-count.
    eta_min
        Floor of the per-unit rates 1 / Ŷ_i; above 0 the network keeps tracking drift.
    threshold_rate, target_activity
        Homeostasis: each unit's threshold moves to make its mean output `target_activity`
        (None: 1 / k).
    solver, damping, tol, max_iter
        How the fixed point is found: `"jacobi"` runs the damped projected dynamics
        y <- (1 - d) y + d max(0, W x - b - L y) (d = `damping`); `"active_set"` (default) reaches
        the same fixed point by exact solves on the set of active units, 2-4 per sample where the
        dynamics need 40-200 iterations once receptive fields overlap (ring tiling, measured),
        and finishes with the dynamics if it cycles. A stream stops when its residual
        |y - max(0, W x - b - L y)| is below tol (1 + max y), after at most `max_iter` steps.
        On CUDA all steps run (no host sync: up to 2 x `max_iter` iterations of small kernels
        per step, replayed as one CUDA graph with `backend="auto"`; lower `max_iter` there when
        latency matters); a converged stream is frozen, so the answers are the same on every
        device and for any batch.
    center, normalize
        Subtract the running mean of the input (the similarity x.x' must be negative between
        clusters), and scale it: `"channel"` (or True, the default) divides each channel by its
        running standard deviation times sqrt(n), so every channel weighs the same and a frame's
        mean square norm is 1; `"norm"` divides by the running root-mean-square norm of the
        centred input (the earlier default: a few high-variance channels then make the
        clusters, which left units owning one calcium cell each on the zebrafish tectum);
        False leaves the input as it is.
    restart
        Every `init_samples` steps, a unit that owns fewer than 2 channels (is the largest
        feedforward weight of fewer than 2) restarts on the worst-explained sample since the
        last check (largest |x - W^T y|): its weights become that sample, its activity and
        threshold their initial values. Only with at least 4 k channels (otherwise, as on a
        ring or sphere, the data cannot give every unit two). On the zebrafish tectum this
        turned a unit owning 1 cell into one owning 3 (see tests/test_nsm_generalisation.py).
    backend
        `"auto"` (the learning step in NumPy on the CPU up to 1,024 streams in lockstep, torch
        beyond; replayed as a CUDA graph on CUDA), `"torch"` (eager torch ops everywhere) or
        `"numpy"` (CPU only); the same maths on each.
    device, dtype, seed
        Torch device (`"auto"`: CUDA when present), `"float32"` or `"float64"`, and the seed.

    """

    _numpy_max_batch = 1024  # measured (noisy 2-core VM): NumPy ahead to 64 streams, torch at 4,096

    def __init__(
        self,
        n_components: int = 4,
        init_samples: int | None = None,
        activity_init: float = 1.0,
        eta_min: float = 0.0,
        threshold_rate: float = 0.01,
        target_activity: float | None = None,
        solver: str = "active_set",
        damping: float = 0.5,
        tol: float = 1e-6,
        max_iter: int = 50,
        center: bool = True,
        normalize: bool | str = True,
        restart: bool = True,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.init_samples = init_samples
        self.restart = restart
        self.activity_init = activity_init
        self.eta_min = eta_min
        self.threshold_rate = threshold_rate
        self.target_activity = target_activity
        self.solver = solver
        self.damping = damping
        self.tol = tol
        self.max_iter = max_iter
        self.center = center
        self.normalize = normalize
        self._init_common(device, dtype, seed)
        self._init_backend(backend)
        require_positive_int(n_components, "n_components")
        if init_samples is not None and (
            int(init_samples) != init_samples or init_samples < n_components
        ):
            raise ConfigError(
                f"init_samples must be an integer >= n_components={n_components} (the rows of W "
                f"are chosen among them), got {init_samples!r}"
            )
        if activity_init <= 0 or eta_min < 0 or eta_min >= 1 or threshold_rate < 0:
            raise ConfigError(
                "need activity_init > 0, 0 <= eta_min < 1 and threshold_rate >= 0, got "
                f"{activity_init!r}, {eta_min!r}, {threshold_rate!r}"
            )
        if target_activity is not None and not _positive_number(target_activity):
            raise ConfigError(f"target_activity must be positive, got {target_activity!r}")
        if solver not in ("active_set", "jacobi"):
            raise ConfigError(f"solver must be 'active_set' or 'jacobi', got {solver!r}")
        if normalize not in (True, False, "channel", "norm"):
            raise ConfigError(f"normalize must be 'channel', 'norm' or a bool, got {normalize!r}")
        if not 0 < damping <= 1 or tol <= 0 or int(max_iter) != max_iter or max_iter < 1:
            raise ConfigError(
                f"the solver needs 0 < damping <= 1, tol > 0 and max_iter >= 1, got "
                f"damping={damping!r}, tol={tol!r}, max_iter={max_iter!r}"
            )

    @property
    def _n_init(self) -> int:
        if self.init_samples is not None:
            return int(self.init_samples)
        # 50 k: the seeding and the per-channel scales need each assembly seen several times;
        # 10 k (the earlier default) gave ARI 0.76 / 0.41 on the assembly families, 50 k 0.85 / 0.51
        return 50 * self.n_components

    @property
    def _target(self) -> float:
        if self.target_activity is None:
            return 1 / self.n_components
        return float(self.target_activity)

    def _allocate(self, n_features: int, batch: int) -> None:
        k = self.n_components
        self._W = self._zeros(batch, k, n_features)
        self._L = self._zeros(batch, k, k)
        self._b = self._zeros(batch, k)
        self._Yhat = self._zeros(batch, k).fill_(self.activity_init)
        self._mean = self._zeros(batch, n_features)
        self._sq_scale = self._zeros(batch, n_features)
        self._buffer = self._zeros(batch, self._n_init, n_features)
        self._candidate = self._zeros(batch, n_features)  # worst-explained sample, centred
        self._candidate_error = self._zeros(batch).fill_(-1.0)
        self._offdiag = 1.0 - torch.eye(k, dtype=self._torch_dtype, device=self._device)
        self._arm_start(start_lag(self._n_init, n_features, NSM_START_LAG, power=1))
        # the membership readout's running statistics (see `membership`), per unit
        self._readout_count = self._zeros(batch, k)
        self._out_mean = self._zeros(batch, k)
        self._out_sq = self._zeros(batch, k)
        self._cross = self._zeros(batch, k, n_features)

    def _prepare(self, x: torch.Tensor, rate: float | torch.Tensor | None) -> torch.Tensor:
        """Centre x with the running mean, first moving the mean and the squared scale by
        `rate` (1/t) when learning (None: inference only). Returned unscaled: W is kept in the
        same units, and the scale applied in the drive (see `_solve`)."""
        if self.center:
            if rate is not None:
                self._mean.add_((x - self._mean) * rate)
            xc = x - self._mean
        else:
            xc = x.clone()
        if self.normalize and rate is not None:
            self._sq_scale.mul_(1.0 - rate).add_(self._squares(xc) * rate)
        return xc

    def _squares(self, xc: torch.Tensor) -> torch.Tensor:
        return nsm_squares(xc, self.normalize)

    def _inverse_sq_scale(self) -> torch.Tensor:
        return nsm_inverse_sq_scale(self._sq_scale, self.normalize)

    def _inverse_scale(self) -> torch.Tensor:
        """1 / scale per channel (B, n): what centred input is multiplied by."""
        return self._inverse_sq_scale().sqrt()

    def _start_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The start from the buffer (which nothing writes once it is full), on the CPU."""
        return nsm_start, (for_worker(self._buffer), self.n_components, self.center, self.normalize)

    def _finish_start(self) -> None:
        """`_start_lag` samples after the buffer filled: the running statistics and W's rows
        from `nsm_start`."""
        mean, sq_scale, rows = (t.to(self._device, self._torch_dtype) for t in self._start_result())
        if self.center:
            self._mean.copy_(mean)
        if self.normalize:
            self._sq_scale.copy_(sq_scale)
        self._W.copy_(rows)

    def _solve(self, xc: torch.Tensor) -> torch.Tensor:
        """The fixed point for centred input xc: the drive is (W s) . (xc s) = W . (xc s^2)
        with s the current inverse scale, so W (in the input's units) rescales itself whenever
        the running scale moves, and early samples are not frozen in at early scales."""
        return rectified_fixed_point(
            bmv(self._W, xc * self._inverse_sq_scale()) - self._b,
            self._L,
            solver=self.solver,
            damping=self.damping,
            tol=self.tol,
            max_iter=int(self.max_iter),
            early_exit=self._device.type == "cpu",
        )

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        m = self._n_init
        if self._steps <= m:
            self._buffer[:, self._steps - 1].copy_(x)
            if self._steps == m:
                self._begin_start()  # the seeding runs beside the stream; it lands later
            return self._zeros(x.shape[0], self.n_components)
        if self._steps < m + self._start_lag:
            return self._zeros(x.shape[0], self.n_components)
        if self._steps == m + self._start_lag:
            self._finish_start()
            return self._infer(x)
        rates = (1.0 / self._steps,)
        if self._numpy_step:
            y = self._learn_numpy(x, rates[0])
        elif self._graph_step:  # up to 2 x max_iter solver iterations: one graph, not ~1,000
            y = self._graphed(self._learn, x, rates, "learn")
        else:
            y = self._learn(x, rates)
        if self._restarts_apply(x.shape[1]):
            self._track_worst_explained(x, y)
            if self._steps % m == 0:
                self._restart_degenerate_units()
        return y

    def _restarts_apply(self, n_features: int) -> bool:
        """Restarts run when asked for and when every unit could own two channels twice
        over (n >= 4 k): with fewer channels (a ring, a sphere) owning one is no fault."""
        return bool(self.restart) and n_features >= 4 * self.n_components

    def _track_worst_explained(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Keep, per stream, the sample least explained by W^T y since the last check (torch
        ops, no host sync)."""
        xc = x - self._mean if self.center else x
        scaled = xc * self._inverse_scale()
        error = (scaled - bmv(self.feedforward.transpose(1, 2), y)).square().sum(1)
        worse = error > self._candidate_error
        self._candidate.copy_(torch.where(worse.unsqueeze(1), xc, self._candidate))
        self._candidate_error.copy_(torch.where(worse, error, self._candidate_error))

    def _restart_degenerate_units(self) -> None:
        """Per stream, the unit owning the fewest channels restarts on the worst-explained
        sample if it owns fewer than 2 (one unit per check, so a restarted unit has a full
        period to win its share before it is judged again)."""
        k = self.n_components
        owners = self.feedforward.argmax(1)  # (B, n): each channel's unit
        owned = torch.nn.functional.one_hot(owners, k).sum(1)  # (B, k)
        fewest = owned.argmin(1, keepdim=True)
        restart = torch.zeros_like(self._b, dtype=torch.bool).scatter_(
            1, fewest, owned.gather(1, fewest) < 2
        )
        self._W.copy_(torch.where(restart.unsqueeze(2), self._candidate.unsqueeze(1), self._W))
        self._Yhat.masked_fill_(restart, self.activity_init)
        self._b.masked_fill_(restart, 0.0)
        self._L.masked_fill_(restart.unsqueeze(2) | restart.unsqueeze(1), 0.0)
        self._readout_count.masked_fill_(restart, 0.0)  # its statistics start afresh
        self._candidate_error.fill_(-1.0)

    def _learn(self, x: torch.Tensor, rates: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Past the initial buffer: solve for y, then the local updates, in torch ops; `rates`
        holds 1/t (host floats when eager, a device tensor when replayed as a CUDA graph)."""
        xc = self._prepare(x, rates[0])
        y = self._solve(xc)
        y2 = y.square()
        self._Yhat.add_(y2)
        rate = self._Yhat.reciprocal().clamp_(min=self.eta_min)
        hebbian_(self._W, y, xc, rate, y2)
        hebbian_(self._L, y, y, rate, y2)
        self._L.mul_(self._offdiag)
        self._b.add_(y - self._target, alpha=self.threshold_rate)
        r = self._readout_count.add_(1.0).reciprocal()
        deviation = y - self._out_mean  # Welford: against the mean before this sample
        self._out_mean.add_(deviation * r)
        self._out_sq.add_((y2 - self._out_sq) * r)
        self._cross.add_((deviation.unsqueeze(2) * xc.unsqueeze(1) - self._cross) * r.unsqueeze(2))
        return y

    def _learn_numpy(self, x: torch.Tensor, rate: float) -> torch.Tensor:
        """`_learn` in NumPy on views of the same CPU tensors, op for op (the solve included):
        2.5-4.4x fewer microseconds per step than torch at the demo size (measured)."""
        v = self._views()
        W, L, b, Yhat = v["W"], v["L"], v["b"], v["Yhat"]
        xn = x.numpy()
        if self.center:
            mean = v["mean"]
            mean += (xn - mean) * rate
            xc = xn - mean
        else:
            xc = xn.copy()
        if self.normalize:
            sq = v["sq_scale"]
            sq *= 1.0 - rate
            if self.normalize == "norm":
                sq += (xc * xc).sum(1, keepdims=True) * rate
            else:
                sq += (xc * xc) * (xc.shape[1] * rate)
            floor = 1e-3 * sq.mean(1, keepdims=True) + 1e-12
            drive = np_bmv(W, xc * (1.0 / (sq + floor))) - b
        else:
            drive = np_bmv(W, xc) - b
        y = rectified_fixed_point_numpy(
            drive,
            L,
            solver=self.solver,
            damping=self.damping,
            tol=self.tol,
            max_iter=int(self.max_iter),
        )
        y2 = y * y
        Yhat += y2
        rates = np.maximum(1.0 / Yhat, self.eta_min)[:, :, None]
        decay = y2[:, :, None] * rates
        post = y[:, :, None] * rates
        W -= W * decay
        W += post * xc[:, None, :]
        L -= L * decay
        L += post * y[:, None, :]
        L *= v["offdiag"]
        b += self.threshold_rate * (y - self._target)
        count, out_mean, out_sq, cross = (
            v["readout_count"],
            v["out_mean"],
            v["out_sq"],
            v["cross"],
        )
        count += 1.0
        r = 1.0 / count
        deviation = y - out_mean
        out_mean += deviation * r
        out_sq += (y2 - out_sq) * r
        cross += (deviation[:, :, None] * xc[:, None, :] - cross) * r[:, :, None]
        return torch.from_numpy(y)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self._steps < self._n_init + self._start_lag:
            return self._zeros(x.shape[0], self.n_components)
        return self._solve(self._prepare(x, None))

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "W": self._W,
            "L": self._L,
            "b": self._b,
            "Yhat": self._Yhat,
            "mean": self._mean,
            "sq_scale": self._sq_scale,
            "buffer": self._buffer,
            "candidate": self._candidate,
            "candidate_error": self._candidate_error,
            "readout_count": self._readout_count,
            "out_mean": self._out_mean,
            "out_sq": self._out_sq,
            "cross": self._cross,
        }

    def _numpy_tensors(self) -> dict[str, torch.Tensor]:
        return {**self._state_tensors(), "offdiag": self._offdiag}

    @property
    def feedforward(self) -> torch.Tensor:
        """W s, (B, k, n): row i is the activity-weighted mean input of unit i, centred and
        scaled by the current running scale s (stored unscaled, see `_solve`)."""
        return self._W * self._inverse_scale().unsqueeze(1)

    @property
    def membership(self) -> torch.Tensor:
        """(B, k, n): how strongly each channel belongs to each unit, cov(y_i, x_j) / sd(y_i)
        over the samples since the start (or since unit i's restart), which is the correlation
        of unit i's output with channel j times channel j's standard deviation: its argmax over
        units (`assignments`) is the unit each channel correlates with most."""
        var = (self._out_sq - self._out_mean.square()).clamp_min(0.0)
        return self._cross / (var.sqrt() + torch.finfo(var.dtype).tiny).unsqueeze(2)

    @property
    def assignments(self) -> torch.Tensor:
        """(B, n): each channel's unit, the one whose output it correlates with most."""
        return self.membership.argmax(1)

    @property
    def lateral(self) -> torch.Tensor:
        """M, (B, k, k): unit diagonal, off-diagonal the learned overlaps between units."""
        return self._L + torch.eye(self.n_components, dtype=self._L.dtype, device=self._L.device)

    @property
    def thresholds(self) -> torch.Tensor:
        """b, (B, k): the homeostatic thresholds."""
        return self._b

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "init_samples": 3, "device": "cpu", "seed": 1}


def nsm_squares(xc: torch.Tensor, normalize: bool | str) -> torch.Tensor:
    """What NSM's running squared scale averages, per channel (..., n): n x^2 for `"channel"`
    scaling, the squared norm |x|^2 on every channel for `"norm"`."""
    if normalize == "norm":
        return xc.square().sum(-1, keepdim=True).expand_as(xc)
    return xc.square() * xc.shape[-1]


def nsm_inverse_sq_scale(sq_scale: torch.Tensor, normalize: bool | str) -> torch.Tensor:
    """1 / scale^2 per channel (B, n) (ones without `normalize`). A channel's squared scale is
    floored at 1e-3 of the channels' mean, so a channel silent so far cannot blow up its first
    event."""
    if not normalize:
        return torch.ones_like(sq_scale)
    floor = 1e-3 * sq_scale.mean(1, keepdim=True) + 1e-12
    return (sq_scale + floor).reciprocal()


def nsm_start(
    buffer: torch.Tensor, k: int, center: bool, normalize: bool | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NSM's start from its buffer (B, m, n): the running mean and squared scale of the
    buffered samples, and W's k rows (B, k, n) chosen among them by greedy k-means++
    (`seed_rows`) in the scaled space the network works in."""
    mean = buffer.mean(1)
    raw = buffer - mean.unsqueeze(1) if center else buffer.clone()
    sq_scale = nsm_squares(raw, normalize).mean(1)
    inverse_scale = nsm_inverse_sq_scale(sq_scale, normalize).sqrt()
    return mean, sq_scale, seed_rows(raw, raw * inverse_scale.unsqueeze(1), k)


def seed_rows(raw: torch.Tensor, scaled: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy k-means++ on the buffer (B, m, n), deterministic: each row of W is, among
    SEED_TRIALS candidates at evenly spaced quantiles of the D^2 distribution (D the
    distance to the nearest row chosen so far; the mean before the first), the one that
    lowers the sum of D^2 most. Replaces farthest-point selection, which picked single
    outlying frames (one cell's large transient) as units: full-length assembly families,
    ARI median 0.76 -> 0.85 (counts), 0.41 -> 0.51 (calcium)."""
    batch, m, n = scaled.shape
    rows = raw.new_zeros(batch, k, n)
    quantiles = (torch.arange(SEED_TRIALS, dtype=raw.dtype, device=raw.device) + 0.5) / (
        SEED_TRIALS
    )
    quantiles = quantiles.expand(batch, SEED_TRIALS).contiguous()
    nearest = scaled.square().sum(2)  # (B, m)
    for unit in range(k):
        cdf = nearest.cumsum(1)
        cdf = cdf / cdf[:, -1:].clamp_min(torch.finfo(cdf.dtype).tiny)
        candidates = torch.searchsorted(cdf, quantiles).clamp_(max=m - 1)  # (B, T)
        picked = scaled.gather(1, candidates.unsqueeze(2).expand(-1, -1, n))  # (B, T, n)
        distance = (scaled.unsqueeze(1) - picked.unsqueeze(2)).square().sum(3)  # (B, T, m)
        potential = torch.minimum(nearest.unsqueeze(1), distance)
        best = potential.sum(2).argmin(1, keepdim=True)  # (B, 1)
        index = candidates.gather(1, best)
        rows[:, unit].copy_(raw.gather(1, index.unsqueeze(2).expand(-1, 1, n)).squeeze(1))
        nearest = potential.gather(1, best.unsqueeze(2).expand(-1, 1, m)).squeeze(1)
    return rows


def _ridge_inverse_sqrt(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C + r I)^-1/2 for a batch of covariances (B, n, n), with r a tenth of the mean
    eigenvalue (a burn-in of a few n samples leaves C poorly conditioned; the ridge keeps the
    whitening from amplifying its noise directions), and whether each C had any variance."""
    n = cov.shape[-1]
    trace = cov.diagonal(dim1=1, dim2=2).sum(1)
    ridge = 0.1 * trace / n
    eye = torch.eye(n, dtype=cov.dtype, device=cov.device)
    values, vectors = torch.linalg.eigh(cov + ridge.view(-1, 1, 1) * eye)
    scale = values.clamp(min=torch.finfo(cov.dtype).tiny).rsqrt()
    return (vectors * scale.unsqueeze(1)) @ vectors.transpose(1, 2), trace > 0


def batch_cca(
    moments: torch.Tensor, count: int, n: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ridge-regularised batch CCA, in float64, from summed co-moments (B, n + q, n + q) of
    `count` samples (blocks x x^T, x y^T, y y^T; the lower left one unused): the top k
    canonical filter pairs Vx (B, n, k) and Vy (B, q, k), each scaled by 1/sqrt(2) as at Bio-CCA's
    fixed point, their correlations (B, k), and whether both views had variance (B,)."""
    cov = moments.to(torch.float64) / count
    cxx, cyy, cxy = cov[:, :n, :n], cov[:, n:, n:], cov[:, :n, n:]
    cxx, cyy = (cxx + cxx.transpose(1, 2)) / 2, (cyy + cyy.transpose(1, 2)) / 2
    wx, okx = _ridge_inverse_sqrt(cxx)
    wy, oky = _ridge_inverse_sqrt(cyy)
    u, rho, vh = torch.linalg.svd(wx @ cxy @ wy)
    vx = wx @ u[:, :, :k] / math.sqrt(2.0)
    vy = wy @ vh.transpose(1, 2)[:, :, :k] / math.sqrt(2.0)
    ok = okx & oky & torch.isfinite(vx).all((1, 2)) & torch.isfinite(vy).all((1, 2))
    return vx, vy, rho[:, :k], ok


class BioCCA(StartBeside, TargetLearner):
    """Bio-CCA (Lipshutz, Bahroun, Golkar, Sengupta and Chklovskii, Neural Computation 2021): the
    k-dimensional canonical subspace shared by two views, x (input) and y (the second view given
    to `step(x, y)`, e.g. neurons and behaviour), by a network of two-compartment neurons.

    Dendritic currents a = Wx x and b = Wy y; output z = M^-1 (a + b), returned by `step`. The
    feedforward rules are non-Hebbian, Wx += 2η (z - a) x^T and Wy += 2η (z - b) y^T, the lateral
    one anti-Hebbian, M += (η/τ) (z z^T - M) (M^-1 kept by Sherman-Morrison, the same rule as the
    principal-subspace network), with η_t = eta / (1 + eta_decay t). The canonical filters are
    Vx = Wx^T M^-1 and Vy = Wy^T M^-1. Without y a step only infers, z = M^-1 Wx x (the x view's
    part), and `infer(x)` returns that part too.

    Parameters
    ----------
    n_components
        Output size k: the number of canonical pairs tracked.
    eta, eta_decay
        Step size η_t = eta / (1 + eta_decay t): eta 1e-3 as in the reference; eta_decay 5e-4
        (the reference's 1e-4 kept the steps large enough after the burn-in to drift away
        from its batch start: with 2,000 samples of burn-in, worst seed of ten 0.083 above
        batch CCA at 20,000 samples with 1e-3, 0.071 with 5e-4, 0.28 with 1e-4).
    tau
        Ratio of feedforward to lateral rate (lateral rate η/τ); 0.1 as in the reference.
    center
        Subtract running means of both views (CCA is defined on centred data).
    refresh_every
        Re-invert M every this many samples (0: never), as for `SimilarityMatching`.
    init_samples
        Burn-in: over the first this many samples with y (None: 2,000, or 10 (n + q) where that
        is more; 0: none) the views' moments are summed while the network learns as usual; at
        the end Wx, Wy and M are set to the network's fixed point for a ridge-regularised
        batch CCA of those samples (Vx = Cxx^-1/2 U / sqrt 2, Vy likewise, M = I + diag(rho),
        Wx = M Vx^T, Wy = M Vy^T). From random weights the gradient steps are slow along each
        view's low-variance directions, and a burn-in too short to resolve weak canonical
        correlations (0.3-0.4) starts them in the wrong subspace: on ten seeds of
        `streamlab.sim.subspaces.two_views` (42-228 channels in all) a burn-in of 2 (n + q)
        samples ended within 0.1 of batch CCA's subspace error on 6 seeds at 20,000 samples,
        one of 2,000 on all 10 from 3,000 samples on (1,000: 8). Memory: (n + q)^2 per stream.
        The batch CCA runs on a worker thread beside the stream, in float64, and lands up to a
        tenth of the burn-in later (`start_lag`, as the principal subspace network's start).
    backend
        `"auto"` (NumPy learning steps on the CPU up to 1,024 streams in lockstep, torch beyond;
        replayed as CUDA graphs on CUDA), `"torch"` (eager torch ops everywhere) or `"numpy"`
        (CPU only); the same maths on each.
    device, dtype, seed
        Torch device (`"auto"`: CUDA when present), `"float32"` or `"float64"`, and the seed of
        the initial weights (Wx, Wy ~ N(0, 1/n), M = I as in the reference).

    """

    _numpy_max_batch = (
        1024  # measured (noisy 2-core VM): NumPy ahead to 512 streams, torch at 4,096
    )

    def __init__(
        self,
        n_components: int = 2,
        eta: float = 1e-3,
        eta_decay: float = 5e-4,
        tau: float = 0.1,
        center: bool = True,
        refresh_every: int = 10,
        init_samples: int | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.init_samples = init_samples
        self.eta = eta
        self.eta_decay = eta_decay
        self.tau = tau
        self.center = center
        self.refresh_every = refresh_every
        self._init_common(device, dtype, seed)
        self._init_backend(backend)
        self._n_targets: int | None = None
        require_positive_int(n_components, "n_components")
        if eta <= 0 or eta_decay < 0 or tau <= 0:
            raise ConfigError(
                f"need eta > 0, eta_decay >= 0 and tau > 0, got {eta!r}, {eta_decay!r}, {tau!r}"
            )
        if eta / tau >= 1.0 or eta >= 0.5:
            raise ConfigError(
                f"the lateral step eta/tau = {eta / tau:.3g} must be below 1 (and eta below 0.5); "
                "lower eta or raise tau"
            )
        if int(refresh_every) != refresh_every or refresh_every < 0:
            raise ConfigError(
                f"refresh_every must be a non-negative integer, got {refresh_every!r}"
            )
        if init_samples is not None and (int(init_samples) != init_samples or init_samples < 0):
            raise ConfigError(f"init_samples must be None or an integer >= 0, got {init_samples!r}")

    def _allocate(self, n_features: int, batch: int) -> None:
        k = self.n_components
        if k > n_features:
            raise ConfigError(f"n_components={k} exceeds the {n_features} channels of x")
        self._n_init = 0
        # burn-in: summed x x^T, x y^T and y y^T, as the blocks of one (n + q)^2 matrix
        self._moments: torch.Tensor | None = None
        self._Wx = self._randn(batch, k, n_features) / n_features**0.5
        self._M = torch.eye(k, dtype=self._torch_dtype, device=self._device).repeat(batch, 1, 1)
        self._Minv = self._M.clone()
        self._mean_x = self._zeros(batch, n_features)
        self._learned = 0
        self._Wy: torch.Tensor | None = None
        self._mean_y: torch.Tensor | None = None
        if self._pending is not None:
            self._allocate_targets(self._pending.shape[1])
        elif self._n_targets is not None:
            self._allocate_targets(self._n_targets)

    def _allocate_targets(self, q: int) -> None:
        k, batch = self.n_components, self._batch
        if k > q:
            raise ConfigError(f"n_components={k} exceeds the {q} channels of the second view y")
        self._n_targets = q
        self._Wy = self._randn(batch, k, q) / q**0.5
        self._mean_y = self._zeros(batch, q)
        n = self._Wx.shape[2]
        # see init_samples: 2,000 resolves canonical correlations down to 0.3 on two_views
        m = max(2000, 10 * (n + q)) if self.init_samples is None else int(self.init_samples)
        self._n_init = m
        self._moments = self._zeros(batch, n + q, n + q)
        self._arm_start(start_lag(m, n + q))
        self._numpy_views = None  # the second view's tensors are new

    def _start_job(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The batch CCA of the burn-in's moments (which nothing writes after it), on the CPU."""
        assert self._moments is not None
        return batch_cca, (
            for_worker(self._moments),
            self._n_init,
            self._Wx.shape[2],
            self.n_components,
        )

    def _finish_start(self) -> None:
        """`_start_lag` samples after the burn-in: Wx, Wy and M set to the network's fixed
        point for the ridge-regularised batch CCA of its samples (`batch_cca`). A stream whose
        view has no variance keeps its weights."""
        assert self._Wy is not None
        vx, vy, rho, ok = (t.to(self._device, self._torch_dtype) for t in self._start_result())
        sign = signs_like(vx, torch.bmm(self._Wx.transpose(1, 2), self._Minv))
        vx, vy = vx * sign, vy * sign
        lam = 1.0 + rho  # M = I + diag(rho) at the fixed point
        ok = ok.bool().view(-1, 1, 1)
        self._Wx.copy_(torch.where(ok, lam.unsqueeze(2) * vx.transpose(1, 2), self._Wx))
        self._Wy.copy_(torch.where(ok, lam.unsqueeze(2) * vy.transpose(1, 2), self._Wy))
        self._M.copy_(torch.where(ok, torch.diag_embed(lam), self._M))
        self._Minv.copy_(torch.where(ok, torch.diag_embed(lam.reciprocal()), self._Minv))

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        y = self._pending
        if y is None:
            return self._infer(x)
        if self._Wy is None:
            self._allocate_targets(y.shape[1])
        if y.shape[1] != self._n_targets:
            raise InputShapeError(
                f"BioCCA was built for a second view y of {self._n_targets} channels, got "
                f"{y.shape[1]}; use a fresh learner for a differently shaped view"
            )
        self._learned += 1
        t = self._learned
        if t > self._n_init:
            if t == self._n_init + self._start_lag:
                self._finish_start()
            return self._learn_step(x, y, t)
        assert self._moments is not None and self._mean_y is not None
        before = (x - self._mean_x, y - self._mean_y) if self.center else (x, y)
        z = self._learn_step(x, y, t)
        # Welford's co-moments (old-mean deviations times new-mean ones), in place block by
        # block (y x^T, never read, stays 0): no cancellation against large offsets
        ax, ay = (x - self._mean_x, y - self._mean_y) if self.center else (x, y)
        bx, by = before[0].unsqueeze(2), before[1].unsqueeze(2)
        n = x.shape[1]
        self._moments[:, :n, :n].baddbmm_(bx, ax.unsqueeze(1))
        self._moments[:, :n, n:].baddbmm_(bx, ay.unsqueeze(1))
        self._moments[:, n:, n:].baddbmm_(by, ay.unsqueeze(1))
        if t == self._n_init:
            self._begin_start()  # the batch CCA runs beside the stream; it lands later
        return z

    def _learn_step(self, x: torch.Tensor, y: torch.Tensor, t: int) -> torch.Tensor:
        """The learning step on both views (the t-th sample with y), on the chosen backend."""
        eta = self.eta / (1.0 + self.eta_decay * (t - 1))
        rates = (1.0 / t, 2.0 * eta, eta / self.tau)
        refresh = bool(self.refresh_every) and t % self.refresh_every == 0
        if self._numpy_step:
            return self._learn_numpy(x, y, rates, refresh)
        if self._graph_step:  # one static input buffer per graph: both views side by side
            n = x.shape[1]
            return self._graphed(
                lambda v, r: self._learn(v[:, :n], v[:, n:], r, refresh),
                torch.cat([x, y], dim=1),
                rates,
                "refresh" if refresh else "learn",
            )
        return self._learn(x, y, rates, refresh)

    def _learn(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        rates: Sequence[float] | torch.Tensor,
        refresh: bool,
    ) -> torch.Tensor:
        """One learning step on both views in torch ops; `rates` holds (1/t, 2η, η/τ) (host
        floats when eager, a device tensor when replayed as a CUDA graph)."""
        mean_rate, hebbian_rate, lateral_rate = rates[0], rates[1], rates[2]
        xc, yc = x, y
        if self.center:
            self._mean_x.add_((x - self._mean_x) * mean_rate)
            self._mean_y.add_((y - self._mean_y) * mean_rate)
            xc, yc = x - self._mean_x, y - self._mean_y
        a = bmv(self._Wx, xc)
        b = bmv(self._Wy, yc)
        z = bmv(self._Minv, a + b)
        self._Wx.add_((z - a).unsqueeze(2) * xc.unsqueeze(1) * hebbian_rate)
        self._Wy.add_((z - b).unsqueeze(2) * yc.unsqueeze(1) * hebbian_rate)
        lateral_rank_one_(self._M, self._Minv, z, lateral_rate, refresh)
        return z

    def _learn_numpy(
        self, x: torch.Tensor, y: torch.Tensor, rates: tuple[float, float, float], refresh: bool
    ) -> torch.Tensor:
        """`_learn` in NumPy on views of the same CPU tensors, op for op."""
        mean_rate, hebbian_rate, lateral_rate = rates
        v = self._views()
        Wx, Wy = v["Wx"], v["Wy"]
        xc, yc = x.numpy(), y.numpy()
        if self.center:
            mean_x, mean_y = v["mean_x"], v["mean_y"]
            mean_x += (xc - mean_x) * mean_rate
            mean_y += (yc - mean_y) * mean_rate
            xc, yc = xc - mean_x, yc - mean_y
        a = np_bmv(Wx, xc)
        b = np_bmv(Wy, yc)
        z = np_bmv(v["Minv"], a + b)
        Wx += (z - a)[:, :, None] * xc[:, None, :] * hebbian_rate
        Wy += (z - b)[:, :, None] * yc[:, None, :] * hebbian_rate
        np_lateral_rank_one_(v["M"], v["Minv"], z[:, :, None], lateral_rate, refresh)
        return torch.from_numpy(z)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        xc = x - self._mean_x if self.center else x
        return bmv(self._Minv, bmv(self._Wx, xc))

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"Wx": self._Wx, "M": self._M, "Minv": self._Minv, "mean_x": self._mean_x}
        if self._Wy is not None and self._mean_y is not None:
            tensors.update(Wy=self._Wy, mean_y=self._mean_y)
        if self._moments is not None:
            tensors.update(moments=self._moments)
        return tensors

    def _state_scalars(self) -> dict[str, StateValue]:
        q = -1 if self._Wy is None else int(self._n_targets or 0)
        return {"_n_targets": q, "_learned": int(self._learned)}

    def _load_scalars(self, scalars: dict[str, Any]) -> None:
        self._learned = int(scalars["_learned"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; the second view's size comes from the state."""
        if state:
            q = int(state["_n_targets"])
            self._n_targets = None if q < 0 else q
        super().load_state_dict(state)

    def learn_one(self, x: dict[Any, Any], y: dict[Any, Any] | None = None) -> None:
        """river's surface: one step on a dict sample x with the second view y as a dict (its
        channels ordered by sorted name); without y the step only infers."""
        view = None
        if y is not None:
            names = sorted(y, key=str)
            view = torch.tensor([float(y[name]) for name in names], dtype=self._torch_dtype)
        self.step(self._dict_to_tensor(x), view)

    @property
    def filters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Vx (B, n, k), Vy (B, q, k)): z = Vx^T x + Vy^T y on centred views."""
        if self._Wy is None:
            raise InputShapeError("BioCCA has no filters before its first sample with y")
        return (
            torch.bmm(self._Wx.transpose(1, 2), self._Minv),
            torch.bmm(self._Wy.transpose(1, 2), self._Minv),
        )

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "device": "cpu", "seed": 1}
