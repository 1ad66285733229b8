"""Transport interfaces: what swarm and tracker code needs from a byte stream.

Implementations: :mod:`fltorrent.net.tcp` (asyncio TCP) and :mod:`fltorrent.net.memory`
(in-process links for tests and simulation). The wire protocol and the swarm run unchanged on
either, which is the point of this seam.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

Address = tuple[str, int]


class Connection(Protocol):
    """A reliable, ordered, bidirectional byte stream."""

    @property
    def remote_address(self) -> Address:
        """Where the other end is (host, port)."""
        ...

    @property
    def peer_certificate(self) -> bytes | None:
        """The certificate (DER) the other end proved it holds the key of, when the transport
        authenticates (TLS); ``None`` on plaintext and in-memory links."""
        ...

    async def send(self, data: bytes) -> None:
        """Queue ``data`` and wait while the outgoing buffer is full (backpressure).

        Raises :class:`~fltorrent.errors.ClosedResourceError` after :meth:`aclose` and
        :class:`~fltorrent.errors.BrokenResourceError` when the other end is gone.
        """
        ...

    async def send_all(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        """Like :meth:`send` for several buffers at once (one wake-up, one drain)."""
        ...

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` at end of stream.

        Raises :class:`~fltorrent.errors.BrokenResourceError` when the link broke.
        """
        ...

    async def aclose(self) -> None:
        """Close our end; idempotent."""
        ...


ConnectionHandler = Callable[[Connection], Awaitable[None]]


class Listener(Protocol):
    """A bound server endpoint."""

    @property
    def address(self) -> Address:
        """The bound (host, port); the port is real even when 0 was asked for."""
        ...

    async def aclose(self) -> None:
        """Stop accepting; existing connections are unaffected."""
        ...


class Transport(Protocol):
    """Creates listeners and outgoing connections."""

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> Listener:
        """Bind and call ``handler`` (as a task owned by the transport) per connection."""
        ...

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        """Open a connection; :class:`~fltorrent.errors.ConnectError` on failure or timeout."""
        ...
