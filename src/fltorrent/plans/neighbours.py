"""``neighbours``: decentralized (gossip) averaging over the overlay.

Each peer wants the updates of its overlay neighbours only, so it downloads degree x M per round
instead of (N-1) x M, and mixes them with Metropolis-Hastings weights (Xiao & Boyd, "Fast
linear iterations for distributed averaging", 2004; the weights of D-PSGD):

    w_ij = 1 / (1 + max(d_i, d_j))  for a neighbour j,      w_ii = 1 - sum_j w_ij

The matrix is symmetric and doubly stochastic, so repeated mixing drives every model to the
plain average of all models, whatever the degrees. ``d`` is a member's degree in the overlay as
the tracker built it (the welcome carries every member's); a peer's own degree counts its
current neighbours if the overlay was repaired to give it more. A neighbour whose update did not
arrive leaves its weight with the peer's own model, and a peer that sat the round out still mixes
its current model. With a robust rule the defence's rule runs over the neighbours' updates
instead (mixing weights only weight the mean).

Completion and deadlines are as in ``all_to_all``, over the neighbours. Each round records
``consensus_distance``: the root-mean-square distance of the models this peer mixed from their
mean (how far apart its neighbourhood still is).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from fltorrent.learn.update_codec import Decoded
from fltorrent.membership import Membership
from fltorrent.plans.all_to_all import AllToAll
from fltorrent.plans.base import RoundContext


def metropolis_weights(
    me: int, neighbours: Collection[int], degrees: Mapping[int, int]
) -> dict[int, float]:
    """Metropolis-Hastings weights of ``me`` (itself included) over ``neighbours``."""
    own = max(degrees.get(me, 0), len(neighbours))
    weights = {j: 1.0 / (1 + max(own, degrees.get(j, own))) for j in neighbours if j != me}
    weights[me] = 1.0 - sum(weights.values())
    return weights


class Neighbours(AllToAll):
    """See the module docstring."""

    name = "neighbours"

    def __init__(
        self, neighbours: Collection[int] = (), degrees: Mapping[int, int] | None = None
    ) -> None:
        super().__init__()
        self.neighbours = neighbours  # live: the overlay may be repaired during the run
        self.degrees = dict(degrees or {})

    def authors(self, membership: Membership) -> set[int] | None:
        return set(self.neighbours)

    def admits(self, membership: Membership, author: int) -> bool:
        return author in self.neighbours

    def weights(self, ctx: RoundContext, authors: set[int]) -> dict[int, float] | None:
        mh = metropolis_weights(ctx.me, self.neighbours, self.degrees)
        weights = {a: mh[a] for a in authors if a in mh}
        # A neighbour that sent nothing leaves its weight with this peer's own model.
        weights[ctx.me] = 1.0 - sum(weights.values())
        return weights

    def consensus_distance(self, ctx: RoundContext, decoded: Decoded) -> float | None:
        models = [np.concatenate([np.asarray(v, dtype=np.float64) for v in ctx.own])]
        for _, vectors in decoded.values():
            if len(vectors) == len(ctx.own):  # complete updates only: comparable
                models.append(np.concatenate([vectors[c] for c in range(len(ctx.own))]))
        if len(models) < 2:
            return 0.0
        stack = np.stack(models)
        spread = stack - stack.mean(axis=0)
        return float(np.sqrt((spread**2).sum(axis=1).mean()))
