"""Churn: peers that crash by schedule and, if the schedule says so, come back.

The failure schedule (``faults`` section, :func:`fltorrent.runtime.build.failure_schedule`)
crashes a peer as it starts training in its crash round: its node ends, its connections drop
as a dead process's would, the tracker tells the others, who stop waiting for it. If it is to
rejoin, :func:`run_with_churn` starts its node again once the federation has reached the rejoin
round; the node registers under its old id and goes on from the state the launcher kept (as if
on disk). Used by the in-process and the simulation launchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from fltorrent.net.base import Address, Transport
from fltorrent.peer import FaultHook, PeerCrash, Phase
from fltorrent.runtime.node import NodeHooks, NodeOutcome, run_node
from fltorrent.security.credentials import Credentials
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


class RoundWatch:
    """Wakes peers that are down when the tracker hears progress (pass ``notify`` to it)."""

    def __init__(self) -> None:
        self.progress = asyncio.Event()

    def notify(self, *_args: object) -> None:
        """Tracker ``on_progress`` callback."""
        self.progress.set()

    async def wait_for_round(self, tracker: Tracker, round_: int) -> bool:
        """Wait until a live member reached ``round_``; ``False`` once nobody can get there.

        Re-checks on every progress report the tracker receives, and at the latest every
        ``CHECK_S`` seconds should reports stop.
        """
        while True:
            live = [m for m in tracker.members.values() if m.alive]
            if any(m.round >= round_ for m in live):
                return True
            if not live or all(m.done for m in live):
                return False
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), CHECK_S)


async def _gone(tracker: Tracker, peer_id: int, timeout: float = 30.0) -> bool:
    """Wait until the tracker has noticed that ``peer_id``'s old connection ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (member := tracker.members.get(peer_id)) is not None and member.alive:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def run_with_churn(
    peer_id: int,
    *,
    transport: Transport,
    credentials: Credentials | None,
    tracker: Tracker,
    address: Address,
    host: str,
    model_dir: Path | None,
    hooks: NodeHooks,
    churn: Churn,
    watch: RoundWatch,
) -> NodeOutcome:
    """Run one peer; after each scheduled crash, wait for its rejoin round and run it again."""
    metrics: list[RoundMetrics] = []
    crashes: list[str] = []
    while True:
        outcome = await run_node(
            transport=transport,
            tracker=address,
            host=host,
            peer_id=peer_id,
            model_dir=model_dir,
            hooks=hooks,
            credentials=credentials,
        )
        metrics += outcome.metrics
        if outcome.finished or not outcome.crashed:
            break
        crashes.append(outcome.error or "crashed")
        rejoin = churn.next_rejoin(peer_id)
        if rejoin is None or not await watch.wait_for_round(tracker, rejoin):
            break
        if not await _gone(tracker, peer_id):
            break  # the tracker still holds the dead connection: a new one would be refused
    outcome.metrics = metrics
    if crashes and outcome.finished:
        outcome.error = "; ".join(crashes) + "; rejoined"
    return outcome


async def run_all(
    peers: int,
    *,
    transport: Callable[[int], Transport],
    credentials: Mapping[int, Credentials] | None,
    tracker: Tracker,
    address: Address,
    host: str,
    model_dir: Path | None,
    hooks: NodeHooks,
    churn: Churn,
    watch: RoundWatch,
) -> list[NodeOutcome]:
    """Run peers ``1..peers`` side by side (each through :func:`run_with_churn`), peer ``i``
    over ``transport(i)`` with ``credentials[i]``."""
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(
                run_with_churn(
                    i,
                    transport=transport(i),
                    credentials=credentials[i] if credentials is not None else None,
                    tracker=tracker,
                    address=address,
                    host=host,
                    model_dir=model_dir,
                    hooks=hooks,
                    churn=churn,
                    watch=watch,
                )
            )
            for i in range(1, peers + 1)
        ]
    return [t.result() for t in tasks]
