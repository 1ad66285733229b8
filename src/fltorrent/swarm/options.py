"""Settings of one swarm."""

from __future__ import annotations

from dataclasses import dataclass

from fltorrent.errors import SwarmError
from fltorrent.swarm.session import SessionOptions


@dataclass(frozen=True)
class SwarmOptions:
    """Protocol limits, pipeline and timer settings of one swarm."""

    federation: str
    peer_id: int
    listen_port: int = 0
    block_size: int = 16 * 1024
    max_frame_size: int = 2 * 1024 * 1024
    max_block_size: int = 1024 * 1024
    min_pipeline: int = 2
    max_inflight_bytes: int = 4 * 1024 * 1024
    pipeline_seconds: float = 0.1  # requests queued per neighbour: min round trip + this
    request_timeout: float = 30.0
    endgame_min_wait: float = 0.05
    max_corrupt: int = 3
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    keepalive_interval: float = 30.0
    connect_timeout: float = 5.0
    max_connection_attempts: int = (
        0  # failed dials in a row before giving a neighbour up (0: never)
    )
    max_pieces: int = 1 << 16  # per announced blob
    max_handles: int = 1 << 12  # blobs announced per connection and direction
    max_remote_pieces: int = 1 << 20  # pieces announced by one neighbour, all blobs together
    max_piece_size: int = 16 << 20  # larger pieces are refused (a block would allocate them)
    max_unsolicited: int = 256  # blocks sent to us unasked before the neighbour is dropped
    max_handshaking: int = 64  # accepted connections still in their handshake
    tick_interval: float = 0.1
    # Seconds a Have waits to leave with the others as one Haves frame; 0: the next pass of
    # the event loop (the pieces a burst of reads completes still go together).
    have_delay: float = 0.0
    upload_slots: int = 0  # neighbours sent piece data at once (0: all); see slots.py
    upload_quantum: int = 256 * 1024  # bytes per turn when others wait
    super_seeding: bool = False  # show neighbours few pieces of our own new blobs (seeding.py)
    seed_concurrent: int = 4  # pieces of a new blob of ours sent for the first time at once
    seed_stall_seconds: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= self.max_block_size:
            raise SwarmError("block_size must be positive and at most max_block_size")
        if not 0 <= self.have_delay <= 1:
            raise SwarmError("have_delay must be between 0 and 1 second")

    def session_options(self) -> SessionOptions:
        """The limits and timers every session of this swarm runs with."""
        return SessionOptions(
            federation=self.federation,
            peer_id=self.peer_id,
            listen_port=self.listen_port,
            max_frame_size=self.max_frame_size,
            max_block_size=self.max_block_size,
            max_pieces=self.max_pieces,
            max_handles=self.max_handles,
            handshake_timeout=self.handshake_timeout,
            idle_timeout=self.idle_timeout,
            keepalive_interval=self.keepalive_interval,
            write_timeout=self.idle_timeout,
            have_delay=self.have_delay,
        )
