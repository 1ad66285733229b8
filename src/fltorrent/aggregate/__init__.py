"""Aggregation rules: pure functions over arrays (no I/O, no peers, no config)."""

from fltorrent.aggregate.fedavg import Vector, fedavg
from fltorrent.aggregate.partial import partial_aggregate

__all__ = ["Vector", "fedavg", "partial_aggregate"]
