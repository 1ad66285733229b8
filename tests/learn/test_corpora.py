"""Local copies of CIFAR-10, EMNIST and FEMNIST: the on-disk formats, the stand-ins written in
them, what the loaders refuse, and the natural partition over FEMNIST's writers."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from fltorrent.errors import LearnError
from fltorrent.learn import partition
from fltorrent.learn.corpora import CIFAR_TEST, CIFAR_TRAIN, load_corpus
from fltorrent.learn.standins import write_cifar10, write_emnist, write_femnist

# --- CIFAR-10 ----------------------------------------------------------------------------------


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A pickled batch read with the plain (trusting) unpickler: our own files only."""
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    return batch[b"data"].reshape(-1, 3, 32, 32), np.asarray(batch[b"labels"], dtype=np.int64)


def _standin_batches(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The stand-in's batches: (name, uint8 images (n, 3, 32, 32), labels), tests last."""
    folder = write_cifar10(root, train=50, test=20, seed=4)
    return [(name, *_read_batch(folder / name)) for name in (*CIFAR_TRAIN, CIFAR_TEST)]


def _py2_pickle(x: np.ndarray, y: np.ndarray) -> bytes:
    """A batch pickled as the real CIFAR-10 files are (by Python 2, protocol 2): byte strings
    as BINSTRING, the array through numpy.core.multiarray._reconstruct, labels a list."""

    def string(b: bytes) -> bytes:
        return pickle.BINSTRING + struct.pack("<i", len(b)) + b

    def integer(v: int) -> bytes:
        return pickle.BININT + struct.pack("<i", v)

    data = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.uint8)
    dtype = (
        pickle.GLOBAL + b"numpy\ndtype\n"
        + string(b"u1") + pickle.NEWFALSE + pickle.NEWTRUE + pickle.TUPLE3 + pickle.REDUCE
        + pickle.MARK + integer(3) + string(b"|") + pickle.NONE * 3
        + integer(-1) + integer(-1) + integer(0) + pickle.TUPLE + pickle.BUILD
    )  # fmt: skip
    array = (
        pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n"
        + pickle.GLOBAL + b"numpy\nndarray\n"
        + integer(0) + pickle.TUPLE1 + string(b"b") + pickle.TUPLE3 + pickle.REDUCE
        + pickle.MARK + integer(1) + integer(data.shape[0]) + integer(data.shape[1])
        + pickle.TUPLE2 + dtype + pickle.NEWFALSE + string(data.tobytes()) + pickle.TUPLE
        + pickle.BUILD
    )  # fmt: skip
    labels = pickle.EMPTY_LIST + pickle.MARK + b"".join(integer(int(v)) for v in y)
    return (
        pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK
        + string(b"batch_label") + string(b"training batch 1 of 5")
        + string(b"data") + array
        + string(b"labels") + labels + pickle.APPENDS
        + pickle.SETITEMS + pickle.STOP
    )  # fmt: skip


def _write_python(root: Path, batches: list[tuple[str, np.ndarray, np.ndarray]]) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, x, y in batches:
        (folder / name).write_bytes(_py2_pickle(x, y))
    return folder


def _write_binary(root: Path, batches: list[tuple[str, np.ndarray, np.ndarray]]) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, x, y in batches:
        records = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1)
        assert records.shape[1] == 3073
        (folder / f"{name}.bin").write_bytes(records.astype(np.uint8).tobytes())
    return folder


def test_py2_pickle_helper_matches_the_standin(tmp_path: Path) -> None:
    # The hand-written pickle must hold what it was given (checked with the plain unpickler).
    batches = _standin_batches(tmp_path / "standin")
    name, x, y = batches[0]
    path = tmp_path / name
    path.write_bytes(_py2_pickle(x, y))
    assert b"_codecs" not in path.read_bytes()  # unlike a protocol-2 pickle from Python 3
    got_x, got_y = _read_batch(path)
    assert np.array_equal(got_x, x) and np.array_equal(got_y, y)
    assert sum(len(b[2]) for b in batches[:5]) == 50 and len(batches[5][2]) == 20


def test_cifar10_standin_loads(tmp_path: Path) -> None:
    # write_cifar10 pickles with protocol 2 under Python 3, so bytes go through _codecs.encode.
    folder = write_cifar10(tmp_path, train=50, test=20, seed=4)
    assert folder == tmp_path / "cifar-10-batches-py"
    ds = load_corpus("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.input_shape == (3, 32, 32) and ds.x_train.dtype == np.float32
    assert (len(ds.y_train), len(ds.y_test)) == (50, 20)
    assert ds.y_train.min() >= 0 and ds.y_train.max() <= 9
    assert np.allclose(ds.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    assert np.allclose(ds.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    assert np.array_equal(ds.y_test, _read_batch(folder / CIFAR_TEST)[1])
    assert len(np.unique(ds.x_train.reshape(50, -1), axis=0)) == 50  # not one repeated image


def test_cifar10_python_batches(tmp_path: Path) -> None:
    batches = _standin_batches(tmp_path / "standin")
    _write_python(tmp_path / "copy", batches)
    ds = load_corpus("cifar10", tmp_path / "copy")
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.input_shape == (3, 32, 32) and ds.x_train.dtype == np.float32
    assert (len(ds.y_train), len(ds.y_test)) == (50, 20)
    assert np.array_equal(ds.y_train, np.concatenate([b[2] for b in batches[:5]]))
    assert np.array_equal(ds.y_test, batches[5][2])
    # Normalised per channel with the training set's statistics.
    assert np.allclose(ds.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    assert np.allclose(ds.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-3)
    raw_train = np.concatenate([b[1] for b in batches[:5]]).astype(np.float64) / 255
    mean = raw_train.mean(axis=(0, 2, 3), keepdims=True)
    std = raw_train.std(axis=(0, 2, 3), keepdims=True)
    expected_test = (batches[5][1].astype(np.float64) / 255 - mean) / std
    assert np.allclose(ds.x_test, expected_test, atol=1e-4)
    assert abs(float(ds.x_test.mean())) > 1e-6  # the test set is not normalised on its own


def test_cifar10_binary_matches_python(tmp_path: Path) -> None:
    batches = _standin_batches(tmp_path / "standin")
    _write_python(tmp_path / "py", batches)
    folder = _write_binary(tmp_path / "bin", batches)
    from_py = load_corpus("cifar10", tmp_path / "py")
    from_bin = load_corpus("cifar10", tmp_path / "bin")
    for a, b in (
        (from_py.x_train, from_bin.x_train),
        (from_py.y_train, from_bin.y_train),
        (from_py.x_test, from_bin.x_test),
        (from_py.y_test, from_bin.y_test),
    ):
        assert np.array_equal(a, b)
    # root may be the batches folder itself.
    direct = load_corpus("cifar10", folder)
    assert np.array_equal(direct.x_test, from_bin.x_test)
    direct_py = load_corpus("cifar10", tmp_path / "py" / "cifar-10-batches-py")
    assert np.array_equal(direct_py.y_train, from_py.y_train)


def test_cifar10_binary_refuses_partial_records_and_bad_labels(tmp_path: Path) -> None:
    batches = _standin_batches(tmp_path / "standin")
    folder = _write_binary(tmp_path / "bin", batches)
    test_file = folder / "test_batch.bin"
    whole = test_file.read_bytes()
    test_file.write_bytes(whole[:-1])
    with pytest.raises(LearnError, match=re.escape(str(test_file)) + " is not whole 3073-byte"):
        load_corpus("cifar10", tmp_path / "bin")
    bad = bytearray(whole)
    bad[0] = 10  # the first record's label
    test_file.write_bytes(bytes(bad))
    with pytest.raises(LearnError, match=r"test_batch\.bin has labels outside 0-9"):
        load_corpus("cifar10", tmp_path / "bin")


def test_cifar10_missing_copy(tmp_path: Path) -> None:
    missing = r"no cifar-10-batches-py or cifar-10-batches-bin.*torchvision\.datasets\.CIFAR10"
    with pytest.raises(LearnError, match=missing):
        load_corpus("cifar10", tmp_path)
    with pytest.raises(LearnError, match="is not a folder"):
        load_corpus("cifar10", tmp_path / "absent")
    # A test batch without its training batches.
    batches = _standin_batches(tmp_path / "standin")
    folder = _write_binary(tmp_path / "bin", batches)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(LearnError, match=r"data_batch_3\.bin"):
        load_corpus("cifar10", tmp_path / "bin")
    with pytest.raises(LearnError, match="unknown dataset 'cifar100'; local datasets: cifar10"):
        load_corpus("cifar100", tmp_path)


class _Shell:
    """Unpickling this runs a shell command: what a hostile batch file would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_cifar10_malicious_pickle_refused_not_executed(tmp_path: Path) -> None:
    batches = _standin_batches(tmp_path / "standin")
    folder = _write_python(tmp_path / "copy", batches)
    marker = tmp_path / "MARKER"
    (folder / CIFAR_TEST).write_bytes(pickle.dumps(_Shell(f"touch {marker}"), protocol=2))
    with pytest.raises(
        LearnError, match=r"test_batch is not a CIFAR-10 batch \(UnpicklingError: global .*system"
    ):
        load_corpus("cifar10", tmp_path / "copy")
    assert not marker.exists()
    # Hidden inside a dict beside the real keys, it is refused all the same.
    (folder / CIFAR_TEST).write_bytes(
        pickle.dumps({b"data": _Shell(f"touch {marker}"), b"labels": [0]}, protocol=4)
    )
    with pytest.raises(LearnError, match="not allowed in a CIFAR batch"):
        load_corpus("cifar10", tmp_path / "copy")
    assert not marker.exists()


def test_cifar10_malformed_python_batches(tmp_path: Path) -> None:
    batches = _standin_batches(tmp_path / "standin")
    folder = _write_python(tmp_path / "copy", batches)
    cases: list[tuple[bytes, str]] = [
        (pickle.dumps([1, 2, 3], protocol=4), "a batch is a dict, got list"),
        (pickle.dumps({"data": [0] * 3072}, protocol=4), "no 'labels' in the batch"),
        (b"\x80\x02", "is not a CIFAR-10 batch"),  # truncated
        (_py2_pickle(batches[5][1], batches[5][2][:-1]), "has 20 images and 19 labels"),
    ]
    for content, match in cases:
        (folder / CIFAR_TEST).write_bytes(content)
        with pytest.raises(LearnError, match=match):
            load_corpus("cifar10", tmp_path / "copy")


def test_cifar10_arrays_are_rebuilt_from_plain_bytes_only(tmp_path: Path) -> None:
    # numpy's own unpickling of a crafted dtype can write out of bounds (a crash of the whole
    # process): arrays are rebuilt from their bytes, and only of plain number types.
    batches = _standin_batches(tmp_path / "standin")
    folder = _write_python(tmp_path / "copy", batches)
    structured = np.zeros(4, dtype=[("a", "u1"), ("b", "<i8")])
    cases: list[tuple[object, str]] = [
        ({b"data": structured, b"labels": [0] * 4}, "unsupported type"),
        ({b"data": np.array([b"x"] * 4, dtype=object), b"labels": [0] * 4}, "not plain numbers"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [2**70]}, "OverflowError"),
        ({b"data": [[300] * 3072], b"labels": [0]}, "OverflowError"),
    ]
    for batch, match in cases:
        (folder / CIFAR_TEST).write_bytes(pickle.dumps(batch, protocol=2))
        with pytest.raises(LearnError, match=match):
            load_corpus("cifar10", tmp_path / "copy")
    # A big-endian int64 label array is a plain type: it loads.
    x, y = batches[5][1], batches[5][2]
    (folder / CIFAR_TEST).write_bytes(
        pickle.dumps({b"data": x.reshape(len(x), -1), b"labels": y.astype(">i8")}, protocol=4)
    )
    ds = load_corpus("cifar10", tmp_path / "copy")
    assert ds.y_test.tolist() == y.tolist()


# --- EMNIST ------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = (0x800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _read_idx_gz(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.parametrize(("split", "classes", "low"), [("balanced", 47, 0), ("letters", 27, 1)])
def test_emnist_standin(tmp_path: Path, split: str, classes: int, low: int) -> None:
    raw = write_emnist(tmp_path, split=split, train=60, test=15, seed=2)
    assert raw == tmp_path / "EMNIST" / "raw"
    ds = load_corpus("emnist", tmp_path, emnist_split=split)
    assert ds.name == f"emnist-{split}" and ds.num_classes == classes
    assert ds.input_shape == (1, 28, 28) and ds.x_train.dtype == np.float32
    assert (len(ds.y_train), len(ds.y_test)) == (60, 15)
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0 and ds.x_train.max() > 0.5
    assert ds.y_train.min() >= low and ds.y_train.max() < classes
    # The files hold the images transposed (as EMNIST's do); the loader turns them upright.
    stored = _read_idx_gz(raw / f"emnist-{split}-train-images-idx3-ubyte.gz")
    labels = _read_idx_gz(raw / f"emnist-{split}-test-labels-idx1-ubyte.gz")
    assert np.allclose(ds.x_train[:, 0], stored.transpose(0, 2, 1) / 255.0)
    assert not np.allclose(ds.x_train[:, 0], stored / 255.0)
    assert np.array_equal(ds.y_test, labels)


def _write_emnist_raw(
    raw: Path, split: str, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for which in ("train", "test"):
        (raw / f"emnist-{split}-{which}-images-idx3-ubyte").write_bytes(_idx_bytes(images[which]))
        (raw / f"emnist-{split}-{which}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels[which]))


def test_emnist_orientation_with_own_idx_files(tmp_path: Path) -> None:
    upright = np.zeros((28, 28), np.uint8)
    upright[0, :10] = 255  # a bar along the top row, from the left
    upright[27, 27] = 51  # and a dot in the bottom-right corner
    stored = np.stack([upright.T, upright.T])  # EMNIST stores each image transposed
    _write_emnist_raw(
        tmp_path,  # root may be the raw folder itself; files need not be gzipped
        "digits",
        {"train": stored, "test": stored[:1]},
        {"train": np.array([3, 9]), "test": np.array([9])},
    )
    ds = load_corpus("emnist", tmp_path, emnist_split="digits")
    assert ds.num_classes == 10 and ds.y_train.tolist() == [3, 9]
    image = ds.x_train[0, 0]
    assert np.array_equal(image[0, :10], np.ones(10, np.float32))
    assert image[1:, 0].max() == 0.0  # not a bar down the left column
    assert image[27, 27] == pytest.approx(0.2)
    assert np.array_equal(ds.x_test[0, 0], image)


def test_emnist_bad_files_refused(tmp_path: Path) -> None:
    raw = write_emnist(tmp_path, split="digits", train=20, test=5)
    gz = raw / "emnist-digits-test-images-idx3-ubyte.gz"
    whole = gzip.decompress(gz.read_bytes())
    gz.write_bytes(gzip.compress(whole[:-100]))  # truncated
    with pytest.raises(
        LearnError, match=re.escape(str(gz)) + r" holds 3820 bytes, its header \[5, 28, 28\]"
    ):
        load_corpus("emnist", tmp_path, emnist_split="digits")
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + whole[4:]))  # a labels magic on images
    with pytest.raises(LearnError, match="is not an IDX file of 3 dimension"):
        load_corpus("emnist", tmp_path, emnist_split="digits")
    gz.write_bytes(gzip.compress(whole)[:-20])  # a cut gzip stream
    with pytest.raises(LearnError, match=re.escape(f"cannot read {gz}")):
        load_corpus("emnist", tmp_path, emnist_split="digits")
    gz.write_bytes(gzip.compress(whole))
    labels = raw / "emnist-digits-train-labels-idx1-ubyte.gz"
    n = len(_read_idx_gz(labels))
    labels.write_bytes(gzip.compress(_idx_bytes(np.full(n, 10))))
    with pytest.raises(LearnError, match="train labels go past the digits split's classes"):
        load_corpus("emnist", tmp_path, emnist_split="digits")
    labels.write_bytes(gzip.compress(_idx_bytes(np.zeros(n - 1))))
    with pytest.raises(LearnError, match=f"train: {n} images, {n - 1} labels"):
        load_corpus("emnist", tmp_path, emnist_split="digits")


def test_emnist_missing_and_unknown_split(tmp_path: Path) -> None:
    missing = (
        r"no emnist-balanced-train-images-idx3-ubyte \(or \.gz\).*torchvision\.datasets\.EMNIST"
    )
    with pytest.raises(LearnError, match=missing):
        load_corpus("emnist", tmp_path)
    write_emnist(tmp_path, split="letters", train=10, test=5)
    with pytest.raises(LearnError, match="no emnist-balanced-train"):
        load_corpus("emnist", tmp_path)  # another split is there, not this one
    with pytest.raises(LearnError, match="unknown split 'bogus'; known: byclass"):
        load_corpus("emnist", tmp_path, emnist_split="bogus")


def test_emnist_empty_split_refused(tmp_path: Path) -> None:
    _write_emnist_raw(
        tmp_path,
        "digits",
        {"train": np.zeros((3, 28, 28)), "test": np.zeros((0, 28, 28))},
        {"train": np.array([0, 1, 2]), "test": np.zeros(0)},
    )
    with pytest.raises(LearnError):
        load_corpus("emnist", tmp_path, emnist_split="digits")


def test_emnist_corrupt_gzip_refused(tmp_path: Path) -> None:
    raw = write_emnist(tmp_path, split="digits", train=10, test=5)
    gz = raw / "emnist-digits-test-images-idx3-ubyte.gz"
    # A valid gzip header, then a deflate block of the reserved type 3: "invalid block type".
    gz.write_bytes(bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]) + b"\x07" + bytes(8))
    with pytest.raises(LearnError, match=re.escape(str(gz))):
        load_corpus("emnist", tmp_path, emnist_split="digits")


# --- FEMNIST -----------------------------------------------------------------------------------


def test_femnist_standin_groups_and_natural_partition(tmp_path: Path) -> None:
    write_femnist(tmp_path, writers=10, per_writer=20, seed=1)
    ds = load_corpus("femnist", tmp_path)
    assert ds.name == "femnist" and ds.num_classes == 62
    assert ds.input_shape == (1, 28, 28)
    assert (len(ds.y_train), len(ds.y_test)) == (180, 20)  # 18 + 2 per writer
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    assert ds.y_train.min() >= 0 and ds.y_train.max() < 62
    assert ds.groups is not None and ds.groups.shape == ds.y_train.shape
    assert np.array_equal(np.unique(ds.groups), np.arange(10))  # one group per writer
    assert np.array_equal(np.bincount(ds.groups), np.full(10, 18))
    # Each writer's labels come from its own few classes.
    assert all(len(np.unique(ds.y_train[ds.groups == g])) <= 5 for g in range(10))

    parts = partition(ds.y_train, 4, method="natural", groups=ds.groups)
    assert len(parts) == 4
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(180))  # every sample, once
    owners = [{int(g) for g in ds.groups[p]} for p in parts]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not owners[a] & owners[b]  # no writer split between clients
        for g in owners[a]:  # each client has all 18 samples of each of its writers
            assert np.count_nonzero(ds.groups[parts[a]] == g) == 18
    assert sorted(len(o) for o in owners) == [2, 2, 3, 3]  # 10 writers dealt round-robin
    assert owners[0] == {0, 4, 8}

    # As many clients as writers: one writer each; more clients than writers: refused.
    ten = partition(ds.y_train, 10, method="natural", groups=ds.groups)
    assert [set(ds.groups[p].tolist()) for p in ten] == [{g} for g in range(10)]
    with pytest.raises(LearnError, match="has 10 groups, too few for 11 clients"):
        partition(ds.y_train, 11, method="natural", groups=ds.groups)


def test_natural_partition_round_robin_over_unsorted_groups() -> None:
    groups = np.array([7, 3, 7, 5, 3, 9, 9, 5, 11, 3])  # distinct sorted: 3 5 7 9 11
    parts = partition(np.zeros(10, np.int64), 2, method="natural", groups=groups)
    # Client 0 gets groups 3, 7 and 11 (the 0th, 2nd and 4th), client 1 gets 5 and 9.
    assert set(groups[parts[0]].tolist()) == {3, 7, 11}
    assert set(groups[parts[1]].tolist()) == {5, 9}
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))


def test_femnist_bad_files_refused(tmp_path: Path) -> None:
    with pytest.raises(LearnError, match=r"no train/\*.json under .*LEAF"):
        load_corpus("femnist", tmp_path)
    write_femnist(tmp_path, writers=3, per_writer=10)
    broken = tmp_path / "train" / "zz_broken.json"
    broken.write_text('{"users": ["a"], "user_data": {')
    with pytest.raises(LearnError, match=re.escape(str(broken)) + " is not a LEAF femnist file"):
        load_corpus("femnist", tmp_path)
    cases: list[tuple[object, str]] = [
        ({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 783], "y": [1]}}}, "x must be"),
        ({"users": ["a"], "user_data": {"a": {"x": [[0.0] * 784], "y": [62]}}}, "outside 0-61"),
        ({"users": ["a"], "user_data": {}}, "'a'"),
        ({"user_data": {}}, "'users'"),
        ([1, 2], "not a LEAF femnist file"),
    ]
    for doc, match in cases:
        broken.write_text(json.dumps(doc))
        with pytest.raises(LearnError, match=re.escape(str(broken)) + ".*" + match):
            load_corpus("femnist", tmp_path)
    broken.unlink()
    for f in (tmp_path / "test").glob("*.json"):
        f.unlink()
    with pytest.raises(LearnError, match=r"no test/\*.json"):
        load_corpus("femnist", tmp_path)
