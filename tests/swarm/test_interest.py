"""What a swarm wants is the round plan's to say: by topic, and piece by piece."""

from __future__ import annotations

import asyncio

from fltorrent.net import MemoryNetwork
from fltorrent.swarm import UPDATE, Manifest, Topic, TopicKind
from tests.aio import aio
from tests.swarm.helpers import random_blob, swarm_graph

AGG = Topic(TopicKind.AGGREGATE, 0, 4)


@aio()
async def test_only_the_wanted_pieces_are_fetched_then_the_rest_on_demand() -> None:
    async with MemoryNetwork() as net, swarm_graph(net, 2, [(1, 2)]) as nodes:
        m, pieces = random_blob(1, 80_000, 8)
        a, b = nodes[1].swarm, nodes[2].swarm
        b.set_want(lambda _r, author, _t: author == 1, lambda _m: {1, 5})
        a.publish(m, pieces)
        assert await b.wait_for(lambda: m.blob_id in b.blobs and b.done(b.blobs[m.blob_id]), 5)
        blob = b.blobs[m.blob_id]
        await asyncio.sleep(0.2)  # nothing else trickles in
        assert [i for i in range(8) if blob.has(i)] == [1, 5]
        assert b.counters.payload_down == len(pieces[1]) + len(pieces[5])
        assert not b.wanted(blob) and not blob.complete
        assert b.wanted_pieces(blob) == frozenset({1, 5})
        # A later phase wants the whole blob: the rest arrives, nothing twice.
        b.set_want(lambda _r, author, _t: author == 1)
        assert await b.wait_for(lambda: blob.complete, 5)
        assert blob.pieces == pieces
        assert b.counters.payload_down == 80_000 and b.counters.duplicate_bytes == 0


@aio()
async def test_a_piece_filter_is_relayed_only_by_peers_that_hold_it() -> None:
    # 1 - 2 - 3: peer 2 wants everything of 1, peer 3 only piece 2, which it gets via 2.
    async with MemoryNetwork() as net, swarm_graph(net, 3, [(1, 2), (2, 3)]) as nodes:
        m, pieces = random_blob(1, 40_000, 4)
        nodes[3].swarm.set_want(lambda _r, author, _t: author == 1, lambda _m: {2})
        nodes[1].swarm.publish(m, pieces)
        c = nodes[3].swarm
        assert await c.wait_for(lambda: m.blob_id in c.blobs and c.blobs[m.blob_id].has(2), 5)
        await asyncio.sleep(0.2)
        assert c.blobs[m.blob_id].num_have == 1
        assert c.counters.payload_down == len(pieces[2])


@aio()
async def test_wants_are_per_topic_and_the_topic_is_announced() -> None:
    async with MemoryNetwork() as net, swarm_graph(net, 2, [(1, 2)]) as nodes:
        update, u_pieces = random_blob(1, 4_000, 4)
        agg = Manifest.build(author=1, round=1, pieces=u_pieces, num_samples=1, topic=AGG)
        a, b = nodes[1].swarm, nodes[2].swarm
        b.set_want(lambda _r, _a, topic: topic == AGG)
        a.publish(update, u_pieces)
        a.publish(agg, u_pieces)
        assert await b.wait_for(lambda: agg.blob_id in b.blobs and b.blobs[agg.blob_id].complete, 5)
        assert update.blob_id not in b.blobs  # its manifest was never fetched
        session = b.sessions[1]
        topics = {rb.blob_id: rb.topic for rb in session.their.values()}
        assert topics == {update.blob_id: UPDATE, agg.blob_id: AGG}


@aio()
async def test_a_relay_filter_says_who_hears_of_other_authors_blobs() -> None:
    # 1 - 2, and 2 - 3, 2 - 4: peer 2 relays 1's blob to 3 only, until the filter is lifted.
    edges = [(1, 2), (2, 3), (2, 4)]
    async with MemoryNetwork() as net, swarm_graph(net, 4, edges) as nodes:
        m, pieces = random_blob(1, 40_000, 4)
        relay, c, d = nodes[2].swarm, nodes[3].swarm, nodes[4].swarm
        relay.set_relay(lambda _m: {3})
        own, own_pieces = random_blob(2, 4_000, 2)
        relay.publish(own, own_pieces)  # its own blobs go to everyone
        nodes[1].swarm.publish(m, pieces)
        assert await c.wait_for(lambda: m.blob_id in c.blobs and c.blobs[m.blob_id].complete, 5)
        assert await d.wait_for(lambda: own.blob_id in d.blobs and d.blobs[own.blob_id].complete, 5)
        await asyncio.sleep(0.2)
        assert m.blob_id not in d.sessions[2].their_handle  # never announced to 4
        assert m.blob_id not in relay.sessions[4].our_handle
        relay.set_relay(None)  # what it newly admits is announced now
        assert await d.wait_for(lambda: m.blob_id in d.blobs and d.blobs[m.blob_id].complete, 5)
        assert d.blobs[m.blob_id].pieces == pieces
