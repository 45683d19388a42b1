"""CUDA graphs against eager launches for the similarity-matching and Kalman-filter steps on a
GPU.

For each learner and size (channels n, latents k, sessions B) the same stream is stepped by the
learner with `backend="torch"` (eager: one launch per op) and with `backend="auto"` (the step
captured once per variant as a CUDA graph and replayed). Printed per size: kernels launched
by one eager step (counted with torch.profiler), p50/p99 µs per step of each (CUDA events around
each step, after a warm-up, no synchronisation inside the timed loop), and the speed-up of the
graph. Outputs of both are checked to agree first. Without a GPU it says so and exits 0.

Run (from the repository root, on a machine with a CUDA build of torch):

    python benchmarks/cuda_graphs.py [--steps 2000]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from streamlab.learners.base import Learner
from streamlab.learners.control import KalmanFilter
from streamlab.learners.similarity import NonnegativeSimilarityMatching, SimilarityMatching


def _sm(n: int, k: int, backend: str) -> Learner:
    return SimilarityMatching(n_components=k, backend=backend, device="cuda", seed=0)


def _nsm(n: int, k: int, backend: str) -> Learner:
    return NonnegativeSimilarityMatching(n_components=k, backend=backend, device="cuda", seed=0)


def _kf(n: int, k: int, backend: str) -> Learner:
    rng = np.random.default_rng(0)
    C = rng.normal(size=(n, k)) / np.sqrt(k)
    return KalmanFilter(A=0.95 * np.eye(k), C=C, Q=0.1, R=1.0, backend=backend, device="cuda")


# (label, builder, channels n, latents k, sessions B)
CASES = [
    ("sm", _sm, 128, 4, 1),
    ("sm", _sm, 384, 4, 1),
    ("sm", _sm, 1024, 16, 1),
    ("sm", _sm, 384, 4, 64),
    ("sm", _sm, 384, 4, 4096),
    ("nsm", _nsm, 384, 4, 1),
    ("nsm", _nsm, 384, 4, 64),
    ("kalman", _kf, 384, 8, 1),
    ("kalman", _kf, 384, 8, 64),
    ("kalman", _kf, 384, 8, 4096),
]
# eager steps of tens of milliseconds (the NSM solver's ~100 iterations): fewer of them
SLOW_EAGER_STEPS = {"nsm": 300}


def kernels_per_step(learner: Learner, x: torch.Tensor) -> int:
    """CUDA kernels (and memcpys) launched by one step, counted by the profiler."""
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        learner.step(x)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def cuda_step_times(learner: Learner, xs: torch.Tensor, warmup: int) -> np.ndarray:
    """µs per `learner.step` on each row of `xs` after the first `warmup`, CUDA events around
    each step (launches included, no sync inside the timed loop)."""
    for t in range(warmup):
        learner.step(xs[t])
    torch.cuda.synchronize()
    pairs = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(len(xs) - warmup)
    ]
    for (begin, end), t in zip(pairs, range(warmup, len(xs)), strict=True):
        begin.record()
        learner.step(xs[t])
        end.record()
    torch.cuda.synchronize()
    return np.array([b.elapsed_time(e) * 1e3 for b, e in pairs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("cuda graphs: no CUDA device visible; skipped (run on a GPU machine)")
        print(json.dumps({"cuda_graphs": {"skipped": "no CUDA device"}}))
        return
    print(f"cuda graphs vs eager, one learner step, {torch.cuda.get_device_name()}")
    print(
        f"{'learner':<7} {'n':>5} {'k':>3} {'B':>5} {'kernels':>8} {'eager p50':>10} {'p99':>8} "
        f"{'graph p50':>10} {'p99':>8} {'speed-up':>9}"
    )
    rows = []
    for label, build, n, k, batch in CASES:
        steps = min(args.steps, SLOW_EAGER_STEPS.get(label, args.steps))
        warmup = min(args.warmup, steps // 4)
        torch.manual_seed(0)  # drawn on the GPU: NumPy takes a minute for B = 4096
        xs = torch.poisson(torch.full((steps, batch, n), 2.0, device="cuda"))
        eager, graphed = build(n, k, "torch"), build(n, k, "auto")
        for t in range(50):
            torch.testing.assert_close(graphed.step(xs[t]), eager.step(xs[t]), rtol=1e-3, atol=1e-4)
        kernels = kernels_per_step(eager, xs[50])
        e = cuda_step_times(eager, xs[51:], warmup)
        g = cuda_step_times(graphed, xs[51:], warmup)
        row = {
            "learner": label,
            "n": n,
            "k": k,
            "B": batch,
            "kernels_per_eager_step": kernels,
            "eager_p50_us": float(np.median(e)),
            "eager_p99_us": float(np.percentile(e, 99)),
            "graph_p50_us": float(np.median(g)),
            "graph_p99_us": float(np.percentile(g, 99)),
            "eager_variants": {
                str(v): r
                for g in graphed._cuda_graphs.values()
                for v, r in g.eager_variants.items()
            },
        }
        row["speedup_p50"] = row["eager_p50_us"] / row["graph_p50_us"]
        rows.append(row)
        print(
            f"{label:<7} {n:>5} {k:>3} {batch:>5} {kernels:>8} {row['eager_p50_us']:>10.1f} "
            f"{row['eager_p99_us']:>8.1f} {row['graph_p50_us']:>10.1f} "
            f"{row['graph_p99_us']:>8.1f} {row['speedup_p50']:>8.2f}x",
            flush=True,
        )
    print(json.dumps({"cuda_graphs": rows}))


if __name__ == "__main__":
    main()
