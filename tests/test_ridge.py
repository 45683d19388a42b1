"""The online ridge decoder: recursive least squares is ridge regression, exactly, on the
features and standardised targets it computed online (closed form in float64); lags are causal;
unlabelled samples teach nothing; bad parameters are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.ridge import OnlineRidgeDecoder


def _welford(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running (mean, sd) after each row, sd 1 until two rows (the learner's convention)."""
    means, sds = [], []
    for t in range(1, len(values) + 1):
        seen = values[:t]
        means.append(seen.mean(0))
        sds.append(np.maximum(seen.std(0), 1e-6) if t > 1 else np.ones(values.shape[1]))
    return np.array(means), np.array(sds)


def test_rls_is_ridge_on_the_features_it_computed() -> None:
    """After T labelled samples, W is argmin sum_t |y~_t - W phi_t|^2 + penalty |W|^2, with
    phi_t the lagged standardised signed square roots and y~_t the targets standardised by
    the running statistics at t (both recomputed here in NumPy); the decode of the next sample
    is W phi in the targets' units."""
    rng = np.random.default_rng(0)
    T, n, q, lags, penalty = 300, 4, 2, 3, 5.0
    x = rng.poisson(3.0, (T + 1, n)).astype(np.float64)
    y = x[:, :q] @ rng.normal(size=(q, q)) + rng.normal(size=(T + 1, q)) + 50.0
    learner = OnlineRidgeDecoder(n_components=q, lags=lags, penalty=penalty, device="cpu")
    for t in range(T):
        learner.step(x[t], y[t])
    root = np.sqrt(x)
    in_mean, in_sd = _welford(root[:T])
    z = (root[:T] - in_mean) / in_sd
    history = np.zeros((T, lags, n))
    for t in range(T):
        for lag in range(lags):
            if t - lag >= 0:
                history[t, lag] = z[t - lag]
    phi = np.c_[history.reshape(T, -1), np.ones(T)]
    y_mean, y_sd = _welford(y[:T])
    target = (y[:T] - y_mean) / y_sd
    W = np.linalg.solve(phi.T @ phi + penalty * np.eye(phi.shape[1]), phi.T @ target).T
    np.testing.assert_allclose(learner._W[0].numpy(), W, rtol=1e-7, atol=1e-9)
    # the next sample, decoded without its label
    z_next = (root[T] - np.vstack([root[: T + 1]]).mean(0)) / np.maximum(root[: T + 1].std(0), 1e-6)
    phi_next = np.r_[np.concatenate([z_next, *z[T - 1 : T - lags : -1]]), 1.0]
    expected = (W @ phi_next) * y_sd[-1] + y_mean[-1]
    np.testing.assert_allclose(learner.step(x[T]).numpy(), expected, rtol=1e-7)


def test_unlabelled_samples_only_move_the_input_statistics() -> None:
    """A NaN row of y, or none: the same outputs and states, and the weights untouched."""
    rng = np.random.default_rng(1)
    x = rng.poisson(2.0, (60, 5)).astype(np.float64)
    y = rng.normal(size=(60, 2))
    a, b = OnlineRidgeDecoder(device="cpu"), OnlineRidgeDecoder(device="cpu")
    for t in range(60):
        label = y[t] if t < 30 else None
        out_a = a.step(x[t], label)
        out_b = b.step(x[t], y[t] if t < 30 else np.full(2, np.nan))
        torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
        if t == 30:
            weights = a._W.clone()
    torch.testing.assert_close(a._W, weights, rtol=0, atol=0)
    for key, value in a.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, b.state_dict()[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"lags": 0}, "lags"),
        ({"penalty": 0.0}, "penalty"),
        ({"forgetting": 1.5}, "forgetting"),
        ({"n_components": 0}, "n_components"),
    ],
)
def test_bad_parameters_are_refused_by_name(params, match) -> None:
    with pytest.raises(ConfigError, match=match):
        OnlineRidgeDecoder(**params)


def test_a_label_of_the_wrong_size_says_so() -> None:
    learner = OnlineRidgeDecoder(n_components=2, device="cpu")
    with pytest.raises(InputShapeError, match="decodes 2 components"):
        learner.step(np.ones(4), np.ones(3))
