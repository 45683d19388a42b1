"""Switching-GLM steps: bins/s and p50/p99 µs per bin of `SwitchingGLM.step` (filter, then learn)
for N = 20, 100 and 500 neurons, K = 3, float32, on the CPU and, when a GPU is visible, on CUDA.

Peers, in the same process: the filter-only pass of the same model (`track`, no learning); the
batch EM fit of the same model (`fit_switching_glm_batch`: µs per bin of data per EM iteration,
and the ratio of a 10-iteration fit per bin to the online step; N <= 100 only, its memory grows
as T N²); hmmlearn's PoissonHMM when installed (`score`, a whole-sequence forward pass of an
uncoupled Poisson HMM, vectorised over bins: a lower bound, not a streaming peer).

Run (from the repository root):

    python benchmarks/glm_step.py [--bins 2000] [--threads 1] [--sizes 20,100,500]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamlab.learners.glm import SwitchingGLM, fit_switching_glm_batch


def counts_for(n: int, bins: int, seed: int = 0) -> np.ndarray:
    """Poisson counts at 0.3 per bin: the cost of a step does not depend on the values."""
    return np.random.default_rng(seed).poisson(0.3, (bins, n)).astype(np.float32)


def time_steps(model: SwitchingGLM, x: torch.Tensor, learn: bool, device: str) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    call = model.step if learn else model.track
    for t in range(50):  # warm-up
        call(x[t])
    sync()
    times = np.empty(len(x) - 50)
    begin = time.perf_counter()
    for i, t in enumerate(range(50, len(x))):
        start = time.perf_counter()
        call(x[t])
        if device == "cuda":
            sync()
        times[i] = time.perf_counter() - start
    elapsed = time.perf_counter() - begin
    return {
        "bins_per_s": len(times) / elapsed,
        "p50_us": float(np.median(times) * 1e6),
        "p99_us": float(np.quantile(times, 0.99) * 1e6),
    }


def online(n: int, bins: int, device: str) -> dict:
    x = torch.from_numpy(counts_for(n, bins + 50)).to(device)
    rows = {}
    for learn in (True, False):
        model = SwitchingGLM(n_states=3, burn_in=0, check_counts=False, device=device, seed=0)
        rows["step" if learn else "filter_only"] = time_steps(model, x, learn, device)
    return rows


def batch_em(n: int, bins: int) -> dict:
    counts = counts_for(n, bins)
    start = time.perf_counter()
    fit_switching_glm_batch(counts, n_states=3, n_iter=3)
    per_iteration = (time.perf_counter() - start) / 3
    return {"us_per_bin_per_iteration": per_iteration / bins * 1e6}


def hmmlearn_forward(n: int, bins: int) -> dict | None:
    try:
        from hmmlearn.hmm import PoissonHMM
    except ImportError:
        return None
    counts = counts_for(n, bins).astype(np.int64)
    model = PoissonHMM(n_components=3, random_state=0)
    model.fit(counts[: min(bins, 500)])
    start = time.perf_counter()
    model.score(counts)
    return {"us_per_bin": (time.perf_counter() - start) / bins * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bins", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="20,100,500")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        for device in devices:
            rows = online(n, args.bins, device)
            row = {"N": n, "K": 3, "device": device, **rows}
            if device == "cpu":
                # the batch fit holds f fᵀ per bin, (T, D²) floats: N = 500 would need
                # gigabytes for a useful T, so it is measured up to N = 100
                row["batch_em"] = batch_em(n, 5000 if n <= 20 else 1000) if n <= 100 else None
                row["hmmlearn_poisson_hmm_forward"] = hmmlearn_forward(n, args.bins)
                step_us = 1e6 / rows["step"]["bins_per_s"]
                if row["batch_em"] is not None:
                    row["ratio_batch_em_10_iter_per_bin_over_step"] = (
                        10 * row["batch_em"]["us_per_bin_per_iteration"] / step_us
                    )
                if row["hmmlearn_poisson_hmm_forward"] is not None:
                    row["ratio_hmmlearn_forward_over_step"] = (
                        row["hmmlearn_poisson_hmm_forward"]["us_per_bin"] / step_us
                    )
            results.append(row)
            print(_line(row), flush=True)
    print(json.dumps({"glm_step": results}))


def _line(row: dict) -> str:
    """One readable line per (N, device): the online step, the filter alone, the peers."""
    step, track = row["step"], row["filter_only"]
    text = (
        f"N={row['N']:>4} K=3 {row['device']:<4} online step {step['bins_per_s']:>7,.0f} bins/s "
        f"(p50 {step['p50_us']:,.0f} us, p99 {step['p99_us']:,.0f} us); filter only "
        f"{track['bins_per_s']:>7,.0f} bins/s"
    )
    if row.get("ratio_batch_em_10_iter_per_bin_over_step") is not None:
        text += (
            f"; 10 batch-EM iterations cost x{row['ratio_batch_em_10_iter_per_bin_over_step']:.2f}"
        )
        text += " the online step per bin"
    if row.get("ratio_hmmlearn_forward_over_step") is not None:
        text += f"; hmmlearn forward x{row['ratio_hmmlearn_forward_over_step']:.3f}"
    return text


if __name__ == "__main__":
    main()
