"""Kalman filter steps: streamlab's `KalmanFilter.step` versus filterpy's `KalmanFilter`
(`predict()` then `update(z)`), same model and observations, in one process.

For each size (k latent states, n observed channels) a random stable linear-Gaussian model is
simulated for `--steps` samples. Both filters run the same observations one sample at a time,
and the per-sample time of each step is taken with `perf_counter_ns` after `--warmup` steps. Their
posterior means are checked to agree (float64) before timing is reported. Printed per size:
steps/s and p50 / p99 per-sample latency for filterpy, streamlab on the CPU (float64) and, when
a GPU is visible, on CUDA (float32, timed with CUDA events after a warm-up, as one sample's step
including its launch overhead); then the streamlab/filterpy ratios. A last column gives
streamlab's aggregate steps/s when `--streams` independent streams step in lockstep as the batch
dimension (one step call serves them all).

Run (from the repository root; `pip install -e ".[bench]"` for filterpy):

    python benchmarks/kalman_step.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from cuda_graphs import cuda_step_times
from filterpy.kalman import KalmanFilter as FilterpyKalman

from streamlab.learners.control import KalmanFilter

SIZES = [(2, 2), (4, 32), (8, 128), (16, 384)]


def random_model(k: int, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return {
        "A": 0.95 * q,
        "C": rng.standard_normal((n, k)) / np.sqrt(k),
        "Q": 0.1 * np.eye(k),
        "R": np.diag(rng.uniform(0.5, 1.5, n)),
    }


def simulate(model: dict[str, np.ndarray], steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, n = model["A"].shape[0], model["C"].shape[0]
    z, xs = np.zeros(k), np.empty((steps, n))
    for t in range(steps):
        z = model["A"] @ z + rng.multivariate_normal(np.zeros(k), model["Q"])
        xs[t] = model["C"] @ z + rng.multivariate_normal(np.zeros(n), model["R"])
    return xs


def quantiles(ns: np.ndarray) -> dict[str, float]:
    return {
        "steps_per_s": 1e9 / float(ns.mean()),
        "p50_us": float(np.percentile(ns, 50)) / 1e3,
        "p99_us": float(np.percentile(ns, 99)) / 1e3,
    }


def run_filterpy(model: dict[str, np.ndarray], xs: np.ndarray, warmup: int) -> tuple:
    k, n = model["A"].shape[0], model["C"].shape[0]
    kf = FilterpyKalman(dim_x=k, dim_z=n)
    kf.F, kf.H, kf.Q, kf.R = model["A"], model["C"], model["Q"], model["R"]
    kf.x, kf.P = np.zeros((k, 1)), np.eye(k)
    times, means = np.empty(len(xs), dtype=np.int64), np.empty((len(xs), k))
    for t, x in enumerate(xs):
        start = time.perf_counter_ns()
        kf.predict()
        kf.update(x)
        times[t] = time.perf_counter_ns() - start
        means[t] = kf.x[:, 0]
    return quantiles(times[warmup:]), means


def streamlab_filter(model: dict[str, np.ndarray], device: str, dtype: str) -> KalmanFilter:
    return KalmanFilter(
        A=model["A"].tolist(),
        C=model["C"].tolist(),
        Q=model["Q"].tolist(),
        R=model["R"].tolist(),
        device=device,
        dtype=dtype,
    )


def run_cpu(model: dict[str, np.ndarray], xs: np.ndarray, warmup: int) -> tuple:
    kf = streamlab_filter(model, "cpu", "float64")
    data = torch.from_numpy(xs)
    times = np.empty(len(xs), dtype=np.int64)
    means = torch.empty(len(xs), model["A"].shape[0], dtype=torch.float64)
    for t in range(len(data)):
        start = time.perf_counter_ns()
        means[t] = kf.step(data[t])
        times[t] = time.perf_counter_ns() - start
    return quantiles(times[warmup:]), means.numpy()


def run_cuda(model: dict[str, np.ndarray], xs: np.ndarray, warmup: int) -> dict[str, float]:
    kf = streamlab_filter(model, "cuda", "float32")
    data = torch.from_numpy(xs.astype(np.float32)).cuda()
    return quantiles(cuda_step_times(kf, data, warmup) * 1e3)


def run_batched(
    model: dict[str, np.ndarray], xs: np.ndarray, streams: int, device: str, dtype: str
) -> float:
    """Aggregate samples/s of `streams` streams stepped in lockstep."""
    kf = streamlab_filter(model, device, dtype)
    data = torch.from_numpy(xs).to(device=device, dtype=getattr(torch, dtype))
    batch = data.unsqueeze(1).expand(len(data), streams, data.shape[1]).contiguous()
    kf.step(batch[0])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(1, len(batch)):
        kf.step(batch[t])
    if device == "cuda":
        torch.cuda.synchronize()
    return (len(batch) - 1) * streams / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--streams", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    summary = []
    header = f"{'k':>3} {'n':>4} | {'peer':<18} {'steps/s':>10} {'p50 us':>8} {'p99 us':>8}"
    print(header)
    for k, n in SIZES:
        model = random_model(k, n, seed=k * 1000 + n)
        xs = simulate(model, args.steps, seed=1)
        peer, peer_means = run_filterpy(model, xs, args.warmup)
        ours, our_means = run_cpu(model, xs, args.warmup)
        agree = float(np.abs(peer_means - our_means).max())
        if agree > 1e-8:
            raise SystemExit(f"k={k} n={n}: posterior means differ by {agree:.2e}; not timing")
        rows = {"filterpy": peer, "streamlab cpu f64": ours}
        if cuda:
            rows["streamlab cuda f32"] = run_cuda(model, xs, args.warmup)
        for name, row in rows.items():
            print(
                f"{k:>3} {n:>4} | {name:<18} {row['steps_per_s']:>10,.0f} "
                f"{row['p50_us']:>8.1f} {row['p99_us']:>8.1f}"
            )
        batched = run_batched(model, xs, args.streams, "cpu", "float64")
        ratio = ours["steps_per_s"] / peer["steps_per_s"]
        line = f"          ratio streamlab cpu / filterpy: steps/s x{ratio:.2f}"
        line += f"; {args.streams} streams in lockstep (cpu): {batched:,.0f} samples/s"
        entry = {"k": k, "n": n, **rows, "ratio": ratio}
        if cuda:
            gpu_batched = run_batched(model, xs, args.streams, "cuda", "float32")
            line += f", (cuda): {gpu_batched:,.0f} samples/s"
            entry["cuda_batched"] = gpu_batched
        entry["cpu_batched"] = batched
        print(line)
        summary.append(entry)
    print(json.dumps({"kalman_step": summary}))


if __name__ == "__main__":
    main()
