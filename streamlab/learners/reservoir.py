"""Reservoir computing on the stream: a spiking (Izhikevich) or rate reservoir driven by the
incoming samples, with linear readouts learned online by an error-modulated, gated three-factor
Hebbian rule (after Yamada and Chao 2025, of which only the abstract is known) or by FORCE's
recursive least squares (Sussillo and Abbott 2009) as the baseline.

Choices (the seed paper's details are unknown; these are ours):

- **Neurons.** Izhikevich's (2003) normalised model, v in mV and time in ms:
  dv/dt = 0.04 v^2 + 5 v + 140 - u + I, du/dt = a (b v - u), at v >= 30: v <- c, u <- u + d.
  A fraction `fs_fraction` are fast-spiking (a = 0.02 + 0.08 r, b = 0.25 - 0.05 r, c = -65,
  d = 2), the rest regular-spiking (a = 0.02, b = 0.2, c = -65 + 15 r^2, d = 8 - 6 r^2), r ~ U(0, 1)
  per neuron: the heterogeneous mix of Izhikevich (2003). Forward Euler at `dt_ms`, with
  round(bin_ms / dt_ms) sub-steps per stream sample. Use dt_ms <= 1: at 2 ms the Euler error
  changes the dynamics (mean rates of about 190 Hz instead of 21 Hz on the same drive).
- **Synapses.** Each neuron has a synaptic trace s (+1000 / tau per spike, so s is a rate in
  Hz, decaying with the neuron's own time constant tau, log-uniform in [tau_syn_ms,
  tau_syn_max_ms]: heterogeneous synapses give the reservoir a memory of several hundred ms).
  The recurrent current is I_rec = J s with J sparse
  (fixed in-degree K = round(density N), weights N(0, recurrent_scale^2 / K), no Dale's law so
  excitation and inhibition balance on average), held as a torch CSR matrix: a sub-step costs
  O(N K), never a dense N x N. The same traces are the readouts' presynaptic signal. With
  recurrent_scale about 0.1 the network is input-driven (activity decays after a pulse); from
  about 0.3 it sustains and amplifies its own activity (then restart it per trial with
  `reset_state()` for a reproducible trajectory).
- **Input.** I_ext = bias + input_scale * W_in x with W_in ~ N(0, 1) dense (N x channels),
  constant over a sample's sub-steps.
- **Rate option** (`neuron="rate"`): a leaky tanh echo-state network, tau_ms dx/dt = -x +
  J tanh(x) + I_ext (J spectral radius about recurrent_scale: use about 1 here, not the
  spiking default), r = tanh(x) the presynaptic signal; for calcium-rate inputs.
- **Units.** Time in ms, currents and the input in Izhikevich's normalised units (about 4 is
  a regular-spiking neuron's rheobase), traces in Hz.
- **Batch.** B streams share one reservoir (the same J, W_in and neuron parameters) with their
  own membrane state and traces; each stream has its own readout weights.

Readouts (`ThreeFactorReadout`, `ForceReadout`) are `TargetLearner`s with the same surface:
`step(x, y)` advances the reservoir by one sample of x, returns the prediction z = W [r, 1]
(made before learning) and, when y is given, learns. y is (M,) or (B, M) targets; a NaN entry
means "no target for that output at this sample"; with `gated=True` y carries one more column,
the attention/relevance gate G in [0, 1] (a NaN gate counts as 0). y None: predict only.

Sharing a reservoir: pass the same `SpikingReservoir` object as `reservoir=` to several readouts
and step them in lockstep with the same sample. Every learner counts its samples; the first
readout to reach sample t finds the reservoir at count t and advances it, the others find it at
t + 1 and read the same traces (their x is then not used). Any other gap raises. The count is a
host-side integer, so the check costs no device sync. A readout's `state_dict` holds the
reservoir's state (v, u, s) and count, so restoring any one readout restores the reservoir; a
pickled readout carries its own copy of the reservoir.

The per-sample path has no host syncs (`.item()`, boolean indexing) and works in place on state
allocated at the first sample; the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.base import StateValue, TargetLearner, require_positive_int
from streamlab.learners.local_rules import bmv, outer, running_sd, signed_sqrt, welford_

NEURONS = ("izhikevich", "rate")
V_PEAK = 30.0


def _require_positive(value: Any, name: str, upper: float | None = None) -> None:
    """ConfigError naming `name` and the accepted range unless 0 < value (<= upper)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value > 0 and (upper is None or value <= upper)
    if not ok:
        accepted = f"(0, {upper}]" if upper is not None else "> 0"
        raise ConfigError(f"{name} must be a finite number in {accepted}, got {value!r}")


def _require_nonnegative(value: Any, name: str, upper: float | None = None) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= 0 and (upper is None or value <= upper)
    if not ok:
        accepted = f"[0, {upper}]" if upper is not None else ">= 0"
        raise ConfigError(f"{name} must be a finite number in {accepted}, got {value!r}")


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """A CSR matrix from its parts, without torch's 'beta' warning (pytest turns warnings into
    errors); the parts come from our own construction, so invariants are not re-checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)


class SpikingReservoir(TargetLearner):
    """A reservoir of N Izhikevich (or leaky tanh rate) neurons driven by the stream; see the
    module docstring for the model. It learns nothing: `step(x)` advances every stream by one
    sample (round(bin_ms / dt_ms) Euler sub-steps) and returns the presynaptic signal (B, N), the
    synaptic traces (spiking) or tanh rates (rate), which readouts read out. It is a
    `TargetLearner` only so that a y given by a pipeline is accepted and ignored.

    Parameters
    ----------
    n_neurons
        Reservoir size N (the output size: `n_components` is N).
    neuron
        "izhikevich" (spiking, RS/FS mix) or "rate" (leaky tanh echo-state).
    fs_fraction
        Fraction of fast-spiking neurons, in [0, 1] (spiking only).
    density
        Connection probability; each neuron gets K = max(1, round(density N)) random inputs.
    recurrent_scale
        Standard deviation of the summed recurrent input: J_ij ~ N(0, recurrent_scale^2 / K). In
        current units per unit trace (spiking), or the spectral radius (rate, about g). None
        (default): 0.9 for rate neurons, 0.1 for spiking ones (see `recurrent_gain`).
    input_scale, standardize, bias
        I_ext = bias + W_in x'. With `standardize` (default) x' is the signed square root of
        each channel, standardised by its running mean and standard deviation over the stream,
        and W_in ~ N(0, input_scale^2 / channels): a drive of standard deviation input_scale
        per neuron whatever the channels' number, rates or units (raw counts at input scale 10
        saturated every rate neuron on the linear track). Without it x' = x and W_in ~ N(0,
        input_scale^2). Current units (spiking) or unitless (rate). None (default): 1 for rate
        neurons, 10 for spiking ones (see `input_gain`).
    bin_ms, dt_ms
        Width of a stream sample and the Euler sub-step (ms); sub-steps = round(bin_ms / dt_ms).
    tau_syn_ms, tau_syn_max_ms
        Synaptic trace time constants, log-uniform per neuron in [tau_syn_ms, tau_syn_max_ms]
        (equal: homogeneous). Spiking only.
    tau_ms
        Membrane time constant of rate neurons.
    device, dtype, seed
        As for every learner; `seed` fixes J, W_in and the neuron parameters.
    """

    def __init__(
        self,
        n_neurons: int = 500,
        neuron: str = "izhikevich",
        fs_fraction: float = 0.2,
        density: float = 0.1,
        recurrent_scale: float | None = None,
        input_scale: float | None = None,
        standardize: bool = True,
        bias: float = 0.0,
        bin_ms: float = 10.0,
        dt_ms: float = 0.5,
        tau_syn_ms: float = 10.0,
        tau_syn_max_ms: float = 200.0,
        tau_ms: float = 10.0,
        device: str = "auto",
        dtype: str = "float32",
        seed: int | None = None,
    ) -> None:
        self.n_neurons = n_neurons
        self.neuron = neuron
        self.fs_fraction = fs_fraction
        self.density = density
        self.recurrent_scale = recurrent_scale
        self.input_scale = input_scale
        self.standardize = standardize
        self.bias = bias
        self.bin_ms = bin_ms
        self.dt_ms = dt_ms
        self.tau_syn_ms = tau_syn_ms
        self.tau_syn_max_ms = tau_syn_max_ms
        self.tau_ms = tau_ms
        self._init_common(device, dtype, seed)
        _validate_reservoir(self)

    @property
    def n_components(self) -> int:  # type: ignore[override]
        """The output size: one presynaptic signal per neuron."""
        return int(self.n_neurons)

    @property
    def substeps(self) -> int:
        """Euler sub-steps per stream sample."""
        return max(1, round(self.bin_ms / self.dt_ms))

    # -- state ------------------------------------------------------------------------------------
    def _allocate(self, n_features: int, batch: int) -> None:
        n = int(self.n_neurons)
        k = max(1, min(n, round(self.density * n)))
        gen, device = self._generator, self._device
        # fixed in-degree K: row i holds K random presynaptic columns (a repeat is summed)
        cols = torch.randint(0, n, (n, k), generator=gen, device=device).sort(dim=1).values
        rows = torch.arange(n, device=device).repeat_interleave(k)
        values = self._randn(n * k) * (self.recurrent_gain / math.sqrt(k))
        # repeated (row, column) pairs summed, in row-major order (what a COO coalesce gives,
        # without the sparse constructor, which warns about invariant checks on some versions)
        keys, where = torch.unique(rows * n + cols.reshape(-1), return_inverse=True)
        counts = torch.bincount(torch.div(keys, n, rounding_mode="floor"), minlength=n)
        self._crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self._col = keys % n
        self._values = values.new_zeros(len(keys)).index_add_(0, where, values)
        self._J = _csr(self._crow, self._col, self._values, n)
        if self.standardize:  # a drive of standard deviation input_gain per neuron
            self._W_in = self._randn(n, n_features) * (self.input_gain / math.sqrt(n_features))
        else:
            self._W_in = self._randn(n, n_features) * self.input_gain
        # running per-channel mean and sum of squared deviations of the transformed input
        self._in_mean = self._zeros(batch, n_features)
        self._in_m2 = self._zeros(batch, n_features)
        self._in_count = self._zeros(batch, 1)
        uniform = torch.rand(n, 1, generator=gen, dtype=self._torch_dtype, device=device)
        fast = torch.rand(n, 1, generator=gen, dtype=self._torch_dtype, device=device) < (
            self.fs_fraction
        )
        dt = float(self.dt_ms)
        a = torch.where(fast, 0.02 + 0.08 * uniform, torch.full_like(uniform, 0.02))
        self._b = torch.where(fast, 0.25 - 0.05 * uniform, torch.full_like(uniform, 0.2))
        self._c = torch.where(fast, torch.full_like(uniform, -65.0), -65.0 + 15.0 * uniform**2)
        self._d = torch.where(fast, torch.full_like(uniform, 2.0), 8.0 - 6.0 * uniform**2)
        # u <- u + dt a (b v - u) = (1 - dt a) u + dt a b v
        self._u_keep = 1.0 - dt * a
        self._u_from_v = dt * a * self._b
        log_lo, log_hi = math.log(self.tau_syn_ms), math.log(self.tau_syn_max_ms)
        spread = torch.rand(n, 1, generator=gen, dtype=self._torch_dtype, device=device)
        tau_syn = torch.exp(log_lo + (log_hi - log_lo) * spread)
        self._syn_decay = torch.exp(-dt / tau_syn)
        self._syn_jump = 1000.0 / tau_syn  # per spike: the trace is a rate in Hz
        self._leak = dt / float(self.tau_ms)
        # state, neurons x streams (the layout of the sparse product): membrane v (rate: x),
        # recovery u (rate: unused), trace s (rate: tanh x)
        self._v = self._zeros(n, batch)
        self._u = self._zeros(n, batch)
        self._s = self._zeros(n, batch)
        self._reset(self._v, self._u, self._s)
        self._drive = self._zeros(n, batch)
        self._current = self._zeros(n, batch)

    def _reset(self, v: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> None:
        if self.neuron == "izhikevich":
            v.copy_(self._c.expand_as(v))
            torch.mul(self._b, v, out=u)
        else:
            v.zero_()
            u.zero_()
        s.zero_()

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """The dynamic state (the weights are fixed and regenerated from the seed), with the
        input's running statistics."""
        return {
            "v": self._v,
            "u": self._u,
            "s": self._s,
            "in_mean": self._in_mean,
            "in_m2": self._in_m2,
            "in_count": self._in_count,
        }

    @property
    def recurrent_gain(self) -> float:
        """`recurrent_scale`, or its automatic value: 0.9 for rate neurons (an echo-state
        network just below the edge of chaos, so it keeps a few samples of memory without
        running away) and 0.1 for spiking ones (input-driven: activity decays after a pulse,
        the module docstring's range)."""
        if self.recurrent_scale is not None:
            return float(self.recurrent_scale)
        return 0.9 if self.neuron == "rate" else 0.1

    @property
    def input_gain(self) -> float:
        """`input_scale`, or its automatic value: a drive of standard deviation 1 for rate
        neurons (tanh in its graded range, not saturated) and 10 current units for spiking ones
        (a few times the rheobase of about 4)."""
        if self.input_scale is not None:
            return float(self.input_scale)
        return 1.0 if self.neuron == "rate" else 10.0

    def _standardized(self, x: torch.Tensor, learn: bool) -> torch.Tensor:
        """With `standardize`: the signed square root of x (for counts), minus its running mean
        over the stream, divided by its running standard deviation (Welford's update when
        `learn`), so the drive's scale is the same whatever the channels' rates or units."""
        if not self.standardize:
            return x
        x = signed_sqrt(x)
        if learn:
            welford_(self._in_mean, self._in_m2, self._in_count, x)
        variance = self._in_m2 / self._in_count.clamp(min=1.0)
        return (x - self._in_mean) / (variance + 1e-6).sqrt()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_J", None)  # a CSR tensor: rebuilt from its parts on unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_crow" in state:
            self._J = _csr(self._crow, self._col, self._values, int(self.n_neurons))

    @property
    def traces(self) -> torch.Tensor:
        """The presynaptic signal (B, N) after the last sample: synaptic traces in Hz (spiking)
        or tanh rates (rate)."""
        return self._s.T

    # -- dynamics ---------------------------------------------------------------------------------
    def _advance(
        self, x: torch.Tensor, v: torch.Tensor, u: torch.Tensor, s: torch.Tensor
    ) -> torch.Tensor:
        """Advance (v, u, s), each (N, B), in place by one sample x (B, n); returns s (N, B)."""
        # constant over the sample: bias + input (+ 140, the constant of the quadratic)
        offset = self.bias + (140.0 if self.neuron == "izhikevich" else 0.0)
        drive = torch.mm(self._W_in, x.T, out=self._drive).add_(offset)
        current, J = self._current, self._J
        if self.neuron == "rate":
            for _ in range(self.substeps):
                # x <- x + dt/tau (-x + J r + drive); r = tanh(x)
                torch.addmm(drive, J, s, out=current).sub_(v)
                v.add_(current, alpha=self._leak)
                torch.tanh(v, out=s)
            return s
        dt = float(self.dt_ms)
        for _ in range(self.substeps):
            # v <- v + dt (0.04 v^2 + 5 v + 140 - u + I), I = drive + J s
            torch.addmm(drive, J, s, out=current).sub_(u)
            current.addcmul_(v, v, value=0.04).add_(v, alpha=5.0)
            u.mul_(self._u_keep).addcmul_(self._u_from_v, v)  # with the old v, as Euler
            v.add_(current, alpha=dt)
            fired = v >= V_PEAK
            torch.where(fired, self._c, v, out=v)
            spike = fired.to(v.dtype)
            u.addcmul_(spike, self._d)
            s.mul_(self._syn_decay).addcmul_(spike, self._syn_jump)
        return s

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        self._steps += 1
        return self._advance(self._standardized(x, learn=True), self._v, self._u, self._s).T

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        v, u, s = self._v.clone(), self._u.clone(), self._s.clone()
        return self._advance(self._standardized(x, learn=False), v, u, s).T

    def reset_state(self) -> None:
        """Back to rest (membrane at c, u = b c, no traces), keeping the weights."""
        if self.is_initialized:
            self._reset(self._v, self._u, self._s)

    @classmethod
    def _unit_test_params(cls):
        yield {"n_neurons": 20, "bin_ms": 2.0, "dt_ms": 1.0, "device": "cpu", "seed": 0}
        yield {"n_neurons": 16, "neuron": "rate", "bin_ms": 1.0, "dt_ms": 1.0, "device": "cpu"}


def _validate_reservoir(obj: Any) -> None:
    """Check the reservoir parameters stored on `obj` (a reservoir or a readout)."""
    require_positive_int(obj.n_neurons, "n_neurons")
    if obj.neuron not in NEURONS:
        raise ConfigError(f"neuron must be one of {NEURONS}, got {obj.neuron!r}")
    _require_nonnegative(obj.fs_fraction, "fs_fraction", 1.0)
    _require_positive(obj.density, "density", 1.0)
    if obj.recurrent_scale is not None:
        _require_nonnegative(obj.recurrent_scale, "recurrent_scale")
    if obj.input_scale is not None:
        _require_nonnegative(obj.input_scale, "input_scale")
    if not isinstance(obj.standardize, bool):
        raise ConfigError(f"standardize must be True or False, got {obj.standardize!r}")
    if not (isinstance(obj.bias, int | float) and math.isfinite(obj.bias)):
        raise ConfigError(f"bias must be a finite number, got {obj.bias!r}")
    _require_positive(obj.bin_ms, "bin_ms")
    _require_positive(obj.dt_ms, "dt_ms", float(obj.bin_ms))
    _require_positive(obj.tau_syn_ms, "tau_syn_ms")
    _require_positive(obj.tau_syn_max_ms, "tau_syn_max_ms")
    if obj.tau_syn_max_ms < obj.tau_syn_ms:
        raise ConfigError(
            f"tau_syn_max_ms must be >= tau_syn_ms ({obj.tau_syn_ms}), got {obj.tau_syn_max_ms!r}"
        )
    _require_positive(obj.tau_ms, "tau_ms")


_RESERVOIR_PARAMS = (
    "n_neurons",
    "neuron",
    "fs_fraction",
    "density",
    "recurrent_scale",
    "input_scale",
    "standardize",
    "bias",
    "bin_ms",
    "dt_ms",
    "tau_syn_ms",
    "tau_syn_max_ms",
    "tau_ms",
)


class _Readout(TargetLearner):
    """What both readouts share: the reservoir (own or shared), the features [r, 1], the target
    and gate parsing, the prediction and the state of the reservoir in `state_dict`."""

    n_components: int
    gated: bool
    reservoir: SpikingReservoir | None

    def _init_readout(
        self, reservoir_params: dict[str, Any], device: str, dtype: str | None, seed: int | None
    ) -> None:
        for name, value in reservoir_params.items():
            setattr(self, name, value)
        if dtype is None:  # a shared reservoir's, else float64 (see the class docstring)
            dtype = (
                self.reservoir.dtype if isinstance(self.reservoir, SpikingReservoir) else "float64"
            )
        self._init_common(device, dtype, seed)
        require_positive_int(self.n_components, "n_components")
        for flag in ("gated", "standardize_targets"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.reservoir is None:
            _validate_reservoir(self)
            self._reservoir = SpikingReservoir(
                **reservoir_params, device=device, dtype=dtype, seed=seed
            )
        elif isinstance(self.reservoir, SpikingReservoir):
            if self.reservoir._device != self._device or self.reservoir.dtype != dtype:
                raise ConfigError(
                    f"reservoir is on {self.reservoir._device} in {self.reservoir.dtype}, the "
                    f"readout on {self._device} in {dtype}; give both the same device and dtype"
                )
            self._reservoir = self.reservoir
        else:
            raise ConfigError(
                "reservoir must be a SpikingReservoir (to share one between readouts) or None "
                f"(build one from the reservoir parameters), got {type(self.reservoir).__name__}"
            )

    @property
    def shared_reservoir(self) -> SpikingReservoir:
        """The reservoir this readout reads (its own, or the one passed as `reservoir`)."""
        return self._reservoir

    def _allocate(self, n_features: int, batch: int) -> None:
        res = self._reservoir
        if self.reservoir is None or not res.is_initialized:
            res.initialize(n_features, batch)
        elif res._n_features != n_features or res._batch != batch:
            raise InputShapeError(
                f"the shared reservoir was built for {res._batch} stream(s) of "
                f"{res._n_features} channels, this readout got {batch} of {n_features}; step "
                "every readout of one reservoir with the same samples"
            )
        n = res.n_components
        k = int(self.n_components)
        self._phi = self._zeros(batch, n + 1)
        self._phi[:, n] = 1.0
        self._W = self._zeros(batch, k, n + 1)
        self._last = self._zeros(batch, k)
        # running mean and sum of squared deviations of each target over its labelled samples
        self._y_mean = self._zeros(batch, k)
        self._y_m2 = self._zeros(batch, k)
        self._y_count = self._zeros(batch, k)
        self._allocate_rule(n + 1, batch)

    def _allocate_rule(self, n_features: int, batch: int) -> None:
        """Allocate the learning rule's own state for features [r, 1] of size `n_features`."""

    def _readout_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "W": self._W,
            "phi": self._phi,
            "last": self._last,
            "y_mean": self._y_mean,
            "y_m2": self._y_m2,
            "y_count": self._y_count,
        }
        tensors.update(self._readout_tensors())
        for name, tensor in self._reservoir._state_tensors().items():
            tensors[f"reservoir_{name}"] = tensor
        return tensors

    def _state_scalars(self) -> dict[str, StateValue]:
        return {"reservoir_steps": int(self._reservoir._steps)}

    def _load_scalars(self, scalars: dict[str, Any]) -> None:
        self._reservoir._steps = int(scalars["reservoir_steps"])

    @property
    def weights(self) -> torch.Tensor:
        """Readout weights (B, n_components, N + 1), the last column the bias; with
        `standardize_targets` they predict the targets standardised by their running mean and
        standard deviation."""
        return self._W

    def extra_outputs(self) -> dict[str, torch.Tensor]:
        """Nothing besides the prediction."""
        return {}

    # -- features ---------------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """[r, 1] (B, N + 1) for this sample, advancing the reservoir once per sample (see the
        module docstring for the lockstep rule of a shared reservoir)."""
        res = self._reservoir
        lag = res._steps - self._steps
        if lag == 0:
            res._update(x)
        elif lag != 1:
            raise InputShapeError(
                f"the shared reservoir has seen {res._steps} samples, this readout {self._steps}; "
                "step every readout of one reservoir once per sample, in lockstep"
            )
        self._phi[:, :-1].copy_(res._s.T)
        return self._phi

    def _split_target(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(targets with NaN as 0, per-output mask (B, k), gate (B, 1)) from y."""
        k = int(self.n_components)
        width = k + 1 if self.gated else k
        if y.shape[1] != width:
            gate = " plus the gate column (gated=True)" if self.gated else ""
            raise InputShapeError(
                f"{type(self).__name__} has n_components={k} outputs, so y needs {width} values "
                f"per stream ({k} targets{gate}), got {y.shape[1]}"
            )
        target = y[:, :k]
        mask = torch.isfinite(target).to(y.dtype)
        if self.gated:
            gate = torch.nan_to_num(y[:, k:], nan=0.0).clamp(0.0, 1.0)
        else:
            gate = torch.ones_like(y[:, :1])
        return torch.nan_to_num(target, nan=0.0), mask, gate

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        y = self._pending
        parsed = None if y is None else self._split_target(y)
        phi = self._features(x)
        self._steps += 1
        unit = bmv(self._W, phi)  # in the targets' standardised units
        z = self._to_target_units(unit)
        self._last.copy_(z)
        if parsed is not None:
            target, mask, gate = parsed
            if self.standardize_targets:
                welford_(self._y_mean, self._y_m2, self._y_count, target, mask)
                target = (target - self._y_mean) / running_sd(self._y_m2, self._y_count)
            self._learn(phi, (target - unit) * mask, mask, gate)
        else:
            self._trace(phi)
        return z

    def _to_target_units(self, unit: torch.Tensor) -> torch.Tensor:
        """A prediction in standardised units back in the targets' own (with
        `standardize_targets`; otherwise the readout works in the targets' units throughout)."""
        if not self.standardize_targets:
            return unit
        return unit * running_sd(self._y_m2, self._y_count) + self._y_mean

    def _trace(self, phi: torch.Tensor) -> None:
        """Advance the rule's own traces on a sample without a target."""

    def _learn(
        self, phi: torch.Tensor, error: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor
    ) -> None:
        raise NotImplementedError

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        phi = self._phi.clone()
        phi[:, :-1].copy_(self._reservoir._infer(x))
        return self._to_target_units(bmv(self._W, phi))

    def reset_state(self) -> None:
        """Reset the reservoir to rest (a new trial or session), keeping the readout weights."""
        self._reservoir.reset_state()


class ThreeFactorReadout(_Readout):
    """Readout trained by an error-modulated, gated three-factor Hebbian rule:

        dW_ij = lr_eff G E_i e_j,   E_i = y_i - z_i,   z = W [r, 1],
        e <- e + (1 - exp(-bin_ms / tau_eligibility_ms)) ([r, 1] - e)

    G the gate (third factor with the error E: a global neuromodulatory signal per output),
    e the eligibility trace of the presynaptic signal r (the reservoir's synaptic traces; with
    tau_eligibility_ms = 0, e = [r, 1]); there is no postsynaptic term (linear readout units).
    With `normalize=True` (default) lr_eff = learning_rate / (1 + |e|^2), the normalised LMS
    step: a rate that works across reservoir sizes and firing rates; `False` uses learning_rate
    as is. The rate stays constant, so the readout keeps adapting when the stream changes.

    Parameters
    ----------
    n_components
        Outputs M (size of y, without the gate).
    learning_rate
        lr above (normalised: in (0, 2) is stable).
    tau_eligibility_ms
        Eligibility trace time constant (0: none).
    normalize
        Divide the rate by 1 + |e|^2 (see above).
    gated
        y carries a last column, the gate G in [0, 1]; otherwise G = 1.
    standardize_targets
        Learn and predict each target standardised by its running mean and standard deviation
        over the labelled samples (default): the rule's rate and prior then mean the same
        whatever the targets' offset and units (positions in pixels: R² -0.90 raw against
        0.36 standardised for the three-factor rule on the linear track).
    reservoir
        A `SpikingReservoir` to share with other readouts; None builds one from the reservoir
        parameters below (which are then used; with `reservoir` given they are ignored).
    n_neurons ... tau_ms
        Reservoir parameters, as for `SpikingReservoir`, except that a readout's reservoir is
        of rate neurons by default (they decoded better than spiking ones on the linear track,
        at a fraction of the cost).
    device, dtype, seed
        As for every learner; `seed` seeds the reservoir built here. The default dtype is a
        shared reservoir's, else float64: least squares on targets in raw units lose precision
        in float32 (FORCE on the linear track: R² 0.10 in float32, 0.20 in float64, same
        settings).
    """

    def __init__(
        self,
        n_components: int = 1,
        learning_rate: float = 0.1,
        tau_eligibility_ms: float = 0.0,
        normalize: bool = True,
        gated: bool = False,
        standardize_targets: bool = True,
        reservoir: SpikingReservoir | None = None,
        n_neurons: int = 500,
        neuron: str = "rate",
        fs_fraction: float = 0.2,
        density: float = 0.1,
        recurrent_scale: float | None = None,
        input_scale: float | None = None,
        standardize: bool = True,
        bias: float = 0.0,
        bin_ms: float = 10.0,
        dt_ms: float = 0.5,
        tau_syn_ms: float = 10.0,
        tau_syn_max_ms: float = 200.0,
        tau_ms: float = 10.0,
        device: str = "auto",
        dtype: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.tau_eligibility_ms = tau_eligibility_ms
        self.normalize = normalize
        self.gated = gated
        self.standardize_targets = standardize_targets
        self.reservoir = reservoir
        params = dict(locals())
        self._init_readout({name: params[name] for name in _RESERVOIR_PARAMS}, device, dtype, seed)
        _require_positive(learning_rate, "learning_rate")
        _require_nonnegative(tau_eligibility_ms, "tau_eligibility_ms")
        if not isinstance(normalize, bool):
            raise ConfigError(f"normalize must be True or False, got {normalize!r}")

    def _allocate_rule(self, n_features: int, batch: int) -> None:
        self._e = self._zeros(batch, n_features)
        tau = float(self.tau_eligibility_ms)
        bin_ms = float(self._reservoir.bin_ms)
        self._e_rate = 1.0 if tau == 0 else 1.0 - math.exp(-bin_ms / tau)

    def _readout_tensors(self) -> dict[str, torch.Tensor]:
        return {"eligibility": self._e}

    def _trace(self, phi: torch.Tensor) -> None:
        self._e.lerp_(phi, self._e_rate)

    def _learn(
        self, phi: torch.Tensor, error: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor
    ) -> None:
        self._e.lerp_(phi, self._e_rate)
        scale = gate * self.learning_rate
        if self.normalize:
            scale = scale / (1.0 + (self._e * self._e).sum(1, keepdim=True))
        self._W.baddbmm_((error * scale).unsqueeze(2), self._e.unsqueeze(1))

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "n_neurons": 20, "bin_ms": 2.0, "dt_ms": 1.0, "device": "cpu"}
        yield {
            "n_components": 1,
            "neuron": "rate",
            "n_neurons": 12,
            "bin_ms": 1.0,
            "dt_ms": 1.0,
            "tau_eligibility_ms": 5.0,
            "gated": True,
            "device": "cpu",
            "seed": 3,
        }


class ForceReadout(_Readout):
    """FORCE learning (Sussillo and Abbott 2009) as the baseline: the readout z = W [r, 1] is
    trained by recursive least squares, per stream,

        k = G P phi / (lambda + G phi^T P phi),  P <- (P - k (P phi)^T) / lambda,  W <- W + E k^T

    with phi = [r, 1], E = y - z the error before the update, P(0) = I / alpha, G the gate
    (a sample weight: 0 skips the sample, forgetting included) and lambda the forgetting factor
    (1: classical FORCE, which weighs all past samples equally, so it slows down over time and
    needs `reset_covariance()` to re-adapt quickly). P is one (N + 1)^2 matrix per stream, so a
    sample costs O(N^2). The readout is not fed back into the reservoir (the reservoir is driven
    by the stream, and may be shared by several readouts). A NaN target leaves that output's
    weights alone; P still updates when any target of the stream is given.

    Parameters
    ----------
    n_components
        Outputs M (size of y, without the gate).
    alpha
        P(0) = I / alpha (regularisation; Sussillo and Abbott use 1 to 100). Default 100: on
        the decoding families and the linear track (standardised targets) it beat 10 and 1 on
        every family (median R² 0.49 / 0.36 / 0.09 on place fields, 0.84 / 0.83 / 0.81 on
        velocity, benchmarks/decoding_science.py).
    forgetting
        lambda in (0, 1].
    gated, standardize_targets, reservoir, n_neurons ... tau_ms, device, dtype, seed
        As for `ThreeFactorReadout`.
    """

    def __init__(
        self,
        n_components: int = 1,
        alpha: float = 100.0,
        forgetting: float = 1.0,
        gated: bool = False,
        standardize_targets: bool = True,
        reservoir: SpikingReservoir | None = None,
        n_neurons: int = 500,
        neuron: str = "rate",
        fs_fraction: float = 0.2,
        density: float = 0.1,
        recurrent_scale: float | None = None,
        input_scale: float | None = None,
        standardize: bool = True,
        bias: float = 0.0,
        bin_ms: float = 10.0,
        dt_ms: float = 0.5,
        tau_syn_ms: float = 10.0,
        tau_syn_max_ms: float = 200.0,
        tau_ms: float = 10.0,
        device: str = "auto",
        dtype: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.forgetting = forgetting
        self.gated = gated
        self.standardize_targets = standardize_targets
        self.reservoir = reservoir
        params = dict(locals())
        self._init_readout({name: params[name] for name in _RESERVOIR_PARAMS}, device, dtype, seed)
        _require_positive(alpha, "alpha")
        _require_positive(forgetting, "forgetting", 1.0)

    def _allocate_rule(self, n_features: int, batch: int) -> None:
        self._P = (
            torch.eye(n_features, dtype=self._torch_dtype, device=self._device)
            .div_(self.alpha)
            .repeat(batch, 1, 1)
        )

    def _readout_tensors(self) -> dict[str, torch.Tensor]:
        return {"P": self._P}

    def reset_covariance(self) -> None:
        """P <- I / alpha: the reset FORCE needs to re-adapt quickly after a change."""
        if self.is_initialized:
            eye = torch.eye(self._P.shape[1], dtype=self._P.dtype, device=self._P.device)
            self._P.copy_(eye.div_(self.alpha).expand_as(self._P))

    def _learn(
        self, phi: torch.Tensor, error: torch.Tensor, mask: torch.Tensor, gate: torch.Tensor
    ) -> None:
        lam = float(self.forgetting)
        weight = gate * mask.amax(1, keepdim=True)  # (B, 1): 0 skips the stream's sample
        Pphi = bmv(self._P, phi)
        gain = Pphi * (weight / (lam + weight * (phi * Pphi).sum(1, keepdim=True)))
        self._P.baddbmm_(gain.unsqueeze(2), Pphi.unsqueeze(1), alpha=-1.0)
        if lam != 1.0:
            grow = 1.0 + (weight > 0).to(phi.dtype) * (1.0 / lam - 1.0)
            self._P.mul_(grow.unsqueeze(2))
        self._W.add_(outer(error, gain))

    @classmethod
    def _unit_test_params(cls):
        yield {"n_components": 2, "n_neurons": 20, "bin_ms": 2.0, "dt_ms": 1.0, "device": "cpu"}
        yield {
            "n_components": 1,
            "neuron": "rate",
            "n_neurons": 12,
            "bin_ms": 1.0,
            "dt_ms": 1.0,
            "forgetting": 0.99,
            "gated": True,
            "device": "cpu",
            "seed": 3,
        }
