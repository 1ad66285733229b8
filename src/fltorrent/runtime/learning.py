"""What a peer learns with: the federation's data and each peer's share of it, or a peer's
own data, and the learner built on it (model, training and evaluation, the user's plug-ins).

Part of the configuration's reading (as :mod:`~fltorrent.runtime.build`, kept apart for size).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fltorrent.config import Config
from fltorrent.errors import ConfigError, LearnError, PluginError
from fltorrent.learn.accel import select_device
from fltorrent.learn.corpora import CORPORA, load_corpus
from fltorrent.learn.data import Dataset, load_dataset, subsample
from fltorrent.learn.files import read_files
from fltorrent.learn.importance import ImportanceScorer
from fltorrent.learn.learner import EvalCache, Learner
from fltorrent.learn.models import build_model
from fltorrent.learn.partition import partition, split_test_like
from fltorrent.learn.plugins import user_data, user_evaluate, user_model, user_train


def default_cache_dir() -> Path:
    """Where generated datasets are cached (``$XDG_CACHE_HOME/fltorrent``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fltorrent"


@dataclass(frozen=True)
class FederationData:
    """The dataset and every peer's share of it (indices into train and test)."""

    dataset: Dataset
    train_parts: list[np.ndarray]
    test_parts: list[np.ndarray]
    # The global test set as tensors, shared by every peer of the process (one copy in memory,
    # and the identity the evaluation cache keys on).
    x_test: torch.Tensor
    y_test: torch.Tensor
    eval_cache: EvalCache


def load_federation_data(config: Config) -> FederationData | None:
    """Load (or generate) the dataset and split it among ``client_num`` peers, seeded;
    ``None`` when each peer loads its own (``data.factory``)."""
    d = config.data
    if d.per_peer:
        return None
    seed = config.federate.seed
    n = config.federate.client_num
    if d.name in CORPORA or d.name == "files":
        assert d.path is not None, "checked by the config"
        dataset = (
            load_corpus(d.name, Path(d.path).expanduser(), emnist_split=d.emnist_split)
            if d.name in CORPORA
            else _read_files(config, Path(d.path).expanduser())
        )
        if d.num_samples is not None:
            dataset = subsample(dataset, d.num_samples, seed=seed)
    else:
        dataset = load_dataset(
            d.name,
            num_samples=d.num_samples,
            seed=seed,
            cache_dir=d.cache_dir or default_cache_dir(),
            num_groups=n,
            synthetic_alpha=d.synthetic_alpha,
            synthetic_beta=d.synthetic_beta,
        )
    parts = partition(
        dataset.y_train,
        n,
        method=d.partition,
        alpha=d.alpha,
        shards_per_client=d.shards_per_client,
        seed=seed,
        min_samples=d.min_samples,
        groups=dataset.groups,
    )
    tests = split_test_like(parts, dataset.y_train, dataset.y_test, seed=seed)
    x_test, y_test = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    return FederationData(dataset, parts, tests, x_test, y_test, EvalCache())


def _read_files(config: Config, path: Path) -> Dataset:
    d = config.data
    return read_files(
        path,
        seed=config.federate.seed,
        test_fraction=d.test_fraction,
        label_column=d.label_column,
        image_size=d.image_size,
        classes=d.classes,
    )


def build_learner(
    config: Config,
    peer_id: int,
    data: FederationData | None,
    *,
    own_data: Path | None = None,
    device: str | None = None,
    gpu_share: float = 1.0,
) -> Learner:
    """The learner of peer ``peer_id`` (1-based): same initial model on every peer.

    ``own_data`` (``fltorrent peer --data``) replaces the federation's data section: the peer
    trains and evaluates on that file or folder alone. ``device`` (``fltorrent peer
    --device``) replaces ``train.device``; ``gpu_share`` is the peer's share of a GPU (its
    device profile's; 0 trains on the CPU)."""
    if gpu_share <= 0:  # a device profile without a GPU
        where = torch.device("cpu")
    elif device is None:
        where = select_device(config.train.device)
    else:
        where = select_device(device, key="the peer's device")
    seed = config.federate.seed
    mine = _peer_data(config, peer_id, data, own_data)
    m = config.model
    if m.factory is not None:
        model = user_model(m.factory, m.options, seed=seed, who=f"peer {peer_id}")
    elif mine.classes is None:
        raise LearnError(
            "a built-in model needs the number of classes, which one peer's data cannot tell: "
            "set data.num_classes, give the datasets of data.factory a 'classes' list, or use "
            "model.factory"
        )
    else:
        model = build_model(
            m.name,
            input_shape=mine.input_shape,
            num_classes=mine.classes,
            hidden=m.hidden,
            seed=seed,
        )
    if config.data.per_peer or own_data is not None:
        _check_labels(model, mine, who=f"peer {peer_id}")
    labels = mine.train[1]
    attack = config.attack
    if attack.type == "label_flip" and peer_id in attack.attackers(
        config.federate.client_num, config.federate.seed
    ):
        labels = (mine.classes or int(labels.max()) + 1) - 1 - labels
    t = config.train
    chunk = config.chunk
    return Learner(
        model=model,
        train_data=(mine.train[0], labels),
        test_data=mine.test,
        local_test_data=mine.local_test,
        plan_size=chunk.plan_size(),
        layout=chunk.layout,
        train_options={
            "epochs": t.local_epochs,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "optimizer": t.optimizer,
            "momentum": t.momentum,
            "weight_decay": t.weight_decay,
            "proximal_mu": t.proximal_mu,
        },
        scorer=ImportanceScorer(
            chunk.importance_method,
            options=chunk.importance_config.model_dump(),
            seed=seed * 1000 + peer_id,
        ),
        seed=seed * 1000 + peer_id,
        eval_cache=data.eval_cache if data is not None else None,
        train_fn=user_train(t.step, who=f"peer {peer_id}") if t.step is not None else None,
        eval_fn=(
            user_evaluate(t.evaluate, who=f"peer {peer_id}") if t.evaluate is not None else None
        ),
        device=where,
        gpu_share=gpu_share if gpu_share > 0 else 1.0,
        gpu_wait=max(600.0, 2 * config.bittorrent.timeout),
    )


def _check_labels(model: nn.Module, mine: _PeerData, *, who: str) -> None:
    """The user's labels must be class indices the model has outputs for: one forward pass
    on two samples (in eval mode, so no batch-norm statistics move) tells how many."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(mine.train[0][:2])
    except Exception as exc:
        raise PluginError(
            f"{who}: the model cannot take the inputs of data.factory "
            f"({tuple(mine.train[0].shape[1:])}): {type(exc).__name__}: {exc}"
        ) from None
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise PluginError(f"{who}: the model gives outputs of shape {tuple(out.shape)}, not (n, C)")
    top = max(int(mine.train[1].max()), int(mine.test[1].max()))
    if top >= out.shape[1]:
        raise PluginError(
            f"{who}: data.factory has label {top}, the model only {out.shape[1]} classes"
        )


@dataclass(frozen=True)
class _PeerData:
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]  # what "accuracy" is measured on
    local_test: tuple[torch.Tensor, torch.Tensor]  # "local_accuracy"
    input_shape: tuple[int, ...]
    classes: int | None


def _peer_data(
    config: Config, peer_id: int, data: FederationData | None, own_data: Path | None
) -> _PeerData:
    """The peer's share of the federation's dataset, or its own data (``own_data``, a
    ``data.path`` with {peer}, or ``data.factory``), whose test set is then both the global and
    the local one: no peer sees another's."""
    d = config.data
    if own_data is not None or (d.per_peer and d.factory is None):
        assert own_data is not None or d.path is not None
        path = own_data or Path(d.path.format(peer=peer_id)).expanduser()  # type: ignore[union-attr]
        ds = _read_files(config, path)
        if ds.class_names is not None and d.classes is None:
            raise LearnError(
                f"peer {peer_id}: {path} names its classes ({', '.join(ds.class_names[:5])}): "
                "set data.classes to the federation's class list, so that every peer numbers "
                "a class alike whatever classes its own data holds"
            )
        train = (torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train))
        test = (torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))
        named = len(ds.class_names) if ds.class_names is not None else None
        return _PeerData(train, test, test, ds.input_shape, d.num_classes or named)
    if d.factory is not None:
        own = user_data(
            d.factory,
            d.options,
            peer=peer_id,
            num_peers=config.federate.client_num,
            seed=config.federate.seed,
            who=f"peer {peer_id}",
        )
        shape = tuple(int(s) for s in own.train[0].shape[1:])
        return _PeerData(own.train, own.test, own.test, shape, d.num_classes or own.classes)
    assert data is not None, "built-in data is loaded by load_federation_data"
    ds = data.dataset
    train_idx, test_idx = data.train_parts[peer_id - 1], data.test_parts[peer_id - 1]
    return _PeerData(
        (torch.from_numpy(ds.x_train[train_idx]), torch.from_numpy(ds.y_train[train_idx])),
        (data.x_test, data.y_test),
        (torch.from_numpy(ds.x_test[test_idx]), torch.from_numpy(ds.y_test[test_idx])),
        ds.input_shape,
        ds.num_classes,
    )


def check_local(config: Config) -> None:
    """What a run needs on this host must be here: the data files (a missing path) and the
    device (``train.device: cuda`` without one) are configuration errors before anything
    starts (``fltorrent run``; a tracker's peers check their own)."""
    try:
        select_device(config.train.device)
    except LearnError as exc:
        raise ConfigError(str(exc), path="train.device") from None
    d = config.data
    if d.path is None:
        return
    paths = {d.path.format(peer=p) for p in range(1, config.federate.client_num + 1)}
    missing = sorted(p for p in paths if not Path(p).expanduser().exists())
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"{missing[0]}{more}: no such file or folder", path="data.path")
