"""In-process launcher: a tracker and N peers in one asyncio loop, over real loopback TCP.

Training runs in a thread pool shared by all peers (torch releases the GIL in its kernels), so
the event loop keeps serving pieces while models train. Crashes and rejoins of the ``faults``
section apply here too (:mod:`fltorrent.runtime.churn`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fltorrent.config import Config
from fltorrent.net.base import Transport
from fltorrent.peer import FaultHook, Peer, PeerStatus
from fltorrent.runtime.build import failure_schedule, make_tracker
from fltorrent.runtime.churn import Churn, RoundWatch, run_all
from fltorrent.runtime.launcher import Launcher, LaunchHooks
from fltorrent.runtime.learning import FederationData, load_federation_data
from fltorrent.runtime.node import NodeHooks, NodeOutcome, PeerState
from fltorrent.runtime.security import run_security
from fltorrent.telemetry.events import RoundMetrics


class LocalLauncher(Launcher):
    """Every peer in this event loop, over loopback TCP."""

    name = "local"

    async def launch(self, config: Config, hooks: LaunchHooks) -> list[NodeOutcome]:
        return await run_local(
            config,
            model_dir=hooks.model_dir,
            output_dir=hooks.output_dir,
            on_metrics=hooks.on_metrics,
            on_phase=hooks.on_phase,
            fault_hook=hooks.fault_hook,
            data=hooks.data,
            resume_round=hooks.resume_round,
        )


async def run_local(
    config: Config,
    *,
    model_dir: Path | None,
    on_metrics: Callable[[RoundMetrics], None],
    on_phase: Callable[[PeerStatus], None],
    fault_hook: FaultHook | None = None,
    transport: Transport | None = None,
    on_peer: Callable[[Peer], None] | None = None,
    output_dir: Path | None = None,
    data: FederationData | None = None,
    resume_round: int | None = None,
) -> list[NodeOutcome]:
    """Run the whole federation in this process; returns each peer's outcome.

    ``transport`` replaces the TCP transports the run's credentials make (tests that shape
    or break links); peers then present no TLS certificate."""
    rt = config.runtime
    n = config.federate.client_num
    if data is None:
        data = await asyncio.to_thread(load_federation_data, config)
    watch = RoundWatch()
    sec = run_security(config, output_dir, write_keys=False)
    if transport is not None:
        sec.tls = False
    tracker = make_tracker(
        config, on_progress=watch.notify, admission=sec.admission(require_tls=sec.tls)
    )
    tracker_transport = transport or sec.transport(sec.tracker)
    churn = Churn(failure_schedule(config), fault_hook)
    saved: dict[int, PeerState] = {}
    workers = rt.train_workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="train") as executor:
        async with tracker:
            address = await tracker.start(tracker_transport, rt.host, rt.tracker_port)
            hooks = NodeHooks(
                data=data,
                executor=executor,
                on_metrics=on_metrics,
                on_phase=on_phase,
                fault_hook=churn,
                on_peer=on_peer,
                saved=saved,
                audit=sec.audit,
                require_tls=sec.tls,
                log_dir=output_dir,
                checkpoint_dir=output_dir,
                resume_round=resume_round,
            )
            return await run_all(
                n,
                transport=lambda i: transport or sec.transport(sec.peers[i]),
                credentials=sec.peers,
                tracker=tracker,
                address=address,
                host=rt.host,
                model_dir=model_dir,
                hooks=hooks,
                churn=churn,
                watch=watch,
            )
