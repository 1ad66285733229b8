"""The run summary (``summary.json``) computed from metric records."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def summarize(
    records: Sequence[dict[str, Any]],
    *,
    peers: int,
    rounds: int,
    wall_time_s: float,
    failed: Sequence[int] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy per round, final accuracy over peers that finished, byte totals, wall time."""
    by_round: dict[int, list[dict[str, Any]]] = defaultdict(list)
    last: dict[int, dict[str, Any]] = {}
    for rec in records:
        by_round[rec["round"]].append(rec)
        if rec["peer"] not in last or rec["round"] > last[rec["peer"]]["round"]:
            last[rec["peer"]] = rec
    finished = sorted(p for p, rec in last.items() if rec["round"] == rounds)
    final = [last[p]["accuracy"] for p in finished if last[p]["accuracy"] is not None]
    per_round = []
    for r in sorted(by_round):
        accs = [x["accuracy"] for x in by_round[r] if x["accuracy"] is not None]
        per_round.append(
            {
                "round": r,
                "peers": len(by_round[r]),
                "mean": statistics.fmean(accs) if accs else None,
                "min": min(accs) if accs else None,
                "max": max(accs) if accs else None,
                "completion_mean": statistics.fmean(x["completion"] for x in by_round[r]),
                "exchange_s_max": max(x["exchange_s"] for x in by_round[r]),
            }
        )

    def total(key: str) -> int:
        return int(sum(x[key] for x in records))

    return {
        "peers": peers,
        "rounds": rounds,
        "wall_time_s": round(wall_time_s, 3),
        "final_accuracy_mean": statistics.fmean(final) if final else None,
        "final_accuracy_min": min(final) if final else None,
        "final_accuracy_max": max(final) if final else None,
        "finished_peers": finished,
        "failed_peers": sorted(failed),
        "accuracy_per_round": per_round,
        "completion_mean": (
            statistics.fmean(x["completion"] for x in records) if records else None
        ),
        "bytes": {
            "up": total("bytes_up"),
            "down": total("bytes_down"),
            "payload_up": total("payload_bytes_up"),
            "payload_down": total("payload_bytes_down"),
            "duplicate": total("duplicate_bytes"),
            "control": total("control_bytes"),
        },
        "corrupt_pieces": total("corrupt_pieces"),
        "deadline_rounds": sum(1 for x in records if x["deadline_hit"]),
        **(extra or {}),
    }
