"""Simulation launcher: every peer in one process, over an in-memory network, in virtual time.

The same tracker, node, peer, swarm and wire code as the real launchers runs on a
:class:`~fltorrent.net.memory.MemoryNetwork` inside a
:class:`~fltorrent.net.clock.VirtualTimeLoop`: waiting on a shaped link, a deadline or modelled
compute (FLOPs / device speed, see :mod:`fltorrent.learn.flops`) advances the virtual clock
without costing wall time, and no thread runs, so the same seed gives the same run.

Churn: the failure schedule (``faults`` section) crashes a peer as it starts training in its
crash round. The peer's connections drop, as a dead process's would; the tracker tells the
others, who stop waiting for it. If the schedule has it rejoin, it registers again under its id
once the federation has reached the rejoin round and goes on from the model it had (its state
is kept, as if on disk).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from fltorrent.config import Config
from fltorrent.errors import FederationError
from fltorrent.net.base import Address
from fltorrent.net.clock import is_virtual
from fltorrent.net.memory import MemoryNetwork
from fltorrent.peer import FaultHook, Peer, PeerCrash, PeerStatus, Phase
from fltorrent.runtime.build import failure_schedule, load_federation_data, make_tracker
from fltorrent.runtime.node import NodeHooks, NodeOutcome, PeerState, run_node
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.tracker import Tracker

CHECK_S = 5.0
Outage = tuple[int, int | None]


class Churn:
    """Crashes peers by schedule ({peer: [(crash round, rejoin round or None)]})."""

    def __init__(self, schedule: dict[int, list[Outage]], then: FaultHook | None = None) -> None:
        self.pending = {p: list(o) for p, o in schedule.items() if o}
        self.then = then

    def __call__(self, peer_id: int, round_: int, phase: Phase) -> None:
        outages = self.pending.get(peer_id)
        if outages and phase is Phase.TRAINING and round_ >= outages[0][0]:
            crash, rejoin = outages[0]
            raise PeerCrash(f"scheduled crash in round {crash} (rejoin: {rejoin or 'never'})")
        if self.then is not None:
            self.then(peer_id, round_, phase)

    def next_rejoin(self, peer_id: int) -> int | None:
        """The round at which the peer that just crashed comes back (consumes the outage)."""
        outages = self.pending.get(peer_id)
        if not outages:
            return None
        _crash, rejoin = outages.pop(0)
        return rejoin


async def run_sim(
    config: Config,
    *,
    model_dir: Path | None,
    on_metrics: Callable[[RoundMetrics], None],
    on_phase: Callable[[PeerStatus], None],
    fault_hook: FaultHook | None = None,
    on_peer: Callable[[Peer], None] | None = None,
) -> list[NodeOutcome]:
    """Run the whole federation in virtual time; returns each peer's outcome."""
    if not is_virtual():
        raise FederationError(
            "sim mode needs a virtual-time event loop: use Federation.run(), or await it "
            "inside fltorrent.net.clock.run_virtual()"
        )
    n = config.federate.client_num
    data = load_federation_data(config)  # inline: threads do not mix with virtual time
    churn = Churn(failure_schedule(config), fault_hook)
    saved: dict[int, PeerState] = {}
    hooks = NodeHooks(
        data=data,
        on_metrics=on_metrics,
        on_phase=on_phase,
        fault_hook=churn,
        on_peer=on_peer,
        simulated=True,
        clock_origin=asyncio.get_running_loop().time(),
        saved=saved,
    )
    progress = asyncio.Event()
    tracker = make_tracker(config, on_progress=lambda _member: progress.set())
    async with MemoryNetwork() as network, tracker:
        address = await tracker.start(network, config.runtime.host, 0)
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(
                    _life(
                        i,
                        network=network,
                        tracker=tracker,
                        address=address,
                        host=config.runtime.host,
                        model_dir=model_dir,
                        hooks=hooks,
                        churn=churn,
                        progress=progress,
                    )
                )
                for i in range(1, n + 1)
            ]
    return [t.result() for t in tasks]


async def _life(
    peer_id: int,
    *,
    network: MemoryNetwork,
    tracker: Tracker,
    address: Address,
    host: str,
    model_dir: Path | None,
    hooks: NodeHooks,
    churn: Churn,
    progress: asyncio.Event,
) -> NodeOutcome:
    """Run one peer; after each crash, wait for its rejoin round and run it again."""
    metrics: list[RoundMetrics] = []
    crashes: list[str] = []
    while True:
        outcome = await run_node(
            transport=network,
            tracker=address,
            host=host,
            peer_id=peer_id,
            model_dir=model_dir,
            hooks=hooks,
        )
        metrics += outcome.metrics
        if outcome.finished or outcome.error is None or not outcome.error.startswith("crashed"):
            break
        crashes.append(outcome.error)
        rejoin = churn.next_rejoin(peer_id)
        if rejoin is None or not await _wait_for_round(tracker, rejoin, progress):
            break
    outcome.metrics = metrics
    if crashes and outcome.finished:
        outcome.error = "; ".join(crashes) + "; rejoined"
    return outcome


async def _wait_for_round(tracker: Tracker, round_: int, progress: asyncio.Event) -> bool:
    """Wait until a live member reached ``round_``; ``False`` once nobody can get there.

    ``progress`` is set on every progress report the tracker receives; a peer that is down
    re-checks then (and at the latest every ``CHECK_S`` virtual seconds, should reports stop).
    """
    while True:
        live = [m for m in tracker.members.values() if m.alive]
        if any(m.round >= round_ for m in live):
            return True
        if not live or all(m.done for m in live):
            return False
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), CHECK_S)
