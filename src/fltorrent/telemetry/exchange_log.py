"""Exchange logs: one peer's connection and piece events as JSON lines, as the FLTorrent design
keeps them (``topology_logs/`` and ``bittorrent_logs/``).

``topology_logs/peer-N.jsonl`` holds connection events (``opened`` with the handshake time,
``closed``/``refused`` with the reason, ``dial_failed``, ``gave_up``) and the overlay's
construction (``topology_complete`` with the seconds from the peer's start until every overlay
neighbour was connected, or ``topology_incomplete`` naming those missing at ``topology.timeout``).
``bittorrent_logs/peer-N.jsonl`` holds one line per piece that arrived whole: which piece of
which author's update of which round, from which neighbour, how long it took, verified or
rejected. ``t`` is seconds since the Unix epoch in real mode and simulated seconds since the
federation started in simulation. :func:`read_exchange_logs` reads a run's logs back, wherever
its peers wrote them (the run directory, or each peer's own under ``peers/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import statistics
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Any

from fltorrent.swarm.events import ExchangeEvent, PieceEvent
from fltorrent.telemetry.run_dir import is_number

log = logging.getLogger(__name__)

TOPOLOGY_DIR = "topology_logs"
BITTORRENT_DIR = "bittorrent_logs"


class ExchangeLog:
    """Writes one peer's exchange events (a :data:`~fltorrent.swarm.events.EventSink`).

    ``origin`` is the loop time the federation started (simulation: times are written relative
    to it); ``None`` writes epoch seconds."""

    def __init__(self, directory: Path, peer: int, *, origin: float | None = None) -> None:
        self.peer = peer
        loop = asyncio.get_running_loop()
        self._offset = -origin if origin is not None else time.time() - loop.time()
        self._loop = loop
        self._files: list[IO[str]] = []
        self._topology = self._open(directory / TOPOLOGY_DIR / f"peer-{peer}.jsonl")
        self._pieces = self._open(directory / BITTORRENT_DIR / f"peer-{peer}.jsonl")
        self._started = loop.time()
        self._up: set[int] = set()  # neighbours with an open session now
        self._missing: set[int] = set()  # overlay neighbours not connected yet
        self._complete = False
        self._reported = False  # topology_incomplete was written
        self._timeout = math.inf

    def _open(self, path: Path) -> IO[str]:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a", encoding="utf-8")
        self._files.append(f)
        return f

    def _write(self, f: IO[str], record: dict[str, Any]) -> None:
        if f.closed:
            return
        try:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:  # the swarm calls this: it must not raise; the logs stop
            self._stop(exc)

    def __call__(self, event: ExchangeEvent) -> None:
        record = {name: getattr(event, name) for name in event.__slots__}
        record["t"] = round(event.t + self._offset, 6)
        record["peer"] = self.peer
        if isinstance(event, PieceEvent):
            self._write(self._pieces, record)
            return
        self._write(self._topology, record)
        if event.remote is None:
            return
        if event.kind == "closed":
            self._up.discard(event.remote)
        elif event.kind == "opened":
            self._up.add(event.remote)
            if self._missing and event.remote in self._missing:
                self._missing.discard(event.remote)
                if self._missing:
                    return
                self._complete = True
                self._topology_record("topology_complete", construction_s=self._since_start())

    def _since_start(self) -> float:
        return round(self._loop.time() - self._started, 6)

    def _topology_record(self, kind: str, **fields: Any) -> None:
        now = self._loop.time()
        record = {"t": round(now + self._offset, 6), "kind": kind, "peer": self.peer, **fields}
        self._write(self._topology, record)

    def watch_topology(self, neighbours: Collection[int], timeout: float) -> None:
        """Record when every overlay neighbour is connected; once ``timeout`` seconds have
        passed since this log was made, name those still missing (checked as each round's
        records are flushed and at the end: no timer and no task, so that the peers'
        scheduling is the same with logs as without)."""
        self._timeout = timeout
        self._missing = set(neighbours) - self._up
        if not self._missing:
            self._complete = True
            self._topology_record("topology_complete", construction_s=self._since_start())

    def _check_deadline(self) -> None:
        if self._complete or self._reported or not self._missing:
            return
        if self._loop.time() - self._started < self._timeout:
            return
        self._reported = True
        missing = sorted(self._missing)
        log.warning(
            "peer %d: overlay neighbours %s not connected within topology.timeout (%gs)",
            self.peer,
            missing,
            self._timeout,
        )
        self._topology_record("topology_incomplete", missing=missing, timeout_s=self._timeout)

    def flush(self) -> None:
        """Push what was written to the files (once per round)."""
        self._check_deadline()
        try:
            for f in self._files:
                if not f.closed:
                    f.flush()
        except OSError as exc:
            self._stop(exc)

    def _stop(self, exc: OSError) -> None:
        log.warning("peer %d: exchange logs stopped: %s", self.peer, exc)
        for f in self._files:
            with contextlib.suppress(OSError):
                f.close()

    def close(self) -> None:
        """Flush and close the files."""
        if not self._topology.closed:
            self._check_deadline()
        for f in self._files:
            with contextlib.suppress(OSError):  # what a full disk did not take is kept
                f.close()


MAX_PIECE = 1 << 16  # a manifest's pieces (the swarm refuses more)
_INTS = ("peer", "author", "round", "piece")


def _sound(record: Any, *, piece: bool) -> bool:
    """Whether a log line is what this module writes (the files are anyone's to edit)."""
    if not isinstance(record, dict) or not is_number(record.get("t")):
        return False
    if type(record.get("peer")) is not int:
        return False
    if not piece:
        return isinstance(record.get("kind"), str)
    return (
        all(type(record.get(k)) is int for k in _INTS)
        and 0 <= record["piece"] < MAX_PIECE
        and isinstance(record.get("verified"), bool)
        and is_number(record.get("duration_s"))
    )


def _lines(paths: Iterator[Path], *, pieces: bool) -> list[dict[str, Any]]:
    records = []
    for path in sorted(paths):
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except (json.JSONDecodeError, RecursionError):  # cut short by a crash
                        continue
                    if _sound(record, piece=pieces):
                        records.append(record)
    return records


def read_exchange_logs(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(connection records, piece records) of every peer of a run, sorted by time."""
    connections = _lines(run_dir.glob(f"**/{TOPOLOGY_DIR}/peer-*.jsonl"), pieces=False)
    pieces = _lines(run_dir.glob(f"**/{BITTORRENT_DIR}/peer-*.jsonl"), pieces=True)
    connections.sort(key=lambda r: r.get("t", 0.0))
    pieces.sort(key=lambda r: r.get("t", 0.0))
    return connections, pieces


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 6),
        "p50": round(ordered[len(ordered) // 2], 6),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 6),
        "max": round(ordered[-1], 6),
    }


def exchange_summary(run_dir: Path) -> dict[str, Any]:
    """The FLTorrent design's exchange figures from a run's logs (empty without logs):
    connection-establishment time (handshakes), topology-construction time (per peer, until
    every overlay neighbour was connected), and pieces verified and rejected."""
    connections, pieces = read_exchange_logs(run_dir)
    if not connections and not pieces:
        return {}
    opened: list[Any] = [r.get("handshake_s") for r in connections if r.get("kind") == "opened"]
    built: list[Any] = [
        r.get("construction_s") for r in connections if r.get("kind") == "topology_complete"
    ]
    incomplete = sorted(
        {int(r["peer"]) for r in connections if r.get("kind") == "topology_incomplete"}
    )
    verified = [r["duration_s"] for r in pieces if r.get("verified")]
    return {
        "connections_opened": len(opened),
        "connection_failures": sum(r.get("kind") == "dial_failed" for r in connections),
        "connection_establishment_s": _stats([float(v) for v in opened if is_number(v)]),
        "topology_construction_s": _stats([float(v) for v in built if is_number(v)]),
        "topology_incomplete_peers": incomplete,
        "pieces_verified": len(verified),
        "pieces_rejected": len(pieces) - len(verified),
        "piece_time_s": _stats([float(v) for v in verified]),
    }
