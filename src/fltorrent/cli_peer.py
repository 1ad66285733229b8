"""``fltorrent peer``: one peer of a federation, joining a tracker (on any host)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

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
from fltorrent.cli_status import HttpHostOpt, HttpPortOpt, serving
from fltorrent.errors import FltorrentError


def peer(
    tracker_address: Annotated[str, typer.Option("--tracker", help="Tracker HOST:PORT.")],
    peer_id: Annotated[int | None, typer.Option("--id", help="Requested peer id (>= 1).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on and announce.")] = "127.0.0.1",
    output_dir: OutputOpt = None,
    models_dir: Annotated[Path | None, typer.Option("--models-dir", parser=path_option)] = None,
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
            parser=path_option,
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
        raise fail(2, f"--tracker must be HOST:PORT (port 0-65535), got {tracker_address!r}")
    if peer_id is not None and peer_id < 1:
        raise fail(2, "--id must be at least 1")
    if transport not in ("tls", "plain"):
        raise fail(2, f"--transport must be tls or plain, got {transport!r}")
    if federation is None or key is None or token is None:
        raise fail(
            2,
            "a peer needs --federation, --key and --token (an admin issues tokens with: "
            "fltorrent keys issue)",
        )
    if data is not None:
        try:
            check_own_data(data)
        except FltorrentError as exc:
            raise fail(2, f"--data: {exc}") from None
    if device is not None:
        try:
            select_device(device, key="the device")
        except FltorrentError as exc:
            raise fail(2, f"--device: {exc}") from None
    if resume_round is not None and checkpoint_dir is None and output_dir is None:
        raise fail(
            2, "--resume-round needs the run's -o (or --checkpoint-dir): where its checkpoints are"
        )
    creds = guard(lambda: peer_credentials(federation, key, token))
    setup_logging(log_level or "warning")
    out = output_dir or default_output_dir()
    guard(lambda: check_listen(host, 0, host_key="--host", port_key="--host"))
    if http_port is not None:
        guard(
            lambda: check_listen(
                http_host, http_port, host_key="--http-host", port_key="--http-port"
            )
        )
    board = PeerBoard()
    guard(lambda: prepare_output(out))
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
        code = guard(lambda: asyncio.run(serving(go, board, http_host, http_port, label="peer")))
    finally:
        sink.close()
    raise typer.Exit(code)
