"""Recurrent EFH steps: samples/s of `RecurrentEFH.step` (infer, then CD-1 learning) at the size of
the simulated experiment (15 Poisson inputs, 240 hidden units), float32.

Printed: one stream; B streams in lockstep with their own weights (B independent learners); B
streams sharing one set of weights (the reference's 40 trajectories in parallel); each on the CPU
and, when a GPU is visible, on CUDA. Samples/s counts every stream's sample, so a batch's rate is
B times its steps/s. Also the per-step p50 latency of the single stream.

Run (from the repository root):

    python benchmarks/refh_step.py [--steps 2000] [--streams 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamlab.learners.refh import RecurrentEFH

N_INPUTS, N_HIDDEN = 15, 240


def measure(streams: int, share: bool, device: str, steps: int) -> dict[str, float]:
    """Aggregate samples/s and p50 step latency (µs) over `steps` steps after 50 warm-up."""
    rng = np.random.default_rng(0)
    counts = torch.from_numpy(rng.poisson(1.5, (steps + 50, streams, N_INPUTS)).astype(np.float32))
    counts = counts.to(device)
    learner = RecurrentEFH(n_components=N_HIDDEN, share_weights=share, device=device, seed=0)
    for t in range(50):
        learner.step(counts[t])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    times = np.empty(steps)
    begin = time.perf_counter()
    for t in range(steps):
        start = time.perf_counter()
        learner.step(counts[50 + t])
        times[t] = time.perf_counter() - start
    sync()
    elapsed = time.perf_counter() - begin
    return {
        "samples_per_s": steps * streams / elapsed,
        "p50_step_us": float(np.median(times)) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    print(f"RecurrentEFH n={N_INPUTS} inputs, {N_HIDDEN} hidden, CD-1, float32")
    for device in devices:
        for streams, share, label in [
            (1, False, "1 stream"),
            (args.streams, False, f"{args.streams} streams, own weights"),
            (args.streams, True, f"{args.streams} streams, shared weights"),
        ]:
            result = measure(streams, share, device, args.steps)
            print(
                f"{device:<5} {label:<28} {result['samples_per_s']:>12,.0f} samples/s "
                f"(p50 step {result['p50_step_us']:,.0f} us)"
            )
            rows.append({"device": device, "streams": streams, "shared": share, **result})
    print(json.dumps({"refh_step": rows}))


if __name__ == "__main__":
    main()
