"""The nightly flow for real: Prefect's API, sessions on disk, replays through ZeroMQ into Zarr,
fanned out over threads and over a Dask `LocalCluster` with two worker processes; a rerun skips
what is done, a corrupt session fails alone, and the deployment file matches the flows."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from streamlab.errors import ConfigError
from streamlab.sessions import Session, save_session
from streamlab.sim.lds import LatentPoissonPopulation
from streamlab.store.run_store import RunStore
from tests.conftest import REPO, run_cli


def make_archive(folder: Path, n: int = 3, samples: int = 1200) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    sessions = {}
    for index in range(n):
        data, _ = LatentPoissonPopulation(n_neurons=16, rate=500.0, seed=index).sample(samples)
        save_session(folder / f"mouse1-day{index}.npz", Session(data, 500.0))
        sessions[f"mouse1-day{index}"] = data
    return sessions


def check_stores(store_dir: Path, sessions: dict[str, np.ndarray]) -> None:
    for name, data in sessions.items():
        run = RunStore.open(store_dir / f"{name}.zarr")
        assert run.status == "complete" and run.learner("sm").rows == len(data)


def test_nightly_processes_new_sessions_once_with_threads(prefect_api, tmp_path) -> None:
    from streamlab.flows.nightly import nightly_flow

    archive, stores = tmp_path / "archive", tmp_path / "stores"
    sessions = make_archive(archive)
    first = nightly_flow(str(archive), str(stores), learners=["sm:n_components=3"])
    assert len(first["processed"]) == 3 and not first["failed"] and not first["skipped"]
    check_stores(stores, sessions)
    assert first["runner"] == "threads x2"
    assert "nightly-" in (stores / "index.html").read_text()
    assert "mouse1-day2" in next(stores.glob("nightly-*.html")).read_text()

    # the next night: one new session and one corrupt file; the three done ones are skipped
    extra = make_archive(tmp_path / "new", n=1)
    shutil.copy(tmp_path / "new" / "mouse1-day0.npz", archive / "mouse2-day0.npz")
    (archive / "mouse3-day0.npz").write_bytes(b"not a zip file at all")
    second = nightly_flow(str(archive), str(stores), learners=["sm:n_components=3"])
    assert sorted(Path(s).name for s in second["skipped"]) == [
        f"mouse1-day{i}.npz" for i in range(3)
    ]
    assert [Path(r["session"]).name for r in second["processed"]] == ["mouse2-day0.npz"]
    assert len(second["failed"]) == 1 and "cannot read" in second["failed"][0]["error"]
    check_stores(stores, {"mouse2-day0": extra["mouse1-day0"]})
    state = json.loads((stores / "nightly-state.json").read_text())
    assert len(state["sessions"]) == 4 and len(state["runs"]) == 2
    index = (stores / "index.html").read_text()
    assert index.count("<li>") == 2

    # other learner specs: what was done with the old ones is processed again
    third = nightly_flow(str(archive), str(stores), learners=["sm:n_components=2"])
    assert len(third["processed"]) == 4 and not third["skipped"]


def test_nightly_fans_out_over_a_dask_local_cluster(prefect_api, tmp_path) -> None:
    """Three sessions on a real `LocalCluster` of two worker processes through prefect-dask."""
    from distributed import LocalCluster
    from streamlab.flows.nightly import nightly_flow

    archive, stores = tmp_path / "archive", tmp_path / "stores"
    sessions = make_archive(archive)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        summary = nightly_flow(
            str(archive),
            str(stores),
            learners=["sm:n_components=3"],
            dask_address=cluster.scheduler_address,
        )
        workers = set(cluster.scheduler_info["workers"])
    assert len(workers) == 2
    assert len(summary["processed"]) == 3 and not summary["failed"]
    assert summary["runner"].startswith("dask tcp://")
    check_stores(stores, sessions)
    print(f"nightly over 3 sessions on a 2-worker LocalCluster: {summary['wall_s']:.1f} s")


def test_nightly_in_lockstep_groups_sessions_by_shape(prefect_api, tmp_path) -> None:
    """`lockstep=True`: the three 16-channel sessions run as one batch, a 12-channel one as
    another, a corrupt file fails alone; each session still gets its own complete store."""
    from streamlab.flows.nightly import nightly_flow

    archive, stores = tmp_path / "archive", tmp_path / "stores"
    sessions = make_archive(archive, samples=600)
    other, _ = LatentPoissonPopulation(n_neurons=12, rate=500.0, seed=9).sample(400)
    save_session(archive / "mouse9-day0.npz", Session(other, 500.0))
    (archive / "mouse3-day0.npz").write_bytes(b"not a zip file at all")
    summary = nightly_flow(
        str(archive), str(stores), learners=["sm:n_components=3"], lockstep=True, device="cpu"
    )
    assert summary["runner"] == "threads x2, lockstep on cpu"
    by_name = {Path(r["session"]).stem: r for r in summary["processed"]}
    assert sorted(by_name) == ["mouse1-day0", "mouse1-day1", "mouse1-day2", "mouse9-day0"]
    assert [by_name[f"mouse1-day{i}"]["lockstep_sessions"] for i in range(3)] == [3, 3, 3]
    assert by_name["mouse9-day0"]["lockstep_sessions"] == 1
    assert len(summary["failed"]) == 1 and "cannot read" in summary["failed"][0]["error"]
    check_stores(stores, {**sessions, "mouse9-day0": other})


def test_a_session_is_done_only_with_the_same_learners_and_options() -> None:
    from streamlab.flows.nightly import done_with

    record = {"fingerprint": "1:2", "learners": ["sm"], "session_options": {"bin_s": 0.1}}
    assert done_with(record, "1:2", ["sm"], {"bin_s": 0.1})
    assert not done_with(record, "1:3", ["sm"], {"bin_s": 0.1})  # the session changed
    assert not done_with(record, "1:2", ["nsm"], {"bin_s": 0.1})
    assert not done_with(record, "1:2", ["sm"], None)
    assert not done_with(None, "1:2", ["sm"], None)


def test_nightly_parameters_are_checked_before_any_work(tmp_path) -> None:
    from streamlab.flows.nightly import nightly_flow, task_runner

    with pytest.raises(ConfigError, match="not a folder"):
        nightly_flow.fn(str(tmp_path / "nowhere"), str(tmp_path / "stores"))
    with pytest.raises(ConfigError, match="unknown learner"):
        nightly_flow.fn(str(tmp_path), str(tmp_path / "stores"), learners=["pca"])
    with pytest.raises(ConfigError, match="scheduler address"):
        task_runner("localhost", 2)


def test_deployments_match_the_flows() -> None:
    """deploy/prefect.yaml: every entry point imports, its parameters exist in the flow's
    signature and cover the required ones, and schedules are valid crons."""
    from prefect.client.schemas.schedules import CronSchedule

    spec = yaml.safe_load((REPO / "deploy" / "prefect.yaml").read_text())
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly", "live"} <= names
    for deployment in spec["deployments"]:
        path, _, attr = deployment["entrypoint"].partition(":")
        module = importlib.import_module("streamlab.flows." + Path(path).stem)
        function = getattr(module, attr).fn
        signature = inspect.signature(function)
        given = set(deployment.get("parameters", {}))
        assert given <= set(signature.parameters), deployment["name"]
        required = {
            n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty
        }
        assert required <= given, f"{deployment['name']} lacks {required - given}"
        for schedule in deployment.get("schedules", []):
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"


def test_schedule_runs_the_nightly_flow_when_the_cron_fires(prefect_api, tmp_path) -> None:
    """`serve_nightly` on a clock that jumps to each due time: two nights, the second finds
    nothing new; the cron is read in the given time zone."""
    from datetime import UTC, datetime

    from streamlab.flows.nightly import next_run, serve_nightly

    assert next_run("0 2 * * *", "Europe/London", datetime(2026, 7, 1, 12, tzinfo=UTC)) == (
        datetime(2026, 7, 2, 1, tzinfo=UTC)  # 02:00 summer time in London
    )
    make_archive(tmp_path / "archive", n=1)
    clock = [datetime(2026, 11, 23, 23, 59, tzinfo=UTC)]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] = clock[0] + timedelta(seconds=seconds)

    parameters = {
        "archive": str(tmp_path / "archive"),
        "store_dir": str(tmp_path / "stores"),
        "learners": ["sm:n_components=2"],
    }
    runs = serve_nightly(
        "0 2 * * *", "UTC", parameters, max_runs=2, now=lambda: clock[0], sleep=sleep
    )
    assert runs == 2 and sum(waits) == pytest.approx(2 * 3600 + 60 + 24 * 3600)
    state = json.loads((tmp_path / "stores" / "nightly-state.json").read_text())
    assert [run["processed"] for run in state["runs"]] == [1, 0]


def test_schedule_survives_a_bad_night(prefect_api, tmp_path) -> None:
    """The first night finds no archive (the disk was not mounted): it is logged and the
    schedule goes on; the next night, with the archive back, processes the session."""
    from datetime import UTC, datetime

    from streamlab.flows.nightly import serve_nightly

    archive = tmp_path / "archive"
    clock = [datetime(2026, 11, 23, 23, 59, tzinfo=UTC)]
    failures: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: failures.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("streamlab.schedule").addHandler(handler)

    def sleep(seconds: float) -> None:
        clock[0] = clock[0] + timedelta(seconds=seconds)
        if failures and not archive.exists():
            make_archive(archive, n=1)

    parameters = {
        "archive": str(archive),
        "store_dir": str(tmp_path / "stores"),
        "learners": ["sm:n_components=2"],
    }
    try:
        runs = serve_nightly(
            "0 2 * * *", "UTC", parameters, max_runs=2, now=lambda: clock[0], sleep=sleep
        )
    finally:
        logging.getLogger("streamlab.schedule").removeHandler(handler)
    assert runs == 2
    assert failures == ["nightly run at 2026-11-24 02:00:00+00:00 failed"]
    state = json.loads((tmp_path / "stores" / "nightly-state.json").read_text())
    assert state["runs"][-1]["processed"] == 1
    assert RunStore.open(tmp_path / "stores" / "mouse1-day0.zarr").status == "complete"


def test_schedule_cli_refuses_a_bad_cron_in_one_line(tmp_path) -> None:
    result = run_cli("schedule", str(tmp_path), str(tmp_path / "s"), "--cron", "every night")
    assert result.returncode == 1
    assert "cron 'every night'" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_nightly_cli_runs_once_and_says_what_it_did(tmp_path) -> None:
    """`streamlab nightly` on threads, as the README shows it (the rerun that skips what is done
    is the flow's, tested above)."""
    make_archive(tmp_path / "archive", n=2, samples=600)
    args = ("nightly", str(tmp_path / "archive"), str(tmp_path / "stores"), "--learner", "sm")
    first = run_cli(*args, timeout=240, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "2 processed, 0 failed, 0 already done" in first.stdout
    assert "nightly: 2 session(s) to process" in first.stderr  # progress as it goes
    assert "nightly: 1/2 mouse1-day" in first.stderr and "600 samples" in first.stderr
    assert (tmp_path / "stores" / "index.html").is_file()
