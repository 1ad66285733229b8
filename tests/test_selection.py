"""Participant selection: a pure function of public information, weighted, with overcommit."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fltorrent.config import load_config
from fltorrent.devices.profiles import DEFAULT_PROFILES
from fltorrent.runtime.federation import Federation
from fltorrent.selection import Selector, capability

MEMBERS = list(range(1, 21))


def test_everyone_without_a_limit() -> None:
    sel = Selector().select(3, MEMBERS, departed={4}, sat_out={})
    assert sel.selected == frozenset(MEMBERS) - {4} and sel.quorum is None
    assert sel.reasons[1] == "everyone"


def test_same_inputs_same_selection_and_rounds_differ() -> None:
    s = Selector(seed=7, max_participants=5)
    a, b = s.select(2, MEMBERS, (), {}), s.select(2, list(reversed(MEMBERS)), (), {})
    assert a == b and len(a.selected) == 5
    assert s.select(3, MEMBERS, (), {}).selected != a.selected
    assert Selector(seed=8, max_participants=5).select(2, MEMBERS, (), {}).selected != a.selected


def test_overcommit_selects_more_and_sets_the_quorum() -> None:
    sel = Selector(max_participants=6, overcommit=0.5).select(1, MEMBERS, {1, 2}, {})
    assert len(sel.selected) == 9 and sel.quorum == 6
    assert not sel.selected & {1, 2}  # departed members are never selected
    for p, why in sel.reasons.items():
        rank = int(why.split("rank ")[1].split()[0])
        assert why.startswith("selected") == (p in sel.selected) == (rank <= 9)


def test_capable_and_available_members_are_picked_more_often() -> None:
    fast, slow = 1, 2
    caps = {p: 1.0 for p in MEMBERS} | {fast: 10.0, slow: 0.1}
    s = Selector(max_participants=4, capabilities=caps)
    picks = Counter(p for r in range(1, 401) for p in s.select(r, MEMBERS, (), {}).selected)
    assert picks[fast] > 300 and picks[slow] < 60  # uniform would be about 80 of 400
    # A member that sat out every recent round keeps only a small chance.
    absent = 3
    sat = {r: {absent} for r in range(1, 401)}
    s = Selector(max_participants=4)
    picks = Counter(p for r in range(6, 406) for p in s.select(r, MEMBERS, (), sat).selected)
    assert picks[absent] < 30 < min(picks[p] for p in MEMBERS if p != absent)


def test_capability_is_limited_by_the_slower_of_compute_and_uplink() -> None:
    iot, edge = DEFAULT_PROFILES["iot_device"], DEFAULT_PROFILES["edge_server"]
    assert capability(None) == 1.0
    assert capability(iot) < 0.1 < capability(edge)


@pytest.mark.slow
def test_an_overcommitted_round_aggregates_the_first_updates(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "federate.mode=sim",
            "data.num_samples=2000",
            "federate.client_num=12",
            "federate.total_round_num=3",
            "output.progress=none",
            "output.save_model=false",
            "selection.max_participants=6",
            "selection.overcommit=0.5",
        ],
    )
    records = Federation(config, output_dir=tmp_path).run().metrics
    for rnd in (1, 2, 3):
        rows = [r for r in records if r["round"] == rnd]
        chosen = {r["peer"] for r in rows if r["selected"]}
        assert len(chosen) == 9  # every peer computed the same selection
        assert all(r["trained"] == (r["peer"] in chosen) for r in rows)
        assert all(r["authors_aggregated"] == 6 for r in rows)  # the quorum, own included
        assert all(r["selection"].startswith("not selected") for r in rows if not r["selected"])


def test_a_peer_weighs_its_own_sit_outs_as_the_others_do() -> None:
    # The others learn of a sit-out from the tracker; the peer itself must count it too, or
    # its selection weighs itself differently from theirs.
    from fltorrent.membership import Membership

    mine, theirs = Membership(1, {1, 2, 3}), Membership(2, {1, 2, 3})
    mine.sat_out_myself(2)
    theirs.sits_out(1, 2)
    assert mine.skipped == theirs.skipped == {2: {1}}
    assert mine.expected(2) == {2, 3}  # it expects the others, as before
    s = Selector(seed=3, max_participants=2)
    a = s.select(4, mine.members, mine.departed, mine.skipped)
    b = s.select(4, theirs.members, theirs.departed, theirs.skipped)
    assert a == b and "weight 0.8" in a.reasons[1]


@pytest.mark.slow
def test_peers_that_see_the_same_members_draw_the_same_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Phones that never charge sit rounds out; every peer weighs those sit-outs, its own
    # included, so peers that see the same live members draw the same participants. (Peers
    # that already finished leave, and those still running then see fewer members: that
    # difference is not the selection's.)
    from fltorrent import selection

    drawn: dict[tuple[int, frozenset[int]], set[frozenset[int]]] = {}
    real = selection.Selector.select

    def select(self: Selector, round_: int, members: Any, departed: Any, sat_out: Any) -> Any:
        chosen = real(self, round_, members, departed, sat_out)
        drawn.setdefault((round_, frozenset(departed)), set()).add(chosen.selected)
        return chosen

    monkeypatch.setattr(selection.Selector, "select", select)
    config = load_config(
        None,
        [
            "federate.mode=sim",
            "federate.seed=2",  # a draw where a peer weighing itself apart picks differently
            "data.num_samples=900",
            "model.name=mlp",
            "federate.client_num=6",
            "federate.total_round_num=6",
            "selection.max_participants=3",
            "devices.distribution={smartphone_high: 0.5, edge_server: 0.5}",
            "devices.policy.charging_only=true",
            "output.progress=none",
            "output.save_model=false",
        ],
    )
    records = Federation(config, output_dir=tmp_path).run().metrics
    assert any(r["skip_reason"] == "not_charging" for r in records)  # sit-outs happened
    assert drawn and all(len(selections) == 1 for selections in drawn.values()), drawn
