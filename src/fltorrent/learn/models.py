"""The model zoo: small networks sized for the bundled datasets.

:func:`build_model` initialises weights from its own seed inside ``torch.random.fork_rng``, so the
same seed gives bit-identical initial weights and the caller's global RNG state is untouched.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from fltorrent.errors import LearnError

MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn1d", "cnn2d", "resnet", "transformer")
"""The names :func:`build_model` understands."""


# Reentrant: a user's model factory may build a zoo model inside its own seeded() call.
_GLOBAL_RNG_LOCK = threading.RLock()


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


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3-wide convs with BatchNorm, plus a shortcut.

    The shortcut is the identity, or a 1-wide conv and BatchNorm when the stride or the number of
    channels changes. Every conv is registered right before its BatchNorm, so they sit next to
    each other in ``named_modules()`` order.
    """

    def __init__(self, *, in_channels: int, out_channels: int, stride: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output, of the input's shape with strided length/size and new channels."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: a conv/BatchNorm/ReLU stem, three basic blocks, global average pooling.

    The blocks have ``hidden``, ``2 * hidden`` and ``4 * hidden`` channels and strides 1, 2, 2.
    ``dims`` picks 1-D (sequences) or 2-D (images) convolutions. Convs are initialised as in He
    et al. (normal, fan-out); BatchNorm starts at weight 1, bias 0.
    """

    def __init__(self, *, channels: int, num_classes: int, hidden: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
        self.dims = dims
        self.conv = conv(channels, hidden, 3, padding=1, bias=False)
        self.bn = norm(hidden)
        self.layer1 = BasicBlock(in_channels=hidden, out_channels=hidden, stride=1, dims=dims)
        self.layer2 = BasicBlock(in_channels=hidden, out_channels=2 * hidden, stride=2, dims=dims)
        self.layer3 = BasicBlock(
            in_channels=2 * hidden, out_channels=4 * hidden, stride=2, dims=dims
        )
        self.fc = nn.Linear(4 * hidden, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of shape (B, L) or (B, C, L) (1-D), or (B, C, H, W) (2-D)."""
        if self.dims == 1 and x.dim() == 2:
            x = x.unsqueeze(1)
        x = torch.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        out: torch.Tensor = self.fc(x.flatten(2).mean(2))
        return out


class Transformer(nn.Module):
    """A small pre-norm Transformer encoder over patches of a sequence, mean-pooled.

    The sequence is cut into ``L / patch`` tokens of ``patch`` consecutive positions (all
    channels), embedded linearly to ``d_model = 2 * hidden`` plus a learned positional embedding,
    passed through two encoder layers (``nhead`` heads, feed-forward ``2 * d_model``, no
    dropout) and a final LayerNorm, averaged over tokens and classified by one linear layer.
    """

    def __init__(
        self,
        *,
        channels: int,
        length: int,
        num_classes: int,
        hidden: int,
        patch: int = 4,
        nhead: int = 4,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        d_model = 2 * hidden
        self.patch = patch
        self.nhead = nhead
        self.num_tokens = length // patch
        self.embed = nn.Linear(channels * patch, d_model)
        self.pos = nn.Embedding(self.num_tokens, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward=2 * d_model,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, num_classes)
        nn.init.normal_(self.pos.weight, std=0.02)
        # TransformerEncoder deep-copies ``layer``, so all layers would start identical;
        # re-draw their matrices as nn.Transformer does.
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of shape (B, L) or (B, C, L)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        batch, channels, _ = x.shape
        # (B, C, T, P) -> (B, T, C, P) -> (B, T, C * P): one token per patch, all channels.
        x = x.reshape(batch, channels, self.num_tokens, self.patch).transpose(1, 2)
        x = self.embed(x.reshape(batch, self.num_tokens, channels * self.patch))
        x = self.norm(self.encoder(x + self.pos.weight))
        out: torch.Tensor = self.fc(x.mean(1))
        return out


def build_model(
    name: str, *, input_shape: tuple[int, ...], num_classes: int, hidden: int = 32, seed: int = 0
) -> nn.Module:
    """A freshly initialised model ``name`` (see :data:`MODEL_NAMES`) for one input sample shape.

    ``mlp`` takes any shape; ``cnn1d`` takes (L,) or (C, L) with L >= 8; ``cnn2d`` takes
    (C, H, W) with H, W >= 2; ``resnet`` takes (L,) or (C, L) with L >= 8 (1-D convs) or
    (C, H, W) with H, W >= 8 (2-D convs); ``transformer`` takes (L,) or (C, L) with L a multiple
    of 4 (its patch length) and an even ``hidden``. ``hidden`` is the width (channels for the
    CNNs, half of d_model for the transformer).
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
    with seeded(seed):
        return _construct(name, shape=shape, num_classes=num_classes, hidden=hidden)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build a model inside: every peer gets the same initial weights for the same seed.

    torch's initialisers draw from the global generator. fork_rng restores it on exit
    (devices=[] keeps it off accelerators), and the lock keeps peers that build their models in
    concurrent threads from reseeding it under each other: without it, peers of one process
    started from different weights and their average was noise. numpy's and Python's global
    generators are seeded too (a user's factory may draw from them) and restored on exit."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        np_state, py_state = np.random.get_state(), random.getstate()
        torch.manual_seed(seed)
        np.random.seed(seed % (1 << 32))
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """Run user code that may draw from the global generators (a data factory) while no peer
    of this process builds a model: its draws would shift that model's initial weights."""
    with _GLOBAL_RNG_LOCK:
        yield


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
    if name == "cnn2d":
        if len(shape) != 3:
            raise LearnError(f"cnn2d needs input shape (C, H, W), got {shape}")
        channels, height, width = shape
        if height < 2 or width < 2:
            raise LearnError(f"cnn2d pools by 2, so it needs H, W >= 2, got {shape}")
        return CNN2d(
            channels=channels, height=height, width=width, num_classes=num_classes, hidden=hidden
        )
    if name == "resnet":
        if len(shape) not in (1, 2, 3):
            raise LearnError(f"resnet needs input shape (L,), (C, L) or (C, H, W), got {shape}")
        spatial = shape[1:] if len(shape) == 3 else shape[-1:]
        if min(spatial) < 8:
            raise LearnError(
                "resnet strides twice by 2 and batch-normalizes the result, "
                f"so it needs L (or H, W) >= 8, got {shape}"
            )
        channels = 1 if len(shape) == 1 else shape[0]
        dims = 2 if len(shape) == 3 else 1
        return ResNet(channels=channels, num_classes=num_classes, hidden=hidden, dims=dims)
    if len(shape) not in (1, 2):
        raise LearnError(f"transformer takes sequences of shape (L,) or (C, L), got {shape}")
    channels, length = (1, shape[0]) if len(shape) == 1 else shape
    if length % 4 != 0:
        raise LearnError(
            f"transformer cuts patches of 4, so L must be a multiple of 4, got {length}"
        )
    if hidden % 2:
        raise LearnError(
            f"transformer has d_model = 2 * hidden split over 4 heads, so hidden must be even, "
            f"got {hidden}"
        )
    return Transformer(channels=channels, length=length, num_classes=num_classes, hidden=hidden)
