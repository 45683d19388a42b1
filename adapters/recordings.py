"""Loaders for the real recordings the docs and demos use, as replayable sessions:

- zebrafish tectum calcium (Triplett, Avitan and Goodhill 2018): a MATLAB file with
  `activity_matrix` (cells x frames, dF/F) imaged at 2.2 Hz, turned into frames x cells;
- a hippocampal linear-track session (`spikes.mat` + `trajectory.videoPositionTracking`, read by
  `linear_track`), binned to spike counts at a chosen bin size, optionally with the tracked
  position appended as two behaviour channels.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from streamlab.errors import SessionError
from streamlab.sessions import Session

from .linear_track import _check_mat5, bin_session, load_linear_track

ZEBRAFISH_RATE_HZ = 2.2
LINEAR_TRACK_FILES = ("spikes.mat", "trajectory.videoPositionTracking")


def is_linear_track_folder(path: Path) -> bool:
    """True for a folder holding a linear-track session's spikes and tracking files."""
    return path.is_dir() and all((path / name).is_file() for name in LINEAR_TRACK_FILES)


def load_zebrafish(
    path: str | Path, *, rate: float | None = None, stream: str | None = None
) -> Session:
    """A zebrafish tectum `.mat` recording as (frames, cells) dF/F at `rate` Hz (default 2.2,
    the published imaging rate). Assemblies (1-based in the file) are kept 0-based in
    `meta["assemblies"]`, cell coordinates in `meta["cell_coordinates"]`."""
    path = Path(path)
    mat = read_mat(path)
    if "activity_matrix" not in mat:
        raise SessionError(
            f"{path} has no 'activity_matrix' (cells x frames); found {sorted(mat)}. Only the "
            "zebrafish tectum layout is read from .mat files here"
        )
    activity = np.asarray(mat["activity_matrix"])
    if activity.ndim != 2 or activity.dtype.kind not in "biuf":
        raise SessionError(
            f"{path}: activity_matrix must be a numeric (cells, frames) matrix, got "
            f"{activity.dtype} of shape {activity.shape}"
        )
    n_cells = activity.shape[0]
    meta: dict[str, Any] = {
        "channels": [f"cell{i}" for i in range(n_cells)],
        "units": "dF/F",
        "source": {"format": "zebrafish-mat", "path": str(path)},
    }
    if "cell_coordinates" in mat:
        meta["cell_coordinates"] = np.asarray(mat["cell_coordinates"], float).tolist()
    if "detected_assemblies" in mat:
        groups = np.atleast_1d(mat["detected_assemblies"])
        meta["assemblies"] = [
            [int(i) - 1 for i in np.atleast_1d(group)]
            for group in (groups if groups.dtype == object else [groups])
        ]
    return Session(
        data=np.ascontiguousarray(activity.T, dtype=np.float32),
        rate=float(rate or ZEBRAFISH_RATE_HZ),
        kind="calcium",
        stream=stream or f"replay/{path.stem}",
        meta=meta,
    )


def read_mat(path: Path) -> dict[str, Any]:
    """A MATLAB v5 file's variables; the header and every element's size are checked first (as
    `linear_track` does) so a corrupt file cannot make scipy over-allocate."""
    from scipy.io import loadmat

    if not path.is_file():
        raise SessionError(f"{path} does not exist")
    raw = path.read_bytes()
    _check_mat5(raw, path)
    try:
        mat = loadmat(io.BytesIO(raw), squeeze_me=True)
    except Exception as exc:  # scipy raises many types for a corrupt file; all mean the same
        raise SessionError(
            f"cannot read {path} as a MATLAB file ({type(exc).__name__}: {exc})"
        ) from exc
    return {key: value for key, value in mat.items() if not key.startswith("__")}


def load_linear_track_session(
    folder: str | Path,
    *,
    bin_s: float = 0.1,
    position: bool = False,
    stream: str | None = None,
) -> Session:
    """Spike counts (bins, units) at `bin_s` seconds over the tracked span of a linear-track
    session; with `position`, the mean tracked (x, y) per bin is appended as channels `x`, `y`
    (name them as a learner's target, e.g. `--learner NAME:y=x`). Bins the tracker missed get
    their position interpolated, so the stream stays regular."""
    folder = Path(folder)
    if not (bin_s > 0):
        raise SessionError(f"bin size must be a positive number of seconds, got {bin_s}")
    recording = load_linear_track(folder)
    counts, xy, starts = bin_session(recording, bin_s)
    if counts.shape[0] == 0:
        raise SessionError(f"{folder}: no bin of {bin_s} s holds a tracked position")
    grid = starts[0] + bin_s * np.arange(round((starts[-1] - starts[0]) / bin_s) + 1)
    if grid.size != starts.size:  # the tracker dropped whole bins: rebin on the full grid
        edges = np.append(grid, grid[-1] + bin_s)
        counts = np.stack([np.histogram(t, edges)[0] for t in recording.spike_times], axis=1)
        xy = np.stack([np.interp(grid, starts, xy[:, k]) for k in range(2)], axis=1)
    channels = [f"unit{i}" for i in range(recording.n_units)]
    data = counts.astype(np.float32)
    if position:
        data = np.concatenate([data, xy.astype(np.float32)], axis=1)
        channels += ["x", "y"]
    return Session(
        data=np.ascontiguousarray(data),
        rate=1.0 / bin_s,
        kind="spikes",
        t0=float(grid[0]),
        stream=stream or f"replay/{folder.name}",
        meta={
            "channels": channels,
            "bin_s": bin_s,
            "source": {"format": "linear-track", "path": str(folder)},
        },
    )
