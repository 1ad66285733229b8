"""``fltorrent status RUN_DIR | --tracker HOST:PORT`` and the status endpoints of
``fltorrent tracker --http-port`` and ``fltorrent peer --http-port``.

``status`` reads a run directory's live ``status.json`` (or, without one, its metrics and
summary) or asks a status endpoint over HTTP with a deadline, and prints a table (or the JSON
with ``--json``). Exit codes as elsewhere: 2 for a bad argument, 1 when the status cannot be
had.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fltorrent.cli_common import fail
from fltorrent.errors import ConfigError, FltorrentError
from fltorrent.web.client import fetch_status, parse_address, read_status

if TYPE_CHECKING:
    from fltorrent.web.source import StatusSource


_T = TypeVar("_T")

HttpPortOpt = Annotated[
    int | None,
    typer.Option(
        "--http-port", min=0, max=65535, help="Serve /status, /metrics, /events here (0: any)."
    ),
]
HttpHostOpt = Annotated[
    str, typer.Option("--http-host", help="Address the status endpoints listen on.")
]


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size, unit = float(value), "B"
    for bigger in ("kB", "MB", "GB", "TB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{value} B" if unit == "B" else f"{size:.1f} {unit}"


def render_status(status: dict[str, Any], where: str, console: Console) -> None:
    """Print ``status`` (a snapshot) as a heading line, a table of peers and one of rounds."""
    total = status.get("total_rounds")
    rounds = f"{status.get('round', 0)}/{total}" if total is not None else str(status.get("round"))
    console.print(
        f"[bold]{escape(where)}[/bold]: {escape(str(status.get('state', '?')))}, round {rounds}, "
        f"accuracy mean {_number(status.get('accuracy_mean'), 4)} "
        f"min {_number(status.get('accuracy_min'), 4)}, "
        f"completion {_number(status.get('completion'), 2)}",
        highlight=False,
    )
    peers = Table(title="peers", title_justify="left")
    for name in ("peer", "phase", "round", "completion", "accuracy", "bytes up", "bytes down"):
        peers.add_column(name, justify="left" if name == "phase" else "right")
    for p in sorted(status.get("peers", {}).values(), key=lambda p: int(p["peer"])):
        peers.add_row(
            str(p["peer"]),
            Text(str(p["phase"])),  # reported by members: not markup
            str(p["round"]),
            _number(p.get("completion"), 2),
            _number(p.get("accuracy"), 4),
            _bytes(p.get("bytes_up")),
            _bytes(p.get("bytes_down")),
        )
    console.print(peers)
    history = status.get("history") or []
    if history:
        table = Table(title="rounds", title_justify="left")
        for name in ("round", "peers", "accuracy mean", "min", "completion", "bytes down"):
            table.add_column(name, justify="right")
        for row in history:
            table.add_row(
                str(row["round"]),
                str(row["peers"]),
                _number(row.get("accuracy_mean"), 4),
                _number(row.get("accuracy_min"), 4),
                _number(row.get("completion_mean"), 2),
                _bytes(row.get("bytes_down")),
            )
        console.print(table)


def status(
    run_dir: Annotated[
        Path | None, typer.Argument(help="A run's output directory.", show_default=False)
    ] = None,
    tracker: Annotated[
        str | None,
        typer.Option("--tracker", help="HOST:PORT of a status endpoint (tracker --http-port)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON.", metavar="")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for an answer.")
    ] = 5.0,
) -> None:
    """Print the live (or final) state of a run: from RUN_DIR, or from a tracker's (or any)
    status endpoint with --tracker HOST:PORT."""
    if (run_dir is None) == (tracker is None):
        raise fail(2, "give a run directory or --tracker HOST:PORT (one of the two)")
    try:
        if tracker is not None:
            host, port = parse_address(tracker)
            snapshot, where = fetch_status(host, port, timeout=timeout), tracker
        else:
            assert run_dir is not None
            snapshot, where = read_status(run_dir), str(run_dir)
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    except FltorrentError as exc:
        raise fail(1, str(exc)) from None
    if as_json:
        typer.echo(json.dumps(snapshot, indent=2))
    else:
        render_status(snapshot, where, Console(highlight=False))


def show_dashboard(url: str) -> None:
    """``fltorrent run --dashboard``: where the dashboard is (stderr)."""
    typer.echo(f"dashboard: {url}", err=True)


@contextlib.asynccontextmanager
async def http_status(
    source: StatusSource, host: str, port: int | None, *, label: str
) -> AsyncIterator[None]:
    """Serve ``source``'s endpoints while the body runs (nothing when ``port`` is ``None``),
    telling stderr where."""
    if port is None:
        yield
        return
    from fltorrent.web.server import serve_status  # noqa: PLC0415 (starlette, uvicorn: lazily)

    async with serve_status(source, host=host, port=port) as server:
        typer.echo(f"{label} status at {server.url} (/status, /metrics, /events)", err=True)
        yield


async def serving(
    main: Callable[[], Awaitable[_T]],
    source: StatusSource,
    host: str,
    port: int | None,
    *,
    label: str,
) -> _T:
    """Run ``main()`` with ``source``'s endpoints served (see :func:`http_status`)."""
    async with http_status(source, host, port, label=label):
        return await main()
