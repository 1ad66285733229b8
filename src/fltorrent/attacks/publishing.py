"""Attacks as a publishing stage: a Byzantine peer runs the ordinary round and lies only in what
it publishes (and, for chunk poisoning, in what its swarm serves).

:class:`AttackPublisher` replaces the honest publisher of :mod:`fltorrent.stages`; the runtime
injects it for the configured attackers. It keeps the attacker's honest update as the peer's own
contribution, so attacks do not compound on the attacker's own model.

* Crafted updates (sign flip, scale, noise, ALIE, IPM, min-max, free riding): the chunk vectors
  of :meth:`Adversary.craft` are published instead of the trained ones.
* ``equivocate``: the honest update goes to even-numbered neighbours and
  :meth:`Adversary.twin` to odd-numbered ones (the swarm's ``audience`` hook); neighbours relay
  both manifests, and a peer holding two blobs of one author, round and topic ignores both.
* ``chunk_poison``: :func:`poison_block` is the swarm's ``serve_hook``: every block served has its
  bytes inverted, so receivers' hash checks reject it and the poisoner is banned after
  ``max_corrupt`` bad pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fltorrent.attacks.behaviour import Adversary
from fltorrent.stages import PublishContext, Published, Trained, publish_update
from fltorrent.swarm import Buffer, Manifest

_INVERT = bytes(range(255, -1, -1))


def poison_block(data: Buffer) -> bytes:
    """A served block with every byte inverted (it fails the receiver's hash check)."""
    return bytes(data).translate(_INVERT)


class AttackPublisher:
    """Publishes what :class:`Adversary` crafts instead of the honest update."""

    def __init__(self, adversary: Adversary) -> None:
        self.adversary = adversary

    attacker = True

    @property
    def trains(self) -> bool:
        return self.adversary.trains

    def publish(self, ctx: PublishContext, trained: Trained) -> Published:
        adversary = self.adversary
        plan = ctx.chunk_plan
        published = adversary.craft(ctx.before, trained.vectors)
        raw = [plan.vector_to_chunk(i, v) for i, v in enumerate(published)]
        manifest, pieces, sent, saved = publish_update(ctx, trained, published, raw)
        if manifest.meta == plan.digest():  # raw: others decode the pieces, not our float64s
            sent = [plan.chunk_to_vector(i, p) for i, p in enumerate(pieces)]
        if adversary.kind == "equivocate":
            twin = adversary.twin(ctx.before, published)
            other_pieces = [plan.vector_to_chunk(i, v) for i, v in enumerate(twin)]
            other = Manifest.build(
                author=ctx.me,
                round=ctx.round,
                pieces=other_pieces,
                num_samples=trained.num_samples,
                importance=trained.importance,
                meta=plan.digest(),
            )
            ctx.swarm.publish(manifest, pieces, verify=False, audience=lambda rid: rid % 2 == 0)
            ctx.swarm.publish(other, other_pieces, verify=False, audience=lambda rid: rid % 2 == 1)
        else:
            ctx.swarm.publish(manifest, pieces, verify=False)
        # The attacker keeps its honest update for itself (its attack does not compound).
        return Published(own=trained.vectors, sent=sent, bytes_saved=saved)

    def observe(
        self, base: Sequence[np.ndarray], others: Mapping[int, Mapping[int, np.ndarray]]
    ) -> None:
        if self.adversary.watches:
            self.adversary.observe(base, others, len(base))
