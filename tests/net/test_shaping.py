"""Link emulation: rates, latency, jitter order, loss and sharing, in virtual and real time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from fltorrent.net import MemoryNetwork, TcpTransport
from fltorrent.net.base import Connection, Transport
from fltorrent.net.clock import run_virtual
from fltorrent.net.shaping import LinkProfile, PeerLink, ShapedTransport
from tests.aio import aio

MB = 1_000_000


@contextlib.asynccontextmanager
async def pair(
    inner_a: Transport, inner_b: Transport, a: LinkProfile, b: LinkProfile, *, seed: int = 0
) -> AsyncIterator[tuple[ShapedTransport, int, asyncio.Queue[Connection]]]:
    """Two shaped peers: ``a``'s transport, ``b``'s port, and the connections ``b`` accepts."""
    accepted: asyncio.Queue[Connection] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(conn: Connection) -> None:
        await accepted.put(conn)
        await done.wait()

    async with (
        ShapedTransport(inner_a, PeerLink(a, seed=seed)) as ta,
        ShapedTransport(inner_b, PeerLink(b, seed=seed + 1)) as tb,
    ):
        listener = await tb.listen("127.0.0.1", 0, handler)
        try:
            yield ta, listener.address[1], accepted
        finally:
            done.set()
            await listener.aclose()


async def drain(conn: Connection, size: int) -> float:
    """Read ``size`` bytes; the loop time when the last one arrived."""
    got = 0
    while got < size:
        data = await conn.receive(1 << 20)
        assert data, "stream ended early"
        got += len(data)
    return asyncio.get_running_loop().time()


async def transfer(
    a: LinkProfile, b: LinkProfile, size: int, *, seed: int = 0
) -> tuple[float, ShapedTransport]:
    """Seconds to move ``size`` bytes from a peer with link ``a`` to one with link ``b``."""
    async with MemoryNetwork() as net, pair(net, net, a, b, seed=seed) as (ta, port, acc):
        client = await ta.connect("127.0.0.1", port, timeout=5)
        server = await acc.get()
        t0 = asyncio.get_running_loop().time()
        sender = asyncio.ensure_future(client.send(bytes(size)))
        t1 = await drain(server, size)
        await sender
        await client.aclose()
        return t1 - t0, ta


@aio(virtual=True, timeout=3600)
async def test_upload_rate_is_the_set_rate() -> None:
    up = LinkProfile.from_mbit(10, None)
    seconds, _ = await transfer(up, LinkProfile(), 5 * MB)
    assert 5 * MB * 8 / seconds == pytest.approx(10e6, rel=0.01)


@pytest.mark.parametrize("mbit", [0.128, 0.3])
@aio(virtual=True, timeout=3600)
async def test_a_slow_uplink_shapes_bulk_data_cut_into_one_packet_segments(mbit: float) -> None:
    # Below ~0.6 Mbit/s a 20 ms segment is one packet; bulk data must still wait for the link
    # (it once skipped the bucket like a lone request, leaving IoT uploads unshaped).
    seconds, _ = await transfer(LinkProfile.from_mbit(mbit, None), LinkProfile(), 64_000)
    assert 64_000 * 8 / seconds == pytest.approx(mbit * 1e6, rel=0.05)


@aio(virtual=True, timeout=3600)
async def test_download_rate_is_the_set_rate() -> None:
    seconds, _ = await transfer(LinkProfile(), LinkProfile.from_mbit(None, 4), 2 * MB)
    assert 2 * MB * 8 / seconds == pytest.approx(4e6, rel=0.01)


@aio(virtual=True, timeout=3600)
async def test_the_slower_end_sets_the_rate_and_latency_adds_once() -> None:
    a = LinkProfile.from_mbit(8, 100, latency_ms=150)
    b = LinkProfile.from_mbit(100, 2)
    seconds, _ = await transfer(a, b, MB)
    assert seconds == pytest.approx(MB * 8 / 2e6 + 0.150, rel=0.02)


@aio(virtual=True, timeout=3600)
async def test_a_small_message_arrives_after_the_latency() -> None:
    seconds, _ = await transfer(LinkProfile.from_mbit(100, 100, latency_ms=300), LinkProfile(), 10)
    assert seconds == pytest.approx(0.300, abs=1e-3)


@aio(virtual=True, timeout=3600)
async def test_jitter_never_reorders_a_stream() -> None:
    profile = LinkProfile.from_mbit(1, None, latency_ms=50, jitter_ms=400)
    async with MemoryNetwork() as net, pair(net, net, profile, LinkProfile()) as (ta, port, acc):
        client = await ta.connect("127.0.0.1", port, timeout=5)
        server = await acc.get()
        payload = bytes(range(256)) * 2000
        sender = asyncio.ensure_future(client.send(payload))
        got = bytearray()
        while len(got) < len(payload):
            got += await server.receive(65536)
        await sender
        assert bytes(got) == payload


def test_loss_costs_time_and_resent_bytes_but_no_data() -> None:
    clean = LinkProfile.from_mbit(1, None, latency_ms=100)
    lossy = LinkProfile.from_mbit(1, None, latency_ms=100, loss=0.05)
    base = run_virtual(transfer(clean, LinkProfile(), MB))[0]
    resent = []
    for seed in range(10):
        seconds, ta = run_virtual(transfer(lossy, LinkProfile(), MB, seed=seed))
        resent.append(ta.link.retransmitted_bytes)
        # The resent bytes take uplink time again; fast retransmits add round trips.
        assert seconds > base + ta.link.retransmitted_bytes * 8 / 1e6
    assert sum(resent) / len(resent) == pytest.approx(0.05 * MB, rel=0.15)


def test_same_seed_same_lossy_timing() -> None:
    lossy = LinkProfile.from_mbit(2, None, latency_ms=80, jitter_ms=30, loss=0.02)

    def run(seed: int) -> float:
        return run_virtual(transfer(lossy, LinkProfile(), 500_000, seed=seed))[0]

    assert run(7) == run(7)
    assert run(8) != run(7)


@aio(virtual=True, timeout=3600)
async def test_connections_share_an_uplink_fairly() -> None:
    up = LinkProfile.from_mbit(8, None)
    async with (
        MemoryNetwork() as net,
        pair(net, net, up, LinkProfile()) as (ta, port, acc),
    ):
        c1 = await ta.connect("127.0.0.1", port, timeout=5)
        s1 = await acc.get()
        c2 = await ta.connect("127.0.0.1", port, timeout=5)
        s2 = await acc.get()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        senders = [asyncio.ensure_future(c.send(bytes(MB))) for c in (c1, c2)]
        ends = await asyncio.gather(drain(s1, MB), drain(s2, MB))
        await asyncio.gather(*senders)
        # Together they used the whole uplink, and each got about half of it.
        assert max(ends) - t0 == pytest.approx(2 * MB * 8 / 8e6, rel=0.02)
        assert min(ends) - t0 > 0.9 * (max(ends) - t0)


@pytest.mark.slow
@aio(timeout=60)
async def test_real_tcp_rate_within_five_percent() -> None:
    """The same shaper on loopback TCP in real time: measured rate within 5 % of the set one."""
    rate = 16e6
    size = 3 * MB
    up = LinkProfile(up_bps=rate, latency_s=0.01)
    async with pair(TcpTransport(), TcpTransport(), up, LinkProfile()) as (ta, port, acc):
        client = await ta.connect("127.0.0.1", port, timeout=5)
        server = await acc.get()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sender = asyncio.ensure_future(client.send(bytes(size)))
        t1 = await drain(server, size)
        await sender
        await client.aclose()
    measured = size * 8 / (t1 - t0 - 0.01)
    assert measured == pytest.approx(rate, rel=0.05)
