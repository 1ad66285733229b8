"""A user's own ResNet-style model for 32x32 colour images, as a user would write one: the
CIFAR-10 benchmark (``benchmarks/cifar.py``) names it by import string (``model.factory:
"user_resnet:make_resnet"``), as a user's project does."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 projection when the shape
    changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.n1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.n2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.n1(self.c1(x)))
        return F.relu(self.n2(self.c2(out)) + self.skip(x))


class SmallResNet(nn.Module):
    """Stem, three stages of one block each (width, 2x, 4x; strides 1, 2, 2), pooling, linear."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.stages = nn.Sequential(
            Block(width, width, 1), Block(width, 2 * width, 2), Block(2 * width, 4 * width, 2)
        )
        self.head = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))
        return out


def make_resnet(width: int = 16, classes: int = 10) -> nn.Module:
    """The model factory (``model.options``: width, classes)."""
    return SmallResNet(width=width, classes=classes)
