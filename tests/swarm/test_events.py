"""What a swarm tells about its exchange: connection and piece events, and giving up dials."""

from __future__ import annotations

import asyncio
import socket

from fltorrent.attacks.publishing import poison_block
from fltorrent.net import MemoryNetwork, TcpTransport
from fltorrent.swarm import Swarm, SwarmOptions
from fltorrent.swarm.events import ConnectionEvent, ExchangeEvent, PieceEvent
from tests.aio import aio
from tests.swarm.helpers import FED, random_blob


@aio()
async def test_pieces_and_connections_are_reported() -> None:
    seen_1: list[ExchangeEvent] = []
    seen_2: list[ExchangeEvent] = []
    async with MemoryNetwork() as net:
        one = Swarm(
            SwarmOptions(federation=FED, peer_id=1),
            transport=net,
            want=lambda *_: False,
            events=seen_1.append,
        )
        two = Swarm(
            SwarmOptions(federation=FED, peer_id=2),
            transport=net,
            want=lambda _r, a, _t: a == 1,
            events=seen_2.append,
        )
        async with one, two:
            listener = await net.listen("one", 0, one.accept)
            manifest, pieces = random_blob(1, 40_000, 5, round_=3)
            one.publish(manifest, pieces)
            two.connect(1, listener.address)
            assert await two.wait_for(
                lambda: manifest.blob_id in two.blobs and two.blobs[manifest.blob_id].complete, 10
            )
            await listener.aclose()
    opened = [e for e in seen_2 if isinstance(e, ConnectionEvent) and e.kind == "opened"]
    assert len(opened) == 1 and opened[0].remote == 1 and opened[0].outbound
    assert opened[0].handshake_s is not None and opened[0].handshake_s >= 0
    inbound = [e for e in seen_1 if isinstance(e, ConnectionEvent) and e.kind == "opened"]
    assert len(inbound) == 1 and inbound[0].remote == 2 and not inbound[0].outbound
    got = [e for e in seen_2 if isinstance(e, PieceEvent)]
    assert sorted(e.piece for e in got) == list(range(5))
    for e in got:
        assert (e.author, e.round, e.source, e.sources, e.verified) == (1, 3, 1, (1,), True)
        assert e.size == len(pieces[e.piece]) and e.duration_s >= 0
    assert not [e for e in seen_1 if isinstance(e, PieceEvent)]  # it only served
    closed = [e for e in seen_2 if isinstance(e, ConnectionEvent) and e.kind == "closed"]
    assert len(closed) == 1 and closed[0].reason  # at the end, with why


@aio()
async def test_a_corrupt_piece_is_reported_rejected_with_its_source() -> None:
    seen: list[ExchangeEvent] = []
    async with MemoryNetwork() as net:
        bad = Swarm(
            SwarmOptions(federation=FED, peer_id=9),
            transport=net,
            want=lambda *_: False,
            serve_hook=poison_block,
        )
        victim = Swarm(
            SwarmOptions(federation=FED, peer_id=1, max_corrupt=2),
            transport=net,
            want=lambda _r, a, _t: a == 9,
            events=seen.append,
        )
        async with bad, victim:
            listener = await net.listen("bad", 0, bad.accept)
            manifest, pieces = random_blob(9, 40_000, 8)
            bad.publish(manifest, pieces)
            victim.connect(9, listener.address)
            assert await victim.wait_for(lambda: victim.banned(9), 10)
            await listener.aclose()
    rejected = [e for e in seen if isinstance(e, PieceEvent)]
    assert len(rejected) >= 2 and all(not e.verified and e.sources == (9,) for e in rejected)
    closed = [e for e in seen if isinstance(e, ConnectionEvent) and e.remote == 9]
    assert closed[-1].kind in ("closed", "refused")


@aio()
async def test_dials_give_up_after_max_connection_attempts() -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen: list[ExchangeEvent] = []
    gave_up = asyncio.Event()

    def record(event: ExchangeEvent) -> None:
        seen.append(event)
        if isinstance(event, ConnectionEvent) and event.kind == "gave_up":
            gave_up.set()

    swarm = Swarm(
        SwarmOptions(federation=FED, peer_id=1, connect_timeout=0.5, max_connection_attempts=3),
        transport=TcpTransport(),
        want=lambda *_: False,
        events=record,
    )
    async with swarm:
        swarm.connect(2, ("127.0.0.1", port))
        await asyncio.wait_for(gave_up.wait(), 10)
        assert 2 not in swarm.sessions
    kinds = [e.kind for e in seen if isinstance(e, ConnectionEvent)]
    assert kinds == ["dial_failed"] * 3 + ["gave_up"]
    assert all(e.address == f"127.0.0.1:{port}" for e in seen if isinstance(e, ConnectionEvent))
