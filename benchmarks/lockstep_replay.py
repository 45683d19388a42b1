"""Many recorded sessions replayed in lockstep, end to end: stores created, every sample stepped,
every output row written to Zarr, final states saved.

For B sessions at once (the nightly flow's `--lockstep`) it prints the wall time and sessions x
samples per second on each device, against B = 1 on the same device (the flow's one task per
session, minus Prefect). Sessions are Poisson counts around a few latent directions.

Run (from the repository root):

    python benchmarks/lockstep_replay.py [--samples 10000] [--channels 96] [--batches 1,8,64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from streamlab.lockstep import replay_lockstep
from streamlab.sessions import Session


def sessions(count: int, samples: int, channels: int) -> list[Session]:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(4, channels))
    out = []
    for b in range(count):
        rates = np.exp(0.3 * rng.normal(size=(samples, 4)) @ mixing)
        data = rng.poisson(np.minimum(rates, 50.0)).astype(np.float32)
        seq = np.arange(samples, dtype=np.uint64)
        out.append(Session(data, rate=1000.0, stream=f"rig/{b}", seq=seq, t=seq / 1000.0))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--learners", default="sm:n_components=4", help="specs joined by ';'")
    parser.add_argument("--devices", default="cpu,cuda", help="cuda is skipped without a GPU")
    args = parser.parse_args()
    specs = args.learners.split(";")
    batches = [int(b) for b in args.batches.split(",")]
    devices = [
        d
        for d in args.devices.split(",")
        if d == "cpu" or (d == "cuda" and torch.cuda.is_available())
    ]
    pool = sessions(max(batches), args.samples, args.channels)
    print(
        f"lockstep replay, {' + '.join(specs)}, {args.samples} samples x {args.channels} "
        "channels per session, Zarr stores included"
    )
    print(f"{'device':<6} {'B':>5} {'seconds':>8} {'sessions x samples/s':>21} {'vs B=1':>7}")
    rows = []
    for device in devices:
        base = None
        for batch in batches:
            with tempfile.TemporaryDirectory() as tmp:
                stores = [Path(tmp) / f"s{b}.zarr" for b in range(batch)]
                start = time.perf_counter()
                replay_lockstep(pool[:batch], specs, stores, device=device, seed=0)
                seconds = time.perf_counter() - start
            rate = batch * args.samples / seconds
            base = base or rate
            rows.append({"device": device, "B": batch, "seconds": seconds, "rate": rate})
            print(
                f"{device:<6} {batch:>5} {seconds:>8.2f} {rate:>21,.0f} {rate / base:>6.1f}x",
                flush=True,
            )
    print(json.dumps({"lockstep_replay": rows}))


if __name__ == "__main__":
    main()
