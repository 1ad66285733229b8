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

A peer with a :class:`~fltorrent.devices.device.Device` asks it each round whether to train
(battery, charging, heat) and how to encode its update (compression by device tier). A peer that
sits a round out still receives, relays and aggregates; it tells the others through
``on_skip`` so that nobody waits for its update. Time is the event loop's clock: in simulation
(``simulated=True``) compute runs inline and is charged to the virtual clock from its FLOP count
and the device's speed; in real mode it runs in the executor and a slower device is emulated by
padding the measured time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import numpy as np

from fltorrent.attacks.behaviour import Adversary
from fltorrent.defense import Defense, DefenseReport
from fltorrent.devices.device import Device, Participation
from fltorrent.errors import FltorrentError
from fltorrent.learn.learner import Learner, LocalUpdate
from fltorrent.learn.update_codec import UpdateEncoder, decode_updates, manifest_problem
from fltorrent.peer_metrics import round_metrics
from fltorrent.swarm import Blob, Buffer, Manifest, Swarm
from fltorrent.swarm.adversary import AdversarialSwarm
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
    critical_window: float = 0.25  # last share of `timeout` in which the picker is critical


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
        on_skip: Callable[[int], None] | None = None,
        fault_hook: FaultHook | None = None,
        device: Device | None = None,
        simulated: bool = False,
        encoder: UpdateEncoder | None = None,
        clock_origin: float | None = None,
        defense: Defense | None = None,
        adversary: Adversary | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.learner = learner
        self.swarm = swarm
        self.members = set(members)
        self.departed: set[int] = set()
        self.skipped: dict[int, set[int]] = {}  # round -> members sitting it out
        self._back_from: dict[int, int] = {}  # rejoined member -> first round it takes part in
        self.policy = policy
        self.executor = executor
        self.on_metrics = on_metrics
        self.on_phase = on_phase
        self.on_skip = on_skip
        self.fault_hook = fault_hook
        self.device = device
        self.simulated = simulated
        self.encoder = encoder or UpdateEncoder(learner.plan, seed=learner.seed)
        self.defense = defense or Defense()
        plan = learner.plan
        self._weights_mask = [plan.floating(c) for c in range(plan.num_chunks)]
        self.adversary = adversary
        self.phase = Phase.STARTING
        self.round = 0
        self.completion = 0.0
        self.accuracy: float | None = None
        self.history: list[RoundMetrics] = []
        self._equivocated: dict[int, set[int]] = {}  # round -> authors caught equivocating
        self.last_update: LocalUpdate | None = None  # this round's own update, before aggregation
        loop = asyncio.get_running_loop()
        self._start = loop.time()
        self._origin = self._start if clock_origin is None else clock_origin

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

    def member_joined(self, peer_id: int, first_round: int) -> None:
        """``peer_id`` is back (it rejoined after a crash): expect its updates again from
        ``first_round`` on (it skips the rounds it missed)."""
        if peer_id in self.members and peer_id != self.peer_id:
            self.departed.discard(peer_id)
            self._back_from[peer_id] = first_round
            self.swarm.notify()

    def member_skipped(self, peer_id: int, round_: int) -> None:
        """``peer_id`` publishes no update in ``round_`` (its device policy said no)."""
        if peer_id in self.members and peer_id != self.peer_id:
            self.skipped.setdefault(round_, set()).add(peer_id)
            self.swarm.notify()

    def check_manifest(self, manifest: Manifest) -> str | None:
        """Swarm hook: refuse blobs that cannot be aggregated into our model."""
        problem = manifest_problem(self.learner.plan, manifest.meta, manifest.piece_sizes)
        if problem is not None:
            return problem
        if manifest.author not in self.members:
            return f"author {manifest.author} is not a member"
        if not self.round <= manifest.round <= self.round + 1:
            return f"round {manifest.round} is outside the current window"
        if not 0 < manifest.num_samples <= MAX_SAMPLES:
            return f"sample count {manifest.num_samples} is out of range"
        return None

    # ------------------------------------------------------------------ rounds
    async def run(self, *, first_round: int = 1) -> list[RoundMetrics]:
        """Run every round from ``first_round``, then seed for the grace period."""
        for r in range(first_round, self.policy.rounds + 1):
            await self._round(r)
        self._enter(Phase.SEEDING)
        return self.history

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _work(
        self, fn: Callable[[], _T], flops: Callable[[], float], speed: float = 1.0
    ) -> tuple[_T, float]:
        """Run local compute; returns its result and its (virtual or padded real) duration.

        ``flops`` is only asked for in simulation (counting them costs a second the first time).
        """
        t0 = self._now()
        if self.simulated:
            result = fn()  # blocking the loop costs no virtual time: charge the model instead
            seconds = self.device.compute_seconds(flops(), speed) if self.device else 0.0
            await asyncio.sleep(seconds)
        else:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, fn)
            if self.device is not None:
                await asyncio.sleep(self.device.real_padding(self._now() - t0, speed))
        elapsed = self._now() - t0
        if self.device is not None:
            self.device.busy(elapsed, now=self._now() - self._origin)
        return result, elapsed

    async def _round(self, r: int) -> None:
        self.round = r
        self.completion = 0.0
        start_counters = self.swarm.counters.snapshot()
        self._enter(Phase.TRAINING)
        learner = self.learner
        now = self._now() - self._origin
        decision = self.device.decide(now) if self.device is not None else Participation()
        before = learner.vectors()
        update: LocalUpdate | None = None
        train_s = 0.0
        bytes_saved = 0
        own = before
        me = self.peer_id
        self.swarm.drop_blobs(lambda m: m.round < r - 1)
        # This round and the next (a faster peer may already publish it), nothing beyond.
        self.swarm.set_want(lambda rr, author: r <= rr <= r + 1 and author != me)
        if decision.train:
            adversary = self.adversary
            if adversary is None or adversary.trains:
                trained, train_s = await self._work(
                    lambda: learner.local_round(r), learner.train_flops, decision.speed
                )
                update = trained
                honest, raw = trained.vectors, trained.chunks
                importance, samples = trained.importance, trained.num_samples
            else:  # a free rider: publishes without training
                honest, raw = before, []  # raw pieces: crafted below
                importance, samples = [0.0] * len(before), learner.num_samples
            if adversary is not None:
                published = adversary.craft(before, honest)
                raw = [learner.plan.vector_to_chunk(i, v) for i, v in enumerate(published)]
            else:
                published = honest
            encoded = self.encoder.encode(
                decision.compression, before=before, after=published, raw_pieces=raw
            )
            # An attacker keeps its honest update for itself (its attack does not compound).
            own = encoded.vectors if adversary is None else honest
            bytes_saved = encoded.bytes_saved
            manifest = Manifest.build(
                author=me,
                round=r,
                pieces=encoded.pieces,
                num_samples=samples,
                importance=importance,
                meta=encoded.meta,
            )
            swarm = self.swarm
            if isinstance(swarm, AdversarialSwarm) and adversary and adversary.kind == "equivocate":
                twin = adversary.twin(before, published)
                pieces = [learner.plan.vector_to_chunk(i, v) for i, v in enumerate(twin)]
                other = Manifest.build(
                    author=me, round=r, pieces=pieces, num_samples=samples,
                    importance=importance, meta=learner.plan.digest(),
                )  # fmt: skip
                swarm.publish_to(manifest, encoded.pieces, lambda rid: rid % 2 == 0)
                swarm.publish_to(other, pieces, lambda rid: rid % 2 == 1)
            else:
                swarm.publish(manifest, encoded.pieces, verify=False)  # built from them just now
        else:
            log.info("peer %d round %d: sits out (%s)", me, r, decision.reason)
            if self.on_skip is not None:
                self.on_skip(r)
        self.last_update = update
        self._enter(Phase.EXCHANGING)
        t1 = self._now()
        deadline_hit = await self._exchange(r)
        exchange_s = self._now() - t1

        # What arrived when the exchange ended is what gets aggregated and reported (pieces
        # may keep arriving meanwhile). Snapshot in the loop thread; the worker then reads
        # stored pieces, which are never modified.
        expected, received, pieces_expected = self._progress(r)
        held = {
            a: (float(b.manifest.num_samples), b.manifest.meta, list(b.pieces))
            for a, b in self._round_blobs(r).items()
        }
        weight = float(update.num_samples) if update is not None else None
        self._enter(Phase.AGGREGATING)
        report, aggregate_s = await self._work(
            lambda: self._aggregate(r, before, own, weight, held),
            lambda: float(sum(len(v) for v in before) * 2 * (len(held) + 1)),
        )

        self._enter(Phase.EVALUATING)
        ev, eval_s = await self._work(learner.evaluate, learner.eval_flops)
        self.accuracy = ev.accuracy
        now = self._now()
        metrics = round_metrics(
            peer_id=self.peer_id,
            r=r,
            ev=ev,
            update=update,
            decision=decision,
            counters=self.swarm.counters.minus(start_counters),
            times=(train_s, exchange_s, aggregate_s, eval_s),
            progress=(len(expected), received, pieces_expected),
            completion=self.completion,
            report=report,
            deadline_hit=deadline_hit,
            bytes_saved=bytes_saved,
            wall_s=now - self._start,
            sim_time_s=now - self._origin if self.simulated else None,
            device=self.device,
            attacker=self.adversary is not None,
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
            report.authors,
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
        caught = self._equivocated.setdefault(r, set())
        for author in twice - caught:
            # Two different updates for one round (manifests told apart by their hashes, which
            # neighbours relay): trust neither; the author is excluded for the round.
            log.warning(
                "peer %d round %d: author %d published two different updates; both ignored",
                self.peer_id,
                r,
                author,
            )
        caught |= twice
        for author in caught:
            found.pop(author, None)
        return found

    def _expected(self, r: int, blobs: dict[int, Blob]) -> set[int]:
        returning = {p for p, first in self._back_from.items() if r < first}
        gone = self.departed | self.skipped.get(r, set()) | returning
        gone |= self._equivocated.get(r, set())
        return (self.members - gone - {self.peer_id}) | set(blobs)

    def _progress(self, r: int) -> tuple[set[int], int, int]:
        blobs = self._round_blobs(r)
        expected = self._expected(r, blobs)
        per_blob = self.learner.plan.num_chunks
        received = sum(b.num_have for a, b in blobs.items() if a in expected)
        total = len(expected) * per_blob
        self.completion = received / total if total else 1.0
        return expected, received, total

    def _complete(self, r: int) -> bool:
        blobs = self._round_blobs(r)
        self._progress(r)
        for author in self._expected(r, blobs):
            blob = blobs.get(author)
            if blob is not None and blob.complete:
                continue
            away = author in self.departed or r < self._back_from.get(author, 0)
            away |= self.swarm.banned(author)  # it poisoned chunks: what it holds is not usable
            if away and (blob is None or not self.swarm.obtainable(blob)):
                continue
            return False
        return True

    async def _exchange(self, r: int) -> bool:
        """Wait for the round's blobs; returns whether a deadline ended the wait."""
        policy = self.policy
        if policy.critical_window > 0:
            critical = (1 - policy.critical_window) * policy.timeout
            self.swarm.set_critical(r, self._now() + critical)
        try:
            if await self.swarm.wait_for(lambda: self._complete(r), policy.timeout):
                return False
            enough = await self.swarm.wait_for(
                lambda: self._complete(r) or self.completion >= policy.min_completion_ratio,
                max(0.0, policy.hard_timeout - policy.timeout),
            )
        finally:
            self.swarm.set_critical(None)
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
        self,
        r: int,
        base: list[np.ndarray],
        own: list[np.ndarray],
        own_weight: float | None,
        held: dict[int, tuple[float, bytes, list[Buffer | None]]],
    ) -> DefenseReport:
        """Aggregate (through the defence) and load; returns what the defence did.

        ``own`` is this peer's contribution (weight ``own_weight``; ``None`` when it did not
        train this round) and the value kept where nothing arrived.
        """
        plan = self.learner.plan
        decoded, dropped = decode_updates(plan, base, held)
        for a, reason in dropped.items():
            log.warning("peer %d: author %d's update dropped: %s", self.peer_id, a, reason)
        adversary = self.adversary
        if adversary is not None and adversary.watches:
            adversary.observe(base, {a: v for a, (_, v) in decoded.items()}, plan.num_chunks)
        # Caught by the protocol: two manifests for the round, or chunks that failed their hash.
        caught = self._equivocated.get(r, set()) | {a for a in self.members if self.swarm.banned(a)}
        result, report = self.defense.aggregate(
            r,
            me=self.peer_id,
            base=base,
            own=own,
            own_weight=own_weight,
            others=decoded,
            judge_mask=self._weights_mask,
        )
        if caught:
            report = dataclasses.replace(
                report,
                judged=sorted(set(report.judged) | caught),
                flagged=sorted(set(report.flagged) | caught),
                excluded=sorted(set(report.excluded) | caught),
            )
        if report.flagged or report.excluded:
            log.info("peer %d round %d: excluded %s", self.peer_id, r, report.excluded)
        self.learner.load_vectors(result)
        return report
