"""Online ridge decoder: the offline baseline that beat every learner on simulated populations
(ridge regression on lagged square-root counts), learned sample by sample, so a live stream can
decode with it and keep adapting whenever labels arrive."""

from __future__ import annotations

from typing import Any

import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.base import TargetLearner, require_positive_int
from streamlab.learners.local_rules import bmv, rls_step_, running_sd, signed_sqrt, welford_


class OnlineRidgeDecoder(TargetLearner):
    """A linear decoder of y (q values) from the last `lags` samples of x, learned online by
    recursive least squares: ridge regression computed one sample at a time.

    Per sample: x's signed square root is standardised by its running mean and deviation over
    the stream (unlabelled samples included: no label is needed for that), the last `lags`
    standardised samples and a 1 form the features φ (lags·n + 1), the output is the decode
    W φ, in the targets' units (targets are standardised by their running mean and deviation
    over the labelled samples, so the penalty means the same whatever their units). With a
    label, one RLS step: k = P φ / (λ + φᵀ P φ), W += (ỹ - W φ) kᵀ, P = (P - k φᵀ P) / λ, with
    P(0) = I / penalty. A NaN row of y (or none) predicts only.

    Cost per sample O((lags·n)²) in time and memory (P is (lags·n + 1)² per stream): fine for
    behavioural bins of tens of ms on hundreds of channels; for kHz streams of many channels,
    bin first or use fewer lags.

    Parameters
    ----------
    n_components
        Size q of the decoded variable.
    lags
        Samples of history in the features (1: the current sample only). Default 5: with
        bins of 50-250 ms it spans the 0-150 ms leads and lags of neurons on movement, and on
        the simulated families it matched the cross-validated offline choice (1-8).
    penalty
        Ridge penalty (P(0) = I / penalty) on standardised features and targets. Default 1000:
        the best of 30-1,000 on every simulated family with about 2,000 calibration samples
        (offline ridge on the same features, benchmarks/decoding_science.py).
    forgetting
        RLS forgetting factor λ in (0, 1]: memory about 1 / (1 - λ) labelled samples. Default
        1 (every label kept); lower it when labels keep coming and the tuning drifts.
    device, dtype, seed
        As for every learner; the decoder is deterministic. Default dtype float64 (least
        squares in float32 lose precision over thousands of samples).
    """

    def __init__(
        self,
        n_components: int = 2,
        lags: int = 5,
        penalty: float = 1000.0,
        forgetting: float = 1.0,
        device: str = "auto",
        dtype: str = "float64",
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.lags = lags
        self.penalty = penalty
        self.forgetting = forgetting
        self._init_common(device, dtype, seed)
        require_positive_int(n_components, "n_components")
        require_positive_int(lags, "lags")
        if isinstance(penalty, bool) or not (isinstance(penalty, int | float) and penalty > 0):
            raise ConfigError(f"penalty must be a number > 0, got {penalty!r}")
        if not (isinstance(forgetting, int | float) and 0 < forgetting <= 1):
            raise ConfigError(f"forgetting must be in (0, 1], got {forgetting!r}")

    def _allocate(self, n_features: int, batch: int) -> None:
        q, size = int(self.n_components), int(self.lags) * n_features + 1
        self._in_mean = self._zeros(batch, n_features)
        self._in_m2 = self._zeros(batch, n_features)
        self._in_count = self._zeros(batch, 1)
        self._phi = self._zeros(batch, size)  # the lagged samples, newest first, then 1
        self._phi[:, -1] = 1.0
        self._W = self._zeros(batch, q, size)
        eye = torch.eye(size, dtype=self._torch_dtype, device=self._device)
        self._P = (eye / float(self.penalty)).repeat(batch, 1, 1)
        self._y_mean = self._zeros(batch, q)
        self._y_m2 = self._zeros(batch, q)
        self._y_count = self._zeros(batch, q)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "in_mean": self._in_mean,
            "in_m2": self._in_m2,
            "in_count": self._in_count,
            "phi": self._phi,
            "W": self._W,
            "P": self._P,
            "y_mean": self._y_mean,
            "y_m2": self._y_m2,
            "y_count": self._y_count,
        }

    @property
    def _history(self) -> torch.Tensor:
        """The lagged standardised samples (B, lags, n), newest first: a view into φ."""
        return self._phi[:, :-1].view(self._batch, int(self.lags), -1)

    def _features(self, x: torch.Tensor, learn: bool) -> torch.Tensor:
        """φ for sample x: the standardised sample and the `lags - 1` before it, and a 1; with
        `learn` the running input statistics advance and the lags shift along in place."""
        root = signed_sqrt(x)
        if not learn:
            history = torch.cat([self._standardise(root).unsqueeze(1), self._history[:, :-1]], 1)
            return torch.cat([history.flatten(1), self._phi[:, -1:]], 1)
        welford_(self._in_mean, self._in_m2, self._in_count, root)
        history = self._history
        for lag in range(int(self.lags) - 1, 0, -1):  # oldest first: nothing is overwritten early
            history[:, lag].copy_(history[:, lag - 1])
        history[:, 0].copy_(self._standardise(root))
        return self._phi

    def _standardise(self, root: torch.Tensor) -> torch.Tensor:
        return (root - self._in_mean) / running_sd(self._in_m2, self._in_count)

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        y = self._pending
        q = int(self.n_components)
        if y is not None and y.shape[1] != q:
            raise InputShapeError(
                f"OnlineRidgeDecoder decodes {q} components but y has {y.shape[1]} per stream"
            )
        self._steps += 1
        phi = self._features(x, learn=True)
        decoded = self._decode(phi)
        if y is not None:
            self._learn(phi, y)
        return decoded

    def _decode(self, phi: torch.Tensor) -> torch.Tensor:
        """The regression's decode of features `phi`, in the targets' units."""
        return bmv(self._W, phi) * running_sd(self._y_m2, self._y_count) + self._y_mean

    def _learn(self, phi: torch.Tensor, y: torch.Tensor) -> None:
        """One masked RLS step on the standardised target (rows with a NaN: no step)."""
        finite = torch.isfinite(y)
        mask = finite.all(1, keepdim=True).to(y.dtype)
        target = torch.where(finite, y, 0.0)
        welford_(self._y_mean, self._y_m2, self._y_count, target, mask)
        standardised = (target - self._y_mean) / running_sd(self._y_m2, self._y_count)
        rls_step_(self._W, self._P, phi, standardised, mask[:, 0], float(self.forgetting))

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        return self._decode(self._features(x, learn=False))

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"n_components": 2, "lags": 2, "device": "cpu"}
