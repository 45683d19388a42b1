"""Decoders scored as `EVALUATION.md` asks: calibrate, then decode, on families of simulated
populations and on the shared linear-track recording, beside the offline baselines.

For each family of `streamlab.sim.decoding` (`place_field`, `cosine_velocity`, `drifting`) and
each seed, the session's first half is the calibration (labels given), the second half is
decoded (no labels) and scored. The online decoders run at their defaults, only their output
size set to the behaviour's q: `akd` (adaptive Kalman decoder: an online ridge regression on
lagged square-root counts as the observation, combined with learned dynamics by a gain learned
from the labels), `three_factor` and `force`
(reservoir readouts, `neuron="rate"`), `refh` (recurrent EFH, its RLS readout with
`n_targets=q`) and `online_ridge` (`ridge`: ridge on lagged square-root counts by RLS); and,
with intermittent feedback (a label every 10 samples after calibration, each decoded before
it is learned from; forgetting 0.999), `akd+fb` and `online_ridge+fb`. Each is run a second
time on the counts circularly shifted against the labels by `scoring.control_shift` (the
shift, between a quarter and three quarters of the session, at which the labels are least
self-correlated: half a session of laps can be a whole number of laps): the shift control,
whose score must collapse. The baselines come from
`streamlab.scoring.baseline_scores`: the calibration mean, ridge on lagged square-root counts
(lags and penalty by blocked cross-validation in the calibration part) and the offline Kalman
decoder. The real recording is the first 900 s of tracking of `../shared/data/hc-linear-track`
in 250 ms bins, decoding the tracked (x, y) in camera pixels, scored the same way.

Printed: a line per session, then markdown tables of R² (mean over the targets) by family and
decoder, median and worst seed; the shift controls' median and highest; how many seeds each
decoder beats ridge and the Kalman decoder on; and a one-line JSON summary. Everything runs on
one thread (torch and BLAS); `--jobs` runs sessions in parallel processes.

Run (from the repository root):

    python -m benchmarks.decoding_science [--seeds 10] [--families place_field,drifting]
        [--no-real] [--decoders akd,online_ridge] [--jobs 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks.sessions import print_summary, run_sessions
from streamlab.learners.registry import parse_spec
from streamlab.scoring import baseline_scores, run_decoder, score, shifted
from streamlab.sim.decoding import FAMILIES

REPO = Path(__file__).resolve().parents[1]
LINEAR_TRACK = REPO.parent / "shared" / "data" / "hc-linear-track"
REAL = "linear_track (real)"
TRACK_SECONDS, TRACK_BIN_S = 900.0, 0.25


@dataclass(frozen=True)
class Decoder:
    """An online decoder: its registry spec without the output size, the parameter that sets
    that size, and how often it gets a label after calibration."""

    spec: str
    size_param: str = "n_components"
    feedback_every: int | None = None  # a label every k samples after calibration

    def build(self, q: int, seed: int) -> Any:
        sep = "," if ":" in self.spec else ":"
        return parse_spec(f"{self.spec}{sep}{self.size_param}={q}").build(device="cpu", seed=seed)


DECODERS = {
    "akd": Decoder("akd"),
    "three_factor": Decoder("three_factor:neuron=rate"),
    "force": Decoder("force:neuron=rate"),
    "refh": Decoder("refh", "n_targets"),
    "online_ridge": Decoder("ridge"),
    # intermittent feedback: a label every 10 samples after calibration, forgetting 0.999
    "akd+fb": Decoder("akd:forgetting=0.999", feedback_every=10),
    "online_ridge+fb": Decoder("ridge:forgetting=0.999", feedback_every=10),
}
BASELINES = {
    "baseline: ridge": "ridge",
    "baseline: Kalman (offline)": "Kalman",
    "baseline: calibration mean": "mean",
}
COLUMNS = [*DECODERS, *BASELINES.values()]


@dataclass
class Session:
    """One session's scores: R² (mean over targets) per decoder, baseline and shift control."""

    family: str
    seed: int
    describe: str
    r2: dict[str, float] = field(default_factory=dict)
    shift: dict[str, float] = field(default_factory=dict)
    per_target: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def evaluate(family: str, seed: int, x: np.ndarray, y: np.ndarray, describe: str) -> Session:
    """Calibrate on the first half of (x, y), decode the second; every decoder, its shift
    control and the baselines."""
    torch.set_num_threads(1)
    threadpool_limits(1)
    y = y if y.ndim == 2 else y[:, None]
    calibration = len(x) // 2
    truth = y[calibration:]
    session = Session(family, seed, describe)
    start = time.perf_counter()
    for row in baseline_scores(x, y, calibration):
        session.r2[BASELINES[row.name]] = row.mean_r2
        session.per_target[BASELINES[row.name]] = [float(v) for v in row.r2]
        if "non-finite" in row.note:
            session.notes.append(f"{row.name}: {row.note}")
    session.seconds["baselines"] = time.perf_counter() - start
    control = shifted(x, y)
    for name, decoder in DECODERS.items():
        start = time.perf_counter()
        for key, data, out in ((name, x, session.r2), (name, control, session.shift)):
            learner = decoder.build(y.shape[1], seed)
            decoded = run_decoder(learner, data, y, calibration, decoder.feedback_every)
            row = score(key, truth, decoded[calibration:])
            out[name] = row.mean_r2
            if data is x:
                session.per_target[name] = [float(v) for v in row.r2]
            if row.note:
                kind = "" if data is x else " (shift control)"
                session.notes.append(f"{name}{kind}: {row.note}")
        session.seconds[name] = time.perf_counter() - start
    return session


def simulated(family: str, seed: int) -> Session:
    data = FAMILIES[family](seed)
    return evaluate(family, seed, data.counts, data.behaviour, data.summary())


def real(folder: Path) -> Session:
    """The linear track: first 900 s of tracking, 250 ms bins, target the tracked (x, y)."""
    from streamlab.adapters.linear_track import bin_session, load_linear_track

    track = load_linear_track(folder)
    begin = float(track.position_t[0])
    counts, xy, _ = bin_session(track, TRACK_BIN_S, begin, begin + TRACK_SECONDS)
    describe = (
        f"linear track: {len(counts)} bins of {1e3 * TRACK_BIN_S:.0f} ms, {counts.shape[1]} "
        f"units (mean {counts.mean() / TRACK_BIN_S:.1f} Hz), q = 2 (x, y pixels)"
    )
    return evaluate(REAL, 0, counts, xy, describe)


def _run(task: tuple[str, int, Path]) -> Session:
    family, seed, folder = task
    return real(folder) if family == REAL else simulated(family, seed)


def report_line(session: Session) -> str:
    parts = [f"{k} {session.r2[k]:.2f}" for k in COLUMNS]
    shift = ", ".join(f"{k} {session.shift[k]:.2f}" for k in DECODERS)
    took = sum(session.seconds.values())
    line = f"[{session.family} seed {session.seed}] {session.describe}\n    R²: " + ", ".join(parts)
    line += f"\n    shift control R²: {shift} ({took:.0f} s)"
    if any(len(v) > 1 for v in session.per_target.values()):
        each = ", ".join(
            f"{k} ({', '.join(f'{v:.2f}' for v in session.per_target[k])})" for k in COLUMNS
        )
        line += f"\n    R² per target: {each}"
    return line + "".join(f"\n    note: {n}" for n in session.notes)


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def summarise(sessions: list[Session]) -> dict[str, dict[str, Any]]:
    """Per family: median, worst (lowest) seed and per-seed R² of every column; the shift
    controls' median and highest; seeds on which each decoder beats ridge and Kalman."""
    out: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(s.family for s in sessions):
        rows = [s for s in sessions if s.family == family]
        entry: dict[str, Any] = {"seeds": len(rows)}
        for column in COLUMNS:
            values = [s.r2[column] for s in rows]
            entry[column] = {
                "median": _median(values),
                "worst": float(min(values, key=lambda v: v if math.isfinite(v) else -np.inf)),
                "r2": values,
            }
        for name in DECODERS:
            shifts = [s.shift[name] for s in rows]
            entry[name]["shift_median"] = _median(shifts)
            entry[name]["shift_max"] = float(np.nanmax(shifts)) if shifts else float("nan")
            for base in ("ridge", "Kalman"):
                entry[name][f"beats_{base}"] = sum(s.r2[name] > s.r2[base] for s in rows)
        entry["seconds"] = {
            k: float(sum(s.seconds.get(k, 0.0) for s in rows)) for k in ("baselines", *DECODERS)
        }
        out[family] = entry
    return out


def tables(summary: dict[str, dict[str, Any]]) -> str:
    def fmt(v: float) -> str:
        return "NaN" if not math.isfinite(v) else f"{v:.2f}"

    head = "| family (seeds) | " + " | ".join(COLUMNS) + " |"
    lines = [
        "R² on the decoded half (mean over targets), median / worst seed:",
        "",
        head,
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for family, e in summary.items():
        cells = [f"{fmt(e[c]['median'])} / {fmt(e[c]['worst'])}" for c in COLUMNS]
        lines.append(f"| {family} ({e['seeds']}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Shift controls (counts circularly shifted against the labels), R² median / highest;",
        "seeds on which the decoder beats ridge, and the Kalman decoder:",
        "",
        "| family | "
        + " | ".join(f"{d} shift" for d in DECODERS)
        + " | "
        + " | ".join(f"{d} > ridge, Kalman" for d in DECODERS)
        + " |",
        "|---" * (2 * len(DECODERS) + 1) + "|",
    ]
    for family, e in summary.items():
        shifts = [f"{fmt(e[d]['shift_median'])} / {fmt(e[d]['shift_max'])}" for d in DECODERS]
        wins = [
            f"{e[d]['beats_ridge']}/{e['seeds']}, {e[d]['beats_Kalman']}/{e['seeds']}"
            for d in DECODERS
        ]
        lines.append(f"| {family} | " + " | ".join(shifts + wins) + " |")
    lines += ["", "Compute (s, all seeds, decoder = run + shift control):", ""]
    for family, e in summary.items():
        lines.append(f"- {family}: " + ", ".join(f"{k} {v:.0f}" for k, v in e["seconds"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per family (default 10)")
    parser.add_argument(
        "--families", default=",".join(FAMILIES), help="comma-separated (default: all)"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the linear-track recording")
    parser.add_argument(
        "--decoders", default=",".join(DECODERS), help="comma-separated (default: all)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="sessions in parallel (default 1)")
    parser.add_argument(
        "--data", type=Path, default=LINEAR_TRACK, help=f"linear-track folder ({LINEAR_TRACK})"
    )
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {list(FAMILIES)}")
    chosen = [d for d in args.decoders.split(",") if d]
    if set(chosen) - set(DECODERS):
        parser.error(f"unknown decoders {sorted(set(chosen) - set(DECODERS))}")
    for name in set(DECODERS) - set(chosen):
        del DECODERS[name]
    COLUMNS[:] = [*DECODERS, *BASELINES.values()]
    tasks = [(family, seed, args.data) for family in families for seed in range(args.seeds)]
    if not args.no_real:
        if args.data.is_dir():
            tasks.append((REAL, 0, args.data))
        else:
            print(f"{args.data} is absent: the real recording is skipped", flush=True)
    print(
        f"calibrate on the first half, decode the second; {args.seeds} seed(s) per family; "
        f"decoders at their defaults: {', '.join(d.spec for d in DECODERS.values())}",
        flush=True,
    )
    start = time.perf_counter()
    sessions: list[Session] = run_sessions(_run, tasks, report_line, args.jobs)
    total = time.perf_counter() - start
    summary = summarise(sessions)
    print_summary("decoding_science", summary, tables(summary), len(sessions), total, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
