"""Wire messages: frozen dataclasses that encode to and decode from exact bytes.

Every frame is ``length (u32, big-endian) | id (u8) | payload``, where ``length`` counts the id
byte and the payload. All integers are big-endian and unsigned. ``docs/PROTOCOL.md`` gives the
layout of every message; the tests in ``tests/wire`` pin the exact bytes.

Blobs are named on a connection by a *handle* (u32) that the side holding the blob assigns when
it announces the blob (``Announce``). Messages about pieces that the holder sends (``Have``,
``Bitfield``, ``Piece``, ``Reject``) and messages the other side sends to the holder
(``Request``, ``Cancel``, ``ManifestRequest``) all use the holder's handle. A handle costs 4
bytes per message where the 32-byte blob id would cost 32, which matters at 16 KiB blocks.

Just over 500 lines, knowingly: every message of the protocol in one module, as
``docs/PROTOCOL.md`` has them in one table.

Over 500 lines on purpose: one dataclass per message of the protocol, each with its encoding,
in the order of ``docs/PROTOCOL.md``; the catalogue reads best whole.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self

from fltorrent.errors import LocalProtocolError, RemoteProtocolError

PROTOCOL_NAME = b"fltorrent"
PROTOCOL_VERSION = 4  # 2: Haves; 3: topics (ANNOUNCE_TOPIC, manifest v2); 4: signed MANIFEST
SIGNATURE_SIZE = 64  # Ed25519
BLOB_ID_SIZE = 32
HEADER = struct.Struct(">IB")  # frame length, message id
HEADER_SIZE = HEADER.size

Payload = bytes | memoryview
"""Decoders accept a view into the receive buffer and copy out what they keep."""

_U32 = struct.Struct(">I")
_HAVE = struct.Struct(">II")
_HAVE_FRAME = struct.Struct(">IBII")
_BLOCK = struct.Struct(">IIII")
_BLOCK_FRAME = struct.Struct(">IBIIII")
_PIECE_HEAD = struct.Struct(">III")
_ANNOUNCE = struct.Struct(f">I{BLOB_ID_SIZE}sIII")
_TOPIC = struct.Struct(">BII")  # kind, first, last
_HS_FIXED = struct.Struct(">HQ")  # version, reserved flags
_HS_TAIL = struct.Struct(">IH")  # peer id, listen port


class MessageId(IntEnum):
    """The one-byte message id that follows the frame length."""

    KEEPALIVE = 0
    HANDSHAKE = 1
    CHOKE = 2
    UNCHOKE = 3
    INTERESTED = 4
    NOT_INTERESTED = 5
    HAVE = 6
    BITFIELD = 7
    REQUEST = 8
    PIECE = 9
    CANCEL = 10
    REJECT = 11
    ANNOUNCE = 12
    MANIFEST_REQUEST = 13
    MANIFEST = 14
    HAVES = 15
    ANNOUNCE_TOPIC = 16


class TopicKind(IntEnum):
    """What a blob is, besides whose and of which round (see :class:`Topic`)."""

    UPDATE = 0  # an author's own update for the round (the whole model, chunked)
    AGGREGATE = 1  # chunks [first, last) of the model, aggregated by their owner
    MODEL = 2  # a whole aggregated model (e.g. a cluster head's)


@dataclass(frozen=True, slots=True)
class Topic:
    """What a blob carries: an author's update (the default), an aggregated range of chunks
    ``[first, last)``, or a model. Part of a blob's identity: one author may publish one blob
    per (round, topic); two for the same is equivocation."""

    kind: TopicKind = TopicKind.UPDATE
    first: int = 0
    last: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.first <= self.last < 1 << 32):
            raise ValueError(f"topic range [{self.first}, {self.last}) is not a range")
        if self.kind is TopicKind.UPDATE and (self.first or self.last):
            raise ValueError("an update topic has no chunk range")

    def encode(self) -> bytes:
        """``kind u8 | first u32 | last u32``."""
        return _TOPIC.pack(self.kind, self.first, self.last)

    @classmethod
    def decode(cls, data: Payload) -> Topic:
        """Parse :meth:`encode` bytes; a :class:`RemoteProtocolError` names what is wrong."""
        kind, first, last = _TOPIC.unpack(data)
        try:
            return cls(TopicKind(kind), first, last)
        except ValueError as exc:  # an unknown kind, or a bad range
            raise RemoteProtocolError(f"bad topic: {exc}") from None


UPDATE = Topic()
"""The topic of an author's own update: what every plan exchanges first."""
TOPIC_SIZE = _TOPIC.size


def frame(message_id: int, payload: bytes = b"") -> bytes:
    """Prefix ``payload`` with the frame header for ``message_id``."""
    return HEADER.pack(len(payload) + 1, message_id) + payload


class Message:
    """Base of all wire messages."""

    __slots__ = ()
    ID: ClassVar[MessageId]

    def payload(self) -> bytes:
        """The bytes after the message id."""
        return b""

    def encode(self) -> bytes:
        """The whole frame: length, id and payload."""
        return frame(self.ID, self.payload())

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        """Parse a payload; raises :class:`RemoteProtocolError` when it is malformed."""
        raise NotImplementedError


def _expect_len(name: str, payload: Payload, size: int) -> None:
    if len(payload) != size:
        raise RemoteProtocolError(f"{name} payload must be {size} bytes, got {len(payload)}")


@dataclass(frozen=True, slots=True)
class _Empty(Message):
    @classmethod
    def decode(cls, payload: Payload) -> Self:
        _expect_len(cls.__name__, payload, 0)
        return cls()


@dataclass(frozen=True, slots=True)
class KeepAlive(_Empty):
    """Keeps an idle connection open; carries nothing."""

    ID = MessageId.KEEPALIVE


@dataclass(frozen=True, slots=True)
class Choke(_Empty):
    """The sender will not serve requests until it sends ``Unchoke``."""

    ID = MessageId.CHOKE


@dataclass(frozen=True, slots=True)
class Unchoke(_Empty):
    """The sender will serve requests."""

    ID = MessageId.UNCHOKE


@dataclass(frozen=True, slots=True)
class Interested(_Empty):
    """The sender wants pieces the receiver has."""

    ID = MessageId.INTERESTED


@dataclass(frozen=True, slots=True)
class NotInterested(_Empty):
    """The sender wants nothing the receiver has."""

    ID = MessageId.NOT_INTERESTED


@dataclass(frozen=True, slots=True)
class Handshake(Message):
    """First message in each direction: who we are and what we speak."""

    ID = MessageId.HANDSHAKE
    federation: str
    peer_id: int
    listen_port: int
    protocol: bytes = PROTOCOL_NAME
    version: int = PROTOCOL_VERSION
    reserved: int = 0

    def payload(self) -> bytes:
        fed = self.federation.encode()
        if len(fed) > 255 or len(self.protocol) > 255:
            raise ValueError("protocol name and federation id must fit in 255 bytes")
        return b"".join(
            (
                bytes([len(self.protocol)]),
                self.protocol,
                _HS_FIXED.pack(self.version, self.reserved),
                bytes([len(fed)]),
                fed,
                _HS_TAIL.pack(self.peer_id, self.listen_port),
            )
        )

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        try:
            pos = 0
            name_len = payload[pos]
            pos += 1
            protocol = bytes(payload[pos : pos + name_len])
            pos += name_len
            version, reserved = _HS_FIXED.unpack_from(payload, pos)
            pos += _HS_FIXED.size
            fed_len = payload[pos]
            pos += 1
            fed_raw = bytes(payload[pos : pos + fed_len])
            if len(fed_raw) != fed_len:
                raise IndexError
            pos += fed_len
            peer_id, port = _HS_TAIL.unpack_from(payload, pos)
            pos += _HS_TAIL.size
        except (IndexError, struct.error) as exc:
            raise RemoteProtocolError("truncated handshake") from exc
        if pos != len(payload):
            raise RemoteProtocolError(f"handshake has {len(payload) - pos} trailing bytes")
        try:
            federation = fed_raw.decode()
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("federation id in handshake is not UTF-8") from exc
        return cls(federation, peer_id, port, protocol, version, reserved)


@dataclass(frozen=True, slots=True)
class Have(Message):
    """The sender now holds (verified) ``piece`` of blob ``handle``."""

    ID = MessageId.HAVE
    handle: int
    piece: int

    def payload(self) -> bytes:
        return _HAVE.pack(self.handle, self.piece)

    def encode(self) -> bytes:  # the most frequent control message: one pack, no concatenation
        return _HAVE_FRAME.pack(1 + _HAVE.size, self.ID, self.handle, self.piece)

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        _expect_len("have", payload, _HAVE.size)
        return cls(*_HAVE.unpack(payload))


@dataclass(frozen=True, slots=True)
class Haves(Message):
    """Several ``Have`` in one frame: ``(handle, piece)`` pairs, any blobs, at least two.

    A peer that completes pieces of several blobs at once (one read often completes more than
    one) tells each neighbour in one frame: 5 + 8n bytes where n ``Have`` frames cost 13n, and
    one message to decode and dispatch instead of n.
    """

    ID = MessageId.HAVES
    pairs: tuple[tuple[int, int], ...]

    def payload(self) -> bytes:
        return b"".join(_HAVE.pack(h, p) for h, p in self.pairs)

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        if len(payload) < 2 * _HAVE.size or len(payload) % _HAVE.size:
            raise RemoteProtocolError(
                f"haves payload must be a multiple of {_HAVE.size} bytes, at least "
                f"{2 * _HAVE.size}; got {len(payload)}"
            )
        return cls(tuple(_HAVE.iter_unpack(payload)))


@dataclass(frozen=True, slots=True)
class Bitfield(Message):
    """Which pieces of blob ``handle`` the sender holds; bit i (MSB first) is piece i."""

    ID = MessageId.BITFIELD
    handle: int
    bits: bytes

    def payload(self) -> bytes:
        return _U32.pack(self.handle) + self.bits

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        if len(payload) < _U32.size:
            raise RemoteProtocolError("truncated bitfield")
        return cls(_U32.unpack_from(payload)[0], bytes(payload[_U32.size :]))


def pack_bits(held: list[bool]) -> bytes:
    """Booleans to bytes, most significant bit first, spare bits zero."""
    out = bytearray((len(held) + 7) // 8)
    for i, h in enumerate(held):
        if h:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def unpack_bits(bits: bytes, num_pieces: int) -> list[bool]:
    """Inverse of :func:`pack_bits`."""
    return [bool(bits[i >> 3] & (0x80 >> (i & 7))) for i in range(num_pieces)]


@dataclass(frozen=True, slots=True)
class _Block(Message):
    handle: int
    piece: int
    offset: int
    length: int

    def payload(self) -> bytes:
        return _BLOCK.pack(self.handle, self.piece, self.offset, self.length)

    def encode(self) -> bytes:
        return _BLOCK_FRAME.pack(
            1 + _BLOCK.size, self.ID, self.handle, self.piece, self.offset, self.length
        )

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        _expect_len(cls.__name__.lower(), payload, _BLOCK.size)
        return cls(*_BLOCK.unpack(payload))


@dataclass(frozen=True, slots=True)
class Request(_Block):
    """Ask for ``length`` bytes at ``offset`` of ``piece`` of the receiver's blob ``handle``."""

    ID = MessageId.REQUEST


@dataclass(frozen=True, slots=True)
class Cancel(_Block):
    """Withdraw an earlier ``Request`` with the same fields."""

    ID = MessageId.CANCEL


@dataclass(frozen=True, slots=True)
class Reject(_Block):
    """The sender will not serve this request (choked, unknown or dropped blob)."""

    ID = MessageId.REJECT


@dataclass(frozen=True, slots=True)
class Piece(Message):
    """A block of data: ``len(data)`` bytes at ``offset`` of ``piece`` of blob ``handle``."""

    ID = MessageId.PIECE
    handle: int
    piece: int
    offset: int
    data: bytes | memoryview  # decoded pieces carry a read-only view of the received bytes

    def payload(self) -> bytes:
        return _PIECE_HEAD.pack(self.handle, self.piece, self.offset) + self.data

    def encode(self) -> bytes:
        return piece_head(self.handle, self.piece, self.offset, len(self.data)) + bytes(self.data)

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        if len(payload) < _PIECE_HEAD.size:
            raise RemoteProtocolError("truncated piece")
        handle, piece, offset = _PIECE_HEAD.unpack_from(payload)
        return cls(handle, piece, offset, memoryview(payload)[_PIECE_HEAD.size :])


PIECE_OVERHEAD = HEADER_SIZE + _PIECE_HEAD.size
"""Bytes a ``Piece`` frame adds to its data."""


def piece_head(handle: int, piece: int, offset: int, length: int) -> bytes:
    """The first :data:`PIECE_OVERHEAD` bytes of a ``Piece`` frame carrying ``length`` bytes."""
    return HEADER.pack(1 + _PIECE_HEAD.size + length, MessageId.PIECE) + _PIECE_HEAD.pack(
        handle, piece, offset
    )


@dataclass(frozen=True, slots=True)
class Announce(Message):
    """The sender knows blob ``blob_id`` (round, author, piece count and topic as hints) as
    ``handle``. An update is sent as ``ANNOUNCE`` (id 12), any other topic as
    ``ANNOUNCE_TOPIC`` (id 16), which appends the topic: the common case costs nothing more."""

    ID = MessageId.ANNOUNCE
    handle: int
    blob_id: bytes
    round: int
    author: int
    num_pieces: int
    topic: Topic = UPDATE

    def payload(self) -> bytes:
        if len(self.blob_id) != BLOB_ID_SIZE:
            raise ValueError("blob id must be 32 bytes")
        head = _ANNOUNCE.pack(self.handle, self.blob_id, self.round, self.author, self.num_pieces)
        return head if self.topic == UPDATE else head + self.topic.encode()

    def encode(self) -> bytes:
        kind = MessageId.ANNOUNCE if self.topic == UPDATE else MessageId.ANNOUNCE_TOPIC
        return frame(kind, self.payload())

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        _expect_len("announce", payload, _ANNOUNCE.size)
        return cls(*_ANNOUNCE.unpack(payload))

    @classmethod
    def decode_topic(cls, payload: Payload) -> Announce:
        """Parse an ``ANNOUNCE_TOPIC`` payload (an update topic there is not canonical)."""
        _expect_len("announce topic", payload, _ANNOUNCE.size + _TOPIC.size)
        topic = Topic.decode(payload[_ANNOUNCE.size :])
        if topic == UPDATE:
            raise RemoteProtocolError("an update is announced with ANNOUNCE, not ANNOUNCE_TOPIC")
        handle, blob_id, round_, author, num_pieces = _ANNOUNCE.unpack_from(payload)
        return cls(handle, blob_id, round_, author, num_pieces, topic)


@dataclass(frozen=True, slots=True)
class ManifestRequest(Message):
    """Ask the holder for the manifest of its blob ``handle``."""

    ID = MessageId.MANIFEST_REQUEST
    handle: int

    def payload(self) -> bytes:
        return _U32.pack(self.handle)

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        _expect_len("manifest request", payload, _U32.size)
        return cls(_U32.unpack(payload)[0])


@dataclass(frozen=True, slots=True)
class ManifestData(Message):
    """The encoded manifest of blob ``handle``; its SHA-256 must equal the announced blob id.
    ``signature`` is its author's signature over that id (zeros when the swarm signs nothing)."""

    ID = MessageId.MANIFEST
    handle: int
    body: bytes
    signature: bytes = bytes(SIGNATURE_SIZE)

    def payload(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise LocalProtocolError(f"a manifest signature is {SIGNATURE_SIZE} bytes")
        return _U32.pack(self.handle) + self.signature + self.body

    @classmethod
    def decode(cls, payload: Payload) -> Self:
        head = _U32.size + SIGNATURE_SIZE
        if len(payload) < head:
            raise RemoteProtocolError("truncated manifest")
        handle = _U32.unpack_from(payload)[0]
        return cls(handle, bytes(payload[head:]), bytes(payload[_U32.size : head]))


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.ID: cls
    for cls in (
        KeepAlive,
        Handshake,
        Choke,
        Unchoke,
        Interested,
        NotInterested,
        Have,
        Bitfield,
        Request,
        Piece,
        Cancel,
        Reject,
        Announce,
        ManifestRequest,
        ManifestData,
        Haves,
    )
}


def decode_message(message_id: int, payload: Payload) -> Message:
    """Decode one frame's id and payload; unknown ids are a remote protocol error."""
    if message_id == MessageId.ANNOUNCE_TOPIC:
        return Announce.decode_topic(payload)
    cls = MESSAGE_TYPES.get(message_id)
    if cls is None:
        raise RemoteProtocolError(f"unknown message id {message_id}")
    return cls.decode(payload)
