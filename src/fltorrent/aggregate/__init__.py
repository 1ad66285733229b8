"""Aggregation rules: pure functions over arrays (no I/O, no peers, no config)."""

from fltorrent.aggregate.fedavg import Vector, fedavg
from fltorrent.aggregate.partial import partial_aggregate
from fltorrent.aggregate.preagg import (
    PREAGGREGATORS,
    bucketing,
    check_preaggregator,
    clip,
    nnm,
)
from fltorrent.aggregate.robust import (
    RULES,
    Matrix,
    bulyan,
    centered_clip,
    check_rule,
    geometric_median,
    krum,
    mean,
    median,
    multi_krum,
    trimmed_mean,
)

__all__ = [
    "PREAGGREGATORS",
    "RULES",
    "Matrix",
    "Vector",
    "bucketing",
    "bulyan",
    "centered_clip",
    "check_preaggregator",
    "check_rule",
    "clip",
    "fedavg",
    "geometric_median",
    "krum",
    "mean",
    "median",
    "multi_krum",
    "nnm",
    "partial_aggregate",
    "trimmed_mean",
]
