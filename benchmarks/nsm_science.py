"""Nonnegative similarity matching (`nsm`) grouping cells into assemblies, scored as
`EVALUATION.md` asks: families of simulated populations and the shared zebrafish tectum
recording, beside the offline baselines on the same frames.

For each family of `streamlab.sim.assemblies` (`spike_counts`, `calcium`) and each seed, the
session's frames are streamed once through `nsm` at its defaults with `n_components` the
number of assemblies; each cell goes to the unit whose output it correlates with most (the
learner's `assignments`, from running statistics of outputs and input). The
baselines (scikit-learn, same k) are k-means on the frames (each cell to the centroid where it
is largest), NMF of the frames (each cell to its largest component) and spectral clustering of
the cells on their positive correlations. The score is the adjusted Rand index against the
truth on the cells in exactly one assembly. Beside it, for `nsm`: the fewest channels any unit
owns and the smallest share of frames any unit wins (dead or degenerate units show there).
The real recording is `../shared/data/zebrafish-tectum` (114 cells, 5 published assemblies),
scored the same way.

Printed: a line per session, a markdown table of ARI by family and method (median and worst
seed), and as the last line a one-line JSON summary. Everything runs on one thread.

Run (from the repository root):

    python -m benchmarks.nsm_science [--seeds 10] [--families spike_counts,calcium] [--no-real]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from streamlab.learners.similarity import NonnegativeSimilarityMatching
from streamlab.sim.assemblies import (
    FAMILIES,
    AssemblyData,
    assembly_ari,
    assign_cells,
    channels_owned,
    frame_shares,
    offline_assignments,
)

REPO = Path(__file__).resolve().parents[1]
ZEBRAFISH = REPO.parent / "shared" / "data" / "zebrafish-tectum" / "zf_20151104-f1.mat"
REAL = "zebrafish f1 (real)"
METHODS = ("nsm", "kmeans", "nmf", "spectral")


@dataclass
class Session:
    """One session's ARI per method and the nsm units' use."""

    family: str
    seed: int
    describe: str
    ari: dict[str, float] = field(default_factory=dict)
    fewest_channels: int = 0
    smallest_share: float = 0.0
    seconds: float = 0.0


def stream_nsm(activity: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stream the frames once through `nsm` at its defaults (k units, CPU, float64); its
    outputs (T, k) and its `membership` (k, n), whose argmax over units is each cell's unit."""
    learner = NonnegativeSimilarityMatching(
        n_components=k, device="cpu", dtype="float64", seed=seed
    )
    frames = torch.from_numpy(np.ascontiguousarray(activity, dtype=np.float64))
    outputs = np.stack([learner.step(frame).numpy().reshape(-1) for frame in frames])
    return outputs, learner.membership[0].numpy()


def evaluate(family: str, seed: int, data: AssemblyData) -> Session:
    """`nsm` and the baselines on one session."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    session = Session(family, seed, data.summary())
    k = data.n_assemblies
    outputs, membership = stream_nsm(data.activity, k)
    session.ari["nsm"] = assembly_ari(data, assign_cells(membership))
    session.fewest_channels = int(channels_owned(membership).min())
    session.smallest_share = float(frame_shares(outputs).min())
    for name, assignment in offline_assignments(data.activity, k).items():
        session.ari[name] = assembly_ari(data, assignment)
    session.seconds = time.perf_counter() - start
    return session


def zebrafish(path: Path) -> AssemblyData:
    """The shared tectum recording as `AssemblyData` (frames x cells dF/F, 2.2 Hz)."""
    from scipy.io import loadmat

    recording = loadmat(path)
    activity = np.asarray(recording["activity_matrix"], dtype=np.float64).T
    assemblies = recording["detected_assemblies"].ravel()
    membership = np.zeros((activity.shape[1], len(assemblies)), dtype=bool)
    for j, cells in enumerate(assemblies):
        membership[np.asarray(cells).ravel() - 1, j] = True
    return AssemblyData(activity, membership, 2.2, REAL)


def report_line(session: Session) -> str:
    scores = ", ".join(f"{m} {session.ari[m]:.2f}" for m in METHODS)
    return (
        f"[{session.family} seed {session.seed}] {session.describe}\n    ARI: {scores}; nsm "
        f"units: fewest channels owned {session.fewest_channels}, smallest frame share "
        f"{session.smallest_share:.3f} ({session.seconds:.1f} s)"
    )


def summarise(sessions: list[Session]) -> dict[str, dict[str, Any]]:
    """Per family: median and worst seed of every method's ARI, the nsm units' worst use, and
    on how many seeds nsm is at least k-means."""
    out: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(s.family for s in sessions):
        rows = [s for s in sessions if s.family == family]
        entry: dict[str, Any] = {"seeds": len(rows)}
        for method in METHODS:
            values = [s.ari[method] for s in rows]
            entry[method] = {"median": float(np.median(values)), "worst": float(min(values))}
        entry["nsm"]["fewest_channels"] = min(s.fewest_channels for s in rows)
        entry["nsm"]["smallest_share"] = min(s.smallest_share for s in rows)
        entry["nsm"]["at_least_kmeans"] = sum(s.ari["nsm"] >= s.ari["kmeans"] for s in rows)
        out[family] = entry
    return out


def table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown: family x method, ARI median / worst seed."""
    lines = [
        "| family | seeds | " + " | ".join(METHODS) + " | nsm units (fewest channels, share) |",
        "| --- | --- | " + " | ".join("---" for _ in METHODS) + " | --- |",
    ]
    for family, entry in summary.items():
        cells = [f"{entry[m]['median']:.2f} / {entry[m]['worst']:.2f}" for m in METHODS]
        units = f"{entry['nsm']['fewest_channels']}, {entry['nsm']['smallest_share']:.3f}"
        lines.append(f"| {family} | {entry['seeds']} | " + " | ".join(cells) + f" | {units} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sessions = []
    with threadpool_limits(1):
        for family in args.families.split(","):
            for seed in range(args.seeds):
                sessions.append(evaluate(family, seed, FAMILIES[family](seed)))
                print(report_line(sessions[-1]), flush=True)
        if not args.no_real and ZEBRAFISH.exists():
            sessions.append(evaluate(REAL, 0, zebrafish(ZEBRAFISH)))
            print(report_line(sessions[-1]), flush=True)
    summary = summarise(sessions)
    print("\nARI against the true assemblies (median / worst seed), each method with k = the")
    print("number of assemblies; nsm at its defaults:\n")
    print(table(summary))
    result = {"nsm_science": summary}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
