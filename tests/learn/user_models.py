"""Stand-ins for a user's own code, plugged in by import string in the plug-in tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


def make_mlp(in_features: int = 40, classes: int = 10, hidden: int = 16) -> nn.Module:
    """A model none of the zoo's: plain Sequential layers, default names ("1.weight", ...)."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


def broken(**_options: object) -> nn.Module:
    return _deep_inside()


def _deep_inside() -> nn.Module:
    raise ValueError("the user's bug")


def not_a_model() -> object:
    return 42


NOT_CALLABLE = 3


class Blobs(Dataset[tuple[np.ndarray, int]]):
    """Four Gaussian blobs in 40 dimensions (same centres on every peer, own samples)."""

    def __init__(self, samples: int, seed: int) -> None:
        self.classes = ["north", "east", "south", "west"]  # as torchvision datasets say it
        centres = np.random.default_rng(0).normal(size=(4, 40)) * 3
        rng = np.random.default_rng(seed)
        self.y = rng.integers(0, 4, samples)
        self.x = (centres[self.y] + rng.normal(size=(samples, 40))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], int(self.y[i])


def blobs(*, peer: int, num_peers: int, seed: int, samples: int = 200) -> tuple[Blobs, Blobs]:
    """A peer's own data: its train and test sets, drawn from its own seed."""
    assert 1 <= peer <= num_peers
    return Blobs(samples, seed * 1000 + peer), Blobs(100, seed * 1000 + 500 + peer)


def not_a_pair(**_kwargs: object) -> list[int]:
    return [1, 2, 3]


class _Ragged(Blobs):
    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        x, y = super().__getitem__(i)
        return (x if i % 2 else x[:10]), y


def ragged(*, peer: int, num_peers: int, seed: int) -> tuple[Blobs, Blobs]:
    return _Ragged(20, peer), _Ragged(10, peer)


def middle_mean(deltas: np.ndarray) -> np.ndarray:
    """A user's rule: drop the largest and smallest value per coordinate, average the rest."""
    if len(deltas) <= 2:
        return np.asarray(deltas.mean(axis=0))
    return np.asarray(np.sort(deltas, axis=0)[1:-1].mean(axis=0))


def wrong_shape(deltas: np.ndarray) -> np.ndarray:
    return np.asarray(deltas[:, :1].mean(axis=0))


def failing_rule(deltas: np.ndarray) -> np.ndarray:
    raise ArithmeticError("the user's rule broke")


def sgd_step(
    *, model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: dict[str, Any], seed: int
) -> float:
    """A user's own training step: plain SGD, no momentum, its own batching."""
    opt = torch.optim.SGD(model.parameters(), lr=options["lr"])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    total = 0.0
    for _ in range(options["epochs"]):
        total = 0.0
        for first in range(0, len(y), options["batch_size"]):
            idx = order[first : first + options["batch_size"]]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
    return total / len(y)


def accuracy_only(*, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """A user's own evaluation: accuracy, and a loss it does not compute (-1)."""
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean()), -1.0


def not_a_pair_of_floats(**_kwargs: object) -> str:
    return "good"


def wrapped_zoo(hidden: int = 8) -> nn.Module:
    """A factory that builds one of fltorrent's own models (it takes the same lock)."""
    from fltorrent.learn.models import build_model

    return build_model("mlp", input_shape=(40,), num_classes=10, hidden=hidden, seed=5)


def numpy_init(hidden: int = 8) -> nn.Module:
    """A factory that initialises from numpy's global generator."""
    model = make_mlp(hidden=hidden)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(np.random.normal(size=tuple(p.shape))))
    return model


def mode_spy(
    *, model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: dict[str, Any], seed: int
) -> float:
    """A training step that records whether it was handed the model in train mode."""
    MODES.append(model.training)
    return sgd_step(model=model, x=x, y=y, options=options, seed=seed)


MODES: list[bool] = []
