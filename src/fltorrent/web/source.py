"""Status sources: what the web endpoints read.

A source is anything with ``snapshot()`` (the dict of :mod:`fltorrent.telemetry.snapshot`) and
``version``, a number that changes whenever the snapshot may have changed (the server-sent
events stream polls it, and builds a snapshot only when it moved). The in-process federation's
:class:`fltorrent.runtime.status.StatusBoard` is one; :class:`TrackerSource` reads a tracker's
member table.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fltorrent.telemetry.snapshot import EVALUATED, PeerView, RoundHistory, make_snapshot
from fltorrent.tracker import MemberState, Tracker


@runtime_checkable
class StatusSource(Protocol):
    """Read-only live state for the web endpoints."""

    @property
    def version(self) -> int:
        """Changes whenever :meth:`snapshot` may have changed."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The current state (see :mod:`fltorrent.telemetry.snapshot`)."""
        ...


class TrackerSource:
    """The status of a tracker's federation, from its members' progress reports.

    It installs itself as the tracker's ``on_progress`` and ``on_record`` callbacks (calling
    the ones that were there first) to keep the per-round history and the bytes each member
    reports with its round's record (untrusted: taken only when they are byte counts); phases,
    rounds and departures are read from the member table when a snapshot is taken."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.history = RoundHistory()
        self._reports = 0
        self._chained = tracker.on_progress
        self._chained_record = tracker.on_record
        tracker.on_progress = self.observe
        tracker.on_record = self.observe_record

    def observe(self, member: MemberState) -> None:
        """A member's progress report."""
        if self._chained is not None:
            self._chained(member)
        self._reports += 1
        if member.phase == EVALUATED and member.accuracy is not None and self._in_run(member):
            self.history.add(
                member.round, member.peer_id, accuracy=member.accuracy, completion=member.completion
            )

    def observe_record(self, peer: int, record: dict[str, Any]) -> None:
        """A member's record of its round (after its progress report): its bytes."""
        if self._chained_record is not None:
            self._chained_record(peer, record)
        member = self.tracker.members.get(peer)
        up, down = record.get("bytes_up"), record.get("bytes_down")
        if member is None or member.accuracy is None or not (_count(up) and _count(down)):
            return
        if not self._in_run(member):
            return
        self._reports += 1
        self.history.add(
            member.round,
            peer,
            accuracy=member.accuracy,
            completion=member.completion,
            bytes_up=up,
            bytes_down=down,
        )

    @property
    def version(self) -> int:
        members = self.tracker.members
        state = tuple((p, m.phase, m.round, m.alive) for p, m in members.items())
        return hash((self._reports, self.tracker.welcomed, state))

    def _in_run(self, member: MemberState) -> bool:
        """Whether the member's reported round is a round of this run (the history keeps one
        row per round: a member must not grow it at will)."""
        total = self._total_rounds()
        return 1 <= member.round <= (total if total is not None else 0)

    def _total_rounds(self) -> int | None:
        federate = self.tracker.config.get("federate")
        rounds = federate.get("total_round_num") if isinstance(federate, dict) else None
        return rounds if isinstance(rounds, int) else None

    def snapshot(self) -> dict[str, Any]:
        members = self.tracker.members
        views = [
            PeerView(
                p,
                phase=m.phase if m.alive or m.done else "failed",
                round=m.round,
                completion=m.completion,
                accuracy=m.accuracy,
            )
            for p, m in members.items()
        ]
        for view in views:
            view.bytes_up, view.bytes_down = self.history.peer_bytes(view.peer)
        return make_snapshot(
            views,
            total_rounds=self._total_rounds(),
            history=self.history,
            edges=self.tracker.edges() if self.tracker.welcomed else None,
            source="tracker",
        )


def _count(value: object) -> bool:
    """A plausible byte count (records come from members and are not trusted)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62
