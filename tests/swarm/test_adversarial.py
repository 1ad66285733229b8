"""Misbehaving neighbours: corrupt pieces, lying manifests, garbage bytes, silent seeders.

Each test drives a scripted raw peer (a bare :class:`WireConnection` over the in-memory network)
against a real swarm, and checks that the swarm drops or routes around it and carries on.
"""

from __future__ import annotations

from collections.abc import Callable

from fltorrent.attacks.publishing import poison_block
from fltorrent.net import MemoryNetwork
from fltorrent.swarm import Manifest, Swarm, SwarmOptions
from fltorrent.wire import (
    Announce,
    Cancel,
    ManifestData,
    ManifestRequest,
    Piece,
    Request,
    Unchoke,
)
from tests.aio import aio
from tests.swarm.helpers import FED, RawPeer, _raw, _victim, random_blob


@aio()
async def test_corrupt_pieces_are_rejected_not_served_and_the_sender_dropped() -> None:
    async with MemoryNetwork() as net, _victim(net, max_corrupt=2) as victim:
        manifest, pieces = random_blob(5, 4000, 2)
        bad = await _raw(net, victim)
        await bad.offer(manifest)
        await bad.pump(ManifestRequest)
        await bad.send(ManifestData(0, manifest.encoded))
        corrupt_served = 0
        while not bad.closed:
            await bad.pump(Request)
            if _closed(bad):  # pump() may have closed it (a call: mypy keeps no narrowing)
                break
            req = bad.received[-1]
            assert isinstance(req, Request)
            await bad.send(Piece(0, req.piece, req.offset, b"\xff" * req.length))
            corrupt_served += 1
        assert victim.counters.corrupt_pieces == 2
        assert victim.counters.duplicate_bytes == 0
        blob = victim.blobs[manifest.blob_id]
        assert blob.num_have == 0  # nothing unverified is ever held (so never served onward)
        # An honest seeder connects afterwards: the victim completes the blob from it.
        honest = Swarm(
            SwarmOptions(federation=FED, peer_id=5), transport=net, want=lambda _r, _a, _t: False
        )
        async with honest:
            honest.publish(manifest, pieces)
            honest_listener = await net.listen("honest", 0, honest.accept)
            victim.connect(5, honest_listener.address)
            assert await victim.wait_for(lambda: blob.complete, 5)
        assert blob.pieces == pieces


@aio()
async def test_manifest_that_does_not_match_its_id_drops_the_connection() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        manifest, _ = random_blob(5, 4000, 2)
        liar = await _raw(net, victim)
        await liar.offer(manifest)
        await liar.pump(ManifestRequest)
        forged = Manifest.build(author=5, round=1, pieces=[b"x" * 2000, b"y" * 2000], num_samples=1)
        await liar.send(ManifestData(0, forged.encoded))
        await liar.pump()  # until the victim closes
        assert liar.closed
        assert victim.counters.sessions_failed == 1
        assert manifest.blob_id not in victim.blobs and forged.blob_id not in victim.blobs


@aio()
async def test_garbage_bytes_drop_only_that_connection() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        junk = await _raw(net, victim)
        await junk.conn.send(b"\x00\x00\x00\x05\x63garbage")  # unknown message id 99
        await junk.pump()
        assert junk.closed
        # The swarm still accepts and serves a well-behaved peer afterwards.
        manifest, pieces = random_blob(1, 3000, 1)
        victim.publish(manifest, pieces)
        good = await _raw(net, victim)
        await good.send(Unchoke())
        await good.pump(Announce)
        await good.send(Request(0, 0, 0, 3000))
        await good.pump(Piece)
        piece = good.received[-1]
        assert isinstance(piece, Piece) and piece.data == pieces[0]
        assert victim.counters.sessions_failed == 1


@aio()
async def test_endgame_routes_around_a_silent_seeder_and_cancels() -> None:
    async with MemoryNetwork() as net, _victim(net, min_pipeline=64) as victim:
        manifest, pieces = random_blob(5, 16384 * 8, 8)
        silent = await _raw(net, victim)
        await silent.offer(manifest)
        await silent.pump(ManifestRequest)
        await silent.send(ManifestData(0, manifest.encoded))
        await silent.pump(Request)  # requests arrive and are never answered
        seeder = Swarm(
            SwarmOptions(federation=FED, peer_id=5), transport=net, want=lambda _r, _a, _t: False
        )
        async with seeder:
            seeder.publish(manifest, pieces)
            seeder_listener = await net.listen("seeder", 0, seeder.accept)
            victim.connect(5, seeder_listener.address)
            blob_done = await victim.wait_for(
                lambda: (
                    manifest.blob_id in victim.blobs and victim.blobs[manifest.blob_id].complete
                ),
                5,
            )
            assert blob_done
            await silent.pump(Cancel, timeout=2)
        assert victim.blobs[manifest.blob_id].pieces == pieces
        assert victim.counters.duplicate_requests > 0
        assert any(isinstance(m, Cancel) for m in silent.received)


def _closed(peer: RawPeer) -> bool:
    return peer.closed


def _connected_to(swarm: Swarm, peer: int) -> Callable[[], bool]:
    return lambda: peer in swarm.sessions


async def _pair_with(net: MemoryNetwork, bad: Swarm, victims: list[Swarm]) -> None:
    listener = await net.listen("bad", 0, bad.accept)
    for v in victims:
        v.connect(bad.options.peer_id, listener.address)
    for v in victims:
        assert await v.wait_for(_connected_to(v, bad.options.peer_id), 5)


@aio()
async def test_a_poisoning_swarm_is_caught_banned_and_its_blob_never_held() -> None:
    async with MemoryNetwork() as net:
        bad = Swarm(
            SwarmOptions(federation=FED, peer_id=9),
            transport=net,
            want=lambda _r, _a, _t: False,
            serve_hook=poison_block,
        )
        victim = Swarm(
            SwarmOptions(federation=FED, peer_id=1, max_corrupt=2),
            transport=net,
            want=lambda _r, a, _t: a == 9,
        )
        async with bad, victim:
            manifest, pieces = random_blob(9, 40_000, 8)
            bad.publish(manifest, pieces)
            await _pair_with(net, bad, [victim])
            assert await victim.wait_for(lambda: victim.banned(9), 10)
            assert victim.counters.corrupt_pieces >= 2
            blob = victim.blobs[manifest.blob_id]
            assert blob.num_have == 0  # nothing of it verified, so nothing of it served onward
            assert await victim.wait_for(lambda: 9 not in victim.sessions, 5)
            # It is refused for good: dialing again does not bring it back.
            listener = await net.listen("bad2", 0, bad.accept)
            victim.connect(9, listener.address)
            assert not await victim.wait_for(lambda: 9 in victim.sessions, 1)


@aio()
async def test_an_equivocating_swarm_shows_each_neighbour_one_version() -> None:
    async with MemoryNetwork() as net:
        bad = Swarm(
            SwarmOptions(federation=FED, peer_id=9), transport=net, want=lambda _r, _a, _t: False
        )
        even = Swarm(SwarmOptions(federation=FED, peer_id=2), transport=net, want=lambda *_: True)
        odd = Swarm(SwarmOptions(federation=FED, peer_id=3), transport=net, want=lambda *_: True)
        async with bad, even, odd:
            first, a = random_blob(9, 4000, 2)
            second, b = random_blob(9, 4000, 2)
            assert first.blob_id != second.blob_id and first.round == second.round
            bad.publish(first, a, audience=lambda rid: rid % 2 == 0)
            bad.publish(second, b, audience=lambda rid: rid % 2 == 1)
            await _pair_with(net, bad, [even, odd])
            assert await even.wait_for(lambda: first.blob_id in even.blobs, 5)
            assert await odd.wait_for(lambda: second.blob_id in odd.blobs, 5)
            assert second.blob_id not in even.blobs and first.blob_id not in odd.blobs
