"""Request pools: which blocks are still to request (pending) and which are in flight (active).

A piece that is being downloaded has a :class:`Download`. Its blocks are *pending* until a block
request is sent, then *active* with the sessions it was sent to. Outside endgame a block is
active at one session at most; that is the invariant that keeps duplicate payload near zero.
In endgame (no pending block and no unstarted piece left that any neighbour can provide) a block
that has been in flight for a while may be requested from a second session; whichever copy
arrives first wins and the other request is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fltorrent.swarm.store import Blob

if TYPE_CHECKING:
    from fltorrent.swarm.session import BlockKey, Session

MAX_REQUESTS_PER_BLOCK = 2  # the original plus one endgame duplicate


@dataclass
class Download:
    """A piece being assembled."""

    blob: Blob
    piece: int
    pending: list[int]  # block offsets not requested, popped from the end (lowest first)
    active: dict[int, list[Session]] = field(default_factory=dict)
    # Sessions that took this piece into their affinity (``Session.downloads``), so that
    # finishing it visits those and not every session.
    helpers: dict[Session, None] = field(default_factory=dict)
    started: float = 0.0  # loop time of its first request (for the exchange log)

    @property
    def key(self) -> tuple[bytes, int]:
        """(blob id, piece)."""
        return self.blob.blob_id, self.piece

    def block_key(self, offset: int) -> BlockKey:
        """Key of one block."""
        return self.blob.blob_id, self.piece, offset


class RequestPool:
    """All downloads of one swarm."""

    def __init__(self) -> None:
        self.downloads: dict[tuple[bytes, int], Download] = {}
        # Whether a piece is being downloaded: the picker asks this of every candidate piece,
        # so it is the dict's own method (no Python-level call per piece).
        self.busy: Callable[[tuple[bytes, int]], bool] = self.downloads.__contains__

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return key in self.downloads

    def get(self, key: tuple[bytes, int]) -> Download | None:
        """The download of a piece, if any."""
        return self.downloads.get(key)

    def start(self, blob: Blob, piece: int) -> Download:
        """Begin downloading a piece: all its blocks become pending."""
        # Blocks received before (the piece was started, then abandoned) are not asked again.
        offsets = [
            off
            for b in range(blob.blocks_in(piece))
            if not blob.has_block(piece, off := blob.block_range(piece, b)[0])
        ]
        offsets.reverse()
        d = Download(blob, piece, offsets)
        self.downloads[d.key] = d
        return d

    def finish(self, key: tuple[bytes, int]) -> Download | None:
        """Forget a download (piece complete, corrupt, or blob dropped)."""
        return self.downloads.pop(key, None)

    def has_pending(self) -> bool:
        """Whether any block anywhere is still to request."""
        return any(d.pending for d in self.downloads.values())

    def __iter__(self) -> Iterator[Download]:
        return iter(list(self.downloads.values()))

    def assign(self, d: Download, offset: int, session: Session, now: float) -> BlockKey:
        """Record that ``offset`` of ``d`` is requested from ``session``."""
        holders = d.active.setdefault(offset, [])
        holders.append(session)
        key = d.block_key(offset)
        session.inflight[key] = now
        session.downloads[d.key] = None
        d.helpers[session] = None
        return key

    def release(self, session: Session, key: BlockKey) -> None:
        """``session`` will not deliver ``key``: pending again unless active elsewhere."""
        session.inflight.pop(key, None)
        d = self.downloads.get((key[0], key[1]))
        if d is None:
            return
        offset = key[2]
        holders = d.active.get(offset)
        if holders is None or session not in holders:
            return
        holders.remove(session)
        if not holders:
            del d.active[offset]
            if not d.blob.has_block(d.piece, offset):
                d.pending.append(offset)

    def arrived(self, key: BlockKey) -> list[Session]:
        """A block arrived: forget its requests; returns every session it was active at."""
        d = self.downloads.get((key[0], key[1]))
        if d is None:
            return []
        holders = d.active.pop(key[2], [])
        if key[2] in d.pending:  # unsolicited but useful: no longer to request
            d.pending.remove(key[2])
        for s in holders:
            s.inflight.pop(key, None)
        return holders
