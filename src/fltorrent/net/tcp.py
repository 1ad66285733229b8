"""asyncio TCP transport."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence

from fltorrent.errors import BrokenResourceError, ClosedResourceError, ConnectError
from fltorrent.net.base import Address, Connection, ConnectionHandler

log = logging.getLogger(__name__)

# Large enough for a few pipelined blocks, small enough that backpressure reaches the sender.
WRITE_HIGH_WATER = 1 << 20
READ_LIMIT = 1 << 20

_BROKEN = (ConnectionError, OSError)


class TcpConnection:
    """A :class:`~fltorrent.net.base.Connection` over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._closed = False
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Control messages are tiny and latency-bound; do not let Nagle hold them back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = writer.get_extra_info("peername")
        self._remote: Address = (str(peer[0]), int(peer[1])) if peer else ("?", 0)

    @property
    def remote_address(self) -> Address:
        return self._remote

    async def send(self, data: bytes) -> None:
        await self.send_all((data,))

    async def send_all(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        if self._closed:
            raise ClosedResourceError("connection closed")
        if self._writer.is_closing():
            raise BrokenResourceError("connection is closing")
        try:
            # One write per buffer: on Python 3.11 writelines() joins them first, an extra copy
            # of every block sent.
            for buf in buffers:
                self._writer.write(buf)
            await self._writer.drain()
        except _BROKEN as exc:
            raise BrokenResourceError(f"send failed: {exc}") from exc

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise ClosedResourceError("connection closed")
        try:
            return await self._reader.read(max_bytes)
        except _BROKEN as exc:
            raise BrokenResourceError(f"receive failed: {exc}") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        # A peer that stopped reading must not hold our close up for long.
        # (asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation.)
        with contextlib.suppress(TimeoutError, *_BROKEN):
            async with asyncio.timeout(2.0):
                await self._writer.wait_closed()


class TcpListener:
    """A bound TCP server; each accepted connection runs ``handler`` in its own task."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        sockname = server.sockets[0].getsockname()
        self._address: Address = (str(sockname[0]), int(sockname[1]))

    @property
    def address(self) -> Address:
        return self._address

    async def aclose(self) -> None:
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._server.wait_closed()


class TcpTransport:
    """Listens and connects over real TCP sockets."""

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> TcpListener:
        async def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = TcpConnection(reader, writer)
            try:
                await handler(conn)
            except asyncio.CancelledError:
                # This task belongs to asyncio.Server, not to us; on Python 3.11 a cancelled
                # handler task makes asyncio log a spurious error, so end it normally.
                pass
            finally:
                await conn.aclose()

        try:
            server = await asyncio.start_server(on_accept, host, port, limit=READ_LIMIT)
        except OSError as exc:
            raise ConnectError(f"cannot listen on {host}:{port}: {exc}") from exc
        return TcpListener(server)

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
        except TimeoutError as exc:
            raise ConnectError(f"connect to {host}:{port} timed out after {timeout}s") from exc
        except OSError as exc:
            raise ConnectError(f"connect to {host}:{port} failed: {exc}") from exc
        return TcpConnection(reader, writer)
