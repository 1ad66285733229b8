"""Initial seeding and upload slots, on shaped links in virtual time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from fltorrent.net import MemoryNetwork
from fltorrent.net.shaping import LinkProfile, PeerLink, ShapedTransport
from fltorrent.swarm import Swarm, SwarmOptions
from fltorrent.swarm.slots import UploadSlots
from tests.aio import aio
from tests.swarm.helpers import FED, random_blob, swarm_graph, wait_all

MB = 1_000_000


def _all_connected(swarm: Swarm, count: int) -> Callable[[], bool]:
    return lambda: len(swarm.sessions) == count


async def broadcast(n: int, *, super_seeding: bool) -> tuple[float, int]:
    """Peer 1 seeds 1 MB (50 pieces) to n-1 others over 8 Mbit/s links, full mesh.

    Returns (seconds until the last peer holds it, payload bytes the seed uploaded)."""
    link = LinkProfile.from_mbit(8, 32, latency_ms=5)
    edges = [(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1)]
    opts = SwarmOptions(federation=FED, peer_id=0, super_seeding=super_seeding, upload_slots=4)
    async with MemoryNetwork() as net, contextlib.AsyncExitStack() as stack:
        shaped = {
            p: await stack.enter_async_context(ShapedTransport(net, PeerLink(link, seed=p)))
            for p in range(1, n + 1)
        }
        async with swarm_graph(shaped, n, edges, options=opts) as nodes:
            for node in nodes.values():
                assert await node.swarm.wait_for(_all_connected(node.swarm, n - 1), 5)
            manifest, chunks = random_blob(1, MB, 50)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            nodes[1].swarm.publish(manifest, chunks)
            await wait_all(nodes, 1, timeout=120)
            return loop.time() - t0, nodes[1].swarm.counters.payload_up


@aio(virtual=True, timeout=600)
async def test_initial_seeding_sends_each_piece_about_once() -> None:
    plain_s, plain_up = await broadcast(10, super_seeding=False)
    seeded_s, seeded_up = await broadcast(10, super_seeding=True)
    # Shown every piece, the nine neighbours ask the seed for the same pieces: it sent 5.6x
    # the blob and the broadcast took 5.6 s. Shown one piece each, they relay to each other.
    assert plain_up > 3 * MB and plain_s > 3.0
    assert MB <= seeded_up < 2 * MB
    # The seed's uplink alone needs 1 s for the blob (8 Mbit/s); relaying covers the rest.
    assert seeded_s < 1.6


@aio(virtual=True, timeout=120)
async def test_initial_seeding_shows_the_most_important_pieces_first() -> None:
    n = 6
    link = LinkProfile.from_mbit(8, 32, latency_ms=5)
    edges = [(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1)]
    opts = SwarmOptions(federation=FED, peer_id=0, super_seeding=True, seed_concurrent=4)
    async with MemoryNetwork() as net, contextlib.AsyncExitStack() as stack:
        shaped = {
            p: await stack.enter_async_context(ShapedTransport(net, PeerLink(link, seed=p)))
            for p in range(1, n + 1)
        }
        async with swarm_graph(shaped, n, edges, options=opts) as nodes:
            for node in nodes.values():
                assert await node.swarm.wait_for(_all_connected(node.swarm, n - 1), 5)
            manifest, chunks = random_blob(1, MB, 50)  # importance = piece index
            nodes[1].swarm.publish(manifest, chunks)
            first_seen: list[int] = []
            while len(first_seen) < 50:
                for p in range(2, n + 1):
                    blob = nodes[p].swarm.blobs.get(manifest.blob_id)
                    if blob is None:
                        continue
                    for i, data in enumerate(blob.pieces):
                        if data is not None and i not in first_seen:
                            first_seen.append(i)
                await asyncio.sleep(0.005)
    # Four pieces out at a time: the first eight to arrive anywhere were shown before any
    # piece below the top level (pieces 37-49: fewer than 1/4 score higher) was, so they are
    # all top-level ones.
    assert all(i >= 37 for i in first_seen[:8]), first_seen[:12]
    assert sorted(first_seen) == list(range(50))


class _Who:
    def __init__(self, queued: int = 1) -> None:
        self.queued = queued
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1

    def has_uploads(self) -> bool:
        return self.queued > 0


def test_slots_limit_concurrent_uploaders_and_rotate() -> None:
    slots = UploadSlots(2, quantum=100)
    a, b, c = _Who(), _Who(), _Who()
    assert slots.may_send(a) and slots.may_send(b)
    assert not slots.may_send(c)  # both slots taken: c waits its turn
    assert slots.budget(a) == 100
    slots.sent(a, 60)
    assert slots.may_send(a) and slots.budget(a) == 40  # still its turn
    slots.sent(a, 50)  # past the quantum with c waiting: a goes to the back of the line
    assert c.woken == 1 and slots.may_send(c)
    assert not slots.may_send(a)
    b.queued = 0
    slots.sent(b, 10)  # b has nothing more to send: its slot goes to a
    assert a.woken == 1 and slots.may_send(a)


def test_slots_free_when_an_uploader_leaves() -> None:
    slots = UploadSlots(1, quantum=100)
    a, b = _Who(), _Who()
    assert slots.may_send(a) and not slots.may_send(b)
    slots.forget(a)
    assert b.woken == 1 and slots.may_send(b)


def test_zero_slots_serve_everyone() -> None:
    slots = UploadSlots(0, quantum=100)
    assert all(slots.may_send(_Who()) for _ in range(50))


def test_a_turn_ends_when_nothing_is_left_to_send() -> None:
    slots = UploadSlots(1, quantum=100)
    a, b = _Who(), _Who()
    assert slots.may_send(a) and not slots.may_send(b)
    a.queued = 0  # e.g. the neighbour cancelled everything it had asked for
    slots.sent(a, 0)
    assert b.woken == 1 and slots.may_send(b)
