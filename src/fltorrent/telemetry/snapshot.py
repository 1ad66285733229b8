"""The live status snapshot: one shape for every status source.

A snapshot is a plain JSON-ready dict, made by :func:`make_snapshot` from each peer's last known
state (:class:`PeerView`), the federation's per-round history (:class:`RoundHistory`) and the
overlay's edges. The in-process federation (:class:`fltorrent.runtime.status.StatusBoard`), the
tracker (:class:`fltorrent.web.source.TrackerSource`), a lone peer and a finished run's
directory all produce it, and the web endpoints, ``status.json`` and ``fltorrent status`` read
it::

    {"source": "federation", "state": "running", "round": 3, "total_rounds": 10,
     "completion": 0.97, "accuracy_mean": 0.81, "accuracy_min": 0.74,
     "peers": {"1": {"peer": 1, "phase": "training", "round": 3, "completion": 1.0,
                     "accuracy": 0.8, "bytes_up": 123, "bytes_down": 456}, ...},
     "history": [{"round": 1, "peers": 3, "accuracy_mean": 0.5, "accuracy_min": 0.4,
                  "completion_mean": 1.0, "bytes_up": 789, "bytes_down": 789}, ...],
     "edges": [[1, 2], [2, 3]]}

``state`` is ``starting``, ``running`` or ``finished`` (``stopped``: the run ended before its
peers did); ``round`` is the slowest live peer's round; ``bytes_*`` are ``None`` where the source
does not know them (a tracker whose members send no round records); ``edges`` is ``None`` when
unknown.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

EVALUATED = "evaluated"
"""The progress phase of a peer whose round has metrics (``fltorrent.runtime.node.EVALUATED``)."""

STATUS_FILE = "status.json"  # a run directory's live snapshot
FINAL_PHASES = frozenset({"done", "failed"})
MAX_EDGES = 5000  # a larger overlay is left out of snapshots (a browser could not draw it)


@dataclass
class PeerView:
    """The last known state of one peer."""

    peer: int
    phase: str = "starting"
    round: int = 0
    completion: float = 0.0
    accuracy: float | None = None
    bytes_up: int | None = None  # this peer's traffic so far (None: unknown to the source)
    bytes_down: int | None = None


@dataclass
class _Entry:
    accuracy: float
    completion: float
    bytes_up: int | None
    bytes_down: int | None


class RoundHistory:
    """Per round: mean and min accuracy, mean completion and bytes over the peers that reported
    it. Reporting (round, peer) again replaces that peer's entry (a fuller record wins)."""

    def __init__(self) -> None:
        self._rounds: dict[int, dict[int, _Entry]] = {}
        self._rows: dict[int, dict[str, Any]] = {}  # cache, dropped for a round on change

    def add(
        self,
        round_: int,
        peer: int,
        *,
        accuracy: float,
        completion: float,
        bytes_up: int | None = None,
        bytes_down: int | None = None,
    ) -> bool:
        """Record one peer's round; returns whether anything changed. Bytes already known for
        the entry are kept when a report without them comes in."""
        entries = self._rounds.setdefault(round_, {})
        old = entries.get(peer)
        if old is not None:
            bytes_up = old.bytes_up if bytes_up is None else bytes_up
            bytes_down = old.bytes_down if bytes_down is None else bytes_down
        new = _Entry(accuracy, completion, bytes_up, bytes_down)
        if new == old:
            return False
        entries[peer] = new
        self._rows.pop(round_, None)
        return True

    def peer_bytes(self, peer: int) -> tuple[int | None, int | None]:
        """``peer``'s bytes up and down over the rounds it reported them for (``None``:
        never reported)."""
        entries = [r[peer] for r in self._rounds.values() if peer in r]
        ups = [e.bytes_up for e in entries if e.bytes_up is not None]
        downs = [e.bytes_down for e in entries if e.bytes_down is not None]
        return (sum(ups) if ups else None, sum(downs) if downs else None)

    def rows(self) -> list[dict[str, Any]]:
        """One row per round, in round order."""
        return [self._row(r) for r in sorted(self._rounds)]

    def _row(self, round_: int) -> dict[str, Any]:
        cached = self._rows.get(round_)
        if cached is not None:
            return cached
        entries = list(self._rounds[round_].values())
        accuracies = [e.accuracy for e in entries]
        row = {
            "round": round_,
            "peers": len(entries),
            "accuracy_mean": finite(statistics.fmean(accuracies)),
            "accuracy_min": finite(min(accuracies)),
            "completion_mean": finite(statistics.fmean(e.completion for e in entries)),
            "bytes_up": _total(e.bytes_up for e in entries),
            "bytes_down": _total(e.bytes_down for e in entries),
        }
        self._rows[round_] = row
        return row


def _total(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def finite(value: float | None) -> float | None:
    """``value``, or ``None`` when it is missing or not finite (JSON has no NaN)."""
    return value if value is not None and math.isfinite(value) else None


def state_of(peers: Iterable[PeerView]) -> str:
    """``starting`` (no peer started a round), ``finished`` (every peer done or failed) or
    ``running``."""
    views = list(peers)
    if views and all(v.phase in FINAL_PHASES for v in views):
        return "finished"
    if all(v.round == 0 and v.phase not in FINAL_PHASES for v in views):
        return "starting"
    return "running"


def make_snapshot(
    peers: Iterable[PeerView],
    *,
    total_rounds: int | None,
    history: RoundHistory | None = None,
    edges: Iterable[tuple[int, int]] | None = None,
    source: str = "federation",
) -> dict[str, Any]:
    """The snapshot (see the module docstring) of these peers."""
    views = sorted(peers, key=lambda v: v.peer)
    live = [v for v in views if v.phase != "failed"]
    rows = history.rows() if history is not None else []
    last = rows[-1] if rows else None
    edge_list = sorted((min(a, b), max(a, b)) for a, b in edges) if edges is not None else None
    if edge_list is not None and len(edge_list) > MAX_EDGES:
        edge_list = None
    return {
        "source": source,
        "state": state_of(views),
        "round": min((v.round for v in live), default=0),
        "total_rounds": total_rounds,
        "completion": finite(statistics.fmean(v.completion for v in live)) if live else 0.0,
        "accuracy_mean": last["accuracy_mean"] if last else None,
        "accuracy_min": last["accuracy_min"] if last else None,
        "peers": {v.peer: _peer_dict(v) for v in views},
        "history": rows,
        "edges": [list(e) for e in edge_list] if edge_list is not None else None,
    }


def _peer_dict(view: PeerView) -> dict[str, Any]:
    d = asdict(view)
    d["accuracy"] = finite(view.accuracy)
    d["completion"] = finite(view.completion) or 0.0
    return d
