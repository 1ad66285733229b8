"""Outlier flags and trust scores: hand-computed fences, statistics, attacks, trust sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fltorrent.aggregate import (
    TrustRecord,
    TrustTable,
    UpdateMomentum,
    detection_rates,
    flag_authors,
    flag_chunk,
    flagged,
    iqr_outliers,
    sign_agreement,
    update_statistics,
)
from fltorrent.errors import AggregationError


def honest_rows(rng: np.random.Generator, n: int, d: int, spread: bool = False) -> np.ndarray:
    """``n`` rows = a common unit vector + noise of comparable norm (scaled 0.5..1.5 per row
    when ``spread``, a non-IID-like spread)."""
    common = rng.normal(size=d)
    common /= np.linalg.norm(common)
    scale = rng.uniform(0.5, 1.5, size=(n, 1)) if spread else np.ones((n, 1))
    rows: np.ndarray = common + scale * rng.normal(size=(n, d)) / np.sqrt(d)
    return rows


# ---------------------------------------------------------------------------------------------
# iqr_outliers


def test_iqr_high_outlier_hand_computed() -> None:
    # Q1 = 3.25, Q3 = 7.75 (linear interpolation), IQR = 4.5, fences -3.5 and 14.5.
    v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]
    assert np.flatnonzero(iqr_outliers(v)).tolist() == [9]
    assert np.flatnonzero(iqr_outliers(v, side="high")).tolist() == [9]
    assert not iqr_outliers(v, side="low").any()


def test_iqr_low_outlier_hand_computed() -> None:
    # Sorted -20, 1..9: Q1 = 2.25, Q3 = 6.75, IQR = 4.5, low fence -4.5.
    v = [5, -20, 1, 2, 3, 4, 6, 7, 8, 9]
    assert np.flatnonzero(iqr_outliers(v)).tolist() == [1]
    assert np.flatnonzero(iqr_outliers(v, side="low")).tolist() == [1]
    assert not iqr_outliers(v, side="high").any()


def test_iqr_fences_are_strict() -> None:
    # [0, 1, 2, 3, x]: Q1 = 1, Q3 = 3, IQR = 2, upper fence 6.
    assert not iqr_outliers([0, 1, 2, 3, 6]).any()
    assert iqr_outliers([0, 1, 2, 3, 6.001]).tolist() == [False] * 4 + [True]
    # [x, 1, 2, 3, 4]: Q1 = 1, Q3 = 3, lower fence -2.
    assert not iqr_outliers([-2, 1, 2, 3, 4]).any()
    assert iqr_outliers([-2.001, 1, 2, 3, 4]).tolist() == [True] + [False] * 4
    # k scales the fences: with k = 0 anything outside [Q1, Q3] is flagged.
    assert iqr_outliers([0, 1, 2, 3, 4], k=0).tolist() == [True, False, False, False, True]
    assert not iqr_outliers([0, 1, 2, 3, 100], k=100).any()


def test_iqr_small_n_flags_nothing() -> None:
    assert not iqr_outliers([]).any()
    assert not iqr_outliers([1.0]).any()
    assert not iqr_outliers([1.0, 1e9]).any()
    assert not iqr_outliers([1.0, 1.0, 1e9], k=0).any()
    # Four values are enough: Q1 = 0, Q3 = 0.25, upper fence 0.625.
    assert iqr_outliers([0.0, 0.0, 0.0, 1.0]).tolist() == [False, False, False, True]


def test_iqr_non_finite_flagged() -> None:
    v = [1, 2, np.nan, 3, 4, np.inf, 5, -np.inf, 6, 7]
    assert np.flatnonzero(iqr_outliers(v)).tolist() == [2, 5, 7]
    assert np.flatnonzero(iqr_outliers(v, side="low")).tolist() == [2, 5, 7]
    # Fences come from the finite values only; non-finite values count even when n < 4.
    assert iqr_outliers([1.0, np.nan, 1000.0]).tolist() == [False, True, False]


def test_iqr_degenerate_spread() -> None:
    assert not iqr_outliers([2.0] * 6).any()
    assert iqr_outliers([2.0, 2.0, 2.0, 2.0, 2.0, 2.1]).tolist() == [False] * 5 + [True]


def test_iqr_min_spread_floors_the_iqr() -> None:
    # Q1 = Q3 = 1: any value below 1 is flagged, unless the IQR is floored at 0.1 (fence 0.85).
    v = [1.0] * 7 + [0.9, 0.8]
    assert iqr_outliers(v, side="low").tolist() == [False] * 7 + [True, True]
    assert iqr_outliers(v, side="low", min_spread=0.1).tolist() == [False] * 8 + [True]
    # A floor below the actual IQR changes nothing.
    w = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]
    assert iqr_outliers(w, min_spread=1.0).tolist() == iqr_outliers(w).tolist()
    with pytest.raises(AggregationError, match="min_spread"):
        iqr_outliers(w, min_spread=-1.0)


def test_iqr_validation() -> None:
    with pytest.raises(AggregationError, match="1-D"):
        iqr_outliers([[1.0, 2.0]])
    with pytest.raises(AggregationError, match="k >= 0"):
        iqr_outliers([1.0], k=-1)
    with pytest.raises(AggregationError, match="k >= 0"):
        iqr_outliers([1.0], k=math.nan)
    with pytest.raises(AggregationError, match="side"):
        iqr_outliers([1.0], side="up")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# update_statistics


def test_statistics_hand_examples() -> None:
    norms, cos = update_statistics([[3, 4], [3, 4], [-3, -4]])
    assert norms.tolist() == [5.0, 5.0, 5.0]
    assert cos == pytest.approx([1.0, 1.0, -1.0])

    # Median (1, 0); the zero row has cosine 0.
    norms, cos = update_statistics([[1, 0], [2, 0], [0, 0]])
    assert norms.tolist() == [1.0, 2.0, 0.0]
    assert cos.tolist() == [1.0, 1.0, 0.0]

    # Median of [3, 1, 0, 0] and [4, 0, 2, 0] is (0.5, 1).
    norms, cos = update_statistics([[3, 4], [1, 0], [0, 2], [0, 0]])
    m = math.sqrt(1.25)
    assert norms == pytest.approx([5.0, 1.0, 2.0, 0.0])
    assert cos == pytest.approx([5.5 / (5 * m), 0.5 / m, 2 / (2 * m), 0.0])


def test_statistics_zero_median() -> None:
    norms, cos = update_statistics([[1, 0], [-1, 0], [0, 0]])
    assert norms.tolist() == [1.0, 1.0, 0.0]
    assert cos.tolist() == [0.0, 0.0, 0.0]


def test_statistics_non_finite_row() -> None:
    norms, cos = update_statistics(
        [[1.0, 0.0], [np.nan, 0.0], [2.0, 0.0], [1.0, 1.0], [np.inf, 0.0]]
    )
    # The median of the finite rows is (1, 0).
    assert norms[[0, 2, 3]] == pytest.approx([1.0, 2.0, math.sqrt(2)])
    assert math.isnan(norms[1])
    assert norms[4] == math.inf
    assert cos[[0, 2, 3]] == pytest.approx([1.0, 1.0, 1 / math.sqrt(2)])
    assert np.isnan(cos[[1, 4]]).all()


def test_statistics_validation() -> None:
    with pytest.raises(AggregationError, match="update_statistics"):
        update_statistics([1.0, 2.0])
    with pytest.raises(AggregationError, match="update_statistics"):
        update_statistics(np.zeros((0, 3)))


# ---------------------------------------------------------------------------------------------
# flag_chunk


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("attack", ["scaled", "flipped", "zero", "all"])
def test_flag_chunk_catches_crude_attacks(seed: int, attack: str) -> None:
    rng = np.random.default_rng(seed)
    x = honest_rows(rng, 19, 200, spread=True)
    attackers = {"scaled": [16], "flipped": [17], "zero": [18], "all": [16, 17, 18]}[attack]
    if 16 in attackers:
        x[16] = 10 * x[16]
    if 17 in attackers:
        x[17] = -x[17]
    if 18 in attackers:
        x[18] = 0.0
    rows = x if attack == "all" else np.vstack([x[:16], x[attackers]])
    mask = flag_chunk(rows)
    n_honest = 16
    assert mask[n_honest:].all()
    assert mask[:n_honest].sum() <= 1


def test_sign_agreement_hand_computed() -> None:
    # Coordinate medians: col 0 of [1, 1, -1, 0] is 0.5 (+), col 1 of [2, -1, -3, 0] is -0.5 (-).
    x = [[1, 2], [1, -1], [-1, -3], [0, 0]]
    assert sign_agreement(x).tolist() == [0.5, 1.0, 0.5, 0.0]
    # A non-finite row gets NaN and is left out of the median.
    got = sign_agreement(np.array([[1, 2], [1, -1], [np.nan, 5], [-1, -3], [0, 0]]))
    assert np.isnan(got[2])
    assert np.delete(got, 2).tolist() == [0.5, 1.0, 0.5, 0.0]
    with pytest.raises(AggregationError, match="sign_agreement"):
        sign_agreement([1.0, 2.0])


def drift_and_spikes(rng: np.random.Generator, n: int = 20, d: int = 2000) -> np.ndarray:
    """Rows like late-training non-IID updates: a small drift shared by every coordinate, and
    each row's own few large coordinates, which dominate norms and cosines."""
    x = 0.02 + 0.02 * rng.normal(size=(n, d))
    for row in x:
        idx = rng.choice(d, 20, replace=False)
        row[idx] += rng.normal(size=20) * rng.uniform(0.5, 3.0)
    return x


def test_flag_chunk_sign_fence_catches_flips_the_cosine_misses() -> None:
    missed_by_cosine = 0
    for seed in range(20):
        x = drift_and_spikes(np.random.default_rng(seed))
        x[16:] = -x[16:]
        mask = flag_chunk(x)
        assert mask[16:].all(), seed
        assert mask[:16].sum() <= 1, seed
        norms, cos = update_statistics(x)
        by_cosine = iqr_outliers(norms, side="both") | iqr_outliers(cos, side="low")
        missed_by_cosine += int((~by_cosine[16:]).sum())
    # Without the sign fence a good share of the flips pass (about a third in this model).
    assert missed_by_cosine >= 10


def test_flag_chunk_sign_ties_do_not_flag_honest_rows() -> None:
    # Every honest coordinate is positive: sign agreements are 1.0 but for a rare negative
    # coordinate, which must not fence the row off (the IQR of the shares is 0).
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(16, 200))
    before = flag_chunk(x)
    x[3, 7] = x[9, 100] = -0.1
    assert (sign_agreement(x) == 1.0).sum() == 14
    assert flag_chunk(x).tolist() == before.tolist()
    x[15] = -x[15]
    assert flag_chunk(x)[15]


def test_flag_chunk_with_averages_judges_them_and_the_round_for_bursts() -> None:
    rng = np.random.default_rng(8)
    averages = honest_rows(rng, 20, 300, spread=True)
    deltas = honest_rows(rng, 20, 300, spread=True)
    deltas[19] += rng.normal(0.0, 0.5, 300)  # noise: the round's norm is ~9x the others'
    averages[18] = -averages[18]  # a flipper, seen in its average
    both = flag_chunk(deltas, averages=averages)
    assert both[18] and both[19]
    assert both[:18].sum() <= 1
    # burst_k = 0: the round's deltas are not looked at; the noise averaged out.
    assert flag_chunk(deltas, averages=averages, burst_k=0).tolist()[18:] == [True, False]
    # Without averages the deltas are judged by every fence (the flipper is not in them).
    assert flag_chunk(deltas)[19] and not flag_chunk(deltas)[18]
    with pytest.raises(AggregationError, match="averages"):
        flag_chunk(deltas, averages=averages[:5])
    with pytest.raises(AggregationError, match="burst_k"):
        flag_chunk(deltas, averages=averages, burst_k=-1.0)


def test_flag_authors_needs_averages_of_the_same_authors() -> None:
    rows = {0: [(a, spread_row(a)) for a in range(1, 7)]}
    same = {0: [(a, spread_row(a)) for a in range(1, 7)]}
    assert flag_authors(rows, averages=same) == flag_authors(rows)
    with pytest.raises(AggregationError, match="other authors"):
        flag_authors(rows, averages={0: [(a, spread_row(a)) for a in range(1, 6)]})


def test_flag_chunk_false_positives_low_on_honest_rows() -> None:
    seeds, n = 50, 20
    total = 0
    for seed in range(seeds):
        x = honest_rows(np.random.default_rng(1000 + seed), n, 500)
        total += int(flag_chunk(x).sum())
    assert total / (seeds * n) <= 0.05


def test_flag_chunk_small_chunks_and_nan() -> None:
    assert not flag_chunk([[1.0, 0.0], [100.0, 0.0], [-1.0, 0.0]]).any()
    assert flag_chunk([[1.0, 0.0], [np.nan, 0.0], [1.0, 0.0]]).tolist() == [False, True, False]
    # Identical rows (e.g. an untouched chunk of zeros) flag nobody.
    assert not flag_chunk(np.zeros((8, 5))).any()
    assert not flag_chunk(np.ones((8, 5))).any()


# ---------------------------------------------------------------------------------------------
# flag_authors and flagged


def spread_row(author: int, d: int = 16) -> np.ndarray:
    """An honest-looking deterministic row: ``e0 + b·e_author`` with ``b`` in 0.5..1.5, so norms
    and cosines to the median (``e0``) are evenly spread and no Tukey fence is crossed."""
    v = np.zeros(d)
    v[0] = 1.0
    v[author] = np.linspace(0.5, 1.5, 12)[author - 1]
    return v


def test_flag_authors_partial_deliveries() -> None:
    per_chunk: dict[int, list[tuple[int, np.ndarray]]] = {
        # 9 scales chunk 0 and sends an honest chunk 1; 11 sends zeros in chunk 0 only.
        0: [(a, spread_row(a)) for a in range(1, 7)]
        + [(9, 10 * spread_row(9)), (11, np.zeros(16))],
        1: [(a, spread_row(a)) for a in (1, 2, 3, 4, 5, 9, 11)],
        # Three contributors: skipped, so 8 (who delivered nothing else) is never judged.
        2: [(8, -spread_row(8)), (1, spread_row(1)), (2, spread_row(2))],
        # 10 flips its only chunk.
        3: [(10, -spread_row(10))] + [(a, spread_row(a)) for a in (1, 2, 3, 4, 5, 6, 11)],
    }
    shares = flag_authors(per_chunk)
    assert list(shares) == [1, 2, 3, 4, 5, 6, 9, 10, 11]
    assert shares == pytest.approx(
        {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.0, 9: 0.5, 10: 1.0, 11: 1 / 3}
    )
    assert flagged(shares) == {9, 10}
    assert flagged(shares, min_share=0.75) == {10}
    assert flagged(shares, min_share=0.3) == {9, 10, 11}
    # The order of pairs within a chunk does not matter.
    reversed_chunks = {c: list(reversed(p)) for c, p in per_chunk.items()}
    assert flag_authors(reversed_chunks) == shares
    # Each judged chunk agrees with flag_chunk on the rows sorted by author.
    rows = np.stack([v for _, v in sorted(per_chunk[0], key=lambda p: p[0])])
    assert flag_chunk(rows).tolist() == [False] * 6 + [True, True]


def test_flag_authors_empty_and_errors() -> None:
    assert flag_authors({}) == {}
    assert flag_authors({0: [(1, [1.0]), (2, [2.0])]}) == {}
    with pytest.raises(AggregationError, match="author twice"):
        flag_authors({0: [(1, [1.0]), (1, [2.0])]})
    with pytest.raises(AggregationError, match="different lengths"):
        flag_authors({0: [(1, [1.0]), (2, [2.0]), (3, [3.0]), (4, [4.0, 0.0])]})


def test_flagged_rules() -> None:
    assert flagged({1: 0.5, 2: 0.49, 3: math.nan, 4: 1.0}) == {1, 4}
    assert flagged({}) == set()
    for bad in (0, -0.1, 1.5, math.nan):
        with pytest.raises(AggregationError, match="min_share"):
            flagged({1: 1.0}, min_share=bad)


# ---------------------------------------------------------------------------------------------
# TrustTable


def test_trust_defaults_two_flags_exclude_three_clean_rounds_readmit() -> None:
    t = TrustTable()
    t.update(1, {1, 2}, {1})
    assert t.scores() == pytest.approx({1: 0.5, 2: 1.0})
    assert t.excluded() == set()  # one (possibly false) flag costs nothing yet
    t.update(2, {1, 2}, {1})
    assert t.score(1) == pytest.approx(0.25)
    assert t.excluded() == {1} and t.is_excluded(1)
    for r, score in ((3, 0.35), (4, 0.45)):
        t.update(r, {1, 2}, set())
        assert t.score(1) == pytest.approx(score)
        assert t.excluded() == {1}  # behaving for a round or two is not enough
    t.update(5, {1, 2}, set())
    assert t.score(1) == pytest.approx(0.55)
    assert t.excluded() == set()
    t.update(6, {1, 2}, {1})  # flagged again: out at once
    assert t.score(1) == pytest.approx(0.275)
    assert t.excluded() == {1}


def test_trust_an_honest_peers_rare_false_flag_is_forgotten() -> None:
    t = TrustTable()
    flags = [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]  # one false flag every six rounds
    for r, f in enumerate(flags):
        t.update(r, {7}, {7} if f else set())
        assert t.excluded() == set()


def test_trust_unseen_authors_keep_scores_and_history() -> None:
    t = TrustTable(decay=0.5, threshold=0.3, initial=0.6, recovery=0.3)
    assert t.score(5) == 0.6
    assert t.scores() == {}
    t.update(1, {3, 1}, {3})
    t.update(2, {1}, set())
    assert t.scores() == pytest.approx({1: 1.0, 3: 0.3})
    assert t.excluded() == set()  # 0.3 is not below 0.3
    assert [(r.round, r.author, r.flagged) for r in t.history] == [
        (1, 1, False),
        (1, 3, True),
        (2, 1, False),
    ]
    assert [r.score for r in t.history] == pytest.approx([0.9, 0.3, 1.0])
    assert all(isinstance(r, TrustRecord) for r in t.history)
    assert t.history[1].flagged is True


def test_trust_decay_zero_and_fresh_peer_below_threshold() -> None:
    t = TrustTable(decay=0.0, recovery=1.0)
    t.update(0, {1}, {1})
    assert t.scores() == {1: 0.0}
    t.update(1, {1}, set())
    assert t.scores() == {1: 1.0}
    fresh = TrustTable(initial=0.2)
    assert fresh.is_excluded(42)
    assert fresh.excluded() == set()  # only authors seen so far are listed


def test_trust_flagged_must_be_seen() -> None:
    with pytest.raises(AggregationError, match=r"flagged \[2\] were not seen"):
        TrustTable().update(0, {1}, {1, 2})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"decay": 1.0}, "decay"),
        ({"decay": -0.1}, "decay"),
        ({"decay": math.nan}, "decay"),
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.01}, "threshold"),
        ({"initial": -0.01}, "initial"),
        ({"initial": 1.5}, "initial"),
        ({"initial": "1"}, "initial"),
        ({"recovery": 0.0}, "recovery"),
        ({"recovery": 1.5}, "recovery"),
    ],
)
def test_trust_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(AggregationError, match=name):
        TrustTable(**kwargs)  # type: ignore[arg-type]


def test_trust_edge_parameters_accepted() -> None:
    t = TrustTable(decay=0.0, threshold=1.0, initial=0.0, recovery=1.0)
    assert t.is_excluded(1)
    t.update(0, {1}, set())
    assert not t.is_excluded(1)


# ---------------------------------------------------------------------------------------------
# detection_rates


def test_detection_rates_arithmetic() -> None:
    participants = {1: {1, 2, 3, 4}, 2: {1, 2, 3}, 3: {2, 5}}
    flags = {1: {1, 2}, 2: set(), 3: {5}}
    out = detection_rates(flags, {1, 5}, participants)
    # Attacker-rounds: 1@r1, 1@r2, 5@r3 = 3, flagged 2. Honest-rounds: 3 + 2 + 1 = 6, flagged 1.
    assert out == {
        "true_positive_rate": pytest.approx(2 / 3),
        "false_positive_rate": pytest.approx(1 / 6),
        "true_positives": 2,
        "false_positives": 1,
        "attacker_rounds": 3,
        "honest_rounds": 6,
    }
    # A round missing from the flags flagged nobody.
    assert detection_rates({}, {1}, participants)["true_positives"] == 0


def test_detection_rates_empty_denominators() -> None:
    out = detection_rates({1: {2}}, set(), {1: {1, 2}})
    assert out["true_positive_rate"] is None
    assert out["false_positive_rate"] == 0.5
    out = detection_rates({}, {1}, {})
    assert out["true_positive_rate"] is None
    assert out["false_positive_rate"] is None
    assert out["attacker_rounds"] == out["honest_rounds"] == 0


def test_detection_rates_flag_of_non_participant() -> None:
    with pytest.raises(AggregationError, match="non-participants"):
        detection_rates({1: {9}}, {9}, {1: {1, 2}})


def test_numpy_scalar_parameters_accepted() -> None:
    # Config values computed with numpy arrive as numpy scalars: accepted at run time, though
    # the signatures say float (np.float32 is not a float subclass, np.float64 is).
    assert iqr_outliers([0, 1, 2, 3, 100], k=np.float32(1.5))[-1]  # type: ignore[arg-type]
    assert flagged({1: 1.0}, min_share=np.float64(0.5)) == {1}
    assert TrustTable(decay=np.float32(0.5)).decay == 0.5  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# UpdateMomentum


def test_momentum_is_an_exponential_average_per_author_and_chunk() -> None:
    m = UpdateMomentum(0.75)
    np.testing.assert_array_equal(m.update(1, 0, [4.0, 0.0]), [4.0, 0.0])  # first: itself
    np.testing.assert_allclose(m.update(1, 0, [0.0, 8.0]), [3.0, 2.0])
    np.testing.assert_allclose(m.update(1, 0, [3.0, 2.0]), [3.0, 2.0])
    np.testing.assert_array_equal(m.update(2, 0, [1.0, 1.0]), [1.0, 1.0])  # another author
    np.testing.assert_array_equal(m.update(1, 1, [5.0]), [5.0])  # another chunk
    np.testing.assert_array_equal(m.update(1, 0, [7.0]), [7.0])  # new shape: starts over


def test_momentum_keeps_non_finite_deltas_out_and_zero_keeps_nothing() -> None:
    m = UpdateMomentum(0.5)
    m.update(1, 0, [2.0, 2.0])
    bad = m.update(1, 0, [np.nan, 0.0])
    assert np.isnan(bad[0])
    np.testing.assert_allclose(m.update(1, 0, [0.0, 0.0]), [1.0, 1.0])  # NaN never folded in
    none = UpdateMomentum(0.0)
    none.update(1, 0, [2.0])
    np.testing.assert_array_equal(none.update(1, 0, [5.0]), [5.0])
    for beta in (1.0, -0.1, math.nan):
        with pytest.raises(AggregationError, match="beta"):
            UpdateMomentum(beta)
