"""What every command of the command line shares: one-line errors with their exit codes, path
options that refuse an empty value, the shared options, logging. (``cli``, ``cli_peer``,
``cli_status`` and ``cli_keys`` build on it.)"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from fltorrent.errors import ConfigError, FltorrentError

_T = TypeVar("_T")


def fail(code: int, message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; the exit to raise, with ``code``."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def path_option(value: str | None) -> Path | None:
    """A path option: an empty one is refused rather than taken as the current directory."""
    if value is None:
        return None
    if not value.strip():
        raise fail(2, "a path option is empty")
    return Path(value)


def guard(fn: Callable[[], _T]) -> _T:
    """``fn()``, its errors as one line and an exit code: configuration 2, others 1, Ctrl-C
    130."""
    try:
        return fn()
    except ConfigError as exc:
        raise fail(2, str(exc)) from None
    except FltorrentError as exc:
        raise fail(1, str(exc)) from None
    except OSError as exc:  # e.g. the disk filled up during a run
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(1, f"{where}{exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise fail(130, "interrupted") from None


def setup_logging(level: str) -> None:
    """Log records of ``level`` and above to stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


LogOpt = Annotated[str | None, typer.Option("--log-level", help="debug|info|warning|error")]
FederationOpt = Annotated[
    Path | None,
    typer.Option("--federation", help="The federation's directory or its federation.crt."),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output-dir", "-o", parser=path_option, help="Where the run's outputs go."),
]
