"""The blobs of one round, kept up to date from the swarm's additions instead of rescanned.

A chunk owner among a thousand peers receives a thousand updates a round, and asks after each
which authors' pieces are here and what owners voted: rescanning every blob each time made that
quadratic (at 1,000 peers, about a fifth of a simulation). :class:`RoundIndex` catches up from
the swarm's log of added blobs (:meth:`Swarm.added_since`) and rescans only after blobs were
dropped. It keeps the same rules as :func:`~fltorrent.plans.base.round_blobs`: an author with
two updates in the round is caught equivocating and both are ignored.
"""

from __future__ import annotations

from fltorrent.membership import Membership
from fltorrent.plans.base import report_equivocation
from fltorrent.swarm import UPDATE, Blob, Swarm, TopicKind


class RoundIndex:
    """Other authors' updates and everyone's aggregates (ours included) of one round."""

    def __init__(self) -> None:
        self._mark = (-1, 0)
        self._round = -1
        self._seen: set[int] = set()  # authors with an update, caught or not
        self._updates: dict[int, Blob] = {}  # author -> its only update, not caught
        self._caught_seen = 0
        self.aggregates: list[Blob] = []  # in the order the swarm added them
        self.version = 0  # changes when the aggregates or the updates do

    def sync(self, swarm: Swarm, membership: Membership, round_: int) -> None:
        """Catch up with the swarm's blobs."""
        new, self._mark = swarm.added_since(self._mark)
        if new is None or round_ != self._round:
            self._round = round_
            self._seen, self._updates, self.aggregates = set(), {}, []
            self._caught_seen = 0
            new = list(swarm.blobs.values())
            self.version += 1
        caught = membership.caught(round_)
        for blob in new:
            m = blob.manifest
            if m.round != round_:
                continue
            if m.topic.kind is TopicKind.AGGREGATE:
                self.aggregates.append(blob)
                self.version += 1
            elif m.topic == UPDATE and m.author != membership.me:
                self.version += 1
                if m.author not in self._seen:
                    self._seen.add(m.author)
                    if m.author not in caught:
                        self._updates[m.author] = blob
                    continue
                if m.author not in caught:
                    report_equivocation(membership.me, round_, m.author)
                    caught.add(m.author)
        if len(caught) != self._caught_seen:
            self._caught_seen = len(caught)
            for author in caught:
                self._updates.pop(author, None)
            self.version += 1

    def updates(self) -> dict[int, Blob]:
        """Per author, its update of the round (read-only: the index keeps it)."""
        return self._updates
