"""The recurrent EFH at its defaults on noisy oscillators it was not tuned to (issue 20), scored
as `EVALUATION.md` asks for filtering a latent: beside the static readout of the current counts
and the Kalman filter with the true dynamics.

For each family of `streamlab.sim.oscillator` and each seed, the rEFH (`RecurrentEFH()` at its
defaults) learns online on the first 80 % of the session, then, frozen, tracks the stream; one
least-squares linear readout of position is fitted on the second half of the learned part to
its hidden means and to the raw counts (the static readout), and all are scored on the last
20 %, which nothing has learned from. The Kalman filters know the true dynamics and observe the
centre of mass of the tuned neurons (the issue's baseline) or the static readout (a stronger
single-frame observation where baselines and broad tuning bias the centre of mass), each
calibrated on the same fit part.

Printed: a line per session, then a markdown table by family of the position MSE of each method
(median and worst seed) and of the rEFH's ratios to the static readout and the Kalman filters,
and as the last line a one-line JSON summary. The issue's targets: rEFH at most 0.8 x the static
readout and at most 2.5 x the Kalman filter on the centre of mass, on every seed.

Measured (25,000 samples, 10 seeds, all four families): the static target is met on 40 of 40
sessions, the Kalman one on 39 of 40 (driven seed 5: 3.0 x a Kalman MSE of 0.002, sharp tuning
and period 131). On held-out seeds 10-19 of the three default families 28 of 30 meet both:
damped seed 12 (period 196, ζ 0.03: a Kalman MSE of 0.002, 10 x) and overdispersed seed 12,
whose 11 untuned neurons (mean counts 1.4-14.6, the tuned ones' at most 2.3) drive the hidden
units (1.4 x static; without them the same rEFH reaches 0.3 x the Kalman filter). The position
rarely leaves the tuned range (at most 0.3 % silent samples on the four sessions that failed
with the previous sensory rate, 1e-4). Each session that misses a target is run again at
`--longer` samples (100,000): all three meet both there. At that length all 60 sessions
(seeds 0-19 of the three default families) meet both: at most 0.44 x static and 2.46 x Kalman
(damped seed 12), medians 0.14-0.16 x and 0.40-0.76 x; the rEFH is slower on them, not wrong.

Run (from the repository root; about 2.5 minutes of one core at the defaults, 3.3 with the
`oscillator` family as well):

    python -m benchmarks.refh_science [--seeds 10] [--samples 25000] [--longer 100000]
        [--families damped,driven,overdispersed,oscillator]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from streamlab.learners.refh import RecurrentEFH
from streamlab.sim.oscillator import FAMILIES, OscillatorData, filter_scores, split

DEFAULT_FAMILIES = ("damped", "driven", "overdispersed")  # `oscillator` (all mixed): the test's
METHODS = ("filter", "static", "kalman", "kalman_readout")
NAMES = {
    "filter": "rEFH",
    "static": "static readout",
    "kalman": "Kalman (centre of mass)",
    "kalman_readout": "Kalman (static readout)",
}
RATIOS = ("over_static", "over_kalman", "over_kalman_readout")
# A session that misses a target is run again this long: the three sessions missing one at
# 25,000 samples (seeds 0-19: driven 5, damped 12, overdispersed 12; slow, lightly damped
# oscillators or loud untuned neurons) meet both by 100,000 (0.77, 2.46 and 0.78 x Kalman)
LONGER = 100_000


def refh_hidden_means(counts: np.ndarray, learned: int, start: int) -> np.ndarray:
    """Hidden means (T, k) of a default rEFH that learned online on the first `learned`
    samples, then, frozen, tracked the stream from `start` (zeros before it)."""
    learner = RecurrentEFH(device="cpu", seed=0)
    x = torch.from_numpy(counts)
    for t in range(learned):
        learner.step(x[t])
    learner.reset_state()
    hidden = np.zeros((len(counts), learner.n_components), dtype=np.float32)
    for t in range(start, len(counts)):
        hidden[t] = learner.track(x[t]).numpy()
    return hidden


def run_session(data: OscillatorData) -> dict:
    """The scores of one session (see `filter_scores`) and the rEFH's seconds."""
    learned, fit, score = split(data.n_samples)
    start = time.perf_counter()
    hidden = refh_hidden_means(data.counts, learned, max(fit.start - 200, 0))
    seconds = time.perf_counter() - start
    return {**filter_scores(data, hidden, fit, score), "seconds": seconds}


def meets_targets(r: dict) -> bool:
    """The issue's two targets: at most 0.8 x the static readout, 2.5 x the Kalman filter."""
    return r["over_static"] <= 0.8 and r["over_kalman"] <= 2.5


def session_line(r: dict) -> str:
    """One session's MSEs and ratios, as printed."""
    return (
        f"rEFH {r['filter']:.3f}, static {r['static']:.3f}, Kalman {r['kalman']:.3f} / "
        f"{r['kalman_readout']:.3f} -> {r['over_static']:.2f} x static, {r['over_kalman']:.2f} "
        f"/ {r['over_kalman_readout']:.2f} x Kalman ({r['seconds']:.0f} s)"
    )


def summarise(results: dict[str, list[dict]]) -> dict:
    """Per family: median and worst (highest) seed of every MSE and ratio."""
    out = {}
    for family, sessions in results.items():
        entry: dict = {"seeds": len(sessions)}
        for key in (*METHODS, *RATIOS):
            values = np.array([s[key] for s in sessions])
            entry[key] = {"median": float(np.median(values)), "worst": float(values.max())}
        entry["meets_static"] = int(sum(s["over_static"] <= 0.8 for s in sessions))
        entry["meets_kalman"] = int(sum(s["over_kalman"] <= 2.5 for s in sessions))
        out[family] = entry
    return out


def table(summary: dict) -> str:
    """Markdown: family x method MSE (median / worst), the ratios, and the seeds meeting each
    target."""
    head = [NAMES[m] for m in METHODS] + [
        "rEFH / static",
        "rEFH / Kalman (c. of mass)",
        "rEFH / Kalman (readout)",
        "seeds <= 0.8 x static, <= 2.5 x Kalman",
    ]
    lines = [
        "Position MSE (stationary variance 1), median / worst seed:",
        "",
        "| family | " + " | ".join(head) + " |",
        "|---" * (len(head) + 1) + "|",
    ]
    for family, e in summary.items():
        cells = [f"{e[k]['median']:.3f} / {e[k]['worst']:.3f}" for k in METHODS]
        cells += [f"{e[k]['median']:.2f} / {e[k]['worst']:.2f}" for k in RATIOS]
        cells.append(f"{e['meets_static']}/{e['seeds']}, {e['meets_kalman']}/{e['seeds']}")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per family (default 10)")
    parser.add_argument("--samples", type=int, default=25_000, help="session length (25,000)")
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES), help="comma-separated")
    parser.add_argument(
        "--longer",
        type=int,
        default=LONGER,
        help=f"session length a missed target is run again at (default {LONGER:,}; 0: not)",
    )
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    if set(families) - set(FAMILIES):
        parser.error(f"unknown families {sorted(set(families) - set(FAMILIES))}")
    torch.set_num_threads(1)
    print(
        f"rEFH at its defaults, learning online on 80 % of {args.samples} samples; "
        f"{args.seeds} seed(s) per family",
        flush=True,
    )
    results: dict[str, list[dict]] = {}
    missed: list[tuple[str, int]] = []
    for family in families:
        for seed in range(args.seeds):
            data = FAMILIES[family](seed, n_samples=args.samples)
            r = run_session(data)
            results.setdefault(family, []).append(r)
            print(f"seed {seed} {data.summary()}: {session_line(r)}", flush=True)
            if not meets_targets(r):
                missed.append((family, seed))
    summary = summarise(results)
    print()
    print(table(summary))
    longer = []
    if args.longer and missed:
        print()
        print(
            f"Sessions that missed a target, run again at {args.longer:,} samples (the same "
            "seed: the same population and dynamics, a longer recording):"
        )
        print()
        for family, seed in missed:
            r = run_session(FAMILIES[family](seed, n_samples=args.longer))
            longer.append({"family": family, "seed": seed, "meets": meets_targets(r)})
            print(f"- {family} seed {seed}: {session_line(r)}", flush=True)
    compact = {
        family: {
            "seeds": e["seeds"],
            **{f"{k}_median": round(e[k]["median"], 3) for k in RATIOS},
            **{f"{k}_worst": round(e[k]["worst"], 3) for k in RATIOS},
            "meets_static": e["meets_static"],
            "meets_kalman": e["meets_kalman"],
        }
        for family, e in summary.items()
    }
    body = {"samples": args.samples, "families": compact}
    if longer:
        body["longer"] = {"samples": args.longer, "sessions": longer}
    print(json.dumps({"refh_science": body}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
