"""What a swarm tells about its exchange, as typed events: connections and pieces.

The swarm only emits these (``Swarm(events=...)``, a plain callable, called synchronously on the
event loop, so it must be cheap and must not raise); the runtime writes them as the run's
exchange logs (:mod:`fltorrent.telemetry.exchange_log`). Times are the event loop's clock:
wall seconds in real mode, virtual seconds in simulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ConnectionKind = Literal["opened", "closed", "refused", "dial_failed", "gave_up"]


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A connection opened (handshake done), closed, refused, or a dial that failed.

    ``remote`` is the neighbour's peer id (``None`` before its handshake told it);
    ``handshake_s`` is from the connection's start to the end of its handshake (``opened``);
    ``reason`` says why it closed, was refused or failed."""

    t: float
    kind: ConnectionKind
    remote: int | None
    address: str
    outbound: bool
    handshake_s: float | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PieceEvent:
    """A piece of ``author``'s update of ``round`` arrived whole: verified, or rejected (its
    hash failed). ``source`` is the neighbour the last block came from (``sources`` all that
    contributed blocks); ``duration_s`` runs from the piece's first request to its last block."""

    t: float
    author: int
    round: int
    piece: int
    size: int
    source: int
    sources: tuple[int, ...]
    duration_s: float
    verified: bool


ExchangeEvent = ConnectionEvent | PieceEvent
EventSink = Callable[[ExchangeEvent], None]


def no_events(_event: ExchangeEvent) -> None:
    """The default sink: events go nowhere."""
