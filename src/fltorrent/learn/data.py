"""Datasets: MNIST-1D (generated locally), sklearn's digits and FedProx's Synthetic(α, β).

Every loader is deterministic for its arguments, returns float32 inputs and int64 labels, and
never downloads anything. Only MNIST-1D touches the disk, and only when a ``cache_dir`` is given,
because generating it takes a couple of seconds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fltorrent.errors import LearnError

DATASET_NAMES: tuple[str, ...] = ("mnist1d", "digits", "synthetic")
"""The names :func:`load_dataset` understands."""

DEFAULT_NUM_SAMPLES = 10_000
TEST_FRACTION = 0.2
SYNTHETIC_FEATURES = 60
SYNTHETIC_CLASSES = 10


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled dataset with a train split and the global test split.

    ``groups`` gives the natural client of each *train* sample; only the synthetic dataset has
    natural clients, the others leave it ``None``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    groups: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None  # when the data names its classes (folders)


def load_dataset(
    name: str,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    num_groups: int = 10,
    synthetic_alpha: float = 1.0,
    synthetic_beta: float = 1.0,
) -> Dataset:
    """Load (or generate) the dataset ``name``; see :data:`DATASET_NAMES`.

    ``num_samples`` counts train and test together (default: 10,000 for mnist1d and synthetic,
    all 1,797 for digits). ``num_groups``, ``synthetic_alpha`` and ``synthetic_beta`` only apply
    to ``synthetic``; ``cache_dir`` only to ``mnist1d``.
    """
    if num_samples is not None and num_samples < 1:
        raise LearnError(f"num_samples must be positive, got {num_samples}")
    if name == "mnist1d":
        return _load_mnist1d(
            num_samples=DEFAULT_NUM_SAMPLES if num_samples is None else num_samples,
            seed=seed,
            cache_dir=cache_dir,
        )
    if name == "digits":
        return _load_digits(num_samples=num_samples, seed=seed)
    if name == "synthetic":
        return _make_synthetic(
            num_samples=DEFAULT_NUM_SAMPLES if num_samples is None else num_samples,
            seed=seed,
            num_groups=num_groups,
            alpha=synthetic_alpha,
            beta=synthetic_beta,
        )
    raise LearnError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")


def finish_dataset(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int,
    groups: np.ndarray | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Apply the dtype conventions every dataset shares."""
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        y_train=np.ascontiguousarray(y_train, dtype=np.int64),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        groups=None if groups is None else np.ascontiguousarray(groups, dtype=np.int64),
        class_names=class_names,
    )


# --- MNIST-1D ----------------------------------------------------------------------------------


def _load_mnist1d(*, num_samples: int, seed: int, cache_dir: Path | None) -> Dataset:
    # make_dataset draws num_samples // 10 samples per class, so fewer than 10 gives nothing.
    if num_samples < 10:
        raise LearnError(f"mnist1d needs at least 10 samples, got {num_samples}")
    path = None if cache_dir is None else Path(cache_dir) / f"mnist1d-n{num_samples}-s{seed}.npz"
    arrays = _read_cache(path) if path is not None else None
    if arrays is None:
        arrays = _generate_mnist1d(num_samples=num_samples, seed=seed)
        if path is not None:
            _write_cache(path, arrays)
    return finish_dataset(
        "mnist1d",
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        num_classes=10,
    )


def _generate_mnist1d(*, num_samples: int, seed: int) -> dict[str, np.ndarray]:
    # Imported lazily: only this loader needs mnist1d, and peers import fltorrent.learn.
    from mnist1d.data import get_dataset_args, make_dataset  # noqa: PLC0415

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    # make_dataset reseeds numpy's global generator; put it back so callers see no side effect.
    saved = np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(saved)
    return {
        "x_train": np.asarray(raw["x"], dtype=np.float32),
        "y_train": np.asarray(raw["y"], dtype=np.int64),
        "x_test": np.asarray(raw["x_test"], dtype=np.float32),
        "y_test": np.asarray(raw["y_test"], dtype=np.int64),
    }


_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (then regenerate)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: np.asarray(f[k]) for k in _CACHE_KEYS}
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Several processes may generate the same dataset at once: each writes its own temporary
    # file and renames it into place, so readers never see a partial file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                x_train=arrays["x_train"],
                y_train=arrays["y_train"],
                x_test=arrays["x_test"],
                y_test=arrays["y_test"],
            )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- digits ------------------------------------------------------------------------------------


def _load_digits(*, num_samples: int | None, seed: int) -> Dataset:
    # Imported lazily: sklearn takes about a second to import and only this loader needs it
    # (an optional extra: the core install stays lean).
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError:
        raise LearnError(
            "data.name 'digits' needs scikit-learn: pip install 'fltorrent[digits]'"
        ) from None

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    if num_samples is not None:
        if num_samples > len(y):
            raise LearnError(f"digits has {len(y)} samples, {num_samples} were requested")
        if num_samples < 5:
            raise LearnError(f"digits needs at least 5 samples for a test split, got {num_samples}")
        keep = np.sort(rng.choice(len(y), size=num_samples, replace=False))
        x, y = x[keep], y[keep]
    train, test = _stratified_split(np.asarray(y), rng)
    x = (np.asarray(x, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return finish_dataset("digits", x[train], y[train], x[test], y[test], num_classes=10)


def _stratified_split(y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split with a fifth in test and each class in test at its share ±1.

    Shuffle, stable-sort by label, then take every fifth position: systematic sampling over the
    class-sorted order keeps class proportions and never fails on rare classes.
    """
    order = rng.permutation(len(y))
    order = order[np.argsort(y[order], kind="stable")]
    is_test = np.arange(len(y)) % 5 == 4
    return np.sort(order[~is_test]), np.sort(order[is_test])


# --- Synthetic(α, β) ---------------------------------------------------------------------------


def _make_synthetic(
    *, num_samples: int, seed: int, num_groups: int, alpha: float, beta: float
) -> Dataset:
    """FedProx's Synthetic(α, β) (Li et al., MLSys 2020).

    Group k draws u_k ~ N(0, α), B_k ~ N(0, β), W_k ~ N(u_k, 1) (10x60), b_k ~ N(u_k, 1),
    v_k ~ N(B_k, 1) (60-dim), then x ~ N(v_k, Σ) with Σ_jj = j^-1.2 and y = argmax(W_k x + b_k)
    (argmax of the softmax is argmax of the logits). As in the reference generator, α and β are
    used as standard deviations. Samples are split evenly over the groups (the first
    ``num_samples % num_groups`` groups get one more) rather than lognormally, so that runs with
    few samples still give every group enough data; each group is split 80/20 train/test.
    """
    if num_groups < 1:
        raise LearnError(f"num_groups must be at least 1, got {num_groups}")
    if alpha < 0 or beta < 0:
        raise LearnError(f"synthetic alpha and beta must be non-negative, got {alpha}, {beta}")
    if num_samples < 5 * num_groups:
        raise LearnError(
            f"synthetic needs at least 5 samples per group ({5 * num_groups}), got {num_samples}"
        )
    rng = np.random.default_rng(seed)
    d, c = SYNTHETIC_FEATURES, SYNTHETIC_CLASSES
    std_x = np.arange(1, d + 1, dtype=np.float64) ** (-1.2 / 2)
    sizes = np.full(num_groups, num_samples // num_groups)
    sizes[: num_samples % num_groups] += 1
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(num_groups):
        u_k = rng.normal(0.0, alpha)
        b_mean = rng.normal(0.0, beta)
        w = rng.normal(u_k, 1.0, size=(c, d))
        b = rng.normal(u_k, 1.0, size=c)
        v = rng.normal(b_mean, 1.0, size=d)
        x = v + std_x * rng.standard_normal(size=(int(sizes[k]), d))
        y = np.argmax(x @ w.T + b, axis=1)
        perm = rng.permutation(len(y))
        n_test = round(TEST_FRACTION * len(y))
        test, train = perm[:n_test], perm[n_test:]
        parts.append((x[train], y[train], x[test], y[test], np.full(len(train), k)))
    return finish_dataset(
        "synthetic",
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        np.concatenate([p[3] for p in parts]),
        num_classes=c,
        groups=np.concatenate([p[4] for p in parts]),
    )


def subsample(ds: Dataset, num_samples: int, *, seed: int) -> Dataset:
    """At most ``num_samples`` samples of ``ds`` (train and test together, in their ratio),
    drawn with ``seed``; ``ds`` itself when it is no larger."""
    total = len(ds.y_train) + len(ds.y_test)
    if num_samples >= total:
        return ds
    n_test = max(1, round(num_samples * len(ds.y_test) / total))
    n_train = num_samples - n_test
    if n_train < 1:
        raise LearnError(f"num_samples {num_samples} leaves no training sample")
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(len(ds.y_train), size=n_train, replace=False))
    test = np.sort(rng.choice(len(ds.y_test), size=n_test, replace=False))
    return Dataset(
        name=ds.name,
        x_train=ds.x_train[train],
        y_train=ds.y_train[train],
        x_test=ds.x_test[test],
        y_test=ds.y_test[test],
        num_classes=ds.num_classes,
        input_shape=ds.input_shape,
        groups=None if ds.groups is None else ds.groups[train],
        class_names=ds.class_names,
    )
