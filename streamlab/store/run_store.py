"""One run in one Zarr v3 group, laid out as DESIGN.md fixes it:

    <run>/                      attrs: streamlab (config, versions, source), status, stream,
                                       checkpoint (the last complete one), resumes
      learners/<name>/          output (time, feature), seq, t, latency_us; attrs: rows, learner
        state/<seq>/            a checkpoint of the learner's state_dict, tagged with its seq
      events/gaps/              stream, first_seq, n_missing, reason, wall_time
      events/rejected/          stream, code, detail, seq, wall_time
      input/                    data (time, channel), seq, t: the frames as received (optional)

A checkpoint is committed by the root attribute `checkpoint`, written after every learner's
state and after all rows up to it; `prepare_resume` cuts every table back to that point.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from streamlab.errors import StoreError
from streamlab.store.table import Column, Table

FORMAT_VERSION = 1
_CONSOLIDATE_LOCK = threading.Lock()
GAP_COLUMNS = {
    "stream": Column(str, ("gap",)),
    "first_seq": Column("u8", ("gap",)),
    "n_missing": Column("u8", ("gap",)),
    "reason": Column(str, ("gap",)),
    "wall_time": Column("f8", ("gap",)),
}
REJECT_COLUMNS = {
    "stream": Column(str, ("rejection",)),
    "code": Column(str, ("rejection",)),
    "detail": Column(str, ("rejection",)),
    "seq": Column("i8", ("rejection",)),
    "wall_time": Column("f8", ("rejection",)),
}
STATUSES = ("running", "complete", "failed", "stopped")


def learner_columns(
    n_outputs: int, dtype: str, extras: dict[str, int] | None = None
) -> dict[str, Column]:
    """A learner's table: its output per sample, and any extra per-sample outputs it reports
    (e.g. a controller's state estimate beside its control), each with its own feature dim."""
    columns = {
        "output": Column(dtype, ("time", "feature"), (n_outputs,)),
        "seq": Column("u8", ("time",)),
        "t": Column("f8", ("time",)),
        "latency_us": Column("f4", ("time",)),
    }
    for key, size in (extras or {}).items():
        columns[key] = Column(dtype, ("time", f"{key}_feature"), (size,))
    return columns


def input_columns(n_channels: int, dtype: str) -> dict[str, Column]:
    return {
        "data": Column(dtype, ("time", "channel"), (n_channels,)),
        "seq": Column("u8", ("time",)),
        "t": Column("f8", ("time",)),
    }


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages a run's results depend on."""
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    """Looked up once per process (reading package metadata costs ~17 ms, paid per store)."""
    versions = {"python": platform.python_version()}
    for name in ("streamlab", "torch", "numpy", "zarr", "pyzmq", "river", "prefect"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class Checkpoint:
    """A consistent cut of a run: learners' states after sample `seq`, and the row counts of
    every table at that moment."""

    seq: int
    t: float
    stream: str
    rows: dict[str, int]
    input_rows: int
    gap_rows: int
    stream_state: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "t": self.t,
            "stream": self.stream,
            "rows": self.rows,
            "input_rows": self.input_rows,
            "gap_rows": self.gap_rows,
            "stream_state": self.stream_state,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Checkpoint:
        return cls(**attrs)


class RunStore:
    """Read and write one run's Zarr group. Only one writer may hold a store at a time."""

    def __init__(self, root: zarr.Group, path: str) -> None:
        self.root = root
        self.path = path
        self._tables: dict[str, Table] = {}

    # -- opening ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        config: dict[str, Any],
        source: dict[str, Any],
        overwrite: bool = False,
        resumable: bool = True,
    ) -> RunStore:
        """A new run group at `path`, status `running`. An existing store is an error that
        says what to do: `--overwrite`, a new path, or (where the command has it, `resumable`)
        `--resume`."""
        path = str(path)
        cls.check_new(path, overwrite=overwrite, resumable=resumable)
        try:
            root = zarr.open_group(path, mode="w", zarr_format=3)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot create a Zarr store at {path}: {exc}") from exc
        root.attrs.update(
            {
                "streamlab": {
                    "format": FORMAT_VERSION,
                    "versions": package_versions(),
                    "config": config,
                    "source": source,
                    "created": _now(),
                },
                "status": "running",
                "resumes": [],
            }
        )
        store = cls(root, path)
        store._table("events/gaps", GAP_COLUMNS)
        store._table("events/rejected", REJECT_COLUMNS)
        return store

    @staticmethod
    def check_new(path: str | os.PathLike[str], *, overwrite: bool, resumable: bool) -> None:
        """Raise the error `create` would for an existing store at `path` (callers check
        before opening sockets, so a refused start leaves nothing behind)."""
        if _exists(str(path)) and not overwrite:
            resume = "pass --resume to continue that run, " if resumable else ""
            raise StoreError(
                f"a store already exists at {path}; {resume}pass --overwrite to replace it, "
                "or choose a new --store path"
            )

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, mode: str = "r") -> RunStore:
        """An existing run, read-only (`mode="r"`) or for writing (`"r+"`)."""
        path = str(path)
        if not _exists(path):
            raise StoreError(
                f"no streamlab store at {path}; check the path (a directory ending in .zarr)"
            )
        try:
            root = zarr.open_group(path, mode=mode, use_consolidated=False)
        except (OSError, ValueError, zarr.errors.GroupNotFoundError) as exc:
            raise StoreError(f"{path} is not a readable Zarr group: {exc}") from exc
        if "streamlab" not in root.attrs:
            raise StoreError(
                f"{path} is a Zarr group but not a streamlab run (no 'streamlab' attribute)"
            )
        return cls(root, path)

    # -- tables -------------------------------------------------------------------------
    def _table(self, key: str, columns: dict[str, Column] | None = None) -> Table:
        if key not in self._tables:
            if columns is None:
                raise StoreError(f"{self.path} has no table {key!r}")
            self._tables[key] = Table(self.root.require_group(key), columns)
        return self._tables[key]

    @property
    def gaps(self) -> Table:
        return self._table("events/gaps", GAP_COLUMNS)

    @property
    def rejected(self) -> Table:
        return self._table("events/rejected", REJECT_COLUMNS)

    def learner(
        self,
        name: str,
        n_outputs: int | None = None,
        dtype: str = "f4",
        info: dict[str, Any] | None = None,
        extras: dict[str, int] | None = None,
    ) -> Table:
        """The table of learner `name`; created with `n_outputs` output columns (and the
        `extras` columns, name -> width) if new."""
        key = f"learners/{name}"
        if key in self._tables:
            return self._tables[key]
        if f"{key}/output" in self.root:
            output = self.root[f"{key}/output"]
            n_outputs, dtype = int(output.shape[1]), str(output.dtype)
            group = self.root[key]
            standard = learner_columns(1, dtype)
            extras = {
                array: int(group[array].shape[1])
                for array in group.array_keys()
                if array not in standard
            }
        elif n_outputs is None:
            raise StoreError(
                f"{self.path} has no learner {name!r}; it holds {self.learner_names()}"
            )
        else:
            self.root.require_group(key).attrs["learner"] = info or {}
        return self._table(key, learner_columns(n_outputs, dtype, extras))

    def append_learner(
        self,
        name: str,
        output: np.ndarray,
        seq: np.ndarray,
        t: np.ndarray,
        latency_us: np.ndarray,
        extras: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Append a block of rows (with the learner's extra outputs, if it has any) to learner
        `name` and commit them."""
        self.learner(name).append(
            output=output, seq=seq, t=t, latency_us=latency_us, **(extras or {})
        )

    def append_input(self, data: np.ndarray, seq: np.ndarray, t: np.ndarray) -> None:
        """Append a block of raw input rows and commit them."""
        self.input().append(data=data, seq=seq, t=t)

    def append_events(self, table: str, columns: dict[str, np.ndarray]) -> None:
        """Append rows to `events/gaps` (table="gaps") or `events/rejected` ("rejected")."""
        if table not in ("gaps", "rejected"):
            raise StoreError(f"no event table {table!r}; use 'gaps' or 'rejected'")
        (self.gaps if table == "gaps" else self.rejected).append(**columns)

    def learner_names(self) -> list[str]:
        if "learners" not in self.root:
            return []
        return sorted(self.root["learners"].group_keys())

    def input(self, n_channels: int | None = None, dtype: str = "f4") -> Table:
        """The table of raw input frames; created with `n_channels` columns if new."""
        if "input" in self._tables:
            return self._tables["input"]
        if "input/data" in self.root:
            data = self.root["input/data"]
            n_channels, dtype = int(data.shape[1]), str(data.dtype)
        elif n_channels is None:
            raise StoreError(f"{self.path} recorded no input; record it with --record-input")
        return self._table("input", input_columns(n_channels, dtype))

    @property
    def has_input(self) -> bool:
        return "input" in self.root

    # -- attributes -------------------------------------------------------------------
    @property
    def status(self) -> str:
        return str(self.root.attrs.get("status", "unknown"))

    def set_status(self, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise StoreError(f"status must be one of {STATUSES}, not {status!r}")
        update: dict[str, Any] = {"status": status, "updated": _now()}
        if error is not None:
            update["error"] = error
        if status != "running":
            update["ended"] = _now()
        self.root.attrs.update(update)

    def record_divergence(self, name: str, seq: int, restored_seq: int | None) -> None:
        """Note in learner `name`'s attrs that it diverged at `seq` (its output there is not
        finite) and was rolled back to its state after `restored_seq` (None: reset)."""
        group = self.learner(name).group  # the table's own handle: its commits keep this
        entries = list(group.attrs.get("divergences", []))
        entries.append({"seq": int(seq), "restored_from_seq": restored_seq, "time": _now()})
        group.attrs["divergences"] = entries

    def set_stream(self, info: dict[str, Any]) -> None:
        self.root.attrs["stream"] = info

    def set_calibration(self, info: dict[str, Any]) -> None:
        """Where calibration ended: `seconds`, `end_t`, `end_seq` (the first sample given to
        the learners without y) and `first_decoded_t`. Written once: a resumed run that meets
        the boundary again (its first sample is past it) leaves the first record as it is."""
        if "calibration" not in self.root.attrs:
            self.root.attrs["calibration"] = info

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    def consolidate(self) -> None:
        """Consolidate metadata once a run has ended, so `xarray.open_zarr` opens it directly."""
        # zarr warns that consolidation is not in the v3 spec; we know. catch_warnings changes
        # process-wide state, so concurrent runs (mapped flow tasks) take turns.
        with _CONSOLIDATE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(self.root.store, path=self.root.path or None)

    # -- checkpoints --------------------------------------------------------------------
    def write_checkpoint(
        self, checkpoint: Checkpoint, states: dict[str, dict[str, Any]], keep: int = 0
    ) -> None:
        """Write every learner's state under `state/<seq>`, then commit the checkpoint.
        `keep` > 0 prunes all but the newest `keep` checkpoints after the commit."""
        for name, state in states.items():
            group = self.root.require_group(f"learners/{name}/state").require_group(
                _ckpt_key(checkpoint.seq)
            )
            scalars: dict[str, Any] = {}
            for key, value in state.items():
                array = _as_array(value)
                if array is None:
                    scalars[key] = value
                    continue
                group.create_array(
                    key,
                    shape=array.shape,
                    chunks=tuple(max(1, s) for s in array.shape) or None,
                    dtype=array.dtype,
                    overwrite=True,
                )[...] = array
            group.attrs.update({"seq": checkpoint.seq, "t": checkpoint.t, "scalars": scalars})
        self.root.attrs["checkpoint"] = checkpoint.to_attrs()
        if keep > 0:
            for name in states:
                self._prune_checkpoints(name, keep)

    def _prune_checkpoints(self, name: str, keep: int) -> None:
        group = self.root[f"learners/{name}/state"]
        for key in sorted(group.group_keys())[:-keep]:
            del group[key]

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The last committed checkpoint, or None."""
        attrs = self.root.attrs.get("checkpoint")
        return Checkpoint.from_attrs(attrs) if attrs else None

    def checkpoint_seqs(self, name: str) -> list[int]:
        """Seqs of the committed checkpoints of learner `name`, oldest first."""
        committed = self.checkpoint
        if committed is None or f"learners/{name}/state" not in self.root:
            return []
        group = self.root[f"learners/{name}/state"]
        seqs = (int(group[key].attrs.get("seq", -1)) for key in group.group_keys())
        return sorted(s for s in seqs if 0 <= s <= committed.seq)

    def load_state(self, name: str, seq: int) -> dict[str, Any]:
        """The state_dict of learner `name` at checkpoint `seq` (arrays as NumPy)."""
        key = f"learners/{name}/state/{_ckpt_key(seq)}"
        if key not in self.root:
            raise StoreError(f"{self.path} has no checkpoint of {name!r} at seq {seq}")
        group = self.root[key]
        state: dict[str, Any] = dict(group.attrs.get("scalars", {}))
        for array_name in group.array_keys():
            state[array_name] = group[array_name][...]
        return state

    # -- resume -------------------------------------------------------------------------
    def prepare_resume(self) -> Checkpoint | None:
        """Cut the run back to its last committed checkpoint (no torn or duplicate rows, no
        half-written checkpoint), mark it running again and return that checkpoint (None: the
        run had not checkpointed yet and starts over, keeping its events)."""
        _remove_partial_files(self.path)
        checkpoint = self.checkpoint
        for name in self.learner_names():
            table = self.learner(name)
            table.truncate(checkpoint.rows.get(name, 0) if checkpoint else 0)
            if f"learners/{name}/state" in self.root:
                group = self.root[f"learners/{name}/state"]
                for key in list(group.group_keys()):
                    if checkpoint is None or int(key) > checkpoint.seq:
                        del group[key]
        if self.has_input:
            self.input().truncate(checkpoint.input_rows if checkpoint else 0)
        gaps = self.gaps
        gaps.truncate(checkpoint.gap_rows if checkpoint else gaps.rows)
        self.rejected.trim()
        resumes = list(self.root.attrs.get("resumes", []))
        resumes.append(
            {
                "at": _now(),
                "from_seq": checkpoint.seq if checkpoint else None,
                "status_was": self.status,
            }
        )
        self.root.attrs.update({"resumes": resumes})
        self.set_status("running")
        return checkpoint


def _ckpt_key(seq: int) -> str:
    return f"{seq:020d}"


def _as_array(value: Any) -> np.ndarray | None:
    if hasattr(value, "detach"):  # torch.Tensor
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    return None


def _exists(path: str) -> bool:
    if "://" not in path:
        return Path(path, "zarr.json").exists()
    try:
        zarr.open_group(path, mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return False
    return True


def _remove_partial_files(path: str) -> None:
    if "://" in path:
        return
    for partial in Path(path).rglob("*.partial"):
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
