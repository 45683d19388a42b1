"""Online principal subspace: streamlab's `SimilarityMatching` (PSP, one sample per step) versus
scikit-learn's `IncrementalPCA` (`partial_fit` on mini-batches), both reaching the same
subspace error on the same spiked-covariance stream, in one process.

The stream is the demo's size by default (128 channels, k = 4 latent directions; `--k 8` for
more): k signal directions with variances from 1 to 0.5 plus isotropic noise of variance
0.002, as in the PSP paper. The subspace error is ||P_F - P_U||^2 / ||P_U||^2 against the true
signal directions (`streamlab.learners.similarity.subspace_error`).

1. SM streams the samples one at a time (`step`, CPU, float32) until its error is at most
   `--target` (checked every 100 samples, with the clock paused).
2. IPCA (float64, as scikit-learn computes) is fed the same stream in mini-batches of
   `--batch` samples until its error is at most the same target (checked after every batch,
   clock paused).

Both run on one thread (torch and BLAS). Printed for each: samples needed, learning time
(median of `--repeats` runs), samples/s while learning; then the SM/IPCA ratios and a one-line
JSON summary. IPCA answers once per mini-batch (its per-sample latency is a whole batch), where
SM gives an output for every sample. A last line gives SM's aggregate throughput when
`--streams` sessions are stepped in lockstep as the batch dimension (how the nightly flow
replays many sessions on one device).

Run (from the repository root, with nothing else heavy running):

    python benchmarks/similarity_vs_ipca.py
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.decomposition import IncrementalPCA
from threadpoolctl import threadpool_limits

from streamlab.learners.similarity import SimilarityMatching, subspace_error


def spiked_covariance(n: int, k: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k signal directions (variances 1 to 0.5) in n channels plus noise of variance 0.002."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((n, k)))
    signal = rng.standard_normal((samples, k)) * np.sqrt(np.linspace(1.0, 0.5, k))
    return signal @ basis.T + np.sqrt(0.002) * rng.standard_normal((samples, n)), basis


def run_sm(x: np.ndarray, basis: np.ndarray, k: int, target: float) -> dict[str, float]:
    """Step SM through x until its subspace error is <= target; time only the steps."""
    sm = SimilarityMatching(n_components=k, gamma=1.5, device="cpu", seed=0)
    data = torch.from_numpy(x.astype(np.float32))
    elapsed, error, seen = 0.0, float("inf"), 0
    for start in range(0, len(data), 100):
        chunk = data[start : start + 100]
        t0 = time.perf_counter()
        for row in chunk:
            sm.step(row)
        elapsed += time.perf_counter() - t0
        seen += len(chunk)
        error = subspace_error(sm.filters[0].numpy(), basis)
        if error <= target:
            break
    return {"samples": seen, "seconds": elapsed, "error": error, "rate": seen / elapsed}


def run_sm_streams(x: np.ndarray, k: int, samples: int, streams: int) -> dict[str, float]:
    """Aggregate throughput of SM stepping `streams` sessions in lockstep (the batch dimension of
    `step`): every stream gets the same first `samples` samples, so each reaches the same error
    as the single run."""
    sm = SimilarityMatching(n_components=k, gamma=1.5, device="cpu", seed=0)
    data = torch.from_numpy(np.repeat(x[:samples, None, :], streams, axis=1).astype(np.float32))
    t0 = time.perf_counter()
    for rows in data:
        sm.step(rows)
    elapsed = time.perf_counter() - t0
    return {"samples": samples * streams, "seconds": elapsed, "rate": samples * streams / elapsed}


def run_ipca(
    x: np.ndarray, basis: np.ndarray, k: int, target: float, batch: int
) -> dict[str, float]:
    """partial_fit IPCA on mini-batches until its subspace error is <= target."""
    ipca = IncrementalPCA(n_components=k)
    elapsed, error, seen = 0.0, float("inf"), 0
    for start in range(0, len(x) - batch + 1, batch):
        chunk = x[start : start + batch]
        t0 = time.perf_counter()
        ipca.partial_fit(chunk)
        elapsed += time.perf_counter() - t0
        seen += len(chunk)
        error = subspace_error(ipca.components_, basis)
        if error <= target:
            break
    return {"samples": seen, "seconds": elapsed, "error": error, "rate": seen / elapsed}


def median_run(run: Callable[[], dict[str, float]], repeats: int) -> dict[str, float]:
    """Repeat a deterministic run and keep its median learning time (the samples and error do
    not change between repeats)."""
    results = [run() for _ in range(repeats)]
    seconds = float(np.median([r["seconds"] for r in results]))
    return {**results[0], "seconds": seconds, "rate": results[0]["samples"] / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=128, help="input channels (default 128)")
    parser.add_argument("--k", type=int, default=4, help="subspace dimension (default 4)")
    parser.add_argument("--target", type=float, default=0.001, help="subspace error to reach")
    parser.add_argument("--batch", type=int, default=64, help="IPCA mini-batch (default 64)")
    parser.add_argument("--samples", type=int, default=60000, help="longest stream (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--streams", type=int, default=16, help="SM lockstep streams (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, median (default 5)")
    args = parser.parse_args(argv)
    # one thread each (torch and BLAS): tiny per-sample work, and a fair 1-core comparison
    torch.set_num_threads(1)
    threadpool_limits(1)

    x, basis = spiked_covariance(args.channels, args.k, args.samples, args.seed)
    # warm-up on another stream (first-call costs of torch and sklearn stay out of the timing)
    warm, warm_basis = spiked_covariance(args.channels, args.k, 4 * args.batch, args.seed + 1)
    run_sm(warm, warm_basis, args.k, 0.0)
    run_ipca(warm, warm_basis, args.k, 0.0, args.batch)
    sm = median_run(lambda: run_sm(x, basis, args.k, args.target), args.repeats)
    ipca = median_run(lambda: run_ipca(x, basis, args.k, args.target, args.batch), args.repeats)
    print(
        f"stream: {args.channels} channels, k={args.k}, target subspace error {args.target}, "
        f"IPCA mini-batch {args.batch}"
    )
    for name, r in (("SM (PSP)", sm), ("IPCA", ipca)):
        reached = "reached" if r["error"] <= args.target else "NOT reached"
        print(
            f"{name:>9}: {r['samples']:>6d} samples, error {r['error']:.4f} ({reached}), "
            f"{r['seconds'] * 1e3:8.1f} ms learning, {r['rate']:10.0f} samples/s"
        )
    batched = median_run(lambda: run_sm_streams(x, args.k, sm["samples"], args.streams), 3)
    print(
        f"SM, {args.streams} streams in lockstep: {batched['rate']:10.0f} samples/s in all "
        f"(x{batched['rate'] / ipca['rate']:.3f} IPCA's single stream)"
    )
    rate_ratio = sm["rate"] / ipca["rate"]
    time_ratio = sm["seconds"] / ipca["seconds"]
    print(
        f"SM/IPCA: throughput x{rate_ratio:.3f}, time to target x{time_ratio:.3f}, "
        f"samples to target x{sm['samples'] / ipca['samples']:.3f}"
    )
    summary = {
        "channels": args.channels,
        "k": args.k,
        "target": args.target,
        "batch": args.batch,
        "sm": sm,
        "ipca": ipca,
        "sm_streams": {"streams": args.streams, **batched},
        "throughput_ratio_sm_over_ipca": rate_ratio,
        "time_to_target_ratio_sm_over_ipca": time_ratio,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
