"""Transports: asyncio TCP and in-memory links behind one interface."""

from fltorrent.net.base import Address, Connection, ConnectionHandler, Listener, Transport
from fltorrent.net.memory import MemoryConnection, MemoryNetwork
from fltorrent.net.tcp import TcpConnection, TcpTransport

__all__ = [
    "Address",
    "Connection",
    "ConnectionHandler",
    "Listener",
    "MemoryConnection",
    "MemoryNetwork",
    "TcpConnection",
    "TcpTransport",
    "Transport",
]
