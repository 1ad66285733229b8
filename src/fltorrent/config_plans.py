"""Config sections for round plans: ``exchange`` (who sends what to whom) and ``selection``
(who trains each round).

Part of the configuration tree of :mod:`fltorrent.config` (kept apart for size, as
``config_robust``); the same rules hold: every key has a default, and a bad value is refused with
its key path before anything starts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fltorrent.config_types import PositiveInt, Section
from fltorrent.errors import ConfigError


class ExchangeConfig(Section):
    """Who sends what to whom each round (the round plan, ``fltorrent.plans``)."""

    plan: Literal["all_to_all", "neighbours", "reduce_scatter"] = Field(
        "all_to_all",
        description="'all_to_all': every peer aggregates every update; 'neighbours': every "
        "peer averages with its overlay neighbours only (Metropolis-Hastings weights); "
        "'reduce_scatter': chunk owners aggregate, every peer gathers the aggregated chunks",
    )
    owners: int = Field(
        2, ge=1, le=16, description="reduce_scatter: owners per chunk (checked against each other)"
    )


class SelectionConfig(Section):
    """Which members train and publish each round (``fltorrent.selection``)."""

    max_participants: PositiveInt | None = Field(
        None, description="members that train per round (null: every member)"
    )
    min_participants: PositiveInt = Field(
        1,
        description="updates (own included) a round needs before its soft deadline may end it",
    )
    overcommit: float = Field(
        0.0,
        ge=0.0,
        le=4.0,
        description="select this share more than max_participants; all_to_all then aggregates "
        "the first max_participants updates to arrive",
    )
    window: PositiveInt = Field(5, description="rounds of sitting out that lower availability")

    def check(self, peers: int) -> None:
        """Refuse participant counts the federation of ``peers`` cannot meet."""
        most = self.max_participants
        if most is not None and most > peers:
            raise ConfigError(
                f"{most} participants of {peers} members", path="selection.max_participants"
            )
        if most is not None and self.min_participants > most:
            raise ConfigError(
                "min_participants exceeds max_participants", path="selection.min_participants"
            )
        if self.min_participants > peers:
            raise ConfigError(
                f"{self.min_participants} participants of {peers} members",
                path="selection.min_participants",
            )
