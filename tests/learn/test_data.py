"""Datasets: shapes, dtypes, determinism, the MNIST-1D cache and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fltorrent.errors import LearnError
from fltorrent.learn import data as data_module
from fltorrent.learn import load_dataset


def _assert_conventions(ds: data_module.Dataset, *, input_shape: tuple[int, ...]) -> None:
    assert ds.input_shape == input_shape
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.shape == (len(ds.y_train), *input_shape)
    assert ds.x_test.shape == (len(ds.y_test), *input_shape)
    assert ds.y_train.min() >= 0 and ds.y_train.max() < ds.num_classes


def test_mnist1d_shapes_determinism_and_global_rng() -> None:
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    ds = load_dataset("mnist1d", num_samples=300, seed=1)
    # make_dataset reseeds numpy's global generator; the loader must put it back.
    assert np.array_equal(np.random.random(3), expected)
    _assert_conventions(ds, input_shape=(40,))
    assert (len(ds.y_train), len(ds.y_test)) == (240, 60)
    assert ds.num_classes == 10 and ds.groups is None and ds.name == "mnist1d"
    again = load_dataset("mnist1d", num_samples=300, seed=1)
    assert np.array_equal(ds.x_train, again.x_train) and np.array_equal(ds.y_test, again.y_test)
    other = load_dataset("mnist1d", num_samples=300, seed=2)
    assert not np.array_equal(ds.x_train, other.x_train)


def test_mnist1d_cache_is_written_atomically_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_dataset("mnist1d", num_samples=100, seed=3, cache_dir=tmp_path / "c")
    files = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert files == ["mnist1d-n100-s3.npz"]  # no temporary file left behind

    def no_generation(**_: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data_module, "_generate_mnist1d", no_generation)
    cached = load_dataset("mnist1d", num_samples=100, seed=3, cache_dir=tmp_path / "c")
    assert np.array_equal(first.x_train, cached.x_train)
    assert np.array_equal(first.y_test, cached.y_test)
    assert cached.x_train.dtype == np.float32 and cached.y_train.dtype == np.int64
    # A different key is a different file, so it must be generated.
    with pytest.raises(AssertionError, match="cache"):
        load_dataset("mnist1d", num_samples=100, seed=4, cache_dir=tmp_path / "c")


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path: Path) -> None:
    (tmp_path / "mnist1d-n50-s0.npz").write_bytes(b"not a zip file")
    ds = load_dataset("mnist1d", num_samples=50, seed=0, cache_dir=tmp_path)
    assert len(ds.y_train) == 40
    reread = load_dataset("mnist1d", num_samples=50, seed=0, cache_dir=tmp_path)
    assert np.array_equal(ds.x_test, reread.x_test)


def test_digits_scaled_stratified_and_subsampled() -> None:
    ds = load_dataset("digits", seed=0)
    _assert_conventions(ds, input_shape=(1, 8, 8))
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == 1797 // 5
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    # Stratified: every class's test share is within one sample of a fifth.
    all_counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]), minlength=10)
    test_counts = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test_counts - all_counts / 5) <= 1)

    small = load_dataset("digits", num_samples=100, seed=5)
    assert len(small.y_train) + len(small.y_test) == 100 and len(small.y_test) == 20
    assert not np.array_equal(small.x_test, load_dataset("digits", num_samples=100, seed=6).x_test)
    with pytest.raises(LearnError, match="1797"):
        load_dataset("digits", num_samples=5000)


def test_synthetic_groups_split_and_covariance() -> None:
    ds = load_dataset("synthetic", num_samples=2000, num_groups=4, seed=7)
    _assert_conventions(ds, input_shape=(60,))
    assert ds.groups is not None and ds.groups.shape == ds.y_train.shape
    assert np.array_equal(np.bincount(ds.groups), [400, 400, 400, 400])  # 80% of 500 each
    assert len(ds.y_test) == 400
    again = load_dataset("synthetic", num_samples=2000, num_groups=4, seed=7)
    assert again.groups is not None and np.array_equal(ds.groups, again.groups)
    assert np.array_equal(ds.x_train, again.x_train)
    # Σ_jj = j^-1.2: within a group, feature 1 varies far more than feature 60.
    x0 = ds.x_train[ds.groups == 0]
    ratio = x0[:, 0].var() / x0[:, 59].var()
    assert 60**1.2 / 2 < ratio < 60**1.2 * 2
    # Groups differ (heterogeneous means), which is the point of the dataset.
    means = np.stack([ds.x_train[ds.groups == g].mean(axis=0) for g in range(4)])
    assert np.abs(means[0] - means[1]).max() > 0.5

    uneven = load_dataset("synthetic", num_samples=103, num_groups=10, seed=0)
    assert len(uneven.y_train) + len(uneven.y_test) == 103
    with pytest.raises(LearnError):
        load_dataset("synthetic", num_samples=10, num_groups=10)


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(LearnError, match=r"mnist1d.*digits.*synthetic"):
        load_dataset("cifar10")
    with pytest.raises(LearnError):
        load_dataset("mnist1d", num_samples=0)
