"""Chunk importance scores: how much each chunk of an update matters, carried in the manifest.

The picker uses the scores to break ties between equally rare pieces, so the chunks that matter
most spread first when a round cannot wait for everything. Methods (config key
``chunk.importance_method``):

* ``l2_norm``: L2 norm of the chunk's update; divided by sqrt(size) when ``normalize_by_size``
  and multiplied by ``1 + depth_boost * depth`` (depth in [0, 1] by the chunk's first tensor).
* ``magnitude``: mean absolute update of the chunk, averaged over the last ``history_window``
  rounds, plus its standard deviation over that window when ``use_variance`` (chunks whose
  updates swing are boosted).
* ``snip``: sum over the chunk of |gradient x weight| on one batch of ``batch_size`` samples
  (``use_cached``: on the gradients the last training step left, with no extra pass)
  (Lee et al., ICLR 2019, connection sensitivity).
* ``fisher``: sum over the chunk of the diagonal empirical Fisher, the mean squared per-sample
  gradient over ``num_samples`` samples, plus ``damping`` per parameter element (buffers, which
  have no gradient, score 0). Per-sample gradients are vectorized with ``torch.func``.
* ``random``: uniform scores in [0, 1), a function of the scorer's seed and the round.
* ``adaptive``: ``magnitude`` while training moves fast (the first round, or the mean training
  loss fell by more than 5 % since the previous round), ``snip`` once it settles.

Every score is finite and non-negative: a NaN or infinite score (a diverged update) becomes 0,
and a score beyond the largest float32 is clipped to it, since the manifest carries float32. A
round whose mean absolute update is not finite enters the ``magnitude`` history as 0, so it
does not zero the chunk's score for the whole window. After each call,
:attr:`ImportanceScorer.last_backward_samples` says over how many samples the scorer ran forward
and backward passes (``snip``: the batch, ``fisher``: the per-sample passes, otherwise 0), so a
simulation can charge the scoring compute.

These are first implementations; issue 4 measures them against ``random``.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fltorrent.errors import LearnError
from fltorrent.learn.chunking import ChunkPlan

IMPORTANCE_METHODS = ("magnitude", "l2_norm", "snip", "fisher", "random", "adaptive")
ADAPTIVE_LOSS_DROP = 0.05
_MAX_SCORE = float(np.finfo(np.float32).max)  # the manifest stores scores as float32


@dataclass
class ScoreInputs:
    """What a scorer may look at after local training."""

    plan: ChunkPlan
    before: Sequence[np.ndarray]  # chunk vectors before training (the round's start model)
    after: Sequence[np.ndarray]  # chunk vectors after training
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    train_loss: float
    round: int


@dataclass
class ImportanceScorer:
    """Stateful scorer for one peer (``magnitude`` and ``adaptive`` keep a history).

    ``last_backward_samples`` is the number of samples the last :meth:`score` call ran forward
    and backward passes over (0 before the first call and for methods without gradients).
    """

    method: str
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    seed: int = 0
    _history: deque[np.ndarray] = field(default_factory=deque)
    _last_loss: float | None = None
    last_backward_samples: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.method not in IMPORTANCE_METHODS:
            raise LearnError(
                f"unknown importance method {self.method!r}; one of {IMPORTANCE_METHODS}"
            )

    def _opt(self, method: str, key: str, default: Any) -> Any:
        return self.options.get(method, {}).get(key, default)

    def score(self, inputs: ScoreInputs) -> list[float]:
        """One finite, non-negative score per chunk."""
        method = self.method
        if method == "adaptive":
            last, self._last_loss = self._last_loss, inputs.train_loss
            moving = last is None or inputs.train_loss < (1 - ADAPTIVE_LOSS_DROP) * last
            method = "magnitude" if moving else "snip"
        self.last_backward_samples = 0
        deltas = [a - b for a, b in zip(inputs.after, inputs.before, strict=True)]
        if method == "magnitude" or self.method == "adaptive":
            # The history is kept up to date even while adaptive uses snip.
            mags = np.array([float(np.abs(d).mean()) if d.size else 0.0 for d in deltas])
            mags = np.nan_to_num(mags, nan=0.0, posinf=0.0, neginf=0.0)
            window = max(1, int(self._opt("magnitude", "history_window", 10)))
            self._history.append(mags)
            while len(self._history) > window:
                self._history.popleft()
        match method:
            case "l2_norm":
                scores = self._l2(inputs.plan, deltas)
            case "magnitude":
                hist = np.stack(list(self._history))
                scores = hist.mean(axis=0)
                if self._opt("magnitude", "use_variance", True):
                    scores = scores + hist.std(axis=0)
            case "snip":
                batch_size = int(self._opt("snip", "batch_size", 128))
                cached = _cached_snip(inputs) if self._opt("snip", "use_cached", False) else None
                if cached is None:
                    snip, self.last_backward_samples = _snip(inputs, batch_size)
                else:
                    snip = cached
                scores = _per_chunk(inputs.plan, snip)
            case "fisher":
                n = int(self._opt("fisher", "num_samples", 100))
                damping = float(self._opt("fisher", "damping", 1e-3))
                fisher, self.last_backward_samples = _fisher(inputs, n, damping)
                scores = _per_chunk(inputs.plan, fisher)
            case _:  # random
                rng = np.random.default_rng([self.seed, inputs.round])
                scores = rng.random(inputs.plan.num_chunks)
        out = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        return [float(s) for s in np.clip(out, 0.0, _MAX_SCORE)]

    def _l2(self, plan: ChunkPlan, deltas: Sequence[np.ndarray]) -> np.ndarray:
        normalize = bool(self._opt("l2_norm", "normalize_by_size", True))
        boost = float(self._opt("l2_norm", "depth_boost", 0.3))
        n_tensors = max(1, len(plan.tensors) - 1)
        scores = np.empty(len(deltas))
        for i, (d, chunk) in enumerate(zip(deltas, plan.chunks, strict=True)):
            norm = float(np.linalg.norm(d))
            if normalize and d.size:
                norm /= float(np.sqrt(d.size))
            depth = chunk.segments[0].tensor / n_tensors if chunk.segments else 0.0
            scores[i] = norm * (1.0 + boost * depth)
        return scores


def _zero_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: torch.zeros_like(v) for k, v in model.state_dict().items()}


def _per_chunk(plan: ChunkPlan, scores: dict[str, torch.Tensor]) -> np.ndarray:
    return np.array([float(v.sum()) for v in plan.state_to_vectors(scores)])


def _cached_snip(inputs: ScoreInputs) -> dict[str, torch.Tensor] | None:
    """|gradient x weight| from the gradients the last training step left on the model (and
    cleared here); ``None`` when it left none (a user's step that clears them)."""
    model = inputs.model
    named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return None
    scores = _zero_scores(model)
    for name, p in named:
        assert p.grad is not None
        scores[name] = (p.grad * p.detach()).abs().to(device="cpu", dtype=scores[name].dtype)
    model.zero_grad(set_to_none=True)
    return scores


def _snip(inputs: ScoreInputs, batch_size: int) -> tuple[dict[str, torch.Tensor], int]:
    """|gradient x weight| per state-dict entry, and the number of samples in the batch."""
    model = inputs.model
    scores = _zero_scores(model)
    if len(inputs.x) == 0 or batch_size < 1:
        return scores, 0
    g = torch.Generator().manual_seed(inputs.round)
    idx = torch.randperm(len(inputs.x), generator=g)[:batch_size]
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(inputs.x[idx]), inputs.y[idx])
            loss.backward()
    finally:
        model.train(was_training)
    for name, p in model.named_parameters():
        if p.grad is not None:
            scores[name] = (p.grad * p.detach()).abs().to(scores[name].dtype)
    model.zero_grad(set_to_none=True)
    return scores, len(idx)


FISHER_BATCH = 32  # per-sample gradients computed at once (memory: this many model copies)


def _per_sample_grad_squares(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Sum over samples of each parameter's squared per-sample gradient.

    Vectorized with ``torch.func`` (``vmap`` of ``grad`` over ``functional_call``), PyTorch's
    tool for per-sample gradients; models it cannot vectorize (in-place ops, data-dependent
    control flow) fall back to one backward pass per sample.
    """
    params = {k: p.detach() for k, p in model.named_parameters() if p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    out = {k: torch.zeros_like(p) for k, p in params.items()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0))

    try:
        per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))
        with warnings.catch_warnings():
            # e.g. "no batching rule for scaled_dot_product attention": slower, still right
            warnings.filterwarnings("ignore", message=".*performance drop.*", category=UserWarning)
            for s in range(0, len(x), FISHER_BATCH):
                grads = per_sample(params, x[s : s + FISHER_BATCH], y[s : s + FISHER_BATCH])
                for k, g in grads.items():
                    out[k] += (g.detach() ** 2).sum(0)
        return out
    except RuntimeError:  # not vectorizable: the plain loop gives the same sums
        out = {k: torch.zeros_like(p) for k, p in params.items()}
    named = dict(model.named_parameters())
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for k in out:
            grad = named[k].grad
            if grad is not None:
                out[k] += grad.detach() ** 2
    return out


def _fisher(
    inputs: ScoreInputs, num_samples: int, damping: float
) -> tuple[dict[str, torch.Tensor], int]:
    """Diagonal empirical Fisher plus damping per state-dict entry, and the samples used."""
    model = inputs.model
    scores = _zero_scores(model)
    params = dict(model.named_parameters())
    n = max(0, min(num_samples, len(inputs.x)))
    if n:
        g = torch.Generator().manual_seed(inputs.round + 7919)
        idx = torch.randperm(len(inputs.x), generator=g)[:n]
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                squares = _per_sample_grad_squares(model, inputs.x[idx], inputs.y[idx])
            for name, total in squares.items():
                scores[name] += (total / n).to(scores[name].dtype)
        finally:
            model.train(was_training)
            model.zero_grad(set_to_none=True)
    for name in params:
        scores[name] += damping
    return scores, n
