"""Reading a run directory back: its metric records, summary and configuration, whatever wrote
it (one process, one process per peer under ``peers/``, a tracker's peers) and however it
ended (an interrupted run has records and no summary; a crash may cut its last line short)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fltorrent.errors import FltorrentError
from fltorrent.telemetry.sink import read_metrics

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"


def is_number(value: Any) -> bool:
    """Whether a value read back from a run's files is a finite number that converts to a
    float (not a bool, not NaN, not an int beyond 2^62: a count no run makes)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= 1 << 62
    return isinstance(value, float) and math.isfinite(value)


@dataclass
class RunData:
    """What a run directory holds."""

    path: Path
    records: list[dict[str, Any]]  # one per peer and round, sorted by (round, peer)
    summary: dict[str, Any] | None = None  # None: the run did not finish writing it
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def peers(self) -> list[int]:
        return sorted({int(r["peer"]) for r in self.records})

    @property
    def rounds(self) -> list[int]:
        return sorted({int(r["round"]) for r in self.records})


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file that name their round and peer (lines cut short by a
    stop, or not ours, are left out)."""
    return [
        r
        for r in read_metrics(path)
        if isinstance(r, dict) and type(r.get("round")) is int and type(r.get("peer")) is int
    ]


def read_run(path: Path) -> RunData:
    """Read ``path``; raises :class:`FltorrentError` when it holds no metrics at all."""
    if not path.is_dir():
        raise FltorrentError(f"{path}: no such run directory")
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    sources = [path / METRICS_FILE, *sorted(path.glob(f"peers/*/{METRICS_FILE}"))]
    for source in sources:
        if source.is_file():
            for r in _jsonl(source):
                merged.setdefault((int(r["round"]), int(r["peer"])), r)
    if not merged:
        raise FltorrentError(f"{path}: no metrics ({METRICS_FILE}) to read: is it a run directory?")
    summary = None
    if (path / SUMMARY_FILE).is_file():
        try:
            loaded = json.loads((path / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            loaded = None
        summary = loaded if isinstance(loaded, dict) else None
    config: dict[str, Any] = {}
    if (path / CONFIG_FILE).is_file():
        try:
            loaded = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except yaml.YAMLError:
            loaded = None
        config = loaded if isinstance(loaded, dict) else {}
    records = [merged[k] for k in sorted(merged)]
    return RunData(path, records, summary, config)


def keep_rounds(path: Path, last: int) -> None:
    """Drop the records of rounds after ``last`` from a run's metrics files (a resumed run
    runs them again); lines cut short by the stop go too."""
    for source in [path / METRICS_FILE, *sorted(path.glob(f"peers/*/{METRICS_FILE}"))]:
        if not source.is_file():
            continue
        kept = [r for r in _jsonl(source) if int(r["round"]) <= last]
        tmp = source.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in kept))
        tmp.replace(source)


# What a run writes besides its files at the top: a new run in the same directory starts them
# afresh (a resumed one keeps them).
RUN_FOLDERS = (
    "topology_logs",
    "bittorrent_logs",
    "checkpoints",
    "report",
    "peers",
    "models",
    "tensorboard",
    "mlruns",
)


def clear_run_outputs(path: Path) -> None:
    """Remove the folders an earlier run left in ``path`` (see :data:`RUN_FOLDERS`)."""
    for name in RUN_FOLDERS:
        shutil.rmtree(path / name, ignore_errors=True)
