"""Per-chunk partial aggregation.

Each chunk is averaged over the authors whose copy of that chunk arrived, with their weights
renormalized over those authors; a chunk nobody delivered keeps the peer's own value. With every
chunk from every author this is exactly :func:`fedavg` of the whole vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

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
