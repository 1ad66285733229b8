"""The default plan keeps the old behaviour: every metric of every peer and round, field by field,
equals what the code recorded before the round became stages over a plan (golden_cases.py).

Re-recorded once since, on purpose, with the security work: manifests became signed (64 more
bytes per manifest sent, which also moves simulated time on shaped links: ``ring``,
``devices``), and members that publish nothing are no longer waited for until the soft
deadline (``poison``: peers that are not the poisoner's neighbours never see its update and
now go on after the silence grace, 10 s, instead of the 20 s deadline, from round 2 on). When
the silence rule changed its timers (none in a peer's first round) the exchange times of
``devices`` and ``ring`` moved again by fractions of a second (wake-ups at other moments of
virtual time), and were recorded once more. Every other field of every other case stayed as
it was. Losses are compared to a relative 1e-5: the CPU's vector
width (AVX2 or AVX-512) changes float sums in their last bits, and the recording must hold on
either.
"""

from __future__ import annotations

import json
import math
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
FLOAT_SUMS = ("loss", "train_loss")  # sums of many floats: last bits depend on the CPU


def _same(field: str, old: object, new: object) -> bool:
    if field in FLOAT_SUMS and isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-5)
    return old == new


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_all_to_all_matches_recorded_run(tmp_path: Path, name: str) -> None:
    expected = _GOLDEN[name]
    got = run_case(name, tmp_path)
    assert len(got) == len(expected)
    for old, new in zip(expected, got, strict=True):
        key = (old["round"], old["peer"])
        assert (new["round"], new["peer"]) == key
        diff = {f: (old[f], new.get(f)) for f in old if not _same(f, old[f], new.get(f))}
        assert not diff, f"{name} round/peer {key}: {diff}"
        added = {f: new[f] for f in set(new) - set(old)}
        unrecorded = {f: v for f, v in NEW_FIELDS.items() if f not in old}
        assert added == unrecorded, f"{name}: fields changed {set(new) ^ set(old)}"
