"""A live view of every peer, fed by peers (in-process) or by the tracker (processes)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class PeerView:
    """The last known state of one peer."""

    peer: int
    phase: str = "starting"
    round: int = 0
    completion: float = 0.0
    accuracy: float | None = None


class StatusBoard:
    """Collects peer states for :meth:`Federation.get_training_status`."""

    def __init__(self, peers: int, rounds: int) -> None:
        self.rounds = rounds
        self.peers = {i: PeerView(i) for i in range(1, peers + 1)}

    def update(
        self, peer: int, *, phase: str, round_: int, completion: float, accuracy: float | None
    ) -> None:
        """Record a peer's state."""
        view = self.peers.setdefault(peer, PeerView(peer))
        view.phase, view.round, view.completion = phase, round_, completion
        if accuracy is not None:
            view.accuracy = accuracy

    def mark(self, peer: int, phase: str) -> None:
        """Set only the phase (e.g. failed, done)."""
        self.peers.setdefault(peer, PeerView(peer)).phase = phase

    def snapshot(self) -> dict[str, Any]:
        """Round (the slowest live peer's), per-peer state, mean completion."""
        live = [v for v in self.peers.values() if v.phase != "failed"]
        return {
            "round": min((v.round for v in live), default=0),
            "total_rounds": self.rounds,
            "completion": statistics.fmean(v.completion for v in live) if live else 0.0,
            "peers": {v.peer: asdict(v) for v in self.peers.values()},
        }
