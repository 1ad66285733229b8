"""Importance-aware exchange under deadlines: does choosing chunks by importance beat random?

All runs in simulation (virtual time), 10 peers on a mesh of 3, mnist1d Dirichlet(0.5), on
heterogeneous links: half the peers on 4/16 Mbit/s (20 ms), half on 1/4 Mbit/s (50 ms), every
peer the same reference CPU, no compression. The round deadline (soft = hard, no completion
threshold) is set per model so that roughly 50-70 % (``moderate``) or 20-30 % (``tight``) of
the expected chunks arrive; what arrives is aggregated per chunk (partial aggregation).

For each model (the default 1-D CNN, and the ResNet-style CNN), setting, importance method and
seed: accuracy per round, time to target accuracies, final accuracy, completion, and the
scoring overhead (wall seconds scoring / wall seconds training). Also the default task with
full exchange against a deadline at about 70 % completion (``full`` vs ``c70``).

Each finished run is appended to ``--runs`` (JSONL) and skipped when the script is run again,
so a long sweep can be resumed; ``--report`` prints the tables from that file only.

    python benchmarks/importance.py --runs bench-results/importance-runs.jsonl \
        --json bench-results/importance.json
    python benchmarks/importance.py --models cnn1d --settings tight --methods random,snip --seeds 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

METHODS = ("random", "magnitude", "l2_norm", "snip", "fisher", "adaptive")
# Ablations: "<method>:nocrit" without the picker's critical mode near deadlines,
# "<method>:tensor" with the plain per-tensor chunk layout instead of the architecture-aware one.
VARIANTS = ("l2_norm:nocrit", "l2_norm:tensor")
COMMON = [
    "federate.mode=sim",
    "federate.client_num=10",
    "topology.type=mesh",
    "topology.connections=3",
    "bittorrent.min_completion_ratio=1.0",
    "bittorrent.seed_grace=0",
    "devices.compression=none",
    "devices.distribution={fastlink: 0.5, slowlink: 0.5}",
    "devices.profiles={fastlink: {extends: edge_server, cpu_share: 1.0, up_mbit: 4, "
    "down_mbit: 16, latency_ms: 20, loss: 0.0}, slowlink: {extends: edge_server, "
    "cpu_share: 1.0, up_mbit: 1, down_mbit: 4, latency_ms: 50, loss: 0.0}}",
    "output.save_model=false",
    "output.progress=none",
    "output.log_level=error",
]
# Per model: overrides, and the round deadline (virtual seconds) per setting. The deadlines
# were calibrated with `random` (completion is a property of links and sizes, not of the
# method); the measured completion is reported next to every result.
MODELS: dict[str, tuple[list[str], dict[str, float]]] = {
    "cnn1d": (
        ["model.name=cnn1d", "federate.total_round_num=15"],
        {"full": 600.0, "c70": 1.2, "moderate": 0.8, "tight": 0.4},
    ),
    "resnet": (
        ["model.name=resnet", "model.hidden=32", "federate.total_round_num=12"],
        {"full": 600.0, "moderate": 10.0, "tight": 4.0},
    ),
}
TARGETS = (0.5, 0.6, 0.7, 0.8)


def key(model: str, setting: str, method: str, seed: int) -> str:
    return f"{model}/{setting}/{method}/{seed}"


def run(model: str, setting: str, method: str, seed: int) -> dict[str, Any]:
    """One simulated federation; its per-round and summary figures."""
    from fltorrent.config import load_config
    from fltorrent.runtime.federation import Federation

    overrides, deadlines = MODELS[model]
    t = deadlines[setting]
    scorer, _, variant = method.partition(":")
    # The full-vs-c70 comparison keeps peers seeding after their last round (the default
    # grace): without it, early finishers leave and late peers lose pieces of the last round.
    extra = ["bittorrent.seed_grace=10"] if setting in ("full", "c70") else []
    extra += {
        "": [],
        "nocrit": ["bittorrent.critical_window=0"],
        "tensor": ["chunk.layout=tensor"],
    }[variant]
    config = load_config(
        None,
        [
            *COMMON,
            *overrides,
            f"federate.seed={seed}",
            f"chunk.importance_method={scorer}",
            *extra,
            f"bittorrent.timeout={t}",
            f"bittorrent.hard_timeout={t}",
            f"output.accuracy_targets=[{', '.join(map(str, TARGETS))}]",
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = Federation(config, output_dir=tmp).run()
        wall = time.perf_counter() - start
    s = result.summary
    return {
        "key": key(model, setting, method, seed),
        "model": model,
        "setting": setting,
        "method": method,
        "seed": seed,
        "deadline_s": t,
        "final_accuracy": s["final_accuracy_mean"],
        "accuracy_per_round": [r["mean"] for r in s["accuracy_per_round"]],
        "time_per_round": [r["time_s"] for r in s["accuracy_per_round"]],
        "completion": s["completion_mean"],
        "score_overhead": s["score_overhead"],
        "sim_time_s": s["sim_time_s"],
        "wall_s": round(wall, 1),
        "finished": len(s["finished_peers"]),
    }


def _first(values: list[float | None], times: list[float], target: float) -> tuple[int, float]:
    for i, v in enumerate(values):
        if v is not None and v >= target:
            return i + 1, times[i]
    return 0, 0.0


def _stat(xs: list[float]) -> str:
    if not xs:
        return "-"
    m = statistics.fmean(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{m:.3f}±{sd:.3f}"


def report(runs: list[dict[str, Any]], target: dict[str, float]) -> dict[str, Any]:
    """Tables per model and setting, against `random` of the same seeds."""
    out: dict[str, Any] = {}
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["setting"]), {}).setdefault(r["method"], []).append(r)
    for (model, setting), by_method in sorted(groups.items()):
        goal = target.get(f"{model}/{setting}", target.get(model, 0.7))
        deadline = next(iter(by_method.values()))[0]["deadline_s"]
        print(f"\n## {model} / {setting} (deadline {deadline} s, target accuracy {goal})")
        print(
            f"{'method':<14} {'seeds':>5} {'completion':>12} {'final acc':>12} "
            f"{'mean acc':>12} {'rounds to tgt':>13} {'sim s to tgt':>12} {'speed-up':>8} "
            f"{'overhead':>9} {'vs random: final mean wins':>20}"
        )
        rows = {}
        base_time = _time_to(by_method.get("random", []), goal)
        for method in [m for m in (*METHODS, *VARIANTS) if m in by_method]:
            rs = sorted(by_method[method], key=lambda r: r["seed"])
            reached = [_first(r["accuracy_per_round"], r["time_per_round"], goal) for r in rs]
            hit = [x for x in reached if x[0]]
            rounds = statistics.fmean(x[0] for x in hit) if len(hit) == len(rs) else None
            secs = statistics.fmean(x[1] for x in hit) if len(hit) == len(rs) else None
            speedup = base_time / secs if base_time and secs else None
            overhead = [r["score_overhead"] for r in rs if r["score_overhead"] is not None]
            row: dict[str, Any] = {
                "seeds": [r["seed"] for r in rs],
                "completion": _stat([r["completion"] for r in rs]),
                "final_accuracy": _stat([r["final_accuracy"] for r in rs]),
                # mean over rounds of the peers' mean accuracy: the area under the curve
                "mean_accuracy": _stat([_mean_acc(r) for r in rs]),
                "rounds_to_target": rounds,
                "sim_s_to_target": secs,
                "reached_target": f"{len(hit)}/{len(rs)}",
                "speedup_vs_random": speedup,
                "score_overhead": statistics.fmean(overhead) if overhead else None,
                # paired with `random` on the same seed (same data split and links)
                "paired_vs_random": (
                    None if method == "random" else _paired(rs, by_method.get("random", []))
                ),
                "accuracy_per_round_mean": [
                    round(statistics.fmean(v for v in col if v is not None), 4)
                    for col in zip(*(r["accuracy_per_round"] for r in rs), strict=False)
                ],
            }
            rows[method] = row
            ov = row["score_overhead"]
            pv: dict[str, Any] | None = row["paired_vs_random"]
            cells = [
                f"{rounds:.1f}" if rounds else str(row["reached_target"]),
                f"{secs:.1f}" if secs else "-",
                f"{speedup:.2f}x" if speedup else "-",
                f"{ov:.1%}" if ov is not None else "-",
                f"{pv['final_diff']:+.3f} {pv['mean_acc_diff']:+.3f} {pv['wins']}" if pv else "",
            ]
            print(
                f"{method:<14} {len(rs):>5} {row['completion']:>12} {row['final_accuracy']:>12} "
                f"{row['mean_accuracy']:>12} {cells[0]:>13} {cells[1]:>12} {cells[2]:>8} "
                f"{cells[3]:>9} {cells[4]:>20}"
            )
        out[f"{model}/{setting}"] = rows
    return out


def _paired(rs: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-seed differences to `random`: final and mean accuracy, and seeds won (final)."""
    by_seed = {r["seed"]: r for r in base}
    pairs = [(r, by_seed[r["seed"]]) for r in rs if r["seed"] in by_seed]
    if not pairs:
        return None
    final = [a["final_accuracy"] - b["final_accuracy"] for a, b in pairs]
    mean = [_mean_acc(a) - _mean_acc(b) for a, b in pairs]
    return {
        "final_diff": statistics.fmean(final),
        "mean_acc_diff": statistics.fmean(mean),
        "wins": f"{sum(x > 0 for x in final)}/{len(final)}",
    }


def _mean_acc(r: dict[str, Any]) -> float:
    return statistics.fmean(v if v is not None else 0.0 for v in r["accuracy_per_round"])


def _time_to(rs: list[dict[str, Any]], goal: float) -> float | None:
    hit = [_first(r["accuracy_per_round"], r["time_per_round"], goal) for r in rs]
    if not rs or not all(h[0] for h in hit):
        return None
    return statistics.fmean(h[1] for h in hit)


def _job(args: tuple[str, str, str, int]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    return run(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--settings", default="moderate,tight,full,c70")
    parser.add_argument("--methods", default=",".join((*METHODS, *VARIANTS)))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("bench-results/importance-runs.jsonl"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", action="store_true", help="only print tables from --runs")
    # model=acc or model/setting=acc: the accuracy whose time to reach is compared
    parser.add_argument("--target", default="cnn1d=0.6,cnn1d/tight=0.5,resnet=0.8")
    args = parser.parse_args()
    target = {k: float(v) for k, v in (x.split("=") for x in args.target.split(","))}
    done: dict[str, dict[str, Any]] = {}
    if args.runs.exists():
        for line in args.runs.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r
    if not args.report:
        jobs = []
        for model in args.models.split(","):
            for setting in args.settings.split(","):
                if setting not in MODELS[model][1]:
                    continue
                # full exchange and c70 compare completion, not methods: the default only.
                methods = ["l2_norm"] if setting in ("full", "c70") else args.methods.split(",")
                for method in methods:
                    for seed in map(int, args.seeds.split(",")):
                        if key(model, setting, method, seed) not in done:
                            jobs.append((model, setting, method, seed))
        print(f"{len(jobs)} runs to do, {len(done)} already in {args.runs}", flush=True)
        args.runs.parent.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = {pool.submit(_job, j): j for j in jobs}
            for fut in as_completed(futures):
                r = fut.result()
                done[r["key"]] = r
                with args.runs.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(
                    f"{r['key']:<28} acc {r['final_accuracy']:.3f} completion "
                    f"{r['completion']:.2f} sim {r['sim_time_s']:.1f} s wall {r['wall_s']} s",
                    flush=True,
                )
    tables = report(list(done.values()), target)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"tables": tables, "runs": done}, indent=2) + "\n")


if __name__ == "__main__":
    main()
