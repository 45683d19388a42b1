"""The decoders on CUDA against the CPU, calibrate then decode, on one simulated session: the same
defaults, the decoded R² on each device, the largest difference between their outputs, and the
per-sample cost on each (p50 / p99 of single steps; CUDA timed with events after a warm-up).
Needs a GPU; prints that it skipped otherwise.

Run (from the repository root): python benchmarks/decoding_cuda.py [--seed 1] [--bins 2000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from streamlab.learners.control import AdaptiveKalmanDecoder
from streamlab.learners.refh import RecurrentEFH
from streamlab.learners.reservoir import ForceReadout, ThreeFactorReadout
from streamlab.learners.ridge import OnlineRidgeDecoder
from streamlab.scoring import decode_of, score
from streamlab.sim.decoding import cosine_velocity

MAKERS: dict[str, Callable[[str, int], Any]] = {
    "akd": lambda device, q: AdaptiveKalmanDecoder(n_components=q, device=device),
    "ridge": lambda device, q: OnlineRidgeDecoder(n_components=q, device=device),
    "three_factor": lambda device, q: ThreeFactorReadout(n_components=q, device=device, seed=0),
    "force": lambda device, q: ForceReadout(n_components=q, device=device, seed=0),
    "refh": lambda device, q: RecurrentEFH(n_targets=q, device=device, seed=0),
}


def decode(name: str, device: str, x: np.ndarray, y: np.ndarray, calibration: int):
    """(decoded (T, q), per-step seconds (T,)) of decoder `name` on `device`."""
    learner = MAKERS[name](device, y.shape[1])
    xs = torch.as_tensor(x, device=device)
    ys = torch.as_tensor(y, device=device)
    rows, seconds = [], np.empty(len(x))
    cuda = device == "cuda"
    for t in range(len(x)):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            began = time.perf_counter()
        out = learner.step(xs[t], ys[t] if t < calibration else None)
        if cuda:
            end.record()
            end.synchronize()
            seconds[t] = start.elapsed_time(end) / 1e3
        else:
            seconds[t] = time.perf_counter() - began
        rows.append(np.asarray(decode_of(learner, out), dtype=np.float64))
    return np.asarray(rows), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bins", type=int, default=2000)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no GPU: skipped")
        print(json.dumps({"decoding_cuda": None}))
        return 0
    torch.set_num_threads(1)
    data = cosine_velocity(args.seed, n_bins=args.bins)
    x, y = data.counts, data.behaviour
    calibration = len(x) // 2
    print(f"{data.summary()}; {torch.cuda.get_device_name()}")
    summary = {}
    for name in MAKERS:
        cpu, cpu_s = decode(name, "cpu", x, y, calibration)
        gpu, gpu_s = decode(name, "cuda", x, y, calibration)
        warm = slice(200, None)  # after capture and warm-up
        r2 = {
            device: score(name, y[calibration:], out[calibration:]).mean_r2
            for device, out in (("cpu", cpu), ("cuda", gpu))
        }
        diff = float(np.nanmax(np.abs(cpu - gpu)))
        cost = {
            device: [float(np.percentile(s[warm], q) * 1e6) for q in (50, 99)]
            for device, s in (("cpu", cpu_s), ("cuda", gpu_s))
        }
        print(
            f"{name:13s} R² cpu {r2['cpu']:.3f} cuda {r2['cuda']:.3f}  max |cpu - cuda| "
            f"{diff:.2e}  step p50/p99 µs: cpu {cost['cpu'][0]:.0f}/{cost['cpu'][1]:.0f}, "
            f"cuda {cost['cuda'][0]:.0f}/{cost['cuda'][1]:.0f}"
        )
        summary[name] = {"r2": r2, "max_diff": diff, "step_us": cost}
    print(json.dumps({"decoding_cuda": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
