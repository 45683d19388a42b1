"""Reservoir readout steps: samples/s and p50/p99 latency of one training step (advance the
reservoir by one sample, predict, learn) for N = 1,000 and 10,000 neurons, 384 input channels and
2 outputs, one stream, against reservoirpy 0.4.2's online RLS readout (`(Reservoir >> RLS)
.partial_fit` on one-row 2-D arrays; its FORCE node was removed in 0.4) on a same-size rate
reservoir, in one process.

Rows (float32 for ours, float64 for reservoirpy, its default):
- `rate+force`: our leaky tanh reservoir, one Euler step per sample (bin = dt = tau), sparse CSR
  recurrence, with `ForceReadout` (RLS, O(N^2) per sample): the same work as reservoirpy's.
- `rate+three_factor`: the same reservoir with `ThreeFactorReadout` (O(N) per sample).
- `izhikevich+three_factor` / `izhikevich+force`: the spiking reservoir, 10-ms bins of twenty
  0.5-ms Euler sub-steps (20 sparse products per sample).
Ratios are reservoirpy's p50 over ours (above 1: ours is faster).

Run (from the repository root; needs `pip install reservoirpy==0.4.2`):

    python benchmarks/reservoir_step.py [--sizes 1000 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamlab.learners.reservoir import ForceReadout, ThreeFactorReadout

N_INPUTS, N_OUTPUTS = 384, 2


def _steps_for(n: int, kind: str) -> int:
    """Timed steps per row, fewer where a step is slow (O(N^2) RLS, or twenty sparse products
    per sample for the spiking reservoir), so the whole run takes a few minutes."""
    big = n >= 10_000
    return {"force": (200, 10), "fast": (400, 30), "spiking": (50, 8)}[kind][big]


def _summary(times: np.ndarray) -> dict[str, float]:
    return {
        "samples_per_s": float(len(times) / times.sum()),
        "p50_us": float(np.median(times) * 1e6),
        "p99_us": float(np.percentile(times, 99) * 1e6),
    }


def measure_ours(n: int, neuron: str, readout: str, device: str) -> dict[str, float]:
    rng = np.random.default_rng(0)
    kind = "spiking" if neuron == "izhikevich" else ("force" if readout == "force" else "fast")
    steps = _steps_for(n, kind)
    x = torch.from_numpy(rng.random((steps + 5, N_INPUTS)).astype(np.float32)).to(device)
    y = torch.from_numpy(rng.standard_normal((steps + 5, N_OUTPUTS)).astype(np.float32))
    y = y.to(device)
    common = {"n_components": N_OUTPUTS, "n_neurons": n, "neuron": neuron, "device": device}
    if neuron == "rate":
        common.update(bin_ms=1.0, dt_ms=1.0, tau_ms=1.0, recurrent_scale=0.9, input_scale=1.0)
    else:
        common.update(bin_ms=10.0, dt_ms=0.5, recurrent_scale=0.1, input_scale=1.0)
    cls = ForceReadout if readout == "force" else ThreeFactorReadout
    learner = cls(**common, seed=0)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for t in range(5):
        learner.step(x[t], y[t])
    sync()
    times = np.empty(steps)
    for t in range(steps):
        start = time.perf_counter()
        learner.step(x[5 + t], y[5 + t])
        sync()
        times[t] = time.perf_counter() - start
    return _summary(times)


def measure_reservoirpy(n: int) -> dict[str, float]:
    from reservoirpy.nodes import RLS, Reservoir

    rng = np.random.default_rng(0)
    steps = _steps_for(n, "force")
    x = rng.random((steps + 5, 1, N_INPUTS))
    y = rng.standard_normal((steps + 5, 1, N_OUTPUTS))
    model = Reservoir(units=n, lr=1.0, sr=0.9, rc_connectivity=0.1, seed=0) >> RLS(alpha=1.0)
    for t in range(5):
        model.partial_fit(x[t], y[t])
    times = np.empty(steps)
    for t in range(steps):
        start = time.perf_counter()
        model.partial_fit(x[5 + t], y[5 + t])
        times[t] = time.perf_counter() - start
    return _summary(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for n in args.sizes:
        peer = measure_reservoirpy(n)
        rows.append({"n": n, "learner": "reservoirpy Reservoir>>RLS", "device": "cpu", **peer})
        for device in devices:
            for neuron, readout in [
                ("rate", "force"),
                ("rate", "three_factor"),
                ("izhikevich", "three_factor"),
                ("izhikevich", "force"),
            ]:
                ours = measure_ours(n, neuron, readout, device)
                ours["speedup_vs_reservoirpy_p50"] = peer["p50_us"] / ours["p50_us"]
                rows.append({"n": n, "learner": f"{neuron}+{readout}", "device": device, **ours})
    for row in rows:
        ratio = row.get("speedup_vs_reservoirpy_p50")
        print(
            f"N={row['n']:>6} {row['learner']:<28} {row['device']:<4} "
            f"{row['samples_per_s']:>10.1f} samples/s  p50 {row['p50_us']:>11.0f} us  "
            f"p99 {row['p99_us']:>11.0f} us"
            + (f"  reservoirpy/ours {ratio:.2f}x" if ratio is not None else "")
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
