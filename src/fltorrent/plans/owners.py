"""Who owns which chunk in a round of ``reduce_scatter``: a pure function of the seed, the round,
the members and who has departed, so that every peer computes the same owners without talking.

The members are laid on a ring in an order drawn from the seed. The ring does not turn from round
to round: chunks with the same owners form a *group* whose owners keep the group's defence state
(trust scores, detection history) from round to round, and co-owners that saw the same updates
keep the same state, so they agree (a rotating ring would give each round's owners a different
history and make honest owners disagree). Chunk ``c`` of ``C`` sits at ring position
``c * N // C``; its owners are the first ``r``
members from there on that have not departed. With every member present each one owns about
``r * C / N`` chunks (contiguous, at most one more than any other). A departed owner's chunks
fall to the next live member on the ring and nobody else's move (the successor takes a second
share: the price of never reshuffling mid-round).

A chunk's *electorate* is the ring from its position up to its last live owner: its owners plus
the departed members passed over on the way. An aggregate a departed owner published before it
left still counts as a vote (it was computed from the same updates; a peer that finished its
last round and left is not wrong for having left).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Ownership:
    """The owners of every chunk, for one membership."""

    ring: tuple[int, ...]  # every member, in this round's order
    chunks: int
    replicas: int
    departed: frozenset[int] = frozenset()

    @classmethod
    def draw(
        cls,
        *,
        seed: int,
        members: Iterable[int],
        chunks: int,
        replicas: int,
        departed: Collection[int] = (),
    ) -> Ownership:
        """The ring over ``members`` (sorted, then shuffled by ``seed``)."""
        order = sorted(members)
        rng = np.random.default_rng([seed, 0x0F3])
        ring = tuple(order[i] for i in rng.permutation(len(order)))
        return cls(ring, chunks, replicas, frozenset(departed))

    def electorate(self, chunk: int) -> list[int]:
        """The ring from ``chunk``'s position up to its last live owner (see the docstring)."""
        return self._electorate[chunk]

    def owners(self, chunk: int) -> list[int]:
        """The live owners of ``chunk``, best ranked first (empty when every member departed)."""
        return self._owners[chunk]

    @cached_property
    def _electorate(self) -> list[list[int]]:
        n = len(self.ring)
        out = []
        for c in range(self.chunks):
            start = c * n // self.chunks
            voters: list[int] = []
            live = 0
            for k in range(n):
                p = self.ring[(start + k) % n]
                voters.append(p)
                live += p not in self.departed
                if live == self.replicas:
                    break
            out.append(voters)
        return out

    @cached_property
    def _owners(self) -> list[list[int]]:
        return [[p for p in e if p not in self.departed] for e in self._electorate]

    def owned_by(self, peer: int) -> list[int]:
        """The chunks ``peer`` owns, in order."""
        return [c for c in range(self.chunks) if peer in self._owners[c]]

    @cached_property
    def owner_set(self) -> frozenset[int]:
        """Every member that owns at least one chunk."""
        return frozenset(p for owners in self._owners for p in owners)

    def partners(self, peer: int) -> set[int]:
        """The members ``peer`` exchanges updates with directly: every owner of a chunk (to send
        it its pieces) and, when ``peer`` owns chunks, every live member (its authors)."""
        live = set(self.ring) - self.departed
        out = set(live) if peer in self.owner_set else set(self.owner_set)
        out.discard(peer)
        return out


def ranges(chunks: Iterable[int]) -> list[tuple[int, int]]:
    """Maximal runs ``[first, last)`` of consecutive chunk indices."""
    out: list[tuple[int, int]] = []
    for c in sorted(set(chunks)):
        if out and out[-1][1] == c:
            out[-1] = (out[-1][0], c + 1)
        else:
            out.append((c, c + 1))
    return out
