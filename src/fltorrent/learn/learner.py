"""One peer's learning state: model, local data, chunk plan and importance scorer.

The peer calls these methods from a worker thread (training must not block the event loop that
keeps serving neighbours); nothing here knows about sockets or rounds beyond a number.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fltorrent.learn.accel import GPU_SHARES
from fltorrent.learn.flops import TRAIN_FACTOR, forward_flops_per_sample
from fltorrent.learn.importance import ImportanceScorer, ScoreInputs
from fltorrent.learn.layout import Layout, plan_for_model
from fltorrent.learn.train import TrainResult, evaluate, train_local


@dataclass(frozen=True)
class LocalUpdate:
    """The result of one round of local work, ready to publish."""

    chunks: list[bytes]
    vectors: list[np.ndarray]
    importance: list[float]
    num_samples: int
    train: TrainResult
    score_s: float


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and loss on the global and the local test set."""

    accuracy: float
    loss: float
    local_accuracy: float
    local_loss: float


class EvalCache:
    """Test-set results by model state, shared by the learners of one process.

    Evaluation is a pure function of the model's state and the data, so peers that hold the same
    model (all_to_all with complete delivery: every peer) evaluate it on the shared test set
    once. Keyed by a SHA-256 of every state tensor and the test set's identity; thread-safe (the
    in-process launcher evaluates in worker threads); keeps the ``size`` latest entries.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.hits = 0
        self._lock = threading.Lock()
        self._results: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    @staticmethod
    def key(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> bytes:
        """The state of ``model`` and the identity of the data (shared tensors, same memory)."""
        h = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        for t in (x, y):
            h.update(f"{t.data_ptr()}:{tuple(t.shape)}:{t.dtype}".encode())
        return h.digest()

    def evaluate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """``evaluate(model, x, y)``, computed once per distinct model state."""
        key = self.key(model, x, y)
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self.hits += 1
                self._results.move_to_end(key)
        if found is not None:
            model.eval()  # as evaluate() leaves it
            return found
        result = evaluate(model, x, y)
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.size:
                self._results.popitem(last=False)
        return result


class Learner:
    """Model + data + plan of one peer."""

    def __init__(
        self,
        *,
        model: nn.Module,
        train_data: tuple[torch.Tensor, torch.Tensor],
        test_data: tuple[torch.Tensor, torch.Tensor],
        local_test_data: tuple[torch.Tensor, torch.Tensor],
        plan_size: Mapping[str, int],
        train_options: Mapping[str, Any],
        scorer: ImportanceScorer,
        seed: int = 0,
        layout: Layout = "auto",
        eval_cache: EvalCache | None = None,
        train_fn: Callable[..., float | None] | None = None,
        eval_fn: Callable[..., tuple[float, float]] | None = None,
        device: torch.device | None = None,
        gpu_share: float = 1.0,
        gpu_wait: float = 600.0,
    ) -> None:
        self.model = model
        self.x, self.y = train_data
        self.x_test, self.y_test = test_data
        self.x_local, self.y_local = local_test_data
        self.plan = plan_for_model(model, layout=layout, **plan_size)
        self.train_options = dict(train_options)
        self.scorer = scorer
        self.seed = seed
        self.eval_cache = eval_cache
        # The user's own training and evaluation (train.step, train.evaluate), or ours.
        self.train_fn = train_fn
        self.eval_fn = eval_fn
        # Where training and evaluation run (the model is back on the CPU between them).
        self.device = device or torch.device("cpu")
        self.gpu_share = gpu_share
        self.gpu_wait = gpu_wait
        self._forward_flops: float | None = None

    @contextmanager
    def _placed(self) -> Iterator[torch.device]:
        """Inside, the model is on :attr:`device` (holding this peer's share of a GPU)."""
        if self.device.type == "cpu":
            yield self.device
            return
        with GPU_SHARES.hold(self.device, self.gpu_share, timeout=self.gpu_wait):
            self.model.to(self.device)
            try:
                yield self.device
            finally:
                self.model.to("cpu")

    @property
    def forward_flops(self) -> float:
        """Forward FLOPs per sample (counted once, for the simulated compute clock)."""
        if self._forward_flops is None:
            sample = self.x[0] if len(self.x) else self.x_test[0]
            self._forward_flops = forward_flops_per_sample(self.model, sample)
        return self._forward_flops

    def train_flops(self) -> float:
        """FLOPs of the last :meth:`local_round`: training, and the forward and backward passes
        the importance scorer ran (snip, fisher)."""
        epochs = float(self.train_options.get("epochs", 1))
        samples = self.num_samples * epochs + self.scorer.last_backward_samples
        return TRAIN_FACTOR * self.forward_flops * samples

    def eval_flops(self) -> float:
        """FLOPs of one :meth:`evaluate`."""
        return self.forward_flops * (len(self.y_test) + len(self.y_local))

    @property
    def num_samples(self) -> int:
        """Local training samples."""
        return len(self.y)

    def vectors(self) -> list[np.ndarray]:
        """The model's current state, one float64 vector per chunk."""
        return self.plan.state_to_vectors(self.model.state_dict())

    def local_round(
        self, round_: int, correction: Sequence[np.ndarray] | None = None
    ) -> LocalUpdate:
        """Train one round, then cut the model into chunks and score them. ``correction``
        (SCAFFOLD's, per chunk) is added to every step's gradient."""
        before = self.vectors()
        seed = self.seed * 100_003 + round_
        with self._placed() as device:
            x, y = self.x.to(device), self.y.to(device)
            result = self._train(x, y, seed, self._per_parameter(correction))
        state = self.model.state_dict()
        chunks = self.plan.split(state)
        after = [self.plan.chunk_to_vector(i, c) for i, c in enumerate(chunks)]
        t0 = time.perf_counter()
        importance = self.scorer.score(
            ScoreInputs(
                plan=self.plan,
                before=before,
                after=after,
                model=self.model,
                x=self.x,
                y=self.y,
                train_loss=result.loss,
                round=round_,
            )
        )
        return LocalUpdate(
            chunks=chunks,
            vectors=after,
            importance=importance,
            num_samples=result.num_samples,
            train=result,
            score_s=time.perf_counter() - t0,
        )

    def _per_parameter(self, vectors: Sequence[np.ndarray] | None) -> list[torch.Tensor] | None:
        """Chunk vectors as one tensor per trainable parameter (``model.parameters()`` order)."""
        if vectors is None:
            return None
        state = self.plan.vectors_to_state(vectors)
        return [state[name] for name, p in self.model.named_parameters() if p.requires_grad]

    def _train(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        seed: int,
        correction: list[torch.Tensor] | None = None,
    ) -> TrainResult:
        if self.train_fn is None:
            return train_local(
                self.model, x, y, seed=seed, correction=correction, **self.train_options
            )
        t0 = time.perf_counter()
        self.model.train()
        loss = self.train_fn(
            model=self.model, x=x, y=y, options=dict(self.train_options), seed=seed
        )
        opts = self.train_options
        batches = math.ceil(len(y) / int(opts.get("batch_size", 32)))
        return TrainResult(
            num_samples=len(y),
            loss=math.nan if loss is None else float(loss),
            steps=batches * int(opts.get("epochs", 1)),
            seconds=time.perf_counter() - t0,
        )

    def load_vectors(self, vectors: Sequence[np.ndarray]) -> None:
        """Replace the model's state by aggregated chunk vectors."""
        self.model.load_state_dict(self.plan.vectors_to_state(vectors))

    def evaluate(self) -> Evaluation:
        """Evaluate on the global test set and on this peer's local test split."""
        if self.device.type != "cpu":
            with self._placed() as device:
                glob = self._evaluate(self.x_test.to(device), self.y_test.to(device))
                local = self._evaluate(self.x_local.to(device), self.y_local.to(device))
            return Evaluation(*glob, *local)
        if self.eval_fn is None and self.eval_cache is not None:
            glob = self.eval_cache.evaluate(self.model, self.x_test, self.y_test)
        else:
            glob = self._evaluate(self.x_test, self.y_test)
        return Evaluation(*glob, *self._evaluate(self.x_local, self.y_local))

    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        if self.eval_fn is None:
            return evaluate(self.model, x, y)
        self.model.eval()
        with torch.no_grad():
            return self.eval_fn(model=self.model, x=x, y=y)
