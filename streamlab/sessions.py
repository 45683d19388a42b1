"""Recorded sessions to replay: a NumPy `.npz` file or a Zarr store (a streamlab run that
recorded its input, or any group with a `data` array of (time, channel)).

An `.npz` session holds `data` (time, channel) and may hold `rate` (Hz), `kind`, `first_seq`,
`t0` and `channels` (names). `streamlab sim --out FILE.npz` writes one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from streamlab.errors import SessionError


@dataclass
class Session:
    """Samples of one stream recorded for replay; sample k has seq first_seq + k and time
    t0 + k / rate."""

    data: np.ndarray
    rate: float
    kind: str = "spikes"
    first_seq: int = 0
    t0: float = 0.0
    stream: str = "replay/spikes"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[0])

    def blocks(self, block: int = 4096):
        for lo in range(0, self.n_samples, block):
            yield self.data[lo : lo + block]


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
    elif (path / "zarr.json").exists():
        session = _load_zarr(path, rate, name)
    else:
        raise SessionError(
            f"{path} is neither an .npz file nor a Zarr store; see streamlab.sessions"
        )
    if session.data.ndim != 2 or session.data.shape[0] == 0:
        raise SessionError(
            f"session {path} data must be (time, channel) with samples, got {session.data.shape}"
        )
    if not session.rate or session.rate <= 0:
        raise SessionError(f"session {path} states no sampling rate; pass rate= (Hz)")
    return session


def _load_npz(path: Path, rate: float | None, stream: str) -> Session:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "data" not in npz:
                raise SessionError(
                    f"{path} has no 'data' array (time, channel); it has {sorted(npz.files)}"
                )
            channels = [str(c) for c in npz["channels"]] if "channels" in npz else []
            return Session(
                data=np.asarray(npz["data"]),
                rate=float(rate or npz.get("rate", 0.0)),
                kind=str(npz["kind"]) if "kind" in npz else "spikes",
                first_seq=int(npz["first_seq"]) if "first_seq" in npz else 0,
                t0=float(npz["t0"]) if "t0" in npz else 0.0,
                stream=stream,
                meta={"channels": channels} if channels else {},
            )
    except (OSError, ValueError) as exc:
        raise SessionError(f"cannot read {path} as an .npz session: {exc}") from exc


def _load_zarr(path: Path, rate: float | None, stream: str) -> Session:
    root = zarr.open_group(str(path), mode="r", use_consolidated=False)
    if "input/data" in root:  # a streamlab run that recorded its input
        rows = int(root["input"].attrs.get("rows", 0))
        info = root.attrs.get("stream", {})
        seq = root["input/seq"][:rows]
        if rows == 0:
            raise SessionError(f"{path} recorded no input rows")
        return Session(
            data=root["input/data"][:rows],
            rate=float(rate or info.get("rate") or 0.0),
            kind=str(info.get("kind", "spikes")),
            first_seq=int(seq[0]),
            t0=float(root["input/t"][0]),
            stream=stream,
            meta=dict(info.get("meta", {})),
        )
    if "data" in root:
        return Session(
            data=root["data"][...],
            rate=float(rate or root.attrs.get("rate", 0.0)),
            kind=str(root.attrs.get("kind", "spikes")),
            stream=stream,
        )
    raise SessionError(f"{path} has neither input/data (a streamlab run) nor a data array")
