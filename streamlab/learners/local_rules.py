"""Batched tensor helpers, local plasticity rules and network dynamics shared by the learners
(the similarity-matching family, the Kalman-control learners): batched over B independent
streams, in place, with torch ops only (no host syncs), so one code path serves CPU and CUDA."""

from __future__ import annotations

import numpy as np
import torch


def bmv(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product: (B, i, j) @ (B, j) -> (B, i)."""
    return torch.bmm(matrix, vector.unsqueeze(2)).squeeze(2)


def outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched outer product: (B, i), (B, j) -> (B, i, j)."""
    return a.unsqueeze(2) * b.unsqueeze(1)


def hebbian_(
    weights: torch.Tensor,
    post: torch.Tensor,
    pre: torch.Tensor,
    rate: torch.Tensor | float,
    decay: torch.Tensor | float = 1.0,
) -> None:
    """Oja-type Hebbian step W += rate * (post pre^T - decay * W), in place.

    `weights` (B, k, n), `post` (B, k), `pre` (B, n); `rate` and `decay` are scalars or (B, k)
    per-unit values (the nonnegative network's activity-dependent rates). With decay 1 this is
    PSP's W <- (1 - 2η) W + 2η y x^T (rate 2η); with decay y_i^2 and rate 1/Ŷ_i it is the
    per-unit running average W_i = Σ y_i x / Σ y_i^2 of the nonnegative network."""
    if not isinstance(rate, torch.Tensor) and not isinstance(decay, torch.Tensor):
        weights.baddbmm_(post.unsqueeze(2), pre.unsqueeze(1), beta=1.0 - rate * decay, alpha=rate)
        return
    if isinstance(rate, torch.Tensor):
        rate = rate.unsqueeze(2)
    if isinstance(decay, torch.Tensor):
        decay = decay.unsqueeze(2)
    weights.sub_(weights * (decay * rate)).add_(post.unsqueeze(2) * rate * pre.unsqueeze(1))


def lateral_rank_one_(
    M: torch.Tensor,
    Minv: torch.Tensor,
    y: torch.Tensor,
    rate: float | torch.Tensor,
    refresh: bool,
) -> None:
    """Anti-Hebbian lateral step M <- (1 - a) M + a y y^T (a = `rate`), in place, with M^-1 kept
    by the Sherman-Morrison rank-one update (O(k^2) instead of a k^3 inverse per sample).

    The recursion amplifies round-off by 1/(1 - a) per step, so `refresh=True` re-inverts M
    (without an error check, hence without a host sync). `rate` may be a 0-d device tensor (a
    CUDA graph's per-step input). Shared by PSP (y the output) and Bio-CCA (z the output,
    a = η/τ)."""
    col = y.unsqueeze(2)
    M.mul_(1.0 - rate).add_(col * col.transpose(1, 2) * rate)
    Minv.div_(1.0 - rate)
    z = torch.bmm(Minv, col)
    c = rate / (1.0 + rate * (z * col).sum(dim=(1, 2), keepdim=True))
    Minv.sub_(z * c * z.transpose(1, 2))
    if refresh:
        Minv.copy_(torch.linalg.inv_ex(M).inverse)


def rectified_fixed_point(
    drive: torch.Tensor,
    lateral: torch.Tensor,
    *,
    solver: str,
    damping: float,
    tol: float,
    max_iter: int,
    early_exit: bool,
) -> torch.Tensor:
    """Solve y = max(0, drive - lateral y) per stream, the steady state of the rectified network
    dynamics; `drive` (B, k), `lateral` (B, k, k) with a zero diagonal (M = I + lateral).

    `solver="jacobi"` runs the damped projected dynamics y <- (1 - d) y + d max(0, drive -
    lateral y) from y = max(0, drive). `solver="active_set"` takes the same fixed point by
    primal-dual active-set steps: guess the active units S (those firing, or driven above zero
    by the others), solve M_SS y_S = drive_S exactly with the rest silent, repeat; on the
    overlapping receptive fields of manifold tiling this converges in 2-4 steps where the
    dynamics (Jacobi or Gauss-Seidel) need 40-200. If it has not converged after `max_iter`
    steps (a cycle), the damped dynamics finish from where it stopped.

    A stream is frozen once its fixed-point residual |y - max(0, drive - lateral y)| is below
    `tol * (1 + max y)`, so its answer depends neither on the other streams in the batch nor on
    whether the loop stops early: with `early_exit` (on the CPU, where reading a flag is free)
    the loop ends once every stream is frozen; otherwise (CUDA, no host sync) all iterations
    run."""
    batch, k = drive.shape
    y = torch.relu(drive)
    done = torch.zeros(batch, 1, dtype=torch.bool, device=drive.device)
    col = drive.unsqueeze(2)

    def target(current: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(col, lateral, current.unsqueeze(2), alpha=-1).squeeze(2)

    def converged(current: torch.Tensor) -> torch.Tensor:
        residual = (current - torch.relu(target(current))).abs().amax(dim=1, keepdim=True)
        return residual <= tol * (1.0 + current.amax(dim=1, keepdim=True))

    if solver == "active_set":
        M = lateral + torch.eye(k, dtype=drive.dtype, device=drive.device)
        active = (y > 0) | (target(y) > 0)
        for _ in range(max_iter):
            mask = active.to(drive.dtype)
            system = M * (mask.unsqueeze(2) * mask.unsqueeze(1)) + torch.diag_embed(1 - mask)
            raw = torch.linalg.solve_ex(system, (drive * mask).unsqueeze(2)).result.squeeze(2)
            # units solved negative fall silent; silent units the others drive above 0 join
            active = torch.where(active, raw > 0, target(raw) > 0)
            y = torch.where(done, y, raw.clamp_min(0.0))
            done = done | converged(y)
            if early_exit and bool(done.all()):
                return y
    for _ in range(max_iter):
        y = torch.where(done, y, torch.lerp(y, torch.relu(target(y)), damping))
        done = done | converged(y)
        if early_exit and bool(done.all()):
            break
    return y


def rectified_fixed_point_numpy(
    drive: np.ndarray,
    lateral: np.ndarray,
    *,
    solver: str,
    damping: float,
    tol: float,
    max_iter: int,
) -> np.ndarray:
    """`rectified_fixed_point` in NumPy, op for op, stopping once every stream is frozen (the
    CPU's early exit): the nonnegative network's CPU step, where torch's per-op cost is most of
    a solve on k of a few units. A single stream takes `_fixed_point_one`."""
    if drive.shape[0] == 1:
        return _fixed_point_one(drive[0], lateral[0], solver, damping, tol, max_iter)[None]
    k = drive.shape[1]
    y = np.maximum(drive, 0.0)
    done = np.zeros((drive.shape[0], 1), dtype=bool)

    def target(current: np.ndarray) -> np.ndarray:
        return drive - np_bmv(lateral, current)

    def converged(current: np.ndarray) -> np.ndarray:
        residual = np.abs(current - np.maximum(target(current), 0.0)).max(axis=1, keepdims=True)
        return residual <= tol * (1.0 + current.max(axis=1, keepdims=True))

    if solver == "active_set":
        eye = np.eye(k, dtype=drive.dtype)
        M = lateral + eye
        active = (y > 0) | (target(y) > 0)
        for _ in range(max_iter):
            mask = active.astype(drive.dtype)
            system = M * (mask[:, :, None] * mask[:, None, :]) + eye * (1 - mask)[:, None, :]
            raw = solve_or_nan(system, (drive * mask)[:, :, None])[:, :, 0]
            active = np.where(active, raw > 0, target(raw) > 0)
            y = np.where(done, y, np.maximum(raw, 0.0))
            done |= converged(y)
            if done.all():
                return y
    for _ in range(max_iter):
        y = np.where(done, y, np_lerp(y, np.maximum(target(y), 0.0), damping))
        done |= converged(y)
        if done.all():
            break
    return y


def _fixed_point_one(
    drive: np.ndarray, lateral: np.ndarray, solver: str, damping: float, tol: float, max_iter: int
) -> np.ndarray:
    """One stream's fixed point, in vector ops: each active-set step solves only the active
    units' system (the full one has identity rows elsewhere, so the answer is the same) and a
    single active unit needs no solve at all (M_ii = 1)."""
    y = np.maximum(drive, 0.0)

    def converged(current: np.ndarray) -> bool:
        target = np.maximum(drive - lateral @ current, 0.0)
        return bool(np.abs(current - target).max() <= tol * (1.0 + current.max()))

    if solver == "active_set":
        active = (y > 0) | (drive - lateral @ y > 0)
        for _ in range(max_iter):
            (index,) = active.nonzero()
            raw = np.zeros_like(drive)
            if len(index) == 1:
                raw[index] = drive[index]
            elif len(index):
                system = lateral[index[:, None], index]
                system.flat[:: len(index) + 1] = 1.0
                raw[index] = solve_or_nan(system, drive[index])
            active = np.where(active, raw > 0, drive - lateral @ raw > 0)
            y = np.maximum(raw, 0.0)
            if converged(y):
                return y
    for _ in range(max_iter):
        y = np_lerp(y, np.maximum(drive - lateral @ y, 0.0), damping)
        if converged(y):
            break
    return y


def np_lateral_rank_one_(
    M: np.ndarray, Minv: np.ndarray, col: np.ndarray, rate: float, refresh: bool
) -> None:
    """`lateral_rank_one_` in NumPy on views of the state, in place; `col` is y as (B, k, 1)."""
    M *= 1.0 - rate
    M += rate * (col * col.transpose(0, 2, 1))
    Minv /= 1.0 - rate
    z = np.matmul(Minv, col)
    c = rate / (1.0 + rate * (z * col).sum(axis=(1, 2), keepdims=True))
    Minv -= (z * c) * z.transpose(0, 2, 1)
    if refresh:
        Minv[...] = solve_or_nan(M, np.broadcast_to(np.eye(M.shape[-1], dtype=M.dtype), M.shape))


def np_bmv(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Batched matrix-vector product in NumPy, (B, r, c) x (B, c) -> (B, r) (`bmv`'s twin)."""
    return np.matmul(matrix, vector[:, :, None])[:, :, 0]


def np_outer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched outer product in NumPy, (B, r) x (B, c) -> (B, r, c) (`outer`'s twin)."""
    return a[:, :, None] * b[:, None, :]


def np_lerp(start: np.ndarray, end: np.ndarray, weight: np.ndarray | float) -> np.ndarray:
    """`torch.lerp` in NumPy, with its two-sided formula (exact at weights 0 and 1); only the
    side(s) the weights need are computed."""
    low = np.less(weight, 0.5)
    if low.all():
        return start + weight * (end - start)
    if not low.any():
        return end - (end - start) * (1.0 - weight)
    return np.where(low, start + weight * (end - start), end - (end - start) * (1.0 - weight))


def solve_or_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy steps' `np.linalg.solve(a, b)` that, like torch's `solve_ex`, returns NaN instead
    of raising on a singular system: the pipeline then rolls the learner back as it does for
    any other non-finite output."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.full(np.broadcast_shapes(a.shape[:-1], b.shape[:-1]) + b.shape[-1:], np.nan)


# -- running statistics (Welford), in place, masked ---------------------------------------------
def welford_(
    mean: torch.Tensor, m2: torch.Tensor, count: torch.Tensor, value: torch.Tensor, mask=1.0
) -> None:
    """One masked step of Welford's running mean and sum of squared deviations, in place:
    entries where `mask` is 0 are left as they are (`count` counts the masked-in samples)."""
    count.add_(mask)
    delta = (value - mean) * mask
    mean.add_(delta / count.clamp(min=1.0))
    m2.add_(delta * (value - mean))


def running_sd(m2: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """The running standard deviation from Welford's sums; 1 until two samples were seen (so
    a standardised value is only centred until a scale is known), floored at 1e-6."""
    variance = m2 / count.clamp(min=1.0)
    return torch.where(count > 1.0, variance.sqrt().clamp(min=1e-6), torch.ones_like(m2))


def signed_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sign(x) √|x|: the variance-stabilising square root of counts, odd for signed input."""
    return torch.sign(x) * x.abs().sqrt()


def rls_step_(
    theta: torch.Tensor,
    P: torch.Tensor,
    regressor: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    forgetting: float,
) -> torch.Tensor:
    """One masked recursive-least-squares step with forgetting λ, in place on the weights
    theta (B, q, d) and the inverse-Gram P (B, d, d) for a regressor (B, d) and target (B, q);
    streams whose mask (B,) is 0 are left as they are. Returns the a-posteriori residual."""
    Pphi = bmv(P, regressor)
    denom = forgetting + (regressor * Pphi).sum(1, keepdim=True)
    gain = Pphi / denom * mask.unsqueeze(1)
    residual = target - bmv(theta, regressor)
    theta.add_(outer(residual, gain))
    # P <- (P - v v^T) / λ with v = Pφ / √denom: v_i v_j = v_j v_i bit for bit, so P stays
    # exactly symmetric without a symmetrising pass, in two in-place passes over P (the step's
    # cost is these passes: P is d x d per stream).
    v = Pphi * (mask.unsqueeze(1) / denom).sqrt()
    P.addcmul_(v.unsqueeze(2), v.unsqueeze(1), value=-1.0)
    P.mul_((1.0 + mask * (1.0 / forgetting - 1.0)).view(-1, 1, 1))
    return residual * (forgetting / denom)
