"""A member's claimed sample count cannot make the mean its own update."""

from __future__ import annotations

import numpy as np

from fltorrent.plans.base import SAMPLE_CAP, capped_samples


def _decoded(counts: dict[int, float]) -> dict[int, tuple[float, dict[int, np.ndarray]]]:
    return {a: (w, {0: np.full(3, float(a))}) for a, w in counts.items()}


def test_a_huge_claim_is_capped_at_ten_times_the_median() -> None:
    decoded = _decoded({2: 100.0, 3: 120.0, 4: float(2**40)})
    out = capped_samples(1, decoded, own_weight=110.0)
    median = float(np.median([100.0, 120.0, 2.0**40, 110.0]))
    assert out[4][0] == SAMPLE_CAP * median
    assert (out[2][0], out[3][0]) == (100.0, 120.0)  # honest counts untouched
    np.testing.assert_array_equal(out[4][1][0], decoded[4][1][0])  # only the weight changes
    # The weighted mean stays near the honest updates (values 1 to 3), not the attacker's 4.
    weights = np.array([110.0] + [w for w, _ in out.values()])
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert float(weights @ values / weights.sum()) < 3.95
    assert float(np.array([110.0, 100.0, 120.0, 2.0**40]) @ values / (330.0 + 2.0**40)) > 3.99


def test_skewed_honest_counts_and_small_rounds_are_left_alone() -> None:
    skewed = _decoded({2: 10.0, 3: 75.0, 4: 232.0, 5: 75.0})  # 3.1x the median
    assert capped_samples(1, skewed, own_weight=75.0) is skewed
    two = _decoded({2: 100.0, 3: float(2**40)})  # no median to judge by
    assert capped_samples(1, two, own_weight=None) is two
