"""Where metric events go: a JSON-lines file, flushed per record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from fltorrent.telemetry.events import RoundMetrics


def _clean(value: Any) -> Any:
    # JSON has no NaN: write null so every line parses with a strict reader.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlSink:
    """Appends one JSON object per :class:`RoundMetrics` to a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def emit(self, event: RoundMetrics) -> None:
        """Write and flush one record."""
        if self._file is None:
            raise ValueError("sink is closed")
        record = {k: _clean(v) for k, v in event.as_dict().items()}
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file (a line cut short by a crash is left out)."""
    records = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except (json.JSONDecodeError, RecursionError):
                    continue
    return records
