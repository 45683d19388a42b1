"""Similarity matching: Hebbian/anti-Hebbian networks derived from similarity-matching objectives
(Pehlevan, Sengupta and Chklovskii 2018, Neural Computation 30:84).

`SimilarityMatching` is the online principal subspace projection (PSP): output y = M^-1 W x,
feedforward weights learn Hebbian (W <- (1-2η) W + 2η y x^T), lateral weights anti-Hebbian
(M <- (1-η/τ) M + (η/τ) y y^T), with η_t = 1 / (γ t + t0). M^-1 is kept by Sherman-Morrison
rank-one updates (the paper's fast variant, O(nk + k^2) per sample) and re-inverted from M every
`refresh_every` samples: the rank-one recursion amplifies round-off by 1/(1-η/τ) per step, and in
float32 it was measured to drift by 100% within 800 samples without the refresh.
"""

from __future__ import annotations

import numpy as np
import torch

from streamlab.errors import ConfigError
from streamlab.learners.base import Learner

INIT_SCALE = 0.01  # the reference initialises W and M at 1/100 of an orthonormal basis / identity


class SimilarityMatching(Learner):
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
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.gamma = gamma
        self.t0 = t0
        self.tau = tau
        self.eta_min = eta_min
        self.center = center
        self.normalize = normalize
        self.refresh_every = refresh_every
        self._init_common(device, dtype, seed)
        if int(n_components) != n_components or n_components < 1:
            raise ConfigError(f"n_components must be a positive integer, got {n_components!r}")
        if gamma <= 0 or t0 <= 0 or tau <= 0 or eta_min < 0:
            raise ConfigError("gamma, t0 and tau must be positive and eta_min non-negative")
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

    def _eta(self, t: int) -> float:
        return max(1.0 / (self.gamma * t + self.t0), self.eta_min)

    def _prepare(self, x: torch.Tensor, learn: bool) -> torch.Tensor:
        """Centre and scale x with the running statistics (updating them when learning)."""
        xc = self._xc
        if self.center:
            if learn:
                self._mean.add_(x - self._mean, alpha=1.0 / self._steps)
            torch.sub(x, self._mean, out=xc)
        else:
            xc.copy_(x)
        if self.normalize:
            if learn:
                rate = 1.0 / self._steps
                self._mean_sq_norm.mul_(1.0 - rate).add_(xc.square().sum(1), alpha=rate)
            xc.mul_(torch.rsqrt(self._mean_sq_norm + 1e-12).unsqueeze(1))
        return xc

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        xc = self._prepare(x, learn=True)
        y = torch.bmm(self._Minv, torch.bmm(self._W, xc.unsqueeze(2)))  # (B, k, 1)
        eta = self._eta(self._steps)
        a = eta / self.tau
        self._W.baddbmm_(y, xc.unsqueeze(1), beta=1.0 - 2.0 * eta, alpha=2.0 * eta)
        self._M.baddbmm_(y, y.transpose(1, 2), beta=1.0 - a, alpha=a)
        # Sherman-Morrison for M^-1 after M <- (1-a) M + a y y^T
        self._Minv.div_(1.0 - a)
        z = torch.bmm(self._Minv, y)
        c = a / (1.0 + a * (z * y).sum(dim=(1, 2), keepdim=True))
        self._Minv.baddbmm_(z * c, z.transpose(1, 2), alpha=-1.0)
        if self.refresh_every and self._steps % self.refresh_every == 0:
            self._Minv.copy_(torch.linalg.inv_ex(self._M).inverse)
        return y.squeeze(2)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        if self._steps == 0:
            return self._zeros(x.shape[0], self.n_components)
        xc = self._prepare(x, learn=False)
        return torch.bmm(self._Minv, torch.bmm(self._W, xc.unsqueeze(2))).squeeze(2)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "W": self._W,
            "M": self._M,
            "Minv": self._Minv,
            "mean": self._mean,
            "mean_sq_norm": self._mean_sq_norm,
        }

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
