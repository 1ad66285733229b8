"""The per-connection protocol state machine, sans-IO.

Theory of operation
-------------------
A :class:`WireConnection` never touches a socket. The code that owns the socket (TCP or the
in-memory simulated network) feeds whatever bytes arrive to :meth:`WireConnection.receive_data`
(``b""`` means end of stream), then drains :meth:`WireConnection.next_event` until it returns
:data:`NEED_DATA` (or takes them all at once from :meth:`WireConnection.next_events`); it
turns outgoing messages into bytes with :meth:`WireConnection.send` and writes them itself.
This is h11's design: the same code path runs over TCP and over simulated links, and tests
drive two connections against each other with exact bytes.

The state machine enforces, in each direction:

* the first frame is a ``Handshake`` with our protocol name, a supported version and the
  expected federation id; no second handshake follows;
* frames are at most ``max_frame_size`` bytes (checked from the header, before buffering), and
  at most 1 KiB until the handshake arrived;
* a connection announces at most ``max_handles`` blobs of at most ``max_pieces`` pieces;
* every message is well formed (exact payload sizes, bitfields of the announced length with
  zero spare bits, piece indices below the announced count, block lengths within limits);
* blob handles are used only after they were announced: ``Have``, ``Bitfield``, ``Piece``,
  ``Reject`` and ``ManifestData`` name a handle *the sender* announced, while ``Request``,
  ``Cancel`` and ``ManifestRequest`` name a handle *the receiver* announced; a handle is
  announced once.

Violations by the remote side raise :class:`RemoteProtocolError`; the connection is then dead
and the owner closes it and logs the reason. Violations by our own side raise
:class:`LocalProtocolError`. Choke and interest flags are tracked for the owner's convenience;
a request that arrives while we choke is not an error (it may have crossed our ``Choke``), so
the owner decides whether to reject it.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any, Final

from fltorrent.errors import LocalProtocolError, RemoteProtocolError
from fltorrent.wire.messages import (
    HEADER_SIZE,
    PROTOCOL_NAME,
    PROTOCOL_VERSION,
    Announce,
    Bitfield,
    Cancel,
    Choke,
    Handshake,
    Have,
    Haves,
    Interested,
    ManifestData,
    ManifestRequest,
    Message,
    NotInterested,
    Piece,
    Reject,
    Request,
    Unchoke,
    decode_message,
    piece_head,
)

DEFAULT_MAX_FRAME_SIZE: Final = 2 * 1024 * 1024
DEFAULT_MAX_BLOCK_SIZE: Final = 1024 * 1024
DEFAULT_MAX_PIECES: Final = 1 << 16  # pieces per blob
DEFAULT_MAX_HANDLES: Final = 1 << 12  # blobs announced per direction of one connection
HANDSHAKE_MAX_FRAME: Final = 1024  # before the handshake nobody may make us buffer more
_LENGTH = struct.Struct(">I")


class _ReceiveBuffer:
    """Unread received bytes as a queue of immutable chunks.

    A frame that lies inside one chunk is returned as a view of it (no copy); only a frame
    that straddles chunks is joined into new bytes.
    """

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._pos = 0  # read offset into the first chunk
        self._size = 0  # unread bytes in all chunks

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        self._chunks.append(data if type(data) is bytes else bytes(data))
        self._size += len(data)

    def peek_length(self) -> int:
        head = self._chunks[0]
        if len(head) - self._pos >= 4:
            return int(_LENGTH.unpack_from(head, self._pos)[0])
        return int(_LENGTH.unpack(bytes(self._peek(4)))[0])

    def _peek(self, n: int) -> bytearray:
        out = bytearray()
        pos = self._pos
        for chunk in self._chunks:
            out += chunk[pos : pos + n - len(out)]
            pos = 0
            if len(out) == n:
                break
        return out

    def take(self, n: int) -> memoryview:
        """Consume ``n`` bytes (the caller checked that they are there)."""
        head = self._chunks[0]
        pos = self._pos
        self._size -= n
        if len(head) - pos >= n:
            view = memoryview(head)[pos : pos + n]
            if len(head) - pos == n:
                self._chunks.popleft()
                self._pos = 0
            else:
                self._pos = pos + n
            return view
        parts = []
        need = n
        while need:
            chunk = self._chunks[0]
            piece = memoryview(chunk)[self._pos : self._pos + need]  # a view: join copies once
            parts.append(piece)
            need -= len(piece)
            if self._pos + len(piece) == len(chunk):
                self._chunks.popleft()
                self._pos = 0
            else:
                self._pos += len(piece)
        return memoryview(b"".join(parts))


class _NeedData:
    """Sentinel type: no complete event is buffered."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The remote side closed its end cleanly (at a frame boundary)."""


class State(Enum):
    """Where one direction of the connection is."""

    HANDSHAKE = auto()
    OPEN = auto()
    CLOSED = auto()
    ERROR = auto()


Event = Message | ConnectionClosed | _NeedData


class WireConnection:
    """One side of one protocol connection."""

    def __init__(
        self,
        *,
        federation: str,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
        max_pieces: int = DEFAULT_MAX_PIECES,
        max_handles: int = DEFAULT_MAX_HANDLES,
    ) -> None:
        if max_block_size + 13 > max_frame_size:
            raise ValueError("max_block_size must fit in a frame")
        self.federation = federation
        self.max_frame_size = max_frame_size
        self.max_pieces = max_pieces
        self.max_handles = max_handles
        self.max_block_size = max_block_size
        self.our_state = State.HANDSHAKE
        self.their_state = State.HANDSHAKE
        self.their_handshake: Handshake | None = None
        # handle -> number of pieces, per direction of announcement
        self.our_handles: dict[int, int] = {}
        self.their_handles: dict[int, int] = {}
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self._rx = _ReceiveBuffer()
        self._eof = False
        self._error: RemoteProtocolError | None = None  # raised by the next next_events()

    # ------------------------------------------------------------------ receiving
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the network; ``b""`` signals end of stream.

        The connection keeps a reference to ``data`` (bytes are immutable, so this is safe):
        frames that lie inside one received chunk are decoded from a view, without copying.
        """
        if self.their_state is State.ERROR:
            raise RemoteProtocolError("connection already failed")
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after end of stream")
        self._rx.append(data)

    def next_event(self) -> Event:
        """The next complete event, :data:`NEED_DATA`, or :class:`ConnectionClosed`.

        A ``Piece`` event's ``data`` may be a read-only view of received bytes.
        """
        if self.their_state is State.ERROR:
            raise RemoteProtocolError("connection already failed")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self.their_state = State.ERROR
            raise

    def next_events(self) -> list[Event]:
        """Every complete event buffered, in order, ending with :data:`NEED_DATA` or
        :class:`ConnectionClosed`: what calling :meth:`next_event` until then returns.

        One call per read instead of one per frame (a read often carries dozens). When a frame
        is bad, the good events before it are returned first (without the end marker) and the
        error is raised by the next call, as :meth:`next_event` would do.
        """
        if self._error is not None:
            raise self._error
        if self.their_state is State.ERROR:
            raise RemoteProtocolError("connection already failed")
        events: list[Event] = []
        append = events.append
        step = self._next_event
        try:
            while True:
                ev = step()
                append(ev)
                if ev is NEED_DATA or type(ev) is ConnectionClosed:
                    return events
        except RemoteProtocolError as exc:
            self.their_state = State.ERROR
            if not events:
                raise
            self._error = exc
            return events

    def _next_event(self) -> Event:
        rx = self._rx
        avail = len(rx)
        if avail < 4:
            return self._need_data(avail)
        length = rx.peek_length()
        if length == 0:
            raise RemoteProtocolError("frame length 0 (a frame carries at least its id)")
        limit = self.max_frame_size if self.their_handshake else HANDSHAKE_MAX_FRAME
        if length + 4 > limit:
            raise RemoteProtocolError(f"frame of {length + 4} bytes exceeds the maximum of {limit}")
        if avail < length + 4:
            return self._need_data(avail)
        frame = rx.take(length + 4)
        msg = decode_message(frame[4], frame[HEADER_SIZE:])
        self._check_incoming(msg)
        return msg

    def _need_data(self, avail: int) -> Event:
        if self._eof:
            if avail:
                raise RemoteProtocolError(f"connection closed inside a frame ({avail} bytes)")
            self.their_state = State.CLOSED
            return ConnectionClosed()
        return NEED_DATA

    def _check_incoming(self, msg: Message) -> None:
        if self.their_state is State.HANDSHAKE:
            self._check_their_handshake(msg)
            return
        self._apply(msg, incoming=True)

    def _check_their_handshake(self, msg: Message) -> None:
        if not isinstance(msg, Handshake):
            raise RemoteProtocolError(f"expected handshake, got {type(msg).__name__}")
        if msg.protocol != PROTOCOL_NAME:
            raise RemoteProtocolError(f"unknown protocol {msg.protocol!r}")
        if msg.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(f"unsupported protocol version {msg.version}")
        if msg.federation != self.federation:
            raise RemoteProtocolError(
                f"federation {msg.federation!r} is not ours ({self.federation!r})"
            )
        self.their_handshake = msg
        self.their_state = State.OPEN

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message) -> bytes:
        """Check ``msg`` against our side's state and return its bytes."""
        if self.our_state is State.CLOSED:
            raise LocalProtocolError("connection closed")
        if self.our_state is State.HANDSHAKE:
            if not isinstance(msg, Handshake):
                raise LocalProtocolError(f"must send handshake first, not {type(msg).__name__}")
            if msg.federation != self.federation:
                raise LocalProtocolError("handshake federation differs from the connection's")
            self.our_state = State.OPEN
            return msg.encode()
        self._apply(msg, incoming=False)
        return msg.encode()

    def _apply(self, msg: Message, *, incoming: bool) -> None:
        """Check a message of either direction after the handshakes; update the state."""
        kind = type(msg)
        err = RemoteProtocolError if incoming else LocalProtocolError
        if kind is Handshake:
            raise err("second handshake" if incoming else "handshake already sent")
        if incoming:
            sender, receiver = self.their_handles, self.our_handles
        else:
            sender, receiver = self.our_handles, self.their_handles
        rule = _RULES.get(kind)
        if rule is not None:
            rule(msg, sender, receiver, self, err)
        if kind is Announce:
            assert isinstance(msg, Announce)
            sender[msg.handle] = msg.num_pieces
        elif kind in _FLAGS:
            ours, theirs, value = _FLAGS[kind]
            setattr(self, theirs if incoming else ours, value)

    def send_piece(
        self, handle: int, piece: int, offset: int, data: bytes | bytearray | memoryview
    ) -> bytes:
        """The frame head of ``Piece(handle, piece, offset, data)``, checked like :meth:`send`.

        The caller writes the head and then ``data`` itself, so block data is never copied
        into a frame (blocks are nearly all of the bytes a peer sends).
        """
        if self.our_state is not State.OPEN:
            raise LocalProtocolError("connection is not open")
        _check_piece("Piece", handle, piece, self.our_handles, LocalProtocolError)
        if not 0 < len(data) <= self.max_block_size:
            raise LocalProtocolError(f"piece block of {len(data)} bytes")
        return piece_head(handle, piece, offset, len(data))

    def close(self) -> None:
        """Mark our side closed; later sends raise :class:`LocalProtocolError`."""
        self.our_state = State.CLOSED


Err = type[RemoteProtocolError] | type[LocalProtocolError]
Handles = dict[int, int]  # handle -> number of pieces, as announced


# Per message type, the checks of handles, indices and sizes: ``sender`` holds the handles the
# sender of the message announced, ``receiver`` those its receiver announced. Looked up by
# exact type (one dict lookup per message, where a chain of isinstance tests cost several).
def _rule_announce(
    msg: Announce, sender: Handles, _r: Handles, lim: WireConnection, err: Err
) -> None:
    if msg.handle in sender:
        raise err(f"handle {msg.handle} announced twice")
    if len(sender) >= lim.max_handles:
        raise err(f"more than {lim.max_handles} blobs announced on one connection")
    if not 1 <= msg.num_pieces <= lim.max_pieces:
        raise err(f"announce with {msg.num_pieces} pieces (limit {lim.max_pieces})")


def _rule_have(msg: Have, sender: Handles, _r: Handles, _l: WireConnection, err: Err) -> None:
    _check_piece("Have", msg.handle, msg.piece, sender, err)


def _rule_haves(msg: Haves, sender: Handles, _r: Handles, _l: WireConnection, err: Err) -> None:
    for handle, piece in msg.pairs:
        _check_piece("Haves", handle, piece, sender, err)


def _rule_piece(msg: Piece, sender: Handles, _r: Handles, lim: WireConnection, err: Err) -> None:
    _check_piece("Piece", msg.handle, msg.piece, sender, err)
    if not 0 < len(msg.data) <= lim.max_block_size:
        raise err(f"piece block of {len(msg.data)} bytes (limit {lim.max_block_size})")


def _rule_reject(msg: Reject, sender: Handles, _r: Handles, lim: WireConnection, err: Err) -> None:
    _check_piece("Reject", msg.handle, msg.piece, sender, err)
    _check_block_length("Reject", msg.length, lim.max_block_size, err)


def _rule_bitfield(
    msg: Bitfield, sender: Handles, _r: Handles, _l: WireConnection, err: Err
) -> None:
    n = _check_handle("Bitfield", msg.handle, sender, err)
    if len(msg.bits) != (n + 7) // 8:
        raise err(f"bitfield of {len(msg.bits)} bytes for {n} pieces")
    spare = (8 - n % 8) % 8
    if spare and msg.bits[-1] & ((1 << spare) - 1):
        raise err("bitfield spare bits are set")


def _rule_manifest(
    msg: ManifestData, sender: Handles, _r: Handles, _l: WireConnection, err: Err
) -> None:
    _check_handle("ManifestData", msg.handle, sender, err)


def _rule_block_request(
    msg: Request | Cancel, _s: Handles, receiver: Handles, lim: WireConnection, err: Err
) -> None:
    name = type(msg).__name__
    _check_piece(name, msg.handle, msg.piece, receiver, err)
    _check_block_length(name, msg.length, lim.max_block_size, err)


def _rule_manifest_request(
    msg: ManifestRequest, _s: Handles, receiver: Handles, _l: WireConnection, err: Err
) -> None:
    _check_handle("ManifestRequest", msg.handle, receiver, err)


_RULES: dict[type[Message], Callable[[Any, Handles, Handles, WireConnection, Err], None]] = {
    Announce: _rule_announce,
    Have: _rule_have,
    Haves: _rule_haves,
    Piece: _rule_piece,
    Reject: _rule_reject,
    Bitfield: _rule_bitfield,
    ManifestData: _rule_manifest,
    Request: _rule_block_request,
    Cancel: _rule_block_request,
    ManifestRequest: _rule_manifest_request,
}

# Messages that set a flag: the attribute when we send it, when they do, and its new value.
_FLAGS: dict[type[Message], tuple[str, str, bool]] = {
    Choke: ("am_choking", "peer_choking", True),
    Unchoke: ("am_choking", "peer_choking", False),
    Interested: ("am_interested", "peer_interested", True),
    NotInterested: ("am_interested", "peer_interested", False),
}


def _check_handle(
    name: str,
    handle: int,
    handles: dict[int, int],
    err: type[RemoteProtocolError] | type[LocalProtocolError],
) -> int:
    n = handles.get(handle)
    if n is None:
        raise err(f"{name} for unannounced handle {handle}")
    return n


def _check_piece(
    name: str,
    handle: int,
    piece: int,
    handles: dict[int, int],
    err: type[RemoteProtocolError] | type[LocalProtocolError],
) -> None:
    n = handles.get(handle)
    if n is None or piece >= n:  # one lookup: this runs for every Have, Request and Piece
        _check_handle(name, handle, handles, err)
        raise err(f"{name} for piece {piece} of a blob with {n} pieces")


def _check_block_length(
    name: str,
    length: int,
    max_block: int,
    err: type[RemoteProtocolError] | type[LocalProtocolError],
) -> None:
    if not 0 < length <= max_block:
        raise err(f"{name} of {length} bytes (limit {max_block})")
