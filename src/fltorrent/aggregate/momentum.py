"""Server momentum (FedAvgM, Hsu et al., 2019), applied by each peer to its own aggregate.

With a server, the server keeps a velocity over the rounds' pseudo-gradients. Here every peer
aggregates for itself, so every peer keeps one: the round's pseudo-gradient is its aggregate
minus its round-start model, ``v <- beta v + delta`` and the next model is
``start + lr v``. On a complete graph with full delivery every peer has the same aggregates
and so the same velocity: the federation follows FedAvgM exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fltorrent.errors import AggregationError

Vector = npt.NDArray[np.float64]


def server_momentum(
    base: Sequence[npt.ArrayLike],
    aggregate: Sequence[npt.ArrayLike],
    velocity: Sequence[Vector] | None,
    *,
    beta: float,
    lr: float,
    mask: Sequence[npt.NDArray[np.bool_]] | None = None,
) -> tuple[list[Vector], list[Vector]]:
    """``(next model, next velocity)`` per chunk. Coordinates outside ``mask`` (integer step
    counters, say) take the aggregate as it is. ``beta = 0, lr = 1`` give the aggregate."""
    if not 0 <= beta < 1 or not lr > 0:
        raise AggregationError(f"server momentum needs 0 <= beta < 1 and lr > 0, got {beta}, {lr}")
    if len(base) != len(aggregate) or (velocity is not None and len(velocity) != len(base)):
        raise AggregationError("base, aggregate and velocity must have as many chunks")
    model, moved = [], []
    for c, (b, a) in enumerate(zip(base, aggregate, strict=True)):
        b64, a64 = np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64)
        v = a64 - b64 if velocity is None else beta * velocity[c] + (a64 - b64)
        new = b64 + lr * v
        if mask is not None:
            new = np.where(mask[c], new, a64)
        model.append(new)
        moved.append(v)
    return model, moved
