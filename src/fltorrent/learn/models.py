"""The model zoo: small networks sized for the bundled datasets.

:func:`build_model` initialises weights from its own seed inside ``torch.random.fork_rng``, so the
same seed gives bit-identical initial weights and the caller's global RNG state is untouched.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import nn

from fltorrent.errors import LearnError

MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn1d", "cnn2d")
"""The names :func:`build_model` understands."""


_GLOBAL_RNG_LOCK = threading.Lock()


class MLP(nn.Module):
    """Flatten, then two hidden ReLU layers of ``4 * hidden`` and ``2 * hidden`` units."""

    def __init__(self, *, in_features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, 2 * hidden)
        self.fc3 = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of any input shape."""
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.fc2(x))
        out: torch.Tensor = self.fc3(x)
        return out


class CNN1d(nn.Module):
    """Three conv/ReLU/max-pool stages over a sequence, then one linear layer (for MNIST-1D)."""

    def __init__(self, *, channels: int, length: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, hidden, 5, padding=2)
        self.conv2 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.conv3 = nn.Conv1d(hidden, hidden, 3, padding=1)
        self.fc = nn.Linear(hidden * (length // 8), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of shape (B, L) or (B, C, L)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.max_pool1d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool1d(torch.relu(self.conv2(x)), 2)
        x = torch.max_pool1d(torch.relu(self.conv3(x)), 2)
        out: torch.Tensor = self.fc(x.flatten(1))
        return out


class CNN2d(nn.Module):
    """Two conv/BatchNorm/ReLU stages, one 2x2 max-pool, then one linear layer (for digits)."""

    def __init__(
        self, *, channels: int, height: int, width: int, num_classes: int, hidden: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.fc = nn.Linear(hidden * (height // 2) * (width // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of shape (B, C, H, W)."""
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        out: torch.Tensor = self.fc(x.flatten(1))
        return out


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32, seed: int = 0
) -> nn.Module:
    """A freshly initialised model ``name`` (see :data:`MODEL_NAMES`) for one input sample shape.

    ``mlp`` takes any shape; ``cnn1d`` takes (L,) or (C, L) with L >= 8; ``cnn2d`` takes
    (C, H, W) with H, W >= 2. ``hidden`` is the width (channels for the CNNs).
    """
    shape = tuple(int(d) for d in input_shape)
    if any(d < 1 for d in shape):
        raise LearnError(f"input_shape must have positive dimensions, got {input_shape}")
    if num_classes < 2:
        raise LearnError(f"num_classes must be at least 2, got {num_classes}")
    if hidden < 1:
        raise LearnError(f"hidden must be at least 1, got {hidden}")
    if name not in MODEL_NAMES:
        raise LearnError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    # torch's initialisers draw from the global generator. fork_rng restores it on exit
    # (devices=[] keeps it off accelerators), and the lock keeps peers that build their models
    # in concurrent threads from reseeding it under each other: without it, peers of one process
    # started from different weights and their average was noise.
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(name, shape=shape, num_classes=num_classes, hidden=hidden)


def _construct(name: str, *, shape: tuple[int, ...], num_classes: int, hidden: int) -> nn.Module:
    if name == "mlp":
        return MLP(in_features=math.prod(shape), num_classes=num_classes, hidden=hidden)
    if name == "cnn1d":
        if len(shape) not in (1, 2):
            raise LearnError(f"cnn1d needs input shape (L,) or (C, L), got {shape}")
        channels, length = (1, shape[0]) if len(shape) == 1 else shape
        if length < 8:
            raise LearnError(f"cnn1d pools three times by 2, so it needs L >= 8, got {length}")
        return CNN1d(channels=channels, length=length, num_classes=num_classes, hidden=hidden)
    if len(shape) != 3:
        raise LearnError(f"cnn2d needs input shape (C, H, W), got {shape}")
    channels, height, width = shape
    if height < 2 or width < 2:
        raise LearnError(f"cnn2d pools by 2, so it needs H, W >= 2, got {shape}")
    return CNN2d(
        channels=channels, height=height, width=width, num_classes=num_classes, hidden=hidden
    )
