"""The plans benchmark runs end to end and each plan moves the bytes its pattern implies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_plans_benchmark_moves_what_each_plan_implies(tmp_path: Path) -> None:
    out = tmp_path / "plans.json"
    n, mb, chunks = 8, 0.2, 16
    cmd = [sys.executable, str(ROOT / "benchmarks/plans.py"), "--peers", str(n)]
    cmd += ["--size-mb", str(mb), "--chunks", str(chunks), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    # all_to_all: every update reaches every other peer once, nothing twice.
    assert r["all_to_all"]["down_mb_per_peer"] == pytest.approx((n - 1) * mb, rel=0.02)
    # neighbours: 3 neighbours' updates each.
    assert r["neighbours"]["down_mb_per_peer"] == pytest.approx(3 * mb, rel=0.02)
    # reduce_scatter with 2 owners: a chunk goes to its owners, its aggregate to the rest.
    assert r["reduce_scatter"]["down_mb_per_peer"] == pytest.approx(3 * (n - 1) / n * mb, rel=0.1)
    for plan in ("all_to_all", "neighbours", "reduce_scatter"):
        assert r[plan]["duplicate_ratio"] < 0.01
        assert r[plan]["exchange_s"] >= r["bound_s"]  # nothing beats the bound
    assert r["reduce_scatter"]["exchange_s"] < r["all_to_all"]["exchange_s"]
    assert r["star"]["exchange_s"] > 0
