"""Round plans: who sends what to whom in a round (see :mod:`fltorrent.plans.base`).

* ``all_to_all`` (default): every peer aggregates every author's update;
* ``neighbours``: every peer averages with its overlay neighbours only (gossip averaging).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from fltorrent.errors import ConfigError
from fltorrent.plans.all_to_all import AllToAll
from fltorrent.plans.base import RoundContext, RoundOutcome, RoundPlan
from fltorrent.plans.neighbours import Neighbours

PLANS = ("all_to_all", "neighbours")


def make_plan(
    name: str,
    *,
    neighbours: Collection[int] = (),
    degrees: Mapping[int, int] | None = None,
) -> RoundPlan:
    """The plan called ``name`` for one peer, with its (live) neighbours and every member's
    degree in the overlay as built."""
    if name == "all_to_all":
        return AllToAll()
    if name == "neighbours":
        return Neighbours(neighbours, degrees)
    raise ConfigError(f"unknown plan {name!r}; one of {list(PLANS)}", path="exchange.plan")


__all__ = [
    "PLANS",
    "AllToAll",
    "Neighbours",
    "RoundContext",
    "RoundOutcome",
    "RoundPlan",
    "make_plan",
]
