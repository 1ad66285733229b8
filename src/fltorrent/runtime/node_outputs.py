"""What a running peer hands out, besides its exchange: progress reports and round records to
the tracker, its exchange logs, a checkpoint after each round, its final model. Each is a small
wrapper the node puts around its hooks (:mod:`fltorrent.runtime.node`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import save_file

from fltorrent.config import Config
from fltorrent.control import Progress
from fltorrent.learn.learner import Learner
from fltorrent.peer import Peer, PeerStatus
from fltorrent.runtime.checkpoint import save_checkpoint
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.telemetry.exchange_log import ExchangeLog
from fltorrent.telemetry.snapshot import EVALUATED
from fltorrent.tracker_client import TrackerClient

if TYPE_CHECKING:
    from fltorrent.runtime.node import PeerState

log = logging.getLogger(__name__)


def exchange_log(
    config: Config, log_dir: Path | None, peer_id: int, *, origin: float | None
) -> ExchangeLog | None:
    """The peer's exchange log, when there is a directory for it and the run keeps one."""
    if log_dir is None or not config.output.logs_exchange(config.federate.client_num):
        return None
    return ExchangeLog(log_dir, peer_id, origin=origin)


def checkpointing(
    state: PeerState,
    root: Path,
    every: int,
    forward: Callable[[RoundMetrics], None] | None,
    running: list[Peer],
) -> Callable[[RoundMetrics], None]:
    def on_metrics(m: RoundMetrics) -> None:
        if m.round % every == 0:  # the round's state is whole: aggregate loaded, evaluated
            sat_out = running[-1].membership.skipped if running else {}
            try:
                save_checkpoint(
                    root,
                    state,
                    peer=m.peer,
                    round_=m.round,
                    sim_time_s=m.sim_time_s,
                    sat_out=sat_out,
                )
            except OSError as exc:  # a full disk costs the checkpoint, not the peer
                log.warning("peer %d: no checkpoint of round %d: %s", m.peer, m.round, exc)
        if forward is not None:
            forward(m)

    return on_metrics


def chained(
    first: Callable[[Peer], None], then: Callable[[Peer], None] | None
) -> Callable[[Peer], None]:
    def both(peer: Peer) -> None:
        first(peer)
        if then is not None:
            then(peer)

    return both


def flushing(
    xlog: ExchangeLog, forward: Callable[[RoundMetrics], None] | None
) -> Callable[[RoundMetrics], None]:
    def on_metrics(m: RoundMetrics) -> None:
        xlog.flush()  # a round's events reach the disk with its metrics
        if forward is not None:
            forward(m)

    return on_metrics


def save_model(learner: Learner, model_dir: Path, peer_id: int, rounds: int) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in learner.model.state_dict().items()}
    save_file(
        state,
        str(model_dir / f"peer-{peer_id}.safetensors"),
        metadata={"peer": str(peer_id), "rounds": str(rounds)},
    )


def phase_reporter(
    client: TrackerClient,
    forward: Callable[[PeerStatus], None] | None,
    tg: asyncio.TaskGroup,
) -> Callable[[PeerStatus], None]:
    def report(status: PeerStatus) -> None:
        if forward is not None:
            forward(status)
        msg = Progress(
            round=status.round,
            phase=status.phase.value,
            completion=status.completion,
            accuracy=status.accuracy,
        )
        tg.create_task(client.progress(msg))

    return report


def metrics_reporter(
    client: TrackerClient,
    forward: Callable[[RoundMetrics], None] | None,
    tg: asyncio.TaskGroup,
) -> Callable[[RoundMetrics], None]:
    def report(m: RoundMetrics) -> None:
        if forward is not None:
            forward(m)
        msg = Progress(
            round=m.round,
            phase=EVALUATED,
            completion=m.completion,
            accuracy=m.accuracy,
            record=m.as_dict(),
        )
        tg.create_task(client.progress(msg))

    return report
