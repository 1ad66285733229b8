"""Resource limits and bookkeeping under hostile or unlucky neighbours.

Each test is a regression test for a defect found in review: a neighbour that announces huge
blobs, never reads, rejects everything, pushes unasked blocks, reconnects, or leaves in the
middle of a piece; and a round that moves on while pieces are in flight.
"""

from __future__ import annotations

import asyncio

from fltorrent.net import MemoryNetwork
from fltorrent.wire import (
    Announce,
    Cancel,
    Handshake,
    KeepAlive,
    ManifestData,
    ManifestRequest,
    Piece,
    Reject,
    Request,
    Unchoke,
)
from tests.aio import aio
from tests.swarm.helpers import FED, RawPeer, _raw, _victim, random_blob


@aio()
async def test_announcing_too_many_pieces_closes_the_connection() -> None:
    async with MemoryNetwork() as net, _victim(net, max_remote_pieces=1000) as victim:
        raw = await _raw(net, victim)
        # Author 1 is the victim itself: unwanted blobs, so nothing is fetched, only counted.
        for h in range(3):
            await raw.send(Announce(h, bytes([h]) * 32, 1, 1, 400))
        await raw.pump()
        assert raw.closed
        assert victim.counters.sessions_failed == 1 and not victim.sessions


@aio()
async def test_manifests_with_oversized_pieces_are_refused() -> None:
    async with MemoryNetwork() as net, _victim(net, max_piece_size=1000) as victim:
        manifest, _ = random_blob(5, 4000, 2)  # pieces of 2000 bytes
        raw = await _raw(net, victim)
        await raw.offer(manifest)
        await raw.pump(ManifestRequest)
        await raw.send(ManifestData(0, manifest.encoded))
        await asyncio.sleep(0.05)
        assert manifest.blob_id not in victim.blobs  # refused: no piece buffer is ever made
        assert 66 in victim.sessions  # a policy refusal, not a protocol error


@aio()
async def test_a_flood_of_requests_closes_the_connection() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        manifest, pieces = random_blob(1, 1 << 20, 1)
        victim.publish(manifest, pieces)
        raw = await _raw(net, victim)
        await raw.send(Unchoke())
        await raw.pump(Announce)
        # Never reading, and asking far more than any pipeline would (distinct requests:
        # repeats of one request are merged, not queued twice).
        flood = b"".join(
            raw.wire.send(Request(0, 0, off, length))
            for off in range(0, 1 << 20, 16384)
            for length in range(1, 80)
        )
        await raw.conn.send(flood)
        assert await victim.wait_for(lambda: not victim.sessions, 5)
        assert victim.counters.sessions_failed == 1


@aio()
async def test_a_neighbour_that_never_reads_is_dropped() -> None:
    async with MemoryNetwork(buffer_limit=64 * 1024) as net, _victim(net, idle_timeout=0.5) as v:
        manifest, pieces = random_blob(1, 1 << 20, 1)
        v.publish(manifest, pieces)
        raw = await _raw(net, v)
        await raw.send(Unchoke())
        await raw.pump(Announce)
        for off in range(0, 1 << 20, 16384):  # 1 MiB asked, nothing ever read back
            await raw.send(Request(0, 0, off, 16384))

        async def chatter() -> None:  # it keeps talking, so it never looks idle
            while True:
                await raw.send(KeepAlive())
                await asyncio.sleep(0.1)

        talk = asyncio.create_task(chatter())
        try:
            # Only the stalled send (write deadline) can end this session.
            assert await v.wait_for(lambda: not v.sessions, 5)
        finally:
            talk.cancel()


@aio()
async def test_a_neighbour_that_rejects_everything_is_not_asked_again() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        manifest, _ = random_blob(5, 16384 * 4, 2)
        raw = await _raw(net, victim)
        await raw.offer(manifest)
        await raw.pump(ManifestRequest)
        await raw.send(ManifestData(0, manifest.encoded))
        requests = 0
        for _ in range(20):  # answer every request with a reject, for about a second
            for ev in await raw.collect(0.05):
                if isinstance(ev, Request):
                    requests += 1
                    await raw.send(Reject(ev.handle, ev.piece, ev.offset, ev.length))
        assert 0 < requests <= 4  # each block asked once, then the holder is believed
        assert not victim.obtainable(victim.blobs[manifest.blob_id])
        assert not victim._down.pool.downloads


@aio()
async def test_unasked_blocks_are_ignored_and_do_not_blame_the_honest_seeder() -> None:
    async with MemoryNetwork() as net, _victim(net, max_corrupt=1) as victim:
        manifest, pieces = random_blob(5, 32768, 1)  # one piece of two 16 KiB blocks
        listener = await net.listen("victim", 0, victim.accept)
        honest = RawPeer(await net.connect(*listener.address, timeout=1))
        await honest.send(Handshake(FED, 5, 1))
        await honest.offer(manifest)
        await honest.pump(ManifestRequest)
        await honest.send(ManifestData(0, manifest.encoded))
        await honest.pump(Request)
        await asyncio.sleep(0.05)
        bad = RawPeer(await net.connect(*listener.address, timeout=1))
        await bad.send(Handshake(FED, 7, 1))
        await bad.send(Unchoke())
        await bad.send(Announce(0, manifest.blob_id, 1, 5, 1))
        await bad.send(Piece(0, 0, 16384, b"\x00" * 16384))  # garbage nobody asked for
        asked = honest.received + await honest.collect(0.1)
        for req in [m for m in asked if isinstance(m, Request)]:
            data = pieces[0][req.offset : req.offset + req.length]
            await honest.send(Piece(0, req.piece, req.offset, data))
        blob = victim.blobs[manifest.blob_id]
        assert await victim.wait_for(lambda: blob.complete, 2)
        assert victim.counters.corrupt_pieces == 0
        assert 5 in victim.sessions
        assert victim.counters.duplicate_bytes == 16384  # the unasked block, counted, unused


@aio()
async def test_a_half_downloaded_piece_of_a_departed_author_is_not_waited_for() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        manifest, _ = random_blob(5, 16384 * 8, 4)  # 4 pieces of 2 blocks
        author = await _raw(net, victim)
        await author.offer(manifest)
        await author.pump(ManifestRequest)
        await author.send(ManifestData(0, manifest.encoded))
        await author.pump(Request)
        await author.conn.aclose()  # the author leaves with requests in flight
        assert await victim.wait_for(lambda: not victim.sessions, 2)
        blob = victim.blobs[manifest.blob_id]
        assert not victim.obtainable(blob)
        assert not victim._down.pool.downloads and not victim._down.pool.has_pending()


@aio()
async def test_a_round_that_moves_on_stops_its_downloads() -> None:
    async with MemoryNetwork() as net, _victim(net, min_pipeline=2) as victim:
        manifest, _ = random_blob(5, 16384 * 16, 1)  # one piece of 16 blocks
        raw = await _raw(net, victim)
        await raw.offer(manifest)
        await raw.pump(ManifestRequest)
        await raw.send(ManifestData(0, manifest.encoded))
        await raw.pump(Request)
        victim.set_want(lambda rnd, author, _t: rnd >= 2 and author != 1)  # round 1 is over
        assert not victim._down.pool.downloads
        later = await raw.collect(0.2)
        asked = {(m.piece, m.offset) for m in later if isinstance(m, Request)}
        withdrawn = {(m.piece, m.offset) for m in later if isinstance(m, Cancel)}
        # Requests already on their way are withdrawn; nothing new is asked.
        assert asked <= withdrawn


@aio()
async def test_a_peer_that_reconnects_replaces_its_stale_session() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        first = await _raw(net, victim)
        await first.pump(Unchoke)
        old = victim.sessions[66]
        second = await _raw(net, victim)  # same peer id, e.g. after a half-open failure
        await second.pump(Unchoke)
        assert victim.sessions[66] is not old
        await first.pump()
        assert first.closed and not second.closed
