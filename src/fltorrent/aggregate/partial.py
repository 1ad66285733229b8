"""Per-chunk partial aggregation (SPEC §1.4).

Each chunk is averaged over the authors whose copy of that chunk arrived, with their weights
renormalized over those authors; a chunk nobody delivered keeps the peer's own value. With every
chunk from every author this is exactly :func:`fedavg` of the whole vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fltorrent.aggregate.fedavg import Vector, fedavg
from fltorrent.errors import AggregationError


def partial_aggregate(
    own: Sequence[npt.ArrayLike],
    received: Sequence[Sequence[tuple[npt.ArrayLike, float]]],
) -> list[Vector]:
    """Aggregate chunk by chunk.

    ``own[c]`` is the peer's own chunk ``c``; ``received[c]`` lists ``(vector, weight)`` of every
    author whose chunk ``c`` is to be averaged, the peer itself included when it takes part.
    An empty list means nothing arrived for that chunk: the result is ``own[c]``.
    """
    if len(own) != len(received):
        raise AggregationError(f"{len(own)} own chunks but {len(received)} chunk lists")
    out: list[Vector] = []
    for mine, contributions in zip(own, received, strict=True):
        if contributions:
            out.append(fedavg(contributions))
        else:
            out.append(fedavg([(mine, 1.0)]))
    return out


NORM_CAP = 10.0
"""A contribution's update (its chunk minus the round-start chunk) is at most this many times
the median update norm of the chunk's contributors."""


def bound_norms(
    base: npt.ArrayLike,
    contributions: Sequence[tuple[npt.ArrayLike, float]],
    cap: float = NORM_CAP,
) -> list[tuple[npt.ArrayLike, float]]:
    """``contributions`` (vector, weight) of one chunk with each update's norm bounded by
    ``cap`` times the median norm: an update beyond it is scaled down onto the bound, so that
    one author's huge values cannot carry a mean (the default rule) anywhere. Needs three
    contributions and a median above zero (with fewer, or when most updates are zero, nothing
    says what is normal); the list is returned as it is when nothing is beyond the bound."""
    if len(contributions) < 3:
        return list(contributions)
    start = np.asarray(base, dtype=np.float64)
    deltas = np.stack([np.asarray(v, dtype=np.float64) - start for v, _ in contributions])
    norms = np.linalg.norm(deltas, axis=1)
    limit = cap * float(np.median(norms))
    if limit <= 0 or not np.any(norms > limit):
        return list(contributions)
    return [
        (start + deltas[i] * (limit / norms[i]), w) if norms[i] > limit else (v, w)
        for i, (v, w) in enumerate(contributions)
    ]
