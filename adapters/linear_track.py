"""Reader for a hippocampal linear-track session in the MatClust / tracker layout: `spikes.mat`
(a struct array `spikes`, nested by tetrode and cell, each with a `time` field of spike times in
seconds) and `trajectory.videoPositionTracking` (a text settings block ending in `<End
settings>`, then packed little-endian records `(time uint32, x1, y1, x2, y2 uint16)`, time in
ticks of the `clockrate` setting). `bin_session` turns it into the per-bin counts and position
a decoder streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamlab.errors import SessionError

_RECORD = np.dtype([("t", "<u4"), ("x1", "<u2"), ("y1", "<u2"), ("x2", "<u2"), ("y2", "<u2")])
_END = b"<End settings>"


@dataclass(frozen=True)
class LinearTrackSession:
    """Spike times per unit (seconds) and the tracked position (time, x, y in camera pixels)."""

    spike_times: list[np.ndarray]
    position_t: np.ndarray
    position_xy: np.ndarray

    @property
    def n_units(self) -> int:
        return len(self.spike_times)


def load_linear_track(folder: str | Path) -> LinearTrackSession:
    """Read `spikes.mat` and `trajectory.videoPositionTracking` from `folder`."""
    folder = Path(folder)
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise SessionError("reading spikes.mat needs scipy; pip install scipy") from exc
    spikes_path, tracking_path = folder / "spikes.mat", folder / "trajectory.videoPositionTracking"
    for path in (spikes_path, tracking_path):
        if not path.is_file():
            raise SessionError(f"{path} is missing; a linear-track session folder holds both")
    mat = loadmat(spikes_path, squeeze_me=True, struct_as_record=False)
    if "spikes" not in mat:
        raise SessionError(f"{spikes_path} has no struct 'spikes'; found {sorted(mat)}")
    units = [np.sort(np.atleast_1d(t).astype(np.float64)) for t in _unit_times(mat["spikes"])]
    t, xy = _read_tracking(tracking_path)
    return LinearTrackSession(units, t, xy)


def _unit_times(node: object) -> list[np.ndarray]:
    """The `time` arrays of every non-empty unit struct, depth first (tetrode, then cell)."""
    if hasattr(node, "_fieldnames"):
        times = np.atleast_1d(node.time)
        return [times] if times.size else []
    if isinstance(node, np.ndarray) and node.dtype == object:
        return [times for child in node.flat for times in _unit_times(child)]
    return []


def _read_tracking(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    end = raw.find(_END)
    if end < 0:
        raise SessionError(f"{path} has no '<End settings>' line; is it a tracker file?")
    settings = raw[:end].decode("latin-1")
    clock = 30000.0
    for line in settings.splitlines():
        if line.strip().startswith("clockrate:"):
            clock = float(line.split(":", 1)[1])
    body = raw[end + len(_END) :]
    body = body[2:] if body.startswith(b"\r\n") else body[1:]
    n = len(body) // _RECORD.itemsize
    records = np.frombuffer(body[: n * _RECORD.itemsize], dtype=_RECORD)
    xy = np.stack([records["x1"], records["y1"]], axis=1).astype(np.float64)
    return records["t"].astype(np.float64) / clock, xy


def bin_session(
    session: LinearTrackSession, bin_s: float, start: float | None = None, stop: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts (bins, units), the mean tracked (x, y) per bin (bins, 2) and the bin starts, over
    [start, stop) (default: the tracked span). Bins without a tracked position are dropped."""
    lo = session.position_t[0] if start is None else start
    hi = session.position_t[-1] if stop is None else stop
    edges = np.arange(lo, hi + bin_s / 2, bin_s)
    counts = np.stack([np.histogram(t, edges)[0] for t in session.spike_times], axis=1)
    which = np.digitize(session.position_t, edges) - 1
    inside = (which >= 0) & (which < len(edges) - 1)
    totals = np.zeros((len(edges) - 1, 2))
    hits = np.bincount(which[inside], minlength=len(edges) - 1)
    for axis in range(2):
        totals[:, axis] = np.bincount(
            which[inside], weights=session.position_xy[inside, axis], minlength=len(edges) - 1
        )
    tracked = hits > 0
    position = totals[tracked] / hits[tracked, None]
    return counts[tracked].astype(np.float64), position, edges[:-1][tracked]


def running_position(
    session: LinearTrackSession, bin_s: float = 0.25, seconds: float = 900.0
) -> tuple[np.ndarray, np.ndarray]:
    """Counts (bins, units) and position along the track (bins, 1) over the first `seconds` of
    tracking (the running part of the session): the tracked (x, y) projected on its first
    principal axis, standardised."""
    start = session.position_t[0]
    counts, xy, _ = bin_session(session, bin_s, start, start + seconds)
    centred = xy - xy.mean(0)
    track = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    return counts, (track / track.std())[:, None]
