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
    accuracy_targets: Sequence[float] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy per round, final accuracy over peers that finished, byte totals, wall time.

    Also who took part in each round (peers that trained, sat out, or were absent: crashed or
    not yet rejoined) and, per accuracy target, the first round whose mean accuracy reached it
    with the time then (virtual seconds in simulation, else the slowest peer's wall seconds).
    """
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
                "time_s": _round_time(by_round[r]),
                "trained": sorted(x["peer"] for x in by_round[r] if x.get("trained", True)),
                "sat_out": sorted(x["peer"] for x in by_round[r] if not x.get("trained", True)),
                "absent": sorted(set(range(1, peers + 1)) - {x["peer"] for x in by_round[r]}),
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
        "bytes_saved": total("bytes_saved") if records and "bytes_saved" in records[0] else 0,
        "time_to_accuracy": _time_to_accuracy(per_round, accuracy_targets),
        "score_overhead": _share(records, "score_s", "train_wall_s"),
        "byzantine": _byzantine(records, last, finished),
        **(extra or {}),
    }


def _byzantine(
    records: Sequence[dict[str, Any]], last: dict[int, dict[str, Any]], finished: list[int]
) -> dict[str, Any]:
    """Attackers (known in experiments), honest peers' final accuracy, and detection rates
    over every honest peer's verdicts: flagged attackers / judged attackers (true positive
    rate), flagged honest authors / judged honest authors (false positive rate)."""
    attackers = sorted({x["peer"] for x in records if x.get("attacker")})
    bad = set(attackers)
    honest_final = [
        last[p]["accuracy"] for p in finished if p not in bad and last[p]["accuracy"] is not None
    ]
    counts = {"tp": 0, "p": 0, "fp": 0, "n": 0}
    for x in records:
        if x.get("attacker"):
            continue
        judged, flagged = set(x.get("judged", ())), set(x.get("flagged", ()))
        counts["tp"] += len(flagged & bad)
        counts["p"] += len(judged & bad)
        counts["fp"] += len(flagged - bad)
        counts["n"] += len(judged - bad)
    return {
        "attackers": attackers,
        "final_accuracy_honest_mean": statistics.fmean(honest_final) if honest_final else None,
        "true_positive_rate": counts["tp"] / counts["p"] if counts["p"] else None,
        "false_positive_rate": counts["fp"] / counts["n"] if counts["n"] else None,
        "verdicts": counts,
    }


def _share(records: Sequence[dict[str, Any]], part: str, whole: str) -> float | None:
    """sum(part) / sum(whole) over the records (``None`` when there is no ``whole``)."""
    den = sum(x.get(whole, 0.0) for x in records)
    return sum(x.get(part, 0.0) for x in records) / den if den > 0 else None


def _round_time(records: Sequence[dict[str, Any]]) -> float:
    """When the round ended for its last peer (virtual clock if simulated, else wall)."""
    sims = [x["sim_time_s"] for x in records if x.get("sim_time_s") is not None]
    return float(max(sims) if sims else max(x["wall_s"] for x in records))


def _time_to_accuracy(
    per_round: Sequence[dict[str, Any]], targets: Sequence[float]
) -> list[dict[str, Any]]:
    out = []
    for target in targets:
        hit = next((r for r in per_round if r["mean"] is not None and r["mean"] >= target), None)
        out.append(
            {
                "target": target,
                "round": hit["round"] if hit else None,
                "time_s": hit["time_s"] if hit else None,
            }
        )
    return out
