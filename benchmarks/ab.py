"""Compare the swarm exchange's CPU time between two checkouts, alternating runs.

Timings on a shared VM drift by 10-20 % over minutes, more than most code changes move them.
This runs the swarm case of ``benchmarks/exchange.py`` (no raw baseline) from checkout A, then
B, then B, then A, ... each run in a fresh process tree importing that checkout's own
``src/``, and reports each checkout's median CPU-seconds and wall time, and the median and
mean of the paired differences (B minus A, runs next to each other in time):

    git worktree add /tmp/before <commit>
    python benchmarks/ab.py /tmp/before . --pairs 12 --block-size 16384 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# One run of one checkout's exchange benchmark, swarm side only; prints "wall cpu".
_RUN = """
import sys
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import exchange
if __name__ == "__main__":
    args = {"n": int(sys.argv[2]), "size": int(sys.argv[3]), "pieces": int(sys.argv[4]),
            "topology": sys.argv[5], "block_size": int(sys.argv[6])}
    reports = exchange.run_case("swarm", args)
    print(exchange.elapsed(reports), sum(r.cpu_s for r in reports))
"""


def run_once(checkout: Path, ns: argparse.Namespace, script: Path) -> tuple[float, float]:
    """(wall s, CPU-s summed over the peers) of one swarm exchange from ``checkout``."""
    cmd = [
        sys.executable,
        str(script),
        str(checkout),
        str(ns.peers),
        str(int(ns.size_mb * 1_000_000)),
        str(ns.pieces),
        ns.topology,
        str(ns.block_size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise SystemExit(f"run of {checkout} failed:\n{out.stderr[-2000:]}")
    wall, cpu = out.stdout.split()[-2:]
    return float(wall), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="checkout A (the baseline)")
    parser.add_argument("b", type=Path, help="checkout B")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--size-mb", type=float, default=8.0)
    parser.add_argument("--pieces", type=int, default=20)
    parser.add_argument("--topology", default="full")
    parser.add_argument("--block-size", type=int, default=524288)
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args()
    checkouts = [ns.a.resolve(), ns.b.resolve()]
    for c in checkouts:
        if not (c / "benchmarks" / "exchange.py").exists():
            parser.error(f"{c} has no benchmarks/exchange.py")
    out_dir = Path(__file__).resolve().parent.parent / "bench-results"
    out_dir.mkdir(exist_ok=True)
    script = out_dir / "_ab_run.py"  # a file, not -c: spawned children re-import __main__
    script.write_text(_RUN)
    runs: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    for i in range(ns.pairs):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            runs[side].append(run_once(checkouts[side], ns, script))
    diffs = [b[1] - a[1] for a, b in zip(runs[0], runs[1], strict=True)]
    rows = []
    for side, name in ((0, "A"), (1, "B")):
        walls = [w for w, _ in runs[side]]
        cpus = [c for _, c in runs[side]]
        rows.append(
            {
                "checkout": name,
                "path": str(checkouts[side]),
                "cpu_s_median": round(statistics.median(cpus), 3),
                "wall_s_median": round(statistics.median(walls), 3),
                "cpu_s": [round(c, 3) for c in cpus],
            }
        )
    print(
        f"{ns.peers} peers x {ns.size_mb:g} MB, {ns.pieces} pieces, {ns.topology}, "
        f"{ns.block_size}-byte blocks, {ns.pairs} alternating pairs"
    )
    print(f"{'':2} {'CPU-s (median)':>15} {'wall s (median)':>16}  path")
    for r in rows:
        print(
            f"{r['checkout']:2} {r['cpu_s_median']:>15.3f} {r['wall_s_median']:>16.3f}  {r['path']}"
        )
    med, mean = statistics.median(diffs), statistics.mean(diffs)
    print(f"paired CPU-s difference B - A: median {med:+.3f}, mean {mean:+.3f}")
    if ns.json is not None:
        result = {
            "rows": rows,
            "paired_cpu_diff_median": round(med, 3),
            "paired_cpu_diff_mean": round(mean, 3),
            "setting": {k: v for k, v in vars(ns).items() if k not in ("a", "b", "json")},
        }
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
