"""The science benchmarks' one way to run their sessions: one process per job in parallel or
all in this one, printing a line per session as it finishes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def run_sessions(
    run: Callable[[Any], Any],
    tasks: Sequence[Any],
    report_line: Callable[[Any], str],
    jobs: int = 1,
) -> list[Any]:
    """`run(task)` for every task, in order (in `jobs` processes when more than one; `run`
    must then be a module-level function), printing `report_line(result)` for each."""
    results: list[Any] = []
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for result in pool.map(run, tasks):
                print(report_line(result), flush=True)
                results.append(result)
        return results
    for task in tasks:
        result = run(task)
        print(report_line(result), flush=True)
        results.append(result)
    return results


def print_summary(
    key: str, summary: Any, text: str, n_sessions: int, seconds: float, seeds: int
) -> None:
    """The end of a science benchmark's output: its tables, the time taken, and as the last
    line the JSON summary `python -m benchmarks` reads (`{key: summary, seeds, seconds}`)."""
    print()
    print(text)
    print(f"\n{n_sessions} sessions in {seconds:.0f} s on {os.cpu_count()} CPU(s), one thread each")
    print(json.dumps({key: summary, "seeds": seeds, "seconds": seconds}))
