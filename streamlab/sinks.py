"""Where a pipeline's results go: the Zarr run store (buffered, written off the hot path) and a
ZeroMQ publisher that sends each learner's output back, tagged with the input sample's `seq`."""

from __future__ import annotations

import abc
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlab.errors import StoreError
from streamlab.learners.base import Learner
from streamlab.store.run_store import Checkpoint, RunStore
from streamlab.store.writer import StoreWriter
from streamlab.stream.protocol import Frame
from streamlab.stream.security import CurveServer
from streamlab.stream.transport import Event, Gap, Publisher, Rejection


@dataclass(frozen=True)
class StreamInfo:
    """The data stream a pipeline follows: its name, channel count, dtype, kind, rate, hello."""

    name: str
    n_channels: int
    dtype: str
    kind: str
    rate: float | None
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_channels": self.n_channels,
            "dtype": self.dtype,
            "kind": self.kind,
            "rate": self.rate,
            "meta": self.meta,
        }


class Sink(abc.ABC):
    """Receives everything a pipeline produces. `on_frame` is on the hot path: be quick."""

    def open(self, learners: dict[str, Learner], stream: StreamInfo) -> None:  # noqa: B027
        """Called once, at the first data frame (or at resume)."""

    @abc.abstractmethod
    def on_frame(
        self,
        frame: Frame,
        outputs: dict[str, torch.Tensor],
        latency_ns: np.ndarray,
        extras: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """Outputs (m, k) per learner for the m samples of `frame`; latency_ns (learners, m);
        `extras` the learners' extra outputs (learner -> name -> (m, d)), for those that have
        them."""

    def on_events(self, events: list[Event]) -> None:  # noqa: B027
        """Gaps and rejections detected by the source."""

    def on_checkpoint(self, checkpoint: Checkpoint, states: dict[str, dict[str, Any]]) -> None:  # noqa: B027
        """Learner states after sample `checkpoint.seq`."""

    def on_divergence(self, learner: str, seq: int, restored_seq: int | None) -> None:  # noqa: B027
        """Learner `learner` gave a non-finite output at `seq` and was rolled back to its state
        after `restored_seq` (None: reset to a fresh learner)."""

    def tick(self) -> None:  # noqa: B027
        """Called regularly, data or not: flush what is due, raise errors from other threads."""

    def close(self, status: str, error: str | None = None) -> None:  # noqa: B027
        """The run ended with `status`; flush everything."""


class ZarrSink(Sink):
    """Buffers rows (on the learners' device, so no per-sample host copy) and hands full blocks,
    or every `flush_interval` seconds what there is, to a `StoreWriter` process. The store must be
    reachable from another process: a local path or a remote URL, not `memory://`."""

    def __init__(
        self,
        store: RunStore,
        *,
        block_rows: int = 1024,
        flush_interval: float = 0.5,
        record_input: bool = False,
        keep_checkpoints: int = 10,
    ) -> None:
        self.store = store
        self.block_rows = block_rows
        self.flush_interval = flush_interval
        self.record_input = record_input
        self.keep_checkpoints = keep_checkpoints
        self.writer = StoreWriter(store.path)
        self._names: list[str] = []
        self._fill = 0
        self._last_flush = time.perf_counter()
        self._rows_submitted: dict[str, int] = {}
        self._input_rows = 0
        self._gap_rows = 0
        self._pending_gaps: list[Gap] = []
        self._pending_rejections: list[Rejection] = []
        self.checkpoints = 0

    def open(self, learners: dict[str, Learner], stream: StreamInfo) -> None:
        R = self.block_rows
        self._names = list(learners)
        self._out = {}
        self._extra: dict[str, dict[str, torch.Tensor]] = {}
        for name, learner in learners.items():
            dtype = "f4" if learner.dtype == "float32" else "f8"
            info = {"class": type(learner).__name__, "params": _jsonable(learner._get_params())}
            extras = {k: int(v.shape[1]) for k, v in learner.extra_outputs().items()}
            table = self.store.learner(name, learner.n_components, dtype, info, extras)
            self._rows_submitted[name] = table.rows
            self._out[name] = torch.zeros(
                (R, learner.n_components), dtype=learner._torch_dtype, device=learner._device
            )
            self._extra[name] = {
                key: torch.zeros((R, size), dtype=learner._torch_dtype, device=learner._device)
                for key, size in extras.items()
            }
        self._seq = np.zeros(R, dtype=np.uint64)
        self._t = np.zeros(R, dtype=np.float64)
        self._latency = np.zeros((len(learners), R), dtype=np.float32)
        self._rate = stream.rate
        if self.record_input:
            self._input = np.zeros((R, stream.n_channels), dtype=np.dtype(stream.dtype))
            self._input_rows = self.store.input(stream.n_channels, np.dtype(stream.dtype).str).rows
        self._gap_rows = self.store.gaps.rows
        self.writer.submit(RunStore.set_stream, stream.to_dict())

    def on_frame(
        self,
        frame: Frame,
        outputs: dict[str, torch.Tensor],
        latency_ns: np.ndarray,
        extras: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        m = frame.n_samples
        pos = 0
        while pos < m:
            take = min(m - pos, self.block_rows - self._fill)
            lo, hi = self._fill, self._fill + take
            for name in self._names:
                self._out[name][lo:hi].copy_(outputs[name][pos : pos + take])
                for key, buffer in self._extra[name].items():
                    buffer[lo:hi].copy_(extras[name][key][pos : pos + take])  # type: ignore[index]
            offsets = np.arange(pos, pos + take)
            self._seq[lo:hi] = frame.seq + offsets
            self._t[lo:hi] = frame.t + offsets / frame.rate if frame.rate else frame.t
            self._latency[:, lo:hi] = latency_ns[:, pos : pos + take] / 1e3
            if self.record_input:
                self._input[lo:hi] = frame.data[pos : pos + take]
            self._fill = hi
            pos += take
            if self._fill == self.block_rows:
                self.flush()

    def on_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Gap):
                self._pending_gaps.append(event)
            else:
                self._pending_rejections.append(event)

    def on_divergence(self, learner: str, seq: int, restored_seq: int | None) -> None:
        self.writer.submit(RunStore.record_divergence, learner, seq, restored_seq)

    def tick(self) -> None:
        self.writer.check()
        if time.perf_counter() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Hand buffered rows and events to the writer process."""
        self._last_flush = time.perf_counter()
        n = self._fill
        if n and self._names:
            seq, t = self._seq[:n].copy(), self._t[:n].copy()
            for i, name in enumerate(self._names):
                block = self._out[name][:n].to("cpu", copy=True).numpy()
                latency = self._latency[i, :n].copy()
                extra = {
                    key: buffer[:n].to("cpu", copy=True).numpy()
                    for key, buffer in self._extra[name].items()
                }
                self.writer.submit(RunStore.append_learner, name, block, seq, t, latency, extra)
                self._rows_submitted[name] += n
            if self.record_input:
                self.writer.submit(RunStore.append_input, self._input[:n].copy(), seq, t)
                self._input_rows += n
        self._fill = 0
        if self._pending_gaps:
            gaps, self._pending_gaps = self._pending_gaps, []
            self.writer.submit(RunStore.append_events, "gaps", _gap_columns(gaps))
            self._gap_rows += len(gaps)
        if self._pending_rejections:
            rejections, self._pending_rejections = self._pending_rejections, []
            self.writer.submit(RunStore.append_events, "rejected", _rejection_columns(rejections))

    def on_checkpoint(self, checkpoint: Checkpoint, states: dict[str, dict[str, Any]]) -> None:
        self.flush()
        checkpoint.rows = dict(self._rows_submitted)
        checkpoint.input_rows = self._input_rows
        checkpoint.gap_rows = self._gap_rows
        host_states = {name: _to_host(state) for name, state in states.items()}
        self.writer.submit(
            RunStore.write_checkpoint, checkpoint, host_states, self.keep_checkpoints
        )
        self.checkpoints += 1

    def close(self, status: str, error: str | None = None) -> None:
        """Flush, then set the final status and consolidate, all through the writer so they
        land after every row; if the writer itself failed, record the failure directly."""
        try:
            self.flush()
            self.writer.submit(RunStore.set_status, status, error)
            self.writer.submit(RunStore.consolidate)
            self.writer.drain()
        except StoreError as exc:
            self.writer.close()
            with contextlib.suppress(
                StoreError, OSError, ValueError
            ):  # unwritable: the error says so
                RunStore.open(self.store.path, mode="r+").set_status("failed", error or str(exc))
            raise
        finally:
            self.writer.close()


def _to_host(state: dict[str, Any]) -> dict[str, Any]:
    """A state_dict with tensors as NumPy arrays, ready to cross to the writer process."""
    return {
        k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()
    }


def _gap_columns(gaps: list[Gap]) -> dict[str, np.ndarray]:
    return {
        "stream": np.array([g.stream for g in gaps], dtype=object),
        "first_seq": np.array([g.first_seq for g in gaps], dtype=np.uint64),
        "n_missing": np.array([g.n_missing for g in gaps], dtype=np.uint64),
        "reason": np.array([g.reason for g in gaps], dtype=object),
        "wall_time": np.array([g.wall_time for g in gaps], dtype=np.float64),
    }


def _rejection_columns(rejections: list[Rejection]) -> dict[str, np.ndarray]:
    return {
        "stream": np.array([r.stream for r in rejections], dtype=object),
        "code": np.array([str(r.code) for r in rejections], dtype=object),
        "detail": np.array([r.detail for r in rejections], dtype=object),
        "seq": np.array([r.seq for r in rejections], dtype=np.int64),
        "wall_time": np.array([r.wall_time for r in rejections], dtype=np.float64),
    }


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | type(None)) else repr(v)
        for k, v in params.items()
    }


class ZmqOutputSink(Sink):
    """Publishes each learner's outputs on `endpoint` (PUB) as frames of stream
    `streamlab/<learner>`, kind = the learner's name, `seq` = the input sample's seq."""

    def __init__(
        self, endpoint: str, *, prefix: str = "streamlab", curve: CurveServer | None = None
    ) -> None:
        self.publisher = Publisher(endpoint, pattern="pub", curve=curve)
        self.endpoint = self.publisher.endpoint
        self.prefix = prefix
        self._topics: dict[str, str] = {}

    def open(self, learners: dict[str, Learner], stream: StreamInfo) -> None:
        for name, learner in learners.items():
            topic = f"{self.prefix}/{name}"
            self._topics[name] = topic
            self.publisher.hello(
                topic,
                0,
                0.0,
                {
                    "learner": type(learner).__name__,
                    "n_components": learner.n_components,
                    "input": stream.name,
                },
            )

    def on_frame(
        self,
        frame: Frame,
        outputs: dict[str, torch.Tensor],
        latency_ns: np.ndarray,
        extras: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        for name, topic in self._topics.items():
            data = outputs[name].detach().cpu().numpy()
            self.publisher.send(Frame(topic, data, frame.seq, frame.t, name, frame.rate))

    def close(self, status: str, error: str | None = None) -> None:
        self.publisher.close(linger=0.2)
