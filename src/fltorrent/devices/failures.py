"""Crash/rejoin schedules, fixed before the run from a seed.

Rounds are numbered from 1 like the peers' round loop. An outage ``(crash, rejoin)`` means the
peer is down in rounds ``crash .. rejoin - 1`` and takes part again from ``rejoin`` (which may lie
beyond the last round); ``rejoin = None`` means it never comes back.

:func:`failure_schedule` combines explicit crashes (``crash_rounds``) with random ones: in every
round each peer that is up crashes with probability ``crash_rate``, the draws coming from
``default_rng([seed, round])`` (one number per peer, in sorted peer order, whatever the state).
Outages of one peer never overlap: a random crash that would run into a scheduled explicit crash
is skipped. **Never everyone:** a random crash that would leave no peer up in any round of its
outage is skipped, and explicit crashes that alone leave no peer up in some round are refused with
:class:`ConfigError`; so a federation always has a live peer (given at least one peer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fltorrent.errors import ConfigError

Outage = tuple[int, int | None]
Schedule = dict[int, list[Outage]]

_PATH = "devices.failures"


@dataclass(frozen=True)
class FailureParams:
    """``crash_rate`` per peer and round; ``rejoin_after`` rounds (None: never)."""

    crash_rate: float
    rejoin_after: int | None
    crash_rounds: Mapping[int, Sequence[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.crash_rate <= 1.0:
            raise ConfigError(
                f"must be a probability, not {self.crash_rate}", path=f"{_PATH}.crash_rate"
            )
        _check_rejoin(self.rejoin_after)


def _check_rejoin(rejoin_after: int | None) -> None:
    if rejoin_after is not None and rejoin_after < 1:
        raise ConfigError(
            f"must be >= 1 round (or null), not {rejoin_after}", path=f"{_PATH}.rejoin_after"
        )


def is_down(outages: Sequence[Outage], rnd: int) -> bool:
    """Whether a peer with these outages is down in round ``rnd``."""
    return any(c <= rnd and (r is None or rnd < r) for c, r in outages)


def down_at(schedule: Mapping[int, Sequence[Outage]], rnd: int) -> set[int]:
    """The peers that are down in round ``rnd``."""
    return {peer for peer, outages in schedule.items() if is_down(outages, rnd)}


def _overlaps(outages: Sequence[Outage], crash: int, rejoin: int | None) -> bool:
    """Whether ``[crash, rejoin)`` meets any of ``outages``."""
    end = math.inf if rejoin is None else rejoin
    return any(c < end and (r is None or crash < r) for c, r in outages)


def failure_schedule(
    params: FailureParams, peers: Sequence[int], rounds: int, seed: int
) -> dict[int, list[tuple[int, int | None]]]:
    """For each peer, its outages ``(crash_round, rejoin_round or None)`` in order."""
    ids = sorted(set(peers))
    n = len(ids)
    after = params.rejoin_after
    schedule: Schedule = {peer: [] for peer in ids}
    # down[q] = how many peers are down in round q (index 0 and rounds + 1 unused).
    down = np.zeros(rounds + 2, dtype=np.int64)

    def outage_at(rnd: int) -> Outage:
        return (rnd, None if after is None else rnd + after)

    def end_of(outage: Outage) -> int:
        return rounds + 1 if outage[1] is None else min(outage[1], rounds + 1)

    # Explicit crashes first, so that random ones can steer clear of them.
    for rnd in sorted(params.crash_rounds):
        if not 1 <= rnd <= rounds:
            raise ConfigError(f"round {rnd} is outside 1..{rounds}", path=f"{_PATH}.crash_rounds")
        for peer in params.crash_rounds[rnd]:
            if peer not in schedule:
                raise ConfigError(
                    f"unknown peer {peer} in round {rnd}", path=f"{_PATH}.crash_rounds"
                )
            outage = outage_at(rnd)
            if _overlaps(schedule[peer], *outage):
                raise ConfigError(
                    f"peer {peer} is still down in round {rnd}", path=f"{_PATH}.crash_rounds"
                )
            schedule[peer].append(outage)
            down[rnd : end_of(outage)] += 1
    if n and (full := np.flatnonzero(down >= n)).size:
        raise ConfigError(
            f"the explicit crashes leave no peer up in round {int(full[0])}",
            path=f"{_PATH}.crash_rounds",
        )
    explicit = {peer: tuple(outages) for peer, outages in schedule.items()}

    for rnd in range(1, rounds + 1):
        draws = np.random.default_rng([seed, rnd]).random(n)
        for peer, u in zip(ids, draws, strict=True):
            if u >= params.crash_rate or is_down(schedule[peer], rnd):
                continue
            outage = outage_at(rnd)
            end = end_of(outage)
            # Skip a crash that runs into a scheduled one or leaves no peer up in some round.
            if _overlaps(explicit[peer], *outage) or int(down[rnd:end].max()) + 1 >= n:
                continue
            schedule[peer].append(outage)
            down[rnd:end] += 1
    for outages in schedule.values():
        outages.sort(key=lambda o: o[0])
    return schedule


def crash_share_schedule(
    share: float, at_round: int, peers: Sequence[int], seed: int, rejoin_after: int | None
) -> dict[int, list[tuple[int, int | None]]]:
    """Crash ``round(share * n)`` peers (half up; at most ``n - 1``) at ``at_round``, by seed."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"must be in [0, 1], not {share}", path=f"{_PATH}.crash_share")
    if at_round < 1:
        raise ConfigError(f"must be >= 1, not {at_round}", path=f"{_PATH}.crash_round")
    _check_rejoin(rejoin_after)
    ids = sorted(set(peers))
    count = min(math.floor(share * len(ids) + 0.5), max(len(ids) - 1, 0))
    chosen = np.random.default_rng(seed).choice(len(ids), size=count, replace=False)
    rejoin = None if rejoin_after is None else at_round + rejoin_after
    schedule: Schedule = {peer: [] for peer in ids}
    for i in sorted(int(i) for i in chosen):
        schedule[ids[i]].append((at_round, rejoin))
    return schedule
