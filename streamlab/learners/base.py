"""The learner surface of DESIGN.md: a river transformer with a fast tensor path beside it.

A subclass stores its constructor arguments verbatim (river's `clone` and `_get_params` read
them back), allocates its state once on the first sample (`_allocate`), and puts the maths of one
time step in `_update` (infer then learn, in place) and `_infer` (infer only). The base class
handles devices, seeding, shapes, the `(B, n)` batch of independent streams, river's dict path
and `state_dict` round trips.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from river import base

from streamlab.errors import ConfigError, InputShapeError
from streamlab.learners.cuda_graphs import GraphableUpdate, GraphedUpdate

StateValue = torch.Tensor | int | float | bool | str | list[Any]
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
BACKENDS = ("auto", "torch", "numpy")


def resolve_device(device: str) -> torch.device:
    """`"auto"` is CUDA when a GPU is visible, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(
            f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r} asked for CUDA but no GPU is visible; use 'auto' or 'cpu'"
        )
    return resolved


def require_positive_int(value: Any, name: str) -> None:
    """Raise a ConfigError naming `name` unless `value` is a whole number >= 1 (not a bool)."""
    try:
        whole = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class Learner(base.Transformer, abc.ABC):
    """Base class of streamlab's online learners (see the module docstring).

    Subclasses must accept `device`, `dtype` and `seed` and store every argument under its own
    name. The output size is `n_components`."""

    n_components: int
    device: str
    dtype: str
    seed: int | None

    # -- what a subclass provides ---------------------------------------------------------
    @abc.abstractmethod
    def _allocate(self, n_features: int, batch: int) -> None:
        """Create every state tensor for `batch` streams of `n_features` channels."""

    @abc.abstractmethod
    def _update(self, x: torch.Tensor) -> torch.Tensor:
        """One time step on `x` (B, n): infer the output (B, k), then learn in place."""

    @abc.abstractmethod
    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        """The output (B, k) for `x` (B, n) without changing any state."""

    @abc.abstractmethod
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """The learned tensors, by name; `load_state_dict` copies into them in place."""

    def _state_scalars(self) -> dict[str, StateValue]:
        """Host-side learned scalars (counters) besides the tensors."""
        return {}

    def _load_scalars(self, scalars: dict[str, Any]) -> None:
        """Restore what `_state_scalars` returned."""

    # -- the fast path ----------------------------------------------------------------------
    def step(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | None = None) -> torch.Tensor:
        """Infer on sample `x` ((n,) or (B, n) for B streams in lockstep), then learn from it.

        Returns the output, (k,) or (B, k). `y` is a target for supervised learners and ignored
        by unsupervised ones."""
        batched = self._as_batch(x)
        out = self._update(batched)
        return out if self._batched_input else out[0]

    def extra_outputs(self) -> dict[str, torch.Tensor]:
        """Per-sample outputs besides the returned one, from the last step, each (B, d): the
        store records them beside the output (e.g. a controller's state estimate). None by
        default; only valid once the learner is initialised."""
        return {}

    def infer(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The output for `x` without learning; zeros before the first sample."""
        if not self.is_initialized:
            shape = (self.n_components,) if np.ndim(x) == 1 else (len(x), self.n_components)
            return torch.zeros(shape, dtype=self._torch_dtype, device=self._device)
        batched = self._as_batch(x)
        out = self._infer(batched)
        return out if self._batched_input else out[0]

    @property
    def is_initialized(self) -> bool:
        return self._n_features is not None

    @property
    def n_features_in(self) -> int | None:
        """Channels per sample, known after the first sample."""
        return self._n_features

    def initialize(self, n_features: int, batch: int = 1) -> None:
        """Allocate state for `batch` streams of `n_features` channels (the first sample does)."""
        if n_features < 1 or batch < 1:
            raise InputShapeError(
                f"need at least one channel and one stream, got n={n_features}, B={batch}"
            )
        self._n_features = n_features
        self._batch = batch
        self._steps = 0
        self._generator = torch.Generator(device=self._device)
        self._generator.manual_seed(0 if self.seed is None else int(self.seed))
        self._numpy_views = None
        self._cuda_graphs = None  # captured against the old tensors' addresses: recapture
        self._allocate(n_features, batch)

    def _as_batch(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(
                np.array(x, dtype=np.float32 if self.dtype == "float32" else np.float64)
            )
        if x.ndim not in (1, 2):
            raise InputShapeError(
                f"{type(self).__name__}.step takes one sample (n,) or a batch (B, n), got shape "
                f"{tuple(x.shape)}; a frame of m samples is stepped one sample at a time"
            )
        self._batched_input = x.ndim == 2
        batched = x if self._batched_input else x.unsqueeze(0)
        if not self.is_initialized:
            self.initialize(batched.shape[1], batched.shape[0])
        if batched.shape[1] != self._n_features or batched.shape[0] != self._batch:
            raise InputShapeError(
                f"{type(self).__name__} was built for {self._batch} stream(s) of "
                f"{self._n_features} channels, got a sample of shape {tuple(x.shape)}; "
                "use a fresh learner (or clone()) for a differently shaped stream"
            )
        if batched.dtype != self._torch_dtype or batched.device != self._device:
            batched = batched.to(device=self._device, dtype=self._torch_dtype)
        return batched

    # -- construction helpers for subclasses ---------------------------------------------
    def _init_common(self, device: str, dtype: str, seed: int | None) -> None:
        self.device = device
        self.dtype = dtype
        self.seed = seed
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self._device = resolve_device(device)
        self._torch_dtype = _DTYPES[dtype]
        self._n_features: int | None = None
        self._batch = 1
        self._batched_input = False
        self._steps = 0
        self._feature_names: list[Any] | None = None

    def _init_backend(self, backend: str, numpy: bool = True) -> None:
        """Check and store `backend`: `"auto"` is a NumPy step on the CPU (for learners that
        have one, `numpy=True`: torch's per-op overhead dominates small steps) and the torch
        step replayed as CUDA graphs on CUDA (launches dominate them); `"torch"` is eager torch
        everywhere."""
        self.backend = backend
        allowed = BACKENDS if numpy else ("auto", "torch")
        if backend not in allowed:
            raise ConfigError(f"backend must be one of {allowed}, got {backend!r}")
        if backend == "numpy" and self._device.type != "cpu":
            raise ConfigError("backend='numpy' runs on the CPU only; use 'auto' or 'torch' on CUDA")

    # With backend "auto", lockstep batches above this many streams step in torch on the CPU
    # (where a learner measured torch faster there); None: NumPy at every batch size.
    _numpy_max_batch: int | None = None

    @property
    def _numpy_step(self) -> bool:
        """Whether steps run in NumPy (on views of the CPU state tensors)."""
        if self._device.type != "cpu" or self.backend == "torch":
            return False
        limit = self._numpy_max_batch
        return self.backend == "numpy" or limit is None or self._batch <= limit

    def _numpy_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a NumPy step reads and writes (default: the state tensors)."""
        return self._state_tensors()

    def _views(self) -> dict[str, np.ndarray]:
        """NumPy views of `_numpy_tensors()`, sharing their memory, made once per allocation
        (`tensor.numpy()` costs microseconds, a NumPy step's whole budget is tens). Dropped
        when pickled or copied, so a copy never writes into the original's tensors."""
        views = self.__dict__.get("_numpy_views")
        if views is None:
            views = {name: t.numpy() for name, t in self._numpy_tensors().items()}
            self._numpy_views = views
        return views

    @property
    def _graph_step(self) -> bool:
        """Whether steps replay CUDA graphs (CUDA with `backend="auto"`)."""
        return self._device.type == "cuda" and getattr(self, "backend", "torch") == "auto"

    def _graphed(
        self, update: GraphableUpdate, x: torch.Tensor, scalars: Sequence[float], variant: str
    ) -> torch.Tensor:
        """`update(x, scalars)` replayed from the CUDA graph captured for `variant` (captured
        on its first use; see `cuda_graphs`). Graphs hold the state tensors' addresses, so they
        are dropped whenever the state is reallocated (`initialize`, `load_state_dict`)."""
        graphs = self.__dict__.get("_cuda_graphs")
        if graphs is None:
            graphs = self._cuda_graphs = {}
        graph = graphs.get(variant)
        if graph is None:
            graph = graphs[variant] = GraphedUpdate(
                update, self._state_tensors, x, len(scalars), owner=type(self).__name__
            )
        return graph(x, scalars, variant)

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=self._torch_dtype, device=self._device)

    def _randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(
            shape, generator=self._generator, dtype=self._torch_dtype, device=self._device
        )

    # -- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, StateValue]:
        """Everything needed to resume exactly: learned tensors (cloned), counters, the random
        generator and the dict path's feature order. Empty before the first sample."""
        if not self.is_initialized:
            return {}
        state: dict[str, StateValue] = {
            name: tensor.detach().clone() for name, tensor in self._state_tensors().items()
        }
        state.update(self._state_scalars())
        state["_n_features"] = int(self._n_features)  # type: ignore[arg-type]
        state["_batch"] = int(self._batch)
        state["_steps"] = int(self._steps)
        state["_generator"] = self._generator.get_state()
        if self._feature_names is not None:
            state["_feature_names"] = [str(name) for name in self._feature_names]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` (tensors may be NumPy arrays or on another device)."""
        if not state:
            return
        self.initialize(int(state["_n_features"]), int(state["_batch"]))
        for name, tensor in self._state_tensors().items():
            if name not in state:
                raise ConfigError(
                    f"state for {type(self).__name__} lacks {name!r}; "
                    "was it saved by another learner?"
                )
            value = torch.as_tensor(
                np.asarray(state[name])
                if not isinstance(state[name], torch.Tensor)
                else state[name]
            )
            if tuple(value.shape) != tuple(tensor.shape):
                raise ConfigError(
                    f"state {name!r} has shape {tuple(value.shape)}, "
                    f"learner expects {tuple(tensor.shape)}"
                )
            tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
        self._steps = int(state["_steps"])
        generator_state = state["_generator"]
        self._generator.set_state(
            torch.as_tensor(np.asarray(generator_state), dtype=torch.uint8).cpu()
        )
        names = state.get("_feature_names")
        self._feature_names = list(names) if names is not None else None
        self._load_scalars(state)

    # -- river's dict path ----------------------------------------------------------------
    def _dict_to_tensor(self, x: dict[Any, Any]) -> torch.Tensor:
        """The dict sample as a vector in the learner's feature order; a NaN or infinite
        value is refused (one would poison every later output, as the pipeline's frames would
        be refused)."""
        if self._feature_names is None:
            self._feature_names = sorted(x, key=str)
        values = [float(x.get(name, 0.0)) for name in self._feature_names]
        bad = [name for name, value in zip(self._feature_names, values, strict=True)
               if not math.isfinite(value)]  # fmt: skip
        if bad:
            raise InputShapeError(
                f"{type(self).__name__}: features {bad[:5]} are not finite (NaN or infinite); "
                "nothing was learned from this sample: drop or impute them first"
            )
        return torch.tensor(values, dtype=self._torch_dtype)

    def learn_one(self, x: dict[Any, Any]) -> None:
        """river's surface: one step on a dict sample (features fixed, by sorted name, at the
        first sample; a missing feature counts as 0, a new one is ignored)."""
        self.step(self._dict_to_tensor(x))

    def transform_one(self, x: dict[Any, Any]) -> dict[str, float]:
        """river's surface: the output for a dict sample, without learning."""
        if not self.is_initialized:
            values = [0.0] * self.n_components
        else:
            values = self.infer(self._dict_to_tensor(x)).tolist()
        return {f"component_{i}": float(v) for i, v in enumerate(values)}

    @property
    def _is_stochastic(self) -> bool:
        return True

    # -- pickling: a torch.Generator pickles with a memory address in it, so equal learners
    # would pickle differently; its state travels as bytes instead
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_numpy_views", None)  # views of this object's tensors: rebuilt on use
        state.pop("_cuda_graphs", None)  # likewise captured against them: recaptured on use
        generator = state.pop("_generator", None)
        if generator is not None:
            state["_generator_bytes"] = bytes(generator.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator_bytes = state.pop("_generator_bytes", None)
        self.__dict__.update(state)
        if generator_bytes is not None:
            self._generator = torch.Generator(device=self._device)
            self._generator.set_state(
                torch.frombuffer(bytearray(generator_bytes), dtype=torch.uint8)
            )


class TargetLearner(Learner):
    """A learner whose `step(x, y)` takes a per-sample signal y besides the input: a target, a
    second view, or a cost. `_pending` holds it as a (B, q) tensor (None when not given) during
    `_update`."""

    _pending: torch.Tensor | None = None

    def step(self, x: torch.Tensor | np.ndarray, y: Any = None) -> torch.Tensor:
        """Infer on `x` ((n,) or (B, n)), then learn using `y` ((q,) or (B, q); None: no signal).
        Returns the output, (k,) or (B, k)."""
        self._pending = None if y is None else self._as_signal(y, np.ndim(x) == 2, len(x))
        try:
            return super().step(x)
        finally:
            self._pending = None

    def _as_signal(self, y: Any, batched: bool, rows: int) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(np.asarray(y, dtype=np.float64))
        y = y.to(device=self._device, dtype=self._torch_dtype)
        batch = rows if batched else 1
        if y.numel() % batch or y.ndim > 2 or (batched and y.ndim == 2 and y.shape[0] != batch):
            raise InputShapeError(
                f"{type(self).__name__}.step got y of shape {tuple(y.shape)} for "
                f"{batch} stream(s); give (q,) for one sample or (B, q) for a batch"
            )
        return y.reshape(batch, -1)
