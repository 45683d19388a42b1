"""The burn-in benchmark runs end to end on a small stream and times the steps it names."""

from __future__ import annotations

import json

import pytest

from benchmarks import burn_in_steps


def test_burn_in_benchmark_times_the_end_and_the_landing(capsys: pytest.CaptureFixture) -> None:
    assert burn_in_steps.main(["--channels", "16", "--window", "20", "--rate", "20000"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["burn_in_steps"]
    assert [r["learner"] for r in rows] == ["sm", "nsm", "biocca"]
    for r in rows:
        assert r["burn_in"] >= 400 and r["lag"] >= 1
        assert 0 < r["end_ms"] <= r["worst_ms"] and 0 < r["landing_ms"] <= r["worst_ms"]
        assert r["steady_p50_ms"] <= r["steady_p99_ms"] and r["inline_ms"] > 0
