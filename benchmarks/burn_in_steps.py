"""The step that ends a burn-in, and the one where its batch start lands, against the steady
step and against the same start computed inline (what a step would cost if the start held the
stream), for the learners whose start runs on the worker thread (`StartBeside`: sm, nsm,
biocca) at 384 channels.

Each learner runs at its defaults on one stream of Poisson counts (Gaussian for biocca's two
views). Samples are stepped as fast as they come, except within `--window` samples of the
burn-in's end and of the start's landing, where they are paced at `--rate` Hz as a rig would
send them, the loop sleeping between samples as it does waiting on a socket (the worker's job
then runs beside real gaps, as it would live); every paced step is timed. (A loop that spins
in Python instead starves the worker of the GIL: nsm's seeding, about 100 torch calls, then
missed its landing 200 samples later and that step waited 16-30 ms for it.)

Printed per learner: the steady step's p50 and p99 (paced steps other than the two one-off
ones), the burn-in's last step, the landing step, the slowest paced step, the inline
start (median of three, computed after the run from the same state), and the ratio of the
inline start to our slowest step. The switching GLM's sliced burn-in fit is timed by
`glm_science.py` (its "fit" columns).

Run (from the repository root; about 15 s):

    python -m benchmarks.burn_in_steps [--channels 384] [--rate 1000] [--window 500]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from streamlab.learners import LEARNERS
from streamlab.learners.base import Learner
from streamlab.stream.playback import wait_until

REPEATS = 3  # inline starts timed (median)


def run(
    name: str, learner: Learner, x: np.ndarray, y: np.ndarray | None, rate: float, window: int
) -> dict:
    """Step `learner` through x (T, n) (and y), pacing and timing the samples near the burn-in's
    end and the landing; the timings in ms and the inline start's cost."""
    xs = torch.from_numpy(x)
    ys = None if y is None else torch.from_numpy(y)
    end, land = one_off_steps(learner, xs[0], None if ys is None else ys[0])
    paced = np.zeros(len(x), dtype=bool)
    for centre in (end, land):
        paced[max(centre - window, 1) : centre + window] = True
    seconds = np.full(len(x), np.nan)
    period = 1.0 / rate
    deadline = time.perf_counter()
    for t in range(1, len(x)):
        if paced[t]:
            deadline = max(deadline + period, time.perf_counter() - period)
            wait_until(deadline)
            begin = time.perf_counter()
            learner.step(xs[t], ys[t]) if ys is not None else learner.step(xs[t])
            seconds[t] = time.perf_counter() - begin
        else:
            learner.step(xs[t], ys[t]) if ys is not None else learner.step(xs[t])
            deadline = time.perf_counter()
    function, args = learner._start_job()
    inline = []
    for _ in range(REPEATS):
        begin = time.perf_counter()
        function(*args)
        inline.append(time.perf_counter() - begin)
    one_off = {end - 1, land - 1}  # indices of the end and landing steps
    steady = np.array([s for t, s in enumerate(seconds) if paced[t] and t not in one_off])
    ms = 1e3
    return {
        "learner": name,
        "channels": int(x.shape[1]) + (0 if y is None else int(y.shape[1])),
        "burn_in": int(end),
        "lag": int(land - end),
        "steady_p50_ms": ms * float(np.median(steady)),
        "steady_p99_ms": ms * float(np.quantile(steady, 0.99)),
        "end_ms": ms * float(seconds[end - 1]),
        "landing_ms": ms * float(seconds[land - 1]),
        "worst_ms": ms * float(np.nanmax(seconds)),
        "inline_ms": ms * float(np.median(inline)),
    }


def one_off_steps(learner: Learner, x: torch.Tensor, y: torch.Tensor | None) -> tuple[int, int]:
    """Step the first sample (a learner sizes its burn-in when it sees it; biocca also needs
    y); (the step that ends the burn-in, the step that applies the start), 1-based."""
    learner.step(x, y) if y is not None else learner.step(x)
    end = int(learner._n_init)
    return end, end + int(learner._start_lag)


CASES: list[tuple[str, Callable[[], Learner], bool]] = [  # (name, build, two views)
    ("sm", lambda: LEARNERS["sm"](n_components=4, device="cpu", seed=0), False),
    ("nsm", lambda: LEARNERS["nsm"](n_components=8, device="cpu", seed=0), False),
    ("biocca", lambda: LEARNERS["biocca"](n_components=4, device="cpu", seed=0), True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=384, help="channels of x (384)")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced samples/s (1000)")
    parser.add_argument("--window", type=int, default=500, help="paced samples each side (500)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = int(args.channels)
    rows = []
    print(
        f"one stream, {n} channels, paced at {args.rate:.0f} Hz within {args.window} samples of "
        "the burn-in's end and of the start's landing; ms per step"
    )
    print()
    print(
        "| learner | burn-in (samples) | lag (samples) | steady p50 | steady p99 | burn-in's "
        "last step | landing step | slowest step | start inline | inline / slowest |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, build, two_views in CASES:
        q = max(n // 6, 4) if two_views else 0
        first = torch.zeros(n), (torch.zeros(q) if two_views else None)
        _, land = one_off_steps(build(), *first)
        total = land + args.window
        if two_views:
            shared = rng.standard_normal((total, 4)).astype(np.float32)
            x = rng.standard_normal((total, n)).astype(np.float32)
            y = rng.standard_normal((total, q)).astype(np.float32)
            x[:, :4] += shared
            y[:, :4] += shared
        else:
            x, y = rng.poisson(0.5, (total, n)).astype(np.float32), None
        row = run(name, build(), x, y, args.rate, args.window)
        rows.append(row)
        print(
            f"| {name} | {row['burn_in']:,} | {row['lag']:,} | {row['steady_p50_ms']:.3f} | "
            f"{row['steady_p99_ms']:.3f} | {row['end_ms']:.3f} | {row['landing_ms']:.3f} | "
            f"{row['worst_ms']:.3f} | {row['inline_ms']:.1f} | "
            f"x{row['inline_ms'] / row['worst_ms']:.1f} |",
            flush=True,
        )
    print(json.dumps({"burn_in_steps": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
