"""The swarm: one peer's exchange of many blobs with its neighbours.

The swarm moves bytes and knows nothing of tensors. It holds blobs (a manifest and the pieces
held so far), runs one :class:`Session` per neighbour, and decides what to request from whom:

* **manifests**: a neighbour announces each blob it knows; if our ``want(round, author)`` says
  yes and we lack the manifest, we fetch it, check that it hashes to the announced id, and then
  announce the blob ourselves to every neighbour, so manifests cross the graph hop by hop;
* **pieces**: per neighbour, keep a pipeline of block requests (depth follows the measured
  rate); blocks come from pieces this neighbour already helps with, else from a new piece
  chosen rarest first with importance as tie-break, else from pieces others are downloading;
  in endgame, slow blocks are requested a second time and the loser is cancelled;
* **verification and relay**: a piece is hashed when its last block arrives; a good piece is
  stored and announced with ``Have`` (to neighbours that lack it), a bad one is discarded,
  counted and its senders penalized (dropped after ``max_corrupt``). Only verified pieces are
  served, which is what lets pieces cross several hops safely.

Which blobs are wanted is a parameter (``want``), so the round plan (all authors, neighbours
only, chunk owners) lives with the caller. The swarm is driven by session events plus a ticker
that handles request timeouts and endgame.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fltorrent.errors import (
    ConnectError,
    ManifestError,
    RemoteProtocolError,
    SwarmError,
)
from fltorrent.net.base import Address, Connection, Transport
from fltorrent.swarm.counters import Counters
from fltorrent.swarm.manifest import Manifest, sha256
from fltorrent.swarm.picker import PiecePicker
from fltorrent.swarm.requests import MAX_REQUESTS_PER_BLOCK, Download, RequestPool
from fltorrent.swarm.session import RemoteBlob, Session, SessionOptions
from fltorrent.swarm.store import Blob, BlockResult, Buffer
from fltorrent.wire import (
    Announce,
    Bitfield,
    Cancel,
    Choke,
    Have,
    Interested,
    ManifestData,
    ManifestRequest,
    Message,
    NotInterested,
    Piece,
    Reject,
    Request,
    Unchoke,
    pack_bits,
    unpack_bits,
)

log = logging.getLogger(__name__)

WantFn = Callable[[int, int], bool]
ManifestCheck = Callable[[Manifest], str | None]


@dataclass(frozen=True)
class SwarmOptions:
    """Protocol limits, pipeline and timer settings of one swarm."""

    federation: str
    peer_id: int
    listen_port: int = 0
    block_size: int = 16 * 1024
    max_frame_size: int = 2 * 1024 * 1024
    max_block_size: int = 1024 * 1024
    min_pipeline: int = 4
    max_inflight_bytes: int = 4 * 1024 * 1024
    pipeline_seconds: float = 0.5
    request_timeout: float = 30.0
    endgame_min_wait: float = 0.05
    max_corrupt: int = 3
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    keepalive_interval: float = 30.0
    connect_timeout: float = 5.0
    tick_interval: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= self.max_block_size:
            raise SwarmError("block_size must be positive and at most max_block_size")


@dataclass
class _ManifestWait:
    session: Session
    since: float
    tried: set[int] = field(default_factory=set)


class Swarm:
    """Exchange of blobs with neighbours. Use as ``async with Swarm(...) as swarm``."""

    def __init__(
        self,
        options: SwarmOptions,
        *,
        transport: Transport,
        want: WantFn,
        check_manifest: ManifestCheck | None = None,
        allow_peer: Callable[[int], bool] | None = None,
    ) -> None:
        self.options = options
        self.transport = transport
        self.counters = Counters()
        self.blobs: dict[bytes, Blob] = {}
        self.sessions: dict[int, Session] = {}
        self._want = want
        self.check_manifest = check_manifest  # may be set later (the peer is built after us)
        self._allow_peer = allow_peer
        self._picker = PiecePicker(seed=options.seed)
        self._pool = RequestPool()
        self._manifest_waits: dict[bytes, _ManifestWait] = {}
        self._session_options = SessionOptions(
            federation=options.federation,
            peer_id=options.peer_id,
            listen_port=options.listen_port,
            max_frame_size=options.max_frame_size,
            max_block_size=options.max_block_size,
            handshake_timeout=options.handshake_timeout,
            idle_timeout=options.idle_timeout,
            keepalive_interval=options.keepalive_interval,
        )
        self._changed = asyncio.Event()
        self._waiters = 0
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dialers: dict[int, asyncio.Task[None]] = {}
        self._session_ended: dict[int, asyncio.Event] = {}
        self._closing = False
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Swarm:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._spawn(self._ticker())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every session and stop every task of the swarm."""
        if self._tg is None:
            return
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        tg, self._tg = self._tg, None
        await tg.__aexit__(None, None, None)

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        if self._tg is None:
            raise SwarmError("swarm is not running (use 'async with')")
        task: asyncio.Task[None] = self._tg.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ connections
    async def accept(self, conn: Connection) -> None:
        """Listener handler: run a session for an incoming connection until it ends."""
        if self._closing or self._tg is None:
            await conn.aclose()
            return
        task = self._spawn(self._run_session(conn, expected_peer=None))
        await asyncio.wait({task})

    def connect(self, peer_id: int, address: Address) -> None:
        """Keep a connection to ``peer_id`` open: dial, and redial when it breaks."""
        if peer_id not in self._dialers:
            self._dialers[peer_id] = self._spawn(self._dial_loop(peer_id, address))

    def disconnect(self, peer_id: int) -> None:
        """Stop dialing ``peer_id`` and close any session with it."""
        task = self._dialers.pop(peer_id, None)
        if task is not None:
            task.cancel()
        session = self.sessions.get(peer_id)
        if session is not None:
            self._spawn(session.conn.aclose())

    async def _dial_loop(self, peer_id: int, address: Address) -> None:
        backoff = 0.05
        while True:
            if peer_id in self.sessions:
                await self._session_ended.setdefault(peer_id, asyncio.Event()).wait()
                continue
            try:
                conn = await self.transport.connect(
                    address[0], address[1], timeout=self.options.connect_timeout
                )
            except ConnectError as exc:
                log.debug("peer %d: dial %s failed: %s", self.options.peer_id, address, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            reason = await self._run_session(conn, expected_peer=peer_id)
            log.debug("peer %d: session to %d ended: %s", self.options.peer_id, peer_id, reason)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _run_session(self, conn: Connection, *, expected_peer: int | None) -> str:
        session = Session(
            conn,
            options=self._session_options,
            handler=self,
            counters=self.counters,
            expected_peer=expected_peer,
        )
        return await session.run()

    # ------------------------------------------------------------------ session callbacks
    def on_open(self, session: Session) -> str | None:
        rid = session.remote_id
        if rid == self.options.peer_id:
            return "connected to ourselves"
        if self._allow_peer is not None and not self._allow_peer(rid):
            return f"peer {rid} is not allowed (not a neighbour)"
        if rid in self.sessions:
            return f"duplicate connection to peer {rid}"
        self.sessions[rid] = session
        self._session_ended[rid] = asyncio.Event()
        self.counters.sessions_opened += 1
        log.info("peer %d: session with %d open", self.options.peer_id, rid)
        session.send(Unchoke())
        for blob in self.blobs.values():
            self._announce(session, blob)
        self._notify()
        return None

    def on_close(self, session: Session, reason: str) -> None:
        rid = session.remote_id
        if self.sessions.get(rid) is not session:
            if not self._closing:
                log.info(
                    "peer %d: connection from %d refused: %s", self.options.peer_id, rid, reason
                )
            return
        del self.sessions[rid]
        ended = self._session_ended.pop(rid, None)
        if ended is not None:
            ended.set()
        if not self._closing:
            log.info("peer %d: session with %d closed: %s", self.options.peer_id, rid, reason)
        if reason.startswith(("protocol error", "SwarmError", "ManifestError")):
            self.counters.sessions_failed += 1
        for key in list(session.inflight):
            self._pool.release(session, key)
        for rb in session.blobs_with_bits():
            self._picker.add(rb.blob_id, rb.bits, -1)
        for blob_id, wait in list(self._manifest_waits.items()):
            if wait.session is session:
                del self._manifest_waits[blob_id]
                self._fetch_manifest(blob_id, exclude=wait.tried)
        self._notify()
        if not self._closing:
            self._fill_all()

    def read_block(self, session: Session, req: Request) -> Buffer | None:
        if session.wire.am_choking:
            return None
        blob_id = session.our_blob.get(req.handle)
        blob = self.blobs.get(blob_id) if blob_id is not None else None
        if blob is None:
            return None
        return blob.read(req.piece, req.offset, req.length)

    def on_message(self, session: Session, msg: Message) -> None:
        match msg:
            case Piece():
                self._on_piece(session, msg)
            case Request():
                self._on_request(session, msg)
            case Have():
                self._on_have(session, msg)
            case Cancel():
                session.cancel_upload(msg.handle, msg.piece, msg.offset, msg.length)
            case Announce():
                self._on_announce(session, msg)
            case Bitfield():
                self._on_bitfield(session, msg)
            case ManifestRequest():
                self._on_manifest_request(session, msg)
            case ManifestData():
                self._on_manifest(session, msg)
            case Reject():
                self.counters.rejects_received += 1
                rb = session.their[msg.handle]
                self._pool.release(session, (rb.blob_id, msg.piece, msg.offset))
                self._fill_all()
            case Choke():
                for key in list(session.inflight):
                    self._pool.release(session, key)
                self._fill_all()
            case Unchoke():
                self._fill(session)
            case _:
                pass  # KeepAlive, Interested, NotInterested: flags kept by the wire layer

    # ------------------------------------------------------------------ blobs
    def publish(self, manifest: Manifest, pieces: list[bytes]) -> Blob:
        """Add one of our own complete blobs and announce it to every neighbour."""
        blob = self.blobs.get(manifest.blob_id)
        if blob is None:
            blob = Blob(manifest, self.options.block_size)
        for i, data in enumerate(pieces):
            if not blob.set_piece(i, data):
                raise SwarmError(f"piece {i} does not match its manifest")
        self._add_blob(blob)
        return blob

    def _add_blob(self, blob: Blob) -> None:
        if blob.blob_id in self.blobs:
            return
        self.blobs[blob.blob_id] = blob
        self._picker.track(blob.blob_id, blob.manifest.num_pieces)
        for session in self.sessions.values():
            handle = session.their_handle.get(blob.blob_id)
            if handle is not None:
                rb = session.their[handle]
                rb.known = True
                self._picker.add(blob.blob_id, rb.bits)
            self._announce(session, blob)
        self._notify()
        self._fill_all()

    def drop_blobs(self, predicate: Callable[[Manifest], bool]) -> int:
        """Forget blobs whose manifest matches (e.g. rounds past their grace); returns how many."""
        doomed = [b for b in self.blobs.values() if predicate(b.manifest)]
        for blob in doomed:
            del self.blobs[blob.blob_id]
            self._picker.forget(blob.blob_id)
            for piece in range(blob.manifest.num_pieces):
                d = self._pool.finish((blob.blob_id, piece))
                if d is not None:
                    self._cancel_all(d)
            for session in self.sessions.values():
                handle = session.their_handle.get(blob.blob_id)
                if handle is not None:
                    session.their[handle].known = False
        if doomed:
            self._notify()
        return len(doomed)

    def set_want(self, want: WantFn) -> None:
        """Change which blobs are wanted and fetch manifests that became wanted."""
        self._want = want
        self.refresh()

    def refresh(self) -> None:
        """Re-evaluate wants (e.g. after the round changed) and refill pipelines."""
        for session in self.sessions.values():
            for rb in session.their.values():
                if rb.blob_id not in self.blobs and self._want(rb.round, rb.author):
                    self._fetch_manifest(rb.blob_id)
        self._fill_all()
        self._notify()

    def obtainable(self, blob: Blob) -> bool:
        """Whether some missing piece of ``blob`` is held by a neighbour or being fetched."""
        avail = self._picker.availability.get(blob.blob_id)
        if avail is None:
            return False
        return any(
            data is None and (avail[i] > 0 or (blob.blob_id, i) in self._pool)
            for i, data in enumerate(blob.pieces)
        )

    def wanted(self, blob: Blob) -> bool:
        """Whether we still want pieces of ``blob``."""
        m = blob.manifest
        return not blob.complete and self._want(m.round, m.author)

    # ------------------------------------------------------------------ waiting
    def _notify(self) -> None:
        if self._waiters:  # cheap when nobody waits (it runs once per verified piece)
            self._changed.set()
            self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake :meth:`wait_for` callers (e.g. after an outside event such as a peer leaving)."""
        self._notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds; ``False`` if ``timeout`` seconds pass first."""
        self._waiters += 1
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        finally:
            self._waiters -= 1
        return True

    # ------------------------------------------------------------------ manifests
    def _announce(self, session: Session, blob: Blob) -> None:
        if blob.blob_id in session.our_handle:
            return
        handle = len(session.our_handle)
        session.our_handle[blob.blob_id] = handle
        session.our_blob[handle] = blob.blob_id
        m = blob.manifest
        session.send(Announce(handle, blob.blob_id, m.round, m.author, m.num_pieces))
        if blob.num_have:
            session.send(Bitfield(handle, pack_bits(blob.held())))

    def _on_announce(self, session: Session, msg: Announce) -> None:
        rb = RemoteBlob(msg.blob_id, msg.round, msg.author, [False] * msg.num_pieces)
        session.their[msg.handle] = rb
        if msg.blob_id in session.their_handle:
            raise RemoteProtocolError("blob announced twice under different handles")
        session.their_handle[msg.blob_id] = msg.handle
        blob = self.blobs.get(msg.blob_id)
        if blob is not None:
            m = blob.manifest
            if (m.round, m.author, m.num_pieces) != (msg.round, msg.author, msg.num_pieces):
                raise RemoteProtocolError("announce contradicts the blob's manifest")
            rb.known = True
        elif self._want(msg.round, msg.author):
            self._fetch_manifest(msg.blob_id)

    def _fetch_manifest(self, blob_id: bytes, exclude: Iterable[int] = ()) -> None:
        if blob_id in self._manifest_waits or blob_id in self.blobs:
            return
        tried = set(exclude)
        for session in self.sessions.values():
            handle = session.their_handle.get(blob_id)
            if handle is not None and session.remote_id not in tried:
                tried.add(session.remote_id)
                self._manifest_waits[blob_id] = _ManifestWait(session, self._now(), tried)
                session.send(ManifestRequest(handle))
                return

    def _on_manifest_request(self, session: Session, msg: ManifestRequest) -> None:
        blob_id = session.our_blob[msg.handle]
        blob = self.blobs.get(blob_id)
        if blob is not None:
            session.send(ManifestData(msg.handle, blob.manifest.encoded))

    def _on_manifest(self, session: Session, msg: ManifestData) -> None:
        rb = session.their[msg.handle]
        if sha256(msg.body) != rb.blob_id:
            raise RemoteProtocolError("manifest does not hash to its announced blob id")
        wait = self._manifest_waits.pop(rb.blob_id, None)
        if rb.blob_id in self.blobs or not self._want(rb.round, rb.author):
            return
        try:
            manifest = Manifest.decode(msg.body)
        except ManifestError as exc:
            raise RemoteProtocolError(f"bad manifest: {exc}") from exc
        if (manifest.round, manifest.author, manifest.num_pieces) != (
            rb.round,
            rb.author,
            len(rb.bits),
        ):
            raise RemoteProtocolError("manifest contradicts its announce")
        if self.check_manifest is not None:
            refusal = self.check_manifest(manifest)
            if refusal is not None:
                log.warning(
                    "peer %d: manifest of author %d round %d refused: %s",
                    self.options.peer_id,
                    manifest.author,
                    manifest.round,
                    refusal,
                )
                if wait is not None:  # keep the wait so that we do not fetch it again
                    self._manifest_waits[rb.blob_id] = wait
                return
        self._add_blob(Blob(manifest, self.options.block_size))

    # ------------------------------------------------------------------ availability
    def _on_bitfield(self, session: Session, msg: Bitfield) -> None:
        rb = session.their[msg.handle]
        if rb.known:
            self._picker.add(rb.blob_id, rb.bits, -1)
        rb.bits = unpack_bits(msg.bits, len(rb.bits))
        if rb.known:
            self._picker.add(rb.blob_id, rb.bits)
            self._interest(session, rb)

    def _on_have(self, session: Session, msg: Have) -> None:
        rb = session.their[msg.handle]
        if rb.bits[msg.piece]:
            return
        rb.bits[msg.piece] = True
        if rb.known:
            self._picker.add_piece(rb.blob_id, msg.piece)
            blob = self.blobs[rb.blob_id]
            if not blob.has(msg.piece) and self.wanted(blob):
                if not session.wire.am_interested:
                    session.send(Interested())
                self._fill(session)

    def _interest(self, session: Session, rb: RemoteBlob) -> None:
        blob = self.blobs[rb.blob_id]
        if not self.wanted(blob):
            return
        if any(b and not blob.has(i) for i, b in enumerate(rb.bits)):
            if not session.wire.am_interested:
                session.send(Interested())
            self._fill(session)

    # ------------------------------------------------------------------ serving
    def _on_request(self, session: Session, msg: Request) -> None:
        blob_id = session.our_blob[msg.handle]
        blob = self.blobs.get(blob_id)
        if session.wire.am_choking or blob is None or not blob.has(msg.piece):
            session.send(Reject(msg.handle, msg.piece, msg.offset, msg.length))
            return
        if msg.offset + msg.length > blob.manifest.piece_sizes[msg.piece]:
            raise RemoteProtocolError("request beyond the end of the piece")
        session.queue_upload(msg)

    # ------------------------------------------------------------------ downloading
    def _on_piece(self, session: Session, msg: Piece) -> None:
        rb = session.their[msg.handle]
        key = (rb.blob_id, msg.piece, msg.offset)
        sent_at = session.inflight.get(key)
        n = len(msg.data)
        blob = self.blobs.get(rb.blob_id)
        d = self._pool.get((rb.blob_id, msg.piece))
        if blob is None or d is None or not self.wanted(blob):
            session.inflight.pop(key, None)
            self.counters.duplicate_bytes += n
            if sent_at is None:
                session.stats.unsolicited += 1
            self._fill(session)
            return
        holders = self._pool.arrived(key)
        for other in holders:
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
            self._measure(session, n, sent_at)
        if result is BlockResult.COMPLETED:
            self._piece_done(blob, msg.piece)
        elif result is BlockResult.CORRUPT:
            self._piece_corrupt(blob, msg.piece, sources)
        self._fill(session)

    def _measure(self, session: Session, n: int, sent_at: float | None) -> None:
        st = session.stats
        now = self._now()
        if sent_at is not None:
            rtt = now - sent_at
            st.latency = rtt if st.latency == 0 else 0.8 * st.latency + 0.2 * rtt
        if st.window_start == 0:
            st.window_start = sent_at if sent_at is not None else now
        st.window_bytes += n
        elapsed = now - st.window_start
        if elapsed >= 0.05:
            sample = st.window_bytes / elapsed
            st.rate = sample if st.rate == 0 else 0.7 * st.rate + 0.3 * sample
            st.window_bytes = 0
            st.window_start = now

    def _piece_done(self, blob: Blob, piece: int) -> None:
        d = self._pool.finish((blob.blob_id, piece))
        if d is not None:
            self._cancel_all(d)
        self.counters.pieces_verified += 1
        for session in self.sessions.values():
            handle = session.our_handle.get(blob.blob_id)
            if handle is None:
                continue
            theirs = session.their_handle.get(blob.blob_id)
            if theirs is not None and session.their[theirs].bits[piece]:
                continue  # they hold it already: a Have would tell them nothing
            session.send(Have(handle, piece))
        self._notify()

    def _piece_corrupt(self, blob: Blob, piece: int, sources: frozenset[int]) -> None:
        self.counters.corrupt_pieces += 1
        d = self._pool.finish((blob.blob_id, piece))
        if d is not None:
            self._cancel_all(d)
        log.warning(
            "peer %d: piece %d of author %d round %d failed its hash (from %s)",
            self.options.peer_id,
            piece,
            blob.manifest.author,
            blob.manifest.round,
            sorted(sources),
        )
        for rid in sources:
            session = self.sessions.get(rid)
            if session is None:
                continue
            session.stats.corrupt += 1
            if session.stats.corrupt >= self.options.max_corrupt:
                log.warning(
                    "peer %d: dropping %d after %d corrupt pieces",
                    self.options.peer_id,
                    rid,
                    session.stats.corrupt,
                )
                self._spawn(session.conn.aclose())
        self._fill_all()

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
        for s in self.sessions.values():
            s.downloads.pop(d.key, None)

    def _pipeline_depth(self, session: Session) -> int:
        opts = self.options
        by_rate = math.ceil(session.stats.rate * opts.pipeline_seconds / opts.block_size)
        return max(opts.min_pipeline, min(by_rate, opts.max_inflight_bytes // opts.block_size))

    def _fill_all(self) -> None:
        for session in list(self.sessions.values()):
            self._fill(session)

    def _fill(self, session: Session) -> None:
        """Top up ``session``'s request pipeline."""
        if not session.open or session.closed or session.wire.peer_choking:
            return
        depth = self._pipeline_depth(session)
        now = self._now()
        while len(session.inflight) < depth:
            choice = self._next_block(session, now, depth - len(session.inflight))
            if choice is None:
                if not session.inflight and session.wire.am_interested:
                    session.send(NotInterested())
                return
            d, offset = choice
            key = self._pool.assign(d, offset, session, now)
            length = d.blob.block_range(d.piece, offset // d.blob.block_size)[1]
            session.send(Request(session.their_handle[key[0]], d.piece, offset, length))
            self.counters.requests_sent += 1

    def _holds(self, session: Session, blob_id: bytes, piece: int) -> bool:
        handle = session.their_handle.get(blob_id)
        return handle is not None and session.their[handle].bits[piece]

    def _next_block(self, session: Session, now: float, room: int) -> tuple[Download, int] | None:
        # 1. pieces this neighbour already helps with (affinity keeps pieces single-sourced)
        for dkey in list(session.downloads):
            d = self._pool.get(dkey)
            if d is None:
                del session.downloads[dkey]
            elif d.pending:
                return d, d.pending.pop()
        # 2. new pieces, rarest first: one scan starts enough pieces to fill ``room`` blocks
        picked = self._picker.pick(self._candidates(session), self._pool.busy, count=room)
        if picked:
            first: Download | None = None
            blocks = 0
            for blob_id, piece in picked:
                d = self._pool.start(self.blobs[blob_id], piece)
                session.downloads[d.key] = None
                first = first or d
                blocks += len(d.pending)
                if blocks >= room:
                    break
            assert first is not None
            return first, first.pending.pop()
        # 3. pending blocks of pieces others are downloading
        for d in self._pool:
            if d.pending and self._holds(session, d.blob.blob_id, d.piece):
                return d, d.pending.pop()
        # 4. endgame: a second request for a block that is slow to arrive elsewhere
        return self._endgame_block(session, now)

    def _candidates(self, session: Session) -> Iterable[tuple[Blob, list[bool]]]:
        for rb in session.their.values():
            if not rb.known:
                continue
            blob = self.blobs.get(rb.blob_id)
            if blob is not None and self.wanted(blob):
                yield blob, rb.bits

    def _endgame_block(self, session: Session, now: float) -> tuple[Download, int] | None:
        # The scan below visits every block in flight, so each session runs it at most once per
        # endgame_min_wait: ages only grow with time, and the ticker brings idle sessions back.
        if now - session.stats.endgame_checked < self.options.endgame_min_wait:
            return None
        session.stats.endgame_checked = now
        if self._pool.has_pending():
            return None
        best: tuple[float, Download, int] | None = None
        for d in self._pool:
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
        wanted = [b for b in self.blobs.values() if self.wanted(b)]
        if self._picker.available_unstarted(wanted, self._pool.busy):
            return None
        _, d, offset = best
        self.counters.duplicate_requests += 1
        # The block is active elsewhere; assign() adds this session as a second holder.
        return d, offset

    # ------------------------------------------------------------------ ticker
    def _now(self) -> float:
        return self._loop.time()

    async def _ticker(self) -> None:
        interval = self.options.tick_interval
        while True:
            await asyncio.sleep(interval)
            self._tick()

    def _tick(self) -> None:
        now = self._now()
        timeout = self.options.request_timeout
        for session in list(self.sessions.values()):
            stale = [k for k, t in session.inflight.items() if now - t > timeout]
            if stale:
                log.info(
                    "peer %d: %d requests to %d timed out",
                    self.options.peer_id,
                    len(stale),
                    session.remote_id,
                )
                for key in stale:
                    self._pool.release(session, key)
                    handle = session.their_handle[key[0]]
                    blob = self.blobs.get(key[0])
                    if blob is not None:
                        length = blob.block_range(key[1], key[2] // blob.block_size)[1]
                        session.send(Cancel(handle, key[1], key[2], length))
        for blob_id, wait in list(self._manifest_waits.items()):
            if now - wait.since > timeout:
                del self._manifest_waits[blob_id]
                self._fetch_manifest(blob_id, exclude=wait.tried)
        self._fill_all()
