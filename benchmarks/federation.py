"""The default federation end to end, against a plain centralized FedAvg loop in the same run.

The setting (the README's `make run`): 8 peers, mnist1d (10,000 samples) split Dirichlet(0.5),
1-D CNN, 20 rounds of one local epoch, SGD lr 0.05 momentum 0.9, batch 32.

* **centralized**: one process, no network: for each round, train each client in turn from
  the global model and average the weights (sample-weighted). The floor for this workload.
* **fltorrent in-process**: ``fltorrent run`` as a fresh process (interpreter and torch start-up
  included), peers exchanging over loopback TCP on a mesh of 3.
* **fltorrent processes**: ``fltorrent run --processes``, one OS process per peer.

    python benchmarks/federation.py --json bench-results/federation.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def centralized(rounds: int, peers: int, seed: int) -> dict[str, Any]:
    """Sequential FedAvg with the same data, model and hyper-parameters."""
    import torch

    from fltorrent.aggregate import fedavg
    from fltorrent.config import load_config
    from fltorrent.runtime.learning import build_learner, load_federation_data

    torch.set_num_threads(1)
    config = load_config(None, [f"federate.client_num={peers}", f"federate.seed={seed}"])
    start = time.perf_counter()
    data = load_federation_data(config)
    learners = [build_learner(config, i, data) for i in range(1, peers + 1)]
    plan = learners[0].plan
    accuracy = float("nan")
    for r in range(1, rounds + 1):
        updates = [lr.local_round(r) for lr in learners]
        merged = [
            fedavg([(u.vectors[c], float(u.num_samples)) for u in updates])
            for c in range(plan.num_chunks)
        ]
        for lr in learners:
            lr.load_vectors(merged)
        accuracy = learners[0].evaluate().accuracy
    return {"wall_s": round(time.perf_counter() - start, 2), "final_accuracy": accuracy}


def run_cli(extra: list[str]) -> dict[str, Any]:
    """``fltorrent run`` in a fresh process; wall time includes start-up."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fltorrent",
                "run",
                "--output-dir",
                str(out),
                "--progress",
                "none",
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"fltorrent run failed: {proc.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        config = yaml.safe_load((out / "config.yaml").read_text())
    return {
        "transport": config["security"]["transport"],  # what the run used
        "mode": config["federate"]["mode"],
        "peers": config["federate"]["client_num"],
        "rounds": config["federate"]["total_round_num"],
        "wall_s": round(wall, 2),
        "run_s": summary["wall_time_s"],
        "final_accuracy": summary["final_accuracy_mean"],
        "final_accuracy_min": summary["final_accuracy_min"],
        "bytes_payload_down": summary["bytes"]["payload_down"],
        "bytes_control": summary["bytes"]["control"],
        "bytes_duplicate": summary["bytes"]["duplicate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args()
    args = ["--rounds", str(ns.rounds), "--peers", str(ns.peers), "--seed", str(ns.seed)]
    rows = {
        "centralized": centralized(ns.rounds, ns.peers, ns.seed),
        "fltorrent_in_process": run_cli(args),
    }
    if not ns.skip_processes:
        rows["fltorrent_processes"] = run_cli([*args, "--processes"])
    base = rows["centralized"]["wall_s"]
    print(f"{ns.peers} peers, {ns.rounds} rounds, mnist1d Dirichlet(0.5), 1-D CNN")
    print(f"{'run':<22} {'wall s':>7} {'x central':>9} {'accuracy':>9} {'min':>7}")
    for name, row in rows.items():
        row["ratio_to_centralized"] = round(row["wall_s"] / base, 2)
        print(
            f"{name:<22} {row['wall_s']:>7.2f} {row['ratio_to_centralized']:>9.2f} "
            f"{row['final_accuracy']:>9.4f} {row.get('final_accuracy_min', float('nan')):>7.4f}"
        )
    if ns.json is not None:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
