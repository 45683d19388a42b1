"""Fuzzing the readers that take files from disk: replay sessions (`.npz`) and the linear-track
reader (MATLAB `spikes.mat` and the tracker's binary file). Valid files are mutated (byte flips,
truncations, appended bytes); every outcome must be a well-formed result or a SessionError that
says what was wrong: never another exception, never an allocation beyond what the file holds."""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.io import savemat
from streamlab.adapters.linear_track import load_linear_track

from streamlab.errors import SessionError
from streamlab.sessions import Session, load_session, save_session

MUTATIONS = st.tuples(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.none() | st.integers(0, 10**6),
    st.binary(max_size=64),
)
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mutate(valid: bytes, mutation: tuple[list[tuple[int, int]], int | None, bytes]) -> bytes:
    flips, cut, extra = mutation
    data = bytearray(valid)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    return bytes(data) + extra


def npz_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "session.npz"
        data = np.arange(60, dtype=np.float32).reshape(20, 3)
        save_session(path, Session(data, rate=100.0, meta={"channels": ["a", "b", "c"]}))
        return path.read_bytes()


def tracking_bytes(n: int = 40) -> bytes:
    header = (
        b"<Start settings>\r\nclockrate: 30000\r\n"
        b"Fields: <time uint32><xloc uint16><yloc uint16><xloc2 uint16><yloc2 uint16>\r\n"
        b"<End settings>\r\n"
    )
    records = np.zeros(
        n, dtype=[("t", "<u4"), ("x1", "<u2"), ("y1", "<u2"), ("x2", "<u2"), ("y2", "<u2")]
    )
    records["t"] = 1_000_000 + 500 * np.arange(n)
    records["x1"] = np.linspace(100, 500, n)
    records["y1"] = 240
    return header + records.tobytes()


def spikes_mat_bytes(compressed: bool = False) -> bytes:
    """The MatClust layout: a struct array `spikes` by tetrode, each a struct array of cells with
    a `time` field."""
    cells = np.empty((1, 2), dtype=object)
    cells[0, 0] = {"time": np.array([33.4, 33.9, 34.1])}
    cells[0, 1] = {"time": np.array([33.5, 34.6])}
    tetrodes = np.empty((1, 1), dtype=object)
    tetrodes[0, 0] = cells
    buffer = io.BytesIO()
    savemat(buffer, {"spikes": tetrodes}, do_compression=compressed)
    return buffer.getvalue()


NPZ, TRACKING, SPIKES = npz_bytes(), tracking_bytes(), spikes_mat_bytes()
SPIKES_COMPRESSED = spikes_mat_bytes(compressed=True)


def test_the_unmutated_files_read() -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "s.npz").write_bytes(NPZ)
        session = load_session(Path(folder) / "s.npz")
        assert session.data.shape == (20, 3) and session.meta["channels"] == ["a", "b", "c"]
        (Path(folder) / "trajectory.videoPositionTracking").write_bytes(TRACKING)
        for spikes in (SPIKES, SPIKES_COMPRESSED):
            (Path(folder) / "spikes.mat").write_bytes(spikes)
            track = load_linear_track(folder)
            assert track.n_units == 2 and len(track.position_t) == 40


def assert_reason(error: SessionError) -> None:
    assert len(str(error)) > 20, f"a rejection without a reason: {error!r}"


@FUZZ
@given(mutation=MUTATIONS)
def test_mutated_npz_sessions_load_or_are_refused_with_a_reason(mutation) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "session.npz"
        path.write_bytes(mutate(NPZ, mutation))
        try:
            session = load_session(path)
        except SessionError as error:
            assert_reason(error)
            return
    assert session.data.ndim == 2 and session.data.dtype.kind in "biuf" and session.rate > 0


@FUZZ
@given(mutation=MUTATIONS, target=st.sampled_from(["spikes.mat", "compressed", "trajectory"]))
def test_mutated_linear_track_files_load_or_are_refused_with_a_reason(mutation, target) -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        spikes = {"spikes.mat": SPIKES, "compressed": SPIKES_COMPRESSED}.get(target, SPIKES)
        spikes = mutate(spikes, mutation) if target != "trajectory" else spikes
        tracking = mutate(TRACKING, mutation) if target == "trajectory" else TRACKING
        (folder / "spikes.mat").write_bytes(spikes)
        (folder / "trajectory.videoPositionTracking").write_bytes(tracking)
        tracemalloc.start()
        try:
            session = load_linear_track(folder)
        except SessionError as error:
            assert_reason(error)
            return
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < 20_000_000, f"reading two small files allocated {peak} bytes"
    assert session.n_units >= 1
    assert all(np.isfinite(times).all() for times in session.spike_times)
    assert len(session.position_t) == len(session.position_xy) >= 1
    assert np.isfinite(session.position_t).all()


def test_an_npz_member_claiming_a_huge_shape_is_refused_before_any_allocation(tmp_path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    )
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.npy", header.getvalue() + b"\0" * 64)
        archive.writestr("rate.npy", _npy(np.float64(100.0)))
    tracemalloc.start()
    try:
        with pytest.raises(SessionError, match="claims shape"):
            load_session(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_an_npz_holding_objects_is_refused_without_unpickling(tmp_path) -> None:
    path = tmp_path / "objects.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.npy", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True))
    with pytest.raises(SessionError, match="Python objects"):
        load_session(path)


def test_a_tracker_file_with_a_bad_clockrate_or_no_records_says_so(tmp_path) -> None:
    (tmp_path / "spikes.mat").write_bytes(SPIKES)
    tracking = tmp_path / "trajectory.videoPositionTracking"
    tracking.write_bytes(TRACKING.replace(b"clockrate: 30000", b"clockrate: fast!"))
    with pytest.raises(SessionError, match="clockrate"):
        load_linear_track(tmp_path)
    tracking.write_bytes(TRACKING[: TRACKING.index(b"<End settings>") + 16])
    with pytest.raises(SessionError, match="no position records"):
        load_linear_track(tmp_path)


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=allow_pickle)
    return buffer.getvalue()


def _corrupt(valid: bytes, find: bytes, replace: bytes) -> bytes:
    assert valid.count(find) >= 1, "the valid file's layout changed"
    return valid.replace(find, replace, 1)


TAG = struct.Struct("<II")


@pytest.mark.parametrize(
    ("find", "replace", "reason"),
    [
        # a data element's type set to one MATLAB never writes
        (TAG.pack(9, 16), TAG.pack(224, 16), "data type 224"),
        # a double matrix flagged complex, with no imaginary part after its real one
        (TAG.pack(6, 8) + TAG.pack(6, 0), TAG.pack(6, 8) + TAG.pack(0x806, 0), "needs 2"),
        # a cell array relabelled as numeric: its cells would be read as its data
        (TAG.pack(6, 8) + TAG.pack(1, 0), TAG.pack(6, 8) + TAG.pack(7, 0), "where its data"),
    ],
)
def test_spikes_mat_corruptions_that_crash_scipys_reader_are_refused_first(
    tmp_path, find: bytes, replace: bytes, reason: str
) -> None:
    """Each of these made scipy's MAT reader crash the whole process (a segmentation fault,
    found by fuzzing): the check before it must refuse them with a SessionError instead."""
    (tmp_path / "spikes.mat").write_bytes(_corrupt(SPIKES, find, replace))
    (tmp_path / "trajectory.videoPositionTracking").write_bytes(TRACKING)
    with pytest.raises(SessionError, match=reason):
        load_linear_track(tmp_path)
