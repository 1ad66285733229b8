"""Local training and evaluation of a classifier on in-memory tensors.

Small models are bound by Python overhead, so batches are gathered by indexing the tensors
directly rather than through a DataLoader. All randomness (the shuffling) comes from a
``torch.Generator`` seeded by the caller; the global RNG is never used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.sgd import sgd as functional_sgd

from fltorrent.errors import LearnError

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
"""The optimizers :func:`train_local` understands."""


@dataclass(frozen=True)
class TrainResult:
    """What one call of :func:`train_local` did.

    ``loss`` is the sample-weighted mean cross-entropy over the last epoch (NaN when no step was
    taken).
    """

    num_samples: int
    loss: float
    steps: int
    seconds: float


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[:1] != y.shape or y.dim() != 1:
        raise LearnError(f"x and y must hold the same number of samples, got {x.shape}, {y.shape}")


class _FunctionalSGD:
    """SGD with momentum through torch's functional ``torch.optim.sgd.sgd``.

    Same arithmetic as ``torch.optim.SGD`` (whose ``step`` calls the same function), without its
    constructor: building the first ``torch.optim.Optimizer`` of a process imports
    ``torch._dynamo``, which costs about 1.5 s of CPU, in every peer process.
    """

    def __init__(self, model: nn.Module, *, lr: float, momentum: float, weight_decay: float):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        buffers: list[torch.Tensor | None] = []
        for p, buf in zip(self.params, self.buffers, strict=True):
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
                buffers.append(buf)
        functional_sgd(
            params,
            grads,
            buffers,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        # sgd() fills in momentum buffers it created; keep them for the next step.
        it = iter(buffers)
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.buffers[i] = next(it)


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.05,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    proximal_mu: float = 0.0,
    seed: int = 0,
    correction: Sequence[torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy for ``epochs`` passes over (x, y).

    ``proximal_mu`` > 0 is FedProx (Li et al., 2020): the objective gains
    ``mu / 2 * ||w - w_start||^2``, which keeps a peer with skewed data near the round's
    starting model; its gradient ``mu (w - w_start)`` is added to each step's (the reported
    loss is the cross-entropy alone).

    ``correction`` (SCAFFOLD's ``c - c_i``, one tensor per trainable parameter, in
    ``model.parameters()`` order) is added to every step's gradient.

    A fresh optimizer is built on every call (``sgd`` with ``momentum``, or ``adam``, which
    ignores ``momentum``), so no optimizer state survives between rounds. Each epoch visits the
    samples in an order drawn from ``seed``; the last batch of an epoch may be smaller. With no
    samples (or no epochs) nothing is touched and ``loss`` is NaN.
    """
    _check_data(x, y)
    if epochs < 0:
        raise LearnError(f"epochs must be non-negative, got {epochs}")
    if batch_size < 1:
        raise LearnError(f"batch_size must be at least 1, got {batch_size}")
    if not lr > 0:
        raise LearnError(f"lr must be positive, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise LearnError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if not proximal_mu >= 0:
        raise LearnError(f"proximal_mu must be non-negative, got {proximal_mu}")
    n = len(y)
    if n == 0 or epochs == 0:
        return TrainResult(num_samples=n, loss=math.nan, steps=0, seconds=0.0)

    start = time.perf_counter()
    opt: torch.optim.Optimizer | _FunctionalSGD
    if optimizer == "sgd":
        opt = _FunctionalSGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    if correction is not None and len(correction) != len(params):
        raise LearnError(f"{len(correction)} correction tensors for {len(params)} parameters")
    pairs = zip(params, correction or [], strict=False)  # checked just above
    shift = [c.to(device=p.device, dtype=p.dtype) for p, c in pairs]
    model.train()
    steps = 0
    epoch_loss = torch.zeros((), device=x.device)
    for _ in range(epochs):
        # Drawn on the CPU (the same order on every device), then moved beside the data.
        order = torch.randperm(n, generator=generator).to(x.device)
        # Summed as a tensor: calling .item() every step would cost a sync per batch.
        epoch_loss = torch.zeros((), device=x.device)
        for first in range(0, n, batch_size):
            idx = order[first : first + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            for p, a in zip(params if anchor else (), anchor, strict=True):
                if p.grad is not None:
                    p.grad.add_(p.detach() - a, alpha=proximal_mu)
            for p, c in zip(params if shift else (), shift, strict=True):
                if p.grad is not None:
                    p.grad.add_(c)
            opt.step()
            epoch_loss += loss.detach() * len(idx)
            steps += 1
    return TrainResult(
        num_samples=n,
        loss=float(epoch_loss) / n,
        steps=steps,
        seconds=time.perf_counter() - start,
    )


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on (x, y), in eval mode without gradients.

    Empty data gives ``(nan, nan)``: there is nothing to measure, and NaN cannot be mistaken for
    a real score. The model is left in eval mode.
    """
    _check_data(x, y)
    if batch_size < 1:
        raise LearnError(f"batch_size must be at least 1, got {batch_size}")
    n = len(y)
    if n == 0:
        return math.nan, math.nan
    model.eval()
    correct = 0
    total_loss = 0.0
    with torch.no_grad():
        for first in range(0, n, batch_size):
            xb, yb = x[first : first + batch_size], y[first : first + batch_size]
            logits = model(xb)
            total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(dim=1) == yb).sum())
    return correct / n, total_loss / n
