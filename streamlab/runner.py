"""Whole runs, as the CLI and the Prefect flows start them: attach to a stream (live or a
replay) with learners built from specs, a Zarr run store (new or resumed) and optional output
publishing."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import zmq

from streamlab.errors import ConfigError, StoreError
from streamlab.learners import LearnerSpec, build_learners, learner_targets, parse_spec
from streamlab.metrics import Progress
from streamlab.pipeline import Pipeline, ResumePoint, check_calibrate
from streamlab.sessions import Session
from streamlab.sinks import Sink, StreamInfo, ZarrSink, ZmqOutputSink
from streamlab.store.run_store import RunStore
from streamlab.store.writer import refuse_in_writer_process
from streamlab.stream import Publisher, ZmqSource, play_session
from streamlab.stream.security import CurveClient, CurveServer


@dataclass
class AttachOptions:
    """Everything `attach` needs besides the endpoint; the CLI flags map onto it one to one."""

    store: str
    learners: list[str]
    pattern: Literal["sub", "pull"] = "sub"
    topic: str = ""
    hwm: int = 10_000
    spin: float = 0.0
    publish: str | None = None
    resume: bool = False
    overwrite: bool = False
    record_input: bool = False
    checkpoint_every: int = 5000
    keep_checkpoints: int = 10
    device: str = "auto"
    seed: int | None = 0
    calibrate: float | None = None  # seconds of stream time with y; then predict only
    curve_secret: str | None = None
    curve_server_key: str | None = None
    curve_allow: str | None = None
    replaying: bool = False  # set by `replay`: a run that `--resume` cannot continue

    def input_curve(self) -> CurveClient | None:
        """CURVE for the input socket: on when the rig's public key is given."""
        if self.curve_server_key is None:
            return None
        return CurveClient(_needs_secret(self.curve_secret), self.curve_server_key)

    def output_curve(self) -> CurveServer | None:
        """CURVE for the output publisher: on when an allow directory is given."""
        if self.curve_allow is None:
            return None
        return CurveServer(_needs_secret(self.curve_secret), self.curve_allow)


def _needs_secret(secret: str | None) -> str:
    if secret is None:
        raise ConfigError(
            "CURVE needs this run's own key pair: --curve-secret NAME.key_secret "
            "(make one with `streamlab keys new NAME`)"
        )
    return secret


def attach(
    endpoint: str,
    options: AttachOptions,
    *,
    seconds: float | None = None,
    until_eos: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    on_pipeline: Callable[[Pipeline], None] | None = None,
) -> Progress:
    """Connect to `endpoint`, run the learners and write the store; returns the final metrics.
    With `options.resume` the store's last checkpoint is loaded and the run goes on from it.

    Everything that can fail is tried before a new store is made (the options, the learners'
    parameters, binding `--publish`), so a failed start leaves nothing that blocks a retry."""
    _check_options(options)
    fresh = _new_learners(options) if not options.resume else None  # their checks run here
    return _attach(endpoint, options, fresh, seconds, until_eos, on_progress, on_pipeline)


def _attach(
    endpoint: str,
    options: AttachOptions,
    fresh: dict[str, Any] | None,
    seconds: float | None = None,
    until_eos: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    on_pipeline: Callable[[Pipeline], None] | None = None,
) -> Progress:
    """`attach` once its options are checked and a new run's learners built (`fresh`)."""
    with ZmqSource(
        endpoint,
        pattern=options.pattern,
        topic=options.topic,
        hwm=options.hwm,
        curve=options.input_curve(),
        spin=options.spin,
    ) as source:
        output: ZmqOutputSink | None = None
        try:
            if options.publish:  # bound before the store exists: a busy port fails first
                specs = [parse_spec(spec) for spec in options.learners]
                if options.resume:
                    specs = _stored_specs(options.store)
                output = ZmqOutputSink(
                    options.publish, curve=options.output_curve(), targets=learner_targets(specs)
                )
            store, learners, resume = _open_run(endpoint, options, fresh)
        except BaseException:
            if output is not None:
                output.publisher.close(linger=0)
            raise
        config = store.attrs["streamlab"]["config"]
        # a resumed run records its input as the run it continues did (a calibrated run's
        # score needs the input of every sample)
        record_input = options.record_input or bool(config.get("record_input"))
        sinks: list[Sink] = [
            ZarrSink(store, record_input=record_input, keep_checkpoints=options.keep_checkpoints)
        ]
        targets = learner_targets(config["learners"])
        if output is not None:  # first: outputs go back before the store's bookkeeping
            sinks.insert(0, output)
        pipeline = Pipeline(
            source,
            learners,
            sinks,
            checkpoint_every=options.checkpoint_every,
            on_progress=on_progress,
            resume=resume,
            targets=targets,
            calibrate=config.get("calibrate"),
            calibration_end_t=_calibration_end(store, config) if resume is not None else None,
        )
        if on_pipeline is not None:
            on_pipeline(pipeline)
        return pipeline.run(seconds=seconds, until_eos=until_eos)


def _new_learners(options: AttachOptions) -> dict[str, Any]:
    """The learners of a new run, built (so their parameter checks run) before any socket
    opens or any store is made."""
    specs = [parse_spec(spec) for spec in options.learners]
    return build_learners(specs, device=options.device, seed=options.seed)


def _stored_specs(path: str) -> list[LearnerSpec]:
    """The learner specs a stored run was started with."""
    config = RunStore.open(path).attrs["streamlab"]["config"]
    return [parse_spec(s) for s in config["learners"]]


def _check_options(options: AttachOptions) -> None:
    """What can be checked before any socket opens (an error raised beside live sockets and
    a feeding thread is an error path ZeroMQ has aborted the process on)."""
    refuse_in_writer_process()
    if options.hwm < 1:
        raise ConfigError(f"hwm must be at least 1 frame, got {options.hwm}")
    if not options.resume:
        specs = [parse_spec(spec) for spec in options.learners]
        check_calibrate(options.calibrate, learner_targets(specs))
        RunStore.check_new(
            options.store, overwrite=options.overwrite, resumable=not options.replaying
        )


def _open_run(
    endpoint: str, options: AttachOptions, fresh: dict[str, Any] | None
) -> tuple[RunStore, dict[str, Any], ResumePoint | None]:
    """The store and learners of the run: `fresh` learners and a new store, or, with
    `options.resume`, the stored run's learners at its last checkpoint."""
    specs = [parse_spec(spec) for spec in options.learners]
    if fresh is not None:
        config = {
            "endpoint": endpoint,
            "learners": [str(s) for s in specs],
            "pattern": options.pattern,
            "topic": options.topic,
            "checkpoint_every": options.checkpoint_every,
            "record_input": options.record_input,
            "device": options.device,
            "seed": options.seed,
            "calibrate": options.calibrate,
        }
        store = RunStore.create(
            options.store,
            config=config,
            source={"endpoint": endpoint},
            overwrite=options.overwrite,
            resumable=not options.replaying,
        )
        return store, fresh, None
    store = RunStore.open(options.store, mode="r+")
    config = store.attrs["streamlab"]["config"]
    stored = [parse_spec(s) for s in config["learners"]]
    if specs and [str(s) for s in specs] != [str(s) for s in stored]:
        raise StoreError(
            f"--resume with learners {[str(s) for s in specs]} but the store ran "
            f"{config['learners']}; "
            "omit --learner to resume with the stored ones"
        )
    if options.calibrate is not None and options.calibrate != config.get("calibrate"):
        raise StoreError(
            f"--resume with --calibrate {options.calibrate} but the store ran with calibrate="
            f"{config.get('calibrate')}; omit --calibrate to resume with the stored one"
        )
    overrides = {"device": options.device, "seed": config.get("seed")}
    learners = build_learners(stored, **overrides)
    return store, learners, _resume_point(store, learners)


def _resume_point(store: RunStore, learners: dict[str, Any]) -> ResumePoint | None:
    stream = store.attrs.get("stream")
    first_rows = {name: store.learner(name).read("seq", 0, 1) for name in store.learner_names()}
    checkpoint = store.prepare_resume()
    if stream is None:
        return None  # the run died before its first frame: start as new
    info = StreamInfo(**stream)
    if checkpoint is None:
        firsts = [int(seq[0]) for seq in first_rows.values() if len(seq)]
        return ResumePoint(info, min(firsts)) if firsts else None
    for name, learner in learners.items():
        learner.load_state_dict(store.load_state(name, checkpoint.seq))
    return ResumePoint(info, checkpoint.seq + 1)


def _calibration_end(store: RunStore, config: dict[str, Any]) -> float | None:
    """A resumed run's calibration boundary: the stored one, else the first stored sample's
    time plus the calibration seconds (None: no calibration, or no sample stored yet)."""
    seconds = config.get("calibrate")
    if seconds is None:
        return None
    stored = store.attrs.get("calibration")
    if stored:
        return float(stored["end_t"])
    firsts = [store.learner(name).read("t", 0, 1) for name in store.learner_names()]
    firsts = [float(t[0]) for t in firsts if len(t)]
    return min(firsts) + float(seconds) if firsts else None


def block_stop_signals() -> None:
    """Keep Ctrl-C and SIGTERM off the calling (non-main) thread, so the kernel delivers them
    to the main thread, whose handler stops the run: one landing in a thread blocked inside a
    ZeroMQ call aborted the process (`Assertion failed: pfd.revents & POLLIN`)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def replay(
    session: Session,
    options: AttachOptions,
    *,
    realtime: bool = False,
    speed: float = 1.0,
    frame_samples: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Play `session` over a loopback PUSH socket into `attach` (PULL), so a replay takes the
    same path as a live stream and loses nothing."""
    options = dataclasses.replace(options, pattern="pull", topic="", replaying=True)
    _check_options(options)
    fresh = _new_learners(options)  # their parameter checks, before the feeding thread starts
    publisher = Publisher("tcp://127.0.0.1:0", pattern="push", send_timeout=60.0)
    stop = threading.Event()
    failure: list[BaseException] = []

    def feed() -> None:
        block_stop_signals()
        try:
            play_session(
                publisher,
                session,
                realtime=realtime,
                speed=speed,
                frame_samples=frame_samples,
                stop=stop,
            )
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)

    def with_total(progress: Progress) -> None:  # a replay knows its length: progress has an ETA
        progress.total = session.n_samples
        if on_progress is not None:
            on_progress(progress)

    feeder = threading.Thread(target=feed, name="streamlab-replay", daemon=True)
    feeder.start()
    try:
        return _attach(publisher.endpoint, options, fresh, on_progress=with_total)
    finally:
        stop.set()
        _join_feeder(feeder, publisher.endpoint)
        publisher.close(linger=0)
        if failure:
            raise failure[0]


def _join_feeder(feeder: threading.Thread, endpoint: str) -> None:
    """Wait for the feeding thread to see `stop`. A run that stopped early has closed its PULL
    socket, which leaves the feeder blocked in a PUSH send: a drain connected meanwhile takes
    that message, so the feeder returns before the publisher is closed (closing it under a
    blocked send aborted the process in ZeroMQ)."""
    context = zmq.Context.instance()
    drain = context.socket(zmq.PULL)
    drain.setsockopt(zmq.LINGER, 0)
    drain.connect(endpoint)
    try:
        feeder.join(timeout=30)
    finally:
        drain.close(linger=0)


__all__ = ["AttachOptions", "LearnerSpec", "attach", "replay"]
