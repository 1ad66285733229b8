"""One protocol session with one neighbour: drives a sans-IO wire connection over a transport.

A session owns the bytes: it reads from the connection, feeds the wire state machine, hands
each event to its :class:`SessionHandler` (the swarm, which owns all policy), and writes what
the handler queued. It also keeps the per-neighbour bookkeeping the handler needs: the blobs the
remote announced (and which of their pieces it holds), the handles we gave our blobs on this
connection, the block requests we have in flight to it, and the requests it made to us.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, cast

from fltorrent.errors import (
    BrokenResourceError,
    FltorrentError,
    RemoteProtocolError,
    TransportError,
)
from fltorrent.net.base import Connection
from fltorrent.swarm.counters import Counters
from fltorrent.swarm.store import Buffer
from fltorrent.wire import (
    NEED_DATA,
    UPDATE,
    ConnectionClosed,
    Handshake,
    Have,
    Haves,
    KeepAlive,
    Message,
    Piece,
    Reject,
    Request,
    Topic,
    WireConnection,
)

log = logging.getLogger(__name__)

RECEIVE_SIZE = 1 << 20
WRITE_BATCH = 512 * 1024  # bytes of piece data written per send_all, between control flushes

_HAVE_PAIR = 8  # bytes one more (handle, piece) adds to a Haves frame
MAX_HAVES_PER_FRAME = 4096  # 32 KiB frames: far below any sane max_frame_size
BlockKey = tuple[bytes, int, int]  # blob id, piece, block offset


@dataclass
class RemoteBlob:
    """A blob the remote announced to us, under its handle."""

    blob_id: bytes
    round: int
    author: int
    bits: bytearray  # one byte (0 or 1) per piece: compact, and cheap to test and set
    known: bool = False  # whether its pieces are counted in our availability
    topic: Topic = UPDATE


@dataclass
class SessionStats:
    """Per-neighbour measurements used by the request pipeline."""

    rate: float = 0.0  # EWMA of useful bytes/s received
    latency: float = 0.0  # EWMA of block round-trip seconds
    min_rtt: float = math.inf  # smallest block round trip seen
    block_bytes: float = 0.0  # EWMA of the size of useful blocks received
    window_bytes: int = 0
    window_start: float = 0.0
    unsolicited: int = 0
    useful_blocks: int = 0
    endgame_checked: float = float("-inf")  # when the endgame scan last ran for this session


class SessionHandler(Protocol):
    """What a session asks of its owner."""

    def on_open(self, session: Session) -> str | None:
        """Called after the handshake; return a reason to refuse the session."""
        ...

    def on_message(self, session: Session, msg: Message) -> None:
        """Handle one message; raise a :class:`FltorrentError` to drop the session."""
        ...

    def on_batch_end(self, session: Session) -> None:
        """Called after the messages of one received chunk were handled."""
        ...

    def read_block(self, session: Session, req: Request) -> Buffer | None:
        """The bytes to serve for ``req``, or ``None`` to reject it."""
        ...

    def may_upload(self, session: Session) -> int:
        """Bytes of piece data ``session`` may write now (0: wait until woken)."""
        ...

    def uploaded(self, session: Session, nbytes: int) -> None:
        """``session`` wrote ``nbytes`` of piece data."""
        ...

    def on_close(self, session: Session, reason: str) -> None:
        """Called once when the session ends (also when it never opened)."""
        ...


@dataclass
class SessionOptions:
    """Limits and timers of a session."""

    federation: str
    peer_id: int
    listen_port: int
    max_frame_size: int
    max_block_size: int
    max_pieces: int = 1 << 16
    max_handles: int = 1 << 12
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    keepalive_interval: float = 30.0
    write_timeout: float = 120.0
    max_upload_queue: int = 4096
    max_control_bytes: int = 4 << 20
    have_delay: float = 0.0


@dataclass
class _Outbox:
    control: list[bytes] = field(default_factory=list)
    control_bytes: int = 0
    haves: list[tuple[int, int]] = field(default_factory=list)  # (handle, piece) to announce
    # Armed while haves wait; once it has fired (None again), the queued haves are due.
    have_timer: asyncio.Handle | None = None
    # Requests to serve, in arrival order; a dict so that a Cancel removes one in O(1).
    uploads: dict[Request, None] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class Session:
    """A live connection to one neighbour."""

    def __init__(
        self,
        conn: Connection,
        *,
        options: SessionOptions,
        handler: SessionHandler,
        counters: Counters,
        expected_peer: int | None = None,
    ) -> None:
        self.conn = conn
        self.options = options
        self.handler = handler
        self.counters = counters
        self.expected_peer = expected_peer
        self.wire = WireConnection(
            federation=options.federation,
            max_frame_size=options.max_frame_size,
            max_block_size=options.max_block_size,
            max_pieces=options.max_pieces,
            max_handles=options.max_handles,
        )
        self.remote_id: int = -1
        self.open = False
        self.closed = False
        self.handshaken = False
        self.forgotten = False  # taken out of the owner's tables (replaced or closed)
        self.seq = 0  # the owner's count of sessions opened before this one (its order)
        # Remote's blobs by their handle, and the reverse map.
        self.their: dict[int, RemoteBlob] = {}
        self.their_handle: dict[bytes, int] = {}
        # Our blobs' handles on this connection, and the reverse map.
        self.our_handle: dict[bytes, int] = {}
        self.our_blob: dict[int, bytes] = {}
        # Requests we sent and await (active pool for this neighbour): key -> time sent.
        self.inflight: dict[BlockKey, float] = {}
        # Pieces being downloaded with this neighbour's help, for affinity.
        self.downloads: dict[tuple[bytes, int], None] = {}
        self.stats = SessionStats()
        self.wants_fill = False  # set by handlers; the owner tops up the pipeline per batch
        self.overflow: str | None = None  # why the session must close (set by send())
        self.remote_pieces = 0  # pieces announced by the remote, over all its blobs
        self._loop = asyncio.get_running_loop()
        self.last_rx = self.last_tx = self.started = self._loop.time()
        self.handshake_s: float | None = None  # from the connection's start to its handshake
        self.sending = False  # a write batch started at last_tx is not through yet
        self._out = _Outbox()

    def __repr__(self) -> str:
        return f"<Session peer={self.remote_id} inflight={len(self.inflight)}>"

    # ------------------------------------------------------------------ queueing
    def send(self, msg: Message) -> None:
        """Queue a control message (validated by the wire state machine now).

        A neighbour that does not read lets our queue grow; past ``max_control_bytes`` the
        message is dropped and the session is marked to close (the reader raises).
        """
        if self.closed or self.overflow is not None:
            return
        data = self.wire.send(msg)
        if self._queued(len(data)):
            self._out.control.append(data)

    def send_have(self, handle: int, piece: int) -> None:
        """Queue a ``Have``. After ``have_delay`` seconds (0: the next pass of the event loop),
        every Have queued by then leaves in one ``Haves`` frame: one frame to build, send,
        decode and dispatch per neighbour and batch, where each piece used to cost one.
        """
        if self.closed or self.overflow is not None or not self._queued(_HAVE_PAIR, wake=False):
            return
        out = self._out
        out.haves.append((handle, piece))
        if out.have_timer is None:
            delay = self.options.have_delay
            loop = self._loop
            # call_soon, not call_later(0): the same next pass, without a timer in the heap.
            out.have_timer = (
                loop.call_later(delay, self._haves_due)
                if delay
                else loop.call_soon(self._haves_due)
            )

    def _haves_due(self) -> None:
        self._out.have_timer = None
        self._out.wake.set()

    def _queued(self, nbytes: int, *, wake: bool = True) -> bool:
        out = self._out
        out.control_bytes += nbytes
        if out.control_bytes > self.options.max_control_bytes:
            self.overflow = f"{out.control_bytes} bytes queued: the neighbour is not reading"
            return False
        if wake:
            out.wake.set()
        return True

    def queue_upload(self, req: Request) -> None:
        """Queue a request to serve; more outstanding requests than the limit is abuse."""
        if len(self._out.uploads) >= self.options.max_upload_queue:
            raise RemoteProtocolError(
                f"more than {self.options.max_upload_queue} outstanding requests"
            )
        self._out.uploads[req] = None
        self._out.wake.set()

    def cancel_upload(self, handle: int, piece: int, offset: int, length: int) -> None:
        """Drop a queued request that the remote cancelled (no-op if already sent)."""
        self._out.uploads.pop(Request(handle, piece, offset, length), None)
        if not self._out.uploads:
            self.handler.uploaded(self, 0)  # nothing left to send: free our upload turn

    def wake(self) -> None:
        """Let the writer look at its queues again (e.g. its upload turn came)."""
        self._out.wake.set()

    def has_uploads(self) -> bool:
        return bool(self._out.uploads) and not self.closed

    def blobs_with_bits(self) -> Iterator[RemoteBlob]:
        """Remote blobs whose pieces count in our availability."""
        return (rb for rb in self.their.values() if rb.known)

    # ------------------------------------------------------------------ running
    async def run(self) -> str:
        """Handshake, then serve until the connection ends; returns the reason it ended."""
        reason = "closed"
        try:
            await self._handshake()
            self.open = True
            refusal = self.handler.on_open(self)
            if refusal is not None:
                self.open = False
                reason = refusal
                return reason
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write_loop())
                reason = await self._read_loop()
                writer.cancel()
        except* RemoteProtocolError as eg:
            reason = f"protocol error: {eg.exceptions[0]}"
        except* TransportError as eg:
            reason = f"transport: {eg.exceptions[0]}"
        except* TimeoutError:
            reason = "timed out"
        except* FltorrentError as eg:
            reason = f"{type(eg.exceptions[0]).__name__}: {eg.exceptions[0]}"
        finally:
            self.closed = True
            self.wire.close()
            await self.conn.aclose()
            self.handler.on_close(self, reason)
        return reason

    async def _handshake(self) -> None:
        opts = self.options
        hs = Handshake(opts.federation, opts.peer_id, opts.listen_port)
        data = self.wire.send(hs)
        self.counters.bytes_up += len(data)
        self.counters.control_up += len(data)
        await self.conn.send(data)
        async with asyncio.timeout(opts.handshake_timeout):
            while self.wire.their_handshake is None:
                chunk = await self.conn.receive(RECEIVE_SIZE)
                self._count_down(chunk)
                self.wire.receive_data(chunk)
                ev = self.wire.next_event()
                if isinstance(ev, ConnectionClosed):
                    raise RemoteProtocolError("closed before handshake")
        theirs = self.wire.their_handshake
        if self.expected_peer is not None and theirs.peer_id != self.expected_peer:
            raise RemoteProtocolError(
                f"expected peer {self.expected_peer}, handshake says {theirs.peer_id}"
            )
        self.remote_id = theirs.peer_id
        self.handshaken = True
        self.handshake_s = self._loop.time() - self.started

    def _count_down(self, chunk: bytes) -> None:
        self.counters.bytes_down += len(chunk)
        self.counters.control_down += len(chunk)

    async def _read_loop(self) -> str:
        # Events buffered with the handshake frame are handled before reading more. The idle
        # deadline is enforced by the owner's ticker (check_timers), not by a timer per read.
        while True:
            if not self._drain_events():
                return "remote closed the connection"
            chunk = await self.conn.receive(RECEIVE_SIZE)
            self.last_rx = self._loop.time()
            self._count_down(chunk)
            self.wire.receive_data(chunk)

    def check_timers(self, now: float) -> str | None:
        """Send a keepalive when we were quiet too long; returns a reason to close if idle, or
        if a write has been stalled for ``write_timeout`` (a neighbour that stopped reading must
        not hold this session and our memory forever)."""
        if not self.open or self.closed:
            return None
        if self.sending and now - self.last_tx > self.options.write_timeout:
            return f"sending stalled for {self.options.write_timeout:g}s"
        if now - self.last_rx > self.options.idle_timeout:
            return f"nothing received for {self.options.idle_timeout:g}s"
        if now - self.last_tx > self.options.keepalive_interval:
            self.send(KeepAlive())
        return None

    def _drain_events(self) -> bool:
        counters = self.counters
        on_message = self.handler.on_message
        while True:
            for ev in self.wire.next_events():
                if ev is NEED_DATA:
                    self.handler.on_batch_end(self)
                    return True
                kind = type(ev)
                if kind is ConnectionClosed:
                    return False
                msg = cast(Message, ev)
                if kind is Piece:
                    # Block data is payload, not control; the swarm decides useful vs duplicate.
                    counters.control_down -= len(cast(Piece, msg).data)
                on_message(self, msg)
                if self.overflow is not None:
                    raise BrokenResourceError(self.overflow)

    async def _write_loop(self) -> None:
        out = self._out
        counters = self.counters
        while True:
            budget = self.handler.may_upload(self) if out.uploads else 0
            haves_due = bool(out.haves) and out.have_timer is None
            if not out.control and not budget and not haves_due:
                out.wake.clear()
                await out.wake.wait()
                continue
            self.last_tx = self._loop.time()
            # Control frames and piece headers are joined into one buffer per run of them: one
            # write (one segment, one wake-up at the other end) instead of one per frame.
            batch: list[Buffer] = []
            small = bytearray().join(out.control)
            out.control.clear()
            # Haves go after the control frames, which include the blobs' Announce.
            pairs: list[tuple[int, int]] = []
            if haves_due:
                pairs, out.haves = out.haves, []
            for i in range(0, len(pairs), MAX_HAVES_PER_FRAME):
                part = pairs[i : i + MAX_HAVES_PER_FRAME]
                small += self.wire.send(Have(*part[0]) if len(part) == 1 else Haves(tuple(part)))
            out.control_bytes = len(out.haves) * _HAVE_PAIR  # those not due yet stay queued
            payload = 0
            while out.uploads and payload < min(budget, WRITE_BATCH):
                req = next(iter(out.uploads))
                del out.uploads[req]
                data = self.handler.read_block(self, req)
                if data is None:
                    small += self.wire.send(Reject(*_fields(req)))
                    continue
                small += self.wire.send_piece(req.handle, req.piece, req.offset, data)
                batch.append(bytes(small))
                small.clear()
                batch.append(data)
                payload += len(data)
            if small:
                batch.append(bytes(small))
            size = sum(len(b) for b in batch)
            counters.bytes_up += size
            counters.payload_up += payload
            counters.control_up += size - payload
            # The write deadline is enforced by the owner's ticker (check_timers), not by a timer
            # per batch.
            self.sending = True
            await self.conn.send_all(batch)
            self.sending = False
            if budget:
                self.handler.uploaded(self, payload)


def _fields(req: Request) -> tuple[int, int, int, int]:
    return req.handle, req.piece, req.offset, req.length
