"""The download side of a swarm: availability, request pools, per-neighbour pipelines, endgame.

The :class:`Downloader` decides which blocks to request from which neighbour and processes the
blocks that arrive. It shares the swarm's blob and session tables (read-mostly) and reports
verified and corrupt pieces back through callbacks; it never announces, serves or dials.

Block choice for one neighbour, in order:

1. pending blocks of pieces this neighbour already helps with (affinity keeps a piece
   single-sourced, so a corrupt piece has one culprit and finished pieces relay sooner);
2. new pieces, rarer and more important first (in critical mode, as the round's deadline
   nears, the most important first: see picker.py), enough to fill the pipeline;
3. pending blocks of pieces other neighbours are downloading;
4. endgame: a second request for a block that is slow to arrive elsewhere.

Pipeline depth follows the rate measured from each neighbour (``pipeline_seconds`` worth of
blocks, between ``min_pipeline`` and ``max_inflight_bytes``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping

from fltorrent.errors import RemoteProtocolError, SwarmError
from fltorrent.swarm.counters import Counters
from fltorrent.swarm.events import EventSink, PieceEvent, no_events
from fltorrent.swarm.options import SwarmOptions
from fltorrent.swarm.picker import PiecePicker
from fltorrent.swarm.requests import MAX_REQUESTS_PER_BLOCK, Download, RequestPool
from fltorrent.swarm.session import BlockKey, Session
from fltorrent.swarm.store import Blob, BlockResult
from fltorrent.wire import Cancel, Haves, Interested, NotInterested, Piece, Reject, Request

log = logging.getLogger(__name__)


class Downloader:
    """Requests and receives blocks for one swarm."""

    def __init__(
        self,
        options: SwarmOptions,
        *,
        blobs: dict[bytes, Blob],
        sessions: dict[int, Session],
        counters: Counters,
        active: Mapping[bytes, Blob],
        subset: Callable[[bytes], frozenset[int] | None],
        on_verified: Callable[[Blob, int], None],
        on_bad_peer: Callable[[Session], None],
        clock: Callable[[], float],
        events: EventSink = no_events,
    ) -> None:
        self.options = options
        self.blobs = blobs
        self.sessions = sessions
        self.counters = counters
        self.active = active  # the blobs still wanted (the swarm keeps it)
        self.subset = subset  # the wanted pieces of a blob, None: all
        self.on_verified = on_verified
        self.on_bad_peer = on_bad_peer
        self.now = clock
        self.events = events
        self.picker = PiecePicker(seed=options.seed)
        self.pool = RequestPool()
        # From loop time critical_from, the picker is critical for rounds <= critical_round.
        self.critical_from = math.inf
        self.critical_round: int | None = None
        # Per neighbour id, so that reconnecting does not wipe the slate.
        self.corrupt: dict[int, int] = {}

    def set_critical(self, round_: int | None, at: float) -> None:
        """From loop time ``at`` on, the picker is in critical mode for blobs of rounds up to
        ``round_``: their most important missing pieces first, whatever their availability (the
        round's deadline nears). ``None``: no critical mode."""
        self.critical_round = round_
        self.critical_from = math.inf if round_ is None else at

    # ------------------------------------------------------------------ bookkeeping
    def obtainable(self, blob: Blob) -> bool:
        """Whether some missing piece of ``blob`` is held by a connected neighbour."""
        avail = self.picker.availability.get(blob.blob_id)
        if avail is None:
            return False
        subset = self.subset(blob.blob_id)
        if subset is not None:
            return any(not blob.has(i) and avail[i] > 0 for i in subset)
        return any(data is None and avail[i] > 0 for i, data in enumerate(blob.pieces))

    def prune(self) -> None:
        """Drop downloads that nobody connected can serve (their holders left or rejected).

        Blocks already received stay in the blob's assembly; if a holder appears later, the
        piece restarts from the missing blocks. Without this, an orphaned download would keep
        pending blocks forever (and with them, endgame off and a departed author awaited).
        """
        for d in self.pool:
            if d.active:
                continue
            avail = self.picker.availability.get(d.blob.blob_id)
            if avail is None or avail[d.piece] <= 0:
                self.pool.finish(d.key)
                for s in d.helpers:
                    s.downloads.pop(d.key, None)

    def stop(self, blob: Blob) -> None:
        """Stop downloading ``blob`` (no longer wanted); cancel its requests."""
        for piece in range(blob.manifest.num_pieces):
            d = self.pool.finish((blob.blob_id, piece))
            if d is not None:
                self._cancel_all(d)

    def stop_unwanted(self, blob: Blob) -> None:
        """Stop downloading the pieces of ``blob`` outside its wanted subset."""
        subset = self.subset(blob.blob_id)
        if subset is None:
            return
        for piece in range(blob.manifest.num_pieces):
            if piece not in subset:
                d = self.pool.finish((blob.blob_id, piece))
                if d is not None:
                    self._cancel_all(d)

    def wants_piece(self, blob: Blob, piece: int) -> bool:
        """Whether ``piece`` of ``blob`` is wanted (whether or not we hold it)."""
        subset = self.subset(blob.blob_id)
        return (subset is None or piece in subset) and blob.blob_id in self.active

    def release(self, session: Session, key: BlockKey) -> None:
        """``session`` will not deliver ``key`` (rejected, timed out)."""
        self.pool.release(session, key)

    def on_reject(self, session: Session, msg: Reject) -> None:
        """A neighbour will not serve a request."""
        self.counters.rejects_received += 1
        rb = session.their[msg.handle]
        self.pool.release(session, (rb.blob_id, msg.piece, msg.offset))
        if not session.wire.peer_choking and rb.bits[msg.piece]:
            # Not choking us, so it does not hold the piece (any more): stop asking it.
            rb.bits[msg.piece] = 0
            if rb.known:
                self.picker.add_piece(rb.blob_id, msg.piece, -1)
            session.downloads.pop((rb.blob_id, msg.piece), None)
        self.prune()
        self.fill_all()

    def release_all(self, session: Session) -> None:
        """``session`` will deliver nothing it was asked (choked us, or closed)."""
        for key in list(session.inflight):
            self.pool.release(session, key)

    def forget(self, blob: Blob) -> None:
        """Stop downloading a dropped blob, cancel its requests, forget its availability."""
        self.stop(blob)
        self.picker.forget(blob.blob_id)

    def expire(self, now: float) -> None:
        """Withdraw requests older than ``request_timeout`` so that others can serve them."""
        timeout = self.options.request_timeout
        for session in list(self.sessions.values()):
            stale = [k for k, t in session.inflight.items() if now - t > timeout]
            if not stale:
                continue
            log.info(
                "peer %d: %d requests to %d timed out",
                self.options.peer_id,
                len(stale),
                session.remote_id,
            )
            for key in stale:
                self.pool.release(session, key)
                session.downloads.pop((key[0], key[1]), None)  # ask someone else next
                blob = self.blobs.get(key[0])
                if blob is not None:
                    length = blob.block_range(key[1], key[2] // blob.block_size)[1]
                    session.send(Cancel(session.their_handle[key[0]], key[1], key[2], length))

    # ------------------------------------------------------------------ arrivals
    def on_have(self, session: Session, handle: int, piece: int) -> None:
        """The neighbour now holds ``piece`` of its blob ``handle``."""
        rb = session.their[handle]
        if rb.bits[piece]:
            return
        rb.bits[piece] = 1
        if rb.known:
            self.picker.add_piece(rb.blob_id, piece)
            blob = self.blobs[rb.blob_id]
            if not blob.has(piece) and self.wants_piece(blob, piece):
                if not session.wire.am_interested:
                    session.send(Interested())
                session.wants_fill = True

    def on_haves(self, session: Session, msg: Haves) -> None:
        """Several ``Have`` in one message."""
        for handle, piece in msg.pairs:
            self.on_have(session, handle, piece)

    def on_piece(self, session: Session, msg: Piece) -> None:
        """A block arrived from ``session``."""
        rb = session.their[msg.handle]
        key = (rb.blob_id, msg.piece, msg.offset)
        sent_at = session.inflight.get(key)
        n = len(msg.data)
        blob = self.blobs.get(rb.blob_id)
        d = self.pool.get((rb.blob_id, msg.piece))
        if sent_at is None:
            # Never asked of this neighbour (or withdrawn: cancelled, timed out, choked). Such
            # data is not used, so a neighbour cannot slip bad blocks into pieces that others
            # serve us; one that keeps pushing is dropped.
            self.counters.duplicate_bytes += n
            st = session.stats
            st.unsolicited += 1
            # Late copies of cancelled requests are normal (endgame, timeouts, chokes); a
            # stream of data nobody asked for is not.
            if st.unsolicited > self.options.max_unsolicited + st.useful_blocks // 8:
                raise RemoteProtocolError(
                    f"more than {self.options.max_unsolicited} blocks sent unasked"
                )
            return
        if blob is None or d is None or not self.wants_piece(blob, msg.piece):
            self.pool.arrived(key)
            session.inflight.pop(key, None)
            self.counters.duplicate_bytes += n
            session.wants_fill = True
            return
        for other in self.pool.arrived(key):
            if other is not session and not other.closed:
                other.send(Cancel(other.their_handle[rb.blob_id], msg.piece, msg.offset, n))
        try:
            result, sources = blob.write_block(msg.piece, msg.offset, msg.data, session.remote_id)
        except SwarmError as exc:
            raise RemoteProtocolError(f"bad block: {exc}") from exc
        if result is BlockResult.DUPLICATE:
            self.counters.duplicate_bytes += n
        else:
            self.counters.payload_down += n
            session.stats.useful_blocks += 1
            request = min(blob.manifest.piece_sizes[msg.piece], self.options.block_size)
            self._measure(session, n, sent_at, request)
        if result is BlockResult.COMPLETED:
            d = self.pool.finish((blob.blob_id, msg.piece))
            if d is not None:
                self._cancel_all(d)
            self.counters.pieces_verified += 1
            self._piece_event(blob, msg.piece, session.remote_id, sources, d, verified=True)
            self.on_verified(blob, msg.piece)
        elif result is BlockResult.CORRUPT:
            self._corrupt(blob, msg.piece, sources, session.remote_id)
        session.wants_fill = True

    def _measure(self, session: Session, n: int, sent_at: float | None, request: int) -> None:
        st = session.stats
        now = self.now()
        if sent_at is not None:
            rtt = now - sent_at
            st.latency = rtt if st.latency == 0 else 0.8 * st.latency + 0.2 * rtt
            st.min_rtt = min(st.min_rtt, rtt)
        # Typical request size from this neighbour: a block, or the whole piece when pieces are
        # smaller (compressed updates); a piece's short last block does not count.
        st.block_bytes = request if st.block_bytes == 0 else 0.9 * st.block_bytes + 0.1 * request
        if st.window_start == 0:
            st.window_start = sent_at if sent_at is not None else now
        st.window_bytes += n
        elapsed = now - st.window_start
        if elapsed >= 0.05:
            sample = st.window_bytes / elapsed
            st.rate = sample if st.rate == 0 else 0.7 * st.rate + 0.3 * sample
            st.window_bytes = 0
            st.window_start = now

    def _piece_event(
        self,
        blob: Blob,
        piece: int,
        last: int,
        sources: frozenset[int],
        d: Download | None,
        *,
        verified: bool,
    ) -> None:
        now = self.now()
        m = blob.manifest
        self.events(
            PieceEvent(
                t=now,
                author=m.author,
                round=m.round,
                piece=piece,
                size=m.piece_sizes[piece],
                source=last,
                sources=tuple(sorted(sources)),
                duration_s=now - d.started if d is not None and d.started else 0.0,
                verified=verified,
            )
        )

    def _corrupt(self, blob: Blob, piece: int, sources: frozenset[int], last: int) -> None:
        self.counters.corrupt_pieces += 1
        d = self.pool.finish((blob.blob_id, piece))
        if d is not None:
            self._cancel_all(d)
        self._piece_event(blob, piece, last, sources, d, verified=False)
        log.warning(
            "peer %d: piece %d of author %d round %d failed its hash (from %s)",
            self.options.peer_id,
            piece,
            blob.manifest.author,
            blob.manifest.round,
            sorted(sources),
        )
        for rid in sources:
            self.corrupt[rid] = count = self.corrupt.get(rid, 0) + 1
            session = self.sessions.get(rid)
            if session is not None and count >= self.options.max_corrupt:
                log.warning(
                    "peer %d: dropping %d after %d corrupt pieces",
                    self.options.peer_id,
                    rid,
                    count,
                )
                self.on_bad_peer(session)
        self.fill_all()

    def _cancel_all(self, d: Download) -> None:
        for offset, holders in d.active.items():
            key = d.block_key(offset)
            for s in holders:
                s.inflight.pop(key, None)
                if not s.closed:
                    handle = s.their_handle[d.blob.blob_id]
                    length = d.blob.block_range(d.piece, offset // d.blob.block_size)[1]
                    s.send(Cancel(handle, d.piece, offset, length))
        d.active.clear()
        for s in d.helpers:
            s.downloads.pop(d.key, None)

    # ------------------------------------------------------------------ requesting
    def _pipeline_depth(self, session: Session) -> int:
        # Enough to cover the path's round trip (its smallest measured one: the average grows
        # with our own queue at the holder) plus a margin, at the rate this neighbour delivers.
        # Deeper queues only delay the blocks of pieces that became rare since we asked.
        opts = self.options
        st = session.stats
        seconds = opts.pipeline_seconds + (st.min_rtt if st.min_rtt != math.inf else 0.0)
        # The pipeline counts requests: with pieces smaller than a block, requests are smaller.
        block = min(float(opts.block_size), st.block_bytes or float(opts.block_size))
        by_rate = math.ceil(st.rate * seconds / max(block, 256.0))
        return max(opts.min_pipeline, min(by_rate, opts.max_inflight_bytes // opts.block_size))

    def fill_all(self) -> None:
        """Top up every neighbour's pipeline."""
        for session in list(self.sessions.values()):
            self.fill(session)

    def fill(self, session: Session) -> None:
        """Top up ``session``'s request pipeline."""
        if not session.open or session.closed or session.wire.peer_choking:
            return
        depth = self._pipeline_depth(session)
        now = self.now()
        while len(session.inflight) < depth:
            choice = self._next_block(session, now, depth - len(session.inflight))
            if choice is None:
                if not session.inflight and session.wire.am_interested:
                    session.send(NotInterested())
                return
            d, offset = choice
            key = self.pool.assign(d, offset, session, now)
            length = d.blob.block_range(d.piece, offset // d.blob.block_size)[1]
            session.send(Request(session.their_handle[key[0]], d.piece, offset, length))
            self.counters.requests_sent += 1

    def _holds(self, session: Session, blob_id: bytes, piece: int) -> bool:
        handle = session.their_handle.get(blob_id)
        return handle is not None and session.their[handle].bits[piece] == 1

    def _next_block(self, session: Session, now: float, room: int) -> tuple[Download, int] | None:
        for dkey in list(session.downloads):
            d = self.pool.get(dkey)
            if d is None or not self._holds(session, dkey[0], dkey[1]):
                del session.downloads[dkey]
            elif d.pending:
                return d, d.pending.pop()
        picked = self.picker.pick(
            self._candidates(session),
            self.pool.busy,
            count=room,
            critical_round=self.critical_round if now >= self.critical_from else None,
            subsets=self.subset,
        )
        if picked:
            first: Download | None = None
            blocks = 0
            for blob_id, piece in picked:
                d = self.pool.start(self.blobs[blob_id], piece)
                d.started = now
                session.downloads[d.key] = None
                d.helpers[session] = None
                first = first or d
                blocks += len(d.pending)
                if blocks >= room:
                    break
            assert first is not None
            return first, first.pending.pop()
        for d in self.pool:
            if d.pending and self._holds(session, d.blob.blob_id, d.piece):
                return d, d.pending.pop()
        return self._endgame_block(session, now)

    def _candidates(self, session: Session) -> Iterable[tuple[Blob, bytearray]]:
        their, handles = session.their, session.their_handle
        if len(self.active) <= len(their):
            for blob_id, blob in self.active.items():
                handle = handles.get(blob_id)
                if handle is not None and their[handle].known:
                    yield blob, their[handle].bits
            return
        for rb in their.values():
            if rb.known and rb.blob_id in self.active:
                yield self.active[rb.blob_id], rb.bits

    def _endgame_block(self, session: Session, now: float) -> tuple[Download, int] | None:
        # The scan below visits every block in flight, so each session runs it at most once per
        # endgame_min_wait: ages only grow with time, and the ticker brings idle sessions back.
        if now - session.stats.endgame_checked < self.options.endgame_min_wait:
            return None
        session.stats.endgame_checked = now
        if self.pool.has_pending():
            return None
        best: tuple[float, Download, int] | None = None
        for d in self.pool:
            if not self._holds(session, d.blob.blob_id, d.piece):
                continue
            for offset, holders in d.active.items():
                if session in holders or len(holders) >= MAX_REQUESTS_PER_BLOCK:
                    continue
                first = holders[0]
                sent = first.inflight.get(d.block_key(offset))
                if sent is None:
                    continue
                wait = max(self.options.endgame_min_wait, 4 * first.stats.latency)
                if now - sent >= wait and (best is None or sent < best[0]):
                    best = (sent, d, offset)
        if best is None:
            return None
        # Checked last because it scans every wanted piece: endgame only once nothing that a
        # neighbour holds is left unstarted.
        wanted = list(self.active.values())
        if self.picker.available_unstarted(wanted, self.pool.busy, subsets=self.subset):
            return None
        _, d, offset = best
        self.counters.duplicate_requests += 1
        # The block is active elsewhere; RequestPool.assign adds this session as a second holder.
        return d, offset
