"""Failure schedules: seeded, rejoin respected, no overlapping outages, never everyone down."""

from __future__ import annotations

import itertools

import pytest

from fltorrent.devices import (
    FailureParams,
    crash_share_schedule,
    down_at,
    failure_schedule,
    is_down,
)
from fltorrent.errors import ConfigError

PEERS = list(range(1, 21))


def check_outages(schedule: dict[int, list[tuple[int, int | None]]], rejoin: int | None) -> None:
    for outages in schedule.values():
        for (_c1, r1), (c2, _) in itertools.pairwise(outages):
            assert r1 is not None and c2 >= r1  # the next crash only after the rejoin
        for crash, back in outages:
            assert back == (None if rejoin is None else crash + rejoin)


def test_deterministic_per_seed() -> None:
    params = FailureParams(crash_rate=0.2, rejoin_after=3)
    a = failure_schedule(params, PEERS, 30, seed=5)
    assert failure_schedule(params, PEERS, 30, seed=5) == a
    assert failure_schedule(params, PEERS, 30, seed=6) != a
    assert sorted(a) == PEERS
    assert sum(len(o) for o in a.values()) > 0
    check_outages(a, 3)


def test_rejoin_none_means_at_most_one_outage() -> None:
    s = failure_schedule(FailureParams(crash_rate=0.1, rejoin_after=None), PEERS, 40, seed=1)
    assert all(len(o) <= 1 for o in s.values())
    check_outages(s, None)
    for peer, outages in s.items():
        if outages:
            assert is_down(outages, 40) and not is_down(outages, outages[0][0] - 1), peer


@pytest.mark.parametrize("rejoin", [None, 1, 4])
def test_never_everyone_down(rejoin: int | None) -> None:
    s = failure_schedule(FailureParams(crash_rate=1.0, rejoin_after=rejoin), [1, 2, 3, 4, 5], 12, 0)
    check_outages(s, rejoin)
    for rnd in range(1, 13):
        assert len(down_at(s, rnd)) <= 4
    assert len(down_at(s, 1)) == 4  # everyone draws a crash; the last peer is spared
    if rejoin is None:
        assert sum(len(o) for o in s.values()) == 4


def test_explicit_crashes_are_included() -> None:
    params = FailureParams(crash_rate=0.0, rejoin_after=2, crash_rounds={3: [2], 5: [4, 1]})
    s = failure_schedule(params, [1, 2, 3, 4], 10, seed=0)
    assert s == {1: [(5, 7)], 2: [(3, 5)], 3: [], 4: [(5, 7)]}
    assert down_at(s, 4) == {2} and down_at(s, 5) == {1, 4} and down_at(s, 7) == set()


def test_random_crashes_steer_clear_of_explicit_ones() -> None:
    params = FailureParams(crash_rate=0.5, rejoin_after=3, crash_rounds={5: [1]})
    for seed in range(20):
        s = failure_schedule(params, [1, 2, 3], 15, seed)
        assert (5, 8) in s[1]
        check_outages(s, 3)
        assert all(down_at(s, r) != {1, 2, 3} for r in range(1, 16))


@pytest.mark.parametrize(
    "crash_rounds",
    [
        {0: [1]},  # rounds start at 1
        {11: [1]},  # beyond the last round
        {2: [9]},  # unknown peer
        {2: [1], 3: [1]},  # still down (rejoin_after=2)
        {2: [1, 2, 3]},  # everyone
    ],
)
def test_bad_explicit_crashes(crash_rounds: dict[int, list[int]]) -> None:
    params = FailureParams(crash_rate=0.0, rejoin_after=2, crash_rounds=crash_rounds)
    with pytest.raises(ConfigError) as err:
        failure_schedule(params, [1, 2, 3], 10, seed=0)
    assert err.value.path == "devices.failures.crash_rounds"


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"crash_rate": 1.5, "rejoin_after": None}, "devices.failures.crash_rate"),
        ({"crash_rate": 0.1, "rejoin_after": 0}, "devices.failures.rejoin_after"),
    ],
)
def test_bad_params(kw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        FailureParams(**kw)  # type: ignore[arg-type]
    assert err.value.path == path


def test_crash_share_schedule() -> None:
    peers = list(range(1, 11))
    s = crash_share_schedule(0.3, 5, peers, seed=4, rejoin_after=2)
    crashed = {p for p, o in s.items() if o}
    assert len(crashed) == 3
    assert all(s[p] == [(5, 7)] for p in crashed)
    assert crash_share_schedule(0.3, 5, peers, seed=4, rejoin_after=2) == s
    others = [crash_share_schedule(0.3, 5, peers, seed, None) for seed in range(5, 10)]
    assert any({p for p, o in x.items() if o} != crashed for x in others)
    assert all(o in ([], [(5, None)]) for x in others for o in x.values())
    assert len(down_at(crash_share_schedule(0.25, 1, peers, 0, None), 1)) == 3  # 2.5 rounds up
    assert len(down_at(crash_share_schedule(1.0, 1, peers, 0, None), 1)) == 9  # never all
    assert down_at(crash_share_schedule(1.0, 1, [7], 0, None), 1) == set()
    with pytest.raises(ConfigError):
        crash_share_schedule(1.1, 1, peers, 0, None)
