"""Sources for real rigs and archives (installed as `streamlab.adapters`). Each adapter turns an
outside format into streamlab Frames; `open_session` picks the reader for a recording by its
file type or folder contents, so `streamlab replay PATH` plays any of them.

Live sources: `open_ephys` (the Open Ephys GUI ZMQ Interface plugin) and `lsl` (Lab Streaming
Layer). Archives: `nwb`, `suite2p`, `recordings` (zebrafish calcium, linear-track spikes), and
`.npz`/`.npy`/Zarr through `streamlab.sessions`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from streamlab.errors import SessionError
from streamlab.sessions import Session, load_session

SUPPORTED = (
    "an NWB file (.nwb: Units binned to counts, or a RoiResponseSeries)",
    "a Suite2p plane folder (F.npy, Fneu.npy, iscell.npy[, ops.npy])",
    "a zebrafish tectum MATLAB file (.mat with activity_matrix)",
    "a linear-track folder (spikes.mat, trajectory.videoPositionTracking)",
    "a NumPy .npz session or .npy array (samples x channels)",
    "a Zarr store (a streamlab run with recorded input, or a group with a data array)",
)

# the options each reader takes (besides stream); open_session refuses others by name
_OPTIONS = {
    "nwb": {"bin_s", "series", "start", "stop"},
    "suite2p": {"rate", "baseline_s", "baseline_percentile"},
    "zebrafish": {"rate"},
    "linear-track": {"bin_s", "position"},
    "numpy/zarr": {"rate"},
}


def detect_format(path: Path) -> str:
    """The format name `open_session` would use for `path` (a key of `_OPTIONS`)."""
    from .recordings import is_linear_track_folder
    from .suite2p import is_suite2p_folder

    if not path.exists():
        raise SessionError(f"session {path} does not exist")
    if path.is_dir():
        if (path / "zarr.json").is_file():
            return "numpy/zarr"
        if is_suite2p_folder(path):
            return "suite2p"
        if is_linear_track_folder(path):
            return "linear-track"
    else:
        suffix = path.suffix.lower()
        if suffix == ".nwb":
            return "nwb"
        if suffix in (".npz", ".npy"):
            return "numpy/zarr"
        if suffix == ".mat":
            if path.name == "spikes.mat" and is_linear_track_folder(path.parent):
                return "linear-track"
            return "zebrafish"
    raise SessionError(f"cannot tell what {path} holds; streamlab replays: " + "; ".join(SUPPORTED))


def open_session(path: str | os.PathLike[str], **options: Any) -> Session:
    """Read the recording at `path` as a `Session`, choosing the reader by file type or folder
    contents. Options (only those the format takes; others are refused by name): `rate` (Hz,
    for files that do not state one), `bin_s` (spike-count bin in seconds), `series` (an NWB
    TimeSeries name), `start`/`stop` (NWB binning span), `position` (linear track), `baseline_s`
    and `baseline_percentile` (Suite2p dF/F), and `stream` (the replayed stream's name)."""
    path = Path(path)
    fmt = detect_format(path)
    given = {key: value for key, value in options.items() if value is not None}
    stream = given.pop("stream", None)
    unknown = sorted(set(given) - _OPTIONS[fmt])
    if unknown:
        raise SessionError(
            f"{path} is read as {fmt}, which takes {sorted(_OPTIONS[fmt]) or 'no options'}; "
            f"not {unknown}"
        )
    if fmt == "numpy/zarr":
        return load_session(path, stream=stream, **given)  # checks shape, dtype and rate itself
    return _checked(_read(fmt, path, stream, given), path)


def _read(fmt: str, path: Path, stream: str | None, given: dict[str, Any]) -> Session:
    if fmt == "nwb":
        from .nwb import load_nwb

        return load_nwb(path, stream=stream, **given)
    if fmt == "suite2p":
        from .suite2p import load_suite2p

        return load_suite2p(path, stream=stream, **given)
    if fmt == "zebrafish":
        from .recordings import load_zebrafish

        return load_zebrafish(path, stream=stream, **given)
    from .recordings import load_linear_track_session

    folder = path if path.is_dir() else path.parent
    return load_linear_track_session(folder, stream=stream, **given)


def _checked(session: Session, path: Path) -> Session:
    """What replay needs of any session: numeric (samples, channels) with samples, a rate."""
    data = session.data
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] == 0 or data.dtype.kind not in "biuf":
        raise SessionError(
            f"{path} gave {data.dtype} data of shape {data.shape}; replay needs numeric "
            "(samples, channels) with at least one of each"
        )
    if not session.rate > 0:
        raise SessionError(f"{path} states no sampling rate; pass rate= (--rate HZ)")
    return session


__all__ = ["SUPPORTED", "detect_format", "open_session"]
