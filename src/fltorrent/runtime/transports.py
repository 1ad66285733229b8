"""Every transport the runtime builds, in one place: real TCP, the in-memory network of the
simulation, and the link shaper that wraps either one per peer. A new launcher (Ray, say) picks
from here instead of building its own."""

from __future__ import annotations

from fltorrent.net.base import Transport
from fltorrent.net.memory import MemoryNetwork
from fltorrent.net.shaping import LinkProfile, PeerLink, ShapedTransport
from fltorrent.net.tcp import TcpTransport


def tcp() -> Transport:
    """Real sockets (asyncio TCP): the tracker and the peers of the real launchers."""
    return TcpTransport()


def memory_network() -> MemoryNetwork:
    """The simulation's in-memory network (use with ``async with``, in virtual time)."""
    return MemoryNetwork()


def shaped(transport: Transport, link: LinkProfile, *, seed: int) -> ShapedTransport:
    """``transport`` seen through one peer's access link (rates, latency, jitter, loss)."""
    return ShapedTransport(transport, PeerLink(link, seed=seed))
