"""Simulation launcher: every peer in one process, over an in-memory network, in virtual time.

The same tracker, node, peer, swarm and wire code as the real launchers runs on a
:class:`~fltorrent.net.memory.MemoryNetwork` inside a
:class:`~fltorrent.net.clock.VirtualTimeLoop`: waiting on a shaped link, a deadline or modelled
compute (FLOPs / device speed, see :mod:`fltorrent.learn.flops`) advances the virtual clock
without costing wall time, and no thread runs, so the same seed gives the same run.

Churn (``faults`` section) works as in the in-process launcher: :mod:`fltorrent.runtime.churn`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from fltorrent.config import Config
from fltorrent.errors import FederationError
from fltorrent.net.clock import is_virtual
from fltorrent.peer import FaultHook, Peer, PeerStatus
from fltorrent.runtime import transports
from fltorrent.runtime.build import failure_schedule, make_tracker
from fltorrent.runtime.churn import Churn, RoundWatch, run_all
from fltorrent.runtime.launcher import Launcher, LaunchHooks
from fltorrent.runtime.learning import FederationData, load_federation_data
from fltorrent.runtime.node import NodeHooks, NodeOutcome, PeerState
from fltorrent.runtime.security import run_security
from fltorrent.telemetry.events import RoundMetrics


class SimLauncher(Launcher):
    """Every peer in this process, in virtual time."""

    name = "sim"
    virtual_time = True

    async def launch(self, config: Config, hooks: LaunchHooks) -> list[NodeOutcome]:
        return await run_sim(
            config,
            model_dir=hooks.model_dir,
            output_dir=hooks.output_dir,
            on_metrics=hooks.on_metrics,
            on_phase=hooks.on_phase,
            fault_hook=hooks.fault_hook,
            data=hooks.data,
            resume_round=hooks.resume_round,
            resume_sim_time=hooks.resume_sim_time,
        )


async def run_sim(
    config: Config,
    *,
    model_dir: Path | None,
    on_metrics: Callable[[RoundMetrics], None],
    on_phase: Callable[[PeerStatus], None],
    fault_hook: FaultHook | None = None,
    on_peer: Callable[[Peer], None] | None = None,
    output_dir: Path | None = None,
    data: FederationData | None = None,
    resume_round: int | None = None,
    resume_sim_time: float = 0.0,
) -> list[NodeOutcome]:
    """Run the whole federation in virtual time; returns each peer's outcome.

    Tokens, proofs and manifest signatures are checked as in a real run; the in-memory links
    skip the TLS record layer."""
    if not is_virtual():
        raise FederationError(
            "sim mode needs a virtual-time event loop: use Federation.run(), or await it "
            "inside fltorrent.net.clock.run_virtual()"
        )
    n = config.federate.client_num
    if data is None:
        data = load_federation_data(config)  # inline: threads do not mix with virtual time
    churn = Churn(failure_schedule(config), fault_hook)
    saved: dict[int, PeerState] = {}
    sec = run_security(config, output_dir, write_keys=False)
    hooks = NodeHooks(
        data=data,
        on_metrics=on_metrics,
        on_phase=on_phase,
        fault_hook=churn,
        on_peer=on_peer,
        simulated=True,
        clock_origin=asyncio.get_running_loop().time() - resume_sim_time,
        saved=saved,
        audit=sec.audit,
        log_dir=output_dir,
        checkpoint_dir=output_dir,
        resume_round=resume_round,
    )
    watch = RoundWatch()
    tracker = make_tracker(
        config, on_progress=watch.notify, admission=sec.admission(require_tls=False)
    )
    async with transports.memory_network() as network, tracker:
        address = await tracker.start(network, config.runtime.host, 0)
        return await run_all(
            n,
            transport=lambda _i: network,
            credentials=sec.peers,
            tracker=tracker,
            address=address,
            host=config.runtime.host,
            model_dir=model_dir,
            hooks=hooks,
            churn=churn,
            watch=watch,
        )
