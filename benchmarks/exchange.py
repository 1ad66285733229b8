"""All-to-all exchange of large blobs among peer processes over loopback, against raw asyncio.

Each of N peer processes holds one blob of M bytes per round and must end the round with
everyone's blob. Two runs move the same useful bytes between the same processes:

* **raw**: every process writes its blob straight to every other over plain asyncio streams
  (no protocol, no hashing, no relaying, nothing kept): the ceiling for Python on this machine;
* **swarm**: every process runs a fltorrent :class:`Swarm` over TCP (handshake, manifests,
  requests, pieces, SHA-256 verification, haves, relaying) on the chosen topology.

``--transport`` chooses the swarm's TCP: ``plain`` (the default, as before this option: the
``writev`` fast path), ``tls`` (TLS 1.3, each peer presenting its own token from a federation
that the parent makes for the run, as ``fltorrent run`` does) or ``both``: a plaintext and a TLS
swarm for each block size in the same invocation, next to each other in every repeat (their
order alternating between repeats), with ``tls_cost`` = 1 - TLS goodput / plaintext goodput
(from the two median times, and the median of the per-repeat pairs). The raw baseline is
plaintext asyncio either way.

Both run ``--rounds`` exchanges back to back over the same connections, as a federation does.
Before round r the swarm drops the blobs of rounds before r - 1, as the peer round loop does
(``fltorrent.peer``), so from round 3 on a peer receives into memory that round r - 2 gave
back. Round 1 is reported apart: its peers grow their heaps by every byte they keep (page
faults that raw asyncio, which keeps nothing, never pays), which later rounds do not.

Reported per block size: ``goodput_ratio`` = raw time / swarm time over rounds >= 3 (the
steady state; round 1 when fewer rounds run), ``goodput_ratio_first_round`` = the same for
round 1, ``duplicate_ratio`` = duplicate payload / useful payload and ``control_ratio`` =
control bytes sent / useful payload (the worst round), ``peak_rss_mb`` = the largest peak
resident set of one peer process, CPU-seconds and minor page faults summed over the peers.
A round's clock starts when every process passed a barrier and ends when the last process
holds every blob of that round.

    python benchmarks/exchange.py --json bench-results/exchange.json   # sweep of block sizes
    python benchmarks/exchange.py --block-sizes 16384 --repeats 1       # one quick case
    python benchmarks/exchange.py --block-sizes 524288 --repeats 3 --transport both \
        --json bench-results/exchange-tls.json                          # what TLS costs
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from fltorrent.net import TcpTransport  # noqa: E402
from fltorrent.runtime.security import peer_transport  # noqa: E402
from fltorrent.security import Credentials, create_local_federation  # noqa: E402
from fltorrent.security.keys import key_pem  # noqa: E402
from fltorrent.swarm import Manifest, Swarm, SwarmOptions  # noqa: E402
from fltorrent.topology import build_topology, neighbours  # noqa: E402

HOST = "127.0.0.1"
RAW_CHUNK = 256 * 1024
BARRIER_TIMEOUT = 300.0  # a broken run fails instead of hanging
PEER_DEADLINE = 120.0
HANDSHAKE_TIMEOUT = 30.0  # 8 processes on 2 cores handshake at once
TRANSPORTS: dict[str, tuple[str, ...]] = {
    "plain": ("plain",),
    "tls": ("tls",),
    "both": ("plain", "tls"),
}
# What a peer process needs to present its token: PEM of its key, its token, the federation.
Secrets = tuple[bytes, bytes, bytes]


@dataclass
class PeerReport:
    """What one peer process measured in one round."""

    start: float
    end: float
    payload_down: int = 0
    duplicate: int = 0
    control_up: int = 0
    bytes_up: int = 0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    faults: int = 0


def _blob(peer: int, size: int) -> bytes:
    # Distinct, incompressible-looking content per peer, cheap to make.
    return (peer.to_bytes(4, "big") * 8 + os.urandom(32)) * (size // 64) + b"\0" * (size % 64)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Meter:
    """Wall clock, CPU time and minor page faults of this process over one round."""

    def __init__(self) -> None:
        self.start = time.time()
        self._cpu, self._faults = self._read()

    @staticmethod
    def _read() -> tuple[float, int]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime, ru.ru_minflt

    def report(self, **counts: int) -> PeerReport:
        end = time.time()
        cpu, faults = self._read()
        return PeerReport(
            self.start,
            end,
            peak_rss_mb=_rss_mb(),
            cpu_s=cpu - self._cpu,
            faults=faults - self._faults,
            **counts,
        )


async def _barrier(barrier: Barrier) -> None:
    await asyncio.to_thread(barrier.wait, BARRIER_TIMEOUT)


# ---------------------------------------------------------------------------- raw baseline
async def _raw_peer(
    peer: int, n: int, size: int, rounds: int, ports: Any, barrier: Barrier, ready: Any
) -> list[PeerReport]:
    data = _blob(peer, size)
    received = {i: 0 for i in range(1, n + 1) if i != peer}
    all_in = [asyncio.Event() for _ in range(rounds)]

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readexactly(4)
        sender = int.from_bytes(head, "big")
        while received[sender] < size * rounds:
            chunk = await reader.read(RAW_CHUNK)
            if not chunk:
                break
            before = received[sender]
            received[sender] += len(chunk)
            if received[sender] // size > before // size:  # this sender finished a round
                for r in range(min(received.values()) // size):
                    all_in[r].set()
        writer.close()

    server = await asyncio.start_server(on_conn, HOST, 0)
    ports[peer] = server.sockets[0].getsockname()[1]
    ready.wait()
    writers = []
    for other in received:
        _, w = await asyncio.open_connection(HOST, ports[other])
        w.write(peer.to_bytes(4, "big"))
        writers.append(w)

    async def send(w: asyncio.StreamWriter) -> None:
        view = memoryview(data)
        for off in range(0, size, RAW_CHUNK):
            w.write(view[off : off + RAW_CHUNK])
            await w.drain()

    reports = []
    for r in range(rounds):
        await _barrier(barrier)
        meter = _Meter()
        await asyncio.gather(*(send(w) for w in writers))
        await all_in[r].wait()
        reports.append(meter.report(payload_down=size * (n - 1)))
    for w in writers:
        w.close()
    await _barrier(barrier)  # keep serving until everyone is done
    server.close()
    return reports


# ---------------------------------------------------------------------------- swarm
def _federation_secrets(n: int) -> dict[int, Secrets]:
    """A fresh federation's credentials for peers 1..n, as bytes a spawned child can take."""
    fed = create_local_federation("bench", n)
    return {
        pid: (key_pem(creds.key), creds.token, creds.federation) for pid, creds in fed.peers.items()
    }


def _transport(secrets: Secrets | None) -> TcpTransport:
    """Plain TCP, or TLS presenting the peer's own token."""
    if secrets is None:
        return TcpTransport()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(secrets[0], password=None)
    assert isinstance(key, Ed25519PrivateKey)
    creds = Credentials(key, secrets[1], secrets[2])
    return peer_transport(creds, tls=True, handshake_timeout=HANDSHAKE_TIMEOUT)


async def _swarm_peer(
    peer: int, n: int, args: dict[str, Any], ports: Any, barrier: Barrier, ready: Any
) -> list[PeerReport]:
    size, pieces, rounds = args["size"], args["pieces"], args.get("rounds", 1)
    if args.get("length_only", False):
        # Diagnostic only (--diagnose): check piece sizes but not their SHA-256, to measure
        # what hashing costs. Never a valid configuration, so it is patched in here only.
        Manifest.verify = lambda self, i, d: len(d) == self.piece_sizes[i]  # type: ignore[method-assign,assignment]
    data = _blob(peer, size)
    step = -(-size // pieces)
    chunks = [data[i : i + step] for i in range(0, size, step)]
    del data
    graph = build_topology(args["topology"], n, connections=3, seed=0)
    mine = set(neighbours(graph, peer))
    transport = _transport(args.get("secrets"))
    assert transport.encrypted == (args.get("transport", "plain") == "tls")
    block_size = args["block_size"]
    opts = SwarmOptions(
        federation="bench",
        peer_id=peer,
        block_size=block_size,
        max_block_size=max(block_size, 1 << 20),
        max_frame_size=(1 << 20) + 4096,
    )
    swarm = Swarm(
        opts, transport=transport, want=lambda _r, a, _t: a != peer, allow_peer=mine.__contains__
    )
    reports = []
    async with swarm:
        listener = await transport.listen(HOST, 0, swarm.accept)
        ports[peer] = listener.address[1]
        ready.wait()
        for other in mine:
            if other > peer:
                swarm.connect(other, (HOST, ports[other]))
        assert await swarm.wait_for(lambda: set(swarm.sessions) == mine, 30)
        c = swarm.counters
        for rnd in range(1, rounds + 1):
            # Built outside the clock, as a peer builds it after training.
            manifest = Manifest.build(author=peer, round=rnd, pieces=chunks, num_samples=1)
            before = (c.payload_down, c.duplicate_bytes, c.control_up, c.bytes_up)
            swarm.drop_blobs(_older_than(rnd - 1))  # as the peer round loop does
            await _barrier(barrier)
            meter = _Meter()
            swarm.publish(manifest, chunks, verify=False)

            def done(r: int = rnd) -> bool:
                return sum(b.complete for b in swarm.blobs.values() if b.manifest.round == r) == n

            assert await swarm.wait_for(done, 600), "swarm exchange did not finish"
            after = (c.payload_down, c.duplicate_bytes, c.control_up, c.bytes_up)
            down, dup, ctrl, up = (a - b for a, b in zip(after, before, strict=True))
            reports.append(
                meter.report(payload_down=down, duplicate=dup, control_up=ctrl, bytes_up=up)
            )
        await _barrier(barrier)  # keep serving until everyone is done
        await listener.aclose()
    return reports


def _older_than(round_: int) -> Callable[[Manifest], bool]:
    return lambda m: m.round < round_


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
    n = args["n"]
    if kind == "raw":
        coro = _raw_peer(peer, n, args["size"], args.get("rounds", 1), ports, barrier, ready)
    else:
        coro = _swarm_peer(peer, n, args, ports, barrier, ready)
    reports = asyncio.run(_with_deadline(coro, peer))
    out.put((peer, [asdict(r) for r in reports]))


async def _with_deadline(coro: Any, peer: int) -> list[PeerReport]:
    """Run one peer; past the deadline, print where every task is and fail."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=PEER_DEADLINE)
    if not done:
        print(f"peer {peer} passed its deadline; tasks:", file=sys.stderr)
        for t in asyncio.all_tasks():
            t.print_stack(file=sys.stderr)
        task.cancel()
        raise TimeoutError(f"peer {peer} did not finish within {PEER_DEADLINE}s")
    result: list[PeerReport] = task.result()
    return result


def run_rounds(kind: str, args: dict[str, Any]) -> list[list[PeerReport]]:
    """Run ``args["rounds"]`` exchanges (default 1) with ``n`` peer processes, the swarm over
    ``args["transport"]`` (``plain``, the default, or ``tls``: a fresh federation per run).

    Returns, per round, the reports of every peer.
    """
    ctx = mp.get_context("spawn")
    n = args["n"]
    tls = kind != "raw" and args.get("transport", "plain") == "tls"
    secrets = _federation_secrets(n) if tls else {}
    with ctx.Manager() as manager:
        ports = manager.dict()
        ready = manager.Event()
        barrier = ctx.Barrier(n)
        out = ctx.Queue()
        procs = [
            ctx.Process(
                target=_child,
                args=(kind, i, {**args, "secrets": secrets.get(i)}, ports, barrier, ready, out),
            )
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
    per_peer = [[PeerReport(**r) for r in reports[i]] for i in sorted(reports)]
    return [list(peers) for peers in zip(*per_peer, strict=True)]


def run_case(kind: str, args: dict[str, Any]) -> list[PeerReport]:
    """The reports of the last round of :func:`run_rounds` (``benchmarks/ab.py`` uses this)."""
    return run_rounds(kind, args)[-1]


def elapsed(reports: list[PeerReport]) -> float:
    """From the first start to the last finish."""
    return max(r.end for r in reports) - min(r.start for r in reports)


def _steady(runs: list[list[list[PeerReport]]]) -> list[list[PeerReport]]:
    """The steady-state rounds (3 and later) of every run; round 1 when fewer ran."""
    return [rnd for run in runs for rnd in (run[2:] or run[:1])]


def _run_s(run: list[list[PeerReport]]) -> float:
    """Median elapsed time of one run's steady-state rounds."""
    return statistics.median(elapsed(r) for r in (run[2:] or run[:1]))


def _summary(rounds: list[list[PeerReport]]) -> tuple[float, float, int]:
    """Median elapsed time, CPU-seconds and page faults (summed over peers) of rounds."""
    return (
        statistics.median(elapsed(r) for r in rounds),
        statistics.median(sum(p.cpu_s for p in r) for r in rounds),
        int(statistics.median(sum(p.faults for p in r) for r in rounds)),
    )


Runs = list[list[list[PeerReport]]]  # per run, per round, per peer
Case = tuple[int, bool, str]  # block size, hashes unchecked (--diagnose), transport


def _row(
    case: Case,
    runs: Runs,
    raw: dict[str, float],
    useful: int,
) -> dict[str, Any]:
    bs, length_only, transport = case
    every = [rnd for run in runs for rnd in run]
    t, cpu, faults = _summary(_steady(runs))
    t1, cpu1, faults1 = _summary([run[0] for run in runs])
    return {
        "block_size": bs,
        "transport": transport,
        "hashes_checked": not length_only,
        "swarm_s": round(t, 3),
        "raw_s": round(raw["s"], 3),
        "goodput_ratio": round(raw["s"] / t, 3),
        "goodput_mb_s": round(useful / t / 1e6, 1),
        "swarm_s_per_repeat": [round(_run_s(run), 4) for run in runs],
        "first_round_s": round(t1, 3),
        "goodput_ratio_first_round": round(raw["first_s"] / t1, 3),
        "duplicate_ratio": max(sum(p.duplicate for p in r) / useful for r in every),
        "control_ratio": max(sum(p.control_up for p in r) / useful for r in every),
        "peak_rss_mb": round(max(p.peak_rss_mb for r in every for p in r), 1),
        "cpu_s": round(cpu, 2),
        "first_round_cpu_s": round(cpu1, 2),
        "faults": faults,
        "first_round_faults": faults1,
    }


def _tls_costs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per block size with both transports measured: TLS goodput against plaintext goodput.

    ``tls_cost`` = 1 - TLS goodput / plaintext goodput from the two median times (the steady
    state); ``tls_cost_per_repeat`` the same for the two runs of each repeat (run next to each
    other), ``tls_cost_paired_median`` their median.
    """
    by_case = {(r["block_size"], r["hashes_checked"], r["transport"]): r for r in rows}
    costs = []
    for (bs, checked, transport), plain in by_case.items():
        tls = by_case.get((bs, checked, "tls"))
        if transport != "plain" or tls is None:
            continue
        pairs = [
            1 - p / t
            for t, p in zip(tls["swarm_s_per_repeat"], plain["swarm_s_per_repeat"], strict=True)
        ]
        costs.append(
            {
                "block_size": bs,
                "hashes_checked": checked,
                "plain_goodput_mb_s": plain["goodput_mb_s"],
                "tls_goodput_mb_s": tls["goodput_mb_s"],
                "tls_cost": round(1 - plain["swarm_s"] / tls["swarm_s"], 3),
                "tls_cost_paired_median": round(statistics.median(pairs), 3),
                "tls_cost_per_repeat": [round(c, 3) for c in pairs],
                "plain_cpu_s": plain["cpu_s"],
                "tls_cpu_s": tls["cpu_s"],
                "tls_cost_first_round": round(1 - plain["first_round_s"] / tls["first_round_s"], 3),
            }
        )
    return costs


def _print(
    ns: argparse.Namespace,
    raw: dict[str, float],
    rows: list[dict[str, Any]],
    costs: list[dict[str, Any]],
) -> None:
    steady = "rounds >= 3" if ns.rounds >= 3 else "round 1"
    print(
        f"{ns.peers} peers x {ns.size_mb:g} MB all-to-all, {ns.pieces} pieces, "
        f"topology {ns.topology}, {ns.rounds} rounds, median of {ns.repeats}; steady state = "
        f"{steady}; raw asyncio {raw['s']:.3f}s ({raw['cpu_s']:.2f} CPU-s, "
        f"{raw['faults']:.0f} faults), round 1 {raw['first_s']:.3f}s"
    )
    print(
        f"{'block':>9} {'tcp':>5} {'swarm s':>8} {'ratio':>6} {'MB/s':>7} {'dup %':>7} "
        f"{'ctrl %':>7} {'RSS MB':>7} {'CPU s':>6} {'faults':>7} | {'round 1 s':>9} "
        f"{'ratio':>6} {'CPU s':>6} {'faults':>7}"
    )
    for r in rows:
        label = f"{r['block_size']}{'' if r['hashes_checked'] else '*'}"
        print(
            f"{label:>9} {r['transport']:>5} {r['swarm_s']:>8.3f} {r['goodput_ratio']:>6.3f} "
            f"{r['goodput_mb_s']:>7.1f} {100 * r['duplicate_ratio']:>7.3f} "
            f"{100 * r['control_ratio']:>7.3f} {r['peak_rss_mb']:>7.1f} {r['cpu_s']:>6.2f} "
            f"{r['faults']:>7} | {r['first_round_s']:>9.3f} "
            f"{r['goodput_ratio_first_round']:>6.3f} {r['first_round_cpu_s']:>6.2f} "
            f"{r['first_round_faults']:>7}"
        )
    if ns.diagnose:
        print("* diagnostic: piece sizes checked, SHA-256 not (not a valid configuration)")
    if costs:
        print(
            f"\nTLS against plaintext, {steady} (tls_cost = 1 - TLS goodput / plain goodput; "
            "paired: per repeat, the two runs next to each other)"
        )
        print(
            f"{'block':>9} {'plain MB/s':>10} {'TLS MB/s':>9} {'tls_cost':>8} {'paired':>7} "
            f"{'plain CPU s':>11} {'TLS CPU s':>9} {'round 1':>7}  per repeat"
        )
        for c in costs:
            label = f"{c['block_size']}{'' if c['hashes_checked'] else '*'}"
            per = " ".join(f"{100 * x:.1f}%" for x in c["tls_cost_per_repeat"])
            print(
                f"{label:>9} {c['plain_goodput_mb_s']:>10.1f} {c['tls_goodput_mb_s']:>9.1f} "
                f"{100 * c['tls_cost']:>7.1f}% {100 * c['tls_cost_paired_median']:>6.1f}% "
                f"{c['plain_cpu_s']:>11.2f} {c['tls_cpu_s']:>9.2f} "
                f"{100 * c['tls_cost_first_round']:>6.1f}%  {per}"
            )


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
    parser.add_argument("--rounds", type=int, default=3, help="exchanges per run (>= 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--transport",
        choices=sorted(TRANSPORTS),
        default="plain",
        help="the swarm's TCP: plain, TLS 1.3, or both in the same run (with tls_cost)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="add a row for the first block size with piece hashes unchecked (what SHA-256 costs)",
    )
    ns = parser.parse_args()
    if ns.rounds < 1 or ns.repeats < 1:
        parser.error("--rounds and --repeats must be at least 1")
    size = int(ns.size_mb * 1_000_000)
    base = {
        "n": ns.peers,
        "size": size,
        "pieces": ns.pieces,
        "topology": ns.topology,
        "rounds": ns.rounds,
    }
    useful = size * (ns.peers - 1) * ns.peers  # per round

    cases = [(int(x), False) for x in ns.block_sizes.split(",")]
    if ns.diagnose:
        cases.append((cases[0][0], True))
    transports = TRANSPORTS[ns.transport]
    # Repeats are interleaved (raw, every case, raw, every case, ...) so that the VM's speed
    # drifting over the minutes of a run weighs on the baseline and the swarm alike; the
    # transports of one case run next to each other, first one then the other in turn.
    raw_runs: Runs = []
    swarm_runs: dict[Case, Runs] = {(bs, lo, t): [] for bs, lo in cases for t in transports}
    for rep in range(ns.repeats):
        raw_runs.append(run_rounds("raw", base))
        for bs, length_only in cases:
            for transport in transports if rep % 2 == 0 else transports[::-1]:
                args = {**base, "block_size": bs, "length_only": length_only}
                run = run_rounds("swarm", {**args, "transport": transport})
                for rnd in run:
                    assert sum(r.payload_down for r in rnd) == useful, "useful bytes mismatch"
                swarm_runs[bs, length_only, transport].append(run)
    raw_s, raw_cpu, raw_faults = _summary(_steady(raw_runs))
    raw = {
        "s": raw_s,
        "cpu_s": raw_cpu,
        "faults": raw_faults,
        "first_s": _summary([run[0] for run in raw_runs])[0],
    }
    rows = [_row(case, runs, raw, useful) for case, runs in swarm_runs.items()]
    costs = _tls_costs(rows)
    _print(ns, raw, rows, costs)
    if ns.json is not None:
        headline = rows[0]
        result: dict[str, Any] = {
            "goodput_ratio": headline["goodput_ratio"],
            "goodput_ratio_first_round": headline["goodput_ratio_first_round"],
            "duplicate_ratio": headline["duplicate_ratio"],
            "control_ratio": headline["control_ratio"],
            "peak_rss_mb": headline["peak_rss_mb"],
            "raw_s": round(raw_s, 3),
            "raw_first_round_s": round(raw["first_s"], 3),
            "raw_cpu_s": round(raw_cpu, 2),
            "raw_faults": raw_faults,
            "raw_times_s": [[round(elapsed(r), 3) for r in run] for run in raw_runs],
            "setting": {**base, "repeats": ns.repeats, "transport": ns.transport},
            "rows": rows,
        }
        if costs:
            result["tls_cost"] = costs[0]["tls_cost"]  # the headline block size
            result["tls_costs"] = costs
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
