"""Traffic counters of one peer's swarm."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Counters:
    """Cumulative counts; take differences of two snapshots for a round.

    ``payload_*`` count block data; ``control_*`` count every other byte on the wire (frame
    headers, requests, haves, manifests, handshakes). ``duplicate_bytes`` is block data we
    received but did not need (already held, or for a blob we no longer want).
    """

    bytes_up: int = 0
    bytes_down: int = 0
    payload_up: int = 0
    payload_down: int = 0
    duplicate_bytes: int = 0
    control_up: int = 0
    control_down: int = 0
    corrupt_pieces: int = 0
    pieces_verified: int = 0
    requests_sent: int = 0
    duplicate_requests: int = 0
    rejects_received: int = 0
    sessions_opened: int = 0
    sessions_failed: int = 0
    # Security refusals: manifests whose signature failed, replayed (an old round's signed
    # manifest announced as a newer one), connections whose credentials did not hold.
    bad_signatures: int = 0
    replayed_manifests: int = 0
    refused_peers: int = 0

    def snapshot(self) -> Counters:
        """A copy frozen at this moment."""
        return Counters(**asdict(self))

    def minus(self, earlier: Counters) -> Counters:
        """What was counted since ``earlier``."""
        a, b = asdict(self), asdict(earlier)
        return Counters(**{k: a[k] - b[k] for k in a})
