"""`python -m benchmarks --only ...` keeps the speed sections it did not rerun: each section's
JSON summary is written under it and read back (`benchmarks.__main__.earlier`)."""

from __future__ import annotations

from pathlib import Path

import pytest

import benchmarks.__main__ as runner


def _headline(summary: dict) -> list[tuple[str, str]]:
    return [(f"rate {summary['name']}", f"{summary['rate']:,} samples/s")]


BENCHES = [
    runner.Bench("a", "First peer", "a.py", ("--x", "1"), _headline),
    runner.Bench("b", "Second peer", "b.py", (), _headline),
]


def test_sections_written_with_their_summary_are_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "README", tmp_path / "README.md")
    results = [
        (BENCHES[0], "a's table\n(two lines)", {"name": "a", "rate": 10}, 3.0),
        (BENCHES[1], "b's table", {"name": "b", "rate": 20}, 4.0),
    ]
    runner.write_readme(runner.render(results, 7.0))
    found = runner.earlier(BENCHES)
    assert found == {
        "a": ("a's table\n(two lines)", {"name": "a", "rate": 10}, 3.0),
        "b": ("b's table", {"name": "b", "rate": 20}, 4.0),
    }
    # rendering what was read back gives the same headline rows
    again = runner.render([(b, *found[b.key]) for b in BENCHES], 7.0, kept=("a", "b"))
    assert "| rate a | 10 samples/s |" in again and "| rate b | 20 samples/s |" in again
    assert "(a, b from an earlier run, as written then)" in again


def test_a_section_without_a_summary_is_not_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "README", tmp_path / "README.md")
    block = runner.render([(BENCHES[1], "b's table", {"name": "b", "rate": 20}, 4.0)], 4.0)
    runner.write_readme(block.replace(runner.SUMMARY_TAG, "<!-- "))
    assert runner.earlier(BENCHES) == {}
