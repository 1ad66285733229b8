"""Serving the status app in the caller's event loop: :func:`serve_status`.

uvicorn runs as a task of the running loop (no thread, no signal handlers of its own: Ctrl-C
stays with the application), on a socket bound here so that a port in use is an error of ours
rather than uvicorn's ``sys.exit``. Starting and stopping both have deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import uvicorn

from fltorrent.errors import ConfigError, DeadlineExceeded
from fltorrent.web.app import create_app
from fltorrent.web.source import StatusSource

log = logging.getLogger(__name__)

START_DEADLINE = 10.0
STOP_DEADLINE = 5.0


@dataclass(frozen=True)
class StatusServer:
    """A running status server."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port/`` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the application owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: any free port); :class:`ConfigError`
    when the host cannot be used or the port is taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}", path="http host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use", path="http port") from None
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}", path="http host") from None
    return sock


@contextlib.asynccontextmanager
async def serve_status(
    source: StatusSource,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    poll: float = 0.25,
    heartbeat: float = 5.0,
    start_deadline: float = START_DEADLINE,
    stop_deadline: float = STOP_DEADLINE,
) -> AsyncIterator[StatusServer]:
    """Serve ``source``'s endpoints on ``host``:``port`` while the body runs; yields the bound
    address. :class:`ConfigError` if it cannot listen, :class:`DeadlineExceeded` if it does
    not start in ``start_deadline`` s; stopping waits ``stop_deadline`` s, then cancels."""
    sock = bind(host, port)
    bound_port = int(sock.getsockname()[1])
    closing = asyncio.Event()
    app = create_app(source, poll=poll, heartbeat=heartbeat, closing=closing)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, int(stop_deadline / 2)),
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"status http :{bound_port}")
    try:
        try:
            async with asyncio.timeout(start_deadline):
                while not server.started:
                    if task.done():
                        break
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the status server on port {bound_port} did not start in {start_deadline:g}s"
            ) from None
        if task.done():  # it ended while starting: raise what it raised
            task.result()
            raise DeadlineExceeded(f"the status server on port {bound_port} stopped at start")
        yield StatusServer(host, bound_port)
    finally:
        closing.set()
        server.should_exit = True
        try:
            async with asyncio.timeout(stop_deadline):  # at the deadline the task is cancelled
                await task
        except TimeoutError:
            log.warning("the status server did not stop in %gs; cancelled it", stop_deadline)
        except Exception as exc:  # a failing server must not hide the body's outcome
            log.warning("the status server failed: %s", exc)
        finally:
            sock.close()
