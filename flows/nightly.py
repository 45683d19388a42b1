"""The nightly flow: find the sessions recorded since the last run in an archive folder, replay
each through the configured learners into its own store, and write a summary beside them, with
a run report per session (`streamlab.report`) next to its store.

What it has done is remembered in `<store_dir>/nightly-state.json` (each finished session with
its size and modification time), so a rerun, or the next night, only processes sessions that
are new, changed, or failed before. Sessions fan out through a Prefect task runner: threads on
this machine by default, or a Dask cluster when `dask_address` names its scheduler. A task is
one session, never a sample.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from streamlab.adapters import detect_format, open_session
from streamlab.flows.replay import replay_group_lockstep, replay_one

from streamlab.errors import ConfigError, SessionError
from streamlab.learners import parse_spec
from streamlab.lockstep import group_for_lockstep, lockstep_key
from streamlab.paths import confined_store
from streamlab.pipeline import stopped_by_signal

STATE_FILE = "nightly-state.json"
SUMMARY_PREFIX = "nightly-"
DEFAULT_LEARNERS = ["sm:n_components=4"]


def find_sessions(archive: str | os.PathLike[str]) -> list[Path]:
    """Recordings directly inside `archive`, sorted by name: anything `streamlab replay` reads
    (NWB, Suite2p folders, MATLAB recordings, .npz/.npy, Zarr stores that recorded their input;
    see `streamlab.adapters.SUPPORTED`). Other files are left alone."""
    found = []
    for entry in sorted(Path(archive).iterdir()):
        if entry.name.startswith(".") or entry.name.startswith(SUMMARY_PREFIX):
            continue
        try:
            kind = detect_format(entry)
        except SessionError:
            continue
        if kind == "numpy/zarr" and entry.is_dir() and not (entry / "input").is_dir():
            continue  # a store of outputs only: nothing to replay
        found.append(entry)
    return found


def fingerprint(session: Path) -> str:
    """Size and modification time (of the newest file, for a store folder): a session that is
    rewritten gets processed again."""
    files = [session] if session.is_file() else [p for p in session.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return f"{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"


def done_with(
    done: dict[str, Any] | None,
    mark: str,
    learners: list[str],
    session_options: dict[str, Any] | None,
) -> bool:
    """Whether a session's record says it was processed as it is now (`mark`), with these
    learners and reader options (other specs process it again)."""
    if done is None or done.get("fingerprint") != mark:
        return False
    return done.get("learners") == learners and done.get("session_options", {}) == (
        session_options or {}
    )


def read_state(store_dir: Path) -> dict[str, Any]:
    path = store_dir / STATE_FILE
    if not path.exists():
        return {"sessions": {}, "runs": []}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not readable JSON ({exc}); move it aside to reprocess every session"
        ) from exc


def write_state(store_dir: Path, state: dict[str, Any]) -> None:
    """Write the state file atomically (a crash leaves the old or the new one, never half)."""
    path = store_dir / STATE_FILE
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(partial, path)


@flow(name="streamlab-nightly-sessions")
def replay_sessions_fan_out(
    jobs: list[dict[str, str]],
    learners: list[str],
    options: dict[str, Any] | None = None,
    lockstep: bool = False,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Submit one task per session to this flow's task runner (or, with `lockstep`, one per
    group of same-shaped sessions, stepped as one batch); a session that still fails after its
    retries is reported, not fatal to the others."""
    if lockstep:
        return _fan_out_lockstep(jobs, learners, options, device)
    retrying = replay_one.with_options(retries=2, retry_delay_seconds=[2, 10])
    futures = [  # overwrite: a retry, or a session rewritten since, starts its store afresh
        retrying.submit(
            job["session"], job["store"], learners, overwrite=True, reader_options=options
        )
        for job in jobs
    ]
    results = []
    for index, (job, future) in enumerate(zip(jobs, futures, strict=True), start=1):
        try:
            results.append(future.result())
        except Exception as exc:  # the task's own error, after its retries
            results.append({**job, "error": f"{type(exc).__name__}: {exc}"})
        say_progress(index, len(jobs), results[-1])
    return results


def say_progress(index: int, total: int, result: dict[str, Any]) -> None:
    """One line on stderr per session as its result comes in (a night of sessions had been
    silent for minutes)."""
    name = Path(result["session"]).name
    if "error" in result:
        what = f"failed: {result['error']}"
    else:
        what = f"{result.get('samples', 0):,d} samples in {result.get('wall_s', 0.0):.1f} s"
    print(f"nightly: {index}/{total} {name}: {what}", file=sys.stderr, flush=True)


def _fan_out_lockstep(
    jobs: list[dict[str, str]], learners: list[str], options: dict[str, Any] | None, device: str
) -> list[dict[str, Any]]:
    """Group the sessions by shape and submit each group as one lockstep task; a session that
    cannot be read is reported alone, a group that fails reports each of its sessions."""
    results: dict[int, dict[str, Any]] = {}
    keys: dict[int, tuple[int, float | None]] = {}
    for i, job in enumerate(jobs):
        try:
            keys[i] = lockstep_key(open_session(job["session"], **(options or {})))
        except Exception as exc:  # unreadable: reported, the others go on
            results[i] = {**job, "error": f"{type(exc).__name__}: {exc}"}
    readable = sorted(keys)
    groups = [
        [readable[j] for j in group] for group in group_for_lockstep([keys[i] for i in readable])
    ]
    retrying = replay_group_lockstep.with_options(retries=2, retry_delay_seconds=[2, 10])
    futures = [
        retrying.submit(
            [jobs[i]["session"] for i in group],
            [jobs[i]["store"] for i in group],
            learners,
            len(group),
            overwrite=True,
            device=device,
            reader_options=options,
        )
        for group in groups
    ]
    for group, future in zip(groups, futures, strict=True):
        try:
            results.update(zip(group, future.result(), strict=True))
        except Exception as exc:  # the group's own error, after its retries
            for i in group:
                results[i] = {**jobs[i], "error": f"{type(exc).__name__}: {exc}"}
    return [results[i] for i in range(len(jobs))]


def task_runner(dask_address: str | None, max_workers: int) -> Any:
    """Threads on this machine, or the Dask cluster whose scheduler is at `dask_address`."""
    if not dask_address:
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if "://" not in dask_address:
        raise ConfigError(
            f"dask_address {dask_address!r} must be a scheduler address like tcp://host:8786"
        )
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=dask_address)


@flow(name="streamlab-nightly")
def nightly_flow(
    archive: str,
    store_dir: str,
    learners: list[str] | None = None,
    session_options: dict[str, Any] | None = None,
    dask_address: str | None = None,
    max_workers: int = 2,
    lockstep: bool = False,
    device: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """Replay every session in `archive` not yet processed into `<store_dir>/<name>.zarr` and
    write `nightly-<time>.json`/`.html` and `index.html` in `store_dir`; returns the summary.
    `session_options` are given to every session's reader (e.g. `{"bin_s": 0.05}` for spike
    times, `{"rate": 30}` for Suite2p folders without ops.npy). With `lockstep`, sessions of
    the same shape run as one batch of learners on `device` (many sessions on one GPU). A
    session counts as done only if it was processed unchanged with these learners and reader
    options; `force` processes every session again."""
    learners = list(learners or DEFAULT_LEARNERS)
    for spec in learners:
        parse_spec(spec)  # a ConfigError now, not in every task
    if not Path(archive).is_dir():
        raise ConfigError(f"archive {archive!r} is not a folder of sessions")
    if max_workers < 1:
        raise ConfigError(f"max_workers must be >= 1, got {max_workers}")
    stores = Path(confined_store(store_dir))
    stores.mkdir(parents=True, exist_ok=True)
    logger = get_run_logger()
    state = read_state(stores)
    started = datetime.now(UTC)
    jobs, skipped = [], []
    for session in find_sessions(archive):
        key, mark = str(session.resolve()), fingerprint(session)
        done = state["sessions"].get(key)
        if not force and done_with(done, mark, learners, session_options):
            skipped.append(str(session))
            continue
        jobs.append(
            {"session": str(session), "store": str(stores / f"{session.stem}.zarr"), "key": key}
        )
    logger.info("%d new session(s), %d already done", len(jobs), len(skipped))
    print(
        f"nightly: {len(jobs)} session(s) to process, {len(skipped)} already done",
        file=sys.stderr,
        flush=True,
    )
    clock = time.perf_counter()
    runner = task_runner(dask_address, max_workers)
    results = (
        replay_sessions_fan_out.with_options(task_runner=runner)(
            [{k: job[k] for k in ("session", "store")} for job in jobs],
            learners,
            session_options,
            lockstep,
            device,
        )
        if jobs
        else []
    )
    wall_s = time.perf_counter() - clock
    for job, result in zip(jobs, results, strict=True):
        if "error" not in result:
            state["sessions"][job["key"]] = {
                "fingerprint": fingerprint(Path(job["session"])),
                "store": job["store"],
                "finished": datetime.now(UTC).isoformat(),
                "learners": learners,
                "session_options": session_options or {},
            }
    for result in results:
        if "error" not in result:
            result.update(session_report(result["store"]))
    failed = [r for r in results if "error" in r]
    summary = {
        "started": started.isoformat(),
        "archive": str(archive),
        "learners": learners,
        "runner": (f"dask {dask_address}" if dask_address else f"threads x{max_workers}")
        + (f", lockstep on {device}" if lockstep else ""),
        "wall_s": wall_s,
        "processed": [r for r in results if "error" not in r],
        "failed": failed,
        "skipped": skipped,
    }
    name = f"{SUMMARY_PREFIX}{started.strftime('%Y%m%dT%H%M%S')}"
    (stores / f"{name}.json").write_text(json.dumps(summary, indent=1, default=str))
    (stores / f"{name}.html").write_text(summary_html(summary))
    state["runs"].append(
        {"summary": f"{name}.json", "processed": len(results) - len(failed), "failed": len(failed)}
    )
    write_state(stores, state)
    (stores / "index.html").write_text(index_html(stores))
    if failed:
        logger.error("%d session(s) failed: %s", len(failed), [r["session"] for r in failed])
    return summary


def session_report(store: str) -> dict[str, str]:
    """Draw the run report of one session's store beside it (`<name>-report/report.html`):
    `{"report": path}`, or `{"report_error": why}` when it could not be drawn (the store stays
    the night's result; its page says the report is missing and why)."""
    from streamlab.errors import StreamlabError
    from streamlab.report import write_report

    try:
        return {"report": str(write_report(store))}
    except (StreamlabError, OSError, ValueError) as exc:
        get_run_logger().warning("no report for %s: %s", store, exc)
        return {"report_error": f"{type(exc).__name__}: {exc}"}


def _report_link(result: dict[str, Any]) -> str:
    if "report" in result:
        page = Path(result["report"])
        return f"<a href='{html.escape(f'{page.parent.name}/{page.name}')}'>report</a>"
    return html.escape(result.get("report_error", ""))


def summary_html(summary: dict[str, Any]) -> str:
    """One night's page: a row per session with its metrics, failures with their errors."""
    rows = "".join(
        "<tr><td>{}</td><td>{:,}</td><td>{}</td><td>{}</td><td>{:.0f}</td><td>{:.1f}</td>"
        "<td><a href='{}'>store</a></td><td>{}</td></tr>".format(
            html.escape(Path(r["session"]).name),
            r["samples"],
            r["gaps"],
            r["rejects"],
            r["p99_us"],
            r["wall_s"],
            html.escape(Path(r["store"]).name),
            _report_link(r),
        )
        for r in summary["processed"]
    )
    failures = "".join(
        f"<li>{html.escape(r['session'])}: {html.escape(r['error'])}</li>"
        for r in summary["failed"]
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>streamlab nightly</title>"
        f"<h1>Nightly run {html.escape(summary['started'])}</h1>"
        f"<p>archive {html.escape(summary['archive'])}; learners "
        f"{html.escape(', '.join(summary['learners']))}; {html.escape(summary['runner'])}; "
        f"{summary['wall_s']:.1f} s; {len(summary['skipped'])} session(s) already done</p>"
        "<table border=1><tr><th>session</th><th>samples</th><th>gaps</th><th>rejects</th>"
        f"<th>p99 µs</th><th>wall s</th><th></th><th></th></tr>{rows}</table>"
        + (f"<h2>Failed</h2><ul>{failures}</ul>" if failures else "")
    )


def index_html(store_dir: Path) -> str:
    """Links to every night's page, newest first (each links its sessions' run reports)."""
    pages = sorted(store_dir.glob(f"{SUMMARY_PREFIX}*.html"), reverse=True)
    links = "".join(f"<li><a href='{p.name}'>{html.escape(p.stem)}</a></li>" for p in pages)
    return (
        "<!doctype html><meta charset='utf-8'><title>streamlab nightly runs</title>"
        f"<h1>Nightly runs</h1><ul>{links}</ul>"
    )


def next_run(cron: str, timezone: str, after: datetime) -> datetime:
    """The first time strictly after `after` that `cron` (in `timezone`) fires."""
    from prefect.server.schemas.schedules import CronSchedule

    try:
        schedule = CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:  # pydantic's message: keep its first reason, on one line
        reasons = [e.get("msg", "") for e in getattr(exc, "errors", list)()] or [str(exc)]
        raise ConfigError(
            f"cron {cron!r} in {timezone!r} is not a valid schedule ({reasons[0]}); give five "
            "fields, minute hour day month weekday, e.g. '0 2 * * *' for 02:00 daily"
        ) from None
    dates = asyncio.run(schedule.get_dates(n=1, start=after + timedelta(seconds=1)))
    return dates[0]


def serve_nightly(
    cron: str,
    timezone: str,
    parameters: dict[str, Any],
    *,
    max_runs: int | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `nightly_flow(**parameters)` each time `cron` fires, from this process: a schedule
    without a Prefect server or worker (Prefect's embedded API runs the flows, and its own
    scheduler needs a persistent server). A failed night is logged and the next one still runs.
    Returns the number of runs (only reached with `max_runs`)."""
    runs = 0
    due = next_run(cron, timezone, now())
    while max_runs is None or runs < max_runs:
        while (wait := (due - now()).total_seconds()) > 0:
            sleep(min(wait, 30.0))
        try:
            nightly_flow(**parameters)
        except Exception:  # one bad night must not end the schedule
            logging.getLogger("streamlab.schedule").exception("nightly run at %s failed", due)
        runs += 1
        if stopped_by_signal():  # Ctrl-C or SIGTERM stopped that night's runs: stop here too
            break
        due = next_run(cron, timezone, max(now(), due))
    return runs
