"""Typed metric events."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pydantic import TypeAdapter, ValidationError


@dataclass(frozen=True)
class RoundMetrics:
    """One peer's record of one round (one line of ``metrics.jsonl``).

    Byte counts are this peer's traffic during the round (its own exchange plus whatever it
    served to others meanwhile). ``completion`` is ``pieces_received / pieces_expected`` over the
    other authors this round; ``partial_chunks`` counts chunks averaged over fewer authors than
    ``authors_aggregated`` (partial aggregation at work). Durations are on the event loop's
    clock: wall seconds in real mode, virtual seconds in simulation.
    """

    round: int
    peer: int
    accuracy: float
    loss: float
    local_accuracy: float
    train_loss: float | None  # None: did not train this round
    num_samples: int
    train_s: float
    exchange_s: float
    aggregate_s: float
    eval_s: float
    bytes_up: int
    bytes_down: int
    payload_bytes_up: int
    payload_bytes_down: int
    duplicate_bytes: int
    control_bytes: int
    corrupt_pieces: int
    pieces_expected: int
    pieces_received: int
    completion: float
    authors_expected: int
    authors_aggregated: int
    partial_chunks: int
    deadline_hit: bool
    wall_s: float
    sim_time_s: float | None = None  # virtual seconds since the federation started (sim mode)
    trained: bool = True  # False: the device policy made this peer sit the round out
    skip_reason: str | None = None  # why it sat out: battery, not_charging, thermal, ...
    compression: str = "none"  # codec of the published update: none, topk, q8
    bytes_saved: int = 0  # raw update bytes minus published (compressed) bytes
    device: str | None = None  # device profile name
    battery_level: float | None = None  # fraction of capacity after the round
    temperature_c: float | None = None
    train_wall_s: float = 0.0  # wall seconds of the training loop (also in simulation)
    score_s: float = 0.0  # wall seconds spent scoring chunk importance
    attacker: bool = False  # this peer runs a configured attack (experiments)
    judged: list[int] = field(default_factory=list)  # authors the outlier filter judged
    flagged: list[int] = field(default_factory=list)  # ... and flagged this round
    excluded: list[int] = field(default_factory=list)  # authors left out of the aggregate
    robust_fallbacks: int = 0  # chunks aggregated by the median for lack of contributors
    # Plan ``neighbours``: RMS distance of the models this peer averaged from their mean.
    consensus_distance: float | None = None
    owned_chunks: int = 0  # reduce_scatter: chunks this peer aggregated for everyone
    owner_disagreements: int = 0  # reduce_scatter: chunks whose owners published two values
    fallback_chunks: int = 0  # reduce_scatter: chunks this peer aggregated itself
    selected: bool = True  # chosen to train this round (participant selection)
    selection: str = ""  # why: "everyone", or its rank and weight in the draw

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RoundMetrics | None:
        """A ``metrics.jsonl`` line of this run's own making back as an event (``None`` if it
        is not one: a field missing, or a line from another version); unknown keys are left
        out. Not a check of remote input: the tracker validates what members send."""
        known = {k: v for k, v in record.items() if k in _FIELD_NAMES}
        try:
            return cls(**known)
        except TypeError:
            return None


_FIELD_NAMES = frozenset(f.name for f in fields(RoundMetrics))
# Losses may be NaN (a diverged model), and JSON carries NaN as null; nothing else may be.
MAX_COUNT = 1 << 62  # bytes, pieces, samples: a larger count is a lie (and overflows floats)
_NAN_OK = frozenset({"loss", "train_loss", "consensus_distance"})
_RECORD: TypeAdapter[RoundMetrics] = TypeAdapter(RoundMetrics)


def check_record(raw: dict[str, Any], *, peer: int, rounds: int) -> RoundMetrics | str:
    """A member's round record (remote input) as a :class:`RoundMetrics`, or why it is not
    one: the fields and types of RoundMetrics, finite and non-negative numbers (losses may be
    NaN), accuracy and completion in [0, 1], the sender's own, a round of a run of ``rounds``."""
    unknown = set(raw) - _FIELD_NAMES
    if unknown:
        return f"unknown fields {sorted(unknown)[:5]}"
    raw = {k: math.nan if v is None and k in _NAN_OK else v for k, v in raw.items()}
    try:
        record = _RECORD.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    for name in _FIELD_NAMES:
        value = getattr(record, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, int) and value > MAX_COUNT:
            return f"{name} is too large"
        if isinstance(value, float) and name not in _NAN_OK and not math.isfinite(value):
            return f"{name} is {value}"
        if value < 0:
            return f"{name} is negative ({value})"
    if not 0.0 <= record.completion <= 1.0:
        return f"completion {record.completion}"
    if record.peer != peer:
        return f"a record of peer {record.peer}"
    if not 1 <= record.round <= rounds:
        return f"round {record.round} is not a round of this run"
    if not 0.0 <= record.accuracy <= 1.0:
        return f"accuracy {record.accuracy}"
    return record
