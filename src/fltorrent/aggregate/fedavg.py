"""Sample-weighted federated averaging (McMahan et al., 2017) as a pure function."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fltorrent.errors import AggregationError

Vector = npt.NDArray[np.float64]


def fedavg(updates: Sequence[tuple[npt.ArrayLike, float]]) -> Vector:
    """Weighted mean of vectors: ``sum(w_i * x_i) / sum(w_i)``, in float64.

    The sum runs in the order given, so callers that pass the same inputs in the same order
    get bit-identical results (every peer sorts contributions by author id).
    """
    if not updates:
        raise AggregationError("fedavg needs at least one update")
    total = 0.0
    acc: Vector | None = None
    for x, w in updates:
        if not np.isfinite(w) or w < 0:
            raise AggregationError(f"weights must be finite and non-negative, got {w}")
        v = np.asarray(x, dtype=np.float64)
        if acc is None:
            acc = np.zeros_like(v)
        elif v.shape != acc.shape:
            raise AggregationError(f"update of shape {v.shape} where {acc.shape} was expected")
        acc += w * v
        total += w
    assert acc is not None
    if total <= 0:
        raise AggregationError("the weights sum to zero")
    return acc / total
