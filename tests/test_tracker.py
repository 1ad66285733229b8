"""The tracker: registration, deadlines, refusals, membership events."""

from __future__ import annotations

import asyncio

import pytest

from fltorrent.errors import TrackerError
from fltorrent.net import MemoryNetwork
from fltorrent.tracker import TopologySpec, Tracker, TrackerClient
from tests.aio import aio


async def _client(net: MemoryNetwork, address: tuple[str, int]) -> TrackerClient:
    return await TrackerClient.connect(net, address, timeout=1)


@aio()
async def test_registration_welcome_topology_and_left_events() -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(
            federation="f", client_num=3, config={"x": 1}, topology=TopologySpec(kind="ring")
        )
        address = await tracker.start(net, "tracker", 0)
        clients = [await _client(net, address) for _ in range(3)]
        welcomes = await asyncio.gather(
            *(
                c.register(federation="f", peer_id=None, host="h", port=1000 + i, timeout=2)
                for i, c in enumerate(clients)
            )
        )
        assert sorted(w.peer_id for w in welcomes) == [1, 2, 3]
        w = welcomes[0]
        assert w.config == {"x": 1} and w.federation == "f"
        assert set(w.members) == {1, 2, 3}
        assert len(w.neighbours) == 2  # a ring of three
        await tracker.wait_full()
        heard = asyncio.Event()
        clients[0].on_left = lambda _pid: heard.set()
        listeners = [asyncio.create_task(c.listen()) for c in clients]
        await clients[2].aclose()  # a peer dies
        gone = welcomes[2].peer_id
        async with asyncio.timeout(2):
            await heard.wait()
        assert clients[0].left == {gone}
        assert tracker.members[gone].phase == "failed"
        for c in clients[:2]:
            await c.aclose()
        await asyncio.gather(*listeners)
        await tracker.aclose()


@aio()
async def test_full_federation_and_wrong_federation_are_refused() -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(federation="f", client_num=1)
        address = await tracker.start(net, "tracker", 0)
        first = await _client(net, address)
        await first.register(federation=None, peer_id=1, host="h", port=1, timeout=2)
        late = await _client(net, address)
        with pytest.raises(TrackerError, match="full"):
            await late.register(federation="f", peer_id=None, host="h", port=2, timeout=2)
        other = await _client(net, address)
        with pytest.raises(TrackerError, match="federation 'g' is not 'f'"):
            await other.register(federation="g", peer_id=None, host="h", port=3, timeout=2)
        await first.aclose()
        await tracker.aclose()


@aio()
async def test_waits_have_deadlines() -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(federation="f", client_num=2, registration_timeout=0.2)
        address = await tracker.start(net, "tracker", 0)
        lonely = await _client(net, address)
        with pytest.raises(TrackerError, match="no welcome"):
            await lonely.register(federation="f", peer_id=None, host="h", port=1, timeout=0.3)
        with pytest.raises(TrackerError, match="only 1 of 2 peers registered"):
            await tracker.wait_full()
        await lonely.aclose()
        with pytest.raises(TrackerError, match="cannot reach the tracker"):
            await TrackerClient.connect(net, ("nowhere", 1), timeout=0.2)
        await tracker.aclose()
