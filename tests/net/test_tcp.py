"""TCP transport: close semantics under cancellation, errors."""

from __future__ import annotations

import asyncio

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
