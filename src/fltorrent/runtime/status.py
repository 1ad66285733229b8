"""A live view of every peer, fed by peers (in-process) or by the tracker (processes).

:class:`StatusBoard` is what :meth:`Federation.get_training_status` returns a snapshot of (the
shape is :mod:`fltorrent.telemetry.snapshot`'s); it is also a status source for the web
endpoints (:mod:`fltorrent.web`). :func:`watch_run` keeps ``RUN_DIR/status.json`` current
while a run goes on and, when asked, serves the dashboard: the one call from the runtime into
the web layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fltorrent.errors import ConfigError
from fltorrent.runtime.build import topology_spec
from fltorrent.runtime.preflight import check_listen
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.telemetry.snapshot import (
    EVALUATED,
    MAX_EDGES,
    STATUS_FILE,
    PeerView,
    RoundHistory,
    make_snapshot,
)
from fltorrent.topology import build_topology

if TYPE_CHECKING:
    from fltorrent.config import Config
    from fltorrent.peer import Peer, PeerStatus

__all__ = [
    "DASHBOARD_FILE",
    "STATUS_FILE",
    "PeerBoard",
    "PeerView",
    "StatusBoard",
    "StatusFile",
    "check_dashboard",
    "watch_run",
    "write_status",
]

log = logging.getLogger(__name__)

DASHBOARD_FILE = "dashboard.url"

Edges = Callable[[], Iterable[tuple[int, int]] | None]


class StatusBoard:
    """Collects peer states for :meth:`Federation.get_training_status` and the web endpoints.

    ``version`` counts changes (a status source's change counter); ``edges`` gives the overlay
    when first asked for (``None``: unknown)."""

    def __init__(
        self,
        peers: int,
        rounds: int | None,
        *,
        edges: Edges | None = None,
        source: str = "federation",
    ) -> None:
        self.rounds = rounds
        self.peers = {i: PeerView(i) for i in range(1, peers + 1)}
        self.history = RoundHistory()
        self.source = source
        self.version = 0
        self.stopped = False  # the run ended before its peers did (interrupted, crashed)
        self._edges = edges
        self._edge_list: list[tuple[int, int]] | None = None
        self._listeners: list[Callable[[], None]] = []

    @classmethod
    def for_config(cls, config: Config) -> StatusBoard:
        """A board for ``config``'s federation, with the overlay its tracker builds (the same
        seeded graph; repairs after departures are not shown)."""
        fed = config.federate

        def edges() -> list[tuple[int, int]] | None:
            spec = topology_spec(config)
            kind = spec.kind if spec.use else "full"
            n = fed.client_num
            if kind == "full" and n * (n - 1) // 2 > MAX_EDGES:
                return None  # too many to draw: not built
            try:
                graph = build_topology(
                    kind,
                    fed.client_num,
                    connections=spec.connections,
                    branching=spec.branching,
                    custom_graph=spec.custom_graph,
                    seed=spec.seed,
                )
            except ConfigError:
                return None
            return [(int(a), int(b)) for a, b in graph.edges()]

        return cls(fed.client_num, fed.total_round_num, edges=edges)

    # ------------------------------------------------------------------ updates
    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change."""
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _changed(self) -> None:
        self.version += 1
        for listener in list(self._listeners):
            listener()

    def update(
        self, peer: int, *, phase: str, round_: int, completion: float, accuracy: float | None
    ) -> None:
        """Record a peer's state (a progress report with accuracy also enters the history)."""
        view = self.peers.setdefault(peer, PeerView(peer))
        view.phase, view.round, view.completion = phase, round_, completion
        if accuracy is not None:
            view.accuracy = accuracy
            if phase == EVALUATED:
                self.history.add(round_, peer, accuracy=accuracy, completion=completion)
        self._changed()

    def record(self, m: RoundMetrics) -> None:
        """A round's metrics: the peer's state, its bytes and the round's history."""
        view = self.peers.setdefault(m.peer, PeerView(m.peer))
        view.phase, view.round, view.completion = EVALUATED, m.round, m.completion
        view.accuracy = m.accuracy
        self.history.add(
            m.round,
            m.peer,
            accuracy=m.accuracy,
            completion=m.completion,
            bytes_up=m.bytes_up,
            bytes_down=m.bytes_down,
        )
        view.bytes_up, view.bytes_down = self.history.peer_bytes(m.peer)
        self._changed()

    def mark(self, peer: int, phase: str) -> None:
        """Set only the phase (e.g. failed, done)."""
        self.peers.setdefault(peer, PeerView(peer)).phase = phase
        self._changed()

    # ------------------------------------------------------------------ reading
    def edges(self) -> list[tuple[int, int]] | None:
        """The overlay's edges (computed once)."""
        if self._edge_list is None and self._edges is not None:
            found = self._edges()
            self._edges = None
            self._edge_list = list(found) if found is not None else None
        return self._edge_list

    def snapshot(self) -> dict[str, Any]:
        """Round (the slowest live peer's), per-peer state, mean completion, per-round history
        and edges (:mod:`fltorrent.telemetry.snapshot`)."""
        snapshot = make_snapshot(
            self.peers.values(),
            total_rounds=self.rounds,
            history=self.history,
            edges=self.edges(),
            source=self.source,
        )
        if self.stopped and snapshot["state"] != "finished":
            snapshot["state"] = "stopped"
        return snapshot


class PeerBoard(StatusBoard):
    """One peer's own status (``fltorrent peer --http-port``): its phases, metrics, total
    rounds and neighbours, fed by the node's hooks."""

    def __init__(self) -> None:
        super().__init__(0, None, source="peer")

    def on_phase(self, s: PeerStatus) -> None:
        """``NodeHooks.on_phase``."""
        self.update(
            s.peer,
            phase=s.phase.value,
            round_=s.round,
            completion=s.completion,
            accuracy=s.accuracy,
        )

    def on_peer(self, peer: Peer) -> None:
        """``NodeHooks.on_peer``: the peer exists (after the welcome)."""
        self.rounds = peer.policy.rounds
        self._edge_list = [(peer.peer_id, q) for q in sorted(peer.neighbours)]
        self.peers.setdefault(peer.peer_id, PeerView(peer.peer_id))
        self._changed()


class StatusFile:
    """Keeps ``path`` (``status.json``) a current snapshot of ``board``: written atomically (a
    temporary file, then :func:`os.replace`), at most every ``interval`` seconds, on changes.

    With ``periodic`` (real time) :meth:`run` writes pending changes every ``interval``; without
    (virtual time, where a periodic timer would keep the simulated clock ticking) a change
    writes the file when the last write is ``interval`` wall seconds old, and :meth:`write`
    at the end catches the rest. Writing never fails the run: an error is logged once."""

    def __init__(
        self, board: StatusBoard, path: Path, *, interval: float = 0.5, periodic: bool = True
    ) -> None:
        self.board = board
        self.path = path
        self.interval = interval
        self.periodic = periodic
        self._dirty = False
        self._last = -float("inf")
        self._warned = False

    def changed(self) -> None:
        """Board listener."""
        self._dirty = True
        if not self.periodic and time.monotonic() - self._last >= self.interval:
            self.write()

    def write(self) -> None:
        """Write the board's snapshot now."""
        self._dirty = False
        self._last = time.monotonic()
        try:
            write_status(self.board, self.path.parent, name=self.path.name)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write %s: %s", self.path, exc)
                self._warned = True

    async def run(self) -> None:
        """Write pending changes every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            if self._dirty:
                self.write()


def write_status(board: StatusBoard, output_dir: Path, *, name: str = STATUS_FILE) -> Path:
    """Write ``board``'s snapshot to ``output_dir/name`` atomically (with ``written_at``, Unix
    seconds); returns the path."""
    path = output_dir / name
    data = {**board.snapshot(), "written_at": round(time.time(), 3)}
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def check_dashboard(*, virtual_time: bool, host: str, port: int) -> None:
    """Refuse a dashboard that cannot be served: in virtual time, or on a host or port this
    machine cannot listen on (:class:`ConfigError`, before anything starts)."""
    if virtual_time:
        raise ConfigError(
            "a simulation runs in virtual time, where a web server cannot serve; "
            "watch it with: fltorrent status RUN_DIR",
            path="dashboard",
        )
    check_listen(host, port, host_key="dashboard host", port_key="dashboard port")


@contextlib.asynccontextmanager
async def watch_run(
    board: StatusBoard,
    output_dir: Path,
    *,
    realtime: bool = True,
    dashboard: int | None = None,
    host: str = "127.0.0.1",
    on_url: Callable[[str], None] | None = None,
    interval: float = 0.5,
) -> AsyncIterator[None]:
    """While the body runs: keep ``output_dir/status.json`` current and, with ``dashboard``
    (a port; 0: any free one), serve the status endpoints and the dashboard on ``host``, its
    URL in ``output_dir/dashboard.url`` and given to ``on_url``."""
    status = StatusFile(board, output_dir / STATUS_FILE, interval=interval, periodic=realtime)
    (output_dir / DASHBOARD_FILE).unlink(missing_ok=True)  # an earlier run's
    board.listen(status.changed)
    status.write()
    writer = asyncio.create_task(status.run(), name="status.json") if realtime else None
    try:
        if dashboard is None:
            yield
        else:
            from fltorrent.web.server import serve_status  # noqa: PLC0415 (starlette, uvicorn)

            async with serve_status(board, host=host, port=dashboard) as server:
                (output_dir / DASHBOARD_FILE).write_text(server.url + "\n", encoding="utf-8")
                if on_url is not None:
                    on_url(server.url)
                try:
                    yield
                finally:  # the server is gone: its address would point nowhere
                    (output_dir / DASHBOARD_FILE).unlink(missing_ok=True)
    except BaseException:
        board.stopped = True
        raise
    finally:
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        board.unlisten(status.changed)
        status.write()
