"""Closed-loop latency over loopback ZeroMQ: streamlab versus a bare pyzmq echo peer.

A driver process binds a PUB socket on a free loopback TCP port and publishes frames of one
sample each (`--channels` channels of `<u2` Poisson-ish counts) at `--rate` Hz, paced with
`perf_counter` (sleep until ~0.2 ms before each send, then spin). Each frame's send time is
recorded just before `Publisher.send`. Replies come back on a SUB socket connected to the peer's
output endpoint and are matched to their send time by `seq`; the round trip is

    publish -> peer receives -> (learner step) -> peer publishes back -> driver receives.

Two peers are measured with the same driver, message format and rate:

A. streamlab: `python -m streamlab attach IN --learner SPEC --publish OUT --device cpu ...`,
   which runs the learner on every sample and publishes its output (topic `streamlab/<name>`,
   carrying the input's `seq`).
B. echo: this script started as `--echo IN OUT`, a minimal pyzmq process that SUBs and re-PUBs
   every multipart message unchanged (no decoding).

Each pair is measured twice (`--spin`): with both peers sleeping in a blocking poll between
messages, and with both busy-waiting up to `--spin` seconds for the next one (`attach --spin`,
and the echo polling without timeout), which removes the wake-up of a sleeping thread from
every round trip at the cost of a core. Ratios compare peers run the same way.

Frames are sent from the start as warm-up until the first reply arrives (the peer has connected
and imported what it needs), then for 2 more seconds; warm-up samples are excluded. The driver
then sends for `--seconds`, waits briefly for stragglers, ends the stream with an eos and waits
for the peer to exit. Receiving is done in the pacing loop itself (select on the SUB socket's
file descriptor until the spin window, then non-blocking checks while spinning), so a reply is
time-stamped as soon as it arrives.

Printed for each peer: replies received, lost, and p50 / p99 / max latency in microseconds; then
the streamlab/echo ratios for p50 and p99, and a one-line JSON summary.

Run (from the repository root, with nothing else heavy running):

    python benchmarks/loopback_latency.py --seconds 30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

REPO_ROOT = Path(__file__).resolve().parent.parent
STREAM = "bench/spikes"
SPIN_NS = 200_000  # spin the last 0.2 ms before each send
WARMUP_AFTER_FIRST_REPLY_S = 2.0  # keep warming up this long after the peer first answers
MIN_WARMUP_SAMPLES = 1000  # and for at least this many samples
DRAIN_S = 2.0  # how long to wait for late replies after the last send
EXIT_TIMEOUT_S = 60.0  # how long the peer may take to exit after the eos


# -- the echo peer -----------------------------------------------------------------------------
def echo(in_endpoint: str, out_endpoint: str, idle_timeout: float = 30.0, spin: float = 0.0) -> int:
    """SUB on `in_endpoint`, re-PUB every multipart message unchanged on `out_endpoint`; with
    `spin` > 0, poll without timeout for up to `spin` s before each blocking poll.

    Exits after forwarding an eos (a cheap byte search of the header, no decoding), on SIGTERM,
    or after `idle_timeout` seconds without a message once something has arrived."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    pub = ctx.socket(zmq.PUB)
    try:
        for sock in (sub, pub):
            sock.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        pub.bind(out_endpoint)
        sub.connect(in_endpoint)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        last = None
        while True:
            if spin:
                spin_end = time.perf_counter() + spin
                while not sub.poll(0) and time.perf_counter() < spin_end:
                    pass
            if not sub.poll(100):
                if last is not None and time.monotonic() - last > idle_timeout:
                    return 1
                continue
            parts = sub.recv_multipart(copy=False)
            pub.send_multipart(parts, copy=False)
            last = time.monotonic()
            if len(parts) > 1 and b'"eos"' in parts[1].bytes:
                time.sleep(0.1)  # let the eos leave before the socket closes
                return 0
    finally:
        sub.close(linger=0)
        pub.close(linger=0)
        ctx.term()


# -- the driver --------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    sent: int
    count: int
    lost: int
    p50_us: float
    p99_us: float
    max_us: float
    mean_us: float
    send_slip_p99_us: float
    peer_output: str
    seq: np.ndarray  # measured samples' seq, and their latency in us (NaN: lost)
    latency_us: np.ndarray

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "count": self.count,
            "lost": self.lost,
            "p50_us": round(self.p50_us, 1),
            "p99_us": round(self.p99_us, 1),
            "max_us": round(self.max_us, 1),
            "mean_us": round(self.mean_us, 1),
            "send_slip_p99_us": round(self.send_slip_p99_us, 1),
        }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replies:
    """The driver's SUB socket: receives without blocking the pacing loop and records, per
    `seq`, the `perf_counter_ns` at which the first reply for that sample arrived."""

    def __init__(self, ctx: zmq.Context, endpoint: str, capacity: int) -> None:
        from streamlab.stream.protocol import Frame, decode

        self._decode = decode
        self._frame = Frame
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.fd = self.sock.getsockopt(zmq.FD)
        self.recv_ns = np.zeros(capacity, dtype=np.int64)
        self.first_reply_ns = 0
        self.n_frames = 0
        self.n_other = 0

    def drain(self) -> None:
        """Take every message that is ready now (never blocks)."""
        while self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            now = time.perf_counter_ns()
            message = self._decode(parts)
            if not isinstance(message, self._frame):
                self.n_other += 1  # hellos, eos
                continue
            self.n_frames += 1
            if 0 <= message.seq < len(self.recv_ns) and not self.recv_ns[message.seq]:
                self.recv_ns[message.seq] = now
                if not self.first_reply_ns:
                    self.first_reply_ns = now

    def wait_until(self, deadline_ns: int, spin_ns: int = SPIN_NS) -> None:
        """Receive until `deadline_ns`: select on the socket's fd (any timeout, sub-millisecond
        resolution) until `spin_ns` before the deadline, then spin with non-blocking checks."""
        while True:
            self.drain()
            remaining = deadline_ns - time.perf_counter_ns()
            if remaining <= 0:
                return
            if remaining > spin_ns:
                select.select([self.fd], [], [], (remaining - spin_ns) / 1e9)

    def close(self) -> None:
        self.sock.close(linger=0)


def _check_alive(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is not None:
        raise RuntimeError(
            f"peer exited early with code {proc.returncode}:\n{log.read_text(errors='replace')}"
        )


def run_scenario(name: str, args: argparse.Namespace, spin: float = 0.0) -> Result:
    """Drive one peer (`streamlab` or `echo`), busy-waiting `spin` s for each message or not,
    and measure the round trips."""
    from streamlab.stream.protocol import Frame
    from streamlab.stream.transport import Publisher

    rate, channels = float(args.rate), int(args.channels)
    period_ns = round(1e9 / rate)
    n_measure = round(args.seconds * rate)
    capacity = round((args.startup_timeout + WARMUP_AFTER_FIRST_REPLY_S + 5) * rate) + n_measure

    rng = np.random.default_rng(0)
    lam = rng.gamma(2.0, 10.0, channels) / rate  # per-sample means, ~20 Hz on average
    pool = rng.poisson(lam, size=(1000, 1, channels)).astype("<u2")
    send_ns = np.zeros(capacity, dtype=np.int64)
    slip_ns = np.zeros(capacity, dtype=np.int64)

    ctx = zmq.Context()
    publisher: Publisher | None = None
    replies: Replies | None = None
    proc: subprocess.Popen | None = None
    tmp = tempfile.TemporaryDirectory(prefix=f"loopback-{name}-")
    log = Path(tmp.name, "peer.log")
    try:
        publisher = Publisher("tcp://127.0.0.1:0", pattern="pub", hwm=100_000, context=ctx)
        in_ep = publisher.endpoint
        out_ep = f"tcp://127.0.0.1:{_free_port()}"
        replies = Replies(ctx, out_ep, capacity)
        if name == "streamlab":
            cmd = [
                sys.executable, "-m", "streamlab", "attach", in_ep,
                "--learner", args.learner,
                "--store", str(Path(tmp.name, "run.zarr")),
                "--publish", out_ep,
                "--until-eos", "--quiet", "--overwrite", "--device", "cpu",
                "--spin", str(spin),
            ]  # fmt: skip
        else:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--echo", in_ep, out_ep]
            cmd += ["--echo-spin", str(spin)]
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, stdin=None
            )

        meta = {"rate": rate, "kind": "spikes", "n_channels": channels}
        seq = 0
        start_ns = time.perf_counter_ns()
        next_hello_ns = start_ns
        next_check_ns = start_ns
        startup_deadline_ns = start_ns + int(args.startup_timeout * 1e9)
        first_measured: int | None = None
        end_seq: int | None = None
        while end_seq is None or seq < end_seq:
            due_ns = start_ns + seq * period_ns
            replies.wait_until(due_ns)
            now = time.perf_counter_ns()
            if first_measured is None and now >= next_hello_ns:
                # repeated during warm-up: the peer may connect after the first one
                publisher.hello(STREAM, seq, seq / rate, meta)
                next_hello_ns = now + 1_000_000_000
            if now >= next_check_ns:
                _check_alive(proc, log)
                next_check_ns = now + 1_000_000_000
            if first_measured is None:
                if replies.first_reply_ns:
                    warm_until = replies.first_reply_ns + int(WARMUP_AFTER_FIRST_REPLY_S * 1e9)
                    if now >= warm_until and seq >= MIN_WARMUP_SAMPLES:
                        first_measured, end_seq = seq, seq + n_measure
                elif now > startup_deadline_ns:
                    raise TimeoutError(
                        f"{name}: no reply within {args.startup_timeout:.0f} s of starting; "
                        f"peer output:\n{log.read_text(errors='replace')}"
                    )
            frame = Frame(STREAM, pool[seq % len(pool)], seq, seq / rate, "spikes", rate)
            t0 = time.perf_counter_ns()
            send_ns[seq] = t0
            slip_ns[seq] = t0 - due_ns
            publisher.send(frame)
            seq += 1

        assert first_measured is not None
        assert end_seq is not None
        drain_end = time.perf_counter_ns() + int(DRAIN_S * 1e9)
        while time.perf_counter_ns() < drain_end:
            replies.wait_until(min(drain_end, time.perf_counter_ns() + 10_000_000), spin_ns=0)
            if replies.recv_ns[first_measured:end_seq].all():
                break

        # end the stream; repeat the eos while waiting, in case one is dropped
        exit_deadline = time.monotonic() + EXIT_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < exit_deadline:
            publisher.eos(STREAM, end_seq, end_seq / rate)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
            replies.drain()
        if proc.poll() is None:
            raise TimeoutError(f"{name}: peer did not exit within {EXIT_TIMEOUT_S:.0f} s of eos")

        sent = end_seq - first_measured
        recv = replies.recv_ns[first_measured:end_seq]
        ok = recv > 0
        lat_us = (recv[ok] - send_ns[first_measured:end_seq][ok]) / 1e3
        if len(lat_us):
            p50, p99 = np.percentile(lat_us, [50, 99])
            mx, mean = float(lat_us.max()), float(lat_us.mean())
        else:
            p50 = p99 = mx = mean = float("nan")
        slip = np.percentile(slip_ns[first_measured:end_seq], 99) / 1e3
        return Result(
            name=name,
            sent=sent,
            count=int(ok.sum()),
            lost=int(sent - ok.sum()),
            p50_us=float(p50),
            p99_us=float(p99),
            max_us=mx,
            mean_us=mean,
            send_slip_p99_us=float(slip),
            peer_output=log.read_text(errors="replace").strip(),
            seq=np.arange(first_measured, end_seq),
            latency_us=np.where(ok, (recv - send_ns[first_measured:end_seq]) / 1e3, np.nan),
        )
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if replies is not None:
            replies.close()
        if publisher is not None:
            publisher.close(linger=0)
        ctx.term()
        tmp.cleanup()


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per peer")
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--rate", type=float, default=1000.0, help="frames (samples) per second")
    parser.add_argument("--learner", default="sm:n_components=4", help="streamlab learner spec")
    parser.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for a first reply"
    )
    parser.add_argument(
        "--only", choices=("streamlab", "echo"), default=None, help="measure one peer only"
    )
    parser.add_argument(
        "--save", metavar="FILE.npz", help="also save every measured sample's seq and latency"
    )
    parser.add_argument(
        "--spin",
        default="0,0.005",
        help="comma-separated busy-wait budgets in seconds, one measurement of each peer per "
        "value (0: sleep in a blocking poll)",
    )
    parser.add_argument("--echo", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--echo-spin", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.echo:
        return echo(*args.echo, spin=args.echo_spin)
    if args.seconds <= 0 or args.rate <= 0 or args.channels < 1:
        parser.error("--seconds, --rate and --channels must be positive")
    try:
        spins = [float(v) for v in args.spin.split(",")]
    except ValueError:
        parser.error(f"--spin takes comma-separated seconds, got {args.spin!r}")

    print(
        f"loopback closed-loop latency: {args.channels} channels <u2, 1 sample/frame, "
        f"{args.rate:g} Hz, {args.seconds:g} s measured per peer, learner {args.learner!r}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    names = [args.only] if args.only else ["streamlab", "echo"]
    results: dict[str, Result] = {}
    for spin in spins:
        print(f"peers {'busy-waiting ' + format(spin, 'g') + ' s' if spin else 'sleeping'}:")
        for name in names:
            result = run_scenario(name, args, spin)
            results[_key(name, spin)] = result
            _print_result(name, result)

    summary: dict[str, Any] = {
        "channels": args.channels,
        "rate": args.rate,
        "seconds": args.seconds,
        "learner": args.learner,
        "spins": spins,
        **{key: r.summary() for key, r in results.items()},
    }
    for spin in spins:
        ours, theirs = results.get(_key("streamlab", spin)), results.get(_key("echo", spin))
        if ours is None or theirs is None:
            continue
        suffix = _key("", spin)
        summary[f"ratio_p50{suffix}"] = round(_ratio(ours.p50_us, theirs.p50_us), 2)
        summary[f"ratio_p99{suffix}"] = round(_ratio(ours.p99_us, theirs.p99_us), 2)
        print(
            f"streamlab/echo{' (both spinning)' if spin else ''}: "
            f"p50 x{summary[f'ratio_p50{suffix}']:.2f}, p99 x{summary[f'ratio_p99{suffix}']:.2f}",
            flush=True,
        )
    if args.save:
        arrays = {}
        for key, r in results.items():
            arrays[f"{key}_seq"], arrays[f"{key}_latency_us"] = r.seq, r.latency_us
        np.savez(args.save, **arrays)
    print(json.dumps(summary), flush=True)
    return 0


def _key(name: str, spin: float) -> str:
    """Result key: the peer's name, with `_spin` when it busy-waited."""
    return f"{name}_spin" if spin else name


def _print_result(name: str, result: Result) -> None:
    print(
        f"{name:>9}: count {result.count} / {result.sent}, lost {result.lost}, "
        f"p50 {result.p50_us:.1f} us, p99 {result.p99_us:.1f} us, max {result.max_us:.1f} us "
        f"(mean {result.mean_us:.1f} us; "
        f"driver send slip p99 {result.send_slip_p99_us:.1f} us)",
        flush=True,
    )
    for line in result.peer_output.splitlines():
        print(f"{'':>11}peer: {line}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
