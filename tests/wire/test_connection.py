"""The sans-IO state machine: ordering, limits, and malformed input from the remote side."""

from __future__ import annotations

import pytest

from fltorrent.errors import LocalProtocolError, RemoteProtocolError
from fltorrent.wire import (
    NEED_DATA,
    Announce,
    Bitfield,
    Cancel,
    Choke,
    ConnectionClosed,
    Handshake,
    Have,
    Haves,
    Interested,
    ManifestData,
    ManifestRequest,
    Piece,
    Request,
    State,
    Unchoke,
    WireConnection,
)
from tests.wire.helpers import FED, ConnectionPair, drain

BLOB = b"\x11" * 32


def test_handshake_then_exchange() -> None:
    pair = ConnectionPair(handshake=False)
    [hs] = pair.send("a", Handshake(FED, 1, 7001))
    assert hs == Handshake(FED, 1, 7001)
    assert pair.b.their_handshake == hs
    assert pair.b.their_state is State.OPEN
    pair.send("b", Handshake(FED, 2, 7002))
    assert pair.send("a", Announce(5, BLOB, 1, 1, 3)) == [Announce(5, BLOB, 1, 1, 3)]
    assert pair.send("a", Bitfield(5, b"\xc0")) == [Bitfield(5, b"\xc0")]
    assert pair.send("b", Interested()) == [Interested()]
    assert pair.a.peer_interested
    pair.send("a", Unchoke())
    assert not pair.b.peer_choking
    assert pair.send("b", Request(5, 1, 0, 4)) == [Request(5, 1, 0, 4)]
    assert pair.send("a", Piece(5, 1, 0, b"abcd")) == [Piece(5, 1, 0, b"abcd")]
    assert pair.send("b", Cancel(5, 2, 0, 4)) == [Cancel(5, 2, 0, 4)]
    assert pair.send("b", ManifestRequest(5)) == [ManifestRequest(5)]
    assert pair.send("a", ManifestData(5, b"body")) == [ManifestData(5, b"body")]
    pair.send("a", Choke())
    assert pair.b.peer_choking


def test_byte_at_a_time_and_coalesced_frames_give_the_same_events() -> None:
    src = WireConnection(federation=FED)
    raw = b"".join(
        src.send(m)
        for m in (
            Handshake(FED, 1, 1),
            Announce(0, BLOB, 1, 1, 2),
            Have(0, 1),
            Piece(0, 0, 0, b"z"),
        )
    )
    one = WireConnection(federation=FED)
    one.receive_data(raw)
    whole = drain(one)
    slow = WireConnection(federation=FED)
    trickled = []
    for i in range(len(raw)):
        slow.receive_data(raw[i : i + 1])
        trickled += drain(slow)
    assert whole == trickled
    assert [type(e).__name__ for e in whole] == ["Handshake", "Announce", "Have", "Piece"]


def test_clean_eof_is_connection_closed() -> None:
    pair = ConnectionPair()
    pair.b.receive_data(b"")
    assert pair.b.next_event() == ConnectionClosed()
    assert pair.b.their_state is State.CLOSED


def test_eof_inside_a_frame_is_an_error() -> None:
    pair = ConnectionPair()
    pair.b.receive_data(Have(0, 0).encode()[:6])
    assert pair.b.next_event() is NEED_DATA
    pair.b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed inside a frame"):
        pair.b.next_event()


def _fed(conn: WireConnection, raw: bytes) -> None:
    conn.receive_data(raw)
    drain(conn)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (Have(0, 0).encode(), "expected handshake, got Have"),
        (Handshake("other", 1, 1).encode(), "federation 'other' is not ours"),
        (Handshake(FED, 1, 1, protocol=b"BitTorrent").encode(), "unknown protocol"),
        (Handshake(FED, 1, 1, version=9).encode(), "unsupported protocol version 9"),
        (b"\x00\x00\x00\x00", "frame length 0"),
        (b"\x01\x00\x00\x00\x09", "exceeds the maximum"),
    ],
)
def test_bad_first_frames(raw: bytes, match: str) -> None:
    conn = WireConnection(federation=FED)
    with pytest.raises(RemoteProtocolError, match=match):
        _fed(conn, raw)
    # A failed connection stays failed.
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    pair = ConnectionPair(max_frame_size=1024, max_block_size=512)
    header = (5000).to_bytes(4, "big") + b"\x09"
    pair.b.receive_data(header)  # only 5 bytes buffered: refused before the body arrives
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum of 1024"):
        pair.b.next_event()


@pytest.mark.parametrize(
    ("announce", "msg", "match"),
    [
        (False, Have(0, 0), "Have for unannounced handle 0"),
        (False, ManifestData(0, b"x"), "unannounced handle"),
        (True, Have(0, 3), "piece 3 of a blob with 3 pieces"),
        (True, Haves(((0, 2), (0, 3))), "Haves for piece 3 of a blob with 3 pieces"),
        (True, Haves(((0, 1), (4, 0))), "Haves for unannounced handle 4"),
        (True, Bitfield(0, b"\xe0\x00"), "bitfield of 2 bytes for 3 pieces"),
        (True, Bitfield(0, b"\xf0"), "spare bits are set"),
        (True, Announce(0, BLOB, 1, 1, 3), "announced twice"),
        (True, Piece(0, 0, 0, b""), "piece block of 0 bytes"),
    ],
)
def test_out_of_order_or_inconsistent_messages_from_the_holder(
    announce: bool, msg: object, match: str
) -> None:
    pair = ConnectionPair()
    if announce:
        pair.send("a", Announce(0, BLOB, 1, 1, 3))
    # Bypass a's own checks to emulate a misbehaving remote peer.
    from fltorrent.wire.messages import Message

    assert isinstance(msg, Message)
    pair.b.receive_data(msg.encode())
    with pytest.raises(RemoteProtocolError, match=match):
        drain(pair.b)


def test_requests_must_name_the_receivers_handles() -> None:
    pair = ConnectionPair()
    pair.send("a", Announce(0, BLOB, 1, 1, 3))
    # b announced nothing: a request from a for handle 0 names nothing b holds.
    pair.b.receive_data(Request(0, 0, 0, 10).encode())
    with pytest.raises(RemoteProtocolError, match="Request for unannounced handle 0"):
        drain(pair.b)


def test_block_length_limit() -> None:
    pair = ConnectionPair(max_frame_size=4096, max_block_size=1024)
    pair.send("b", Announce(0, BLOB, 1, 1, 3))
    pair.b.receive_data(Request(0, 0, 0, 1025).encode())
    with pytest.raises(RemoteProtocolError, match="Request of 1025 bytes"):
        drain(pair.b)


def test_second_handshake_is_an_error() -> None:
    pair = ConnectionPair()
    pair.b.receive_data(Handshake(FED, 1, 1).encode())
    with pytest.raises(RemoteProtocolError, match="second handshake"):
        drain(pair.b)


def test_local_violations_raise_local_errors() -> None:
    conn = WireConnection(federation=FED)
    with pytest.raises(LocalProtocolError, match="must send handshake first"):
        conn.send(Have(0, 0))
    conn.send(Handshake(FED, 1, 1))
    with pytest.raises(LocalProtocolError, match="handshake already sent"):
        conn.send(Handshake(FED, 1, 1))
    with pytest.raises(LocalProtocolError, match="Have for unannounced handle"):
        conn.send(Have(0, 0))
    conn.close()
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.send(Unchoke())


def test_before_the_handshake_frames_are_small() -> None:
    conn = WireConnection(federation=FED)  # max frame 2 MiB once the handshake is in
    conn.receive_data((2000).to_bytes(4, "big") + b"\x01")
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum of 1024"):
        conn.next_event()


def test_announce_limits() -> None:
    pair = ConnectionPair(max_pieces=100, max_handles=2)
    pair.b.receive_data(Announce(0, BLOB, 1, 1, 101).encode())
    with pytest.raises(RemoteProtocolError, match="101 pieces \\(limit 100\\)"):
        drain(pair.b)
    pair = ConnectionPair(max_pieces=100, max_handles=2)
    pair.send("a", Announce(0, BLOB, 1, 1, 1))
    pair.send("a", Announce(1, BLOB, 1, 1, 1))
    pair.b.receive_data(Announce(2, BLOB, 1, 1, 1).encode())
    with pytest.raises(RemoteProtocolError, match="more than 2 blobs"):
        drain(pair.b)


def test_next_events_returns_what_next_event_would_in_one_call() -> None:
    src = WireConnection(federation=FED)
    raw = b"".join(
        src.send(m) for m in (Handshake(FED, 1, 1), Announce(0, BLOB, 1, 1, 3), Have(0, 1))
    )
    one, batch = WireConnection(federation=FED), WireConnection(federation=FED)
    one.receive_data(raw + Have(0, 2).encode()[:5])
    batch.receive_data(raw + Have(0, 2).encode()[:5])
    assert batch.next_events() == [*drain(one), NEED_DATA]
    batch.receive_data(Have(0, 2).encode()[5:])
    batch.receive_data(b"")
    assert batch.next_events() == [Have(0, 2), ConnectionClosed()]


def test_next_events_hands_out_good_frames_before_raising_on_a_bad_one() -> None:
    pair = ConnectionPair()
    pair.a.send(Announce(0, BLOB, 1, 1, 3))
    pair.b.receive_data(Announce(0, BLOB, 1, 1, 3).encode() + Have(0, 1).encode())
    pair.b.receive_data(Have(0, 7).encode() + Have(0, 2).encode())
    assert pair.b.next_events() == [Announce(0, BLOB, 1, 1, 3), Have(0, 1)]
    assert pair.b.their_state is State.ERROR
    for _ in range(2):  # the reason is kept, and the connection stays failed
        with pytest.raises(RemoteProtocolError, match="piece 7 of a blob with 3 pieces"):
            pair.b.next_events()
    with pytest.raises(RemoteProtocolError, match="already failed"):
        pair.b.next_event()


def test_next_events_raises_at_once_when_the_first_frame_is_bad() -> None:
    pair = ConnectionPair()
    pair.b.receive_data(Have(0, 0).encode())
    with pytest.raises(RemoteProtocolError, match="unannounced handle 0"):
        pair.b.next_events()
