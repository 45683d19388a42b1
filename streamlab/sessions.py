"""Recorded sessions to replay: a NumPy `.npz` or `.npy` file or a Zarr store (a streamlab run
that recorded its input, or any group with a `data` array of (time, channel)). Other formats
(NWB, Suite2p, MATLAB recordings) are read by `streamlab.adapters.open_session`.

An `.npz` session holds `data` (time, channel) and may hold `rate` (Hz), `kind`, `first_seq`,
`t0` and `channels` (names). `streamlab sim --out FILE.npz` writes one."""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from streamlab.errors import SessionError

_NPY_HEADER_MAX = 10_000  # bytes: numpy's own limit on a trusted .npy header


@dataclass
class Session:
    """Samples of one stream recorded for replay; sample k has seq first_seq + k and time
    t0 + k / rate, unless `seq` and `t` give each row's own (a recorded live run, whose seq
    jumps where samples were lost: replay keeps those gaps)."""

    data: np.ndarray
    rate: float
    kind: str = "spikes"
    first_seq: int = 0
    t0: float = 0.0
    stream: str = "replay/spikes"
    meta: dict[str, Any] = field(default_factory=dict)
    seq: np.ndarray | None = None
    t: np.ndarray | None = None

    def runs(self) -> list[tuple[int, int]]:
        """Row ranges [lo, hi) of consecutive seq: one range unless `seq` has gaps."""
        if self.seq is None or self.n_samples == 0:
            return [(0, self.n_samples)]
        breaks = np.flatnonzero(np.diff(self.seq.astype(np.int64)) != 1) + 1
        edges = [0, *breaks.tolist(), self.n_samples]
        return list(itertools.pairwise(edges))

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    def seq_and_t(self, row: int) -> tuple[int, float]:
        """The seq and time of row `row`."""
        if self.seq is not None and self.t is not None:
            return int(self.seq[row]), float(self.t[row])
        return self.first_seq + row, self.t0 + row / self.rate

    def head(self, seconds: float) -> Session:
        """The session's first `seconds` (of its own time), as a session of the same stream."""
        if not seconds > 0:
            raise SessionError(f"a session's first {seconds} seconds hold no samples; give > 0")
        if self.t is not None:
            rows = int(np.searchsorted(self.t, self.t[0] + seconds, side="left"))
        else:
            rows = math.ceil(seconds * self.rate - 1e-9)
        rows = min(rows, self.n_samples)
        return dataclasses.replace(
            self,
            data=self.data[:rows],
            seq=None if self.seq is None else self.seq[:rows],
            t=None if self.t is None else self.t[:rows],
        )

    def blocks(self, block: int = 4096, lo: int = 0, hi: int | None = None):
        """Rows [lo, hi) (default: all) in blocks of `block` rows."""
        hi = self.n_samples if hi is None else hi
        for start in range(lo, hi, block):
            yield self.data[start : min(start + block, hi)]


def save_session(path: str | os.PathLike[str], session: Session) -> None:
    """Write `session` as an `.npz` file that `load_session` reads back."""
    np.savez(
        path,
        data=session.data,
        rate=np.float64(session.rate),
        kind=np.str_(session.kind),
        first_seq=np.uint64(session.first_seq),
        t0=np.float64(session.t0),
        channels=np.array(session.meta.get("channels", []), dtype=np.str_),
    )


def load_session(
    path: str | os.PathLike[str], *, rate: float | None = None, stream: str | None = None
) -> Session:
    """Read a session; `rate` is required when the file does not state one."""
    path = Path(path)
    if not path.exists():
        raise SessionError(f"session {path} does not exist")
    name = stream or f"replay/{path.stem}"
    if path.suffix == ".npz":
        session = _load_npz(path, rate, name)
    elif path.suffix == ".npy":
        session = _load_npy(path, rate, name)
    elif (path / "zarr.json").exists():
        session = _load_zarr(path, rate, name)
    else:
        raise SessionError(
            f"{path} is neither an .npz/.npy file nor a Zarr store; see streamlab.sessions "
            "(streamlab.adapters.open_session reads NWB, Suite2p and MATLAB recordings too)"
        )
    if session.data.dtype.kind not in "biuf":
        raise SessionError(
            f"session {path} data has dtype {session.data.dtype}; replay needs numbers "
            "(integer or float counts / dF/F)"
        )
    if session.data.ndim != 2 or session.data.shape[0] == 0:
        raise SessionError(
            f"session {path} data must be (time, channel) with samples, got {session.data.shape}"
        )
    if not session.rate or session.rate <= 0:
        raise SessionError(f"session {path} states no sampling rate; pass rate= (Hz)")
    return session


def _load_npz(path: Path, rate: float | None, stream: str) -> Session:
    """Read an `.npz` session without trusting it: every array's header is checked against the
    bytes its zip member holds before anything is allocated, and no pickles are loaded."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            if "data" not in members:
                raise SessionError(
                    f"{path} has no 'data' array (time, channel); it has {sorted(members)}"
                )
            arrays = {
                key: _read_npy_member(archive, members[key], path)
                for key in ("data", "rate", "kind", "first_seq", "t0", "channels")
                if key in members
            }
        channels = (
            [str(c) for c in np.atleast_1d(arrays["channels"])] if "channels" in arrays else []
        )
        return Session(
            data=arrays["data"],
            rate=float(rate or arrays.get("rate", 0.0)),
            kind=str(arrays["kind"]) if "kind" in arrays else "spikes",
            first_seq=int(arrays["first_seq"]) if "first_seq" in arrays else 0,
            t0=float(arrays["t0"]) if "t0" in arrays else 0.0,
            stream=stream,
            meta={"channels": channels} if channels else {},
        )
    except SessionError:
        raise
    except (
        OSError,
        ValueError,
        TypeError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:  # every way zipfile and numpy report a corrupt archive
        raise SessionError(f"cannot read {path} as an .npz session: {exc}") from exc


def _read_npy_member(archive: zipfile.ZipFile, name: str, path: Path) -> np.ndarray:
    """One `.npy` member of an archive, refused (SessionError) when its header states a shape
    its bytes cannot hold, an object dtype, or when it is not an `.npy` array at all."""
    with archive.open(name) as member:
        head = member.read(_NPY_HEADER_MAX)
    _check_npy_header(head, archive.getinfo(name).file_size, f"{path}: member {name!r}")
    with archive.open(name) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _load_npy(path: Path, rate: float | None, stream: str) -> Session:
    """Read a bare `.npy` array (samples x channels); its header is checked as an `.npz`
    member's is, and it states no rate, so `rate` is required."""
    with path.open("rb") as file:
        _check_npy_header(file.read(_NPY_HEADER_MAX), path.stat().st_size, str(path))
        file.seek(0)
        try:
            data = np.lib.format.read_array(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SessionError(f"cannot read {path} as a .npy array: {exc}") from exc
    return Session(data=data, rate=float(rate or 0.0), stream=stream)


def _check_npy_header(head: bytes, size: int, where: str) -> None:
    """Refuse (SessionError) an `.npy` whose header (the start of it, `head`) states a shape its
    `size` bytes cannot hold, an object dtype, or that is not an `.npy` array at all."""
    stream = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(stream)
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = reader(stream, max_header_size=_NPY_HEADER_MAX)
    except (ValueError, SyntaxError) as exc:
        raise SessionError(f"{where} is not a valid .npy array ({exc})") from exc
    if dtype.hasobject:
        raise SessionError(
            f"{where} holds Python objects; sessions hold numbers and strings "
            "only (objects would need unpickling, which streamlab never does)"
        )
    stated = math.prod(shape) * dtype.itemsize
    held = size - stream.tell()
    if stated > held:
        raise SessionError(
            f"{where} claims shape {shape} of {dtype} ({stated} bytes) but holds "
            f"{held} bytes; the file is truncated or corrupt"
        )


def _load_zarr(path: Path, rate: float | None, stream: str) -> Session:
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if "input/data" in root:  # a streamlab run that recorded its input
        rows = int(root["input"].attrs.get("rows", 0))
        info = root.attrs.get("stream", {})
        seq = root["input/seq"][:rows]
        if rows == 0:
            raise SessionError(f"{path} recorded no input rows")
        _refuse_oversized(root["input/data"], rows, path)
        return Session(
            data=root["input/data"][:rows],
            rate=float(rate or info.get("rate") or 0.0),
            kind=str(info.get("kind", "spikes")),
            first_seq=int(seq[0]),
            t0=float(root["input/t"][0]),
            stream=stream,
            meta=dict(info.get("meta", {})),
            seq=np.asarray(seq, dtype=np.uint64),
            t=np.asarray(root["input/t"][:rows], dtype=np.float64),
        )
    if "data" in root:
        _refuse_oversized(root["data"], None, path)
        return Session(
            data=root["data"][...],
            rate=float(rate or root.attrs.get("rate", 0.0)),
            kind=str(root.attrs.get("kind", "spikes")),
            stream=stream,
        )
    raise SessionError(f"{path} has neither input/data (a streamlab run) nor a data array")


def _refuse_oversized(array: Any, rows: int | None, path: Path) -> None:
    """Replay holds a session in memory: refuse one whose stated size is more than the memory
    this machine has free, before reading it (a corrupt shape must not exhaust memory)."""
    shape = (min(rows, array.shape[0]), *array.shape[1:]) if rows is not None else array.shape
    stated = math.prod(shape) * np.dtype(array.dtype).itemsize
    available = _available_memory()
    if available is not None and stated > available:
        raise SessionError(
            f"{path}: the session's data array states shape {tuple(shape)} ({stated} bytes), more "
            f"than the {available} bytes of free memory; the store is corrupt, or replay a slice"
        )


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
