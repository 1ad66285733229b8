"""Dissemination efficiency of the swarm on shaped links, against theoretical lower bounds.

Every case runs real fltorrent swarms (wire protocol, manifests, requests, SHA-256 checks,
relaying) over the in-memory network with per-peer link emulation, on the virtual-time event
loop: a 10 Mbit/s exchange of hundreds of megabytes takes seconds of wall time. ``real_tcp``
runs the same exchange (smaller) over loopback TCP with the same shaper in real time, and once
more in simulation, to check that both clocks agree.

Efficiency = lower bound / measured completion time (the time from publication until the last
peer holds every blob it wants). Cases and bounds (M = blob size, N = peers, U/D = rates):

* ``all_to_all``: N peers, one blob each, everyone wants every blob. Bound (N-1)M/U.
* ``heterogeneous``: the same with two classes of peers; bound
  max(max_j M/U_j, max_i (N-1)M/D_i, N(N-1)M/sum U). Also measured: ``direct``, every author
  sending its blob straight to every peer (a star per author, no relaying).
* ``broadcast``: one seed, N downloaders, K pieces, with super-seeding, one upload slot and a
  0.03 s request pipeline (``bittorrent.super_seeding``, ``upload_slots``,
  ``pipeline_seconds``). Bound (1 + floor(log2 N)/K) M/U.
* ``star``: a parameter server with the peers' link: the N blobs go up to it, one blob of size
  M comes back to all (two phases). Bound N*M/D_s + N*M/U_s.

    python benchmarks/dissemination.py --json bench-results/dissemination.json
    python benchmarks/dissemination.py --cases all_to_all --peers 8 --size-mb 2   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fltorrent.net import MemoryNetwork, TcpTransport  # noqa: E402
from fltorrent.net.base import Transport  # noqa: E402
from fltorrent.net.clock import run_virtual  # noqa: E402
from fltorrent.net.shaping import LinkProfile, PeerLink, ShapedTransport  # noqa: E402
from fltorrent.swarm import Manifest, Swarm, SwarmOptions, Topic  # noqa: E402

HOST = "127.0.0.1"
DEADLINE = 3600.0  # loop seconds (virtual in simulation)


@dataclass
class Exchange:
    """One exchange to run: who holds what, who wants what, who may talk to whom."""

    links: dict[int, LinkProfile]
    blobs: dict[int, int]  # author -> blob size in bytes
    wants: Callable[[int, int], bool]  # (peer, author) -> wanted
    edges: set[tuple[int, int]]  # undirected, as (low, high)
    pieces: int = 20
    block_size: int = 16 * 1024
    super_seeding: bool = False
    upload_slots: int = 4  # BitTorrent's unchoke count; measured to pay off on shaped links
    pipeline_seconds: float = 0.1  # SwarmOptions' default


@dataclass
class Outcome:
    """What one exchange measured."""

    seconds: float
    finish: dict[int, float] = field(default_factory=dict)
    payload: int = 0
    duplicate: int = 0
    control: int = 0
    wall_s: float = 0.0
    uploaded: dict[int, int] = field(default_factory=dict)


def _blob(author: int, size: int) -> bytes:
    base = author.to_bytes(4, "big") * 16
    return (base * (size // len(base) + 1))[:size]


def _pieces(data: bytes, count: int) -> list[bytes]:
    step = -(-len(data) // count)
    return [data[i : i + step] for i in range(0, len(data), step)]


async def run_exchange(ex: Exchange, *, tcp: bool = False, seed: int = 0) -> Outcome:
    """Run ``ex`` on the current loop (virtual or real) and measure it."""
    peers = sorted(ex.links)
    loop = asyncio.get_running_loop()
    net = MemoryNetwork(buffer_limit=1 << 20)
    async with net:
        shaped = {
            p: ShapedTransport(
                TcpTransport() if tcp else net, PeerLink(ex.links[p], seed=seed * 1000 + p)
            )
            for p in peers
        }
        swarms: dict[int, Swarm] = {}
        for p in peers:
            neighbours = {b if a == p else a for a, b in ex.edges if p in (a, b)}
            opts = SwarmOptions(
                federation="dissemination",
                peer_id=p,
                block_size=ex.block_size,
                seed=seed * 1000 + p,
                super_seeding=ex.super_seeding,
                upload_slots=ex.upload_slots,
                pipeline_seconds=ex.pipeline_seconds,
            )
            swarms[p] = Swarm(
                opts,
                transport=shaped[p],
                want=functools.partial(_wants, ex, p),
                allow_peer=neighbours.__contains__,
            )
        return await _drive(ex, peers, shaped, swarms, loop)


def _wants(ex: Exchange, peer: int, _round: int, author: int, _topic: Topic) -> bool:
    return author != peer and ex.wants(peer, author)


def _connected(swarm: Swarm, expected: set[int]) -> bool:
    return set(swarm.sessions) == expected


async def _drive(
    ex: Exchange,
    peers: list[int],
    shaped: Mapping[int, Transport],
    swarms: dict[int, Swarm],
    loop: asyncio.AbstractEventLoop,
) -> Outcome:
    async with contextlib.AsyncExitStack() as stack:
        await _enter_all(stack, [*shaped.values(), *swarms.values()])
        listeners = {p: await shaped[p].listen(HOST, 0, swarms[p].accept) for p in peers}
        for a, b in sorted(ex.edges):
            swarms[a].connect(b, listeners[b].address)
        for p in peers:
            expected = {b if a == p else a for a, b in ex.edges if p in (a, b)}
            ok = await swarms[p].wait_for(functools.partial(_connected, swarms[p], expected), 60)
            assert ok, f"peer {p} could not connect to its neighbours"
        manifests = {}
        for author, size in ex.blobs.items():
            pieces = _pieces(_blob(author, size), ex.pieces)
            manifests[author] = (
                Manifest.build(author=author, round=1, pieces=pieces, num_samples=1),
                pieces,
            )
        wall = time.perf_counter()
        start = loop.time()
        for author, (manifest, pieces) in manifests.items():
            swarms[author].publish(manifest, pieces, verify=False)
        finish: dict[int, float] = {}

        async def complete(p: int) -> None:
            want = {a for a in ex.blobs if a != p and ex.wants(p, a)}

            def done() -> bool:
                have = {b.manifest.author for b in swarms[p].blobs.values() if b.complete}
                return want <= have

            assert await swarms[p].wait_for(done, DEADLINE), f"peer {p} did not finish"
            finish[p] = loop.time() - start

        async with asyncio.TaskGroup() as tg:
            for p in peers:
                tg.create_task(complete(p))
        outcome = Outcome(seconds=max(finish.values()), finish=finish)
        outcome.wall_s = time.perf_counter() - wall
        for p, s in swarms.items():
            outcome.uploaded[p] = s.counters.payload_up
            outcome.payload += s.counters.payload_down
            outcome.duplicate += s.counters.duplicate_bytes
            outcome.control += s.counters.control_up
        for listener in listeners.values():
            await listener.aclose()
        return outcome


async def _enter_all(stack: contextlib.AsyncExitStack, managers: list[Any]) -> None:
    for m in managers:
        await stack.enter_async_context(m)


# ----------------------------------------------------------------------------- cases
def _full(peers: list[int]) -> set[tuple[int, int]]:
    return {(a, b) for a in peers for b in peers if a < b}


def all_to_all(n: int, size: int, mbit: float, pieces: int, block: int) -> tuple[Exchange, float]:
    peers = list(range(1, n + 1))
    link = LinkProfile.from_mbit(mbit, mbit)
    ex = Exchange(
        links={p: link for p in peers},
        blobs={p: size for p in peers},
        wants=lambda _p, _a: True,
        edges=_full(peers),
        pieces=pieces,
        block_size=block,
    )
    return ex, (n - 1) * size / (mbit * 1e6 / 8)


def heterogeneous(
    n: int, size: int, slow: float, fast: float, pieces: int, block: int
) -> tuple[Exchange, float]:
    peers = list(range(1, n + 1))
    # Access links are asymmetric, download 4x upload (as smartphone_low's 5/20 in SPEC §4).
    links = {
        p: LinkProfile.from_mbit(r, 4 * r) for p in peers for r in [slow if p <= n // 2 else fast]
    }
    up = {p: (links[p].up_bps or 0) / 8 for p in peers}
    down = {p: (links[p].down_bps or 0) / 8 for p in peers}
    bound = max(
        *(size / up[p] for p in peers),
        *((n - 1) * size / down[p] for p in peers),
        n * (n - 1) * size / sum(up.values()),
    )
    ex = Exchange(
        links=links,
        blobs={p: size for p in peers},
        wants=lambda _p, _a: True,
        edges=_full(peers),
        pieces=pieces,
        block_size=block,
    )
    return ex, bound


def broadcast(n: int, size: int, mbit: float, pieces: int, block: int) -> tuple[Exchange, float]:
    peers = list(range(0, n + 1))  # 0 is the seed
    link = LinkProfile.from_mbit(mbit, 4 * mbit)
    ex = Exchange(
        links={p: link for p in peers},
        blobs={0: size},
        wants=lambda _p, _a: True,
        edges=_full(peers),
        pieces=pieces,
        block_size=block,
        # A piece relays only once it is whole: one neighbour at a time gets it at the full
        # uplink rate (k slots take k times as long per hop), and a shallow request pipeline
        # keeps each downloader's choice of holder fresh. With 4 slots and 0.1 s: 0.80-0.83.
        super_seeding=True,
        upload_slots=1,
        pipeline_seconds=0.03,
    )
    bound = (1 + math.floor(math.log2(n)) / pieces) * size / (mbit * 1e6 / 8)
    return ex, bound


# ----------------------------------------------------------------- baselines without a swarm
async def direct_sends(
    links: dict[int, LinkProfile], transfers: list[tuple[int, int, int]], *, seed: int = 0
) -> float:
    """Seconds until every (sender, receiver, bytes) transfer is in, each on its own shaped
    connection, all at once: no protocol, no relaying. The baselines of ``heterogeneous``
    (every author sends to every peer) and ``star`` (a parameter server)."""
    loop = asyncio.get_running_loop()
    async with MemoryNetwork(buffer_limit=1 << 20) as net:
        shaped = {p: ShapedTransport(net, PeerLink(links[p], seed=seed * 1000 + p)) for p in links}
        async with contextlib.AsyncExitStack() as stack:
            await _enter_all(stack, list(shaped.values()))
            expected: dict[int, int] = {}
            for _, dst, nbytes in transfers:
                expected[dst] = expected.get(dst, 0) + nbytes
            got = dict.fromkeys(expected, 0)
            all_in = {p: asyncio.Event() for p in expected}
            ends: list[float] = []

            def handler_for(p: int) -> Any:
                async def handler(conn: Any) -> None:
                    while True:
                        data = await conn.receive(1 << 20)
                        if not data:
                            return
                        got[p] += len(data)
                        if got[p] >= expected[p] and not all_in[p].is_set():
                            ends.append(loop.time())
                            all_in[p].set()

                return handler

            listeners = {p: await shaped[p].listen(HOST, 0, handler_for(p)) for p in expected}
            conns = [
                (await shaped[src].connect(HOST, listeners[dst].address[1], timeout=5), n)
                for src, dst, n in transfers
            ]
            start = loop.time()
            async with asyncio.TaskGroup() as tg:
                for conn, n in conns:
                    tg.create_task(conn.send(bytes(n)))
                for ev in all_in.values():
                    tg.create_task(ev.wait())
            for conn, _ in conns:
                await conn.aclose()
            for listener in listeners.values():
                await listener.aclose()
            return max(ends) - start


async def star(n: int, size: int, link: LinkProfile) -> tuple[float, float]:
    """A parameter server with ``link``: N updates up, then one aggregate down to each.

    Returns (measured seconds, bound N*M/D_s + N*M/U_s)."""
    links = {p: link for p in range(n + 1)}  # 0 is the server
    up = await direct_sends(links, [(p, 0, size) for p in range(1, n + 1)])
    down = await direct_sends(links, [(0, p, size) for p in range(1, n + 1)])
    bound = n * size / ((link.down_bps or 0) / 8) + n * size / ((link.up_bps or 0) / 8)
    return up + down, bound


def _row(out: Outcome, bound: float) -> dict[str, Any]:
    useful = out.payload - out.duplicate
    return {
        "efficiency": round(bound / out.seconds, 4),
        "bound_s": round(bound, 3),
        "completion_s": round(out.seconds, 3),
        "duplicate_ratio": round(out.duplicate / max(1, useful), 5),
        "control_ratio": round(out.control / max(1, useful), 5),
        "wall_s": round(out.wall_s, 2),
        "max_upload_mb": round(max(out.uploaded.values()) / 1e6, 2),
    }


def _settings(ex: Exchange, ns: argparse.Namespace) -> None:
    """The swarm settings given on the command line, over the case's own."""
    if ns.upload_slots is not None:
        ex.upload_slots = ns.upload_slots
    if ns.pipeline_seconds is not None:
        ex.pipeline_seconds = ns.pipeline_seconds


def run_case(case: str, ns: argparse.Namespace) -> dict[str, Any]:
    """One case of the benchmark, as a JSON-ready row."""
    size = int(ns.size_mb * 1_000_000)
    n, block = ns.peers, ns.block_size
    if case == "all_to_all":
        ex, bound = all_to_all(n, size, 10.0, ns.pieces, block)
        _settings(ex, ns)
        return _row(run_virtual(run_exchange(ex, seed=ns.seed)), bound)
    if case == "heterogeneous":
        ex, bound = heterogeneous(n, size, 5.0, 20.0, ns.pieces, block)
        _settings(ex, ns)
        row = _row(run_virtual(run_exchange(ex, seed=ns.seed)), bound)
        pairs = [(a, b, size) for a in ex.links for b in ex.links if a != b]
        direct = run_virtual(direct_sends(ex.links, pairs))
        row["direct_s"] = round(direct, 3)
        row["speedup_vs_direct"] = round(direct / row["completion_s"], 3)
        return row
    if case == "broadcast":
        ex, bound = broadcast(n, size, 10.0, ns.broadcast_pieces, block)
        _settings(ex, ns)
        return _row(run_virtual(run_exchange(ex, seed=ns.seed)), bound)
    if case == "star":
        seconds, bound = run_virtual(star(n, size, LinkProfile.from_mbit(10.0, 10.0)))
        a2a = (n - 1) * size / (10e6 / 8)
        return {
            "efficiency": round(bound / seconds, 4),
            "bound_s": round(bound, 3),
            "completion_s": round(seconds, 3),
            "all_to_all_bound_s": round(a2a, 3),
        }
    if case == "real_tcp":
        # Small enough for real time: 6 peers x 2 MB at 10 Mbit/s, about 8 s.
        ex, bound = all_to_all(6, 2_000_000, 10.0, ns.pieces, block)
        sim = run_virtual(run_exchange(ex, seed=ns.seed))
        real = asyncio.run(run_exchange(ex, tcp=True, seed=ns.seed))
        row = _row(real, bound)
        row["sim_completion_s"] = round(sim.seconds, 3)
        row["sim_real_gap"] = round(abs(real.seconds - sim.seconds) / sim.seconds, 4)
        return row
    raise SystemExit(f"unknown case {case!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="all_to_all,heterogeneous,broadcast,star,real_tcp")
    parser.add_argument("--peers", type=int, default=20)
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--pieces", type=int, default=20, help="pieces per blob (all-to-all)")
    parser.add_argument("--broadcast-pieces", type=int, default=100, help="K of the broadcast")
    parser.add_argument("--block-size", type=int, default=16 * 1024)
    parser.add_argument(
        "--upload-slots", type=int, default=None, help="instead of the case's (4; broadcast 1)"
    )
    parser.add_argument(
        "--pipeline-seconds",
        type=float,
        default=None,
        help="instead of the case's (0.1; broadcast 0.03)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds pickers and link loss (results vary by seed)"
    )
    parser.add_argument("--json", type=Path, default=None)
    ns = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for case in ns.cases.split(","):
        results[case] = run_case(case, ns)
        print(case, results[case], flush=True)
    if ns.json is not None:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
