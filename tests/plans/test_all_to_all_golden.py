"""The default plan keeps the old behaviour: every metric of every peer and round, field by field,
equals what the code recorded before the round became stages over a plan (golden_cases.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.plans.golden_cases import CASES, GOLDEN, run_case

_GOLDEN = json.loads(GOLDEN.read_text())
# Fields added to the metrics since the recording, with the value all_to_all must give them.
NEW_FIELDS = {
    "consensus_distance": None,
    "owned_chunks": 0,
    "owner_disagreements": 0,
    "fallback_chunks": 0,
    "selected": True,
    "selection": "everyone",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_all_to_all_matches_recorded_run(tmp_path: Path, name: str) -> None:
    expected = _GOLDEN[name]
    got = run_case(name, tmp_path)
    assert len(got) == len(expected)
    for old, new in zip(expected, got, strict=True):
        key = (old["round"], old["peer"])
        assert (new["round"], new["peer"]) == key
        diff = {f: (old[f], new.get(f)) for f in old if old[f] != new.get(f)}
        assert not diff, f"{name} round/peer {key}: {diff}"
        added = {f: new[f] for f in set(new) - set(old)}
        unrecorded = {f: v for f, v in NEW_FIELDS.items() if f not in old}
        assert added == unrecorded, f"{name}: fields changed {set(new) ^ set(old)}"
