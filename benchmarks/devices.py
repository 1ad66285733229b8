"""Devices in simulation: what compression costs in accuracy and saves in bytes, and what a
realistic device mix and churn do to time-to-accuracy. All runs in virtual time, in-process.

* ``compression``: 10 peers (edge servers, so only the codec differs), digits + MLP, iid,
  3 local epochs, 8 rounds, with each codec: final accuracy, payload bytes, bytes saved.
* ``mix``: 20 peers, mnist1d + 1-D CNN, 15 rounds: every peer a reference core on
  10 Mbit/s links, against the SPEC §4 device distribution (compression by tier: q8 below the
  high tier; top-k for low and embedded; none), against that mix with 30 % of the peers
  crashing in round 5 and rejoining 3 rounds later, and with 30 % crashing for good.

    python benchmarks/devices.py --json bench-results/devices.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SPEC_MIX = (
    "devices.distribution={smartphone_high: 0.2, smartphone_low: 0.4, raspberry_pi: 0.2, "
    "iot_device: 0.15, edge_server: 0.05}"
)
COMMON = ["federate.mode=sim", "output.save_model=false", "output.progress=none"]
COMPRESSION = [
    "federate.client_num=10",
    "federate.total_round_num=8",
    "data.name=digits",
    "data.num_samples=1797",
    "model.name=mlp",
    "data.partition=iid",
    "train.local_epochs=3",
    "devices.distribution={edge_server: 1.0}",
]
MIX = ["federate.client_num=20", "federate.total_round_num=15", "bittorrent.timeout=120"]
CASES: dict[str, list[str]] = {
    "codec_none": [*COMPRESSION, "devices.compression=none"],
    "codec_q8": [*COMPRESSION, "devices.compression=q8"],
    "codec_topk": [*COMPRESSION, "devices.compression=topk"],
    "mix_reference": [*MIX, "network.up_mbit=10", "network.down_mbit=10"],
    "mix_spec": [*MIX, SPEC_MIX],
    "mix_spec_raw": [*MIX, SPEC_MIX, "devices.compression=none"],
    "mix_spec_topk": [
        *MIX,
        SPEC_MIX,
        "devices.tier_compression={high: none, mid: q8, low: topk, embedded: topk}",
    ],
    "mix_spec_churn": [
        *MIX,
        SPEC_MIX,
        "faults.crash_share=0.3",
        "faults.crash_round=5",
        "faults.rejoin_after=3",
    ],
    "mix_spec_crash": [*MIX, SPEC_MIX, "faults.crash_share=0.3", "faults.crash_round=5"],
}


def run(overrides: list[str]) -> dict[str, Any]:
    """One simulated federation; its summary figures."""
    from fltorrent.config import load_config
    from fltorrent.runtime.federation import Federation

    config = load_config(None, [*COMMON, *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = Federation(config, output_dir=tmp).run()
        wall = time.perf_counter() - start
    s = result.summary
    tta = {f"t{int(t['target'] * 100)}": t["time_s"] for t in s["time_to_accuracy"]}
    payload = s["bytes"]["payload_down"]
    return {
        "final_accuracy_mean": round(s["final_accuracy_mean"], 4),
        "sim_time_s": s["sim_time_s"],
        "wall_s": round(wall, 1),
        "payload_down_mb": round(payload / 1e6, 2),
        "bytes_saved_mb": round(s["bytes_saved"] / 1e6, 2),
        "finished": len(s["finished_peers"]),
        "sat_out": sum(len(r["sat_out"]) for r in s["accuracy_per_round"]),
        "absent": sum(len(r["absent"]) for r in s["accuracy_per_round"]),
        "time_to_accuracy_s": tta,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    print(f"{'case':<16} {'acc':>6} {'sim s':>8} {'wall s':>7} {'MB down':>8} {'MB saved':>8}")
    for name in args.cases.split(","):
        r = results[name] = run(CASES[name])
        print(
            f"{name:<16} {r['final_accuracy_mean']:>6.3f} {r['sim_time_s']:>8.1f} "
            f"{r['wall_s']:>7.1f} {r['payload_down_mb']:>8.2f} {r['bytes_saved_mb']:>8.2f}  "
            f"finished {r['finished']} sat-out {r['sat_out']} absent {r['absent']} "
            f"tta {r['time_to_accuracy_s']}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
