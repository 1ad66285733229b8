"""Participant selection: which members train and publish in a round.

Every peer computes the same selection from public information only (no coordinator, no
extra messages): the seed, the round, the members and who has departed, each member's
*capability* (its device profile, known from the federation's configuration) and its observed
*availability* (the rounds it sat out lately, which the tracker relays to everyone). Members are
drawn without replacement with probability proportional to ``capability x availability``
(Efraimidis and Spirakis' weighted sampling, one random key per member), so a fast, reliable
device is picked more often but nobody is starved.

With ``overcommit`` more members than ``max_participants`` are selected; a round then uses the
first ``max_participants`` updates to arrive and goes on without the stragglers (the plan's
quorum). Trust acts where it can be judged, at aggregation: a selected author that this peer's
defence excludes does not count towards the quorum. Members that are not selected still relay
and aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from fltorrent.devices.profiles import DeviceProfile

MIN_AVAILABILITY = 0.1  # a member that always sat out keeps a small chance


def capability(profile: DeviceProfile | None) -> float:
    """How much a member can do per round, from its device: compute (CPU share) and uplink
    (Mbit/s) combined like two stages in series, so the slower one dominates. 1.0 without a
    profile."""
    if profile is None:
        return 1.0
    return 1.0 / (1.0 / profile.cpu_share + 1.0 / profile.up_mbit)


@dataclass(frozen=True)
class Selection:
    """Who takes part in one round, and why each member is in or out."""

    selected: frozenset[int]
    quorum: int | None  # updates a round needs before it may end early (None: every selected)
    reasons: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Selector:
    """Selection settings (see the module docstring); :meth:`select` is a pure function."""

    seed: int = 0
    min_participants: int = 1
    max_participants: int | None = None  # None: every live member
    overcommit: float = 0.0
    window: int = 5  # rounds of sit-outs that lower a member's availability
    capabilities: Mapping[int, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """Whether it selects anyone out at all."""
        return self.max_participants is not None

    def select(
        self,
        round_: int,
        members: Collection[int],
        departed: Collection[int],
        sat_out: Mapping[int, Collection[int]],
    ) -> Selection:
        """The selection of ``round_``. ``sat_out`` maps past rounds to the members that sat
        them out."""
        live = sorted(set(members) - set(departed))
        if self.max_participants is None or self.max_participants >= len(live):
            return Selection(frozenset(live), None, dict.fromkeys(live, "everyone"))
        k = max(self.min_participants, self.max_participants)
        wanted = min(len(live), math.ceil(k * (1.0 + self.overcommit)))
        recent = range(max(1, round_ - self.window), round_)
        weights = {}
        for p in live:
            missed = sum(1 for r in recent if p in sat_out.get(r, ()))
            available = max(MIN_AVAILABILITY, 1.0 - missed / self.window)
            weights[p] = self.capabilities.get(p, 1.0) * available
        rng = np.random.default_rng([self.seed, round_, 0x5E1])
        draws = rng.random(len(live))
        # Efraimidis-Spirakis: the largest u^(1/w) win; log form for stability.
        keys = {p: math.log(max(u, 1e-300)) / weights[p] for p, u in zip(live, draws, strict=True)}
        order = sorted(live, key=lambda p: (-keys[p], p))
        chosen = order[:wanted]
        reasons = {}
        for rank, p in enumerate(order, 1):
            inside = "selected" if rank <= wanted else "not selected"
            reasons[p] = f"{inside}: rank {rank} of {len(live)}, weight {weights[p]:.3g}"
        quorum = k if wanted > k else None
        return Selection(frozenset(chosen), quorum, reasons)
