"""A member cannot make the mean its own update: not by a claimed sample count, not by size."""

from __future__ import annotations

import numpy as np

from fltorrent.plans.base import NORM_CAP, SAMPLE_CAP, bounded_norms, capped_samples


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


def _updates(
    sizes: dict[int, float], dim: int = 8
) -> dict[int, tuple[float, dict[int, np.ndarray]]]:
    """Author -> (weight, {chunk: base + a delta of RMS ``size``}), two chunks, base zero."""
    return {a: (10.0, {0: np.full(dim, s), 1: np.full(dim, -s)}) for a, s in sizes.items()}


BASE = [np.zeros(8), np.zeros(8)]
MASK = [np.ones(8, dtype=bool), np.ones(8, dtype=bool)]


def test_a_huge_update_is_scaled_to_the_bound_and_honest_ones_are_untouched() -> None:
    decoded = _updates({2: 1.0, 3: 1.2, 4: 0.9, 5: 1e12})
    out = bounded_norms(1, BASE, decoded, [np.full(8, 1.1), np.full(8, -1.1)], MASK)
    median = float(np.median([1.0, 1.2, 0.9, 1e12, 1.1]))
    limit = max(NORM_CAP, 5 / 3) * median
    for c in (0, 1):
        np.testing.assert_allclose(np.abs(out[5][1][c]), limit)
        for a in (2, 3, 4):
            assert out[a][1][c] is decoded[a][1][c]
    assert out[5][0] == decoded[5][0]  # the weight is the sample cap's business
    # The mean of the deltas now stays within a few honest sizes of them, not 1e12 away.
    assert float(np.mean([out[a][1][0][0] for a in out])) < 2 * NORM_CAP


def test_the_bound_grows_with_the_round_and_needs_three_updates() -> None:
    # 30 updates: an honest spread of 6x the median is under the bound of 30 / 3 = 10x.
    sizes = {a: 1.0 for a in range(2, 31)} | {31: 6.0}
    decoded = _updates(sizes)
    assert bounded_norms(1, BASE, decoded, None, MASK) is decoded
    two = _updates({2: 1.0, 3: 1e12})
    assert bounded_norms(1, BASE, two, None, MASK) is two


def test_only_judged_coordinates_measure_an_update() -> None:
    # A step counter that differs a lot honestly (masked out) does not make an update "huge".
    decoded = _updates({2: 1.0, 3: 1.0, 4: 1.0})
    mask = [np.array([True] * 7 + [False]), np.ones(8, dtype=bool)]
    counter = dict(decoded[4][1])
    counter[0] = counter[0].copy()
    counter[0][7] = 1e9
    decoded[4] = (10.0, counter)
    assert bounded_norms(1, BASE, decoded, None, mask) is decoded
