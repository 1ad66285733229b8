"""TCP transport: close semantics under cancellation, errors."""

from __future__ import annotations

import asyncio
import os

import pytest

from fltorrent.errors import BrokenResourceError, ClosedResourceError, ConnectError
from fltorrent.net import TcpTransport
from fltorrent.net import tcp as tcp_module
from fltorrent.net.base import Connection
from tests.aio import aio


@aio()
async def test_close_during_cancellation_keeps_the_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A connection whose peer never reads cannot flush, so close() waits until the close
    # timeout. If that wait runs in the `finally` of a task being cancelled, the task must
    # still end cancelled (on Python 3.11 an asyncio.timeout there swallowed it, and a loop
    # that should have stopped kept going).
    monkeypatch.setattr(tcp_module, "CLOSE_TIMEOUT", 0.2)
    accepted: asyncio.Queue[Connection] = asyncio.Queue()

    async def hold(conn: Connection) -> None:
        await accepted.put(conn)
        await asyncio.sleep(30)  # never reads

    transport = TcpTransport()
    listener = await transport.listen("127.0.0.1", 0, hold)
    conn = await transport.connect(*listener.address, timeout=2)
    await accepted.get()
    went_on = False

    async def user() -> None:
        nonlocal went_on
        try:
            await conn.send_all([b"x" * (32 << 20)])  # blocks: nobody reads
        finally:
            await conn.aclose()
        went_on = True

    task = asyncio.create_task(user())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on
    await listener.aclose()


@aio()
async def test_errors_are_typed() -> None:
    transport = TcpTransport()
    with pytest.raises(ConnectError, match="failed"):
        await transport.connect("127.0.0.1", 1, timeout=1)

    async def close_at_once(conn: Connection) -> None:
        await conn.aclose()

    listener = await transport.listen("127.0.0.1", 0, close_at_once)
    conn = await transport.connect(*listener.address, timeout=2)
    assert await conn.receive() == b""  # the other side closed: end of stream
    with pytest.raises(BrokenResourceError):
        for _ in range(100):  # the reset may take a write or two to surface
            await conn.send(b"y" * 65536)
    await conn.aclose()
    with pytest.raises(ClosedResourceError):
        await conn.receive()
    await listener.aclose()


@aio(timeout=60)
async def test_send_all_is_vectored_and_keeps_every_byte_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Several buffers go out in one writev when nothing is queued; what the socket does not
    # take is queued by the transport, and a send_all made while bytes are still queued goes
    # behind them, even when the socket has room again by then.
    calls: list[int] = []
    real_writev = os.writev

    def counting_writev(fd: int, buffers: list[bytes]) -> int:
        n = real_writev(fd, buffers)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "writev", counting_writev)  # tcp.py calls os.writev
    got = bytearray()
    total = 0
    reading = asyncio.Event()
    draining = asyncio.Event()  # the reader took 1 MiB: the socket has room again
    done = asyncio.Event()

    async def slow_reader(conn: Connection) -> None:
        await reading.wait()
        while len(got) < total:
            data = await conn.receive(16384)
            if not data:
                break
            got.extend(data)
            if len(got) >= 1 << 20:
                draining.set()
            await asyncio.sleep(0.0005)  # slower than the sender: its transport keeps a queue
        done.set()

    transport = TcpTransport()
    listener = await transport.listen("127.0.0.1", 0, slow_reader)
    conn = await transport.connect(*listener.address, timeout=2)
    assert isinstance(conn, tcp_module.TcpConnection)
    big = bytes(range(256)) * (16 << 12)  # 16 MiB
    first: list[bytes | bytearray | memoryview] = [b"head-1", big, bytearray(b"tail-1")]
    later: list[bytes | bytearray | memoryview] = [memoryview(big)[5:1000], b"x" * 7000, b"z"]
    expected = b"".join(bytes(b) for b in [*first, *later])
    total = len(expected)
    sending = asyncio.create_task(conn.send_all(first))
    await asyncio.sleep(0.05)
    assert calls and 0 < calls[0] < len(big)  # vectored, and the socket took only part
    reading.set()
    await draining.wait()
    assert conn._transport.get_write_buffer_size() > 0  # ... while bytes are still queued
    await conn.send_all(later)
    await sending
    await asyncio.wait_for(done.wait(), 30)
    assert bytes(got) == expected
    await conn.aclose()
    await listener.aclose()


@aio()
async def test_send_all_to_a_closed_peer_raises_broken() -> None:
    async def close_at_once(conn: Connection) -> None:
        await conn.aclose()

    transport = TcpTransport()
    listener = await transport.listen("127.0.0.1", 0, close_at_once)
    conn = await transport.connect(*listener.address, timeout=2)
    assert await conn.receive() == b""
    with pytest.raises(BrokenResourceError):
        for _ in range(100):  # the reset may take a write or two to surface
            await conn.send_all([b"h" * 13, b"y" * 65536])
    await conn.aclose()
    await listener.aclose()
