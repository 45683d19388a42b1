"""Archive and LSL adapters: NWB (the real human MTL file and a file written here with a
RoiResponseSeries), Suite2p (the real plane folder and a synthetic one with known dF/F), the
zebrafish and linear-track recordings, .npy, `open_session`'s dispatch and errors, LSL with a
real outlet, and `streamlab replay` of the NWB file and the Suite2p folder into stores."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
from streamlab.adapters import open_session

from streamlab.errors import SessionError
from streamlab.store.run_store import RunStore

from .conftest import SHARED_DATA, run_cli

NWB_FILE = SHARED_DATA / "human-mtl-nwb" / "sub-4_ses-4_ecephys+image.nwb"
SUITE2P = SHARED_DATA / "suite2p-plane0"
ZEBRAFISH = SHARED_DATA / "zebrafish-tectum" / "zf_20151104-f1.mat"
TRACK = SHARED_DATA / "hc-linear-track"


def needs(path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not path.exists(), reason=f"real recording {path} absent (../shared/data not present)"
    )


@pytest.fixture(scope="module")
def mtl():
    if not NWB_FILE.exists():
        pytest.skip(f"real recording {NWB_FILE} absent (../shared/data not present)")
    pytest.importorskip("pynwb", reason="pynwb not installed (pip install 'streamlab[nwb]')")
    return open_session(NWB_FILE, bin_s=0.5)


# -- NWB ----------------------------------------------------------------------------------------
def test_nwb_units_are_binned_to_counts_with_trials_as_labels(mtl) -> None:
    import h5py

    with h5py.File(NWB_FILE, "r") as raw:  # read independently of pynwb
        spike_times = raw["units/spike_times"][:]
        n_units = raw["units/id"].shape[0]
        encoding_starts = raw["intervals/encoding_table/start_time"][:]
    assert n_units == 35 and mtl.data.shape[1] == 35
    assert mtl.rate == 2.0 and mtl.kind == "spikes"
    assert mtl.data.sum() == spike_times.size  # every spike lands in exactly one bin
    assert mtl.t0 == 0.0 and mtl.n_samples == int(np.floor(spike_times.max() / 0.5)) + 1
    assert mtl.meta["channels"][:2] == ["unit0", "unit1"]
    rows = mtl.meta["intervals"]
    assert {r["table"] for r in rows} == {
        "encoding_table",
        "recognition_table",
        "timediscrimination_table",
    }
    encoding = [r for r in rows if r["table"] == "encoding_table"]
    assert len(encoding) == 90
    assert [r["start"] for r in encoding] == pytest.approx(encoding_starts)
    assert encoding[0]["start_seq"] == int(encoding_starts[0] / 0.5)
    assert isinstance(encoding[0]["Clip_name"], str)
    json.dumps(mtl.meta)  # carried in the hello and the store's attributes


def write_calcium_nwb(path, traces: np.ndarray, rate: float) -> None:
    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel

    nwb = NWBFile(
        session_description="calcium test",
        identifier="calcium-1",
        session_start_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    device = nwb.create_device(name="scope")
    plane = nwb.create_imaging_plane(
        name="plane0",
        optical_channel=OpticalChannel(name="green", description="GCaMP", emission_lambda=510.0),
        description="test plane",
        device=device,
        excitation_lambda=920.0,
        imaging_rate=rate,
        indicator="GCaMP6s",
        location="tectum",
    )
    segmentation = ImageSegmentation()
    cells = segmentation.create_plane_segmentation(
        name="cells", description="cells", imaging_plane=plane
    )
    for k in range(traces.shape[1]):
        mask = np.zeros((8, 8))
        mask[k, k] = 1.0
        cells.add_roi(image_mask=mask, id=10 + k)
    module = nwb.create_processing_module(name="ophys", description="calcium")
    module.add(segmentation)
    rois = cells.create_roi_table_region(description="all", region=list(range(traces.shape[1])))
    fluorescence = Fluorescence()
    module.add(fluorescence)
    fluorescence.create_roi_response_series(
        name="RoiResponseSeries", data=traces, rois=rois, unit="n.a.", rate=rate
    )
    nwb.add_trial(start_time=1.0, stop_time=2.0)
    nwb.add_trial(start_time=3.0, stop_time=4.5)
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def test_nwb_roi_response_series_is_replayed_as_recorded(tmp_path) -> None:
    pytest.importorskip("pynwb", reason="pynwb not installed (pip install 'streamlab[nwb]')")
    traces = np.random.default_rng(0).random((150, 3)).astype(np.float32)
    write_calcium_nwb(tmp_path / "calcium.nwb", traces, 30.0)
    session = open_session(tmp_path / "calcium.nwb")
    np.testing.assert_array_equal(session.data, traces)
    assert session.rate == 30.0 and session.kind == "calcium"
    assert session.meta["channels"] == ["roi10", "roi11", "roi12"]
    trials = [
        (r["table"], r["start"], r["stop"], r["start_seq"]) for r in session.meta["intervals"]
    ]
    assert trials == [("trials", 1.0, 2.0, 30), ("trials", 3.0, 4.5, 90)]
    with pytest.raises(SessionError, match="no Units table to bin"):
        open_session(tmp_path / "calcium.nwb", bin_s=0.1)
    with pytest.raises(SessionError, match="no TimeSeries 'nope'"):
        open_session(tmp_path / "calcium.nwb", series="nope")


# -- Suite2p ------------------------------------------------------------------------------------
@needs(SUITE2P)
def test_suite2p_real_folder_needs_a_rate_and_keeps_only_cells() -> None:
    with pytest.raises(SessionError, match=r"no ops\.npy.*rate"):
        open_session(SUITE2P)
    session = open_session(SUITE2P, rate=30.0)
    iscell = np.load(SUITE2P / "iscell.npy")
    cells = np.flatnonzero(iscell[:, 0] == 1)
    assert session.data.shape == (2000, cells.size) == (2000, 20)
    assert session.meta["roi_index"] == cells.tolist() and session.kind == "calcium"
    assert np.isfinite(session.data).all()
    clean = [i for i, roi in enumerate(cells) if roi not in session.meta["baseline_clamped"]]
    # dF/F sits near 0 at baseline: its 8th percentile is about zero for unclamped cells
    assert np.abs(np.percentile(session.data[:, clean], 8, axis=0)).max() < 0.1


def test_suite2p_dff_is_correct_on_a_known_trace(tmp_path) -> None:
    frames, rate = 600, 10.0
    F = np.full((3, frames), 100.0, np.float32)
    Fneu = np.full((3, frames), 10.0, np.float32)
    F[0, 300:310] += 46.5  # a transient of half the corrected baseline (100 - 7 = 93)
    np.save(tmp_path / "F.npy", F)
    np.save(tmp_path / "Fneu.npy", Fneu)
    np.save(tmp_path / "iscell.npy", np.array([[1, 0.9], [0, 0.2], [1, 0.8]]))
    np.save(tmp_path / "ops.npy", np.array({"fs": rate}, dtype=object), allow_pickle=True)
    session = open_session(tmp_path, baseline_s=20.0)
    assert session.rate == rate and session.meta["channels"] == ["roi0", "roi2"]
    expected = np.zeros((frames, 2), np.float32)
    expected[300:310, 0] = 0.5
    np.testing.assert_allclose(session.data, expected, atol=1e-6)


# -- the real recordings ------------------------------------------------------------------------
@needs(ZEBRAFISH)
def test_zebrafish_calcium_is_frames_by_cells_at_2_2_hz() -> None:
    from scipy.io import loadmat

    session = open_session(ZEBRAFISH)
    activity = loadmat(ZEBRAFISH)["activity_matrix"]
    assert session.data.shape == (4245, 114) and session.rate == 2.2
    np.testing.assert_allclose(session.data, activity.T.astype(np.float32))
    assert session.meta["assemblies"][0][:3] == [0, 5, 6]  # 1-based 1, 6, 7 in the file


@needs(TRACK)
def test_linear_track_is_binned_spike_counts_with_optional_position() -> None:
    from streamlab.adapters.linear_track import load_linear_track

    session = open_session(TRACK, bin_s=0.25)
    recording = load_linear_track(TRACK)
    span = (recording.position_t[0], session.t0 + session.n_samples * 0.25)
    inside = sum(int(((t >= span[0]) & (t < span[1])).sum()) for t in recording.spike_times)
    assert session.data.shape == (session.n_samples, 31) and session.rate == 4.0
    assert session.data.sum() == inside
    from streamlab.adapters.recordings import load_linear_track_session

    with_position = load_linear_track_session(TRACK, bin_s=0.25, position=True)
    assert with_position.meta["channels"][-2:] == ["x", "y"]
    np.testing.assert_array_equal(with_position.data[:, :31], session.data)


# -- files and dispatch -------------------------------------------------------------------------
def test_npy_needs_a_rate_and_refuses_objects(tmp_path) -> None:
    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(tmp_path / "x.npy", data)
    with pytest.raises(SessionError, match="no sampling rate"):
        open_session(tmp_path / "x.npy")
    session = open_session(tmp_path / "x.npy", rate=100.0)
    np.testing.assert_array_equal(session.data, data)
    np.save(tmp_path / "bad.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SessionError, match="Python objects"):
        open_session(tmp_path / "bad.npy", rate=1.0)


def test_open_session_names_what_it_supports(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SessionError, match=r"NWB file.*Suite2p plane folder.*Zarr store"):
        open_session(tmp_path / "notes.txt")
    with pytest.raises(SessionError, match="does not exist"):
        open_session(tmp_path / "missing.nwb")
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    with pytest.raises(SessionError, match=r"takes \['rate'\]; not \['bin_s'\]"):
        open_session(tmp_path / "x.npy", bin_s=0.1)


# -- LSL ----------------------------------------------------------------------------------------
def test_lsl_source_pulls_chunks_with_their_timestamps() -> None:
    try:
        import pylsl
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"pylsl cannot load liblsl here: {exc}")
    from streamlab.adapters.lsl import LslSource

    from streamlab.stream import Control, Frame

    name = f"streamlab-test-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(name, "EEG", 3, 100.0, "float32", name)
    channels = info.desc().append_child("channels")
    for label in ("Fz", "Cz", "Pz"):
        channels.append_child("channel").append_child_value("label", label)
    outlet = pylsl.StreamOutlet(info)
    with LslSource(name=name, type="EEG", timeout=10.0) as source:
        hello = source.receive()
        assert isinstance(hello, Control) and hello.meta["channels"] == ["Fz", "Cz", "Pz"]
        assert hello.meta["rate"] == 100.0
        data = np.arange(300, dtype=np.float32).reshape(100, 3)
        stamps = 5000.0 + np.arange(100) / 100.0
        outlet.push_chunk(data, stamps.tolist())
        frames = []
        while sum(f.n_samples for f in frames) < 100:
            frame = source.receive(timeout=5.0)
            assert isinstance(frame, Frame), "the pushed chunk did not arrive within 5 s"
            frames.append(frame)
    np.testing.assert_array_equal(np.concatenate([f.data for f in frames]), data)
    assert frames[0].seq == 0 and frames[0].t == pytest.approx(5000.0)
    offsets = np.cumsum([0] + [f.n_samples for f in frames[:-1]])
    assert [f.t for f in frames] == pytest.approx(stamps[offsets].tolist())
    assert [f.seq for f in frames] == offsets.tolist()
    del outlet


# -- the CLI ------------------------------------------------------------------------------------
@pytest.mark.slow
@needs(NWB_FILE)
def test_cli_replays_the_nwb_file_into_a_store(tmp_path) -> None:
    import h5py

    pytest.importorskip("pynwb", reason="pynwb not installed (pip install 'streamlab[nwb]')")
    with h5py.File(NWB_FILE, "r") as raw:
        bins = int(np.floor(raw["units/spike_times"][:].max() / 2.0)) + 1
    store = tmp_path / "mtl.zarr"
    result = run_cli(
        "replay",
        str(NWB_FILE),
        "--bin",
        "2",
        "--learner",
        "sm:n_components=3",
        "--store",
        str(store),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunStore.open(store)
    assert run.status == "complete"
    assert run.learner("sm").rows == bins
    assert run.attrs["stream"]["n_channels"] == 35 and run.attrs["stream"]["rate"] == 0.5


@pytest.mark.slow
@needs(SUITE2P)
def test_cli_replays_the_suite2p_folder_into_a_store(tmp_path) -> None:
    store = tmp_path / "s2p.zarr"
    result = run_cli(
        "replay",
        str(SUITE2P),
        "--rate",
        "30",
        "--learner",
        "sm:n_components=4",
        "--store",
        str(store),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunStore.open(store)
    assert run.status == "complete" and run.learner("sm").rows == 2000
    assert run.attrs["stream"]["kind"] == "calcium"
