"""Federations whose metrics were recorded before the round became a pipeline of stages over a
plan (``all_to_all_golden.json``). ``test_all_to_all_golden.py`` reruns them and compares every
metric field by field: the default plan must keep the old behaviour exactly.

Regenerate only on purpose (a change that is meant to alter results), with
``python -m tests.plans.golden_cases``; the diff of the JSON then shows what changed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from fltorrent.config import load_config
from fltorrent.runtime.federation import Federation

GOLDEN = Path(__file__).with_name("all_to_all_golden.json")

SMALL = [
    "federate.mode=sim",
    "data.num_samples=2000",
    "federate.client_num=6",
    "federate.total_round_num=3",
    "output.save_model=false",
    "output.progress=none",
]
SPEC_MIX = (
    "devices.distribution={smartphone_high: 0.2, smartphone_low: 0.4, raspberry_pi: 0.2, "
    "iot_device: 0.15, edge_server: 0.05}"
)
CASES: dict[str, list[str]] = {
    "plain": [],
    # shaped links, compression by tier (q8, top-k with error feedback), sit-outs
    "devices": [SPEC_MIX, "federate.client_num=8"],
    # a robust rule with detection and trust against sign flipping
    "robust": [
        "federate.client_num=8",
        "robust.rule=trimmed_mean",
        "robust.f=2",
        "robust.detection.enabled=true",
        "robust.trust.enabled=true",
        "attack.type=sign_flip",
        "attack.peers=[3, 6]",
    ],
    # attacks that need what the attacker saw last round
    "ipm": ["federate.client_num=8", "attack.type=ipm", "attack.peers=[2]"],
    # swarm-level lies: an equivocator and a chunk poisoner
    "equivocate": ["federate.client_num=8", "attack.type=equivocate", "attack.peers=[4]"],
    "poison": [
        "federate.client_num=8",
        "attack.type=chunk_poison",
        "attack.peers=[5]",
        "bittorrent.timeout=20",
    ],
    "free_ride": ["federate.client_num=6", "attack.type=free_ride", "attack.peers=[1]"],
    # churn: a crash, a rejoin, overlay repair
    "churn": [
        "federate.client_num=8",
        "federate.total_round_num=5",
        "faults.crash_rounds={2: [3]}",
        "faults.rejoin_after=2",
        "bittorrent.timeout=30",
    ],
    "ring": ["topology.type=ring", "network.up_mbit=20", "network.latency_ms=10"],
}
WALL_CLOCK = ("train_wall_s", "score_s")  # this machine's wall clock, on purpose


def run_case(name: str, out: Path) -> list[dict[str, Any]]:
    """The metric records of one case, without the wall-clock fields, in (round, peer) order."""
    config = load_config(None, [*SMALL, *CASES[name]])
    records = Federation(config, output_dir=out).run().metrics
    rows = [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in records]
    return sorted(rows, key=lambda r: (r["round"], r["peer"]))


def main() -> None:
    names = sys.argv[1:] or list(CASES)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            golden[name] = run_case(name, Path(tmp) / name)
            print(name, len(golden[name]), "records")
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
