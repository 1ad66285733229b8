"""In-memory transport: connections between tasks of one event loop, no sockets.

Used by tests and, later, by the simulation runtime. Each direction of a connection is a
bounded byte buffer: ``send`` waits while the receiver holds more than ``buffer_limit`` unread
bytes, which gives the same backpressure a TCP socket gives.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence

from fltorrent.errors import BrokenResourceError, ClosedResourceError, ConnectError
from fltorrent.net.base import Address, Connection, ConnectionHandler

DEFAULT_BUFFER_LIMIT = 1 << 20


class _Pipe:
    """One direction: bytes written by one end, read by the other.

    Waiters park on plain futures, woken in the order they came (an ``asyncio.Condition`` did the
    same with a lock round trip per call: a fifth of a large simulation's time went there).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.eof = False  # writer closed
        self.broken = False  # reader closed: writes fail
        self._readers: deque[asyncio.Future[None]] = deque()
        self._writers: deque[asyncio.Future[None]] = deque()

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    @staticmethod
    async def _park(waiters: deque[asyncio.Future[None]]) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        await fut

    async def write(self, data: bytes) -> None:
        while not self.broken and len(self.buf) >= self.limit:
            await self._park(self._writers)
        if self.broken:
            raise BrokenResourceError("the other end closed the connection")
        self.buf += data
        self._wake(self._readers)

    async def read(self, max_bytes: int) -> bytes:
        while not self.buf and not self.eof:
            await self._park(self._readers)
        data = bytes(self.buf[:max_bytes])
        del self.buf[:max_bytes]
        self._wake(self._writers)
        return data

    async def set(self, *, eof: bool = False, broken: bool = False) -> None:
        self.eof |= eof
        self.broken |= broken
        self._wake(self._readers)
        self._wake(self._writers)


class MemoryConnection:
    """One end of an in-memory connection."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe, remote: Address) -> None:
        self._in = inbound
        self._out = outbound
        self._remote = remote
        self._closed = False

    @property
    def remote_address(self) -> Address:
        return self._remote

    @property
    def peer_certificate(self) -> bytes | None:
        return None

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise ClosedResourceError("connection closed")
        await self._out.write(data)

    async def send_all(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        await self.send(b"".join(buffers))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._closed:
            raise ClosedResourceError("connection closed")
        return await self._in.read(max_bytes)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._out.set(eof=True)
        await self._in.set(broken=True, eof=True)


class MemoryListener:
    """A bound address on a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address

    @property
    def address(self) -> Address:
        return self._address

    async def aclose(self) -> None:
        self._network._listeners.pop(self._address, None)


class MemoryNetwork:
    """A :class:`~fltorrent.net.base.Transport` whose connections live in memory.

    Accepted connections run their handler in a task group owned by the network: use it as
    ``async with MemoryNetwork() as net:`` so that those tasks end with it.
    """

    def __init__(self, *, buffer_limit: int = DEFAULT_BUFFER_LIMIT) -> None:
        self.buffer_limit = buffer_limit
        self._listeners: dict[Address, ConnectionHandler] = {}
        self._ports = itertools.count(10_000)
        self._tg: asyncio.TaskGroup | None = None

    async def __aenter__(self) -> MemoryNetwork:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        self._listeners.clear()
        await self._tg.__aexit__(None, None, None)
        self._tg = None

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> MemoryListener:
        if port == 0:
            port = next(self._ports)
        address = (host, port)
        if address in self._listeners:
            raise ConnectError(f"address {host}:{port} already in use")
        self._listeners[address] = handler
        return MemoryListener(self, address)

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        handler = self._listeners.get((host, port))
        if handler is None:
            raise ConnectError(f"connection to {host}:{port} refused")
        if self._tg is None:
            raise ConnectError("the memory network is not running (use 'async with')")
        a_to_b = _Pipe(self.buffer_limit)
        b_to_a = _Pipe(self.buffer_limit)
        client = MemoryConnection(b_to_a, a_to_b, (host, port))
        server = MemoryConnection(a_to_b, b_to_a, ("memory-client", next(self._ports)))

        async def serve() -> None:
            try:
                await handler(server)
            finally:
                await server.aclose()

        self._tg.create_task(serve())
        return client
