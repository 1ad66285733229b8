"""Process launcher: the tracker here, each peer its own OS process (``fltorrent peer``).

Each child writes its metrics to ``peers/peer-<id>/metrics.jsonl``; the parent merges them.
Progress reaches the parent through the tracker's control connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fltorrent.config import Config
from fltorrent.errors import FederationError
from fltorrent.runtime.build import make_tracker
from fltorrent.runtime.launcher import Launcher, LaunchHooks
from fltorrent.runtime.node import NodeOutcome
from fltorrent.runtime.security import AUDIT_FILE, run_security
from fltorrent.security.credentials import PEER_FILES
from fltorrent.security.tokens import FEDERATION_CERT
from fltorrent.telemetry.events import RoundMetrics, check_record
from fltorrent.telemetry.sink import read_metrics
from fltorrent.tracker import MemberState

log = logging.getLogger(__name__)


class ProcessLauncher(Launcher):
    """One OS process per peer; their metrics are merged into the run's when they end."""

    name = "processes"

    async def launch(self, config: Config, hooks: LaunchHooks) -> list[NodeOutcome]:
        out = hooks.output_dir
        codes = await run_processes(
            config,
            output_dir=out,
            on_progress=hooks.on_progress,
            log_level=hooks.log_level,
            resume_round=hooks.resume_round,
            on_record=hooks.on_record,
        )
        outcomes = []
        for i in sorted(codes):
            part = out / "peers" / f"peer-{i}" / "metrics.jsonl"
            done = hooks.resume_round or 0  # a resumed run's earlier rounds are merged already
            for record in read_metrics(part) if part.exists() else []:
                m = RoundMetrics.from_record(record)
                if m is not None and m.round > done:
                    hooks.on_metrics(m)
            audit = out / "peers" / f"peer-{i}" / AUDIT_FILE
            if audit.exists():  # the peers' security events join the tracker's
                with (out / AUDIT_FILE).open("ab") as merged:
                    merged.write(audit.read_bytes())
            error = None if codes[i] == 0 else f"exit code {codes[i]}"
            outcomes.append(NodeOutcome(i, finished=codes[i] == 0, error=error))
        return outcomes


def overall_deadline(config: Config) -> float:
    """An upper bound on a whole run, after which children are killed."""
    bt = config.bittorrent
    hard = bt.hard_timeout if bt.hard_timeout is not None else 2 * bt.timeout
    return (
        config.runtime.registration_timeout
        + config.federate.total_round_num * (hard + 600.0)
        + bt.seed_grace
        + 60.0
    )


async def run_processes(
    config: Config,
    *,
    output_dir: Path,
    on_progress: Callable[[MemberState], None],
    log_level: str = "warning",
    resume_round: int | None = None,
    on_record: Callable[[RoundMetrics], None] | None = None,
) -> dict[int, int]:
    """Run every peer as a child process; returns each peer's exit code."""
    resume = [] if resume_round is None else ["--resume-round", str(resume_round)]
    rt = config.runtime
    n = config.federate.client_num
    sec = run_security(config, output_dir, write_keys=True)
    assert sec.key_dir is not None
    rounds = config.federate.total_round_num

    def record(peer: int, raw: dict[str, Any]) -> None:
        checked = check_record(raw, peer=peer, rounds=rounds)
        if on_record is not None and not isinstance(checked, str):
            on_record(checked)

    tracker = make_tracker(
        config,
        on_progress=on_progress,
        admission=sec.admission(require_tls=sec.tls),
        on_record=record,
    )
    codes: dict[int, int] = {}
    async with tracker:
        host, port = await tracker.start(sec.transport(sec.tracker), rt.host, rt.tracker_port)
        children: dict[int, asyncio.subprocess.Process] = {}
        try:
            for i in range(1, n + 1):
                children[i] = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "fltorrent",
                    "peer",
                    "--tracker",
                    f"{host}:{port}",
                    "--id",
                    str(i),
                    "--host",
                    rt.host,
                    "--output-dir",
                    str(output_dir / "peers" / f"peer-{i}"),
                    "--models-dir",
                    str(output_dir / "models"),
                    "--log-level",
                    log_level,
                    "--quiet",
                    "--federation",
                    str(sec.key_dir / FEDERATION_CERT),
                    "--key",
                    str(sec.key_dir / f"{PEER_FILES.format(i)}.key"),
                    "--token",
                    str(sec.key_dir / f"{PEER_FILES.format(i)}.token"),
                    "--transport",
                    config.security.transport,
                    "--checkpoint-dir",
                    str(output_dir),
                    *resume,
                )
            async with asyncio.timeout(overall_deadline(config)):
                for i, child in children.items():
                    codes[i] = await child.wait()
        except TimeoutError:
            raise FederationError("the federation did not finish before its deadline") from None
        finally:
            for child in children.values():
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    await child.wait()
    return codes
