"""Round records for tests: a :class:`RoundMetrics` with every required field, zero unless
given."""

from __future__ import annotations

import dataclasses
from typing import Any

from fltorrent.telemetry.events import RoundMetrics


def round_metrics(round_: int, peer: int, **values: Any) -> RoundMetrics:
    """Peer ``peer``'s record of ``round_``; ``values`` sets fields (the rest 0, no deadline)."""
    required = [
        f.name
        for f in dataclasses.fields(RoundMetrics)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    fields: dict[str, Any] = dict.fromkeys(required, 0)
    fields.update(round=round_, peer=peer, deadline_hit=False, **values)
    return RoundMetrics(**fields)
