"""Round plans at scale: exchange time and bytes per peer, against a star server and the bound.

Real swarms (wire protocol, manifests, SHA-256 checks, relaying) exchange one round of updates
over the in-memory network with every peer's link emulated (``net/shaping.py``), in virtual
time, following each plan's pattern of who wants what:

* ``all_to_all``: every peer wants every other author's whole update (full mesh);
* ``neighbours``: every peer wants its overlay neighbours' updates (mesh of degree 3, as the
  default topology);
* ``reduce_scatter``: the owners of each chunk (``plans/owners.py``: the same seeded ring, 2
  owners) want that chunk of every update; an owner publishes its aggregated chunks (an
  ``AGGREGATE`` blob per run of chunks) once it holds them all, and every peer gathers each
  aggregated chunk from one of its owners (spread over them, as the plan does once the owners
  agree);
* ``star``: a parameter server with a 100 Mbit/s link (the same shaper): N updates up, one
  aggregate down to each peer.

Compute (training, aggregating) takes no time here: this measures the exchange. The bound is
the bandwidth optimum 2(N-1)M/(N U) (reduce-scatter then all-gather with every peer's uplink
busy all the time); with r owners per chunk each update piece goes up r times, so
reduce_scatter's own floor is (r + 1)(N-1)M/(N U). Swarms run with the federation's upload
settings unless told otherwise (``--upload-slots``, default 0: every requester served at once,
which suits the reduce phase's point-to-point sends; ``--pipeline-seconds``, default 0.1).

    python benchmarks/plans.py --json bench-results/plans.json                  # N=100, 10 MB
    python benchmarks/plans.py --peers 20 --size-mb 1 --cases reduce_scatter   # quick

``--accuracy`` runs whole federations instead (simulation, the default task: mnist1d
Dirichlet(0.5), 1-D CNN, mesh of 3) with each plan for several seeds, and reports each plan's
final accuracy beside all_to_all's, and the round in which neighbours first reaches all_to_all's
final accuracy:

    python benchmarks/plans.py --accuracy --peers 20 --rounds 20 --seeds 0,1,2 \
        --json bench-results/plans-accuracy.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from dissemination import HOST, _blob, _enter_all, _pieces, direct_sends  # noqa: E402
from fltorrent.net import MemoryNetwork  # noqa: E402
from fltorrent.net.clock import run_virtual  # noqa: E402
from fltorrent.net.shaping import LinkProfile, PeerLink, ShapedTransport  # noqa: E402
from fltorrent.plans.owners import Ownership, ranges  # noqa: E402
from fltorrent.swarm import UPDATE, Manifest, Swarm, SwarmOptions, Topic, TopicKind  # noqa: E402
from fltorrent.topology import build_topology  # noqa: E402

DEADLINE = 36_000.0


@dataclass
class Result:
    """One plan's exchange."""

    seconds: float = 0.0
    wall_s: float = 0.0
    up: dict[int, int] = field(default_factory=dict)  # payload bytes up per peer
    down: dict[int, int] = field(default_factory=dict)
    duplicate: int = 0
    control: int = 0


def _edges(plan: str, n: int, seed: int) -> set[tuple[int, int]]:
    if plan == "neighbours":
        g = build_topology("mesh", n, connections=3, seed=seed)
        return {(min(a, b), max(a, b)) for a, b in g.edges}
    return {(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1)}


async def exchange(
    plan: str,
    n: int,
    size: int,
    mbit: float,
    latency_ms: float,
    chunks: int,
    *,
    seed: int,
    owners: int = 2,
    upload_slots: int = 0,
    pipeline_seconds: float = 0.1,
) -> Result:
    """One round of ``plan``'s exchange among ``n`` peers (see the module docstring)."""
    peers = list(range(1, n + 1))
    edges = _edges(plan, n, seed)
    near = {p: {b if a == p else a for a, b in edges if p in (a, b)} for p in peers}
    own = Ownership.draw(seed=seed, members=peers, chunks=chunks, replicas=owners)
    link = LinkProfile.from_mbit(mbit, mbit, latency_ms=latency_ms)
    updates = {p: _pieces(_blob(p, size), chunks) for p in peers}
    owned = {p: set(own.owned_by(p)) for p in peers}

    def source(p: int, c: int) -> int:  # the agreeing owner peer p fetches chunk c from
        owners = own.owners(c)
        return owners[(p + c) % len(owners)]

    def want(p: int, _round: int, author: int, topic: Topic) -> bool:
        if author == p:
            return False
        if plan == "all_to_all":
            return topic == UPDATE
        if plan == "neighbours":
            return topic == UPDATE and author in near[p]
        if topic == UPDATE:
            return bool(owned[p])
        return any(source(p, c) == author for c in range(topic.first, topic.last))

    def pieces(p: int, m: Manifest) -> set[int] | None:
        if plan != "reduce_scatter":
            return None
        if m.topic == UPDATE:
            return owned[p]
        first = m.topic.first
        return {c - first for c in range(first, m.topic.last) if source(p, c) == m.author}

    loop = asyncio.get_running_loop()
    async with MemoryNetwork(buffer_limit=1 << 20) as net:
        shaped = {p: ShapedTransport(net, PeerLink(link, seed=seed * 1000 + p)) for p in peers}
        swarms = {
            p: Swarm(
                SwarmOptions(
                    federation="plans",
                    peer_id=p,
                    block_size=max(16 * 1024, min(1 << 20, len(updates[p][0]))),
                    seed=seed * 1000 + p,
                    upload_slots=upload_slots,
                    pipeline_seconds=pipeline_seconds,
                ),
                transport=shaped[p],
                want=functools.partial(want, p),
                allow_peer=near[p].__contains__,
            )
            for p in peers
        }
        for p, s in swarms.items():
            s.set_want(functools.partial(want, p), functools.partial(pieces, p))
        async with contextlib.AsyncExitStack() as stack:
            await _enter_all(stack, [*shaped.values(), *swarms.values()])
            listeners = {p: await shaped[p].listen(HOST, 0, swarms[p].accept) for p in peers}
            for a, b in sorted(edges):
                swarms[a].connect(b, listeners[b].address)
            for p in peers:
                ok = await swarms[p].wait_for(functools.partial(_linked, swarms[p], near[p]), 600)
                assert ok, f"peer {p} could not connect"
            wall = time.perf_counter()
            start = loop.time()
            for p in peers:
                m = Manifest.build(author=p, round=1, pieces=updates[p], num_samples=1)
                swarms[p].publish(m, updates[p], verify=False)
            finish: dict[int, float] = {}

            async def run_peer(p: int) -> None:
                s = swarms[p]
                if plan == "reduce_scatter":
                    await _reduce_then_gather(p, s, own, owned[p], updates, peers)
                else:
                    wanted = {a for a in peers if want(p, 1, a, UPDATE)}

                    def done() -> bool:
                        have = {b.manifest.author for b in s.blobs.values() if b.complete}
                        return wanted <= have

                    assert await s.wait_for(done, DEADLINE), f"peer {p} did not finish"
                finish[p] = loop.time() - start

            async with asyncio.TaskGroup() as tg:
                for p in peers:
                    tg.create_task(run_peer(p))
            result = Result(seconds=max(finish.values()), wall_s=time.perf_counter() - wall)
            for p, s in swarms.items():
                result.up[p] = s.counters.payload_up
                result.down[p] = s.counters.payload_down
                result.duplicate += s.counters.duplicate_bytes
                result.control += s.counters.control_up
            for listener in listeners.values():
                await listener.aclose()
            return result


def _linked(swarm: Swarm, expected: set[int]) -> bool:
    return set(swarm.sessions) == expected


async def _reduce_then_gather(
    p: int,
    s: Swarm,
    own: Ownership,
    mine: set[int],
    updates: dict[int, list[bytes]],
    peers: list[int],
) -> None:
    others = [a for a in peers if a != p]

    def reduced() -> bool:
        blobs = {b.manifest.author: b for b in s.blobs.values() if b.manifest.topic == UPDATE}
        return all(a in blobs and all(blobs[a].has(c) for c in mine) for a in others)

    assert await s.wait_for(reduced, DEADLINE), f"owner {p} did not get its chunks"
    for first, last in ranges(mine):  # the aggregate: same sizes as the chunks (bytes only)
        agg = [updates[p][c] for c in range(first, last)]
        topic = Topic(TopicKind.AGGREGATE, first, last)
        m = Manifest.build(author=p, round=1, pieces=agg, num_samples=1, topic=topic)
        s.publish(m, agg, verify=False)
    chunks = len(updates[p])
    needed = [c for c in range(chunks) if c not in mine]

    def gathered() -> bool:
        held = set(mine)
        for b in s.blobs.values():
            t = b.manifest.topic
            if t.kind is TopicKind.AGGREGATE and b.manifest.author != p:
                held |= {c for c in range(t.first, t.last) if b.has(c - t.first)}
        return all(c in held for c in needed)

    assert await s.wait_for(gathered, DEADLINE), f"peer {p} did not gather"


async def star(n: int, size: int, client: LinkProfile, server: LinkProfile) -> float:
    """N updates up to a server, then one aggregate down to each (two phases)."""
    links = {0: server} | dict.fromkeys(range(1, n + 1), client)
    up = await direct_sends(links, [(p, 0, size) for p in range(1, n + 1)])
    down = await direct_sends(links, [(0, p, size) for p in range(1, n + 1)])
    return up + down


def run(ns: argparse.Namespace) -> dict[str, Any]:
    n, size, mbit = ns.peers, int(ns.size_mb * 1_000_000), ns.mbit
    rate = mbit * 1e6 / 8
    bound = 2 * (n - 1) * size / (n * rate)
    out: dict[str, Any] = {
        "setting": {
            "peers": n,
            "update_mb": ns.size_mb,
            "mbit": mbit,
            "latency_ms": ns.latency_ms,
            "chunks": ns.chunks,
            "owners": ns.owners,
            "server_mbit": ns.server_mbit,
            "upload_slots": ns.upload_slots,
            "pipeline_seconds": ns.pipeline_seconds,
        },
        "bound_s": round(bound, 2),
        "reduce_scatter_floor_s": round((ns.owners + 1) * (n - 1) * size / (n * rate), 2),
    }
    server = LinkProfile.from_mbit(ns.server_mbit, ns.server_mbit, latency_ms=ns.latency_ms)
    client = LinkProfile.from_mbit(mbit, mbit, latency_ms=ns.latency_ms)
    for case in ns.cases.split(","):
        if case == "star":
            wall = time.perf_counter()
            seconds = run_virtual(star(n, size, client, server))
            row: dict[str, Any] = {
                "exchange_s": round(seconds, 2),
                "up_mb_per_peer": round(size / 1e6, 2),
                "down_mb_per_peer": round(size / 1e6, 2),
                "wall_s": round(time.perf_counter() - wall, 1),
            }
        else:
            res = run_virtual(
                exchange(
                    case,
                    n,
                    size,
                    mbit,
                    ns.latency_ms,
                    ns.chunks,
                    seed=ns.seed,
                    owners=ns.owners,
                    upload_slots=ns.upload_slots,
                    pipeline_seconds=ns.pipeline_seconds,
                )
            )
            useful = sum(res.down.values()) - res.duplicate
            row = {
                "exchange_s": round(res.seconds, 2),
                "up_mb_per_peer": round(sum(res.up.values()) / n / 1e6, 2),
                "down_mb_per_peer": round(sum(res.down.values()) / n / 1e6, 2),
                "max_up_mb": round(max(res.up.values()) / 1e6, 2),
                "duplicate_ratio": round(res.duplicate / max(1, useful), 5),
                "control_ratio": round(res.control / max(1, useful), 5),
                "wall_s": round(res.wall_s, 1),
            }
        row["vs_bound"] = round(row["exchange_s"] / bound, 3)
        out[case] = row
        print(case, row, flush=True)
    if "star" in out:
        for case in ("all_to_all", "neighbours", "reduce_scatter"):
            if case in out:
                out[case]["speedup_vs_star"] = round(
                    out["star"]["exchange_s"] / out[case]["exchange_s"], 2
                )
    return out


def accuracy(ns: argparse.Namespace) -> dict[str, Any]:
    """Final accuracy per plan and seed (whole federations in simulation)."""
    import logging
    import tempfile

    from fltorrent.config import load_config
    from fltorrent.runtime.federation import Federation

    logging.basicConfig(level=logging.ERROR)
    out: dict[str, Any] = {"peers": ns.peers, "rounds": ns.rounds, "seeds": ns.seeds}
    curves: dict[str, list[list[float]]] = {}
    for plan in ns.cases.split(","):
        if plan == "star":
            continue
        finals, curves[plan], walls, longer = [], [], [], []
        rounds = ns.rounds
        if plan == "neighbours" and ns.neighbours_rounds:
            rounds = max(ns.rounds, ns.neighbours_rounds)  # to see when it catches up
        for seed in (int(x) for x in ns.seeds.split(",")):
            config = load_config(
                None,
                [
                    "federate.mode=sim",
                    f"federate.client_num={ns.peers}",
                    f"federate.total_round_num={rounds}",
                    f"federate.seed={seed}",
                    f"exchange.plan={plan}",
                    "output.save_model=false",
                    "output.progress=none",
                    "output.log_level=error",
                ],
            )
            with tempfile.TemporaryDirectory() as tmp:
                wall = time.perf_counter()
                summary = Federation(config, output_dir=tmp).run().summary
                walls.append(time.perf_counter() - wall)
            curve = [r["mean"] for r in summary["accuracy_per_round"]]
            curves[plan].append(curve)
            finals.append(curve[ns.rounds - 1])  # after as many rounds as the others
            longer.append(summary["final_accuracy_mean"])
        out[plan] = {
            "final_accuracy": [round(x, 4) for x in finals],
            "mean": round(sum(finals) / len(finals), 4),
            "wall_s": round(sum(walls), 1),
        }
        if rounds > ns.rounds:
            out[plan][f"accuracy_after_{rounds}_rounds"] = [round(x, 4) for x in longer]
        print(plan, out[plan], flush=True)
    base = out.get("all_to_all")
    if base is not None:
        for plan in curves:
            out[plan]["points_below_all_to_all"] = round(
                100 * (base["mean"] - out[plan]["mean"]), 2
            )
        if "neighbours" in curves:
            reached = []
            for seed_curve, target in zip(
                curves["neighbours"], base["final_accuracy"], strict=True
            ):
                hits = [r + 1 for r, acc in enumerate(seed_curve) if acc >= target]
                reached.append(hits[0] if hits else None)
            out["neighbours"]["round_reaching_all_to_all_final"] = reached
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="star,reduce_scatter,neighbours,all_to_all")
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--mbit", type=float, default=10.0, help="every peer's up and down rate")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--server-mbit", type=float, default=100.0)
    parser.add_argument("--chunks", type=int, default=100, help="pieces (chunks) per update")
    parser.add_argument("--owners", type=int, default=2, help="reduce_scatter: owners per chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--upload-slots",
        type=int,
        default=0,
        help="bittorrent.upload_slots (0, the federation's default: every requester at once)",
    )
    parser.add_argument(
        "--pipeline-seconds", type=float, default=0.1, help="bittorrent.pipeline_seconds"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--accuracy", action="store_true", help="whole federations (see above)")
    parser.add_argument("--rounds", type=int, default=20, help="--accuracy: rounds")
    parser.add_argument("--seeds", default="0,1,2", help="--accuracy: seeds")
    parser.add_argument(
        "--neighbours-rounds",
        type=int,
        default=0,
        help="--accuracy: run neighbours this long (accuracy still compared after --rounds)",
    )
    ns = parser.parse_args()
    result = accuracy(ns) if ns.accuracy else run(ns)
    if ns.json is not None:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
