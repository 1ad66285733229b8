"""Robust aggregation rules and pre-aggregation: published examples, invariants, preconditions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fltorrent.aggregate import (
    PREAGGREGATORS,
    RULES,
    bucketing,
    bulyan,
    centered_clip,
    check_preaggregator,
    check_rule,
    clip,
    geometric_median,
    krum,
    mean,
    median,
    multi_krum,
    nnm,
    trimmed_mean,
)
from fltorrent.errors import AggregationError

# The example every ByzFL docstring uses.
X = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])

Agg = Callable[[np.ndarray, int], np.ndarray]

# Every rule at its defaults, as a function of (x, f). Rules without f ignore it.
ROBUST: dict[str, Agg] = {
    "median": lambda x, f: median(x),
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "geometric_median": lambda x, f: geometric_median(x),
    "centered_clip": lambda x, f: centered_clip(x, tau=1.0),
    "bulyan": bulyan,
}
ALL: dict[str, Agg] = {"mean": lambda x, f: mean(x), **ROBUST}

# (n, f) pairs valid for every rule, Bulyan's n >= 4f + 3 included.
SIZES = [(3, 0), (7, 1), (11, 2), (16, 3)]


def data(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


# --- ByzFL's published examples ----------------------------------------------------------------


def test_byzfl_examples() -> None:
    np.testing.assert_allclose(
        geometric_median(X, nu=0.1, max_iter=3, tol=0.0, init=np.zeros(3)),
        [3.78788764, 4.78788764, 5.78788764],
        rtol=0,
        atol=5e-9,
    )
    np.testing.assert_array_equal(krum(X, 1), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(trimmed_mean(X, 1), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(multi_krum(X, 1), [2.5, 3.5, 4.5])
    np.testing.assert_array_equal(nnm(X, 1), [[2.5, 3.5, 4.5], [2.5, 3.5, 4.5], [5.5, 6.5, 7.5]])
    np.testing.assert_array_equal(mean(X), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(median(X), [4.0, 5.0, 6.0])
    # CenteredClipping() defaults: start at zero, one iteration, tau = 100.
    np.testing.assert_allclose(centered_clip(X, 100.0, center=np.zeros(3)), [4.0, 5.0, 6.0])
    # Clipping(2).
    np.testing.assert_allclose(
        clip(X, 2.0),
        [
            [0.53452248, 1.06904497, 1.60356745],
            [0.91168461, 1.13960576, 1.36752692],
            [1.00514142, 1.14873305, 1.29232469],
        ],
        atol=5e-9,
    )


def test_rules_accept_lists_of_vectors_and_return_fresh_float64() -> None:
    rows = [list(r) for r in X]
    for name, rule in ALL.items():
        out = rule(rows, 0)  # type: ignore[arg-type]
        assert out.dtype == np.float64 and out.shape == (3,), name
    src = X.copy()
    out = krum(src, 1)
    out[0] = 99.0
    np.testing.assert_array_equal(src, X)


def test_ties_go_to_the_lexicographically_smaller_update_in_any_row_order() -> None:
    # In ByzFL's example every Krum score ties and x_2 is equidistant from x_1 and x_3.
    for perm in ([0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]):
        np.testing.assert_array_equal(krum(X[perm], 1), [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(multi_krum(X[perm], 1), [2.5, 3.5, 4.5])
        np.testing.assert_array_equal(nnm(X[perm], 1), nnm(X, 1)[perm])
    # Krum with one neighbour ties for the mutually nearest pair.
    x = np.array([[5.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(krum(x, 1), [0.0, 0.0])
    np.testing.assert_array_equal(krum(x[::-1], 1), [0.0, 0.0])


# --- invariants ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "f"), SIZES)
@pytest.mark.parametrize("name", sorted(ALL))
def test_permutation_invariance(name: str, n: int, f: int) -> None:
    rule = ALL[name]
    for seed in range(3):
        x = data(n, 6, seed)
        perm = np.random.default_rng(100 + seed).permutation(n)
        np.testing.assert_allclose(rule(x[perm], f), rule(x, f), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("n", "f"), SIZES)
@pytest.mark.parametrize("name", sorted(ALL))
def test_equal_inputs_give_the_common_value(name: str, n: int, f: int) -> None:
    common = np.array([0.5, -3.0, 1e-3, 7.0])
    np.testing.assert_allclose(ALL[name](np.tile(common, (n, 1)), f), common, rtol=1e-12)


@pytest.mark.parametrize(("n", "f"), SIZES)
@pytest.mark.parametrize("name", sorted(ALL))
def test_translation_equivariance(name: str, n: int, f: int) -> None:
    # Holds for every rule at its defaults (geometric median and centered clipping start from
    # the coordinate-wise median); not for ByzFL's start at zero.
    x = data(n, 5, 7)
    t = np.array([100.0, -50.0, 3.0, 0.0, 1e3])
    np.testing.assert_allclose(ALL[name](x + t, f), ALL[name](x, f) + t, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n", "f", "d"), [(7, 1, 3), (11, 2, 5), (16, 3, 10), (20, 4, 50)])
@pytest.mark.parametrize("seed", range(3))
def test_outliers_do_not_break_robust_rules(n: int, f: int, d: int, seed: int) -> None:
    honest = data(n - f, d, seed)
    x = np.vstack([honest, np.full((f, d), 1e6)])
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    for name, rule in ROBUST.items():
        if name == "bulyan" and n < 4 * f + 3:
            continue
        out = rule(x, f)
        assert np.all(out >= lo) and np.all(out <= hi), name
    assert np.all(mean(x) > hi)


# --- individual rules ----------------------------------------------------------------------------


def test_mean_weights() -> None:
    np.testing.assert_allclose(mean(X, weights=[1, 0, 3]), (X[0] + 3 * X[2]) / 4)
    np.testing.assert_allclose(mean(X, weights=[2, 2, 2]), mean(X))


def test_median_of_an_even_count_is_the_mean_of_the_two_middle_values() -> None:
    x = np.array([[0.0, 10.0], [1.0, 20.0], [5.0, 30.0], [100.0, 40.0]])
    np.testing.assert_array_equal(median(x), [3.0, 25.0])


def test_trimmed_mean_drops_f_from_each_end_per_coordinate() -> None:
    x = np.array([[0.0, 9.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [50.0, -7.0]])
    np.testing.assert_array_equal(trimmed_mean(x, 1), [2.0, 2.0])
    np.testing.assert_allclose(trimmed_mean(x, 0), mean(x), rtol=1e-15)


def test_krum_uses_n_minus_f_minus_1_neighbours() -> None:
    # n=5, f=2: each score sums the 2 nearest others, and the middle of the triple wins. With
    # Blanchard's n - f - 2 = 1 neighbour, a member of the tight pair would.
    x = np.array([[0.0], [0.1], [10.0], [11.0], [12.0]])
    np.testing.assert_array_equal(krum(x, 2), [11.0])
    np.testing.assert_array_equal(multi_krum(x, 2, m=1), krum(x, 2))
    np.testing.assert_allclose(multi_krum(x, 2, m=3), [11.0])
    np.testing.assert_allclose(multi_krum(x, 2, m=5), mean(x))


def test_multi_krum_defaults_to_n_minus_f() -> None:
    x = data(9, 4, 3)
    np.testing.assert_allclose(multi_krum(x, 2), multi_krum(x, 2, m=7))


def test_geometric_median_converges_to_the_fermat_point() -> None:
    # For an equilateral triangle the geometric median is the centroid.
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    np.testing.assert_allclose(
        geometric_median(x, nu=1e-9, max_iter=1000, tol=1e-12), x.mean(axis=0), atol=1e-8
    )


def test_geometric_median_weights_count_like_duplicates() -> None:
    x = data(5, 3, 11)
    dup = np.vstack([x, x[:1]])
    start = np.zeros(3)
    np.testing.assert_allclose(
        geometric_median(x, weights=[2, 1, 1, 1, 1], init=start, tol=0.0, max_iter=50),
        geometric_median(dup, init=start, tol=0.0, max_iter=50),
        atol=1e-12,
    )


def test_centered_clip_with_a_large_radius_is_the_mean() -> None:
    x = data(6, 4, 5)
    np.testing.assert_allclose(centered_clip(x, tau=1e9, center=np.full(4, 3.0)), mean(x))
    # Each clipped term moves the centre by at most tau / n.
    c = np.zeros(4)
    assert np.linalg.norm(centered_clip(x * 1e3, tau=0.5, center=c) - c) <= 0.5 + 1e-12


def test_bulyan_with_no_byzantine_input_is_the_mean() -> None:
    x = data(5, 3, 2)
    np.testing.assert_allclose(bulyan(x, 0), mean(x))


# --- preconditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "call", "message"),
    [
        ("trimmed_mean", lambda: trimmed_mean(X, 2), "trimmed_mean needs n > 2f, got n=3, f=2"),
        ("krum", lambda: krum(np.ones((5, 2)), 3), "krum needs n > 2f, got n=5, f=3"),
        ("multi_krum", lambda: multi_krum(X, 2), "multi_krum needs n > 2f"),
        ("multi_krum", lambda: multi_krum(X, 1, m=4), "multi_krum needs 1 <= m <= n"),
        ("multi_krum", lambda: multi_krum(X, 1, m=0), "multi_krum needs 1 <= m <= n"),
        ("bulyan", lambda: bulyan(np.ones((6, 2)), 1), "bulyan needs n >= 4f \\+ 3, got n=6"),
        ("krum", lambda: krum(X, -1), "krum needs an integer f >= 0"),
        ("krum", lambda: krum(X, 1.0), "krum needs an integer f >= 0"),  # type: ignore[arg-type]
        ("geometric_median", lambda: geometric_median(X, nu=0.0), "needs a finite nu > 0"),
        ("geometric_median", lambda: geometric_median(X, max_iter=0), "max_iter >= 1"),
        ("geometric_median", lambda: geometric_median(X, tol=-1.0), "tol >= 0"),
        ("geometric_median", lambda: geometric_median(X, init=[0.0]), "init of shape"),
        ("centered_clip", lambda: centered_clip(X, tau=0.0), "tau > 0"),
        ("centered_clip", lambda: centered_clip(X, 1.0, iters=0), "iters >= 1"),
        ("centered_clip", lambda: centered_clip(X, 1.0, center=[np.nan] * 3), "center"),
        ("mean", lambda: mean(X, weights=[1, 1]), "one weight per update"),
        ("mean", lambda: mean(X, weights=[1, -1, 1]), "non-negative"),
        ("mean", lambda: mean(X, weights=[0, 0, 0]), "sum to more than zero"),
        ("median", lambda: median(np.ones(3)), "median needs an \\(n, d\\) array"),
        ("median", lambda: median(np.ones((0, 3))), "median needs at least one update, got n=0"),
        ("median", lambda: median([[1.0, np.inf], [1.0, 2.0]]), "rows \\[0\\] are not"),
        ("median", lambda: median([[1.0], [1.0, 2.0]]), "median needs an \\(n, d\\) array"),
    ],
)
def test_violations_raise_naming_the_rule(name: str, call: Callable[[], Any], message: str) -> None:
    with pytest.raises(AggregationError, match=f"^{name}") as info:
        call()
    assert info.match(message)


def test_check_rule_refuses_without_data() -> None:
    with pytest.raises(AggregationError, match="krum needs n > 2f, got n=5, f=3"):
        check_rule("krum", n=5, f=3)
    with pytest.raises(AggregationError, match="bulyan needs n >= 4f \\+ 3, got n=10, f=2"):
        check_rule("bulyan", n=10, f=2)
    with pytest.raises(AggregationError, match="unknown aggregation rule 'kurm'"):
        check_rule("kurm", n=5, f=1)
    with pytest.raises(AggregationError, match="krum has no option m"):
        check_rule("krum", n=5, f=1, m=2)
    with pytest.raises(AggregationError, match="median needs at least one update"):
        check_rule("median", n=0)
    with pytest.raises(AggregationError, match="centered_clip needs a finite tau > 0"):
        check_rule("centered_clip", n=3, tau=float("inf"))
    check_rule("krum", n=3, f=1)  # ByzFL's example is valid
    check_rule("bulyan", n=11, f=2)
    check_rule("geometric_median", n=1, nu=0.1, max_iter=3, tol=0.0)


def test_registries_name_every_rule_and_agree_with_check_rule() -> None:
    assert set(RULES) == set(ALL)
    assert set(PREAGGREGATORS) == {"bucketing", "nnm", "clip"}
    for name, fn in RULES.items():
        assert fn.__name__ == name
        check_rule(name, n=7, f=1)


@pytest.mark.parametrize("name", sorted(ALL))
def test_check_rule_agrees_with_the_rules(name: str) -> None:
    for n in range(1, 13):
        for f in range(5):
            x = data(n, 3, n * 10 + f)
            try:
                check_rule(name, n, f)
                refused = False
            except AggregationError:
                refused = True
            try:
                ALL[name](x, f)
                failed = False
            except AggregationError:
                failed = True
            assert refused == failed, (name, n, f)


# --- pre-aggregation -----------------------------------------------------------------------------


def test_bucketing() -> None:
    x = data(7, 3, 1)
    out = bucketing(x, 1, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(out, axis=0), np.sort(x, axis=0))
    assert {tuple(r) for r in out} == {tuple(r) for r in x}
    out = bucketing(x, 3, np.random.default_rng(0))
    assert out.shape == (3, 3) and check_preaggregator("bucketing", 7, s=3) == 3
    np.testing.assert_allclose(3 * out[0] + 3 * out[1] + out[2], x.sum(axis=0))
    np.testing.assert_allclose(bucketing(x, 7, np.random.default_rng(5)), [mean(x)])
    np.testing.assert_array_equal(
        bucketing(x, 2, np.random.default_rng(9)), bucketing(x, 2, np.random.default_rng(9))
    )
    with pytest.raises(AggregationError, match="bucketing needs an integer bucket size s >= 1"):
        bucketing(x, 0, np.random.default_rng(0))


def test_bucket_means_cover_every_row_once() -> None:
    x = data(10, 2, 4)
    out = bucketing(x, 4, np.random.default_rng(3))  # buckets of 4, 4 and 2
    np.testing.assert_allclose(4 * out[0] + 4 * out[1] + 2 * out[2], x.sum(axis=0))


def test_nnm_is_permutation_equivariant() -> None:
    x = data(9, 4, 8)
    perm = np.random.default_rng(1).permutation(9)
    np.testing.assert_allclose(nnm(x[perm], 2), nnm(x, 2)[perm], rtol=1e-12)
    np.testing.assert_allclose(nnm(x, 0), np.tile(mean(x), (9, 1)))
    with pytest.raises(AggregationError, match="nnm needs n > 2f, got n=9, f=5"):
        nnm(x, 5)


def test_clip_caps_norms_and_keeps_directions() -> None:
    x = data(8, 5, 6) * np.arange(1, 9)[:, None]
    out = clip(x, 2.0)
    norms = np.linalg.norm(x, axis=1)
    assert np.all(np.linalg.norm(out, axis=1) <= 2.0 + 1e-12)
    small = norms <= 2.0
    np.testing.assert_array_equal(out[small], x[small])
    np.testing.assert_allclose(np.linalg.norm(out[~small], axis=1), 2.0)
    cos = np.einsum("ij,ij->i", out, x) / (np.linalg.norm(out, axis=1) * norms)
    np.testing.assert_allclose(cos, 1.0)
    np.testing.assert_array_equal(clip(np.zeros((2, 3)), 1.0), np.zeros((2, 3)))
    with pytest.raises(AggregationError, match="clip needs a finite threshold c > 0"):
        clip(x, 0.0)


def test_check_preaggregator() -> None:
    assert check_preaggregator("nnm", 5, 2) == 5
    assert check_preaggregator("clip", 5, c=1.0) == 5
    assert check_preaggregator("bucketing", 10, 3, s=3) == 4
    with pytest.raises(AggregationError, match="unknown pre-aggregation"):
        check_preaggregator("shuffle", 5)
    with pytest.raises(AggregationError, match="nnm has no option s"):
        check_preaggregator("nnm", 5, s=2)
