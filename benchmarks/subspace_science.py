"""The online subspace learners against their batch methods on the same samples, as
`EVALUATION.md` asks: `sm` (SimilarityMatching, online PSP) against batch PCA on the PCA
families of `streamlab.sim.subspaces` (`gaussian`, `counts`, `calcium`, `scaled`), and `biocca`
(BioCCA) against batch CCA on `two_views`.

Each learner runs at its defaults, only `n_components` set to the family's k. Every session is
streamed once; at each checkpoint (`--checkpoints`, sample counts a user would stream) the
learner's filters and the batch method fitted on the same first t samples are scored by
`subspace_error` against the true generating subspace (for CCA, the mean of the two views'
errors against the population canonical directions). Printed: a line per session, then
markdown tables per family of the median and worst seed of each method's error and of the gap
(online minus batch) at each checkpoint, the seeds within 0.1 of the batch method (the issue's
target), the samples the online learner needs to get there on its slowest seed, and PCA's
population floor (what PCA reaches with unlimited samples: far from 0 where the noise is
heteroscedastic); then a one-line JSON summary. Everything runs on one thread.

Run (from the repository root):

    python -m benchmarks.subspace_science [--seeds 10] [--families gaussian,two_views]
        [--checkpoints 1000,3000,6000,20000] [--jobs 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks.sessions import print_summary, run_sessions
from streamlab.learners.similarity import BioCCA, SimilarityMatching, subspace_error
from streamlab.sim.subspaces import CCA_FAMILIES, FAMILIES, SubspaceData, batch_cca, batch_pca

CHECKPOINTS = (1000, 3000, 6000, 20000)
TARGET = 0.1  # the target: online error within 0.1 of the batch method's, every seed


@dataclass
class Session:
    """One family x seed: the online and batch errors at each checkpoint."""

    family: str
    seed: int
    describe: str
    floor: float
    online: dict[int, float] = field(default_factory=dict)
    batch: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0

    def needed(self) -> int | None:
        """The first checkpoint from which the online error stays within TARGET of batch."""
        ok = None
        for t in sorted(self.online):
            within = self.online[t] - self.batch[t] <= TARGET
            ok = (ok or t) if within else None
        return ok


def pca_errors(data: SubspaceData, checkpoints: tuple[int, ...]) -> tuple[dict, dict]:
    """Stream x through `sm` at its defaults; its error and batch PCA's at each checkpoint."""
    sm = SimilarityMatching(n_components=data.k, device="cpu", seed=0)
    x = torch.from_numpy(data.x.astype(np.float32))
    online, batch = {}, {}
    for t in range(len(x)):
        sm.step(x[t])
        if t + 1 in checkpoints:
            online[t + 1] = subspace_error(sm.filters[0].numpy(), data.basis)
            batch[t + 1] = subspace_error(batch_pca(data.x[: t + 1], data.k).T, data.basis)
    return online, batch


def cca_error(vx: np.ndarray, vy: np.ndarray, data: SubspaceData) -> float:
    """Mean over the two views of the subspace error of filters (n, k), (q, k) to the truth."""
    assert data.basis_y is not None
    return 0.5 * (subspace_error(vx.T, data.basis) + subspace_error(vy.T, data.basis_y))


def cca_errors(data: SubspaceData, checkpoints: tuple[int, ...]) -> tuple[dict, dict]:
    """Stream (x, y) through `biocca` at its defaults; its error and batch CCA's."""
    assert data.y is not None
    learner = BioCCA(n_components=data.k, device="cpu", seed=0)
    x = torch.from_numpy(data.x.astype(np.float32))
    y = torch.from_numpy(data.y.astype(np.float32))
    online, batch = {}, {}
    for t in range(len(x)):
        learner.step(x[t], y[t])
        if t + 1 in checkpoints:
            vx, vy = (v[0].numpy() for v in learner.filters)
            online[t + 1] = cca_error(vx, vy, data)
            batch[t + 1] = cca_error(*batch_cca(data.x[: t + 1], data.y[: t + 1], data.k), data)
    return online, batch


def run(task: tuple[str, int, tuple[int, ...]]) -> Session:
    family, seed, checkpoints = task
    torch.set_num_threads(1)
    threadpool_limits(1)
    start = time.perf_counter()
    data = FAMILIES[family](seed, n_samples=max(checkpoints))
    scorer = cca_errors if family in CCA_FAMILIES else pca_errors
    online, batch = scorer(data, checkpoints)
    session = Session(family, seed, data.summary(), data.pca_floor, online, batch)
    session.seconds = time.perf_counter() - start
    return session


def method_names(family: str) -> tuple[str, str]:
    return ("biocca", "batch CCA") if family in CCA_FAMILIES else ("sm", "batch PCA")


def report_line(s: Session) -> str:
    ours, theirs = method_names(s.family)
    cells = ", ".join(f"{t}: {s.online[t]:.3f} / {s.batch[t]:.3f}" for t in sorted(s.online))
    floor = "" if s.family in CCA_FAMILIES else f"; PCA floor {s.floor:.3f}"
    return (
        f"[{s.family} seed {s.seed}] {s.describe}\n    {ours} / {theirs} error by samples: "
        f"{cells}{floor} ({s.seconds:.1f} s)"
    )


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "worst": float(np.max(values))}


def summarise(sessions: list[Session]) -> dict[str, dict[str, Any]]:
    """Per family and checkpoint: median and worst seed of online, batch and gap; seeds within
    TARGET; the samples needed on the slowest seed (None: not within the longest session)."""
    out: dict[str, dict[str, Any]] = {}
    for family in dict.fromkeys(s.family for s in sessions):
        rows = [s for s in sessions if s.family == family]
        ours, theirs = method_names(family)
        entry: dict[str, Any] = {"seeds": len(rows), "online": ours, "batch": theirs}
        for t in sorted(rows[0].online):
            gaps = [s.online[t] - s.batch[t] for s in rows]
            entry[str(t)] = {
                ours: _stats([s.online[t] for s in rows]),
                theirs: _stats([s.batch[t] for s in rows]),
                "gap": _stats(gaps),
                "within_target": int(sum(g <= TARGET for g in gaps)),
            }
        needed = [s.needed() for s in rows]
        entry["samples_needed_worst_seed"] = (
            None if any(n is None for n in needed) else int(max(needed))  # type: ignore[type-var]
        )
        entry["seeds_never_within_target"] = [
            s.seed for s, n in zip(rows, needed, strict=True) if n is None
        ]
        if family not in CCA_FAMILIES:
            entry["pca_floor"] = _stats([s.floor for s in rows])
        out[family] = entry
    return out


def tables(summary: dict[str, dict[str, Any]]) -> str:
    lines = [
        "Subspace error against the true subspace (0 same, 2 orthogonal), median / worst seed,",
        f"at each number of samples streamed; gap = online - batch (target <= {TARGET}):",
        "",
        "| family (seeds) | samples | online | batch | gap | seeds within target |",
        "|---|---|---|---|---|---|",
    ]
    for family, e in summary.items():
        ours, theirs = e["online"], e["batch"]
        for key in [k for k in e if k.isdigit()]:
            row = e[key]
            lines.append(
                f"| {family} ({e['seeds']}) | {key} | {ours} {row[ours]['median']:.3f} / "
                f"{row[ours]['worst']:.3f} | {theirs} {row[theirs]['median']:.3f} / "
                f"{row[theirs]['worst']:.3f} | {row['gap']['median']:.3f} / "
                f"{row['gap']['worst']:.3f} | {row['within_target']}/{e['seeds']} |"
            )
    lines += ["", "Samples the online learner needs to stay within the target on its slowest seed:"]
    for family, e in summary.items():
        needed = e["samples_needed_worst_seed"]
        text = (
            f"{needed}"
            if needed is not None
            else (f"not reached within the session on seeds {e['seeds_never_within_target']}")
        )
        floor = e.get("pca_floor")
        extra = (
            ""
            if floor is None
            else (
                f" (PCA population floor median {floor['median']:.3f}, worst {floor['worst']:.3f})"
            )
        )
        lines.append(f"- {family}: {text}{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per family (default 10)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument(
        "--checkpoints",
        default=",".join(map(str, CHECKPOINTS)),
        help="sample counts at which to score (the last is the session length)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="sessions in parallel (default 1)")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {list(FAMILIES)}")
    checkpoints = tuple(sorted(int(c) for c in args.checkpoints.split(",") if c))
    tasks = [(family, seed, checkpoints) for family in families for seed in range(args.seeds)]
    print(
        f"sm and biocca at their defaults (n_components = k) against batch PCA / CCA on the same "
        f"samples; {args.seeds} seed(s) per family; checkpoints {list(checkpoints)}",
        flush=True,
    )
    start = time.perf_counter()
    sessions: list[Session] = run_sessions(run, tasks, report_line, args.jobs)
    total = time.perf_counter() - start
    summary = summarise(sessions)
    print_summary("subspace_science", summary, tables(summary), len(sessions), total, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
