"""The per-connection protocol state machine, sans-IO.

Theory of operation
-------------------
A :class:`WireConnection` never touches a socket. The code that owns the socket (TCP or the
in-memory simulated network) feeds whatever bytes arrive to :meth:`WireConnection.receive_data`
(``b""`` means end of stream), then drains :meth:`WireConnection.next_event` until it returns
:data:`NEED_DATA`; it turns outgoing messages into bytes with :meth:`WireConnection.send` and
writes them itself. This is h11's design: the same code path runs over TCP and over simulated
links, and tests drive two connections against each other with exact bytes.

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
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

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
            return
        if isinstance(msg, Handshake):
            raise RemoteProtocolError("second handshake")
        _validate(
            msg,
            sender=self.their_handles,
            receiver=self.our_handles,
            limits=self,
            err=RemoteProtocolError,
        )
        match msg:
            case Announce():
                self.their_handles[msg.handle] = msg.num_pieces
            case Choke():
                self.peer_choking = True
            case Unchoke():
                self.peer_choking = False
            case Interested():
                self.peer_interested = True
            case NotInterested():
                self.peer_interested = False
            case _:
                pass

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
        if isinstance(msg, Handshake):
            raise LocalProtocolError("handshake already sent")
        _validate(
            msg,
            sender=self.our_handles,
            receiver=self.their_handles,
            limits=self,
            err=LocalProtocolError,
        )
        match msg:
            case Announce():
                self.our_handles[msg.handle] = msg.num_pieces
            case Choke():
                self.am_choking = True
            case Unchoke():
                self.am_choking = False
            case Interested():
                self.am_interested = True
            case NotInterested():
                self.am_interested = False
            case _:
                pass
        return msg.encode()

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


def _validate(
    msg: Message,
    *,
    sender: dict[int, int],
    receiver: dict[int, int],
    limits: WireConnection,
    err: type[RemoteProtocolError] | type[LocalProtocolError],
) -> None:
    """Check handles, indices and sizes; ``sender`` holds the handles the sender announced."""
    name = type(msg).__name__
    max_block = limits.max_block_size
    match msg:
        case Announce():
            if msg.handle in sender:
                raise err(f"handle {msg.handle} announced twice")
            if len(sender) >= limits.max_handles:
                raise err(f"more than {limits.max_handles} blobs announced on one connection")
            if not 1 <= msg.num_pieces <= limits.max_pieces:
                raise err(f"announce with {msg.num_pieces} pieces (limit {limits.max_pieces})")
        case Have() | Piece() | Reject():
            _check_piece(name, msg.handle, msg.piece, sender, err)
            if isinstance(msg, Piece) and not 0 < len(msg.data) <= max_block:
                raise err(f"piece block of {len(msg.data)} bytes (limit {max_block})")
            if isinstance(msg, Reject):
                _check_block_length(name, msg.length, max_block, err)
        case Bitfield():
            n = _check_handle(name, msg.handle, sender, err)
            if len(msg.bits) != (n + 7) // 8:
                raise err(f"bitfield of {len(msg.bits)} bytes for {n} pieces")
            spare = (8 - n % 8) % 8
            if spare and msg.bits[-1] & ((1 << spare) - 1):
                raise err("bitfield spare bits are set")
        case ManifestData():
            _check_handle(name, msg.handle, sender, err)
        case Request() | Cancel():
            _check_piece(name, msg.handle, msg.piece, receiver, err)
            _check_block_length(name, msg.length, max_block, err)
        case ManifestRequest():
            _check_handle(name, msg.handle, receiver, err)
        case _:
            pass


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
    n = _check_handle(name, handle, handles, err)
    if piece >= n:
        raise err(f"{name} for piece {piece} of a blob with {n} pieces")


def _check_block_length(
    name: str,
    length: int,
    max_block: int,
    err: type[RemoteProtocolError] | type[LocalProtocolError],
) -> None:
    if not 0 < length <= max_block:
        raise err(f"{name} of {length} bytes (limit {max_block})")
