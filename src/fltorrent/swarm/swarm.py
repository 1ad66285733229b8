"""The swarm: one peer's exchange of many blobs with its neighbours.

The swarm moves bytes and knows nothing of tensors. It holds blobs (a manifest and the pieces
held so far), runs one :class:`Session` per neighbour, and decides what to request from whom:

* **manifests**: a neighbour announces each blob it knows; if our ``want(round, author)`` says
  yes and we lack the manifest, we fetch it, check that it hashes to the announced id, and then
  announce the blob ourselves to every neighbour, so manifests cross the graph hop by hop;
* **pieces**: the :class:`~fltorrent.swarm.download.Downloader` keeps a pipeline of block
  requests per neighbour (rarity and importance, critical mode near a deadline, endgame);
* **verification and relay**: a piece is hashed when its last block arrives; a good piece is
  stored and announced to the neighbours that lack it (``Have``, or several in one ``Haves``
  per event-loop pass), a bad one is discarded, counted and its senders penalized (dropped
  after ``max_corrupt``). Only verified pieces are served, which is what lets pieces cross
  several hops safely.

Which blobs are wanted is a parameter (``want(round, author, topic)``), and so is which of their
pieces (``pieces(manifest)``: a subset, or ``None`` for all), so the round plan (all authors,
neighbours only, chunk owners) lives with the caller. Two more hooks let experiments lie with
the same code: ``serve_hook`` rewrites the blocks we serve, and :meth:`Swarm.publish` takes an
``audience`` that limits which neighbours a blob is announced to. The swarm is driven by
session events plus a ticker that handles request timeouts and endgame.

Over 500 lines, knowingly: session callbacks, announces, wants and serving all read and write the
same blob and session tables; what stands alone is split out already (``download.py``,
``connector.py``, ``manifests.py``, ``seeding.py``, ``slots.py``).

Over 500 lines on purpose: the swarm is the hub its helpers (``download``, ``manifests``,
``connector``, ``seeding``, ``slots``) report to; what is left here is the per-blob and
per-session bookkeeping they share, which splitting would only pass back and forth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any

from fltorrent.errors import RemoteProtocolError, SwarmError
from fltorrent.net.base import Address, Connection, Transport
from fltorrent.swarm.connector import Connector
from fltorrent.swarm.counters import Counters
from fltorrent.swarm.download import Downloader
from fltorrent.swarm.events import ConnectionEvent, ConnectionKind, EventSink, no_events
from fltorrent.swarm.guard import SwarmSecurity
from fltorrent.swarm.manifest import Manifest
from fltorrent.swarm.manifests import ManifestCheck, ManifestFetcher
from fltorrent.swarm.options import SwarmOptions
from fltorrent.swarm.seeding import InitialSeeder
from fltorrent.swarm.session import RemoteBlob, Session
from fltorrent.swarm.slots import UploadSlots
from fltorrent.swarm.store import Blob, Buffer
from fltorrent.wire import (
    Announce,
    Bitfield,
    Cancel,
    Choke,
    Have,
    Haves,
    Interested,
    ManifestData,
    ManifestRequest,
    Message,
    Piece,
    Reject,
    Request,
    Topic,
    Unchoke,
    pack_bits,
    unpack_bits,
)

log = logging.getLogger(__name__)

WantFn = Callable[[int, int, Topic], bool]
"""``want(round, author, topic)``: whether we want a blob (its manifest, then its pieces)."""
PieceFilter = Callable[[Manifest], Collection[int] | None]
"""Which pieces of a wanted blob we want: a subset of indices, or ``None`` for all."""
ServeHook = Callable[[Buffer], Buffer]
"""Rewrites a block before it is served (experiments: chunk poisoning)."""
Audience = Callable[[int], bool]
"""Which neighbours (by peer id) a blob is announced to."""
RelayFilter = Callable[[Manifest], Collection[int] | None]
"""To which neighbours (peer ids) a blob of another author is worth announcing (``None``: all)."""


def _all_pieces(_manifest: Manifest) -> None:
    return None


def _in_order(sessions: Iterable[Session]) -> list[Session]:
    """Sessions in the order they opened (the order of ``Swarm.sessions``): which neighbour
    hears of a piece first is part of what a seeded simulation reproduces."""
    return sorted(sessions, key=_seq)


def _seq(session: Session) -> int:
    return session.seq


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
        serve_hook: ServeHook | None = None,
        security: SwarmSecurity | None = None,
        events: EventSink = no_events,
    ) -> None:
        """``events`` receives every connection and piece event (the exchange logs)."""
        self.options = options
        self.events = events
        self.transport = transport
        self.counters = Counters()
        self.blobs: dict[bytes, Blob] = {}
        self.generation = 0  # counts changes to the set of blobs (a cache key for callers)
        # Blobs added since the last drop, in order, and how many drops there were: callers
        # that index blobs catch up from a mark instead of rescanning (added_since).
        self._added: list[Blob] = []
        self._drops = 0
        self.sessions: dict[int, Session] = {}
        self._want = want
        self._pieces: PieceFilter = _all_pieces
        # Per blob with a piece filter, the wanted pieces (blobs wanted whole are not here).
        self._subsets: dict[bytes, frozenset[int]] = {}
        self._audience: dict[bytes, Audience] = {}
        self._relay: RelayFilter | None = None
        # Blobs neighbours announced that we do not hold (one entry per blob, whoever announced
        # it), so that set_want need not scan every session's announcements of every round.
        self._unresolved: dict[bytes, RemoteBlob] = {}
        self._oldest_round = 0  # announcements of earlier rounds are no longer indexed
        # The blobs we still want pieces of (wanted and not done), so that the request path
        # visits only those; the want function is asked once per blob between set_want calls.
        self._active: dict[bytes, Blob] = {}
        # Per blob, the sessions we announced it to and those that announced it to us (in the
        # order they did): a verified piece, a new or a dropped blob visits only those, where
        # a peer with a thousand sessions used to visit all of them each time.
        self._told: dict[bytes, dict[Session, None]] = {}
        self._heard: dict[bytes, dict[Session, None]] = {}
        self._serve_hook = serve_hook
        self._allow_peer = allow_peer
        self.security = security or SwarmSecurity()
        self._down = Downloader(
            options,
            blobs=self.blobs,
            sessions=self.sessions,
            counters=self.counters,
            active=self._active,
            subset=self._subsets.get,
            on_verified=self._piece_verified,
            on_bad_peer=self._ban,
            clock=self._now,
            events=events,
        )
        self._manifests = ManifestFetcher(
            peer_id=options.peer_id,
            announcers=lambda blob_id: _in_order(self._heard.get(blob_id, ())),
            known=self.blobs.__contains__,
            clock=self._now,
            max_piece_size=options.max_piece_size,
            check=check_manifest,
            verify=self.security.verify,
            counters=self.counters,
            on_security=self.security.audit,
        )
        self._slots = UploadSlots(options.upload_slots, options.upload_quantum)
        self._seeder = InitialSeeder(options, sessions=self.sessions, clock=self._now)
        self._session_options = options.session_options()
        self._changed = asyncio.Event()
        self._waiters = 0
        self._piece_waiters = 0  # waiters that want waking on every piece, not only blobs
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns = Connector(
            transport=transport,
            session_options=self._session_options,
            handler=self,
            counters=self.counters,
            sessions=self.sessions,
            spawn=self._spawn,
            connect_timeout=options.connect_timeout,
            max_handshaking=options.max_handshaking,
            max_attempts=options.max_connection_attempts,
            events=events,
        )
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._handlers = self._message_handlers()

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
        self._closing = self._conns.closing = True
        for task in list(self._tasks):
            task.cancel()
        tg, self._tg = self._tg, None
        await tg.__aexit__(None, None, None)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        if self._tg is None:
            coro.close()
            raise SwarmError("swarm is not running (use 'async with')")
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ connections
    async def accept(self, conn: Connection) -> None:
        """Listener handler: run a session for an incoming connection until it ends."""
        await self._conns.accept(conn)

    def connect(self, peer_id: int, address: Address) -> None:
        """Keep a connection to ``peer_id`` open: dial, and redial when it breaks."""
        self._conns.connect(peer_id, address)

    def disconnect(self, peer_id: int) -> None:
        """Close the session with ``peer_id`` and stop redialing it (it is no longer needed)."""
        self._conns.disconnect(peer_id)
        session = self.sessions.get(peer_id)
        if session is not None:
            self._conns.drop(session)

    def connected(self, peer_id: int) -> bool:
        """Whether a session with ``peer_id`` is open or being kept (dialed)."""
        return peer_id in self.sessions or self._conns.keeps(peer_id)

    def banned(self, peer_id: int) -> bool:
        """Whether ``peer_id`` sent ``max_corrupt`` corrupt pieces (it is refused for good)."""
        return self._down.corrupt.get(peer_id, 0) >= self.options.max_corrupt

    def _ban(self, session: Session) -> None:
        """``session``'s peer sent ``max_corrupt`` corrupt pieces: drop it (for good)."""
        if not session.closed:  # further corrupt pieces may still be in flight: one report
            self.security.report("ban", session.remote_id, "corrupt pieces")
        self._conns.drop(session)

    # ------------------------------------------------------------------ session callbacks
    def on_open(self, session: Session) -> str | None:
        rid = session.remote_id
        if rid == self.options.peer_id:
            return "connected to ourselves"
        if self._allow_peer is not None and not self._allow_peer(rid):
            return f"peer {rid} is not allowed (not a neighbour)"
        if self.banned(rid):
            return f"peer {rid} is banned: it sent corrupt pieces"
        if self.security.authenticate is not None:
            refusal = self.security.authenticate(session.conn.peer_certificate, rid)
            if refusal is not None:
                self.counters.refused_peers += 1
                self.security.report("refused", rid, refusal)
                return refusal
        old = self.sessions.get(rid)
        if old is not None:
            if session.expected_peer is not None:
                return f"duplicate connection to peer {rid}"
            # The peer dialed us again: its old connection is dead on its side (e.g. a
            # half-open TCP connection we have not noticed yet). The new one replaces it.
            log.info("peer %d: peer %d reconnected, old session dropped", self.options.peer_id, rid)
            self._forget_session(old)
            self._conns.drop(old)
        self.sessions[rid] = session
        self._conns.opened(rid)
        session.seq = self.counters.sessions_opened
        self.counters.sessions_opened += 1
        log.info("peer %d: session with %d open", self.options.peer_id, rid)
        self._connection_event(session, "opened")
        session.send(Unchoke())
        for blob in self.blobs.values():
            self._announce(session, blob)
        self.notify()
        return None

    def _connection_event(self, session: Session, kind: ConnectionKind, reason: str = "") -> None:
        host, port = session.conn.remote_address
        self.events(
            ConnectionEvent(
                t=self._now(),
                kind=kind,
                remote=session.remote_id if session.handshaken else None,
                address=f"{host}:{port}",
                outbound=session.expected_peer is not None,
                handshake_s=session.handshake_s,
                reason=reason,
            )
        )

    def on_close(self, session: Session, reason: str) -> None:
        rid = session.remote_id
        registered = self.sessions.get(rid) is session
        self._connection_event(session, "closed" if registered else "refused", reason)
        if reason.startswith(("protocol error", "SwarmError", "ManifestError")):
            self.counters.sessions_failed += 1
        if self.sessions.get(rid) is not session:
            if not self._closing and not session.forgotten:
                log.info(
                    "peer %d: connection from %d refused: %s", self.options.peer_id, rid, reason
                )
            return
        if not self._closing:
            log.info("peer %d: session with %d closed: %s", self.options.peer_id, rid, reason)
        self._forget_session(session)

    def _forget_session(self, session: Session) -> None:
        """Take a session out of every table: its requests, availability and manifest asks."""
        session.forgotten = True
        rid = session.remote_id
        if self.sessions.get(rid) is session:
            del self.sessions[rid]
            self._conns.ended(rid)
        self._down.release_all(session)
        self._slots.forget(session)
        for index, blob_ids in (
            (self._told, session.our_handle),
            (self._heard, session.their_handle),
        ):
            for blob_id in blob_ids:
                holders = index.get(blob_id)
                if holders is not None:
                    holders.pop(session, None)
        for rb in session.blobs_with_bits():
            self._down.picker.add(rb.blob_id, rb.bits, -1)
        self._down.prune()
        self._manifests.session_closed(session)
        self.notify()
        if not self._closing:
            self._down.fill_all()

    def read_block(self, session: Session, req: Request) -> Buffer | None:
        if session.wire.am_choking:
            return None
        blob = self.blobs.get(session.our_blob.get(req.handle, b""))
        if blob is None:
            return None
        self._seeder.on_served(session, blob.blob_id, req.piece, req.length)
        data = blob.read(req.piece, req.offset, req.length)
        if self._serve_hook is not None and data is not None:
            return self._serve_hook(data)
        return data

    def may_upload(self, session: Session) -> int:
        return self._slots.budget(session) if self._slots.may_send(session) else 0

    def uploaded(self, session: Session, nbytes: int) -> None:
        self._slots.sent(session, nbytes)

    def on_batch_end(self, session: Session) -> None:
        # Top the pipeline up once per batch of received messages, not once per message:
        # one read often carries dozens of haves and blocks.
        if session.wants_fill:
            session.wants_fill = False
            self._down.fill(session)

    def on_message(self, session: Session, msg: Message) -> None:
        # By exact type, one dict lookup (a match tests classes one by one). KeepAlive and
        # (Not)Interested have no handler: the wire layer keeps their flags.
        if (handler := self._handlers.get(type(msg))) is not None:
            handler(session, msg)

    def _message_handlers(self) -> dict[type[Message], Callable[[Session, Any], None]]:
        return {
            Piece: self._down.on_piece,
            Request: self._on_request,
            Have: lambda s, m: self._down.on_have(s, m.handle, m.piece),
            Haves: self._down.on_haves,
            Cancel: lambda s, m: s.cancel_upload(m.handle, m.piece, m.offset, m.length),
            Announce: self._on_announce,
            Bitfield: self._on_bitfield,
            ManifestRequest: self._on_manifest_request,
            ManifestData: self._on_manifest_data,
            Reject: self._down.on_reject,
            Choke: self._on_choke,
            Unchoke: self._on_unchoke,
        }

    def _on_manifest_data(self, session: Session, msg: ManifestData) -> None:
        rb = session.their[msg.handle]
        wanted = self._want(rb.round, rb.author, rb.topic)
        manifest = self._manifests.receive(session, msg, wanted=wanted)
        if manifest is not None:
            blob = Blob(manifest, self.options.block_size)
            blob.signature = msg.signature
            self._add_blob(blob)

    def _on_choke(self, session: Session, _msg: Choke) -> None:
        self._down.release_all(session)
        self._down.fill_all()

    def _on_unchoke(self, session: Session, _msg: Unchoke) -> None:
        session.wants_fill = True

    # ------------------------------------------------------------------ blobs
    def publish(
        self,
        manifest: Manifest,
        pieces: list[bytes],
        *,
        verify: bool = True,
        audience: Audience | None = None,
    ) -> Blob:
        """Add one of our own complete blobs and announce it to every neighbour (or only to
        those ``audience`` admits, even when they connect later).

        ``verify=False`` skips re-hashing when the manifest was just built from these very
        pieces (:meth:`Manifest.build`); sizes are still checked.
        """
        if audience is not None:
            self._audience[manifest.blob_id] = audience
        blob = self.blobs.get(manifest.blob_id)
        if blob is None:
            blob = Blob(manifest, self.options.block_size)
        if len(pieces) != manifest.num_pieces:
            raise SwarmError(f"{len(pieces)} pieces for a manifest of {manifest.num_pieces}")
        for i, data in enumerate(pieces):
            if not verify and len(data) == manifest.piece_sizes[i]:
                blob.put_verified(i, data)
            elif not blob.set_piece(i, data):
                raise SwarmError(f"piece {i} does not match its manifest")
        if blob.blob_id not in self.blobs and self.security.sign is not None:
            blob.signature = self.security.sign(blob.blob_id)
        if self.options.super_seeding and blob.blob_id not in self.blobs:
            self._seeder.start(blob)
        self._add_blob(blob)
        return blob

    def _add_blob(self, blob: Blob) -> None:
        if blob.blob_id in self.blobs:
            return
        self.blobs[blob.blob_id] = blob
        self.generation += 1
        self._added.append(blob)
        self._unresolved.pop(blob.blob_id, None)
        self._track_subset(blob)
        self._track_active(blob)
        self._down.picker.track(blob.blob_id, blob.manifest.num_pieces)
        holders = _in_order(self._heard.get(blob.blob_id, ()))
        for session in holders:
            rb = session.their[session.their_handle[blob.blob_id]]
            rb.known = True
            self._down.picker.add(blob.blob_id, rb.bits)
        for session in self._audience_of(blob):
            self._announce(session, blob)
        self.notify()
        if blob.blob_id in self._active:
            # Only neighbours that announced the blob can serve it: the others' pipelines are
            # as they were (with a thousand sessions, refilling them all per blob was most of
            # a large simulation).
            for session in holders:
                self._down.fill(session)

    def drop_blobs(self, predicate: Callable[[Manifest], bool]) -> int:
        """Forget blobs whose manifest matches (e.g. rounds past their grace); returns how many.

        A dropped blob is over for good: neighbours keep its handles, so it is not announced
        again on their sessions (the plans drop only rounds they will never want again)."""
        doomed = [b for b in self.blobs.values() if predicate(b.manifest)]
        for blob in doomed:
            del self.blobs[blob.blob_id]
            self.generation += 1
            self._drops += 1
            self._subsets.pop(blob.blob_id, None)
            self._active.pop(blob.blob_id, None)
            self._audience.pop(blob.blob_id, None)
            self._seeder.forget(blob.blob_id)
            self._down.forget(blob)
            for session in _in_order(self._heard.pop(blob.blob_id, ())):
                session.their[session.their_handle[blob.blob_id]].known = False
            for session in _in_order(self._told.pop(blob.blob_id, ())):
                if blob.num_have:
                    # An empty bitfield replaces what we announced: nobody asks us for it again.
                    ours = session.our_handle[blob.blob_id]
                    session.send(Bitfield(ours, bytes((blob.manifest.num_pieces + 7) // 8)))
        if doomed:
            self._added.clear()
            self.notify()
        return len(doomed)

    def added_since(self, mark: tuple[int, int]) -> tuple[list[Blob] | None, tuple[int, int]]:
        """The blobs added since ``mark`` (returned by an earlier call; ``(-1, 0)`` the first
        time) and the new mark; ``None`` instead of a list when blobs were dropped since (the
        caller rescans :attr:`blobs`)."""
        drops, seen = mark
        now = (self._drops, len(self._added))
        if drops != self._drops:
            return None, now
        return self._added[seen:], now

    def set_manifest_check(self, check: ManifestCheck | None) -> None:
        """Install the hook that may refuse manifests (e.g. of another model)."""
        self._manifests.check = check

    def set_want(self, want: WantFn, pieces: PieceFilter | None = None) -> None:
        """Change which blobs (and which of their pieces) are wanted, e.g. for a new round or
        phase: fetch, stop and refill to match."""
        self._want = want
        self._pieces = pieces or _all_pieces
        for blob_id, rb in list(self._unresolved.items()):
            if blob_id in self.blobs:
                del self._unresolved[blob_id]
            elif rb.round < self._oldest_round:
                del self._unresolved[blob_id]
                self._heard.pop(blob_id, None)
            elif self._want(rb.round, rb.author, rb.topic):
                self._manifests.fetch(blob_id)
        self.refresh_pieces()

    def forget_before(self, round_: int) -> None:
        """Announcements of rounds before ``round_`` will never be wanted: stop indexing them
        (what neighbours hold of them is still known, for their pieces' availability)."""
        self._oldest_round = max(self._oldest_round, round_)
        stale = [b for b, rb in self._unresolved.items() if rb.round < self._oldest_round]
        for blob_id in stale:
            del self._unresolved[blob_id]
            self._heard.pop(blob_id, None)

    def refresh_pieces(self) -> None:
        """Ask the piece filter again for every blob we hold (the blob-level want function is
        unchanged, so no manifest needs fetching): stop and refill to match."""
        self._subsets.clear()
        self._active.clear()
        for blob in self.blobs.values():
            self._track_subset(blob)
            self._track_active(blob)
        for blob in self.blobs.values():
            if not self.wanted(blob):
                self._down.stop(blob)  # e.g. a round that ended at its deadline
            elif blob.blob_id in self._subsets:
                self._down.stop_unwanted(blob)
        self._down.fill_all()
        self.notify()

    def _track_active(self, blob: Blob) -> None:
        if self._wanted_now(blob):
            self._active[blob.blob_id] = blob

    def _track_subset(self, blob: Blob) -> None:
        subset = self._pieces(blob.manifest)
        if subset is not None:
            self._subsets[blob.blob_id] = frozenset(subset)

    def set_relay(self, relay: RelayFilter | None) -> None:
        """Announce other authors' blobs only to the neighbours ``relay`` admits (``None``: to
        every neighbour), and announce now what it newly admits. A plan whose peers want few
        of the blobs their neighbours hold saves most announces this way."""
        self._relay = relay
        for blob in self.blobs.values():
            for session in self._audience_of(blob):
                self._announce(session, blob)

    def set_critical(self, round_: int | None, at: float = 0.0) -> None:
        """Critical mode (picker.py) for rounds <= ``round_`` from loop time ``at`` (None: off)."""
        self._down.set_critical(round_, at)

    def obtainable(self, blob: Blob) -> bool:
        """Whether some missing (wanted) piece of ``blob`` is held by a neighbour."""
        return self._down.obtainable(blob)

    def wanted(self, blob: Blob) -> bool:
        """Whether we still want pieces of ``blob``."""
        return blob.blob_id in self._active

    def _wanted_now(self, blob: Blob) -> bool:
        m = blob.manifest
        if not self._want(m.round, m.author, m.topic):
            return False
        return not self.done(blob)

    def wanted_pieces(self, blob: Blob) -> frozenset[int] | None:
        """The pieces of ``blob`` the piece filter wants (``None``: all of them)."""
        return self._subsets.get(blob.blob_id)

    def done(self, blob: Blob) -> bool:
        """Whether we hold every piece of ``blob`` that we want."""
        subset = self._subsets.get(blob.blob_id)
        if subset is None:
            return blob.complete
        return all(blob.has(i) for i in subset)

    # ------------------------------------------------------------------ waiting
    def notify(self) -> None:
        """Wake :meth:`wait_for` callers (state changed, or e.g. a peer left the federation)."""
        if self._waiters:  # cheap when nobody waits (it runs once per verified piece)
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float, *, every_piece: bool = True
    ) -> bool:
        """Wait until ``predicate()`` holds; ``False`` if ``timeout`` seconds pass first.

        The predicate is asked again whenever the swarm changes: with ``every_piece`` on each
        verified piece, otherwise only when a wanted blob is done, a blob or session comes or
        goes, or :meth:`notify` is called (a predicate about whole blobs need not run once per
        piece, which in a large simulation is most of the work).
        """
        self._waiters += 1
        self._piece_waiters += every_piece
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        finally:
            self._waiters -= 1
            self._piece_waiters -= every_piece
        return True

    # ------------------------------------------------------------------ manifests
    def _relayed_to(self, m: Manifest) -> Collection[int] | None:
        """The peers the relay filter lets us announce a blob to (``None``: all; ours: all)."""
        if self._relay is None or m.author == self.options.peer_id:
            return None
        return self._relay(m)

    def _audience_of(self, blob: Blob) -> Iterable[Session]:
        """The sessions the relay filter lets us announce ``blob`` to."""
        peers = self._relayed_to(blob.manifest)
        if peers is None or len(peers) >= len(self.sessions):
            return list(self.sessions.values())
        return _in_order(s for p in peers if (s := self.sessions.get(p)) is not None)

    def _announce(self, session: Session, blob: Blob) -> None:
        if blob.blob_id in session.our_handle:
            return
        audience = self._audience.get(blob.blob_id)
        if audience is not None and not audience(session.remote_id):
            return
        m = blob.manifest
        peers = self._relayed_to(m)
        if peers is not None and session.remote_id not in peers:
            return
        handle = len(session.our_handle)
        session.our_handle[blob.blob_id] = handle
        session.our_blob[handle] = blob.blob_id
        session.send(Announce(handle, blob.blob_id, m.round, m.author, m.num_pieces, m.topic))
        self._told.setdefault(blob.blob_id, {})[session] = None
        if self._seeder.seeding(blob.blob_id):
            session.send(Bitfield(handle, self._seeder.initial_bits(session, blob)))
        elif blob.num_have:
            session.send(Bitfield(handle, pack_bits(blob.held())))

    def _on_announce(self, session: Session, msg: Announce) -> None:
        session.remote_pieces += msg.num_pieces
        if session.remote_pieces > self.options.max_remote_pieces:
            raise RemoteProtocolError(
                f"more than {self.options.max_remote_pieces} pieces announced in total"
            )
        if msg.blob_id in session.their_handle:
            raise RemoteProtocolError("blob announced twice under different handles")
        rb = RemoteBlob(
            msg.blob_id, msg.round, msg.author, bytearray(msg.num_pieces), topic=msg.topic
        )
        session.their[msg.handle] = rb
        session.their_handle[msg.blob_id] = msg.handle
        blob = self.blobs.get(msg.blob_id)
        wanted = blob is None and self._want(msg.round, msg.author, msg.topic)
        if not session.forgotten and (
            blob is not None or msg.round >= self._oldest_round or wanted
        ):
            # (A session replaced by a newer one may still deliver a batch: not indexed.)
            self._heard.setdefault(msg.blob_id, {})[session] = None
        if blob is not None:
            m = blob.manifest
            hints = (msg.round, msg.author, msg.num_pieces, msg.topic)
            if (m.round, m.author, m.num_pieces, m.topic) != hints:
                raise RemoteProtocolError("announce contradicts the blob's manifest")
            rb.known = True
            return
        if msg.round >= self._oldest_round:
            self._unresolved.setdefault(msg.blob_id, rb)
        if wanted:
            self._manifests.fetch(msg.blob_id)

    def _on_manifest_request(self, session: Session, msg: ManifestRequest) -> None:
        blob_id = session.our_blob[msg.handle]
        blob = self.blobs.get(blob_id)
        if blob is not None:
            session.send(ManifestData(msg.handle, blob.manifest.encoded, blob.signature))

    # ------------------------------------------------------------------ availability
    def _on_bitfield(self, session: Session, msg: Bitfield) -> None:
        rb = session.their[msg.handle]
        if rb.known:
            self._down.picker.add(rb.blob_id, rb.bits, -1)
        rb.bits = bytearray(unpack_bits(msg.bits, len(rb.bits)))
        if rb.known:
            self._down.picker.add(rb.blob_id, rb.bits)
            self._interest(session, rb)

    def _interest(self, session: Session, rb: RemoteBlob) -> None:
        blob = self.blobs[rb.blob_id]
        if not self.wanted(blob):
            return
        subset = self._subsets.get(rb.blob_id)
        if any(
            b and not blob.has(i) and (subset is None or i in subset) for i, b in enumerate(rb.bits)
        ):
            if not session.wire.am_interested:
                session.send(Interested())
            session.wants_fill = True

    def _piece_verified(self, blob: Blob, piece: int) -> None:
        # Relay: tell every neighbour that lacks the piece that we can serve it now.
        for session in _in_order(self._told.get(blob.blob_id, ())):
            handle = session.our_handle[blob.blob_id]
            theirs = session.their_handle.get(blob.blob_id)
            if theirs is not None and session.their[theirs].bits[piece]:
                continue  # they hold it already: a Have would tell them nothing
            session.send_have(handle, piece)
        done = blob.blob_id in self._active and self.done(blob)
        if done:
            del self._active[blob.blob_id]
        if done or self._piece_waiters:
            self.notify()

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
        for session in list(self.sessions.values()):
            idle = session.check_timers(now)
            if idle is not None:
                rid = session.remote_id
                log.info("peer %d: closing session with %d: %s", self.options.peer_id, rid, idle)
                self._conns.drop(session)
        self._down.expire(now)
        self._seeder.tick()
        self._manifests.expire(self.options.request_timeout)
        self._down.fill_all()
