"""One peer from start to finish: listen, meet the tracker, connect, run rounds, seed, stop.

Used by every launcher: the in-process runtime runs many nodes in one event loop; the process
runtime and ``fltorrent peer`` run one node per process. The configuration comes from the
tracker's welcome, so a peer on another host needs only the tracker's address.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import save_file

from fltorrent.config import parse_config
from fltorrent.errors import FltorrentError
from fltorrent.learn.learner import Learner
from fltorrent.net.base import Address, Connection, Transport
from fltorrent.peer import FaultHook, Peer, PeerCrash, PeerStatus, Phase
from fltorrent.runtime.build import (
    FederationData,
    build_learner,
    load_federation_data,
    round_policy,
    swarm_options,
)
from fltorrent.swarm import Counters, Swarm
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.tracker import Done, Progress, TrackerClient, Welcome

log = logging.getLogger(__name__)

EVALUATED = "evaluated"
"""Progress phase sent once a round's metrics exist (the progress display counts these)."""


@dataclass
class NodeOutcome:
    """How one peer's run ended."""

    peer_id: int
    finished: bool
    error: str | None = None
    metrics: list[RoundMetrics] = field(default_factory=list)
    counters: Counters | None = None


@dataclass
class NodeHooks:
    """Optional callbacks and shared resources injected by the launcher."""

    data: FederationData | None = None  # preloaded (in-process runtime): load once for all
    executor: Executor | None = None
    on_metrics: Callable[[RoundMetrics], None] | None = None
    on_phase: Callable[[PeerStatus], None] | None = None
    on_peer: Callable[[Peer], None] | None = None
    fault_hook: FaultHook | None = None


async def run_node(
    *,
    transport: Transport,
    tracker: Address,
    host: str,
    peer_id: int | None,
    model_dir: Path | None,
    hooks: NodeHooks | None = None,
    connect_timeout: float = 30.0,
) -> NodeOutcome:
    """Run one peer until the federation is done (or it crashes); never raises FltorrentError."""
    hooks = hooks or NodeHooks()
    client: TrackerClient | None = None
    outcome = NodeOutcome(peer_id or 0, finished=False)
    try:
        client = await TrackerClient.connect(transport, tracker, timeout=connect_timeout)
        swarm_holder: list[Swarm] = []

        async def accept(conn: Connection) -> None:
            if swarm_holder:
                await swarm_holder[0].accept(conn)
            else:  # not set up yet: the dialing side retries
                await conn.aclose()

        listener = await transport.listen(host, 0, accept)
        try:
            welcome = await client.register(
                federation=None,
                peer_id=peer_id,
                host=host,
                port=listener.address[1],
                timeout=connect_timeout + 600.0,
            )
            outcome.peer_id = welcome.peer_id
            await _run_registered(
                welcome=welcome,
                client=client,
                transport=transport,
                port=listener.address[1],
                swarm_holder=swarm_holder,
                hooks=hooks,
                model_dir=model_dir,
                outcome=outcome,
            )
        finally:
            await listener.aclose()
    except* PeerCrash as eg:
        outcome.error = f"crashed: {eg.exceptions[0]}"
        log.warning("peer %d crashed (fault injection): %s", outcome.peer_id, eg.exceptions[0])
    except* FltorrentError as eg:
        exc = eg.exceptions[0]
        outcome.error = f"{type(exc).__name__}: {exc}"
        log.error("peer %d failed: %s", outcome.peer_id, exc)
    except* Exception as eg:
        # A fault boundary: a bug in one peer must not cancel the other peers of this process.
        bug = eg.exceptions[0]
        outcome.error = f"{type(bug).__name__}: {bug}"
        log.error("peer %d crashed: %s", outcome.peer_id, bug, exc_info=bug)
    finally:
        if client is not None:
            await client.aclose()
    return outcome


async def _run_registered(
    *,
    welcome: Welcome,
    client: TrackerClient,
    transport: Transport,
    port: int,
    swarm_holder: list[Swarm],
    hooks: NodeHooks,
    model_dir: Path | None,
    outcome: NodeOutcome,
) -> None:
    config = parse_config(welcome.config)
    peer_id = welcome.peer_id
    data = hooks.data
    if data is None:
        data = await asyncio.to_thread(load_federation_data, config)
    learner = await asyncio.to_thread(build_learner, config, peer_id, data)
    neighbours = set(welcome.neighbours)
    policy = round_policy(config)
    swarm = Swarm(
        swarm_options(config, federation=welcome.federation, peer_id=peer_id, listen_port=port),
        transport=transport,
        want=lambda _round, _author: False,
        allow_peer=neighbours.__contains__,
    )
    async with swarm, asyncio.TaskGroup() as tg:
        peer = Peer(
            peer_id=peer_id,
            learner=learner,
            swarm=swarm,
            members=set(welcome.members),
            policy=policy,
            executor=hooks.executor,
            on_metrics=_metrics_reporter(client, hooks.on_metrics, tg),
            on_phase=_phase_reporter(client, hooks.on_phase, tg),
            fault_hook=hooks.fault_hook,
        )
        swarm.set_manifest_check(peer.check_manifest)
        swarm_holder.append(swarm)
        if hooks.on_peer is not None:
            hooks.on_peer(peer)
        client.on_left = peer.member_left
        listen_task = tg.create_task(client.listen())
        for other in neighbours:
            if other > peer_id:  # the lower id dials: one connection per edge
                swarm.connect(other, welcome.members[other])
        outcome.metrics = await peer.run()
        await client.progress(Done())
        # Keep seeding until every live peer is done, the tracker is gone, or the grace ends.
        waits = [tg.create_task(client.all_done.wait()), tg.create_task(client.lost.wait())]
        await asyncio.wait(waits, timeout=policy.seed_grace, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        peer.phase = Phase.DONE
        outcome.finished = True
        outcome.counters = swarm.counters.snapshot()
        if model_dir is not None:
            await asyncio.to_thread(_save_model, learner, model_dir, peer_id, policy.rounds)
        listen_task.cancel()
        await client.aclose()


def _save_model(learner: Learner, model_dir: Path, peer_id: int, rounds: int) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in learner.model.state_dict().items()}
    save_file(
        state,
        str(model_dir / f"peer-{peer_id}.safetensors"),
        metadata={"peer": str(peer_id), "rounds": str(rounds)},
    )


def _phase_reporter(
    client: TrackerClient,
    forward: Callable[[PeerStatus], None] | None,
    tg: asyncio.TaskGroup,
) -> Callable[[PeerStatus], None]:
    def report(status: PeerStatus) -> None:
        if forward is not None:
            forward(status)
        msg = Progress(
            round=status.round,
            phase=status.phase.value,
            completion=status.completion,
            accuracy=status.accuracy,
        )
        tg.create_task(client.progress(msg))

    return report


def _metrics_reporter(
    client: TrackerClient,
    forward: Callable[[RoundMetrics], None] | None,
    tg: asyncio.TaskGroup,
) -> Callable[[RoundMetrics], None]:
    def report(m: RoundMetrics) -> None:
        if forward is not None:
            forward(m)
        msg = Progress(round=m.round, phase=EVALUATED, completion=m.completion, accuracy=m.accuracy)
        tg.create_task(client.progress(msg))

    return report
