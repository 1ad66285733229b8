"""asyncio TCP transport, on a small protocol class of its own.

asyncio's StreamReader copies every received byte twice (into its buffer, then out of it);
here the bytes objects that the event loop reads from the socket are handed over as they are.
Flow control is the usual one: reading pauses when unread bytes exceed ``READ_HIGH_WATER``,
writers wait while the transport's buffer is above ``WRITE_HIGH_WATER``. Several buffers sent
together leave in one ``writev`` (a block header and its data, a run of small blocks) when the
transport has nothing queued; whatever the socket does not take is queued by the transport.

With TLS (``TcpTransport(tls=...)``, contexts from :mod:`fltorrent.security.tls`) asyncio's
TLS layer sits between the socket and this protocol: the vectored write then goes through the
transport (writing to the file descriptor would bypass the encryption), the handshake must end
within ``handshake_timeout``, and :attr:`TcpConnection.peer_certificate` is the certificate the
other side proved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections import deque
from collections.abc import Callable, Sequence

from fltorrent.errors import BrokenResourceError, ClosedResourceError, ConnectError
from fltorrent.net.base import Address, Connection, ConnectionHandler

WRITE_HIGH_WATER = 1 << 20
READ_HIGH_WATER = 4 << 20
RECV_SIZE = 1 << 20
CLOSE_TIMEOUT = 2.0
_IOV_MAX = 512  # buffers per writev (Linux allows 1024)

_BROKEN = (ConnectionError, OSError)


class _StreamProtocol(asyncio.Protocol):
    """Buffers received chunks without copying; tracks write flow control."""

    def __init__(self, on_made: Callable[[_StreamProtocol], None] | None = None) -> None:
        # Called once the connection is usable (after the TLS handshake, if any): a connection
        # whose handshake fails never gets this call, and so costs no task.
        self._on_made = on_made
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.unread = 0
        self.eof = False
        self.error: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._drainers: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._read_paused = False
        loop = asyncio.get_running_loop()
        self.made: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    # asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Control messages are tiny and latency-bound; do not let Nagle hold them back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        # Read up to 1 MiB per recv (asyncio's default is 256 KiB): fewer wake-ups, and fewer
        # large frames straddling two reads (which costs a copy to join them).
        if hasattr(transport, "max_size"):
            transport.max_size = RECV_SIZE
        self.made.set_result(None)
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.unread += len(data)
        if self.unread > READ_HIGH_WATER and not self._read_paused and self.transport:
            self.transport.pause_reading()
            self._read_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for fut in self._drainers:
            if not fut.done():
                fut.set_result(None)
        self._drainers.clear()

    # used by TcpConnection --------------------------------------------------------
    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def read(self, max_bytes: int) -> bytes:
        while not self.chunks:
            if self.eof:
                if self.error is not None:
                    raise BrokenResourceError(f"receive failed: {self.error}")
                return b""
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        data = self.chunks.popleft()
        if len(data) > max_bytes:
            self.chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self.unread -= len(data)
        if self._read_paused and self.unread <= READ_HIGH_WATER // 2 and self.transport:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def drain(self) -> None:
        if self.transport is None or self.transport.is_closing():
            raise BrokenResourceError("connection is closed")
        if self._write_paused:
            fut = asyncio.get_running_loop().create_future()
            self._drainers.append(fut)
            await fut
            if self.transport.is_closing():
                raise BrokenResourceError(f"connection lost: {self.error}")


class TcpConnection:
    """A :class:`~fltorrent.net.base.Connection` over one TCP socket."""

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        peer = transport.get_extra_info("peername")
        self._remote: Address = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
        sock = transport.get_extra_info("socket")
        self._ssl: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        # The vectored fast path writes to the socket itself: plaintext only.
        plain = self._ssl is None and hasattr(os, "writev")
        self._fd = sock.fileno() if sock is not None and plain else -1

    @property
    def remote_address(self) -> Address:
        return self._remote

    @property
    def peer_certificate(self) -> bytes | None:
        if self._ssl is None:
            return None
        with contextlib.suppress(ValueError):
            return self._ssl.getpeercert(binary_form=True)
        return None

    async def send(self, data: bytes) -> None:
        await self.send_all((data,))

    async def send_all(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        if self._closed:
            raise ClosedResourceError("connection closed")
        if self._transport.is_closing() or self._protocol.closed.done():
            raise BrokenResourceError("connection is closing")
        try:
            self._write(buffers)
        except _BROKEN as exc:
            raise BrokenResourceError(f"send failed: {exc}") from exc
        await self._protocol.drain()

    def _write(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        transport = self._transport
        if self._ssl is not None:
            # asyncio's TLS transport encrypts what writelines() hands it in one pass and sends
            # the records with one write (one write per buffer sent each buffer's records apart).
            transport.writelines(buffers)
            return
        sent = 0
        if len(buffers) > 1 and self._fd >= 0 and not transport.get_write_buffer_size():
            # Nothing is queued, so the socket is ours to write now (transport.write does the
            # same for one buffer): one vectored system call for all the frames, no copy (on
            # Python 3.11 writelines() joins them first). The transport queues the rest.
            try:
                sent = os.writev(self._fd, buffers[:_IOV_MAX])
            except (BlockingIOError, InterruptedError):
                sent = 0
        for buf in buffers:
            size = len(buf)
            if sent >= size:
                sent -= size
                continue
            transport.write(memoryview(buf)[sent:] if sent else buf)
            sent = 0

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise ClosedResourceError("connection closed")
        return await self._protocol.read(max_bytes)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport.close()
        # A peer that stopped reading must not hold our close up for long. asyncio.wait, not
        # asyncio.timeout: this often runs in a `finally` of a task being cancelled, and on
        # Python 3.11 a timeout expiring there turns the pending cancellation into a
        # TimeoutError that would be swallowed here (a dial loop then spun on forever).
        await asyncio.wait([self._protocol.closed], timeout=CLOSE_TIMEOUT)
        if not self._protocol.closed.done():
            self._transport.abort()


class TcpListener:
    """A bound TCP server; each accepted connection runs the handler in a task it owns."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._address: Address = ("", 0)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> Address:
        return self._address

    def _accepted(self, handler: ConnectionHandler) -> _StreamProtocol:
        loop = asyncio.get_running_loop()

        async def serve(protocol: _StreamProtocol) -> None:
            assert protocol.transport is not None
            conn = TcpConnection(protocol.transport, protocol)
            try:
                await handler(conn)
            finally:
                await conn.aclose()

        def made(protocol: _StreamProtocol) -> None:
            task = loop.create_task(serve(protocol))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return _StreamProtocol(made)

    async def aclose(self) -> None:
        """Stop accepting and end the handlers of accepted connections."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT)


class TcpTransport:
    """Listens and connects over real TCP sockets; over TLS when given ``(server, client)``
    contexts. A TLS handshake that fails or outlasts ``handshake_timeout`` ends the connection
    before any handler sees it (dialing raises :class:`ConnectError`)."""

    def __init__(
        self,
        tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
        *,
        handshake_timeout: float = 10.0,
    ) -> None:
        self._server_ctx: ssl.SSLContext | None = tls[0] if tls is not None else None
        self._client_ctx: ssl.SSLContext | None = tls[1] if tls is not None else None
        self.handshake_timeout = handshake_timeout

    @property
    def encrypted(self) -> bool:
        return self._client_ctx is not None

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> TcpListener:
        listener = TcpListener()
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: listener._accepted(handler),
                host,
                port,
                ssl=self._server_ctx,
                ssl_handshake_timeout=self.handshake_timeout if self._server_ctx else None,
            )
        except OSError as exc:
            raise ConnectError(f"cannot listen on {host}:{port}: {exc}") from exc
        listener._server = server
        sockname = server.sockets[0].getsockname()
        listener._address = (str(sockname[0]), int(sockname[1]))
        return listener

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                if self._client_ctx is None:
                    transport, protocol = await loop.create_connection(_StreamProtocol, host, port)
                else:
                    transport, protocol = await loop.create_connection(
                        _StreamProtocol,
                        host,
                        port,
                        ssl=self._client_ctx,
                        server_hostname="",
                        ssl_handshake_timeout=self.handshake_timeout,
                    )
        except TimeoutError as exc:
            raise ConnectError(f"connect to {host}:{port} timed out after {timeout}s") from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS with {host}:{port} failed: {exc.reason or exc}") from exc
        except (OSError, ValueError) as exc:  # ValueError: a name IDNA cannot encode ("..")
            raise ConnectError(f"connect to {host!r}:{port} failed: {exc}") from exc
        assert isinstance(transport, asyncio.Transport)
        return TcpConnection(transport, protocol)
