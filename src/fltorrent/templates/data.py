"""Your data: fltorrent calls load(peer=..., num_peers=..., seed=..., **data.options) on each
peer, where its data is, and trains on the (train, test) pair it returns: torch Datasets of
(input, label) pairs. Replace the toy data below with your own (files under a path in
data.options, a torchvision dataset, ...); a peer's data never leaves it."""

import numpy as np
import torch
from torch.utils.data import TensorDataset


def load(
    *,
    peer: int,
    num_peers: int,
    seed: int,
    samples: int = 500,
    classes: int = 10,
    features: int = 40,
) -> tuple[TensorDataset, TensorDataset]:
    # Toy data: one Gaussian blob per class (the same centres everywhere), each peer drawing
    # its own samples, with a skew towards a few classes so that peers differ.
    centres = np.random.default_rng(seed).normal(size=(classes, features)) * 0.4
    rng = np.random.default_rng(seed * 1000 + peer)
    weights = rng.dirichlet(np.full(classes, 0.5))

    def draw(n: int) -> TensorDataset:
        y = rng.choice(classes, size=n, p=weights)
        x = centres[y] + rng.normal(size=(n, features))
        return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))

    return draw(samples), draw(samples // 4)
