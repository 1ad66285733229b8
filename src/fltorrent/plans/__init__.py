"""Round plans: who sends what to whom in a round (see :mod:`fltorrent.plans.base`).

* ``all_to_all`` (default): every peer aggregates every author's update;
* ``neighbours``: every peer averages with its overlay neighbours only (gossip averaging);
* ``reduce_scatter``: chunk owners aggregate, everyone gathers the aggregated chunks.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from fltorrent.errors import ConfigError
from fltorrent.plans.all_to_all import AllToAll
from fltorrent.plans.base import RoundContext, RoundOutcome, RoundPlan
from fltorrent.plans.neighbours import Neighbours
from fltorrent.plans.reduce_scatter import ReduceScatter

PLANS = ("all_to_all", "neighbours", "reduce_scatter")


def make_plan(
    name: str,
    *,
    neighbours: Collection[int] = (),
    degrees: Mapping[int, int] | None = None,
    chunks: int = 1,
    replicas: int = 2,
    seed: int = 0,
) -> RoundPlan:
    """The plan called ``name`` for one peer: its (live) overlay neighbours, every member's
    degree in the overlay as built, the model's chunk count, owners per chunk, the seed."""
    if name == "all_to_all":
        return AllToAll()
    if name == "neighbours":
        return Neighbours(neighbours, degrees)
    if name == "reduce_scatter":
        return ReduceScatter(chunks=chunks, replicas=replicas, seed=seed, neighbours=neighbours)
    raise ConfigError(f"unknown plan {name!r}; one of {list(PLANS)}", path="exchange.plan")


__all__ = [
    "PLANS",
    "AllToAll",
    "Neighbours",
    "ReduceScatter",
    "RoundContext",
    "RoundOutcome",
    "RoundPlan",
    "make_plan",
]
