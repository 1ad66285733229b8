"""The stages of a round that come before the exchange: train, privatize, encode and publish.

The peer runs them in this order each round, then hands the exchange to its round plan
(:mod:`fltorrent.plans`) and evaluates:

1. *train* (:meth:`Peer._train`): local training, or nothing when the device sits the round out
   or the publisher does not train (a free rider);
2. *privatize* (:data:`Privatizer`): rewrites what was trained before it leaves the peer
   (differential privacy, masking for secure aggregation will go here); the identity now;
3. *publish* (:class:`Publisher`): encodes the update (compression by device tier) into pieces,
   builds the manifest and hands both to the swarm. The honest publisher is
   :class:`HonestPublisher`; an attack is another publisher (``fltorrent.attacks.publishing``),
   injected by the runtime, so the honest path holds no attack code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fltorrent.aggregate.momentum import server_momentum
from fltorrent.aggregate.scaffold import drift_gradient, local_control, mean_steps
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.compress import Codec
from fltorrent.learn.learner import LocalUpdate
from fltorrent.learn.update_codec import UpdateEncoder
from fltorrent.swarm import Manifest, Swarm

Vectors = list[np.ndarray]
Mask = Sequence[np.ndarray]  # per chunk, the coordinates that are weights


@dataclass(frozen=True)
class Trained:
    """What the train stage produced for publishing."""

    update: LocalUpdate | None  # None: no local training this round (e.g. a free rider)
    vectors: Vectors  # the model to publish, one vector per chunk
    raw: list[bytes]  # the same as raw chunk pieces (empty: the publisher builds them)
    importance: list[float]
    num_samples: int


Privatizer = Callable[[Trained], Trained]
"""Rewrites an update before it is published (the identity by default)."""


def no_privacy(trained: Trained) -> Trained:
    """The default privatize stage: publish what was trained."""
    return trained


@dataclass(frozen=True)
class PublishContext:
    """What a publisher needs to publish one round's update."""

    round: int
    me: int
    before: Vectors  # the round-start model
    compression: Codec
    swarm: Swarm
    encoder: UpdateEncoder
    chunk_plan: ChunkPlan


@dataclass(frozen=True)
class Published:
    """What publishing left for the peer: its own contribution to aggregate, the update as
    the others decode it, and the bytes compression saved."""

    own: Vectors
    sent: Vectors
    bytes_saved: int


class Publisher(Protocol):
    """Turns a trained update into a published blob (see the module docstring)."""

    @property
    def trains(self) -> bool:
        """Whether the peer trains before publishing."""
        ...

    @property
    def attacker(self) -> bool:
        """Whether this publisher lies (experiments; recorded in the metrics)."""
        ...

    def publish(self, ctx: PublishContext, trained: Trained) -> Published:
        """Encode and publish ``trained``; returns the peer's own contribution."""
        ...

    def observe(
        self, base: Sequence[np.ndarray], others: Mapping[int, Mapping[int, np.ndarray]]
    ) -> None:
        """Sees the updates the peer received this round (author -> chunk -> vector)."""
        ...


def publish_update(
    ctx: PublishContext, trained: Trained, vectors: Vectors, raw: list[bytes]
) -> tuple[Manifest, list[bytes], Vectors, int]:
    """Encode ``vectors`` (raw pieces ``raw``) with the round's codec and build its manifest;
    returns the manifest, the pieces, the decoded vectors and the bytes compression saved."""
    encoded = ctx.encoder.encode(ctx.compression, before=ctx.before, after=vectors, raw_pieces=raw)
    manifest = Manifest.build(
        author=ctx.me,
        round=ctx.round,
        pieces=encoded.pieces,
        num_samples=trained.num_samples,
        importance=trained.importance,
        meta=encoded.meta,
    )
    return manifest, encoded.pieces, encoded.vectors, encoded.bytes_saved


class HonestPublisher:
    """Publishes what was trained, as it is (encoded by the device's codec)."""

    trains = True
    attacker = False

    def publish(self, ctx: PublishContext, trained: Trained) -> Published:
        manifest, pieces, vectors, saved = publish_update(
            ctx, trained, trained.vectors, trained.raw
        )
        ctx.swarm.publish(manifest, pieces, verify=False)  # built from them just now
        return Published(own=vectors, sent=vectors, bytes_saved=saved)

    def observe(
        self, base: Sequence[np.ndarray], others: Mapping[int, Mapping[int, np.ndarray]]
    ) -> None:
        """An honest peer keeps nothing of what it received."""


class ServerMomentum:
    """The stage between aggregation and the next round: FedAvgM's momentum on this peer's
    own aggregate (:func:`fltorrent.aggregate.momentum.server_momentum`); it keeps the
    velocity from round to round."""

    def __init__(self, *, beta: float, lr: float = 1.0) -> None:
        self.beta = beta
        self.lr = lr
        self.velocity: list[np.ndarray] | None = None

    def __call__(
        self,
        base: Sequence[np.ndarray],
        aggregate: Sequence[np.ndarray],
        mask: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        model, self.velocity = server_momentum(
            base, aggregate, self.velocity, beta=self.beta, lr=self.lr, mask=mask
        )
        return model


class Scaffold:
    """SCAFFOLD's stages (:mod:`fltorrent.aggregate.scaffold`): the correction ``c - c_i`` for
    local training, the peer's own variate after it, and the federation's from each round's
    aggregate. It keeps both variates from round to round."""

    def __init__(self, *, lr: float, epochs: int, batch_size: int) -> None:
        self.lr = lr  # the effective SGD step (momentum included)
        self.epochs = epochs
        self.batch_size = batch_size
        self.own: list[np.ndarray] | None = None  # c_i
        self.federation: list[np.ndarray] | None = None  # c

    def correction(self) -> list[np.ndarray] | None:
        """``c - c_i`` per chunk (``None`` while both are 0)."""
        if self.own is None and self.federation is None:
            return None
        zero = [np.zeros_like(v) for v in (self.own or self.federation or [])]
        return [f - o for f, o in zip(self.federation or zero, self.own or zero, strict=True)]

    def trained(
        self, start: Sequence[np.ndarray], end: Sequence[np.ndarray], steps: int, mask: Mask
    ) -> None:
        """After local training from ``start`` to ``end`` in ``steps`` steps."""
        if steps > 0:
            drift = drift_gradient(start, end, steps=steps, lr=self.lr, mask=mask)
            self.own = local_control(self.own, self.federation, drift)

    def aggregated(
        self,
        start: Sequence[np.ndarray],
        aggregate: Sequence[np.ndarray],
        samples: Sequence[float],
        mask: Mask,
    ) -> None:
        """After the round's aggregate of the authors with ``samples``."""
        if samples:
            k = mean_steps(samples, epochs=self.epochs, batch_size=self.batch_size)
            self.federation = drift_gradient(start, aggregate, steps=k, lr=self.lr, mask=mask)
