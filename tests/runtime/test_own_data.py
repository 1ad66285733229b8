"""Whole federations on data from files: each peer's own file, one file split among the peers,
and the local copies of real datasets (generated stand-ins in their on-disk formats)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fltorrent.config import load_config
from fltorrent.errors import ConfigError, LearnError
from fltorrent.learn.standins import write_cifar10, write_femnist
from fltorrent.runtime.federation import Federation
from fltorrent.runtime.learning import build_learner, load_federation_data

SIM = ["federate.mode=sim", "output.save_model=false", "output.progress=none"]


def _rule(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable 3-class task on 8 features: the argmax of a fixed linear map."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(8, 3))
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return x, (x @ w).argmax(axis=1)


def _run(tmp: Path, *overrides: str) -> list[dict[str, Any]]:
    config = load_config(None, [*SIM, *overrides])
    return Federation(config, output_dir=tmp / "run").run().metrics


def test_each_peer_trains_on_its_own_file(tmp_path: Path) -> None:
    sizes = {1: 120, 2: 200, 3: 80}
    for peer, n in sizes.items():
        x, y = _rule(n, seed=peer)
        np.savez(tmp_path / f"peer{peer}.npz", x=x, y=y)
    metrics = _run(
        tmp_path,
        "data.name=files",
        f"data.path={tmp_path}/peer{{peer}}.npz",
        "data.num_classes=3",
        "model.name=mlp",
        "federate.client_num=3",
        "federate.total_round_num=4",
        "train.local_epochs=3",
    )
    assert len(metrics) == 3 * 4
    for m in metrics:
        # 20 % of each peer's own file is held out; the rest is what it trains on.
        assert m["num_samples"] == sizes[m["peer"]] - math.ceil(sizes[m["peer"]] * 0.2)
    last = [m["accuracy"] for m in metrics if m["round"] == 4]
    assert min(last) > 0.6  # chance is 1/3: they learned the rule together


def test_one_file_is_split_among_the_peers(tmp_path: Path) -> None:
    x, y = _rule(600, seed=1)
    lines = ["f0,f1,f2,f3,f4,f5,f6,f7,kind"]
    names = np.array(["bird", "cat", "dog"])
    lines += [
        ",".join(f"{v:.5f}" for v in row) + f",{names[c]}" for row, c in zip(x, y, strict=True)
    ]
    (tmp_path / "all.csv").write_text("\n".join(lines))
    common = [
        "data.name=files",
        f"data.path={tmp_path}/all.csv",
        "data.label_column=kind",
        "data.partition=iid",
        "model.name=mlp",
        "federate.client_num=4",
    ]
    config = load_config(None, common)
    data = load_federation_data(config)
    assert data is not None
    assert data.dataset.class_names == ("bird", "cat", "dog")
    assert sum(len(p) for p in data.train_parts) == 480 and len(data.y_test) == 120
    metrics = _run(tmp_path, *common, "federate.total_round_num=3", "train.local_epochs=2")
    assert {m["num_samples"] for m in metrics} == {120}
    assert max(m["accuracy"] for m in metrics if m["round"] == 3) > 0.6


def test_a_built_in_model_on_own_data_needs_the_class_count(tmp_path: Path) -> None:
    x, y = _rule(50, seed=0)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    config = load_config(None, ["model.name=mlp"])
    with pytest.raises(LearnError, match=r"data\.num_classes"):
        build_learner(config, 1, None, own_data=tmp_path / "mine.npz")
    fixed = load_config(None, ["model.name=mlp", "data.num_classes=5"])
    learner = build_learner(fixed, 1, None, own_data=tmp_path / "mine.npz")
    assert learner.num_samples == 40 and len(learner.y_test) == 10
    assert learner.model(learner.x[:1]).shape == (1, 5)


def test_named_classes_of_own_data_need_the_federations_list(tmp_path: Path) -> None:
    # A peer's own CSV names its classes; its own sorted names would number them unlike
    # another peer's, so the federation's list (data.classes) is required.
    (tmp_path / "mine.csv").write_text(
        "".join(f"{i},{i % 3},{['cat', 'dog'][i % 2]}\n" for i in range(20))
    )
    config = load_config(None, ["model.name=mlp"])
    with pytest.raises(LearnError, match=r"names its classes \(cat, dog\): set data\.classes"):
        build_learner(config, 1, None, own_data=tmp_path / "mine.csv")
    fixed = load_config(None, ["model.name=mlp", "data.classes=[ant, cat, dog]"])
    learner = build_learner(fixed, 1, None, own_data=tmp_path / "mine.csv")
    assert learner.model(learner.x[:1]).shape == (1, 3)
    assert set(torch.cat([learner.y, learner.y_test]).tolist()) == {1, 2}


def test_data_path_placeholders() -> None:
    files = ["data.name=files"]
    assert load_config(None, [*files, "data.path=d/peer{peer:03d}.npz"]).data.per_peer
    assert not load_config(None, [*files, "data.path=d/all.npz"]).data.per_peer
    for bad in ("d/{peer.x}.npz", "d/{peer[0]}.npz", "d/{other}.npz", "d/{peer"):
        with pytest.raises(ConfigError, match=r"data\.path: .* the only placeholder is \{peer\}"):
            load_config(None, [*files, f"data.path={bad}"])
    with pytest.raises(ConfigError, match=r"data\.num_classes: 4 but data\.classes names 3"):
        load_config(None, [*files, "data.path=d", "data.classes=[a, b, c]", "data.num_classes=4"])
    with pytest.raises(ConfigError, match=r"data\.classes: needs two or more distinct names"):
        load_config(None, [*files, "data.path=d", "data.classes=[a, a]"])


def test_cifar10_from_a_local_copy(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "cifar", train=600, test=200, seed=0)
    metrics = _run(
        tmp_path,
        "data.name=cifar10",
        f"data.path={tmp_path}/cifar",
        "data.partition=iid",
        "model.name=cnn2d",
        "model.hidden=8",
        "federate.client_num=3",
        "federate.total_round_num=2",
    )
    assert len(metrics) == 6
    assert {m["num_samples"] for m in metrics} == {200}
    assert all(0.0 <= m["accuracy"] <= 1.0 for m in metrics)


def test_femnist_writers_stay_whole(tmp_path: Path) -> None:
    write_femnist(tmp_path / "femnist", writers=9, per_writer=20, seed=0)
    config = load_config(
        None,
        [
            "data.name=femnist",
            f"data.path={tmp_path}/femnist",
            "data.partition=natural",
            "federate.client_num=3",
        ],
    )
    data = load_federation_data(config)
    assert data is not None and data.dataset.groups is not None
    groups = data.dataset.groups
    seen: set[int] = set()
    for part in data.train_parts:
        writers = set(groups[part].tolist())
        assert len(writers) == 3 and not writers & seen  # 9 writers, 3 whole ones each
        seen |= writers
    assert sum(len(p) for p in data.train_parts) == len(groups)
