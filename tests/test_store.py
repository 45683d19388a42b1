"""The Zarr run store: committed rows only, torn tails trimmed, checkpoints round trip, resume
cuts back to the last checkpoint, and xarray opens a learner as a dataset over time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlab.errors import StoreError
from streamlab.learners import SimilarityMatching
from streamlab.store.run_store import Checkpoint, RunStore
from streamlab.store.table import Column, Table


def new_store(path: Path) -> RunStore:
    return RunStore.create(path, config={"learners": ["sm"]}, source={"endpoint": "test"})


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blocks=st.lists(st.integers(1, 700), min_size=1, max_size=6), width=st.integers(1, 9))
def test_table_appends_read_back_exactly(tmp_path_factory, blocks, width) -> None:
    group = zarr.open_group(str(tmp_path_factory.mktemp("t") / "t.zarr"), mode="w")
    table = Table(group, {"x": Column("f4", ("time", "f"), (width,)), "s": Column(str, ("time",))})
    rng = np.random.default_rng(len(blocks))
    written_x, written_s = [], []
    for n in blocks:
        x = rng.standard_normal((n, width)).astype("f4")
        s = np.array([f"row{len(written_s) + i}" for i in range(n)], dtype=object)
        table.append(x=x, s=s)
        written_x.append(x)
        written_s.extend(s)
    reopened = Table(zarr.open_group(group.store, mode="r+"), table.columns)
    assert reopened.rows == sum(blocks)
    np.testing.assert_array_equal(reopened.read("x"), np.concatenate(written_x))
    assert list(reopened.read("s")) == written_s


def test_torn_tail_is_never_read_and_is_trimmed(tmp_path) -> None:
    group = zarr.open_group(str(tmp_path / "t.zarr"), mode="w")
    table = Table(group, {"x": Column("f4", ("time",)), "y": Column("u8", ("time",))})
    table.append(x=np.arange(5, dtype="f4"), y=np.arange(5, dtype="u8"))
    group["x"].append(np.arange(3, dtype="f4"))  # a crash after one column, before the commit
    reopened = Table(zarr.open_group(str(tmp_path / "t.zarr"), mode="r+"), table.columns)
    assert reopened.rows == 5 and len(reopened.read("x")) == 5
    reopened.append(x=np.full(2, 9, "f4"), y=np.full(2, 9, "u8"))
    np.testing.assert_array_equal(reopened.read("x"), [0, 1, 2, 3, 4, 9, 9])
    np.testing.assert_array_equal(reopened.read("y"), [0, 1, 2, 3, 4, 9, 9])


def test_checkpoint_through_the_store_gives_same_next_outputs(tmp_path) -> None:
    store = new_store(tmp_path / "run.zarr")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((400, 12)).astype("f4"))
    learner = SimilarityMatching(n_components=3, device="cpu", seed=4)
    for row in x[:200]:
        learner.step(row)
    store.write_checkpoint(
        Checkpoint(199, 1.99, "s", {"sm": 200}, 0, 0), {"sm": learner.state_dict()}
    )
    reopened = RunStore.open(tmp_path / "run.zarr")
    restored = SimilarityMatching(n_components=3, device="cpu", seed=0)
    restored.load_state_dict(reopened.load_state("sm", 199))
    for row in x[200:]:
        assert torch.equal(learner.step(row), restored.step(row))
    assert reopened.checkpoint_seqs("sm") == [199]


def test_resume_cuts_back_to_checkpoint_and_drops_half_written_state(tmp_path) -> None:
    store = new_store(tmp_path / "run.zarr")
    table = store.learner("sm", 2, "f4", {})
    table.append(
        output=np.ones((10, 2), "f4"),
        seq=np.arange(10, dtype="u8"),
        t=np.zeros(10),
        latency_us=np.zeros(10, "f4"),
    )
    store.write_checkpoint(Checkpoint(9, 0.09, "s", {"sm": 10}, 0, 0), {"sm": {"W": np.ones(3)}})
    table.append(
        output=np.ones((5, 2), "f4"),
        seq=np.arange(10, 15, dtype="u8"),
        t=np.zeros(5),
        latency_us=np.zeros(5, "f4"),
    )
    # a checkpoint whose arrays were written but whose commit never happened
    store.root.require_group("learners/sm/state").require_group(f"{14:020d}").create_array(
        "W", data=np.ones(3)
    )
    store.root["learners/sm/output"].append(np.ones((3, 2), "f4"))  # and a torn tail
    resumed = RunStore.open(tmp_path / "run.zarr", mode="r+")
    checkpoint = resumed.prepare_resume()
    assert checkpoint.seq == 9 and checkpoint.rows == {"sm": 10}
    assert resumed.learner("sm").rows == 10
    assert resumed.root["learners/sm/output"].shape == (10, 2)
    assert resumed.checkpoint_seqs("sm") == [9]
    assert list(resumed.root["learners/sm/state"].group_keys()) == [f"{9:020d}"]
    assert resumed.status == "running" and len(resumed.attrs["resumes"]) == 1


def test_xarray_opens_learner_outputs_with_named_dimensions(tmp_path) -> None:
    store = new_store(tmp_path / "run.zarr")
    store.learner("sm", 3, "f4", {}).append(
        output=np.arange(12, dtype="f4").reshape(4, 3),
        seq=np.arange(4, dtype="u8"),
        t=np.arange(4) / 10,
        latency_us=np.ones(4, "f4"),
    )
    store.set_status("complete")
    store.consolidate()
    ds = xr.open_zarr(tmp_path / "run.zarr", group="learners/sm")
    assert ds["output"].dims == ("time", "feature")
    assert ds["seq"].dims == ("time",) and ds.sizes["time"] == 4
    assert {"t", "seq"} <= set(ds.coords) and set(ds.data_vars) == {"output", "latency_us"}
    np.testing.assert_array_equal(ds["output"].values[2], [6, 7, 8])
    attrs = json.loads((tmp_path / "run.zarr" / "zarr.json").read_text())["attributes"]
    assert (
        attrs["status"] == "complete" and attrs["streamlab"]["versions"]["zarr"] == zarr.__version__
    )


def test_refuses_to_overwrite_or_open_what_is_not_a_run(tmp_path) -> None:
    new_store(tmp_path / "run.zarr")
    with pytest.raises(StoreError, match="--resume"):
        new_store(tmp_path / "run.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a streamlab run"):
        RunStore.open(tmp_path / "other.zarr")
    with pytest.raises(StoreError, match="no streamlab store"):
        RunStore.open(tmp_path / "missing.zarr")


def test_memory_store_url_works(tmp_path) -> None:
    store = RunStore.create("memory://streamlab-test/run.zarr", config={}, source={})
    store.learner("sm", 1, "f4", {}).append(
        output=np.ones((2, 1), "f4"),
        seq=np.arange(2, dtype="u8"),
        t=np.zeros(2),
        latency_us=np.zeros(2, "f4"),
    )
    assert RunStore.open("memory://streamlab-test/run.zarr").learner("sm").rows == 2


def test_extra_outputs_have_their_own_columns_and_survive_reopening(tmp_path) -> None:
    """A learner's extra per-sample outputs (e.g. a controller's state estimate) are columns of
    its table with their own feature dimension; a reopened store (resume) finds them."""
    path = tmp_path / "run.zarr"
    store = RunStore.create(path, config={}, source={})
    rows = np.arange(3, dtype=np.uint64)
    estimate = np.arange(6, dtype=np.float32).reshape(3, 2)
    store.learner("bio_ofc", 1, "f4", extras={"estimate": 2})
    output, t, latency = np.ones((3, 1), np.float32), rows.astype(float), np.zeros(3, np.float32)
    store.append_learner("bio_ofc", output, rows, t, latency, {"estimate": estimate})
    reopened = RunStore.open(path, mode="r+")
    reopened.append_learner("bio_ofc", output, rows + 3, t, latency, {"estimate": estimate + 6})
    table = RunStore.open(path).learner("bio_ofc")
    assert table.rows == 6
    np.testing.assert_array_equal(table.read("estimate"), np.arange(12).reshape(6, 2))
    with pytest.raises(StoreError, match="needs columns"):
        reopened.append_learner("bio_ofc", output, rows + 6, t, latency)
