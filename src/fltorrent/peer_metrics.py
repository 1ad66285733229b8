"""A peer's round record: the :class:`RoundMetrics` line built from what the round did."""

from __future__ import annotations

from fltorrent.devices.device import Device, Participation
from fltorrent.learn.learner import Evaluation, LocalUpdate
from fltorrent.plans.base import RoundOutcome
from fltorrent.swarm import Counters
from fltorrent.telemetry.events import RoundMetrics


def round_metrics(
    *,
    peer_id: int,
    r: int,
    ev: Evaluation,
    update: LocalUpdate | None,
    decision: Participation,
    counters: Counters,
    outcome: RoundOutcome,
    train_s: float,
    eval_s: float,
    bytes_saved: int,
    wall_s: float,
    sim_time_s: float | None,
    device: Device | None,
    attacker: bool,
    selected: bool = True,
    selection: str = "",
) -> RoundMetrics:
    """One round's record; ``outcome`` is what the round plan's exchange did."""
    c = counters
    dev = device
    report = outcome.report
    return RoundMetrics(
        round=r,
        peer=peer_id,
        accuracy=ev.accuracy,
        loss=ev.loss,
        local_accuracy=ev.local_accuracy,
        train_loss=update.train.loss if update is not None else None,
        num_samples=update.num_samples if update is not None else 0,
        train_s=train_s,
        exchange_s=outcome.exchange_s,
        aggregate_s=outcome.aggregate_s,
        eval_s=eval_s,
        bytes_up=c.bytes_up,
        bytes_down=c.bytes_down,
        payload_bytes_up=c.payload_up,
        payload_bytes_down=c.payload_down,
        duplicate_bytes=c.duplicate_bytes,
        control_bytes=c.control_up + c.control_down,
        corrupt_pieces=c.corrupt_pieces,
        pieces_expected=outcome.pieces_expected,
        pieces_received=outcome.pieces_received,
        completion=outcome.completion,
        authors_expected=outcome.authors_expected,
        authors_aggregated=report.authors,
        partial_chunks=report.chunks_limited,
        deadline_hit=outcome.deadline_hit,
        wall_s=wall_s,
        sim_time_s=sim_time_s,
        trained=update is not None,
        skip_reason=None if update is not None else decision.reason,
        compression=decision.compression if update is not None else "none",
        bytes_saved=bytes_saved,
        device=dev.profile.name if dev is not None else None,
        battery_level=dev.battery_level if dev is not None else None,
        temperature_c=dev.temperature_c if dev is not None else None,
        train_wall_s=update.train.seconds if update is not None else 0.0,
        score_s=update.score_s if update is not None else 0.0,
        attacker=attacker,
        judged=report.judged,
        flagged=report.flagged,
        excluded=report.excluded,
        robust_fallbacks=report.fallbacks,
        consensus_distance=outcome.consensus_distance,
        owned_chunks=outcome.owned_chunks,
        owner_disagreements=outcome.owner_disagreements,
        fallback_chunks=outcome.fallback_chunks,
        selected=selected,
        selection=selection,
    )
