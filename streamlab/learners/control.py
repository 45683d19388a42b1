"""Neural Kalman control: Kalman filtering with given or learned models, and Bio-OFC.

`KalmanFilter` is the classical filter with known A, C, Q, R, the optimal reference the learners
are measured against. `AdaptiveKalmanDecoder` reads a behavioural variable (e.g. 2-D velocity)
out of neural counts with a Kalman filter whose observation model (and, unless given, dynamics)
is learned online by recursive least squares with forgetting, the drift model that keeps it
tracking non-stationary recordings. `BioOFC` (Friedrich, Golkar, Farashahi et al., NeurIPS 2021)
learns a model of the plant with local plasticity from delayed observations, filters with it,
and learns its control gain by policy gradient.

All three update the filter in information form: with J = C^T R^-1 C and h = C^T R^-1 (x - d),
the posterior is P = (I + P^- J)^-1 P^- and mean m = m^- + P (h - J m^-). One k x k solve per
sample and O(n k^2) for J, whatever the channel count n, and no n x n matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.base import Learner, StateValue, TargetLearner, require_positive_int
from streamlab.learners.local_rules import (
    bmv,
    np_bmv,
    np_lerp,
    np_outer,
    outer,
    rls_step_,
    solve_or_nan,
)
from streamlab.learners.ridge import OnlineRidgeDecoder

Matrix = tuple[tuple[float, ...], ...] | list[list[float]]
# the adaptive decoder's initial RLS covariances of its dynamics A and its gain K: large, so the
# first labelled samples dominate (the labels' scale is unknown until they come)
DYNAMICS_PRIOR = 100.0
# Bio-OFC's episode-start estimate solves (C^T C + r I) x = C^T y with r this fraction of C^T C's
# mean diagonal: a learned C near singularity (condition number 160 was seen) made the plain
# least-squares estimate blow up and the controller NaN for good; 1e-3 caps the condition
# number near 1,000 and changes a well-conditioned estimate by about 0.1 %
INITIAL_ESTIMATE_RIDGE = 1e-3

# The authors' tuned rates for the double-integrator task, by delay: (η for A, B, C, L; η_K).
BIO_OFC_RATES = {1: (1e-2, 8.7e-6), 2: (5.5e-3, 8.0e-6), 3: (7.0e-3, 6.1e-6)}


def _symmetric(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.transpose(1, 2))


def _information_update(
    prior_mean: torch.Tensor, prior_cov: torch.Tensor, J: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, covariance) from the prior and the observation's information J, h."""
    k = prior_cov.shape[-1]
    eye = torch.eye(k, dtype=prior_cov.dtype, device=prior_cov.device)
    # solve_ex: no error check, so no device-to-host sync on CUDA
    cov = _symmetric(torch.linalg.solve_ex(eye + torch.bmm(prior_cov, J), prior_cov).result)
    mean = prior_mean + bmv(cov, h - bmv(J, prior_mean))
    return mean, cov


def _as_matrix(value: Any, name: str) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be a matrix of numbers (nested lists), got {value!r}"
        ) from exc
    if array.ndim == 0:
        array = array.reshape(1, 1)
    if array.ndim != 2 or array.size == 0 or not np.all(np.isfinite(array)):
        raise ConfigError(f"{name} must be a finite 2-D matrix (nested lists), got {value!r}")
    return array


# -- the known-parameter reference ---------------------------------------------------------------
class KalmanFilter(Learner):
    """The Kalman filter with known model z_t = A z_{t-1} + w_t (w ~ N(0, Q)), x_t = C z_t + d +
    v_t (v ~ N(0, R)): the optimal estimate of a linear-Gaussian latent, the reference for the
    learners. `step(x)` predicts then updates on observation x and returns the posterior mean.

    Parameters
    ----------
    A, C, Q, R
        The model, as nested lists or tuples of floats (k x k, n x k, k x k, n x n). Q and R may
        also be a number (times the identity). Required: no default model fits every stream.
    d
        Observation offset (n numbers, e.g. baseline firing rates); zeros when None.
    x0, P0
        Prior mean (k numbers) and covariance (k x k, or a number) of the state before the first
        sample; zeros and the identity when None.
    backend
        `"auto"` (NumPy on the CPU, torch on CUDA), `"torch"` or `"numpy"`: the same update.
    device, dtype, seed
        Torch device (`"auto"`: CUDA when present), `"float32"` or `"float64"`, and the seed
        (unused: the filter is deterministic).

    The output size `n_components` is k, the rows of A. The update runs in information form:
    with C^T R^-1 C and C^T R^-1 fixed, a sample costs O(n k) plus one k x k solve.
    """

    def __init__(
        self,
        A: Matrix | None = None,
        C: Matrix | None = None,
        Q: Matrix | float | None = None,
        R: Matrix | float | None = None,
        x0: tuple[float, ...] | None = None,
        P0: Matrix | float | None = None,
        d: tuple[float, ...] | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.A = A
        self.C = C
        self.Q = Q
        self.R = R
        self.d = d
        self.x0 = x0
        self.P0 = P0
        self._init_common(device, dtype, seed)
        self._init_backend(backend)
        if A is None or C is None:
            raise ConfigError(
                "KalmanFilter needs the model: A (k x k) and C (n x k) as nested lists, with Q "
                "and R (default identity); build it in Python, e.g. from a simulator's truth"
            )
        a, c = _as_matrix(A, "A"), _as_matrix(C, "C")
        k, n = a.shape[0], c.shape[0]
        if a.shape != (k, k) or c.shape[1] != k:
            raise ConfigError(f"A must be k x k and C n x k, got {a.shape} and {c.shape}")
        q = self._covariance(Q, k, "Q")
        r = self._covariance(R, n, "R")
        p0 = self._covariance(P0, k, "P0")
        m0 = np.zeros(k) if x0 is None else np.asarray(x0, dtype=np.float64).reshape(-1)
        if m0.shape != (k,):
            raise ConfigError(f"x0 must have {k} entries, got {x0!r}")
        offset = np.zeros(n) if d is None else np.asarray(d, dtype=np.float64).reshape(-1)
        if offset.shape != (n,):
            raise ConfigError(f"d must have {n} entries (one per row of C), got {d!r}")
        self.n_components = k
        self._model = {"A": a, "C": c, "Q": q, "R": r, "P0": p0, "x0": m0, "d": offset}

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        z: np.ndarray,
        noise_floor: float = 1e-3,
        **params: Any,
    ) -> KalmanFilter:
        """The classical Kalman decoder of z from x fitted offline by least squares: C, d by
        regressing x (T, n) on [z, 1] (z (T, k)), diagonal R from the residual variances
        (floored), A by regressing z_t on z_{t-1} and Q from its residuals. `params` go to the
        constructor (device, dtype)."""
        x, z = np.asarray(x, dtype=np.float64), np.asarray(z, dtype=np.float64)
        if x.ndim != 2 or z.ndim != 2 or len(x) != len(z) or len(x) < z.shape[1] + 2:
            raise InputShapeError(
                f"fit needs x (T, n) and z (T, k) with the same T > k + 1, got {x.shape} and "
                f"{z.shape}"
            )
        regressors = np.c_[z, np.ones(len(z))]
        theta = np.linalg.lstsq(regressors, x, rcond=None)[0].T
        noise = np.maximum((x - regressors @ theta.T).var(0), noise_floor)
        A = np.linalg.lstsq(z[:-1], z[1:], rcond=None)[0].T
        Q = np.atleast_2d(np.cov((z[1:] - z[:-1] @ A.T).T))
        k = z.shape[1]
        return cls(
            A=A.tolist(),
            C=theta[:, :k].tolist(),
            Q=Q.tolist(),
            R=np.diag(noise).tolist(),
            d=tuple(theta[:, k]),
            **params,
        )

    @staticmethod
    def _covariance(value: Any, size: int, name: str) -> np.ndarray:
        if value is None:
            return np.eye(size)
        if np.ndim(value) == 0:
            return float(value) * np.eye(size)
        matrix = _as_matrix(value, name)
        if matrix.shape != (size, size):
            raise ConfigError(f"{name} must be {size} x {size}, got {matrix.shape}")
        if not np.allclose(matrix, matrix.T) or np.linalg.eigvalsh(matrix).min() < 0:
            raise ConfigError(f"{name} must be a symmetric positive semi-definite matrix")
        return matrix

    def _tensor(self, array: np.ndarray, batch: int | None = None) -> torch.Tensor:
        tensor = torch.as_tensor(array, dtype=self._torch_dtype, device=self._device)
        return tensor if batch is None else tensor.expand(batch, *array.shape).contiguous()

    def _allocate(self, n_features: int, batch: int) -> None:
        model = self._model
        if n_features != model["C"].shape[0]:
            raise ConfigError(
                f"KalmanFilter's C has {model['C'].shape[0]} rows but the stream has "
                f"{n_features} channels"
            )
        r_inv_c = np.linalg.solve(model["R"], model["C"])  # R^-1 C, n x k (R fixed: once)
        self._A = self._tensor(model["A"], batch)
        self._Q = self._tensor(model["Q"], batch)
        self._J = self._tensor(model["C"].T @ r_inv_c, batch)  # C^T R^-1 C
        self._H = self._tensor(r_inv_c.T)  # C^T R^-1, k x n
        self._d = self._tensor(model["d"])
        self._mean = self._tensor(model["x0"], batch)
        self._cov = self._tensor(model["P0"], batch)

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prior_mean = bmv(self._A, self._mean)
        prior_cov = torch.bmm(torch.bmm(self._A, self._cov), self._A.transpose(1, 2)) + self._Q
        return _information_update(prior_mean, prior_cov, self._J, (x - self._d) @ self._H.T)

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        if self._numpy_step:
            return self._update_numpy(x)
        if self._graph_step:
            return self._graphed(lambda xs, _: self._update_tensor(xs), x, (), "step")
        return self._update_tensor(x)

    def _update_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The filter step in torch ops, in place (the same ops each step: capturable as one
        CUDA graph)."""
        mean, cov = self._posterior(x)
        self._mean.copy_(mean)
        self._cov.copy_(cov)
        return mean

    def _update_numpy(self, x: torch.Tensor) -> torch.Tensor:
        """`_posterior` and the state update in NumPy on views of the same CPU tensors."""
        v = self._views()
        A, P, m, J = v["A"], v["cov"], v["mean"], v["J"]
        prior_mean = np.matmul(A, m[:, :, None])  # (B, k, 1)
        prior_cov = np.matmul(np.matmul(A, P), v["At"]) + v["Q"]
        h = ((x.numpy() - v["d"]) @ v["Ht"])[:, :, None]
        cov = solve_or_nan(v["eye"] + np.matmul(prior_cov, J), prior_cov)
        P[...] = 0.5 * (cov + cov.transpose(0, 2, 1))
        mean = prior_mean + np.matmul(P, h - np.matmul(J, prior_mean))
        m[...] = mean[:, :, 0]
        return torch.from_numpy(m.copy())

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        return self._posterior(x)[0]

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self._mean, "cov": self._cov}

    def _numpy_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **self._state_tensors(),
            "A": self._A,
            "At": self._A.transpose(1, 2),
            "Q": self._Q,
            "J": self._J,
            "Ht": self._H.T,
            "d": self._d,
            "eye": torch.eye(self._A.shape[-1], dtype=self._torch_dtype),
        }

    @property
    def covariance(self) -> torch.Tensor:
        """Posterior covariance of the state after the last sample, (B, k, k)."""
        return self._cov

    def _dict_to_tensor(self, x: dict[Any, Any]) -> torch.Tensor:
        """river's dict path for a fixed channel count (the rows of C): features take channels in
        order of first appearance (sorted within a sample) until all are taken; an absent
        feature counts as 0, one beyond the channel count is ignored."""
        n = self._model["C"].shape[0]
        names = [] if self._feature_names is None else self._feature_names
        for name in sorted(x, key=str):
            if len(names) < n and name not in names:
                names.append(name)
        self._feature_names = names
        values = [float(x.get(name, 0.0)) for name in names] + [0.0] * (n - len(names))
        return torch.tensor(values, dtype=self._torch_dtype)

    @classmethod
    def _unit_test_params(cls):
        yield {
            "A": ((0.9, 0.1), (0.0, 0.9)),
            "C": tuple((0.5 * i, 1.0 - 0.1 * i) for i in range(6)),
            "Q": 0.1,
            "R": 1.0,
            "device": "cpu",
        }


# -- adaptive decoder ----------------------------------------------------------------------------
class AdaptiveKalmanDecoder(OnlineRidgeDecoder):
    """A Kalman decoder of a behavioural variable z (e.g. 2-D velocity, position) from neural
    counts x whose observation is a learned regression (after the discriminative Kalman filter,
    Burkhart, Brandman, Franco, Hochberg and Harrison, Neural Computation 2020), with its
    steady-state gain identified from the labels (Mehra 1970), all learned online.

    Model: z_t - μ = A (z_{t-1} - μ) + w_t (w ~ N(0, W), μ the labels' running mean); the
    observation is f(x_t), an online ridge regression of z on the last `lags` samples of
    standardised signed-square-root counts (the `ridge` learner's features and recursive least
    squares). Per sample: the prediction z⁻ = μ + A (z - μ), P⁻ = A P Aᵀ + W, then the update
    z = z⁻ + K (f - z⁻), P = (I - K) P⁻; the output is z, the filtered mean. `step(x, y)`
    decodes z_t from x and returns it, then, when the true behaviour y is given, learns: K by
    RLS of y - z⁻ on the innovation f - z⁻ (f made before learning from y, so the gain is fit
    on honest errors), the regression by RLS, and (unless A and W are given) A by RLS of
    y_t - μ on y_{t-1} - μ and W from its residuals. With y None it only decodes. A row of y
    with a NaN marks a stream without a label at that sample in a batch. K starts at I (the
    regression's decode as it is).

    Why this model (benchmarks/decoding_science.py, 1,500-bin sessions, median R²): the earlier
    generative observation (x = C z + d + noise, linear in z, no lags) lost to ridge on lagged
    square-root counts on every simulated family (cosine velocity 0.74 against 0.91). With
    the regression as the observation and the gain from Q (the covariance of its a-priori
    errors) as a Kalman filter computes it, the filter still lost 0.03 to its own regression
    on velocity (0.862 against 0.893) and 0.08 on drifting tuning: the regression's errors are
    autocorrelated (lag-1 0.41, its features overlap in time), so they are not independent of
    the prediction's, and the computed gain trusts the prediction too much (a gain sweep found
    K = I best on velocity, K ≈ 0.5 on place fields). Dividing out the labels' stationary prior
    as the discriminative Kalman filter does, or modelling the errors as AR(1) in the state,
    did not fix it (place fields -0.44 and 0.10 against 0.28). The learned gain is the least-
    squares optimum over the labelled samples: velocity 0.892 against the regression's 0.899.
    Forgetting is the drift model: discounting old labels by `forgetting` per labelled sample
    is the posterior of weights that random-walk (the random-walk limit of the Titsias et al.
    drifting readout), so with intermittent labels the regression and the gain follow drift.

    Parameters
    ----------
    n_components
        Size k of the decoded variable.
    lags, penalty
        The regression's history (samples) and ridge penalty on standardised features and
        targets, as for the `ridge` learner (defaults 5 and 1000, measured there on every
        simulated family).
    forgetting
        RLS forgetting factor λ in (0, 1] of the regression and the dynamics; memory about
        1 / (1 - λ) labelled samples. Default 1 (every labelled sample kept): calibrated then
        decoding without labels, forgetting only throws calibration away. Lower it (0.999)
        when labels keep coming and the tuning drifts.
    A, W
        Known dynamics (k x k nested lists, z_t - μ = A (z_{t-1} - μ) + w); learned online
        when None.
    backend
        `"auto"` (each step replayed as a CUDA graph on CUDA, eager torch on the CPU) or
        `"torch"` (eager torch ops everywhere).
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
        A: Matrix | None = None,
        W: Matrix | None = None,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float64",
        seed: int | None = None,
    ) -> None:
        super().__init__(n_components, lags, penalty, forgetting, device, dtype, seed)
        self.A = A
        self.W = W
        self._init_backend(backend, numpy=False)
        if (A is None) != (W is None):
            raise ConfigError("give both A and W (known dynamics) or neither (learned)")
        if A is not None:
            a, w = _as_matrix(A, "A"), _as_matrix(W, "W")
            if a.shape != (n_components,) * 2 or w.shape != (n_components,) * 2:
                raise ConfigError(f"A and W must be {n_components} x {n_components}")

    def _allocate(self, n_features: int, batch: int) -> None:
        super()._allocate(n_features, batch)
        k = int(self.n_components)
        eye = torch.eye(k, dtype=self._torch_dtype, device=self._device)
        self._gain = eye.repeat(batch, 1, 1)  # K: at first the regression's decode as it is
        self._gain_P = (eye * DYNAMICS_PRIOR).repeat(batch, 1, 1)
        self._prior = self._zeros(batch, k)  # the last prediction z⁻, for the gain's RLS
        self._dynamics = self._zeros(batch, k, k)  # A, acting on z - μ
        self._dyn_noise = eye.repeat(batch, 1, 1)  # W
        if self.A is not None:
            self._dynamics.copy_(torch.as_tensor(np.array(self.A, dtype=np.float64)).to(eye))
            self._dyn_noise.copy_(torch.as_tensor(np.array(self.W, dtype=np.float64)).to(eye))
        self._dyn_P = (eye * DYNAMICS_PRIOR).repeat(batch, 1, 1)
        self._mean = self._zeros(batch, k)
        self._cov = eye.repeat(batch, 1, 1)
        self._previous = self._zeros(batch, k)
        self._has_previous = self._zeros(batch)
        self._pairs = self._zeros(batch)  # pairs of consecutive labelled samples, per stream

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **super()._state_tensors(),
            "gain": self._gain,
            "gain_P": self._gain_P,
            "prior": self._prior,
            "dynamics": self._dynamics,
            "dyn_noise": self._dyn_noise,
            "dyn_P": self._dyn_P,
            "mean": self._mean,
            "cov": self._cov,
            "previous": self._previous,
            "has_previous": self._has_previous,
            "pairs": self._pairs,
        }

    def _posterior(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The filter step: the prediction z⁻ = μ + A (z - μ), P⁻ = A P Aᵀ + W, corrected by
        the observation f with the gain K: z = z⁻ + K (f - z⁻), P = (I - K) P⁻. Returns the
        posterior (mean, covariance) and the prediction z⁻."""
        A = self._dynamics
        prior_mean = self._y_mean + bmv(A, self._mean - self._y_mean)
        prior_cov = torch.bmm(torch.bmm(A, self._cov), A.transpose(1, 2)) + self._dyn_noise
        mean = prior_mean + bmv(self._gain, f - prior_mean)
        cov = _symmetric(prior_cov - torch.bmm(self._gain, prior_cov))
        return mean, cov, prior_mean

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        y = self._pending
        k = int(self.n_components)
        if y is not None and y.shape[1] != k:
            raise InputShapeError(
                f"AdaptiveKalmanDecoder decodes {k} components but y has {y.shape[1]} per stream"
            )
        self._steps += 1
        if not self._graph_step:
            return self._step(x, y)
        if y is None:
            return self._graphed(lambda v, _: self._step(v, None), x, (), "decode")
        return self._graphed(
            lambda v, _: self._step(v[:, :-k], v[:, -k:]), torch.cat([x, y], 1), (), "learn"
        )

    def _step(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Decode, then (with a label y) learn, in torch ops with no host-side branching on
        values (capturable as a graph)."""
        phi = self._features(x, learn=True)
        f = self._decode(phi)
        mean, cov, prior_mean = self._posterior(f)
        self._mean.copy_(mean)
        self._cov.copy_(cov)
        self._prior.copy_(prior_mean)
        if y is not None:
            self._learn_models(phi, f, y)
        return mean

    def _learn_models(self, phi: torch.Tensor, f: torch.Tensor, y: torch.Tensor) -> None:
        """The labelled sample's updates: the regression (RLS); the gain K by RLS of the
        prediction's error y - z⁻ on the innovation f - z⁻ (f the regression's a-priori decode,
        made before learning from y); the dynamics (A, W) of the labels about their mean μ."""
        finite = torch.isfinite(y)
        mask = finite.all(1).to(y.dtype)
        target = torch.where(finite, y, 0.0)  # unlabelled rows: masked out, kept finite
        lam = float(self.forgetting)
        rls_step_(self._gain, self._gain_P, f - self._prior, target - self._prior, mask, lam)
        self._learn(phi, y)  # the regression, and the labels' running mean and variance
        if self.A is None:
            both = mask * self._has_previous
            before, after = self._previous - self._y_mean, target - self._y_mean
            residual = rls_step_(self._dynamics, self._dyn_P, before, after, both, lam)
            self._pairs.add_(both)
            rate_w = (self._average_rate(self._pairs) * both).view(-1, 1, 1)
            self._dyn_noise.add_(rate_w * (outer(residual, residual) - self._dyn_noise))
        keep = mask.unsqueeze(1)
        self._previous.mul_(1.0 - keep).add_(keep * target)
        self._has_previous.copy_(torch.maximum(self._has_previous, mask))

    def _average_rate(self, count: torch.Tensor) -> torch.Tensor:
        """Rate of the running covariance averages: 1/count at first (the plain mean of what
        was seen, whatever the start value), then the forgetting rate 1 - λ once its memory of
        about 1/(1 - λ) samples is full; with λ = 1 the plain mean throughout."""
        floor = torch.full_like(count, 1.0 - float(self.forgetting))
        return torch.maximum(1.0 / count.clamp(min=1.0), floor)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        return self._posterior(self._decode(self._features(x, learn=False)))[0]

    @property
    def observation_model(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned observation: the regression's weights (B, k, lags·n + 1) on the
        standardised features (standardised targets), and the gain K (B, k, k) it enters the
        filter with."""
        return self._W, self._gain

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "lags": 2, "device": "cpu"}


# -- Bio-OFC -------------------------------------------------------------------------------------
class BioOFC(TargetLearner):
    """Bio-OFC (Friedrich, Golkar, Farashahi et al., NeurIPS 2021): optimal feedback control
    with local learning rules, from delayed observations.

    `step(x, y)`: x is the newest observation (at control step t, y_{t-delay} of the plant; the
    trial-start observation y_0 at t = 0), y the cost of the last action (ignored at t = 0;
    None: no policy learning). Returns the control u_t (n_components). Per step, with
    s = t - delay the index of the observation received:

    - innovation e = x - Ĉ x̂_s (zero while s < 0); x̂_t = Â x̂_{t-1} + B̂ u_{t-1} + L̂ e;
      x̂_0 = least squares of Ĉ x̂ = y_0;
    - local rules: Â += η (L̂ e) x̂_{s-1}^T, B̂ += η (L̂ e) u_{s-1}^T, Ĉ += η e x̂_s^T,
      L̂ += η (L̂ e) e_{s-1}'^T with e_{s-1}' the innovation that built x̂_s (L̂ stands in for
      Ĉ^T: no weight transport);
    - policy gradient: g <- μ g + (c - b_t) z, K̂ += η_K g; then u_t = -K̂ x̂_t + ξ_t,
      ξ ~ N(0, σ^2 I), eligibility z += ξ_t x̂_t^T (zero at each episode start); b_t is a
      running mean of the cost at step t of the episode (baseline, rate `baseline_rate`).

    Episodes: `reset_episode()` marks the next sample as an episode start; with
    `episode_length` > 0 one also starts after every `episode_length` samples.

    Parameters
    ----------
    n_components
        Control size p.
    delay
        Sensory delay τ >= 1 in steps.
    state_dim
        Size m of the internal state x̂ (default: the observation size).
    learning_rate, policy_rate
        η (for Â, B̂, Ĉ, L̂) and η_K; None picks the authors' rates for this delay on the
        double-integrator task (delay 1: 1e-2, 8.7e-6; 2: 5.5e-3, 8.0e-6; 3 and more:
        7.0e-3, 6.1e-6).
    exploration
        σ, the standard deviation of the exploration noise ξ.
    momentum
        μ of the policy-gradient average g.
    baseline_rate
        Rate of the running mean of the cost per episode step (the baseline b_t).
    episode_length
        Samples per episode (0: episodes only by `reset_episode()`).
    advantage_clip
        When > 0, the advantage c - b_t is clipped to ± this many running mean absolute
        advantages at that step (0: no clipping), so one outlying episode cannot throw K̂ off.
    max_gain_step
        Trust region: a step of K̂ longer (Frobenius norm) than this is shrunk to it (0: none).
    backend
        `"auto"` (NumPy steps on the CPU: a step is ~40 small ops, each cheaper in NumPy than
        in torch at these sizes), `"numpy"` or `"torch"`; the same maths on every path.
    device, dtype, seed
        As for every learner; `seed` draws the initial weights and the exploration noise.

    Initial weights as the authors': Â, B̂ ~ 0.1 N(0, 1); Ĉ, L̂ = 0.5 I + 0.5 U(0, 1);
    K̂ ~ 0.1 N(0, 1) (our choice: the source does not say).
    """

    def __init__(
        self,
        n_components: int = 1,
        delay: int = 1,
        state_dim: int | None = None,
        learning_rate: float | None = None,
        policy_rate: float | None = None,
        exploration: float = 0.2,
        momentum: float = 0.99,
        baseline_rate: float = 0.01,
        episode_length: int = 11,
        advantage_clip: float = 0.0,
        max_gain_step: float = 1e-3,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.delay = delay
        self.state_dim = state_dim
        self.learning_rate = learning_rate
        self.policy_rate = policy_rate
        self.exploration = exploration
        self.momentum = momentum
        self.baseline_rate = baseline_rate
        self.episode_length = episode_length
        self.advantage_clip = advantage_clip
        self.max_gain_step = max_gain_step
        self._init_common(device, dtype, seed)
        self._init_backend(backend)
        require_positive_int(n_components, "n_components")
        if int(delay) != delay or delay < 1:
            raise ConfigError(f"delay must be an integer >= 1 (steps), got {delay!r}")
        if state_dim is not None and (int(state_dim) != state_dim or state_dim < 1):
            raise ConfigError(f"state_dim must be a positive integer or None, got {state_dim!r}")
        if episode_length < 0 or exploration < 0 or not 0 <= momentum < 1:
            raise ConfigError("need episode_length >= 0, exploration >= 0, 0 <= momentum < 1")
        if not 0 <= baseline_rate <= 1:
            raise ConfigError(f"baseline_rate must be in [0, 1], got {baseline_rate}")
        default_eta, default_eta_k = BIO_OFC_RATES[min(int(delay), 3)]
        self._eta = default_eta if learning_rate is None else float(learning_rate)
        self._eta_k = default_eta_k if policy_rate is None else float(policy_rate)
        if self._eta < 0 or self._eta_k < 0:
            raise ConfigError("learning_rate and policy_rate must be non-negative")
        self._t = 0  # step within the episode
        self._episodes = 0

    # -- state ----------------------------------------------------------------------------
    def _allocate(self, n_features: int, batch: int) -> None:
        m = n_features if self.state_dim is None else int(self.state_dim)
        n, p, slots = n_features, self.n_components, self.delay + 2

        def eye_plus_uniform(rows: int, cols: int) -> torch.Tensor:
            eye = torch.eye(rows, cols, dtype=self._torch_dtype, device=self._device)
            uniform = torch.rand(
                batch,
                rows,
                cols,
                generator=self._generator,
                dtype=self._torch_dtype,
                device=self._device,
            )
            return 0.5 * eye + 0.5 * uniform

        self._A = 0.1 * self._randn(batch, m, m)
        self._B = 0.1 * self._randn(batch, m, p)
        self._C = eye_plus_uniform(n, m)
        self._L = eye_plus_uniform(m, n)
        self._K = self._zeros(batch, p, m)  # the initial policy is the exploration noise alone
        self._xhat = self._zeros(batch, slots, m)  # ring buffers indexed by episode step
        self._u = self._zeros(batch, slots, p)
        self._e = self._zeros(batch, slots, n)
        self._trace = self._zeros(batch, p, m)
        self._g = self._zeros(batch, p, m)
        self._baseline = self._zeros(batch, max(self.episode_length, 1))
        self._baseline_seen = self._zeros(batch, max(self.episode_length, 1))
        self._scale = self._zeros(batch, max(self.episode_length, 1))
        self._t = 0
        self._episodes = 0

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "A": self._A,
            "B": self._B,
            "C": self._C,
            "L": self._L,
            "K": self._K,
            "xhat": self._xhat,
            "u": self._u,
            "e": self._e,
            "trace": self._trace,
            "g": self._g,
            "baseline": self._baseline,
            "baseline_seen": self._baseline_seen,
            "scale": self._scale,
        }

    def _state_scalars(self) -> dict[str, StateValue]:
        return {"episode_step": self._t, "episodes": self._episodes}

    def _load_scalars(self, scalars: dict[str, Any]) -> None:
        self._t = int(scalars["episode_step"])
        self._episodes = int(scalars["episodes"])

    def reset_episode(self) -> None:
        """Make the next sample the start of an episode (x̂ from it, eligibility cleared)."""
        self._t = 0

    @property
    def episode_step(self) -> int:
        """The step within the episode the next sample will be (0: an episode start)."""
        if self.episode_length and self._t >= self.episode_length:
            return 0
        return self._t

    @property
    def model(self) -> dict[str, torch.Tensor]:
        """The learned Â, B̂, Ĉ, L̂ and gain K̂, each (B, rows, cols)."""
        return {"A": self._A, "B": self._B, "C": self._C, "L": self._L, "K": self._K}

    @property
    def estimate(self) -> torch.Tensor:
        """x̂_t, the internal state estimate behind the last control, (B, m)."""
        return self._xhat[:, (self._t - 1) % (self.delay + 2)]

    def extra_outputs(self) -> dict[str, torch.Tensor]:
        """The state estimate x̂_t behind each control, recorded beside it in the store."""
        return {"estimate": self.estimate}

    # -- the maths ----------------------------------------------------------------------------
    def _initial_estimate(self, x: torch.Tensor) -> torch.Tensor:
        # normal equations by solve_ex: no error raised (one diverged stream cannot stop the
        # batch) and no device-to-host sync; regularised (`_ridge`) so that a learned C near
        # singularity cannot blow the episode's first estimate up
        Ct = self._C.transpose(1, 2)
        gram = torch.bmm(Ct, self._C)
        shift = gram.diagonal(dim1=1, dim2=2).mean(1) * INITIAL_ESTIMATE_RIDGE
        eye = torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)  # no host copy
        gram = gram + shift[:, None, None] * eye
        return torch.linalg.solve_ex(gram, bmv(Ct, x)).result

    def _estimate(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x̂_t and the innovation e (None while no delayed observation has arrived)."""
        if t == 0:
            return self._initial_estimate(x), None
        slots, s = self.delay + 2, t - self.delay
        xhat = bmv(self._A, self._xhat[:, (t - 1) % slots]) + bmv(
            self._B, self._u[:, (t - 1) % slots]
        )
        if s < 0:
            return xhat, None
        e = x - bmv(self._C, self._xhat[:, s % slots])
        return xhat + bmv(self._L, e), e

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        if self._numpy_step:
            return self._update_numpy(x)
        self._steps += 1
        t = self.episode_step
        if t == 0:
            self._episodes += 1
            self._trace.zero_()
        slots, s = self.delay + 2, t - self.delay
        xhat, e = self._estimate(x, t)
        if e is not None and self._eta:
            le = bmv(self._L, e)
            self._C.add_(outer(e, self._xhat[:, s % slots]), alpha=self._eta)
            if s >= 1:  # x̂_s was built by the model from x̂_{s-1}, u_{s-1} and its innovation
                previous = (s - 1) % slots
                self._A.add_(outer(le, self._xhat[:, previous]), alpha=self._eta)
                self._B.add_(outer(le, self._u[:, previous]), alpha=self._eta)
                self._L.add_(outer(le, self._e[:, s % slots]), alpha=self._eta)
        slot = t % slots
        self._xhat[:, slot] = xhat
        if e is None:
            self._e[:, slot] = 0.0
        else:
            self._e[:, slot] = e
        if t > 0 and self._pending is not None:
            self._policy_gradient(self._pending[:, 0], min(t, self._baseline.shape[1]) - 1)
        u = -bmv(self._K, xhat)
        if self.exploration:
            noise = self._randn(*u.shape).mul_(self.exploration)
            u = u + noise
            self._trace.add_(outer(noise, xhat))
        self._u[:, slot] = u
        self._t = t + 1
        return u

    def _policy_gradient(self, cost: torch.Tensor, step: int) -> None:
        """g <- μ g + (c - b) z and K̂ += η_K g, for the cost of the last action at `step`."""
        seen = self._baseline_seen[:, step]
        # baseline and scale start at the first cost seen at this step (advantage 0 then)
        baseline = torch.lerp(cost, self._baseline[:, step], seen)
        scale = torch.lerp(cost.abs(), self._scale[:, step], seen)
        advantage = cost - baseline
        self._baseline[:, step] = baseline + self.baseline_rate * advantage
        self._scale[:, step] = scale + self.baseline_rate * (advantage.abs() - scale)
        self._baseline_seen[:, step] = 1.0
        if self.advantage_clip:
            bound = self.advantage_clip * scale
            advantage = torch.maximum(torch.minimum(advantage, bound), -bound)
        self._g.mul_(self.momentum).add_(advantage.view(-1, 1, 1) * self._trace)
        if not self._eta_k:
            return
        step_k = self._g * self._eta_k
        if self.max_gain_step:  # trust region: shrink a step longer than the limit
            norm = torch.linalg.vector_norm(step_k, dim=(1, 2), keepdim=True)
            step_k.mul_(torch.clamp(self.max_gain_step / (norm + 1e-30), max=1.0))
        self._K.add_(step_k)

    def _update_numpy(self, x: torch.Tensor) -> torch.Tensor:
        """`_update` and `_policy_gradient` in NumPy on views of the same CPU tensors, op for op
        (the exploration noise still comes from `_randn`, so the random stream is the same)."""
        self._steps += 1
        v = self._views()
        A, B, C, L, K = v["A"], v["B"], v["C"], v["L"], v["K"]
        xhats, us, es, trace = v["xhat"], v["u"], v["e"], v["trace"]
        obs = x.numpy()
        t = self.episode_step
        if t == 0:
            self._episodes += 1
            trace[...] = 0.0
        slots, s = self.delay + 2, t - self.delay
        e = None
        if t == 0:
            Ct = C.transpose(0, 2, 1)
            gram = np.matmul(Ct, C)
            shift = np.diagonal(gram, axis1=1, axis2=2).mean(1) * INITIAL_ESTIMATE_RIDGE
            gram = gram + shift[:, None, None] * np.eye(gram.shape[1], dtype=gram.dtype)
            xhat = solve_or_nan(gram, np.matmul(Ct, obs[:, :, None]))[:, :, 0]
        else:
            xhat = np_bmv(A, xhats[:, (t - 1) % slots]) + np_bmv(B, us[:, (t - 1) % slots])
            if s >= 0:
                e = obs - np_bmv(C, xhats[:, s % slots])
                xhat = xhat + np_bmv(L, e)
        if e is not None and self._eta:
            eta = self._eta
            le = np_bmv(L, e)
            C += eta * np_outer(e, xhats[:, s % slots])
            if s >= 1:
                previous = (s - 1) % slots
                A += eta * np_outer(le, xhats[:, previous])
                B += eta * np_outer(le, us[:, previous])
                L += eta * np_outer(le, es[:, s % slots])
        slot = t % slots
        xhats[:, slot] = xhat
        es[:, slot] = 0.0 if e is None else e
        if t > 0 and self._pending is not None:
            cost = self._pending[:, 0].numpy()
            self._policy_gradient_numpy(v, cost, min(t, v["baseline"].shape[1]) - 1)
        u = -np_bmv(K, xhat)
        if self.exploration:
            noise = self._randn(*u.shape).mul_(self.exploration).numpy()
            u = u + noise
            trace += np_outer(noise, xhat)
        us[:, slot] = u
        self._t = t + 1
        return torch.from_numpy(u.copy())

    def _policy_gradient_numpy(self, v: dict[str, np.ndarray], cost: np.ndarray, step: int) -> None:
        """`_policy_gradient` in NumPy on the views `v`."""
        seen = v["baseline_seen"][:, step]
        baseline = np_lerp(cost, v["baseline"][:, step], seen)
        scale = np_lerp(np.abs(cost), v["scale"][:, step], seen)
        advantage = cost - baseline
        v["baseline"][:, step] = baseline + self.baseline_rate * advantage
        v["scale"][:, step] = scale + self.baseline_rate * (np.abs(advantage) - scale)
        v["baseline_seen"][:, step] = 1.0
        if self.advantage_clip:
            bound = self.advantage_clip * scale
            advantage = np.maximum(np.minimum(advantage, bound), -bound)
        g = v["g"]
        g *= self.momentum
        g += advantage[:, None, None] * v["trace"]
        if not self._eta_k:
            return
        step_k = g * self._eta_k
        if self.max_gain_step:
            norm = np.sqrt(np.square(step_k).sum(axis=(1, 2), keepdims=True))
            step_k *= np.minimum(self.max_gain_step / (norm + 1e-30), 1.0)
        v["K"] += step_k

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """The control without exploration that the next sample would get; no state changes."""
        return -bmv(self._K, self._estimate(x, self.episode_step)[0])

    # -- evaluation ---------------------------------------------------------------------------
    def frozen_copy(self, batch: int, stream: int = 0, exploration: float = 0.0) -> BioOFC:
        """A copy that does not learn, with stream `stream`'s learned state in each of `batch`
        streams and the given exploration (none by default): run it on `batch` episodes at once
        to evaluate the learned filter and policy."""
        if not self.is_initialized:
            raise ConfigError("BioOFC has no learned state yet; step it first")
        copy = self.clone({"learning_rate": 0.0, "policy_rate": 0.0, "exploration": exploration})
        state = self.state_dict()
        for name in self._state_tensors():
            tensor = state[name]
            assert isinstance(tensor, torch.Tensor)
            state[name] = tensor[stream : stream + 1].expand(batch, *tensor.shape[1:]).clone()
        state["_batch"] = batch
        copy.load_state_dict(state)
        copy.reset_episode()
        return copy

    @classmethod
    def _unit_test_params(cls):
        yield {"delay": 2, "learning_rate": 0.0, "policy_rate": 0.0, "device": "cpu", "seed": 1}
