"""Initial seeding (super-seeding, after BEP 16) of the blobs this peer authors.

Why. When one peer holds a blob that many neighbours want, its uplink is the bottleneck, and
every piece it sends twice delays the moment every piece is out once. With the plain bitfield
every neighbour sees every piece; their random picks overlap, and on a 20-peer broadcast the
author sent 1.7x the blob before the swarm had it (benchmarks/dissemination.py).

How. While a blob of ours is *initially seeded*, we send at most ``concurrent`` pieces for
the first time at once, each to one neighbour: that neighbour is shown the piece (a bitfield
with that bit, later a Have), and nobody else is; the most important pieces go out first.
Few pieces at a time means each goes out fast, so neighbours start relaying early; everything
beyond what we showed them they get from the neighbours that received it (announced with Have
as usual). When a piece has gone out whole, its slot goes to a neighbour holding the fewest
pieces, with a piece nobody was shown yet. A neighbour that left, or asked for nothing for
``stall_seconds``, frees its slot, so a slow or departed neighbour cannot hold pieces back.
Once every piece has gone out whole at least once, or nothing was served for ``stall_seconds``
at all, every neighbour is sent the full bitfield and seeding is ordinary.

The protocol is unchanged: a holder may announce any subset of its pieces, and a later bitfield
replaces an earlier one (docs/PROTOCOL.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from fltorrent.swarm.options import SwarmOptions
from fltorrent.swarm.picker import importance_levels
from fltorrent.swarm.session import Session
from fltorrent.swarm.store import Blob
from fltorrent.wire import Bitfield, Have, pack_bits


@dataclass
class _Seeding:
    """Per-blob state of initial seeding."""

    blob: Blob
    shown: bytearray  # per piece: 1 once some neighbour was shown it
    out: bytearray  # per piece: 1 once it was sent whole to some neighbour
    inflight: dict[int, int] = field(default_factory=dict)  # piece -> peer shown it, not out
    sent: dict[tuple[int, int], int] = field(default_factory=dict)  # (peer, piece) -> bytes
    last_ask: dict[int, float] = field(default_factory=dict)  # peer -> last block served
    last_served: float = 0.0
    levels: list[int] = field(default_factory=list)  # per piece: importance level (picker.py)


class InitialSeeder:
    """Decides which of our own pieces each neighbour is shown while a blob is new."""

    def __init__(
        self,
        options: SwarmOptions,
        *,
        sessions: dict[int, Session],
        clock: Callable[[], float],
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._rng = random.Random(options.seed)
        self.concurrent = options.seed_concurrent
        self.stall_seconds = options.seed_stall_seconds
        self._blobs: dict[bytes, _Seeding] = {}

    def start(self, blob: Blob) -> None:
        """Seed ``blob`` (complete, ours) initially from now on."""
        n = blob.manifest.num_pieces
        self._blobs[blob.blob_id] = _Seeding(
            blob,
            bytearray(n),
            bytearray(n),
            last_served=self._clock(),
            levels=importance_levels(blob.manifest.importance)[0],
        )

    def seeding(self, blob_id: bytes) -> bool:
        """Whether ``blob_id`` is still initially seeded (partial bitfields)."""
        return blob_id in self._blobs

    def forget(self, blob_id: bytes) -> None:
        self._blobs.pop(blob_id, None)

    def initial_bits(self, session: Session, blob: Blob) -> bytes:
        """The bitfield announcing ``blob`` to ``session``: one new piece if a slot is free."""
        st = self._blobs[blob.blob_id]
        piece = self._choose(st, session) if len(st.inflight) < self.concurrent else None
        if piece is not None:
            self._mark(st, session, piece)
        return pack_bits([i == piece for i in range(blob.manifest.num_pieces)])

    def on_served(self, session: Session, blob_id: bytes, piece: int, length: int) -> None:
        """We sent ``length`` bytes of ``piece`` to ``session``; free its slot once whole."""
        st = self._blobs.get(blob_id)
        if st is None:
            return
        now = self._clock()
        rid = session.remote_id
        st.last_served = now
        st.last_ask[rid] = now
        key = (rid, piece)
        got = st.sent.get(key, 0) + length
        st.sent[key] = got
        if got < st.blob.manifest.piece_sizes[piece]:
            return
        del st.sent[key]
        st.out[piece] = 1
        st.inflight.pop(piece, None)
        if all(st.out):
            self._finish(st)
        else:
            self._fill(st)

    def tick(self) -> None:
        """Free the slots of neighbours that left or stalled; end seeding that stalled."""
        now = self._clock()
        for st in list(self._blobs.values()):
            if now - st.last_served > self.stall_seconds:
                self._finish(st)
                continue
            for piece, rid in list(st.inflight.items()):
                gone = rid not in self._sessions
                if gone or now - st.last_ask.get(rid, now) > self.stall_seconds:
                    # Another neighbour may be shown it; the stalled one can still finish it.
                    del st.inflight[piece]
                    st.shown[piece] = 0
            self._fill(st)

    # ------------------------------------------------------------------ internals
    def _lacks(self, session: Session, blob_id: bytes) -> Callable[[int], bool]:
        handle = session.their_handle.get(blob_id)
        if handle is None:
            return lambda _i: True
        bits = session.their[handle].bits
        return lambda i: not bits[i]

    def _held(self, session: Session, blob_id: bytes) -> int:
        handle = session.their_handle.get(blob_id)
        return 0 if handle is None else sum(session.their[handle].bits)

    def _choose(self, st: _Seeding, session: Session) -> int | None:
        """A piece no neighbour was shown yet that ``session`` lacks, or None: of the highest
        importance level (see picker.py), at random among those.

        Pieces out already are not shown again before every piece is out: the neighbours that
        have them announce them, and our uplink is better spent on the rest.
        """
        lacks = self._lacks(session, st.blob.blob_id)
        candidates = [i for i in range(len(st.shown)) if not st.shown[i] and lacks(i)]
        if not candidates:
            return None
        top = max(st.levels[i] for i in candidates)
        return self._rng.choice([i for i in candidates if st.levels[i] == top])

    def _mark(self, st: _Seeding, session: Session, piece: int) -> None:
        st.shown[piece] = 1
        st.inflight[piece] = session.remote_id
        st.last_ask[session.remote_id] = self._clock()

    def _fill(self, st: _Seeding) -> None:
        """Show new pieces while slots are free: to the neighbours holding the fewest pieces."""
        blob_id = st.blob.blob_id
        busy = set(st.inflight.values())
        idle = [
            s
            for rid, s in sorted(self._sessions.items())
            if rid not in busy and blob_id in s.our_handle
        ]
        self._rng.shuffle(idle)
        idle.sort(key=lambda s: self._held(s, blob_id))
        for session in idle:
            if len(st.inflight) >= self.concurrent:
                return
            piece = self._choose(st, session)
            if piece is not None:
                self._mark(st, session, piece)
                session.send(Have(session.our_handle[blob_id], piece))

    def _finish(self, st: _Seeding) -> None:
        """Ordinary seeding from now on: everyone sees every piece."""
        del self._blobs[st.blob.blob_id]
        bits = pack_bits(st.blob.held())
        for session in self._sessions.values():
            handle = session.our_handle.get(st.blob.blob_id)
            if handle is not None:
                session.send(Bitfield(handle, bits))
