"""The soak's CI version: 30 s of 384 channels at 1 kHz over PUSH/PULL through three learners
with checkpointing (`benchmarks/soak.py`; the full run is 30 minutes, by hand)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_half_a_minute_of_384_channels_loses_nothing_and_memory_stays_flat() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "soak.py"),
            "--seconds",
            "30",
            "--max-growth-mb-per-min",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])["soak"]
    assert summary["samples"] == 30_000 and summary["missing"] == 0 and summary["gaps"] == 0
    assert summary["status"] == "complete"
    assert summary["rss_end_mb"] < summary["rss_after_warmup_mb"] + 30
