"""Swarms exchanging blobs over the in-memory network and over loopback TCP."""

from __future__ import annotations

from typing import Any

import pytest

from fltorrent.net import MemoryNetwork, TcpTransport
from fltorrent.swarm import SwarmOptions
from tests.aio import aio
from tests.swarm.helpers import FED, random_blob, swarm_graph, wait_all


@aio()
async def test_two_peers_exchange_and_count_bytes() -> None:
    async with MemoryNetwork() as net, swarm_graph(net, 2, [(1, 2)]) as nodes:
        m, pieces = random_blob(1, 100_000, 4)
        nodes[1].swarm.publish(m, pieces)
        await wait_all({2: nodes[2]}, 1)
        got = nodes[2].swarm.blobs[m.blob_id]
        assert got.pieces == pieces
        c1, c2 = nodes[1].swarm.counters, nodes[2].swarm.counters
        assert c2.payload_down == 100_000 == c1.payload_up
        assert c2.duplicate_bytes == 0 and c2.corrupt_pieces == 0
        assert c2.pieces_verified == 4
        # Every byte on the wire is either payload or control, counted once on each side.
        assert c1.bytes_up == c1.payload_up + c1.control_up
        assert c2.bytes_down == c2.payload_down + c2.duplicate_bytes + c2.control_down
        assert c2.control_down == c1.control_up


@aio()
async def test_pieces_relay_across_hops_on_a_line() -> None:
    # 1 - 2 - 3 - 4: peer 4 has no session with peer 1 but still gets its blob.
    edges = [(1, 2), (2, 3), (3, 4)]
    async with MemoryNetwork() as net, swarm_graph(net, 4, edges) as nodes:
        blobs = {}
        for pid, node in nodes.items():
            m, pieces = random_blob(pid, 50_000 + pid, 5)
            node.swarm.publish(m, pieces)
            blobs[m.blob_id] = pieces
        await wait_all(nodes, 4)
        for node in nodes.values():
            assert set(node.swarm.sessions) <= {
                node.swarm.options.peer_id - 1,
                node.swarm.options.peer_id + 1,
            }
            for blob_id, pieces in blobs.items():
                assert node.swarm.blobs[blob_id].pieces == pieces
        assert 1 not in nodes[4].swarm.sessions
        # Peer 3 relayed peer 1's blob to peer 4: its upload exceeds its own blob's size.
        assert nodes[3].swarm.counters.payload_up > 50_003


@aio()
async def test_all_to_all_on_a_ring_without_duplicates() -> None:
    edges = [(i, i % 6 + 1) for i in range(1, 7)]
    async with MemoryNetwork() as net, swarm_graph(net, 6, edges) as nodes:
        for pid, node in nodes.items():
            node.swarm.publish(*random_blob(pid, 200_000, 8))
        await wait_all(nodes, 6)
        for node in nodes.values():
            c = node.swarm.counters
            assert c.payload_down == 5 * 200_000
            assert c.corrupt_pieces == 0
            # Outside endgame a block is requested once: duplicates can only come from it.
            assert c.duplicate_bytes <= c.duplicate_requests * 16384


@aio()
async def test_exchange_over_loopback_tcp() -> None:
    opts = SwarmOptions(federation=FED, peer_id=0, block_size=32 * 1024)
    edges = [(1, 2), (2, 3), (1, 3)]
    async with swarm_graph(TcpTransport(), 3, edges, options=opts) as nodes:
        blobs = {}
        for pid, node in nodes.items():
            m, pieces = random_blob(pid, 1_000_000, 10)
            node.swarm.publish(m, pieces)
            blobs[m.blob_id] = pieces
        await wait_all(nodes, 3)
        for node in nodes.values():
            for blob_id, pieces in blobs.items():
                assert node.swarm.blobs[blob_id].pieces == pieces


@aio()
async def test_want_filter_and_dropping_blobs() -> None:
    async with MemoryNetwork() as net, swarm_graph(net, 2, [(1, 2)]) as nodes:
        s2 = nodes[2].swarm
        s2.set_want(lambda round_, author, _t: round_ >= 2 and author != 2)
        old, old_pieces = random_blob(1, 10_000, 2, round_=1)
        new, new_pieces = random_blob(1, 10_000, 2, round_=2)
        nodes[1].swarm.publish(old, old_pieces)
        nodes[1].swarm.publish(new, new_pieces)
        assert await s2.wait_for(
            lambda: new.blob_id in s2.blobs and s2.blobs[new.blob_id].complete, 5
        )
        assert old.blob_id not in s2.blobs  # round 1 is not wanted: its manifest is never fetched
        assert nodes[1].swarm.drop_blobs(lambda m: m.round < 2) == 1
        assert set(nodes[1].swarm.blobs) == {new.blob_id}


@aio()
async def test_publish_checks_pieces_against_the_manifest() -> None:
    from fltorrent.errors import SwarmError
    from fltorrent.swarm import Swarm

    async with MemoryNetwork() as net:
        swarm = Swarm(
            SwarmOptions(federation=FED, peer_id=1), transport=net, want=lambda _r, _a, _t: True
        )
        async with swarm:
            m, pieces = random_blob(1, 1000, 2)
            with pytest.raises(SwarmError, match="piece 1 does not match"):
                swarm.publish(m, [pieces[0], b"x" * len(pieces[1])])
            with pytest.raises(SwarmError, match="1 pieces for a manifest of 2"):
                swarm.publish(m, pieces[:1], verify=False)
            blob = swarm.publish(m, pieces, verify=False)
            assert blob.complete and swarm.blobs[m.blob_id] is blob


@aio()
async def test_exchange_resumes_after_a_broken_connection() -> None:
    # Slow the transfer down (small blocks, shallow pipeline) so that the link can be cut in
    # the middle; the dialing side reconnects and the download resumes where it stopped.
    opts = SwarmOptions(
        federation=FED, peer_id=0, block_size=1024, min_pipeline=1, max_inflight_bytes=16 * 1024
    )
    async with MemoryNetwork() as net, swarm_graph(net, 2, [(1, 2)], options=opts) as nodes:
        m, pieces = random_blob(2, 400_000, 8)
        nodes[2].swarm.publish(m, pieces)
        s1 = nodes[1].swarm
        assert await s1.wait_for(
            lambda: m.blob_id in s1.blobs and s1.blobs[m.blob_id].num_have >= 2, 10
        )
        before = s1.blobs[m.blob_id].num_have
        assert before < 8
        await s1.sessions[2].conn.aclose()  # the link breaks mid-transfer
        assert await s1.wait_for(lambda: 2 not in s1.sessions, 5)
        assert await s1.wait_for(lambda: s1.blobs[m.blob_id].complete, 20)
        assert s1.blobs[m.blob_id].pieces == pieces
        assert s1.counters.sessions_opened == 2  # reconnected once
        # Pieces held before the break were not fetched again.
        assert s1.counters.payload_down < 400_000 + 8 * 1024


@aio()
async def test_no_block_is_requested_twice_outside_endgame(monkeypatch: pytest.MonkeyPatch) -> None:
    from fltorrent.swarm.requests import RequestPool

    checked = {"assignments": 0, "second": 0}
    original = RequestPool.assign

    def assign(self: RequestPool, d: Any, offset: int, session: Any, now: float) -> Any:
        checked["assignments"] += 1
        if d.active.get(offset):
            # A second request for an active block is endgame only: nothing left pending.
            assert not self.has_pending(), "duplicate in-flight request outside endgame"
            checked["second"] += 1
        return original(self, d, offset, session, now)

    monkeypatch.setattr(RequestPool, "assign", assign)
    opts = SwarmOptions(federation=FED, peer_id=0, block_size=4096)
    edges = [(i, i % 5 + 1) for i in range(1, 6)] + [(1, 3), (2, 4)]
    async with MemoryNetwork() as net, swarm_graph(net, 5, edges, options=opts) as nodes:
        for pid, node in nodes.items():
            node.swarm.publish(*random_blob(pid, 300_000, 12))
        await wait_all(nodes, 5)
    assert checked["assignments"] >= 4 * 5 * 300_000 // 4096  # every block of every blob
