"""Replay flows: play recorded sessions (any format `streamlab replay` reads) through the same
ZeroMQ path and pipeline as a live stream, one Prefect task per session; or, with `lockstep`,
sessions of the same shape as one batch of learners (one task per group, one store each)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from streamlab.adapters import open_session

from streamlab.errors import StoreError
from streamlab.lockstep import group_for_lockstep, lockstep_key, replay_lockstep
from streamlab.paths import confined_store
from streamlab.pipeline import stopped_by_signal
from streamlab.runner import AttachOptions, replay


@task(cache_policy=NO_CACHE, task_run_name="replay {session}")
def replay_one(
    session: str,
    store: str,
    learners: list[str],
    realtime: bool = False,
    rate: float | None = None,
    overwrite: bool = False,
    reader_options: dict[str, Any] | None = None,
    calibrate: float | None = None,
) -> dict[str, Any]:
    """Replay one session into one store (kept inside $STREAMLAB_STORE_ROOT when it is set);
    returns the run's final metrics and wall time. `reader_options` go to `open_session`
    (e.g. `bin_s` for spike times); `calibrate` seconds of labels, then decoding without them
    (the input is then recorded, so `streamlab score` can score the store)."""
    started = time.perf_counter()
    store = confined_store(store)
    loaded = open_session(session, rate=rate, **(reader_options or {}))
    options = AttachOptions(
        store=store,
        learners=learners,
        pattern="pull",
        overwrite=overwrite,
        calibrate=calibrate,
        record_input=calibrate is not None,
    )
    progress = replay(loaded, options, realtime=realtime)
    if stopped_by_signal():  # Ctrl-C or SIGTERM: the store is closed `stopped`, not done
        raise StoreError(f"the replay of {session} was stopped before its end; run it again")
    return {
        "session": session,
        "store": store,
        "wall_s": time.perf_counter() - started,
        **progress.to_dict(),
    }


@flow(name="streamlab-replay")
def replay_flow(
    session: str,
    store: str,
    learners: list[str] | None = None,
    realtime: bool = False,
    rate: float | None = None,
    overwrite: bool = False,
    calibrate: float | None = None,
    reader_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Replay one recorded session through the learners (default: `sm`) into `store`; with
    `calibrate`, the learners taking y get it for that many seconds only (see `replay_one`)."""
    return replay_one(
        session, store, learners or ["sm"], realtime, rate, overwrite, reader_options, calibrate
    )


@task(cache_policy=NO_CACHE, task_run_name="lockstep replay of {n_sessions} sessions")
def replay_group_lockstep(
    sessions: list[str],
    stores: list[str],
    learners: list[str],
    n_sessions: int,
    overwrite: bool = False,
    device: str = "auto",
    reader_options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Replay sessions of one shape as one batch (see `streamlab.lockstep`); one result per
    session, shaped like `replay_one`'s."""
    started = time.perf_counter()
    stores = [confined_store(store) for store in stores]
    loaded = [open_session(path, **(reader_options or {})) for path in sessions]
    results = replay_lockstep(loaded, learners, stores, device=device, overwrite=overwrite)
    wall = time.perf_counter() - started
    return [
        {
            "session": path,
            "store": result.store,
            "wall_s": wall,
            "lockstep_sessions": n_sessions,
            **result.progress.to_dict(),
        }
        for path, result in zip(sessions, results, strict=True)
    ]


@flow(name="streamlab-replay-many")
def replay_sessions(
    sessions: list[str],
    store_dir: str,
    learners: list[str] | None = None,
    overwrite: bool = False,
    lockstep: bool = False,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Replay many sessions into `<store_dir>/<session name>.zarr`: one task each over the
    live path, or (`lockstep`) the sessions grouped by shape, each group stepped as one batch
    (on a GPU, many sessions at the cost of a few)."""
    stores = [str(Path(store_dir) / f"{Path(s).stem}.zarr") for s in sessions]
    learners = learners or ["sm"]
    if not lockstep:
        futures = replay_one.map(sessions, stores, [learners] * len(sessions), overwrite=overwrite)
        return [future.result() for future in futures]
    keys = [lockstep_key(open_session(path)) for path in sessions]  # each freed once keyed
    results: dict[int, dict[str, Any]] = {}
    for group in group_for_lockstep(keys):
        done = replay_group_lockstep(
            [sessions[i] for i in group],
            [stores[i] for i in group],
            learners,
            len(group),
            overwrite=overwrite,
            device=device,
        )
        results.update(zip(group, done, strict=True))
    return [results[i] for i in range(len(sessions))]
