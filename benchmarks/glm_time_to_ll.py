"""Switching GLM: time to a held-out log-likelihood, the online learner against offline batch EM.

The same simulated recording (K = 3 states, N = 20 neurons, sparse coupling; the test suite's
network) trains both: `SwitchingGLM.step` bin by bin (its 5,000-bin burn-in EM included), and
`fit_switching_glm_batch` on all the training bins, one EM iteration at a time. Every 2,000 bins
(online) and after every iteration (batch) the model so far is scored by the mean predictive
log-likelihood per bin of held-out bins from the same network; scoring is not timed. Printed:
both curves (seconds spent learning -> held-out LL), the true model's held-out LL, and the time
each method takes to come within `--within` nats/bin of the best LL either reaches.

Run (from the repository root):

    python benchmarks/glm_time_to_ll.py [--bins 20000] [--held-out 10000] [--iterations 12]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamlab.learners.glm import (
    SwitchingGLM,
    SwitchingGLMParams,
    fit_switching_glm_batch,
    switching_log_likelihood,
)
from streamlab.sim.switching import simulate_switching_glm


def true_params(recording, n_states: int) -> SwitchingGLMParams:
    """The simulating network as a model: coupling on the history feature, then the bias."""
    weights = np.concatenate(
        [recording.weights[0], recording.bias[0][:, :, None]], axis=2
    )  # (K, N, N + 1)
    return SwitchingGLMParams(
        weights=weights,
        transitions=recording.transitions,
        initial=np.full(n_states, 1.0 / n_states),
        basis=recording.basis,
        max_log_rate=float(np.log(10.0)),  # the simulator's cap: 10 counts per bin
    )


def online_curve(counts: np.ndarray, held_out: np.ndarray, every: int) -> list[dict]:
    model = SwitchingGLM(n_states=3, burn_in=5000, check_counts=False, device="cpu", seed=0)
    x = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))
    curve, spent = [], 0.0
    for lo in range(0, len(x), every):
        start = time.perf_counter()
        for t in range(lo, min(lo + every, len(x))):
            model.step(x[t])
        spent += time.perf_counter() - start
        if model._steps > model.burn_in:  # a model exists once the burn-in fit has run
            ll, _ = switching_log_likelihood(model.parameters_of(0), held_out)
            curve.append({"bins": min(lo + every, len(x)), "seconds": spent, "held_out_ll": ll})
    return curve


def batch_curve(counts: np.ndarray, held_out: np.ndarray, iterations: int) -> list[dict]:
    curve, spent, params = [], 0.0, None
    for i in range(iterations):
        start = time.perf_counter()
        params, _ = fit_switching_glm_batch(counts, n_states=3, n_iter=1, seed=0, init=params)
        spent += time.perf_counter() - start
        ll, _ = switching_log_likelihood(params, held_out)
        curve.append({"iterations": i + 1, "seconds": spent, "held_out_ll": ll})
    return curve


def time_to(curve: list[dict], level: float) -> float | None:
    return next((p["seconds"] for p in curve if p["held_out_ll"] >= level), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bins", type=int, default=20_000)
    parser.add_argument("--held-out", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--every", type=int, default=2_000)
    parser.add_argument("--within", type=float, default=0.01, help="nats/bin below the best")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = simulate_switching_glm(args.bins, seed=0)
    truth = (train.weights, train.bias, train.connectome)
    test = simulate_switching_glm(args.held_out, seed=1, truth=truth)
    counts, held_out = train.counts[:, 0], test.counts[:, 0]
    true_ll, _ = switching_log_likelihood(true_params(train, 3), held_out)
    online = online_curve(counts, held_out, args.every)
    batch = batch_curve(counts, held_out, args.iterations)
    best = max(p["held_out_ll"] for p in online + batch)
    level = best - args.within
    t_online, t_batch = time_to(online, level), time_to(batch, level)
    print(
        f"switching GLM N=20 K=3, {args.bins} training bins, {args.held_out} held-out; held-out "
        f"LL/bin of the true model {true_ll:.4f}, best reached {best:.4f}"
    )
    print(
        "online (bins: s -> LL): "
        + ", ".join(f"{p['bins']}: {p['seconds']:.1f} -> {p['held_out_ll']:.4f}" for p in online)
    )
    print(
        "batch EM (iterations: s -> LL): "
        + ", ".join(
            f"{p['iterations']}: {p['seconds']:.1f} -> {p['held_out_ll']:.4f}" for p in batch
        )
    )

    def fmt(t: float | None) -> str:
        return "not reached" if t is None else f"{t:.1f} s"

    ratio = t_batch / t_online if t_online and t_batch else None
    print(
        f"time to within {args.within} of the best: online {fmt(t_online)}, batch EM "
        f"{fmt(t_batch)}" + (f" (batch / online x{ratio:.2f})" if ratio else "")
    )
    print(
        json.dumps(
            {
                "glm_time_to_ll": {
                    "true_ll": true_ll,
                    "best_ll": best,
                    "within": args.within,
                    "online_s": t_online,
                    "batch_s": t_batch,
                    "batch_over_online": ratio,
                    "online": online,
                    "batch": batch,
                }
            }
        )
    )


if __name__ == "__main__":
    main()
