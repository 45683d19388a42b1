"""The science benchmarks' one way to run their sessions: one process per job in parallel or
all in this one, printing a line per session as it finishes."""

from __future__ import annotations

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
