"""Generated stand-ins for the real datasets, written in their on-disk formats.

For tests, benchmarks and trying a setup on a machine without the real files: each writer puts
a small dataset of the same shapes, label range and file layout where :mod:`~.corpora` looks
for the real one. The images are learnable but not trivial: each class is a smooth random
pattern, every sample that pattern shifted by a few pixels, scaled, and under pixel noise.
Nothing about them stands for the real data's accuracy.
"""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np

from fltorrent.learn.corpora import CIFAR_TEST, CIFAR_TRAIN, EMNIST_CLASSES, FEMNIST_CLASSES


def _images(
    rng: np.random.Generator, labels: np.ndarray, *, channels: int, side: int, classes: int
) -> np.ndarray:
    """uint8 images (n, channels, side, side): class pattern, shifted, scaled, noisy."""
    # A pattern all classes share, plus a smaller one of each class's own.
    coarse = rng.normal(size=(1, channels, 4, 4)) + 0.35 * rng.normal(
        size=(classes, channels, 4, 4)
    )
    patterns = np.kron(coarse, np.ones((side // 4, side // 4)))  # blocky, smoothed below
    for axis in (2, 3):
        patterns = (patterns + np.roll(patterns, 1, axis) + np.roll(patterns, -1, axis)) / 3
    out = np.empty((len(labels), channels, side, side), dtype=np.uint8)
    shifts = rng.integers(-3, 4, size=(len(labels), 2))
    scales = rng.uniform(0.6, 1.4, size=len(labels))
    for i, c in enumerate(labels):
        img = np.roll(patterns[c], tuple(shifts[i]), axis=(1, 2)) * scales[i]
        img = 128 + 30 * img + rng.normal(scale=90.0, size=img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_cifar10(root: Path, *, train: int = 5000, test: int = 1000, seed: int = 0) -> Path:
    """A CIFAR-10 stand-in as ``root/cifar-10-batches-py`` (five training batches and a test
    batch, pickled dicts of ``data`` (n, 3072) uint8 and ``labels``); returns that folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    y_train = rng.integers(0, 10, size=train)
    y_test = rng.integers(0, 10, size=test)
    everything = _images(rng, np.concatenate([y_train, y_test]), channels=3, side=32, classes=10)
    x_train, x_test = everything[:train], everything[train:]
    cuts = np.array_split(np.arange(train), len(CIFAR_TRAIN))
    for name, idx in zip(CIFAR_TRAIN, cuts, strict=True):
        _pickle(folder / name, x_train[idx], y_train[idx])
    _pickle(folder / CIFAR_TEST, x_test, y_test)
    return folder


def _pickle(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    batch = {b"data": x.reshape(len(x), -1), b"labels": [int(v) for v in y]}
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_emnist(
    root: Path, *, split: str = "balanced", train: int = 2000, test: int = 400, seed: int = 0
) -> Path:
    """An EMNIST stand-in in torchvision's layout (``root/EMNIST/raw``, gzipped IDX files,
    images stored transposed as in the real files); returns the raw folder."""
    rng = np.random.default_rng(seed)
    classes = EMNIST_CLASSES[split]
    low = 1 if split == "letters" else 0
    raw = Path(root) / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for which, n in (("train", train), ("test", test)):
        y = rng.integers(low, classes, size=n)
        x = _images(rng, y, channels=1, side=28, classes=classes)[:, 0].transpose(0, 2, 1)
        _idx(raw / f"emnist-{split}-{which}-images-idx3-ubyte.gz", np.ascontiguousarray(x))
        _idx(raw / f"emnist-{split}-{which}-labels-idx1-ubyte.gz", y.astype(np.uint8))
    return raw


def _idx(path: Path, array: np.ndarray) -> None:
    magic = 0x00000800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_femnist(root: Path, *, writers: int = 20, per_writer: int = 40, seed: int = 0) -> Path:
    """A FEMNIST stand-in in LEAF's layout (``root/train/*.json``, ``root/test/*.json``; each
    writer's samples split 90/10 between them); returns ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    docs: dict[str, dict[str, object]] = {}
    for which in ("train", "test"):
        (root / which).mkdir(parents=True, exist_ok=True)
        docs[which] = {"users": [], "num_samples": [], "user_data": {}}
    for w in range(writers):
        # Each writer favours a few classes, as real writers do.
        favourite = rng.choice(FEMNIST_CLASSES, size=5, replace=False)
        y = rng.choice(favourite, size=per_writer)
        x = _images(rng, y, channels=1, side=28, classes=FEMNIST_CLASSES).reshape(per_writer, -1)
        cut = max(1, per_writer // 10)
        for which, sl in (("test", slice(0, cut)), ("train", slice(cut, None))):
            doc = docs[which]
            user = f"f{w:04d}_00"
            doc["users"].append(user)  # type: ignore[attr-defined]
            doc["num_samples"].append(len(y[sl]))  # type: ignore[attr-defined]
            doc["user_data"][user] = {  # type: ignore[index]
                "x": (x[sl] / 255.0).round(4).tolist(),
                "y": [int(v) for v in y[sl]],
            }
    for which, doc in docs.items():
        (root / which / f"all_data_0_niid_{which}.json").write_text(json.dumps(doc))
    return root
