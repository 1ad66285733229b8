"""Command line: ``fltorrent run | tracker | peer | new | config show | config validate | keys``.

Thin: parse arguments, build a configuration, call the runtime, map errors to exit codes
(configuration errors 2, other failures 1) with a one-line message instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fltorrent.cli_common import (
    FederationOpt,
    LogOpt,
    OutputOpt,
    fail,
    guard,
    path_option,
    setup_logging,
)
from fltorrent.cli_keys import keys_app
from fltorrent.cli_peer import peer as peer_command
from fltorrent.cli_status import HttpHostOpt, HttpPortOpt, http_status, show_dashboard
from fltorrent.cli_status import status as status_command
from fltorrent.config import Config, dump_config, load_config
from fltorrent.errors import FltorrentError

if TYPE_CHECKING:
    from fltorrent.runtime.federation import FederationResult

app = typer.Typer(
    help="Decentralized federated learning over a BitTorrent-style swarm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and check configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.command("status")(status_command)
app.command("peer")(peer_command)

_T = TypeVar("_T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a key: section.key=value (repeatable)."),
]
PeersOpt = Annotated[int | None, typer.Option("--peers", help="federate.client_num")]
RoundsOpt = Annotated[int | None, typer.Option("--rounds", help="federate.total_round_num")]
TopologyOpt = Annotated[str | None, typer.Option("--topology", help="topology.type")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="federate.seed")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fltorrent {version('fltorrent')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_version,
            is_eager=True,
            metavar="",
        ),
    ] = False,
) -> None:
    """Decentralized federated learning over a BitTorrent-style swarm."""


def _build_config(
    config: Path | None,
    sets: list[str] | None,
    *,
    peers: int | None = None,
    rounds: int | None = None,
    topology: str | None = None,
    seed: int | None = None,
    extra: list[str] | None = None,
) -> Config:
    overrides = list(extra or [])
    for key, value in (
        ("federate.client_num", peers),
        ("federate.total_round_num", rounds),
        ("topology.type", topology),
        ("federate.seed", seed),
    ):
        if value is not None:
            overrides.append(f"{key}={value}")
    overrides += sets or []
    return load_config(config, overrides)


@app.command()
def run(
    config: ConfigOpt = None,
    peers: PeersOpt = None,
    rounds: RoundsOpt = None,
    topology: TopologyOpt = None,
    output_dir: OutputOpt = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    processes: Annotated[
        bool, typer.Option("--processes", help="Run each peer as its own OS process.", metavar="")
    ] = False,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode", help="federate.mode: distributed (real sockets) or sim (virtual time)."
        ),
    ] = None,
    progress: Annotated[str | None, typer.Option(help="auto|rich|plain|none")] = None,
    log_level: LogOpt = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            parser=path_option,
            help="Continue the stopped run in this directory from its checkpoints (with its "
            "own configuration; --rounds sets a new total).",
        ),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Serve the live dashboard (URL on stderr); --dashboard PORT picks its port.",
            metavar="",
        ),
    ] = False,
    dashboard_port: Annotated[
        int, typer.Option("--dashboard-port", min=0, max=65535, help="Its port (0: any free).")
    ] = 0,
) -> None:
    """Run a whole federation locally: a tracker and N peers over loopback TCP, or, with
    --mode sim, every peer in one process over an in-memory network in virtual time."""
    from fltorrent.runtime.federation import Federation

    if resume is not None:
        given = [config, peers, topology, output_dir, seed, sets, mode, processes or None]
        if any(g is not None for g in given):
            raise fail(
                2,
                "--resume continues a run with its own configuration: only --rounds, "
                "--progress and --log-level go with it",
            )
        fed = guard(lambda: Federation.resume(resume, rounds=rounds, progress=progress))
        fed.dashboard, fed.on_dashboard = dashboard_port if dashboard else None, show_dashboard
        setup_logging(log_level or fed.config.output.log_level)
        _report_run(guard(fed.run))
        return

    extra = ["runtime.processes=true"] if processes else []
    if mode is not None:
        extra.append(f"federate.mode={mode}")
    if progress is not None:
        extra.append(f"output.progress={progress}")
    if log_level is not None:
        extra.append(f"output.log_level={log_level}")
    cfg = guard(
        lambda: _build_config(
            config, sets, peers=peers, rounds=rounds, topology=topology, seed=seed, extra=extra
        )
    )
    setup_logging(cfg.output.log_level)
    _report_run(
        guard(
            lambda: Federation(
                cfg,
                output_dir=output_dir,
                dashboard=dashboard_port if dashboard else None,
                on_dashboard=show_dashboard,
            ).run()
        )
    )


def _report_run(result: FederationResult) -> None:
    s = result.summary
    sim_time = f" ({s['sim_time_s']:.1f}s simulated)" if "sim_time_s" in s else ""
    typer.echo(
        f"done: {s['peers']} peers, {s['rounds']} rounds in {s['wall_time_s']:.1f}s{sim_time}; "
        f"final accuracy mean {s['final_accuracy_mean']:.4f} min {s['final_accuracy_min']:.4f}; "
        f"outputs in {result.output_dir}"
    )
    if result.failed_peers:
        typer.echo(f"peers that did not finish: {result.failed_peers}", err=True)


@app.command()
def tracker(
    config: ConfigOpt = None,
    peers: PeersOpt = None,
    rounds: RoundsOpt = None,
    topology: TopologyOpt = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any).", min=0, max=65535)] = 7800,
    federation: FederationOpt = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            parser=path_option,
            help="The run directory: config, the peers' metrics, summary, report, "
            "security.jsonl (runs/<time>).",
        ),
    ] = None,
    log_level: LogOpt = "info",
    http_port: HttpPortOpt = None,
    http_host: HttpHostOpt = "127.0.0.1",
) -> None:
    """Run the tracker alone; peers join with 'fltorrent peer --tracker HOST:PORT'.

    --federation is a directory made by 'fltorrent keys create': the tracker reads
    federation.crt and revoked.json there, and its own tracker.key + tracker.token (or, if
    the admin key is there, issues itself a tracker token)."""
    from fltorrent.runtime.build import make_tracker
    from fltorrent.runtime.federation import default_output_dir
    from fltorrent.runtime.preflight import check_listen, prepare_output
    from fltorrent.runtime.procs import overall_deadline
    from fltorrent.runtime.security import tracker_security
    from fltorrent.runtime.tracker_run import TrackerRun

    cfg = guard(
        lambda: _build_config(
            config, sets, peers=peers, rounds=rounds, topology=topology, seed=seed
        )
    )
    if federation is None:
        raise fail(
            2,
            "the tracker needs --federation DIR (create one with: fltorrent keys create DIR "
            "--name NAME)",
        )
    out = output_dir or default_output_dir()
    guard(lambda: check_listen(host, port, host_key="--host", port_key="--port"))
    if http_port is not None:
        guard(
            lambda: check_listen(
                http_host, http_port, host_key="--http-host", port_key="--http-port"
            )
        )
    guard(lambda: prepare_output(out))
    sec = guard(lambda: tracker_security(cfg, federation, out))
    setup_logging(log_level or "info")

    run = guard(lambda: TrackerRun(cfg, out))

    async def serve() -> dict[str, Any]:
        from fltorrent.web.source import TrackerSource

        t = make_tracker(cfg, admission=sec.admission(require_tls=sec.tls), on_record=run.on_record)
        try:
            async with t, http_status(TrackerSource(t), http_host, http_port, label="tracker"):
                h, p = await t.start(sec.transport(sec.tracker), host, port)
                typer.echo(
                    f"tracker listening on {h}:{p} for {cfg.federate.client_num} peers", err=True
                )
                await t.wait_full()
                typer.echo("all peers registered; federation running", err=True)
                if not await t.wait_done(overall_deadline(cfg)):
                    raise FltorrentError("the federation did not finish before its deadline")
        finally:  # an interrupted or failed run still gets its summary
            summary = run.finish(t.members)
        states = {pid: m.phase for pid, m in sorted(t.members.items())}
        typer.echo(json.dumps({"members": states}))
        return summary

    summary = guard(lambda: asyncio.run(serve()))
    typer.echo(f"run directory: {out}", err=True)
    if summary["failed_peers"]:
        raise fail(1, f"peers that did not finish: {summary['failed_peers']}")


@app.command()
def new(
    directory: Annotated[Path, typer.Argument(help="The project's directory (new or empty).")],
) -> None:
    """Write a small runnable project to edit: model.py, data.py and fltorrent.yaml."""
    from fltorrent.project import write_project

    written = guard(lambda: write_project(directory))
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"next: cd {directory} && fltorrent run -c fltorrent.yaml")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run's output directory.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", parser=path_option, help="Where the report goes (RUN_DIR/report)."),
    ] = None,
) -> None:
    """Draw a run's figures (PNG) and one self-contained HTML page (index.html)."""
    from fltorrent.telemetry.report import write_report

    written = guard(lambda: write_report(run_dir, out))
    typer.echo(f"wrote {len(written) - 1} figures and {written[-1]}")


@config_app.command("show")
def config_show(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Print the resolved configuration (defaults filled in)."""
    cfg = guard(lambda: _build_config(config, sets))
    typer.echo(dump_config(cfg), nl=False)


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="YAML file to check.")]) -> None:
    """Check a configuration file; exit code 2 with the key path if it is invalid."""
    guard(lambda: load_config(file))
    typer.echo(f"{file}: valid")


def optional_port(argv: list[str]) -> list[str]:
    """``--dashboard PORT`` as ``--dashboard --dashboard-port PORT``: the option takes an
    optional value, which typer cannot say (``run`` takes no positional argument, so a number
    after ``--dashboard`` can only be its port)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--dashboard" and i + 1 < len(argv) and argv[i + 1].isdigit():
            out.append("--dashboard-port")
    return out


def main() -> None:
    """Console-script entry point."""
    app(args=optional_port(sys.argv[1:]))
