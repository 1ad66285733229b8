"""Who takes part in which round, as one peer knows it: the bookkeeping the tracker's events and
the swarm's findings feed, and every round plan reads.

* *departed*: the tracker reported the member's control connection gone;
* *sitting out*: the member publishes nothing in a round (its device policy said no);
* *rejoined*: a departed member is back, expected again from the round it rejoined at;
* *equivocated*: the member published two different blobs for one (round, topic): both are
  ignored and it is not waited for in that round;
* *not selected*: participant selection (``fltorrent.selection``) left it out of the round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fltorrent.net.base import Address


class Membership:
    """One peer's view of the federation's members, round by round (and where they listen)."""

    def __init__(
        self, me: int, members: Iterable[int], addresses: Mapping[int, Address] | None = None
    ) -> None:
        self.me = me
        self.members = set(members)
        self.addresses: dict[int, Address] = dict(addresses or {})
        self.departed: set[int] = set()
        self.skipped: dict[int, set[int]] = {}  # round -> members sitting it out
        self.back_from: dict[int, int] = {}  # rejoined member -> first round it takes part in
        self.equivocated: dict[int, set[int]] = {}  # round -> authors caught equivocating
        self.selected: dict[int, frozenset[int]] = {}  # round -> who trains (absent: everyone)

    def _other(self, peer_id: int) -> bool:
        return peer_id in self.members and peer_id != self.me

    def left(self, peer_id: int) -> bool:
        """The member's control connection is gone; returns whether that changed anything."""
        if not self._other(peer_id):
            return False
        self.departed.add(peer_id)
        return True

    def joined(self, peer_id: int, first_round: int, address: Address | None = None) -> bool:
        """The member is back, taking part from ``first_round`` on (listening at ``address``)."""
        if not self._other(peer_id):
            return False
        if address is not None:
            self.addresses[peer_id] = address
        self.departed.discard(peer_id)
        self.back_from[peer_id] = first_round
        return True

    def sits_out(self, peer_id: int, round_: int) -> bool:
        """The member publishes no update in ``round_``."""
        if not self._other(peer_id):
            return False
        self.skipped.setdefault(round_, set()).add(peer_id)
        return True

    def sat_out_myself(self, round_: int) -> None:
        """This peer publishes no update in ``round_`` (its device said no)."""
        self.skipped.setdefault(round_, set()).add(self.me)

    def select(self, round_: int, selected: frozenset[int]) -> None:
        """Only ``selected`` publish in ``round_`` (older selections are forgotten)."""
        self.selected[round_] = selected
        for r in [r for r in self.selected if r < round_ - 1]:
            del self.selected[r]

    def caught(self, round_: int) -> set[int]:
        """Authors caught equivocating in ``round_`` (the set is live: add to it)."""
        return self.equivocated.setdefault(round_, set())

    def absent(self, round_: int) -> set[int]:
        """Members not expected to publish in ``round_``."""
        returning = {p for p, first in self.back_from.items() if round_ < first}
        gone = self.departed | self.skipped.get(round_, set()) | returning
        chosen = self.selected.get(round_)
        if chosen is not None:
            gone = gone | (self.members - chosen)
        return gone | self.equivocated.get(round_, set())

    def expected(self, round_: int, present: Iterable[int] = ()) -> set[int]:
        """The other members whose update we expect in ``round_``, plus authors whose blob we
        already see (``present``)."""
        return (self.members - self.absent(round_) - {self.me}) | set(present)

    def away(self, peer_id: int, round_: int) -> bool:
        """Departed, or not back yet in ``round_``: wait for it only while its blob is
        obtainable."""
        return peer_id in self.departed or round_ < self.back_from.get(peer_id, 0)

    def live(self) -> list[int]:
        """Members not departed (this peer included), in id order."""
        return sorted(self.members - self.departed)
