"""Neurodata Without Borders (NWB 2.x) files as replayable sessions, read with pynwb.

Two things in an NWB file become a stream: the `Units` table, binned to spike counts at a chosen
bin size (one channel per unit, rate = 1 / bin), or one `TimeSeries` as recorded (typically a
`RoiResponseSeries` of calcium traces in the `ophys` module; `data * conversion + offset`, rate
from the series). Every `TimeIntervals` table (trials, epochs, task tables under `intervals/`)
is carried along as labels in `Session.meta["intervals"]`: plain JSON rows with `table`,
`start`, `stop`, the first and last sample (`start_seq`, `stop_seq`) they cover, and the
table's other scalar columns, so a replay or a report can tell which trial a sample belongs to.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from streamlab.errors import SessionError
from streamlab.sessions import Session

DEFAULT_BIN_S = 0.1
logger = logging.getLogger(__name__)


def load_nwb(
    path: str | Path,
    *,
    bin_s: float | None = None,
    series: str | None = None,
    start: float | None = None,
    stop: float | None = None,
    stream: str | None = None,
) -> Session:
    """Read `path` as a session: the Units table binned at `bin_s` seconds (default 0.1), or the
    TimeSeries named `series` (default: the Units table if there is one, else the file's only
    RoiResponseSeries). `start`/`stop` (seconds from the session start) limit the binned span."""
    path = Path(path)
    try:
        from pynwb import NWBHDF5IO
    except ImportError as exc:
        raise SessionError(
            f"reading {path} needs pynwb: pip install 'streamlab[nwb]' (or pip install pynwb)"
        ) from exc
    if not path.is_file():
        raise SessionError(f"NWB file {path} does not exist")
    io = None
    try:
        # pynwb warns about best-practice lapses in files written by others (and the test suite
        # turns warnings into errors): read anyway, and log what it said.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            io = NWBHDF5IO(str(path), "r")
            nwb = io.read()
        for warning in caught:
            logger.warning("%s: %s", path.name, str(warning.message)[:300])
    except Exception as exc:  # h5py and hdmf raise many types for a file that is not NWB
        if io is not None:
            io.close()
        raise SessionError(
            f"cannot read {path} as an NWB file ({type(exc).__name__}: {str(exc)[:300]}); is it "
            "a complete NWB 2.x HDF5 file?"
        ) from exc
    try:
        base = f"replay/{path.stem}"
        if series is None and nwb.units is not None and len(nwb.units) > 0:
            session = _units_session(
                nwb, bin_s or DEFAULT_BIN_S, start, stop, stream or f"{base}/units"
            )
        else:
            if bin_s is not None and series is None:
                raise SessionError(
                    f"{path} has no Units table to bin (bin_s={bin_s}); its series are "
                    f"{sorted(_series(nwb))}"
                )
            session = _series_session(nwb, series, path, stream, base)
        session.meta["intervals"] = _intervals(nwb, session)
        session.meta["source"] = {"format": "nwb", "path": str(path), "identifier": nwb.identifier}
        return session
    finally:
        io.close()


def _units_session(
    nwb: Any, bin_s: float, start: float | None, stop: float | None, stream: str
) -> Session:
    """Spike counts (bins x units), float32, over [start, stop) on a grid of `bin_s` seconds."""
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise SessionError(f"bin size must be a positive number of seconds, got {bin_s}")
    units = nwb.units
    times = [np.asarray(units["spike_times"][i], dtype=np.float64) for i in range(len(units))]
    finite = [t[np.isfinite(t)] for t in times]
    spikes = np.concatenate(finite) if finite else np.empty(0)
    if spikes.size == 0 and (start is None or stop is None):
        raise SessionError("the Units table holds no spike times; give start and stop to bin it")
    lo = math.floor(spikes.min() / bin_s) * bin_s if start is None else float(start)
    hi = spikes.max() + bin_s if stop is None else float(stop)
    n_bins = math.floor((hi - lo) / bin_s + 1e-9)
    if n_bins <= 0:
        raise SessionError(f"no whole bin of {bin_s} s fits between {lo} s and {hi} s")
    edges = lo + bin_s * np.arange(n_bins + 1)
    counts = np.stack([np.histogram(t, edges)[0] for t in finite], axis=1).astype(np.float32)
    ids = [int(i) for i in units.id[:]]
    labels = units["unit_name"][:] if "unit_name" in units.colnames else None
    channels = [str(label) for label in labels] if labels is not None else [f"unit{i}" for i in ids]
    return Session(
        data=counts,
        rate=1.0 / bin_s,
        kind="spikes",
        t0=float(lo),
        stream=stream,
        meta={"channels": channels, "unit_ids": ids, "bin_s": bin_s},
    )


def _series(nwb: Any) -> dict[str, Any]:
    """Every TimeSeries in the file by name (acquisition, processing modules, stimulus)."""
    from pynwb.base import TimeSeries

    found: dict[str, Any] = {}
    for obj in nwb.objects.values():
        if isinstance(obj, TimeSeries):
            found.setdefault(obj.name, obj)
    return found


def _series_session(
    nwb: Any, name: str | None, path: Path, stream: str | None, base: str
) -> Session:
    from pynwb.ophys import RoiResponseSeries

    every = _series(nwb)
    if name is None:
        rois = [s for s in every.values() if isinstance(s, RoiResponseSeries)]
        if len(rois) != 1:
            raise SessionError(
                f"{path} has no Units table and {len(rois)} RoiResponseSeries; choose one with "
                f"series=NAME (--series NAME) among {sorted(every)}"
            )
        chosen = rois[0]
    elif name in every:
        chosen = every[name]
    else:
        raise SessionError(f"{path} has no TimeSeries {name!r}; it has {sorted(every)}")
    data = np.asarray(chosen.data[:])
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.dtype.kind not in "biuf":
        raise SessionError(
            f"series {chosen.name!r} holds {data.dtype} of shape {data.shape}; replay needs a "
            "numeric (time, channel) array"
        )
    scale, offset = float(chosen.conversion or 1.0), float(getattr(chosen, "offset", 0.0) or 0.0)
    if scale != 1.0 or offset != 0.0:
        data = data.astype(np.float64) * scale + offset
    rate, t0 = _timing(chosen, path)
    kind = "calcium" if isinstance(chosen, RoiResponseSeries) else "signal"
    meta: dict[str, Any] = {"channels": _series_channels(chosen, data.shape[1])}
    if chosen.unit:
        meta["unit"] = str(chosen.unit)
    return Session(
        data=data.astype(np.float32) if data.dtype == np.float64 else data,
        rate=rate,
        kind=kind,
        t0=t0,
        stream=stream or f"{base}/{chosen.name}",
        meta=meta,
    )


def _timing(series: Any, path: Path) -> tuple[float, float]:
    """(rate, time of the first sample) from `rate`/`starting_time`, or from regular timestamps."""
    if series.rate is not None:
        return float(series.rate), float(series.starting_time or 0.0)
    stamps = np.asarray(series.timestamps[:], dtype=np.float64)
    steps = np.diff(stamps)
    if stamps.size < 2 or not (steps > 0).all():
        raise SessionError(
            f"{path}: series {series.name!r} has no rate and its timestamps do not increase; "
            "it cannot be replayed at a rate"
        )
    step = float(np.median(steps))
    if np.abs(steps - step).max() > 0.1 * step:
        raise SessionError(
            f"{path}: series {series.name!r} is irregularly sampled (steps {steps.min():.4g} to "
            f"{steps.max():.4g} s); streamlab replays regularly sampled streams"
        )
    return 1.0 / step, float(stamps[0])


def _series_channels(series: Any, n: int) -> list[str]:
    """ROI ids for a RoiResponseSeries, else ch0, ch1, ..."""
    rois = getattr(series, "rois", None)
    if rois is not None:
        try:
            ids = rois.table.id[:]
            return [f"roi{int(ids[i])}" for i in np.asarray(rois.data[:])]
        except (AttributeError, IndexError, TypeError):
            pass
    return [f"ch{i}" for i in range(n)]


def _intervals(nwb: Any, session: Session) -> list[dict[str, Any]]:
    """Every TimeIntervals row as a JSON-ready dict, in the session's seq numbering."""
    tables = dict(nwb.intervals or {})
    for name in ("trials", "epochs"):
        table = getattr(nwb, name, None)
        if table is not None:
            tables.setdefault(name, table)
    rows: list[dict[str, Any]] = []
    for name, table in sorted(tables.items()):
        columns = [c for c in table.colnames if c not in ("start_time", "stop_time")]
        starts = np.asarray(table["start_time"][:], dtype=np.float64)
        stops = np.asarray(table["stop_time"][:], dtype=np.float64)
        extra = {c: table[c][:] for c in columns}
        for i in range(len(starts)):
            row: dict[str, Any] = {
                "table": name,
                "label": name,
                "start": float(starts[i]),
                "stop": float(stops[i]),
                "start_seq": session.first_seq
                + math.floor((starts[i] - session.t0) * session.rate),
                "stop_seq": session.first_seq + math.floor((stops[i] - session.t0) * session.rate),
            }
            for column, values in extra.items():
                value = _plain(values[i])
                if value is not None:
                    row[column] = value
            rows.append(row)
    return rows


def _plain(value: Any) -> Any:
    """A JSON scalar (or list of strings for tags) for a table cell; None for anything else."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, list | tuple | np.ndarray) and all(
        isinstance(v, str | bytes) for v in value
    ):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return None
