"""Build small swarms on an in-memory (or TCP) network for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace

from fltorrent.errors import BrokenResourceError
from fltorrent.net import MemoryNetwork
from fltorrent.net.base import Connection, Listener, Transport
from fltorrent.swarm import Manifest, Swarm, SwarmOptions, Topic
from fltorrent.wire import (
    NEED_DATA,
    Announce,
    Bitfield,
    ConnectionClosed,
    Handshake,
    ManifestData,
    ManifestRequest,
    Message,
    Unchoke,
    WireConnection,
    pack_bits,
)

FED = "swarm-test"


def random_blob(
    author: int, size: int, pieces: int, round_: int = 1
) -> tuple[Manifest, list[bytes]]:
    data = os.urandom(size)
    step = -(-size // pieces)
    chunks = [data[i : i + step] for i in range(0, size, step)]
    manifest = Manifest.build(
        author=author,
        round=round_,
        pieces=chunks,
        num_samples=100 + author,
        importance=[float(i) for i in range(len(chunks))],
    )
    return manifest, chunks


@dataclass
class Node:
    swarm: Swarm
    listener: Listener


@contextlib.asynccontextmanager
async def swarm_graph(
    transport: Transport | Mapping[int, Transport],
    n: int,
    edges: Sequence[tuple[int, int]],
    *,
    options: SwarmOptions | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[dict[int, Node]]:
    """``n`` swarms (ids 1..n) that want every blob but their own, connected along ``edges``.

    ``transport`` is shared, or one per peer id (e.g. shaped links).
    """
    base = options or SwarmOptions(federation=FED, peer_id=0)
    nodes: dict[int, Node] = {}
    async with contextlib.AsyncExitStack() as stack:
        for pid in range(1, n + 1):
            neighbours = {b for a, b in edges if a == pid} | {a for a, b in edges if b == pid}

            def want(_round: int, author: int, _topic: Topic, me: int = pid) -> bool:
                return author != me

            own = transport[pid] if isinstance(transport, Mapping) else transport
            swarm = Swarm(
                replace(base, peer_id=pid, seed=pid),
                transport=own,
                want=want,
                allow_peer=neighbours.__contains__,
            )
            await stack.enter_async_context(swarm)
            listener = await own.listen(host, 0, swarm.accept)
            stack.push_async_callback(listener.aclose)
            nodes[pid] = Node(swarm, listener)
        for a, b in edges:
            lo, hi = min(a, b), max(a, b)
            nodes[lo].swarm.connect(hi, nodes[hi].listener.address)
        yield nodes


async def wait_all(nodes: dict[int, Node], expected_blobs: int, timeout: float = 20.0) -> None:
    async def one(node: Node) -> None:
        def done() -> bool:
            full = [b for b in node.swarm.blobs.values() if b.complete]
            return len(full) >= expected_blobs

        assert await node.swarm.wait_for(done, timeout), (
            f"peer {node.swarm.options.peer_id} has "
            f"{sum(b.complete for b in node.swarm.blobs.values())}/{expected_blobs} blobs"
        )

    await asyncio.gather(*(one(nd) for nd in nodes.values()))


RAW_ID = 66


class RawPeer:
    """A scripted remote peer speaking the wire protocol by hand."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.wire = WireConnection(federation=FED)
        self.received: list[Message] = []
        self.closed = False

    async def start(self) -> None:
        await self.send(Handshake(FED, RAW_ID, 1))

    async def send(self, msg: Message) -> None:
        try:
            await self.conn.send(self.wire.send(msg))
        except BrokenResourceError:
            self.closed = True

    async def pump(self, until: type[Message] | None = None, timeout: float = 5.0) -> None:
        """Handle events until one of type ``until`` arrives (or the connection closes).

        Events already buffered are handled before anything more is read.
        """
        async with asyncio.timeout(timeout):
            while True:
                while (ev := self.wire.next_event()) is not NEED_DATA:
                    if isinstance(ev, ConnectionClosed):
                        self.closed = True
                        return
                    assert isinstance(ev, Message)
                    self.received.append(ev)
                    if until is not None and isinstance(ev, until):
                        return
                data = await self.conn.receive()
                self.wire.receive_data(data)

    async def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives within ``seconds`` (buffered events included)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        got: list[Message] = []
        while True:
            while (ev := self.wire.next_event()) is not NEED_DATA:
                if isinstance(ev, ConnectionClosed):
                    self.closed = True
                    return got
                assert isinstance(ev, Message)
                got.append(ev)
            left = end - loop.time()
            if left <= 0:
                return got
            try:
                async with asyncio.timeout(left):
                    data = await self.conn.receive()
            except TimeoutError:
                return got
            if not data:
                self.closed = True
                return got
            self.wire.receive_data(data)

    async def offer(self, manifest: Manifest) -> None:
        await self.send(Unchoke())
        await self.send(
            Announce(0, manifest.blob_id, manifest.round, manifest.author, manifest.num_pieces)
        )
        await self.send(Bitfield(0, pack_bits([True] * manifest.num_pieces)))

    async def offer_with_manifest(self, manifest: Manifest) -> None:
        """Offer every piece of a blob, and answer the request for its manifest."""
        await self.offer(manifest)
        await self.pump(ManifestRequest)
        await self.send(ManifestData(0, manifest.encoded))


def _victim(net: MemoryNetwork, **kw: object) -> Swarm:
    """A swarm (peer 1) that wants every blob but its own."""
    opts = replace(SwarmOptions(federation=FED, peer_id=1), **kw)  # type: ignore[arg-type]
    return Swarm(opts, transport=net, want=lambda _r, author, _t: author != 1)


async def _raw(net: MemoryNetwork, swarm: Swarm) -> RawPeer:
    listener = await net.listen("victim", 0, swarm.accept)
    peer = RawPeer(await net.connect(*listener.address, timeout=1))
    await peer.start()
    return peer
