"""The tracker: registration, deadlines, refusals, membership events."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from fltorrent.control import Link, Progress, Register, Skip, Welcome
from fltorrent.errors import ConnectError, TrackerError
from fltorrent.net import MemoryNetwork, TcpTransport
from fltorrent.net.base import Connection
from fltorrent.tracker import TopologySpec, Tracker
from fltorrent.tracker_client import TrackerClient
from tests.aio import aio


def _alive(tracker: Tracker, peer_id: int) -> bool:
    return tracker.members[peer_id].alive


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


@aio()
async def test_skips_are_relayed_and_a_crashed_member_may_rejoin() -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(federation="f", client_num=3, topology=TopologySpec(kind="full"))
        address = await tracker.start(net, "tracker", 0)
        clients = [await _client(net, address) for _ in range(3)]
        await asyncio.gather(
            *(
                c.register(federation="f", peer_id=i + 1, host="h", port=1000 + i, timeout=2)
                for i, c in enumerate(clients)
            )
        )
        skipped: list[tuple[int, int]] = []
        joined: list[tuple[int, tuple[str, int], int]] = []
        got = asyncio.Event()

        def on_skipped(pid: int, rnd: int) -> None:
            skipped.append((pid, rnd))
            got.set()

        def on_joined(pid: int, addr: tuple[str, int], first: int, _token: str) -> None:
            joined.append((pid, addr, first))
            got.set()

        clients[0].on_skipped = on_skipped
        clients[0].on_joined = on_joined
        listeners = [asyncio.create_task(c.listen()) for c in clients[:2]]
        await clients[1].progress(Skip(round=2))
        async with asyncio.timeout(2):
            await got.wait()
        assert skipped == [(2, 2)]
        # Peer 3 reports round 4, peer 2 dies; peer 2 registers again from a new port.
        await clients[2].progress(Progress(round=4, phase="training"))
        await clients[1].aclose()
        await asyncio.sleep(0.05)
        assert not tracker.members[2].alive
        got.clear()
        again = await _client(net, address)
        welcome = await again.register(federation="f", peer_id=2, host="h", port=2002, timeout=2)
        assert welcome.round == 4 and welcome.members[2] == ("h", 2002)
        assert welcome.departed == [] and sorted(welcome.neighbours) == [1, 3]
        async with asyncio.timeout(2):
            await got.wait()
        assert joined == [(2, ("h", 2002), 4)]
        assert _alive(tracker, 2)  # a call: mypy keeps the earlier `not alive` otherwise
        # A live id cannot be taken over.
        thief = await _client(net, address)
        with pytest.raises(TrackerError, match="taken"):
            await thief.register(federation="f", peer_id=2, host="h", port=9, timeout=2)
        for c in (clients[0], clients[2], again, thief):
            await c.aclose()
        await asyncio.gather(*listeners)
        await tracker.aclose()


@aio()
async def test_overlay_keeps_its_degree_after_departures() -> None:
    async with MemoryNetwork() as net:
        # A ring 1-2-3-4-5-6-1 losing 2, then 5.
        tracker = Tracker(federation="f", client_num=6, topology=TopologySpec(kind="ring"))
        address = await tracker.start(net, "tracker", 0)
        clients = [await _client(net, address) for _ in range(6)]
        welcomes = await asyncio.gather(
            *(
                c.register(federation="f", peer_id=i + 1, host="h", port=1000 + i, timeout=2)
                for i, c in enumerate(clients)
            )
        )
        assert sorted(welcomes[0].neighbours) == [2, 6]
        links: dict[int, list[tuple[int, tuple[str, int]]]] = {i: [] for i in range(1, 7)}
        for i, c in enumerate(clients, start=1):
            c.on_link = lambda other, addr, me=i: links[me].append((other, addr))
        listeners = [asyncio.create_task(c.listen()) for c in clients]
        await clients[1].aclose()  # peer 2: 1 and 3 are down to one neighbour: linked
        await asyncio.sleep(0.05)
        new = {(me, other) for me, got in links.items() for other, _ in got}
        assert new == {(1, 3), (3, 1)}
        assert links[1] == [(3, ("h", 1002))]
        await clients[4].aclose()  # peer 5: 4 and 6 are down to one: linked, a ring again
        await asyncio.sleep(0.05)
        new = {(me, other) for me, got in links.items() for other, _ in got}
        assert new == {(1, 3), (3, 1), (4, 6), (6, 4)}
        for i in (0, 2, 3, 5):
            await clients[i].aclose()
        await asyncio.gather(*listeners)
        await tracker.aclose()


def test_repair_edges_restores_degree_and_connectivity() -> None:
    from fltorrent.topology import build_topology, repair_edges

    g = build_topology("mesh", 20, connections=3, seed=0)
    target = dict(g.degree())
    dead = {1, 5, 6, 9, 11, 13}  # splits this mesh into two parts, one a chain
    live = [p for p in g if p not in dead]
    fast = {2, 4, 7}
    added = repair_edges(g, live, target, prefer=lambda p: 1.0 if p in fast else 0.0)
    h = g.subgraph(live)
    import networkx as nx

    assert nx.is_connected(h)
    assert all(h.degree(p) >= min(target[p], len(live) - 1) for p in live)
    assert len(added) <= len(live)  # no more than needed: about one per lost degree
    # Deterministic.
    g2 = build_topology("mesh", 20, connections=3, seed=0)
    assert repair_edges(g2, live, target, prefer=lambda p: 1.0 if p in fast else 0.0) == added


@aio()
async def test_a_rejoining_peer_whose_neighbours_died_gets_new_links() -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(federation="f", client_num=6, topology=TopologySpec(kind="ring"))
        address = await tracker.start(net, "tracker", 0)
        clients = [await _client(net, address) for _ in range(6)]
        await asyncio.gather(
            *(
                c.register(federation="f", peer_id=i + 1, host="h", port=1000 + i, timeout=2)
                for i, c in enumerate(clients)
            )
        )
        listeners = [asyncio.create_task(c.listen()) for c in clients]
        for i in (2, 1, 3):  # peers 3, 2 and 4 die: 3's both ring neighbours are gone
            await clients[i].aclose()
            await asyncio.sleep(0.05)
        links: list[int] = []
        again = await _client(net, address)
        again.on_link = lambda other, _addr: links.append(other)
        welcome = await again.register(federation="f", peer_id=3, host="h", port=3003, timeout=2)
        assert welcome.neighbours == []  # its old neighbours 2 and 4 are dead
        task = asyncio.create_task(again.listen())
        await asyncio.sleep(0.05)
        assert len(links) == 2 and set(links) <= {1, 5, 6}
        for c in (clients[0], clients[4], clients[5], again):
            await c.aclose()
        await asyncio.gather(*listeners, task)
        await tracker.aclose()


BAD_HOSTS = ["..", "a..b", "a" * 254, "x" * 64 + ".example", "a\x00b", "-x", "a b", ""]


async def _dropped_after_hello(conn: Connection) -> bool:
    """Whether the tracker closed ``conn`` having sent nothing but its hello."""
    data = b""
    async with asyncio.timeout(2):
        while chunk := await conn.receive():
            data += chunk
    return [json.loads(line)["type"] for line in data.splitlines()] == ["hello"]


@aio()
@pytest.mark.parametrize("host", BAD_HOSTS)
async def test_a_registration_with_a_bad_host_is_refused_and_the_tracker_carries_on(
    host: str,
) -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(federation="f", client_num=1)
        address = await tracker.start(net, "tracker", 0)
        raw = await net.connect(*address, timeout=1)
        await raw.send(json.dumps({"type": "register", "host": host, "port": 5}).encode() + b"\n")
        assert await _dropped_after_hello(raw)  # no welcome
        good = await _client(net, address)
        welcome = await good.register(
            federation=None, peer_id=None, host="peer-1.example", port=1, timeout=2
        )
        assert welcome.members == {1: ("peer-1.example", 1)}
        await good.aclose()
        await raw.aclose()
        await tracker.aclose()


@pytest.mark.parametrize("host", BAD_HOSTS)
def test_peers_refuse_bad_hosts_from_the_tracker_too(host: str) -> None:
    with pytest.raises(ValidationError, match="host name"):
        Link(peer_id=2, host=host, port=1)
    with pytest.raises(ValidationError, match="host name"):
        Welcome(federation="f", peer_id=1, members={1: (host, 1)}, neighbours=[], config={})
    for good in ("127.0.0.1", "::1", "localhost", "peer-1.example.org."):
        assert Register(host=good, port=1).host == good


@aio()
async def test_dialing_a_name_that_cannot_be_encoded_is_a_connect_error() -> None:
    # Before: the UnicodeError escaped the swarm's dial loop and ended the peer.
    with pytest.raises(ConnectError, match="'\\.\\.'"):
        await TcpTransport().connect("..", 1, timeout=1)


@aio()
async def test_half_open_lines_and_connection_floods_are_bounded() -> None:
    async with MemoryNetwork() as net:
        tracker = Tracker(federation="f", client_num=1, max_connections=3)
        address = await tracker.start(net, "tracker", 0)
        long_line = await net.connect(*address, timeout=1)
        await long_line.send(b"x" * (65 * 1024))  # no newline, over the 64 KiB a peer may send
        assert await _dropped_after_hello(long_line)
        idle = [await net.connect(*address, timeout=1) for _ in range(3)]
        for conn in idle:
            await conn.send(b'{"type": "reg')  # half a line, then nothing
        extra = await net.connect(*address, timeout=1)
        assert await asyncio.wait_for(extra.receive(), 2) == b""  # over the limit: no hello
        assert tracker.refused_connections == 1
        await idle[0].aclose()  # a slot frees up: a real peer gets in
        await asyncio.sleep(0.05)
        good = await _client(net, address)
        welcome = await good.register(federation=None, peer_id=None, host="h", port=1, timeout=2)
        assert welcome.peer_id == 1
        for conn in [*idle[1:], extra, long_line]:
            await conn.aclose()
        await good.aclose()
        await tracker.aclose()


@aio()
async def test_peers_waiting_for_a_federation_that_cannot_form_are_told_why() -> None:
    loop = asyncio.get_running_loop()
    async with MemoryNetwork() as net, Tracker("f", 3, registration_timeout=0.3) as tracker:
        full = asyncio.create_task(tracker.wait_full())
        waiting = await _client(net, await tracker.start(net, "tracker", 0))
        start = loop.time()
        with pytest.raises(TrackerError, match=r"did not form: only 1 of 3 peers registered"):
            await waiting.register(federation=None, peer_id=None, host="h", port=1, timeout=30)
        assert loop.time() - start < 5  # told at the tracker's deadline, not its own
        with pytest.raises(TrackerError, match="did not form"):
            await full
        await waiting.aclose()
