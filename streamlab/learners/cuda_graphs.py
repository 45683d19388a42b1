"""One learner step replayed as a CUDA graph: the per-sample update launched as one graph
instead of dozens of small kernels, with no host-device sync.

A learner opts in by giving a *graphable update* `update(x, scalars)`: tensor ops only, every
state tensor changed in place, and everything that varies from step to step on the host (step
sizes from the step counter, ...) passed in the device tensor `scalars`. Steps that take a
different code path (e.g. an exact re-inversion every N samples) name a different `variant`;
each variant is captured once, on its first use, and replayed after that.

Capture is checked once per variant: the captured graph must reproduce the eager update (output
and every state tensor) on the sample it was captured on, else the learner falls back to eager
steps for good and says why in a warning. CUDA graphs need a CUDA device; on the CPU the
same `update` simply runs eagerly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence

import torch

GraphableUpdate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

WARMUP_STEPS = 3  # eager runs on a side stream before capture (cuBLAS workspaces, lazy init)


class GraphedUpdate:
    """Replays `update(x, scalars)` on CUDA as one graph per variant (see the module docstring).

    `state` returns the learner's state tensors by name (they must keep their storage: the
    graph reads and writes those addresses); `generator` is the learner's own CUDA random
    generator, if its update draws random numbers."""

    def __init__(
        self,
        update: GraphableUpdate,
        state: Callable[[], dict[str, torch.Tensor]],
        x_like: torch.Tensor,
        n_scalars: int,
        generator: torch.Generator | None = None,
        owner: str = "learner",
    ) -> None:
        if x_like.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA tensor; on the CPU call the update eagerly")
        self._update = update
        self._state = state
        self._generator = generator
        self._owner = owner
        self._x = torch.empty_like(x_like)
        self._scalars = torch.zeros(n_scalars, dtype=x_like.dtype, device=x_like.device)
        # host staging in pinned memory, so the copies to the device are asynchronous; two
        # buffers in turn, each reused only once its previous copy has finished (an event)
        self._host_scalars = [
            torch.zeros(n_scalars, dtype=x_like.dtype).pin_memory() for _ in range(2)
        ]
        self._copied = [torch.cuda.Event(), torch.cuda.Event()]
        self._turn = 0
        self._graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None  # memory pool shared by the variants' graphs
        self.eager_variants: dict[Hashable, str] = {}  # variant -> why it is not graphed
        self.replays = 0

    def __call__(
        self, x: torch.Tensor, scalars: Sequence[float], variant: Hashable
    ) -> torch.Tensor:
        """One step: `x` (on the device) and `scalars` into the static buffers, then the
        variant's graph (captured now if new). Returns a copy of the graph's output buffer (the
        buffer itself is overwritten by the next replay; callers keep several outputs)."""
        turn = self._turn = 1 - self._turn
        self._copied[turn].synchronize()  # the copy issued two steps ago: long finished
        staging = self._host_scalars[turn]
        for i, value in enumerate(scalars):
            staging[i] = value
        self._scalars.copy_(staging, non_blocking=True)
        self._copied[turn].record()
        self._x.copy_(x, non_blocking=True)
        if variant in self.eager_variants:
            return self._update(self._x, self._scalars)
        entry = self._graphs.get(variant)
        if entry is None:
            return self._capture(variant)
        graph, output = entry
        graph.replay()
        self.replays += 1
        return output.clone()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {name: tensor.clone() for name, tensor in self._state().items()}

    def _restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        for name, tensor in self._state().items():
            tensor.copy_(snapshot[name])

    def _capture(self, variant: Hashable) -> torch.Tensor:
        """Warm up, capture the variant, and check one replay against the eager update; on any
        failure this variant steps eagerly from then on (the state is left as one eager step leaves
        it), the others are unaffected."""
        before = self._snapshot()
        generator_state = self._generator.get_state() if self._generator is not None else None
        # the reference: one eager step from the current state
        expected = self._update(self._x, self._scalars).clone()
        after = self._snapshot()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._restore(before)
                    self._update(self._x, self._scalars)
            torch.cuda.current_stream().wait_stream(side)
            self._restore(before)
            if generator_state is not None:
                self._generator.set_state(generator_state)  # type: ignore[union-attr]
            graph = torch.cuda.CUDAGraph()
            if self._generator is not None:
                graph.register_generator_state(self._generator)
            with torch.cuda.graph(graph, pool=self._pool):
                output = self._update(self._x, self._scalars)
            if self._pool is None:
                self._pool = graph.pool()
            graph.replay()
            mismatch = _first_mismatch(output, expected, self._state(), after)
        except RuntimeError as exc:  # capture refused (an op that syncs or is not capturable)
            mismatch = f"capture failed: {exc}"
        if mismatch is not None:
            self.eager_variants[variant] = mismatch
            self._restore(after)
            warnings.warn(
                f"{self._owner}: step variant {variant!r} not graphed, stepping eagerly instead "
                f"({mismatch})",
                RuntimeWarning,
                stacklevel=3,
            )
            return expected
        self._graphs[variant] = (graph, output)
        self.replays += 1
        return output.clone()


def _first_mismatch(
    output: torch.Tensor,
    expected: torch.Tensor,
    state: dict[str, torch.Tensor],
    expected_state: dict[str, torch.Tensor],
) -> str | None:
    """Why the replayed step differs from the eager one, or None when they agree."""
    checks = [("output", output, expected)] + [
        (name, tensor, expected_state[name]) for name, tensor in state.items()
    ]
    for name, got, want in checks:
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-6, equal_nan=True):
            return f"the replayed step's {name} differs from the eager step's"
    return None
