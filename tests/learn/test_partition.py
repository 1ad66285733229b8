"""Partitioners: coverage, disjointness, determinism and the skew each method promises."""

from __future__ import annotations

import numpy as np
import pytest

from fltorrent.errors import LearnError
from fltorrent.learn import partition, split_test_like

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 100 per class, sorted on purpose


def _check_parts(parts: list[np.ndarray], n: int, *, complete: bool = True) -> None:
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no repeats
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # each index at most once
    assert joined.min() >= 0 and joined.max() < n
    if complete:
        assert len(joined) == n


def test_iid_equal_and_deterministic() -> None:
    parts = partition(LABELS, 7, method="iid", seed=1)
    _check_parts(parts, 1000)
    assert {len(p) for p in parts} == {142, 143}
    same = partition(LABELS, 7, method="iid", seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, same, strict=True))
    other = partition(LABELS, 7, method="iid", seed=2)
    assert not np.array_equal(parts[0], other[0])
    # IID: every client sees every class.
    assert all(len(np.unique(LABELS[p])) == 10 for p in parts)


def test_dirichlet_skew_min_samples_and_determinism() -> None:
    skewed = partition(LABELS, 8, alpha=0.1, seed=0, min_samples=10)
    _check_parts(skewed, 1000)
    assert min(len(p) for p in skewed) >= 10
    again = partition(LABELS, 8, alpha=0.1)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))

    def mean_max_share(parts: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]))

    flat = partition(LABELS, 8, alpha=1000.0, seed=0)
    # Small alpha concentrates each client on few classes; huge alpha is close to uniform.
    assert mean_max_share(skewed) > 0.4
    assert mean_max_share(flat) < 0.2


def test_dirichlet_gives_up_with_learn_error() -> None:
    # 100 samples, 10 clients, 10 each: only an exactly even split would do.
    with pytest.raises(LearnError, match="tries"):
        partition(LABELS[::10], 10, alpha=0.01, min_samples=10)
    with pytest.raises(LearnError, match="only 1000"):
        partition(LABELS, 10, min_samples=101)


def test_shards_give_each_client_few_labels() -> None:
    parts = partition(LABELS, 10, method="shards", shards_per_client=2, seed=3)
    _check_parts(parts, 1000)
    assert all(len(p) == 100 for p in parts)
    # 20 shards of 50 from label-sorted data: each shard is one class, so at most 2 per client.
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    assert any(len(np.unique(LABELS[p])) == 2 for p in parts)
    with pytest.raises(LearnError, match="shards"):
        partition(LABELS[:10], 10, method="shards", shards_per_client=2)


def test_natural_follows_groups() -> None:
    groups = np.array([2, 0, 1, 2, 0, 1, 1])
    parts = partition(np.zeros(7, dtype=np.int64), 3, method="natural", groups=groups)
    assert [p.tolist() for p in parts] == [[1, 4], [2, 5, 6], [0, 3]]
    with pytest.raises(LearnError, match="groups"):
        partition(LABELS, 3, method="natural")
    with pytest.raises(LearnError, match="3 groups"):
        partition(np.zeros(7, dtype=np.int64), 4, method="natural", groups=groups)


def test_bad_arguments_raise_learn_error() -> None:
    with pytest.raises(LearnError, match="num_clients"):
        partition(LABELS, 0)
    with pytest.raises(LearnError, match="alpha"):
        partition(LABELS, 4, alpha=0.0)
    with pytest.raises(LearnError, match="5 samples over 6"):
        partition(LABELS[:5], 6, method="iid")
    with pytest.raises(LearnError, match=r"iid.*dirichlet"):
        partition(LABELS, 4, method="pathological")


def test_split_test_like_matches_train_label_distribution() -> None:
    y_train = np.array([0] * 30 + [1] * 10 + [2] * 20)
    y_test = np.array([0] * 30 + [1] * 20 + [2] * 10 + [3] * 5)
    train_parts = [
        np.arange(0, 20),  # 20 of class 0
        np.concatenate([np.arange(20, 30), np.arange(30, 40)]),  # 10 of class 0, 10 of class 1
        np.arange(40, 60),  # 20 of class 2
    ]
    parts = split_test_like(train_parts, y_train, y_test, seed=0)
    _check_parts(parts, len(y_test), complete=False)
    counts = [np.bincount(y_test[p], minlength=4).tolist() for p in parts]
    assert counts == [[20, 0, 0, 0], [10, 20, 0, 0], [0, 0, 10, 0]]
    # Class 3 has no train samples anywhere, so nobody gets its test samples.
    assert sum(len(p) for p in parts) == 60
    again = split_test_like(train_parts, y_train, y_test, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_split_test_like_proportional_on_dirichlet_parts() -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 10, 2000), rng.integers(0, 10, 500)
    train_parts = partition(y_train, 5, alpha=0.3, seed=1)
    parts = split_test_like(train_parts, y_train, y_test, seed=2)
    _check_parts(parts, 500)  # every class has train samples, so the test set is used up
    for tp, sp in zip(train_parts, parts, strict=True):
        train_c = np.bincount(y_train[tp], minlength=10)
        test_c = np.bincount(y_test[sp], minlength=10)
        assert np.all(test_c[train_c == 0] == 0)
        expected = train_c / np.bincount(y_train, minlength=10) * np.bincount(y_test, minlength=10)
        assert np.all(np.abs(test_c - expected) <= 1)
