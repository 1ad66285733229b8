"""Your model: any torch.nn.Module. fltorrent calls make_model(**model.options) on every peer,
under the federation's seed, so all peers start from the same weights."""

from torch import nn


def make_model(in_features: int = 40, classes: int = 10, hidden: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )
