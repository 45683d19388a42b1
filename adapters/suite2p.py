"""A Suite2p output folder (`plane0/`: `F.npy`, `Fneu.npy`, `iscell.npy`, optionally `ops.npy`)
as a calcium session of dF/F, one channel per ROI that Suite2p classified as a cell.

The method, stated so results can be compared:
1. neuropil correction: `Fc = F - 0.7 * Fneu` (Suite2p's default coefficient, `neucoeff`);
2. keep ROIs with `iscell[:, 0] == 1`;
3. baseline `F0`: per ROI, the running `baseline_percentile`-th percentile (default 8th) of `Fc`
   over a centred window of `baseline_s` seconds (default 60 s, at most the recording), edges
   padded with the nearest value, evaluated every 1/20 window and interpolated linearly. A low
   running percentile follows slow drift (bleaching) without following transients. It looks
   ahead half a window, which is fine for archives;
4. `dF/F = (Fc - F0) / max(F0, floor)`, where `floor` is 1 % of the ROI's mean raw `F`: after
   neuropil subtraction a dim ROI's baseline can approach or cross zero, where dF/F would
   explode or flip sign. ROIs whose baseline needed the floor are listed in
   `meta["baseline_clamped"]`.

Loading: `F`, `Fneu` and `iscell` are numeric and read with `allow_pickle=False`. `ops.npy` is a
pickled dict, so it is read with `allow_pickle=True`, and only because it is a local file the
user pointed at (never a download); nothing else (not `stat.npy`) is unpickled. Without
`ops.npy` the frame rate must be given (`rate=`), as Suite2p records it only there (`fs`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from streamlab.errors import SessionError
from streamlab.sessions import Session

NEUROPIL_COEFFICIENT = 0.7
REQUIRED = ("F.npy", "Fneu.npy", "iscell.npy")


def is_suite2p_folder(path: Path) -> bool:
    """True for a folder holding Suite2p's F, Fneu and iscell arrays."""
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def load_suite2p(
    folder: str | Path,
    *,
    rate: float | None = None,
    baseline_s: float = 60.0,
    baseline_percentile: float = 8.0,
    stream: str | None = None,
) -> Session:
    """dF/F of the cells in a Suite2p plane folder (frames x cells, float32); see the module
    docstring for the method. `rate` (Hz) overrides `ops.npy`'s `fs` and is required without it.
    """
    folder = Path(folder)
    if not is_suite2p_folder(folder):
        missing = [name for name in REQUIRED if not (folder / name).is_file()]
        raise SessionError(
            f"{folder} is not a Suite2p plane folder: {', '.join(missing)} missing (it needs "
            "F.npy, Fneu.npy and iscell.npy, as Suite2p writes in suite2p/plane0/)"
        )
    F = _numeric(folder / "F.npy")
    Fneu = _numeric(folder / "Fneu.npy")
    iscell = _numeric(folder / "iscell.npy")
    if F.ndim != 2 or F.shape != Fneu.shape:
        raise SessionError(
            f"{folder}: F {F.shape} and Fneu {Fneu.shape} must be the same (ROIs, frames) shape"
        )
    if iscell.ndim != 2 or iscell.shape[0] != F.shape[0]:
        raise SessionError(
            f"{folder}: iscell {iscell.shape} must be (ROIs, 2) with one row per ROI of F "
            f"({F.shape[0]})"
        )
    fs = rate if rate is not None else _ops_rate(folder)
    if fs is None:
        raise SessionError(
            f"{folder} has no ops.npy, so its frame rate is unknown; give it: rate=HZ "
            "(streamlab replay ... --rate HZ), the imaging rate per plane"
        )
    if not (math.isfinite(fs) and fs > 0):
        raise SessionError(f"{folder}: frame rate must be a positive number of Hz, got {fs}")
    cells = np.flatnonzero(iscell[:, 0] == 1)
    if cells.size == 0:
        raise SessionError(f"{folder}: no ROI is marked as a cell (iscell[:, 0] == 1)")
    raw = F[cells].astype(np.float64)
    corrected = raw - NEUROPIL_COEFFICIENT * Fneu[cells].astype(np.float64)
    dff, clamped = dff_running_percentile(
        corrected, raw, fs, baseline_s=baseline_s, percentile=baseline_percentile
    )
    meta: dict[str, Any] = {
        "channels": [f"roi{int(i)}" for i in cells],
        "roi_index": [int(i) for i in cells],
        "units": "dF/F",
        "dff_method": (
            f"(F - {NEUROPIL_COEFFICIENT}*Fneu - F0) / max(F0, 1% of mean F); F0 = running "
            f"{baseline_percentile:g}th percentile over {baseline_s:g} s (centred)"
        ),
        "baseline_clamped": [int(cells[i]) for i in clamped],
        "source": {"format": "suite2p", "path": str(folder)},
    }
    return Session(
        data=np.ascontiguousarray(dff.T, dtype=np.float32),
        rate=float(fs),
        kind="calcium",
        stream=stream or f"replay/{folder.parent.name or folder.name}/{folder.name}",
        meta=meta,
    )


def dff_running_percentile(
    corrected: np.ndarray,
    raw: np.ndarray,
    rate: float,
    *,
    baseline_s: float = 60.0,
    percentile: float = 8.0,
) -> tuple[np.ndarray, list[int]]:
    """(dF/F, indices of ROIs whose baseline was floored) for traces (ROIs, frames)."""
    if not (0 < percentile < 100) or not baseline_s > 0:
        raise SessionError(
            f"baseline percentile must be in (0, 100) and window positive, got {percentile} and "
            f"{baseline_s} s"
        )
    baseline = running_percentile(corrected, max(1, round(baseline_s * rate)), percentile)
    floor = 0.01 * np.abs(raw.mean(axis=1, keepdims=True))
    floor = np.where(floor > 0, floor, 1e-6)
    clamped = np.flatnonzero((baseline < floor).any(axis=1)).tolist()
    return (corrected - baseline) / np.maximum(baseline, floor), clamped


def running_percentile(traces: np.ndarray, window: int, percentile: float) -> np.ndarray:
    """The `percentile` of each row of `traces` over a centred window of `window` frames
    (at most the recording; edges padded with the nearest value), evaluated every
    window/20 frames and interpolated linearly between: a baseline moves slowly, and this keeps
    the cost at 20 percentiles per window rather than one per frame."""
    frames = traces.shape[1]
    window = min(window, frames)
    half = window // 2
    step = max(1, window // 20)
    centres = np.arange(0, frames, step)
    if centres[-1] != frames - 1:
        centres = np.append(centres, frames - 1)
    everywhere = np.arange(frames)
    baseline = np.empty(traces.shape, dtype=np.float64)
    for row, trace in enumerate(traces):  # one row at a time bounds the memory
        padded = np.pad(trace, (half, window - 1 - half), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, window)[centres]
        sampled = np.percentile(windows, percentile, axis=1)
        baseline[row] = np.interp(everywhere, centres, sampled)
    return baseline


def _numeric(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise SessionError(
            f"{path} is not a plain numeric .npy array ({exc}); Suite2p writes F, Fneu and "
            "iscell as such"
        ) from exc
    except OSError as exc:
        raise SessionError(f"cannot read {path}: {exc}") from exc


def _ops_rate(folder: Path) -> float | None:
    """`fs` from `ops.npy` (a pickled dict: read only because the user pointed at this local
    folder), or None when there is no ops.npy."""
    path = folder / "ops.npy"
    if not path.is_file():
        return None
    try:
        ops = np.load(path, allow_pickle=True).item()  # local file the user chose
        return float(ops["fs"])
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise SessionError(
            f"{path} holds no frame rate 'fs' ({type(exc).__name__}: {exc}); pass rate=HZ"
        ) from exc
