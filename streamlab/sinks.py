"""Where a pipeline's results go: the Zarr run store (buffered, written off the hot path) and a
ZeroMQ publisher that sends each learner's output back, tagged with the input sample's `seq`."""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlab.errors import StoreError
from streamlab.learners.base import Learner
from streamlab.metrics import LagMeter
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

    def on_calibration(self, seconds: float, end_t: float, end_seq: int, t: float) -> None:  # noqa: B027
        """Calibration (`seconds` of stream time, up to `end_t`) ended: the sample `end_seq`
        (at time `t`) is the first given to the learners without y."""

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

    def on_calibration(self, seconds: float, end_t: float, end_seq: int, t: float) -> None:
        self.writer.submit(
            RunStore.set_calibration,
            {"seconds": seconds, "end_t": end_t, "end_seq": int(end_seq), "first_decoded_t": t},
        )

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


# The side streams `ZmqOutputSink` publishes beside the learners' outputs (see its docstring).
HEALTH_FIELDS = (
    "samples",  # samples processed since the run (or this sink) started
    "samples_per_s",  # over the last health interval
    "latency_p50_us",  # arrival -> last learner's output, samples of the last interval
    "latency_p99_us",
    "latency_max_us",
    "gaps",  # gaps found by the source (seq jumps: drops at a high-water mark, lost samples)
    "missing",  # samples those gaps lost
    "rejects",  # messages the source refused
    "checkpoints",  # checkpoints handed to the sinks
    "checkpoint_age_s",  # wall seconds since the last checkpoint (NaN: none yet)
    "divergences",  # learners rolled back for a non-finite output
    "last_seq",  # seq of the last input sample processed (-1: none yet)
    "elapsed_s",  # wall seconds since the sink opened
    "behind_s",  # how far the run is behind its source's clock (`metrics.LagMeter`)
)
# latency histogram bins of a health frame: 1 us .. 1 s, 8 bins per decade
HEALTH_LATENCY_EDGES_US = np.logspace(0, 6, 49)


class ZmqOutputSink(Sink):
    """Publishes each learner's outputs on `endpoint` (PUB) as frames of stream
    `<prefix>/<learner>`, kind = the learner's name, `seq` = the input sample's seq.

    Beside them, for a live view of the loop (`streamlab dashboard`), two side streams in the same
    wire format, both throttled by time so the per-frame path stays a few stores into
    preallocated buffers (no per-frame JSON, no per-frame allocation) and the extra work runs
    after the outputs are sent:

    - `<prefix>/health`, every `health_interval` s (and from `tick()` when no data comes): one
      float64 row, `HEALTH_FIELDS` then the counts of the interval's latencies in the bins of
      `HEALTH_LATENCY_EDGES_US`; its hello lists both, so the row describes itself.
    - `<prefix>/input`, every `input_interval` s while data comes: one float32 row, the mean of
      the input samples since the last one (a decimated copy for a raster); `t` is the source
      time of the bin's first sample, `seq` counts bins.

    Every stream's hello is sent again each `hello_every` s with the next `seq`, so a listener
    that connects late still learns what each stream is. Learners taking y (`targets`) name
    their y channels in their hello (`y`, `y_index`), so a viewer can set decoded beside true.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        prefix: str = "streamlab",
        curve: CurveServer | None = None,
        targets: Mapping[str, Sequence[str | int]] | None = None,
        health_interval: float = 0.1,
        input_interval: float = 0.05,
        hello_every: float = 1.0,
    ) -> None:
        self.publisher = Publisher(endpoint, pattern="pub", curve=curve)
        self.endpoint = self.publisher.endpoint
        self.prefix = prefix
        self.targets = {name: list(channels) for name, channels in (targets or {}).items()}
        self._topics: dict[str, str] = {}
        self._hellos: dict[str, dict[str, Any]] = {}
        self._health_topic = f"{prefix}/health"
        self._input_topic = f"{prefix}/input"
        self._intervals_ns = (
            int(health_interval * 1e9),
            int(input_interval * 1e9),
            int(hello_every * 1e9),
        )
        self._opened = False

    def open(self, learners: dict[str, Learner], stream: StreamInfo) -> None:
        from streamlab.pipeline import split_channels  # the pipeline's own reading of y=

        names = stream.meta.get("channels")
        names = [str(c) for c in names] if isinstance(names, list) else None
        for name, learner in learners.items():
            topic = f"{self.prefix}/{name}"
            self._topics[name] = topic
            meta: dict[str, Any] = {
                "learner": type(learner).__name__,
                "n_components": learner.n_components,
                "input": stream.name,
            }
            if name in self.targets:
                _, y = split_channels(stream, self.targets[name], name)
                meta["y_index"] = [int(i) for i in y]
                meta["y"] = [names[i] if names else str(i) for i in meta["y_index"]]
            self._hellos[topic] = meta
        self._hellos[self._health_topic] = {
            "fields": list(HEALTH_FIELDS),
            "latency_edges_us": HEALTH_LATENCY_EDGES_US.tolist(),
            "allow_nonfinite": True,
            "input": stream.name,
        }
        input_meta: dict[str, Any] = {
            "source": stream.name,
            "source_kind": stream.kind,
            "source_rate": stream.rate,
            "reduce": "mean",
            "bin_s": self._intervals_ns[1] / 1e9,
        }
        if names and len(names) == stream.n_channels:
            input_meta["channels"] = names
        else:
            input_meta["n_channels"] = stream.n_channels
        self._hellos[self._input_topic] = input_meta
        self._next_seq = dict.fromkeys(self._hellos, 0)
        self._n_channels = stream.n_channels
        # the hot path's buffers, allocated once
        self._latency_ring = np.zeros(8192, dtype=np.int64)
        self._latency_fill = 0
        self._input_sum = np.zeros(stream.n_channels, dtype=np.float64)
        self._input_rows = 0
        self._input_t = 0.0
        self._counts = dict.fromkeys(
            ("samples", "gaps", "missing", "rejects", "checkpoints", "divergences"), 0
        )
        self._last_seq = -1
        self._lag = LagMeter()
        now = time.perf_counter_ns()
        self._opened_ns = now
        self._checkpoint_ns: int | None = None
        self._health_base = (now, 0)  # (time, samples) at the last health frame
        self._due = [now + interval for interval in self._intervals_ns]
        self._due[2] = now  # the hellos go out with the first frame, which knows the first seq
        self._due_any = now
        self._opened = True

    def on_frame(
        self,
        frame: Frame,
        outputs: dict[str, torch.Tensor],
        latency_ns: np.ndarray,
        extras: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        if self._last_seq < 0:  # the first frame: the hellos announce where outputs start
            self._last_seq = frame.seq - 1
            self._send_hellos(time.perf_counter_ns())
        self._lag.update(frame.received_ns or time.perf_counter_ns(), frame.t)
        for name, topic in self._topics.items():
            data = outputs[name].detach().cpu().numpy()
            self.publisher.send(Frame(topic, data, frame.seq, frame.t, name, frame.rate))
        # what the side streams need, into preallocated buffers
        m = frame.n_samples
        ring, fill = self._latency_ring, self._latency_fill
        if m == 1:
            ring[fill % len(ring)] = latency_ns[-1, 0]
            np.add(self._input_sum, frame.data[0], out=self._input_sum)
        else:
            for i in range(m):
                ring[(fill + i) % len(ring)] = latency_ns[-1, i]
            for row in frame.data:
                np.add(self._input_sum, row, out=self._input_sum)
        self._latency_fill = fill + m
        if self._input_rows == 0:
            self._input_t = frame.t
        self._input_rows += m
        self._counts["samples"] += m
        self._last_seq = frame.seq + m - 1
        now = frame.received_ns or time.perf_counter_ns()
        if now >= self._due_any:
            self._publish_side(now)

    def on_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Gap):
                self._counts["gaps"] += 1
                self._counts["missing"] += event.n_missing
            else:
                self._counts["rejects"] += 1

    def on_checkpoint(self, checkpoint: Checkpoint, states: dict[str, dict[str, Any]]) -> None:
        self._counts["checkpoints"] += 1
        self._checkpoint_ns = time.perf_counter_ns()

    def on_divergence(self, learner: str, seq: int, restored_seq: int | None) -> None:
        self._counts["divergences"] += 1

    def tick(self) -> None:
        """Health (and hellos) keep coming while no data does."""
        if self._opened:
            self._publish_side(time.perf_counter_ns())

    def health_row(self, now_ns: int) -> np.ndarray:
        """The next health frame's row (and start a new interval): `HEALTH_FIELDS`, then the
        latency histogram of the interval."""
        n = min(self._latency_fill, len(self._latency_ring))
        latency_us = np.sort(self._latency_ring[:n]) / 1e3  # a few us; np.percentile is ~100
        self._latency_fill = 0
        base_ns, base_samples = self._health_base
        samples = self._counts["samples"]
        elapsed = max((now_ns - base_ns) / 1e9, 1e-9)
        self._health_base = (now_ns, samples)
        if n:  # nearest-rank quantiles of the sorted interval
            p50, p99 = latency_us[round(0.5 * (n - 1))], latency_us[round(0.99 * (n - 1))]
            peak = float(latency_us[-1])
        else:
            p50 = p99 = peak = float("nan")
        edges = HEALTH_LATENCY_EDGES_US
        bins = np.searchsorted(edges, latency_us, side="right") - 1
        hist = np.bincount(np.clip(bins, 0, len(edges) - 2), minlength=len(edges) - 1)
        checkpoint_age = (
            (now_ns - self._checkpoint_ns) / 1e9 if self._checkpoint_ns else float("nan")
        )
        fields = {
            **self._counts,
            "samples_per_s": (samples - base_samples) / elapsed,
            "latency_p50_us": p50,
            "latency_p99_us": p99,
            "latency_max_us": peak,
            "checkpoint_age_s": checkpoint_age,
            "last_seq": self._last_seq,
            "elapsed_s": (now_ns - self._opened_ns) / 1e9,
            "behind_s": self._lag.behind_s,
        }
        row = np.empty((1, len(HEALTH_FIELDS) + len(hist)), dtype=np.float64)
        row[0, : len(HEALTH_FIELDS)] = [fields[key] for key in HEALTH_FIELDS]
        row[0, len(HEALTH_FIELDS) :] = hist
        return row

    def _publish_side(self, now_ns: int) -> None:
        """Send whichever of health, input and hellos are due."""
        health_due, input_due, hello_due = self._due
        health_ns, input_ns, _ = self._intervals_ns
        if now_ns >= input_due:
            if self._input_rows:
                mean = (self._input_sum / self._input_rows).astype(np.float32)[None, :]
                self._send(self._input_topic, mean, self._input_t, "input")
                self._input_sum[:] = 0.0
                self._input_rows = 0
            self._due[1] = now_ns + input_ns
        if now_ns >= health_due:
            row = self.health_row(now_ns)
            self._send(self._health_topic, row, float(self._input_t), "health")
            self._due[0] = now_ns + health_ns
        if now_ns >= hello_due and self._last_seq >= 0:
            self._send_hellos(now_ns)
        self._due_any = min(self._due)

    def _send(self, topic: str, row: np.ndarray, t: float, kind: str) -> None:
        seq = self._next_seq[topic]
        self.publisher.send(Frame(topic, row, seq, t, kind))
        self._next_seq[topic] = seq + 1

    def _send_hellos(self, now_ns: int) -> None:
        next_output = self._last_seq + 1
        for topic, meta in self._hellos.items():
            seq = next_output if topic in self._topics.values() else self._next_seq[topic]
            self.publisher.hello(topic, seq, 0.0, meta)
        self._due[2] = now_ns + self._intervals_ns[2]

    def close(self, status: str, error: str | None = None) -> None:
        if self._opened:
            self._publish_side(max(self._due) + 1)  # the last input bin and health
        self.publisher.close(linger=0.2)
