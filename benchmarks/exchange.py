"""All-to-all exchange of large blobs among peer processes over loopback, against raw asyncio.

Each of N peer processes holds one blob of M bytes and must end with everyone's blob. Two runs
move the same useful bytes between the same processes:

* **raw**: every process writes its blob straight to every other over plain asyncio streams
  (no protocol, no hashing, no relaying): the ceiling for Python on this machine;
* **swarm**: every process runs a fltorrent :class:`Swarm` over TCP (handshake, manifests,
  requests, pieces, SHA-256 verification, haves, relaying) on the chosen topology.

Reported: ``goodput_ratio`` = raw time / swarm time (1.0 would mean no protocol cost),
``duplicate_ratio`` = duplicate payload / useful payload, ``control_ratio`` = control bytes sent
/ useful payload, ``peak_rss_mb`` = the largest peak resident set of one peer process.
Timing starts when every process passed a barrier with its connections open, and ends when the
last process holds every blob.

    python benchmarks/exchange.py --json bench-results/exchange.json   # sweep of block sizes
    python benchmarks/exchange.py --block-sizes 16384 --repeats 1       # one quick case
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fltorrent.net import TcpTransport  # noqa: E402
from fltorrent.swarm import Manifest, Swarm, SwarmOptions  # noqa: E402
from fltorrent.topology import build_topology, neighbours  # noqa: E402

HOST = "127.0.0.1"
RAW_CHUNK = 256 * 1024
BARRIER_TIMEOUT = 300.0  # a broken run fails instead of hanging
PEER_DEADLINE = 120.0


@dataclass
class PeerReport:
    """What one peer process measured."""

    start: float
    end: float
    payload_down: int = 0
    duplicate: int = 0
    control_up: int = 0
    bytes_up: int = 0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0


def _blob(peer: int, size: int) -> bytes:
    # Distinct, incompressible-looking content per peer, cheap to make.
    return (peer.to_bytes(4, "big") * 8 + os.urandom(32)) * (size // 64) + b"\0" * (size % 64)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---------------------------------------------------------------------------- raw baseline
async def _raw_peer(
    peer: int, n: int, size: int, ports: Any, barrier: Barrier, ready: Any
) -> PeerReport:
    data = _blob(peer, size)
    received = {i: 0 for i in range(1, n + 1) if i != peer}
    all_in = asyncio.Event()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(4)
        sender = int.from_bytes(head, "big")
        while received[sender] < size:
            chunk = await reader.read(RAW_CHUNK)
            if not chunk:
                break
            received[sender] += len(chunk)
        if all(v >= size for v in received.values()):
            all_in.set()
        writer.close()

    server = await asyncio.start_server(on_conn, HOST, 0)
    ports[peer] = server.sockets[0].getsockname()[1]
    ready.wait()
    writers = []
    for other in received:
        _, w = await asyncio.open_connection(HOST, ports[other])
        writers.append(w)
    await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)
    start = time.time()
    cpu0 = _cpu_s()

    async def send(w: asyncio.StreamWriter) -> None:
        w.write(peer.to_bytes(4, "big"))
        view = memoryview(data)
        for off in range(0, size, RAW_CHUNK):
            w.write(view[off : off + RAW_CHUNK])
            await w.drain()

    await asyncio.gather(*(send(w) for w in writers))
    await all_in.wait()
    end = time.time()
    cpu = _cpu_s() - cpu0
    for w in writers:
        w.close()
    await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)  # keep serving until everyone is done
    server.close()
    return PeerReport(start, end, payload_down=size * (n - 1), peak_rss_mb=_rss_mb(), cpu_s=cpu)


# ---------------------------------------------------------------------------- swarm
async def _swarm_peer(
    peer: int,
    n: int,
    size: int,
    pieces: int,
    block_size: int,
    topology: str,
    ports: Any,
    barrier: Barrier,
    ready: Any,
    length_only: bool = False,
) -> PeerReport:
    if length_only:
        # Diagnostic only (--diagnose): check piece sizes but not their SHA-256, to measure
        # what hashing costs. Never a valid configuration, so it is patched in here only.
        Manifest.verify = lambda self, i, d: len(d) == self.piece_sizes[i]  # type: ignore[method-assign,assignment]
    data = _blob(peer, size)
    step = -(-size // pieces)
    chunks = [data[i : i + step] for i in range(0, size, step)]
    manifest = Manifest.build(author=peer, round=1, pieces=chunks, num_samples=1)
    del data
    graph = build_topology(topology, n, connections=3, seed=0)
    mine = set(neighbours(graph, peer))
    transport = TcpTransport()
    opts = SwarmOptions(
        federation="bench",
        peer_id=peer,
        block_size=block_size,
        max_block_size=max(block_size, 1 << 20),
        max_frame_size=(1 << 20) + 4096,
    )
    swarm = Swarm(
        opts, transport=transport, want=lambda _r, a: a != peer, allow_peer=mine.__contains__
    )
    async with swarm:
        listener = await transport.listen(HOST, 0, swarm.accept)
        ports[peer] = listener.address[1]
        ready.wait()
        for other in mine:
            if other > peer:
                swarm.connect(other, (HOST, ports[other]))
        assert await swarm.wait_for(lambda: set(swarm.sessions) == mine, 30)
        await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)
        start = time.time()
        cpu0 = _cpu_s()
        swarm.publish(manifest, chunks, verify=False)

        def done() -> bool:
            return sum(b.complete for b in swarm.blobs.values()) == n

        assert await swarm.wait_for(done, 600), "swarm exchange did not finish"
        end = time.time()
        cpu = _cpu_s() - cpu0
        await asyncio.to_thread(
            barrier.wait, BARRIER_TIMEOUT
        )  # keep serving until everyone is done
        await listener.aclose()
        c = swarm.counters
        return PeerReport(
            start, end, c.payload_down, c.duplicate_bytes, c.control_up, c.bytes_up, _rss_mb(), cpu
        )


def _child(
    kind: str, peer: int, args: dict[str, Any], ports: Any, barrier: Barrier, ready: Any, out: Any
) -> None:
    profile = os.environ.get("BENCH_PROFILE")
    if profile and peer == 1 and kind != "raw":
        import cProfile

        with cProfile.Profile() as prof:
            _run_child(kind, peer, args, ports, barrier, ready, out)
        prof.dump_stats(profile)
    else:
        _run_child(kind, peer, args, ports, barrier, ready, out)


def _run_child(
    kind: str, peer: int, args: dict[str, Any], ports: Any, barrier: Barrier, ready: Any, out: Any
) -> None:
    if kind == "raw":
        coro = _raw_peer(peer, args["n"], args["size"], ports, barrier, ready)
    else:
        coro = _swarm_peer(
            peer,
            args["n"],
            args["size"],
            args["pieces"],
            args["block_size"],
            args["topology"],
            ports,
            barrier,
            ready,
            args.get("length_only", False),
        )
    out.put((peer, asdict(asyncio.run(_with_deadline(coro, peer)))))


async def _with_deadline(coro: Any, peer: int) -> PeerReport:
    """Run one peer; past the deadline, print where every task is and fail."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=PEER_DEADLINE)
    if not done:
        print(f"peer {peer} passed its deadline; tasks:", file=sys.stderr)
        for t in asyncio.all_tasks():
            t.print_stack(file=sys.stderr)
        task.cancel()
        raise TimeoutError(f"peer {peer} did not finish within {PEER_DEADLINE}s")
    result: PeerReport = task.result()
    return result


def run_case(kind: str, args: dict[str, Any]) -> list[PeerReport]:
    """Run one exchange with ``n`` peer processes; returns their reports."""
    ctx = mp.get_context("spawn")
    n = args["n"]
    with ctx.Manager() as manager:
        ports = manager.dict()
        ready = manager.Event()
        barrier = ctx.Barrier(n)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_child, args=(kind, i, args, ports, barrier, ready, out))
            for i in range(1, n + 1)
        ]
        for p in procs:
            p.start()
        deadline = time.time() + 120
        while len(ports) < n:
            if time.time() > deadline or any(p.exitcode not in (None, 0) for p in procs):
                raise RuntimeError("peer processes failed to start")
            time.sleep(0.01)
        ready.set()
        reports = dict(out.get(timeout=900) for _ in procs)
        for p in procs:
            p.join(timeout=30)
    return [PeerReport(**reports[i]) for i in sorted(reports)]


def elapsed(reports: list[PeerReport]) -> float:
    """From the first start to the last finish."""
    return max(r.end for r in reports) - min(r.start for r in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--size-mb", type=float, default=8.0)
    parser.add_argument("--pieces", type=int, default=20, help="pieces per blob (chunk.num_chunks)")
    parser.add_argument(
        "--block-sizes",
        default="524288,262144,65536,16384",
        help="comma-separated block sizes; the first is the headline",
    )
    parser.add_argument("--topology", default="full")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="add a row for the first block size with piece hashes unchecked (what SHA-256 costs)",
    )
    ns = parser.parse_args()
    size = int(ns.size_mb * 1_000_000)
    base = {"n": ns.peers, "size": size, "pieces": ns.pieces, "topology": ns.topology}
    useful = size * (ns.peers - 1) * ns.peers

    cases = [(int(x), False) for x in ns.block_sizes.split(",")]
    if ns.diagnose:
        cases.append((cases[0][0], True))
    # Repeats are interleaved (raw, every case, raw, every case, ...) so that the VM's speed
    # drifting over the minutes of a run weighs on the baseline and the swarm alike.
    raw_runs: list[list[PeerReport]] = []
    swarm_runs: dict[tuple[int, bool], list[list[PeerReport]]] = {c: [] for c in cases}
    for _ in range(ns.repeats):
        raw_runs.append(run_case("raw", base))
        for bs, length_only in cases:
            reps = run_case("swarm", {**base, "block_size": bs, "length_only": length_only})
            assert sum(r.payload_down for r in reps) == useful, "useful bytes mismatch"
            swarm_runs[bs, length_only].append(reps)
    raw_times = [elapsed(r) for r in raw_runs]
    raw = statistics.median(raw_times)
    raw_cpu = statistics.median(sum(p.cpu_s for p in r) for r in raw_runs)
    rows = []
    for (bs, length_only), runs in swarm_runs.items():
        times = [elapsed(reps) for reps in runs]
        dup = [sum(r.duplicate for r in reps) / useful for reps in runs]
        ctrl = [sum(r.control_up for r in reps) / useful for reps in runs]
        rss = [max(r.peak_rss_mb for r in reps) for reps in runs]
        cpu = [sum(r.cpu_s for r in reps) for reps in runs]
        t = statistics.median(times)
        rows.append(
            {
                "block_size": bs,
                "hashes_checked": not length_only,
                "swarm_s": round(t, 3),
                "raw_s": round(raw, 3),
                "goodput_ratio": round(raw / t, 3),
                "goodput_mb_s": round(useful / t / 1e6, 1),
                "duplicate_ratio": max(dup),
                "control_ratio": max(ctrl),
                "peak_rss_mb": round(max(rss), 1),
                "cpu_s": round(statistics.median(cpu), 2),
            }
        )
    print(
        f"{ns.peers} peers x {ns.size_mb:g} MB all-to-all, {ns.pieces} pieces, "
        f"topology {ns.topology}, median of {ns.repeats}; raw asyncio {raw:.3f}s "
        f"({useful / raw / 1e6:.0f} MB/s useful, {raw_cpu:.2f} CPU-s)"
    )
    head = (
        f"{'block':>9} {'swarm s':>8} {'ratio':>6} {'MB/s':>7} {'dup %':>7} {'ctrl %':>7} "
        f"{'RSS MB':>7} {'CPU s':>6}"
    )
    print(head)
    for r in rows:
        label = f"{r['block_size']}{'' if r['hashes_checked'] else '*'}"
        print(
            f"{label:>9} {r['swarm_s']:>8.3f} {r['goodput_ratio']:>6.3f} "
            f"{r['goodput_mb_s']:>7.1f} {100 * r['duplicate_ratio']:>7.3f} "
            f"{100 * r['control_ratio']:>7.3f} {r['peak_rss_mb']:>7.1f} {r['cpu_s']:>6.2f}"
        )
    if ns.diagnose:
        print("* diagnostic: piece sizes checked, SHA-256 not (not a valid configuration)")
    if ns.json is not None:
        headline = rows[0]
        result = {
            "goodput_ratio": headline["goodput_ratio"],
            "duplicate_ratio": headline["duplicate_ratio"],
            "control_ratio": headline["control_ratio"],
            "peak_rss_mb": headline["peak_rss_mb"],
            "raw_s": round(raw, 3),
            "raw_cpu_s": round(raw_cpu, 2),
            "raw_times_s": [round(x, 3) for x in raw_times],
            "setting": {**base, "repeats": ns.repeats},
            "rows": rows,
        }
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
