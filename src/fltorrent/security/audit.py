"""Security events and the ``security.jsonl`` audit log.

Every join, refusal (bad or expired token, revoked member, identity mismatch, bad signature,
replayed manifest), connection the tracker drops at a limit (the 1st, 2nd, 4th, 8th... of
them), ban and revocation that fltorrent's code sees becomes one :class:`AuditEvent`: when, who
observed it (``tracker`` or ``peer N``), about whom (identity and display id, when known),
where from, what, and why. A TLS handshake that OpenSSL refuses (a non-member, an expired
token) never reaches that code and is not audited. The log is append-only JSON lines, one per
event; several processes of one run append to the same file (each line is one ``write``).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from fltorrent.errors import SecurityError

KINDS = frozenset({"join", "refused", "ban", "revoked", "bad_signature", "replay", "limit"})


@dataclass(frozen=True)
class AuditEvent:
    """One security-relevant fact."""

    kind: str  # one of KINDS
    observer: str  # "tracker" or "peer N"
    reason: str = ""
    identity: str | None = None
    peer: int | None = None
    address: str | None = None
    time: float = 0.0  # wall clock (epoch seconds); filled by the log when 0


class AuditLog(Protocol):
    def __call__(self, event: AuditEvent) -> None: ...


class JsonlAudit:
    """Appends events to a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SecurityError(f"cannot write the audit log in {path.parent}: {exc}") from None

    def __call__(self, event: AuditEvent) -> None:
        record = asdict(event)
        if not record["time"]:
            record["time"] = round(time.time(), 3)
        line = (json.dumps({k: v for k, v in record.items() if v is not None}) + "\n").encode()
        with self._lock, self.path.open("ab") as f:
            f.write(line)


class MemoryAudit:
    """Keeps events in a list (tests, and runs without an output directory)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def __call__(self, event: AuditEvent) -> None:
        self.events.append(event)
