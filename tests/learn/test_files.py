"""A peer's own data from files: image folders, .npz, .pt and CSV, and what each refuses."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fltorrent.errors import LearnError
from fltorrent.learn.data import Dataset
from fltorrent.learn.files import check_own_data, read_files


def _save(path: Path, pixels: np.ndarray) -> Path:
    """Write ``pixels`` (H, W) greyscale or (H, W, 3) RGB, uint8 or uint16, as an image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _grey(value: int, *, ident: int = 0, shape: tuple[int, int] = (4, 6)) -> np.ndarray:
    """A flat grey image of ``value``; pixel (0, 0) holds ``ident`` so each sample is traceable."""
    pixels = np.full(shape, value, dtype=np.uint8)
    pixels[0, 0] = ident
    return pixels


def _conventions(ds: Dataset) -> None:
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.x_train.shape == (len(ds.y_train), *ds.input_shape)
    assert ds.x_test.shape == (len(ds.y_test), *ds.input_shape)


# --- image folders -----------------------------------------------------------------------------

# Created out of order on purpose: classes are numbered by the sorted folder names.
CLASS_VALUE = {"zebra": 30, "apple": 10, "mango": 20}


def _image_folder(root: Path, *, per_class: int = 5) -> Path:
    ident = 100
    for name, value in CLASS_VALUE.items():
        for i in range(per_class):
            _save(root / name / f"{i}.png", _grey(value, ident=ident))
            ident += 1
    return root


def test_image_folder_classes_split_and_values(tmp_path: Path) -> None:
    ds = read_files(_image_folder(tmp_path / "pics"), seed=3, test_fraction=0.2)
    _conventions(ds)
    assert ds.class_names == ("apple", "mango", "zebra")
    assert ds.num_classes == 3 and ds.input_shape == (1, 4, 6)  # greyscale: one channel
    assert (len(ds.y_train), len(ds.y_test)) == (12, 3)  # ceil(15 * 0.2) held out
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.min() >= 0.0 and x.max() <= 1.0
        # Each class's flat value says which folder it came from: label k is the k-th name.
        expected = np.array([CLASS_VALUE[ds.class_names[k]] for k in y]) / 255.0
        assert np.allclose(x[:, 0, 1, 1], expected)
    # Every sample lands in exactly one split.
    ids = np.round(np.concatenate([ds.x_train, ds.x_test])[:, 0, 0, 0] * 255).astype(int)
    assert sorted(ids) == list(range(100, 115))


def test_image_folder_split_is_seeded_and_deterministic(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pics")

    def held_out(seed: int) -> set[int]:
        ds = read_files(root, seed=seed, test_fraction=0.2)
        return {round(float(v) * 255) for v in ds.x_test[:, 0, 0, 0]}

    assert held_out(0) == held_out(0)
    assert held_out(0) != held_out(1)
    again = read_files(root, seed=7)
    other = read_files(root, seed=7)
    assert np.array_equal(again.x_train, other.x_train)
    assert np.array_equal(again.y_test, other.y_test)


def test_image_folder_rgb_and_mixed(tmp_path: Path) -> None:
    pixels = np.zeros((3, 5, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[..., 2] = 51
    for i in range(3):
        _save(tmp_path / "rgb" / "red" / f"{i}.png", pixels)
        _save(tmp_path / "rgb" / "dark" / f"{i}.bmp", np.zeros((3, 5, 3), np.uint8))
    ds = read_files(tmp_path / "rgb", test_fraction=0.5)
    assert ds.input_shape == (3, 3, 5)  # (C, H, W)
    red = np.concatenate([ds.x_train[ds.y_train == 1], ds.x_test[ds.y_test == 1]])
    assert ds.class_names == ("dark", "red")
    assert np.allclose(red[:, :, 2, 4], [1.0, 0.0, 0.2])
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0

    # One colour image makes the whole folder RGB; the greyscale ones are repeated 3 times.
    _save(tmp_path / "mixed" / "a" / "0.png", pixels)
    _save(tmp_path / "mixed" / "a" / "1.png", np.full((3, 5), 102, np.uint8))
    _save(tmp_path / "mixed" / "b" / "0.png", np.full((3, 5), 102, np.uint8))
    mixed = read_files(tmp_path / "mixed", test_fraction=0.4)
    assert mixed.input_shape == (3, 3, 5)
    x = np.concatenate([mixed.x_train, mixed.x_test])
    grey = x[np.isclose(x[:, 0, 0, 0], 0.4)]
    assert len(grey) == 2 and np.allclose(grey, 0.4)


def test_train_and_test_folders(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split, n in (("train", 4), ("test", 2)):
        for name, value in (("dog", 200), ("cat", 100)):
            for i in range(n):
                _save(root / split / name / f"{i}.png", _grey(value))
    ds = read_files(root, test_fraction=0.9)  # the folders' split wins over test_fraction
    _conventions(ds)
    assert ds.class_names == ("cat", "dog")
    assert (len(ds.y_train), len(ds.y_test)) == (8, 4)
    assert np.array_equal(np.bincount(ds.y_test), [2, 2])
    assert np.allclose(ds.x_test[ds.y_test == 1][:, 0, 1, 1], 200 / 255)

    _save(root / "test" / "bird" / "0.png", _grey(50))
    with pytest.raises(LearnError, match=r"test: classes \['bird'\] are not among the training"):
        read_files(root)


def test_train_test_folders_of_different_sizes_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("a", "b"):
        _save(root / "train" / name / "0.png", _grey(1, shape=(4, 4)))
        _save(root / "test" / name / "0.png", _grey(1, shape=(5, 5)))
    with pytest.raises(
        LearnError, match=r"test: images of shape \(5, 5\), the training ones \(4, 4\)"
    ):
        read_files(root)
    assert read_files(root, image_size=(3, 3)).x_test.shape == (2, 1, 3, 3)


def test_images_of_different_sizes_need_image_size(tmp_path: Path) -> None:
    root = tmp_path / "pics"
    for i in range(3):
        _save(root / "a" / f"{i}.png", _grey(10, shape=(4, 6)))
    odd = _save(root / "b" / "odd.png", _grey(20, shape=(7, 7)))
    _save(root / "b" / "x.png", _grey(20, shape=(4, 6)))
    with pytest.raises(LearnError, match=re.escape(str(odd)) + r".*data\.image_size"):
        read_files(root)
    ds = read_files(root, image_size=(6, 4))  # (height, width)
    assert ds.input_shape == (1, 6, 4)
    assert len(ds.y_train) + len(ds.y_test) == 5


def test_unreadable_image_named(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "pics", per_class=2)
    bad = root / "mango" / "broken.png"
    bad.write_bytes(b"this is not a PNG")
    with pytest.raises(LearnError, match=re.escape(str(bad)) + ": not a readable image"):
        read_files(root)
    bad.write_bytes(_save(tmp_path / "ok.png", _grey(1, shape=(30, 30))).read_bytes()[:60])
    with pytest.raises(LearnError, match=re.escape(str(bad)) + ": not a readable image"):
        read_files(root)


def test_image_folder_needs_two_classes_and_images(tmp_path: Path) -> None:
    _save(tmp_path / "one" / "only" / "0.png", _grey(1))
    with pytest.raises(LearnError, match="at least 2"):
        read_files(tmp_path / "one")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    (tmp_path / "empty" / "b" / "notes.txt").write_text("no pictures here")
    with pytest.raises(LearnError, match="no images"):
        read_files(tmp_path / "empty")


def test_sixteen_bit_greyscale_stays_one_channel(tmp_path: Path) -> None:
    for name in ("a", "b"):
        for i in range(2):
            _save(
                tmp_path / "deep" / name / f"{i}.png",
                np.array([[0, 1000, 30000, 65535]], np.uint16),
            )
    ds = read_files(tmp_path / "deep", test_fraction=0.25)
    assert ds.input_shape == (1, 1, 4)
    assert len(np.unique(ds.x_train[0])) == 4  # distinct levels stay distinct


def test_rgb_train_with_greyscale_test(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in ("a", "b"):
        _save(root / "train" / name / "0.png", np.full((4, 4, 3), 60, np.uint8))
        _save(root / "train" / name / "1.png", np.full((4, 4), 60, np.uint8))
        _save(root / "test" / name / "0.png", np.full((4, 4), 60, np.uint8))
    ds = read_files(root)
    assert ds.x_test.shape == (2, 3, 4, 4)


# --- .npz and .pt ------------------------------------------------------------------------------


def test_npz_x_y_is_split(tmp_path: Path) -> None:
    x = np.arange(40, dtype=np.float64).reshape(10, 2, 2)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], dtype=np.int32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = read_files(tmp_path / "d.npz", test_fraction=0.3, seed=1)
    _conventions(ds)
    assert (len(ds.y_train), len(ds.y_test)) == (7, 3)
    assert ds.num_classes == 3 and ds.input_shape == (2, 2) and ds.class_names is None
    # Rows stay paired with their labels.
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        rows = (xs[:, 0, 0] / 4).astype(int)
        assert np.array_equal(ys, y[rows])
    again = read_files(tmp_path / "d.npz", test_fraction=0.3, seed=1)
    assert np.array_equal(again.x_test, ds.x_test)


def test_npz_with_its_own_split(tmp_path: Path) -> None:
    x_train = np.random.default_rng(0).random((6, 3)).astype(np.float32)
    x_test = np.ones((2, 3), np.float32)
    np.savez(
        tmp_path / "d.npz",
        x_train=x_train,
        y_train=np.array([0, 1, 2, 3, 0, 1]),
        x_test=x_test,
        y_test=np.array([4, 0]),
    )
    ds = read_files(tmp_path / "d.npz", test_fraction=0.5)
    assert np.array_equal(ds.x_train, x_train) and np.array_equal(ds.x_test, x_test)
    assert ds.num_classes == 5  # the largest label of either split, plus one
    assert ds.y_test.tolist() == [4, 0]

    np.savez(
        tmp_path / "bad.npz",
        x_train=x_train,
        y_train=np.zeros(6),
        x_test=x_test[:, :2],
        y_test=np.zeros(2),
    )
    with pytest.raises(LearnError, match=r"bad\.npz: train inputs \(3,\) and test inputs \(2,\)"):
        read_files(tmp_path / "bad.npz")


def test_npz_needing_pickle_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, [2]], dtype=object), y=np.array([0, 1]))
    with pytest.raises(LearnError, match=re.escape(str(path)) + ": not a readable .npz"):
        read_files(path)
    np.savez(tmp_path / "keys.npz", inputs=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(LearnError, match=r"expected arrays 'x' and 'y'.*\['inputs', 'labels'\]"):
        read_files(tmp_path / "keys.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(LearnError, match=r"junk\.npz: not a readable \.npz"):
        read_files(tmp_path / "junk.npz")


def test_pt_dict_and_pair(tmp_path: Path) -> None:
    x = torch.arange(24, dtype=torch.float32).reshape(8, 3)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    torch.save((x, y), tmp_path / "pair.pth")
    a = read_files(tmp_path / "d.pt", seed=2, test_fraction=0.25)
    b = read_files(tmp_path / "pair.pth", seed=2, test_fraction=0.25)
    _conventions(a)
    assert a.input_shape == (3,) and a.num_classes == 2
    assert (len(a.y_train), len(a.y_test)) == (6, 2)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert np.array_equal(a.y_train, (a.x_train[:, 0] / 3).astype(int) % 2)

    torch.save(
        {"x_train": x, "y_train": y, "x_test": x[:2], "y_test": y[:2]}, tmp_path / "split.pt"
    )
    s = read_files(tmp_path / "split.pt")
    assert np.array_equal(s.x_test, x[:2].numpy()) and len(s.y_train) == 8

    torch.save(x, tmp_path / "tensor.pt")
    with pytest.raises(LearnError, match="holds a Tensor; expected a dict of tensors or"):
        read_files(tmp_path / "tensor.pt")


class _Payload:
    """Unpickling this runs a shell command: what a hostile .pt file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _Custom:
    def __init__(self) -> None:
        self.x = [1.0, 2.0]


def test_pt_with_arbitrary_objects_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save(_Payload(marker), path)
    with pytest.raises(LearnError, match=re.escape(str(path)) + ": not a readable .pt file"):
        read_files(path)
    assert not marker.exists()

    torch.save({"x": _Custom(), "y": torch.zeros(2)}, tmp_path / "custom.pt")
    with pytest.raises(LearnError, match=r"custom\.pt: not a readable \.pt file"):
        read_files(tmp_path / "custom.pt")


def test_pt_dict_with_mixed_key_types_refused(tmp_path: Path) -> None:
    torch.save({0: torch.zeros(3), "a": torch.zeros(3)}, tmp_path / "keys.pt")
    with pytest.raises(LearnError, match="expected arrays 'x' and 'y'"):
        read_files(tmp_path / "keys.pt")


@pytest.mark.parametrize(
    ("y", "match"),
    [
        ([0, 1, -1, 1], "labels must be 0 or more, found -1"),
        ([0, 1.5, 1, 0], "labels must be integer class indices"),
        ([0, np.nan, 1, 0], "labels must be integer class indices"),
        ([0, 1, 0], r"4 inputs but labels of shape \(3,\)"),
        ([[0, 1], [1, 0], [0, 1], [1, 0]], r"labels of shape \(4, 2\)"),
        (["a", "b", "a", "b"], "labels must be integer class indices"),
    ],
)
def test_bad_labels_refused(tmp_path: Path, y: list[object], match: str) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.array(y))
    with pytest.raises(LearnError, match=match):
        read_files(tmp_path / "d.npz")
    torch.save({"x": torch.zeros(4, 2), "y": y}, tmp_path / "d.pt")  # a plain list is allowed
    with pytest.raises(LearnError, match=match):
        read_files(tmp_path / "d.pt")


def test_bad_inputs_refused(tmp_path: Path) -> None:
    cases: list[tuple[np.ndarray, str]] = [
        (np.array([[0.0, np.inf]] * 4), "NaN or infinite"),
        (np.array([["a", "b"]] * 4), "not numbers"),
        (np.zeros((0, 2)), "inputs are empty"),
    ]
    for x, match in cases:
        np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1])[: len(x)])
        with pytest.raises(LearnError, match=match):
            read_files(tmp_path / "d.npz")
    np.savez(tmp_path / "one.npz", x=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(LearnError, match="at least 2 classes, found 1"):
        read_files(tmp_path / "one.npz")
    np.savez(tmp_path / "ok.npz", x=np.zeros((2, 2)), y=np.array([0, 1]))
    with pytest.raises(LearnError, match="test_fraction must be between 0 and 1"):
        read_files(tmp_path / "ok.npz", test_fraction=1.0)
    with pytest.raises(LearnError, match="too few for a train and a test split"):
        read_files(tmp_path / "ok.npz", test_fraction=0.6)


# --- CSV ---------------------------------------------------------------------------------------


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_without_header_label_last(tmp_path: Path) -> None:
    rows = [[float(i), float(10 * i), i % 3] for i in range(10)]
    path = _csv(tmp_path / "d.csv", "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    ds = read_files(path, test_fraction=0.2)
    _conventions(ds)
    assert ds.input_shape == (2,) and ds.num_classes == 3 and ds.class_names is None
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert len(y) == 10  # no row taken for a header
    assert np.array_equal(x[:, 1], 10 * x[:, 0])
    assert np.array_equal(y, x[:, 0].astype(int) % 3)


def test_csv_header_and_label_column_by_name(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "d.csv",
        "width,species,height\n1.5,2,3\n2.5,0,4\n3.5,1,5\n4.5,2,6\n5.5,0,7\n",
    )
    ds = read_files(path, label_column="species", test_fraction=0.2)
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert x.shape == (5, 2)  # the label column is not a feature
    assert np.array_equal(x[:, 1], x[:, 0] + 1.5)
    assert dict(zip(x[:, 0].tolist(), y.tolist(), strict=True)) == {
        1.5: 2,
        2.5: 0,
        3.5: 1,
        4.5: 2,
        5.5: 0,
    }
    # The same column by index.
    by_index = read_files(path, label_column=1, test_fraction=0.2)
    assert np.array_equal(by_index.y_train, ds.y_train)
    with pytest.raises(LearnError, match=r"no column named 'kind' \(data.label_column\)"):
        read_files(path, label_column="kind")
    with pytest.raises(LearnError, match="label column 3 is outside the 3 columns"):
        read_files(path, label_column=3)


def test_csv_string_labels_are_sorted_class_names(tmp_path: Path) -> None:
    path = _csv(
        tmp_path / "d.csv",
        "a,b,kind\n1,1,virginica\n2,2,setosa\n3,3,versicolor\n4,4,setosa\n5,5,virginica\n",
    )
    ds = read_files(path, test_fraction=0.2)
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    assert ds.num_classes == 3
    x = np.concatenate([ds.x_train, ds.x_test])[:, 0].astype(int).tolist()
    y = np.concatenate([ds.y_train, ds.y_test]).tolist()
    assert dict(zip(x, y, strict=True)) == {1: 2, 2: 0, 3: 1, 4: 0, 5: 2}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2,0\n3,4,1\n5,oops,0\n", r"line 3, column 2: 'oops' is not a number"),
        ("f,g,h\n1,2,0\n3,4,1\nx,4,1\n", r"line 4, column 1: 'x' is not a number"),
        ("1,2,0\n3,4\n5,6,0\n", "line 2 has 2 fields, expected 3"),
        ("1,2,0\n3,nan,1\n5,6,0\n", "features hold NaN or infinite values"),
        ("1,2,0\n3,4,-2\n5,6,0\n", "labels must be 0 or more, found -2"),
        ("1,0\n2,0\n3,0\n", "at least 2 classes, found 1"),
        ("a,b,c\n", "has a header and no data"),
        ("\n\n", "has no rows"),
        ("5\n6\n", "at least 2 columns"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, match: str) -> None:
    path = _csv(tmp_path / "d.csv", text)
    with pytest.raises(LearnError, match=re.escape(str(path)) + ".*" + match):
        read_files(path)


def test_csv_label_column_first(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", "2,1.5\n0,2.5\n1,3.5\n2,4.5\n0,5.5\n")
    ds = read_files(path, label_column=0, test_fraction=0.2)
    x = np.concatenate([ds.x_train, ds.x_test])[:, 0].tolist()
    y = np.concatenate([ds.y_train, ds.y_test]).tolist()
    assert dict(zip(x, y, strict=True)) == {1.5: 2, 2.5: 0, 3.5: 1, 4.5: 2, 5.5: 0}
    bad = _csv(tmp_path / "bad.csv", "2,1.5,8\n0,2.5,x\n")
    with pytest.raises(LearnError, match="line 2, column 3: 'x' is not a number"):
        read_files(bad, label_column=0)


def test_csv_class_names_in_first_column_without_header(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", "cat,1,2\ndog,3,4\ncat,5,6\ndog,7,8\ncat,9,10\n")
    ds = read_files(path, label_column=0, test_fraction=0.2)
    assert len(ds.y_train) + len(ds.y_test) == 5


def test_csv_error_line_counts_blank_lines(tmp_path: Path) -> None:
    path = _csv(tmp_path / "d.csv", "1,2,0\n\n3,x,1\n4,5,0\n")
    with pytest.raises(LearnError, match="line 3, column 2"):
        read_files(path)


# --- check_own_data ----------------------------------------------------------------------------


def test_check_own_data(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.csv"
    with pytest.raises(LearnError, match=re.escape(str(missing)) + ": no such file or folder"):
        check_own_data(missing)
    with pytest.raises(LearnError, match=re.escape(str(missing))):
        read_files(missing)
    for name, shown in (("data.txt", "'.txt'"), ("data", "'(no suffix)'")):
        path = tmp_path / name
        path.write_text("1,2,0\n")
        with pytest.raises(
            LearnError, match=re.escape(f"{path}: unknown data format {shown}") + ".*npz"
        ):
            check_own_data(path)
    for name in ("d.CSV", "d.npz", "d.pt", "d.pth"):
        (tmp_path / name).write_bytes(b"")
        check_own_data(tmp_path / name)  # contents are checked on reading
    check_own_data(tmp_path)  # a folder


# --- what a careless or hostile file holds -------------------------------------------------


def test_broken_npz_and_pt_files_are_errors_not_tracebacks(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((8, 3), np.float32), y=np.arange(8) % 2)
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:40])
    one = tmp_path / "one.npz"
    with one.open("wb") as f:
        np.save(f, np.zeros(3))  # a .npy under a .npz name
    for name in ("cut.npz", "one.npz"):
        with pytest.raises(LearnError, match=rf"{name}: not a readable \.npz file"):
            read_files(tmp_path / name)
    # bfloat16 and sparse tensors are converted, not a TypeError deep in numpy
    x = torch.randn(8, 3)
    torch.save({"x": x.to(torch.bfloat16), "y": torch.arange(8) % 2}, tmp_path / "bf.pt")
    torch.save({"x": x.to_sparse(), "y": torch.arange(8) % 2}, tmp_path / "sparse.pt")
    assert read_files(tmp_path / "bf.pt").input_shape == (3,)
    sparse = read_files(tmp_path / "sparse.pt", test_fraction=0.25)
    assert np.allclose(
        np.sort(np.concatenate([sparse.x_train, sparse.x_test]).ravel()), np.sort(x.numpy().ravel())
    )


def test_absurd_label_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 10**18]))
    with pytest.raises(LearnError, match="a label of 1000000000000000000"):
        read_files(tmp_path / "d.npz")


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    body = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(10))
    (tmp_path / "plain.csv").write_bytes(("\ufeff" + body).encode())
    assert len(read_files(tmp_path / "plain.csv", test_fraction=0.2).y_train) == 8  # all 10 rows
    (tmp_path / "named.csv").write_bytes(("\ufefflabel,a,b\n" + body).encode())
    ds = read_files(tmp_path / "named.csv", label_column="label", test_fraction=0.2)
    assert ds.input_shape == (2,)


def test_classes_list_numbers_every_peers_classes_alike(tmp_path: Path) -> None:
    # Peer 1 has cat and dog, peer 2 dog and fish: with the federation's list, dog is 1 on both.
    classes = ["cat", "dog", "fish"]
    one = _csv(tmp_path / "p1.csv", "".join(f"{i},{['cat', 'dog'][i % 2]}\n" for i in range(10)))
    two = _csv(tmp_path / "p2.csv", "".join(f"{i},{['dog', 'fish'][i % 2]}\n" for i in range(10)))
    a = read_files(one, classes=classes, test_fraction=0.2)
    b = read_files(two, classes=classes, test_fraction=0.2)
    assert a.class_names == b.class_names == tuple(classes) and a.num_classes == 3
    assert set(np.concatenate([a.y_train, a.y_test]).tolist()) == {0, 1}
    assert set(np.concatenate([b.y_train, b.y_test]).tolist()) == {1, 2}
    with pytest.raises(LearnError, match=r"classes \['fish'\] are not in data.classes"):
        read_files(two, classes=["cat", "dog"])
    pics = _image_folder(tmp_path / "pics")  # apple, mango, zebra
    ds = read_files(pics, classes=["zebra", "mango", "apple", "pear"], test_fraction=0.2)
    assert ds.num_classes == 4
    label_of = {30: 0, 20: 1, 10: 2}  # the folders' grey values, numbered by the list
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for sample, label in zip(x, y, strict=True):
            assert label_of[round(float(sample[0, 1, 1]) * 255)] == label


def test_val_split_and_nested_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "imagenet_style"
    for split, per in (("train", 3), ("val", 2)):
        for name, value in (("cat", 10), ("dog", 20)):
            for i in range(per):
                _save(root / split / name / f"{i}.png", _grey(value))
    ds = read_files(root)
    assert ds.class_names == ("cat", "dog") and (len(ds.y_train), len(ds.y_test)) == (6, 4)
    nested = tmp_path / "nested"
    for name in ("cat", "dog"):
        _save(nested / name / "more" / "0.png", _grey(5))
        _save(nested / name / "0.png", _grey(5))
    with pytest.raises(LearnError, match="class folders hold folders"):
        read_files(nested)


def test_home_in_a_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2)
    check_own_data(Path("~/d.npz"))
    assert read_files(Path("~/d.npz")).num_classes == 2
