"""Replay flows: play recorded sessions (any format `streamlab replay` reads) through the same
ZeroMQ path and pipeline as a live stream, one Prefect task per session."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from streamlab.adapters import open_session

from streamlab.paths import confined_store
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
) -> dict[str, Any]:
    """Replay one session into one store (kept inside $STREAMLAB_STORE_ROOT when it is set);
    returns the run's final metrics and wall time. `reader_options` go to `open_session`
    (e.g. `bin_s` for spike times)."""
    started = time.perf_counter()
    store = confined_store(store)
    loaded = open_session(session, rate=rate, **(reader_options or {}))
    options = AttachOptions(store=store, learners=learners, pattern="pull", overwrite=overwrite)
    progress = replay(loaded, options, realtime=realtime)
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
) -> dict[str, Any]:
    """Replay one recorded session through the learners (default: `sm`) into `store`."""
    return replay_one(session, store, learners or ["sm"], realtime, rate, overwrite)


@flow(name="streamlab-replay-many")
def replay_sessions(
    sessions: list[str], store_dir: str, learners: list[str] | None = None, overwrite: bool = False
) -> list[dict[str, Any]]:
    """Replay many sessions, one task each, into `<store_dir>/<session name>.zarr`."""
    stores = [str(Path(store_dir) / f"{Path(s).stem}.zarr") for s in sessions]
    futures = replay_one.map(
        sessions, stores, [learners or ["sm"]] * len(sessions), overwrite=overwrite
    )
    return [future.result() for future in futures]
