"""Every learner's per-sample step at its demo size: samples/s and p50/p99 per sample for one
session, then B independent sessions stepped in lockstep (B = 1, 8, 64, 512, 4096), and from
those an estimate of the share of a single session's step spent in Python and framework
overhead rather than arithmetic.

The overhead estimate: at large B the per-op cost (Python, torch dispatch, kernel launch) is
paid once for B sessions, so the per-session time at the largest B measured approximates the
arithmetic of one sample; `overhead = 1 - that / (time per step at B = 1)`. It is a lower bound
of the arithmetic's share where the big batch falls out of cache.

A batch size is skipped (`-`) once a step would take longer than `--max-step-s` or the state
would not fit the memory budget. Each (learner, B) is timed for about `--seconds` after a
warm-up; samples/s counts every session's sample (B x steps/s). Single-threaded on the CPU; on
CUDA as well when a GPU is visible (synchronised after every step, so a step's time is its
latency). Learners run with their default backend (NumPy steps on the CPU where they have one,
CUDA graphs on CUDA where they have them); "(eager)" rows are the same learner in plain torch
ops.

Run (from the repository root):

    python benchmarks/learner_steps.py [--seconds 1.0] [--batches 1,8,64,512,4096]
        [--learners sm,nsm]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from streamlab.learners import LEARNERS
from streamlab.learners.base import Learner

RNG = np.random.default_rng(0)


@dataclass(frozen=True)
class Case:
    """A learner at its demo size: how to build it and the shape of its x (and y)."""

    label: str
    build: Callable[[str], Learner]
    n_x: int
    n_y: int = 0
    counts: bool = True  # x are spike counts (else Gaussian)
    cost: bool = False  # x a smooth AR(1) observation, y its squared norm (a quadratic cost)
    warmup: int = 50


def _kalman(device: str) -> Learner:
    k, n = 4, 128
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.05, 0.2, k // 2)
    A = np.zeros((k, k))
    for i, th in enumerate(theta):
        c, s = 0.98 * np.cos(th), 0.98 * np.sin(th)
        A[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, -s], [s, c]]
    C = rng.normal(size=(n, k))
    return LEARNERS["kalman"](A=A.tolist(), C=C.tolist(), Q=0.1, R=1.0, device=device)


CASES = [
    # sm and biocca: a 100-sample burn-in and a 150-step warm-up, so that the rows are the steady
    # step; at the default burn-in (2,000 samples) each of its samples also adds a rank-one
    # n x n (biocca (n+q)^2) moment update, one-off work that dominated these rows at large B.
    Case(
        "sm", lambda d: LEARNERS["sm"](n_components=4, init_samples=100, device=d), 128, warmup=150
    ),
    Case(
        "sm (eager)",
        lambda d: LEARNERS["sm"](n_components=4, init_samples=100, backend="torch", device=d),
        128,
        warmup=150,
    ),
    Case("nsm", lambda d: LEARNERS["nsm"](n_components=4, device=d), 128, warmup=300),
    Case(
        "nsm (eager)",
        lambda d: LEARNERS["nsm"](n_components=4, backend="torch", device=d),
        128,
        warmup=300,
    ),
    Case(
        "biocca",
        lambda d: LEARNERS["biocca"](n_components=2, init_samples=100, device=d),
        64,
        16,
        counts=False,
        warmup=150,
    ),
    Case(
        "biocca (eager)",
        lambda d: LEARNERS["biocca"](n_components=2, init_samples=100, backend="torch", device=d),
        64,
        16,
        counts=False,
        warmup=150,
    ),
    Case("kalman", _kalman, 128, counts=False),
    Case("akd", lambda d: LEARNERS["akd"](n_components=2, device=d), 96, 2),
    Case(
        "akd (eager)", lambda d: LEARNERS["akd"](n_components=2, backend="torch", device=d), 96, 2
    ),
    Case(
        "bio_ofc",
        lambda d: LEARNERS["bio_ofc"](delay=2, learning_rate=1e-3, device=d, seed=1),
        2,
        1,
        False,
        True,
    ),
    Case("refh", lambda d: LEARNERS["refh"](n_components=240, device=d), 15),
    Case(
        "three_factor",
        lambda d: LEARNERS["three_factor"](
            n_components=2, n_neurons=300, bin_ms=20.0, dt_ms=1.0, device=d
        ),
        8,
        2,
    ),
    Case(
        "force",
        lambda d: LEARNERS["force"](
            n_components=2, n_neurons=300, bin_ms=20.0, dt_ms=1.0, device=d
        ),
        8,
        2,
    ),
    # refits=0: the refits are one-off work in the first 4 x burn_in bins (their slices'
    # cost is in glm_step's p99); this table is the steady step that follows them. The
    # burn-in fit at burn_in=100 ends at bin 188 at every B (measured): warm-up 250 bins.
    Case(
        "sglm",
        lambda d: LEARNERS["sglm"](n_states=3, burn_in=100, refits=0, check_counts=False, device=d),
        20,
        warmup=250,
    ),
    Case(
        "sglm (eager)",
        lambda d: LEARNERS["sglm"](
            n_states=3, burn_in=100, refits=0, check_counts=False, backend="torch", device=d
        ),
        20,
        warmup=250,
    ),
]


def _inputs(case: Case, batch: int, steps: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (steps, batch)
    if case.counts:
        x = RNG.poisson(0.5, (*shape, case.n_x)).astype(np.float32)
    else:
        x = RNG.normal(size=(*shape, case.n_x)).astype(np.float32)
    y = RNG.normal(size=(*shape, max(case.n_y, 1))).astype(np.float32)
    if case.cost:  # a controller learns a plant's dynamics: white noise has none to learn
        for t in range(1, steps):
            x[t] = 0.9 * x[t - 1] + 0.3 * x[t]
        y = np.square(x).sum(axis=-1, keepdims=True)
    return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)


def _state_bytes(learner: Learner) -> int:
    return sum(t.numel() * t.element_size() for t in learner._state_tensors().values())


def measure(
    case: Case, batch: int, device: str, seconds: float
) -> tuple[float, float, float, int] | None:
    """(sessions x samples/s, p50 µs, p99 µs per step, state bytes) of `case` at `batch`; None
    if its state went non-finite."""
    learner = case.build(device)
    supervised = case.n_y > 0
    x, y = _inputs(case, batch, case.warmup + 64, device)
    step = (lambda t: learner.step(x[t], y[t])) if supervised else (lambda t: learner.step(x[t]))
    for t in range(case.warmup):
        step(t)
    times: list[int] = []
    deadline = time.perf_counter() + seconds
    t = case.warmup
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter_ns()
        step(case.warmup + (t % 64))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter_ns() - start)
        t += 1
    if not all(torch.isfinite(v).all() for v in learner._state_tensors().values()):
        return None
    p50, p99 = np.percentile(np.array(times) / 1e3, [50, 99])
    rate = batch * 1e6 / float(np.mean(np.array(times) / 1e3))
    return rate, float(p50), float(p99), _state_bytes(learner)


def run(
    batches: list[int],
    device: str,
    seconds: float,
    max_step_s: float,
    max_state_gb: float,
    only: set[str] | None = None,
) -> list[dict[str, object]]:
    rows = []
    for case in CASES:
        if only is not None and case.label.split(" ")[0] not in only:
            continue
        row: dict[str, object] = {"learner": case.label, "device": device}
        per_session: dict[int, float] = {}
        single_bytes = 0
        for batch in batches:
            if per_session:
                last = max(per_session)
                step_s = per_session[last] * batch / 1e6
                if step_s > max_step_s or single_bytes * batch > max_state_gb * 1e9:
                    row[f"B{batch}"] = None
                    continue
            result = measure(case, batch, device, seconds)
            if result is None:
                row[f"B{batch}"] = None
                continue
            rate, p50, p99, state_bytes = result
            if batch == 1:
                row.update(samples_per_s=rate, p50_us=p50, p99_us=p99)
                single_bytes = state_bytes
            row[f"B{batch}"] = rate
            per_session[batch] = 1e6 / rate
        if 1 in per_session and len(per_session) > 1:
            best = min(per_session.values())
            row["overhead_share"] = 1.0 - best / per_session[1]
            row["lockstep_speedup"] = per_session[1] / best
        rows.append(row)
        print(_line(row, batches), flush=True)
    return rows


def _fmt_rate(value: object) -> str:
    if value is None:
        return "-"
    v = float(value)  # type: ignore[arg-type]
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def _line(row: dict[str, object], batches: list[int]) -> str:
    cells = [f"{row['learner']:<13}", f"{row['device']:<4}"]
    cells.append(_fmt_rate(row.get("samples_per_s")).rjust(8))
    cells.append(f"{row.get('p50_us', float('nan')):8.1f} {row.get('p99_us', float('nan')):8.1f}")
    cells += [_fmt_rate(row.get(f"B{b}")).rjust(8) for b in batches]
    share = row.get("overhead_share")
    cells.append(f"{100 * float(share):5.0f}%" if share is not None else "    -")  # type: ignore[arg-type]
    return " ".join(cells)


def header(batches: list[int]) -> str:
    cols = ["learner".ljust(13), "dev ", "samples/s".rjust(8), "p50 µs".rjust(8), "p99 µs".rjust(8)]
    cols += [f"B={b}".rjust(8) for b in batches]
    return " ".join(cols) + "  overhead"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per cell")
    parser.add_argument("--batches", default="1,8,64,512,4096")
    parser.add_argument("--max-step-s", type=float, default=0.25)
    parser.add_argument("--max-state-gb", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--devices", default="cpu,cuda", help="cuda is skipped without a GPU")
    parser.add_argument("--learners", help="comma-separated learner names (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"learner steps at demo size, {args.threads} thread(s); columns B=...: sessions x "
        "samples/s with B sessions in lockstep; overhead: estimated Python/framework share of a "
        "single session's step"
    )
    print(header(batches))
    devices = [
        d
        for d in args.devices.split(",")
        if d == "cpu" or (d == "cuda" and torch.cuda.is_available())
    ]
    rows = []
    for device in devices:
        only = set(args.learners.split(",")) if args.learners else None
        rows += run(batches, device, args.seconds, args.max_step_s, args.max_state_gb, only)
    print(json.dumps({"learner_steps": rows}))


if __name__ == "__main__":
    main()
