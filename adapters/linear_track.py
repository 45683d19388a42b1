"""Reader for a hippocampal linear-track session in the MatClust / tracker layout: `spikes.mat`
(a struct array `spikes`, nested by tetrode and cell, each with a `time` field of spike times in
seconds) and `trajectory.videoPositionTracking` (a text settings block ending in `<End
settings>`, then packed little-endian records `(time uint32, x1, y1, x2, y2 uint16)`, time in
ticks of the `clockrate` setting). `bin_session` turns it into the per-bin counts and position
a decoder streams.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamlab.errors import SessionError

_RECORD = np.dtype([("t", "<u4"), ("x1", "<u2"), ("y1", "<u2"), ("x2", "<u2"), ("y2", "<u2")])
_END = b"<End settings>"
logger = logging.getLogger(__name__)


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
    raw = spikes_path.read_bytes()
    _check_mat5(raw, spikes_path)
    try:
        mat = loadmat(io.BytesIO(raw), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises many types for a corrupt file; all mean the same
        raise SessionError(
            f"cannot read {spikes_path} as a MATLAB file ({type(exc).__name__}: {exc}); "
            "is it a MatClust spikes.mat, complete and uncorrupted?"
        ) from exc
    if "spikes" not in mat:
        raise SessionError(f"{spikes_path} has no struct 'spikes'; found {sorted(mat)}")
    units = [_spike_times(times, spikes_path) for times in _unit_times(mat["spikes"])]
    if not units:
        raise SessionError(f"{spikes_path} holds no unit with spike times")
    t, xy = _read_tracking(tracking_path)
    return LinearTrackSession(units, t, xy)


def _check_mat5(raw: bytes, path: Path) -> None:
    """Refuse a spikes.mat that scipy could be made to over-allocate on: it must carry a MATLAB 5
    (v6/v7) header (scipy reads a headerless file as v4, whose sizes are unchecked), and every
    data element's stated size must fit in what holds it (scipy allocates a stated size before
    reading), which `_check_elements` walks."""
    if raw.startswith(b"MATLAB 7.3 MAT-file"):
        raise SessionError(
            f"{path} is a MATLAB v7.3 (HDF5) file; save it with save(..., '-v7') to read it here"
        )
    if not raw.startswith(b"MATLAB 5.0 MAT-file") or raw[126:128] not in (b"IM", b"MI"):
        raise SessionError(
            f"{path} does not start with a MATLAB 5 MAT-file header; it is not a spikes.mat "
            "written by MATLAB (or it is corrupt)"
        )
    problem = _check_elements(raw[128:], "<" if raw[126:128] == b"IM" else ">", len(raw) * 64)
    if problem:
        raise SessionError(f"{path} is corrupt: {problem}")


_MI_MATRIX, _MI_COMPRESSED = 14, 15
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_COMPLEX = 0x800  # the array-flags bit of a matrix with an imaginary part
# the MAT v5 data types (miINT8 ... miUTF32; 8, 10 and 11 are reserved): scipy's reader indexes
# tables with them unchecked, and crashes the process (a segmentation fault, not an exception)
# on any other value, or when a matrix lacks a part its class and flags promise
_DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18})

Element = tuple[int, int, bytes]  # (data type, offset, body)


def _split_elements(data: bytes, endian: str) -> tuple[list[Element], str | None]:
    """The MAT v5 data elements laid end to end in `data`, and the first problem that stopped
    the walk (None if none): a data type MATLAB does not write, or a size larger than what is
    left."""
    elements: list[Element] = []
    offset = 0
    while offset + 8 <= len(data):
        kind, size = struct.unpack_from(endian + "II", data, offset)
        if kind >> 16:  # small element: type and size share the first word, data the second
            kind, size = kind & 0xFFFF, kind >> 16
            if kind not in _DATA_TYPES or size > 4:
                return elements, f"a small element at byte {offset} has type {kind}, size {size}"
            elements.append((kind, offset, data[offset + 4 : offset + 4 + size]))
            offset += 8
            continue
        if kind not in _DATA_TYPES:
            return elements, f"an element at byte {offset} has data type {kind}, not a MAT type"
        body = data[offset + 8 : offset + 8 + size]
        if len(body) < size:
            return (
                elements,
                f"an element at byte {offset} states {size} bytes, only {len(body)} follow",
            )
        elements.append((kind, offset, body))
        offset += 8 + size + (-size % 8 if kind != _MI_COMPRESSED else 0)
    return elements, None


def _check_elements(data: bytes, endian: str, budget: int) -> str | None:
    """The first inconsistency among the MAT v5 data elements in `data` (None if none): see
    `_split_elements`, `_check_matrix`, and compressed content inflating past `budget` bytes."""
    elements, problem = _split_elements(data, endian)
    if problem:
        return problem
    for kind, offset, body in elements:
        if kind == _MI_COMPRESSED:
            inflater = zlib.decompressobj()
            try:
                inner = inflater.decompress(body, budget)
            except zlib.error as exc:
                return f"compressed element at byte {offset} does not inflate ({exc})"
            if inflater.unconsumed_tail:
                return f"compressed element at byte {offset} inflates past {budget} bytes"
            problem = _check_elements(inner, endian, budget)
        elif kind == _MI_MATRIX:
            problem = _check_matrix(body, endian, budget)
        if problem:
            return problem
    return None


def _check_matrix(body: bytes, endian: str, budget: int) -> str | None:
    """A miMATRIX: array flags, dimensions and name, then every part its class needs (the data,
    and its imaginary part if flagged complex; a sparse matrix's indices; a cell's or struct's
    elements, each a matrix checked in turn), each of them present."""
    if len(body) < 16:
        return None  # an empty matrix
    elements, problem = _split_elements(body, endian)
    if problem:
        return problem
    if len(elements) < 3 or len(elements[0][2]) != 8 or elements[0][1] != 0:
        return "a matrix element has malformed array flags, dimensions or name"
    flags = struct.unpack_from(endian + "I", elements[0][2], 0)[0]
    array_class, dims = flags & 0xFF, elements[1][2]
    if len(dims) % 4 or not dims:
        return "a matrix element's dimensions do not fit in it"
    count = math.prod(struct.unpack_from(f"{endian}{len(dims) // 4}i", dims))
    parts = elements[3:]
    complex_part = 1 if flags & _COMPLEX else 0
    if array_class == _CHAR or 6 <= array_class <= 15:  # char, numeric: the data (real, imag)
        needed, children = 1 + complex_part, []
    elif array_class == _SPARSE:  # row indices, column starts, values (real, imag)
        needed, children = 3 + complex_part, []
    elif array_class == _CELL:
        if count < 0:
            return f"a cell array states {count} elements"
        needed, children = count, parts[:count]
    elif array_class in (_STRUCT, _OBJECT):
        head = 3 if array_class == _OBJECT else 2  # (class name,) name length, field names
        if len(parts) < head or count < 0:
            return "a struct array lacks its field names"
        length = int.from_bytes(parts[head - 2][2][:4], "big" if endian == ">" else "little")
        names = len(parts[head - 1][2])
        if length <= 0 or names % length:
            return f"a struct array's field names ({names} bytes) are not in {length}-byte slots"
        needed = head + count * (names // length)
        children = parts[head:needed]
    else:
        return f"a matrix element has array class {array_class}, which spikes.mat does not hold"
    if len(parts) < needed:
        return f"a matrix element of class {array_class} holds {len(parts)} parts, needs {needed}"
    if not children and any(kind in (_MI_MATRIX, _MI_COMPRESSED) for kind, _, _ in parts[:needed]):
        return f"a matrix element of class {array_class} holds a matrix where its data should be"
    for kind, offset, child in children:
        if kind != _MI_MATRIX:
            return f"an element of a cell or struct array at byte {offset} is not a matrix"
        problem = _check_matrix(child, endian, budget)
        if problem:
            return problem
    return None


def _spike_times(times: object, path: Path) -> np.ndarray:
    """One unit's spike times as sorted float64 seconds; non-numbers and NaN/inf are refused."""
    try:
        values = np.atleast_1d(np.asarray(times, dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise SessionError(f"{path}: a unit's 'time' field is not numeric ({exc})") from exc
    if values.ndim != 1 or not np.isfinite(values).all():
        raise SessionError(
            f"{path}: a unit's 'time' field must be a finite vector of seconds, got shape "
            f"{values.shape} with {int((~np.isfinite(values)).sum())} non-finite value(s)"
        )
    return np.sort(values)


def _unit_times(node: object) -> list[np.ndarray]:
    """The `time` arrays of every non-empty unit struct, depth first (tetrode, then cell)."""
    if hasattr(node, "_fieldnames"):
        if "time" not in node._fieldnames:
            raise SessionError(f"a unit struct has fields {node._fieldnames}, none named 'time'")
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
            value = line.split(":", 1)[1].strip()
            try:
                clock = float(value)
            except ValueError:
                clock = math.nan
            if not (math.isfinite(clock) and clock > 0):
                raise SessionError(
                    f"{path}: clockrate {value!r} is not a positive number of ticks per second"
                )
    body = raw[end + len(_END) :]
    body = body[2:] if body.startswith(b"\r\n") else body[1:]
    n = len(body) // _RECORD.itemsize
    if n == 0:
        raise SessionError(f"{path} has settings but no position records after them")
    if len(body) % _RECORD.itemsize:
        logger.warning(
            "%s: the last %d byte(s) do not make a whole record (a torn write?) and are ignored",
            path,
            len(body) % _RECORD.itemsize,
        )
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
