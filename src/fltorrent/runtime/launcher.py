"""Launchers: how a whole federation is started, behind one interface.

A :class:`Launcher` runs the tracker and every peer of a federation and reports how each peer
ended. Which one runs is one key, ``runtime.launcher`` (``auto`` follows ``federate.mode`` and
``runtime.processes``):

* ``local`` (:mod:`.local`): every peer in this process's event loop, over loopback TCP;
* ``processes`` (:mod:`.procs`): one OS process per peer (``fltorrent peer``);
* ``sim`` (:mod:`.sim`): every peer in this process over an in-memory network in virtual time.

All of them build their transports in :mod:`.transports` and run each peer with
:func:`fltorrent.runtime.node.run_node`; a Ray launcher will be one more module and one more
entry in ``fltorrent.runtime.federation.LAUNCHERS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from fltorrent.config import Config
from fltorrent.peer import FaultHook, PeerStatus
from fltorrent.runtime.learning import FederationData
from fltorrent.runtime.node import NodeOutcome
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.tracker import MemberState


@dataclass(frozen=True)
class LaunchHooks:
    """What the federation hands a launcher: where outputs go and whom to tell."""

    output_dir: Path
    model_dir: Path | None
    on_metrics: Callable[[RoundMetrics], None]  # every round record, as it is made
    on_phase: Callable[[PeerStatus], None]  # peers in this process: each phase change
    on_progress: Callable[[MemberState], None]  # peers elsewhere: what they told the tracker
    # Peers elsewhere: their round records as they come (checked; for the live status only:
    # the launcher still hands every record to on_metrics).
    on_record: Callable[[RoundMetrics], None] | None = None
    fault_hook: FaultHook | None = None
    log_level: str = "warning"
    data: FederationData | None = None  # the federation's data, when already loaded
    resume_round: int | None = None  # a resumed run: peers continue after this round's checkpoints
    resume_sim_time: float = 0.0  # ... and, in simulation, the virtual clock goes on from here


class Launcher(ABC):
    """Runs a whole federation (see the module docstring)."""

    name: ClassVar[str]
    virtual_time: ClassVar[bool] = False  # must run inside fltorrent.net.clock.run_virtual

    @abstractmethod
    async def launch(self, config: Config, hooks: LaunchHooks) -> list[NodeOutcome]:
        """Run the federation to its end; returns how each peer ended."""


def launcher_name(config: Config) -> str:
    """The launcher ``config`` asks for (``runtime.launcher``, ``auto`` resolved)."""
    chosen = config.runtime.launcher
    if chosen != "auto":
        return chosen
    if config.federate.mode == "sim":
        return "sim"
    return "processes" if config.runtime.processes else "local"
