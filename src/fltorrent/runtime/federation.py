"""The Python API: ``Federation(config).run()``, ``await Federation(config).arun()``.

Runs the launcher the configuration names (:mod:`fltorrent.runtime.launcher`: in-process, one
process per peer, or simulation in virtual time), writes the outputs (resolved ``config.yaml``,
``metrics.jsonl``, ``summary.json``, final models as safetensors) and keeps a live status board
for :meth:`Federation.get_training_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from fltorrent.config import Config, dump_config, load_config, parse_config
from fltorrent.errors import ConfigError, FederationError
from fltorrent.learn.plugins import as_import_string
from fltorrent.net.clock import run_virtual
from fltorrent.peer import FaultHook, PeerStatus
from fltorrent.runtime.checkpoint import checkpoint_path, common_round, verify_checkpoint
from fltorrent.runtime.launcher import Launcher, LaunchHooks, launcher_name
from fltorrent.runtime.local import LocalLauncher
from fltorrent.runtime.node import NodeOutcome
from fltorrent.runtime.preflight import preflight
from fltorrent.runtime.procs import ProcessLauncher
from fltorrent.runtime.sim import SimLauncher
from fltorrent.runtime.status import StatusBoard, check_dashboard, watch_run
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.telemetry.exchange_log import exchange_summary
from fltorrent.telemetry.progress import RoundProgress
from fltorrent.telemetry.run_dir import clear_run_outputs, keep_rounds
from fltorrent.telemetry.sink import JsonlSink, read_metrics
from fltorrent.telemetry.sinks import FanOut, MetricsSink, open_sinks
from fltorrent.telemetry.snapshot import EVALUATED
from fltorrent.telemetry.summary import summarize
from fltorrent.tracker import MemberState

log = logging.getLogger(__name__)

LAUNCHERS: dict[str, type[Launcher]] = {
    cls.name: cls for cls in (LocalLauncher, ProcessLauncher, SimLauncher)
}
MODES = {"local": "in-process", "processes": "processes", "sim": "sim"}  # summary.json names


def make_launcher(config: Config) -> Launcher:
    """The launcher ``config`` names (``runtime.launcher``)."""
    return LAUNCHERS[launcher_name(config)]()


@dataclass
class FederationResult:
    """What a run produced."""

    output_dir: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    failed_peers: list[int] = field(default_factory=list)


@contextlib.contextmanager
def _logger_level(level: str) -> Iterator[None]:
    logger = logging.getLogger("fltorrent")
    before = logger.level
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        logger.setLevel(before)


def _with_plugins(config: Config, objects: Mapping[str, Callable[..., Any]]) -> Config:
    """``config`` with the plug-ins given as objects named by import strings (validated again,
    so a clash with a setting is refused as in a file)."""
    if not objects:
        return config
    raw = config.model_dump(mode="json")
    local = []
    for key, obj in objects.items():
        section, name = key.split(".")
        raw[section][name], portable = as_import_string(obj, key=key)
        if not portable:
            local.append(key)
    updated = parse_config(raw)
    if local and make_launcher(updated).name == "processes":
        raise ConfigError(
            f"{', '.join(local)}: a lambda, a local function or one defined in __main__ cannot "
            "reach peer processes; define it at the top level of a module"
        )
    return updated


def default_output_dir() -> Path:
    """``runs/<UTC timestamp>``."""
    return Path("runs") / datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


class Federation:
    """A whole federation: tracker and peers, run by one call."""

    def __init__(
        self,
        config: Config | Mapping[str, Any] | str | Path | None = None,
        *,
        output_dir: Path | str | None = None,
        progress: str | None = None,
        fault_hook: FaultHook | None = None,
        model: Callable[..., Any] | None = None,
        data: Callable[..., Any] | None = None,
        train_step: Callable[..., Any] | None = None,
        evaluate: Callable[..., Any] | None = None,
        rule: Callable[..., Any] | None = None,
        dashboard: int | None = None,
        dashboard_host: str = "127.0.0.1",
        on_dashboard: Callable[[str], None] | None = None,
    ) -> None:
        """``model``, ``data``, ``train_step``, ``evaluate`` and ``rule`` are the plug-ins as
        Python objects, in place of ``model.factory``, ``data.factory``, ``train.step``,
        ``train.evaluate`` and ``robust.rule_factory`` (with the same signatures). A function
        defined at a module's top level goes by its import string, so it reaches peer processes
        too; a lambda, a local function or one of ``__main__`` works in this process only.

        ``dashboard`` (a port, 0: any free one) serves the status endpoints and the live
        dashboard on ``dashboard_host`` while the run goes on (:mod:`fltorrent.web`); its URL
        goes to ``on_dashboard`` and to ``<output>/dashboard.url``."""
        if isinstance(config, Config):
            self.config = config
        elif isinstance(config, str | Path):
            self.config = load_config(config)
        else:
            self.config = parse_config(config)
        given = {
            "model.factory": model,
            "data.factory": data,
            "train.step": train_step,
            "train.evaluate": evaluate,
            "robust.rule_factory": rule,
        }
        self.config = _with_plugins(self.config, {k: v for k, v in given.items() if v is not None})
        chosen = output_dir if output_dir is not None else self.config.output.dir
        self.output_dir = Path(chosen) if chosen is not None else default_output_dir()
        self.progress_mode = progress or self.config.output.progress
        self.fault_hook = fault_hook
        self.board = StatusBoard.for_config(self.config)
        self.dashboard, self.dashboard_host = dashboard, dashboard_host
        self.on_dashboard = on_dashboard
        self.resuming = False  # set by Federation.resume

    @classmethod
    def resume(
        cls, run_dir: Path | str, *, rounds: int | None = None, progress: str | None = None
    ) -> Federation:
        """Continue a stopped run in ``run_dir`` from its peers' newest common checkpoint,
        with its own configuration (``rounds``: a new total, to go on past a finished run)."""
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir}: no config.yaml there: not a run directory")
        overrides = [] if rounds is None else [f"federate.total_round_num={rounds}"]
        fed = cls(
            load_config(run_dir / "config.yaml", overrides), output_dir=run_dir, progress=progress
        )
        fed.resuming = True
        return fed

    def _resume_point(self) -> tuple[int, float]:
        """(round the peers continue after, simulated seconds then)."""
        cfg, out = self.config, self.output_dir
        peers = range(1, cfg.federate.client_num + 1)
        try:
            done = common_round(out, peers)
        except FederationError as exc:
            raise ConfigError(str(exc)) from None
        if done >= cfg.federate.total_round_num:
            raise ConfigError(
                f"{out}: the run has all {done} rounds; give a larger total (--rounds) to go on"
            )
        try:  # every peer's checkpoint is whole, or none starts
            times = [verify_checkpoint(checkpoint_path(out, p, done)) for p in peers]
        except FederationError as exc:
            raise ConfigError(str(exc)) from None
        sim = max((c.sim_time_s for c in times if c.sim_time_s is not None), default=0.0)
        return done, sim

    def run(self) -> FederationResult:
        """Run to completion (blocking); the simulation runs on a virtual-time event loop."""
        if make_launcher(self.config).virtual_time:
            return run_virtual(self.arun())
        return asyncio.run(self.arun())

    def get_training_status(self) -> dict[str, Any]:
        """Round (of the slowest live peer), each peer's phase/round/completion/accuracy."""
        return self.board.snapshot()

    async def arun(self) -> FederationResult:
        """Run to completion.

        ``output.log_level`` is the level of the ``fltorrent`` logger for the run (restored
        afterwards); where the records go is the application's choice (e.g.
        ``logging.basicConfig()``), as for any library.
        """
        with _logger_level(self.config.output.log_level):
            return await self._arun()

    async def _arun(self) -> FederationResult:
        cfg = self.config
        out = self.output_dir
        resume = self._resume_point() if self.resuming else None
        if self.dashboard is not None:
            virtual = make_launcher(cfg).virtual_time
            check_dashboard(virtual_time=virtual, host=self.dashboard_host, port=self.dashboard)
        data = preflight(cfg, out)  # before anything is written
        (out / "config.yaml").write_text(dump_config(cfg))
        metrics_path = out / "metrics.jsonl"
        if resume is None:
            metrics_path.unlink(missing_ok=True)
            clear_run_outputs(out)  # an earlier run's logs and checkpoints are not this one's
        else:  # rounds after the checkpoints are run again
            keep_rounds(out, resume[0])
            for record in read_metrics(metrics_path) if metrics_path.exists() else []:
                if (m := RoundMetrics.from_record(record)) is not None:
                    self.board.record(m)  # the status shows the whole run
        torch.set_num_threads(cfg.runtime.torch_threads)
        n, rounds = cfg.federate.client_num, cfg.federate.total_round_num
        model_dir = out / "models" if cfg.output.save_model else None
        start = time.perf_counter()
        sim_start = asyncio.get_running_loop().time()
        launcher = make_launcher(cfg)
        mode = MODES.get(launcher.name, launcher.name)
        sink = FanOut(
            [
                JsonlSink(metrics_path),
                *open_sinks(
                    cfg.output.sinks,
                    out,
                    run_name=out.name,
                    params={
                        "peers": n,
                        "rounds": rounds,
                        "seed": cfg.federate.seed,
                        "plan": cfg.exchange.plan,
                        "model": cfg.model.name,
                    },
                ),
            ]
        )
        done = resume[0] if resume is not None else 0
        with RoundProgress(
            peers=n, rounds=rounds, mode=self.progress_mode, done_rounds=done
        ) as display:
            hooks = LaunchHooks(
                output_dir=out,
                model_dir=model_dir,
                on_metrics=self._on_metrics(sink, display),
                on_phase=self._on_phase,
                on_progress=self._on_progress(display),
                on_record=self.board.record,
                fault_hook=self.fault_hook,
                log_level=cfg.output.log_level,
                data=data if launcher.name != "processes" else None,
                resume_round=resume[0] if resume is not None else None,
                resume_sim_time=resume[1] if resume is not None else 0.0,
            )
            try:
                async with watch_run(
                    self.board,
                    out,
                    realtime=not launcher.virtual_time,
                    dashboard=self.dashboard,
                    host=self.dashboard_host,
                    on_url=self.on_dashboard,
                ):
                    outcomes = await launcher.launch(cfg, hooks)
                    failed = self._failures(outcomes, display)  # shown before the server stops
            except BaseException as exc:  # Ctrl-C, a crash of the launcher: say what there is
                sink.close()
                self._write_summary(
                    time.perf_counter() - start, [], {"mode": mode, "interrupted": repr(exc)}
                )
                raise
            finally:
                sink.close()
        wall = time.perf_counter() - start
        extra: dict[str, Any] = {"mode": mode, **exchange_summary(out)}
        if mode == "sim":
            extra["sim_time_s"] = round(asyncio.get_running_loop().time() - sim_start, 3)
        if resume is not None:
            extra["resumed_after_round"] = resume[0]
        records, summary = self._write_summary(wall, failed, extra)
        self._copy_final_model(model_dir, summary["finished_peers"])
        if not summary["finished_peers"]:
            raise FederationError(f"no peer finished; see {out}")
        return FederationResult(out, summary, records, failed)

    def _write_summary(
        self, wall: float, failed: list[int], extra: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        cfg, out = self.config, self.output_dir
        metrics_path = out / "metrics.jsonl"
        records = read_metrics(metrics_path) if metrics_path.exists() else []
        records.sort(key=lambda r: (r["round"], r["peer"]))
        summary = summarize(
            records,
            peers=cfg.federate.client_num,
            rounds=cfg.federate.total_round_num,
            wall_time_s=wall,
            failed=failed,
            accuracy_targets=cfg.output.accuracy_targets,
            extra=extra,
        )
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return records, summary

    def _on_metrics(
        self, sink: MetricsSink, display: RoundProgress
    ) -> Callable[[RoundMetrics], None]:
        def on_metrics(m: RoundMetrics) -> None:
            sink.emit(m)
            display.peer_round(m.peer, m.round, m.accuracy, m.completion)
            self.board.record(m)

        return on_metrics

    def _on_phase(self, s: PeerStatus) -> None:
        self.board.update(
            s.peer,
            phase=s.phase.value,
            round_=s.round,
            completion=s.completion,
            accuracy=s.accuracy,
        )

    def _on_progress(self, display: RoundProgress) -> Callable[[MemberState], None]:
        def on_progress(m: MemberState) -> None:
            self.board.update(
                m.peer_id,
                phase=m.phase,
                round_=m.round,
                completion=m.completion,
                accuracy=m.accuracy,
            )
            if m.phase == EVALUATED and m.accuracy is not None:  # live, from other processes
                display.peer_round(m.peer_id, m.round, m.accuracy, m.completion)

        return on_progress

    def _failures(self, outcomes: list[NodeOutcome], display: RoundProgress) -> list[int]:
        failed = []
        for o in outcomes:
            if o.finished:
                self.board.mark(o.peer_id, "done")
            else:
                failed.append(o.peer_id)
                self.board.mark(o.peer_id, "failed")
                display.peer_failed(o.peer_id)
                log.error("peer %d did not finish: %s", o.peer_id, o.error)
        return failed

    def _copy_final_model(self, model_dir: Path | None, finished: list[int]) -> None:
        if model_dir is None or not finished:
            return
        src = model_dir / f"peer-{finished[0]}.safetensors"
        if src.exists():
            shutil.copyfile(src, self.output_dir / "model.safetensors")
