"""The round loop of one participant: train → chunk → publish → exchange → aggregate → evaluate.

A :class:`Peer` composes a :class:`~fltorrent.learn.learner.Learner` (tensors), a
:class:`~fltorrent.swarm.Swarm` (bytes) and the pure aggregation functions. It holds no protocol
details and no math of its own; it decides *when* a round's exchange is over:

* as soon as every expected author's blob is complete; an author that left the federation is
  not waited for once nothing more of its blob can be fetched from any neighbour;
* otherwise at the soft deadline (``timeout`` after publishing) if ``min_completion_ratio`` of
  the expected pieces arrived, or at the hard deadline in any case (then the round goes on with
  what arrived and ``deadline_hit`` is recorded): a dead or slow peer never hangs the others.

Aggregation is per chunk over the authors whose chunk arrived (partial aggregation), with
contributions in author-id order so that peers holding the same updates compute identical models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np

from fltorrent.aggregate import partial_aggregate
from fltorrent.errors import FltorrentError
from fltorrent.learn.learner import Evaluation, Learner, LocalUpdate
from fltorrent.swarm import Blob, Buffer, Manifest, Swarm
from fltorrent.telemetry.events import RoundMetrics

log = logging.getLogger(__name__)
_T = TypeVar("_T")
MAX_SAMPLES = 1 << 40  # an aggregation weight beyond this is a lie, not a dataset


class Phase(StrEnum):
    """What a peer is doing."""

    STARTING = "starting"
    TRAINING = "training"
    EXCHANGING = "exchanging"
    AGGREGATING = "aggregating"
    EVALUATING = "evaluating"
    SEEDING = "seeding"
    DONE = "done"
    FAILED = "failed"


class PeerCrash(FltorrentError):
    """Raised by a fault hook to make a peer stop abruptly, as if its process died."""


FaultHook = Callable[[int, int, Phase], None]
"""Called with (peer id, round, phase) as a peer enters each phase; may raise PeerCrash."""


@dataclass(frozen=True)
class RoundPolicy:
    """When rounds end."""

    rounds: int
    timeout: float
    hard_timeout: float
    min_completion_ratio: float
    seed_grace: float


@dataclass
class PeerStatus:
    """A snapshot for the status API."""

    peer: int
    phase: Phase
    round: int
    completion: float
    accuracy: float | None


class Peer:
    """One participant's round loop."""

    def __init__(
        self,
        *,
        peer_id: int,
        learner: Learner,
        swarm: Swarm,
        members: set[int],
        policy: RoundPolicy,
        executor: Executor | None = None,
        on_metrics: Callable[[RoundMetrics], None] | None = None,
        on_phase: Callable[[PeerStatus], None] | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.learner = learner
        self.swarm = swarm
        self.members = set(members)
        self.departed: set[int] = set()
        self.policy = policy
        self.executor = executor
        self.on_metrics = on_metrics
        self.on_phase = on_phase
        self.fault_hook = fault_hook
        self.phase = Phase.STARTING
        self.round = 0
        self.completion = 0.0
        self.accuracy: float | None = None
        self.history: list[RoundMetrics] = []
        self._equivocators: set[int] = set()
        self.last_update: LocalUpdate | None = None  # this round's own update, before aggregation
        self.plan_digest = learner.plan.digest()
        self._chunk_sizes = tuple(c.nbytes for c in learner.plan.chunks)
        self._start = time.perf_counter()

    # ------------------------------------------------------------------ status
    def status(self) -> PeerStatus:
        """Where this peer is."""
        return PeerStatus(self.peer_id, self.phase, self.round, self.completion, self.accuracy)

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        if self.fault_hook is not None:
            self.fault_hook(self.peer_id, self.round, phase)
        if self.on_phase is not None:
            self.on_phase(self.status())

    def member_left(self, peer_id: int) -> None:
        """The tracker says ``peer_id`` is gone: stop waiting for it."""
        if peer_id in self.members and peer_id != self.peer_id:
            # Only the round's waiting changes: the tracker is not in the data path, so a
            # session with that peer (if it is in fact alive) is left alone.
            self.departed.add(peer_id)
            self.swarm.notify()

    def check_manifest(self, manifest: Manifest) -> str | None:
        """Swarm hook: refuse blobs that cannot be aggregated into our model."""
        if manifest.meta != self.plan_digest:
            return "chunk plan differs from ours (another model or chunking)"
        if manifest.author not in self.members:
            return f"author {manifest.author} is not a member"
        if manifest.piece_sizes != self._chunk_sizes:
            # The digest is public (every honest manifest carries it): check the shape too.
            return "piece count or sizes do not match the chunk plan"
        if not self.round <= manifest.round <= self.round + 1:
            return f"round {manifest.round} is outside the current window"
        if not 0 < manifest.num_samples <= MAX_SAMPLES:
            return f"sample count {manifest.num_samples} is out of range"
        return None

    # ------------------------------------------------------------------ rounds
    async def run(self) -> list[RoundMetrics]:
        """Run every round, then seed for the grace period; returns the metrics."""
        for r in range(1, self.policy.rounds + 1):
            await self._round(r)
        self._enter(Phase.SEEDING)
        return self.history

    async def _in_worker(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _round(self, r: int) -> None:
        self.round = r
        self.completion = 0.0
        start_counters = self.swarm.counters.snapshot()
        self._enter(Phase.TRAINING)
        t0 = time.perf_counter()
        update: LocalUpdate = await self._in_worker(lambda: self.learner.local_round(r))
        train_s = time.perf_counter() - t0
        self.last_update = update

        manifest = Manifest.build(
            author=self.peer_id,
            round=r,
            pieces=update.chunks,
            num_samples=update.num_samples,
            importance=update.importance,
            meta=self.plan_digest,
        )
        self.swarm.drop_blobs(lambda m: m.round < r - 1)
        me = self.peer_id
        # This round and the next (a faster peer may already publish it), nothing beyond.
        self.swarm.set_want(lambda rr, author: r <= rr <= r + 1 and author != me)
        self.swarm.publish(manifest, update.chunks, verify=False)  # built from them just now
        self._enter(Phase.EXCHANGING)
        t1 = time.perf_counter()
        deadline_hit = await self._exchange(r)
        exchange_s = time.perf_counter() - t1

        # What arrived when the exchange ended is what gets aggregated and reported (pieces
        # may keep arriving meanwhile). Snapshot in the loop thread; the worker then reads
        # stored pieces, which are never modified.
        expected, received, pieces_expected = self._progress(r)
        held = {
            a: (float(b.manifest.num_samples), list(b.pieces))
            for a, b in self._round_blobs(r).items()
        }
        self._enter(Phase.AGGREGATING)
        t2 = time.perf_counter()
        n_authors, n_partial = await self._in_worker(lambda: self._aggregate(update, held))
        aggregate_s = time.perf_counter() - t2

        self._enter(Phase.EVALUATING)
        t3 = time.perf_counter()
        ev: Evaluation = await self._in_worker(self.learner.evaluate)
        eval_s = time.perf_counter() - t3
        self.accuracy = ev.accuracy

        c = self.swarm.counters.minus(start_counters)
        metrics = RoundMetrics(
            round=r,
            peer=self.peer_id,
            accuracy=ev.accuracy,
            loss=ev.loss,
            local_accuracy=ev.local_accuracy,
            train_loss=update.train.loss,
            num_samples=update.num_samples,
            train_s=train_s,
            exchange_s=exchange_s,
            aggregate_s=aggregate_s,
            eval_s=eval_s,
            bytes_up=c.bytes_up,
            bytes_down=c.bytes_down,
            payload_bytes_up=c.payload_up,
            payload_bytes_down=c.payload_down,
            duplicate_bytes=c.duplicate_bytes,
            control_bytes=c.control_up + c.control_down,
            corrupt_pieces=c.corrupt_pieces,
            pieces_expected=pieces_expected,
            pieces_received=received,
            completion=self.completion,
            authors_expected=len(expected),
            authors_aggregated=n_authors,
            partial_chunks=n_partial,
            deadline_hit=deadline_hit,
            wall_s=time.perf_counter() - self._start,
        )
        self.history.append(metrics)
        if self.on_metrics is not None:
            self.on_metrics(metrics)
        log.info(
            "peer %d round %d: acc %.3f completion %.2f authors %d",
            self.peer_id,
            r,
            ev.accuracy,
            self.completion,
            n_authors,
        )

    # ------------------------------------------------------------------ exchange
    def _round_blobs(self, r: int) -> dict[int, Blob]:
        found: dict[int, Blob] = {}
        twice: set[int] = set()
        for b in self.swarm.blobs.values():
            m = b.manifest
            if m.round != r or m.author == self.peer_id:
                continue
            if m.author in found:
                twice.add(m.author)
            found[m.author] = b
        for author in twice - self._equivocators:
            # Two different updates for one round: trust neither (issue 5 goes further).
            log.warning(
                "peer %d round %d: author %d published two different updates; both ignored",
                self.peer_id,
                r,
                author,
            )
            self._equivocators.add(author)
        for author in twice:
            del found[author]
        return found

    def _expected(self, blobs: dict[int, Blob]) -> set[int]:
        live = self.members - self.departed - {self.peer_id}
        return live | set(blobs)

    def _progress(self, r: int) -> tuple[set[int], int, int]:
        blobs = self._round_blobs(r)
        expected = self._expected(blobs)
        per_blob = self.learner.plan.num_chunks
        received = sum(b.num_have for a, b in blobs.items() if a in expected)
        total = len(expected) * per_blob
        self.completion = received / total if total else 1.0
        return expected, received, total

    def _complete(self, r: int) -> bool:
        blobs = self._round_blobs(r)
        self._progress(r)
        for author in self._expected(blobs):
            blob = blobs.get(author)
            if blob is not None and blob.complete:
                continue
            if author in self.departed and (blob is None or not self.swarm.obtainable(blob)):
                continue
            return False
        return True

    async def _exchange(self, r: int) -> bool:
        """Wait for the round's blobs; returns whether a deadline ended the wait."""
        policy = self.policy
        if await self.swarm.wait_for(lambda: self._complete(r), policy.timeout):
            return False
        enough = await self.swarm.wait_for(
            lambda: self._complete(r) or self.completion >= policy.min_completion_ratio,
            max(0.0, policy.hard_timeout - policy.timeout),
        )
        if not enough:
            log.warning(
                "peer %d round %d: hard deadline with completion %.2f < %.2f",
                self.peer_id,
                r,
                self.completion,
                policy.min_completion_ratio,
            )
        return True

    # ------------------------------------------------------------------ aggregation
    def _aggregate(
        self, update: LocalUpdate, held: dict[int, tuple[float, list[Buffer | None]]]
    ) -> tuple[int, int]:
        """Aggregate and load; returns (authors aggregated, chunks with fewer authors)."""
        plan = self.learner.plan
        authors = sorted({self.peer_id, *held})
        received: list[list[tuple[np.ndarray, float]]] = []
        counts = []
        contributors: set[int] = {self.peer_id}
        for c in range(plan.num_chunks):
            contributions: list[tuple[np.ndarray, float]] = []
            for a in authors:
                if a == self.peer_id:
                    contributions.append((update.vectors[c], float(update.num_samples)))
                    continue
                weight, pieces = held[a]
                data = pieces[c]
                if data is not None:
                    contributors.add(a)
                    contributions.append((plan.chunk_to_vector(c, data), weight))
            received.append(contributions)
            counts.append(len(contributions))
        self.learner.load_vectors(partial_aggregate(update.vectors, received))
        n_authors = len(contributors)
        return n_authors, sum(1 for k in counts if k < n_authors)
