"""Stand-ins for a user's own code, plugged in by import string in the plug-in tests."""

from __future__ import annotations

from torch import nn


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
