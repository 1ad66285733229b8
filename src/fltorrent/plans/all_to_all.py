"""``all_to_all``: every peer wants every other author's whole update (the FLTorrent way).

One phase. Updates spread through the overlay hop by hop (a peer relays what it verified), so
each peer downloads (N-1) x M per round: fine for tens of peers, worse than a server for
hundreds (``reduce_scatter`` is the bandwidth optimum). The exchange ends

* as soon as every expected author's update is complete; an author that left the federation
  (or was banned for corrupt pieces) is not waited for once nothing more of its update can be
  fetched from any neighbour; an author that published nothing, once every other author
  delivered, is waited for as long as its pace in earlier rounds says (``silence_factor``
  times it), or, if it never delivered, ``silence_factor`` times the wait so far (a registered
  member that never publishes, or a dead one whose departure the tracker cannot relay, must
  not hold every round until a deadline; see :class:`~fltorrent.plans.base.Silence`); an
  author whose update is on its way is waited for, however slow its link (its missing pieces
  may simply not have reached a neighbour yet: counting those as lost cut honest slow devices
  off);
* otherwise at the soft deadline if ``min_completion_ratio`` of the expected pieces arrived, or
  at the hard deadline in any case.

Then each chunk is aggregated over the authors whose chunk arrived (partial aggregation), through
the peer's defence; with complete delivery every peer computes centralized FedAvg.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from fltorrent.defense import DefenseReport
from fltorrent.learn.update_codec import Decoded
from fltorrent.membership import Membership
from fltorrent.phases import Phase
from fltorrent.plans.base import (
    RoundContext,
    RoundOutcome,
    RoundPlan,
    Silence,
    aggregate_flops,
    aggregate_updates,
    held_pieces,
    round_blobs,
    wait_exchange,
)
from fltorrent.swarm import UPDATE, Blob, Swarm, Topic

log = logging.getLogger(__name__)


class UpdatesFrom:
    """The swarm's want function for the updates of one round (and the next: a faster peer may
    publish it early) from the authors ``admits`` admits."""

    def __init__(self, round_: int, admits: Callable[[int], bool]) -> None:
        self.round = round_
        self.admits = admits

    def __call__(self, round_: int, author: int, topic: Topic) -> bool:
        return topic == UPDATE and self.round <= round_ <= self.round + 1 and self.admits(author)


def progress(ctx: RoundContext, blobs: dict[int, Blob], expected: set[int]) -> tuple[int, int]:
    """Pieces received from and expected of the ``expected`` authors; sets ``ctx.completion``."""
    per_blob = ctx.chunk_plan.num_chunks
    received = sum(b.num_have for a, b in blobs.items() if a in expected)
    total = len(expected) * per_blob
    ctx.completion = received / total if total else 1.0
    return received, total


class AllToAll(RoundPlan):
    """See the module docstring."""

    name = "all_to_all"

    def __init__(self) -> None:
        self._silence = Silence()  # authors' pace, kept across rounds

    _blob_cache: tuple[tuple[object, ...], dict[int, Blob]] | None = None

    def authors(self, membership: Membership) -> set[int] | None:
        """Whose updates this peer aggregates (``None``: every member's)."""
        return None

    def admits(self, membership: Membership, author: int) -> bool:
        """Whether ``author``'s update is aggregated here."""
        mine = self.authors(membership)
        return mine is None or author in mine

    def begin(self, round_: int, swarm: Swarm, membership: Membership) -> None:
        self._finished: list[int] = []  # authors in the order their update completed
        self._silent_after: float | None = None  # when authors silent so far stop counting
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._silence.begin(asyncio.get_running_loop().time())
        swarm.drop_blobs(lambda m: not self.keep(m, round_))
        swarm.forget_before(round_ - 1)
        me = membership.me
        # Asked per blob as it is announced: the overlay may gain a neighbour mid-round (repair).
        swarm.set_want(UpdatesFrom(round_, lambda a: a != me and self.admits(membership, a)))

    def _blobs(self, ctx: RoundContext) -> dict[int, Blob]:
        # The round's blobs change only when the swarm's set of blobs does: scanning them at
        # every wake-up was a tenth of a 100-peer simulation.
        mine = self.authors(ctx.membership)
        caught = len(ctx.membership.caught(ctx.round))
        key = (ctx.round, ctx.swarm.generation, caught, None if mine is None else frozenset(mine))
        cached = self._blob_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        blobs = round_blobs(ctx.swarm, ctx.membership, ctx.round)
        if mine is not None:
            blobs = {a: b for a, b in blobs.items() if a in mine}
        self._blob_cache = (key, blobs)
        return blobs

    def _expected(self, ctx: RoundContext, blobs: dict[int, Blob]) -> set[int]:
        expected = ctx.membership.expected(ctx.round, blobs)
        mine = self.authors(ctx.membership)
        return expected if mine is None else expected & mine

    def _progress(self, ctx: RoundContext) -> tuple[set[int], int, int]:
        blobs = self._blobs(ctx)
        expected = self._expected(ctx, blobs)
        received, total = progress(ctx, blobs, expected)
        return expected, received, total

    def _counted(self, ctx: RoundContext) -> list[int]:
        """Authors whose complete update counts towards the quorum, first finished first."""
        excluded = ctx.defense.excluded()
        return [a for a in self._finished if a not in excluded]

    def _participants(self, ctx: RoundContext) -> int:
        return len(self._counted(ctx)) + (ctx.own_weight is not None)

    def _complete(self, ctx: RoundContext) -> bool:
        blobs = self._blobs(ctx)
        expected = self._expected(ctx, blobs)
        progress(ctx, blobs, expected)
        swarm, members, r = ctx.swarm, ctx.membership, ctx.round
        for author, done in blobs.items():
            if done.complete and author not in self._finished:
                self._finished.append(author)
                self._silence.delivered(author, ctx.now())
        if ctx.quorum is not None and self._participants(ctx) >= ctx.quorum:
            return True  # overcommitted: the first updates to arrive are enough
        silent = []
        for author in expected:
            blob = blobs.get(author)
            if blob is not None and blob.complete:
                continue
            away = members.away(author, r) or swarm.banned(author)  # banned: it poisoned chunks
            if away and (blob is None or not swarm.obtainable(blob)):
                continue
            if blob is not None:
                return False
            silent.append(author)
        return not silent or self._silence_over(ctx, silent)

    def _silence_over(self, ctx: RoundContext, silent: list[int]) -> bool:
        """Every author that published has delivered; whether the silent ones had their time
        (:class:`~fltorrent.plans.base.Silence`)."""
        if self._participants(ctx) < ctx.min_participants:
            return False
        now = ctx.now()
        if self._silent_after is None:
            self._silent_after = self._silence.deadline(
                ctx.policy, silent, now, now - self._started
            )
            if self._silent_after < math.inf:
                self._timer = asyncio.get_running_loop().call_at(
                    self._silent_after, ctx.swarm.notify
                )
            return False
        if now < self._silent_after:
            return False
        log.info("peer %d round %d: not waiting for silent %s", ctx.me, ctx.round, silent)
        return True

    def weights(self, ctx: RoundContext, authors: set[int]) -> dict[int, float] | None:
        """Aggregation weights by author (``None``: sample counts, i.e. FedAvg)."""
        return None

    async def exchange(self, ctx: RoundContext) -> RoundOutcome:
        ctx.enter(Phase.EXCHANGING)
        t1 = self._started = ctx.now()
        try:
            deadline_hit = await wait_exchange(
                ctx,
                lambda: self._complete(ctx),
                lambda: (
                    ctx.completion >= ctx.policy.min_completion_ratio
                    and self._participants(ctx) >= ctx.min_participants
                ),
            )
        finally:
            if self._timer is not None:
                self._timer.cancel()
        exchange_s = ctx.now() - t1
        # What arrived when the exchange ended is what gets aggregated and reported (pieces
        # may keep arriving meanwhile).
        expected, received, total = self._progress(ctx)
        blobs = self._blobs(ctx)
        if ctx.quorum is not None and self._participants(ctx) >= ctx.quorum:
            first = self._counted(ctx)[: ctx.quorum - (ctx.own_weight is not None)]
            blobs = {a: blobs[a] for a in first}
        held = held_pieces(blobs)
        weights = self.weights(ctx, set(held))
        ctx.enter(Phase.AGGREGATING)

        def aggregate() -> tuple[DefenseReport, float | None]:
            vectors, report, decoded = aggregate_updates(ctx, held, weights=weights)
            ctx.load(vectors)
            return report, self.consensus_distance(ctx, decoded)

        (report, distance), aggregate_s = await ctx.compute(
            aggregate, lambda: aggregate_flops(ctx.base, len(held))
        )
        return RoundOutcome(
            report=report,
            deadline_hit=deadline_hit,
            exchange_s=exchange_s,
            aggregate_s=aggregate_s,
            authors_expected=len(expected),
            pieces_received=received,
            pieces_expected=total,
            completion=ctx.completion,
            consensus_distance=distance,
        )

    def consensus_distance(self, ctx: RoundContext, decoded: Decoded) -> float | None:
        """How far apart the models this peer saw are (``None``: not measured by this plan)."""
        return None
