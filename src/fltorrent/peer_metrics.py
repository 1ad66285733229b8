"""A peer's round record: the :class:`RoundMetrics` line built from what the round did."""

from __future__ import annotations

from fltorrent.defense import DefenseReport
from fltorrent.devices.device import Device, Participation
from fltorrent.learn.learner import Evaluation, LocalUpdate
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
    times: tuple[float, float, float, float],
    progress: tuple[int, int, int],
    completion: float,
    report: DefenseReport,
    deadline_hit: bool,
    bytes_saved: int,
    wall_s: float,
    sim_time_s: float | None,
    device: Device | None,
    attacker: bool,
    consensus_distance: float | None = None,
) -> RoundMetrics:
    """``times``: train, exchange, aggregate, evaluate seconds; ``progress``: authors expected,
    pieces received, pieces expected."""
    c = counters
    dev = device
    return RoundMetrics(
        round=r,
        peer=peer_id,
        accuracy=ev.accuracy,
        loss=ev.loss,
        local_accuracy=ev.local_accuracy,
        train_loss=update.train.loss if update is not None else None,
        num_samples=update.num_samples if update is not None else 0,
        train_s=times[0],
        exchange_s=times[1],
        aggregate_s=times[2],
        eval_s=times[3],
        bytes_up=c.bytes_up,
        bytes_down=c.bytes_down,
        payload_bytes_up=c.payload_up,
        payload_bytes_down=c.payload_down,
        duplicate_bytes=c.duplicate_bytes,
        control_bytes=c.control_up + c.control_down,
        corrupt_pieces=c.corrupt_pieces,
        pieces_expected=progress[2],
        pieces_received=progress[1],
        completion=completion,
        authors_expected=progress[0],
        authors_aggregated=report.authors,
        partial_chunks=report.chunks_limited,
        deadline_hit=deadline_hit,
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
        consensus_distance=consensus_distance,
    )
