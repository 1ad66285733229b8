"""Build small swarms on an in-memory (or TCP) network for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from fltorrent.net.base import Listener, Transport
from fltorrent.swarm import Manifest, Swarm, SwarmOptions

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
    transport: Transport,
    n: int,
    edges: Sequence[tuple[int, int]],
    *,
    options: SwarmOptions | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[dict[int, Node]]:
    """``n`` swarms (ids 1..n) that want every blob but their own, connected along ``edges``."""
    base = options or SwarmOptions(federation=FED, peer_id=0)
    nodes: dict[int, Node] = {}
    async with contextlib.AsyncExitStack() as stack:
        for pid in range(1, n + 1):
            neighbours = {b for a, b in edges if a == pid} | {a for a, b in edges if b == pid}

            def want(_round: int, author: int, me: int = pid) -> bool:
                return author != me

            swarm = Swarm(
                replace(base, peer_id=pid, seed=pid),
                transport=transport,
                want=want,
                allow_peer=neighbours.__contains__,
            )
            await stack.enter_async_context(swarm)
            listener = await transport.listen(host, 0, swarm.accept)
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
