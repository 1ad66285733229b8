"""Byzantine robustness: attacks x aggregation rules (with and without detection and trust).

Simulation, 20 peers, mnist1d Dirichlet(0.5), 1-D CNN, 3 local epochs, 4 Byzantine peers (20 %,
drawn with the seed), full topology (``--topology mesh`` for a mesh of 6), the default plan
(``--plan reduce_scatter``: owners aggregate, with detection and trust per chunk group). For
each attack and rule: the honest peers' mean final accuracy, beside the same rule without
attack; with detection: true and false positive rates of the IQR filter (over every honest
peer's verdicts).

Each finished run is appended to ``--runs`` (JSONL) and skipped when run again; ``--report``
prints the table from that file.

    python benchmarks/robustness.py --attacks none,scale,ipm,alie,sign_flip,noise \\
        --rules mean,trimmed_mean,centered_clip --rounds 20 --json bench-results/robustness.json
    python benchmarks/robustness.py --attacks none,scale --rules mean,median --rounds 5  # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

ATTACKS: dict[str, list[str]] = {
    "none": [],
    "sign_flip": ["attack.type=sign_flip"],
    "noise": ["attack.type=noise", "attack.sigma=0.1"],
    "scale": ["attack.type=scale", "attack.factor=-10"],
    "label_flip": ["attack.type=label_flip"],
    "alie": ["attack.type=alie"],
    "ipm": ["attack.type=ipm", "attack.ipm_tau=6"],  # 4 of 20 at tau > 4 invert the mean
    "min_max": ["attack.type=min_max"],
    "free_ride": ["attack.type=free_ride"],
    "chunk_poison": ["attack.type=chunk_poison"],
    "equivocate": ["attack.type=equivocate"],
}
CENTERED_CLIP = ["robust.rule=centered_clip", "robust.tau=0.1", "robust.iters=3"]
RULES: dict[str, list[str]] = {
    "mean": ["robust.rule=mean"],
    "median": ["robust.rule=median"],
    "trimmed_mean": ["robust.rule=trimmed_mean", "robust.f=4"],
    "krum": ["robust.rule=krum", "robust.f=4"],
    "multi_krum": ["robust.rule=multi_krum", "robust.f=4"],
    "geometric_median": ["robust.rule=geometric_median"],
    "centered_clip": CENTERED_CLIP,
    "bulyan": ["robust.rule=bulyan", "robust.f=4"],
    "nnm_trimmed_mean": ["robust.preagg=nnm", "robust.rule=trimmed_mean", "robust.f=4"],
    # Karimireddy, He & Jaggi (ICLR 2022): buckets of 2 before centered clipping
    "bucketing_centered_clip": [
        "robust.preagg=bucketing",
        "robust.bucket_size=2",
        *CENTERED_CLIP,
    ],
}
DETECTION = ["robust.detection.enabled=true", "robust.trust.enabled=true"]


class Job(NamedTuple):
    """One run of the grid."""

    topology: str
    attack: str
    rule: str
    detect: bool
    seed: int
    rounds: int
    chunks: int
    momentum: float = 0.9  # robust.detection.momentum (detect runs only)
    burst_k: float = 3.0  # robust.detection.burst_k (detect runs only)
    plan: str = "all_to_all"  # exchange.plan

    @property
    def label(self) -> str:
        """Topology, and the plan when it is not the default (one table each)."""
        return self.topology if self.plan == "all_to_all" else f"{self.topology}+{self.plan}"

    def key(self) -> str:
        """The run's identity in ``--runs``: other rounds, chunks, detection momentum or plan
        make another run."""
        mode = f"detect-m{self.momentum:g}b{self.burst_k:g}" if self.detect else "plain"
        where = f"{self.label}/{self.attack}/{self.rule}/{mode}"
        return f"{where}/{self.seed}/r{self.rounds}c{self.chunks}"


def overrides(job: Job) -> list[str]:
    """The config overrides of one run."""
    return [
        "federate.mode=sim",
        "federate.client_num=20",
        f"federate.total_round_num={job.rounds}",
        f"federate.seed={job.seed}",
        "train.local_epochs=3",
        f"chunk.num_chunks={job.chunks}",
        f"topology.type={job.topology}",
        "topology.connections=6",
        f"exchange.plan={job.plan}",
        "output.save_model=false",
        "output.progress=none",
        "output.log_level=error",
        *ATTACKS[job.attack],
        *(["attack.share=0.2"] if job.attack != "none" else []),
        *RULES[job.rule],
        *(
            [
                *DETECTION,
                f"robust.detection.momentum={job.momentum}",
                f"robust.detection.burst_k={job.burst_k}",
            ]
            if job.detect
            else []
        ),
    ]


def run(job: Job) -> dict[str, Any]:
    from fltorrent.config import load_config
    from fltorrent.runtime.federation import Federation

    config = load_config(None, overrides(job))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        s = Federation(config, output_dir=tmp).run().summary
        wall = time.perf_counter() - start
    byz = s["byzantine"]
    return {
        **job._asdict(),
        "topology": job.label,
        "key": job.key(),
        "momentum": job.momentum if job.detect else None,
        "burst_k": job.burst_k if job.detect else None,
        "attackers": byz["attackers"],
        "accuracy": byz["final_accuracy_honest_mean"],
        "accuracy_per_round": [r["mean"] for r in s["accuracy_per_round"]],
        "tpr": byz["true_positive_rate"],
        "fpr": byz["false_positive_rate"],
        "deadline_rounds": s["deadline_rounds"],
        "wall_s": round(wall, 1),
    }


def _job(args: Job) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    # The CLI applies output.log_level; a library caller sets up logging itself. Without this,
    # Python's last-resort handler prints every warning (each rejected piece) to stderr.
    logging.basicConfig(level=logging.ERROR)
    return run(args)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def markdown(table: dict[str, dict[str, dict[str, Any]]], rules: list[str]) -> str:
    """Two tables: accuracy (plain / with detection), then TPR / FPR of the detect runs."""

    def acc(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    head = "| attack | " + " | ".join(rules) + " |\n|---|" + "---:|" * len(rules) + "\n"
    accuracy = head + "".join(
        f"| {attack} | "
        + " | ".join(f"{acc(c[r]['plain'])} / {acc(c[r]['detect'])}" for r in rules)
        + " |\n"
        for attack, c in table.items()
    )
    rates = head + "".join(
        f"| {attack} | "
        + " | ".join(
            f"{_pct(c[r]['tpr'])} / {_pct(c[r]['fpr'])}" if c[r]["detect"] is not None else "-"
            for r in rules
        )
        + " |\n"
        for attack, c in table.items()
        if any(c[r]["detect"] is not None for r in rules)
    )
    return accuracy + "\n" + rates


def report(
    runs: list[dict[str, Any]],
    detector: tuple[float, float],
    rounds: int,
    chunks: int,
    md: Path | None,
) -> dict[str, Any]:
    """Per topology: rows = attack, columns = rule (plain / with detection at ``detector`` =
    (momentum, burst_k)), over the runs of ``rounds`` rounds and ``chunks`` chunks."""
    runs = [
        r
        for r in runs
        if (not r["detect"] or (r.get("momentum"), r.get("burst_k")) == detector)
        and r["rounds"] == rounds
        and r["chunks"] == chunks
    ]
    out: dict[str, Any] = {}
    text = ""
    for topology in sorted({r["topology"] for r in runs}):
        rs = [r for r in runs if r["topology"] == topology]
        rules = [x for x in RULES if any(r["rule"] == x for r in rs)]
        print(f"\n## {topology}: honest mean final accuracy, plain / with detection+trust")
        print(f"{'attack':<13}" + "".join(f"{x:>20}" for x in rules))
        table: dict[str, Any] = {}
        for attack in [a for a in ATTACKS if any(r["attack"] == a for r in rs)]:
            cells = []
            for rule in rules:
                got = {r["detect"]: r for r in rs if r["attack"] == attack and r["rule"] == rule}
                plain = got.get(False, {}).get("accuracy")
                det = got.get(True, {}).get("accuracy")
                rates = got.get(True, {})
                table.setdefault(attack, {})[rule] = {
                    "plain": plain,
                    "detect": det,
                    "tpr": rates.get("tpr"),
                    "fpr": rates.get("fpr"),
                }
                cell = f"{plain:.3f}" if plain is not None else "-"
                cell += f" / {det:.3f}" if det is not None else " / -"
                cells.append(cell)
            print(f"{attack:<13}" + "".join(f"{c:>20}" for c in cells))
        out[topology] = table
        text += f"### {topology}\n\n" + markdown(table, rules) + "\n"
    if md is not None:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="full")
    parser.add_argument("--plan", default="all_to_all", help="exchange.plan of every run")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--detection", default="off,on")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    # Robustness does not need fine chunks, and every piece costs Have messages to every
    # neighbour: 20 peers x 19 updates x 20 pieces per round; 4 chunks cut that 5x.
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--runs", type=Path, default=Path("bench-results/robustness-runs.jsonl"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown here")
    parser.add_argument(
        "--momentum", type=float, default=0.9, help="robust.detection.momentum of detect runs"
    )
    parser.add_argument(
        "--burst-k", type=float, default=3.0, help="robust.detection.burst_k of detect runs"
    )
    args = parser.parse_args()
    done: dict[str, dict[str, Any]] = {}
    if args.runs.exists():
        for line in args.runs.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    if not args.report:
        grid = [
            Job(
                args.topology,
                attack,
                rule,
                detect == "on",
                seed,
                args.rounds,
                args.chunks,
                args.momentum,
                args.burst_k,
                args.plan,
            )
            for attack in args.attacks.split(",")
            for rule in args.rules.split(",")
            for detect in args.detection.split(",")
            for seed in map(int, args.seeds.split(","))
        ]
        jobs = [job for job in grid if job.key() not in done]
        print(f"{len(jobs)} runs to do, {len(done)} already in {args.runs}", flush=True)
        args.runs.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(_job, j) for j in jobs]
            for fut in as_completed(futures):
                r = fut.result()
                done[r["key"]] = r
                with args.runs.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(
                    f"{r['key']:<45} acc {r['accuracy']:.3f} tpr {r['tpr']} fpr {r['fpr']} "
                    f"wall {r['wall_s']} s",
                    flush=True,
                )
    tables = report(
        list(done.values()),
        (args.momentum, args.burst_k),
        args.rounds,
        args.chunks,
        args.markdown,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"tables": tables, "runs": done}, indent=2) + "\n")


if __name__ == "__main__":
    main()
