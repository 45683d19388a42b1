"""What the dashboard shows, as plain Python and NumPy: no Bokeh here, so every part is testable
without a browser.

A feed is polled by the page (10 times a second) and returns an `Update`: the rows that arrived
since the last poll for each learner, the loop's health frames, and the input decimated for a
raster. Two feeds exist:

- `LiveFeed` subscribes to what `attach --publish` sends: `<prefix>/<learner>` outputs, and
  the side streams `<prefix>/health` and `<prefix>/input` (see `streamlab.sinks.ZmqOutputSink`);
- `StoreFeed` follows a run store while it is written, reading only committed rows it has not
  read yet, and derives the same health numbers from the store's tables.

Memory is bounded in both: a feed keeps at most `window` pending rows per stream (older pending
rows are dropped, as the page would scroll them away anyway).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np

HELLO_WAIT_S = 3.0  # a learner's outputs without its hello (the sink repeats it each second)
# learner classes whose outputs are not latents (see `learner_role`)
POSTERIOR_CLASSES = frozenset({"SwitchingGLM"})
DECODER_CLASSES = frozenset(
    {"AdaptiveKalmanDecoder", "ThreeFactorReadout", "ForceReadout", "OnlineRidgeDecoder"}
)
CONTROL_CLASSES = frozenset({"BioOFC"})


def learner_role(cls: str, n_components: int, y: list[str] | None = None) -> str:
    """How a learner's outputs are best drawn: `posterior` (state probabilities: a stacked
    band), `decoder` (a decoded variable: beside the true one from its y channels), `control`
    (a control signal) or `latent` (trajectories)."""
    if cls in POSTERIOR_CLASSES:
        return "posterior"
    if cls in CONTROL_CLASSES:
        return "control"
    if cls in DECODER_CLASSES and y and len(y) == n_components:
        return "decoder"
    return "latent"


def resolve_channels(channels: list[str], names: list[str] | None, n_channels: int) -> list[int]:
    """Indices of `channels` (hello names, or indices as text) in a stream of `n_channels`;
    those that are neither are left out."""
    found = []
    for channel in channels:
        if names and channel in names:
            found.append(names.index(channel))
        elif channel.isdigit() and int(channel) < n_channels:
            found.append(int(channel))
    return found


@dataclass
class LearnerInfo:
    """One learner as the page draws it."""

    name: str
    cls: str = "?"
    n_components: int = 0
    y: list[str] = field(default_factory=list)
    y_index: list[int] = field(default_factory=list)

    @property
    def role(self) -> str:
        return learner_role(self.cls, self.n_components, self.y)


@dataclass
class Health:
    """One health sample of the loop. Latency histogram `hist` counts the interval's samples in
    the bins `edges_us` (len(hist) + 1 edges)."""

    fields: dict[str, float]
    hist: np.ndarray
    edges_us: np.ndarray

    def __getitem__(self, key: str) -> float:
        return self.fields.get(key, float("nan"))


def parse_health(row: np.ndarray, fields: list[str], edges_us: list[float]) -> Health:
    """A health frame's row as the sink's hello describes it: the named fields, then one count
    per latency bin. Raises ValueError if the row does not have that length."""
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    n_bins = len(edges_us) - 1
    if len(row) != len(fields) + n_bins:
        raise ValueError(
            f"health row has {len(row)} values; its hello announces {len(fields)} fields and "
            f"{n_bins} latency bins"
        )
    return Health(
        {key: float(value) for key, value in zip(fields, row, strict=False)},
        row[len(fields) :].copy(),
        np.asarray(edges_us, dtype=np.float64),
    )


class Rows:
    """A bounded queue of timestamped rows of one width: `append` blocks, `drain` takes what is
    pending (at most `capacity` newest rows)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._count

    def append(self, t: np.ndarray, values: np.ndarray) -> None:
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        values = np.asarray(values).reshape(len(t), -1)
        if len(t) > self.capacity:
            self.dropped += len(t) - self.capacity
            t, values = t[-self.capacity :], values[-self.capacity :]
        self._chunks.append((t, values))
        self._count += len(t)
        while self._count > self.capacity:
            old_t, old_values = self._chunks[0]
            excess = self._count - self.capacity
            if len(old_t) <= excess:
                self._chunks.popleft()
                self._count -= len(old_t)
                self.dropped += len(old_t)
            else:
                self._chunks[0] = (old_t[excess:], old_values[excess:])
                self._count -= excess
                self.dropped += excess

    def drain(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(t (k,), values (k, d)) of every pending row, oldest first; None when none."""
        if not self._count:
            return None
        t = np.concatenate([c[0] for c in self._chunks])
        values = np.concatenate([c[1] for c in self._chunks]).astype(np.float64, copy=False)
        self._chunks.clear()
        self._count = 0
        return t, values


@dataclass
class Update:
    """What arrived since the last poll. `learners`: name -> (t, outputs); `input`: (t, mean
    input per bin) or None; `health`: health samples, oldest first; `info`: every learner seen
    so far; `status`: one line for the page's header."""

    learners: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    input: tuple[np.ndarray, np.ndarray] | None = None
    health: list[Health] = field(default_factory=list)
    info: dict[str, LearnerInfo] = field(default_factory=dict)
    channel_names: list[str] | None = None
    status: str = ""


class Feed(Protocol):
    """Where a dashboard page gets its data."""

    def poll(self) -> Update: ...

    def close(self) -> None: ...


class LiveFeed:
    """Follows a running pipeline's published outputs (`attach --publish ENDPOINT`)."""

    def __init__(
        self,
        endpoint: str,
        *,
        prefix: str = "streamlab",
        window: int = 2000,
        max_messages: int = 50_000,
        curve: Any = None,
    ) -> None:
        from streamlab.stream.transport import ZmqSource

        self.endpoint = endpoint
        self.prefix = prefix
        self.window = window
        self.max_messages = max_messages
        self._source = ZmqSource(endpoint, pattern="sub", topic=f"{prefix}/", curve=curve)
        self._health_topic = f"{prefix}/health"
        self._input_topic = f"{prefix}/input"
        self._health_meta: dict[str, Any] | None = None
        self._input_meta: dict[str, Any] = {}
        self._info: dict[str, LearnerInfo] = {}
        self._rows: dict[str, Rows] = {}
        self._input = Rows(window)
        self._health: deque[Health] = deque(maxlen=window)
        self._messages = 0
        self._last_message = 0.0
        self._hello_seen: set[str] = set()
        self._first_seen: dict[str, float] = {}

    def poll(self) -> Update:
        """Take every message waiting on the socket (up to `max_messages`) and return them."""
        from streamlab.stream.protocol import Control

        for _ in range(self.max_messages):
            message = self._source.receive(timeout=0)
            if message is None:
                break
            self._messages += 1
            self._last_message = time.monotonic()
            topic = message.stream
            if isinstance(message, Control):
                if message.kind == "hello":
                    self._on_hello(topic, message.meta)
                continue
            if topic == self._health_topic:
                if self._health_meta is not None:  # described by the hello, else not yet
                    self._health.append(
                        parse_health(
                            message.data,
                            self._health_meta["fields"],
                            self._health_meta["latency_edges_us"],
                        )
                    )
            elif topic == self._input_topic:
                self._input.append(np.array([message.t]), message.data)
            else:
                name = topic[len(self.prefix) + 1 :]
                info = self._info.setdefault(name, LearnerInfo(name))
                info.n_components = info.n_components or message.n_channels
                self._first_seen.setdefault(name, time.monotonic())
                rows = self._rows.setdefault(name, Rows(self.window))
                rate = message.rate
                m = message.n_samples
                t = message.t + (np.arange(m) / rate if rate else np.zeros(m))
                rows.append(t, message.data)
        update = Update(
            learners={
                name: drained for name, rows in self._rows.items() if (drained := rows.drain())
            },
            input=self._input.drain(),
            health=list(self._health),
            info=self._described(),
            channel_names=self._input_meta.get("channels"),
            status=self._status(),
        )
        self._health.clear()
        return update

    def _described(self) -> dict[str, LearnerInfo]:
        """The learners whose hello has come (so their class, hence how to draw them, is
        known), and those still without one after `HELLO_WAIT_S` (drawn as latents)."""
        now = time.monotonic()
        return {
            name: info
            for name, info in self._info.items()
            if name in self._hello_seen or now - self._first_seen.get(name, now) > HELLO_WAIT_S
        }

    def _on_hello(self, topic: str, meta: dict[str, Any]) -> None:
        if topic == self._health_topic:
            self._health_meta = meta
        elif topic == self._input_topic:
            self._input_meta = meta
        else:
            name = topic[len(self.prefix) + 1 :]
            self._hello_seen.add(name)
            info = self._info.setdefault(name, LearnerInfo(name))
            info.cls = str(meta.get("learner", info.cls))
            info.n_components = int(meta.get("n_components", info.n_components))
            info.y = [str(c) for c in meta.get("y", [])]
            info.y_index = [int(i) for i in meta.get("y_index", [])]

    def _status(self) -> str:
        source = self._source
        if not self._messages:
            return f"live {self.endpoint}: waiting for the pipeline's outputs ..."
        quiet = time.monotonic() - self._last_message
        state = "receiving" if quiet < 2.0 else f"no messages for {quiet:.0f} s"
        stream = self._input_meta.get("source", "?")
        return (
            f"live {self.endpoint} (stream {stream}): {state}; this page lost "
            f"{source.n_missing:,d} output samples, refused {source.n_rejected} messages"
        )

    def close(self) -> None:
        self._source.close()


class StoreFeed:
    """Follows a run store as it is written (or shows a finished one): reads committed rows it
    has not read yet, at most every `interval` seconds, and at most `window` rows per poll."""

    def __init__(
        self, path: str, *, window: int = 2000, interval: float = 0.5, bin_s: float = 0.05
    ) -> None:
        self.path = path
        self.window = window
        self.interval = interval
        self.bin_s = bin_s
        self._read: dict[str, int] = {}
        self._input_read = 0
        self._gap_read = 0
        self._missing = 0
        # the latest rows' latencies and time, kept while no new rows come (a finished store
        # keeps showing its last figures, not NaN)
        self._recent: tuple[list[np.ndarray], float] = ([], float("nan"))
        self._last_poll = -float("inf")
        self._rows_seen: deque[tuple[float, int]] = deque()
        self._info: dict[str, LearnerInfo] = {}
        self._channel_names: list[str] | None = None
        self._status = f"store {path}: opening ..."
        self._started = time.monotonic()
        self._created: float | None = None  # the run's start (epoch s), from the store

    def poll(self) -> Update:
        """New committed rows, or an empty update between reads."""
        from streamlab.errors import StoreError

        now = time.monotonic()
        if now - self._last_poll < self.interval:
            return Update(info=dict(self._info), channel_names=self._channel_names, status="")
        self._last_poll = now
        try:
            return self._read_store(now)
        except (StoreError, OSError, ValueError, KeyError) as exc:  # a store still being made
            self._status = f"store {self.path}: not readable yet ({type(exc).__name__}: {exc})"
            return Update(info=dict(self._info), status=self._status)

    def _read_store(self, now: float) -> Update:
        from streamlab.learners.registry import learner_targets
        from streamlab.store.run_store import RunStore

        store = RunStore.open(self.path)
        attrs = store.attrs
        stream = attrs.get("stream") or {}
        names = (stream.get("meta") or {}).get("channels")
        self._channel_names = [str(c) for c in names] if isinstance(names, list) else None
        config = attrs.get("streamlab", {}).get("config", {})
        if self._created is None and attrs.get("streamlab", {}).get("created"):
            self._created = datetime.fromisoformat(attrs["streamlab"]["created"]).timestamp()
        targets = learner_targets(config.get("learners", [])) if config.get("learners") else {}
        update = Update(channel_names=self._channel_names)
        latencies = []
        samples = 0
        last_t = float("nan")
        for name in store.learner_names():
            table = store.learner(name)
            info = self._info.get(name)
            if info is None:
                learner_attrs = store.root[f"learners/{name}"].attrs.get("learner", {})
                y = [str(c) for c in targets.get(name, ())]
                info = LearnerInfo(
                    name,
                    str(learner_attrs.get("class", "?")),
                    int(store.root[f"learners/{name}/output"].shape[1]),
                    y,
                    resolve_channels(y, self._channel_names, int(stream.get("n_channels", 0))),
                )
                self._info[name] = info
            rows = table.rows
            samples = max(samples, rows)
            start = max(self._read.get(name, 0), rows - self.window)
            if rows > start:
                t = table.read("t", start, rows)
                update.learners[name] = (t, table.read("output", start, rows).astype(np.float64))
                latencies.append(table.read("latency_us", start, rows).astype(np.float64))
                last_t = float(t[-1])
            self._read[name] = rows
        if store.has_input:
            update.input = self._read_input(store)
        update.health = [self._health(store, now, samples, latencies, last_t)]
        update.info = dict(self._info)
        self._status = (
            f"store {self.path}: {store.status}, {samples:,d} samples, "
            f"stream {stream.get('name', '?')}"
        )
        update.status = self._status
        return update

    def _read_input(self, store: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """New input rows, averaged over bins of `bin_s` seconds of source time."""
        table = store.input()
        rows = table.rows
        start = max(self._input_read, rows - 20 * self.window)
        self._input_read = rows
        if rows <= start:
            return None
        t = table.read("t", start, rows)
        data = table.read("data", start, rows).astype(np.float64)
        return bin_rows(t, data, self.bin_s)

    def _health(
        self, store: Any, now: float, samples: int, latencies: list[np.ndarray], last_t: float
    ) -> Health:
        if latencies:
            self._recent = (latencies, last_t)
        else:
            latencies, last_t = self._recent
        gaps = store.gaps
        if gaps.rows > self._gap_read:
            self._missing += int(gaps.read("n_missing", self._gap_read).sum())
            self._gap_read = gaps.rows
        # rows land in blocks (the writer flushes every ~0.5 s): a rate over the last few
        # seconds, not between two polls, or it swings between 0 and twice the truth
        self._rows_seen.append((now, samples))
        while len(self._rows_seen) > 2 and now - self._rows_seen[1][0] >= 3.0:
            self._rows_seen.popleft()
        then, before = self._rows_seen[0]
        rate = (samples - before) / (now - then) if now > then else float("nan")
        if store.status != "running":
            rate = float("nan")  # no run is feeding it: a rate of 0 would read as a stall
        edges = np.logspace(0, 6, 49)
        latency = (
            np.max(np.vstack(latencies), axis=0)  # the last learner's: arrival -> all outputs
            if latencies and len({len(x) for x in latencies}) == 1
            else np.concatenate(latencies)
            if latencies
            else np.zeros(0)
        )
        hist, _ = np.histogram(np.clip(latency, edges[0], edges[-1]), bins=edges)
        p50, p99 = np.percentile(latency, (50, 99)) if len(latency) else (np.nan, np.nan)
        checkpoint = store.checkpoint
        fields = {
            "samples": float(samples),
            "samples_per_s": rate,
            "latency_p50_us": float(p50),
            "latency_p99_us": float(p99),
            "latency_max_us": float(latency.max()) if len(latency) else float("nan"),
            "gaps": float(gaps.rows),
            "missing": float(self._missing),
            "rejects": float(store.rejected.rows),
            "checkpoints": float(len(store.checkpoint_seqs(store.learner_names()[0])))
            if store.learner_names()
            else 0.0,
            # in a store, the age is in the data's time: how far the head is past the checkpoint
            "checkpoint_age_s": last_t - checkpoint.t if checkpoint else float("nan"),
            "divergences": 0.0,
            "last_seq": float(checkpoint.seq) if checkpoint else -1.0,
            "elapsed_s": time.time() - self._created if self._created else now - self._started,
        }
        return Health(fields, hist.astype(np.float64), edges)

    def close(self) -> None:
        """Nothing held open between polls."""


def bin_rows(t: np.ndarray, data: np.ndarray, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the rows of `data` in consecutive bins of `bin_s` seconds of `t` (each bin's t is
    its first row's), as the live sink decimates its input."""
    if len(t) == 0:
        return t.astype(np.float64), data.reshape(0, data.shape[1] if data.ndim == 2 else 0)
    keys = np.floor((t - t[0]) / bin_s).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sums = np.add.reduceat(data, starts, axis=0)
    counts = np.diff(np.r_[starts, len(t)])[:, None]
    return t[starts].astype(np.float64), sums / counts
