"""What a peer is doing and when its rounds end: the vocabulary shared by the peer, its stages
and the round plans (kept apart from ``peer.py`` so that plans need not import the peer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fltorrent.errors import FltorrentError


class Phase(StrEnum):
    """What a peer is doing."""

    STARTING = "starting"
    TRAINING = "training"
    EXCHANGING = "exchanging"
    AGGREGATING = "aggregating"
    EVALUATING = "evaluating"
    SEEDING = "seeding"
    DONE = "done"
    FAILED = "failed"


class PeerCrash(FltorrentError):
    """Raised by a fault hook to make a peer stop abruptly, as if its process died."""


FaultHook = Callable[[int, int, Phase], None]
"""Called with (peer id, round, phase) as a peer enters each phase; may raise PeerCrash."""


@dataclass(frozen=True)
class RoundPolicy:
    """When rounds end."""

    rounds: int
    timeout: float
    hard_timeout: float
    min_completion_ratio: float
    seed_grace: float
    critical_window: float = 0.25  # last share of `timeout` in which the picker is critical
    # Once every author that published has delivered, members silent so far are waited for
    # silence_factor x the exchange's time so far (at least silence_floor s); 0: until the
    # deadlines.
    silence_factor: float = 3.0
    silence_floor: float = 10.0
