"""The default federation over TLS against plaintext, side by side in the same run.

``fltorrent run`` (the README's ``make run``: 8 peers, mnist1d, 20 rounds, peers exchanging
over loopback TCP), each run a fresh process (interpreter and torch start-up included), once
with ``security.transport=tls`` and once with ``security.transport=plain``, for ``--repeats``
pairs. The order alternates (tls, plain, plain, tls, ...) so that the machine's speed drifting
over the minutes of a run weighs on both alike. Everything else is the same: tokens, the
tracker's challenge and manifest signatures are checked under both transports; only the
TLS record layer (handshakes, encryption) differs.

Reported per pair and as the median over pairs: the wall time of the whole process, the run's
own ``wall_time_s`` (``summary.json``: the federation, start-up excluded), the final accuracy
(mean over peers) and ``tls/plain`` = TLS wall time / plaintext wall time (per pair; the
median row gives the median of the per-pair ratios). ``--rounds``, ``--peers``,
``--processes`` and ``--set KEY=VALUE`` (repeatable) are passed to every run.

    python benchmarks/security.py --json bench-results/security.json
    python benchmarks/security.py --repeats 3 --rounds 10 --set topology.type=full
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from federation import run_cli

TRANSPORTS = ("tls", "plain")


def run_once(transport: str, extra: list[str]) -> dict[str, Any]:
    """One ``fltorrent run`` over ``transport`` in a fresh process; wall time includes start-up."""
    row = run_cli([*extra, "--set", f"security.transport={transport}"])
    if row["transport"] != transport:
        raise RuntimeError(
            f"asked for security.transport={transport}, the run used {row['transport']}"
        )
    return row


def _pair_row(tls: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    return {
        "tls_wall_s": tls["wall_s"],
        "plain_wall_s": plain["wall_s"],
        "ratio_wall": round(tls["wall_s"] / plain["wall_s"], 3),
        "tls_run_s": tls["run_s"],
        "plain_run_s": plain["run_s"],
        "ratio_run": round(tls["run_s"] / plain["run_s"], 3),
        "tls_accuracy": tls["final_accuracy"],
        "plain_accuracy": plain["final_accuracy"],
    }


def _median_row(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: round(statistics.median(p[key] for p in pairs), 4) for key in pairs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="pairs (one TLS, one plain run)")
    parser.add_argument("--rounds", type=int, default=None, help="federate.total_round_num")
    parser.add_argument("--peers", type=int, default=None, help="federate.client_num")
    parser.add_argument("--processes", action="store_true", help="one OS process per peer")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override passed to every run (repeatable; not security.transport)",
    )
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args()
    if ns.repeats < 1:
        parser.error("--repeats must be at least 1")
    if any(o.split("=", 1)[0].strip() == "security.transport" for o in ns.overrides):
        parser.error("security.transport is what this benchmark varies")
    extra: list[str] = []
    if ns.rounds is not None:
        extra += ["--rounds", str(ns.rounds)]
    if ns.peers is not None:
        extra += ["--peers", str(ns.peers)]
    if ns.processes:
        extra.append("--processes")
    for override in ns.overrides:
        extra += ["--set", override]

    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    for i in range(ns.repeats):
        for transport in TRANSPORTS if i % 2 == 0 else TRANSPORTS[::-1]:
            runs[transport].append(run_once(transport, extra))
    pairs = [_pair_row(t, p) for t, p in zip(runs["tls"], runs["plain"], strict=True)]
    median = _median_row(pairs)

    first = runs["plain"][0]
    print(
        f"fltorrent run ({first['mode']}), {first['peers']} peers, {first['rounds']} rounds"
        f"{' (' + ' '.join(extra) + ')' if extra else ''}; TLS and plaintext alternating, "
        f"{ns.repeats} pairs; wall = whole process, run = summary.json wall_time_s"
    )
    print(
        f"{'pair':>6} {'TLS wall s':>10} {'plain wall s':>12} {'tls/plain':>9} "
        f"{'TLS run s':>9} {'plain run s':>11} {'tls/plain':>9} {'TLS acc':>8} {'plain acc':>9}"
    )
    for label, row in [*((str(i + 1), p) for i, p in enumerate(pairs)), ("median", median)]:
        print(
            f"{label:>6} {row['tls_wall_s']:>10.2f} {row['plain_wall_s']:>12.2f} "
            f"{row['ratio_wall']:>9.3f} {row['tls_run_s']:>9.2f} {row['plain_run_s']:>11.2f} "
            f"{row['ratio_run']:>9.3f} {row['tls_accuracy']:>8.4f} {row['plain_accuracy']:>9.4f}"
        )
    if ns.json is not None:
        result = {
            "ratio_wall_median": median["ratio_wall"],
            "ratio_run_median": median["ratio_run"],
            "median": median,
            "pairs": pairs,
            "runs": runs,
            "setting": {"repeats": ns.repeats, "args": extra},
        }
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
