"""Exact bytes of every message, and decoding of malformed payloads."""

from __future__ import annotations

import pytest

from fltorrent.errors import RemoteProtocolError
from fltorrent.wire import (
    Announce,
    Bitfield,
    Cancel,
    Choke,
    Handshake,
    Have,
    Haves,
    Interested,
    KeepAlive,
    ManifestData,
    ManifestRequest,
    Message,
    NotInterested,
    Piece,
    Reject,
    Request,
    Topic,
    TopicKind,
    Unchoke,
    decode_message,
    pack_bits,
    unpack_bits,
)

BLOB = bytes(range(32))

EXACT: list[tuple[Message, bytes]] = [
    (KeepAlive(), b"\x00\x00\x00\x01\x00"),
    (Choke(), b"\x00\x00\x00\x01\x02"),
    (Unchoke(), b"\x00\x00\x00\x01\x03"),
    (Interested(), b"\x00\x00\x00\x01\x04"),
    (NotInterested(), b"\x00\x00\x00\x01\x05"),
    (Have(3, 258), b"\x00\x00\x00\x09\x06" + b"\x00\x00\x00\x03" + b"\x00\x00\x01\x02"),
    (Bitfield(1, b"\xa0"), b"\x00\x00\x00\x06\x07" + b"\x00\x00\x00\x01" + b"\xa0"),
    (
        Request(1, 2, 16384, 16384),
        b"\x00\x00\x00\x11\x08"
        + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x40\x00\x00\x00\x40\x00",
    ),
    (
        Piece(1, 2, 3, b"xyz"),
        b"\x00\x00\x00\x10\x09" + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03" + b"xyz",
    ),
    (
        Cancel(1, 2, 0, 5),
        b"\x00\x00\x00\x11\x0a"
        + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x05",
    ),
    (
        Reject(1, 2, 0, 5),
        b"\x00\x00\x00\x11\x0b"
        + b"\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x05",
    ),
    (
        Announce(7, BLOB, 4, 2, 20),
        b"\x00\x00\x00\x31\x0c"
        + b"\x00\x00\x00\x07"
        + BLOB
        + b"\x00\x00\x00\x04\x00\x00\x00\x02\x00\x00\x00\x14",
    ),
    (
        # Any topic but an update goes as ANNOUNCE_TOPIC (16): kind u8, first u32, last u32.
        Announce(7, BLOB, 4, 2, 3, Topic(TopicKind.AGGREGATE, 5, 8)),
        b"\x00\x00\x00\x3a\x10"
        + b"\x00\x00\x00\x07"
        + BLOB
        + b"\x00\x00\x00\x04\x00\x00\x00\x02\x00\x00\x00\x03"
        + b"\x01\x00\x00\x00\x05\x00\x00\x00\x08",
    ),
    (ManifestRequest(7), b"\x00\x00\x00\x05\x0d\x00\x00\x00\x07"),
    (ManifestData(7, b"MF"), b"\x00\x00\x00\x47\x0e\x00\x00\x00\x07" + bytes(64) + b"MF"),
    (
        ManifestData(7, b"MF", b"S" * 64),
        b"\x00\x00\x00\x47\x0e\x00\x00\x00\x07" + b"S" * 64 + b"MF",
    ),
    (
        Haves(((3, 258), (0, 1))),
        b"\x00\x00\x00\x11\x0f"
        + b"\x00\x00\x00\x03\x00\x00\x01\x02"
        + b"\x00\x00\x00\x00\x00\x00\x00\x01",
    ),
    (
        Handshake("fed", 5, 7000),
        b"\x00\x00\x00\x1f\x01"
        + b"\x09fltorrent"  # name length, name
        + b"\x00\x04"  # version 4
        + b"\x00" * 8  # reserved flags
        + b"\x03fed"  # federation id
        + b"\x00\x00\x00\x05"  # peer id
        + b"\x1b\x58",  # listen port 7000
    ),
]


@pytest.mark.parametrize(("msg", "raw"), EXACT, ids=lambda v: type(v).__name__)
def test_exact_bytes_and_round_trip(msg: Message, raw: bytes) -> None:
    assert msg.encode() == raw
    assert decode_message(raw[4], raw[5:]) == msg
    assert int.from_bytes(raw[:4], "big") == len(raw) - 4


def test_bits_pack_msb_first_with_zero_spare_bits() -> None:
    held = [True, False, True, False, False, False, False, False, True]
    assert pack_bits(held) == b"\xa0\x80"
    assert unpack_bits(b"\xa0\x80", 9) == held
    assert pack_bits([]) == b""


@pytest.mark.parametrize(
    ("message_id", "payload", "match"),
    [
        (99, b"", "unknown message id 99"),
        (0, b"x", "KeepAlive payload must be 0 bytes"),
        (6, b"\x00" * 7, "have payload must be 8 bytes"),
        (15, b"\x00" * 8, "at least 16; got 8"),  # one pair: that is a Have
        (15, b"\x00" * 20, "multiple of 8 bytes, at least 16; got 20"),
        (15, b"", "got 0"),
        (8, b"\x00" * 15, "request payload must be 16 bytes"),
        (9, b"\x00" * 11, "truncated piece"),
        (12, b"\x00" * 47, "announce payload must be 48 bytes"),
        (16, b"\x00" * 48, "announce topic payload must be 57 bytes"),
        (16, b"\x00" * 48 + b"\x07" + b"\x00" * 8, "bad topic: 7 is not a valid TopicKind"),
        (16, b"\x00" * 48 + b"\x01\x00\x00\x00\x05" + b"\x00" * 4, "is not a range"),
        (16, b"\x00" * 57, "an update is announced with ANNOUNCE"),
        (1, b"\x09fltor", "truncated handshake"),
        (
            1,
            Handshake("fed", 1, 1).encode()[5:] + b"!",
            "handshake has 1 trailing bytes",
        ),
        (1, b"\x09fltorrent\x00\x01" + b"\x00" * 8 + b"\x02\xff\xfe" + b"\x00" * 6, "UTF-8"),
    ],
)
def test_malformed_payloads_are_remote_errors(message_id: int, payload: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_message(message_id, payload)
