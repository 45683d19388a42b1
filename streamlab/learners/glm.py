"""Switching Poisson GLMs learned online: hidden brain states, each a GLM of coupling between
neurons (Li et al., "One-hot Generalized Linear Model for Switching Brain State Discovery").

Model. A hidden Markov chain z_t over K states with transition matrix A. Given z_t = k, neuron n
fires Poisson(λ) with log λ = b[k, n] + sum_j,b w[k, n, (b, j)] h[b, j] + sum_i v[k, n, i] u_i:
h the spike history of every neuron filtered by a basis (`history_basis`), u optional external
inputs. Priors tie the states' coupling together: "gaussian" scatters each state's weights around
a shared mean connectome (the mean over states, variance learned); "onehot" gives each connection
(n <- j) one type shared by every state, inhibitory / none / excitatory, with learned type
frequencies and per-type strength distributions, so the type posterior is the connectome.

Online scheme, per stream: a burn-in buffer (default 2,000 bins) is fitted once by EM and the
online learner starts from that fit (see `burn_in`: from scratch, purely online EM let one state
take every bin). The fit (`sliced_em`) runs in bounded units, one per bin over the bins that
follow the burn-in, so it never stalls a live stream: data-driven starts (k-means++ on windowed
square-root counts, and the distinct-offsets start below), each a few EM iterations, the
likeliest run on; E-steps in chunks of bins, M-steps with the online learner's
Kronecker-factored curvature, a state left under 0.5% of the bins restarted from the busiest.
The same fit runs again, in slices beside the online learning, on every bin seen when the stream
reaches 2 and 4 times the burn-in (`refits`), from the current model among its starts, its
states taking the labels of the online states they agree with most.
Then, per bin:
1. forward filter: ξ(i, j) ∝ α_{t-1}(i) A_ij p(x_t | j, h_t), α_t = sum_i ξ(i, ·); the
   normaliser is the predictive likelihood of the bin (`extra_outputs()["log_likelihood"]`);
2. transitions by Cappé's (2011) online EM for HMMs: the smoothed two-slice statistics are
   carried forward by the backward kernel p(z_t-1 | z_t, x_1:t), O(K^4) per bin, with step
   γ_t = (t + step_offset)^-κ, plus sticky Dirichlet pseudo-counts. (Averaging the filtered
   ξ instead, the cheaper "counts with forgetting" form, learns transitions that are far too
   jumpy: held-out state accuracy 80% against 92% with the true transitions, measured);
3. GLM weights by responsibility-weighted Newton steps: state k takes step ρ_k = α_t(k) γ_t /
   π̄_k (π̄_k its running occupancy, so each state learns at 1 / its own effective count), with
   a Kronecker-factored curvature per state, Fisher ≈ ā[k, n] · E_k[f fᵀ]: the feature second
   moment's inverse is kept by Sherman-Morrison rank-one updates (no solve per bin) and the
   gradient r (x - λ) f is rank one, so a step costs O(K D² + K N D), D the feature count;
4. the prior, as 1 / (effective count) of its log-density per bin, pulls each coupling weight
   by a proximal step towards its prior mean; the priors' hyperparameters (shared mean and
   variance; type frequencies, strengths, spreads and the type posterior) are re-estimated by EM
   from the current weights every few bins.

Label stability: states start distinct, state k's biases offset by spread * (k - (K-1)/2) (state
0 the quietest) and its coupling weights drawn from the seeded generator; that is one of the
burn-in fit's starts (the others are seeded from the data), and no permutation or relabelling
step ever runs after the fit, so state k keeps its meaning for the rest of the run
(tests/test_glm.py checks the matching of learned to true states is the same in the second
quarter of the stream as at its end).

Not done: fixed-lag smoothing of the GLM responsibilities (they are filtered; the transitions'
statistics are smoothed by Cappé's recursion); the batch EM has no prior.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.base import Learner, StateValue, require_positive_int
from streamlab.learners.local_rules import np_lerp
from streamlab.sim.switching import history_basis

PRIORS = ("none", "gaussian", "onehot")
BASES = ("exponential", "raised_cosine")
SCHEDULES = ("power", "constant")
_HYPER_EVERY = 10  # bins between re-estimates of the priors' hyperparameters
_MAX_STEP = 0.1  # per-bin cap on a weight's change, a trust region for rare spikes
# ridge on the coupling in the burn-in fit (a N(0, 0.1^2) prior per weight, and the same 100
# damps its Newton steps; the online phase then learns the coupling without it): fitted freely
# from 2,000 bins, K states' coupling (K n^2 weights) fits noise and the states follow it.
# Measured (benchmarks/glm_science.py, median sglm - batch EM, seeds 0-9 / held-out 10-19), 1
# -> 100: slow_kernel -0.107 / -0.068 -> -0.019 / +0.024; prev_bin_coupling -0.042 / -0.045 ->
# -0.030 / +0.098; rate_states -0.001 / -0.041 -> -0.002 / -0.005 (its worst seed 0.634 / 0.596
# -> 0.586 / 0.496, still above 1/K + 0.2); 30 left prev_bin_coupling at -0.069
_WARM_RIDGE = 100.0
# The burn-in fit's starts: one that leaves a state under this share of the bins loses to any
# that does not. By likelihood alone the distinct-offsets start won, collapsed (one state on
# 91-99 % of the buffer), on 3 glm_science sessions where a k-means++ start had every state in
# use; then 4 of 60 sessions ended collapsed (batch EM: none), with the rule 1 of 60, medians
# unchanged or up (slow_kernel 4,500 bins 0.82 -> 0.86; its seed 1 0.82 -> 0.95)
_MIN_START_SHARE = 0.02
_RIDGE = 1e-2  # added to the feature moment whenever it is inverted exactly
_MIN_RATE = 1e-3  # floor of ā, the curvature's rate factor (counts per bin)
_MIN_VAR = 1e-2  # floor of the priors' variances (weights' spread >= 0.1)
_PICK_ITER = 3  # EM iterations each burn-in start gets before the best is kept


def _rank_one_average_(
    M: torch.Tensor, P: torch.Tensor, f: torch.Tensor, rate: torch.Tensor
) -> torch.Tensor:
    """M <- (1 - ρ) M + ρ f fᵀ and its inverse P by Sherman-Morrison, in place, with one rate ρ
    per matrix (`local_rules.lateral_rank_one_` takes one scalar rate). `M`, `P` (B, K, D, D),
    `f` (B, D) shared by the K matrices of a stream, `rate` (B, K). Returns P_new f (B, K, D),
    the Newton direction."""
    B, K, D, _ = P.shape
    col = f[:, None, :, None]  # (B, 1, D, 1)
    rho = rate[..., None, None]  # (B, K, 1, 1)
    u = torch.matmul(P, col)  # (B, K, D, 1)
    s = torch.matmul(col.transpose(-1, -2), u)  # fᵀ P f, (B, K, 1, 1)
    denom = torch.addcmul(1.0 - rho, rho, s)  # (1 - ρ) + ρ fᵀ P f
    M.lerp_(col * col.transpose(-1, -2), rho)
    scaled = u * (rho / denom)
    P.view(B * K, D, D).baddbmm_(scaled.view(B * K, D, 1), u.view(B * K, 1, D), alpha=-1.0)
    P.div_(1.0 - rho)
    return u.div_(denom).squeeze(-1)


def _np_rank_one_average_(
    M: np.ndarray, P: np.ndarray, f: np.ndarray, rate: np.ndarray
) -> np.ndarray:
    """`_rank_one_average_` in NumPy on views of the same tensors, op for op."""
    col = f[:, None, :, None]
    rho = rate[..., None, None]
    u = np.matmul(P, col)
    s = np.matmul(col.transpose(0, 1, 3, 2), u)
    denom = (1.0 - rho) + rho * s
    M[...] = np_lerp(M, col * col.transpose(0, 1, 3, 2), rho)
    P -= (u * (rho / denom)) * u.transpose(0, 1, 3, 2)
    P /= 1.0 - rho
    return (u / denom)[..., 0]


class SwitchingGLM(Learner):
    """Hidden brain states, each a Poisson GLM of coupling between neurons, filtered and learned
    per bin (see the module docstring for the maths). `step(x)` takes the counts of one bin (B,
    n), returns the filtered state posterior (B, n_states), then learns; the bin's predictive
    log-likelihood log p(x_t | x_<t) is `extra_outputs()["log_likelihood"]` (B, 1).

    Parameters
    ----------
    n_states
        K, the number of hidden states; the output size (`n_components` is the same number).
    prior
        "none", "gaussian" (state weights scattered around a shared connectome) or "onehot"
        (one connection type per pair shared by the states, strengths per state).
    coupling
        False drops the history terms: a Poisson HMM (with inputs, if any), the baseline.
    history, n_basis, basis
        Bins of spike history, number of basis functions and their kind ("exponential": the
        paper's exp(-lag) kernel when n_basis is 1; "raised_cosine").
    n_inputs
        The last n_inputs channels of each sample are external inputs (stimulus, behaviour)
        entering every state's log-rates linearly in the same bin; they are not modelled.
    stickiness
        Initial probability of staying in a state (the rest spread evenly).
    sticky_prior
        Dirichlet pseudo-counts on staying (1 on each move, so no state becomes absorbing),
        added at the scale of the effective sample.
    burn_in, burn_in_fit, burn_in_iter, burn_in_restarts
        Bins buffered before online learning starts (Cappé's scheme also waits). With
        burn_in_fit="em" the buffer is fitted by `sliced_em`, one bounded unit of work per
        following bin (a chunk of an E-step, or an M-step; see `_fit_chunk`), so no step
        stalls; the online learner then continues from that fit, its statistics and the
        posterior at the buffer's end: a warm start, since purely online EM from scratch tends
        to let one state take every bin while the others starve (measured: 55-67% state
        accuracy after 40k bins, against 98% for batch EM from the same start).
        `burn_in_restarts` starts (k-means++ seeded ones and the distinct-offsets start; 1:
        that start alone) get 3 EM iterations each, the likeliest runs on to `burn_in_iter`.
        2,000 bins by default: with the seeded starts the benchmark's families (K 2-4, dwell
        50-1,500 bins) are fitted as well from 2,000 as batch EM fits the whole stream on most
        seeds; a state absent from the buffer is not found until a refit (benchmarks/
        glm_science.py). While
        the fit runs (about 200-2,700 bins, more neurons take longer) the output is the initial
        model's posterior, and the model does not learn. The buffer goes to the host once.
        "moments" only measures the mean counts and feature moments, then starts every state's
        biases at log(mean rate) plus its offset. During burn-in the output is the initial
        model's posterior. 0: no burn-in, biases start at log(initial_rate).
    refits
        With burn_in_fit="em", the model is fitted again by the same sliced EM on every bin
        seen so far when the stream reaches 2, 4, ... 2^refits times `burn_in` bins (the
        buffer keeps that many), the current model one of the starts; the online learner
        goes on learning meanwhile, then continues from the refit, whose states take the
        labels of the current ones they are closest to (weights matched one to one), so
        state k keeps its meaning. A first buffer misses states that show up later and holds
        few visits of slow ones: on 12,000-bin sessions of `slow_kernel` (benchmarks/
        glm_science.py) the median state accuracy over the last third went 0.64 -> 0.93 and
        the worst seed 0.33 -> 0.53 with 2 refits. Memory: 2^refits x burn_in bins per
        stream.
    schedule, step_exponent, step_offset, min_step
        Step size γ_t of every stochastic-approximation average, t the bins seen (burn-in
        included): "power" is max(min_step, (t + step_offset)^-step_exponent) (step_exponent in
        (0.5, 1] for convergence; 1 is the running average, as batch EM), "constant" is
        min_step (forgetting, for drifting recordings).
    prior_strength
        Multiplies the prior's log-density (1: the Bayesian weight).
    state_spread
        Offset between consecutive states' initial biases (distinct starts, stable labels).
    init_scale
        Standard deviation of the initial coupling weights.
    initial_rate
        Initial firing rate (counts per bin) every bias starts from.
    max_log_rate
        Ceiling of a log-rate, so exp cannot overflow.
    refresh_every
        Bins between exact re-inversions of the curvature (the rank-one recursion drifts).
    check_counts
        Raise InputShapeError on negative or fractional counts (checked every bin on the CPU,
        where reading the result is free; on CUDA only the first bin, to avoid host syncs).
    backend
        `"auto"` (the online learning step in NumPy on the CPU up to 32 streams in lockstep,
        torch beyond and on CUDA), `"torch"` (torch ops everywhere) or `"numpy"` (CPU only);
        the same maths on each. Burn-in and the priors' periodic re-estimates run in torch.
    device, dtype, seed
        As for every learner; `seed` fixes the initial coupling weights.
    """

    def __init__(
        self,
        n_states: int = 3,
        prior: str = "none",
        coupling: bool = True,
        history: int = 5,
        n_basis: int = 1,
        basis: str = "exponential",
        n_inputs: int = 0,
        stickiness: float = 0.98,
        sticky_prior: float = 10.0,
        burn_in: int = 2000,  # with seeded restarts 2k bins suffice (benchmarks/glm_science.py)
        burn_in_fit: str = "em",
        burn_in_iter: int = 10,
        burn_in_restarts: int = 3,  # two k-means++ seeds and the offsets start (see docstring)
        refits: int = 2,
        schedule: str = "power",
        step_exponent: float = 1.0,
        step_offset: float = 100.0,
        min_step: float = 0.0,
        prior_strength: float = 1.0,
        state_spread: float = 0.2,
        init_scale: float = 0.1,
        initial_rate: float = 0.1,
        max_log_rate: float = 8.0,
        refresh_every: int = 200,
        check_counts: bool = True,
        backend: str = "auto",
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_states = n_states
        self.prior = prior
        self.coupling = coupling
        self.history = history
        self.n_basis = n_basis
        self.basis = basis
        self.n_inputs = n_inputs
        self.stickiness = stickiness
        self.sticky_prior = sticky_prior
        self.burn_in = burn_in
        self.burn_in_fit = burn_in_fit
        self.burn_in_iter = burn_in_iter
        self.burn_in_restarts = burn_in_restarts
        self.refits = refits
        self.schedule = schedule
        self.step_exponent = step_exponent
        self.step_offset = step_offset
        self.min_step = min_step
        self.prior_strength = prior_strength
        self.state_spread = state_spread
        self.init_scale = init_scale
        self.initial_rate = initial_rate
        self.max_log_rate = max_log_rate
        self.refresh_every = refresh_every
        self.check_counts = check_counts
        self._init_common(device, dtype, seed)
        self._init_backend(backend)
        for name in ("n_states", "n_basis", "refresh_every", "burn_in_iter", "burn_in_restarts"):
            require_positive_int(getattr(self, name), name)
        for name in ("history", "n_inputs", "burn_in", "refits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {prior!r}")
        if basis not in BASES:
            raise ConfigError(f"basis must be one of {BASES}, got {basis!r}")
        if burn_in_fit not in ("em", "moments"):
            raise ConfigError(f"burn_in_fit must be 'em' or 'moments', got {burn_in_fit!r}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0 < stickiness < 1:
            raise ConfigError(f"stickiness must be in (0, 1), got {stickiness!r}")
        if not 0 <= step_exponent <= 1:
            raise ConfigError(f"step_exponent must be in [0, 1], got {step_exponent!r}")
        if not step_offset >= 1:
            raise ConfigError(f"step_offset must be >= 1, got {step_offset!r}")
        if not 0 <= min_step < 1:
            raise ConfigError(f"min_step must be in [0, 1), got {min_step!r}")
        if schedule == "constant" and not min_step > 0:
            raise ConfigError("schedule='constant' uses min_step as its step: give min_step > 0")
        for name in ("sticky_prior", "prior_strength", "state_spread", "init_scale"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not initial_rate > 0:
            raise ConfigError(f"initial_rate must be > 0 (counts per bin), got {initial_rate!r}")
        if not (math.isfinite(max_log_rate) and max_log_rate > math.log(initial_rate)):
            raise ConfigError(
                f"max_log_rate must be finite and above log(initial_rate), got {max_log_rate!r}"
            )
        if burn_in_fit == "em" and burn_in:
            # the fits' SciPy modules imported now, not by the live step that starts a fit
            # (measured: 166 ms for scipy.special, 128 ms for scipy.optimize)
            import scipy.optimize
            import scipy.special  # noqa: F401

    @property
    def n_components(self) -> int:  # type: ignore[override]
        """The output size: one posterior probability per state."""
        return self.n_states

    @property
    def _lags(self) -> int:
        return int(self.history) if self.coupling else 0

    # -- state ------------------------------------------------------------------------------------
    def _allocate(self, n_features: int, batch: int) -> None:
        n = n_features - int(self.n_inputs)
        if n < 1:
            raise InputShapeError(
                f"SwitchingGLM has n_inputs={self.n_inputs} input channels but samples have only "
                f"{n_features} channels; each sample is the neurons' counts, then the inputs"
            )
        K, L = int(self.n_states), self._lags
        n_hist = int(self.n_basis) * n if L else 0
        D = n_hist + int(self.n_inputs) + 1
        self._n_neurons, self._n_hist, self._D = n, n_hist, D
        basis = history_basis(self.basis, L, int(self.n_basis)) if L else np.zeros((1, 0))
        # rolled[c] maps the circular buffer (newest bin at slot c) to the basis features
        slots = np.arange(L)
        rolled = np.stack([basis[:, (c - 1 - slots) % L] for c in range(L)]) if L else basis[None]
        self._rolled = torch.as_tensor(rolled, dtype=self._torch_dtype, device=self._device)
        self._buffer = self._zeros(batch, L, n)
        offsets = (torch.arange(K, dtype=self._torch_dtype) - (K - 1) / 2) * self.state_spread
        self._W = self._randn(batch, K, n, D) * self.init_scale
        self._W[..., n_hist:] = 0.0
        self._W[..., -1] = math.log(self.initial_rate) + offsets.to(self._device)[:, None]
        eye = torch.eye(D, dtype=self._torch_dtype, device=self._device)
        self._M = eye.repeat(batch, K, 1, 1)
        self._P = eye.repeat(batch, K, 1, 1)
        self._abar = self._zeros(batch, K, n) + self.initial_rate
        self._occupancy = self._zeros(batch, K) + 1.0 / K
        off = (1.0 - self.stickiness) / max(K - 1, 1)
        A = torch.full((K, K), off, dtype=self._torch_dtype) + torch.eye(
            K, dtype=self._torch_dtype
        ) * (self.stickiness - off)
        self._A = A.to(self._device).repeat(batch, 1, 1)
        self._counts = self._A / K  # smoothed two-slice averages (stationary start)
        self._smoothed = self._counts.unsqueeze(3).repeat(1, 1, 1, K)  # Cappé's ρ[i, j, k]
        self._scratch_rho = self._zeros(batch, K * K, K)
        self._eye_k = torch.eye(K, dtype=self._torch_dtype, device=self._device)
        # Dirichlet pseudo-counts: sticky_prior on staying, 1 on each move (no absorbing state)
        self._pseudo = (
            torch.eye(K, dtype=self._torch_dtype, device=self._device) * float(self.sticky_prior)
            + 1.0
        )
        self._alpha = self._zeros(batch, K) + 1.0 / K
        self._last_ll = self._zeros(batch, 1)
        # priors' hyperparameters: gaussian mean (B, n, n_hist) and variance; onehot type
        # posterior (B, n, n, 3), type frequencies, means and variances (inh, none, exc)
        self._wbar = self._zeros(batch, n, n_hist)
        self._sigma2 = self._zeros(batch, 1) + 0.25
        self._types = self._zeros(batch, n, n if L else 0, 3) + 1.0 / 3
        self._type_freq = torch.tensor([0.1, 0.8, 0.1], dtype=self._torch_dtype).repeat(batch, 1)
        self._type_mean = torch.tensor([-0.5, 0.0, 0.5], dtype=self._torch_dtype).repeat(batch, 1)
        self._type_var = torch.tensor([0.25, 0.25, 0.25], dtype=self._torch_dtype).repeat(batch, 1)
        for name in ("_type_freq", "_type_mean", "_type_var"):
            setattr(self, name, getattr(self, name).to(self._device))
        self._scratch_f = self._zeros(batch, D)
        self._scratch_f[:, -1] = 1.0
        self._prior_mean = self._zeros(batch, 1, n, n_hist)
        self._prior_precision = self._zeros(batch, 1, n, n_hist)
        self._cursor = 0
        self._checked = False
        self._fit_units = -1  # units of the sliced burn-in fit done; -1: none running
        self._fit_gens: list | None = None
        burn = int(self.burn_in) if self.burn_in_fit == "em" else 0
        self._capacity = burn * 2 ** int(self.refits)  # bins buffered for the fit and refits
        self._burn = self._zeros(batch, self._capacity, n_features)
        self._refits_done = 0
        self._refit_units = -1  # units of the running refit done; -1: none running
        self._refit_gens: list | None = None
        refitting = self._capacity > burn
        # the model each refit started from (its start, replayed after a checkpoint)
        self._refit_W = self._zeros(batch, K, n, D) if refitting else self._zeros(0)
        self._refit_A = self._zeros(batch, K, K) if refitting else self._zeros(0)
        # the online filter's state for each buffered bin after the burn-in fit (-1 before):
        # a refit's states take the labels they agree with most on the buffer
        self._labels = self._zeros(batch, self._capacity if refitting else 0).fill_(-1.0)

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "W": self._W,
            "M": self._M,
            "P": self._P,
            "abar": self._abar,
            "occupancy": self._occupancy,
            "A": self._A,
            "counts": self._counts,
            "smoothed": self._smoothed,
            "alpha": self._alpha,
            "buffer": self._buffer,
            "last_ll": self._last_ll,
            "wbar": self._wbar,
            "sigma2": self._sigma2,
            "types": self._types,
            "type_freq": self._type_freq,
            "type_mean": self._type_mean,
            "type_var": self._type_var,
            "prior_mean": self._prior_mean,
            "prior_precision": self._prior_precision,
            "burn": self._burn,
            "refit_W": self._refit_W,
            "refit_A": self._refit_A,
            "labels": self._labels,
        }

    def _state_scalars(self) -> dict[str, StateValue]:
        return {
            "cursor": int(self._cursor),
            "fit_units": int(self._fit_units),
            "refits_done": int(self._refits_done),
            "refit_units": int(self._refit_units),
        }

    def _load_scalars(self, scalars: dict[str, Any]) -> None:
        self._cursor = int(scalars["cursor"])
        self._fit_units = int(scalars.get("fit_units", -1))
        self._refits_done = int(scalars.get("refits_done", 0))
        self._refit_units = int(scalars.get("refit_units", -1))
        self._fit_gens = self._refit_gens = None  # rebuilt and replayed on the next step

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_fit_gens"] = state["_refit_gens"] = None  # replayed from the unit counts
        return state

    def extra_outputs(self) -> dict[str, torch.Tensor]:
        """`log_likelihood`: log p(x_t | x_<t) of the last bin under the model before it learned
        from that bin (B, 1), nats; its running mean is the held-out-style score."""
        return {"log_likelihood": self._last_ll}

    # -- readouts ---------------------------------------------------------------------------------
    @property
    def transitions(self) -> torch.Tensor:
        """The learned transition matrix (B, K, K), rows: from."""
        return self._A

    def coupling_weights(self) -> torch.Tensor:
        """Per-state coupling (B, K, n, n): w[k, i, j], neuron i on neuron j's history, summed
        over basis functions (each basis function sums to 1 for the exponential basis)."""
        n, K = self._n_neurons, int(self.n_states)
        if not self._n_hist:
            return self._zeros(self._batch, K, n, n)
        W = self._W[..., : self._n_hist].reshape(self._batch, K, n, int(self.n_basis), n)
        return W.sum(3)

    def biases(self) -> torch.Tensor:
        """Per-state log-rates at zero history and input (B, K, n)."""
        return self._W[..., -1]

    def connectome(self) -> torch.Tensor:
        """Score of each connection i <- j existing (B, n, n), from the shared structure: with
        the one-hot prior 1 - P(type none); otherwise |the states' mean coupling|."""
        if self.prior == "onehot":
            return 1.0 - self._types[..., 1]
        return self.coupling_weights().mean(1).abs()

    def connectome_sign(self) -> torch.Tensor:
        """Signed shared structure (B, n, n): P(exc) - P(inh) (one-hot), else mean coupling."""
        if self.prior == "onehot":
            return self._types[..., 2] - self._types[..., 0]
        return self.coupling_weights().mean(1)

    def parameters_of(self, stream: int = 0) -> SwitchingGLMParams:
        """The model of one stream as NumPy (the form `fit_switching_glm_batch` returns)."""
        basis = (
            history_basis(self.basis, self._lags, int(self.n_basis))
            if self._lags
            else np.zeros((1, 0))
        )
        return SwitchingGLMParams(
            weights=self._W[stream].double().cpu().numpy(),
            transitions=self._A[stream].double().cpu().numpy(),
            initial=np.full(int(self.n_states), 1.0 / int(self.n_states)),
            basis=basis,
            n_inputs=int(self.n_inputs),
            max_log_rate=float(self.max_log_rate),
        )

    # -- the filter -------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        if not self.check_counts or (self._device.type != "cpu" and self._checked):
            return
        self._checked = True
        if self._device.type == "cpu":  # NumPy: a few microseconds instead of torch's tens
            counts = x.numpy()[:, : self._n_neurons]
            bad = bool((counts < 0).any() or (counts != np.floor(counts)).any())
        else:
            counts = x[:, : self._n_neurons]
            bad = bool(((counts < 0) | (counts != torch.floor(counts))).any())
        if bad:
            raise InputShapeError(
                "SwitchingGLM models spike counts: got a negative or fractional count; bin "
                "spikes into non-negative integer counts (or pass check_counts=False)"
            )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """f_t (B, D): basis-filtered history of the neurons' past counts, the inputs, 1 (in a
        scratch buffer allocated once; not state)."""
        f = self._scratch_f
        if self._n_hist:
            hist = torch.matmul(self._rolled[self._cursor % self._lags], self._buffer)
            f[:, : self._n_hist].copy_(hist.view(self._batch, -1))
        if self.n_inputs:
            f[:, self._n_hist : -1].copy_(x[:, self._n_neurons :])
        return f

    def _filter(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features f, rates λ (B, K, n), two-slice posterior ξ (B, K, K), posterior α_t (B, K),
        predictive log-likelihood (B, 1)) for bin x, without changing any state."""
        B, K, n, D = self._batch, int(self.n_states), self._n_neurons, self._D
        counts = x[:, :n] if self.n_inputs else x
        f = self._features(x)
        eta = torch.bmm(self._W.view(B, K * n, D), f.unsqueeze(2)).view(B, K, n)
        eta.clamp_(max=self.max_log_rate)
        rate = eta.exp()
        # log p(x | k) without log x!, which is the same for every state
        ll = torch.bmm(eta, counts.unsqueeze(2)).squeeze(2).sub_(rate.sum(2))
        top = ll.amax(1, keepdim=True)
        joint = (self._alpha.unsqueeze(2) * self._A).mul_(ll.sub_(top).exp_().unsqueeze(1))
        norm = joint.sum((1, 2)).unsqueeze(1)  # (B, 1)
        xi = joint.div_(norm.unsqueeze(2))
        log_lik = norm.log_().add_(top).sub_(torch.lgamma(counts + 1.0).sum(1, keepdim=True))
        return f, rate, xi, xi.sum(1), log_lik

    def _advance(self, x: torch.Tensor, alpha: torch.Tensor, log_lik: torch.Tensor) -> None:
        self._alpha.copy_(alpha)
        self._last_ll.copy_(log_lik)
        self._advance_history(x)

    def _advance_history(self, x: torch.Tensor) -> None:
        if self._lags:
            self._buffer[:, self._cursor % self._lags].copy_(x[:, : self._n_neurons])
        self._cursor += 1

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self._filter(x)[3]

    def track(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Filter bin x ((n,) or (B, n)) without learning: returns the posterior and moves the
        filter and history on, with the parameters frozen (scoring held-out data)."""
        batched = self._as_batch(x)
        self._check(batched)
        _, _, _, alpha, log_lik = self._filter(batched)
        self._advance(batched, alpha, log_lik)
        return alpha if self._batched_input else alpha[0]

    def reset_state(self) -> None:
        """Forget the filtered posterior and spike history (a new session), keeping the model."""
        if self.is_initialized:
            self._alpha.fill_(1.0 / int(self.n_states))
            self._buffer.zero_()

    # -- learning ---------------------------------------------------------------------------------
    def _step_size(self) -> float:
        if self.schedule == "constant":
            return float(self.min_step)
        t = self._steps
        return max(float(self.min_step), (t + self.step_offset) ** -self.step_exponent)

    def _measure(self, x: torch.Tensor, f: torch.Tensor) -> None:
        """Burn-in: buffer the bin (for "em"), or keep running means of the counts and of f fᵀ
        (for "moments"); at its last bin, start the online learner from them."""
        if self.burn_in_fit == "em":
            self._burn[:, self._steps].copy_(x)
            if self._steps + 1 == int(self.burn_in):
                self._fit_units = 0  # the fit runs in slices over the next bins
            return
        weight = 1.0 / (self._steps + 1)
        self._abar.lerp_(x[:, None, : self._n_neurons].expand_as(self._abar), weight)
        self._M.lerp_((f[:, :, None] * f[:, None, :]).unsqueeze(1).expand_as(self._M), weight)
        if self._steps + 1 == int(self.burn_in):
            K = int(self.n_states)
            offsets = (torch.arange(K, dtype=x.dtype, device=x.device) - (K - 1) / 2) * (
                self.state_spread
            )
            self._abar.clamp_(min=1e-2)
            self._W[..., -1].copy_(self._abar.log() + offsets[:, None])
            eye = torch.eye(self._D, dtype=x.dtype, device=x.device)
            self._P.copy_(torch.linalg.inv_ex(self._M + _RIDGE * eye).inverse)

    def _fit_chunk(self) -> int:
        """Bins per unit of the sliced burn-in fit: about 2^20 multiply-adds of emissions and
        statistics per unit (K (n D + D²) per bin), 64-512 bins: a unit then costs a few online
        steps (benchmarks/glm_science.py: median 2-3x, 6x at most at 60 neurons) and the fit
        ends within about 1,000 bins at 60 neurons (2^18 took 2,700 bins there, longer than the
        burn-in itself)."""
        K, n, D = int(self.n_states), self._n_neurons, self._D
        return int(np.clip(2**20 // (K * (n * D + D * D)), 64, 512))

    def _fit_generators(self, refit: int = 0) -> list:
        """One `sliced_em` generator per stream, replayed to the units already done (after a
        checkpoint is restored mid-fit): the burn-in fit (refit 0) on the first `burn_in`
        bins from the distinct-offsets start, or refit r on the first burn_in * 2^r bins from
        the model as it was when that refit began."""
        bins = int(self.burn_in) * 2**refit
        data = self._burn[:, :bins].double().cpu().numpy()
        labels = self._labels[:, :bins].cpu().numpy() if refit else None
        K, lags = int(self.n_states), self._lags
        basis = history_basis(self.basis, lags, int(self.n_basis)) if lags else np.zeros((1, 0))
        gens = []
        for b in range(self._batch):
            if refit:
                start = self._refit_W[b].double().cpu().numpy()
                transitions = self._refit_A[b].double().cpu().numpy()
            else:
                start = self._W[b].double().cpu().numpy().copy()
                neurons = data[b, :, : self._n_neurons]
                # distinct offsets kept, centred on the buffer's log mean rates
                start[..., -1] = np.log(neurons.mean(0) + 1e-2)[None, :] + (
                    start[..., -1] - start[..., -1].mean(0, keepdims=True)
                )
                transitions = self._A[b].double().cpu().numpy()
            gen = sliced_em(
                data[b],
                K,
                basis,
                int(self.n_inputs),
                start,
                transitions,
                n_iter=int(self.burn_in_iter),
                restarts=int(self.burn_in_restarts),
                seed=(0 if self.seed is None else int(self.seed)) * 7919 + b + 104729 * refit,
                chunk=self._fit_chunk(),
                ridge=_WARM_RIDGE,
                max_log_rate=float(self.max_log_rate),
                labels=labels[b] if refit else None,
            )
            for _ in range(self._refit_units if refit else self._fit_units):
                next(gen)
            gens.append(gen)
        return gens

    @staticmethod
    def _advance_fits(gens: list) -> list:
        """One bounded unit of each stream's fit; the results once they have all ended (every
        stream's fit has the same number of units)."""
        results = []
        for gen in gens:
            try:
                next(gen)
            except StopIteration as done:
                results.append(done.value)
        return results

    def _fit_slice(self) -> None:
        """One bounded unit of every stream's burn-in fit; at the end, load the fits."""
        if self._fit_gens is None:
            self._fit_gens = self._fit_generators()
        results = self._advance_fits(self._fit_gens)
        self._fit_units += 1
        if results:
            for b, (fit, acc, _) in enumerate(results):
                self._load_fit(b, fit, acc)
            self._fit_units, self._fit_gens = -1, None

    def _refit_work(self) -> None:
        """After a learning bin: one unit of the running refit, or start the next one when the
        buffer holds burn_in * 2^r bins (see `refits`); the model learns online meanwhile."""
        if self._refit_units >= 0:
            refit = self._refits_done + 1
            if self._refit_gens is None:
                self._refit_gens = self._fit_generators(refit)
            results = self._advance_fits(self._refit_gens)
            self._refit_units += 1
            if results:
                for b, (fit, acc, _) in enumerate(results):
                    self._load_refit(b, fit, acc, int(self.burn_in) * 2**refit)
                self._refit_units, self._refit_gens = -1, None
                self._refits_done = refit
        elif (
            self._fit_units < 0
            and self._refits_done < int(self.refits)
            and self._capacity
            and self._steps >= int(self.burn_in) * 2 ** (self._refits_done + 1)
        ):
            self._refit_W.copy_(self._W)
            self._refit_A.copy_(self._A)
            self._refit_units = 0

    def _load_refit(self, b: int, fit: SwitchingGLMParams, acc: _Accumulated, bins: int) -> None:
        """Stream b continues from its refit, each refitted state taking the label of the
        current state it agrees with most over the buffer (one to one: the refit's smoothed
        posterior against the online filter's state in each bin), so labels keep their
        meaning; the filtered posterior is the online filter's. (Matching whole weight vectors
        relabelled states: the coupling weights, many and noisy, outweighed the rates; so did
        matching mean rates where states differ little in them.)"""
        from scipy.optimize import linear_sum_assignment

        agree = acc.agree if acc.agree is not None else np.eye(len(fit.transitions))
        perm = linear_sum_assignment(-agree)[1]  # current state i <- refitted state perm[i]
        fit.weights = fit.weights[perm]
        fit.transitions = fit.transitions[np.ix_(perm, perm)]
        acc.post_sum, acc.rate_sum = acc.post_sum[perm], acc.rate_sum[perm]
        acc.moments, acc.grad = acc.moments[perm], acc.grad[perm]
        acc.two = acc.two[np.ix_(perm, perm)]
        self._load_fit(b, fit, acc, bins, keep_alpha=True)

    def _load_fit(
        self,
        b: int,
        fit: SwitchingGLMParams,
        acc: _Accumulated,
        bins: int | None = None,
        keep_alpha: bool = False,
    ) -> None:
        """Start stream b's online learner from a fit of its first `bins` bins (None: the
        burn-in) and the statistics of the fit's last E-step: weights, transitions, occupancy,
        two-slice averages, responsibility-weighted feature moments (and their inverse), mean
        rates, and (unless `keep_alpha`) the posterior at the buffer's end."""
        K = int(self.n_states)
        weight = acc.post_sum + 1e-6
        moments = acc.moments / weight[:, None, None] + _RIDGE * np.eye(self._D)
        mean_rate = acc.rate_sum / weight[:, None]
        as_tensor = {"dtype": self._torch_dtype, "device": self._device}
        self._W[b].copy_(torch.as_tensor(fit.weights, **as_tensor))
        self._A[b].copy_(torch.as_tensor(fit.transitions, **as_tensor))
        bins = int(self.burn_in) if bins is None else bins
        counts = torch.as_tensor(acc.two / max(bins - 1, 1), **as_tensor)
        self._counts[b].copy_(counts)
        self._smoothed[b].copy_(counts.unsqueeze(2).expand(K, K, K))
        self._occupancy[b].copy_(torch.as_tensor(weight / weight.sum(), **as_tensor))
        self._M[b].copy_(torch.as_tensor(moments, **as_tensor))
        self._P[b].copy_(torch.as_tensor(np.linalg.inv(moments), **as_tensor))
        self._abar[b].copy_(torch.as_tensor(np.maximum(mean_rate, _MIN_RATE), **as_tensor))
        if not keep_alpha:
            self._alpha[b].copy_(torch.as_tensor(acc.alpha_last, **as_tensor))

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if int(self.burn_in) <= self._steps < self._capacity:  # the refits' longer buffer
            self._burn[:, self._steps].copy_(x)
        alpha = self._learn_bin(x)
        if self._capacity > int(self.burn_in):
            t = self._steps - 1
            if t < self._capacity and self._fit_units < 0 and t >= int(self.burn_in):
                self._labels[:, t].copy_(alpha.argmax(1))
            self._refit_work()
        return alpha

    def _learn_bin(self, x: torch.Tensor) -> torch.Tensor:
        """Filter bin x and learn from it (or buffer it, or run a slice of the burn-in fit)."""
        fitting = self._fit_units >= 0
        if self._numpy_step and self._steps >= int(self.burn_in) and not fitting:
            return self._update_numpy(x)
        f, rate, xi, alpha, log_lik = self._filter(x)
        if fitting:  # the burn-in fit runs one bounded slice per bin; the model is not learning
            self._advance(x, alpha, log_lik)
            self._steps += 1
            self._fit_slice()
            return alpha
        if self._steps < int(self.burn_in):
            self._advance_history(x)
            self._measure(x, f)
            self._steps += 1
            self._alpha.copy_(alpha)
            self._last_ll.copy_(log_lik)
            return alpha
        gamma = self._step_size()
        # transitions by Cappé's online EM: ρ[i, j, k] = E[averaged 1{z_s-1 = i, z_s = j} |
        # x_1:t, z_t = k], carried by the backward kernel r(k' | k) = p(z_t-1 = k' | z_t = k,
        # x_1:t) = ξ(k', k) / α_t(k); the smoothed statistic is sum_k ρ[i, j, k] α_t(k)
        B, K = self._batch, int(self.n_states)
        back = xi / alpha.unsqueeze(1).clamp(min=1e-30)  # (B, K', K)
        flat = self._smoothed.view(B, K * K, K)
        torch.bmm(flat, back, out=self._scratch_rho).mul_(1.0 - gamma)
        fresh = back.unsqueeze(2) * self._eye_k  # [i, j, k] = r(i | k) 1{j = k}
        flat.copy_(self._scratch_rho.add_(fresh.view(B, K * K, K), alpha=gamma))
        self._counts.copy_(torch.bmm(flat, alpha.unsqueeze(2)).view(B, K, K))
        A = torch.add(self._counts, self._pseudo, alpha=gamma)
        torch.div(A, A.sum(2, keepdim=True), out=self._A)
        # per-state rates ρ_k = r_k γ / π̄_k
        self._occupancy.lerp_(alpha, gamma)
        rho = torch.div(alpha, self._occupancy).mul_(gamma).clamp_(max=0.5)  # (B, K)
        direction = _rank_one_average_(self._M, self._P, f, rho)  # (B, K, D)
        rho3 = rho.unsqueeze(2)
        self._abar.lerp_(rate, rho3).clamp_(min=_MIN_RATE)
        counts = x[:, : self._n_neurons] if self.n_inputs else x
        coef = torch.sub(counts.unsqueeze(1), rate).mul_(rho3).div_(self._abar)
        step = torch.mul(coef.unsqueeze(3), direction.unsqueeze(2))
        self._W.add_(step.clamp_(-_MAX_STEP, _MAX_STEP))
        if self.prior != "none" and self._n_hist:
            self._prior_step(gamma)
            if self._steps % _HYPER_EVERY == 0:
                self._update_hyperparameters()
        if self.refresh_every and (self._steps + 1) % int(self.refresh_every) == 0:
            eye = torch.eye(self._D, dtype=x.dtype, device=x.device)
            self._P.copy_(torch.linalg.inv_ex(self._M + _RIDGE * eye).inverse)
        self._steps += 1
        self._advance(x, alpha, log_lik)
        return alpha

    _numpy_max_batch = 32  # measured: NumPy 2.2x torch at 8 streams, behind from 64

    def _update_numpy(self, x: torch.Tensor) -> torch.Tensor:
        """One online bin (past burn-in) in NumPy on views of the same CPU tensors, op for op
        `_filter` and `_update`; the prior's steps and the curvature's re-inversion stay in
        torch ops on the same memory."""
        v = self._views()
        B, K, n, D = self._batch, int(self.n_states), self._n_neurons, self._D
        W, A, alpha_state, abar = v["W"], v["A"], v["alpha"], v["abar"]
        xn = x.numpy()
        counts = xn[:, :n]
        # the filter: features, rates, two-slice posterior, predictive log-likelihood
        f = v["scratch_f"]
        lags = self._lags
        if self._n_hist:
            hist = np.matmul(v["rolled"][self._cursor % lags], v["buffer"])
            f[:, : self._n_hist] = hist.reshape(B, -1)
        if self.n_inputs:
            f[:, self._n_hist : -1] = xn[:, n:]
        eta = np.matmul(W.reshape(B, K * n, D), f[:, :, None]).reshape(B, K, n)
        np.minimum(eta, self.max_log_rate, out=eta)
        rate = np.exp(eta)
        ll = np.matmul(eta, counts[:, :, None])[:, :, 0] - rate.sum(2)
        top = ll.max(1, keepdims=True)
        joint = (alpha_state[:, :, None] * A) * np.exp(ll - top)[:, None, :]
        norm = joint.sum((1, 2))[:, None]
        xi = joint / norm[:, :, None]
        log_factorial = torch.lgamma(x[:, :n] + 1.0).sum(1, keepdim=True).numpy()
        log_lik = np.log(norm) + top - log_factorial
        alpha = xi.sum(1)
        # transitions by Cappé's online EM (see `_update`)
        gamma = self._step_size()
        back = xi / np.maximum(alpha[:, None, :], 1e-30)
        flat = v["smoothed"].reshape(B, K * K, K)
        fresh = back[:, :, None, :] * v["eye_k"]
        flat[...] = np.matmul(flat, back) * (1.0 - gamma) + fresh.reshape(B, K * K, K) * gamma
        v["counts"][...] = np.matmul(flat, alpha[:, :, None]).reshape(B, K, K)
        new_A = v["counts"] + v["pseudo"] * gamma
        A[...] = new_A / new_A.sum(2, keepdims=True)
        occupancy = v["occupancy"]
        occupancy[...] = np_lerp(occupancy, alpha, gamma)
        rho = np.minimum(alpha / occupancy * gamma, 0.5)
        direction = _np_rank_one_average_(v["M"], v["P"], f, rho)
        rho3 = rho[:, :, None]
        abar[...] = np.maximum(np_lerp(abar, rate, rho3), _MIN_RATE)
        coef = (counts[:, None, :] - rate) * rho3 / abar
        W += np.clip(coef[..., None] * direction[:, :, None, :], -_MAX_STEP, _MAX_STEP)
        if self.prior != "none" and self._n_hist:
            self._prior_step(gamma)
            if self._steps % _HYPER_EVERY == 0:
                self._update_hyperparameters()
        if self.refresh_every and (self._steps + 1) % int(self.refresh_every) == 0:
            eye = torch.eye(D, dtype=x.dtype, device=x.device)
            self._P.copy_(torch.linalg.inv_ex(self._M + _RIDGE * eye).inverse)
        self._steps += 1
        alpha_state[...] = alpha
        v["last_ll"][...] = log_lik
        if lags:
            v["buffer"][:, self._cursor % lags] = counts
        self._cursor += 1
        return torch.from_numpy(alpha)

    def _numpy_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **self._state_tensors(),
            "rolled": self._rolled,
            "scratch_f": self._scratch_f,
            "eye_k": self._eye_k,
            "pseudo": self._pseudo,
        }

    def _prior_step(self, gamma: float) -> None:
        """Proximal pull of each coupling weight towards its prior mean. The log-prior counts
        1 / T per bin (T the bins seen), in the metric of the data steps, (γ / π̄_k) (ā M_k)^-1
        with M_k^-1 by its diagonal, so the fixed point is the MAP: T · mean gradient = prior's."""
        n_hist = self._n_hist
        diag = torch.diagonal(self._P, dim1=-2, dim2=-1)[..., :n_hist]  # (B, K, n_hist)
        total = self._steps + self.step_offset
        scale = (gamma * self.prior_strength / total / self._occupancy).unsqueeze(2)
        c = scale.unsqueeze(3) * diag.unsqueeze(2) / self._abar.unsqueeze(3)  # (B, K, n, n_hist)
        ct = c * self._prior_precision
        W = self._W[..., :n_hist]
        W.add_(ct * self._prior_mean).div_(1.0 + ct)

    def _update_hyperparameters(self) -> None:
        """EM re-estimate of the prior's hyperparameters from the current coupling weights, and
        the per-weight Gaussian pull (mean, precision) they imply."""
        B, n, nb = self._batch, self._n_neurons, int(self.n_basis)
        W = self._W[..., : self._n_hist]  # (B, K, n, nb * n)
        if self.prior == "gaussian":
            mean = W.mean(1)
            var = ((W - mean.unsqueeze(1)) ** 2).mean((1, 2, 3)).clamp_(min=_MIN_VAR)
            self._wbar.copy_(mean)
            self._sigma2.copy_(var.unsqueeze(1))
            self._prior_mean.copy_(mean.unsqueeze(1))
            self._prior_precision.copy_((1.0 / var)[:, None, None, None].expand_as(mean[:, None]))
            return
        # one-hot: per connection (i <- j) one type; weights of all states and basis functions
        # are its draws from N(mean_type, var_type)
        Wc = W.reshape(B, -1, n, nb, n).permute(0, 2, 4, 1, 3).reshape(B, n, n, -1)
        draws = Wc.shape[-1]
        mu = self._type_mean[:, None, None, :]  # (B, 1, 1, 3)
        var = self._type_var[:, None, None, :]
        sq = ((Wc.unsqueeze(-1) - mu.unsqueeze(3)) ** 2).sum(3)  # (B, n, n, 3)
        log_post = self._type_freq.log()[:, None, None, :] - 0.5 * (sq / var + draws * var.log())
        q = torch.softmax(log_post, dim=-1)
        self._types.copy_(q)
        total = q.sum((1, 2)).clamp_(min=1e-6)  # (B, 3)
        self._type_freq.copy_((total / (n * n)).clamp_(min=1e-3))
        self._type_freq.div_(self._type_freq.sum(1, keepdim=True))
        wsum = Wc.sum(-1)  # (B, n, n)
        exc = (q[..., 2] * wsum).sum((1, 2)) / (total[:, 2] * draws)
        inh = (q[..., 0] * wsum).sum((1, 2)) / (total[:, 0] * draws)
        self._type_mean[:, 2].copy_(exc.clamp(min=0.05))
        self._type_mean[:, 0].copy_(inh.clamp(max=-0.05))
        sq = ((Wc.unsqueeze(-1) - self._type_mean[:, None, None, None, :]) ** 2).sum(3)
        v_none = (q[..., 1] * sq[..., 1]).sum((1, 2)) / (total[:, 1] * draws)
        v_slab = ((q[..., 0] * sq[..., 0]).sum((1, 2)) + (q[..., 2] * sq[..., 2]).sum((1, 2))) / (
            (total[:, 0] + total[:, 2]) * draws
        )
        v_none = v_none.clamp(min=_MIN_VAR)
        self._type_var[:, 1].copy_(v_none)
        v_slab = torch.maximum(v_slab, 4.0 * v_none)
        self._type_var[:, 0].copy_(v_slab)
        self._type_var[:, 2].copy_(v_slab)
        precision_t = q / self._type_var[:, None, None, :]  # (B, n, n, 3)
        precision = precision_t.sum(-1)
        mean = (precision_t * self._type_mean[:, None, None, :]).sum(-1) / precision
        # back to the weight layout (B, 1, n, nb * n): the same pull for every basis function
        self._prior_mean.copy_(mean.unsqueeze(2).expand(B, n, nb, n).reshape(B, 1, n, nb * n))
        self._prior_precision.copy_(
            precision.unsqueeze(2).expand(B, n, nb, n).reshape(B, 1, n, nb * n)
        )

    @classmethod
    def _unit_test_params(cls):
        yield {"n_states": 2, "burn_in": 0, "check_counts": False, "device": "cpu", "seed": 0}
        yield {
            "n_states": 3,
            "prior": "onehot",
            "history": 3,
            "n_basis": 2,
            "basis": "raised_cosine",
            "burn_in": 20,
            "burn_in_fit": "moments",
            "check_counts": False,
            "device": "cpu",
            "seed": 1,
        }
        yield {
            "n_states": 2,
            "prior": "gaussian",
            "coupling": False,
            "burn_in": 10,
            "burn_in_iter": 2,
            "check_counts": False,
            "device": "cpu",
            "seed": 2,
        }


# -- the offline reference: batch EM ---------------------------------------------------------------
@dataclass
class SwitchingGLMParams:
    """A switching Poisson GLM as NumPy: `weights` (K, n, D) over features [history (basis-major,
    n_basis x n), inputs, 1], `transitions` (K, K), `initial` (K,), `basis` (n_basis, history)."""

    weights: np.ndarray
    transitions: np.ndarray
    initial: np.ndarray
    basis: np.ndarray
    n_inputs: int = 0
    max_log_rate: float | np.ndarray = 8.0  # a scalar, or per neuron (n,)


def glm_features(counts: np.ndarray, basis: np.ndarray, n_inputs: int = 0) -> np.ndarray:
    """Features (T, D) of a recording (T, n + n_inputs): each basis function applied to the
    neurons' past counts (lag 1 first; zeros before the start), the inputs, then 1."""
    counts = np.asarray(counts, dtype=np.float64)
    neurons = counts[:, : counts.shape[1] - n_inputs]
    T, n = neurons.shape
    parts = []
    lags = basis.shape[1]
    for b in range(basis.shape[0] if lags else 0):
        hist = np.zeros((T, n))
        for lag in range(1, lags + 1):
            hist[lag:] += basis[b, lag - 1] * neurons[:-lag]
        parts.append(hist)
    if n_inputs:
        parts.append(counts[:, counts.shape[1] - n_inputs :])
    parts.append(np.ones((T, 1)))
    return np.concatenate(parts, axis=1)


def _emission_log_likelihood(
    params: SwitchingGLMParams, counts: np.ndarray, features: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(log p(x_t | state k) (T, K) including -log x!, rates (T, K, n))."""
    neurons = counts[:, : counts.shape[1] - params.n_inputs]
    eta = np.minimum(np.einsum("td,knd->tkn", features, params.weights), params.max_log_rate)
    rate = np.exp(eta)
    from scipy.special import gammaln

    ll = (neurons[:, None, :] * eta - rate).sum(-1) - gammaln(neurons + 1.0).sum(1)[:, None]
    return ll, rate


def _chain_products(mats: np.ndarray) -> np.ndarray:
    """Prefix products mats[0] @ ... @ mats[t] for every t (T, K, K), each rescaled to sum 1,
    by a parallel (Hillis-Steele) scan: log2(T) vectorised steps instead of a Python loop."""
    out = mats / mats.sum((1, 2), keepdims=True)
    shift = 1
    while shift < len(out):
        new = out[:-shift] @ out[shift:]
        out[shift:] = new / new.sum((1, 2), keepdims=True)
        shift *= 2
    return out


def _forward_backward(
    params: SwitchingGLMParams, ll: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(filtered α (T, K), smoothed γ (T, K), summed two-slice ξ (K, K), per-bin predictive
    log-likelihoods (T,)) of the HMM with emission log-likelihoods `ll`."""
    top = ll.max(1, keepdims=True)
    e = np.exp(np.maximum(ll - top, -600.0))  # floored: no product of the scan underflows
    A = params.transitions
    mats = A[None] * e[:, None, :]  # M_t = A diag(e_t)
    mats[0] = np.diag(params.initial * e[0])  # the start: α_0 ∝ π0 ⊙ e_0
    prefix = _chain_products(mats.copy())
    alpha = prefix.sum(1)  # (row vector of ones) @ prefix: α_t up to scale
    alpha /= alpha.sum(1, keepdims=True)
    predicted = np.empty_like(alpha)
    predicted[0] = params.initial
    predicted[1:] = alpha[:-1] @ A
    log_lik = np.log((predicted * e).sum(1)) + top[:, 0]
    # β_t ∝ M_{t+1} ... M_T 1: suffix products, as prefix products of the reversed transposes
    rev = np.ascontiguousarray(mats[:0:-1].transpose(0, 2, 1))
    suffix = _chain_products(rev).sum(1)[::-1]  # β_0 .. β_{T-2}
    beta = np.ones_like(alpha)
    beta[:-1] = suffix / suffix.sum(1, keepdims=True)
    post = alpha * beta
    post /= post.sum(1, keepdims=True)
    two = alpha[:-1, :, None] * A[None] * (e[1:] * beta[1:])[:, None, :]
    two /= two.sum((1, 2), keepdims=True)
    return alpha, post, two.sum(0), log_lik


def switching_log_likelihood(
    params: SwitchingGLMParams, counts: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean predictive log-likelihood per bin (nats) of a recording (T, n + n_inputs) under
    `params`, and the filtered state posterior (T, K): the held-out score of a model."""
    counts = np.asarray(counts, dtype=np.float64)
    features = glm_features(counts, params.basis, params.n_inputs)
    ll, _ = _emission_log_likelihood(params, counts, features)
    alpha, _, _, log_lik = _forward_backward(params, ll)
    return float(log_lik.mean()), alpha


def fit_switching_glm_batch(
    counts: np.ndarray,
    n_states: int = 3,
    history: int = 5,
    n_basis: int = 1,
    basis: str = "exponential",
    coupling: bool = True,
    n_inputs: int = 0,
    n_iter: int = 20,
    newton_steps: int = 1,
    stickiness: float = 0.98,
    state_spread: float = 0.2,
    init_scale: float = 0.1,
    ridge: float = 1e-3,
    max_log_rate: float = 8.0,
    seed: int = 0,
    init: SwitchingGLMParams | None = None,
    restarts: int = 1,
) -> tuple[SwitchingGLMParams, list[float]]:
    """Fit the switching Poisson GLM (no prior) offline by EM: forward-backward E-step (scanned,
    see `_chain_products`), M-step by `newton_steps` Newton steps per iteration on every state's
    responsibility-weighted Poisson regressions (ridge `ridge` on the coupling) and the
    transition counts. Initialised as the online learner is (distinct bias offsets per state,
    seeded small coupling), or from `init`. Returns the parameters and the training
    log-likelihood per bin at each iteration (the reference for the online learner). With
    `init`, its basis and n_inputs override the layout arguments. With `restarts` > 1 (and no
    `init`) the starts are those of the learner's burn-in fit (`sliced_em`: k-means++ seeded
    starts and the distinct-offsets one), each run `_PICK_ITER` iterations, the likeliest run
    on to `n_iter`: the data-driven batch reference."""
    require_positive_int(n_states, "n_states")
    require_positive_int(n_iter, "n_iter")
    counts = np.asarray(counts, dtype=np.float64)
    layout = {"history": history, "n_basis": n_basis, "basis": basis, "coupling": coupling}
    options = {"newton_steps": newton_steps, "ridge": ridge, "max_log_rate": max_log_rate}
    if restarts > 1 and init is None:
        plain = {**layout, **options, "n_inputs": n_inputs, "stickiness": stickiness}
        first, _ = fit_switching_glm_batch(counts, n_states, n_iter=1, seed=seed, **plain)
        rng = np.random.default_rng(seed)
        neurons = counts[:, : counts.shape[1] - n_inputs]
        D = first.weights.shape[2]
        best = None
        for r in range(restarts):
            start = copy.deepcopy(first)
            if r != 1:
                window = (10, 30)[r % 2 == 0 and r > 0]
                start.weights, _ = _run_to_end(_kmeans_start(neurons, n_states, window, rng, D))
            fit, _ = fit_switching_glm_batch(
                counts, n_states, n_iter=_PICK_ITER, init=start, **options
            )
            score, _ = switching_log_likelihood(fit, counts)
            if best is None or score > best[0]:
                best = (score, fit)
        return fit_switching_glm_batch(
            counts, n_states, n_iter=max(n_iter - _PICK_ITER, 1), init=best[1], **options
        )
    if init is not None:  # the model's layout comes with the starting point
        n_inputs, basis_m = init.n_inputs, init.basis
    else:
        lags = history if coupling else 0
        basis_m = history_basis(basis, lags, n_basis) if lags else np.zeros((1, 0))
    neurons = counts[:, : counts.shape[1] - n_inputs]
    T, n = neurons.shape
    features = glm_features(counts, basis_m, n_inputs)
    D = features.shape[1]
    n_hist = basis_m.shape[0] * n if basis_m.shape[1] else 0
    if init is None:
        rng = np.random.default_rng(seed)
        W = rng.standard_normal((n_states, n, D)) * init_scale
        W[..., n_hist:] = 0.0
        offsets = (np.arange(n_states) - (n_states - 1) / 2) * state_spread
        W[..., -1] = np.log(neurons.mean(0) + 1e-3)[None, :] + offsets[:, None]
        off = (1.0 - stickiness) / max(n_states - 1, 1)
        A = np.full((n_states, n_states), off) + np.eye(n_states) * (stickiness - off)
        params = SwitchingGLMParams(W, A, np.full(n_states, 1.0 / n_states), basis_m, n_inputs)
    else:
        params = init
    params.max_log_rate = max_log_rate
    # the second moments f fᵀ once, as (T, D * D), so each Hessian is one matrix product
    outer = np.einsum("td,te->tde", features, features).reshape(T, D * D)
    penalty = np.full(D, ridge)
    penalty[n_hist:] = 1e-8
    history_ll = []
    for _ in range(n_iter):
        ll, rate = _emission_log_likelihood(params, counts, features)
        _, post, two, log_lik = _forward_backward(params, ll)
        history_ll.append(float(log_lik.mean()))
        params.initial = post[0] / post[0].sum()
        two += 1e-8  # no transition becomes impossible
        params.transitions = two / two.sum(1, keepdims=True)
        for step in range(newton_steps):
            if step:
                _, rate = _emission_log_likelihood(params, counts, features)
            weight = post[:, :, None] * rate  # (T, K, n)
            grad = np.einsum("tk,tkn,td->knd", post, neurons[:, None, :] - rate, features)
            hess = (weight.reshape(T, -1).T @ outer).reshape(n_states, n, D, D)
            hess += np.diag(penalty)
            grad -= penalty * params.weights
            delta = np.linalg.solve(hess, grad[..., None])[..., 0]
            params.weights = params.weights + np.clip(delta, -2.0, 2.0)
    return params, history_ll


# -- the burn-in fit, in slices: k-means++ seeding, restarts, EM with a Kronecker M-step --------
def _kmeans_labels(
    counts: np.ndarray, n_states: int, window: int, rng: np.random.Generator, lloyd: int = 10
):
    """Generator (yields after each k-means++ seed and each Lloyd iteration, bounded work):
    returns one-hot responsibilities (T, K) by k-means on the square-root counts averaged over
    `window` bins, each neuron standardised (see `seed_responsibilities`)."""
    T = len(counts)
    window = max(1, min(int(window), T))
    csum = np.vstack([np.zeros((1, counts.shape[1])), np.cumsum(counts, 0)])
    lo = np.clip(np.arange(T) - window // 2, 0, T - window)
    smooth = np.sqrt((csum[lo + window] - csum[lo]) / window)  # centred moving average
    z = (smooth - smooth.mean(0)) / (smooth.std(0) + 1e-6)
    norms = (z * z).sum(1)
    d2 = None
    centres = [z[int(rng.integers(T))]]
    for _ in range(1, n_states):
        last = norms - 2.0 * z @ centres[-1] + centres[-1] @ centres[-1]
        d2 = last if d2 is None else np.minimum(d2, last)
        d2 = np.maximum(d2, 0.0)
        total = d2.sum()
        pick = int(rng.choice(T, p=d2 / total)) if total > 0 else int(rng.integers(T))
        centres.append(z[pick])
        yield
    c = np.array(centres)
    eye = np.eye(n_states)
    labels = np.zeros(T, dtype=np.int64)
    for _ in range(lloyd + 1):
        labels = (norms[:, None] - 2.0 * z @ c.T + (c * c).sum(1)[None]).argmin(1)
        onehot = eye[labels]
        size = onehot.sum(0)
        filled = size > 0
        c[filled] = (onehot.T @ z)[filled] / size[filled, None]
        yield
    return eye[labels]


def seed_responsibilities(
    counts: np.ndarray, n_states: int, window: int, rng: np.random.Generator, lloyd: int = 10
) -> np.ndarray:
    """One-hot state responsibilities (T, K) of a recording (T, n) by k-means (k-means++ seeds,
    `lloyd` Lloyd iterations) on its square-root counts averaged over `window` bins, each
    neuron standardised: states that change rates show up as clusters of such windows."""
    return _run_to_end(_kmeans_labels(counts, n_states, window, rng, lloyd))


def _run_to_end(gen: Any) -> Any:
    """Run a generator of bounded units to its end; its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


@dataclass
class _Accumulated:
    """Sufficient statistics of one E-step over a recording."""

    log_lik: float
    post_sum: np.ndarray  # (K,)
    grad: np.ndarray  # (K, n, D) sum of post (x - λ) f
    moments: np.ndarray  # (K, D, D) sum of post f fᵀ
    rate_sum: np.ndarray  # (K, n) sum of post λ
    two: np.ndarray  # (K, K) summed two-slice posterior
    alpha_last: np.ndarray  # (K,) filtered posterior of the last bin
    agree: np.ndarray | None = None  # (K, K) sum over bins of 1{given label = i} posterior(j)


def _emissions(
    W: np.ndarray, f: np.ndarray, x: np.ndarray, log_fact: np.ndarray, cap: float
) -> tuple[np.ndarray, np.ndarray]:
    """(log p(x_t | k) (C, K), rates (C, K, n)) of a chunk."""
    K, n, D = W.shape
    eta = np.minimum((f @ W.reshape(K * n, D).T).reshape(len(f), K, n), cap)
    rate = np.exp(eta)
    return (x[:, None, :] * eta - rate).sum(-1) - log_fact[:, None], rate


def _sliced_e_step(
    W: np.ndarray,
    A: np.ndarray,
    initial: np.ndarray,
    features: np.ndarray,
    neurons: np.ndarray,
    log_fact: np.ndarray,
    cap: float,
    chunk: int,
    resp: np.ndarray | None = None,
    labels: np.ndarray | None = None,
):
    """Generator: one E-step in chunks of `chunk` bins (yields after each), forward filter then
    backward smoother (each chunk by the scan of `_chain_products`), accumulating the M-step's
    statistics; returns an `_Accumulated`. With `resp` (T, K) given, those responsibilities
    stand in for the smoothed posterior (the first M-step of a seeded start). With `labels`
    (T,) (another model's state per bin, -1 where none), their agreement with the posterior
    is summed too (`agree`)."""
    T, K = len(features), len(A)
    n, D = neurons.shape[1], features.shape[1]
    alpha = np.empty((T, K))
    ll_all = np.empty((T, K))
    log_lik = 0.0
    starts = list(range(0, T, chunk))
    if resp is None:
        prev = None
        for s in starts:
            e_ll, _ = _emissions(
                W, features[s : s + chunk], neurons[s : s + chunk], log_fact[s : s + chunk], cap
            )
            ll_all[s : s + chunk] = e_ll
            top = e_ll.max(1, keepdims=True)
            e = np.exp(np.maximum(e_ll - top, -600.0))
            pred0 = initial if prev is None else prev @ A
            mats = A[None] * e[:, None, :]
            mats[0] = np.diag(pred0 * e[0])
            a = _chain_products(mats).sum(1)
            a /= a.sum(1, keepdims=True)
            predicted = np.vstack([pred0[None], a[:-1] @ A])
            log_lik += float((np.log((predicted * e).sum(1)) + top[:, 0]).sum())
            alpha[s : s + chunk] = a
            prev = a[-1]
            yield
    acc = _Accumulated(
        log_lik,
        np.zeros(K),
        np.zeros((K, n, D)),
        np.zeros((K, D, D)),
        np.zeros((K, n)),
        np.zeros((K, K)),
        alpha[-1].copy() if resp is None else resp[-1].astype(np.float64),
        None if labels is None else np.zeros((K, K)),
    )
    beta_next = None  # β of the bin after the chunk, with that bin's e
    for s in reversed(starts):
        f, x = features[s : s + chunk], neurons[s : s + chunk]
        e_ll, rate = _emissions(W, f, x, log_fact[s : s + chunk], cap)
        if resp is None:
            e = np.exp(np.maximum(e_ll - e_ll.max(1, keepdims=True), -600.0))
            b_last = np.ones(K) if beta_next is None else A @ (beta_next[1] * beta_next[0])
            b_last /= b_last.sum()
            rev = np.empty((len(f), K, K))
            rev[0] = np.diag(b_last)
            rev[1:] = (A[None] * e[:0:-1, None, :]).transpose(0, 2, 1)
            beta = _chain_products(rev).sum(1)[::-1]
            beta /= beta.sum(1, keepdims=True)
            post = alpha[s : s + chunk] * beta
            post /= post.sum(1, keepdims=True)
            lo = 0 if s else 1  # the first bin of the recording has no predecessor
            before = alpha[s - 1 + lo : s + len(f) - 1]
            two = before[:, :, None] * A[None] * (e[lo:] * beta[lo:])[:, None, :]
            two /= two.sum((1, 2), keepdims=True)
            acc.two += two.sum(0)
            beta_next = (beta[0], e[0])
        else:
            post = resp[s : s + chunk]
            if len(post) > 1:
                acc.two += post[:-1].T @ post[1:]
            if s + chunk < T:
                acc.two += np.outer(post[-1], resp[s + chunk])
        acc.post_sum += post.sum(0)
        C = len(f)  # matrix products, not einsum: its three-operand path was 10x slower
        weighted = post[:, :, None] * (x[:, None, :] - rate)
        acc.grad += (weighted.reshape(C, K * n).T @ f).reshape(K, n, D)
        acc.moments += ((post[:, :, None] * f[:, None, :]).reshape(C, K * D).T @ f).reshape(K, D, D)
        acc.rate_sum += (post[:, :, None] * rate).sum(0)
        if acc.agree is not None and labels is not None:
            given = labels[s : s + chunk]
            known = given >= 0
            np.add.at(acc.agree, given[known].astype(np.int64), post[known])
        yield
    return acc


def _kronecker_m_step(
    W: np.ndarray, acc: _Accumulated, n_hist: int, ridge: float, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """New (weights, transitions) from an E-step: per state one Newton step on the
    responsibility-weighted Poisson regressions with the curvature Kronecker-factored as the
    online learner's is, ā[k, n] · sum post f fᵀ (one eigendecomposition per state instead of
    one solve per neuron), ridge on the coupling, steps clipped to ±1. A state that took under
    0.5% of the bins is restarted as a copy of the busiest one, nudged (no state dies)."""
    n = W.shape[1]
    post = np.maximum(acc.post_sum, 1e-9)
    abar = np.maximum(acc.rate_sum / post[:, None], _MIN_RATE)  # (K, n)
    grad = acc.grad.copy()
    grad[..., :n_hist] -= ridge * W[..., :n_hist]
    lam, V = np.linalg.eigh(acc.moments)  # (K, D), (K, D, D)
    proj = np.einsum("kde,knd->kne", V, grad)
    # the ridge also damps the step in every eigen-direction, biases included (measured: that
    # damping is part of the gain at _WARM_RIDGE = 100; the ridge moved inside the Kronecker
    # factor, undamped biases, left slow_kernel at 0.641 median, not 0.822); with no coupling
    # there is nothing to penalise and the unit damping is kept
    damping = ridge if n_hist else min(ridge, 1.0)
    proj /= abar[..., None] * np.maximum(lam, 0.0)[:, None, :] + damping
    W = W + np.clip(np.einsum("kde,kne->knd", V, proj), -1.0, 1.0)
    two = acc.two + 1e-8
    A = two / two.sum(1, keepdims=True)
    dead = acc.post_sum < 0.005 * n_bins
    if dead.any() and not dead.all():
        busiest = int(np.argmax(acc.post_sum))
        for k in np.flatnonzero(dead):
            W[k] = W[busiest]
            W[k, :, -1] += 0.1 * np.where(np.arange(n) % 2, 1.0, -1.0)
            A[k] = A[busiest]
    return W, A


def _kmeans_start(
    neurons: np.ndarray, n_states: int, window: int, rng: np.random.Generator, D: int
):
    """Generator (bounded units, see `_kmeans_labels`): returns (weights, responsibilities) of a
    k-means seeded start: zero coupling, biases at each cluster's log mean rate."""
    resp = yield from _kmeans_labels(neurons, n_states, window, rng)
    share = resp.sum(0)[:, None] + 1e-9
    W = np.zeros((n_states, neurons.shape[1], D))
    W[..., -1] = np.log((resp.T @ neurons) / share + 1e-2)
    return W, resp


def sliced_em(
    data: np.ndarray,
    n_states: int,
    basis: np.ndarray,
    n_inputs: int,
    start: np.ndarray,
    transitions: np.ndarray,
    n_iter: int,
    restarts: int,
    seed: int,
    chunk: int,
    ridge: float = _WARM_RIDGE,
    max_log_rate: float = 8.0,
    labels: np.ndarray | None = None,
):
    """Generator: the burn-in fit in bounded units of work (each a chunk of `chunk` bins of an
    E-step, or one M-step), so a live stream can run one unit per bin. `restarts` starts are
    each given `_PICK_ITER` EM iterations: k-means++ seeded starts on windowed square-root counts
    (windows of 10 and 30 bins, alternately) and, as one of them, `start` (the learner's
    distinct-offsets start); the likeliest of those that leave no state under
    `_MIN_START_SHARE` of the bins (of all, if none does) runs on to `n_iter` iterations. Returns
    (params, final `_Accumulated`, features); with `labels` (T,) the final E-step also sums
    their agreement with its posterior (see `_sliced_e_step`)."""
    from scipy.special import gammaln

    K = n_states
    features = glm_features(data, basis, n_inputs)
    neurons = data[:, : data.shape[1] - n_inputs]
    T, D = features.shape
    n_hist = basis.shape[0] * neurons.shape[1] if basis.shape[1] else 0
    log_fact = gammaln(neurons + 1.0).sum(1)
    rng = np.random.default_rng(seed)
    uniform = np.full(K, 1.0 / K)
    yield

    def iterate(W, A, initial, iters, resp=None):
        acc = None
        for i in range(iters):
            acc = yield from _sliced_e_step(
                W,
                A,
                initial,
                features,
                neurons,
                log_fact,
                max_log_rate,
                chunk,
                resp if i == 0 else None,
            )
            W, A = _kronecker_m_step(W, acc, n_hist, ridge, T)
            yield
        return W, A, acc

    best = None
    pick = min(_PICK_ITER, n_iter) if restarts > 1 else 0
    for r in range(restarts if restarts > 1 else 0):
        if r == 1:
            W0, A0, resp = start.copy(), transitions.copy(), None
        else:
            window = (10, 30)[r % 2 == 0 and r > 0]
            W0, resp = yield from _kmeans_start(neurons, K, window, rng, D)
            A0 = transitions.copy()
        W, A, _ = yield from iterate(W0, A0, uniform, pick + (resp is not None), resp)
        acc = yield from _sliced_e_step(
            W, A, uniform, features, neurons, log_fact, max_log_rate, chunk
        )
        # the likeliest start among those that use every state, before any that does not
        spread = bool((acc.post_sum / acc.post_sum.sum()).min() >= _MIN_START_SHARE)
        if best is None or (spread, acc.log_lik) > best[0]:
            best = ((spread, acc.log_lik), W, A)
    W, A = (best[1], best[2]) if best is not None else (start.copy(), transitions.copy())
    W, A, _ = yield from iterate(W, A, uniform, max(n_iter - pick, 0))
    acc = yield from _sliced_e_step(
        W, A, uniform, features, neurons, log_fact, max_log_rate, chunk, labels=labels
    )
    params = SwitchingGLMParams(W, A, uniform, basis, n_inputs, max_log_rate)
    return params, acc, features
