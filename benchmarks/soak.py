"""Soak: a simulated rig streams 384 channels at 1 kHz over PUSH/PULL into `streamlab attach`
with three learners and checkpointing, for `--seconds` (30 minutes by default). The driver
samples the attach process's resident memory (VmRSS, from /proc) every second and, at the end,
reads the run's metrics from the store.

Printed: whether the rig kept real time (over PUSH/PULL a slower consumer slows the rig instead
of losing samples; a machine busy with other work shows it here), RSS after warm-up (the first
10% of the run) and at the end, its growth per minute over the steady part (a least-squares
slope; flat means no leak), samples, gaps and missing samples (must be 0 over PUSH/PULL), p50/p99
latency of the first and last tenth of the samples, and a one-line JSON summary. Exits non-zero
if samples were lost or RSS grew by more than `--max-growth-mb-per-min`.

Run (from the repository root, with nothing else heavy running):

    python benchmarks/soak.py                # 30 minutes
    python benchmarks/soak.py --seconds 60   # the CI version (tests/test_soak.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from streamlab.metrics import resident_mb

LEARNERS = ["sm:n_components=8", "sm:n_components=16", "sm:n_components=4,gamma=2.0"]


def free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def soak(seconds: float, channels: int, rate: float, store: Path) -> dict[str, object]:
    endpoint = free_endpoint()
    command = [sys.executable, "-m", "streamlab"]
    attach = subprocess.Popen(
        [*command, "attach", endpoint, "--pull", "--store", str(store), "--until-eos", "--quiet"]
        + [arg for spec in LEARNERS for arg in ("--learner", spec)]
        + ["--checkpoint-every", "20000", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rig = subprocess.Popen(
        [
            *command,
            "sim",
            "--publish",
            endpoint,
            "--push",
            "--channels",
            str(channels),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            "--frame-samples",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    finished = False
    try:
        samples, rig_wall, finished = watch(attach, rig, seconds)
    finally:  # never leave a rig or a run behind, whatever happened here
        for process in (rig, attach):
            with contextlib.suppress(subprocess.TimeoutExpired):  # a finished rig may be exiting
                process.wait(timeout=30 if finished else 0.1)
            if process.poll() is None:
                process.kill()
    rig_err = rig.communicate(timeout=60)[1]
    _, attach_err = attach.communicate(timeout=120)
    if finished and (attach.returncode != 0 or rig.returncode != 0):
        raise SystemExit(f"run failed:\n{attach_err[-2000:]}\n{rig_err[-2000:]}")
    return {
        "rss": samples,
        "finished": finished,
        "rig_wall_s": rig_wall,
        "real_time_factor": None if rig_wall is None else rig_wall / seconds,
        **read_run(store),
    }


def watch(
    attach: subprocess.Popen[str], rig: subprocess.Popen[str], seconds: float
) -> tuple[list[tuple[float, float]], float | None, bool]:
    """Sample the run's RSS every second until it ends. Over PUSH/PULL a consumer slower than
    real time slows the rig down (backpressure) rather than losing samples: allow twice the
    nominal time, then give up. Returns (RSS samples, the rig's wall time, finished)."""
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    rig_wall: float | None = None
    while attach.poll() is None and time.monotonic() - start < 2 * seconds + 120:
        memory = resident_mb(attach.pid)
        if memory is not None:
            samples.append((time.monotonic() - start, memory))
        if rig_wall is None and rig.poll() is not None:
            rig_wall = time.monotonic() - start
        time.sleep(1.0)
    return samples, rig_wall, attach.poll() is not None


def read_run(path: Path) -> dict[str, object]:
    from streamlab.store.run_store import RunStore

    run = RunStore.open(path)
    table = run.learner("sm")
    latency = table.read("latency_us")
    tenth = max(len(latency) // 10, 1)
    return {
        "samples": int(table.rows),
        "gaps": int(run.gaps.rows),
        "missing": int(run.gaps.read("n_missing").sum()) if run.gaps.rows else 0,
        "status": run.status,
        "p50_p99_first_us": [float(np.percentile(latency[:tenth], q)) for q in (50, 99)],
        "p50_p99_last_us": [float(np.percentile(latency[-tenth:], q)) for q in (50, 99)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1800.0)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--max-growth-mb-per-min", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = soak(args.seconds, args.channels, args.rate, Path(folder) / "soak.zarr")
    rss = np.array(result.pop("rss"))
    steady = rss[rss[:, 0] >= 0.1 * rss[-1, 0]]
    slope = float(np.polyfit(steady[:, 0] / 60, steady[:, 1], 1)[0]) if len(steady) > 2 else 0.0
    result |= {
        "rss_after_warmup_mb": float(steady[0, 1]),
        "rss_end_mb": float(rss[-1, 1]),
        "rss_growth_mb_per_min": slope,
        "expected_samples": round(args.seconds * args.rate),
    }
    print(
        f"soak {args.seconds:.0f} s, {args.channels} ch at {args.rate:.0f} Hz, {len(LEARNERS)} "
        f"learners: {result['samples']:,} samples, gaps {result['gaps']} "
        f"({result['missing']} missing); RSS {result['rss_after_warmup_mb']:.0f} MB after "
        f"warm-up, {result['rss_end_mb']:.0f} MB at the end ({slope:+.2f} MB/min); latency "
        f"p50/p99 first tenth {result['p50_p99_first_us'][0]:.0f}/"
        f"{result['p50_p99_first_us'][1]:.0f} us, last tenth {result['p50_p99_last_us'][0]:.0f}/"
        f"{result['p50_p99_last_us'][1]:.0f} us; the rig took "
        + (
            f"{result['rig_wall_s']:.0f} s for {args.seconds:.0f} s of samples"
            if result["rig_wall_s"] is not None
            else "longer than twice real time (stopped: the consumer could not keep up)"
        )
    )
    print(json.dumps({"soak": result}))
    lost = (
        not result["finished"]
        or result["missing"]
        or result["samples"] != result["expected_samples"]
    )
    if lost or slope > args.max_growth_mb_per_min:
        raise SystemExit("soak failed: samples lost or memory growing")


if __name__ == "__main__":
    main()
