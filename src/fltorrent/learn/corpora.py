"""Real datasets from a local copy: CIFAR-10, EMNIST and FEMNIST.

Nothing is downloaded: each loader reads the files a usual download leaves on disk and, when
they are missing, says where it looked and how to get them. The formats are the ones
torchvision's dataset classes and the LEAF benchmark write (torchvision itself is not needed,
and its wheels do not install beside every torch build):

* **CIFAR-10** (``cifar10``): ``cifar-10-batches-py`` (the pickled batches, read with an
  unpickler that only admits numpy arrays) or ``cifar-10-batches-bin`` (the binary batches),
  under ``root`` or as ``root`` itself. Inputs (3, 32, 32), normalised per channel with the
  training set's mean and deviation; 10 classes.
* **EMNIST** (``emnist``): ``EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}
  -ubyte`` (optionally ``.gz``), torchvision's layout. Inputs (1, 28, 28) in [0, 1], upright.
* **FEMNIST** (``femnist``): LEAF's ``train/*.json`` and ``test/*.json`` (``users``,
  ``user_data`` with ``x``: 784 pixels and ``y``). Every training sample keeps its writer as
  its group, so the ``natural`` partition gives each peer whole writers; 62 classes.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import pickle
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from fltorrent.errors import LearnError
from fltorrent.learn.data import Dataset, finish_dataset

CORPORA: tuple[str, ...] = ("cifar10", "emnist", "femnist")
EMNIST_CLASSES = {
    "byclass": 62,
    "bymerge": 47,
    "balanced": 47,
    "letters": 27,  # labels 1-26; torchvision keeps class 0 ("N/A")
    "digits": 10,
    "mnist": 10,
}
FEMNIST_CLASSES = 62
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_RECORD = 1 + 3 * 32 * 32

_HOW_CIFAR = (
    'get it on a machine with internet, e.g. python -c "import torchvision; '
    "torchvision.datasets.CIFAR10('ROOT', download=True)\", and copy ROOT here"
)
_HOW_EMNIST = (
    'get it on a machine with internet, e.g. python -c "import torchvision; '
    "torchvision.datasets.EMNIST('ROOT', split='balanced', download=True)\", and copy ROOT here"
)
_HOW_FEMNIST = (
    "generate it with the LEAF benchmark's femnist scripts (preprocess.sh) and copy its "
    "data/ folder (holding train/ and test/) here"
)


def load_corpus(name: str, root: Path, *, emnist_split: str = "balanced") -> Dataset:
    """The dataset ``name`` (one of :data:`CORPORA`) from the local copy under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise LearnError(f"{name}: {root} is not a folder (data.path must be the dataset's root)")
    if name == "cifar10":
        return _cifar10(root)
    if name == "emnist":
        return _emnist(root, emnist_split)
    if name == "femnist":
        return _femnist(root)
    raise LearnError(f"unknown dataset {name!r}; local datasets: {', '.join(CORPORA)}")


# --- CIFAR-10 ----------------------------------------------------------------------------------


def _cifar10(root: Path) -> Dataset:
    for folder, reader in (
        ("cifar-10-batches-py", _cifar_pickle),
        ("cifar-10-batches-bin", _cifar_binary),
    ):
        where = root if root.name == folder else root / folder
        if (where / _batch_file(folder, CIFAR_TEST)).is_file():
            train = [reader(where / _batch_file(folder, b)) for b in CIFAR_TRAIN]
            x_test, y_test = reader(where / _batch_file(folder, CIFAR_TEST))
            x_train = np.concatenate([x for x, _ in train])
            y_train = np.concatenate([y for _, y in train])
            return _cifar_dataset(x_train, y_train, x_test, y_test)
    raise LearnError(
        f"cifar10: no cifar-10-batches-py or cifar-10-batches-bin under {root}; {_HOW_CIFAR}"
    )


def _batch_file(folder: str, batch: str) -> str:
    return f"{batch}.bin" if folder.endswith("bin") else batch


def _cifar_dataset(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> Dataset:
    scaled = x_train.astype(np.float32) / 255.0
    mean = scaled.mean(axis=(0, 2, 3), keepdims=True)
    std = scaled.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    scaled -= mean
    scaled /= std
    test = (x_test.astype(np.float32) / 255.0 - mean) / std
    return finish_dataset("cifar10", scaled, y_train, test, y_test, num_classes=10)


class _PickledDtype:
    """Stands in for ``numpy.dtype`` while unpickling: records its arguments and state, runs
    no numpy code (a crafted dtype state can make numpy write out of bounds)."""

    def __init__(self, spec: Any = None, *_args: Any) -> None:
        # Python 2 pickles (read with encoding="bytes") name it in bytes
        self.spec = spec.decode("latin-1") if isinstance(spec, bytes) else spec
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def dtype(self) -> np.dtype[Any]:
        plain = isinstance(self.spec, str) and self.spec in _PLAIN_DTYPES
        st = self.state
        if not plain or not isinstance(st, tuple) or len(st) < 5 or st[3:5] != (None, None):
            raise ValueError(f"an array of an unsupported type {self.spec!r}")
        order = st[1].decode("latin-1") if isinstance(st[1], bytes) else st[1]
        single = self.spec in ("u1", "i1", "b1")
        kind: np.dtype[Any] = np.dtype(
            self.spec if single or order not in ("<", ">", "=") else order + self.spec
        )
        return kind


class _PickledArray:
    """Stands in for ``numpy.ndarray`` while unpickling (see :class:`_PickledDtype`)."""

    def __init__(self, *_args: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        st = self.state
        if not isinstance(st, tuple) or len(st) != 5:
            raise ValueError("a malformed array")
        _, shape, dtype, fortran, raw = st
        if not isinstance(dtype, _PickledDtype) or not isinstance(raw, bytes | bytearray):
            raise ValueError("an array that is not plain numbers")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"an array of shape {shape!r}")
        kind = dtype.dtype()
        if math.prod(shape) * kind.itemsize != len(raw):
            raise ValueError(f"{len(raw)} bytes for an array of shape {shape} of {kind}")
        return np.frombuffer(bytes(raw), dtype=kind).reshape(shape, order="F" if fortran else "C")


def _pickled_reconstruct(_cls: Any, _shape: Any, _code: Any) -> _PickledArray:
    return _PickledArray()


_PLAIN_DTYPES = frozenset({"u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"})


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays of plain numbers; refuses every other
    global (a pickle may name any callable, which the load would call). Arrays are rebuilt
    from their bytes after the load (:func:`_arrays_of`), never by numpy's own unpickling."""

    STAND_INS: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _pickled_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _pickled_reconstruct,
        ("numpy", "ndarray"): _PickledArray,
        ("numpy", "dtype"): _PickledDtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.STAND_INS:
            return self.STAND_INS[module, name]
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles of Python 3
            return codecs.encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _arrays_of(value: Any) -> Any:
    """``value`` with every unpickled array stand-in made a numpy array."""
    if isinstance(value, _PickledArray):
        return value.array()
    if isinstance(value, dict):
        return {k: _arrays_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays_of(v) for v in value]
    return value


def _cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            batch = _arrays_of(_ArraysOnly(f, encoding="bytes").load())
        data = _key(batch, "data")
        labels = _key(batch, "labels")
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(labels, dtype=np.int64)
    except MemoryError:
        raise LearnError(f"cifar10: {path} is not a CIFAR-10 batch (too large)") from None
    except Exception as exc:  # a corrupt pickle raises many types
        raise LearnError(
            f"cifar10: {path} is not a CIFAR-10 batch ({type(exc).__name__}: {exc})"
        ) from None
    return _cifar_checked(path, x, y)


def _key(batch: Any, key: str) -> Any:
    if not isinstance(batch, dict):
        raise TypeError(f"a batch is a dict, got {type(batch).__name__}")
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(f"no {key!r} in the batch")


def _cifar_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise LearnError(f"cifar10: cannot read {path} ({exc})") from None
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise LearnError(f"cifar10: {path} is not whole {CIFAR_RECORD}-byte records")
    records = raw.reshape(-1, CIFAR_RECORD)
    x = records[:, 1:].reshape(-1, 3, 32, 32)
    return _cifar_checked(path, x, records[:, 0].astype(np.int64))


def _cifar_checked(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y) or len(y) == 0:
        raise LearnError(f"cifar10: {path} has {len(x)} images and {len(y)} labels")
    if y.min() < 0 or y.max() > 9:
        raise LearnError(f"cifar10: {path} has labels outside 0-9")
    return x, y


# --- EMNIST ------------------------------------------------------------------------------------


def _emnist(root: Path, split: str) -> Dataset:
    if split not in EMNIST_CLASSES:
        raise LearnError(f"emnist: unknown split {split!r}; known: {', '.join(EMNIST_CLASSES)}")
    raw = next((r for r in (root / "EMNIST" / "raw", root / "raw", root) if r.is_dir()), root)
    parts = []
    for which in ("train", "test"):
        images = _idx(raw, f"emnist-{split}-{which}-images-idx3-ubyte", ndim=3)
        labels = _idx(raw, f"emnist-{split}-{which}-labels-idx1-ubyte", ndim=1)
        if len(images) != len(labels) or len(labels) == 0:
            raise LearnError(f"emnist: {which}: {len(images)} images, {len(labels)} labels")
        if labels.max() >= EMNIST_CLASSES[split]:
            raise LearnError(f"emnist: {which} labels go past the {split} split's classes")
        # EMNIST's images are stored transposed; make them upright as torchvision does.
        parts.append((images.transpose(0, 2, 1)[:, None] / np.float32(255.0), labels))
    (x_tr, y_tr), (x_te, y_te) = parts
    return finish_dataset(
        f"emnist-{split}",
        x_tr,
        y_tr.astype(np.int64),
        x_te,
        y_te.astype(np.int64),
        num_classes=EMNIST_CLASSES[split],
    )


_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}


def _idx(folder: Path, name: str, *, ndim: int) -> np.ndarray:
    """One IDX file (big-endian header: magic, then one 32-bit size per dimension; uint8)."""
    openers: list[tuple[Path, Callable[[Path], IO[bytes]]]] = [
        (folder / name, _open),
        (folder / f"{name}.gz", _open_gz),
    ]
    found = next(((p, o) for p, o in openers if p.is_file()), None)
    if found is None:
        raise LearnError(f"emnist: no {name} (or .gz) in {folder}; {_HOW_EMNIST}")
    path, opener = found
    try:
        with opener(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise LearnError(f"emnist: cannot read {path} ({exc})") from None
    header = 4 * (1 + ndim)
    if len(data) < header or int.from_bytes(data[:4], "big") != _IDX_MAGIC[ndim]:
        raise LearnError(f"emnist: {path} is not an IDX file of {ndim} dimension(s)")
    dims = [int.from_bytes(data[4 * (i + 1) : 4 * (i + 2)], "big") for i in range(ndim)]
    if len(data) - header != int(np.prod(dims)):
        raise LearnError(f"emnist: {path} holds {len(data) - header} bytes, its header {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _open(path: Path) -> IO[bytes]:
    return path.open("rb")


def _open_gz(path: Path) -> IO[bytes]:
    return io.BufferedReader(gzip.open(path, "rb"))


# --- FEMNIST -----------------------------------------------------------------------------------


def _femnist(root: Path) -> Dataset:
    splits = {}
    writers: dict[str, int] = {}
    for which in ("train", "test"):
        folder = root / which
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            raise LearnError(f"femnist: no {which}/*.json under {root}; {_HOW_FEMNIST}")
        xs, ys, gs = [], [], []
        for file in files:
            for user, x, y in _leaf_users(file):
                group = writers.setdefault(user, len(writers)) if which == "train" else -1
                xs.append(x)
                ys.append(y)
                gs.append(np.full(len(y), group, dtype=np.int64))
        if not xs:
            raise LearnError(f"femnist: the {which} files hold no samples")
        splits[which] = (np.concatenate(xs), np.concatenate(ys), np.concatenate(gs))
    x_tr, y_tr, groups = splits["train"]
    x_te, y_te, _ = splits["test"]
    return finish_dataset(
        "femnist",
        x_tr.reshape(-1, 1, 28, 28),
        y_tr,
        x_te.reshape(-1, 1, 28, 28),
        y_te,
        num_classes=FEMNIST_CLASSES,
        groups=groups,
    )


def _leaf_users(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    try:
        doc = json.loads(path.read_bytes())
        users = [str(u) for u in doc["users"]]
        out = []
        for user in users:
            record = doc["user_data"][user]
            x = np.asarray(record["x"], dtype=np.float32)
            labels = np.asarray(record["y"], dtype=np.float64)
            if labels.ndim != 1 or not np.all(labels == np.round(labels)):
                raise ValueError(f"user {user}: labels must be class indices")
            y = labels.astype(np.int64)
            if x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y):
                raise ValueError(f"user {user}: x must be (n, 784) with one y each")
            if len(y) and (y.min() < 0 or y.max() >= FEMNIST_CLASSES):
                raise ValueError(f"user {user}: labels outside 0-{FEMNIST_CLASSES - 1}")
            if not np.isfinite(x).all():
                raise ValueError(f"user {user}: pixels hold NaN or infinite values")
            out.append((user, x, y))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LearnError(f"femnist: {path} is not a LEAF femnist file ({exc})") from None
    return out
