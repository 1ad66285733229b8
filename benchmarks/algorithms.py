"""Local-training algorithms on a strongly non-IID split: accuracy per round, side by side.

Each case runs the same simulated federation (``federate.mode: sim``, the default task:
mnist1d, 1-D CNN) on a Dirichlet(``--alpha``) split, with one algorithm setting changed:

* **fedavg**: plain local SGD, sample-weighted mean (the default);
* **fedprox-MU**: FedProx, the proximal term ``mu / 2 ||w - w_round_start||^2`` in local
  training (``train.proximal_mu``), for each ``--mu``;
* **fedavgm-BETA**: FedAvgM, momentum ``BETA`` that each peer applies to its own aggregate
  over the rounds (``train.server_momentum``), for each ``--momentum``;
* **scaffold**: SCAFFOLD's control variates, estimated by each peer from what it holds
  (``train.scaffold``; ``--no-scaffold`` leaves it out).

Reported: the mean test accuracy over peers after each round, the final one, and the best.
Same seed, same data, same split: the differences are the algorithm's (seeds with
``--seeds``, averaged).

    python benchmarks/algorithms.py --json bench-results/algorithms.json
    python benchmarks/algorithms.py --peers 10 --rounds 10 --mu 0.01,0.1 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fltorrent.config import load_config  # noqa: E402
from fltorrent.runtime.federation import Federation  # noqa: E402


def run_case(overrides: list[str]) -> list[float]:
    """Mean accuracy over peers after each round."""
    config = load_config(None, ["federate.mode=sim", "output.progress=none", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        result = Federation(config, output_dir=Path(tmp)).run()
    return [float(r["mean"]) for r in result.summary["accuracy_per_round"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--mu", default="0.01,0.1", help="FedProx mu values, comma-separated")
    parser.add_argument("--momentum", default="0.9", help="FedAvgM betas, comma-separated")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, averaged")
    parser.add_argument("--no-scaffold", action="store_true", help="leave SCAFFOLD out")
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args()
    base = [
        f"federate.client_num={ns.peers}",
        f"federate.total_round_num={ns.rounds}",
        "data.partition=dirichlet",
        f"data.alpha={ns.alpha}",
    ]
    cases: dict[str, list[str]] = {"fedavg": []}
    for mu in (m for m in ns.mu.split(",") if m):
        cases[f"fedprox-{mu}"] = [f"train.proximal_mu={mu}"]
    for beta in (b for b in ns.momentum.split(",") if b):
        cases[f"fedavgm-{beta}"] = [f"train.server_momentum={beta}"]
    if not ns.no_scaffold:
        cases["scaffold"] = ["train.scaffold=true"]
    seeds = [int(s) for s in ns.seeds.split(",")]
    curves: dict[str, list[float]] = {}
    for name, extra in cases.items():
        runs = [run_case([*base, *extra, f"federate.seed={s}"]) for s in seeds]
        curves[name] = [statistics.mean(r[i] for r in runs) for i in range(ns.rounds)]
        print(f"{name}: final {curves[name][-1]:.4f}", file=sys.stderr)

    print(
        f"{ns.peers} peers, {ns.rounds} rounds, Dirichlet({ns.alpha}), seeds {ns.seeds}: "
        "mean test accuracy after each round"
    )
    print(f"{'round':>5} " + " ".join(f"{n:>13}" for n in curves))
    for i in range(ns.rounds):
        print(f"{i + 1:>5} " + " ".join(f"{c[i]:>13.4f}" for c in curves.values()))
    print(f"{'best':>5} " + " ".join(f"{max(c):>13.4f}" for c in curves.values()))
    if ns.json is not None:
        out: dict[str, Any] = {"setting": vars(ns) | {"json": str(ns.json)}, "curves": curves}
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
