"""A tracker-mode run is a run: ``fltorrent tracker`` writes the run directory.

The members send each round's record with their progress (``Progress.record``); this writes
the resolved ``config.yaml`` at the start, every valid record to ``metrics.jsonl`` as it comes,
and at the end ``summary.json`` (members that did not finish are failed) and the report. A
record is a remote party's word: it is checked against :class:`RoundMetrics` (its fields and
their types), must be the sender's own and of a round of this run, and is kept once; anything
else is dropped with a warning, never ending the tracker.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fltorrent.config import Config, dump_config
from fltorrent.errors import FltorrentError
from fltorrent.telemetry.events import RoundMetrics, check_record
from fltorrent.telemetry.report import write_report
from fltorrent.telemetry.sink import JsonlSink, read_metrics
from fltorrent.telemetry.summary import summarize
from fltorrent.tracker import MemberState

log = logging.getLogger(__name__)


class TrackerRun:
    """The run directory of a tracker-mode federation (see the module docstring)."""

    def __init__(self, config: Config, out: Path) -> None:
        self.config = config
        self.out = out
        self.kept: set[tuple[int, int]] = set()
        self.dropped = 0
        (out / "config.yaml").write_text(dump_config(config))
        (out / "metrics.jsonl").unlink(missing_ok=True)
        self._sink = JsonlSink(out / "metrics.jsonl")
        self._start = time.perf_counter()

    def check(self, peer: int, raw: dict[str, Any]) -> RoundMetrics | str:
        """The record if it holds, else why not."""
        record = check_record(raw, peer=peer, rounds=self.config.federate.total_round_num)
        if not isinstance(record, str) and (record.round, peer) in self.kept:
            return f"round {record.round} again"
        return record

    def on_record(self, peer: int, raw: dict[str, Any]) -> None:
        """The tracker's ``on_record`` hook."""
        record = self.check(peer, raw)
        if isinstance(record, str):
            self.dropped += 1
            log.warning("tracker: dropped a round record from peer %d: %s", peer, record)
            return
        self.kept.add((record.round, peer))
        self._sink.emit(record)

    def finish(self, members: dict[int, MemberState]) -> dict[str, Any]:
        """Write the summary and the report; returns the summary (``failed_peers``: members
        that did not finish, or never registered)."""
        self._sink.close()
        n = self.config.federate.client_num
        failed = sorted(
            {p for p, m in members.items() if not m.done} | (set(range(1, n + 1)) - set(members))
        )
        records = read_metrics(self.out / "metrics.jsonl")
        records.sort(key=lambda r: (r["round"], r["peer"]))
        summary = summarize(
            records,
            peers=n,
            rounds=self.config.federate.total_round_num,
            wall_time_s=time.perf_counter() - self._start,
            failed=failed,
            accuracy_targets=self.config.output.accuracy_targets,
            extra={"mode": "tracker", "records_dropped": self.dropped},
        )
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if records:
            try:
                write_report(self.out)
            except (FltorrentError, OSError) as exc:
                log.warning("tracker: no report: %s", exc)
        return summary
