"""The exchange benchmark runs end to end on a small federation and reports every figure.

Its figures are benchmark targets, not asserted here; what is checked is that the benchmark
itself works: every round moves exactly the useful bytes (the script asserts that), the JSON
has the keys the issue names, and steady-state rounds receive into memory that earlier rounds
gave back (far fewer page faults than round 1), which is what the steady-state figure means.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_exchange_benchmark_reports_first_round_and_steady_state(tmp_path: Path) -> None:
    out = tmp_path / "exchange.json"
    args = ["--peers", "3", "--size-mb", "6", "--rounds", "3", "--repeats", "1"]
    cmd = [sys.executable, str(ROOT / "benchmarks/exchange.py"), *args]
    cmd += ["--block-sizes", "65536", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("goodput_ratio", "goodput_ratio_first_round", "duplicate_ratio"):
        assert key in result
    assert result["goodput_ratio"] > 0
    assert result["goodput_ratio_first_round"] > 0
    assert result["duplicate_ratio"] <= 0.005
    assert 0 < result["control_ratio"] <= 0.005
    assert result["peak_rss_mb"] > 0
    assert result["setting"]["rounds"] == 3
    assert [len(run) for run in result["raw_times_s"]] == [3]
    row = result["rows"][0]
    # Each peer keeps 12 MB from others in round 1 (2,930 fresh 4 KiB pages); by round 3 the
    # blobs of round 1 were dropped and their memory is reused.
    assert row["first_round_faults"] > 3 * 2900
    assert row["faults"] < row["first_round_faults"] / 4
