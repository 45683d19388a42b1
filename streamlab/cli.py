"""The `streamlab` command: demo, sim, attach, replay, inspect, dashboard, report.

Errors print one line saying what was wrong and what to do, and exit non-zero (1 for a failed
run, 2 for bad usage). Heavy imports (torch, prefect) happen inside the commands that need them,
so `streamlab sim` starts quickly."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamlab.errors import ConfigError, StreamlabError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _stop_cleanly_on_signals()
    try:
        code = int(args.handler(args) or 0)
    except StreamlabError as exc:
        print(f"streamlab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"streamlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `streamlab inspect STORE | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    pipeline = sys.modules.get("streamlab.pipeline")  # not imported: no run (and no torch)
    if pipeline is not None and pipeline.stopped_by_signal():
        print(f"streamlab {args.command}: interrupted (stopped cleanly)", file=sys.stderr)
        return 130
    return code


def _stop_cleanly_on_signals() -> None:
    """Ctrl-C and SIGTERM (`timeout`, `kill`, systemd's stop) stop a command cleanly: running
    pipelines end after their current frame and close their stores `stopped` (raising
    KeyboardInterrupt inside a ZeroMQ call had aborted the process); a second signal, or one
    while no pipeline runs, interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(*_: Any) -> None:
        pipeline = sys.modules.get("streamlab.pipeline")  # not imported: no run to stop
        if pipeline is None or pipeline.stopped_by_signal() or not pipeline.stop_all():
            raise KeyboardInterrupt

    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="simulated rig -> ZeroMQ -> similarity matching -> Zarr, with a report"
    )
    demo.add_argument(
        "--seconds", type=float, default=20.0, help="how long the rig streams (default 20)"
    )
    demo.add_argument(
        "--store", default=None, help="Zarr store to write (default streamlab-demo/run-<time>.zarr)"
    )
    demo.add_argument("--channels", type=int, default=128, help="simulated neurons (default 128)")
    demo.add_argument("--rate", type=float, default=250.0, help="samples per second (default 250)")
    demo.set_defaults(handler=_cmd_demo)

    sim = sub.add_parser(
        "sim", help="publish a simulated population (Poisson spikes or calcium) over ZeroMQ"
    )
    sim.add_argument(
        "--publish", metavar="ENDPOINT", help="bind here and publish, e.g. tcp://127.0.0.1:5555"
    )
    sim.add_argument(
        "--out", metavar="FILE.npz", help="write the session to a file instead of publishing"
    )
    sim.add_argument("--channels", type=int, default=64)
    sim.add_argument("--latents", type=int, default=4)
    sim.add_argument(
        "--from",
        dest="from_session",
        metavar="RECORDING",
        help="publish this recording (any format replay reads) as a live rig, instead of a "
        "simulated population",
    )
    sim.add_argument(
        "--speed", default="realtime", help="with --from: 'realtime', 'max' or a factor"
    )
    sim.add_argument(
        "--bin", type=float, default=None, metavar="SECONDS", help="with --from: spike-count bin"
    )
    sim.add_argument(
        "--rate", type=float, default=None, help="samples per second (default 1000 simulated)"
    )
    sim.add_argument("--seconds", type=float, default=10.0)
    sim.add_argument("--kind", choices=("spikes", "calcium"), default="spikes")
    sim.add_argument("--firing-rate", type=float, default=20.0, help="mean firing rate in Hz")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--stream", default=None, help="stream name (default sim/<kind>)")
    sim.add_argument(
        "--push", action="store_true", help="PUSH (lossless, waits for a receiver) instead of PUB"
    )
    sim.add_argument("--fast", action="store_true", help="as fast as possible instead of real time")
    sim.add_argument("--frame-samples", type=int, default=1, help="samples per frame")
    sim.add_argument(
        "--hwm", type=int, default=10_000, help="frames queued per subscriber before PUB drops"
    )
    sim.add_argument(
        "--startup-delay", type=float, default=0.5, help="seconds to wait for subscribers"
    )
    sim.add_argument("--curve-secret", metavar="FILE", help="this rig's CURVE .key_secret")
    sim.add_argument(
        "--curve-allow", metavar="DIR", help="encrypt; let in only the public keys in DIR"
    )
    sim.set_defaults(handler=_cmd_sim)

    attach = sub.add_parser("attach", help="attach learners to a stream and write a Zarr store")
    attach.add_argument("endpoint", help="where the rig publishes, e.g. tcp://127.0.0.1:5555")
    _run_options(attach)
    attach.add_argument(
        "--pull", action="store_true", help="PULL (lossless replays) instead of SUB"
    )
    attach.add_argument("--topic", default="", help="SUB topic prefix (default: every stream)")
    attach.add_argument(
        "--hwm",
        type=int,
        default=10_000,
        help="frames the input socket may queue (default 10,000): bounds memory when the "
        "learners fall behind; over SUB what does not fit is dropped and recorded as a gap",
    )
    attach.add_argument(
        "--spin",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="busy-wait up to this long for each frame before sleeping (e.g. 0.005 for a 1 kHz "
        "closed loop): saves the wake-up of a sleeping thread on every sample, costs a core",
    )
    attach.add_argument("--until-eos", action="store_true", help="stop at the stream's eos")
    attach.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    attach.add_argument(
        "--resume", action="store_true", help="continue a killed run from its last checkpoint"
    )
    attach.add_argument(
        "--open-ephys",
        action="store_true",
        help="the endpoint is an Open Ephys GUI ZMQ Interface data socket (e.g. "
        "tcp://127.0.0.1:5556), not a streamlab stream",
    )
    attach.add_argument(
        "--heartbeat",
        default=None,
        metavar="ENDPOINT",
        help="Open Ephys: the plugin's heartbeat socket (default: the data port + 1)",
    )
    attach.set_defaults(handler=_cmd_attach)

    replay = sub.add_parser(
        "replay",
        help="replay a recording (NWB, Suite2p folder, .mat, .npz/.npy, Zarr) through the pipeline",
    )
    replay.add_argument(
        "session",
        help="an .nwb file, a Suite2p plane folder, a zebrafish .mat, a linear-track folder, a "
        ".npz/.npy file or a Zarr store with recorded input",
    )
    _run_options(replay)
    replay.add_argument(
        "--rate", type=float, default=None, help="sampling rate if the session lacks one"
    )
    replay.add_argument(
        "--bin",
        type=float,
        default=None,
        metavar="SECONDS",
        help="spike-count bin for spike times (NWB Units, linear track; default 0.1)",
    )
    replay.add_argument(
        "--series", default=None, metavar="NAME", help="NWB: replay this TimeSeries, not Units"
    )
    replay.add_argument(
        "--position",
        action="store_true",
        help="linear track: add the tracked x and y as channels (targets for y=x+y)",
    )
    replay.add_argument(
        "--speed",
        default="max",
        help="'max' (as fast as the learners go; default), 'realtime' (the recorded rate) or a "
        "factor of it (e.g. 2 for twice as fast)",
    )
    replay.add_argument("--realtime", action="store_true", help="the same as --speed realtime")
    replay.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="replay only the session's first SECONDS (e.g. the running part of the track)",
    )
    replay.set_defaults(handler=_cmd_replay)

    plant = sub.add_parser(
        "plant",
        help="serve the double-integrator plant in closed loop: observations and cost out, "
        "controls back (attach with --pull --learner bio_ofc:delay=D,y=cost --publish CONTROL)",
    )
    plant.add_argument("--publish", required=True, help="endpoint to bind for observations")
    plant.add_argument("--control", required=True, help="endpoint of the controller's output")
    plant.add_argument("--episodes", type=int, default=1000)
    plant.add_argument("--delay", type=int, default=1, help="sensory delay in steps")
    plant.add_argument("--learner", default="bio_ofc", help="name of the controlling learner")
    plant.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a control")
    plant.add_argument("--seed", type=int, default=0)
    plant.set_defaults(handler=_cmd_plant)

    keys = sub.add_parser("keys", help="CURVE key pairs for encrypted, authenticated streams")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_new = keys_sub.add_parser("new", help="write NAME.key (public) and NAME.key_secret")
    keys_new.add_argument("name")
    keys_new.add_argument("--dir", default="keys", help="directory for the files (default keys)")
    keys_new.set_defaults(handler=_cmd_keys_new)

    schedule = sub.add_parser(
        "schedule",
        help="run the nightly flow on a cron schedule (no Prefect server or worker needed)",
        description="Run the nightly flow on a schedule from this process: each time the cron "
        "fires it replays the new sessions of ARCHIVE into STORE_DIR. Keep the process running "
        "(a systemd unit, tmux); Ctrl-C stops it. With a Prefect server, use the deployments "
        "in deploy/prefect.yaml instead.",
    )
    schedule.add_argument("archive", help="folder the rig writes sessions into")
    schedule.add_argument("store_dir", help="folder for one store per session and the summaries")
    schedule.add_argument(
        "--learner", action="append", dest="learners", metavar="SPEC", help="as for attach"
    )
    schedule.add_argument("--cron", default="0 2 * * *", help="when (default 02:00 daily)")
    schedule.add_argument(
        "--timezone", default=None, help="IANA zone of the cron (default: this machine's)"
    )
    schedule.add_argument("--dask", metavar="ADDRESS", help="fan out over this Dask scheduler")
    schedule.add_argument(
        "--max-runs", type=int, default=None, help="stop after this many runs (default: never)"
    )
    schedule.set_defaults(handler=_cmd_schedule)

    nightly = sub.add_parser(
        "nightly",
        help="run the nightly flow once now: replay the new sessions of an archive folder",
        description="Replay every session in ARCHIVE not yet processed into STORE_DIR (one "
        "store each, a summary page, index.html), on local threads or a Dask cluster.",
    )
    nightly.add_argument("archive", help="folder of recorded sessions")
    nightly.add_argument("store_dir", help="folder for one store per session and the summaries")
    nightly.add_argument(
        "--learner", action="append", dest="learners", metavar="SPEC", help="as for attach"
    )
    nightly.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="a Dask scheduler (tcp://host:8786), or 'local' for a LocalCluster on this machine",
    )
    nightly.add_argument(
        "--workers", type=int, default=2, help="threads, or LocalCluster workers (default 2)"
    )
    nightly.add_argument(
        "--lockstep",
        action="store_true",
        help="step sessions of the same shape as one batch of learners (many sessions on one "
        "GPU at the cost of a few); one store per session all the same",
    )
    nightly.add_argument(
        "--device", default="auto", help="torch device with --lockstep (auto, cpu, cuda)"
    )
    nightly.add_argument(
        "--force",
        action="store_true",
        help="process every session again, done or not (a session done with other --learner "
        "specs is processed again without it)",
    )
    nightly.set_defaults(handler=_cmd_nightly)

    dashboard = sub.add_parser(
        "dashboard",
        help="a live page in the browser: learners' outputs, the loop's health, the input",
        description="Serve a live dashboard on localhost: subscribe to a running pipeline's "
        "outputs (--listen, the endpoint given to `attach --publish`) or follow a run store as "
        "it is written (--store). Open the printed address in a browser.",
    )
    dashboard.add_argument(
        "--listen", metavar="ENDPOINT", help="the endpoint of `attach --publish` to subscribe to"
    )
    dashboard.add_argument("--store", metavar="PATH", help="a run store to follow instead")
    dashboard.add_argument("--port", type=int, default=5006, help="HTTP port (default 5006)")
    dashboard.add_argument(
        "--address", default="127.0.0.1", help="address to serve on (default 127.0.0.1)"
    )
    dashboard.add_argument(
        "--window", type=int, default=2000, help="samples each learner's plot keeps (default 2000)"
    )
    dashboard.set_defaults(handler=_cmd_dashboard)

    report = sub.add_parser(
        "report", help="an HTML report of one run: learning curves, latents, latency, events"
    )
    report.add_argument("store", help="the run store (a .zarr directory)")
    report.add_argument(
        "--out", default=None, help="folder for report.html and its PNGs (default STORE-report)"
    )
    report.set_defaults(handler=_cmd_report)

    score = sub.add_parser(
        "score",
        help="score a calibrated run's decoders on the decoded part, beside offline baselines",
    )
    score.add_argument("store", help="a run store made with --calibrate and --record-input")
    score.add_argument(
        "--no-shift-control",
        action="store_true",
        help="skip the shift control (rerunning each decoder on spikes shifted against labels)",
    )
    score.set_defaults(handler=_cmd_score)

    inspect = sub.add_parser(
        "inspect", help="what a store holds: learners, rows, gaps, rejects, status"
    )
    inspect.add_argument("path")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(handler=_cmd_inspect)
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--learner",
        action="append",
        default=[],
        metavar="SPEC",
        help="name or name:key=value,... (e.g. sm:n_components=4); repeat for several",
    )
    parser.add_argument(
        "--store", required=True, help="Zarr store path (a directory, e.g. run.zarr)"
    )
    parser.add_argument(
        "--publish", default=None, metavar="ENDPOINT", help="publish outputs back here (PUB)"
    )
    parser.add_argument(
        "--record-input", action="store_true", help="also store the raw input frames"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=5000,
        metavar="N",
        help="samples between checkpoints (default 5000)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        type=int,
        default=10,
        metavar="N",
        help="keep the newest N (0: all; default 10)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument(
        "--device", default="auto", help="torch device for the learners (auto, cpu, cuda)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the learners' random generators"
    )
    parser.add_argument(
        "--calibrate",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give the learners taking y their labels only for the first SECONDS of stream "
        "time, then decode without them (the y channels are still stored as the truth; "
        "`streamlab score STORE` scores the decoded part)",
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress line")
    parser.add_argument(
        "--curve-secret", metavar="FILE", help="this run's CURVE key pair (NAME.key_secret)"
    )
    parser.add_argument(
        "--curve-server-key",
        metavar="FILE",
        help="the rig's CURVE public key: encrypt and authenticate the input",
    )
    parser.add_argument(
        "--curve-allow",
        metavar="DIR",
        help="encrypt --publish outputs; let in only the public keys in DIR",
    )


def _options(args: argparse.Namespace, pattern: str) -> Any:
    from streamlab.runner import AttachOptions

    if not args.learner and not getattr(args, "resume", False):
        raise ConfigError("give at least one --learner, e.g. --learner sm:n_components=4")
    return AttachOptions(
        store=args.store,
        learners=args.learner,
        pattern=pattern,
        topic=getattr(args, "topic", ""),
        hwm=getattr(args, "hwm", 10_000),
        spin=getattr(args, "spin", 0.0),
        publish=args.publish,
        resume=getattr(args, "resume", False),
        overwrite=args.overwrite,
        record_input=args.record_input,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        device=args.device,
        seed=args.seed,
        calibrate=args.calibrate,
        curve_secret=args.curve_secret,
        curve_server_key=args.curve_server_key,
        curve_allow=args.curve_allow,
    )


def _cmd_attach(args: argparse.Namespace) -> int:
    from streamlab.runner import attach

    options = _options(args, "pull" if args.pull or args.open_ephys else "sub")
    if args.seconds is None and (args.open_ephys or not args.until_eos):
        print("attach: running until interrupted (Ctrl-C) ...", file=sys.stderr)
    printer = ProgressPrinter(quiet=args.quiet, source=args.endpoint)
    bridge = None
    endpoint = args.endpoint
    if args.open_ephys:
        # the plugin's per-channel messages, regrouped into frames and passed on over a
        # loopback PUSH socket, so the run takes the same path (and gap checks) as any stream
        from streamlab.adapters.open_ephys import Bridge

        if args.pull or args.topic:
            raise ConfigError("--open-ephys subscribes to the plugin itself: drop --pull/--topic")
        bridge = Bridge(args.endpoint, heartbeat=args.heartbeat).start()
        endpoint = bridge.endpoint
        print(f"attach: Open Ephys data {args.endpoint} via {endpoint}", file=sys.stderr)
    elif args.heartbeat:
        raise ConfigError("--heartbeat is for --open-ephys")
    try:
        progress = attach(
            endpoint,
            options,
            seconds=args.seconds,
            until_eos=args.until_eos and not args.open_ephys,
            on_progress=printer,
            on_pipeline=lambda pipeline: _listening(pipeline, args.endpoint),
        )
    finally:
        if bridge is not None:
            bridge.close()
    printer.finish(progress, args.store)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from streamlab.adapters import open_session
    from streamlab.runner import replay

    session = open_session(
        args.session,
        rate=args.rate,
        bin_s=args.bin,
        series=args.series,
        position=args.position or None,
    )
    if args.duration is not None:
        session = session.head(args.duration)
    speed = _speed("realtime" if args.realtime else args.speed)
    printer = ProgressPrinter(quiet=args.quiet)
    progress = replay(
        session,
        _options(args, "pull"),
        realtime=speed is not None,
        speed=speed or 1.0,
        on_progress=printer,
    )
    printer.finish(progress, args.store)
    return 0


def _speed(text: str) -> float | None:
    """--speed: None for 'max' (no pacing), 1.0 for 'realtime', else a positive factor."""
    if text == "max":
        return None
    if text == "realtime":
        return 1.0
    try:
        factor = float(text)
    except ValueError:
        factor = -1.0
    if not factor > 0:
        raise ConfigError(f"--speed {text!r}: give 'max', 'realtime' or a positive factor like 2")
    return factor


def _cmd_sim(args: argparse.Namespace) -> int:
    from streamlab.sim.lds import LatentPoissonPopulation

    if bool(args.publish) == bool(args.out):
        raise ConfigError("give exactly one of --publish ENDPOINT or --out FILE.npz")
    if args.from_session:
        return _publish_recording(args)
    args.rate = 1000.0 if args.rate is None else args.rate
    population = LatentPoissonPopulation(
        n_neurons=args.channels,
        n_latents=args.latents,
        rate=args.rate,
        seed=args.seed,
        kind=args.kind,
        firing_rate=args.firing_rate,
    )
    stream = args.stream or f"sim/{args.kind}"
    if args.out:
        import numpy as np

        from streamlab.sessions import Session, save_session

        data, _ = population.blocks(round(args.seconds * args.rate))
        save_session(
            args.out,
            Session(
                np.concatenate(data),
                args.rate,
                args.kind,
                stream=stream,
                meta=population.hello_meta(),
            ),
        )
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    from streamlab.sim.rig import run_rig

    signal.signal(signal.SIGTERM, _raise_interrupt)
    sent = run_rig(
        args.publish,
        population,
        seconds=args.seconds,
        stream=stream,
        pattern="push" if args.push else "pub",
        realtime=not args.fast,
        frame_samples=args.frame_samples,
        startup_delay=args.startup_delay,
        hwm=args.hwm,
        curve=_server_curve(args),
        on_bound=lambda ep: print(f"sim: publishing {stream} on {ep}", file=sys.stderr, flush=True),
    )
    print(f"sim: sent {sent} samples", file=sys.stderr)
    return 0


def _publish_recording(args: argparse.Namespace) -> int:
    """`sim --from`: a recorded session played to subscribers as a live rig would."""
    from streamlab.adapters import open_session
    from streamlab.stream import Publisher, play_session

    if args.out:
        raise ConfigError("--from publishes a recording; use it with --publish, not --out")
    session = open_session(args.from_session, rate=args.rate, bin_s=args.bin)
    speed = None if args.fast else _speed(args.speed)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    pattern = "push" if args.push else "pub"
    with Publisher(
        args.publish, pattern=pattern, hwm=args.hwm, curve=_server_curve(args)
    ) as publisher:
        print(f"sim: publishing {session.stream} on {publisher.endpoint}", file=sys.stderr)
        time.sleep(args.startup_delay)
        sent = play_session(
            publisher,
            session,
            realtime=speed is not None,
            speed=speed or 1.0,
            frame_samples=args.frame_samples,
            hello_every=1.0,
        )
    print(f"sim: sent {sent} samples", file=sys.stderr)
    return 0


def _cmd_plant(args: argparse.Namespace) -> int:
    import numpy as np

    from streamlab.sim.closed_loop import serve_plant
    from streamlab.sim.plant import double_integrator, lqg_cost

    signal.signal(signal.SIGTERM, _raise_interrupt)
    costs = serve_plant(
        double_integrator(args.delay, seed=args.seed),
        args.publish,
        args.control,
        args.episodes,
        control_topic=f"streamlab/{args.learner}",
        timeout=args.timeout,
        on_bound=lambda ep: print(f"plant: observations on {ep}", file=sys.stderr, flush=True),
    )
    optimum = lqg_cost(double_integrator(args.delay))
    tenth = max(len(costs) // 10, 1)
    print(
        f"plant: {len(costs)} episodes; mean cost, first tenth {np.mean(costs[:tenth]):.2f}, "
        f"last tenth {np.mean(costs[-tenth:]):.2f}; LQG optimum {optimum:.2f}",
        file=sys.stderr,
    )
    return 0


def _server_curve(args: argparse.Namespace) -> Any:
    from streamlab.stream.security import CurveServer

    if args.curve_allow is None:
        return None
    if args.curve_secret is None:
        raise ConfigError("--curve-allow needs this side's key pair: --curve-secret FILE")
    return CurveServer(args.curve_secret, args.curve_allow)


def _cmd_keys_new(args: argparse.Namespace) -> int:
    from streamlab.stream.security import new_keys

    public, secret = new_keys(args.name, args.dir)
    print(f"public key (give to peers): {public}")
    print(f"secret key (keep private): {secret}")
    return 0


def _quiet_offline_prefect() -> None:
    """Prefect's embedded API, offline and quiet (unless the user set these); its first start
    on 2 cores can take ~20 s, past Prefect's default timeout."""
    for key, value in {
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }.items():
        os.environ.setdefault(key, value)


def _cmd_demo(args: argparse.Namespace) -> int:
    _quiet_offline_prefect()
    print("demo: starting Prefect's embedded API and the simulated rig ...", file=sys.stderr)
    from streamlab.demo import default_store_path
    from streamlab.flows.demo import demo_flow

    store = args.store or str(default_store_path())
    result = demo_flow(seconds=args.seconds, store=store, channels=args.channels, rate=args.rate)
    print(result["summary"])
    return 0 if result["status"] == "complete" else 1


def _cmd_schedule(args: argparse.Namespace) -> int:
    _quiet_offline_prefect()
    from streamlab.flows.nightly import DEFAULT_LEARNERS, next_run, serve_nightly
    from streamlab.learners import parse_spec

    learners = args.learners or DEFAULT_LEARNERS
    for spec in learners:
        parse_spec(spec)
    if not Path(args.archive).is_dir():
        raise ConfigError(f"archive {args.archive!r} is not a folder")
    timezone = args.timezone or _local_timezone()
    from datetime import UTC, datetime

    first = next_run(args.cron, timezone, datetime.now(UTC))  # a ConfigError if invalid
    print(
        f"streamlab schedule: nightly flow at {args.cron!r} ({timezone}), next {first}; "
        "Ctrl-C stops",
        flush=True,
    )
    serve_nightly(
        args.cron,
        timezone,
        {
            "archive": str(Path(args.archive).resolve()),
            "store_dir": str(Path(args.store_dir).resolve()),
            "learners": learners,
            "dask_address": args.dask,
        },
        max_runs=args.max_runs,
    )
    return 0


def _cmd_nightly(args: argparse.Namespace) -> int:
    import contextlib

    _quiet_offline_prefect()

    from streamlab.flows.nightly import nightly_flow

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    with contextlib.ExitStack() as stack:
        address = args.dask
        if address == "local":
            from distributed import LocalCluster

            logging.getLogger("distributed").setLevel(logging.WARNING)
            cluster = LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            )
            stack.enter_context(cluster)
            address = cluster.scheduler_address
        summary = nightly_flow(
            args.archive,
            args.store_dir,
            learners=args.learners,
            dask_address=address,
            max_workers=args.workers,
            lockstep=args.lockstep,
            device=args.device,
            force=args.force,
        )
    print(
        f"nightly: {len(summary['processed'])} processed, {len(summary['failed'])} failed, "
        f"{len(summary['skipped'])} already done, {summary['wall_s']:.1f} s on "
        f"{summary['runner']}; see {Path(args.store_dir) / 'index.html'}"
    )
    for failure in summary["failed"]:
        print(f"  failed: {failure['session']}: {failure['error']}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _local_timezone() -> str:
    """This machine's IANA time zone name (from /etc/localtime), or UTC."""
    try:
        target = os.path.realpath("/etc/localtime")
        return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "UTC"
    except OSError:
        return "UTC"


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from streamlab.dashboard.server import feed_factory, serve

    make_feed = feed_factory(args.listen, args.store, args.window)
    title = f"streamlab: {args.listen or args.store}"
    serve(make_feed, port=args.port, address=args.address, title=title, window=args.window)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from streamlab.report import write_report

    html_path = write_report(args.store, args.out)
    print(f"report: {html_path}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from streamlab.scoring import score_store

    for name, table in score_store(args.store, shift_control=not args.no_shift_control).items():
        print(f"decoder {name}: {table.format()}\n")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from streamlab.store.inspect import describe, describe_text

    info = describe(args.path)
    print(json.dumps(info, indent=2, default=str) if args.json else describe_text(info))
    return 0


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _listening(pipeline: Any, endpoint: str) -> None:
    """Once the input socket is open: say where the run waits."""
    print(f"attach: listening at {endpoint}; waiting for the first frame", file=sys.stderr)


class ProgressPrinter:
    """Prints the live progress line to stderr (rewriting it on a terminal); `source` (an
    endpoint) names where a run that has received nothing yet is waiting."""

    def __init__(self, quiet: bool = False, stream: Any = None, source: str | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.source = source

    def __call__(self, progress: Any) -> None:
        if self.quiet:
            return
        end = "\r" if self.tty else "\n"
        print(progress.line(self.source), end=end, file=self.stream, flush=True)

    def finish(self, progress: Any, store: str) -> None:
        if self.tty and not self.quiet:
            print(file=self.stream)
        if progress.frames == 0:
            where = f" at {self.source}" if self.source else ""
            print(
                f"done: no stream arrived{where} in {progress.elapsed_s:.1f} s (is the rig "
                f"running and bound there?); store {store}",
                file=self.stream,
            )
            return
        joined = f"; first sample seq {progress.first_seq}" if progress.first_seq else ""
        if progress.max_behind_s >= 0.5:
            joined += f"; at most {progress.max_behind_s:.1f} s behind the source"
        print(
            f"done: {progress.samples:,d} samples in {progress.elapsed_s:.1f} s; latency p50 "
            f"{progress.p50_us:.0f} us, p99 {progress.p99_us:.0f} us; gaps {progress.gaps} "
            f"({progress.missing} samples lost){joined}; rejects {progress.rejects}; "
            f"store {store}",
            file=self.stream,
        )


def _version() -> str:
    from streamlab import __version__

    return f"streamlab {__version__}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
