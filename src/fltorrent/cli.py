"""Command line: ``fltorrent run | tracker | peer | new | config show | config validate | keys``.

Thin: parse arguments, build a configuration, call the runtime, map errors to exit codes
(configuration errors 2, other failures 1) with a one-line message instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from fltorrent.cli_keys import keys_app
from fltorrent.cli_status import HttpHostOpt, HttpPortOpt, http_status, serving, show_dashboard
from fltorrent.cli_status import status as status_command
from fltorrent.config import Config, dump_config, load_config
from fltorrent.errors import ConfigError, FltorrentError

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
LogOpt = Annotated[str | None, typer.Option("--log-level", help="debug|info|warning|error")]
FederationOpt = Annotated[
    Path | None,
    typer.Option("--federation", help="The federation's directory or its federation.crt."),
]


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


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _path(value: str | None) -> Path | None:
    """A path option: an empty one is refused rather than taken as the current directory."""
    if value is None:
        return None
    if not value.strip():
        raise _fail(2, "a path option is empty")
    return Path(value)


OutputOpt = Annotated[
    Path | None,
    typer.Option("--output-dir", "-o", parser=_path, help="Where the run's outputs go."),
]


def _guard(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except ConfigError as exc:
        raise _fail(2, str(exc)) from None
    except FltorrentError as exc:
        raise _fail(1, str(exc)) from None
    except OSError as exc:  # e.g. the disk filled up during a run
        where = f"{exc.filename}: " if exc.filename else ""
        raise _fail(1, f"{where}{exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise _fail(130, "interrupted") from None


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


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
            parser=_path,
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
            raise _fail(
                2,
                "--resume continues a run with its own configuration: only --rounds, "
                "--progress and --log-level go with it",
            )
        fed = _guard(lambda: Federation.resume(resume, rounds=rounds, progress=progress))
        fed.dashboard, fed.on_dashboard = dashboard_port if dashboard else None, show_dashboard
        _setup_logging(log_level or fed.config.output.log_level)
        _report_run(_guard(fed.run))
        return

    extra = ["runtime.processes=true"] if processes else []
    if mode is not None:
        extra.append(f"federate.mode={mode}")
    if progress is not None:
        extra.append(f"output.progress={progress}")
    if log_level is not None:
        extra.append(f"output.log_level={log_level}")
    cfg = _guard(
        lambda: _build_config(
            config, sets, peers=peers, rounds=rounds, topology=topology, seed=seed, extra=extra
        )
    )
    _setup_logging(cfg.output.log_level)
    _report_run(
        _guard(
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
            parser=_path,
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

    cfg = _guard(
        lambda: _build_config(
            config, sets, peers=peers, rounds=rounds, topology=topology, seed=seed
        )
    )
    if federation is None:
        raise _fail(
            2,
            "the tracker needs --federation DIR (create one with: fltorrent keys create DIR "
            "--name NAME)",
        )
    out = output_dir or default_output_dir()
    _guard(lambda: check_listen(host, port, host_key="--host", port_key="--port"))
    if http_port is not None:
        _guard(
            lambda: check_listen(
                http_host, http_port, host_key="--http-host", port_key="--http-port"
            )
        )
    _guard(lambda: prepare_output(out))
    sec = _guard(lambda: tracker_security(cfg, federation, out))
    _setup_logging(log_level or "info")

    run = _guard(lambda: TrackerRun(cfg, out))

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

    summary = _guard(lambda: asyncio.run(serve()))
    typer.echo(f"run directory: {out}", err=True)
    if summary["failed_peers"]:
        raise _fail(1, f"peers that did not finish: {summary['failed_peers']}")


@app.command()
def peer(
    tracker_address: Annotated[str, typer.Option("--tracker", help="Tracker HOST:PORT.")],
    peer_id: Annotated[int | None, typer.Option("--id", help="Requested peer id (>= 1).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on and announce.")] = "127.0.0.1",
    output_dir: OutputOpt = None,
    models_dir: Annotated[Path | None, typer.Option("--models-dir", parser=_path)] = None,
    federation: FederationOpt = None,
    key: Annotated[Path | None, typer.Option("--key", help="This peer's key file.")] = None,
    token: Annotated[
        Path | None, typer.Option("--token", help="This peer's join token (from the admin).")
    ] = None,
    transport: Annotated[
        str, typer.Option("--transport", help="tls|plain: as the federation's security.transport")
    ] = "tls",
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Train on this peer's own data (a folder of images, .npz, .pt or .csv) instead "
            "of the federation's data section; it never leaves this host.",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto|cpu|cuda|cuda:N: where this peer trains."),
    ] = None,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir",
            parser=_path,
            help="Checkpoints go to DIR/checkpoints (default: the output directory; "
            "output.checkpoint_every).",
        ),
    ] = None,
    resume_round: Annotated[
        int | None,
        typer.Option(
            "--resume-round", min=1, help="Continue after this round, from its checkpoint."
        ),
    ] = None,
    connect_timeout: Annotated[
        float,
        typer.Option(
            "--connect-timeout", min=0.1, help="Seconds to keep trying to reach the tracker."
        ),
    ] = 30.0,
    log_level: LogOpt = "warning",
    quiet: Annotated[bool, typer.Option("--quiet", help="No per-round lines.", metavar="")] = False,
    http_port: HttpPortOpt = None,
    http_host: HttpHostOpt = "127.0.0.1",
) -> None:
    """Run one peer; it gets the configuration from the tracker.

    It proves its membership with --key and --token (see 'fltorrent keys'); --federation is
    the federation's certificate (federation.crt, or the directory holding it)."""
    from fltorrent.learn.accel import select_device
    from fltorrent.learn.files import check_own_data
    from fltorrent.runtime.federation import default_output_dir
    from fltorrent.runtime.node import NodeHooks, run_node
    from fltorrent.runtime.preflight import check_listen, prepare_output
    from fltorrent.runtime.security import AUDIT_FILE, peer_credentials, peer_transport
    from fltorrent.runtime.status import PeerBoard
    from fltorrent.security.audit import JsonlAudit
    from fltorrent.telemetry.events import RoundMetrics
    from fltorrent.telemetry.sink import JsonlSink

    addr_host, sep, addr_port = tracker_address.rpartition(":")
    if not sep or not addr_port.isdigit() or not addr_host or int(addr_port) > 65535:
        raise _fail(2, f"--tracker must be HOST:PORT (port 0-65535), got {tracker_address!r}")
    if peer_id is not None and peer_id < 1:
        raise _fail(2, "--id must be at least 1")
    if transport not in ("tls", "plain"):
        raise _fail(2, f"--transport must be tls or plain, got {transport!r}")
    if federation is None or key is None or token is None:
        raise _fail(
            2,
            "a peer needs --federation, --key and --token (an admin issues tokens with: "
            "fltorrent keys issue)",
        )
    if data is not None:
        try:
            check_own_data(data)
        except FltorrentError as exc:
            raise _fail(2, f"--data: {exc}") from None
    if device is not None:
        try:
            select_device(device, key="the device")
        except FltorrentError as exc:
            raise _fail(2, f"--device: {exc}") from None
    if resume_round is not None and checkpoint_dir is None and output_dir is None:
        raise _fail(
            2, "--resume-round needs the run's -o (or --checkpoint-dir): where its checkpoints are"
        )
    creds = _guard(lambda: peer_credentials(federation, key, token))
    _setup_logging(log_level or "warning")
    out = output_dir or default_output_dir()
    _guard(lambda: check_listen(host, 0, host_key="--host", port_key="--host"))
    if http_port is not None:
        _guard(
            lambda: check_listen(
                http_host, http_port, host_key="--http-host", port_key="--http-port"
            )
        )
    board = PeerBoard()
    _guard(lambda: prepare_output(out))
    sink = JsonlSink(out / "metrics.jsonl")

    def on_metrics(m: RoundMetrics) -> None:
        board.record(m)
        sink.emit(m)
        if not quiet:
            typer.echo(
                f"peer {m.peer} round {m.round}: accuracy {m.accuracy:.4f} "
                f"completion {m.completion:.2f}"
            )

    async def go() -> int:
        import torch

        torch.set_num_threads(1)
        if not quiet:
            typer.echo(
                f"connecting to the tracker at {tracker_address} "
                f"(giving up after {connect_timeout:g}s)",
                err=True,
            )
        audit = JsonlAudit(out / AUDIT_FILE)
        outcome = await run_node(
            transport=peer_transport(creds, tls=transport == "tls"),
            tracker=(addr_host, int(addr_port)),
            host=host,
            peer_id=peer_id,
            model_dir=models_dir or out / "models",
            hooks=NodeHooks(
                on_metrics=on_metrics,
                on_phase=board.on_phase,
                on_peer=board.on_peer,
                audit=audit,
                require_tls=transport == "tls",
                own_data=data,
                device=device,
                log_dir=out,
                checkpoint_dir=checkpoint_dir or out,
                resume_round=resume_round,
            ),
            credentials=creds,
            connect_timeout=connect_timeout,
        )
        if not outcome.finished:
            typer.echo(f"error: {outcome.label} did not finish: {outcome.error}", err=True)
            return 1
        return 0

    try:
        code = _guard(lambda: asyncio.run(serving(go, board, http_host, http_port, label="peer")))
    finally:
        sink.close()
    raise typer.Exit(code)


@app.command()
def new(
    directory: Annotated[Path, typer.Argument(help="The project's directory (new or empty).")],
) -> None:
    """Write a small runnable project to edit: model.py, data.py and fltorrent.yaml."""
    from fltorrent.project import write_project

    written = _guard(lambda: write_project(directory))
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"next: cd {directory} && fltorrent run -c fltorrent.yaml")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run's output directory.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", parser=_path, help="Where the report goes (RUN_DIR/report)."),
    ] = None,
) -> None:
    """Draw a run's figures (PNG) and one self-contained HTML page (index.html)."""
    from fltorrent.telemetry.report import write_report

    written = _guard(lambda: write_report(run_dir, out))
    typer.echo(f"wrote {len(written) - 1} figures and {written[-1]}")


@config_app.command("show")
def config_show(config: ConfigOpt = None, sets: SetOpt = None) -> None:
    """Print the resolved configuration (defaults filled in)."""
    cfg = _guard(lambda: _build_config(config, sets))
    typer.echo(dump_config(cfg), nl=False)


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="YAML file to check.")]) -> None:
    """Check a configuration file; exit code 2 with the key path if it is invalid."""
    _guard(lambda: load_config(file))
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
