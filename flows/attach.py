"""The live flow: attach learners to a rig's stream until its eos, a duration, or cancellation,
writing the run's store and publishing outputs back when asked. The per-sample loop runs inside
one task (a stream is a task, a sample never is)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from streamlab.errors import ConfigError
from streamlab.learners import parse_spec
from streamlab.paths import confined_store
from streamlab.runner import AttachOptions, attach


@task(cache_policy=NO_CACHE, task_run_name="attach {endpoint}")
def attach_stream(
    endpoint: str, options: AttachOptions, seconds: float | None, until_eos: bool
) -> dict[str, Any]:
    """Run the pipeline on one stream; returns its final metrics."""
    progress = attach(endpoint, options, seconds=seconds, until_eos=until_eos)
    get_run_logger().info("%s: %s", endpoint, progress.line())
    return progress.to_dict()


@flow(name="streamlab-live")
def attach_flow(
    endpoint: str,
    store: str,
    learners: list[str] | None = None,
    seconds: float | None = None,
    until_eos: bool = True,
    pull: bool = False,
    publish: str | None = None,
    resume: bool = False,
    record_input: bool = True,
    checkpoint_every: int = 5000,
    calibrate: float | None = None,
) -> dict[str, Any]:
    """Attach `learners` (default `sm`) to the stream at `endpoint` into `store`: until its eos
    (`until_eos`), for `seconds`, or until the flow run is cancelled (the store then keeps its
    last checkpoint; rerun with `resume=True`). Resuming continues the store's own learners.
    With `calibrate`, the learners taking y get it for that many seconds of stream time only,
    then decode without it."""
    if seconds is None and not until_eos:
        raise ConfigError("give seconds, or until_eos=True, or both: otherwise the run never ends")
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"seconds must be > 0, got {seconds}")
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be >= 1 sample, got {checkpoint_every}")
    specs = [] if resume else list(learners or ["sm"])
    for spec in specs:
        parse_spec(spec)
    options = AttachOptions(
        store=confined_store(store),
        learners=specs,
        pattern="pull" if pull else "sub",
        publish=publish,
        resume=resume,
        record_input=record_input,
        checkpoint_every=checkpoint_every,
        calibrate=calibrate,
    )
    return attach_stream(endpoint, options, seconds, until_eos)
