"""Live metrics of a running pipeline: per-sample latency quantiles (live window and whole run),
throughput, gaps, rejects and drops. Recording costs a store into a preallocated buffer;
quantiles are computed from a log-spaced histogram, not from every sample kept forever."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

_EDGES_NS = np.logspace(2, 10, 2401)  # 100 ns .. 10 s, 0.77% per bin


class LatencyStats:
    """Latencies in nanoseconds: `window` recent values for live quantiles, a histogram for the
    run's quantiles (relative resolution under 1%), and the exact maximum."""

    def __init__(self, window: int = 4096) -> None:
        self._buffer = np.zeros(window, dtype=np.int64)
        self._fill = 0
        self._last = np.zeros(0, dtype=np.int64)
        self._hist = np.zeros(len(_EDGES_NS) + 1, dtype=np.int64)
        self.count = 0
        self.max_ns = 0

    def add(self, latency_ns: int) -> None:
        self._buffer[self._fill] = latency_ns
        self._fill += 1
        if self._fill == len(self._buffer):
            self._fold()

    def _fold(self) -> None:
        values = self._buffer[: self._fill]
        if len(values):
            np.add.at(self._hist, np.searchsorted(_EDGES_NS, values), 1)
            self.count += len(values)
            self.max_ns = max(self.max_ns, int(values.max()))
            self._last = values.copy()
        self._fill = 0

    def recent_quantiles_us(self, qs: tuple[float, ...] = (0.5, 0.99)) -> tuple[float, ...]:
        """Quantiles of the most recent values (the current and the last full window)."""
        values = np.concatenate([self._last, self._buffer[: self._fill]])
        if not len(values):
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) / 1e3 for v in np.quantile(values, qs))

    def quantiles_us(self, qs: tuple[float, ...] = (0.5, 0.99)) -> tuple[float, ...]:
        """Quantiles over the whole run, from the histogram (upper bin edge)."""
        self._fold()
        total = int(self._hist.sum())
        if total == 0:
            return tuple(float("nan") for _ in qs)
        cumulative = np.cumsum(self._hist)
        edges = np.concatenate([_EDGES_NS, [_EDGES_NS[-1]]])
        return tuple(float(edges[np.searchsorted(cumulative, q * total)]) / 1e3 for q in qs)


@dataclass
class Progress:
    """A snapshot of a running pipeline, as shown live and returned at the end."""

    samples: int = 0
    frames: int = 0
    elapsed_s: float = 0.0
    samples_per_s: float = 0.0
    p50_us: float = float("nan")
    p99_us: float = float("nan")
    max_us: float = float("nan")
    gaps: int = 0
    missing: int = 0
    rejects: int = 0
    rejects_by_code: dict[str, int] = field(default_factory=dict)
    ignored: int = 0
    checkpoints: int = 0
    divergences: int = 0
    first_seq: int | None = None  # the first sample this run took (a late joiner's is > 0)
    stream_ended: bool = False  # the followed stream sent its eos (and nothing since)
    total: int | None = None  # samples the source will send, where known (a replay)
    behind_s: float = 0.0  # how far behind the source's clock (`LagMeter`), now
    max_behind_s: float = 0.0  # and at most so far

    def line(self, source: str | None = None) -> str:
        """The live progress line; before the first frame, how long it has waited (at
        `source`, where given)."""
        if self.frames == 0:
            where = f" at {source}" if source else ""
            return f"waiting for a stream{where}: nothing received in {self.elapsed_s:.0f} s"
        text = (
            f"{self.samples:>9,d} samples {self.samples_per_s:>9,.0f}/s  "
            f"latency p50 {self.p50_us:7.0f} us p99 {self.p99_us:7.0f} us  "
            f"gaps {self.gaps} ({self.missing:,d} lost)  rejects {self.rejects}"
        )
        if self.behind_s >= 0.5:  # a live source outpacing the learners (queues filling)
            text += f"  behind the source {self.behind_s:.1f} s"
        if self.total:
            left = max(self.total - self.samples, 0)
            eta = f"{left / self.samples_per_s:.0f} s" if self.samples_per_s > 0 else "?"
            text += f"  {100 * self.samples / self.total:.0f} % of {self.total:,d}, ETA {eta}"
        if self.stream_ended:
            text += "  stream ended (eos); still listening"
        return text

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class LagMeter:
    """How far behind its source a run is, in seconds: wall time since the first frame was
    taken minus the stream time it covered, at each frame taken (0 when the source is not
    ahead: a replay faster than real time). A learner's one-off work, or a consumer slower
    than the rig, shows here while queues fill, before anything is dropped."""

    def __init__(self) -> None:
        self._origin: tuple[int, float] | None = None  # (taken ns, stream t) of the first
        self.behind_s = 0.0
        self.max_behind_s = 0.0

    def update(self, taken_ns: int, t: float) -> float:
        """The lag at a frame taken at `taken_ns` (perf_counter_ns) whose first sample has
        stream time `t`."""
        if self._origin is None:
            self._origin = (taken_ns, t)
            return 0.0
        ns0, t0 = self._origin
        self.behind_s = max((taken_ns - ns0) / 1e9 - (t - t0), 0.0)
        self.max_behind_s = max(self.max_behind_s, self.behind_s)
        return self.behind_s


class RateMeter:
    """Samples per second over the last reporting interval."""

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self._n = 0

    def rate(self, total: int) -> float:
        now = time.perf_counter()
        elapsed = now - self._t
        rate = (total - self._n) / elapsed if elapsed > 0 else 0.0
        self._t, self._n = now, total
        return rate


def resident_mb(pid: int) -> float | None:
    """Resident memory (VmRSS) of process `pid` in MB, from /proc; None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
