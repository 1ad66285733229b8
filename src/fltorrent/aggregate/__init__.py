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
from fltorrent.aggregate.trust import (
    DetectionRates,
    TrustRecord,
    TrustTable,
    detection_rates,
    flag_authors,
    flag_chunk,
    flagged,
    iqr_outliers,
    update_statistics,
)

__all__ = [
    "PREAGGREGATORS",
    "RULES",
    "DetectionRates",
    "Matrix",
    "TrustRecord",
    "TrustTable",
    "Vector",
    "bucketing",
    "bulyan",
    "centered_clip",
    "check_preaggregator",
    "check_rule",
    "clip",
    "detection_rates",
    "fedavg",
    "flag_authors",
    "flag_chunk",
    "flagged",
    "geometric_median",
    "iqr_outliers",
    "krum",
    "mean",
    "median",
    "multi_krum",
    "nnm",
    "partial_aggregate",
    "trimmed_mean",
    "update_statistics",
]
