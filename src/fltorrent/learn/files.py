"""A peer's own data from files: a folder of images, ``.npz`` / ``.pt`` tensors, or CSV.

:func:`read_files` reads one path into a :class:`~.data.Dataset` (float32 inputs, int64
labels), with the formats people keep labelled data in:

* **a folder of images** in the ImageFolder layout (one sub-folder per class, named by the
  class, holding its images directly), or a folder holding ``train/`` and ``test/`` (or
  ``val/``, ``valid/``) in that layout. Images are read with Pillow as (C, H, W) in [0, 1]:
  one channel when every image is greyscale, else RGB. They must share one size unless
  ``image_size`` resizes them.
* **``.npz``** (numpy, read without pickle) or **``.pt``** (torch, read with
  ``weights_only=True``): arrays ``x`` and ``y``, or ``x_train``, ``y_train``, ``x_test`` and
  ``y_test``; a ``.pt`` file may also hold the pair ``(x, y)``.
* **CSV**: one sample per row, numeric features; the label is the column ``label_column`` (an
  index, default the last, or a name from the header row). Labels that are not integers are
  class names.

Class names (folders, CSV labels) are numbered by their place in ``classes`` when it is given
(``data.classes``: every peer's own data must number them alike), else in sorted order.

Without a test split in the file, ``test_fraction`` of the samples (drawn with ``seed``) is held
out. Everything is checked where it is read: a problem is a :class:`LearnError` naming the file
(and the row or item) and what is wrong with it. The data is read whole into memory.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fltorrent.errors import LearnError
from fltorrent.learn.data import Dataset, finish_dataset

MAX_CLASSES = 100_000  # a larger label is a mistake (a model's output layer would be that wide)
TEST_SPLITS = ("test", "val", "valid")  # the held-out split's folder beside train/
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
FORMATS = "a folder of images (one sub-folder per class), .npz, .pt or .csv"
MAX_CSV_FIELD = 1 << 20  # bytes; the csv module's own limit is 128 KiB


def read_files(
    path: Path,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    label_column: int | str = -1,
    image_size: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Read ``path`` (see the module's formats) into a dataset with a train and a test split.

    ``classes`` numbers named classes (class folders, CSV labels that are not numbers) by their
    place in that list, so that every peer's data numbers them alike; without it, a file's own
    names are numbered in sorted order."""
    path = Path(path).expanduser()
    check_own_data(path)
    if path.is_dir():
        return _image_folder(
            path, seed=seed, test_fraction=test_fraction, size=image_size, classes=classes
        )
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _arrays(path, _read_npz(path), seed=seed, test_fraction=test_fraction)
    if suffix in (".pt", ".pth"):
        return _arrays(path, _read_pt(path), seed=seed, test_fraction=test_fraction)
    x, y, names = _read_csv(path, label_column, classes)  # check_own_data refused the rest
    return _split(path, x, y, names, seed=seed, test_fraction=test_fraction)


def check_own_data(path: Path) -> None:
    """Refuse early a path :func:`read_files` cannot read (missing, or of an unknown format);
    the contents are checked when the peer reads them."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LearnError(f"{path}: no such file or folder (data: {FORMATS})")
    if path.is_file() and path.suffix.lower() not in (".npz", ".pt", ".pth", ".csv"):
        raise LearnError(
            f"{path}: unknown data format {path.suffix or '(no suffix)'!r}; use {FORMATS}"
        )


# --- tensors -----------------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (.npy), not named arrays")
        with loaded as f:
            return {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise LearnError(f"{path}: not a readable .npz file ({exc})") from None


def _read_pt(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad or unsafe file
        raise LearnError(f"{path}: not a readable .pt file ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, tuple | list) and len(obj) == 2:
        return {"x": obj[0], "y": obj[1]}
    if isinstance(obj, dict):
        return dict(obj)
    raise LearnError(f"{path}: holds a {type(obj).__name__}; expected a dict of tensors or (x, y)")


def _array(path: Path, arrays: dict[str, Any], key: str) -> np.ndarray:
    value = arrays[key]
    try:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.layout != torch.strided:
                value = value.to_dense()
            if value.dtype == torch.bfloat16:
                value = value.float()
            value = value.numpy()
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise LearnError(f"{path}: {key!r} is not an array ({exc})") from None


def _arrays(path: Path, arrays: dict[str, Any], *, seed: int, test_fraction: float) -> Dataset:
    keys = set(arrays)
    if {"x_train", "y_train", "x_test", "y_test"} <= keys:
        got = [_array(path, arrays, k) for k in ("x_train", "y_train", "x_test", "y_test")]
        x_tr, y_tr = _checked(path, got[0], got[1], "train")
        x_te, y_te = _checked(path, got[2], got[3], "test")
        if x_tr.shape[1:] != x_te.shape[1:]:
            raise LearnError(
                f"{path}: train inputs {x_tr.shape[1:]} and test inputs {x_te.shape[1:]} differ"
            )
        return _dataset(path, x_tr, y_tr, x_te, y_te, names=None)
    if {"x", "y"} <= keys:
        x, y = _checked(path, _array(path, arrays, "x"), _array(path, arrays, "y"), "data")
        return _split(path, x, y, None, seed=seed, test_fraction=test_fraction)
    raise LearnError(
        f"{path}: expected arrays 'x' and 'y' (or x_train, y_train, x_test, y_test), "
        f"found {sorted(map(str, keys))}"
    )


def _checked(path: Path, x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs as float32 with a sample axis, labels as int64 class indices; one per sample."""
    if x.ndim < 1 or len(x) == 0:
        raise LearnError(f"{path}: the {what} inputs are empty")
    if x.dtype.kind not in "biuf":
        raise LearnError(f"{path}: the {what} inputs are {x.dtype}, not numbers")
    x = x.astype(np.float32).reshape(len(x), -1) if x.ndim == 1 else x.astype(np.float32)
    if not np.isfinite(x).all():
        raise LearnError(f"{path}: the {what} inputs hold NaN or infinite values")
    if y.ndim != 1 or len(y) != len(x):
        raise LearnError(
            f"{path}: {what}: {len(x)} inputs but labels of shape {tuple(y.shape)} "
            "(one label per input expected)"
        )
    if y.dtype.kind not in "biuf" or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise LearnError(f"{path}: the {what} labels must be integer class indices")
    if len(y) and y.min() < 0:
        raise LearnError(f"{path}: the {what} labels must be 0 or more, found {int(y.min())}")
    return x, y.astype(np.int64)


def _split(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    names: Sequence[str] | None,
    *,
    seed: int,
    test_fraction: float,
) -> Dataset:
    """Hold out ``test_fraction`` of the samples (seeded) as the test split."""
    if not 0.0 < test_fraction < 1.0:
        raise LearnError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    n = len(y)
    n_test = math.ceil(n * test_fraction)
    if n - n_test < 1:
        raise LearnError(f"{path}: {n} samples are too few for a train and a test split")
    order = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return _dataset(path, x[train], y[train], x[test], y[test], names=names)


def _dataset(
    path: Path,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    names: Sequence[str] | None,
) -> Dataset:
    top = int(max(y_train.max(), y_test.max()))
    classes = len(names) if names is not None else top + 1
    if classes > MAX_CLASSES:
        raise LearnError(
            f"{path}: a label of {top}: labels are class numbers 0..C-1 with C at most "
            f"{MAX_CLASSES}"
        )
    if classes < 2:
        raise LearnError(f"{path}: a classifier needs at least 2 classes, found {classes}")
    return finish_dataset(
        path.name,
        x_train,
        y_train,
        x_test,
        y_test,
        num_classes=classes,
        class_names=None if names is None else tuple(names),
    )


# --- CSV ---------------------------------------------------------------------------------------


def _read_csv(
    path: Path, label_column: int | str, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        # utf-8-sig: spreadsheets often begin the file with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            # (line number in the file, fields), blank lines skipped
            rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LearnError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise LearnError(f"{path}: the CSV file has no rows")
    header: list[str] | None = None
    first = rows[0][1]
    if isinstance(label_column, str) or not all(
        _is_number(c) for j, c in enumerate(first) if j != _at(label_column, len(first))
    ):
        header, rows = [c.strip() for c in first], rows[1:]
    if not rows:
        raise LearnError(f"{path}: the CSV file has a header and no data")
    width = len(rows[0][1]) if header is None else len(header)
    col = _label_index(path, label_column, header, width)
    x = np.empty((len(rows), width - 1), dtype=np.float32)
    labels: list[str] = []
    for i, (line, row) in enumerate(rows):
        if len(row) != width:
            raise LearnError(f"{path}: line {line} has {len(row)} fields, expected {width}")
        labels.append(row[col].strip())
        for j, cell in enumerate(row[:col] + row[col + 1 :]):
            try:
                x[i, j] = float(cell)
            except ValueError:
                raise LearnError(
                    f"{path}: line {line}, column {j + (j >= col) + 1}: {cell.strip()!r} is not "
                    "a number"
                ) from None
    if not np.isfinite(x).all():
        raise LearnError(f"{path}: the features hold NaN or infinite values")
    if all(_is_int(v) for v in labels):
        y = np.array([int(float(v)) for v in labels], dtype=np.int64)
        if y.min() < 0:
            raise LearnError(f"{path}: labels must be 0 or more, found {int(y.min())}")
        return x, y, None
    names = _numbered(path, sorted(set(labels)), classes)
    index = {name: k for k, name in enumerate(names)}
    return x, np.array([index[v] for v in labels], dtype=np.int64), names


def _numbered(path: Path, found: list[str], classes: Sequence[str] | None) -> list[str]:
    """The class list that numbers ``found``: ``classes`` when given (all found must be in it),
    else the names found, sorted."""
    if classes is None:
        return found
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise LearnError(f"{path}: classes {unknown} are not in data.classes {list(classes)}")
    return list(classes)


def _at(label_column: int | str, width: int) -> int | None:
    """The label's index in a row of ``width`` fields (None when it is out of range)."""
    if isinstance(label_column, str) or not -width <= label_column < width:
        return None
    return label_column % width


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_int(cell: str) -> bool:
    try:
        value = float(cell)
    except ValueError:
        return False
    return math.isfinite(value) and value.is_integer()


def _label_index(path: Path, label_column: int | str, header: list[str] | None, width: int) -> int:
    if width < 2:
        raise LearnError(f"{path}: a row needs features and a label (at least 2 columns)")
    if isinstance(label_column, str):
        if header is None or label_column not in header:
            raise LearnError(
                f"{path}: no column named {label_column!r} (data.label_column); header: "
                f"{header or 'none'}"
            )
        return header.index(label_column)
    if not -width <= label_column < width:
        raise LearnError(f"{path}: label column {label_column} is outside the {width} columns")
    return label_column % width


# --- images ----------------------------------------------------------------------------------


def _image_folder(
    path: Path,
    *,
    seed: int,
    test_fraction: float,
    size: tuple[int, int] | None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    train_dir = path / "train"
    test_dir = next((path / name for name in TEST_SPLITS if (path / name).is_dir()), path / "test")
    if train_dir.is_dir() and test_dir.is_dir():
        names = _numbered(train_dir, _classes(train_dir), classes)
        train, test = _images(train_dir, names, size), _images(test_dir, names, size)
        grey = all(p.ndim == 2 for p, _, _ in train + test)
        x_tr, y_tr = _stack(train, grey)
        x_te, y_te = _stack(test, grey)
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise LearnError(
                f"{test_dir}: images of shape {x_te.shape[2:]}, the training ones "
                f"{x_tr.shape[2:]}; give data.image_size to resize them all"
            )
        return _dataset(path, x_tr, y_tr, x_te, y_te, names=names)
    names = _numbered(path, _classes(path), classes)
    pictures = _images(path, names, size)
    x, y = _stack(pictures, all(p.ndim == 2 for p, _, _ in pictures))
    return _split(path, x, y, names, seed=seed, test_fraction=test_fraction)


def _classes(root: Path) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise LearnError(
            f"{root}: an image folder needs one sub-folder per class (at least 2), found "
            f"{names or 'none'}"
        )
    return names


Picture = tuple[np.ndarray, int, Path]  # (H, W) grey or (H, W, 3) colour in [0, 1], label, file


def _images(root: Path, names: list[str], size: tuple[int, int] | None) -> list[Picture]:
    extra = sorted(
        p.name for p in root.iterdir() if p.is_dir() and p.name not in names and p.name[0] != "."
    )
    if extra:
        raise LearnError(f"{root}: classes {extra} are not among the training classes {names}")
    nested = [
        f"{name}/{p.name}"
        for name in names
        if (root / name).is_dir()
        for p in (root / name).iterdir()
        if p.is_dir() and not p.name.startswith(".")
    ]
    if nested:
        raise LearnError(
            f"{root}: class folders hold folders ({', '.join(sorted(nested)[:3])}): each class "
            "folder holds its images directly; a split goes in train/ and test/"
        )
    files = [
        (p, k)
        for k, name in enumerate(names)
        if (root / name).is_dir()
        for p in sorted((root / name).iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    ]
    if not files:
        raise LearnError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {names}")
    return [(_read_image(file, size), k, file) for file, k in files]


def _read_image(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image in [0, 1]: (H, W) when it is greyscale (8 or 16 bits), else (H, W, 3)."""
    from PIL import Image  # noqa: PLC0415 (only image folders need it)

    try:
        with Image.open(file) as opened:
            opened.load()
            im = opened if size is None else opened.resize((size[1], size[0]))
            if im.mode.startswith("I;16"):
                return np.asarray(im, dtype=np.float32) / 65535.0
            if im.mode in ("I", "F"):
                raise LearnError(f"{file}: {im.mode}-mode images (32-bit) are not supported")
            if im.mode in ("1", "L", "LA"):
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise LearnError(f"{file}: not a readable image ({exc})") from None


def _chw(p: np.ndarray, grey: bool) -> np.ndarray:
    if grey:
        return p[None]
    return np.repeat(p[None], 3, 0) if p.ndim == 2 else p.transpose(2, 0, 1)


def _stack(pictures: list[Picture], grey: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, H, W): one channel when ``grey``, else three (greyscale ones repeated)."""
    stacked: list[np.ndarray] = []
    for p, _, file in pictures:
        chw = _chw(p, grey)
        if stacked and chw.shape != stacked[0].shape:
            raise LearnError(
                f"{file}: image of shape {chw.shape[1:]}, the first was {stacked[0].shape[1:]}; "
                "give data.image_size to resize them all"
            )
        stacked.append(chw)
    return np.stack(stacked).astype(np.float32), np.array([k for _, k, _ in pictures])
